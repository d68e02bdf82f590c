//! The Linux kernel swapping to a file on a mounted cowfs, end to end, with the `cowfs`
//! binary as a user runs it: mount (fuseblk over a loop device), `cowfs swapon`, a process in
//! a memory cgroup that touches four times its limit and checks every page, the active-file
//! rules checked with real tools meanwhile, then swapoff, unmount and fsck. Needs root,
//! /dev/fuse, loop devices and a memory cgroup: under CI=true a missing one fails the test,
//! elsewhere it is skipped with the reason.

mod common;
#[path = "../../../tests/support/nbd_server.rs"]
mod nbd_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The tests here take turns: one's swapon, swapoff and daemon kills under another's memory
/// cgroup at its limit can starve that one's swap-in readahead into the cgroup's OOM killer.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything the kernel swapping to a cowfs mount needs.
fn can_swap_to_a_mount() -> bool {
    let cgroup = Path::new("/sys/fs/cgroup/memory").exists()
        || Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    can_mount()
        && capable(&[
            (Path::new("/dev/loop-control").exists(), "loop devices"),
            (cgroup, "a memory cgroup"),
        ])
}

/// A scratch image of `size` with a swap file of `swap` in it, mounted as fuseblk; what the
/// mount command printed.
fn mounted_swapfile(scratch: &Scratch, size: &str, swap: &str) -> String {
    ok(&["mkfs", &scratch.image, "--size", size]);
    ok(&["mkswapfile", &scratch.image, "/swapfile", "--size", swap]);
    ok(&["mount", &scratch.image, scratch.mnt(), "--blkdev"])
}

fn vmstat(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/vmstat").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.trim().parse().ok())
        .unwrap()
}

/// KiB of `swapfile` in use, from /proc/swaps (None when it is not a swap area).
fn swap_used(swapfile: &Path) -> Option<u64> {
    let areas = cowfs_fuse::swaps::areas().unwrap();
    areas
        .iter()
        .find(|a| a.file == swapfile)
        .map(|a| a.used_kib)
}

/// Whether this process may set PR_SET_IO_FLUSHER (CAP_SYS_RESOURCE, which some sandboxes
/// drop from the bounding set even for root).
fn may_be_io_flusher() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    effective >> 24 & 1 == 1
}

/// The daemon's locked memory (kB), and whether all its threads are I/O flushers (true when
/// this machine does not allow the flag: see [`may_be_io_flusher`]).
fn daemon_protection(pid: i32) -> (u64, bool) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let locked = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    // PF_MEMALLOC_NOIO, which PR_SET_IO_FLUSHER sets, in the flags field of each thread's stat.
    const PF_MEMALLOC_NOIO: u64 = 0x0008_0000;
    let flushers = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .all(|task| {
            let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            let flags: u64 = after_name.split(' ').nth(6).unwrap().parse().unwrap();
            flags & PF_MEMALLOC_NOIO != 0
        });
    (locked, flushers || !may_be_io_flusher())
}

/// Leaves the machine as it was even when an assertion fails: swap off, mount gone.
struct Cleanup {
    swapfile: PathBuf,
    mountpoint: PathBuf,
}

