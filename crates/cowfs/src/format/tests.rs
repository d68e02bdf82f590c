//! Round trips and malformed input for every record.

use super::*;

#[test]
fn inode_round_trip() {
    let inode = InodeRecord {
        mode: S_IFREG | 0o644,
        uid: 1000,
        gid: 100,
        nlink: 2,
        size: 123456789,
        flags: 0x0080_0000,
        generation: 7,
        rdev: 0,
        atime: Timespec {
            sec: -5,
            nsec: 999_999_999,
        },
        mtime: Timespec {
            sec: 1 << 40,
            nsec: 1,
        },
        ctime: Timespec { sec: 3, nsec: 0 },
        crtime: Timespec { sec: 4, nsec: 5 },
        compression: CompressionConfig::parse("zstd:19").unwrap(),
    };
    let bytes = inode.encode();
    assert_eq!(bytes.len(), InodeRecord::SIZE);
    assert_eq!(&bytes[16..24], &123456789u64.to_le_bytes());
    assert_eq!(&bytes[96..98], &[Compression::Zstd as u8, 19]);
    assert_eq!(InodeRecord::decode(&bytes).unwrap(), inode);
    let lz4 = InodeRecord {
        compression: CompressionConfig::parse("lz4").unwrap(),
        ..inode
    };
    assert_eq!(InodeRecord::decode(&lz4.encode()).unwrap(), lz4);
}

#[test]
fn compression_choices_on_disk_are_checked() {
    for bad in [
        [9, 0],
        [Compression::Lz4 as u8, 3],
        [Compression::Zstd as u8, 0],
        [1, 20],
    ] {
        assert!(CompressionConfig::decode(bad).is_err(), "{bad:?}");
    }
    assert_eq!(CompressionConfig::decode([0, 0]).unwrap(), None);
    let state = FsState {
        generation: 1,
        next_subvolume: 2,
        default_subvolume: 1,
        inline_limit: 2048,
        flags: FsState::compression_flags(CompressionConfig::parse("zstd:7").unwrap()),
    };
    assert_eq!(state.flags, 0x0701);
    assert_eq!(state.compression().unwrap().unwrap().level, 7);
    let lz4 = CompressionConfig::parse("lz4").unwrap();
    let state = FsState {
        flags: FsState::compression_flags(lz4),
        ..state
    };
    assert_eq!(state.compression().unwrap(), lz4);
}

/// A compressed extent that claims to decode to more than one may hold is corruption, not a
/// huge allocation at the next read.
#[test]
fn a_compressed_extent_decoding_past_its_limit_is_refused() {
    let e = FileExtent {
        compression: Compression::Lz4,
        len: 4096,
        ram_len: MAX_COMPRESSED_LEN,
        ..FileExtent::regular(1 << 20, 8192)
    };
    assert_eq!(FileExtent::decode(&e.encode()).unwrap(), e);
    let huge = FileExtent {
        ram_len: 1 << 40,
        ..e
    };
    assert!(FileExtent::decode(&huge.encode()).is_err());
}

#[test]
fn short_records_are_errors_not_panics() {
    assert!(InodeRecord::decode(&[0; 103]).is_err());
    assert!(FileExtent::decode(&[1; 10]).is_err());
    assert!(ExtentRecord::decode(&[]).is_err());
    assert!(decode_checksums(&[0; 7]).is_err());
}

#[test]
fn a_range_of_checksums_is_decoded_alone_and_clipped_to_the_record() {
    let sums: Vec<u32> = (0..10).map(|i| 0x1000_0000 + i).collect();
    let raw = encode_checksums(&sums);
    assert_eq!(decode_checksum_range(&raw, 3..5).unwrap(), &sums[3..5]);
    assert_eq!(decode_checksum_range(&raw, 8..12).unwrap(), &sums[8..]);
    assert!(decode_checksum_range(&raw, 11..12).unwrap().is_empty());
    assert_eq!(decode_checksums(&raw).unwrap(), sums);
    assert!(decode_checksum_range(&[0; 7], 0..1).is_err());
}

