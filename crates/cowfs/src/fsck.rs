//! The checker. It opens the image read-only (writes go to a memory overlay, so fsck never
//! changes the image), and proves the invariants the engine relies on: valid superblock
//! copies, a metadata store whose every page checksum holds, every record decodable, extent
//! reference counts exact, no extent overlapping another or free space, free space equal to
//! the complement of what is allocated, a well-formed namespace, and every data checksum.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::device::{AlignedBuf, BlockDevice};
use crate::error::Result;
use crate::format::{
    decode_checksums, decode_len, extent_ref_key, key_part, key_tail, table, BlockGroupRecord,
    Compression, DirEntryRecord, ExtentKind, ExtentRecord, FileExtent, FileKind, InodeRecord,
    SubvolumeRecord, BLOCK_SIZE, ROOT_INO,
};
use crate::fs::engine::Engine;
use crate::fs::{scan_superblocks, InodeId};
use crate::meta::Meta;

/// What fsck found.
#[derive(Debug, Default)]
pub struct FsckReport {
    /// Violations of the format's invariants: the image is damaged.
    pub problems: Vec<String>,
    /// Harmless oddities, e.g. superblock copies one generation apart after a power cut.
    pub notes: Vec<String>,
    pub inodes: u64,
    pub directories: u64,
    pub extents: u64,
    pub data_bytes_verified: u64,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, msg: String) {
        self.problems.push(msg);
    }
}

/// Progress of the data pass: bytes verified so far and in all.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Checks the filesystem on `device`. Never writes to it.
pub fn check(device: Arc<dyn BlockDevice>, progress: Progress<'_>) -> FsckReport {
    let mut report = FsckReport::default();
    check_superblocks(device.as_ref(), &mut report);
    let engine = match Engine::open(device, true) {
        Ok(e) => e,
        Err(e) => {
            report.problem(format!("cannot open the filesystem: {e}"));
            return report;
        }
    };
    if let Err(e) = Checker::new(&engine, &mut report).run(progress) {
        report.problem(format!("check stopped: {e}"));
    }
    report
}

fn check_superblocks(device: &dyn BlockDevice, report: &mut FsckReport) {
    let scan = scan_superblocks(device);
    let newest = scan
        .copies
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .map(|s| s.generation)
        .max();
    for (i, copy) in scan.copies.iter().enumerate() {
        match copy {
            Err(e) => report.problem(e.reason().to_string()),
            Ok(sb) if Some(sb.generation) != newest => report.notes.push(format!(
                "superblock copy {i} is at generation {}, behind {} (an interrupted update; the next one repairs it)",
                sb.generation,
                newest.unwrap_or(0)
            )),
            Ok(_) => {}
        }
    }
}

/// One file extent record as found in the `file_extents` table.
struct FileExtentRow {
    owner: InodeId,
    offset: u64,
    extent: FileExtent,
}

struct Checker<'a> {
    engine: &'a Engine,
    meta: Meta<'a>,
    report: &'a mut FsckReport,
}

impl<'a> Checker<'a> {
    fn new(engine: &'a Engine, report: &'a mut FsckReport) -> Self {
        Checker {
            engine,
            meta: engine.meta(),
            report,
        }
    }

    fn run(mut self, progress: Progress<'_>) -> Result<()> {
        let groups = self.block_groups()?;
        let extents = self.extents(&groups)?;
        self.free_space(&groups, &extents)?;
        let inodes = self.inodes()?;
        let file_extents = self.file_extents(&inodes)?;
        self.inline_extents(&file_extents);
        self.reference_counts(&extents, &file_extents);
        self.shared_claims(&file_extents);
        self.back_references(&file_extents)?;
        self.namespace(&inodes)?;
        self.checksums(&extents, &file_extents, progress)?;
        self.compressed_extents(&file_extents)
    }

    fn rows(&self, name: &'static str) -> Result<Vec<crate::meta::Row>> {
        self.meta.scan_prefix(name, &[])
    }

