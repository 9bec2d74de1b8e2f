//! The iperf3 server against byte sequences as the 3.12 client sends them (its `send_parameters`
//! and `send_results` print with cJSON_PrintUnformatted; the texts below are what `iperf3 -c
//! HOST -d` shows, unformatted), split anyhow, and against hostile ones.

use super::*;
use alloc::string::ToString;

const SEC: u64 = 1_000_000_000;
const COOKIE: &Cookie = b"abcdefghijklmnopqrstuvwxyz234567abcd\0";
const OTHER: &Cookie = b"zzzzefghijklmnopqrstuvwxyz234567abcd\0";

/// `iperf3 -c HOST -t 3` (3.12).
const PARAMS_T3: &str = r#"{"tcp":true,"omit":0,"time":3,"num":0,"blockcount":0,"parallel":1,"len":131072,"pacing_timer":1000,"client_version":"3.12"}"#;
/// `iperf3 -c HOST -R -P 2 -t 3`.
const PARAMS_R_P2: &str = r#"{"tcp":true,"omit":0,"time":3,"num":0,"blockcount":0,"parallel":2,"reverse":true,"len":131072,"pacing_timer":1000,"client_version":"3.12"}"#;
/// `iperf3 -c HOST -u`.
const PARAMS_UDP: &str = r#"{"udp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":1,"len":1448,"bandwidth":1048576,"pacing_timer":1000,"client_version":"3.12"}"#;
/// The client's results after a 1-stream test (as sender).
const CLIENT_RESULTS: &str = r#"{"cpu_util_total":1.5190962011339093,"cpu_util_user":0.052503706302296,"cpu_util_system":1.4662745470373563,"sender_has_retransmits":1,"congestion_used":"cubic","streams":[{"id":1,"bytes":1234567,"retransmits":0,"jitter":0,"errors":0,"packets":0,"start_time":0,"end_time":3.000124}]}"#;

