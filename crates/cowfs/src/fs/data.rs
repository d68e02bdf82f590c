//! File data: the extent map of each file, copy-on-write writes through the page cache or
//! straight to the device (direct I/O), truncation, and crc32c checksums verified on every
//! read. An extent's reference count is the number of file extent records pointing at it.

use std::ops::Bound;

use super::alloc::Extent;
use super::attrs::Change;
use super::cache::{Piece, CHUNK_PAGES, DIRTY_LIMIT};
use super::engine::Engine;
use super::InodeId;
use crate::device::AlignedBuf;
use crate::error::{Errno, Error, Result};
use crate::format::{
    decode_checksums, encode_checksums, extent_ref_key, key1, key3, key_part, round_down, round_up,
    table, ExtentKind, ExtentRecord, FileExtent, FileKind, InodeRecord, Timespec, BLOCK_SIZE,
    MAX_EXTENT_LEN,
};

/// The largest file size: offsets must fit an i64, as in the kernel.
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64 & !(BLOCK_SIZE - 1);

const BS: usize = BLOCK_SIZE as usize;
/// Pages in the largest extent.
const EXTENT_PAGES: u64 = MAX_EXTENT_LEN / BLOCK_SIZE;

fn check_direct(offset: u64, len: usize) -> Result<()> {
    if offset % BLOCK_SIZE != 0 || len as u64 % BLOCK_SIZE != 0 {
        return Err(Error::invalid(
            "direct I/O needs 4 KiB-aligned offset and length",
        ));
    }
    Ok(())
}

fn check_range(offset: u64, len: usize) -> Result<u64> {
    offset
        .checked_add(len as u64)
        .filter(|end| *end <= MAX_FILE_SIZE)
        .ok_or_else(|| Error::new(Errno::FBIG, "file too large"))
}

pub fn checksum_blocks(data: &[u8]) -> Vec<u32> {
    data.chunks(BS).map(crc32c::crc32c).collect()
}

/// What `write_extents` writes: the caller's buffer, or dirty chunks.
enum ExtentData<'a> {
    Direct(&'a [u8]),
    Chunks(Vec<Piece>),
}

