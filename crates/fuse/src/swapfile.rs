//! Swap files for the kernel, in both designs.
//!
//! Pinned (Linux 5.0): `cowfs swapon` pins a file through a control ioctl; the kernel's swapon
//! then maps every page with bmap, which this daemon answers from the pinned map and only for
//! files pinned this way. For any other file bmap says "no mapping" (block 0), so a plain
//! swapon fails in the kernel ("swapfile has holes") and cannot write over blocks the
//! filesystem may move.
//!
//! Through the filesystem (the 2014 design): `cowfs swapon --through-fs` activates the file,
//! then configures a loop device over its swap I/O node: the same file under a name no file
//! can have (longer than a name may be, `control::swap_io_name`) and a node id of its own.
//! The kernel swaps to the loop device, whose direct I/O arrives here as reads and writes of
//! that node and goes to the engine's swap I/O (copy-on-write, checksummed). The file's own
//! node still gives every other writer "Text file busy". The node is told apart by its id,
//! not by an open handle: the daemon keeps no open state, and once a file is pinned it stops
//! answering opens at all, so that swapoff(2) of a pinned file needs no daemon.
//!
//! While any file is active for the kernel the daemon keeps its memory locked (mlockall), as
//! daemons that serve swap must: a daemon page swapped out would have to come back in while
//! the kernel may be reclaiming memory by swapping. Activation through the filesystem also
//! makes the read buffers swap-ins use, one per serving thread, and the file's read-ahead
//! window (`swap_readahead`).

use std::sync::Arc;

use cowfs::format::BLOCK_SIZE;
use cowfs::{InodeId, SwapMode};
use fuser::{Errno, INodeNo, Request};

use crate::control::Refusal;
use crate::served::CowfsFuse;
use crate::swap_readahead::{touched_buf, ReadAhead, SwapReadahead};

/// A read-ahead for a serving thread to make once it has answered the swap-in it follows.
pub(crate) struct PendingReadAhead {
    id: InodeId,
    window: Arc<SwapReadahead>,
    ahead: ReadAhead,
}

impl CowfsFuse {
    pub(crate) fn pin_swapfile(&self, req: &Request, id: InodeId) -> Result<String, Refusal> {
        require_root(req)?;
        let activation = self.fs.activate_swap(id, SwapMode::Pinned)?;
        let text = format!(
            "{} pages in {} extent(s)",
            activation.pages,
            activation.extents.len()
        );
        self.swap_maps().insert(id, activation);
        self.lock_memory_while_swapping();
        // Its attributes are kept for good from now on (see `attr_ttl`); the kernel must ask
        // once more to learn that.
        let seq = self.forget_attrs(id);
        self.wait_forgotten(seq);
        Ok(text)
    }

    pub(crate) fn unpin_swapfile(&self, req: &Request, id: InodeId) -> Result<String, Refusal> {
        require_root(req)?;
        if self.swap_maps().remove(&id).is_none() {
            return Err(Refusal {
                errno: libc::EINVAL,
                reason: "not a swapfile pinned for the kernel".into(),
            });
        }
        self.lock_memory_while_swapping();
        self.fs.deactivate_swap(id)?;
        Ok(String::new())
    }

    /// Activates `id` as a swap file used through the filesystem: from now on reads and
    /// writes through its swap I/O node are its swap I/O.
    pub(crate) fn activate_through_fs(
        &self,
        req: &Request,
        id: InodeId,
    ) -> Result<String, Refusal> {
        require_root(req)?;
        let activation = self.fs.activate_swap(id, SwapMode::ThroughFs)?;
        let window = SwapReadahead::new(activation.pages);
        self.through_fs().insert(id, Arc::new(window));
        self.lock_memory_while_swapping();
        self.reserve_read_buffers();
        Ok(format!("{} pages", activation.pages))
    }

    /// Fills the read buffer pool to one buffer of the largest request per serving thread,
    /// each page touched (so locked, under `mlockall`): swap-ins then take buffers made at
    /// activation, not allocations made while the kernel may be short of memory.
    fn reserve_read_buffers(&self) {
        let mut bufs = self.read_bufs.lock().unwrap_or_else(|p| p.into_inner());
        while bufs.len() < self.threads {
            bufs.push(touched_buf(crate::served::MAX_WRITE as usize));
        }
    }

    /// Undoes [`Self::activate_through_fs`] (after the kernel's swapoff, so no swap I/O
    /// comes any more).
    pub(crate) fn deactivate_through_fs(
        &self,
        req: &Request,
        id: InodeId,
    ) -> Result<String, Refusal> {
        require_root(req)?;
        let Some(window) = self.through_fs().remove(&id) else {
            return Err(Refusal {
                errno: libc::EINVAL,
                reason: "not a swapfile used through the filesystem".into(),
            });
        };
        let stats = window.stats();
        tracing::info!(
            "swap read-ahead of {}: {} pages read ahead, {} swapped in from them",
            self.fs.path_of(id),
            stats.pages_read_ahead,
            stats.pages_served
        );
        self.lock_memory_while_swapping();
        self.fs.deactivate_swap(id)?;
        Ok(String::new())
    }

    /// The entry of the swap I/O node for `name` (the alias name [`control::swap_io_name`]
    /// makes) in `dir`: the swap file's own attributes, under a node of its own.
    pub(crate) fn swap_io_entry(
        &self,
        dir: InodeId,
        name: &[u8],
    ) -> Result<fuser::FileAttr, Errno> {
        let target = crate::control::swap_io_target(name).ok_or(Errno::ENOENT)?;
        let id = self.fs.lookup(dir, target).map_err(crate::convert::errno)?;
        if !self.through_fs().contains_key(&id) {
            return Err(Errno::ENOENT);
        }
        let mut attr = self.attr(id)?;
        attr.ino = INodeNo(attr.ino.0 | SWAP_IO_NODE);
        Ok(attr)
    }

