//! RESP2: an incremental request parser and the reply encoders.
//!
//! [`Parser`] is fed byte chunks as they arrive from the socket (a request may be split
//! anywhere; one chunk may hold many pipelined requests) and yields whole requests, each a list
//! of arguments. Both request forms Redis accepts are read: multibulk arrays of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and inline commands (`PING\r\n`, split on spaces).
//!
//! Every limit is checked before the bytes it guards are buffered, so a hostile peer can make
//! the parser hold at most about [`Limits::max_request`] bytes. A malformed or oversized request
//! is a [`ProtocolError`]: its reply is Redis's own message, and the connection must be closed
//! after sending it (the parser stays failed).

use alloc::vec::Vec;

/// Longest inline request line, and longest `*N` / `$N` header line, as in Redis (64 KiB).
pub const INLINE_MAX: usize = 64 * 1024;

/// What a request may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string (Redis's `proto-max-bulk-len`); default 1 MiB.
    pub max_bulk: usize,
    /// Largest multibulk element count; default 1024 * 1024 as in Redis.
    pub max_multibulk: usize,
    /// Most bytes one request may hold, its arguments' bytes plus
    /// [`ARG_OVERHEAD`] per argument; default 4 MiB.
    pub max_request: usize,
}

/// What each argument is charged against [`Limits::max_request`] besides its bytes: the size of
/// its `Vec` header, so that a million empty arguments cannot use memory for free.
pub const ARG_OVERHEAD: usize = core::mem::size_of::<Vec<u8>>();

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 1024 * 1024,
            max_multibulk: 1024 * 1024,
            max_request: 4 * 1024 * 1024,
        }
    }
}

/// Why a request could not be read; the connection is then closed after the error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// `Protocol error: too big inline request`: no newline within [`INLINE_MAX`] bytes.
    TooBigInline,
    /// `Protocol error: unbalanced quotes in request`: an inline request with an unclosed
    /// quote, or a closing quote not followed by a space.
    UnbalancedQuotes,
    /// `Protocol error: too big mbulk count string`: no `\r\n` after `*` within [`INLINE_MAX`].
    TooBigMultibulkCount,
    /// `Protocol error: invalid multibulk length`: not a number, or over the limit.
    InvalidMultibulkLength,
    /// `Protocol error: too big bulk count string`: no `\r\n` after `$` within [`INLINE_MAX`].
    TooBigBulkCount,
    /// `Protocol error: expected '$', got 'x'`: an array element that is not a bulk string.
    ExpectedDollar(u8),
    /// `Protocol error: invalid bulk length`: negative, not a number, or over the limit.
    InvalidBulkLength,
    /// `Protocol error: expected CRLF after bulk string`: the bulk's bytes not followed by
    /// `\r\n` (Redis skips two bytes unchecked; we refuse).
    MissingCrlf,
    /// `Protocol error: request too big`: the request's arguments would exceed
    /// [`Limits::max_request`] (Redis closes such clients without a reply).
    RequestTooBig,
}

impl ProtocolError {
    /// The error reply to send before closing, exactly as Redis words it (`-ERR ...\r\n`).
    pub fn reply(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let msg: &[u8] = match self {
            ProtocolError::TooBigInline => b"too big inline request",
            ProtocolError::UnbalancedQuotes => b"unbalanced quotes in request",
            ProtocolError::TooBigMultibulkCount => b"too big mbulk count string",
            ProtocolError::InvalidMultibulkLength => b"invalid multibulk length",
            ProtocolError::TooBigBulkCount => b"too big bulk count string",
            ProtocolError::ExpectedDollar(c) => {
                let mut m = b"-ERR Protocol error: expected '$', got '".to_vec();
                m.push(*c);
                m.extend_from_slice(b"'");
                error(&mut out, &m[1..]);
                return out;
            }
            ProtocolError::InvalidBulkLength => b"invalid bulk length",
            ProtocolError::MissingCrlf => b"expected CRLF after bulk string",
            ProtocolError::RequestTooBig => b"request too big",
        };
        let mut m = b"ERR Protocol error: ".to_vec();
        m.extend_from_slice(msg);
        error(&mut out, &m);
        out
    }
}

