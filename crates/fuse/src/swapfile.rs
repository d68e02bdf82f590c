//! Swap files for the kernel. `cowfs swapon` pins a file through a control ioctl; the kernel's
//! swapon then maps every page with bmap, which this daemon answers from the pinned map and
//! only for files pinned this way. For any other file bmap says "no mapping" (block 0), so a
//! plain swapon fails in the kernel ("swapfile has holes") and cannot write over blocks the
//! filesystem may move.
//!
//! While a file is pinned for the kernel the daemon keeps its memory locked (mlockall), as
//! daemons that serve swap must: a daemon page swapped out would have to come back in while
//! the kernel may be reclaiming memory by swapping.

use cowfs::{InodeId, SwapMode};
use fuser::Request;

use crate::control::Refusal;
use crate::served::CowfsFuse;

impl CowfsFuse {
    pub(crate) fn pin_swapfile(&self, req: &Request, id: InodeId) -> Result<String, Refusal> {
        require_root(req)?;
        let activation = self.fs.activate_swap(id, SwapMode::Pinned)?;
        let text = format!(
            "{} pages in {} extent(s)",
            activation.pages,
            activation.extents.len()
        );
        let mut maps = self.swap_maps();
        if maps.is_empty() {
            lock_memory(true);
        }
        maps.insert(id, activation);
        drop(maps);
        // Its attributes are kept for good from now on (see `attr_ttl`); the kernel must ask
        // once more to learn that.
        let seq = self.forget_attrs(id);
        self.wait_forgotten(seq);
        Ok(text)
    }

    pub(crate) fn unpin_swapfile(&self, req: &Request, id: InodeId) -> Result<String, Refusal> {
        require_root(req)?;
        let mut maps = self.swap_maps();
        if maps.remove(&id).is_none() {
            return Err(Refusal {
                errno: libc::EINVAL,
                reason: "not a swapfile pinned for the kernel".into(),
            });
        }
        if maps.is_empty() {
            lock_memory(false);
        }
        drop(maps);
        self.fs.deactivate_swap(id)?;
        Ok(String::new())
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