    /// The kernel's swap-in of whole pages at byte `offset`, checksums verified: a mismatch
    /// or an I/O error fails the swap-in (the process gets SIGBUS or is killed), and is logged
    /// naming the file and offset. Served from the file's read-ahead window when it holds
    /// the pages; returns the read-ahead to make after the reply, if this swap-in calls for
    /// one.
    pub(crate) fn swap_read(
        &self,
        id: InodeId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<Option<PendingReadAhead>, Errno> {
        let page = swap_page(offset, buf.len())?;
        let window = self.through_fs().get(&id).cloned();
        if !window.as_ref().is_some_and(|w| w.serve(page, buf)) {
            self.fs.swap_read(id, page, buf).map_err(|e| {
                tracing::error!("swap-in of {} at offset {offset}: {e}", self.fs.path_of(id));
                Errno::from_i32(e.errno().raw_os_error())
            })?;
        }
        Ok(window.and_then(|window| {
            let ahead = window.after_swap_in(page, buf.len() as u64 / BLOCK_SIZE)?;
            Some(PendingReadAhead { id, window, ahead })
        }))
    }

    /// Makes a read-ahead (a swap read like any other: checksums checked). One that fails
    /// serves nothing; the swap-in of those pages meets the failure itself and reports it.
    pub(crate) fn read_ahead(&self, pending: PendingReadAhead) {
        let PendingReadAhead {
            id,
            window,
            mut ahead,
        } = pending;
        let first = ahead.pages.start;
        let read = self.fs.swap_read(id, first, ahead.target());
        if let Err(e) = &read {
            tracing::debug!("read-ahead of {} at page {first}: {e}", self.fs.path_of(id));
        }
        window.land(ahead, read.is_ok());
    }

    /// The kernel's swap-out of whole pages at byte `offset` (copy-on-write, checksummed).
    pub(crate) fn swap_write(&self, id: InodeId, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        let page = swap_page(offset, data.len())?;
        let window = self.through_fs().get(&id).cloned().ok_or(Errno::EINVAL)?;
        let written = self.fs.swap_write(id, page, data);
        // Before the kernel hears of it, whether it worked or not.
        window.written(page, data.len() as u64 / BLOCK_SIZE);
        written.map_err(|e| {
            tracing::error!(
                "swap-out to {} at offset {offset}: {e}",
                self.fs.path_of(id)
            );
            Errno::from_i32(e.errno().raw_os_error())
        })?;
        Ok(data.len())
    }

    /// Whether any file is pinned for the kernel's swap (see `open`).
    pub(crate) fn kernel_swaps_pinned(&self) -> bool {
        !self.swap_maps().is_empty()
    }

    fn through_fs(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<InodeId, Arc<SwapReadahead>>> {
        self.through_fs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the daemon's memory while any file is active for the kernel, unlocks it after.
    fn lock_memory_while_swapping(&self) {
        let swapping = !self.swap_maps().is_empty() || !self.through_fs().is_empty();
        if self
            .memory_locked
            .swap(swapping, std::sync::atomic::Ordering::AcqRel)
            != swapping
        {
            lock_memory(swapping);
        }
    }

    /// The device block holding byte `index * block_size` of a pinned swap file, or 0.
    pub(crate) fn swap_block(&self, id: InodeId, block_size: u32, index: u64) -> u64 {
        let maps = self.swap_maps();
        let Some(activation) = maps.get(&id) else {
            return 0;
        };
        activation
            .device_range(index * u64::from(block_size))
            .map_or(0, |(at, _)| at / u64::from(block_size))
    }
}

/// Node ids with this bit are swap I/O nodes: the same file as the node without it, whose
/// reads and writes are the swap file's swap I/O. Real node ids never reach it.
const SWAP_IO_NODE: u64 = 1 << 62;

/// Whether `node` is a swap I/O node.
pub(crate) fn is_swap_io_node(node: INodeNo) -> bool {
    node.0 & SWAP_IO_NODE != 0
}

/// The node of the file itself, for a swap I/O node (any other node unchanged).
pub(crate) fn file_node(node: INodeNo) -> INodeNo {
    INodeNo(node.0 & !SWAP_IO_NODE)
}

/// The page swap I/O of `len` bytes at `offset` starts at; EINVAL unless it is whole pages.
fn swap_page(offset: u64, len: usize) -> Result<u64, Errno> {
    let page = cowfs::format::BLOCK_SIZE;
    match offset.is_multiple_of(page) && (len as u64).is_multiple_of(page) {
        true => Ok(offset / page),
        false => Err(Errno::EINVAL),
    }
}

/// Only root may hand a file to the kernel as swap (swapon(2) needs CAP_SYS_ADMIN anyway).
pub(crate) fn require_root(req: &Request) -> Result<(), Refusal> {
    match req.uid() {
        0 => Ok(()),
        _ => Err(Refusal {
            errno: libc::EPERM,
            reason: "only root may pin a swapfile".into(),
        }),
    }
}

/// Locks the daemon's memory, present and future pages as they are touched (or unlocks it).
/// A failure is logged: the daemon serves on, less safely.
fn lock_memory(on: bool) {
    // SAFETY: mlockall and munlockall take flags only.
    let rc = unsafe {
        if on {
            libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT)
        } else {
            libc::munlockall()
        }
    };
    if rc != 0 {
        let what = if on { "mlockall" } else { "munlockall" };
        tracing::warn!("{what}: {}", std::io::Error::last_os_error());
    }
}
