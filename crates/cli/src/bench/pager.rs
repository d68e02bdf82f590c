//! `cowfs bench swap`: one memory workload (sequential fill, sequential read-back, random page
//! reads on one and on four threads, mixed random reads and writes, every page checked) on a
//! pager region over each kind of swap area, and in the same run in a process the Linux kernel
//! swaps (a memory cgroup of the same budget, a swap file on btrfs on a loop device with
//! direct I/O, as root), and, for information, the kernel swapping the same cgroup to zram
//! (compressed RAM, lz4 where offered), what users pick for fast swap today. The device's own
//! sequential read rate is measured in the same run, for the read-back to be held to.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use cowfs::device::{AlignedBuf, FileDevice};
use cowfs::{Filesystem, MkfsOptions, OpenOptions, SwapMode};
use pager::{FaultMode, Pager, PagerConfig};
use swap::{CowfsFile, DeviceArea, HostFile, SwapSystem};

use crate::bench::kernel_swap::{workload as kernel_workload, SwapHost, ZramSwap};
use crate::bench::nbd_server::NbdServer;
use crate::commands::memload::{workload, Figures, Memory};
use crate::size::human;
use crate::CliResult;

const THREADS: usize = 4;

/// A cowfs image in `dir` with a NOCOW swap file of `swap` bytes, as a swap system in `mode`.
fn cowfs_swap(dir: &Path, swap: u64, mode: SwapMode) -> CliResult<(Filesystem, SwapSystem)> {
    let image = dir.join(format!("bench-swap-{mode:?}.img"));
    // Through the filesystem, activation reserves room for copy-on-write of the whole file.
    let device = Arc::new(FileDevice::create(&image, 3 * swap + (1 << 30))?);
    Filesystem::mkfs(device.clone(), &MkfsOptions::default())?;
    let fs = Filesystem::open(device, &OpenOptions::default())?;
    swap::mkswapfile(&fs, "/swapfile", swap, "", swap::random_uuid())?;
    let mut system = SwapSystem::new();
    system.swapon(Box::new(CowfsFile::new(&fs, "/swapfile", mode)?), None)?;
    Ok((fs, system))
}

fn pager_run(
    system: SwapSystem,
    size: u64,
    budget: u64,
    mode: FaultMode,
) -> CliResult<(Figures, pager::Stats)> {
    let config = PagerConfig {
        mode,
        ..PagerConfig::with_budget(budget)
    };
    let pager = Pager::new(config, system)?;
    let region = pager.region(size as usize)?;
    let figures = workload(&Memory::of_region(&region), THREADS)?;
    Ok((figures, pager.stats()))
}

/// One column of the table: who pages the workload's memory, to what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Case {
    /// The Linux kernel, to a swap file on btrfs (root)
    Kernel,
    /// The Linux kernel, to zram: compressed RAM, lz4 where offered (root; for information)
    Zram,
    /// The pager, fault threads, a pinned cowfs swap file
    Pinned,
    /// The pager serving faults in the faulting thread, a pinned cowfs swap file
    InThread,
    /// The pager, fault threads, a cowfs swap file through the filesystem
    ThruFs,
    /// The pager, fault threads, a host file
    Host,
    /// The pager, fault threads, a whole NBD export (4 connections)
    Nbd,
    /// The same on one connection
    Nbd1,
}

impl Case {
    const ALL: [Case; 8] = [
        Case::Kernel,
        Case::Zram,
        Case::Pinned,
        Case::InThread,
        Case::ThruFs,
        Case::Host,
        Case::Nbd,
        Case::Nbd1,
    ];

    fn label(self) -> &'static str {
        match self {
            Case::Kernel => "kernel (btrfs)",
            Case::Zram => "kernel (zram)",
            Case::Pinned => "pager, cowfs pinned",
            Case::InThread => "in-thread, pinned",
            Case::ThruFs => "pager, cowfs thru fs",
            Case::Host => "pager, host file",
            Case::Nbd => "pager, NBD x4",
            Case::Nbd1 => "pager, NBD x1",
        }
    }
}

type Row = (String, Figures, Option<pager::Stats>);

