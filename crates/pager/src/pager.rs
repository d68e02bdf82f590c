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
//!   stale slot was freed): eviction copies it out, drops it and hands the copy to the
//!   writeback thread, which writes it to a new slot (contiguous for the batch), so no fault
//!   waits for a swap write; until the write is done the page is in flight, and a fault on it
//!   waits.
//!
//! Room is made before pages come in: a fetch holds its pages' room within the budget
//! (evicting first when there is none) before it installs them, so resident memory stays
//! within the budget even with several fetches under way.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Instant;

use cowfs::device::AlignedBuf;
use swap::{Slot, SwapSystem};

use crate::stats::Stats;
use crate::uffd::{self, Message, Userfaultfd};

pub const PAGE: usize = 4096;
/// Tries of a copy the kernel keeps answering EAGAIN, before the fault fails.
const COPY_ATTEMPTS: usize = 10_000;
/// Fetch buffers for faults served in the faulting threads.
const IN_THREAD_BUFFERS: usize = 8;
/// Evictions whose writes may be under way at once.
const EVICT_BUFFERS: usize = 4;

/// One page, aligned as O_DIRECT wants it, for a fault served on its thread's stack.
#[repr(C, align(4096))]
struct PageBuf([u8; PAGE]);

/// Full windows a sequential stream is read ahead of its last fault.
const READ_AHEAD: usize = 2;
/// The most pages a strided stream fetches ahead.
const MAX_STRIDED: usize = 32;

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

#[derive(Debug, Clone, Copy, Default)]
struct PageState {
    slot: Option<Slot>,
    resident: bool,
    dirty: bool,
    /// Written since it was last looked at by the clock: gets a second chance.
    referenced: bool,
    /// A fault is reading it in now.
    in_flight: bool,
    /// Its swap-in failed: the page is poisoned, and every access gets SIGBUS.
    poisoned: bool,
}

/// The pages one fault brings in.
struct Fetch {
    base: usize,
    index: usize,
    run: usize,
    /// Their slots, consecutive; none for pages never written.
    slots: Vec<Slot>,
    writable: bool,
    /// Read ahead of a stream: no access waits on it.
    ahead: bool,
    /// A sequential stream reads these pages: they go to the use-once queue.
    streamed: bool,
}

/// Evicted dirty pages on their way to swap: copied into `buf`, their slots allocated. The
/// pages are in flight until the write settles.
struct Writeback {
    pages: Vec<(usize, usize)>,
    slots: Vec<Slot>,
    buf: AlignedBuf,
}

/// What the access stream of a region looks like to prefetch.
#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    /// The page a sequential stream would fault on next.
    next: usize,
    window: usize,
    /// Pages the last window brought in ahead of the fault.
    ahead: usize,
    /// The last fault, and the distance to the one before it: two equal distances (other
    /// than 1) make a strided stream, whose next pages are fetched one by one.
    last: usize,
    stride: isize,
    /// The stream's pages are written soon after they come in (a write-protect fault
    /// followed): in-thread faults, which cannot tell a write, then bring fresh pages in
    /// writable.
    writing: bool,
    /// Pages a strided stream fetches ahead (doubling to MAX_STRIDED), and the page its
    /// next fault would be on.
    strided: usize,
    stride_next: usize,
}

struct RegionPages {
    pages: Vec<PageState>,
    stream: Stream,
}

struct State {
    regions: BTreeMap<usize, RegionPages>,
    /// Resident pages in the order they came in: (region base, page).
    clock: VecDeque<(usize, usize)>,
    /// Resident pages a sequential stream read, in the order they came in, until eviction
    /// (or a write) looks at them: use-once pages, evicted before the clock's.
    streamed: VecDeque<(usize, usize)>,
    /// Pages the regions hold, which swap plus the budget must be able to take.
    region_pages: u64,
    swap_capacity: u64,
    /// Buffers for the pages of evictions being written, one per eviction at a time; an
    /// evicting thread that finds none waits for one. Page-aligned, as O_DIRECT backings
    /// want their buffers (else they copy).
    evict_bufs: Vec<AlignedBuf>,
    /// Evictions waiting for the writeback thread.
    writeback: VecDeque<Writeback>,
    /// Room within the budget held for pages being installed.
    reserved: usize,
    /// Threads in `wait_settled`.
    settle_waiters: usize,
    stats: Stats,
}

