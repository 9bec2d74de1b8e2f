//! Request parsing (RFC 9112): finding the end of a request head, the request line, header fields,
//! the request target, and `If-None-Match` lists. Every function takes untrusted bytes and returns
//! a value or an error; none can panic.

use alloc::string::String;
use alloc::vec::Vec;

/// The HTTP versions served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    Http10,
    Http11,
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// 400, with the reason (for tests and debugging).
    BadRequest(&'static str),
    /// 505: a well-formed version other than 1.0 and 1.1.
    Version,
}

/// A parsed request head; slices borrow the receive buffer.
#[derive(Debug)]
pub(crate) struct Head<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub version: Version,
    /// Number of `Host` fields.
    pub hosts: usize,
    /// `Connection: close` seen.
    pub conn_close: bool,
    /// `Connection: keep-alive` seen.
    pub conn_keep_alive: bool,
    /// `Content-Length` (saturated at `u64::MAX` when larger).
    pub content_length: Option<u64>,
    /// A `Transfer-Encoding` field is present.
    pub transfer_encoding: bool,
    /// `Expect: 100-continue` seen.
    pub expect_continue: bool,
    /// The values of every `If-None-Match` field.
    pub if_none_match: Vec<&'a [u8]>,
}

/// Where the search for the end of a head stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadEnd {
    /// The head is `buf[..len]` (its empty line included).
    Complete(usize),
    /// No empty line yet; resume the search at this line start. `line_seen`: at least one line
    /// (the request line) is complete.
    Partial { resume: usize, line_seen: bool },
}

/// Looks for the empty line ending a head in `buf`, starting at the line start `from`.
/// `buf` must not start with an empty line (the caller skips those).
pub(crate) fn find_head_end(buf: &[u8], from: usize) -> HeadEnd {
    let mut start = from.min(buf.len());
    loop {
        let rest = buf.get(start..).unwrap_or_default();
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return HeadEnd::Partial {
                resume: start,
                line_seen: start > 0,
            };
        };
        let line = rest.get(..nl).unwrap_or_default();
        if start > 0 && (line.is_empty() || line == b"\r") {
            return HeadEnd::Complete(start + nl + 1);
        }
        start += nl + 1;
    }
}

/// Lines of a head: split at LF, one CR before it removed. The final empty line is dropped.
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

/// tchar (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The method and target of a request line, for the log of a request refused before parsing.
pub(crate) fn peek_request_line(buf: &[u8]) -> (&[u8], &[u8]) {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    (method, target)
}

