//! The client against a scripted server on a Unix socket: the protocol's variants (with and
//! without NBD_OPT_GO and structured replies, replies out of order and in pieces) and a
//! server that errs, lies, hangs or goes away. Real servers are tested in tests/nbd.rs.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::device::os_errno;

const SIZE: u64 = 1 << 20;

#[derive(Clone, Copy)]
struct Script {
    go: bool,
    structured: bool,
    flags: u16,
    /// The largest payload the server states (NBD_INFO_BLOCK_SIZE).
    max_payload: u32,
    /// Writes at or past this offset fail with ENOSPC.
    full_from: u64,
    /// What the server does on the n-th request (counting from 0) instead of answering.
    misbehave: Option<(usize, Misbehaviour)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Misbehaviour {
    Garbage,
    Hangs,
    ClosesMidReply,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            go: true,
            structured: true,
            flags: FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_TRIM,
            max_payload: 8192,
            full_from: u64::MAX,
            misbehave: None,
        }
    }
}

struct Server {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    disk: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    fn start(script: Script) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("nbd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let disk = Arc::new(Mutex::new(vec![0u8; SIZE as usize]));
        let served = disk.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let (disk, stream) = (served.clone(), stream.unwrap());
                std::thread::spawn(move || {
                    let _ = serve(stream, &disk, script);
                });
            }
        });
        Server {
            _dir: dir,
            socket,
            disk,
        }
    }

    fn address(&self, export: &str, query: &str) -> NbdAddress {
        let uri = format!(
            "nbd+unix:///{export}?socket={}{query}",
            self.socket.display()
        );
        NbdAddress::parse(&uri).unwrap()
    }

    fn open(&self) -> NbdDevice {
        NbdDevice::open(&self.address("disk", ""), false).unwrap()
    }
}

fn read_n<const N: usize>(s: &mut UnixStream) -> std::io::Result<[u8; N]> {
    let mut b = [0; N];
    s.read_exact(&mut b)?;
    Ok(b)
}

fn option_reply(s: &mut UnixStream, option: u32, kind: u32, data: &[u8]) -> std::io::Result<()> {
    let mut m = OPTION_REPLY_MAGIC.to_be_bytes().to_vec();
    m.extend_from_slice(&option.to_be_bytes());
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&(data.len() as u32).to_be_bytes());
    m.extend_from_slice(data);
    s.write_all(&m)
}

fn simple_reply(s: &mut UnixStream, error: u32, cookie: u64, data: &[u8]) -> std::io::Result<()> {
    let mut m = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
    m.extend_from_slice(&error.to_be_bytes());
    m.extend_from_slice(&cookie.to_be_bytes());
    m.extend_from_slice(data);
    s.write_all(&m)
}

fn chunk(
    s: &mut UnixStream,
    flags: u16,
    kind: u16,
    cookie: u64,
    body: &[u8],
) -> std::io::Result<()> {
    let mut m = STRUCTURED_REPLY_MAGIC.to_be_bytes().to_vec();
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&cookie.to_be_bytes());
    m.extend_from_slice(&(body.len() as u32).to_be_bytes());
    m.extend_from_slice(body);
    s.write_all(&m)
}

