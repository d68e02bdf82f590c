//! Resize: growing the filesystem (and its image file), and shrinking it by first relocating
//! every block group that lies past the new end. Shrinking refuses cleanly, with nothing lost,
//! when metadata lies past the new end (metadata chunks do not move yet) or the data does not
//! fit below it.

use crate::error::{Error, Result};
use crate::format::{round_down, BLOCK_SIZE, MIN_FS_SIZE};
use crate::fs::engine::Engine;
use crate::fs::maint::balance::BalanceProgress;
use crate::fs::Filesystem;

impl Filesystem {
    /// Changes the filesystem's size to `new_size` (rounded down to 4 KiB); returns it.
    pub fn resize(&self, new_size: u64, progress: &mut dyn FnMut(&BalanceProgress)) -> Result<u64> {
        let new_size = round_down(new_size, BLOCK_SIZE);
        if new_size < MIN_FS_SIZE {
            return Err(Error::invalid(format!(
                "a filesystem needs at least {} MiB",
                MIN_FS_SIZE >> 20
            )));
        }
        self.with(|e| e.begin_exclusive("resize"))?;
        let result = self.run_resize(new_size, progress);
        self.with(|e| {
            e.end_exclusive();
            Ok(())
        })?;
        result.map(|()| new_size)
    }

    fn run_resize(&self, new_size: u64, progress: &mut dyn FnMut(&BalanceProgress)) -> Result<()> {
        let old = self.with(|e| Ok(e.superblock().fs_size))?;
        if new_size >= old {
            return self.with(|e| e.grow(new_size));
        }
        let groups = self.with(|e| e.begin_shrink(new_size))?;
        let mut status = BalanceProgress {
            groups_total: groups.len(),
            ..BalanceProgress::default()
        };
        for group in groups {
            let moved = self.empty_group(group, &mut status, progress);
            if !matches!(moved, Ok(true)) {
                self.with(|e| e.abandon_shrink(old))?;
                return moved.and_then(|_| Err(Error::invalid("resize cancelled")));
            }
            status.groups_done += 1;
        }
        self.with(|e| e.finish_shrink(new_size))
    }
}

impl Engine {
    fn grow(&mut self, new_size: u64) -> Result<()> {
        if self.device.len() < new_size {
            self.device
                .resize(new_size)
                .map_err(|e| Error::io("grow the device", &e))?;
        }
        self.set_size(new_size)
    }

    fn set_size(&mut self, new_size: u64) -> Result<()> {
        self.space.lock().unwrap().set_fs_size(new_size);
        self.meta_space.set_fs_size(new_size);
        self.store.note_change();
        self.commit()
    }

    /// Checks a shrink can start; limits new allocations to below `new_size`; returns the
    /// block groups that must move.
    fn begin_shrink(&mut self, new_size: u64) -> Result<Vec<u64>> {
        let sb = self.superblock();
        if let Some(c) = sb
            .meta_chunks
            .iter()
            .find(|c| c.physical + c.length > new_size)
        {
            return Err(Error::no_space(format!(
                "metadata lies at {}..{}, past the new end {new_size}; metadata does not move yet",
                c.physical,
                c.physical + c.length
            )));
        }
        let used: u64 = self.alloc.groups().map(|g| g.record.used).sum();
        let room = new_size.saturating_sub(crate::format::SYSTEM_AREA_END + sb.meta_capacity());
        if used > room {
            return Err(Error::no_space(format!(
                "{used} bytes of data do not fit in {new_size} bytes"
            )));
        }
        let pinned = self.pinned_groups();
        let past_end = |g: &&crate::fs::BlockGroup| g.record.physical + g.record.length > new_size;
        if self
            .alloc
            .groups()
            .filter(past_end)
            .any(|g| pinned.contains(&g.logical))
        {
            return Err(Error::new(
                crate::error::Errno::TXTBSY,
                "an active swapfile lies past the new end",
            ));
        }
        self.space.lock().unwrap().set_fs_size(new_size);
        Ok(self
            .alloc
            .groups()
            .filter(|g| g.record.physical + g.record.length > new_size)
            .map(|g| g.logical)
            .collect())
    }

    fn abandon_shrink(&mut self, old_size: u64) -> Result<()> {
        self.space.lock().unwrap().set_fs_size(old_size);
        Ok(())
    }

    fn finish_shrink(&mut self, new_size: u64) -> Result<()> {
        self.set_size(new_size)?;
        // The smaller size is committed: the space past it is no longer the filesystem's.
        self.device
            .resize(new_size)
            .map_err(|e| Error::io("shrink the device", &e))
    }
}
