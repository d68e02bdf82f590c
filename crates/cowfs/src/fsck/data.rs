//! Data: every written block against its checksum, and every compressed extent decoding to
//! its recorded length.

use std::collections::{BTreeMap, HashMap};

use super::{Checker, FileExtentRow, Progress};
use crate::device::AlignedBuf;
use crate::error::Result;
use crate::format::{Compression, ExtentKind, ExtentRecord, BLOCK_SIZE};
use crate::fs::InodeId;
use crate::meta;

impl Checker<'_> {
    /// Reads every data block and checks it against its checksum.
    pub(super) fn checksums(
        &mut self,
        extents: &BTreeMap<u64, ExtentRecord>,
        files: &[FileExtentRow],
        progress: Progress<'_>,
    ) -> Result<()> {
        let mut sums: HashMap<u64, Vec<u32>> = HashMap::new();
        for (start, s) in self.rows(meta::CHECKSUMS)? {
            match extents.contains_key(&start) {
                true => {
                    sums.insert(start, s);
                }
                false => self
                    .report
                    .problem(format!("checksums for unallocated extent {start}")),
            }
        }
        let written = written_blocks(extents, files);
        let total: u64 = extents.values().map(|e| e.len).sum();
        let mut done = 0u64;
        for (start, e) in extents {
            let nodatasum = e.flags & ExtentRecord::FLAG_NODATASUM != 0;
            match sums.get(start) {
                None if !nodatasum => self
                    .report
                    .problem(format!("extent {start} has no checksums")),
                Some(_) if nodatasum => self
                    .report
                    .problem(format!("NODATASUM extent {start} has checksums")),
                Some(s) if s.len() as u64 != e.len / BLOCK_SIZE => self.report.problem(format!(
                    "extent {start}: {} checksums for {} blocks",
                    s.len(),
                    e.len / BLOCK_SIZE
                )),
                Some(s) => {
                    let mask = written.get(start).map(Vec::as_slice).unwrap_or(&[]);
                    self.verify_extent(*start, s, mask, files)?
                }
                None => {}
            }
            done += e.len;
            progress(done, total);
        }
        Ok(())
    }

    /// Every compressed extent holds an encoding that decodes to its recorded length.
    pub(super) fn compressed_extents(&mut self, files: &[FileExtentRow]) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for row in files
            .iter()
            .filter(|r| r.extent.compression != Compression::None)
        {
            if !seen.insert(row.extent.disk_start) {
                continue;
            }
            let mut stored = AlignedBuf::zeroed(row.extent.disk_len as usize);
            let decoded = self
                .engine
                .device_read(row.extent.disk_start, &mut stored)
                .and_then(|()| {
                    crate::fs::decompress_extent(
                        row.extent.compression,
                        &stored,
                        row.extent.ram_len,
                    )
                });
            if let Err(e) = decoded {
                self.report.problem(format!(
                    "{} at offset {}: {}",
                    self.engine.path_of(row.owner),
                    row.offset,
                    e.reason()
                ));
            }
        }
        Ok(())
    }

    /// Reads the written blocks of a checksummed extent (`mask`) and checks each.
    pub(super) fn verify_extent(
        &mut self,
        start: u64,
        sums: &[u32],
        mask: &[bool],
        files: &[FileExtentRow],
    ) -> Result<()> {
        const PIECE: usize = 1024;
        for (piece, flags) in mask.chunks(PIECE).enumerate() {
            if !flags.iter().any(|w| *w) {
                continue;
            }
            let at = (piece * PIECE) as u64 * BLOCK_SIZE;
            let mut buf = AlignedBuf::zeroed(flags.len() * BLOCK_SIZE as usize);
            if let Err(e) = self.engine.device_read(start + at, &mut buf) {
                self.report
                    .problem(format!("extent {start}: unreadable at {at}: {e}"));
                return Ok(());
            }
            for (i, block) in buf
                .chunks(BLOCK_SIZE as usize)
                .enumerate()
                .filter(|(i, _)| flags[*i])
            {
                let index = piece * PIECE + i;
                self.report.data_bytes_verified += BLOCK_SIZE;
                if crc32c::crc32c(block) != sums[index] {
                    let whose = locate(files, start, index as u64 * BLOCK_SIZE)
                        .map(|(owner, offset)| {
                            format!(" ({} at offset {offset})", self.engine.path_of(owner))
                        })
                        .unwrap_or_default();
                    self.report.problem(format!(
                        "data checksum mismatch in extent {start} block {index}{whose} (data address {})",
                        start + index as u64 * BLOCK_SIZE
                    ));
                }
            }
        }
        Ok(())
    }
}

/// For each extent, which of its blocks hold written data (are mapped by a regular record).
fn written_blocks(
    extents: &BTreeMap<u64, ExtentRecord>,
    files: &[FileExtentRow],
) -> HashMap<u64, Vec<bool>> {
    let mut written: HashMap<u64, Vec<bool>> = HashMap::new();
    for row in files
        .iter()
        .filter(|r| r.extent.kind == ExtentKind::Regular)
    {
        let Some(e) = extents.get(&row.extent.disk_start) else {
            continue;
        };
        let mask = written
            .entry(row.extent.disk_start)
            .or_insert_with(|| vec![false; (e.len / BLOCK_SIZE) as usize]);
        let first = (row.extent.extent_offset / BLOCK_SIZE) as usize;
        let last = (row.extent.extent_offset + row.extent.len).div_ceil(BLOCK_SIZE) as usize;
        for w in mask.iter_mut().take(last).skip(first) {
            *w = true;
        }
    }
    written
}

/// A file and offset whose data is at `within` of extent `start`.
fn locate(files: &[FileExtentRow], start: u64, within: u64) -> Option<(InodeId, u64)> {
    files
        .iter()
        .find(|r| {
            r.extent.disk_start == start
                && r.extent.kind == ExtentKind::Regular
                && (r.extent.extent_offset..r.extent.extent_offset + r.extent.len).contains(&within)
        })
        .map(|r| (r.owner, r.offset + (within - r.extent.extent_offset)))
}
