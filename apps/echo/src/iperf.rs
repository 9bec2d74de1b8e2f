//! An iperf3-protocol server (TCP tests), as a state machine without I/O.
//!
//! The protocol is iperf3's (esnet/iperf, `src/iperf_api.c`, `src/iperf_server_api.c`), checked
//! against the 3.12 client Debian bookworm ships. A test runs over one **control** connection and
//! N **data streams**, all to TCP port [`PORT`]:
//!
//! 1. the client connects and sends its 37-byte cookie ([`COOKIE_SIZE`]: 36 random characters and
//!    a NUL); the server answers the state byte `PARAM_EXCHANGE`;
//! 2. the client sends its parameters: a 4-byte big-endian length and that many bytes of JSON
//!    (`{"tcp":true,"omit":0,"time":10,"parallel":1,"len":131072,...,"client_version":"3.12"}`);
//!    the server answers `CREATE_STREAMS`, or refuses with `SERVER_ERROR` followed by two 4-byte
//!    big-endian numbers, iperf3's error code and an errno, which the client prints as its error
//!    (`iperf3: error - unable to start stream listener: Protocol not supported` for `-u`);
//! 3. the client opens the streams, each sending the same cookie; a connection with another
//!    cookie gets `ACCESS_DENIED` and is closed; once all are in, the server sends `TEST_START`
//!    and `TEST_RUNNING`;
//! 4. data flows client to server (the server counts what it reads), or server to client with
//!    `-R` (the server writes as fast as it can), or both ways with `--bidir`, until the client
//!    sends `TEST_END`;
//! 5. the server sends `EXCHANGE_RESULTS`; the client sends its results JSON, the server its own
//!    (the bytes it counted per stream, with the stream ids the client numbers them by: 1, 3, 4,
//!    ...) and then `DISPLAY_RESULTS`; the client answers `IPERF_DONE` and closes.
//!
//! One test at a time: a connection while a test runs gets `ACCESS_DENIED` (the client prints
//! "the server is busy running a test"). The client may end a test at any point with
//! `CLIENT_TERMINATE` or `IPERF_DONE`, or by closing the control connection; the test is then
//! dropped and the server is free again. Nothing can hold the server for long: each setup step has
//! [`Limits::step_ns`], a running test ends at its duration plus omit plus [`Limits::grace_ns`]
//! (iperf3's own server timer) or after [`Limits::idle_ns`] without a byte moving, and a length
//! prefix over [`MAX_JSON`] or a message that is not JSON ends the test at once.
//!
//! Supported: `-t`, `-n`, `-k` (the client decides when the test ends), `-P` up to
//! [`Limits::max_streams`] streams in all, `-R`, `--bidir`, `-O` (the server's counts restart
//! when the omit time is over, as iperf3's do), `-l` (the size of the server's writes, at most
//! [`SEND_CHUNK`]), `--get-server-output` (a short text summary). Accepted and not applied:
//! socket options the client sets on its own side too (`-w`, `-M`, `-N`, `-S`, `-C`, `-L`,
//! `--dont-fragment`). Refused with a clear error: UDP and SCTP, `-b` / `--fq-rate` when the
//! server would send (no pacing here), authentication, more streams than the limit.
//!
//! The JSON is read and written by [`crate::json`], hand-written because the card allows no serde.
//! The I/O side (apps/echo's main.rs) owns the sockets: it reads a new connection's cookie and
//! calls [`Server::admit`], feeds the control connection's bytes to [`Server::control_input`]
//! and writes what comes back, calls [`Server::poll_control`] when woken (a stream arrived, a
//! deadline passed), and runs each stream while [`Server::stream_cmd`] says
//! [`StreamCmd::Run`], reporting the bytes it moved with [`Server::stream_bytes`].

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write as _;

use crate::json::{self, Obj, Value};

/// The TCP port iperf3 uses.
pub const PORT: u16 = 5201;
/// Bytes of the cookie each connection of a test starts with.
pub const COOKIE_SIZE: usize = 37;
/// The longest JSON message accepted (the client's results for 128 streams are ~20 KB).
pub const MAX_JSON: usize = 64 * 1024;
/// The longest test iperf3 allows (`MAX_TIME`, seconds).
pub const MAX_TIME: u64 = 86_400;
/// The most bytes the server hands the socket in one write of a sending stream.
pub const SEND_CHUNK: usize = 64 * 1024;

