//! Subvolumes and snapshots. A subvolume is an independent inode space whose root appears as a
//! directory entry in its parent. A snapshot copies a subvolume's namespace and extent records
//! under a new id, taking one more reference (and back reference) on every extent; writes to
//! either side then copy-on-write the shared extents. The copy is O(metadata): redb offers no
//! shared subtrees to clone in constant time, unlike btrfs's tree roots.

use std::ops::Bound;

use crate::error::{Errno, Error, Result};
use crate::format::{
    extent_ref_key, key1, key_part, table, DirEntryRecord, ExtentKind, FileExtent, FileKind,
    InodeRecord, SubvolumeRecord, Timespec, ROOT_INO,
};
use crate::fs::common::Change;
use crate::fs::engine::{new_inode, Engine};
use crate::fs::{DirEntry, InodeId};
use crate::meta::Row;

/// Rows copied or deleted per batch, bounding memory for large subvolumes.
const BATCH: usize = 4096;

/// The tables whose keys start with a subvolume id.
/// A snapshot copies these rows; its copies of orphans are not held, so they go at the next
/// open or close, as a crash's would.
const PER_SUBVOLUME: [&str; 5] = [
    table::INODES,
    table::DIR_ENTRIES,
    table::INODE_REFS,
    table::FILE_EXTENTS,
    table::ORPHANS,
];

/// A subvolume as `subvolume list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubvolumeInfo {
    pub id: u64,
    /// Where its root appears, from the filesystem root.
    pub path: String,
    pub parent: u64,
    pub snapshot_of: u64,
    pub read_only: bool,
    pub generation: u64,
    pub created: i64,
}

impl Engine {
    /// Makes a new, empty subvolume named `name` in `dir`; returns its id.
    pub fn create_subvolume(&mut self, dir: InodeId, name: &[u8]) -> Result<u64> {
        self.check_new_entry(dir, name)?;
        let id = self.next_subvolume_id()?;
        let root = InodeRecord {
            nlink: 2,
            ..new_inode(FileKind::Directory, 0o755, 0, 0, self.state.generation)
        };
        self.meta().put_inode(id, ROOT_INO, &root)?;
        self.put_subvolume(id, &self.new_subvolume_record(ROOT_INO + 1, 0))?;
        self.attach(dir, name, id)?;
        Ok(id)
    }

    /// Snapshots subvolume `source` as `name` in `dir`, read-only if asked; returns its id.
    pub fn snapshot(
        &mut self,
        source: u64,
        dir: InodeId,
        name: &[u8],
        read_only: bool,
    ) -> Result<u64> {
        self.check_new_entry(dir, name)?;
        if self.subvolume_has_swap(source, true) {
            return Err(Error::new(
                Errno::TXTBSY,
                "a pinned swapfile is active in the subvolume",
            ));
        }
        let src = self.subvolume(source)?;
        // The snapshot must hold the source's data as it is now, buffered writes included.
        self.writeback_all()?;
        self.reserve_metadata(self.snapshot_rows(source)?, "a snapshot")?;
        let id = self.next_subvolume_id()?;
        let mut record = self.new_subvolume_record(src.next_ino, source);
        if read_only {
            record.flags |= SubvolumeRecord::FLAG_READ_ONLY;
        }
        self.put_subvolume(id, &record)?;
        for table in PER_SUBVOLUME {
            self.copy_subvolume_rows(table, source, id)?;
        }
        self.attach(dir, name, id)?;
        Ok(id)
    }

    /// Deletes the subvolume whose entry is `name` in `dir`, with all it holds.
    pub fn delete_subvolume(&mut self, dir: InodeId, name: &[u8]) -> Result<()> {
        self.check_writable()?;
        let entry = self
            .lookup_entry(dir, name)?
            .ok_or_else(|| Error::not_found(self.child_path(dir, name)))?;
        let id = entry.id.subvol;
        if id == dir.subvol || entry.id.ino != ROOT_INO {
            return Err(Error::invalid(format!(
                "{}: not a subvolume",
                self.child_path(dir, name)
            )));
        }
        if id == self.state.default_subvolume {
            return Err(Error::new(
                Errno::PERM,
                "the default subvolume cannot be deleted",
            ));
        }
        self.check(dir, Change::RemoveEntry)?;
        if self.subvolume_has_swap(id, false) {
            return Err(Error::new(
                Errno::PERM,
                "a swapfile is active in the subvolume",
            ));
        }
        if self.nested_subvolumes(id)?.next().is_some() {
            return Err(Error::new(
                Errno::NOTEMPTY,
                format!("{}: holds other subvolumes", self.child_path(dir, name)),
            ));
        }
        for ino in self
            .cache
            .dirty_files()
            .into_iter()
            .filter(|f| f.subvol == id)
        {
            self.cache.discard_from(ino, 0);
        }
        self.remove_link(dir, name, entry.id)?;
        self.adjust_nlink(dir, -1)?;
        for table in PER_SUBVOLUME {
            self.delete_subvolume_rows(table, id)?;
        }
        self.meta().remove(table::SUBVOLUMES, &key1(id))?;
        Ok(())
    }

    /// Every subvolume, in id order.
    pub fn list_subvolumes(&self) -> Result<Vec<SubvolumeInfo>> {
        let mut list = Vec::new();
        for (k, v) in self.meta().scan_prefix(table::SUBVOLUMES, &[])? {
            let id = key_part(&k, 0)?;
            let record = SubvolumeRecord::decode(&v)?;
            list.push(SubvolumeInfo {
                id,
                path: self.path_of(InodeId::new(id, record.root_ino)),
                parent: record.parent,
                snapshot_of: record.snapshot_of,
                read_only: record.read_only(),
                generation: record.generation,
                created: record.created,
            });
        }
        Ok(list)
    }

