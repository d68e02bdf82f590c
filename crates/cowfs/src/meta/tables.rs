//! Typed tables: one accessor per table of the store, each owning its key and value layout
//! (the `Key` and `Value` types of `format`), so callers speak in inodes, offsets and records,
//! never in bytes. Every write marks the running transaction changed.

use std::marker::PhantomData;
use std::ops::{Bound, Range};

use super::{prefix_end, Meta};
use crate::error::Result;
use crate::format::{
    decode_checksum_range, table, BlockGroupRecord, DirEntryKey, DirEntryRecord, ExtentRecord,
    ExtentRefKey, FileExtent, FileExtentKey, FsState, FsStateKey, InodeId, InodeRecord,
    InodeRefKey, Key, KeyPrefix, SubvolumeRecord, Value,
};

/// A table's name and types, as redb's `TableDefinition` gives them.
pub struct TableDef<K, V> {
    name: &'static str,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> TableDef<K, V> {
    const fn new(name: &'static str) -> Self {
        TableDef {
            name,
            types: PhantomData,
        }
    }
}

impl<K, V> Clone for TableDef<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for TableDef<K, V> {}

pub const FS_STATE: TableDef<FsStateKey, FsState> = TableDef::new(table::FS_STATE);
pub const SUBVOLUMES: TableDef<u64, SubvolumeRecord> = TableDef::new(table::SUBVOLUMES);
pub const INODES: TableDef<InodeId, InodeRecord> = TableDef::new(table::INODES);
pub const DIR_ENTRIES: TableDef<DirEntryKey, DirEntryRecord> = TableDef::new(table::DIR_ENTRIES);
/// Back references from inodes to the entries naming them.
pub const INODE_REFS: TableDef<InodeRefKey, ()> = TableDef::new(table::INODE_REFS);
pub const FILE_EXTENTS: TableDef<FileExtentKey, FileExtent> = TableDef::new(table::FILE_EXTENTS);
/// Data extents, by logical address.
pub const EXTENTS: TableDef<u64, ExtentRecord> = TableDef::new(table::EXTENTS);
/// Back references from data extents to the file extent records pointing at them.
pub const EXTENT_REFS: TableDef<ExtentRefKey, ()> = TableDef::new(table::EXTENT_REFS);
/// Each checksummed extent's block checksums, by the extent's address.
pub const CHECKSUMS: TableDef<u64, Vec<u32>> = TableDef::new(table::CHECKSUMS);
/// Free ranges of block groups: start -> length.
pub const FREE_SPACE: TableDef<u64, u64> = TableDef::new(table::FREE_SPACE);
pub const BLOCK_GROUPS: TableDef<u64, BlockGroupRecord> = TableDef::new(table::BLOCK_GROUPS);
/// Inodes without a name, kept while open.
pub const ORPHANS: TableDef<InodeId, ()> = TableDef::new(table::ORPHANS);

/// One table of the running transaction, keyed by `K`, holding `V`.
pub struct Table<'t, K, V> {
    meta: Meta<'t>,
    name: &'static str,
    types: PhantomData<fn() -> (K, V)>,
}

/// A row whose key or value could not be decoded: its raw key and what is wrong.
pub type BadRow = (Vec<u8>, crate::error::Error);