impl Cleanup {
    /// The swap file of `scratch`'s mount, and what puts the machine back after the test.
    fn of(scratch: &Scratch) -> (PathBuf, Cleanup) {
        let swapfile = scratch.mountpoint.join("swapfile");
        let cleanup = Cleanup {
            swapfile: swapfile.clone(),
            mountpoint: scratch.mountpoint.clone(),
        };
        (swapfile, cleanup)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if swap_used(&self.swapfile).is_some() {
            let _ = cowfs(&["swapoff", self.swapfile.to_str().unwrap()]);
        }
        let _ = cowfs(&["umount", self.mountpoint.to_str().unwrap()]);
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs a tool on the swap file; returns what it printed when it failed.
fn refused(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        !out.status.success(),
        "{program} {args:?} succeeded on an active swap file"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What every memload run under swap must show: it ended well with all its 32768 pages checked,
/// the kernel swapped out at least 64 MiB since `pswpout` was `swapped_out`, and /proc/swaps
/// showed the area in use (`most_used` KiB at most).
fn every_page_came_back(out: &std::process::Output, swapped_out: u64, most_used: u64) {
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("verified 32768 pages"),
        "memload ({}): {said}",
        out.status
    );
    assert!(
        vmstat("pswpout ") > swapped_out + 16384,
        "the kernel swapped out at least 64 MiB"
    );
    assert!(most_used > 0, "/proc/swaps showed the area in use");
}

/// Runs `cowfs memload` (128 MiB touched in a 32 MiB memory cgroup, every page checked; its
/// pages compressible when asked), calling `meanwhile` once it has started, and watching how
/// much of `swapfile` the kernel uses; returns its output and the most it saw in use.
fn memload_swapping_to(
    swapfile: &Path,
    compressible: bool,
    meanwhile: impl FnOnce() + Send,
) -> (std::process::Output, u64) {
    let memload = || spawn_memload("128M", compressible);
    let mut most_used = 0;
    let mut watch = |mut load: std::process::Child| {
        let start = Instant::now();
        while load.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(300) {
            most_used = most_used.max(swap_used(swapfile).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(5));
        }
        load.wait_with_output().unwrap()
    };
    let mut out = std::thread::scope(|scope| {
        let load = memload();
        let checks = scope.spawn(meanwhile);
        let out = watch(load);
        if let Err(failed) = checks.join() {
            std::panic::resume_unwind(failed);
        }
        out
    });
    // A cgroup v1 at its limit can be OOM-killed while its swap-in waits behind swap-out I/O
    // (the kernel's own behaviour; the disk here is slow at times): that is tried again, a
    // wrong page never is.
    for _ in 0..2 {
        if std::os::unix::process::ExitStatusExt::signal(&out.status) != Some(libc::SIGKILL) {
            break;
        }
        eprintln!("note: memload was OOM-killed in its cgroup; running it again");
        out = watch(memload());
    }
    (out, most_used)
}

#[test]
fn the_kernel_swaps_to_a_pinned_cowfs_file() {
    if !can_swap_to_a_mount() {
        return;
    }
    let _turn = take_turn();
    let scratch = Scratch::new();
    let (img, mnt, mountpoint) = (scratch.image.as_str(), scratch.mnt(), &scratch.mountpoint);
    mounted_swapfile(&scratch, "768M", "256M");
    let (swapfile, _cleanup) = Cleanup::of(&scratch);
    let plain = std::fs::File::create(mountpoint.join("plain")).unwrap();
    plain.set_len(1 << 20).unwrap();
    let unpinned = Command::new("swapon")
        .arg(mountpoint.join("plain"))
        .output()
        .unwrap();
    assert!(
        !unpinned.status.success(),
        "the kernel cannot map a file that is not pinned"
    );
    let sf = swapfile.to_str().unwrap();
    assert!(ok(&["swapon", sf, "-p", "10"]).contains("swapping"));
    assert!(ok(&["swapon", "--show"]).contains(sf));

    // Other tests' dirty data on the host disk is written out first: swap-in waiting behind
    // it at a tight cgroup limit can starve the cgroup into its OOM killer.
    rustix::fs::sync();
    let swapped_out = vmstat("pswpout ");
    let (out, most_used) = memload_swapping_to(&swapfile, false, || {
        // The active-file rules, with real tools, while the kernel swaps.
        assert!(refused("rm", &["-f", sf]).contains("Operation not permitted"));
        assert!(refused("chattr", &["+c", sf]).contains("Invalid argument"));
        assert!(refused("truncate", &["-s", "0", sf]).contains("Text file busy"));
        let snapshot = cowfs(&["snapshot", mnt, &format!("{mnt}/snap")]);
        assert!(
            String::from_utf8_lossy(&snapshot.stderr).contains("Text file busy"),
            "cowfs snapshot refuses"
        );
        let busy = cowfs(&["umount", mnt]);
        assert!(
            String::from_utf8_lossy(&busy.stderr).contains("active swap file"),
            "umount refuses"
        );
    });
    every_page_came_back(&out, swapped_out, most_used);

    ok(&["swapoff", sf]);
    assert_eq!(swap_used(&swapfile), None);
    drop(plain);
    ok(&["umount", mnt]);
    assert!(ok(&["fsck", img]).contains("clean"));
}

/// The 2014 design with the real kernel: a copy-on-write, checksummed swap file (no NOCOW),
/// used through a loop device whose every read and write the daemon serves through the
/// engine; while the kernel swaps to it, a snapshot of the subvolume, a balance and a defrag
/// of the file run, and the active-file rules hold. Every page comes back; then swapoff, and the file is an
/// ordinary file again.
#[test]
fn the_kernel_swaps_through_the_filesystem_to_a_copy_on_write_file() {
    if !can_swap_to_a_mount() {
        return;
    }
    let _turn = take_turn();
    let scratch = Scratch::new();
    let (img, mnt, mountpoint) = (scratch.image.as_str(), scratch.mnt(), &scratch.mountpoint);
    let (swapfile, _cleanup, mounted, said) = swapping_through_fs(&scratch, None);
    let sf = swapfile.to_str().unwrap();
    let flags = Command::new("lsattr").arg(sf).output().unwrap();
    let flags = String::from_utf8_lossy(&flags.stdout);
    assert!(
        flags.starts_with('-') && !flags.split(' ').next().unwrap().contains('C'),
        "the swap file is copy-on-write: {flags}"
    );
    assert!(said.contains("through the filesystem"), "{said}");
    let shown = ok(&["swapon", "--show"]);
    assert!(
        shown.contains(sf) && shown.contains("through-fs"),
        "{shown}"
    );

    let swapped_out = vmstat("pswpout ");
    let (out, most_used) = memload_swapping_to(&swapfile, false, || {
        assert!(refused("rm", &["-f", sf]).contains("Operation not permitted"));
        assert!(refused("truncate", &["-s", "0", sf]).contains("Text file busy"));
        let write = std::fs::OpenOptions::new()
            .write(true)
            .open(&swapfile)
            .unwrap();
        let e = std::os::unix::fs::FileExt::write_at(&write, b"x", 4096).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ETXTBSY), "another writer: {e}");
        // What the design buys: the swap file's blocks may be shared and moved meanwhile.
        ok(&["snapshot", mnt, &format!("{mnt}/snap")]);
        ok(&["balance", mnt]);
        ok(&["defrag", sf]);
    });
    every_page_came_back(&out, swapped_out, most_used);

