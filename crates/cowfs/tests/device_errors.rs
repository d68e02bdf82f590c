//! A device that fails a write or a flush, with any errno, at any point of a workload. The rule
//! (docs/DESIGN.md): the call that saw the failure reports it; every later fsync, sync and
//! commit reports it too; every later change is EROFS while reads are still served; and nothing
//! written after the last good commit is ever committed. After a reopen the image is exactly
//! at its last good commit (or at the commit that failed, when only its last superblock copies
//! did not land): fsck clean, no checksum mismatch, no leaked space.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use cowfs::device::{AlignedBuf, BlockDevice, FaultyDevice, MemoryDevice};
use cowfs::format::FileKind;
use cowfs::{CreateAttrs, Errno, Filesystem, InodeId, MkfsOptions, RenameFlags};

/// Path -> content.
type Tree = BTreeMap<&'static str, Vec<u8>>;

const PATHS: [&str; 5] = ["/a", "/b", "/big", "/d", "/d/c"];

/// What a step does to the model, and whether it is a commit.
enum Step {
    Change(fn(&Filesystem) -> cowfs::Result<()>, fn(&mut Tree)),
    Commit(fn(&Filesystem) -> cowfs::Result<()>),
}

fn write_a(fs: &Filesystem) -> cowfs::Result<()> {
    let a = fs.resolve("/a")?;
    fs.write(a, 0, &pattern(1, 300_000)).map(drop)
}

fn direct_b(fs: &Filesystem) -> cowfs::Result<()> {
    let b = fs.resolve("/b")?;
    let data = AlignedBuf::from_slice(&pattern(2, 64 * 1024));
    fs.write_direct(b, 4096, &data).map(drop)
}

fn overwrite_a(fs: &Filesystem) -> cowfs::Result<()> {
    let a = fs.resolve("/a")?;
    fs.write(a, 50_000, &pattern(3, 100_000)).map(drop)
}

/// Enough to go through the write-behind threads several times.
fn write_big(fs: &Filesystem) -> cowfs::Result<()> {
    let big = fs.resolve("/big")?;
    fs.write(big, 0, &pattern(4, 17 << 20)).map(drop)
}

fn create(fs: &Filesystem, path: &str, kind: FileKind) -> cowfs::Result<()> {
    let (dir, name) = fs.resolve_parent(path)?;
    fs.create(dir, name.as_bytes(), kind, CreateAttrs::with_mode(0o644))
        .map(drop)
}

fn sync(fs: &Filesystem) -> cowfs::Result<()> {
    fs.sync()
}

/// fsync of /a (of the root when a failed step left no /a: it commits the same).
fn fsync_a(fs: &Filesystem) -> cowfs::Result<()> {
    fs.fsync(fs.resolve("/a").unwrap_or(fs.root()))
}

fn put(tree: &mut Tree, path: &'static str, offset: usize, data: &[u8]) {
    let content = tree.entry(path).or_default();
    if content.len() < offset + data.len() {
        content.resize(offset + data.len(), 0);
    }
    content[offset..offset + data.len()].copy_from_slice(data);
}

fn workload() -> Vec<Step> {
    vec![
        Step::Change(
            |fs| create(fs, "/a", FileKind::Regular),
            |t| drop(t.insert("/a", vec![])),
        ),
        Step::Change(write_a, |t| put(t, "/a", 0, &pattern(1, 300_000))),
        Step::Commit(fsync_a),
        Step::Change(
            |fs| create(fs, "/b", FileKind::Regular),
            |t| drop(t.insert("/b", vec![])),
        ),
        Step::Change(direct_b, |t| put(t, "/b", 4096, &pattern(2, 64 * 1024))),
        Step::Change(
            |fs| create(fs, "/d", FileKind::Directory),
            |t| drop(t.insert("/d", vec![])),
        ),
        Step::Change(overwrite_a, |t| put(t, "/a", 50_000, &pattern(3, 100_000))),
        Step::Commit(sync),
        Step::Change(
            |fs| create(fs, "/big", FileKind::Regular),
            |t| drop(t.insert("/big", vec![])),
        ),
        Step::Change(write_big, |t| put(t, "/big", 0, &pattern(4, 17 << 20))),
        Step::Change(
            |fs| {
                let (d, root) = (fs.resolve("/d")?, fs.root());
                fs.rename(root, b"b", d, b"c", RenameFlags::default())
            },
            |t| {
                let b = t.remove("/b").unwrap();
                t.insert("/d/c", b);
            },
        ),
        Step::Commit(fsync_a),
        Step::Change(
            |fs| fs.unlink(fs.root(), b"big"),
            |t| drop(t.remove("/big")),
        ),
        Step::Change(overwrite_a, |t| put(t, "/a", 50_000, &pattern(3, 100_000))),
        Step::Commit(sync),
    ]
}

