//! The output queue: response bytes waiting for the socket, and the access log.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Static bodies up to this size are copied behind the headers (one chunk, one socket write);
/// larger ones are queued by reference.
const COPY_SMALL_BODY: usize = 1024;

/// One piece of output.
#[derive(Debug)]
enum Chunk {
    /// Bytes built for this response (status line and headers, small bodies).
    Owned(Vec<u8>),
    /// A file body from the image, never copied.
    Static(&'static [u8]),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Static(s) => s,
        }
    }
}

/// Response bytes in order, as chunks the caller writes to its socket, plus the access-log records
/// of the requests answered so far.
///
/// Write loop: `while let Some(b) = out.front() { let n = socket.send(b); out.consume(n); if n <
/// b.len() { break } }` (or [`Output::write_with`]).
#[derive(Debug)]
pub struct Output {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already sent.
    sent: usize,
    /// Unsent bytes in all chunks.
    len: usize,
    log: Vec<LogRecord>,
    logging: bool,
}

impl Default for Output {
    fn default() -> Self {
        Output::new()
    }
}

impl Output {
    /// An empty queue that collects access-log records.
    pub fn new() -> Output {
        Output {
            chunks: VecDeque::new(),
            sent: 0,
            len: 0,
            log: Vec::new(),
            logging: true,
        }
    }

    /// Turns the collection of access-log records on or off (on by default); off saves their
    /// allocations when nobody prints them.
    pub fn set_logging(&mut self, on: bool) {
        self.logging = on;
    }

    /// The unsent part of the first chunk, or `None` when everything was sent.
    pub fn front(&self) -> Option<&[u8]> {
        self.chunks.front().and_then(|c| c.bytes().get(self.sent..))
    }

    /// Marks `n` bytes as sent (may span chunks; more than [`Output::len_bytes`] is clamped).
    pub fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.bytes().len() - self.sent;
            if n < left {
                self.sent += n;
                self.len -= n;
                return;
            }
            n -= left;
            self.len -= left;
            self.sent = 0;
            self.chunks.pop_front();
        }
    }

    /// Nothing left to send.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Unsent bytes.
    pub fn len_bytes(&self) -> usize {
        self.len
    }

    /// Hands the unsent bytes to `write`, chunk by chunk, until it takes fewer bytes than offered
    /// (the socket is full), fails, or everything is sent. Returns the bytes written.
    pub fn write_with<E>(
        &mut self,
        mut write: impl FnMut(&[u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let mut total = 0;
        while let Some(bytes) = self.front() {
            let offered = bytes.len();
            let n = write(bytes)?.min(offered);
            self.consume(n);
            total += n;
            if n < offered {
                break;
            }
        }
        Ok(total)
    }

    /// Takes the access-log records of the requests answered so far, oldest first.
    pub fn drain_log(&mut self) -> alloc::vec::Drain<'_, LogRecord> {
        self.log.drain(..)
    }

    /// Appends response bytes (merged into the last chunk when it is owned too).
    pub(crate) fn push_owned(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if let Some(Chunk::Owned(last)) = self.chunks.back_mut() {
            // The front chunk may be partly sent; appending keeps `sent` valid.
            last.extend_from_slice(&bytes);
        } else {
            self.chunks.push_back(Chunk::Owned(bytes));
        }
    }

    /// Appends a static body: copied when small, queued by reference otherwise.
    pub(crate) fn push_static(&mut self, body: &'static [u8]) {
        if body.is_empty() {
            return;
        }
        if body.len() <= COPY_SMALL_BODY {
            if let Some(Chunk::Owned(last)) = self.chunks.back_mut() {
                last.extend_from_slice(body);
                self.len += body.len();
                return;
            }
        }
        self.len += body.len();
        self.chunks.push_back(Chunk::Static(body));
    }

    pub(crate) fn push_log(&mut self, record: impl FnOnce() -> LogRecord) {
        if self.logging {
            self.log.push(record());
        }
    }
}

/// The access-log record of one request. `Display` prints `METHOD PATH STATUS BODY_BYTES
/// keep-alive|close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The request method (`-` when the request line could not be read); printable ASCII only.
    pub method: String,
    /// The request target as sent (`-` when unreadable), escaped to printable ASCII and cut to
    /// 200 bytes.
    pub path: String,
    /// The response status code.
    pub status: u16,
    /// Body bytes of the response (0 for HEAD and 304).
    pub body_bytes: usize,
    /// Whether the connection stays open after this response.
    pub keep_alive: bool,
}

impl fmt::Display for LogRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conn = if self.keep_alive {
            "keep-alive"
        } else {
            "close"
        };
        write!(
            f,
            "{} {} {} {} {conn}",
            self.method, self.path, self.status, self.body_bytes
        )
    }
}

/// `bytes` as printable ASCII (others as `\xNN`), at most `max` source bytes; `-` when empty.
pub(crate) fn printable(bytes: &[u8], max: usize) -> String {
    use core::fmt::Write as _;
    let mut s = String::new();
    for &b in bytes.iter().take(max) {
        if (0x21..0x7f).contains(&b) && b != b'\\' {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    if bytes.len() > max {
        s.push_str("...");
    }
    if s.is_empty() {
        s.push('-');
    }
    s
}
