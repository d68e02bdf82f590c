//! A read-only view of a device that takes writes into memory. Opening through it lets the
//! engine validate (and the metadata store recover) an image without writing a byte to it:
//! fsck, read-only mounts, and the dry run before every read-write open.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use super::{check_aligned, BlockDevice, BLOCK_SIZE};

#[derive(Debug)]
pub struct OverlayDevice {
    base: Arc<dyn BlockDevice>,
    state: Mutex<Overlay>,
}

#[derive(Debug)]
struct Overlay {
    blocks: BTreeMap<u64, Box<[u8]>>,
    len: u64,
}

impl OverlayDevice {
    pub fn new(base: Arc<dyn BlockDevice>) -> Self {
        let len = base.len();
        OverlayDevice {
            base,
            state: Mutex::new(Overlay {
                blocks: BTreeMap::new(),
                len,
            }),
        }
    }
}

impl BlockDevice for OverlayDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let state = self.state.lock().unwrap();
        check_aligned(offset, buf.len(), state.len)?;
        let base_len = self.base.len();
        let readable = (base_len.saturating_sub(offset) as usize).min(buf.len());
        if readable > 0 {
            self.base.read_at(offset, &mut buf[..readable])?;
        }
        buf[readable..].fill(0);
        for (block, data) in state.blocks.range(offset / BLOCK_SIZE..) {
            let at = (block * BLOCK_SIZE - offset) as usize;
            if at >= buf.len() {
                break;
            }
            buf[at..at + BLOCK_SIZE as usize].copy_from_slice(data);
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        check_aligned(offset, data.len(), state.len)?;
        for (i, chunk) in data.chunks(BLOCK_SIZE as usize).enumerate() {
            state
                .blocks
                .insert(offset / BLOCK_SIZE + i as u64, chunk.into());
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn len(&self) -> u64 {
        self.state.lock().unwrap().len
    }

    fn resize(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.blocks.retain(|block, _| block * BLOCK_SIZE < len);
        state.len = len;
        Ok(())
    }
}
