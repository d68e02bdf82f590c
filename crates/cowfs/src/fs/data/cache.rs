//! Buffered writes: dirty data gathered in memory per file and written out as whole extents
//! at commit, fsync, or when too much is dirty, so small writes do not each make an extent.
//!
//! Dirty data lives in aligned chunks of [`CHUNK_PAGES`] pages with a bitmap of the pages
//! present. Writeback hands the chunks themselves to the device (one pwritev of large
//! segments, O_DIRECT, no staging copy); written chunks come back to a shared pool.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use crate::device::AlignedBuf;
use crate::format::BLOCK_SIZE;
use crate::fs::common::DirtyRange;
use crate::fs::InodeId;

/// Pages per chunk: large enough that writeback segments are big, small enough that a
/// scattered 4 KiB write does not pin much memory.
pub const CHUNK_PAGES: u64 = 16;
const CHUNK_BYTES: usize = (CHUNK_PAGES * BLOCK_SIZE) as usize;
const BS: usize = BLOCK_SIZE as usize;

/// Memory in dirty chunks past which a write triggers writeback.
pub const DIRTY_LIMIT: u64 = 64 << 20;

/// Chunk buffers ready for reuse, shared with the writeback thread that returns them.
#[derive(Debug, Clone, Default)]
pub struct ChunkPool(Arc<Mutex<Vec<AlignedBuf>>>);

impl ChunkPool {
    fn get(&self) -> AlignedBuf {
        self.0
            .lock()
            .unwrap()
            .pop()
            .unwrap_or_else(|| AlignedBuf::zeroed(CHUNK_BYTES))
    }

    /// Takes back a buffer nobody else holds.
    pub fn put(&self, buf: Arc<AlignedBuf>) {
        if buf.len() != CHUNK_BYTES {
            return;
        }
        if let Ok(buf) = Arc::try_unwrap(buf) {
            let mut pool = self.0.lock().unwrap();
            if (pool.len() * CHUNK_BYTES) < DIRTY_LIMIT as usize {
                pool.push(buf);
            }
        }
    }
}

/// One chunk of a file's dirty data.
#[derive(Debug)]
pub struct Chunk {
    pub buf: Arc<AlignedBuf>,
    /// Bit i set: page i of the chunk holds dirty data.
    pub present: u64,
}

impl Chunk {
    fn page(&self, i: u64) -> &[u8] {
        &self.buf[i as usize * BS..][..BS]
    }
}

/// One file's dirty data.
#[derive(Debug, Default)]
struct DirtyFile {
    chunks: BTreeMap<u64, Chunk>,
    pages: u64,
}

#[derive(Debug, Default)]
pub struct PageCache {
    files: HashMap<InodeId, DirtyFile>,
    chunks: u64,
    pages: u64,
    pub pool: ChunkPool,
}

fn split(index: u64) -> (u64, u64) {
    (index / CHUNK_PAGES, index % CHUNK_PAGES)
}

impl PageCache {
    /// Memory held by dirty chunks.
    pub fn dirty_bytes(&self) -> u64 {
        self.chunks * CHUNK_BYTES as u64
    }

    /// Bytes of dirty pages: the space writeback will need.
    pub fn dirty_page_bytes(&self) -> u64 {
        self.pages * BLOCK_SIZE
    }

    /// Dirty pages of one file.
    pub fn file_pages(&self, id: InodeId) -> u64 {
        self.files.get(&id).map_or(0, |f| f.pages)
    }

    pub fn page(&self, id: InodeId, index: u64) -> Option<&[u8]> {
        let (c, i) = split(index);
        let chunk = self.files.get(&id)?.chunks.get(&c)?;
        (chunk.present & (1 << i) != 0).then(|| chunk.page(i))
    }

    pub fn contains(&self, id: InodeId, index: u64) -> bool {
        self.page(id, index).is_some()
    }

