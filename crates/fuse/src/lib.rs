//! The FUSE front end: a cowfs image mounted as a directory tree that standard tools, and the
//! kernel, use. The engine decides everything; this crate translates requests (`ops`), gives
//! inodes of every subvolume one node id space (`nodes`), passes file-flag ioctls through
//! (`ioctl`), and runs the mount until it is unmounted or the daemon is told to stop (`daemon`).

mod commands;
pub mod control;
mod convert;
pub mod daemon;
mod invalidate;
mod ioctl;
mod kernel_mount;
pub mod loopdev;
mod nodes;
mod ops;
mod served;
mod swap_readahead;
mod swapfile;
pub mod swaps;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cowfs::Filesystem;
use fuser::{Config, SessionACL};

pub use control::CommandRunner;
use invalidate::Invalidator;
use kernel_mount::KernelMount;
pub use loopdev::LoopDevice;
pub use served::CowfsFuse;

/// How a mount looks to the rest of the system.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// The image or device path (the source column of /proc/mounts for a `fuse` mount).
    pub source: String,
    pub read_only: bool,
    /// Let users other than the one mounting use the mount (the kernel checks permissions
    /// from each inode's mode and owner either way).
    pub allow_other: bool,
    /// Attach the image to a loop device and mount as `fuseblk`, so the kernel can swap to
    /// pinned files on it.
    pub block_device: bool,
    /// Threads serving requests: a long request (a defrag, a scrub, a big fsync) holds up
    /// only its own thread.
    pub threads: usize,
    /// The kernel keeps written data in its page cache and writes it back in large requests
    /// (FUSE_WRITEBACK_CACHE): small writes cost no request each, but a write's error (a full
    /// filesystem, an I/O error) surfaces at fsync or close, not at write(2).
    pub writeback_cache: bool,
}

/// Serving threads unless told otherwise (docs/PERF.md has what more or fewer cost).
pub const DEFAULT_THREADS: usize = 4;

/// A mount served by a background thread. Dropping it without [`Mount::unmount`] detaches
/// the mount lazily.
pub struct Mount {
    session: Option<fuser::BackgroundSession>,
    fs: Filesystem,
    mountpoint: PathBuf,
    loop_device: Option<LoopDevice>,
}

impl Mount {
    /// The loop device under a `fuseblk` mount.
    pub fn loop_device(&self) -> Option<&Path> {
        self.loop_device.as_ref().map(LoopDevice::path)
    }

    /// Unmounts, waits for the session to end, and commits everything.
    pub fn unmount(mut self) -> io::Result<()> {
        daemon::unmount(&self.mountpoint)?;
        self.join_session()
    }

    /// Waits until something else unmounts the mount, then commits everything.
    pub fn join(mut self) -> io::Result<()> {
        self.join_session()
    }

    fn join_session(&mut self) -> io::Result<()> {
        if let Some(session) = self.session.take() {
            session.join()?;
        }
        self.fs.sync().map_err(io::Error::other)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.session.is_some() {
            let _ = daemon::unmount_lazily(&self.mountpoint);
        }
    }
}

/// Mounts `fs` at `mountpoint` and serves it from a background thread; `runner` runs the
/// whole-filesystem commands that arrive as control ioctls (none without it).
pub fn spawn_mount(
    fs: Filesystem,
    mountpoint: &Path,
    options: &MountOptions,
    runner: Option<Arc<dyn CommandRunner>>,
) -> io::Result<Mount> {
    let loop_device = match options.block_device {
        true => Some(LoopDevice::attach(
            Path::new(&options.source),
            options.read_only,
        )?),
        false => None,
    };
    let source = match &loop_device {
        Some(device) => device.path().display().to_string(),
        None => options.source.clone(),
    };
    let kernel = KernelMount {
        source: &source,
        block_device: loop_device.is_some(),
        read_only: options.read_only,
        allow_other: options.allow_other,
    };
    let connection = kernel.mount(mountpoint)?;
    let acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let invalidator = Arc::new(Invalidator::new());
    let served = CowfsFuse::new(fs.clone(), invalidator.clone(), runner, options);
    let mut config = Config::default();
    config.n_threads = Some(served.threads);
    config.clone_fd = true;
    let session =
        fuser::Session::from_fd(served, connection, acl, config).and_then(fuser::Session::spawn);
    let session = match session {
        Ok(session) => session,
        Err(e) => {
            let _ = daemon::unmount_lazily(mountpoint);
            return Err(e);
        }
    };
    invalidator.start(session.notifier());
    if let Err(e) = kernel_mount::raise_readahead(mountpoint, kernel.block_device) {
        tracing::info!(
            "readahead of {} left at the kernel's default: {e}",
            mountpoint.display()
        );
    }
    Ok(Mount {
        session: Some(session),
        fs,
        mountpoint: mountpoint.to_path_buf(),
        loop_device,
    })
}
