//! Writes the engine has handed off: the dirty chunks of a new extent written on background
//! threads while the engine goes on (write-behind), and direct writes made by the caller
//! after the engine's lock is let go (`WriteTicket`). Up to `DEPTH` write-behind writes are
//! under way at once, each on one of `DEPTH` threads started at the first write and kept until
//! the filesystem closes (a thread per write cost more than a small write itself), and one
//! shorter than a full extent may wait behind them, taking in the writes that continue it on
//! the device (a random writer's scattered pages, written back side by side, go out as one
//! write). Every
//! pending write's device range is known: a read or an overwrite of a range waits for the
//! writes that overlap it (`settle_range`), a commit for all of them (`settle`), so no one
//! sees blocks before they are written; space freed meanwhile stays pinned until the commit,
//! so none is reused under a write. A failed write surfaces as an error there and at every
//! settle after it (and stops the filesystem).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::device::BlockDevice;
use crate::error::{Errno, Error, Result};
use crate::fs::common::DirtyRange;
use crate::fs::data::cache::ChunkPool;

/// Writes pending at once, and threads writing them: two on the device together.
const DEPTH: usize = 2;

/// Writes waiting behind those being written: the last one takes in the writes that continue
/// it, up to `MAX_JOINED` bytes (so only a shorter write may wait there).
const WAITING: usize = 1;
const MAX_JOINED: u64 = 16 << 20;

/// One write: `pieces` back to back at device offset `physical`, `len` bytes in all.
struct Job {
    id: u64,
    device: Arc<dyn BlockDevice>,
    physical: u64,
    len: u64,
    pieces: Vec<DirtyRange>,
}

impl Job {
    /// Whether a write of `len` bytes at `physical` on `device` continues this one, and may
    /// join it.
    fn continued_by(&self, device: &Arc<dyn BlockDevice>, physical: u64, len: u64) -> bool {
        Arc::ptr_eq(&self.device, device)
            && self.physical + self.len == physical
            && self.len + len <= MAX_JOINED
    }
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// The device range of every write queued or being written (jobs and tickets), by id.
    pending: BTreeMap<u64, Range<u64>>,
    next_id: u64,
    /// Jobs queued or being written.
    behind: usize,
    /// The first failed write, reported by every settle after it: whoever consumed it first,
    /// nothing can commit past it.
    failed: Option<Error>,
    closing: bool,
}

impl Queue {
    /// Adds a write of `pieces` (`len` bytes at `physical` on `device`) to the last job still
    /// waiting, if it continues that job; whether it did.
    fn join_last(
        &mut self,
        device: &Arc<dyn BlockDevice>,
        physical: u64,
        len: u64,
        pieces: &[DirtyRange],
    ) -> bool {
        let Some(job) = self.jobs.back_mut() else {
            return false;
        };
        if !job.continued_by(device, physical, len) {
            return false;
        }
        job.len += len;
        job.pieces.extend_from_slice(pieces);
        if let Some(range) = self.pending.get_mut(&job.id) {
            range.end += len;
        }
        true
    }
}

/// What the engine and the writing thread share.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a job is queued, finishes, or the writer closes.
    changed: Condvar,
    /// Where written chunks go back to.
    pool: ChunkPool,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.changed.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    /// A writing thread: takes jobs in order until the writer closes.
    fn serve(&self) {
        let mut queue = self.queue();
        loop {
            let Some(job) = queue.jobs.pop_front() else {
                if queue.closing {
                    return;
                }
                queue = self.wait(queue);
                continue;
            };
            drop(queue);
            // A panic in a device's write is a failed write, never a settle waiting forever.
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let slices: Vec<&[u8]> = job.pieces.iter().map(DirtyRange::bytes).collect();
                job.device
                    .write_vectored_at(job.physical, &slices)
                    .map_err(|e| Error::device_write("data writeback", &e))
            }))
            .unwrap_or_else(|_| Err(Error::new(Errno::IO, "a data writeback panicked")));
            for piece in job.pieces {
                self.pool.put(piece.buf);
            }
            self.finish(job.id, written, true);
            queue = self.queue();
        }
    }

    /// Registers a write of device range `range` as pending; its id.
    fn begin(queue: &mut Queue, range: Range<u64>) -> u64 {
        let id = queue.next_id;
        queue.next_id += 1;
        queue.pending.insert(id, range);
        id
    }

    /// Marks write `id` (a write-behind job's, when `behind`) done, and latches its error.
    fn finish(&self, id: u64, result: Result<()>, behind: bool) {
        let mut queue = self.queue();
        queue.pending.remove(&id);
        queue.behind -= usize::from(behind);
        if let Err(e) = result {
            queue.failed.get_or_insert(e);
        }
        self.changed.notify_all();
    }

    /// Waits until no pending write matches `overlaps`; the first error, if one ever failed.
    fn settle_where(&self, overlaps: impl Fn(&Range<u64>) -> bool) -> Result<()> {
        let mut queue = self.queue();
        while queue.pending.values().any(&overlaps) {
            queue = self.wait(queue);
        }
        queue.failed.clone().map_or(Ok(()), Err)
    }
}

