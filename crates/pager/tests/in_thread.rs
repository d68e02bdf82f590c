//! The pager serving faults in the faulting thread (FaultMode::InThread, SIGBUS). One such
//! pager per process, so the scenarios run one after another in one test.

mod common;

use std::io::{Seek, Write};
use std::os::fd::AsRawFd;

use common::*;
use pager::{FaultMode, Pager, PAGE};

fn in_thread_pager(budget: usize, swap: usize) -> Option<(cowfs::Filesystem, Pager)> {
    pager_on_cowfs(budget, swap, FaultMode::InThread)
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
    assert!(s.peak_resident <= (4 * MIB / PAGE) as u64);

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
    dies_of_sigbus("a_corrupted_page_is_sigbus_in_thread", || {
        corrupted_swap_in(FaultMode::InThread)
    });
}
