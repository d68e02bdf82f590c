//! The FUSE operations: each request is translated into one engine call. Everything a
//! filesystem decides (permissions of flags, the swap-file rules, copy-on-write) is decided in
//! the engine, so the answers through the mount are the engine's errnos.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cowfs::device::AlignedBuf;
use cowfs::format::{FileKind, Timespec};
use cowfs::{Attr, CreateAttrs, FallocateMode, Filesystem, InodeId, SetAttr, SwapActivation};
use fuser::{
    CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo,
    IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyBmap, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::control::CommandRunner;
use crate::invalidate::Invalidator;
use crate::ioctl;
use crate::nodes::NodeTable;

/// How long the kernel may cache attributes. Only this daemon changes the image while it is
/// mounted and it answers every change, so a short cache is safe.
const TTL: Duration = Duration::from_secs(1);
/// How long the kernel may trust a name it looked up. Names change only through this mount,
/// and the kernel updates its own cache on every create, unlink and rename, so a name stays
/// right until then. Trusting it for good also keeps a swap file reachable if the daemon dies:
/// swapoff(2) walks the path, and must not need a daemon to answer the lookup.
const ENTRY_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The largest write the kernel sends in one request.
const MAX_WRITE: u32 = 1 << 20;
/// Entries read from the engine per call while listing a directory.
const READDIR_BATCH: usize = 1024;

/// A cowfs filesystem served over FUSE.
pub struct CowfsFuse {
    pub(crate) fs: Filesystem,
    nodes: NodeTable,
    /// Runs the whole-filesystem commands of the COMMAND control ioctl.
    pub(crate) runner: Option<Arc<dyn CommandRunner>>,
    /// Tells the kernel to drop what it cached, from a thread of its own.
    invalidator: Arc<Invalidator>,
    /// Every node's generation in this mount, different in every mount: node ids are this
    /// mount's, so a file handle made under another mount must be stale, never another file.
    generation: u64,
    /// Files pinned for the kernel's swap, and their maps (bmap answers from these).
    swap_maps: Mutex<HashMap<InodeId, SwapActivation>>,
    /// Open directories: their entries as listed at opendir, served by index.
    dirs: Mutex<HashMap<u64, Vec<Listed>>>,
    next_handle: AtomicU64,
    /// Read buffers kept from read to read, one per read in progress: page-aligned, so the
    /// image's O_DIRECT reads land in them without a bounce buffer, and not allocated and
    /// zeroed for every request.
    read_bufs: Mutex<Vec<AlignedBuf>>,
}

struct Listed {
    node: INodeNo,
    kind: FileType,
    name: Vec<u8>,
}

/// The errno FUSE returns for an engine error. Errors that are not the caller's (I/O,
/// checksums, corruption) are also logged with their reason, which the errno alone loses.
pub(crate) fn errno(e: cowfs::Error) -> Errno {
    if e.errno() == cowfs::Errno::IO || e.errno() == cowfs::Errno::UCLEAN {
        tracing::error!("{e}");
    }
    Errno::from_i32(e.errno().raw_os_error())
}

/// A generation number for this mount's nodes: the clock's nanoseconds and the process id.
fn mount_generation() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_nanos() as u64 ^ u64::from(std::process::id()) << 32).max(1)
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
    }
}

fn system_time(t: Timespec) -> SystemTime {
    match u64::try_from(t.sec) {
        Ok(sec) => UNIX_EPOCH + Duration::new(sec, t.nsec),
        Err(_) => {
            UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs())
                + Duration::from_nanos(t.nsec.into())
        }
    }
}

fn timespec(t: TimeOrNow) -> Timespec {
    let t = match t {
        TimeOrNow::Now => return Timespec::now(),
        TimeOrNow::SpecificTime(t) => t,
    };
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Err(before) => {
            let d = before.duration();
            let (sec, nsec) = (-(d.as_secs() as i64), d.subsec_nanos());
            if nsec == 0 {
                Timespec { sec, nsec }
            } else {
                Timespec {
                    sec: sec - 1,
                    nsec: 1_000_000_000 - nsec,
                }
            }
        }
    }
}

fn name(name: &OsStr) -> &[u8] {
    name.as_bytes()
}