#[test]
fn file_extent_rejects_ranges_outside_its_extent() {
    let mut e = FileExtent::regular(1 << 20, 8192);
    assert!(FileExtent::decode(&e.encode()).is_ok());
    e.extent_offset = 4096;
    assert!(FileExtent::decode(&e.encode()).is_err());
    let s = FileExtent::regular(1 << 20, 8192).slice(4096, 8192);
    assert_eq!(FileExtent::decode(&s.encode()).unwrap(), s);
}

#[test]
fn keys_sort_numerically() {
    assert!(key3(1, 2, 255) < key3(1, 2, 256));
    assert!(key2(1, u64::MAX) < key2(2, 0));
    assert_eq!(key_part(&key3(7, 8, 9), 2).unwrap(), 9);
    assert!(key_part(&[1, 2, 3], 0).is_err());
    assert_eq!(key_tail(&key_with_name(&[1, 2], b"n"), 2).unwrap(), b"n");
    assert!(key_tail(&[0; 8], 2).is_err());
}

proptest::proptest! {
    /// Whatever bytes a record holds, decoding returns a value or an error: no panic.
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160)) {
        let _ = FsState::decode(&bytes);
        let _ = SubvolumeRecord::decode(&bytes);
        let _ = Compression::from_code(bytes.first().copied().unwrap_or(0));
        let _ = InodeRecord::decode(&bytes);
        let _ = DirEntryRecord::decode(&bytes);
        let _ = FileExtent::decode(&bytes);
        let _ = ExtentRecord::decode(&bytes);
        let _ = BlockGroupRecord::decode(&bytes);
        let _ = decode_checksums(&bytes);
        let _ = decode_len(&bytes);
        let _ = key_part(&bytes, 2);
        let _ = key_tail(&bytes, 3);
        let _ = crate::format::Superblock::decode(&bytes, 0, 1 << 30);
    }
}

/// docs/FORMAT.md, read at build time so the test sees the doc of the same checkout.
const FORMAT_DOC: &str = include_str!("../../../../docs/FORMAT.md");

/// The size a section heading of FORMAT.md gives a table's records ("(`inodes`, 96 bytes").
fn documented_size(table: &str) -> usize {
    let tag = format!("(`{table}`, ");
    let heading = FORMAT_DOC
        .lines()
        .find(|l| l.starts_with("### ") && l.contains(&tag))
        .unwrap_or_else(|| panic!("FORMAT.md has no section for {table}"));
    let rest = &heading[heading.find(&tag).unwrap() + tag.len()..];
    rest.split(' ').next().unwrap().parse().unwrap()
}

/// The end of the last row (offset + size) of the field table under that section.
fn documented_end(table: &str) -> usize {
    let tag = format!("(`{table}`, ");
    let mut lines = FORMAT_DOC
        .lines()
        .skip_while(|l| !(l.starts_with("### ") && l.contains(&tag)))
        .skip(1)
        .take_while(|l| !l.starts_with("### "));
    let mut end = 0;
    for line in lines.by_ref() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, offset, size, ..] = cells[..] {
            if let (Ok(o), Ok(s)) = (offset.parse::<usize>(), size.parse::<usize>()) {
                end = end.max(o + s);
            }
        }
    }
    end
}

#[test]
fn format_md_gives_every_record_its_size_in_the_code() {
    let fixed = [
        ("fs_state", FsState::SIZE),
        ("subvolumes", SubvolumeRecord::FIXED_SIZE),
        ("inodes", InodeRecord::SIZE),
        ("dir_entries", DirEntryRecord::SIZE),
        ("file_extents", FileExtent::HEADER_SIZE),
        ("extents", ExtentRecord::SIZE),
        ("block_groups", BlockGroupRecord::SIZE),
    ];
    for (table, size) in fixed {
        assert_eq!(documented_size(table), size, "the heading of {table}");
        assert_eq!(documented_end(table), size, "the field table of {table}");
    }
    assert!(
        FORMAT_DOC
            .lines()
            .next()
            .is_some_and(|l| l.ends_with(&format!("version {FORMAT_VERSION}"))),
        "FORMAT.md's title names version {FORMAT_VERSION}"
    );
}
