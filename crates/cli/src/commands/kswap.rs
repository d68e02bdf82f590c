//! `cowfs swapon`, `cowfs swapoff` and `cowfs swapon --show`: the Linux kernel swapping to a
//! file on a mounted cowfs, in either design (docs/SWAP.md compares them).
//!
//! Pinned (the default): the daemon pins the file first (every activation check, with its
//! reason), then swapon(2) maps it through bmap, by a bind mount of the file outside the mount
//! (`swaps::bind`: swapoff must reach it even when the daemon has died); swapoff(2) comes
//! before the unpin.
//!
//! Through the filesystem (`--through-fs`): the file is opened, activated through that open
//! handle, and a loop device with direct I/O is configured over the same handle; swapon(2)
//! takes the loop device, whose every read and write the daemon serves through the engine.
//! swapoff(2) releases the device, which then lets go of the file, which deactivates it.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use cowfs_fuse::control;
use cowfs_fuse::swaps::{self, SwapArea};

use crate::commands::mount::cowfs_mounts;
use crate::output::{say, Output};
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

/// swapon(2) flags for `priority`.
fn swap_flags(priority: Option<i32>) -> i32 {
    priority.map_or(0, |p| SWAP_FLAG_PREFER | (p & SWAP_FLAG_PRIO_MASK))
}

