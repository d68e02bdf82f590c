//! Where a command works: an image opened here (read-only opens never write to it), or the
//! daemon of the cowfs mount a path is in, which runs the same command on its open filesystem.

use std::path::Path;
use std::process::ExitCode;

use cowfs::{AtimePolicy, CompressionConfig, Filesystem, OpenOptions};

use crate::mounted;
use crate::CliResult;

/// Runs a command whose arguments are `paths` paths: after an image (IMAGE PATH...), or, with
/// the image left out, paths inside one cowfs mount, whose daemon then runs `line(paths)`.
pub fn on_paths(
    args: &[String],
    paths: usize,
    line: impl FnOnce(&[String]) -> String,
    offline: impl FnOnce(&Path, &[String]) -> CliResult,
) -> CliResult {
    if args.len() == paths + 1 {
        return offline(Path::new(&args[0]), &args[1..]);
    }
    if args.len() != paths {
        return Err(format!(
            "expected {paths} path(s) inside a mount, or an image and {paths} path(s) in it; got {} argument(s)",
            args.len()
        )
        .into());
    }
    let mut root = None;
    let mut inside = Vec::new();
    for arg in args {
        match mounted::place(arg)? {
            mounted::Place::Mounted { root: r, path } if root.as_ref().is_none_or(|p| *p == r) => {
                root = Some(r);
                inside.push(path);
            }
            mounted::Place::Mounted { .. } => return Err(format!("{arg}: on another mount").into()),
            mounted::Place::Image(_) => {
                return Err(
                    format!("{arg}: not inside a cowfs mount (or give the image first)").into(),
                )
            }
        }
    }
    let root = root.ok_or("no path given")?;
    mounted::run(&root, &line(&inside))
}

/// Runs a whole-filesystem command on an image, or through the daemon of the mount `target`
/// is in.
pub fn on_target(target: &str, line: &str, offline: impl FnOnce(&Path) -> CliResult) -> CliResult {
    match mounted::place(target)? {
        mounted::Place::Mounted { root, .. } => mounted::run(&root, line),
        mounted::Place::Image(image) => offline(&image),
    }
}

/// Parses `-o` options as a mount would: `compress=zstd[:LEVEL]` or `compress=lz4`, `ro`.
pub fn mount_options(text: Option<&str>) -> CliResult<OpenOptions> {
    let mut opts = OpenOptions::default();
    for option in text.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("compress", how)) => opts.compress = CompressionConfig::parse(how)?,
            None if option == "ro" => opts.read_only = true,
            None if option == "noatime" => opts.atime = AtimePolicy::Never,
            None if option == "relatime" => opts.atime = AtimePolicy::Relative,
            None if option == "strictatime" => opts.atime = AtimePolicy::Always,
            _ => {
                return Err(format!(
                "unknown option {option:?} (try compress=zstd, compress=lz4, ro, noatime, relatime, strictatime)"
            )
                .into())
            }
        }
    }
    Ok(opts)
}

/// Opens an image; read-only opens never write to it.
pub fn open(image: &Path, read_only: bool) -> CliResult<Filesystem> {
    let opts = OpenOptions {
        read_only,
        ..OpenOptions::default()
    };
    open_with(image, &opts)
}

/// Opens an image with `opts`, and says what opening repaired (never silently).
pub fn open_with(image: &Path, opts: &OpenOptions) -> CliResult<Filesystem> {
    let fs = Filesystem::open_path(image, opts).map_err(|e| format!("{}: {e}", image.display()))?;
    for note in fs.open_notes() {
        eprintln!("cowfs: {}: {note}", image.display());
    }
    Ok(fs)
}

/// Opens an image read-write, runs one change, and unmounts (committing it).
pub fn done(image: &Path, f: impl FnOnce(&Filesystem) -> cowfs::Result<()>) -> CliResult {
    let fs = open(image, false)?;
    let result = f(&fs);
    fs.unmount()?;
    result?;
    Ok(ExitCode::SUCCESS)
}
