//! An fsx-style run through the kernel: thousands of random buffered and direct (O_DIRECT)
//! reads and writes, mmap reads and writes, truncates, preallocations, hole punches, zero
//! ranges, copy_file_range calls at any offsets and block-aligned ones (which share extents:
//! the mount's reflinks), on a file of a mounted cowfs, each checked against a reference copy
//! in memory; then unmount, fsck, mount again and compare once more. No collapse or insert
//! range (cowfs has neither). FICLONERANGE and FIDEDUPERANGE never reach a FUSE filesystem
//! (the kernel answers EOPNOTSUPP itself, docs/MOUNT.md): the run checks that they change
//! nothing. Needs root and /dev/fuse (under CI=true a missing capability fails the test).

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

mod common;

use common::{Scratch, MIB};

const MAX_SIZE: u64 = 4 * MIB;
const OPERATIONS: usize = 10_000;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The file open twice: buffered, and with O_DIRECT.
struct Handles {
    file: File,
    direct: File,
}

impl Handles {
    fn open(path: &std::path::Path, create: bool) -> Handles {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(create)
            .open(path)
            .unwrap();
        let direct = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .unwrap();
        Handles { file, direct }
    }
}

/// One random operation on the file, mirrored on `model`; returns its name for messages.
fn operation(rng: &mut Rng, handles: &Handles, model: &mut Vec<u8>) -> &'static str {
    let file = &handles.file;
    let size = model.len() as u64;
    let offset = rng.below(MAX_SIZE);
    let len = 1 + rng.below(256 << 10);
    let fd = file.as_raw_fd();
    match rng.below(14) {
        10 => direct_write(rng, &handles.direct, model),
        11 => direct_read(rng, &handles.direct, model),
        12 => aligned_copy(rng, fd, model),
        13 => refused_remap(rng, file, model),
        0..=2 => {
            let data: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            let len = len.min(MAX_SIZE - offset);
            file.write_all_at(&data[..len as usize], offset).unwrap();
            write_model(model, offset, &data[..len as usize]);
            "write"
        }
        3 => {
            let mut buf = vec![0u8; len as usize];
            let n = file.read_at(&mut buf, offset).unwrap();
            let want = &model[(offset.min(size) as usize)..((offset + len).min(size) as usize)];
            assert!(
                buf[..n] == *want,
                "read at {offset} len {len}: differs from the model"
            );
            "read"
        }
        4 if size > 0 => {
            let (at, len) = (offset % size, len.min(size - offset % size));
            mapped(file, at, len, |mem| {
                assert!(
                    mem == &model[at as usize..(at + len) as usize],
                    "mapread at {at}"
                )
            });
            "mapread"
        }
        5 if size > 0 => {
            let (at, len) = (offset % size, len.min(size - offset % size));
            let fill = rng.below(256) as u8;
            mapped(file, at, len, |mem| mem.fill(fill));
            model[at as usize..(at + len) as usize].fill(fill);
            "mapwrite"
        }
        6 => {
            let to = rng.below(MAX_SIZE);
            file.set_len(to).unwrap();
            model.resize(to as usize, 0);
            "truncate"
        }
        7 => {
            let len = len.min(MAX_SIZE - offset);
            let (mode, name) = match rng.below(3) {
                0 => (libc::FALLOC_FL_KEEP_SIZE, "fallocate keep-size"),
                1 => (
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    "punch hole",
                ),
                _ => (libc::FALLOC_FL_ZERO_RANGE, "zero range"),
            };
            // SAFETY: fallocate(2) on an open file.
            let rc = unsafe { libc::fallocate(fd, mode, offset as i64, len as i64) };
            assert_eq!(
                rc,
                0,
                "{name} at {offset} len {len}: {}",
                std::io::Error::last_os_error()
            );
            let end = (offset + len) as usize;
            if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && end > model.len() {
                model.resize(end, 0);
            }
            if mode != libc::FALLOC_FL_KEEP_SIZE {
                let stop = end.min(model.len());
                if (offset as usize) < stop {
                    model[offset as usize..stop].fill(0);
                }
            }
            name
        }
        8 if size > 0 => {
            let from = rng.below(size);
            let len = len.min(size - from).min(MAX_SIZE - offset);
            let (mut src, mut dst) = (from as i64, offset as i64);
            // SAFETY: copy_file_range(2) within one open file, ranges from the model.
            let copied =
                unsafe { libc::copy_file_range(fd, &mut src, fd, &mut dst, len as usize, 0) };
            if copied < 0 {
                let e = std::io::Error::last_os_error();
                // Overlapping ranges of one file are EINVAL, as on Linux.
                assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "copy_file_range: {e}");
                return "copy_file_range (overlap refused)";
            }
            let data = model[from as usize..(from + copied as u64) as usize].to_vec();
            write_model(model, offset, &data);
            "copy_file_range"
        }
        _ => {
            file.sync_all().unwrap();
            "fsync"
        }
    }
}

