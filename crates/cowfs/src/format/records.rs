//! Records of the metadata store: one table per kind, keys big-endian, values little-endian
//! fixed layouts (docs/FORMAT.md, "Tables").

use super::{ByteReader, ByteWriter};
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

/// `FsState::flags` bits 0-7: the compression new data gets filesystem-wide (a `Compression`
/// code); bits 8-15: its level (i8).
pub const FS_COMPRESSION_MASK: u32 = 0xff;
pub const FS_COMPRESSION_LEVEL_SHIFT: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsState {
    /// Commits since mkfs; every commit increments it.
    pub generation: u64,
    pub next_subvolume: u64,
    pub default_subvolume: u64,
    pub inline_limit: u32,
    pub flags: u32,
}

impl FsState {
    pub const SIZE: usize = 32;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::new(Self::SIZE);
        w.u64(0, self.generation)
            .u64(8, self.next_subvolume)
            .u64(16, self.default_subvolume)
            .u32(24, self.inline_limit)
            .u32(28, self.flags);
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<Self> {
        let r = ByteReader::exact(data, Self::SIZE, "fs_state")?;
        Ok(FsState {
            generation: r.u64(0)?,
            next_subvolume: r.u64(8)?,
            default_subvolume: r.u64(16)?,
            inline_limit: r.u32(24)?,
            flags: r.u32(28)?,
        })
    }
}

/// A `subvolumes` value: a subvolume (or snapshot) and where it appears in the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubvolumeRecord {
    pub root_ino: u64,
    pub next_ino: u64,
    pub flags: u64,
    /// The subvolume holding the directory entry that names this one (0 for the top level).
    pub parent: u64,
    pub created: i64,
    pub generation: u64,
    /// The directory (in `parent`) holding that entry.
    pub parent_dir: u64,
    /// The subvolume this is a snapshot of (0 for none).
    pub snapshot_of: u64,
    /// The entry's name.
    pub name: Vec<u8>,
}

impl SubvolumeRecord {
    pub const FIXED_SIZE: usize = 64;
    pub const FLAG_READ_ONLY: u64 = 1;

    pub fn read_only(&self) -> bool {
        self.flags & Self::FLAG_READ_ONLY != 0
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::new(Self::FIXED_SIZE + self.name.len());
        w.u64(0, self.root_ino)
            .u64(8, self.next_ino)
            .u64(16, self.flags)
            .u64(24, self.parent)
            .i64(32, self.created)
            .u64(40, self.generation)
            .u64(48, self.parent_dir)
            .u64(56, self.snapshot_of)
            .put(Self::FIXED_SIZE, &self.name);
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<Self> {
        let r = ByteReader::at_least(data, Self::FIXED_SIZE, "subvolume")?;
        let name = data[Self::FIXED_SIZE..].to_vec();
        if name.len() > super::NAME_MAX {
            return Err(Error::corrupt(format!(
                "subvolume name of {} bytes",
                name.len()
            )));
        }
        Ok(SubvolumeRecord {
            root_ino: r.u64(0)?,
            next_ino: r.u64(8)?,
            flags: r.u64(16)?,
            parent: r.u64(24)?,
            created: r.i64(32)?,
            generation: r.u64(40)?,
            parent_dir: r.u64(48)?,
            snapshot_of: r.u64(56)?,
            name,
        })
    }
}

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
}

impl InodeRecord {
    pub const SIZE: usize = 96;

    pub fn kind(&self) -> Result<FileKind> {
        FileKind::from_mode(self.mode)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::new(Self::SIZE);
        w.u32(0, self.mode)
            .u32(4, self.uid)
            .u32(8, self.gid)
            .u32(12, self.nlink)
            .u64(16, self.size)
            .u64(24, self.flags)
            .u64(32, self.generation)
            .u64(40, self.rdev);
        for (i, t) in [self.atime, self.mtime, self.ctime, self.crtime]
            .iter()
            .enumerate()
        {
            w.i64(48 + i * 8, t.sec).u32(80 + i * 4, t.nsec);
        }
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<Self> {
        let r = ByteReader::exact(data, Self::SIZE, "inode")?;
        let time = |i: usize| -> Result<Timespec> {
            Ok(Timespec {
                sec: r.i64(48 + i * 8)?,
                nsec: r.u32(80 + i * 4)?,
            })
        };
        let inode = InodeRecord {
            mode: r.u32(0)?,
            uid: r.u32(4)?,
            gid: r.u32(8)?,
            nlink: r.u32(12)?,
            size: r.u64(16)?,
            flags: r.u64(24)?,
            generation: r.u64(32)?,
            rdev: r.u64(40)?,
            atime: time(0)?,
            mtime: time(1)?,
            ctime: time(2)?,
            crtime: time(3)?,
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

    pub fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::new(Self::SIZE);
        w.u64(0, self.ino)
            .u64(8, self.subvol)
            .u8(16, self.kind.dirent_type());
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<Self> {
        let r = ByteReader::exact(data, Self::SIZE, "directory entry")?;
        Ok(DirEntryRecord {
            ino: r.u64(0)?,
            subvol: r.u64(8)?,
            kind: FileKind::from_dirent_type(r.u8(16)?)?,
        })
    }
}

/// How a file extent's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// In the record itself, after the header.
    Inline = 0,
    /// In a data extent on disk.
    Regular = 1,
    /// Allocated on disk but never written: reads as zeros.
    Prealloc = 2,
}

/// How an extent's bytes are encoded on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

impl Compression {
    pub fn from_code(code: u8) -> Result<Self> {
        match code {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Zstd),
            c => Err(Error::corrupt(format!("compression {c} unknown"))),
        }
    }
}

/// A `file_extents` value: a range of a file and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileExtent {
    pub kind: ExtentKind,
    /// A `Compression` code.
    pub compression: u8,
    /// Logical address and on-disk length of the whole data extent referenced.
    pub disk_start: u64,
    pub disk_len: u64,
    /// Where in the extent's (decoded) bytes this file range begins.
    pub extent_offset: u64,
    /// Bytes of the file this record covers.
    pub len: u64,
    /// Decoded length of the whole data extent.
    pub ram_len: u64,
    pub inline_data: Vec<u8>,
}

