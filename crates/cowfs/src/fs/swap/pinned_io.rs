//! Pinned-mode swap I/O (the Linux 5.0 design): the swapper reads and writes the device at
//! the pinned offsets itself. The handle reaches only the ranges its file's map names, and
//! only while the file is active; it writes past the filesystem's own device gate, as the
//! kernel's swap I/O does, because the engine keeps these blocks in place and never writes
//! them itself.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::device::BlockDevice;
use crate::error::{Errno, Error, Result};
use crate::format::BLOCK_SIZE;
use crate::fs::types::device_range;
use crate::fs::SwapExtent;

/// Device access bounded to one active pinned swap file.
#[derive(Debug)]
pub struct PinnedSwapIo {
    device: Arc<dyn BlockDevice>,
    extents: Vec<SwapExtent>,
    pages: u64,
    live: Arc<AtomicBool>,
}

impl PinnedSwapIo {
    pub(crate) fn new(
        device: Arc<dyn BlockDevice>,
        (extents, pages, live): (Vec<SwapExtent>, u64, Arc<AtomicBool>),
    ) -> Self {
        PinnedSwapIo {
            device,
            extents,
            pages,
            live,
        }
    }

    /// Reads whole pages starting at `page`.
    pub fn read_pages(&self, page: u64, buf: &mut [u8]) -> Result<()> {
        for (at, range) in self.pieces(page, buf.len())? {
            self.device
                .read_at(at, &mut buf[range])
                .map_err(|e| Error::io("swap read", &e))?;
        }
        Ok(())
    }

    /// Writes whole pages starting at `page`.
    pub fn write_pages(&self, page: u64, data: &[u8]) -> Result<()> {
        for (at, range) in self.pieces(page, data.len())? {
            self.device
                .write_at(at, &data[range])
                .map_err(|e| Error::io("swap write", &e))?;
        }
        Ok(())
    }

    /// The device-contiguous pieces of `len` bytes from `page`: (device offset, buffer range).
    fn pieces(&self, page: u64, len: usize) -> Result<Vec<(u64, Range<usize>)>> {
        if !self.live.load(Ordering::Acquire) {
            return Err(Error::new(Errno::INVAL, "the swapfile is no longer active"));
        }
        let pages = len as u64 / BLOCK_SIZE;
        if !(len as u64).is_multiple_of(BLOCK_SIZE)
            || page.checked_add(pages).is_none_or(|end| end > self.pages)
        {
            return Err(Error::invalid(
                "swap I/O must be whole pages inside the area",
            ));
        }
        let mut pieces = Vec::new();
        let mut done = 0usize;
        while done < len {
            let offset = page * BLOCK_SIZE + done as u64;
            let (at, contiguous) = device_range(&self.extents, offset).ok_or_else(|| {
                Error::invalid(format!("offset {offset} is outside the swap map"))
            })?;
            let n = (contiguous as usize).min(len - done);
            pieces.push((at, done..done + n));
            done += n;
        }
        Ok(pieces)
    }
}
