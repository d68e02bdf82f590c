//! Transparent compression with zstd or LZ4. At writeback, data of a file marked `+c` (or of
//! every file, when the filesystem is set to compress) is cut into pieces of at most 128 KiB;
//! each is stored encoded (a zstd frame, or an LZ4 block after its length) and padded to whole
//! blocks when that saves at least a block, and as plain data otherwise. The algorithm is the
//! file's own choice, else the filesystem's. A writeback's pieces are encoded on every core,
//! each thread keeping its zstd context. Checksums cover the blocks as stored. Swap writes
//! of a through-filesystem swap file are compressed the same way, in 32 KiB pieces encoded
//! before the engine's lock is taken (`encode_pieces`); other direct writes, and NOCOW or `+m`
//! files, never are.

use std::sync::Arc;

use crate::device::AlignedBuf;
use crate::error::{Error, Result};
use crate::format::inode_flags::{COMPRESS, NOCOMPRESS, NOCOW};
use crate::format::{
    round_up, Compression, CompressionConfig, FileExtent, InodeRecord, BLOCK_SIZE,
};
use crate::fs::alloc::Extent;
use crate::fs::common::DirtyRange;
use crate::fs::common::ExtentData;
use crate::fs::engine::Engine;
use crate::fs::InodeId;

pub use crate::format::MAX_COMPRESSED_LEN;

/// Encodes `plain` as `config` says: a zstd frame, or an LZ4 block after its length.
fn encode(config: CompressionConfig, plain: &[u8]) -> Result<Vec<u8>> {
    match config.algorithm {
        Compression::Zstd => with_zstd(config.level, plain).map_err(|e| Error::io("zstd", &e)),
        Compression::Lz4 => {
            let mut out =
                vec![0u8; LZ4_LEN_SIZE + lz4_flex::block::get_maximum_output_size(plain.len())];
            let len = lz4_flex::block::compress_into(plain, &mut out[LZ4_LEN_SIZE..])
                .map_err(|e| Error::io("lz4", &std::io::Error::other(e)))?;
            out[..LZ4_LEN_SIZE].copy_from_slice(&(len as u32).to_le_bytes());
            out.truncate(LZ4_LEN_SIZE + len);
            Ok(out)
        }
        Compression::None => Ok(plain.to_vec()),
    }
}

/// A thread's zstd compression context at its level, and its output buffer.
struct ZstdContext {
    level: i32,
    compressor: zstd::bulk::Compressor<'static>,
    out: Vec<u8>,
}

thread_local! {
    /// Made once per thread, not per piece: a context costs hundreds of KiB to allocate and
    /// clear, and a fresh output buffer of a piece's size comes from mmap, page faults and
    /// all; together about a fifth of a writeback's encoding time.
    static ZSTD: std::cell::RefCell<Option<ZstdContext>> = const { std::cell::RefCell::new(None) };
}

/// `plain` as a zstd frame at `level`, with this thread's context.
fn with_zstd(level: i32, plain: &[u8]) -> std::io::Result<Vec<u8>> {
    ZSTD.with_borrow_mut(|context| {
        let zstd = match context {
            Some(zstd) => zstd,
            None => context.insert(ZstdContext {
                level,
                compressor: zstd::bulk::Compressor::new(level)?,
                out: Vec::new(),
            }),
        };
        if zstd.level != level {
            zstd.compressor.set_compression_level(level)?;
            zstd.level = level;
        }
        zstd.out.clear();
        zstd.out
            .reserve(zstd::zstd_safe::compress_bound(plain.len()));
        zstd.compressor.compress_to_buffer(plain, &mut zstd.out)?;
        Ok(zstd.out.clone())
    })
}

/// How a write's pieces are stored: each piece's encoding, or None where it is stored plainly.
pub(crate) type EncodedPieces = Vec<Option<Vec<u8>>>;

/// Cuts `plain` in pieces of `piece` bytes (at most 128 KiB) and encodes each as `config`
/// says, keeping the encodings that save a block or more. Needs no engine: callers may run it
/// before they take the engine's lock.
pub(crate) fn encode_pieces(
    config: CompressionConfig,
    plain: &[u8],
    piece: u64,
) -> Result<EncodedPieces> {
    plain
        .chunks(piece_len(piece))
        .map(|part| encode_piece(config, part))
        .collect()
}

