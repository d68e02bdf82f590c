//! The command line on an NBD export (nbdkit on a Unix socket the test owns), as a user would
//! use it: mkfs, io, fsck, mkswap, and a FUSE mount that umount waits out; bad addresses and a
//! missing server answered with what is wrong.

mod common;
#[path = "../../../tests/support/nbd_server.rs"]
mod nbd_server;

use common::*;
use nbd_server::NbdServer;

#[test]
fn mkfs_io_fsck_and_mount_over_nbd() {
    let Some(server) = NbdServer::memory("128M") else {
        return;
    };
    let uri = server.uri();
    let made = ok(&["mkfs", &uri]);
    assert!(made.contains("128.0 MiB"), "{made}");
    let refused = cowfs(&["mkfs", &uri]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("already holds a cowfs filesystem"));
    ok(&["io", "-c", "write /f 0 4m 0xab", "-c", "fsync /f", &uri]);
    let checked = ok(&["fsck", &uri]);
    assert!(
        checked.contains("4.0 MiB of data verified: clean"),
        "{checked}"
    );
    let read = ok(&["io", "-c", "read /f 0 4m", &uri]);
    assert!(read.contains("read 4194304/4194304"), "{read}");
    if !can_mount() {
        return;
    }
    let mnt = server.dir().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.to_str().unwrap();
    ok(&["mount", &uri, mnt]);
    let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    std::fs::write(format!("{mnt}/g"), &data).unwrap();
    let busy = cowfs(&["fsck", &uri]);
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("in use"),
        "the mount holds the export"
    );
    // umount returns once the daemon's final commit is done: the export opens at once after.
    ok(&["umount", mnt]);
    let checked = ok(&["fsck", &uri]);
    assert!(checked.contains("clean"), "{checked}");
    ok(&["mount", &uri, mnt]);
    assert_eq!(std::fs::read(format!("{mnt}/g")).unwrap(), data);
    ok(&["umount", mnt]);
}

#[test]
fn mkswap_on_an_export() {
    let Some(server) = NbdServer::memory("16M") else {
        return;
    };
    let made = ok(&["mkswap", &server.uri()]);
    assert!(made.contains("Setting up swapspace version 1"), "{made}");
}

#[test]
fn bad_addresses_and_missing_servers_are_named() {
    let out = cowfs(&["fsck", "nbd+unix:///x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("needs ?socket=PATH"),
        "{err}"
    );
    let out = cowfs(&["fsck", "nbd+unix:///x?socket=/nonexistent/nbd.sock"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("/nonexistent/nbd.sock"),
        "{err}"
    );
    assert!(err.contains("No such file or directory"), "{err}");
    let mnt = tempfile::tempdir().unwrap();
    let mnt = mnt.path().to_str().unwrap();
    let out = cowfs(&["mount", "nbd+unix:///x?socket=/s", mnt, "--blkdev"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--blkdev needs a local image"),
        "{err}"
    );
}
