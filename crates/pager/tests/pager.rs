//! The pager over cowfs swap: regions several times the budget, used from many threads and by
//! the kernel, every byte checked; each page state takes its path; the budget holds; swap-in
//! errors become SIGBUS, never wrong data or a hang. userfaultfd needs /dev/userfaultfd or
//! privilege: under CI=true a missing capability fails the tests, elsewhere they are skipped.

mod common;

use std::io::{Seek, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use common::*;
use cowfs::device::{BlockDevice, MemoryDevice};
use pager::{FaultMode, Pager, PagerConfig, PAGE};
use swap::SwapSystem;

/// A pager with `budget`, fault threads, over a pinned cowfs swap file of `swap`.
fn pager(budget: usize, swap: usize) -> Option<(cowfs::Filesystem, Pager)> {
    pager_on_cowfs(budget, swap, FaultMode::Threads)
}

#[test]
fn a_region_eight_times_the_budget_round_trips_in_order() {
    let Some((_fs, pager)) = pager(4 * MIB, 64 * MIB) else {
        return;
    };
    let mut region = pager.region(32 * MIB).unwrap();
    fill(region.as_mut_slice(), 1);
    verify(region.as_slice(), 1);
    verify(region.as_slice(), 1);
    let s = pager.stats();
    assert!(
        s.pages_out >= (28 * MIB / PAGE) as u64,
        "dirty pages went out: {s:?}"
    );
    assert!(s.major_faults > 0 && s.pages_in > 0, "and came back: {s:?}");
    assert!(
        s.prefetch_hits > s.major_faults,
        "sequential reads were prefetched: {s:?}"
    );
    assert!(
        s.clean_drops > 0,
        "the second pass dropped clean pages without writing: {s:?}"
    );
    let limit = (4 * MIB / PAGE) as u64;
    assert!(
        s.peak_resident <= limit,
        "resident {} pages, limit {limit}",
        s.peak_resident
    );
    assert_eq!(s.poisoned, 0);
}

#[test]
fn zero_pages_are_never_written() {
    let Some((_fs, pager)) = pager(2 * MIB, 32 * MIB) else {
        return;
    };
    let region = pager.region(16 * MIB).unwrap();
    assert!(region.as_slice().iter().all(|b| *b == 0));
    assert!(region.as_slice().iter().all(|b| *b == 0));
    let s = pager.stats();
    assert_eq!(s.pages_out, 0, "nothing but zeros: nothing to write");
    assert!(s.zero_drops > 0 && s.zero_faults > 0, "{s:?}");
    assert_eq!(s.major_faults, 0);
}

#[test]
fn a_budget_smaller_than_one_window_still_pages() {
    let Some((_fs, pager)) = pager(128 << 10, 16 * MIB) else {
        return;
    };
    let mut region = pager.region(4 * MIB).unwrap();
    fill(region.as_mut_slice(), 17);
    verify(region.as_slice(), 17);
    let s = pager.stats();
    assert!(
        s.peak_resident <= 32,
        "{} pages, budget 32",
        s.peak_resident
    );
    assert!(
        s.pages_out > 0 && s.major_faults > 0 && s.poisoned == 0,
        "{s:?}"
    );
}

#[test]
fn many_threads_at_random_pages() {
    let Some((_fs, pager)) = pager(4 * MIB, 64 * MIB) else {
        return;
    };
    let region = pager.region(24 * MIB).unwrap();
    let pages = region.len() / PAGE;
    let threads = 4;
    let base = region.as_ptr() as usize;
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                // Each thread owns the pages congruent to it, so it knows what each holds.
                let mut mine = vec![0u64; pages];
                let mut x = 0x1234_5678_u64 + t as u64;
                for _ in 0..20_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let page = (x as usize % (pages / threads)) * threads + t;
                    let at = (base + page * PAGE) as *mut u64;
                    // SAFETY: page `page` lies in the region and only this thread uses it.
                    let first = unsafe { at.read_volatile() };
                    assert_eq!(first, mine[page], "thread {t} page {page}");
                    if x.is_multiple_of(3) {
                        mine[page] = x;
                        // SAFETY: as above.
                        unsafe { at.write_volatile(x) };
                    }
                }
            });
        }
    });
    let s = pager.stats();
    assert!(s.major_faults > 100 && s.write_faults > 100, "{s:?}");
    let limit = (4 * MIB / PAGE) as u64;
    assert!(s.peak_resident <= limit);
}

