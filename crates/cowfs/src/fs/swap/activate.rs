//! Swap files (the contract: docs/SWAP.md). Activation checks a file in the contract's order
//! (section A), merges its physically contiguous runs into swap extents, and pins it; while
//! active, every change that would move, share or rewrite its blocks is refused (section B);
//! deactivation undoes exactly that (section C). Pins live in memory only: no pin survives a
//! remount, as no swap survives a reboot.
//!
//! Two modes:
//! - **pinned** (Linux 5.0): the file must be NOCOW, unchecksummed and unshared; the caller
//!   gets the page -> device map and does its own I/O; the engine keeps those blocks in place.
//! - **through-filesystem** (the 2014 design): swap I/O goes through the engine (`swap_write`,
//!   `swap_read`), so COW, checksummed, snapshotted and compressed files are fine; activation
//!   reserves the data space that copy-on-write of the whole area can need uncompressed, so
//!   swap-out never meets ENOSPC.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Errno, Error, Result};
use crate::format::inode_flags::{COMPRESS, NOCOW};
use crate::format::{
    round_down, Compression, CompressionConfig, ExtentKind, BLOCK_GROUP_READ_ONLY, BLOCK_SIZE,
};
use crate::fs::common::Change;
use crate::fs::common::ExtentData;
use crate::fs::data::compress::{encode_pieces, EncodedPieces};
use crate::fs::data::io::ReadPlan;
use crate::fs::engine::Engine;
use crate::fs::swap::state::{ActiveSwap, SwapRun};
use crate::fs::{InodeId, SwapActivation, SwapExtent, SwapMode, SwapStatus};

/// The most swap data one compressed extent holds: a swap-in reads and decodes the whole
/// extent its page is in, and the kernel reads back up to eight pages at a time.
pub(in crate::fs::swap) const COMPRESSED_SWAP_PIECE: u64 = 32 << 10;

/// Compresses a swap write of `data` as its file's swap writes are stored; needs no engine, so
/// swap-outs on several threads compress at once.
pub(crate) fn encode_swap_write(config: CompressionConfig, data: &[u8]) -> Result<EncodedPieces> {
    encode_pieces(config, data, COMPRESSED_SWAP_PIECE)
}

fn swap_err(errno: Errno, reason: &str) -> Error {
    Error::new(errno, reason.to_string())
}

impl Engine {
    /// swap_activate: checks `id` as the contract's section A says, in its order, and pins it.
    /// On any failure nothing is pinned.
    pub fn activate_swap(&mut self, id: InodeId, mode: SwapMode) -> Result<SwapActivation> {
        self.check_writable()?;
        let inode = self.inode(id)?;
        if inode.kind()? != crate::format::FileKind::Regular {
            return Err(swap_err(Errno::INVAL, "swapfile must be a regular file"));
        }
        if self.swap.files.contains_key(&id) {
            return Err(swap_err(Errno::BUSY, "swapfile is already active"));
        }
        if self.subvolume(id.subvol)?.read_only() {
            return Err(swap_err(
                Errno::ROFS,
                "swapfile is in a read-only subvolume",
            ));
        }
        // 1. Activation sees what is on disk.
        self.writeback(id)?;
        let pinned = mode == SwapMode::Pinned;
        if pinned && inode.flags & COMPRESS != 0 {
            return Err(swap_err(Errno::INVAL, "swapfile must not be compressed"));
        }
        if pinned && inode.flags & NOCOW == 0 {
            return Err(swap_err(Errno::INVAL, "swapfile must not be copy-on-write"));
        }
        let end = round_down(inode.size, BLOCK_SIZE);
        let records = self.extents_in(id, 0, end)?;
        if pinned && self.any_checksummed(&records)? {
            return Err(swap_err(Errno::INVAL, "swapfile must not be checksummed"));
        }
        if let Some(running) = self.exclusive {
            return Err(Error::new(
                Errno::BUSY,
                format!("cannot activate a swapfile while {running} runs"),
            ));
        }
        let extents = self.swap_extents(id, &records, end, pinned)?;
        let pages = end / BLOCK_SIZE;
        if pages == 0 {
            return Err(swap_err(Errno::INVAL, "swapfile has no whole page"));
        }
        let reserved = if pinned {
            0
        } else {
            self.reserve_for_swap(end)?
        };
        let groups = if pinned {
            self.groups_of(&extents)
        } else {
            BTreeSet::new()
        };
        self.swap.files.insert(
            id,
            ActiveSwap {
                mode,
                pages,
                groups,
                reserved,
                extents: if pinned { extents.clone() } else { Vec::new() },
                live: Arc::new(AtomicBool::new(true)),
                swapped_out: 0,
                stored: 0,
                journal: Default::default(),
                uncommitted: BTreeSet::new(),
                lost: BTreeSet::new(),
            },
        );
        Ok(SwapActivation {
            mode,
            pages,
            extents,
        })
    }

