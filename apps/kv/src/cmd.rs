//! The command engine: Redis's string commands and the connection/server commands that
//! redis-cli and redis-benchmark send, with Redis's arity rules and error replies.
//!
//! [`Engine::execute`] runs one request against the [`Store`], appends its reply to `out`,
//! and records every change as [`Effect`]s, taken with [`Engine::take_effects`]: a durable
//! caller persists those before sending the replies. Names are case-insensitive.

use crate::glob;
use crate::resp::{self, parse_i64};
use crate::store::{Effect, HashKey, OnDisk, Store, NO_LOC};
use alloc::boxed::Box;
use alloc::format;
use alloc::vec::Vec;

/// What a command does to the keyspace, for a [`Journal`]'s admission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Reads only (it may still delete a key it finds expired).
    Read,
    /// Adds or changes values (SET, INCR, APPEND, EXPIRE, ...).
    Write,
    /// Only removes keys (DEL, GETDEL, FLUSHDB): allowed on a full disk, since it makes room.
    Delete,
}

/// Where a durable engine's changes go: a log. See [`Engine::durable`].
pub trait Journal {
    /// Asked before a `Write` or `Delete` command runs, with a bound on the bytes it may log:
    /// `Err(message)` refuses the command with that error reply (e.g. the disk is full).
    fn admit(&mut self, class: Class, bytes: usize) -> Result<(), &'static str>;
    /// Logs one effect (in order); returns where a `Set`'s record is ([`NO_LOC`] for others).
    fn append(&mut self, effect: &Effect) -> u64;
    /// The value record at `at.loc` is dead (its key was replaced, deleted or flushed).
    fn release(&mut self, at: OnDisk);
}

/// Per-connection state the commands see.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Client {
    /// The name set by `CLIENT SETNAME` (empty: none).
    pub name: Vec<u8>,
}

/// What the connection does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next request.
    Continue,
    /// Send what is queued, then close (QUIT).
    Close,
    /// The command was not run: it reads a value that is only on disk. Load it
    /// ([`Engine::load`]) and run the command again.
    Fetch(OnDisk),
}

type Handler = fn(&mut Engine, &mut Client, &[Vec<u8>], u64, &mut Vec<u8>) -> Flow;

/// One command: name (lowercase), Redis arity (`n`: exactly n arguments counting the name;
/// `-n`: at least n), handler.
struct Command {
    name: &'static str,
    arity: i32,
    run: Handler,
}

const fn c(name: &'static str, arity: i32, run: Handler) -> Command {
    Command { name, arity, run }
}

/// The command table.
static COMMANDS: &[Command] = &[
    c("ping", -1, ping),
    c("echo", 2, echo),
    c("get", 2, get),
    c("set", -3, set),
    c("getset", 3, getset),
    c("getdel", 2, getdel),
    c("del", -2, del),
    c("unlink", -2, del),
    c("exists", -2, exists),
    c("incr", 2, incr),
    c("decr", 2, decr),
    c("incrby", 3, incrby),
    c("decrby", 3, decrby),
    c("append", 3, append),
    c("strlen", 2, strlen),
    c("mget", -2, mget),
    c("mset", -3, mset),
    c("expire", -3, expire),
    c("pexpire", -3, pexpire),
    c("ttl", 2, ttl),
    c("pttl", 2, pttl),
    c("persist", 2, persist),
    c("keys", 2, keys),
    c("scan", -2, scan),
    c("dbsize", 1, dbsize),
    c("flushdb", -1, flush),
    c("flushall", -1, flush),
    c("type", 2, type_),
    c("select", 2, select),
    c("info", -1, info),
    c("command", -1, command),
    c("config", -2, config),
    c("client", -2, client),
    c("quit", -1, quit),
];

/// The server version INFO reports (redis-cli and redis-benchmark only look at the major).
pub const REDIS_VERSION: &str = "7.0.0";

