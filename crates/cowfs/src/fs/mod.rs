//! The filesystem engine, in floors. Each file uses only what is on its floor or below:
//!
//! - `types` (the API's value types) and `common` (types several parts share): use nothing
//!   above them.
//! - State components the engine holds, each with no engine code: `alloc::groups` (block
//!   groups and the data allocator), `alloc::owners`, `data::cache`, `data::writer`,
//!   `swap::state`, `tree::access_times`.
//! - `engine`: the `Engine` struct and its life cycle (mkfs, open, commit, stop).
//! - The engine's operations, one folder per concern: `alloc/` (where space is counted),
//!   `data/` (where a file's bytes go), `tree/` (names, inodes, attributes, subvolumes),
//!   `maint/` (balance, relocation, resize, scrub, defrag), then `share` (reflinks, copies,
//!   dedupe) and `swap/` (the swap rules) on top.
//! - `filesystem`: the `Filesystem` handle front ends hold.

pub(crate) mod alloc;
mod common;
pub(crate) mod data;
pub(crate) mod engine;
mod filesystem;
pub(crate) mod maint;
mod share;
pub(crate) mod swap;
pub(crate) mod tree;
mod types;

pub use alloc::extents::ExtentMapping;
pub use alloc::{data_chunk_size, metadata_reserve, BlockGroup, Extent};
pub use common::checksum_blocks;
pub use data::compress::{decompress_extent, MAX_COMPRESSED_LEN};
pub use data::prealloc::FallocateMode;
pub use engine::scan_superblocks;
pub use maint::balance::{BalanceFilter, BalanceProgress, BalanceReport};
pub use maint::defrag::DefragStats;
pub use maint::scrub::{ScrubError, ScrubReport};
pub use share::DedupeOutcome;
pub use swap::pinned_io::PinnedSwapIo;
pub use tree::subvol::SubvolumeInfo;

pub use filesystem::{Filesystem, DEFAULT_SUBVOLUME, MAX_SYMLINKS};
pub use types::*;