    ok(&["swapoff", sf]);
    assert_eq!(swap_used(&swapfile), None);
    // memload reads its memory back in order once: the daemon read ahead of those swap-ins.
    let logged = std::fs::read_to_string(daemon_log(&mounted)).unwrap();
    let served = logged
        .split("swap read-ahead of /swapfile: ")
        .nth(1)
        .and_then(|line| line.split(", ").nth(1))
        .and_then(|part| part.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        served.is_some_and(|n| n > 0),
        "swap-ins served from the read-ahead window: {logged}"
    );
    std::fs::remove_file(&swapfile).expect("an ordinary file again after swapoff");
    assert_eq!(
        std::fs::metadata(mountpoint.join("snap/swapfile"))
            .unwrap()
            .len(),
        256 << 20,
        "the snapshot holds the swap area as it was"
    );
    ok(&["umount", mnt]);
    assert!(ok(&["fsck", img]).contains("clean"));
}

/// Beyond one machine: the kernel swapping through the filesystem to a copy-on-write swap file
/// on a cowfs whose image is an NBD export (nbdkit memory: another process's RAM), every page
/// back; then swapoff, unmount, fsck over the network.
#[test]
fn the_kernel_swaps_through_the_filesystem_on_an_nbd_export() {
    if !can_swap_to_a_mount() {
        return;
    }
    let Some(server) = nbd_server::NbdServer::memory("1G") else {
        return;
    };
    let _turn = take_turn();
    let scratch = Scratch::new();
    let uri = server.uri();
    ok(&["mkfs", &uri]);
    ok(&["mount", &uri, scratch.mnt()]);
    let (swapfile, _cleanup) = Cleanup::of(&scratch);
    let sf = swapfile.to_str().unwrap();
    ok(&["mkswapfile", sf, "--size", "256M", "--through-fs"]);
    assert!(ok(&["swapon", "--through-fs", sf, "-p", "10"]).contains("through the filesystem"));
    let swapped_out = vmstat("pswpout ");
    let (out, most_used) = memload_swapping_to(&swapfile, false, || {});
    every_page_came_back(&out, swapped_out, most_used);
    ok(&["swapoff", sf]);
    ok(&["umount", scratch.mnt()]);
    assert!(ok(&["fsck", &uri]).contains("clean"));
}

