//! Directories, names and links: lookup, create, link, unlink, rmdir, rename, readdir, and the
//! back references (`inode_refs`) that let the engine name a file in its messages.

use std::ops::Bound;

use crate::error::{Errno, Error, Result};
use crate::format::{
    Compression, DirEntryKey, DirEntryRecord, ExtentKind, FileExtent, FileExtentKey, FileKind,
    InodeRecord, InodeRefKey, Timespec, NAME_MAX, ROOT_INO, SYMLINK_MAX,
};
use crate::fs::common::Change;
use crate::fs::engine::{new_inode, Engine};
use crate::fs::{Attr, CreateAttrs, DirEntry, InodeId, RenameFlags, SetAttr};

pub(in crate::fs) fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Error::invalid(format!(
            "invalid name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    if name.len() > NAME_MAX {
        return Err(Error::new(
            Errno::NAMETOOLONG,
            format!("name longer than {NAME_MAX} bytes"),
        ));
    }
    Ok(())
}

fn dirent_key(dir: InodeId, name: &[u8]) -> DirEntryKey {
    DirEntryKey {
        dir,
        name: name.to_vec(),
    }
}

fn backref_key(child: InodeId, parent: u64, name: &[u8]) -> InodeRefKey {
    InodeRefKey {
        inode: child,
        dir: parent,
        name: name.to_vec(),
    }
}

impl Engine {
    pub fn getattr(&self, id: InodeId) -> Result<Attr> {
        let inode = self.inode(id)?;
        let allocated = self.allocated_bytes(id, &inode)?;
        Attr::from_record(id, &inode, allocated)
    }

    pub(in crate::fs) fn dir_inode(&self, dir: InodeId) -> Result<InodeRecord> {
        let inode = self.inode(dir)?;
        if inode.kind()? != FileKind::Directory {
            return Err(Error::new(
                Errno::NOTDIR,
                format!("{}: not a directory", self.path_of(dir)),
            ));
        }
        Ok(inode)
    }

    pub fn lookup(&self, dir: InodeId, name: &[u8]) -> Result<InodeId> {
        self.lookup_entry(dir, name)?
            .map(|e| e.id)
            .ok_or_else(|| Error::not_found(self.child_path(dir, name)))
    }

    pub(in crate::fs) fn lookup_entry(
        &self,
        dir: InodeId,
        name: &[u8],
    ) -> Result<Option<DirEntry>> {
        self.dir_inode(dir)?;
        if name.len() > NAME_MAX {
            // No such name can exist; POSIX says so with ENAMETOOLONG, not ENOENT.
            return Err(Error::new(
                Errno::NAMETOOLONG,
                format!("name longer than {NAME_MAX} bytes"),
            ));
        }
        let rec = self.meta().dir_entries().get(&dirent_key(dir, name))?;
        Ok(rec.map(|rec| DirEntry {
            name: name.to_vec(),
            id: InodeId::new(rec.subvol, rec.ino),
            kind: rec.kind,
        }))
    }

