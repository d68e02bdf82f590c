//! Subvolumes and snapshots. A subvolume is an independent inode space whose root appears as a
//! directory entry in its parent. A snapshot copies a subvolume's namespace and extent records
//! under a new id, taking one more reference (and back reference) on every extent; writes to
//! either side then copy-on-write the shared extents. The copy is O(metadata): redb offers no
//! shared subtrees to clone in constant time, unlike btrfs's tree roots.

use std::ops::Bound;

use crate::error::{Errno, Error, Result};
use crate::format::{
    ExtentKind, ExtentRefKey, FileKind, InodeRecord, Subvolume, SubvolumeKey, SubvolumeRecord,
    Timespec, Value, ROOT_INO,
};
use crate::fs::common::Change;
use crate::fs::engine::{new_inode, Engine};
use crate::fs::{DirEntry, InodeId};
use crate::meta::{self, TableDef};

/// Rows copied or deleted per batch, bounding memory for large subvolumes.
const BATCH: usize = 4096;

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
        self.meta()
            .inodes()
            .put(&InodeId::new(id, ROOT_INO), &root)?;
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
        self.copy_subvolume(source, id)?;
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
        self.delete_subvolume_rows(id)?;
        self.meta().subvolumes().remove(&id)?;
        Ok(())
    }

    /// Every subvolume, in id order.
    pub fn list_subvolumes(&self) -> Result<Vec<SubvolumeInfo>> {
        let mut list = Vec::new();
        for (id, record) in self.meta().subvolumes().all()? {
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
        self.meta().put_state(&self.state)?;
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
        for (key, rec) in self.meta().dir_entries().within(&Subvolume(id))? {
            if rec.subvol != id {
                nested.push(DirEntry {
                    name: key.name,
                    id: InodeId::new(rec.subvol, rec.ino),
                    kind: rec.kind,
                });
            }
        }
        Ok(nested.into_iter())
    }

    /// Calls `f` on the rows of a table under subvolume `id`, a batch at a time.
    fn for_each_batch<K: SubvolumeKey + Clone, V: Value>(
        &mut self,
        table: TableDef<K, V>,
        id: u64,
        mut f: impl FnMut(&mut Self, Vec<(K, V)>) -> Result<()>,
    ) -> Result<()> {
        let mut next: Option<K> = None;
        loop {
            let mut rows = self.meta().table(table).within_from(
                &Subvolume(id),
                next.as_ref().map_or(Bound::Unbounded, Bound::Included),
                BATCH + 1,
            )?;
            next = (rows.len() > BATCH).then(|| rows.pop().expect("more than a batch").0);
            f(self, rows)?;
            if next.is_none() {
                return Ok(());
            }
        }
    }

    /// The metadata rows a snapshot of `source` adds: a copy of each of its own, and a back
    /// reference per file extent record.
    fn snapshot_rows(&self, source: u64) -> Result<u64> {
        let (meta, of) = (self.meta(), Subvolume(source));
        Ok(2 * meta.file_extents().count_within(&of)?
            + meta.inodes().count_within(&of)?
            + meta.dir_entries().count_within(&of)?
            + meta.inode_refs().count_within(&of)?
            + meta.orphans().count_within(&of)?)
    }

    /// Copies subvolume `from`'s rows to subvolume `to`: inodes, names, back references,
    /// orphans, and file extent records, taking a reference on every extent one points at.
    /// Entries naming nested subvolumes are not copied (a snapshot does not descend into them,
    /// as in btrfs). Copies of orphans are not held, so they go at the next open or close, as
    /// a crash's would.
    fn copy_subvolume(&mut self, from: u64, to: u64) -> Result<()> {
        self.copy_rows(meta::INODES, from, to)?;
        self.copy_rows(meta::INODE_REFS, from, to)?;
        self.copy_rows(meta::ORPHANS, from, to)?;
        let mut lost_entries = Vec::new();
        self.for_each_batch(meta::DIR_ENTRIES, from, |engine, rows| {
            for (key, mut entry) in rows {
                let key = key.in_subvolume(to);
                if entry.subvol != from {
                    lost_entries.push(key.dir);
                    continue;
                }
                entry.subvol = to;
                engine.meta().dir_entries().put(&key, &entry)?;
            }
            Ok(())
        })?;
        // Directories that lost a nested subvolume's entry lose its count too.
        for dir in lost_entries {
            self.update_dir(dir, -1)?;
            self.adjust_nlink(dir, -1)?;
        }
        self.for_each_batch(meta::FILE_EXTENTS, from, |engine, rows| {
            for (key, extent) in rows {
                let record = key.in_subvolume(to);
                engine.meta().file_extents().put(&record, &extent)?;
                if extent.kind != ExtentKind::Inline {
                    let back = ExtentRefKey {
                        extent: extent.disk_start,
                        record,
                    };
                    engine.meta().extent_refs().put(&back, &())?;
                    engine.adjust_extent_refs(extent.disk_start, 1)?;
                }
            }
            Ok(())
        })
    }

    /// Copies a table's rows of subvolume `from` to subvolume `to` as they are.
    fn copy_rows<K: SubvolumeKey + Clone, V: Value>(
        &mut self,
        table: TableDef<K, V>,
        from: u64,
        to: u64,
    ) -> Result<()> {
        self.for_each_batch(table, from, |engine, rows| {
            for (key, value) in rows {
                engine
                    .meta()
                    .table(table)
                    .put(&key.in_subvolume(to), &value)?;
            }
            Ok(())
        })
    }

    /// Deletes every row of subvolume `id`, dropping the references of its file extents.
    fn delete_subvolume_rows(&mut self, id: u64) -> Result<()> {
        self.for_each_batch(meta::FILE_EXTENTS, id, |engine, rows| {
            for (key, extent) in rows {
                engine.remove_mapping(key.file, key.offset, &extent)?;
            }
            Ok(())
        })?;
        self.delete_rows(meta::INODES, id)?;
        self.delete_rows(meta::DIR_ENTRIES, id)?;
        self.delete_rows(meta::INODE_REFS, id)?;
        self.delete_rows(meta::ORPHANS, id)
    }

    fn delete_rows<K: SubvolumeKey + Clone, V: Value>(
        &mut self,
        table: TableDef<K, V>,
        id: u64,
    ) -> Result<()> {
        self.for_each_batch(table, id, |engine, rows| {
            for (key, _) in rows {
                engine.meta().table(table).remove(&key)?;
            }
            Ok(())
        })
    }
}
