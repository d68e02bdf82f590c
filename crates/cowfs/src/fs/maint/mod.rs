//! Maintenance that moves or checks data behind the files' backs: balance, relocation of
//! block groups, resize, scrub and defrag.

pub(crate) mod balance;
pub(crate) mod control;
pub(crate) mod defrag;
pub(crate) mod relocate;
pub(crate) mod resize;
pub(crate) mod scrub;
