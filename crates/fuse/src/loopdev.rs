//! Loop devices: an image file seen as a block device, so cowfs can be mounted as `fuseblk`
//! and the kernel can map swap files on it with bmap. The device reads and writes the image
//! with direct I/O, as the daemon does: neither sees the other's data through a page cache.
//! The loop ioctls are defined here by hand (the crates that wrap them need bindgen, and this
//! machine has no libclang).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_CONTROL: &str = "/dev/loop-control";
/// `_IO('L', ...)` numbers of linux/loop.h (they carry no size: their argument is an int, or
/// a pointer the kernel reads by its own struct size).
const LOOP_CTL_GET_FREE: libc::c_ulong = rustix::ioctl::opcode::none(b'L', 0x82) as libc::c_ulong;
const LOOP_CONFIGURE: libc::c_ulong = rustix::ioctl::opcode::none(b'L', 0x0A) as libc::c_ulong;
const LO_FLAGS_READ_ONLY: u32 = 1;
/// Detach when the last user (the mount) closes the device.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
/// Attempts at claiming a free device another process may take first.
const ATTEMPTS: usize = 16;

/// `struct loop_info64` (232 bytes).
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` (LOOP_CONFIGURE, Linux 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// A loop device attached to an image; it detaches by itself once nothing holds it open.
pub struct LoopDevice {
    path: PathBuf,
    _device: File,
}

impl LoopDevice {
    /// Attaches `image` to a free loop device with 4 KiB logical blocks and direct I/O.
    pub fn attach(image: &Path, read_only: bool) -> io::Result<LoopDevice> {
        let backing = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(image)?;
        Self::attach_file(&backing, read_only)
    }

    /// Attaches the file `backing` is open on (the device keeps that open file: its I/O is
    /// that handle's), with 4 KiB logical blocks and direct I/O.
    pub fn attach_file(backing: &File, read_only: bool) -> io::Result<LoopDevice> {
        let control = File::open(LOOP_CONTROL).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{LOOP_CONTROL}: {e} (is the loop module loaded?)"),
            )
        })?;
        for _ in 0..ATTEMPTS {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
            let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if number < 0 {
                return Err(io::Error::last_os_error());
            }
            let path = PathBuf::from(format!("/dev/loop{number}"));
            let device = OpenOptions::new()
                .read(true)
                .write(!read_only)
                .open(&path)?;
            match configure(&device, backing, read_only) {
                Ok(()) => {
                    return Ok(LoopDevice {
                        path,
                        _device: device,
                    })
                }
                // Someone else configured it between our two calls: take the next one.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("no free loop device could be claimed"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn configure(device: &File, backing: &File, read_only: bool) -> io::Result<()> {
    let mut flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
    if read_only {
        flags |= LO_FLAGS_READ_ONLY;
    }
    // SAFETY: an all-zero loop_config is valid: every field is an integer or byte array.
    let mut config: LoopConfig = unsafe { std::mem::zeroed() };
    config.fd = backing.as_raw_fd() as u32;
    config.block_size = cowfs::format::BLOCK_SIZE as u32;
    config.info.flags = flags;
    // SAFETY: `config` is a valid loop_config that outlives the call.
    if unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            LOOP_CONFIGURE,
            &config as *const LoopConfig,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The file a loop device reads and writes, as the kernel names it; None for a device that is
/// not a configured loop device. The kernel adds " (deleted)" when the name it holds was
/// dropped from its cache; an active swap file cannot be unlinked or renamed, so for one the
/// path without it is still the file's.
pub fn backing_file(device: &Path) -> Option<PathBuf> {
    let name = device.file_name()?.to_str()?;
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    let path = text.trim_end_matches('\n');
    Some(PathBuf::from(
        path.strip_suffix(" (deleted)").unwrap_or(path),
    ))
}

/// The loop device over the swap I/O node of the swap file `file`, if one is.
pub fn swap_device_of(file: &Path) -> io::Result<Option<PathBuf>> {
    for entry in std::fs::read_dir("/sys/block")? {
        let device = Path::new("/dev").join(entry?.file_name());
        let backing = backing_file(&device);
        if backing
            .as_deref()
            .and_then(crate::control::swap_io_file)
            .as_deref()
            == Some(file)
        {
            return Ok(Some(device));
        }
    }
    Ok(None)
}
