//! Transactions: the timer commits, metadata space grows past its first chunk, and what is
//! not committed is not there after a crash.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use cowfs::device::{BlockDevice, MemoryDevice};
use cowfs::{Filesystem, MkfsOptions, OpenOptions};

fn crash_copy(dev: &MemoryDevice) -> Arc<dyn BlockDevice> {
    Arc::new(MemoryDevice::from_image(dev.image()))
}

#[test]
fn the_timer_commits_changes_without_sync() {
    let dev = Arc::new(MemoryDevice::new(32 * MIB));
    Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let opts = OpenOptions {
        read_only: false,
        commit_interval: Some(Duration::from_millis(50)),
        ..OpenOptions::default()
    };
    let fs = Filesystem::open(dev.clone(), &opts).unwrap();
    let f = file(&fs, fs.root(), "timed");
    fs.write(f, 0, b"committed by the timer").unwrap();
    let generation = fs.generation();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fs.generation() == generation {
        assert!(
            std::time::Instant::now() < deadline,
            "the timer never committed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let copy = crash_copy(&dev);
    let after = Filesystem::open(copy, &no_timer()).unwrap();
    assert_eq!(
        read_all(&after, after.resolve("/timed").unwrap()),
        b"committed by the timer"
    );
}

#[test]
fn without_a_commit_nothing_survives_a_crash() {
    let dev = Arc::new(MemoryDevice::new(32 * MIB));
    Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    let f = file(&fs, fs.root(), "kept");
    fs.write(f, 0, b"synced").unwrap();
    fs.fsync(f).unwrap();
    let g = file(&fs, fs.root(), "lost");
    fs.write(g, 0, &[1; 100_000]).unwrap();
    fs.write(f, 0, b"SYNCED").unwrap();
    let copy = crash_copy(&dev);
    let after = Filesystem::open(copy.clone(), &no_timer()).unwrap();
    assert_eq!(read_all(&after, after.resolve("/kept").unwrap()), b"synced");
    assert!(after.resolve("/lost").is_err());
    drop(after);
    assert_clean(&copy);
}

#[test]
fn metadata_space_grows_with_need() {
    let (dev, fs) = memory_fs(64 * MIB);
    let first = fs.info().unwrap().superblock.meta_capacity();
    let root = fs.root();
    let mut n = 0;
    while fs.info().unwrap().superblock.meta_chunks.len() < 2 {
        let d = dir(&fs, root, &format!("dir{n}"));
        for i in 0..200 {
            file(
                &fs,
                d,
                &format!("a-rather-long-file-name-to-fill-metadata-{i}"),
            );
        }
        fs.sync().unwrap();
        n += 1;
        assert!(n < 200, "metadata never outgrew its first {first} bytes");
    }
    assert!(fs.info().unwrap().superblock.meta_capacity() > first);
    fs.unmount().unwrap();
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    assert_eq!(
        fs.readdir(fs.resolve("/dir0").unwrap(), None, usize::MAX)
            .unwrap()
            .len(),
        200
    );
    drop(fs);
    assert_clean(&dev);
}
