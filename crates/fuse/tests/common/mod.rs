//! Helpers shared by the tests that mount cowfs through the kernel.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cowfs::device::{BlockDevice, FileDevice};
use cowfs::{Filesystem, MkfsOptions, OpenOptions};
use cowfs_fuse::{spawn_mount, Mount, MountOptions};

pub const MIB: u64 = 1 << 20;

/// A fresh image and an empty mount point in a scratch directory of /var/tmp (a real
/// filesystem, where O_DIRECT works).
pub struct Scratch {
    _dir: tempfile::TempDir,
    pub image: PathBuf,
    pub at: PathBuf,
}

/// A filesystem served at a mount point.
pub struct Mounted {
    pub fs: Filesystem,
    mount: Mount,
}

impl Scratch {
    /// None, after saying why, when this machine cannot mount (root and /dev/fuse); under
    /// CI=true that is a failure instead.
    pub fn new(size: u64) -> Option<Scratch> {
        let missing = match (
            rustix::process::geteuid().is_root(),
            Path::new("/dev/fuse").exists(),
        ) {
            (false, _) => Some("root"),
            (_, false) => Some("/dev/fuse"),
            _ => None,
        };
        if let Some(what) = missing {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "required in CI: mounting needs {what}"
            );
            eprintln!("skipped: mounting needs {what}");
            return None;
        }
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let (image, at) = (dir.path().join("fs.img"), dir.path().join("mnt"));
        std::fs::create_dir(&at).unwrap();
        let device: Arc<dyn BlockDevice> = Arc::new(FileDevice::create(&image, size).unwrap());
        Filesystem::mkfs(device, &MkfsOptions::default()).unwrap();
        Some(Scratch {
            _dir: dir,
            image,
            at,
        })
    }

    pub fn open(&self) -> Filesystem {
        let device: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&self.image).unwrap());
        Filesystem::open(device, &OpenOptions::default()).unwrap()
    }

    /// Serves `fs` at the mount point, to every user (the kernel checks permissions).
    pub fn serve(&self, fs: Filesystem) -> Mounted {
        let options = MountOptions {
            source: self.image.display().to_string(),
            read_only: false,
            allow_other: true,
            block_device: false,
            threads: cowfs_fuse::DEFAULT_THREADS,
        };
        let mount = spawn_mount(fs.clone(), &self.at, &options, None).unwrap();
        Mounted { fs, mount }
    }

    pub fn mount(&self) -> Mounted {
        self.serve(self.open())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.at.join(name)
    }

    /// fsck of the image (not mounted).
    pub fn assert_clean(&self) {
        let device: Arc<dyn BlockDevice> =
            Arc::new(FileDevice::open_read_only(&self.image).unwrap());
        let report = cowfs::fsck::check(device, &mut |_, _| {});
        assert!(report.is_clean(), "fsck: {:?}", report.problems);
    }
}

impl Mounted {
    /// Unmounts and closes the filesystem, committing everything.
    pub fn unmount(self) {
        self.mount.unmount().unwrap();
        self.fs.unmount().unwrap();
    }
}
