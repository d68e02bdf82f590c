//! Read-ahead for the kernel's sequential swap-ins of a file it swaps to through the
//! filesystem.
//!
//! The kernel swaps in at most a cluster of pages at a time (`vm.page-cluster`, 8 pages here),
//! and a process reading its memory back in order waits for each cluster before it asks for
//! the next: one request under way at a time, each paying the image read (about 100 us for
//! 32 KiB on this project's VM) on top of the loop device and FUSE round trip (about 40 us).
//! So once two swap-ins in a row continue each other, the serving thread, after it has
//! replied, reads the file's next pages with the engine's swap read (checksums checked, as
//! for any swap-in) into a window kept for the file, and the stream's next swap-ins are
//! copied from there.
//!
//! The window never serves a page older than its last write: a swap-out drops the pages it
//! writes from the window, and marks a read-ahead under way over them stale, after the engine
//! has taken the write and before the kernel hears it is done (the kernel does not swap a
//! page in while its swap-out is under way). Its memory is allocated at activation, as the
//! daemon's other swap buffers are.

use std::ops::Range;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cowfs::device::AlignedBuf;
use cowfs::format::BLOCK_SIZE;

const PAGE: usize = BLOCK_SIZE as usize;
/// Pages one read-ahead reads (one engine read, one device read where the file is
/// contiguous).
const AHEAD_PAGES: u64 = 64;
/// Pages the window holds: the read-ahead landing and the one before it.
const WINDOW_PAGES: u64 = 2 * AHEAD_PAGES;
/// The longest a swap-in waits for a read-ahead before reading the pages itself.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// A buffer of `len` bytes with every page touched now (so resident, and locked under the
/// daemon's `mlockall`): swap I/O then never waits for memory the kernel may be short of.
pub(crate) fn touched_buf(len: usize) -> AlignedBuf {
    let mut buf = AlignedBuf::zeroed(len);
    // Zeroed memory may be untouched pages; the write must not be optimized away.
    buf.fill(0);
    std::hint::black_box(buf)
}

/// One swap file's read-ahead window.
pub(crate) struct SwapReadahead {
    /// Pages of the file: reads ahead stop at its end.
    pages: u64,
    window: Mutex<Window>,
    /// Signalled when a read-ahead lands (or fails).
    landed: Condvar,
}

struct Window {
    /// Pages `first..first + held` are held, page p at slot `p % WINDOW_PAGES` of `ring`.
    first: u64,
    held: u64,
    ring: AlignedBuf,
    /// The read-ahead under way, if any, and its buffer while none is.
    reading: Option<Reading>,
    spare: Option<AlignedBuf>,
    /// The page after the last swap-in.
    next: u64,
    stats: ReadaheadStats,
}

/// Pages being read ahead; `stale` once a swap-out wrote any of them.
struct Reading {
    pages: Range<u64>,
    stale: bool,
}

/// What the window did over the activation.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReadaheadStats {
    pub(crate) pages_read_ahead: u64,
    pub(crate) pages_served: u64,
}

/// A read-ahead for the serving thread to make after its reply: read `pages` of the file
/// into `buf`, then give both back with [`SwapReadahead::land`].
pub(crate) struct ReadAhead {
    pub(crate) pages: Range<u64>,
    buf: AlignedBuf,
}

impl ReadAhead {
    /// The part of the buffer the read fills.
    pub(crate) fn target(&mut self) -> &mut [u8] {
        let len = (self.pages.end - self.pages.start) as usize * PAGE;
        &mut self.buf[..len]
    }
}

impl SwapReadahead {
    /// A window for a file of `pages` pages, its memory allocated and touched now.
    pub(crate) fn new(pages: u64) -> Self {
        let touched = |pages: u64| touched_buf(pages as usize * PAGE);
        SwapReadahead {
            pages,
            window: Mutex::new(Window {
                first: 0,
                held: 0,
                ring: touched(WINDOW_PAGES),
                reading: None,
                spare: Some(touched(AHEAD_PAGES)),
                next: u64::MAX,
                stats: ReadaheadStats::default(),
            }),
            landed: Condvar::new(),
        }
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fills `buf` with the pages from `page` on if the window holds them all, waiting for a
    /// read-ahead under way that covers them (for a while: a swap-in never hangs on one);
    /// false when they must be read from the file.
    pub(crate) fn serve(&self, page: u64, buf: &mut [u8]) -> bool {
        let pages = page..page + (buf.len() / PAGE) as u64;
        let deadline = Instant::now() + MAX_WAIT;
        let mut w = self.window();
        loop {
            if w.holds(&pages) {
                w.copy_out(page, buf);
                w.stats.pages_served += pages.end - pages.start;
                return true;
            }
            match &w.reading {
                Some(r) if r.pages.start <= pages.start && pages.end <= r.pages.end => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    w = self
                        .landed
                        .wait_timeout(w, left)
                        .map_or_else(|p| p.into_inner().0, |(w, _)| w);
                }
                _ => return false,
            }
        }
    }