    /// Decodes every record of a table keyed by one u64; undecodable ones are problems.
    fn decode_all<T>(
        &mut self,
        name: &'static str,
        decode: fn(&[u8]) -> Result<T>,
    ) -> Result<BTreeMap<u64, T>> {
        let mut records = BTreeMap::new();
        for (k, v) in self.rows(name)? {
            match decode(&v) {
                Ok(r) => {
                    records.insert(key_part(&k, 0)?, r);
                }
                Err(e) => self
                    .report
                    .problem(format!("{name} record {:?}: {e}", key_part(&k, 0))),
            }
        }
        Ok(records)
    }

    fn block_groups(&mut self) -> Result<BTreeMap<u64, BlockGroupRecord>> {
        self.decode_all(table::BLOCK_GROUPS, BlockGroupRecord::decode)
    }

    /// Extent records: in a block group, not overlapping; returns start -> record.
    fn extents(
        &mut self,
        groups: &BTreeMap<u64, BlockGroupRecord>,
    ) -> Result<BTreeMap<u64, ExtentRecord>> {
        let mut extents = BTreeMap::new();
        let mut prev_end = 0u64;
        let mut used: HashMap<u64, u64> = HashMap::new();
        for (k, v) in self.rows(table::EXTENTS)? {
            let start = key_part(&k, 0)?;
            let Ok(rec) = ExtentRecord::decode(&v) else {
                self.report
                    .problem(format!("extent {start}: undecodable record"));
                continue;
            };
            match group_containing(groups, start, rec.len) {
                Some(g) => *used.entry(g).or_default() += rec.len,
                None => self.report.problem(format!(
                    "extent {start}+{} lies outside every block group",
                    rec.len
                )),
            }
            if start < prev_end {
                self.report
                    .problem(format!("extent {start} overlaps the extent before it"));
            }
            if rec.len == 0 || rec.len % BLOCK_SIZE != 0 || start % BLOCK_SIZE != 0 {
                self.report
                    .problem(format!("extent {start}+{} is not block-aligned", rec.len));
            }
            prev_end = start + rec.len;
            extents.insert(start, rec);
        }
        self.report.extents = extents.len() as u64;
        for (logical, g) in groups {
            let counted = used.get(logical).copied().unwrap_or(0);
            if counted != g.used {
                self.report.problem(format!(
                    "block group {logical}: used {} recorded, {counted} in extents",
                    g.used
                ));
            }
        }
        Ok(extents)
    }

    /// Free space plus extents must tile every block group exactly.
    fn free_space(
        &mut self,
        groups: &BTreeMap<u64, BlockGroupRecord>,
        extents: &BTreeMap<u64, ExtentRecord>,
    ) -> Result<()> {
        let mut pieces: Vec<(u64, u64, &str)> =
            extents.iter().map(|(s, e)| (*s, e.len, "extent")).collect();
        for (k, v) in self.rows(table::FREE_SPACE)? {
            pieces.push((key_part(&k, 0)?, decode_len(&v)?, "free space"));
        }
        pieces.sort();
        let mut covered: HashMap<u64, u64> = HashMap::new();
        for w in pieces.windows(2) {
            let ((a, alen, akind), (b, _, bkind)) = (w[0], w[1]);
            if a + alen > b {
                self.report
                    .problem(format!("{akind} {a}+{alen} overlaps {bkind} at {b}"));
            }
        }
        for (start, len, kind) in &pieces {
            match group_containing(groups, *start, *len) {
                Some(g) => *covered.entry(g).or_default() += len,
                None if *kind == "free space" => self.report.problem(format!(
                    "free space {start}+{len} outside every block group"
                )),
                None => {}
            }
        }
        for (logical, g) in groups {
            let c = covered.get(logical).copied().unwrap_or(0);
            if c != g.length {
                self.report.problem(format!(
                    "block group {logical}: extents and free space cover {c} of {} bytes",
                    g.length
                ));
            }
        }
        Ok(())
    }