/// A compressed swap file (lz4) with the real kernel: compressible memory four times a
/// cgroup's limit swapped through the filesystem, every page back, a snapshot meanwhile; fewer
/// bytes reach the image than the kernel swapped out (no balance here: it would write the
/// area's blocks again), and `cowfs swapon --show` reports the ratio.
#[test]
fn the_kernel_swaps_through_the_filesystem_to_a_compressed_file() {
    if !can_swap_to_a_mount() {
        return;
    }
    let _turn = take_turn();
    let scratch = Scratch::new();
    let (img, mnt) = (scratch.image.as_str(), scratch.mnt());
    let (swapfile, _cleanup, mounted, _) = swapping_through_fs(&scratch, Some("lz4"));
    let sf = swapfile.to_str().unwrap();
    assert!(ok(&["property", "get", sf]).contains("compression=lz4"));
    let lsattr = Command::new("lsattr").arg(sf).output().unwrap();
    let flags = String::from_utf8_lossy(&lsattr.stdout);
    assert!(
        flags.split(' ').next().unwrap().contains('c'),
        "marked compressed: {flags}"
    );
    let daemon = daemon_pid(&mounted);
    let written = || io_field(daemon, "write_bytes");
    let (swapped_out, stored) = (vmstat("pswpout "), written());
    let (out, most_used) = memload_swapping_to(&swapfile, true, || {
        assert!(refused("truncate", &["-s", "0", sf]).contains("Text file busy"));
        ok(&["snapshot", mnt, &format!("{mnt}/snap")]);
    });
    every_page_came_back(&out, swapped_out, most_used);
    let swapped_out = (vmstat("pswpout ") - swapped_out) * 4096;
    let stored = written() - stored;
    assert!(
        stored < swapped_out / 2,
        "{stored} bytes reached the image for {swapped_out} swapped out"
    );
    let shown = ok(&["swapon", "--show"]);
    let ratio: f64 = shown
        .lines()
        .find(|l| l.starts_with(sf))
        .and_then(|l| l.split("lz4 ").nth(1)?.split('x').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no lz4 ratio in: {shown}"));
    eprintln!("{stored} bytes reached the image for {swapped_out} swapped out; {shown}");
    assert!(ratio > 2.0, "{shown}");

    ok(&["swapoff", sf]);
    ok(&["umount", mnt]);
    assert!(ok(&["fsck", img]).contains("clean"));
}

/// A field of /proc/PID/io.
fn io_field(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

#[test]
fn swapoff_works_after_the_daemon_is_killed() {
    if !can_swap_to_a_mount() {
        return;
    }
    let _turn = take_turn();
    // The namespace changes under the swap file's directory before the daemon dies: an
    // unlink there makes the kernel ask again for the directory's permissions on the next
    // walk, which the dead daemon cannot answer; a walk of the mount can then never reach the
    // swap file again.
    if !may_be_io_flusher() {
        eprintln!("note: no CAP_SYS_RESOURCE here, so the daemon cannot be an I/O flusher");
    }
    for change in ["none", "rm", "mkdir", "rename"] {
        let scratch = Scratch::new();
        let (img, mountpoint) = (scratch.image.as_str(), &scratch.mountpoint);
        let pid = daemon_pid(&mounted_swapfile(&scratch, "256M", "64M"));
        let (swapfile, _cleanup) = Cleanup::of(&scratch);
        std::fs::write(mountpoint.join("other"), b"x").unwrap();
        let sf = swapfile.to_str().unwrap();
        assert_eq!(daemon_protection(pid), (0, true), "before swapon");
        assert!(ok(&["swapon", sf]).contains(cowfs_fuse::swaps::BIND_DIR));
        let (locked, flushers) = daemon_protection(pid);
        assert!(
            locked > 0 && flushers,
            "while swapping: {locked} kB locked, {flushers}"
        );
        assert!(
            ok(&["swapon", "--show"]).contains(sf),
            "listed by its own path"
        );
        match change {
            "rm" => std::fs::remove_file(mountpoint.join("other")).unwrap(),
            "mkdir" => std::fs::create_dir(mountpoint.join("d")).unwrap(),
            "rename" => std::fs::rename(mountpoint.join("other"), mountpoint.join("o")).unwrap(),
            _ => {}
        }
        // Past the attribute cache of an ordinary file: nothing may need the daemon from here.
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: kill(2) on the daemon's pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        std::thread::sleep(Duration::from_millis(500));
        let off = cowfs(&["swapoff", sf]);
        assert!(
            off.status.success(),
            "swapoff without a daemon after {change}: {}",
            String::from_utf8_lossy(&off.stderr)
        );
        assert_eq!(swap_used(&swapfile), None, "after {change}");
        let bind = cowfs_fuse::swaps::bind_path(&swapfile).unwrap();
        assert!(
            !cowfs_fuse::swaps::is_bound(&bind).unwrap(),
            "the bind is gone"
        );
        assert!(!bind.try_exists().unwrap(), "and its mount point");
        let _ = Command::new("umount").arg("-l").arg(mountpoint).status();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            ok(&["fsck", img]).contains("clean"),
            "the image is at its last commit"
        );
    }
}

#[test]
fn plain_swapoff_of_the_name_proc_swaps_shows_works() {
    if !can_swap_to_a_mount() {
        return;
    }
    let _turn = take_turn();
    let scratch = Scratch::new();
    let img = scratch.image.as_str();
    mounted_swapfile(&scratch, "256M", "64M");
    let (swapfile, _cleanup) = Cleanup::of(&scratch);
    ok(&["swapon", swapfile.to_str().unwrap()]);
    let areas = cowfs_fuse::swaps::areas().unwrap();
    let area = areas.iter().find(|a| a.file == swapfile).unwrap();
    let off = Command::new("swapoff").arg(&area.name).output().unwrap();
    assert!(
        off.status.success(),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
    assert_eq!(swap_used(&swapfile), None);
    // The bind and the pin are left; cowfs swapoff takes them away.
    assert!(cowfs_fuse::swaps::is_bound(&area.name).unwrap());
    ok(&["swapoff", swapfile.to_str().unwrap()]);
    assert!(
        !cowfs_fuse::swaps::is_bound(&area.name).unwrap(),
        "the bind is gone"
    );
    ok(&["umount", scratch.mnt()]);
    assert!(ok(&["fsck", img]).contains("clean"));
}

/// generic/569: pages of the swap file dirty in a shared mapping are flushed by activation,
/// so nothing written before swapon is refused (and lost) after it.
#[test]
fn swapon_flushes_pages_dirty_in_a_mapping_first() {
    if !can_swap_to_a_mount() {
        return;
    }
    let _turn = take_turn();
    let scratch = Scratch::new();
    let img = scratch.image.as_str();
    mounted_swapfile(&scratch, "256M", "64M");
    let (swapfile, _cleanup) = Cleanup::of(&scratch);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&swapfile)
        .unwrap();
    let len = 1 << 20;
    let at = (32 << 20) as i64;
    // SAFETY: a shared mapping of 1 MiB inside the file; unmapped below, never msync'ed.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            at,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    // SAFETY: the mapping is `len` bytes.
    unsafe { std::ptr::write_bytes(map.cast::<u8>(), 0x5a, len) };
    ok(&["swapon", swapfile.to_str().unwrap()]);
    // SAFETY: unmaps the mapping made above.
    unsafe { libc::munmap(map, len) };
    file.sync_all()
        .expect("nothing dirty is left to be refused");
    ok(&["swapoff", swapfile.to_str().unwrap()]);
    let mut back = vec![0u8; len];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut back, at as u64).unwrap();
    assert!(
        back.iter().all(|b| *b == 0x5a),
        "the mapped writes reached the file"
    );
    drop(file);
    ok(&["umount", scratch.mnt()]);
    assert!(ok(&["fsck", img]).contains("clean"));
}

