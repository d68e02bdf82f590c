//! Subvolumes and snapshots, on an image or through a mount.

use std::process::ExitCode;

use cowfs::{Error, Filesystem};

use crate::output::{say, Output};
use crate::CliResult;

use std::path::PathBuf;

use clap::Subcommand;

use crate::target::{done, on_paths, on_target, open};

/// Subvolumes: create, delete, list, make read-only
#[derive(clap::Args)]
pub struct Subvolume {
    #[command(subcommand)]
    pub action: SubvolumeAction,
}

impl Subvolume {
    pub fn run(self) -> CliResult {
        let Subvolume { action } = self;
        subvolume(action)
    }
}

/// Snapshot a subvolume (SOURCE must be a subvolume's root) as DEST: IMAGE SOURCE DEST, or
/// SOURCE DEST inside a mount
#[derive(clap::Args)]
pub struct Snapshot {
    #[arg(required = true, value_names = ["IMAGE", "SOURCE", "DEST"])]
    pub args: Vec<String>,
    /// Make the snapshot read-only
    #[arg(short = 'r')]
    pub read_only: bool,
}

impl Snapshot {
    pub fn run(self) -> CliResult {
        let Snapshot { args, read_only } = self;
        let flag = if read_only { "-r " } else { "" };
        on_paths(
            &args,
            2,
            |p| format!("snapshot {flag}{} {}", p[0], p[1]),
            |image, p| done(image, |fs| snapshot(fs, &p[0], &p[1], read_only)),
        )
    }
}

#[derive(Subcommand)]
pub enum SubvolumeAction {
    /// Make an empty subvolume at PATH: IMAGE PATH, or a PATH inside a mount
    Create {
        #[arg(required = true, value_names = ["IMAGE", "PATH"])]
        args: Vec<String>,
    },
    /// Delete the subvolume at PATH and everything in it: IMAGE PATH, or a PATH inside a mount
    Delete {
        #[arg(required = true, value_names = ["IMAGE", "PATH"])]
        args: Vec<String>,
    },
    /// List every subvolume (of an image, or of the mount a path is in)
    List { target: String },
    /// Make the subvolume at PATH read-only (true) or writable (false)
    Readonly {
        image: PathBuf,
        path: String,
        #[arg(action = clap::ArgAction::Set)]
        read_only: bool,
    },
}

fn subvolume(action: SubvolumeAction) -> CliResult {
    match action {
        SubvolumeAction::Create { args } => on_paths(
            &args,
            1,
            |p| format!("subvol create {}", p[0]),
            |image, p| {
                done(image, |fs| {
                    let (dir, name) = fs.resolve_parent(&p[0])?;
                    fs.create_subvolume(dir, name.as_bytes()).map(drop)
                })
            },
        ),
        SubvolumeAction::Delete { args } => on_paths(
            &args,
            1,
            |p| format!("subvol delete {}", p[0]),
            |image, p| {
                done(image, |fs| {
                    let (dir, name) = fs.resolve_parent(&p[0])?;
                    fs.delete_subvolume(dir, name.as_bytes())
                })
            },
        ),
        SubvolumeAction::List { target } => on_target(&target, "subvol list", |image| {
            crate::commands::subvol::list_subvolumes(&open(image, true)?, &mut Output::Terminal)?;
            Ok(ExitCode::SUCCESS)
        }),
        SubvolumeAction::Readonly {
            image,
            path,
            read_only,
        } => done(&image, |fs| {
            fs.set_subvolume_read_only(crate::commands::subvol::subvolume_at(fs, &path)?, read_only)
        }),
    }
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
