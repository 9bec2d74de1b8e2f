//! Fuzzes httpd's request parser and connection state machine ([`httpd::Conn`]) with arbitrary
//! bytes from a client, under limits picked by the input. The same stream is served twice: fed
//! in one piece with all output written at once, and in pieces of input-chosen sizes to a socket
//! taking input-chosen amounts at a time, under another output high-water mark; the two must
//! send the same bytes and log the same records. Then the responses must be well formed: one
//! per log record, each `HTTP/1.1 NNN Reason`, headers without control characters (nothing from
//! the request leaks a CR or LF into them), the body `Content-Length` says (none for HEAD and
//! 304), `Connection: close` exactly on the last one when the connection closes, and a
//! connection that was told of the client's EOF always closes. Feeding must always make
//! progress. Run with `scripts/fuzz 60 request`.
#![no_main]

use httpd::{Conn, File, Limits, LogRecord, Output, Site};
use libfuzzer_sys::fuzz_target;

static BIG: [u8; 3000] = [b'x'; 3000];

static FILES: &[File] = &[
    File {
        path: "/index.html",
        body: b"<h1>home</h1>\n",
        content_type: "text/html; charset=utf-8",
        etag: "\"e-1\"",
    },
    File {
        path: "/a.txt",
        body: b"hello\n",
        content_type: "text/plain; charset=utf-8",
        etag: "\"6-2\"",
    },
    File {
        path: "/docs/index.html",
        body: b"docs\n",
        content_type: "text/html; charset=utf-8",
        etag: "\"5-3\"",
    },
    File {
        path: "/sp ace.txt",
        body: b"space\n",
        content_type: "text/plain; charset=utf-8",
        etag: "\"6-4\"",
    },
    File {
        path: "/big.bin",
        body: &BIG,
        content_type: "application/octet-stream",
        etag: "\"bb8-5\"",
    },
];

const SITE: Site = Site::new(FILES);

/// xorshift64: the split sizes of the second run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// What a connection sent and logged.
#[derive(PartialEq, Eq, Debug)]
struct Served {
    sent: Vec<u8>,
    log: Vec<LogRecord>,
    close: bool,
}

/// Serves `input`: in pieces of `piece()` bytes, writing at most `room()` bytes per socket write.
fn serve(
    limits: Limits,
    input: &[u8],
    mut piece: impl FnMut() -> usize,
    mut room: impl FnMut() -> usize,
) -> Served {
    let mut conn = Conn::new(limits);
    let mut out = Output::new();
    let mut sent = Vec::new();
    let mut close = false;
    let mut write = |out: &mut Output, sent: &mut Vec<u8>| {
        // A socket with `room()` bytes free, emptied between calls.
        out.write_with(|b| {
            let n = b.len().min(room());
            sent.extend_from_slice(&b[..n]);
            Ok::<_, ()>(n)
        })
        .unwrap()
    };
    let bound = limits.max_pending_output + BIG.len() + 4 * limits.max_header_bytes + 1024;
    let mut rest = input;
    while !rest.is_empty() {
        let n = piece().clamp(1, rest.len());
        let mut seg = &rest[..n];
        rest = &rest[n..];
        // As the server's socket loop: offer what is unread, write, until all is taken.
        loop {
            let st = conn.feed(&SITE, seg, &mut out);
            assert!(st.consumed <= seg.len());
            assert!(!close || st.close, "reopened");
            close = st.close;
            seg = &seg[st.consumed..];
            assert!(out.len_bytes() <= bound, "{} bytes queued", out.len_bytes());
            let wrote = write(&mut out, &mut sent);
            if seg.is_empty() && wrote == 0 {
                break;
            }
            assert!(st.consumed > 0 || wrote > 0, "no progress");
        }
    }
    let _ = conn.eof(&SITE, &mut out);
    loop {
        let wrote = write(&mut out, &mut sent);
        if out.is_empty() && wrote == 0 {
            close = conn.feed(&SITE, &[], &mut out).close;
            if out.is_empty() {
                break;
            }
        }
    }
    assert!(close, "EOF answered but the connection stays open");
    Served {
        sent,
        log: out.drain_log().collect(),
        close,
    }
}

/// Checks the response stream against the log.
fn check_responses(s: &Served) {
    let mut bytes = &s.sent[..];
    for (i, rec) in s.log.iter().enumerate() {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("response {i} has no end of head"))
            + 4;
        let head = std::str::from_utf8(&bytes[..end - 4]).expect("head is not UTF-8");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        assert_eq!(status, rec.status);
        assert!((200..600).contains(&status));
        let mut length = None;
        let mut connection_close = false;
        for l in lines {
            let (name, value) = l.split_once(": ").unwrap_or_else(|| panic!("header {l:?}"));
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            );
            assert!(
                value
                    .bytes()
                    .all(|b| b == b'\t' || (0x20..0x7f).contains(&b)),
                "header {name} value {value:?}"
            );
            match name {
                "Content-Length" => {
                    assert!(length.is_none(), "two Content-Length");
                    length = Some(value.parse::<usize>().unwrap());
                }
                "Connection" if value == "close" => connection_close = true,
                "Location" => assert!(value.starts_with('/'), "Location {value:?}"),
                _ => {}
            }
        }
        let length = length.expect("no Content-Length");
        let body = if rec.method == "HEAD" || status == 304 {
            0
        } else {
            length
        };
        assert_eq!(rec.body_bytes, body);
        assert!(bytes.len() >= end + body, "response {i} cut short");
        bytes = &bytes[end + body..];
        assert_eq!(connection_close, !rec.keep_alive);
        let last = i + 1 == s.log.len();
        assert!(rec.keep_alive || last, "a response after Connection: close");
        assert!(rec.method.bytes().all(|b| (0x21..0x7f).contains(&b)));
        assert!(rec.path.bytes().all(|b| (0x21..0x7f).contains(&b)));
        assert!(rec.path.len() <= 4 * 200 + 3);
    }
    assert!(
        bytes.is_empty(),
        "{} bytes after the last response",
        bytes.len()
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&[cfg, a, b, seed @ ..], stream)) = data.split_first_chunk::<11>() else {
        return;
    };
    let limits = Limits {
        max_header_bytes: [32, 100, 1024, 8192][usize::from(cfg & 3)],
        max_body_bytes: [0, 5, 300, 65536][usize::from(cfg >> 2 & 3)],
        max_requests_per_conn: [1, 2, 7, 10_000][usize::from(cfg >> 4 & 3)],
        max_pending_output: [1, 100, 4000, 65536][usize::from(cfg >> 6)],
    };
    let whole = serve(limits, stream, || usize::MAX, || usize::MAX);
    check_responses(&whole);
    let mut rng = Rng(u64::from_le_bytes(seed) | 1);
    let (pmax, wmax) = (1 + usize::from(a) * 4, 1 + usize::from(b) * 16);
    let other = Limits {
        max_pending_output: [1, 200, 3001, 1 << 20][usize::from(a & 3)],
        ..limits
    };
    let mut rng2 = Rng(rng.0.rotate_left(32) | 1);
    let split = serve(
        other,
        stream,
        || 1 + rng.below(pmax),
        || 1 + rng2.below(wmax),
    );
    assert!(
        split == whole,
        "split input or output changed what was served"
    );
});