impl FileExtent {
    pub const HEADER_SIZE: usize = 48;

    pub fn regular(disk_start: u64, disk_len: u64) -> Self {
        FileExtent {
            kind: ExtentKind::Regular,
            compression: 0,
            disk_start,
            disk_len,
            extent_offset: 0,
            len: disk_len,
            ram_len: disk_len,
            inline_data: vec![],
        }
    }

    /// The part of this record covering file bytes `[from, to)` relative to its start.
    pub fn slice(&self, from: u64, to: u64) -> Self {
        let mut s = self.clone();
        s.len = to - from;
        if self.kind == ExtentKind::Inline {
            s.inline_data = self.inline_data[from as usize..to as usize].to_vec();
            s.ram_len = s.len;
        } else {
            s.extent_offset += from;
        }
        s
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::new(Self::HEADER_SIZE + self.inline_data.len());
        w.u8(0, self.kind as u8)
            .u8(1, self.compression)
            .u64(8, self.disk_start)
            .u64(16, self.disk_len)
            .u64(24, self.extent_offset)
            .u64(32, self.len)
            .u64(40, self.ram_len)
            .put(Self::HEADER_SIZE, &self.inline_data);
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<Self> {
        let r = ByteReader::at_least(data, Self::HEADER_SIZE, "file extent")?;
        let kind = match r.u8(0)? {
            0 => ExtentKind::Inline,
            1 => ExtentKind::Regular,
            2 => ExtentKind::Prealloc,
            k => return Err(Error::corrupt(format!("file extent kind {k} unknown"))),
        };
        let e = FileExtent {
            kind,
            compression: r.u8(1)?,
            disk_start: r.u64(8)?,
            disk_len: r.u64(16)?,
            extent_offset: r.u64(24)?,
            len: r.u64(32)?,
            ram_len: r.u64(40)?,
            inline_data: data[Self::HEADER_SIZE..].to_vec(),
        };
        e.validate()?;
        Ok(e)
    }

    fn validate(&self) -> Result<()> {
        let bad = |why: &str| Err(Error::corrupt(format!("file extent {why}: {self:?}")));
        if self.len == 0 {
            return bad("is empty");
        }
        if Compression::from_code(self.compression).is_err() {
            return bad("has an unknown compression");
        }
        match self.kind {
            ExtentKind::Inline
                if self.inline_data.len() as u64 != self.len || self.extent_offset != 0 =>
            {
                bad("inline length mismatch")
            }
            ExtentKind::Regular | ExtentKind::Prealloc
                if self
                    .extent_offset
                    .checked_add(self.len)
                    .is_none_or(|e| e > self.ram_len)
                    || (self.compression == Compression::None as u8
                        && self.ram_len != self.disk_len) =>
            {
                bad("points outside its extent")
            }
            _ => Ok(()),
        }
    }
}

/// An `extents` value: one allocated data extent and how many file extents reference it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentRecord {
    pub len: u64,
    pub refs: u64,
    pub flags: u64,
    pub generation: u64,
}

impl ExtentRecord {
    pub const SIZE: usize = 32;
    /// The extent's blocks have no checksums (NOCOW files).
    pub const FLAG_NODATASUM: u64 = 1;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::new(Self::SIZE);
        w.u64(0, self.len)
            .u64(8, self.refs)
            .u64(16, self.flags)
            .u64(24, self.generation);
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<Self> {
        let r = ByteReader::exact(data, Self::SIZE, "extent")?;
        Ok(ExtentRecord {
            len: r.u64(0)?,
            refs: r.u64(8)?,
            flags: r.u64(16)?,
            generation: r.u64(24)?,
        })
    }
}

