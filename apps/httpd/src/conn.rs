//! One HTTP connection: input buffering, request framing, and the responses.

use alloc::vec::Vec;

use crate::output::{printable, LogRecord, Output};
use crate::parse::{self, HeadEnd, HeadError, Version};
use crate::{File, Site};

/// Per-connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line, header fields and the empty line), in bytes: a larger
    /// one gets 431 (414 if the request line alone is larger). Also bounds the input a `Conn`
    /// buffers (`max_header_bytes + 1`). Default 8 KiB.
    pub max_header_bytes: usize,
    /// Largest request body read and discarded (`Content-Length`); a larger one gets 413.
    /// Default 64 KiB.
    pub max_body_bytes: u64,
    /// Requests served on one connection; the last one's response says `Connection: close`.
    /// Default 10 000.
    pub max_requests_per_conn: u32,
    /// No new response is started while the [`Output`] holds at least this many bytes (one
    /// always is when it is empty). Default 64 KiB.
    pub max_pending_output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 8 * 1024,
            max_body_bytes: 64 * 1024,
            max_requests_per_conn: 10_000,
            max_pending_output: 64 * 1024,
        }
    }
}

/// What [`Conn::feed`] and [`Conn::eof`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Status {
    /// Input bytes taken; the caller keeps the others (in the socket's receive buffer) and
    /// offers them again once it has written some output.
    pub consumed: usize,
    /// No further response will be produced: close the connection once the output is written.
    /// Later input is consumed and ignored.
    pub close: bool,
}

/// Where a [`Conn`] stands: what it waits for from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing of the next request received (before the first request, or between keep-alive
    /// requests).
    Idle,
    /// Part of a request head received (`bytes` of it buffered, the head not complete), or
    /// complete pipelined requests held back while the output queue is full.
    Head {
        /// Unparsed bytes buffered.
        bytes: usize,
    },
    /// A request body is being read (and discarded).
    Body,
    /// No further response will be produced.
    Closed,
}

/// The state of one connection. See the crate documentation for the protocol.
#[derive(Debug)]
pub struct Conn {
    limits: Limits,
    /// Received bytes; `buf[pos..]` is not parsed yet.
    buf: Vec<u8>,
    pos: usize,
    /// Where the search for the end of the current head resumes (an index into `buf`, a line
    /// start at or after `pos`), so bytes arriving one by one are not rescanned.
    scan: usize,
    /// Bytes of the current request's body still to discard.
    body_left: u64,
    /// Requests answered.
    requests: u32,
    /// No more responses; input is ignored.
    closed: bool,
    /// The peer sent FIN: answer the complete requests buffered, then close.
    peer_eof: bool,
}

impl Conn {
    /// A new connection with `limits`.
    pub fn new(limits: Limits) -> Conn {
        Conn {
            limits,
            buf: Vec::new(),
            pos: 0,
            scan: 0,
            body_left: 0,
            requests: 0,
            closed: false,
            peer_eof: false,
        }
    }

    /// Takes received bytes (any split: partial requests, several pipelined ones) and appends the
    /// responses to `out`, in order. Takes only what it can buffer while `out` is above
    /// [`Limits::max_pending_output`]; call again (with the rest, new bytes, or `&[]`) after
    /// writing output, to resume held-back requests.
    pub fn feed(&mut self, site: &Site, input: &[u8], out: &mut Output) -> Status {
        let mut rest = input;
        loop {
            self.process(site, out);
            if self.closed {
                rest = &[];
                break;
            }
            if rest.is_empty() {
                break;
            }
            if self.body_left > 0 && self.pos == self.buf.len() {
                // Discard body bytes straight from the input.
                let n = usize::try_from(self.body_left)
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
                let (_, r) = rest.split_at(n);
                rest = r;
                self.body_left -= n as u64;
                continue;
            }
            self.compact();
            let room = self.input_cap().saturating_sub(self.buf.len());
            if room == 0 {
                break;
            }
            let (take, r) = rest.split_at(room.min(rest.len()));
            self.buf.extend_from_slice(take);
            rest = r;
        }
        Status {
            consumed: input.len() - rest.len(),
            close: self.closed,
        }
    }

    /// The peer half-closed its side: the complete requests already received are still answered
    /// (call [`Conn::feed`] with `&[]` after writing output if `close` is not set yet), an
    /// incomplete one is dropped without an answer.
    pub fn eof(&mut self, site: &Site, out: &mut Output) -> Status {
        self.peer_eof = true;
        self.process(site, out);
        Status {
            consumed: 0,
            close: self.closed,
        }
    }

