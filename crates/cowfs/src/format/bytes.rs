//! Little-endian field access for records, with bounds checks that turn short or malformed
//! input into an error instead of a panic.

use crate::error::{Error, Result};

pub struct ByteReader<'a> {
    data: &'a [u8],
    what: &'static str,
}

impl<'a> ByteReader<'a> {
    /// A reader over a record that must be exactly `len` bytes long.
    pub fn exact(data: &'a [u8], len: usize, what: &'static str) -> Result<Self> {
        if data.len() != len {
            return Err(Error::corrupt(format!(
                "{what} record is {} bytes, expected {len}",
                data.len()
            )));
        }
        Ok(ByteReader { data, what })
    }

    pub fn at_least(data: &'a [u8], len: usize, what: &'static str) -> Result<Self> {
        if data.len() < len {
            return Err(Error::corrupt(format!(
                "{what} record is {} bytes, expected at least {len}",
                data.len()
            )));
        }
        Ok(ByteReader { data, what })
    }

    pub fn bytes(&self, offset: usize, len: usize) -> Result<&'a [u8]> {
        self.data.get(offset..offset + len).ok_or_else(|| {
            Error::corrupt(format!(
                "{} record too short for field at {offset}",
                self.what
            ))
        })
    }

    pub fn u8(&self, offset: usize) -> Result<u8> {
        Ok(self.bytes(offset, 1)?[0])
    }

    pub fn u16(&self, offset: usize) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.bytes(offset, 2)?.try_into().unwrap(),
        ))
    }

    pub fn u32(&self, offset: usize) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.bytes(offset, 4)?.try_into().unwrap(),
        ))
    }

    pub fn u64(&self, offset: usize) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.bytes(offset, 8)?.try_into().unwrap(),
        ))
    }

    pub fn i64(&self, offset: usize) -> Result<i64> {
        Ok(self.u64(offset)? as i64)
    }
}

pub struct ByteWriter {
    data: Vec<u8>,
}

impl ByteWriter {
    pub fn new(len: usize) -> Self {
        ByteWriter { data: vec![0; len] }
    }

    pub fn put(&mut self, offset: usize, bytes: &[u8]) -> &mut Self {
        self.data[offset..offset + bytes.len()].copy_from_slice(bytes);
        self
    }

    pub fn u8(&mut self, offset: usize, v: u8) -> &mut Self {
        self.put(offset, &[v])
    }

    pub fn u16(&mut self, offset: usize, v: u16) -> &mut Self {
        self.put(offset, &v.to_le_bytes())
    }

    pub fn u32(&mut self, offset: usize, v: u32) -> &mut Self {
        self.put(offset, &v.to_le_bytes())
    }

    pub fn u64(&mut self, offset: usize, v: u64) -> &mut Self {
        self.put(offset, &v.to_le_bytes())
    }

    pub fn i64(&mut self, offset: usize, v: i64) -> &mut Self {
        self.u64(offset, v as u64)
    }

    pub fn finish(self) -> Vec<u8> {
        self.data
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data
    }
}
