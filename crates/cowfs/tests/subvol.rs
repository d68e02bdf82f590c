//! Subvolumes and snapshots: independent inode spaces, copy-on-write snapshots, read-only
//! snapshots, deletion, and exact sharing.

mod common;

use common::*;
use cowfs::format::inode_flags::NOCOW;
use cowfs::format::FileKind;
use cowfs::{CreateAttrs, Errno, Filesystem, RenameFlags, SetAttr};

#[test]
fn a_subvolume_is_its_own_inode_space() {
    let (dev, fs) = memory_fs(64 * MIB);
    let root = fs.root();
    let a = file(&fs, root, "a");
    let id = fs.create_subvolume(root, b"vol").unwrap();
    let vol = fs.resolve("/vol").unwrap();
    assert_eq!(vol.subvol, id);
    let inner = file(&fs, vol, "a");
    assert_eq!(inner.ino, a.ino, "inode numbers repeat across subvolumes");
    assert_ne!(inner, a, "but identities do not");
    fs.write(inner, 0, b"inside").unwrap();
    assert_eq!(fs.path_of(inner), "/vol/a");
    assert_eq!(fs.link(inner, root, b"x").unwrap_err().errno(), Errno::XDEV);
    assert_eq!(
        fs.rename(vol, b"a", root, b"b", RenameFlags::default())
            .unwrap_err()
            .errno(),
        Errno::XDEV
    );
    let subdir = dir(&fs, root, "d");
    fs.rename(root, b"vol", subdir, b"moved", RenameFlags::default())
        .unwrap();
    let list = fs.list_subvolumes().unwrap();
    assert_eq!(
        list.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(),
        vec!["/", "/d/moved"]
    );
    fs.unmount().unwrap();
    assert_clean(&dev);
    let fs = Filesystem::open(dev, &no_timer()).unwrap();
    assert_eq!(read_all(&fs, fs.resolve("/d/moved/a").unwrap()), b"inside");
}

