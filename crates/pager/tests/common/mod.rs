//! Helpers shared by the pager's tests: swap systems on in-memory cowfs, the byte pattern
//! regions are filled with, pagers that skip (or fail under CI=true) without userfaultfd, and
//! scenarios that must end in SIGBUS, run in a child process.
#![allow(dead_code)]

use std::process::Command;
use std::sync::Arc;

use cowfs::device::{BlockDevice, MemoryDevice};
use cowfs::{Filesystem, MkfsOptions, OpenOptions, SwapMode};
use pager::{FaultMode, Pager, PagerConfig, PAGE};
use swap::{mkswapfile, CowfsFile, SwapSystem};

pub const MIB: usize = 1 << 20;

fn no_timer() -> OpenOptions {
    OpenOptions {
        commit_interval: None,
        ..OpenOptions::default()
    }
}

/// A swap system over one NOCOW swap file of `swap` bytes on an in-memory cowfs.
pub fn swap_on_cowfs(swap: usize, mode: SwapMode) -> (Filesystem, SwapSystem) {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new((swap + 64 * MIB) as u64));
    swap_on_device(dev, swap, mode)
}

/// The same on `dev`, which must hold `swap` and 64 MiB more.
pub fn swap_on_device(
    dev: Arc<dyn BlockDevice>,
    swap: usize,
    mode: SwapMode,
) -> (Filesystem, SwapSystem) {
    Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Filesystem::open(dev, &no_timer()).unwrap();
    mkswapfile(&fs, "/swap", swap as u64, "", [1; 16]).unwrap();
    let mut system = SwapSystem::new();
    system
        .swapon(Box::new(CowfsFile::new(&fs, "/swap", mode).unwrap()), None)
        .unwrap();
    (fs, system)
}

/// A filesystem on `dev` with a COW, checksummed swap file of `swap` bytes used through the
/// filesystem.
pub fn through_fs_swap(
    dev: Arc<dyn BlockDevice>,
    swap: usize,
) -> (Filesystem, cowfs::InodeId, SwapSystem) {
    Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Filesystem::open(dev, &no_timer()).unwrap();
    let kind = cowfs::format::FileKind::Regular;
    let id = fs
        .create(
            fs.root(),
            b"swap",
            kind,
            cowfs::CreateAttrs::with_mode(0o600),
        )
        .unwrap();
    let allocate = cowfs::FallocateMode::Allocate { keep_size: false };
    fs.fallocate(id, allocate, 0, swap as u64).unwrap();
    let header = swap::SwapHeader::new((swap / PAGE) as u64, [2; 16], "").unwrap();
    fs.write(id, 0, &header.encode()).unwrap();
    fs.sync().unwrap();
    let mut system = SwapSystem::new();
    let area = CowfsFile::new(&fs, "/swap", SwapMode::ThroughFs).unwrap();
    system.swapon(Box::new(area), None).unwrap();
    (fs, id, system)
}

/// A pager, or None (after saying why) when this machine gives no userfaultfd.
pub fn pager_or_skip(config: PagerConfig, system: SwapSystem) -> Option<Pager> {
    match Pager::new(config, system) {
        Ok(pager) => Some(pager),
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "required in CI: {e}"
            );
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// A pager in `mode` with `budget` over a pinned cowfs swap file of `swap`.
pub fn pager_on_cowfs(budget: usize, swap: usize, mode: FaultMode) -> Option<(Filesystem, Pager)> {
    let (fs, system) = swap_on_cowfs(swap, SwapMode::Pinned);
    let config = PagerConfig {
        mode,
        ..PagerConfig::with_budget(budget as u64)
    };
    pager_or_skip(config, system).map(|p| (fs, p))
}

/// The byte at `offset` of a region filled with `seed`.
pub fn byte(seed: u64, offset: usize) -> u8 {
    ((offset as u64).wrapping_mul(0x9E37_79B9) ^ seed ^ (offset as u64 >> 12)) as u8
}

pub fn fill(buf: &mut [u8], seed: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = byte(seed, i);
    }
}

pub fn verify(buf: &[u8], seed: u64) {
    for (i, b) in buf.iter().enumerate() {
        assert_eq!(*b, byte(seed, i), "byte {i} (page {})", i / PAGE);
    }
}

/// A 12 MiB region filled and checked through `pager`, which must have paged it out and in
/// with nothing poisoned.
pub fn round_trip(pager: &Pager, seed: u64) {
    let mut region = pager.region(12 * MIB).unwrap();
    fill(region.as_mut_slice(), seed);
    verify(region.as_slice(), seed);
    let s = pager.stats();
    assert!(
        s.pages_out > 0 && s.major_faults > 0 && s.poisoned == 0,
        "{s:?}"
    );
}

/// Runs `scenario` in a child process (this test binary again, running only `test`), which
/// must die of SIGBUS.
pub fn dies_of_sigbus(test: &str, scenario: fn()) {
    if std::env::var("PAGER_SIGBUS_CHILD").is_ok() {
        scenario();
        panic!("the access returned instead of dying of SIGBUS");
    }
    let config = PagerConfig::with_budget(MIB as u64);
    if pager_or_skip(config, swap_on_cowfs(4 * MIB, SwapMode::Pinned).1).is_none() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture"])
        .env("PAGER_SIGBUS_CHILD", "1")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGBUS),
        "the child should die of SIGBUS: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pages go out to a checksummed swap file, whose blocks are then damaged behind the
/// filesystem's back; touching the first page (evicted long ago) must not return wrong data.
pub fn corrupted_swap_in(mode: FaultMode) {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(96 * MIB as u64));
    let (fs, id, system) = through_fs_swap(dev.clone(), 16 * MIB);
    let config = PagerConfig {
        mode,
        ..PagerConfig::with_budget(MIB as u64)
    };
    let pager = Pager::new(config, system).unwrap();
    let mut region = pager.region(4 * MIB).unwrap();
    fill(region.as_mut_slice(), 5);
    fs.sync().unwrap();
    for m in fs.extent_map(id).unwrap() {
        dev.write_at(m.physical, &vec![0xa5u8; m.len as usize])
            .unwrap();
    }
    std::hint::black_box(region.as_slice()[0]);
}
