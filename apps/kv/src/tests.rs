//! Session-level tests: replies checked byte for byte against what Redis 7 answers, pipelining
//! and splitting, expiry on a fake clock, effect replay, malformed input, a randomized stress
//! against a model.

use crate::cmd::Engine;
use crate::resp::Limits;
use crate::session::Session;
use crate::store::Effect;
use alloc::string::String;
use alloc::vec::Vec;
use alloc::{format, vec};
use std::collections::HashMap;

/// Encodes a request as a RESP array of bulk strings.
fn req(args: &[&[u8]]) -> Vec<u8> {
    let mut o = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        o.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        o.extend_from_slice(a);
        o.extend_from_slice(b"\r\n");
    }
    o
}

/// A test server: one engine, one session, a fake clock.
struct T {
    e: Engine,
    s: Session,
    now: u64,
}

impl T {
    fn new() -> Self {
        T {
            e: Engine::new(),
            s: Session::default(),
            now: 1_000_000,
        }
    }
    /// Runs one command given as space-separated words, returns the reply as a string.
    fn q(&mut self, cmd: &str) -> String {
        let args: Vec<&[u8]> = cmd.split(' ').map(str::as_bytes).collect();
        self.raw(&req(&args))
    }
    fn raw(&mut self, bytes: &[u8]) -> String {
        let mut out = Vec::new();
        self.s.feed(&mut self.e, bytes, self.now, &mut out);
        String::from_utf8(out).unwrap()
    }
}

#[test]
fn ping_echo_and_case_insensitivity() {
    let mut t = T::new();
    assert_eq!(t.q("PING"), "+PONG\r\n");
    assert_eq!(t.q("ping hello"), "$5\r\nhello\r\n");
    assert_eq!(
        t.q("PiNg a b"),
        "-ERR wrong number of arguments for 'ping' command\r\n"
    );
    assert_eq!(t.q("ECHO hi"), "$2\r\nhi\r\n");
    assert_eq!(
        t.q("echo"),
        "-ERR wrong number of arguments for 'echo' command\r\n"
    );
    assert_eq!(t.raw(b"PING\r\n"), "+PONG\r\n");
    assert_eq!(t.raw(b"ping\n"), "+PONG\r\n");
    assert!(!t.s.closed());
}

#[test]
fn unknown_command_format_matches_redis7() {
    let mut t = T::new();
    assert_eq!(
        t.q("foo"),
        "-ERR unknown command 'foo', with args beginning with: \r\n"
    );
    assert_eq!(
        t.q("foo a b"),
        "-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n"
    );
    // Arguments are cut once 128 bytes of them are quoted.
    let long = "x".repeat(200);
    let r = t.q(&format!("foo {long} y"));
    assert_eq!(
        r,
        format!(
            "-ERR unknown command 'foo', with args beginning with: '{}' \r\n",
            "x".repeat(128)
        )
    );
    // A name with CR/LF cannot break the reply framing.
    assert_eq!(
        t.raw(&req(&[b"a\r\nb"])),
        "-ERR unknown command 'a  b', with args beginning with: \r\n"
    );
}