/// A cookie: 36 characters and a NUL from a real client, but any 37 bytes are compared.
pub type Cookie = [u8; COOKIE_SIZE];

/// iperf3's state bytes (`src/iperf_api.h`).
pub mod state {
    /// Streams are connected; the test starts.
    pub const TEST_START: u8 = 1;
    /// Data may flow.
    pub const TEST_RUNNING: u8 = 2;
    /// The client ends the test.
    pub const TEST_END: u8 = 4;
    /// The server wants the client's parameters.
    pub const PARAM_EXCHANGE: u8 = 9;
    /// The client may open its streams.
    pub const CREATE_STREAMS: u8 = 10;
    /// The server is going away.
    pub const SERVER_TERMINATE: u8 = 11;
    /// The client is going away (Ctrl-C).
    pub const CLIENT_TERMINATE: u8 = 12;
    /// Results are exchanged.
    pub const EXCHANGE_RESULTS: u8 = 13;
    /// The client may print its results.
    pub const DISPLAY_RESULTS: u8 = 14;
    /// The client is done.
    pub const IPERF_DONE: u8 = 16;
    /// `-1`: the server is busy (or a stream's cookie is wrong).
    pub const ACCESS_DENIED: u8 = -1i8 as u8;
    /// `-2`: followed by iperf3's error code and an errno, both 4-byte big-endian.
    pub const SERVER_ERROR: u8 = -2i8 as u8;
}

/// iperf3's error codes (`i_errno`, `src/iperf_api.h`) the server sends, with the messages the
/// client prints for them (`src/iperf_error.c`).
pub mod ierr {
    /// "test duration too long (maximum = 86400 seconds)".
    pub const DURATION: u32 = 5;
    /// "bogus value for --omit".
    pub const OMIT: u32 = 12;
    /// "an option you are trying to set is not implemented yet".
    pub const UNIMP: u32 = 13;
    /// "cannot be both reverse and bidirectional".
    pub const REVERSE_BIDIR: u32 = 25;
    /// "unable to receive parameters from client: " and the errno's text.
    pub const RECV_PARAMS: u32 = 114;
    /// "test authorization failed".
    pub const AUTH_TEST: u32 = 142;
    /// "unable to start stream listener: " and the errno's text.
    pub const STREAM_LISTEN: u32 = 202;
    /// "unable to accept stream connection: " and the errno's text.
    pub const STREAM_ACCEPT: u32 = 204;
}

/// Linux errno values sent after an error code (the client prints their `strerror`).
pub mod errno {
    /// "Invalid argument".
    pub const EINVAL: u32 = 22;
    /// "Message too long".
    pub const EMSGSIZE: u32 = 90;
    /// "Protocol not supported".
    pub const EPROTONOSUPPORT: u32 = 93;
    /// "No buffer space available".
    pub const ENOBUFS: u32 = 105;
    /// "Connection timed out".
    pub const ETIMEDOUT: u32 = 110;
}

const SEC: u64 = 1_000_000_000;

/// Bounds on what a client can make the server do or wait for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most data streams of one test (each takes a socket with its buffers).
    pub max_streams: usize,
    /// How long each setup or teardown step may take (parameters, streams, results, done).
    pub step_ns: u64,
    /// A running test with a duration ends this long after duration + omit even without
    /// `TEST_END` (iperf3's server uses 40 s).
    pub grace_ns: u64,
    /// A running test in which no stream moved a byte for this long ends.
    pub idle_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_streams: 16,
            step_ns: 20 * SEC,
            grace_ns: 40 * SEC,
            idle_ns: 120 * SEC,
        }
    }
}

/// Identifies one test; stale ids (from a test that ended) are answered as ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestId(u64);

impl core::fmt::Display for TestId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Which way a stream's data flows, seen from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// The client sends, the server reads and counts (the default).
    Receive,
    /// The server sends (`-R`, and half the streams of `--bidir`).
    Send,
}