fn swapon_syscall(name: &Path, priority: Option<i32>) -> io::Result<()> {
    let name = CString::new(name.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `name` is a valid NUL-terminated path.
    match unsafe { libc::swapon(name.as_ptr(), swap_flags(priority)) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// swapon through the filesystem: activate the file, configure a loop device with direct
/// I/O over its swap I/O node, swapon(2) the device. A failure after the activation undoes it.
pub fn swapon_through_fs(path: &Path, priority: Option<i32>) -> CliResult {
    let path = std::fs::canonicalize(path)?;
    flush_before_swapon(&path)?;
    let active = control(&path, control::SWAP_ACTIVATE_THROUGH_FS)?;
    let on = attach_and_swapon(&path, priority);
    if on.is_err() {
        let _ = control(&path, control::SWAP_DEACTIVATE_THROUGH_FS);
    }
    let device = on?;
    println!(
        "{}: swapping through the filesystem (as {}), {active}",
        path.display(),
        device.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A loop device over the swap I/O node of the active swap file `path`, swapped on.
fn attach_and_swapon(path: &Path, priority: Option<i32>) -> CliResult<PathBuf> {
    let name = path.file_name().ok_or("a swap file has a name")?;
    let node = path.with_file_name(std::ffi::OsStr::from_bytes(&control::swap_io_name(
        name.as_bytes(),
    )));
    let io = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&node)
        .map_err(|e| format!("{}: its swap I/O node: {e}", path.display()))?;
    let device = cowfs_fuse::LoopDevice::attach_file(&io, false)
        .map_err(|e| format!("{}: loop device: {e}", path.display()))?;
    // The device detaches by itself once swap lets go of it (it holds the node open).
    swapon_syscall(device.path(), priority).map_err(|e| {
        format!(
            "swapon {} (over {}): {e} (see the kernel log)",
            device.path().display(),
            path.display()
        )
    })?;
    Ok(device.path().to_path_buf())
}

/// The contract's first step, flush, must cover pages dirty in the kernel's page cache (a
/// program's shared mapping): once the file is active their writeback would be refused.
fn flush_before_swapon(path: &Path) -> CliResult<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("{}: flush before swapon: {e}", path.display()))?;
    Ok(())
}

pub fn swapon(path: &Path, priority: Option<i32>) -> CliResult {
    let path = std::fs::canonicalize(path)?;
    flush_before_swapon(&path)?;
    let pinned = control(&path, control::SWAP_ACTIVATE)?;
    let on = swaps::bind(&path).and_then(|bind| {
        swapon_syscall(&bind, priority).inspect_err(|_| {
            let _ = swaps::unbind(&bind);
        })?;
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
    if let Some(device) = cowfs_fuse::loopdev::swap_device_of(&path)? {
        return swapoff_through_fs(&path, &device);
    }
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
        Err(e) if daemon_gone(&e) => {
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

/// swapoff(2) of the loop device a swap file used through the filesystem is behind (the
/// device then detaches), then the file is deactivated: no swap I/O comes any more.
fn swapoff_through_fs(path: &Path, device: &Path) -> CliResult {
    let c_name = c_path(device)?;
    // SAFETY: `c_name` is a valid NUL-terminated path.
    if unsafe { libc::swapoff(c_name.as_ptr()) } != 0 {
        let err = io::Error::last_os_error();
        return Err(format!(
            "swapoff {} (over {}): {err}",
            device.display(),
            path.display()
        )
        .into());
    }
    match control::call(path, control::SWAP_DEACTIVATE_THROUGH_FS, &[]) {
        Ok(reply) => reply.map_err(|refusal| format!("{}: {refusal}", path.display()))?,
        Err(e) if daemon_gone(&e) => {
            eprintln!("{}: swap is off; its daemon is gone ({e})", path.display());
            String::new()
        }
        Err(e) => return Err(format!("{}: {e}", path.display()).into()),
    };
    Ok(ExitCode::SUCCESS)
}

/// The daemon died, or the mount was taken away meanwhile: what it held went with it.
fn daemon_gone(e: &io::Error) -> bool {
    [libc::ENOTCONN, libc::ECONNABORTED, libc::ENOENT].contains(&e.raw_os_error().unwrap_or(0))
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
        "{:<40} {:<10} {:>10} {:>10} {:>5} {:<14} KERNEL NAME",
        "NAME", "MODE", "SIZE", "USED", "PRIO", "COMPRESSION"
    );
    for s in on_cowfs()? {
        let (mode, compression) = match s.kind.as_str() {
            "partition" => ("through-fs", compression_column(&s.file)),
            _ => ("pinned", "-".to_string()),
        };
        println!(
            "{:<40} {:<10} {:>9}K {:>9}K {:>5} {:<14} {}",
            s.file.display(),
            mode,
            s.size_kib,
            s.used_kib,
            s.priority,
            compression,
            s.name.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How a through-filesystem swap file's writes are stored and the ratio achieved so far
/// (`lz4 3.20x`), as its daemon says; `-` when plainly, `?` when the daemon cannot say.
fn compression_column(file: &Path) -> String {
    let status = crate::mounted::place(&file.to_string_lossy())
        .ok()
        .and_then(|place| match place {
            crate::mounted::Place::Mounted { root, path } => {
                crate::mounted::ask(&root, &format!("swap-status {path}")).ok()
            }
            crate::mounted::Place::Image(_) => None,
        });
    let Some(status) = status else {
        return "?".into();
    };
    let field = |name: &str| {
        status
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
    };
    let number = |name: &str| field(name).and_then(|v| v.parse::<f64>().ok());
    match (
        field("compression"),
        number("swapped_out"),
        number("stored"),
    ) {
        (Some("none") | None, _, _) => "-".into(),
        (Some(how), Some(out), Some(stored)) if stored > 0.0 => {
            format!("{how} {:.2}x", out / stored)
        }
        (Some(how), _, _) => format!("{how} -"),
    }
}

/// `swap-status PATH`: an active swap file's mode, compression, and the bytes its swap writes
/// carried and put on the device, as `key=value` words.
pub fn swap_status(fs: &cowfs::Filesystem, path: &str, out: &mut Output) -> cowfs::Result<()> {
    let status = fs
        .swap_status(fs.resolve(path)?)?
        .ok_or_else(|| cowfs::Error::invalid(format!("{path}: not an active swapfile")))?;
    let mode = match status.mode {
        cowfs::SwapMode::Pinned => "pinned",
        cowfs::SwapMode::ThroughFs => "through-fs",
    };
    let compression = status
        .compression
        .map_or("none".to_string(), |c| c.to_string());
    say!(
        out,
        "mode={mode} pages={} compression={compression} swapped_out={} stored={}",
        status.pages,
        status.swapped_out,
        status.stored
    );
    Ok(())
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
    /// Swap through the filesystem (a loop device whose I/O the daemon serves through the
    /// engine): the file may be copy-on-write and checksummed, and may be snapshotted,
    /// balanced and defragmented while active. Pinned extents otherwise
    #[arg(long)]
    pub through_fs: bool,
}

impl Swapon {
    pub fn run(self) -> CliResult {
        let Swapon {
            path,
            priority,
            through_fs,
            ..
        } = self;
        match path {
            Some(path) if through_fs => swapon_through_fs(&path, priority),
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
