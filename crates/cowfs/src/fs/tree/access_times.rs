//! The access-time policy of an open filesystem and the inodes whose access time is known to
//! need nothing until they change (relatime); the engine's reads consult it (see `atime`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::format::{InodeRecord, Timespec};
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

    pub(crate) fn known_current(&self, id: InodeId) -> bool {
        self.current.get(&id).is_some_and(|at| at.elapsed() < DAY)
    }
}

/// Whether relatime moves an access time: it is not after the last change, or a day old.
pub(crate) fn stale(inode: &InodeRecord, now: Timespec) -> bool {
    let before = |a: Timespec, b: Timespec| (a.sec, a.nsec) <= (b.sec, b.nsec);
    before(inode.atime, inode.mtime)
        || before(inode.atime, inode.ctime)
        || now.sec - inode.atime.sec >= DAY.as_secs() as i64
}

impl AccessTimes {
    /// Remembers that `id`'s access time is current (relatime).
    pub(crate) fn remember(&mut self, id: InodeId) {
        self.current.insert(id, Instant::now());
    }
}
