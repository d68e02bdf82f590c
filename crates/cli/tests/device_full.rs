//! A sparse image on a host filesystem that runs out of space: the image's own writes fail with
//! ENOSPC. The write that meets it, and every fsync after, report it; changes are refused
//! (EROFS); nothing after the last good commit is kept; fsck finds the image clean. Through
//! `cowfs io` and through the mount. Needs root for a small tmpfs, and /dev/fuse to mount
//! (under CI=true their absence fails the test).

mod common;

use std::process::Command;

use common::*;

/// A tmpfs of `size` mounted on a scratch directory, unmounted on drop.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn new(size: &str) -> SmallTmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs");
        SmallTmpfs { dir }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_host_filesystem_stops_cowfs_at_its_last_good_commit() {
    if !capable(&[(is_root(), "root (to mount a small tmpfs)")]) {
        return;
    }
    let tmpfs = SmallTmpfs::new("160M");
    let img = tmpfs.dir.path().join("img").to_str().unwrap().to_string();
    ok(&["mkfs", &img, "--size", "1G"]);
    ok(&[
        "io",
        &img,
        "-c",
        "write /kept 0 1M 0x22",
        "-c",
        "fsync /kept",
    ]);
    let out = cowfs(&[
        "io",
        &img,
        "-c",
        "write /big 0 256M 0x11",
        "-c",
        "fsync /big",
        "-c",
        "mkdir /after",
        "-c",
        "fsync /after",
    ]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("write: No space left on device"), "{text}");
    assert!(text.contains("fsync: No space left on device"), "{text}");
    assert!(text.contains("mkdir: Read-only file system"), "{text}");
    assert!(!text.contains("fsync: No such file"), "{text}");
    let fsck = ok(&["fsck", &img]);
    assert!(fsck.contains("clean"), "{fsck}");
    assert_eq!(
        ok(&["ls", &img, "/"]),
        "kept\n",
        "nothing after the last commit"
    );
    ok(&["io", &img, "-c", "verify /kept 0 1M 0x22"]);
}

/// A 1 GiB image holding /kept on a 160 MiB tmpfs, mounted with `options`; None (after saying
/// why) where this machine cannot mount.
struct FullMount {
    tmpfs: SmallTmpfs,
    img: String,
    mnt: std::path::PathBuf,
}

impl FullMount {
    fn new(options: &[&str]) -> Option<FullMount> {
        if !can_mount() || !capable(&[(is_root(), "root (to mount a small tmpfs)")]) {
            return None;
        }
        let tmpfs = SmallTmpfs::new("160M");
        let img = tmpfs.dir.path().join("img").to_str().unwrap().to_string();
        let mnt = tmpfs.dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        ok(&["mkfs", &img, "--size", "1G"]);
        ok(&["io", &img, "-c", "write /kept 0 1M 0x22"]);
        let mut args = vec!["mount", &img, mnt.to_str().unwrap(), "--no-blkdev"];
        args.extend(options);
        ok(&args);
        Some(FullMount { tmpfs, img, mnt })
    }

    /// After the device filled: changes are EROFS and reads go on; after the unmount the image
    /// is at its last good commit, clean.
    fn finish(self) {
        let change = std::fs::create_dir(self.mnt.join("after")).unwrap_err();
        assert_eq!(change.raw_os_error(), Some(libc::EROFS), "{change}");
        assert_eq!(
            std::fs::read(self.mnt.join("kept")).unwrap(),
            vec![0x22u8; 1 << 20]
        );
        let _ = cowfs(&["umount", self.mnt.to_str().unwrap()]);
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mnt)
            .stderr(std::process::Stdio::null())
            .status();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(ok(&["fsck", &self.img]).contains("clean"));
        assert!(ok(&["ls", &self.img, "/"]).contains("kept"));
        drop(self.tmpfs);
    }
}

/// The same through the mount: write(2) meets ENOSPC, fsync(2) after it fails too (never 0),
/// changes are EROFS, reads go on; after the unmount the image is at its last good commit.
#[test]
fn through_the_mount_fsync_never_succeeds_after_a_failed_write() {
    let Some(full) = FullMount::new(&[]) else {
        return;
    };
    let mut big = std::fs::File::create(full.mnt.join("big")).unwrap();
    let chunk = vec![0x11u8; 1 << 20];
    let mut written = 0u64;
    let failed = loop {
        // Writes only: the failure surfaces in a write(2) (written behind, or at the dirty
        // limit), as the issue saw it, and the fsync after it is what must not succeed.
        match std::io::Write::write_all(&mut big, &chunk) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 1024, "the tmpfs never filled");
    };
    assert!(
        [Some(libc::ENOSPC), Some(libc::EIO)].contains(&failed.raw_os_error()),
        "{failed}"
    );
    let again = big
        .sync_all()
        .expect_err("fsync after a failed write must fail");
    assert!(
        [Some(libc::ENOSPC), Some(libc::EIO)].contains(&again.raw_os_error()),
        "{again}"
    );
    drop(big);
    full.finish();
}

/// The same with the kernel caching writes (`-o writeback_cache`): every write(2) lands in the
/// page cache, so the device's refusal shows at fsync and close instead, never as success;
/// nothing hangs, changes are EROFS, and the image is at its last good commit.
#[test]
fn through_the_writeback_cache_fsync_reports_the_full_device() {
    let Some(full) = FullMount::new(&["-o", "writeback_cache"]) else {
        return;
    };
    let mut big = std::fs::File::create(full.mnt.join("big")).unwrap();
    let chunk = vec![0x11u8; 1 << 20];
    for _ in 0..400 {
        if std::io::Write::write_all(&mut big, &chunk).is_err() {
            break;
        }
    }
    let failed = big.sync_all().expect_err("fsync after the device filled");
    let refused = [libc::ENOSPC, libc::EIO, libc::EROFS].map(Some);
    assert!(refused.contains(&failed.raw_os_error()), "{failed}");
    drop(big);
    full.finish();
}
