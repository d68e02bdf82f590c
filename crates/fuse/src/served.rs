//! The state of a served mount (`CowfsFuse`): the filesystem, the node table, open
//! directories' listings, the swap files pinned for the kernel, read buffers, and the
//! attribute and entry answers built from engine values.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cowfs::device::AlignedBuf;
use cowfs::format::FileKind;
use cowfs::{Attr, CreateAttrs, Filesystem, InodeId, SetAttr, SwapActivation};
use fuser::{Errno, FileAttr, FileType, Generation, INodeNo, ReplyEntry, Request};

use crate::control::CommandRunner;
use crate::convert::{errno, file_type, system_time};
use crate::invalidate::Invalidator;
use crate::nodes::NodeTable;
use crate::swap_readahead::SwapReadahead;
use crate::swapfile::file_node;
use crate::MountOptions;

/// How long the kernel may cache attributes. Only this daemon changes the image while it is
/// mounted and it answers every change, so a short cache is safe.
pub(crate) const TTL: Duration = Duration::from_secs(1);
/// How long the kernel may trust a name it looked up. Names change only through this mount,
/// and the kernel updates its own cache on every create, unlink and rename, so a name stays
/// right until then. Trusting it for good also keeps a swap file reachable if the daemon dies:
/// swapoff(2) walks the path, and must not need a daemon to answer the lookup.
pub(crate) const ENTRY_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The largest write the kernel sends in one request.
pub(crate) const MAX_WRITE: u32 = 1 << 20;
/// Entries read from the engine per call while listing a directory.
pub(crate) const READDIR_BATCH: usize = 1024;

/// A cowfs filesystem served over FUSE.
pub struct CowfsFuse {
    pub(crate) fs: Filesystem,
    pub(crate) nodes: NodeTable,
    /// Runs the whole-filesystem commands of the COMMAND control ioctl.
    pub(crate) runner: Option<Arc<dyn CommandRunner>>,
    /// Tells the kernel to drop what it cached, from a thread of its own.
    pub(crate) invalidator: Arc<Invalidator>,
    /// Every node's generation in this mount, different in every mount: node ids are this
    /// mount's, so a file handle made under another mount must be stale, never another file.
    pub(crate) generation: u64,
    /// Files pinned for the kernel's swap, and their maps (bmap answers from these).
    pub(crate) swap_maps: Mutex<HashMap<InodeId, SwapActivation>>,
    /// Swap files the kernel uses through the filesystem (their swap I/O node's reads and
    /// writes are swap I/O), and their read-ahead windows.
    pub(crate) through_fs: Mutex<HashMap<InodeId, Arc<SwapReadahead>>>,
    /// The daemon's memory is locked (while any swap file is active for the kernel).
    pub(crate) memory_locked: std::sync::atomic::AtomicBool,
    /// Open directories: their entries as listed at opendir, served by index.
    pub(crate) dirs: Mutex<HashMap<u64, Vec<Listed>>>,
    pub(crate) next_handle: AtomicU64,
    /// Read buffers kept from read to read, one per read in progress: page-aligned, so the
    /// image's O_DIRECT reads land in them without a bounce buffer, and not allocated and
    /// zeroed for every request.
    pub(crate) read_bufs: Mutex<Vec<AlignedBuf>>,
    /// Threads serving requests: at most this many reads are in progress at once.
    pub(crate) threads: usize,
    /// The kernel caches writes (MountOptions::writeback_cache).
    pub(crate) writeback_cache: bool,
}

pub(crate) struct Listed {
    pub(crate) node: INodeNo,
    pub(crate) kind: FileType,
    pub(crate) name: Vec<u8>,
}

/// A generation number for this mount's nodes: the clock's nanoseconds and the process id.
fn mount_generation() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_nanos() as u64 ^ u64::from(std::process::id()) << 32).max(1)
}

impl CowfsFuse {
    pub(crate) fn new(
        fs: Filesystem,
        invalidator: Arc<Invalidator>,
        runner: Option<Arc<dyn CommandRunner>>,
        options: &MountOptions,
    ) -> Self {
        let root = fs.root();
        CowfsFuse {
            fs,
            nodes: NodeTable::new(root),
            dirs: Mutex::new(HashMap::new()),
            swap_maps: Mutex::new(HashMap::new()),
            through_fs: Mutex::new(Default::default()),
            memory_locked: Default::default(),
            invalidator,
            generation: mount_generation(),
            runner,
            next_handle: AtomicU64::new(1),
            read_bufs: Mutex::new(Vec::new()),
            threads: options.threads.max(1),
            writeback_cache: options.writeback_cache,
        }
    }

    pub(crate) fn dirs(&self) -> MutexGuard<'_, HashMap<u64, Vec<Listed>>> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn swap_maps(&self) -> MutexGuard<'_, HashMap<InodeId, SwapActivation>> {
        self.swap_maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The inode a node stands for (a swap I/O node stands for its swap file).
    pub(crate) fn inode(&self, node: INodeNo) -> Result<InodeId, Errno> {
        self.nodes.inode(file_node(node)).ok_or(Errno::ESTALE)
    }

    pub(crate) fn file_attr(&self, a: &Attr) -> FileAttr {
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
    pub(crate) fn attr_ttl(&self, attr: &FileAttr) -> Duration {
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
    pub(crate) fn entry(&self, reply: ReplyEntry, attr: Result<FileAttr, Errno>) {
        match attr {
            Ok(attr) => {
                self.referenced(file_node(attr.ino));
                let generation = Generation(self.generation);
                reply.entry_with_ttls(&self.attr_ttl(&attr), &ENTRY_TTL, &attr, generation)
            }
            Err(e) => reply.error(e),
        }
    }

    /// The kernel is given a reference to `node` (it may open the inode): hold it in the
    /// engine from the first, so its data outlives an unlink while the kernel has it.
    pub(crate) fn referenced(&self, node: INodeNo) {
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

    pub(crate) fn attr(&self, id: InodeId) -> Result<FileAttr, Errno> {
        Ok(self.file_attr(&self.fs.getattr(id).map_err(errno)?))
    }

    /// Owner and mode of a new inode: the caller's ids, the umask applied, and a set-group-id
    /// directory's group (and, for directories, its set-group-id bit) inherited.
    pub(crate) fn new_attrs(
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

    pub(crate) fn make(
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

    pub(crate) fn list(&self, dir: InodeId, node: INodeNo) -> Result<Vec<Listed>, Errno> {
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
    pub(crate) fn remove_privileges(&self, req: &Request, id: InodeId) -> Result<(), Errno> {
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

    pub(crate) fn setattr_inner(
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
