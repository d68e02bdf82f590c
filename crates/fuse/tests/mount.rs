//! cowfs mounted with FUSE and used through the kernel: std::fs calls and real tools (cp,
//! chattr, lsattr, fallocate, stat), the swap-file rules as those tools see them, then
//! unmount and fsck. Mounting needs root and /dev/fuse: under CI=true a missing capability
//! fails the test, elsewhere it is skipped with the reason.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{Scratch, MIB};
use cowfs::{Filesystem, SwapMode};

/// A fresh image mounted in a scratch directory; None when this machine cannot mount.
fn mounted() -> Option<Mounted> {
    mounted_with(false)
}

/// The same, the kernel caching writes if asked.
fn mounted_with(writeback_cache: bool) -> Option<Mounted> {
    let scratch = Scratch::new(256 * MIB)?;
    let served = scratch.serve(scratch.open(), writeback_cache);
    Some(Mounted {
        fs: served.fs.clone(),
        served,
        scratch,
    })
}

struct Mounted {
    scratch: Scratch,
    served: common::Mounted,
    fs: Filesystem,
}

impl Mounted {
    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path(name)
    }

    /// Unmounts, closes the filesystem, and checks the image.
    fn finish(self) {
        drop(self.fs);
        self.served.unmount();
        self.scratch.assert_clean();
    }
}

