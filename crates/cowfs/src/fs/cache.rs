//! Buffered writes: dirty pages gathered in memory per file and written out as whole extents
//! at commit, fsync, or when too much is dirty, so small writes do not each make an extent.
//! Pages are 4 KiB-aligned so writeback hands them to the device as they are (one pwritev,
//! O_DIRECT, no staging copy), and written-back pages are kept for reuse.

use std::collections::{BTreeMap, HashMap};

use super::InodeId;
use crate::device::AlignedBuf;
use crate::format::BLOCK_SIZE;

pub type Page = AlignedBuf;

#[derive(Debug, Default)]
pub struct PageCache {
    files: HashMap<InodeId, BTreeMap<u64, Page>>,
    pages: u64,
    /// Clean pages ready for reuse.
    spare: Vec<Page>,
}

/// Dirty data past which a write triggers writeback.
pub const DIRTY_LIMIT: u64 = 64 << 20;

impl PageCache {
    /// A page for new dirty data: zeroed, or with stale contents when the caller is about to
    /// overwrite all of it.
    pub fn new_page(&mut self, zeroed: bool) -> Page {
        match self.spare.pop() {
            Some(mut page) => {
                if zeroed {
                    page.fill(0);
                }
                page
            }
            None => AlignedBuf::zeroed(BLOCK_SIZE as usize),
        }
    }

    /// Keeps pages for reuse, up to one dirty limit's worth.
    pub fn recycle(&mut self, pages: impl IntoIterator<Item = Page>) {
        let room = (DIRTY_LIMIT / BLOCK_SIZE) as usize - self.spare.len();
        self.spare.extend(pages.into_iter().take(room));
    }

    pub fn dirty_bytes(&self) -> u64 {
        self.pages * BLOCK_SIZE
    }

    pub fn page(&self, id: InodeId, index: u64) -> Option<&Page> {
        self.files.get(&id)?.get(&index)
    }

    pub fn page_mut(&mut self, id: InodeId, index: u64) -> Option<&mut Page> {
        self.files.get_mut(&id)?.get_mut(&index)
    }

    pub fn contains(&self, id: InodeId, index: u64) -> bool {
        self.page(id, index).is_some()
    }

    pub fn insert(&mut self, id: InodeId, index: u64, page: Page) {
        if self
            .files
            .entry(id)
            .or_default()
            .insert(index, page)
            .is_none()
        {
            self.pages += 1;
        }
    }

    /// Dirty pages of `id` with index in `range`.
    pub fn pages_in(
        &self,
        id: InodeId,
        range: std::ops::Range<u64>,
    ) -> impl Iterator<Item = (&u64, &Page)> {
        self.files
            .get(&id)
            .into_iter()
            .flat_map(move |f| f.range(range.clone()))
    }

    pub fn has_pages_in(&self, id: InodeId, range: std::ops::Range<u64>) -> bool {
        self.pages_in(id, range).next().is_some()
    }

    /// Drops dirty pages of `id` from page `from` on.
    pub fn discard_from(&mut self, id: InodeId, from: u64) {
        if let Some(f) = self.files.get_mut(&id) {
            let gone = f.split_off(&from);
            self.pages -= gone.len() as u64;
            if f.is_empty() {
                self.files.remove(&id);
            }
            self.recycle(gone.into_values());
        }
    }

    pub fn discard_range(&mut self, id: InodeId, range: std::ops::Range<u64>) {
        if let Some(f) = self.files.get_mut(&id) {
            let keys: Vec<u64> = f.range(range).map(|(k, _)| *k).collect();
            let gone: Vec<Page> = keys.iter().filter_map(|k| f.remove(k)).collect();
            self.pages -= gone.len() as u64;
            self.recycle(gone);
        }
    }

    /// Takes all dirty pages of `id`, in order.
    pub fn take(&mut self, id: InodeId) -> BTreeMap<u64, Page> {
        let pages = self.files.remove(&id).unwrap_or_default();
        self.pages -= pages.len() as u64;
        pages
    }

    pub fn dirty_files(&self) -> Vec<InodeId> {
        let mut ids: Vec<InodeId> = self.files.keys().copied().collect();
        ids.sort();
        ids
    }
}