/// What a new connection is, once its cookie is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The control connection of a new test: write [`Server::greeting`], then drive it with
    /// [`Server::control_input`] / [`Server::poll_control`].
    Control(TestId),
    /// Data stream `index` of `test`: run it as [`Server::stream_cmd`] says.
    Stream {
        /// Its test.
        test: TestId,
        /// Its place (0..), which fixes its iperf3 stream id.
        index: usize,
        /// Which way it carries data.
        dir: Dir,
    },
    /// Write [`state::ACCESS_DENIED`] and close (busy, or a stream with the wrong cookie).
    Deny,
}

/// What a stream's task should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCmd {
    /// Wait (for the other streams to connect).
    Wait,
    /// Move data.
    Run,
    /// Close the stream: its test ended (or is no longer the one running).
    Stop,
}

/// Why a test ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// It ran and the results were exchanged.
    Done(Summary),
    /// The client ended it early (`CLIENT_TERMINATE`, `IPERF_DONE`) or closed the control
    /// connection.
    ClientGone(&'static str),
    /// The parameters were refused: the reason (the client got a `SERVER_ERROR`).
    Refused(String),
    /// The client broke the protocol (bad message, oversized length, not JSON).
    Protocol(String),
    /// A step took too long (named), or a running test outlived its duration.
    TimedOut(&'static str),
}

/// What a finished test moved, for the console.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Bytes the server read, all streams.
    pub received: u64,
    /// Bytes the server wrote, all streams.
    pub sent: u64,
    /// Streams.
    pub streams: usize,
    /// Measured time (after omit), nanoseconds.
    pub ns: u64,
}

/// What the control connection's owner must do after a call.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Out {
    /// Bytes to write to the control connection (in order).
    pub send: Vec<u8>,
    /// Set when the test is over: write `send`, then close the control connection. The server is
    /// free for the next test from this call on.
    pub end: Option<End>,
}

/// The client's parameters that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Seconds (0: the test ends on bytes or blocks).
    pub time: u64,
    /// Seconds at the start not counted.
    pub omit: u64,
    /// Bytes (`-n`) to send, 0 if none (the client checks it).
    pub bytes: u64,
    /// Blocks (`-k`), 0 if none.
    pub blocks: u64,
    /// Streams each way.
    pub parallel: usize,
    /// `-R`.
    pub reverse: bool,
    /// `--bidir`.
    pub bidir: bool,
    /// Bytes per write of a sending stream.
    pub len: usize,
    /// `--get-server-output`.
    pub server_output: bool,
}

impl Params {
    /// The direction of stream `index` (receiving streams first, as iperf3's server accepts
    /// them: under `--bidir` the client connects its sending streams first).
    fn dir(&self, index: usize) -> Dir {
        if self.bidir {
            if index < self.parallel {
                Dir::Receive
            } else {
                Dir::Send
            }
        } else if self.reverse {
            Dir::Send
        } else {
            Dir::Receive
        }
    }

    fn total_streams(&self) -> usize {
        if self.bidir {
            2 * self.parallel
        } else {
            self.parallel
        }
    }
}

/// A refusal: what the client is told (error code, errno) and what the console says.
struct Refusal {
    code: u32,
    errno: u32,
    why: String,
}

fn refuse(code: u32, errno: u32, why: String) -> Refusal {
    Refusal { code, errno, why }
}

/// A non-negative integer parameter (absent: 0). cJSON truncates a fraction (`valueint`); so does
/// this, but refuses negative values, values over `u64` and what is not a number.
fn uint(v: &Value, key: &str) -> Result<u64, Refusal> {
    match v.get(key) {
        None => Ok(0),
        Some(Value::Num(n)) if n.int >= 0 && n.int <= i128::from(u64::MAX) => Ok(n.int as u64),
        Some(other) => Err(refuse(
            ierr::RECV_PARAMS,
            errno::EINVAL,
            format!("parameter {key} is {other:?}, not a count"),
        )),
    }
}