pub fn run(
    size: u64,
    budget: u64,
    dir: &Path,
    json: bool,
    only: &[Case],
    backing: Option<&str>,
) -> CliResult {
    let dir = std::fs::canonicalize(dir)?;
    if !json {
        println!(
            "cowfs bench swap: {} touched with a {} budget, in {}",
            human(size),
            human(budget),
            dir.display()
        );
    }
    let cases = if only.is_empty() {
        &Case::ALL[..]
    } else {
        only
    };
    let mut rows: Vec<Row> = Vec::new();
    for &case in cases {
        super::back_host_memory(size + budget);
        match run_case(case, size, budget, &dir, backing)? {
            Ok((figures, stats)) => rows.push((case.label().into(), figures, stats)),
            Err(why) if !json => println!("{} skipped: {why}", case.label()),
            Err(_) => {}
        }
    }
    let device = device_read_rate(&dir, size)?;
    if json {
        print_json(size, budget, &rows, device);
    } else {
        print_table(&rows);
        print_device(&rows, device);
    }
    Ok(ExitCode::SUCCESS)
}

/// The device's own sequential read rate, which the sequential read-back is held to: a file
/// of `size` bytes in `dir` written, then read back with O_DIRECT reads the size of the
/// pager's largest swap-in (its prefetch window). MB/s, and the read size.
fn device_read_rate(dir: &Path, size: u64) -> CliResult<(f64, usize)> {
    let chunk = PagerConfig::with_budget(0).max_prefetch * pager::PAGE;
    let len = size / chunk as u64 * chunk as u64;
    let path = dir.join("bench-swap.device");
    let measure = || -> CliResult<f64> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)?;
        // Written through, not sparse: a hole reads back without touching the device.
        let mut buf = AlignedBuf::zeroed(chunk);
        buf.fill(0x5a);
        for at in (0..len).step_by(chunk) {
            file.write_all_at(&buf, at)?;
        }
        file.sync_all()?;
        let t = Instant::now();
        for at in (0..len).step_by(chunk) {
            file.read_exact_at(&mut buf, at)?;
        }
        Ok(len as f64 / t.elapsed().as_secs_f64() / 1e6)
    };
    let rate = measure();
    let _ = std::fs::remove_file(&path);
    Ok((rate?, chunk))
}

/// The device's sequential read rate, and each row's sequential read-back against it.
fn print_device(rows: &[Row], (rate, chunk): (f64, usize)) {
    println!(
        "\ndevice: sequential O_DIRECT reads of {} in this directory, {rate:.0} MB/s",
        human(chunk as u64)
    );
    for (name, figures, _) in rows {
        println!(
            "{name}: sequential read-back {:.0}% of the device",
            figures.read_mb_s / rate * 100.0
        );
    }
}

/// One case's figures (and the pager's statistics); why not, for a kernel case that cannot
/// run here (not root; no zram).
fn run_case(
    case: Case,
    size: u64,
    budget: u64,
    dir: &Path,
    backing: Option<&str>,
) -> CliResult<Result<(Figures, Option<pager::Stats>), String>> {
    let swap = size + (256 << 20);
    let not_root = || {
        let root = rustix::process::geteuid().is_root();
        (!root).then(|| "it needs root (loop devices, mounts, memory cgroups)".to_string())
    };
    let (mode, faults) = match case {
        Case::Kernel => {
            if let Some(why) = not_root() {
                return Ok(Err(why));
            }
            let host = SwapHost::kernel("btrfs", dir, swap + (2 << 30), swap)?;
            let figures = kernel_workload(size, budget, false);
            host.finish()?;
            let _ = std::fs::remove_file(dir.join("kswap-btrfs.img"));
            let _ = std::fs::remove_dir(dir.join("kswap-btrfs"));
            return Ok(Ok((figures?, None)));
        }
        Case::Zram => {
            // Shown for information: without zram here the other cases still run.
            if let Some(why) = not_root().or_else(|| ZramSwap::available().err()) {
                return Ok(Err(why));
            }
            let zram = ZramSwap::start(swap)?;
            eprintln!("kernel (zram): compressing with {}", zram.algorithm);
            let figures = kernel_workload(size, budget, false);
            drop(zram);
            return Ok(Ok((figures?, None)));
        }
        Case::Host => {
            let host = dir.join("bench-swap.host");
            swap::mkswap(&host, Some(swap), "", swap::random_uuid())?;
            let mut system = SwapSystem::new();
            system.swapon(Box::new(HostFile::new(&host)), None)?;
            let result = pager_run(system, size, budget, FaultMode::Threads);
            let _ = std::fs::remove_file(&host);
            let (figures, stats) = result?;
            return Ok(Ok((figures, Some(stats))));
        }
        Case::Nbd | Case::Nbd1 => {
            let connections = if case == Case::Nbd { 4 } else { 1 };
            let (figures, stats) = on_export(backing, dir, swap, connections, |uri| {
                swap::mkswap(Path::new(uri), None, "", swap::random_uuid())?;
                let mut system = SwapSystem::new();
                system.swapon(Box::new(DeviceArea::new(Path::new(uri))), None)?;
                pager_run(system, size, budget, FaultMode::Threads)
            })?;
            return Ok(Ok((figures, Some(stats))));
        }
        Case::Pinned => (SwapMode::Pinned, FaultMode::Threads),
        Case::InThread => (SwapMode::Pinned, FaultMode::InThread),
        Case::ThruFs => (SwapMode::ThroughFs, FaultMode::Threads),
    };
    let (fs, system) = cowfs_swap(dir, swap, mode)?;
    let result = pager_run(system, size, budget, faults);
    drop(fs);
    let _ = std::fs::remove_file(dir.join(format!("bench-swap-{mode:?}.img")));
    let (figures, stats) = result?;
    Ok(Ok((figures, Some(stats))))
}

