//! `Filesystem`, the handle front ends (the CLI, FUSE, the swap layer) hold: an
//! inode-and-name API plus path helpers, each call run on the engine under its lock. A device
//! write failure met by any call stops the filesystem here, and a timer thread commits.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::device::{Access, BlockDevice, GatedDevice, NbdAddress};
use crate::error::{Error, Result};
use crate::format::{FileKind, FIRST_SUBVOLUME, ROOT_INO};
use crate::fs::engine::Engine;
use crate::fs::maint::control::Control;
use crate::fs::swap::activate::encode_swap_write;
use crate::fs::{
    Attr, BlockGroup, CompressionConfig, CreateAttrs, DedupeOutcome, DefragStats, DirEntry,
    ExtentMapping, FallocateMode, FsInfo, InodeId, MkfsOptions, OpenOptions, PinnedSwapIo,
    RenameFlags, SetAttr, SubvolumeInfo, SwapActivation, SwapMode, SwapStatus,
};

/// An open cowfs filesystem. Clones share it; it commits and closes when the last is dropped
/// (or on [`Filesystem::unmount`], which reports the result).
#[derive(Clone)]
pub struct Filesystem {
    shared: Arc<Shared>,
}

struct Shared {
    engine: Mutex<Engine>,
    /// The device as the engine sees it; closed for good when a device write fails.
    gate: Arc<GatedDevice>,
    control: Control,
    committer: Arc<(Mutex<bool>, Condvar)>,
}

