//! File data as callers see it: buffered reads and writes through the page cache, direct
//! (4 KiB-aligned) reads and writes, truncation, crc32c checksums verified on every read, and
//! reads resolved under the engine's lock to be done without it (`ReadPlan`, for swap-in).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::device::{AlignedBuf, BlockDevice};
use crate::error::{Errno, Error, Result};
use crate::format::{
    round_down, round_up, Compression, ExtentKind, FileExtent, FileKind, InodeRecord, Timespec,
    BLOCK_SIZE,
};
use crate::fs::common::Change;
use crate::fs::common::{Decode, ExtentData, EXTENT_PAGES};
use crate::fs::data::cache::{CHUNK_PAGES, DIRTY_LIMIT};
use crate::fs::data::compress::decompress_extent;
use crate::fs::engine::Engine;
use crate::fs::{InodeId, MAX_FILE_SIZE};

/// Part of a read: file bytes `[from, to)`, found at `within` of `extent`'s bytes.
struct ReadSpan {
    from: u64,
    to: u64,
    within: u64,
    extent: FileExtent,
}

/// A read resolved under the engine's lock, to be done without it: device ranges and the
/// checksums each block must match. Blocks freed after the plan (a rewrite of the same pages,
/// a balance) stay unused until a commit: a read during which a commit made freed space
/// reusable is not trusted, nor one whose checksums fail, and the caller reads again under
/// the lock. A race costs a retry, never wrong data, checksummed or not.
pub(crate) struct ReadPlan {
    device: Arc<dyn BlockDevice>,
    reads: Vec<PlannedRead>,
    reuse_epoch: Arc<AtomicU64>,
    planned_in: u64,
}

/// One device read of a plan: `len` bytes at `physical` into the buffer at `at`; `sums`, one
/// per block, unless the data has no checksums. A compressed extent is read whole into a
/// buffer of its own and decoded (`decode`), and only the wanted part lands at `at`.
struct PlannedRead {
    at: usize,
    physical: u64,
    len: usize,
    sums: Option<Vec<u32>>,
    decode: Option<Decode>,
}

impl PlannedRead {
    /// Whether a piece at buffer offset `at`, device offset `physical` continues this read.
    fn follows(&self, at: usize, physical: u64, sums: &Option<Vec<u32>>) -> bool {
        self.decode.is_none()
            && self.at + self.len == at
            && self.physical + self.len as u64 == physical
            && self.sums.is_some() == sums.is_some()
    }

    /// Whether `data`, as read, matches this read's checksums (when it has any).
    fn verified(&self, data: &[u8]) -> bool {
        self.sums.as_ref().is_none_or(|sums| {
            data.chunks(BS)
                .zip(sums)
                .all(|(block, sum)| crc32c::crc32c(block) == *sum)
        })
    }

    /// Checks `stored`, the compressed extent this read is of, and decodes the wanted bytes
    /// into `buf`; false on a checksum mismatch or an extent that does not decode.
    fn decode_into(&self, e: &Decode, stored: &[u8], buf: &mut [u8]) -> bool {
        self.verified(stored)
            && decompress_extent(e.how, stored, e.ram_len).is_ok_and(|plain| {
                buf[self.at..self.at + e.len].copy_from_slice(&plain[e.within..e.within + e.len]);
                true
            })
    }

    fn extend(&mut self, blocks: usize, sums: Option<Vec<u32>>) {
        self.len += blocks * BS;
        if let (Some(all), Some(more)) = (self.sums.as_mut(), sums) {
            all.extend(more);
        }
    }
}

impl ReadPlan {
    /// A device read of the `sums.len()` blocks at `physical`, each checked against its
    /// checksum, into the buffer at `at`; or, with `decode`, a compressed extent decoded as it
    /// says.
    pub(crate) fn push_checked(
        &mut self,
        at: usize,
        physical: u64,
        sums: Vec<u32>,
        decode: Option<Decode>,
    ) {
        self.reads.push(PlannedRead {
            at,
            physical,
            len: sums.len() * BS,
            sums: Some(sums),
            decode,
        });
    }

    /// Adds the reads of `other` (planned for its own buffer) at `at` bytes into this one's.
    pub(crate) fn append(&mut self, other: ReadPlan, at: usize) {
        self.reads.extend(other.reads.into_iter().map(|mut r| {
            r.at += at;
            r
        }));
    }

