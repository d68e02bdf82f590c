//! `cowfs mount` and `cowfs umount`: serve an image over FUSE, in the foreground or as a
//! daemon, and take it down again only once everything is committed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cowfs_fuse::swaps::unescape;
use cowfs_fuse::{daemon, MountOptions};

use crate::CliResult;

/// How long a daemon may take to mount, and `cowfs umount` to see its final commit.
const WAIT: Duration = Duration::from_secs(30);
/// Tells a daemon where its output goes.
const LOG_ENV: &str = "COWFS_DAEMON_LOG";

/// The options only the mount takes.
struct ServeOptions {
    allow_other: bool,
    threads: usize,
    writeback_cache: bool,
}

/// Splits the mount's own options (allow_other, threads=N, writeback_cache) from the
/// engine's open options.
fn split_options(text: Option<&str>) -> CliResult<(ServeOptions, String)> {
    let mut serve = ServeOptions {
        allow_other: false,
        threads: cowfs_fuse::DEFAULT_THREADS,
        writeback_cache: false,
    };
    let mut engine = Vec::new();
    for option in text.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            None if option == "allow_other" => serve.allow_other = true,
            None if option == "writeback_cache" => serve.writeback_cache = true,
            None if option == "rw" || option == "default_permissions" => {}
            Some(("threads", n)) => {
                serve.threads = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| format!("threads={n}: give a count from 1 to 64"))?
            }
            _ => engine.push(option),
        }
    }
    Ok((serve, engine.join(",")))
}

/// How to mount: as `fuseblk` over a loop device (what the kernel can swap to), or plain.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Blkdev {
    /// fuseblk when running as root, plain otherwise.
    Auto,
    Always,
    Never,
}

impl Blkdev {
    fn flag(self) -> Option<&'static str> {
        match self {
            Blkdev::Auto => None,
            Blkdev::Always => Some("--blkdev"),
            Blkdev::Never => Some("--no-blkdev"),
        }
    }

    fn wanted(self) -> bool {
        match self {
            Blkdev::Auto => rustix::process::geteuid().is_root(),
            Blkdev::Always => true,
            Blkdev::Never => false,
        }
    }
}

pub fn mount(
    image: &Path,
    mountpoint: &Path,
    options: Option<&str>,
    blkdev: Blkdev,
    foreground: bool,
) -> CliResult {
    // Checked here, so a bad option is this command's error, not a daemon's; and a mount
    // already there is never taken for the one this command was to make.
    let (serve, engine_options) = split_options(options)?;
    if let Some(image) = mounted_source(&std::fs::canonicalize(mountpoint)?)? {
        return Err(format!(
            "{}: already a cowfs mount (of {}); unmount it first",
            mountpoint.display(),
            image.display()
        )
        .into());
    }
    let export = image
        .to_str()
        .is_some_and(cowfs::device::NbdAddress::is_uri);
    if export && blkdev == Blkdev::Always {
        return Err(format!(
            "{}: --blkdev needs a local image (a loop device over it); an NBD export is mounted plain",
            image.display()
        )
        .into());
    }
    if !foreground {
        return spawn_daemon(image, mountpoint, options, blkdev);
    }
    let opts = crate::target::mount_options(Some(&engine_options))?;
    // Before the filesystem starts its commit thread, which must not take a stop signal, and
    // must be part of the I/O path like every other thread of a daemon the kernel may swap on.
    daemon::block_stop_signals()?;
    if rustix::process::geteuid().is_root() {
        if let Err(e) = daemon::become_io_flusher() {
            tracing::warn!("PR_SET_IO_FLUSHER: {e}");
        }
    }
    let fs = crate::open_with(image, &opts)?;
    let source = match export {
        true => image.display().to_string(),
        false => std::fs::canonicalize(image)?.display().to_string(),
    };
    let mount_options = MountOptions {
        source,
        read_only: opts.read_only,
        allow_other: serve.allow_other,
        block_device: blkdev.wanted() && !export,
        threads: serve.threads,
        writeback_cache: serve.writeback_cache,
    };
    daemon::serve(
        fs,
        mountpoint,
        &mount_options,
        Some(Arc::new(crate::mounted::Interpreter)),
        || tracing::info!("{} mounted at {}", image.display(), mountpoint.display()),
    )
    .map_err(|e| format!("{}: {e}", mountpoint.display()))?;
    // A daemon that ended cleanly leaves no log behind; one that failed keeps it.
    if let Some(log) = std::env::var_os(LOG_ENV) {
        let _ = std::fs::remove_file(log);
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts `cowfs mount --foreground` in a new session, its output in a log file, and returns
/// once the mount is there (or with the daemon's own error if it failed).
fn spawn_daemon(
    image: &Path,
    mountpoint: &Path,
    options: Option<&str>,
    blkdev: Blkdev,
) -> CliResult {
    let mountpoint = std::fs::canonicalize(mountpoint)?;
    let log_path = std::env::temp_dir().join(format!("cowfs-mount-{}.log", std::process::id()));
    let log = File::create(&log_path)?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("mount")
        .arg(image)
        .arg(&mountpoint)
        .arg("--foreground");
    if let Some(options) = options {
        command.arg("-o").arg(options);
    }
    command.args(blkdev.flag());
    command
        .env(LOG_ENV, &log_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the child leaves our session and terminal.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| rustix::process::setsid().map(drop).map_err(Into::into));
    }
    let mut child = command.spawn()?;
    let start = Instant::now();
    while start.elapsed() < WAIT {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let _ = std::fs::remove_file(&log_path);
            return Err(format!("mount failed ({status}): {}", log.trim()).into());
        }
        if mounted_source(&mountpoint)?.is_some() {
            println!(
                "{} mounted at {} (daemon pid {}, log {})",
                image.display(),
                mountpoint.display(),
                child.id(),
                log_path.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "the daemon did not mount within {WAIT:?}; see {}",
        log_path.display()
    )
    .into())
}

/// A cowfs mount: where it is and the image it serves.
pub struct CowfsMount {
    pub mountpoint: PathBuf,
    pub image: PathBuf,
}

/// Every cowfs mount, from /proc/self/mountinfo.
pub fn cowfs_mounts() -> CliResult<Vec<CowfsMount>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut mounts = Vec::new();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount), Some(fstype), Some(source)) =
            (fields.get(4), fields.get(dash + 1), fields.get(dash + 2))
        else {
            continue;
        };
        if fstype.ends_with(".cowfs") {
            mounts.push(CowfsMount {
                mountpoint: PathBuf::from(unescape(mount)),
                image: backing_file(PathBuf::from(unescape(source))),
            });
        }
    }
    Ok(mounts)
}