/// The keyspace plus the effects of the commands run since the last [`Engine::take_effects`]
/// (or, when durable, the [`Journal`] they go to).
#[derive(Default)]
pub struct Engine {
    store: Store,
    effects: Vec<Effect>,
    journal: Option<Box<dyn Journal>>,
    /// Commands executed, for INFO.
    processed: u64,
    /// Extra `name:value` lines for INFO's persistence section.
    persistence: Vec<(&'static str, alloc::string::String)>,
}

impl core::fmt::Debug for Engine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("keys", &self.store.len())
            .field("durable", &self.journal.is_some())
            .finish()
    }
}

/// Which arguments of a command are keys whose values it reads.
fn reads_values(name: &str, argv: &[Vec<u8>]) -> &'static [core::ops::RangeFrom<usize>] {
    match name {
        "get" | "getset" | "getdel" | "append" | "incr" | "decr" | "incrby" | "decrby" => &[1..],
        "set" if argv[3..].iter().any(|a| eq(a, "get")) => &[1..],
        "mget" => &[1..],
        _ => &[],
    }
}

fn class(name: &str) -> Class {
    match name {
        "set" | "getset" | "append" | "incr" | "decr" | "incrby" | "decrby" | "mset" | "expire"
        | "pexpire" | "persist" => Class::Write,
        "del" | "unlink" | "getdel" | "flushdb" | "flushall" => Class::Delete,
        _ => Class::Read,
    }
}

fn err(out: &mut Vec<u8>, msg: &str) -> Flow {
    resp::error(out, msg.as_bytes());
    Flow::Continue
}

fn ok(out: &mut Vec<u8>) -> Flow {
    resp::simple(out, b"OK");
    Flow::Continue
}

fn int(out: &mut Vec<u8>, n: i64) -> Flow {
    resp::integer(out, n);
    Flow::Continue
}

const NOT_INT: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

impl Engine {
    /// An empty keyspace.
    pub fn new() -> Self {
        Engine::default()
    }

    /// An empty keyspace whose index hashes under `key` (see [`HashKey`]).
    pub fn with_hash_key(key: HashKey) -> Self {
        Engine {
            store: Store::with_hash_key(key),
            ..Engine::default()
        }
    }

    /// A durable engine over `store` (rebuilt from the log): every effect goes to `journal`
    /// before it is applied, and none is kept for [`Engine::take_effects`].
    pub fn durable(store: Store, journal: Box<dyn Journal>) -> Self {
        Engine {
            store,
            journal: Some(journal),
            ..Engine::default()
        }
    }

    /// The keyspace, for the durable layer's compaction and eviction.
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Lines INFO shows in its `# Persistence` section (`name`, value).
    pub fn set_persistence_info(&mut self, lines: Vec<(&'static str, alloc::string::String)>) {
        self.persistence = lines;
    }

    /// Puts a value read back from disk into memory (see [`Flow::Fetch`]); false if the key's
    /// value changed or moved meanwhile (then run the command again: it asks anew).
    pub fn load(&mut self, key: &[u8], loc: u64, value: &[u8]) -> bool {
        self.store.load(key, loc, value)
    }

    /// A keyspace rebuilt from logged effects (replayed in order).
    pub fn from_effects<'a>(effects: impl IntoIterator<Item = &'a Effect>) -> Self {
        let mut e = Engine::new();
        for eff in effects {
            e.store.apply(eff);
        }
        e
    }