/// Reads and checks the client's parameters (iperf3's `get_parameters`).
fn parse_params(text: &[u8], limits: &Limits) -> Result<Params, Refusal> {
    let v = json::parse(text).map_err(|e| {
        refuse(
            ierr::RECV_PARAMS,
            errno::EINVAL,
            format!("parameters are not JSON: {e}"),
        )
    })?;
    if !matches!(v, Value::Obj(_)) {
        return Err(refuse(
            ierr::RECV_PARAMS,
            errno::EINVAL,
            "parameters are not a JSON object".into(),
        ));
    }
    for proto in ["udp", "sctp"] {
        if v.get(proto).is_some() {
            return Err(refuse(
                ierr::STREAM_LISTEN,
                errno::EPROTONOSUPPORT,
                format!(
                    "{} tests are not supported (TCP only)",
                    proto.to_uppercase()
                ),
            ));
        }
    }
    if v.get("authtoken").is_some() {
        return Err(refuse(
            ierr::AUTH_TEST,
            0,
            "authentication is not supported".into(),
        ));
    }
    let time = uint(&v, "time")?;
    if time > MAX_TIME {
        return Err(refuse(
            ierr::DURATION,
            0,
            format!("-t {time}: at most {MAX_TIME} s"),
        ));
    }
    let omit = uint(&v, "omit")?;
    if omit > MAX_TIME {
        return Err(refuse(
            ierr::OMIT,
            0,
            format!("-O {omit}: at most {MAX_TIME} s"),
        ));
    }
    let reverse = v.get("reverse").is_some();
    let bidir = v.get("bidirectional").is_some();
    if reverse && bidir {
        return Err(refuse(ierr::REVERSE_BIDIR, 0, "both -R and --bidir".into()));
    }
    let parallel = match v.get("parallel") {
        None => 1,
        Some(_) => uint(&v, "parallel")?,
    };
    let p = Params {
        time,
        omit,
        bytes: uint(&v, "num")?,
        blocks: uint(&v, "blockcount")?,
        parallel: parallel.min(usize::MAX as u64) as usize,
        reverse,
        bidir,
        len: match uint(&v, "len")? {
            0 => SEND_CHUNK,
            n => (n.min(SEND_CHUNK as u64)) as usize,
        },
        server_output: v.get("get_server_output").is_some(),
    };
    if p.parallel == 0 {
        return Err(refuse(
            ierr::RECV_PARAMS,
            errno::EINVAL,
            "-P 0: no streams".into(),
        ));
    }
    if p.parallel > limits.max_streams || p.total_streams() > limits.max_streams {
        return Err(refuse(
            ierr::STREAM_LISTEN,
            errno::ENOBUFS,
            format!(
                "{} streams asked for, at most {} here",
                p.total_streams(),
                limits.max_streams
            ),
        ));
    }
    let sends = reverse || bidir;
    for pacing in ["bandwidth", "fqrate"] {
        if sends && uint(&v, pacing)? > 0 {
            return Err(refuse(
                ierr::UNIMP,
                0,
                format!("{pacing} (-b / --fq-rate) for data the server sends: no pacing here"),
            ));
        }
    }
    Ok(p)
}

/// Reassembles the control connection's messages: state bytes, or a length and JSON.
#[derive(Debug, Default)]
struct Inbox {
    buf: Vec<u8>,
}

enum Msg {
    /// Not all there yet.
    Partial,
    /// A JSON message's bytes.
    Json(Vec<u8>),
    /// The length prefix is over [`MAX_JSON`].
    TooLong(u32),
}

impl Inbox {
    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    fn state_byte(&mut self) -> Option<u8> {
        if self.buf.is_empty() {
            None
        } else {
            Some(self.buf.remove(0))
        }
    }

