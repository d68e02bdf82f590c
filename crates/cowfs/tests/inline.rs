//! Inline extents: small files live in metadata until they grow.

mod common;

use std::sync::Arc;

use common::*;
use cowfs::device::{AlignedBuf, BlockDevice, MemoryDevice};
use cowfs::format::ExtentKind;
use cowfs::{Errno, Filesystem, MkfsOptions};

fn kinds(fs: &Filesystem, id: cowfs::InodeId) -> Vec<ExtentKind> {
    fs.extent_map(id).unwrap().iter().map(|m| m.kind).collect()
}

#[test]
fn a_small_file_is_stored_inline_and_moves_out_when_it_grows() {
    let (dev, fs) = memory_fs(32 * MIB);
    let f = file(&fs, fs.root(), "small");
    fs.write(f, 0, b"tiny").unwrap();
    fs.write(f, 1000, b"still small").unwrap();
    assert_eq!(kinds(&fs, f), vec![ExtentKind::Inline]);
    assert_eq!(fs.info().unwrap().data_used, 0, "no data block used");
    fs.unmount().unwrap();
    assert_clean(&dev);
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    let f = fs.resolve("/small").unwrap();
    let mut expect = vec![0u8; 1011];
    expect[..4].copy_from_slice(b"tiny");
    expect[1000..].copy_from_slice(b"still small");
    assert_eq!(read_all(&fs, f), expect);
    fs.write(f, 3000, b"grown").unwrap();
    expect.resize(3005, 0);
    expect[3000..].copy_from_slice(b"grown");
    assert_eq!(kinds(&fs, f), vec![ExtentKind::Regular]);
    assert_eq!(read_all(&fs, f), expect);
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn direct_io_and_fallocate_move_inline_data_out() {
    let (dev, fs) = memory_fs(32 * MIB);
    let f = file(&fs, fs.root(), "d");
    fs.write(f, 0, b"inline first").unwrap();
    fs.sync().unwrap();
    let mut page = AlignedBuf::zeroed(4096);
    assert_eq!(fs.read_direct(f, 0, &mut page).unwrap(), 12);
    assert_eq!(&page[..12], b"inline first");
    fs.write_direct(f, 8192, &AlignedBuf::from_slice(&[7u8; 4096]))
        .unwrap();
    assert_eq!(
        kinds(&fs, f),
        vec![ExtentKind::Regular, ExtentKind::Regular]
    );
    assert_eq!(&read_all(&fs, f)[..12], b"inline first");
    let g = file(&fs, fs.root(), "g");
    fs.write(g, 0, b"abc").unwrap();
    fs.fallocate(
        g,
        cowfs::FallocateMode::Allocate { keep_size: true },
        0,
        65536,
    )
    .unwrap();
    assert_eq!(read_all(&fs, g), b"abc");
    assert!(!kinds(&fs, g).contains(&ExtentKind::Inline));
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn the_inline_limit_is_set_at_mkfs() {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(32 * MIB));
    let too_big = MkfsOptions {
        inline_limit: Some(4096),
        ..MkfsOptions::default()
    };
    assert_eq!(
        Filesystem::mkfs(dev.clone(), &too_big).unwrap_err().errno(),
        Errno::INVAL
    );
    let none = MkfsOptions {
        inline_limit: Some(0),
        ..MkfsOptions::default()
    };
    Filesystem::mkfs(dev.clone(), &none).unwrap();
    let fs = Filesystem::open(dev, &no_timer()).unwrap();
    let f = file(&fs, fs.root(), "f");
    fs.write(f, 0, b"x").unwrap();
    assert_eq!(kinds(&fs, f), vec![ExtentKind::Regular]);
}

/// Issue 10, section 3: an inline file truncated up past the inline limit and down again must
/// never commit an inline extent beside a regular one.
#[test]
fn truncating_an_inline_file_up_and_down_keeps_a_valid_layout() {
    let (dev, fs) = memory_fs(32 * MIB);
    let f = file(&fs, fs.root(), "f");
    let size = |size| cowfs::SetAttr {
        size: Some(size),
        ..Default::default()
    };
    fs.write(f, 0, &[0x41; 185]).unwrap();
    fs.fsync(f).unwrap();
    fs.setattr(f, &size(64479)).unwrap();
    fs.fsync(f).unwrap();
    fs.setattr(f, &size(38088)).unwrap();
    fs.fsync(f).unwrap();
    let mut expect = vec![0u8; 38088];
    expect[..185].fill(0x41);
    assert_eq!(read_all(&fs, f), expect);
    assert_eq!(
        kinds(&fs, f),
        vec![ExtentKind::Inline],
        "no block for a hole"
    );
    // Data past the inline extent moves the inline data out with it.
    fs.write(f, 20000, b"far").unwrap();
    fs.fsync(f).unwrap();
    expect[20000..20003].copy_from_slice(b"far");
    assert_eq!(read_all(&fs, f), expect);
    assert!(!kinds(&fs, f).contains(&ExtentKind::Inline));
    let g = file(&fs, fs.root(), "g");
    fs.write(g, 0, b"inline").unwrap();
    fs.fsync(g).unwrap();
    fs.clone_range(f, 0, g, 8192, 4096).unwrap();
    assert!(
        !kinds(&fs, g).contains(&ExtentKind::Inline),
        "clone beside inline data"
    );
    assert_eq!(&read_all(&fs, g)[..6], b"inline");
    fs.unmount().unwrap();
    assert_clean(&dev);
}
