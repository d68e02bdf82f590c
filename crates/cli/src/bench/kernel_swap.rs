//! `cowfs bench kernel-swap`: the Linux kernel swapping a process in a memory cgroup to a
//! swap file on a mounted cowfs (pinned, on fuseblk over a loop device; and through the
//! filesystem, a copy-on-write file behind a loop device of its own), and in the same run to swap
//! files on the kernel's own btrfs and ext4 (each on a loop device with direct I/O, as cowfs
//! is): sequential fill, sequential read back, random page reads on one and on four threads.
//! Then file I/O through the cowfs mount against the same on btrfs, beside the pinned swap
//! file and on a mount no swap file was pinned on (which does O_DIRECT its own way), with and
//! without the writeback cache. Needs
//! root; installs btrfs-progs when it is missing. `cowfs bench mount` runs the same file I/O
//! on mounts served on different numbers of threads.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use cowfs::device::AlignedBuf;
use cowfs_fuse::LoopDevice;

use crate::bench::ok;
use crate::commands::memload::Figures;
use crate::size::human;
use crate::CliResult;

const PRIORITY: &str = "10";
/// The file the file I/O figures write and read.
const FILE_IO_LEN: u64 = 512 << 20;

/// A filesystem holding a swap file, mounted for the run.
pub(crate) struct SwapHost {
    kind: &'static str,
    pub mountpoint: PathBuf,
    pub swapfile: PathBuf,
    _loop: Option<LoopDevice>,
}

fn cowfs_binary() -> CliResult<PathBuf> {
    Ok(std::env::current_exe()?)
}

/// A fresh cowfs image of `len` bytes at `image` (over whatever was there).
fn mkfs(image: &Path, len: u64) -> CliResult<()> {
    ok(Command::new(cowfs_binary()?).arg("mkfs").arg(image).args([
        "--force",
        "--size",
        &len.to_string(),
    ]))?;
    Ok(())
}

impl SwapHost {
    /// cowfs: mkfs and mkswapfile in the image, then `cowfs mount --blkdev` and `cowfs swapon`.
    pub(crate) fn cowfs(dir: &Path, image_len: u64, swap_len: u64) -> CliResult<SwapHost> {
        let (image, mountpoint) = (dir.join("kswap-cowfs.img"), dir.join("kswap-cowfs"));
        fs::create_dir_all(&mountpoint)?;
        let cowfs = cowfs_binary()?;
        let (img, mnt) = (
            image.to_str().ok_or("path")?,
            mountpoint.to_str().ok_or("path")?,
        );
        mkfs(&image, image_len)?;
        ok(Command::new(&cowfs).args([
            "mkswapfile",
            img,
            "/swapfile",
            "--size",
            &swap_len.to_string(),
        ]))?;
        ok(Command::new(&cowfs).args(["mount", img, mnt, "--blkdev"]))?;
        let swapfile = mountpoint.join("swapfile");
        ok(Command::new(&cowfs)
            .arg("swapon")
            .arg(&swapfile)
            .args(["-p", PRIORITY]))?;
        Ok(SwapHost {
            kind: "cowfs (fuseblk)",
            mountpoint,
            swapfile,
            _loop: None,
        })
    }