    fn json(&mut self) -> Msg {
        if self.buf.len() < 4 {
            return Msg::Partial;
        }
        let n = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if n as usize > MAX_JSON {
            return Msg::TooLong(n);
        }
        if self.buf.len() < 4 + n as usize {
            return Msg::Partial;
        }
        let text = self.buf[4..4 + n as usize].to_vec();
        self.buf.drain(..4 + n as usize);
        Msg::Json(text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `PARAM_EXCHANGE` sent; the parameters are awaited.
    Params,
    /// `CREATE_STREAMS` sent; streams are connecting.
    Streams,
    /// `TEST_START` + `TEST_RUNNING` sent; until `TEST_END`.
    Running,
    /// `EXCHANGE_RESULTS` sent; the client's results are awaited.
    Results,
    /// Our results + `DISPLAY_RESULTS` sent; `IPERF_DONE` (or the close) is awaited.
    Done,
}

#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    /// Bytes moved in all.
    bytes: u64,
    /// Of which before the omit time was over.
    omitted: u64,
}

#[derive(Debug)]
struct Test {
    id: TestId,
    cookie: Cookie,
    phase: Phase,
    /// When the current step must be over.
    deadline: u64,
    params: Option<Params>,
    dirs: Vec<Dir>,
    streams: Vec<Stream>,
    /// The streams are all in, `TEST_START` not sent yet.
    all_in: bool,
    inbox: Inbox,
    /// `TEST_RUNNING` sent at.
    started: u64,
    /// The omit time is over (counts restart) at.
    counted_from: u64,
    omit_done: bool,
    /// `TEST_END` at.
    ended: u64,
    /// A byte last moved at.
    progress: u64,
}

/// The iperf3 server: at most one test at a time.
#[derive(Debug)]
pub struct Server {
    limits: Limits,
    test: Option<Test>,
    next: u64,
}

impl Server {
    /// A server with no test running.
    pub fn new(limits: Limits) -> Self {
        Server {
            limits,
            test: None,
            next: 1,
        }
    }

    /// True while a test holds the server.
    pub fn busy(&self) -> bool {
        self.test.is_some()
    }

    /// Whether a new connection's cookie is worth reading: false while a test runs that expects
    /// no more streams (the connection gets `ACCESS_DENIED` at once, as iperf3 does, without
    /// waiting for anything from it).
    pub fn wants_cookie(&self) -> bool {
        match &self.test {
            None => true,
            Some(t) => t.phase == Phase::Streams && !t.all_in,
        }
    }

    /// A new connection sent `cookie`: the control connection of a new test, a stream of the
    /// test setting up, or refused.
    pub fn admit(&mut self, cookie: &Cookie, now: u64) -> Admit {
        match &mut self.test {
            None => {
                let id = TestId(self.next);
                self.next += 1;
                self.test = Some(Test {
                    id,
                    cookie: *cookie,
                    phase: Phase::Params,
                    deadline: now.saturating_add(self.limits.step_ns),
                    params: None,
                    dirs: Vec::new(),
                    streams: Vec::new(),
                    all_in: false,
                    inbox: Inbox::default(),
                    started: 0,
                    counted_from: 0,
                    omit_done: false,
                    ended: 0,
                    progress: now,
                });
                Admit::Control(id)
            }
            Some(t) if t.phase == Phase::Streams && !t.all_in && t.cookie == *cookie => {
                let index = t.streams.len();
                t.streams.push(Stream::default());
                let dir = t.dirs[index];
                if t.streams.len() == t.dirs.len() {
                    t.all_in = true;
                }
                Admit::Stream {
                    test: t.id,
                    index,
                    dir,
                }
            }
            Some(_) => Admit::Deny,
        }
    }

    /// The first bytes of a new control connection: `PARAM_EXCHANGE`.
    pub fn greeting(&self) -> [u8; 1] {
        [state::PARAM_EXCHANGE]
    }

    fn current(&mut self, id: TestId) -> Option<&mut Test> {
        self.test.as_mut().filter(|t| t.id == id)
    }

    /// The control connection of `id` received `data`.
    pub fn control_input(&mut self, id: TestId, data: &[u8], now: u64) -> Out {
        match self.current(id) {
            Some(t) => t.inbox.push(data),
            None => return gone(),
        }
        self.poll_control(id, now)
    }

