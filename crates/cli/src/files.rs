//! The offline file commands: each opens the image, does one thing, and closes it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use cowfs::device::{BlockDevice, FileDevice};
use cowfs::format::{ExtentKind, FileKind};
use cowfs::{
    Attr, CreateAttrs, Errno, Error, FallocateMode, Filesystem, InodeId, RenameFlags, SetAttr,
};
use cowfs::{BalanceFilter, DedupeOutcome};
use indicatif::{ProgressBar, ProgressStyle};

use crate::output::{say, Output};
use crate::size::human;
use crate::CliResult;

const COPY_CHUNK: usize = 1 << 20;

/// A byte-count progress bar, drawn only on a terminal.
pub fn progress(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..].concat()
    )
}

pub fn fsck(image: &Path) -> CliResult {
    let device =
        FileDevice::open_read_only(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let device: Arc<dyn BlockDevice> = Arc::new(device);
    let bar = progress(0, "verifying data");
    let report = cowfs::fsck::check(device, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    for note in &report.notes {
        println!("note: {note}");
    }
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    println!(
        "{}: {} inodes ({} directories), {} extents, {} of data verified: {}",
        image.display(),
        report.inodes,
        report.directories,
        report.extents,
        human(report.data_bytes_verified),
        if report.is_clean() {
            "clean".to_string()
        } else {
            format!("{} problems", report.problems.len())
        }
    );
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

pub fn info(fs: &Filesystem) -> CliResult {
    let info = fs.info()?;
    println!("format version   {}", info.format_version);
    println!("uuid             {}", uuid_string(&info.uuid));
    println!("generation       {}", info.generation);
    println!(
        "size             {} ({} bytes)",
        human(info.size),
        info.size
    );
    println!(
        "data used        {} ({} bytes)",
        human(info.data_used),
        info.data_used
    );
    println!(
        "free             {} ({} bytes)",
        human(info.free),
        info.free
    );
    println!(
        "metadata space   {} in {} chunk(s)",
        human(info.metadata_bytes),
        info.superblock.meta_chunks.len()
    );
    println!("block groups     {}", info.block_groups.len());
    for g in &info.block_groups {
        println!(
            "  data  logical {:>14}  physical {:>14}  length {:>10}  used {:>10} ({:.0}%)",
            g.logical,
            g.record.physical,
            human(g.record.length),
            human(g.record.used),
            g.record.used as f64 * 100.0 / g.record.length as f64
        );
    }
    for c in &info.superblock.meta_chunks {
        println!(
            "  meta  store {:>16}  physical {:>14}  length {:>10}",
            c.store_offset,
            c.physical,
            human(c.length)
        );
    }
    Ok(ExitCode::SUCCESS)
}

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

/// Reflinks a whole file (`length` None) or a range; DST is created when missing.
pub fn reflink(
    fs: &Filesystem,
    src: &str,
    dst: &str,
    src_off: u64,
    dst_off: u64,
    length: Option<u64>,
) -> cowfs::Result<()> {
    let (src, dst) = (fs.resolve(src)?, open_or_create(fs, dst)?);
    match length {
        None if src_off == 0 && dst_off == 0 => fs.clone_file(src, dst),
        _ => fs
            .clone_range(src, src_off, dst, dst_off, length.unwrap_or(0))
            .map(drop),
    }
}

pub fn dedupe(
    fs: &Filesystem,
    src: &str,
    dst: &str,
    src_off: u64,
    dst_off: u64,
    len: u64,
) -> cowfs::Result<()> {
    match fs.dedupe_range(fs.resolve(src)?, src_off, fs.resolve(dst)?, dst_off, len)? {
        DedupeOutcome::Deduped(n) => println!("deduped {n} bytes"),
        DedupeOutcome::Differs => println!("the ranges differ: nothing shared"),
    }
    Ok(())
}

/// The id of the subvolume whose root is at `path`.
pub fn subvolume_at(fs: &Filesystem, path: &str) -> cowfs::Result<u64> {
    let id = fs.resolve(path)?;
    if id.ino != cowfs::format::ROOT_INO {
        return Err(Error::invalid(format!("{path}: not a subvolume")));
    }
    Ok(id.subvol)
}

pub fn snapshot(fs: &Filesystem, source: &str, dest: &str, read_only: bool) -> cowfs::Result<()> {
    let source = subvolume_at(fs, source)?;
    let (dir, name) = fs.resolve_parent(dest)?;
    fs.snapshot(source, dir, name.as_bytes(), read_only)
        .map(drop)
}

pub fn list_subvolumes(fs: &Filesystem, out: &mut Output) -> cowfs::Result<()> {
    for s in fs.list_subvolumes()? {
        let ro = if s.read_only { " readonly" } else { "" };
        let of = if s.snapshot_of != 0 {
            format!(" snapshot_of {}", s.snapshot_of)
        } else {
            String::new()
        };
        say!(
            out,
            "ID {} gen {} parent {}{of}{ro} path {}",
            s.id,
            s.generation,
            s.parent,
            s.path
        );
    }
    Ok(())
}

/// Defragments a file, or with `recursive` every regular file under a directory.
pub fn defrag(
    fs: &Filesystem,
    path: &str,
    recursive: bool,
    compress: bool,
    out: &mut Output,
) -> cowfs::Result<()> {
    let id = fs.resolve(path)?;
    match fs.getattr(id)?.kind {
        FileKind::Regular => {
            let s = fs.defrag(id, compress)?;
            say!(
                out,
                "{path}: {} extents -> {}, {} rewritten",
                s.extents_before,
                s.extents_after,
                human(s.bytes_rewritten)
            );
            Ok(())
        }
        FileKind::Directory if recursive => {
            for e in fs.readdir(id, None, usize::MAX)? {
                if e.kind != FileKind::Symlink && e.id.subvol == id.subvol {
                    let child = format!(
                        "{}/{}",
                        path.trim_end_matches('/'),
                        String::from_utf8_lossy(&e.name)
                    );
                    match defrag(fs, &child, true, compress, out) {
                        // An active swap file stays as it is; the rest of the tree goes on.
                        Err(e) if e.errno() == cowfs::Errno::TXTBSY => {
                            say!(out, "{child}: skipped: {}", e.reason())
                        }
                        other => other?,
                    }
                }
            }
            Ok(())
        }
        _ => Err(Error::invalid(format!(
            "{path}: not a regular file (use -r for a directory)"
        ))),
    }
}

pub fn balance(fs: &Filesystem, usage: Option<u8>, out: &mut Output) -> cowfs::Result<()> {
    let bar = progress(0, "balance");
    let report = fs.balance(BalanceFilter { usage_below: usage }, &mut |p| {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_moved);
    })?;
    bar.finish_and_clear();
    say!(
        out,
        "balance: relocated {} block group(s), moved {}{}",
        report.relocated.len(),
        human(report.bytes_moved),
        if report.cancelled { " (cancelled)" } else { "" }
    );
    for (group, why) in &report.skipped {
        say!(out, "  skipped block group {group}: {why}");
    }
    Ok(())
}

/// Returns whether everything verified.
pub fn scrub(fs: &Filesystem, out: &mut Output) -> cowfs::Result<bool> {
    let bar = progress(0, "scrub");
    let report = fs.scrub(&mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    if let Some(problem) = &report.metadata_problem {
        say!(out, "metadata: {problem}");
    }
    for problem in &report.superblock_problems {
        say!(out, "superblock: {problem}");
    }
    for e in &report.errors {
        let (path, offset) = e.files.first().cloned().unwrap_or_default();
        say!(
            out,
            "{}: {path} at offset {offset} (logical {}, physical {})",
            e.reason,
            e.logical,
            e.physical
        );
    }
    say!(
        out,
        "scrub: metadata {}, superblocks {}, {} of data verified, {} error(s)",
        if report.metadata_ok { "ok" } else { "DAMAGED" },
        if report.superblock_problems.is_empty() {
            "ok"
        } else {
            "DAMAGED"
        },
        human(report.data_bytes_verified),
        report.errors.len()
    );
    Ok(report.is_clean())
}

/// Resizes to SIZE, +SIZE or -SIZE.
pub fn resize(fs: &Filesystem, spec: &str, out: &mut Output) -> cowfs::Result<()> {
    let current = fs.info()?.size;
    let parse = |t: &str| crate::size::parse(t).map_err(Error::invalid);
    let target = match spec.as_bytes().first() {
        Some(b'+') => current.saturating_add(parse(&spec[1..])?),
        Some(b'-') => current.saturating_sub(parse(&spec[1..])?),
        _ => parse(spec)?,
    };
    let bar = progress(0, "relocating");
    let size = fs.resize(target, &mut |p| {
        bar.set_length(p.bytes_total.max(p.bytes_moved));
        bar.set_position(p.bytes_moved);
    })?;
    bar.finish_and_clear();
    say!(out, "resized from {} to {}", human(current), human(size));
    Ok(())
}

/// The extent map as `filefrag -v` prints it, in 4 KiB blocks.
pub fn fiemap(fs: &Filesystem, path: &str, out: &mut Output) -> cowfs::Result<()> {
    let id = fs.resolve(path)?;
    let size = fs.getattr(id)?.size;
    let map = fs.extent_map(id)?;
    let blocks = |bytes: u64| bytes / 4096;
    say!(
        out,
        "File size of {path} is {size} ({} blocks of 4096 bytes)",
        size.div_ceil(4096)
    );
    say!(
        out,
        " ext:     logical_offset:        physical_offset: length:   flags:"
    );
    for (i, m) in map.iter().enumerate() {
        let mut flags = m.flag_names();
        if i + 1 == map.len() {
            flags.push("last");
        }
        let last = blocks(m.len.div_ceil(4096) * 4096) - 1;
        let (lo, po) = (blocks(m.file_offset), blocks(m.physical));
        say!(
            out,
            "{i:4}: {lo:10}..{:10}: {po:10}..{:10}: {:6}:   {}",
            lo + last,
            po + last,
            last + 1,
            flags.join(",")
        );
    }
    say!(
        out,
        "{path}: {} extent{} found",
        map.len(),
        if map.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

pub fn chattr(fs: &Filesystem, path: &str, changes: &[String]) -> cowfs::Result<()> {
    let id = fs.resolve(path)?;
    let flags =
        crate::attrs::apply_specs(changes, fs.getattr(id)?.flags).map_err(Error::invalid)?;
    fs.set_flags(id, flags)?;
    Ok(())
}

pub fn lsattr(fs: &Filesystem, path: &str, directory: bool) -> CliResult {
    let id = fs.resolve(path)?;
    let show = |id: InodeId, name: &str| -> cowfs::Result<()> {
        println!(
            "{} {name}",
            crate::attrs::lsattr_string(fs.getattr(id)?.flags)
        );
        Ok(())
    };
    if directory || fs.getattr(id)?.kind != FileKind::Directory {
        show(id, path)?;
        return Ok(ExitCode::SUCCESS);
    }
    let base = path.trim_end_matches('/');
    for e in fs.readdir(id, None, usize::MAX)? {
        show(
            e.id,
            &format!("{base}/{}", String::from_utf8_lossy(&e.name)),
        )?;
    }
    Ok(ExitCode::SUCCESS)
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