/// Negotiates, then answers requests. Reads are answered in pairs, the second first, and
/// with structured replies in two chunks, the later half (a hole where it reads as zeros) first.
fn serve(mut s: UnixStream, disk: &Mutex<Vec<u8>>, script: Script) -> std::io::Result<()> {
    s.write_all(&INIT_MAGIC.to_be_bytes())?;
    s.write_all(&OPTION_MAGIC.to_be_bytes())?;
    s.write_all(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes())?;
    read_n::<4>(&mut s)?;
    let mut structured = false;
    loop {
        let head = read_n::<16>(&mut s)?;
        let option = u32::from_be_bytes(head[8..12].try_into().unwrap());
        let mut data = vec![0; u32::from_be_bytes(head[12..16].try_into().unwrap()) as usize];
        s.read_exact(&mut data)?;
        match option {
            OPT_STRUCTURED_REPLY if script.structured => {
                structured = true;
                option_reply(&mut s, option, REP_ACK, &[])?
            }
            OPT_GO if script.go => {
                let len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
                if &data[4..4 + len] != b"disk" {
                    option_reply(&mut s, option, REP_ERR_UNKNOWN, b"only 'disk' here")?;
                    continue;
                }
                let mut info = INFO_EXPORT.to_be_bytes().to_vec();
                info.extend_from_slice(&SIZE.to_be_bytes());
                info.extend_from_slice(&(script.flags | 1).to_be_bytes());
                option_reply(&mut s, option, REP_INFO, &info)?;
                let mut sizes = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                for v in [1u32, 4096, script.max_payload] {
                    sizes.extend_from_slice(&v.to_be_bytes());
                }
                option_reply(&mut s, option, REP_INFO, &sizes)?;
                option_reply(&mut s, option, REP_ACK, &[])?;
                break;
            }
            OPT_EXPORT_NAME => {
                s.write_all(&SIZE.to_be_bytes())?;
                s.write_all(&(script.flags | 1).to_be_bytes())?;
                break;
            }
            _ => option_reply(&mut s, option, REP_ERR_UNSUP, &[])?,
        }
    }
    let mut held_read: Option<(u64, u64, usize)> = None;
    for n in 0.. {
        let head = read_n::<28>(&mut s)?;
        let mut f = Fields(&head[4..]);
        let (flags, command) = (f.u16().unwrap(), f.u16().unwrap());
        let (cookie, offset, len) = (
            f.u64().unwrap(),
            f.u64().unwrap(),
            f.u32().unwrap() as usize,
        );
        let _ = flags;
        match script.misbehave {
            Some((at, how)) if at == n => match how {
                Misbehaviour::Garbage => return s.write_all(b"what is this protocol?"),
                Misbehaviour::Hangs => {
                    std::thread::sleep(Duration::from_secs(60));
                    return Ok(());
                }
                Misbehaviour::ClosesMidReply => {
                    return simple_reply(&mut s, 0, cookie, &[1, 2, 3]).and(Ok(()))
                }
            },
            _ => {}
        }
        match command {
            0 => match held_read.take() {
                None => held_read = Some((cookie, offset, len)),
                Some(first) => {
                    answer_read(&mut s, disk, structured, (cookie, offset, len))?;
                    answer_read(&mut s, disk, structured, first)?;
                }
            },
            1 => {
                let mut data = vec![0; len];
                s.read_exact(&mut data)?;
                if offset + len as u64 > script.full_from {
                    if structured {
                        let mut body = 28u32.to_be_bytes().to_vec();
                        body.extend_from_slice(&9u16.to_be_bytes());
                        body.extend_from_slice(b"disk full");
                        chunk(
                            &mut s,
                            REPLY_FLAG_DONE,
                            REPLY_TYPE_ERROR_BIT | 1,
                            cookie,
                            &body,
                        )?;
                    } else {
                        simple_reply(&mut s, 28, cookie, &[])?;
                    }
                    continue;
                }
                disk.lock().unwrap()[offset as usize..][..len].copy_from_slice(&data);
                simple_reply(&mut s, 0, cookie, &[])?;
            }
            2 => return Ok(()),
            3 => simple_reply(&mut s, 0, cookie, &[])?,
            4 => {
                disk.lock().unwrap()[offset as usize..][..len].fill(0);
                simple_reply(&mut s, 0, cookie, &[])?;
            }
            _ => simple_reply(&mut s, 22, cookie, &[])?,
        }
        // A read held for a partner is answered once nothing more is coming.
        s.set_read_timeout(Some(Duration::from_millis(20)))?;
        let more = rustix::net::recv(&s, &mut [0u8; 1], rustix::net::RecvFlags::PEEK).is_ok();
        s.set_read_timeout(None)?;
        if let Some(first) = held_read.take_if(|_| !more) {
            answer_read(&mut s, disk, structured, first)?;
        }
    }
    Ok(())
}