    /// Notes a swap-in of `pages` pages from `page` on; when it continues the one before and
    /// the window runs short ahead of it, the read-ahead to make now.
    pub(crate) fn after_swap_in(&self, page: u64, pages: u64) -> Option<ReadAhead> {
        let mut w = self.window();
        let continues = page == w.next;
        let end = page + pages;
        w.next = end;
        if !continues || w.reading.is_some() {
            return None;
        }
        // Read on from what the window holds past this swap-in, or from the swap-in's end.
        let held_end = w.first + w.held;
        let from = match w.first <= end && end < held_end {
            true => held_end,
            false => end,
        };
        if from >= end + AHEAD_PAGES || from >= self.pages {
            return None;
        }
        let to = (from + AHEAD_PAGES).min(self.pages);
        let buf = w.spare.take()?;
        w.reading = Some(Reading {
            pages: from..to,
            stale: false,
        });
        Some(ReadAhead {
            pages: from..to,
            buf,
        })
    }

    /// Takes back a read-ahead: its pages join the window when it was `read` and no swap-out
    /// wrote them meanwhile. Wakes the swap-ins waiting for it either way.
    pub(crate) fn land(&self, ahead: ReadAhead, read: bool) {
        let mut w = self.window();
        let stale = w.reading.take().is_none_or(|r| r.stale);
        if read && !stale {
            w.take_in(&ahead);
        }
        w.spare = Some(ahead.buf);
        drop(w);
        self.landed.notify_all();
    }

    /// A swap-out of `pages` pages from `page` on has reached the engine: the window stops
    /// holding them (and the pages after them), and a read-ahead over them will not land.
    pub(crate) fn written(&self, page: u64, pages: u64) {
        let written = page..page + pages;
        let mut w = self.window();
        if let Some(r) = w.reading.as_mut() {
            r.stale |= r.pages.start < written.end && written.start < r.pages.end;
        }
        if written.start < w.first + w.held && w.first < written.end {
            w.held = written.start.saturating_sub(w.first);
        }
    }

    pub(crate) fn stats(&self) -> ReadaheadStats {
        self.window().stats
    }
}

impl Window {
    fn holds(&self, pages: &Range<u64>) -> bool {
        self.first <= pages.start && pages.end <= self.first + self.held
    }

    fn slot(page: u64) -> Range<usize> {
        let at = (page % WINDOW_PAGES) as usize * PAGE;
        at..at + PAGE
    }

    fn copy_out(&self, page: u64, buf: &mut [u8]) {
        for (p, out) in (page..).zip(buf.chunks_mut(PAGE)) {
            out.copy_from_slice(&self.ring[Self::slot(p)]);
        }
    }

