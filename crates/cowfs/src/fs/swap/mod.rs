//! Swap files: the rules for activating one and for an active one, its pins, and swap I/O in
//! both designs (pinned extents, and through the filesystem).

pub(crate) mod activate;
pub(crate) mod journal;
pub(crate) mod pinned_io;
pub(crate) mod state;
