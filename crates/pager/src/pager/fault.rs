//! Serving faults: the fault threads' loop (or the faulting thread itself, in-thread mode),
//! a missing page brought in with what prefetch adds (read without the lock, room made within
//! the budget, installed with one copy), and a first write to a clean page.

use std::io;
use std::sync::{MutexGuard, Weak};
use std::time::Instant;

use cowfs::device::AlignedBuf;

use super::prefetch::{catch_up, plan, plan_ahead, plan_strided, READ_AHEAD};
use super::state::{Fetch, State};
use super::{swap_io, Inner, PageBuf, COPY_ATTEMPTS, PAGE};
use crate::uffd::{self, Message};

impl Inner {
    /// A fault loop, with its own buffer for the pages it reads: until the pager is dropped.
    /// A fault thread: serves faults until the pager and all its regions are gone (it holds
    /// the pager only while it handles one batch, so the last owner can let it go).
    pub(super) fn serve(pager: Weak<Inner>, mut buf: AlignedBuf) {
        let mut messages = [Message::default(); 16];
        while let Some(inner) = pager.upgrade() {
            let n = match inner.uffd.read(&mut messages, 50) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!("reading faults: {e}");
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

    pub(super) fn fault(&self, buf: &mut [u8], address: usize, flags: u64) {
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
            // Another thread is reading it in: its copy wakes this access too. A stream that
            // caught up with its read-ahead has this thread read on meanwhile, where the
            // budget holds the stream's windows twice over: with less, a window read early
            // pushes out one the stream has yet to use, and the stream starts over.
            let window = self.config.window_pages();
            let room = (READ_AHEAD + 2) * window <= self.budget_pages / 2;
            if room && catch_up(&mut state, base, index, window) {
                drop(self.read_ahead(state, base, buf));
            }
            return;
        }
        let write = flags & uffd::PAGEFAULT_FLAG_WRITE != 0;
        let sequential = region.stream.window > 0 && index == region.stream.next;
        let plan = plan(&mut state, (base, index), write, self.config.window_pages());
        let strided = plan_strided(&mut state, base, index, sequential);
        // The fault's own pages, then, for a stream reading swap at full speed, the next
        // windows too, read while the program goes through the one it was just given; or
        // what a strided stream fetches ahead.
        let came_in;
        (state, came_in) = self.bring_in(state, &plan, buf);
        if write {
            self.first_write(&mut state, base, index);
        }
        let whole_window = plan.run == self.config.window_pages() && !plan.slots.is_empty();
        if came_in && whole_window {
            state = self.read_ahead(state, base, buf);
        }
        for fetch in strided {
            (state, _) = self.bring_in(state, &fetch, buf);
        }
    }

    /// Reads a sequential stream's next windows, as far ahead of its last fault as
    /// `plan_ahead` lets it.
    fn read_ahead<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        base: usize,
        buf: &mut [u8],
    ) -> MutexGuard<'a, State> {
        let window = self.config.window_pages();
        while let Some(fetch) = plan_ahead(&mut state, base, window) {
            let came_in;
            (state, came_in) = self.bring_in(state, &fetch, buf);
            if !came_in {
                break;
            }
        }
        state
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
        let max = self.config.window_pages().min(cap);
        let plan = plan(&mut state, (base, index), write, max);
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
    pub(super) fn first_write(&self, state: &mut State, base: usize, index: usize) {
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
    /// Brings a fetch's pages in: reads them (the lock let go), makes room for them within the
    /// budget, installs them (the lock let go again) and records them. True when they came in.
    pub(super) fn bring_in<'a>(
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
    pub(super) fn read_in(&self, plan: &Fetch, buf: &mut [u8]) -> io::Result<()> {
        if plan.slots.is_empty() {
            buf.fill(0);
            return Ok(());
        }
        self.swap().read(&plan.slots, buf).map_err(swap_io)
    }

    /// Records a fetch: its pages resident, or, when it failed, the faulting page poisoned
    /// (its access gets SIGBUS) and the others woken to fault again.
    pub(super) fn settle(&self, state: &mut State, plan: &Fetch, result: io::Result<()>) {
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
                tracing::error!(region = plan.base, page = plan.index, "swap-in: {e}");
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
    pub(super) fn install(&self, address: usize, data: &[u8], writable: bool) -> io::Result<()> {
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
    pub(super) fn copy(&self, address: usize, data: &[u8], writable: bool) -> io::Result<()> {
        for _ in 0..COPY_ATTEMPTS {
            match self.uffd.copy(address, data, writable) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => std::thread::yield_now(),
                other => return other,
            }
        }
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    }
}
