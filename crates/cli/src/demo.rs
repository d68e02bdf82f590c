//! `cowfs demo`: the guided tour. Makes a scratch image, writes files every way the engine
//! can, reads them back across a remount, shows a checksum catching corruption, and runs
//! fsck, printing what each step did.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use cowfs::device::{AlignedBuf, BlockDevice, FileDevice, MemoryDevice};
use cowfs::format::FileKind;
use cowfs::{CreateAttrs, Filesystem, MkfsOptions, OpenOptions, RenameFlags, SetAttr};

use crate::files::{progress, uuid_string};
use crate::size::human;
use crate::CliResult;

const IMAGE_SIZE: u64 = 256 << 20;
const BIG_FILE: u64 = 48 << 20;
const DIRECT_FILE: u64 = 16 << 20;
const README_LINE: &[u8] =
    b"cowfs keeps every block it overwrites until the new one is committed.\n";

fn pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = (offset + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
        *b = (x >> 29) as u8;
    }
}

fn step(n: u32, what: &str) {
    println!("\n[{n}] {what}");
}

pub fn run(dir: Option<PathBuf>) -> CliResult {
    let started = Instant::now();
    let tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            tmp = tempfile::Builder::new().prefix("cowfs-demo-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let image = dir.join("demo.img");
    println!("cowfs demo: a copy-on-write filesystem in one image file");
    println!("scratch image: {} ({})", image.display(), human(IMAGE_SIZE));

    step(1, "mkfs");
    let device = Arc::new(FileDevice::create(&image, IMAGE_SIZE)?);
    let direct_io = device.is_direct();
    Filesystem::mkfs(device.clone(), &MkfsOptions::default())?;
    let opts = OpenOptions::default();
    let fs = Filesystem::open(device.clone(), &opts)?;
    let info = fs.info()?;
    println!(
        "    format v{}, uuid {}, {} free, O_DIRECT {}",
        info.format_version,
        uuid_string(&info.uuid),
        human(info.free),
        if direct_io {
            "on"
        } else {
            "unavailable here (page cache + fdatasync)"
        }
    );

    step(
        2,
        "write files: small buffered writes, a large buffered file, direct I/O, links",
    );
    let root = fs.root();
    let make = |dir, name: &str, kind| {
        let mode = if kind == FileKind::Directory {
            0o755
        } else {
            0o644
        };
        fs.create(dir, name.as_bytes(), kind, CreateAttrs::with_mode(mode))
    };
    let docs = make(root, "docs", FileKind::Directory)?;
    let data = make(root, "data", FileKind::Directory)?;
    let readme = make(docs, "readme.txt", FileKind::Regular)?;
    let text = README_LINE;
    for i in 0..100u64 {
        fs.write(readme, i * text.len() as u64, text)?;
    }
    println!(
        "    /docs/readme.txt: 100 small writes of {} bytes -> {} extent(s)",
        text.len(),
        fs.extent_map(readme)?.len()
    );
    let big = make(data, "big.bin", FileKind::Regular)?;
    let bar = progress(BIG_FILE, "    /data/big.bin");
    let mut buf = vec![0u8; 1 << 20];
    for off in (0..BIG_FILE).step_by(buf.len()) {
        pattern(1, off, &mut buf);
        fs.write(big, off, &buf)?;
        bar.set_position(off + buf.len() as u64);
    }
    bar.finish_and_clear();
    println!(
        "    /data/big.bin: {} buffered -> {} extent(s)",
        human(BIG_FILE),
        fs.extent_map(big)?.len()
    );
    let direct = make(data, "direct.bin", FileKind::Regular)?;
    let mut abuf = AlignedBuf::zeroed(4 << 20);
    for off in (0..DIRECT_FILE).step_by(abuf.len()) {
        pattern(2, off, &mut abuf);
        fs.write_direct(direct, off, &abuf)?;
    }
    println!(
        "    /data/direct.bin: {} with direct I/O (4 KiB-aligned, straight to the device)",
        human(DIRECT_FILE)
    );
    fs.link(readme, root, b"README")?;
    fs.symlink(
        root,
        b"latest",
        b"data/big.bin",
        CreateAttrs::with_mode(0o777),
    )?;
    println!("    /README is a hard link to /docs/readme.txt; /latest -> data/big.bin");

    step(
        3,
        "copy-on-write: overwrite a range, then rename, truncate and unlink",
    );
    fs.sync()?;
    let before = fs.extent_map(big)?;
    let mut patch = vec![0u8; 64 << 10];
    pattern(3, 1 << 20, &mut patch);
    fs.write(big, 1 << 20, &patch)?;
    fs.fsync(big)?;
    let after = fs.extent_map(big)?;
    println!(
        "    overwrote 64 KiB at 1 MiB of big.bin and fsync'd: {} extents before, {} after \
         (the new data went to new blocks; the committed ones were never overwritten)",
        before.len(),
        after.len()
    );
    fs.rename(
        data,
        b"direct.bin",
        data,
        b"direct-renamed.bin",
        RenameFlags::default(),
    )?;
    fs.setattr(
        direct,
        &SetAttr {
            size: Some(DIRECT_FILE / 2),
            ..SetAttr::default()
        },
    )?;
    let scratch = make(root, "scratch", FileKind::Regular)?;
    fs.write(scratch, 0, &[7u8; 100_000])?;
    fs.unlink(root, b"scratch")?;
    println!(
        "    renamed direct.bin, truncated it to {}, created and unlinked /scratch",
        human(DIRECT_FILE / 2)
    );

    step(4, "commit, unmount, reopen, and read everything back");
    let generation = fs.generation();
    fs.unmount()?;
    let fs = Filesystem::open(device.clone(), &opts)?;
    println!(
        "    reopened at generation {} (was {generation} before the final commit)",
        fs.generation()
    );
    verify_all(&fs)?;

    step(
        5,
        "checksums: corrupt one data block behind the filesystem's back",
    );
    let big = fs.resolve("/data/big.bin")?;
    let victim = fs.extent_map(big)?[0].clone();
    fs.unmount()?;
    let mut copy = vec![0u8; IMAGE_SIZE as usize];
    device.read_at(0, &mut copy)?;
    copy[victim.physical as usize + 100] ^= 0xff;
    let damaged: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::from_image(copy));
    let broken = Filesystem::open(
        damaged.clone(),
        &OpenOptions {
            read_only: true,
            ..opts.clone()
        },
    )?;
    let mut block = vec![0u8; 4096];
    match broken.read(broken.resolve("/data/big.bin")?, 0, &mut block) {
        Err(e) => println!("    reading it: {e}"),
        Ok(_) => return Err("the corrupted block read back without an error".into()),
    }
    let report = cowfs::fsck::check(damaged, &mut |_, _| {});
    println!(
        "    fsck of the damaged copy: {} problem(s), e.g. {}",
        report.problems.len(),
        report.problems.first().map_or("none", |s| s.as_str())
    );

    step(6, "fsck the real image");
    let report = cowfs::fsck::check(device.clone(), &mut |_, _| {});
    println!(
        "    {} inodes, {} extents, {} verified: {}",
        report.inodes,
        report.extents,
        human(report.data_bytes_verified),
        if report.is_clean() {
            "clean"
        } else {
            "PROBLEMS"
        }
    );
    for p in &report.problems {
        println!("    problem: {p}");
    }
    let fs = Filesystem::open(
        device,
        &OpenOptions {
            read_only: true,
            ..opts
        },
    )?;
    let info = fs.info()?;
    println!(
        "    {} used by data in {} block group(s), {} metadata space, {} free",
        human(info.data_used),
        info.block_groups.len(),
        human(info.metadata_bytes),
        human(info.free)
    );
    println!("\ndone in {:.1}s", started.elapsed().as_secs_f64());
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn verify_all(fs: &Filesystem) -> CliResult<()> {
    let readme = fs.resolve("/README")?;
    let attr = fs.getattr(readme)?;
    let mut text = vec![0u8; attr.size as usize];
    fs.read(readme, 0, &mut text)?;
    let ok_text = text.len() == 100 * README_LINE.len()
        && text.chunks(README_LINE.len()).all(|c| c == README_LINE);
    let big = fs.resolve("/data/big.bin")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut want = vec![0u8; 1 << 20];
    let mut ok_big = true;
    for off in (0..BIG_FILE).step_by(buf.len()) {
        fs.read(big, off, &mut buf)?;
        pattern(1, off, &mut want);
        if off == 1 << 20 {
            pattern(3, off, &mut want[..64 << 10]);
        }
        ok_big &= buf == want;
    }
    let direct = fs.resolve("/data/direct-renamed.bin")?;
    let dsize = fs.getattr(direct)?.size;
    let mut ok_direct = dsize == DIRECT_FILE / 2;
    for off in (0..dsize).step_by(buf.len()) {
        fs.read(direct, off, &mut buf)?;
        pattern(2, off, &mut want);
        ok_direct &= buf == want;
    }
    let link = String::from_utf8_lossy(&fs.readlink(fs.resolve("/latest")?)?).into_owned();
    let gone = fs.resolve("/scratch").is_err();
    println!(
        "    /README ({} links): {}",
        attr.nlink,
        verdict(ok_text && attr.nlink == 2)
    );
    println!(
        "    /data/big.bin, with the overwritten range: {}",
        verdict(ok_big)
    );
    println!(
        "    /data/direct-renamed.bin, truncated: {}",
        verdict(ok_direct)
    );
    println!("    /latest -> {link}: {}", verdict(link == "data/big.bin"));
    println!("    /scratch is gone: {}", verdict(gone));
    if ok_text && ok_big && ok_direct && gone && link == "data/big.bin" {
        Ok(())
    } else {
        Err("a file did not read back as written".into())
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "WRONG"
    }
}
