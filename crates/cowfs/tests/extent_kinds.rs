//! NOCOW writes in place, preallocation and its conversion, hole punching, zeroing.

mod common;

use std::sync::Arc;

use common::*;
use cowfs::device::{AlignedBuf, BlockDevice, MemoryDevice};
use cowfs::format::inode_flags::{APPEND, IMMUTABLE, NOCOW};
use cowfs::format::ExtentKind;
use cowfs::{Errno, FallocateMode, Filesystem};

fn corrupt(dev: &Arc<dyn BlockDevice>, physical: u64) {
    let mut block = vec![0u8; 4096];
    dev.read_at(physical, &mut block).unwrap();
    block[10] ^= 0xff;
    dev.write_at(physical, &block).unwrap();
}

#[test]
fn nocow_overwrites_in_place_without_checksums() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "nocow");
    fs.set_flags(f, NOCOW).unwrap();
    fs.write(f, 0, &pattern(1, MIB as usize)).unwrap();
    fs.sync().unwrap();
    let before = fs.extent_map(f).unwrap();
    fs.write(f, 8192, &pattern(2, 100_000)).unwrap();
    fs.write_direct(f, 512 << 10, &AlignedBuf::from_slice(&pattern(3, 65536)))
        .unwrap();
    fs.sync().unwrap();
    assert_eq!(
        fs.extent_map(f).unwrap(),
        before,
        "NOCOW writes stay where the data was"
    );
    let mut expect = pattern(1, MIB as usize);
    expect[8192..108_192].copy_from_slice(&pattern(2, 100_000));
    expect[512 << 10..(512 << 10) + 65536].copy_from_slice(&pattern(3, 65536));
    assert_eq!(read_all(&fs, f), expect);
    fs.unmount().unwrap();
    corrupt(&dev, before[0].physical);
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    let f = fs.resolve("/nocow").unwrap();
    assert_eq!(
        read_all(&fs, f).len(),
        MIB as usize,
        "no checksums: damage is not detected"
    );
    drop(fs);
    assert_clean(&dev);
}

#[test]
fn a_copy_on_write_file_moves_on_overwrite() {
    let (_dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "cow");
    fs.write(f, 0, &pattern(1, 65536)).unwrap();
    fs.sync().unwrap();
    let before = fs.extent_map(f).unwrap()[0].physical;
    fs.write(f, 0, &pattern(2, 4096)).unwrap();
    assert_ne!(fs.extent_map(f).unwrap()[0].physical, before);
}