/// Runs a tool; returns (success, stdout + stderr).
fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn namespace_and_data_through_the_mount() {
    let Some(m) = mounted() else { return };
    fs::create_dir_all(m.path("a/b/c")).unwrap();
    let data = pattern(1, 3 * MIB as usize + 123);
    fs::write(m.path("a/b/c/file"), &data).unwrap();
    assert_eq!(fs::read(m.path("a/b/c/file")).unwrap(), data);

    // Overwrite in the middle, append, truncate: what a reader sees is what was written.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("a/b/c/file"))
        .unwrap();
    f.seek(SeekFrom::Start(MIB)).unwrap();
    f.write_all(&[0xee; 10_000]).unwrap();
    f.sync_all().unwrap();
    let mut expect = data.clone();
    expect[MIB as usize..MIB as usize + 10_000].fill(0xee);
    f.set_len(2 * MIB).unwrap();
    expect.truncate(2 * MIB as usize);
    let mut back = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut back).unwrap();
    assert!(back == expect, "read after overwrite and truncate");
    drop(f);

    fs::hard_link(m.path("a/b/c/file"), m.path("a/link")).unwrap();
    assert_eq!(fs::metadata(m.path("a/link")).unwrap().nlink(), 2);
    std::os::unix::fs::symlink("b/c/file", m.path("a/sym")).unwrap();
    assert_eq!(
        fs::read_link(m.path("a/sym")).unwrap(),
        Path::new("b/c/file")
    );
    assert_eq!(
        fs::read(m.path("a/sym")).unwrap(),
        expect,
        "the symlink resolves"
    );
    fs::rename(m.path("a/link"), m.path("moved")).unwrap();
    fs::set_permissions(m.path("moved"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        fs::metadata(m.path("moved")).unwrap().mode() & 0o7777,
        0o640
    );
    fs::remove_file(m.path("a/sym")).unwrap();
    let mut open_unlinked = fs::File::open(m.path("moved")).unwrap();
    fs::remove_file(m.path("moved")).unwrap();
    let mut kept = Vec::new();
    open_unlinked.read_to_end(&mut kept).unwrap();
    assert!(kept == expect, "an open file outlives its unlink");
    drop(open_unlinked);
    assert_eq!(
        fs::remove_dir(m.path("a/b")).unwrap_err().raw_os_error(),
        Some(libc_enotempty())
    );

    let mut names: Vec<String> = fs::read_dir(m.path("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["b"]);
    let many = m.path("many");
    fs::create_dir(&many).unwrap();
    for i in 0..3000 {
        fs::write(many.join(format!("f{i:05}")), i.to_string()).unwrap();
    }
    assert_eq!(
        fs::read_dir(&many).unwrap().count(),
        3000,
        "a directory larger than one batch lists whole"
    );

    let (ok, out) = run("df", &["-B1", m.scratch.at.to_str().unwrap()]);
    assert!(
        ok && out.contains(&(256 * MIB).to_string()),
        "df shows the filesystem size: {out}"
    );
    m.finish();
}

fn libc_enotempty() -> i32 {
    rustix::io::Errno::NOTEMPTY.raw_os_error()
}

/// The kernel caps a FUSE mount's readahead at 128 KiB; the mount raises it to four of the
/// daemon's 1 MiB requests (docs/MOUNT.md), and a cold sequential read through it comes back
/// whole.
#[test]
fn the_mount_reads_ahead_four_requests_deep() {
    let Some(m) = mounted() else { return };
    let device = fs::metadata(m.path("")).unwrap().dev();
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(device),
        libc::minor(device)
    );
    assert_eq!(fs::read_to_string(&knob).unwrap().trim(), "4096", "{knob}");
    let data = pattern(9, 8 * MIB as usize + 12345);
    fs::write(m.path("big"), &data).unwrap();
    m.fs.sync().unwrap();
    fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
    assert!(fs::read(m.path("big")).unwrap() == data);
    m.finish();
}

#[test]
fn tools_see_flags_preallocation_and_copies() {
    let Some(m) = mounted() else { return };
    let dir = m.path("vm");
    fs::create_dir(&dir).unwrap();
    let (ok, out) = run("chattr", &["+C", dir.to_str().unwrap()]);
    assert!(ok, "chattr +C: {out}");
    let disk = dir.join("disk.raw");
    fs::write(&disk, b"").unwrap();
    let (_, out) = run("lsattr", &[disk.to_str().unwrap()]);
    assert!(
        out.split_whitespace().next().unwrap().contains('C'),
        "new files inherit NOCOW: {out}"
    );
    let (ok, out) = run("chattr", &["+c", disk.to_str().unwrap()]);
    assert!(
        !ok && out.contains("Invalid argument"),
        "compress and NOCOW exclude each other: {out}"
    );

    let (ok, out) = run("fallocate", &["-l", "8M", disk.to_str().unwrap()]);
    assert!(ok, "fallocate: {out}");
    assert_eq!(fs::metadata(&disk).unwrap().len(), 8 * MIB);
    assert!(
        fs::read(&disk).unwrap().iter().all(|b| *b == 0),
        "preallocated space reads zeros"
    );
    fs::write(m.path("data"), pattern(2, 4 * MIB as usize)).unwrap();
    let (ok, out) = run(
        "fallocate",
        &[
            "-p",
            "-o",
            "1048576",
            "-l",
            "1048576",
            m.path("data").to_str().unwrap(),
        ],
    );
    assert!(ok, "punch: {out}");
    let back = fs::read(m.path("data")).unwrap();
    assert!(
        back[MIB as usize..2 * MIB as usize].iter().all(|b| *b == 0),
        "the punched range reads zeros"
    );
    assert_eq!(
        back[..MIB as usize],
        pattern(2, 4 * MIB as usize)[..MIB as usize]
    );

    // cp uses copy_file_range, which shares the extents.
    let whole = pattern(3, 4 * MIB as usize);
    fs::write(m.path("whole"), &whole).unwrap();
    let (ok, out) = run(
        "cp",
        &[
            m.path("whole").to_str().unwrap(),
            m.path("copy").to_str().unwrap(),
        ],
    );
    assert!(ok, "cp: {out}");
    assert!(fs::read(m.path("copy")).unwrap() == whole);
    let copy = m.fs.resolve("/copy").unwrap();
    m.fs.fsync(copy).unwrap();
    assert!(
        m.fs.extent_map(copy).unwrap().iter().any(|e| e.shared),
        "the copy shares extents"
    );
    m.finish();
}

#[test]
fn an_active_swap_file_keeps_its_rules_through_the_mount() {
    if let Some(m) = mounted() {
        an_active_swap_file_keeps_its_rules(m);
    }
}

/// With the kernel caching writes, a write open is what is refused: a write to the page
/// cache would reach the daemon only at write-back.
#[test]
fn an_active_swap_file_keeps_its_rules_through_the_writeback_cache() {
    if let Some(m) = mounted_with(true) {
        an_active_swap_file_keeps_its_rules(m);
    }
}

fn an_active_swap_file_keeps_its_rules(m: Mounted) {
    let swapfile = swap::mkswapfile(&m.fs, "/swapfile", 16 * MIB, "", [3; 16]).unwrap();
    m.fs.activate_swap(swapfile, SwapMode::Pinned).unwrap();
    let path = m.path("swapfile");
    let p = path.to_str().unwrap();
    let errno = |e: std::io::Error| e.raw_os_error().unwrap();
    let busy = rustix::io::Errno::TXTBSY.raw_os_error();
    let write = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(b"x"));
    assert_eq!(write.map_err(errno), Err(busy), "write");
    let (ok, out) = run("truncate", &["-s", "0", p]);
    assert!(!ok && out.contains("Text file busy"), "truncate: {out}");
    let (ok, out) = run(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={p}"),
            "count=1",
            "conv=notrunc,fsync",
        ],
    );
    assert!(!ok && out.contains("Text file busy"), "dd: {out}");
    let (ok, out) = run("rm", &["-f", p]);
    assert!(!ok && out.contains("Operation not permitted"), "rm: {out}");
    let (ok, out) = run("mv", &[p, m.path("elsewhere").to_str().unwrap()]);
    assert!(!ok && out.contains("Operation not permitted"), "mv: {out}");
    let (ok, out) = run("chattr", &["+c", p]);
    assert!(!ok && out.contains("Invalid argument"), "chattr +c: {out}");
    let (ok, out) = run("fallocate", &["-l", "32M", p]);
    assert!(!ok && out.contains("Text file busy"), "fallocate: {out}");
    let (ok, _) = run("cp", &[p, m.path("copy").to_str().unwrap()]);
    assert!(ok, "reading and copying from it is allowed");
    m.fs.deactivate_swap(swapfile).unwrap();
    let (ok, out) = run("rm", &["-f", p]);
    assert!(ok, "after deactivation rm works: {out}");
    m.finish();
}

