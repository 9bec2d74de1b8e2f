//! Host tests: one per behaviour, then split/pipelining properties and garbage input.

use crate::*;

static BIG: [u8; 100_000] = [b'x'; 100_000];

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
        etag: "\"186a0-5\"",
    },
];

const SITE: Site = Site::new(FILES);

/// Writes everything `out` holds into `sent`; returns the bytes written.
fn drain(out: &mut Output, sent: &mut Vec<u8>) -> usize {
    out.write_with(|b| {
        sent.extend_from_slice(b);
        Ok::<_, ()>(b.len())
    })
    .unwrap()
}

/// A connection driven like the socket loop drives it.
struct Client {
    conn: Conn,
    out: Output,
    sent: Vec<u8>,
    close: bool,
}

impl Client {
    fn new(limits: Limits) -> Client {
        Client {
            conn: Conn::new(limits),
            out: Output::new(),
            sent: Vec::new(),
            close: false,
        }
    }

    /// Feeds `input` (as one received segment), writing output after each call, until the
    /// input is taken and no held-back request remains.
    fn feed(&mut self, input: &[u8]) {
        let mut rest = input;
        loop {
            let st = self.conn.feed(&SITE, rest, &mut self.out);
            assert!(st.consumed <= rest.len());
            assert!(self.conn.buffered() <= self.conn.limits().max_header_bytes + 1);
            rest = &rest[st.consumed..];
            self.close = st.close;
            let wrote = drain(&mut self.out, &mut self.sent);
            if rest.is_empty() && wrote == 0 {
                return;
            }
            assert!(st.consumed > 0 || wrote > 0, "no progress");
        }
    }

    fn eof(&mut self) {
        let st = self.conn.eof(&SITE, &mut self.out);
        self.close = st.close;
        while drain(&mut self.out, &mut self.sent) > 0 {
            self.close = self.conn.feed(&SITE, &[], &mut self.out).close;
        }
    }

    fn log(&mut self) -> Vec<LogRecord> {
        self.out.drain_log().collect()
    }
}

/// One parsed response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> usize {
        self.header("content-length").unwrap().parse().unwrap()
    }
}

/// Splits a response stream; `no_body[i]` marks the responses to HEAD requests.
fn responses(mut bytes: &[u8], no_body: &[bool]) -> Vec<Resp> {
    let mut v = Vec::new();
    while !bytes.is_empty() {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = std::str::from_utf8(&bytes[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_string(), v.to_string())
            })
            .collect();
        let mut r = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        let len = if no_body.get(v.len()).copied().unwrap_or(false) || status == 304 {
            0
        } else {
            r.content_length()
        };
        r.body = bytes[end..end + len].to_vec();
        bytes = &bytes[end + len..];
        v.push(r);
    }
    v
}

/// Serves `input` on a fresh connection with default limits.
fn run(input: &[u8]) -> (Vec<Resp>, bool, Vec<LogRecord>) {
    run_with(Limits::default(), input, &[])
}

fn run_with(limits: Limits, input: &[u8], no_body: &[bool]) -> (Vec<Resp>, bool, Vec<LogRecord>) {
    let mut c = Client::new(limits);
    c.feed(input);
    let log = c.log();
    (responses(&c.sent, no_body), c.close, log)
}

/// One request, one response; returns it and whether the connection closes.
fn one(input: &str) -> (Resp, bool) {
    let (mut r, close, log) = run(input.as_bytes());
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status, r[0].status);
    (r.remove(0), close)
}

fn status_of(input: &str) -> (u16, bool) {
    let (r, close) = one(input);
    (r.status, close)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
}

// ---- Serving files ----

#[test]
fn root_serves_index() {
    let (r, close) = one(&get("/"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<h1>home</h1>\n");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(!close);
}

#[test]
fn file_has_length_type_etag_and_no_connection_header() {
    let (r, _) = one(&get("/a.txt"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello\n");
    assert_eq!(r.content_length(), 6);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("etag"), Some("\"6-2\""));
    assert_eq!(r.header("server"), Some("xenrt-httpd"));
    assert_eq!(r.header("connection"), None);
    assert_eq!(r.header("date"), None);
}

#[test]
fn directory_with_slash_serves_its_index() {
    let (r, _) = one(&get("/docs/"));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"docs\n"[..]));
    let (r, _) = one(&get("/docs/index.html"));
    assert_eq!(r.status, 200);
}

#[test]
fn directory_without_slash_redirects() {
    let (r, close) = one(&get("/docs?x=1"));
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/docs/"));
    assert!(!close);
}

#[test]
fn head_sends_get_headers_without_body() {
    let mut c = Client::new(Limits::default());
    c.feed(b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = responses(&c.sent, &[true, false]);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].status, 200);
    assert_eq!(r[0].content_length(), 100_000);
    assert_eq!(r[0].header("etag"), Some("\"186a0-5\""));
    assert!(r[0].body.is_empty());
    assert_eq!(r[1].body, b"hello\n");
    let log = c.log();
    assert_eq!(log[0].body_bytes, 0);
    assert_eq!(log[1].body_bytes, 6);
}

#[test]
fn head_of_missing_file_is_404_without_body() {
    let (r, _, _) = run_with(
        Limits::default(),
        b"HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n",
        &[true],
    );
    assert_eq!(r[0].status, 404);
    assert!(r[0].body.is_empty());
    assert!(r[0].content_length() > 0);
}

