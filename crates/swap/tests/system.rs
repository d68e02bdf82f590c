//! Swap areas over every backing: priorities, clusters, batched I/O, swapoff, the listing.

use std::sync::Arc;

use cowfs::device::{BlockDevice, MemoryDevice};
use cowfs::format::FileKind;
use cowfs::{CreateAttrs, Errno, FallocateMode, Filesystem, MkfsOptions, OpenOptions, SwapMode};
use swap::{mkswapfile, CowfsFile, HostFile, Slot, SwapHeader, SwapSystem, PAGE_SIZE};

const MIB: u64 = 1 << 20;

fn fs() -> Filesystem {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(128 * MIB));
    Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    Filesystem::open(
        dev,
        &OpenOptions {
            commit_interval: None,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

/// A NOCOW, preallocated file of `len` bytes starting with `header`.
fn nocow_file(fs: &Filesystem, name: &str, len: u64, header: &[u8]) -> cowfs::InodeId {
    let id = fs
        .create(
            fs.root(),
            name.as_bytes(),
            FileKind::Regular,
            CreateAttrs::with_mode(0o600),
        )
        .unwrap();
    fs.set_flags(id, cowfs::format::inode_flags::NOCOW).unwrap();
    fs.fallocate(id, FallocateMode::Allocate { keep_size: false }, 0, len)
        .unwrap();
    fs.write(id, 0, header).unwrap();
    id
}

fn page(seed: u64) -> Vec<u8> {
    (0..PAGE_SIZE as u64)
        .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(0x9e37)) as u8)
        .collect()
}

/// Swaps `n` pages out and back in, checking every byte.
fn round_trip(system: &mut SwapSystem, n: usize) -> Vec<Slot> {
    let slots = system.allocate(n).unwrap();
    let data: Vec<u8> = (0..n as u64).flat_map(page).collect();
    system.write(&slots, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    system.read(&slots, &mut back).unwrap();
    assert!(back == data);
    slots
}

#[test]
fn a_pinned_cowfs_swapfile() {
    let fs = fs();
    mkswapfile(&fs, "/swapfile", 16 * MIB, "pinned", [1; 16]).unwrap();
    let mut system = SwapSystem::new();
    let area = system
        .swapon(
            Box::new(CowfsFile::new(&fs, "/swapfile", SwapMode::Pinned).unwrap()),
            Some(5),
        )
        .unwrap();
    let id = fs.resolve("/swapfile").unwrap();
    assert_eq!(fs.swap_active(id), Some(SwapMode::Pinned));
    let slots = round_trip(&mut system, 1000);
    assert!(
        slots.windows(2).all(|w| w[1].page == w[0].page + 1),
        "cluster allocation is sequential"
    );
    assert_eq!(
        system.stats().writes,
        1,
        "one batched write for 1000 consecutive pages"
    );
    let listing = system.proc_swaps();
    assert!(
        listing.contains("/swapfile") && listing.contains("cowfs") && listing.contains("4000"),
        "{listing}"
    );
    assert_eq!(system.swapoff(area, None).unwrap_err().errno(), Errno::BUSY);
    let mut brought = 0;
    system
        .swapoff(
            area,
            Some(&mut |s: &mut SwapSystem, slot| {
                brought += 1;
                s.free(slot)
            }),
        )
        .unwrap();
    assert_eq!(brought, 1000);
    assert_eq!(fs.swap_active(id), None, "swapoff deactivates");
}

#[test]
fn a_copy_on_write_swapfile_through_the_filesystem() {
    let fs = fs();
    let id = fs
        .create(
            fs.root(),
            b"cow",
            FileKind::Regular,
            CreateAttrs::with_mode(0o600),
        )
        .unwrap();
    fs.fallocate(id, FallocateMode::Allocate { keep_size: false }, 0, 8 * MIB)
        .unwrap();
    fs.write(
        id,
        0,
        &SwapHeader::new(2048, [2; 16], "cow").unwrap().encode(),
    )
    .unwrap();
    let mut system = SwapSystem::new();
    assert!(
        system
            .swapon(
                Box::new(CowfsFile::new(&fs, "/cow", SwapMode::Pinned).unwrap()),
                None
            )
            .is_err(),
        "COW is refused when pinned"
    );
    system
        .swapon(
            Box::new(CowfsFile::new(&fs, "/cow", SwapMode::ThroughFs).unwrap()),
            None,
        )
        .unwrap();
    let slots = round_trip(&mut system, 500);
    assert_eq!(system.list()[0].kind, "cowfs-fs");
    assert_eq!(system.list()[0].used_kib, 500 * 4);
    for s in slots {
        system.free(s).unwrap();
    }
    system.swapoff(0, None).unwrap();
}

#[test]
fn priorities_and_turns() {
    let fs = fs();
    for name in ["a", "b", "c"] {
        mkswapfile(&fs, &format!("/{name}"), 4 * MIB, name, [3; 16]).unwrap();
    }
    let mut system = SwapSystem::new();
    let on = |s: &mut SwapSystem, name: &str, prio| {
        s.swapon(
            Box::new(CowfsFile::new(&fs, name, SwapMode::Pinned).unwrap()),
            Some(prio),
        )
        .unwrap()
    };
    let low = on(&mut system, "/a", 1);
    let high1 = on(&mut system, "/b", 10);
    let high2 = on(&mut system, "/c", 10);
    let first = system.allocate(512).unwrap();
    assert!(
        first.iter().all(|s| s.area != low),
        "the higher priority is used first"
    );
    assert!(
        first.iter().any(|s| s.area == high1) && first.iter().any(|s| s.area == high2),
        "equals take turns"
    );
    let rest = system.allocate(2 * 1023 - 512).unwrap();
    assert!(rest.iter().all(|s| s.area != low));
    assert_eq!(
        system.allocate(1).unwrap()[0].area,
        low,
        "then the lower one"
    );
    let all = system.allocate(1022).unwrap();
    assert_eq!(all.len(), 1022);
    assert_eq!(system.allocate(1).unwrap_err().errno(), Errno::NOSPC);
}

#[test]
fn generic_643_the_header_decides_the_area_size_and_a_bad_header_leaves_nothing_active() {
    let fs = fs();
    let id = mkswapfile(&fs, "/long", 8 * MIB, "", [4; 16]).unwrap();
    fs.sync().unwrap();
    let mut system = SwapSystem::new();
    let swapfile = CowfsFile::new(&fs, "/long", SwapMode::Pinned).unwrap();
    drop(swapfile);
    nocow_file(
        &fs,
        "short",
        8 * MIB,
        &SwapHeader::new(100, [5; 16], "").unwrap().encode(),
    );
    system
        .swapon(
            Box::new(CowfsFile::new(&fs, "/short", SwapMode::Pinned).unwrap()),
            None,
        )
        .unwrap();
    assert_eq!(
        system.list()[0].size_kib,
        99 * 4,
        "the header's size, not the file's"
    );
    let blank = nocow_file(&fs, "blank", MIB, &[]);
    let err = system
        .swapon(
            Box::new(CowfsFile::new(&fs, "/blank", SwapMode::Pinned).unwrap()),
            None,
        )
        .unwrap_err();
    assert!(
        err.reason().contains("Unable to find swap-space signature"),
        "{err}"
    );
    assert_eq!(fs.swap_active(blank), None);
    assert_eq!(fs.swap_active(id), None);
}

#[test]
fn a_host_file_made_by_mkswap_create() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("hostswap");
    swap::mkswap(&path, Some(8 * MIB), "host", [6; 16]).unwrap();
    let mut system = SwapSystem::new();
    system.swapon(Box::new(HostFile::new(&path)), None).unwrap();
    assert_eq!(system.list()[0].kind, "file");
    round_trip(&mut system, 300);
    let sparse = dir.path().join("sparse");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    let err = system
        .swapon(Box::new(HostFile::new(&sparse)), None)
        .unwrap_err();
    assert!(err.reason().contains("holes"), "{err}");
}