/// One request: its arguments, the command name first.
pub type Request = Vec<Vec<u8>>;

/// The incremental request reader. Feed it with [`Parser::push`], then call [`Parser::next_request`]
/// until it returns `Ok(None)` (needs more bytes).
#[derive(Debug, Default)]
pub struct Parser {
    limits: Limits,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    pos: usize,
    /// The multibulk request being read: its arguments so far and how many are still due.
    args: Request,
    remaining: usize,
    /// The charged size of `args` so far.
    charged: usize,
    /// The announced length of the bulk being read, once its `$N\r\n` has been read.
    bulk: Option<usize>,
    failed: Option<ProtocolError>,
}

impl Parser {
    /// A parser with the given limits.
    pub fn new(limits: Limits) -> Self {
        Parser {
            limits,
            ..Parser::default()
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes received but not yet part of a returned request.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next whole request, `Ok(None)` when more bytes are needed, or the protocol error
    /// (returned again on every later call).
    pub fn next_request(&mut self) -> Result<Option<Request>, ProtocolError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.step();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
            self.pos = 0;
        } else if self.pos > 0 && (self.pos == self.buf.len() || self.pos >= 4096) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        r
    }

    fn step(&mut self) -> Result<Option<Request>, ProtocolError> {
        loop {
            if self.remaining == 0 {
                let Some(&first) = self.buf.get(self.pos) else {
                    return Ok(None);
                };
                if first != b'*' {
                    match self.inline()? {
                        None => return Ok(None),
                        Some(req) if req.is_empty() => continue,
                        Some(req) => return Ok(Some(req)),
                    }
                }
                let Some(n) = self.header(INLINE_MAX, ProtocolError::TooBigMultibulkCount)? else {
                    return Ok(None);
                };
                // Redis: a count that is not a number or over the limit is an error; zero or
                // negative is an empty request, skipped.
                let n = n.ok_or(ProtocolError::InvalidMultibulkLength)?;
                if n > self.limits.max_multibulk as i64 {
                    return Err(ProtocolError::InvalidMultibulkLength);
                }
                if n <= 0 {
                    continue;
                }
                self.remaining = n as usize;
                self.args = Vec::with_capacity(self.remaining.min(64));
                self.charged = 0;
            }
            while self.remaining > 0 {
                let len = match self.bulk {
                    Some(len) => len,
                    None => {
                        let Some(&c) = self.buf.get(self.pos) else {
                            return Ok(None);
                        };
                        if c != b'$' {
                            return Err(ProtocolError::ExpectedDollar(c));
                        }
                        let Some(n) = self.header(INLINE_MAX, ProtocolError::TooBigBulkCount)?
                        else {
                            return Ok(None);
                        };
                        let n = n.ok_or(ProtocolError::InvalidBulkLength)?;
                        if n < 0 || n > self.limits.max_bulk as i64 {
                            return Err(ProtocolError::InvalidBulkLength);
                        }
                        let len = n as usize;
                        self.charged += len + ARG_OVERHEAD;
                        if self.charged > self.limits.max_request {
                            return Err(ProtocolError::RequestTooBig);
                        }
                        self.bulk = Some(len);
                        len
                    }
                };
                let avail = &self.buf[self.pos..];
                if avail.len() < len + 2 {
                    return Ok(None);
                }
                if &avail[len..len + 2] != b"\r\n" {
                    return Err(ProtocolError::MissingCrlf);
                }
                self.args.push(avail[..len].to_vec());
                self.pos += len + 2;
                self.bulk = None;
                self.remaining -= 1;
            }
            return Ok(Some(core::mem::take(&mut self.args)));
        }
    }

