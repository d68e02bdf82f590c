//! The cowfs control ioctls, issued on files and directories inside a mount, for what FUSE has
//! no request of its own: pinning a swap file for the kernel (and, as they come, snapshots,
//! defrag, balance and the rest). Both ends live here: the numbers and the reply format,
//! and the client calls the `cowfs` subcommands make.
//!
//! Every control ioctl is `_IOR(0xCF, nr, 256)`: FUSE forwards an ioctl with the argument size
//! its number encodes, so the reply has a fixed size. It holds a native-endian i32 errno (0 on
//! success) and then a NUL-terminated text: the engine's reason on failure, the output on
//! success. The ioctl itself succeeds whenever the daemon answered, so the reason reaches the
//! caller, which errno alone would not.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Bytes of every reply.
pub const REPLY_LEN: usize = 256;
const TYPE: u32 = 0xCF;

const fn ior(nr: u32) -> u32 {
    (2 << 30) | ((REPLY_LEN as u32) << 16) | (TYPE << 8) | nr
}

/// Activate the file as a pinned swap file, so the kernel's swapon can map it.
pub const SWAP_ACTIVATE: u32 = ior(1);
/// Undo [`SWAP_ACTIVATE`] (after the kernel's swapoff).
pub const SWAP_DEACTIVATE: u32 = ior(2);

/// A refusal from the daemon: the errno and the engine's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub errno: i32,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = rustix::io::Errno::from_raw_os_error(self.errno);
        write!(f, "{}: {}", io::Error::from(name), self.reason)
    }
}

impl std::error::Error for Refusal {}

/// The reply bytes for a result.
pub fn encode(result: Result<String, Refusal>) -> Vec<u8> {
    let (errno, text) = match result {
        Ok(text) => (0, text),
        Err(r) => (r.errno, r.reason),
    };
    let mut reply = vec![0u8; REPLY_LEN];
    reply[..4].copy_from_slice(&errno.to_ne_bytes());
    let text = text.as_bytes();
    let n = text.len().min(REPLY_LEN - 5);
    reply[4..4 + n].copy_from_slice(&text[..n]);
    reply
}

fn decode(reply: &[u8; REPLY_LEN]) -> Result<String, Refusal> {
    let errno = i32::from_ne_bytes([reply[0], reply[1], reply[2], reply[3]]);
    let text = &reply[4..];
    let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
    let text = String::from_utf8_lossy(&text[..end]).into_owned();
    match errno {
        0 => Ok(text),
        errno => Err(Refusal {
            errno,
            reason: text,
        }),
    }
}

/// Runs a control ioctl on `path`. The outer error is the call itself failing (ENOTTY: not
/// on a cowfs mount); the inner one is the daemon's refusal.
pub fn call(path: &Path, cmd: u32) -> io::Result<Result<String, Refusal>> {
    let file = File::open(path)?;
    let mut reply = [0u8; REPLY_LEN];
    // SAFETY: the argument is a writable buffer of the size the command encodes.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), cmd as libc::c_ulong, reply.as_mut_ptr()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTTY) {
            return Err(io::Error::new(
                e.kind(),
                format!("{}: not on a cowfs mount", path.display()),
            ));
        }
        return Err(e);
    }
    Ok(decode(&reply))
}
