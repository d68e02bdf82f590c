//! The pager: regions registered with userfaultfd, a handler thread that serves their faults
//! from swap (or zeros), and eviction that keeps resident memory within the budget.
//!
//! Several threads serve faults. The page table below is touched only under one lock, but a
//! fault's swap read runs outside it: the pages being read are marked in flight, so a second
//! fault on one of them waits for the first one's copy (which wakes it), and eviction only ever
//! takes resident pages, so a page is never faulted in and evicted at once. Its states:
//!
//! - not resident, no slot: never written (or only zeros): a fault fills it with zeros;
//! - not resident, slot: its data is in the slot: a fault reads it back;
//! - resident, clean: installed write-protected; with a slot, the slot still holds it, and
//!   eviction just drops it; without one it is all zeros, and eviction drops it too;
//! - resident, dirty: written since it came in (the write-protect fault told us, and the
//!   stale slot was freed): eviction copies it out, drops it and hands the copy to a
//!   writeback thread (two write at once), which writes it to a new slot (contiguous for the
//!   batch), so no fault waits for a swap write; until the write is done the page is in
//!   flight, and a fault on it waits.
//!
//! Room is made before pages come in: a fetch holds its pages' room within the budget
//! (evicting first when there is none) before it installs them, so resident memory stays
//! within the budget even with several fetches under way.

mod evict;
mod fault;
mod prefetch;
mod state;

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cowfs::device::AlignedBuf;
use swap::SwapSystem;

use crate::stats::Stats;
use crate::uffd::{self, Userfaultfd};
use prefetch::READ_AHEAD;
use state::State;

pub const PAGE: usize = 4096;
/// Tries of a copy the kernel keeps answering EAGAIN, before the fault fails.
const COPY_ATTEMPTS: usize = 10_000;
/// Fetch buffers for faults served in the faulting threads.
const IN_THREAD_BUFFERS: usize = 8;
/// Evictions that may be copied out or under way at once.
const EVICT_BUFFERS: usize = 4;
/// Threads writing evictions to swap: swap writes in flight at once. One write at a time
/// bounds swap-out by a write's round trip (to a remote server, most of it waiting); two
/// keep the device or the connection busy while each waits.
const WRITEBACK_THREADS: usize = 2;

/// One page, aligned as O_DIRECT wants it, for a fault served on its thread's stack.
#[repr(C, align(4096))]
struct PageBuf([u8; PAGE]);

/// How the pager runs.
#[derive(Debug, Clone)]
pub struct PagerConfig {
    /// Resident memory the regions may use, in bytes.
    pub budget: u64,
    /// The most pages one fault brings in (a sequential stream doubles its window up to it).
    pub max_prefetch: usize,
    /// Pages evicted at a time once over budget (written with one call when contiguous).
    pub evict_batch: usize,
    /// Threads serving faults (their swap reads run in parallel), in `FaultMode::Threads`.
    pub handlers: usize,
    pub mode: FaultMode,
}

/// Where faults are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// Fault threads read them from the userfaultfd. Faults the kernel takes on a region
    /// (a read(2) into it) are served too.
    Threads,
    /// The faulting thread serves its own fault, in a SIGBUS handler (UFFD_FEATURE_SIGBUS): no
    /// hand-off between threads, but a kernel access to a missing page fails with EFAULT, so
    /// region memory must not be handed to system calls. One such pager per process.
    InThread,
}

impl PagerConfig {
    pub fn with_budget(budget: u64) -> Self {
        PagerConfig {
            budget,
            max_prefetch: 256,
            evict_batch: 256,
            handlers: 4,
            mode: FaultMode::Threads,
        }
    }

    /// The most pages one fetch brings in: `max_prefetch`, but no more than half the budget,
    /// so that room can always be made for a window beside the one a stream is in.
    pub fn window_pages(&self) -> usize {
        self.max_prefetch
            .min(self.budget as usize / PAGE / 2)
            .max(1)
    }
}

