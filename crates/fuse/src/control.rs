//! The cowfs control ioctls, issued on files and directories inside a mount, for what FUSE has
//! no request of its own: pinning a swap file for the kernel (and, as they come, snapshots,
//! defrag, balance and the rest). Both ends live here: the numbers and the reply format,
//! and the client calls the `cowfs` subcommands make.
//!
//! FUSE forwards an ioctl with the argument size its number encodes, so every argument has a
//! fixed size: `_IOR(0xCF, nr, 256)` for the swap pins, `_IOWR(0xCF, 3, 0x3fff)` for a command
//! (a NUL-terminated `cowfs io` command line in, with paths from the filesystem's root; at most
//! 16 KiB of output comes back, the rest is cut and says so). The
//! reply, in the same buffer, holds a native-endian i32 errno (0 on success) and then a
//! NUL-terminated text: the engine's reason on failure, the output on success. The ioctl
//! itself succeeds whenever the daemon answered, so the reason reaches the caller, which
//! errno alone would not.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use rustix::ioctl::{opcode, Direction};

/// Bytes of a swap pin's reply.
pub const REPLY_LEN: usize = 256;
/// Bytes of a command's argument: the command line in, the reply out (the most an ioctl
/// number can encode).
pub const COMMAND_LEN: usize = 0x3fff;
/// The ioctl group of cowfs's own commands.
const GROUP: u8 = 0xCF;

const fn ioctl(direction: Direction, nr: u8, size: usize) -> u32 {
    opcode::from_components(direction, GROUP, nr, size)
}

/// The argument size a command number encodes.
pub const fn arg_len(cmd: u32) -> usize {
    ((cmd >> 16) & 0x3fff) as usize
}

/// Activate the file as a pinned swap file, so the kernel's swapon can map it.
pub const SWAP_ACTIVATE: u32 = ioctl(Direction::Read, 1, REPLY_LEN);
/// Undo [`SWAP_ACTIVATE`] (after the kernel's swapoff).
pub const SWAP_DEACTIVATE: u32 = ioctl(Direction::Read, 2, REPLY_LEN);
/// Run one whole-filesystem command: snapshot, subvol, defrag, balance, resize, scrub, fiemap.
pub const COMMAND: u32 = ioctl(Direction::ReadWrite, 3, COMMAND_LEN);
/// Activate the file as a swap file used through the filesystem: reads and writes of its
/// swap I/O node ([`swap_io_name`]) are then its swap I/O.
pub const SWAP_ACTIVATE_THROUGH_FS: u32 = ioctl(Direction::Read, 4, REPLY_LEN);
/// Undo [`SWAP_ACTIVATE_THROUGH_FS`] (after the kernel's swapoff).
pub const SWAP_DEACTIVATE_THROUGH_FS: u32 = ioctl(Direction::Read, 5, REPLY_LEN);

/// What starts the name of a swap I/O node: longer than a name may be (255 bytes), so no
/// file can have it, and short enough with a name after it for FUSE (1024).
const SWAP_IO_PREFIX: &str = concat!(
    ".cowfs-swap-io.",
    "................................................................",
    "................................................................",
    "................................................................",
    "..................................................................",
);

const _: () = assert!(SWAP_IO_PREFIX.len() > 255);

/// The name, in the swap file's directory, of its swap I/O node.
pub fn swap_io_name(name: &[u8]) -> Vec<u8> {
    [SWAP_IO_PREFIX.as_bytes(), name].concat()
}

/// The swap file a swap I/O node's name stands for.
pub fn swap_io_target(name: &[u8]) -> Option<&[u8]> {
    name.strip_prefix(SWAP_IO_PREFIX.as_bytes())
        .filter(|target| !target.is_empty())
}

/// The swap file a loop device's backing path names, when it is a swap I/O node's path.
pub fn swap_io_file(path: &Path) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let target = swap_io_target(path.file_name()?.as_bytes())?;
    Some(path.with_file_name(std::ffi::OsStr::from_bytes(target)))
}

/// Runs the commands [`COMMAND`] carries; the `cowfs` binary gives its `cowfs io` interpreter.
pub trait CommandRunner: Send + Sync {
    /// Runs one command line over the mounted filesystem; the output on success.
    fn run(&self, fs: &cowfs::Filesystem, line: &str) -> Result<String, Refusal>;
}

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

impl From<cowfs::Error> for Refusal {
    fn from(e: cowfs::Error) -> Self {
        Refusal {
            errno: e.errno().raw_os_error(),
            reason: e.reason().to_string(),
        }
    }
}

/// The reply bytes for a result, `len` long.
pub fn encode(result: Result<String, Refusal>, len: usize) -> Vec<u8> {
    let (errno, text) = match result {
        Ok(text) => (0, text),
        Err(r) => (r.errno, r.reason),
    };
    let mut reply = vec![0u8; len];
    reply[..4].copy_from_slice(&errno.to_ne_bytes());
    let room = len - 5;
    let text = if text.len() <= room {
        text
    } else {
        const CUT: &str = "\n[output cut]\n";
        let mut end = room - CUT.len();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}{CUT}", &text[..end])
    };
    reply[4..4 + text.len()].copy_from_slice(text.as_bytes());
    reply
}

/// The NUL-terminated text at the start of `bytes`.
pub fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn decode(reply: &[u8]) -> Result<String, Refusal> {
    let errno = i32::from_ne_bytes([reply[0], reply[1], reply[2], reply[3]]);
    let text = text(&reply[4..]);
    match errno {
        0 => Ok(text),
        errno => Err(Refusal {
            errno,
            reason: text,
        }),
    }
}

/// Runs a control ioctl on `path` with `input` as the start of its argument. The outer error
/// is the call itself failing (ENOTTY: not on a cowfs mount); the inner one is the daemon's
/// refusal.
pub fn call(path: &Path, cmd: u32, input: &[u8]) -> io::Result<Result<String, Refusal>> {
    let mut arg = vec![0u8; arg_len(cmd)];
    if input.len() >= arg.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "control argument too long",
        ));
    }
    arg[..input.len()].copy_from_slice(input);
    let file = File::open(path)?;
    // What the kernel holds written in its page cache (a mount's writeback cache, a shared
    // mapping) reaches the daemon first: a snapshot, or a swap file's activation, sees it.
    // An error here is a write-back error, the business of the files' own fsync and close
    // (and of a dead daemon, the ioctl's to report).
    let _ = rustix::fs::syncfs(&file);
    // SAFETY: the argument is a writable buffer of the size the command encodes.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), cmd as libc::c_ulong, arg.as_mut_ptr()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOTTY) => io::Error::new(
                e.kind(),
                format!("{}: not on a cowfs mount", path.display()),
            ),
            _ => e,
        });
    }
    Ok(decode(&arg))
}
