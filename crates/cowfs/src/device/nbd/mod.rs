//! An export on an NBD server as a [`BlockDevice`]: a cowfs image or a swap area on any
//! server that speaks the Network Block Device protocol (nbdkit, qemu-nbd, nbd-server), over
//! TCP or a Unix socket. The client is written from the protocol document:
//! fixed newstyle negotiation, `NBD_OPT_GO`, structured replies where offered, several
//! requests in flight on each connection, several connections where the server allows them
//! (`NBD_FLAG_CAN_MULTI_CONN`), FLUSH for the engine's flush, FUA for writes that must be
//! durable at once, TRIM for freed space.
//!
//! An export open read-write here is locked on this machine as an image file is (a lock file
//! under /run/lock named after the export), so two cowfs processes here never both write it
//! and `cowfs umount` can wait for a daemon's final commit. There is no lock across machines:
//! one writer per export among several hosts is the user's to keep.

mod address;
mod connection;
mod handshake;
mod protocol;

pub use address::{Endpoint, NbdAddress, DEFAULT_PORT};

use std::io;
use std::path::Path;
use std::time::Duration;

use connection::{Connection, Socket, Ticket};
use handshake::Export;
use protocol::*;

use super::file::lock;
use super::{check_aligned, BlockDevice, DeviceError, BLOCK_SIZE};

/// How long a request may go unanswered before its connection is given up (the Linux NBD
/// driver's default too).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections opened when the server allows several and the address does not say.
pub const DEFAULT_CONNECTIONS: usize = 4;
/// How long the negotiation may take.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest TRIM cowfs sends (the protocol's length field is 32 bits).
const MAX_TRIM: u64 = 1 << 30;
/// The largest piece a write is cut into: a larger one goes out as several requests in flight
/// together, so the server works on them in parallel and writes the first piece while the
/// next arrive (one 4 MiB request is received whole before the server starts on it). The
/// pieces share a connection (see `connection`). Reads are not cut: a server reads a request
/// with one pread, the host's readahead behind it; cut in 1 MiB pieces, reads from `nbdkit
/// file cache=none` ran at half the rate or less in `bench fs --nbd` (likely each piece's
/// eviction from the server's page cache undoing its neighbours' readahead).
const WRITE_PIECE: usize = 1 << 20;
/// The most buffers one request's payload is sent from (one sendmsg; Linux's IOV_MAX is 1024,
/// and the request header takes one).
const MAX_PIECES: usize = 1023;

pub struct NbdDevice {
    /// The address as given, for messages.
    name: String,
    /// This machine's lock on the export, held while the device is open.
    _lock: std::fs::File,
    connections: Vec<Connection>,
    export: Export,
    len: u64,
    read_only: bool,
    /// The largest payload of one request, a whole number of blocks.
    max_request: usize,
}

impl std::fmt::Debug for NbdDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdDevice")
            .field("address", &self.name)
            .field("connections", &self.connections.len())
            .field("export", &self.export)
            .finish()
    }
}

fn connect(address: &NbdAddress, name: &str) -> io::Result<(Socket, Export)> {
    let at = |e| DeviceError::wrap(name, e);
    let socket = Socket::connect(&address.endpoint).map_err(at)?;
    socket.set_timeout(NEGOTIATION_TIMEOUT).map_err(at)?;
    let export = handshake::negotiate(&mut &socket, &address.export).map_err(at)?;
    Ok((socket, export))
}

/// Takes this machine's lock on the export: exclusive to write, shared to read.
fn lock_export(address: &NbdAddress, name: &str, write: bool) -> io::Result<std::fs::File> {
    let dir = Path::new("/run/lock");
    let dir = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let key = address.export_key();
    let readable: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(120)
        .collect();
    let path = dir.join(format!(
        "cowfs-nbd-{readable}-{:08x}.lock",
        crc32c::crc32c(key.as_bytes())
    ));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| DeviceError::wrap(&format!("{name}: lock file {}", path.display()), e))?;
    lock(&file, write).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("{name}: the export is in use (mounted, or open in another cowfs process on this machine)"),
        ),
        _ => e,
    })?;
    Ok(file)
}

impl NbdDevice {
    /// Connects to the export, with as many connections as the server allows and the address
    /// asks for (4 by default).
    pub fn open(address: &NbdAddress, read_only: bool) -> io::Result<Self> {
        let name = address.to_string();
        let refuse =
            |why: String| DeviceError::io(rustix::io::Errno::INVAL, format!("{name}: {why}"));
        let timeout = address.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let lock = lock_export(address, &name, !read_only)?;
        let (socket, export) = connect(address, &name)?;
        let start = |socket| {
            Connection::start(socket, name.clone(), export.structured, timeout)
                .map_err(|e| DeviceError::wrap(&name, e))
        };
        let mut connections = vec![start(socket)?];
        if export.min_block as u64 > BLOCK_SIZE
            || !BLOCK_SIZE.is_multiple_of(export.min_block.max(1) as u64)
        {
            return Err(refuse(format!(
                "the export's smallest request is {} bytes; cowfs needs 4096-byte requests",
                export.min_block
            )));
        }
        if export.offers(FLAG_READ_ONLY) && !read_only {
            return Err(DeviceError::io(
                rustix::io::Errno::ROFS,
                format!("{name}: the export is read-only"),
            ));
        }
        let len = export.size - export.size % BLOCK_SIZE;
        if len == 0 {
            return Err(refuse(format!(
                "the export holds {} bytes, less than a block",
                export.size
            )));
        }
        let wanted = if export.offers(FLAG_CAN_MULTI_CONN) {
            address.connections.unwrap_or(DEFAULT_CONNECTIONS)
        } else {
            1
        };
        while connections.len() < wanted {
            let (socket, more) = connect(address, &name)?;
            if (more.size, more.flags) != (export.size, export.flags) {
                return Err(refuse("the export changed between two connections".into()));
            }
            connections.push(start(socket)?);
        }
        let max = (export.max_payload as u64).min(DEFAULT_MAX_PAYLOAD as u64);
        Ok(NbdDevice {
            name,
            _lock: lock,
            connections,
            export,
            len,
            read_only,
            max_request: (max - max % BLOCK_SIZE).max(BLOCK_SIZE) as usize,
        })
    }