    /// Puts a landed read-ahead's pages in the ring: after the pages held when they continue
    /// them, in their place otherwise; the oldest pages make room.
    fn take_in(&mut self, ahead: &ReadAhead) {
        let pages = ahead.pages.clone();
        if pages.start != self.first + self.held {
            self.first = pages.start;
            self.held = 0;
        }
        for (p, data) in pages.clone().zip(ahead.buf.chunks(PAGE)) {
            self.ring[Self::slot(p)].copy_from_slice(data);
        }
        self.held += pages.end - pages.start;
        let over = self.held.saturating_sub(WINDOW_PAGES);
        self.first += over;
        self.held -= over;
        self.stats.pages_read_ahead += pages.end - pages.start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Page `p` as the file holds it in version `v`.
    fn page(p: u64, v: u8) -> Vec<u8> {
        let mut data = vec![v; PAGE];
        data[..8].copy_from_slice(&p.to_le_bytes());
        data
    }

    /// Makes a read-ahead as the serving thread would, from a file whose pages are version
    /// `v`.
    fn read(ahead: &mut ReadAhead, v: u8) {
        let first = ahead.pages.start;
        for (p, out) in (first..).zip(ahead.target().chunks_mut(PAGE)) {
            out.copy_from_slice(&page(p, v));
        }
    }

    /// Swaps in `n` pages from `p` through the window; what it served, if anything.
    fn swap_in(r: &SwapReadahead, p: u64, n: u64) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; n as usize * PAGE];
        r.serve(p, &mut buf).then_some(buf)
    }

    /// A window whose stream swapped in pages 0-15 and had pages 16-79 read ahead (version 1).
    fn window_after_one_read_ahead() -> SwapReadahead {
        let r = SwapReadahead::new(1024);
        r.after_swap_in(0, 8);
        let mut ahead = r.after_swap_in(8, 8).unwrap();
        read(&mut ahead, 1);
        r.land(ahead, true);
        r
    }

    fn pages(p: u64, n: u64, v: u8) -> Vec<u8> {
        (p..p + n).flat_map(|p| page(p, v)).collect()
    }

    #[test]
    fn a_sequential_stream_is_read_ahead_and_served_from_the_window() {
        let r = SwapReadahead::new(1024);
        assert!(r.after_swap_in(0, 8).is_none(), "one swap-in is no stream");
        let mut ahead = r.after_swap_in(8, 8).expect("two in a row are");
        assert_eq!(ahead.pages, 16..16 + AHEAD_PAGES);
        assert!(r.after_swap_in(16, 8).is_none(), "one read-ahead at a time");
        read(&mut ahead, 1);
        r.land(ahead, true);
        assert_eq!(swap_in(&r, 16, 8), Some(pages(16, 8, 1)));
        assert_eq!(swap_in(&r, 20, 8), Some(pages(20, 8, 1)));
        assert_eq!(swap_in(&r, 8, 8), None, "pages before the window");
        assert_eq!(r.stats().pages_read_ahead, AHEAD_PAGES);
        assert_eq!(r.stats().pages_served, 16);
    }

    #[test]
    fn the_window_reads_on_from_what_it_holds_and_slides() {
        let r = window_after_one_read_ahead();
        let mut p = 16;
        let mut landed = 1;
        while p < 16 + 3 * AHEAD_PAGES {
            assert_eq!(swap_in(&r, p, 8), Some(pages(p, 8, 1)), "page {p}");
            if let Some(mut ahead) = r.after_swap_in(p, 8) {
                assert_eq!(ahead.pages.start, 16 + landed * AHEAD_PAGES, "reads on");
                read(&mut ahead, 1);
                r.land(ahead, true);
                landed += 1;
            }
            p += 8;
        }
        assert!(landed >= 3);
    }

    #[test]
    fn random_swap_ins_read_nothing_ahead() {
        let r = SwapReadahead::new(1024);
        for p in [100, 7, 300, 64, 900, 12] {
            assert!(r.after_swap_in(p, 8).is_none());
        }
    }

    #[test]
    fn a_swap_out_drops_its_pages_and_the_pages_after_them() {
        let r = window_after_one_read_ahead();
        r.written(40, 1);
        assert_eq!(swap_in(&r, 32, 8), Some(pages(32, 8, 1)));
        assert_eq!(swap_in(&r, 36, 8), None, "page 40 was written");
        assert_eq!(swap_in(&r, 48, 8), None, "and the window stops there");
    }

    #[test]
    fn a_read_ahead_a_swap_out_overlapped_never_lands() {
        let r = SwapReadahead::new(1024);
        r.after_swap_in(0, 8);
        let mut ahead = r.after_swap_in(8, 8).unwrap();
        r.written(20, 1);
        read(&mut ahead, 1);
        r.land(ahead, true);
        assert_eq!(swap_in(&r, 16, 8), None);
        assert_eq!(r.stats().pages_read_ahead, 0);
        // A swap-out elsewhere spoils nothing.
        let mut ahead = r.after_swap_in(16, 8).unwrap();
        r.written(500, 1);
        read(&mut ahead, 2);
        r.land(ahead, true);
        assert_eq!(swap_in(&r, 24, 8), Some(pages(24, 8, 2)));
    }

    #[test]
    fn a_failed_read_ahead_serves_nothing_and_the_next_one_goes() {
        let r = SwapReadahead::new(1024);
        r.after_swap_in(0, 8);
        let ahead = r.after_swap_in(8, 8).unwrap();
        r.land(ahead, false);
        assert_eq!(swap_in(&r, 16, 8), None);
        assert!(r.after_swap_in(16, 8).is_some());
    }

    #[test]
    fn a_read_ahead_that_never_lands_holds_a_swap_in_up_for_a_while_only() {
        let r = SwapReadahead::new(1024);
        r.after_swap_in(0, 8);
        let _never_landed = r.after_swap_in(8, 8).unwrap();
        let asked = Instant::now();
        assert_eq!(swap_in(&r, 16, 8), None);
        assert!(asked.elapsed() >= MAX_WAIT);
    }

    #[test]
    fn reads_ahead_stop_at_the_end_of_the_file() {
        let r = SwapReadahead::new(40);
        r.after_swap_in(0, 8);
        let ahead = r.after_swap_in(8, 8).unwrap();
        assert_eq!(ahead.pages, 16..40);
        r.land(ahead, true);
        r.after_swap_in(32, 8);
        assert!(r.after_swap_in(40, 8).is_none());
    }

    #[test]
    fn a_swap_in_waits_for_the_read_ahead_that_covers_it() {
        let r = std::sync::Arc::new(SwapReadahead::new(1024));
        r.after_swap_in(0, 8);
        let mut ahead = r.after_swap_in(8, 8).unwrap();
        let waiter = {
            let r = r.clone();
            std::thread::spawn(move || swap_in(&r, 16, 8))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        read(&mut ahead, 3);
        r.land(ahead, true);
        assert_eq!(waiter.join().unwrap(), Some(pages(16, 8, 3)));
    }
}