impl<'t, K: Key, V: Value> Table<'t, K, V> {
    fn new(meta: Meta<'t>, name: &'static str) -> Self {
        Table {
            meta,
            name,
            types: PhantomData,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.meta
            .get(self.name, &key.encode())?
            .map(|raw| V::decode(&raw))
            .transpose()
    }

    pub fn contains(&self, key: &K) -> Result<bool> {
        Ok(self.meta.get(self.name, &key.encode())?.is_some())
    }

    pub fn put(&self, key: &K, value: &V) -> Result<()> {
        self.meta.put(self.name, &key.encode(), &value.encode())
    }

    /// Whether there was a row to remove.
    pub fn remove(&self, key: &K) -> Result<bool> {
        self.meta.remove(self.name, &key.encode())
    }

    /// Rows with keys in `[from, to)` (as the bounds say), at most `limit`, in key order.
    pub fn range(&self, from: Bound<&K>, to: Bound<&K>, limit: usize) -> Result<Vec<(K, V)>> {
        self.range_raw(from, to, limit, false)
    }

    /// The row with the greatest key `<= key`.
    pub fn at_or_before(&self, key: &K) -> Result<Option<(K, V)>> {
        Ok(self
            .range_raw(Bound::Unbounded, Bound::Included(key), 1, true)?
            .pop())
    }

    /// Every row.
    pub fn all(&self) -> Result<Vec<(K, V)>> {
        self.range(Bound::Unbounded, Bound::Unbounded, usize::MAX)
    }

    /// Every row whose key starts with `of` (the extents of one file, the entries of one
    /// directory ...).
    pub fn within<P>(&self, of: &P) -> Result<Vec<(K, V)>>
    where
        K: KeyPrefix<P>,
    {
        self.within_from(of, Bound::Unbounded, usize::MAX)
    }

    /// Rows whose key starts with `of`, from `from` on (from the first when unbounded), at
    /// most `limit`.
    pub fn within_from<P>(&self, of: &P, from: Bound<&K>, limit: usize) -> Result<Vec<(K, V)>>
    where
        K: KeyPrefix<P>,
    {
        let prefix = K::prefix(of);
        let from = from.map(Key::encode);
        let from = match &from {
            Bound::Unbounded => Bound::Included(prefix.as_slice()),
            bound => bound.as_ref().map(Vec::as_slice),
        };
        let end = prefix_end(&prefix);
        let to = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        decode_rows(self.meta.range(self.name, from, to, limit, false)?)
    }

    /// How many rows have keys starting with `of`, without reading them out.
    pub fn count_within<P>(&self, of: &P) -> Result<u64>
    where
        K: KeyPrefix<P>,
    {
        self.meta.count_prefix(self.name, &K::prefix(of))
    }

    /// Every row, each decoded on its own: a damaged row is reported, not a failed scan
    /// (for fsck).
    pub fn all_checked(&self) -> Result<Vec<std::result::Result<(K, V), BadRow>>> {
        let rows = self.meta.scan_prefix(self.name, &[])?;
        Ok(rows
            .into_iter()
            .map(|(k, v)| decode_row(&k, &v).map_err(|e| (k, e)))
            .collect())
    }

    fn range_raw(
        &self,
        from: Bound<&K>,
        to: Bound<&K>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(K, V)>> {
        let (from, to) = (from.map(Key::encode), to.map(Key::encode));
        let rows = self.meta.range(
            self.name,
            from.as_ref().map(Vec::as_slice),
            to.as_ref().map(Vec::as_slice),
            limit,
            reverse,
        )?;
        decode_rows(rows)
    }
}

impl Table<'_, u64, Vec<u32>> {
    /// The checksums of blocks `blocks` of the extent at `start` (fewer where its record ends
    /// first): a 4 KiB read of a 16 MiB extent wants one of its 4,096.
    pub fn get_blocks(&self, start: &u64, blocks: Range<usize>) -> Result<Option<Vec<u32>>> {
        self.meta.get_with(self.name, &Key::encode(start), |raw| {
            decode_checksum_range(raw, blocks)
        })
    }
}

fn decode_row<K: Key, V: Value>(key: &[u8], value: &[u8]) -> Result<(K, V)> {
    Ok((K::decode(key)?, V::decode(value)?))
}

fn decode_rows<K: Key, V: Value>(rows: Vec<super::Row>) -> Result<Vec<(K, V)>> {
    rows.iter().map(|(k, v)| decode_row(k, v)).collect()
}

impl<'t> Meta<'t> {
    /// The table `def` names, in this transaction.
    pub fn table<K: Key, V: Value>(&self, def: TableDef<K, V>) -> Table<'t, K, V> {
        Table::new(*self, def.name)
    }

    pub fn fs_state(&self) -> Table<'t, FsStateKey, FsState> {
        self.table(FS_STATE)
    }

    pub fn subvolumes(&self) -> Table<'t, u64, SubvolumeRecord> {
        self.table(SUBVOLUMES)
    }

    pub fn inodes(&self) -> Table<'t, InodeId, InodeRecord> {
        self.table(INODES)
    }

    pub fn dir_entries(&self) -> Table<'t, DirEntryKey, DirEntryRecord> {
        self.table(DIR_ENTRIES)
    }

    pub fn inode_refs(&self) -> Table<'t, InodeRefKey, ()> {
        self.table(INODE_REFS)
    }

    pub fn file_extents(&self) -> Table<'t, FileExtentKey, FileExtent> {
        self.table(FILE_EXTENTS)
    }

    pub fn extents(&self) -> Table<'t, u64, ExtentRecord> {
        self.table(EXTENTS)
    }

    pub fn extent_refs(&self) -> Table<'t, ExtentRefKey, ()> {
        self.table(EXTENT_REFS)
    }

    pub fn checksums(&self) -> Table<'t, u64, Vec<u32>> {
        self.table(CHECKSUMS)
    }

    pub fn free_space(&self) -> Table<'t, u64, u64> {
        self.table(FREE_SPACE)
    }

    pub fn block_groups(&self) -> Table<'t, u64, BlockGroupRecord> {
        self.table(BLOCK_GROUPS)
    }

    pub fn orphans(&self) -> Table<'t, InodeId, ()> {
        self.table(ORPHANS)
    }

    /// The filesystem-wide record.
    pub fn state(&self) -> Result<FsState> {
        self.fs_state()
            .get(&FsStateKey)?
            .ok_or_else(|| crate::error::Error::corrupt("the fs_state record is missing"))
    }

    pub fn put_state(&self, state: &FsState) -> Result<()> {
        self.fs_state().put(&FsStateKey, state)
    }
}
