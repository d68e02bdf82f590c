//! `cowfs swapon`, `cowfs swapoff` and `cowfs swapon --show`: the Linux kernel swapping to a
//! file on a mounted cowfs. The daemon pins the file first (every activation check, with its
//! reason), then swapon(2) maps it through bmap, by a bind mount of the file outside the mount
//! (`swaps::bind`: swapoff must reach it even when the daemon has died); swapoff(2) comes
//! before the unpin.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use cowfs_fuse::control;
use cowfs_fuse::swaps::{self, SwapArea};

use crate::commands::mount::cowfs_mounts;
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
    // The contract's first step, flush, must cover pages dirty in the kernel's page cache
    // (a program's shared mapping): once the file is active their writeback would be refused.
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("{}: flush before swapon: {e}", path.display()))?;
    let pinned = control(&path, control::SWAP_ACTIVATE)?;
    let flags = priority.map_or(0, |p| SWAP_FLAG_PREFER | (p & SWAP_FLAG_PRIO_MASK));
    let on = swaps::bind(&path).and_then(|bind| {
        let name = CString::new(bind.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: `name` is a valid NUL-terminated path.
        if unsafe { libc::swapon(name.as_ptr(), flags) } != 0 {
            let err = io::Error::last_os_error();
            let _ = swaps::unbind(&bind);
            return Err(err);
        }
        Ok(bind)
    });
    let bind = match on {
        Ok(bind) => bind,
        Err(err) => {
            let _ = control(&path, control::SWAP_DEACTIVATE);
            return Err(format!("swapon {}: {err} (see the kernel log)", path.display()).into());
        }
    };
    println!(
        "{}: swapping (as {}), pinned: {pinned}",
        path.display(),
        bind.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// swapoff(2) of the swap file at `path`, through its bind path when it was swapped on with
/// `cowfs swapon`; then the bind and the pin go. Works when the daemon has died: the path is
/// then taken as given (made absolute, not resolved: resolving it may need the daemon), and
/// there is no pin left to undo. After a plain swapoff of the bind path, it finishes the job.
pub fn swapoff(path: &Path) -> CliResult {
    let path = std::fs::canonicalize(path).or_else(|_| std::path::absolute(path))?;
    let bind = swaps::bind_path(&path)?;
    let bound = swaps::is_bound(&bind)?;
    let area = swaps::areas()?.into_iter().find(|a| a.file == path);
    let name = match &area {
        Some(area) => Some(area.name.as_path()),
        None if bound => None,
        // Not swapped on by `cowfs swapon`: let the kernel say what it is.
        None => Some(path.as_path()),
    };
    if let Some(name) = name {
        let c_name = c_path(name)?;
        // SAFETY: `c_name` is a valid NUL-terminated path.
        if unsafe { libc::swapoff(c_name.as_ptr()) } != 0 {
            let err = io::Error::last_os_error();
            return Err(format!("swapoff {}: {err}", path.display()).into());
        }
    }
    if bound {
        swaps::unbind(&bind).map_err(|e| format!("{}: {e}", bind.display()))?;
    }
    match control::call(&path, control::SWAP_DEACTIVATE, &[]) {
        Ok(reply) => reply.map_err(|refusal| format!("{}: {refusal}", path.display()))?,
        // The daemon died, or the mount was taken away meanwhile (its last bind just went):
        // the pin went with the daemon.
        Err(e)
            if [libc::ENOTCONN, libc::ECONNABORTED, libc::ENOENT]
                .contains(&e.raw_os_error().unwrap_or(0)) =>
        {
            eprintln!(
                "{}: swap is off; no daemon holds its pin ({e})",
                path.display()
            );
            String::new()
        }
        Err(e) => return Err(format!("{}: {e}", path.display()).into()),
    };
    Ok(ExitCode::SUCCESS)
}

/// The kernel's swap areas that are files on cowfs mounts.
pub fn on_cowfs() -> CliResult<Vec<SwapArea>> {
    let mounts = cowfs_mounts()?;
    Ok(swaps::areas()?
        .into_iter()
        .filter(|s| mounts.iter().any(|m| s.file.starts_with(&m.mountpoint)))
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
            s.file.display(),
            s.kind,
            s.size_kib,
            s.used_kib,
            s.priority
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Let the Linux kernel swap to a file on a cowfs mount (fuseblk): pin it, then swapon(2)
#[derive(clap::Args)]
pub struct Swapon {
    #[arg(required_unless_present = "show")]
    pub path: Option<PathBuf>,
    /// Higher is used first, as swapon(8) -p
    #[arg(short = 'p', long, allow_hyphen_values = true)]
    pub priority: Option<i32>,
    /// List the kernel's swap areas on cowfs mounts
    #[arg(long, conflicts_with = "path")]
    pub show: bool,
}

impl Swapon {
    pub fn run(self) -> CliResult {
        let Swapon { path, priority, .. } = self;
        match path {
            Some(path) => swapon(&path, priority),
            None => show(),
        }
    }
}

/// swapoff(2) a file on a cowfs mount, then unpin it
#[derive(clap::Args)]
pub struct Swapoff {
    pub path: PathBuf,
}

impl Swapoff {
    pub fn run(self) -> CliResult {
        let Swapoff { path } = self;
        swapoff(&path)
    }
}
