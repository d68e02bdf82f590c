//! Where a swap area's pages live, behind one trait that is the address-space swap interface
//! (activate, deactivate, read pages, write pages):
//! - a cowfs file, pinned (the swapper writes the device at the pinned offsets) or through
//!   the filesystem (every page goes through the engine);
//! - a host file on this machine's filesystem, with O_DIRECT, after FIEMAP checks;
//! - a block device or raw image;
//! - any storage cowfs's device layer opens, an NBD export among them (remote memory with
//!   `nbdkit memory`, a disk on another host, a Ceph RBD image through rbd-nbd).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cowfs::device::{Access, AlignedBuf, BlockDevice};
use cowfs::{Errno, Error, Filesystem, InodeId, PinnedSwapIo, Result, SwapMode};

use crate::header::PAGE_SIZE;

const PAGE: u64 = PAGE_SIZE as u64;

pub trait Backing: Send + Sync {
    /// The name `swapon --show` prints.
    fn name(&self) -> String;
    /// `file`, `partition`, `cowfs` or `cowfs-fs`.
    fn kind(&self) -> &'static str;
    /// Checks and pins the backing; returns the pages it holds (header page included).
    fn activate(&mut self) -> Result<u64>;
    /// Undoes `activate`.
    fn deactivate(&mut self) -> Result<()>;
    /// Reads whole pages starting at `page`.
    fn read_pages(&self, page: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes whole pages starting at `page`.
    fn write_pages(&self, page: u64, data: &[u8]) -> Result<()>;
    /// Whether the area is a regular file (which may not list bad pages).
    fn is_file(&self) -> bool {
        true
    }
}

fn io_error(context: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(context, &e)
}

/// A file in a cowfs filesystem.
pub struct CowfsFile {
    fs: Filesystem,
    id: InodeId,
    path: String,
    mode: SwapMode,
    active: bool,
    /// Pinned mode: the device ranges of the file, while active.
    pinned: Option<PinnedSwapIo>,
}

impl CowfsFile {
    pub fn new(fs: &Filesystem, path: &str, mode: SwapMode) -> Result<Self> {
        let id = fs.resolve(path)?;
        Ok(CowfsFile {
            fs: fs.clone(),
            id,
            path: path.to_string(),
            mode,
            active: false,
            pinned: None,
        })
    }

    fn pinned(&self) -> Result<&PinnedSwapIo> {
        self.pinned
            .as_ref()
            .ok_or_else(|| Error::invalid("swap area not active"))
    }
}

/// A backing that goes away unpins its file: an area dropped without swapoff (a pager that
/// ends) leaves no pin behind in the engine.
impl Drop for CowfsFile {
    fn drop(&mut self) {
        if std::mem::take(&mut self.active) {
            let _ = self.fs.deactivate_swap(self.id);
        }
    }
}

impl Backing for CowfsFile {
    fn name(&self) -> String {
        self.path.clone()
    }

    fn kind(&self) -> &'static str {
        match self.mode {
            SwapMode::Pinned => "cowfs",
            SwapMode::ThroughFs => "cowfs-fs",
        }
    }

    fn activate(&mut self) -> Result<u64> {
        let map = self.fs.activate_swap(self.id, self.mode)?;
        self.active = true;
        if self.mode == SwapMode::Pinned {
            self.pinned = Some(self.fs.pinned_swap_io(self.id)?);
        }
        Ok(map.pages)
    }

    fn deactivate(&mut self) -> Result<()> {
        self.active = false;
        self.pinned = None;
        self.fs.deactivate_swap(self.id)
    }

    fn read_pages(&self, page: u64, buf: &mut [u8]) -> Result<()> {
        match self.mode {
            SwapMode::ThroughFs => self.fs.swap_read(self.id, page, buf),
            SwapMode::Pinned => self.pinned()?.read_pages(page, buf),
        }
    }

    fn write_pages(&self, page: u64, data: &[u8]) -> Result<()> {
        match self.mode {
            SwapMode::ThroughFs => self.fs.swap_write(self.id, page, data),
            SwapMode::Pinned => self.pinned()?.write_pages(page, data),
        }
    }
}

