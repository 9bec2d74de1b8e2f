//! httpd: the protocol core of a static HTTP/1.1 file server, sans-IO.
//!
//! No sockets and no Xen here: a [`Conn`] is fed the bytes a TCP connection received and appends
//! the responses, in request order, to an [`Output`] queue that the caller writes to the socket as
//! room allows. The same code runs in the unikernel (driven by the TCP sockets of the network
//! stack) and in the host tests.
//!
//! # Content
//!
//! The site is baked into the image at build time, so the image is immutable: `build.rs` walks the
//! directory named by the `HTTPD_WWW` environment variable (default `apps/httpd/www`; a relative
//! path is taken from the workspace root; dot files are skipped) and generates one
//! `include_bytes!` entry per file, with its content type (by extension) and a strong ETag (length
//! and FNV-1a 64 of the content, computed at build time). [`Site::baked`] is that table.
//! `HTTPD_WWW=/path/to/site scripts/build httpd` builds an image serving another directory.
//!
//! `/` and every path ending in `/` serve the `index.html` of that directory; a directory named
//! without its trailing slash gets a 301 to the slashed path. Paths are percent-decoded and
//! `.`/`..` segments are resolved without ever going above the root (the lookup is in the baked
//! table only, there is no file system behind it); query strings are ignored.
//!
//! # Protocol
//!
//! - Methods: GET and HEAD (HEAD sends the GET headers, `Content-Length` included, and no body).
//!   Any other method gets 405 with `Allow: GET, HEAD`.
//! - Connections: keep-alive by default on HTTP/1.1 (`Connection: close` honoured); HTTP/1.0
//!   closes unless the request says `Connection: keep-alive`. Pipelined requests are answered in
//!   order. After [`Limits::max_requests_per_conn`] requests the response says
//!   `Connection: close`.
//! - Every response has `Content-Type` and `Content-Length`; files also have `ETag`, and a GET or
//!   HEAD whose `If-None-Match` matches (weak comparison, lists and `*`, RFC 9110 §13.1.2) gets
//!   304 (with the `Content-Length` the 200 would have had, and no body).
//! - Request bodies: a request with `Content-Length` up to [`Limits::max_body_bytes`] has its body
//!   read and discarded (the connection stays usable); a larger one gets 413.
//!   `Transfer-Encoding` (chunked or anything else) is not implemented: 501. Both headers: 400.
//!   A request with a body and `Expect: 100-continue` is answered without reading the body (no
//!   `100 Continue` is sent) and the connection closes.
//! - Errors: 400 for a malformed request line or header (bad token, missing `:`, whitespace
//!   before `:`, obs-fold, bare CR, control characters, bad or conflicting `Content-Length`,
//!   missing or repeated `Host` on HTTP/1.1, bad percent-encoding, a target that is neither
//!   origin nor absolute form), 404, 405, 413, 414 (request line longer than the header limit),
//!   431 (header section larger than [`Limits::max_header_bytes`]), 501, 505 (a version other
//!   than HTTP/1.0 and 1.1). After 400, 413, 414, 431, 501 and 505 the connection closes.
//! - Lines may end in CRLF or a bare LF; empty lines before a request line are skipped.
//! - No `Date` header (the unikernel has no wall clock), `Server: xenrt-httpd`.
//!
//! # Limits and backpressure
//!
//! [`Limits`]: header section 8 KiB, request body 64 KiB, 10 000 requests per connection, and a
//! high-water mark of 64 KiB on the output queue: a `Conn` starts no new response while its
//! `Output` holds that much (at least one response always fits), and buffers at most
//! `max_header_bytes + 1` unparsed input bytes; [`Conn::feed`] returns how many input bytes it
//! took, so the rest stays in the socket's receive buffer (and the TCP window closes). Call
//! `feed` again (with new bytes or with none) after writing some of the output: it resumes the
//! pipelined requests it held back. Memory per connection is therefore bounded by the input
//! buffer, the output headers and the access log records the caller has not taken.
//!
//! # Example
//!
//! ```
//! use httpd::{Conn, Limits, Output, Site};
//!
//! let site = Site::baked();
//! let mut conn = Conn::new(Limits::default());
//! let mut out = Output::new();
//! let status = conn.feed(&site, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut out);
//! assert_eq!(status.consumed, 27);
//! assert!(!status.close);
//! let mut sent = Vec::new();
//! while let Some(chunk) = out.front() {
//!     let n = chunk.len(); // a socket would take what fits
//!     sent.extend_from_slice(chunk);
//!     out.consume(n);
//! }
//! assert!(sent.starts_with(b"HTTP/1.1 200 OK\r\n"));
//! for record in out.drain_log() {
//!     println!("{record}"); // "GET / 200 543 keep-alive"
//! }
//! ```
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

mod conn;
pub mod guard;
mod output;
mod parse;
#[cfg(test)]
mod tests;

pub use conn::{Conn, Limits, Phase, Status};
pub use output::{LogRecord, Output};

/// One file of the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct File {
    /// The URL path: starts with `/`, segments separated by `/`, not percent-encoded.
    pub path: &'static str,
    /// The content, served without copying.
    pub body: &'static [u8],
    /// The `Content-Type` value.
    pub content_type: &'static str,
    /// The strong entity tag, quotes included (`"1f4-0123456789abcdef"`).
    pub etag: &'static str,
}

/// The files a server serves: a table of [`File`]s, looked up by exact path.
#[derive(Debug, Clone, Copy)]
pub struct Site {
    files: &'static [File],
}

mod baked {
    include!(concat!(env!("OUT_DIR"), "/site.rs"));
}

impl Site {
    /// A site serving `files` (looked up by exact [`File::path`]).
    pub const fn new(files: &'static [File]) -> Site {
        Site { files }
    }

    /// The site baked into the image at build time from `HTTPD_WWW`.
    pub const fn baked() -> Site {
        Site::new(baked::FILES)
    }

    /// All files.
    pub fn files(&self) -> &'static [File] {
        self.files
    }

    /// The sum of the files' sizes in bytes.
    pub fn total_bytes(&self) -> usize {
        self.files.iter().map(|f| f.body.len()).sum()
    }

    /// The file at `path` (exact match, e.g. `/index.html`).
    pub fn get(&self, path: &str) -> Option<&'static File> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// FNV-1a 64 of `bytes`: the hash in the baked ETags (`"<len hex>-<fnv hex>"`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
