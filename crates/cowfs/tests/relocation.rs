//! Balance and resize: every byte of every file, in every snapshot and clone, reads the same
//! afterwards, sharing is preserved, and emptied chunks go back to the device.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use cowfs::device::{BlockDevice, MemoryDevice};
use cowfs::{BalanceFilter, Errno, Filesystem, InodeId, MkfsOptions};

/// Every regular file reachable from the root, across subvolumes: path -> content.
fn contents(fs: &Filesystem) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), fs.root())];
    while let Some((path, dir)) = stack.pop() {
        for e in fs.readdir(dir, None, usize::MAX).unwrap() {
            let p = format!("{path}/{}", String::from_utf8_lossy(&e.name));
            match e.kind {
                cowfs::format::FileKind::Directory => stack.push((p, e.id)),
                cowfs::format::FileKind::Regular => {
                    out.insert(p, read_all(fs, e.id));
                }
                _ => {}
            }
        }
    }
    out
}

fn physical(fs: &Filesystem, id: InodeId) -> Vec<u64> {
    fs.extent_map(id)
        .unwrap()
        .iter()
        .map(|m| m.physical)
        .collect()
}

/// A filesystem whose data is spread thinly over several block groups, with a snapshot and
/// a reflink sharing some of it.
fn spread_out() -> (Arc<dyn BlockDevice>, Filesystem) {
    let (dev, fs) = memory_fs(128 * MIB);
    let root = fs.root();
    for i in 0..24u64 {
        let f = file(&fs, root, &format!("f{i}"));
        fs.write(f, 0, &noise(i, 1_500_000)).unwrap();
        fs.sync().unwrap();
    }
    for i in (0..24).step_by(2) {
        fs.unlink(root, format!("f{i}").as_bytes()).unwrap();
    }
    fs.clone_file(fs.resolve("/f1").unwrap(), file(&fs, root, "clone"))
        .unwrap();
    fs.snapshot(root.subvol, root, b"snap", true).unwrap();
    fs.sync().unwrap();
    (dev, fs)
}

#[test]
fn balance_moves_everything_and_changes_nothing_visible() {
    let (dev, fs) = spread_out();
    let before = contents(&fs);
    let groups_before = fs.info().unwrap().block_groups.len();
    let used = fs.info().unwrap().data_used;
    let mut calls = 0;
    let report = fs
        .balance(
            BalanceFilter {
                usage_below: Some(90),
            },
            &mut |_| calls += 1,
        )
        .unwrap();
    assert!(!report.relocated.is_empty() && !report.cancelled);
    assert!(report.bytes_moved > 0 && calls > 0);
    assert_eq!(
        contents(&fs),
        before,
        "every file, in the snapshot too, reads the same"
    );
    assert_eq!(fs.info().unwrap().data_used, used);
    assert!(
        fs.info().unwrap().block_groups.len() < groups_before,
        "emptied chunks are gone"
    );
    let (f1, clone, snap) = (
        fs.resolve("/f1").unwrap(),
        fs.resolve("/clone").unwrap(),
        fs.resolve("/snap/f1").unwrap(),
    );
    assert_eq!(
        physical(&fs, f1),
        physical(&fs, clone),
        "a clone still shares with its source"
    );
    assert_eq!(
        physical(&fs, f1),
        physical(&fs, snap),
        "and so does the snapshot"
    );
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn a_paused_balance_blocks_other_exclusive_operations_until_cancelled() {
    let (dev, fs) = spread_out();
    let before = contents(&fs);
    let other = fs.clone();
    let mut checker = None;
    let report = fs
        .balance(BalanceFilter::default(), &mut |_| {
            if checker.is_none() {
                fs.pause_balance().unwrap();
                let other = other.clone();
                checker = Some(std::thread::spawn(move || {
                    let busy = other
                        .balance(BalanceFilter::default(), &mut |_| {})
                        .unwrap_err()
                        .errno();
                    let resize = other.resize(64 * MIB, &mut |_| {}).unwrap_err().errno();
                    let readable = other.resolve("/f1").is_ok();
                    other.cancel_balance().unwrap();
                    (busy, resize, readable)
                }));
            }
        })
        .unwrap();
    let (busy, resize, readable) = checker.unwrap().join().unwrap();
    assert_eq!((busy, resize), (Errno::BUSY, Errno::BUSY));
    assert!(
        readable,
        "the filesystem stays usable while balance is paused"
    );
    assert!(report.cancelled);
    assert_eq!(
        fs.cancel_balance().unwrap_err().errno(),
        Errno::INVAL,
        "nothing runs now"
    );
    assert_eq!(contents(&fs), before);
    fs.balance(BalanceFilter::default(), &mut |_| {}).unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn grow_and_shrink() {
    let dev = Arc::new(MemoryDevice::new(48 * MIB));
    Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    let root = fs.root();
    assert_eq!(fs.resize(160 * MIB, &mut |_| {}).unwrap(), 160 * MIB);
    assert_eq!(dev.len(), 160 * MIB);
    for i in 0..10u64 {
        let f = file(&fs, root, &format!("f{i}"));
        fs.write(f, 0, &noise(i, 10 * MIB as usize)).unwrap();
        fs.sync().unwrap();
    }
    for i in 0..8 {
        fs.unlink(root, format!("f{i}").as_bytes()).unwrap();
    }
    fs.sync().unwrap();
    let before = contents(&fs);
    assert_eq!(
        fs.resize(8 * MIB, &mut |_| {}).unwrap_err().errno(),
        Errno::INVAL
    );
    assert_eq!(
        fs.resize(24 * MIB, &mut |_| {}).unwrap_err().errno(),
        Errno::NOSPC,
        "20 MiB of data cannot fit"
    );
    assert_eq!(contents(&fs), before, "a refused shrink loses nothing");
    fs.resize(40 * MIB, &mut |_| {}).unwrap();
    assert_eq!(dev.len(), 40 * MIB);
    assert_eq!(fs.info().unwrap().size, 40 * MIB);
    assert_eq!(contents(&fs), before);
    fs.unmount().unwrap();
    assert_clean(&(dev.clone() as Arc<dyn BlockDevice>));
    let fs = Filesystem::open(dev, &no_timer()).unwrap();
    assert_eq!(contents(&fs), before);
}