    /// No further response will be produced.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The limits this connection was made with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Requests answered on this connection.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// Where the connection stands between calls (for deadlines and shedding: see
    /// [`crate::guard`]).
    pub fn phase(&self) -> Phase {
        if self.closed {
            Phase::Closed
        } else if self.body_left > 0 {
            Phase::Body
        } else {
            match self.buf.len().saturating_sub(self.pos) {
                0 => Phase::Idle,
                bytes => Phase::Head { bytes },
            }
        }
    }

    /// Unparsed input bytes held.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn input_cap(&self) -> usize {
        self.limits.max_header_bytes.saturating_add(1)
    }

    /// Drops the parsed bytes from the front of the buffer.
    fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.drain(..self.pos.min(self.buf.len()));
            self.scan = self.scan.saturating_sub(self.pos);
            self.pos = 0;
        }
    }

    /// Answers the complete requests in the buffer while the output has room.
    fn process(&mut self, site: &Site, out: &mut Output) {
        while !self.closed {
            if self.body_left > 0 {
                let avail = self.buf.len().saturating_sub(self.pos);
                let n = usize::try_from(self.body_left)
                    .unwrap_or(usize::MAX)
                    .min(avail);
                self.pos += n;
                self.scan = self.pos;
                self.body_left -= n as u64;
                if self.body_left > 0 {
                    self.closed = self.peer_eof;
                    return;
                }
            }
            if self.scan <= self.pos {
                // Empty lines before a request line are ignored (RFC 9112 §2.2).
                loop {
                    let pending = self.buf.get(self.pos..).unwrap_or_default();
                    if pending.starts_with(b"\r\n") {
                        self.pos += 2;
                    } else if pending.starts_with(b"\n") {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                self.scan = self.pos;
            }
            let pending = self.buf.get(self.pos..).unwrap_or_default();
            if pending.is_empty() {
                self.closed = self.peer_eof;
                return;
            }
            if !out.is_empty() && out.len_bytes() >= self.limits.max_pending_output {
                return;
            }
            match parse::find_head_end(pending, self.scan.saturating_sub(self.pos)) {
                HeadEnd::Complete(len) => {
                    self.requests = self.requests.saturating_add(1);
                    let outcome = if len > self.limits.max_header_bytes {
                        refuse(431, pending, out)
                    } else {
                        let head = pending.get(..len).unwrap_or_default();
                        respond(site, &self.limits, self.requests, head, out)
                    };
                    self.pos += len;
                    self.scan = self.pos;
                    self.body_left = outcome.body;
                    self.closed = outcome.close;
                }
                HeadEnd::Partial { resume, line_seen } => {
                    self.scan = self.pos + resume;
                    if pending.len() > self.limits.max_header_bytes {
                        self.requests = self.requests.saturating_add(1);
                        refuse(if line_seen { 431 } else { 414 }, pending, out);
                        self.closed = true;
                    } else {
                        // An incomplete request at end of input gets no answer.
                        self.closed = self.peer_eof;
                    }
                    return;
                }
            }
        }
    }
}

/// What happens after a response.
struct Outcome {
    /// Close the connection.
    close: bool,
    /// Body bytes to discard before the next request.
    body: u64,
}

/// A response, before serialization.
struct Response<'a> {
    status: u16,
    content_type: &'a str,
    /// The body (for HEAD and 304 only its length is used).
    body: &'static [u8],
    etag: Option<&'a str>,
    location: Option<&'a [u8]>,
    allow: bool,
}

impl Response<'_> {
    fn error(status: u16) -> Response<'static> {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: error_body(status),
            etag: None,
            location: None,
            allow: false,
        }
    }

    fn file(status: u16, file: &File) -> Response<'_> {
        Response {
            status,
            content_type: file.content_type,
            body: file.body,
            etag: Some(file.etag),
            location: None,
            allow: false,
        }
    }
}

/// Answers a request refused before parsing (431, 414): closes.
fn refuse(status: u16, pending: &[u8], out: &mut Output) -> Outcome {
    let (method, target) = parse::peek_request_line(pending);
    let send_body = method != b"HEAD";
    let body = write_response(
        out,
        &Response::error(status),
        send_body,
        false,
        Version::Http11,
    );
    out.push_log(|| log_record(method, target, status, body, false));
    Outcome {
        close: true,
        body: 0,
    }
}

