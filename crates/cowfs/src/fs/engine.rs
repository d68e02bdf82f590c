//! The engine's state and life cycle: making a filesystem, opening one (validating everything
//! before a byte is written), committing transactions, and stopping after a device error.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::device::{AlignedBuf, BlockDevice, OverlayDevice};
use crate::error::{Errno, Error, Result};
use crate::format::{
    FileKind, FsState, InodeRecord, MetaChunk, SubvolumeRecord, Superblock, SuperblockScan,
    Timespec, BLOCK_SIZE, DEFAULT_INLINE_LIMIT, FIRST_SUBVOLUME, MIN_FS_SIZE, ROOT_INO,
    SUPERBLOCK_OFFSETS, SUPERBLOCK_SIZE, SYSTEM_AREA_END,
};
use crate::fs::alloc::owners::SoleOwners;
use crate::fs::alloc::{DataAllocator, Extent};
use crate::fs::data::cache::PageCache;
use crate::fs::data::writer::{WriteBehind, WriteTicket};
use crate::fs::swap::state::SwapState;
use crate::fs::tree::access_times::AccessTimes;
use crate::fs::CompressionConfig;
use crate::fs::{InodeId, MkfsOptions};
use crate::meta::{DeviceSpace, Meta, MetaSpace, Store};

pub struct Engine {
    pub(crate) device: Arc<dyn BlockDevice>,
    pub(crate) meta_space: Arc<MetaSpace>,
    pub(crate) space: Arc<Mutex<DeviceSpace>>,
    pub(crate) store: Store,
    pub(crate) alloc: DataAllocator,
    pub(crate) cache: PageCache,
    pub(crate) state: FsState,
    pub(crate) read_only: bool,
    /// Set by the first I/O error; every later change is refused until the image is reopened.
    pub(crate) failed: Option<Error>,
    pub(crate) last_commit: Instant,
    pub(crate) writer: WriteBehind,
    /// While an operation runs under `deferring_writes`: its direct data writes, recorded
    /// and left for the caller to make once the lock is let go.
    pub(crate) deferred: Option<Vec<WriteTicket>>,
    /// What new data is compressed with filesystem-wide (files marked `+c` get zstd anyway).
    pub(crate) compression: Option<CompressionConfig>,
    /// The exclusive operation (balance, resize) running or paused, if any.
    pub(crate) exclusive: Option<&'static str>,
    /// Active swap files and their pins (the swap module's own).
    pub(crate) swap: SwapState,
    /// Inodes front ends hold open, and how many times (see `orphans`).
    pub(crate) held: std::collections::HashMap<InodeId, u32>,
    /// What opening did to the image that a person should hear of (repairs).
    pub(crate) notes: Vec<String>,
    /// When reads move access times.
    pub(crate) access_times: AccessTimes,
    /// Extents known to have one owner (see `extents`).
    pub(crate) sole_owners: SoleOwners,
}

/// Reads every superblock copy of a device.
pub fn scan_superblocks(device: &dyn BlockDevice) -> SuperblockScan {
    let copies = SUPERBLOCK_OFFSETS
        .iter()
        .enumerate()
        .map(|(copy, &offset)| {
            let mut buf = AlignedBuf::zeroed(SUPERBLOCK_SIZE);
            device
                .read_at(offset, &mut buf)
                .map_err(|e| Error::corrupt(format!("superblock copy {copy} unreadable: {e}")))?;
            Superblock::decode(&buf, copy, device.len()).map_err(|e| {
                Error::new(e.errno(), format!("superblock copy {copy}: {}", e.reason()))
            })
        })
        .collect();
    SuperblockScan { copies }
}

fn random_uuid() -> [u8; 16] {
    let mut uuid = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut uuid))
        .is_err()
    {
        let seed = Timespec::now();
        uuid[..8].copy_from_slice(&seed.sec.to_le_bytes());
        uuid[8..12].copy_from_slice(&seed.nsec.to_le_bytes());
        uuid[12..].copy_from_slice(&std::process::id().to_le_bytes());
    }
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

fn io_err(context: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(context, &e)
}

