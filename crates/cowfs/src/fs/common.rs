//! Engine-internal types that several parts of fs/ share: what a change is about to do to an
//! inode (the rules of flags and swap files judge it), data on its way to extents, what a read
//! of a compressed extent decodes, and block checksums. Like types.rs, it uses nothing above it.

use std::ops::Range;
use std::sync::Arc;

use crate::device::AlignedBuf;
use crate::format::{Compression, BLOCK_SIZE, MAX_EXTENT_LEN};

/// What a read of a compressed extent decodes, and which of its bytes it keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decode {
    pub(crate) how: Compression,
    pub(crate) ram_len: u64,
    pub(crate) within: usize,
    pub(crate) len: usize,
}

/// What a caller is about to do to an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Write file data starting at this offset.
    Write(u64),
    /// Change the size (truncate), punch or deallocate data.
    Resize,
    /// Change mode, owner, times, or the link count.
    Attributes,
    /// Set the times to now (touch, UTIME_NOW), which append-only files allow, as Linux does.
    Touch,
    /// Add blocks to the file, or store its bytes another way, without changing them
    /// (preallocation, compressing defrag).
    Layout,
    /// Move the file's blocks elsewhere without changing its bytes or size (defrag).
    Move,
    /// Share the file's blocks with another file or range (reflink, dedupe or copy from it).
    Share,
    /// Remove or rename this inode's name.
    Unname,
    /// Add an entry to this directory.
    AddEntry,
    /// Remove an entry from this directory.
    RemoveEntry,
}

/// Part of a chunk buffer: what writeback sends to the device.
#[derive(Debug, Clone)]
pub struct DirtyRange {
    pub buf: Arc<AlignedBuf>,
    pub range: Range<usize>,
}

impl DirtyRange {
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

/// Pages in the largest extent.
pub(crate) const EXTENT_PAGES: u64 = MAX_EXTENT_LEN / BLOCK_SIZE;

/// What `write_extents` writes: the caller's buffer, or dirty chunks.
#[derive(Clone)]
pub(crate) enum ExtentData<'a> {
    Direct(&'a [u8]),
    Chunks(Vec<DirtyRange>),
}

impl<'a> ExtentData<'a> {
    pub(crate) fn len(&self) -> u64 {
        match self {
            ExtentData::Direct(bytes) => bytes.len() as u64,
            ExtentData::Chunks(pieces) => pieces.iter().map(|p| p.range.len() as u64).sum(),
        }
    }

    /// Takes the first `len` bytes off the front.
    pub(crate) fn take(&mut self, len: u64) -> ExtentData<'a> {
        match self {
            ExtentData::Direct(bytes) => {
                let (head, tail) = bytes.split_at(len as usize);
                *bytes = tail;
                ExtentData::Direct(head)
            }
            ExtentData::Chunks(pieces) => ExtentData::Chunks(take_pieces(pieces, len as usize)),
        }
    }

    pub(crate) fn slices(&self) -> Vec<&[u8]> {
        match self {
            ExtentData::Direct(bytes) => vec![bytes],
            ExtentData::Chunks(pieces) => pieces.iter().map(DirtyRange::bytes).collect(),
        }
    }

    pub(crate) fn checksums(&self) -> Vec<u32> {
        self.slices()
            .iter()
            .flat_map(|s| checksum_blocks(s))
            .collect()
    }
}

/// Takes the first `len` bytes off `pieces`, splitting a piece that straddles the boundary.
fn take_pieces(pieces: &mut Vec<DirtyRange>, mut len: usize) -> Vec<DirtyRange> {
    let mut head = Vec::new();
    let mut rest = std::mem::take(pieces).into_iter();
    for mut piece in rest.by_ref() {
        if piece.range.len() <= len {
            len -= piece.range.len();
            head.push(piece);
        } else {
            let cut = piece.range.start + len;
            head.push(DirtyRange {
                buf: piece.buf.clone(),
                range: piece.range.start..cut,
            });
            piece.range.start = cut;
            pieces.push(piece);
            len = 0;
        }
        if len == 0 {
            break;
        }
    }
    pieces.extend(rest);
    head
}

/// crc32c of each 4 KiB block of `data`.
pub fn checksum_blocks(data: &[u8]) -> Vec<u32> {
    data.chunks(BLOCK_SIZE as usize)
        .map(crc32c::crc32c)
        .collect()
}