#[test]
fn a_snapshot_shares_everything_until_either_side_writes() {
    let (dev, fs) = memory_fs(64 * MIB);
    let root = fs.root();
    let vol = fs.create_subvolume(root, b"vol").unwrap();
    let dir_id = fs.resolve("/vol").unwrap();
    let f = file(&fs, dir_id, "f");
    let data = pattern(1, 2 * MIB as usize);
    fs.write(f, 0, &data).unwrap();
    let snap = fs.snapshot(vol, root, b"snap", false).unwrap();
    let g = fs.resolve("/snap/f").unwrap();
    assert_eq!(g.subvol, snap);
    assert_eq!(
        read_all(&fs, g),
        data,
        "the snapshot holds the buffered data too"
    );
    assert!(fs.extent_map(f).unwrap().iter().all(|m| m.shared));
    fs.write(g, 0, b"snapshot side").unwrap();
    fs.write(f, MIB, b"source side").unwrap();
    let mut source = data.clone();
    source[MIB as usize..MIB as usize + 11].copy_from_slice(b"source side");
    let mut copy = data;
    copy[..13].copy_from_slice(b"snapshot side");
    assert_eq!(read_all(&fs, f), source);
    assert_eq!(read_all(&fs, g), copy);
    fs.delete_subvolume(root, b"snap").unwrap();
    assert!(
        fs.extent_map(f).unwrap().iter().all(|m| !m.shared),
        "sharing ends with the last snapshot"
    );
    assert!(fs.resolve("/snap").is_err());
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn a_read_only_snapshot_refuses_changes() {
    let (dev, fs) = memory_fs(64 * MIB);
    let root = fs.root();
    let f = file(&fs, root, "f");
    fs.write(f, 0, b"frozen").unwrap();
    fs.snapshot(fs.root().subvol, root, b"ro", true).unwrap();
    let g = fs.resolve("/ro/f").unwrap();
    let snap_root = fs.resolve("/ro").unwrap();
    let rofs = |r: cowfs::Result<()>| assert_eq!(r.unwrap_err().errno(), Errno::ROFS);
    rofs(fs.write(g, 0, b"x").map(drop));
    rofs(
        fs.setattr(
            g,
            &SetAttr {
                size: Some(0),
                ..SetAttr::default()
            },
        )
        .map(drop),
    );
    rofs(fs.unlink(snap_root, b"f"));
    rofs(
        fs.create(
            snap_root,
            b"new",
            FileKind::Regular,
            CreateAttrs::with_mode(0o644),
        )
        .map(drop),
    );
    rofs(fs.set_flags(g, NOCOW).map(drop));
    assert_eq!(read_all(&fs, g), b"frozen");
    let list = fs.list_subvolumes().unwrap();
    let snap = list.iter().find(|s| s.path == "/ro").unwrap();
    assert!(snap.read_only && snap.snapshot_of == root.subvol);
    fs.set_subvolume_read_only(snap.id, false).unwrap();
    fs.write(g, 0, b"thawed").unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn deleting_a_subvolume_frees_its_space() {
    let (dev, fs) = memory_fs(64 * MIB);
    let root = fs.root();
    fs.sync().unwrap();
    let before = fs.info().unwrap().data_used;
    fs.create_subvolume(root, b"vol").unwrap();
    let vol = fs.resolve("/vol").unwrap();
    let d = dir(&fs, vol, "d");
    for i in 0..10 {
        let f = file(&fs, d, &format!("f{i}"));
        fs.write(f, 0, &pattern(i, 300_000)).unwrap();
    }
    fs.sync().unwrap();
    assert!(fs.info().unwrap().data_used > before);
    assert_eq!(fs.rmdir(root, b"vol").unwrap_err().errno(), Errno::NOTEMPTY);
    fs.delete_subvolume(root, b"vol").unwrap();
    fs.sync().unwrap();
    assert_eq!(fs.info().unwrap().data_used, before);
    fs.create_subvolume(root, b"empty").unwrap();
    fs.rmdir(root, b"empty").unwrap();
    assert!(fs.list_subvolumes().unwrap().len() == 1);
    assert_eq!(
        fs.delete_subvolume(root, b"missing").unwrap_err().errno(),
        Errno::NOENT
    );
    dir(&fs, root, "plain");
    assert_eq!(
        fs.delete_subvolume(root, b"plain").unwrap_err().errno(),
        Errno::INVAL
    );
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn snapshots_do_not_descend_into_nested_subvolumes() {
    let (dev, fs) = memory_fs(64 * MIB);
    let root = fs.root();
    let outer = fs.create_subvolume(root, b"outer").unwrap();
    let outer_dir = fs.resolve("/outer").unwrap();
    fs.create_subvolume(outer_dir, b"inner").unwrap();
    file(&fs, outer_dir, "kept");
    fs.snapshot(outer, root, b"snap", false).unwrap();
    let snap = fs.resolve("/snap").unwrap();
    let names: Vec<Vec<u8>> = fs
        .readdir(snap, None, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec![b"kept".to_vec()]);
    assert_eq!(fs.getattr(snap).unwrap().nlink, 2);
    assert_eq!(
        fs.delete_subvolume(root, b"outer").unwrap_err().errno(),
        Errno::NOTEMPTY
    );
    fs.unmount().unwrap();
    assert_clean(&dev);
}

/// Snapshots on a filesystem whose data filled the device: each one either fits or is refused
/// with ENOSPC up front; the metadata store never runs out halfway (which would stop the
/// filesystem), and the filesystem stays writable.
#[test]
fn snapshots_on_a_full_filesystem_are_enospc_and_change_nothing() {
    let (dev, fs) = memory_fs(64 * MIB);
    let d = dir(&fs, fs.root(), "d");
    for i in 0..4000 {
        let f = file(&fs, d, &format!("f{i}"));
        fs.write(f, 0, &[7u8; 5000]).unwrap();
    }
    let big = file(&fs, fs.root(), "big");
    let mut at = 0;
    while fs.write(big, at, &[1u8; 1 << 20]).is_ok() {
        at += 1 << 20;
    }
    fs.sync().unwrap();
    let mut refused = 0;
    for n in 0..6 {
        let name = format!("snap{n}");
        let before = fs.generation();
        match fs.snapshot(fs.root().subvol, fs.root(), name.as_bytes(), true) {
            Ok(_) => fs.sync().unwrap(),
            Err(e) => {
                assert_eq!(e.errno(), Errno::NOSPC, "{e}");
                assert!(fs.resolve(&format!("/{name}")).is_err(), "nothing made");
                assert_eq!(fs.generation(), before);
                refused += 1;
            }
        }
        dir(&fs, fs.root(), &format!("after{n}"));
        fs.sync().unwrap();
    }
    assert!(refused > 0, "the metadata space ran out");
    fs.unmount().unwrap();
    assert_clean(&dev);
}
