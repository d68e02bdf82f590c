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
