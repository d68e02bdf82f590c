//! The metadata store: a redb database living in metadata chunks inside the image (see
//! `space`), and `Meta`, the typed view of one running transaction that the engine works
//! through. redb gives the copy-on-write B-trees and the atomic, two-phase commit.

mod space;
mod tables;

pub use space::{DeviceSpace, MetaSpace};
pub use tables::*;

use std::cell::{Cell, RefCell};
use std::ops::Bound;
use std::sync::Arc;

use redb::{ReadableTable, TableDefinition};

use crate::error::{store_error, Result};
use crate::format::table;

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

pub(crate) const ALL_TABLES: [&str; 12] = [
    table::FS_STATE,
    table::SUBVOLUMES,
    table::INODES,
    table::DIR_ENTRIES,
    table::INODE_REFS,
    table::FILE_EXTENTS,
    table::EXTENTS,
    table::EXTENT_REFS,
    table::CHECKSUMS,
    table::FREE_SPACE,
    table::BLOCK_GROUPS,
    table::ORPHANS,
];

fn def(name: &'static str) -> Def {
    TableDefinition::new(name)
}

type OpenTable = redb::Table<'static, &'static [u8], &'static [u8]>;

/// The running transaction's tables, each opened at its first use and kept open until the
/// commit: opening a table costs redb a lookup in its table tree, and the engine makes several
/// table operations for every extent it writes or frees.
#[derive(Default)]
struct OpenTables([RefCell<Option<OpenTable>>; ALL_TABLES.len()]);

impl OpenTables {
    /// Closes them all (each writes its root back into the transaction).
    fn close(&self) {
        for slot in &self.0 {
            slot.borrow_mut().take();
        }
    }
}

/// redb's page cache.
const CACHE_BYTES: usize = 256 << 20;

/// The open store and its running write transaction.
pub struct Store {
    // The tables borrow the transaction: they are declared (so dropped) first, and closed
    // before it commits or goes.
    tables: OpenTables,
    /// Boxed, so the tables' borrow of it stays valid however the store moves.
    txn: Option<Box<redb::WriteTransaction>>,
    db: redb::Database,
    /// The running transaction has changes to commit: set by every write through `Meta`, and
    /// by `note_change` for changes made outside the store (data rewritten in place).
    changed: Cell<bool>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (or, on an empty space, creates) the store. With `verify`, redb checks every
    /// page's checksum before trusting the file; a damaged store is an error, not a panic.
    pub fn open(space: Arc<MetaSpace>, verify: bool) -> Result<Store> {
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(verify)
            .create_with_backend(SharedSpace(space))
            .map_err(|e| store_error("open", e))?;
        let mut store = Store {
            tables: OpenTables::default(),
            db,
            txn: None,
            changed: Cell::new(false),
        };
        store.begin()?;
        Ok(store)
    }

    fn begin(&mut self) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(|e| store_error("begin", e))?;
        txn.set_two_phase_commit(true);
        self.txn = Some(Box::new(txn));
        Ok(())
    }

    pub fn meta(&self) -> Meta<'_> {
        Meta {
            txn: self.txn.as_ref().expect("a running transaction"),
            tables: &self.tables,
            changed: &self.changed,
        }
    }

    /// Whether the running transaction has anything to commit.
    pub fn has_changes(&self) -> bool {
        self.changed.get()
    }

    /// Something the next commit must make durable changed outside the store.
    pub fn note_change(&self) {
        self.changed.set(true);
    }

    /// Commits the running transaction durably and starts the next.
    pub fn commit(&mut self) -> Result<()> {
        self.tables.close();
        let txn = self.txn.take().expect("a running transaction");
        let result = txn.commit().map_err(|e| store_error("commit", e));
        if result.is_ok() {
            self.changed.set(false);
        }
        // After a failed commit redb refuses new transactions ("previous I/O error"): the
        // commit's own error, with the device's errno, is the one to report.
        let begun = self.begin();
        result.and(begun)
    }

    /// Verifies every page checksum of the committed store. The running transaction must be
    /// empty (commit first). False when redb found damage and repaired it.
    pub fn verify(&mut self) -> Result<bool> {
        self.tables.close();
        self.txn.take();
        let result = self
            .db
            .check_integrity()
            .map_err(|e| store_error("integrity check", e));
        self.begin()?;
        result
    }
}

