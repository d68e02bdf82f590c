//! The fixed newstyle negotiation: structured replies asked for, the export chosen with
//! `NBD_OPT_GO` (its size, flags and block-size limits), falling back to
//! `NBD_OPT_EXPORT_NAME` for servers without `NBD_OPT_GO`.

use std::io::{self, Read, Write};

use super::protocol::*;

/// What the server said about the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Export {
    pub size: u64,
    /// Transmission flags (`FLAG_SEND_FLUSH`, `FLAG_CAN_MULTI_CONN` ...).
    pub flags: u16,
    /// The smallest request the server takes; cowfs needs 4 KiB requests to be allowed.
    pub min_block: u32,
    /// The largest request payload.
    pub max_payload: u32,
    /// Whether reads are answered with structured replies.
    pub structured: bool,
}

impl Export {
    pub fn offers(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

fn protocol_error(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("NBD negotiation: {what}"),
    )
}

fn read_u16(stream: &mut impl Read) -> io::Result<u16> {
    let mut b = [0; 2];
    stream.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn read_u64(stream: &mut impl Read) -> io::Result<u64> {
    let mut b = [0; 8];
    stream.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// One reply to an option: its type and data.
struct OptionReply {
    kind: u32,
    data: Vec<u8>,
}

impl OptionReply {
    fn read(stream: &mut impl Read, option: u32) -> io::Result<Self> {
        let mut head = [0u8; 20];
        stream.read_exact(&mut head)?;
        let mut f = Fields(&head);
        let (magic, echoed, kind, len) = (f.u64(), f.u32(), f.u32(), f.u32());
        if magic != Some(OPTION_REPLY_MAGIC) {
            return Err(protocol_error("bad option reply magic".into()));
        }
        if echoed != Some(option) {
            return Err(protocol_error(format!(
                "reply to option {} where {option} was sent",
                echoed.unwrap_or(0)
            )));
        }
        let len = len.unwrap_or(0);
        if len > MAX_OPTION_REPLY {
            return Err(protocol_error(format!("option reply of {len} bytes")));
        }
        let mut data = vec![0; len as usize];
        stream.read_exact(&mut data)?;
        Ok(OptionReply {
            kind: kind.unwrap_or(0),
            data,
        })
    }

    /// The refusal as an error a person can act on.
    fn refusal(&self, export: &str) -> io::Error {
        let message = String::from_utf8_lossy(&self.data);
        let (kind, why) = match self.kind {
            REP_ERR_UNKNOWN => (io::ErrorKind::NotFound, "no such export"),
            REP_ERR_POLICY => (
                io::ErrorKind::PermissionDenied,
                "refused by the server's policy",
            ),
            REP_ERR_TLS_REQD => (
                io::ErrorKind::PermissionDenied,
                "the server requires TLS, which cowfs does not speak",
            ),
            REP_ERR_SHUTDOWN => (
                io::ErrorKind::ConnectionAborted,
                "the server is shutting down",
            ),
            _ => (io::ErrorKind::Other, "refused"),
        };
        let detail = if message.is_empty() {
            String::new()
        } else {
            format!(" ({message})")
        };
        io::Error::new(kind, format!("export {export:?}: {why}{detail}"))
    }
}

/// Negotiates `export` on a fresh connection and leaves it in the transmission phase.
pub fn negotiate(stream: &mut (impl Read + Write), export: &str) -> io::Result<Export> {
    if read_u64(stream)? != INIT_MAGIC {
        return Err(protocol_error("not an NBD server (no NBDMAGIC)".into()));
    }
    match read_u64(stream)? {
        OPTION_MAGIC => {}
        OLDSTYLE_MAGIC => {
            return Err(protocol_error(
                "the server speaks the oldstyle protocol, which has no export names; run it with newstyle".into(),
            ))
        }
        _ => return Err(protocol_error("unknown handshake magic".into())),
    }
    let server_flags = read_u16(stream)?;
    if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(protocol_error(
            "the server does not speak fixed newstyle negotiation".into(),
        ));
    }
    let no_zeroes = server_flags & FLAG_NO_ZEROES != 0;
    let client_flags =
        FLAG_FIXED_NEWSTYLE as u32 | if no_zeroes { FLAG_NO_ZEROES as u32 } else { 0 };
    stream.write_all(&client_flags.to_be_bytes())?;

    stream.write_all(&option(OPT_STRUCTURED_REPLY, &[]))?;
    let structured = match OptionReply::read(stream, OPT_STRUCTURED_REPLY)? {
        r if r.kind == REP_ACK => true,
        r if r.kind & REP_ERROR_BIT != 0 => false,
        r => {
            return Err(protocol_error(format!(
                "reply {} to structured replies",
                r.kind
            )))
        }
    };
    match go(stream, export)? {
        Some(export) => Ok(Export {
            structured,
            ..export
        }),
        None => Ok(Export {
            structured,
            ..export_name(stream, export, no_zeroes)?
        }),
    }
}

/// `NBD_OPT_GO`, asking for the block-size limits too; `None` when the server lacks it.
fn go(stream: &mut (impl Read + Write), name: &str) -> io::Result<Option<Export>> {
    let mut data = Vec::new();
    data.extend_from_slice(&(name.len() as u32).to_be_bytes());
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(&1u16.to_be_bytes());
    data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    stream.write_all(&option(OPT_GO, &data))?;
    let mut export = Export {
        size: 0,
        flags: 0,
        min_block: 1,
        max_payload: DEFAULT_MAX_PAYLOAD,
        structured: false,
    };
    let mut told_size = false;
    loop {
        let reply = OptionReply::read(stream, OPT_GO)?;
        match reply.kind {
            REP_ACK if told_size => return Ok(Some(export)),
            REP_ACK => {
                return Err(protocol_error(
                    "NBD_OPT_GO acknowledged without the export's size".into(),
                ))
            }
            REP_INFO => {
                let mut f = Fields(&reply.data);
                match f.u16() {
                    Some(INFO_EXPORT) => {
                        let (size, flags) = (f.u64(), f.u16());
                        export.size =
                            size.ok_or_else(|| protocol_error("short export info".into()))?;
                        export.flags =
                            flags.ok_or_else(|| protocol_error("short export info".into()))?;
                        told_size = true;
                    }
                    Some(INFO_BLOCK_SIZE) => {
                        let (min, _preferred, max) = (f.u32(), f.u32(), f.u32());
                        let short = || protocol_error("short block size info".into());
                        export.min_block = min.ok_or_else(short)?;
                        export.max_payload = max.ok_or_else(short)?;
                    }
                    _ => {} // other information: not needed
                }
            }
            REP_ERR_UNSUP => return Ok(None),
            kind if kind & REP_ERROR_BIT != 0 => return Err(reply.refusal(name)),
            kind => return Err(protocol_error(format!("reply {kind} to NBD_OPT_GO"))),
        }
    }
}

/// `NBD_OPT_EXPORT_NAME`, for servers without `NBD_OPT_GO`; a server that does not have the
/// export just closes the connection.
fn export_name(
    stream: &mut (impl Read + Write),
    name: &str,
    no_zeroes: bool,
) -> io::Result<Export> {
    stream.write_all(&option(OPT_EXPORT_NAME, name.as_bytes()))?;
    let size = read_u64(stream).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("export {name:?}: the server closed the connection (no such export?)"),
            )
        } else {
            e
        }
    })?;
    let flags = read_u16(stream)?;
    if !no_zeroes {
        stream.read_exact(&mut [0u8; 124])?;
    }
    Ok(Export {
        size,
        flags,
        min_block: 1,
        max_payload: DEFAULT_MAX_PAYLOAD,
        structured: false,
    })
}
