//! Commands on a mounted filesystem. `cowfs snapshot /mnt/vol /mnt/snap`, `cowfs defrag
//! /mnt/f`, `cowfs balance /mnt` and the rest take paths inside a cowfs mount as well as an
//! image: then the work is sent to the mount's daemon as a `cowfs io` command line through the
//! COMMAND control ioctl, and the daemon runs it with the same interpreter (`Interpreter`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cowfs::Filesystem;
use cowfs_fuse::control::{self, CommandRunner, Refusal};

use crate::commands::mount::cowfs_mounts;
use crate::output::Output;
use crate::CliResult;

/// Where a command's argument points.
pub enum Place {
    /// An image file or device, opened by this process.
    Image(PathBuf),
    /// A path inside a cowfs mount: the mount's root and the path from the filesystem's root.
    Mounted { root: PathBuf, path: String },
}

/// An existing path inside a cowfs mount (or, for a name to be made, its parent) is
/// `Mounted`; anything else is an image.
pub fn place(arg: &str) -> CliResult<Place> {
    let path = Path::new(arg);
    if cowfs::device::NbdAddress::is_uri(arg) {
        return Ok(Place::Image(path.to_path_buf()));
    }
    let resolved = std::fs::canonicalize(path).or_else(|e| {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path.file_name().ok_or(e)?;
        Ok::<_, std::io::Error>(std::fs::canonicalize(parent)?.join(name))
    });
    let Ok(resolved) = resolved else {
        return Ok(Place::Image(path.to_path_buf()));
    };
    let mount = cowfs_mounts()?
        .into_iter()
        .filter(|m| resolved.starts_with(&m.mountpoint))
        .max_by_key(|m| m.mountpoint.as_os_str().len());
    Ok(match mount {
        Some(m) => {
            let inside = resolved
                .strip_prefix(&m.mountpoint)
                .unwrap_or(Path::new(""));
            Place::Mounted {
                path: format!("/{}", inside.display()),
                root: m.mountpoint,
            }
        }
        None => Place::Image(resolved),
    })
}

/// Sends one command line to the daemon of the mount at `root`: what it says, or why it
/// refused.
fn send(root: &Path, line: &str) -> CliResult<Result<String, Refusal>> {
    control::call(root, control::COMMAND, line.as_bytes())
        .map_err(|e| format!("{}: {e}", root.display()).into())
}

/// Sends one command line to the daemon of the mount at `root`; what it says.
pub fn ask(root: &Path, line: &str) -> CliResult<String> {
    Ok(send(root, line)??)
}

/// Sends one command line to the daemon of the mount at `root` and prints what it says. A
/// scrub that found damage exits 4, as offline.
pub fn run(root: &Path, line: &str) -> CliResult {
    match send(root, line)? {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(refusal) if refusal.errno == libc::EUCLEAN => {
            print!("{}", refusal.reason);
            Ok(ExitCode::from(4))
        }
        Err(refusal) => Err(refusal.into()),
    }
}

/// The daemon's side: the `cowfs io` interpreter, its output gathered for the reply.
pub struct Interpreter;

impl CommandRunner for Interpreter {
    fn run(&self, fs: &Filesystem, line: &str) -> Result<String, Refusal> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((name, args)) = words.split_first() else {
            return Ok(String::new());
        };
        let mut out = Output::Buffer(String::new());
        let mut swaps = swap::SwapSystem::new();
        let result = crate::commands::io::execute(fs, &mut swaps, name, args, &mut out);
        let Output::Buffer(text) = out else {
            unreachable!("a buffer stays a buffer")
        };
        match result {
            Ok(()) => Ok(text),
            // A damaged filesystem is a report, not a failure to run.
            Err(e) if e.errno() == cowfs::Errno::UCLEAN => Err(Refusal {
                errno: libc::EUCLEAN,
                reason: text,
            }),
            Err(e) => Err(e.into()),
        }
    }
}
