//! `cowfs bench`: throughput figures, each measured beside its peer in the same run and
//! reported as a ratio, because absolute times on a shared machine are noise.

use std::fs::OpenOptions as HostOpen;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Subcommand;
use cowfs::device::{AlignedBuf, FileDevice};
use cowfs::format::FileKind;
use cowfs::{CreateAttrs, Filesystem, InodeId, MkfsOptions, OpenOptions};

use crate::size::{self, human};
use crate::CliResult;

#[derive(Subcommand)]
pub enum Which {
    /// Sequential write and read of one file: engine (direct and buffered) against raw O_DIRECT
    Fs {
        /// File size
        #[arg(long, default_value = "1G", value_parser = size::parse)]
        size: u64,
        /// Where to put the image and the raw file (the current directory by default)
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// I/O size of each call, for the engine and the raw peer alike.
const DIRECT_CHUNK: usize = 4 << 20;
const BUFFERED_CHUNK: usize = 1 << 20;

pub fn run(which: Which) -> CliResult {
    match which {
        Which::Fs { size, dir } => fs_bench(size, &dir),
    }
}

struct Rate {
    write: f64,
    read: f64,
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn fill(buf: &mut [u8], seed: u8) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31) ^ seed;
    }
}

fn fs_bench(size: u64, dir: &Path) -> CliResult {
    let size = size / DIRECT_CHUNK as u64 * DIRECT_CHUNK as u64;
    println!(
        "cowfs bench fs: sequential {} in {}",
        human(size),
        dir.display()
    );
    let raw = raw_direct(size, &dir.join("cowfs-bench-raw.bin"))?;
    let image = dir.join("cowfs-bench.img");
    let result = engine_runs(size, &image);
    let _ = std::fs::remove_file(&image);
    let (direct, buffered, o_direct) = result?;
    println!(
        "{:<24} {:>12} {:>12} {:>10} {:>10}",
        "", "write MB/s", "read MB/s", "write/raw", "read/raw"
    );
    for (name, r) in [
        ("raw O_DIRECT file", &raw),
        ("cowfs direct I/O", &direct),
        ("cowfs buffered", &buffered),
    ] {
        println!(
            "{name:<24} {:>12.0} {:>12.0} {:>9.0}% {:>9.0}%",
            r.write,
            r.read,
            r.write / raw.write * 100.0,
            r.read / raw.read * 100.0
        );
    }
    println!(
        "(image opened with O_DIRECT: {o_direct}; writes include the final fdatasync / commit)"
    );
    Ok(ExitCode::SUCCESS)
}

fn raw_direct(size: u64, path: &Path) -> CliResult<Rate> {
    let file = HostOpen::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path)?;
    let mut buf = AlignedBuf::zeroed(DIRECT_CHUNK);
    fill(&mut buf, 1);
    let t = Instant::now();
    for off in (0..size).step_by(DIRECT_CHUNK) {
        file.write_all_at(&buf, off)?;
    }
    file.sync_data()?;
    let write = mbps(size, t.elapsed().as_secs_f64());
    let t = Instant::now();
    for off in (0..size).step_by(DIRECT_CHUNK) {
        file.read_exact_at(&mut buf, off)?;
    }
    let read = mbps(size, t.elapsed().as_secs_f64());
    drop(file);
    std::fs::remove_file(path)?;
    Ok(Rate { write, read })
}

fn engine_runs(size: u64, image: &Path) -> CliResult<(Rate, Rate, bool)> {
    let device = Arc::new(FileDevice::create(image, size + size / 4 + (128 << 20))?);
    let o_direct = device.is_direct();
    Filesystem::mkfs(device.clone(), &MkfsOptions::default())?;
    let fs = Filesystem::open(
        device,
        &OpenOptions {
            read_only: false,
            commit_interval: None,
        },
    )?;
    let root = fs.root();
    let direct = run_file(&fs, root, b"direct", size, DIRECT_CHUNK, true)?;
    fs.unlink(root, b"direct")?;
    fs.sync()?;
    let buffered = run_file(&fs, root, b"buffered", size, BUFFERED_CHUNK, false)?;
    fs.unmount()?;
    Ok((direct, buffered, o_direct))
}

fn run_file(
    fs: &Filesystem,
    root: InodeId,
    name: &[u8],
    size: u64,
    chunk: usize,
    direct: bool,
) -> CliResult<Rate> {
    let id = fs.create(root, name, FileKind::Regular, CreateAttrs::with_mode(0o644))?;
    let mut buf = AlignedBuf::zeroed(chunk);
    fill(&mut buf, 2);
    let t = Instant::now();
    for off in (0..size).step_by(chunk) {
        if direct {
            fs.write_direct(id, off, &buf)
        } else {
            fs.write(id, off, &buf)
        }?;
    }
    fs.sync()?;
    let write = mbps(size, t.elapsed().as_secs_f64());
    let t = Instant::now();
    for off in (0..size).step_by(chunk) {
        if direct {
            fs.read_direct(id, off, &mut buf)
        } else {
            fs.read(id, off, &mut buf)
        }?;
    }
    let read = mbps(size, t.elapsed().as_secs_f64());
    Ok(Rate { write, read })
}