/// An `extent_refs` key: extent, then the file extent record that references it.
pub fn extent_ref_key(extent: u64, subvol: u64, ino: u64, offset: u64) -> [u8; 32] {
    let mut k = [0; 32];
    k[..8].copy_from_slice(&extent.to_be_bytes());
    k[8..].copy_from_slice(&key3(subvol, ino, offset));
    k
}

/// Kinds of block group.
pub const BLOCK_GROUP_DATA: u32 = 1;
/// Block group flag: nothing new is allocated here (scrub, relocation).
pub const BLOCK_GROUP_READ_ONLY: u32 = 1;

/// A `block_groups` value: a chunk of the device given to data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockGroupRecord {
    pub physical: u64,
    pub length: u64,
    pub kind: u32,
    pub flags: u32,
    pub used: u64,
}

impl BlockGroupRecord {
    pub const SIZE: usize = 32;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::new(Self::SIZE);
        w.u64(0, self.physical)
            .u64(8, self.length)
            .u32(16, self.kind)
            .u32(20, self.flags)
            .u64(24, self.used);
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<Self> {
        let r = ByteReader::exact(data, Self::SIZE, "block group")?;
        Ok(BlockGroupRecord {
            physical: r.u64(0)?,
            length: r.u64(8)?,
            kind: r.u32(16)?,
            flags: r.u32(20)?,
            used: r.u64(24)?,
        })
    }
}

/// Encodes a `free_space` value (the free range's length).
pub fn encode_len(len: u64) -> [u8; 8] {
    len.to_le_bytes()
}

pub fn decode_len(data: &[u8]) -> Result<u64> {
    ByteReader::exact(data, 8, "free space")?.u64(0)
}

/// A `checksums` value: crc32c of each 4 KiB block of an extent.
pub fn encode_checksums(sums: &[u32]) -> Vec<u8> {
    sums.iter().flat_map(|s| s.to_le_bytes()).collect()
}

pub fn decode_checksums(data: &[u8]) -> Result<Vec<u32>> {
    if !data.len().is_multiple_of(4) {
        return Err(Error::corrupt(format!(
            "checksum record of {} bytes",
            data.len()
        )));
    }
    Ok(data
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_round_trip() {
        let inode = InodeRecord {
            mode: S_IFREG | 0o644,
            uid: 1000,
            gid: 100,
            nlink: 2,
            size: 123456789,
            flags: 0x0080_0000,
            generation: 7,
            rdev: 0,
            atime: Timespec {
                sec: -5,
                nsec: 999_999_999,
            },
            mtime: Timespec {
                sec: 1 << 40,
                nsec: 1,
            },
            ctime: Timespec { sec: 3, nsec: 0 },
            crtime: Timespec { sec: 4, nsec: 5 },
        };
        let bytes = inode.encode();
        assert_eq!(bytes.len(), InodeRecord::SIZE);
        assert_eq!(&bytes[16..24], &123456789u64.to_le_bytes());
        assert_eq!(InodeRecord::decode(&bytes).unwrap(), inode);
    }

    #[test]
    fn short_records_are_errors_not_panics() {
        assert!(InodeRecord::decode(&[0; 95]).is_err());
        assert!(FileExtent::decode(&[1; 10]).is_err());
        assert!(ExtentRecord::decode(&[]).is_err());
        assert!(decode_checksums(&[0; 7]).is_err());
    }

    #[test]
    fn file_extent_rejects_ranges_outside_its_extent() {
        let mut e = FileExtent::regular(1 << 20, 8192);
        assert!(FileExtent::decode(&e.encode()).is_ok());
        e.extent_offset = 4096;
        assert!(FileExtent::decode(&e.encode()).is_err());
        let s = FileExtent::regular(1 << 20, 8192).slice(4096, 8192);
        assert_eq!(FileExtent::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn keys_sort_numerically() {
        assert!(key3(1, 2, 255) < key3(1, 2, 256));
        assert!(key2(1, u64::MAX) < key2(2, 0));
        assert_eq!(key_part(&key3(7, 8, 9), 2).unwrap(), 9);
        assert!(key_part(&[1, 2, 3], 0).is_err());
        assert_eq!(key_tail(&key_with_name(&[1, 2], b"n"), 2).unwrap(), b"n");
        assert!(key_tail(&[0; 8], 2).is_err());
    }

    proptest::proptest! {
        /// Whatever bytes a record holds, decoding returns a value or an error: no panic.
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160)) {
            let _ = FsState::decode(&bytes);
            let _ = SubvolumeRecord::decode(&bytes);
            let _ = Compression::from_code(bytes.first().copied().unwrap_or(0));
            let _ = InodeRecord::decode(&bytes);
            let _ = DirEntryRecord::decode(&bytes);
            let _ = FileExtent::decode(&bytes);
            let _ = ExtentRecord::decode(&bytes);
            let _ = BlockGroupRecord::decode(&bytes);
            let _ = decode_checksums(&bytes);
            let _ = decode_len(&bytes);
            let _ = key_part(&bytes, 2);
            let _ = key_tail(&bytes, 3);
            let _ = crate::format::Superblock::decode(&bytes, 0, 1 << 30);
        }
    }
}
