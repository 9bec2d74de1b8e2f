//! The xenstore wire format (`xen/io/xs_wire.h`): the message header, message types, error
//! strings, payload encodings and the layout of the shared ring page.
//!
//! Everything here is a pure function over byte slices. [`parse`] is the single entry point for
//! bytes from xenstored: it checks the header, the declared length and the type-specific payload,
//! and never panics (it is the fuzz target's subject). Integers are the guest's native byte order,
//! little-endian on x86.

use alloc::string::ToString;
use alloc::vec::Vec;

use super::{Error, Perm, PermKind, XsErrno};

/// Bytes in each of the two rings (`XENSTORE_RING_SIZE`).
pub const RING_SIZE: u32 = 1024;
/// Largest payload either side may send (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// Size of `struct xsd_sockmsg`.
pub const HEADER_LEN: usize = 16;
/// Longest absolute path xenstored accepts (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;

/// Byte offsets in `struct xenstore_domain_interface` (checked against the C header in tests).
pub mod layout {
    /// `char req[1024]`: requests to xenstored.
    pub const REQ: usize = 0;
    /// `char rsp[1024]`: replies and watch events.
    pub const RSP: usize = 1024;
    /// `req_cons`, advanced by xenstored.
    pub const REQ_CONS: usize = 2048;
    /// `req_prod`, advanced by the guest.
    pub const REQ_PROD: usize = 2052;
    /// `rsp_cons`, advanced by the guest.
    pub const RSP_CONS: usize = 2056;
    /// `rsp_prod`, advanced by xenstored.
    pub const RSP_PROD: usize = 2060;
    /// `server_features` bitmap.
    pub const SERVER_FEATURES: usize = 2064;
    /// `connection` (`XENSTORE_CONNECTED` / `XENSTORE_RECONNECT`).
    pub const CONNECTION: usize = 2068;
    /// `error` (`XENSTORE_ERROR_*`).
    pub const ERROR: usize = 2072;
    /// `sizeof(struct xenstore_domain_interface)`.
    pub const SIZE: usize = 2076;
}

/// `XENSTORE_ERROR_PROTO`: value of the `error` field after a protocol violation.
pub const ERROR_PROTO: u32 = 3;

/// `enum xsd_sockmsg_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum MsgType {
    Control = 0,
    Directory = 1,
    Read = 2,
    GetPerms = 3,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Introduce = 8,
    Release = 9,
    GetDomainPath = 10,
    Write = 11,
    Mkdir = 12,
    Rm = 13,
    SetPerms = 14,
    WatchEvent = 15,
    Error = 16,
    IsDomainIntroduced = 17,
    Resume = 18,
    SetTarget = 19,
    ResetWatches = 21,
    DirectoryPart = 22,
}

impl MsgType {
    /// The type with wire value `v`, if any (20, the removed `XS_RESTRICT`, is not one).
    pub fn from_u32(v: u32) -> Option<Self> {
        use MsgType::*;
        Some(match v {
            0 => Control,
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            _ => return None,
        })
    }
}

/// `struct xsd_sockmsg`, with `len` already checked against [`PAYLOAD_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type (`XS_*`), unvalidated.
    pub ty: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id (0 outside a transaction).
    pub tx_id: u32,
    /// Payload length in bytes, at most [`PAYLOAD_MAX`].
    pub len: u32,
}

impl Header {
    /// Parses the first [`HEADER_LEN`] bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Header, Error> {
        let h: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::Truncated)?;
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let header = Header {
            ty: word(0),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        };
        if header.len as usize > PAYLOAD_MAX {
            return Err(Error::PayloadTooLarge(header.len));
        }
        Ok(header)
    }

    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        for (i, w) in [self.ty, self.req_id, self.tx_id, self.len]
            .into_iter()
            .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        b
    }
}

/// What a message carries, by type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    /// `XS_ERROR`: xenstored refused the request.
    Error(XsErrno),
    /// `XS_WATCH_EVENT`: a watched path changed.
    WatchEvent {
        /// The path that changed.
        path: &'a str,
        /// The token given when the watch was registered.
        token: &'a str,
    },
    /// Any other type: the raw payload, interpreted by the request that expects it.
    Payload(&'a [u8]),
}

/// One validated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// Its header.
    pub header: Header,
    /// Its type.
    pub ty: MsgType,
    /// Its payload.
    pub body: Body<'a>,
}

