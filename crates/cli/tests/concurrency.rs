//! Several workers hammering one mount at once, as its users do: file workers each create,
//! write, read, rename (within and across directories), unlink, list, stat, getxattr,
//! chattr/lsattr and fsync in a private directory checked against a model, and share one
//! directory and file with everyone; beside them, processes run the mount-path commands
//! (fiemap, defrag, snapshot, subvolume list and delete, scrub) in loops; on the default mount,
//! then on one with the writeback cache. Every worker must keep making progress: a watchdog
//! that sees one stuck for 15 s kills the daemon (so every waiter gets ENOTCONN instead of
//! hanging) and fails the test. After unmount, fsck is clean. Needs root and /dev/fuse (under
//! CI=true their absence fails the test).

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// How long the workers run on each mount.
const RUN: Duration = Duration::from_secs(30);
/// A worker that makes no progress for this long is stuck.
const STUCK: Duration = Duration::from_secs(15);
const FILE_WORKERS: usize = 4;
/// chattr's d: no dump.
const FS_NODUMP_FL: i32 = 0x40;

/// One worker's progress: operations done, and the one under way.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    doing: Mutex<String>,
}

impl Progress {
    fn start(&self, what: impl Into<String>) {
        *self.doing.lock().unwrap() = what.into();
    }