/// The image a cowfs mount at `mountpoint` serves.
fn mounted_source(mountpoint: &Path) -> CliResult<Option<PathBuf>> {
    Ok(cowfs_mounts()?
        .into_iter()
        .find(|m| m.mountpoint == mountpoint)
        .map(|m| m.image))
}

/// The image behind a loop device (a `fuseblk` mount's source), or the path itself.
fn backing_file(source: PathBuf) -> PathBuf {
    let loop_name = source
        .strip_prefix("/dev")
        .ok()
        .and_then(|n| n.to_str())
        .filter(|n| n.starts_with("loop"));
    let Some(name) = loop_name else { return source };
    match std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")) {
        Ok(path) => PathBuf::from(path.trim_end()),
        Err(_) => source,
    }
}

/// Unmounts a cowfs mount and waits for its daemon's final commit: the daemon holds the
/// image's lock until it has committed and closed it.
pub fn umount(mountpoint: &Path) -> CliResult {
    let mountpoint = std::fs::canonicalize(mountpoint)?;
    let image = mounted_source(&mountpoint)?
        .ok_or_else(|| format!("{}: not a cowfs mount", mountpoint.display()))?;
    if let Some(active) = cowfs_fuse::swaps::under(&mountpoint)?.first() {
        return Err(format!(
            "{}: busy: {} is an active swap file (cowfs swapoff it first)",
            mountpoint.display(),
            active.file.display()
        )
        .into());
    }
    daemon::unmount(&mountpoint).map_err(|e| format!("{}: {e}", mountpoint.display()))?;
    let start = Instant::now();
    loop {
        match cowfs::device::open(&image, cowfs::device::Access::ReadOnly) {
            Ok(_) => return Ok(ExitCode::SUCCESS),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < WAIT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                return Err(
                    format!("{}: waiting for the final commit: {e}", image.display()).into(),
                )
            }
        }
    }
}

/// Mount an image with FUSE (as a daemon unless --foreground); umount or cowfs umount
/// commits everything
#[derive(clap::Args)]
pub struct Mount {
    pub image: PathBuf,
    pub mountpoint: PathBuf,
    /// Options: ro, allow_other, threads=N (serving threads), writeback_cache (the kernel
    /// caches writes: errors then show at fsync or close), compress=zstd[:LEVEL] or
    /// compress=lz4, noatime, relatime (the default), strictatime
    #[arg(short = 'o')]
    pub options: Option<String>,
    /// Serve in this process until unmounted (SIGINT or SIGTERM unmount too)
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Mount as fuseblk over a loop device, so the kernel can swap to files on it (the
    /// default as root)
    #[arg(long, conflicts_with = "no_blkdev")]
    pub blkdev: bool,
    /// Mount as plain fuse even as root
    #[arg(long)]
    pub no_blkdev: bool,
}

impl Mount {
    pub fn run(self) -> CliResult {
        let Mount {
            image,
            mountpoint,
            options,
            foreground,
            blkdev,
            no_blkdev,
        } = self;
        let blkdev = match (blkdev, no_blkdev) {
            (true, _) => Blkdev::Always,
            (_, true) => Blkdev::Never,
            _ => Blkdev::Auto,
        };
        mount(&image, &mountpoint, options.as_deref(), blkdev, foreground)
    }
}

/// Unmount a cowfs mount and wait until its daemon has committed everything
#[derive(clap::Args)]
pub struct Umount {
    pub mountpoint: PathBuf,
}

impl Umount {
    pub fn run(self) -> CliResult {
        let Umount { mountpoint } = self;
        umount(&mountpoint)
    }
}