#[test]
fn the_kernel_reads_into_an_evicted_page() {
    let Some((_fs, pager)) = pager(MIB, 16 * MIB) else {
        return;
    };
    assert!(
        pager.serves_kernel_faults(),
        "the test runs where /dev/userfaultfd is open to it"
    );
    let mut region = pager.region(8 * MIB).unwrap();
    fill(region.as_mut_slice(), 3);
    // Everything after the first megabyte pushed the first pages out.
    assert!(pager.stats().evicted > 0);
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&[0x5a; 3 * PAGE]).unwrap();
    file.rewind().unwrap();
    // SAFETY: read(2) into the region's first three pages.
    let n = unsafe { libc::read(file.as_raw_fd(), region.as_ptr().cast(), 3 * PAGE) };
    assert_eq!(
        n,
        3 * PAGE as isize,
        "read(2): {}",
        std::io::Error::last_os_error()
    );
    assert!(region.as_slice()[..3 * PAGE].iter().all(|b| *b == 0x5a));
    let rest = &region.as_slice()[3 * PAGE..];
    assert!(
        rest.iter()
            .enumerate()
            .all(|(i, b)| *b == byte(3, 3 * PAGE + i)),
        "the rest is untouched"
    );
}

#[test]
fn regions_larger_than_budget_and_swap_are_refused() {
    let Some((_fs, pager)) = pager(MIB, 8 * MIB) else {
        return;
    };
    let err = pager.region(64 * MIB).err().expect("no room for it");
    assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
    let fits = pager.region(4 * MIB).unwrap();
    assert!(
        pager.region(6 * MIB).is_err(),
        "the two would not fit together"
    );
    drop(fits);
    assert!(
        pager.region(6 * MIB).is_ok(),
        "a dropped region gives its room back"
    );
}

#[test]
fn dropping_a_region_frees_its_slots() {
    let Some((_fs, pager)) = pager(MIB, 16 * MIB) else {
        return;
    };
    let mut region = pager.region(8 * MIB).unwrap();
    fill(region.as_mut_slice(), 4);
    assert!(swap_used_kib(&pager) > 0, "{}", pager.swaps());
    drop(region);
    assert_eq!(swap_used_kib(&pager), 0, "{}", pager.swaps());
}

/// The swap area's used column, as /proc/swaps shows it.
fn swap_used_kib(pager: &Pager) -> u64 {
    let swaps = pager.swaps();
    let area = swaps.lines().nth(1).expect("one area");
    area.split_whitespace()
        .nth(3)
        .expect("a used column")
        .parse()
        .unwrap()
}

#[test]
fn a_corrupted_page_on_swap_in_is_sigbus() {
    dies_of_sigbus("a_corrupted_page_on_swap_in_is_sigbus", || {
        corrupted_swap_in(FaultMode::Threads)
    });
}

#[test]
fn an_io_error_on_swap_in_is_sigbus() {
    dies_of_sigbus("an_io_error_on_swap_in_is_sigbus", failed_swap_in);
}

fn failed_swap_in() {
    let faulty = Arc::new(cowfs::device::FaultyDevice::new(Arc::new(
        MemoryDevice::new(96 * MIB as u64),
    )));
    let (fs, _, system) = through_fs_swap(faulty.clone(), 16 * MIB);
    let pager = Pager::new(PagerConfig::with_budget(MIB as u64), system).unwrap();
    let mut region = pager.region(4 * MIB).unwrap();
    fill(region.as_mut_slice(), 6);
    fs.sync().unwrap();
    faulty.fail_reads(true);
    std::hint::black_box(region.as_slice()[0]);
}

