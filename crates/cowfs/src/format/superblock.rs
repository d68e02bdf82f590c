//! The superblock: what an image is, and where the metadata store lives. Three copies sit at
//! fixed offsets in the first MiB; a valid copy with the highest generation wins at open.

use super::{ByteReader, ByteWriter, BLOCK_SIZE, FORMAT_VERSION, MIN_FS_SIZE, SYSTEM_AREA_END};
use crate::error::{Error, Result};

pub const SUPERBLOCK_SIZE: usize = 4096;
/// Where the copies live. All are written on every superblock update, copy 0 first.
pub const SUPERBLOCK_OFFSETS: [u64; 3] = [64 << 10, 256 << 10, 768 << 10];
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"COWFS-SB";

pub const SB_MAGIC: usize = 0;
pub const SB_VERSION: usize = 8;
pub const SB_COPY_INDEX: usize = 12;
pub const SB_GENERATION: usize = 16;
pub const SB_FS_SIZE: usize = 24;
pub const SB_BLOCK_SIZE: usize = 32;
pub const SB_FLAGS: usize = 36;
pub const SB_UUID: usize = 40;
pub const SB_META_LEN: usize = 56;
pub const SB_META_CHUNK_COUNT: usize = 64;
/// Reserved (zero): bytes 68..72, 80..128, and past the chunk table up to the checksum.
pub const SB_RESERVED_1: usize = 68;
pub const SB_CREATED: usize = 72;
pub const SB_RESERVED_2: usize = 80;
pub const SB_META_CHUNKS: usize = 128;
pub const SB_CHECKSUM: usize = SUPERBLOCK_SIZE - 4;

pub const META_CHUNK_ENTRY_SIZE: usize = 24;
pub const MAX_META_CHUNKS: usize = (SB_CHECKSUM - SB_META_CHUNKS) / META_CHUNK_ENTRY_SIZE;

/// A piece of the metadata store's linear address space placed on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaChunk {
    /// Offset of this piece in the store's address space.
    pub store_offset: u64,
    pub physical: u64,
    pub length: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub generation: u64,
    pub fs_size: u64,
    pub uuid: [u8; 16],
    pub created: i64,
    /// The metadata store's length; at most the sum of the chunk lengths.
    pub meta_len: u64,
    pub meta_chunks: Vec<MetaChunk>,
}

impl Superblock {
    pub fn meta_capacity(&self) -> u64 {
        self.meta_chunks.iter().map(|c| c.length).sum()
    }

    pub fn encode(&self, copy: usize) -> Vec<u8> {
        assert!(
            self.meta_chunks.len() <= MAX_META_CHUNKS,
            "meta chunk table overflow"
        );
        let mut w = ByteWriter::new(SUPERBLOCK_SIZE);
        w.put(SB_MAGIC, &SUPERBLOCK_MAGIC)
            .u32(SB_VERSION, FORMAT_VERSION)
            .u32(SB_COPY_INDEX, copy as u32)
            .u64(SB_GENERATION, self.generation)
            .u64(SB_FS_SIZE, self.fs_size)
            .u32(SB_BLOCK_SIZE, BLOCK_SIZE as u32)
            .u32(SB_FLAGS, 0)
            .put(SB_UUID, &self.uuid)
            .u64(SB_META_LEN, self.meta_len)
            .u32(SB_META_CHUNK_COUNT, self.meta_chunks.len() as u32)
            .i64(SB_CREATED, self.created);
        for (i, c) in self.meta_chunks.iter().enumerate() {
            let at = SB_META_CHUNKS + i * META_CHUNK_ENTRY_SIZE;
            w.u64(at, c.store_offset)
                .u64(at + 8, c.physical)
                .u64(at + 16, c.length);
        }
        let crc = crc32c::crc32c(&w.as_mut_slice()[..SB_CHECKSUM]);
        w.u32(SB_CHECKSUM, crc);
        w.finish()
    }

