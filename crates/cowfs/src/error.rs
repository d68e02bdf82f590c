//! The engine's one error type: an errno (what every front end speaks: FUSE, the swap contract,
//! the CLI) and a one-line reason a person can act on.

use std::fmt;
use std::sync::Arc;

pub use rustix::io::Errno;

/// An engine error: an errno and the reason, e.g. `EIO: checksum mismatch in /a at offset 8192`.
/// Where it came from another library's error, that error is kept as its source.
#[derive(Clone)]
pub struct Error {
    errno: Errno,
    reason: String,
    origin: Origin,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// Two errors are equal when they say the same; their sources are not compared.
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        (self.errno, &self.reason, self.origin) == (other.errno, &other.reason, other.origin)
    }
}

impl Eq for Error {}

/// What an error says about the filesystem, which decides whether it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A request that could not be done; judged by its errno.
    Request,
    /// The data read is bad (a checksum mismatch); the filesystem's state is sound.
    Data,
    /// The device failed a write or a flush, whatever its errno: what is on disk is unknown.
    DeviceWrite,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(errno: Errno, reason: impl Into<String>) -> Self {
        Error {
            errno,
            reason: reason.into(),
            origin: Origin::Request,
            source: None,
        }
    }

    /// A data block failed its checksum: EIO for the reader, but the filesystem is sound.
    pub fn checksum(reason: impl Into<String>) -> Self {
        Error {
            origin: Origin::Data,
            ..Error::new(Errno::IO, reason)
        }
    }

    /// The device failed a write or flush: the errno is the device's (EIO, ENOSPC, EDQUOT,
    /// EFBIG ...), and the filesystem no longer knows what is on disk.
    pub fn device_write(context: &str, err: &std::io::Error) -> Self {
        Error {
            origin: Origin::DeviceWrite,
            ..Error::io(context, err)
        }
    }

    pub fn is_data_error(&self) -> bool {
        self.origin == Origin::Data
    }

    pub fn is_device_write_error(&self) -> bool {
        self.origin == Origin::DeviceWrite
    }

    /// Whether the filesystem must stop taking changes after this error: a failed device
    /// write or flush, an I/O error, or damaged metadata (not a bad data block).
    pub fn stops_the_filesystem(&self) -> bool {
        match self.origin {
            Origin::DeviceWrite => true,
            Origin::Data => false,
            Origin::Request => matches!(self.errno, Errno::IO | Errno::UCLEAN),
        }
    }

    pub fn errno(&self) -> Errno {
        self.errno
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Metadata or a structure read from the device is not what the format says.
    pub fn corrupt(reason: impl Into<String>) -> Self {
        Error::new(Errno::UCLEAN, reason)
    }

    pub fn io(context: &str, err: &std::io::Error) -> Self {
        let errno = crate::device::os_errno(err).unwrap_or(Errno::IO);
        Error::new(errno, format!("{context}: {err}"))
    }

    pub fn not_found(what: impl fmt::Display) -> Self {
        Error::new(Errno::NOENT, format!("{what}: no such file or directory"))
    }

    pub fn invalid(reason: impl Into<String>) -> Self {
        Error::new(Errno::INVAL, reason)
    }

    pub fn no_space(reason: impl Into<String>) -> Self {
        Error::new(Errno::NOSPC, reason)
    }

    /// The name of the errno, `EIO`, as the kernel logs it.
    pub fn errno_name(&self) -> &'static str {
        errno_name(self.errno)
    }

    /// The C library's message for the errno, `Text file busy`.
    pub fn strerror(&self) -> String {
        strerror(self.errno)
    }
}

