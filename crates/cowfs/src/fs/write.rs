//! Turning data into extents: writeback of dirty pages and direct writes, each range either
//! overwritten in place (NOCOW files, preallocated space) or copied to newly allocated
//! extents, with checksums and write-behind.

use super::alloc::Extent;
use super::cache::Piece;
use super::data::checksum_blocks;
use super::engine::Engine;
use super::InodeId;
use crate::error::{Error, Result};
use crate::format::{
    encode_checksums, key1, table, ExtentRecord, FileExtent, BLOCK_SIZE, MAX_EXTENT_LEN,
};

/// Pages in the largest extent.
pub(super) const EXTENT_PAGES: u64 = MAX_EXTENT_LEN / BLOCK_SIZE;

/// What `write_extents` writes: the caller's buffer, or dirty chunks.
pub(super) enum ExtentData<'a> {
    Direct(&'a [u8]),
    Chunks(Vec<Piece>),
}

impl ExtentData<'_> {
    pub(super) fn len(&self) -> u64 {
        match self {
            ExtentData::Direct(bytes) => bytes.len() as u64,
            ExtentData::Chunks(pieces) => pieces.iter().map(|p| p.range.len() as u64).sum(),
        }
    }
}

/// Takes the first `len` bytes off `pieces`, splitting a piece that straddles the boundary.
fn take_pieces(pieces: &mut Vec<Piece>, mut len: usize) -> Vec<Piece> {
    let mut head = Vec::new();
    let mut rest = std::mem::take(pieces).into_iter();
    for mut piece in rest.by_ref() {
        if piece.range.len() <= len {
            len -= piece.range.len();
            head.push(piece);
        } else {
            let cut = piece.range.start + len;
            head.push(Piece {
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

impl Engine {
    /// Writes `data` to newly allocated extents and maps them at `offset`. Direct data is on
    /// the device when this returns; dirty chunks are written behind, overlapping whatever the
    /// caller does next.
    pub(super) fn write_extents(
        &mut self,
        id: InodeId,
        offset: u64,
        mut data: ExtentData<'_>,
    ) -> Result<()> {
        let total = data.len();
        let mut done = 0u64;
        while done < total {
            let want = (total - done).min(MAX_EXTENT_LEN);
            let extent = self.alloc.allocate(self.store.meta(), &self.space, want)?;
            let physical = self.alloc.physical(extent.start)?;
            let sums = match &mut data {
                ExtentData::Direct(bytes) => {
                    let (head, tail) = bytes.split_at(extent.len as usize);
                    *bytes = tail;
                    self.writer.settle()?;
                    self.device
                        .write_at(physical, head)
                        .map_err(|e| Error::io("data write", &e))?;
                    checksum_blocks(head)
                }
                ExtentData::Chunks(pieces) => {
                    let head = take_pieces(pieces, extent.len as usize);
                    let sums = head
                        .iter()
                        .flat_map(|p| checksum_blocks(p.bytes()))
                        .collect();
                    self.writer.write_behind(&self.device, physical, head)?;
                    sums
                }
            };
            self.meta().put(
                table::CHECKSUMS,
                &key1(extent.start),
                &encode_checksums(&sums),
            )?;
            self.record_extent(id, offset + done, extent)?;
            done += extent.len;
        }
        Ok(())
    }

    /// Records a newly written extent: its reference count and its place in the file.
    pub(super) fn record_extent(
        &mut self,
        id: InodeId,
        file_offset: u64,
        extent: Extent,
    ) -> Result<()> {
        self.dirty = true;
        let record = ExtentRecord {
            len: extent.len,
            refs: 0,
            flags: 0,
            generation: self.state.generation,
        };
        self.meta()
            .put(table::EXTENTS, &key1(extent.start), &record.encode())?;
        let mapping = FileExtent::regular(extent.start, extent.len);
        self.replace_range(id, file_offset, file_offset + extent.len, Some(mapping))
    }

    /// Writes out the dirty pages of one file as extents, one per run of consecutive pages.
    pub fn writeback(&mut self, id: InodeId) -> Result<()> {
        self.writeback_pages(id, u64::MAX)
    }

    /// Writes out up to `budget` dirty pages of a file, lowest offsets first.
    pub(super) fn writeback_pages(&mut self, id: InodeId, budget: u64) -> Result<()> {
        for (start, pieces) in self.cache.take_runs(id, EXTENT_PAGES, budget) {
            self.write_extents(id, start * BLOCK_SIZE, ExtentData::Chunks(pieces))?;
        }
        Ok(())
    }

    pub(super) fn writeback_all(&mut self) -> Result<()> {
        for id in self.cache.dirty_files() {
            self.writeback(id)?;
        }
        Ok(())
    }
}