/// Page-sized copy-on-write writes in file order (swap-out) grow one extent of the running
/// transaction instead of making one each, up to 1 MiB; a snapshot, a commit or a gap stops
/// the growth; the committed state is never touched (a crash before the commit finds the old
/// data), and checksums cover every page.
#[test]
fn sequential_copy_on_write_pages_grow_one_fresh_extent() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "swapish");
    fs.write(f, 0, &pattern(1, 2 * MIB as usize)).unwrap();
    fs.sync().unwrap();
    let page = |n: u64| AlignedBuf::from_slice(&noise(n, 4096));
    for n in 0..384 {
        fs.write_direct(f, n * 4096, &page(n)).unwrap();
    }
    let map = fs.extent_map(f).unwrap();
    let lens: Vec<u64> = map.iter().map(|m| m.len).collect();
    assert_eq!(
        &lens[..2],
        &[MIB, 512 << 10],
        "grown to 1 MiB, then a new one: {lens:?}"
    );
    // A gap (page 400) starts another; pages after it join that one.
    fs.write_direct(f, 400 * 4096, &page(400)).unwrap();
    fs.write_direct(f, 401 * 4096, &page(401)).unwrap();
    assert!(fs
        .extent_map(f)
        .unwrap()
        .iter()
        .any(|m| m.file_offset == 400 * 4096 && m.len == 8192));
    // What a crash now finds: the last commit, whole.
    let mut image = vec![0u8; 64 * MIB as usize];
    dev.read_at(0, &mut image).unwrap();
    let crashed: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::from_image(image));
    let before = Filesystem::open(crashed.clone(), &read_only()).unwrap();
    let old = before.resolve("/swapish").unwrap();
    assert_eq!(read_all(&before, old), pattern(1, 2 * MIB as usize));
    drop(before);
    assert_clean(&crashed);
    fs.sync().unwrap();
    // Committed now: the next write starts a new extent rather than growing a committed one.
    fs.write_direct(f, 402 * 4096, &page(402)).unwrap();
    let map = fs.extent_map(f).unwrap();
    assert!(
        map.iter()
            .any(|m| m.file_offset == 402 * 4096 && m.len == 4096),
        "{map:?}"
    );
    let mut want = pattern(1, 2 * MIB as usize);
    for n in (0..384).chain(400..403) {
        want[n as usize * 4096..][..4096].copy_from_slice(&noise(n, 4096));
    }
    assert_eq!(read_all(&fs, f), want);
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn preallocated_space_reads_zeros_and_is_written_in_place() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "pre");
    fs.fallocate(f, FallocateMode::Allocate { keep_size: false }, 0, MIB)
        .unwrap();
    assert_eq!(fs.getattr(f).unwrap().size, MIB);
    assert!(read_all(&fs, f).iter().all(|b| *b == 0));
    let map = fs.extent_map(f).unwrap();
    assert!(map.iter().all(|m| m.kind == ExtentKind::Prealloc));
    let base = map[0].physical;
    fs.write(f, 65536, &pattern(4, 8192)).unwrap();
    fs.sync().unwrap();
    let map = fs.extent_map(f).unwrap();
    let kinds: Vec<ExtentKind> = map.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        vec![
            ExtentKind::Prealloc,
            ExtentKind::Regular,
            ExtentKind::Prealloc
        ]
    );
    assert_eq!(
        map[1].physical,
        base + 65536,
        "the write went where the space was preallocated"
    );
    let mut expect = vec![0u8; MIB as usize];
    expect[65536..73728].copy_from_slice(&pattern(4, 8192));
    assert_eq!(read_all(&fs, f), expect);
    fs.unmount().unwrap();
    assert_clean(&dev);
    corrupt(&dev, base + 65536);
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    let f = fs.resolve("/pre").unwrap();
    let err = fs.read(f, 65536, &mut [0u8; 4096]).unwrap_err();
    assert_eq!(
        err.errno(),
        Errno::IO,
        "written preallocated blocks are checksummed"
    );
}

#[test]
fn keep_size_allocates_past_the_end() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "k");
    fs.write(f, 0, b"abc").unwrap();
    fs.fallocate(f, FallocateMode::Allocate { keep_size: true }, 0, 4 * MIB)
        .unwrap();
    assert_eq!(fs.getattr(f).unwrap().size, 3);
    assert_eq!(read_all(&fs, f), b"abc");
    assert!(fs.getattr(f).unwrap().allocated >= 4 * MIB);
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn punch_hole_frees_whole_extents_and_zeroes_partial_blocks() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "p");
    let mut expect = pattern(5, 2 * MIB as usize);
    for half in 0..2u64 {
        let range = (half * MIB) as usize..((half + 1) * MIB) as usize;
        fs.write_direct(f, half * MIB, &AlignedBuf::from_slice(&expect[range]))
            .unwrap();
    }
    fs.sync().unwrap();
    let used = fs.info().unwrap().data_used;
    fs.fallocate(f, FallocateMode::PunchHole, 1000, 2 * MIB - 1000)
        .unwrap();
    expect[1000..].fill(0);
    assert_eq!(
        fs.getattr(f).unwrap().size,
        2 * MIB,
        "punching never changes the size"
    );
    assert_eq!(read_all(&fs, f), expect);
    fs.sync().unwrap();
    // Zeroing the tail of block 0 rewrote it (copy-on-write), so both original extents lost
    // every reference and were freed; one new block holds the 1000 bytes kept.
    assert_eq!(used, 2 * MIB);
    assert_eq!(fs.info().unwrap().data_used, 4096);
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn zero_range_reads_zeros_and_stays_allocated() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "z");
    let mut expect = pattern(6, MIB as usize);
    fs.write(f, 0, &expect).unwrap();
    fs.fallocate(
        f,
        FallocateMode::ZeroRange { keep_size: false },
        4096,
        2 * MIB,
    )
    .unwrap();
    expect.resize(4096 + 2 * MIB as usize, 0);
    expect[4096..].fill(0);
    assert_eq!(read_all(&fs, f), expect);
    assert!(fs
        .extent_map(f)
        .unwrap()
        .iter()
        .any(|m| m.kind == ExtentKind::Prealloc));
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn fallocate_errors() {
    let (_dev, fs) = memory_fs(16 * MIB);
    let f = file(&fs, fs.root(), "f");
    let allocate = FallocateMode::Allocate { keep_size: false };
    assert_eq!(
        fs.fallocate(f, allocate, 0, 0).unwrap_err().errno(),
        Errno::INVAL
    );
    assert_eq!(
        fs.fallocate(f, allocate, 0, 64 * MIB).unwrap_err().errno(),
        Errno::NOSPC
    );
    assert_eq!(
        fs.getattr(f).unwrap().size,
        0,
        "a refused fallocate changes nothing"
    );
    fs.set_flags(f, APPEND).unwrap();
    fs.fallocate(f, FallocateMode::Allocate { keep_size: true }, 0, MIB)
        .unwrap();
    assert_eq!(
        fs.fallocate(f, FallocateMode::PunchHole, 0, 4096)
            .unwrap_err()
            .errno(),
        Errno::PERM
    );
    fs.set_flags(f, IMMUTABLE).unwrap();
    assert_eq!(
        fs.fallocate(f, allocate, 0, 4096).unwrap_err().errno(),
        Errno::PERM
    );
    assert_eq!(
        fs.fallocate(fs.root(), allocate, 0, 4096)
            .unwrap_err()
            .errno(),
        Errno::ISDIR
    );
}

