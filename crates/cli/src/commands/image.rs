//! The image as a whole: make a filesystem (refusing to overwrite one, or another
//! filesystem, without --force), check it, show what it holds.

use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use cowfs::device::{self, Access, BlockDevice, NbdAddress};
use cowfs::Filesystem;

use crate::size::human;
use crate::CliResult;

use cowfs::{CompressionConfig, MkfsOptions};

use crate::output::{progress, uuid_string};
use crate::target::open;
use crate::{signatures, size};

/// Make a new filesystem on an image file or block device
#[derive(clap::Args)]
pub struct Mkfs {
    pub image: PathBuf,
    /// Size of the filesystem (e.g. 256M, 10G); the image file is created or grown to it
    #[arg(long, value_parser = size::parse)]
    pub size: Option<u64>,
    /// Overwrite an existing cowfs filesystem
    #[arg(long)]
    pub force: bool,
    /// Compress all new data: zstd, zstd:LEVEL (1-19) or lz4
    #[arg(long)]
    pub compress: Option<String>,
    /// Largest file stored inline in metadata, in bytes (0 disables inline files)
    #[arg(long, value_parser = size::parse)]
    pub inline_limit: Option<u64>,
}

impl Mkfs {
    pub fn run(self) -> CliResult {
        let Mkfs {
            image,
            size,
            force,
            compress,
            inline_limit,
        } = self;
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
}

/// Check a filesystem; exit 0 when clean. Never writes to the image
#[derive(clap::Args)]
pub struct Fsck {
    pub image: PathBuf,
}

impl Fsck {
    pub fn run(self) -> CliResult {
        let Fsck { image } = self;
        fsck(&image)
    }
}

/// Show size, usage, block groups and format version
#[derive(clap::Args)]
pub struct Info {
    pub image: PathBuf,
}

impl Info {
    pub fn run(self) -> CliResult {
        let Info { image } = self;
        info(&open(&image, true)?)
    }
}

/// Whether mkfs's target exists; an error unless it is a regular file or a block device.
fn mkfs_target(image: &std::path::Path) -> CliResult<bool> {
    use std::os::unix::fs::FileTypeExt;
    if image.to_str().is_some_and(NbdAddress::is_uri) {
        return Ok(true); // an export always exists; its server made it
    }
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
        (true, _) => device::open(image, Access::ReadWrite).map_err(at)?,
        (false, Some(size)) => device::open(image, Access::Create(size)).map_err(at)?,
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
            Err(_) => signatures::foreign(device.as_ref(), image).map_err(at)?,
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
        crate::output::uuid_string(&info.uuid)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn fsck(image: &Path) -> CliResult {
    let device =
        device::open(image, Access::ReadOnly).map_err(|e| format!("{}: {e}", image.display()))?;
    let bar = progress(0, "verifying data");
    let report = cowfs::fsck::check(device, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    for note in &report.notes {
        println!("note: {note}");
    }
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    println!(
        "{}: {} inodes ({} directories), {} extents, {} of data verified: {}",
        image.display(),
        report.inodes,
        report.directories,
        report.extents,
        human(report.data_bytes_verified),
        if report.is_clean() {
            "clean".to_string()
        } else {
            format!("{} problems", report.problems.len())
        }
    );
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

pub fn info(fs: &Filesystem) -> CliResult {
    let info = fs.info()?;
    println!("format version   {}", info.format_version);
    println!("uuid             {}", uuid_string(&info.uuid));
    println!("generation       {}", info.generation);
    println!(
        "size             {} ({} bytes)",
        human(info.size),
        info.size
    );
    println!(
        "data used        {} ({} bytes)",
        human(info.data_used),
        info.data_used
    );
    println!(
        "free             {} ({} bytes)",
        human(info.free),
        info.free
    );
    println!(
        "metadata space   {} in {} chunk(s)",
        human(info.metadata_bytes),
        info.superblock.meta_chunks.len()
    );
    println!("block groups     {}", info.block_groups.len());
    for g in &info.block_groups {
        println!(
            "  data  logical {:>14}  physical {:>14}  length {:>10}  used {:>10} ({:.0}%)",
            g.logical,
            g.record.physical,
            human(g.record.length),
            human(g.record.used),
            g.record.used as f64 * 100.0 / g.record.length as f64
        );
    }
    for c in &info.superblock.meta_chunks {
        println!(
            "  meta  store {:>16}  physical {:>14}  length {:>10}",
            c.store_offset,
            c.physical,
            human(c.length)
        );
    }
    Ok(ExitCode::SUCCESS)
}
