//! cowfs on NBD exports served by a real server (nbdkit, on a Unix socket the test owns): a
//! filesystem made, written, synced, read back and checked over the network protocol; the
//! export locked on this machine while open; and the server killed at random points of a
//! workload, after which the image opens at its last commit with every fsync'd byte intact.

mod common;
#[path = "../../../tests/support/nbd_server.rs"]
mod nbd_server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use cowfs::device::{self, Access, BlockDevice};
use cowfs::{Filesystem, MkfsOptions};
use nbd_server::NbdServer;

fn open(uri: &str, access: Access) -> std::io::Result<Arc<dyn BlockDevice>> {
    device::open(uri.as_ref(), access)
}

/// The bytes of version `version` of file `n`.
fn contents(n: usize, version: u64, len: usize) -> Vec<u8> {
    let seed = (n as u64) << 32 | version;
    (0..len)
        .map(|i| ((i as u64 * 2_654_435_761) ^ seed.wrapping_mul(0x9e37_79b9)) as u8)
        .collect()
}

#[test]
fn a_filesystem_on_an_export_round_trips_and_checks_clean() {
    let Some(server) = NbdServer::memory("256M") else {
        return;
    };
    round_trip(&server.uri());
}

#[test]
fn over_tcp_too() {
    let Some(server) = NbdServer::memory_tcp("256M") else {
        return;
    };
    // nbdkit's memory plugin serves any export name: the name is sent, and taken.
    round_trip(&format!("{}disk", server.uri()));
}

/// mkfs, a file written and fsync'd, the export locked while open, everything read back
/// after reopening, fsck clean.
fn round_trip(uri: &str) {
    let dev = open(uri, Access::ReadWrite).unwrap();
    assert_eq!(dev.len(), 256 * MIB);
    Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    let big = contents(1, 1, 24 << 20);
    let a = file(&fs, fs.root(), "a");
    fs.write(a, 0, &big).unwrap();
    fs.fsync(a).unwrap();
    let small = file(&fs, fs.root(), "small");
    fs.write(small, 0, b"inline").unwrap();
    fs.unmount().unwrap();
    drop(dev);

    let dev = open(uri, Access::ReadWrite).unwrap();
    let err = open(uri, Access::ReadWrite).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
    assert_eq!(read_all(&fs, fs.resolve("/a").unwrap()), big);
    assert_eq!(read_all(&fs, fs.resolve("/small").unwrap()), b"inline");
    fs.unmount().unwrap();
    let report = cowfs::fsck::check(dev, &mut |_, _| {});
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.data_bytes_verified, 24 << 20);
}

/// Writes new versions of a few files over and over, fsyncing each, until the device fails;
/// records the last version of each file whose fsync returned, and the one in flight.
fn workload(fs: &Filesystem, durable: &Mutex<Vec<(u64, u64)>>, stop: &AtomicBool) {
    const FILES: usize = 4;
    const LEN: usize = 300_000;
    for n in 0..FILES {
        if fs
            .create(
                fs.root(),
                format!("f{n}").as_bytes(),
                cowfs::format::FileKind::Regular,
                cowfs::CreateAttrs::with_mode(0o644),
            )
            .is_err()
        {
            return;
        }
    }
    for round in 1.. {
        for n in 0..FILES {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let Ok(id) = fs.resolve(&format!("/f{n}")) else {
                return;
            };
            durable.lock().unwrap()[n].1 = round;
            let done = fs
                .write(id, 0, &contents(n, round, LEN))
                .and_then(|_| fs.fsync(id));
            if done.is_err() {
                return;
            }
            durable.lock().unwrap()[n].0 = round;
        }
    }
}