impl Shared {
    /// After a device write failure the engine stops: the gate closes (nothing more reaches
    /// the image) and the engine is replaced by a read-only one at the last good commit, so
    /// reads go on and never show what the failed transaction held but never wrote. Swap pins
    /// and open files carry over.
    fn stop_if_failed(&self, engine: &mut Engine) {
        if engine.failed.is_none() || engine.read_only {
            return;
        }
        self.gate.close();
        let device: Arc<dyn BlockDevice> = self.gate.clone();
        match Engine::open(device, true) {
            Ok(mut stopped) => {
                stopped.failed = engine.failed.take();
                stopped.access_times.policy = engine.access_times.policy;
                stopped.swap = std::mem::take(&mut engine.swap);
                // The failed transaction's swap writes are gone with it.
                stopped.swap.lose_uncommitted();
                stopped.held = std::mem::take(&mut engine.held);
                *engine = stopped;
            }
            // The image cannot even be read: keep the old state, refusing changes.
            Err(_) => {
                engine.read_only = true;
                engine.swap.lose_uncommitted();
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let (stop, wake) = &*self.committer;
        *stop.lock().unwrap() = true;
        wake.notify_all();
        let engine = self.engine.get_mut().unwrap_or_else(|p| p.into_inner());
        if engine.check_writable().is_ok() {
            let _ = engine.free_orphans().and_then(|()| engine.commit());
        }
    }
}

macro_rules! forward {
    ($(#[$doc:meta])* $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty) => {
        $(#[$doc])*
        pub fn $name(&self $(, $arg: $ty)*) -> Result<$ret> {
            self.with(|e| e.$name($($arg),*))
        }
    };
}

impl Filesystem {
    /// Makes a new filesystem on `device`, replacing whatever was there.
    pub fn mkfs(device: Arc<dyn BlockDevice>, opts: &MkfsOptions) -> Result<()> {
        Engine::mkfs(device, opts)
    }

    pub fn open(device: Arc<dyn BlockDevice>, opts: &OpenOptions) -> Result<Filesystem> {
        let gate = Arc::new(GatedDevice::new(device));
        let mut engine = Engine::open(gate.clone(), opts.read_only)?;
        if opts.compress.is_some() {
            engine.compression = opts.compress;
        }
        engine.access_times.policy = opts.atime;
        let shared = Arc::new(Shared {
            engine: Mutex::new(engine),
            gate,
            control: Control::default(),
            committer: Arc::new((Mutex::new(false), Condvar::new())),
        });
        if let (Some(interval), false) = (opts.commit_interval, opts.read_only) {
            spawn_committer(Arc::downgrade(&shared), shared.committer.clone(), interval);
        }
        Ok(Filesystem { shared })
    }

    /// Opens an image file, block device or NBD export (`nbd://`, `nbd+unix://`).
    pub fn open_path(path: &Path, opts: &OpenOptions) -> Result<Filesystem> {
        let access = match opts.read_only {
            true => Access::ReadOnly,
            false => Access::ReadWrite,
        };
        // An export's errors name its address already.
        let context = match path.to_str().is_some_and(NbdAddress::is_uri) {
            true => "open".to_string(),
            false => path.display().to_string(),
        };
        let device = crate::device::open(path, access).map_err(|e| Error::io(&context, &e))?;
        Self::open(device, opts)
    }

    /// Commits everything and closes; open-unlinked files go now. A filesystem opened
    /// read-only has nothing to commit; one stopped by a device error reports it.
    pub fn unmount(self) -> Result<()> {
        let result = self.with(|e| e.free_orphans()).and_then(|()| self.sync());
        drop(self);
        result
    }

    /// What a running balance is asked to do (pause, resume, cancel).
    pub(in crate::fs) fn balance_control(&self) -> &Control {
        &self.shared.control
    }

    fn engine(&self) -> MutexGuard<'_, Engine> {
        self.shared.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs an engine operation; a device or store failure stops the filesystem. Swap files'
    /// journals are put into the tables first: only swap I/O looks at them.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Engine) -> Result<T>) -> Result<T> {
        self.with_engine(true, f)
    }

    /// Runs swap I/O on the engine, with swap journals as they are (see `fs::swap::journal`).
    fn with_swap_io<T>(&self, f: impl FnOnce(&mut Engine) -> Result<T>) -> Result<T> {
        self.with_engine(false, f)
    }

    fn with_engine<T>(
        &self,
        settle_journals: bool,
        f: impl FnOnce(&mut Engine) -> Result<T>,
    ) -> Result<T> {
        let mut engine = self.engine();
        let result = match settle_journals && engine.has_swap_journal() {
            true => engine.settle_swap_journals().and_then(|()| f(&mut engine)),
            false => f(&mut engine),
        };
        if let Err(e) = &result {
            engine.note_failure(e);
        }
        self.shared.stop_if_failed(&mut engine);
        result
    }

    pub fn root(&self) -> InodeId {
        InodeId::new(self.engine().state.default_subvolume, ROOT_INO)
    }

    forward!(getattr(&self, id: InodeId) -> Attr);
    forward!(lookup(&self, dir: InodeId, name: &[u8]) -> InodeId);
    forward!(create(&self, dir: InodeId, name: &[u8], kind: FileKind, attrs: CreateAttrs) -> InodeId);
    forward!(symlink(&self, dir: InodeId, name: &[u8], target: &[u8], attrs: CreateAttrs) -> InodeId);
    forward!(readlink(&self, id: InodeId) -> Vec<u8>);
    forward!(link(&self, id: InodeId, dir: InodeId, name: &[u8]) -> ());
    forward!(unlink(&self, dir: InodeId, name: &[u8]) -> ());
    forward!(rmdir(&self, dir: InodeId, name: &[u8]) -> ());
    forward!(rename(&self, from_dir: InodeId, from: &[u8], to_dir: InodeId, to: &[u8], flags: RenameFlags) -> ());
    forward!(setattr(&self, id: InodeId, set: &SetAttr) -> Attr);
    /// Buffered read; returns the bytes read (short at end of file). Whole blocks with no
    /// dirty page among them are read as swap reads are (see [`Self::swap_read`]): the
    /// engine's lock is held only to find them, so reads from several threads overlap.
    /// Reading moves the access time (see `atime`) under the same hold of the lock; failing
    /// to record that fails no read.
    pub fn read(&self, id: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let planned = self.with(|e| {
            let plan = e.plan_file_read(id, offset, buf.len())?;
            let _ = e.touch_atime(id);
            Ok(plan)
        })?;
        match planned {
            Some((plan, n)) if plan.read(&mut buf[..n]) => Ok(n),
            _ => {
                fault_in(buf);
                self.with(|e| e.read(id, offset, buf))
            }
        }
    }

    /// Lists a directory from after `after`, at most `limit` entries; moves its access time.
    pub fn readdir(
        &self,
        dir: InodeId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<DirEntry>> {
        self.with(|e| {
            let entries = e.readdir(dir, after, limit)?;
            let _ = e.touch_atime(dir);
            Ok(entries)
        })
    }
    /// Buffered write: gathered in memory, allocated at commit, fsync or under memory pressure.
    pub fn write(&self, id: InodeId, offset: u64, data: &[u8]) -> Result<usize> {
        fault_in(data);
        self.with(|e| e.write(id, offset, data))
    }

    /// Direct read: offset and length 4 KiB-aligned; data read straight from the device.
    pub fn read_direct(&self, id: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        fault_in(buf);
        self.with(|e| e.read_direct(id, offset, buf))
    }

    /// Direct write: offset and length 4 KiB-aligned; data written straight to new extents.
    pub fn write_direct(&self, id: InodeId, offset: u64, data: &[u8]) -> Result<usize> {
        fault_in(data);
        self.with_deferred_writes(true, offset, data, |e| e.write_direct(id, offset, data))
    }

    /// Runs an engine operation writing `data` at file offset `offset`, its device writes
    /// made after the lock is let go (see `Engine::deferring_writes`): the lock is held
    /// only to find space and record it. Swap journals are settled first unless it is swap
    /// I/O (`settle_journals` false), as in [`Self::with`].
    fn with_deferred_writes<T>(
        &self,
        settle_journals: bool,
        offset: u64,
        data: &[u8],
        f: impl FnOnce(&mut Engine) -> Result<T>,
    ) -> Result<T> {
        let mut tickets = Vec::new();
        let mut device = None;
        let result = self.with_engine(settle_journals, |e| {
            device = Some(e.device.clone());
            let (result, deferred) = e.deferring_writes(f);
            tickets = deferred;
            result
        });
        let written = match device {
            Some(device) => tickets.into_iter().try_for_each(|t| {
                let at = (t.file_offset - offset) as usize;
                let len = t.len;
                t.write(&*device, &data[at..at + len])
            }),
            None => Ok(()),
        };
        if let Err(e) = &written {
            // As a failed write under the lock would: the filesystem stops.
            let mut engine = self.engine();
            engine.note_failure(e);
            self.shared.stop_if_failed(&mut engine);
        }
        let result = result?;
        written?;
        Ok(result)
    }

    forward!(
        /// fallocate(2): preallocate, punch a hole, or zero a range.
        fallocate(&self, id: InodeId, mode: FallocateMode, offset: u64, len: u64) -> ());
    forward!(
        /// Reflink a range (FICLONERANGE); `len` 0 means to the source's end. Returns the bytes cloned.
        clone_range(&self, src: InodeId, src_off: u64, dst: InodeId, dst_off: u64, len: u64) -> u64);
    forward!(
        /// Makes `dst` a reflinked copy of all of `src` (FICLONE).
        clone_file(&self, src: InodeId, dst: InodeId) -> ());
    forward!(
        /// Shares identical ranges (FIDEDUPERANGE).
        dedupe_range(&self, src: InodeId, src_off: u64, dst: InodeId, dst_off: u64, len: u64) -> DedupeOutcome);
    forward!(
        /// copy_file_range(2): reflinks where it can, copies where it must.
        copy_file_range(&self, src: InodeId, src_off: u64, dst: InodeId, dst_off: u64, len: u64) -> u64);
    forward!(
        /// Makes an empty subvolume named `name` in `dir`; returns its id.
        create_subvolume(&self, dir: InodeId, name: &[u8]) -> u64);
    forward!(
        /// Snapshots subvolume `source` as `name` in `dir`; returns the snapshot's id.
        snapshot(&self, source: u64, dir: InodeId, name: &[u8], read_only: bool) -> u64);
    forward!(
        /// Deletes the subvolume named `name` in `dir` and everything in it.
        delete_subvolume(&self, dir: InodeId, name: &[u8]) -> ());
    forward!(list_subvolumes(&self) -> Vec<SubvolumeInfo>);
    forward!(set_subvolume_read_only(&self, id: u64, read_only: bool) -> ());
    forward!(
        /// Rewrites a file's fragmented data contiguously, compressed if asked.
        defrag(&self, id: InodeId, compress: bool) -> DefragStats);
    forward!(
        /// swap_activate: checks a file as docs/SWAP.md's section A says and pins it.
        activate_swap(&self, id: InodeId, mode: SwapMode) -> SwapActivation);
    forward!(
        /// swap_deactivate: undoes activation; EINVAL when the file is not active.
        deactivate_swap(&self, id: InodeId) -> ());
    /// Device access for the swap I/O of `id`, an active pinned swap file: only its pinned
    /// ranges, and only while it stays active. It writes the device directly: swap pages are
    /// not the filesystem's writes, and go on after the filesystem stopped.
    pub fn pinned_swap_io(&self, id: InodeId) -> Result<PinnedSwapIo> {
        let map = self.engine().pinned_swap_map(id)?;
        Ok(PinnedSwapIo::new(self.shared.gate.inner().clone(), map))
    }

    /// A front end holds `id` open: unlinking its last name keeps it until [`Self::release`].
    pub fn hold(&self, id: InodeId) {
        self.engine().hold(id)
    }
    forward!(
        /// Drops one hold; an unlinked file nobody holds any more is freed.
        release(&self, id: InodeId) -> ());

    forward!(
        /// Refuses an open for writing as the first write would be (for front ends that
        /// cache writes).
        check_open_for_write(&self, id: InodeId, append: bool, truncate: bool) -> ());
    /// Whether `id` is an active swap file, and in which mode.
    pub fn swap_active(&self, id: InodeId) -> Option<SwapMode> {
        self.engine().swap_active(id)
    }
    /// Writes whole pages of an active through-filesystem swap file.
    pub fn swap_write(&self, id: InodeId, page: u64, data: &[u8]) -> Result<()> {
        fault_in(data);
        // A compressed swap file's pages are compressed with the engine's lock let go, so
        // swap-outs on several threads compress at once; the rest are written under one hold.
        let offset = page * crate::format::BLOCK_SIZE;
        let compressed =
            self.with_deferred_writes(false, offset, data, |e| e.swap_write(id, page, data, None))?;
        match compressed {
            Some(config) => {
                let encoded = encode_swap_write(config, data)?;
                self.with_swap_io(|e| e.swap_write(id, page, data, Some((config, encoded))))
                    .map(drop)
            }
            None => Ok(()),
        }
    }

    /// Reads whole pages of an active through-filesystem swap file, verifying checksums.
    /// The engine's lock is held only to find where the pages are: the device reads run
    /// without it, so reads from several threads overlap. A read that may have raced a
    /// rewrite or a move of its pages (a commit came, or a checksum failed) is done again
    /// under the lock.
    pub fn swap_read(&self, id: InodeId, page: u64, buf: &mut [u8]) -> Result<()> {
        let plan = self.with_swap_io(|e| e.plan_swap_read(id, page, buf.len()))?;
        if plan.is_some_and(|plan| plan.read(buf)) {
            return Ok(());
        }
        self.with_swap_io(|e| e.swap_read(id, page, buf))
    }
    forward!(
        /// An active swap file's figures (mode, size, compression and the ratio achieved);
        /// None when `id` is not active.
        swap_status(&self, id: InodeId) -> Option<SwapStatus>);
    forward!(
        /// Sets an inode's FS_IOC flags (chattr); returns the flags it has afterwards.
        set_flags(&self, id: InodeId, flags: u64) -> u64);
    forward!(
        /// Sets a file's own compression choice: an algorithm (and flag `c`), or never
        /// (`None`: flag `m`).
        set_compression(&self, id: InodeId, choice: Option<CompressionConfig>) -> ());
    forward!(
        /// A file's own compression choice, and how its new data is stored (None: plainly).
        compression_of(&self, id: InodeId) -> (Option<CompressionConfig>, Option<CompressionConfig>));
    forward!(
        /// Where each range of a file lives (FIEMAP); writes back its dirty pages first.
        extent_map(&self, id: InodeId) -> Vec<ExtentMapping>);

    /// Makes a file's data and the whole namespace durable (one commit).
    pub fn fsync(&self, id: InodeId) -> Result<()> {
        self.with(|e| {
            // A stopped filesystem reports why first: the file may be one it lost.
            e.check_not_stopped()?;
            e.inode(id)?;
            e.commit()
        })
    }

    /// What opening did to the image that a person should hear of: superblock copies found
    /// damaged or behind and rewritten.
    pub fn open_notes(&self) -> Vec<String> {
        self.engine().notes.clone()
    }

    /// Why the filesystem stopped taking changes after a device error, if it did: what
    /// fsync and sync report.
    pub fn stopped(&self) -> Option<Error> {
        self.engine().check_not_stopped().err()
    }

    /// Commits the running transaction.
    pub fn sync(&self) -> Result<()> {
        self.with(|e| e.commit())
    }

    /// The directory holding `dir` (its first name's, for a file with several); the root is
    /// its own parent.
    pub fn parent(&self, dir: InodeId) -> Result<InodeId> {
        self.with(|e| {
            e.inode(dir)?;
            Ok(e.parent_of(dir)?.map_or(dir, |(parent, _)| parent))
        })
    }

    /// A path for messages (the first name of each ancestor).
    pub fn path_of(&self, id: InodeId) -> String {
        self.engine().path_of(id)
    }

    pub fn info(&self) -> Result<FsInfo> {
        self.with(|e| Ok(e.info()))
    }

    /// The commit count of the running state.
    pub fn generation(&self) -> u64 {
        self.engine().generation()
    }

    /// Resolves an absolute path as the kernel walks one: `.` and `..` as usual, symlinks in
    /// the middle followed (at most [`MAX_SYMLINKS`] of them, else ELOOP), a symlink at the
    /// end not (as lstat) unless the path ends in `/`.
    pub fn resolve(&self, path: &str) -> Result<InodeId> {
        let follow_last = path.len() > 1 && path.ends_with('/');
        let mut walked = vec![self.root()];
        let mut parts: std::collections::VecDeque<Vec<u8>> = components(path.as_bytes());
        let mut links = 0;
        while let Some(part) = parts.pop_front() {
            let here = *walked.last().expect("the root is never popped");
            if part == b".." {
                if walked.len() > 1 {
                    walked.pop();
                }
                continue;
            }
            let next = self.lookup(here, &part)?;
            let last = parts.is_empty() && !follow_last;
            if last || self.getattr(next)?.kind != FileKind::Symlink {
                walked.push(next);
                continue;
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Error::new(
                    crate::error::Errno::LOOP,
                    format!("{path}: too many levels of symbolic links"),
                ));
            }
            let target = self.readlink(next)?;
            if target.first() == Some(&b'/') {
                walked.truncate(1);
            }
            for part in components(&target).into_iter().rev() {
                parts.push_front(part);
            }
        }
        Ok(*walked.last().expect("the root is never popped"))
    }

    /// The directory a path's last component lives in, and that component.
    pub fn resolve_parent<'p>(&self, path: &'p str) -> Result<(InodeId, &'p str)> {
        let trimmed = path.trim_end_matches('/');
        let (dir, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
        if name.is_empty() || name == "." || name == ".." {
            return Err(Error::invalid(format!("{path}: not a file name")));
        }
        Ok((self.resolve(dir)?, name))
    }
}

impl Engine {
    fn info(&self) -> FsInfo {
        let sb = self.superblock();
        let groups: Vec<BlockGroup> = self.alloc.groups().copied().collect();
        FsInfo {
            format_version: crate::format::FORMAT_VERSION,
            uuid: sb.uuid,
            generation: self.state.generation,
            size: sb.fs_size,
            free: self.free_for_data(),
            data_used: groups.iter().map(|g| g.record.used).sum(),
            metadata_bytes: sb.meta_capacity(),
            block_groups: groups,
            superblock: sb,
        }
    }
}

/// Touches every page of a caller's buffer before the engine's lock is taken. The engine
/// copies from (or into) the buffer under its lock; if a page of it is missing, the fault
/// must be served without that lock: a page of a userspace pager's region whose swap area is
/// a through-filesystem file on this very filesystem would otherwise wait for the lock its
/// own copy holds. Touching first brings such pages in while the lock is free. It narrows
/// the window rather than closing it: a page evicted again between the touch and the copy
/// (the pager under pressure from other threads) still deadlocks, which is why docs/PAGER.md
/// says not to hand region memory to this filesystem's reads and writes.
fn fault_in(buf: &[u8]) {
    const PAGE: usize = crate::format::BLOCK_SIZE as usize;
    let start = buf.as_ptr() as usize;
    // The first byte, then the first byte of every later page the buffer reaches into.
    let firsts = std::iter::once(0).chain((start / PAGE + 1..).map(|p| p * PAGE - start));
    for at in firsts.take_while(|at| *at < buf.len()) {
        // SAFETY: `at` is inside the live slice `buf`.
        unsafe { std::ptr::read_volatile(buf.as_ptr().add(at)) };
    }
}

fn spawn_committer(shared: Weak<Shared>, signal: Arc<(Mutex<bool>, Condvar)>, interval: Duration) {
    std::thread::Builder::new()
        .name("cowfs-commit".into())
        .spawn(move || loop {
            let (stop, wake) = &*signal;
            let stopped = wake.wait_timeout(stop.lock().unwrap(), interval).unwrap().0;
            if *stopped {
                return;
            }
            drop(stopped);
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut engine = shared.engine.lock().unwrap_or_else(|p| p.into_inner());
            if engine.check_writable().is_ok() && engine.last_commit.elapsed() >= interval {
                // A failure stops the filesystem; the next call reports it.
                let _ = engine.commit();
                shared.stop_if_failed(&mut engine);
            }
        })
        .expect("spawn the commit thread");
}

/// Symlinks a path walk follows before it gives up (the kernel's limit).
pub const MAX_SYMLINKS: usize = 40;

/// A path's names, without the empty ones and `.`.
fn components(path: &[u8]) -> std::collections::VecDeque<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

/// The default subvolume's id as mkfs makes it.
pub const DEFAULT_SUBVOLUME: u64 = FIRST_SUBVOLUME;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{AlignedBuf, MemoryDevice};

    /// A filesystem with a 1 MiB file active as swap through the filesystem, page 0 written
    /// with ones and committed; NOCOW (and so without checksums) when `nocow`.
    fn swap_through_fs(nocow: bool) -> (Arc<dyn BlockDevice>, Filesystem, InodeId) {
        let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(64 << 20));
        Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
        let opts = OpenOptions {
            commit_interval: None,
            ..OpenOptions::default()
        };
        let fs = Filesystem::open(dev.clone(), &opts).unwrap();
        let attrs = CreateAttrs::with_mode(0o600);
        let f = fs
            .create(fs.root(), b"swap", FileKind::Regular, attrs)
            .unwrap();
        if nocow {
            fs.set_flags(f, crate::format::inode_flags::NOCOW).unwrap();
        }
        let allocate = FallocateMode::Allocate { keep_size: false };
        fs.fallocate(f, allocate, 0, 1 << 20).unwrap();
        fs.activate_swap(f, SwapMode::ThroughFs).unwrap();
        fs.swap_write(f, 0, &[1u8; 4096]).unwrap();
        fs.sync().unwrap();
        (dev, fs, f)
    }

    /// Swap reads resolved under the lock and done without it: trusted while nothing could
    /// have changed their blocks, redone under the lock when a checksum fails or a commit
    /// made freed space reusable meanwhile (checksums or not).
    #[test]
    fn a_swap_read_that_raced_a_change_is_done_again() {
        for nocow in [false, true] {
            let (dev, fs, f) = swap_through_fs(nocow);
            let plan = || fs.with(|e| e.plan_swap_read(f, 0, 4096)).unwrap().unwrap();
            let mut buf = AlignedBuf::zeroed(4096);
            assert!(
                plan().read(&mut buf) && buf[..] == [1u8; 4096][..],
                "unchanged"
            );
            let raced = plan();
            fs.swap_write(f, 0, &[2u8; 4096]).unwrap();
            fs.sync().unwrap();
            assert!(!raced.read(&mut buf), "a commit came between plan and read");
            fs.swap_read(f, 0, &mut buf).unwrap();
            assert_eq!(buf[..], [2u8; 4096][..]);
            if !nocow {
                let damaged = plan();
                let at = fs.extent_map(f).unwrap()[0].physical;
                dev.write_at(at, &[9u8; 4096]).unwrap();
                assert!(!damaged.read(&mut buf), "a checksum failed");
            }
        }
    }

    /// A compressed swap file's swap-in without the lock: the pieces one swap write stored
    /// side by side are read with one device read and each decoded; a damaged one fails the
    /// whole read (for the caller to redo under the lock, which reports it).
    #[test]
    fn compressed_swap_pieces_are_read_together_without_the_lock() {
        let (dev, fs, f) = swap_through_fs(false);
        fs.set_compression(f, CompressionConfig::parse("lz4").unwrap())
            .unwrap();
        let data: Vec<u8> = (0..16 * 4096).map(|i| (i / 512) as u8).collect();
        fs.swap_write(f, 8, &data).unwrap();
        let map = fs.extent_map(f).unwrap();
        let pieces: Vec<_> = map.iter().filter(|e| e.encoded).collect();
        assert_eq!(pieces.len(), 2, "{map:?}");
        let plan = fs.with(|e| e.plan_swap_read(f, 8, data.len())).unwrap();
        let plan = plan.expect("compressed pieces are planned, not left to the lock");
        let mut buf = AlignedBuf::zeroed(data.len());
        assert!(plan.read(&mut buf) && buf[..] == data[..]);
        dev.write_at(pieces[1].physical, &[9u8; 4096]).unwrap();
        assert!(!plan.read(&mut buf), "a checksum failed");
        assert_eq!(
            fs.swap_read(f, 8, &mut buf).unwrap_err().errno(),
            crate::Errno::IO
        );
    }
}