#[test]
fn a_nocow_file_can_be_preallocated_and_written_in_place() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "swapish");
    fs.set_flags(f, NOCOW).unwrap();
    fs.fallocate(f, FallocateMode::Allocate { keep_size: false }, 0, 4 * MIB)
        .unwrap();
    let base = fs.extent_map(f).unwrap()[0].physical;
    let page = AlignedBuf::from_slice(&pattern(7, 4096));
    for i in (0..1024).step_by(97) {
        fs.write_direct(f, i * 4096, &page).unwrap();
    }
    fs.sync().unwrap();
    let map = fs.extent_map(f).unwrap();
    assert!(
        map.iter().all(|m| m.physical == base + m.file_offset),
        "every write stayed in place"
    );
    fs.unmount().unwrap();
    assert_clean(&dev);
}

/// generic/568: a preallocated range is written in place, so writing it never needs more space,
/// even when the filesystem is full.
#[test]
fn writes_into_preallocated_space_never_meet_enospc() {
    let (dev, fs) = memory_fs(64 * MIB);
    for nocow in [false, true] {
        let name = format!("f{nocow}");
        let f = file(&fs, fs.root(), &name);
        if nocow {
            fs.set_flags(f, cowfs::format::inode_flags::NOCOW).unwrap();
        }
        let keep = FallocateMode::Allocate { keep_size: false };
        let free = fs.info().unwrap().free;
        // Take everything left, less a little to grow metadata.
        let len = (free - 2 * MIB) / 4096 * 4096;
        fs.fallocate(f, keep, 0, len).unwrap();
        let filler = file(&fs, fs.root(), &format!("filler{nocow}"));
        let mut at = 0;
        while fs.write(filler, at, &[1u8; 65536]).is_ok() {
            at += 65536;
        }
        fs.sync().unwrap();
        for (offset, n) in [
            (0u64, 4096usize),
            (len / 2 + 100, 100_000),
            (len - 65536, 65536),
        ] {
            fs.write(f, offset, &vec![9u8; n])
                .unwrap_or_else(|e| panic!("nocow {nocow}, write at {offset}: {e}"));
        }
        fs.sync().unwrap();
        let back = read_all(&fs, f);
        assert!(back[..4096].iter().all(|b| *b == 9));
        assert!(back[(len - 65536) as usize..].iter().all(|b| *b == 9));
        fs.unlink(fs.root(), name.as_bytes()).unwrap();
        fs.unlink(fs.root(), format!("filler{nocow}").as_bytes())
            .unwrap();
        fs.sync().unwrap();
    }
    fs.unmount().unwrap();
    assert_clean(&dev);
}