    /// cowfs, the kernel swapping through the filesystem: a copy-on-write, checksummed swap
    /// file made on the mount (compressed as `compression` says, when given), `cowfs swapon
    /// --through-fs`.
    pub(crate) fn cowfs_through_fs(
        dir: &Path,
        swap_len: u64,
        compression: Option<&'static str>,
    ) -> CliResult<SwapHost> {
        let (image, mountpoint) = (dir.join("kswap-cowfs-fs.img"), dir.join("kswap-cowfs-fs"));
        fs::create_dir_all(&mountpoint)?;
        let cowfs = cowfs_binary()?;
        let (img, mnt) = (
            image.to_str().ok_or("path")?,
            mountpoint.to_str().ok_or("path")?,
        );
        // The file, and twice its size reserved for its copy-on-write.
        let image_len = 3 * swap_len + (1 << 30);
        mkfs(&image, image_len)?;
        ok(Command::new(&cowfs).args(["mount", img, mnt]))?;
        let swapfile = mountpoint.join("swapfile");
        ok(Command::new(&cowfs).arg("mkswapfile").arg(&swapfile).args([
            "--size",
            &swap_len.to_string(),
            "--through-fs",
        ]))?;
        if let Some(how) = compression {
            ok(Command::new(&cowfs)
                .args(["property", "set"])
                .arg(&swapfile)
                .args(["compression", how]))?;
        }
        ok(Command::new(&cowfs)
            .args(["swapon", "--through-fs"])
            .arg(&swapfile)
            .args(["-p", PRIORITY]))?;
        Ok(SwapHost {
            kind: match compression {
                None => "cowfs through fs (COW)",
                Some(_) => "cowfs through fs (COW, lz4)",
            },
            mountpoint,
            swapfile,
            _loop: None,
        })
    }

    /// The kernel's btrfs or ext4 on a loop device with direct I/O.
    pub(crate) fn kernel(
        kind: &'static str,
        dir: &Path,
        image_len: u64,
        swap_len: u64,
    ) -> CliResult<SwapHost> {
        let (image, mountpoint) = (
            dir.join(format!("kswap-{kind}.img")),
            dir.join(format!("kswap-{kind}")),
        );
        if kind == "btrfs" {
            crate::bench::ensure_tool(
                "mkfs.btrfs",
                "btrfs-progs",
                "the btrfs baseline needs mkfs.btrfs",
            )?;
        }
        fs::create_dir_all(&mountpoint)?;
        File::create(&image)?.set_len(image_len)?;
        let device = LoopDevice::attach(&image, false)
            .map_err(|e| format!("loop device for {}: {e}", image.display()))?;
        let dev = device.path().to_str().ok_or("path")?.to_string();
        match kind {
            "btrfs" => ok(Command::new("mkfs.btrfs").args(["-q", "-f", &dev]))?,
            _ => ok(Command::new("mkfs.ext4").args(["-q", "-F", &dev]))?,
        };
        ok(Command::new("mount")
            .args(["-t", kind, &dev])
            .arg(&mountpoint))?;
        let swapfile = mountpoint.join("swapfile");
        let size = swap_len.to_string();
        if kind == "btrfs" {
            ok(Command::new("btrfs")
                .args(["filesystem", "mkswapfile", "--size", &size])
                .arg(&swapfile))?;
        } else {
            ok(Command::new("fallocate").args(["-l", &size]).arg(&swapfile))?;
            fs::set_permissions(
                &swapfile,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )?;
            ok(Command::new("mkswap").arg(&swapfile))?;
        }
        ok(Command::new("swapon").args(["-p", PRIORITY]).arg(&swapfile))?;
        Ok(SwapHost {
            kind,
            mountpoint,
            swapfile,
            _loop: Some(device),
        })
    }

    /// Takes the swap file off and unmounts (the loop device detaches with the last close).
    pub(crate) fn finish(self) -> CliResult<()> {
        if self.kind.starts_with("cowfs") {
            let cowfs = cowfs_binary()?;
            ok(Command::new(&cowfs).arg("swapoff").arg(&self.swapfile))?;
            ok(Command::new(&cowfs).arg("umount").arg(&self.mountpoint))?;
        } else {
            ok(Command::new("swapoff").arg(&self.swapfile))?;
            ok(Command::new("umount").arg(&self.mountpoint))?;
        }
        Ok(())
    }
}

/// The kernel's compressed swap in RAM: a zram device of its own (hot-added, so a zram the
/// machine already uses is left alone), compressing with lz4 where this kernel offers it,
/// made swap at the same priority as the swap files. Removed again on drop.
pub(crate) struct ZramSwap {
    device: PathBuf,
    number: String,
    /// The compressor it uses (the kernel's default when lz4 is not offered).
    pub algorithm: String,
}