fn write_err(context: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::device_write(context, &e)
}

impl Engine {
    pub fn mkfs(device: Arc<dyn BlockDevice>, opts: &MkfsOptions) -> Result<()> {
        let size = crate::format::round_down(opts.size.unwrap_or(device.len()), BLOCK_SIZE);
        if size < MIN_FS_SIZE {
            return Err(Error::invalid(format!(
                "a filesystem needs at least {} MiB; {size} bytes given",
                MIN_FS_SIZE >> 20
            )));
        }
        let inline_limit = opts.inline_limit.unwrap_or(DEFAULT_INLINE_LIMIT);
        if inline_limit as u64 >= BLOCK_SIZE {
            return Err(Error::invalid(format!(
                "the inline limit must be below {BLOCK_SIZE} bytes"
            )));
        }
        if device.len() < size {
            device.resize(size).map_err(io_err("grow the image"))?;
        }
        let zeros = AlignedBuf::zeroed(SYSTEM_AREA_END as usize);
        device
            .write_at(0, &zeros)
            .map_err(write_err("clear the system area"))?;
        let space = Arc::new(Mutex::new(DeviceSpace::new(size)));
        let first_meta = crate::format::round_down(size / 32, 1 << 20).clamp(2 << 20, 64 << 20);
        let physical = space
            .lock()
            .unwrap()
            .allocate(first_meta)
            .expect("room for metadata");
        let sb = Superblock {
            generation: 0,
            fs_size: size,
            uuid: opts.uuid.unwrap_or_else(random_uuid),
            created: Timespec::now().sec,
            meta_len: 0,
            meta_chunks: vec![MetaChunk {
                store_offset: 0,
                physical,
                length: first_meta,
            }],
        };
        let meta_space = Arc::new(MetaSpace::new(device.clone(), space.clone(), sb));
        meta_space
            .write_superblock(true)
            .map_err(write_err("write the superblock"))?;
        let mut store = Store::open(meta_space.clone(), false)?;
        Self::seed(store.meta(), &space, opts)?;
        store.commit()?;
        device.flush().map_err(write_err("flush"))?;
        Ok(())
    }

    /// The records of a new filesystem: its state, subvolume 1 and its root directory, and a
    /// first data block group.
    fn seed(meta: Meta<'_>, space: &Mutex<DeviceSpace>, opts: &MkfsOptions) -> Result<()> {
        meta.create_tables()?;
        let state = FsState {
            generation: 1,
            next_subvolume: FIRST_SUBVOLUME + 1,
            default_subvolume: FIRST_SUBVOLUME,
            inline_limit: opts.inline_limit.unwrap_or(DEFAULT_INLINE_LIMIT),
            flags: FsState::compression_flags(opts.compress),
        };
        meta.put_state(&state)?;
        let subvol = SubvolumeRecord {
            root_ino: ROOT_INO,
            next_ino: ROOT_INO + 1,
            flags: 0,
            parent: 0,
            created: Timespec::now().sec,
            generation: 1,
            parent_dir: 0,
            snapshot_of: 0,
            name: vec![],
        };
        meta.subvolumes().put(&FIRST_SUBVOLUME, &subvol)?;
        let root = new_inode(FileKind::Directory, 0o755, 0, 0, 1);
        let root_id = InodeId::new(FIRST_SUBVOLUME, ROOT_INO);
        meta.inodes()
            .put(&root_id, &InodeRecord { nlink: 2, ..root })?;
        DataAllocator::default().add_group(meta, space, 0)
    }

    /// Opens a filesystem. Read-write opens first open the image through a write-absorbing
    /// overlay, so a damaged image is rejected before anything is written to it.
    pub fn open(device: Arc<dyn BlockDevice>, read_only: bool) -> Result<Engine> {
        let overlay: Arc<dyn BlockDevice> = Arc::new(OverlayDevice::new(device.clone()));
        let checked = Self::open_on(overlay, true, true)?;
        if read_only {
            return Ok(checked);
        }
        drop(checked);
        let mut engine = Self::open_on(device, false, false)?;
        engine.repair_superblocks()?;
        engine.free_orphans()?;
        Ok(engine)
    }

