//! Inode flags (chattr/lsattr) and the rules they impose on changes. The flags are the Linux
//! FS_IOC_GETFLAGS bits; the rules are btrfs's: NOCOW changes only on an empty file, NOCOW and
//! compression exclude each other, immutable files refuse every change and append-only files
//! every change but appending. A read-only subvolume refuses all changes with EROFS.

use crate::error::{Errno, Error, Result};
use crate::format::inode_flags::{APPEND, COMPRESS, IMMUTABLE, NOCOMPRESS, NOCOW, SUPPORTED};
use crate::format::{CompressionConfig, FileKind, InodeRecord, Timespec};
use crate::fs::common::Change;
use crate::fs::engine::Engine;
use crate::fs::InodeId;

/// Flags a new inode takes from its directory.
const INHERITED: u64 = NOCOW | COMPRESS | NOCOMPRESS;

impl Engine {
    /// Refuses `change` to `id` when its subvolume is read-only or its flags forbid it.
    pub(crate) fn check_change(
        &self,
        id: InodeId,
        inode: &InodeRecord,
        change: Change,
    ) -> Result<()> {
        if self.subvolume(id.subvol)?.read_only() {
            return Err(Error::new(
                Errno::ROFS,
                format!("{}: read-only subvolume", self.path_of(id)),
            ));
        }
        self.swap_guard(id, change)?;
        let refused = |what: &str| {
            Err(Error::new(
                Errno::PERM,
                format!("{}: {what}", self.path_of(id)),
            ))
        };
        if inode.flags & IMMUTABLE != 0 {
            return refused("immutable");
        }
        if inode.flags & APPEND != 0 {
            match change {
                Change::Write(offset) if offset < inode.size => {
                    return refused("append-only: writes must append")
                }
                Change::Resize | Change::Unname | Change::RemoveEntry | Change::Attributes => {
                    return refused("append-only")
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Refuses an open of `id` for writing (with O_APPEND, with O_TRUNC) as its first write
    /// would be refused: a read-only subvolume, an active swap file, the immutable and
    /// append-only flags. For a front end whose writes reach the engine only later, from a
    /// cache (a FUSE mount's writeback cache), where a refused write could no longer be
    /// reported to the call that made it.
    pub fn check_open_for_write(&self, id: InodeId, append: bool, truncate: bool) -> Result<()> {
        let inode = self.inode(id)?;
        if inode.kind()? != FileKind::Regular {
            return Ok(());
        }
        let change = match (truncate, append) {
            (true, _) => Change::Resize,
            (false, true) => Change::Write(inode.size),
            (false, false) => Change::Write(0),
        };
        self.check_change(id, &inode, change)
    }

    /// The flags a new inode in `dir` starts with.
    pub(crate) fn inherited_flags(&self, dir: &InodeRecord) -> u64 {
        dir.flags & INHERITED
    }

    /// Sets an inode's flags (FS_IOC_SETFLAGS); returns the flags it has afterwards.
    pub fn set_flags(&mut self, id: InodeId, flags: u64) -> Result<u64> {
        self.check_writable()?;
        let mut inode = self.inode(id)?;
        if self.subvolume(id.subvol)?.read_only() {
            return Err(Error::new(
                Errno::ROFS,
                format!("{}: read-only subvolume", self.path_of(id)),
            ));
        }
        if flags & !SUPPORTED != 0 {
            return Err(Error::new(
                Errno::NOTSUP,
                format!("flags {:#x} are not supported", flags & !SUPPORTED),
            ));
        }
        if flags & NOCOW != 0 && flags & COMPRESS != 0 {
            return Err(Error::invalid(
                "a file cannot be both NOCOW (C) and compressed (c)",
            ));
        }
        if flags & COMPRESS != 0 && flags & NOCOMPRESS != 0 {
            return Err(Error::invalid(
                "a file cannot be both compressed (c) and never compressed (m)",
            ));
        }
        let mut new = flags;
        if inode.kind()? == FileKind::Regular
            && (new ^ inode.flags) & NOCOW != 0
            && self.has_data(id, &inode)?
        {
            // As btrfs: NOCOW changes only while a file is empty; otherwise silently kept.
            new = (new & !NOCOW) | (inode.flags & NOCOW);
            if new & NOCOW != 0 && new & COMPRESS != 0 {
                return Err(Error::invalid("a NOCOW file cannot be compressed"));
            }
        }
        if new != inode.flags {
            inode.flags = new;
            inode.ctime = Timespec::now();
            self.put_inode(id, &inode)?;
        }
        Ok(new)
    }

    /// Sets a file's own compression choice (`cowfs property PATH compression ...`): an
    /// algorithm, which also sets flag `c`; or never (`none`: `c` cleared, `m` set).
    pub fn set_compression(
        &mut self,
        id: InodeId,
        choice: Option<CompressionConfig>,
    ) -> Result<()> {
        let inode = self.inode(id)?;
        let flags = match choice {
            Some(_) => (inode.flags | COMPRESS) & !NOCOMPRESS,
            None => (inode.flags | NOCOMPRESS) & !COMPRESS,
        };
        self.set_flags(id, flags)?;
        let mut inode = self.inode(id)?;
        if inode.compression != choice {
            inode.compression = choice;
            inode.ctime = Timespec::now();
            self.put_inode(id, &inode)?;
        }
        Ok(())
    }

    /// Whether a file has any data (a size, extents, or dirty pages).
    fn has_data(&self, id: InodeId, inode: &InodeRecord) -> Result<bool> {
        Ok(inode.size > 0
            || self.cache.has_pages_in(id, 0..u64::MAX)
            || !self.extents_in(id, 0, u64::MAX)?.is_empty())
    }
}