const ZRAM_CONTROL: &str = "/sys/class/zram-control";

impl ZramSwap {
    /// Whether zram can be set up here: its control directory is there, or appears once the
    /// zram module is loaded (with modprobe, of the kmod package). Why not, otherwise.
    pub(crate) fn available() -> Result<(), String> {
        if Path::new(ZRAM_CONTROL).exists() {
            return Ok(());
        }
        let loaded = match Command::new("modprobe").arg("zram").output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "modprobe zram: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Err(format!(
                "modprobe, to load the zram module, is missing (package kmod: apt-get install kmod): {e}"
            )),
        };
        match (loaded, Path::new(ZRAM_CONTROL).exists()) {
            (_, true) => Ok(()),
            (Ok(()), false) => Err(format!("{ZRAM_CONTROL} is missing after modprobe zram")),
            (Err(e), false) => Err(format!(
                "{ZRAM_CONTROL} is missing (the kernel needs CONFIG_ZRAM); {e}"
            )),
        }
    }

    pub(crate) fn start(len: u64) -> CliResult<ZramSwap> {
        Self::available()?;
        let number = fs::read_to_string(Path::new(ZRAM_CONTROL).join("hot_add"))?
            .trim()
            .to_string();
        let mut zram = ZramSwap {
            device: PathBuf::from(format!("/dev/zram{number}")),
            number,
            algorithm: String::new(),
        };
        let sys = zram.sys();
        let offered = fs::read_to_string(sys.join("comp_algorithm"))?;
        if offered
            .split_whitespace()
            .any(|a| a.trim_matches(['[', ']']) == "lz4")
        {
            fs::write(sys.join("comp_algorithm"), "lz4")?;
        }
        zram.algorithm = fs::read_to_string(sys.join("comp_algorithm"))?
            .split_whitespace()
            .find(|a| a.starts_with('['))
            .unwrap_or("?")
            .trim_matches(['[', ']'])
            .to_string();
        fs::write(sys.join("disksize"), len.to_string())?;
        ok(Command::new("mkswap").arg(&zram.device))?;
        ok(Command::new("swapon")
            .args(["-p", PRIORITY])
            .arg(&zram.device))?;
        Ok(zram)
    }

    fn sys(&self) -> PathBuf {
        PathBuf::from(format!("/sys/block/zram{}", self.number))
    }
}

impl Drop for ZramSwap {
    fn drop(&mut self) {
        let _ = Command::new("swapoff")
            .arg(&self.device)
            .stderr(Stdio::null())
            .status();
        let _ = fs::write(self.sys().join("reset"), "1");
        let _ = fs::write(Path::new(ZRAM_CONTROL).join("hot_remove"), &self.number);
    }
}

/// Runs memload in a memory cgroup of `limit` (on pages that compress, when asked) and returns
/// what it measured.
pub(crate) fn workload(size: u64, limit: u64, compressible: bool) -> CliResult<Figures> {
    let (size, limit) = (size.to_string(), limit.to_string());
    let args = [
        "memload",
        "--size",
        &size,
        "--limit",
        &limit,
        "--threads",
        "4",
    ];
    let text = ok(Command::new(cowfs_binary()?)
        .args(args)
        .args(compressible.then_some("--compressible"))
        .stdin(Stdio::null()))?;
    Ok(Figures::parse(&text)?)
}

fn drop_caches() -> CliResult<()> {
    rustix::fs::sync();
    fs::write("/proc/sys/vm/drop_caches", "3")?;
    Ok(())
}

const FILE_IO_LABELS: [&str; 7] = [
    "sequential write MB/s",
    "sequential read MB/s",
    "4 KiB random read IOPS",
    "4 KiB random write IOPS",
    "4 KiB random read IOPS, 4 threads",
    "4 KiB random write IOPS, 4 threads",
    "64 B O_APPEND writes/s",
];

