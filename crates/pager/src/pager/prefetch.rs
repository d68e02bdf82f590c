//! Prefetch: what a fault brings in besides its page. A sequential stream gets a window
//! that doubles while the stream goes on and is read ahead of it; a strided stream (two
//! equal distances between faults) gets its next pages one by one. Plain functions over the
//! pager's state, so they are tested without userfaultfd.

use swap::Slot;

use super::state::{Fetch, PageState, State};

/// Full windows a sequential stream is read ahead of its last fault.
pub(super) const READ_AHEAD: usize = 2;
/// The most pages a strided stream fetches ahead.
const MAX_STRIDED: usize = 32;

/// Decides what a missing page's fault brings in: the page, and the pages after it a
/// sequential stream will want, all read with one call and installed with one copy; marks
/// them in flight. A stream writing into never-written memory gets its run writable and
/// dirty at once: it is about to write every page of it, and a write-protect fault per
/// page would double the faults.
pub(super) fn plan(
    state: &mut State,
    (base, index): (usize, usize),
    write: bool,
    max: usize,
) -> Fetch {
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

/// For a strided stream (the last two faults the same distance apart, not adjacent), the
/// next pages along the stride, each its own fetch, marked in flight. A fault that
/// continues a sequential stream is no stride, though its faults come a window apart.
pub(super) fn plan_strided(
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
pub(super) fn plan_ahead(state: &mut State, base: usize, window: usize) -> Option<Fetch> {
    let region = state.regions.get_mut(&base)?;
    let start = region.stream.next;
    // No further than READ_AHEAD windows past the window of the stream's last fault, even
    // when several threads read ahead of it at once: use-once eviction leaves the stream
    // that many windows, and pages read further ahead would go before they are used.
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

/// A fault on a page a sequential stream's read-ahead has in flight: the stream caught up
/// with the reads. It counts as the stream's last fault, so the thread that took it may read
/// the window after the last one read ahead while the read the stream waits on finishes:
/// two reads under way instead of one after the other.
pub(super) fn catch_up(state: &mut State, base: usize, index: usize, window: usize) -> bool {
    let Some(region) = state.regions.get_mut(&base) else {
        return false;
    };
    let stream = &mut region.stream;
    let caught_up = stream.window == window && index > stream.last && index < stream.next;
    if caught_up {
        stream.last = index;
    }
    caught_up
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

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: usize = 1 << 30;

    /// A region of `pages` pages, all in swap at consecutive slots of area 0.
    fn swapped(pages: usize) -> State {
        let mut state = State::new(pages as u64, Vec::new());
        state.add_region(BASE, pages);
        let region = state.regions.get_mut(&BASE).unwrap();
        for (i, page) in region.pages.iter_mut().enumerate() {
            page.slot = Some(Slot {
                area: 0,
                page: i as u64,
            });
        }
        state
    }

    /// Faults at `index` as the fault path does (sequential when it continues the stream),
    /// and settles the fetched pages as resident.
    fn fault(state: &mut State, index: usize, max: usize) -> Fetch {
        let fetch = plan(state, (BASE, index), false, max);
        let region = state.regions.get_mut(&BASE).unwrap();
        for page in &mut region.pages[fetch.index..fetch.index + fetch.run] {
            (page.in_flight, page.resident) = (false, true);
        }
        fetch
    }

    #[test]
    fn a_sequential_stream_doubles_its_window_up_to_the_most() {
        let mut state = swapped(1000);
        let runs: Vec<usize> = (0..6)
            .scan(0, |next, _| {
                let fetch = fault(&mut state, *next, 8);
                *next = fetch.index + fetch.run;
                Some(fetch.run)
            })
            .collect();
        assert_eq!(runs, [1, 2, 4, 8, 8, 8]);
        // Counted when the next fault shows the pages fetched ahead were used: all but the last.
        assert_eq!(state.stats.prefetch_hits, 1 + 3 + 7 + 7, "pages used ahead");
    }

    #[test]
    fn a_fault_elsewhere_starts_the_window_again() {
        let mut state = swapped(1000);
        fault(&mut state, 0, 8);
        fault(&mut state, 1, 8);
        assert_eq!(fault(&mut state, 500, 8).run, 1);
    }

    #[test]
    fn a_run_stops_at_a_resident_page_or_a_slot_out_of_order() {
        let mut state = swapped(100);
        let pages = &mut state.regions.get_mut(&BASE).unwrap().pages;
        pages[5].resident = true;
        assert_eq!(run_from(pages, 0, 64), 5);
        pages[2].slot = Some(Slot { area: 0, page: 77 });
        assert_eq!(run_from(pages, 0, 64), 2);
        assert_eq!(run_from(pages, 6, 3), 3, "no more than the window");
    }

    #[test]
    fn never_written_pages_come_in_writable_for_a_writing_stream() {
        let mut state = State::new(100, Vec::new());
        state.add_region(BASE, 100);
        let fetch = plan(&mut state, (BASE, 0), true, 8);
        assert!(fetch.writable && fetch.slots.is_empty());
        let mut swapped = swapped(100);
        assert!(
            !plan(&mut swapped, (BASE, 0), true, 8).writable,
            "a page in swap is not"
        );
    }

    #[test]
    fn a_strided_stream_fetches_its_next_pages_and_doubles() {
        let mut state = swapped(10_000);
        assert!(plan_strided(&mut state, BASE, 0, false).is_empty());
        assert!(
            plan_strided(&mut state, BASE, 10, false).is_empty(),
            "one distance"
        );
        let first: Vec<usize> = plan_strided(&mut state, BASE, 20, false)
            .iter()
            .map(|f| f.index)
            .collect();
        assert_eq!(first, [30]);
        let next: Vec<usize> = plan_strided(&mut state, BASE, 40, false)
            .iter()
            .map(|f| f.index)
            .collect();
        assert_eq!(
            next,
            [50, 60],
            "the page fetched ahead did not fault; twice as many"
        );
        assert!(
            plan_strided(&mut state, BASE, 41, true).is_empty(),
            "sequential"
        );
    }

    #[test]
    fn read_ahead_stays_within_its_windows_of_the_last_fault() {
        let mut state = swapped(1000);
        for index in [0, 1, 3] {
            fault(&mut state, index, 4);
        }
        let mut ahead = Vec::new();
        while let Some(fetch) = plan_ahead(&mut state, BASE, 4) {
            ahead.push((fetch.index, fetch.run));
        }
        assert_eq!(ahead.first(), Some(&(7, 4)), "from the stream's next page");
        let end = ahead.last().map(|(i, r)| i + r).unwrap();
        assert!(end <= 3 + (READ_AHEAD + 1) * 4 + 4, "ahead up to {end}");
    }

    #[test]
    fn a_stream_that_catches_up_with_its_read_ahead_lets_it_go_further() {
        let mut state = swapped(1000);
        for index in [0, 1, 3, 7] {
            fault(&mut state, index, 4);
        }
        state.regions.get_mut(&BASE).unwrap().stream.last = 7;
        let ahead: Vec<usize> = std::iter::from_fn(|| plan_ahead(&mut state, BASE, 4))
            .map(|f| f.index)
            .collect();
        assert_eq!(ahead, [11, 15], "two windows past the last fault's");
        assert!(!catch_up(&mut state, BASE, 5, 4), "behind the last fault");
        assert!(
            !catch_up(&mut state, BASE, 19, 4),
            "past what was read ahead"
        );
        assert!(catch_up(&mut state, BASE, 11, 4), "in a window read ahead");
        let next = plan_ahead(&mut state, BASE, 4).map(|f| f.index);
        assert_eq!(next, Some(19), "one window further");
        assert!(plan_ahead(&mut state, BASE, 4).is_none());
        let mut short = swapped(1000);
        fault(&mut short, 0, 4);
        fault(&mut short, 1, 4);
        assert!(
            !catch_up(&mut short, BASE, 2, 4),
            "a stream not yet at full windows reads nothing ahead"
        );
    }
}
