//! A device that starts failing on command, with the errno the test chooses (a disk gives EIO,
//! a full host filesystem under an image ENOSPC, a quota EDQUOT ...), to test that the error is
//! reported and that the engine then refuses to write on unknown state.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::Arc;

use super::BlockDevice;

#[derive(Debug)]
pub struct FaultyDevice {
    inner: Arc<dyn BlockDevice>,
    /// Writes and flushes left before they start to fail; negative means never.
    writes_left: AtomicI64,
    /// The errno failed writes and flushes give.
    write_errno: AtomicI32,
    /// Writes and flushes asked for so far, failed ones included.
    writes_seen: AtomicI64,
    /// Only one write fails, and the device works again after it (a host filesystem that
    /// was full for a moment; a path that failed over).
    fail_once: AtomicBool,
    fail_reads: AtomicBool,
}

impl FaultyDevice {
    pub fn new(inner: Arc<dyn BlockDevice>) -> Self {
        FaultyDevice {
            inner,
            writes_left: AtomicI64::new(-1),
            write_errno: AtomicI32::new(rustix::io::Errno::IO.raw_os_error()),
            writes_seen: AtomicI64::new(0),
            fail_once: AtomicBool::new(false),
            fail_reads: AtomicBool::new(false),
        }
    }

    /// Let `n` more writes or flushes succeed, then fail every one after.
    pub fn fail_writes_after(&self, n: i64) {
        self.writes_left.store(n, Ordering::SeqCst);
    }

    /// Let `n` more writes or flushes succeed, then fail every one after with `errno`.
    pub fn fail_writes_after_with(&self, n: i64, errno: rustix::io::Errno) {
        self.write_errno
            .store(errno.raw_os_error(), Ordering::SeqCst);
        self.fail_once.store(false, Ordering::SeqCst);
        self.fail_writes_after(n);
    }

    /// Let `n` more writes or flushes succeed, fail the next with `errno`, then work again.
    pub fn fail_one_write_after(&self, n: i64, errno: rustix::io::Errno) {
        self.fail_writes_after_with(n, errno);
        self.fail_once.store(true, Ordering::SeqCst);
    }

    /// Writes and flushes asked for so far, failed ones included: the write points a test
    /// can make fail one by one.
    pub fn writes_seen(&self) -> i64 {
        self.writes_seen.load(Ordering::SeqCst)
    }

    pub fn fail_reads(&self, on: bool) {
        self.fail_reads.store(on, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.writes_left.store(-1, Ordering::SeqCst);
        self.fail_reads(false);
    }

    fn write_permitted(&self) -> io::Result<()> {
        self.writes_seen.fetch_add(1, Ordering::SeqCst);
        let left = self.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            if self.fail_once.swap(false, Ordering::SeqCst) {
                self.writes_left.store(-1, Ordering::SeqCst);
            }
            return Err(io::Error::from_raw_os_error(
                self.write_errno.load(Ordering::SeqCst),
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

    /// One write, as on the device it stands for.
    fn write_vectored_at(&self, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        self.write_permitted()?;
        self.inner.write_vectored_at(offset, bufs)
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
