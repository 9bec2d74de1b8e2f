//! A small JSON reader and writer for the iperf3 control messages, and nothing more.
//!
//! Hand-written because the card allows no serde (nor any JSON crate): the messages are a few
//! hundred bytes of flat objects (the client's parameters, its results with one object per
//! stream), so a complete RFC 8259 reader into a [`Value`] tree is ~250 lines. The reader takes
//! any valid JSON text (UTF-8, escapes, `\u` surrogate pairs, fractions, exponents) and refuses
//! everything else with a [`JsonError`]; nesting is limited to [`MAX_DEPTH`] so hostile input
//! cannot exhaust the stack. The writer ([`Obj`]) appends objects with escaped strings to a
//! `String`.
//!
//! No floating point: every number the server reads is a count, so a number is kept as its value
//! truncated to an integer ([`Num`], as cJSON's `valueint`), and times are written as fixed-point
//! seconds from nanoseconds ([`Obj::secs`]). (core's float parser and printer would add ~30 KiB
//! to the image.)

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

/// Deepest nesting of arrays and objects the reader accepts.
pub const MAX_DEPTH: usize = 16;

/// A JSON number: its value truncated toward zero to an integer, saturating at `i128`'s bounds,
/// and whether that is the exact value (no fraction, no saturation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Num {
    /// The value, truncated.
    pub int: i128,
    /// True when `int` is the value.
    pub exact: bool,
}

impl Num {
    /// An exact integer.
    pub fn of(int: i128) -> Self {
        Num { int, exact: true }
    }
}

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Num(Num),
    /// A string (unescaped).
    Str(String),
    /// An array.
    Arr(Vec<Value>),
    /// An object, its members in order (a repeated key: the first wins in [`Value::get`]).
    Obj(Vec<(String, Value)>),
}

impl Value {
    /// The member `key` of an object (None for other values or a missing key).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Why a text is not JSON: a short reason and the byte offset where it was noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonError {
    /// What was wrong.
    pub what: &'static str,
    /// Where (byte offset into the text).
    pub at: usize,
}

impl core::fmt::Display for JsonError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

/// Parses one JSON text (surrounding whitespace allowed, nothing else after it).
pub fn parse(text: &[u8]) -> Result<Value, JsonError> {
    let mut p = Parser { s: text, i: 0 };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i != text.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, what: &'static str) -> JsonError {
        JsonError { what, at: self.i }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn lit(&mut self, word: &[u8], v: Value) -> Result<Value, JsonError> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("unknown literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        match self.peek() {
            None => Err(self.err("unexpected end")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::Str),
            Some(b't') => self.lit(b"true", Value::Bool(true)),
            Some(b'f') => self.lit(b"false", Value::Bool(false)),
            Some(b'n') => self.lit(b"null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.i += 1;
        let mut members = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Value::Obj(members));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a member name"));
            }
            let k = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':'"));
            }
            self.i += 1;
            self.ws();
            let v = self.value(depth)?;
            members.push((k, v));
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Obj(members));
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Value::Arr(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth)?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Value::Arr(items));
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .ok_or(self.err("short \\u escape"))?;
        let mut v = 0;
        for &c in h {
            let d = (c as char).to_digit(16).ok_or(self.err("bad \\u escape"))?;
            v = v * 16 + d;
        }
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.i += 1; // the opening quote
        let mut out = String::new();
        loop {
            // The longest run of plain characters, copied at once (checked as UTF-8).
            let start = self.i;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            let run = core::str::from_utf8(&self.s[start..self.i]).map_err(|e| JsonError {
                what: "invalid UTF-8",
                at: start + e.valid_up_to(),
            })?;
            out.push_str(run);
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let e = self.peek().ok_or(self.err("unterminated string"))?;
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&hi) {
                                // A high surrogate must be followed by \u and a low one.
                                if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return Err(self.err("lone surrogate"));
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return Err(self.err("lone surrogate"));
                                }
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or(self.err("lone surrogate"))?
                        }
                        _ => return Err(self.err("bad escape")),
                    };
                    out.push(c);
                }
                Some(_) => return Err(self.err("control character in string")),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let neg = self.peek() == Some(b'-');
        if neg {
            self.i += 1;
        }
        // No leading zeros ("01"), at least one digit.
        let int_start = self.i;
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("bad number")),
        }
        let int_digits = &self.s[int_start..self.i];
        let mut frac_digits: &[u8] = &[];
        if self.peek() == Some(b'.') {
            self.i += 1;
            let start = self.i;
            if self.digits() == 0 {
                return Err(self.err("bad number"));
            }
            frac_digits = &self.s[start..self.i];
        }
        let mut exp: i64 = 0;
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            let eneg = match self.peek() {
                Some(b'-') => {
                    self.i += 1;
                    true
                }
                Some(b'+') => {
                    self.i += 1;
                    false
                }
                _ => false,
            };
            let start = self.i;
            if self.digits() == 0 {
                return Err(self.err("bad number"));
            }
            for &d in &self.s[start..self.i] {
                // Clamped: anything beyond 10^±100000 saturates or truncates to 0 anyway.
                exp = (exp * 10 + i64::from(d - b'0')).min(100_000);
            }
            if eneg {
                exp = -exp;
            }
        }
        // The digits d1 d2 ... with the decimal point after `point` of them.
        let digits = int_digits.iter().chain(frac_digits);
        let point = int_digits.len() as i64 + exp;
        let mut int: u128 = 0;
        let mut exact = true;
        let mut saturated = false;
        for (k, &d) in digits.enumerate() {
            let d = u128::from(d - b'0');
            if (k as i64) < point {
                match int.checked_mul(10).and_then(|v| v.checked_add(d)) {
                    Some(v) => int = v,
                    None => saturated = true,
                }
            } else if d != 0 {
                exact = false;
            }
        }
        // Zeros the exponent adds after the last digit.
        let written = (int_digits.len() + frac_digits.len()) as i64;
        // (Zero stays zero: no loop of 10^5 turns per "0e99999".)
        for _ in written..if int == 0 { written } else { point } {
            match int.checked_mul(10) {
                Some(v) => int = v,
                None => {
                    saturated = true;
                    break;
                }
            }
        }
        let max = i128::MAX as u128;
        if saturated || int > max {
            int = max;
            exact = false;
        }
        let int = int as i128;
        Ok(Value::Num(Num {
            int: if neg { -int } else { int },
            exact,
        }))
    }
}

