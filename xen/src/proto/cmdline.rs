//! The kernel command line: `start_info.cmd_line`, which `xl` fills from the domain config's
//! `extra=` string.
//!
//! Syntax: settings separated by whitespace, each either `key=value` or a bare word (a flag: a key
//! with no value). A value containing spaces is written in double quotes: `msg="a b"`. There are
//! no escapes; a quoted value may contain anything except `"`. An unquoted value may not contain
//! `=` or `"` (quote it).
//!
//! A word `--` ends the settings: the words after it are the application's arguments
//! ([`args`], the `argv` of a std app after its name), never checked as keys. Quotes group
//! words there too (`-- "a b" c` is two arguments).
//!
//! Parsing never fails: every setting that cannot be used is skipped and recorded as a
//! [`Problem`], whose `Display` is the line boot prints (`cmdline: unknown key 'foo' (ignored)`).
//! Keys are checked against a registry of [`KeySpec`]s: the runtime's own ([`RUNTIME_KEYS`],
//! e.g. `log=`) plus the ones an application passes to [`Cmdline::parse`]. Unknown keys and
//! values that fail their key's validator are skipped; a key given twice keeps the last value.
//!
//! ```
//! use xen::cmdline::{Cmdline, KeySpec, validate};
//! const APP: &[KeySpec] = &[KeySpec { name: "port", help: "TCP port", validate: validate::port }];
//! let c = Cmdline::parse(b"log=debug port=8080 msg=hi\0", APP);
//! assert_eq!(c.log_level(), Some(log::LevelFilter::Debug));
//! assert_eq!(c.get("port"), Some("8080"));
//! assert_eq!(c.problems().len(), 1); // `msg` is not a known key
//! assert_eq!(c.problems()[0].to_string(), "unknown key 'msg' (ignored)");
//! ```

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use log::LevelFilter;

/// Size of `start_info.cmd_line` (`MAX_GUEST_CMDLINE` in xen.h), terminating NUL included.
pub const MAX_CMDLINE: usize = 1024;

/// A key the command line accepts, with how to check its value.
#[derive(Clone, Copy)]
pub struct KeySpec {
    /// The key, as written before `=`.
    pub name: &'static str,
    /// One line for a usage listing, e.g. `"log level: error|warn|info|debug|trace|off"`.
    pub help: &'static str,
    /// Checks a value. A bare word (`debug`) is validated as the empty string. `Err` carries what
    /// was expected, e.g. `"expected a port number 1-65535"`.
    pub validate: fn(&str) -> Result<(), &'static str>,
}

impl fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySpec")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The keys the runtime itself understands; checked before the application's.
pub const RUNTIME_KEYS: &[KeySpec] = &[KeySpec {
    name: "log",
    help: "log level: error|warn|info|debug|trace|off",
    validate: validate::log_level,
}];

/// Why a token is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// nothing before '='
    EmptyKey,
    /// key may only contain letters, digits, '_', '-' and '.'
    BadKeyChar,
    /// '=' in an unquoted value (quote the value)
    EqualsInValue,
    /// '"' inside an unquoted value or key
    StrayQuote,
    /// text after the closing quote
    TextAfterQuote,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::EmptyKey => "nothing before '='",
            Malformed::BadKeyChar => "key may only contain letters, digits, '_', '-' and '.'",
            Malformed::EqualsInValue => "'=' in an unquoted value (quote the value)",
            Malformed::StrayQuote => "'\"' inside an unquoted value or key",
            Malformed::TextAfterQuote => "text after the closing quote",
        })
    }
}

