//! The FUSE operations: each request is translated into one engine call. Everything a
//! filesystem decides (permissions of flags, the swap-file rules, copy-on-write) is decided in
//! the engine, so the answers through the mount are the engine's errnos.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use cowfs::device::AlignedBuf;
use cowfs::format::FileKind;
use cowfs::{CreateAttrs, SetAttr};
use fuser::{
    CopyFileRangeFlags, Errno, FileHandle, FopenFlags, Generation, INodeNo, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyBmap, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::control;
use crate::convert::{errno, fallocate_mode, name, timespec};
use crate::ioctl;
use crate::served::{CowfsFuse, MAX_WRITE, TTL};
use crate::swapfile::{file_node, is_swap_io_node};

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

/// How the kernel does the I/O of a file opened with `flags`. An O_DIRECT open gets direct
/// I/O with parallel direct writes: without them the kernel holds the file's lock over every
/// O_DIRECT write, and four threads writing one file went slower than one. Not with
/// `cached_writes` (the writeback cache) unless the file is the swap I/O node, which nothing
/// caches: direct I/O mode passes over dirty cached pages, where the kernel's own O_DIRECT
/// path writes them back first. Any other open keeps the file's page cache, as when the
/// kernel opens files without asking. No flush on close: writes are the engine's once
/// answered, and fsync is what makes them durable (with the writeback cache the kernel
/// writes its dirty pages back at close all the same).
fn file_io(flags: i32, cached_writes: bool) -> FopenFlags {
    let io = if flags & libc::O_DIRECT != 0 && !cached_writes {
        FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
    } else {
        FopenFlags::FOPEN_KEEP_CACHE
    };
    io | FopenFlags::FOPEN_NOFLUSH
}

impl fuser::Filesystem for CowfsFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // File handles (name_to_handle_at, NFS): the kernel asks for `.` and `..` by node.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_EXPORT_SUPPORT);
        // Direct I/O submitted asynchronously (a loop device's, the kernel's swap through the
        // filesystem) reaches the daemon as concurrent requests, not one at a time.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ASYNC_DIO);
        // An O_DIRECT open may still be mapped (`file_io`): through the page cache.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        if self.writeback_cache {
            // Writes land in the page cache and come back in large write-back requests.
            let _ = config.add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE);
        }
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
                    name if control::swap_io_target(name).is_some() => {
                        return self.swap_io_entry(dir, name);
                    }
                    name => self.fs.lookup(dir, name).map_err(errno)?,
                };
                self.attr(id)
            },
            |attr| self.entry(reply, Ok(attr))
        )
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if let Some(id) = self.nodes.forgotten(file_node(ino), nlookup) {
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

    /// Opens are answered with how the kernel should do the file's I/O ([`file_io`]); no
    /// per-open state is kept (every request names its inode). Once a file is pinned for the
    /// kernel's swap, opens get ENOSYS instead: the kernel then opens files without asking
    /// the daemon for the rest of the mount (swapon(2)'s own open is the first to hear it),
    /// so swapoff(2) of the pinned file through its bind mount needs no daemon, should the
    /// daemon die. With the writeback cache, an open for writing is refused as its first write
    /// would be (an active swap file, an immutable or append-only file): the writes would
    /// reach the daemon only at write-back, long after write(2) returned.
    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.kernel_swaps_pinned() {
            return reply.error(Errno::ENOSYS);
        }
        let cached_writes = self.writeback_cache && !is_swap_io_node(ino);
        let flags = flags.0;
        let (append, truncate) = (flags & libc::O_APPEND != 0, flags & libc::O_TRUNC != 0);
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY || truncate;
        answer!(
            reply,
            match cached_writes && writes {
                true => self
                    .fs
                    .check_open_for_write(self.inode(ino)?, append, truncate)
                    .map_err(errno),
                false => Ok(()),
            },
            |_v| reply.opened(FileHandle(0), file_io(flags, cached_writes))
        )
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
        let mut read_ahead = None;
        answer!(
            reply,
            match is_swap_io_node(ino) {
                true => {
                    read_ahead = self.swap_read(self.inode(ino)?, offset, data)?;
                    Ok(data.len())
                }
                false => self.fs.read(self.inode(ino)?, offset, data).map_err(errno),
            },
            |n| reply.data(&data[..n])
        );
        bufs().push(buf);
        // After the reply: the swap-in it follows does not wait for it.
        if let Some(pending) = read_ahead {
            self.read_ahead(pending);
        }
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
            match is_swap_io_node(ino) {
                true => self.swap_write(self.inode(ino)?, offset, data),
                false => self.fs.write(self.inode(ino)?, offset, data).map_err(errno),
            },
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

    /// The engine has no extended attributes, and ENOSYS says so once for the whole mount:
    /// the kernel then answers EOPNOTSUPP itself. ENODATA would be asked again for every
    /// write, which looks up security.capability to see whether it must drop privileges.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS)
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS)
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
        reply.error(Errno::ENOSYS)
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS)
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
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
                    file_io(flags, self.writeback_cache),
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
