//! `cowfs memload`: a program that uses more memory than its memory cgroup allows, so the
//! kernel must swap it out and in, and that checks every page it gets back. The kernel-swap
//! test and `cowfs bench kernel-swap` run it against swap files on cowfs, btrfs and ext4.

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

/// The value page `page` holds at word `word` (every word differs, so a page read back at
/// the wrong place or with a stale word is caught).
fn word(page: usize, word: usize) -> u64 {
    ((page as u64) << 12 | word as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Anonymous private memory, unmapped on drop.
struct Region {
    base: *mut u64,
    pages: usize,
}

// SAFETY: the mapping is plain memory; threads only read it after it is filled.
unsafe impl Sync for Region {}

impl Region {
    fn new(pages: usize) -> io::Result<Region> {
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
        Ok(Region {
            base: base.cast(),
            pages,
        })
    }

    fn page(&self, n: usize) -> &[u64] {
        // SAFETY: page `n` lies inside the mapping.
        unsafe { std::slice::from_raw_parts(self.base.add(n * WORDS), WORDS) }
    }

    fn fill(&mut self, n: usize) {
        // SAFETY: page `n` lies inside the mapping, and `&mut self` makes this the only access.
        let page = unsafe { std::slice::from_raw_parts_mut(self.base.add(n * WORDS), WORDS) };
        for (i, w) in page.iter_mut().enumerate() {
            *w = word(n, i);
        }
    }

    fn check(&self, n: usize) -> Result<(), String> {
        match self
            .page(n)
            .iter()
            .enumerate()
            .find(|(i, w)| **w != word(n, *i))
        {
            None => Ok(()),
            Some((i, w)) => Err(format!(
                "page {n} word {i}: read {w:#x}, wrote {:#x}",
                word(n, i)
            )),
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` with this length.
        unsafe { libc::munmap(self.base.cast(), self.pages * PAGE) };
    }
}

/// Fills `size` bytes, reads them back in order, then reads random pages on one thread and
/// on `threads` threads, checking every page; prints MB/s and faults/s for each phase.
pub fn run(size: u64, limit: Option<u64>, threads: usize) -> CliResult {
    let _cgroup = limit.map(MemoryCgroup::enter).transpose()?;
    let pages = (size as usize) / PAGE;
    let mut region = Region::new(pages)?;
    let mb = |t: Instant| size as f64 / t.elapsed().as_secs_f64() / 1e6;
    let t = Instant::now();
    for n in 0..pages {
        region.fill(n);
    }
    println!("fill: {:.0} MB/s", mb(t));
    let t = Instant::now();
    for n in 0..pages {
        region.check(n)?;
    }
    println!("sequential read: {:.0} MB/s", mb(t));
    let reads = pages.min(65536);
    for threads in [1, threads.max(1)] {
        let t = Instant::now();
        random_reads(&region, reads, threads)?;
        println!(
            "random reads, {threads} thread(s): {:.0} pages/s",
            reads as f64 / t.elapsed().as_secs_f64()
        );
    }
    println!("verified {pages} pages");
    Ok(ExitCode::SUCCESS)
}

fn random_reads(region: &Region, reads: usize, threads: usize) -> Result<(), String> {
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut x = 0x2545_F491_4F6C_DD1D_u64 ^ (t as u64 + 1);
                    for _ in 0..reads / threads {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        region.check((x % region.pages as u64) as usize)?;
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
