//! Sharing data between files: reflink (clone a range: FICLONE/FICLONERANGE), dedupe (share
//! identical ranges: FIDEDUPERANGE) and copy_file_range (reflink where it can, copy where
//! it must). Shared extents are counted and back-referenced per record, so sharing is exact:
//! when the last other reference goes, the extent is the file's own again.

use crate::error::{Errno, Error, Result};
use crate::format::inode_flags::NOCOW;
use crate::format::{round_up, ExtentKind, InodeRecord, Timespec, BLOCK_SIZE};
use crate::fs::common::Change;
use crate::fs::engine::Engine;
use crate::fs::InodeId;

/// The bytes copied per step when copy_file_range cannot share.
const COPY_CHUNK: u64 = 1 << 20;

/// What a dedupe did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupeOutcome {
    /// The ranges were identical and now share their extents.
    Deduped(u64),
    /// The ranges differ; nothing changed.
    Differs,
}

impl Engine {
    /// Makes `dst[dst_off..dst_off + len]` share `src[src_off..src_off + len]`'s extents.
    /// `len` 0 means to the end of `src`. Returns the bytes cloned.
    pub fn clone_range(
        &mut self,
        src: InodeId,
        src_off: u64,
        dst: InodeId,
        dst_off: u64,
        len: u64,
    ) -> Result<u64> {
        self.check_writable()?;
        let (src_inode, dst_inode) = (self.regular_inode(src)?, self.regular_inode(dst)?);
        let len = if len == 0 {
            src_inode.size.saturating_sub(src_off)
        } else {
            len
        };
        self.check_clone(src, &src_inode, src_off, dst, &dst_inode, dst_off, len)?;
        if len == 0 {
            return Ok(0);
        }
        self.writeback(src)?;
        // Shared extents cannot sit beside inline data.
        self.settle_inline(dst, &dst_inode)?;
        self.writeback(dst)?;
        self.share_extents(src, src_off, dst, dst_off, len)?;
        let mut inode = self.inode(dst)?;
        inode.size = inode.size.max(dst_off + len);
        let now = Timespec::now();
        inode.mtime = now;
        inode.ctime = now;
        self.put_inode(dst, &inode)?;
        Ok(len)
    }

    /// Makes `dst` a copy of all of `src` that shares its extents (FICLONE).
    pub fn clone_file(&mut self, src: InodeId, dst: InodeId) -> Result<()> {
        if src == dst {
            return Err(Error::invalid("cannot clone a file onto itself"));
        }
        let size = self.regular_inode(src)?.size;
        let dst_inode = self.regular_inode(dst)?;
        self.check_change(dst, &dst_inode, Change::Resize)?;
        self.check_nocow_match(src, dst)?;
        self.truncate(dst, 0)?;
        self.clone_range(src, 0, dst, 0, size)?;
        Ok(())
    }

    /// The kernel's checks for FICLONERANGE.
    #[allow(clippy::too_many_arguments)]
    fn check_clone(
        &self,
        src: InodeId,
        src_inode: &InodeRecord,
        src_off: u64,
        dst: InodeId,
        dst_inode: &InodeRecord,
        dst_off: u64,
        len: u64,
    ) -> Result<()> {
        self.check_change(dst, dst_inode, Change::Write(dst_off))?;
        // A pinned swap file's extents must stay its own.
        self.check_not_swap(src)?;
        self.check_nocow_match(src, dst)?;
        let src_end = src_off
            .checked_add(len)
            .ok_or_else(|| Error::invalid("range overflows"))?;
        dst_off
            .checked_add(len)
            .filter(|e| *e <= crate::fs::MAX_FILE_SIZE)
            .ok_or_else(|| Error::new(Errno::FBIG, "file too large"))?;
        if src_end > src_inode.size {
            return Err(Error::invalid(
                "the source range runs past the end of the file",
            ));
        }
        let aligned = |x: u64| x.is_multiple_of(BLOCK_SIZE);
        // An unaligned length is allowed only when it ends at the source's end of file and the
        // destination range reaches (at least) the destination's end.
        let tail_ok =
            aligned(len) || (src_end == src_inode.size && dst_off + len >= dst_inode.size);
        if !aligned(src_off) || !aligned(dst_off) || !tail_ok {
            return Err(Error::invalid("clone ranges must be 4 KiB-aligned"));
        }
        if src == dst && src_off < dst_off + len && dst_off < src_end {
            return Err(Error::invalid("clone ranges in one file overlap"));
        }
        Ok(())
    }

