//! The swap-file contract (docs/SWAP.md), rule by rule. Tests are named after
//! the xfstests case each mirrors, where there is one. One file on purpose: it is the
//! contract's checklist, in the contract's order.

mod common;

use std::sync::Arc;

use common::*;
use cowfs::device::{AlignedBuf, BlockDevice};
use cowfs::format::inode_flags::{COMPRESS, NOCOW};
use proptest::prelude::*;

use cowfs::{
    BalanceFilter, Errno, FallocateMode, Filesystem, InodeId, RenameFlags, SetAttr, SwapMode,
};

const AREA: u64 = 4 * MIB;

/// A copy-on-write, checksummed file of AREA bytes, preallocated and active through the
/// filesystem.
fn cow_swapfile(fs: &Filesystem) -> InodeId {
    let f = file(fs, fs.root(), "cowswap");
    fs.fallocate(f, FallocateMode::Allocate { keep_size: false }, 0, AREA)
        .unwrap();
    fs.activate_swap(f, SwapMode::ThroughFs).unwrap();
    f
}

/// A copy-on-write file of `size` bytes whose writes are compressed with `how`, preallocated
/// (not active).
fn compressed_file(fs: &Filesystem, name: &str, how: &str, size: u64) -> InodeId {
    let f = file(fs, fs.root(), name);
    fs.set_compression(f, cowfs::CompressionConfig::parse(how).unwrap())
        .unwrap();
    fs.fallocate(f, FallocateMode::Allocate { keep_size: false }, 0, size)
        .unwrap();
    f
}

/// A swap file as `mkswapfile` makes one: empty, NOCOW, preallocated.
fn swapfile(fs: &Filesystem, name: &str, size: u64) -> InodeId {
    let f = file(fs, fs.root(), name);
    fs.set_flags(f, NOCOW).unwrap();
    fs.fallocate(f, FallocateMode::Allocate { keep_size: false }, 0, size)
        .unwrap();
    f
}

fn errno<T: std::fmt::Debug>(r: cowfs::Result<T>) -> Errno {
    r.unwrap_err().errno()
}

fn reason<T: std::fmt::Debug>(r: cowfs::Result<T>) -> String {
    r.unwrap_err().reason().to_string()
}

// ---- A. Activation ----

#[test]
fn a_swapfile_activates_with_a_contiguous_map() {
    let (_dev, fs) = memory_fs(64 * MIB);
    let f = swapfile(&fs, "swap", AREA + 1000);
    let act = fs.activate_swap(f, SwapMode::Pinned).unwrap();
    assert_eq!(act.pages, AREA / 4096, "rounded down to whole pages");
    assert_eq!(act.extents.len(), 1, "contiguous runs are merged");
    assert_eq!(act.extents[0].pages, act.pages);
    assert_eq!(fs.swap_active(f), Some(SwapMode::Pinned));
    assert_eq!(
        errno(fs.activate_swap(f, SwapMode::Pinned)),
        Errno::BUSY,
        "activate again"
    );
}

#[test]
fn btrfs_173_a_compressed_file_is_refused_when_pinned() {
    let (_dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "c");
    fs.set_flags(f, COMPRESS).unwrap();
    let data = b"compressible ".repeat(1 << 17)[..1 << 20].to_vec();
    fs.write(f, 0, &data).unwrap();
    assert_eq!(
        reason(fs.activate_swap(f, SwapMode::Pinned)),
        "swapfile must not be compressed"
    );
    // Through the filesystem every swap read decodes what is stored.
    fs.activate_swap(f, SwapMode::ThroughFs).unwrap();
    assert!(fs.extent_map(f).unwrap().iter().all(|e| e.encoded));
    let mut buf = vec![0u8; 1 << 20];
    fs.swap_read(f, 0, &mut buf).unwrap();
    assert!(buf == data);
}

#[test]
fn btrfs_173_a_copy_on_write_file_is_refused_when_pinned() {
    let (_dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "cow");
    fs.fallocate(f, FallocateMode::Allocate { keep_size: false }, 0, AREA)
        .unwrap();
    let r = fs.activate_swap(f, SwapMode::Pinned);
    assert_eq!(
        (errno(r.clone()), reason(r)),
        (Errno::INVAL, "swapfile must not be copy-on-write".into())
    );
    fs.activate_swap(f, SwapMode::ThroughFs).unwrap();
}

#[test]
fn generic_495_holes_are_refused() {
    let (_dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "sparse");
    fs.set_flags(f, NOCOW).unwrap();
    fs.setattr(
        f,
        &SetAttr {
            size: Some(AREA),
            ..SetAttr::default()
        },
    )
    .unwrap();
    assert_eq!(
        reason(fs.activate_swap(f, SwapMode::Pinned)),
        "swapfile must not have holes"
    );
    fs.fallocate(f, FallocateMode::Allocate { keep_size: true }, 0, AREA / 2)
        .unwrap();
    assert_eq!(
        reason(fs.activate_swap(f, SwapMode::Pinned)),
        "swapfile must not have holes"
    );
    fs.fallocate(
        f,
        FallocateMode::Allocate { keep_size: true },
        AREA / 2,
        AREA / 2,
    )
    .unwrap();
    fs.activate_swap(f, SwapMode::Pinned).unwrap();
}

#[test]
fn an_inline_file_is_refused() {
    let (_dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "tiny");
    fs.write(f, 0, &[0u8; 4096]).unwrap();
    fs.setattr(
        f,
        &SetAttr {
            size: Some(1000),
            ..SetAttr::default()
        },
    )
    .unwrap();
    let g = file(&fs, fs.root(), "inline");
    fs.write(g, 0, &[1u8; 100]).unwrap();
    fs.sync().unwrap();
    fs.setattr(
        g,
        &SetAttr {
            size: Some(8192),
            ..SetAttr::default()
        },
    )
    .unwrap();
    assert_eq!(
        reason(fs.activate_swap(g, SwapMode::ThroughFs)),
        "swapfile must not be inline"
    );
    assert_eq!(
        reason(fs.activate_swap(f, SwapMode::ThroughFs)),
        "swapfile has no whole page"
    );
}

