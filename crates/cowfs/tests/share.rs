//! Reflink, dedupe and copy_file_range, and exact sharing.

mod common;

use common::*;
use cowfs::device::AlignedBuf;
use cowfs::format::inode_flags::{IMMUTABLE, NOCOW};
use cowfs::{DedupeOutcome, Errno};

#[test]
fn a_reflinked_copy_shares_until_written_and_sharing_is_exact() {
    let (dev, fs) = memory_fs(64 * MIB);
    let root = fs.root();
    let src = file(&fs, root, "src");
    let data = pattern(1, 3 * MIB as usize + 100);
    fs.write(src, 0, &data).unwrap();
    let dst = file(&fs, root, "dst");
    fs.write(dst, 0, b"old contents, replaced").unwrap();
    fs.clone_file(src, dst).unwrap();
    assert_eq!(read_all(&fs, dst), data);
    let (a, b) = (fs.extent_map(src).unwrap(), fs.extent_map(dst).unwrap());
    assert!(a
        .iter()
        .zip(&b)
        .all(|(x, y)| x.physical == y.physical && x.shared && y.shared));
    let used = fs.info().unwrap().data_used;
    fs.write(dst, 4096, b"changed").unwrap();
    assert_eq!(
        read_all(&fs, src),
        data,
        "writing the copy leaves the source alone"
    );
    fs.unlink(root, b"dst").unwrap();
    fs.sync().unwrap();
    assert!(
        fs.extent_map(src).unwrap().iter().all(|m| !m.shared),
        "no clone left: nothing is shared"
    );
    assert_eq!(fs.info().unwrap().data_used, used);
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn clone_ranges_follow_the_kernel_rules() {
    let (dev, fs) = memory_fs(64 * MIB);
    let root = fs.root();
    let src = file(&fs, root, "src");
    fs.write(src, 0, &pattern(2, 1_000_000)).unwrap();
    let dst = file(&fs, root, "dst");
    assert_eq!(fs.clone_range(src, 4096, dst, 8192, 65536).unwrap(), 65536);
    let got = read_all(&fs, dst);
    assert_eq!(got.len(), 8192 + 65536);
    assert!(got[..8192].iter().all(|b| *b == 0));
    assert_eq!(&got[8192..], &pattern(2, 1_000_000)[4096..4096 + 65536]);
    let inval = |r: cowfs::Result<u64>| assert_eq!(r.unwrap_err().errno(), Errno::INVAL);
    inval(fs.clone_range(src, 100, dst, 0, 4096));
    inval(fs.clone_range(src, 0, dst, 0, 5000));
    inval(fs.clone_range(src, 0, dst, 0, 2_000_000));
    inval(fs.clone_range(src, 0, src, 4096, 8192));
    // An unaligned tail is fine when it ends the source (and reaches the destination's end).
    let tail = file(&fs, root, "tail");
    assert_eq!(fs.clone_range(src, 0, tail, 0, 0).unwrap(), 1_000_000);
    assert_eq!(read_all(&fs, tail), pattern(2, 1_000_000));
    fs.clone_range(src, 0, src, 2 << 20, 65536).unwrap();
    assert_eq!(
        fs.clone_range(src, 0, root, 0, 4096).unwrap_err().errno(),
        Errno::ISDIR
    );
    fs.set_flags(dst, IMMUTABLE).unwrap();
    assert_eq!(
        fs.clone_range(src, 0, dst, 0, 4096).unwrap_err().errno(),
        Errno::PERM
    );
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn a_nocow_file_copies_shared_ranges_on_write_and_owns_them_again_later() {
    let (dev, fs) = memory_fs(64 * MIB);
    let root = fs.root();
    let a = file(&fs, root, "a");
    fs.set_flags(a, NOCOW).unwrap();
    fs.write_direct(a, 0, &AlignedBuf::from_slice(&pattern(3, MIB as usize)))
        .unwrap();
    let b = file(&fs, root, "b");
    fs.set_flags(b, NOCOW).unwrap();
    fs.clone_file(a, b).unwrap();
    let before = fs.extent_map(a).unwrap()[0].physical;
    fs.write_direct(a, 0, &AlignedBuf::from_slice(&pattern(4, 4096)))
        .unwrap();
    let map = fs.extent_map(a).unwrap();
    assert_ne!(
        map[0].physical, before,
        "a shared range is copied, as btrfs does"
    );
    assert_eq!(read_all(&fs, b), pattern(3, MIB as usize));
    fs.unlink(root, b"b").unwrap();
    let again = fs.extent_map(a).unwrap();
    assert!(again.iter().all(|m| !m.shared));
    let tail = again[1].physical;
    fs.write_direct(a, 8192, &AlignedBuf::from_slice(&pattern(5, 4096)))
        .unwrap();
    assert_eq!(
        fs.extent_map(a).unwrap()[1].physical,
        tail,
        "unshared again: written in place"
    );
    let cow = file(&fs, root, "cow");
    assert_eq!(
        fs.clone_file(a, cow).unwrap_err().errno(),
        Errno::INVAL,
        "NOCOW and COW files cannot share"
    );
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn dedupe_shares_only_identical_ranges() {
    let (dev, fs) = memory_fs(64 * MIB);
    let root = fs.root();
    let a = file(&fs, root, "a");
    let b = file(&fs, root, "b");
    fs.write(a, 0, &pattern(6, 256 << 10)).unwrap();
    fs.write(b, 0, &pattern(6, 256 << 10)).unwrap();
    fs.write(b, 200_000, b"different").unwrap();
    assert_eq!(
        fs.dedupe_range(a, 0, b, 0, 128 << 10).unwrap(),
        DedupeOutcome::Deduped(128 << 10)
    );
    assert!(fs.extent_map(b).unwrap()[0].shared);
    assert_eq!(
        fs.dedupe_range(a, 0, b, 0, 256 << 10).unwrap(),
        DedupeOutcome::Differs
    );
    let mut expect = pattern(6, 256 << 10);
    expect[200_000..200_009].copy_from_slice(b"different");
    assert_eq!(read_all(&fs, b), expect);
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn copy_file_range_shares_aligned_data_and_copies_the_rest() {
    let (dev, fs) = memory_fs(64 * MIB);
    let root = fs.root();
    let a = file(&fs, root, "a");
    let data = pattern(7, 1 << 20);
    fs.write(a, 0, &data).unwrap();
    let b = file(&fs, root, "b");
    assert_eq!(
        fs.copy_file_range(a, 100, b, 100, 500_000).unwrap(),
        500_000
    );
    assert!(
        fs.extent_map(b).unwrap().iter().any(|m| m.shared),
        "the aligned middle is shared"
    );
    let c = file(&fs, root, "c");
    assert_eq!(
        fs.copy_file_range(a, 100, c, 7, 10_000_000).unwrap(),
        (1 << 20) - 100,
        "short at the end of the source"
    );
    assert!(
        fs.extent_map(c).unwrap().iter().all(|m| !m.shared),
        "misaligned: copied"
    );
    let got_b = read_all(&fs, b);
    assert_eq!(&got_b[100..], &data[100..500_100]);
    assert_eq!(&read_all(&fs, c)[7..], &data[100..]);
    fs.unmount().unwrap();
    assert_clean(&dev);
}

/// Issue 10, section 0, as fsx found it: a block written since the last commit, shared within
/// the file by copy_file_range, then partly punched through the copy. The punch must copy the
/// shared block, never zero it in place under the original.
#[test]
fn a_punch_in_a_block_shared_within_the_running_transaction_leaves_the_other_copy() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "f");
    fs.write_direct(f, 0x38000, &AlignedBuf::from_slice(&[0xaa; 0xd000]))
        .unwrap();
    fs.setattr(
        f,
        &cowfs::SetAttr {
            size: Some(0x50000),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        fs.copy_file_range(f, 0x37000, f, 0x13000, 0xc000).unwrap(),
        0xc000
    );
    let punch = cowfs::FallocateMode::PunchHole;
    fs.fallocate(f, punch, 0x1b215, 0xbcde).unwrap();
    let mut expect = vec![0u8; 0x50000];
    expect[0x38000..0x45000].fill(0xaa);
    expect.copy_within(0x38000..0x44000, 0x14000);
    expect[0x1b215..0x1b215 + 0xbcde].fill(0);
    assert!(read_all(&fs, f) == expect, "before a commit");
    fs.sync().unwrap();
    assert!(read_all(&fs, f) == expect, "after it");
    fs.unmount().unwrap();
    assert_clean(&dev);
}

/// Every in-place overwrite (running-transaction extents, NOCOW data, preallocated space)
/// copies a block that another record maps, whether that record is another file's or the
/// same file's, and whether the sharing is committed or not.
#[test]
fn in_place_overwrites_never_reach_a_block_shared_within_or_between_files() {
    for nocow in [false, true] {
        for commit_first in [false, true] {
            for prealloc in [false, true] {
                let (dev, fs) = memory_fs(64 * MIB);
                let root = fs.root();
                let (f, g) = (file(&fs, root, "f"), file(&fs, root, "g"));
                if nocow {
                    fs.set_flags(f, NOCOW).unwrap();
                    fs.set_flags(g, NOCOW).unwrap();
                }
                // Two extents: the first is shared within f, the second with g.
                let k = 1024usize;
                for at in [0, 32 * k as u64] {
                    if prealloc {
                        let keep = cowfs::FallocateMode::Allocate { keep_size: false };
                        fs.fallocate(f, keep, at, 32 * 1024).unwrap();
                    } else {
                        let data = AlignedBuf::from_slice(&[1; 32 * 1024]);
                        fs.write_direct(f, at, &data).unwrap();
                    }
                }
                if commit_first {
                    fs.sync().unwrap();
                }
                // Overwrites in place before any sharing, which splits preallocated extents
                // and lets the engine learn that each has one owner; sharing must unlearn it.
                for page in [1u64, 3, 9, 11] {
                    fs.write_direct(f, page * 4096, &AlignedBuf::from_slice(&[2; 4096]))
                        .unwrap();
                }
                fs.clone_range(f, 0, f, 48 * 1024, 8 * 1024).unwrap();
                fs.clone_range(f, 40 * 1024, g, 0, 8 * 1024).unwrap();
                let before = (read_all(&fs, f), read_all(&fs, g));
                // Overwrite each shared range in a different way, from either side.
                // Page 1 was written (no longer preallocated) before it was shared.
                fs.write_direct(f, 4096, &AlignedBuf::from_slice(&[7; 4096]))
                    .unwrap();
                fs.write(f, 52 * 1024 + 100, &[8; 50]).unwrap();
                fs.write(g, 0, &[9; 10]).unwrap();
                let zero = cowfs::FallocateMode::ZeroRange { keep_size: true };
                fs.fallocate(f, zero, 44 * 1024 + 10, 20).unwrap();
                let mut want_f = before.0.clone();
                want_f[4096..8192].fill(7);
                want_f[52 * k + 100..52 * k + 150].fill(8);
                want_f[44 * k + 10..44 * k + 30].fill(0);
                let mut want_g = before.1.clone();
                want_g[..10].fill(9);
                let case = format!("nocow {nocow}, committed {commit_first}, prealloc {prealloc}");
                assert!(read_all(&fs, f) == want_f, "f: {case}");
                assert!(read_all(&fs, g) == want_g, "g: {case}");
                fs.unmount().unwrap();
                assert_clean(&dev);
            }
        }
    }
}

/// A compressed extent cloned from its middle to the start of another file reads back (its
/// decoded offset is past the new file offset; this once underflowed).
#[test]
fn the_middle_of_a_compressed_extent_clones_to_the_start_of_a_file() {
    let (dev, fs) = memory_fs(64 * MIB);
    let (a, b) = (file(&fs, fs.root(), "a"), file(&fs, fs.root(), "b"));
    let data = pattern(3, 150_000);
    fs.write(a, 0, &data).unwrap();
    fs.write(b, 0, &[2u8; 90_000]).unwrap();
    fs.defrag(a, true).unwrap();
    assert!(fs.extent_map(a).unwrap()[0].encoded);
    fs.clone_range(a, 29 * 4096, b, 0, 4096).unwrap();
    assert_eq!(read_all(&fs, b)[..4096], data[29 * 4096..30 * 4096]);
    fs.unmount().unwrap();
    assert_clean(&dev);
}
