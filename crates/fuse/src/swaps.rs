//! The kernel's swap areas, from /proc/swaps: which files on a mount the kernel swaps to, so
//! that nothing detaches a mount from under one (after a lazy unmount no path reaches the
//! file, and swapoff(2), which takes a path, could never release it).
//!
//! A cowfs swap file is swapped on through a bind mount of it in a directory cowfs owns
//! ([`BIND_DIR`]), not through its path in the mount. swapoff(2) walks the path it is given,
//! and a walk through the mount's directories may need the daemon (a directory whose cached
//! attributes an unlink in it invalidated must be asked again for its permissions): if the
//! daemon has died, only a path outside the mount still reaches the file. /proc/swaps shows
//! the bind path; [`SwapArea::file`] is the swap file's own path, which the bind's name
//! encodes.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Where swap files on cowfs mounts are bound for the kernel.
pub const BIND_DIR: &str = "/run/cowfs/swap";

/// One line of /proc/swaps.
#[derive(Debug, Clone)]
pub struct SwapArea {
    /// The name the kernel shows (for a cowfs swap file, its bind path).
    pub name: PathBuf,
    /// The swap file: its path in the mount for a cowfs swap file (bound, or behind a loop
    /// device for one used through the filesystem), else the same as `name`.
    pub file: PathBuf,
    pub kind: String,
    pub size_kib: u64,
    pub used_kib: u64,
    pub priority: i32,
}

/// /proc/swaps writes space, tab, newline and backslash in names as octal escapes.
pub fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        match rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out + rest
}

/// The kernel's active swap areas.
pub fn areas() -> io::Result<Vec<SwapArea>> {
    let text = std::fs::read_to_string("/proc/swaps")?;
    let number = |s: &str| {
        s.parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/swaps: {s:?}")))
    };
    let mut areas = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, kind, size, used, priority] = fields[..] else {
            continue;
        };
        let name = PathBuf::from(unescape(name));
        let behind_loop = crate::loopdev::backing_file(&name);
        let file = bound_file(&name)
            .or_else(|| {
                behind_loop
                    .as_deref()
                    .and_then(crate::control::swap_io_file)
            })
            .or(behind_loop)
            .unwrap_or_else(|| name.clone());
        areas.push(SwapArea {
            file,
            name,
            kind: kind.to_string(),
            size_kib: number(size)?,
            used_kib: number(used)?,
            priority: priority
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "/proc/swaps priority"))?,
        });
    }
    Ok(areas)
}

/// The swap areas that are files below `dir`.
pub fn under(dir: &Path) -> io::Result<Vec<SwapArea>> {
    Ok(areas()?
        .into_iter()
        .filter(|a| a.file.starts_with(dir))
        .collect())
}

/// The bind path for the swap file at absolute path `file`: its path, with `%` and `/`
/// (and whatever /proc/swaps would escape) written as `%XX`, in [`BIND_DIR`].
pub fn bind_path(file: &Path) -> io::Result<PathBuf> {
    let mut name = String::new();
    for &byte in file.as_os_str().as_bytes() {
        match byte {
            b'%' | b'/' | b'\\' | b' ' | b'\t' | b'\n' => name.push_str(&format!("%{byte:02X}")),
            _ => name.push(byte as char),
        }
    }
    if name.len() > 255 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: path too long for a swap file", file.display()),
        ));
    }
    Ok(Path::new(BIND_DIR).join(name))
}

/// The swap file a bind path stands for.
fn bound_file(name: &Path) -> Option<PathBuf> {
    let encoded = name.strip_prefix(BIND_DIR).ok()?.to_str()?;
    let mut bytes = Vec::new();
    let mut rest = encoded.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        match (first, tail.get(..2)) {
            (b'%', Some(hex)) => {
                bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                rest = &tail[2..];
            }
            _ => {
                bytes.push(first);
                rest = tail;
            }
        }
    }
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)))
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// Binds the swap file at absolute path `file` to its bind path, which it returns.
pub fn bind(file: &Path) -> io::Result<PathBuf> {
    let bind = bind_path(file)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(BIND_DIR)?;
    std::fs::File::create(&bind)?;
    let (source, target) = (c_path(file)?, c_path(&bind)?);
    // SAFETY: both paths are NUL-terminated; a bind mount takes no filesystem type or data.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        let _ = std::fs::remove_file(&bind);
        return Err(e);
    }
    Ok(bind)
}

/// Whether `bind` is a mount point now, from /proc/self/mountinfo: asking the path itself
/// would ask the mount, whose daemon may be dead.
pub fn is_bound(bind: &Path) -> io::Result<bool> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|at| Path::new(&unescape(at)) == bind))
}

/// Undoes [`bind`] (after swapoff).
pub fn unbind(bind: &Path) -> io::Result<()> {
    let target = c_path(bind)?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    std::fs::remove_file(bind)
}
