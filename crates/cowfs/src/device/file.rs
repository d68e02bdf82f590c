//! An image file or a block device, with O_DIRECT where the host filesystem supports it
//! (tmpfs does not; then the page cache is used and flush is still fdatasync).

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{check_aligned, AlignedBuf, BlockDevice};

/// The most buffers one pwritev takes (Linux's IOV_MAX).
const IOV_MAX: usize = 1024;

#[derive(Debug)]
pub struct FileDevice {
    file: File,
    len: AtomicU64,
    direct: bool,
    block_device: bool,
}

/// One writer or many readers per image: two engines writing one image would each commit
/// over the other's metadata. The lock goes with the file and is dropped when it closes, so
/// `cowfs umount` knows a daemon has finished its last commit when it can take the lock.
///
/// A lock that is taken is asked for again for a moment before the image is called in use: a
/// process that forks to run a program holds a copy of every descriptor, the image's too,
/// until the program starts, so an image just closed by one thread can stay locked that long
/// by a child another thread forked.
pub(super) fn lock(file: &File, write: bool) -> io::Result<()> {
    use rustix::fs::{flock, FlockOperation};
    const TRIES: u32 = 20;
    const PAUSE: std::time::Duration = std::time::Duration::from_millis(10);
    let op = if write {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    for _ in 1..TRIES {
        match flock(file, op) {
            Err(rustix::io::Errno::WOULDBLOCK) => std::thread::sleep(PAUSE),
            result => return result.map_err(io::Error::from),
        }
    }
    flock(file, op).map_err(|e| {
        if e == rustix::io::Errno::WOULDBLOCK {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "the image is in use (mounted, or open in another cowfs process)",
            )
        } else {
            e.into()
        }
    })
}

impl FileDevice {
    /// Opens an existing image file or block device for reading and writing.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::open_with(path, true, false)
    }

    pub fn open_read_only(path: &Path) -> io::Result<Self> {
        Self::open_with(path, false, false)
    }

    /// Creates (or truncates, when it is a regular file) an image of `len` bytes.
    pub fn create(path: &Path, len: u64) -> io::Result<Self> {
        let dev = Self::open_with(path, true, true)?;
        if dev.block_device {
            if dev.len() < len {
                return Err(io::Error::other(format!(
                    "block device is {} bytes, smaller than the {len} asked for",
                    dev.len()
                )));
            }
        } else {
            dev.resize(0)?;
            dev.resize(len)?;
        }
        Ok(dev)
    }

    fn open_with(path: &Path, write: bool, create: bool) -> io::Result<Self> {
        let open = |flags: i32| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .create(create)
                .truncate(false)
                .custom_flags(flags)
                .open(path)
        };
        let (file, direct) = match open(rustix::fs::OFlags::DIRECT.bits() as i32) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                (open(0)?, false)
            }
            Err(e) => return Err(e),
        };
        lock(&file, write)?;
        let block_device = file.metadata()?.file_type().is_block_device();
        let len = (&file).seek(SeekFrom::End(0))?;
        Ok(FileDevice {
            file,
            len: AtomicU64::new(len),
            direct,
            block_device,
        })
    }

    /// Whether I/O bypasses the host page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }
}

impl BlockDevice for FileDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_aligned(offset, buf.len(), self.len())?;
        if self.direct && !AlignedBuf::is_aligned(buf) {
            let mut bounce = AlignedBuf::zeroed(buf.len());
            self.file.read_exact_at(&mut bounce, offset)?;
            buf.copy_from_slice(&bounce);
            return Ok(());
        }
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_aligned(offset, data.len(), self.len())?;
        if self.direct && !AlignedBuf::is_aligned(data) {
            return self
                .file
                .write_all_at(&AlignedBuf::from_slice(data), offset);
        }
        self.file.write_all_at(data, offset)
    }

    fn write_vectored_at(&self, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        check_aligned(offset, total, self.len())?;
        if self.direct && !bufs.iter().all(|b| AlignedBuf::is_aligned(b)) {
            let mut at = offset;
            for buf in bufs {
                self.write_at(at, buf)?;
                at += buf.len() as u64;
            }
            return Ok(());
        }
        // pwritev may write less than asked: resume from the first unwritten byte.
        let mut pending: Vec<&[u8]> = bufs.to_vec();
        let (mut first, mut at) = (0, offset);
        while first < pending.len() {
            let batch = &pending[first..pending.len().min(first + IOV_MAX)];
            let slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
            let mut written = rustix::io::pwritev(&self.file, &slices, at)?;
            if written == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "pwritev wrote nothing",
                ));
            }
            at += written as u64;
            while written > 0 {
                let head = pending[first];
                let n = written.min(head.len());
                pending[first] = &head[n..];
                written -= n;
                if pending[first].is_empty() {
                    first += 1;
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    fn resize(&self, len: u64) -> io::Result<()> {
        if self.block_device {
            if len > self.len() {
                return Err(io::Error::other("a block device cannot grow"));
            }
            return Ok(());
        }
        self.file.set_len(len)?;
        self.len.store(len, Ordering::Release);
        Ok(())
    }
}