    /// The control connection of `id` was closed or reset by the client.
    pub fn control_closed(&mut self, id: TestId, now: u64) -> Out {
        let mut out = self.poll_control(id, now);
        if out.end.is_none() {
            // After the results, closing is as good as IPERF_DONE (iperf3's server agrees).
            let t = self.test.take().expect("poll_control kept the test");
            out.end = Some(if t.phase == Phase::Done {
                End::Done(t.summary())
            } else {
                End::ClientGone("closed the control connection")
            });
        }
        out
    }

    /// Advances test `id` at time `now`: the messages received, the streams connected, the
    /// deadlines. Call it whenever woken.
    pub fn poll_control(&mut self, id: TestId, now: u64) -> Out {
        let limits = self.limits;
        let Some(t) = self.current(id) else {
            return gone();
        };
        let mut out = Out::default();
        let end = t.step(now, &limits, &mut out.send);
        if let Some(e) = end {
            self.test = None;
            out.end = Some(e);
        }
        out
    }

    /// When [`Server::poll_control`] must be called again at the latest (None: no test).
    pub fn next_deadline(&self, id: TestId) -> Option<u64> {
        let t = self.test.as_ref().filter(|t| t.id == id)?;
        let mut d = t.deadline;
        if t.phase == Phase::Running {
            d = d.min(t.progress.saturating_add(self.limits.idle_ns));
            if !t.omit_done {
                d = d.min(t.counted_from);
            }
        }
        Some(d)
    }

    /// What stream `index` of test `id` should do now.
    pub fn stream_cmd(&self, id: TestId, index: usize) -> StreamCmd {
        match self.test.as_ref().filter(|t| t.id == id) {
            None => StreamCmd::Stop,
            Some(t) if index >= t.streams.len() => StreamCmd::Stop,
            Some(t) => match t.phase {
                Phase::Params | Phase::Streams => StreamCmd::Wait,
                Phase::Running => StreamCmd::Run,
                Phase::Results | Phase::Done => StreamCmd::Stop,
            },
        }
    }

    /// Stream `index` of test `id` moved `n` bytes at `now` (read them, or had them accepted by
    /// its socket); returns what it should do next. Bytes of an ended test count nowhere.
    pub fn stream_bytes(&mut self, id: TestId, index: usize, n: usize, now: u64) -> StreamCmd {
        let cmd = self.stream_cmd(id, index);
        if cmd != StreamCmd::Run {
            return cmd;
        }
        if let Some(t) = self.current(id) {
            t.omit_check(now);
            t.streams[index].bytes += n as u64;
            if n > 0 {
                t.progress = now;
            }
        }
        cmd
    }

    /// The parameters of test `id`, once received.
    pub fn params(&self, id: TestId) -> Option<Params> {
        self.test.as_ref().filter(|t| t.id == id)?.params
    }
}

fn gone() -> Out {
    Out {
        send: Vec::new(),
        end: Some(End::ClientGone("test no longer running")),
    }
}

fn server_error(send: &mut Vec<u8>, code: u32, errno: u32) {
    send.push(state::SERVER_ERROR);
    send.extend_from_slice(&code.to_be_bytes());
    send.extend_from_slice(&errno.to_be_bytes());
}

/// iperf3's stream ids: the first stream is 1, the next ones 3, 4, 5 ... (`iperf_add_stream`).
pub fn stream_id(index: usize) -> usize {
    if index == 0 {
        1
    } else {
        index + 2
    }
}

impl Test {
    /// Restarts the counts once the omit time is over.
    fn omit_check(&mut self, now: u64) {
        if !self.omit_done && now >= self.counted_from {
            self.omit_done = true;
            for s in &mut self.streams {
                s.omitted = s.bytes;
            }
        }
    }