fn tree_of(fs: &Filesystem) -> Tree {
    let mut tree = Tree::new();
    for path in PATHS {
        if let Ok(id) = fs.resolve(path) {
            let attr = fs.getattr(id).unwrap();
            let content = if attr.kind == FileKind::Regular {
                read_all(fs, id)
            } else {
                vec![]
            };
            tree.insert(path, content);
        }
    }
    tree
}

/// A fresh, committed image.
fn base_image() -> Vec<u8> {
    let dev = Arc::new(MemoryDevice::new(96 * MIB));
    Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    fs.unmount().unwrap();
    dev.image()
}

/// How long the device fails.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// Every write from the failing one on.
    FromThenOn,
    /// Only that write: the device works again at once, so nothing but the filesystem's own
    /// memory of the failure can stop a later commit.
    Once,
}

/// What became of a failing write point in one run.
#[derive(Debug, PartialEq)]
enum Met {
    /// The failure was reported, and every rule held.
    Reported,
    /// The workload made fewer writes than that (how many the write-behind joins into one
    /// depends on timing), or only the unmount met it.
    NotReached,
    /// The device failed a write and nothing ever said so.
    Lost,
}

/// Runs the workload with the `n`th write or flush from now on failing with `errno`; checks
/// every rule.
fn run_failing_at(image: &[u8], n: i64, errno: Errno, failure: Failure) -> Met {
    let mem: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::from_image(image.to_vec()));
    let faulty = Arc::new(FaultyDevice::new(mem.clone()));
    let fs = Filesystem::open(faulty.clone(), &no_timer()).unwrap();
    match failure {
        Failure::FromThenOn => faulty.fail_writes_after_with(n, errno),
        Failure::Once => faulty.fail_one_write_after(n, errno),
    }
    let writes_before = faulty.writes_seen();
    let (mut tree, mut committed) = (Tree::new(), Tree::new());
    let mut stopped: Option<String> = None;
    let mut failed_commit: Option<Tree> = None;
    for (i, step) in workload().iter().enumerate() {
        let what = format!("{errno:?} at write {n} ({failure:?}), step {i}");
        let result = match step {
            Step::Change(run, model) => {
                let result = run(&fs);
                if result.is_ok() {
                    model(&mut tree);
                }
                result
            }
            Step::Commit(run) => {
                let result = run(&fs);
                match (&result, &stopped) {
                    (Ok(()), None) => committed = tree.clone(),
                    (Ok(()), Some(first)) => panic!("{what}: a commit succeeded after {first}"),
                    (Err(_), None) => failed_commit = Some(tree.clone()),
                    (Err(_), Some(_)) => {}
                }
                result
            }
        };
        match (result, &stopped) {
            (Err(e), None) => {
                assert!(
                    [errno, Errno::IO].contains(&e.errno()),
                    "{what}: the first failure is {e}, not the device's errno"
                );
                stopped = Some(format!("{e} at step {i}"));
            }
            (Err(e), Some(_)) if matches!(step, Step::Change(..)) => {
                // ENOENT: a file an earlier, failed step would have made.
                assert!(
                    [Errno::ROFS, Errno::NOENT].contains(&e.errno()),
                    "{what}: a change after the failure: {e}"
                );
            }
            (Err(e), Some(_)) => assert!(
                [errno, Errno::IO].contains(&e.errno()),
                "{what}: a commit after the failure: {e}"
            ),
            (Ok(()), Some(first)) => panic!("{what}: a change succeeded after {first}"),
            (Ok(()), None) => {}
        }
    }
    // Whether the steps met the failing write. One met only by the unmount (its commit, and
    // the last one as the filesystem is dropped, have nothing left to write after the
    // workload's closing sync, though they may write) is not theirs to report; the image
    // must still be at a commit, as checked below.
    let reached = faulty.writes_seen() - writes_before > n;
    if stopped.is_some() {
        // Reads are still served.
        let root = fs.root();
        assert!(
            fs.readdir(root, None, 100).is_ok(),
            "reads after the failure"
        );
        if let Ok(a) = fs.resolve("/a") {
            let read = fs.read(a, 0, &mut [0u8; 4096]);
            assert!(
                read.is_ok(),
                "reads after the failure ({errno:?} at {n}): {read:?}"
            );
        }
        assert!(fs.unmount().is_err(), "unmount reports the lost changes");
    } else {
        fs.unmount().unwrap();
    }
    faulty.heal();
    let reopened = Filesystem::open(mem.clone(), &no_timer()).unwrap();
    let on_disk = tree_of(&reopened);
    drop(reopened);
    let at_last_good = on_disk == committed;
    let at_failed_commit = failed_commit.is_some_and(|t| on_disk == t);
    assert!(
        at_last_good || at_failed_commit,
        "{errno:?} at write {n}: the image is not at a commit ({:?})",
        stopped
    );
    assert_clean(&mem);
    match (stopped, reached) {
        (Some(_), _) => Met::Reported,
        (None, false) => Met::NotReached,
        (None, true) => Met::Lost,
    }
}