    /// The connections open to the export.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// Whether the server keeps written data in a cache that FLUSH writes out; a server that
    /// offers no FLUSH says every write is durable when acknowledged.
    pub fn flushes(&self) -> bool {
        self.export.offers(FLAG_SEND_FLUSH)
    }

    /// The first idle connection, else the one with the fewest requests in flight. A single
    /// stream of requests thus stays on the first connection: servers keep state per
    /// connection (nbdkit's file plugin opens the file once for each, and the host's readahead
    /// is per open file), and a sequential stream dealt round the connections looks strided to
    /// each. Concurrent requests spread; the pieces of one write stay together.
    fn connection(&self) -> &Connection {
        let mut best = &self.connections[0];
        let mut fewest = usize::MAX;
        for connection in &self.connections {
            let n = connection.in_flight();
            if n == 0 {
                return connection;
            }
            if n < fewest {
                (best, fewest) = (connection, n);
            }
        }
        best
    }

    /// The largest payload of one write request this client sends.
    fn write_piece(&self) -> usize {
        self.max_request.min(WRITE_PIECE)
    }

    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            return Err(DeviceError::io(
                rustix::io::Errno::ROFS,
                format!("{}: opened read-only", self.name),
            ));
        }
        Ok(())
    }

    /// Writes `bufs` back to back from `offset`, each request a run of them no larger than
    /// the server takes, all in flight at once.
    fn write_batches(&self, offset: u64, bufs: &[&[u8]], flags: u16) -> io::Result<()> {
        self.writable()?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        check_aligned(offset, total, self.len)?;
        let connection = self.connection();
        let mut tickets = Vec::new();
        let mut at = offset;
        for batch in &batches(bufs, self.write_piece()) {
            let len: usize = batch.iter().map(|b| b.len()).sum();
            tickets.push(connection.submit(Command::Write, flags, at, len as u32, batch, None));
            at += len as u64;
        }
        wait_all(tickets)
    }
}

/// The first error of several requests, after every one has completed.
fn wait_all(tickets: Vec<Ticket<'_>>) -> io::Result<()> {
    let results: Vec<io::Result<()>> = tickets.into_iter().map(Ticket::wait).collect();
    results.into_iter().collect()
}

/// `bufs` cut into runs of at most `max` bytes and `MAX_PIECES` buffers (a buffer larger than
/// `max` is split).
fn batches<'a>(bufs: &[&'a [u8]], max: usize) -> Vec<Vec<&'a [u8]>> {
    let mut batches = Vec::new();
    let mut batch: Vec<&[u8]> = Vec::new();
    let mut size = 0;
    for buf in bufs {
        for piece in buf.chunks(max) {
            if size + piece.len() > max || batch.len() == MAX_PIECES {
                batches.push(std::mem::take(&mut batch));
                size = 0;
            }
            batch.push(piece);
            size += piece.len();
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

impl BlockDevice for NbdDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_aligned(offset, buf.len(), self.len)?;
        let connection = self.connection();
        let mut tickets = Vec::new();
        let mut at = offset;
        for chunk in buf.chunks_mut(self.max_request) {
            let len = chunk.len();
            tickets.push(connection.submit(Command::Read, 0, at, len as u32, &[], Some(chunk)));
            at += len as u64;
        }
        wait_all(tickets)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_batches(offset, &[data], 0)
    }

    fn write_vectored_at(&self, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        self.write_batches(offset, bufs, 0)
    }

    /// FUA where the server offers it: one round trip instead of a write and a flush.
    fn write_durable_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.export.offers(FLAG_SEND_FUA) {
            return self.write_batches(offset, &[data], CMD_FLAG_FUA);
        }
        self.write_at(offset, data)?;
        self.flush()
    }

    /// With several connections, the server's multi-conn promise makes one connection's FLUSH
    /// cover the writes acknowledged on all of them; every write this flush covers has been
    /// acknowledged, since writes return only then.
    fn flush(&self) -> io::Result<()> {
        self.writable()?;
        if !self.flushes() {
            return Ok(());
        }
        self.connection()
            .submit(Command::Flush, 0, 0, 0, &[], None)
            .wait()
    }

    /// Every range's TRIM in flight at once.
    fn discard(&self, ranges: &[(u64, u64)]) -> io::Result<()> {
        self.writable()?;
        if !self.export.offers(FLAG_SEND_TRIM) {
            return Ok(());
        }
        let connection = self.connection();
        let mut tickets = Vec::new();
        for &(offset, len) in ranges {
            check_aligned(offset, 0, self.len)?;
            let end = offset.saturating_add(len).min(self.len);
            let mut at = offset;
            while at < end {
                let n = (end - at).min(MAX_TRIM);
                tickets.push(connection.submit(Command::Trim, 0, at, n as u32, &[], None));
                at += n;
            }
        }
        wait_all(tickets)
    }

    fn len(&self) -> u64 {
        self.len
    }

    /// An export's size is the server's; it cannot grow from here (as a block device).
    fn resize(&self, len: u64) -> io::Result<()> {
        if len > self.len {
            return Err(DeviceError::io(
                rustix::io::Errno::FBIG,
                format!(
                    "{}: an NBD export cannot grow (it holds {} bytes; its server sets its size)",
                    self.name, self.len
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