    /// Reads a `*N\r\n` or `$N\r\n` header at `pos`: `Ok(None)` if incomplete, `Some(None)` if
    /// the number is malformed.
    fn header(
        &mut self,
        max: usize,
        too_big: ProtocolError,
    ) -> Result<Option<Option<i64>>, ProtocolError> {
        let avail = &self.buf[self.pos..];
        let Some(end) = avail.windows(2).position(|w| w == b"\r\n") else {
            if avail.len() > max {
                return Err(too_big);
            }
            return Ok(None);
        };
        if end > max {
            return Err(too_big);
        }
        let n = parse_i64(&avail[1..end]);
        self.pos += end + 2;
        Ok(Some(n))
    }

    /// Reads an inline request line: `Ok(None)` if incomplete.
    fn inline(&mut self) -> Result<Option<Request>, ProtocolError> {
        let avail = &self.buf[self.pos..];
        let Some(nl) = avail.iter().position(|&b| b == b'\n') else {
            if avail.len() > INLINE_MAX {
                return Err(ProtocolError::TooBigInline);
            }
            return Ok(None);
        };
        if nl > INLINE_MAX {
            return Err(ProtocolError::TooBigInline);
        }
        let mut line = &avail[..nl];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        let req = split_args(line).ok_or(ProtocolError::UnbalancedQuotes)?;
        self.pos += nl + 1;
        Ok(Some(req))
    }
}