/// A block-aligned O_DIRECT write from a page-aligned buffer.
fn direct_write(rng: &mut Rng, direct: &File, model: &mut Vec<u8>) -> &'static str {
    let (block, blocks) = (rng.below(MAX_SIZE / 4096 - 64), 1 + rng.below(64));
    let mut buf = cowfs::device::AlignedBuf::zeroed(blocks as usize * 4096);
    buf.iter_mut().for_each(|b| *b = rng.below(256) as u8);
    direct.write_all_at(&buf, block * 4096).unwrap();
    write_model(model, block * 4096, &buf);
    "direct write"
}

/// A block-aligned O_DIRECT read, checked against the model.
fn direct_read(rng: &mut Rng, direct: &File, model: &[u8]) -> &'static str {
    let (block, blocks) = (rng.below(MAX_SIZE / 4096), 1 + rng.below(64));
    let mut buf = cowfs::device::AlignedBuf::zeroed(blocks as usize * 4096);
    let n = direct.read_at(&mut buf, block * 4096).unwrap();
    let (from, size) = (block as usize * 4096, model.len());
    let want = &model[from.min(size)..(from + buf.len()).min(size)];
    assert!(buf[..n] == *want, "direct read at block {block}: differs");
    "direct read"
}

/// copy_file_range of whole blocks: the daemon shares the extents (a reflink).
fn aligned_copy(rng: &mut Rng, fd: i32, model: &mut Vec<u8>) -> &'static str {
    let blocks = model.len() as u64 / 4096;
    if blocks == 0 {
        return "aligned copy (empty file)";
    }
    let from = rng.below(blocks);
    let len = (1 + rng.below(32)).min(blocks - from);
    let to = rng.below(MAX_SIZE / 4096 - len);
    let (mut src, mut dst) = ((from * 4096) as i64, (to * 4096) as i64);
    // SAFETY: copy_file_range(2) within one open file, ranges from the model.
    let copied =
        unsafe { libc::copy_file_range(fd, &mut src, fd, &mut dst, len as usize * 4096, 0) };
    if copied < 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "aligned copy: {e}");
        return "aligned copy (overlap refused)";
    }
    assert_eq!(copied as u64, len * 4096, "aligned copy: short");
    let data = model[(from * 4096) as usize..((from + len) * 4096) as usize].to_vec();
    write_model(model, to * 4096, &data);
    "aligned copy"
}

/// FICLONERANGE or FIDEDUPERANGE within the file: the kernel refuses both for FUSE, and the
/// destination keeps its bytes.
fn refused_remap(rng: &mut Rng, file: &File, model: &[u8]) -> &'static str {
    use rustix::ioctl::opcode;
    // _IOW(0x94, 13, struct file_clone_range) and _IOWR(0x94, 54, struct file_dedupe_range).
    const FICLONERANGE: libc::c_ulong = opcode::write::<[u64; 4]>(0x94, 13) as libc::c_ulong;
    const FIDEDUPERANGE: libc::c_ulong = opcode::read_write::<[u64; 3]>(0x94, 54) as libc::c_ulong;
    let fd = file.as_raw_fd();
    let (src, dst) = (rng.below(8) * 4096, (8 + rng.below(8)) * 4096);
    // struct file_clone_range, and struct file_dedupe_range with one destination.
    let clone: [u64; 4] = [fd as u64, src, 4096, dst];
    let mut dedupe: [u64; 6] = [src, 4096, 1, fd as u64, dst, 0];
    let (rc, name) = if rng.below(2) == 0 {
        // SAFETY: the ioctl reads a struct file_clone_range.
        let rc = unsafe { libc::ioctl(fd, FICLONERANGE, clone.as_ptr()) };
        (rc, "clone refused")
    } else {
        // SAFETY: the ioctl reads and writes a file_dedupe_range with one destination.
        let rc = unsafe { libc::ioctl(fd, FIDEDUPERANGE, dedupe.as_mut_ptr()) };
        (rc, "dedupe refused")
    };
    let e = std::io::Error::last_os_error();
    assert_eq!(rc, -1, "{name}: the ioctl succeeded through FUSE");
    assert!(
        [libc::EOPNOTSUPP, libc::EINVAL].contains(&e.raw_os_error().unwrap_or(0)),
        "{name}: {e}"
    );
    let mut buf = vec![0u8; 4096];
    let n = file.read_at(&mut buf, dst).unwrap();
    let at = (dst as usize).min(model.len());
    assert!(
        buf[..n] == model[at..(at + 4096).min(model.len())],
        "{name}: changed data"
    );
    name
}

fn write_model(model: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if model.len() < end {
        model.resize(end, 0);
    }
    model[offset as usize..end].copy_from_slice(data);
}

