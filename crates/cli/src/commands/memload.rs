//! `cowfs memload`: a program that uses more memory than its memory cgroup allows, so the
//! kernel must swap it out and in, and that checks every page it gets back. The kernel-swap
//! test and `cowfs bench kernel-swap` run it against swap files on cowfs, btrfs and ext4.

use crate::size;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use crate::CliResult;

const PAGE: usize = 4096;
const WORDS: usize = PAGE / 8;

/// A memory cgroup of this process's own, removed again on drop (cgroup v2 where it is
/// mounted with the memory controller, else v1).
pub struct MemoryCgroup {
    dir: PathBuf,
    parent_procs: PathBuf,
}

impl MemoryCgroup {
    /// Makes a cgroup below this process's own, limited to `limit` bytes of memory (swap
    /// unlimited), and moves this process into it.
    pub fn enter(limit: u64) -> io::Result<MemoryCgroup> {
        let (parent, limit_file) = own_memory_cgroup()?;
        let dir = parent.join(format!("cowfs-memload-{}", std::process::id()));
        fs::create_dir(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        let cgroup = MemoryCgroup {
            parent_procs: parent.join("cgroup.procs"),
            dir,
        };
        fs::write(cgroup.dir.join(limit_file), limit.to_string())?;
        fs::write(
            cgroup.dir.join("cgroup.procs"),
            std::process::id().to_string(),
        )?;
        Ok(cgroup)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = fs::write(&self.parent_procs, std::process::id().to_string());
        let _ = fs::remove_dir(&self.dir);
    }
}

/// This process's memory cgroup directory and the name of its limit file.
fn own_memory_cgroup() -> io::Result<(PathBuf, &'static str)> {
    let cgroups = fs::read_to_string("/proc/self/cgroup")?;
    let v1 = Path::new("/sys/fs/cgroup/memory");
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next().unwrap_or("/"));
        let relative = path.trim_start_matches('/');
        if controllers == Some("memory") && v1.exists() {
            return Ok((v1.join(relative), "memory.limit_in_bytes"));
        }
        if controllers == Some("") {
            let dir = Path::new("/sys/fs/cgroup").join(relative);
            let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            if available.split_whitespace().any(|c| c == "memory") {
                return Ok((dir, "memory.max"));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "no memory cgroup controller is mounted",
    ))
}

/// The value word `word` of page `page` holds after `version` rewrites: every word differs
/// (every run of `run` words, in compressible memory), so a page read back at the wrong place,
/// or stale, is caught.
fn word(page: usize, word: usize, version: u32, run: usize) -> u64 {
    ((page as u64) << 12 | (word / run) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(version) << 48
}

/// Words per value in compressible memory: 64-byte runs, which LZ4 stores in about a sixth.
const COMPRESSIBLE_RUN: usize = 8;

/// Pages of memory the workload runs on: an anonymous mapping of its own, or a pager region.
pub struct Memory {
    base: *mut u64,
    pages: usize,
    owned: bool,
    /// Words per value (1: no page compresses).
    run: usize,
}

// SAFETY: plain memory; the workload's threads never write a page another one reads.
unsafe impl Sync for Memory {}

impl Memory {
    /// A private anonymous mapping of `pages` pages (the kernel swaps it).
    pub fn anonymous(pages: usize) -> io::Result<Memory> {
        // SAFETY: an anonymous private mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Memory {
            base: base.cast(),
            pages,
            owned: true,
            run: 1,
        })
    }

    /// The same memory filled with pages that compress (runs of equal words).
    pub fn compressible(mut self) -> Memory {
        self.run = COMPRESSIBLE_RUN;
        self
    }

    /// A view of a pager region (which outlives the view).
    pub fn of_region(region: &pager::Region) -> Memory {
        Memory {
            base: region.as_ptr().cast(),
            pages: region.len() / PAGE,
            owned: false,
            run: 1,
        }
    }

    fn page(&self, n: usize) -> *mut u64 {
        // SAFETY: page `n` lies inside the memory.
        unsafe { self.base.add(n * WORDS) }
    }

    fn write(&self, n: usize, version: u32) {
        // SAFETY: page `n` lies inside the memory and no other thread uses it meanwhile.
        let page = unsafe { std::slice::from_raw_parts_mut(self.page(n), WORDS) };
        for (i, w) in page.iter_mut().enumerate() {
            *w = word(n, i, version, self.run);
        }
    }

    fn check(&self, n: usize, version: u32) -> Result<(), String> {
        // SAFETY: page `n` lies inside the memory.
        let page = unsafe { std::slice::from_raw_parts(self.page(n), WORDS) };
        match page
            .iter()
            .enumerate()
            .find(|(i, w)| **w != word(n, *i, version, self.run))
        {
            None => Ok(()),
            Some((i, w)) => Err(format!(
                "page {n} word {i}: read {w:#x}, wrote {:#x}",
                word(n, i, version, self.run)
            )),
        }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: the mapping was made by `anonymous` with this length.
            unsafe { libc::munmap(self.base.cast(), self.pages * PAGE) };
        }
    }
}

