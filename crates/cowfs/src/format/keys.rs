//! Tables and key layouts of the metadata store. Keys are big-endian u64s, optionally
//! followed by a name, so the store's byte order is numeric order (docs/FORMAT.md, "Tables").

use crate::error::{Error, Result};

pub mod table {
    pub const FS_STATE: &str = "fs_state";
    pub const SUBVOLUMES: &str = "subvolumes";
    pub const INODES: &str = "inodes";
    pub const DIR_ENTRIES: &str = "dir_entries";
    pub const INODE_REFS: &str = "inode_refs";
    pub const FILE_EXTENTS: &str = "file_extents";
    pub const EXTENTS: &str = "extents";
    pub const EXTENT_REFS: &str = "extent_refs";
    pub const CHECKSUMS: &str = "checksums";
    pub const FREE_SPACE: &str = "free_space";
    pub const BLOCK_GROUPS: &str = "block_groups";
    pub const ORPHANS: &str = "orphans";
}

/// The only key of the fs_state table.
pub(super) const FS_STATE_KEY: &[u8] = b"state";

pub(super) fn key1(a: u64) -> [u8; 8] {
    a.to_be_bytes()
}

pub(super) fn key2(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

pub(super) fn key3(a: u64, b: u64, c: u64) -> [u8; 24] {
    let mut k = [0; 24];
    k[..16].copy_from_slice(&key2(a, b));
    k[16..].copy_from_slice(&c.to_be_bytes());
    k
}

/// `prefix` (big-endian u64s) followed by a name.
pub(super) fn key_with_name(prefix: &[u64], name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() * 8 + name.len());
    for p in prefix {
        k.extend_from_slice(&p.to_be_bytes());
    }
    k.extend_from_slice(name);
    k
}

/// The name after `parts` u64s of a key.
pub(super) fn key_tail(key: &[u8], parts: usize) -> Result<&[u8]> {
    key.get(parts * 8..)
        .ok_or_else(|| Error::corrupt(format!("key of {} bytes too short", key.len())))
}

/// Reads the `i`th big-endian u64 of a key.
pub(super) fn key_part(key: &[u8], i: usize) -> Result<u64> {
    key.get(i * 8..i * 8 + 8)
        .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
        .ok_or_else(|| Error::corrupt(format!("key of {} bytes too short", key.len())))
}

/// An `extent_refs` key: extent, then the file extent record that references it.
pub(super) fn extent_ref_key(extent: u64, subvol: u64, ino: u64, offset: u64) -> [u8; 32] {
    let mut k = [0; 32];
    k[..8].copy_from_slice(&extent.to_be_bytes());
    k[8..].copy_from_slice(&key3(subvol, ino, offset));
    k
}

/// An inode's identity: the subvolume it belongs to and its number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeId {
    pub subvol: u64,
    pub ino: u64,
}

impl InodeId {
    pub const fn new(subvol: u64, ino: u64) -> Self {
        InodeId { subvol, ino }
    }
}

/// How a table's keys are laid out in bytes. Every part is big-endian, so the store's byte
/// order is the keys' numeric order and a key's leading parts select a contiguous range.
pub trait Key: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(raw: &[u8]) -> Result<Self>;
}

/// Keys whose leading parts are a `P`: the rows for one `P` are one contiguous range.
pub trait KeyPrefix<P> {
    fn prefix(of: &P) -> Vec<u8>;
}

impl Key for u64 {
    fn encode(&self) -> Vec<u8> {
        key1(*self).to_vec()
    }

    fn decode(raw: &[u8]) -> Result<Self> {
        exact(raw, 8)?;
        key_part(raw, 0)
    }
}

impl Key for InodeId {
    fn encode(&self) -> Vec<u8> {
        key2(self.subvol, self.ino).to_vec()
    }

    fn decode(raw: &[u8]) -> Result<Self> {
        exact(raw, 16)?;
        Ok(InodeId::new(key_part(raw, 0)?, key_part(raw, 1)?))
    }
}

/// Rows of one subvolume, in tables keyed by an inode first.
impl<K: Key> KeyPrefix<Subvolume> for K
where
    K: KeyPrefix<InodeId>,
{
    fn prefix(of: &Subvolume) -> Vec<u8> {
        key1(of.0).to_vec()
    }
}

/// A subvolume id, as the leading part of keys that start with an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subvolume(pub u64);

impl KeyPrefix<InodeId> for InodeId {
    fn prefix(of: &InodeId) -> Vec<u8> {
        of.encode()
    }
}

/// The only key of `fs_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStateKey;

impl Key for FsStateKey {
    fn encode(&self) -> Vec<u8> {
        FS_STATE_KEY.to_vec()
    }

    fn decode(raw: &[u8]) -> Result<Self> {
        match raw == FS_STATE_KEY {
            true => Ok(FsStateKey),
            false => Err(Error::corrupt("fs_state has a key other than \"state\"")),
        }
    }
}

/// A `file_extents` key: the file and the offset its record starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileExtentKey {
    pub file: InodeId,
    pub offset: u64,
}

impl FileExtentKey {
    pub fn new(file: InodeId, offset: u64) -> Self {
        FileExtentKey { file, offset }
    }
}

impl Key for FileExtentKey {
    fn encode(&self) -> Vec<u8> {
        key3(self.file.subvol, self.file.ino, self.offset).to_vec()
    }

    fn decode(raw: &[u8]) -> Result<Self> {
        exact(raw, 24)?;
        Ok(FileExtentKey {
            file: InodeId::decode(&raw[..16])?,
            offset: key_part(raw, 2)?,
        })
    }
}

impl KeyPrefix<InodeId> for FileExtentKey {
    fn prefix(of: &InodeId) -> Vec<u8> {
        of.encode()
    }
}

