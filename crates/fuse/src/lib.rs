//! The FUSE front end: a cowfs image mounted as a directory tree that standard tools, and the
//! kernel, use. The engine decides everything; this crate translates requests (`ops`), gives
//! inodes of every subvolume one node id space (`nodes`), passes file-flag ioctls through
//! (`ioctl`), and runs the mount until it is unmounted or the daemon is told to stop (`daemon`).

pub mod daemon;
mod ioctl;
mod nodes;
mod ops;

use std::io;
use std::path::Path;

use cowfs::Filesystem;
use fuser::{Config, MountOption, SessionACL};

pub use ops::CowfsFuse;

/// How a mount looks to the rest of the system.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// The source column of /proc/mounts: the image or device path.
    pub source: String,
    pub read_only: bool,
    /// Let users other than the one mounting use the mount (the kernel checks permissions
    /// from each inode's mode and owner either way).
    pub allow_other: bool,
}

impl MountOptions {
    fn config(&self) -> Config {
        let mut mount_options = vec![
            MountOption::FSName(self.source.clone()),
            // As a kernel option, so /proc/mounts shows the type as fuse.cowfs.
            MountOption::CUSTOM("subtype=cowfs".into()),
            MountOption::DefaultPermissions,
        ];
        mount_options.push(if self.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        });
        let mut config = Config::default();
        config.mount_options = mount_options;
        config.acl = if self.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        config
    }
}

/// A mount served by a background thread. Dropping it unmounts.
pub struct Mount {
    session: fuser::BackgroundSession,
    fs: Filesystem,
}

impl Mount {
    /// Unmounts, waits for the session to end, and commits everything.
    pub fn unmount(self) -> io::Result<()> {
        self.session.umount_and_join()?;
        self.fs.sync().map_err(io::Error::other)
    }

    /// Waits until something else unmounts the mount, then commits everything.
    pub fn join(self) -> io::Result<()> {
        self.session.join()?;
        self.fs.sync().map_err(io::Error::other)
    }
}

/// Mounts `fs` at `mountpoint` and serves it from a background thread.
pub fn spawn_mount(fs: Filesystem, mountpoint: &Path, options: &MountOptions) -> io::Result<Mount> {
    let session = fuser::spawn_mount(CowfsFuse::new(fs.clone()), mountpoint, &options.config())?;
    Ok(Mount { session, fs })
}
