//! Fuzzes echo's iperf3 server ([`echo::iperf::Server`]) with input-chosen sequences of events:
//! connections with the test's cookie, another one or arbitrary bytes; control-connection bytes
//! (arbitrary, or whole messages of a real 3.12 client, so deep states are reached); polls,
//! closes, stream traffic and time passing. Invariants: nothing panics or loops; a test's end is
//! final (every later call on it says so, its streams stop); at most one test holds the server,
//! and only while its control connection has not been told the test ended; nothing sent is
//! larger than a results message can be; and once enough time passes every test ends and the
//! server is free (no wedge). Run with `scripts/fuzz 60 iperf`.
#![no_main]

use echo::iperf::{Admit, Limits, Server, StreamCmd, TestId, COOKIE_SIZE};
use libfuzzer_sys::fuzz_target;

const SEC: u64 = 1_000_000_000;
const A: &[u8; COOKIE_SIZE] = b"abcdefghijklmnopqrstuvwxyz234567abcd\0";
const B: &[u8; COOKIE_SIZE] = b"zzzzefghijklmnopqrstuvwxyz234567abcd\0";

const MESSAGES: &[&str] = &[
    r#"{"tcp":true,"omit":0,"time":3,"num":0,"blockcount":0,"parallel":1,"len":131072,"pacing_timer":1000,"client_version":"3.12"}"#,
    r#"{"tcp":true,"omit":1,"time":3,"num":0,"blockcount":0,"parallel":2,"reverse":true,"len":131072,"get_server_output":1,"client_version":"3.12"}"#,
    r#"{"tcp":true,"omit":0,"time":0,"num":1000000,"blockcount":0,"parallel":3,"bidirectional":true,"len":1000,"client_version":"3.12"}"#,
    r#"{"udp":true,"omit":0,"time":10,"parallel":1,"len":1448,"bandwidth":1048576,"client_version":"3.12"}"#,
    r#"{"tcp":true,"time":86400,"omit":86400,"parallel":16,"len":0}"#,
    r#"{"cpu_util_total":1.5,"cpu_util_user":0.05,"cpu_util_system":1.4,"sender_has_retransmits":1,"streams":[{"id":1,"bytes":1234567,"retransmits":0,"jitter":0,"errors":0,"packets":0,"start_time":0,"end_time":3.000124}]}"#,
];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut s = Server::new(limits);
    let mut now: u64 = 0;
    // Control connections: (test, told it ended).
    let mut controls: Vec<(TestId, bool)> = Vec::new();
    let mut streams: Vec<(TestId, usize)> = Vec::new();
    let mut ended: Vec<TestId> = Vec::new();
    let mut input = Input(data);
    let check = |o: echo::iperf::Out, c: &mut (TestId, bool), ended: &mut Vec<TestId>| {
        // The results of 16 streams, the largest thing ever sent, are ~3 KB.
        assert!(o.send.len() < 8192, "sent {} bytes", o.send.len());
        if c.1 {
            assert!(o.end.is_some(), "an ended test came back");
            assert!(o.send.is_empty(), "an ended test sent {:?}", o.send);
        }
        if o.end.is_some() && !c.1 {
            c.1 = true;
            ended.push(c.0);
        }
    };
    while let Some(op) = input.byte() {
        let pick = input.byte().unwrap_or(0) as usize;
        match op % 8 {
            0 => {
                let cookie: [u8; COOKIE_SIZE] = match pick % 3 {
                    0 => *A,
                    1 => *B,
                    _ => {
                        let mut c = [0u8; COOKIE_SIZE];
                        let t = input.take(COOKIE_SIZE);
                        c[..t.len()].copy_from_slice(t);
                        c
                    }
                };
                let wanted = s.wants_cookie();
                match s.admit(&cookie, now) {
                    Admit::Control(id) => {
                        assert!(wanted);
                        assert!(
                            controls.iter().all(|c| c.1),
                            "a second test while one holds the server"
                        );
                        controls.push((id, false));
                    }
                    Admit::Stream { test, index, .. } => {
                        assert!(wanted);
                        assert!(!ended.contains(&test));
                        streams.push((test, index));
                    }
                    Admit::Deny => {}
                }
            }
            1 | 2 if !controls.is_empty() => {
                let i = pick % controls.len();
                let bytes: Vec<u8> = if op % 8 == 1 {
                    let n = input.byte().unwrap_or(0) as usize;
                    input.take(n).to_vec()
                } else {
                    match input.byte().unwrap_or(0) as usize % (MESSAGES.len() + 1) {
                        k if k < MESSAGES.len() => {
                            let m = MESSAGES[k].as_bytes();
                            let mut v = (m.len() as u32).to_be_bytes().to_vec();
                            v.extend_from_slice(m);
                            v
                        }
                        _ => vec![input.byte().unwrap_or(4)],
                    }
                };
                let o = s.control_input(controls[i].0, &bytes, now);
                check(o, &mut controls[i], &mut ended);
            }
            3 if !controls.is_empty() => {
                let i = pick % controls.len();
                if let Some(d) = s.next_deadline(controls[i].0) {
                    assert!(!controls[i].1);
                    if input.byte().unwrap_or(0) & 1 == 1 {
                        now = now.max(d);
                    }
                }
                let o = s.poll_control(controls[i].0, now);
                check(o, &mut controls[i], &mut ended);
            }
            4 if !controls.is_empty() => {
                let i = pick % controls.len();
                let o = s.control_closed(controls[i].0, now);
                assert!(
                    o.end.is_some(),
                    "closing the control connection ends the test"
                );
                check(o, &mut controls[i], &mut ended);
            }
            5 if !streams.is_empty() => {
                let (t, i) = streams[pick % streams.len()];
                let n = input.byte().unwrap_or(0) as usize * 1000;
                let cmd = s.stream_bytes(t, i, n, now);
                if ended.contains(&t) {
                    assert_eq!(cmd, StreamCmd::Stop);
                }
            }
            6 => now = now.saturating_add((pick as u64) << (input.byte().unwrap_or(0) % 40)),
            _ => {
                if let Some(&(t, i)) = streams.get(pick % streams.len().max(1)) {
                    if ended.contains(&t) {
                        assert_eq!(s.stream_cmd(t, i), StreamCmd::Stop);
                    }
                }
            }
        }
        assert_eq!(
            s.busy(),
            controls.iter().any(|c| !c.1),
            "busy exactly while a control connection has not been told its test ended"
        );
    }
    // No wedge: left alone, every test ends. A test whose streams are all in starts at its
    // next poll (however late: they came in time), then ends at its deadline, which the longest
    // test allowed (-t 86400 -O 86400) passes within three days.
    for round in 0..2 {
        now = now.saturating_add(86_400 * 3 * SEC);
        for c in controls.iter_mut() {
            let o = s.poll_control(c.0, now);
            assert!(
                round == 0 || o.end.is_some(),
                "a test still running days later"
            );
            check(o, c, &mut ended);
        }
    }
    assert!(!s.busy());
    for (t, i) in streams {
        assert_eq!(s.stream_cmd(t, i), StreamCmd::Stop);
    }
});
