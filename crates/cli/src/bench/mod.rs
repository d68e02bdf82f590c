//! `cowfs bench`: throughput figures, each measured beside its peer in the same run and
//! reported as a ratio, because absolute times on a shared machine are noise.

pub(crate) mod kernel_swap;
mod nbd_server;
mod pager;
mod swap;

use std::fs::OpenOptions as HostOpen;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Instant;

use clap::Subcommand;
use cowfs::device::{AlignedBuf, BlockDevice, FileDevice};
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
        /// Rounds; each measures raw and cowfs back to back, and the medians are reported
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Also over NBD: the image served by nbdkit file on a Unix socket in DIR (installed
        /// when missing), with four connections and with one
        #[arg(long)]
        nbd: bool,
    },
    /// 4 KiB swap page I/O through swap areas (pinned, through the filesystem, host file)
    /// against raw O_DIRECT on a plain file
    SwapIo {
        /// Swap area size
        #[arg(long, default_value = "256M", value_parser = size::parse)]
        size: u64,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// A memory workload on pager regions over each kind of swap area, against the same
    /// under the Linux kernel's swap (root)
    Swap {
        /// Memory the workload touches
        #[arg(long, default_value = "2G", value_parser = size::parse)]
        size: u64,
        /// Resident memory: the pager's budget and the kernel's memory cgroup limit
        #[arg(long, default_value = "512M", value_parser = size::parse)]
        budget: u64,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// One JSON object instead of the table
        #[arg(long)]
        json: bool,
        /// Run only these cases (all by default)
        #[arg(long, value_delimiter = ',')]
        only: Vec<crate::bench::pager::Case>,
        /// The NBD cases' export (nbd://host/export, nbd+unix:///export?socket=PATH); by
        /// default `nbdkit memory` on a Unix socket in DIR: remote memory, on this machine
        #[arg(long)]
        backing: Option<String>,
    },
    /// File I/O through a cowfs mount served on different numbers of threads, alternating
    /// them round by round (root)
    Mount {
        /// Serving thread counts to compare; the first is the peer
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        threads: Vec<usize>,
        /// File size
        #[arg(long, default_value = "512M", value_parser = size::parse)]
        size: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// The kernel swapping a memory cgroup to a swap file on cowfs, btrfs and ext4, and file
    /// I/O through the mount against btrfs (root)
    KernelSwap {
        /// Memory the workload touches
        #[arg(long, default_value = "1G", value_parser = size::parse)]
        size: u64,
        /// The workload's memory cgroup limit
        #[arg(long, default_value = "256M", value_parser = size::parse)]
        limit: u64,
        /// Rounds, the swap files taking turns going first; with more than one, the median of
        /// each round's ratios is printed after the rounds
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// I/O size of each call, for the engine and the raw peer alike.
const DIRECT_CHUNK: usize = 4 << 20;
const BUFFERED_CHUNK: usize = 1 << 20;

pub fn run(which: Which) -> CliResult {
    match which {
        Which::Fs {
            size,
            dir,
            rounds,
            nbd,
        } => fs_bench(size, &dir, rounds.max(1), nbd),
        Which::SwapIo { size, dir } => crate::bench::swap::run(size, &dir),
        Which::Swap {
            size,
            budget,
            dir,
            json,
            only,
            backing,
        } => crate::bench::pager::run(size, budget, &dir, json, &only, backing.as_deref()),
        Which::KernelSwap {
            size,
            limit,
            rounds,
            dir,
        } => crate::bench::kernel_swap::run(&dir, size, limit, rounds.max(1)),
        Which::Mount {
            threads,
            size,
            rounds,
            dir,
        } => crate::bench::kernel_swap::mount_threads(&dir, &threads, size, rounds.max(1)),
    }
}

/// Runs `command`; its output, or an error with its status and output.
pub(crate) fn ok(command: &mut Command) -> CliResult<String> {
    let out = command.output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // A process the OOM killer took says nothing: its status does.
        return Err(format!("{command:?}: {} {text}", out.status).into());
    }
    Ok(text)
}

/// Installs Debian's `package` when `command` is missing (as root, with apt-get); otherwise an
/// error naming the package and the command to install it. `purpose` says what needs it.
pub(crate) fn ensure_tool(command: &str, package: &str, purpose: &str) -> CliResult<()> {
    if Command::new(command).arg("--version").output().is_ok() {
        return Ok(());
    }
    let install = || ok(Command::new("apt-get").args(["install", "-y", "-q", package]));
    install()
        .or_else(|_| ok(Command::new("apt-get").args(["update", "-q"])).and_then(|_| install()))
        .map_err(|e| {
            format!(
                "{purpose}, which is missing, and installing it failed; install {package} (apt-get install {package}): {e}"
            )
        })?;
    Ok(())
}

#[derive(Default, Clone)]
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The rows of `bench fs`: raw, then the engine's ways, then (with --nbd) the engine over NBD.
const FS_ROWS: [&str; 5] = [
    "raw O_DIRECT file",
    "cowfs direct I/O",
    "cowfs buffered",
    "cowfs direct, NBD x4",
    "cowfs direct, NBD x1",
];

fn fs_bench(size: u64, dir: &Path, rounds: usize, nbd: bool) -> CliResult {
    let size = size / DIRECT_CHUNK as u64 * DIRECT_CHUNK as u64;
    println!(
        "cowfs bench fs: sequential {} in {}, {rounds} round(s)",
        human(size),
        dir.display()
    );
    let dir = std::fs::canonicalize(dir)?;
    let mut rows: Vec<Vec<Rate>> = vec![Vec::new(); if nbd { 5 } else { 3 }];
    let mut o_direct = false;
    let image = dir.join("cowfs-bench.img");
    let image_len = size + size / 4 + (128 << 20);
    for round in 1..=rounds {
        quiet_host(size);
        let raw = raw_direct(size, &dir.join("cowfs-bench-raw.bin"))?;
        quiet_host(size);
        let result = FileDevice::create(&image, image_len)
            .map_err(Into::into)
            .and_then(|device| {
                o_direct = device.is_direct();
                engine_runs(size, Arc::new(device))
            });
        let _ = std::fs::remove_file(&image);
        let (direct, buffered) = result?;
        let mut rates = vec![raw, direct, buffered];
        if nbd {
            // Four connections, then one (the rows' order); the order they run in alternates
            // round by round, as the first to run after the local cases meets a busier host.
            let mut order = [(0, 4), (1, 1)];
            if round % 2 == 0 {
                order.reverse();
            }
            let mut over = [Rate::default(), Rate::default()];
            for (at, connections) in order {
                quiet_host(size);
                over[at] = over_nbd(size, &dir, &image, image_len, connections)?.0;
            }
            rates.extend(over);
        }
        let line: Vec<String> = FS_ROWS
            .iter()
            .zip(&rates)
            .map(|(name, r)| format!("{name} {:.0}/{:.0}", r.write, r.read))
            .collect();
        println!("  round {round} (write/read MB/s): {}", line.join(", "));
        for (row, rate) in rows.iter_mut().zip(rates) {
            row.push(rate);
        }
    }
    println!(
        "{:<24} {:>12} {:>12} {:>10} {:>10}",
        "median", "write MB/s", "read MB/s", "write/raw", "read/raw"
    );
    for (name, row) in FS_ROWS.iter().zip(&rows) {
        let (write, read) = (
            ratio(row, &rows[0], |r| r.write),
            ratio(row, &rows[0], |r| r.read),
        );
        println!(
            "{name:<24} {:>12.0} {:>12.0} {write:>9.0}% {read:>9.0}%",
            median(row.iter().map(|r| r.write).collect()),
            median(row.iter().map(|r| r.read).collect()),
        );
    }
    for (name, row) in FS_ROWS.iter().zip(&rows).skip(3) {
        println!(
            "{name} against local direct I/O: write {:.0}%, read {:.0}%",
            ratio(row, &rows[1], |r| r.write),
            ratio(row, &rows[1], |r| r.read)
        );
    }
    println!(
        "(image opened with O_DIRECT: {o_direct}; writes include the final fdatasync / commit)"
    );
    let result = sharing_and_moving(size, &image);
    let _ = std::fs::remove_file(&image);
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Lets the host finish what the case before left it (writeback, and the discards of a
/// deleted image where the host's filesystem is mounted with `discard`), so every case starts
/// on a quiet device rather than carrying the one before (NBD writes measured 85-97% of local
/// with the pause in three runs, 69-82% without; docs/PERF.md); then backs the memory a case
/// of `size` bytes may take (the NBD server's page cache), as `back_host_memory` says.
fn quiet_host(size: u64) {
    rustix::fs::sync();
    std::thread::sleep(std::time::Duration::from_secs(1));
    back_host_memory(size + size / 4);
}

/// Touches `bytes` of fresh memory and lets it go, so the case after finds this machine's memory
/// backed by the host. The machine is a virtual machine whose balloon reports free memory to
/// the hypervisor (VIRTIO_BALLOON_F_REPORTING): memory left free for a few seconds is handed
/// back, and whoever touches it next pays a fault in the hypervisor for every page. Whichever
/// case first allocated a lot after a quiet spell (the NBD server filling its export, in
/// `bench swap`) ran at a third to a half of its rate; with memory touched just before, it did
/// not (docs/PERF.md).
pub(crate) fn back_host_memory(bytes: u64) {
    let touched = vec![1u8; bytes as usize];
    std::hint::black_box(&touched);
}

/// The median over rounds of `row` against `peer` in the same round, in percent: ratios are
/// taken within each round, where both met the same machine state.
fn ratio(row: &[Rate], peer: &[Rate], figure: fn(&Rate) -> f64) -> f64 {
    median(
        row.iter()
            .zip(peer)
            .map(|(r, p)| figure(r) / figure(p) * 100.0)
            .collect(),
    )
}

/// The engine's direct I/O on an image file in `dir` served by nbdkit over a Unix socket,
/// reached with `connections` connections.
fn over_nbd(
    size: u64,
    dir: &Path,
    image: &Path,
    image_len: u64,
    connections: usize,
) -> CliResult<(Rate, Rate)> {
    std::fs::File::create(image)?.set_len(image_len)?;
    let result = nbd_server::NbdServer::file(dir, image).and_then(|server| {
        let uri = server.uri(connections);
        let device = cowfs::device::open(uri.as_ref(), cowfs::device::Access::ReadWrite)?;
        engine_runs(size, device)
    });
    let _ = std::fs::remove_file(image);
    result
}

/// Text-like data that compresses about 4:1 with zstd, as logs and source code do.
fn compressible(len: usize) -> Vec<u8> {
    let text: &[u8] = b"the quick brown fox jumps over lazy dogs while cowfs writes extents to block groups and checks every crc";
    let words: Vec<&[u8]> = text.split(|b| *b == b' ').collect();
    let mut out = Vec::with_capacity(len + 16);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % words.len() as u64) as usize]);
        out.push(if x.is_multiple_of(11) { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// Compression, snapshots and balance, on one scratch image.
fn sharing_and_moving(size: u64, image: &Path) -> CliResult<()> {
    // Room for the balance's files (up to 3 x size at once) and the snapshot test's 50,000
    // files of 8 KiB, whatever the size asked for.
    let device = Arc::new(FileDevice::create(image, 3 * size + (768 << 20))?);
    Filesystem::mkfs(device.clone(), &MkfsOptions::default())?;
    let fs = Filesystem::open(
        device,
        &OpenOptions {
            commit_interval: None,
            ..OpenOptions::default()
        },
    )?;
    compression(&fs, size / 2)?;
    snapshots(&fs)?;
    balance(&fs, size)?;
    fs.unmount()?;
    Ok(())
}

fn compression(fs: &Filesystem, size: u64) -> CliResult<()> {
    let data = compressible(BUFFERED_CHUNK);
    println!("\ncompression: {} of text-like data in buffered 1 MiB writes, beside the same data uncompressed", human(size));
    println!(
        "{:<24} {:>12} {:>12} {:>14}",
        "", "write MB/s", "read MB/s", "stored / data"
    );
    for (name, flags) in [
        ("uncompressed", 0),
        ("zstd (+c, level 3)", cowfs::format::inode_flags::COMPRESS),
    ] {
        fs.sync()?;
        let before = fs.info()?.data_used;
        let id = fs.create(
            fs.root(),
            name.as_bytes(),
            FileKind::Regular,
            CreateAttrs::with_mode(0o644),
        )?;
        fs.set_flags(id, flags)?;
        let t = Instant::now();
        for off in (0..size).step_by(BUFFERED_CHUNK) {
            fs.write(id, off, &data)?;
        }
        fs.sync()?;
        let write = mbps(size, t.elapsed().as_secs_f64());
        let stored = fs.info()?.data_used - before;
        let mut buf = AlignedBuf::zeroed(BUFFERED_CHUNK);
        let t = Instant::now();
        for off in (0..size).step_by(BUFFERED_CHUNK) {
            fs.read(id, off, &mut buf)?;
        }
        let read = mbps(size, t.elapsed().as_secs_f64());
        println!(
            "{name:<24} {write:>12.0} {read:>12.0} {:>13.1}%",
            stored as f64 * 100.0 / size as f64
        );
        fs.unlink(fs.root(), name.as_bytes())?;
    }
    Ok(())
}

/// Snapshot creation time against the number of files (and extents) in the subvolume.
fn snapshots(fs: &Filesystem) -> CliResult<()> {
    println!("\nsnapshot creation (copies the subvolume's metadata; commit included)");
    println!("{:>10} {:>12} {:>14}", "files", "time ms", "us per file");
    let vol = fs.create_subvolume(fs.root(), b"vol")?;
    let dir = fs.resolve("/vol")?;
    let block = vec![7u8; 8192];
    let mut files = 0u64;
    for target in [1_000u64, 10_000, 50_000] {
        while files < target {
            let id = fs.create(
                dir,
                format!("f{files}").as_bytes(),
                FileKind::Regular,
                CreateAttrs::with_mode(0o644),
            )?;
            fs.write(id, 0, &block)?;
            files += 1;
        }
        fs.sync()?;
        let t = Instant::now();
        fs.snapshot(vol, fs.root(), b"snap", true)?;
        fs.sync()?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        println!(
            "{target:>10} {ms:>12.1} {:>14.1}",
            ms * 1000.0 / target as f64
        );
        fs.delete_subvolume(fs.root(), b"snap")?;
    }
    fs.delete_subvolume(fs.root(), b"vol")?;
    fs.sync()?;
    Ok(())
}

/// Balance throughput: block groups half emptied by deletions, then compacted.
fn balance(fs: &Filesystem, size: u64) -> CliResult<()> {
    let chunk = AlignedBuf::from_slice(&compressible(DIRECT_CHUNK));
    let files = (size / (8 << 20)).max(2);
    for i in 0..files {
        let id = fs.create(
            fs.root(),
            format!("b{i}").as_bytes(),
            FileKind::Regular,
            CreateAttrs::with_mode(0o644),
        )?;
        for off in (0..8u64 << 20).step_by(DIRECT_CHUNK) {
            fs.write_direct(id, off, &chunk)?;
        }
    }
    for i in (0..files).step_by(2) {
        fs.unlink(fs.root(), format!("b{i}").as_bytes())?;
    }
    fs.sync()?;
    let t = Instant::now();
    let report = fs.balance(cowfs::BalanceFilter::default(), &mut |_| {})?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "\nbalance: relocated {} block groups, {} moved in {secs:.2} s: {:.0} MB/s",
        report.relocated.len(),
        human(report.bytes_moved),
        mbps(report.bytes_moved, secs)
    );
    Ok(())
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

fn engine_runs(size: u64, device: Arc<dyn BlockDevice>) -> CliResult<(Rate, Rate)> {
    Filesystem::mkfs(device.clone(), &MkfsOptions::default())?;
    let fs = Filesystem::open(
        device,
        &OpenOptions {
            read_only: false,
            commit_interval: None,
            ..OpenOptions::default()
        },
    )?;
    let root = fs.root();
    let direct = run_file(&fs, root, b"direct", size, DIRECT_CHUNK, true)?;
    fs.unlink(root, b"direct")?;
    fs.sync()?;
    let buffered = run_file(&fs, root, b"buffered", size, BUFFERED_CHUNK, false)?;
    fs.unmount()?;
    Ok((direct, buffered))
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

/// Benchmarks (not tests)
#[derive(clap::Args)]
pub struct Bench {
    #[command(subcommand)]
    pub which: Which,
}

impl Bench {
    pub fn run(self) -> CliResult {
        run(self.which)
    }
}
