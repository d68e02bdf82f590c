//! The checker. It opens the image read-only (writes go to a memory overlay, so fsck never
//! changes the image), and proves the invariants the engine relies on: valid superblock
//! copies, a metadata store whose every page checksum holds, every record decodable, extent
//! reference counts exact, no extent overlapping another or free space, free space equal to
//! the complement of what is allocated, a well-formed namespace, and every data checksum.

use std::sync::Arc;

use crate::device::BlockDevice;
use crate::error::Result;
use crate::format::{FileExtent, Key, Value};
use crate::fs::engine::Engine;
use crate::fs::{scan_superblocks, InodeId};
use crate::meta::{Meta, TableDef};

mod data;
mod space;
mod tree;

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

    /// Every row of a table; a row that does not decode is a problem, named by its table and
    /// key, and left out.
    fn rows<K: Key, V: Value>(&mut self, def: TableDef<K, V>) -> Result<Vec<(K, V)>> {
        let table = self.meta.table(def);
        let mut rows = Vec::new();
        for row in table.all_checked()? {
            match row {
                Ok(row) => rows.push(row),
                Err((key, e)) => {
                    self.report
                        .problem(format!("{} row {}: {e}", table.name(), key_text(&key)))
                }
            }
        }
        Ok(rows)
    }
}

/// A raw key as people read keys: its big-endian u64 parts, then any name after them.
fn key_text(key: &[u8]) -> String {
    let parts = key.len() / 8;
    let mut text: Vec<String> = (0..parts)
        .map(|i| u64::from_be_bytes(key[i * 8..i * 8 + 8].try_into().unwrap()).to_string())
        .collect();
    if key.len() > parts * 8 {
        text.push(format!("{:?}", String::from_utf8_lossy(&key[parts * 8..])));
    }
    text.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemoryDevice;
    use crate::format::{Compression, ExtentKind, FileExtent, FileExtentKey, FileKind};
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
            let (key, records) = (FileExtentKey::new(b, 0), e.meta().file_extents());
            let mut record = records.get(&key)?.unwrap();
            tamper(&mut record);
            records.put(&key, &record)
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