#[test]
fn generic_357_a_reflinked_file_is_refused_and_generic_370_accepted_once_alone() {
    let (_dev, fs) = memory_fs(64 * MIB);
    let f = swapfile(&fs, "swap", AREA);
    fs.write_direct(f, 0, &AlignedBuf::zeroed(AREA as usize))
        .unwrap();
    let clone = file(&fs, fs.root(), "clone");
    fs.set_flags(clone, NOCOW).unwrap();
    fs.clone_file(f, clone).unwrap();
    assert_eq!(
        reason(fs.activate_swap(f, SwapMode::Pinned)),
        "swapfile must not be copy-on-write"
    );
    fs.unlink(fs.root(), b"clone").unwrap();
    fs.activate_swap(f, SwapMode::Pinned).unwrap();
}

#[test]
fn btrfs_293_a_snapshotted_file_is_refused_until_the_snapshot_goes() {
    let (_dev, fs) = memory_fs(64 * MIB);
    let vol = fs.create_subvolume(fs.root(), b"vol").unwrap();
    let f = file(&fs, fs.resolve("/vol").unwrap(), "swap");
    fs.set_flags(f, NOCOW).unwrap();
    fs.fallocate(f, FallocateMode::Allocate { keep_size: false }, 0, AREA)
        .unwrap();
    fs.snapshot(vol, fs.root(), b"ro", true).unwrap();
    assert_eq!(
        reason(fs.activate_swap(f, SwapMode::Pinned)),
        "swapfile must not be copy-on-write"
    );
    fs.delete_subvolume(fs.root(), b"ro").unwrap();
    fs.activate_swap(f, SwapMode::Pinned).unwrap();
}

#[test]
fn generic_496_preallocated_extents_are_accepted() {
    let (_dev, fs) = memory_fs(64 * MIB);
    let f = swapfile(&fs, "swap", AREA);
    let act = fs.activate_swap(f, SwapMode::Pinned).unwrap();
    assert_eq!(act.pages, AREA / 4096);
}

#[test]
fn an_exclusive_operation_makes_activation_busy() {
    let (_dev, fs) = memory_fs(96 * MIB);
    for i in 0..6 {
        fs.write(
            file(&fs, fs.root(), &format!("f{i}")),
            0,
            &noise(i, 3 << 20),
        )
        .unwrap();
        fs.sync().unwrap();
    }
    let f = swapfile(&fs, "swap", AREA);
    let other = fs.clone();
    let mut outcome = None;
    fs.balance(BalanceFilter::default(), &mut |_| {
        if outcome.is_none() {
            fs.pause_balance().unwrap();
            let other = other.clone();
            outcome = Some(std::thread::spawn(move || {
                let busy = other.activate_swap(f, SwapMode::Pinned).map(drop);
                other.cancel_balance().unwrap();
                busy
            }));
        }
    })
    .unwrap();
    assert_eq!(errno(outcome.unwrap().join().unwrap()), Errno::BUSY);
    fs.activate_swap(f, SwapMode::Pinned).unwrap();
}

#[test]
fn a_failed_activation_pins_nothing() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "holey");
    fs.set_flags(f, NOCOW).unwrap();
    fs.setattr(
        f,
        &SetAttr {
            size: Some(AREA),
            ..SetAttr::default()
        },
    )
    .unwrap();
    assert!(fs.activate_swap(f, SwapMode::Pinned).is_err());
    assert_eq!(fs.swap_active(f), None);
    fs.snapshot(fs.root().subvol, fs.root(), b"snap", false)
        .unwrap();
    fs.balance(BalanceFilter::default(), &mut |_| {}).unwrap();
    fs.unlink(fs.root(), b"holey").unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

// ---- B. While active ----

/// An active pinned swap file, and a plain file beside it.
fn active() -> (Arc<dyn BlockDevice>, Filesystem, InodeId, InodeId) {
    let (dev, fs) = memory_fs(96 * MIB);
    let f = swapfile(&fs, "swap", AREA);
    let other = file(&fs, fs.root(), "other");
    fs.set_flags(other, NOCOW).unwrap();
    fs.write(other, 0, &[5u8; 8192]).unwrap();
    fs.activate_swap(f, SwapMode::Pinned).unwrap();
    (dev, fs, f, other)
}

#[test]
fn pinned_swap_io_reaches_only_the_pinned_pages_and_only_while_active() {
    let (dev, fs, f, other) = active();
    let io = fs.pinned_swap_io(f).unwrap();
    let page = [7u8; 4096];
    io.write_pages(3, &page).unwrap();
    let at = fs.extent_map(f).unwrap()[0].physical + 3 * 4096;
    let mut on_device = AlignedBuf::zeroed(4096);
    dev.read_at(at, &mut on_device).unwrap();
    assert_eq!(on_device[..], page[..], "written at the pinned offset");
    let mut back = [0u8; 4096];
    io.read_pages(3, &mut back).unwrap();
    assert_eq!(back, page);
    let past_end = AREA / 4096;
    assert_eq!(errno(io.write_pages(past_end, &page)), Errno::INVAL);
    assert_eq!(errno(io.write_pages(0, &page[..100])), Errno::INVAL);
    assert_eq!(
        errno(fs.pinned_swap_io(other)),
        Errno::INVAL,
        "not a swap file"
    );
    fs.deactivate_swap(f).unwrap();
    assert_eq!(
        errno(io.write_pages(0, &page)),
        Errno::INVAL,
        "after swapoff"
    );
    assert_eq!(
        read_all(&fs, other),
        vec![5u8; 8192],
        "nothing else touched"
    );
}

