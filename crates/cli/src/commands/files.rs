//! The offline file commands: each opens the image, does one thing, and closes it.

use crate::size;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::ExitCode;

use cowfs::format::{ExtentKind, FileKind};
use cowfs::{
    Attr, CreateAttrs, Errno, Error, FallocateMode, Filesystem, InodeId, RenameFlags, SetAttr,
};

use crate::CliResult;

use std::path::PathBuf;

use crate::output::progress;
use crate::target::{done, open};

/// List a directory
#[derive(clap::Args)]
pub struct Ls {
    pub image: PathBuf,
    #[arg(default_value = "/")]
    pub path: String,
    /// Long listing: mode, links, owner, size, time
    #[arg(short = 'l')]
    pub long: bool,
}

impl Ls {
    pub fn run(self) -> CliResult {
        let Ls { image, path, long } = self;
        ls(&open(&image, true)?, &path, long)
    }
}

/// Show a file's attributes
#[derive(clap::Args)]
pub struct Stat {
    pub image: PathBuf,
    pub path: String,
}

impl Stat {
    pub fn run(self) -> CliResult {
        let Stat { image, path } = self;
        stat(&open(&image, true)?, &path)
    }
}

/// Make a directory
#[derive(clap::Args)]
pub struct Mkdir {
    pub image: PathBuf,
    pub path: String,
    /// Make parents as needed; no error if it exists
    #[arg(short = 'p')]
    pub parents: bool,
}

impl Mkdir {
    pub fn run(self) -> CliResult {
        let Mkdir {
            image,
            path,
            parents,
        } = self;
        done(&image, |fs| mkdir(fs, &path, parents))
    }
}

/// Copy a host file into the image
#[derive(clap::Args)]
pub struct Put {
    pub image: PathBuf,
    pub host_file: PathBuf,
    pub path: String,
}

impl Put {
    pub fn run(self) -> CliResult {
        let Put {
            image,
            host_file,
            path,
        } = self;
        done(&image, |fs| put(fs, &host_file, &path))
    }
}

/// Copy a file out of the image to the host
#[derive(clap::Args)]
pub struct Get {
    pub image: PathBuf,
    pub path: String,
    pub host_file: PathBuf,
}

impl Get {
    pub fn run(self) -> CliResult {
        let Get {
            image,
            path,
            host_file,
        } = self;
        get(&open(&image, true)?, &path, &host_file)
    }
}

/// Print a file's contents
#[derive(clap::Args)]
pub struct Cat {
    pub image: PathBuf,
    pub path: String,
}

impl Cat {
    pub fn run(self) -> CliResult {
        let Cat { image, path } = self;
        cat(&open(&image, true)?, &path)
    }
}

/// Remove a file, symlink or (with -r) a directory tree
#[derive(clap::Args)]
pub struct Rm {
    pub image: PathBuf,
    pub path: String,
    #[arg(short = 'r')]
    pub recursive: bool,
}

impl Rm {
    pub fn run(self) -> CliResult {
        let Rm {
            image,
            path,
            recursive,
        } = self;
        done(&image, |fs| rm(fs, &path, recursive))
    }
}

/// Rename or move
#[derive(clap::Args)]
pub struct Mv {
    pub image: PathBuf,
    pub from: String,
    pub to: String,
}

impl Mv {
    pub fn run(self) -> CliResult {
        let Mv { image, from, to } = self;
        done(&image, |fs| mv(fs, &from, &to))
    }
}

/// Make a hard link, or with -s a symbolic link
#[derive(clap::Args)]
pub struct Ln {
    pub image: PathBuf,
    pub target: String,
    pub link: String,
    #[arg(short = 's')]
    pub symbolic: bool,
}

impl Ln {
    pub fn run(self) -> CliResult {
        let Ln {
            image,
            target,
            link,
            symbolic,
        } = self;
        done(&image, |fs| ln(fs, &target, &link, symbolic))
    }
}

/// Set a file's size
#[derive(clap::Args)]
pub struct Truncate {
    pub image: PathBuf,
    pub path: String,
    #[arg(value_parser = size::parse)]
    pub size: u64,
}

impl Truncate {
    pub fn run(self) -> CliResult {
        let Truncate { image, path, size } = self;
        done(&image, |fs| truncate(fs, &path, size))
    }
}

/// Preallocate, punch a hole in, or zero part of a file (as util-linux fallocate)
#[derive(clap::Args)]
pub struct Fallocate {
    pub image: PathBuf,
    pub path: String,
    #[arg(value_parser = size::parse)]
    pub offset: u64,
    #[arg(value_parser = size::parse)]
    pub length: u64,
    /// Do not change the file size
    #[arg(short = 'n', long)]
    pub keep_size: bool,
    /// Deallocate the range (implies --keep-size)
    #[arg(short = 'p', long, conflicts_with = "zero_range")]
    pub punch_hole: bool,
    /// Make the range read as zeros, keeping it allocated
    #[arg(short = 'z', long)]
    pub zero_range: bool,
}