impl CowfsFuse {
    pub(crate) fn new(
        fs: Filesystem,
        invalidator: Arc<Invalidator>,
        runner: Option<Arc<dyn CommandRunner>>,
    ) -> Self {
        let root = fs.root();
        CowfsFuse {
            fs,
            nodes: NodeTable::new(root),
            dirs: Mutex::new(HashMap::new()),
            swap_maps: Mutex::new(HashMap::new()),
            invalidator,
            generation: mount_generation(),
            runner,
            next_handle: AtomicU64::new(1),
            read_bufs: Mutex::new(Vec::new()),
        }
    }

    fn dirs(&self) -> MutexGuard<'_, HashMap<u64, Vec<Listed>>> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn swap_maps(&self) -> MutexGuard<'_, HashMap<InodeId, SwapActivation>> {
        self.swap_maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn inode(&self, node: INodeNo) -> Result<InodeId, Errno> {
        self.nodes.inode(node).ok_or(Errno::ESTALE)
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: self.nodes.node(a.id),
            size: a.size,
            blocks: a.allocated.div_ceil(512),
            atime: system_time(a.atime),
            mtime: system_time(a.mtime),
            ctime: system_time(a.ctime),
            crtime: system_time(a.crtime),
            kind: file_type(a.kind),
            perm: a.perm as u16,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: 0,
            blksize: cowfs::format::BLOCK_SIZE as u32,
            flags: 0,
        }
    }

    /// How long the kernel may cache `attr`. Directories change only through this mount (the
    /// kernel drops its copy on every change it makes), and a swap file pinned for the kernel
    /// cannot change at all: both are kept, so that swapoff(2), whose permission checks read
    /// them, works without a daemon. Other files' attributes (their allocated size, say)
    /// also change when their data is written back, so they are kept briefly.
    fn attr_ttl(&self, attr: &FileAttr) -> Duration {
        let pinned = || {
            self.inode(attr.ino)
                .is_ok_and(|id| self.swap_maps().contains_key(&id))
        };
        if attr.kind == FileType::Directory || pinned() {
            ENTRY_TTL
        } else {
            TTL
        }
    }

    /// Replies to a request that names an inode (lookup, mknod, mkdir, ...) with its attributes.
    fn entry(&self, reply: ReplyEntry, attr: Result<FileAttr, Errno>) {
        match attr {
            Ok(attr) => {
                self.referenced(attr.ino);
                let generation = Generation(self.generation);
                reply.entry_with_ttls(&self.attr_ttl(&attr), &ENTRY_TTL, &attr, generation)
            }
            Err(e) => reply.error(e),
        }
    }

    /// The kernel is given a reference to `node` (it may open the inode): hold it in the
    /// engine from the first, so its data outlives an unlink while the kernel has it.
    fn referenced(&self, node: INodeNo) {
        if node != INodeNo::ROOT && self.nodes.looked_up(node) {
            if let Ok(id) = self.inode(node) {
                self.fs.hold(id);
            }
        }
    }

    /// Makes the kernel forget `name` in `dir` and `dir`'s attributes (the engine added or
    /// removed it without the kernel seeing). Queued: see [`Self::wait_forgotten`].
    pub(crate) fn forget_name(&self, dir: InodeId, name: &str) -> u64 {
        self.invalidator.entry(self.nodes.node(dir), name);
        self.forget_attrs(dir)
    }

    /// Makes the kernel drop its cached attributes of `id`, so the next use asks again.
    pub(crate) fn forget_attrs(&self, id: InodeId) -> u64 {
        self.invalidator.inode(self.nodes.node(id))
    }

    /// Waits a little for the invalidations up to `seq` to reach the kernel, so the caller's
    /// next look sees the change; never for long, since the kernel may be waiting for a
    /// serving thread to carry one out.
    pub(crate) fn wait_forgotten(&self, seq: u64) {
        self.invalidator.wait_sent(seq, Duration::from_secs(1));
    }

    fn attr(&self, id: InodeId) -> Result<FileAttr, Errno> {
        Ok(self.file_attr(&self.fs.getattr(id).map_err(errno)?))
    }