    /// The dirty page `index`, made present (with unspecified contents if it was not).
    pub fn page_mut(&mut self, id: InodeId, index: u64) -> &mut [u8] {
        self.pages_mut(id, index, 1)
    }

    /// Dirty pages `first..first + count`, which must lie in one chunk, made present (with
    /// unspecified contents where they were not), as one slice. A chunk still being written
    /// back is copied first: the writer keeps what it was given.
    pub fn pages_mut(&mut self, id: InodeId, first: u64, count: u64) -> &mut [u8] {
        let (c, i) = split(first);
        assert!(
            count >= 1 && i + count <= CHUNK_PAGES,
            "pages {first}+{count} cross a chunk"
        );
        let file = self.files.entry(id).or_default();
        let chunk = file.chunks.entry(c).or_insert_with(|| {
            self.chunks += 1;
            Chunk {
                buf: Arc::new(self.pool.get()),
                present: 0,
            }
        });
        let mask = (u64::MAX >> (64 - count)) << i;
        let added = u64::from((mask & !chunk.present).count_ones());
        chunk.present |= mask;
        file.pages += added;
        self.pages += added;
        &mut Arc::make_mut(&mut chunk.buf)[i as usize * BS..(i + count) as usize * BS]
    }

    /// Dirty pages of `id` with index in `range`, in order.
    pub fn pages_in(&self, id: InodeId, range: Range<u64>) -> impl Iterator<Item = (u64, &[u8])> {
        let chunks = self.files.get(&id).into_iter().flat_map(move |f| {
            f.chunks
                .range(range.start / CHUNK_PAGES..range.end.div_ceil(CHUNK_PAGES))
        });
        chunks.flat_map(move |(c, chunk)| {
            let range = range.clone();
            (0..CHUNK_PAGES)
                .filter(move |i| {
                    chunk.present & (1 << i) != 0 && range.contains(&(c * CHUNK_PAGES + i))
                })
                .map(move |i| (c * CHUNK_PAGES + i, chunk.page(i)))
        })
    }

    pub fn has_pages_in(&self, id: InodeId, range: Range<u64>) -> bool {
        self.pages_in(id, range).next().is_some()
    }

    /// Drops dirty pages of `id` with index in `range`.
    pub fn discard_range(&mut self, id: InodeId, range: Range<u64>) {
        let chunks = range.start / CHUNK_PAGES..range.end.div_ceil(CHUNK_PAGES);
        self.remove_pages(id, |index| Some(range.contains(&index)), chunks);
    }

    pub fn discard_from(&mut self, id: InodeId, from: u64) {
        self.discard_range(id, from..u64::MAX);
    }

