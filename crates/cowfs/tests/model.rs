//! Model-based property tests: random sequences of namespace and data operations run on cowfs
//! and on a plain in-memory model; every result (value or errno) and the whole tree are
//! compared after every step, across syncs and close/reopen, and fsck must pass at the end.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use cowfs::device::{AlignedBuf, BlockDevice};
use cowfs::format::FileKind;
use cowfs::{CreateAttrs, Errno, Filesystem, RenameFlags, SetAttr};
use proptest::prelude::*;

/// The names operations pick from; /d always exists, /e comes and goes.
const PATHS: [&str; 6] = ["/a", "/b", "/c", "/d/a", "/d/b", "/e/a"];
const MAX_OFFSET: u64 = 300_000;

#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    Write {
        path: usize,
        offset: u64,
        len: usize,
        byte: u8,
    },
    DirectWrite {
        path: usize,
        block: u64,
        blocks: usize,
        byte: u8,
    },
    Truncate {
        path: usize,
        size: u64,
    },
    Unlink(usize),
    Rename(usize, usize),
    Link(usize, usize),
    MakeE,
    RemoveE,
    Sync,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let path = 0..PATHS.len();
    prop_oneof![
        3 => path.clone().prop_map(Op::Create),
        6 => (path.clone(), 0..MAX_OFFSET, 0..20_000usize, any::<u8>()).prop_map(|(path, offset, len, byte)| Op::Write { path, offset, len, byte }),
        2 => (path.clone(), 0..70u64, 1..8usize, any::<u8>()).prop_map(|(path, block, blocks, byte)| Op::DirectWrite { path, block, blocks, byte }),
        2 => (path.clone(), 0..MAX_OFFSET).prop_map(|(path, size)| Op::Truncate { path, size }),
        2 => path.clone().prop_map(Op::Unlink),
        2 => (path.clone(), path.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (path.clone(), path).prop_map(|(a, b)| Op::Link(a, b)),
        1 => Just(Op::MakeE),
        1 => Just(Op::RemoveE),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

/// The reference: names point at file numbers (hard links share one), files are byte vectors.
#[derive(Default)]
struct Model {
    names: BTreeMap<&'static str, usize>,
    files: Vec<Vec<u8>>,
    e_exists: bool,
}

type Outcome = Result<(), Errno>;

impl Model {
    fn parent_exists(&self, path: &str) -> bool {
        !path.starts_with("/e/") || self.e_exists
    }

    fn file(&self, path: &'static str) -> Result<usize, Errno> {
        if !self.parent_exists(path) {
            return Err(Errno::NOENT);
        }
        self.names.get(path).copied().ok_or(Errno::NOENT)
    }

    fn write(&mut self, path: &'static str, offset: u64, data: &[u8]) -> Outcome {
        let f = self.file(path)?;
        if data.is_empty() {
            return Ok(());
        }
        let content = &mut self.files[f];
        let end = offset as usize + data.len();
        if content.len() < end {
            content.resize(end, 0);
        }
        content[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Outcome {
        match *op {
            Op::Create(p) => {
                let path = PATHS[p];
                if !self.parent_exists(path) {
                    return Err(Errno::NOENT);
                }
                if self.names.contains_key(path) {
                    return Err(Errno::EXIST);
                }
                self.files.push(vec![]);
                self.names.insert(path, self.files.len() - 1);
                Ok(())
            }
            Op::Write {
                path,
                offset,
                len,
                byte,
            } => self.write(PATHS[path], offset, &vec![byte; len]),
            Op::DirectWrite {
                path,
                block,
                blocks,
                byte,
            } => self.write(PATHS[path], block * 4096, &vec![byte; blocks * 4096]),
            Op::Truncate { path, size } => {
                let f = self.file(PATHS[path])?;
                self.files[f].resize(size as usize, 0);
                Ok(())
            }
            Op::Unlink(p) => {
                self.file(PATHS[p])?;
                self.names.remove(PATHS[p]);
                Ok(())
            }
            Op::Rename(a, b) => {
                let f = self.file(PATHS[a])?;
                if !self.parent_exists(PATHS[b]) {
                    return Err(Errno::NOENT);
                }
                if self.names.get(PATHS[b]) != Some(&f) {
                    self.names.remove(PATHS[a]);
                    self.names.insert(PATHS[b], f);
                }
                Ok(())
            }
            Op::Link(a, b) => {
                let f = self.file(PATHS[a])?;
                if !self.parent_exists(PATHS[b]) {
                    return Err(Errno::NOENT);
                }
                if self.names.contains_key(PATHS[b]) {
                    return Err(Errno::EXIST);
                }
                self.names.insert(PATHS[b], f);
                Ok(())
            }
            Op::MakeE if self.e_exists => Err(Errno::EXIST),
            Op::MakeE => {
                self.e_exists = true;
                Ok(())
            }
            Op::RemoveE if !self.e_exists => Err(Errno::NOENT),
            Op::RemoveE if self.names.keys().any(|p| p.starts_with("/e/")) => Err(Errno::NOTEMPTY),
            Op::RemoveE => {
                self.e_exists = false;
                Ok(())
            }
            Op::Sync | Op::Reopen => Ok(()),
        }
    }

    fn nlink(&self, f: usize) -> u32 {
        self.names.values().filter(|g| **g == f).count() as u32
    }
}

struct Subject {
    dev: Arc<dyn BlockDevice>,
    fs: Option<Filesystem>,
}

impl Subject {
    fn fs(&self) -> &Filesystem {
        self.fs.as_ref().unwrap()
    }

    fn apply(&mut self, op: &Op) -> Outcome {
        let errno = |e: cowfs::Error| e.errno();
        let fs = self.fs();
        match *op {
            Op::Create(p) => {
                let (dir, name) = fs.resolve_parent(PATHS[p]).map_err(errno)?;
                fs.create(
                    dir,
                    name.as_bytes(),
                    FileKind::Regular,
                    CreateAttrs::with_mode(0o644),
                )
                .map(drop)
                .map_err(errno)
            }
            Op::Write {
                path,
                offset,
                len,
                byte,
            } => {
                let id = fs.resolve(PATHS[path]).map_err(errno)?;
                fs.write(id, offset, &vec![byte; len])
                    .map(drop)
                    .map_err(errno)
            }
            Op::DirectWrite {
                path,
                block,
                blocks,
                byte,
            } => {
                let id = fs.resolve(PATHS[path]).map_err(errno)?;
                let data = AlignedBuf::from_slice(&vec![byte; blocks * 4096]);
                fs.write_direct(id, block * 4096, &data)
                    .map(drop)
                    .map_err(errno)
            }
            Op::Truncate { path, size } => {
                let id = fs.resolve(PATHS[path]).map_err(errno)?;
                fs.setattr(
                    id,
                    &SetAttr {
                        size: Some(size),
                        ..SetAttr::default()
                    },
                )
                .map(drop)
                .map_err(errno)
            }
            Op::Unlink(p) => {
                let (dir, name) = fs.resolve_parent(PATHS[p]).map_err(errno)?;
                fs.unlink(dir, name.as_bytes()).map_err(errno)
            }
            Op::Rename(a, b) => {
                let (fd, fname) = fs.resolve_parent(PATHS[a]).map_err(errno)?;
                let (td, tname) = fs.resolve_parent(PATHS[b]).map_err(errno)?;
                fs.rename(
                    fd,
                    fname.as_bytes(),
                    td,
                    tname.as_bytes(),
                    RenameFlags::default(),
                )
                .map_err(errno)
            }
            Op::Link(a, b) => {
                let id = fs.resolve(PATHS[a]).map_err(errno)?;
                let (dir, name) = fs.resolve_parent(PATHS[b]).map_err(errno)?;
                fs.link(id, dir, name.as_bytes()).map_err(errno)
            }
            Op::MakeE => fs
                .create(
                    fs.root(),
                    b"e",
                    FileKind::Directory,
                    CreateAttrs::with_mode(0o755),
                )
                .map(drop)
                .map_err(errno),
            Op::RemoveE => fs.rmdir(fs.root(), b"e").map_err(errno),
            Op::Sync => fs.sync().map_err(errno),
            Op::Reopen => {
                self.fs.take().unwrap().unmount().map_err(errno)?;
                self.fs = Some(Filesystem::open(self.dev.clone(), &no_timer()).map_err(errno)?);
                Ok(())
            }
        }
    }
}

fn compare(model: &Model, subject: &Subject, step: usize) -> Result<(), TestCaseError> {
    let fs = subject.fs();
    for path in PATHS {
        match (model.file(path), fs.resolve(path)) {
            (Err(_), Err(e)) => prop_assert_eq!(e.errno(), Errno::NOENT),
            (Ok(f), Ok(id)) => {
                let attr = fs.getattr(id).unwrap();
                prop_assert_eq!(
                    attr.nlink,
                    model.nlink(f),
                    "nlink of {} after step {}",
                    path,
                    step
                );
                let content = read_all(fs, id);
                prop_assert!(
                    content == model.files[f],
                    "content of {} after step {}",
                    path,
                    step
                );
            }
            (m, s) => prop_assert!(
                false,
                "{} exists in model: {}, in cowfs: {} (step {})",
                path,
                m.is_ok(),
                s.is_ok(),
                step
            ),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn cowfs_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let (dev, fs) = memory_fs(64 * MIB);
        fs.create(fs.root(), b"d", FileKind::Directory, CreateAttrs::with_mode(0o755)).unwrap();
        let mut model = Model::default();
        let mut subject = Subject { dev: dev.clone(), fs: Some(fs) };
        for (step, op) in ops.iter().enumerate() {
            let want = model.apply(op);
            let got = subject.apply(op);
            prop_assert_eq!(got, want, "step {}: {:?}", step, op);
            compare(&model, &subject, step)?;
        }
        subject.fs.take().unwrap().unmount().unwrap();
        let report = cowfs::fsck::check(dev.clone(), &mut |_, _| {});
        prop_assert!(report.is_clean(), "fsck: {:?}", report.problems);
        let fs = Filesystem::open(dev, &no_timer()).unwrap();
        let subject = Subject { dev: Arc::new(cowfs::device::MemoryDevice::new(0)), fs: Some(fs) };
        compare(&model, &subject, usize::MAX)?;
    }
}