impl Fallocate {
    pub fn run(self) -> CliResult {
        let Fallocate {
            image,
            path,
            offset,
            length,
            keep_size,
            punch_hole,
            zero_range,
        } = self;
        let mode = fallocate_mode(keep_size, punch_hole, zero_range);
        done(&image, |fs| {
            fs.fallocate(open_or_create(fs, &path)?, mode, offset, length)
        })
    }
}

/// Copy a file inside the image, sharing its extents where it can (cp --reflink=auto)
#[derive(clap::Args)]
pub struct Cp {
    pub image: PathBuf,
    pub src: String,
    pub dst: String,
}

impl Cp {
    pub fn run(self) -> CliResult {
        let Cp { image, src, dst } = self;
        done(&image, |fs| {
            let (from, to) = (fs.resolve(&src)?, open_or_create(fs, &dst)?);
            fs.setattr(
                to,
                &cowfs::SetAttr {
                    size: Some(0),
                    ..cowfs::SetAttr::default()
                },
            )?;
            fs.copy_file_range(from, 0, to, 0, fs.getattr(from)?.size)
                .map(drop)
        })
    }
}

const COPY_CHUNK: usize = 1 << 20;

fn mode_string(a: &Attr) -> String {
    let t = match a.kind {
        FileKind::Directory => 'd',
        FileKind::Symlink => 'l',
        FileKind::Regular => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (a.perm >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

pub fn ls(fs: &Filesystem, path: &str, long: bool) -> CliResult {
    let dir = fs.resolve(path)?;
    if fs.getattr(dir)?.kind != FileKind::Directory {
        print_entry(fs, dir, path, long)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut after: Option<Vec<u8>> = None;
    loop {
        let batch = fs.readdir(dir, after.as_deref(), 1024)?;
        let Some(last) = batch.last() else { break };
        after = Some(last.name.clone());
        for e in &batch {
            print_entry(fs, e.id, &String::from_utf8_lossy(&e.name), long)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_entry(fs: &Filesystem, id: InodeId, name: &str, long: bool) -> cowfs::Result<()> {
    if !long {
        println!("{name}");
        return Ok(());
    }
    let a = fs.getattr(id)?;
    let target = if a.kind == FileKind::Symlink {
        format!(" -> {}", String::from_utf8_lossy(&fs.readlink(id)?))
    } else {
        String::new()
    };
    println!(
        "{} {:>3} {:>5} {:>5} {:>12} {:>12} {name}{target}",
        mode_string(&a),
        a.nlink,
        a.uid,
        a.gid,
        a.size,
        a.mtime.sec
    );
    Ok(())
}

pub fn stat(fs: &Filesystem, path: &str) -> CliResult {
    let a = fs.getattr(fs.resolve(path)?)?;
    println!("  File: {path}");
    println!(
        "  Size: {:<12} Allocated: {:<12} Type: {:?}",
        a.size, a.allocated, a.kind
    );
    println!(
        " Inode: {:<12} Subvolume: {:<8} Links: {}",
        a.id.ino, a.id.subvol, a.nlink
    );
    println!(
        "Access: ({:04o}/{})  Uid: {}  Gid: {}",
        a.perm,
        mode_string(&a),
        a.uid,
        a.gid
    );
    println!(" Flags: {:#010x}  Generation: {}", a.flags, a.generation);
    for (name, t) in [
        ("Access", a.atime),
        ("Modify", a.mtime),
        ("Change", a.ctime),
        (" Birth", a.crtime),
    ] {
        println!("{name}: {}.{:09}", t.sec, t.nsec);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn mkdir(fs: &Filesystem, path: &str, parents: bool) -> cowfs::Result<()> {
    if !parents {
        let (dir, name) = fs.resolve_parent(path)?;
        fs.create(
            dir,
            name.as_bytes(),
            FileKind::Directory,
            CreateAttrs::with_mode(0o755),
        )?;
        return Ok(());
    }
    let mut cur = fs.root();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        cur = match fs.lookup(cur, part.as_bytes()) {
            Ok(id) => id,
            Err(e) if e.errno() == Errno::NOENT => fs.create(
                cur,
                part.as_bytes(),
                FileKind::Directory,
                CreateAttrs::with_mode(0o755),
            )?,
            Err(e) => return Err(e),
        };
    }
    Ok(())
}

/// The file at `path`, created empty when missing.
pub fn open_or_create(fs: &Filesystem, path: &str) -> cowfs::Result<InodeId> {
    match fs.resolve(path) {
        Ok(id) => Ok(id),
        Err(e) if e.errno() == Errno::NOENT => {
            let (dir, name) = fs.resolve_parent(path)?;
            fs.create(
                dir,
                name.as_bytes(),
                FileKind::Regular,
                CreateAttrs::with_mode(0o644),
            )
        }
        Err(e) => Err(e),
    }
}

pub fn put(fs: &Filesystem, host: &Path, path: &str) -> cowfs::Result<()> {
    let host_err = |e: std::io::Error| Error::io(&host.display().to_string(), &e);
    let mut src = File::open(host).map_err(host_err)?;
    let len = src.metadata().map_err(host_err)?.len();
    let id = open_or_create(fs, path)?;
    fs.setattr(
        id,
        &SetAttr {
            size: Some(0),
            ..SetAttr::default()
        },
    )?;
    let bar = progress(len, "put");
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut offset = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(host_err)?;
        if n == 0 {
            break;
        }
        fs.write(id, offset, &buf[..n])?;
        offset += n as u64;
        bar.set_position(offset);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Copies a file out to the host. Only the ranges that hold data are read and written: holes
/// and preallocated ranges stay holes in the copy, so a huge sparse file costs its data only.
pub fn get(fs: &Filesystem, path: &str, host: &Path) -> CliResult {
    let id = fs.resolve(path)?;
    let size = fs.getattr(id)?.size;
    let dst = File::create(host).map_err(|e| format!("{}: {e}", host.display()))?;
    let bar = progress(size, "get");
    let mut buf = vec![0u8; COPY_CHUNK];
    for (start, end) in data_ranges(fs, id, size)? {
        let mut at = start;
        while at < end {
            let want = ((end - at) as usize).min(buf.len());
            let n = fs.read(id, at, &mut buf[..want])?;
            if n == 0 {
                break;
            }
            dst.write_all_at(&buf[..n], at)?;
            at += n as u64;
            bar.inc(n as u64);
        }
    }
    dst.set_len(size)?;
    bar.finish_and_clear();
    Ok(ExitCode::SUCCESS)
}

/// The byte ranges of a file below `size` that hold written data, merged where they touch.
fn data_ranges(fs: &Filesystem, id: InodeId, size: u64) -> cowfs::Result<Vec<(u64, u64)>> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let written = fs.extent_map(id)?;
    let written = written.iter().filter(|m| m.kind != ExtentKind::Prealloc);
    for m in written {
        let (start, end) = (m.file_offset, (m.file_offset + m.len).min(size));
        match ranges.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ if start < end => ranges.push((start, end)),
            _ => {}
        }
    }
    Ok(ranges)
}

fn copy_out(
    fs: &Filesystem,
    id: InodeId,
    out: &mut dyn Write,
    mut tick: impl FnMut(u64),
) -> CliResult<()> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut offset = 0u64;
    loop {
        let n = fs.read(id, offset, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])?;
        offset += n as u64;
        tick(n as u64);
    }
}

pub fn cat(fs: &Filesystem, path: &str) -> CliResult {
    let id = fs.resolve(path)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    copy_out(fs, id, &mut out, |_| {})?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn rm(fs: &Filesystem, path: &str, recursive: bool) -> cowfs::Result<()> {
    let (dir, name) = fs.resolve_parent(path)?;
    let id = fs.lookup(dir, name.as_bytes())?;
    if recursive && fs.getattr(id)?.kind == FileKind::Directory {
        remove_tree(fs, dir, name.as_bytes(), id)
    } else {
        fs.unlink(dir, name.as_bytes())
    }
}

fn remove_tree(fs: &Filesystem, parent: InodeId, name: &[u8], dir: InodeId) -> cowfs::Result<()> {
    loop {
        let batch = fs.readdir(dir, None, 256)?;
        if batch.is_empty() {
            break;
        }
        for e in batch {
            if e.kind == FileKind::Directory {
                remove_tree(fs, dir, &e.name, e.id)?;
            } else {
                fs.unlink(dir, &e.name)?;
            }
        }
    }
    fs.rmdir(parent, name)
}

pub fn mv(fs: &Filesystem, from: &str, to: &str) -> cowfs::Result<()> {
    let (from_dir, from_name) = fs.resolve_parent(from)?;
    let (to_dir, to_name) = match fs.resolve(to) {
        Ok(id) if fs.getattr(id)?.kind == FileKind::Directory => (id, from_name),
        _ => fs.resolve_parent(to)?,
    };
    fs.rename(
        from_dir,
        from_name.as_bytes(),
        to_dir,
        to_name.as_bytes(),
        RenameFlags::default(),
    )
}

pub fn ln(fs: &Filesystem, target: &str, link: &str, symbolic: bool) -> cowfs::Result<()> {
    let (dir, name) = fs.resolve_parent(link)?;
    if symbolic {
        fs.symlink(
            dir,
            name.as_bytes(),
            target.as_bytes(),
            CreateAttrs::with_mode(0o777),
        )?;
    } else {
        fs.link(fs.resolve(target)?, dir, name.as_bytes())?;
    }
    Ok(())
}

pub fn fallocate_mode(keep_size: bool, punch_hole: bool, zero_range: bool) -> FallocateMode {
    match (punch_hole, zero_range) {
        (true, _) => FallocateMode::PunchHole,
        (false, true) => FallocateMode::ZeroRange { keep_size },
        (false, false) => FallocateMode::Allocate { keep_size },
    }
}

pub fn truncate(fs: &Filesystem, path: &str, size: u64) -> cowfs::Result<()> {
    let id = open_or_create(fs, path)?;
    fs.setattr(
        id,
        &SetAttr {
            size: Some(size),
            ..SetAttr::default()
        },
    )?;
    Ok(())
}