#[test]
fn a_server_killed_mid_workload_leaves_the_image_at_its_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("export.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(256 * MIB)
        .unwrap();
    let Some(mut server) = NbdServer::file(&image) else {
        return;
    };
    let dev = open(&server.uri(), Access::ReadWrite).unwrap();
    Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    drop(dev);
    // Pseudo-random kill points from 20 to 620 ms into each round; NBD_KILL_ROUNDS=N and
    // NBD_KILL_SEED=S soak more and other points.
    let mut seed: u64 = env_number("NBD_KILL_SEED", 0x2545_f491_4f6c_dd1d).max(1);
    for round in 0..env_number("NBD_KILL_ROUNDS", 8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = Duration::from_millis(20 + seed % 600);
        let dev = open(&server.uri(), Access::ReadWrite).unwrap();
        let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
        // Files made in earlier rounds hold their last durable version.
        let durable = Mutex::new(vec![(0u64, 0u64); 4]);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| workload(&fs, &durable, &stop));
            std::thread::sleep(kill_after);
            server.kill();
            stop.store(true, Ordering::Relaxed);
        });
        drop(fs); // its final commit fails: the server is gone
        drop(dev);
        server.restart();

        let dev = open(&server.uri(), Access::ReadWrite).unwrap();
        let report = cowfs::fsck::check(dev.clone(), &mut |_, _| {});
        assert!(report.is_clean(), "round {round}: {:?}", report.problems);
        let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
        for (n, (synced, in_flight)) in durable.lock().unwrap().iter().enumerate() {
            let Ok(id) = fs.resolve(&format!("/f{n}")) else {
                assert_eq!(*synced, 0, "round {round}: /f{n} was fsync'd and is gone");
                continue;
            };
            let got = read_all(&fs, id);
            if *synced == 0 && got.is_empty() {
                continue;
            }
            // Exactly one whole version: the last fsync'd, or the one whose fsync was cut off.
            let found = [*synced, *in_flight]
                .into_iter()
                .find(|v| *v > 0 && got == contents(n, *v, 300_000));
            assert!(
                found.is_some(),
                "round {round}: /f{n} is neither version {synced} nor {in_flight}"
            );
        }
        // Start the next round from fresh files.
        for n in 0..4 {
            let _ = fs.unlink(fs.root(), format!("f{n}").as_bytes());
        }
        fs.unmount().unwrap();
    }
}

#[test]
fn many_threads_share_the_connections_and_every_read_is_exact() {
    let Some(server) = NbdServer::memory("64M") else {
        return;
    };
    for connections in [1, 4] {
        let uri = format!("{}&connections={connections}", server.uri());
        let dev = open(&uri, Access::ReadWrite).unwrap();
        std::thread::scope(|s| {
            for t in 0..6usize {
                let dev = &dev;
                s.spawn(move || {
                    // Each thread owns 150 slots of 64 KiB, one a round; sizes from one block
                    // to 64 KiB.
                    for round in 0..150u64 {
                        let slot = t * 150 + round as usize;
                        let len = 4096 * (1 + (round as usize + t) % 16);
                        let data = contents(slot, round, len);
                        let at = slot as u64 * 65536;
                        dev.write_at(at, &data).unwrap();
                        let mut back = vec![0; len];
                        dev.read_at(at, &mut back).unwrap();
                        assert_eq!(back, data, "slot {slot} round {round}");
                    }
                });
            }
        });
        dev.flush().unwrap();
    }
}

/// Bursts of requests whose replies outgrow the socket buffers: thousands of TRIMs from one
/// call, and reads split over several requests beside large writes from another thread. A
/// client that only reads replies once it has sent everything stalls here until its timeout.
#[test]
fn bursts_larger_than_the_socket_buffers_never_stall() {
    let Some(server) = NbdServer::memory("256M") else {
        return;
    };
    let uri = format!("{}&connections=1&timeout=5", server.uri());
    let dev = open(&uri, Access::ReadWrite).unwrap();
    let ranges: Vec<(u64, u64)> = (0..200_000u64)
        .map(|i| ((i % 60_000) * 4096, 4096))
        .collect();
    dev.discard(&ranges).unwrap();
    let big = contents(7, 1, 96 << 20);
    dev.write_at(0, &big).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let other = contents(8, 1, 64 << 20);
            for _ in 0..4 {
                dev.write_at(128 << 20, &other).unwrap();
            }
        });
        for _ in 0..4 {
            let mut back = vec![0; 96 << 20];
            dev.read_at(0, &mut back).unwrap();
            assert!(back == big, "the split read came back whole");
        }
    });
}

