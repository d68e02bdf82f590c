//! Access times. A read of a file or a listing of a directory moves its access time as the
//! open's [`AtimePolicy`] says (Linux's noatime, relatime, strictatime); `chattr +A` files
//! never move. Under relatime an inode whose access time was found current is remembered, so
//! the reads after it cost no metadata lookup, until the inode changes or a day passes.

use crate::error::Result;
use crate::format::inode_flags::NOATIME;
use crate::format::Timespec;
use crate::fs::engine::Engine;
use crate::fs::tree::access_times::stale;
use crate::fs::{AtimePolicy, InodeId};

impl Engine {
    /// `id` was read: moves its access time if the policy says so.
    pub(crate) fn touch_atime(&mut self, id: InodeId) -> Result<()> {
        let policy = self.access_times.policy;
        if policy == AtimePolicy::Never || self.read_only || self.access_times.known_current(id) {
            return Ok(());
        }
        let mut inode = self.inode(id)?;
        let now = Timespec::now();
        let update = match policy {
            _ if inode.flags & NOATIME != 0 => false,
            AtimePolicy::Always => true,
            _ => stale(&inode, now),
        };
        if update {
            inode.atime = now;
            self.put_inode(id, &inode)?;
        }
        if policy == AtimePolicy::Relative {
            self.access_times.remember(id);
        }
        Ok(())
    }
}