/// Parses one whole message (header and exactly `len` payload bytes) from xenstored.
pub fn parse(buf: &[u8]) -> Result<Message<'_>, Error> {
    let header = Header::parse(buf)?;
    let total = HEADER_LEN + header.len as usize;
    let payload = buf.get(HEADER_LEN..total).ok_or(Error::Truncated)?;
    if buf.len() > total {
        return Err(Error::TrailingBytes(buf.len() - total));
    }
    let ty = MsgType::from_u32(header.ty).ok_or(Error::UnknownType(header.ty))?;
    let body = match ty {
        MsgType::Error => Body::Error(parse_errno(payload)?),
        MsgType::WatchEvent => match strings(payload)?.as_slice() {
            [path, token] => Body::WatchEvent { path, token },
            _ => return Err(Error::BadWatchEvent),
        },
        _ => Body::Payload(payload),
    };
    Ok(Message { header, ty, body })
}

/// Builds a request: header plus the concatenated `parts`.
pub fn request(ty: MsgType, req_id: u32, tx_id: u32, parts: &[&[u8]]) -> Result<Vec<u8>, Error> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > PAYLOAD_MAX {
        return Err(Error::RequestTooLarge(len));
    }
    let header = Header {
        ty: ty as u32,
        req_id,
        tx_id,
        len: len as u32,
    };
    let mut msg = Vec::with_capacity(HEADER_LEN + len);
    msg.extend_from_slice(&header.to_bytes());
    for p in parts {
        msg.extend_from_slice(p);
    }
    Ok(msg)
}

/// Splits a payload of NUL-terminated UTF-8 strings (`"a\0b\0"`); empty gives none.
pub fn strings(payload: &[u8]) -> Result<Vec<&str>, Error> {
    let Some(body) = payload.strip_suffix(b"\0") else {
        return if payload.is_empty() {
            Ok(Vec::new())
        } else {
            Err(Error::MissingNul)
        };
    };
    body.split(|&b| b == 0)
        .map(|s| core::str::from_utf8(s).map_err(|_| Error::NotUtf8))
        .collect()
}

/// One NUL-terminated UTF-8 string (a trailing NUL is also accepted missing).
pub fn text(payload: &[u8]) -> Result<&str, Error> {
    let body = payload.strip_suffix(b"\0").unwrap_or(payload);
    if body.contains(&0) {
        return Err(Error::Malformed);
    }
    core::str::from_utf8(body).map_err(|_| Error::NotUtf8)
}

/// A decimal `u32` such as a transaction id (`"17\0"`).
pub fn number(payload: &[u8]) -> Result<u32, Error> {
    let t = text(payload)?;
    if t.is_empty() || t.len() > 10 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::BadNumber);
    }
    t.parse().map_err(|_| Error::BadNumber)
}

/// The error string of an `XS_ERROR` payload (`"ENOENT\0"`).
pub fn parse_errno(payload: &[u8]) -> Result<XsErrno, Error> {
    XsErrno::from_name(text(payload)?).ok_or(Error::UnknownErrno)
}

/// A permission list (`"n0\0r1\0"`): owner and default first, then per-domain entries.
pub fn parse_perms(payload: &[u8]) -> Result<Vec<Perm>, Error> {
    let list = strings(payload)?;
    if list.is_empty() {
        return Err(Error::BadPerms);
    }
    list.into_iter()
        .map(|s| Perm::parse(s).ok_or(Error::BadPerms))
        .collect()
}

/// Encodes a permission list as [`parse_perms`] reads it.
pub fn emit_perms(perms: &[Perm]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in perms {
        out.extend_from_slice(p.to_string().as_bytes());
        out.push(0);
    }
    out
}

impl Perm {
    /// Parses `"r1"`-style text.
    pub fn parse(s: &str) -> Option<Perm> {
        let mut chars = s.chars();
        let kind = match chars.next()? {
            'n' => PermKind::None,
            'r' => PermKind::Read,
            'w' => PermKind::Write,
            'b' => PermKind::Both,
            _ => return None,
        };
        let rest = chars.as_str();
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Perm {
            kind,
            domid: rest.parse().ok()?,
        })
    }
}