/// A direct write the engine has recorded (its extent, its checksums) and left to the caller
/// to make on the device after the engine's lock is let go: `len` bytes of the caller's data,
/// from file offset `file_offset`, at device offset `physical`. Until it is finished, reads and
/// overwrites of its range, and commits, wait for it; dropped unfinished, it counts as failed.
#[must_use = "a recorded write must be made on the device"]
pub struct WriteTicket {
    shared: Arc<Shared>,
    id: u64,
    pub physical: u64,
    pub file_offset: u64,
    pub len: usize,
    finished: bool,
}

impl WriteTicket {
    /// Makes the write from `data` (the write's bytes for this ticket) on `device`.
    pub fn write(mut self, device: &dyn BlockDevice, data: &[u8]) -> Result<()> {
        let written = device
            .write_at(self.physical, data)
            .map_err(|e| Error::device_write("data write", &e));
        self.finished = true;
        self.shared.finish(self.id, written.clone(), false);
        written
    }
}

impl Drop for WriteTicket {
    fn drop(&mut self) {
        if !self.finished {
            let lost = Error::new(Errno::IO, "a recorded data write was never made");
            self.shared.finish(self.id, Err(lost), false);
        }
    }
}

impl std::fmt::Debug for WriteTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteTicket({} bytes at {})", self.len, self.physical)
    }
}

pub struct WriteBehind {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for WriteBehind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteBehind")
    }
}

