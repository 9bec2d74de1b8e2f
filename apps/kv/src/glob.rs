//! Redis's glob patterns (KEYS, SCAN MATCH, CONFIG GET): `*`, `?`, `[abc]`, `[^a]`, `[a-z]`,
//! `\x`. Matching is linear-time backtracking to the last `*` only (every other token matches
//! exactly one byte, so that is complete), so hostile patterns cannot blow up.

/// One single-byte token at `p[i..]`: whether it matches `c`, and its length in the pattern.
fn token(p: &[u8], i: usize, c: u8) -> (bool, usize) {
    match p[i] {
        b'?' => (true, 1),
        b'\\' if i + 1 < p.len() => (p[i + 1] == c, 2),
        b'[' => {
            let mut j = i + 1;
            let not = p.get(j) == Some(&b'^');
            if not {
                j += 1;
            }
            let mut hit = false;
            // As Redis: an unterminated class runs to the pattern's end.
            while j < p.len() && p[j] != b']' {
                if p[j] == b'\\' && j + 1 < p.len() {
                    hit |= p[j + 1] == c;
                    j += 2;
                } else if j + 2 < p.len() && p[j + 1] == b'-' && p[j + 2] != b']' {
                    let (a, b) = (p[j].min(p[j + 2]), p[j].max(p[j + 2]));
                    hit |= (a..=b).contains(&c);
                    j += 3;
                } else {
                    hit |= p[j] == c;
                    j += 1;
                }
            }
            let end = if j < p.len() { j + 1 } else { j };
            (hit != not, end - i)
        }
        lit => (lit == c, 1),
    }
}

/// True if `s` matches the glob `pattern` (case-sensitive).
pub fn matches(pattern: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    // Where to resume after the last `*`: its pattern index and the subject index it took.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < pattern.len() && pattern[pi] == b'*' {
            while pi < pattern.len() && pattern[pi] == b'*' {
                pi += 1;
            }
            star = Some((pi, si));
            continue;
        }
        if si == s.len() {
            return pi == pattern.len();
        }
        if pi < pattern.len() {
            let (ok, len) = token(pattern, pi, s[si]);
            if ok {
                pi += len;
                si += 1;
                continue;
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn redis_glob_cases() {
        let yes: &[(&str, &str)] = &[
            ("*", ""),
            ("*", "abc"),
            ("h?llo", "hello"),
            ("h*llo", "hllo"),
            ("h*llo", "heeeello"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("h[b-a]llo", "hallo"),
            ("h\\*llo", "h*llo"),
            ("a*b*c", "aXbYc"),
            ("user:*", "user:1"),
            ("[\\]]", "]"),
            ("a[bc", "ab"),
        ];
        for (p, s) in yes {
            assert!(matches(p.as_bytes(), s.as_bytes()), "{p} ~ {s}");
        }
        let no: &[(&str, &str)] = &[
            ("h?llo", "hllo"),
            ("h[ae]llo", "hillo"),
            ("h[^e]llo", "hello"),
            ("h[a-b]llo", "hcllo"),
            ("h\\*llo", "hello"),
            ("a*b", "ac"),
            ("abc", "abcd"),
            ("", "a"),
        ];
        for (p, s) in no {
            assert!(!matches(p.as_bytes(), s.as_bytes()), "{p} !~ {s}");
        }
        // Linear time on a pattern that is exponential for naive recursion.
        let s = alloc::vec![b'a'; 10_000];
        assert!(!matches(b"*a*a*a*a*a*a*a*a*a*a*a*a*b", &s));
    }
}