/// The workload's write points: every write and flush it asks the device for.
fn write_points(image: &[u8]) -> i64 {
    let counting = Arc::new(FaultyDevice::new(Arc::new(MemoryDevice::from_image(
        image.to_vec(),
    ))));
    let fs = Filesystem::open(counting.clone(), &no_timer()).unwrap();
    let before = counting.writes_seen();
    for step in workload() {
        match step {
            Step::Change(run, _) | Step::Commit(run) => run(&fs).unwrap(),
        }
    }
    let points = counting.writes_seen() - before;
    assert!(points > 40, "the workload makes only {points} writes");
    points
}

/// Fails the workload at every `stride`th write point with `errno`, once and for good.
fn fail_everywhere(errno: Errno, stride: usize) {
    let image = base_image();
    let (mut points, mut reported) = (0, 0);
    for n in (0..write_points(&image)).step_by(stride) {
        for failure in [Failure::FromThenOn, Failure::Once] {
            let met = run_failing_at(&image, n, errno, failure);
            assert_ne!(
                met,
                Met::Lost,
                "{errno:?} at {n} ({failure:?}): never reported"
            );
            points += 1;
            reported += usize::from(met == Met::Reported);
        }
    }
    assert!(
        reported * 10 >= points * 9,
        "only {reported} of {points} failing writes were reached"
    );
}

/// A disk's own error, at every other write point of the workload.
#[test]
fn eio_at_any_write_stops_the_filesystem_at_its_last_good_commit() {
    fail_everywhere(Errno::IO, 2);
}

/// The host filesystem under an image ran out of space, quota or file size: the same rule.
#[test]
fn enospc_edquot_and_efbig_from_the_device_are_write_errors_too() {
    for errno in [Errno::NOSPC, Errno::DQUOT, Errno::FBIG] {
        fail_everywhere(errno, 7);
    }
}

/// A filesystem on a fault-injecting device, with /f holding "committed", committed.
fn committed_file(size: u64) -> (Arc<dyn BlockDevice>, Arc<FaultyDevice>, Filesystem, InodeId) {
    let mem: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(size));
    Filesystem::mkfs(mem.clone(), &MkfsOptions::default()).unwrap();
    let faulty = Arc::new(FaultyDevice::new(mem.clone()));
    let fs = Filesystem::open(faulty.clone(), &no_timer()).unwrap();
    let f = file(&fs, fs.root(), "f");
    fs.write(f, 0, b"committed").unwrap();
    fs.sync().unwrap();
    (mem, faulty, fs, f)
}