/// `cowfs bench mount`: [`file_io`] on a cowfs mount served on each of `threads` serving
/// threads, alternating them in every round; every round is printed.
pub fn mount_threads(dir: &Path, threads: &[usize], len: u64, rounds: usize) -> CliResult {
    if !rustix::process::geteuid().is_root() {
        return Err("cowfs bench mount needs root (mounts, dropping the page cache)".into());
    }
    let dir = fs::canonicalize(dir)?;
    let (image, mountpoint) = (dir.join("bench-mount.img"), dir.join("bench-mount"));
    fs::create_dir_all(&mountpoint)?;
    mkfs(&image, len * 2 + (1 << 30))?;
    println!(
        "cowfs bench mount: file I/O on a {} file through a cowfs mount, in {}",
        human(len),
        dir.display()
    );
    for round in 1..=rounds {
        let mut rows = Vec::new();
        for n in threads {
            let option = format!("threads={n}");
            let figures = file_io_on_mount(&image, &mountpoint, &["-o", &option], len)?;
            rows.push((option, figures.to_vec()));
        }
        let title = format!("round {round} of {rounds}");
        let peer = rows[0].0.clone();
        table(&title, &FILE_IO_LABELS, &[], &peer, &rows);
    }
    fs::remove_file(&image)?;
    fs::remove_dir(&mountpoint)?;
    Ok(ExitCode::SUCCESS)
}

/// [`file_io`] on `image` mounted at `mountpoint` with `options`, then unmounted.
fn file_io_on_mount(
    image: &Path,
    mountpoint: &Path,
    options: &[&str],
    len: u64,
) -> CliResult<[f64; 7]> {
    let cowfs = cowfs_binary()?;
    ok(Command::new(&cowfs)
        .arg("mount")
        .args([image, mountpoint])
        .args(options))?;
    let figures = file_io(mountpoint, len);
    ok(Command::new(&cowfs).arg("umount").arg(mountpoint))?;
    figures
}

/// [`file_io`] on a fresh cowfs image mounted as fuseblk, as the pinned swap file's is, but
/// with no swap file pinned on it: a pinned swap file sends O_DIRECT down the kernel's
/// page-cache path for the rest of its mount (docs/MOUNT.md), so the mount most users have
/// is measured apart; `options` are the mount's (`FRESH_MOUNTS`).
fn file_io_without_swap(dir: &Path, image_len: u64, options: &[&str]) -> CliResult<[f64; 7]> {
    let (image, mountpoint) = (dir.join("kswap-cowfs-io.img"), dir.join("kswap-cowfs-io"));
    fs::create_dir_all(&mountpoint)?;
    mkfs(&image, image_len)?;
    let figures = file_io_on_mount(&image, &mountpoint, options, FILE_IO_LEN);
    fs::remove_file(&image)?;
    fs::remove_dir(&mountpoint)?;
    figures
}

/// 4 KiB O_DIRECT reads or writes at random block offsets of `path` (`len` bytes), `ops` in
/// all, from `threads` threads at once. IOPS.
fn random_io(path: &Path, len: u64, write: bool, threads: usize, ops: usize) -> CliResult<f64> {
    let t = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                scope.spawn(move || -> std::io::Result<()> {
                    let direct = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(libc::O_DIRECT)
                        .open(path)?;
                    let mut page = AlignedBuf::zeroed(4096);
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 * 0x2545_F491);
                    for _ in 0..ops / threads {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let at = x % (len / 4096) * 4096;
                        if write {
                            direct.write_all_at(&page, at)?;
                        } else {
                            direct.read_exact_at(&mut page, at)?;
                        }
                    }
                    if write {
                        direct.sync_all()?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .map_err(|_| std::io::Error::other("an I/O thread panicked"))?
        })
    })?;
    Ok(ops as f64 / t.elapsed().as_secs_f64())
}