    /// Entries of `dir` in name order, starting after `after`, at most `limit`.
    pub fn readdir(
        &self,
        dir: InodeId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<DirEntry>> {
        self.dir_inode(dir)?;
        let after = after.map(|a| dirent_key(dir, a));
        let from = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        let rows = self.meta().dir_entries().within_from(&dir, from, limit)?;
        Ok(rows
            .into_iter()
            .map(|(key, rec)| DirEntry {
                name: key.name,
                id: InodeId::new(rec.subvol, rec.ino),
                kind: rec.kind,
            })
            .collect())
    }

    pub fn create(
        &mut self,
        dir: InodeId,
        name: &[u8],
        kind: FileKind,
        attrs: CreateAttrs,
    ) -> Result<InodeId> {
        let dir_inode = self.check_new_entry(dir, name)?;
        let mut subvol = self.subvolume(dir.subvol)?;
        let id = InodeId::new(dir.subvol, subvol.next_ino);
        subvol.next_ino += 1;
        self.put_subvolume(dir.subvol, &subvol)?;
        let mut inode = new_inode(
            kind,
            attrs.mode,
            attrs.uid,
            attrs.gid,
            self.state.generation,
        );
        if kind == FileKind::Directory {
            inode.nlink = 2;
        }
        if kind != FileKind::Symlink {
            inode.flags = self.inherited_flags(&dir_inode);
            inode.compression = dir_inode.compression;
        }
        self.put_inode(id, &inode)?;
        self.add_link(dir, name, id, kind)?;
        if kind == FileKind::Directory {
            self.adjust_nlink(dir, 1)?;
        }
        Ok(id)
    }

    pub fn symlink(
        &mut self,
        dir: InodeId,
        name: &[u8],
        target: &[u8],
        attrs: CreateAttrs,
    ) -> Result<InodeId> {
        if target.is_empty() || target.len() > SYMLINK_MAX || target.contains(&0) {
            return Err(Error::invalid(
                "symlink target must be 1 to 4095 bytes without NUL",
            ));
        }
        let id = self.create(
            dir,
            name,
            FileKind::Symlink,
            CreateAttrs {
                mode: 0o777,
                ..attrs
            },
        )?;
        let extent = FileExtent {
            kind: ExtentKind::Inline,
            compression: Compression::None,
            disk_start: 0,
            disk_len: 0,
            extent_offset: 0,
            len: target.len() as u64,
            ram_len: target.len() as u64,
            inline_data: target.to_vec(),
        };
        let key = FileExtentKey {
            file: id,
            offset: 0,
        };
        self.meta().file_extents().put(&key, &extent)?;
        let mut inode = self.inode(id)?;
        inode.size = target.len() as u64;
        self.put_inode(id, &inode)?;
        Ok(id)
    }

    pub fn readlink(&self, id: InodeId) -> Result<Vec<u8>> {
        let inode = self.inode(id)?;
        if inode.kind()? != FileKind::Symlink {
            return Err(Error::invalid(format!(
                "{}: not a symlink",
                self.path_of(id)
            )));
        }
        let mut buf = vec![0; inode.size as usize];
        self.read_stored(id, 0, &mut buf)?;
        Ok(buf)
    }

    pub fn link(&mut self, id: InodeId, dir: InodeId, name: &[u8]) -> Result<()> {
        if id.subvol != dir.subvol {
            return Err(Error::new(
                Errno::XDEV,
                "hard links cannot cross subvolumes",
            ));
        }
        let inode = self.inode(id)?;
        if inode.nlink == 0 {
            // An open-unlinked file has no name to be linked again from.
            return Err(Error::not_found(format!("inode {} (unlinked)", id.ino)));
        }
        let kind = inode.kind()?;
        if kind == FileKind::Directory {
            return Err(Error::new(
                Errno::PERM,
                "hard links to directories are not allowed",
            ));
        }
        if inode.nlink >= u16::MAX as u32 {
            return Err(Error::new(Errno::MLINK, "too many links"));
        }
        self.check_new_entry(dir, name)?;
        self.check(id, Change::Attributes)?;
        self.add_link(dir, name, id, kind)?;
        self.adjust_nlink(id, 1)
    }

    pub fn unlink(&mut self, dir: InodeId, name: &[u8]) -> Result<()> {
        self.check_writable()?;
        let entry = self
            .lookup_entry(dir, name)?
            .ok_or_else(|| Error::not_found(self.child_path(dir, name)))?;
        if entry.kind == FileKind::Directory {
            return Err(Error::new(
                Errno::ISDIR,
                format!("{}: is a directory", self.child_path(dir, name)),
            ));
        }
        self.check(dir, Change::RemoveEntry)?;
        self.check(entry.id, Change::Unname)?;
        self.remove_link(dir, name, entry.id)?;
        self.drop_link(entry.id)
    }

    pub fn rmdir(&mut self, dir: InodeId, name: &[u8]) -> Result<()> {
        self.check_writable()?;
        let entry = self
            .lookup_entry(dir, name)?
            .ok_or_else(|| Error::not_found(self.child_path(dir, name)))?;
        if entry.kind != FileKind::Directory {
            return Err(Error::new(
                Errno::NOTDIR,
                format!("{}: not a directory", self.child_path(dir, name)),
            ));
        }
        self.check_empty_dir(entry.id)?;
        if entry.id.subvol != dir.subvol {
            return self.delete_subvolume(dir, name);
        }
        self.check(dir, Change::RemoveEntry)?;
        self.check(entry.id, Change::Unname)?;
        self.remove_link(dir, name, entry.id)?;
        self.adjust_nlink(dir, -1)?;
        self.drop_directory(entry.id)
    }

    pub(in crate::fs) fn check_empty_dir(&self, dir: InodeId) -> Result<()> {
        if !self.readdir(dir, None, 1)?.is_empty() {
            return Err(Error::new(
                Errno::NOTEMPTY,
                format!("{}: directory not empty", self.path_of(dir)),
            ));
        }
        Ok(())
    }

    pub fn rename(
        &mut self,
        from_dir: InodeId,
        from: &[u8],
        to_dir: InodeId,
        to: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        self.check_writable()?;
        check_name(to)?;
        if from_dir.subvol != to_dir.subvol {
            return Err(Error::new(Errno::XDEV, "rename cannot cross subvolumes"));
        }
        let src = self
            .lookup_entry(from_dir, from)?
            .ok_or_else(|| Error::not_found(self.child_path(from_dir, from)))?;
        let dst = self.lookup_entry(to_dir, to)?;
        if src.kind == FileKind::Directory {
            self.check_not_ancestor(src.id, to_dir)?;
        }
        self.check(from_dir, Change::RemoveEntry)?;
        self.check(src.id, Change::Unname)?;
        self.check(to_dir, Change::AddEntry)?;
        if let Some(dst) = &dst {
            self.check(to_dir, Change::RemoveEntry)?;
            self.check(dst.id, Change::Unname)?;
            if flags.exchange {
                self.check(from_dir, Change::AddEntry)?;
            }
        }
        if flags.exchange {
            let dst = dst.ok_or_else(|| Error::not_found(self.child_path(to_dir, to)))?;
            if dst.kind == FileKind::Directory {
                self.check_not_ancestor(dst.id, from_dir)?;
            }
            return self.exchange(from_dir, &src, to_dir, &dst);
        }
        if let Some(dst) = dst {
            if flags.noreplace {
                return Err(Error::new(
                    Errno::EXIST,
                    format!("{}: file exists", self.child_path(to_dir, to)),
                ));
            }
            if dst.id == src.id {
                return Ok(());
            }
            self.remove_target(to_dir, &dst, src.kind)?;
        }
        self.remove_link(from_dir, from, src.id)?;
        self.add_link(to_dir, to, src.id, src.kind)?;
        if src.kind == FileKind::Directory && from_dir != to_dir {
            self.adjust_nlink(from_dir, -1)?;
            self.adjust_nlink(to_dir, 1)?;
        }
        self.touch_ctime(src.id)
    }

    /// Removes the entry a rename replaces, after the checks POSIX asks for.
    fn remove_target(&mut self, dir: InodeId, dst: &DirEntry, src_kind: FileKind) -> Result<()> {
        match (
            src_kind == FileKind::Directory,
            dst.kind == FileKind::Directory,
        ) {
            (true, false) => Err(Error::new(
                Errno::NOTDIR,
                format!("{}: not a directory", self.child_path(dir, &dst.name)),
            )),
            (false, true) => Err(Error::new(
                Errno::ISDIR,
                format!("{}: is a directory", self.child_path(dir, &dst.name)),
            )),
            (true, true) => {
                self.check_empty_dir(dst.id)?;
                self.remove_link(dir, &dst.name, dst.id)?;
                self.adjust_nlink(dir, -1)?;
                self.drop_directory(dst.id)
            }
            (false, false) => {
                self.remove_link(dir, &dst.name, dst.id)?;
                self.drop_link(dst.id)
            }
        }
    }

    fn exchange(
        &mut self,
        a_dir: InodeId,
        a: &DirEntry,
        b_dir: InodeId,
        b: &DirEntry,
    ) -> Result<()> {
        self.remove_link(a_dir, &a.name, a.id)?;
        self.remove_link(b_dir, &b.name, b.id)?;
        self.add_link(a_dir, &a.name, b.id, b.kind)?;
        self.add_link(b_dir, &b.name, a.id, a.kind)?;
        if a_dir != b_dir {
            let delta = |e: &DirEntry| i32::from(e.kind == FileKind::Directory);
            self.adjust_nlink(a_dir, delta(b) - delta(a))?;
            self.adjust_nlink(b_dir, delta(a) - delta(b))?;
        }
        self.touch_ctime(a.id)?;
        self.touch_ctime(b.id)
    }

    /// EINVAL when `dir` is `ancestor` or lies beneath it (a directory moved into itself).
    fn check_not_ancestor(&self, ancestor: InodeId, dir: InodeId) -> Result<()> {
        let mut cur = dir;
        for _ in 0..4096 {
            if cur == ancestor {
                return Err(Error::invalid("cannot move a directory into itself"));
            }
            match self.parent_of(cur)? {
                Some((parent, _)) => cur = parent,
                None => return Ok(()),
            }
        }
        Err(Error::corrupt("directory tree too deep or cyclic"))
    }

    pub(in crate::fs) fn add_link(
        &mut self,
        dir: InodeId,
        name: &[u8],
        child: InodeId,
        kind: FileKind,
    ) -> Result<()> {
        let record = DirEntryRecord {
            ino: child.ino,
            subvol: child.subvol,
            kind,
        };
        self.meta()
            .dir_entries()
            .put(&dirent_key(dir, name), &record)?;
        if child.subvol == dir.subvol {
            self.meta()
                .inode_refs()
                .put(&backref_key(child, dir.ino, name), &())?;
        } else {
            // A subvolume's root: its one name is recorded in its subvolume record.
            let mut subvol = self.subvolume(child.subvol)?;
            (subvol.parent, subvol.parent_dir, subvol.name) = (dir.subvol, dir.ino, name.to_vec());
            self.put_subvolume(child.subvol, &subvol)?;
        }
        self.update_dir(dir, 1)
    }

    pub(in crate::fs) fn remove_link(
        &mut self,
        dir: InodeId,
        name: &[u8],
        child: InodeId,
    ) -> Result<()> {
        let meta = self.meta();
        meta.dir_entries().remove(&dirent_key(dir, name))?;
        if child.subvol == dir.subvol {
            meta.inode_refs()
                .remove(&backref_key(child, dir.ino, name))?;
        }
        self.update_dir(dir, -1)
    }

    /// A directory's size counts its entries; its times change with them.
    pub(in crate::fs) fn update_dir(&mut self, dir: InodeId, entries: i64) -> Result<()> {
        let mut inode = self.inode(dir)?;
        inode.size = inode.size.saturating_add_signed(entries);
        let now = Timespec::now();
        inode.mtime = now;
        inode.ctime = now;
        self.put_inode(dir, &inode)
    }

    pub(in crate::fs) fn adjust_nlink(&mut self, id: InodeId, delta: i32) -> Result<()> {
        let mut inode = self.inode(id)?;
        inode.nlink = inode.nlink.saturating_add_signed(delta);
        inode.ctime = Timespec::now();
        self.put_inode(id, &inode)
    }

    fn touch_ctime(&mut self, id: InodeId) -> Result<()> {
        let mut inode = self.inode(id)?;
        inode.ctime = Timespec::now();
        self.put_inode(id, &inode)
    }

    /// An empty directory lost its name: it goes, unless a front end holds it open (then it
    /// stays, nameless, until released, as an open-unlinked file does).
    fn drop_directory(&mut self, id: InodeId) -> Result<()> {
        match self.is_held(id) {
            true => self.make_orphan(id),
            false => self.free_inode(id),
        }
    }

    /// One name of a non-directory is gone; the inode goes with its last.
    fn drop_link(&mut self, id: InodeId) -> Result<()> {
        let inode = self.inode(id)?;
        if inode.nlink <= 1 {
            return match self.is_held(id) {
                true => self.make_orphan(id),
                false => self.free_inode(id),
            };
        }
        self.adjust_nlink(id, -1)
    }

    pub(in crate::fs) fn free_inode(&mut self, id: InodeId) -> Result<()> {
        self.cache.discard_from(id, 0);
        self.punch_extents(id, 0, u64::MAX)?;
        self.remove_inode(id)
    }

    pub fn setattr(&mut self, id: InodeId, set: &SetAttr) -> Result<Attr> {
        self.check_writable()?;
        let times = set.atime.is_some() || set.mtime.is_some();
        if set.mode.is_some() || set.uid.is_some() || set.gid.is_some() || times && !set.times_now {
            self.check(id, Change::Attributes)?;
        } else if times {
            self.check(id, Change::Touch)?;
        }
        if let Some(size) = set.size {
            self.truncate(id, size)?;
        }
        let mut inode = self.inode(id)?;
        let now = Timespec::now();
        if let Some(mode) = set.mode {
            inode.mode = (inode.mode & crate::format::S_IFMT) | (mode & 0o7777);
        }
        inode.uid = set.uid.unwrap_or(inode.uid);
        inode.gid = set.gid.unwrap_or(inode.gid);
        inode.atime = set.atime.unwrap_or(inode.atime);
        inode.mtime = set.mtime.unwrap_or(inode.mtime);
        inode.ctime = now;
        self.put_inode(id, &inode)?;
        self.getattr(id)
    }

    /// Checks that `name` may be added to `dir`: a valid name, not taken, in a directory that
    /// accepts new entries. Returns the directory's inode.
    pub(in crate::fs) fn check_new_entry(&self, dir: InodeId, name: &[u8]) -> Result<InodeRecord> {
        self.check_writable()?;
        check_name(name)?;
        if self.lookup_entry(dir, name)?.is_some() {
            return Err(Error::new(
                Errno::EXIST,
                format!("{}: file exists", self.child_path(dir, name)),
            ));
        }
        self.check(dir, Change::AddEntry)
    }

    /// The inode, after checking that `change` to it is allowed.
    pub(in crate::fs) fn check(&self, id: InodeId, change: Change) -> Result<InodeRecord> {
        let inode = self.inode(id)?;
        self.check_change(id, &inode, change)?;
        Ok(inode)
    }

    /// The first (parent, name) that links to `id`; None for a subvolume root.
    pub(in crate::fs) fn parent_of(&self, id: InodeId) -> Result<Option<(InodeId, Vec<u8>)>> {
        if id.ino == ROOT_INO {
            let subvol = self.subvolume(id.subvol)?;
            return Ok((subvol.parent != 0)
                .then(|| (InodeId::new(subvol.parent, subvol.parent_dir), subvol.name)));
        }
        let first = self
            .meta()
            .inode_refs()
            .within_from(&id, Bound::Unbounded, 1)?;
        Ok(first
            .into_iter()
            .next()
            .map(|(key, ())| (InodeId::new(id.subvol, key.dir), key.name)))
    }

    /// A path for messages: the first name of each ancestor, or `inode N` when unreachable.
    pub fn path_of(&self, id: InodeId) -> String {
        let mut parts = Vec::new();
        let mut cur = id;
        while let Ok(Some((parent, name))) = self.parent_of(cur) {
            parts.push(String::from_utf8_lossy(&name).into_owned());
            cur = parent;
            if parts.len() > 256 {
                break;
            }
        }
        if cur.ino != ROOT_INO {
            return format!("inode {} of subvolume {}", id.ino, id.subvol);
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    pub(in crate::fs) fn child_path(&self, dir: InodeId, name: &[u8]) -> String {
        let parent = self.path_of(dir);
        let sep = if parent.ends_with('/') { "" } else { "/" };
        format!("{parent}{sep}{}", String::from_utf8_lossy(name))
    }
}
