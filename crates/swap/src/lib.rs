//! Swap areas over cowfs files, host files, block devices and NBD exports, in the Linux `SWAPSPACE2`
//! format, so areas made here work with util-linux `swapon` and the kernel, and the other way
//! round.

pub mod area;
pub mod backing;
pub mod header;
mod hostcheck;
pub mod make;
pub mod system;

pub use backing::{Backing, CowfsFile, DeviceArea, HostFile};
pub use header::{HeaderError, SwapHeader, PAGE_SIZE};
pub use make::{
    map_swapfile, mkswap, mkswapfile, mkswapfile_at, mkswapfile_for, parse_uuid, random_uuid,
};
pub use system::{Slot, SwapInfo, SwapStats, SwapSystem};
