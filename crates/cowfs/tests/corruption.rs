//! Damaged images: every kind of damage gives a clear error naming what is wrong, nothing
//! panics, and an image that fails validation is not written to.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use common::*;
use cowfs::device::{BlockDevice, MemoryDevice};
use cowfs::format::{FORMAT_VERSION, SB_CHECKSUM, SB_META_CHUNKS, SB_VERSION, SUPERBLOCK_OFFSETS};
use cowfs::{Errno, Filesystem};

/// A small filesystem with a few files, committed; returns its image.
fn sample_image() -> Vec<u8> {
    let (dev, fs) = memory_fs(32 * MIB);
    let root = fs.root();
    let d = dir(&fs, root, "docs");
    for i in 0..20 {
        let f = file(&fs, d, &format!("f{i}"));
        fs.write(f, 0, &pattern(i as u8, 10_000 + i * 3000))
            .unwrap();
    }
    fs.unmount().unwrap();
    let mut image = vec![0; dev.len() as usize];
    dev.read_at(0, &mut image).unwrap();
    image
}

/// Opens a damaged image; it must not panic, and a failed open must leave it untouched.
fn open_damaged(image: Vec<u8>) -> (Arc<MemoryDevice>, Result<Filesystem, cowfs::Error>) {
    let dev = Arc::new(MemoryDevice::from_image(image.clone()));
    let result = catch_unwind(AssertUnwindSafe(|| {
        Filesystem::open(dev.clone(), &no_timer())
    }))
    .expect("opening a damaged image panicked");
    if result.is_err() {
        assert!(dev.image() == image, "a rejected image was written to");
    }
    (dev, result)
}

fn fix_checksum(image: &mut [u8], offset: usize) {
    let crc = crc32c::crc32c(&image[offset..offset + SB_CHECKSUM]);
    image[offset + SB_CHECKSUM..offset + SB_CHECKSUM + 4].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn a_damaged_primary_superblock_falls_back_to_a_copy_and_is_repaired() {
    let mut image = sample_image();
    image[SUPERBLOCK_OFFSETS[0] as usize + 40] ^= 0xff;
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::from_image(image.clone()));
    let report = cowfs::fsck::check(dev.clone(), &mut |_, _| {});
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("copy 0") && p.contains("checksum")),
        "{:?}",
        report.problems
    );
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    assert_eq!(
        read_all(&fs, fs.resolve("/docs/f3").unwrap()),
        pattern(3, 19_000)
    );
    drop(fs);
    assert_clean(&dev);
}

#[test]
fn no_valid_superblock_is_a_clear_error() {
    let mut image = sample_image();
    for off in SUPERBLOCK_OFFSETS {
        image[off as usize + 100] ^= 0x01;
    }
    let (_, result) = open_damaged(image);
    let err = result.err().expect("opened without a superblock");
    assert_eq!(err.errno(), Errno::UCLEAN);
    assert!(err.reason().contains("no valid superblock"), "{err}");
}

#[test]
fn not_a_cowfs_image() {
    let (_, result) = open_damaged(vec![0x42; 32 * MIB as usize]);
    let err = result.err().expect("opened garbage");
    assert!(err.reason().contains("bad magic"), "{err}");
}

#[test]
fn an_unknown_format_version_is_refused() {
    let mut image = sample_image();
    for off in SUPERBLOCK_OFFSETS.map(|o| o as usize) {
        image[off + SB_VERSION..off + SB_VERSION + 4]
            .copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        fix_checksum(&mut image, off);
    }
    let (_, result) = open_damaged(image);
    let err = result.err().expect("opened a future format");
    assert_eq!(err.errno(), Errno::NOTSUP);
    assert!(
        err.reason()
            .contains(&format!("format version {}", FORMAT_VERSION + 1)),
        "{err}"
    );
}