pub(crate) struct Inner {
    uffd: Userfaultfd,
    state: Mutex<State>,
    /// Signalled when pages stop being in flight, or an eviction buffer comes back.
    settled: Condvar,
    /// Wakes the writeback thread.
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
        let state = State {
            regions: BTreeMap::new(),
            clock: VecDeque::new(),
            streamed: VecDeque::new(),
            region_pages: 0,
            swap_capacity,
            evict_bufs: (0..EVICT_BUFFERS)
                .map(|_| AlignedBuf::zeroed(config.evict_batch.max(1) * PAGE))
                .collect(),
            writeback: VecDeque::new(),
            reserved: 0,
            settle_waiters: 0,
            stats: Stats::default(),
        };
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
        let written = Arc::downgrade(&inner);
        let thread = std::thread::Builder::new().name("pager-writeback".into());
        thread.spawn(move || Inner::write_back(written))?;
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
        let region = RegionPages {
            pages: vec![PageState::default(); pages],
            stream: Stream::default(),
        };
        self.lock().regions.insert(base, region);
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

    /// A fault loop, with its own buffer for the pages it reads: until the pager is dropped.
    /// A fault thread: serves faults until the pager and all its regions are gone (it holds
    /// the pager only while it handles one batch, so the last owner can let it go).
    fn serve(pager: Weak<Inner>, mut buf: AlignedBuf) {
        let mut messages = [Message::default(); 16];
        while let Some(inner) = pager.upgrade() {
            let n = match inner.uffd.read(&mut messages, 50) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("pager: reading faults: {e}");
                    return;
                }
            };
            for m in &messages[..n] {
                if m.event == uffd::EVENT_PAGEFAULT {
                    let started = Instant::now();
                    inner.fault(&mut buf, m.address as usize & !(PAGE - 1), m.flags);
                    inner.lock().stats.latency.record(started.elapsed());
                }
            }
        }
    }

    fn fault(&self, buf: &mut [u8], address: usize, flags: u64) {
        let mut state = self.lock();
        let Some((&base, region)) = state.regions.range(..=address).next_back() else {
            let _ = self.uffd.wake(address, PAGE);
            return;
        };
        let index = (address - base) / PAGE;
        if index >= region.pages.len() {
            let _ = self.uffd.wake(address, PAGE);
            return;
        }
        if flags & uffd::PAGEFAULT_FLAG_WP != 0 {
            self.first_write(&mut state, base, index);
            return;
        }
        let page = region.pages[index];
        if page.resident {
            // Brought in meanwhile (by prefetch): the access only has to retry.
            let _ = self.uffd.wake(address, PAGE);
            return;
        }
        if page.in_flight {
            // Another thread is reading it in: its copy wakes this access too.
            return;
        }
        let write = flags & uffd::PAGEFAULT_FLAG_WRITE != 0;
        let sequential = region.stream.window > 0 && index == region.stream.next;
        let mut plan = Some(self.plan(&mut state, base, index, write));
        let mut strided = self.plan_strided(&mut state, base, index, sequential);
        strided.reverse();
        // The fault's own pages, then, for a stream reading swap at full speed, the next
        // windows too (READ_AHEAD of them), read while the program goes through the one it
        // was just given.
        let mut windows = 0;
        while let Some(fetch) = plan.take() {
            windows += 1;
            let came_in;
            (state, came_in) = self.bring_in(state, &fetch, buf);
            let whole_window = fetch.run == self.config.window_pages() && !fetch.slots.is_empty();
            let read_ahead = came_in && whole_window && windows <= READ_AHEAD;
            if write && !fetch.ahead {
                self.first_write(&mut state, base, index);
            }
            if read_ahead {
                plan = self.plan_ahead(&mut state, base);
            }
            if plan.is_none() {
                plan = strided.pop();
            }
        }
    }

    /// For a strided stream (the last two faults the same distance apart, not adjacent), the
    /// next pages along the stride, each its own fetch, marked in flight. A fault that
    /// continues a sequential stream is no stride, though its faults come a window apart.
    fn plan_strided(
        &self,
        state: &mut State,
        base: usize,
        index: usize,
        sequential: bool,
    ) -> Vec<Fetch> {
        let Some(region) = state.regions.get_mut(&base) else {
            return Vec::new();
        };
        let stream = &mut region.stream;
        let stride = index as isize - stream.last as isize;
        stream.last = index;
        if sequential {
            stream.stride = 0;
            stream.strided = 0;
            return Vec::new();
        }
        // The pages fetched ahead do not fault, so the stream's next fault is the first
        // page past them (`stride_next`), or, with nothing fetched yet, one stride on.
        let continues =
            stream.stride.abs() > 1 && (index == stream.stride_next || stride == stream.stride);
        if !continues {
            stream.stride = stride;
            stream.strided = 0;
            stream.stride_next = (index as isize + stride).max(0) as usize;
            return Vec::new();
        }
        if index == stream.stride_next {
            state.stats.prefetch_hits += stream.strided as u64;
        }
        stream.strided = (stream.strided * 2).clamp(1, MAX_STRIDED);
        let stride = stream.stride;
        let mut fetches = Vec::new();
        let mut at = index as isize;
        for _ in 0..stream.strided {
            at += stride;
            let Some(page) = usize::try_from(at)
                .ok()
                .and_then(|i| region.pages.get_mut(i))
            else {
                break;
            };
            if page.resident || page.in_flight {
                continue;
            }
            page.in_flight = true;
            let slots = page.slot.into_iter().collect();
            fetches.push(Fetch {
                base,
                index: at as usize,
                run: 1,
                slots,
                writable: false,
                ahead: true,
                streamed: false,
            });
        }
        stream.stride_next = (at + stride).max(0) as usize;
        fetches
    }

    /// The window after a sequential stream's last one, when it is all in swap: marked in
    /// flight, for reading ahead of the stream.
    fn plan_ahead(&self, state: &mut State, base: usize) -> Option<Fetch> {
        let region = state.regions.get_mut(&base)?;
        let start = region.stream.next;
        // No further than READ_AHEAD windows past the window of the stream's last fault, even
        // when several threads read ahead of it at once: use-once eviction leaves the stream
        // that many windows, and pages read further ahead would go before they are used.
        let window = self.config.window_pages();
        if start >= region.stream.last + (READ_AHEAD + 1) * window {
            return None;
        }
        let first = region.pages.get(start)?;
        if first.resident || first.in_flight || first.slot.is_none() {
            return None;
        }
        let run = run_from(&region.pages, start, window);
        region.stream.next = start + run;
        region.stream.ahead += run;
        let pages = &mut region.pages[start..start + run];
        pages.iter_mut().for_each(|p| p.in_flight = true);
        let slots = pages.iter().filter_map(|p| p.slot).collect();
        Some(Fetch {
            base,
            index: start,
            run,
            slots,
            writable: false,
            ahead: true,
            streamed: true,
        })
    }

    /// Serves a fault in the thread that took it (`FaultMode::InThread`, from the SIGBUS
    /// handler). The signal says only where: a resident clean page means a write to it, a
    /// missing one is brought in (write-protected; if the access was a write, it faults once
    /// more). False when the address is not a page this pager can serve (not its own, or
    /// poisoned): the signal then takes its default course.
    pub(crate) fn fault_in_thread(&self, address: usize) -> bool {
        let started = Instant::now();
        let address = address & !(PAGE - 1);
        let mut state = self.lock();
        let Some((&base, region)) = state.regions.range(..=address).next_back() else {
            return false;
        };
        let index = (address - base) / PAGE;
        let Some(&page) = region.pages.get(index) else {
            return false;
        };
        if page.poisoned {
            return false;
        }
        if page.resident {
            self.first_write(&mut state, base, index);
            state.stats.latency.record(started.elapsed());
            return true;
        }
        if page.in_flight {
            // Another thread is reading it in, or writing it out: wait for that, then let the
            // access retry (rather than fault over and over meanwhile).
            while state
                .regions
                .get(&base)
                .is_some_and(|r| r.pages[index].in_flight)
            {
                state = self.wait_settled(state);
            }
            return true;
        }
        let mut pooled = self.buffers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut one = PageBuf([0; PAGE]);
        let cap = if pooled.is_some() {
            self.config.window_pages()
        } else {
            1
        };
        let write = region.stream.writing && page.slot.is_none();
        let plan = self.plan_within(&mut state, base, index, write, cap);
        let buf: &mut [u8] = match pooled.as_mut() {
            Some(buf) => buf,
            None => &mut one.0,
        };
        let (mut state, _) = self.bring_in(state, &plan, buf);
        state.stats.latency.record(started.elapsed());
        drop(state);
        if let Some(buf) = pooled {
            self.buffers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(buf);
        }
        true
    }

    /// A write to a write-protected page: it is dirty now, and its slot no longer holds it.
    fn first_write(&self, state: &mut State, base: usize, index: usize) {
        let address = base + index * PAGE;
        let Some(region) = state.regions.get_mut(&base) else {
            return;
        };
        let page = &mut region.pages[index];
        if !page.resident {
            // Evicted while the write waited, or not in yet: it faults again, as missing.
            let _ = self.uffd.wake(address, PAGE);
            return;
        }
        if !page.dirty {
            page.dirty = true;
            page.referenced = true;
            if let Some(slot) = page.slot.take() {
                let _ = self.swap().free(slot);
            }
            region.stream.writing = true;
            state.stats.write_faults += 1;
        }
        let _ = self.uffd.write_protect(address, PAGE, false);
    }

    /// Decides what a missing page's fault brings in: the page, and the pages after it a
    /// sequential stream will want, all read with one call and installed with one copy; marks
    /// them in flight. A stream writing into never-written memory gets its run writable and
    /// dirty at once: it is about to write every page of it, and a write-protect fault per
    /// page would double the faults.
    fn plan(&self, state: &mut State, base: usize, index: usize, write: bool) -> Fetch {
        self.plan_within(state, base, index, write, self.config.window_pages())
    }

    /// `plan`, bringing in at most `cap` pages.
    fn plan_within(
        &self,
        state: &mut State,
        base: usize,
        index: usize,
        write: bool,
        cap: usize,
    ) -> Fetch {
        let max = self.config.window_pages().min(cap);
        let region = state.regions.get_mut(&base).expect("found");
        let stream = &mut region.stream;
        let continues = index == stream.next && stream.window > 0;
        if continues {
            state.stats.prefetch_hits += stream.ahead as u64;
            stream.window = (stream.window * 2).min(max);
        } else {
            stream.window = 1;
            stream.writing = false;
        }
        let run = run_from(&region.pages, index, stream.window);
        stream.next = index + run;
        stream.ahead = run - 1;
        let pages = &mut region.pages[index..index + run];
        pages.iter_mut().for_each(|p| p.in_flight = true);
        let slots: Vec<Slot> = pages.iter().filter_map(|p| p.slot).collect();
        let writable = write && slots.is_empty();
        Fetch {
            base,
            index,
            run,
            slots,
            writable,
            ahead: false,
            streamed: continues && !writable,
        }
    }

    /// Brings a fetch's pages in: reads them (the lock let go), makes room for them within the
    /// budget, installs them (the lock let go again) and records them. True when they came in.
    fn bring_in<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        plan: &Fetch,
        buf: &mut [u8],
    ) -> (MutexGuard<'a, State>, bool) {
        // With room already, hold it now, which spares taking the lock between read and copy.
        let room = self
            .budget_pages
            .saturating_sub(state.stats.resident as usize + state.reserved);
        let mut held = plan.run <= room;
        if held {
            state.reserved += plan.run;
        }
        drop(state);
        let buf = &mut buf[..plan.run * PAGE];
        let mut result = self.read_in(plan, buf);
        if result.is_ok() && !held {
            drop(self.reserve(self.lock(), plan.run));
            held = true;
        }
        if result.is_ok() {
            result = self.install(plan.base + plan.index * PAGE, buf, plan.writable);
        }
        let mut state = self.lock();
        if held {
            state.reserved -= plan.run;
        }
        let came_in = result.is_ok();
        self.settle(&mut state, plan, result);
        (state, came_in)
    }

    /// A fetch's pages: read from their slots (no lock held but the swap's read lock), or
    /// zeros for pages never written.
    fn read_in(&self, plan: &Fetch, buf: &mut [u8]) -> io::Result<()> {
        if plan.slots.is_empty() {
            buf.fill(0);
            return Ok(());
        }
        self.swap().read(&plan.slots, buf).map_err(swap_io)
    }

    /// Records a fetch: its pages resident, or, when it failed, the faulting page poisoned
    /// (its access gets SIGBUS) and the others woken to fault again.
    fn settle(&self, state: &mut State, plan: &Fetch, result: io::Result<()>) {
        let address = plan.base + plan.index * PAGE;
        let Some(region) = state.regions.get_mut(&plan.base) else {
            return;
        };
        let pages = &mut region.pages[plan.index..plan.index + plan.run];
        pages.iter_mut().for_each(|p| p.in_flight = false);
        if state.settle_waiters > 0 {
            self.settled.notify_all();
        }
        if let Err(e) = result {
            // A read ahead that failed poisons nothing: the page's own fault tries again.
            if !plan.ahead {
                eprintln!("pager: page {} of region {:#x}: {e}", plan.index, plan.base);
                state.stats.poisoned += 1;
                pages[0].poisoned = true;
                let _ = self.uffd.poison(address, PAGE);
            }
            let _ = self.uffd.wake(address, plan.run * PAGE);
            return;
        }
        let queue = if plan.streamed {
            &mut state.streamed
        } else {
            &mut state.clock
        };
        for (i, page) in pages.iter_mut().enumerate() {
            page.resident = true;
            page.dirty = plan.writable;
            page.referenced = false;
            queue.push_back((plan.base, plan.index + i));
        }
        let (run, bytes) = (plan.run as u64, (plan.run * PAGE) as u64);
        if !plan.slots.is_empty() {
            state.stats.pages_in += run;
            state.stats.bytes_in += bytes;
        }
        match (plan.ahead, plan.slots.is_empty()) {
            (true, _) => {}
            (false, true) => state.stats.zero_faults += 1,
            (false, false) => state.stats.major_faults += 1,
        }
        state.stats.prefetched += if plan.ahead { run } else { run - 1 };
        state.stats.resident += run;
        state.stats.peak_resident = state.stats.peak_resident.max(state.stats.resident);
    }

    /// UFFDIO_COPY of whole pages; a page already there (EEXIST) is left as it is, and its
    /// waiters woken.
    fn install(&self, address: usize, data: &[u8], writable: bool) -> io::Result<()> {
        match self.copy(address, data, writable) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                for (i, page) in data.chunks(PAGE).enumerate() {
                    match self.copy(address + i * PAGE, page, writable) {
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            let _ = self.uffd.wake(address + i * PAGE, PAGE);
                        }
                        other => other?,
                    }
                }
                Ok(())
            }
            other => other,
        }
    }

    /// UFFDIO_COPY, again while the kernel says EAGAIN: the address space is changing (an
    /// event is pending, which another fault thread reads), and a copy may have been partly
    /// done; the retry then meets the done pages as EEXIST.
    fn copy(&self, address: usize, data: &[u8], writable: bool) -> io::Result<()> {
        for _ in 0..COPY_ATTEMPTS {
            match self.uffd.copy(address, data, writable) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => std::thread::yield_now(),
                other => return other,
            }
        }
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    }

    /// Makes room for `pages` more within the budget and holds it for them: evicts batches
    /// until resident and held pages leave room (or nothing more can go). An eviction needs a
    /// buffer for its dirty pages; when all are being written, it waits for one (the lock let
    /// go meanwhile), which is how faults keep pace with swap-out. Over the budget rather than
    /// stuck when swap-out fails.
    fn reserve<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        pages: usize,
    ) -> MutexGuard<'a, State> {
        // Writes failing (their pages come back): stop, rather than evict the same pages again.
        let failures = state.stats.swap_out_failures;
        while state.stats.resident as usize + state.reserved + pages > self.budget_pages
            && state.stats.swap_out_failures == failures
        {
            let Some(buf) = state.evict_bufs.pop() else {
                state = self.wait_settled(state);
                continue;
            };
            if !self.evict(&mut state, buf) {
                if state.reserved == 0 {
                    break;
                }
                // The room is held by pages on their way in: once in, they can go.
                state = self.wait_settled(state);
            }
        }
        state.reserved += pages;
        state
    }

    /// Evicts a batch: use-once pages, then clock order. Dirty victims are write-protected
    /// (so no write can slip in after they are copied), copied into `buf` and given fresh
    /// contiguous slots; then every victim is dropped. The dirty ones stay in flight until the
    /// writeback thread has written `buf`: a fault on one waits until its slot holds it.
    /// False when nothing could be evicted.
    fn evict(&self, state: &mut State, mut buf: AlignedBuf) -> bool {
        let victims = self.pick_victims(state);
        let mut dirty: Vec<(usize, usize)> = victims
            .iter()
            .copied()
            .filter(|(b, i)| state.regions[b].pages[*i].dirty)
            .collect();
        // In address order, so that pages next to each other get slots next to each other
        // (victims come in the order their pages came in, which several fault threads can
        // mix): a stream reading them back then finds long runs, each one read.
        dirty.sort_unstable();
        let slots = match self.prepare_write(&dirty, &mut buf) {
            Ok(slots) => slots,
            Err(e) => {
                // Keep them: over budget beats losing data. They stay dirty and protected.
                eprintln!("pager: swap-out: {e}");
                state.stats.swap_out_failures += 1;
                state.clock.extend(victims);
                self.give_back(state, buf);
                return false;
            }
        };
        for &(base, index) in &victims {
            let page = &mut state.regions.get_mut(&base).expect("victim").pages[index];
            page.resident = false;
            if page.dirty {
                page.dirty = false;
                page.in_flight = true;
            } else if page.slot.is_some() {
                state.stats.clean_drops += 1;
            } else {
                state.stats.zero_drops += 1;
            }
        }
        for (address, len) in address_runs(&victims) {
            drop_pages(address, len);
        }
        state.stats.evicted += victims.len() as u64;
        state.stats.resident -= victims.len() as u64;
        if dirty.is_empty() {
            self.give_back(state, buf);
        } else {
            state.writeback.push_back(Writeback {
                pages: dirty,
                slots,
                buf,
            });
            self.writeback_queued.notify_one();
        }
        !victims.is_empty()
    }

    /// The writeback thread: writes evicted dirty pages, one batch at a time, so no fault
    /// waits for a swap write. Until the pager and its regions are gone (it holds the pager
    /// only while awake, as the fault threads do).
    fn write_back(pager: Weak<Inner>) {
        while let Some(inner) = pager.upgrade() {
            let mut state = inner.lock();
            let Some(batch) = state.writeback.pop_front() else {
                let timeout = std::time::Duration::from_millis(50);
                drop(inner.writeback_queued.wait_timeout(state, timeout));
                continue;
            };
            drop(state);
            let data = &batch.buf[..batch.pages.len() * PAGE];
            let result = inner.swap().write(&batch.slots, data).map_err(swap_io);
            inner.settle_write(&mut inner.lock(), batch, result);
        }
    }

    /// A batch of victims: first use-once pages a sequential stream has gone past (oldest
    /// first, leaving the stream the windows it is still in), then the clock's, and only
    /// when those run out, the stream's own.
    fn pick_victims(&self, state: &mut State) -> Vec<(usize, usize)> {
        let want = self.config.evict_batch.max(1);
        let mut victims = Vec::with_capacity(want);
        let State {
            regions,
            clock,
            streamed,
            ..
        } = state;
        while victims.len() < want && streamed.len() > self.stream_keep {
            let (base, index) = streamed.pop_front().expect("longer than the pages kept");
            let Some(page) = regions.get_mut(&base).map(|r| &mut r.pages[index]) else {
                continue;
            };
            if !page.resident {
                continue;
            }
            if page.dirty {
                // Written since: not use-once after all.
                clock.push_back((base, index));
                continue;
            }
            victims.push((base, index));
        }
        let mut looked = 0;
        while victims.len() < want && looked < 2 * clock.len() + 1 {
            let Some((base, index)) = clock.pop_front() else {
                break;
            };
            looked += 1;
            let Some(page) = regions.get_mut(&base).map(|r| &mut r.pages[index]) else {
                continue;
            };
            if !page.resident {
                continue;
            }
            if page.referenced {
                page.referenced = false;
                clock.push_back((base, index));
                continue;
            }
            victims.push((base, index));
        }
        while victims.len() < want {
            let Some((base, index)) = streamed.pop_front() else {
                break;
            };
            if regions.get(&base).is_some_and(|r| r.pages[index].resident) {
                victims.push((base, index));
            }
        }
        victims
    }

    /// Write-protects the dirty victims, copies them into `buf` and allocates their slots.
    fn prepare_write(&self, dirty: &[(usize, usize)], buf: &mut [u8]) -> io::Result<Vec<Slot>> {
        if dirty.is_empty() {
            return Ok(Vec::new());
        }
        for (address, len) in address_runs(dirty) {
            self.uffd.write_protect(address, len, true)?;
        }
        for (n, &(base, index)) in dirty.iter().enumerate() {
            // SAFETY: the page is resident and write-protected: nobody changes it now.
            let page =
                unsafe { std::slice::from_raw_parts((base + index * PAGE) as *const u8, PAGE) };
            buf[n * PAGE..(n + 1) * PAGE].copy_from_slice(page);
        }
        self.swap().allocate(dirty.len()).map_err(swap_io)
    }

    /// Records the write of evicted dirty pages: each gets its slot, and the faults waiting on
    /// them retry. When it failed, the pages go back in from the buffer, dirty, as they were.
    fn settle_write(&self, state: &mut State, batch: Writeback, result: io::Result<()>) {
        if let Err(e) = &result {
            eprintln!("pager: swap-out: {e}");
            state.stats.swap_out_failures += 1;
            let swap = self.swap();
            for slot in &batch.slots {
                let _ = swap.free(*slot);
            }
        } else {
            state.stats.pages_out += batch.pages.len() as u64;
            state.stats.bytes_out += (batch.pages.len() * PAGE) as u64;
        }
        for (n, (&(base, index), slot)) in batch.pages.iter().zip(&batch.slots).enumerate() {
            let page = &mut state.regions.get_mut(&base).expect("in flight").pages[index];
            page.in_flight = false;
            if result.is_ok() {
                page.slot = Some(*slot);
                continue;
            }
            let address = base + index * PAGE;
            // It was missing and in flight, so nothing else put a page there.
            if self
                .copy(address, &batch.buf[n * PAGE..(n + 1) * PAGE], true)
                .is_ok()
            {
                page.resident = true;
                page.dirty = true;
                state.clock.push_back((base, index));
                state.stats.resident += 1;
                state.stats.peak_resident = state.stats.peak_resident.max(state.stats.resident);
            } else {
                // Its data is nowhere now: every access gets SIGBUS, never zeros.
                page.poisoned = true;
                state.stats.poisoned += 1;
                let _ = self.uffd.poison(address, PAGE);
            }
        }
        for (address, len) in address_runs(&batch.pages) {
            let _ = self.uffd.wake(address, len);
        }
        self.give_back(state, batch.buf);
    }
}