#[test]
fn generic_493_reads_and_copies_from_it_are_allowed() {
    let (_dev, fs, f, _) = active();
    assert_eq!(read_all(&fs, f).len() as u64, AREA);
    let copy = file(&fs, fs.root(), "copy");
    fs.set_flags(copy, NOCOW).unwrap();
    assert_eq!(fs.copy_file_range(f, 0, copy, 0, AREA).unwrap(), AREA);
    assert!(
        fs.extent_map(copy).unwrap().iter().all(|m| !m.shared),
        "copied, not shared"
    );
}

#[test]
fn generic_569_writes_are_text_file_busy() {
    let (_dev, fs, f, _) = active();
    assert_eq!(errno(fs.write(f, 0, b"x")), Errno::TXTBSY);
    assert_eq!(
        errno(fs.write_direct(f, 0, &AlignedBuf::zeroed(4096))),
        Errno::TXTBSY
    );
}

#[test]
fn generic_494_truncate_and_fallocate_are_text_file_busy() {
    let (_dev, fs, f, _) = active();
    for size in [AREA, AREA / 2, AREA * 2] {
        assert_eq!(
            errno(fs.setattr(
                f,
                &SetAttr {
                    size: Some(size),
                    ..SetAttr::default()
                }
            )),
            Errno::TXTBSY
        );
    }
    for mode in [
        FallocateMode::Allocate { keep_size: false },
        FallocateMode::Allocate { keep_size: true },
        FallocateMode::PunchHole,
        FallocateMode::ZeroRange { keep_size: true },
    ] {
        assert_eq!(
            errno(fs.fallocate(f, mode, 0, 4096)),
            Errno::TXTBSY,
            "{mode:?}"
        );
    }
}

#[test]
fn generic_356_and_554_sharing_into_or_out_of_it_is_text_file_busy() {
    let (_dev, fs, f, other) = active();
    assert_eq!(errno(fs.clone_range(other, 0, f, 0, 4096)), Errno::TXTBSY);
    assert_eq!(errno(fs.clone_range(f, 0, other, 0, 4096)), Errno::TXTBSY);
    assert_eq!(errno(fs.dedupe_range(other, 0, f, 0, 4096)), Errno::TXTBSY);
    assert_eq!(errno(fs.dedupe_range(f, 0, other, 0, 4096)), Errno::TXTBSY);
    assert_eq!(
        errno(fs.copy_file_range(other, 0, f, 0, 4096)),
        Errno::TXTBSY
    );
}

#[test]
fn unlink_and_rename_are_not_permitted() {
    let (_dev, fs, _f, _) = active();
    let root = fs.root();
    assert_eq!(errno(fs.unlink(root, b"swap")), Errno::PERM);
    assert_eq!(
        errno(fs.rename(root, b"swap", root, b"moved", RenameFlags::default())),
        Errno::PERM
    );
    assert_eq!(
        errno(fs.rename(root, b"other", root, b"swap", RenameFlags::default())),
        Errno::PERM,
        "as the replaced target"
    );
}

#[test]
fn btrfs_174_chattr_plus_c_is_invalid_and_minus_c_changes_nothing() {
    let (_dev, fs, f, _) = active();
    assert_eq!(errno(fs.set_flags(f, NOCOW | COMPRESS)), Errno::INVAL);
    assert_eq!(
        fs.set_flags(f, 0).unwrap(),
        NOCOW,
        "-C succeeds and changes nothing"
    );
    assert_eq!(fs.getattr(f).unwrap().flags, NOCOW);
}

#[test]
fn btrfs_174_snapshot_defrag_and_btrfs_274_subvolume_delete() {
    let (_dev, fs) = memory_fs(96 * MIB);
    let vol = fs.create_subvolume(fs.root(), b"vol").unwrap();
    let f = file(&fs, fs.resolve("/vol").unwrap(), "swap");
    fs.set_flags(f, NOCOW).unwrap();
    fs.fallocate(f, FallocateMode::Allocate { keep_size: false }, 0, AREA)
        .unwrap();
    fs.activate_swap(f, SwapMode::Pinned).unwrap();
    assert_eq!(
        errno(fs.snapshot(vol, fs.root(), b"snap", false)),
        Errno::TXTBSY
    );
    assert_eq!(errno(fs.defrag(f, false)), Errno::TXTBSY);
    assert_eq!(errno(fs.delete_subvolume(fs.root(), b"vol")), Errno::PERM);
    fs.deactivate_swap(f).unwrap();
    fs.snapshot(vol, fs.root(), b"snap", false).unwrap();
}

