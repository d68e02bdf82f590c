//! What else a file or device may hold, so `cowfs mkfs` never overwrites another filesystem,
//! a swap area or a partition table without `--force`: the magic numbers of the common ones
//! (read here, no tool needed), then whatever `blkid -p` knows, where it is installed.

use std::path::Path;

use cowfs::device::{BlockDevice, NbdAddress};
use std::process::Command;

/// (byte offset, magic, what it is).
const MAGICS: [(u64, &[u8], &str); 14] = [
    (0x438, &[0x53, 0xef], "an ext2/ext3/ext4 filesystem"),
    (0x10040, b"_BHRfS_M", "a btrfs filesystem"),
    (0, b"XFSB", "an XFS filesystem"),
    (0x400, &[0x10, 0x20, 0xf5, 0xf2], "an F2FS filesystem"),
    (0, b"hsqs", "a squashfs image"),
    (0x8001, b"CD001", "an ISO 9660 image"),
    (0, b"LUKS\xba\xbe", "a LUKS encrypted volume"),
    (0x218, b"LVM2 001", "an LVM physical volume"),
    (4086, b"SWAPSPACE2", "a Linux swap area"),
    (4086, b"SWAP-SPACE", "a Linux swap area"),
    (3, b"NTFS    ", "an NTFS filesystem"),
    (0x52, b"FAT32   ", "a FAT32 filesystem"),
    (0x36, b"FAT1", "a FAT filesystem"),
    (512, b"EFI PART", "a GPT partition table"),
];

/// How far into a device the magics above reach, in whole blocks.
const HEAD: usize = 0x11000;

/// What `device` (opened from `path`) holds besides cowfs, if anything this knows.
pub fn foreign(device: &dyn BlockDevice, path: &Path) -> std::io::Result<Option<String>> {
    let mut head = vec![0u8; HEAD.min(device.len() as usize)];
    device.read_at(0, &mut head)?;
    for (offset, magic, what) in MAGICS {
        if head.get(offset as usize..offset as usize + magic.len()) == Some(magic) {
            return Ok(Some(what.to_string()));
        }
    }
    if let Some(table) = head.get(..512).and_then(mbr) {
        return Ok(Some(table));
    }
    // blkid reads local files and devices only.
    let local = !path.to_str().is_some_and(NbdAddress::is_uri);
    Ok(local.then(|| blkid(path)).flatten())
}

/// A DOS partition table: the boot signature and at least one partition entry in use.
fn mbr(sector: &[u8]) -> Option<String> {
    let used = sector[446..510].chunks(16).any(|entry| entry[4] != 0);
    (sector[510..] == [0x55, 0xaa] && used).then(|| "a DOS (MBR) partition table".into())
}

/// What `blkid -p` finds (a filesystem, RAID member or partition table type), when it is
/// installed.
fn blkid(path: &Path) -> Option<String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        matches!(key, "TYPE" | "PTTYPE").then(|| format!("{value} (as blkid says)"))
    })
}