    /// Owner and mode of a new inode: the caller's ids, the umask applied, and a set-group-id
    /// directory's group (and, for directories, its set-group-id bit) inherited.
    fn new_attrs(
        &self,
        req: &Request,
        dir: InodeId,
        mode: u32,
        umask: u32,
        is_dir: bool,
    ) -> Result<CreateAttrs, Errno> {
        let parent = self.fs.getattr(dir).map_err(errno)?;
        let mut attrs = CreateAttrs {
            mode: mode & !umask & 0o7777,
            uid: req.uid(),
            gid: req.gid(),
        };
        if parent.perm & 0o2000 != 0 {
            attrs.gid = parent.gid;
            if is_dir {
                attrs.mode |= 0o2000;
            }
        }
        Ok(attrs)
    }

    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &[u8],
        kind: FileKind,
        mode: u32,
        umask: u32,
    ) -> Result<FileAttr, Errno> {
        let dir = self.inode(parent)?;
        let attrs = self.new_attrs(req, dir, mode, umask, kind == FileKind::Directory)?;
        let id = self.fs.create(dir, name, kind, attrs).map_err(errno)?;
        self.attr(id)
    }

    fn list(&self, dir: InodeId, node: INodeNo) -> Result<Vec<Listed>, Errno> {
        let mut out = vec![
            Listed {
                node,
                kind: FileType::Directory,
                name: b".".to_vec(),
            },
            Listed {
                node,
                kind: FileType::Directory,
                name: b"..".to_vec(),
            },
        ];
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch = self
                .fs
                .readdir(dir, after.as_deref(), READDIR_BATCH)
                .map_err(errno)?;
            let done = batch.len() < READDIR_BATCH;
            after = batch.last().map(|e| e.name.clone());
            out.extend(batch.into_iter().map(|e| Listed {
                node: self.nodes.node(e.id),
                kind: file_type(e.kind),
                name: e.name,
            }));
            if done {
                return Ok(out);
            }
        }
    }

    /// A change to a file's data by a caller without CAP_FSETID (not root) drops its
    /// set-user-id bit, and its set-group-id bit when group execution is on, as the kernel
    /// does for writes (it leaves that to the daemon for fallocate).
    fn remove_privileges(&self, req: &Request, id: InodeId) -> Result<(), Errno> {
        if req.uid() == 0 {
            return Ok(());
        }
        let perm = self.fs.getattr(id).map_err(errno)?.perm;
        let mut kept = perm & !0o4000;
        if perm & 0o010 != 0 {
            kept &= !0o2000;
        }
        if kept != perm {
            let set = SetAttr {
                mode: Some(kept),
                ..SetAttr::default()
            };
            self.fs.setattr(id, &set).map_err(errno)?;
        }
        Ok(())
    }

    fn setattr_inner(
        &self,
        id: InodeId,
        set: SetAttr,
        flags: Option<u32>,
    ) -> Result<FileAttr, Errno> {
        if let Some(flags) = flags {
            self.fs.set_flags(id, flags.into()).map_err(errno)?;
        }
        let attr = self.fs.setattr(id, &set).map_err(errno)?;
        Ok(self.file_attr(&attr))
    }
}

/// fallocate(2) mode bits as FUSE passes them.
fn fallocate_mode(mode: i32) -> Result<FallocateMode, Errno> {
    const KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
    const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE;
    const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE;
    let keep_size = mode & KEEP_SIZE != 0;
    match mode & !KEEP_SIZE {
        0 => Ok(FallocateMode::Allocate { keep_size }),
        PUNCH_HOLE if keep_size => Ok(FallocateMode::PunchHole),
        ZERO_RANGE => Ok(FallocateMode::ZeroRange { keep_size }),
        _ => Err(Errno::EOPNOTSUPP),
    }
}

/// Replies with the value or the errno. The body runs in a closure called on the spot, so
/// that `?` works inside it (a try block, if Rust had one).
macro_rules! answer {
    ($reply:ident, $result:expr, |$v:ident| $ok:expr) => {
        #[allow(clippy::redundant_closure_call)]
        match (|| -> Result<_, Errno> { $result })() {
            Ok($v) => $ok,
            Err(e) => $reply.error(e),
        }
    };
}

