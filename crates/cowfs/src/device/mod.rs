//! The storage under the filesystem: a small trait (read, write, flush, length, resize) and its
//! implementations. Every access is in whole 4 KiB blocks at 4 KiB-aligned offsets, which is
//! what O_DIRECT needs and what the crash simulator tears at sector boundaries.

mod aligned;
mod crash;
mod fault;
mod file;
mod gate;
mod memory;
mod overlay;

pub use aligned::AlignedBuf;
pub use crash::{CrashDevice, CrashPoint, Landing, PendingWrite, SECTOR_SIZE};
pub use fault::FaultyDevice;
pub use file::FileDevice;
pub use gate::GatedDevice;
pub use memory::MemoryDevice;
pub use overlay::OverlayDevice;

use std::io;

/// The unit of device I/O: every offset and length given to a [`BlockDevice`] is a multiple.
pub const BLOCK_SIZE: u64 = 4096;

/// Storage the filesystem lives on: an image file, a block device, memory, or a simulator.
///
/// Offsets and lengths are multiples of [`BLOCK_SIZE`]. Buffers need no particular alignment
/// in memory; implementations that need it (O_DIRECT) copy through an aligned bounce buffer
/// when given an unaligned one, so hot paths pass an [`AlignedBuf`].
#[expect(
    clippy::len_without_is_empty,
    reason = "the size of a device in bytes; a device of none is refused at open, never asked about"
)]
pub trait BlockDevice: Send + Sync + std::fmt::Debug {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Writes `bufs` back to back from `offset` (one pwritev where the device can).
    fn write_vectored_at(&self, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        let mut at = offset;
        for buf in bufs {
            self.write_at(at, buf)?;
            at += buf.len() as u64;
        }
        Ok(())
    }
    /// Makes every completed write durable (fdatasync).
    fn flush(&self) -> io::Result<()>;
    fn len(&self) -> u64;
    /// Grows or shrinks the storage; new space reads as zeros.
    fn resize(&self, len: u64) -> io::Result<()>;
}

pub(crate) fn check_aligned(offset: u64, len: usize, device_len: u64) -> io::Result<()> {
    if !offset.is_multiple_of(BLOCK_SIZE) || !(len as u64).is_multiple_of(BLOCK_SIZE) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unaligned device access at {offset} length {len}"),
        ));
    }
    if offset
        .checked_add(len as u64)
        .is_none_or(|end| end > device_len)
    {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("device access at {offset} length {len} past the end ({device_len})"),
        ));
    }
    Ok(())
}
