//! ioctls on files of the mount. The kernel turns `chattr`/`lsattr` (FS_IOC_GETFLAGS and
//! SETFLAGS, and the FS_IOC_FSGETXATTR pair) into FUSE ioctl requests; the flags are the
//! engine's own, which use the same bit values.

use rustix::ioctl::opcode;

use cowfs::format::inode_flags as flags;
use cowfs::{Filesystem, InodeId};
use fuser::Errno;

use crate::convert::errno;

/// `_IOR('f', 1, long)` and its 32-bit twin; the kernel's fileattr code sends the latter size.
const FS_IOC_GETFLAGS: u32 = opcode::read::<i64>(b'f', 1);
const FS_IOC32_GETFLAGS: u32 = opcode::read::<i32>(b'f', 1);
const FS_IOC_SETFLAGS: u32 = opcode::write::<i64>(b'f', 2);
const FS_IOC32_SETFLAGS: u32 = opcode::write::<i32>(b'f', 2);
/// `struct fsxattr` (28 bytes) in and out.
const FSXATTR_LEN: usize = 28;
const FS_IOC_FSGETXATTR: u32 = opcode::read::<[u8; FSXATTR_LEN]>(b'X', 31);
const FS_IOC_FSSETXATTR: u32 = opcode::write::<[u8; FSXATTR_LEN]>(b'X', 32);

/// FS_XFLAG_* bits and the inode flags they stand for.
const XFLAGS: [(u32, u64); 5] = [
    (0x08, flags::IMMUTABLE),
    (0x10, flags::APPEND),
    (0x20, flags::SYNC),
    (0x40, flags::NOATIME),
    (0x80, flags::NODUMP),
];

/// Whether ioctl `cmd` changes an inode's attributes (its flags, and with them its ctime),
/// which the kernel has cached.
pub fn changes_attributes(cmd: u32) -> bool {
    matches!(cmd, FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS | FS_IOC_FSSETXATTR)
}

/// Runs one ioctl; the bytes returned are the output argument.
pub fn handle(
    fs: &Filesystem,
    id: InodeId,
    cmd: u32,
    input: &[u8],
    out_len: usize,
) -> Result<Vec<u8>, Errno> {
    match cmd {
        FS_IOC_GETFLAGS | FS_IOC32_GETFLAGS => {
            let current = fs.getattr(id).map_err(errno)?.flags as u32;
            Ok(sized(&current.to_ne_bytes(), out_len))
        }
        FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS => {
            let wanted = read_u32(input)?;
            fs.set_flags(id, wanted.into()).map_err(errno)?;
            Ok(Vec::new())
        }
        FS_IOC_FSGETXATTR => {
            let current = fs.getattr(id).map_err(errno)?.flags;
            let xflags = XFLAGS
                .iter()
                .filter(|(_, f)| current & f != 0)
                .fold(0, |x, (bit, _)| x | bit);
            let mut out = vec![0u8; FSXATTR_LEN];
            out[..4].copy_from_slice(&xflags.to_ne_bytes());
            Ok(sized(&out, out_len))
        }
        FS_IOC_FSSETXATTR => {
            let xflags = read_u32(input)?;
            // As ext4: a flag cowfs does not keep (DAX, realtime, ...) is refused, not dropped.
            let known = XFLAGS.iter().fold(0, |x, (bit, _)| x | bit);
            if xflags & !known != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let mut wanted = fs.getattr(id).map_err(errno)?.flags;
            for (bit, flag) in XFLAGS {
                if xflags & bit != 0 {
                    wanted |= flag;
                } else {
                    wanted &= !flag;
                }
            }
            fs.set_flags(id, wanted).map_err(errno)?;
            Ok(Vec::new())
        }
        _ => Err(Errno::ENOTTY),
    }
}

fn read_u32(input: &[u8]) -> Result<u32, Errno> {
    let bytes: [u8; 4] = input
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(Errno::EINVAL)?;
    Ok(u32::from_ne_bytes(bytes))
}

/// `value` cut or zero-padded to the size the caller's argument has.
fn sized(value: &[u8], len: usize) -> Vec<u8> {
    let mut out = value.to_vec();
    out.resize(len, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers linux/fs.h gives, as the kernel's headers spell them.
    #[test]
    fn ioctl_numbers_are_the_kernels() {
        assert_eq!(FS_IOC_GETFLAGS, 0x8008_6601);
        assert_eq!(FS_IOC32_GETFLAGS, 0x8004_6601);
        assert_eq!(FS_IOC_SETFLAGS, 0x4008_6602);
        assert_eq!(FS_IOC32_SETFLAGS, 0x4004_6602);
        assert_eq!(FS_IOC_FSGETXATTR, 0x801c_581f);
        assert_eq!(FS_IOC_FSSETXATTR, 0x401c_5820);
    }
}
