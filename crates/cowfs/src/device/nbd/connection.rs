//! One connection to an export in the transmission phase. Requests from any number of threads
//! go out under a send lock, and their replies come back in whatever order the server sends
//! them. There is no reader thread: a thread waiting for its reply takes the reader's turn if
//! no one has it, reads replies (putting read data straight into the buffer of the thread that
//! asked) until its own has come, and hands the turn on. A lone request is thus sent and
//! answered on its own thread, with no wake-up in between. A connection that fails (the server
//! goes away, resets it, sends what the protocol does not allow, or stops answering) fails
//! every request in flight and every later one: the caller decides whether to connect again.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::marker::PhantomData;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

use super::address::Endpoint;
use super::protocol::*;
use crate::device::DeviceError;

pub enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    pub fn connect(endpoint: &Endpoint) -> io::Result<Socket> {
        Ok(match endpoint {
            Endpoint::Tcp { host, port } => {
                let stream = TcpStream::connect((host.as_str(), *port))?;
                // Requests are small and waited on: never hold one back to fill a segment.
                stream.set_nodelay(true)?;
                Socket::Tcp(stream)
            }
            Endpoint::Unix(path) => Socket::Unix(UnixStream::connect(path)?),
        })
    }

    /// Bounds how long one read or one send may wait for the server.
    pub fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s
                .set_read_timeout(Some(timeout))
                .and(s.set_write_timeout(Some(timeout))),
            Socket::Unix(s) => s
                .set_read_timeout(Some(timeout))
                .and(s.set_write_timeout(Some(timeout))),
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Socket::Tcp(s) => s.shutdown(Shutdown::Both),
            Socket::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    /// Sends what of `parts` the socket takes now, without waiting (0 bytes is WouldBlock).
    /// MSG_NOSIGNAL: a server that went away is an EPIPE for this request, not a SIGPIPE for
    /// whatever program links cowfs.
    fn try_send(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        use rustix::net::SendFlags;
        let mut control = rustix::net::SendAncillaryBuffer::default();
        let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
        match rustix::net::sendmsg(self, parts, &mut control, flags)? {
            0 => Err(io::ErrorKind::WriteZero.into()),
            sent => Ok(sent),
        }
    }

    /// Sends every byte of `parts`, waiting up to 10 s for room: for the negotiation and the
    /// last goodbye, when no replies are outstanding.
    fn send_all(&self, parts: &mut [IoSlice<'_>]) -> io::Result<()> {
        const WAIT: Timespec = Timespec {
            tv_sec: 10,
            tv_nsec: 0,
        };
        let mut parts = parts;
        while !parts.is_empty() {
            match self.try_send(parts) {
                Ok(sent) => IoSlice::advance_slices(&mut parts, sent),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if poll(self, PollFlags::OUT, &WAIT)?.is_empty() {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Socket::Tcp(s) => s.as_fd(),
            Socket::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for &Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => (&*s).read(buf),
            Socket::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_all(&mut [IoSlice::new(buf)])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a read's data goes: the waiting caller's buffer.
#[derive(Clone, Copy)]
struct ReadTarget {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer behind `ptr` is borrowed mutably by a `Ticket` for as long as its request
// is pending, and only the thread with the reader's turn writes it in that time (see `Ticket`).
unsafe impl Send for ReadTarget {}

/// A request sent and not yet answered.
struct Pending {
    command: Command,
    offset: u64,
    len: u32,
    target: Option<ReadTarget>,
    /// Bytes of a structured read reply received so far.
    received: u64,
    /// An error chunk of a structured reply; reported when the reply is done.
    error: Option<io::Error>,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    /// Replies read for requests whose threads have yet to take them.
    done: HashMap<u64, io::Result<()>>,
    /// Whether a thread has the reader's turn.
    reading: bool,
    /// Why the connection failed, once it has: every request from then on fails with it.
    broken: Option<String>,
}

/// The connection's state, shared by the threads that use it.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a reply is done or the reader's turn is free.
    turn: Condvar,
    /// The export's address, for error messages.
    name: String,
    socket: Socket,
    structured: bool,
    /// How long a read may wait for the server.
    timeout: Duration,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lost(&self, why: &str) -> io::Error {
        DeviceError::io(
            rustix::io::Errno::IO,
            format!("{}: connection lost: {why}", self.name),
        )
    }

    /// Marks the connection failed. Shutting the socket down makes the reader's read fail
    /// (or the next one's); the reader then fails everything in flight (see `drain`).
    fn fail(&self, why: String) {
        self.state().broken.get_or_insert(why);
        self.socket.shutdown();
    }

    /// The reader's last act on a failed connection: every request in flight fails with the
    /// first reason the connection failed for. Only the reader completes requests, so no
    /// buffer is written after its request has returned.
    fn drain(&self, why: String) {
        let mut state = self.state();
        let why = state.broken.get_or_insert(why).clone();
        let cookies: Vec<u64> = state.pending.drain().map(|(cookie, _)| cookie).collect();
        for cookie in cookies {
            state.done.insert(cookie, Err(self.lost(&why)));
        }
        drop(state);
        self.socket.shutdown();
        self.turn.notify_all();
    }

    /// Takes the reader's turn if no one has it.
    fn take_turn(&self) -> bool {
        let mut state = self.state();
        !std::mem::replace(&mut state.reading, true)
    }

    fn give_turn(&self) {
        self.state().reading = false;
        self.turn.notify_all();
    }

    /// Reads one reply, failing the connection if that fails. The caller has the turn.
    fn read_one(&self) {
        if let Err(e) = read_reply(self) {
            let why = match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
                    "no reply in {} s (the server hangs or is overloaded)",
                    self.timeout.as_secs()
                ),
                _ => e.to_string(),
            };
            self.drain(why);
        }
    }

    /// What a sender does while the socket takes nothing: the server may be waiting for this
    /// client to read its replies before it reads more requests (its replies to a burst of
    /// requests, or large read data), so when no one has the reader's turn, the sender reads
    /// one reply itself; otherwise it waits a moment for room.
    ///
    /// The sender reads only a reply that has begun to arrive, seen while it holds the turn:
    /// the server may be waiting for the rest of this sender's payload before it sends any
    /// other, and a reply seen before taking the turn may have been taken by another reader
    /// since (then the sender would wait for a reply that cannot come until it sends).
    fn while_full(&self) -> io::Result<()> {
        if self.state().reading {
            poll_briefly(&self.socket, PollFlags::OUT)?;
            return Ok(());
        }
        let ready = poll_briefly(&self.socket, PollFlags::OUT | PollFlags::IN)?;
        if ready.contains(PollFlags::IN) && self.take_turn() {
            let arrived = poll_now(&self.socket, PollFlags::IN);
            if matches!(arrived, Ok(r) if r.contains(PollFlags::IN)) {
                self.read_one();
            }
            self.give_turn();
            arrived?;
        }
        Ok(())
    }

    /// Sends every byte of `parts` (the caller holds the send lock), reading replies while the
    /// socket is full if no one else does, so client and server never both wait to send.
    fn send(&self, parts: &mut [IoSlice<'_>]) -> io::Result<()> {
        let mut parts = parts;
        let mut stalled = None;
        while !parts.is_empty() {
            match self.socket.try_send(parts) {
                Ok(sent) => {
                    IoSlice::advance_slices(&mut parts, sent);
                    stalled = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let since = *stalled.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.timeout {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    self.while_full()?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn server_error(&self, pending: &Pending, value: u32, message: &str) -> io::Error {
        let errno = errno(value);
        let detail = if message.is_empty() {
            String::new()
        } else {
            format!(" ({message})")
        };
        DeviceError::io(
            errno,
            format!(
                "{}: {:?} of {} bytes at {}: the server answered {}{detail}",
                self.name,
                pending.command,
                pending.len,
                pending.offset,
                crate::error::strerror(errno)
            ),
        )
    }
}

/// The events of `flags` on `socket`, waiting up to a millisecond for one.
fn poll_briefly(socket: &Socket, flags: PollFlags) -> io::Result<PollFlags> {
    const BRIEF: Timespec = Timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    poll(socket, flags, &BRIEF)
}

/// The events of `flags` on `socket` now, without waiting.
fn poll_now(socket: &Socket, flags: PollFlags) -> io::Result<PollFlags> {
    poll(socket, flags, &Timespec::default())
}

fn poll(socket: &Socket, flags: PollFlags, timeout: &Timespec) -> io::Result<PollFlags> {
    let mut fds = [PollFd::new(socket, flags)];
    rustix::event::poll(&mut fds, Some(timeout))?;
    Ok(fds[0].revents())
}

fn protocol_error(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

pub struct Connection {
    shared: Shared,
    send: Mutex<()>,
    cookies: AtomicU64,
}

impl Connection {
    /// Takes over a negotiated socket. A read or a send that waits longer than `timeout` for
    /// the server fails the connection. (A send can wait on the server only when the server
    /// waits on this client to read its replies while the thread that would read is queued
    /// behind the send: a request larger than the server's limit, split in pieces, beside a
    /// large write from another thread. The timeout ends that standoff with an error.)
    pub fn start(
        socket: Socket,
        name: String,
        structured: bool,
        timeout: Duration,
    ) -> io::Result<Self> {
        socket.set_timeout(timeout)?;
        Ok(Connection {
            shared: Shared {
                state: Mutex::new(State::default()),
                turn: Condvar::new(),
                name,
                socket,
                structured,
                timeout,
            },
            send: Mutex::new(()),
            cookies: AtomicU64::new(1),
        })
    }

    /// Requests in flight on this connection, to spread the load over several.
    pub fn in_flight(&self) -> usize {
        self.shared.state().pending.len()
    }

    /// Sends a request; its reply is awaited through the ticket. A read's data lands in
    /// `target`, which stays borrowed until the ticket is done.
    pub fn submit<'a>(
        &'a self,
        command: Command,
        flags: u16,
        offset: u64,
        len: u32,
        payload: &[&[u8]],
        target: Option<&'a mut [u8]>,
    ) -> Ticket<'a> {
        let cookie = self.cookies.fetch_add(1, Ordering::Relaxed);
        let ticket = Ticket {
            shared: &self.shared,
            cookie,
            waited: false,
            _target: PhantomData,
        };
        {
            let mut state = self.shared.state();
            if let Some(why) = &state.broken {
                let lost = Err(self.shared.lost(why));
                state.done.insert(cookie, lost);
                return ticket;
            }
            let target = target.map(|t| ReadTarget {
                ptr: t.as_mut_ptr(),
                len: t.len(),
            });
            state.pending.insert(
                cookie,
                Pending {
                    command,
                    offset,
                    len,
                    target,
                    received: 0,
                    error: None,
                },
            );
        }
        let header = request_header(flags, command, cookie, offset, len);
        let mut parts: Vec<IoSlice<'_>> = Vec::with_capacity(1 + payload.len());
        parts.push(IoSlice::new(&header));
        parts.extend(payload.iter().map(|p| IoSlice::new(p)));
        let sent = {
            let _send = self.send.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.send(&mut parts)
        };
        if let Err(e) = sent {
            // A request half sent leaves the stream unusable.
            let why = match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
                    "the server took nothing for {} s (it hangs or is overloaded)",
                    self.shared.timeout.as_secs()
                ),
                _ => format!("sending a request: {e}"),
            };
            self.shared.fail(why);
        }
        ticket
    }
}

impl Drop for Connection {
    /// A soft disconnect: NBD_CMD_DISC, then the socket closed. (No request is in flight:
    /// tickets borrow the connection.)
    fn drop(&mut self) {
        let header = request_header(0, Command::Disconnect, 0, 0, 0);
        if self.shared.state().broken.is_none() {
            let _ = self.shared.socket.send_all(&mut [IoSlice::new(&header)]);
        }
        self.shared.socket.shutdown();
    }
}

/// A request in flight. Its read buffer stays borrowed until the reply has come or the
/// connection has failed: dropping a ticket unwaited waits, so no reader ever writes a buffer
/// its owner has taken back. (Tickets stay inside this module's caller, which never leaks one.)
pub struct Ticket<'a> {
    shared: &'a Shared,
    cookie: u64,
    waited: bool,
    _target: PhantomData<&'a mut [u8]>,
}

impl Ticket<'_> {
    pub fn wait(mut self) -> io::Result<()> {
        self.waited = true;
        self.finish()
    }

    /// The reply: taken when another thread has read it, read here when the reader's turn is
    /// free, waited for otherwise.
    fn finish(&self) -> io::Result<()> {
        let shared = self.shared;
        let mut state = shared.state();
        loop {
            if let Some(result) = state.done.remove(&self.cookie) {
                return result;
            }
            if !state.reading {
                state.reading = true;
                drop(state);
                read_until(shared, self.cookie);
                shared.give_turn();
                state = shared.state();
                continue;
            }
            state = shared.turn.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.waited {
            let _ = self.finish();
        }
    }
}

/// The reader's turn: reads replies until the one for `cookie` is done (or the connection
/// fails, which fails it too).
fn read_until(shared: &Shared, cookie: u64) {
    while !shared.state().done.contains_key(&cookie) {
        shared.read_one();
    }
}

/// The part of a pending request the reader needs while it reads a reply's payload: copied
/// out, so the state lock is not held across a read from the socket.
struct Looked {
    offset: u64,
    len: u32,
    target: Option<ReadTarget>,
}

fn look_up(shared: &Shared, cookie: u64) -> io::Result<Looked> {
    let state = shared.state();
    let p = state.pending.get(&cookie).ok_or_else(|| {
        protocol_error(format!(
            "a reply to request {cookie}, which is not in flight"
        ))
    })?;
    Ok(Looked {
        offset: p.offset,
        len: p.len,
        target: p.target,
    })
}

/// The part of a read's buffer for `[offset, offset + n)` of the export. The buffer is the
/// waiting caller's, alive until the reader completes its request, after the last use.
fn slice_of<'buf>(looked: &Looked, offset: u64, n: u64) -> io::Result<&'buf mut [u8]> {
    let target = looked
        .target
        .ok_or_else(|| protocol_error("read data in the reply to a request that is not a read"))?;
    let start = offset.checked_sub(looked.offset);
    let fits = start.filter(|s| s.checked_add(n).is_some_and(|end| end <= looked.len as u64));
    let Some(start) = fits else {
        return Err(protocol_error(format!(
            "reply data for {n} bytes at {offset}, outside the request ({} bytes at {})",
            looked.len, looked.offset
        )));
    };
    debug_assert_eq!(target.len, looked.len as usize);
    // SAFETY: the range is inside the target buffer (checked above against the request's
    // length, which is the buffer's), and the buffer is the waiting caller's, written by this
    // thread alone until the request completes.
    Ok(unsafe { std::slice::from_raw_parts_mut(target.ptr.add(start as usize), n as usize) })
}

/// Reads one reply (or one structured reply chunk) and acts on it.
fn read_reply(shared: &Shared) -> io::Result<()> {
    let mut socket: &Socket = &shared.socket;
    let mut magic = [0u8; 4];
    socket.read_exact(&mut magic)?;
    match u32::from_be_bytes(magic) {
        SIMPLE_REPLY_MAGIC => {
            let mut head = [0u8; 12];
            socket.read_exact(&mut head)?;
            let mut f = Fields(&head);
            let (error, cookie) = (f.u32().unwrap_or(0), f.u64().unwrap_or(0));
            let looked = look_up(shared, cookie)?;
            if error == 0 && looked.target.is_some() {
                if shared.structured {
                    return Err(protocol_error(
                        "a simple reply to a read, after structured replies were agreed",
                    ));
                }
                socket.read_exact(slice_of(&looked, looked.offset, looked.len as u64)?)?;
            }
            complete(shared, cookie, |shared, p| match error {
                0 => Ok(()),
                _ => Err(shared.server_error(p, error, "")),
            });
            Ok(())
        }
        STRUCTURED_REPLY_MAGIC => read_chunk(shared, socket),
        other => Err(protocol_error(format!("bad reply magic {other:#x}"))),
    }
}

/// One chunk of a structured reply.
fn read_chunk(shared: &Shared, mut socket: &Socket) -> io::Result<()> {
    let mut head = [0u8; 16];
    socket.read_exact(&mut head)?;
    let mut f = Fields(&head);
    let (flags, kind) = (f.u16().unwrap_or(0), f.u16().unwrap_or(0));
    let (cookie, length) = (f.u64().unwrap_or(0), f.u32().unwrap_or(0));
    let looked = look_up(shared, cookie)?;
    let mut received = 0;
    let mut error = None;
    match kind {
        REPLY_TYPE_OFFSET_DATA => {
            let n = length
                .checked_sub(8)
                .ok_or_else(|| protocol_error("a data chunk without its offset"))?;
            let mut at = [0u8; 8];
            socket.read_exact(&mut at)?;
            socket.read_exact(slice_of(&looked, u64::from_be_bytes(at), n as u64)?)?;
            received = n as u64;
        }
        REPLY_TYPE_OFFSET_HOLE => {
            let mut body = [0u8; 12];
            if length != 12 {
                return Err(protocol_error(format!("a hole chunk of {length} bytes")));
            }
            socket.read_exact(&mut body)?;
            let mut f = Fields(&body);
            let (at, n) = (f.u64().unwrap_or(0), f.u32().unwrap_or(0));
            slice_of(&looked, at, n as u64)?.fill(0);
            received = n as u64;
        }
        REPLY_TYPE_NONE if length == 0 => {}
        _ => {
            if length > MAX_OPTION_REPLY {
                return Err(protocol_error(format!(
                    "a reply chunk of type {kind} and {length} bytes"
                )));
            }
            let mut body = vec![0u8; length as usize];
            socket.read_exact(&mut body)?;
            if kind & REPLY_TYPE_ERROR_BIT != 0 {
                let mut f = Fields(&body);
                let value = f
                    .u32()
                    .unwrap_or(rustix::io::Errno::IO.raw_os_error() as u32);
                let text_len = f.u16().unwrap_or(0) as usize;
                let text = f.0.get(..text_len).unwrap_or_default();
                error = Some((value.max(1), String::from_utf8_lossy(text).into_owned()));
            }
            // Other chunk types (block status) carry nothing a read or write needs.
        }
    }
    let mut state = shared.state();
    let Some(p) = state.pending.get_mut(&cookie) else {
        return Err(protocol_error(format!(
            "a reply to request {cookie}, which is not in flight"
        )));
    };
    p.received += received;
    if let Some((value, text)) = error {
        let e = shared.server_error(p, value, &text);
        p.error.get_or_insert(e);
    }
    if flags & REPLY_FLAG_DONE != 0 {
        drop(state);
        complete(shared, cookie, |_, p| {
            if let Some(e) = p.error.take() {
                return Err(e);
            }
            if p.target.is_some() && p.received != p.len as u64 {
                return Err(protocol_error(format!(
                    "a read reply of {} bytes for {} asked",
                    p.received, p.len
                )));
            }
            Ok(())
        });
    }
    Ok(())
}

/// Ends a pending request with the result `outcome` makes of it.
fn complete(
    shared: &Shared,
    cookie: u64,
    outcome: impl FnOnce(&Shared, &mut Pending) -> io::Result<()>,
) {
    let mut state = shared.state();
    let Some(mut p) = state.pending.remove(&cookie) else {
        return;
    };
    let result = outcome(shared, &mut p);
    state.done.insert(cookie, result);
    drop(state);
    shared.turn.notify_all();
}
