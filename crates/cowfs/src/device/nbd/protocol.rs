//! The NBD protocol's numbers and message layouts, as the protocol document
//! (github.com/NetworkBlockDevice/nbd, doc/proto.md) defines them. Everything is big-endian.

/// `NBDMAGIC`: the first eight bytes a server sends.
pub const INIT_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: newstyle negotiation, and the prefix of every option the client sends.
pub const OPTION_MAGIC: u64 = 0x4948_4156_454f_5054;
/// The oldstyle negotiation's second magic, which cowfs refuses (no export names, no options).
pub const OLDSTYLE_MAGIC: u64 = 0x0000_4202_8186_1253;
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;

/// Transmission flags: what the export offers.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const FLAG_SEND_FUA: u16 = 1 << 3;
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;

/// Option replies; errors have bit 31 set.
pub const REP_ACK: u32 = 1;
pub const REP_INFO: u32 = 3;
pub const REP_ERROR_BIT: u32 = 1 << 31;
pub const REP_ERR_UNSUP: u32 = REP_ERROR_BIT | 1;
pub const REP_ERR_POLICY: u32 = REP_ERROR_BIT | 2;
pub const REP_ERR_TLS_REQD: u32 = REP_ERROR_BIT | 5;
pub const REP_ERR_UNKNOWN: u32 = REP_ERROR_BIT | 6;
pub const REP_ERR_SHUTDOWN: u32 = REP_ERROR_BIT | 7;

/// Information an `NBD_OPT_GO` reply may carry.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Command {
    Read = 0,
    Write = 1,
    Disconnect = 2,
    Flush = 3,
    Trim = 4,
}

/// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;

/// Structured reply chunks.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;

/// The largest request payload a server must accept when it states no limit of its own.
pub const DEFAULT_MAX_PAYLOAD: u32 = 32 << 20;
/// The largest option reply cowfs reads: the protocol caps strings at 4 KiB, so anything much
/// longer is a server speaking something else.
pub const MAX_OPTION_REPLY: u32 = 64 << 10;

/// The 28-byte header of a request.
pub fn request_header(
    flags: u16,
    command: Command,
    cookie: u64,
    offset: u64,
    len: u32,
) -> [u8; 28] {
    let mut header = [0u8; 28];
    header[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    header[4..6].copy_from_slice(&flags.to_be_bytes());
    header[6..8].copy_from_slice(&(command as u16).to_be_bytes());
    header[8..16].copy_from_slice(&cookie.to_be_bytes());
    header[16..24].copy_from_slice(&offset.to_be_bytes());
    header[24..28].copy_from_slice(&len.to_be_bytes());
    header
}

/// An option the client sends during negotiation: magic, option, length, data.
pub fn option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(16 + data.len());
    message.extend_from_slice(&OPTION_MAGIC.to_be_bytes());
    message.extend_from_slice(&option.to_be_bytes());
    message.extend_from_slice(&(data.len() as u32).to_be_bytes());
    message.extend_from_slice(data);
    message
}

/// The errno a server's error value stands for. The protocol's error values are Linux's
/// (EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN); any other is EIO.
pub fn errno(value: u32) -> rustix::io::Errno {
    use rustix::io::Errno;
    const KNOWN: [Errno; 8] = [
        Errno::PERM,
        Errno::IO,
        Errno::NOMEM,
        Errno::INVAL,
        Errno::NOSPC,
        Errno::OVERFLOW,
        Errno::NOTSUP,
        Errno::SHUTDOWN,
    ];
    KNOWN
        .into_iter()
        .find(|e| e.raw_os_error() as u32 == value)
        .unwrap_or(Errno::IO)
}

/// Reads big-endian integers off a byte slice, refusing to read past its end.
pub struct Fields<'a>(pub &'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_be_bytes)
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_be_bytes)
    }
}