/// Runs `f` on `len` bytes of `file` at `at`, mapped shared, and syncs what it wrote.
fn mapped(file: &File, at: u64, len: u64, f: impl FnOnce(&mut [u8])) {
    let page = at & !4095;
    let span = (at - page + len) as usize;
    // SAFETY: a shared mapping of a range inside the file, unmapped below.
    unsafe {
        let base = libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            page as i64,
        );
        assert_ne!(
            base,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let mem = std::slice::from_raw_parts_mut(
            base.cast::<u8>().add((at - page) as usize),
            len as usize,
        );
        f(mem);
        assert_eq!(libc::msync(base, span, libc::MS_SYNC), 0);
        libc::munmap(base, span);
    }
}

#[test]
fn random_io_through_the_kernel_matches_a_reference_copy() {
    random_io_matches_a_reference_copy(false);
}

/// The same with the kernel caching writes: they reach the daemon at write-back, in runs of
/// pages, while the other handles' requests go on.
#[test]
fn random_io_through_the_writeback_cache_matches_a_reference_copy() {
    random_io_matches_a_reference_copy(true);
}

/// Serves a parent test's mount (`Scratch::serve_apart`).
#[test]
#[ignore = "run in a child process by the tests that serve their mount apart"]
fn serve_for_a_parent_test() {
    common::serve_for_parent();
}

fn random_io_matches_a_reference_copy(writeback_cache: bool) {
    let Some(scratch) = Scratch::new(256 * MIB) else {
        return;
    };
    // The run maps the file: its server must be another process.
    let mounted = scratch.serve_apart("serve_for_a_parent_test", writeback_cache);
    let path = scratch.path("fsx");
    let mut model = Vec::new();
    // FSX_SEED=N runs another sequence (for soaking beyond the test command).
    let seed = std::env::var("FSX_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f5c5);
    let mut rng = Rng(seed.max(1));
    let mut handles = Handles::open(&path, true);
    let mut log: Vec<&str> = Vec::new();
    for step in 0..OPERATIONS {
        log.push(operation(&mut rng, &handles, &mut model));
        if step % 500 == 499 {
            // Close and open again: nothing may live only in the open file.
            handles = Handles::open(&path, false);
            assert!(
                fs::read(&path).unwrap() == model,
                "seed {seed}, after step {step} ({:?})",
                &log[log.len() - 5..]
            );
        }
    }
    drop(handles);
    assert!(
        fs::read(&path).unwrap() == model,
        "seed {seed}: whole file at the end"
    );
    for kind in [
        "write",
        "read",
        "mapread",
        "mapwrite",
        "truncate",
        "punch hole",
        "zero range",
        "copy_file_range",
        "direct write",
        "direct read",
        "aligned copy",
        "fsync",
    ] {
        let runs = log.iter().filter(|l| **l == kind).count();
        assert!(
            runs >= 40,
            "{kind} ran {runs} times: the run did not exercise it"
        );
    }
    mounted.unmount();
    scratch.assert_clean();
    let mounted = scratch.mount();
    assert!(
        fs::read(&path).unwrap() == model,
        "seed {seed}: after a remount"
    );
    mounted.unmount();
}

/// Four threads write one file with O_DIRECT at once (the mount lets their writes run in
/// parallel), each its own blocks in random order, while another handle holds the file's
/// pages cached: every block lands, and the cached reader sees them all.
#[test]
fn direct_writers_on_one_file_all_land_and_cached_readers_see_them() {
    let Some(scratch) = Scratch::new(256 * MIB) else {
        return;
    };
    let mounted = scratch.mount();
    let path = scratch.path("shared");
    const BLOCKS: u64 = 4096;
    fs::write(&path, vec![0xee; (BLOCKS * 4096) as usize]).unwrap();
    let cached = File::open(&path).unwrap();
    let mut before = vec![0; (BLOCKS * 4096) as usize];
    cached.read_exact_at(&mut before, 0).unwrap();
    let block_of = |n: u64| -> Vec<u8> { (0..4096).map(|i| (n as u8) ^ (i as u8)).collect() };
    std::thread::scope(|s| {
        for writer in 0..4u64 {
            let (path, block_of) = (&path, &block_of);
            s.spawn(move || {
                let direct = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(path)
                    .unwrap();
                let mut mine: Vec<u64> = (writer..BLOCKS).step_by(4).collect();
                let mut rng = Rng(0x5eed ^ writer);
                for i in (1..mine.len()).rev() {
                    mine.swap(i, rng.below(i as u64 + 1) as usize);
                }
                let mut buf = cowfs::device::AlignedBuf::zeroed(4096);
                for n in mine {
                    buf.copy_from_slice(&block_of(n));
                    direct.write_all_at(&buf, n * 4096).unwrap();
                }
            });
        }
    });
    let mut after = vec![0; (BLOCKS * 4096) as usize];
    cached.read_exact_at(&mut after, 0).unwrap();
    for n in 0..BLOCKS {
        let at = (n * 4096) as usize;
        assert!(
            after[at..at + 4096] == block_of(n),
            "block {n} as the cached reader sees it"
        );
    }
    drop(cached);
    mounted.unmount();
    scratch.assert_clean();
}
