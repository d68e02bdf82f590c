//! Inodes and directory entries: times, kinds, flags, and their records (docs/FORMAT.md 4.3,
//! 4.4).

use super::{ByteReader, ByteWriter, CompressionConfig};
use crate::error::{Error, Result};

/// A point in time: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

impl Timespec {
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        }
    }
}

pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;

/// What an inode is, from the type bits of its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
}

impl FileKind {
    pub fn from_mode(mode: u32) -> Result<Self> {
        match mode & S_IFMT {
            S_IFREG => Ok(FileKind::Regular),
            S_IFDIR => Ok(FileKind::Directory),
            S_IFLNK => Ok(FileKind::Symlink),
            other => Err(Error::corrupt(format!("inode type {other:#o} unknown"))),
        }
    }

    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::Regular => S_IFREG,
            FileKind::Directory => S_IFDIR,
            FileKind::Symlink => S_IFLNK,
        }
    }

    /// The dirent type byte (DT_REG, DT_DIR, DT_LNK).
    pub fn dirent_type(self) -> u8 {
        match self {
            FileKind::Regular => 8,
            FileKind::Directory => 4,
            FileKind::Symlink => 10,
        }
    }

    pub fn from_dirent_type(t: u8) -> Result<Self> {
        match t {
            8 => Ok(FileKind::Regular),
            4 => Ok(FileKind::Directory),
            10 => Ok(FileKind::Symlink),
            other => Err(Error::corrupt(format!(
                "directory entry type {other} unknown"
            ))),
        }
    }
}

/// Inode flags: the Linux FS_IOC_GETFLAGS bits, so front ends pass them through unchanged.
pub mod inode_flags {
    /// `c`: compress new data.
    pub const COMPRESS: u64 = 0x0000_0004;
    /// `S`: synchronous updates.
    pub const SYNC: u64 = 0x0000_0008;
    /// `i`: immutable.
    pub const IMMUTABLE: u64 = 0x0000_0010;
    /// `a`: append only.
    pub const APPEND: u64 = 0x0000_0020;
    /// `d`: no dump.
    pub const NODUMP: u64 = 0x0000_0040;
    /// `A`: no atime updates.
    pub const NOATIME: u64 = 0x0000_0080;
    /// `m`: never compress.
    pub const NOCOMPRESS: u64 = 0x0000_0400;
    /// `D`: synchronous directory updates.
    pub const DIRSYNC: u64 = 0x0001_0000;
    /// `C`: no copy-on-write (and no checksums).
    pub const NOCOW: u64 = 0x0080_0000;
    pub const SUPPORTED: u64 =
        COMPRESS | SYNC | IMMUTABLE | APPEND | NODUMP | NOATIME | NOCOMPRESS | DIRSYNC | NOCOW;
}

/// An inode's attributes: the `inodes` table value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeRecord {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    /// FS_IOC_GETFLAGS bits.
    pub flags: u64,
    /// The generation that created the inode.
    pub generation: u64,
    pub rdev: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub crtime: Timespec,
    /// The file's own compression choice (`cowfs property`): the algorithm its data gets
    /// when it is compressed (flag `c`, or a filesystem set to compress); None: the
    /// filesystem's.
    pub compression: Option<CompressionConfig>,
}

impl InodeRecord {
    pub const SIZE: usize = 104;

    // Where each field is: one list for the encoder and the decoder.
    const MODE_AT: usize = 0;
    const UID_AT: usize = 4;
    const GID_AT: usize = 8;
    const NLINK_AT: usize = 12;
    const SIZE_AT: usize = 16;
    const FLAGS_AT: usize = 24;
    const GENERATION_AT: usize = 32;
    const RDEV_AT: usize = 40;
    /// Seconds of atime, mtime, ctime and crtime, 8 bytes each; then their nanoseconds, 4 each.
    const SECONDS_AT: usize = 48;
    const NANOSECONDS_AT: usize = 80;
    /// The compression choice's two bytes; six reserved zero bytes follow.
    const COMPRESSION_AT: usize = 96;

    pub fn kind(&self) -> Result<FileKind> {
        FileKind::from_mode(self.mode)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::new(Self::SIZE);
        w.u32(Self::MODE_AT, self.mode)
            .u32(Self::UID_AT, self.uid)
            .u32(Self::GID_AT, self.gid)
            .u32(Self::NLINK_AT, self.nlink)
            .u64(Self::SIZE_AT, self.size)
            .u64(Self::FLAGS_AT, self.flags)
            .u64(Self::GENERATION_AT, self.generation)
            .u64(Self::RDEV_AT, self.rdev);
        for (i, t) in [self.atime, self.mtime, self.ctime, self.crtime]
            .iter()
            .enumerate()
        {
            w.i64(Self::SECONDS_AT + i * 8, t.sec)
                .u32(Self::NANOSECONDS_AT + i * 4, t.nsec);
        }
        let [code, level] = CompressionConfig::encode(self.compression);
        w.u8(Self::COMPRESSION_AT, code)
            .u8(Self::COMPRESSION_AT + 1, level);
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<Self> {
        let r = ByteReader::exact(data, Self::SIZE, "inode")?;
        let time = |i: usize| -> Result<Timespec> {
            Ok(Timespec {
                sec: r.i64(Self::SECONDS_AT + i * 8)?,
                nsec: r.u32(Self::NANOSECONDS_AT + i * 4)?,
            })
        };
        let inode = InodeRecord {
            mode: r.u32(Self::MODE_AT)?,
            uid: r.u32(Self::UID_AT)?,
            gid: r.u32(Self::GID_AT)?,
            nlink: r.u32(Self::NLINK_AT)?,
            size: r.u64(Self::SIZE_AT)?,
            flags: r.u64(Self::FLAGS_AT)?,
            generation: r.u64(Self::GENERATION_AT)?,
            rdev: r.u64(Self::RDEV_AT)?,
            atime: time(0)?,
            mtime: time(1)?,
            ctime: time(2)?,
            crtime: time(3)?,
            compression: CompressionConfig::decode([
                r.u8(Self::COMPRESSION_AT)?,
                r.u8(Self::COMPRESSION_AT + 1)?,
            ])?,
        };
        inode.kind()?;
        Ok(inode)
    }
}

/// A `dir_entries` value: the inode a name points at. An entry naming a subvolume's root
/// points into that subvolume; every other entry points into the directory's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntryRecord {
    pub ino: u64,
    pub subvol: u64,
    pub kind: FileKind,
}

impl DirEntryRecord {
    pub const SIZE: usize = 24;

    // Where each field is: one list for the encoder and the decoder.
    const INO_AT: usize = 0;
    const SUBVOL_AT: usize = 8;
    const KIND_AT: usize = 16;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::new(Self::SIZE);
        w.u64(Self::INO_AT, self.ino)
            .u64(Self::SUBVOL_AT, self.subvol)
            .u8(Self::KIND_AT, self.kind.dirent_type());
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<Self> {
        let r = ByteReader::exact(data, Self::SIZE, "directory entry")?;
        Ok(DirEntryRecord {
            ino: r.u64(Self::INO_AT)?,
            subvol: r.u64(Self::SUBVOL_AT)?,
            kind: FileKind::from_dirent_type(r.u8(Self::KIND_AT)?)?,
        })
    }
}
