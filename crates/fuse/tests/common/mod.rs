//! Helpers shared by the tests that mount cowfs through the kernel.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
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

    /// Serves `fs` at the mount point, to every user (the kernel checks permissions); with
    /// `writeback_cache`, the kernel caches writes (MountOptions::writeback_cache).
    pub fn serve(&self, fs: Filesystem, writeback_cache: bool) -> Mounted {
        let options = mount_options(&self.image, writeback_cache);
        let mount = spawn_mount(fs.clone(), &self.at, &options, None).unwrap();
        Mounted { fs, mount }
    }

    pub fn mount(&self) -> Mounted {
        self.serve(self.open(), false)
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

/// Where a child process serves a parent test's image: "image\nmount point\nwriteback cache".
const SERVE_ENV: &str = "COWFS_TEST_SERVE";

/// A mount served by a child process (see [`Scratch::serve_apart`]).
pub struct ServedApart {
    child: Option<std::process::Child>,
    at: PathBuf,
}

impl Scratch {
    /// Serves the image from a child process: this test binary again, running only the
    /// ignored test `helper`, which calls [`serve_for_parent`]. A client that maps files
    /// must not share its address space with its server: the kernel writes a shared
    /// mapping's dirty pages back at munmap with the address space locked, and a serving
    /// thread that then allocates waits for that lock. Returns once the mount is there.
    pub fn serve_apart(&self, helper: &str, writeback_cache: bool) -> ServedApart {
        let spec = format!(
            "{}\n{}\n{writeback_cache}",
            self.image.display(),
            self.at.display()
        );
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([helper, "--exact", "--ignored", "--nocapture"])
            .env(SERVE_ENV, spec)
            .spawn()
            .unwrap();
        let unmounted = std::fs::metadata(&self.at).unwrap().dev();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::metadata(&self.at).unwrap().dev() == unmounted {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the serving child ended"
            );
            assert!(std::time::Instant::now() < deadline, "never mounted");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        ServedApart {
            child: Some(child),
            at: self.at.clone(),
        }
    }
}

impl ServedApart {
    /// Unmounts; the child commits everything and must end well.
    pub fn unmount(mut self) {
        cowfs_fuse::daemon::unmount(&self.at).unwrap();
        let status = self.child.take().unwrap().wait().unwrap();
        assert!(status.success(), "the serving child: {status}");
    }
}

impl Drop for ServedApart {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = cowfs_fuse::daemon::unmount_lazily(&self.at);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The child's side of [`Scratch::serve_apart`]: serves the image it was given until the
/// parent unmounts it, then commits. Nothing when run by itself.
pub fn serve_for_parent() {
    let Ok(spec) = std::env::var(SERVE_ENV) else {
        return;
    };
    let mut lines = spec.lines();
    let (image, at) = (lines.next().unwrap(), lines.next().unwrap());
    let writeback_cache = lines.next() == Some("true");
    let device: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(Path::new(image)).unwrap());
    let fs = Filesystem::open(device, &OpenOptions::default()).unwrap();
    let options = mount_options(Path::new(image), writeback_cache);
    let mount = spawn_mount(fs.clone(), Path::new(at), &options, None).unwrap();
    mount.join().unwrap();
    fs.unmount().unwrap();
}

/// A read-write mount of `image` open to every user (the kernel checks permissions).
fn mount_options(image: &Path, writeback_cache: bool) -> MountOptions {
    MountOptions {
        source: image.display().to_string(),
        read_only: false,
        allow_other: true,
        block_device: false,
        threads: cowfs_fuse::DEFAULT_THREADS,
        writeback_cache,
    }
}