/// [`encode_pieces`] for writeback and defrag, on every core: a writeback of a `+c` file
/// compresses up to tens of MiB at a time, which one core takes several times as long to
/// encode as the device takes to write. The pieces are cut as `store_pieces` will take them,
/// and shared out in runs, one per thread; this thread encodes the first.
fn encode_on_every_core(
    config: CompressionConfig,
    data: &ExtentData<'_>,
    piece: u64,
) -> Result<EncodedPieces> {
    let mut rest = data.clone();
    let mut parts = Vec::new();
    while rest.len() > 0 {
        parts.push(rest.take(rest.len().min(piece_len(piece) as u64)));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = parts.len().div_ceil(cores).max(1);
    let encode_run = |run: &[ExtentData<'_>]| -> Result<EncodedPieces> {
        // A piece spanning chunks is joined in one buffer reused for the run.
        let mut joined = Vec::new();
        run.iter()
            .map(|part| match part.slices().as_slice() {
                [one] => encode_piece(config, one),
                many => {
                    joined.clear();
                    many.iter().for_each(|s| joined.extend_from_slice(s));
                    encode_piece(config, &joined)
                }
            })
            .collect()
    };
    let mut runs = parts.chunks(per_thread);
    let first = runs.next().unwrap_or_default();
    std::thread::scope(|scope| {
        let others: Vec<_> = runs
            .map(|run| scope.spawn(move || encode_run(run)))
            .collect();
        let mut encoded = encode_run(first)?;
        for other in others {
            let run = other
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            encoded.extend(run?);
        }
        Ok(encoded)
    })
}

fn piece_len(piece: u64) -> usize {
    piece.min(MAX_COMPRESSED_LEN) as usize
}

/// `part` encoded, if storing that instead saves at least a block.
fn encode_piece(config: CompressionConfig, part: &[u8]) -> Result<Option<Vec<u8>>> {
    let packed = encode(config, part)?;
    let saves = round_up(packed.len() as u64, BLOCK_SIZE) + BLOCK_SIZE <= part.len() as u64;
    Ok(saves.then_some(packed))
}

/// A piece of file data at `offset`, compressed to `packed`.
struct Encoded<'a> {
    offset: u64,
    part: ExtentData<'a>,
    packed: Vec<u8>,
}

/// The length before an LZ4 block.
const LZ4_LEN_SIZE: usize = 4;

/// Decodes a compressed extent's stored bytes (the encoding and zero padding) to exactly
/// `ram_len` bytes.
pub fn decompress_extent(how: Compression, stored: &[u8], ram_len: u64) -> Result<Vec<u8>> {
    let bad = |why: String| Error::corrupt(format!("{} extent: {why}", how.name()));
    let plain = match how {
        Compression::Zstd => {
            let frame = zstd::zstd_safe::find_frame_compressed_size(stored)
                .map_err(|c| bad(zstd::zstd_safe::get_error_name(c).into()))?;
            zstd::bulk::decompress(&stored[..frame], ram_len as usize)
                .map_err(|e| bad(e.to_string()))?
        }
        Compression::Lz4 => {
            let (len, block) = stored
                .split_first_chunk::<LZ4_LEN_SIZE>()
                .ok_or_else(|| bad("shorter than its length".into()))?;
            let block = block
                .get(..u32::from_le_bytes(*len) as usize)
                .ok_or_else(|| bad("its length runs past the extent".into()))?;
            lz4_flex::block::decompress(block, ram_len as usize).map_err(|e| bad(e.to_string()))?
        }
        Compression::None => return Err(bad("not compressed".into())),
    };
    if plain.len() as u64 != ram_len {
        return Err(bad(format!(
            "{} bytes decoded, {ram_len} expected",
            plain.len()
        )));
    }
    Ok(plain)
}

impl Engine {
    /// How new data of this file is compressed, if it is: when the file is marked `c` or the
    /// filesystem compresses everything, and it is neither NOCOW nor marked `m`; with the
    /// file's own algorithm, else the filesystem's, else zstd.
    pub(in crate::fs) fn compression_for(&self, inode: &InodeRecord) -> Option<CompressionConfig> {
        let wanted = inode.flags & COMPRESS != 0 || self.compression.is_some();
        if !wanted || inode.flags & (NOCOW | NOCOMPRESS) != 0 {
            return None;
        }
        Some(self.compression_choice(inode))
    }

    /// A file's own compression choice, and how its new data is stored (None: plainly).
    pub fn compression_of(
        &self,
        id: InodeId,
    ) -> Result<(Option<CompressionConfig>, Option<CompressionConfig>)> {
        let inode = self.inode(id)?;
        Ok((inode.compression, self.compression_for(&inode)))
    }

