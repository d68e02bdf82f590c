//! The storage under the filesystem: a small trait (read, write, flush, length, resize) and its
//! implementations. Every access is in whole 4 KiB blocks at 4 KiB-aligned offsets, which is
//! what O_DIRECT needs and what the crash simulator tears at sector boundaries.

mod aligned;
mod crash;
mod fault;
mod file;
mod gate;
mod memory;
pub mod nbd;
mod overlay;

pub use aligned::AlignedBuf;
pub use crash::{CrashDevice, CrashPoint, Landing, PendingWrite, SECTOR_SIZE};
pub use fault::FaultyDevice;
pub use file::FileDevice;
pub use gate::GatedDevice;
pub use memory::MemoryDevice;
pub use nbd::{NbdAddress, NbdDevice};
pub use overlay::OverlayDevice;

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustix::io::Errno;

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
    /// Writes `data` and makes it durable before returning (a FUA write where the device
    /// has one; otherwise a write and a flush).
    fn write_durable_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_at(offset, data)?;
        self.flush()
    }
    /// Makes every completed write durable (fdatasync).
    fn flush(&self) -> io::Result<()>;
    /// Tells the device that the `(offset, len)` ranges hold nothing anyone will read (TRIM),
    /// and returns once it has taken that in: storage that can use the room (an NBD server's
    /// memory, a thin volume) may take it back. Devices that cannot, ignore it; image files do
    /// too (punching holes in them would fragment the host's file under later writes).
    fn discard(&self, _ranges: &[(u64, u64)]) -> io::Result<()> {
        Ok(())
    }
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

/// A device failure that carries an errno without coming from a system call: a network
/// server's error reply, a lost connection. [`os_errno`] finds its errno as it finds an OS
/// error's, so the engine reports (and stops on) it as on any device error.
#[derive(Debug)]
pub struct DeviceError {
    errno: Errno,
    message: String,
}

impl DeviceError {
    pub fn io(errno: Errno, message: String) -> io::Error {
        let kind = io::Error::from_raw_os_error(errno.raw_os_error()).kind();
        io::Error::new(kind, DeviceError { errno, message })
    }

    /// `err` with `context` before its message, its kind and errno kept (EIO if it has none).
    pub fn wrap(context: &str, err: io::Error) -> io::Error {
        let errno = os_errno(&err).unwrap_or(Errno::IO);
        let message = format!("{context}: {err}");
        io::Error::new(err.kind(), DeviceError { errno, message })
    }
}

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeviceError {}

/// The errno of a device error: the OS's, or a [`DeviceError`]'s.
pub fn os_errno(err: &io::Error) -> Option<Errno> {
    err.raw_os_error()
        .map(Errno::from_raw_os_error)
        .or_else(|| {
            err.get_ref()?
                .downcast_ref::<DeviceError>()
                .map(|d| d.errno)
        })
}

/// How [`open`] opens a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
    /// Read-write, a file made (or truncated) to this many bytes; an existing block device or
    /// export must hold at least as many.
    Create(u64),
}

/// Opens the storage at `address`: an NBD URI (`nbd://`, `nbd+unix://`), else an image file
/// or block device path.
pub fn open(address: &Path, access: Access) -> io::Result<Arc<dyn BlockDevice>> {
    let Some(uri) = address.to_str().filter(|a| NbdAddress::is_uri(a)) else {
        return Ok(match access {
            Access::ReadWrite => Arc::new(FileDevice::open(address)?),
            Access::ReadOnly => Arc::new(FileDevice::open_read_only(address)?),
            Access::Create(len) => Arc::new(FileDevice::create(address, len)?),
        });
    };
    let nbd = NbdAddress::parse(uri).map_err(|e| DeviceError::io(Errno::INVAL, e))?;
    let device = NbdDevice::open(&nbd, access == Access::ReadOnly)?;
    if let Access::Create(len) = access {
        if device.len() < len {
            return Err(DeviceError::io(
                Errno::NOSPC,
                format!(
                    "{uri}: the export holds {} bytes, fewer than the {len} asked for",
                    device.len()
                ),
            ));
        }
    }
    Ok(Arc::new(device))
}