#[test]
fn get_set_and_options() {
    let mut t = T::new();
    assert_eq!(t.q("GET k"), "$-1\r\n");
    assert_eq!(t.q("SET k v"), "+OK\r\n");
    assert_eq!(t.q("GET k"), "$1\r\nv\r\n");
    assert_eq!(
        t.q("GET"),
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(
        t.q("SET k"),
        "-ERR wrong number of arguments for 'set' command\r\n"
    );
    assert_eq!(t.q("SET k v2 NX"), "$-1\r\n");
    assert_eq!(t.q("SET n v XX"), "$-1\r\n");
    assert_eq!(t.q("SET n v NX"), "+OK\r\n");
    assert_eq!(t.q("SET k v2 XX GET"), "$1\r\nv\r\n");
    assert_eq!(t.q("SET new x GET"), "$-1\r\n");
    assert_eq!(t.q("SET k v NX XX"), "-ERR syntax error\r\n");
    assert_eq!(t.q("SET k v EX 10 PX 10"), "-ERR syntax error\r\n");
    assert_eq!(t.q("SET k v EX"), "-ERR syntax error\r\n");
    assert_eq!(t.q("SET k v FOO"), "-ERR syntax error\r\n");
    assert_eq!(t.q("SET k v EX 10 KEEPTTL"), "-ERR syntax error\r\n");
    assert_eq!(
        t.q("SET k v EX abc"),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        t.q("SET k v EX 0"),
        "-ERR invalid expire time in 'set' command\r\n"
    );
    assert_eq!(
        t.q("SET k v PX -5"),
        "-ERR invalid expire time in 'set' command\r\n"
    );
    assert_eq!(
        t.q("SET k v EX 9223372036854775807"),
        "-ERR invalid expire time in 'set' command\r\n"
    );
    assert_eq!(
        t.q("SET k v PX 9223372036854775807"),
        "-ERR invalid expire time in 'set' command\r\n"
    );
    // Options are all parsed before the expire time is checked.
    assert_eq!(t.q("SET k v EX abc FOO"), "-ERR syntax error\r\n");
    assert_eq!(t.q("SET k v ex 10"), "+OK\r\n");
    assert_eq!(t.q("TTL k"), ":10\r\n");
    assert_eq!(t.q("SET k w KEEPTTL"), "+OK\r\n");
    assert_eq!(t.q("PTTL k"), ":10000\r\n");
    assert_eq!(t.q("SET k w"), "+OK\r\n");
    assert_eq!(t.q("TTL k"), ":-1\r\n");
    assert_eq!(t.q("GETSET k z"), "$1\r\nw\r\n");
    assert_eq!(t.q("GETSET nope z"), "$-1\r\n");
    assert_eq!(t.q("GETDEL k"), "$1\r\nz\r\n");
    assert_eq!(t.q("GETDEL k"), "$-1\r\n");
    // Binary-safe values.
    assert_eq!(t.raw(&req(&[b"SET", b"b", b"\x00\r\n\xff"])), "+OK\r\n");
    let mut out = Vec::new();
    t.s.feed(&mut t.e, &req(&[b"GET", b"b"]), t.now, &mut out);
    assert_eq!(out, b"$4\r\n\x00\r\n\xff\r\n");
}

#[test]
fn del_exists_strlen_append_mget_mset_type() {
    let mut t = T::new();
    assert_eq!(t.q("MSET a 1 b 2 c 3"), "+OK\r\n");
    assert_eq!(
        t.q("MSET a 1 b"),
        "-ERR wrong number of arguments for 'mset' command\r\n"
    );
    assert_eq!(t.q("MGET a x c"), "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n3\r\n");
    assert_eq!(t.q("EXISTS a a x"), ":2\r\n");
    assert_eq!(t.q("DEL a x b"), ":2\r\n");
    assert_eq!(
        t.q("DEL"),
        "-ERR wrong number of arguments for 'del' command\r\n"
    );
    assert_eq!(t.q("APPEND c 45"), ":3\r\n");
    assert_eq!(t.q("APPEND d xy"), ":2\r\n");
    assert_eq!(t.q("STRLEN c"), ":3\r\n");
    assert_eq!(t.q("STRLEN nope"), ":0\r\n");
    assert_eq!(t.q("TYPE c"), "+string\r\n");
    assert_eq!(t.q("TYPE nope"), "+none\r\n");
    assert_eq!(t.q("DBSIZE"), ":2\r\n");
    assert_eq!(t.q("FLUSHDB"), "+OK\r\n");
    assert_eq!(t.q("DBSIZE"), ":0\r\n");
    assert_eq!(t.q("FLUSHALL ASYNC"), "+OK\r\n");
    assert_eq!(t.q("FLUSHALL NOW"), "-ERR syntax error\r\n");
}

#[test]
fn incr_family_and_overflow() {
    let mut t = T::new();
    assert_eq!(t.q("INCR n"), ":1\r\n");
    assert_eq!(t.q("INCRBY n 10"), ":11\r\n");
    assert_eq!(t.q("DECR n"), ":10\r\n");
    assert_eq!(t.q("DECRBY n 20"), ":-10\r\n");
    assert_eq!(t.q("GET n"), "$3\r\n-10\r\n");
    assert_eq!(
        t.q("INCRBY n x"),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        t.q("INCRBY n 1.5"),
        "-ERR value is not an integer or out of range\r\n"
    );
    t.q("SET s abc");
    assert_eq!(
        t.q("INCR s"),
        "-ERR value is not an integer or out of range\r\n"
    );
    t.q("SET s 007");
    assert_eq!(
        t.q("INCR s"),
        "-ERR value is not an integer or out of range\r\n"
    );
    t.q("SET m 9223372036854775807");
    assert_eq!(
        t.q("INCR m"),
        "-ERR increment or decrement would overflow\r\n"
    );
    assert_eq!(t.q("GET m"), "$19\r\n9223372036854775807\r\n");
    t.q("SET m -9223372036854775808");
    assert_eq!(
        t.q("DECR m"),
        "-ERR increment or decrement would overflow\r\n"
    );
    assert_eq!(
        t.q("DECRBY z -9223372036854775808"),
        "-ERR decrement would overflow\r\n"
    );
    assert_eq!(
        t.q("INCR"),
        "-ERR wrong number of arguments for 'incr' command\r\n"
    );
    // INCR keeps the TTL, as in Redis.
    t.q("SET e 5 EX 100");
    assert_eq!(t.q("INCR e"), ":6\r\n");
    assert_eq!(t.q("TTL e"), ":100\r\n");
}

#[test]
fn expiry_with_a_fake_clock() {
    let mut t = T::new();
    assert_eq!(t.q("SET k v PX 1500"), "+OK\r\n");
    assert_eq!(t.q("TTL k"), ":2\r\n"); // 1.5 s rounds to 2, as Redis
    assert_eq!(t.q("PTTL k"), ":1500\r\n");
    t.now += 1499;
    assert_eq!(t.q("GET k"), "$1\r\nv\r\n");
    t.now += 1;
    assert_eq!(t.q("GET k"), "$-1\r\n");
    assert_eq!(t.q("TTL k"), ":-2\r\n");
    assert_eq!(t.q("EXISTS k"), ":0\r\n");
    assert_eq!(t.e.store().len(), 0, "lazy expiry removed it");
    assert_eq!(
        t.e.take_effects().last(),
        Some(&Effect::Del { key: b"k".to_vec() })
    );

    assert_eq!(t.q("EXPIRE nope 10"), ":0\r\n");
    t.q("SET k v");
    assert_eq!(t.q("TTL k"), ":-1\r\n");
    assert_eq!(t.q("EXPIRE k 10"), ":1\r\n");
    assert_eq!(t.q("TTL k"), ":10\r\n");
    assert_eq!(t.q("PEXPIRE k 2500"), ":1\r\n");
    assert_eq!(t.q("PTTL k"), ":2500\r\n");
    assert_eq!(t.q("PERSIST k"), ":1\r\n");
    assert_eq!(t.q("PERSIST k"), ":0\r\n");
    assert_eq!(t.q("PERSIST nope"), ":0\r\n");
    assert_eq!(t.q("TTL k"), ":-1\r\n");
    assert_eq!(
        t.q("EXPIRE k abc"),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        t.q("EXPIRE k 9223372036854775807"),
        "-ERR invalid expire time in 'expire' command\r\n"
    );
    assert_eq!(
        t.q("PEXPIRE k 9223372036854775807"),
        "-ERR invalid expire time in 'pexpire' command\r\n"
    );
    assert_eq!(t.q("EXPIRE k 10 NX"), "-ERR Unsupported option NX\r\n");
    assert_eq!(
        t.q("EXPIRE k"),
        "-ERR wrong number of arguments for 'expire' command\r\n"
    );
    // A time in the past deletes the key.
    assert_eq!(t.q("EXPIRE k -1"), ":1\r\n");
    assert_eq!(t.q("EXISTS k"), ":0\r\n");

    // The active sweep removes keys nobody reads.
    for i in 0..100 {
        t.q(&format!(
            "SET t{i} v PX {}",
            if i % 2 == 0 { 10 } else { 100_000 }
        ));
    }
    assert_eq!(
        t.q("INFO keyspace"),
        "$48\r\n# Keyspace\r\ndb0:keys=100,expires=100,avg_ttl=0\r\n\r\n"
    );
    t.now += 10;
    t.e.take_effects();
    let mut removed = 0;
    for _ in 0..10 {
        removed += t.e.expire_some(t.now, 20);
    }
    assert_eq!(removed, 50);
    assert_eq!(t.e.take_effects().len(), 50);
    assert_eq!(t.q("DBSIZE"), ":50\r\n");
}

#[test]
fn keys_and_scan() {
    let mut t = T::new();
    t.q("MSET user:1 a user:2 b other c hallo d hello e");
    let mut keys: Vec<String> = t
        .q("KEYS user:*")
        .split("\r\n")
        .filter(|l| l.starts_with("user"))
        .map(String::from)
        .collect();
    keys.sort();
    assert_eq!(keys, ["user:1", "user:2"]);
    assert!(t.q("KEYS h[ae]llo").starts_with("*2\r\n"));
    assert_eq!(t.q("KEYS nomatch*"), "*0\r\n");
    assert_eq!(
        t.q("KEYS"),
        "-ERR wrong number of arguments for 'keys' command\r\n"
    );
    // One SCAN with a big COUNT returns everything and cursor 0.
    let r = t.q("SCAN 0 MATCH user:* COUNT 100");
    assert!(r.starts_with("*2\r\n$1\r\n0\r\n*2\r\n"), "{r}");
    assert_eq!(t.q("SCAN abc"), "-ERR invalid cursor\r\n");
    assert_eq!(t.q("SCAN 0 COUNT 0"), "-ERR syntax error\r\n");
    assert_eq!(
        t.q("SCAN 0 COUNT x"),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(t.q("SCAN 0 MATCH"), "-ERR syntax error\r\n");
    assert_eq!(t.q("SCAN 0 TYPE list"), "*2\r\n$1\r\n0\r\n*0\r\n");
    // Stepping with COUNT 2 visits each key once.
    let mut cursor = String::from("0");
    let mut seen = Vec::new();
    loop {
        let r = t.q(&format!("SCAN {cursor} COUNT 2"));
        let lines: Vec<&str> = r.split("\r\n").collect();
        cursor = lines[2].into();
        seen.extend(
            lines[4..]
                .iter()
                .filter(|l| !l.is_empty() && !l.starts_with('$'))
                .map(|l| String::from(*l)),
        );
        if cursor == "0" {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, ["hallo", "hello", "other", "user:1", "user:2"]);
}

#[test]
fn server_and_connection_commands() {
    let mut t = T::new();
    assert_eq!(t.q("SELECT 0"), "+OK\r\n");
    assert_eq!(t.q("SELECT 1"), "-ERR DB index is out of range\r\n");
    assert_eq!(
        t.q("SELECT x"),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(t.q("COMMAND"), "*0\r\n");
    assert_eq!(t.q("COMMAND DOCS"), "*0\r\n");
    assert!(t.q("COMMAND COUNT").starts_with(':'));
    assert_eq!(
        t.q("COMMAND FOO"),
        "-ERR unknown subcommand 'FOO'. Try COMMAND HELP.\r\n"
    );
    assert_eq!(t.q("CONFIG GET save"), "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    assert_eq!(
        t.q("CONFIG GET appendonly"),
        "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
    );
    assert_eq!(t.q("CONFIG GET nosuch"), "*0\r\n");
    assert_eq!(
        t.q("CONFIG GET"),
        "-ERR wrong number of arguments for 'config|get' command\r\n"
    );
    assert_eq!(
        t.q("CONFIG SET save x"),
        "-ERR unknown subcommand 'SET'. Try CONFIG HELP.\r\n"
    );
    assert_eq!(t.q("CLIENT GETNAME"), "$-1\r\n");
    assert_eq!(t.q("CLIENT SETNAME bob"), "+OK\r\n");
    assert_eq!(t.q("CLIENT GETNAME"), "$3\r\nbob\r\n");
    assert_eq!(
        t.raw(&req(&[b"CLIENT", b"SETNAME", b"a b"])),
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    );
    assert_eq!(t.s.client().name, b"bob");
    // Names are per connection.
    let mut other = Session::default();
    let mut out = Vec::new();
    other.feed(&mut t.e, &req(&[b"CLIENT", b"GETNAME"]), 0, &mut out);
    assert_eq!(out, b"$-1\r\n");
    let info = t.q("INFO");
    assert!(
        info.contains("# Server\r\nredis_version:7.0.0\r\n"),
        "{info}"
    );
    assert!(info.contains("# Keyspace\r\n"));
    assert!(t.q("INFO server").contains("redis_version:"));
    assert_eq!(t.q("QUIT"), "+OK\r\n");
    assert!(t.s.closed());
    assert_eq!(t.q("PING"), "", "nothing after QUIT");
}

#[test]
fn quit_stops_a_pipeline() {
    let mut t = T::new();
    assert_eq!(t.raw(b"PING\r\nQUIT\r\nSET a b\r\n"), "+PONG\r\n+OK\r\n");
    assert!(t.s.closed());
    assert_eq!(t.e.store().len(), 0);
}

fn pipelined_stream() -> Vec<u8> {
    let mut s = Vec::new();
    for i in 0..50 {
        s.extend(req(&[
            b"SET",
            format!("k{i}").as_bytes(),
            format!("value-{i}\r\n").as_bytes(),
        ]));
        s.extend(req(&[b"INCR", b"counter"]));
        s.extend(format!("GET k{i}\r\n").as_bytes());
        s.extend(req(&[b"MGET", b"k0", format!("k{i}").as_bytes()]));
    }
    s.extend(b"PING\r\nDBSIZE\r\n");
    s
}

#[test]
fn byte_at_a_time_equals_one_chunk() {
    let stream = pipelined_stream();
    let mut whole = T::new();
    let expect = whole.raw(&stream);
    assert_eq!(expect.matches("+OK\r\n").count(), 50);
    assert!(expect.ends_with("+PONG\r\n:51\r\n"));
    let mut t = T::new();
    let mut got = String::new();
    for b in &stream {
        got += &t.raw(core::slice::from_ref(b));
    }
    assert_eq!(got, expect);
    // And at random cut points.
    let mut x = 88172645463325252u64;
    for _ in 0..20 {
        let mut t = T::new();
        let mut got = String::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            x = xorshift(x);
            let n = 1 + (x as usize % 40).min(rest.len() - 1);
            got += &t.raw(&rest[..n]);
            rest = &rest[n..];
        }
        assert_eq!(got, expect);
    }
}

#[test]
fn malformed_input_errors_and_closes() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\n$99999999999\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$2000000\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$-5\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*9999999\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*-\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2\r\n$1\r\na\r\n:1\r\n",
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*1\r\n$1\r\nab\r\n",
            "-ERR Protocol error: expected CRLF after bulk string\r\n",
        ),
    ];
    for (input, reply) in cases {
        let mut t = T::new();
        // A good command first: its reply comes out before the error.
        let mut bytes = b"PING\r\n".to_vec();
        bytes.extend_from_slice(input);
        bytes.extend_from_slice(b"PING\r\n");
        assert_eq!(t.raw(&bytes), format!("+PONG\r\n{reply}"), "{input:?}");
        assert!(t.s.closed());
        assert_eq!(t.raw(b"PING\r\n"), "");
    }
    // Redis skips empty and negative multibulk counts.
    let mut t = T::new();
    assert_eq!(t.raw(b"*0\r\n*-1\r\nPING\r\n"), "+PONG\r\n");
    let mut t = T::new();
    assert_eq!(
        t.raw(&vec![b'x'; 70_000]),
        "-ERR Protocol error: too big inline request\r\n"
    );
    assert!(t.s.closed());
}

