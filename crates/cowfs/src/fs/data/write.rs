//! Turning data into extents: writeback of dirty pages and direct writes, each range either
//! overwritten in place (NOCOW files, preallocated space) or copied to newly allocated
//! extents, with checksums and write-behind.

use crate::error::{Error, Result};
use crate::format::inode_flags::NOCOW;
use crate::format::{
    Compression, ExtentKind, ExtentRecord, FileExtent, BLOCK_SIZE, MAX_EXTENT_LEN,
};
use crate::fs::alloc::Extent;
use crate::fs::common::{ExtentData, EXTENT_PAGES};
use crate::fs::data::compress::MAX_COMPRESSED_LEN;
use crate::fs::data::writer::WriteTicket;
use crate::fs::engine::Engine;
use crate::fs::InodeId;

/// The longest extent [`Engine::extend_fresh_extent`] grows: its checksums are rewritten
/// with every page it gains.
const GROWN_EXTENT_LEN: u64 = 1 << 20;

/// Where one range of a write goes.
enum Target {
    /// Over the existing extent of the record at `record_offset` (NOCOW, or preallocated).
    InPlace {
        record_offset: u64,
        extent: FileExtent,
    },
    /// To newly allocated extents (copy-on-write).
    New,
}

struct Span {
    start: u64,
    end: u64,
    target: Target,
}

impl Engine {
    /// Writes `data` at `offset` of a file. Ranges over preallocated space, over any unshared
    /// data of a NOCOW file, and over unshared extents the running transaction allocated, are
    /// overwritten in place; the rest is copy-on-write to new extents. Direct data is on the device when this returns; dirty chunks going to new
    /// extents are written behind, overlapping whatever the caller does next.
    pub(in crate::fs) fn write_extents(
        &mut self,
        id: InodeId,
        offset: u64,
        mut data: ExtentData<'_>,
    ) -> Result<()> {
        let inode = self.inode(id)?;
        let nocow = inode.flags & NOCOW != 0;
        let spans = self.plan_write(id, offset, offset + data.len(), nocow)?;
        let mut i = 0;
        while i < spans.len() {
            if let Target::New = spans[i].target {
                let part = data.take(spans[i].end - spans[i].start);
                match (&part, self.compression_for(&inode)) {
                    (ExtentData::Chunks(_), Some(config)) => {
                        self.write_compressed(
                            id,
                            spans[i].start,
                            part,
                            config,
                            MAX_COMPRESSED_LEN,
                        )?;
                    }
                    _ => self.write_new(id, nocow, spans[i].start, part)?,
                }
                i += 1;
                continue;
            }
            let run = self.contiguous_in_place(&spans[i..])?;
            let len = spans[i + run - 1].end - spans[i].start;
            let part = data.take(len);
            self.write_in_place(id, nocow, &spans[i..i + run], part)?;
            i += run;
        }
        Ok(())
    }

    /// How many spans from the first, all in place, follow each other on the device.
    fn contiguous_in_place(&self, spans: &[Span]) -> Result<usize> {
        let mut next = None;
        for (n, span) in spans.iter().enumerate() {
            let Target::InPlace {
                record_offset,
                extent,
            } = &span.target
            else {
                return Ok(n);
            };
            let at = self.alloc.physical(
                extent.disk_start + extent.extent_offset + (span.start - record_offset),
            )?;
            if next.is_some_and(|end| end != at) {
                return Ok(n);
            }
            next = Some(at + (span.end - span.start));
        }
        Ok(spans.len())
    }

    /// Whether all of `[start, end)` would be overwritten in place: writing it needs no new
    /// space.
    pub(in crate::fs) fn writes_in_place(&self, id: InodeId, start: u64, end: u64) -> Result<bool> {
        let nocow = self.inode(id)?.flags & NOCOW != 0;
        let spans = self.plan_write(id, start, end, nocow)?;
        Ok(spans
            .iter()
            .all(|s| matches!(s.target, Target::InPlace { .. })))
    }

    /// Splits `[start, end)` by where each range may be written.
    fn plan_write(&self, id: InodeId, start: u64, end: u64, nocow: bool) -> Result<Vec<Span>> {
        let mut spans: Vec<Span> = Vec::new();
        let mut push = |start: u64, end: u64, target: Target| match (spans.last_mut(), &target) {
            (Some(last), Target::New)
                if matches!(last.target, Target::New) && last.end == start =>
            {
                last.end = end
            }
            _ => spans.push(Span { start, end, target }),
        };
        let mut cursor = start;
        for (off, e) in self.extents_in(id, start, end)? {
            let (from, to) = (off.max(start), (off + e.len).min(end));
            if cursor < from {
                push(cursor, from, Target::New);
            }
            let target = if self.overwritable(id, off, &e, (from, to), nocow)? {
                Target::InPlace {
                    record_offset: off,
                    extent: e,
                }
            } else {
                Target::New
            };
            push(from, to, target);
            cursor = to;
        }
        if cursor < end {
            push(cursor, end, Target::New);
        }
        Ok(spans)
    }

