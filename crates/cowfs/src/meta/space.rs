//! Device space: which physical ranges are chunks (metadata or data) and which are free, and
//! the metadata store's address space laid over metadata chunks. Metadata chunks are recorded
//! in the superblock, not in the store they hold, so the store can be found before it is open.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use crate::device::{AlignedBuf, BlockDevice};
use crate::format::{
    round_down, round_up, MetaChunk, Superblock, BLOCK_SIZE, MAX_META_CHUNKS, SUPERBLOCK_OFFSETS,
    SYSTEM_AREA_END,
};

/// The device's chunks and the free space between them.
#[derive(Debug)]
pub struct DeviceSpace {
    fs_size: u64,
    /// Physical start -> length of every chunk.
    chunks: BTreeMap<u64, u64>,
}

impl DeviceSpace {
    pub fn new(fs_size: u64) -> Self {
        DeviceSpace {
            fs_size,
            chunks: BTreeMap::new(),
        }
    }

    pub fn fs_size(&self) -> u64 {
        self.fs_size
    }

    /// Moves the end of the usable device (resize).
    pub fn set_fs_size(&mut self, fs_size: u64) {
        self.fs_size = fs_size;
    }

    /// Returns a chunk's space to the unallocated pool.
    pub fn release(&mut self, physical: u64) {
        self.chunks.remove(&physical);
    }

    /// Records a chunk found on disk; false if it overlaps another.
    pub fn claim(&mut self, physical: u64, len: u64) -> bool {
        let overlaps = self
            .chunks
            .range(..physical + len)
            .next_back()
            .is_some_and(|(s, l)| s + l > physical);
        if overlaps || physical < SYSTEM_AREA_END || physical + len > self.fs_size {
            return false;
        }
        self.chunks.insert(physical, len);
        true
    }

    /// Free device space below the filesystem's end.
    pub fn unallocated(&self) -> u64 {
        self.free_ranges().map(|(_, l)| l).sum()
    }

    /// The largest free physical range.
    pub fn largest_free(&self) -> u64 {
        self.free_ranges().map(|(_, l)| l).max().unwrap_or(0)
    }

    /// Gaps between chunks, below the filesystem's end (chunks past it, being moved out by
    /// a shrink, count as used).
    fn free_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let limit = self.fs_size;
        let mut cursor = SYSTEM_AREA_END;
        let ends = self
            .chunks
            .iter()
            .map(|(s, l)| (*s, s + l))
            .chain([(limit, limit)]);
        ends.filter_map(move |(start, end)| {
            let gap_end = start.min(limit);
            let gap = (cursor < gap_end).then(|| (cursor, gap_end - cursor));
            cursor = cursor.max(end);
            gap
        })
    }

    /// Takes the first free range of exactly `len` bytes.
    pub fn allocate(&mut self, len: u64) -> Option<u64> {
        let (start, _) = self.free_ranges().find(|(_, l)| *l >= len)?;
        self.chunks.insert(start, len);
        Some(start)
    }
}

/// The metadata store's linear address space over metadata chunks, as redb's storage backend.
///
/// Store writes are held until the next sync (or until `HELD_LIMIT` bytes are held), then
/// written in store order, each run of adjacent blocks with one device write: redb writes a
/// commit's pages one by one in no particular order, and swap-out under memory pressure dirties
/// thousands of scattered B-tree pages per commit (measured: 3,500-5,000 writes, 1,000-1,800
/// runs once sorted), every one of them paid for while the engine's lock is held. redb's
/// backend contract allows it: `sync_data` makes durable what was written before it.
#[derive(Debug)]
pub struct MetaSpace {
    device: Arc<dyn BlockDevice>,
    space: Arc<Mutex<DeviceSpace>>,
    state: Mutex<MetaState>,
}

/// Held store writes past which they are written out before the sync (memory stays bounded).
const HELD_LIMIT: usize = 32 << 20;
/// The longest device write a run of held blocks is cut into.
const HELD_RUN: usize = 1 << 20;

#[derive(Debug)]
struct MetaState {
    /// The superblock as it should be; written when it differs from `persisted`.
    current: Superblock,
    persisted: Superblock,
    /// Store writes not yet on the device: the store offset of a block -> its bytes.
    held: BTreeMap<u64, AlignedBuf>,
}

impl MetaSpace {
    pub fn new(
        device: Arc<dyn BlockDevice>,
        space: Arc<Mutex<DeviceSpace>>,
        sb: Superblock,
    ) -> Self {
        let state = MetaState {
            current: sb.clone(),
            persisted: sb,
            held: BTreeMap::new(),
        };
        MetaSpace {
            device,
            space,
            state: Mutex::new(state),
        }
    }