#[test]
fn missing_file_is_404_and_keeps_the_connection() {
    let (r, close, _) =
        run(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r[0].status, 404);
    assert_eq!(
        r[0].header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(r[1].status, 200);
    assert!(!close);
}

#[test]
fn big_body_is_not_copied() {
    let mut conn = Conn::new(Limits::default());
    let mut out = Output::new();
    let _ = conn.feed(&SITE, get("/big.bin").as_bytes(), &mut out);
    let head_len = out.front().unwrap().len();
    out.consume(head_len);
    let body = out.front().unwrap();
    assert_eq!(body.as_ptr(), BIG.as_ptr());
    assert_eq!(body.len(), BIG.len());
    assert_eq!(out.len_bytes(), BIG.len());
}

#[test]
fn small_body_is_sent_with_its_headers() {
    let mut conn = Conn::new(Limits::default());
    let mut out = Output::new();
    let _ = conn.feed(&SITE, get("/a.txt").as_bytes(), &mut out);
    assert!(out.front().unwrap().ends_with(b"\r\n\r\nhello\n"));
    assert_eq!(out.front().unwrap().len(), out.len_bytes());
}

// ---- Methods ----

#[test]
fn other_methods_get_405_with_allow_and_body_is_skipped() {
    let (r, close, log) = run(
        b"POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(r[0].status, 405);
    assert_eq!(r[0].header("allow"), Some("GET, HEAD"));
    assert_eq!(r[1].status, 200);
    assert!(!close);
    assert_eq!(log[0].method, "POST");
    for m in ["PUT", "DELETE", "OPTIONS", "get", "BREW"] {
        let (s, _) = status_of(&format!("{m} / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(s, 405, "{m}");
    }
}

#[test]
fn expect_continue_with_a_body_is_answered_and_closed() {
    let (r, close) =
        one("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n");
    assert_eq!((r.status, close), (405, true));
    assert_eq!(r.header("connection"), Some("close"));
    let (r, close) = one("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!((r.status, close), (200, false));
}

#[test]
fn refused_head_request_gets_no_body() {
    let (r, close, _) = run_with(
        Limits::default(),
        b"HEAD / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        &[true],
    );
    assert_eq!((r[0].status, close), (400, true));
    assert!(r[0].body.is_empty() && r[0].content_length() > 0);
}

// ---- Connection management ----

#[test]
fn http11_keeps_alive_by_default() {
    let mut c = Client::new(Limits::default());
    for _ in 0..5 {
        c.feed(get("/a.txt").as_bytes());
        assert!(!c.close);
    }
    assert_eq!(responses(&c.sent, &[]).len(), 5);
    assert_eq!(c.conn.requests(), 5);
}

#[test]
fn connection_close_is_honoured_and_later_input_ignored() {
    let mut c = Client::new(Limits::default());
    c.feed(b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = responses(&c.sent, &[]);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].header("connection"), Some("close"));
    assert!(c.close);
    let before = c.sent.len();
    let st = c.conn.feed(&SITE, get("/").as_bytes(), &mut c.out);
    assert_eq!(st.consumed, get("/").len());
    assert!(st.close);
    assert!(c.out.is_empty());
    assert_eq!(c.sent.len(), before);
}

#[test]
fn connection_tokens_are_case_insensitive_lists() {
    let (r, close) = one("GET / HTTP/1.1\r\nhost: x\r\nCONNECTION: Upgrade, Close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(close);
}

#[test]
fn http10_closes_by_default() {
    let (r, close) = one("GET /a.txt HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(close);
}

#[test]
fn http10_keep_alive_on_request() {
    let (r, close, _) =
        run(b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].header("connection"), Some("keep-alive"));
    assert_eq!(r[1].header("connection"), Some("close"));
    assert!(close);
}

#[test]
fn max_requests_per_connection() {
    let limits = Limits {
        max_requests_per_conn: 2,
        ..Limits::default()
    };
    let input = get("/a.txt").repeat(3);
    let (r, close, log) = run_with(limits, input.as_bytes(), &[]);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].header("connection"), None);
    assert_eq!(r[1].header("connection"), Some("close"));
    assert!(close);
    assert!(log[0].keep_alive && !log[1].keep_alive);
}

#[test]
fn eof_answers_buffered_requests_then_closes() {
    let limits = Limits {
        max_pending_output: 1,
        ..Limits::default()
    };
    let mut conn = Conn::new(limits);
    let mut out = Output::new();
    let input = get("/a.txt").repeat(3);
    let st = conn.feed(&SITE, input.as_bytes(), &mut out);
    assert_eq!(st.consumed, input.len());
    // Backpressure holds two requests back; the peer's FIN does not drop them.
    let st = conn.eof(&SITE, &mut out);
    assert!(!st.close);
    let mut sent = Vec::new();
    let mut close = false;
    while drain(&mut out, &mut sent) > 0 {
        close = conn.feed(&SITE, &[], &mut out).close;
    }
    assert!(close);
    assert_eq!(responses(&sent, &[]).len(), 3);
}

#[test]
fn eof_drops_an_incomplete_request() {
    let mut c = Client::new(Limits::default());
    c.feed(b"GET /a.txt HTTP/1.1\r\nHo");
    assert!(c.sent.is_empty() && !c.close);
    c.eof();
    assert!(c.close);
    assert!(c.sent.is_empty());
}

#[test]
fn eof_on_idle_connection_closes() {
    let mut c = Client::new(Limits::default());
    c.feed(get("/").as_bytes());
    c.eof();
    assert!(c.close);
    assert_eq!(responses(&c.sent, &[]).len(), 1);
}

#[test]
fn eof_in_the_middle_of_a_body_closes() {
    let mut c = Client::new(Limits::default());
    c.feed(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    assert!(!c.close);
    c.eof();
    assert!(c.close);
}

// ---- Pipelining, splits, backpressure ----

#[test]
fn pipelined_requests_in_one_read_are_answered_in_order() {
    let input = [get("/a.txt"), get("/nope"), get("/"), get("/docs/")].concat();
    let (r, close, log) = run(input.as_bytes());
    let statuses: Vec<u16> = r.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 404, 200, 200]);
    assert_eq!(r[3].body, b"docs\n");
    let paths: Vec<&str> = log.iter().map(|l| l.path.as_str()).collect();
    assert_eq!(paths, ["/a.txt", "/nope", "/", "/docs/"]);
    assert!(!close);
}

#[test]
fn request_split_byte_by_byte() {
    let input = [
        get("/a.txt"),
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".into(),
        get("/big.bin"),
    ]
    .concat();
    let mut whole = Client::new(Limits::default());
    whole.feed(input.as_bytes());
    let mut bytewise = Client::new(Limits::default());
    for b in input.as_bytes() {
        bytewise.feed(std::slice::from_ref(b));
    }
    assert_eq!(whole.sent, bytewise.sent);
    assert_eq!(whole.log(), bytewise.log());
    assert_eq!(responses(&whole.sent, &[]).len(), 3);
}

#[test]
fn leading_empty_lines_and_bare_lf_are_accepted() {
    let (r, _, _) =
        run(b"\r\n\n\r\nGET /a.txt HTTP/1.1\nHost: x\n\nGET / HTTP/1.1\r\nHost: x\n\r\n");
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].body, b"hello\n");
    assert_eq!(r[1].status, 200);
}

