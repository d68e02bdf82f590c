//! Open-unlinked files. A front end that keeps files open (the FUSE mount) holds their inodes;
//! when the last name of a held file goes, the inode stays, with no names and nlink 0, listed
//! in the `orphans` table, until it is released: then it and its data go. The table makes this
//! crash-safe: whatever is listed when the filesystem is opened, or closed, is freed then.

use std::collections::hash_map::Entry;

use crate::error::Result;
use crate::format::Timespec;

use crate::fs::engine::Engine;
use crate::fs::InodeId;

impl Engine {
    /// A front end has the inode open: its data outlives its last name until released.
    pub fn hold(&mut self, id: InodeId) {
        *self.held.entry(id).or_insert(0) += 1;
    }

    /// Drops one hold; an orphan nobody holds any more is freed.
    pub fn release(&mut self, id: InodeId) -> Result<()> {
        let Entry::Occupied(mut held) = self.held.entry(id) else {
            return Ok(());
        };
        *held.get_mut() -= 1;
        if *held.get() > 0 {
            return Ok(());
        }
        held.remove();
        if self.meta().orphans().contains(&id)? {
            self.check_writable()?;
            self.free_orphan(id)?;
        }
        Ok(())
    }

    pub(in crate::fs) fn is_held(&self, id: InodeId) -> bool {
        self.held.contains_key(&id)
    }

    /// The last name of a held inode is gone: keep it, nameless, until released.
    pub(in crate::fs) fn make_orphan(&mut self, id: InodeId) -> Result<()> {
        let mut inode = self.inode(id)?;
        inode.nlink = 0;
        inode.ctime = Timespec::now();
        self.put_inode(id, &inode)?;
        self.meta().orphans().put(&id, &())
    }

    fn free_orphan(&mut self, id: InodeId) -> Result<()> {
        self.free_inode(id)?;
        self.meta().orphans().remove(&id)?;
        Ok(())
    }

    /// Frees every orphan: at open (a crash left them) and at close (nothing holds them).
    pub fn free_orphans(&mut self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let listed = self.meta().orphans().all()?;
        for (id, ()) in listed {
            self.held.remove(&id);
            self.free_orphan(id)?;
        }
        Ok(())
    }
}
