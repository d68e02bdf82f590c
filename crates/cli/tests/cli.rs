//! The `cowfs` binary, run as a user would run it.

mod common;

use std::path::Path;

use common::*;

#[test]
fn mkfs_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let out = cowfs(&["mkfs", &img, "--size", "64M"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    ok(&["mkfs", &img, "--force"]);
    assert!(ok(&["info", &img]).contains(&format!(
        "format version   {}",
        cowfs::format::FORMAT_VERSION
    )));
}

#[test]
fn mkfs_refuses_a_tiny_size() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("small.img");
    let out = cowfs(&["mkfs", img.to_str().unwrap(), "--size", "1M"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 MiB"));
}

#[test]
fn put_get_round_trip_and_file_commands() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let host = dir.path().join("in.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&host, &data).unwrap();
    ok(&["mkdir", &img, "/x/y", "-p"]);
    ok(&["put", &img, host.to_str().unwrap(), "/x/y/file"]);
    ok(&["ln", &img, "/x/y/file", "/hard"]);
    ok(&["ln", &img, "-s", "x/y/file", "/soft"]);
    ok(&["mv", &img, "/hard", "/x"]);
    let out = dir.path().join("out.bin");
    ok(&["get", &img, "/x/hard", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let listing = ok(&["ls", "-l", &img, "/"]);
    assert!(
        listing.contains("soft -> x/y/file") && listing.contains("drwxr-xr-x"),
        "{listing}"
    );
    assert!(ok(&["stat", &img, "/x/hard"]).contains("Links: 2"));
    ok(&["truncate", &img, "/x/hard", "10"]);
    assert_eq!(ok(&["cat", &img, "/x/y/file"]).as_bytes(), &data[..10]);
    ok(&["rm", &img, "/x", "-r"]);
    assert_eq!(ok(&["ls", &img]), "soft\n");
    assert!(ok(&["fsck", &img]).contains("clean"));
}

#[test]
fn io_runs_commands_and_reports_failures_by_strerror() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let out = cowfs(&[
        "io",
        &img,
        "-c",
        "write /f 0 64k 0xab",
        "-c",
        "dwrite /f 64k 64k 0x11",
        "-c",
        "fsync /f",
        "-c",
        "verify /f 0 64k 0xab",
        "-c",
        "verify /f 64k 64k 0x11",
        "-c",
        "dread /f 0 128k",
        "-c",
        "rm /missing",
        "-c",
        "dwrite /f 100 4096",
        "-c",
        "mkdir /d",
        "-c",
        "mv /f /d/g",
        "-c",
        "stat /d/g",
        "-c",
        "truncate /d/g 4k",
        "-c",
        "read /d/g 0 1M",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "failures must give a non-zero exit");
    assert!(stderr.contains("rm: No such file or directory"), "{stderr}");
    assert!(stderr.contains("dwrite: Invalid argument"), "{stderr}");
    assert!(
        stdout.contains("verified 65536 bytes at offset 65536: all 0x11"),
        "{stdout}"
    );
    assert!(
        stdout.contains("read 131072/131072 bytes at offset 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Regular mode 0644 nlink 1 size 131072"),
        "{stdout}"
    );
    assert!(
        stdout.contains("read 4096/1048576 bytes at offset 0"),
        "the run continued after failures: {stdout}"
    );
    let good = cowfs(&["io", &img, "-c", "verify /d/g 0 4k 0xab"]);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let bad = cowfs(&["io", &img, "-c", "verify /d/g 0 4k 0xac"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("mismatch at offset 0"));
}

#[test]
fn fsck_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    ok(&["io", &img, "-c", "write /f 0 1M 0x42"]);
    assert!(cowfs(&["fsck", &img]).status.success());
    let mut bytes = std::fs::read(&img).unwrap();
    let before = bytes.clone();
    bytes[64 * 1024 + 50] ^= 0xff;
    std::fs::write(&img, &bytes).unwrap();
    let out = cowfs(&["fsck", &img]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("superblock copy 0"));
    assert_eq!(
        std::fs::read(&img).unwrap(),
        bytes,
        "fsck wrote to the image"
    );
    assert_ne!(before, bytes);
    let garbage = dir.path().join("garbage.img");
    std::fs::write(&garbage, vec![7u8; 32 << 20]).unwrap();
    let out = cowfs(&["fsck", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("bad magic"));
}

#[test]
fn demo_runs_clean() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&["demo", "--dir", dir.path().to_str().unwrap()]);
    for said in [
        "swapon /logs.txt: EINVAL: swapfile must not be compressed",
        "swapon /cow.bin: EINVAL: swapfile must not be copy-on-write",
        "rm /swapfile: EPERM",
        "the pin: active = None",
        "verified: clean",
    ] {
        assert!(out.contains(said), "the demo did not say {said:?}:\n{out}");
    }
    if is_root() {
        assert!(out.contains("every byte checked"), "the pager ran:\n{out}");
    }
}

#[test]
fn bench_swap_io_measures_every_backing() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let out = ok(&[
        "bench",
        "swap-io",
        "--size",
        "4M",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    for target in [
        "raw O_DIRECT",
        "cowfs pinned",
        "cowfs through fs (NOCOW)",
        "cowfs through fs (COW)",
        "cowfs through fs (COW, lz4)",
        "host swap file",
    ] {
        let rows = out.lines().filter(|l| l.starts_with(target)).count();
        assert_eq!(
            rows, 6,
            "{target}: sequential and random, three batch sizes:\n{out}"
        );
    }
}

/// The first number named `key` in a bench's JSON output.
fn json_number(out: &str, key: &str) -> f64 {
    out.split(&format!("\"{key}\": "))
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}: {out}"))
}

#[test]
fn bench_swap_json_has_every_case_asked_for_within_its_budget() {
    if !capable(&[(is_root(), "root (for /dev/userfaultfd)")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&[
        "bench",
        "swap",
        "--only",
        "pinned,in-thread",
        "--size",
        "16M",
        "--budget",
        "4M",
        "--json",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    for case in ["pager, cowfs pinned", "in-thread, pinned"] {
        assert!(out.contains(&format!("\"name\": \"{case}\"")), "{out}");
    }
    assert!(!out.contains("kernel"), "only the cases asked for: {out}");
    let peaks: Vec<u64> = out
        .split("\"peak_resident_bytes\": ")
        .skip(1)
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(peaks.len(), 2, "{out}");
    assert!(peaks.iter().all(|p| *p > 0 && *p <= 4 << 20), "{peaks:?}");
    // The device's own sequential read rate, measured in the same run.
    assert!(json_number(&out, "device_read_mb_s") > 0.0, "{out}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "the bench leaves nothing behind: {left:?}");
}

#[test]
fn bench_swap_has_the_kernel_on_zram_beside_it_and_leaves_no_zram_behind() {
    let zram = Path::new("/sys/class/zram-control").exists();
    if !capable(&[(is_root(), "root"), (zram, "zram (CONFIG_ZRAM)")]) {
        return;
    }
    let zram_devices = || {
        std::fs::read_dir("/sys/block")
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("zram")
            })
            .count()
    };
    let zram_swaps = || {
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap();
        swaps.lines().filter(|l| l.starts_with("/dev/zram")).count()
    };
    let before = (zram_devices(), zram_swaps());
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let out = ok(&[
        "bench",
        "swap",
        "--only",
        "zram",
        "--size",
        "64M",
        // Thrashing a small cgroup at zram's speed, the kernel's reclaim gives up now and then
        // and the cgroup's OOM killer takes the workload (seen at 16 and 32 MiB: four threads
        // faulting on a working set twice the limit); a quarter over the limit still swaps.
        "--budget",
        "48M",
        "--json",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.contains("\"name\": \"kernel (zram)\""), "{out}");
    assert!(json_number(&out, "fill_mb_s") > 0.0, "{out}");
    assert_eq!(
        (zram_devices(), zram_swaps()),
        before,
        "the bench's zram device is off and removed"
    );
}

/// On a machine without btrfs-progs that cannot install them either, the kernel baseline
/// stops with a message naming the package, not a bare "No such file or directory".
#[test]
fn bench_swap_names_btrfs_progs_when_mkfs_btrfs_is_missing() {
    if !capable(&[(is_root(), "root")]) {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let out = std::process::Command::new(COWFS)
        .args(["bench", "swap", "--only", "kernel", "--size", "16M"])
        .args(["--budget", "4M", "--dir", dir.path().to_str().unwrap()])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apt-get install btrfs-progs"), "{err}");
}

#[test]
fn chattr_and_lsattr() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    ok(&["mkdir", &img, "/nocow"]);
    ok(&["chattr", &img, "/nocow", "+C"]);
    ok(&["io", &img, "-c", "write /nocow/f 0 4k"]);
    assert_eq!(
        ok(&["lsattr", &img, "/nocow"]),
        "---------------C------ /nocow/f\n"
    );
    assert_eq!(
        ok(&["lsattr", &img, "-d", "/nocow"]),
        "---------------C------ /nocow\n"
    );
    let out = cowfs(&["chattr", &img, "/nocow/f", "+c"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Invalid argument")
            || String::from_utf8_lossy(&out.stderr).contains("EINVAL")
    );
    ok(&["chattr", &img, "/nocow/f", "-C"]);
    assert!(
        ok(&["lsattr", &img, "/nocow"]).starts_with("---------------C------"),
        "-C on a non-empty file changes nothing"
    );
    let out = cowfs(&[
        "io",
        &img,
        "-c",
        "chattr /nocow/f +i",
        "-c",
        "rm /nocow/f",
        "-c",
        "lsattr /nocow/f",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("rm: Operation not permitted"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("----i----------C------ /nocow/f"));
}

/// `cowfs property`: a directory's own compression algorithm, taken by the files made in it;
/// `none`, and a wrong name or value refused with the reason.
#[test]
fn property_sets_a_files_compression_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    ok(&["mkdir", &img, "/logs"]);
    assert_eq!(
        ok(&["property", "get", &img, "/logs"]),
        "compression=\t# new data is stored plainly\n"
    );
    ok(&["property", "set", &img, "/logs", "compression", "lz4"]);
    ok(&["io", &img, "-c", "write /logs/f 0 1M 0x61"]);
    assert_eq!(
        ok(&["property", "get", &img, "/logs/f"]),
        "compression=lz4\t# new data is stored as lz4\n"
    );
    assert!(ok(&["lsattr", &img, "-d", "/logs"]).starts_with("--------c"));
    assert!(ok(&["fiemap", &img, "/logs/f"]).contains("encoded"));
    ok(&["property", "set", &img, "/logs/f", "compression", "none"]);
    assert!(ok(&["property", "get", &img, "/logs/f"]).starts_with("compression=none\t"));
    assert!(ok(&["lsattr", &img, "/logs"]).ends_with("m /logs/f\n"));
    for (args, says) in [
        (["compression", "lzo"], "unknown compression"),
        (["compression", "zstd:30"], "is not 1 to 19"),
        (["colour", "red"], "unknown property"),
    ] {
        let out = cowfs(&["property", "set", &img, "/logs/f", args[0], args[1]]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}"
        );
    }
    assert!(ok(&["fsck", &img]).contains("clean"));
}

#[test]
fn subvolumes_snapshots_reflinks_and_fiemap() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    ok(&["subvolume", "create", &img, "/vol"]);
    ok(&[
        "io",
        &img,
        "-c",
        "write /vol/f 0 256k 0x5a",
        "-c",
        "falloc -k /vol/f 256k 64k",
    ]);
    ok(&["snapshot", &img, "-r", "/vol", "/snap"]);
    let list = ok(&["subvolume", "list", &img]);
    assert!(
        list.contains("path /vol") && list.contains("snapshot_of 2 readonly path /snap"),
        "{list}"
    );
    let out = cowfs(&["io", &img, "-c", "write /snap/f 0 4k"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("write: Read-only file system"));
    ok(&["reflink", &img, "/vol/f", "/copy"]);
    let map = ok(&["fiemap", &img, "/copy"]);
    assert!(map.contains("shared") && map.contains("last"), "{map}");
    let map = ok(&["fiemap", &img, "/vol/f"]);
    assert!(map.contains("unwritten"), "{map}");
    ok(&["subvolume", "delete", &img, "/snap"]);
    assert!(!ok(&["subvolume", "list", &img]).contains("/snap"));
    assert!(ok(&["fsck", &img]).contains("clean"));
}

#[test]
fn swap_files_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("s.img").to_str().unwrap().to_string();
    ok(&["mkfs", &img, "--size", "128M"]);
    ok(&[
        "mkswapfile",
        &img,
        "/swapfile",
        "--size",
        "16M",
        "--label",
        "cli",
    ]);
    assert!(ok(&["lsattr", &img, "/swapfile"]).starts_with("---------------C------"));
    assert!(ok(&["stat", &img, "/swapfile"]).contains("(0600/"));
    let map = ok(&["map-swapfile", &img, "/swapfile"]);
    assert!(
        map.contains("Physical start:") && map.contains("Resume offset:"),
        "{map}"
    );
    let out = cowfs(&[
        "io",
        &img,
        "-c",
        "swapon /swapfile --prio 3",
        "-c",
        "swaps",
        "-c",
        "swapwrite /swapfile 1 64 0x77",
        "-c",
        "swapread /swapfile 1 64 0x77",
        "-c",
        "write /swapfile 0 4k",
        "-c",
        "rm /swapfile",
        "-c",
        "snapshot / /snap",
        "-c",
        "chattr /swapfile +c",
        "-c",
        "fallocate /swapfile 0 4k punch",
        "-c",
        "swapoff /swapfile",
        "-c",
        "swapoff /swapfile",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains("/swapfile") && stdout.contains("cowfs") && stdout.contains("3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("read 64 pages at slot 1: all 0x77"),
        "{stdout}"
    );
    for refusal in [
        "write: Text file busy",
        "rm: Operation not permitted",
        "snapshot: Text file busy",
        "chattr: Invalid argument",
        "fallocate: Text file busy",
        "swapoff: Invalid argument",
    ] {
        assert!(stderr.contains(refusal), "{refusal} missing from: {stderr}");
    }
    assert!(ok(&["fsck", &img]).contains("clean"));
    let host = dir.path().join("host.swap");
    let made = ok(&[
        "mkswap",
        host.to_str().unwrap(),
        "--create",
        "--size",
        "8M",
        "--label",
        "h",
    ]);
    assert!(made.contains("Setting up swapspace version 1"));
    let page = std::fs::read(&host).unwrap();
    assert_eq!(&page[4096 - 10..4096], b"SWAPSPACE2");
}

#[test]
fn mount_serves_the_image_and_umount_waits_for_the_commit() {
    if !can_mount() {
        return;
    }
    let scratch = Scratch::new();
    let (img, at) = (&scratch.image, scratch.mnt());
    ok(&["mkfs", img, "--size", "64M"]);
    let said = ok(&["mount", img, at]);
    assert!(said.contains("mounted at"), "{said}");
    std::fs::write(Path::new(at).join("hello"), b"through the mount").unwrap();
    let busy = cowfs(&["fsck", img]);
    assert!(
        !busy.status.success() && String::from_utf8_lossy(&busy.stderr).contains("in use"),
        "a mounted image is not opened a second time"
    );
    ok(&["umount", at]);
    assert_eq!(ok(&["cat", img, "/hello"]), "through the mount");
    assert!(ok(&["fsck", img]).contains("clean"));
    let not_mounted = cowfs(&["umount", at]);
    assert!(String::from_utf8_lossy(&not_mounted.stderr).contains("not a cowfs mount"));
}

#[test]
fn whole_filesystem_commands_take_paths_inside_a_mount() {
    if !can_mount() {
        return;
    }
    let scratch = Scratch::new();
    let img = &scratch.image;
    ok(&["mkfs", img, "--size", "64M"]);
    let at = &scratch.mountpoint;
    let p = |rel: &str| scratch.at(rel);
    ok(&["mount", img, &p("")]);
    ok(&["subvolume", "create", &p("vol")]);
    std::fs::write(at.join("vol/f"), vec![7u8; 3 << 20]).unwrap();
    ok(&["snapshot", "-r", &p("vol"), &p("snap")]);
    assert_eq!(
        std::fs::read(at.join("snap/f")).unwrap(),
        vec![7u8; 3 << 20],
        "the snapshot shows through the mount"
    );
    let snap_write = std::fs::write(at.join("snap/g"), b"x").unwrap_err();
    assert_eq!(
        snap_write.raw_os_error(),
        Some(30),
        "a read-only snapshot is EROFS"
    );
    let listed = ok(&["subvolume", "list", &p("")]);
    assert!(
        listed.contains("path /vol") && listed.contains("readonly path /snap"),
        "{listed}"
    );
    assert!(
        ok(&["fiemap", &p("vol/f")]).contains("shared"),
        "the snapshot shares the file's extents"
    );
    assert!(ok(&["defrag", &p("vol/f")]).contains("/vol/f:"));
    assert!(ok(&["balance", &p("vol")]).contains("balance: relocated"));
    assert!(ok(&["resize", &p(""), "+16M"]).contains("resized from 64.0 MiB to 80.0 MiB"));
    assert!(ok(&["scrub", &p("")]).contains("0 error(s)"));
    let refused = cowfs(&["subvolume", "delete", &p("vol/f")]);
    assert!(!refused.status.success(), "a file is not a subvolume");
    ok(&["subvolume", "delete", &p("snap")]);
    assert!(
        !at.join("snap").exists(),
        "the kernel forgot the deleted subvolume"
    );
    let other = cowfs(&["snapshot", &p("vol"), "/tmp/elsewhere"]);
    assert!(String::from_utf8_lossy(&other.stderr).contains("not inside a cowfs mount"));
    ok(&["umount", &p("")]);
    assert!(ok(&["fsck", img]).contains("clean"));
}

/// Issue 10, section 5: clear messages for wrong arguments and wrong targets.
#[test]
fn wrong_targets_and_arguments_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.img");
    let out = cowfs(&["fsck", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.img: No such file"));
    for (target, kind) in [("/dev/null", "a character device"), ("/tmp", "a directory")] {
        let out = cowfs(&["mkfs", target, "--size", "64M"]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains(kind),
            "{target}: {said}"
        );
    }
    let img = image(dir.path());
    let out = cowfs(&["balance", &img, "--usage", "101"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a percent"));
}

/// mkfs never overwrites another filesystem, swap area or partition table without --force.
#[test]
fn mkfs_refuses_other_filesystems_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("other.img");
    let path = img.to_str().unwrap();
    for (offset, magic, name) in [
        (0x438u64, &[0x53u8, 0xef][..], "ext2/ext3/ext4"),
        (0x10040, b"_BHRfS_M", "btrfs"),
        (0, b"XFSB", "XFS"),
        (512, b"EFI PART", "GPT partition table"),
    ] {
        let file = std::fs::File::create(&img).unwrap();
        file.set_len(64 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, magic, offset).unwrap();
        let out = cowfs(&["mkfs", path]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains(name),
            "{name}: {said}"
        );
        assert!(said.contains("--force"));
    }
    std::fs::remove_file(&img).unwrap();
    ok(&["mkswap", path, "--create", "--size", "64M"]);
    let out = cowfs(&["mkfs", path]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("a Linux swap area"));
    ok(&["mkfs", path, "--force"]);
}

/// A damaged backup superblock is reported by fsck and scrub (which writes nothing), and
/// rewritten by a read-write open that says so.
#[test]
fn a_damaged_backup_superblock_is_never_repaired_silently() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let file = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"garbage!", (256 << 10) + 100).unwrap();
    assert_eq!(cowfs(&["fsck", &img]).status.code(), Some(4));
    let before = std::fs::read(&img).unwrap();
    let scrub = cowfs(&["scrub", &img]);
    assert_eq!(scrub.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&scrub.stdout).contains("superblocks DAMAGED"));
    assert!(
        std::fs::read(&img).unwrap() == before,
        "scrub wrote to the image"
    );
    let io = cowfs(&["io", &img, "-c", "mkdir /x"]);
    let said = String::from_utf8_lossy(&io.stderr);
    assert!(
        io.status.success() && said.contains("superblock copy 1") && said.contains("rewritten"),
        "{said}"
    );
    assert!(ok(&["scrub", &img]).contains("superblocks ok"));
}

/// Paths follow symlinks in the middle as the kernel's walk does; `get` keeps holes.
#[test]
fn paths_follow_symlinks_and_get_keeps_holes() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    ok(&["mkdir", &img, "/a/b", "-p"]);
    ok(&["io", &img, "-c", "write /a/b/f 0 5 0x41"]);
    ok(&["ln", &img, "-s", "/a", "/abs"]);
    ok(&["ln", &img, "-s", "b/../b", "/a/rel"]);
    assert_eq!(ok(&["cat", &img, "/abs/b/f"]), "AAAAA");
    assert_eq!(ok(&["cat", &img, "/abs/rel/f"]), "AAAAA");
    ok(&["ln", &img, "-s", "/loop2", "/loop1"]);
    ok(&["ln", &img, "-s", "/loop1", "/loop2"]);
    let out = cowfs(&["cat", &img, "/loop1/f"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("too many levels of symbolic links"));
    ok(&[
        "io",
        &img,
        "-c",
        "write /sparse 3G 4k 0x42",
        "-c",
        "truncate /sparse 50G",
    ]);
    let host = dir.path().join("sparse.out");
    ok(&["get", &img, "/sparse", host.to_str().unwrap()]);
    let meta = std::fs::metadata(&host).unwrap();
    assert_eq!(meta.len(), 50 << 30);
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&meta) < 1024,
        "holes stay holes"
    );
    let copy = std::fs::File::open(&host).unwrap();
    let mut block = [0u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(&copy, &mut block, 3 << 30).unwrap();
    assert!(block.iter().all(|b| *b == 0x42));
}

/// defrag of a tree skips an active swap file with a note and goes on.
#[test]
fn defrag_of_a_tree_skips_an_active_swap_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("t.img").to_str().unwrap().to_string();
    ok(&["mkfs", &img, "--size", "128M"]);
    ok(&["mkdir", &img, "/sw"]);
    ok(&["mkswapfile", &img, "/sw/swapfile", "--size", "16M"]);
    let out = ok(&[
        "io",
        &img,
        "-c",
        "write /sw/a 0 1M 0x1",
        "-c",
        "swapon /sw/swapfile",
        "-c",
        "defrag /",
        "-c",
        "write /sw/b 0 1M 0x2",
    ]);
    assert!(
        out.contains("/sw/swapfile: skipped") && out.contains("/sw/a:"),
        "{out}"
    );
}

/// A mount point already serving cowfs is refused, never taken for the new mount.
#[test]
fn mount_refuses_a_mount_point_already_mounted() {
    if !can_mount() {
        return;
    }
    let scratch = Scratch::new();
    ok(&["mkfs", &scratch.image, "--size", "64M"]);
    ok(&["mount", &scratch.image, scratch.mnt()]);
    let again = cowfs(&["mount", &scratch.image, scratch.mnt()]);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && said.contains("already a cowfs mount"),
        "{said}"
    );
    ok(&["umount", scratch.mnt()]);
    assert!(ok(&["fsck", &scratch.image]).contains("clean"));
}

#[test]
fn mkswapfile_and_map_swapfile_work_on_a_mount_for_either_mode() {
    if !can_mount() {
        return;
    }
    let scratch = Scratch::new();
    let (img, at) = (&scratch.image, scratch.mnt());
    ok(&["mkfs", img, "--size", "128M"]);
    ok(&["mount", img, at]);
    let pinned = format!("{at}/pinned");
    let cow = format!("{at}/cow");
    ok(&["mkswapfile", &pinned, "--size", "16M"]);
    ok(&["mkswapfile", &cow, "--size", "16M", "--through-fs"]);
    for (path, nocow) in [(&pinned, true), (&cow, false)] {
        let page = std::fs::read(path).unwrap();
        assert_eq!(page.len(), 16 << 20, "{path}: preallocated to its size");
        assert_eq!(&page[4096 - 10..4096], b"SWAPSPACE2", "{path}: a header");
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        let file = std::fs::File::open(path).unwrap();
        let flags = rustix::fs::ioctl_getflags(&file).unwrap();
        assert_eq!(flags.contains(rustix::fs::IFlags::NOCOW), nocow, "{path}");
    }
    let again = cowfs(&["mkswapfile", &cow, "--size", "16M"]);
    assert!(
        !again.status.success(),
        "an existing file is not overwritten"
    );
    let map = ok(&["map-swapfile", &pinned]);
    assert!(map.contains("Physical start:"), "through the mount: {map}");
    let refused = cowfs(&["map-swapfile", &cow]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("copy-on-write"),
        "a COW file is no pinned swap file"
    );
    ok(&["umount", at]);
    assert!(ok(&["fsck", img]).contains("clean"));
}