#[test]
fn backpressure_holds_requests_and_bounds_input() {
    let limits = Limits {
        max_header_bytes: 1024,
        max_pending_output: 150_000,
        ..Limits::default()
    };
    let mut conn = Conn::new(limits);
    let mut out = Output::new();
    let input = get("/big.bin").repeat(200);
    // Nothing written: the conn answers until the output holds the limit, then buffers at most
    // max_header_bytes + 1 input bytes and takes no more.
    let st = conn.feed(&SITE, input.as_bytes(), &mut out);
    assert!(!st.close);
    assert_eq!(out.len_bytes() / 100_000, 2);
    assert!(conn.buffered() <= 1025);
    assert!(st.consumed < input.len());
    let again = conn.feed(&SITE, &input.as_bytes()[st.consumed..], &mut out);
    assert_eq!(again.consumed, 0);
    // Writing output lets it resume, in order, until everything is answered.
    let mut c = Client {
        conn,
        out,
        sent: Vec::new(),
        close: false,
    };
    c.feed(&input.as_bytes()[st.consumed..]);
    let r = responses(&c.sent, &[]);
    assert_eq!(r.len(), 200);
    assert!(r.iter().all(|r| r.status == 200 && r.body.len() == 100_000));
}

#[test]
fn body_is_discarded_across_reads() {
    let mut c = Client::new(Limits::default());
    c.feed(b"GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n");
    c.feed(&[b'G'; 19_999]);
    assert_eq!(responses(&c.sent, &[]).len(), 1);
    c.feed(b"GGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = responses(&c.sent, &[]);
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].body, b"<h1>home</h1>\n");
}

/// xorshift64*: deterministic pseudo-random numbers for the property tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Feeds `input` in random pieces; returns what was sent, the log and the final close flag.
fn random_splits(rng: &mut Rng, limits: Limits, input: &[u8]) -> (Vec<u8>, Vec<LogRecord>, bool) {
    let mut c = Client::new(limits);
    let mut rest = input;
    let max = [1, 7, 64, 3000][rng.below(4)];
    while !rest.is_empty() {
        let n = (1 + rng.below(max)).min(rest.len());
        c.feed(&rest[..n]);
        rest = &rest[n..];
    }
    c.eof();
    (c.sent.clone(), c.log(), c.close)
}

#[test]
fn random_splits_of_a_pipelined_stream_give_identical_output() {
    let input = [
        get("/a.txt"),
        "\r\n".into(),
        "HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"6-2\"\r\n\r\n".into(),
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\nabcdefg".into(),
        get("/big.bin"),
        get("/docs"),
        get("/nope"),
        "GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".into(),
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nxy".into(),
        "GET /sp%20ace.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
        get("/after-close"),
    ]
    .concat();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let reference = random_splits(&mut Rng(1), Limits::default(), input.as_bytes());
    let (sent, log, close) = &reference;
    assert!(close);
    assert_eq!(log.len(), 10);
    assert_eq!(
        responses(sent, &[false, true]).len(),
        10,
        "{}",
        String::from_utf8_lossy(sent)
    );
    for _ in 0..300 {
        let limits = Limits {
            max_pending_output: [1, 1000, 200_000][rng.below(3)],
            ..Limits::default()
        };
        assert!(random_splits(&mut rng, limits, input.as_bytes()) == reference);
    }
}

// ---- Conditional requests ----

#[test]
fn if_none_match_exact_gives_304() {
    let (r, close) = one("GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"6-2\"\r\n\r\n");
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some("\"6-2\""));
    assert_eq!(r.content_length(), 6);
    assert!(r.header("content-type").is_some());
    assert!(!close);
}

#[test]
fn if_none_match_compares_weakly() {
    let (s, _) = status_of("GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: W/\"6-2\"\r\n\r\n");
    assert_eq!(s, 304);
}

#[test]
fn if_none_match_lists_and_several_fields() {
    let (s, _) = status_of(
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"x\",W/\"y\" , \"6-2\"\r\n\r\n",
    );
    assert_eq!(s, 304);
    let (s, _) = status_of(
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"x\"\r\nIf-None-Match: \"6-2\"\r\n\r\n",
    );
    assert_eq!(s, 304);
    let (s, _) =
        status_of("GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: bogus, \"6-2\"\r\n\r\n");
    assert_eq!(s, 304);
}

#[test]
fn if_none_match_star() {
    let (s, _) = status_of("GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: *\r\n\r\n");
    assert_eq!(s, 304);
    let (s, _) = status_of("GET /nope HTTP/1.1\r\nHost: x\r\nIf-None-Match: *\r\n\r\n");
    assert_eq!(s, 404);
}

#[test]
fn if_none_match_mismatch_gives_200() {
    for v in ["\"6-3\"", "\"6-2", "6-2", "\"\"", "W/", ""] {
        let (r, _) = one(&format!(
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: {v}\r\n\r\n"
        ));
        assert_eq!(r.status, 200, "{v}");
        assert_eq!(r.body, b"hello\n");
    }
}

#[test]
fn if_none_match_on_head_gives_304() {
    let (r, _, _) = run_with(
        Limits::default(),
        b"HEAD / HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"e-1\"\r\n\r\n",
        &[true],
    );
    assert_eq!(r[0].status, 304);
}

