//! POSIX conformance: the pjdfstest suite (the Rust rewrite, from crates.io) on a mounted
//! cowfs, as root, with two unprivileged users for the permission cases. Every failure must be
//! one of the exclusions below, each with its reason; anything else fails the test.
//!
//! The suite is built on first use into the target directory with `cargo install` (it links
//! libacl, so libacl1-dev is installed with apt-get when it is missing). Needs root and
//! /dev/fuse: under CI=true a missing capability fails the test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{Scratch, MIB};
use cowfs::SetAttr;

const VERSION: &str = "0.2.2";

/// Tests cowfs does not pass, by the end of their name or a prefix, and why.
const EXCLUSIONS: &[(&str, &str)] = &[
    (
        "::fifo",
        "cowfs stores regular files, directories and symlinks: mkfifo is EOPNOTSUPP",
    ),
    (
        "::socket",
        "no sockets on cowfs (bind(2) of a socket file is EOPNOTSUPP)",
    ),
    ("::char", "no device nodes on cowfs: mknod is EOPNOTSUPP"),
    ("::block", "no device nodes on cowfs: mknod is EOPNOTSUPP"),
    ("mkfifo::", "no FIFOs on cowfs"),
    ("mknod::", "no device nodes or FIFOs on cowfs"),
    ("open::fifo_", "no FIFOs on cowfs"),
    ("open::socket_", "no sockets on cowfs"),
];

const CONFIG: &str = r#"
[features]
posix_fallocate = {}

[settings]
naptime = 0.001
allow_remount = false

[dummy_auth]
entries = [["nobody", "nogroup"], ["daemon", "daemon"]]
"#;

fn excluded(test: &str) -> Option<&'static str> {
    EXCLUSIONS
        .iter()
        .find(|(pattern, _)| {
            if pattern.starts_with("::") {
                test.ends_with(pattern)
            } else {
                test.starts_with(pattern)
            }
        })
        .map(|(_, why)| *why)
}

fn run(command: &mut Command) -> bool {
    command.status().is_ok_and(|s| s.success())
}

/// The pjdfstest binary, built into the target directory the first time.
fn pjdfstest() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pjdfstest-{VERSION}"));
    let binary = root.join("bin/pjdfstest");
    if binary.exists() {
        return binary;
    }
    if !run(Command::new("dpkg")
        .args(["-s", "libacl1-dev"])
        .stdout(std::process::Stdio::null()))
    {
        let install = || run(Command::new("apt-get").args(["install", "-y", "-q", "libacl1-dev"]));
        assert!(
            install() || (run(Command::new("apt-get").args(["update", "-q"])) && install()),
            "apt-get install libacl1-dev"
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args([
            "install",
            "pjdfstest",
            "--version",
            VERSION,
            "--locked",
            "--root",
        ])
        .arg(&root)
        .status()
        .expect("run cargo install");
    assert!(built.success(), "cargo install pjdfstest");
    binary
}

#[test]
fn pjdfstest_passes_but_for_the_listed_exclusions() {
    let Some(scratch) = Scratch::new(512 * MIB) else {
        return;
    };
    let binary = pjdfstest();
    let config = scratch.path("../pjdfstest.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let fs = scratch.open();
    // The unprivileged users make their own files in the suite's directories.
    fs.setattr(
        fs.root(),
        &SetAttr {
            mode: Some(0o777),
            ..SetAttr::default()
        },
    )
    .unwrap();
    let mounted = scratch.serve(fs, false);
    let at = &scratch.at;
    let out = Command::new(&binary)
        .arg("-c")
        .arg(&config)
        .arg("-p")
        .arg(at)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    mounted.unmount();

    let outcome = |word: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.split_once(char::is_whitespace))
            .filter(|(_, rest)| rest.trim() == word)
            .map(|(name, _)| name.to_string())
            .collect()
    };
    let (passed, failed) = (outcome("ok"), outcome("FAILED"));
    let unexpected: Vec<&String> = failed.iter().filter(|t| excluded(t).is_none()).collect();
    assert!(
        unexpected.is_empty(),
        "pjdfstest failures outside the exclusions: {unexpected:#?}\n{text}"
    );
    assert!(
        passed.len() >= 170,
        "only {} tests passed:\n{text}",
        passed.len()
    );
    scratch.assert_clean();
}
