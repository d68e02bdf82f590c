//! Power cuts. A workload of writes, overwrites, truncates, renames, unlinks and fsyncs runs on
//! the crash-simulating device while a model records what every commit made durable. Then
//! power is cut at every flush point, and at sampled points with unflushed writes lost,
//! reordered, or torn at 512-byte sectors. Each image must open, pass fsck, and hold exactly
//! the state of a commit no older than the last one completed before the cut.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use common::*;
use cowfs::device::{AlignedBuf, BlockDevice, CrashDevice, CrashPoint, Landing, MemoryDevice};
use cowfs::format::FileKind;
use cowfs::{CreateAttrs, Filesystem, MkfsOptions, RenameFlags, SetAttr};

/// Path -> content: what the namespace holds.
type Tree = BTreeMap<String, Vec<u8>>;

const NAMES: [&str; 6] = ["/a", "/b", "/c", "/d/x", "/d/y", "/big"];

struct Workload {
    fs: Filesystem,
    dev: Arc<CrashDevice>,
    tree: Tree,
    /// Generation -> the tree that commit made durable.
    committed: HashMap<u64, Tree>,
    /// (flushes completed when a commit returned, its generation).
    commit_points: Vec<(usize, u64)>,
    rng: Rng,
    /// Reflinks, snapshots, defrags, balances and resizes done.
    moved: [u32; 5],
}

impl Workload {
    fn new(seed: u64) -> Workload {
        let fresh = Arc::new(MemoryDevice::new(48 * MIB));
        Filesystem::mkfs(fresh.clone(), &MkfsOptions::default()).unwrap();
        let dev = Arc::new(CrashDevice::from_image(fresh.image()));
        let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
        fs.create(
            fs.root(),
            b"d",
            FileKind::Directory,
            CreateAttrs::with_mode(0o755),
        )
        .unwrap();
        let fresh = HashMap::from([(fs.generation(), Tree::new())]);
        let mut w = Workload {
            fs,
            dev,
            tree: Tree::new(),
            committed: fresh,
            commit_points: vec![],
            rng: Rng(seed),
            moved: [0; 5],
        };
        w.commit();
        w
    }

    fn commit(&mut self) {
        self.fs.sync().unwrap();
        let generation = self.fs.generation();
        self.committed.insert(generation, self.tree.clone());
        self.commit_points
            .push((self.dev.flush_count(), generation));
    }

    fn id(&self, path: &str) -> cowfs::InodeId {
        self.fs.resolve(path).unwrap()
    }

    fn ensure(&mut self, path: &str) -> cowfs::InodeId {
        if !self.tree.contains_key(path) {
            let (dir, name) = self.fs.resolve_parent(path).unwrap();
            self.fs
                .create(
                    dir,
                    name.as_bytes(),
                    FileKind::Regular,
                    CreateAttrs::with_mode(0o644),
                )
                .unwrap();
            self.tree.insert(path.to_string(), vec![]);
        }
        self.id(path)
    }

    /// One random operation. Commits it makes on its own (balance and resize commit as they
    /// go; a write short of space commits first to reuse freed space) are recorded with the
    /// tree they hold.
    fn step(&mut self) {
        let (generation, before) = (self.fs.generation(), self.tree.clone());
        let moving = self.operation();
        for g in generation + 1..=self.fs.generation() {
            if !self.committed.contains_key(&g) {
                let tree = if moving {
                    self.tree.clone()
                } else {
                    before.clone()
                };
                self.committed.insert(g, tree);
                self.commit_points.push((self.dev.flush_count(), g));
            }
        }
    }

