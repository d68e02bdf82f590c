//! Write-behind for writeback: the dirty chunks of a new extent are written to the device on a
//! background thread while the engine goes on (the caller's next writes fill new chunks
//! meanwhile). Up to `DEPTH` writes are in flight. Everything that reads the device or commits
//! waits for them first (`settle`), so no one sees blocks before they are written; space freed
//! meanwhile stays pinned until the commit, so none is reused under a write. A failed write
//! surfaces as an error there and at every settle after it (and stops the filesystem).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::device::BlockDevice;
use crate::error::{Errno, Error, Result};
use crate::fs::common::DirtyRange;
use crate::fs::data::cache::ChunkPool;

type Inflight = JoinHandle<(Vec<DirtyRange>, std::io::Result<()>)>;

/// Writes in flight at once: one on the device while the next is queued behind it.
const DEPTH: usize = 2;

#[derive(Debug, Default)]
pub struct WriteBehind {
    inflight: Mutex<VecDeque<Inflight>>,
    /// The first failed write, reported by every settle after it: whoever consumed it first,
    /// nothing can commit past it.
    failed: Mutex<Option<Error>>,
    /// Where written chunks go back to.
    pool: ChunkPool,
}

impl WriteBehind {
    pub fn new(pool: ChunkPool) -> Self {
        WriteBehind {
            inflight: Mutex::new(VecDeque::new()),
            failed: Mutex::new(None),
            pool,
        }
    }

    /// Starts writing `pieces` back to back at device offset `physical`, once fewer than
    /// `DEPTH` writes are in flight.
    pub fn write_behind(
        &self,
        device: &Arc<dyn BlockDevice>,
        physical: u64,
        pieces: Vec<DirtyRange>,
    ) -> Result<()> {
        while self.inflight.lock().unwrap().len() >= DEPTH {
            self.finish_oldest()?;
        }
        let device = device.clone();
        let handle = std::thread::Builder::new()
            .name("cowfs-writeback".into())
            .spawn(move || {
                let slices: Vec<&[u8]> = pieces.iter().map(DirtyRange::bytes).collect();
                let written = device.write_vectored_at(physical, &slices);
                (pieces, written)
            })
            .map_err(|e| Error::io("start a writeback thread", &e))?;
        self.inflight.lock().unwrap().push_back(handle);
        Ok(())
    }

    /// Waits for every write in flight; the first error, if one ever failed.
    pub fn settle(&self) -> Result<()> {
        while !self.inflight.lock().unwrap().is_empty() {
            let _ = self.finish_oldest();
        }
        self.failed.lock().unwrap().clone().map_or(Ok(()), Err)
    }

    fn finish_oldest(&self) -> Result<()> {
        let Some(handle) = self.inflight.lock().unwrap().pop_front() else {
            return Ok(());
        };
        let (pieces, written) = handle
            .join()
            .map_err(|_| Error::new(Errno::IO, "the writeback thread panicked"))?;
        for piece in pieces {
            self.pool.put(piece.buf);
        }
        written.map_err(|e| {
            let e = Error::device_write("data writeback", &e);
            self.failed.lock().unwrap().get_or_insert(e).clone()
        })
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        let _ = self.settle();
    }
}
