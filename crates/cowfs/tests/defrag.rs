//! Defrag: fragmented files become contiguous (or compressed) with unchanged content.

mod common;

use common::*;
use cowfs::device::AlignedBuf;
use cowfs::format::inode_flags::NOCOW;
use cowfs::InodeId;

/// Two files written 4 KiB at a time, interleaved, so each is in 256 scattered extents.
fn fragmented(fs: &cowfs::Filesystem) -> (InodeId, Vec<u8>) {
    let a = file(fs, fs.root(), "a");
    let b = file(fs, fs.root(), "b");
    let data = noise(1, MIB as usize);
    for (i, block) in data.chunks(4096).enumerate() {
        fs.write_direct(a, i as u64 * 4096, &AlignedBuf::from_slice(block))
            .unwrap();
        fs.write_direct(b, i as u64 * 4096, &AlignedBuf::from_slice(block))
            .unwrap();
    }
    assert_eq!(fs.extent_map(a).unwrap().len(), 256);
    (a, data)
}

#[test]
fn defrag_makes_a_fragmented_file_contiguous() {
    let (dev, fs) = memory_fs(64 * MIB);
    let (a, data) = fragmented(&fs);
    let stats = fs.defrag(a, false).unwrap();
    assert_eq!(
        (
            stats.extents_before,
            stats.extents_after,
            stats.bytes_rewritten
        ),
        (256, 1, MIB)
    );
    assert_eq!(read_all(&fs, a), data);
    assert_eq!(
        fs.defrag(a, false).unwrap().bytes_rewritten,
        0,
        "nothing left to do"
    );
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn defrag_can_compress_and_leaves_holes_and_snapshots_alone() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "text");
    let text: Vec<u8> = b"cowfs defrag compresses what it rewrites. "
        .iter()
        .cycle()
        .take(512 << 10)
        .copied()
        .collect();
    fs.write(f, 0, &text).unwrap();
    fs.write(f, 4 * MIB, &text).unwrap();
    fs.sync().unwrap();
    let snap = fs
        .snapshot(fs.root().subvol, fs.root(), b"snap", true)
        .unwrap();
    let stats = fs.defrag(f, true).unwrap();
    assert_eq!(stats.bytes_rewritten, 1 << 20);
    let map = fs.extent_map(f).unwrap();
    assert!(
        map.iter().all(|m| m.encoded && !m.shared),
        "rewritten compressed, no longer shared"
    );
    let mut expect = text.clone();
    expect.resize(4 * MIB as usize, 0);
    expect.extend_from_slice(&text);
    assert_eq!(
        read_all(&fs, f),
        expect,
        "the hole between the runs stays a hole"
    );
    let in_snap = fs.resolve("/snap/text").unwrap();
    assert_eq!(in_snap.subvol, snap);
    assert_eq!(read_all(&fs, in_snap), expect);
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn a_nocow_file_is_defragmented_but_never_compressed() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "nocow");
    fs.set_flags(f, NOCOW).unwrap();
    let other = file(&fs, fs.root(), "other");
    for i in 0..16u64 {
        fs.write_direct(f, i * 4096, &AlignedBuf::from_slice(&[i as u8; 4096]))
            .unwrap();
        fs.write_direct(other, i * 4096, &AlignedBuf::from_slice(&[0; 4096]))
            .unwrap();
    }
    let stats = fs.defrag(f, true).unwrap();
    assert_eq!(stats.extents_after, 1);
    assert!(fs.extent_map(f).unwrap().iter().all(|m| !m.encoded));
    fs.unmount().unwrap();
    assert_clean(&dev);
}
