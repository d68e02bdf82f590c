//! `cowfs demo`: the main job. On a scratch image: files of every kind, swap activation and
//! its refusals, a pager region four times its memory budget paged to a cowfs swap file with
//! every byte checked, an active swap file's rules, and fsck. With `--kernel` (root, FUSE), the
//! Linux kernel swaps a memory-limited process to a cowfs file too.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use cowfs::device::FileDevice;
use cowfs::format::{inode_flags, FileKind};
use cowfs::{CreateAttrs, Filesystem, InodeId, MkfsOptions, OpenOptions, SwapMode};
use pager::{Pager, PagerConfig, PAGE};
use swap::{CowfsFile, SwapSystem};

use crate::output::progress;
use crate::size::human;
use crate::CliResult;

const IMAGE_SIZE: u64 = 768 << 20;
const SWAP_FILE: u64 = 384 << 20;
const BUDGET: u64 = 64 << 20;
const REGION: usize = 256 << 20;
const RANDOM_READS: usize = 16384;

fn step(n: u32, what: &str) {
    println!("\n[{n}] {what}");
}

/// The byte at `offset` of the pager's region.
fn byte(offset: usize) -> u8 {
    ((offset as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 29) as u8 ^ (offset >> 12) as u8
}

pub fn run(dir: Option<PathBuf>, kernel: bool) -> CliResult {
    let started = Instant::now();
    let tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            tmp = tempfile::Builder::new()
                .prefix("cowfs-demo-")
                .tempdir_in(scratch_parent())?;
            tmp.path().to_path_buf()
        }
    };
    let image = dir.join("demo.img");
    println!("cowfs demo: swap files done right on a copy-on-write filesystem");
    println!("scratch image: {} ({})", image.display(), human(IMAGE_SIZE));

    step(1, "mkfs");
    let device = Arc::new(FileDevice::create(&image, IMAGE_SIZE)?);
    Filesystem::mkfs(device.clone(), &MkfsOptions::default())?;
    let fs = Filesystem::open(device.clone(), &OpenOptions::default())?;
    println!(
        "    format v{}, {} free",
        fs.info()?.format_version,
        human(fs.info()?.free)
    );

    step(2, "files of every kind, and lsattr");
    let root = fs.root();
    let make = |name: &str, flags: u64| -> CliResult<InodeId> {
        let id = fs.create(
            root,
            name.as_bytes(),
            FileKind::Regular,
            CreateAttrs::with_mode(0o644),
        )?;
        if flags != 0 {
            fs.set_flags(id, flags)?;
        }
        Ok(id)
    };
    let logs = make("logs.txt", inode_flags::COMPRESS)?;
    let text: Vec<u8> = b"a line of a log that compresses well\n".repeat(30_000);
    fs.write(logs, 0, &text)?;
    let note = make("note.txt", 0)?;
    fs.write(note, 0, b"small files live inline, in the metadata\n")?;
    let vm = make("vm.raw", inode_flags::NOCOW)?;
    fs.write(vm, 0, &vec![0x42; 8 << 20])?;
    let cow = make("cow.bin", 0)?;
    fs.write(cow, 0, &vec![0x17; 4 << 20])?;
    fs.sync()?;
    for (name, id) in [
        ("logs.txt", logs),
        ("note.txt", note),
        ("vm.raw", vm),
        ("cow.bin", cow),
    ] {
        let map = fs.extent_map(id)?;
        let kinds: Vec<&str> = map.iter().flat_map(|m| m.flag_names()).collect();
        println!(
            "    {} /{name:<9} {:>9}, {} extent(s) {}",
            crate::commands::attrs::lsattr_string(fs.getattr(id)?.flags),
            human(fs.getattr(id)?.size),
            map.len(),
            if kinds.is_empty() {
                String::new()
            } else {
                format!("({})", dedup(kinds).join(","))
            }
        );
    }

    step(3, "activation checks what a swap file must be");
    for (name, id) in [("logs.txt", logs), ("cow.bin", cow)] {
        match fs.activate_swap(id, SwapMode::Pinned) {
            Err(e) => println!("    swapon /{name}: {e}"),
            Ok(_) => return Err(format!("/{name} was accepted as a swap file").into()),
        }
    }
    swap::mkswapfile(&fs, "/swapfile", SWAP_FILE, "demo", swap::random_uuid())?;
    let swapfile = fs.resolve("/swapfile")?;
    println!(
        "    mkswapfile /swapfile: {}, {} (NOCOW, preallocated, mode 0600, SWAPSPACE2 header)",
        human(SWAP_FILE),
        crate::commands::attrs::lsattr_string(fs.getattr(swapfile)?.flags)
    );

    step(
        4,
        "a pager region four times its memory budget, paged to /swapfile",
    );
    let mut system = SwapSystem::new();
    system.swapon(
        Box::new(CowfsFile::new(&fs, "/swapfile", SwapMode::Pinned)?),
        None,
    )?;
    let pinned = fs.swap_active(swapfile).is_some();
    println!(
        "    /swapfile is active (pinned: {pinned}); budget {}, region {}",
        human(BUDGET),
        human(REGION as u64)
    );
    match Pager::new(PagerConfig::with_budget(BUDGET), system) {
        Ok(pager) => {
            workload(&pager)?;
            step(5, "an active swap file keeps its rules");
            let rules = [
                ("rm /swapfile", fs.unlink(root, b"swapfile").err()),
                ("write /swapfile", fs.write(swapfile, 0, b"x").err()),
                (
                    "snapshot /",
                    fs.snapshot(root.subvol, root, b"snap", false).err(),
                ),
            ];
            for (what, result) in rules {
                match result {
                    Some(e) => println!("    {what}: {e}"),
                    None => return Err(format!("{what} was allowed on an active swap file").into()),
                }
            }
            drop(pager);
        }
        Err(e) => {
            println!("    the pager is not available here: {e}");
            println!(
                "    (it needs userfaultfd: run as root, or open /dev/userfaultfd to this user)"
            );
        }
    }
    println!(
        "    the pager is gone, and so is the pin: active = {:?}",
        fs.swap_active(swapfile)
    );

    let mut next = 6;
    if kernel {
        step(next, "the Linux kernel swaps to a cowfs file");
        kernel_swap(&dir)?;
        next += 1;
    }

    step(next, "fsck");
    fs.unmount()?;
    let report = cowfs::fsck::check(device, &mut |_, _| {});
    println!(
        "    {} inodes, {} extents, {} of data verified: {}",
        report.inodes,
        report.extents,
        human(report.data_bytes_verified),
        if report.is_clean() {
            "clean"
        } else {
            "PROBLEMS"
        }
    );
    for p in &report.problems {
        println!("    problem: {p}");
    }
    println!("\ndone in {:.1}s", started.elapsed().as_secs_f64());
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// /var/tmp where it exists (a disk filesystem, where O_DIRECT works), else the temp dir.
fn scratch_parent() -> PathBuf {
    let var = Path::new("/var/tmp");
    if var.is_dir() {
        var.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn dedup(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_unstable();
    v.dedup();
    v
}

/// Fills the region, reads it back in order and at random, checking every byte read.
fn workload(pager: &Pager) -> CliResult<()> {
    let mut region = pager.region(REGION)?;
    let t = Instant::now();
    let bar = progress(REGION as u64, "fill");
    for (n, chunk) in region.as_mut_slice().chunks_mut(1 << 20).enumerate() {
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = byte(n * (1 << 20) + i);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let fill = t.elapsed();
    let t = Instant::now();
    let bar = progress(REGION as u64, "read back");
    for (n, chunk) in region.as_slice().chunks(1 << 20).enumerate() {
        if let Some(i) = (0..chunk.len()).find(|i| chunk[*i] != byte(n * (1 << 20) + i)) {
            return Err(format!("byte {} read back wrong", n * (1 << 20) + i).into());
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let read = t.elapsed();
    let t = Instant::now();
    let pages = REGION / PAGE;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..RANDOM_READS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = (x as usize % pages) * PAGE;
        let page = &region.as_slice()[at..at + PAGE];
        if (0..PAGE).any(|i| page[i] != byte(at + i)) {
            return Err(format!("page at {at} read back wrong").into());
        }
    }
    let random = t.elapsed();
    let mb = |d: std::time::Duration| REGION as f64 / d.as_secs_f64() / 1e6;
    println!(
        "    filled at {:.0} MB/s, read back at {:.0} MB/s, {RANDOM_READS} random pages at {:.0} pages/s: every byte checked",
        mb(fill),
        mb(read),
        RANDOM_READS as f64 / random.as_secs_f64()
    );
    let s = pager.stats();
    println!(
        "    pager: {} major faults ({} pages in, {} prefetched, {} prefetch hits), {} zero fills, {} first writes",
        s.major_faults, s.pages_in, s.prefetched, s.prefetch_hits, s.zero_faults, s.write_faults
    );
    println!(
        "           {} pages evicted: {} written, {} clean dropped, {} zero dropped; peak resident {} (budget {})",
        s.evicted,
        s.pages_out,
        s.clean_drops,
        s.zero_drops,
        human(s.peak_resident * PAGE as u64),
        human(BUDGET)
    );
    println!(
        "           fault service p50 {:?}, p99 {:?} over {} faults",
        s.latency.quantile(0.5),
        s.latency.quantile(0.99),
        s.latency.count()
    );
    Ok(())
}

/// The kernel swapping to a cowfs file on a fuseblk mount, when this machine allows it.
fn kernel_swap(dir: &Path) -> CliResult<()> {
    let missing = [
        (rustix::process::geteuid().is_root(), "root"),
        (Path::new("/dev/fuse").exists(), "/dev/fuse"),
        (Path::new("/dev/loop-control").exists(), "loop devices"),
    ];
    if let Some((_, what)) = missing.iter().find(|(have, _)| !have) {
        println!("    skipped: the kernel part needs {what}");
        return Ok(());
    }
    let (size, limit) = (256 << 20, 64 << 20);
    let host = crate::bench::kernel_swap::SwapHost::cowfs(dir, 768 << 20, 384 << 20)?;
    println!(
        "    mounted {} as fuseblk; `cowfs swapon` pinned {}",
        host.mountpoint.display(),
        host.swapfile.display()
    );
    let figures = crate::bench::kernel_swap::workload(size, limit, false);
    host.finish()?;
    let f = figures?;
    println!(
        "    a process touched {} under a {} memory cgroup: swap-out {:.0} MB/s, swap-in {:.0} MB/s, {:.0} random pages/s; every page checked",
        human(size),
        human(limit),
        f.fill_mb_s,
        f.read_mb_s,
        f.random_1
    );
    kernel_swap_through_fs(dir, size, limit)
}

/// The kernel swapping through the filesystem to a copy-on-write, checksummed, compressed
/// swap file, with a snapshot of the subvolume taken while it swaps.
fn kernel_swap_through_fs(dir: &Path, size: u64, limit: u64) -> CliResult<()> {
    let host = crate::bench::kernel_swap::SwapHost::cowfs_through_fs(dir, 384 << 20, Some("lz4"))?;
    println!(
        "    `cowfs swapon --through-fs` {}: copy-on-write, checksummed, compressed (lz4), behind a loop device",
        host.swapfile.display()
    );
    let (mountpoint, host_file) = (host.mountpoint.clone(), host.swapfile.clone());
    let (figures, snapshot, shown) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            crate::bench::kernel_swap::workload(size, limit, true).map_err(|e| e.to_string())
        });
        std::thread::sleep(std::time::Duration::from_secs(1));
        let snapshot = std::process::Command::new(std::env::current_exe()?)
            .arg("snapshot")
            .arg(&mountpoint)
            .arg(mountpoint.join("snap"))
            .output()?;
        let figures = load.join().map_err(|_| "the workload panicked")?;
        let shown = std::process::Command::new(std::env::current_exe()?)
            .args(["swapon", "--show"])
            .output()?;
        CliResult::Ok((figures, snapshot, shown))
    })?;
    host.finish()?;
    let f = figures?;
    let took = match snapshot.status.success() {
        true => "a snapshot of the subvolume taken while it swapped".to_string(),
        false => format!(
            "the snapshot failed: {}",
            String::from_utf8_lossy(&snapshot.stderr).trim()
        ),
    };
    println!(
        "    a process touched {} under a {} memory cgroup: swap-out {:.0} MB/s, swap-in {:.0} MB/s through the filesystem; every page checked; {took}",
        human(size),
        human(limit),
        f.fill_mb_s,
        f.read_mb_s,
    );
    // `cowfs swapon --show`'s COMPRESSION column for this file, such as `lz4 2.86x`.
    let shown = String::from_utf8_lossy(&shown.stdout);
    let ratio = shown
        .lines()
        .find(|l| l.starts_with(&*host_file.to_string_lossy()))
        .and_then(|l| l.split("lz4 ").nth(1)?.split_whitespace().next());
    println!(
        "    its swap-outs took {} less room on the device, stored with lz4 (cowfs swapon --show)",
        ratio.unwrap_or("?")
    );
    Ok(())
}

/// The guided tour: make a scratch image, write, read back, check
#[derive(clap::Args)]
pub struct Demo {
    /// Where to make the scratch image (a temporary directory by default)
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also have the Linux kernel swap to a cowfs file (root, FUSE, loop devices)
    #[arg(long)]
    pub kernel: bool,
}

impl Demo {
    pub fn run(self) -> CliResult {
        let Demo { dir, kernel } = self;
        run(dir, kernel)
    }
}
