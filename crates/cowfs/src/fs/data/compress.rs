//! Transparent compression with zstd. At writeback, data of a file marked `+c` (or of every
//! file, when the filesystem is set to compress) is cut into pieces of at most 128 KiB; each
//! is stored as one zstd frame padded to whole blocks when that saves at least a block, and
//! as plain data otherwise. Checksums cover the blocks as stored. Direct writes and NOCOW or
//! `+m` files are never compressed.

use std::sync::Arc;

use crate::device::AlignedBuf;
use crate::error::{Error, Result};
use crate::format::inode_flags::{COMPRESS, NOCOMPRESS, NOCOW};
use crate::format::{round_up, Compression, FileExtent, InodeRecord, BLOCK_SIZE};
use crate::fs::common::DirtyRange;
use crate::fs::common::ExtentData;
use crate::fs::engine::Engine;
use crate::fs::types::DEFAULT_LEVEL;
use crate::fs::InodeId;

/// The most file data one compressed extent holds.
pub const MAX_COMPRESSED_LEN: u64 = 128 << 10;

/// Decodes a compressed extent's stored bytes (a frame and zero padding) to exactly
/// `ram_len` bytes.
pub fn decompress_extent(stored: &[u8], ram_len: u64) -> Result<Vec<u8>> {
    let bad = |why: String| Error::corrupt(format!("compressed extent: {why}"));
    let frame = zstd::zstd_safe::find_frame_compressed_size(stored)
        .map_err(|c| bad(zstd::zstd_safe::get_error_name(c).into()))?;
    let plain = zstd::bulk::decompress(&stored[..frame], ram_len as usize)
        .map_err(|e| bad(e.to_string()))?;
    if plain.len() as u64 != ram_len {
        return Err(bad(format!(
            "{} bytes decoded, {ram_len} expected",
            plain.len()
        )));
    }
    Ok(plain)
}

impl Engine {
    /// The zstd level new data of this file is compressed with, if any.
    pub(in crate::fs) fn compression_level(&self, inode: &InodeRecord) -> Option<i32> {
        if inode.flags & (NOCOW | NOCOMPRESS) != 0 {
            return None;
        }
        match self.compression {
            Some(config) => Some(config.level),
            None if inode.flags & COMPRESS != 0 => Some(DEFAULT_LEVEL),
            None => None,
        }
    }

    /// Writes dirty data to new extents, compressing each piece of at most 128 KiB that
    /// shrinks by a block or more and writing the rest plainly.
    pub(in crate::fs) fn write_compressed(
        &mut self,
        id: InodeId,
        mut offset: u64,
        mut data: ExtentData<'_>,
        level: i32,
    ) -> Result<()> {
        while data.len() > 0 {
            let part = data.take(data.len().min(MAX_COMPRESSED_LEN));
            let len = part.len();
            let plain: Vec<u8> = part.slices().concat();
            let packed = zstd::bulk::compress(&plain, level).map_err(|e| Error::io("zstd", &e))?;
            let stored_len = round_up(packed.len() as u64, BLOCK_SIZE);
            if stored_len + BLOCK_SIZE > len {
                self.write_new(id, false, offset, part)?;
            } else {
                let mut stored = AlignedBuf::zeroed(stored_len as usize);
                stored[..packed.len()].copy_from_slice(&packed);
                self.write_encoded(id, offset, part, stored)?;
            }
            offset += len;
        }
        Ok(())
    }

    /// Stores one compressed piece; plainly instead when no contiguous space fits it.
    fn write_encoded(
        &mut self,
        id: InodeId,
        offset: u64,
        part: ExtentData<'_>,
        stored: AlignedBuf,
    ) -> Result<()> {
        let len = part.len();
        let Some(extent) =
            self.alloc
                .allocate_contiguous(self.store.meta(), &self.space, stored.len() as u64)?
        else {
            return self.write_new(id, false, offset, part);
        };
        let physical = self.alloc.physical(extent.start)?;
        let sums = crate::fs::common::checksum_blocks(&stored);
        let range = 0..stored.len();
        self.writer.write_behind(
            &self.device,
            physical,
            vec![DirtyRange {
                buf: Arc::new(stored),
                range,
            }],
        )?;
        let mapping = FileExtent {
            compression: Compression::Zstd,
            len,
            ram_len: len,
            ..FileExtent::regular(extent.start, extent.len)
        };
        self.record_extent(id, offset, extent, Some(&sums), mapping)
    }

    /// Reads `dst.len()` bytes at `within` of a compressed extent's decoded data.
    pub(in crate::fs) fn read_compressed(
        &self,
        id: InodeId,
        e: &FileExtent,
        within: u64,
        file_off: u64,
        dst: &mut [u8],
    ) -> Result<()> {
        let mut stored = AlignedBuf::zeroed(e.disk_len as usize);
        self.device_read(e.disk_start, &mut stored)?;
        // A clone may map this extent from any file offset: name the read's, not the
        // extent's start (which can lie before the file's start).
        self.verify_blocks(id, e, 0, file_off, &stored)?;
        let plain = decompress_extent(&stored, e.ram_len)
            .map_err(|err| Error::checksum(format!("{}: {}", self.path_of(id), err.reason())))?;
        dst.copy_from_slice(&plain[within as usize..within as usize + dst.len()]);
        Ok(())
    }
}
