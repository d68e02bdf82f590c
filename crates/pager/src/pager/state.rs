//! The pager's state, under its one lock: each region's pages and access stream, the clock
//! and use-once queues eviction picks from, and the evictions on their way to swap.

use std::collections::{BTreeMap, VecDeque};

use cowfs::device::AlignedBuf;
use swap::Slot;

use crate::stats::Stats;

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PageState {
    pub(super) slot: Option<Slot>,
    pub(super) resident: bool,
    pub(super) dirty: bool,
    /// Written since it was last looked at by the clock: gets a second chance.
    pub(super) referenced: bool,
    /// A fault is reading it in now.
    pub(super) in_flight: bool,
    /// Its swap-in failed: the page is poisoned, and every access gets SIGBUS.
    pub(super) poisoned: bool,
}

/// The pages one fault brings in.
pub(super) struct Fetch {
    pub(super) base: usize,
    pub(super) index: usize,
    pub(super) run: usize,
    /// Their slots, consecutive; none for pages never written.
    pub(super) slots: Vec<Slot>,
    pub(super) writable: bool,
    /// Read ahead of a stream: no access waits on it.
    pub(super) ahead: bool,
    /// A sequential stream reads these pages: they go to the use-once queue.
    pub(super) streamed: bool,
}

/// Evicted dirty pages on their way to swap: copied into `buf`, their slots allocated. The
/// pages are in flight until the write settles.
pub(super) struct Writeback {
    pub(super) pages: Vec<(usize, usize)>,
    pub(super) slots: Vec<Slot>,
    pub(super) buf: AlignedBuf,
}

/// What the access stream of a region looks like to prefetch.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Stream {
    /// The page a sequential stream would fault on next.
    pub(super) next: usize,
    pub(super) window: usize,
    /// Pages the last window brought in ahead of the fault.
    pub(super) ahead: usize,
    /// The last fault, and the distance to the one before it: two equal distances (other
    /// than 1) make a strided stream, whose next pages are fetched one by one.
    pub(super) last: usize,
    pub(super) stride: isize,
    /// The stream's pages are written soon after they come in (a write-protect fault
    /// followed): in-thread faults, which cannot tell a write, then bring fresh pages in
    /// writable.
    pub(super) writing: bool,
    /// Pages a strided stream fetches ahead (doubling to MAX_STRIDED), and the page its
    /// next fault would be on.
    pub(super) strided: usize,
    pub(super) stride_next: usize,
}

pub(super) struct RegionPages {
    pub(super) pages: Vec<PageState>,
    pub(super) stream: Stream,
}

pub(super) struct State {
    pub(super) regions: BTreeMap<usize, RegionPages>,
    /// Resident pages in the order they came in: (region base, page).
    pub(super) clock: VecDeque<(usize, usize)>,
    /// Resident pages a sequential stream read, in the order they came in, until eviction
    /// (or a write) looks at them: use-once pages, evicted before the clock's.
    pub(super) streamed: VecDeque<(usize, usize)>,
    /// Pages the regions hold, which swap plus the budget must be able to take.
    pub(super) region_pages: u64,
    pub(super) swap_capacity: u64,
    /// Buffers for the pages of evictions being written, one per eviction at a time; an
    /// evicting thread that finds none waits for one. Page-aligned, as O_DIRECT backings
    /// want their buffers (else they copy).
    pub(super) evict_bufs: Vec<AlignedBuf>,
    /// Evictions waiting for a writeback thread.
    pub(super) writeback: VecDeque<Writeback>,
    /// Room within the budget held for pages being installed.
    pub(super) reserved: usize,
    /// Threads in `wait_settled`.
    pub(super) settle_waiters: usize,
    pub(super) stats: Stats,
}

impl State {
    pub(super) fn new(swap_capacity: u64, evict_bufs: Vec<AlignedBuf>) -> Self {
        State {
            regions: BTreeMap::new(),
            clock: VecDeque::new(),
            streamed: VecDeque::new(),
            region_pages: 0,
            swap_capacity,
            evict_bufs,
            writeback: VecDeque::new(),
            reserved: 0,
            settle_waiters: 0,
            stats: Stats::default(),
        }
    }

    /// Adds a region of `pages` pages, none resident, at `base`.
    pub(super) fn add_region(&mut self, base: usize, pages: usize) {
        let region = RegionPages {
            pages: vec![PageState::default(); pages],
            stream: Stream::default(),
        };
        self.regions.insert(base, region);
    }
}
