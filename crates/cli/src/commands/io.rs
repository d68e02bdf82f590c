//! `cowfs io`: an xfs_io-style interpreter. Many commands run over one open filesystem; a
//! failing command prints `CMD: <strerror>` and the run goes on; the exit code says whether
//! any failed.

use crate::target::{mount_options, open_with};
use std::path::PathBuf;
use std::process::ExitCode;

use cowfs::device::AlignedBuf;
use cowfs::{Errno, Error, Filesystem, SetAttr};

use crate::output::{say, Output};
use crate::size;
use crate::CliResult;

/// Bytes written or read per engine call.
const IO_CHUNK: u64 = 4 << 20;
/// The fill byte when none is given (xfs_io's 0xcd pattern).
const DEFAULT_FILL: u8 = 0xcd;

pub fn run(fs: &Filesystem, commands: &[String]) -> CliResult {
    let mut failed = false;
    let mut swaps = swap::SwapSystem::new();
    for line in commands {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(&name) = words.first() else { continue };
        if let Err(e) = execute(fs, &mut swaps, name, &words[1..], &mut Output::Terminal) {
            failed = true;
            eprintln!("{name}: {}", e.strerror());
            eprintln!("  ({e})");
        }
    }
    if let Err(e) = fs.clone().unmount() {
        eprintln!("unmount: {}\n  ({e})", e.strerror());
        failed = true;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn arg<'a>(args: &[&'a str], i: usize, what: &str) -> cowfs::Result<&'a str> {
    args.get(i)
        .copied()
        .ok_or_else(|| Error::invalid(format!("missing {what}")))
}

fn num(args: &[&str], i: usize, what: &str) -> cowfs::Result<u64> {
    size::parse(arg(args, i, what)?).map_err(Error::invalid)
}

/// An optional number argument: 0 when absent.
fn opt_num(args: &[&str], i: usize) -> cowfs::Result<u64> {
    if args.len() > i {
        num(args, i, "number")
    } else {
        Ok(0)
    }
}

fn byte(args: &[&str], i: usize) -> cowfs::Result<u8> {
    match args.get(i) {
        None => Ok(DEFAULT_FILL),
        Some(b) => {
            let v = size::parse(b).map_err(Error::invalid)?;
            u8::try_from(v).map_err(|_| Error::invalid(format!("fill byte {b} is not 0..255")))
        }
    }
}

