//! POSIX and Linux behaviour through the mount that a conformance suite's generic tests found
//! wrong (issue 10, section 6), each checked as those tests check it. Needs root and
//! /dev/fuse (under CI=true a missing capability fails the test).

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

mod common;

use common::{Scratch, MIB};

/// rewinddir(3) shows names added after opendir(3) (generic/471).
#[test]
fn rewinddir_sees_names_added_after_opendir() {
    let Some(scratch) = Scratch::new(64 * MIB) else {
        return;
    };
    let mounted = scratch.mount();
    let dir = scratch.path("d");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("before"), b"").unwrap();
    let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    let names = |stream: *mut libc::DIR| {
        let mut names = Vec::new();
        // SAFETY: readdir on an open stream; each entry's name is NUL-terminated.
        unsafe {
            loop {
                let entry = libc::readdir(stream);
                if entry.is_null() {
                    return names;
                }
                let name = std::ffi::CStr::from_ptr((*entry).d_name.as_ptr());
                names.push(name.to_string_lossy().into_owned());
            }
        }
    };
    // SAFETY: opendir of a NUL-terminated path; the stream is closed below.
    let stream = unsafe { libc::opendir(path.as_ptr()) };
    assert!(!stream.is_null());
    assert!(names(stream).contains(&"before".to_string()));
    fs::write(dir.join("after"), b"").unwrap();
    // SAFETY: the stream is open.
    unsafe { libc::rewinddir(stream) };
    let again = names(stream);
    // SAFETY: closes the stream opened above.
    unsafe { libc::closedir(stream) };
    assert!(again.contains(&"after".to_string()), "{again:?}");
    mounted.unmount();
    scratch.assert_clean();
}

fn flags(file: &File, set: Option<u32>) -> std::io::Result<u32> {
    let mut value = set.unwrap_or(0);
    let request = if set.is_some() {
        libc::FS_IOC_SETFLAGS
    } else {
        libc::FS_IOC_GETFLAGS
    };
    // SAFETY: the ioctl reads or writes one int.
    match unsafe { libc::ioctl(file.as_raw_fd(), request, &mut value) } {
        0 => Ok(value),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// chattr changes ctime, and stat shows it at once (generic/277); an append-only file refuses
/// chmod, explicit times and new links with EPERM, but takes a touch (generic/683-685's
/// neighbours); FS_XFLAG_DAX is refused, not dropped.
#[test]
fn flags_ctime_append_only_and_unsupported_xflags() {
    let Some(scratch) = Scratch::new(64 * MIB) else {
        return;
    };
    let mounted = scratch.mount();
    let path = scratch.path("log");
    fs::write(&path, b"one").unwrap();
    let before = fs::metadata(&path).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let file = File::open(&path).unwrap();
    const NOATIME: u32 = 0x80;
    const APPEND: u32 = 0x20;
    flags(&file, Some(NOATIME)).unwrap();
    let after = fs::metadata(&path).unwrap();
    assert!(
        (after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()),
        "chattr moved ctime"
    );
    flags(&file, Some(APPEND)).unwrap();
    let eperm = |r: std::io::Result<()>| {
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EPERM));
    };
    eperm(fs::set_permissions(
        &path,
        fs::Permissions::from_mode(0o600),
    ));
    eperm(fs::hard_link(&path, scratch.path("again")));
    let set_times = |times: [libc::timespec; 2]| {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path and two timespecs.
        match unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    };
    let chosen = libc::timespec {
        tv_sec: 1000,
        tv_nsec: 0,
    };
    eperm(set_times([chosen, chosen]));
    let now = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_NOW,
    };
    set_times([now, now]).unwrap();
    flags(&file, Some(0)).unwrap();
    // struct fsxattr with FS_XFLAG_DAX (0x8000).
    const FS_IOC_FSSETXATTR: libc::c_ulong =
        rustix::ioctl::opcode::write::<[u8; 28]>(b'X', 32) as libc::c_ulong;
    let mut xattr = [0u8; 28];
    xattr[..4].copy_from_slice(&0x8000u32.to_ne_bytes());
    // SAFETY: the ioctl reads a 28-byte struct fsxattr.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FSSETXATTR, xattr.as_mut_ptr()) };
    let e = std::io::Error::last_os_error();
    assert!(
        rc < 0 && e.raw_os_error() == Some(libc::EOPNOTSUPP),
        "DAX: {e}"
    );
    drop(file);
    mounted.unmount();
    scratch.assert_clean();
}

/// fallocate, punch and zero range by a caller without CAP_FSETID drop set-user-id, and
/// set-group-id with group execution (generic/683-685).
#[test]
fn fallocate_by_an_unprivileged_caller_drops_setgid() {
    let Some(scratch) = Scratch::new(64 * MIB) else {
        return;
    };
    let mounted = scratch.mount();
    let parent = scratch.at.parent().unwrap();
    fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
    for args in [
        vec!["-l", "1M"],
        vec!["-p", "-o", "0", "-l", "4096"],
        vec!["-z", "-o", "0", "-l", "8192"],
    ] {
        let path = scratch.path("f");
        fs::write(&path, vec![1u8; 65536]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o6777)).unwrap();
        // As nobody, with no supplementary groups (std drops them when root sets a uid).
        let status = Command::new("fallocate")
            .uid(65534)
            .gid(65534)
            .args(&args)
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "fallocate {args:?} as nobody");
        let mode = fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o0777, "fallocate {args:?}: mode {mode:o}");
        fs::remove_file(&path).unwrap();
    }
    mounted.unmount();
    scratch.assert_clean();
}