    /// One step of the control protocol; Some when the test is over.
    fn step(&mut self, now: u64, limits: &Limits, send: &mut Vec<u8>) -> Option<End> {
        loop {
            match self.phase {
                Phase::Params => match self.inbox.json() {
                    Msg::Partial => break,
                    Msg::TooLong(n) => {
                        server_error(send, ierr::RECV_PARAMS, errno::EMSGSIZE);
                        return Some(End::Protocol(format!(
                            "parameters of {n} bytes (at most {MAX_JSON})"
                        )));
                    }
                    Msg::Json(text) => match parse_params(&text, limits) {
                        Err(r) => {
                            server_error(send, r.code, r.errno);
                            return Some(if r.code == ierr::RECV_PARAMS {
                                End::Protocol(r.why)
                            } else {
                                End::Refused(r.why)
                            });
                        }
                        Ok(p) => {
                            self.dirs = (0..p.total_streams()).map(|i| p.dir(i)).collect();
                            self.params = Some(p);
                            self.phase = Phase::Streams;
                            self.deadline = now.saturating_add(limits.step_ns);
                            send.push(state::CREATE_STREAMS);
                        }
                    },
                },
                Phase::Streams if self.all_in => {
                    let p = self.params.expect("parameters before streams");
                    send.push(state::TEST_START);
                    send.push(state::TEST_RUNNING);
                    self.phase = Phase::Running;
                    self.started = now;
                    self.progress = now;
                    self.counted_from = now.saturating_add(p.omit.saturating_mul(SEC));
                    self.omit_done = p.omit == 0;
                    self.deadline = if p.time > 0 {
                        now.saturating_add((p.time + p.omit).saturating_mul(SEC))
                            .saturating_add(limits.grace_ns)
                    } else {
                        u64::MAX
                    };
                }
                Phase::Streams | Phase::Running => match self.inbox.state_byte() {
                    None => break,
                    Some(state::TEST_START) => {}
                    Some(state::TEST_END) if self.phase == Phase::Running => {
                        self.omit_check(now);
                        self.ended = now;
                        self.phase = Phase::Results;
                        self.deadline = now.saturating_add(limits.step_ns);
                        send.push(state::EXCHANGE_RESULTS);
                    }
                    Some(state::CLIENT_TERMINATE) => {
                        return Some(End::ClientGone("terminated (CLIENT_TERMINATE)"))
                    }
                    Some(state::IPERF_DONE) => return Some(End::ClientGone("ended (IPERF_DONE)")),
                    Some(b) => {
                        return Some(End::Protocol(format!(
                            "state {} while {:?}",
                            b as i8, self.phase
                        )))
                    }
                },
                Phase::Results => match self.inbox.json() {
                    Msg::Partial => break,
                    Msg::TooLong(n) => {
                        return Some(End::Protocol(format!(
                            "results of {n} bytes (at most {MAX_JSON})"
                        )))
                    }
                    Msg::Json(text) => match json::parse(&text) {
                        Ok(Value::Obj(_)) => {
                            let r = self.results();
                            send.extend_from_slice(&(r.len() as u32).to_be_bytes());
                            send.extend_from_slice(r.as_bytes());
                            send.push(state::DISPLAY_RESULTS);
                            self.phase = Phase::Done;
                            self.deadline = now.saturating_add(limits.step_ns);
                        }
                        Ok(_) => return Some(End::Protocol("results are not an object".into())),
                        Err(e) => return Some(End::Protocol(format!("results are not JSON: {e}"))),
                    },
                },
                Phase::Done => match self.inbox.state_byte() {
                    None => break,
                    Some(state::IPERF_DONE) => return Some(End::Done(self.summary())),
                    Some(b) => {
                        return Some(End::Protocol(format!("state {} after results", b as i8)))
                    }
                },
            }
        }
        let stalled =
            self.phase == Phase::Running && now >= self.progress.saturating_add(limits.idle_ns);
        if now >= self.deadline || stalled {
            return Some(match self.phase {
                Phase::Params => End::TimedOut("waiting for the parameters"),
                Phase::Streams => {
                    // The client is told, as it may still be waiting for its last connections.
                    server_error(send, ierr::STREAM_ACCEPT, errno::ETIMEDOUT);
                    End::TimedOut("waiting for the streams to connect")
                }
                Phase::Running if stalled => End::TimedOut("no data moving"),
                Phase::Running => End::TimedOut("running past its duration"),
                Phase::Results => End::TimedOut("waiting for the client's results"),
                // The results were delivered; a client that never says IPERF_DONE still had
                // its test.
                Phase::Done => End::Done(self.summary()),
            });
        }
        if self.phase == Phase::Running {
            self.omit_check(now);
        }
        None
    }