// ---- Paths ----

#[test]
fn percent_decoding() {
    assert_eq!(status_of(&get("/sp%20ace.txt")).0, 200);
    assert_eq!(status_of(&get("/%61.txt")).0, 200);
    assert_eq!(status_of(&get("/a%2Etxt")).0, 200);
    // An encoded slash is part of a name, which no file has.
    assert_eq!(status_of(&get("/docs%2Findex.html")).0, 404);
    assert_eq!(status_of(&get("/a.txt%00")).0, 404);
    assert_eq!(status_of(&get("/%ff")).0, 404);
}

#[test]
fn bad_percent_encoding_is_400() {
    for p in ["/%", "/%4", "/%zz", "/a%g1.txt"] {
        assert_eq!(status_of(&get(p)), (400, true), "{p}");
    }
}

#[test]
fn dot_segments_never_escape_the_root() {
    for p in [
        "/../a.txt",
        "/../../../a.txt",
        "/docs/../a.txt",
        "/%2e%2e/a.txt",
        "/./a.txt",
        "//a.txt",
        "/docs/..%2F..%2Fa.txt/../../a.txt",
    ] {
        let (r, _) = one(&get(p));
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello\n"[..]), "{p}");
    }
    let (r, _) = one(&get("/docs/.."));
    assert_eq!(r.body, b"<h1>home</h1>\n");
    let (r, _) = one(&get("/docs/."));
    assert_eq!(r.body, b"docs\n");
}

#[test]
fn query_and_fragment_are_ignored() {
    assert_eq!(status_of(&get("/a.txt?x=1&y=../../z")).0, 200);
    assert_eq!(status_of(&get("/?q")).0, 200);
    assert_eq!(status_of(&get("/a.txt#frag")).0, 200);
}

#[test]
fn absolute_form_targets() {
    let (r, _) = one(&get("http://example.org/a.txt"));
    assert_eq!(r.body, b"hello\n");
    let (r, _) = one(&get("HTTPS://example.org"));
    assert_eq!(r.body, b"<h1>home</h1>\n");
    let (r, _) = one(&get("http://example.org?q"));
    assert_eq!(r.status, 200);
}

#[test]
fn other_target_forms_are_400() {
    for t in ["*", "a.txt", "example.org:80", "ftp://x/a.txt"] {
        assert_eq!(status_of(&get(t)), (400, true), "{t}");
    }
}

// ---- Errors ----

#[test]
fn malformed_request_lines_are_400_and_close() {
    for req in [
        "GET /\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        " GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.x\r\nHost: x\r\n\r\n",
        "GET / http/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/11\r\nHost: x\r\n\r\n",
        "GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "\x16\x03\x01\x02\x00\r\n\r\n",
    ] {
        assert_eq!(status_of(req), (400, true), "{req:?}");
    }
}

#[test]
fn malformed_headers_are_400() {
    for req in [
        "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nName : v\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nNa(me: v\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
    ] {
        assert_eq!(status_of(req), (400, true), "{req:?}");
    }
    // obs-text and tabs in values are fine.
    assert_eq!(
        status_of("GET / HTTP/1.1\r\nHost: x\r\nX:\t\u{e9}\t\r\n\r\n").0,
        200
    );
}

#[test]
fn obs_fold_is_400() {
    let (s, close) = status_of("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n  b\r\n\r\n");
    assert_eq!((s, close), (400, true));
    let (s, _) = status_of("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n\tb\r\n\r\n");
    assert_eq!(s, 400);
}

#[test]
fn bare_cr_is_400() {
    for req in [
        "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
        "GET / HTTP/1.1\rHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\n\r\r\n\r\n",
        "\rGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_eq!(status_of(req), (400, true), "{req:?}");
    }
}

#[test]
fn host_is_required_once_on_http11() {
    assert_eq!(status_of("GET / HTTP/1.1\r\n\r\n"), (400, true));
    assert_eq!(
        status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        (400, true)
    );
    assert_eq!(status_of("GET / HTTP/1.1\r\nHost:\r\n\r\n").0, 200);
    assert_eq!(status_of("GET / HTTP/1.0\r\n\r\n").0, 200);
    assert_eq!(
        status_of("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n").0,
        400
    );
}

#[test]
fn bad_content_length_is_400() {
    for v in ["abc", "-1", "+1", "1 2", "1, 2", "", "0x10", "1.0"] {
        let req = format!("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: {v}\r\n\r\n");
        assert_eq!(status_of(&req), (400, true), "{v:?}");
    }
    let req = "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    assert_eq!(status_of(req), (400, true));
    // Identical repeated values are one value.
    let (r, close, _) =
        run(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\nContent-length: 2\r\n\r\nxy");
    assert_eq!((r.len(), r[0].status, close), (1, 200, false));
}

#[test]
fn body_within_limit_is_read_and_discarded() {
    let body = "z".repeat(1000);
    let input = format!(
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{body}{}",
        get("/")
    );
    let (r, close, _) = run(input.as_bytes());
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].body, b"<h1>home</h1>\n");
    assert!(!close);
}

#[test]
fn body_over_limit_is_413_and_closes() {
    let limits = Limits {
        max_body_bytes: 100,
        ..Limits::default()
    };
    let ok = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}",
        "b".repeat(100)
    );
    let (r, close, _) = run_with(limits, ok.as_bytes(), &[]);
    assert_eq!((r[0].status, close), (200, false));
    let (r, close, _) = run_with(
        limits,
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n",
        &[],
    );
    assert_eq!((r[0].status, close), (413, true));
    let (s, close) =
        status_of("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n");
    assert_eq!((s, close), (413, true));
}

