//! Write-behind for writeback: the dirty chunks of a new extent are written to the device on
//! background threads while the engine goes on (the caller's next writes fill new chunks
//! meanwhile). Up to `DEPTH` writes are pending at once, each on one of `DEPTH` threads started
//! at the first write and kept until the filesystem closes (a thread per write cost more than
//! a small write itself). Everything that reads the device or commits waits for them first (`settle`),
//! so no one sees blocks before they are written; space freed meanwhile stays pinned until the
//! commit, so none is reused under a write. A failed write surfaces as an error there and at
//! every settle after it (and stops the filesystem).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::device::BlockDevice;
use crate::error::{Errno, Error, Result};
use crate::fs::common::DirtyRange;
use crate::fs::data::cache::ChunkPool;

/// Writes pending at once, and threads writing them: two on the device together.
const DEPTH: usize = 2;

/// One write: `pieces` back to back at device offset `physical`.
struct Job {
    device: Arc<dyn BlockDevice>,
    physical: u64,
    pieces: Vec<DirtyRange>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Jobs queued or being written.
    pending: usize,
    /// The first failed write, reported by every settle after it: whoever consumed it first,
    /// nothing can commit past it.
    failed: Option<Error>,
    closing: bool,
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
            queue = self.queue();
            queue.pending -= 1;
            if let Err(e) = written {
                queue.failed.get_or_insert(e);
            }
            self.changed.notify_all();
        }
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
    /// `DEPTH` writes are pending; the error of an earlier write that failed, instead.
    pub fn write_behind(
        &self,
        device: &Arc<dyn BlockDevice>,
        physical: u64,
        pieces: Vec<DirtyRange>,
    ) -> Result<()> {
        self.start()?;
        let mut queue = self.shared.queue();
        while queue.pending >= DEPTH {
            queue = self.shared.wait(queue);
        }
        if let Some(failed) = &queue.failed {
            return Err(failed.clone());
        }
        queue.jobs.push_back(Job {
            device: device.clone(),
            physical,
            pieces,
        });
        queue.pending += 1;
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Waits for every pending write; the first error, if one ever failed.
    pub fn settle(&self) -> Result<()> {
        let mut queue = self.shared.queue();
        while queue.pending > 0 {
            queue = self.shared.wait(queue);
        }
        queue.failed.clone().map_or(Ok(()), Err)
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
