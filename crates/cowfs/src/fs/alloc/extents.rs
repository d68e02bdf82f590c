//! Extent maps and reference counting: which file ranges point at which data extents, the
//! count and back references of each extent, whether an extent is shared, and the extent map
//! (FIEMAP) a caller sees. Every change to a file's mapping goes through `replace_range`.

use std::ops::{Bound, Range};

use crate::error::{Error, Result};
use crate::format::{
    Compression, ExtentKind, ExtentRecord, ExtentRefKey, FileExtent, FileExtentKey, FileKind,
    InodeRecord, BLOCK_SIZE,
};
use crate::fs::alloc::Extent;
use crate::fs::engine::Engine;
use crate::fs::InodeId;

/// Where one range of a file lives, as FIEMAP reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentMapping {
    pub file_offset: u64,
    pub len: u64,
    /// Logical data address (0 for inline data).
    pub logical: u64,
    /// Device offset (0 for inline data).
    pub physical: u64,
    pub kind: ExtentKind,
    /// Stored encoded (compressed): its bytes on disk are not the file's.
    pub encoded: bool,
    /// Another file, clone or snapshot references the same data extent.
    pub shared: bool,
}

impl ExtentMapping {
    /// FIEMAP's flag names for this extent (`last` is for the caller to add).
    pub fn flag_names(&self) -> Vec<&'static str> {
        let mut flags = Vec::new();
        match self.kind {
            ExtentKind::Inline => flags.extend(["inline", "not_aligned", "data_inline"]),
            ExtentKind::Prealloc => flags.push("unwritten"),
            ExtentKind::Regular => {}
        }
        if self.encoded {
            flags.push("encoded");
        }
        if self.shared {
            flags.push("shared");
        }
        flags
    }
}

impl Engine {
    /// File extent records of `id` overlapping `[start, end)`, as (file offset, extent).
    pub(in crate::fs) fn extents_in(
        &self,
        id: InodeId,
        start: u64,
        end: u64,
    ) -> Result<Vec<(u64, FileExtent)>> {
        let records = self.meta().file_extents();
        let (from, to) = (FileExtentKey::new(id, start), FileExtentKey::new(id, end));
        let mut found = Vec::new();
        if let Some((key, e)) = records.at_or_before(&from)? {
            let covers_start = key.file == id && key.offset + e.len > start;
            // Records never overlap: one that covers all of a range is the only one in it (a
            // swap-in's usual case, which then costs one lookup, not two).
            if covers_start && start < end && key.offset + e.len >= end {
                return Ok(vec![(key.offset, e)]);
            }
            if covers_start && key.offset < start {
                found.push((key.offset, e));
            }
        }
        for (key, e) in records.range(Bound::Included(&from), Bound::Excluded(&to), usize::MAX)? {
            found.push((key.offset, e));
        }
        Ok(found)
    }

    /// The checksums of a data extent, or None for an extent without them.
    pub(in crate::fs) fn extent_checksums(&self, start: u64) -> Result<Option<Vec<u32>>> {
        self.meta().checksums().get(&start)
    }

    /// The checksums of blocks `blocks` of the extent at `start`; fewer where its record
    /// ends first.
    pub(in crate::fs) fn extent_block_checksums(
        &self,
        start: u64,
        blocks: Range<usize>,
    ) -> Result<Option<Vec<u32>>> {
        self.meta().checksums().get_blocks(&start, blocks)
    }

    /// The ranges of `[start, end)` no file extent record maps.
    pub(in crate::fs) fn holes(
        &self,
        id: InodeId,
        start: u64,
        end: u64,
    ) -> Result<Vec<(u64, u64)>> {
        let mut holes = Vec::new();
        let mut cursor = start;
        for (off, e) in self.extents_in(id, start, end)? {
            if cursor < off {
                holes.push((cursor, off));
            }
            cursor = cursor.max(off + e.len);
        }
        if cursor < end {
            holes.push((cursor, end));
        }
        Ok(holes)
    }

    /// Removes the mapping of file bytes `[start, end)`, leaving a hole.
    pub(in crate::fs) fn punch_extents(&mut self, id: InodeId, start: u64, end: u64) -> Result<()> {
        self.replace_range(id, start, end, None)
    }