/// Large writes from several threads on one connection, each cut into requests: a sender
/// whose socket is full may read a reply for the others, but must never wait for one while the
/// server waits for the rest of its payload (that stalled until the timeout, one run in ten of
/// `bench fs --nbd`, when another thread took the reply the sender had seen arrive).
#[test]
fn senders_never_wait_for_replies_the_server_cannot_send() {
    let Some(server) = NbdServer::memory("256M") else {
        return;
    };
    let uri = format!("{}&connections=1&timeout=3", server.uri());
    let dev = open(&uri, Access::ReadWrite).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let dev = &dev;
            s.spawn(move || {
                let data = contents(t as usize, 1, 3 << 20);
                for round in 0..150u64 {
                    let at = (t * 16 + round % 16) * (4 << 20);
                    dev.write_at(at, &data).unwrap();
                }
            });
        }
    });
    // Every write, cut into 1 MiB requests, landed whole and in place.
    for t in 0..4u64 {
        let data = contents(t as usize, 1, 3 << 20);
        for slot in 0..16 {
            let mut back = vec![0; data.len()];
            dev.read_at((t * 16 + slot) * (4 << 20), &mut back).unwrap();
            assert!(back == data, "thread {t} slot {slot}");
        }
    }
}

/// A server that starts failing writes with an errno of its own (ENOSPC, EPERM: nbdkit's error
/// filter, switched on by a file): the write or fsync that meets it reports that errno, the
/// filesystem stops taking changes, and once the server is well again the image opens at its
/// last commit, fsck clean.
#[test]
fn server_write_errors_stop_the_filesystem_at_its_last_commit() {
    for (name, errno) in [
        ("ENOSPC", cowfs::Errno::NOSPC),
        ("EPERM", cowfs::Errno::PERM),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let trigger = dir.path().join("fail-writes");
        let image = dir.path().join("export.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(128 * MIB)
            .unwrap();
        let plugin = [
            "--filter=error".to_string(),
            "file".to_string(),
            image.display().to_string(),
            format!("error={name}"),
            "error-pwrite-rate=100%".to_string(),
            format!("error-pwrite-file={}", trigger.display()),
        ];
        let plugin: Vec<&str> = plugin.iter().map(String::as_str).collect();
        let Some(server) = NbdServer::start(&plugin) else {
            return;
        };
        let dev = open(&server.uri(), Access::ReadWrite).unwrap();
        Filesystem::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
        let fs = Filesystem::open(dev.clone(), &no_timer()).unwrap();
        let kept = contents(1, 1, 200_000);
        let a = file(&fs, fs.root(), "a");
        fs.write(a, 0, &kept).unwrap();
        fs.fsync(a).unwrap();

        std::fs::write(&trigger, b"").unwrap();
        let b = file(&fs, fs.root(), "b");
        let failed = fs
            .write_direct(b, 0, &cowfs::device::AlignedBuf::from_slice(&[7; 65536]))
            .and_then(|_| fs.fsync(b))
            .unwrap_err();
        assert_eq!(failed.errno(), errno, "{failed}");
        assert!(
            failed.reason().contains("nbd+unix"),
            "names the export: {failed}"
        );
        let after = fs.write(a, 0, b"more").unwrap_err();
        assert_eq!(after.errno(), cowfs::Errno::ROFS, "stopped: {after}");
        drop(fs);
        drop(dev);

        std::fs::remove_file(&trigger).unwrap();
        let dev = open(&server.uri(), Access::ReadWrite).unwrap();
        let report = cowfs::fsck::check(dev.clone(), &mut |_, _| {});
        assert!(report.is_clean(), "{name}: {:?}", report.problems);
        let fs = Filesystem::open(dev, &no_timer()).unwrap();
        assert_eq!(read_all(&fs, fs.resolve("/a").unwrap()), kept);
        assert!(fs.resolve("/b").is_err(), "{name}: /b was never committed");
        fs.unmount().unwrap();
    }
}