    fn inodes(&mut self) -> Result<BTreeMap<InodeId, InodeRecord>> {
        let mut inodes = BTreeMap::new();
        for (k, v) in self.rows(table::INODES)? {
            let id = InodeId::new(key_part(&k, 0)?, key_part(&k, 1)?);
            match InodeRecord::decode(&v) {
                Ok(i) => {
                    inodes.insert(id, i);
                }
                Err(e) => self.report.problem(format!("inode {}: {e}", id.ino)),
            }
        }
        self.report.inodes = inodes.len() as u64;
        Ok(inodes)
    }

    fn file_extents(
        &mut self,
        inodes: &BTreeMap<InodeId, InodeRecord>,
    ) -> Result<Vec<FileExtentRow>> {
        let mut rows: Vec<FileExtentRow> = Vec::new();
        for (k, v) in self.rows(table::FILE_EXTENTS)? {
            let owner = InodeId::new(key_part(&k, 0)?, key_part(&k, 1)?);
            let offset = key_part(&k, 2)?;
            let extent = match FileExtent::decode(&v) {
                Ok(e) => e,
                Err(e) => {
                    self.report.problem(format!(
                        "file extent of inode {} at {offset}: {e}",
                        owner.ino
                    ));
                    continue;
                }
            };
            match inodes.get(&owner) {
                None => self.report.problem(format!(
                    "file extent at {offset} of missing inode {}",
                    owner.ino
                )),
                Some(i)
                    if extent.kind != ExtentKind::Prealloc
                        && offset >= i.size.div_ceil(BLOCK_SIZE) * BLOCK_SIZE =>
                {
                    self.report.problem(format!(
                        "{}: extent at {offset} past the end ({})",
                        self.engine.path_of(owner),
                        i.size
                    ))
                }
                _ => {}
            }
            if let Some(prev) = rows.last() {
                if prev.owner == owner && prev.offset + prev.extent.len > offset {
                    self.report.problem(format!(
                        "{}: extents at {} and {offset} overlap",
                        self.engine.path_of(owner),
                        prev.offset
                    ));
                }
            }
            rows.push(FileExtentRow {
                owner,
                offset,
                extent,
            });
        }
        Ok(rows)
    }

    /// An inline extent is a file's only extent, at offset 0, and small.
    fn inline_extents(&mut self, files: &[FileExtentRow]) {
        let mut per_file: HashMap<InodeId, (usize, bool)> = HashMap::new();
        for row in files {
            let entry = per_file.entry(row.owner).or_default();
            entry.0 += 1;
            if row.extent.kind != ExtentKind::Inline {
                continue;
            }
            entry.1 = true;
            if row.offset != 0 || row.extent.len > crate::format::SYMLINK_MAX as u64 {
                self.report.problem(format!(
                    "{}: inline extent at {} of {} bytes",
                    self.engine.path_of(row.owner),
                    row.offset,
                    row.extent.len
                ));
            }
        }
        for (owner, (count, inline)) in per_file {
            if inline && count > 1 {
                self.report.problem(format!(
                    "{}: an inline extent beside other extents",
                    self.engine.path_of(owner)
                ));
            }
        }
    }

