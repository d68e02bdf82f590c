//! The pager serving faults in the faulting thread (FaultMode::InThread, SIGBUS). One such
//! pager per process, so the scenarios run one after another in one test.

use std::io::{Seek, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use cowfs::device::{BlockDevice, MemoryDevice};
use cowfs::{Filesystem, MkfsOptions, OpenOptions, SwapMode};
use pager::{FaultMode, Pager, PagerConfig, PAGE};
use swap::{mkswapfile, CowfsFile, SwapSystem};

const MIB: usize = 1 << 20;

fn in_thread_pager(budget: usize, swap: usize) -> Option<(Filesystem, Pager)> {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new((swap + 64 * MIB) as u64));
    Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let opts = OpenOptions {
        commit_interval: None,
        ..OpenOptions::default()
    };
    let fs = Filesystem::open(dev, &opts).unwrap();
    mkswapfile(&fs, "/swap", swap as u64, "", [1; 16]).unwrap();
    let mut system = SwapSystem::new();
    let area = CowfsFile::new(&fs, "/swap", SwapMode::Pinned).unwrap();
    system.swapon(Box::new(area), None).unwrap();
    let config = PagerConfig {
        mode: FaultMode::InThread,
        ..PagerConfig::with_budget(budget as u64)
    };
    match Pager::new(config, system) {
        Ok(pager) => Some((fs, pager)),
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

fn byte(seed: u64, offset: usize) -> u8 {
    ((offset as u64).wrapping_mul(0x9E37_79B9) ^ seed ^ (offset as u64 >> 12)) as u8
}

#[test]
fn faults_served_in_the_faulting_thread() {
    let Some((_fs, pager)) = in_thread_pager(4 * MIB, 64 * MIB) else {
        return;
    };
    assert!(
        !pager.serves_kernel_faults(),
        "this mode cannot serve the kernel's faults"
    );

    // Sequential: eight times the budget, written and read back.
    let mut region = pager.region(32 * MIB).unwrap();
    for (i, b) in region.as_mut_slice().iter_mut().enumerate() {
        *b = byte(1, i);
    }
    assert!(region
        .as_slice()
        .iter()
        .enumerate()
        .all(|(i, b)| *b == byte(1, i)));
    let s = pager.stats();
    assert!(
        s.pages_out > 0 && s.major_faults > 0 && s.write_faults > 0,
        "{s:?}"
    );
    assert!(s.peak_resident <= (4 * MIB / PAGE + pager.config().slack_pages()) as u64);

    // Four threads at random pages, each on pages of its own.
    let (base, pages) = (region.as_ptr() as usize, region.len() / PAGE);
    std::thread::scope(|scope| {
        for t in 0..4usize {
            scope.spawn(move || {
                let mut x = 0x77u64 + t as u64;
                let mut mine = vec![None; pages];
                for _ in 0..5000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let page = (x as usize % (pages / 4)) * 4 + t;
                    let at = (base + page * PAGE) as *mut u64;
                    // SAFETY: page `page` lies in the region and only this thread uses it.
                    let seen = unsafe { at.read_volatile() };
                    if let Some(v) = mine[page] {
                        assert_eq!(seen, v, "thread {t} page {page}");
                    }
                    mine[page] = Some(x);
                    // SAFETY: as above.
                    unsafe { at.write_volatile(x) };
                }
            });
        }
    });

    // A read(2) into an evicted page fails with EFAULT here, as documented.
    let mut fresh = pager.region(16 * MIB).unwrap();
    fresh.as_mut_slice().fill(3);
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&[1u8; PAGE]).unwrap();
    file.rewind().unwrap();
    // SAFETY: read(2) into the fresh region's first page, evicted by the fill after it.
    let n = unsafe { libc::read(file.as_raw_fd(), fresh.as_ptr().cast(), PAGE) };
    assert_eq!(n, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EFAULT)
    );
    assert!(
        fresh.as_slice().iter().all(|b| *b == 3),
        "and the region is as it was"
    );
    assert_eq!(pager.stats().poisoned, 0);
}

/// A corrupted page on swap-in kills the access with SIGBUS in this mode too (in a child
/// process: this test binary again).
#[test]
fn a_corrupted_page_is_sigbus_in_thread() {
    if std::env::var("PAGER_IN_THREAD_CHILD").is_ok() {
        corrupted_swap_in();
        panic!("the access returned instead of dying of SIGBUS");
    }
    if !std::path::Path::new("/dev/userfaultfd").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "required in CI: userfaultfd"
        );
        return eprintln!("skipped: no /dev/userfaultfd");
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_corrupted_page_is_sigbus_in_thread",
            "--nocapture",
        ])
        .env("PAGER_IN_THREAD_CHILD", "1")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGBUS),
        "the child should die of SIGBUS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn corrupted_swap_in() {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(96 * MIB as u64));
    Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let opts = OpenOptions {
        commit_interval: None,
        ..OpenOptions::default()
    };
    let fs = Filesystem::open(dev.clone(), &opts).unwrap();
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
    fs.fallocate(id, allocate, 0, 16 * MIB as u64).unwrap();
    let header = swap::SwapHeader::new((16 * MIB / PAGE) as u64, [2; 16], "").unwrap();
    fs.write(id, 0, &header.encode()).unwrap();
    fs.sync().unwrap();
    let mut system = SwapSystem::new();
    let area = CowfsFile::new(&fs, "/swap", SwapMode::ThroughFs).unwrap();
    system.swapon(Box::new(area), None).unwrap();
    let config = PagerConfig {
        mode: FaultMode::InThread,
        ..PagerConfig::with_budget(MIB as u64)
    };
    let pager = Pager::new(config, system).unwrap();
    let mut region = pager.region(4 * MIB).unwrap();
    region.as_mut_slice().fill(5);
    fs.sync().unwrap();
    for m in fs.extent_map(id).unwrap() {
        dev.write_at(m.physical, &vec![0xa5u8; m.len as usize])
            .unwrap();
    }
    std::hint::black_box(region.as_slice()[0]);
}