/// A file on the host's own filesystem, or a block device, read and written with O_DIRECT.
pub struct HostFile {
    path: PathBuf,
    file: Option<File>,
    block_device: bool,
}

impl HostFile {
    pub fn new(path: &Path) -> Self {
        HostFile {
            path: path.to_path_buf(),
            file: None,
            block_device: false,
        }
    }

    fn file(&self) -> Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| Error::invalid("swap area not active"))
    }
}

impl Backing for HostFile {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn kind(&self) -> &'static str {
        if self.block_device {
            "partition"
        } else {
            "file"
        }
    }

    fn is_file(&self) -> bool {
        !self.block_device
    }

    fn activate(&mut self) -> Result<u64> {
        let open = |flags| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(flags)
                .open(&self.path)
        };
        let file = open(libc::O_DIRECT)
            .or_else(|_| open(0))
            .map_err(|e| Error::io(&self.path.display().to_string(), &e))?;
        let meta = file.metadata().map_err(io_error("stat"))?;
        use std::os::unix::fs::FileTypeExt;
        self.block_device = meta.file_type().is_block_device();
        let len = if self.block_device {
            use std::io::Seek;
            (&file)
                .seek(std::io::SeekFrom::End(0))
                .map_err(io_error("size"))?
        } else {
            crate::hostcheck::check_swapfile(&file, meta.len())?;
            meta.len()
        };
        self.file = Some(file);
        Ok(len / PAGE)
    }

    fn deactivate(&mut self) -> Result<()> {
        self.file = None;
        Ok(())
    }

    fn read_pages(&self, page: u64, buf: &mut [u8]) -> Result<()> {
        let mut aligned = AlignedBuf::zeroed(buf.len());
        self.file()?
            .read_exact_at(&mut aligned, page * PAGE)
            .map_err(io_error("swap read"))?;
        buf.copy_from_slice(&aligned);
        Ok(())
    }

    fn write_pages(&self, page: u64, data: &[u8]) -> Result<()> {
        let write = |d: &[u8]| {
            self.file()?
                .write_all_at(d, page * PAGE)
                .map_err(io_error("swap write"))
        };
        if AlignedBuf::is_aligned(data) {
            write(data)
        } else {
            write(&AlignedBuf::from_slice(data))
        }
    }
}

/// A whole device as the swap area, through cowfs's device layer: an NBD export
/// (`nbd://host/export`, `nbd+unix:///export?socket=PATH`), a block device or a raw image.
pub struct DeviceArea {
    address: PathBuf,
    device: Option<Arc<dyn BlockDevice>>,
}

impl DeviceArea {
    pub fn new(address: &Path) -> Self {
        DeviceArea {
            address: address.to_path_buf(),
            device: None,
        }
    }

    fn device(&self) -> Result<&Arc<dyn BlockDevice>> {
        self.device
            .as_ref()
            .ok_or_else(|| Error::invalid("swap area not active"))
    }
}

impl Backing for DeviceArea {
    fn name(&self) -> String {
        self.address.display().to_string()
    }

    fn kind(&self) -> &'static str {
        "partition"
    }

    fn is_file(&self) -> bool {
        false
    }

    fn activate(&mut self) -> Result<u64> {
        let device = cowfs::device::open(&self.address, Access::ReadWrite)
            .map_err(io_error("open the swap area"))?;
        let pages = device.len() / PAGE;
        self.device = Some(device);
        Ok(pages)
    }

    fn deactivate(&mut self) -> Result<()> {
        if let Some(device) = self.device.take() {
            device.flush().map_err(io_error("flush the swap area"))?;
        }
        Ok(())
    }

    fn read_pages(&self, page: u64, buf: &mut [u8]) -> Result<()> {
        self.device()?
            .read_at(page * PAGE, buf)
            .map_err(io_error("swap read"))
    }

    fn write_pages(&self, page: u64, data: &[u8]) -> Result<()> {
        self.device()?
            .write_at(page * PAGE, data)
            .map_err(io_error("swap write"))
    }
}

/// A host file refused for swap.
pub(crate) fn refuse(reason: String) -> Error {
    Error::new(Errno::INVAL, reason)
}

pub(crate) fn raw_fd(file: &File) -> i32 {
    file.as_raw_fd()
}
