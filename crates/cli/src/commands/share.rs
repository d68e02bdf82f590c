//! Sharing data between files: reflinks (whole files or ranges) and dedupe.

use crate::size;

use cowfs::DedupeOutcome;
use cowfs::Filesystem;

use crate::CliResult;

use std::path::PathBuf;

use crate::target::done;

/// Reflink: make DST share SRC's data (whole file, or a range)
#[derive(clap::Args)]
pub struct Reflink {
    pub image: PathBuf,
    pub src: String,
    pub dst: String,
    #[arg(long, default_value = "0", value_parser = size::parse)]
    pub src_offset: u64,
    #[arg(long, default_value = "0", value_parser = size::parse)]
    pub dst_offset: u64,
    /// Bytes; the whole file when absent
    #[arg(long, value_parser = size::parse)]
    pub length: Option<u64>,
}

impl Reflink {
    pub fn run(self) -> CliResult {
        let Reflink {
            image,
            src,
            dst,
            src_offset,
            dst_offset,
            length,
        } = self;
        done(&image, |fs| {
            reflink(fs, &src, &dst, src_offset, dst_offset, length)
        })
    }
}

/// Share a range of DST with the identical range of SRC (nothing changes if they differ)
#[derive(clap::Args)]
pub struct Dedupe {
    pub image: PathBuf,
    pub src: String,
    pub dst: String,
    #[arg(long, default_value = "0", value_parser = size::parse)]
    pub src_offset: u64,
    #[arg(long, default_value = "0", value_parser = size::parse)]
    pub dst_offset: u64,
    #[arg(long, value_parser = size::parse)]
    pub length: u64,
}

impl Dedupe {
    pub fn run(self) -> CliResult {
        let Dedupe {
            image,
            src,
            dst,
            src_offset,
            dst_offset,
            length,
        } = self;
        done(&image, |fs| {
            dedupe(fs, &src, &dst, src_offset, dst_offset, length)
        })
    }
}

/// Reflinks a whole file (`length` None) or a range; DST is created when missing.
pub fn reflink(
    fs: &Filesystem,
    src: &str,
    dst: &str,
    src_off: u64,
    dst_off: u64,
    length: Option<u64>,
) -> cowfs::Result<()> {
    let (src, dst) = (fs.resolve(src)?, super::files::open_or_create(fs, dst)?);
    match length {
        None if src_off == 0 && dst_off == 0 => fs.clone_file(src, dst),
        _ => fs
            .clone_range(src, src_off, dst, dst_off, length.unwrap_or(0))
            .map(drop),
    }
}

pub fn dedupe(
    fs: &Filesystem,
    src: &str,
    dst: &str,
    src_off: u64,
    dst_off: u64,
    len: u64,
) -> cowfs::Result<()> {
    match fs.dedupe_range(fs.resolve(src)?, src_off, fs.resolve(dst)?, dst_off, len)? {
        DedupeOutcome::Deduped(n) => println!("deduped {n} bytes"),
        DedupeOutcome::Differs => println!("the ranges differ: nothing shared"),
    }
    Ok(())
}