/// Four threads append 64-byte records to one log through the writeback cache: every record
/// lands whole, and once the log is closed the engine has all of it (the kernel writes its
/// cached pages back at close), as the unmounted image does after.
#[test]
fn appends_through_the_writeback_cache_land_whole_by_close() {
    let Some(m) = mounted_with(true) else { return };
    let log = m.path("log");
    const RECORDS: usize = 2000;
    std::thread::scope(|s| {
        for writer in 0..4u8 {
            let log = &log;
            s.spawn(move || {
                let mut file = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap();
                for i in 0..RECORDS {
                    let mut record = [b'a' + writer; 64];
                    record[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    file.write_all(&record).unwrap();
                }
            });
        }
    });
    let id = m.fs.resolve("/log").unwrap();
    let mut seen = vec![0u8; 4 * RECORDS * 64];
    assert_eq!(
        m.fs.read(id, 0, &mut seen).unwrap(),
        seen.len(),
        "the engine has it all"
    );
    let mut next = [0u64; 4];
    for record in seen.chunks(64) {
        let writer = usize::from(record[63] - b'a');
        assert!(
            record[8..].iter().all(|b| *b == record[63]),
            "a record torn"
        );
        let i = u64::from_le_bytes(record[..8].try_into().unwrap());
        assert_eq!(i, next[writer], "writer {writer}'s records in order");
        next[writer] += 1;
    }
    assert_eq!(next, [RECORDS as u64; 4]);
    m.finish();
}

/// Through the writeback cache, immutable and append-only files refuse what they refuse
/// without it, at open: a write the kernel cached could no longer be refused to its caller.
#[test]
fn flags_refuse_writes_through_the_writeback_cache() {
    let Some(m) = mounted_with(true) else { return };
    let (log, fixed) = (m.path("log"), m.path("fixed"));
    let (log, fixed) = (log.to_str().unwrap(), fixed.to_str().unwrap());
    fs::write(log, b"first\n").unwrap();
    fs::write(fixed, b"fixed\n").unwrap();
    assert!(run("chattr", &["+a", log]).0 && run("chattr", &["+i", fixed]).0);
    let append = |path: &str| {
        fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(b"more\n"))
    };
    append(log).expect("an append-only file takes appends");
    let overwrite = fs::OpenOptions::new().write(true).open(log);
    assert_eq!(overwrite.unwrap_err().raw_os_error(), Some(libc::EPERM));
    assert_eq!(append(fixed).unwrap_err().raw_os_error(), Some(libc::EPERM));
    assert_eq!(fs::read(log).unwrap(), b"first\nmore\n");
    assert_eq!(fs::read(fixed).unwrap(), b"fixed\n");
    assert!(run("chattr", &["-a", log]).0 && run("chattr", &["-i", fixed]).0);
    m.finish();
}
