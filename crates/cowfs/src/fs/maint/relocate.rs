//! Relocation: emptying a block group by moving each of its extents elsewhere, for balance
//! and shrink. An extent is copied to a new contiguous place and every file extent record
//! pointing at it (found through its back references, in every subvolume and snapshot) is
//! redirected; counts, checksums and sharing move with it. The group is held meanwhile (no
//! new allocation lands in it). Once empty it is removed in a committed transaction, and only
//! then is its device space released, so a crash never finds committed data overwritten.

use std::ops::Bound;

use crate::device::AlignedBuf;
use crate::error::{Error, Result};
use crate::format::{ExtentRecord, ExtentRefKey, FileExtentKey};
use crate::fs::alloc::Extent;
use crate::fs::engine::Engine;

/// Bytes copied per device read when moving an extent.
const COPY_CHUNK: u64 = 4 << 20;

impl Engine {
    /// Moves up to `max` extents out of block group `group`; returns the bytes moved and
    /// whether the group is now empty.
    pub(crate) fn relocate_some(&mut self, group: u64, max: usize) -> Result<(u64, bool)> {
        let g = *self
            .alloc
            .groups()
            .find(|g| g.logical == group)
            .ok_or_else(|| Error::not_found(format!("block group {group}")))?;
        let rows = self.meta().extents().range(
            Bound::Included(&g.logical),
            Bound::Excluded(&g.end()),
            max,
        )?;
        let mut moved = 0;
        for &(start, record) in &rows {
            self.relocate_extent(start, record)?;
            moved += record.len;
        }
        Ok((moved, rows.len() < max))
    }

    fn relocate_extent(&mut self, old: u64, record: ExtentRecord) -> Result<()> {
        let new = self
            .alloc
            .allocate_contiguous(self.store.meta(), &self.space, record.len)?
            .ok_or_else(|| {
                Error::no_space(format!(
                    "no contiguous {} bytes to move extent {old} to",
                    record.len
                ))
            })?;
        // The extent may be being written behind right now.
        self.settle_all()?;
        self.copy_blocks(old, new.start, record.len)?;
        let meta = self.store.meta();
        meta.extents().put(&new.start, &record)?;
        if let Some(sums) = meta.checksums().get(&old)? {
            meta.checksums().put(&new.start, &sums)?;
            meta.checksums().remove(&old)?;
        }
        for (back, ()) in meta.extent_refs().within(&old)? {
            self.redirect(back.record, old, new.start)?;
        }
        let meta = self.store.meta();
        meta.extents().remove(&old)?;
        self.sole_owners.forget(old);
        self.alloc.free(
            meta,
            Extent {
                start: old,
                len: record.len,
            },
        )
    }

    /// Points the file extent record `record` from extent `old` to `new`.
    fn redirect(&mut self, record: FileExtentKey, old: u64, new: u64) -> Result<()> {
        let meta = self.meta();
        let mut e = meta.file_extents().get(&record)?.ok_or_else(|| {
            Error::corrupt(format!("back reference from {old} to a missing record"))
        })?;
        if e.disk_start != old {
            return Err(Error::corrupt(format!(
                "back reference from {old} to a record of {}",
                e.disk_start
            )));
        }
        e.disk_start = new;
        meta.file_extents().put(&record, &e)?;
        let back = |extent| ExtentRefKey { extent, record };
        meta.extent_refs().remove(&back(old))?;
        meta.extent_refs().put(&back(new), &())
    }

    /// Copies `len` bytes of data from logical address `from` to `to`.
    fn copy_blocks(&self, from: u64, to: u64, len: u64) -> Result<()> {
        let mut buf = AlignedBuf::zeroed(COPY_CHUNK.min(len) as usize);
        let mut at = 0;
        while at < len {
            let n = (len - at).min(COPY_CHUNK) as usize;
            self.device_read(from + at, &mut buf[..n])?;
            let physical = self.alloc.physical(to + at)?;
            self.device
                .write_at(physical, &buf[..n])
                .map_err(|e| Error::device_write("relocation write", &e))?;
            at += n as u64;
        }
        Ok(())
    }

    /// Removes an emptied, held block group: commits what moved out of it, drops the group
    /// in a second commit, and only then gives its device space back.
    pub(crate) fn retire_group(&mut self, group: u64) -> Result<()> {
        self.commit()?;
        let physical = self.alloc.remove_group(self.store.meta(), group)?;
        self.commit()?;
        self.space.lock().unwrap().release(physical);
        Ok(())
    }
}