/// How many pages from `index` (at most `window`) one read and one copy can serve: pages
/// not resident, either all never written or with consecutive slots of one area.
fn run_from(pages: &[PageState], index: usize, window: usize) -> usize {
    let first = pages[index].slot;
    let mut run = 1;
    while run < window && index + run < pages.len() {
        let page = &pages[index + run];
        let follows = match (first, page.slot) {
            (None, None) => true,
            (Some(a), Some(b)) => b.area == a.area && b.page == a.page + run as u64,
            _ => false,
        };
        if page.resident || page.in_flight || !follows {
            break;
        }
        run += 1;
    }
    run
}

/// Gives pages back to the kernel: the next access faults as missing.
fn drop_pages(address: usize, len: usize) {
    // SAFETY: the pages lie inside a region this pager mapped.
    unsafe { libc::madvise(address as *mut libc::c_void, len, libc::MADV_DONTNEED) };
}

/// The pages as (address, length) ranges of adjacent pages, so one call serves each range.
fn address_runs(pages: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut addresses: Vec<usize> = pages
        .iter()
        .map(|(base, index)| base + index * PAGE)
        .collect();
    addresses.sort_unstable();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for address in addresses {
        match runs.last_mut() {
            Some((start, len)) if *start + *len == address => *len += PAGE,
            _ => runs.push((address, PAGE)),
        }
    }
    runs
}