    /// Reads into `buf` (holes and preallocated ranges as zeros). False on a device error, a
    /// checksum mismatch, or a commit that made freed space reusable meanwhile, for the caller
    /// to read again under the lock.
    pub(crate) fn read(&self, buf: &mut [u8]) -> bool {
        buf.fill(0);
        let mut rest = &self.reads[..];
        while let Some(first) = rest.first() {
            // Compressed extents side by side on the device (one write stored them so) are
            // read together.
            let together = match first.decode {
                None => 1,
                Some(_) => {
                    1 + rest
                        .windows(2)
                        .take_while(|w| {
                            w[1].decode.is_some()
                                && w[0].physical + w[0].len as u64 == w[1].physical
                        })
                        .count()
                }
            };
            let (run, after) = rest.split_at(together);
            if !self.read_run(run, buf) {
                return false;
            }
            rest = after;
        }
        self.reuse_epoch.load(Ordering::SeqCst) == self.planned_in
    }

    /// Reads planned reads that follow each other on the device with one device read: one
    /// plain read into its place in `buf`, or compressed extents, each then checked and
    /// decoded into its place.
    fn read_run(&self, run: &[PlannedRead], buf: &mut [u8]) -> bool {
        let first = &run[0];
        let Some(_) = &first.decode else {
            let dst = &mut buf[first.at..first.at + first.len];
            return self.device.read_at(first.physical, dst).is_ok() && first.verified(dst);
        };
        let mut stored = AlignedBuf::zeroed(run.iter().map(|r| r.len).sum());
        if self.device.read_at(first.physical, &mut stored).is_err() {
            return false;
        }
        let mut at = 0;
        run.iter().all(|r| {
            let extent = &stored[at..at + r.len];
            at += r.len;
            r.decode
                .as_ref()
                .is_some_and(|e| r.decode_into(e, extent, buf))
        })
    }
}

const BS: usize = BLOCK_SIZE as usize;