#[test]
fn an_io_error_on_swap_out_keeps_the_pages() {
    let faulty = Arc::new(cowfs::device::FaultyDevice::new(Arc::new(
        MemoryDevice::new(80 * MIB as u64),
    )));
    let (_fs, system) = swap_on_device(faulty.clone(), 16 * MIB, cowfs::SwapMode::Pinned);
    let config = PagerConfig::with_budget(MIB as u64);
    let twice_the_budget = (2 * MIB / PAGE) as u64;
    let Some(pager) = pager_or_skip(config, system) else {
        return;
    };
    let mut region = pager.region(8 * MIB).unwrap();
    let memory = region.as_mut_slice();
    // Within the budget, then past twice the budget with every swap write failing (read
    // ahead may reach past it: faults after the heal come from new pages further on).
    fill(&mut memory[..MIB / 2], 11);
    faulty.fail_writes_after(0);
    fill(&mut memory[MIB / 2..3 * MIB], 12);
    // Failed writes put their pages back in the background: wait for them (bounded).
    let kept = (0..500)
        .map(|_| std::thread::sleep(std::time::Duration::from_millis(10)))
        .map(|()| pager.stats())
        .find(|s| s.resident > twice_the_budget);
    let s = pager.stats();
    assert!(kept.is_some(), "pages kept in memory: {s:?}");
    assert!(s.swap_out_failures > 0 && s.pages_out == 0, "{s:?}");
    faulty.heal();
    fill(&mut memory[4 * MIB..], 13);
    verify(&memory[..MIB / 2], 11);
    verify(&memory[MIB / 2..3 * MIB], 12);
    verify(&memory[4 * MIB..], 13);
    let s = pager.stats();
    assert!(s.pages_out > 0 && s.poisoned == 0, "{s:?}");
}

#[test]
fn every_backing_and_mode_round_trips() {
    // A COW, checksummed file through the filesystem.
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(192 * MIB as u64));
    let (_fs, _, system) = through_fs_swap(dev, 32 * MIB);
    let Ok(pager) = Pager::new(PagerConfig::with_budget(2 * MIB as u64), system) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "required in CI: userfaultfd"
        );
        return eprintln!("skipped: no userfaultfd");
    };
    round_trip(&pager, 7);
    // A host file made by mkswap --create, read and written with O_DIRECT.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let host = dir.path().join("swap");
    swap::mkswap(&host, Some(32 * MIB as u64), "", [3; 16]).unwrap();
    let mut system = SwapSystem::new();
    system
        .swapon(Box::new(swap::HostFile::new(&host)), None)
        .unwrap();
    let pager = Pager::new(PagerConfig::with_budget(2 * MIB as u64), system).unwrap();
    round_trip(&pager, 8);
}

#[test]
fn eviction_races_faults_from_many_threads_for_a_bounded_time() {
    let Some((_fs, pager)) = pager(MIB, 32 * MIB) else {
        return;
    };
    let region = pager.region(16 * MIB).unwrap();
    let (base, pages) = (region.as_ptr() as usize, region.len() / PAGE);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    std::thread::scope(|scope| {
        for t in 0..6usize {
            scope.spawn(move || {
                let mut x = 0xfeed_u64 + t as u64;
                let mut version = vec![0u64; pages];
                let mut ops = 0u64;
                while std::time::Instant::now() < deadline {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Thread t owns word t of every page: all threads share every page.
                    let page = x as usize % pages;
                    let word = (base + page * PAGE + t * 8) as *mut u64;
                    // SAFETY: word t of a page of the region; only thread t touches it.
                    let seen = unsafe { word.read_volatile() };
                    assert_eq!(
                        seen, version[page],
                        "thread {t}, page {page}, after {ops} operations"
                    );
                    if x.is_multiple_of(2) {
                        version[page] = x;
                        // SAFETY: as above.
                        unsafe { word.write_volatile(x) };
                    }
                    ops += 1;
                }
            });
        }
    });
    let s = pager.stats();
    assert!(
        s.evicted > 1000 && s.write_faults > 1000 && s.poisoned == 0,
        "{s:?}"
    );
}

