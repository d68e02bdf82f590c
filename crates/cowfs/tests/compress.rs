//! Transparent zstd compression.

mod common;

use std::sync::Arc;

use common::*;
use cowfs::device::{AlignedBuf, BlockDevice, MemoryDevice};
use cowfs::format::inode_flags::{COMPRESS, NOCOMPRESS, NOCOW};
use cowfs::format::Compression;
use cowfs::{CompressionConfig, Errno, Filesystem, MkfsOptions, MAX_COMPRESSED_LEN};

/// Text-like data that zstd shrinks a lot.
fn compressible(len: usize) -> Vec<u8> {
    let words = b"the quick brown fox jumps over the lazy dog while cowfs compresses ";
    (0..len)
        .map(|i| words[(i * 7 + i / 97) % words.len()])
        .collect()
}

#[test]
fn a_plus_c_file_is_stored_compressed_and_reads_back() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "text");
    fs.set_flags(f, COMPRESS).unwrap();
    let data = compressible(3 * MIB as usize + 1234);
    fs.write(f, 0, &data).unwrap();
    fs.sync().unwrap();
    let map = fs.extent_map(f).unwrap();
    assert!(map.iter().filter(|m| m.encoded).count() >= 20);
    assert!(map.iter().all(|m| m.len <= MAX_COMPRESSED_LEN));
    assert!(
        fs.info().unwrap().data_used < MIB,
        "3 MiB of text takes well under 1 MiB"
    );
    let mut piece = vec![0u8; 10_000];
    fs.read(f, 1_000_003, &mut piece).unwrap();
    assert_eq!(piece, data[1_000_003..1_010_003]);
    fs.write(f, 500_000, b"an overwrite inside a compressed extent")
        .unwrap();
    let mut expect = data;
    expect[500_000..500_039].copy_from_slice(b"an overwrite inside a compressed extent");
    fs.unmount().unwrap();
    assert_clean(&dev);
    let fs = Filesystem::open(dev, &no_timer()).unwrap();
    assert_eq!(read_all(&fs, fs.resolve("/text").unwrap()), expect);
}

/// A writeback's pieces are encoded on every core at once: each lands at its own offset,
/// compressible pieces (each with its own text) between incompressible ones.
#[test]
fn pieces_encoded_in_parallel_land_in_order() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "mixed");
    fs.set_flags(f, COMPRESS).unwrap();
    let piece = MAX_COMPRESSED_LEN as usize;
    let data: Vec<u8> = (0..40)
        .flat_map(|n| match n % 3 {
            2 => noise(n as u64, piece),
            _ => format!("piece {n:>4} of a file compressed on every core; ")
                .repeat(piece / 40)
                .into_bytes()[..piece]
                .to_vec(),
        })
        .collect();
    fs.write(f, 0, &data).unwrap();
    fs.sync().unwrap();
    let map = fs.extent_map(f).unwrap();
    assert!(map.iter().any(|m| m.encoded) && map.iter().any(|m| !m.encoded));
    fs.unmount().unwrap();
    assert_clean(&dev);
    let fs = Filesystem::open(dev, &no_timer()).unwrap();
    let back = read_all(&fs, fs.resolve("/mixed").unwrap());
    assert!(back == data, "every piece where it was written");
}

#[test]
fn incompressible_data_and_direct_writes_are_stored_plainly() {
    let (_dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "noise");
    fs.set_flags(f, COMPRESS).unwrap();
    fs.write(f, 0, &noise(9, MIB as usize)).unwrap();
    assert!(fs.extent_map(f).unwrap().iter().all(|m| !m.encoded));
    let g = file(&fs, fs.root(), "direct");
    fs.set_flags(g, COMPRESS).unwrap();
    fs.write_direct(g, 0, &AlignedBuf::from_slice(&compressible(MIB as usize)))
        .unwrap();
    assert!(fs.extent_map(g).unwrap().iter().all(|m| !m.encoded));
}

#[test]
fn filesystem_wide_compression_spares_nocow_and_plus_m_files() {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(64 * MIB));
    let compress = CompressionConfig::parse("zstd:7").unwrap();
    Filesystem::mkfs(
        dev.clone(),
        &MkfsOptions {
            compress,
            ..MkfsOptions::default()
        },
    )
    .unwrap();
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    let data = compressible(MIB as usize);
    let plain = file(&fs, fs.root(), "plain");
    let nocow = file(&fs, fs.root(), "nocow");
    fs.set_flags(nocow, NOCOW).unwrap();
    let never = file(&fs, fs.root(), "never");
    fs.set_flags(never, NOCOMPRESS).unwrap();
    for f in [plain, nocow, never] {
        fs.write(f, 0, &data).unwrap();
    }
    assert!(fs.extent_map(plain).unwrap().iter().all(|m| m.encoded));
    assert!(fs.extent_map(nocow).unwrap().iter().all(|m| !m.encoded));
    assert!(fs.extent_map(never).unwrap().iter().all(|m| !m.encoded));
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn a_damaged_compressed_extent_is_eio() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "c");
    fs.set_flags(f, COMPRESS).unwrap();
    fs.write(f, 0, &compressible(256 << 10)).unwrap();
    let physical = fs.extent_map(f).unwrap()[0].physical;
    fs.unmount().unwrap();
    let mut block = vec![0u8; 4096];
    dev.read_at(physical, &mut block).unwrap();
    block[20] ^= 0x40;
    dev.write_at(physical, &block).unwrap();
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    let err = fs
        .read(fs.resolve("/c").unwrap(), 0, &mut [0u8; 100])
        .unwrap_err();
    assert_eq!(err.errno(), Errno::IO);
    drop(fs);
    assert!(!cowfs::fsck::check(dev, &mut |_, _| {}).is_clean());
}

#[test]
fn compression_options_parse() {
    assert_eq!(CompressionConfig::parse("zstd").unwrap().unwrap().level, 3);
    assert_eq!(
        CompressionConfig::parse("zstd:12").unwrap().unwrap().level,
        12
    );
    assert_eq!(CompressionConfig::parse("none").unwrap(), None);
    assert!(CompressionConfig::parse("zstd:0").is_err());
    assert!(CompressionConfig::parse("lzo").is_err());
    assert!(CompressionConfig::parse("lz4:3").is_err());
    let lz4 = CompressionConfig::parse("lz4").unwrap().unwrap();
    assert_eq!(
        (lz4.algorithm, lz4.to_string().as_str()),
        (Compression::Lz4, "lz4")
    );
    for text in ["zstd:19", "zstd:1", "lz4", "none"] {
        let config = CompressionConfig::parse(text).unwrap();
        assert_eq!(
            CompressionConfig::decode(CompressionConfig::encode(config)).unwrap(),
            config
        );
    }
}
