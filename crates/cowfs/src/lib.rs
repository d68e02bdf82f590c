//! cowfs: a crash-safe, extent-based copy-on-write filesystem on one image file or block
//! device, built so that swap files on it are safe.
//!
//! Layers, bottom up: [`device`] (the storage trait and its real, in-memory and
//! crash-simulating implementations), [`format`](mod@format) (every on-disk byte), `meta` (the
//! metadata store inside the image), and [`fs`] (the engine: namespace, extents,
//! transactions). [`fsck`] checks an image without writing to it.

pub mod device;
pub mod error;
pub mod format;
pub mod fs;
pub mod fsck;
mod meta;

pub use error::{Errno, Error, Result};
pub use fs::*;
