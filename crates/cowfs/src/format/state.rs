//! The filesystem-wide record (`fs_state`) and subvolume records (docs/FORMAT.md 4.1, 4.2).

use super::{ByteReader, ByteWriter, CompressionConfig};
use crate::error::{Error, Result};

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

    /// The compression new data gets filesystem-wide: `flags` bits 0-7 (the algorithm's
    /// code) and 8-15 (its level).
    pub fn compression(&self) -> Result<Option<CompressionConfig>> {
        CompressionConfig::decode([self.flags as u8, (self.flags >> 8) as u8])
    }

    /// The `flags` that record `config`.
    pub fn compression_flags(config: Option<CompressionConfig>) -> u32 {
        let [code, level] = CompressionConfig::encode(config);
        u32::from(code) | (u32::from(level) << 8)
    }

    // Where each field is: one list for the encoder and the decoder.
    const GENERATION_AT: usize = 0;
    const NEXT_SUBVOLUME_AT: usize = 8;
    const DEFAULT_SUBVOLUME_AT: usize = 16;
    const INLINE_LIMIT_AT: usize = 24;
    const FLAGS_AT: usize = 28;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::new(Self::SIZE);
        w.u64(Self::GENERATION_AT, self.generation)
            .u64(Self::NEXT_SUBVOLUME_AT, self.next_subvolume)
            .u64(Self::DEFAULT_SUBVOLUME_AT, self.default_subvolume)
            .u32(Self::INLINE_LIMIT_AT, self.inline_limit)
            .u32(Self::FLAGS_AT, self.flags);
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<Self> {
        let r = ByteReader::exact(data, Self::SIZE, "fs_state")?;
        Ok(FsState {
            generation: r.u64(Self::GENERATION_AT)?,
            next_subvolume: r.u64(Self::NEXT_SUBVOLUME_AT)?,
            default_subvolume: r.u64(Self::DEFAULT_SUBVOLUME_AT)?,
            inline_limit: r.u32(Self::INLINE_LIMIT_AT)?,
            flags: r.u32(Self::FLAGS_AT)?,
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

    // Where each field is: one list for the encoder and the decoder.
    const ROOT_INO_AT: usize = 0;
    const NEXT_INO_AT: usize = 8;
    const FLAGS_AT: usize = 16;
    const PARENT_AT: usize = 24;
    const CREATED_AT: usize = 32;
    const GENERATION_AT: usize = 40;
    const PARENT_DIR_AT: usize = 48;
    const SNAPSHOT_OF_AT: usize = 56;

    pub fn read_only(&self) -> bool {
        self.flags & Self::FLAG_READ_ONLY != 0
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::new(Self::FIXED_SIZE + self.name.len());
        w.u64(Self::ROOT_INO_AT, self.root_ino)
            .u64(Self::NEXT_INO_AT, self.next_ino)
            .u64(Self::FLAGS_AT, self.flags)
            .u64(Self::PARENT_AT, self.parent)
            .i64(Self::CREATED_AT, self.created)
            .u64(Self::GENERATION_AT, self.generation)
            .u64(Self::PARENT_DIR_AT, self.parent_dir)
            .u64(Self::SNAPSHOT_OF_AT, self.snapshot_of)
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
            root_ino: r.u64(Self::ROOT_INO_AT)?,
            next_ino: r.u64(Self::NEXT_INO_AT)?,
            flags: r.u64(Self::FLAGS_AT)?,
            parent: r.u64(Self::PARENT_AT)?,
            created: r.i64(Self::CREATED_AT)?,
            generation: r.u64(Self::GENERATION_AT)?,
            parent_dir: r.u64(Self::PARENT_DIR_AT)?,
            snapshot_of: r.u64(Self::SNAPSHOT_OF_AT)?,
            name,
        })
    }
}
