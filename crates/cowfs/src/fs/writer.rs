//! Write-behind for writeback: a dirty-page extent is copied to a staging buffer and written
//! to the device on a background thread while the engine goes on (the caller's next writes
//! fill pages meanwhile). One write is in flight at a time. Everything that reads the device
//! or commits waits for it first, so no one sees blocks before they are written, and a failed
//! write surfaces as an error there (and latches the filesystem, as any I/O error does).

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::device::{AlignedBuf, BlockDevice};
use crate::error::{Errno, Error, Result};
use crate::format::MAX_EXTENT_LEN;

type Inflight = JoinHandle<(AlignedBuf, std::io::Result<()>)>;

#[derive(Debug, Default)]
pub struct WriteBehind {
    inflight: Mutex<Option<Inflight>>,
    /// Staging buffers, kept because fresh ones page-fault on every 4 KiB.
    spare: Mutex<Vec<AlignedBuf>>,
}

impl WriteBehind {
    /// Starts writing `pieces` (back to back) at `physical`, after the previous write ends.
    pub fn write_behind(
        &self,
        device: &Arc<dyn BlockDevice>,
        physical: u64,
        pieces: &[&[u8]],
    ) -> Result<()> {
        let mut buf = self
            .spare
            .lock()
            .unwrap()
            .pop()
            .unwrap_or_else(|| AlignedBuf::zeroed(MAX_EXTENT_LEN as usize));
        let mut len = 0;
        for p in pieces {
            buf[len..len + p.len()].copy_from_slice(p);
            len += p.len();
        }
        self.settle()?;
        let device = device.clone();
        let handle = std::thread::Builder::new()
            .name("cowfs-writeback".into())
            .spawn(move || {
                let written = device.write_at(physical, &buf[..len]);
                (buf, written)
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
        let (buf, written) = handle
            .join()
            .map_err(|_| Error::new(Errno::IO, "the writeback thread panicked"))?;
        let mut spare = self.spare.lock().unwrap();
        if spare.len() < 2 {
            spare.push(buf);
        }
        written.map_err(|e| Error::io("data writeback", &e))
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        let _ = self.settle();
    }
}