#[test]
fn generic_472_the_smallest_area_and_a_header_larger_than_the_file() {
    let fs = fs();
    mkswapfile(&fs, "/three", 3 * PAGE_SIZE as u64, "", [7; 16]).unwrap();
    let mut system = SwapSystem::new();
    system
        .swapon(
            Box::new(CowfsFile::new(&fs, "/three", SwapMode::Pinned).unwrap()),
            None,
        )
        .unwrap();
    assert_eq!(
        system.list()[0].size_kib,
        8,
        "three pages: the header and two to swap to"
    );
    nocow_file(
        &fs,
        "liar",
        MIB,
        &SwapHeader::new(1000, [8; 16], "").unwrap().encode(),
    );
    let err = system
        .swapon(
            Box::new(CowfsFile::new(&fs, "/liar", SwapMode::Pinned).unwrap()),
            None,
        )
        .unwrap_err();
    assert!(
        err.reason()
            .contains("Swap area shorter than signature indicates"),
        "{err}"
    );
    assert!(
        mkswapfile(&fs, "/two", 2 * PAGE_SIZE as u64, "", [9; 16]).is_err(),
        "too small to make"
    );
}

#[test]
fn generic_636_a_file_of_only_a_header_is_an_empty_swap_file() {
    let fs = fs();
    let mut header = SwapHeader::new(10, [6; 16], "").unwrap().encode();
    header[1028..1032].copy_from_slice(&0u32.to_ne_bytes());
    let id = nocow_file(&fs, "empty", PAGE_SIZE as u64, &header);
    let mut system = SwapSystem::new();
    let err = system
        .swapon(
            Box::new(CowfsFile::new(&fs, "/empty", SwapMode::Pinned).unwrap()),
            None,
        )
        .unwrap_err();
    assert_eq!(err.errno(), Errno::INVAL);
    assert!(err.reason().contains("Empty swap-file"), "{err}");
    assert!(system.list().is_empty());
    assert_eq!(fs.swap_active(id), None, "nothing stays pinned");
}
