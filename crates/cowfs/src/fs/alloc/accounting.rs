//! Free-space accounting: what data writers may still use, the reservations a change makes
//! before it starts (data, metadata rows, a swap file's copy-on-write room) so it never runs
//! out halfway, and the one exclusive operation (balance, resize) allowed at a time.

use crate::error::{Errno, Error, Result};
use crate::fs::engine::Engine;

/// Metadata bytes a new row may take: its key and value, the B-tree's own overhead, and the
/// copies of the pages a transaction rewrites (generous on purpose).
const METADATA_ROW_COST: u64 = 256;

impl Engine {
    /// Data space writers may use: what is free, less what swap files have set aside.
    pub(crate) fn free_for_data(&self) -> u64 {
        self.alloc.available(&self.space)
    }

    /// Makes sure `bytes` of new data can be written out, committing to reuse space the
    /// running transaction freed if that is what it takes. ENOSPC otherwise.
    pub(crate) fn reserve(&mut self, bytes: u64) -> Result<()> {
        let fits = |e: &Engine| e.free_for_data() >= e.cache.dirty_page_bytes() + bytes;
        if fits(self) {
            return Ok(());
        }
        if self.alloc.pinned_bytes() > 0 {
            self.commit()?;
            if fits(self) {
                return Ok(());
            }
        }
        Err(Error::no_space("no space left on the filesystem"))
    }

    /// Makes sure the metadata store can grow by `rows` new rows for `what`; ENOSPC (and
    /// nothing done) otherwise, rather than running out halfway, which would stop the
    /// filesystem. Each row is costed at [`METADATA_ROW_COST`].
    pub(crate) fn reserve_metadata(&self, rows: u64, what: &str) -> Result<()> {
        let need = rows.saturating_mul(METADATA_ROW_COST);
        let room = self.meta_space.room();
        if room < need {
            return Err(Error::no_space(format!(
                "{what} needs about {need} bytes of metadata space; {room} are left"
            )));
        }
        Ok(())
    }

    /// Starts an exclusive operation (balance, resize); EBUSY while another runs or is paused.
    pub(crate) fn begin_exclusive(&mut self, name: &'static str) -> Result<()> {
        self.check_writable()?;
        if let Some(running) = self.exclusive {
            return Err(Error::new(
                Errno::BUSY,
                format!("{running} is running; {name} must wait"),
            ));
        }
        self.exclusive = Some(name);
        Ok(())
    }

    pub(crate) fn end_exclusive(&mut self) {
        self.exclusive = None;
    }

    /// Device space new data block groups may still take.
    pub(crate) fn unallocated_for_data(&self) -> u64 {
        let space = self.space.lock().unwrap();
        space
            .unallocated()
            .saturating_sub(crate::fs::metadata_reserve(space.fs_size()))
    }

    /// Sets `bytes` of data space aside (a through-filesystem swap file's copy-on-write room);
    /// ENOSPC when that much is not free beyond what dirty pages will need.
    pub(crate) fn set_aside(&mut self, bytes: u64, what: &str) -> Result<()> {
        if self.free_for_data() < bytes + self.cache.dirty_page_bytes() {
            return Err(Error::no_space(format!(
                "{what} needs {bytes} bytes of free space reserved"
            )));
        }
        self.alloc.set_aside(bytes);
        Ok(())
    }

    /// Gives back what `set_aside` took.
    pub(crate) fn release_set_aside(&mut self, bytes: u64) {
        self.alloc.release_set_aside(bytes);
    }
}