/// A `dir_entries` key: the directory and the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntryKey {
    pub dir: InodeId,
    pub name: Vec<u8>,
}

impl Key for DirEntryKey {
    fn encode(&self) -> Vec<u8> {
        key_with_name(&[self.dir.subvol, self.dir.ino], &self.name)
    }

    fn decode(raw: &[u8]) -> Result<Self> {
        Ok(DirEntryKey {
            dir: InodeId::new(key_part(raw, 0)?, key_part(raw, 1)?),
            name: key_tail(raw, 2)?.to_vec(),
        })
    }
}

impl KeyPrefix<InodeId> for DirEntryKey {
    fn prefix(of: &InodeId) -> Vec<u8> {
        of.encode()
    }
}

/// An `inode_refs` key: the inode named, the directory naming it (in the same subvolume),
/// and the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InodeRefKey {
    pub inode: InodeId,
    pub dir: u64,
    pub name: Vec<u8>,
}

impl Key for InodeRefKey {
    fn encode(&self) -> Vec<u8> {
        key_with_name(&[self.inode.subvol, self.inode.ino, self.dir], &self.name)
    }

    fn decode(raw: &[u8]) -> Result<Self> {
        Ok(InodeRefKey {
            inode: InodeId::new(key_part(raw, 0)?, key_part(raw, 1)?),
            dir: key_part(raw, 2)?,
            name: key_tail(raw, 3)?.to_vec(),
        })
    }
}

impl KeyPrefix<InodeId> for InodeRefKey {
    fn prefix(of: &InodeId) -> Vec<u8> {
        of.encode()
    }
}

/// An `extent_refs` key: a data extent and one file extent record pointing at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExtentRefKey {
    pub extent: u64,
    pub record: FileExtentKey,
}

impl ExtentRefKey {
    /// The back reference from `extent` to the record of `file` at `offset`.
    pub fn new(extent: u64, file: InodeId, offset: u64) -> Self {
        ExtentRefKey {
            extent,
            record: FileExtentKey::new(file, offset),
        }
    }
}

impl Key for ExtentRefKey {
    fn encode(&self) -> Vec<u8> {
        let r = &self.record;
        extent_ref_key(self.extent, r.file.subvol, r.file.ino, r.offset).to_vec()
    }

    fn decode(raw: &[u8]) -> Result<Self> {
        exact(raw, 32)?;
        Ok(ExtentRefKey {
            extent: key_part(raw, 0)?,
            record: FileExtentKey::decode(&raw[8..])?,
        })
    }
}

impl KeyPrefix<u64> for ExtentRefKey {
    fn prefix(of: &u64) -> Vec<u8> {
        key1(*of).to_vec()
    }
}

fn exact(raw: &[u8], len: usize) -> Result<()> {
    match raw.len() == len {
        true => Ok(()),
        false => Err(Error::corrupt(format!(
            "key of {} bytes, expected {len}",
            raw.len()
        ))),
    }
}

/// How a table's values are laid out in bytes (the records of docs/FORMAT.md).
pub trait Value: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(raw: &[u8]) -> Result<Self>;
}

macro_rules! record_values {
    ($($record:ty),*) => {$(
        impl Value for $record {
            fn encode(&self) -> Vec<u8> {
                <$record>::encode(self)
            }

            fn decode(raw: &[u8]) -> Result<Self> {
                <$record>::decode(raw)
            }
        }
    )*};
}

record_values!(
    super::FsState,
    super::SubvolumeRecord,
    super::InodeRecord,
    super::DirEntryRecord,
    super::FileExtent,
    super::ExtentRecord,
    super::BlockGroupRecord
);

/// A `free_space` value: the free range's length.
impl Value for u64 {
    fn encode(&self) -> Vec<u8> {
        super::encode_len(*self).to_vec()
    }

    fn decode(raw: &[u8]) -> Result<Self> {
        super::decode_len(raw)
    }
}

/// A `checksums` value: crc32c of each block of an extent.
impl Value for Vec<u32> {
    fn encode(&self) -> Vec<u8> {
        super::encode_checksums(self)
    }

    fn decode(raw: &[u8]) -> Result<Self> {
        super::decode_checksums(raw)
    }
}

/// The empty value of tables whose keys say everything (`inode_refs`, `extent_refs`,
/// `orphans`).
impl Value for () {
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }

    fn decode(raw: &[u8]) -> Result<Self> {
        match raw.is_empty() {
            true => Ok(()),
            false => Err(Error::corrupt(format!(
                "a value of {} bytes where none belongs",
                raw.len()
            ))),
        }
    }
}

/// Keys that start with an inode, so a subvolume's rows can be copied to another (snapshot).
pub trait SubvolumeKey: Key + KeyPrefix<InodeId> + KeyPrefix<Subvolume> {
    /// The same key in subvolume `subvol`.
    fn in_subvolume(&self, subvol: u64) -> Self;
}

impl SubvolumeKey for InodeId {
    fn in_subvolume(&self, subvol: u64) -> Self {
        InodeId::new(subvol, self.ino)
    }
}

impl SubvolumeKey for FileExtentKey {
    fn in_subvolume(&self, subvol: u64) -> Self {
        FileExtentKey {
            file: self.file.in_subvolume(subvol),
            offset: self.offset,
        }
    }
}

impl SubvolumeKey for DirEntryKey {
    fn in_subvolume(&self, subvol: u64) -> Self {
        DirEntryKey {
            dir: self.dir.in_subvolume(subvol),
            name: self.name.clone(),
        }
    }
}

impl SubvolumeKey for InodeRefKey {
    fn in_subvolume(&self, subvol: u64) -> Self {
        InodeRefKey {
            inode: self.inode.in_subvolume(subvol),
            dir: self.dir,
            name: self.name.clone(),
        }
    }
}