impl fuser::Filesystem for CowfsFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // File handles (name_to_handle_at, NFS): the kernel asks for `.` and `..` by node.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_EXPORT_SUPPORT);
        let _ = config.set_max_write(MAX_WRITE);
        // Sequential reads come in requests as large as writes may be (the kernel caps it).
        let _ = config.set_max_readahead(MAX_WRITE);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.sync() {
            tracing::error!("final commit failed: {e}");
        }
    }

    /// Names, and `.` and `..`, which the kernel asks for to open a file handle
    /// (open_by_handle_at; an NFS export): a node gone since is ESTALE.
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        answer!(
            reply,
            {
                let dir = self.inode(parent)?;
                let stale = |e: cowfs::Error| match e.errno() {
                    cowfs::Errno::NOENT => Errno::ESTALE,
                    _ => errno(e),
                };
                let id = match self::name(name) {
                    b"." => self.fs.getattr(dir).map_err(stale)?.id,
                    b".." => self.fs.parent(dir).map_err(stale)?,
                    name => self.fs.lookup(dir, name).map_err(errno)?,
                };
                self.attr(id)
            },
            |attr| self.entry(reply, Ok(attr))
        )
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if let Some(id) = self.nodes.forgotten(ino, nlookup) {
            if let Err(e) = self.fs.release(id) {
                tracing::error!("freeing an unlinked file: {e}");
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        answer!(reply, self.attr(self.inode(ino)?), |attr| reply
            .attr(&self.attr_ttl(&attr), &attr))
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let now = |t: &Option<TimeOrNow>| t.is_none_or(|t| matches!(t, TimeOrNow::Now));
        let set = SetAttr {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            times_now: now(&atime) && now(&mtime),
            atime: atime.map(timespec),
            mtime: mtime.map(timespec),
        };
        answer!(
            reply,
            self.setattr_inner(self.inode(ino)?, set, None),
            |attr| reply.attr(&self.attr_ttl(&attr), &attr)
        )
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        answer!(
            reply,
            self.fs.readlink(self.inode(ino)?).map_err(errno),
            |target| reply.data(&target)
        )
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            // cowfs stores regular files, directories and symlinks only.
            return reply.error(Errno::EOPNOTSUPP);
        }
        let made = self.make(
            req,
            parent,
            self::name(name),
            FileKind::Regular,
            mode,
            umask,
        );
        self.entry(reply, made)
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let made = self.make(
            req,
            parent,
            self::name(name),
            FileKind::Directory,
            mode,
            umask,
        );
        self.entry(reply, made)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer!(
            reply,
            self.fs
                .unlink(self.inode(parent)?, self::name(name))
                .map_err(errno),
            |_v| reply.ok()
        )
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer!(
            reply,
            self.fs
                .rmdir(self.inode(parent)?, self::name(name))
                .map_err(errno),
            |_v| reply.ok()
        )
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        answer!(
            reply,
            {
                let dir = self.inode(parent)?;
                let attrs = CreateAttrs {
                    mode: 0o777,
                    uid: req.uid(),
                    gid: self.new_attrs(req, dir, 0, 0, false)?.gid,
                };
                let id = self
                    .fs
                    .symlink(
                        dir,
                        self::name(link_name),
                        target.as_os_str().as_bytes(),
                        attrs,
                    )
                    .map_err(errno)?;
                self.attr(id)
            },
            |attr| self.entry(reply, Ok(attr))
        )
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let flags = cowfs::RenameFlags {
            noreplace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
        };
        answer!(
            reply,
            {
                let (from, to) = (self.inode(parent)?, self.inode(newparent)?);
                self.fs
                    .rename(from, self::name(name), to, self::name(newname), flags)
                    .map_err(errno)
            },
            |_v| reply.ok()
        )
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        answer!(
            reply,
            {
                let id = self.inode(ino)?;
                self.fs
                    .link(id, self.inode(newparent)?, self::name(newname))
                    .map_err(errno)?;
                self.attr(id)
            },
            |attr| self.entry(reply, Ok(attr))
        )
    }

    /// Files need no open state here (every request names its inode), so the kernel is told
    /// to stop asking: after the first ENOSYS it opens files without the daemon. That is also
    /// what lets swapoff(2) open a swap file when the daemon has died.
    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS)
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let bufs = || self.read_bufs.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = bufs()
            .pop()
            .unwrap_or_else(|| AlignedBuf::zeroed(MAX_WRITE as usize));
        if buf.len() < size as usize {
            buf = AlignedBuf::zeroed(size as usize);
        }
        let data = &mut buf[..size as usize];
        answer!(
            reply,
            self.fs.read(self.inode(ino)?, offset, data).map_err(errno),
            |n| reply.data(&data[..n])
        );
        bufs().push(buf);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        answer!(
            reply,
            self.fs.write(self.inode(ino)?, offset, data).map_err(errno),
            |n| reply.written(n as u32)
        )
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        answer!(
            reply,
            self.fs.fsync(self.inode(ino)?).map_err(errno),
            |_v| reply.ok()
        )
    }

    /// The listing is taken by the first readdir (see there).
    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        answer!(reply, self.inode(ino), |_dir| {
            let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
            self.dirs().insert(handle, Vec::new());
            reply.opened(FileHandle(handle), FopenFlags::empty())
        })
    }

    /// Serves a listing by index, so a reader going through it sees every entry once however
    /// the directory changes meanwhile; every read from the start (the first, or after
    /// rewinddir) takes the listing anew, so names added since opendir show (POSIX).
    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if offset == 0 {
            let listed = self.inode(ino).and_then(|dir| self.list(dir, ino));
            match listed {
                Ok(entries) => self.dirs().insert(fh.0, entries),
                Err(e) => return reply.error(e),
            };
        }
        let dirs = self.dirs();
        let Some(entries) = dirs.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(e.node, i as u64 + 1, e.kind, OsStr::from_bytes(&e.name)) {
                break;
            }
        }
        reply.ok()
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs().remove(&fh.0);
        reply.ok()
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        // One commit makes the whole namespace durable, directories included.
        fuser::Filesystem::fsync(self, req, ino, fh, datasync, reply)
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        answer!(reply, self.fs.info().map_err(errno), |info| {
            let block = cowfs::format::BLOCK_SIZE;
            let (blocks, free) = (info.size / block, info.free / block);
            // Inodes are records in the metadata store: there is no fixed table to run out of.
            let files = u64::from(u32::MAX);
            reply.statfs(
                blocks,
                free,
                free,
                files,
                files,
                block as u32,
                cowfs::format::NAME_MAX as u32,
                block as u32,
            )
        })
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR)
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        // The engine has no extended attributes yet.
        reply.error(Errno::EOPNOTSUPP)
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::NO_XATTR)
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        answer!(
            reply,
            self.make(
                req,
                parent,
                self::name(name),
                FileKind::Regular,
                mode,
                umask
            ),
            |attr| {
                self.referenced(attr.ino);
                reply.created(
                    &TTL,
                    &attr,
                    Generation(self.generation),
                    FileHandle(0),
                    FopenFlags::empty(),
                )
            }
        )
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        answer!(
            reply,
            {
                let id = self.inode(ino)?;
                if let Some(out) = self.control(req, id, cmd, in_data) {
                    return Ok(out);
                }
                let out = ioctl::handle(&self.fs, id, cmd, in_data, out_size as usize)?;
                if ioctl::changes_attributes(cmd) {
                    self.wait_forgotten(self.forget_attrs(id));
                }
                Ok(out)
            },
            |out| { reply.ioctl(0, &out) }
        )
    }

    fn bmap(&self, _req: &Request, ino: INodeNo, blocksize: u32, idx: u64, reply: ReplyBmap) {
        answer!(
            reply,
            Ok(self.swap_block(self.inode(ino)?, blocksize, idx)),
            |block| { reply.bmap(block) }
        )
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        answer!(
            reply,
            {
                let (mode, id) = (fallocate_mode(mode)?, self.inode(ino)?);
                self.fs.fallocate(id, mode, offset, length).map_err(errno)?;
                self.remove_privileges(req, id)
            },
            |_v| reply.ok()
        )
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // The reply counts bytes in 32 bits; a caller loops for the rest, as with any short copy.
        let len = len.min(1 << 30);
        answer!(
            reply,
            {
                let (src, dst) = (self.inode(ino_in)?, self.inode(ino_out)?);
                self.fs
                    .copy_file_range(src, offset_in, dst, offset_out, len)
                    .map_err(errno)
            },
            |n| reply.written(n as u32)
        )
    }
}
