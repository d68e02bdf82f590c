//! Maintenance on an image or through a mount: defrag, balance, resize, scrub, and the
//! extent map (fiemap).

use std::process::ExitCode;

use cowfs::format::FileKind;
use cowfs::BalanceFilter;
use cowfs::{Error, Filesystem};

use crate::output::{say, Output};
use crate::size::human;
use crate::CliResult;

use crate::output::progress;
use crate::target::{done, on_paths, on_target, open};

/// Rewrite fragmented files contiguously (-r: a whole tree; -c: compress): IMAGE PATH, or a
/// PATH inside a mount (a tree there is always walked)
#[derive(clap::Args)]
pub struct Defrag {
    #[arg(required = true, value_names = ["IMAGE", "PATH"])]
    pub args: Vec<String>,
    #[arg(short = 'r')]
    pub recursive: bool,
    #[arg(short = 'c')]
    pub compress: bool,
}

impl Defrag {
    pub fn run(self) -> CliResult {
        let Defrag {
            args,
            recursive,
            compress,
        } = self;
        let flag = if compress { "-c " } else { "" };
        on_paths(
            &args,
            1,
            |p| format!("defrag {flag}{}", p[0]),
            |image, p| {
                done(image, |fs| {
                    defrag(fs, &p[0], recursive, compress, &mut Output::Terminal)
                })
            },
        )
    }
}

/// Relocate block groups to compact data and return emptied chunks to the device
#[derive(clap::Args)]
pub struct Balance {
    /// An image, or any path inside a mount
    pub target: String,
    /// Only block groups less than this percent full
    #[arg(long)]
    pub usage: Option<u8>,
}

impl Balance {
    pub fn run(self) -> CliResult {
        let Balance { target, usage } = self;
        let filter = usage.map(|u| format!(" --usage {u}")).unwrap_or_default();
        on_target(&target, &format!("balance{filter}"), |image| {
            done(image, |fs| balance(fs, usage, &mut Output::Terminal))
        })
    }
}

/// Grow or shrink the filesystem: SIZE, +SIZE or -SIZE
#[derive(clap::Args)]
pub struct Resize {
    /// An image, or any path inside a mount
    pub target: String,
    #[arg(allow_hyphen_values = true)]
    pub size: String,
}

impl Resize {
    pub fn run(self) -> CliResult {
        let Resize { target, size } = self;
        on_target(&target, &format!("resize {size}"), |image| {
            done(image, |fs| resize(fs, &size, &mut Output::Terminal))
        })
    }
}

/// Read all metadata and data and verify every checksum; exit 4 if anything is damaged
#[derive(clap::Args)]
pub struct Scrub {
    /// An image, or any path inside a mount
    pub target: String,
}

impl Scrub {
    pub fn run(self) -> CliResult {
        let Scrub { target } = self;
        on_target(&target, "scrub", |image| {
            let clean = scrub(&open(image, true)?, &mut Output::Terminal)?;
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(4)
            })
        })
    }
}

/// Show where a file's extents are, like filefrag -v: IMAGE PATH, or a PATH inside a mount
#[derive(clap::Args)]
pub struct Fiemap {
    #[arg(required = true, value_names = ["IMAGE", "PATH"])]
    pub args: Vec<String>,
}

impl Fiemap {
    pub fn run(self) -> CliResult {
        let Fiemap { args } = self;
        on_paths(
            &args,
            1,
            |p| format!("fiemap {}", p[0]),
            |image, p| {
                fiemap(&open(image, true)?, &p[0], &mut Output::Terminal)?;
                Ok(ExitCode::SUCCESS)
            },
        )
    }
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
