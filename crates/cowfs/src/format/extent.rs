//! File extents, data extents and their checksums (docs/FORMAT.md 4.5-4.7).

use std::ops::Range;

use super::{ByteReader, ByteWriter, Compression, MAX_COMPRESSED_LEN};
use crate::error::{Error, Result};

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

/// A `file_extents` value: a range of a file and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileExtent {
    pub kind: ExtentKind,
    pub compression: Compression,
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

    // Where each field is: one list for the encoder and the decoder.
    const KIND_AT: usize = 0;
    const COMPRESSION_AT: usize = 1;
    const DISK_START_AT: usize = 8;
    const DISK_LEN_AT: usize = 16;
    const EXTENT_OFFSET_AT: usize = 24;
    const LEN_AT: usize = 32;
    const RAM_LEN_AT: usize = 40;

    pub fn regular(disk_start: u64, disk_len: u64) -> Self {
        FileExtent {
            kind: ExtentKind::Regular,
            compression: Compression::None,
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
        w.u8(Self::KIND_AT, self.kind as u8)
            .u8(Self::COMPRESSION_AT, self.compression as u8)
            .u64(Self::DISK_START_AT, self.disk_start)
            .u64(Self::DISK_LEN_AT, self.disk_len)
            .u64(Self::EXTENT_OFFSET_AT, self.extent_offset)
            .u64(Self::LEN_AT, self.len)
            .u64(Self::RAM_LEN_AT, self.ram_len)
            .put(Self::HEADER_SIZE, &self.inline_data);
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<Self> {
        let r = ByteReader::at_least(data, Self::HEADER_SIZE, "file extent")?;
        let kind = match r.u8(Self::KIND_AT)? {
            0 => ExtentKind::Inline,
            1 => ExtentKind::Regular,
            2 => ExtentKind::Prealloc,
            k => return Err(Error::corrupt(format!("file extent kind {k} unknown"))),
        };
        let e = FileExtent {
            kind,
            compression: Compression::from_code(r.u8(Self::COMPRESSION_AT)?)?,
            disk_start: r.u64(Self::DISK_START_AT)?,
            disk_len: r.u64(Self::DISK_LEN_AT)?,
            extent_offset: r.u64(Self::EXTENT_OFFSET_AT)?,
            len: r.u64(Self::LEN_AT)?,
            ram_len: r.u64(Self::RAM_LEN_AT)?,
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
                    || (self.compression == Compression::None && self.ram_len != self.disk_len) =>
            {
                bad("points outside its extent")
            }
            _ if self.compression != Compression::None && self.ram_len > MAX_COMPRESSED_LEN => {
                bad("decodes to more than a compressed extent may hold")
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

    // Where each field is: one list for the encoder and the decoder.
    const LEN_AT: usize = 0;
    const REFS_AT: usize = 8;
    const FLAGS_AT: usize = 16;
    const GENERATION_AT: usize = 24;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::new(Self::SIZE);
        w.u64(Self::LEN_AT, self.len)
            .u64(Self::REFS_AT, self.refs)
            .u64(Self::FLAGS_AT, self.flags)
            .u64(Self::GENERATION_AT, self.generation);
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<Self> {
        let r = ByteReader::exact(data, Self::SIZE, "extent")?;
        Ok(ExtentRecord {
            len: r.u64(Self::LEN_AT)?,
            refs: r.u64(Self::REFS_AT)?,
            flags: r.u64(Self::FLAGS_AT)?,
            generation: r.u64(Self::GENERATION_AT)?,
        })
    }
}

/// A `checksums` value: crc32c of each 4 KiB block of an extent.
pub(super) fn encode_checksums(sums: &[u32]) -> Vec<u8> {
    sums.iter().flat_map(|s| s.to_le_bytes()).collect()
}

pub(super) fn decode_checksums(data: &[u8]) -> Result<Vec<u32>> {
    decode_checksum_range(data, 0..usize::MAX)
}

/// The checksums of blocks `blocks` of a checksum record (fewer where the record ends first),
/// decoded without the rest of it.
pub fn decode_checksum_range(data: &[u8], blocks: Range<usize>) -> Result<Vec<u32>> {
    if !data.len().is_multiple_of(4) {
        return Err(Error::corrupt(format!(
            "checksum record of {} bytes",
            data.len()
        )));
    }
    let count = data.len() / 4;
    let (first, end) = (blocks.start.min(count), blocks.end.min(count));
    Ok(data[first * 4..end.max(first) * 4]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect())
}
