//! Where space is counted: block groups and the data allocator, extent records and their
//! reference counts, and every reservation made before a change is allowed to start.

pub(crate) mod accounting;
pub(crate) mod extents;
pub(crate) mod groups;
pub(crate) mod owners;

pub use groups::*;