    /// The algorithm this file's data is compressed with when it is: the file's own choice,
    /// else the filesystem's, else zstd.
    pub(in crate::fs) fn compression_choice(&self, inode: &InodeRecord) -> CompressionConfig {
        inode
            .compression
            .or(self.compression)
            .unwrap_or(CompressionConfig::ZSTD)
    }

    /// Writes data to new extents, compressing each piece of at most `piece` bytes (up to
    /// 128 KiB) that shrinks by a block or more and writing the rest plainly. Consecutive
    /// compressed pieces go to the device in one write. Returns the bytes it put on the
    /// device.
    pub(in crate::fs) fn write_compressed(
        &mut self,
        id: InodeId,
        offset: u64,
        data: ExtentData<'_>,
        config: CompressionConfig,
        piece: u64,
    ) -> Result<u64> {
        let encoded = encode_on_every_core(config, &data, piece)?;
        self.store_pieces(id, offset, data, config, piece, encoded)
    }

    /// Stores data cut in pieces of `piece` bytes as [`encode_pieces`] encoded them: each
    /// encoded piece in a compressed extent, consecutive ones with one write, the others
    /// plainly. Returns the bytes it put on the device.
    pub(in crate::fs) fn store_pieces(
        &mut self,
        id: InodeId,
        mut offset: u64,
        mut data: ExtentData<'_>,
        config: CompressionConfig,
        piece: u64,
        encoded: EncodedPieces,
    ) -> Result<u64> {
        let mut stored_bytes = 0;
        let mut run: Vec<Encoded<'_>> = Vec::new();
        for packed in encoded {
            let part = data.take(data.len().min(piece_len(piece) as u64));
            let len = part.len();
            match packed {
                Some(packed) => run.push(Encoded {
                    offset,
                    part,
                    packed,
                }),
                None => {
                    stored_bytes += self.write_encoded(id, std::mem::take(&mut run), config)?;
                    self.write_new(id, false, offset, part)?;
                    stored_bytes += len;
                }
            }
            offset += len;
        }
        Ok(stored_bytes + self.write_encoded(id, run, config)?)
    }

    /// Stores compressed pieces of a file, consecutive in it, side by side in one new stretch
    /// of space with one write, an extent each; when no stretch fits them all, one at a time,
    /// and a piece no contiguous space fits, plainly. Returns the bytes it put on the device.
    fn write_encoded(
        &mut self,
        id: InodeId,
        mut run: Vec<Encoded<'_>>,
        config: CompressionConfig,
    ) -> Result<u64> {
        let stored_len = |e: &Encoded<'_>| round_up(e.packed.len() as u64, BLOCK_SIZE);
        let total: u64 = run.iter().map(stored_len).sum();
        if total == 0 {
            return Ok(0);
        }
        let Some(space) = self
            .alloc
            .allocate_contiguous(self.store.meta(), &self.space, total)?
        else {
            if run.len() > 1 {
                let mut stored = 0;
                for one in run {
                    stored += self.write_encoded(id, vec![one], config)?;
                }
                return Ok(stored);
            }
            let Encoded { offset, part, .. } = run.remove(0);
            let len = part.len();
            self.write_new(id, false, offset, part)?;
            return Ok(len);
        };
        let mut stored = AlignedBuf::zeroed(total as usize);
        let mut at = 0;
        for e in &run {
            stored[at..at + e.packed.len()].copy_from_slice(&e.packed);
            at += stored_len(e) as usize;
        }
        let sums = crate::fs::common::checksum_blocks(&stored);
        let physical = self.alloc.physical(space.start)?;
        let range = 0..stored.len();
        self.writer.write_behind(
            &self.device,
            physical,
            vec![DirtyRange {
                buf: Arc::new(stored),
                range,
            }],
        )?;
        let mut at = 0;
        for e in &run {
            let extent = Extent {
                start: space.start + at,
                len: stored_len(e),
            };
            let len = e.part.len();
            let mapping = FileExtent {
                compression: config.algorithm,
                len,
                ram_len: len,
                ..FileExtent::regular(extent.start, extent.len)
            };
            let blocks = (at / BLOCK_SIZE) as usize..((at + extent.len) / BLOCK_SIZE) as usize;
            self.record_extent(id, e.offset, extent, Some(&sums[blocks]), mapping)?;
            at += extent.len;
        }
        Ok(total)
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
        let plain = decompress_extent(e.compression, &stored, e.ram_len)
            .map_err(|err| Error::checksum(format!("{}: {}", self.path_of(id), err.reason())))?;
        dst.copy_from_slice(&plain[within as usize..within as usize + dst.len()]);
        Ok(())
    }
}