pub fn execute(
    fs: &Filesystem,
    swaps: &mut swap::SwapSystem,
    name: &str,
    args: &[&str],
    out: &mut Output,
) -> cowfs::Result<()> {
    match name {
        "write" | "dwrite" => {
            let id = crate::commands::files::open_or_create(fs, arg(args, 0, "path")?)?;
            let (offset, len, fill) = (
                num(args, 1, "offset")?,
                num(args, 2, "length")?,
                byte(args, 3)?,
            );
            let direct = name == "dwrite";
            for_chunks(offset, len, |at, n| {
                let data = AlignedBuf::from_slice(&vec![fill; n as usize]);
                if direct {
                    fs.write_direct(id, at, &data)
                } else {
                    fs.write(id, at, &data)
                }
                .map(|_| n)
            })?;
            say!(out, "wrote {len}/{len} bytes at offset {offset}");
        }
        "read" | "dread" | "verify" => {
            let id = fs.resolve(arg(args, 0, "path")?)?;
            let (offset, len) = (num(args, 1, "offset")?, num(args, 2, "length")?);
            let expect = if name == "verify" {
                Some(byte(args, 3)?)
            } else {
                None
            };
            let mut buf = AlignedBuf::zeroed(IO_CHUNK.min(len) as usize);
            let total = for_chunks(offset, len, |at, n| {
                let buf = &mut buf[..n as usize];
                let got = if name == "dread" {
                    fs.read_direct(id, at, buf)?
                } else {
                    fs.read(id, at, buf)?
                };
                if let Some(want) = expect {
                    check_fill(&buf[..got], want, at, got as u64 == n)?;
                }
                Ok(got as u64)
            })?;
            match expect {
                Some(b) => say!(
                    out,
                    "verified {total} bytes at offset {offset}: all {b:#04x}"
                ),
                None => say!(out, "read {total}/{len} bytes at offset {offset}"),
            }
        }
        "truncate" => {
            let id = crate::commands::files::open_or_create(fs, arg(args, 0, "path")?)?;
            fs.setattr(
                id,
                &SetAttr {
                    size: Some(num(args, 1, "size")?),
                    ..SetAttr::default()
                },
            )?;
        }
        "fsync" => match fs.resolve(arg(args, 0, "path")?) {
            Ok(id) => fs.fsync(id)?,
            // A filesystem stopped by a device error lost the file: say why, not ENOENT.
            Err(e) => return Err(fs.stopped().unwrap_or(e)),
        },
        "sync" => fs.sync()?,
        "rm" => crate::commands::files::rm(fs, arg(args, 0, "path")?, false)?,
        "mv" => crate::commands::files::mv(fs, arg(args, 0, "source")?, arg(args, 1, "target")?)?,
        "mkdir" => crate::commands::files::mkdir(fs, arg(args, 0, "path")?, false)?,
        "stat" => {
            let path = arg(args, 0, "path")?;
            let a = fs.getattr(fs.resolve(path)?)?;
            say!(
                out,
                "{path}: ino {} subvol {} {:?} mode {:04o} nlink {} size {} allocated {}",
                a.id.ino,
                a.id.subvol,
                a.kind,
                a.perm,
                a.nlink,
                a.size,
                a.allocated
            );
        }
        "falloc" | "fpunch" | "fzero" => {
            let keep_size = args.first() == Some(&"-k");
            let args = if keep_size { &args[1..] } else { args };
            let id = crate::commands::files::open_or_create(fs, arg(args, 0, "path")?)?;
            let (offset, len) = (num(args, 1, "offset")?, num(args, 2, "length")?);
            let mode = crate::commands::files::fallocate_mode(
                keep_size,
                name == "fpunch",
                name == "fzero",
            );
            fs.fallocate(id, mode, offset, len)?;
        }
        "fallocate" => {
            let id = crate::commands::files::open_or_create(fs, arg(args, 0, "path")?)?;
            let (offset, len) = (num(args, 1, "offset")?, num(args, 2, "length")?);
            let mode = match args.get(3).copied() {
                None => cowfs::FallocateMode::Allocate { keep_size: false },
                Some("keep") => cowfs::FallocateMode::Allocate { keep_size: true },
                Some("punch") => cowfs::FallocateMode::PunchHole,
                Some("zero") => cowfs::FallocateMode::ZeroRange { keep_size: false },
                Some(other) => {
                    return Err(Error::invalid(format!(
                        "fallocate mode {other:?}: keep, punch or zero"
                    )))
                }
            };
            fs.fallocate(id, mode, offset, len)?;
        }
        "subvol" => {
            let rest = &args[1.min(args.len())..];
            match args.first().copied() {
                Some("create") => return execute(fs, swaps, "subvol_create", rest, out),
                Some("delete") => return execute(fs, swaps, "subvol_delete", rest, out),
                Some("list") => return execute(fs, swaps, "subvol_list", rest, out),
                other => {
                    return Err(Error::invalid(format!(
                        "subvol {other:?}: create, delete or list"
                    )))
                }
            }
        }
        "reflink" | "copy_range" | "copy-range" => {
            let (src, dst) = (
                fs.resolve(arg(args, 0, "source")?)?,
                crate::commands::files::open_or_create(fs, arg(args, 1, "target")?)?,
            );
            let (src_off, dst_off) = (opt_num(args, 2)?, opt_num(args, 3)?);
            let len = opt_num(args, 4)?;
            let n = match (name, args.len()) {
                ("reflink", 2) => {
                    fs.clone_file(src, dst)?;
                    fs.getattr(src)?.size
                }
                ("reflink", _) => fs.clone_range(src, src_off, dst, dst_off, len)?,
                _ => {
                    let len = if len == 0 { fs.getattr(src)?.size } else { len };
                    fs.copy_file_range(src, src_off, dst, dst_off, len)?
                }
            };
            say!(
                out,
                "{} {n} bytes",
                if name == "reflink" {
                    "linked"
                } else {
                    "copied"
                }
            );
        }
        "dedupe" => {
            crate::commands::share::dedupe(
                fs,
                arg(args, 0, "source")?,
                arg(args, 1, "target")?,
                num(args, 2, "source offset")?,
                num(args, 3, "target offset")?,
                num(args, 4, "length")?,
            )?;
        }
        "subvol_create" => {
            let (dir, name) = fs.resolve_parent(arg(args, 0, "path")?)?;
            fs.create_subvolume(dir, name.as_bytes())?;
        }
        "subvol_delete" => {
            let (dir, name) = fs.resolve_parent(arg(args, 0, "path")?)?;
            fs.delete_subvolume(dir, name.as_bytes())?;
        }
        "subvol_list" => {
            crate::commands::subvol::list_subvolumes(fs, out)?;
        }
        "snapshot" => {
            let read_only = args.first() == Some(&"-r");
            let args = if read_only { &args[1..] } else { args };
            crate::commands::subvol::snapshot(
                fs,
                arg(args, 0, "source")?,
                arg(args, 1, "destination")?,
                read_only,
            )?;
        }
        "defrag" => {
            let compress = args.first() == Some(&"-c");
            let args = if compress { &args[1..] } else { args };
            crate::commands::maint::defrag(fs, arg(args, 0, "path")?, true, compress, out)?;
        }
        "balance" => {
            let args = if args.first() == Some(&"--usage") {
                &args[1..]
            } else {
                args
            };
            let usage = args
                .first()
                .map(|u| {
                    u.parse::<u8>()
                        .map_err(|_| Error::invalid(format!("usage {u:?} is not a percent")))
                })
                .transpose()?;
            crate::commands::maint::balance(fs, usage, out)?;
        }
        "resize" => crate::commands::maint::resize(fs, arg(args, 0, "size")?, out)?,
        "scrub" => {
            if !crate::commands::maint::scrub(fs, out)? {
                return Err(Error::new(Errno::UCLEAN, "scrub found damage"));
            }
        }
        "mkswapfile" => {
            swap::mkswapfile(
                fs,
                arg(args, 0, "path")?,
                num(args, 1, "size")?,
                "",
                swap::random_uuid(),
            )?;
        }
        "mkswap" => {
            let id = fs.resolve(arg(args, 0, "path")?)?;
            let pages = fs.getattr(id)?.size / swap::PAGE_SIZE as u64;
            let header = swap::SwapHeader::new(pages, swap::random_uuid(), "")?;
            fs.write(id, 0, &header.encode())?;
        }
        "map-swapfile" | "map_swapfile" => {
            crate::commands::swapfile::map_swapfile(fs, arg(args, 0, "path")?, out)?;
        }
        "swapon" => {
            let path = arg(args, 0, "path")?;
            let option = |flag: &str| {
                args.iter()
                    .position(|a| *a == flag)
                    .and_then(|i| args.get(i + 1).copied())
            };
            let mode = match option("--mode") {
                None | Some("pinned") => cowfs::SwapMode::Pinned,
                Some("fs") => cowfs::SwapMode::ThroughFs,
                Some(other) => return Err(Error::invalid(format!("mode {other:?}: pinned or fs"))),
            };
            let priority = option("--prio")
                .map(|p| {
                    p.parse::<i32>()
                        .map_err(|_| Error::invalid(format!("priority {p:?}")))
                })
                .transpose()?;
            swaps.swapon(Box::new(swap::CowfsFile::new(fs, path, mode)?), priority)?;
        }
        "swapoff" => {
            let path = arg(args, 0, "path")?;
            let area = swaps
                .find(path)
                .ok_or_else(|| Error::invalid(format!("{path}: not an active swap area")))?;
            swaps.swapoff(
                area,
                Some(&mut |s: &mut swap::SwapSystem, slot| s.free(slot)),
            )?;
        }
        "swaps" => say!(out, "{}", swaps.proc_swaps().trim_end()),
        "swapwrite" | "swapread" => {
            let path = arg(args, 0, "path")?;
            let area = swaps
                .find(path)
                .ok_or_else(|| Error::invalid(format!("{path}: not an active swap area")))?;
            let (first, count, fill) = (
                num(args, 1, "slot")?,
                num(args, 2, "count")?,
                byte(args, 3)?,
            );
            let slots: Vec<swap::Slot> = (first..first + count)
                .map(|page| swap::Slot { area, page })
                .collect();
            if name == "swapwrite" {
                for s in &slots {
                    if !swaps.in_use(*s) {
                        swaps.claim(*s)?;
                    }
                }
                swaps.write(&slots, &vec![fill; slots.len() * swap::PAGE_SIZE])?;
                say!(out, "wrote {count} pages at slot {first}");
            } else {
                let mut buf = vec![0u8; slots.len() * swap::PAGE_SIZE];
                swaps.read(&slots, &mut buf)?;
                check_fill(&buf, fill, first * swap::PAGE_SIZE as u64, true)?;
                say!(out, "read {count} pages at slot {first}: all {fill:#04x}");
            }
        }
        "fiemap" => {
            crate::commands::maint::fiemap(fs, arg(args, 0, "path")?, out)?;
        }
        "chattr" => {
            let changes: Vec<String> = args.iter().skip(1).map(|s| s.to_string()).collect();
            crate::commands::attrs::chattr(fs, arg(args, 0, "path")?, &changes)?;
        }
        "property" => {
            let setting = match args.len() {
                1 => None,
                3 => Some((args[1], args[2])),
                _ => return Err(Error::invalid("property PATH [compression VALUE]")),
            };
            crate::commands::attrs::property(fs, arg(args, 0, "path")?, setting, out)?;
        }
        "swap-status" => crate::commands::kswap::swap_status(fs, arg(args, 0, "path")?, out)?,
        "lsattr" => {
            let path = arg(args, 0, "path")?;
            let flags = fs.getattr(fs.resolve(path)?)?.flags;
            say!(
                out,
                "{} {path}",
                crate::commands::attrs::lsattr_string(flags)
            );
        }
        "ls" => {
            let dir = fs.resolve(args.first().copied().unwrap_or("/"))?;
            for e in fs.readdir(dir, None, usize::MAX)? {
                say!(out, "{}", String::from_utf8_lossy(&e.name));
            }
        }
        _ => {
            return Err(Error::new(
                Errno::NOSYS,
                format!("unknown command {name:?}"),
            ))
        }
    }
    Ok(())
}