pub(crate) struct Inner {
    uffd: Userfaultfd,
    state: Mutex<State>,
    /// Signalled when pages stop being in flight, or an eviction buffer comes back.
    settled: Condvar,
    /// Wakes a writeback thread.
    writeback_queued: Condvar,
    /// Taken after `state` when both are needed; fault reads hold only a read lock of it.
    swap: RwLock<SwapSystem>,
    config: PagerConfig,
    budget_pages: usize,
    /// Use-once pages left to a sequential stream: the windows it is in and reads ahead.
    stream_keep: usize,
    /// Buffers for faults served in the faulting thread (which must not allocate in a signal
    /// handler); one that finds none left reads a single page into one on its stack.
    buffers: Mutex<Vec<AlignedBuf>>,
    /// The `Pager` is gone: the swap areas go with the last region.
    pager_dropped: std::sync::atomic::AtomicBool,
}

/// A pager: regions larger than its budget, paged to the swap areas it was given.
/// Its regions keep it serving: the fault threads end once the pager and every region of it
/// are dropped.
pub struct Pager {
    inner: Arc<Inner>,
}

/// Whole pages of `len` bytes.
fn pages_of(len: usize) -> usize {
    len.div_ceil(PAGE)
}

fn swap_io(e: cowfs::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno().raw_os_error())
}

impl Pager {
    /// A pager over `swap` (its areas all active). Memory for faults and swap-out is taken
    /// now, so serving a fault never allocates.
    pub fn new(config: PagerConfig, swap: SwapSystem) -> io::Result<Pager> {
        let in_thread = config.mode == FaultMode::InThread;
        let sigbus = if in_thread { uffd::FEATURE_SIGBUS } else { 0 };
        let uffd =
            Userfaultfd::open(uffd::FEATURE_PAGEFAULT_FLAG_WP | uffd::FEATURE_POISON | sigbus)?;
        if uffd.features & sigbus != sigbus {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "userfaultfd SIGBUS mode is missing",
            ));
        }
        if uffd.features & uffd::FEATURE_POISON == 0 {
            // Without it a swap-in error could only hang the access or hand it wrong data.
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "userfaultfd poison (Linux 6.6) is needed",
            ));
        }
        let swap_capacity = swap.list().iter().map(|a| a.size_kib / 4).sum();
        let evict_bufs = (0..EVICT_BUFFERS)
            .map(|_| AlignedBuf::zeroed(config.evict_batch.max(1) * PAGE))
            .collect();
        let state = State::new(swap_capacity, evict_bufs);
        let inner = Arc::new(Inner {
            uffd,
            state: Mutex::new(state),
            settled: Condvar::new(),
            writeback_queued: Condvar::new(),
            swap: RwLock::new(swap),
            budget_pages: (config.budget as usize / PAGE).max(1),
            stream_keep: ((READ_AHEAD + 1) * config.window_pages())
                .min(config.budget as usize / PAGE / 2),
            pager_dropped: Default::default(),
            buffers: Mutex::new(if in_thread {
                (0..IN_THREAD_BUFFERS)
                    .map(|_| AlignedBuf::zeroed(config.max_prefetch.max(1) * PAGE))
                    .collect()
            } else {
                Vec::new()
            }),
            config,
        });
        for n in 0..WRITEBACK_THREADS {
            let written = Arc::downgrade(&inner);
            let thread = std::thread::Builder::new().name(format!("pager-writeback-{n}"));
            thread.spawn(move || Inner::write_back(written))?;
        }
        if in_thread {
            crate::in_thread::register(&inner)?;
            return Ok(Pager { inner });
        }
        for n in 0..inner.config.handlers.max(1) {
            let served = Arc::downgrade(&inner);
            let buf = AlignedBuf::zeroed(inner.config.max_prefetch.max(1) * PAGE);
            let thread = std::thread::Builder::new().name(format!("pager-faults-{n}"));
            thread.spawn(move || Inner::serve(served, buf))?;
        }
        Ok(Pager { inner })
    }

    /// Whether kernel accesses to evicted pages (read(2) into a region) are served too.
    pub fn serves_kernel_faults(&self) -> bool {
        self.inner.uffd.access == uffd::Access::All && self.inner.config.mode == FaultMode::Threads
    }

    /// A new region of `len` bytes, zero-filled. ENOSPC when the regions would need more swap
    /// than there is (so no fault can ever find swap full).
    pub fn region(&self, len: usize) -> io::Result<crate::Region> {
        let pages = pages_of(len);
        {
            let mut state = self.inner.lock();
            let needed = (state.region_pages + pages as u64)
                .saturating_sub(self.inner.budget_pages as u64)
                + self.inner.config.evict_batch as u64;
            if needed > state.swap_capacity {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!(
                        "regions of {} pages need {needed} pages of swap; there are {}",
                        state.region_pages + pages as u64,
                        state.swap_capacity
                    ),
                ));
            }
            state.region_pages += pages as u64;
        }
        crate::Region::map(self.inner.clone(), pages)
            .inspect_err(|_| self.inner.lock().region_pages -= pages as u64)
    }

    pub fn stats(&self) -> Stats {
        self.inner.lock().stats.clone()
    }

    pub fn config(&self) -> &PagerConfig {
        &self.inner.config
    }

    /// The swap areas, as /proc/swaps would show them.
    pub fn swaps(&self) -> String {
        self.inner.swap().proc_swaps()
    }
}

