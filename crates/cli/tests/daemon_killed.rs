//! A mount's daemon killed (SIGKILL) at any moment while processes write through it: the
//! writers get errors instead of hanging, `cowfs umount` frees the mount point, the image
//! passes fsck, and mounted again it holds every byte an fsync acknowledged; past that, a file
//! holds only bytes that were written there, or zeros where the kernel's writeback cache had
//! not sent a page before the last commit. On the default mount and with the writeback cache,
//! killed early, mid-way and after a timed commit. Needs root and /dev/fuse (under CI=true
//! their absence fails the test).

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const WRITERS: usize = 4;
/// A writer starts a new file when its file reaches this size...
const FILE_LEN: u64 = 8 << 20;
/// ... and removes its oldest when it has this many, so the image never fills.
const FILES_KEPT: usize = 4;
/// An fsync every this many writes.
const SYNC_EVERY: usize = 8;
/// How long the writers may take to notice the daemon is gone.
const NOTICE: Duration = Duration::from_secs(20);

/// The byte writer `writer` puts at `at` of its file `file`: every file's content follows from
/// its name, so the check needs no copy of what was written.
fn byte(writer: usize, file: usize, at: u64) -> u8 {
    let x = (at / 4096).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((writer * 131 + file) as u64);
    (x >> 29) as u8 ^ (at % 251) as u8
}

/// What one writer did to one file.
struct Written {
    path: PathBuf,
    writer: usize,
    file: usize,
    /// Bytes an fsync acknowledged.
    synced: u64,
    /// The end of the furthest write asked for, whether it succeeded or not.
    asked: u64,
    /// Whether an unlink of it succeeded (it may come back: the unlink may not have been
    /// committed).
    removed: bool,
}

/// Writes files of `FILE_LEN` in writes of 1 byte to 64 KiB, fsyncing every `SYNC_EVERY`,
/// until an operation fails (the daemon is gone) or `stop` is set.
fn writer(dir: &Path, writer: usize, stop: &AtomicBool) -> Vec<Written> {
    let mut done: Vec<Written> = Vec::new();
    let mut seed = 0x2545_F491_u64 + writer as u64;
    for file in 0.. {
        let path = dir.join(format!("w{writer}-{file}"));
        let mut w = Written {
            path,
            writer,
            file,
            synced: 0,
            asked: 0,
            removed: false,
        };
        let result = fill(&mut w, &mut seed, stop);
        done.push(w);
        if result.is_err() || stop.load(Ordering::SeqCst) {
            return done;
        }
        if file >= FILES_KEPT {
            let oldest = &mut done[file - FILES_KEPT];
            if fs::remove_file(&oldest.path).is_err() {
                return done;
            }
            oldest.removed = true;
        }
    }
    unreachable!()
}

fn fill(w: &mut Written, seed: &mut u64, stop: &AtomicBool) -> std::io::Result<()> {
    let out = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&w.path)?;
    let mut writes = 0;
    while w.asked < FILE_LEN && !stop.load(Ordering::SeqCst) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let len = (*seed % (64 << 10)).max(1).min(FILE_LEN - w.asked);
        let at = w.asked;
        let data: Vec<u8> = (at..at + len).map(|o| byte(w.writer, w.file, o)).collect();
        w.asked = at + len;
        out.write_all_at(&data, at)?;
        writes += 1;
        if writes % SYNC_EVERY == 0 {
            out.sync_all()?;
            w.synced = w.asked;
        }
    }
    out.sync_all()?;
    w.synced = w.asked;
    Ok(())
}

/// Creates, renames and removes small files and directories, so namespace changes are under
/// way when the daemon dies too.
fn renamer(dir: &Path, stop: &AtomicBool) {
    for n in 0.. {
        let d = dir.join(format!("d{n}"));
        let ok = fs::create_dir(&d)
            .and_then(|()| fs::write(d.join("f"), b"x"))
            .and_then(|()| fs::rename(d.join("f"), d.join("g")))
            .and_then(|()| match n % 2 {
                0 => fs::remove_dir_all(&d),
                _ => Ok(()),
            });
        if ok.is_err() || stop.load(Ordering::SeqCst) {
            return;
        }
    }
}

/// Checks a file after the crash against what its writer did.
fn check(mnt: &Path, w: &Written) {
    let path = mnt.join(w.path.file_name().unwrap());
    let Ok(found) = fs::read(&path) else {
        assert!(
            w.removed || w.synced == 0,
            "{} is gone, with {} bytes fsync'd",
            path.display(),
            w.synced
        );
        return;
    };
    let len = found.len() as u64;
    assert!(
        len >= w.synced && len <= w.asked,
        "{}: {len} bytes, {} fsync'd, {} asked for",
        path.display(),
        w.synced,
        w.asked
    );
    for (at, b) in found.iter().enumerate() {
        let want = byte(w.writer, w.file, at as u64);
        let fine = *b == want || (at as u64 >= w.synced && *b == 0);
        assert!(
            fine,
            "{} byte {at}: {b:#x}, written {want:#x} ({} fsync'd)",
            path.display(),
            w.synced
        );
    }
}

/// Mounts a fresh image with `options`, writes through it from `WRITERS` threads and a
/// renamer, kills the daemon after `after`, and checks what the image holds.
fn killed_after(options: &[&str], after: Duration) {
    eprintln!("mount options {options:?}, daemon killed after {after:?}");
    let scratch = Scratch::new();
    ok(&["mkfs", &scratch.image, "--size", "1G"]);
    let mut mount = vec!["mount", &scratch.image, scratch.mnt()];
    mount.extend(options);
    let pid = daemon_pid(&ok(&mount));
    let mnt = scratch.mountpoint.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (mnt, stop) = (mnt.clone(), stop.clone());
            std::thread::spawn(move || writer(&mnt, i, &stop))
        })
        .collect();
    let renaming = {
        let (mnt, stop) = (mnt.clone(), stop.clone());
        std::thread::spawn(move || renamer(&mnt, &stop))
    };
    std::thread::sleep(after);
    // SAFETY: kill(2) on the daemon's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let all_done = || writers.iter().all(|w| w.is_finished()) && renaming.is_finished();
    while !all_done() && killed.elapsed() < NOTICE {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    if !all_done() {
        let _ = std::process::Command::new("umount")
            .args(["-l", scratch.mnt()])
            .status();
        panic!("writers still waiting {NOTICE:?} after the daemon was killed");
    }
    let written: Vec<Written> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    renaming.join().unwrap();
    ok(&["umount", scratch.mnt()]);
    assert!(ok(&["fsck", &scratch.image]).contains("clean"));
    ok(&["mount", &scratch.image, scratch.mnt()]);
    let synced: u64 = written.iter().map(|w| w.synced).sum();
    eprintln!("{} files written, {synced} bytes fsync'd", written.len());
    for w in &written {
        check(&mnt, w);
    }
    // The mount takes changes again.
    fs::write(mnt.join("after"), b"after").unwrap();
    File::open(mnt.join("after")).unwrap().sync_all().unwrap();
    ok(&["umount", scratch.mnt()]);
    assert!(ok(&["fsck", &scratch.image]).contains("clean"));
}

#[test]
fn a_daemon_killed_under_writers_loses_nothing_fsynced() {
    if !can_mount() {
        return;
    }
    // Early, mid-way, and after the 5-second timed commit.
    for after in [300, 1700, 5500] {
        killed_after(&[], Duration::from_millis(after));
        killed_after(&["-o", "writeback_cache"], Duration::from_millis(after));
    }
}