    /// Runs one operation; true for those that move blocks without changing content.
    fn operation(&mut self) -> bool {
        let path = NAMES[self.rng.below(NAMES.len() as u64) as usize];
        match self.rng.below(20) {
            10..=14 => {
                self.moving_step(path);
                return true;
            }
            0..=3 => {
                let id = self.ensure(path);
                let max = if path == "/big" { 3 * MIB } else { 200_000 };
                let off = self.rng.below(max);
                let len = 1 + self.rng.below(if path == "/big" { MIB } else { 40_000 }) as usize;
                let data = pattern(self.rng.below(256) as u8, len);
                self.fs.write(id, off, &data).unwrap();
                let content = self.tree.get_mut(path).unwrap();
                if content.len() < off as usize + len {
                    content.resize(off as usize + len, 0);
                }
                content[off as usize..off as usize + len].copy_from_slice(&data);
            }
            4 => {
                let id = self.ensure(path);
                let size = self.rng.below(300_000);
                self.fs
                    .setattr(
                        id,
                        &SetAttr {
                            size: Some(size),
                            ..SetAttr::default()
                        },
                    )
                    .unwrap();
                self.tree.get_mut(path).unwrap().resize(size as usize, 0);
            }
            5 if self.tree.contains_key(path) => {
                let (dir, name) = self.fs.resolve_parent(path).unwrap();
                self.fs.unlink(dir, name.as_bytes()).unwrap();
                self.tree.remove(path);
            }
            6 if self.tree.contains_key(path) => {
                let to = NAMES[self.rng.below(NAMES.len() as u64) as usize];
                let (fd, fname) = self.fs.resolve_parent(path).unwrap();
                let (td, tname) = self.fs.resolve_parent(to).unwrap();
                self.fs
                    .rename(
                        fd,
                        fname.as_bytes(),
                        td,
                        tname.as_bytes(),
                        RenameFlags::default(),
                    )
                    .unwrap();
                let content = self.tree.remove(path).unwrap();
                self.tree.insert(to.to_string(), content);
            }
            9 => {
                // Direct writes of blocks a previous direct write in the same transaction
                // allocated are overwritten in place; a cut must still leave committed data.
                let id = self.ensure(path);
                let off = self.rng.below(48) * 4096;
                let len = (1 + self.rng.below(16) as usize) * 4096;
                let data = pattern(self.rng.below(256) as u8, len);
                self.fs
                    .write_direct(id, off, &AlignedBuf::from_slice(&data))
                    .unwrap();
                let content = self.tree.get_mut(path).unwrap();
                if content.len() < off as usize + len {
                    content.resize(off as usize + len, 0);
                }
                content[off as usize..off as usize + len].copy_from_slice(&data);
            }
            7 | 8 => {
                if self.tree.contains_key(path) {
                    let id = self.id(path);
                    self.fs.fsync(id).unwrap();
                    let generation = self.fs.generation();
                    self.committed.insert(generation, self.tree.clone());
                    self.commit_points
                        .push((self.dev.flush_count(), generation));
                }
            }
            16 => {
                // Appends and small writes: files growing past the inline limit.
                let id = self.ensure(path);
                let len = 1 + self.rng.below(1500) as usize;
                let size = self.tree[path].len() as u64;
                let off = if self.rng.below(2) == 0 {
                    size
                } else {
                    self.rng.below(3000)
                };
                let data = pattern(self.rng.below(256) as u8, len);
                self.fs.write(id, off, &data).unwrap();
                self.model_write(path, off, &data);
            }
            17 => {
                // Truncates up and down across the inline limit.
                let id = self.ensure(path);
                let size = [self.rng.below(3000), 2048 + self.rng.below(70_000)]
                    [self.rng.below(2) as usize];
                let set = SetAttr {
                    size: Some(size),
                    ..SetAttr::default()
                };
                self.fs.setattr(id, &set).unwrap();
                self.tree.get_mut(path).unwrap().resize(size as usize, 0);
            }
            18 if self.tree.contains_key(path) => {
                // Punch or zero an unaligned range, shared blocks or not.
                let id = self.id(path);
                let (off, len) = (self.rng.below(200_000), 1 + self.rng.below(30_000));
                let mode = if self.rng.below(2) == 0 {
                    cowfs::FallocateMode::PunchHole
                } else {
                    cowfs::FallocateMode::ZeroRange { keep_size: true }
                };
                self.fs.fallocate(id, mode, off, len).unwrap();
                let content = self.tree.get_mut(path).unwrap();
                let end = ((off + len) as usize).min(content.len());
                if (off as usize) < end {
                    content[off as usize..end].fill(0);
                }
            }
            19 if self.tree.contains_key(path) => {
                // copy_file_range within a file or to another: shares the aligned middle.
                let to = NAMES[self.rng.below(NAMES.len() as u64) as usize];
                let (src, dst) = (self.id(path), self.ensure(to));
                let size = self.tree[path].len() as u64;
                let (from, at) = (self.rng.below(size + 1), self.rng.below(200_000));
                let len = self.rng.below(60_000).min(size - from);
                if src == dst && from < at + len && at < from + len {
                    return false;
                }
                let copied = self.fs.copy_file_range(src, from, dst, at, len).unwrap();
                assert_eq!(copied, len);
                let data = self.tree[path][from as usize..(from + len) as usize].to_vec();
                if len > 0 {
                    self.model_write(to, at, &data);
                }
            }
            _ => self.commit(),
        }
        false
    }

