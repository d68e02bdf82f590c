//! Space: block groups, extent records, free space tiling them, reference counts, back
//! references, and records that share an extent agreeing on what it holds.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Checker, FileExtentRow};
use crate::error::Result;
use crate::format::{
    BlockGroupRecord, Compression, ExtentKind, ExtentRecord, ExtentRefKey, BLOCK_SIZE,
};
use crate::meta;

impl Checker<'_> {
    pub(super) fn block_groups(&mut self) -> Result<BTreeMap<u64, BlockGroupRecord>> {
        Ok(self.rows(meta::BLOCK_GROUPS)?.into_iter().collect())
    }

    /// Extent records: in a block group, not overlapping; returns start -> record.
    pub(super) fn extents(
        &mut self,
        groups: &BTreeMap<u64, BlockGroupRecord>,
    ) -> Result<BTreeMap<u64, ExtentRecord>> {
        let mut extents = BTreeMap::new();
        let mut prev_end = 0u64;
        let mut used: HashMap<u64, u64> = HashMap::new();
        for (start, rec) in self.rows(meta::EXTENTS)? {
            match group_containing(groups, start, rec.len) {
                Some(g) => *used.entry(g).or_default() += rec.len,
                None => self.report.problem(format!(
                    "extent {start}+{} lies outside every block group",
                    rec.len
                )),
            }
            if start < prev_end {
                self.report
                    .problem(format!("extent {start} overlaps the extent before it"));
            }
            if rec.len == 0 || rec.len % BLOCK_SIZE != 0 || start % BLOCK_SIZE != 0 {
                self.report
                    .problem(format!("extent {start}+{} is not block-aligned", rec.len));
            }
            prev_end = start + rec.len;
            extents.insert(start, rec);
        }
        self.report.extents = extents.len() as u64;
        for (logical, g) in groups {
            let counted = used.get(logical).copied().unwrap_or(0);
            if counted != g.used {
                self.report.problem(format!(
                    "block group {logical}: used {} recorded, {counted} in extents",
                    g.used
                ));
            }
        }
        Ok(extents)
    }

    /// Free space plus extents must tile every block group exactly.
    pub(super) fn free_space(
        &mut self,
        groups: &BTreeMap<u64, BlockGroupRecord>,
        extents: &BTreeMap<u64, ExtentRecord>,
    ) -> Result<()> {
        let mut pieces: Vec<(u64, u64, &str)> =
            extents.iter().map(|(s, e)| (*s, e.len, "extent")).collect();
        for (start, len) in self.rows(meta::FREE_SPACE)? {
            pieces.push((start, len, "free space"));
        }
        pieces.sort();
        let mut covered: HashMap<u64, u64> = HashMap::new();
        for w in pieces.windows(2) {
            let ((a, alen, akind), (b, _, bkind)) = (w[0], w[1]);
            if a + alen > b {
                self.report
                    .problem(format!("{akind} {a}+{alen} overlaps {bkind} at {b}"));
            }
        }
        for (start, len, kind) in &pieces {
            match group_containing(groups, *start, *len) {
                Some(g) => *covered.entry(g).or_default() += len,
                None if *kind == "free space" => self.report.problem(format!(
                    "free space {start}+{len} outside every block group"
                )),
                None => {}
            }
        }
        for (logical, g) in groups {
            let c = covered.get(logical).copied().unwrap_or(0);
            if c != g.length {
                self.report.problem(format!(
                    "block group {logical}: extents and free space cover {c} of {} bytes",
                    g.length
                ));
            }
        }
        Ok(())
    }

    /// Every extent's count equals the file extent records pointing at it.
    pub(super) fn reference_counts(
        &mut self,
        extents: &BTreeMap<u64, ExtentRecord>,
        files: &[FileExtentRow],
    ) {
        let mut refs: HashMap<u64, u64> = HashMap::new();
        for row in files.iter().filter(|r| r.extent.kind != ExtentKind::Inline) {
            *refs.entry(row.extent.disk_start).or_default() += 1;
            match extents.get(&row.extent.disk_start) {
                None => self.report.problem(format!(
                    "{}: offset {} points at unallocated extent {}",
                    self.engine.path_of(row.owner),
                    row.offset,
                    row.extent.disk_start
                )),
                Some(e) if e.len != row.extent.disk_len => self.report.problem(format!(
                    "{}: offset {} gives extent {} length {}, the extent has {}",
                    self.engine.path_of(row.owner),
                    row.offset,
                    row.extent.disk_start,
                    row.extent.disk_len,
                    e.len
                )),
                _ => {}
            }
        }
        for (start, e) in extents {
            let counted = refs.get(start).copied().unwrap_or(0);
            if counted != e.refs {
                self.report.problem(format!(
                    "extent {start}: {} references recorded, {counted} found",
                    e.refs
                ));
            }
        }
    }

    /// Records that share a data extent must agree on what its blocks hold. They may disagree
    /// only if one of them changed the shared blocks in place: a different compression or
    /// decoded length, or one block read as data through one record and as unwritten
    /// (zeros) through another, which a write into a shared preallocated block would leave.
    /// Byte-level disagreement between two records of written data cannot exist on disk: a
    /// block has one copy and one checksum, and every record reads that copy.
    pub(super) fn shared_claims(&mut self, files: &[FileExtentRow]) {
        let mut claims: HashMap<u64, SharedExtent> = HashMap::new();
        for row in files.iter().filter(|r| r.extent.kind != ExtentKind::Inline) {
            let e = &row.extent;
            let shared = claims.entry(e.disk_start).or_insert_with(|| SharedExtent {
                first: row,
                blocks: Vec::new(),
            });
            let first = &shared.first.extent;
            if (first.compression, first.ram_len) != (e.compression, e.ram_len) {
                let (a, b) = (shared.first, row);
                self.report.problem(format!(
                    "extent {}: {} at offset {} and {} at offset {} disagree on its encoding",
                    e.disk_start,
                    self.engine.path_of(a.owner),
                    a.offset,
                    self.engine.path_of(b.owner),
                    b.offset
                ));
                continue;
            }
            if e.compression != Compression::None {
                continue;
            }
            if shared.blocks.is_empty() {
                shared.blocks = vec![None; e.ram_len.div_ceil(BLOCK_SIZE) as usize];
            }
            let first_block = (e.extent_offset / BLOCK_SIZE) as usize;
            let end_block = (e.extent_offset + e.len).div_ceil(BLOCK_SIZE) as usize;
            for index in first_block..end_block.min(shared.blocks.len()) {
                match shared.blocks[index] {
                    None => shared.blocks[index] = Some((e.kind, row)),
                    Some((kind, other)) if kind != e.kind => {
                        self.report.problem(format!(
                            "extent {} block {index}: {} at offset {} reads it as {}, {} at offset {} as {}",
                            e.disk_start,
                            self.engine.path_of(other.owner),
                            other.offset,
                            kind_name(kind),
                            self.engine.path_of(row.owner),
                            row.offset,
                            kind_name(e.kind)
                        ));
                        break;
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// Every file extent record has its back reference in `extent_refs`, and nothing else does.
    pub(super) fn back_references(&mut self, files: &[FileExtentRow]) -> Result<()> {
        let mut expected: HashSet<ExtentRefKey> = files
            .iter()
            .filter(|r| r.extent.kind != ExtentKind::Inline)
            .map(|r| ExtentRefKey::new(r.extent.disk_start, r.owner, r.offset))
            .collect();
        for (back, ()) in self.rows(meta::EXTENT_REFS)? {
            if !expected.remove(&back) {
                self.report.problem(format!(
                    "back reference from extent {} to inode {} offset {} has no file extent",
                    back.extent, back.record.file.ino, back.record.offset
                ));
            }
        }
        for back in expected {
            self.report.problem(format!(
                "file extent of inode {} at {} has no back reference from extent {}",
                back.record.file.ino, back.record.offset, back.extent
            ));
        }
        Ok(())
    }
}

/// What the records seen so far say of one data extent: the first record, and for an
/// uncompressed extent, the kind each block was first read as and by which record.
struct SharedExtent<'r> {
    first: &'r FileExtentRow,
    blocks: Vec<Option<(ExtentKind, &'r FileExtentRow)>>,
}

fn kind_name(kind: ExtentKind) -> &'static str {
    match kind {
        ExtentKind::Regular => "data",
        ExtentKind::Prealloc => "unwritten",
        ExtentKind::Inline => "inline",
    }
}

/// The block group wholly containing `[start, start + len)`.
fn group_containing(groups: &BTreeMap<u64, BlockGroupRecord>, start: u64, len: u64) -> Option<u64> {
    let (logical, g) = groups.range(..=start).next_back()?;
    (start + len <= logical + g.length).then_some(*logical)
}