/// A read answered from `disk`: with structured replies, in two chunks, the later half (a hole
/// where it reads as zeros) first.
fn answer_read(
    s: &mut UnixStream,
    disk: &Mutex<Vec<u8>>,
    structured: bool,
    (cookie, offset, len): (u64, u64, usize),
) -> std::io::Result<()> {
    let data = disk.lock().unwrap()[offset as usize..][..len].to_vec();
    if !structured {
        return simple_reply(s, 0, cookie, &data);
    }
    let half = len / 2;
    let later = &data[half..];
    if later.iter().all(|b| *b == 0) {
        let mut hole = (offset + half as u64).to_be_bytes().to_vec();
        hole.extend_from_slice(&(later.len() as u32).to_be_bytes());
        chunk(s, 0, REPLY_TYPE_OFFSET_HOLE, cookie, &hole)?;
    } else {
        let mut body = (offset + half as u64).to_be_bytes().to_vec();
        body.extend_from_slice(later);
        chunk(s, 0, REPLY_TYPE_OFFSET_DATA, cookie, &body)?;
    }
    let mut body = offset.to_be_bytes().to_vec();
    body.extend_from_slice(&data[..half]);
    chunk(s, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, cookie, &body)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn round_trip(device: &NbdDevice, server: &Server) {
    // Larger than the stated 8 KiB limit: three requests in flight, answered out of order.
    let data = pattern(20480, 7);
    device
        .write_vectored_at(4096, &[&data[..4096], &data[4096..]])
        .unwrap();
    device.flush().unwrap();
    let mut back = vec![0xAA; 20480 + 8192];
    device.read_at(4096, &mut back).unwrap();
    assert_eq!(&back[..20480], &data[..]);
    assert!(
        back[20480..].iter().all(|b| *b == 0),
        "a hole reads as zeros"
    );
    device.write_durable_at(0, &[9; 4096]).unwrap();
    device.discard(&[(8192, 4096)]).unwrap();
    let disk = server.disk.lock().unwrap();
    assert_eq!(&disk[..4096], &[9; 4096]);
    assert!(disk[8192..12288].iter().all(|b| *b == 0), "trimmed");
    assert_eq!(&disk[12288..24576], &data[8192..]);
}

#[test]
fn structured_replies_in_pieces_and_out_of_order() {
    let server = Server::start(Script::default());
    let device = server.open();
    assert!(device.export.structured);
    assert_eq!((device.len(), device.max_request), (SIZE, 8192));
    round_trip(&device, &server);
}

#[test]
fn servers_without_go_or_structured_replies() {
    let server = Server::start(Script {
        go: false,
        structured: false,
        ..Script::default()
    });
    let device = server.open();
    assert!(!device.export.structured);
    assert_eq!(device.max_request, DEFAULT_MAX_PAYLOAD as usize);
    round_trip(&device, &server);
}

#[test]
fn several_connections_only_where_the_server_allows() {
    let server = Server::start(Script::default());
    assert_eq!(server.open().connections(), 1, "no multi-conn flag");
    let server = Server::start(Script {
        flags: Script::default().flags | FLAG_CAN_MULTI_CONN,
        ..Script::default()
    });
    assert_eq!(server.open().connections(), DEFAULT_CONNECTIONS);
    let device = NbdDevice::open(&server.address("disk", "&connections=2"), false).unwrap();
    assert_eq!(device.connections(), 2);
    std::thread::scope(|s| {
        for seed in 0..4u8 {
            let device = &device;
            s.spawn(move || {
                for round in 0..20u64 {
                    let at = (seed as u64 * 20 + round) * 8192;
                    let data = pattern(8192, seed ^ round as u8);
                    device.write_at(at, &data).unwrap();
                    let mut back = vec![0; 8192];
                    device.read_at(at, &mut back).unwrap();
                    assert_eq!(back, data);
                }
            });
        }
    });
}

#[test]
fn refusals_name_the_export_and_the_address() {
    let server = Server::start(Script::default());
    let err = NbdDevice::open(&server.address("nope", ""), false).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("no such export") && text.contains("only 'disk' here"),
        "{text}"
    );
    assert!(
        text.contains(&server.socket.display().to_string()),
        "{text}"
    );
    let read_only = Server::start(Script {
        flags: FLAG_READ_ONLY,
        ..Script::default()
    });
    let err = NbdDevice::open(&read_only.address("disk", ""), false).unwrap_err();
    assert_eq!(os_errno(&err), Some(rustix::io::Errno::ROFS), "{err}");
    let device = NbdDevice::open(&read_only.address("disk", ""), true).unwrap();
    let err = device.write_at(0, &[0; 4096]).unwrap_err();
    assert_eq!(os_errno(&err), Some(rustix::io::Errno::ROFS), "{err}");
    let err = device.resize(SIZE * 2).unwrap_err();
    assert!(err.to_string().contains("cannot grow"), "{err}");
}