impl ExtentData<'_> {
    fn len(&self) -> u64 {
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
    fn regular_inode(&self, id: InodeId) -> Result<InodeRecord> {
        let inode = self.inode(id)?;
        match inode.kind()? {
            FileKind::Regular => Ok(inode),
            FileKind::Directory => Err(Error::new(
                Errno::ISDIR,
                format!("{}: is a directory", self.path_of(id)),
            )),
            FileKind::Symlink => Err(Error::invalid(format!(
                "{}: is a symlink",
                self.path_of(id)
            ))),
        }
    }

    /// File extent records of `id` overlapping `[start, end)`, as (file offset, extent).
    pub(super) fn extents_in(
        &self,
        id: InodeId,
        start: u64,
        end: u64,
    ) -> Result<Vec<(u64, FileExtent)>> {
        let meta = self.meta();
        let mut found = Vec::new();
        if let Some((k, v)) =
            meta.at_or_before(table::FILE_EXTENTS, &key3(id.subvol, id.ino, start))?
        {
            if key_part(&k, 0)? == id.subvol && key_part(&k, 1)? == id.ino {
                let (off, e) = (key_part(&k, 2)?, FileExtent::decode(&v)?);
                if off < start && off + e.len > start {
                    found.push((off, e));
                }
            }
        }
        let from = key3(id.subvol, id.ino, start);
        let to = key3(id.subvol, id.ino, end);
        for (k, v) in meta.range(
            table::FILE_EXTENTS,
            Bound::Included(&from),
            Bound::Excluded(&to),
            usize::MAX,
            false,
        )? {
            found.push((key_part(&k, 2)?, FileExtent::decode(&v)?));
        }
        Ok(found)
    }

    /// The checksums of a data extent, or None for an extent without them.
    fn extent_checksums(&self, start: u64) -> Result<Option<Vec<u32>>> {
        self.meta()
            .get(table::CHECKSUMS, &key1(start))?
            .map(|v| decode_checksums(&v))
            .transpose()
    }

    /// Reads file bytes `[offset, offset + buf.len())` as stored (ignoring dirty pages).
    /// Holes and preallocated ranges read as zeros.
    pub(super) fn read_stored(&self, id: InodeId, offset: u64, buf: &mut [u8]) -> Result<()> {
        buf.fill(0);
        let end = offset + buf.len() as u64;
        for (off, e) in self.extents_in(id, offset, end)? {
            let from = off.max(offset);
            let to = (off + e.len).min(end);
            if from >= to {
                continue;
            }
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            let within = e.extent_offset + (from - off);
            match e.kind {
                ExtentKind::Prealloc => {}
                ExtentKind::Inline => {
                    dst.copy_from_slice(&e.inline_data[within as usize..][..dst.len()])
                }
                ExtentKind::Regular => self.read_extent(id, &e, within, from, dst)?,
            }
        }
        Ok(())
    }

    /// Reads `dst.len()` bytes at `within` of a data extent, verifying each block read.
    fn read_extent(
        &self,
        id: InodeId,
        e: &FileExtent,
        within: u64,
        file_off: u64,
        dst: &mut [u8],
    ) -> Result<()> {
        let first = round_down(within, BLOCK_SIZE);
        let last = round_up(within + dst.len() as u64, BLOCK_SIZE);
        if first == within && last == within + dst.len() as u64 {
            self.device_read(e.disk_start + first, dst)?;
            return self.verify_blocks(id, e, first, file_off, dst);
        }
        let mut blocks = AlignedBuf::zeroed((last - first) as usize);
        self.device_read(e.disk_start + first, &mut blocks)?;
        self.verify_blocks(id, e, first, file_off, &blocks)?;
        let at = (within - first) as usize;
        dst.copy_from_slice(&blocks[at..at + dst.len()]);
        Ok(())
    }

    /// Checks blocks read from extent offset `first` against the extent's checksums.
    fn verify_blocks(
        &self,
        id: InodeId,
        e: &FileExtent,
        first: u64,
        file_off: u64,
        blocks: &[u8],
    ) -> Result<()> {
        let Some(sums) = self.extent_checksums(e.disk_start)? else {
            return Ok(());
        };
        for (i, block) in blocks.chunks(BS).enumerate() {
            let expected = sums.get((first / BLOCK_SIZE) as usize + i).copied();
            let actual = crc32c::crc32c(block);
            if expected != Some(actual) {
                let at = round_down(file_off, BLOCK_SIZE) + i as u64 * BLOCK_SIZE;
                return Err(Error::checksum(format!(
                    "checksum mismatch in {} at offset {at} (data address {}, expected {:#010x}, found {actual:#010x})",
                    self.path_of(id),
                    e.disk_start + first + i as u64 * BLOCK_SIZE,
                    expected.unwrap_or(0),
                )));
            }
        }
        Ok(())
    }

    /// Buffered read: stored data with dirty pages laid over it.
    pub fn read(&mut self, id: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let inode = self.regular_inode(id)?;
        if offset >= inode.size {
            return Ok(0);
        }
        let n = buf.len().min((inode.size - offset) as usize);
        let buf = &mut buf[..n];
        self.read_stored(id, offset, buf)?;
        let end = offset + n as u64;
        for (index, page) in self
            .cache
            .pages_in(id, offset / BLOCK_SIZE..end.div_ceil(BLOCK_SIZE))
        {
            let page_start = index * BLOCK_SIZE;
            let from = page_start.max(offset);
            let to = (page_start + BLOCK_SIZE).min(end);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&page[(from - page_start) as usize..(to - page_start) as usize]);
        }
        Ok(n)
    }

    /// Buffered write: the data goes into dirty pages, written out as extents later.
    pub fn write(&mut self, id: InodeId, offset: u64, data: &[u8]) -> Result<usize> {
        self.check_writable()?;
        let end = check_range(offset, data.len())?;
        let mut inode = self.regular_inode(id)?;
        self.check_change(id, &inode, Change::Write(offset))?;
        if data.is_empty() {
            return Ok(0);
        }
        let (first, last) = (offset / BLOCK_SIZE, end.div_ceil(BLOCK_SIZE));
        let new_pages = (last - first) - self.cache.pages_in(id, first..last).count() as u64;
        self.reserve(new_pages * BLOCK_SIZE)?;
        let mut index = first;
        while index < last {
            // The pages up to the end of this chunk, copied in one go.
            let run_end = ((index / CHUNK_PAGES + 1) * CHUNK_PAGES).min(last);
            for edge in [index, run_end - 1] {
                let covered = offset <= edge * BLOCK_SIZE && (edge + 1) * BLOCK_SIZE <= end;
                if !covered && !self.cache.contains(id, edge) {
                    self.load_page(id, &inode, edge)?;
                }
            }
            let run_start = index * BLOCK_SIZE;
            let from = run_start.max(offset);
            let to = (run_end * BLOCK_SIZE).min(end);
            let pages = self.cache.pages_mut(id, index, run_end - index);
            pages[(from - run_start) as usize..(to - run_start) as usize]
                .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
            index = run_end;
        }
        inode.size = inode.size.max(end);
        let now = Timespec::now();
        inode.mtime = now;
        inode.ctime = now;
        self.put_inode(id, &inode)?;
        if self.cache.file_pages(id) >= EXTENT_PAGES {
            // A full extent's worth: start writing it now, behind the caller's next writes.
            self.writeback_pages(id, EXTENT_PAGES)?;
        }
        if self.cache.dirty_bytes() > DIRTY_LIMIT {
            self.writeback_all()?;
        }
        Ok(data.len())
    }

    /// Makes sure `bytes` of new data can be written out, committing to reuse space the
    /// running transaction freed if that is what it takes. ENOSPC otherwise.
    fn reserve(&mut self, bytes: u64) -> Result<()> {
        let fits = |e: &Engine| e.alloc.available(&e.space) >= e.cache.dirty_page_bytes() + bytes;
        if fits(self) {
            return Ok(());
        }
        if self.alloc.pinned_bytes() > 0 {
            self.commit()?;
            if fits(self) {
                return Ok(());
            }
        }
        Err(Error::no_space("no space left on the filesystem"))
    }

    /// Direct read: 4 KiB-aligned, straight from the device into `buf`.
    pub fn read_direct(&mut self, id: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        check_direct(offset, buf.len())?;
        let inode = self.regular_inode(id)?;
        if self.cache.has_pages_in(
            id,
            offset / BLOCK_SIZE..(offset + buf.len() as u64) / BLOCK_SIZE,
        ) {
            self.writeback(id)?;
        }
        if offset >= inode.size {
            return Ok(0);
        }
        let n = buf
            .len()
            .min(round_up(inode.size - offset, BLOCK_SIZE) as usize);
        self.read_stored(id, offset, &mut buf[..n])?;
        Ok(n.min((inode.size - offset) as usize))
    }

    /// Direct write: 4 KiB-aligned, copy-on-write to new extents straight from `data`.
    pub fn write_direct(&mut self, id: InodeId, offset: u64, data: &[u8]) -> Result<usize> {
        self.check_writable()?;
        check_direct(offset, data.len())?;
        let end = check_range(offset, data.len())?;
        let mut inode = self.regular_inode(id)?;
        self.check_change(id, &inode, Change::Write(offset))?;
        self.cache
            .discard_range(id, offset / BLOCK_SIZE..end / BLOCK_SIZE);
        self.reserve(data.len() as u64)?;
        self.write_extents(id, offset, ExtentData::Direct(data))?;
        inode.size = inode.size.max(end);
        let now = Timespec::now();
        inode.mtime = now;
        inode.ctime = now;
        self.put_inode(id, &inode)?;
        Ok(data.len())
    }

    /// Makes page `index` dirty with its stored contents (zeros past the end of the file).
    fn load_page(&mut self, id: InodeId, inode: &InodeRecord, index: u64) -> Result<()> {
        let mut page = [0u8; BS];
        if index * BLOCK_SIZE < inode.size {
            self.read_stored(id, index * BLOCK_SIZE, &mut page)?;
        }
        self.cache.page_mut(id, index).copy_from_slice(&page);
        Ok(())
    }

    /// Writes `data` to newly allocated extents and maps them at `offset`. Direct data is on
    /// the device when this returns; dirty chunks are written behind, overlapping whatever the
    /// caller does next.
    fn write_extents(&mut self, id: InodeId, offset: u64, mut data: ExtentData<'_>) -> Result<()> {
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
    fn record_extent(&mut self, id: InodeId, file_offset: u64, extent: Extent) -> Result<()> {
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
    fn writeback_pages(&mut self, id: InodeId, budget: u64) -> Result<()> {
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

    /// Changes a file's size. Shrinking drops the extents past the end and zeroes the tail of
    /// the last block, so bytes past EOF always read as zeros if the file grows again.
    pub(super) fn truncate(&mut self, id: InodeId, size: u64) -> Result<()> {
        if size > MAX_FILE_SIZE {
            return Err(Error::new(Errno::FBIG, "file too large"));
        }
        let mut inode = self.regular_inode(id)?;
        self.check_change(id, &inode, Change::Resize)?;
        if size < inode.size {
            let tail = size % BLOCK_SIZE;
            let index = size / BLOCK_SIZE;
            if tail != 0 {
                if !self.cache.contains(id, index) {
                    self.reserve(BLOCK_SIZE)?;
                    self.load_page(id, &inode, index)?;
                }
                self.cache.page_mut(id, index)[tail as usize..].fill(0);
            }
            self.cache.discard_from(id, size.div_ceil(BLOCK_SIZE));
            self.punch_extents(id, round_up(size, BLOCK_SIZE), u64::MAX)?;
        }
        inode.size = size;
        let now = Timespec::now();
        inode.mtime = now;
        inode.ctime = now;
        self.put_inode(id, &inode)
    }

    /// Removes the mapping of file bytes `[start, end)`, leaving a hole.
    pub(super) fn punch_extents(&mut self, id: InodeId, start: u64, end: u64) -> Result<()> {
        self.replace_range(id, start, end, None)
    }

    /// Maps `[start, end)` of a file to `new` (or to a hole), splitting the records that
    /// straddle the edges and dropping the references of what is replaced. The new record's
    /// reference is counted first, so an extent it shares with a replaced record is never
    /// freed in between.
    pub(super) fn replace_range(
        &mut self,
        id: InodeId,
        start: u64,
        end: u64,
        new: Option<FileExtent>,
    ) -> Result<()> {
        self.dirty = true;
        if let Some(n) = new.as_ref().filter(|n| n.kind != ExtentKind::Inline) {
            self.adjust_extent_refs(n.disk_start, 1)?;
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
                self.meta().put(
                    table::EXTENT_REFS,
                    &extent_ref_key(n.disk_start, id.subvol, id.ino, start),
                    &[],
                )?;
            }
        }
        Ok(())
    }

    fn put_record(&mut self, id: InodeId, offset: u64, e: &FileExtent) -> Result<()> {
        self.meta().put(
            table::FILE_EXTENTS,
            &key3(id.subvol, id.ino, offset),
            &e.encode(),
        )
    }

    /// Adds a file extent record, with its back reference and count.
    pub(super) fn insert_mapping(
        &mut self,
        id: InodeId,
        offset: u64,
        e: &FileExtent,
    ) -> Result<()> {
        self.put_record(id, offset, e)?;
        if e.kind == ExtentKind::Inline {
            return Ok(());
        }
        self.meta().put(
            table::EXTENT_REFS,
            &extent_ref_key(e.disk_start, id.subvol, id.ino, offset),
            &[],
        )?;
        self.adjust_extent_refs(e.disk_start, 1)
    }

    /// Removes a file extent record, its back reference and its count; the extent goes with
    /// its last reference.
    fn remove_mapping(&mut self, id: InodeId, offset: u64, e: &FileExtent) -> Result<()> {
        self.meta()
            .remove(table::FILE_EXTENTS, &key3(id.subvol, id.ino, offset))?;
        if e.kind == ExtentKind::Inline {
            return Ok(());
        }
        self.meta().remove(
            table::EXTENT_REFS,
            &extent_ref_key(e.disk_start, id.subvol, id.ino, offset),
        )?;
        self.adjust_extent_refs(e.disk_start, -1)
    }

    fn adjust_extent_refs(&mut self, start: u64, delta: i64) -> Result<()> {
        let key = key1(start);
        let meta = self.store.meta();
        let raw = meta.get(table::EXTENTS, &key)?;
        let mut record = ExtentRecord::decode(&raw.ok_or_else(|| {
            Error::corrupt(format!("file extent points at unallocated extent {start}"))
        })?)?;
        record.refs = record
            .refs
            .checked_add_signed(delta)
            .ok_or_else(|| Error::corrupt(format!("extent {start} reference count underflow")))?;
        if record.refs > 0 {
            return meta.put(table::EXTENTS, &key, &record.encode());
        }
        meta.remove(table::EXTENTS, &key)?;
        meta.remove(table::CHECKSUMS, &key)?;
        self.alloc.free(
            meta,
            Extent {
                start,
                len: record.len,
            },
        )
    }

    /// Whether a data extent is referenced by any file other than `owner` (another file, a
    /// clone, a snapshot). A file referencing one extent twice does not share it.
    pub fn extent_shared(&self, extent: u64, owner: InodeId) -> Result<bool> {
        for (k, _) in self.meta().scan_prefix(table::EXTENT_REFS, &key1(extent))? {
            if InodeId::new(key_part(&k, 1)?, key_part(&k, 2)?) != owner {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Bytes of data space a file references (for `st_blocks`), dirty pages included.
    pub(super) fn allocated_bytes(&self, id: InodeId, inode: &InodeRecord) -> Result<u64> {
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
}

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
    /// Another file extent record references the same data extent.
    pub shared: bool,
}

impl Engine {
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
                    let logical = e.disk_start + e.extent_offset;
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
                shared,
            });
        }
        Ok(map)
    }
}
