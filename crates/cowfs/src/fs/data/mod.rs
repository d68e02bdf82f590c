//! Where a file's bytes go: the page cache and write-behind, reads and writes, turning data
//! into extents, compression, inline data and preallocation.

pub(crate) mod cache;
pub(crate) mod compress;
pub(crate) mod inline;
pub(crate) mod io;
pub(crate) mod prealloc;
pub(crate) mod write;
pub(crate) mod writer;
