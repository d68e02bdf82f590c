//! The on-disk format (version [`FORMAT_VERSION`]): the superblock and its copies, the metadata chunk map, and
//! the encoding of every record the metadata store holds. docs/FORMAT.md describes each byte;
//! the constants here are the ones it names. Values are little-endian; keys are big-endian so
//! that the store's byte order is numeric order.

mod bytes;
mod compression;
mod extent;
mod inode;
mod keys;
mod space;
mod state;
mod superblock;
#[cfg(test)]
mod tests;

pub use bytes::{ByteReader, ByteWriter};
pub use compression::*;
pub use extent::*;
pub use inode::*;
pub use keys::*;
pub use space::*;
pub use state::*;
pub use superblock::*;

/// The filesystem block: allocation, checksums and direct I/O all work in these.
pub const BLOCK_SIZE: u64 = crate::device::BLOCK_SIZE;

/// The format version this code writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 4;

/// Space before the first chunk: boot area and superblock copies.
pub const SYSTEM_AREA_END: u64 = 1 << 20;

/// The largest extent written; bounds checksum records and the cost of a COW.
pub const MAX_EXTENT_LEN: u64 = 16 << 20;

/// The smallest filesystem mkfs makes.
pub const MIN_FS_SIZE: u64 = 16 << 20;

/// The default inline limit (used by inline extents).
pub const DEFAULT_INLINE_LIMIT: u32 = 2048;

/// The subvolume mkfs creates and the inode number of every subvolume's root directory.
pub const FIRST_SUBVOLUME: u64 = 1;
pub const ROOT_INO: u64 = 1;

/// The longest name in a directory.
pub const NAME_MAX: usize = 255;
/// The longest symlink target.
pub const SYMLINK_MAX: usize = 4095;

pub fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

pub fn round_down(x: u64, to: u64) -> u64 {
    x / to * to
}