/// 64-byte writes to a file opened with O_APPEND (a log), `ops` of them. Writes/s.
fn small_appends(path: &Path, ops: usize) -> CliResult<f64> {
    let log = OpenOptions::new().create(true).append(true).open(path)?;
    let record = [b'x'; 64];
    let t = Instant::now();
    for _ in 0..ops {
        std::io::Write::write_all(&mut &log, &record)?;
    }
    let rate = ops as f64 / t.elapsed().as_secs_f64();
    fs::remove_file(path)?;
    Ok(rate)
}

/// fio-style file I/O on `dir`: sequential write and read of `len` bytes in 1 MiB calls, then
/// 4 KiB O_DIRECT random reads and writes from one thread and from four, then small appends.
/// MB/s, MB/s, then IOPS ([`FILE_IO_LABELS`]).
fn file_io(dir: &Path, len: u64) -> CliResult<[f64; 7]> {
    let path = dir.join("bench-file");
    let chunk = AlignedBuf::from_slice(&(0..1 << 20).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
    let mb = |t: Instant| len as f64 / t.elapsed().as_secs_f64() / 1e6;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let t = Instant::now();
    for at in (0..len).step_by(chunk.len()) {
        file.write_all_at(&chunk, at)?;
    }
    file.sync_all()?;
    let write = mb(t);
    drop_caches()?;
    let mut buf = AlignedBuf::zeroed(chunk.len());
    let t = Instant::now();
    for at in (0..len).step_by(chunk.len()) {
        file.read_exact_at(&mut buf, at)?;
    }
    let read = mb(t);
    let ops = 8192;
    let figures = [
        write,
        read,
        random_io(&path, len, false, 1, ops)?,
        random_io(&path, len, true, 1, ops)?,
        random_io(&path, len, false, 4, ops)?,
        random_io(&path, len, true, 4, ops)?,
        small_appends(&dir.join("bench-log"), 50_000)?,
    ];
    fs::remove_file(&path)?;
    Ok(figures)
}

/// Named rows of figures, one figure per label.
type Rows = Vec<(String, Vec<f64>)>;

/// Prints rows of figures under `labels`, then every row's figures as a percentage of the
/// peer's (for a latency, which `lower` marks, the peer's against the row's: above 100% is
/// better either way).
pub(crate) fn table(
    title: &str,
    labels: &[&str],
    lower: &[bool],
    peer: &str,
    rows: &[(String, Vec<f64>)],
) {
    println!("\n{title}");
    print_block(labels, rows, "");
    let percent = percentages(rows, lower, peer);
    println!(
        "as % of {} (better is higher)",
        rows[peer_row(rows, peer)].0
    );
    print_block(labels, &percent, "%");
}

/// The row named `peer` (its name starts so), else the first.
fn peer_row(rows: &[(String, Vec<f64>)], peer: &str) -> usize {
    rows.iter()
        .position(|(n, _)| n.starts_with(peer))
        .unwrap_or(0)
}

/// Every row's figures as a percentage of the peer row's, above 100% better.
fn percentages(rows: &[(String, Vec<f64>)], lower: &[bool], peer: &str) -> Rows {
    let theirs = &rows[peer_row(rows, peer)].1;
    rows.iter()
        .map(|(name, ours)| {
            let percent = ours
                .iter()
                .zip(theirs)
                .enumerate()
                .map(
                    |(i, (ours, theirs))| match lower.get(i).copied().unwrap_or(false) {
                        true => theirs / ours * 100.0,
                        false => ours / theirs * 100.0,
                    },
                )
                .collect();
            (name.clone(), percent)
        })
        .collect()
}

/// The median over rounds of every row's percentage of the peer in the same round: ratios
/// taken within a round, where both met the same machine state, as `bench fs` takes them.
fn median_percentages(rounds: &[Rows], lower: &[bool], peer: &str) -> Rows {
    let per_round: Vec<Rows> = rounds.iter().map(|r| percentages(r, lower, peer)).collect();
    let Some(first) = per_round.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(row, (name, figures))| {
            let medians = (0..figures.len())
                .map(|i| super::median(per_round.iter().map(|r| r[row].1[i]).collect()))
                .collect();
            (name.clone(), medians)
        })
        .collect()
}

