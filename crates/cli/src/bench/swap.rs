//! `cowfs bench swap-io`: 4 KiB swap page writes and reads, sequential and random, in batches
//! of 1 to 256 pages, through swap areas on every backing, beside raw O_DIRECT on a plain host
//! file doing the same page I/O in the same run.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use cowfs::device::{AlignedBuf, FileDevice};
use cowfs::format::FileKind;
use cowfs::{
    CompressionConfig, CreateAttrs, FallocateMode, Filesystem, MkfsOptions,
    OpenOptions as FsOptions, SwapMode,
};
use swap::{CowfsFile, HostFile, Slot, SwapHeader, SwapSystem, PAGE_SIZE};

use crate::size::human;
use crate::CliResult;

const BATCHES: [usize; 3] = [1, 16, 256];
/// Pages each case writes and reads.
const PAGES_PER_CASE: u64 = 16384;

/// Page I/O against one target: (first page or random pages, pages per call).
trait Target {
    fn write(&mut self, pages: &[u64], data: &[u8]) -> CliResult<()>;
    fn read(&mut self, pages: &[u64], buf: &mut [u8]) -> CliResult<()>;
}

/// Raw O_DIRECT: one pwrite per run of consecutive pages, as a swap area's backing makes.
struct Raw(std::fs::File);

impl Target for Raw {
    fn write(&mut self, pages: &[u64], data: &[u8]) -> CliResult<()> {
        for (first, range) in runs(pages) {
            self.0.write_all_at(
                &data[range.start * PAGE_SIZE..range.end * PAGE_SIZE],
                first * PAGE_SIZE as u64,
            )?;
        }
        Ok(())
    }
    fn read(&mut self, pages: &[u64], buf: &mut [u8]) -> CliResult<()> {
        for (first, range) in runs(pages) {
            self.0.read_exact_at(
                &mut buf[range.start * PAGE_SIZE..range.end * PAGE_SIZE],
                first * PAGE_SIZE as u64,
            )?;
        }
        Ok(())
    }
}

/// A swap area of a swap system.
struct Area(SwapSystem);

impl Area {
    fn slots(&mut self, pages: &[u64]) -> CliResult<Vec<Slot>> {
        let slots: Vec<Slot> = pages.iter().map(|p| Slot { area: 0, page: *p }).collect();
        for s in &slots {
            if !self.0.in_use(*s) {
                self.0.claim(*s)?;
            }
        }
        Ok(slots)
    }
}

impl Target for Area {
    fn write(&mut self, pages: &[u64], data: &[u8]) -> CliResult<()> {
        let slots = self.slots(pages)?;
        Ok(self.0.write(&slots, data)?)
    }
    fn read(&mut self, pages: &[u64], buf: &mut [u8]) -> CliResult<()> {
        let slots = self.slots(pages)?;
        Ok(self.0.read(&slots, buf)?)
    }
}

fn runs(pages: &[u64]) -> Vec<(u64, std::ops::Range<usize>)> {
    let mut out: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
    for (i, p) in pages.iter().enumerate() {
        match out.last_mut() {
            Some((first, r)) if *first + r.len() as u64 == *p => r.end = i + 1,
            _ => out.push((*p, i..i + 1)),
        }
    }
    out
}

/// The page numbers of each case: sequential from page 1, or pseudo-random in the area.
fn pattern(random: bool, area_pages: u64) -> Vec<u64> {
    let n = PAGES_PER_CASE.min(area_pages - 1);
    if !random {
        return (1..=n).collect();
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + x % (area_pages - 1)
        })
        .collect()
}

/// MB/s for writing then reading every case, after one untimed pass over the area (a swap
/// area in use has been written before; first writes would measure the host's allocation).
fn measure(target: &mut dyn Target, area_pages: u64) -> CliResult<Vec<(f64, f64)>> {
    let warm: Vec<u64> = (1..area_pages).collect();
    let data = AlignedBuf::zeroed(256 * PAGE_SIZE);
    for chunk in warm.chunks(256) {
        target.write(chunk, &data[..chunk.len() * PAGE_SIZE])?;
    }
    let mut results = Vec::new();
    for random in [false, true] {
        let pages = pattern(random, area_pages);
        for batch in BATCHES {
            let mut data = AlignedBuf::zeroed(batch * PAGE_SIZE);
            data.iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = (i * 7) as u8);
            let t = Instant::now();
            for chunk in pages.chunks(batch) {
                target.write(chunk, &data[..chunk.len() * PAGE_SIZE])?;
            }
            let write = pages.len() as f64 * PAGE_SIZE as f64 / t.elapsed().as_secs_f64() / 1e6;
            let t = Instant::now();
            for chunk in pages.chunks(batch) {
                target.read(chunk, &mut data[..chunk.len() * PAGE_SIZE])?;
            }
            let read = pages.len() as f64 * PAGE_SIZE as f64 / t.elapsed().as_secs_f64() / 1e6;
            results.push((write, read));
        }
    }
    Ok(results)
}

pub fn run(size: u64, dir: &Path) -> CliResult {
    let size = size / PAGE_SIZE as u64 * PAGE_SIZE as u64;
    let pages = size / PAGE_SIZE as u64;
    println!(
        "cowfs bench swap-io: {} swap areas in {}, {} pages per case",
        human(size),
        dir.display(),
        PAGES_PER_CASE.min(pages - 1)
    );
    let (raw_path, host_path, image) = (
        dir.join("cowfs-swapbench.raw"),
        dir.join("cowfs-swapbench.host"),
        dir.join("cowfs-swapbench.img"),
    );
    let result = run_all(size, pages, &raw_path, &host_path, &image);
    for p in [&raw_path, &host_path, &image] {
        let _ = std::fs::remove_file(p);
    }
    result
}