#[test]
fn an_out_of_range_metadata_chunk_is_refused() {
    let mut image = sample_image();
    for off in SUPERBLOCK_OFFSETS.map(|o| o as usize) {
        let at = off + SB_META_CHUNKS + 8;
        image[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        fix_checksum(&mut image, off);
    }
    let (_, result) = open_damaged(image);
    let err = result.err().expect("opened with a chunk past the end");
    assert!(err.reason().contains("out of range"), "{err}");
}

/// Issue 10: flags and reserved bytes are validated, with a good checksum over them: in every
/// copy, the image is refused; in one backup copy, fsck and scrub report it, a read-only
/// open leaves it, and a read-write open rewrites it and says so.
#[test]
fn superblock_flags_and_reserved_bytes_must_be_zero() {
    for (field, what) in [
        (36, "flags 0x1"),
        (70, "reserved byte 70"),
        (100, "reserved byte 100"),
        (4000, "reserved byte 4000"),
    ] {
        let mut image = sample_image();
        for off in SUPERBLOCK_OFFSETS.map(|o| o as usize) {
            image[off + field] = 1;
            fix_checksum(&mut image, off);
        }
        let (_, result) = open_damaged(image);
        let err = result.err().expect("opened with a bad field");
        assert!(err.reason().contains(what), "{what}: {err}");

        let mut image = sample_image();
        let backup = SUPERBLOCK_OFFSETS[1] as usize;
        image[backup + field] = 1;
        fix_checksum(&mut image, backup);
        let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::from_image(image.clone()));
        let report = cowfs::fsck::check(dev.clone(), &mut |_, _| {});
        assert!(
            report.problems.iter().any(|p| p.contains(what)),
            "{what}: {:?}",
            report.problems
        );
        let fs = Filesystem::open(dev.clone(), &read_only()).unwrap();
        let scrub = fs.scrub(&mut |_, _| {}).unwrap();
        assert!(
            !scrub.is_clean() && scrub.superblock_problems[0].contains(what),
            "{scrub:?}"
        );
        drop(fs);
        let mem = Arc::new(MemoryDevice::from_image(image.clone()));
        let fs = Filesystem::open(mem.clone(), &no_timer()).unwrap();
        assert!(fs
            .open_notes()
            .iter()
            .any(|n| n.contains(what) && n.contains("rewritten")));
        drop(fs);
        let repaired: Arc<dyn BlockDevice> = mem;
        assert_clean(&repaired);
    }
}

#[test]
fn a_truncated_image_is_refused() {
    let mut image = sample_image();
    image.truncate(8 * MIB as usize);
    let (_, result) = open_damaged(image);
    let err = result.err().expect("opened a truncated image");
    assert!(err.reason().contains("truncated"), "{err}");
}

/// Flips one byte near the start of every metadata page in turn (where every live page has
/// its header and first entries). Each image either opens and reads back
/// every file correctly (the page was unused) or is refused with an error; never a panic,
/// never a write to a refused image, never wrong data.
#[test]
fn every_metadata_page_flip_is_caught() {
    let image = sample_image();
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::from_image(image.clone()));
    let sb = cowfs::scan_superblocks(dev.as_ref())
        .best()
        .unwrap()
        .clone();
    let chunk = sb.meta_chunks[0];
    let pages = sb.meta_len.div_ceil(4096);
    let (mut refused, mut harmless) = (0, 0);
    let mut rng = Rng(7);
    for page in 0..pages {
        let mut damaged = image.clone();
        let at = (chunk.physical + page * 4096 + rng.below(32)) as usize;
        damaged[at] ^= 1 << rng.below(8);
        let (_, result) = open_damaged(damaged);
        match result {
            Err(e) => {
                assert!(
                    matches!(e.errno(), Errno::UCLEAN | Errno::IO),
                    "page {page}: {e}"
                );
                refused += 1;
            }
            Ok(fs) => {
                for i in 0..20 {
                    let f = fs.resolve(&format!("/docs/f{i}")).unwrap();
                    assert_eq!(
                        read_all(&fs, f),
                        pattern(i as u8, 10_000 + i * 3000),
                        "page {page}"
                    );
                }
                harmless += 1;
            }
        }
    }
    eprintln!("{pages} metadata pages: {refused} flips refused, {harmless} in unused space");
    assert!(refused > 0, "no flip was detected ({harmless} harmless)");
}

#[test]
fn random_garbage_in_the_metadata_area_never_panics() {
    let image = sample_image();
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::from_image(image.clone()));
    let chunk = cowfs::scan_superblocks(dev.as_ref())
        .best()
        .unwrap()
        .meta_chunks[0];
    let mut rng = Rng(11);
    for _ in 0..40 {
        let mut damaged = image.clone();
        let at = chunk.physical as usize + rng.below(64 << 10) as usize;
        for b in &mut damaged[at..at + 64] {
            *b = rng.next() as u8;
        }
        let (dev, result) = open_damaged(damaged);
        drop(result);
        catch_unwind(AssertUnwindSafe(|| cowfs::fsck::check(dev, &mut |_, _| {})))
            .expect("fsck panicked");
    }
}