impl WriteBehind {
    pub fn new(pool: ChunkPool) -> Self {
        WriteBehind {
            shared: Arc::new(Shared {
                pool,
                ..Shared::default()
            }),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Queues writing `pieces` back to back at device offset `physical`, once fewer than
    /// `DEPTH + WAITING` writes are pending; the error of an earlier write that failed,
    /// instead. A write that continues the last one still waiting joins it: scattered dirty
    /// pages written back to space allocated side by side (random writes) then reach the
    /// device in a few large writes instead of one each.
    pub fn write_behind(
        &self,
        device: &Arc<dyn BlockDevice>,
        physical: u64,
        pieces: Vec<DirtyRange>,
    ) -> Result<()> {
        self.start()?;
        let len = pieces.iter().map(|p| p.range.len() as u64).sum();
        let mut queue = self.shared.queue();
        loop {
            if let Some(failed) = &queue.failed {
                return Err(failed.clone());
            }
            if queue.join_last(device, physical, len, &pieces) {
                return Ok(());
            }
            // Only a write that may gather others takes the waiting place: a full-sized one
            // (sequential writeback) waits for a writing thread, holding no more memory.
            let room = if len < MAX_JOINED {
                DEPTH + WAITING
            } else {
                DEPTH
            };
            if queue.behind < room {
                break;
            }
            queue = self.shared.wait(queue);
        }
        let id = Shared::begin(&mut queue, physical..physical + len);
        queue.behind += 1;
        queue.jobs.push_back(Job {
            id,
            device: device.clone(),
            physical,
            len,
            pieces,
        });
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Registers a direct write of `len` bytes at device offset `physical` (file offset
    /// `file_offset`) for the caller to make; the error of an earlier write that failed,
    /// instead.
    pub fn ticket(&self, physical: u64, file_offset: u64, len: usize) -> Result<WriteTicket> {
        let mut queue = self.shared.queue();
        if let Some(failed) = &queue.failed {
            return Err(failed.clone());
        }
        let id = Shared::begin(&mut queue, physical..physical + len as u64);
        Ok(WriteTicket {
            shared: self.shared.clone(),
            id,
            physical,
            file_offset,
            len,
            finished: false,
        })
    }

    /// Waits for every pending write; the first error, if one ever failed.
    pub fn settle(&self) -> Result<()> {
        self.shared.settle_where(|_| true)
    }

    /// Waits for the pending writes that overlap device range `range`; the first error, if
    /// one ever failed.
    pub fn settle_range(&self, range: Range<u64>) -> Result<()> {
        self.shared
            .settle_where(|r| r.start < range.end && range.start < r.end)
    }

    /// Starts the writing threads, unless they run.
    fn start(&self) -> Result<()> {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        while threads.len() < DEPTH {
            let shared = self.shared.clone();
            let handle = std::thread::Builder::new()
                .name("cowfs-writeback".into())
                .spawn(move || shared.serve())
                .map_err(|e| Error::io("start a writeback thread", &e))?;
            threads.push(handle);
        }
        Ok(())
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        let _ = self.settle();
        self.shared.queue().closing = true;
        self.shared.changed.notify_all();
        let threads = self.threads.get_mut().unwrap_or_else(|p| p.into_inner());
        for handle in threads.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{FaultyDevice, MemoryDevice};
    use std::time::Duration;

    const BLOCK: usize = 4096;

    #[test]
    fn a_ticket_holds_back_only_the_reads_of_its_range_until_it_is_written() {
        let writer = WriteBehind::new(ChunkPool::default());
        let device: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(1 << 20));
        let ticket = writer.ticket(8 * BLOCK as u64, 0, BLOCK).unwrap();
        // Another range is free to go.
        writer.settle_range(0..8 * BLOCK as u64).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                writer.settle_range(8 * BLOCK as u64 + 100..8 * BLOCK as u64 + 200)?;
                let mut back = vec![0; BLOCK];
                device.read_at(8 * BLOCK as u64, &mut back).unwrap();
                Ok::<_, Error>(back)
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !waiter.is_finished(),
                "a read of the range waits for the write"
            );
            ticket.write(&*device, &[7; BLOCK]).unwrap();
            assert_eq!(waiter.join().unwrap().unwrap(), vec![7; BLOCK]);
        });
        writer.settle().unwrap();
    }

    /// A device whose writes wait until it is opened, counting the writes it was asked for.
    #[derive(Debug)]
    struct HeldDevice {
        inner: MemoryDevice,
        open: Mutex<bool>,
        opened: Condvar,
        writes: Mutex<usize>,
    }

    impl HeldDevice {
        fn new() -> Self {
            HeldDevice {
                inner: MemoryDevice::new(1 << 20),
                open: Mutex::new(false),
                opened: Condvar::new(),
                writes: Mutex::new(0),
            }
        }

        fn let_go(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }
    }

    impl BlockDevice for HeldDevice {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            self.inner.read_at(offset, buf)
        }
        fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            *self.writes.lock().unwrap() += 1;
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
            drop(open);
            self.inner.write_at(offset, data)
        }
        fn write_vectored_at(&self, offset: u64, bufs: &[&[u8]]) -> std::io::Result<()> {
            let joined: Vec<u8> = bufs.concat();
            self.write_at(offset, &joined)
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn len(&self) -> u64 {
            self.inner.len()
        }
        fn resize(&self, _len: u64) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn page(byte: u8) -> Vec<DirtyRange> {
        let mut buf = crate::device::AlignedBuf::zeroed(BLOCK);
        buf.fill(byte);
        vec![DirtyRange {
            buf: Arc::new(buf),
            range: 0..BLOCK,
        }]
    }

    #[test]
    fn writes_that_continue_a_waiting_write_join_it() {
        let held = Arc::new(HeldDevice::new());
        let device: Arc<dyn BlockDevice> = held.clone();
        let writer = WriteBehind::new(ChunkPool::default());
        let at = |n: u64| n * BLOCK as u64;
        // Two writes taken by the two writing threads, held on the device.
        writer.write_behind(&device, at(0), page(1)).unwrap();
        writer.write_behind(&device, at(10), page(2)).unwrap();
        while *held.writes.lock().unwrap() < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // One waiting, then two that continue it and one that does not.
        writer.write_behind(&device, at(20), page(3)).unwrap();
        writer.write_behind(&device, at(21), page(4)).unwrap();
        writer.write_behind(&device, at(22), page(5)).unwrap();
        std::thread::scope(|s| {
            let apart = s.spawn(|| writer.write_behind(&device, at(30), page(6)));
            std::thread::sleep(Duration::from_millis(50));
            assert!(!apart.is_finished(), "a write apart waits its turn");
            held.let_go();
            apart.join().unwrap().unwrap();
        });
        writer.settle().unwrap();
        assert_eq!(*held.writes.lock().unwrap(), 4, "20-22 went as one write");
        for (n, byte) in [(0, 1), (10, 2), (20, 3), (21, 4), (22, 5), (30, 6)] {
            let mut back = vec![0; BLOCK];
            device.read_at(at(n), &mut back).unwrap();
            assert_eq!(back, vec![byte; BLOCK], "block {n}");
        }
    }

    #[test]
    fn a_failed_or_forgotten_ticket_fails_every_settle_after_it() {
        let device = FaultyDevice::new(Arc::new(MemoryDevice::new(1 << 20)));
        device.fail_writes_after_with(0, rustix::io::Errno::NOSPC);
        let writer = WriteBehind::new(ChunkPool::default());
        let ticket = writer.ticket(0, 0, BLOCK).unwrap();
        let err = ticket.write(&device, &[1; BLOCK]).unwrap_err();
        assert_eq!(err.errno(), Errno::NOSPC);
        assert_eq!(writer.settle().unwrap_err().errno(), Errno::NOSPC);
        assert!(writer.ticket(BLOCK as u64, 0, BLOCK).is_err());

        let writer = WriteBehind::new(ChunkPool::default());
        drop(writer.ticket(0, 0, BLOCK).unwrap());
        assert!(writer.settle_range(0..BLOCK as u64).is_err());
    }
}
