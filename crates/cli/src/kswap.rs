//! `cowfs swapon`, `cowfs swapoff` and `cowfs swapon --show`: the Linux kernel swapping to a
//! file on a mounted cowfs. The daemon pins the file first (every activation check, with its
//! reason), then swapon(2) maps it through bmap; swapoff(2) comes before the unpin.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use cowfs_fuse::control;
use cowfs_fuse::swaps::{self, SwapArea};

use crate::mount::cowfs_mounts;
use crate::CliResult;

/// swapon(2) flags: use the priority given, in its low 15 bits.
const SWAP_FLAG_PREFER: i32 = 0x8000;
const SWAP_FLAG_PRIO_MASK: i32 = 0x7fff;

fn c_path(path: &Path) -> CliResult<CString> {
    Ok(CString::new(path.as_os_str().as_bytes())?)
}

/// Runs a control ioctl; the daemon's refusal becomes the error, reason included.
fn control(path: &Path, cmd: u32) -> CliResult<String> {
    let reply = control::call(path, cmd, &[]).map_err(|e| format!("{}: {e}", path.display()))?;
    reply.map_err(|refusal| format!("{}: {refusal}", path.display()).into())
}

pub fn swapon(path: &Path, priority: Option<i32>) -> CliResult {
    let path = std::fs::canonicalize(path)?;
    let pinned = control(&path, control::SWAP_ACTIVATE)?;
    let flags = priority.map_or(0, |p| SWAP_FLAG_PREFER | (p & SWAP_FLAG_PRIO_MASK));
    let name = c_path(&path)?;
    // SAFETY: `name` is a valid NUL-terminated path.
    if unsafe { libc::swapon(name.as_ptr(), flags) } != 0 {
        let err = io::Error::last_os_error();
        let _ = control(&path, control::SWAP_DEACTIVATE);
        return Err(format!("swapon {}: {err} (see the kernel log)", path.display()).into());
    }
    println!("{}: swapping, pinned: {pinned}", path.display());
    Ok(ExitCode::SUCCESS)
}

pub fn swapoff(path: &Path) -> CliResult {
    let path = std::fs::canonicalize(path)?;
    let name = c_path(&path)?;
    // SAFETY: `name` is a valid NUL-terminated path.
    if unsafe { libc::swapoff(name.as_ptr()) } != 0 {
        let err = io::Error::last_os_error();
        return Err(format!("swapoff {}: {err}", path.display()).into());
    }
    control(&path, control::SWAP_DEACTIVATE)?;
    Ok(ExitCode::SUCCESS)
}

/// The kernel's swap areas that are files on cowfs mounts.
pub fn on_cowfs() -> CliResult<Vec<SwapArea>> {
    let mounts = cowfs_mounts()?;
    Ok(swaps::areas()?
        .into_iter()
        .filter(|s| mounts.iter().any(|m| s.name.starts_with(&m.mountpoint)))
        .collect())
}

pub fn show() -> CliResult {
    println!(
        "{:<40} {:<6} {:>10} {:>10} {:>5}",
        "NAME", "TYPE", "SIZE", "USED", "PRIO"
    );
    for s in on_cowfs()? {
        println!(
            "{:<40} {:<6} {:>9}K {:>9}K {:>5}",
            s.name.display(),
            s.kind,
            s.size_kib,
            s.used_kib,
            s.priority
        );
    }
    Ok(ExitCode::SUCCESS)
}
