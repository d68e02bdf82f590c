//! A sparse image on a host filesystem that runs out of space: the image's own writes fail with
//! ENOSPC. The write that meets it, and every fsync after, report it; changes are refused
//! (EROFS); nothing after the last good commit is kept; fsck finds the image clean. Needs root
//! for a small tmpfs (under CI=true its absence fails the test).

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