/// Something on the command line that could not be used as written. Each is skipped (or, for a
/// duplicate, overridden) and parsing goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// unknown key '{key}' (ignored)
    UnknownKey {
        /// The key as written.
        key: String,
    },
    /// malformed setting '{token}': {why} (ignored)
    Malformed {
        /// The whole token.
        token: String,
        /// What is wrong with it.
        why: Malformed,
    },
    /// unterminated quote in '{token}' (ignored)
    UnterminatedQuote {
        /// The token from its start to the end of the line.
        token: String,
    },
    /// invalid UTF-8 in the setting at byte {offset} (ignored)
    InvalidUtf8 {
        /// Offset of the token's first byte in the command line.
        offset: usize,
    },
    /// key '{key}' given more than once (the last value is used)
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// bad value '{value}' for '{key}': {expected} (ignored)
    BadValue {
        /// The key.
        key: String,
        /// The rejected value (empty for a bare word).
        value: String,
        /// The validator's explanation.
        expected: &'static str,
    },
    /// no NUL within {MAX_CMDLINE} bytes; the rest is cut off
    Truncated,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnknownKey { key } => write!(f, "unknown key '{key}' (ignored)"),
            Problem::Malformed { token, why } => {
                write!(f, "malformed setting '{token}': {why} (ignored)")
            }
            Problem::UnterminatedQuote { token } => {
                write!(f, "unterminated quote in '{token}' (ignored)")
            }
            Problem::InvalidUtf8 { offset } => {
                write!(f, "invalid UTF-8 in the setting at byte {offset} (ignored)")
            }
            Problem::DuplicateKey { key } => {
                write!(
                    f,
                    "key '{key}' given more than once (the last value is used)"
                )
            }
            Problem::BadValue {
                key,
                value,
                expected,
            } => write!(f, "bad value '{value}' for '{key}': {expected} (ignored)"),
            Problem::Truncated => {
                write!(f, "no NUL within {MAX_CMDLINE} bytes; the rest is cut off")
            }
        }
    }
}

/// One accepted setting.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Setting {
    key: String,
    /// `None` for a bare word.
    value: Option<String>,
}

/// A parsed, validated command line: the accepted settings and the problems met on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    settings: Vec<Setting>,
    problems: Vec<Problem>,
}

impl Cmdline {
    /// Parses `raw` (the bytes up to the first NUL, at most [`MAX_CMDLINE`]), accepting the
    /// [`RUNTIME_KEYS`] and `app_keys` (a key in both is validated by the runtime's spec).
    /// Never fails: unusable settings are skipped and listed in [`problems`](Self::problems).
    pub fn parse(raw: &[u8], app_keys: &[KeySpec]) -> Cmdline {
        let mut line = Cmdline::default();
        let end = raw.iter().position(|&b| b == 0);
        let raw = match end {
            Some(n) if n < MAX_CMDLINE => &raw[..n],
            _ if raw.len() < MAX_CMDLINE => raw,
            _ => {
                line.problems.push(Problem::Truncated);
                &raw[..MAX_CMDLINE - 1]
            }
        };
        let mut pos = 0;
        while let Some(tok) = next_token(raw, &mut pos) {
            if tok.bytes == b"--" {
                break;
            }
            line.take(tok, app_keys);
        }
        line
    }

