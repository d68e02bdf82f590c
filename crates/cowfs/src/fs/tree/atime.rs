//! Access times. A read of a file or a listing of a directory moves its access time as the
//! open's [`AtimePolicy`] says (Linux's noatime, relatime, strictatime); `chattr +A` files
//! never move. Under relatime an inode whose access time was found current is remembered, so
//! the reads after it cost no metadata lookup, until the inode changes or a day passes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::format::inode_flags::NOATIME;
use crate::format::{InodeRecord, Timespec};
use crate::fs::engine::Engine;
use crate::fs::{AtimePolicy, InodeId};

/// How old an access time relatime lets stand.
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The policy, and the inodes whose access time needs nothing until they change.
#[derive(Debug, Default)]
pub(crate) struct AccessTimes {
    pub(crate) policy: AtimePolicy,
    current: HashMap<InodeId, Instant>,
}

impl AccessTimes {
    /// The inode changed: its access time must be judged again at the next read.
    pub(crate) fn changed(&mut self, id: InodeId) {
        if !self.current.is_empty() {
            self.current.remove(&id);
        }
    }

    fn known_current(&self, id: InodeId) -> bool {
        self.current.get(&id).is_some_and(|at| at.elapsed() < DAY)
    }
}

/// Whether relatime moves an access time: it is not after the last change, or a day old.
fn stale(inode: &InodeRecord, now: Timespec) -> bool {
    let before = |a: Timespec, b: Timespec| (a.sec, a.nsec) <= (b.sec, b.nsec);
    before(inode.atime, inode.mtime)
        || before(inode.atime, inode.ctime)
        || now.sec - inode.atime.sec >= DAY.as_secs() as i64
}

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
            self.access_times.current.insert(id, Instant::now());
        }
        Ok(())
    }
}
