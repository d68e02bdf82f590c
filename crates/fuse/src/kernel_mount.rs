//! The mount(2) that connects a /dev/fuse session to a directory: type `fuse` over an image
//! file, or `fuseblk` over a block device, the one type whose files the kernel's swapon can
//! map (it asks the daemon for each block with bmap and then writes the device itself). Once
//! the session runs, the mount's readahead is raised to what the daemon serves in one request.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const DEV_FUSE: &str = "/dev/fuse";

/// What the kernel is told about the mount.
pub struct KernelMount<'a> {
    /// The source column: the image path, or the block device for `fuseblk`.
    pub source: &'a str,
    /// Mount as `fuseblk` over `source`, a block device.
    pub block_device: bool,
    pub read_only: bool,
    pub allow_other: bool,
}

impl KernelMount<'_> {
    /// Mounts at `mountpoint`; returns the /dev/fuse connection a session serves.
    pub fn mount(&self, mountpoint: &Path) -> io::Result<OwnedFd> {
        let fuse = OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEV_FUSE)
            .map_err(|e| io::Error::new(e.kind(), format!("{DEV_FUSE}: {e}")))?;
        let root_mode = std::fs::metadata(mountpoint)?.mode();
        let data = self.data(&fuse, root_mode);
        let fstype = if self.block_device { "fuseblk" } else { "fuse" };
        let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
        if self.read_only {
            flags |= libc::MS_RDONLY;
        }
        let c = |s: &[u8]| CString::new(s).map_err(io::Error::other);
        let (source, target) = (
            c(self.source.as_bytes())?,
            c(mountpoint.as_os_str().as_bytes())?,
        );
        let (fstype, data) = (c(fstype.as_bytes())?, c(data.as_bytes())?);
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                flags,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("mount {} on {}: {e}", self.source, mountpoint.display()),
            ));
        }
        Ok(fuse.into())
    }

    fn data(&self, fuse: &File, root_mode: u32) -> String {
        let mut data = format!(
            "fd={},rootmode={:o},user_id={},group_id={},default_permissions,subtype=cowfs",
            fuse.as_raw_fd(),
            root_mode & libc::S_IFMT,
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        if self.allow_other {
            data.push_str(",allow_other");
        }
        if self.block_device {
            data.push_str(&format!(",blksize={}", cowfs::format::BLOCK_SIZE));
        }
        data
    }
}

/// The mount's readahead: four of the daemon's largest requests (`MAX_WRITE`), so a sequential
/// reader has several reads in flight, one on each serving thread, where a window of one
/// request left the device idle while each was copied out (docs/PERF.md). btrfs reads ahead
/// as far on this machine.
const READ_AHEAD: u32 = 4 * crate::served::MAX_WRITE;

/// The kernel caps a FUSE mount's readahead at the default 128 KiB whatever the daemon offers
/// (INIT's reply can only lower it), so sequential reads reach the daemon 128 KiB at a time
/// with little in flight: half the device's rate here (docs/PERF.md). The cap is the mount's
/// backing device info in sysfs, which root may raise: to `READ_AHEAD`. Called with the session
/// serving: the stat waits for INIT, so the raise comes after INIT's reply has set the
/// readahead. Its name is the mount's device number, with `-fuseblk` for a `fuseblk` mount.
pub(crate) fn raise_readahead(mountpoint: &Path, block_device: bool) -> io::Result<()> {
    let device = std::fs::metadata(mountpoint)?.dev();
    let suffix = if block_device { "-fuseblk" } else { "" };
    let knob = format!(
        "/sys/class/bdi/{}:{}{suffix}/read_ahead_kb",
        libc::major(device),
        libc::minor(device)
    );
    std::fs::write(&knob, (READ_AHEAD / 1024).to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("{knob}: {e}")))
}
