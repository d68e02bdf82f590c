//! `cowfs`: make, check and inspect cowfs images, work on files inside them offline, run the
//! xfs_io-style interpreter, the demo and the benchmarks. A thin front end: every rule lives
//! in the engine.

mod bench;
mod commands;
mod mounted;
mod output;
mod signatures;
mod size;
mod target;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use target::{open, open_with};

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
    Mkfs(commands::image::Mkfs),
    Fsck(commands::image::Fsck),
    Info(commands::image::Info),
    Ls(commands::files::Ls),
    Stat(commands::files::Stat),
    Mkdir(commands::files::Mkdir),
    Put(commands::files::Put),
    Get(commands::files::Get),
    Cat(commands::files::Cat),
    Rm(commands::files::Rm),
    Mv(commands::files::Mv),
    Ln(commands::files::Ln),
    Truncate(commands::files::Truncate),
    Fallocate(commands::files::Fallocate),
    Reflink(commands::share::Reflink),
    Cp(commands::files::Cp),
    Dedupe(commands::share::Dedupe),
    Subvolume(commands::subvol::Subvolume),
    Snapshot(commands::subvol::Snapshot),
    Defrag(commands::maint::Defrag),
    Balance(commands::maint::Balance),
    Resize(commands::maint::Resize),
    Scrub(commands::maint::Scrub),
    Mkswap(commands::swapfile::Mkswap),
    Mkswapfile(commands::swapfile::Mkswapfile),
    MapSwapfile(commands::swapfile::MapSwapfile),
    Fiemap(commands::maint::Fiemap),
    Chattr(commands::attrs::Chattr),
    Lsattr(commands::attrs::Lsattr),
    Property(commands::attrs::Property),
    Io(commands::io::Io),
    Mount(commands::mount::Mount),
    Umount(commands::mount::Umount),
    Swapon(commands::kswap::Swapon),
    Swapoff(commands::kswap::Swapoff),
    #[command(hide = true)]
    Memload(commands::memload::Memload),
    Demo(commands::demo::Demo),
    Bench(bench::Bench),
}

impl Command {
    fn run(self) -> CliResult {
        match self {
            Command::Mkfs(command) => command.run(),
            Command::Fsck(command) => command.run(),
            Command::Info(command) => command.run(),
            Command::Ls(command) => command.run(),
            Command::Stat(command) => command.run(),
            Command::Mkdir(command) => command.run(),
            Command::Put(command) => command.run(),
            Command::Get(command) => command.run(),
            Command::Cat(command) => command.run(),
            Command::Rm(command) => command.run(),
            Command::Mv(command) => command.run(),
            Command::Ln(command) => command.run(),
            Command::Truncate(command) => command.run(),
            Command::Fallocate(command) => command.run(),
            Command::Reflink(command) => command.run(),
            Command::Cp(command) => command.run(),
            Command::Dedupe(command) => command.run(),
            Command::Subvolume(command) => command.run(),
            Command::Snapshot(command) => command.run(),
            Command::Defrag(command) => command.run(),
            Command::Balance(command) => command.run(),
            Command::Resize(command) => command.run(),
            Command::Scrub(command) => command.run(),
            Command::Mkswap(command) => command.run(),
            Command::Mkswapfile(command) => command.run(),
            Command::MapSwapfile(command) => command.run(),
            Command::Fiemap(command) => command.run(),
            Command::Chattr(command) => command.run(),
            Command::Lsattr(command) => command.run(),
            Command::Property(command) => command.run(),
            Command::Io(command) => command.run(),
            Command::Mount(command) => command.run(),
            Command::Umount(command) => command.run(),
            Command::Swapon(command) => command.run(),
            Command::Swapoff(command) => command.run(),
            Command::Memload(command) => command.run(),
            Command::Demo(command) => command.run(),
            Command::Bench(command) => command.run(),
        }
    }
}

fn main() -> ExitCode {
    // Like every Unix tool: output into a closed pipe (`cowfs info | head`) ends the process
    // quietly instead of failing a print.
    // SAFETY: setting a signal's disposition to the default before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    init_logging();
    let cli = Cli::parse();
    match cli.command.run() {
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