/// Calls `f(offset, len)` over `[offset, offset + len)` in chunks; stops at a short chunk.
fn for_chunks(
    offset: u64,
    len: u64,
    mut f: impl FnMut(u64, u64) -> cowfs::Result<u64>,
) -> cowfs::Result<u64> {
    let mut done = 0;
    while done < len {
        let n = (len - done).min(IO_CHUNK);
        let got = f(offset + done, n)?;
        done += got;
        if got < n {
            break;
        }
    }
    Ok(done)
}

fn check_fill(data: &[u8], want: u8, at: u64, full: bool) -> cowfs::Result<()> {
    if let Some(i) = data.iter().position(|b| *b != want) {
        return Err(Error::new(
            Errno::IO,
            format!(
                "mismatch at offset {}: found {:#04x}, expected {want:#04x}",
                at + i as u64,
                data[i]
            ),
        ));
    }
    if !full {
        return Err(Error::new(
            Errno::IO,
            format!(
                "short read at offset {}: the file ends there",
                at + data.len() as u64
            ),
        ));
    }
    Ok(())
}

/// Run commands over one open filesystem (xfs_io style): -c "write /f 0 4k 0xab"
#[derive(clap::Args)]
pub struct Io {
    pub image: PathBuf,
    /// Mount options: compress=zstd[:LEVEL]
    #[arg(short = 'o')]
    pub options: Option<String>,
    #[arg(short = 'c', required = true)]
    pub commands: Vec<String>,
}

impl Io {
    pub fn run(self) -> CliResult {
        let Io {
            image,
            options,
            commands,
        } = self;
        let opts = mount_options(options.as_deref())?;
        run(&open_with(&image, &opts)?, &commands)
    }
}
