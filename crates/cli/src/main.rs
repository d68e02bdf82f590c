//! `cowfs`: make, check and inspect cowfs images, work on files inside them offline, run the
//! xfs_io-style interpreter, the demo and the benchmarks. A thin front end: every rule lives
//! in the engine.

mod attrs;
mod bench;
mod bench_kswap;
mod bench_pager;
mod bench_swap;
mod demo;
mod files;
mod io_cmd;
mod kswap;
mod memload;
mod mount;
mod mounted;
mod output;
mod signatures;
mod size;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use cowfs::device::{BlockDevice, FileDevice};
use cowfs::{AtimePolicy, CompressionConfig, Filesystem, MkfsOptions, OpenOptions};
use output::Output;

#[derive(Parser)]
#[command(
    name = "cowfs",
    version,
    about = "A copy-on-write filesystem built for swap files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a new filesystem on an image file or block device
    Mkfs {
        image: PathBuf,
        /// Size of the filesystem (e.g. 256M, 10G); the image file is created or grown to it
        #[arg(long, value_parser = size::parse)]
        size: Option<u64>,
        /// Overwrite an existing cowfs filesystem
        #[arg(long)]
        force: bool,
        /// Compress all new data: zstd or zstd:LEVEL (1-19)
        #[arg(long)]
        compress: Option<String>,
        /// Largest file stored inline in metadata, in bytes (0 disables inline files)
        #[arg(long, value_parser = size::parse)]
        inline_limit: Option<u64>,
    },
    /// Check a filesystem; exit 0 when clean. Never writes to the image
    Fsck { image: PathBuf },
    /// Show size, usage, block groups and format version
    Info { image: PathBuf },
    /// List a directory
    Ls {
        image: PathBuf,
        #[arg(default_value = "/")]
        path: String,
        /// Long listing: mode, links, owner, size, time
        #[arg(short = 'l')]
        long: bool,
    },
    /// Show a file's attributes
    Stat { image: PathBuf, path: String },
    /// Make a directory
    Mkdir {
        image: PathBuf,
        path: String,
        /// Make parents as needed; no error if it exists
        #[arg(short = 'p')]
        parents: bool,
    },
    /// Copy a host file into the image
    Put {
        image: PathBuf,
        host_file: PathBuf,
        path: String,
    },
    /// Copy a file out of the image to the host
    Get {
        image: PathBuf,
        path: String,
        host_file: PathBuf,
    },
    /// Print a file's contents
    Cat { image: PathBuf, path: String },
    /// Remove a file, symlink or (with -r) a directory tree
    Rm {
        image: PathBuf,
        path: String,
        #[arg(short = 'r')]
        recursive: bool,
    },
    /// Rename or move
    Mv {
        image: PathBuf,
        from: String,
        to: String,
    },
    /// Make a hard link, or with -s a symbolic link
    Ln {
        image: PathBuf,
        target: String,
        link: String,
        #[arg(short = 's')]
        symbolic: bool,
    },
    /// Set a file's size
    Truncate {
        image: PathBuf,
        path: String,
        #[arg(value_parser = size::parse)]
        size: u64,
    },
    /// Preallocate, punch a hole in, or zero part of a file (as util-linux fallocate)
    Fallocate {
        image: PathBuf,
        path: String,
        #[arg(value_parser = size::parse)]
        offset: u64,
        #[arg(value_parser = size::parse)]
        length: u64,
        /// Do not change the file size
        #[arg(short = 'n', long)]
        keep_size: bool,
        /// Deallocate the range (implies --keep-size)
        #[arg(short = 'p', long, conflicts_with = "zero_range")]
        punch_hole: bool,
        /// Make the range read as zeros, keeping it allocated
        #[arg(short = 'z', long)]
        zero_range: bool,
    },
    /// Reflink: make DST share SRC's data (whole file, or a range)
    Reflink {
        image: PathBuf,
        src: String,
        dst: String,
        #[arg(long, default_value = "0", value_parser = size::parse)]
        src_offset: u64,
        #[arg(long, default_value = "0", value_parser = size::parse)]
        dst_offset: u64,
        /// Bytes; the whole file when absent
        #[arg(long, value_parser = size::parse)]
        length: Option<u64>,
    },
    /// Copy a file inside the image, sharing its extents where it can (cp --reflink=auto)
    Cp {
        image: PathBuf,
        src: String,
        dst: String,
    },
    /// Share a range of DST with the identical range of SRC (nothing changes if they differ)
    Dedupe {
        image: PathBuf,
        src: String,
        dst: String,
        #[arg(long, default_value = "0", value_parser = size::parse)]
        src_offset: u64,
        #[arg(long, default_value = "0", value_parser = size::parse)]
        dst_offset: u64,
        #[arg(long, value_parser = size::parse)]
        length: u64,
    },
    /// Subvolumes: create, delete, list, make read-only
    Subvolume {
        #[command(subcommand)]
        action: SubvolumeAction,
    },
    /// Snapshot a subvolume (SOURCE must be a subvolume's root) as DEST: IMAGE SOURCE DEST, or
    /// SOURCE DEST inside a mount
    Snapshot {
        #[arg(required = true, value_names = ["IMAGE", "SOURCE", "DEST"])]
        args: Vec<String>,
        /// Make the snapshot read-only
        #[arg(short = 'r')]
        read_only: bool,
    },
    /// Rewrite fragmented files contiguously (-r: a whole tree; -c: compress): IMAGE PATH, or a
    /// PATH inside a mount (a tree there is always walked)
    Defrag {
        #[arg(required = true, value_names = ["IMAGE", "PATH"])]
        args: Vec<String>,
        #[arg(short = 'r')]
        recursive: bool,
        #[arg(short = 'c')]
        compress: bool,
    },
    /// Relocate block groups to compact data and return emptied chunks to the device
    Balance {
        /// An image, or any path inside a mount
        target: String,
        /// Only block groups less than this percent full
        #[arg(long)]
        usage: Option<u8>,
    },
    /// Grow or shrink the filesystem: SIZE, +SIZE or -SIZE
    Resize {
        /// An image, or any path inside a mount
        target: String,
        #[arg(allow_hyphen_values = true)]
        size: String,
    },
    /// Read all metadata and data and verify every checksum; exit 4 if anything is damaged
    Scrub {
        /// An image, or any path inside a mount
        target: String,
    },
    /// Write a swap header to a host file or block device (--create --size: make the file)
    Mkswap {
        path: PathBuf,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long)]
        uuid: Option<String>,
        /// Create the file (NOCOW where supported, preallocated, mode 0600)
        #[arg(long, requires = "size")]
        create: bool,
        #[arg(long, value_parser = size::parse)]
        size: Option<u64>,
    },
    /// Make a swap file inside an image: empty, NOCOW, preallocated, with a header, mode 0600
    Mkswapfile {
        image: PathBuf,
        path: String,
        #[arg(long, value_parser = size::parse)]
        size: u64,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long)]
        uuid: Option<String>,
    },
    /// Check a swap file as activation would; print its physical start and resume offset
    MapSwapfile { image: PathBuf, path: String },
    /// Show where a file's extents are, like filefrag -v: IMAGE PATH, or a PATH inside a mount
    Fiemap {
        #[arg(required = true, value_names = ["IMAGE", "PATH"])]
        args: Vec<String>,
    },
    /// Change file attributes: +C (NOCOW), +c (compress), +i (immutable), +a (append only), ...
    Chattr {
        image: PathBuf,
        path: String,
        /// Changes such as +C, -i, =c
        #[arg(required = true, allow_hyphen_values = true, num_args = 1..)]
        changes: Vec<String>,
    },
    /// Show file attributes (of a directory's entries; with -d, of the directory itself)
    Lsattr {
        image: PathBuf,
        #[arg(default_value = "/")]
        path: String,
        #[arg(short = 'd')]
        directory: bool,
    },
    /// Run commands over one open filesystem (xfs_io style): -c "write /f 0 4k 0xab"
    Io {
        image: PathBuf,
        /// Mount options: compress=zstd[:LEVEL]
        #[arg(short = 'o')]
        options: Option<String>,
        #[arg(short = 'c', required = true)]
        commands: Vec<String>,
    },
    /// Mount an image with FUSE (as a daemon unless --foreground); umount or cowfs umount
    /// commits everything
    Mount {
        image: PathBuf,
        mountpoint: PathBuf,
        /// Options: ro, allow_other, threads=N (serving threads), compress=zstd[:LEVEL],
        /// noatime, relatime (the default), strictatime
        #[arg(short = 'o')]
        options: Option<String>,
        /// Serve in this process until unmounted (SIGINT or SIGTERM unmount too)
        #[arg(short = 'f', long)]
        foreground: bool,
        /// Mount as fuseblk over a loop device, so the kernel can swap to files on it (the
        /// default as root)
        #[arg(long, conflicts_with = "no_blkdev")]
        blkdev: bool,
        /// Mount as plain fuse even as root
        #[arg(long)]
        no_blkdev: bool,
    },
    /// Unmount a cowfs mount and wait until its daemon has committed everything
    Umount { mountpoint: PathBuf },
    /// Let the Linux kernel swap to a file on a cowfs mount (fuseblk): pin it, then swapon(2)
    Swapon {
        #[arg(required_unless_present = "show")]
        path: Option<PathBuf>,
        /// Higher is used first, as swapon(8) -p
        #[arg(short = 'p', long, allow_hyphen_values = true)]
        priority: Option<i32>,
        /// List the kernel's swap areas on cowfs mounts
        #[arg(long, conflicts_with = "path")]
        show: bool,
    },
    /// swapoff(2) a file on a cowfs mount, then unpin it
    Swapoff { path: PathBuf },
    /// Use SIZE of memory in a memory cgroup limited to LIMIT, so the kernel swaps, and check
    /// every page (the kernel-swap test and benchmark run it)
    #[command(hide = true)]
    Memload {
        #[arg(long, value_parser = size::parse)]
        size: u64,
        #[arg(long, value_parser = size::parse)]
        limit: Option<u64>,
        #[arg(long, default_value_t = 4)]
        threads: usize,
    },
    /// The guided tour: make a scratch image, write, read back, check
    Demo {
        /// Where to make the scratch image (a temporary directory by default)
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also have the Linux kernel swap to a cowfs file (root, FUSE, loop devices)
        #[arg(long)]
        kernel: bool,
    },
    /// Benchmarks (not tests)
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

