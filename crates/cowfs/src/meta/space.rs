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
#[derive(Debug)]
pub struct MetaSpace {
    device: Arc<dyn BlockDevice>,
    space: Arc<Mutex<DeviceSpace>>,
    state: Mutex<MetaState>,
}

#[derive(Debug)]
struct MetaState {
    /// The superblock as it should be; written when it differs from `persisted`.
    current: Superblock,
    persisted: Superblock,
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
            self.device.write_at(*offset, &block)?;
            self.device.flush()?;
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

    /// Reads store bytes at any offset and length, through whole blocks.
    fn read_store(&self, sb: &Superblock, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let (start, len) = widen(offset, out.len());
        if start == offset && len == out.len() {
            return self.read_blocks(sb, offset, out);
        }
        let mut buf = AlignedBuf::zeroed(len);
        self.read_blocks(sb, start, &mut buf)?;
        let at = (offset - start) as usize;
        out.copy_from_slice(&buf[at..at + out.len()]);
        Ok(())
    }

    /// Writes store bytes at any offset and length; partial blocks are read, patched, written.
    fn write_store(&self, sb: &Superblock, offset: u64, data: &[u8]) -> io::Result<()> {
        let (start, len) = widen(offset, data.len());
        if start == offset && len == data.len() {
            return self.write_blocks(sb, offset, data);
        }
        let mut buf = AlignedBuf::zeroed(len);
        self.read_blocks(sb, start, &mut buf)?;
        let at = (offset - start) as usize;
        buf[at..at + data.len()].copy_from_slice(data);
        self.write_blocks(sb, start, &buf)
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
        self.read_store(&state.current, offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        let mut sb = state.current.clone();
        self.grow_capacity(&mut sb, len)?;
        // New store bytes read as zeros, whatever the chunk held before.
        let zeros = AlignedBuf::zeroed(1 << 20);
        let mut at = sb.meta_len;
        while at < len {
            let n = (len - at).min(zeros.len() as u64) as usize;
            self.write_store(&sb, at, &zeros[..n])?;
            at += n as u64;
        }
        sb.meta_len = len;
        state.current = sb;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.write_superblock(false)?;
        self.device.flush()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let state = self.state.lock().unwrap();
        Self::check_within(&state.current, offset, data.len())?;
        self.write_store(&state.current, offset, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