#[test]
fn server_errors_keep_their_errno_and_say_where() {
    for structured in [true, false] {
        let server = Server::start(Script {
            structured,
            full_from: 65536,
            ..Script::default()
        });
        let device = server.open();
        device.write_at(0, &[1; 4096]).unwrap();
        let err = device.write_at(65536, &[1; 4096]).unwrap_err();
        assert_eq!(os_errno(&err), Some(rustix::io::Errno::NOSPC), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("Write of 4096 bytes at 65536") && text.contains("nbd+unix"),
            "{text}"
        );
        assert_eq!(structured, text.contains("disk full"), "{text}");
        let engine_error = crate::Error::io("write", &err);
        assert_eq!(engine_error.errno(), rustix::io::Errno::NOSPC);
        device.write_at(4096, &[2; 4096]).unwrap(); // the connection goes on
    }
}

fn assert_connection_lost(script: Script, says: &str) {
    let server = Server::start(script);
    let device = server.open();
    let started = Instant::now();
    let mut buf = vec![0; 4096];
    let err = device.read_at(0, &mut buf).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("connection lost") && text.contains(says),
        "{text}"
    );
    assert_eq!(os_errno(&err), Some(rustix::io::Errno::IO), "{text}");
    assert!(started.elapsed() < Duration::from_secs(20), "no hang");
    // Every later request fails at once with the same reason; nothing is written.
    let err = device.write_at(0, &[1; 4096]).unwrap_err();
    assert!(err.to_string().contains(says), "{err}");
    assert!(server.disk.lock().unwrap().iter().all(|b| *b == 0));
}

#[test]
fn a_server_that_sends_garbage_fails_the_connection() {
    let misbehave = Some((0, Misbehaviour::Garbage));
    assert_connection_lost(
        Script {
            misbehave,
            ..Script::default()
        },
        "bad reply magic",
    );
}

#[test]
fn a_server_that_closes_mid_reply_fails_the_connection() {
    let misbehave = Some((0, Misbehaviour::ClosesMidReply));
    let script = Script {
        misbehave,
        structured: false,
        ..Script::default()
    };
    assert_connection_lost(script, "failed to fill whole buffer");
}

#[test]
fn a_server_that_stops_answering_times_out() {
    let server = Server::start(Script {
        misbehave: Some((0, Misbehaviour::Hangs)),
        ..Script::default()
    });
    let device = NbdDevice::open(&server.address("disk", "&timeout=1"), false).unwrap();
    let started = Instant::now();
    let err = device.read_at(0, &mut [0; 4096]).unwrap_err();
    assert!(err.to_string().contains("no reply in 1 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn batches_respect_the_payload_limit_and_iov_max() {
    let page = [0u8; 4096];
    let bufs: Vec<&[u8]> = vec![&page; 2000];
    let runs = batches(&bufs, 32 << 20);
    assert_eq!(
        runs.iter().map(Vec::len).collect::<Vec<_>>(),
        [MAX_PIECES, 2000 - MAX_PIECES]
    );
    let big = vec![0u8; 5 * 4096];
    let runs = batches(&[&big, &page], 8192);
    let sizes: Vec<usize> = runs
        .iter()
        .map(|r| r.iter().map(|b| b.len()).sum())
        .collect();
    assert_eq!(sizes, [8192, 8192, 8192]);
}
