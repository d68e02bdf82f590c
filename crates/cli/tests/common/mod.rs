//! Helpers shared by the tests that run the `cowfs` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const COWFS: &str = env!("CARGO_BIN_EXE_cowfs");

pub fn cowfs(args: &[&str]) -> Output {
    Command::new(COWFS).args(args).output().expect("run cowfs")
}

/// Runs cowfs, which must succeed; its standard output.
pub fn ok(args: &[&str]) -> String {
    let out = cowfs(args);
    assert!(
        out.status.success(),
        "cowfs {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh 64 MiB image in `dir`.
pub fn image(dir: &Path) -> String {
    let img = dir.join("t.img").to_str().unwrap().to_string();
    ok(&["mkfs", &img, "--size", "64M"]);
    img
}

/// Whether this machine has what a test needs, each need with its name. When one is missing
/// the test must not run: under CI=true that is a failure, elsewhere a skip with the reason.
pub fn capable(needs: &[(bool, &str)]) -> bool {
    let Some((_, what)) = needs.iter().find(|(have, _)| !have) else {
        return true;
    };
    let why = format!("this test needs {what}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "required in CI: {why}"
    );
    eprintln!("skipped: {why}");
    false
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

/// Root and /dev/fuse, for tests that mount.
pub fn can_mount() -> bool {
    capable(&[
        (is_root(), "root"),
        (Path::new("/dev/fuse").exists(), "/dev/fuse"),
    ])
}

/// A scratch directory in /var/tmp (a real filesystem, where O_DIRECT works) holding an
/// image path and an empty mount point.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub image: String,
    pub mountpoint: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let image = dir.path().join("t.img").to_str().unwrap().to_string();
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        Scratch {
            dir,
            image,
            mountpoint,
        }
    }

    pub fn mnt(&self) -> &str {
        self.mountpoint.to_str().unwrap()
    }

    /// A path inside the mount point.
    pub fn at(&self, rel: &str) -> String {
        self.mountpoint.join(rel).to_str().unwrap().to_string()
    }
}

/// The daemon's pid in what `cowfs mount` said ("... (daemon pid N, log ...)").
pub fn daemon_pid(said: &str) -> i32 {
    said.split("daemon pid ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no daemon pid in {said:?}"))
}
