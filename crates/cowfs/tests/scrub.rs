//! Scrub finds every damaged block and says where it is, while the filesystem stays usable.

mod common;

use common::*;
use cowfs::format::inode_flags::{COMPRESS, NOCOW};

#[test]
fn scrub_verifies_everything_and_locates_damage() {
    let (dev, fs) = memory_fs(64 * MIB);
    let d = dir(&fs, fs.root(), "d");
    let plain = file(&fs, d, "plain");
    fs.write(plain, 0, &noise(1, 3 * MIB as usize)).unwrap();
    let packed = file(&fs, d, "packed");
    fs.set_flags(packed, COMPRESS).unwrap();
    fs.write(packed, 0, &vec![b'z'; MIB as usize]).unwrap();
    let nocow = file(&fs, d, "nocow");
    fs.set_flags(nocow, NOCOW).unwrap();
    fs.write(nocow, 0, &noise(2, MIB as usize)).unwrap();
    fs.fallocate(
        file(&fs, d, "pre"),
        cowfs::FallocateMode::Allocate { keep_size: false },
        0,
        MIB,
    )
    .unwrap();
    let clean = fs.scrub(&mut |_, _| {}).unwrap();
    assert!(clean.metadata_ok && clean.errors.is_empty(), "{clean:?}");
    assert!(
        clean.data_bytes_verified >= 3 * MIB,
        "written checksummed data is all read"
    );
    let victim = fs.extent_map(plain).unwrap()[0].physical + 2 * 4096;
    let mut block = vec![0u8; 4096];
    dev.read_at(victim, &mut block).unwrap();
    block[0] ^= 1;
    dev.write_at(victim, &block).unwrap();
    let mut calls = 0;
    let report = fs.scrub(&mut |_, _| calls += 1).unwrap();
    assert!(calls > 0);
    assert_eq!(report.errors.len(), 1, "{report:?}");
    let err = &report.errors[0];
    assert_eq!(
        (err.physical, err.reason.as_str()),
        (victim, "checksum mismatch")
    );
    assert_eq!(err.files, vec![("/d/plain".to_string(), 8192)]);
    assert!(
        read_all(&fs, packed).iter().all(|b| *b == b'z'),
        "still usable after a scrub"
    );
}
