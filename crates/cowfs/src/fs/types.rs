//! The ground floor: the value types of the engine's API (identities, attributes, options,
//! figures). Every other part of fs/ may use them; they use nothing above them.

use std::time::Duration;

use crate::error::Result;
pub use crate::format::InodeId;
pub use crate::format::{CompressionConfig, DEFAULT_LEVEL};
use crate::format::{FileKind, InodeRecord, Superblock, Timespec, BLOCK_SIZE};
use crate::fs::BlockGroup;

/// The attributes `stat` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub id: InodeId,
    pub kind: FileKind,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    /// Bytes of data space the file references.
    pub allocated: u64,
    pub flags: u64,
    pub generation: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub crtime: Timespec,
}

impl Attr {
    pub(crate) fn from_record(id: InodeId, inode: &InodeRecord, allocated: u64) -> Result<Attr> {
        Ok(Attr {
            id,
            kind: inode.kind()?,
            perm: inode.mode & 0o7777,
            uid: inode.uid,
            gid: inode.gid,
            nlink: inode.nlink,
            size: inode.size,
            allocated,
            flags: inode.flags,
            generation: inode.generation,
            atime: inode.atime,
            mtime: inode.mtime,
            ctime: inode.ctime,
            crtime: inode.crtime,
        })
    }
}

/// Attribute changes; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Timespec>,
    pub mtime: Option<Timespec>,
    /// The times given are the current time (UTIME_NOW, touch), not chosen ones: an
    /// append-only file accepts those.
    pub times_now: bool,
}

/// Owner and permission bits of a new inode.
#[derive(Debug, Clone, Copy)]
pub struct CreateAttrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl CreateAttrs {
    pub fn with_mode(mode: u32) -> Self {
        CreateAttrs {
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// rename(2) flags: RENAME_NOREPLACE and RENAME_EXCHANGE.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenameFlags {
    pub noreplace: bool,
    pub exchange: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub id: InodeId,
    pub kind: FileKind,
}

/// Space figures, as statfs and `cowfs info` report them.
#[derive(Debug, Clone)]
pub struct FsInfo {
    pub format_version: u32,
    pub uuid: [u8; 16],
    pub generation: u64,
    pub size: u64,
    /// Bytes allocatable for data now (free in block groups plus unallocated device space,
    /// less the metadata reserve).
    pub free: u64,
    pub data_used: u64,
    pub metadata_bytes: u64,
    pub block_groups: Vec<BlockGroup>,
    pub superblock: Superblock,
}

#[derive(Debug, Clone, Default)]
pub struct MkfsOptions {
    /// Bytes; the whole device when absent.
    pub size: Option<u64>,
    pub inline_limit: Option<u32>,
    pub uuid: Option<[u8; 16]>,
    /// Compress all new data (`compress=zstd` as a mkfs option).
    pub compress: Option<CompressionConfig>,
}

/// When reads update access times (the mount options of the same names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AtimePolicy {
    /// `noatime`: never.
    Never,
    /// `relatime`: when the access time is not after the last change, or a day old.
    #[default]
    Relative,
    /// `strictatime`: on every read.
    Always,
}

#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub read_only: bool,
    pub atime: AtimePolicy,
    /// Commit on this interval when there are changes; None: only on sync, fsync and unmount.
    pub commit_interval: Option<Duration>,
    /// Compress all new data while open, whatever mkfs chose (`compress=zstd:N` mount option).
    pub compress: Option<CompressionConfig>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            read_only: false,
            atime: AtimePolicy::default(),
            commit_interval: Some(Duration::from_secs(5)),
            compress: None,
        }
    }
}

/// How swap I/O reaches an active swap file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapMode {
    /// The caller writes the device at the pinned physical offsets.
    Pinned,
    /// Every swap read and write goes through the engine.
    ThroughFs,
}

/// A run of swap pages that is contiguous on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapExtent {
    /// The first page of the file in this run.
    pub page: u64,
    pub pages: u64,
    /// Device offset of `page`.
    pub physical: u64,
}

/// What activation gives the swap layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapActivation {
    pub mode: SwapMode,
    /// Whole pages of the file (its size rounded down).
    pub pages: u64,
    /// The page -> device map (pinned mode: fixed until deactivation).
    pub extents: Vec<SwapExtent>,
}

/// An active swap file's figures (`cowfs swapon --show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapStatus {
    pub mode: SwapMode,
    pub pages: u64,
    /// How swap writes are stored (through-filesystem mode), None when plainly.
    pub compression: Option<CompressionConfig>,
    /// Bytes of swap writes since activation (through-filesystem mode).
    pub swapped_out: u64,
    /// Bytes those writes put on the device.
    pub stored: u64,
}

impl SwapActivation {
    /// The device offset of byte `offset` of the file, and how many bytes from there on are
    /// contiguous on the device; None outside the map.
    pub fn device_range(&self, offset: u64) -> Option<(u64, u64)> {
        device_range(&self.extents, offset)
    }
}

/// [`SwapActivation::device_range`] over a map.
pub(crate) fn device_range(extents: &[SwapExtent], offset: u64) -> Option<(u64, u64)> {
    let page = offset / BLOCK_SIZE;
    let extent = extents
        .iter()
        .find(|e| (e.page..e.page + e.pages).contains(&page))?;
    let within = offset - extent.page * BLOCK_SIZE;
    Some((extent.physical + within, extent.pages * BLOCK_SIZE - within))
}

/// The largest file size: offsets must fit an i64, as in the kernel.
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64 & !(BLOCK_SIZE - 1);
