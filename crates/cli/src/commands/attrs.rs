//! chattr/lsattr as e2fsprogs spells them: flag letters, their column order in `lsattr`
//! output, and `+`/`-`/`=` change specs.

use cowfs::format::inode_flags;

/// lsattr's columns, in e2fsprogs order, with the FS_IOC_GETFLAGS bit of each letter.
const COLUMNS: [(char, u64); 22] = [
    ('s', 0x1),
    ('u', 0x2),
    ('S', inode_flags::SYNC),
    ('D', inode_flags::DIRSYNC),
    ('i', inode_flags::IMMUTABLE),
    ('a', inode_flags::APPEND),
    ('d', inode_flags::NODUMP),
    ('A', inode_flags::NOATIME),
    ('c', inode_flags::COMPRESS),
    ('E', 0x800),
    ('j', 0x4000),
    ('I', 0x1000),
    ('t', 0x8000),
    ('T', 0x20000),
    ('e', 0x80000),
    ('C', inode_flags::NOCOW),
    ('x', 0x0200_0000),
    ('F', 0x4000_0000),
    ('N', 0x1000_0000),
    ('P', 0x2000_0000),
    ('V', 0x0010_0000),
    ('m', inode_flags::NOCOMPRESS),
];

/// The flags as lsattr prints them: one column per letter, `-` where unset.
pub fn lsattr_string(flags: u64) -> String {
    COLUMNS
        .iter()
        .map(|(c, bit)| if flags & bit != 0 { *c } else { '-' })
        .collect()
}

/// Applies chattr specs (`+C`, `-ia`, `=c`) to `flags`.
pub fn apply_specs(specs: &[String], mut flags: u64) -> Result<u64, String> {
    if specs.is_empty() {
        return Err("no change given (e.g. +C, -i, =c)".into());
    }
    for spec in specs {
        let mut chars = spec.chars();
        let op = chars.next().ok_or("empty change")?;
        let mut bits = 0u64;
        for letter in chars {
            let (_, bit) = COLUMNS
                .iter()
                .find(|(c, _)| *c == letter)
                .ok_or_else(|| format!("unknown attribute {letter:?} in {spec:?}"))?;
            bits |= bit;
        }
        flags = match op {
            '+' => flags | bits,
            '-' => flags & !bits,
            '=' => bits,
            _ => return Err(format!("{spec:?}: a change starts with +, - or =")),
        };
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_specs() {
        assert_eq!(lsattr_string(inode_flags::NOCOW), "---------------C------");
        assert_eq!(
            lsattr_string(inode_flags::IMMUTABLE | inode_flags::COMPRESS),
            "----i---c-------------"
        );
        let specs = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            apply_specs(&specs(&["+Ci"]), 0),
            Ok(inode_flags::NOCOW | inode_flags::IMMUTABLE)
        );
        assert_eq!(
            apply_specs(&specs(&["+C", "-C", "+a"]), 0),
            Ok(inode_flags::APPEND)
        );
        assert_eq!(
            apply_specs(&specs(&["=c"]), inode_flags::NOCOW),
            Ok(inode_flags::COMPRESS)
        );
        assert!(apply_specs(&specs(&["+Z"]), 0).is_err());
        assert!(apply_specs(&specs(&["C"]), 0).is_err());
    }
}

use std::process::ExitCode;

use cowfs::format::FileKind;
use cowfs::{CompressionConfig, Error, Filesystem, InodeId};

use crate::output::{say, Output};
use crate::target::{done, on_paths, open};
use crate::CliResult;

use std::path::PathBuf;

/// Change file attributes: +C (NOCOW), +c (compress), +i (immutable), +a (append only), ...
#[derive(clap::Args)]
pub struct Chattr {
    pub image: PathBuf,
    pub path: String,
    /// Changes such as +C, -i, =c
    #[arg(required = true, allow_hyphen_values = true, num_args = 1..)]
    pub changes: Vec<String>,
}