/// The C library's message for an errno, as `strerror(3)` prints it.
pub fn strerror(errno: Errno) -> String {
    let msg = std::io::Error::from_raw_os_error(errno.raw_os_error()).to_string();
    // std appends " (os error N)"; people expect the bare message.
    match msg.rfind(" (os error") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

pub fn errno_name(errno: Errno) -> &'static str {
    const NAMES: &[(Errno, &str)] = &[
        (Errno::PERM, "EPERM"),
        (Errno::NOENT, "ENOENT"),
        (Errno::IO, "EIO"),
        (Errno::BADF, "EBADF"),
        (Errno::NOMEM, "ENOMEM"),
        (Errno::ACCESS, "EACCES"),
        (Errno::BUSY, "EBUSY"),
        (Errno::EXIST, "EEXIST"),
        (Errno::XDEV, "EXDEV"),
        (Errno::NOTDIR, "ENOTDIR"),
        (Errno::ISDIR, "EISDIR"),
        (Errno::INVAL, "EINVAL"),
        (Errno::TXTBSY, "ETXTBSY"),
        (Errno::FBIG, "EFBIG"),
        (Errno::NOSPC, "ENOSPC"),
        (Errno::ROFS, "EROFS"),
        (Errno::MLINK, "EMLINK"),
        (Errno::NAMETOOLONG, "ENAMETOOLONG"),
        (Errno::NOTEMPTY, "ENOTEMPTY"),
        (Errno::LOOP, "ELOOP"),
        (Errno::NOTSUP, "EOPNOTSUPP"),
        (Errno::UCLEAN, "EUCLEAN"),
        (Errno::OVERFLOW, "EOVERFLOW"),
        (Errno::NODATA, "ENODATA"),
        (Errno::NOSYS, "ENOSYS"),
        (Errno::RANGE, "ERANGE"),
    ];
    NAMES
        .iter()
        .find(|(e, _)| *e == errno)
        .map(|(_, n)| *n)
        .unwrap_or("E?")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.errno_name(), self.reason)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(
            std::io::Error::from_raw_os_error(e.errno.raw_os_error()).kind(),
            e.to_string(),
        )
    }
}

/// Errors from the metadata store, classified by redb's variant: damage the store found is
/// EUCLEAN; a failure of its I/O is a failure of the device under it, which stops the
/// filesystem like any device error, with the device's errno; anything else is EIO. The
/// redb error is kept as the source.
pub(crate) fn store_error(context: &str, err: impl Into<redb::Error>) -> Error {
    let err: redb::Error = err.into();
    let (errno, origin) = match &err {
        redb::Error::Corrupted(_) | redb::Error::UpgradeRequired(_) => {
            (Errno::UCLEAN, Origin::Request)
        }
        redb::Error::Io(io) => (
            // The metadata space's own "no room left" has no OS errno: ENOSPC, not EIO.
            crate::device::os_errno(io).unwrap_or(match io.kind() {
                std::io::ErrorKind::StorageFull => Errno::NOSPC,
                _ => Errno::IO,
            }),
            Origin::DeviceWrite,
        ),
        redb::Error::Backend(_) | redb::Error::PreviousIo => (Errno::IO, Origin::DeviceWrite),
        _ => (Errno::IO, Origin::Request),
    };
    Error {
        errno,
        reason: format!("metadata store: {context}: {err}"),
        origin,
        source: Some(Arc::new(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_are_classified_by_variant_and_keep_their_source() {
        let damaged = store_error("get", redb::Error::Corrupted("page 7".into()));
        assert_eq!(damaged.errno(), Errno::UCLEAN);
        assert!(damaged.stops_the_filesystem());
        let no_room = std::io::Error::new(std::io::ErrorKind::StorageFull, "no metadata space");
        let failed = store_error("put", redb::Error::Io(no_room));
        assert_eq!(failed.errno(), Errno::NOSPC, "the metadata space is full");
        let full = std::io::Error::from_raw_os_error(Errno::NOSPC.raw_os_error());
        let failed = store_error("commit", redb::Error::Io(full));
        assert_eq!(failed.errno(), Errno::NOSPC, "the device's errno");
        assert!(failed.is_device_write_error() && failed.stops_the_filesystem());
        let source = std::error::Error::source(&failed).expect("the redb error is kept");
        assert!(source.to_string().contains("No space left"), "{source}");
    }
}
