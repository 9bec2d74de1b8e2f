//! The DNS trigger (as MirageOS's Jitsu): a query for a service's name starts its guest, and the
//! answer (an A record with the service address) is sent once the guest serves. Only standard
//! queries with one question are answered; names that are not ours get REFUSED, a malformed
//! message gets FORMERR when it has a header to answer and nothing otherwise.

use std::net::Ipv4Addr;

pub const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;

/// A parsed query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// Lowercase, without the trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question section as it arrived (echoed in the answer).
    question: Vec<u8>,
    /// Recursion desired (echoed).
    rd: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Bad {
    /// Not even a header: drop it.
    Drop,
    /// Answer with this (FORMERR/NOTIMP) reply.
    Reply(Vec<u8>),
}

fn header_reply(id: u16, rd: bool, rcode: u8) -> Vec<u8> {
    let mut r = Vec::with_capacity(12);
    r.extend_from_slice(&id.to_be_bytes());
    r.push(0x80 | if rd { 1 } else { 0 }); // QR, opcode 0, RD echoed
    r.push(rcode);
    r.extend_from_slice(&[0; 8]);
    r
}

/// Parses a query message.
pub fn parse(m: &[u8]) -> Result<Query, Bad> {
    if m.len() < 12 {
        return Err(Bad::Drop);
    }
    let id = u16::from_be_bytes([m[0], m[1]]);
    let rd = m[2] & 1 != 0;
    if m[2] & 0x80 != 0 {
        return Err(Bad::Drop); // a response: never answer those (no loops)
    }
    if (m[2] >> 3) & 0x0f != 0 {
        return Err(Bad::Reply(header_reply(id, rd, 4))); // NOTIMP
    }
    let qd = u16::from_be_bytes([m[4], m[5]]);
    if qd != 1 {
        return Err(Bad::Reply(header_reply(id, rd, 1)));
    }
    let mut at = 12;
    let mut name = String::new();
    loop {
        let Some(&len) = m.get(at) else {
            return Err(Bad::Reply(header_reply(id, rd, 1)));
        };
        at += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 || at + usize::from(len) > m.len() || name.len() > 253 {
            return Err(Bad::Reply(header_reply(id, rd, 1)));
        }
        if !name.is_empty() {
            name.push('.');
        }
        for &b in &m[at..at + usize::from(len)] {
            name.push(char::from(b.to_ascii_lowercase()));
        }
        at += usize::from(len);
    }
    if at + 4 > m.len() {
        return Err(Bad::Reply(header_reply(id, rd, 1)));
    }
    let qtype = u16::from_be_bytes([m[at], m[at + 1]]);
    let qclass = u16::from_be_bytes([m[at + 2], m[at + 3]]);
    Ok(Query {
        id,
        name,
        qtype,
        qclass,
        question: m[12..at + 4].to_vec(),
        rd,
    })
}

fn reply(q: &Query, rcode: u8, answers: u16) -> Vec<u8> {
    let mut r = Vec::with_capacity(64);
    r.extend_from_slice(&q.id.to_be_bytes());
    r.push(0x84 | if q.rd { 1 } else { 0 }); // QR, AA
    r.push(rcode);
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&answers.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&q.question);
    r
}

/// The authoritative answer for our name: an A record when asked for A (or ANY), no data for
/// other types (so a resolver asking AAAA first moves on at once).
pub fn answer(q: &Query, addr: Ipv4Addr, ttl: u32) -> Vec<u8> {
    let a = (q.qtype == TYPE_A || q.qtype == 255) && (q.qclass == CLASS_IN || q.qclass == 255);
    let mut r = reply(q, 0, u16::from(a));
    if a {
        r.extend_from_slice(&[0xc0, 12]); // the question's name
        r.extend_from_slice(&TYPE_A.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&addr.octets());
    }
    r
}

/// REFUSED: not a name of ours.
pub fn refused(q: &Query) -> Vec<u8> {
    reply(q, 5, 0)
}

/// SERVFAIL: ours, but its guest could not be started.
pub fn servfail(q: &Query) -> Vec<u8> {
    reply(q, 2, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    #[test]
    fn an_a_query_gets_the_address() {
        let q = parse(&query("WWW.lab", TYPE_A)).unwrap();
        assert_eq!((q.id, q.name.as_str(), q.qtype), (0xabcd, "www.lab", 1));
        let r = answer(&q, Ipv4Addr::new(10, 0, 0, 50), 0);
        assert_eq!(&r[0..2], &[0xab, 0xcd]);
        assert_eq!(r[2], 0x85);
        assert_eq!(r[3], 0);
        assert_eq!(&r[6..8], &[0, 1]);
        assert_eq!(&r[r.len() - 4..], &[10, 0, 0, 50]);
    }

    #[test]
    fn aaaa_gets_no_data_and_others_are_refused() {
        let q = parse(&query("www.lab", 28)).unwrap();
        let r = answer(&q, Ipv4Addr::new(10, 0, 0, 50), 0);
        assert_eq!((&r[6..8], r[3]), (&[0u8, 0][..], 0));
        assert_eq!(refused(&q)[3], 5);
        assert_eq!(servfail(&q)[3], 2);
    }

    #[test]
    fn malformed_queries_get_formerr_or_nothing() {
        assert_eq!(parse(&[1, 2, 3]), Err(Bad::Drop));
        let mut m = query("www.lab", 1);
        m[2] |= 0x80;
        assert_eq!(parse(&m), Err(Bad::Drop), "responses are never answered");
        let m = query("www.lab", 1);
        for n in 12..m.len() {
            match parse(&m[..n]) {
                Err(Bad::Reply(r)) => assert_eq!(r[3], 1, "cut at {n}"),
                other => panic!("cut at {n}: {other:?}"),
            }
        }
        let mut m = query("www.lab", 1);
        m[12] = 0xc0; // a pointer in a question
        assert!(matches!(parse(&m), Err(Bad::Reply(r)) if r[3] == 1));
        let mut m = query("www.lab", 1);
        m[2] = 0x10; // opcode 2 (status)
        assert!(matches!(parse(&m), Err(Bad::Reply(r)) if r[3] == 4));
    }
}