impl Chattr {
    pub fn run(self) -> CliResult {
        let Chattr {
            image,
            path,
            changes,
        } = self;
        done(&image, |fs| chattr(fs, &path, &changes))
    }
}

/// Show file attributes (of a directory's entries; with -d, of the directory itself)
#[derive(clap::Args)]
pub struct Lsattr {
    pub image: PathBuf,
    #[arg(default_value = "/")]
    pub path: String,
    #[arg(short = 'd')]
    pub directory: bool,
}

impl Lsattr {
    pub fn run(self) -> CliResult {
        let Lsattr {
            image,
            path,
            directory,
        } = self;
        lsattr(&open(&image, true)?, &path, directory)
    }
}

pub fn chattr(fs: &Filesystem, path: &str, changes: &[String]) -> cowfs::Result<()> {
    let id = fs.resolve(path)?;
    let flags = crate::commands::attrs::apply_specs(changes, fs.getattr(id)?.flags)
        .map_err(Error::invalid)?;
    fs.set_flags(id, flags)?;
    Ok(())
}

pub fn lsattr(fs: &Filesystem, path: &str, directory: bool) -> CliResult {
    let id = fs.resolve(path)?;
    let show = |id: InodeId, name: &str| -> cowfs::Result<()> {
        println!(
            "{} {name}",
            crate::commands::attrs::lsattr_string(fs.getattr(id)?.flags)
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

/// Get or set a file's properties, as `btrfs property`: `get [IMAGE] PATH`, `set [IMAGE] PATH
/// compression VALUE` (zstd, zstd:LEVEL, lz4 or none). With the image left out, PATH is inside a
/// cowfs mount. An algorithm also sets flag `c`; `none` sets `m` (never compress)
#[derive(clap::Args)]
pub struct Property {
    /// get or set
    pub action: String,
    #[arg(required = true, num_args = 1..=4)]
    pub args: Vec<String>,
}

impl Property {
    pub fn run(self) -> CliResult {
        let Property { action, args } = self;
        let (paths, setting) = match action.as_str() {
            "get" => (&args[..], None),
            "set" if args.len() >= 3 => {
                let (paths, setting) = args.split_at(args.len() - 2);
                (paths, Some((setting[0].clone(), setting[1].clone())))
            }
            "set" => return Err("property set takes [IMAGE] PATH compression VALUE".into()),
            other => return Err(format!("{other:?}: get or set").into()),
        };
        let tail = setting
            .as_ref()
            .map_or(String::new(), |(name, value)| format!(" {name} {value}"));
        on_paths(
            paths,
            1,
            |p| format!("property {}{tail}", p[0]),
            |image, p| {
                let fs = open(image, setting.is_none())?;
                let result = property(&fs, &p[0], setting_ref(&setting), &mut Output::Terminal);
                fs.unmount()?;
                result?;
                Ok(ExitCode::SUCCESS)
            },
        )
    }
}

fn setting_ref(setting: &Option<(String, String)>) -> Option<(&str, &str)> {
    setting.as_ref().map(|(n, v)| (n.as_str(), v.as_str()))
}

/// Sets a property of `path` when `setting` is given; prints them all either way.
pub fn property(
    fs: &Filesystem,
    path: &str,
    setting: Option<(&str, &str)>,
    out: &mut Output,
) -> cowfs::Result<()> {
    let id = fs.resolve(path)?;
    match setting {
        Some(("compression", value)) => fs.set_compression(id, CompressionConfig::parse(value)?)?,
        Some((name, _)) => {
            return Err(Error::invalid(format!(
                "unknown property {name:?} (there is compression)"
            )))
        }
        None => {}
    }
    let (own, effective) = fs.compression_of(id)?;
    let never = fs.getattr(id)?.flags & inode_flags::NOCOMPRESS != 0;
    let own = match own {
        Some(config) => config.to_string(),
        None if never => "none".into(),
        None => String::new(),
    };
    let stored = effective.map_or("plainly".to_string(), |c| format!("as {c}"));
    say!(out, "compression={own}\t# new data is stored {stored}");
    Ok(())
}