    /// Makes a subvolume read-only or writable again.
    pub fn set_subvolume_read_only(&mut self, id: u64, read_only: bool) -> Result<()> {
        self.check_writable()?;
        let mut record = self.subvolume(id)?;
        record.flags = if read_only {
            record.flags | SubvolumeRecord::FLAG_READ_ONLY
        } else {
            record.flags & !SubvolumeRecord::FLAG_READ_ONLY
        };
        if read_only {
            self.writeback_all()?;
        }
        self.put_subvolume(id, &record)
    }

    fn next_subvolume_id(&mut self) -> Result<u64> {
        let id = self.state.next_subvolume;
        self.state.next_subvolume += 1;
        self.dirty = true;
        self.meta().put_fs_state(&self.state)?;
        Ok(id)
    }

    fn new_subvolume_record(&self, next_ino: u64, snapshot_of: u64) -> SubvolumeRecord {
        SubvolumeRecord {
            root_ino: ROOT_INO,
            next_ino,
            flags: 0,
            parent: 0,
            created: Timespec::now().sec,
            generation: self.state.generation,
            parent_dir: 0,
            snapshot_of,
            name: vec![],
        }
    }

    /// Names subvolume `id`'s root `name` in `dir`.
    fn attach(&mut self, dir: InodeId, name: &[u8], id: u64) -> Result<()> {
        self.add_link(dir, name, InodeId::new(id, ROOT_INO), FileKind::Directory)?;
        self.adjust_nlink(dir, 1)
    }

    /// The entries inside subvolume `id` that name other subvolumes.
    fn nested_subvolumes(&self, id: u64) -> Result<impl Iterator<Item = DirEntry>> {
        let mut nested = Vec::new();
        for (k, v) in self.meta().scan_prefix(table::DIR_ENTRIES, &key1(id))? {
            let rec = DirEntryRecord::decode(&v)?;
            if rec.subvol != id {
                let name = crate::format::key_tail(&k, 2)?.to_vec();
                nested.push(DirEntry {
                    name,
                    id: InodeId::new(rec.subvol, rec.ino),
                    kind: rec.kind,
                });
            }
        }
        Ok(nested.into_iter())
    }

    /// Calls `f` on the rows of `table` under subvolume `id`, a batch at a time.
    fn for_each_batch(
        &mut self,
        table: &'static str,
        id: u64,
        mut f: impl FnMut(&mut Self, Vec<Row>) -> Result<()>,
    ) -> Result<()> {
        let (prefix, end) = (key1(id), key1(id + 1));
        let mut after: Option<Vec<u8>> = None;
        loop {
            let from = after
                .as_deref()
                .map_or(Bound::Included(&prefix[..]), Bound::Excluded);
            let rows = self
                .meta()
                .range(table, from, Bound::Excluded(&end), BATCH, false)?;
            let Some((last, _)) = rows.last() else {
                return Ok(());
            };
            after = Some(last.clone());
            f(self, rows)?;
        }
    }

    /// Copies `table`'s rows of subvolume `from` to subvolume `to`, taking a reference on
    /// every extent a copied file extent record points at. Entries naming nested subvolumes
    /// are not copied (a snapshot does not descend into them, as in btrfs).
    /// The metadata rows a snapshot of `source` adds: a copy of each of its own, and a back
    /// reference per file extent record.
    fn snapshot_rows(&self, source: u64) -> Result<u64> {
        let mut rows = self
            .meta()
            .count_prefix(table::FILE_EXTENTS, &key1(source))?;
        for table in PER_SUBVOLUME {
            rows += self.meta().count_prefix(table, &key1(source))?;
        }
        Ok(rows)
    }

    fn copy_subvolume_rows(&mut self, table: &'static str, from: u64, to: u64) -> Result<()> {
        let mut lost_entries = Vec::new();
        self.for_each_batch(table, from, |engine, rows| {
            for (k, v) in rows {
                let mut key = k.clone();
                key[..8].copy_from_slice(&to.to_be_bytes());
                let mut value = v.clone();
                if table == table::DIR_ENTRIES {
                    let mut entry = DirEntryRecord::decode(&v)?;
                    if entry.subvol != from {
                        lost_entries.push(InodeId::new(to, key_part(&k, 1)?));
                        continue;
                    }
                    entry.subvol = to;
                    value = entry.encode();
                }
                engine.meta().put(table, &key, &value)?;
                if table == table::FILE_EXTENTS {
                    let e = FileExtent::decode(&v)?;
                    if e.kind != ExtentKind::Inline {
                        let (ino, offset) = (key_part(&k, 1)?, key_part(&k, 2)?);
                        engine.meta().put(
                            table::EXTENT_REFS,
                            &extent_ref_key(e.disk_start, to, ino, offset),
                            &[],
                        )?;
                        engine.adjust_extent_refs(e.disk_start, 1)?;
                    }
                }
            }
            Ok(())
        })?;
        // Directories that lost a nested subvolume's entry lose its count too.
        for dir in lost_entries {
            self.update_dir(dir, -1)?;
            self.adjust_nlink(dir, -1)?;
        }
        Ok(())
    }

    /// Deletes `table`'s rows of subvolume `id`, dropping the references of file extents.
    fn delete_subvolume_rows(&mut self, table: &'static str, id: u64) -> Result<()> {
        self.for_each_batch(table, id, |engine, rows| {
            for (k, v) in rows {
                if table == table::FILE_EXTENTS {
                    let owner = InodeId::new(id, key_part(&k, 1)?);
                    engine.remove_mapping(owner, key_part(&k, 2)?, &FileExtent::decode(&v)?)?;
                } else {
                    engine.meta().remove(table, &k)?;
                }
            }
            Ok(())
        })
    }
}