    /// Whether file bytes `[from, to)`, mapped by the record `e` at `record_offset`, may be
    /// overwritten in place: preallocated space, plain data of a NOCOW file, or plain data
    /// the running transaction allocated (no committed state refers to it, so a crash frees
    /// it) -- and in every case only bytes no other record maps, however and whenever the
    /// sharing was made.
    fn overwritable(
        &self,
        id: InodeId,
        record_offset: u64,
        e: &FileExtent,
        (from, to): (u64, u64),
        nocow: bool,
    ) -> Result<bool> {
        let plain = e.compression == Compression::None;
        if e.kind == ExtentKind::Inline || !plain {
            return Ok(false);
        }
        let record = self.extent_record(e.disk_start)?;
        let fresh = record.generation == self.state.generation;
        if e.kind == ExtentKind::Regular && !nocow && !fresh {
            return Ok(false);
        }
        let within = e.extent_offset + (from - record_offset);
        let bytes = (within, within + (to - from));
        let record_at = (record_offset, e.extent_offset);
        self.bytes_exclusive(e.disk_start, &record, bytes, id, record_at)
    }

    /// Overwrites existing extents, consecutive on the device, with one write; then records
    /// each span's checksums, and preallocated ranges become written data.
    fn write_in_place(
        &mut self,
        id: InodeId,
        nocow: bool,
        spans: &[Span],
        mut data: ExtentData<'_>,
    ) -> Result<()> {
        let Target::InPlace {
            record_offset,
            extent,
        } = &spans[0].target
        else {
            unreachable!("in-place spans")
        };
        let physical = self.alloc.physical(
            extent.disk_start + extent.extent_offset + (spans[0].start - record_offset),
        )?;
        // An earlier write of the same blocks may still be in flight behind us.
        self.writer.settle_range(physical..physical + data.len())?;
        self.write_data(physical, spans[0].start, &data)?;
        self.store.note_change();
        for span in spans {
            let Target::InPlace {
                record_offset,
                extent,
            } = &span.target
            else {
                unreachable!("in-place spans")
            };
            let part = data.take(span.end - span.start);
            let within = extent.extent_offset + (span.start - record_offset);
            if !nocow {
                self.update_checksums(extent.disk_start, within, &part.checksums())?;
            }
            if extent.kind == ExtentKind::Prealloc {
                let from = span.start - record_offset;
                let mut written = extent.slice(from, from + part.len());
                written.kind = ExtentKind::Regular;
                self.replace_range(id, span.start, span.end, Some(written))?;
            }
        }
        Ok(())
    }

    /// Writes to newly allocated extents, checksummed unless the file is NOCOW.
    pub(in crate::fs) fn write_new(
        &mut self,
        id: InodeId,
        nocow: bool,
        mut offset: u64,
        mut data: ExtentData<'_>,
    ) -> Result<()> {
        while data.len() > 0 {
            let want = data.len().min(MAX_EXTENT_LEN);
            let extent = self.alloc.allocate(self.store.meta(), &self.space, want)?;
            let physical = self.alloc.physical(extent.start)?;
            let part = data.take(extent.len);
            let sums = (!nocow).then(|| part.checksums());
            match part {
                ExtentData::Direct(_) => self.write_data(physical, offset, &part)?,
                ExtentData::Chunks(pieces) => {
                    self.writer.write_behind(&self.device, physical, pieces)?
                }
            }
            if !self.extend_fresh_extent(id, offset, extent, sums.as_deref())? {
                let mapping = FileExtent::regular(extent.start, extent.len);
                self.record_extent(id, offset, extent, sums.as_deref(), mapping)?;
            }
            offset += extent.len;
        }
        Ok(())
    }

    /// Writes `data`, file bytes from `file_offset`, at device offset `physical`; or, under
    /// [`Engine::deferring_writes`], leaves a direct write for the caller to make.
    pub(in crate::fs) fn write_data(
        &mut self,
        physical: u64,
        file_offset: u64,
        data: &ExtentData<'_>,
    ) -> Result<()> {
        if let (Some(deferred), ExtentData::Direct(bytes)) = (&mut self.deferred, data) {
            deferred.push(self.writer.ticket(physical, file_offset, bytes.len())?);
            return Ok(());
        }
        self.device
            .write_vectored_at(physical, &data.slices())
            .map_err(|e| Error::device_write("data write", &e))
    }

    /// Runs `f` with its direct data writes deferred: each is recorded (extent, checksums)
    /// as usual but not made; the tickets come back, with `f`'s result, for the caller to
    /// make the writes once the engine's lock is let go (whatever the result: the
    /// recorded extents must get their data). Until then reads and overwrites of those
    /// blocks, and commits, wait for them; so the lock is not held over the device write,
    /// and other threads' reads and writes go on meanwhile.
    pub(crate) fn deferring_writes<T>(
        &mut self,
        f: impl FnOnce(&mut Engine) -> Result<T>,
    ) -> (Result<T>, Vec<WriteTicket>) {
        let outer = self.deferred.replace(Vec::new());
        let result = f(self);
        let tickets = std::mem::replace(&mut self.deferred, outer).unwrap_or_default();
        (result, tickets)
    }

