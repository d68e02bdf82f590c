//! Namespace behaviour and its errnos: create, link, unlink, rmdir, rename, symlinks.

mod common;

use common::*;
use cowfs::format::FileKind;
use cowfs::{CreateAttrs, Errno, RenameFlags, SetAttr};

#[test]
fn create_lookup_readdir_in_name_order() {
    let (dev, fs) = memory_fs(32 * MIB);
    let root = fs.root();
    for name in ["b", "a", "c"] {
        file(&fs, root, name);
    }
    let d = dir(&fs, root, "d");
    let names: Vec<Vec<u8>> = fs
        .readdir(root, None, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]
    );
    let page = fs.readdir(root, Some(b"b"), 1).unwrap();
    assert_eq!(page[0].name, b"c");
    assert_eq!(fs.getattr(root).unwrap().nlink, 3);
    assert_eq!(fs.getattr(d).unwrap().kind, FileKind::Directory);
    let err = fs
        .create(root, b"a", FileKind::Regular, CreateAttrs::with_mode(0o644))
        .unwrap_err();
    assert_eq!(err.errno(), Errno::EXIST);
    assert_eq!(fs.lookup(root, b"zz").unwrap_err().errno(), Errno::NOENT);
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn invalid_names_are_refused() {
    let (_dev, fs) = memory_fs(32 * MIB);
    let root = fs.root();
    for bad in [&b""[..], b".", b"..", b"a/b", b"nul\0"] {
        let err = fs
            .create(root, bad, FileKind::Regular, CreateAttrs::with_mode(0o644))
            .unwrap_err();
        assert_eq!(err.errno(), Errno::INVAL, "{bad:?}");
    }
    let long = vec![b'x'; 256];
    let err = fs
        .create(
            root,
            &long,
            FileKind::Regular,
            CreateAttrs::with_mode(0o644),
        )
        .unwrap_err();
    assert_eq!(err.errno(), Errno::NAMETOOLONG);
    assert_eq!(
        fs.lookup(root, &long).unwrap_err().errno(),
        Errno::NAMETOOLONG,
        "looking up a name too long to exist says so"
    );
}

#[test]
fn hard_links_share_data_and_count() {
    let (dev, fs) = memory_fs(32 * MIB);
    let root = fs.root();
    let f = file(&fs, root, "f");
    fs.write(f, 0, b"hello").unwrap();
    fs.link(f, root, b"g").unwrap();
    assert_eq!(fs.getattr(f).unwrap().nlink, 2);
    let g = fs.lookup(root, b"g").unwrap();
    assert_eq!(g, f);
    fs.unlink(root, b"f").unwrap();
    assert_eq!(fs.getattr(g).unwrap().nlink, 1);
    assert_eq!(read_all(&fs, g), b"hello");
    let d = dir(&fs, root, "d");
    assert_eq!(fs.link(d, root, b"d2").unwrap_err().errno(), Errno::PERM);
    fs.unlink(root, b"g").unwrap();
    assert_eq!(fs.getattr(f).unwrap_err().errno(), Errno::NOENT);
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn unlink_and_rmdir_errnos() {
    let (dev, fs) = memory_fs(32 * MIB);
    let root = fs.root();
    let d = dir(&fs, root, "d");
    file(&fs, d, "inner");
    assert_eq!(fs.unlink(root, b"d").unwrap_err().errno(), Errno::ISDIR);
    assert_eq!(fs.rmdir(root, b"d").unwrap_err().errno(), Errno::NOTEMPTY);
    assert_eq!(fs.rmdir(d, b"inner").unwrap_err().errno(), Errno::NOTDIR);
    assert_eq!(
        fs.unlink(root, b"missing").unwrap_err().errno(),
        Errno::NOENT
    );
    fs.unlink(d, b"inner").unwrap();
    fs.rmdir(root, b"d").unwrap();
    assert_eq!(fs.getattr(root).unwrap().nlink, 2);
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn rename_replaces_moves_and_refuses_cycles() {
    let (dev, fs) = memory_fs(32 * MIB);
    let root = fs.root();
    let a = file(&fs, root, "a");
    fs.write(a, 0, b"A").unwrap();
    let b = file(&fs, root, "b");
    fs.write(b, 0, b"BB").unwrap();
    fs.rename(root, b"a", root, b"b", RenameFlags::default())
        .unwrap();
    assert_eq!(read_all(&fs, fs.lookup(root, b"b").unwrap()), b"A");
    assert_eq!(
        fs.getattr(b).unwrap_err().errno(),
        Errno::NOENT,
        "the replaced file is gone"
    );

    let d1 = dir(&fs, root, "d1");
    let d2 = dir(&fs, d1, "d2");
    let err = fs
        .rename(root, b"d1", d2, b"x", RenameFlags::default())
        .unwrap_err();
    assert_eq!(err.errno(), Errno::INVAL);
    fs.rename(d1, b"d2", root, b"d2", RenameFlags::default())
        .unwrap();
    assert_eq!(fs.getattr(d1).unwrap().nlink, 2);
    assert_eq!(fs.getattr(root).unwrap().nlink, 4);

    let err = fs
        .rename(root, b"b", root, b"d1", RenameFlags::default())
        .unwrap_err();
    assert_eq!(err.errno(), Errno::ISDIR);
    file(&fs, d1, "occupant");
    let err = fs
        .rename(root, b"d2", root, b"d1", RenameFlags::default())
        .unwrap_err();
    assert_eq!(err.errno(), Errno::NOTEMPTY);
    let noreplace = RenameFlags {
        noreplace: true,
        ..RenameFlags::default()
    };
    assert_eq!(
        fs.rename(root, b"d2", root, b"b", noreplace)
            .unwrap_err()
            .errno(),
        Errno::EXIST
    );

    let exchange = RenameFlags {
        exchange: true,
        ..RenameFlags::default()
    };
    fs.rename(root, b"b", d1, b"occupant", exchange).unwrap();
    assert_eq!(read_all(&fs, fs.lookup(d1, b"occupant").unwrap()), b"A");
    assert_eq!(
        fs.path_of(fs.lookup(d1, b"occupant").unwrap()),
        "/d1/occupant"
    );
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn symlinks_store_their_target() {
    let (dev, fs) = memory_fs(32 * MIB);
    let root = fs.root();
    let l = fs
        .symlink(root, b"l", b"some/where", CreateAttrs::with_mode(0o777))
        .unwrap();
    assert_eq!(fs.readlink(l).unwrap(), b"some/where");
    let a = fs.getattr(l).unwrap();
    assert_eq!((a.kind, a.size), (FileKind::Symlink, 10));
    assert!(fs
        .symlink(root, b"m", b"", CreateAttrs::with_mode(0o777))
        .is_err());
    assert_eq!(fs.readlink(root).unwrap_err().errno(), Errno::INVAL);
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn attributes_change_and_persist() {
    let (dev, fs) = memory_fs(32 * MIB);
    let f = file(&fs, fs.root(), "f");
    let t = cowfs::format::Timespec {
        sec: 1_000_000,
        nsec: 5,
    };
    let set = SetAttr {
        mode: Some(0o600),
        uid: Some(7),
        gid: Some(8),
        mtime: Some(t),
        ..SetAttr::default()
    };
    fs.setattr(f, &set).unwrap();
    fs.unmount().unwrap();
    let fs = cowfs::Filesystem::open(dev.clone(), &no_timer()).unwrap();
    let a = fs.getattr(fs.resolve("/f").unwrap()).unwrap();
    assert_eq!((a.perm, a.uid, a.gid, a.mtime), (0o600, 7, 8, t));
}