    /// Maps `[start, end)` of a file to `new` (or to a hole), splitting the records that
    /// straddle the edges and dropping the references of what is replaced. The new record's
    /// reference is counted first, so an extent it shares with a replaced record is never
    /// freed in between.
    pub(in crate::fs) fn replace_range(
        &mut self,
        id: InodeId,
        start: u64,
        end: u64,
        new: Option<FileExtent>,
    ) -> Result<()> {
        if let Some(n) = new.as_ref().filter(|n| n.kind != ExtentKind::Inline) {
            let piece = self
                .sole_owners
                .keep_piece(n.disk_start, id, start, n.extent_offset);
            debug_assert!(
                start == 0
                    || self
                        .extents_in(id, 0, 1)?
                        .iter()
                        .all(|(_, e)| e.kind != ExtentKind::Inline),
                "an extent mapped beside inline data"
            );
            self.adjust_extent_refs(n.disk_start, 1)?;
            piece.restore(&self.sole_owners);
        }
        for (off, e) in self.extents_in(id, start, end)? {
            if off + e.len > end {
                self.insert_mapping(id, end, &e.slice(end - off, e.len))?;
            }
            if off < start {
                // The head keeps the record's key, so its back reference and count stay.
                self.put_record(id, off, &e.slice(0, start - off))?;
            } else {
                self.remove_mapping(id, off, &e)?;
            }
        }
        if let Some(n) = new {
            self.put_record(id, start, &n)?;
            if n.kind != ExtentKind::Inline {
                let back = ExtentRefKey::new(n.disk_start, id, start);
                self.meta().extent_refs().put(&back, &())?;
            }
        }
        Ok(())
    }

    pub(in crate::fs) fn put_record(
        &mut self,
        id: InodeId,
        offset: u64,
        e: &FileExtent,
    ) -> Result<()> {
        self.meta()
            .file_extents()
            .put(&FileExtentKey::new(id, offset), e)
    }

    /// Adds a file extent record, with its back reference and count.
    pub(in crate::fs) fn insert_mapping(
        &mut self,
        id: InodeId,
        offset: u64,
        e: &FileExtent,
    ) -> Result<()> {
        self.put_record(id, offset, e)?;
        if e.kind == ExtentKind::Inline {
            return Ok(());
        }
        let back = ExtentRefKey::new(e.disk_start, id, offset);
        self.meta().extent_refs().put(&back, &())?;
        // The tail of a split record: a piece of the same record.
        let piece = self
            .sole_owners
            .keep_piece(e.disk_start, id, offset, e.extent_offset);
        self.adjust_extent_refs(e.disk_start, 1)?;
        piece.restore(&self.sole_owners);
        Ok(())
    }

    /// Removes a file extent record, its back reference and its count; the extent goes with
    /// its last reference.
    pub(in crate::fs) fn remove_mapping(
        &mut self,
        id: InodeId,
        offset: u64,
        e: &FileExtent,
    ) -> Result<()> {
        self.meta()
            .file_extents()
            .remove(&FileExtentKey::new(id, offset))?;
        if e.kind == ExtentKind::Inline {
            return Ok(());
        }
        let back = ExtentRefKey::new(e.disk_start, id, offset);
        self.meta().extent_refs().remove(&back)?;
        self.adjust_extent_refs(e.disk_start, -1)
    }

    /// Counts a reference more or less to extent `start`; the extent goes with its last. A
    /// new reference may share it with someone new: it is no longer known to have one owner
    /// (callers adding a piece of an existing record say so again).
    pub(in crate::fs) fn adjust_extent_refs(&mut self, start: u64, delta: i64) -> Result<()> {
        if delta > 0 {
            self.sole_owners.forget(start);
        }
        let meta = self.store.meta();
        let mut record = meta.extents().get(&start)?.ok_or_else(|| {
            Error::corrupt(format!("file extent points at unallocated extent {start}"))
        })?;
        record.refs = record
            .refs
            .checked_add_signed(delta)
            .ok_or_else(|| Error::corrupt(format!("extent {start} reference count underflow")))?;
        if record.refs > 0 {
            return meta.extents().put(&start, &record);
        }
        meta.extents().remove(&start)?;
        meta.checksums().remove(&start)?;
        self.sole_owners.forget(start);
        self.alloc.free(
            meta,
            Extent {
                start,
                len: record.len,
            },
        )
    }