/// The rows side by side, one line per label, each figure followed by `unit`.
fn print_block(labels: &[&str], rows: &[(String, Vec<f64>)], unit: &str) {
    let width = rows
        .iter()
        .map(|(n, _)| n.len() + 2)
        .max()
        .unwrap_or(0)
        .max(18);
    print!("{:<38}", "");
    for (name, _) in rows {
        print!("{name:>width$}");
    }
    println!();
    for (i, label) in labels.iter().enumerate() {
        print!("{label:<38}");
        for (_, figures) in rows {
            let figure = format!("{:.0}{unit}", figures[i]);
            print!("{figure:>width$}");
        }
        println!();
    }
}

/// The swap files measured on memory that does not compress: cowfs pinned, cowfs through the
/// filesystem, btrfs, ext4.
const KINDS: [&str; 4] = ["cowfs", "cowfs-fs", "btrfs", "ext4"];
/// The file I/O rows of cowfs mounts no swap file was pinned on, and their mount options:
/// as mounted by default, and with the kernel caching writes.
const FRESH_MOUNTS: [(&str, &[&str]); 2] = [
    ("cowfs (fuseblk), no swap file", &["--blkdev"]),
    (
        "cowfs (fuseblk), writeback cache",
        &["--blkdev", "-o", "writeback_cache"],
    ),
];
/// And on memory that does: btrfs, cowfs through the filesystem plain and with lz4.
const COMPRESSIBLE_KINDS: [&str; 3] = ["btrfs", "cowfs-fs", "cowfs-fs-lz4"];

/// What the rounds measured, a table of rows per round: the swap files on memory that does not
/// compress, on memory that does, and file I/O through the mounts.
#[derive(Default)]
struct Rounds {
    swap: Vec<Rows>,
    compressible: Vec<Rows>,
    file_io: Vec<Rows>,
}