    /// The keyspace, read-only.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The effects recorded since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        core::mem::take(&mut self.effects)
    }

    /// Active expiry: see [`Store::expire_some`]; the `Del`s are recorded as effects.
    pub fn expire_some(&mut self, now: u64, budget: usize) -> usize {
        self.store.expire_some(now, budget, &mut self.effects)
    }

    /// Runs one request (`argv[0]` is the command name) and appends its reply to `out`.
    pub fn execute(
        &mut self,
        client: &mut Client,
        argv: &[Vec<u8>],
        now: u64,
        out: &mut Vec<u8>,
    ) -> Flow {
        let Some(name) = argv.first() else {
            return Flow::Continue;
        };
        self.processed += 1;
        let Some(cmd) = COMMANDS.iter().find(|c| eq(name, c.name)) else {
            return unknown_command(argv, out);
        };
        let n = argv.len() as i32;
        if (cmd.arity > 0 && n != cmd.arity) || (cmd.arity < 0 && n < -cmd.arity) {
            return wrong_args(cmd.name, out);
        }
        for range in reads_values(cmd.name, argv) {
            for key in &argv[range.clone()] {
                if let Some(at) = self.store.missing(key, now) {
                    self.processed -= 1;
                    return Flow::Fetch(at);
                }
            }
        }
        if let Some(j) = self.journal.as_mut() {
            let class = class(cmd.name);
            if class != Class::Read {
                // What the command may log: its arguments, plus the value it extends.
                let mut bytes: usize = argv.iter().map(|a| a.len() + 32).sum();
                if cmd.name == "append" {
                    bytes += self.store.get_raw(&argv[1]).map_or(0, |v| v.len);
                }
                if let Err(msg) = j.admit(class, bytes) {
                    return err(out, msg);
                }
            }
        }
        (cmd.run)(self, client, argv, now, out)
    }

    fn apply(&mut self, e: Effect) {
        match self.journal.as_mut() {
            Some(j) => {
                let loc = j.append(&e);
                self.store.apply_owned(e, loc, |at| j.release(at));
            }
            None => {
                self.store.apply_at(&e, NO_LOC, |_| {});
                self.effects.push(e);
            }
        }
    }

    /// Lazy expiry: if `key` is present but expired, deletes it (recorded as a `Del`).
    fn reap(&mut self, key: &[u8], now: u64) {
        if self.store.is_expired(key, now) {
            self.apply(Effect::Del { key: key.to_vec() });
        }
    }

    /// The live value of `key` (after lazy expiry), cloned, with its expiry.
    fn value(&mut self, key: &[u8], now: u64) -> Option<(Vec<u8>, Option<u64>)> {
        self.reap(key, now);
        self.store
            .get(key, now)
            .map(|v| (v.value.to_vec(), v.expire_at_ms))
    }
}

/// Redis 7: `ERR unknown command 'foo', with args beginning with: 'a' 'b' ` (each argument
/// quoted and followed by a space, up to 128 bytes of them; the name cut at 128 bytes).
fn unknown_command(argv: &[Vec<u8>], out: &mut Vec<u8>) -> Flow {
    let mut args: Vec<u8> = Vec::new();
    for a in &argv[1..] {
        if args.len() >= 128 {
            break;
        }
        let room = 128 - args.len();
        args.push(b'\'');
        args.extend_from_slice(&a[..a.len().min(room)]);
        args.extend_from_slice(b"' ");
    }
    let mut m = b"ERR unknown command '".to_vec();
    m.extend_from_slice(&argv[0][..argv[0].len().min(128)]);
    m.extend_from_slice(b"', with args beginning with: ");
    m.extend_from_slice(&args);
    resp::error(out, &m);
    Flow::Continue
}

fn wrong_args(name: &str, out: &mut Vec<u8>) -> Flow {
    err(
        out,
        &format!("ERR wrong number of arguments for '{name}' command"),
    )
}

fn unknown_subcommand(sub: &[u8], cmd: &str, out: &mut Vec<u8>) -> Flow {
    let mut m = b"ERR unknown subcommand '".to_vec();
    m.extend_from_slice(&sub[..sub.len().min(128)]);
    m.extend_from_slice(format!("'. Try {cmd} HELP.").as_bytes());
    resp::error(out, &m);
    Flow::Continue
}

fn ping(_: &mut Engine, _: &mut Client, a: &[Vec<u8>], _: u64, out: &mut Vec<u8>) -> Flow {
    match a.len() {
        1 => resp::simple(out, b"PONG"),
        2 => resp::bulk(out, &a[1]),
        _ => return wrong_args("ping", out),
    }
    Flow::Continue
}

