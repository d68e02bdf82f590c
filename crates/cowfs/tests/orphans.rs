//! Open-unlinked files: a held file outlives its last name until released, a crash frees it
//! at the next open, and fsck knows it for what it is.

mod common;

use std::sync::Arc;

use common::*;
use cowfs::device::{BlockDevice, MemoryDevice};
use cowfs::{Errno, Filesystem, RenameFlags};

fn image_of(dev: &Arc<dyn BlockDevice>) -> Vec<u8> {
    let mut image = vec![0u8; dev.len() as usize];
    dev.read_at(0, &mut image).unwrap();
    image
}

#[test]
fn a_held_file_outlives_its_last_name_until_released() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "tmp");
    fs.write(f, 0, &pattern(1, 2 * MIB as usize)).unwrap();
    fs.sync().unwrap();
    let used = fs.info().unwrap().data_used;
    fs.hold(f);
    fs.unlink(fs.root(), b"tmp").unwrap();
    assert_eq!(
        fs.lookup(fs.root(), b"tmp").unwrap_err().errno(),
        Errno::NOENT
    );
    assert_eq!(fs.getattr(f).unwrap().nlink, 0);
    assert_eq!(
        read_all(&fs, f),
        pattern(1, 2 * MIB as usize),
        "its data is still there"
    );
    fs.write(f, 0, b"still writable").unwrap();
    assert_eq!(
        fs.link(f, fs.root(), b"back").unwrap_err().errno(),
        Errno::NOENT,
        "no name can be linked to it again"
    );
    fs.sync().unwrap();
    assert!(
        fs.info().unwrap().data_used >= used,
        "nothing freed while held"
    );
    fs.release(f).unwrap();
    assert!(fs.getattr(f).is_err(), "released: the inode is gone");
    fs.sync().unwrap();
    assert!(fs.info().unwrap().data_used < used, "and its data freed");
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn a_file_replaced_by_rename_is_kept_while_held() {
    let (dev, fs) = memory_fs(64 * MIB);
    let (old, new) = (file(&fs, fs.root(), "old"), file(&fs, fs.root(), "new"));
    fs.write(old, 0, b"old data").unwrap();
    fs.hold(old);
    fs.rename(fs.root(), b"new", fs.root(), b"old", RenameFlags::default())
        .unwrap();
    assert_eq!(read_all(&fs, old), b"old data");
    assert_eq!(fs.lookup(fs.root(), b"old").unwrap(), new);
    fs.release(old).unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn a_crash_with_open_unlinked_files_frees_them_at_the_next_open() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "tmp");
    fs.write(f, 0, &pattern(2, MIB as usize)).unwrap();
    fs.hold(f);
    fs.unlink(fs.root(), b"tmp").unwrap();
    let snap = fs
        .snapshot(fs.root().subvol, fs.root(), b"snap", true)
        .unwrap();
    fs.sync().unwrap();
    // The power goes while the file is still open.
    let crashed: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::from_image(image_of(&dev)));
    drop(fs);
    let report = cowfs::fsck::check(crashed.clone(), &mut |_, _| {});
    assert!(
        report.is_clean(),
        "an orphan is not damage: {:?}",
        report.problems
    );
    assert!(
        report.notes.iter().any(|n| n.contains("open-unlinked")),
        "{:?}",
        report.notes
    );
    let fs = Filesystem::open(crashed.clone(), &no_timer()).unwrap();
    assert!(fs.getattr(f).is_err(), "freed at open");
    assert!(
        fs.getattr(cowfs::InodeId::new(snap, f.ino)).is_err(),
        "and the snapshot's copy too"
    );
    fs.unmount().unwrap();
    let report = cowfs::fsck::check(crashed, &mut |_, _| {});
    assert!(report.is_clean() && report.notes.iter().all(|n| !n.contains("open-unlinked")));
}

#[test]
fn closing_the_filesystem_frees_what_is_still_held() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "tmp");
    fs.write(f, 0, b"x").unwrap();
    fs.hold(f);
    fs.unlink(fs.root(), b"tmp").unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
    let fs = Filesystem::open(dev.clone(), &read_only()).unwrap();
    assert!(fs.getattr(f).is_err());
}

/// generic/035: an empty directory replaced by a rename (or removed) while held open keeps
/// answering getattr until it is released; then it goes.
#[test]
fn a_held_directory_outlives_its_name() {
    let (dev, fs) = memory_fs(32 * MIB);
    let root = fs.root();
    for remove in [false, true] {
        let (a, b) = (dir(&fs, root, "a"), dir(&fs, root, "b"));
        fs.hold(b);
        if remove {
            fs.rmdir(root, b"b").unwrap();
        } else {
            fs.rename(root, b"a", root, b"b", cowfs::RenameFlags::default())
                .unwrap();
        }
        let attr = fs.getattr(b).unwrap();
        assert_eq!(
            (attr.kind, attr.nlink),
            (cowfs::format::FileKind::Directory, 0)
        );
        fs.sync().unwrap();
        let report = cowfs::fsck::check(dev.clone(), &mut |_, _| {});
        assert!(report.is_clean(), "{:?}", report.problems);
        fs.release(b).unwrap();
        assert!(fs.getattr(b).is_err(), "freed at release");
        if !remove {
            fs.rmdir(root, b"b").unwrap();
        }
        let _ = a;
    }
    fs.unmount().unwrap();
    assert_clean(&dev);
}