#[test]
fn a_strided_stream_is_fetched_ahead() {
    let Some((_fs, pager)) = pager(MIB, 64 * MIB) else {
        return;
    };
    let mut region = pager.region(32 * MIB).unwrap();
    fill(region.as_mut_slice(), 9);
    let before = pager.stats();
    // Every fifth page, from the start: the start has long been evicted.
    let touched: Vec<usize> = (0..region.len() / PAGE).step_by(5).collect();
    for page in &touched {
        let at = page * PAGE;
        assert_eq!(region.as_slice()[at + 17], byte(9, at + 17), "page {page}");
    }
    let s = pager.stats();
    let faults = s.major_faults - before.major_faults;
    assert!(
        faults * 4 < touched.len() as u64,
        "{faults} major faults for {} strided pages: the stride was not fetched ahead",
        touched.len()
    );
    assert!(s.prefetch_hits > before.prefetch_hits);
}

#[test]
fn a_sequential_stream_keeps_whole_windows() {
    let Some((_fs, pager)) = pager(4 * MIB, 64 * MIB) else {
        return;
    };
    let mut region = pager.region(32 * MIB).unwrap();
    fill(region.as_mut_slice(), 16);
    let before = pager.stats();
    verify(region.as_slice(), 16);
    let s = pager.stats();
    // 8192 pages in windows doubling to 256, two read ahead of each fault: about 20 faults.
    // A stream taken for a strided one (its faults a window apart) starts over each time.
    let faults = s.major_faults - before.major_faults;
    assert!(
        faults <= 35,
        "{faults} faults to read 32 MiB back in order: {s:?}"
    );
}

#[test]
fn a_sequential_scan_leaves_the_working_set_resident() {
    let Some((_fs, pager)) = pager(8 * MIB, 64 * MIB) else {
        return;
    };
    let mut region = pager.region(40 * MIB).unwrap();
    let memory = region.as_mut_slice();
    let (hot, cold) = memory.split_at_mut(2 * MIB);
    fill(cold, 14);
    fill(hot, 15);
    // A scan of almost five times the budget: its pages are used once and go first, once
    // the stream has more in than the windows it is in and reads ahead (3 MiB).
    verify(cold, 14);
    let scanned = pager.stats();
    verify(hot, 15);
    let s = pager.stats();
    assert_eq!(
        (s.major_faults, s.zero_faults, s.prefetched),
        (
            scanned.major_faults,
            scanned.zero_faults,
            scanned.prefetched
        ),
        "the hot pages were evicted by the scan"
    );
    assert!(s.clean_drops > 0, "{s:?}");
}

#[test]
fn a_region_outlives_its_pager() {
    let Some((fs, pager)) = pager(MIB, 16 * MIB) else {
        return;
    };
    let swapfile = fs.resolve("/swap").unwrap();
    let mut region = pager.region(8 * MIB).unwrap();
    fill(region.as_mut_slice(), 10);
    drop(pager);
    // Its faults are still served: the region keeps the pager's threads.
    verify(region.as_slice(), 10);
    assert!(
        fs.swap_active(swapfile).is_some(),
        "the region still needs the swap file"
    );
    drop(region);
    assert_eq!(
        fs.swap_active(swapfile),
        None,
        "the last region took the swap area with it"
    );
}

