//! The swap journal: a copy-on-write swap file's pages written since the last commit, kept in
//! memory and put into the metadata tables once per commit.
//!
//! A swap write through the filesystem to a copy-on-write file used to make and record a new
//! extent for every write: a dozen B-tree operations under the engine's lock for a page of
//! data. Here a swap write takes blocks from a cluster of space allocated for the running
//! transaction (1 MiB at a time, filled in order), notes each page's block and checksum, and
//! writes the data. Swap reads look in the journal first. Before anything else looks at the
//! file's extents (any engine operation that is not swap I/O, and every commit), the journal
//! is put into the tables: each run of pages written side by side becomes one extent, and the
//! cluster space no page ended up in is freed. A page rewritten within a transaction is
//! recorded once. Nothing of the journal is on disk: a crash returns the file to its last
//! commit, as it did before, and the clusters it allocated are free again there.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::format::{FileExtent, BLOCK_SIZE};
use crate::fs::alloc::Extent;
use crate::fs::common::ExtentData;
use crate::fs::engine::Engine;
use crate::fs::swap::state::{JournalPage, SwapJournal, SwapRun};
use crate::fs::InodeId;

/// Space a journal allocates at a time.
const CLUSTER_LEN: u64 = 1 << 20;

impl Engine {
    /// A journaled swap write of `data` (whole pages) from `page` on: blocks from the
    /// transaction's clusters, the data written there (or left to the caller, see
    /// `deferring_writes`), each page's block and checksum noted.
    pub(in crate::fs::swap) fn journal_swap_write(
        &mut self,
        id: InodeId,
        page: u64,
        data: &[u8],
    ) -> Result<()> {
        let bs = BLOCK_SIZE as usize;
        let mut done = 0;
        while done < data.len() {
            let want = ((data.len() - done) / bs) as u64;
            let (logical, blocks) = match self.journal_mut(id).take(want) {
                Some(taken) => taken,
                None => {
                    self.new_cluster(id)?;
                    continue;
                }
            };
            let part = &data[done..done + blocks as usize * bs];
            let physical = self.alloc.physical(logical)?;
            let first = page + (done / bs) as u64;
            self.write_data(physical, first * BLOCK_SIZE, &ExtentData::Direct(part))?;
            let journal = self.journal_mut(id);
            for (i, block) in part.chunks(bs).enumerate() {
                let sum = crc32c::crc32c(block);
                let logical = logical + i as u64 * BLOCK_SIZE;
                journal
                    .pages
                    .insert(first + i as u64, JournalPage { logical, sum });
            }
            done += part.len();
        }
        self.store.note_change();
        Ok(())
    }

    fn journal_mut(&mut self, id: InodeId) -> &mut SwapJournal {
        &mut self
            .swap
            .files
            .get_mut(&id)
            .expect("journaled swap I/O is for an active file")
            .journal
    }

    /// Allocates the next cluster of `id`'s journal.
    fn new_cluster(&mut self, id: InodeId) -> Result<()> {
        let extent = self
            .alloc
            .allocate(self.store.meta(), &self.space, CLUSTER_LEN)?;
        let journal = self.journal_mut(id);
        journal.clusters.insert(extent.start, extent.len);
        journal.next = extent.start;
        journal.end = extent.start + extent.len;
        Ok(())
    }

    /// How a swap read of `pages` pages from `page` of `id` splits between its journal and
    /// its extents.
    pub(in crate::fs::swap) fn swap_runs(
        &self,
        id: InodeId,
        page: u64,
        pages: u64,
    ) -> Vec<SwapRun> {
        match self.swap.files.get(&id) {
            Some(active) if !active.journal.pages.is_empty() => active.journal.runs(page, pages),
            _ => vec![SwapRun::Stored {
                at: 0,
                offset: page * BLOCK_SIZE,
                len: (pages * BLOCK_SIZE) as usize,
            }],
        }
    }

    /// Reads journaled blocks from `logical` on into `buf` and checks them; a mismatch is
    /// EIO naming the file and the offset.
    pub(in crate::fs::swap) fn read_journaled(
        &self,
        id: InodeId,
        offset: u64,
        logical: u64,
        sums: &[u32],
        buf: &mut [u8],
    ) -> Result<()> {
        self.device_read(logical, buf)?;
        self.check_blocks(id, offset, logical, buf, sums)
    }

    /// Whether any swap file has journaled writes not yet in the tables.
    pub(crate) fn has_swap_journal(&self) -> bool {
        self.swap.files.values().any(|a| !a.journal.is_empty())
    }

    /// Puts every swap journal into the metadata tables.
    pub(crate) fn settle_swap_journals(&mut self) -> Result<()> {
        let ids: Vec<InodeId> = self
            .swap
            .files
            .iter()
            .filter(|(_, a)| !a.journal.is_empty())
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .try_for_each(|id| self.settle_swap_journal(id))
    }

    /// Puts `id`'s journal into the tables: each run of pages on consecutive blocks of one
    /// cluster becomes an extent mapped over them (the copies it replaces are freed as any
    /// overwritten extent), and cluster space no page is in is freed.
    pub(in crate::fs::swap) fn settle_swap_journal(&mut self, id: InodeId) -> Result<()> {
        let Some(active) = self.swap.files.get_mut(&id) else {
            return Ok(());
        };
        let journal = std::mem::take(&mut active.journal);
        let mut kept: BTreeMap<u64, u64> = BTreeMap::new();
        let mut pages = journal.pages.iter().peekable();
        while let Some((&first, j)) = pages.next() {
            let cluster_end = journal
                .clusters
                .range(..=j.logical)
                .next_back()
                .map_or(j.logical + BLOCK_SIZE, |(s, l)| s + l);
            let mut sums = vec![j.sum];
            while let Some((&p, next)) = pages.peek() {
                let follows = p == first + sums.len() as u64
                    && next.logical == j.logical + sums.len() as u64 * BLOCK_SIZE
                    && next.logical < cluster_end;
                if !follows {
                    break;
                }
                sums.push(next.sum);
                pages.next();
            }
            let len = sums.len() as u64 * BLOCK_SIZE;
            let extent = Extent {
                start: j.logical,
                len,
            };
            let mapping = FileExtent::regular(extent.start, extent.len);
            self.record_extent(id, first * BLOCK_SIZE, extent, Some(&sums), mapping)?;
            kept.insert(j.logical, len);
        }
        for (&start, &len) in &journal.clusters {
            let mut cursor = start;
            for (&s, &l) in kept.range(start..start + len) {
                self.free_cluster_space(cursor, s)?;
                cursor = s + l;
            }
            self.free_cluster_space(cursor, start + len)?;
        }
        Ok(())
    }

    /// Frees cluster space `[from, to)` that no page ended up in.
    fn free_cluster_space(&mut self, from: u64, to: u64) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let extent = Extent {
            start: from,
            len: to - from,
        };
        self.alloc.free(self.store.meta(), extent)
    }
}
