//! Swap areas made offline: a swap header on a host file or block device (mkswap), a swap file
//! inside an image (mkswapfile), and where activation would find one (map-swapfile).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::target::{done, open};
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

/// Make a swap file inside an image: empty, NOCOW, preallocated, with a header, mode 0600
#[derive(clap::Args)]
pub struct Mkswapfile {
    pub image: PathBuf,
    pub path: String,
    #[arg(long, value_parser = size::parse)]
    pub size: u64,
    #[arg(long, default_value = "")]
    pub label: String,
    #[arg(long)]
    pub uuid: Option<String>,
}

impl Mkswapfile {
    pub fn run(self) -> CliResult {
        let Mkswapfile {
            image,
            path,
            size,
            label,
            uuid,
        } = self;
        let uuid = uuid
            .map(|u| swap::parse_uuid(&u))
            .transpose()?
            .unwrap_or_else(swap::random_uuid);
        done(&image, |fs| {
            swap::mkswapfile(fs, &path, size, &label, uuid).map(drop)
        })
    }
}

/// Check a swap file as activation would; print its physical start and resume offset
#[derive(clap::Args)]
pub struct MapSwapfile {
    pub image: PathBuf,
    pub path: String,
}

impl MapSwapfile {
    pub fn run(self) -> CliResult {
        let MapSwapfile { image, path } = self;
        let fs = open(&image, false)?;
        let (physical, resume) = swap::map_swapfile(&fs, fs.resolve(&path)?)?;
        println!("Physical start: {physical:>12}");
        println!("Resume offset:  {resume:>12}");
        Ok(ExitCode::SUCCESS)
    }
}