    pub fn superblock(&self) -> Superblock {
        self.state.lock().unwrap().current.clone()
    }

    /// Bytes the store can surely still grow by: what its chunks hold past its end, and the
    /// device space no chunk holds yet. (Pages the store freed inside come on top.)
    pub fn room(&self) -> u64 {
        let sb = self.superblock();
        let spare = sb.meta_capacity().saturating_sub(sb.meta_len);
        spare + self.space.lock().unwrap().unallocated()
    }

    /// Changes the filesystem size the superblock records; written at the next sync.
    pub fn set_fs_size(&self, fs_size: u64) {
        self.state.lock().unwrap().current.fs_size = fs_size;
    }

    /// Writes every superblock copy, if anything changed since the last write. Each copy is
    /// made durable before the next is touched, so a power cut can tear at most one; a valid
    /// copy always remains, and the next read-write open rewrites the damaged one.
    pub fn write_superblock(&self, force: bool) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if !force && state.current == state.persisted {
            return Ok(());
        }
        state.current.generation += 1;
        self.device.flush()?;
        for (copy, offset) in SUPERBLOCK_OFFSETS.iter().enumerate() {
            let block = AlignedBuf::from_slice(&state.current.encode(copy));
            self.device.write_durable_at(*offset, &block)?;
        }
        state.persisted = state.current.clone();
        Ok(())
    }

    /// Visits the physical pieces of store range `[offset, offset + len)`.
    fn map(
        sb: &Superblock,
        offset: u64,
        len: u64,
        mut f: impl FnMut(u64, std::ops::Range<usize>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut done = 0u64;
        for c in &sb.meta_chunks {
            let (start, end) = (offset + done, offset + len);
            if done == len {
                break;
            }
            if start >= c.store_offset + c.length || start < c.store_offset {
                continue;
            }
            let n = (c.store_offset + c.length).min(end) - start;
            f(
                c.physical + start - c.store_offset,
                done as usize..(done + n) as usize,
            )?;
            done += n;
        }
        if done < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("metadata access at {offset}+{len} past the store's chunks"),
            ));
        }
        Ok(())
    }

    fn read_blocks(&self, sb: &Superblock, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        Self::map(sb, offset, buf.len() as u64, |phys, r| {
            self.device.read_at(phys, &mut buf[r])
        })
    }

    fn write_blocks(&self, sb: &Superblock, offset: u64, data: &[u8]) -> io::Result<()> {
        Self::map(sb, offset, data.len() as u64, |phys, r| {
            self.device.write_at(phys, &data[r])
        })
    }

    /// Reads store bytes at any offset and length, through whole blocks, held writes included.
    fn read_store(&self, state: &MetaState, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let (start, len) = widen(offset, out.len());
        let mut held = state.held.range(start..start + len as u64).peekable();
        if start == offset && len == out.len() && held.peek().is_none() {
            return self.read_blocks(&state.current, offset, out);
        }
        let mut buf = AlignedBuf::zeroed(len);
        self.read_blocks(&state.current, start, &mut buf)?;
        for (at, block) in held {
            let from = (at - start) as usize;
            buf[from..from + block.len()].copy_from_slice(block);
        }
        let at = (offset - start) as usize;
        out.copy_from_slice(&buf[at..at + out.len()]);
        Ok(())
    }

    /// Holds a write of store bytes at any offset and length, block by block; a partial block
    /// is patched into what it holds.
    fn hold(&self, state: &mut MetaState, offset: u64, data: &[u8]) -> io::Result<()> {
        let block_len = BLOCK_SIZE as usize;
        let (start, len) = widen(offset, data.len());
        for at in (start..start + len as u64).step_by(block_len) {
            let from = offset.max(at);
            let to = (offset + data.len() as u64).min(at + BLOCK_SIZE);
            let part = &data[(from - offset) as usize..(to - offset) as usize];
            let mut block = match state.held.remove(&at) {
                Some(block) => block,
                None if part.len() == block_len => AlignedBuf::zeroed(block_len),
                None => {
                    let mut block = AlignedBuf::zeroed(block_len);
                    self.read_blocks(&state.current, at, &mut block)?;
                    block
                }
            };
            block[(from - at) as usize..(to - at) as usize].copy_from_slice(part);
            state.held.insert(at, block);
        }
        if state.held.len() * block_len > HELD_LIMIT {
            self.write_held(state)?;
        }
        Ok(())
    }

    /// Writes out the held writes, in store order, adjacent blocks together.
    fn write_held(&self, state: &mut MetaState) -> io::Result<()> {
        let held = std::mem::take(&mut state.held);
        let mut run: Vec<&[u8]> = Vec::new();
        let mut run_start = 0;
        let max_blocks = HELD_RUN / BLOCK_SIZE as usize;
        for (at, block) in &held {
            let next = run_start + (run.len() as u64) * BLOCK_SIZE;
            if !run.is_empty() && (*at != next || run.len() == max_blocks) {
                self.write_run(&state.current, run_start, &run)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = *at;
            }
            run.push(block);
        }
        if !run.is_empty() {
            self.write_run(&state.current, run_start, &run)?;
        }
        Ok(())
    }

    /// Writes whole blocks from store offset `start` on, one device write per chunk reached.
    fn write_run(&self, sb: &Superblock, start: u64, blocks: &[&[u8]]) -> io::Result<()> {
        let block_len = BLOCK_SIZE as usize;
        let len = (blocks.len() * block_len) as u64;
        Self::map(sb, start, len, |phys, r| {
            let part = &blocks[r.start / block_len..r.end / block_len];
            self.device.write_vectored_at(phys, part)
        })
    }

    fn check_within(sb: &Superblock, offset: u64, len: usize) -> io::Result<()> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > sb.meta_len)
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "metadata access at {offset}+{len} past the store's end ({})",
                    sb.meta_len
                ),
            ));
        }
        Ok(())
    }

    /// Adds metadata chunks until the store can hold `len` bytes. Each new chunk is at least as
    /// large as all before it, so the chunk table stays short as metadata grows.
    fn grow_capacity(&self, sb: &mut Superblock, len: u64) -> io::Result<()> {
        while sb.meta_capacity() < len {
            if sb.meta_chunks.len() >= MAX_META_CHUNKS {
                return Err(no_space("the metadata chunk table is full"));
            }
            let need = round_up(len - sb.meta_capacity(), 1 << 20);
            let mut space = self.space.lock().unwrap();
            let wanted = need.max(sb.meta_capacity()).min(256 << 20);
            let length = wanted
                .min(round_down(space.largest_free(), BLOCK_SIZE))
                .max(need);
            let physical = space
                .allocate(length)
                .ok_or_else(|| no_space("no device space left for metadata"))?;
            sb.meta_chunks.push(MetaChunk {
                store_offset: sb.meta_capacity(),
                physical,
                length,
            });
        }
        Ok(())
    }
}