    /// The value of `key`: `Some("")` for a bare word, `None` if absent (or rejected).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key)
            .map(|s| self.settings[s].value.as_deref().unwrap_or(""))
    }

    /// Whether `key` is set as a bare word or to a true value (`1`, `true`, `yes`, `on`).
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| parse_bool(v) == Some(true))
    }

    /// The value of `key` parsed as `T`; `None` if absent or if it does not parse.
    pub fn parsed<T: FromStr>(&self, key: &str) -> Option<T> {
        self.get(key).and_then(|v| v.parse().ok())
    }

    /// The `log=` level, if given (and valid).
    pub fn log_level(&self) -> Option<LevelFilter> {
        self.get("log").and_then(|v| parse_log_level(v).ok())
    }

    /// The accepted settings in command-line order, `(key, value)`, value `None` for a bare word.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.settings
            .iter()
            .map(|s| (s.key.as_str(), s.value.as_deref()))
    }

    /// What could not be used, in command-line order.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    fn find(&self, key: &str) -> Option<usize> {
        self.settings.iter().position(|s| s.key == key)
    }

    /// Checks one token and either records the setting or a problem.
    fn take(&mut self, tok: Token<'_>, app_keys: &[KeySpec]) {
        let text = match core::str::from_utf8(tok.bytes) {
            Ok(t) => t,
            Err(_) => {
                self.problems
                    .push(Problem::InvalidUtf8 { offset: tok.offset });
                return;
            }
        };
        if tok.unterminated {
            self.problems.push(Problem::UnterminatedQuote {
                token: text.to_string(),
            });
            return;
        }
        let (key, value) = match split_setting(text) {
            Ok(kv) => kv,
            Err(why) => {
                self.problems.push(Problem::Malformed {
                    token: text.to_string(),
                    why,
                });
                return;
            }
        };
        let Some(spec) = RUNTIME_KEYS.iter().chain(app_keys).find(|s| s.name == key) else {
            self.problems.push(Problem::UnknownKey {
                key: key.to_string(),
            });
            return;
        };
        if let Err(expected) = (spec.validate)(value.unwrap_or("")) {
            self.problems.push(Problem::BadValue {
                key: key.to_string(),
                value: value.unwrap_or("").to_string(),
                expected,
            });
            return;
        }
        let setting = Setting {
            key: key.to_string(),
            value: value.map(str::to_string),
        };
        match self.find(key) {
            Some(i) => {
                self.problems.push(Problem::DuplicateKey {
                    key: key.to_string(),
                });
                self.settings[i] = setting;
            }
            None => self.settings.push(setting),
        }
    }
}

/// A usage listing of the runtime's and the application's keys, one `  key  help` per line.
pub fn usage(app_keys: &[KeySpec]) -> Usage<'_> {
    Usage { app_keys }
}

/// See [`usage`].
#[derive(Debug, Clone, Copy)]
pub struct Usage<'a> {
    app_keys: &'a [KeySpec],
}

impl fmt::Display for Usage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = || RUNTIME_KEYS.iter().chain(self.app_keys);
        let width = keys().map(|k| k.name.len()).max().unwrap_or(0);
        for k in keys() {
            writeln!(f, "  {:width$}  {}", k.name, k.help)?;
        }
        Ok(())
    }
}

/// A whitespace-separated token (quotes keep spaces inside one token).
struct Token<'a> {
    bytes: &'a [u8],
    offset: usize,
    /// An opening quote had no closing quote before the end of the line.
    unterminated: bool,
}

/// The words after `--` in `raw` (the command line as [`Cmdline::parse`] takes it), unquoted: the
/// application's arguments, empty if there is no `--`. Words that are not UTF-8 are skipped (the
/// settings' parse reports nothing about them: they are the app's).
pub fn args(raw: &[u8]) -> Vec<String> {
    let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
    let raw = &raw[..raw.len().min(MAX_CMDLINE - 1)];
    let mut pos = 0;
    let mut out = Vec::new();
    let mut after_dashes = false;
    while let Some(tok) = next_token(raw, &mut pos) {
        if after_dashes {
            if let Ok(t) = core::str::from_utf8(tok.bytes) {
                out.push(t.split('"').collect());
            }
        } else {
            after_dashes = tok.bytes == b"--";
        }
    }
    out
}

fn next_token<'a>(raw: &'a [u8], pos: &mut usize) -> Option<Token<'a>> {
    while *pos < raw.len() && raw[*pos].is_ascii_whitespace() {
        *pos += 1;
    }
    if *pos == raw.len() {
        return None;
    }
    let start = *pos;
    let mut quoted = false;
    while *pos < raw.len() && (quoted || !raw[*pos].is_ascii_whitespace()) {
        if raw[*pos] == b'"' {
            quoted = !quoted;
        }
        *pos += 1;
    }
    Some(Token {
        bytes: &raw[start..*pos],
        offset: start,
        unterminated: quoted,
    })
}