/// Answers one complete request head.
fn respond(
    site: &Site,
    limits: &Limits,
    request_no: u32,
    head: &[u8],
    out: &mut Output,
) -> Outcome {
    let h = match parse::parse_head(head) {
        Ok(h) => h,
        Err(e) => {
            let status = match e {
                HeadError::BadRequest(_) => 400,
                HeadError::Version => 505,
            };
            return refuse(status, head, out);
        }
    };
    let send = |out: &mut Output, r: &Response<'_>, keep_alive: bool, body: u64| {
        let sent = write_response(out, r, h.method != b"HEAD", keep_alive, h.version);
        out.push_log(|| log_record(h.method, h.target, r.status, sent, keep_alive));
        Outcome {
            close: !keep_alive,
            body,
        }
    };
    if h.transfer_encoding {
        return send(out, &Response::error(501), false, 0);
    }
    let body = h.content_length.unwrap_or(0);
    if body > limits.max_body_bytes {
        return send(out, &Response::error(413), false, 0);
    }
    let keep_alive = match h.version {
        Version::Http11 => !h.conn_close,
        Version::Http10 => h.conn_keep_alive && !h.conn_close,
    } && request_no < limits.max_requests_per_conn
        // A client waiting for `100 Continue` may never send the body we would have to skip
        // (RFC 9110 §10.1.1): answer without reading it, and close.
        && !(h.expect_continue && body > 0);
    if h.method != b"GET" && h.method != b"HEAD" {
        let r = Response {
            allow: true,
            ..Response::error(405)
        };
        return send(out, &r, keep_alive, body);
    }
    let Some(target) = parse::resolve_target(h.target) else {
        return send(out, &Response::error(400), false, 0);
    };
    let Some(path) = target.path else {
        return send(out, &Response::error(404), keep_alive, body);
    };
    let file = if path.ends_with('/') {
        site.get(&(path + "index.html"))
    } else if let Some(f) = site.get(&path) {
        Some(f)
    } else if site.get(&(path + "/index.html")).is_some() {
        // A directory named without its slash: send the client to the slashed path.
        let mut location = Vec::from(target.raw_path);
        location.push(b'/');
        let r = Response {
            location: Some(&location),
            ..Response::error(301)
        };
        return send(out, &r, keep_alive, body);
    } else {
        None
    };
    let Some(file) = file else {
        return send(out, &Response::error(404), keep_alive, body);
    };
    let status = if parse::if_none_match(&h.if_none_match, file.etag) {
        304
    } else {
        200
    };
    send(out, &Response::file(status, file), keep_alive, body)
}

/// Serializes `r` into `out`; returns the body bytes queued.
fn write_response(
    out: &mut Output,
    r: &Response<'_>,
    send_body: bool,
    keep_alive: bool,
    version: Version,
) -> usize {
    let mut h = Vec::with_capacity(192);
    h.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(&mut h, u64::from(r.status));
    h.push(b' ');
    h.extend_from_slice(reason(r.status).as_bytes());
    h.extend_from_slice(b"\r\nServer: xenrt-httpd\r\nContent-Type: ");
    h.extend_from_slice(r.content_type.as_bytes());
    h.extend_from_slice(b"\r\nContent-Length: ");
    push_decimal(&mut h, r.body.len() as u64);
    if let Some(etag) = r.etag {
        h.extend_from_slice(b"\r\nETag: ");
        h.extend_from_slice(etag.as_bytes());
    }
    if let Some(location) = r.location {
        h.extend_from_slice(b"\r\nLocation: ");
        h.extend_from_slice(location);
    }
    if r.allow {
        h.extend_from_slice(b"\r\nAllow: GET, HEAD");
    }
    if !keep_alive {
        h.extend_from_slice(b"\r\nConnection: close");
    } else if version == Version::Http10 {
        h.extend_from_slice(b"\r\nConnection: keep-alive");
    }
    h.extend_from_slice(b"\r\n\r\n");
    out.push_owned(h);
    if send_body && r.status != 304 {
        out.push_static(r.body);
        r.body.len()
    } else {
        0
    }
}

fn log_record(method: &[u8], target: &[u8], status: u16, body: usize, keep: bool) -> LogRecord {
    LogRecord {
        method: printable(method, 16),
        path: printable(target, 200),
        status,
        body_bytes: body,
        keep_alive: keep,
    }
}

fn push_decimal(v: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    v.extend_from_slice(digits.get(i..).unwrap_or_default());
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn error_body(status: u16) -> &'static [u8] {
    match status {
        301 => b"301 Moved Permanently\n",
        400 => b"400 Bad Request\n",
        404 => b"404 Not Found\n",
        405 => b"405 Method Not Allowed\n",
        413 => b"413 Content Too Large\n",
        414 => b"414 URI Too Long\n",
        431 => b"431 Request Header Fields Too Large\n",
        501 => b"501 Not Implemented\n",
        505 => b"505 HTTP Version Not Supported\n",
        _ => b"error\n",
    }
}