/// Redis's `sdssplitargs`, which splits inline requests: arguments separated by spaces; `"..."`
/// with the escapes `\n \r \t \b \a \\ \" \xHH`; `'...'` with `\'`. A closing quote must
/// be followed by a space or the end; `None` if it is not, or a quote is left open.
fn split_args(line: &[u8]) -> Option<Request> {
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0);
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        let (mut dq, mut sq) = (false, false);
        loop {
            let c = line.get(i).copied();
            if dq {
                match c? {
                    b'\\'
                        if i + 3 < line.len()
                            && line[i + 1] == b'x'
                            && hex(line[i + 2]).is_some()
                            && hex(line[i + 3]).is_some() =>
                    {
                        arg.push(hex(line[i + 2])? * 16 + hex(line[i + 3])?);
                        i += 3;
                    }
                    b'\\' if i + 1 < line.len() => {
                        i += 1;
                        arg.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    b'"' => {
                        if line.get(i + 1).is_some_and(|&b| !space(b)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    other => arg.push(other),
                }
            } else if sq {
                match c? {
                    b'\\' if line.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        arg.push(b'\'');
                    }
                    b'\'' => {
                        if line.get(i + 1).is_some_and(|&b| !space(b)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    other => arg.push(other),
                }
            } else {
                match c {
                    None => break,
                    Some(b) if space(b) => break,
                    Some(b'"') => dq = true,
                    Some(b'\'') => sq = true,
                    Some(b) => arg.push(b),
                }
            }
            i += 1;
        }
        args.push(arg);
    }
}

/// Redis's `string2ll`: an optional `-`, then digits without leading zeros (`0` alone is fine),
/// no `+`, no spaces, in range of `i64`.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] if !neg => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = (d - b'0') as i64;
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

/// Appends `+s\r\n`.
pub fn simple(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'+');
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

/// Appends `-msg\r\n`; `\r` and `\n` inside the message become spaces, as in Redis, so a
/// message quoting the client's bytes cannot break the framing.
pub fn error(out: &mut Vec<u8>, msg: &[u8]) {
    out.push(b'-');
    out.extend(
        msg.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Appends `:n\r\n`.
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_int(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends `$len\r\nbytes\r\n`.
pub fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'$');
    push_int(out, b.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// Appends the null bulk string `$-1\r\n`.
pub fn null_bulk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// Appends an array header `*n\r\n`; the caller appends the `n` elements.
pub fn array(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_int(out, n as i64);
    out.extend_from_slice(b"\r\n");
}

/// Appends the null array `*-1\r\n`.
pub fn null_array(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*-1\r\n");
}

/// Appends the decimal digits of `n`.
pub fn push_int(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn all(p: &mut Parser) -> Result<Vec<Request>, ProtocolError> {
        let mut v = Vec::new();
        while let Some(r) = p.next_request()? {
            v.push(r);
        }
        Ok(v)
    }

    fn args(a: &[&str]) -> Request {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_and_inline_pipelined() {
        let mut p = Parser::default();
        p.push(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n  set  a   b \r\n\r\n*0\r\n*-1\r\n*1\r\n$0\r\n\r\nECHO x\n");
        let v = all(&mut p).unwrap();
        assert_eq!(
            v,
            vec![
                args(&["GET", "k"]),
                args(&["PING"]),
                args(&["set", "a", "b"]),
                args(&[""]),
                args(&["ECHO", "x"])
            ]
        );
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn split_anywhere_gives_the_same_requests() {
        let stream: &[u8] = b"*3\r\n$3\r\nSET\r\n$5\r\nk\r\ney\r\n$10\r\n0123456789\r\nPING\r\n*1\r\n$4\r\nPING\r\n";
        let mut whole = Parser::default();
        whole.push(stream);
        let expect = all(&mut whole).unwrap();
        assert_eq!(expect.len(), 3);
        assert_eq!(expect[0][1], b"k\r\ney");
        for cut in 0..stream.len() {
            let mut p = Parser::default();
            p.push(&stream[..cut]);
            let mut got = all(&mut p).unwrap();
            p.push(&stream[cut..]);
            got.extend(all(&mut p).unwrap());
            assert_eq!(got, expect, "cut at {cut}");
        }
        let mut p = Parser::default();
        let mut got = Vec::new();
        for b in stream {
            p.push(core::slice::from_ref(b));
            got.extend(all(&mut p).unwrap());
        }
        assert_eq!(got, expect);
    }

    fn err_of(input: &[u8]) -> Vec<u8> {
        let mut p = Parser::new(Limits {
            max_bulk: 1000,
            max_multibulk: 100,
            max_request: 5000,
        });
        p.push(input);
        let e = all(&mut p).unwrap_err();
        // The parser stays failed.
        p.push(b"PING\r\n");
        assert_eq!(p.next_request(), Err(e.clone()));
        e.reply()
    }

    #[test]
    fn protocol_errors_use_redis_messages() {
        assert_eq!(
            err_of(b"*abc\r\n"),
            b"-ERR Protocol error: invalid multibulk length\r\n"
        );
        assert_eq!(
            err_of(b"*101\r\n"),
            b"-ERR Protocol error: invalid multibulk length\r\n"
        );
        assert_eq!(
            err_of(b"*99999999999999999999999\r\n"),
            b"-ERR Protocol error: invalid multibulk length\r\n"
        );
        assert_eq!(
            err_of(b"*1\r\n$-1\r\n"),
            b"-ERR Protocol error: invalid bulk length\r\n"
        );
        assert_eq!(
            err_of(b"*1\r\n$1001\r\n"),
            b"-ERR Protocol error: invalid bulk length\r\n"
        );
        assert_eq!(
            err_of(b"*1\r\n$x\r\n"),
            b"-ERR Protocol error: invalid bulk length\r\n"
        );
        assert_eq!(
            err_of(b"*1\r\n$+1\r\n"),
            b"-ERR Protocol error: invalid bulk length\r\n"
        );
        assert_eq!(
            err_of(b"*1\r\nx3\r\n"),
            b"-ERR Protocol error: expected '$', got 'x'\r\n"
        );
        assert_eq!(
            err_of(b"*1\r\n\r\n"),
            b"-ERR Protocol error: expected '$', got ' '\r\n"
        );
        assert_eq!(
            err_of(b"*1\r\n$3\r\nabcde"),
            b"-ERR Protocol error: expected CRLF after bulk string\r\n"
        );
        assert_eq!(
            err_of(&vec![b'a'; INLINE_MAX + 1]),
            b"-ERR Protocol error: too big inline request\r\n"
        );
        let mut big = b"*".to_vec();
        big.extend(vec![b'1'; INLINE_MAX + 1]);
        assert_eq!(
            err_of(&big),
            b"-ERR Protocol error: too big mbulk count string\r\n"
        );
        let mut big = b"*1\r\n$".to_vec();
        big.extend(vec![b'1'; INLINE_MAX + 1]);
        assert_eq!(
            err_of(&big),
            b"-ERR Protocol error: too big bulk count string\r\n"
        );
        // Five bulks of 1000 bytes: each within max_bulk, together over max_request.
        let mut req = b"*5\r\n".to_vec();
        for _ in 0..5 {
            req.extend_from_slice(b"$1000\r\n");
            req.extend(vec![b'z'; 1000]);
            req.extend_from_slice(b"\r\n");
        }
        assert_eq!(err_of(&req), b"-ERR Protocol error: request too big\r\n");
        // Many empty arguments are charged too.
        let mut req = b"*100\r\n".to_vec();
        for _ in 0..100 {
            req.extend_from_slice(b"$0\r\n\r\n");
        }
        let mut p = Parser::new(Limits {
            max_bulk: 1000,
            max_multibulk: 100,
            max_request: 1000,
        });
        p.push(&req);
        assert_eq!(p.next_request(), Err(ProtocolError::RequestTooBig));
    }

    #[test]
    fn binary_garbage_never_panics() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for round in 0..2000 {
            let mut p = Parser::new(Limits {
                max_bulk: 64,
                max_multibulk: 8,
                max_request: 256,
            });
            for _ in 0..8 {
                let mut chunk = Vec::new();
                for _ in 0..(x % 40) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let alphabet = b"*$\r\n-0123456789abc \x00\xff";
                    chunk.push(if round % 2 == 0 {
                        alphabet[(x % alphabet.len() as u64) as usize]
                    } else {
                        x as u8
                    });
                }
                p.push(&chunk);
                while let Ok(Some(_)) = p.next_request() {}
                assert!(p.buffered() <= 256 + INLINE_MAX + 64);
            }
        }
    }

    #[test]
    fn inline_quotes_as_sdssplitargs() {
        let mut p = Parser::default();
        p.push(b"set \"a b\" 'c d' \"\\x41\\n\\\"\" 'it\\'s' x\"y z\"\r\n\"\"\r\n");
        assert_eq!(
            all(&mut p).unwrap(),
            vec![
                vec![
                    b"set".to_vec(),
                    b"a b".to_vec(),
                    b"c d".to_vec(),
                    b"A\n\"".to_vec(),
                    b"it's".to_vec(),
                    b"xy z".to_vec()
                ],
                vec![b"".to_vec()],
            ]
        );
        for bad in [
            &b"set \"a\r\n"[..],
            b"set 'a\r\n",
            b"set \"a\"b\r\n",
            b"set 'a'b\n",
        ] {
            assert_eq!(
                err_of(bad),
                b"-ERR Protocol error: unbalanced quotes in request\r\n"
            );
        }
    }

    #[test]
    fn parse_i64_is_strict() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"9223372036854775808",
            b"1x",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn encoders() {
        let mut o = Vec::new();
        simple(&mut o, b"OK");
        error(&mut o, b"ERR a\r\nb");
        integer(&mut o, -42);
        integer(&mut o, i64::MIN);
        bulk(&mut o, b"hi");
        bulk(&mut o, b"");
        null_bulk(&mut o);
        array(&mut o, 2);
        null_array(&mut o);
        assert_eq!(o, b"+OK\r\n-ERR a  b\r\n:-42\r\n:-9223372036854775808\r\n$2\r\nhi\r\n$0\r\n\r\n$-1\r\n*2\r\n*-1\r\n".to_vec());
    }
}