/// Splits a token into key and optional value, unquoting the value.
fn split_setting(text: &str) -> Result<(&str, Option<&str>), Malformed> {
    let (key, value) = match text.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (text, None),
    };
    if key.is_empty() {
        return Err(Malformed::EmptyKey);
    }
    if key.contains('"') {
        return Err(Malformed::StrayQuote);
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(Malformed::BadKeyChar);
    }
    let Some(value) = value else {
        return Ok((key, None));
    };
    if let Some(rest) = value.strip_prefix('"') {
        // The tokenizer guarantees an even number of quotes, so a closing one exists.
        let close = rest.find('"').ok_or(Malformed::StrayQuote)?;
        if close + 1 != rest.len() {
            return Err(Malformed::TextAfterQuote);
        }
        return Ok((key, Some(&rest[..close])));
    }
    if value.contains('=') {
        return Err(Malformed::EqualsInValue);
    }
    if value.contains('"') {
        return Err(Malformed::StrayQuote);
    }
    Ok((key, Some(value)))
}

/// A `log=` value that is not a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLogLevel;

impl fmt::Display for BadLogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(validate::LOG_LEVEL_EXPECTED)
    }
}

/// Parses a log level: `error`, `warn`, `info`, `debug`, `trace` or `off` (any case).
pub fn parse_log_level(s: &str) -> Result<LevelFilter, BadLogLevel> {
    const LEVELS: [(&str, LevelFilter); 6] = [
        ("off", LevelFilter::Off),
        ("error", LevelFilter::Error),
        ("warn", LevelFilter::Warn),
        ("info", LevelFilter::Info),
        ("debug", LevelFilter::Debug),
        ("trace", LevelFilter::Trace),
    ];
    LEVELS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|&(_, level)| level)
        .ok_or(BadLogLevel)
}

/// Parses a flag value: empty (a bare word), `1`/`true`/`yes`/`on` → true,
/// `0`/`false`/`no`/`off` → false.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "" | "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Ready-made validators for [`KeySpec::validate`].
pub mod validate {
    use core::net::Ipv4Addr;

    pub(super) const LOG_LEVEL_EXPECTED: &str = "expected error|warn|info|debug|trace|off";