#[test]
fn btrfs_177_balance_skips_pinned_block_groups_and_shrink_refuses() {
    let (dev, fs) = memory_fs(96 * MIB);
    let filler = file(&fs, fs.root(), "filler");
    fs.write(filler, 0, &noise(1, 40 << 20)).unwrap();
    fs.sync().unwrap();
    let f = swapfile(&fs, "swap", AREA);
    fs.unlink(fs.root(), b"filler").unwrap();
    fs.sync().unwrap();
    fs.activate_swap(f, SwapMode::Pinned).unwrap();
    let report = fs.balance(BalanceFilter::default(), &mut |_| {}).unwrap();
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert!(report.skipped[0].1.contains("swapfile"));
    assert_eq!(
        errno(fs.resize(24 * MIB, &mut |_| {})),
        Errno::TXTBSY,
        "shrinking would move the swapfile"
    );
    fs.resize(128 * MIB, &mut |_| {}).unwrap();
    let scrub = fs.scrub(&mut |_, _| {}).unwrap();
    assert_eq!(scrub.skipped_groups.len(), 1);
    fs.deactivate_swap(f).unwrap();
    fs.resize(24 * MIB, &mut |_| {}).unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

// ---- C. After deactivation ----

#[test]
fn deactivation_restores_everything() {
    let (dev, fs, f, other) = active();
    fs.deactivate_swap(f).unwrap();
    assert_eq!(errno(fs.deactivate_swap(f)), Errno::INVAL, "not active");
    fs.write_direct(f, 0, &AlignedBuf::zeroed(4096)).unwrap();
    fs.clone_range(f, 0, other, 0, 4096).unwrap();
    fs.defrag(f, false).unwrap();
    fs.rename(
        fs.root(),
        b"swap",
        fs.root(),
        b"was-swap",
        RenameFlags::default(),
    )
    .unwrap();
    fs.unlink(fs.root(), b"was-swap").unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

// ---- The two modes at work ----

#[test]
fn pinned_pages_survive_everything_else_the_filesystem_does() {
    let (dev, fs) = memory_fs(128 * MIB);
    let f = swapfile(&fs, "swap", AREA);
    for i in 0..4 {
        fs.write(
            file(&fs, fs.root(), &format!("busy{i}")),
            0,
            &noise(i, 2 << 20),
        )
        .unwrap();
    }
    let act = fs.activate_swap(f, SwapMode::Pinned).unwrap();
    let page_at = |page: u64| {
        let x = act
            .extents
            .iter()
            .find(|x| (x.page..x.page + x.pages).contains(&page))
            .unwrap();
        x.physical + (page - x.page) * 4096
    };
    for page in 0..act.pages {
        dev.write_at(page_at(page), &noise(1000 + page, 4096))
            .unwrap();
    }
    for i in 0..4 {
        fs.write(
            fs.resolve(&format!("/busy{i}")).unwrap(),
            4096,
            &noise(50 + i, 1 << 20),
        )
        .unwrap();
        fs.defrag(fs.resolve(&format!("/busy{i}")).unwrap(), true)
            .unwrap();
    }
    fs.unlink(fs.root(), b"busy0").unwrap();
    fs.balance(BalanceFilter::default(), &mut |_| {}).unwrap();
    let _ = fs.resize(40 * MIB, &mut |_| {});
    assert!(fs
        .snapshot(fs.root().subvol, fs.root(), b"s", true)
        .is_err());
    fs.sync().unwrap();
    let mut page = vec![0u8; 4096];
    for p in 0..act.pages {
        dev.read_at(page_at(p), &mut page).unwrap();
        assert_eq!(page, noise(1000 + p, 4096), "swap page {p}");
    }
    fs.deactivate_swap(f).unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn a_copy_on_write_swapfile_works_through_the_filesystem() {
    let (dev, fs) = memory_fs(96 * MIB);
    let f = cow_swapfile(&fs);
    fs.snapshot(fs.root().subvol, fs.root(), b"snap", true)
        .unwrap();
    let pages = AREA / 4096;
    let mut shadow = vec![None; pages as usize];
    let mut rng = Rng(5);
    for round in 0..3000u64 {
        let page = rng.below(pages);
        let data = noise(round, 4096);
        fs.swap_write(f, page, &data).unwrap();
        shadow[page as usize] = Some(data);
        if round % 500 == 0 {
            let mut buf = vec![0u8; 4096];
            for (p, want) in shadow.iter().enumerate() {
                if let Some(want) = want {
                    fs.swap_read(f, p as u64, &mut buf).unwrap();
                    assert_eq!(&buf, want);
                }
            }
        }
    }
    assert_eq!(
        errno(fs.swap_write(f, pages, &[0u8; 4096])),
        Errno::INVAL,
        "outside the area"
    );
    fs.deactivate_swap(f).unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

/// Through the filesystem every swap I/O asks where the pages are and how they are stored, so
/// defrag may move an active swap file's blocks, and compress them (pinned mode refuses both:
/// see btrfs_174 above).
#[test]
fn defrag_moves_an_active_through_filesystem_swapfile() {
    let (dev, fs) = memory_fs(96 * MIB);
    let f = cow_swapfile(&fs);
    let pages = AREA / 4096;
    let mut rng = Rng(9);
    let mut shadow: Vec<Vec<u8>> = (0..pages).map(|p| noise(p, 4096)).collect();
    // Every page written once, in one order, then some again: all data, in many extents.
    for (page, data) in shadow.iter().enumerate().rev() {
        fs.swap_write(f, page as u64, data).unwrap();
    }
    for round in 0..400u64 {
        let page = rng.below(pages);
        shadow[page as usize] = noise(pages + round, 4096);
        fs.swap_write(f, page, &shadow[page as usize]).unwrap();
    }
    let before = fs.extent_map(f).unwrap().len();
    let stats = fs.defrag(f, false).unwrap();
    assert!(
        stats.extents_after < before,
        "{before} extents, then {stats:?}"
    );
    let mut buf = vec![0u8; 4096];
    for (page, want) in shadow.iter().enumerate() {
        fs.swap_read(f, page as u64, &mut buf).unwrap();
        assert_eq!(&buf, want, "page {page} after defrag");
    }
    // Compressing defrag too: swap reads decode what it stored.
    let text: Vec<u8> = b"swap page text ".repeat(4096 / 15 + 1)[..4096].to_vec();
    for (page, data) in shadow.iter_mut().enumerate().take(64) {
        data.clone_from(&text);
        fs.swap_write(f, page as u64, &text).unwrap();
    }
    fs.defrag(f, true).unwrap();
    assert!(
        fs.extent_map(f).unwrap().iter().any(|e| e.encoded),
        "compressed"
    );
    for (page, want) in shadow.iter().enumerate() {
        fs.swap_read(f, page as u64, &mut buf).unwrap();
        assert_eq!(&buf, want, "page {page} after compressing defrag");
    }
    fs.swap_write(f, 7, &[3u8; 4096]).unwrap();
    fs.deactivate_swap(f).unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

/// A reflink copy of an active through-filesystem swap file holds the area as it was; swap
/// writes after it go to new blocks (a pinned one refuses: generic_356 above).
#[test]
fn a_reflink_copy_of_an_active_through_filesystem_swapfile_keeps_the_area_as_it_was() {
    let (dev, fs) = memory_fs(96 * MIB);
    let f = cow_swapfile(&fs);
    fs.swap_write(f, 3, &[1u8; 4096]).unwrap();
    let copy = file(&fs, fs.root(), "copy");
    fs.clone_file(f, copy).unwrap();
    fs.swap_write(f, 3, &[2u8; 4096]).unwrap();
    let mut page = vec![0u8; 4096];
    fs.read(copy, 3 * 4096, &mut page).unwrap();
    assert_eq!(page, vec![1u8; 4096], "the copy keeps the page as it was");
    fs.swap_read(f, 3, &mut page).unwrap();
    assert_eq!(page, vec![2u8; 4096]);
    fs.deactivate_swap(f).unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

/// On free space cut in single blocks, a journal cluster can be one block, which no
/// compressed piece of several blocks fits: such pieces are stored plainly, and every page
/// reads back.
#[test]
fn compressed_swap_writes_on_fragmented_free_space_store_what_fits_plainly() {
    let (dev, fs) = memory_fs(32 * MIB);
    let f = compressed_file(&fs, "zswap", "lz4", MIB);
    // Everything filled a block at a time by two files in turn, then one of them removed:
    // the free space is single blocks.
    let (a, b) = (file(&fs, fs.root(), "a"), file(&fs, fs.root(), "b"));
    let block = AlignedBuf::from_slice(&noise(1, 4096));
    'fill: for at in (0..).step_by(4096) {
        for g in [a, b] {
            if fs.write_direct(g, at, &block).is_err() {
                break 'fill;
            }
        }
    }
    fs.sync().unwrap();
    fs.unlink(fs.root(), b"b").unwrap();
    fs.sync().unwrap();
    fs.activate_swap(f, SwapMode::ThroughFs).unwrap();
    // Half noise, half zeros: each 32 KiB piece shrinks to several blocks.
    let page = |p: u64| [noise(p, 2048), vec![0; 2048]].concat();
    let data: Vec<u8> = (0..64).flat_map(page).collect();
    fs.swap_write(f, 0, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    fs.swap_read(f, 0, &mut back).unwrap();
    assert!(back == data, "read back from the journal");
    fs.sync().unwrap();
    fs.swap_read(f, 0, &mut back).unwrap();
    assert!(back == data, "read back after the commit");
    let map = fs.extent_map(f).unwrap();
    let written = map.iter().filter(|e| e.file_offset < data.len() as u64);
    assert!(written.clone().all(|e| !e.encoded), "{map:?}");
    assert!(written.count() > 1, "{map:?}");
    fs.deactivate_swap(f).unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn the_through_filesystem_reservation_holds_when_the_disk_fills() {
    let (_dev, fs) = memory_fs(64 * MIB);
    let f = cow_swapfile(&fs);
    let filler = file(&fs, fs.root(), "filler");
    let chunk = vec![9u8; 1 << 20];
    let mut at = 0;
    while fs.write(filler, at, &chunk).is_ok() {
        at += chunk.len() as u64;
    }
    fs.sync().unwrap();
    for round in 0..(3 * AREA / 4096) {
        fs.swap_write(f, round % (AREA / 4096), &noise(round, 4096))
            .unwrap();
    }
}

#[test]
fn through_filesystem_reads_in_parallel_with_rewrites_and_balance_stay_right() {
    let (dev, fs) = memory_fs(96 * MIB);
    let f = cow_swapfile(&fs);
    let pages = AREA / 4096;
    for page in 0..pages {
        fs.swap_write(f, page, &noise(page, 4096)).unwrap();
    }
    fs.sync().unwrap();
    // Even pages keep their data while their blocks move (balance) and the blocks around
    // them are freed and reused (odd pages rewritten, committed): reads made without the
    // engine's lock must still see exactly it, never an error.
    let read = |rng: &mut common::Rng| {
        let (page, mut buf) = (rng.below(pages / 2) * 2, vec![0u8; 4096]);
        fs.swap_read(f, page, &mut buf).unwrap();
        assert_eq!(buf, noise(page, 4096), "page {page}");
    };
    with_racing_readers(read, || {
        for round in 0..6u64 {
            for page in (1..pages).step_by(2) {
                fs.swap_write(f, page, &noise(page + round, 4096)).unwrap();
            }
            fs.sync().unwrap();
            fs.balance(BalanceFilter::default(), &mut |_| {}).unwrap();
        }
    });
    fs.deactivate_swap(f).unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

/// The same race for a compressed swap file: its pages are rewritten (with the same bytes) in
/// new compressed pieces over and over, so readers without the engine's lock meet pieces in
/// the journal, pieces just settled into extents, their older copies freed, and blocks moved
/// by balance: every read must still return exactly the page, never an error.
#[test]
fn compressed_through_filesystem_reads_in_parallel_with_rewrites_and_balance_stay_right() {
    let (dev, fs) = memory_fs(96 * MIB);
    let f = compressed_file(&fs, "zswap", "lz4", AREA);
    fs.activate_swap(f, SwapMode::ThroughFs).unwrap();
    let pages = AREA / 4096;
    let page = |p: u64| format!("swap page {p:>10}, ").repeat(200).into_bytes()[..4096].to_vec();
    let run = |from: u64, n: u64| (from..from + n).flat_map(page).collect::<Vec<u8>>();
    fs.swap_write(f, 0, &run(0, pages)).unwrap();
    fs.sync().unwrap();
    let read = |rng: &mut common::Rng| {
        let (at, mut buf) = (rng.below(pages - 3), vec![0u8; 3 * 4096]);
        fs.swap_read(f, at, &mut buf).unwrap();
        assert!(buf == run(at, 3), "pages {at}..{}", at + 3);
    };
    with_racing_readers(read, || {
        let mut rng = Rng(99);
        for round in 0..6 {
            for _ in 0..pages / 8 {
                let at = rng.below(pages - 12);
                fs.swap_write(f, at, &run(at, 12)).unwrap();
            }
            fs.sync().unwrap();
            if round % 2 == 1 {
                fs.balance(BalanceFilter::default(), &mut |_| {}).unwrap();
            }
        }
    });
    fs.deactivate_swap(f).unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

/// Swap writes to a copy-on-write file go to a journal until the commit (fs/swap/journal.rs):
/// read back from it before the commit, recorded as whole extents at the commit (one-page
/// writes in file order make one extent per cluster, not one per page), a page rewritten
/// within a transaction recorded once, the space of its older copies freed.
#[test]
fn through_filesystem_swap_writes_are_recorded_once_per_commit_as_whole_extents() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = cow_swapfile(&fs);
    fs.sync().unwrap();
    let used = fs.info().unwrap().data_used;
    for page in 0..256 {
        fs.swap_write(f, page, &noise(page, 4096)).unwrap();
    }
    fs.swap_write(f, 5, &noise(1005, 4096)).unwrap();
    fs.swap_write(f, 5, &noise(2005, 4096)).unwrap();
    let expect = |page: u64| match page {
        5 => noise(2005, 4096),
        p => noise(p, 4096),
    };
    let mut buf = vec![0u8; 8 * 4096];
    fs.swap_read(f, 2, &mut buf).unwrap();
    let want: Vec<u8> = (2..10).flat_map(expect).collect();
    assert_eq!(buf, want, "read back from the journal, before the commit");

    fs.sync().unwrap();
    let extents: Vec<_> = fs
        .extent_map(f)
        .unwrap()
        .into_iter()
        .filter(|m| m.file_offset < 256 * 4096)
        .collect();
    assert!(
        extents.len() <= 4,
        "256 one-page writes in order make a few extents, not one each: {extents:?}"
    );
    for page in [0, 5, 6, 255] {
        fs.swap_read(f, page, &mut buf[..4096]).unwrap();
        assert_eq!(buf[..4096], expect(page), "page {page} after the commit");
    }
    // The new copies take 256 pages; the older copies of page 5 and the rest of the two
    // clusters are free again. (The preallocated extent stays whole while any of it is
    // mapped, as any partly overwritten extent.)
    fs.sync().unwrap();
    assert_eq!(
        fs.info().unwrap().data_used,
        used + 256 * 4096,
        "no space leaked"
    );
    fs.deactivate_swap(f).unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

/// Swap writes to a copy-on-write file, plain or compressed, rewriting each other's pages in
/// any order within and across transactions (the journal keeps each page's newest copy: plain
/// pages, or pages of compressed pieces, which later writes may partly replace): every read,
/// before and after each commit, returns what was written last; nothing leaks (fsck).
fn journal_round_trip(how: Option<&str>, ops: &[JournalOp]) {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = file(&fs, fs.root(), "cowswap");
    if let Some(how) = how {
        fs.set_compression(f, cowfs::CompressionConfig::parse(how).unwrap())
            .unwrap();
    }
    fs.fallocate(f, FallocateMode::Allocate { keep_size: false }, 0, AREA)
        .unwrap();
    fs.activate_swap(f, SwapMode::ThroughFs).unwrap();
    let mut model: Vec<Vec<u8>> = vec![vec![0; 4096]; JOURNAL_PAGES as usize];
    let page = |seed: u64, text: bool| match text {
        true => format!("swap page {seed:>12}; ").repeat(200).as_bytes()[..4096].to_vec(),
        false => noise(seed, 4096),
    };
    for (n, op) in ops.iter().enumerate() {
        match *op {
            JournalOp::Write { at, pages, text } => {
                let data: Vec<Vec<u8>> = (0..pages)
                    .map(|p| page(n as u64 * 1000 + p, text))
                    .collect();
                fs.swap_write(f, at, &data.concat()).unwrap();
                for (p, d) in data.into_iter().enumerate() {
                    model[at as usize + p] = d;
                }
            }
            JournalOp::Read { at, pages } => {
                let mut buf = vec![0u8; pages as usize * 4096];
                fs.swap_read(f, at, &mut buf).unwrap();
                for (p, got) in buf.chunks(4096).enumerate() {
                    let p = at as usize + p;
                    assert!(
                        got == model[p],
                        "op {n}: page {p} reads what was written last"
                    );
                }
            }
            JournalOp::Sync => fs.sync().unwrap(),
        }
    }
    fs.sync().unwrap();
    let mut buf = vec![0u8; 4096];
    for (p, want) in model.iter().enumerate() {
        fs.swap_read(f, p as u64, &mut buf).unwrap();
        assert!(buf == *want, "page {p} after the commit");
    }
    fs.deactivate_swap(f).unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

const JOURNAL_PAGES: u64 = 48;

#[derive(Debug, Clone)]
enum JournalOp {
    Write { at: u64, pages: u64, text: bool },
    Read { at: u64, pages: u64 },
    Sync,
}

fn journal_op() -> impl Strategy<Value = JournalOp> {
    let range = (0..JOURNAL_PAGES).prop_flat_map(|at| (Just(at), 1..=(JOURNAL_PAGES - at).min(20)));
    prop_oneof![
        6 => (range.clone(), any::<bool>())
            .prop_map(|((at, pages), text)| JournalOp::Write { at, pages, text }),
        3 => range.prop_map(|(at, pages)| JournalOp::Read { at, pages }),
        1 => Just(JournalOp::Sync),
    ]
}

proptest! {
    // PROPTEST_CASES=N runs more (or fewer) cases than the 48 of the test command.
    #![proptest_config(ProptestConfig {
        cases: env_number("PROPTEST_CASES", 48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn journaled_swap_writes_read_back_as_written_last(
        how in prop_oneof![Just(None), Just(Some("lz4")), Just(Some("zstd:1"))],
        ops in proptest::collection::vec(journal_op(), 1..40),
    ) {
        journal_round_trip(how, &ops);
    }
}

/// A compressed piece in the journal that is damaged on the device before the commit fails
/// its swap-in, from any of its pages.
#[test]
fn a_corrupted_journaled_compressed_piece_is_detected() {
    let (_dev, fs) = memory_fs(64 * MIB);
    let f = compressed_file(&fs, "zswap", "lz4", AREA);
    fs.activate_swap(f, SwapMode::ThroughFs).unwrap();
    fs.sync().unwrap();
    let text = "a compressible page of swap; ".repeat(8 * 4096 / 29 + 1);
    fs.swap_write(f, 8, &text.as_bytes()[..8 * 4096]).unwrap();
    let mut buf = vec![0u8; 4096];
    fs.swap_read(f, 11, &mut buf).unwrap();
    assert_eq!(buf, text.as_bytes()[3 * 4096..4 * 4096]);
    // The piece's first block, found by its LZ4 length and the text after it.
    let dev = _dev;
    let mut block = vec![0u8; 4096];
    let physical = (0..dev.len())
        .step_by(4096)
        .find(|at| {
            dev.read_at(*at, &mut block).unwrap();
            block[4..].windows(12).any(|w| w == b"compressible")
        })
        .expect("the piece is on the device");
    dev.read_at(physical, &mut block).unwrap();
    block[100] ^= 1;
    dev.write_at(physical, &block).unwrap();
    for page in [8, 13] {
        assert_eq!(
            errno(fs.swap_read(f, page, &mut buf)),
            Errno::IO,
            "page {page}"
        );
    }
}

/// A journaled page that is damaged on the device before the commit fails its swap-in.
#[test]
fn a_corrupted_journaled_page_is_detected() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = cow_swapfile(&fs);
    fs.sync().unwrap();
    fs.swap_write(f, 3, &noise(3, 4096)).unwrap();
    let mut found = None;
    let mut block = vec![0u8; 4096];
    // The journal's copy is the only block on the device holding this page's data.
    let want = noise(3, 4096);
    for at in (0..dev.len()).step_by(4096) {
        dev.read_at(at, &mut block).unwrap();
        if block == want {
            found = Some(at);
            break;
        }
    }
    let physical = found.expect("the page is on the device");
    block[7] ^= 1;
    dev.write_at(physical, &block).unwrap();
    assert_eq!(errno(fs.swap_read(f, 3, &mut [0u8; 4096])), Errno::IO);
}

/// Anything else that looks at the file's extents sees the journaled pages: a snapshot
/// taken before the commit holds them.
#[test]
fn a_snapshot_holds_the_journaled_pages() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = cow_swapfile(&fs);
    fs.swap_write(f, 0, &noise(7, 8192)).unwrap();
    fs.snapshot(fs.root().subvol, fs.root(), b"snap", true)
        .unwrap();
    let snap = fs.lookup(fs.root(), b"snap").unwrap();
    let copy = fs.lookup(snap, b"cowswap").unwrap();
    let mut buf = vec![0u8; 8192];
    fs.read(copy, 0, &mut buf).unwrap();
    assert_eq!(buf, noise(7, 8192));
    fs.swap_write(f, 0, &noise(8, 4096)).unwrap();
    fs.read(copy, 0, &mut buf[..4096]).unwrap();
    assert_eq!(
        buf[..4096],
        noise(7, 8192)[..4096],
        "the snapshot keeps its copy"
    );
    fs.deactivate_swap(f).unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}

#[test]
fn a_corrupted_swapped_page_is_detected() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = cow_swapfile(&fs);
    fs.swap_write(f, 3, &noise(3, 4096)).unwrap();
    fs.sync().unwrap();
    let physical = fs
        .extent_map(f)
        .unwrap()
        .iter()
        .find(|m| m.file_offset == 3 * 4096)
        .unwrap()
        .physical;
    let mut block = vec![0u8; 4096];
    dev.read_at(physical, &mut block).unwrap();
    block[7] ^= 1;
    dev.write_at(physical, &block).unwrap();
    assert_eq!(errno(fs.swap_read(f, 3, &mut [0u8; 4096])), Errno::IO);
}

#[test]
fn no_pin_survives_a_remount() {
    let (dev, fs) = memory_fs(64 * MIB);
    let f = swapfile(&fs, "swap", AREA);
    fs.activate_swap(f, SwapMode::Pinned).unwrap();
    fs.sync().unwrap();
    let crashed: Arc<dyn BlockDevice> = Arc::new(cowfs::device::MemoryDevice::from_image({
        let mut image = vec![0u8; dev.len() as usize];
        dev.read_at(0, &mut image).unwrap();
        image
    }));
    drop(fs);
    let fs = Filesystem::open(crashed.clone(), &no_timer()).unwrap();
    let f = fs.resolve("/swap").unwrap();
    assert_eq!(fs.swap_active(f), None);
    fs.unlink(fs.root(), b"swap").unwrap();
    drop(fs);
    assert_clean(&crashed);
}

#[test]
fn power_cuts_while_a_swapfile_is_active_leave_no_pin_and_a_clean_filesystem() {
    use cowfs::device::{CrashDevice, MemoryDevice};
    let fresh = Arc::new(MemoryDevice::new(64 * MIB));
    Filesystem::mkfs(fresh.clone(), &cowfs::MkfsOptions::default()).unwrap();
    let dev = Arc::new(CrashDevice::from_image(fresh.image()));
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    let f = file(&fs, fs.root(), "cowswap");
    fs.fallocate(f, FallocateMode::Allocate { keep_size: false }, 0, AREA)
        .unwrap();
    fs.sync().unwrap();
    let pinned = swapfile(&fs, "swap", AREA);
    fs.sync().unwrap();
    // Dirty data at activation: the cuts fall inside its writeback too.
    fs.write(f, 0, &noise(7, 64 << 10)).unwrap();
    fs.activate_swap(f, SwapMode::ThroughFs).unwrap();
    fs.activate_swap(pinned, SwapMode::Pinned).unwrap();
    for round in 0..400u64 {
        fs.swap_write(f, round % (AREA / 4096), &noise(round, 4096))
            .unwrap();
        if round % 50 == 0 {
            fs.sync().unwrap();
        }
    }
    fs.deactivate_swap(f).unwrap();
    fs.deactivate_swap(pinned).unwrap();
    fs.sync().unwrap();
    for k in 0..=dev.flush_count() {
        let image: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::from_image(dev.image_at_flush(k)));
        let fs = Filesystem::open(image.clone(), &no_timer()).unwrap();
        for name in ["/cowswap", "/swap"] {
            if let Ok(id) = fs.resolve(name) {
                assert_eq!(fs.swap_active(id), None, "cut {k}: no pin survives");
                fs.unlink(fs.root(), &name.as_bytes()[1..]).unwrap();
            }
        }
        drop(fs);
        assert_clean(&image);
    }
}

/// A compressed swap file through the filesystem, with either algorithm: compressible pages
/// take fewer bytes on the device, incompressible ones are stored plainly, every page reads back
/// (checksums verified), the figures say what was stored, a snapshot meanwhile holds the area
/// as it was; fsck is clean after.
#[test]
fn a_compressed_swapfile_works_through_the_filesystem() {
    for how in ["lz4", "zstd:1"] {
        let (dev, fs) = memory_fs(96 * MIB);
        let f = file(&fs, fs.root(), "zswap");
        let config = cowfs::CompressionConfig::parse(how).unwrap();
        fs.set_compression(f, config).unwrap();
        fs.fallocate(f, FallocateMode::Allocate { keep_size: false }, 0, AREA)
            .unwrap();
        assert_eq!(
            reason(fs.activate_swap(f, SwapMode::Pinned)),
            "swapfile must not be compressed"
        );
        fs.activate_swap(f, SwapMode::ThroughFs).unwrap();
        let pages = AREA / 4096;
        // Pages of text (compressible) in runs of 32, then noise (not).
        let page = |p: u64| match p % 64 < 32 {
            true => format!("page {p:>8} of compressible swap; ").repeat(128)[..4096].into(),
            false => noise(p, 4096),
        };
        for start in (0..pages).step_by(32) {
            let run: Vec<u8> = (start..start + 32).flat_map(page).collect();
            fs.swap_write(f, start, &run).unwrap();
        }
        let status = fs.swap_status(f).unwrap().unwrap();
        assert_eq!(status.compression, config);
        assert_eq!(status.swapped_out, AREA);
        assert!(
            status.stored < AREA * 3 / 4 && status.stored > AREA / 2,
            "{how}: half compressible, stored {} of {AREA}",
            status.stored
        );
        let map = fs.extent_map(f).unwrap();
        assert!(map.iter().any(|e| e.encoded) && map.iter().any(|e| !e.encoded));
        // One swap write's compressed pieces lie side by side, and one swap read of them all
        // (read with one device read) decodes each.
        let first: Vec<_> = map.iter().filter(|e| e.file_offset < 32 * 4096).collect();
        assert!(
            first.len() > 1 && first.iter().all(|e| e.encoded),
            "{first:?}"
        );
        // Each 32 KiB piece stored in fewer blocks, the next right after it.
        assert!(
            first
                .windows(2)
                .all(|w| (1..8).contains(&((w[1].physical - w[0].physical) / 4096))),
            "{first:?}"
        );
        let mut run = vec![0u8; 32 * 4096];
        fs.swap_read(f, 0, &mut run).unwrap();
        assert!(
            run == (0..32).flat_map(page).collect::<Vec<u8>>(),
            "{how}: one read of a run"
        );
        fs.snapshot(fs.root().subvol, fs.root(), b"snap", true)
            .unwrap();
        // Single pages over compressed runs: new extents, the snapshot keeps the old.
        fs.swap_write(f, 3, &noise(7, 4096)).unwrap();
        let mut buf = vec![0u8; 4096];
        for p in 0..pages {
            fs.swap_read(f, p, &mut buf).unwrap();
            let want = if p == 3 { noise(7, 4096) } else { page(p) };
            assert_eq!(buf, want, "{how}: page {p}");
        }
        let snap = fs.resolve("/snap/zswap").unwrap();
        assert_eq!(fs.read(snap, 3 * 4096, &mut buf).unwrap(), 4096);
        assert_eq!(buf, page(3), "{how}: the snapshot holds the area as it was");
        fs.deactivate_swap(f).unwrap();
        assert_eq!(fs.swap_status(f).unwrap(), None);
        fs.unmount().unwrap();
        assert_clean(&dev);
    }
}

/// `chattr +c` on an active swap file through the filesystem compresses its swap writes from
/// then on (a pinned one is NOCOW, which refuses `+c`: btrfs_174).
#[test]
fn plus_c_on_an_active_through_filesystem_swapfile_compresses_its_writes() {
    let (dev, fs) = memory_fs(96 * MIB);
    let f = cow_swapfile(&fs);
    assert_eq!(fs.swap_status(f).unwrap().unwrap().compression, None);
    fs.set_flags(f, COMPRESS).unwrap();
    fs.swap_write(f, 0, &[0x5a; 16 * 4096]).unwrap();
    let status = fs.swap_status(f).unwrap().unwrap();
    assert_eq!(status.compression, Some(cowfs::CompressionConfig::ZSTD));
    assert!(status.stored < 16 * 4096 / 4, "{status:?}");
    let mut buf = vec![0u8; 16 * 4096];
    fs.swap_read(f, 0, &mut buf).unwrap();
    assert!(buf.iter().all(|b| *b == 0x5a));
    fs.deactivate_swap(f).unwrap();
    fs.unmount().unwrap();
    assert_clean(&dev);
}