pub fn run(dir: &Path, size: u64, limit: u64, rounds: usize) -> CliResult {
    if !rustix::process::geteuid().is_root() {
        return Err(
            "cowfs bench kernel-swap needs root (loop devices, mounts, swapon, memory cgroups)"
                .into(),
        );
    }
    let dir = fs::canonicalize(dir)?;
    let swap_len = (size - limit) * 2;
    let image_len = swap_len + (2 << 30);
    println!(
        "cowfs bench kernel-swap: {} touched under a {} memory cgroup, {} swap files, in {}, {rounds} round(s)",
        human(size),
        human(limit),
        human(swap_len),
        dir.display()
    );
    let host = |kind: &str| match kind {
        "cowfs" => SwapHost::cowfs(&dir, image_len, swap_len),
        "cowfs-fs" => SwapHost::cowfs_through_fs(&dir, swap_len, None),
        "cowfs-fs-lz4" => SwapHost::cowfs_through_fs(&dir, swap_len, Some("lz4")),
        "btrfs" => SwapHost::kernel("btrfs", &dir, image_len, swap_len),
        _ => SwapHost::kernel("ext4", &dir, image_len, swap_len),
    };
    let mut all = Rounds::default();
    for round in 0..rounds {
        let mut swap_rows = vec![None; KINDS.len()];
        let mut io_rows = vec![None; KINDS.len()];
        for at in turns(KINDS.len(), round) {
            let kind = KINDS[at];
            let host = host(kind)?;
            let figures = workload(size, limit, false);
            // File I/O beside the swap file, on the two copy-on-write filesystems (once for cowfs).
            let io = match kind {
                "ext4" | "cowfs-fs" => None,
                _ => Some(
                    file_io(&host.mountpoint, FILE_IO_LEN)
                        .map_err(|e| format!("file I/O on {kind}: {e}")),
                ),
            };
            let name = host.kind.to_string();
            host.finish()?;
            swap_rows[at] = Some((name.clone(), figures?.values().to_vec()));
            if let Some(io) = io {
                io_rows[at] = Some((name, io?.to_vec()));
            }
        }
        for (row, options) in FRESH_MOUNTS {
            let figures = file_io_without_swap(&dir, image_len, options)
                .map_err(|e| format!("file I/O on {row}: {e}"))?;
            io_rows.push(Some((row.to_string(), figures.to_vec())));
        }
        let mut compressible_rows = vec![None; COMPRESSIBLE_KINDS.len()];
        for at in turns(COMPRESSIBLE_KINDS.len(), round) {
            let host = host(COMPRESSIBLE_KINDS[at])?;
            let figures = workload(size, limit, true);
            let name = host.kind.to_string();
            host.finish()?;
            compressible_rows[at] = Some((name, figures?.values().to_vec()));
        }
        all.swap.push(swap_rows.into_iter().flatten().collect());
        all.file_io.push(io_rows.into_iter().flatten().collect());
        all.compressible
            .push(compressible_rows.into_iter().flatten().collect());
        print_round(&all, round + 1, rounds);
    }
    for kind in KINDS {
        let _ = fs::remove_file(dir.join(format!("kswap-{kind}.img")));
        let _ = fs::remove_dir(dir.join(format!("kswap-{kind}")));
    }
    if rounds > 1 {
        print_medians(&all, rounds);
    }
    Ok(ExitCode::SUCCESS)
}

/// The order `n` cases run in, in round `round`: they take turns going first, since whichever
/// runs first meets the host as the round before left it.
fn turns(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n)
}

const SWAP_TITLE: &str = "kernel swap (memory cgroup, swap file on each)";
const COMPRESSIBLE_TITLE: &str =
    "kernel swap of memory that compresses (64-byte runs of equal words)";
const FILE_IO_TITLE: &str = "file I/O through the mount (512 MiB file)";

/// The tables of the last round measured.
fn print_round(all: &Rounds, round: usize, rounds: usize) {
    let of = if rounds > 1 {
        format!(", round {round} of {rounds}")
    } else {
        String::new()
    };
    let (lower, labels) = (&Figures::LOWER_IS_BETTER, &Figures::LABELS);
    let last = |rows: &[Rows]| rows.last().cloned().unwrap_or_default();
    table(
        &format!("{SWAP_TITLE}{of}"),
        labels,
        lower,
        "btrfs",
        &last(&all.swap),
    );
    table(
        &format!("{COMPRESSIBLE_TITLE}{of}"),
        labels,
        lower,
        "btrfs",
        &last(&all.compressible),
    );
    table(
        &format!("{FILE_IO_TITLE}{of}"),
        &FILE_IO_LABELS,
        &[],
        "btrfs",
        &last(&all.file_io),
    );
}

/// Every row against btrfs, the median over rounds of the per-round percentages.
fn print_medians(all: &Rounds, rounds: usize) {
    let (lower, labels) = (&Figures::LOWER_IS_BETTER, &Figures::LABELS);
    for (title, labels, lower, rows) in [
        (SWAP_TITLE, &labels[..], &lower[..], &all.swap),
        (
            COMPRESSIBLE_TITLE,
            &labels[..],
            &lower[..],
            &all.compressible,
        ),
        (FILE_IO_TITLE, &FILE_IO_LABELS[..], &[][..], &all.file_io),
    ] {
        println!("\n{title}: median of {rounds} rounds, as % of btrfs in the same round (better is higher)");
        print_block(labels, &median_percentages(rows, lower, "btrfs"), "%");
    }
}