    /// Removes the present pages of chunks in `chunks` for which `pick` says Some(true), in
    /// order, until it says None; returns the removed (page index, chunk buffer) pairs.
    fn remove_pages(
        &mut self,
        id: InodeId,
        mut pick: impl FnMut(u64) -> Option<bool>,
        chunks: Range<u64>,
    ) -> Vec<(u64, Arc<AlignedBuf>)> {
        let mut removed = Vec::new();
        let Some(file) = self.files.get_mut(&id) else {
            return removed;
        };
        let touched: Vec<u64> = file.chunks.range(chunks).map(|(c, _)| *c).collect();
        'chunks: for c in touched {
            let chunk = file.chunks.get_mut(&c).expect("listed");
            let present = chunk.present;
            for i in (0..CHUNK_PAGES).filter(|i| present & (1 << i) != 0) {
                match pick(c * CHUNK_PAGES + i) {
                    None => {
                        Self::drop_if_empty(file, c, &mut self.chunks, &self.pool);
                        break 'chunks;
                    }
                    Some(false) => {}
                    Some(true) => {
                        chunk.present &= !(1 << i);
                        file.pages -= 1;
                        self.pages -= 1;
                        removed.push((c * CHUNK_PAGES + i, chunk.buf.clone()));
                    }
                }
            }
            Self::drop_if_empty(file, c, &mut self.chunks, &self.pool);
        }
        if file.chunks.is_empty() {
            self.files.remove(&id);
        }
        removed
    }

    fn drop_if_empty(file: &mut DirtyFile, c: u64, count: &mut u64, pool: &ChunkPool) {
        if file.chunks.get(&c).is_some_and(|chunk| chunk.present == 0) {
            let chunk = file.chunks.remove(&c).expect("present");
            *count -= 1;
            pool.put(chunk.buf);
        }
    }

    /// Takes up to `budget` dirty pages of `id`, lowest offsets first, as runs of consecutive
    /// pages of at most `max_run` pages: (first page, pieces of chunk buffers).
    pub fn take_runs(
        &mut self,
        id: InodeId,
        max_run: u64,
        budget: u64,
    ) -> Vec<(u64, Vec<DirtyRange>)> {
        let mut taken = 0u64;
        let pages = self.remove_pages(
            id,
            |_| {
                taken += 1;
                (taken <= budget).then_some(true)
            },
            0..u64::MAX,
        );
        let mut runs: Vec<(u64, u64, Vec<DirtyRange>)> = Vec::new();
        for (index, buf) in pages {
            let at = (index % CHUNK_PAGES) as usize * BS;
            match runs.last_mut() {
                Some((start, len, pieces)) if *start + *len == index && *len < max_run => {
                    *len += 1;
                    let last = pieces.last_mut().expect("a run has pieces");
                    if Arc::ptr_eq(&last.buf, &buf) && last.range.end == at {
                        last.range.end += BS;
                    } else {
                        pieces.push(DirtyRange {
                            buf,
                            range: at..at + BS,
                        });
                    }
                }
                _ => runs.push((
                    index,
                    1,
                    vec![DirtyRange {
                        buf,
                        range: at..at + BS,
                    }],
                )),
            }
        }
        runs.into_iter()
            .map(|(start, _, pieces)| (start, pieces))
            .collect()
    }

    pub fn dirty_files(&self) -> Vec<InodeId> {
        let mut ids: Vec<InodeId> = self.files.keys().copied().collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: InodeId = InodeId::new(1, 5);

    #[test]
    fn pages_runs_and_discards() {
        let mut cache = PageCache::default();
        for index in [3u64, 4, 5, 15, 16, 17, 40] {
            cache.page_mut(F, index).fill(index as u8);
        }
        assert!(cache.contains(F, 16) && !cache.contains(F, 6));
        assert_eq!(
            cache.pages_in(F, 4..17).map(|(i, _)| i).collect::<Vec<_>>(),
            vec![4, 5, 15, 16]
        );
        cache.discard_range(F, 5..16);
        assert_eq!(
            cache
                .pages_in(F, 0..100)
                .map(|(i, _)| i)
                .collect::<Vec<_>>(),
            vec![3, 4, 16, 17, 40]
        );
        cache.page_mut(F, 15).fill(15);
        assert_eq!(cache.file_pages(F), 6);
        let first = cache.take_runs(F, 2, 1);
        assert_eq!((first.len(), first[0].0), (1, 3));
        cache.page_mut(F, 3).fill(3);
        let runs = cache.take_runs(F, 2, u64::MAX);
        let shape: Vec<(u64, usize)> = runs
            .iter()
            .map(|(s, p)| (*s, p.iter().map(|p| p.range.len()).sum::<usize>() / BS))
            .collect();
        assert_eq!(shape, vec![(3, 2), (15, 2), (17, 1), (40, 1)]);
        assert!(runs[1]
            .1
            .iter()
            .flat_map(|p| p.bytes().chunks(BS))
            .zip([15u8, 16])
            .all(|(page, b)| page.iter().all(|x| *x == b)));
        assert_eq!((cache.dirty_bytes(), cache.dirty_page_bytes()), (0, 0));
    }
}
