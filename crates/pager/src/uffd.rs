//! userfaultfd(2), with the few structs and ioctl numbers it needs defined here by hand (the
//! `userfaultfd` crate needs bindgen, and this machine has no libclang). Opened through
//! /dev/userfaultfd where it can be, so faults the kernel itself takes on a region (a read(2)
//! into a buffer there) are delivered too, not failed with EFAULT as a user-mode-only
//! userfaultfd would.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use rustix::ioctl::opcode;

/// The userfaultfd API version, and the ioctl group of its commands (linux/userfaultfd.h).
const UFFD_API: u64 = 0xAA;
const UFFDIO: u8 = 0xAA;
const USERFAULTFD_IOC_NEW: libc::c_ulong = opcode::none(UFFDIO, 0x00) as libc::c_ulong;
const UFFDIO_API: libc::c_ulong = opcode::read_write::<Api>(UFFDIO, 0x3F) as libc::c_ulong;
const UFFDIO_REGISTER: libc::c_ulong =
    opcode::read_write::<Register>(UFFDIO, 0x00) as libc::c_ulong;
const UFFDIO_UNREGISTER: libc::c_ulong = opcode::read::<Range>(UFFDIO, 0x01) as libc::c_ulong;
const UFFDIO_WAKE: libc::c_ulong = opcode::read::<Range>(UFFDIO, 0x02) as libc::c_ulong;
const UFFDIO_COPY: libc::c_ulong = opcode::read_write::<Copy>(UFFDIO, 0x03) as libc::c_ulong;
const UFFDIO_WRITEPROTECT: libc::c_ulong =
    opcode::read_write::<WriteProtect>(UFFDIO, 0x06) as libc::c_ulong;
const UFFDIO_POISON: libc::c_ulong = opcode::read_write::<Poison>(UFFDIO, 0x08) as libc::c_ulong;

pub const FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
pub const FEATURE_POISON: u64 = 1 << 14;
pub const FEATURE_SIGBUS: u64 = 1 << 7;
const REGISTER_MODE_MISSING: u64 = 1;
const REGISTER_MODE_WP: u64 = 2;
const COPY_MODE_WP: u64 = 2;
const WRITEPROTECT_MODE_WP: u64 = 1;

pub const EVENT_PAGEFAULT: u8 = 0x12;
pub const PAGEFAULT_FLAG_WRITE: u64 = 1;
pub const PAGEFAULT_FLAG_WP: u64 = 2;
/// Only user-space faults (what an unprivileged process may ask for).
const UFFD_USER_MODE_ONLY: libc::c_int = 1;

#[repr(C)]
struct Api {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Range {
    start: u64,
    len: u64,
}

#[repr(C)]
struct Register {
    range: Range,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct Copy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct WriteProtect {
    range: Range,
    mode: u64,
}

#[repr(C)]
struct Poison {
    range: Range,
    mode: u64,
    updated: i64,
}

/// `struct uffd_msg` (32 bytes), of which a page fault uses the event, flags and address.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Message {
    pub event: u8,
    _reserved: [u8; 7],
    pub flags: u64,
    pub address: u64,
    _feature: u64,
}

const _: () = assert!(std::mem::size_of::<Message>() == 32);

/// How the userfaultfd was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Kernel-mode faults are delivered too (/dev/userfaultfd, or the syscall with privilege).
    All,
    /// Only user-space faults: a kernel access to a missing page fails with EFAULT.
    UserOnly,
}

pub struct Userfaultfd {
    fd: OwnedFd,
    pub access: Access,
    pub features: u64,
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new userfaultfd descriptor, non-blocking, with the widest access it can get.
fn open_fd() -> io::Result<(OwnedFd, Access)> {
    if let Ok(dev) = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/userfaultfd")
    {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        // SAFETY: USERFAULTFD_IOC_NEW takes its flags by value and returns a new descriptor.
        let fd = unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW, flags) };
        if fd >= 0 {
            // SAFETY: the kernel just gave us this descriptor.
            return Ok((unsafe { OwnedFd::from_raw_fd(fd) }, Access::All));
        }
    }
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: userfaultfd(2) takes flags and returns a descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) } as RawFd;
    if fd >= 0 {
        // SAFETY: as above.
        return Ok((unsafe { OwnedFd::from_raw_fd(fd) }, Access::All));
    }
    // SAFETY: as above.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY) } as RawFd;
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "userfaultfd: {e}. Open /dev/userfaultfd (root, or a group allowed to read it), \
                 run with CAP_SYS_PTRACE, or set vm.unprivileged_userfaultfd=1"
            ),
        ));
    }
    // SAFETY: as above.
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, Access::UserOnly))
}

