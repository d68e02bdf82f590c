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
pub const FS_STATE_KEY: &[u8] = b"state";

pub fn key1(a: u64) -> [u8; 8] {
    a.to_be_bytes()
}

pub fn key2(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

pub fn key3(a: u64, b: u64, c: u64) -> [u8; 24] {
    let mut k = [0; 24];
    k[..16].copy_from_slice(&key2(a, b));
    k[16..].copy_from_slice(&c.to_be_bytes());
    k
}

/// `prefix` (big-endian u64s) followed by a name.
pub fn key_with_name(prefix: &[u64], name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() * 8 + name.len());
    for p in prefix {
        k.extend_from_slice(&p.to_be_bytes());
    }
    k.extend_from_slice(name);
    k
}

/// The name after `parts` u64s of a key.
pub fn key_tail(key: &[u8], parts: usize) -> Result<&[u8]> {
    key.get(parts * 8..)
        .ok_or_else(|| Error::corrupt(format!("key of {} bytes too short", key.len())))
}

/// Reads the `i`th big-endian u64 of a key.
pub fn key_part(key: &[u8], i: usize) -> Result<u64> {
    key.get(i * 8..i * 8 + 8)
        .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
        .ok_or_else(|| Error::corrupt(format!("key of {} bytes too short", key.len())))
}

/// An `extent_refs` key: extent, then the file extent record that references it.
pub fn extent_ref_key(extent: u64, subvol: u64, ino: u64, offset: u64) -> [u8; 32] {
    let mut k = [0; 32];
    k[..8].copy_from_slice(&extent.to_be_bytes());
    k[8..].copy_from_slice(&key3(subvol, ino, offset));
    k
}