#[test]
fn binary_garbage_never_panics() {
    let mut x = 0x2545F4914F6CDD1Du64;
    for _ in 0..3000 {
        let mut e = Engine::new();
        let mut s = Session::new(Limits {
            max_bulk: 100,
            max_multibulk: 16,
            max_request: 1000,
        });
        let mut out = Vec::new();
        for _ in 0..4 {
            let mut chunk = Vec::new();
            x = xorshift(x);
            for _ in 0..(x % 64) {
                x = xorshift(x);
                let alphabet: &[u8] = b"*$\r\n-0123456789 SETGETINCRxyz\x00\xff";
                chunk.push(if x & 1 == 0 {
                    alphabet[(x >> 8) as usize % alphabet.len()]
                } else {
                    (x >> 16) as u8
                });
            }
            s.feed(&mut e, &chunk, 0, &mut out);
        }
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// A random command over few keys, as RESP.
fn random_command(x: &mut u64) -> Vec<Vec<u8>> {
    let mut r = || {
        *x = xorshift(*x);
        *x
    };
    let key = format!("k{}", r() % 8).into_bytes();
    let val = format!("{}", (r() % 30) as i64 - 10).into_bytes();
    let s = |s: &str| s.as_bytes().to_vec();
    match r() % 16 {
        0 => vec![s("SET"), key, val],
        1 => vec![
            s("SET"),
            key,
            val,
            s("PX"),
            format!("{}", 1 + r() % 50).into_bytes(),
        ],
        2 => vec![s("SET"), key, val, s("NX")],
        3 => vec![s("SET"), key, val, s("XX"), s("KEEPTTL")],
        4 => vec![s("DEL"), key],
        5 => vec![s("INCRBY"), key, val],
        6 => vec![s("APPEND"), key, val],
        7 => vec![s("PEXPIRE"), key, format!("{}", r() % 60).into_bytes()],
        8 => vec![s("PERSIST"), key],
        9 => vec![s("GETDEL"), key],
        10 => vec![s("GETSET"), key, val],
        11 => vec![
            s("MSET"),
            key,
            val.clone(),
            format!("k{}", r() % 8).into_bytes(),
            val,
        ],
        12 if r() % 10 == 0 => vec![s("FLUSHDB")],
        13 => vec![s("GET"), key],
        14 => vec![s("EXPIRE"), key, s("-1")],
        _ => vec![s("DECR"), key],
    }
}

#[test]
fn replaying_effects_rebuilds_the_state() {
    let mut x = 0xdeadbeefcafef00du64;
    for _ in 0..50 {
        let mut e = Engine::new();
        let mut client = Default::default();
        let mut log: Vec<Effect> = Vec::new();
        let mut now = 1000;
        for step in 0..300 {
            now += xorshift(x) % 5;
            x = xorshift(x);
            let cmd = random_command(&mut x);
            let mut out = Vec::new();
            e.execute(&mut client, &cmd, now, &mut out);
            if step % 7 == 0 {
                e.expire_some(now, 3);
            }
            log.extend(e.take_effects());
            let replayed = Engine::from_effects(&log);
            assert_eq!(replayed.store().snapshot(now), e.store().snapshot(now));
            assert_eq!(replayed.store().expires(), e.store().expires());
        }
    }
}

#[test]
fn randomized_against_a_model() {
    // Model: key -> (value, expire_at); replies compared for GET/INCRBY/DEL/EXISTS/TTL.
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut t = T::new();
    let mut model: HashMap<Vec<u8>, (Vec<u8>, Option<u64>)> = HashMap::new();
    for _ in 0..20_000 {
        x = xorshift(x);
        t.now += x % 3;
        let now = t.now;
        model.retain(|_, (_, at)| at.is_none_or(|at| at > now));
        x = xorshift(x);
        let key = format!("k{}", x % 16);
        x = xorshift(x);
        let n = (x % 100) as i64 - 50;
        let (cmd, expect) = match x % 7 {
            0 => {
                model.insert(key.clone().into_bytes(), (n.to_string().into_bytes(), None));
                (format!("SET {key} {n}"), String::from("+OK\r\n"))
            }
            1 => {
                let ms = 1 + (x >> 8) % 20;
                model.insert(
                    key.clone().into_bytes(),
                    (n.to_string().into_bytes(), Some(now + ms)),
                );
                (format!("SET {key} {n} PX {ms}"), String::from("+OK\r\n"))
            }
            2 => {
                let expect = match model.get(key.as_bytes()) {
                    Some((v, _)) => format!(
                        "${}\r\n{}\r\n",
                        v.len(),
                        String::from_utf8(v.clone()).unwrap()
                    ),
                    None => String::from("$-1\r\n"),
                };
                (format!("GET {key}"), expect)
            }
            3 => {
                let entry = model
                    .entry(key.clone().into_bytes())
                    .or_insert((b"0".to_vec(), None));
                let cur: i64 = String::from_utf8(entry.0.clone()).unwrap().parse().unwrap();
                entry.0 = (cur + n).to_string().into_bytes();
                (format!("INCRBY {key} {n}"), format!(":{}\r\n", cur + n))
            }
            4 => {
                let had = model.remove(key.as_bytes()).is_some();
                (format!("DEL {key}"), format!(":{}\r\n", had as i64))
            }
            5 => {
                let expect = match model.get(key.as_bytes()) {
                    None => -2,
                    Some((_, None)) => -1,
                    Some((_, Some(at))) => (at - now) as i64,
                };
                (format!("PTTL {key}"), format!(":{expect}\r\n"))
            }
            _ => {
                t.e.expire_some(now, 4);
                (String::from("DBSIZE"), String::new())
            }
        };
        let got = t.q(&cmd);
        if !expect.is_empty() {
            assert_eq!(got, expect, "{cmd}");
        }
    }
    let now = t.now;
    model.retain(|_, (_, at)| at.is_none_or(|at| at > now));
    let mut want: Vec<_> = model.into_iter().map(|(k, (v, at))| (k, v, at)).collect();
    want.sort();
    assert_eq!(t.e.store().snapshot(now), want);
}

#[test]
fn replies_stop_at_the_output_high_water_and_resume() {
    use crate::session::OUTPUT_HIGH_WATER;
    let mut t = T::new();
    let big = "v".repeat(100_000);
    t.q(&format!("SET big {big}"));
    let mut stream = Vec::new();
    for _ in 0..10 {
        stream.extend(req(&[b"GET", b"big"]));
    }
    let mut out = Vec::new();
    t.s.feed(&mut t.e, &stream, t.now, &mut out);
    let one = 100_000 + 11; // "$100000\r\n" + value + "\r\n"
    assert_eq!(
        out.len(),
        one * OUTPUT_HIGH_WATER.div_ceil(one),
        "stopped at the high water"
    );
    assert!(t.s.pending() > 0);
    let mut total = out.len();
    while t.s.pending() > 0 {
        out.clear();
        t.s.feed(&mut t.e, &[], t.now, &mut out);
        total += out.len();
    }
    assert_eq!(total, one * 10);
}