    /// The superblock copies on the device that are damaged or behind the one in use.
    pub(crate) fn superblock_problems(&self) -> Vec<String> {
        let newest = self.meta_space.superblock().generation;
        scan_superblocks(self.device.as_ref())
            .copies
            .iter()
            .enumerate()
            .filter_map(|(copy, c)| match c {
                Ok(sb) if sb.generation == newest => None,
                Ok(sb) => Some(format!(
                    "superblock copy {copy} is behind (generation {} of {newest})",
                    sb.generation
                )),
                Err(e) => Some(e.reason().to_string()),
            })
            .collect()
    }

    /// Rewrites every superblock copy when one is damaged or behind (a power cut during an
    /// update leaves that), so the image goes back to three good copies; each repair is noted
    /// for the front end to report.
    fn repair_superblocks(&mut self) -> Result<()> {
        let problems = self.superblock_problems();
        if !problems.is_empty() {
            self.meta_space
                .write_superblock(true)
                .map_err(write_err("repair the superblock copies"))?;
        }
        let repaired = problems.into_iter().map(|p| format!("{p}: rewritten"));
        self.notes.extend(repaired);
        Ok(())
    }

    fn open_on(device: Arc<dyn BlockDevice>, read_only: bool, verify: bool) -> Result<Engine> {
        let sb = scan_superblocks(device.as_ref()).best()?.clone();
        let space = Arc::new(Mutex::new(DeviceSpace::new(sb.fs_size)));
        for c in &sb.meta_chunks {
            space.lock().unwrap().claim(c.physical, c.length);
        }
        let meta_space = Arc::new(MetaSpace::new(device.clone(), space.clone(), sb));
        let store = Store::open(meta_space.clone(), verify)?;
        let meta = store.meta();
        let state = meta.state()?;
        let alloc = DataAllocator::load(meta, &space)?;
        let root = meta.subvolumes().get(&state.default_subvolume)?;
        let root = root.ok_or_else(|| Error::corrupt("the default subvolume is missing"))?;
        let root_dir = InodeId::new(state.default_subvolume, root.root_ino);
        if !meta.inodes().contains(&root_dir)? {
            return Err(Error::corrupt("the root directory is missing"));
        }
        let cache = PageCache::default();
        let writer = WriteBehind::new(cache.pool.clone());
        Ok(Engine {
            device,
            meta_space,
            space,
            store,
            alloc,
            cache,
            state,
            read_only,
            failed: None,
            last_commit: Instant::now(),
            writer,
            deferred: None,
            compression: state.compression()?,
            exclusive: None,
            swap: SwapState::default(),
            held: Default::default(),
            notes: Vec::new(),
            access_times: Default::default(),
            sole_owners: Default::default(),
        })
    }