/// What one run of the workload measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub fill_mb_s: f64,
    pub read_mb_s: f64,
    pub random_1: f64,
    pub random_n: f64,
    /// Random pages, three in ten rewritten, on one thread: pages/s.
    pub mixed: f64,
    /// The slowest 1% of single-thread random page reads took at least this long.
    pub p99_us: f64,
}

impl Figures {
    /// The lines `cowfs memload` prints, in the order `parse` reads them.
    pub const LABELS: [&'static str; 6] = [
        "fill MB/s",
        "sequential read MB/s",
        "random reads, 1 thread, pages/s",
        "random reads, N threads, pages/s",
        "mixed read/write, pages/s",
        "random read p99 us",
    ];

    /// Which figures are times (lower is better).
    pub const LOWER_IS_BETTER: [bool; 6] = [false, false, false, false, false, true];

    pub fn values(&self) -> [f64; 6] {
        [
            self.fill_mb_s,
            self.read_mb_s,
            self.random_1,
            self.random_n,
            self.mixed,
            self.p99_us,
        ]
    }

    pub fn parse(text: &str) -> Result<Figures, String> {
        let mut v = [0.0; 6];
        for (value, label) in v.iter_mut().zip(Self::LABELS) {
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(label))
                .ok_or_else(|| format!("no {label:?} in: {text}"))?;
            *value = line
                .trim_start_matches(':')
                .trim()
                .parse()
                .map_err(|e| format!("{label}: {e}"))?;
        }
        Ok(Figures {
            fill_mb_s: v[0],
            read_mb_s: v[1],
            random_1: v[2],
            random_n: v[3],
            mixed: v[4],
            p99_us: v[5],
        })
    }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Fills the memory, reads it back in order, reads random pages on one thread and on
/// `threads`, then a mixed random read/write run; every page read is checked.
pub fn workload(mem: &Memory, threads: usize) -> Result<Figures, String> {
    let bytes = (mem.pages * PAGE) as f64;
    let t = Instant::now();
    for n in 0..mem.pages {
        mem.write(n, 0);
    }
    let fill_mb_s = bytes / t.elapsed().as_secs_f64() / 1e6;
    let t = Instant::now();
    for n in 0..mem.pages {
        mem.check(n, 0)?;
    }
    let read_mb_s = bytes / t.elapsed().as_secs_f64() / 1e6;
    let reads = mem.pages.min(65536);
    let mut took = Vec::with_capacity(reads);
    let mut x = 0x2545_F491_4F6C_DD1D_u64;
    let t = Instant::now();
    for _ in 0..reads {
        let started = Instant::now();
        mem.check(xorshift(&mut x) as usize % mem.pages, 0)?;
        took.push(started.elapsed());
    }
    let random_1 = reads as f64 / t.elapsed().as_secs_f64();
    took.sort_unstable();
    let p99_us = took[took.len() * 99 / 100].as_secs_f64() * 1e6;
    let t = Instant::now();
    random_reads(mem, reads, threads.max(1))?;
    let random_n = reads as f64 / t.elapsed().as_secs_f64();
    let mut versions = vec![0u32; mem.pages];
    let t = Instant::now();
    for _ in 0..reads {
        let n = xorshift(&mut x) as usize % mem.pages;
        mem.check(n, versions[n])?;
        if x % 10 < 3 {
            versions[n] += 1;
            mem.write(n, versions[n]);
        }
    }
    let mixed = reads as f64 / t.elapsed().as_secs_f64();
    Ok(Figures {
        fill_mb_s,
        read_mb_s,
        random_1,
        random_n,
        mixed,
        p99_us,
    })
}

/// `cowfs memload`: the workload on memory of its own in a memory cgroup of `limit`.
pub fn run(size: u64, limit: Option<u64>, threads: usize, compressible: bool) -> CliResult {
    let _cgroup = limit.map(MemoryCgroup::enter).transpose()?;
    let mut mem = Memory::anonymous(size as usize / PAGE)?;
    if compressible {
        mem = mem.compressible();
    }
    let figures = workload(&mem, threads)?;
    for (label, value) in Figures::LABELS.iter().zip(figures.values()) {
        println!("{label}: {value:.1}");
    }
    println!("verified {} pages", mem.pages);
    Ok(ExitCode::SUCCESS)
}

fn random_reads(mem: &Memory, reads: usize, threads: usize) -> Result<(), String> {
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut x = 0x2545_F491_4F6C_DD1D_u64 ^ (t as u64 + 1);
                    for _ in 0..reads / threads {
                        mem.check(xorshift(&mut x) as usize % mem.pages, 0)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| "a reader panicked".to_string())?)
    })
}

/// Use SIZE of memory in a memory cgroup limited to LIMIT, so the kernel swaps, and check
/// every page (the kernel-swap test and benchmark run it)
#[derive(clap::Args)]
pub struct Memload {
    #[arg(long, value_parser = size::parse)]
    pub size: u64,
    #[arg(long, value_parser = size::parse)]
    pub limit: Option<u64>,
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Pages that compress (runs of equal 8-byte words), as much real memory does
    #[arg(long)]
    pub compressible: bool,
}

impl Memload {
    pub fn run(self) -> CliResult {
        let Memload {
            size,
            limit,
            threads,
            compressible,
        } = self;
        run(size, limit, threads, compressible)
    }
}