    fn finish(&self) {
        self.done.fetch_add(1, Ordering::SeqCst);
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Up to `max` bytes, a random length of a random pattern.
fn bytes(rng: &mut Rng, max: u64) -> Vec<u8> {
    let len = 1 + rng.below(max) as usize;
    let seed = rng.below(256) as u8;
    (0..len).map(|i| seed.wrapping_add((i / 7) as u8)).collect()
}

/// FS_IOC_GETFLAGS / FS_IOC_SETFLAGS, as lsattr and chattr use them.
fn flags(file: &File, set: Option<i32>) -> i32 {
    let mut value: libc::c_int = set.unwrap_or(0);
    let request = if set.is_some() {
        libc::FS_IOC_SETFLAGS
    } else {
        libc::FS_IOC_GETFLAGS
    };
    // SAFETY: the ioctl reads or writes one int.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, &mut value) };
    assert_eq!(rc, 0, "flags ioctl: {}", std::io::Error::last_os_error());
    value
}

/// getxattr: cowfs has no extended attributes (EOPNOTSUPP, which the kernel answers once
/// the daemon said so), never a hang.
fn no_xattr(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut value = [0u8; 16];
    // SAFETY: a NUL-terminated path and name, and a buffer of the length given.
    let rc = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"user.none".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    let e = std::io::Error::last_os_error();
    assert!(
        rc < 0 && e.raw_os_error() == Some(libc::EOPNOTSUPP),
        "getxattr: {e}"
    );
}

/// A worker with a private directory, its model, and the shared directory.
struct FileWorker {
    private: PathBuf,
    shared: PathBuf,
    model: BTreeMap<String, Vec<u8>>,
    rng: Rng,
    id: usize,
    progress: Arc<Progress>,
}

impl FileWorker {
    fn path(&self, name: &str) -> PathBuf {
        self.private.join(name)
    }

    fn pick(&mut self) -> Option<String> {
        let n = self.model.len() as u64;
        (n > 0).then(|| {
            let i = self.rng.below(n) as usize;
            self.model.keys().nth(i).unwrap().clone()
        })
    }

    fn step(&mut self) {
        let name = format!("f{}", self.rng.below(12));
        match self.rng.below(12) {
            0 | 1 => {
                self.progress.start(format!("write {name}"));
                let data = bytes(&mut self.rng, 200_000);
                fs::write(self.path(&name), &data).unwrap();
                self.model.insert(name, data);
            }
            2 => {
                if let Some(name) = self.pick() {
                    self.progress.start(format!("overwrite {name}"));
                    let data = bytes(&mut self.rng, 50_000);
                    let at = self.rng.below(100_000);
                    let file = OpenOptions::new()
                        .write(true)
                        .open(self.path(&name))
                        .unwrap();
                    file.write_all_at(&data, at).unwrap();
                    let content = self.model.get_mut(&name).unwrap();
                    let end = at as usize + data.len();
                    if content.len() < end {
                        content.resize(end, 0);
                    }
                    content[at as usize..end].copy_from_slice(&data);
                    if self.rng.below(2) == 0 {
                        self.progress.start(format!("fsync {name}"));
                        file.sync_all().unwrap();
                    }
                }
            }
            3 => {
                if let Some(name) = self.pick() {
                    self.progress.start(format!("read {name}"));
                    let got = fs::read(self.path(&name)).unwrap();
                    assert!(
                        got == self.model[&name],
                        "worker {}: {name} differs",
                        self.id
                    );
                }
            }
            4 => {
                if let Some(from) = self.pick() {
                    self.progress.start(format!("rename {from} -> {name}"));
                    fs::rename(self.path(&from), self.path(&name)).unwrap();
                    let content = self.model.remove(&from).unwrap();
                    self.model.insert(name, content);
                }
            }
            5 => {
                if let Some(name) = self.pick() {
                    // Across directories and back, through the shared one.
                    self.progress.start(format!("rename {name} via shared"));
                    let away = self.shared.join(format!("w{}-{name}", self.id));
                    fs::rename(self.path(&name), &away).unwrap();
                    fs::rename(&away, self.path(&name)).unwrap();
                }
            }
            6 => {
                if let Some(name) = self.pick() {
                    self.progress.start(format!("unlink {name}"));
                    fs::remove_file(self.path(&name)).unwrap();
                    self.model.remove(&name);
                }
            }
            7 => {
                self.progress.start("readdir");
                let mut names: Vec<String> = fs::read_dir(&self.private)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                names.sort();
                let want: Vec<String> = self.model.keys().cloned().collect();
                assert_eq!(names, want, "worker {}: listing", self.id);
                fs::read_dir(&self.shared).unwrap().for_each(drop);
            }
            8 => {
                if let Some(name) = self.pick() {
                    self.progress.start(format!("stat and getxattr {name}"));
                    let len = fs::metadata(self.path(&name)).unwrap().len();
                    assert_eq!(len, self.model[&name].len() as u64);
                    no_xattr(&self.path(&name));
                    fs::metadata(self.shared.join("file")).unwrap();
                }
            }
            9 => {
                if let Some(name) = self.pick() {
                    // chattr +d / -d (nodump), lsattr.
                    self.progress.start(format!("chattr {name}"));
                    let file = File::open(self.path(&name)).unwrap();
                    let before = flags(&file, None);
                    flags(&file, Some(before ^ FS_NODUMP_FL));
                    assert_eq!(flags(&file, None), before ^ FS_NODUMP_FL);
                }
            }
            _ => {
                self.progress.start("shared file");
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(self.shared.join("file"))
                    .unwrap();
                let at = self.rng.below(1 << 20);
                file.write_all_at(&bytes(&mut self.rng, 8192), at).unwrap();
                let mut buf = vec![0u8; 8192];
                file.read_at(&mut buf, self.rng.below(1 << 20)).unwrap();
            }
        }
        self.progress.finish();
    }

    /// The private directory, read back whole, is the model.
    fn check(&self) {
        for (name, content) in &self.model {
            assert!(fs::read(self.path(name)).unwrap() == *content, "{name}");
        }
        assert_eq!(
            fs::read_dir(&self.private).unwrap().count(),
            self.model.len()
        );
    }
}

/// The mount-path commands, each run as its own `cowfs` process.
fn command_loop(mnt: &Path, kind: usize, stop: &AtomicBool, progress: &Progress) {
    let m = mnt.to_str().unwrap();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let args: Vec<String> = match (kind, n % 3) {
            (0, _) => vec!["fiemap".into(), format!("{m}/shared/file")],
            (1, _) => vec!["defrag".into(), format!("{m}/shared/file")],
            (2, 0) => vec![
                "snapshot".into(),
                "-r".into(),
                format!("{m}/vol"),
                format!("{m}/snap{n}"),
            ],
            (2, 1) => vec!["subvolume".into(), "list".into(), m.into()],
            (2, _) => vec![
                "subvolume".into(),
                "delete".into(),
                format!("{m}/snap{}", n - 2),
            ],
            _ => vec!["scrub".into(), m.into()],
        };
        progress.start(format!("cowfs {}", args.join(" ")));
        let out = Command::new(COWFS).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "cowfs {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        progress.finish();
        n += 1;
    }
}

/// The mount's FUSE connection in fusectl (its device number, as the kernel writes it).
fn connection(mnt: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let dev = fs::metadata(mnt).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let connections = Path::new("/sys/fs/fuse/connections");
    if fs::read_dir(connections).is_ok_and(|mut d| d.next().is_none()) {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(connections)
            .status();
    }
    connections.join(((major << 20) | minor).to_string())
}

/// Fails the test if a worker makes no progress for [`STUCK`]: aborts the mount's connection
/// and kills the daemon first, so every waiter gets an error and the test ends instead of
/// hanging (a daemon stuck in the kernel cannot even die until the connection is aborted).
fn watchdog(workers: &[Arc<Progress>], stop: &AtomicBool, daemon: u32, mnt: &Path) {
    let abort = connection(mnt).join("abort");
    let mut seen: Vec<(u64, Instant)> = workers.iter().map(|_| (0, Instant::now())).collect();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
        for (i, w) in workers.iter().enumerate() {
            let done = w.done.load(Ordering::SeqCst);
            if done != seen[i].0 {
                seen[i] = (done, Instant::now());
            } else if seen[i].1.elapsed() > STUCK {
                let doing = w.doing.lock().unwrap().clone();
                let _ = fs::write(&abort, "1");
                let _ = Command::new("kill")
                    .args(["-9", &daemon.to_string()])
                    .status();
                let _ = Command::new("umount").arg("-l").arg(mnt).status();
                panic!("worker {i} made no progress for {STUCK:?}, in: {doing}");
            }
        }
    }
}