    pub(crate) fn meta(&self) -> Meta<'_> {
        self.store.meta()
    }

    /// Refuses changes on a read-only or stopped filesystem (EROFS: reads are still served).
    pub(crate) fn check_writable(&self) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(Error::new(
                Errno::ROFS,
                format!("the filesystem went read-only after a device error ({e}); remount it"),
            ));
        }
        if self.read_only {
            return Err(Error::new(Errno::ROFS, "the filesystem is open read-only"));
        }
        Ok(())
    }

    /// What fsync, sync and commit report once the filesystem stopped: the device's errno
    /// (EIO when the failure was not a device write), as Linux reports writeback errors.
    pub(crate) fn check_not_stopped(&self) -> Result<()> {
        self.stopped_error().map_or(Ok(()), Err)
    }

    fn stopped_error(&self) -> Option<Error> {
        self.failed.as_ref().map(|e| {
            let errno = if e.is_device_write_error() {
                e.errno()
            } else {
                Errno::IO
            };
            Error::new(
                errno,
                format!("nothing since the last commit was kept: {e}; remount the filesystem"),
            )
        })
    }

    /// Records an error from a change: device write failures, I/O errors and damaged
    /// metadata stop the filesystem; nothing after its last good commit is committed.
    pub(crate) fn note_failure(&mut self, err: &Error) {
        if self.failed.is_none() && err.stops_the_filesystem() {
            self.failed = Some(err.clone());
        }
    }

    pub(crate) fn device_read(&self, logical: u64, buf: &mut [u8]) -> Result<()> {
        let physical = self.alloc.physical(logical)?;
        // Data being written must be on the device before it is read from there.
        self.writer
            .settle_range(physical..physical + buf.len() as u64)?;
        self.device
            .read_at(physical, buf)
            .map_err(io_err("data read"))
    }

    /// Writes back all dirty data and commits the running transaction durably.
    pub fn commit(&mut self) -> Result<()> {
        self.check_not_stopped()?;
        if self.read_only {
            // Opened read-only: there is never anything to commit.
            return Ok(());
        }
        let result = self.commit_inner();
        if let Err(e) = &result {
            self.failed.get_or_insert_with(|| e.clone());
        }
        result
    }

    /// Waits for every pending data write. Refused while the running operation's own writes
    /// are deferred (`deferring_writes`): they are made after it returns, so the wait would
    /// never end.
    pub(crate) fn settle_all(&self) -> Result<()> {
        if self.deferred.as_ref().is_some_and(|d| !d.is_empty()) {
            return Err(Error::new(
                Errno::IO,
                "internal error: waiting for data writes this operation has yet to make",
            ));
        }
        self.writer.settle()
    }

    fn commit_inner(&mut self) -> Result<()> {
        self.settle_swap_journals()?;
        self.writeback_all()?;
        self.settle_all()?;
        if !self.store.has_changes() {
            return Ok(());
        }
        self.state.generation += 1;
        self.meta().put_state(&self.state)?;
        self.store.commit()?;
        let freed = self.alloc.unpin();
        self.discard(&freed);
        self.swap.committed();
        self.last_commit = Instant::now();
        Ok(())
    }

    /// Tells the device the space a commit freed holds nothing to read (TRIM: an NBD
    /// server's memory or thin storage gets it back). Done before the space can be handed out
    /// again, so no TRIM overtakes a later write there. Advisory: a device that fails it
    /// loses nothing, and a failing device shows on the next write or flush.
    fn discard(&self, freed: &[Extent]) {
        if freed.is_empty() {
            return;
        }
        let ranges: Vec<(u64, u64)> = freed.iter().map(|e| (e.start, e.len)).collect();
        let _ = self.device.discard(&ranges);
    }

    pub fn generation(&self) -> u64 {
        self.state.generation
    }

    pub fn superblock(&self) -> Superblock {
        self.meta_space.superblock()
    }

    pub(crate) fn subvolume(&self, subvol: u64) -> Result<SubvolumeRecord> {
        self.meta()
            .subvolumes()
            .get(&subvol)?
            .ok_or_else(|| Error::not_found(format!("subvolume {subvol}")))
    }

    pub(crate) fn put_subvolume(&mut self, id: u64, subvol: &SubvolumeRecord) -> Result<()> {
        self.meta().subvolumes().put(&id, subvol)
    }

    pub(crate) fn inode(&self, id: InodeId) -> Result<InodeRecord> {
        self.meta()
            .inodes()
            .get(&id)?
            .ok_or_else(|| Error::not_found(format!("inode {}", id.ino)))
    }

    pub(crate) fn put_inode(&mut self, id: InodeId, inode: &InodeRecord) -> Result<()> {
        self.access_times.changed(id);
        self.meta().inodes().put(&id, inode)
    }

    pub(crate) fn remove_inode(&mut self, id: InodeId) -> Result<()> {
        self.meta().inodes().remove(&id)?;
        Ok(())
    }
}

pub(crate) fn new_inode(
    kind: FileKind,
    perm: u32,
    uid: u32,
    gid: u32,
    generation: u64,
) -> InodeRecord {
    let now = Timespec::now();
    InodeRecord {
        mode: kind.mode_bits() | (perm & 0o7777),
        uid,
        gid,
        nlink: 1,
        size: 0,
        flags: 0,
        generation,
        rdev: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        compression: None,
    }
}