impl core::fmt::Display for Perm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let c = match self.kind {
            PermKind::None => 'n',
            PermKind::Read => 'r',
            PermKind::Write => 'w',
            PermKind::Both => 'b',
        };
        write!(f, "{c}{}", self.domid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn msg(ty: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Header {
            ty,
            req_id,
            tx_id: 0,
            len: payload.len() as u32,
        }
        .to_bytes()
        .to_vec();
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn header_fixture_round_trips() {
        let bytes = [2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0];
        let h = Header::parse(&bytes).unwrap();
        assert_eq!(
            h,
            Header {
                ty: 2,
                req_id: 7,
                tx_id: 0,
                len: 5
            }
        );
        assert_eq!(h.to_bytes(), bytes);
    }

    #[test]
    fn parses_replies_events_and_errors() {
        let m = msg(2, 3, b"value");
        let p = parse(&m).unwrap();
        assert_eq!((p.ty, p.body), (MsgType::Read, Body::Payload(b"value")));
        let m = msg(15, 0, b"a/b\0tok\0");
        assert_eq!(
            parse(&m).unwrap().body,
            Body::WatchEvent {
                path: "a/b",
                token: "tok"
            }
        );
        let m = msg(16, 1, b"EAGAIN\0");
        assert_eq!(parse(&m).unwrap().body, Body::Error(XsErrno::Eagain));
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        assert_eq!(parse(&[0; 15]), Err(Error::Truncated));
        assert_eq!(parse(&msg(2, 1, b"abc")[..18]), Err(Error::Truncated));
        let mut long = msg(2, 1, b"abc");
        long.push(0);
        assert_eq!(parse(&long), Err(Error::TrailingBytes(1)));
        let mut big = msg(2, 1, b"");
        big[12..16].copy_from_slice(&4097u32.to_le_bytes());
        assert_eq!(parse(&big), Err(Error::PayloadTooLarge(4097)));
        assert_eq!(parse(&msg(20, 1, b"")), Err(Error::UnknownType(20)));
        assert_eq!(parse(&msg(15, 0, b"path\0")), Err(Error::BadWatchEvent));
        assert_eq!(parse(&msg(15, 0, b"path\0tok")), Err(Error::MissingNul));
        assert_eq!(parse(&msg(15, 0, b"\xff\0t\0")), Err(Error::NotUtf8));
        assert_eq!(parse(&msg(16, 0, b"EWHAT\0")), Err(Error::UnknownErrno));
    }

    #[test]
    fn payload_helpers() {
        assert_eq!(strings(b"").unwrap(), Vec::<&str>::new());
        assert_eq!(strings(b"a\0bc\0").unwrap(), vec!["a", "bc"]);
        assert_eq!(number(b"42\0"), Ok(42));
        assert_eq!(number(b"-1\0"), Err(Error::BadNumber));
        assert_eq!(number(b"99999999999\0"), Err(Error::BadNumber));
        let perms = parse_perms(b"n0\0r1\0b65535\0").unwrap();
        assert_eq!(
            perms[1],
            Perm {
                kind: PermKind::Read,
                domid: 1
            }
        );
        assert_eq!(emit_perms(&perms), b"n0\0r1\0b65535\0");
        assert_eq!(parse_perms(b"x0\0"), Err(Error::BadPerms));
        assert_eq!(parse_perms(b"r70000\0"), Err(Error::BadPerms));
        let req = request(MsgType::Write, 9, 2, &[b"p\0", b"v"]).unwrap();
        assert_eq!(
            Header::parse(&req).unwrap(),
            Header {
                ty: 11,
                req_id: 9,
                tx_id: 2,
                len: 3
            }
        );
        assert_eq!(
            request(MsgType::Write, 1, 0, &[&[0; 4097]]),
            Err(Error::RequestTooLarge(4097))
        );
    }

    /// Offsets from `offsetof` on xen/io/xs_wire.h (Xen 4.x, x86_64).
    #[test]
    fn layout_matches_xs_wire_h() {
        assert_eq!(
            [
                layout::REQ,
                layout::RSP,
                layout::REQ_CONS,
                layout::REQ_PROD,
                layout::RSP_CONS
            ],
            [0, 1024, 2048, 2052, 2056]
        );
        assert_eq!([layout::RSP_PROD, layout::SERVER_FEATURES], [2060, 2064]);
        assert_eq!(
            [layout::CONNECTION, layout::ERROR, layout::SIZE],
            [2068, 2072, 2076]
        );
        assert_eq!(MsgType::from_u32(21), Some(MsgType::ResetWatches));
        assert_eq!(MsgType::DirectoryPart as u32, 22);
        assert_eq!(MsgType::WatchEvent as u32, 15);
        assert_eq!(MsgType::Error as u32, 16);
    }

    /// Pseudo-random bytes (and mutated valid messages) through the parser: no panics.
    #[test]
    fn parse_survives_random_bytes() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds = [
            msg(15, 0, b"a\0b\0"),
            msg(16, 1, b"ENOENT\0"),
            msg(2, 1, b"xyz"),
        ];
        for i in 0..5000 {
            let mut buf = if i % 2 == 0 {
                let len = (next() % 64) as usize;
                (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                seeds[i % 3].clone()
            };
            for _ in 0..(next() % 4) {
                if !buf.is_empty() {
                    let at = (next() as usize) % buf.len();
                    buf[at] = next() as u8;
                }
            }
            let _ = parse(&buf);
            let _ = parse_perms(&buf);
            let _ = number(&buf);
        }
    }
}