fn run_all(size: u64, pages: u64, raw_path: &Path, host_path: &Path, image: &Path) -> CliResult {
    let raw_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc_direct())
        .open(raw_path)?;
    raw_file.set_len(size)?;
    raw_file.write_all_at(&AlignedBuf::zeroed(size as usize), 0)?;
    let raw = measure(&mut Raw(raw_file), pages)?;

    // Written through once, as the raw peer's file is: on a sparse image every copy-on-write
    // page would land on host blocks never written and pay the host's allocation, which a
    // block device does not.
    // Four areas, the reservation of two more a copy-on-write area takes while active (one is
    // active at a time), and room for the activation timing's 1 GiB file and the metadata.
    let image_len = 6 * size + (2 << 30);
    write_zeros(image, image_len)?;
    let device = Arc::new(FileDevice::open(image)?);
    Filesystem::mkfs(device.clone(), &MkfsOptions::default())?;
    let fs = Filesystem::open(
        device,
        &FsOptions {
            commit_interval: None,
            ..FsOptions::default()
        },
    )?;
    activation_time(&fs)?;
    swap::mkswapfile(&fs, "/pinned", size, "", [1; 16])?;
    swap::mkswapfile(&fs, "/nocow-fs", size, "", [5; 16])?;
    cow_swapfile(&fs, b"cow", None, size)?;
    cow_swapfile(&fs, b"cow-lz4", CompressionConfig::parse("lz4")?, size)?;
    let mut targets: Vec<(&str, Vec<(f64, f64)>)> = vec![("raw O_DIRECT", raw)];
    let cases = [
        ("cowfs pinned", "/pinned", SwapMode::Pinned),
        ("cowfs through fs (NOCOW)", "/nocow-fs", SwapMode::ThroughFs),
        ("cowfs through fs (COW)", "/cow", SwapMode::ThroughFs),
        (
            "cowfs through fs (COW, lz4)",
            "/cow-lz4",
            SwapMode::ThroughFs,
        ),
    ];
    for (name, path, mode) in cases {
        let mut system = SwapSystem::new();
        system.swapon(Box::new(CowfsFile::new(&fs, path, mode)?), None)?;
        // The area goes with this statement, and its file is deactivated with it.
        targets.push((name, measure(&mut Area(system), pages)?));
    }
    swap::mkswap(host_path, Some(size), "", [3; 16])?;
    let mut host = SwapSystem::new();
    host.swapon(Box::new(HostFile::new(host_path)), None)?;
    targets.push(("host swap file", measure(&mut Area(host), pages)?));
    print_table(&targets);
    fs.unmount()?;
    Ok(ExitCode::SUCCESS)
}

/// A copy-on-write swap file of `size` bytes at the root, preallocated, its writes stored
/// with `compression`.
fn cow_swapfile(
    fs: &Filesystem,
    name: &[u8],
    compression: Option<CompressionConfig>,
    size: u64,
) -> CliResult<()> {
    let id = fs.create(
        fs.root(),
        name,
        FileKind::Regular,
        CreateAttrs::with_mode(0o600),
    )?;
    fs.set_compression(id, compression)?;
    fs.fallocate(id, FallocateMode::Allocate { keep_size: false }, 0, size)?;
    let pages = size / PAGE_SIZE as u64;
    fs.write(id, 0, &SwapHeader::new(pages, [2; 16], "")?.encode())?;
    fs.sync()?;
    Ok(())
}

fn print_table(targets: &[(&str, Vec<(f64, f64)>)]) {
    let raw = &targets[0].1;
    println!(
        "{:<28} {:<11} {:>6} {:>11} {:>10} {:>8} {:>8}",
        "", "pattern", "batch", "write MB/s", "read MB/s", "w/raw", "r/raw"
    );
    for (name, results) in targets {
        for (i, (w, r)) in results.iter().enumerate() {
            let pattern = if i < BATCHES.len() {
                "sequential"
            } else {
                "random"
            };
            let batch = BATCHES[i % BATCHES.len()];
            println!(
                "{name:<28} {pattern:<11} {batch:>6} {w:>11.0} {r:>10.0} {:>7.0}% {:>7.0}%",
                w / raw[i].0 * 100.0,
                r / raw[i].1 * 100.0
            );
        }
    }
}

fn activation_time(fs: &Filesystem) -> CliResult<()> {
    swap::mkswapfile(fs, "/big", 1 << 30, "", [4; 16])?;
    let id = fs.resolve("/big")?;
    let t = Instant::now();
    let act = fs.activate_swap(id, SwapMode::Pinned)?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    fs.deactivate_swap(id)?;
    println!(
        "activating a 1 GiB swap file (pinned): {ms:.2} ms, {} pages in {} extent(s)\n",
        act.pages,
        act.extents.len()
    );
    fs.unlink(fs.root(), b"big")?;
    Ok(())
}

fn write_zeros(path: &Path, len: u64) -> CliResult<()> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc_direct())
        .open(path)?;
    let zeros = AlignedBuf::zeroed(16 << 20);
    for at in (0..len).step_by(zeros.len()) {
        file.write_all_at(&zeros[..(len - at).min(zeros.len() as u64) as usize], at)?;
    }
    file.sync_all()?;
    Ok(())
}

fn libc_direct() -> i32 {
    rustix::fs::OFlags::DIRECT.bits() as i32
}