    /// Every extent's count equals the file extent records pointing at it.
    fn reference_counts(&mut self, extents: &BTreeMap<u64, ExtentRecord>, files: &[FileExtentRow]) {
        let mut refs: HashMap<u64, u64> = HashMap::new();
        for row in files.iter().filter(|r| r.extent.kind != ExtentKind::Inline) {
            *refs.entry(row.extent.disk_start).or_default() += 1;
            match extents.get(&row.extent.disk_start) {
                None => self.report.problem(format!(
                    "{}: offset {} points at unallocated extent {}",
                    self.engine.path_of(row.owner),
                    row.offset,
                    row.extent.disk_start
                )),
                Some(e) if e.len != row.extent.disk_len => self.report.problem(format!(
                    "{}: offset {} gives extent {} length {}, the extent has {}",
                    self.engine.path_of(row.owner),
                    row.offset,
                    row.extent.disk_start,
                    row.extent.disk_len,
                    e.len
                )),
                _ => {}
            }
        }
        for (start, e) in extents {
            let counted = refs.get(start).copied().unwrap_or(0);
            if counted != e.refs {
                self.report.problem(format!(
                    "extent {start}: {} references recorded, {counted} found",
                    e.refs
                ));
            }
        }
    }

    /// Records that share a data extent must agree on what its blocks hold. They may disagree
    /// only if one of them changed the shared blocks in place: a different compression or
    /// decoded length, or one block read as data through one record and as unwritten
    /// (zeros) through another, which a write into a shared preallocated block would leave.
    /// Byte-level disagreement between two records of written data cannot exist on disk: a
    /// block has one copy and one checksum, and every record reads that copy.
    fn shared_claims(&mut self, files: &[FileExtentRow]) {
        let mut claims: HashMap<u64, SharedExtent> = HashMap::new();
        for row in files.iter().filter(|r| r.extent.kind != ExtentKind::Inline) {
            let e = &row.extent;
            let shared = claims.entry(e.disk_start).or_insert_with(|| SharedExtent {
                first: row,
                blocks: Vec::new(),
            });
            let first = &shared.first.extent;
            if (first.compression, first.ram_len) != (e.compression, e.ram_len) {
                let (a, b) = (shared.first, row);
                self.report.problem(format!(
                    "extent {}: {} at offset {} and {} at offset {} disagree on its encoding",
                    e.disk_start,
                    self.engine.path_of(a.owner),
                    a.offset,
                    self.engine.path_of(b.owner),
                    b.offset
                ));
                continue;
            }
            if e.compression != Compression::None {
                continue;
            }
            if shared.blocks.is_empty() {
                shared.blocks = vec![None; e.ram_len.div_ceil(BLOCK_SIZE) as usize];
            }
            let first_block = (e.extent_offset / BLOCK_SIZE) as usize;
            let end_block = (e.extent_offset + e.len).div_ceil(BLOCK_SIZE) as usize;
            for index in first_block..end_block.min(shared.blocks.len()) {
                match shared.blocks[index] {
                    None => shared.blocks[index] = Some((e.kind, row)),
                    Some((kind, other)) if kind != e.kind => {
                        self.report.problem(format!(
                            "extent {} block {index}: {} at offset {} reads it as {}, {} at offset {} as {}",
                            e.disk_start,
                            self.engine.path_of(other.owner),
                            other.offset,
                            kind_name(kind),
                            self.engine.path_of(row.owner),
                            row.offset,
                            kind_name(e.kind)
                        ));
                        break;
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// Every file extent record has its back reference in `extent_refs`, and nothing else does.
    fn back_references(&mut self, files: &[FileExtentRow]) -> Result<()> {
        let mut expected: std::collections::HashSet<Vec<u8>> = files
            .iter()
            .filter(|r| r.extent.kind != ExtentKind::Inline)
            .map(|r| {
                extent_ref_key(r.extent.disk_start, r.owner.subvol, r.owner.ino, r.offset).to_vec()
            })
            .collect();
        for (k, _) in self.rows(table::EXTENT_REFS)? {
            if !expected.remove(&k) {
                self.report.problem(format!(
                    "back reference from extent {} to inode {} offset {} has no file extent",
                    key_part(&k, 0)?,
                    key_part(&k, 2)?,
                    key_part(&k, 3)?
                ));
            }
        }
        for k in expected {
            self.report.problem(format!(
                "file extent of inode {} at {} has no back reference from extent {}",
                key_part(&k, 2)?,
                key_part(&k, 3)?,
                key_part(&k, 0)?
            ));
        }
        Ok(())
    }

    /// Link counts, entries pointing at live inodes of the right kind, no orphans.
    fn namespace(&mut self, inodes: &BTreeMap<InodeId, InodeRecord>) -> Result<()> {
        let subvols = self.subvolumes()?;
        let mut names: HashMap<InodeId, u32> = HashMap::new();
        let mut subdirs: HashMap<InodeId, u32> = HashMap::new();
        let mut entries: HashMap<InodeId, u64> = HashMap::new();
        let mut dirents = std::collections::HashSet::new();
        for (k, v) in self.rows(table::DIR_ENTRIES)? {
            let dir = InodeId::new(key_part(&k, 0)?, key_part(&k, 1)?);
            let name = String::from_utf8_lossy(key_tail(&k, 2)?).into_owned();
            let Ok(rec) = DirEntryRecord::decode(&v) else {
                self.report.problem(format!(
                    "entry {name:?} in directory {}: undecodable",
                    dir.ino
                ));
                continue;
            };
            let child = InodeId::new(rec.subvol, rec.ino);
            *entries.entry(dir).or_default() += 1;
            if child.subvol == dir.subvol {
                dirents.insert((child, dir.ino, key_tail(&k, 2)?.to_vec()));
            } else {
                self.subvolume_entry(&subvols, dir, key_tail(&k, 2)?, child);
            }
            match (
                inodes.get(&dir).map(|i| i.kind()),
                inodes.get(&child).map(|i| i.kind()),
            ) {
                (Some(Ok(FileKind::Directory)), Some(Ok(kind))) if kind == rec.kind => {}
                (Some(Ok(FileKind::Directory)), Some(_)) => self.report.problem(format!(
                    "entry {name:?} in directory {}: type differs from inode {}",
                    dir.ino, child.ino
                )),
                (Some(Ok(FileKind::Directory)), None) => self.report.problem(format!(
                    "entry {name:?} in directory {} points at missing inode {}",
                    dir.ino, child.ino
                )),
                _ => self.report.problem(format!(
                    "entry {name:?} lives in {}, which is not a directory",
                    dir.ino
                )),
            }
            *names.entry(child).or_default() += 1;
            if rec.kind == FileKind::Directory {
                *subdirs.entry(dir).or_default() += 1;
            }
        }
        let mut refs = 0usize;
        for (k, _) in self.rows(table::INODE_REFS)? {
            let child = InodeId::new(key_part(&k, 0)?, key_part(&k, 1)?);
            refs += 1;
            if !dirents.contains(&(child, key_part(&k, 2)?, key_tail(&k, 3)?.to_vec())) {
                self.report.problem(format!(
                    "back reference of inode {} has no directory entry",
                    child.ino
                ));
            }
        }
        if refs != dirents.len() {
            self.report.problem(format!(
                "{} directory entries but {refs} back references",
                dirents.len()
            ));
        }
        let orphans = self.orphans(inodes)?;
        for (id, inode) in inodes {
            let n = names.get(id).copied().unwrap_or(0);
            // Only the top subvolume's root has no name.
            let is_root =
                id.ino == ROOT_INO && subvols.get(&id.subvol).is_some_and(|s| s.parent == 0);
            if subvols.get(&id.subvol).is_none_or(|s| id.ino >= s.next_ino) {
                self.report.problem(format!(
                    "inode {} of subvolume {} is beyond its subvolume's numbering",
                    id.ino, id.subvol
                ));
            }
            let kind = inode.kind()?;
            if kind == FileKind::Directory && orphans.contains(id) {
                // An open directory removed while open: empty, nameless, nlink 0.
                self.report.directories += 1;
                if n != 0 || entries.get(id).is_some_and(|e| *e > 0) {
                    self.report.problem(format!(
                        "orphan directory inode {} has names or entries",
                        id.ino
                    ));
                }
            } else if kind == FileKind::Directory {
                self.report.directories += 1;
                let want = 2 + subdirs.get(id).copied().unwrap_or(0);
                if inode.nlink != want {
                    self.report.problem(format!(
                        "directory {}: nlink {}, expected {want}",
                        self.engine.path_of(*id),
                        inode.nlink
                    ));
                }
                if n != u32::from(!is_root) {
                    self.report
                        .problem(format!("directory inode {} has {n} names", id.ino));
                }
                if inode.size != entries.get(id).copied().unwrap_or(0) {
                    self.report.problem(format!(
                        "directory {}: size {} but {} entries",
                        self.engine.path_of(*id),
                        inode.size,
                        entries.get(id).copied().unwrap_or(0)
                    ));
                }
            } else if n == 0 && !orphans.contains(id) {
                self.report.problem(format!(
                    "inode {} is an orphan: no directory entry names it",
                    id.ino
                ));
            } else if inode.nlink != n {
                self.report.problem(format!(
                    "{}: nlink {}, but {n} names",
                    self.engine.path_of(*id),
                    inode.nlink
                ));
            }
        }
        Ok(())
    }

    /// The open-unlinked files the `orphans` table lists: each an existing inode with no link.
    fn orphans(
        &mut self,
        inodes: &BTreeMap<InodeId, InodeRecord>,
    ) -> Result<std::collections::HashSet<InodeId>> {
        let mut listed = std::collections::HashSet::new();
        for (k, _) in self.rows(table::ORPHANS)? {
            let id = InodeId::new(key_part(&k, 0)?, key_part(&k, 1)?);
            match inodes.get(&id) {
                Some(inode) if inode.nlink == 0 => {
                    listed.insert(id);
                }
                Some(inode) => self
                    .report
                    .problem(format!("orphan inode {} has nlink {}", id.ino, inode.nlink)),
                None => self
                    .report
                    .problem(format!("orphan inode {} does not exist", id.ino)),
            }
        }
        if !listed.is_empty() {
            self.report.notes.push(format!(
                "{} open-unlinked file(s) left by a crash: freed at the next read-write open",
                listed.len()
            ));
        }
        Ok(listed)
    }

    /// An entry naming another subvolume must name its root, as its record says.
    fn subvolume_entry(
        &mut self,
        subvols: &BTreeMap<u64, SubvolumeRecord>,
        dir: InodeId,
        name: &[u8],
        child: InodeId,
    ) {
        let matches = subvols.get(&child.subvol).is_some_and(|s| {
            child.ino == s.root_ino
                && s.parent == dir.subvol
                && s.parent_dir == dir.ino
                && s.name == name
        });
        if !matches {
            self.report.problem(format!(
                "entry {:?} in directory {} names subvolume {} inode {}, which does not place itself there",
                String::from_utf8_lossy(name),
                dir.ino,
                child.subvol,
                child.ino
            ));
        }
    }

    fn subvolumes(&mut self) -> Result<BTreeMap<u64, SubvolumeRecord>> {
        self.decode_all(table::SUBVOLUMES, SubvolumeRecord::decode)
    }

    /// Reads every data block and checks it against its checksum.
    fn checksums(
        &mut self,
        extents: &BTreeMap<u64, ExtentRecord>,
        files: &[FileExtentRow],
        progress: Progress<'_>,
    ) -> Result<()> {
        let mut sums: HashMap<u64, Vec<u32>> = HashMap::new();
        for (k, v) in self.rows(table::CHECKSUMS)? {
            let start = key_part(&k, 0)?;
            match (decode_checksums(&v), extents.get(&start)) {
                (Ok(s), Some(_)) => {
                    sums.insert(start, s);
                }
                (Err(e), _) => self
                    .report
                    .problem(format!("checksums of extent {start}: {e}")),
                (_, None) => self
                    .report
                    .problem(format!("checksums for unallocated extent {start}")),
            }
        }
        let written = written_blocks(extents, files);
        let total: u64 = extents.values().map(|e| e.len).sum();
        let mut done = 0u64;
        for (start, e) in extents {
            let nodatasum = e.flags & ExtentRecord::FLAG_NODATASUM != 0;
            match sums.get(start) {
                None if !nodatasum => self
                    .report
                    .problem(format!("extent {start} has no checksums")),
                Some(_) if nodatasum => self
                    .report
                    .problem(format!("NODATASUM extent {start} has checksums")),
                Some(s) if s.len() as u64 != e.len / BLOCK_SIZE => self.report.problem(format!(
                    "extent {start}: {} checksums for {} blocks",
                    s.len(),
                    e.len / BLOCK_SIZE
                )),
                Some(s) => {
                    let mask = written.get(start).map(Vec::as_slice).unwrap_or(&[]);
                    self.verify_extent(*start, s, mask, files)?
                }
                None => {}
            }
            done += e.len;
            progress(done, total);
        }
        Ok(())
    }

    /// Every compressed extent holds one zstd frame that decodes to its recorded length.
    fn compressed_extents(&mut self, files: &[FileExtentRow]) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for row in files
            .iter()
            .filter(|r| r.extent.compression != Compression::None)
        {
            if !seen.insert(row.extent.disk_start) {
                continue;
            }
            let mut stored = AlignedBuf::zeroed(row.extent.disk_len as usize);
            let decoded = self
                .engine
                .device_read(row.extent.disk_start, &mut stored)
                .and_then(|()| crate::fs::decompress_extent(&stored, row.extent.ram_len));
            if let Err(e) = decoded {
                self.report.problem(format!(
                    "{} at offset {}: {}",
                    self.engine.path_of(row.owner),
                    row.offset,
                    e.reason()
                ));
            }
        }
        Ok(())
    }

    /// Reads the written blocks of a checksummed extent (`mask`) and checks each.
    fn verify_extent(
        &mut self,
        start: u64,
        sums: &[u32],
        mask: &[bool],
        files: &[FileExtentRow],
    ) -> Result<()> {
        const PIECE: usize = 1024;
        for (piece, flags) in mask.chunks(PIECE).enumerate() {
            if !flags.iter().any(|w| *w) {
                continue;
            }
            let at = (piece * PIECE) as u64 * BLOCK_SIZE;
            let mut buf = AlignedBuf::zeroed(flags.len() * BLOCK_SIZE as usize);
            if let Err(e) = self.engine.device_read(start + at, &mut buf) {
                self.report
                    .problem(format!("extent {start}: unreadable at {at}: {e}"));
                return Ok(());
            }
            for (i, block) in buf
                .chunks(BLOCK_SIZE as usize)
                .enumerate()
                .filter(|(i, _)| flags[*i])
            {
                let index = piece * PIECE + i;
                self.report.data_bytes_verified += BLOCK_SIZE;
                if crc32c::crc32c(block) != sums[index] {
                    let whose = locate(files, start, index as u64 * BLOCK_SIZE)
                        .map(|(owner, offset)| {
                            format!(" ({} at offset {offset})", self.engine.path_of(owner))
                        })
                        .unwrap_or_default();
                    self.report.problem(format!(
                        "data checksum mismatch in extent {start} block {index}{whose} (data address {})",
                        start + index as u64 * BLOCK_SIZE
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What the records seen so far say of one data extent: the first record, and for an
/// uncompressed extent, the kind each block was first read as and by which record.
struct SharedExtent<'r> {
    first: &'r FileExtentRow,
    blocks: Vec<Option<(ExtentKind, &'r FileExtentRow)>>,
}

fn kind_name(kind: ExtentKind) -> &'static str {
    match kind {
        ExtentKind::Regular => "data",
        ExtentKind::Prealloc => "unwritten",
        ExtentKind::Inline => "inline",
    }
}

/// For each extent, which of its blocks hold written data (are mapped by a regular record).
fn written_blocks(
    extents: &BTreeMap<u64, ExtentRecord>,
    files: &[FileExtentRow],
) -> HashMap<u64, Vec<bool>> {
    let mut written: HashMap<u64, Vec<bool>> = HashMap::new();
    for row in files
        .iter()
        .filter(|r| r.extent.kind == ExtentKind::Regular)
    {
        let Some(e) = extents.get(&row.extent.disk_start) else {
            continue;
        };
        let mask = written
            .entry(row.extent.disk_start)
            .or_insert_with(|| vec![false; (e.len / BLOCK_SIZE) as usize]);
        let first = (row.extent.extent_offset / BLOCK_SIZE) as usize;
        let last = (row.extent.extent_offset + row.extent.len).div_ceil(BLOCK_SIZE) as usize;
        for w in mask.iter_mut().take(last).skip(first) {
            *w = true;
        }
    }
    written
}

/// A file and offset whose data is at `within` of extent `start`.
fn locate(files: &[FileExtentRow], start: u64, within: u64) -> Option<(InodeId, u64)> {
    files
        .iter()
        .find(|r| {
            r.extent.disk_start == start
                && r.extent.kind == ExtentKind::Regular
                && (r.extent.extent_offset..r.extent.extent_offset + r.extent.len).contains(&within)
        })
        .map(|r| (r.owner, r.offset + (within - r.extent.extent_offset)))
}

/// The block group wholly containing `[start, start + len)`.
fn group_containing(groups: &BTreeMap<u64, BlockGroupRecord>, start: u64, len: u64) -> Option<u64> {
    let (logical, g) = groups.range(..=start).next_back()?;
    (start + len <= logical + g.length).then_some(*logical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemoryDevice;
    use crate::format::key3;
    use crate::fs::{CreateAttrs, FallocateMode, Filesystem, MkfsOptions, OpenOptions};

    /// Two files sharing one preallocated extent, the second record rewritten by `tamper`
    /// and committed: the problems fsck then finds.
    fn problems_after(tamper: impl FnOnce(&mut FileExtent)) -> Vec<String> {
        let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(64 << 20));
        Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
        let fs = Filesystem::open(dev.clone(), &OpenOptions::default()).unwrap();
        let attrs = CreateAttrs::with_mode(0o644);
        let a = fs
            .create(fs.root(), b"a", FileKind::Regular, attrs)
            .unwrap();
        let b = fs
            .create(fs.root(), b"b", FileKind::Regular, attrs)
            .unwrap();
        let allocate = FallocateMode::Allocate { keep_size: false };
        fs.fallocate(a, allocate, 0, 64 << 10).unwrap();
        fs.clone_file(a, b).unwrap();
        fs.with(|e| {
            let key = key3(b.subvol, b.ino, 0);
            let meta = e.meta();
            let mut record = FileExtent::decode(&meta.get(table::FILE_EXTENTS, &key)?.unwrap())?;
            tamper(&mut record);
            meta.put(table::FILE_EXTENTS, &key, &record.encode())
        })
        .unwrap();
        fs.unmount().unwrap();
        check(dev, &mut |_, _| {}).problems
    }

    #[test]
    fn sharing_records_that_agree_are_clean() {
        assert_eq!(problems_after(|_| {}), Vec::<String>::new());
    }

    #[test]
    fn a_shared_block_read_as_data_by_one_file_and_as_zeros_by_another_is_found() {
        let problems = problems_after(|r| r.kind = ExtentKind::Regular);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("/a at offset 0 reads it as unwritten, /b at offset 0 as data")),
            "{problems:?}"
        );
    }

    #[test]
    fn records_disagreeing_on_a_shared_extent_encoding_are_found() {
        let problems = problems_after(|r| r.compression = Compression::Zstd);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("disagree on its encoding")),
            "{problems:?}"
        );
    }
}
