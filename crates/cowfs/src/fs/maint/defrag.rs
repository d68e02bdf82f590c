//! Defrag: rewrites a file's fragmented data contiguously (optionally compressed). A run of
//! written data is rewritten when it spans more than one extent, when its extents are not
//! physically consecutive, or when compression is asked for and it is not compressed. The
//! rewrite is copy-on-write, like any write: content is unchanged, and (as in btrfs) what is
//! rewritten is no longer shared with clones or snapshots. Holes and preallocated ranges stay.

use crate::device::AlignedBuf;
use crate::error::Result;
use crate::format::inode_flags::{NOCOMPRESS, NOCOW};
use crate::format::{Compression, ExtentKind, FileExtent, MAX_EXTENT_LEN};
use crate::fs::common::Change;
use crate::fs::common::ExtentData;
use crate::fs::data::compress::MAX_COMPRESSED_LEN;
use crate::fs::engine::Engine;
use crate::fs::InodeId;

/// What a defrag did to one file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefragStats {
    pub extents_before: usize,
    pub extents_after: usize,
    pub bytes_rewritten: u64,
}

impl Engine {
    /// Defragments one regular file; with `compress`, rewrites its data compressed.
    pub fn defrag(&mut self, id: InodeId, compress: bool) -> Result<DefragStats> {
        self.check_writable()?;
        let inode = self.regular_inode(id)?;
        // Compressing changes how the bytes are stored, not only where.
        let change = if compress {
            Change::Layout
        } else {
            Change::Move
        };
        self.check_change(id, &inode, change)?;
        self.writeback(id)?;
        // NOCOW and `+m` files are never compressed, whatever is asked.
        let compress = compress && inode.flags & (NOCOW | NOCOMPRESS) == 0;
        let extents = self.extents_in(id, 0, u64::MAX)?;
        let mut stats = DefragStats {
            extents_before: extents.len(),
            ..DefragStats::default()
        };
        for (start, end) in runs_to_rewrite(&extents, compress) {
            self.rewrite(id, start, end, compress)?;
            stats.bytes_rewritten += end - start;
        }
        stats.extents_after = self.extents_in(id, 0, u64::MAX)?.len();
        Ok(stats)
    }

    /// Copies file bytes `[start, end)` to new extents.
    fn rewrite(&mut self, id: InodeId, start: u64, end: u64, compress: bool) -> Result<()> {
        let mut data = AlignedBuf::zeroed((end - start) as usize);
        self.read_stored(id, start, &mut data)?;
        if compress {
            let config = self.compression_choice(&self.inode(id)?);
            self.write_compressed(
                id,
                start,
                ExtentData::Direct(&data),
                config,
                MAX_COMPRESSED_LEN,
            )
            .map(drop)
        } else {
            let nocow = self.inode(id)?.flags & NOCOW != 0;
            self.write_new(id, nocow, start, ExtentData::Direct(&data))
        }
    }
}

/// Runs of consecutive written records, cut at the extent size, that need rewriting.
fn runs_to_rewrite(extents: &[(u64, FileExtent)], compress: bool) -> Vec<(u64, u64)> {
    let mut runs = Vec::new();
    let mut run: Vec<&(u64, FileExtent)> = Vec::new();
    let flush = |run: &mut Vec<&(u64, FileExtent)>, runs: &mut Vec<(u64, u64)>| {
        if let (Some(first), Some(last)) = (run.first(), run.last()) {
            let encoded = |e: &FileExtent| e.compression != Compression::None;
            let contiguous = run.windows(2).all(|w| {
                !encoded(&w[0].1)
                    && w[0].1.disk_start + w[0].1.extent_offset + w[0].1.len
                        == w[1].1.disk_start + w[1].1.extent_offset
            });
            let needs =
                run.len() > 1 && !contiguous || compress && run.iter().any(|(_, e)| !encoded(e));
            if needs {
                runs.push((first.0, last.0 + last.1.len));
            }
        }
        run.clear();
    };
    for item in extents {
        let (off, e) = item;
        let joins = run
            .last()
            .is_some_and(|(prev_off, prev)| prev_off + prev.len == *off)
            && run
                .first()
                .is_some_and(|(first, _)| off + e.len - first <= MAX_EXTENT_LEN);
        if e.kind != ExtentKind::Regular || !joins {
            flush(&mut run, &mut runs);
        }
        if e.kind == ExtentKind::Regular {
            run.push(item);
        }
    }
    flush(&mut run, &mut runs);
    runs
}