#[test]
fn transfer_encoding_is_501_and_with_content_length_400() {
    let (s, close) = status_of("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!((s, close), (501, true));
    let (s, close) = status_of(
        "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    );
    assert_eq!((s, close), (400, true));
}

#[test]
fn header_section_over_limit_is_431() {
    let limits = Limits {
        max_header_bytes: 100,
        ..Limits::default()
    };
    let head = |len: usize| {
        let base = "GET / HTTP/1.1\r\nHost: x\r\nX: \r\n\r\n".len();
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "v".repeat(len - base)
        )
    };
    let (r, close, _) = run_with(limits, head(100).as_bytes(), &[]);
    assert_eq!((r[0].status, close), (200, false));
    let (r, close, log) = run_with(limits, head(101).as_bytes(), &[]);
    assert_eq!((r[0].status, close), (431, true));
    assert_eq!((log[0].method.as_str(), log[0].path.as_str()), ("GET", "/"));
    // Also when the head never ends: answered as soon as the limit is passed.
    let (r, close, _) = run_with(limits, head(1000).as_bytes(), &[]);
    assert_eq!((r.len(), r[0].status, close), (1, 431, true));
    // The default is 8 KiB.
    let (s, _) = status_of(&format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "v".repeat(9000)
    ));
    assert_eq!(s, 431);
}

#[test]
fn request_line_over_limit_is_414() {
    let (s, close) = status_of(&get(&format!("/{}", "a".repeat(9000))));
    assert_eq!((s, close), (414, true));
}

#[test]
fn unsupported_versions_are_505() {
    for v in ["HTTP/2.0", "HTTP/0.9", "HTTP/1.2", "HTTP/3.0"] {
        let req = format!("GET / {v}\r\nHost: x\r\n\r\n");
        assert_eq!(status_of(&req), (505, true), "{v}");
    }
}

#[test]
fn every_error_response_has_length_and_type() {
    for req in [
        "BAD\r\n\r\n".to_string(),
        get("/nope"),
        "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n".into(),
        get(&"/a".repeat(5000)),
        format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(9000)),
        "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".into(),
        "GET / HTTP/9.9\r\n\r\n".into(),
    ] {
        let (r, _) = one(&req);
        assert!(r.status >= 400);
        assert_eq!(r.body.len(), r.content_length());
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert!(String::from_utf8_lossy(&r.body).starts_with(&r.status.to_string()));
    }
}

#[test]
fn after_an_error_the_rest_is_ignored() {
    let (r, close, log) = run(format!("BAD\r\n\r\n{}", get("/")).as_bytes());
    assert_eq!(r.len(), 1);
    assert_eq!(log.len(), 1);
    assert!(close);
}

// ---- Access log, output queue ----

#[test]
fn access_log_records() {
    let input = [
        get("/a.txt"),
        "HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        get("/no\x01pe"),
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    ]
    .concat();
    let (_, _, log) = run_with(Limits::default(), input.as_bytes(), &[false, true]);
    let lines: Vec<String> = log.iter().map(|l| l.to_string()).collect();
    assert_eq!(
        lines,
        [
            "GET /a.txt 200 6 keep-alive",
            "HEAD /big.bin 200 0 keep-alive",
            "GET /no\\x01pe 400 16 close",
        ]
    );
}

#[test]
fn access_log_can_be_turned_off() {
    let mut conn = Conn::new(Limits::default());
    let mut out = Output::new();
    out.set_logging(false);
    let _ = conn.feed(&SITE, get("/").as_bytes(), &mut out);
    assert!(!out.is_empty());
    assert_eq!(out.drain_log().count(), 0);
}

#[test]
fn output_consume_spans_chunks_and_write_with_stops_when_full() {
    let mut conn = Conn::new(Limits {
        max_pending_output: 200_000,
        ..Limits::default()
    });
    let mut out = Output::new();
    let _ = conn.feed(
        &SITE,
        [get("/big.bin"), get("/a.txt")].concat().as_bytes(),
        &mut out,
    );
    let total = out.len_bytes();
    let mut sent = Vec::new();
    // A socket taking at most 1000 bytes per call.
    let mut calls = 0;
    while !out.is_empty() {
        let mut room = 1000;
        let n = out
            .write_with(|b| {
                let n = b.len().min(room);
                room -= n;
                sent.extend_from_slice(&b[..n]);
                Ok::<_, ()>(n)
            })
            .unwrap();
        assert!(n <= 1000);
        calls += 1;
    }
    assert_eq!(sent.len(), total);
    assert!(calls >= total / 1000);
    assert_eq!(responses(&sent, &[]).len(), 2);
    // consume() across chunk boundaries and past the end.
    let _ = conn.feed(
        &SITE,
        [get("/big.bin"), get("/a.txt")].concat().as_bytes(),
        &mut out,
    );
    let first = out.front().unwrap().len();
    out.consume(first + 100_000 + 3);
    assert_eq!(out.len_bytes(), total - first - 100_003);
    assert!(
        responses(
            &[&sent[..first + 100_003], out.front().unwrap()].concat(),
            &[]
        )
        .len()
            == 2
    );
    out.consume(usize::MAX);
    assert!(out.is_empty() && out.front().is_none());
    // A failing socket stops the loop and reports the error.
    let _ = conn.feed(&SITE, get("/").as_bytes(), &mut out);
    assert_eq!(out.write_with(|_| Err("reset")), Err("reset"));
}

#[test]
fn responses_queued_behind_a_partly_sent_chunk_stay_in_order() {
    let mut conn = Conn::new(Limits::default());
    let mut out = Output::new();
    let _ = conn.feed(&SITE, get("/a.txt").as_bytes(), &mut out);
    let mut sent = out.front().unwrap()[..5].to_vec();
    out.consume(5);
    let _ = conn.feed(&SITE, get("/").as_bytes(), &mut out);
    drain(&mut out, &mut sent);
    let r = responses(&sent, &[]);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].body, b"hello\n");
    assert_eq!(r[1].body, b"<h1>home</h1>\n");
}

// ---- Garbage ----