#[derive(Subcommand)]
enum SubvolumeAction {
    /// Make an empty subvolume at PATH: IMAGE PATH, or a PATH inside a mount
    Create {
        #[arg(required = true, value_names = ["IMAGE", "PATH"])]
        args: Vec<String>,
    },
    /// Delete the subvolume at PATH and everything in it: IMAGE PATH, or a PATH inside a mount
    Delete {
        #[arg(required = true, value_names = ["IMAGE", "PATH"])]
        args: Vec<String>,
    },
    /// List every subvolume (of an image, or of the mount a path is in)
    List { target: String },
    /// Make the subvolume at PATH read-only (true) or writable (false)
    Readonly {
        image: PathBuf,
        path: String,
        #[arg(action = clap::ArgAction::Set)]
        read_only: bool,
    },
}

fn main() -> ExitCode {
    // Like every Unix tool: output into a closed pipe (`cowfs info | head`) ends the process
    // quietly instead of failing a print.
    // SAFETY: setting a signal's disposition to the default before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    init_logging();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cowfs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the libraries and the mount daemon log goes to stderr, filtered by `COWFS_LOG`
/// (`info` unless set; `COWFS_LOG=debug`, or per crate, `cowfs_pager=debug`). A command's own
/// output and errors are printed, not logged.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_FILTER_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// The environment variable that sets what is logged.
const LOG_FILTER_ENV: &str = "COWFS_LOG";

pub type CliResult<T = ExitCode> = Result<T, Box<dyn std::error::Error>>;

fn run(command: Command) -> CliResult {
    match command {
        Command::Mkfs {
            image,
            size,
            force,
            compress,
            inline_limit,
        } => {
            let compress = compress
                .map(|c| CompressionConfig::parse(&c))
                .transpose()?
                .flatten();
            mkfs(
                &image,
                MkfsOptions {
                    size,
                    compress,
                    ..MkfsOptions::default()
                },
                force,
                inline_limit,
            )
        }
        Command::Mount {
            image,
            mountpoint,
            options,
            foreground,
            blkdev,
            no_blkdev,
        } => {
            let blkdev = match (blkdev, no_blkdev) {
                (true, _) => mount::Blkdev::Always,
                (_, true) => mount::Blkdev::Never,
                _ => mount::Blkdev::Auto,
            };
            mount::mount(&image, &mountpoint, options.as_deref(), blkdev, foreground)
        }
        Command::Umount { mountpoint } => mount::umount(&mountpoint),
        Command::Swapon {
            path: Some(path),
            priority,
            ..
        } => kswap::swapon(&path, priority),
        Command::Swapon { path: None, .. } => kswap::show(),
        Command::Swapoff { path } => kswap::swapoff(&path),
        Command::Memload {
            size,
            limit,
            threads,
        } => memload::run(size, limit, threads),
        Command::Fsck { image } => files::fsck(&image),
        Command::Info { image } => files::info(&open(&image, true)?),
        Command::Ls { image, path, long } => files::ls(&open(&image, true)?, &path, long),
        Command::Stat { image, path } => files::stat(&open(&image, true)?, &path),
        Command::Mkdir {
            image,
            path,
            parents,
        } => done(&image, |fs| files::mkdir(fs, &path, parents)),
        Command::Put {
            image,
            host_file,
            path,
        } => done(&image, |fs| files::put(fs, &host_file, &path)),
        Command::Get {
            image,
            path,
            host_file,
        } => files::get(&open(&image, true)?, &path, &host_file),
        Command::Cat { image, path } => files::cat(&open(&image, true)?, &path),
        Command::Rm {
            image,
            path,
            recursive,
        } => done(&image, |fs| files::rm(fs, &path, recursive)),
        Command::Mv { image, from, to } => done(&image, |fs| files::mv(fs, &from, &to)),
        Command::Ln {
            image,
            target,
            link,
            symbolic,
        } => done(&image, |fs| files::ln(fs, &target, &link, symbolic)),
        Command::Truncate { image, path, size } => {
            done(&image, |fs| files::truncate(fs, &path, size))
        }
        Command::Fallocate {
            image,
            path,
            offset,
            length,
            keep_size,
            punch_hole,
            zero_range,
        } => {
            let mode = files::fallocate_mode(keep_size, punch_hole, zero_range);
            done(&image, |fs| {
                fs.fallocate(files::open_or_create(fs, &path)?, mode, offset, length)
            })
        }
        Command::Reflink {
            image,
            src,
            dst,
            src_offset,
            dst_offset,
            length,
        } => done(&image, |fs| {
            files::reflink(fs, &src, &dst, src_offset, dst_offset, length)
        }),
        Command::Dedupe {
            image,
            src,
            dst,
            src_offset,
            dst_offset,
            length,
        } => done(&image, |fs| {
            files::dedupe(fs, &src, &dst, src_offset, dst_offset, length)
        }),
        Command::Subvolume { action } => subvolume(action),
        Command::Snapshot { args, read_only } => {
            let flag = if read_only { "-r " } else { "" };
            on_paths(
                &args,
                2,
                |p| format!("snapshot {flag}{} {}", p[0], p[1]),
                |image, p| done(image, |fs| files::snapshot(fs, &p[0], &p[1], read_only)),
            )
        }
        Command::Defrag {
            args,
            recursive,
            compress,
        } => {
            let flag = if compress { "-c " } else { "" };
            on_paths(
                &args,
                1,
                |p| format!("defrag {flag}{}", p[0]),
                |image, p| {
                    done(image, |fs| {
                        files::defrag(fs, &p[0], recursive, compress, &mut Output::Terminal)
                    })
                },
            )
        }
        Command::Balance { target, usage } => {
            let filter = usage.map(|u| format!(" --usage {u}")).unwrap_or_default();
            on_target(&target, &format!("balance{filter}"), |image| {
                done(image, |fs| files::balance(fs, usage, &mut Output::Terminal))
            })
        }
        Command::Resize { target, size } => {
            on_target(&target, &format!("resize {size}"), |image| {
                done(image, |fs| files::resize(fs, &size, &mut Output::Terminal))
            })
        }
        Command::Scrub { target } => on_target(&target, "scrub", |image| {
            let clean = files::scrub(&open(image, true)?, &mut Output::Terminal)?;
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(4)
            })
        }),
        Command::Mkswap {
            path,
            label,
            uuid,
            create,
            size,
        } => {
            let uuid = uuid
                .map(|u| swap::parse_uuid(&u))
                .transpose()?
                .unwrap_or_else(swap::random_uuid);
            let header = swap::mkswap(&path, if create { size } else { None }, &label, uuid)?;
            println!(
                "Setting up swapspace version 1, size = {} ({} bytes), uuid {}",
                size::human((header.pages - 1) * 4096),
                (header.pages - 1) * 4096,
                files::uuid_string(&header.uuid)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Mkswapfile {
            image,
            path,
            size,
            label,
            uuid,
        } => {
            let uuid = uuid
                .map(|u| swap::parse_uuid(&u))
                .transpose()?
                .unwrap_or_else(swap::random_uuid);
            done(&image, |fs| {
                swap::mkswapfile(fs, &path, size, &label, uuid).map(drop)
            })
        }
        Command::MapSwapfile { image, path } => {
            let fs = open(&image, false)?;
            let (physical, resume) = swap::map_swapfile(&fs, fs.resolve(&path)?)?;
            println!("Physical start: {physical:>12}");
            println!("Resume offset:  {resume:>12}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Fiemap { args } => on_paths(
            &args,
            1,
            |p| format!("fiemap {}", p[0]),
            |image, p| {
                files::fiemap(&open(image, true)?, &p[0], &mut Output::Terminal)?;
                Ok(ExitCode::SUCCESS)
            },
        ),
        Command::Cp { image, src, dst } => done(&image, |fs| {
            let (from, to) = (fs.resolve(&src)?, files::open_or_create(fs, &dst)?);
            fs.setattr(
                to,
                &cowfs::SetAttr {
                    size: Some(0),
                    ..cowfs::SetAttr::default()
                },
            )?;
            fs.copy_file_range(from, 0, to, 0, fs.getattr(from)?.size)
                .map(drop)
        }),
        Command::Chattr {
            image,
            path,
            changes,
        } => done(&image, |fs| files::chattr(fs, &path, &changes)),
        Command::Lsattr {
            image,
            path,
            directory,
        } => files::lsattr(&open(&image, true)?, &path, directory),
        Command::Io {
            image,
            options,
            commands,
        } => {
            let opts = mount_options(options.as_deref())?;
            io_cmd::run(&open_with(&image, &opts)?, &commands)
        }
        Command::Demo { dir, kernel } => demo::run(dir, kernel),
        Command::Bench { which } => bench::run(which),
    }
}

fn subvolume(action: SubvolumeAction) -> CliResult {
    match action {
        SubvolumeAction::Create { args } => on_paths(
            &args,
            1,
            |p| format!("subvol create {}", p[0]),
            |image, p| {
                done(image, |fs| {
                    let (dir, name) = fs.resolve_parent(&p[0])?;
                    fs.create_subvolume(dir, name.as_bytes()).map(drop)
                })
            },
        ),
        SubvolumeAction::Delete { args } => on_paths(
            &args,
            1,
            |p| format!("subvol delete {}", p[0]),
            |image, p| {
                done(image, |fs| {
                    let (dir, name) = fs.resolve_parent(&p[0])?;
                    fs.delete_subvolume(dir, name.as_bytes())
                })
            },
        ),
        SubvolumeAction::List { target } => on_target(&target, "subvol list", |image| {
            files::list_subvolumes(&open(image, true)?, &mut Output::Terminal)?;
            Ok(ExitCode::SUCCESS)
        }),
        SubvolumeAction::Readonly {
            image,
            path,
            read_only,
        } => done(&image, |fs| {
            fs.set_subvolume_read_only(files::subvolume_at(fs, &path)?, read_only)
        }),
    }
}

/// Runs a command whose arguments are `paths` paths: after an image (IMAGE PATH...), or, with
/// the image left out, paths inside one cowfs mount, whose daemon then runs `line(paths)`.
fn on_paths(
    args: &[String],
    paths: usize,
    line: impl FnOnce(&[String]) -> String,
    offline: impl FnOnce(&std::path::Path, &[String]) -> CliResult,
) -> CliResult {
    if args.len() == paths + 1 {
        return offline(std::path::Path::new(&args[0]), &args[1..]);
    }
    if args.len() != paths {
        return Err(format!(
            "expected {paths} path(s) inside a mount, or an image and {paths} path(s) in it; got {} argument(s)",
            args.len()
        )
        .into());
    }
    let mut root = None;
    let mut inside = Vec::new();
    for arg in args {
        match mounted::place(arg)? {
            mounted::Place::Mounted { root: r, path } if root.as_ref().is_none_or(|p| *p == r) => {
                root = Some(r);
                inside.push(path);
            }
            mounted::Place::Mounted { .. } => return Err(format!("{arg}: on another mount").into()),
            mounted::Place::Image(_) => {
                return Err(
                    format!("{arg}: not inside a cowfs mount (or give the image first)").into(),
                )
            }
        }
    }
    let root = root.ok_or("no path given")?;
    mounted::run(&root, &line(&inside))
}

/// Runs a whole-filesystem command on an image, or through the daemon of the mount `target`
/// is in.
fn on_target(
    target: &str,
    line: &str,
    offline: impl FnOnce(&std::path::Path) -> CliResult,
) -> CliResult {
    match mounted::place(target)? {
        mounted::Place::Mounted { root, .. } => mounted::run(&root, line),
        mounted::Place::Image(image) => offline(&image),
    }
}

/// Parses `-o` options as a mount would: `compress=zstd[:LEVEL]`, `ro`.
fn mount_options(text: Option<&str>) -> CliResult<OpenOptions> {
    let mut opts = OpenOptions::default();
    for option in text.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("compress", how)) => opts.compress = CompressionConfig::parse(how)?,
            None if option == "ro" => opts.read_only = true,
            None if option == "noatime" => opts.atime = AtimePolicy::Never,
            None if option == "relatime" => opts.atime = AtimePolicy::Relative,
            None if option == "strictatime" => opts.atime = AtimePolicy::Always,
            _ => {
                return Err(format!(
                "unknown option {option:?} (try compress=zstd, ro, noatime, relatime, strictatime)"
            )
                .into())
            }
        }
    }
    Ok(opts)
}