    fn model_write(&mut self, path: &str, off: u64, data: &[u8]) {
        let content = self.tree.get_mut(path).unwrap();
        let end = off as usize + data.len();
        if content.len() < end {
            content.resize(end, 0);
        }
        content[off as usize..end].copy_from_slice(data);
    }

    /// Operations that share or move blocks: reflink, snapshot, defrag, balance, resize.
    fn moving_step(&mut self, path: &'static str) {
        let other = NAMES[self.rng.below(NAMES.len() as u64) as usize];
        let kind = self.rng.below(5);
        self.moved[kind as usize] += 1;
        match kind {
            0 if path != other && self.tree.contains_key(path) && self.tree.contains_key(other) => {
                self.fs.clone_file(self.id(path), self.id(other)).unwrap();
                let content = self.tree[path].clone();
                self.tree.insert(other.to_string(), content);
            }
            1 => {
                if self.fs.resolve("/snap").is_ok() {
                    self.fs.delete_subvolume(self.fs.root(), b"snap").unwrap();
                }
                self.fs
                    .snapshot(self.fs.root().subvol, self.fs.root(), b"snap", false)
                    .unwrap();
                self.tree.retain(|p, _| !p.starts_with("/snap/"));
                let copies: Vec<(String, Vec<u8>)> = self
                    .tree
                    .iter()
                    .map(|(p, c)| (format!("/snap{p}"), c.clone()))
                    .collect();
                self.tree.extend(copies);
            }
            2 if self.tree.contains_key(path) => {
                self.fs
                    .defrag(self.id(path), self.rng.below(2) == 0)
                    .unwrap();
            }
            3 => {
                self.fs
                    .balance(cowfs::BalanceFilter::default(), &mut |_| {})
                    .unwrap();
            }
            4 => {
                let size = (40 + self.rng.below(25)) * MIB;
                match self.fs.resize(size, &mut |_| {}) {
                    Err(e) if e.errno() == cowfs::Errno::NOSPC => {}
                    other => drop(other.unwrap()),
                }
            }
            _ => {}
        }
    }

    /// The newest generation whose commit had returned by the time `flushes` completed.
    fn durable_at(&self, flushes: usize) -> u64 {
        self.commit_points
            .iter()
            .filter(|(f, _)| *f <= flushes)
            .map(|(_, g)| *g)
            .max()
            .unwrap_or(0)
    }
}

/// Opens a crash image, checks it with fsck, and returns its generation and tree.
fn recover(image: Vec<u8>) -> Result<(u64, Tree), String> {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::from_image(image));
    let fs = Filesystem::open(dev.clone(), &no_timer()).map_err(|e| format!("open: {e}"))?;
    let generation = fs.generation();
    let mut tree = Tree::new();
    for path in NAMES
        .iter()
        .flat_map(|p| [p.to_string(), format!("/snap{p}")])
    {
        if let Ok(id) = fs.resolve(&path) {
            tree.insert(path, read_all(&fs, id));
        }
    }
    // A post-crash transaction must work too: the freed space is really free.
    let f = fs
        .create(
            fs.root(),
            b"after-crash",
            FileKind::Regular,
            CreateAttrs::with_mode(0o644),
        )
        .map_err(|e| e.to_string())?;
    fs.write(f, 0, &[9u8; 100_000]).map_err(|e| e.to_string())?;
    fs.unmount().map_err(|e| format!("unmount: {e}"))?;
    let report = cowfs::fsck::check(dev, &mut |_, _| {});
    if !report.is_clean() {
        return Err(format!("fsck after recovery: {:?}", report.problems));
    }
    Ok((generation, tree))
}