/// An empty directory renamed over while open keeps answering fstat (generic/035).
#[test]
fn a_directory_replaced_while_open_still_answers_fstat() {
    let Some(scratch) = Scratch::new(64 * MIB) else {
        return;
    };
    let mounted = scratch.mount();
    fs::create_dir(scratch.path("a")).unwrap();
    fs::create_dir(scratch.path("b")).unwrap();
    let open = File::open(scratch.path("b")).unwrap();
    fs::rename(scratch.path("a"), scratch.path("b")).unwrap();
    let meta = open.metadata().unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.nlink(), 0);
    drop(open);
    mounted.unmount();
    scratch.assert_clean();
}

/// A read-only mount unmounts cleanly: there is nothing to commit.
#[test]
fn a_read_only_mount_unmounts_cleanly() {
    let Some(scratch) = Scratch::new(64 * MIB) else {
        return;
    };
    let opts = cowfs::OpenOptions {
        read_only: true,
        ..cowfs::OpenOptions::default()
    };
    let device =
        std::sync::Arc::new(cowfs::device::FileDevice::open_read_only(&scratch.image).unwrap());
    let fs = cowfs::Filesystem::open(device, &opts).unwrap();
    let options = cowfs_fuse::MountOptions {
        source: scratch.image.display().to_string(),
        read_only: true,
        allow_other: true,
        block_device: false,
        threads: cowfs_fuse::DEFAULT_THREADS,
        writeback_cache: false,
    };
    let mount = cowfs_fuse::spawn_mount(fs.clone(), &scratch.at, &options, None).unwrap();
    assert!(fs::read_dir(&scratch.at).unwrap().next().is_none());
    mount.unmount().unwrap();
    fs.unmount().unwrap();
}

/// A read through the mount moves the access time (relatime, the default; generic/003).
#[test]
fn reads_through_the_mount_move_the_access_time() {
    let Some(scratch) = Scratch::new(64 * MIB) else {
        return;
    };
    let mounted = scratch.mount();
    let path = scratch.path("f");
    fs::write(&path, b"data").unwrap();
    let written = fs::metadata(&path).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(fs::read(&path).unwrap(), b"data");
    // Past the kernel's attribute cache.
    std::thread::sleep(Duration::from_millis(1100));
    let read = fs::metadata(&path).unwrap();
    assert!(
        (read.atime(), read.atime_nsec()) > (written.mtime(), written.mtime_nsec()),
        "the read moved the access time past the write"
    );
    mounted.unmount();
    scratch.assert_clean();
}

/// name_to_handle_at / open_by_handle_at (generic/426, 467, 477; what NFS export needs): a
/// handle opens its file or directory while the mount lives, even after the kernel forgot
/// it, and is stale under another mount, never another file.
#[test]
fn file_handles_open_their_file_and_go_stale_with_the_mount() {
    let Some(scratch) = Scratch::new(64 * MIB) else {
        return;
    };
    let mounted = scratch.mount();
    fs::create_dir(scratch.path("d")).unwrap();
    fs::write(scratch.path("d/f"), b"handled").unwrap();
    let handle = |path: &std::path::Path| {
        // struct file_handle: bytes, type, then up to 128 bytes of handle.
        let mut buf = [0u8; 8 + 128];
        buf[..4].copy_from_slice(&128u32.to_ne_bytes());
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        let mut mount_id = 0;
        // SAFETY: a NUL-terminated path, a file_handle buffer of the size it states.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_name_to_handle_at,
                libc::AT_FDCWD,
                c.as_ptr(),
                buf.as_mut_ptr(),
                &mut mount_id,
                0,
            )
        };
        assert_eq!(
            rc,
            0,
            "name_to_handle_at: {}",
            std::io::Error::last_os_error()
        );
        buf
    };
    let open = |mut handle: [u8; 136], flags: i32| {
        let root = File::open(&scratch.at).unwrap();
        // SAFETY: a descriptor on the mount and a file_handle made above.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                root.as_raw_fd(),
                handle.as_mut_ptr(),
                flags,
            )
        };
        match fd {
            fd if fd >= 0 => {
                // SAFETY: a descriptor the call just opened, owned from here.
                Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
            }
            _ => Err(std::io::Error::last_os_error()),
        }
    };
    let (file_handle, dir_handle) = (handle(&scratch.path("d/f")), handle(&scratch.path("d")));
    // Make the kernel forget what it cached, so it must ask the daemon by node.
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let mut content = String::new();
    std::io::Read::read_to_string(
        &mut open(file_handle, libc::O_RDONLY).unwrap(),
        &mut content,
    )
    .unwrap();
    assert_eq!(content, "handled");
    let dir = open(dir_handle, libc::O_RDONLY | libc::O_DIRECTORY).unwrap();
    assert!(dir.metadata().unwrap().is_dir());
    drop(dir);
    mounted.unmount();
    let mounted = scratch.mount();
    fs::write(scratch.path("other"), b"not it").unwrap();
    let stale = open(file_handle, libc::O_RDONLY).unwrap_err();
    assert_eq!(stale.raw_os_error(), Some(libc::ESTALE), "{stale}");
    mounted.unmount();
    scratch.assert_clean();
}