fn echo(_: &mut Engine, _: &mut Client, a: &[Vec<u8>], _: u64, out: &mut Vec<u8>) -> Flow {
    resp::bulk(out, &a[1]);
    Flow::Continue
}

fn bulk_or_null(out: &mut Vec<u8>, v: Option<&[u8]>) -> Flow {
    match v {
        Some(v) => resp::bulk(out, v),
        None => resp::null_bulk(out),
    }
    Flow::Continue
}

fn get(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    e.reap(&a[1], now);
    bulk_or_null(out, e.store.get(&a[1], now).map(|v| v.value))
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|KEEPTTL]`.
fn set(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    let (mut nx, mut xx, mut want_get, mut keepttl) = (false, false, false, false);
    // EX/PX's argument and unit (ms); checked after every option parsed, as Redis does.
    let mut expire_arg: Option<(&[u8], i64)> = None;
    let mut i = 3;
    while i < a.len() {
        let opt = &a[i];
        let next = a.get(i + 1);
        if eq(opt, "nx") && !xx {
            nx = true;
        } else if eq(opt, "xx") && !nx {
            xx = true;
        } else if eq(opt, "get") {
            want_get = true;
        } else if eq(opt, "keepttl") && expire_arg.is_none() {
            keepttl = true;
        } else if let (true, Some(next)) = (
            (eq(opt, "ex") || eq(opt, "px")) && !keepttl && expire_arg.is_none(),
            next,
        ) {
            expire_arg = Some((next, if eq(opt, "ex") { 1000 } else { 1 }));
            i += 1;
        } else {
            return err(out, SYNTAX);
        }
        i += 1;
    }
    let expire = match expire_arg {
        None => None,
        Some((arg, unit)) => {
            let Some(n) = parse_i64(arg) else {
                return err(out, NOT_INT);
            };
            // As Redis: positive, and the absolute time must fit in an i64.
            match n
                .checked_mul(unit)
                .and_then(|ms| ms.checked_add(now as i64))
            {
                Some(at) if n > 0 => Some(at as u64),
                _ => return err(out, "ERR invalid expire time in 'set' command"),
            }
        }
    };
    // The old value itself only for GET (it may be on disk otherwise); its expiry for KEEPTTL.
    let old = if want_get {
        e.value(&a[1], now)
    } else {
        e.reap(&a[1], now);
        e.store
            .get(&a[1], now)
            .map(|v| (Vec::new(), v.expire_at_ms))
    };
    if want_get {
        bulk_or_null(out, old.as_ref().map(|(v, _)| &v[..]));
    }
    if (nx && old.is_some()) || (xx && old.is_none()) {
        if !want_get {
            resp::null_bulk(out);
        }
        return Flow::Continue;
    }
    let expire_at_ms = if keepttl {
        old.and_then(|(_, at)| at)
    } else {
        expire
    };
    e.apply(Effect::Set {
        key: a[1].clone(),
        value: a[2].clone(),
        expire_at_ms,
    });
    if !want_get {
        ok(out);
    }
    Flow::Continue
}

fn getset(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    let old = e.value(&a[1], now);
    e.apply(Effect::Set {
        key: a[1].clone(),
        value: a[2].clone(),
        expire_at_ms: None,
    });
    bulk_or_null(out, old.as_ref().map(|(v, _)| &v[..]))
}

fn getdel(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    let old = e.value(&a[1], now);
    if old.is_some() {
        e.apply(Effect::Del { key: a[1].clone() });
    }
    bulk_or_null(out, old.as_ref().map(|(v, _)| &v[..]))
}

fn del(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    let mut n = 0;
    for k in &a[1..] {
        e.reap(k, now);
        if e.store.get(k, now).is_some() {
            e.apply(Effect::Del { key: k.clone() });
            n += 1;
        }
    }
    int(out, n)
}

fn exists(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    let mut n = 0;
    for k in &a[1..] {
        e.reap(k, now);
        n += e.store.get(k, now).is_some() as i64;
    }
    int(out, n)
}

fn incr_by(e: &mut Engine, key: &[u8], by: i64, now: u64, out: &mut Vec<u8>) -> Flow {
    let (cur, at) = match e.value(key, now) {
        None => (0, None),
        Some((v, at)) => match parse_i64(&v) {
            Some(n) => (n, at),
            None => return err(out, NOT_INT),
        },
    };
    let Some(new) = cur.checked_add(by) else {
        return err(out, "ERR increment or decrement would overflow");
    };
    let mut value = Vec::new();
    resp::push_int(&mut value, new);
    e.apply(Effect::Set {
        key: key.to_vec(),
        value,
        expire_at_ms: at,
    });
    int(out, new)
}

fn incr(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    incr_by(e, &a[1], 1, now, out)
}

fn decr(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    incr_by(e, &a[1], -1, now, out)
}

fn incrby(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    match parse_i64(&a[2]) {
        Some(by) => incr_by(e, &a[1], by, now, out),
        None => err(out, NOT_INT),
    }
}

fn decrby(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    match parse_i64(&a[2]) {
        Some(i64::MIN) => err(out, "ERR decrement would overflow"),
        Some(by) => incr_by(e, &a[1], -by, now, out),
        None => err(out, NOT_INT),
    }
}

fn append(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    let (mut value, at) = e.value(&a[1], now).unwrap_or_default();
    value.extend_from_slice(&a[2]);
    let n = value.len() as i64;
    e.apply(Effect::Set {
        key: a[1].clone(),
        value,
        expire_at_ms: at,
    });
    int(out, n)
}

fn strlen(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    e.reap(&a[1], now);
    int(out, e.store.get(&a[1], now).map_or(0, |v| v.len as i64))
}

fn mget(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    resp::array(out, a.len() - 1);
    for k in &a[1..] {
        e.reap(k, now);
        bulk_or_null(out, e.store.get(k, now).map(|v| v.value));
    }
    Flow::Continue
}

fn mset(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], _: u64, out: &mut Vec<u8>) -> Flow {
    if a.len().is_multiple_of(2) {
        return wrong_args("mset", out);
    }
    for kv in a[1..].chunks(2) {
        e.apply(Effect::Set {
            key: kv[0].clone(),
            value: kv[1].clone(),
            expire_at_ms: None,
        });
    }
    ok(out)
}

fn expire_generic(
    e: &mut Engine,
    a: &[Vec<u8>],
    now: u64,
    unit: u64,
    name: &str,
    out: &mut Vec<u8>,
) -> Flow {
    if let Some(opt) = a.get(3) {
        let mut m = b"ERR Unsupported option ".to_vec();
        m.extend_from_slice(opt);
        resp::error(out, &m);
        return Flow::Continue;
    }
    let Some(n) = parse_i64(&a[2]) else {
        return err(out, NOT_INT);
    };
    let Some(at) = n
        .checked_mul(unit as i64)
        .and_then(|ms| ms.checked_add(now as i64))
    else {
        return err(out, &format!("ERR invalid expire time in '{name}' command"));
    };
    e.reap(&a[1], now);
    if e.store.get(&a[1], now).is_none() {
        return int(out, 0);
    }
    if at <= now as i64 {
        e.apply(Effect::Del { key: a[1].clone() });
    } else {
        e.apply(Effect::Expire {
            key: a[1].clone(),
            at: at as u64,
        });
    }
    int(out, 1)
}

fn expire(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    expire_generic(e, a, now, 1000, "expire", out)
}

fn pexpire(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    expire_generic(e, a, now, 1, "pexpire", out)
}

fn ttl_generic(e: &mut Engine, key: &[u8], now: u64, ms: bool, out: &mut Vec<u8>) -> Flow {
    e.reap(key, now);
    match e.store.get(key, now) {
        None => int(out, -2),
        Some(v) => match v.expire_at_ms {
            None => int(out, -1),
            Some(at) => {
                let left = (at - now) as i64;
                int(out, if ms { left } else { (left + 500) / 1000 })
            }
        },
    }
}

fn ttl(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    ttl_generic(e, &a[1], now, false, out)
}

fn pttl(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    ttl_generic(e, &a[1], now, true, out)
}

fn persist(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    e.reap(&a[1], now);
    match e.store.get(&a[1], now) {
        Some(v) if v.expire_at_ms.is_some() => {
            e.apply(Effect::Persist { key: a[1].clone() });
            int(out, 1)
        }
        _ => int(out, 0),
    }
}

fn keys(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    let found: Vec<&[u8]> = e
        .store
        .keys(now)
        .map(|(k, _)| k)
        .filter(|k| glob::matches(&a[1], k))
        .collect();
    resp::array(out, found.len());
    for k in found {
        resp::bulk(out, k);
    }
    Flow::Continue
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]`.
fn scan(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    let cursor = match core::str::from_utf8(&a[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(c) => c,
        None => return err(out, "ERR invalid cursor"),
    };
    let (mut pattern, mut count, mut type_ok) = (None, 10usize, true);
    let mut i = 2;
    while i < a.len() {
        let Some(arg) = a.get(i + 1) else {
            return err(out, SYNTAX);
        };
        if eq(&a[i], "count") {
            match parse_i64(arg) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return err(out, SYNTAX),
                None => return err(out, NOT_INT),
            }
        } else if eq(&a[i], "match") {
            pattern = Some(arg);
        } else if eq(&a[i], "type") {
            type_ok = eq(arg, "string");
        } else {
            return err(out, SYNTAX);
        }
        i += 2;
    }
    let mut found: Vec<Vec<u8>> = Vec::new();
    let next = e.store.scan(cursor, count, now, |k| {
        if type_ok && pattern.is_none_or(|p| glob::matches(p, k)) {
            found.push(k.to_vec());
        }
    });
    resp::array(out, 2);
    let mut c = Vec::new();
    resp::push_int(&mut c, next as i64);
    resp::bulk(out, &c);
    resp::array(out, found.len());
    for k in &found {
        resp::bulk(out, k);
    }
    Flow::Continue
}

