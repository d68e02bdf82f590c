//! Translations between the kernel's FUSE vocabulary and the engine's: errnos, file types,
//! times, names and fallocate modes.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cowfs::format::{FileKind, Timespec};
use cowfs::FallocateMode;
use fuser::{Errno, FileType, TimeOrNow};

/// The errno FUSE returns for an engine error. Errors that are not the caller's (I/O,
/// checksums, corruption) are also logged with their reason, which the errno alone loses.
pub(crate) fn errno(e: cowfs::Error) -> Errno {
    if e.errno() == cowfs::Errno::IO || e.errno() == cowfs::Errno::UCLEAN {
        tracing::error!("{e}");
    }
    Errno::from_i32(e.errno().raw_os_error())
}

pub(crate) fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
    }
}

pub(crate) fn system_time(t: Timespec) -> SystemTime {
    match u64::try_from(t.sec) {
        Ok(sec) => UNIX_EPOCH + Duration::new(sec, t.nsec),
        Err(_) => {
            UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs())
                + Duration::from_nanos(t.nsec.into())
        }
    }
}

pub(crate) fn timespec(t: TimeOrNow) -> Timespec {
    let t = match t {
        TimeOrNow::Now => return Timespec::now(),
        TimeOrNow::SpecificTime(t) => t,
    };
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Err(before) => {
            let d = before.duration();
            let (sec, nsec) = (-(d.as_secs() as i64), d.subsec_nanos());
            if nsec == 0 {
                Timespec { sec, nsec }
            } else {
                Timespec {
                    sec: sec - 1,
                    nsec: 1_000_000_000 - nsec,
                }
            }
        }
    }
}

pub(crate) fn name(name: &OsStr) -> &[u8] {
    name.as_bytes()
}

/// fallocate(2) mode bits as FUSE passes them.
pub(crate) fn fallocate_mode(mode: i32) -> Result<FallocateMode, Errno> {
    const KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
    const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE;
    const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE;
    let keep_size = mode & KEEP_SIZE != 0;
    match mode & !KEEP_SIZE {
        0 => Ok(FallocateMode::Allocate { keep_size }),
        PUNCH_HOLE if keep_size => Ok(FallocateMode::PunchHole),
        ZERO_RANGE => Ok(FallocateMode::ZeroRange { keep_size }),
        _ => Err(Errno::EOPNOTSUPP),
    }
}