fn check_point(w: &Workload, flushes: usize, image: Vec<u8>, what: &str) {
    let (generation, tree) = recover(image).unwrap_or_else(|e| panic!("{what}: {e}"));
    let floor = w.durable_at(flushes);
    assert!(
        generation >= floor,
        "{what}: recovered generation {generation}, but {floor} was durable"
    );
    let expect = w
        .committed
        .get(&generation)
        .unwrap_or_else(|| panic!("{what}: generation {generation} was never committed"));
    assert!(
        tree == *expect,
        "{what}: generation {generation} reads differently from what was committed"
    );
}

/// The workload seeds a test runs: `default` alone, or with `CRASH_SEEDS=N` the N seeds from
/// `default` on in steps of 1000, for soaking the crash tests beyond the test command.
fn seeds(default: u64) -> impl Iterator<Item = u64> {
    (0..env_number("CRASH_SEEDS", 1)).map(move |i| default + 1000 * i)
}

fn run_workload(seed: u64, steps: usize) -> Workload {
    let mut w = Workload::new(seed);
    for _ in 0..steps {
        w.step();
    }
    w.commit();
    w
}

#[test]
fn power_cut_at_every_flush_point() {
    seeds(1).for_each(cut_at_every_flush_point);
}

fn cut_at_every_flush_point(seed: u64) {
    let w = run_workload(seed, 60);
    let flushes = w.dev.flush_count();
    assert!(flushes > 20, "the workload flushed only {flushes} times");
    // The test command's seed must cover every kind; a soak's other seeds need not.
    assert!(
        seed != 1 || w.moved.iter().all(|n| *n > 0),
        "every kind of block-moving operation ran: {:?}",
        w.moved
    );
    for k in 0..=flushes {
        check_point(
            &w,
            k,
            w.dev.image_at_flush(k),
            &format!("seed {seed}: cut after flush {k}"),
        );
    }
}

#[test]
fn power_cut_with_lost_reordered_and_torn_writes() {
    seeds(2).for_each(cut_with_lost_reordered_and_torn_writes);
}

fn cut_with_lost_reordered_and_torn_writes(seed: u64) {
    let w = run_workload(seed, 50);
    let mut rng = Rng(97 + seed);
    let flushes = w.dev.flush_count();
    for k in 0..flushes {
        let pending = w.dev.writes_after_flush(k);
        if pending == 0 {
            continue;
        }
        for variant in 0..3 {
            let mut landed = |_: usize, _: &cowfs::device::PendingWrite| match rng.below(4) {
                0 => Landing::Lost,
                1 => Landing::Whole,
                _ => Landing::Torn(rng.next()),
            };
            let image = w.dev.crash_image(CrashPoint {
                flushes: k,
                landed: &mut landed,
            });
            check_point(
                &w,
                k,
                image,
                &format!(
                    "seed {seed}: cut after flush {k} (+{pending} unflushed writes, variant {variant})"
                ),
            );
        }
    }
}

#[test]
fn uncommitted_allocations_are_free_after_a_crash() {
    let mut w = Workload::new(3);
    let id = w.ensure("/a");
    w.commit();
    let before = w.fs.info().unwrap().data_used;
    let at = w.dev.flush_count();
    w.fs.write(id, 0, &pattern(1, 4 * MIB as usize)).unwrap();
    w.fs.extent_map(id).unwrap();
    assert!(
        w.fs.info().unwrap().data_used > before,
        "the write allocated space"
    );
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::from_image(w.dev.image_at_flush(at)));
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    assert_eq!(fs.info().unwrap().data_used, before);
    drop(fs);
    assert_clean(&dev);
}
