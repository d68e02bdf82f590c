//! File data: COW, holes, truncation, direct I/O, checksums, space accounting, ENOSPC.

mod common;

use common::*;
use cowfs::device::AlignedBuf;
use cowfs::format::ExtentKind;
use cowfs::{Errno, Filesystem, SetAttr};

#[test]
fn sparse_files_read_zeros_in_holes() {
    let (dev, fs) = memory_fs(32 * MIB);
    let f = file(&fs, fs.root(), "sparse");
    fs.write(f, 10 * MIB, b"end").unwrap();
    fs.sync().unwrap();
    let mut buf = vec![1u8; 8192];
    fs.read(f, 5 * MIB, &mut buf).unwrap();
    assert!(buf.iter().all(|b| *b == 0));
    assert_eq!(fs.getattr(f).unwrap().size, 10 * MIB + 3);
    assert_eq!(
        fs.extent_map(f).unwrap().len(),
        1,
        "only the written block is allocated"
    );
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn small_buffered_writes_gather_into_one_extent() {
    let (_dev, fs) = memory_fs(32 * MIB);
    let f = file(&fs, fs.root(), "f");
    for i in 0..1000u64 {
        fs.write(f, i * 100, &[i as u8; 100]).unwrap();
    }
    let map = fs.extent_map(f).unwrap();
    assert_eq!(map.len(), 1);
    assert_eq!(map[0].len, 100_000u64.div_ceil(4096) * 4096);
}

#[test]
fn overwrite_is_copy_on_write_and_frees_the_old_extent_after_commit() {
    let (dev, fs) = memory_fs(32 * MIB);
    let f = file(&fs, fs.root(), "f");
    fs.write(f, 0, &pattern(1, MIB as usize)).unwrap();
    fs.sync().unwrap();
    let before = fs.extent_map(f).unwrap();
    let used_before = fs.info().unwrap().data_used;
    fs.write(f, 0, &pattern(2, MIB as usize)).unwrap();
    fs.sync().unwrap();
    let after = fs.extent_map(f).unwrap();
    assert_ne!(
        before[0].physical, after[0].physical,
        "an overwrite goes to new space"
    );
    assert_eq!(
        fs.info().unwrap().data_used,
        used_before,
        "the old extent was freed"
    );
    assert_eq!(read_all(&fs, f), pattern(2, MIB as usize));
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn blocks_the_running_transaction_allocated_are_overwritten_in_place_unless_shared() {
    let (dev, fs) = memory_fs(32 * MIB);
    let f = file(&fs, fs.root(), "f");
    fs.write_direct(f, 0, &AlignedBuf::from_slice(&pattern(1, 64 << 10)))
        .unwrap();
    let first = fs.extent_map(f).unwrap();
    fs.write_direct(f, 0, &AlignedBuf::from_slice(&pattern(2, 64 << 10)))
        .unwrap();
    assert_eq!(
        fs.extent_map(f).unwrap()[0].physical,
        first[0].physical,
        "no committed state refers to these blocks: rewritten in place"
    );
    let clone = file(&fs, fs.root(), "clone");
    fs.clone_file(f, clone).unwrap();
    fs.write_direct(f, 0, &AlignedBuf::from_slice(&pattern(3, 64 << 10)))
        .unwrap();
    assert_ne!(
        fs.extent_map(f).unwrap()[0].physical,
        first[0].physical,
        "a clone shares them now: copy-on-write"
    );
    assert_eq!(read_all(&fs, clone), pattern(2, 64 << 10));
    assert_eq!(read_all(&fs, f), pattern(3, 64 << 10));
    fs.sync().unwrap();
    let committed = fs.extent_map(clone).unwrap();
    fs.write_direct(clone, 0, &AlignedBuf::from_slice(&pattern(4, 64 << 10)))
        .unwrap();
    assert_ne!(
        fs.extent_map(clone).unwrap()[0].physical,
        committed[0].physical,
        "committed blocks are never overwritten"
    );
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn partial_overwrite_splits_and_keeps_the_rest() {
    let (dev, fs) = memory_fs(32 * MIB);
    let f = file(&fs, fs.root(), "f");
    let mut expect = pattern(1, 256 << 10);
    fs.write(f, 0, &expect).unwrap();
    fs.sync().unwrap();
    fs.write(f, 100_000, &[0xee; 5000]).unwrap();
    expect[100_000..105_000].fill(0xee);
    fs.sync().unwrap();
    assert_eq!(fs.extent_map(f).unwrap().len(), 3);
    assert_eq!(read_all(&fs, f), expect);
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn truncate_shrinks_zeroes_the_tail_and_grows_with_a_hole() {
    let (dev, fs) = memory_fs(32 * MIB);
    let f = file(&fs, fs.root(), "f");
    fs.write(f, 0, &[0xaa; 20_000]).unwrap();
    fs.sync().unwrap();
    fs.setattr(
        f,
        &SetAttr {
            size: Some(5000),
            ..SetAttr::default()
        },
    )
    .unwrap();
    fs.setattr(
        f,
        &SetAttr {
            size: Some(30_000),
            ..SetAttr::default()
        },
    )
    .unwrap();
    fs.sync().unwrap();
    let data = read_all(&fs, f);
    assert!(data[..5000].iter().all(|b| *b == 0xaa));
    assert!(
        data[5000..].iter().all(|b| *b == 0),
        "bytes past the old end read as zeros"
    );
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn direct_io_round_trips_and_needs_alignment() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "d");
    let mut buf = AlignedBuf::zeroed(MIB as usize);
    buf.copy_from_slice(&pattern(3, MIB as usize));
    fs.write_direct(f, 4096, &buf).unwrap();
    assert_eq!(
        fs.write_direct(f, 100, &buf).unwrap_err().errno(),
        Errno::INVAL
    );
    assert_eq!(
        fs.read_direct(f, 0, &mut buf[..1000]).unwrap_err().errno(),
        Errno::INVAL
    );
    fs.write(f, 8192, b"buffered").unwrap();
    let mut back = AlignedBuf::zeroed(MIB as usize);
    assert_eq!(fs.read_direct(f, 4096, &mut back).unwrap(), MIB as usize);
    let mut expect = pattern(3, MIB as usize);
    expect[4096..4104].copy_from_slice(b"buffered");
    assert_eq!(
        &back[..],
        &expect[..],
        "direct reads see buffered writes first"
    );
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn corrupted_data_block_is_eio_naming_file_and_offset() {
    let (dev, fs) = memory_fs(32 * MIB);
    let d = dir(&fs, fs.root(), "dir");
    let f = file(&fs, d, "victim");
    fs.write(f, 0, &pattern(4, 64 << 10)).unwrap();
    let map = fs.extent_map(f).unwrap();
    fs.unmount().unwrap();
    let mut block = vec![0u8; 4096];
    let target = map[0].physical + 8192;
    dev.read_at(target, &mut block).unwrap();
    block[17] ^= 1;
    dev.write_at(target, &block).unwrap();
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    let f = fs.resolve("/dir/victim").unwrap();
    let mut buf = vec![0u8; 4096];
    fs.read(f, 0, &mut buf).unwrap();
    let err = fs.read(f, 8192, &mut buf).unwrap_err();
    assert_eq!(err.errno(), Errno::IO);
    assert!(
        err.reason().contains("/dir/victim") && err.reason().contains("offset 8192"),
        "{err}"
    );
    fs.write(
        f,
        0,
        b"still writable: a bad data block does not stop the filesystem",
    )
    .unwrap();
    fs.sync().unwrap();
    drop(fs);
    let report = cowfs::fsck::check(dev.clone(), &mut |_, _| {});
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("checksum mismatch"));
}

#[test]
fn full_filesystem_gives_enospc_and_stays_consistent() {
    let (dev, fs) = memory_fs(16 * MIB);
    let f = file(&fs, fs.root(), "fill");
    let chunk = vec![0x5au8; 256 << 10];
    let mut written = 0u64;
    let err = loop {
        match fs.write(f, written, &chunk) {
            Ok(_) => written += chunk.len() as u64,
            Err(e) => break e,
        }
        assert!(written < 16 * MIB, "never hit ENOSPC");
    };
    assert_eq!(err.errno(), Errno::NOSPC);
    fs.sync().unwrap();
    assert_eq!(read_all(&fs, f).len() as u64, written);
    fs.unlink(fs.root(), b"fill").unwrap();
    fs.sync().unwrap();
    let g = file(&fs, fs.root(), "again");
    fs.write(g, 0, &chunk).unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn extent_map_reports_kinds() {
    let (_dev, fs) = memory_fs(32 * MIB);
    let f = file(&fs, fs.root(), "f");
    fs.write(f, 0, &[1; 4096]).unwrap();
    let map = fs.extent_map(f).unwrap();
    assert_eq!(map.len(), 1);
    assert_eq!(map[0].kind, ExtentKind::Regular);
    assert!(!map[0].shared);
    assert!(map[0].physical >= 1 << 20);
}

#[test]
fn a_direct_write_replaces_dirty_pages_it_covers() {
    let (dev, fs) = memory_fs(32 * MIB);
    let f = file(&fs, fs.root(), "f");
    fs.write(f, 0, &[0x11; 4 * 4096]).unwrap();
    let mut block = AlignedBuf::zeroed(4096);
    block.fill(0x22);
    fs.write_direct(f, 2 * 4096, &block).unwrap();
    let mut expect = vec![0x11u8; 4 * 4096];
    expect[2 * 4096..3 * 4096].fill(0x22);
    assert_eq!(read_all(&fs, f), expect, "before writeback");
    fs.sync().unwrap();
    assert_eq!(read_all(&fs, f), expect, "after writeback");
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn streaming_writes_are_written_behind_and_read_back() {
    let (dev, fs) = memory_fs(128 * MIB);
    let f = file(&fs, fs.root(), "stream");
    let data = pattern(9, 40 * MIB as usize);
    for (i, piece) in data.chunks(MIB as usize).enumerate() {
        fs.write(f, i as u64 * MIB, piece).unwrap();
    }
    assert!(fs.extent_map(f).unwrap().iter().all(|e| e.len <= 16 * MIB));
    fs.write(f, 5, b"rewrite a chunk that was written behind")
        .unwrap();
    let mut expect = data;
    expect[5..44].copy_from_slice(b"rewrite a chunk that was written behind");
    assert_eq!(read_all(&fs, f), expect);
    fs.unmount().unwrap();
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    assert_eq!(read_all(&fs, fs.resolve("/stream").unwrap()), expect);
    drop(fs);
    assert_clean(&dev);
}

/// Buffered reads of whole blocks run without the engine's lock: while other blocks of the
/// file are rewritten (dirty, written back, committed) and balance moves everything, reads from
/// several threads must still see exactly the blocks that did not change, never an error.
#[test]
fn whole_block_reads_in_parallel_with_rewrites_and_balance_stay_right() {
    let (dev, fs) = memory_fs(96 * MIB);
    let f = file(&fs, fs.root(), "f");
    let blocks = 128u64;
    for b in 0..blocks {
        fs.write(f, b * 4096, &noise(b, 4096)).unwrap();
    }
    fs.sync().unwrap();
    let read = |rng: &mut Rng| {
        // An even block alone, or with its odd neighbours around it.
        let even = rng.below(blocks / 2 - 1) * 2 + 2;
        let (at, len) = match rng.below(2) {
            0 => (even, 1),
            _ => (even - 1, 3),
        };
        let mut buf = vec![0u8; len as usize * 4096];
        assert_eq!(fs.read(f, at * 4096, &mut buf).unwrap(), buf.len());
        let mine = ((even - at) * 4096) as usize;
        assert_eq!(&buf[mine..mine + 4096], &noise(even, 4096)[..], "{even}");
    };
    with_racing_readers(read, || {
        for round in 0..6u64 {
            for b in (1..blocks).step_by(2) {
                fs.write(f, b * 4096, &noise(b + round * 1000, 4096))
                    .unwrap();
            }
            fs.fsync(f).unwrap();
            fs.balance(cowfs::BalanceFilter::default(), &mut |_| {})
                .unwrap();
        }
    });
    fs.unmount().unwrap();
    assert_clean(&dev);
}
