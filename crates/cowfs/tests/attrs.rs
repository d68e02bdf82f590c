//! File flags (chattr/lsattr) and the rules they impose.

mod common;

use common::*;
use cowfs::device::AlignedBuf;
use cowfs::format::inode_flags::{APPEND, COMPRESS, IMMUTABLE, NOCOMPRESS, NOCOW};
use cowfs::format::FileKind;
use cowfs::{CreateAttrs, Errno, Filesystem, RenameFlags, SetAttr};

fn flags(fs: &Filesystem, id: cowfs::InodeId) -> u64 {
    fs.getattr(id).unwrap().flags
}

#[test]
fn nocow_changes_only_on_an_empty_file() {
    let (_dev, fs) = memory_fs(32 * MIB);
    let empty = file(&fs, fs.root(), "empty");
    assert_eq!(fs.set_flags(empty, NOCOW).unwrap(), NOCOW);
    assert_eq!(fs.set_flags(empty, 0).unwrap(), 0);
    let full = file(&fs, fs.root(), "full");
    fs.write(full, 0, b"data").unwrap();
    assert_eq!(
        fs.set_flags(full, NOCOW).unwrap(),
        0,
        "+C on a non-empty file is silently ignored"
    );
    fs.set_flags(empty, NOCOW).unwrap();
    fs.write(empty, 0, b"data").unwrap();
    assert_eq!(
        fs.set_flags(empty, 0).unwrap(),
        NOCOW,
        "-C on a non-empty file is silently ignored"
    );
}

#[test]
fn a_directory_passes_nocow_and_compression_to_new_files() {
    let (_dev, fs) = memory_fs(32 * MIB);
    let d = dir(&fs, fs.root(), "d");
    fs.set_flags(d, NOCOW).unwrap();
    let f = file(&fs, d, "f");
    let sub = dir(&fs, d, "sub");
    assert_eq!(flags(&fs, f), NOCOW);
    assert_eq!(flags(&fs, file(&fs, sub, "g")), NOCOW);
    let c = dir(&fs, fs.root(), "c");
    fs.set_flags(c, COMPRESS).unwrap();
    assert_eq!(flags(&fs, file(&fs, c, "f")), COMPRESS);
}

#[test]
fn nocow_and_compression_exclude_each_other() {
    let (_dev, fs) = memory_fs(32 * MIB);
    let f = file(&fs, fs.root(), "f");
    fs.set_flags(f, NOCOW).unwrap();
    assert_eq!(
        fs.set_flags(f, NOCOW | COMPRESS).unwrap_err().errno(),
        Errno::INVAL
    );
    assert_eq!(flags(&fs, f), NOCOW, "a refused change changes nothing");
    let g = file(&fs, fs.root(), "g");
    fs.set_flags(g, COMPRESS).unwrap();
    fs.write(g, 0, b"x").unwrap();
    assert_eq!(
        fs.set_flags(g, COMPRESS | NOCOW).unwrap_err().errno(),
        Errno::INVAL
    );
    assert_eq!(
        fs.set_flags(g, COMPRESS | NOCOMPRESS).unwrap_err().errno(),
        Errno::INVAL
    );
    assert_eq!(
        fs.set_flags(g, 0x0200_0000).unwrap_err().errno(),
        Errno::NOTSUP
    );
    assert_eq!(flags(&fs, g), COMPRESS);
}

