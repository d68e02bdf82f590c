//! The namespace: inodes, names and links, attributes and flags, access times, subvolumes and
//! snapshots, and files kept open after their last name went (orphans).

pub(crate) mod access_times;
pub(crate) mod atime;
pub(crate) mod attrs;
pub(crate) mod namespace;
pub(crate) mod orphans;
pub(crate) mod subvol;
