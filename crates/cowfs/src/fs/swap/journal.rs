//! The swap journal: a copy-on-write swap file's pages written since the last commit, kept in
//! memory and put into the metadata tables once per commit.
//!
//! A swap write through the filesystem to a copy-on-write file used to make and record a new
//! extent for every write: a dozen B-tree operations under the engine's lock for a page of
//! data. Here a swap write takes blocks from a cluster of space allocated for the running
//! transaction (1 MiB at a time, filled in order), notes each page's block and checksum, and
//! writes the data. A compressed file's swap writes are journaled the same way, piece by piece
//! (each encoded piece in blocks of its own, the pieces of one write side by side, written with
//! one write). Swap reads look in the journal first. Before anything else looks at the
//! file's extents (any engine operation that is not swap I/O, and every commit), the journal
//! is put into the tables: each run of plain pages written side by side becomes one extent,
//! each compressed piece a page still reads from one compressed extent, and the cluster space
//! no page ended up in is freed. A page rewritten within a transaction is recorded once. Nothing of the journal is on disk: a crash returns the file to its last
//! commit, as it did before, and the clusters it allocated are free again there.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::device::AlignedBuf;
use crate::error::{Error, Result};
use crate::format::{Compression, FileExtent, BLOCK_SIZE};
use crate::fs::alloc::Extent;
use crate::fs::common::{checksum_blocks, DirtyRange, ExtentData};
use crate::fs::data::compress::{decompress_extent, EncodedPieces};
use crate::fs::engine::Engine;
use crate::fs::swap::activate::COMPRESSED_SWAP_PIECE;
use crate::fs::swap::state::{JournalPage, JournalPiece, JournalRun, SwapJournal, SwapRun};
use crate::fs::InodeId;

/// Space a journal allocates at a time.
const CLUSTER_LEN: u64 = 1 << 20;

const BS: usize = BLOCK_SIZE as usize;
const PIECE_PAGES: usize = (COMPRESSED_SWAP_PIECE / BLOCK_SIZE) as usize;

/// Compressed pieces of one swap write waiting to be written side by side from `logical`.
#[derive(Default)]
struct PackedBatch {
    logical: u64,
    pieces: Vec<PackedPiece>,
}

/// A compressed piece: `pages` pages from `first` on, encoded as `packed`.
struct PackedPiece {
    first: u64,
    pages: u64,
    packed: Vec<u8>,
}

impl PackedBatch {
    /// The block after the batch's last piece; None when it is empty.
    fn end(&self) -> Option<u64> {
        let len: usize = self
            .pieces
            .iter()
            .map(|p| p.packed.len().next_multiple_of(BS))
            .sum();
        (!self.pieces.is_empty()).then_some(self.logical + len as u64)
    }

    fn push(&mut self, logical: u64, first: u64, pages: u64, packed: Vec<u8>) {
        if self.pieces.is_empty() {
            self.logical = logical;
        }
        self.pieces.push(PackedPiece {
            first,
            pages,
            packed,
        });
    }
}

impl Engine {
    /// A journaled swap write of `data` (whole pages) from `page` on: blocks from the
    /// transaction's clusters, the data written there (or left to the caller, see
    /// `deferring_writes`), each page's block and checksum noted.
    pub(in crate::fs::swap) fn journal_swap_write(
        &mut self,
        id: InodeId,
        page: u64,
        data: &[u8],
    ) -> Result<()> {
        let bs = BLOCK_SIZE as usize;
        let mut done = 0;
        while done < data.len() {
            let want = ((data.len() - done) / bs) as u64;
            let (logical, blocks) = match self.journal_mut(id).take(want) {
                Some(taken) => taken,
                None => {
                    self.new_cluster(id)?;
                    continue;
                }
            };
            let part = &data[done..done + blocks as usize * bs];
            let physical = self.alloc.physical(logical)?;
            let first = page + (done / bs) as u64;
            self.write_data(physical, first * BLOCK_SIZE, &ExtentData::Direct(part))?;
            let journal = self.journal_mut(id);
            for (i, block) in part.chunks(bs).enumerate() {
                let sum = crc32c::crc32c(block);
                let logical = logical + i as u64 * BLOCK_SIZE;
                journal
                    .pages
                    .insert(first + i as u64, JournalPage::Plain { logical, sum });
            }
            done += part.len();
        }
        self.store.note_change();
        Ok(())
    }