/// Runs `f` on the export at `backing`, or on `nbdkit memory` of `len` bytes started in `dir`;
/// with `connections` connections at most.
fn on_export<T>(
    backing: Option<&str>,
    dir: &Path,
    len: u64,
    connections: usize,
    f: impl FnOnce(&str) -> CliResult<T>,
) -> CliResult<T> {
    if let Some(uri) = backing {
        let mut address = cowfs::device::NbdAddress::parse(uri)?;
        address.connections = Some(connections);
        return f(&address.to_string());
    }
    let server = NbdServer::memory(dir, len)?;
    f(&server.uri(connections))
}

fn print_table(rows: &[Row]) {
    // The disk baseline is the reference; zram is shown beside it for information.
    let kernel = rows
        .iter()
        .find(|(name, _, _)| name == Case::Kernel.label())
        .or_else(|| rows.iter().find(|(_, _, stats)| stats.is_none()))
        .map(|(_, f, _)| f.values());
    print!("\n{:<34}", "");
    for (name, _, _) in rows {
        print!("{name:>22}");
    }
    println!();
    for (i, label) in Figures::LABELS.iter().enumerate() {
        print!("{label:<34}");
        for (_, figures, _) in rows {
            let value = figures.values()[i];
            match kernel {
                Some(k) if rows.len() > 1 => {
                    let ratio = if Figures::LOWER_IS_BETTER[i] {
                        k[i] / value
                    } else {
                        value / k[i]
                    };
                    print!("{:>22}", format!("{value:.0} ({ratio:.2}x)"));
                }
                _ => print!("{value:>22.0}"),
            }
        }
        println!();
    }
    println!("\n(x: against the kernel; above 1 is better, for the latency too)");
    for (name, _, stats) in rows {
        if let Some(s) = stats {
            println!(
                "{name}: {} major faults, {} pages in ({} prefetched, {} hits), {} out, {} clean dropped, peak resident {}, fault p50 {:?} p99 {:?}",
                s.major_faults,
                s.pages_in,
                s.prefetched,
                s.prefetch_hits,
                s.pages_out,
                s.clean_drops,
                human(s.peak_resident * pager::PAGE as u64),
                s.latency.quantile(0.5),
                s.latency.quantile(0.99)
            );
        }
    }
}

fn print_json(size: u64, budget: u64, rows: &[Row], (device, _): (f64, usize)) {
    let keys = [
        "fill_mb_s",
        "read_mb_s",
        "random_1_pages_s",
        "random_4_pages_s",
        "mixed_pages_s",
        "random_p99_us",
    ];
    let entries: Vec<String> = rows
        .iter()
        .map(|(name, figures, stats)| {
            let mut fields: Vec<String> = keys
                .iter()
                .zip(figures.values())
                .map(|(k, v)| format!("\"{k}\": {v:.1}"))
                .collect();
            if let Some(s) = stats {
                let peak = s.peak_resident * pager::PAGE as u64;
                let p99 = s.latency.quantile(0.99).as_nanos();
                fields.push(format!(
                    "\"pager\": {{\"major_faults\": {}, \"pages_in\": {}, \"pages_out\": {}, \"clean_drops\": {}, \"peak_resident_bytes\": {peak}, \"fault_p99_ns\": {p99}}}",
                    s.major_faults, s.pages_in, s.pages_out, s.clean_drops
                ));
            }
            format!("{{\"name\": \"{name}\", {}}}", fields.join(", "))
        })
        .collect();
    println!(
        "{{\"size\": {size}, \"budget\": {budget}, \"device_read_mb_s\": {device:.1}, \"rows\": [{}]}}",
        entries.join(", ")
    );
}
