//! Where an NBD export is, written as the NBD URI standard writes it
//! (github.com/NetworkBlockDevice/nbd, doc/uri.md): `nbd://host[:port]/export` over TCP and
//! `nbd+unix:///export?socket=PATH` over a Unix socket. cowfs adds two query parameters:
//! `connections=N`, the most connections to open where the server allows several, and
//! `timeout=SECONDS`, how long a request may go unanswered before the connection is given up.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The port IANA reserved for NBD.
pub const DEFAULT_PORT: u16 = 10809;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdAddress {
    pub endpoint: Endpoint,
    /// The export's name; empty is the server's default export.
    pub export: String,
    /// The most connections to the export (`connections=N`); `None` lets cowfs choose.
    pub connections: Option<usize>,
    /// How long a request may wait for its reply (`timeout=SECONDS`); `None`: the default.
    pub timeout: Option<Duration>,
}

impl NbdAddress {
    /// Whether `text` is meant as an NBD address (and should be parsed as one, not opened
    /// as a file).
    pub fn is_uri(text: &str) -> bool {
        [
            "nbd://",
            "nbd+unix://",
            "nbds://",
            "nbds+unix://",
            "nbd+vsock://",
        ]
        .iter()
        .any(|scheme| text.starts_with(scheme))
    }

    /// The export alone, without the client's own settings (`connections`, `timeout`): what
    /// names the same storage however it is reached from this machine.
    pub fn export_key(&self) -> String {
        let endpoint = match &self.endpoint {
            Endpoint::Tcp { host, port } => format!("tcp:{host}:{port}"),
            Endpoint::Unix(socket) => {
                let socket = std::fs::canonicalize(socket).unwrap_or_else(|_| socket.clone());
                format!("unix:{}", socket.display())
            }
        };
        format!("{endpoint}/{}", self.export)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{text}: not an NBD address: {why}");
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        match scheme {
            "nbd" | "nbd+unix" => {}
            "nbds" | "nbds+unix" => {
                return Err(format!(
                    "{text}: NBD over TLS is not supported; use nbd:// or nbd+unix:// (a server on a trusted network or a Unix socket)"
                ))
            }
            _ => return Err(bad(&format!("unknown scheme {scheme}:// (nbd:// or nbd+unix://)"))),
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let export = decode(path).map_err(|e| bad(&e))?;
        let mut socket = None;
        let mut connections = None;
        let mut timeout = None;
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value).map_err(|e| bad(&e))?;
            match key {
                "socket" => socket = Some(PathBuf::from(value)),
                "connections" => {
                    let n: usize = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or_else(|| bad("connections must be a number from 1 to 64"))?;
                    connections = Some(n);
                }
                "timeout" => {
                    let secs: u64 = value.parse().ok().filter(|s| *s >= 1).ok_or_else(|| {
                        bad("timeout must be a whole number of seconds, 1 or more")
                    })?;
                    timeout = Some(Duration::from_secs(secs));
                }
                _ => {
                    return Err(bad(&format!(
                        "unknown query parameter {key:?} (socket, connections, timeout)"
                    )))
                }
            }
        }
        let endpoint = if scheme == "nbd+unix" {
            if !authority.is_empty() {
                return Err(bad(
                    "nbd+unix:// takes no host (nbd+unix:///export?socket=PATH)",
                ));
            }
            Endpoint::Unix(socket.ok_or_else(|| bad("nbd+unix:// needs ?socket=PATH"))?)
        } else {
            if socket.is_some() {
                return Err(bad("socket= is for nbd+unix://"));
            }
            let (host, port) = split_host_port(authority).map_err(|e| bad(&e))?;
            Endpoint::Tcp { host, port }
        };
        Ok(NbdAddress {
            endpoint,
            export,
            connections,
            timeout,
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or("unclosed [ in the host")?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("no host (nbd://host[:port]/export)".into());
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("bad port {p:?}"))?,
        None => DEFAULT_PORT,
    };
    Ok((host.to_string(), port))
}

/// Undoes URI percent-encoding.
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape at {:?}", &text[i..]))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-escapes that are not UTF-8".to_string())
}

/// Percent-encodes what a URI component may not hold as it is.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl fmt::Display for NbdAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let export = encode(&self.export);
        let mut query = Vec::new();
        match &self.endpoint {
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "nbd://[{host}]:{port}/{export}")?
            }
            Endpoint::Tcp { host, port } => write!(f, "nbd://{host}:{port}/{export}")?,
            Endpoint::Unix(socket) => {
                write!(f, "nbd+unix:///{export}")?;
                query.push(format!("socket={}", encode(&socket.to_string_lossy())));
            }
        }
        if let Some(n) = self.connections {
            query.push(format!("connections={n}"));
        }
        if let Some(t) = self.timeout {
            query.push(format!("timeout={}", t.as_secs()));
        }
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16, export: &str) -> NbdAddress {
        NbdAddress {
            endpoint: Endpoint::Tcp {
                host: host.into(),
                port,
            },
            export: export.into(),
            connections: None,
            timeout: None,
        }
    }

    #[test]
    fn tcp_addresses() {
        assert_eq!(
            NbdAddress::parse("nbd://example.com").unwrap(),
            tcp("example.com", DEFAULT_PORT, "")
        );
        assert_eq!(
            NbdAddress::parse("nbd://10.0.0.2:2000/disk").unwrap(),
            tcp("10.0.0.2", 2000, "disk")
        );
        assert_eq!(
            NbdAddress::parse("nbd://[::1]:10810/a%20b").unwrap(),
            tcp("::1", 10810, "a b")
        );
        assert_eq!(
            NbdAddress::parse("nbd://[::1]/x").unwrap(),
            tcp("::1", DEFAULT_PORT, "x")
        );
    }

    #[test]
    fn unix_addresses_and_connections() {
        let a =
            NbdAddress::parse("nbd+unix:///swap?socket=/run/n%20bd.sock&connections=4&timeout=5")
                .unwrap();
        assert_eq!(a.endpoint, Endpoint::Unix("/run/n bd.sock".into()));
        assert_eq!((a.export.as_str(), a.connections), ("swap", Some(4)));
        assert_eq!(a.timeout, Some(Duration::from_secs(5)));
        assert_eq!(NbdAddress::parse(&a.to_string()).unwrap(), a, "{a}");
        let b = tcp("::1", 7, "x/y");
        assert_eq!(NbdAddress::parse(&b.to_string()).unwrap(), b, "{b}");
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        for (text, says) in [
            ("nbd+unix:///x", "socket=PATH"),
            ("nbd+unix://host/x?socket=/s", "no host"),
            ("nbd://h/x?socket=/s", "nbd+unix"),
            ("nbd:///x", "no host"),
            ("nbd://h:port/x", "bad port"),
            ("nbd://h/x?connections=0", "1 to 64"),
            ("nbd://h/x?tls=on", "unknown query parameter"),
            ("nbd://h/x?timeout=0", "seconds"),
            ("nbd://h/%zz", "percent-escape"),
            ("nbds://h/x", "TLS"),
            ("nbd+vsock://1/x", "unknown scheme"),
        ] {
            let err = NbdAddress::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
        assert!(NbdAddress::is_uri("nbd+unix:///x") && !NbdAddress::is_uri("/tmp/nbd://x"));
    }
}