    /// A journaled swap write of a compressed file's pages, cut in pieces as `encoded` says
    /// (`encode_swap_write`): each encoded piece in blocks of its own from the transaction's
    /// clusters, pieces side by side written with one write; the pieces that did not compress
    /// as plain journaled pages. Returns the bytes put on the device.
    pub(in crate::fs::swap) fn journal_packed_swap_write(
        &mut self,
        id: InodeId,
        page: u64,
        data: &[u8],
        how: Compression,
        encoded: EncodedPieces,
    ) -> Result<u64> {
        let mut batch = PackedBatch::default();
        let mut stored = 0;
        let parts = data.chunks(COMPRESSED_SWAP_PIECE as usize);
        for (part, (packed, first)) in
            parts.zip(encoded.into_iter().zip((page..).step_by(PIECE_PAGES)))
        {
            let Some(packed) = packed else {
                self.write_packed(id, &mut batch, how)?;
                self.journal_swap_write(id, first, part)?;
                stored += part.len() as u64;
                continue;
            };
            let blocks = packed.len().div_ceil(BS) as u64;
            let mut logical = self.journal_mut(id).take_exactly(blocks);
            if logical.is_none() {
                self.write_packed(id, &mut batch, how)?;
                self.new_cluster(id)?;
                logical = self.journal_mut(id).take_exactly(blocks);
            }
            // Free space in pieces smaller than this one: a cluster is as large as the
            // space allows, so the piece is stored plainly instead.
            let Some(logical) = logical else {
                self.journal_swap_write(id, first, part)?;
                stored += part.len() as u64;
                continue;
            };
            if batch.end() != Some(logical) {
                self.write_packed(id, &mut batch, how)?;
            }
            batch.push(logical, first, (part.len() / BS) as u64, packed);
            stored += blocks * BLOCK_SIZE;
        }
        self.write_packed(id, &mut batch, how)?;
        self.store.note_change();
        Ok(stored)
    }

    /// Writes a batch of compressed pieces (side by side from its first block) with one
    /// write behind, and puts them in `id`'s journal.
    fn write_packed(
        &mut self,
        id: InodeId,
        batch: &mut PackedBatch,
        how: Compression,
    ) -> Result<()> {
        let PackedBatch { logical, pieces } = std::mem::take(batch);
        if pieces.is_empty() {
            return Ok(());
        }
        let total: usize = pieces
            .iter()
            .map(|p| p.packed.len().next_multiple_of(BS))
            .sum();
        let mut stored = AlignedBuf::zeroed(total);
        let mut at = 0;
        for p in &pieces {
            stored[at..at + p.packed.len()].copy_from_slice(&p.packed);
            at += p.packed.len().next_multiple_of(BS);
        }
        let mut sums = checksum_blocks(&stored).into_iter();
        let physical = self.alloc.physical(logical)?;
        let range = 0..stored.len();
        let buf = Arc::new(stored);
        self.writer
            .write_behind(&self.device, physical, vec![DirtyRange { buf, range }])?;
        let journal = self.journal_mut(id);
        let mut at = logical;
        for p in pieces {
            let blocks = p.packed.len().div_ceil(BS);
            let piece = journal.pieces.len();
            for index in 0..p.pages as usize {
                journal
                    .pages
                    .insert(p.first + index as u64, JournalPage::Packed { piece, index });
            }
            journal.pieces.push(JournalPiece {
                first: p.first,
                pages: p.pages,
                how,
                logical: at,
                sums: sums.by_ref().take(blocks).collect(),
            });
            at += (blocks * BS) as u64;
        }
        Ok(())
    }

    fn journal_mut(&mut self, id: InodeId) -> &mut SwapJournal {
        &mut self
            .swap
            .files
            .get_mut(&id)
            .expect("journaled swap I/O is for an active file")
            .journal
    }

    /// Allocates the next cluster of `id`'s journal.
    fn new_cluster(&mut self, id: InodeId) -> Result<()> {
        let extent = self
            .alloc
            .allocate(self.store.meta(), &self.space, CLUSTER_LEN)?;
        let journal = self.journal_mut(id);
        journal.clusters.insert(extent.start, extent.len);
        journal.next = extent.start;
        journal.end = extent.start + extent.len;
        Ok(())
    }

    /// How a swap read of `pages` pages from `page` of `id` splits between its journal and
    /// its extents.
    pub(in crate::fs::swap) fn swap_runs(
        &self,
        id: InodeId,
        page: u64,
        pages: u64,
    ) -> Vec<SwapRun> {
        match self.swap.files.get(&id) {
            Some(active) if !active.journal.pages.is_empty() => active.journal.runs(page, pages),
            _ => vec![SwapRun::Stored {
                at: 0,
                offset: page * BLOCK_SIZE,
                len: (pages * BLOCK_SIZE) as usize,
            }],
        }
    }