fn dbsize(e: &mut Engine, _: &mut Client, _: &[Vec<u8>], _: u64, out: &mut Vec<u8>) -> Flow {
    int(out, e.store.len() as i64)
}

/// FLUSHDB / FLUSHALL `[ASYNC|SYNC]`.
fn flush(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], _: u64, out: &mut Vec<u8>) -> Flow {
    match a.len() {
        1 => {}
        2 if eq(&a[1], "async") || eq(&a[1], "sync") => {}
        _ => return err(out, SYNTAX),
    }
    e.apply(Effect::Flush);
    ok(out)
}

fn type_(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], now: u64, out: &mut Vec<u8>) -> Flow {
    e.reap(&a[1], now);
    let t: &[u8] = if e.store.get(&a[1], now).is_some() {
        b"string"
    } else {
        b"none"
    };
    resp::simple(out, t);
    Flow::Continue
}

fn select(_: &mut Engine, _: &mut Client, a: &[Vec<u8>], _: u64, out: &mut Vec<u8>) -> Flow {
    match parse_i64(&a[1]) {
        Some(0) => ok(out),
        Some(_) => err(out, "ERR DB index is out of range"),
        None => err(out, NOT_INT),
    }
}

/// INFO `[section...]`: server, clients, stats, keyspace (default: all of them).
fn info(e: &mut Engine, _: &mut Client, a: &[Vec<u8>], _: u64, out: &mut Vec<u8>) -> Flow {
    let want = |s: &str| {
        a.len() == 1
            || a[1..]
                .iter()
                .any(|x| eq(x, s) || eq(x, "all") || eq(x, "default") || eq(x, "everything"))
    };
    let mut text = alloc::string::String::new();
    if want("server") {
        text += &format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nos:xenrt\r\narch_bits:64\r\ntcp_port:6379\r\n\r\n"
        );
    }
    if want("stats") {
        text += &format!(
            "# Stats\r\ntotal_commands_processed:{}\r\n\r\n",
            e.processed
        );
    }
    if want("persistence") && !e.persistence.is_empty() {
        text += "# Persistence\r\n";
        for (k, v) in &e.persistence {
            text += &format!("{k}:{v}\r\n");
        }
        text += "\r\n";
    }
    if want("keyspace") {
        text += "# Keyspace\r\n";
        if !e.store.is_empty() {
            text += &format!(
                "db0:keys={},expires={},avg_ttl=0\r\n",
                e.store.len(),
                e.store.expires()
            );
        }
        text += "\r\n";
    }
    if text.ends_with("\r\n\r\n") {
        text.truncate(text.len() - 2);
    }
    resp::bulk(out, text.as_bytes());
    Flow::Continue
}