    /// Appends `extent`, just allocated and written for file bytes from `offset`, to the
    /// extent mapping the bytes right before them, when that one is the running
    /// transaction's own (no committed state knows it), wholly mapped by that one record, and
    /// ends where `extent` starts, in the same block group. Sequential copy-on-write writes of
    /// a few pages each (swap-out) then make extents of up to `GROWN_EXTENT_LEN`, not one per
    /// write: reading them, and freeing them when they are rewritten, costs a record where it
    /// cost hundreds. False (nothing done) when the extents cannot join.
    fn extend_fresh_extent(
        &mut self,
        id: InodeId,
        offset: u64,
        extent: Extent,
        sums: Option<&[u32]>,
    ) -> Result<bool> {
        let Some((before, e)) = offset
            .checked_sub(1)
            .map(|last| self.extents_in(id, last, offset))
            .transpose()?
            .and_then(|records| records.into_iter().next())
        else {
            return Ok(false);
        };
        let joins = e.kind == ExtentKind::Regular
            && e.compression == Compression::None
            && e.extent_offset == 0
            && e.len == e.disk_len
            && before + e.len == offset
            && e.disk_start + e.disk_len == extent.start
            && e.disk_len + extent.len <= GROWN_EXTENT_LEN
            && self.alloc.group_of(e.disk_start).map(|g| g.logical)
                == self.alloc.group_of(extent.start).map(|g| g.logical);
        if !joins {
            return Ok(false);
        }
        let mut record = self.extent_record(e.disk_start)?;
        let checksummed = record.flags & ExtentRecord::FLAG_NODATASUM == 0;
        if record.refs != 1
            || record.generation != self.state.generation
            || checksummed != sums.is_some()
        {
            return Ok(false);
        }
        self.replace_range(id, offset, offset + extent.len, None)?;
        record.len += extent.len;
        self.meta().extents().put(&e.disk_start, &record)?;
        if let Some(sums) = sums {
            let checksums = self.meta().checksums();
            let mut all = checksums.get(&e.disk_start)?.ok_or_else(|| {
                Error::corrupt(format!("extent {} has no checksums", e.disk_start))
            })?;
            all.extend_from_slice(sums);
            checksums.put(&e.disk_start, &all)?;
        }
        let grown = e.disk_len + extent.len;
        let mapping = FileExtent {
            disk_len: grown,
            len: grown,
            ram_len: grown,
            ..e
        };
        self.put_record(id, before, &mapping)?;
        Ok(true)
    }

    /// Records a new extent (checksummed when `sums` is given) and maps it at `file_offset`.
    pub(in crate::fs) fn record_extent(
        &mut self,
        id: InodeId,
        file_offset: u64,
        extent: Extent,
        sums: Option<&[u32]>,
        mapping: FileExtent,
    ) -> Result<()> {
        let flags = if sums.is_some() {
            0
        } else {
            ExtentRecord::FLAG_NODATASUM
        };
        let record = ExtentRecord {
            len: extent.len,
            refs: 0,
            flags,
            generation: self.state.generation,
        };
        let meta = self.meta();
        meta.extents().put(&extent.start, &record)?;
        if let Some(sums) = sums {
            meta.checksums().put(&extent.start, &sums.to_vec())?;
        }
        self.replace_range(id, file_offset, file_offset + mapping.len, Some(mapping))
    }

    /// Replaces the checksums of blocks `within..` of an extent.
    fn update_checksums(&mut self, extent: u64, within: u64, sums: &[u32]) -> Result<()> {
        let checksums = self.meta().checksums();
        let mut all = checksums
            .get(&extent)?
            .ok_or_else(|| Error::corrupt(format!("extent {extent} has no checksums")))?;
        let first = (within / BLOCK_SIZE) as usize;
        all.get_mut(first..first + sums.len())
            .ok_or_else(|| Error::corrupt(format!("extent {extent} has too few checksums")))?
            .copy_from_slice(sums);
        checksums.put(&extent, &all)
    }

    /// Writes out the dirty pages of one file as extents, one per run of consecutive pages.
    pub fn writeback(&mut self, id: InodeId) -> Result<()> {
        if self.writeback_inline(id)? {
            return Ok(());
        }
        self.writeback_pages(id, u64::MAX)
    }

    /// Writes out up to `budget` dirty pages of a file, lowest offsets first.
    /// Inline data cannot sit beside other extents: when pages past the first are going
    /// out, the inline data goes with them as a regular extent.
    pub(in crate::fs) fn writeback_pages(&mut self, id: InodeId, budget: u64) -> Result<()> {
        if self.cache.has_pages_in(id, 1..u64::MAX) {
            let inode = self.inode(id)?;
            self.uninline(id, &inode)?;
        }
        for (start, pieces) in self.cache.take_runs(id, EXTENT_PAGES, budget) {
            self.write_extents(id, start * BLOCK_SIZE, ExtentData::Chunks(pieces))?;
        }
        Ok(())
    }

    pub(in crate::fs) fn writeback_all(&mut self) -> Result<()> {
        for id in self.cache.dirty_files() {
            self.writeback(id)?;
        }
        Ok(())
    }
}
