//! Eviction: keeping resident memory within the budget. Victims are chosen use-once pages
//! first (those a sequential stream has gone past), then in clock order with a second chance
//! for pages written since; dirty victims are copied out and written to swap by the writeback
//! thread, so no fault waits for a swap write.

use std::io;
use std::sync::{MutexGuard, Weak};

use cowfs::device::AlignedBuf;
use swap::Slot;

use super::state::{State, Writeback};
use super::{swap_io, Inner, PAGE};

impl Inner {
    /// Makes room for `pages` more within the budget and holds it for them: evicts batches
    /// until resident and held pages leave room (or nothing more can go). An eviction needs a
    /// buffer for its dirty pages; when all are being written, it waits for one (the lock let
    /// go meanwhile), which is how faults keep pace with swap-out. Over the budget rather than
    /// stuck when swap-out fails.
    pub(super) fn reserve<'a>(
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
    pub(super) fn evict(&self, state: &mut State, mut buf: AlignedBuf) -> bool {
        let victims = pick_victims(state, self.config.evict_batch.max(1), self.stream_keep);
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
                tracing::error!("swap-out: {e}");
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

    /// A writeback thread: writes evicted dirty pages, one batch at a time, so no fault
    /// waits for a swap write; the threads take batches in turn, each write to its own slots. Until the pager and its regions are gone (it holds the pager
    /// only while awake, as the fault threads do).
    pub(super) fn write_back(pager: Weak<Inner>) {
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

    /// Write-protects the dirty victims, copies them into `buf` and allocates their slots.
    pub(super) fn prepare_write(
        &self,
        dirty: &[(usize, usize)],
        buf: &mut [u8],
    ) -> io::Result<Vec<Slot>> {
        if dirty.is_empty() {
            return Ok(Vec::new());
        }
        for (address, len) in address_runs(dirty) {
            self.uffd.write_protect(address, len, true)?;
        }
        for (n, &(base, index)) in dirty.iter().enumerate() {
            let page = (base + index * PAGE) as *const u8;
            let to = &mut buf[n * PAGE..(n + 1) * PAGE];
            // A raw copy, not a `&[u8]` over the page: its owner may hold a `&mut` to it (the
            // region's memory is theirs), and a shared reference beside it would be undefined
            // behaviour even though the write protection keeps the bytes still.
            // SAFETY: the page is mapped (a resident page of a live region), write-protected so
            // no write lands during the copy, and `to` is PAGE bytes of our own buffer.
            unsafe { std::ptr::copy_nonoverlapping(page, to.as_mut_ptr(), PAGE) };
        }
        self.swap().allocate(dirty.len()).map_err(swap_io)
    }

    /// Records the write of evicted dirty pages: each gets its slot, and the faults waiting on
    /// them retry. When it failed, the pages go back in from the buffer, dirty, as they were.
    pub(super) fn settle_write(&self, state: &mut State, batch: Writeback, result: io::Result<()>) {
        if let Err(e) = &result {
            tracing::error!("swap-out: {e}");
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

/// A batch of victims: first use-once pages a sequential stream has gone past (oldest
/// first, leaving the stream the windows it is still in), then the clock's, and only
/// when those run out, the stream's own.
pub(super) fn pick_victims(state: &mut State, want: usize, keep: usize) -> Vec<(usize, usize)> {
    let mut victims = Vec::with_capacity(want);
    let State {
        regions,
        clock,
        streamed,
        ..
    } = state;
    while victims.len() < want && streamed.len() > keep {
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

/// Gives pages back to the kernel: the next access faults as missing.
pub(super) fn drop_pages(address: usize, len: usize) {
    // SAFETY: the pages lie inside a region this pager mapped.
    unsafe { libc::madvise(address as *mut libc::c_void, len, libc::MADV_DONTNEED) };
}

/// The pages as (address, length) ranges of adjacent pages, so one call serves each range.
pub(super) fn address_runs(pages: &[(usize, usize)]) -> Vec<(usize, usize)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: usize = 1 << 30;

    /// A region whose pages `resident` are resident, in the clock in that order.
    fn resident(resident: &[usize]) -> State {
        let mut state = State::new(1000, Vec::new());
        state.add_region(BASE, 100);
        for &i in resident {
            state.regions.get_mut(&BASE).unwrap().pages[i].resident = true;
            state.clock.push_back((BASE, i));
        }
        state
    }

    fn page(state: &mut State, i: usize) -> &mut super::super::state::PageState {
        &mut state.regions.get_mut(&BASE).unwrap().pages[i]
    }

    #[test]
    fn the_clock_gives_pages_written_since_a_second_chance() {
        let mut state = resident(&[1, 2, 3, 4]);
        page(&mut state, 1).referenced = true;
        assert_eq!(pick_victims(&mut state, 2, 0), [(BASE, 2), (BASE, 3)]);
        assert!(!page(&mut state, 1).referenced, "its chance is used");
        assert_eq!(pick_victims(&mut state, 2, 0), [(BASE, 4), (BASE, 1)]);
    }

    #[test]
    fn use_once_pages_go_first_but_the_stream_keeps_its_windows() {
        let mut state = resident(&[1, 2]);
        for i in 10..16 {
            page(&mut state, i).resident = true;
            state.streamed.push_back((BASE, i));
        }
        page(&mut state, 11).dirty = true;
        let victims = pick_victims(&mut state, 3, 2);
        assert_eq!(
            victims,
            [(BASE, 10), (BASE, 12), (BASE, 13)],
            "the written one is no use-once page"
        );
        assert!(state.clock.contains(&(BASE, 11)), "it joins the clock");
        assert_eq!(state.streamed.len(), 2, "the windows the stream is in stay");
        assert_eq!(
            pick_victims(&mut state, 3, 2),
            [(BASE, 1), (BASE, 2), (BASE, 11)]
        );
        assert_eq!(
            pick_victims(&mut state, 3, 2),
            [(BASE, 14), (BASE, 15)],
            "the stream's own pages, last"
        );
    }

    #[test]
    fn pages_no_longer_resident_are_skipped() {
        let mut state = resident(&[1, 2, 3]);
        page(&mut state, 2).resident = false;
        assert_eq!(pick_victims(&mut state, 5, 0), [(BASE, 1), (BASE, 3)]);
    }

    #[test]
    fn address_runs_join_adjacent_pages_in_address_order() {
        let pages = [(BASE, 3), (BASE, 1), (BASE, 2), (BASE, 7)];
        assert_eq!(
            address_runs(&pages),
            [(BASE + PAGE, 3 * PAGE), (BASE + 7 * PAGE, PAGE)]
        );
    }
}