/// COMMAND (an empty table: redis-cli 7 then falls back to no hints), COMMAND COUNT,
/// COMMAND DOCS (an empty map, as Redis answers for unknown names).
fn command(_: &mut Engine, _: &mut Client, a: &[Vec<u8>], _: u64, out: &mut Vec<u8>) -> Flow {
    match a.get(1) {
        None => resp::array(out, 0),
        Some(s) if eq(s, "docs") || eq(s, "info") => resp::array(out, 0),
        Some(s) if eq(s, "count") && a.len() == 2 => return int(out, COMMANDS.len() as i64),
        Some(s) if eq(s, "count") => return wrong_args("command|count", out),
        Some(s) => return unknown_subcommand(s, "COMMAND", out),
    }
    Flow::Continue
}

/// The configuration CONFIG GET reports (read-only).
const CONFIG: &[(&str, &str)] = &[
    ("save", ""),
    ("appendonly", "no"),
    ("databases", "1"),
    ("port", "6379"),
];

/// CONFIG GET pattern... (flat name/value array); CONFIG SET and RESETSTAT accepted as no-ops
/// only for RESETSTAT.
fn config(_: &mut Engine, _: &mut Client, a: &[Vec<u8>], _: u64, out: &mut Vec<u8>) -> Flow {
    let sub = &a[1];
    if eq(sub, "get") {
        if a.len() < 3 {
            return wrong_args("config|get", out);
        }
        let hits: Vec<&(&str, &str)> = CONFIG
            .iter()
            .filter(|(name, _)| {
                a[2..]
                    .iter()
                    .any(|p| glob::matches(&p.to_ascii_lowercase(), name.as_bytes()))
            })
            .collect();
        resp::array(out, hits.len() * 2);
        for (name, value) in hits {
            resp::bulk(out, name.as_bytes());
            resp::bulk(out, value.as_bytes());
        }
        Flow::Continue
    } else if eq(sub, "resetstat") {
        ok(out)
    } else {
        unknown_subcommand(sub, "CONFIG", out)
    }
}

/// CLIENT SETNAME / GETNAME / ID / SETINFO.
fn client(_: &mut Engine, c: &mut Client, a: &[Vec<u8>], _: u64, out: &mut Vec<u8>) -> Flow {
    let sub = &a[1];
    if eq(sub, "setname") {
        if a.len() != 3 {
            return wrong_args("client|setname", out);
        }
        if a[2].iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
            return err(
                out,
                "ERR Client names cannot contain spaces, newlines or special characters.",
            );
        }
        c.name = a[2].clone();
        ok(out)
    } else if eq(sub, "getname") {
        if a.len() != 2 {
            return wrong_args("client|getname", out);
        }
        bulk_or_null(out, (!c.name.is_empty()).then_some(&c.name[..]))
    } else if eq(sub, "setinfo") {
        if a.len() != 4 {
            return wrong_args("client|setinfo", out);
        }
        ok(out)
    } else {
        unknown_subcommand(sub, "CLIENT", out)
    }
}

fn quit(_: &mut Engine, _: &mut Client, _: &[Vec<u8>], _: u64, out: &mut Vec<u8>) -> Flow {
    ok(out);
    Flow::Close
}
