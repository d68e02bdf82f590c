//! Interoperation with util-linux and the Linux kernel: a header made by `mkswap` is read here,
//! and a header written here is accepted by the real `swapon`. The kernel half needs root;
//! under CI=true a missing capability fails the test, elsewhere it is skipped with the reason.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use swap::{SwapHeader, PAGE_SIZE};

const PAGES: u64 = 4096;

fn capability_missing(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("required in CI: {why}");
    }
    eprintln!("skipped: {why}");
}

fn zero_file(path: &std::path::Path, pages: u64) {
    let mut f = fs::File::create(path).unwrap();
    f.write_all(&vec![0u8; (pages as usize) * PAGE_SIZE])
        .unwrap();
    f.sync_all().unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_header_made_by_util_linux_mkswap_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("swap");
    zero_file(&path, PAGES);
    let made = Command::new("mkswap")
        .args([
            "-L",
            "fromutil",
            "-U",
            "01234567-89ab-cdef-0123-456789abcdef",
        ])
        .arg(&path)
        .output();
    match made {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return capability_missing(&format!(
                "mkswap failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
        Err(e) => return capability_missing(&format!("util-linux mkswap is not installed: {e}")),
    }
    let page = fs::read(&path).unwrap();
    let header = SwapHeader::decode(&page[..PAGE_SIZE], PAGES, true).unwrap();
    assert_eq!(header.pages, PAGES);
    assert_eq!(header.label, "fromutil");
    assert_eq!(header.uuid[..4], [0x01, 0x23, 0x45, 0x67]);
}

#[test]
fn a_header_made_here_is_accepted_by_the_kernel() {
    if !rustix::process::geteuid().is_root() {
        return capability_missing("swapon(2) needs root");
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("swap");
    zero_file(&path, PAGES);
    let header = SwapHeader::new(PAGES, [0x42; 16], "cowfs").unwrap();
    let mut image = fs::read(&path).unwrap();
    image[..PAGE_SIZE].copy_from_slice(&header.encode());
    fs::write(&path, &image).unwrap();
    let on = Command::new("swapon").arg(&path).output().unwrap();
    if !on.status.success() {
        return capability_missing(&format!(
            "swapon refused: {}",
            String::from_utf8_lossy(&on.stderr)
        ));
    }
    let listed = fs::read_to_string("/proc/swaps").unwrap();
    let off = Command::new("swapoff").arg(&path).status().unwrap();
    assert!(listed.contains(path.to_str().unwrap()), "{listed}");
    assert!(off.success());
}
