//! Swap areas: a swap header on a host file or block device (mkswap), a swap file inside an
//! image or on a mount (mkswapfile), and where activation would find one (map-swapfile).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::output::{say, Output};
use crate::target::{done, on_paths, open};
use crate::{size, CliResult};

/// Write a swap header to a host file or block device (--create --size: make the file)
#[derive(clap::Args)]
pub struct Mkswap {
    pub path: PathBuf,
    #[arg(long, default_value = "")]
    pub label: String,
    #[arg(long)]
    pub uuid: Option<String>,
    /// Create the file (NOCOW where supported, preallocated, mode 0600)
    #[arg(long, requires = "size")]
    pub create: bool,
    #[arg(long, value_parser = size::parse)]
    pub size: Option<u64>,
}

impl Mkswap {
    pub fn run(self) -> CliResult {
        let Mkswap {
            path,
            label,
            uuid,
            create,
            size,
        } = self;
        let uuid = uuid
            .map(|u| swap::parse_uuid(&u))
            .transpose()?
            .unwrap_or_else(swap::random_uuid);
        let header = swap::mkswap(&path, if create { size } else { None }, &label, uuid)?;
        println!(
            "Setting up swapspace version 1, size = {} ({} bytes), uuid {}",
            size::human((header.pages - 1) * 4096),
            (header.pages - 1) * 4096,
            crate::output::uuid_string(&header.uuid)
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// Make a swap file: IMAGE PATH, or a PATH inside a mount. Empty, preallocated, with a header,
/// mode 0600; NOCOW for the kernel's pinned use, copy-on-write with --through-fs
#[derive(clap::Args)]
pub struct Mkswapfile {
    #[arg(required = true, num_args = 1..=2, value_names = ["IMAGE", "PATH"])]
    pub args: Vec<String>,
    #[arg(long, value_parser = size::parse)]
    pub size: u64,
    #[arg(long, default_value = "")]
    pub label: String,
    #[arg(long)]
    pub uuid: Option<String>,
    /// For `cowfs swapon --through-fs`: copy-on-write and checksummed, not NOCOW
    #[arg(long)]
    pub through_fs: bool,
}

impl Mkswapfile {
    pub fn run(self) -> CliResult {
        let Mkswapfile {
            args,
            size,
            label,
            uuid,
            through_fs,
        } = self;
        let uuid = uuid
            .map(|u| swap::parse_uuid(&u))
            .transpose()?
            .unwrap_or_else(swap::random_uuid);
        let mode = match through_fs {
            true => cowfs::SwapMode::ThroughFs,
            false => cowfs::SwapMode::Pinned,
        };
        if let [image, path] = &args[..] {
            return done(Path::new(image), |fs| {
                swap::mkswapfile_for(fs, path, size, &label, uuid, mode).map(drop)
            });
        }
        let path = &args[0];
        match crate::mounted::place(path)? {
            crate::mounted::Place::Mounted { .. } => {
                swap::mkswapfile_at(Path::new(path), size, &label, uuid, mode)
                    .map_err(|e| format!("{path}: {e}"))?;
                Ok(ExitCode::SUCCESS)
            }
            crate::mounted::Place::Image(_) => {
                Err(format!("{path}: not inside a cowfs mount (or give the image first)").into())
            }
        }
    }
}

/// Check a swap file as activation would; print its physical start and resume offset: IMAGE
/// PATH, or a PATH inside a mount
#[derive(clap::Args)]
pub struct MapSwapfile {
    #[arg(required = true, num_args = 1..=2, value_names = ["IMAGE", "PATH"])]
    pub args: Vec<String>,
}

impl MapSwapfile {
    pub fn run(self) -> CliResult {
        on_paths(
            &self.args,
            1,
            |p| format!("map-swapfile {}", p[0]),
            |image, p| {
                map_swapfile(&open(image, false)?, &p[0], &mut Output::Terminal)?;
                Ok(ExitCode::SUCCESS)
            },
        )
    }
}

/// Activates `path` as a pinned swap file and deactivates it again, reporting where it starts
/// on the device (and, for hibernation, its resume offset in pages).
pub fn map_swapfile(fs: &cowfs::Filesystem, path: &str, out: &mut Output) -> cowfs::Result<()> {
    let (physical, resume) = swap::map_swapfile(fs, fs.resolve(path)?)?;
    say!(out, "Physical start: {physical:>12}");
    say!(out, "Resume offset:  {resume:>12}");
    Ok(())
}