    /// Reads the journaled blocks of `run` and checks them: into `buf`, or, for a compressed
    /// piece, decoding the part the run names into `buf`. A mismatch is EIO naming the file
    /// and `offset`, the file offset of `buf`.
    pub(in crate::fs::swap) fn read_journaled(
        &self,
        id: InodeId,
        offset: u64,
        run: &JournalRun,
        buf: &mut [u8],
    ) -> Result<()> {
        let Some(decode) = run.decode else {
            self.device_read(run.logical, buf)?;
            return self.check_blocks(id, offset, run.logical, buf, &run.sums);
        };
        let mut stored = AlignedBuf::zeroed(run.sums.len() * BS);
        self.device_read(run.logical, &mut stored)?;
        let first = offset - decode.within as u64;
        self.check_blocks(id, first, run.logical, &stored, &run.sums)?;
        let plain = decompress_extent(decode.how, &stored, decode.ram_len)
            .map_err(|err| Error::checksum(format!("{}: {}", self.path_of(id), err.reason())))?;
        buf.copy_from_slice(&plain[decode.within..decode.within + decode.len]);
        Ok(())
    }

    /// Whether any swap file has journaled writes not yet in the tables.
    pub(crate) fn has_swap_journal(&self) -> bool {
        self.swap.files.values().any(|a| !a.journal.is_empty())
    }

    /// Puts every swap journal into the metadata tables.
    pub(crate) fn settle_swap_journals(&mut self) -> Result<()> {
        let ids: Vec<InodeId> = self
            .swap
            .files
            .iter()
            .filter(|(_, a)| !a.journal.is_empty())
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .try_for_each(|id| self.settle_swap_journal(id))
    }

    /// Puts `id`'s journal into the tables: each compressed piece a page still reads from
    /// becomes a compressed extent, in the order they were written, so a later piece's pages
    /// replace an earlier one's; then each run of plain pages on consecutive blocks of one
    /// cluster becomes an extent mapped over them (plain pages are each page's newest copy,
    /// newer than any piece over them). The copies they replace are freed as any overwritten
    /// extent, and cluster space no page is in is freed.
    pub(in crate::fs::swap) fn settle_swap_journal(&mut self, id: InodeId) -> Result<()> {
        let Some(active) = self.swap.files.get_mut(&id) else {
            return Ok(());
        };
        let journal = std::mem::take(&mut active.journal);
        let mut kept: BTreeMap<u64, u64> = BTreeMap::new();
        let mut read_from = vec![false; journal.pieces.len()];
        for page in journal.pages.values() {
            if let JournalPage::Packed { piece, .. } = page {
                read_from[*piece] = true;
            }
        }
        for (piece, _) in journal.pieces.iter().zip(read_from).filter(|(_, r)| *r) {
            let extent = Extent {
                start: piece.logical,
                len: piece.sums.len() as u64 * BLOCK_SIZE,
            };
            let len = piece.pages * BLOCK_SIZE;
            let mapping = FileExtent {
                compression: piece.how,
                len,
                ram_len: len,
                ..FileExtent::regular(extent.start, extent.len)
            };
            self.record_extent(
                id,
                piece.first * BLOCK_SIZE,
                extent,
                Some(&piece.sums),
                mapping,
            )?;
            kept.insert(extent.start, extent.len);
        }
        let mut plain = journal.pages.iter().filter_map(|(&page, j)| match *j {
            JournalPage::Plain { logical, sum } => Some((page, logical, sum)),
            JournalPage::Packed { .. } => None,
        });
        let mut plain = plain.by_ref().peekable();
        while let Some((first, logical, sum)) = plain.next() {
            let cluster_end = journal
                .clusters
                .range(..=logical)
                .next_back()
                .map_or(logical + BLOCK_SIZE, |(s, l)| s + l);
            let mut sums = vec![sum];
            while let Some(&(p, next, sum)) = plain.peek() {
                let n = sums.len() as u64;
                let follows =
                    p == first + n && next == logical + n * BLOCK_SIZE && next < cluster_end;
                if !follows {
                    break;
                }
                sums.push(sum);
                plain.next();
            }
            let extent = Extent {
                start: logical,
                len: sums.len() as u64 * BLOCK_SIZE,
            };
            let mapping = FileExtent::regular(extent.start, extent.len);
            self.record_extent(id, first * BLOCK_SIZE, extent, Some(&sums), mapping)?;
            kept.insert(extent.start, extent.len);
        }
        for (&start, &len) in &journal.clusters {
            let mut cursor = start;
            for (&s, &l) in kept.range(start..start + len) {
                self.free_cluster_space(cursor, s)?;
                cursor = s + l;
            }
            self.free_cluster_space(cursor, start + len)?;
        }
        // In the tables now, but still only in the running transaction: if it fails, these
        // pages are lost with it (`SwapState::lose_uncommitted`).
        let active = self.swap.files.get_mut(&id).expect("settled above");
        active.uncommitted.extend(journal.pages.into_keys());
        Ok(())
    }

    /// Frees cluster space `[from, to)` that no page ended up in.
    fn free_cluster_space(&mut self, from: u64, to: u64) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let extent = Extent {
            start: from,
            len: to - from,
        };
        self.alloc.free(self.store.meta(), extent)
    }
}
