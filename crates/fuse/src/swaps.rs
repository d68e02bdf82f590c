//! The kernel's swap areas, from /proc/swaps: which files on a mount the kernel swaps to, so
//! that nothing detaches a mount from under one (after a lazy unmount no path reaches the
//! file, and swapoff(2), which takes a path, could never release it).

use std::io;
use std::path::{Path, PathBuf};

/// One line of /proc/swaps.
#[derive(Debug, Clone)]
pub struct SwapArea {
    pub name: PathBuf,
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
        areas.push(SwapArea {
            name: PathBuf::from(unescape(name)),
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
        .filter(|a| a.name.starts_with(dir))
        .collect())
}