    fn check_nocow_match(&self, src: InodeId, dst: InodeId) -> Result<()> {
        let nocow = |id| Ok::<_, Error>(self.inode(id)?.flags & NOCOW != 0);
        if nocow(src)? != nocow(dst)? {
            return Err(Error::invalid(
                "cannot share data between a NOCOW and a copy-on-write file",
            ));
        }
        Ok(())
    }

    /// Maps `dst`'s range to the extents of `src`'s (written back) range.
    fn share_extents(
        &mut self,
        src: InodeId,
        src_off: u64,
        dst: InodeId,
        dst_off: u64,
        len: u64,
    ) -> Result<()> {
        let end = round_up(src_off + len, BLOCK_SIZE);
        let shift = |at: u64| at - src_off + dst_off;
        self.punch_extents(dst, dst_off, shift(end))?;
        for (off, e) in self.extents_in(src, src_off, end)? {
            let (from, to) = (off.max(src_off), (off + e.len).min(end));
            let piece = e.slice(from - off, to - off);
            if e.kind == ExtentKind::Inline {
                let bytes = piece.inline_data.clone();
                self.write(dst, shift(from), &bytes)?;
            } else {
                self.replace_range(dst, shift(from), shift(to), Some(piece))?;
            }
        }
        Ok(())
    }

    /// Shares `dst`'s range with `src`'s if their bytes are identical (FIDEDUPERANGE).
    pub fn dedupe_range(
        &mut self,
        src: InodeId,
        src_off: u64,
        dst: InodeId,
        dst_off: u64,
        len: u64,
    ) -> Result<DedupeOutcome> {
        self.check_writable()?;
        let (src_inode, dst_inode) = (self.regular_inode(src)?, self.regular_inode(dst)?);
        // As the kernel: a range running past either end is cut to it.
        let len = len
            .min(src_inode.size.saturating_sub(src_off))
            .min(dst_inode.size.saturating_sub(dst_off));
        self.check_clone(src, &src_inode, src_off, dst, &dst_inode, dst_off, len)?;
        if len == 0 {
            return Ok(DedupeOutcome::Deduped(0));
        }
        let mut at = 0;
        while at < len {
            let n = (len - at).min(COPY_CHUNK) as usize;
            let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
            self.read(src, src_off + at, &mut a)?;
            self.read(dst, dst_off + at, &mut b)?;
            if a != b {
                return Ok(DedupeOutcome::Differs);
            }
            at += n as u64;
        }
        self.writeback(src)?;
        self.writeback(dst)?;
        self.share_extents(src, src_off, dst, dst_off, len)?;
        Ok(DedupeOutcome::Deduped(len))
    }

    /// Copies `len` bytes (fewer at the source's end), sharing extents for the block-aligned
    /// middle when both files allow it and copying the rest. Returns the bytes copied.
    pub fn copy_file_range(
        &mut self,
        src: InodeId,
        src_off: u64,
        dst: InodeId,
        dst_off: u64,
        len: u64,
    ) -> Result<u64> {
        self.check_writable()?;
        let size = self.regular_inode(src)?.size;
        let dst_inode = self.regular_inode(dst)?;
        self.check_change(dst, &dst_inode, Change::Write(dst_off))?;
        let len = len.min(size.saturating_sub(src_off));
        if src == dst && src_off < dst_off + len && dst_off < src_off + len {
            return Err(Error::invalid("copy ranges in one file overlap"));
        }
        // Copying from a pinned swap file is allowed; sharing its extents is not.
        let can_share = (src_off % BLOCK_SIZE == dst_off % BLOCK_SIZE)
            && self.check_nocow_match(src, dst).is_ok()
            && self.check_not_swap(src).is_ok();
        let head = if can_share {
            (round_up(src_off, BLOCK_SIZE) - src_off).min(len)
        } else {
            len
        };
        let middle = if can_share {
            (len - head) / BLOCK_SIZE * BLOCK_SIZE
        } else {
            0
        };
        self.copy_bytes(src, src_off, dst, dst_off, head)?;
        if middle > 0 {
            self.clone_range(src, src_off + head, dst, dst_off + head, middle)?;
        }
        let done = head + middle;
        self.copy_bytes(src, src_off + done, dst, dst_off + done, len - done)?;
        Ok(len)
    }

    fn copy_bytes(
        &mut self,
        src: InodeId,
        src_off: u64,
        dst: InodeId,
        dst_off: u64,
        len: u64,
    ) -> Result<()> {
        let mut at = 0;
        while at < len {
            let mut buf = vec![0u8; (len - at).min(COPY_CHUNK) as usize];
            let n = self.read(src, src_off + at, &mut buf)?;
            if n == 0 {
                break;
            }
            self.write(dst, dst_off + at, &buf[..n])?;
            at += n as u64;
        }
        Ok(())
    }
}
