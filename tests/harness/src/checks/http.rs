//! The HTTP checks (from `tests/http.rs`): apps/httpd as a domU, driven by curl and wrk in dom0,
//! its answers compared by md5 with the files in apps/httpd/www.

use crate::lab::{dom0_sh, expect, Guest};
use crate::root;

/// The bytes of apps/httpd/www/FILE (empty if it is missing: the md5 check then fails).
pub fn www(file: &str) -> Vec<u8> {
    std::fs::read(root().join("apps/httpd/www").join(file)).unwrap_or_default()
}

/// Starts httpd with a vif of MAC `mac`, `extra` and `more`; waits for "httpd: serving".
pub fn start_httpd(mac: &str, extra: &str, more: &[&str]) -> Result<Guest, String> {
    let vif = format!("vif=['bridge=xenbr0,mac={mac}']");
    let mut lines = vec![vif.as_str()];
    lines.extend_from_slice(more);
    let g = Guest::start_with("httpd", extra, &lines)?;
    g.until("httpd: serving", 90)?;
    Ok(g)
}

/// GET / (by md5), HEAD / (length, type), 404, 405 and a 304 for the ETag, from dom0, against
/// httpd `g` (started with `log=info`: it logs `GET / 200`) at `ip`.
pub fn get_head_404_405_and_etag(g: &Guest, ip: &str) -> Result<String, String> {
    expect(&g.console()?, &format!("on http://{ip}:80/"))?;
    let out = dom0_sh(
        &format!(
            "curl -s http://{ip}/ | md5sum
             curl -sI http://{ip}/ | tr -d '\\r'
             curl -s -o /dev/null -w 'missing %{{http_code}}\\n' http://{ip}/nope
             curl -s -o /dev/null -w 'post %{{http_code}}\\n' -d x=1 http://{ip}/
             etag=$(curl -sI http://{ip}/ | tr -d '\\r' | awk -F': ' 'tolower($1)==\"etag\" {{print $2}}')
             curl -s -o /dev/null -w 'cached %{{http_code}}\\n' -H \"If-None-Match: $etag\" http://{ip}/"
        ),
        60,
    )?;
    let want = format!("{:x}", md5_of(&www("index.html")));
    expect(&out, &want)?;
    expect(&out, "HTTP/1.1 200 OK")?;
    expect(
        &out,
        &format!("Content-Length: {}", www("index.html").len()),
    )?;
    expect(&out, "Content-Type: text/html")?;
    expect(&out, "missing 404")?;
    expect(&out, "post 405")?;
    expect(&out, "cached 304")?;
    expect(&g.console()?, "GET / 200")?;
    Ok(String::new())
}

/// `wrk -t 2 -c 100 -d SECS` against http://IP/ with no error; the note is its req/s.
pub fn wrk_without_errors(ip: &str, secs: u32) -> Result<String, String> {
    // --timeout 10s: a request slower than that counts as an error (wrk's default 2 s
    // would count slow answers under emulation as errors).
    let out = dom0_sh(
        &format!("wrk -t 2 -c 100 -d {secs} --timeout 10s http://{ip}/ 2>&1"),
        120 + secs,
    )?;
    if out.contains("Non-2xx") || out.contains("Socket errors") {
        return Err(format!("errors under load:\n{out}"));
    }
    let rps = out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .map(|v| v.trim().to_string())
        .ok_or(format!("no Requests/sec in:\n{out}"))?;
    let reqs: f64 = rps.parse().map_err(|_| out.clone())?;
    if reqs <= 0.0 {
        return Err(format!("no requests served:\n{out}"));
    }
    Ok(format!("[{rps} req/s]"))
}

/// MD5 (RFC 1321), to compare with dom0's md5sum without a dependency.
pub fn md5_of(data: &[u8]) -> u128 {
    let s: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
        .collect();
    let (mut a0, mut b0, mut c0, mut d0) =
        (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f2 = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f2.rotate_left(s[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, v) in [a0, b0, c0, d0].iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    u128::from_be_bytes(out)
}

#[cfg(test)]
mod tests {
    use super::md5_of;

    #[test]
    fn md5_matches_rfc_1321_test_vectors() {
        assert_eq!(
            format!("{:032x}", md5_of(b"")),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(
            format!("{:032x}", md5_of(b"abc")),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        let long =
            b"12345678901234567890123456789012345678901234567890123456789012345678901234567890";
        assert_eq!(
            format!("{:032x}", md5_of(long)),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
    }
}