fn msg(json: &str) -> Vec<u8> {
    let mut v = (json.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(json.as_bytes());
    v
}

fn control(s: &mut Server, now: u64) -> TestId {
    assert!(s.wants_cookie());
    match s.admit(COOKIE, now) {
        Admit::Control(id) => id,
        other => panic!("not a control connection: {other:?}"),
    }
}

fn stream(s: &mut Server, now: u64) -> (TestId, usize, Dir) {
    assert!(s.wants_cookie());
    match s.admit(COOKIE, now) {
        Admit::Stream { test, index, dir } => (test, index, dir),
        other => panic!("not a stream: {other:?}"),
    }
}

fn sent(o: Out) -> Vec<u8> {
    assert_eq!(o.end, None, "test ended");
    o.send
}

fn error_reply(code: u32, errno: u32) -> Vec<u8> {
    let mut v = vec![state::SERVER_ERROR];
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(&errno.to_be_bytes());
    v
}

/// Splits our results message: the JSON and what follows it.
fn results_of(send: &[u8]) -> (Value, Vec<u8>) {
    let n = u32::from_be_bytes(send[..4].try_into().unwrap()) as usize;
    let v = json::parse(&send[4..4 + n]).expect("our results are JSON");
    (v, send[4 + n..].to_vec())
}

/// An exact integer member.
fn num(v: &Value, k: &str) -> i128 {
    match v.get(k) {
        Some(Value::Num(n)) if n.exact => n.int,
        other => panic!("{k}: {other:?}"),
    }
}

fn streams(v: &Value) -> &[Value] {
    match v.get("streams") {
        Some(Value::Arr(a)) => a,
        other => panic!("streams: {other:?}"),
    }
}

/// Runs a test up to TEST_RUNNING with `params`; returns the id and the streams.
fn start(s: &mut Server, params: &str, now: u64) -> (TestId, Vec<(usize, Dir)>) {
    let id = control(s, now);
    assert_eq!(s.greeting(), [state::PARAM_EXCHANGE]);
    assert_eq!(
        sent(s.control_input(id, &msg(params), now)),
        [state::CREATE_STREAMS]
    );
    let n = s.params(id).unwrap().total_streams();
    let mut st = Vec::new();
    for i in 0..n {
        let (t, index, dir) = stream(s, now);
        assert_eq!((t, index), (id, i));
        assert_eq!(s.stream_cmd(id, index), StreamCmd::Wait);
        st.push((index, dir));
    }
    assert!(!s.wants_cookie(), "all streams are in");
    assert_eq!(
        sent(s.poll_control(id, now)),
        [state::TEST_START, state::TEST_RUNNING]
    );
    for &(i, _) in &st {
        assert_eq!(s.stream_cmd(id, i), StreamCmd::Run);
    }
    (id, st)
}

/// TEST_END, the results exchange and IPERF_DONE; returns our results and the summary.
fn finish(s: &mut Server, id: TestId, now: u64) -> (Value, Summary) {
    assert_eq!(
        sent(s.control_input(id, &[state::TEST_END], now)),
        [state::EXCHANGE_RESULTS]
    );
    let reply = sent(s.control_input(id, &msg(CLIENT_RESULTS), now));
    let (v, rest) = results_of(&reply);
    assert_eq!(rest, [state::DISPLAY_RESULTS]);
    let o = s.control_input(id, &[state::IPERF_DONE], now);
    assert!(o.send.is_empty());
    match o.end {
        Some(End::Done(sum)) => {
            assert!(!s.busy());
            (v, sum)
        }
        other => panic!("not done: {other:?}"),
    }
}

#[test]
fn a_forward_test_reports_the_bytes_the_server_read() {
    let mut s = Server::new(Limits::default());
    let (id, st) = start(&mut s, PARAMS_T3, 10 * SEC);
    assert_eq!(st, [(0, Dir::Receive)]);
    assert_eq!(s.stream_bytes(id, 0, 100_000, 11 * SEC), StreamCmd::Run);
    assert_eq!(s.stream_bytes(id, 0, 23_456, 12 * SEC), StreamCmd::Run);
    let (v, sum) = finish(&mut s, id, 13 * SEC);
    // Every field the 3.12 client's get_results requires.
    for k in [
        "cpu_util_total",
        "cpu_util_user",
        "cpu_util_system",
        "sender_has_retransmits",
    ] {
        num(&v, k);
    }
    assert_eq!(num(&v, "sender_has_retransmits"), -1);
    let ss = streams(&v);
    assert_eq!(ss.len(), 1);
    for k in [
        "id",
        "bytes",
        "retransmits",
        "jitter",
        "errors",
        "packets",
        "start_time",
        "end_time",
    ] {
        num(&ss[0], k);
    }
    assert_eq!(num(&ss[0], "id"), 1);
    assert_eq!(num(&ss[0], "bytes"), 123_456);
    assert_eq!(num(&ss[0], "end_time"), 3);
    assert_eq!(v.get("server_output_text"), None);
    assert_eq!(
        sum,
        Summary {
            received: 123_456,
            sent: 0,
            streams: 1,
            ns: 3 * SEC
        }
    );
    // The streams of the test that ended stop, and count nowhere.
    assert_eq!(s.stream_cmd(id, 0), StreamCmd::Stop);
    assert_eq!(s.stream_bytes(id, 0, 5, 14 * SEC), StreamCmd::Stop);
    // The next client gets a new test.
    let id2 = control(&mut s, 20 * SEC);
    assert_ne!(id, id2);
}

#[test]
fn the_whole_conversation_split_into_single_bytes() {
    let mut s = Server::new(Limits::default());
    let id = control(&mut s, 0);
    let mut got = Vec::new();
    for b in msg(PARAMS_T3) {
        got.extend(sent(s.control_input(id, &[b], 0)));
    }
    assert_eq!(got, [state::CREATE_STREAMS]);
    stream(&mut s, 0);
    assert_eq!(
        sent(s.poll_control(id, 0)),
        [state::TEST_START, state::TEST_RUNNING]
    );
    s.stream_bytes(id, 0, 777, SEC);
    got.clear();
    let mut input = vec![state::TEST_END];
    input.extend(msg(CLIENT_RESULTS));
    for b in input {
        got.extend(sent(s.control_input(id, &[b], 2 * SEC)));
    }
    assert_eq!(got[0], state::EXCHANGE_RESULTS);
    let (v, rest) = results_of(&got[1..]);
    assert_eq!(rest, [state::DISPLAY_RESULTS]);
    assert_eq!(num(&streams(&v)[0], "bytes"), 777);
    // And all of it in one piece: the same answers.
    let mut s = Server::new(Limits::default());
    let id = control(&mut s, 0);
    assert_eq!(
        sent(s.control_input(id, &msg(PARAMS_T3), 0)),
        [state::CREATE_STREAMS]
    );
}

#[test]
fn reverse_with_two_streams_uses_the_clients_stream_ids() {
    let mut s = Server::new(Limits::default());
    let (id, st) = start(&mut s, PARAMS_R_P2, 0);
    assert_eq!(st, [(0, Dir::Send), (1, Dir::Send)]);
    s.stream_bytes(id, 0, 1000, SEC);
    s.stream_bytes(id, 1, 2000, SEC);
    let (v, sum) = finish(&mut s, id, 3 * SEC);
    assert_eq!(num(&v, "sender_has_retransmits"), 0);
    let ss = streams(&v);
    assert_eq!(
        ss.iter()
            .map(|x| (num(x, "id"), num(x, "bytes")))
            .collect::<Vec<_>>(),
        [(1, 1000), (3, 2000)]
    );
    assert_eq!((sum.sent, sum.received, sum.streams), (3000, 0, 2));
    assert_eq!((0..5).map(stream_id).collect::<Vec<_>>(), [1, 3, 4, 5, 6]);
}

#[test]
fn bidir_receives_on_the_first_half_and_sends_on_the_second() {
    let mut s = Server::new(Limits::default());
    let p = PARAMS_T3
        .replace("\"parallel\":1", "\"parallel\":2")
        .replace("\"len\"", "\"bidirectional\":true,\"len\"");
    let (id, st) = start(&mut s, &p, 0);
    assert_eq!(
        st.iter().map(|x| x.1).collect::<Vec<_>>(),
        [Dir::Receive, Dir::Receive, Dir::Send, Dir::Send]
    );
    for i in 0..4 {
        s.stream_bytes(id, i, 10 * (i + 1), SEC);
    }
    let (_, sum) = finish(&mut s, id, 2 * SEC);
    assert_eq!((sum.received, sum.sent), (30, 70));
}

#[test]
fn a_second_client_is_denied_while_a_test_runs() {
    let mut s = Server::new(Limits::default());
    let id = control(&mut s, 0);
    // Before the parameters: busy, no streams expected.
    assert!(!s.wants_cookie());
    assert_eq!(s.admit(OTHER, 0), Admit::Deny);
    sent(s.control_input(id, &msg(PARAMS_R_P2), 0));
    // Setting up: a connection with another cookie is denied, the test's own are streams.
    assert!(s.wants_cookie());
    assert_eq!(s.admit(OTHER, 0), Admit::Deny);
    stream(&mut s, 0);
    assert_eq!(s.admit(OTHER, 0), Admit::Deny);
    stream(&mut s, 0);
    // A third stream with the right cookie is one too many.
    assert!(!s.wants_cookie());
    assert_eq!(s.admit(COOKIE, 0), Admit::Deny);
    sent(s.poll_control(id, 0));
    assert!(!s.wants_cookie());
    assert_eq!(s.admit(COOKIE, 0), Admit::Deny);
    // The denials changed nothing.
    s.stream_bytes(id, 1, 5, SEC);
    let (v, _) = finish(&mut s, id, 2 * SEC);
    assert_eq!(num(&streams(&v)[1], "bytes"), 5);
}

#[test]
fn udp_is_refused_with_an_error_the_client_prints_and_the_server_stays_free() {
    let mut s = Server::new(Limits::default());
    let id = control(&mut s, 0);
    let o = s.control_input(id, &msg(PARAMS_UDP), 0);
    // "unable to start stream listener: Protocol not supported"
    assert_eq!(
        o.send,
        error_reply(ierr::STREAM_LISTEN, errno::EPROTONOSUPPORT)
    );
    assert!(matches!(o.end, Some(End::Refused(ref w)) if w.contains("UDP")));
    assert!(!s.busy());
    let sctp = PARAMS_T3.replace("\"tcp\"", "\"sctp\"");
    let id = control(&mut s, 0);
    let o = s.control_input(id, &msg(&sctp), 0);
    assert_eq!(
        o.send,
        error_reply(ierr::STREAM_LISTEN, errno::EPROTONOSUPPORT)
    );
    // A TCP test works right after.
    let (id, _) = start(&mut s, PARAMS_T3, SEC);
    s.stream_bytes(id, 0, 1, SEC);
    finish(&mut s, id, 2 * SEC);
}

#[test]
fn options_that_cannot_be_honoured_are_refused() {
    let cases: &[(String, u32, u32)] = &[
        (
            PARAMS_R_P2.replace("\"len\"", "\"bandwidth\":1000000,\"len\""),
            ierr::UNIMP,
            0,
        ),
        (
            PARAMS_T3.replace("\"parallel\":1", "\"parallel\":17"),
            ierr::STREAM_LISTEN,
            errno::ENOBUFS,
        ),
        (
            PARAMS_T3.replace("\"parallel\":1", "\"parallel\":9,\"bidirectional\":true"),
            ierr::STREAM_LISTEN,
            errno::ENOBUFS,
        ),
        (
            PARAMS_T3.replace("\"parallel\":1", "\"parallel\":0"),
            ierr::RECV_PARAMS,
            errno::EINVAL,
        ),
        (
            PARAMS_T3.replace("\"time\":3", "\"time\":86401"),
            ierr::DURATION,
            0,
        ),
        (
            PARAMS_T3.replace("\"time\":3", "\"time\":-3"),
            ierr::RECV_PARAMS,
            errno::EINVAL,
        ),
        (
            PARAMS_T3.replace("\"time\":3", "\"time\":\"3\""),
            ierr::RECV_PARAMS,
            errno::EINVAL,
        ),
        (
            PARAMS_T3.replace("\"tcp\":true", "\"authtoken\":\"x\""),
            ierr::AUTH_TEST,
            0,
        ),
        (
            PARAMS_R_P2.replace("\"len\"", "\"bidirectional\":true,\"len\""),
            ierr::REVERSE_BIDIR,
            0,
        ),
        ("[1,2]".to_string(), ierr::RECV_PARAMS, errno::EINVAL),
        ("{\"time\":3".to_string(), ierr::RECV_PARAMS, errno::EINVAL),
        ("".to_string(), ierr::RECV_PARAMS, errno::EINVAL),
    ];
    let mut s = Server::new(Limits::default());
    for (p, code, errno) in cases {
        let id = control(&mut s, 0);
        let o = s.control_input(id, &msg(p), 0);
        assert_eq!(o.send, error_reply(*code, *errno), "{p}");
        assert!(o.end.is_some(), "{p}");
        assert!(!s.busy(), "{p}");
    }
    // -b while the client sends is the client's business; 16 streams are fine.
    for p in [
        PARAMS_T3.replace("\"len\"", "\"bandwidth\":1000000,\"len\""),
        PARAMS_T3.replace("\"parallel\":1", "\"parallel\":16"),
        PARAMS_T3.replace("\"parallel\":1", "\"parallel\":8,\"bidirectional\":true"),
        // Socket options and unknown keys are accepted.
        PARAMS_T3.replace(
            "\"len\"",
            "\"MSS\":1400,\"nodelay\":true,\"window\":65536,\"TOS\":16,\"title\":\"x\",\"congestion\":\"reno\",\"future_key\":[1,{}],\"len\"",
        ),
    ] {
        let id = control(&mut s, 0);
        assert_eq!(
            sent(s.control_input(id, &msg(&p), 0)),
            [state::CREATE_STREAMS],
            "{p}"
        );
        assert!(s.control_closed(id, 0).end.is_some());
    }
}

#[test]
fn a_huge_length_prefix_is_refused_without_buffering() {
    let mut s = Server::new(Limits::default());
    let id = control(&mut s, 0);
    let o = s.control_input(id, &[0xff, 0xff, 0xff, 0xff], 0);
    assert_eq!(o.send, error_reply(ierr::RECV_PARAMS, errno::EMSGSIZE));
    assert!(matches!(o.end, Some(End::Protocol(_))));
    assert!(!s.busy());
    // Just over the limit, too; at the limit it waits for the rest.
    let id = control(&mut s, 0);
    let o = s.control_input(id, &(MAX_JSON as u32 + 1).to_be_bytes(), 0);
    assert!(o.end.is_some());
    let id = control(&mut s, 0);
    assert_eq!(
        sent(s.control_input(id, &(MAX_JSON as u32).to_be_bytes(), 0)),
        []
    );
    // Results with a huge length end the test too.
    s.control_closed(id, 0);
    let (id, _) = start(&mut s, PARAMS_T3, 0);
    sent(s.control_input(id, &[state::TEST_END], SEC));
    let o = s.control_input(id, &[0x7f, 0, 0, 0], SEC);
    assert!(matches!(o.end, Some(End::Protocol(_))));
    assert_eq!(s.stream_cmd(id, 0), StreamCmd::Stop);
    assert!(!s.busy());
}

#[test]
fn bad_results_json_ends_the_test() {
    let mut s = Server::new(Limits::default());
    for bad in ["{\"streams\":[", "[]", "\u{0}"] {
        let (id, _) = start(&mut s, PARAMS_T3, 0);
        sent(s.control_input(id, &[state::TEST_END], SEC));
        let o = s.control_input(id, &msg(bad), SEC);
        assert!(o.send.is_empty());
        assert!(matches!(o.end, Some(End::Protocol(_))), "{bad}");
        assert!(!s.busy());
    }
}

#[test]
fn the_client_vanishing_mid_test_frees_the_server() {
    let mut s = Server::new(Limits::default());
    let (id, _) = start(&mut s, PARAMS_R_P2, 0);
    s.stream_bytes(id, 0, 10, SEC);
    let o = s.control_closed(id, SEC);
    assert!(matches!(o.end, Some(End::ClientGone(_))));
    assert!(!s.busy());
    assert_eq!(s.stream_cmd(id, 0), StreamCmd::Stop);
    assert_eq!(s.stream_cmd(id, 1), StreamCmd::Stop);
    // A new test; the old one's late calls touch nothing.
    let (id2, _) = start(&mut s, PARAMS_T3, 2 * SEC);
    assert_eq!(s.stream_bytes(id, 0, 99, 2 * SEC), StreamCmd::Stop);
    assert!(s
        .control_input(id, &[state::TEST_END], 2 * SEC)
        .end
        .is_some());
    assert!(s.control_closed(id, 2 * SEC).end.is_some());
    assert_eq!(s.next_deadline(id), None);
    assert!(s.busy());
    s.stream_bytes(id2, 0, 1, 3 * SEC);
    let (v, _) = finish(&mut s, id2, 4 * SEC);
    assert_eq!(num(&streams(&v)[0], "bytes"), 1);
}

#[test]
fn the_client_vanishing_at_every_step_frees_the_server() {
    // Closed after 0, 1, 2 ... messages of the conversation.
    for stop_after in 0..6 {
        let mut s = Server::new(Limits::default());
        let id = control(&mut s, 0);
        let steps: [&dyn Fn(&mut Server); 5] = [
            &|s| {
                sent(s.control_input(id, &msg(PARAMS_T3), 0));
            },
            &|s| {
                stream(s, 0);
            },
            &|s| {
                sent(s.poll_control(id, 0));
            },
            &|s| {
                sent(s.control_input(id, &[state::TEST_END], SEC));
            },
            &|s| {
                sent(s.control_input(id, &msg(CLIENT_RESULTS), SEC));
            },
        ];
        for step in steps.iter().take(stop_after) {
            step(&mut s);
        }
        let o = s.control_closed(id, SEC);
        match (stop_after, o.end) {
            (5, Some(End::Done(sum))) => assert_eq!(sum.ns, SEC),
            (5, other) => panic!("closed after the results: {other:?}"),
            (_, Some(End::ClientGone(_))) => {}
            (_, other) => panic!("after {stop_after}: {other:?}"),
        }
        assert!(!s.busy(), "after {stop_after}");
        assert_eq!(s.stream_cmd(id, 0), StreamCmd::Stop);
        assert!(s.wants_cookie());
    }
}

#[test]
fn client_terminate_or_iperf_done_end_the_test_at_any_point() {
    for b in [state::CLIENT_TERMINATE, state::IPERF_DONE] {
        let mut s = Server::new(Limits::default());
        let (id, _) = start(&mut s, PARAMS_T3, 0);
        let o = s.control_input(id, &[b], SEC);
        assert!(matches!(o.end, Some(End::ClientGone(_))));
        assert!(!s.busy());
        // While the streams connect.
        let id = control(&mut s, 0);
        sent(s.control_input(id, &msg(PARAMS_R_P2), 0));
        stream(&mut s, 0);
        let o = s.control_input(id, &[b], SEC);
        assert!(matches!(o.end, Some(End::ClientGone(_))));
        assert_eq!(s.stream_cmd(id, 0), StreamCmd::Stop);
    }
}

#[test]
fn an_unknown_state_byte_ends_the_test() {
    for b in [0u8, 3, 9, 13, 0x80, state::ACCESS_DENIED] {
        let mut s = Server::new(Limits::default());
        let (id, _) = start(&mut s, PARAMS_T3, 0);
        let o = s.control_input(id, &[b], SEC);
        assert!(matches!(o.end, Some(End::Protocol(_))), "{b}");
        assert!(!s.busy());
    }
    // TEST_START is tolerated (iperf3's server ignores it); TEST_END only while running.
    let mut s = Server::new(Limits::default());
    let (id, _) = start(&mut s, PARAMS_T3, 0);
    sent(s.control_input(id, &[state::TEST_START], SEC));
    let id = {
        s.control_closed(id, SEC);
        control(&mut s, 0)
    };
    sent(s.control_input(id, &msg(PARAMS_T3), 0));
    assert!(s.control_input(id, &[state::TEST_END], 0).end.is_some());
    // Something after the results but IPERF_DONE.
    let (id, _) = start(&mut s, PARAMS_T3, 0);
    sent(s.control_input(id, &[state::TEST_END], SEC));
    sent(s.control_input(id, &msg(CLIENT_RESULTS), SEC));
    assert!(matches!(
        s.control_input(id, &[7], SEC).end,
        Some(End::Protocol(_))
    ));
}

#[test]
fn every_wait_has_a_deadline() {
    let l = Limits::default();
    // The parameters never come.
    let mut s = Server::new(l);
    let id = control(&mut s, 0);
    assert_eq!(s.next_deadline(id), Some(l.step_ns));
    assert_eq!(sent(s.poll_control(id, l.step_ns - 1)), []);
    assert!(matches!(
        s.poll_control(id, l.step_ns).end,
        Some(End::TimedOut(_))
    ));
    assert!(!s.busy());
    // A stream never connects: the client is told.
    let id = control(&mut s, 0);
    sent(s.control_input(id, &msg(PARAMS_R_P2), SEC));
    stream(&mut s, 2 * SEC);
    assert_eq!(s.next_deadline(id), Some(SEC + l.step_ns));
    let o = s.poll_control(id, SEC + l.step_ns);
    assert_eq!(o.send, error_reply(ierr::STREAM_ACCEPT, errno::ETIMEDOUT));
    assert!(matches!(o.end, Some(End::TimedOut(_))));
    assert_eq!(s.stream_cmd(id, 0), StreamCmd::Stop);
    // A -t 3 test without TEST_END ends at 3 s + grace, even with data moving.
    let (id, _) = start(&mut s, PARAMS_T3, 0);
    let end = 3 * SEC + l.grace_ns;
    assert_eq!(s.next_deadline(id), Some(end.min(l.idle_ns)));
    let mut t = 0;
    while t < end {
        assert_eq!(s.stream_bytes(id, 0, 1, t), StreamCmd::Run);
        assert_eq!(sent(s.poll_control(id, t)), []);
        t += SEC;
    }
    assert!(matches!(
        s.poll_control(id, end).end,
        Some(End::TimedOut(_))
    ));
    // A -n test (no duration) ends when no byte moved for idle_ns.
    let p = PARAMS_T3
        .replace("\"time\":3", "\"time\":0")
        .replace("\"num\":0", "\"num\":1000000000");
    let (id, _) = start(&mut s, &p, 0);
    s.stream_bytes(id, 0, 1, 5 * SEC);
    assert_eq!(s.next_deadline(id), Some(5 * SEC + l.idle_ns));
    assert_eq!(sent(s.poll_control(id, 5 * SEC + l.idle_ns - 1)), []);
    assert!(matches!(
        s.poll_control(id, 5 * SEC + l.idle_ns).end,
        Some(End::TimedOut("no data moving"))
    ));
    // The client's results never come; then IPERF_DONE never comes (the test still counts).
    let (id, _) = start(&mut s, PARAMS_T3, 0);
    sent(s.control_input(id, &[state::TEST_END], SEC));
    assert!(matches!(
        s.poll_control(id, SEC + l.step_ns).end,
        Some(End::TimedOut(_))
    ));
    let (id, _) = start(&mut s, PARAMS_T3, 0);
    sent(s.control_input(id, &[state::TEST_END], SEC));
    sent(s.control_input(id, &msg(CLIENT_RESULTS), SEC));
    assert!(matches!(
        s.poll_control(id, SEC + l.step_ns).end,
        Some(End::Done(_))
    ));
    assert!(!s.busy());
}

#[test]
fn omitted_seconds_are_not_counted() {
    let mut s = Server::new(Limits::default());
    let p = PARAMS_T3.replace("\"omit\":0", "\"omit\":2");
    let (id, _) = start(&mut s, &p, 10 * SEC);
    // The omit time's end is a deadline (the counts restart then even if no byte moves).
    assert_eq!(s.next_deadline(id), Some(12 * SEC));
    s.stream_bytes(id, 0, 1000, 11 * SEC);
    s.stream_bytes(id, 0, 1000, 12 * SEC - 1);
    assert_eq!(sent(s.poll_control(id, 12 * SEC)), []);
    s.stream_bytes(id, 0, 300, 13 * SEC);
    s.stream_bytes(id, 0, 200, 15 * SEC);
    let (v, sum) = finish(&mut s, id, 15 * SEC);
    assert_eq!(num(&streams(&v)[0], "bytes"), 500);
    assert_eq!(num(&streams(&v)[0], "end_time"), 3);
    assert_eq!((sum.received, sum.ns), (500, 3 * SEC));
    // Without a poll at the omit time, the first byte after it restarts the counts.
    let (id, _) = start(&mut s, &p, 0);
    s.stream_bytes(id, 0, 1000, SEC);
    s.stream_bytes(id, 0, 7, 3 * SEC);
    let (v, _) = finish(&mut s, id, 5 * SEC);
    assert_eq!(num(&streams(&v)[0], "bytes"), 7);
}

#[test]
fn server_output_is_sent_when_asked() {
    let mut s = Server::new(Limits::default());
    let p = PARAMS_R_P2.replace("\"len\"", "\"get_server_output\":1,\"len\"");
    let (id, _) = start(&mut s, &p, 0);
    s.stream_bytes(id, 0, 1_250_000, SEC);
    s.stream_bytes(id, 1, 1_250_000, SEC);
    let (v, _) = finish(&mut s, id, 2 * SEC);
    let Some(Value::Str(text)) = v.get("server_output_text") else {
        panic!("no server output: {v:?}")
    };
    assert!(
        text.contains("[  1] sent 1250000 bytes in 2.00 s = 5.0 Mbit/s"),
        "{text}"
    );
    assert!(text.contains("[  3] sent 1250000 bytes"), "{text}");
    assert!(
        text.contains("[SUM] sent 2500000 bytes in 2.00 s = 10.0 Mbit/s"),
        "{text}"
    );
    assert!(!text.contains("received"), "{text}");
}

#[test]
fn len_sets_the_write_size_within_bounds() {
    let mut s = Server::new(Limits::default());
    for (len, want) in [
        ("\"len\":131072,", SEND_CHUNK),
        ("\"len\":1000,", 1000),
        ("\"len\":0,", SEND_CHUNK),
        ("", SEND_CHUNK),
    ] {
        let p = PARAMS_T3.replace("\"len\":131072,", len);
        let id = control(&mut s, 0);
        sent(s.control_input(id, &msg(&p), 0));
        assert_eq!(s.params(id).unwrap().len, want, "{p}");
        s.control_closed(id, 0);
    }
}
