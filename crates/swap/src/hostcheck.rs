//! The checks a host file must pass to be swapped to directly, as the kernel makes them:
//! FIEMAP must show it fully allocated (no holes, and no delalloc, inline, encoded, shared or
//! unaligned extents), and on btrfs it must be NOCOW and uncompressed.

use std::fs::File;

use cowfs::Result;

use crate::backing::{raw_fd, refuse};

/// FS_IOC_FIEMAP, _IOWR('f', 11, struct fiemap).
const FS_IOC_FIEMAP: libc::c_ulong =
    rustix::ioctl::opcode::read_write::<[u8; 32]>(b'f', 11) as libc::c_ulong;
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
const FIEMAP_EXTENT_UNKNOWN: u32 = 0x2;
const FIEMAP_EXTENT_DELALLOC: u32 = 0x4;
const FIEMAP_EXTENT_ENCODED: u32 = 0x8;
const FIEMAP_EXTENT_NOT_ALIGNED: u32 = 0x100;
const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x200;
const FIEMAP_EXTENT_SHARED: u32 = 0x2000;
const REFUSED: u32 = FIEMAP_EXTENT_UNKNOWN
    | FIEMAP_EXTENT_DELALLOC
    | FIEMAP_EXTENT_ENCODED
    | FIEMAP_EXTENT_NOT_ALIGNED
    | FIEMAP_EXTENT_DATA_INLINE
    | FIEMAP_EXTENT_SHARED;
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
const EXTENTS_PER_CALL: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; EXTENTS_PER_CALL],
}

/// Checks that the first `len` bytes of `file` can be swapped to in place.
pub fn check_swapfile(file: &File, len: u64) -> Result<()> {
    check_btrfs_flags(file)?;
    let mut covered = 0u64;
    loop {
        let mut map = Fiemap {
            start: covered,
            length: u64::MAX - covered,
            flags: FIEMAP_FLAG_SYNC,
            mapped_extents: 0,
            extent_count: EXTENTS_PER_CALL as u32,
            reserved: 0,
            extents: [FiemapExtent::default(); EXTENTS_PER_CALL],
        };
        // SAFETY: FS_IOC_FIEMAP reads and fills a struct fiemap with room for extent_count
        // extents, which `map` has.
        if unsafe { libc::ioctl(raw_fd(file), FS_IOC_FIEMAP, &mut map as *mut Fiemap) } != 0 {
            return Err(refuse(format!(
                "FIEMAP failed: {}",
                std::io::Error::last_os_error()
            )));
        }
        if map.mapped_extents == 0 {
            break;
        }
        for x in &map.extents[..map.mapped_extents as usize] {
            if x.logical > covered {
                return Err(refuse("swapfile has holes".into()));
            }
            if x.flags & REFUSED != 0 {
                return Err(refuse(format!("swapfile extent at {} has flags {:#x} (delalloc, inline, encoded, shared or unaligned)", x.logical, x.flags)));
            }
            covered = covered.max(x.logical + x.length);
            if x.flags & FIEMAP_EXTENT_LAST != 0 || covered >= len {
                return if covered >= len {
                    Ok(())
                } else {
                    Err(refuse("swapfile has holes".into()))
                };
            }
        }
    }
    if covered < len {
        return Err(refuse("swapfile has holes".into()));
    }
    Ok(())
}

/// On btrfs, the kernel's own rules: NOCOW and not compressed.
fn check_btrfs_flags(file: &File) -> Result<()> {
    let Ok(stat) = rustix::fs::fstatfs(file) else {
        return Ok(());
    };
    if stat.f_type != BTRFS_SUPER_MAGIC {
        return Ok(());
    }
    let flags =
        rustix::fs::ioctl_getflags(file).map_err(|e| refuse(format!("reading flags: {e}")))?;
    if flags.contains(rustix::fs::IFlags::COMPRESSED) {
        return Err(refuse("swapfile must not be compressed".into()));
    }
    if !flags.contains(rustix::fs::IFlags::NOCOW) {
        return Err(refuse("swapfile must not be copy-on-write".into()));
    }
    Ok(())
}
