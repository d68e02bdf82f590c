//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use cowfs::device::{BlockDevice, MemoryDevice};
use cowfs::format::FileKind;
use cowfs::{CreateAttrs, Filesystem, InodeId, MkfsOptions, OpenOptions};

pub const MIB: u64 = 1 << 20;

/// A number from the environment (how soak runs ask for more cases or other seeds than
/// the test command), else `default`.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn no_timer() -> OpenOptions {
    OpenOptions {
        read_only: false,
        commit_interval: None,
        ..OpenOptions::default()
    }
}

pub fn read_only() -> OpenOptions {
    OpenOptions {
        read_only: true,
        commit_interval: None,
        ..OpenOptions::default()
    }
}

/// A fresh filesystem on a memory device of `size` bytes.
pub fn memory_fs(size: u64) -> (Arc<dyn BlockDevice>, Filesystem) {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(size));
    Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    (dev, fs)
}

pub fn file(fs: &Filesystem, dir: InodeId, name: &str) -> InodeId {
    fs.create(
        dir,
        name.as_bytes(),
        FileKind::Regular,
        CreateAttrs::with_mode(0o644),
    )
    .unwrap()
}

pub fn dir(fs: &Filesystem, parent: InodeId, name: &str) -> InodeId {
    fs.create(
        parent,
        name.as_bytes(),
        FileKind::Directory,
        CreateAttrs::with_mode(0o755),
    )
    .unwrap()
}

pub fn read_all(fs: &Filesystem, id: InodeId) -> Vec<u8> {
    let size = fs.getattr(id).unwrap().size as usize;
    let mut buf = vec![0; size];
    assert_eq!(fs.read(id, 0, &mut buf).unwrap(), size);
    buf
}

/// Bytes that differ at every offset, so misplaced data shows.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

pub fn assert_clean(dev: &Arc<dyn BlockDevice>) {
    let report = cowfs::fsck::check(dev.clone(), &mut |_, _| {});
    assert!(report.is_clean(), "fsck problems: {:#?}", report.problems);
}

/// A small deterministic generator for tests that need reproducible randomness.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Pseudo-random bytes: nothing compresses them.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs `writer` while three threads call `read` without pause, each with its own generator
/// (the reads check what they get); every reader must have read at least once.
pub fn with_racing_readers(read: impl Fn(&mut Rng) + Sync, writer: impl FnOnce()) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..3)
            .map(|t| {
                let (read, stop) = (&read, &stop);
                scope.spawn(move || {
                    let (mut rng, mut reads) = (Rng(t + 1), 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        read(&mut rng);
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        writer();
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            assert!(reader.join().unwrap() > 0, "a reader never read");
        }
    });
}

/// A memory device on which TRIM scribbles over the trimmed ranges, as a server that hands
/// trimmed space to someone else might leave it: data the filesystem still needed there reads
/// back wrong. Counts the bytes trimmed.
#[derive(Debug)]
pub struct ScribblingDevice {
    inner: MemoryDevice,
    pub trimmed: std::sync::atomic::AtomicU64,
}

impl ScribblingDevice {
    pub fn new(size: u64) -> Self {
        ScribblingDevice {
            inner: MemoryDevice::new(size),
            trimmed: Default::default(),
        }
    }
}

impl BlockDevice for ScribblingDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write_at(offset, data)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.inner.flush()
    }
    fn discard(&self, ranges: &[(u64, u64)]) -> std::io::Result<()> {
        for &(offset, len) in ranges {
            let garbage = vec![0xEE; len as usize];
            self.inner.write_at(offset, &garbage)?;
            self.trimmed
                .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn resize(&self, len: u64) -> std::io::Result<()> {
        self.inner.resize(len)
    }
}