#[test]
fn an_immutable_file_refuses_every_change() {
    let (dev, fs) = memory_fs(32 * MIB);
    let root = fs.root();
    let f = file(&fs, root, "f");
    fs.write(f, 0, b"kept").unwrap();
    fs.set_flags(f, IMMUTABLE).unwrap();
    let perm = |r: cowfs::Result<()>| assert_eq!(r.unwrap_err().errno(), Errno::PERM);
    perm(fs.write(f, 0, b"x").map(drop));
    perm(fs.write_direct(f, 0, &AlignedBuf::zeroed(4096)).map(drop));
    perm(
        fs.setattr(
            f,
            &SetAttr {
                size: Some(0),
                ..SetAttr::default()
            },
        )
        .map(drop),
    );
    perm(
        fs.setattr(
            f,
            &SetAttr {
                mode: Some(0o600),
                ..SetAttr::default()
            },
        )
        .map(drop),
    );
    perm(fs.unlink(root, b"f"));
    perm(fs.rename(root, b"f", root, b"g", RenameFlags::default()));
    perm(fs.link(f, root, b"h"));
    let other = file(&fs, root, "other");
    perm(fs.rename(root, b"other", root, b"f", RenameFlags::default()));
    assert_eq!(read_all(&fs, f), b"kept");
    fs.set_flags(f, 0).unwrap();
    fs.write(f, 0, b"KEPT").unwrap();
    fs.rename(root, b"other", root, b"f", RenameFlags::default())
        .unwrap();
    assert_eq!(fs.resolve("/f").unwrap(), other);
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn an_immutable_directory_refuses_new_and_removed_entries() {
    let (_dev, fs) = memory_fs(32 * MIB);
    let d = dir(&fs, fs.root(), "d");
    file(&fs, d, "inside");
    fs.set_flags(d, IMMUTABLE).unwrap();
    let err = fs
        .create(d, b"new", FileKind::Regular, CreateAttrs::with_mode(0o644))
        .unwrap_err();
    assert_eq!(err.errno(), Errno::PERM);
    assert_eq!(fs.unlink(d, b"inside").unwrap_err().errno(), Errno::PERM);
}

#[test]
fn an_append_only_file_only_grows() {
    let (_dev, fs) = memory_fs(32 * MIB);
    let root = fs.root();
    let f = file(&fs, root, "log");
    fs.write(f, 0, b"one ").unwrap();
    fs.set_flags(f, APPEND).unwrap();
    fs.write(f, 4, b"two").unwrap();
    assert_eq!(fs.write(f, 0, b"X").unwrap_err().errno(), Errno::PERM);
    let err = fs
        .setattr(
            f,
            &SetAttr {
                size: Some(1),
                ..SetAttr::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.errno(), Errno::PERM);
    assert_eq!(fs.unlink(root, b"log").unwrap_err().errno(), Errno::PERM);
    // As Linux (generic/683-685 check it): no chmod, chown, chosen times or new links...
    let now = cowfs::format::Timespec::now();
    for set in [
        SetAttr {
            mode: Some(0o600),
            ..SetAttr::default()
        },
        SetAttr {
            uid: Some(7),
            ..SetAttr::default()
        },
        SetAttr {
            mtime: Some(now),
            ..SetAttr::default()
        },
    ] {
        assert_eq!(
            fs.setattr(f, &set).unwrap_err().errno(),
            Errno::PERM,
            "{set:?}"
        );
    }
    assert_eq!(fs.link(f, root, b"again").unwrap_err().errno(), Errno::PERM);
    // ...but a touch to the current time is fine.
    let touch = SetAttr {
        mtime: Some(now),
        times_now: true,
        ..SetAttr::default()
    };
    fs.setattr(f, &touch).unwrap();
    assert_eq!(read_all(&fs, f), b"one two");
}

#[test]
fn flags_persist() {
    let (dev, fs) = memory_fs(32 * MIB);
    let f = file(&fs, fs.root(), "f");
    fs.set_flags(f, NOCOW | APPEND).unwrap();
    fs.unmount().unwrap();
    let fs = Filesystem::open(dev, &no_timer()).unwrap();
    assert_eq!(flags(&fs, fs.resolve("/f").unwrap()), NOCOW | APPEND);
}

/// Access times as Linux moves them (generic/003): relatime by default (a read moves an
/// access time that is not after the last change, or a day old), strictatime on every read,
/// noatime never, and never for a `chattr +A` file.
#[test]
fn reads_move_access_times_as_the_policy_says() {
    use cowfs::format::Timespec;
    use cowfs::AtimePolicy;
    let atime = |fs: &Filesystem, f| fs.getattr(f).unwrap().atime;
    let past = Timespec { sec: 1000, nsec: 0 };
    for policy in [
        AtimePolicy::Relative,
        AtimePolicy::Always,
        AtimePolicy::Never,
    ] {
        let dev: std::sync::Arc<dyn cowfs::device::BlockDevice> =
            std::sync::Arc::new(cowfs::device::MemoryDevice::new(32 * MIB));
        Filesystem::mkfs(dev.clone(), &cowfs::MkfsOptions::default()).unwrap();
        let opts = cowfs::OpenOptions {
            atime: policy,
            ..no_timer()
        };
        let fs = Filesystem::open(dev, &opts).unwrap();
        let f = file(&fs, fs.root(), "f");
        fs.write(f, 0, b"data").unwrap();
        // An access time before the last change moves on the next read (not under noatime).
        fs.setattr(
            f,
            &SetAttr {
                atime: Some(past),
                ..SetAttr::default()
            },
        )
        .unwrap();
        fs.read(f, 0, &mut [0u8; 4]).unwrap();
        let first = atime(&fs, f);
        assert_eq!(first != past, policy != AtimePolicy::Never, "{policy:?}");
        // A current one moves again only under strictatime.
        std::thread::sleep(std::time::Duration::from_millis(5));
        fs.read(f, 0, &mut [0u8; 4]).unwrap();
        assert_eq!(
            atime(&fs, f) != first,
            policy == AtimePolicy::Always,
            "{policy:?}"
        );
        // Listing a directory is reading it.
        let root = fs.root();
        fs.setattr(
            root,
            &SetAttr {
                atime: Some(past),
                ..SetAttr::default()
            },
        )
        .unwrap();
        fs.readdir(root, None, 10).unwrap();
        assert_eq!(
            atime(&fs, root) != past,
            policy != AtimePolicy::Never,
            "{policy:?}"
        );
        // A +A file never moves.
        fs.set_flags(f, cowfs::format::inode_flags::NOATIME)
            .unwrap();
        fs.setattr(
            f,
            &SetAttr {
                atime: Some(past),
                ..SetAttr::default()
            },
        )
        .unwrap();
        fs.read(f, 0, &mut [0u8; 4]).unwrap();
        assert_eq!(atime(&fs, f), past, "{policy:?}: chattr +A");
    }
}