/// redb wants to own its backend; the engine keeps a handle to the same space.
#[derive(Debug)]
struct SharedSpace(Arc<MetaSpace>);

impl redb::StorageBackend for SharedSpace {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.0.close()
    }
}

/// One key and value read from a table.
pub type Row = (Vec<u8>, Vec<u8>);

/// The running transaction, table by table. Reads see the transaction's own writes.
#[derive(Clone, Copy)]
pub struct Meta<'t> {
    txn: &'t redb::WriteTransaction,
    tables: &'t OpenTables,
    changed: &'t Cell<bool>,
}

impl<'t> Meta<'t> {
    /// Runs `f` on table `name` of the running transaction, opening it at its first use.
    fn with<R>(
        &self,
        name: &'static str,
        f: impl FnOnce(&mut OpenTable) -> Result<R>,
    ) -> Result<R> {
        let index = ALL_TABLES
            .iter()
            .position(|t| *t == name)
            .expect("a table of ALL_TABLES");
        let mut slot = self.tables.0[index].borrow_mut();
        let table = match &mut *slot {
            Some(table) => table,
            None => {
                let table = self
                    .txn
                    .open_table(def(name))
                    .map_err(|e| store_error(name, e))?;
                // SAFETY: the table borrows the transaction, which is boxed (its address never
                // changes) and which `Store` drops or commits only after closing every table
                // (`OpenTables::close`, and field order on drop). The 'static lifetime never
                // leaves this module: `f` gets the table for the length of one call.
                let table =
                    unsafe { std::mem::transmute::<redb::Table<'t, _, _>, OpenTable>(table) };
                slot.insert(table)
            }
        };
        f(table)
    }

    pub fn create_tables(&self) -> Result<()> {
        for name in ALL_TABLES {
            self.with(name, |_| Ok(()))?;
        }
        Ok(())
    }

    fn get(&self, name: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_with(name, key, |value| Ok(value.to_vec()))
    }

    /// What `f` makes of the value stored at `key`, lent in place.
    fn get_with<R>(
        &self,
        name: &'static str,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<Option<R>> {
        self.with(name, |t| {
            let v = t.get(key).map_err(|e| store_error(name, e))?;
            v.map(|g| f(g.value())).transpose()
        })
    }

    fn put(&self, name: &'static str, key: &[u8], value: &[u8]) -> Result<()> {
        self.changed.set(true);
        self.with(name, |t| {
            t.insert(key, value).map_err(|e| store_error(name, e))?;
            Ok(())
        })
    }

    fn remove(&self, name: &'static str, key: &[u8]) -> Result<bool> {
        self.changed.set(true);
        self.with(name, |t| {
            let old = t.remove(key).map_err(|e| store_error(name, e))?;
            Ok(old.is_some())
        })
    }

    /// Rows with keys in `[from, to)`, at most `limit`, in key order (or reverse).
    fn range(
        &self,
        name: &'static str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Row>> {
        self.with(name, |t| {
            let iter = t
                .range::<&[u8]>((from, to))
                .map_err(|e| store_error(name, e))?;
            let mut rows = Vec::new();
            let mut push = |item: std::result::Result<_, redb::StorageError>| -> Result<bool> {
                let (k, v): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) =
                    item.map_err(|e| store_error(name, e))?;
                rows.push((k.value().to_vec(), v.value().to_vec()));
                Ok(rows.len() < limit)
            };
            if reverse {
                for item in iter.rev() {
                    if !push(item)? {
                        break;
                    }
                }
            } else {
                for item in iter {
                    if !push(item)? {
                        break;
                    }
                }
            }
            Ok(rows)
        })
    }

    /// How many rows have keys starting with `prefix` (without reading them out).
    fn count_prefix(&self, name: &'static str, prefix: &[u8]) -> Result<u64> {
        let end = prefix_end(prefix);
        let to = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        self.with(name, |t| {
            let iter = t
                .range::<&[u8]>((Bound::Included(prefix), to))
                .map_err(|e| store_error(name, e))?;
            let mut n = 0;
            for item in iter {
                item.map_err(|e| store_error(name, e))?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// Every row whose key starts with `prefix`.
    fn scan_prefix(&self, name: &'static str, prefix: &[u8]) -> Result<Vec<Row>> {
        let end = prefix_end(prefix);
        let to = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        self.range(name, Bound::Included(prefix), to, usize::MAX, false)
    }
}

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