/// Region memory handed to a write on the very filesystem that holds the region's swap area
/// (through the filesystem): the engine copies under its lock, and a missing page's fault
/// needs that lock to read swap. The filesystem faults the buffer in before taking the lock,
/// so a write smaller than what eviction can push out meanwhile completes with the right
/// bytes (a large one can still deadlock: docs/PAGER.md). A watchdog turns a deadlock into a
/// failure rather than a hung test run.
#[test]
fn a_write_from_evicted_region_memory_to_the_swap_filesystem_completes() {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(160 * MIB as u64));
    let (fs, _, system) = through_fs_swap(dev, 32 * MIB);
    let Some(pager) = pager_or_skip(PagerConfig::with_budget(2 * MIB as u64), system) else {
        return;
    };
    let mut region = pager.region(16 * MIB).unwrap();
    fill(region.as_mut_slice(), 9);
    assert!(
        pager.stats().pages_out > 0,
        "the start of the region went out"
    );
    let file = fs
        .create(
            fs.root(),
            b"copy",
            cowfs::format::FileKind::Regular,
            cowfs::CreateAttrs::with_mode(0o644),
        )
        .unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if finished
            .recv_timeout(std::time::Duration::from_secs(20))
            .is_err()
        {
            eprintln!("the write from region memory deadlocked");
            std::process::abort();
        }
    });
    let evicted = &region.as_slice()[..64 << 10];
    assert_eq!(fs.write(file, 0, evicted).unwrap(), evicted.len());
    done.send(()).unwrap();
    let mut back = vec![0; evicted.len()];
    fs.read(file, 0, &mut back).unwrap();
    verify(&back, 9);
}

/// A device whose writes (or reads) each take a few milliseconds, counting how many were
/// under way at once at most.
#[derive(Debug)]
struct Slow {
    inner: MemoryDevice,
    reads: bool,
    under_way: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

impl Slow {
    /// A pager with an 8 MiB budget over a pinned swap file on a slow device.
    fn pager(reads: bool) -> Option<(Arc<Slow>, cowfs::Filesystem, Pager)> {
        let slow = Arc::new(Slow {
            inner: MemoryDevice::new(96 * MIB as u64),
            reads,
            under_way: Default::default(),
            most: Default::default(),
        });
        let (fs, system) = swap_on_device(slow.clone(), 32 * MIB, cowfs::SwapMode::Pinned);
        let pager = pager_or_skip(PagerConfig::with_budget(8 * MIB as u64), system)?;
        slow.most();
        Some((slow, fs, pager))
    }

    fn take_time(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.under_way.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(5));
        self.under_way.fetch_sub(1, SeqCst);
    }

    /// The most under way at once since the last call.
    fn most(&self) -> usize {
        self.most.swap(0, std::sync::atomic::Ordering::SeqCst)
    }
}

impl BlockDevice for Slow {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if self.reads {
            self.take_time();
        }
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if !self.reads {
            self.take_time();
        }
        self.inner.write_at(offset, data)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.inner.flush()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn resize(&self, len: u64) -> std::io::Result<()> {
        self.inner.resize(len)
    }
}

#[test]
fn swap_writes_overlap_while_faults_go_on() {
    let Some((slow, _fs, pager)) = Slow::pager(false) else {
        return;
    };
    let mut region = pager.region(16 * MIB).unwrap();
    fill(region.as_mut_slice(), 21);
    verify(region.as_slice(), 21);
    let most = slow.most();
    assert!(most >= 2, "at most {most} swap write(s) under way at once");
    assert_eq!(pager.stats().poisoned, 0);
}

#[test]
fn a_sequential_read_back_has_two_reads_under_way() {
    let Some((slow, _fs, pager)) = Slow::pager(true) else {
        return;
    };
    let mut region = pager.region(32 * MIB).unwrap();
    fill(region.as_mut_slice(), 22);
    slow.most();
    verify(region.as_slice(), 22);
    let most = slow.most();
    assert!(most >= 2, "at most {most} swap read(s) under way at once");
    assert!(pager.stats().prefetch_hits > 0);
    assert_eq!(pager.stats().poisoned, 0);
}
