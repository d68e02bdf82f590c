//! Block groups and free space (docs/FORMAT.md 4.8, 4.9).

use super::{ByteReader, ByteWriter};
use crate::error::Result;

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

    // Where each field is: one list for the encoder and the decoder.
    const PHYSICAL_AT: usize = 0;
    const LENGTH_AT: usize = 8;
    const KIND_AT: usize = 16;
    const FLAGS_AT: usize = 20;
    const USED_AT: usize = 24;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::new(Self::SIZE);
        w.u64(Self::PHYSICAL_AT, self.physical)
            .u64(Self::LENGTH_AT, self.length)
            .u32(Self::KIND_AT, self.kind)
            .u32(Self::FLAGS_AT, self.flags)
            .u64(Self::USED_AT, self.used);
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<Self> {
        let r = ByteReader::exact(data, Self::SIZE, "block group")?;
        Ok(BlockGroupRecord {
            physical: r.u64(Self::PHYSICAL_AT)?,
            length: r.u64(Self::LENGTH_AT)?,
            kind: r.u32(Self::KIND_AT)?,
            flags: r.u32(Self::FLAGS_AT)?,
            used: r.u64(Self::USED_AT)?,
        })
    }
}

/// Encodes a `free_space` value (the free range's length).
pub(super) fn encode_len(len: u64) -> [u8; 8] {
    len.to_le_bytes()
}

pub(super) fn decode_len(data: &[u8]) -> Result<u64> {
    ByteReader::exact(data, 8, "free space")?.u64(0)
}