    /// A log level (see [`parse_log_level`](super::parse_log_level)).
    pub fn log_level(v: &str) -> Result<(), &'static str> {
        super::parse_log_level(v)
            .map(drop)
            .map_err(|_| LOG_LEVEL_EXPECTED)
    }

    /// A flag: a bare word or a boolean (see [`parse_bool`](super::parse_bool)).
    pub fn flag(v: &str) -> Result<(), &'static str> {
        super::parse_bool(v)
            .map(drop)
            .ok_or("expected no value or 1|0|true|false|yes|no|on|off")
    }

    /// Any non-empty value.
    pub fn non_empty(v: &str) -> Result<(), &'static str> {
        if v.is_empty() {
            Err("expected a value")
        } else {
            Ok(())
        }
    }

    /// A TCP/UDP port, 1-65535.
    pub fn port(v: &str) -> Result<(), &'static str> {
        match v.parse::<u16>() {
            Ok(p) if p != 0 => Ok(()),
            _ => Err("expected a port number 1-65535"),
        }
    }

    /// An unsigned decimal number that fits in a `u64`.
    pub fn number(v: &str) -> Result<(), &'static str> {
        v.parse::<u64>()
            .map(drop)
            .map_err(|_| "expected a decimal number")
    }

    /// An IPv4 address, `a.b.c.d`.
    pub fn ipv4(v: &str) -> Result<(), &'static str> {
        v.parse::<Ipv4Addr>()
            .map(drop)
            .map_err(|_| "expected an IPv4 address a.b.c.d")
    }

    /// An IPv4 address with prefix length, `a.b.c.d/n`, n ≤ 32.
    pub fn ipv4_cidr(v: &str) -> Result<(), &'static str> {
        const EXPECTED: &str = "expected an IPv4 address with prefix a.b.c.d/n (n <= 32)";
        let (addr, prefix) = v.split_once('/').ok_or(EXPECTED)?;
        addr.parse::<Ipv4Addr>().map_err(|_| EXPECTED)?;
        match prefix.parse::<u8>() {
            Ok(n) if n <= 32 => Ok(()),
            _ => Err(EXPECTED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &[KeySpec] = &[
        KeySpec {
            name: "ip",
            help: "address/prefix",
            validate: validate::ipv4_cidr,
        },
        KeySpec {
            name: "gw",
            help: "gateway",
            validate: validate::ipv4,
        },
        KeySpec {
            name: "dns",
            help: "DNS server",
            validate: validate::ipv4,
        },
        KeySpec {
            name: "test",
            help: "test to run",
            validate: validate::non_empty,
        },
        KeySpec {
            name: "port",
            help: "listen port",
            validate: validate::port,
        },
        KeySpec {
            name: "msg",
            help: "a message",
            validate: |_| Ok(()),
        },
        KeySpec {
            name: "debug",
            help: "debug mode",
            validate: validate::flag,
        },
    ];

    fn parse(s: &str) -> Cmdline {
        Cmdline::parse(s.as_bytes(), APP)
    }

    fn messages(c: &Cmdline) -> Vec<String> {
        c.problems().iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn empty_line() {
        for s in ["", "\0", "   \t \0garbage after nul"] {
            let c = parse(s);
            assert_eq!(c.iter().count(), 0, "{s:?}");
            assert!(c.problems().is_empty(), "{s:?}");
        }
    }

    #[test]
    fn full_app_line() {
        let c =
            parse("log=debug ip=10.0.0.2/24 gw=10.0.0.1 dns=1.1.1.1 test=tcp_echo port=7 debug\0");
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.log_level(), Some(LevelFilter::Debug));
        assert_eq!(c.get("ip"), Some("10.0.0.2/24"));
        assert_eq!(c.get("gw"), Some("10.0.0.1"));
        assert_eq!(
            c.parsed::<core::net::Ipv4Addr>("dns"),
            Some([1, 1, 1, 1].into())
        );
        assert_eq!(c.get("test"), Some("tcp_echo"));
        assert_eq!(c.parsed::<u16>("port"), Some(7));
        assert_eq!(c.get("debug"), Some(""));
        assert!(c.flag("debug"));
        assert_eq!(c.get("absent"), None);
        assert!(!c.flag("absent"));
        let keys: Vec<_> = c.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["log", "ip", "gw", "dns", "test", "port", "debug"]);
        assert_eq!(c.iter().last(), Some(("debug", None)));
    }

    #[test]
    fn flag_values() {
        assert!(parse("debug=1").flag("debug"));
        assert!(parse("debug=on").flag("debug"));
        assert!(!parse("debug=0").flag("debug"));
        assert!(!parse("debug=no").flag("debug"));
        let c = parse("debug=maybe");
        assert_eq!(c.get("debug"), None);
        assert!(matches!(c.problems(), [Problem::BadValue { .. }]));
    }

    #[test]
    fn whitespace_kinds() {
        let c = parse("\t log=warn\n\n port=80  \r\n");
        assert!(c.problems().is_empty());
        assert_eq!(c.log_level(), Some(LevelFilter::Warn));
        assert_eq!(c.get("port"), Some("80"));
    }

    #[test]
    fn quoted_values() {
        let c = parse(r#"msg="hello  world" log=info"#);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.get("msg"), Some("hello  world"));
        let c = parse(r#"test="""#);
        assert_eq!(c.get("test"), None, "empty value fails non_empty");
        assert!(matches!(c.problems(), [Problem::BadValue { .. }]));
        let c = parse(r#"msg="a=b c" port=1"#);
        assert_eq!(c.get("msg"), Some("a=b c"));
        assert_eq!(c.get("port"), Some("1"));
        let c = parse(r#"msg="""#);
        assert_eq!(c.get("msg"), Some(""));
    }

    #[test]
    fn unknown_key_is_ignored() {
        let c = parse("foo=1 log=info bar");
        assert_eq!(c.get("foo"), None);
        assert_eq!(c.get("bar"), None);
        assert_eq!(c.log_level(), Some(LevelFilter::Info));
        assert_eq!(
            messages(&c),
            ["unknown key 'foo' (ignored)", "unknown key 'bar' (ignored)"]
        );
    }

    #[test]
    fn malformed_tokens() {
        let cases = [
            ("=x", Malformed::EmptyKey),
            ("=", Malformed::EmptyKey),
            ("log==info", Malformed::EqualsInValue),
            ("msg=a=b", Malformed::EqualsInValue),
            ("lo\"g\"=x", Malformed::StrayQuote),
            ("msg=a\"b\"", Malformed::StrayQuote),
            ("msg=\"a\"b", Malformed::TextAfterQuote),
            ("\"msg\"", Malformed::StrayQuote),
            ("a/b=1", Malformed::BadKeyChar),
        ];
        for (tok, why) in cases {
            let c = parse(&alloc::format!("{tok} port=9"));
            assert_eq!(
                c.problems(),
                [Problem::Malformed {
                    token: tok.to_string(),
                    why
                }],
                "{tok}"
            );
            assert_eq!(c.get("port"), Some("9"), "parsing goes on after {tok}");
        }
        assert_eq!(
            parse("=x").problems()[0].to_string(),
            "malformed setting '=x': nothing before '=' (ignored)"
        );
    }

    #[test]
    fn unterminated_quote_swallows_the_rest() {
        let c = parse(r#"port=1 msg="a b port=2"#);
        assert_eq!(c.get("port"), Some("1"));
        assert_eq!(c.get("msg"), None);
        assert_eq!(
            messages(&c),
            [r#"unterminated quote in 'msg="a b port=2' (ignored)"#]
        );
    }

    #[test]
    fn invalid_utf8_skips_only_that_token() {
        let c = Cmdline::parse(b"port=1 msg=\xff\xfe log=trace\0", APP);
        assert_eq!(c.problems(), [Problem::InvalidUtf8 { offset: 7 }]);
        assert_eq!(c.get("port"), Some("1"));
        assert_eq!(c.log_level(), Some(LevelFilter::Trace));
        assert_eq!(
            c.problems()[0].to_string(),
            "invalid UTF-8 in the setting at byte 7 (ignored)"
        );
    }

    #[test]
    fn duplicate_key_last_wins() {
        let c = parse("log=info port=1 log=error");
        assert_eq!(c.log_level(), Some(LevelFilter::Error));
        assert_eq!(c.iter().count(), 2);
        assert_eq!(
            messages(&c),
            ["key 'log' given more than once (the last value is used)"]
        );
    }

    #[test]
    fn bad_value_keeps_earlier_good_one() {
        let c = parse("log=info log=loud");
        assert_eq!(c.log_level(), Some(LevelFilter::Info));
        assert_eq!(
            messages(&c),
            ["bad value 'loud' for 'log': expected error|warn|info|debug|trace|off (ignored)"]
        );
    }

    #[test]
    fn bad_values_for_app_keys() {
        for s in [
            "ip=10.0.0.1",
            "ip=10.0.0.1/33",
            "ip=10.0.0/8",
            "gw=1.2.3.4.5",
            "port=0",
            "port=65536",
            "port=http",
            "test",
            "log",
        ] {
            let c = parse(s);
            assert_eq!(c.iter().count(), 0, "{s}");
            assert!(matches!(c.problems(), [Problem::BadValue { .. }]), "{s}");
        }
    }

    #[test]
    fn log_levels() {
        for (s, l) in [
            ("error", LevelFilter::Error),
            ("warn", LevelFilter::Warn),
            ("info", LevelFilter::Info),
            ("debug", LevelFilter::Debug),
            ("trace", LevelFilter::Trace),
            ("off", LevelFilter::Off),
            ("DEBUG", LevelFilter::Debug),
        ] {
            assert_eq!(parse_log_level(s), Ok(l));
        }
        assert_eq!(parse_log_level("loud"), Err(BadLogLevel));
        assert_eq!(parse_log_level(""), Err(BadLogLevel));
    }

    #[test]
    fn runtime_keys_without_app_keys() {
        let c = Cmdline::parse(b"log=warn port=80\0", &[]);
        assert_eq!(c.log_level(), Some(LevelFilter::Warn));
        assert_eq!(messages(&c), ["unknown key 'port' (ignored)"]);
    }

    #[test]
    fn runtime_spec_wins_over_app_spec() {
        let app = [KeySpec {
            name: "log",
            help: "",
            validate: |_| Ok(()),
        }];
        let c = Cmdline::parse(b"log=loud", &app);
        assert_eq!(c.get("log"), None);
    }

    #[test]
    fn nul_terminated_and_truncated() {
        let mut raw = [b'x'; 2000];
        raw[..9].copy_from_slice(b"log=info ");
        let c = Cmdline::parse(&raw, APP);
        assert_eq!(c.log_level(), Some(LevelFilter::Info));
        // The cut-off 'xxx…' token is an unknown key.
        assert_eq!(c.problems()[0], Problem::Truncated);
        assert!(matches!(&c.problems()[1], Problem::UnknownKey { key } if key.len() == 1014));

        // A full start_info buffer, NUL in the last byte: no truncation.
        let mut raw = [b' '; MAX_CMDLINE];
        raw[..8].copy_from_slice(b"log=info");
        raw[MAX_CMDLINE - 1] = 0;
        let c = Cmdline::parse(&raw, APP);
        assert!(c.problems().is_empty());
        assert_eq!(c.log_level(), Some(LevelFilter::Info));
    }

    #[test]
    fn every_problem_displays() {
        let c = Cmdline::parse(
            b"foo =x msg=\"a\"b \xff log=info log=info port=0 msg=\"open\0",
            APP,
        );
        let m = messages(&c);
        assert_eq!(
            m,
            [
                "unknown key 'foo' (ignored)",
                "malformed setting '=x': nothing before '=' (ignored)",
                "malformed setting 'msg=\"a\"b': text after the closing quote (ignored)",
                "invalid UTF-8 in the setting at byte 16 (ignored)",
                "key 'log' given more than once (the last value is used)",
                "bad value '0' for 'port': expected a port number 1-65535 (ignored)",
                "unterminated quote in 'msg=\"open' (ignored)",
            ]
        );
    }

    #[test]
    fn usage_lists_all_keys() {
        let u = usage(&APP[..2]).to_string();
        assert_eq!(
            u,
            "  log  log level: error|warn|info|debug|trace|off\n  ip   address/prefix\n  gw   gateway\n"
        );
    }

    /// A tiny fuzz: random bytes from a biased alphabet never panic, and every accepted setting
    /// passes its validator.
    #[test]
    fn random_lines_never_panic() {
        let alphabet = b"ab=\" \tlog=info\xffport7\0";
        let mut rng = crate::sim::Rng(0x1234_5678_9abc_def0);
        for _ in 0..5000 {
            let len = (rng.next() % 40) as usize;
            let line: Vec<u8> = (0..len)
                .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
                .collect();
            let c = Cmdline::parse(&line, APP);
            for (k, v) in c.iter() {
                let spec = RUNTIME_KEYS
                    .iter()
                    .chain(APP)
                    .find(|s| s.name == k)
                    .unwrap();
                assert!((spec.validate)(v.unwrap_or("")).is_ok());
            }
        }
    }

    #[test]
    fn words_after_a_double_dash_are_arguments_not_keys() {
        let raw = b"log=debug -- one \"two three\" log=x\0";
        let c = Cmdline::parse(raw, &[]);
        assert_eq!(c.log_level(), Some(LevelFilter::Debug));
        assert_eq!(args(raw), ["one", "two three", "log=x"]);
        assert!(c.problems().is_empty());
        assert!(args(b"log=info").is_empty());
    }
}