/// Opens an image; read-only opens never write to it.
pub fn open(image: &std::path::Path, read_only: bool) -> CliResult<Filesystem> {
    let opts = OpenOptions {
        read_only,
        ..OpenOptions::default()
    };
    open_with(image, &opts)
}

/// Opens an image with `opts`, and says what opening repaired (never silently).
pub fn open_with(image: &std::path::Path, opts: &OpenOptions) -> CliResult<Filesystem> {
    let fs = Filesystem::open_path(image, opts).map_err(|e| format!("{}: {e}", image.display()))?;
    for note in fs.open_notes() {
        eprintln!("cowfs: {}: {note}", image.display());
    }
    Ok(fs)
}

/// Opens an image read-write, runs one change, and unmounts (committing it).
fn done(image: &std::path::Path, f: impl FnOnce(&Filesystem) -> cowfs::Result<()>) -> CliResult {
    let fs = open(image, false)?;
    let result = f(&fs);
    fs.unmount()?;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Whether mkfs's target exists; an error unless it is a regular file or a block device.
fn mkfs_target(image: &std::path::Path) -> CliResult<bool> {
    use std::os::unix::fs::FileTypeExt;
    let kind = match std::fs::metadata(image) {
        Ok(meta) => meta.file_type(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("{}: {e}", image.display()).into()),
    };
    let what = if kind.is_file() || kind.is_block_device() {
        return Ok(true);
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else {
        "a socket"
    };
    Err(format!(
        "{}: is {what}; cowfs makes a filesystem in a regular file (an image) or on a block device",
        image.display()
    )
    .into())
}

fn mkfs(
    image: &std::path::Path,
    opts: MkfsOptions,
    force: bool,
    inline_limit: Option<u64>,
) -> CliResult {
    let inline_limit = inline_limit
        .map(u32::try_from)
        .transpose()
        .map_err(|_| "the inline limit is too large")?;
    let opts = MkfsOptions {
        inline_limit,
        ..opts
    };
    let existing = mkfs_target(image)?;
    let at = |e: std::io::Error| format!("{}: {e}", image.display());
    let device: Arc<dyn BlockDevice> = match (existing, opts.size) {
        (true, _) => Arc::new(FileDevice::open(image).map_err(at)?),
        (false, Some(size)) => Arc::new(FileDevice::create(image, size).map_err(at)?),
        (false, None) => {
            return Err(format!(
                "{}: does not exist; give --size to create it",
                image.display()
            )
            .into())
        }
    };
    if existing && !force {
        let found = match cowfs::scan_superblocks(device.as_ref()).best() {
            Ok(_) => Some("a cowfs filesystem".to_string()),
            Err(_) => signatures::foreign(image).map_err(at)?,
        };
        if let Some(found) = found {
            return Err(format!(
                "{}: already holds {found}; use --force to overwrite it",
                image.display()
            )
            .into());
        }
    }
    if let Some(size) = opts.size {
        if device.len() < size {
            device.resize(size)?;
        }
    }
    Filesystem::mkfs(device, &opts)?;
    let fs = open(image, true)?;
    let info = fs.info()?;
    println!(
        "made cowfs format v{} on {}: {} ({} bytes), uuid {}",
        info.format_version,
        image.display(),
        size::human(info.size),
        info.size,
        files::uuid_string(&info.uuid)
    );
    Ok(ExitCode::SUCCESS)
}