    /// swap_deactivate: undoes exactly what activation did. EINVAL when not active.
    pub fn deactivate_swap(&mut self, id: InodeId) -> Result<()> {
        self.settle_swap_journal(id)?;
        let active = self
            .swap
            .files
            .remove(&id)
            .ok_or_else(|| swap_err(Errno::INVAL, "not an active swapfile"))?;
        self.release_set_aside(active.reserved);
        active.live.store(false, Ordering::Release);
        Ok(())
    }

    /// The page -> device map of an active pinned swap file, and the flag that says it still
    /// is; EINVAL for any other file.
    pub(crate) fn pinned_swap_map(
        &self,
        id: InodeId,
    ) -> Result<(Vec<SwapExtent>, u64, Arc<AtomicBool>)> {
        let active = self
            .swap
            .files
            .get(&id)
            .filter(|a| a.is_pinned())
            .ok_or_else(|| swap_err(Errno::INVAL, "not an active pinned swapfile"))?;
        Ok((active.extents.clone(), active.pages, active.live.clone()))
    }

    /// Whether `id` is an active swap file.
    pub fn swap_active(&self, id: InodeId) -> Option<SwapMode> {
        self.swap.files.get(&id).map(|a| a.mode)
    }

    fn any_checksummed(&self, records: &[(u64, crate::format::FileExtent)]) -> Result<bool> {
        for (_, e) in records.iter().filter(|(_, e)| e.kind != ExtentKind::Inline) {
            if self.meta().checksums().contains(&e.disk_start)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Step 7 and 8: walks the records over `[0, end)` and merges contiguous runs.
    fn swap_extents(
        &self,
        id: InodeId,
        records: &[(u64, crate::format::FileExtent)],
        end: u64,
        pinned: bool,
    ) -> Result<Vec<SwapExtent>> {
        let mut extents: Vec<SwapExtent> = Vec::new();
        let mut cursor = 0;
        for (off, e) in records {
            if *off > cursor {
                return Err(swap_err(Errno::INVAL, "swapfile must not have holes"));
            }
            if e.kind == ExtentKind::Inline {
                return Err(swap_err(Errno::INVAL, "swapfile must not be inline"));
            }
            cursor = off + e.len;
            if pinned && e.compression != Compression::None {
                return Err(swap_err(Errno::INVAL, "swapfile must not be compressed"));
            }
            if pinned && self.extent_shared(e.disk_start, id)? {
                return Err(swap_err(Errno::INVAL, "swapfile must not be copy-on-write"));
            }
            let group = self
                .alloc
                .group_of(e.disk_start)
                .ok_or_else(|| Error::corrupt("swap extent outside every block group"))?;
            if group.record.flags & BLOCK_GROUP_READ_ONLY != 0 {
                return Err(swap_err(
                    Errno::INVAL,
                    "swapfile must not be in a read-only block group",
                ));
            }
            // Through the filesystem, every swap I/O asks the engine where its pages are.
            if !pinned {
                continue;
            }
            let logical = e.disk_start + e.extent_offset;
            let len = (off + e.len).min(end) - off;
            let run = SwapExtent {
                page: off / BLOCK_SIZE,
                pages: len / BLOCK_SIZE,
                physical: self.alloc.physical(logical)?,
            };
            match extents.last_mut() {
                Some(last) if last.physical + last.pages * BLOCK_SIZE == run.physical => {
                    last.pages += run.pages
                }
                _ if run.pages > 0 => extents.push(run),
                _ => {}
            }
        }
        if cursor < end {
            return Err(swap_err(Errno::INVAL, "swapfile must not have holes"));
        }
        Ok(extents)
    }

    fn groups_of(&self, extents: &[SwapExtent]) -> BTreeSet<u64> {
        let mut groups = BTreeSet::new();
        for x in extents {
            for g in self.alloc.groups() {
                let (start, end) = (g.record.physical, g.record.physical + g.record.length);
                if x.physical < end && start < x.physical + x.pages * BLOCK_SIZE {
                    groups.insert(g.logical);
                }
            }
        }
        groups
    }

    /// Sets aside data space for copy-on-write of a whole area twice over: once to copy every
    /// page away from snapshots and clones, once for the copies written between commits.
    fn reserve_for_swap(&mut self, bytes: u64) -> Result<u64> {
        let need = 2 * bytes;
        self.set_aside(need, "a through-filesystem swapfile")?;
        Ok(need)
    }

    /// Section B: what an active swap file refuses.
    pub(crate) fn swap_guard(&self, id: InodeId, change: Change) -> Result<()> {
        if !self.swap.files.contains_key(&id) {
            return Ok(());
        }
        let busy = || {
            Err(Error::new(
                Errno::TXTBSY,
                format!("{}: active swapfile", self.path_of(id)),
            ))
        };
        match change {
            // Through the filesystem every swap I/O asks where the blocks are now and how they
            // are stored, and every swap write copies a shared block: they may move, be shared,
            // be stored compressed, and gain preallocated space.
            Change::Move | Change::Share | Change::Layout
                if self.swap.files[&id].mode == SwapMode::ThroughFs =>
            {
                Ok(())
            }
            Change::Write(_) | Change::Resize | Change::Layout | Change::Move | Change::Share => {
                busy()
            }
            Change::Unname => Err(Error::new(
                Errno::PERM,
                format!("{}: active swapfile", self.path_of(id)),
            )),
            Change::Attributes | Change::Touch | Change::AddEntry | Change::RemoveEntry => Ok(()),
        }
    }

    /// Whether an active swap file's extents may be shared (reflink, dedupe from it): not a
    /// pinned one's.
    pub(crate) fn check_not_swap(&self, id: InodeId) -> Result<()> {
        self.swap_guard(id, Change::Share)
    }

    /// The subvolume holds an active swap file (`pinned_only`: a pinned one).
    pub(crate) fn subvolume_has_swap(&self, subvol: u64, pinned_only: bool) -> bool {
        self.swap
            .files
            .iter()
            .any(|(id, a)| id.subvol == subvol && (!pinned_only || a.is_pinned()))
    }

    /// Block groups pinned by active swap files.
    pub(crate) fn pinned_groups(&self) -> BTreeSet<u64> {
        self.swap
            .files
            .values()
            .flat_map(|a| a.groups.iter().copied())
            .collect()
    }

    /// How an active through-filesystem swap file's writes are compressed, if they are.
    pub(crate) fn swap_compression(&self, id: InodeId) -> Result<Option<CompressionConfig>> {
        match self.swap.files.get(&id) {
            Some(active) if active.mode == SwapMode::ThroughFs => {
                Ok(self.compression_for(&self.inode(id)?))
            }
            _ => Ok(None),
        }
    }

    /// Writes whole pages of an active through-filesystem swap file, starting at `page`:
    /// stored as `encoded` says when given (how [`encode_swap_write`] compressed them, before
    /// the engine's lock was taken), else plainly: through the swap journal for a
    /// copy-on-write file (every file whose writes are compressed is one), into the tables
    /// for a NOCOW one. Without `encoded`, a file whose writes are compressed is not written:
    /// its compression comes back, for the caller to encode the pages and call again.
    pub fn swap_write(
        &mut self,
        id: InodeId,
        page: u64,
        data: &[u8],
        encoded: Option<(CompressionConfig, EncodedPieces)>,
    ) -> Result<Option<CompressionConfig>> {
        self.check_writable()?;
        self.check_swap_io(id, page, data.len())?;
        let inode = self.inode(id)?;
        if encoded.is_none() {
            if let Some(config) = self.compression_for(&inode) {
                return Ok(Some(config));
            }
        }
        let journaled = inode.flags & NOCOW == 0;
        if !journaled {
            // Written to the tables directly: the journal must not hold older copies.
            self.settle_swap_journal(id)?;
        }
        let active = &self.swap.files[&id];
        // Copies written since the last commit may not outgrow one area's worth: commit, which
        // frees the copies they replaced.
        if self.swap.written + data.len() as u64 > active.pages * BLOCK_SIZE {
            self.commit()?;
        }
        self.swap.written += data.len() as u64;
        let stored = match encoded {
            Some((config, pieces)) if journaled => {
                self.journal_packed_swap_write(id, page, data, config.algorithm, pieces)?
            }
            None if journaled => {
                self.journal_swap_write(id, page, data)?;
                data.len() as u64
            }
            _ => {
                let offset = page * BLOCK_SIZE;
                self.write_extents(id, offset, ExtentData::Direct(data))?;
                data.len() as u64
            }
        };
        let active = self.swap.files.get_mut(&id).expect("checked above");
        if !journaled {
            active
                .uncommitted
                .extend(page..page + data.len() as u64 / BLOCK_SIZE);
        }
        active.swapped_out += data.len() as u64;
        active.stored += stored;
        Ok(None)
    }

    /// An active swap file's figures; None when `id` is not active.
    pub fn swap_status(&self, id: InodeId) -> Result<Option<SwapStatus>> {
        let Some(active) = self.swap.files.get(&id) else {
            return Ok(None);
        };
        Ok(Some(SwapStatus {
            mode: active.mode,
            pages: active.pages,
            compression: self.swap_compression(id)?,
            swapped_out: active.swapped_out,
            stored: active.stored,
        }))
    }

    /// Reads whole pages of an active through-filesystem swap file; checksums are verified.
    pub fn swap_read(&mut self, id: InodeId, page: u64, buf: &mut [u8]) -> Result<()> {
        self.check_swap_io(id, page, buf.len())?;
        self.check_not_lost(id, page, buf.len())?;
        let offset = page * BLOCK_SIZE;
        for run in self.swap_runs(id, page, buf.len() as u64 / BLOCK_SIZE) {
            match run {
                SwapRun::Journal(run) => {
                    let dst = &mut buf[run.at..run.at + run.len()];
                    self.read_journaled(id, offset + run.at as u64, &run, dst)?
                }
                SwapRun::Stored { at, offset, len } => {
                    self.read_stored(id, offset, &mut buf[at..at + len])?
                }
            }
        }
        Ok(())
    }

    /// `swap_read`, resolved for reading without the engine's lock (see `ReadPlan`); None
    /// when the pages must be read the usual way.
    pub(crate) fn plan_swap_read(
        &self,
        id: InodeId,
        page: u64,
        len: usize,
    ) -> Result<Option<ReadPlan>> {
        self.check_swap_io(id, page, len)?;
        self.check_not_lost(id, page, len)?;
        let mut plan = self.empty_plan();
        for run in self.swap_runs(id, page, len as u64 / BLOCK_SIZE) {
            match run {
                SwapRun::Journal(run) => {
                    let physical = self.alloc.physical(run.logical)?;
                    let len = run.sums.len() as u64 * BLOCK_SIZE;
                    self.writer.settle_range(physical..physical + len)?;
                    plan.push_checked(run.at, physical, run.sums, run.decode);
                }
                SwapRun::Stored { at, offset, len } => match self.plan_read(id, offset, len)? {
                    Some(stored) => plan.append(stored, at),
                    None => return Ok(None),
                },
            }
        }
        Ok(Some(plan))
    }

    /// EIO for a swap-in of a page whose newest copy a failed transaction lost.
    fn check_not_lost(&self, id: InodeId, page: u64, len: usize) -> Result<()> {
        let end = page + len as u64 / BLOCK_SIZE;
        match self.swap.files[&id].lost.range(page..end).next() {
            Some(lost) => Err(Error::new(
                Errno::IO,
                format!(
                    "{}: swap page {lost} was written after the last commit, which a device error then lost",
                    self.path_of(id)
                ),
            )),
            None => Ok(()),
        }
    }

    fn check_swap_io(&self, id: InodeId, page: u64, len: usize) -> Result<()> {
        let active = self
            .swap
            .files
            .get(&id)
            .filter(|a| a.mode == SwapMode::ThroughFs);
        let active = active
            .ok_or_else(|| swap_err(Errno::INVAL, "not an active through-filesystem swapfile"))?;
        let pages = len as u64 / BLOCK_SIZE;
        if !(len as u64).is_multiple_of(BLOCK_SIZE)
            || page.checked_add(pages).is_none_or(|end| end > active.pages)
        {
            return Err(swap_err(
                Errno::INVAL,
                "swap I/O must be whole pages inside the area",
            ));
        }
        Ok(())
    }
}