#[test]
fn garbage_never_panics() {
    const PIECES: &[&str] = &[
        "GET ",
        "HEAD ",
        "POST ",
        "/",
        "a.txt",
        "docs",
        " HTTP/1.1",
        " HTTP/1.0",
        " HTTP/2.0",
        "\r\n",
        "\n",
        "\r",
        "Host: x",
        "Connection: close",
        "Connection: keep-alive",
        ":",
        " ",
        "\t",
        "Content-Length: ",
        "0",
        "5",
        "99999999999999999999999",
        "Transfer-Encoding: chunked",
        "If-None-Match: ",
        "\"",
        "W/",
        "*",
        ",",
        "%",
        "2e",
        "..",
        "?",
        "#",
        "http://",
        "\0",
        "\u{e9}",
    ];
    let mut rng = Rng(42);
    for i in 0..3000 {
        let mut input = Vec::new();
        let len = rng.below(600);
        if i % 3 == 0 {
            input.extend((0..len).map(|_| rng.next() as u8));
        } else {
            while input.len() < len {
                input.extend_from_slice(PIECES[rng.below(PIECES.len())].as_bytes());
            }
        }
        let limits = if i % 2 == 0 {
            Limits::default()
        } else {
            Limits {
                max_header_bytes: 1 + rng.below(100),
                max_body_bytes: rng.below(20) as u64,
                max_requests_per_conn: 1 + rng.below(5) as u32,
                max_pending_output: rng.below(300),
            }
        };
        let (sent, log, close) = random_splits(&mut rng, limits, &input);
        assert!(close, "eof always ends the connection");
        if !sent.is_empty() {
            assert!(sent.starts_with(b"HTTP/1.1 "));
        }
        assert!(log.len() <= limits.max_requests_per_conn as usize);
    }
}

#[test]
fn garbage_with_heads_never_panics() {
    let mut rng = Rng(7);
    for _ in 0..2000 {
        let mut input = b"GET /".to_vec();
        input.extend((0..rng.below(100)).map(|_| rng.next() as u8));
        input.extend_from_slice(b"\r\n\r\n");
        let mut c = Client::new(Limits::default());
        c.feed(&input);
        c.eof();
        assert!(c.close);
    }
}

// ---- The baked site ----

#[test]
fn baked_site_has_index_and_build_time_etags() {
    let site = Site::baked();
    let index = site.get("/index.html").expect("index.html baked");
    assert_eq!(index.content_type, "text/html; charset=utf-8");
    assert!(site.files().len() >= 3);
    assert_eq!(
        site.total_bytes(),
        site.files().iter().map(|f| f.body.len()).sum::<usize>()
    );
    for f in site.files() {
        assert!(f.path.starts_with('/'));
        let etag = format!("\"{:x}-{:016x}\"", f.body.len(), fnv1a64(f.body));
        assert_eq!(f.etag, etag, "{}", f.path);
    }
    // Sorted, no duplicates.
    assert!(site.files().windows(2).all(|w| w[0].path < w[1].path));
}