/// Parses a complete head (as delimited by [`find_head_end`]).
pub(crate) fn parse_head(head: &[u8]) -> Result<Head<'_>, HeadError> {
    use HeadError::BadRequest as Bad;
    let mut lines = lines(head);
    let request_line = lines.next().ok_or(Bad("empty head"))?;
    if request_line.contains(&b'\r') {
        return Err(Bad("bare CR in request line"));
    }
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Bad("request line is not METHOD SP TARGET SP VERSION"));
    };
    if !is_token(method) {
        return Err(Bad("bad method"));
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return Err(Bad("bad request target"));
    }
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(HeadError::Version)
        }
        _ => return Err(Bad("bad HTTP version")),
    };
    let mut head = Head {
        method,
        target,
        version,
        hosts: 0,
        conn_close: false,
        conn_keep_alive: false,
        content_length: None,
        transfer_encoding: false,
        expect_continue: false,
        if_none_match: Vec::new(),
    };
    for line in lines {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Err(Bad("obs-fold"));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(Bad("header without ':'"))?;
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default();
        if !is_token(name) {
            return Err(Bad("bad header name"));
        }
        // field-value: VCHAR, obs-text, SP, HTAB (no CR, LF, NUL or other controls).
        if !value
            .iter()
            .all(|&b| b == b' ' || b == b'\t' || (b >= 0x21 && b != 0x7f))
        {
            return Err(Bad("control character in header value"));
        }
        let value = trim_ows(value);
        if name.eq_ignore_ascii_case(b"host") {
            head.hosts += 1;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for opt in value.split(|&b| b == b',').map(trim_ows) {
                if opt.eq_ignore_ascii_case(b"close") {
                    head.conn_close = true;
                } else if opt.eq_ignore_ascii_case(b"keep-alive") {
                    head.conn_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // A list of identical values ("5, 5") is one value (RFC 9110 §8.6).
            for v in value.split(|&b| b == b',').map(trim_ows) {
                let n = parse_decimal(v).ok_or(Bad("bad Content-Length"))?;
                if head.content_length.is_some_and(|old| old != n) {
                    return Err(Bad("conflicting Content-Length"));
                }
                head.content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            head.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"expect") {
            head.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"if-none-match") {
            head.if_none_match.push(value);
        }
    }
    if head.version == Version::Http11 && head.hosts != 1 {
        return Err(Bad("HTTP/1.1 request without exactly one Host"));
    }
    if head.hosts > 1 {
        return Err(Bad("several Host fields"));
    }
    if head.transfer_encoding && head.content_length.is_some() {
        return Err(Bad("both Transfer-Encoding and Content-Length"));
    }
    Ok(head)
}

/// `1*DIGIT`, saturating at `u64::MAX`.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// A request target resolved against the site's name space.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Resolved<'a> {
    /// The normalized, decoded path (`/a/b`, or `/a/` for a directory); `None` when it cannot
    /// name any file (a decoded `/` or NUL inside a segment, or not UTF-8).
    pub path: Option<String>,
    /// The path part of the target as sent (for a redirect's `Location`).
    pub raw_path: &'a [u8],
}

/// Resolves an origin-form (`/p?q`) or absolute-form (`http://h/p?q`) target; `None` when the
/// target has neither form or bad percent-encoding (400).
pub(crate) fn resolve_target(target: &[u8]) -> Option<Resolved<'_>> {
    let raw_path = if target.first() == Some(&b'/') {
        target
    } else {
        let rest = strip_prefix_ignore_case(target, b"http://")
            .or_else(|| strip_prefix_ignore_case(target, b"https://"))?;
        let path_start = rest
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(rest.len());
        match rest.get(path_start..) {
            Some(p) if p.first() == Some(&b'/') => p,
            _ => b"/",
        }
    };
    let end = raw_path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(raw_path.len());
    let raw_path = raw_path.get(..end).unwrap_or_default();
    let raw_segments = raw_path.get(1..).unwrap_or_default().split(|&b| b == b'/');
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let mut dir = false;
    for raw in raw_segments {
        let seg = percent_decode(raw)?;
        dir = matches!(seg.as_slice(), b"" | b"." | b"..");
        match seg.as_slice() {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            _ => segments.push(seg),
        }
    }
    // A segment holding a (decoded) `/` or NUL cannot name a file.
    let nameable = !segments.iter().any(|s| s.contains(&b'/') || s.contains(&0));
    let mut path = Vec::new();
    for s in &segments {
        path.push(b'/');
        path.extend_from_slice(s);
    }
    if dir || segments.is_empty() {
        path.push(b'/');
    }
    let path = if nameable {
        String::from_utf8(path).ok()
    } else {
        None
    };
    Some(Resolved { path, raw_path })
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; `None` on a malformed escape.
fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = s.iter();
    while let Some(&b) = i.next() {
        if b == b'%' {
            let hi = hex(*i.next()?)?;
            let lo = hex(*i.next()?)?;
            out.push((hi << 4) | lo);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// Whether any of the `If-None-Match` values matches `etag` (RFC 9110 §13.1.2: `*` matches any
/// existing representation; entity tags are compared weakly, ignoring `W/`). Malformed list
/// members match nothing.
pub(crate) fn if_none_match(values: &[&[u8]], etag: &str) -> bool {
    let ours = etag.as_bytes();
    let ours = ours.strip_prefix(b"W/").unwrap_or(ours);
    values.iter().any(|v| {
        let mut rest = *v;
        loop {
            rest = trim_ows(rest);
            match rest {
                [] => return false,
                [b',', r @ ..] => rest = r,
                [b'*', ..] => return true,
                _ => {
                    let tag = rest.strip_prefix(b"W/").unwrap_or(rest);
                    if let [b'"', body @ ..] = tag {
                        if let Some(close) = body.iter().position(|&b| b == b'"') {
                            if tag.get(..close + 2) == Some(ours) {
                                return true;
                            }
                            rest = body.get(close + 1..).unwrap_or_default();
                            continue;
                        }
                    }
                    // Malformed member: skip to the next comma.
                    match rest.iter().position(|&b| b == b',') {
                        Some(c) => rest = rest.get(c + 1..).unwrap_or_default(),
                        None => return false,
                    }
                }
            }
        }
    })
}