/// Appends `s` to `out` as a JSON string (quoted, escaped).
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes one JSON object member by member: `Obj::new(&mut s).num("a", 1).str("b", "x").end()`.
pub struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    /// Opens an object at the end of `out`.
    pub fn new(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        write_str(self.out, k);
        self.out.push(':');
        self.out
    }

    /// A member with an integer value.
    pub fn int(mut self, k: &str, v: i64) -> Self {
        let o = self.key(k);
        let _ = write!(o, "{v}");
        self
    }

    /// A member with a time in seconds, from nanoseconds (`3.000125`; `3` when whole).
    pub fn secs(mut self, k: &str, ns: u64) -> Self {
        let o = self.key(k);
        let _ = write!(o, "{}", ns / 1_000_000_000);
        let frac = ns % 1_000_000_000;
        if frac != 0 {
            let mut digits = [0u8; 9];
            let mut f = frac;
            for d in digits.iter_mut().rev() {
                *d = b'0' + (f % 10) as u8;
                f /= 10;
            }
            let end = 9 - digits.iter().rev().take_while(|&&d| d == b'0').count();
            o.push('.');
            o.push_str(core::str::from_utf8(&digits[..end]).unwrap_or("0"));
        }
        self
    }

    /// A member with a string value.
    pub fn str(mut self, k: &str, v: &str) -> Self {
        let o = self.key(k);
        write_str(o, v);
        self
    }

    /// A member whose value is raw JSON text the caller built (an array, an object).
    pub fn raw(mut self, k: &str, json: &str) -> Self {
        let o = self.key(k);
        o.push_str(json);
        self
    }

    /// Closes the object.
    pub fn end(self) {
        self.out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn parses_the_parameters_of_an_iperf3_3_12_client() {
        let t = br#"{"tcp":true,"omit":0,"time":3,"num":0,"blockcount":0,"parallel":2,"reverse":true,"len":131072,"pacing_timer":1000,"client_version":"3.12"}"#;
        let v = parse(t).unwrap();
        assert_eq!(v.get("tcp"), Some(&Value::Bool(true)));
        assert_eq!(v.get("time"), Some(&Value::Num(Num::of(3))));
        assert_eq!(v.get("len"), Some(&Value::Num(Num::of(131072))));
        assert_eq!(
            v.get("client_version"),
            Some(&Value::Str("3.12".to_string()))
        );
        assert_eq!(v.get("udp"), None);
    }

    #[test]
    fn numbers_strings_and_nesting() {
        let v = parse(b" [ -0.5e2 , 1E+3, 0, \"a\\\"\\\\\\/\\n\\u00e9\\ud83d\\ude00\", [], {}, null, false ] ").unwrap();
        assert_eq!(
            v,
            Value::Arr(vec![
                Value::Num(Num::of(-50)),
                Value::Num(Num::of(1000)),
                Value::Num(Num::of(0)),
                Value::Str("a\"\\/\n\u{e9}\u{1f600}".to_string()),
                Value::Arr(vec![]),
                Value::Obj(vec![]),
                Value::Null,
                Value::Bool(false),
            ])
        );
        // 10 GB, as cJSON prints -n 10G; 1e20 as it prints what is over 2^63.
        assert_eq!(parse(b"10737418240"), Ok(Value::Num(Num::of(10737418240))));
        assert_eq!(
            parse(b"1e+20"),
            Ok(Value::Num(Num::of(100_000_000_000_000_000_000)))
        );
        let inexact = |int| Ok(Value::Num(Num { int, exact: false }));
        for (text, want) in [
            (&b"3.000124"[..], inexact(3)),
            (b"-2.5", inexact(-2)),
            (b"0.001", inexact(0)),
            (b"12.55e1", inexact(125)),
            (b"125e-2", inexact(1)),
            (b"1e999", inexact(i128::MAX)),
            (b"-1e999", inexact(-i128::MAX)),
            (
                b"123456789012345678901234567890123456789012345",
                inexact(i128::MAX),
            ),
        ] {
            assert_eq!(parse(text), want, "{:?}", core::str::from_utf8(text));
        }
        for (text, want) in [
            (&b"12.50e1"[..], 125),
            (b"1.5e1", 15),
            (b"1000e-3", 1),
            (b"0e5", 0),
            (b"-0", 0),
            (b"1e1000000000000000000000", i128::MAX),
        ] {
            let got = parse(text).unwrap();
            let Value::Num(n) = got else { panic!() };
            assert_eq!(n.int, want, "{:?}", core::str::from_utf8(text));
            assert_eq!(
                n.exact,
                want != i128::MAX,
                "{:?}",
                core::str::from_utf8(text)
            );
        }
    }

    #[test]
    fn refuses_what_is_not_json() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\"}",
            b"{\"a\":1,}",
            b"[1,]",
            b"[1 2]",
            b"01",
            b"1.",
            b"-",
            b"1e",
            b".5",
            b"tru",
            b"nul",
            b"\"abc",
            b"\"a\nb\"",
            b"\"\\x\"",
            b"\"\\u12\"",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\xff\"",
            b"{} {}",
            b"{'a':1}",
            b"\x00",
        ] {
            assert!(
                parse(bad).is_err(),
                "{:?} parsed",
                core::str::from_utf8(bad)
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep: Vec<u8> = core::iter::repeat_n(b'[', 100_000).collect();
        assert_eq!(parse(&deep).unwrap_err().what, "nested too deeply");
        let mut ok: Vec<u8> = core::iter::repeat_n(b'[', MAX_DEPTH).collect();
        ok.extend(core::iter::repeat_n(b']', MAX_DEPTH));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn writes_what_it_reads() {
        let mut s = String::new();
        Obj::new(&mut s)
            .int("id", 1)
            .int("bytes", -1)
            .secs("end_time", 3_000_125_000)
            .secs("whole", 2_000_000_000)
            .secs("tiny", 1)
            .str("text", "a \"q\" \\ \n\t\u{1}")
            .raw("streams", "[]")
            .end();
        assert_eq!(
            s,
            r#"{"id":1,"bytes":-1,"end_time":3.000125,"whole":2,"tiny":0.000000001,"text":"a \"q\" \\ \n\t\u0001","streams":[]}"#
        );
        let v = parse(s.as_bytes()).unwrap();
        assert_eq!(
            v.get("text"),
            Some(&Value::Str("a \"q\" \\ \n\t\u{1}".to_string()))
        );
        assert_eq!(
            v.get("end_time"),
            Some(&Value::Num(Num {
                int: 3,
                exact: false
            }))
        );
    }
}
