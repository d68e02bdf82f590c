//! Write-behind for writeback: the dirty chunks of a new extent are checksummed and written to
//! the device on a background thread while the engine goes on (the caller's next writes fill
//! new chunks meanwhile). One write is in flight at a time. `settle` waits for it and records
//! its checksums in the running transaction; everything that reads the device, looks up
//! checksums, frees extents or commits settles first, so no one sees blocks before they are
//! written or an extent without its checksums. A failed write surfaces as an error there (and
//! latches the filesystem, as any I/O error does).

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::cache::{ChunkPool, Piece};
use super::data::checksum_blocks;
use crate::device::BlockDevice;
use crate::error::{Errno, Error, Result};
use crate::format::{encode_checksums, key1, table};
use crate::meta::Meta;

struct Written {
    pieces: Vec<Piece>,
    checksums: Vec<u32>,
    result: std::io::Result<()>,
}

/// The write in flight: its extent's logical address and the thread writing it.
type Inflight = (u64, JoinHandle<Written>);

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

    /// Starts checksumming and writing `pieces` (back to back) as the extent at `logical`,
    /// device offset `physical`, after the previous write has settled.
    pub fn write_behind(
        &self,
        meta: Meta<'_>,
        device: &Arc<dyn BlockDevice>,
        logical: u64,
        physical: u64,
        pieces: Vec<Piece>,
    ) -> Result<()> {
        self.settle(meta)?;
        let device = device.clone();
        let handle = std::thread::Builder::new()
            .name("cowfs-writeback".into())
            .spawn(move || {
                let checksums = pieces
                    .iter()
                    .flat_map(|p| checksum_blocks(p.bytes()))
                    .collect();
                let slices: Vec<&[u8]> = pieces.iter().map(Piece::bytes).collect();
                let result = device.write_vectored_at(physical, &slices);
                Written {
                    pieces,
                    checksums,
                    result,
                }
            })
            .map_err(|e| Error::io("start a writeback thread", &e))?;
        *self.inflight.lock().unwrap() = Some((logical, handle));
        Ok(())
    }

    /// Waits for the write in flight, if any, and records its checksums; its error, if it
    /// failed.
    pub fn settle(&self, meta: Meta<'_>) -> Result<()> {
        let Some((logical, handle)) = self.inflight.lock().unwrap().take() else {
            return Ok(());
        };
        let written = handle
            .join()
            .map_err(|_| Error::new(Errno::IO, "the writeback thread panicked"))?;
        for piece in written.pieces {
            self.pool.put(piece.buf);
        }
        written
            .result
            .map_err(|e| Error::io("data writeback", &e))?;
        meta.put(
            table::CHECKSUMS,
            &key1(logical),
            &encode_checksums(&written.checksums),
        )
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        if let Some((_, handle)) = self.inflight.get_mut().unwrap().take() {
            let _ = handle.join();
        }
    }
}

impl std::fmt::Debug for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Written")
    }
}
