//! A device that starts failing on command, to test that an I/O error is reported and that the
//! engine then refuses to write on unknown state.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use super::BlockDevice;

#[derive(Debug)]
pub struct FaultyDevice {
    inner: Arc<dyn BlockDevice>,
    /// Writes and flushes left before they start to fail; negative means never.
    writes_left: AtomicI64,
    fail_reads: AtomicBool,
}

impl FaultyDevice {
    pub fn new(inner: Arc<dyn BlockDevice>) -> Self {
        FaultyDevice {
            inner,
            writes_left: AtomicI64::new(-1),
            fail_reads: AtomicBool::new(false),
        }
    }

    /// Let `n` more writes or flushes succeed, then fail every one after.
    pub fn fail_writes_after(&self, n: i64) {
        self.writes_left.store(n, Ordering::SeqCst);
    }

    pub fn fail_reads(&self, on: bool) {
        self.fail_reads.store(on, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.writes_left.store(-1, Ordering::SeqCst);
        self.fail_reads(false);
    }

    fn write_permitted(&self) -> io::Result<()> {
        let left = self.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(io::Error::from_raw_os_error(
                rustix::io::Errno::IO.raw_os_error(),
            ));
        }
        if left > 0 {
            self.writes_left.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl BlockDevice for FaultyDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(
                rustix::io::Errno::IO.raw_os_error(),
            ));
        }
        self.inner.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_permitted()?;
        self.inner.write_at(offset, data)
    }

    fn flush(&self) -> io::Result<()> {
        self.write_permitted()?;
        self.inner.flush()
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn resize(&self, len: u64) -> io::Result<()> {
        self.inner.resize(len)
    }
}
