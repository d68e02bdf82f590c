//! A userspace pager. A program gets `Region`s of memory larger than the pager's resident
//! budget; pages beyond the budget live in swap areas (any backing of crates/swap: a cowfs file
//! pinned or through the filesystem, a host file, a block device) and come back when touched.
//! userfaultfd (`uffd`) delivers the faults; `pager` serves them, tracks dirty pages with
//! write-protection, prefetches sequential streams and evicts in clock order; `stats` counts.

mod in_thread;
mod pager;
mod region;
pub mod stats;
mod uffd;

pub use pager::{FaultMode, Pager, PagerConfig, PAGE};
pub use region::Region;
pub use stats::{Histogram, Stats};
