//! Inline extents: a small file's data kept in its file extent record instead of a data block.
//! A file qualifies while it is at most the filesystem's inline limit (2048 bytes unless set at
//! mkfs), is not NOCOW, and has no other extent. Writeback stores it inline; a write that grows
//! it past the limit, a direct write, or fallocate moves the data back to the page cache first,
//! so it is written out as a regular extent.

use crate::error::Result;
use crate::format::inode_flags::NOCOW;
use crate::format::{Compression, ExtentKind, FileExtent, InodeRecord, BLOCK_SIZE};
use crate::fs::engine::Engine;
use crate::fs::InodeId;

impl FileExtent {
    pub fn inline(data: Vec<u8>) -> Self {
        FileExtent {
            kind: ExtentKind::Inline,
            compression: Compression::None,
            disk_start: 0,
            disk_len: 0,
            extent_offset: 0,
            len: data.len() as u64,
            ram_len: data.len() as u64,
            inline_data: data,
        }
    }
}

impl Engine {
    /// Stores a small file's dirty data inline; false when the file does not qualify.
    pub(in crate::fs) fn writeback_inline(&mut self, id: InodeId) -> Result<bool> {
        let inode = self.inode(id)?;
        let fits = inode.size > 0
            && inode.size <= u64::from(self.state.inline_limit)
            && inode.flags & NOCOW == 0;
        if !fits || self.cache.file_pages(id) != 1 || !self.cache.contains(id, 0) {
            return Ok(false);
        }
        if self
            .extents_in(id, 0, u64::MAX)?
            .iter()
            .any(|(_, e)| e.kind != ExtentKind::Inline)
        {
            return Ok(false);
        }
        let page = self.cache.page(id, 0).expect("checked above");
        let data = page[..inode.size as usize].to_vec();
        self.cache.discard_from(id, 0);
        self.replace_range(id, 0, BLOCK_SIZE, Some(FileExtent::inline(data)))?;
        Ok(true)
    }

    /// Moves a file's inline data to a dirty page, to be written as a regular extent.
    pub(in crate::fs) fn uninline(&mut self, id: InodeId, inode: &InodeRecord) -> Result<()> {
        let inline = self
            .extents_in(id, 0, 1)?
            .into_iter()
            .any(|(_, e)| e.kind == ExtentKind::Inline);
        if !inline {
            return Ok(());
        }
        if !self.cache.contains(id, 0) {
            self.load_page(id, inode, 0)?;
        }
        self.punch_extents(id, 0, BLOCK_SIZE)
    }
}
