//! A device in memory, for tests and scratch filesystems.

use std::io;
use std::sync::RwLock;

use super::{check_aligned, BlockDevice};

#[derive(Debug, Default)]
pub struct MemoryDevice {
    bytes: RwLock<Vec<u8>>,
}

impl MemoryDevice {
    pub fn new(len: u64) -> Self {
        MemoryDevice {
            bytes: RwLock::new(vec![0; len as usize]),
        }
    }

    pub fn from_image(image: Vec<u8>) -> Self {
        MemoryDevice {
            bytes: RwLock::new(image),
        }
    }

    /// A copy of the whole device.
    pub fn image(&self) -> Vec<u8> {
        self.bytes.read().unwrap().clone()
    }
}

impl BlockDevice for MemoryDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let bytes = self.bytes.read().unwrap();
        check_aligned(offset, buf.len(), bytes.len() as u64)?;
        buf.copy_from_slice(&bytes[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut bytes = self.bytes.write().unwrap();
        check_aligned(offset, data.len(), bytes.len() as u64)?;
        bytes[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn len(&self) -> u64 {
        self.bytes.read().unwrap().len() as u64
    }

    fn resize(&self, len: u64) -> io::Result<()> {
        self.bytes.write().unwrap().resize(len as usize, 0);
        Ok(())
    }
}