    /// Decodes and validates copy number `copy` against a device of `device_len` bytes.
    pub fn decode(data: &[u8], copy: usize, device_len: u64) -> Result<Superblock> {
        let r = ByteReader::exact(data, SUPERBLOCK_SIZE, "superblock")?;
        if r.bytes(SB_MAGIC, 8)? != SUPERBLOCK_MAGIC {
            return Err(Error::corrupt("bad magic: not a cowfs superblock"));
        }
        let stored = r.u32(SB_CHECKSUM)?;
        let actual = crc32c::crc32c(&data[..SB_CHECKSUM]);
        if stored != actual {
            return Err(Error::corrupt(format!(
                "checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
            )));
        }
        let version = r.u32(SB_VERSION)?;
        if version != FORMAT_VERSION {
            return Err(Error::new(
                rustix::io::Errno::NOTSUP,
                format!("format version {version}; this cowfs reads version {FORMAT_VERSION}"),
            ));
        }
        let copy_index = r.u32(SB_COPY_INDEX)?;
        if copy_index as usize != copy {
            return Err(Error::corrupt(format!(
                "copy index {copy_index} found in slot {copy}"
            )));
        }
        if r.u32(SB_BLOCK_SIZE)? as u64 != BLOCK_SIZE {
            return Err(Error::corrupt(format!(
                "block size {} unsupported",
                r.u32(SB_BLOCK_SIZE)?
            )));
        }
        let flags = r.u32(SB_FLAGS)?;
        if flags != 0 {
            return Err(Error::corrupt(format!(
                "flags {flags:#x} set; format version {FORMAT_VERSION} defines none"
            )));
        }
        let count = r.u32(SB_META_CHUNK_COUNT)? as usize;
        if count == 0 || count > MAX_META_CHUNKS {
            return Err(Error::corrupt(format!(
                "metadata chunk count {count} out of range"
            )));
        }
        let table_end = SB_META_CHUNKS + count * META_CHUNK_ENTRY_SIZE;
        for (from, to) in [
            (SB_RESERVED_1, SB_CREATED),
            (SB_RESERVED_2, SB_META_CHUNKS),
            (table_end, SB_CHECKSUM),
        ] {
            if let Some(at) = data[from..to].iter().position(|b| *b != 0) {
                return Err(Error::corrupt(format!(
                    "reserved byte {} is not zero",
                    from + at
                )));
            }
        }
        let mut meta_chunks = Vec::with_capacity(count);
        for i in 0..count {
            let at = SB_META_CHUNKS + i * META_CHUNK_ENTRY_SIZE;
            meta_chunks.push(MetaChunk {
                store_offset: r.u64(at)?,
                physical: r.u64(at + 8)?,
                length: r.u64(at + 16)?,
            });
        }
        let sb = Superblock {
            generation: r.u64(SB_GENERATION)?,
            fs_size: r.u64(SB_FS_SIZE)?,
            uuid: r.bytes(SB_UUID, 16)?.try_into().unwrap(),
            created: r.i64(SB_CREATED)?,
            meta_len: r.u64(SB_META_LEN)?,
            meta_chunks,
        };
        sb.validate(device_len)?;
        Ok(sb)
    }

    fn validate(&self, device_len: u64) -> Result<()> {
        if self.fs_size < MIN_FS_SIZE || !self.fs_size.is_multiple_of(BLOCK_SIZE) {
            return Err(Error::corrupt(format!(
                "filesystem size {} invalid",
                self.fs_size
            )));
        }
        if self.fs_size > device_len {
            return Err(Error::corrupt(format!(
                "filesystem size {} exceeds the device ({device_len} bytes): image truncated?",
                self.fs_size
            )));
        }
        let mut store_offset = 0u64;
        let mut sorted: Vec<&MetaChunk> = self.meta_chunks.iter().collect();
        for c in &self.meta_chunks {
            let end = c.physical.checked_add(c.length);
            if c.store_offset != store_offset
                || c.length == 0
                || c.length % BLOCK_SIZE != 0
                || c.physical % BLOCK_SIZE != 0
                || c.physical < SYSTEM_AREA_END
                || end.is_none_or(|e| e > self.fs_size)
            {
                return Err(Error::corrupt(format!("metadata chunk {c:?} out of range")));
            }
            store_offset += c.length;
        }
        sorted.sort_by_key(|c| c.physical);
        if sorted
            .windows(2)
            .any(|w| w[0].physical + w[0].length > w[1].physical)
        {
            return Err(Error::corrupt("metadata chunks overlap"));
        }
        if self.meta_len > store_offset {
            return Err(Error::corrupt(format!(
                "metadata length {} exceeds its chunks ({store_offset})",
                self.meta_len
            )));
        }
        Ok(())
    }
}

/// What open found in each superblock slot.
#[derive(Debug)]
pub struct SuperblockScan {
    pub copies: Vec<Result<Superblock>>,
}

impl SuperblockScan {
    /// The valid copy with the highest generation. With none valid, the primary's error
    /// (keeping its errno: a future format version is ENOTSUP, damage is EUCLEAN).
    pub fn best(&self) -> Result<&Superblock> {
        if let Some(best) = self
            .copies
            .iter()
            .filter_map(|c| c.as_ref().ok())
            .max_by_key(|sb| sb.generation)
        {
            return Ok(best);
        }
        let primary = self.copies[0].as_ref().expect_err("no valid copy");
        Err(Error::new(
            primary.errno(),
            format!("no valid superblock ({})", primary.reason()),
        ))
    }
}
