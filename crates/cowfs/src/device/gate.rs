//! A device whose writes can be shut off for good. The filesystem writes through one: when the
//! device fails a write, the filesystem closes the gate, so nothing more reaches the image (no
//! write-behind queued after the failure, no tidy-up of the metadata store as it closes) and
//! the image stays exactly at its last good commit.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::BlockDevice;

#[derive(Debug)]
pub struct GatedDevice {
    inner: Arc<dyn BlockDevice>,
    closed: AtomicBool,
}

impl GatedDevice {
    pub fn new(inner: Arc<dyn BlockDevice>) -> Self {
        GatedDevice {
            inner,
            closed: AtomicBool::new(false),
        }
    }

    /// Refuses every write, flush and resize from now on; reads go on.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// The device behind the gate.
    pub fn inner(&self) -> &Arc<dyn BlockDevice> {
        &self.inner
    }

    fn open(&self) -> io::Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(
                rustix::io::Errno::ROFS.raw_os_error(),
            ));
        }
        Ok(())
    }
}

impl BlockDevice for GatedDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.open()?;
        self.inner.write_at(offset, data)
    }

    fn write_vectored_at(&self, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        self.open()?;
        self.inner.write_vectored_at(offset, bufs)
    }

    fn write_durable_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.open()?;
        self.inner.write_durable_at(offset, data)
    }

    fn flush(&self) -> io::Result<()> {
        self.open()?;
        self.inner.flush()
    }

    fn discard(&self, ranges: &[(u64, u64)]) -> io::Result<()> {
        self.open()?;
        self.inner.discard(ranges)
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn resize(&self, len: u64) -> io::Result<()> {
        self.open()?;
        self.inner.resize(len)
    }
}