fn check_direct(offset: u64, len: usize) -> Result<()> {
    if !offset.is_multiple_of(BLOCK_SIZE) || !(len as u64).is_multiple_of(BLOCK_SIZE) {
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

impl Engine {
    pub(in crate::fs) fn regular_inode(&self, id: InodeId) -> Result<InodeRecord> {
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

    /// Reads file bytes `[offset, offset + buf.len())` as stored (ignoring dirty pages).
    /// Holes and preallocated ranges read as zeros.
    pub(in crate::fs) fn read_stored(
        &self,
        id: InodeId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        buf.fill(0);
        let pieces = self.pieces(id, offset, offset + buf.len() as u64)?;
        let mut i = 0;
        while i < pieces.len() {
            let run = self.device_run(&pieces[i..])?;
            if run > 1 {
                self.read_run(
                    id,
                    &pieces[i..i + run],
                    &mut buf[(pieces[i].from - offset) as usize..],
                )?;
                i += run;
                continue;
            }
            let p = &pieces[i];
            let dst = &mut buf[(p.from - offset) as usize..(p.to - offset) as usize];
            match p.extent.kind {
                ExtentKind::Prealloc => {}
                ExtentKind::Inline => {
                    dst.copy_from_slice(&p.extent.inline_data[p.within as usize..][..dst.len()])
                }
                ExtentKind::Regular if p.extent.compression != Compression::None => {
                    self.read_compressed(id, &p.extent, p.within, p.from, dst)?
                }
                ExtentKind::Regular => self.read_extent(id, &p.extent, p.within, p.from, dst)?,
            }
            i += 1;
        }
        Ok(())
    }

    /// The stored pieces of file bytes `[offset, end)`, in file order; gaps are holes.
    fn pieces(&self, id: InodeId, offset: u64, end: u64) -> Result<Vec<ReadSpan>> {
        Ok(self
            .extents_in(id, offset, end)?
            .into_iter()
            .filter_map(|(off, e)| {
                let (from, to) = (off.max(offset), (off + e.len).min(end));
                (from < to).then(|| ReadSpan {
                    from,
                    to,
                    within: e.extent_offset + (from - off),
                    extent: e,
                })
            })
            .collect())
    }

    /// Resolves a read of file bytes `[offset, offset + len)` to device ranges and the
    /// checksums they must match, for reading without the engine's lock; a compressed extent
    /// is read whole and decoded. None when a piece is inline or not whole blocks of plain
    /// data: such reads go the usual way.
    /// A plan with no reads yet (see `ReadPlan::push_checked` and `ReadPlan::append`).
    pub(crate) fn empty_plan(&self) -> ReadPlan {
        let reuse_epoch = self.alloc.reuse_epoch();
        ReadPlan {
            device: self.device.clone(),
            reads: Vec::new(),
            planned_in: reuse_epoch.load(Ordering::SeqCst),
            reuse_epoch,
        }
    }

    pub(crate) fn plan_read(
        &self,
        id: InodeId,
        offset: u64,
        len: usize,
    ) -> Result<Option<ReadPlan>> {
        let mut reads: Vec<PlannedRead> = Vec::new();
        for p in self.pieces(id, offset, offset + len as u64)? {
            let plain =
                p.extent.kind == ExtentKind::Regular && p.extent.compression == Compression::None;
            let whole = p.within % BLOCK_SIZE == 0 && (p.to - p.from) % BLOCK_SIZE == 0;
            if p.extent.kind == ExtentKind::Prealloc {
                continue;
            }
            if p.extent.kind == ExtentKind::Regular && !plain {
                match self.plan_encoded(&p, offset)? {
                    Some(read) => reads.push(read),
                    None => return Ok(None),
                }
                continue;
            }
            if !plain || !whole {
                return Ok(None);
            }
            let at = (p.from - offset) as usize;
            let physical = self.alloc.physical(p.extent.disk_start + p.within)?;
            let blocks = ((p.to - p.from) / BLOCK_SIZE) as usize;
            let first = (p.within / BLOCK_SIZE) as usize;
            let sums = self.extent_block_checksums(p.extent.disk_start, first..first + blocks)?;
            if sums.as_ref().is_some_and(|sums| sums.len() < blocks) {
                // Fewer checksums than blocks: let the usual read report it.
                return Ok(None);
            }
            match reads.last_mut() {
                Some(last) if last.follows(at, physical, &sums) => last.extend(blocks, sums),
                _ => reads.push(PlannedRead {
                    at,
                    physical,
                    len: blocks * BS,
                    sums,
                    decode: None,
                }),
            }
        }
        // Data being written must be on the device before it is read from there.
        for r in &reads {
            self.writer
                .settle_range(r.physical..r.physical + r.len as u64)?;
        }
        let reuse_epoch = self.alloc.reuse_epoch();
        Ok(Some(ReadPlan {
            device: self.device.clone(),
            reads,
            planned_in: reuse_epoch.load(Ordering::SeqCst),
            reuse_epoch,
        }))
    }

    /// The planned read of the piece `p` of a compressed extent, for a read starting at file
    /// offset `offset`: the whole extent, every block checked, decoded. None when its
    /// checksums are missing or short (the usual read reports it).
    fn plan_encoded(&self, p: &ReadSpan, offset: u64) -> Result<Option<PlannedRead>> {
        let e = &p.extent;
        let sums = self.extent_checksums(e.disk_start)?;
        if sums
            .as_ref()
            .is_none_or(|s| s.len() as u64 != e.disk_len / BLOCK_SIZE)
        {
            return Ok(None);
        }
        Ok(Some(PlannedRead {
            at: (p.from - offset) as usize,
            physical: self.alloc.physical(e.disk_start)?,
            len: e.disk_len as usize,
            sums,
            decode: Some(Decode {
                how: e.compression,
                ram_len: e.ram_len,
                within: p.within as usize,
                len: (p.to - p.from) as usize,
            }),
        }))
    }

    /// A buffered read of `len` bytes at `offset`, planned to run without the engine's lock
    /// (`ReadPlan`): whole blocks of stored data, none of them dirty in the page cache; with
    /// the bytes it reads (short at the end of the file). None for any other read.
    pub(crate) fn plan_file_read(
        &self,
        id: InodeId,
        offset: u64,
        len: usize,
    ) -> Result<Option<(ReadPlan, usize)>> {
        let size = self.regular_inode(id)?.size;
        let n = (len as u64).min(size.saturating_sub(offset));
        if n == 0 || !offset.is_multiple_of(BLOCK_SIZE) || n % BLOCK_SIZE != 0 {
            return Ok(None);
        }
        if self
            .cache
            .has_pages_in(id, offset / BLOCK_SIZE..(offset + n) / BLOCK_SIZE)
        {
            return Ok(None);
        }
        Ok(self
            .plan_read(id, offset, n as usize)?
            .map(|plan| (plan, n as usize)))
    }

    /// How many pieces from the first are whole blocks of plain data, consecutive both in the
    /// file and on the device (so one device read serves them).
    fn device_run(&self, pieces: &[ReadSpan]) -> Result<usize> {
        let mut next: Option<(u64, u64)> = None;
        for (n, p) in pieces.iter().enumerate() {
            let plain =
                p.extent.kind == ExtentKind::Regular && p.extent.compression == Compression::None;
            if !plain || p.within % BLOCK_SIZE != 0 || (p.to - p.from) % BLOCK_SIZE != 0 {
                return Ok(n);
            }
            let at = self.alloc.physical(p.extent.disk_start + p.within)?;
            if next.is_some_and(|(file, device)| file != p.from || device != at) {
                return Ok(n);
            }
            next = Some((p.to, at + (p.to - p.from)));
        }
        Ok(pieces.len())
    }

    /// Reads a run of pieces with one device read into `buf` (which starts at the first
    /// piece), then checks each piece against its own extent's checksums.
    fn read_run(&self, id: InodeId, run: &[ReadSpan], buf: &mut [u8]) -> Result<()> {
        let first = &run[0];
        let len = (run[run.len() - 1].to - first.from) as usize;
        self.device_read(first.extent.disk_start + first.within, &mut buf[..len])?;
        for p in run {
            let at = (p.from - first.from) as usize;
            self.verify_blocks(
                id,
                &p.extent,
                p.within,
                p.from,
                &buf[at..at + (p.to - p.from) as usize],
            )?;
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
    pub(in crate::fs) fn verify_blocks(
        &self,
        id: InodeId,
        e: &FileExtent,
        first: u64,
        file_off: u64,
        blocks: &[u8],
    ) -> Result<()> {
        let first_block = (first / BLOCK_SIZE) as usize;
        let count = blocks.len().div_ceil(BS);
        let Some(sums) =
            self.extent_block_checksums(e.disk_start, first_block..first_block + count)?
        else {
            return Ok(());
        };
        let (at, address) = (round_down(file_off, BLOCK_SIZE), e.disk_start + first);
        self.check_blocks(id, at, address, blocks, &sums)
    }

    /// Checks blocks read for file offset `at` (data address `address`) against `sums`, one
    /// per block; EIO naming the file, the offset and the address of the first that differs.
    pub(in crate::fs) fn check_blocks(
        &self,
        id: InodeId,
        at: u64,
        address: u64,
        blocks: &[u8],
        sums: &[u32],
    ) -> Result<()> {
        for (i, block) in blocks.chunks(BS).enumerate() {
            let expected = sums.get(i).copied();
            let actual = crc32c::crc32c(block);
            if expected != Some(actual) {
                let skip = i as u64 * BLOCK_SIZE;
                return Err(Error::checksum(format!(
                    "checksum mismatch in {} at offset {} (data address {}, expected {:#010x}, found {actual:#010x})",
                    self.path_of(id),
                    at + skip,
                    address + skip,
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
        if end > u64::from(self.state.inline_limit) {
            self.uninline(id, &inode)?;
        }
        let (first, last) = (offset / BLOCK_SIZE, end.div_ceil(BLOCK_SIZE));
        let new_pages = (last - first) - self.cache.pages_in(id, first..last).count() as u64;
        let (from, to) = (first * BLOCK_SIZE, last * BLOCK_SIZE);
        if self.reserve_unless_in_place(id, (from, to), new_pages * BLOCK_SIZE)? {
            // Too full to hold them as dirty pages, but they land in place: out at once.
            return self.write_through(id, offset, data);
        }
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
        self.written_up_to(id, &mut inode, end)?;
        if self.cache.file_pages(id) >= EXTENT_PAGES {
            // A full extent's worth: start writing it now, behind the caller's next writes.
            self.writeback_pages(id, EXTENT_PAGES)?;
        }
        if self.cache.dirty_bytes() > DIRTY_LIMIT {
            self.writeback_all()?;
        }
        Ok(data.len())
    }

    /// A write reached file offset `end`: the size grows to it, and the times move.
    fn written_up_to(&mut self, id: InodeId, inode: &mut InodeRecord, end: u64) -> Result<()> {
        inode.size = inode.size.max(end);
        let now = Timespec::now();
        inode.mtime = now;
        inode.ctime = now;
        self.put_inode(id, inode)
    }

    /// Writes `data` at `offset` straight to the file's blocks, with the rest of its pages
    /// (dirty ones, or as stored) around it; for ranges [`Self::writes_in_place`] accepts.
    fn write_through(&mut self, id: InodeId, offset: u64, data: &[u8]) -> Result<usize> {
        let mut inode = self.regular_inode(id)?;
        let end = offset + data.len() as u64;
        let (from, to) = (round_down(offset, BLOCK_SIZE), round_up(end, BLOCK_SIZE));
        let mut pages = AlignedBuf::zeroed((to - from) as usize);
        self.read_stored(id, from, &mut pages)?;
        for (index, page) in self.cache.pages_in(id, from / BLOCK_SIZE..to / BLOCK_SIZE) {
            let at = (index * BLOCK_SIZE - from) as usize;
            pages[at..at + BS].copy_from_slice(page);
        }
        let at = (offset - from) as usize;
        pages[at..at + data.len()].copy_from_slice(data);
        self.cache
            .discard_range(id, from / BLOCK_SIZE..to / BLOCK_SIZE);
        self.write_extents(id, from, ExtentData::Direct(&pages))?;
        self.written_up_to(id, &mut inode, end)?;
        Ok(data.len())
    }

    /// Reserves `bytes` for writing `[from, to)` of a file; when there is no room, whether
    /// the range lands in place (preallocated space, a NOCOW file's own blocks), which needs
    /// none. ENOSPC when it does not. Ok(false): reserved.
    fn reserve_unless_in_place(
        &mut self,
        id: InodeId,
        (from, to): (u64, u64),
        bytes: u64,
    ) -> Result<bool> {
        match self.reserve(bytes) {
            Ok(()) => Ok(false),
            Err(full) if full.errno() == Errno::NOSPC && self.writes_in_place(id, from, to)? => {
                Ok(true)
            }
            Err(full) => Err(full),
        }
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
        self.settle_inline(id, &inode)?;
        self.cache
            .discard_range(id, offset / BLOCK_SIZE..end / BLOCK_SIZE);
        self.reserve_unless_in_place(id, (offset, end), data.len() as u64)?;
        self.write_extents(id, offset, ExtentData::Direct(data))?;
        self.written_up_to(id, &mut inode, end)?;
        Ok(data.len())
    }

    /// Moves inline data out to a regular extent now (before direct I/O or fallocate).
    pub(in crate::fs) fn settle_inline(&mut self, id: InodeId, inode: &InodeRecord) -> Result<()> {
        self.uninline(id, inode)?;
        if self.cache.has_pages_in(id, 0..1) {
            // Not `writeback`, which would store a small file inline again.
            self.writeback_pages(id, u64::MAX)?;
        }
        Ok(())
    }

    /// Makes page `index` dirty with its stored contents (zeros past the end of the file).
    pub(in crate::fs) fn load_page(
        &mut self,
        id: InodeId,
        inode: &InodeRecord,
        index: u64,
    ) -> Result<()> {
        let mut page = [0u8; BS];
        if index * BLOCK_SIZE < inode.size {
            self.read_stored(id, index * BLOCK_SIZE, &mut page)?;
        }
        self.cache.page_mut(id, index).copy_from_slice(&page);
        Ok(())
    }

    /// Changes a file's size. Shrinking drops the extents past the end and zeroes the tail of
    /// the last block, so bytes past EOF always read as zeros if the file grows again.
    pub(in crate::fs) fn truncate(&mut self, id: InodeId, size: u64) -> Result<()> {
        if size > MAX_FILE_SIZE {
            return Err(Error::new(Errno::FBIG, "file too large"));
        }
        let mut inode = self.regular_inode(id)?;
        self.check_change(id, &inode, Change::Resize)?;
        if size < inode.size {
            let tail = size % BLOCK_SIZE;
            let index = size / BLOCK_SIZE;
            let block = (index * BLOCK_SIZE, (index + 1) * BLOCK_SIZE);
            // A tail in a hole reads as zeros already: no page to write for it.
            let in_hole =
                !self.cache.contains(id, index) && self.holes(id, block.0, block.1)? == [block];
            if tail != 0 && !in_hole {
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
}