/// Reopened after `committed_file`'s filesystem failed: /f as committed, fsck clean.
fn assert_reopens_at_last_commit(mem: &Arc<dyn BlockDevice>) {
    let fs = Filesystem::open(mem.clone(), &no_timer()).unwrap();
    assert_eq!(read_all(&fs, fs.resolve("/f").unwrap()), b"committed");
    drop(fs);
    assert_clean(mem);
}

#[test]
fn an_io_error_stops_the_filesystem_until_it_is_reopened() {
    let (mem, faulty, fs, f) = committed_file(32 * MIB);
    fs.write(f, 0, &[1u8; 8192]).unwrap();
    faulty.fail_writes_after(0);
    let err = fs.sync().unwrap_err();
    assert_eq!(err.errno(), Errno::IO, "{err}");
    faulty.heal();
    let err = fs.write(f, 0, b"x").unwrap_err();
    assert_eq!(err.errno(), Errno::ROFS, "changes after a device error");
    assert!(err.reason().contains("remount"), "{err}");
    assert_eq!(
        fs.sync().unwrap_err().errno(),
        Errno::IO,
        "every later sync"
    );
    assert_eq!(read_all(&fs, f), b"committed", "reads show the last commit");
    drop(fs);
    assert_reopens_at_last_commit(&mem);
}

/// A swap write through the filesystem whose device write fails (with ENOSPC from the host):
/// the filesystem stops like for any failed write, its swap journal goes with the failed
/// transaction, swap-ins of the pages written since the last commit are EIO (never their
/// older copies), and everything else still reads at the last commit.
#[test]
fn a_failed_journaled_swap_write_stops_the_filesystem_and_reads_go_on() {
    let (mem, faulty, fs, f) = committed_file(64 * MIB);
    let swap = file(&fs, fs.root(), "swap");
    let prealloc = cowfs::FallocateMode::Allocate { keep_size: false };
    fs.fallocate(swap, prealloc, 0, 4 * MIB).unwrap();
    fs.activate_swap(swap, cowfs::SwapMode::ThroughFs).unwrap();
    fs.swap_write(swap, 0, &pattern(1, 8192)).unwrap();
    fs.sync().unwrap();
    fs.swap_write(swap, 2, &pattern(2, 4096)).unwrap();
    faulty.fail_one_write_after(0, Errno::NOSPC);
    let err = fs.swap_write(swap, 3, &pattern(3, 4096)).unwrap_err();
    assert_eq!(err.errno(), Errno::NOSPC, "{err}");
    assert_eq!(read_all(&fs, f), b"committed", "reads go on");
    let mut page = vec![0u8; 8192];
    fs.swap_read(swap, 0, &mut page).unwrap();
    assert_eq!(page, pattern(1, 8192), "committed swap pages read back");
    for lost in [2, 3] {
        let err = fs.swap_read(swap, lost, &mut page[..4096]).unwrap_err();
        assert_eq!(err.errno(), Errno::IO, "never the older copy: {err}");
    }
    assert_eq!(
        fs.sync().unwrap_err().errno(),
        Errno::NOSPC,
        "every later sync"
    );
    drop(fs);
    assert_reopens_at_last_commit(&mem);
}