impl Userfaultfd {
    /// Opens one with the `wanted` features the kernel has (write-protect tracking at least).
    pub fn open(wanted: u64) -> io::Result<Userfaultfd> {
        let available = {
            let (probe, _) = open_fd()?;
            Self::handshake(&probe, 0)?
        };
        if available & FEATURE_PAGEFAULT_FLAG_WP == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "userfaultfd write-protect (Linux 5.7) is needed",
            ));
        }
        let (fd, access) = open_fd()?;
        let features = Self::handshake(&fd, wanted & available)?;
        Ok(Userfaultfd {
            fd,
            access,
            features: wanted & available & features,
        })
    }

    fn handshake(fd: &OwnedFd, features: u64) -> io::Result<u64> {
        let mut api = Api {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and fills the struct.
        check(unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api) })?;
        Ok(api.features)
    }

    fn ioctl<T>(&self, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
        // SAFETY: every caller passes the struct its request is defined with.
        check(unsafe { libc::ioctl(self.fd.as_raw_fd(), request, arg as *mut T) })
    }

    /// Faults on missing pages and on writes to write-protected pages of the range come here.
    pub fn register(&self, start: usize, len: usize) -> io::Result<()> {
        let mut reg = Register {
            range: Range {
                start: start as u64,
                len: len as u64,
            },
            mode: REGISTER_MODE_MISSING | REGISTER_MODE_WP,
            ioctls: 0,
        };
        self.ioctl(UFFDIO_REGISTER, &mut reg)
    }

    pub fn unregister(&self, start: usize, len: usize) -> io::Result<()> {
        let mut range = Range {
            start: start as u64,
            len: len as u64,
        };
        self.ioctl(UFFDIO_UNREGISTER, &mut range)
    }

    /// Installs `src` at `dst` (whole pages), write-protected unless `writable` so the first
    /// write is seen, and wakes the threads waiting there. EEXIST when a page is already there.
    pub fn copy(&self, dst: usize, src: &[u8], writable: bool) -> io::Result<()> {
        let mut copy = Copy {
            dst: dst as u64,
            src: src.as_ptr() as u64,
            len: src.len() as u64,
            mode: if writable { 0 } else { COPY_MODE_WP },
            copy: 0,
        };
        self.ioctl(UFFDIO_COPY, &mut copy)
    }

    /// Write-protects (or, with `protect` false, unprotects and wakes) a range.
    pub fn write_protect(&self, start: usize, len: usize, protect: bool) -> io::Result<()> {
        let mode = if protect { WRITEPROTECT_MODE_WP } else { 0 };
        let mut wp = WriteProtect {
            range: Range {
                start: start as u64,
                len: len as u64,
            },
            mode,
        };
        self.ioctl(UFFDIO_WRITEPROTECT, &mut wp)
    }

    pub fn wake(&self, start: usize, len: usize) -> io::Result<()> {
        let mut range = Range {
            start: start as u64,
            len: len as u64,
        };
        self.ioctl(UFFDIO_WAKE, &mut range)
    }

    /// Marks a range poisoned: the access that waits there, and any later, gets SIGBUS.
    pub fn poison(&self, start: usize, len: usize) -> io::Result<()> {
        let mut poison = Poison {
            range: Range {
                start: start as u64,
                len: len as u64,
            },
            mode: 0,
            updated: 0,
        };
        self.ioctl(UFFDIO_POISON, &mut poison)
    }

    /// Waits up to `timeout_ms` for messages and reads what is there into `buf`.
    pub fn read(&self, buf: &mut [Message], timeout_ms: i32) -> io::Result<usize> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if ready <= 0 {
            return if ready < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(0)
            };
        }
        let bytes = std::mem::size_of_val(buf);
        // SAFETY: reading plain-old-data messages into a buffer of `bytes` bytes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), bytes) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(n as usize / std::mem::size_of::<Message>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers linux/userfaultfd.h gives, as the kernel's headers spell them.
    #[test]
    fn ioctl_numbers_are_the_kernels() {
        assert_eq!(USERFAULTFD_IOC_NEW, 0xAA00);
        assert_eq!(UFFDIO_API, 0xC018_AA3F);
        assert_eq!(UFFDIO_REGISTER, 0xC020_AA00);
        assert_eq!(UFFDIO_UNREGISTER, 0x8010_AA01);
        assert_eq!(UFFDIO_WAKE, 0x8010_AA02);
        assert_eq!(UFFDIO_COPY, 0xC028_AA03);
        assert_eq!(UFFDIO_WRITEPROTECT, 0xC018_AA06);
        assert_eq!(UFFDIO_POISON, 0xC020_AA08);
    }
}
