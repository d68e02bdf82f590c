//! What the engine holds for its swap files: the active ones and their pins, and the swap
//! pages written since the last commit. Only the swap module reads or changes it; the rest of
//! the engine asks the swap module's methods.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::fs::{InodeId, SwapExtent, SwapMode};

#[derive(Debug, Default)]
pub(crate) struct SwapState {
    pub(in crate::fs::swap) files: HashMap<InodeId, ActiveSwap>,
    /// Bytes of swap pages written since the last commit.
    pub(in crate::fs::swap) written: u64,
}

/// An active swap file's pins.
#[derive(Debug)]
pub(crate) struct ActiveSwap {
    pub(in crate::fs::swap) mode: SwapMode,
    pub(in crate::fs::swap) pages: u64,
    /// Block groups holding its extents (pinned mode): never relocated while active.
    pub(in crate::fs::swap) groups: BTreeSet<u64>,
    /// Data space set aside for its copy-on-write (through-filesystem mode).
    pub(in crate::fs::swap) reserved: u64,
    /// The page -> device map (pinned mode), fixed until deactivation.
    pub(in crate::fs::swap) extents: Vec<SwapExtent>,
    /// Cleared at deactivation: pinned I/O handles given out stop working then.
    pub(in crate::fs::swap) live: Arc<AtomicBool>,
    /// Bytes of swap writes since activation, and bytes they put on the device (fewer when
    /// compressed).
    pub(in crate::fs::swap) swapped_out: u64,
    pub(in crate::fs::swap) stored: u64,
}

impl SwapState {
    /// A commit freed the copies the swap writes since the last one replaced.
    pub(crate) fn committed(&mut self) {
        self.written = 0;
    }
}

impl ActiveSwap {
    pub(crate) fn is_pinned(&self) -> bool {
        self.mode == SwapMode::Pinned
    }
}