/// On the default mount, then on one with the kernel's writeback cache (whose writes reach
/// the daemon later and in runs, and whose control commands sync the cache first); one after
/// the other, so neither run's workers wait on the other's.
#[test]
fn many_workers_on_one_mount_all_keep_going() {
    if !can_mount() {
        return;
    }
    hammer(&[]);
    hammer(&["-o", "writeback_cache"]);
}

fn hammer(options: &[&str]) {
    eprintln!("mount options {options:?}");
    let scratch = Scratch::new();
    ok(&["mkfs", &scratch.image, "--size", "2G"]);
    let mut mount = vec!["mount", &scratch.image, scratch.mnt()];
    mount.extend(options);
    let said = ok(&mount);
    let daemon = daemon_pid(&said) as u32;
    let mnt = scratch.mountpoint.clone();
    ok(&["subvolume", "create", &scratch.at("vol")]);
    fs::create_dir(mnt.join("shared")).unwrap();
    fs::write(mnt.join("shared/file"), vec![1u8; 1 << 20]).unwrap();
    fs::write(mnt.join("vol/data"), vec![2u8; 1 << 20]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let progress: Vec<Arc<Progress>> = (0..FILE_WORKERS + 4).map(|_| Arc::default()).collect();
    let mut files = Vec::new();
    for (id, p) in progress.iter().take(FILE_WORKERS).enumerate() {
        let private = mnt.join(format!("p{id}"));
        fs::create_dir(&private).unwrap();
        let mut worker = FileWorker {
            private,
            shared: mnt.join("shared"),
            model: BTreeMap::new(),
            rng: Rng(0x9e37_79b9 + id as u64 * 7919),
            id,
            progress: p.clone(),
        };
        let stop = stop.clone();
        files.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                worker.step();
            }
            worker
        }));
    }
    let mut commands = Vec::new();
    for (kind, p) in progress.iter().skip(FILE_WORKERS).enumerate() {
        let (stop, p, mnt) = (stop.clone(), p.clone(), mnt.clone());
        commands.push(std::thread::spawn(move || {
            command_loop(&mnt, kind, &stop, &p)
        }));
    }
    let watching = {
        let (stop, progress, mnt) = (stop.clone(), progress.clone(), mnt.clone());
        std::thread::spawn(move || watchdog(&progress, &stop, daemon, &mnt))
    };
    let started = Instant::now();
    while started.elapsed() < RUN && !watching.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    if let Err(e) = watching.join() {
        std::panic::resume_unwind(e);
    }
    let workers: Vec<FileWorker> = files.into_iter().map(|t| t.join().unwrap()).collect();
    for c in commands {
        c.join().unwrap();
    }
    for w in &workers {
        w.check();
    }
    let ops: Vec<u64> = progress
        .iter()
        .map(|p| p.done.load(Ordering::SeqCst))
        .collect();
    eprintln!("operations per worker: {ops:?}");
    assert!(
        ops.iter().all(|n| *n >= 5),
        "every worker got going: {ops:?}"
    );
    ok(&["umount", scratch.mnt()]);
    assert!(ok(&["fsck", &scratch.image]).contains("clean"));
}
