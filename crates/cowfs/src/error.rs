//! The engine's one error type: an errno (what every front end speaks: FUSE, the swap contract,
//! the CLI) and a one-line reason a person can act on.

use std::fmt;

pub use rustix::io::Errno;

/// An engine error: an errno and the reason, e.g. `EIO: checksum mismatch in /a at offset 8192`.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    errno: Errno,
    reason: String,
    /// The error is about the data read (a checksum mismatch), not the filesystem's state.
    data: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(errno: Errno, reason: impl Into<String>) -> Self {
        Error {
            errno,
            reason: reason.into(),
            data: false,
        }
    }

    /// A data block failed its checksum: EIO for the reader, but the filesystem is sound.
    pub fn checksum(reason: impl Into<String>) -> Self {
        Error {
            errno: Errno::IO,
            reason: reason.into(),
            data: true,
        }
    }

    pub fn is_data_error(&self) -> bool {
        self.data
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
        let errno = err
            .raw_os_error()
            .map(Errno::from_raw_os_error)
            .unwrap_or(Errno::IO);
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

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(
            std::io::Error::from_raw_os_error(e.errno.raw_os_error()).kind(),
            e.to_string(),
        )
    }
}

/// Errors from the metadata store. redb reports corruption and I/O failures; the engine keeps
/// their text and gives them an errno.
pub(crate) fn store_error(context: &str, err: impl fmt::Display) -> Error {
    let text = err.to_string();
    let errno = if text.contains("orrupt") || text.contains("checksum") {
        Errno::UCLEAN
    } else {
        Errno::IO
    };
    Error::new(errno, format!("metadata store: {context}: {text}"))
}
