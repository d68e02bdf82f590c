//! An fsx-style run through the kernel: thousands of random reads, writes, mmap reads and
//! writes, truncates, preallocations, hole punches, zero ranges and copy_file_range calls on a
//! file of a mounted cowfs, each checked against a reference copy in memory; then unmount,
//! fsck, mount again and compare once more. Needs root and /dev/fuse (under CI=true a missing
//! capability fails the test).

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

mod common;

use common::{Scratch, MIB};

const MAX_SIZE: u64 = 4 * MIB;
const OPERATIONS: usize = 4000;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One random operation on `file`, mirrored on `model`; returns its name for messages.
fn operation(rng: &mut Rng, file: &File, model: &mut Vec<u8>) -> &'static str {
    let size = model.len() as u64;
    let offset = rng.below(MAX_SIZE);
    let len = 1 + rng.below(256 << 10);
    let fd = file.as_raw_fd();
    match rng.below(10) {
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
    let Some(scratch) = Scratch::new(256 * MIB) else {
        return;
    };
    let mounted = scratch.mount();
    let path = scratch.path("fsx");
    let mut model = Vec::new();
    let mut rng = Rng(0x5eed_f5c5);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let mut log: Vec<&str> = Vec::new();
    for step in 0..OPERATIONS {
        log.push(operation(&mut rng, &file, &mut model));
        if step % 500 == 499 {
            // Close and open again: nothing may live only in the open file.
            file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            assert!(
                fs::read(&path).unwrap() == model,
                "after step {step} ({:?})",
                &log[log.len() - 5..]
            );
        }
    }
    drop(file);
    assert!(fs::read(&path).unwrap() == model, "whole file at the end");
    for kind in [
        "write",
        "read",
        "mapread",
        "mapwrite",
        "truncate",
        "punch hole",
        "zero range",
        "copy_file_range",
        "fsync",
    ] {
        let runs = log.iter().filter(|l| **l == kind).count();
        assert!(
            runs >= 50,
            "{kind} ran {runs} times: the run did not exercise it"
        );
    }
    mounted.unmount();
    scratch.assert_clean();
    let mounted = scratch.mount();
    assert!(fs::read(&path).unwrap() == model, "after a remount");
    mounted.unmount();
}