#[test]
fn fnv1a64_reference_values() {
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

mod slow_clients {
    use super::SITE;
    use crate::guard::{Admit, Expiry, Registry, Standing, Timeouts, Watch};
    use crate::*;

    const S: u64 = 1_000_000_000;
    const T: Timeouts = Timeouts {
        header_ns: 20 * S,
        idle_ns: 30 * S,
    };

    /// Feeds `bytes` at `now`, "writes" all output, and updates the watch.
    fn step(conn: &mut Conn, out: &mut Output, w: &mut Watch, bytes: &[u8], now: u64) -> Vec<u8> {
        let st = conn.feed(&SITE, bytes, out);
        assert_eq!(st.consumed, bytes.len());
        w.update(conn, !out.is_empty(), now);
        let mut sent = Vec::new();
        super::drain(out, &mut sent);
        w.update(conn, !out.is_empty(), now);
        sent
    }

    #[test]
    fn a_head_dribbled_a_byte_every_4_s_meets_its_deadline_20_s_after_accept() {
        let (mut conn, mut out) = (Conn::new(Limits::default()), Output::new());
        let mut w = Watch::new(T, 0);
        assert_eq!(w.wait(0), (20 * S, Expiry::Header));
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for (i, b) in req.iter().take(5).enumerate() {
            let now = i as u64 * 4 * S;
            assert!(step(&mut conn, &mut out, &mut w, &[*b], now).is_empty());
            // Regular bytes do not push the deadline back.
            assert_eq!(w.wait(now), (20 * S - now, Expiry::Header));
            assert_eq!(
                w.standing(),
                Standing::Head {
                    since: 0,
                    bytes: i + 1
                }
            );
        }
        assert_eq!(w.wait(20 * S), (0, Expiry::Header));
        assert_eq!(
            w.wait(25 * S),
            (0, Expiry::Header),
            "past it: still expired"
        );
    }

    #[test]
    fn a_silent_new_connection_has_the_header_deadline_too() {
        let w = Watch::new(
            Timeouts {
                header_ns: 60 * S,
                idle_ns: 30 * S,
            },
            5 * S,
        );
        // The idle timeout is the nearer one here.
        assert_eq!(w.wait(5 * S), (30 * S, Expiry::Idle));
        assert_eq!(w.wait(40 * S), (25 * S, Expiry::Header));
    }

    #[test]
    fn between_keep_alive_requests_only_the_idle_timeout_runs_and_the_next_head_restarts_the_clock()
    {
        let (mut conn, mut out) = (Conn::new(Limits::default()), Output::new());
        let mut w = Watch::new(T, 0);
        let sent = step(
            &mut conn,
            &mut out,
            &mut w,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            S,
        );
        assert!(sent.starts_with(b"HTTP/1.1 200 OK"));
        assert_eq!(w.standing(), Standing::Idle { since: S });
        assert_eq!(w.wait(100 * S), (30 * S, Expiry::Idle));
        // Idle since the first time it was seen idle.
        step(&mut conn, &mut out, &mut w, b"", 50 * S);
        assert_eq!(w.standing(), Standing::Idle { since: S });
        step(&mut conn, &mut out, &mut w, b"GET / HT", 60 * S);
        assert_eq!(w.wait(60 * S), (20 * S, Expiry::Header));
        assert_eq!(
            w.standing(),
            Standing::Head {
                since: 60 * S,
                bytes: 8
            }
        );
        let sent = step(
            &mut conn,
            &mut out,
            &mut w,
            b"TP/1.1\r\nHost: x\r\n\r\n",
            79 * S,
        );
        assert!(sent.starts_with(b"HTTP/1.1 200 OK"));
        assert_eq!(w.wait(79 * S), (30 * S, Expiry::Idle));
    }

    #[test]
    fn a_keep_alive_connection_is_idle_from_its_last_response_not_its_first() {
        // The lab found this: wrk's connections looked idle since their first response, so
        // they were shed first at the cap.
        let (mut conn, mut out) = (Conn::new(Limits::default()), Output::new());
        let mut w = Watch::new(T, 0);
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        step(&mut conn, &mut out, &mut w, req, S);
        assert_eq!(w.standing(), Standing::Idle { since: S });
        // The next request arrives whole and is answered (queued, then written, at 20 s).
        let st = conn.feed(&SITE, req, &mut out);
        assert_eq!(st.consumed, req.len());
        w.update(&conn, true, 20 * S);
        assert_eq!(w.standing(), Standing::Busy);
        super::drain(&mut out, &mut Vec::new());
        w.update(&conn, false, 20 * S);
        assert_eq!(w.standing(), Standing::Idle { since: 20 * S });
        // A request answered without the output ever being seen pending still restarts it.
        let _ = conn.feed(&SITE, req, &mut out);
        super::drain(&mut out, &mut Vec::new());
        w.update(&conn, false, 30 * S);
        assert_eq!(w.standing(), Standing::Idle { since: 30 * S });
    }

    #[test]
    fn a_pipelined_head_gets_its_own_clock_and_pending_output_is_busy() {
        let (mut conn, mut out) = (Conn::new(Limits::default()), Output::new());
        let mut w = Watch::new(T, 0);
        let st = conn.feed(
            &SITE,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /a.txt HT",
            &mut out,
        );
        assert_eq!(st.consumed, 40);
        w.update(&conn, !out.is_empty(), 15 * S);
        assert_eq!(w.standing(), Standing::Busy, "a response is queued");
        assert_eq!(
            w.wait(15 * S),
            (20 * S, Expiry::Header),
            "clock of request 2"
        );
        let mut sent = Vec::new();
        super::drain(&mut out, &mut sent);
        w.update(&conn, false, 16 * S);
        assert_eq!(
            w.standing(),
            Standing::Head {
                since: 15 * S,
                bytes: 13
            }
        );
    }

    #[test]
    fn a_body_being_read_is_busy_and_has_no_header_deadline() {
        let (mut conn, mut out) = (Conn::new(Limits::default()), Output::new());
        let mut w = Watch::new(T, 0);
        step(
            &mut conn,
            &mut out,
            &mut w,
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
            19 * S,
        );
        assert_eq!(w.standing(), Standing::Busy);
        assert_eq!(w.wait(40 * S), (30 * S, Expiry::Idle));
    }

    #[test]
    fn under_the_cap_everyone_is_admitted_and_ids_go_stale_on_remove() {
        let mut r = Registry::new(2, 2);
        let Admit::Open(a) = r.admit('a', 0) else {
            panic!()
        };
        let Admit::Open(b) = r.admit('b', 0) else {
            panic!()
        };
        assert_eq!(r.len(), 2);
        assert_eq!(r.remove(a), Some('a'));
        assert_eq!(r.remove(a), None, "already gone");
        let Admit::Open(c) = r.admit('c', 1) else {
            panic!()
        };
        assert_ne!(a, c, "the slot is reused under a new id");
        assert_eq!(r.set(a, Standing::Busy, 2), None); // stale: no effect on c
        assert_eq!(r.victim(2), Some(b), "b's clock started first");
        assert!(r.contains(c) && !r.contains(a));
    }

    /// A registry at its cap of 4: 0 busy, 1 a head since 1 s, 2 idle since 50 s, 3 idle
    /// since 40 s.
    fn full_of_four() -> (Registry<i32>, Vec<crate::guard::Id>) {
        let mut r = Registry::new(4, 2);
        let ids: Vec<_> = (0..4)
            .map(|i| match r.admit(i, i as u64) {
                Admit::Open(id) => id,
                other => panic!("{other:?}"),
            })
            .collect();
        r.set(ids[0], Standing::Busy, 0);
        r.set(ids[1], Standing::Head { since: S, bytes: 9 }, 0);
        r.set(ids[2], Standing::Idle { since: 50 * S }, 0);
        r.set(ids[3], Standing::Idle { since: 40 * S }, 0);
        (r, ids)
    }

    #[test]
    fn at_the_cap_a_newcomer_is_on_probation_and_its_first_head_sheds_the_least_progress() {
        let (mut r, ids) = full_of_four();
        let Admit::Probation(n) = r.admit(10, 60 * S) else {
            panic!()
        };
        assert_eq!((r.len(), r.on_probation()), (5, 1));
        // Nothing is shed while its head has not arrived.
        assert_eq!(
            r.set(
                n,
                Standing::Head {
                    since: 60 * S,
                    bytes: 3
                },
                60 * S
            ),
            None
        );
        assert!(r.is_on_probation(n));
        // Its head arrived: the longest-idle keep-alive connection makes room.
        assert_eq!(r.set(n, Standing::Busy, 60 * S), Some(3));
        assert!(!r.contains(ids[3]) && !r.is_on_probation(n));
        assert_eq!((r.len(), r.on_probation()), (4, 0));
        let Admit::Probation(m) = r.admit(11, 61 * S) else {
            panic!()
        };
        assert_eq!(
            r.set(m, Standing::Busy, 61 * S),
            Some(2),
            "the other idle one"
        );
        let Admit::Probation(k) = r.admit(12, 62 * S) else {
            panic!()
        };
        assert_eq!(
            r.set(k, Standing::Busy, 62 * S),
            Some(1),
            "the oldest unfinished head"
        );
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn a_probationer_that_never_completes_its_head_sheds_nobody() {
        let (mut r, _) = full_of_four();
        let Admit::Probation(n) = r.admit(10, 60 * S) else {
            panic!()
        };
        // Its probation ran out (408): removed, and the four regular ones are all still there.
        assert_eq!(r.remove(n), Some(10));
        assert_eq!((r.len(), r.on_probation()), (4, 0));
    }

    #[test]
    fn when_the_probation_places_are_taken_the_oldest_probationer_makes_room() {
        let (mut r, _) = full_of_four();
        let (Admit::Probation(p1), Admit::Probation(_)) =
            (r.admit(10, 60 * S), r.admit(11, 60 * S + 1))
        else {
            panic!()
        };
        let Admit::Shed(p3, v) = r.admit(12, 60 * S + 2) else {
            panic!()
        };
        assert_eq!(v, 10);
        assert!(!r.contains(p1) && r.is_on_probation(p3));
        assert_eq!((r.len(), r.on_probation()), (6, 2));
    }

    #[test]
    fn among_heads_of_the_same_age_the_one_with_fewer_bytes_goes() {
        let mut r = Registry::new(2, 1);
        let (Admit::Open(a), Admit::Open(b)) = (r.admit('a', 5), r.admit('b', 5)) else {
            panic!()
        };
        r.set(a, Standing::Head { since: 5, bytes: 7 }, 5);
        r.set(b, Standing::Head { since: 5, bytes: 2 }, 5);
        assert_eq!(r.victim(6), Some(b));
    }

    #[test]
    fn a_keep_alive_client_between_two_requests_is_not_shed() {
        let mut r = Registry::new(2, 1);
        let (Admit::Open(a), Admit::Open(b)) = (r.admit('a', 0), r.admit('b', 0)) else {
            panic!()
        };
        // a just got its response (wrk, a browser): its next request is on its way.
        r.set(a, Standing::Idle { since: 10 * S }, 10 * S);
        r.set(
            b,
            Standing::Head {
                since: 2 * S,
                bytes: 3,
            },
            10 * S,
        );
        assert_eq!(r.victim(10 * S + S / 2), Some(b), "the slow head, not a");
        r.set(b, Standing::Busy, 10 * S);
        assert_eq!(r.victim(10 * S + S / 2), None);
        assert_eq!(
            r.victim(11 * S),
            Some(a),
            "idle for the grace period: fair game"
        );
    }

    #[test]
    fn when_every_connection_is_busy_a_newcomer_is_served_over_the_cap_and_503_needs_no_probation()
    {
        let mut r = Registry::new(3, 1);
        for i in 0..3 {
            let Admit::Open(id) = r.admit(i, 0) else {
                panic!()
            };
            r.set(id, Standing::Busy, 0);
        }
        let Admit::Probation(n) = r.admit(9, 1) else {
            panic!()
        };
        assert_eq!(r.set(n, Standing::Busy, 1), None, "nobody to shed");
        assert_eq!((r.len(), r.on_probation()), (4, 0));
        let mut none = Registry::new(1, 0);
        assert!(matches!(none.admit(1, 0), Admit::Open(_)));
        assert_eq!(none.admit(2, 0), Admit::Full(2));
    }

    #[test]
    fn a_slowloris_crowd_larger_than_the_cap_never_locks_a_legitimate_client_out() {
        // 270 dribbling connections against a cap of 256 (32 probation places), each
        // reconnecting as soon as it is closed, interleaved with a legitimate client every 10
        // arrivals (10 ms apart) whose head arrives at once: every legitimate client is
        // admitted and served, the slow ones never shed each other (a probationer that never
        // completes its head sheds nobody), and each lives until its probation or deadline.
        let mut r: Registry<(bool, u32)> = Registry::new(256, 32);
        let mut open: Vec<(crate::guard::Id, u64, usize)> = Vec::new();
        let (mut refused, mut shed_slow, mut expired) = (0, 0, 0);
        let mut now = 0;
        for i in 0..2700u32 {
            now += 10_000_000;
            let legit = i % 10 == 9;
            let id = match r.admit((legit, i), now) {
                Admit::Open(id) | Admit::Probation(id) => id,
                Admit::Shed(id, (was_legit, _)) => {
                    assert!(!was_legit, "a legitimate client was shed");
                    id
                }
                Admit::Full(_) => {
                    refused += 1;
                    continue;
                }
            };
            if legit {
                // Its request arrives whole: busy (sheds the least progress if on
                // probation), answered, then it closes.
                if let Some((was_legit, _)) = r.set(id, Standing::Busy, now) {
                    assert!(!was_legit, "a legitimate client was shed");
                    shed_slow += 1;
                }
                assert!(r.contains(id));
                r.remove(id);
            } else {
                open.push((id, now, 0));
            }
            // Every slow client still open sent one more byte; probationers past their
            // probation are closed (408), as the I/O loop does.
            open.retain(|(id, since, _)| {
                if r.is_on_probation(*id) && now - since >= crate::guard::PROBATION_NS {
                    r.remove(*id);
                    expired += 1;
                }
                r.contains(*id)
            });
            for (id, since, bytes) in &mut open {
                *bytes += 1;
                let head = Standing::Head {
                    since: *since,
                    bytes: *bytes,
                };
                assert_eq!(r.set(*id, head, now), None);
            }
        }
        assert_eq!(refused, 0);
        // One slow client shed per legitimate one that came at the cap.
        assert!(shed_slow > 200, "{shed_slow}");
        // New slow clients come faster (100/s) than probation ends: they take each other's
        // probation places, never a regular place.
        assert_eq!(expired, 0);
        // The last arrival was legitimate: it took a probation place, shed a regular slow one
        // when its head arrived, and left.
        assert_eq!((r.len(), r.on_probation()), (255 + 31, 31));
    }
}