impl Drop for Pager {
    fn drop(&mut self) {
        self.inner
            .pager_dropped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.inner.close_swap_when_unused(&self.inner.lock());
    }
}

impl Inner {
    /// Once the pager and all its regions are gone, its swap areas go (a cowfs file is
    /// unpinned) now, not whenever a fault thread lets go of the pager.
    fn close_swap_when_unused(&self, state: &State) {
        if state.regions.is_empty()
            && self
                .pager_dropped
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            *self.swap_mut() = SwapSystem::new();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for pages to settle or an eviction buffer to come back (the lock let go).
    fn wait_settled<'a>(&self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        state.settle_waiters += 1;
        let mut state = self.settled.wait(state).unwrap_or_else(|p| p.into_inner());
        state.settle_waiters -= 1;
        state
    }

    /// Wakes the threads in `wait_settled`, if any: a fault's settle does not pay a wake-up
    /// call when nobody waits.
    fn wake_settled(&self, state: &State) {
        if state.settle_waiters > 0 {
            self.settled.notify_all();
        }
    }

    /// An eviction buffer back in the pool, for whoever waits for one.
    fn give_back(&self, state: &mut State, buf: AlignedBuf) {
        state.evict_bufs.push(buf);
        self.wake_settled(state);
    }

    fn swap(&self) -> RwLockReadGuard<'_, SwapSystem> {
        self.swap.read().unwrap_or_else(|p| p.into_inner())
    }

    fn swap_mut(&self) -> RwLockWriteGuard<'_, SwapSystem> {
        self.swap.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn register(&self, base: usize, pages: usize) -> io::Result<()> {
        self.uffd.register(base, pages * PAGE)?;
        self.lock().add_region(base, pages);
        Ok(())
    }

    /// Forgets a region: its slots are freed and its pages leave the resident count.
    /// It waits for reads and writes of its pages under way: their end must find the region,
    /// not a new one mapped at the same address.
    pub(crate) fn unregister(&self, base: usize, pages: usize) {
        let _ = self.uffd.unregister(base, pages * PAGE);
        let mut state = self.lock();
        while state
            .regions
            .get(&base)
            .is_some_and(|r| r.pages.iter().any(|p| p.in_flight))
        {
            state = self.wait_settled(state);
        }
        let Some(region) = state.regions.remove(&base) else {
            return;
        };
        let swap = self.swap();
        for page in &region.pages {
            if let Some(slot) = page.slot {
                let _ = swap.free(slot);
            }
            if page.resident {
                state.stats.resident -= 1;
            }
        }
        state.region_pages -= pages as u64;
        state.clock.retain(|(b, _)| *b != base);
        state.streamed.retain(|(b, _)| *b != base);
        drop(swap);
        self.close_swap_when_unused(&state);
    }
}
