//! Write-behind for writeback: the dirty chunks of a new extent are written to the device on a
//! background thread while the engine goes on (the caller's next writes fill new chunks
//! meanwhile). One write is in flight at a time. Everything that reads the device or commits
//! waits for it first (`settle`), so no one sees blocks before they are written; space freed
//! meanwhile stays pinned until the commit, so none is reused under a write. A failed write
//! surfaces as an error there (and latches the filesystem, as any I/O error does).

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::cache::{ChunkPool, Piece};
use crate::device::BlockDevice;
use crate::error::{Errno, Error, Result};

type Inflight = JoinHandle<(Vec<Piece>, std::io::Result<()>)>;

#[derive(Debug, Default)]
pub struct WriteBehind {
    inflight: Mutex<Option<Inflight>>,
    /// Where written chunks go back to.
    pool: ChunkPool,
}

impl WriteBehind {
    pub fn new(pool: ChunkPool) -> Self {
        WriteBehind {
            inflight: Mutex::new(None),
            pool,
        }
    }

    /// Starts writing `pieces` back to back at device offset `physical`, after the previous
    /// write has settled.
    pub fn write_behind(
        &self,
        device: &Arc<dyn BlockDevice>,
        physical: u64,
        pieces: Vec<Piece>,
    ) -> Result<()> {
        self.settle()?;
        let device = device.clone();
        let handle = std::thread::Builder::new()
            .name("cowfs-writeback".into())
            .spawn(move || {
                let slices: Vec<&[u8]> = pieces.iter().map(Piece::bytes).collect();
                let written = device.write_vectored_at(physical, &slices);
                (pieces, written)
            })
            .map_err(|e| Error::io("start a writeback thread", &e))?;
        *self.inflight.lock().unwrap() = Some(handle);
        Ok(())
    }

    /// Waits for the write in flight, if any; its error, if it failed.
    pub fn settle(&self) -> Result<()> {
        let Some(handle) = self.inflight.lock().unwrap().take() else {
            return Ok(());
        };
        let (pieces, written) = handle
            .join()
            .map_err(|_| Error::new(Errno::IO, "the writeback thread panicked"))?;
        for piece in pieces {
            self.pool.put(piece.buf);
        }
        written.map_err(|e| Error::io("data writeback", &e))
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        let _ = self.settle();
    }
}