    fn counted(&self, s: &Stream) -> u64 {
        s.bytes - s.omitted
    }

    fn measured_ns(&self) -> u64 {
        self.ended.saturating_sub(self.counted_from)
    }

    fn summary(&self) -> Summary {
        let mut s = Summary {
            received: 0,
            sent: 0,
            streams: self.streams.len(),
            ns: self.measured_ns(),
        };
        for (st, d) in self.streams.iter().zip(&self.dirs) {
            match d {
                Dir::Receive => s.received += self.counted(st),
                Dir::Send => s.sent += self.counted(st),
            }
        }
        s
    }

    /// The server's results JSON (iperf3's `send_results`).
    fn results(&self) -> String {
        let ns = self.measured_ns();
        let sends = self.dirs.contains(&Dir::Send);
        let mut streams = String::from("[");
        for (i, st) in self.streams.iter().enumerate() {
            if i > 0 {
                streams.push(',');
            }
            Obj::new(&mut streams)
                .int("id", stream_id(i) as i64)
                .int("bytes", self.counted(st).min(i64::MAX as u64) as i64)
                .int("retransmits", -1)
                .int("jitter", 0)
                .int("errors", 0)
                .int("packets", 0)
                .int("start_time", 0)
                .secs("end_time", ns)
                .end();
        }
        streams.push(']');
        let mut out = String::new();
        let o = Obj::new(&mut out)
            .int("cpu_util_total", 0)
            .int("cpu_util_user", 0)
            .int("cpu_util_system", 0)
            // Receiving only: -1, as iperf3's receiver; sending: no retransmit counts here.
            .int("sender_has_retransmits", if sends { 0 } else { -1 })
            .raw("streams", &streams);
        let wants_text = self.params.is_some_and(|p| p.server_output);
        if wants_text {
            o.str("server_output_text", &self.text(ns)).end();
        } else {
            o.end();
        }
        out
    }

    /// The `--get-server-output` text.
    fn text(&self, ns: u64) -> String {
        let mut t = String::from("xenrt echo: iperf3-compatible server (TCP)\n");
        let mut total = [0u64; 2];
        for (i, (st, d)) in self.streams.iter().zip(&self.dirs).enumerate() {
            let b = self.counted(st);
            total[(*d == Dir::Send) as usize] += b;
            let _ = writeln!(
                t,
                "[{:3}] {} {} bytes in {} s = {}",
                stream_id(i),
                if *d == Dir::Send { "sent" } else { "received" },
                b,
                secs2(ns),
                rate(b, ns)
            );
        }
        for (d, what) in [(Dir::Receive, "received"), (Dir::Send, "sent")] {
            if self.dirs.contains(&d) {
                let n = total[(d == Dir::Send) as usize];
                let _ = writeln!(
                    t,
                    "[SUM] {what} {n} bytes in {} s = {}",
                    secs2(ns),
                    rate(n, ns)
                );
            }
        }
        t
    }
}

/// `bytes` in `ns` nanoseconds as Mbit/s text with one decimal (`86.5 Mbit/s`).
pub fn rate(bytes: u64, ns: u64) -> String {
    if ns == 0 {
        return "- Mbit/s".into();
    }
    // Mbit/s = bytes * 8 / (ns / 1e9) / 1e6 = bytes * 8000 / ns; in tenths, rounded.
    let tenths = (u128::from(bytes) * 80_000 + u128::from(ns) / 2) / u128::from(ns);
    format!("{}.{} Mbit/s", tenths / 10, tenths % 10)
}

/// `ns` nanoseconds as seconds with two decimals (`3.01`), truncated.
pub fn secs2(ns: u64) -> String {
    let cs = ns / 10_000_000;
    format!("{}.{:02}", cs / 100, cs % 100)
}

/// A convenience for the I/O side and the tests: the ACCESS_DENIED reply.
pub fn denial() -> Vec<u8> {
    vec![state::ACCESS_DENIED]
}

#[cfg(test)]
mod real_client;
#[cfg(test)]
mod tests;
