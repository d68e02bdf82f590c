//! Making swap areas: `mkswap` on a host file or device, `mkswapfile` inside a cowfs image
//! (as `btrfs filesystem mkswapfile`: an empty file made NOCOW, preallocated, given a header,
//! mode 0600), and `map_swapfile` (as `btrfs inspect-internal map-swapfile`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use cowfs::device::{Access, AlignedBuf, NbdAddress};
use cowfs::format::inode_flags::NOCOW;
use cowfs::format::FileKind;
use cowfs::{CreateAttrs, Error, FallocateMode, Filesystem, InodeId, SetAttr, SwapMode};

use crate::header::{HeaderError, SwapHeader, MIN_PAGES, PAGE_SIZE};

/// A random (version 4) UUID for a new area.
pub fn random_uuid() -> [u8; 16] {
    let mut uuid = [0u8; 16];
    let _ = File::open("/dev/urandom").and_then(|f| f.read_exact_at(&mut uuid, 0));
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

/// Parses `01234567-89ab-cdef-0123-456789abcdef`.
pub fn parse_uuid(text: &str) -> Result<[u8; 16], String> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return Err(format!("{text:?} is not a UUID"));
    }
    let mut uuid = [0u8; 16];
    for (i, byte) in uuid.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("{text:?} is not a UUID"))?;
    }
    Ok(uuid)
}

fn pages_of(bytes: u64) -> Result<u64, HeaderError> {
    let pages = bytes / PAGE_SIZE as u64;
    if pages < MIN_PAGES {
        return Err(HeaderError::Empty);
    }
    Ok(pages.min(u64::from(u32::MAX)))
}

/// Writes a swap header to an existing host file or block device; `create` with `size` makes a
/// file the kernel can swap to (NOCOW where supported, fully allocated, mode 0600) first.
pub fn mkswap(
    path: &Path,
    size: Option<u64>,
    label: &str,
    uuid: [u8; 16],
) -> io::Result<SwapHeader> {
    if path.to_str().is_some_and(NbdAddress::is_uri) {
        return mkswap_export(path, size, label, uuid);
    }
    let file = match size {
        Some(size) => create_swap_file(path, size, Nocow::IfSupported)?,
        None => OpenOptions::new().write(true).open(path)?,
    };
    let len = std::fs::metadata(path)?.len().max(seek_len(&file)?);
    let header = SwapHeader::new(pages_of(len).map_err(io::Error::other)?, uuid, label)
        .map_err(io::Error::other)?;
    file.write_all_at(&header.encode(), 0)?;
    file.sync_all()?;
    Ok(header)
}

/// A swap header on an NBD export: the whole export is the area (a `size` must fit in it).
fn mkswap_export(
    address: &Path,
    size: Option<u64>,
    label: &str,
    uuid: [u8; 16],
) -> io::Result<SwapHeader> {
    let access = size.map_or(Access::ReadWrite, Access::Create);
    let device = cowfs::device::open(address, access)?;
    let header = SwapHeader::new(
        pages_of(device.len()).map_err(io::Error::other)?,
        uuid,
        label,
    )
    .map_err(io::Error::other)?;
    device.write_durable_at(0, &AlignedBuf::from_slice(&header.encode()))?;
    Ok(header)
}

fn seek_len(file: &File) -> io::Result<u64> {
    use std::io::Seek;
    let mut f = file;
    f.seek(io::SeekFrom::End(0))
}

/// Makes a swap file of `size` bytes at `path` on a mounted cowfs, through the mount, for
/// `mode`: NOCOW for pinned use, copy-on-write for use through the filesystem; preallocated,
/// with a header, mode 0600.
pub fn mkswapfile_at(
    path: &Path,
    size: u64,
    label: &str,
    uuid: [u8; 16],
    mode: SwapMode,
) -> io::Result<SwapHeader> {
    let header = SwapHeader::new(pages_of(size).map_err(io::Error::other)?, uuid, label)
        .map_err(io::Error::other)?;
    let nocow = match mode {
        SwapMode::Pinned => Nocow::Required,
        SwapMode::ThroughFs => Nocow::No,
    };
    let file = create_swap_file(path, header.pages * PAGE_SIZE as u64, nocow)?;
    file.write_all_at(&header.encode(), 0)?;
    file.sync_all()?;
    Ok(header)
}

/// Whether a new swap file is made NOCOW.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nocow {
    /// Where the filesystem has the flag (a host file: the kernel wants it on btrfs).
    IfSupported,
    Required,
    No,
}

/// A new file of `size` bytes at `path`, mode 0600, fully allocated, NOCOW as asked (it must
/// be set while the file is empty).
fn create_swap_file(path: &Path, size: u64, nocow: Nocow) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let set_nocow = || -> io::Result<()> {
        let flags = rustix::fs::ioctl_getflags(&file)?;
        Ok(rustix::fs::ioctl_setflags(
            &file,
            flags | rustix::fs::IFlags::NOCOW,
        )?)
    };
    match nocow {
        Nocow::Required => set_nocow()?,
        // Filesystems without the flag refuse it: fine.
        Nocow::IfSupported => drop(set_nocow()),
        Nocow::No => {}
    }
    rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size)?;
    Ok(file)
}

/// Makes a swap file of `size` bytes at `path` inside a cowfs filesystem, for pinned use:
/// NOCOW (so unchecksummed), preallocated.
pub fn mkswapfile(
    fs: &Filesystem,
    path: &str,
    size: u64,
    label: &str,
    uuid: [u8; 16],
) -> cowfs::Result<InodeId> {
    mkswapfile_for(fs, path, size, label, uuid, SwapMode::Pinned)
}

/// Makes a swap file inside a cowfs filesystem for `mode`: NOCOW (so unchecksummed) for
/// pinned use, copy-on-write and checksummed for use through the filesystem; preallocated,
/// with a header, mode 0600.
pub fn mkswapfile_for(
    fs: &Filesystem,
    path: &str,
    size: u64,
    label: &str,
    uuid: [u8; 16],
    mode: SwapMode,
) -> cowfs::Result<InodeId> {
    let header = SwapHeader::new(pages_of(size)?, uuid, label)?;
    let (dir, name) = fs.resolve_parent(path)?;
    let id = fs.create(
        dir,
        name.as_bytes(),
        FileKind::Regular,
        CreateAttrs::with_mode(0o600),
    )?;
    if mode == SwapMode::Pinned {
        fs.set_flags(id, NOCOW)?;
    }
    let bytes = header.pages * PAGE_SIZE as u64;
    fs.fallocate(id, FallocateMode::Allocate { keep_size: false }, 0, bytes)?;
    fs.write(id, 0, &header.encode())?;
    fs.setattr(
        id,
        &SetAttr {
            mode: Some(0o600),
            ..SetAttr::default()
        },
    )?;
    fs.fsync(id)?;
    Ok(id)
}

/// Where a swap file starts on the device and its hibernation resume offset (in pages), after
/// the checks of activation; nothing stays pinned.
pub fn map_swapfile(fs: &Filesystem, id: InodeId) -> cowfs::Result<(u64, u64)> {
    let activation = fs.activate_swap(id, SwapMode::Pinned)?;
    fs.deactivate_swap(id)?;
    let first = activation
        .extents
        .first()
        .ok_or_else(|| Error::invalid("swapfile has no extent"))?;
    Ok((first.physical, first.physical / PAGE_SIZE as u64))
}
