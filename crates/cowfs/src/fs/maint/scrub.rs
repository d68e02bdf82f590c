//! Scrub: reads every superblock copy, all metadata and every written data block and checks
//! each checksum, reporting
//! every error with its location. It works in batches, taking the engine lock for one batch
//! at a time, so the filesystem stays usable while it runs. There is one copy of everything,
//! so scrub finds damage but cannot repair data.

use std::ops::Bound;

use crate::device::AlignedBuf;
use crate::error::Result;
use crate::format::{Compression, ExtentKind, BLOCK_SIZE};
use crate::fs::engine::Engine;
use crate::fs::{Filesystem, InodeId};

/// Extents verified per turn with the engine lock.
const EXTENTS_PER_STEP: usize = 16;

/// One damaged block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubError {
    /// The files and offsets that hold the block (several when it is shared).
    pub files: Vec<(String, u64)>,
    pub logical: u64,
    pub physical: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// The metadata store's pages all verified.
    pub metadata_ok: bool,
    pub metadata_problem: Option<String>,
    /// Superblock copies damaged or behind the newest (a read-write open rewrites them).
    pub superblock_problems: Vec<String>,
    pub data_bytes_verified: u64,
    pub errors: Vec<ScrubError>,
    /// Block groups not read because an active swap file pins them (the swapper owns them).
    pub skipped_groups: Vec<u64>,
}

impl ScrubReport {
    /// Nothing damaged was found.
    pub fn is_clean(&self) -> bool {
        self.metadata_ok && self.superblock_problems.is_empty() && self.errors.is_empty()
    }
}

impl Filesystem {
    /// Verifies everything; `progress` gets (bytes of data verified, bytes in all).
    pub fn scrub(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        // Read-only (an image checked offline) the commit does nothing, and what the store's
        // check repairs stays in memory.
        let metadata = self.with(|e| {
            e.commit()?;
            e.store.verify()
        });
        match metadata {
            Ok(true) => report.metadata_ok = true,
            Ok(false) => {
                report.metadata_problem =
                    Some("the metadata store was damaged and has been repaired".into())
            }
            Err(e) => report.metadata_problem = Some(e.to_string()),
        }
        report.superblock_problems = self.with(|e| Ok(e.superblock_problems()))?;
        report.skipped_groups = self.with(|e| Ok(e.pinned_groups().into_iter().collect()))?;
        let total = self.with(|e| Ok(e.alloc.groups().map(|g| g.record.used).sum()))?;
        let mut after = None;
        let mut done = 0;
        loop {
            let (next, bytes) = self.with(|e| e.scrub_step(after, &mut report))?;
            done += bytes;
            progress(done, total);
            match next {
                Some(last) => after = Some(last),
                None => return Ok(report),
            }
        }
    }
}

impl Engine {
    /// Verifies the extents after `after`; returns the last one done (None at the end) and
    /// the bytes it covered.
    fn scrub_step(
        &mut self,
        after: Option<u64>,
        report: &mut ScrubReport,
    ) -> Result<(Option<u64>, u64)> {
        self.settle_all()?;
        let from = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        let rows = self
            .meta()
            .extents()
            .range(from, Bound::Unbounded, EXTENTS_PER_STEP)?;
        let mut bytes = 0;
        let mut last = None;
        for &(start, record) in &rows {
            bytes += record.len;
            last = Some(start);
            let group = self.alloc.group_of(start).map(|g| g.logical);
            if group.is_some_and(|g| report.skipped_groups.contains(&g)) {
                continue;
            }
            if let Some(sums) = self.meta().checksums().get(&start)? {
                let written = self.written_blocks(start, record.len)?;
                report.data_bytes_verified +=
                    self.scrub_extent(start, &sums, &written, &mut report.errors)?;
            }
        }
        Ok((last.filter(|_| rows.len() == EXTENTS_PER_STEP), bytes))
    }

    /// Which blocks of an extent hold written data, and the (file, offset) of each.
    fn written_blocks(&self, start: u64, len: u64) -> Result<Vec<Option<(InodeId, u64)>>> {
        let mut blocks = vec![None; (len / BLOCK_SIZE) as usize];
        for (back, ()) in self.meta().extent_refs().within(&start)? {
            let Some(e) = self.meta().file_extents().get(&back.record)? else {
                continue;
            };
            let (owner, offset) = (back.record.file, back.record.offset);
            if e.kind != ExtentKind::Regular {
                continue;
            }
            // A compressed extent's blocks are all written; its offsets are into decoded data.
            let (first, end) = if e.compression != Compression::None {
                (0, len)
            } else {
                (e.extent_offset, e.extent_offset + e.len)
            };
            for b in (first / BLOCK_SIZE)..end.div_ceil(BLOCK_SIZE).min(blocks.len() as u64) {
                blocks[b as usize].get_or_insert((owner, offset + b * BLOCK_SIZE - first));
            }
        }
        Ok(blocks)
    }

    /// Reads the written blocks of one extent, a piece at a time, and checks them; returns
    /// the bytes verified.
    fn scrub_extent(
        &self,
        start: u64,
        sums: &[u32],
        written: &[Option<(InodeId, u64)>],
        errors: &mut Vec<ScrubError>,
    ) -> Result<u64> {
        const PIECE: usize = 1024;
        let mut verified = 0;
        for (p, owners) in written.chunks(PIECE).enumerate() {
            if owners.iter().all(Option::is_none) {
                continue;
            }
            let first = p * PIECE;
            let at = start + first as u64 * BLOCK_SIZE;
            let mut buf = AlignedBuf::zeroed(owners.len() * BLOCK_SIZE as usize);
            let read = self.device.read_at(self.alloc.physical(at)?, &mut buf);
            for (i, owner) in owners.iter().enumerate() {
                let Some((id, offset)) = owner else { continue };
                let block = &buf[i * BLOCK_SIZE as usize..][..BLOCK_SIZE as usize];
                let reason = match &read {
                    Err(e) => Some(format!("unreadable: {e}")),
                    Ok(()) if sums.get(first + i) != Some(&crc32c::crc32c(block)) => {
                        Some("checksum mismatch".to_string())
                    }
                    Ok(()) => None,
                };
                verified += BLOCK_SIZE;
                if let Some(reason) = reason {
                    let logical = at + i as u64 * BLOCK_SIZE;
                    let physical = self.alloc.physical(logical)?;
                    errors.push(ScrubError {
                        files: vec![(self.path_of(*id), *offset)],
                        logical,
                        physical,
                        reason,
                    });
                }
            }
        }
        Ok(verified)
    }
}