    /// Whether a data extent is referenced by any file other than `owner` (another file, a
    /// clone, a snapshot). A file referencing one extent twice does not share it. Back
    /// references sort by owner, so two bounded lookups answer: is the first one someone
    /// else's, and is there one after `owner`'s?
    pub fn extent_shared(&self, extent: u64, owner: InodeId) -> Result<bool> {
        let refs = self.meta().extent_refs();
        let first = refs.within_from(&extent, Bound::Unbounded, 1)?;
        let Some((first, ())) = first.first() else {
            return Ok(false);
        };
        if first.record.file != owner {
            return Ok(true);
        }
        let past_owner = ExtentRefKey::new(extent, owner, u64::MAX);
        let next = refs.within_from(&extent, Bound::Excluded(&past_owner), 1)?;
        Ok(!next.is_empty())
    }

    /// A data extent's record: its length, count and the generation that allocated it.
    pub(in crate::fs) fn extent_record(&self, extent: u64) -> Result<ExtentRecord> {
        self.meta()
            .extents()
            .get(&extent)?
            .ok_or_else(|| Error::corrupt(format!("extent {extent} is missing")))
    }

    /// Whether the bytes `[from, to)` of data extent `extent` belong to the record of `owner`
    /// at file offset `record_offset` (mapping extent bytes from `extent_offset`) alone, so
    /// they may be overwritten in place: no record of another file, and no other record of
    /// this one (a clone or copy within the file), maps any of them. Records split from one
    /// another map disjoint bytes and do not count. An extent with one reference answers at
    /// once, and so does one known to be referenced only by pieces of one record
    /// (`SoleOwners`); past that, each other reference's record is looked at, once.
    pub(in crate::fs) fn bytes_exclusive(
        &self,
        extent: u64,
        record: &ExtentRecord,
        (from, to): (u64, u64),
        owner: InodeId,
        (record_offset, extent_offset): (u64, u64),
    ) -> Result<bool> {
        if record.refs <= 1 {
            return Ok(true);
        }
        let origin = record_offset.wrapping_sub(extent_offset);
        if self.sole_owners.is(extent, owner, origin) {
            return Ok(true);
        }
        let (mut exclusive, mut one_origin) = (true, true);
        for (back, ()) in self.meta().extent_refs().within(&extent)? {
            let (other, offset) = (back.record.file, back.record.offset);
            if other != owner {
                return Ok(false);
            }
            if offset == record_offset {
                continue;
            }
            let e = self
                .meta()
                .file_extents()
                .get(&back.record)?
                .ok_or_else(|| {
                    Error::corrupt(format!("extent {extent} is referenced by a missing record"))
                })?;
            one_origin &= offset.wrapping_sub(e.extent_offset) == origin;
            exclusive &= to <= e.extent_offset || e.extent_offset + e.len <= from;
        }
        if one_origin {
            self.sole_owners.set(extent, owner, origin);
        }
        Ok(exclusive)
    }

    /// Bytes of data space a file references (for `st_blocks`), dirty pages included.
    pub(in crate::fs) fn allocated_bytes(&self, id: InodeId, inode: &InodeRecord) -> Result<u64> {
        if inode.kind()? == FileKind::Directory {
            return Ok(0);
        }
        let stored: u64 = self
            .extents_in(id, 0, u64::MAX)?
            .iter()
            .map(|(_, e)| e.len)
            .sum();
        let dirty = self.cache.pages_in(id, 0..u64::MAX).count() as u64 * BLOCK_SIZE;
        Ok(stored + dirty)
    }

    /// The file's extents in file order, after writing back its dirty pages.
    pub fn extent_map(&mut self, id: InodeId) -> Result<Vec<ExtentMapping>> {
        self.inode(id)?;
        if self.cache.has_pages_in(id, 0..u64::MAX) {
            self.check_writable()?;
            self.writeback(id)?;
        }
        let mut map = Vec::new();
        for (off, e) in self.extents_in(id, 0, u64::MAX)? {
            let (logical, physical, shared) = match e.kind {
                ExtentKind::Inline => (0, 0, false),
                _ => {
                    // An encoded extent's offset is into its decoded bytes: report its start.
                    let encoded = e.compression != Compression::None;
                    let logical = e.disk_start + if encoded { 0 } else { e.extent_offset };
                    let shared = self.extent_shared(e.disk_start, id)?;
                    (logical, self.alloc.physical(logical)?, shared)
                }
            };
            map.push(ExtentMapping {
                file_offset: off,
                len: e.len,
                logical,
                physical,
                kind: e.kind,
                encoded: e.compression != Compression::None,
                shared,
            });
        }
        Ok(map)
    }
}
