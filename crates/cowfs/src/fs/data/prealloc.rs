//! fallocate: preallocated (unwritten) extents that read as zeros until written and are then
//! written in place; punching holes; zeroing ranges. The modes are Linux's.

use crate::error::{Errno, Error, Result};
use crate::format::inode_flags::NOCOW;
use crate::format::{
    round_down, round_up, ExtentKind, FileExtent, Timespec, BLOCK_SIZE, MAX_EXTENT_LEN,
};
use crate::fs::common::Change;
use crate::fs::engine::Engine;
use crate::fs::InodeId;

/// An fallocate(2) mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallocateMode {
    /// Allocate space (mode 0); grows the file unless `keep_size` (FALLOC_FL_KEEP_SIZE).
    Allocate { keep_size: bool },
    /// Deallocate a range, leaving a hole; the size never changes (FALLOC_FL_PUNCH_HOLE,
    /// which Linux only accepts with FALLOC_FL_KEEP_SIZE).
    PunchHole,
    /// Make a range read as zeros, keeping it allocated (FALLOC_FL_ZERO_RANGE).
    ZeroRange { keep_size: bool },
}

impl Engine {
    pub fn fallocate(
        &mut self,
        id: InodeId,
        mode: FallocateMode,
        offset: u64,
        len: u64,
    ) -> Result<()> {
        self.check_writable()?;
        if len == 0 {
            return Err(Error::invalid("fallocate of zero bytes"));
        }
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= crate::fs::MAX_FILE_SIZE)
            .ok_or_else(|| Error::new(Errno::FBIG, "file too large"))?;
        let mut inode = self.regular_inode(id)?;
        let change = if matches!(mode, FallocateMode::Allocate { .. }) {
            Change::Layout
        } else {
            Change::Resize
        };
        self.check_change(id, &inode, change)?;
        self.settle_inline(id, &inode)?;
        let keep_size = match mode {
            FallocateMode::Allocate { keep_size } => {
                self.preallocate(
                    id,
                    round_down(offset, BLOCK_SIZE),
                    round_up(end, BLOCK_SIZE),
                )?;
                keep_size
            }
            FallocateMode::PunchHole => {
                self.clear_range(id, offset, end, false)?;
                true
            }
            FallocateMode::ZeroRange { keep_size } => {
                self.clear_range(id, offset, end, true)?;
                keep_size
            }
        };
        inode = self.inode(id)?;
        if !keep_size && end > inode.size {
            inode.size = end;
        }
        let now = Timespec::now();
        inode.mtime = now;
        inode.ctime = now;
        self.put_inode(id, &inode)
    }

    /// Makes `[offset, end)` read as zeros: partial blocks at the edges are written with zeros
    /// (within the file), whole blocks are unmapped, and preallocated again when `allocate`.
    fn clear_range(&mut self, id: InodeId, offset: u64, end: u64, allocate: bool) -> Result<()> {
        let size = self.inode(id)?.size;
        let (first, last) = (round_up(offset, BLOCK_SIZE), round_down(end, BLOCK_SIZE));
        let edges = if first <= last {
            [(offset, first), (last, end)]
        } else {
            [(offset, end), (end, end)]
        };
        for (from, to) in edges {
            let to = to.min(size);
            if from < to {
                self.write(id, from, &vec![0u8; (to - from) as usize])?;
            }
        }
        if first < last {
            self.cache
                .discard_range(id, first / BLOCK_SIZE..last / BLOCK_SIZE);
            self.punch_extents(id, first, last)?;
            if allocate {
                self.preallocate(id, first, last)?;
            }
        }
        Ok(())
    }

    /// Fills the holes in block-aligned `[start, end)` with preallocated extents.
    fn preallocate(&mut self, id: InodeId, start: u64, end: u64) -> Result<()> {
        let holes = self.holes(id, start, end)?;
        let need: u64 = holes.iter().map(|(a, b)| b - a).sum();
        self.reserve(need)?;
        let nocow = self.inode(id)?.flags & NOCOW != 0;
        for (mut at, hole_end) in holes {
            while at < hole_end {
                let extent = self.alloc.allocate(
                    self.store.meta(),
                    &self.space,
                    (hole_end - at).min(MAX_EXTENT_LEN),
                )?;
                // A checksummed file's preallocated blocks get their checksums as they are written.
                let sums = (!nocow).then(|| vec![0u32; (extent.len / BLOCK_SIZE) as usize]);
                let mapping = FileExtent {
                    kind: ExtentKind::Prealloc,
                    ..FileExtent::regular(extent.start, extent.len)
                };
                self.record_extent(id, at, extent, sums.as_deref(), mapping)?;
                at += extent.len;
            }
        }
        Ok(())
    }
}
