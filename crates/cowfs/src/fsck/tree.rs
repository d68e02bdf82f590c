//! The namespace: inodes, file extent records against their inodes, inline extents, entries
//! and back references, link counts, orphans and subvolumes.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Checker, FileExtentRow};
use crate::error::Result;
use crate::format::{
    ExtentKind, FileKind, InodeRecord, InodeRefKey, SubvolumeRecord, BLOCK_SIZE, ROOT_INO,
};
use crate::fs::InodeId;
use crate::meta;

impl Checker<'_> {
    pub(super) fn inodes(&mut self) -> Result<BTreeMap<InodeId, InodeRecord>> {
        let inodes: BTreeMap<_, _> = self.rows(meta::INODES)?.into_iter().collect();
        self.report.inodes = inodes.len() as u64;
        Ok(inodes)
    }

    pub(super) fn file_extents(
        &mut self,
        inodes: &BTreeMap<InodeId, InodeRecord>,
    ) -> Result<Vec<FileExtentRow>> {
        let mut rows: Vec<FileExtentRow> = Vec::new();
        for (key, extent) in self.rows(meta::FILE_EXTENTS)? {
            let (owner, offset) = (key.file, key.offset);
            match inodes.get(&owner) {
                None => self.report.problem(format!(
                    "file extent at {offset} of missing inode {}",
                    owner.ino
                )),
                Some(i)
                    if extent.kind != ExtentKind::Prealloc
                        && offset >= i.size.div_ceil(BLOCK_SIZE) * BLOCK_SIZE =>
                {
                    self.report.problem(format!(
                        "{}: extent at {offset} past the end ({})",
                        self.engine.path_of(owner),
                        i.size
                    ))
                }
                _ => {}
            }
            if let Some(prev) = rows.last() {
                if prev.owner == owner && prev.offset + prev.extent.len > offset {
                    self.report.problem(format!(
                        "{}: extents at {} and {offset} overlap",
                        self.engine.path_of(owner),
                        prev.offset
                    ));
                }
            }
            rows.push(FileExtentRow {
                owner,
                offset,
                extent,
            });
        }
        Ok(rows)
    }

    /// An inline extent is a file's only extent, at offset 0, and small.
    pub(super) fn inline_extents(&mut self, files: &[FileExtentRow]) {
        let mut per_file: HashMap<InodeId, (usize, bool)> = HashMap::new();
        for row in files {
            let entry = per_file.entry(row.owner).or_default();
            entry.0 += 1;
            if row.extent.kind != ExtentKind::Inline {
                continue;
            }
            entry.1 = true;
            if row.offset != 0 || row.extent.len > crate::format::SYMLINK_MAX as u64 {
                self.report.problem(format!(
                    "{}: inline extent at {} of {} bytes",
                    self.engine.path_of(row.owner),
                    row.offset,
                    row.extent.len
                ));
            }
        }
        for (owner, (count, inline)) in per_file {
            if inline && count > 1 {
                self.report.problem(format!(
                    "{}: an inline extent beside other extents",
                    self.engine.path_of(owner)
                ));
            }
        }
    }

    /// Link counts, entries pointing at live inodes of the right kind, no orphans.
    pub(super) fn namespace(&mut self, inodes: &BTreeMap<InodeId, InodeRecord>) -> Result<()> {
        let subvols = self.subvolumes()?;
        let mut names: HashMap<InodeId, u32> = HashMap::new();
        let mut subdirs: HashMap<InodeId, u32> = HashMap::new();
        let mut entries: HashMap<InodeId, u64> = HashMap::new();
        let mut dirents = std::collections::HashSet::new();
        for (key, rec) in self.rows(meta::DIR_ENTRIES)? {
            let dir = key.dir;
            let name = String::from_utf8_lossy(&key.name).into_owned();
            let child = InodeId::new(rec.subvol, rec.ino);
            *entries.entry(dir).or_default() += 1;
            if child.subvol == dir.subvol {
                dirents.insert(InodeRefKey {
                    inode: child,
                    dir: dir.ino,
                    name: key.name,
                });
            } else {
                self.subvolume_entry(&subvols, dir, &key.name, child);
            }
            match (
                inodes.get(&dir).map(|i| i.kind()),
                inodes.get(&child).map(|i| i.kind()),
            ) {
                (Some(Ok(FileKind::Directory)), Some(Ok(kind))) if kind == rec.kind => {}
                (Some(Ok(FileKind::Directory)), Some(_)) => self.report.problem(format!(
                    "entry {name:?} in directory {}: type differs from inode {}",
                    dir.ino, child.ino
                )),
                (Some(Ok(FileKind::Directory)), None) => self.report.problem(format!(
                    "entry {name:?} in directory {} points at missing inode {}",
                    dir.ino, child.ino
                )),
                _ => self.report.problem(format!(
                    "entry {name:?} lives in {}, which is not a directory",
                    dir.ino
                )),
            }
            *names.entry(child).or_default() += 1;
            if rec.kind == FileKind::Directory {
                *subdirs.entry(dir).or_default() += 1;
            }
        }
        let mut refs = 0usize;
        for (back, ()) in self.rows(meta::INODE_REFS)? {
            refs += 1;
            if !dirents.contains(&back) {
                self.report.problem(format!(
                    "back reference of inode {} has no directory entry",
                    back.inode.ino
                ));
            }
        }
        if refs != dirents.len() {
            self.report.problem(format!(
                "{} directory entries but {refs} back references",
                dirents.len()
            ));
        }
        let orphans = self.orphans(inodes)?;
        for (id, inode) in inodes {
            let n = names.get(id).copied().unwrap_or(0);
            // Only the top subvolume's root has no name.
            let is_root =
                id.ino == ROOT_INO && subvols.get(&id.subvol).is_some_and(|s| s.parent == 0);
            if subvols.get(&id.subvol).is_none_or(|s| id.ino >= s.next_ino) {
                self.report.problem(format!(
                    "inode {} of subvolume {} is beyond its subvolume's numbering",
                    id.ino, id.subvol
                ));
            }
            let kind = inode.kind()?;
            if kind == FileKind::Directory && orphans.contains(id) {
                // An open directory removed while open: empty, nameless, nlink 0.
                self.report.directories += 1;
                if n != 0 || entries.get(id).is_some_and(|e| *e > 0) {
                    self.report.problem(format!(
                        "orphan directory inode {} has names or entries",
                        id.ino
                    ));
                }
            } else if kind == FileKind::Directory {
                self.report.directories += 1;
                let want = 2 + subdirs.get(id).copied().unwrap_or(0);
                if inode.nlink != want {
                    self.report.problem(format!(
                        "directory {}: nlink {}, expected {want}",
                        self.engine.path_of(*id),
                        inode.nlink
                    ));
                }
                if n != u32::from(!is_root) {
                    self.report
                        .problem(format!("directory inode {} has {n} names", id.ino));
                }
                if inode.size != entries.get(id).copied().unwrap_or(0) {
                    self.report.problem(format!(
                        "directory {}: size {} but {} entries",
                        self.engine.path_of(*id),
                        inode.size,
                        entries.get(id).copied().unwrap_or(0)
                    ));
                }
            } else if n == 0 && !orphans.contains(id) {
                self.report.problem(format!(
                    "inode {} is an orphan: no directory entry names it",
                    id.ino
                ));
            } else if inode.nlink != n {
                self.report.problem(format!(
                    "{}: nlink {}, but {n} names",
                    self.engine.path_of(*id),
                    inode.nlink
                ));
            }
        }
        Ok(())
    }

    /// The open-unlinked files the `orphans` table lists: each an existing inode with no link.
    pub(super) fn orphans(
        &mut self,
        inodes: &BTreeMap<InodeId, InodeRecord>,
    ) -> Result<std::collections::HashSet<InodeId>> {
        let mut listed = HashSet::new();
        for (id, ()) in self.rows(meta::ORPHANS)? {
            match inodes.get(&id) {
                Some(inode) if inode.nlink == 0 => {
                    listed.insert(id);
                }
                Some(inode) => self
                    .report
                    .problem(format!("orphan inode {} has nlink {}", id.ino, inode.nlink)),
                None => self
                    .report
                    .problem(format!("orphan inode {} does not exist", id.ino)),
            }
        }
        if !listed.is_empty() {
            self.report.notes.push(format!(
                "{} open-unlinked file(s) left by a crash: freed at the next read-write open",
                listed.len()
            ));
        }
        Ok(listed)
    }

    /// An entry naming another subvolume must name its root, as its record says.
    pub(super) fn subvolume_entry(
        &mut self,
        subvols: &BTreeMap<u64, SubvolumeRecord>,
        dir: InodeId,
        name: &[u8],
        child: InodeId,
    ) {
        let matches = subvols.get(&child.subvol).is_some_and(|s| {
            child.ino == s.root_ino
                && s.parent == dir.subvol
                && s.parent_dir == dir.ino
                && s.name == name
        });
        if !matches {
            self.report.problem(format!(
                "entry {:?} in directory {} names subvolume {} inode {}, which does not place itself there",
                String::from_utf8_lossy(name),
                dir.ino,
                child.subvol,
                child.ino
            ));
        }
    }

    pub(super) fn subvolumes(&mut self) -> Result<BTreeMap<u64, SubvolumeRecord>> {
        Ok(self.rows(meta::SUBVOLUMES)?.into_iter().collect())
    }
}