fn no_space(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, why.to_string())
}

/// Whole blocks covering `[offset, offset + len)`.
fn widen(offset: u64, len: usize) -> (u64, usize) {
    let start = round_down(offset, BLOCK_SIZE);
    let end = round_up(offset + len as u64, BLOCK_SIZE);
    (start, (end - start) as usize)
}

impl redb::StorageBackend for MetaSpace {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state.lock().unwrap().current.meta_len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let state = self.state.lock().unwrap();
        Self::check_within(&state.current, offset, out.len())?;
        self.read_store(&state, offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        // redb sizes its file in whole pages, which are blocks here; held writes and the
        // zeroing below rely on that.
        if !len.is_multiple_of(BLOCK_SIZE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("metadata store length {len} is not a multiple of the block size"),
            ));
        }
        let mut state = self.state.lock().unwrap();
        let mut sb = state.current.clone();
        self.grow_capacity(&mut sb, len)?;
        // Bytes past a shrunken end are gone: a held write there must not come back.
        state.held.retain(|at, _| *at < len);
        // New store bytes read as zeros, whatever the chunk held before.
        let zeros = AlignedBuf::zeroed(1 << 20);
        let mut at = sb.meta_len;
        while at < len {
            let n = (len - at).min(zeros.len() as u64) as usize;
            self.write_blocks(&sb, at, &zeros[..n])?;
            at += n as u64;
        }
        sb.meta_len = len;
        state.current = sb;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.write_held(&mut self.state.lock().unwrap())?;
        self.write_superblock(false)?;
        self.device.flush()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        Self::check_within(&state.current, offset, data.len())?;
        self.hold(&mut state, offset, data)
    }

    /// Writes out what is held (redb calls it once, last; a sync has normally emptied it).
    fn close(&self) -> io::Result<()> {
        self.write_held(&mut self.state.lock().unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{FaultyDevice, MemoryDevice};
    use redb::StorageBackend;

    /// A store space of two chunks (1 MiB at 4 MiB, 1 MiB at 8 MiB) on a device counting
    /// its writes.
    fn two_chunk_space() -> (Arc<FaultyDevice>, MetaSpace) {
        let device = Arc::new(FaultyDevice::new(Arc::new(MemoryDevice::new(16 << 20))));
        let chunk = |store_offset, physical| MetaChunk {
            store_offset,
            physical,
            length: 1 << 20,
        };
        let sb = Superblock {
            generation: 0,
            fs_size: 16 << 20,
            uuid: [7; 16],
            created: 0,
            meta_len: 0,
            meta_chunks: vec![chunk(0, 4 << 20), chunk(1 << 20, 8 << 20)],
        };
        let space = Arc::new(Mutex::new(DeviceSpace::new(16 << 20)));
        let dev: Arc<dyn BlockDevice> = device.clone();
        (device, MetaSpace::new(dev, space, sb))
    }

    fn read(space: &MetaSpace, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        space.read(offset, &mut out).unwrap();
        out
    }

    #[test]
    fn held_writes_read_back_and_go_out_sorted_and_joined_at_the_sync() {
        let (device, space) = two_chunk_space();
        space.set_len(2 << 20).unwrap();
        let block = BLOCK_SIZE as usize;
        let before = device.writes_seen();
        // Blocks 5, 3, 4 (one run), then two blocks across the chunk boundary (another run,
        // two device writes), a partial write into block 3, and block 5 written again.
        space.write(5 * BLOCK_SIZE, &vec![5; block]).unwrap();
        space.write(3 * BLOCK_SIZE, &vec![3; block]).unwrap();
        space.write(4 * BLOCK_SIZE, &vec![4; block]).unwrap();
        space
            .write((1 << 20) - BLOCK_SIZE, &vec![9; 2 * block])
            .unwrap();
        space.write(3 * BLOCK_SIZE + 100, &[33; 320]).unwrap();
        space.write(5 * BLOCK_SIZE, &vec![55; block]).unwrap();
        assert_eq!(
            device.writes_seen(),
            before,
            "nothing reaches the device before a sync"
        );

        let mut third = vec![3; block];
        third[100..420].fill(33);
        assert_eq!(read(&space, 3 * BLOCK_SIZE, block), third);
        assert_eq!(read(&space, 5 * BLOCK_SIZE + 10, 10), vec![55; 10]);
        assert_eq!(read(&space, (1 << 20) - 8, 16), vec![9; 16]);

        space.write_held(&mut space.state.lock().unwrap()).unwrap();
        // Blocks 3-5 in one write, the run across the chunk boundary in one per chunk.
        assert_eq!(device.writes_seen() - before, 3);
        space.sync_data().unwrap();
        let mut on_device = vec![0; block];
        device
            .read_at((4 << 20) + 3 * BLOCK_SIZE, &mut on_device)
            .unwrap();
        assert_eq!(on_device, third);
        device.read_at(8 << 20, &mut on_device).unwrap();
        assert_eq!(on_device, vec![9; block]);
    }

    #[test]
    fn a_shrink_drops_held_writes_past_the_end_and_growth_reads_zeros() {
        let (_device, space) = two_chunk_space();
        space.set_len(1 << 20).unwrap();
        space
            .write(200 * BLOCK_SIZE, &vec![1; BLOCK_SIZE as usize])
            .unwrap();
        space.set_len(100 * BLOCK_SIZE).unwrap();
        space.set_len(1 << 20).unwrap();
        space.sync_data().unwrap();
        assert_eq!(read(&space, 200 * BLOCK_SIZE, 64), vec![0; 64]);
        assert!(space.set_len(BLOCK_SIZE + 1).is_err());
    }

    #[test]
    fn device_space_allocates_first_fit_and_respects_bounds() {
        let mut s = DeviceSpace::new(16 << 20);
        let a = s.allocate(4 << 20).unwrap();
        assert_eq!(a, SYSTEM_AREA_END);
        let b = s.allocate(4 << 20).unwrap();
        assert_eq!(b, SYSTEM_AREA_END + (4 << 20));
        assert_eq!(s.unallocated(), (16 << 20) - SYSTEM_AREA_END - (8 << 20));
        assert!(s.allocate(8 << 20).is_none());
        assert_eq!(s.largest_free(), (16 << 20) - SYSTEM_AREA_END - (8 << 20));
        assert!(!s.claim(b, 4096));
    }
}