/// Through the filesystem every swap page goes through the daemon, so a daemon killed while
/// the kernel swaps takes the swapped-out pages with it: the process that needs them fails
/// (never gets wrong data). Then swapoff still works, the dead mount goes, and the image is at
/// its last commit.
#[test]
fn a_daemon_killed_under_through_filesystem_swap_fails_the_process_not_the_machine() {
    if !can_swap_to_a_mount() {
        return;
    }
    let _turn = take_turn();
    let scratch = Scratch::new();
    let (img, mnt, mountpoint) = (scratch.image.as_str(), scratch.mnt(), &scratch.mountpoint);
    let (swapfile, _cleanup, mounted, _) = swapping_through_fs(&scratch, None);
    let (pid, sf) = (daemon_pid(&mounted), swapfile.to_str().unwrap());
    let load = memload_until_swapped(&swapfile, 16 << 20);
    // SAFETY: kill(2) on the daemon's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let out = load.wait_with_output().unwrap();
    let signal = std::os::unix::process::ExitStatusExt::signal(&out.status);
    assert!(
        [Some(libc::SIGBUS), Some(libc::SIGKILL)].contains(&signal),
        "the process fails, killed, never checking a wrong page: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&["swapoff", sf]);
    assert_eq!(swap_used(&swapfile), None, "swap is off");
    let lazy = Command::new("umount").args(["-l", mnt]).status().unwrap();
    assert!(lazy.success());
    assert!(!mountpoint.join("swapfile").exists());
    assert!(ok(&["fsck", img]).contains("clean"));
}

/// Every page swapped in through the filesystem is checked: blocks under the swap file
/// damaged while pages are out make the kernel's swap-in fail (the process is killed or gets
/// SIGBUS), never hand it wrong data, and the daemon's log names the file and offset.
#[test]
fn a_damaged_block_under_a_through_filesystem_swap_file_fails_the_swap_in() {
    if !can_swap_to_a_mount() {
        return;
    }
    let _turn = take_turn();
    let scratch = Scratch::new();
    let (img, mnt) = (scratch.image.as_str(), scratch.mnt());
    let (swapfile, _cleanup, mounted, _) = swapping_through_fs(&scratch, None);
    let sf = swapfile.to_str().unwrap();
    let log = daemon_log(&mounted);
    // A cgroup v1 at its limit can OOM-kill the process before it reads a damaged page back
    // (see memload_swapping_to): then the damage is done again under a new run.
    let mut logged = String::new();
    for _ in 0..3 {
        let out = swap_in_after_damage(img, &swapfile);
        let signal = std::os::unix::process::ExitStatusExt::signal(&out.status);
        assert!(
            [Some(libc::SIGBUS), Some(libc::SIGKILL)].contains(&signal),
            "the process fails, killed, never checking a wrong page: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        logged = std::fs::read_to_string(log).unwrap();
        if logged.contains("swap-in of /swapfile at offset") {
            break;
        }
        eprintln!("note: memload was killed before a damaged page came back; again");
    }
    assert!(
        logged.contains("swap-in of /swapfile at offset") && logged.contains("checksum"),
        "the daemon's log names the file and offset: {logged}"
    );
    ok(&["swapoff", sf]);
    std::fs::remove_file(&swapfile).unwrap();
    ok(&["umount", mnt]);
    assert!(ok(&["fsck", img]).contains("clean"));
}

/// Runs `cowfs memload` until the kernel has swapped 64 MiB out to `swapfile`, overwrites
/// every block the swap file maps in the image behind the daemon's back, and waits for the
/// process.
fn swap_in_after_damage(img: &str, swapfile: &Path) -> std::process::Output {
    let load = memload_until_swapped(swapfile, 64 << 20);
    let image = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    let garbage = vec![0x5au8; 1 << 20];
    for (start, blocks) in physical_extents(&ok(&["fiemap", swapfile.to_str().unwrap()])) {
        for at in (0..blocks * 4096).step_by(garbage.len()) {
            let n = (blocks * 4096 - at).min(garbage.len() as u64) as usize;
            std::os::unix::fs::FileExt::write_at(&image, &garbage[..n], start * 4096 + at).unwrap();
        }
    }
    image.sync_all().unwrap();
    drop(image);
    // The daemon reads the image with O_DIRECT: drop the host's cached copy of it too.
    std::fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
    load.wait_with_output().unwrap()
}

/// Starts `cowfs memload` touching `size` in a 32 MiB memory cgroup (every page checked; its
/// pages compressible when asked), its output kept.
fn spawn_memload(size: &str, compressible: bool) -> std::process::Child {
    Command::new(COWFS)
        .args([
            "memload",
            "--size",
            size,
            "--limit",
            "32M",
            "--threads",
            "2",
        ])
        .args(compressible.then_some("--compressible"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts `cowfs memload` on 256 MiB and returns once the kernel has `bytes` of it out in
/// `swapfile`.
fn memload_until_swapped(swapfile: &Path, bytes: u64) -> std::process::Child {
    let mut load = spawn_memload("256M", false);
    let start = Instant::now();
    while swap_used(swapfile).unwrap_or(0) < bytes >> 10 {
        assert!(
            start.elapsed() < Duration::from_secs(60) && load.try_wait().unwrap().is_none(),
            "the kernel swapped out through the filesystem"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    load
}

/// A 1 GiB image mounted, with a 256 MiB copy-on-write swap file (compressed as `compression`
/// says, when given) the kernel swaps to through the filesystem; the swap file, what puts the
/// machine back, and what `mount` and `swapon` said.
fn swapping_through_fs(
    scratch: &Scratch,
    compression: Option<&str>,
) -> (PathBuf, Cleanup, String, String) {
    ok(&["mkfs", &scratch.image, "--size", "1G"]);
    let mounted = ok(&["mount", &scratch.image, scratch.mnt()]);
    let (swapfile, cleanup) = Cleanup::of(scratch);
    let sf = swapfile.to_str().unwrap();
    ok(&["mkswapfile", sf, "--size", "256M", "--through-fs"]);
    if let Some(how) = compression {
        ok(&["property", "set", sf, "compression", how]);
    }
    let swapped = ok(&["swapon", "--through-fs", sf, "-p", "10"]);
    rustix::fs::sync();
    (swapfile, cleanup, mounted, swapped)
}

/// The daemon's log file, from what `cowfs mount` said.
fn daemon_log(mounted: &str) -> &str {
    mounted
        .split("log ")
        .nth(1)
        .unwrap()
        .trim_end_matches([')', '\n'])
}

/// (first block, blocks) of each extent `cowfs fiemap` lists.
fn physical_extents(fiemap: &str) -> Vec<(u64, u64)> {
    fiemap
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').map(str::trim).collect();
            let (physical, length) = (fields.get(2)?, fields.get(3)?);
            let first = physical.split("..").next()?.trim().parse().ok()?;
            Some((first, length.parse().ok()?))
        })
        .collect()
}