/// Swap pages journaled since the last commit, plain or compressed, are lost with a failed
/// transaction even once the journal has gone into its tables (a sync does that first): a
/// compressed file's pieces written behind fail (any errno; EACCES here) and the failure
/// surfaces by the sync; a plain file's commit fails after its journal was settled. Either way
/// every page written since the last commit is EIO from then on, never its older copy.
#[test]
fn swap_pages_journaled_since_the_last_commit_are_lost_with_a_failed_commit() {
    for lz4 in [true, false] {
        let (mem, faulty, fs, f) = committed_file(64 * MIB);
        let swap = file(&fs, fs.root(), "swap");
        if lz4 {
            fs.set_compression(swap, cowfs::CompressionConfig::parse("lz4").unwrap())
                .unwrap();
        }
        let prealloc = cowfs::FallocateMode::Allocate { keep_size: false };
        fs.fallocate(swap, prealloc, 0, 4 * MIB).unwrap();
        fs.activate_swap(swap, cowfs::SwapMode::ThroughFs).unwrap();
        let text = |n: usize| {
            "compressible swap page text; "
                .repeat(n * 4096 / 29 + 1)
                .into_bytes()[..n * 4096]
                .to_vec()
        };
        fs.swap_write(swap, 0, &text(8)).unwrap();
        fs.sync().unwrap();
        fs.swap_write(swap, 8, &text(8)).unwrap();
        faulty.fail_one_write_after(0, Errno::ACCESS);
        let mut lost = vec![8, 15];
        // The failing write is this one's or, still behind, the one before's, which this
        // one then reports: only a write that succeeded has pages to lose.
        if lz4 && fs.swap_write(swap, 16, &text(8)).is_ok() {
            lost.extend([16, 23]);
        }
        let err = fs.sync().unwrap_err();
        assert_eq!(err.errno(), Errno::ACCESS, "lz4 {lz4}: {err}");
        let mut page = vec![0u8; 8 * 4096];
        fs.swap_read(swap, 0, &mut page).unwrap();
        assert!(page == text(8), "lz4 {lz4}: committed pages read back");
        for p in lost {
            let read = fs.swap_read(swap, p, &mut page[..4096]);
            let errno = read.map_err(|e| e.errno());
            assert_eq!(
                errno,
                Err(Errno::IO),
                "lz4 {lz4}: page {p}, never an older copy"
            );
        }
        assert_eq!(read_all(&fs, f), b"committed", "reads go on");
        drop(fs);
        assert_reopens_at_last_commit(&mem);
    }
}

/// The race the issue found: a write-behind fails in its thread, a later write reports it
/// (with the host's ENOSPC), and the device works again at once. The next fsync must still
/// fail, and the image must never hold the extent whose data was not written.
#[test]
fn a_write_behind_failure_reported_by_a_later_write_stops_every_commit() {
    let (mem, faulty, fs, f) = committed_file(160 * MIB);
    let g = file(&fs, fs.root(), "g");
    faulty.fail_one_write_after(0, Errno::NOSPC);
    // Each 16 MiB is one extent written behind; the third waits for the first to finish.
    let chunk = pattern(5, 16 << 20);
    let results: Vec<_> = (0..4)
        .map(|i| fs.write(g, i * (16 << 20), &chunk))
        .collect();
    let failed = results.iter().position(|r| r.is_err());
    let failed = failed.expect("a write reports the write-behind failure");
    assert_eq!(results[failed].as_ref().unwrap_err().errno(), Errno::NOSPC);
    let err = fs.fsync(g).unwrap_err();
    assert_eq!(err.errno(), Errno::NOSPC, "fsync after the failure: {err}");
    let err = fs.sync().unwrap_err();
    assert_eq!(err.errno(), Errno::NOSPC, "sync after the failure: {err}");
    let err = file_err(&fs, "after");
    assert_eq!(
        err.errno(),
        Errno::ROFS,
        "a change after the failure: {err}"
    );
    assert_eq!(
        read_all(&fs, f),
        b"committed",
        "reads go on, at the last commit"
    );
    assert!(fs.unmount().is_err());
    let fs = Filesystem::open(mem.clone(), &no_timer()).unwrap();
    assert!(
        fs.resolve("/g").is_err(),
        "nothing after the last good commit"
    );
    assert_eq!(read_all(&fs, fs.resolve("/f").unwrap()), b"committed");
    drop(fs);
    assert_clean(&mem);
}

fn file_err(fs: &Filesystem, name: &str) -> cowfs::Error {
    let attrs = CreateAttrs::with_mode(0o644);
    fs.create(fs.root(), name.as_bytes(), FileKind::Regular, attrs)
        .unwrap_err()
}
