//! Fuzzes the guest command line as a networked app sees it: any bytes parse
//! ([`xen::cmdline::Cmdline`] with the network's keys and a few generic ones), and what is
//! accepted is well formed: only known keys, each once, each value passing its key's validator,
//! written back out it parses to the same settings with no problem; the network keys that pass
//! their validators are accepted by [`net::IpConfig::from_args`] (the only error left is
//! `gw=` without a static `ip=`), and a [`net::Net`] built from the result has the
//! addresses asked for. Run with `scripts/fuzz 60 cmdline`.
#![no_main]

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use net::smoltcp::wire::IpCidr;
use net::stack::DevPhy;
use net::{IpConfig, Ipv4Mode, Net};
use xen::cmdline::{parse_bool, validate, Cmdline, KeySpec, RUNTIME_KEYS};

const APP: &[KeySpec] = &[
    KeySpec {
        name: "port",
        help: "",
        validate: validate::port,
    },
    KeySpec {
        name: "conns",
        help: "",
        validate: validate::number,
    },
    KeySpec {
        name: "debug",
        help: "",
        validate: validate::flag,
    },
    KeySpec {
        name: "test",
        help: "",
        validate: validate::non_empty,
    },
    KeySpec {
        name: "msg",
        help: "",
        validate: |_| Ok(()),
    },
    KeySpec {
        name: "peer",
        help: "",
        validate: validate::ipv4,
    },
    KeySpec {
        name: "net",
        help: "",
        validate: validate::ipv4_cidr,
    },
    // A key both lists have: the runtime's spec wins.
    KeySpec {
        name: "log",
        help: "",
        validate: |_| Ok(()),
    },
];

fn keys() -> impl Iterator<Item = &'static KeySpec> {
    RUNTIME_KEYS.iter().chain(net::stack::KEYS).chain(APP)
}

/// Writes settings back as a command line.
fn unparse<'a>(settings: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> String {
    let mut line = String::new();
    for (k, v) in settings {
        line.push_str(k);
        if let Some(v) = v {
            line.push('=');
            if v.is_empty() || v.bytes().any(|b| b.is_ascii_whitespace() || b == b'=') {
                line.push('"');
                line.push_str(v);
                line.push('"');
            } else {
                line.push_str(v);
            }
        }
        line.push(' ');
    }
    line
}

fuzz_target!(|data: &[u8]| {
    let app: Vec<KeySpec> = net::stack::KEYS.iter().chain(APP).copied().collect();
    let c = Cmdline::parse(data, &app);
    for p in c.problems() {
        assert!(!p.to_string().is_empty());
    }
    let settings: Vec<(&str, Option<&str>)> = c.iter().collect();
    for (i, &(k, v)) in settings.iter().enumerate() {
        let spec = keys()
            .find(|s| s.name == k)
            .expect("accepted an unknown key");
        assert!(
            (spec.validate)(v.unwrap_or("")).is_ok(),
            "{k}={v:?} accepted"
        );
        assert!(!settings[..i].iter().any(|(j, _)| *j == k), "{k} twice");
        assert_eq!(c.get(k), Some(v.unwrap_or("")));
        assert!(
            !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'=' && b != b'"')
        );
        if let Some(v) = v {
            assert!(!v.contains('"') && !v.contains('\0'), "{k}={v:?}");
        }
    }
    // Typed lookups agree with the validators.
    if let Some(p) = c.get("port") {
        assert!(c.parsed::<u16>("port").is_some_and(|p| p != 0), "port={p}");
    }
    if c.get("conns").is_some() {
        assert!(c.parsed::<u64>("conns").is_some());
    }
    if let Some(d) = c.get("debug") {
        assert_eq!(c.flag("debug"), parse_bool(d).unwrap());
    }
    assert_eq!(c.get("log").is_some(), c.log_level().is_some());
    // Written back, it means the same.
    let again = Cmdline::parse(unparse(settings.iter().copied()).as_bytes(), &app);
    assert!(
        again.problems().is_empty(),
        "{:?} from {settings:?}",
        again.problems()
    );
    assert_eq!(again.iter().collect::<Vec<_>>(), settings);

    // The network's view of it.
    let config = match IpConfig::from_args(|k| c.get(k)) {
        Ok(config) => config,
        Err(e) => {
            let static_ip = c.get("ip").is_some_and(|v| v != "dhcp" && v != "off");
            assert!(
                c.get("gw").is_some() && !static_ip,
                "validated but refused: {e}"
            );
            return;
        }
    };
    let wire = Rc::new(RefCell::new(common::Wire::default()));
    let mac = [0x00, 0x16, 0x3e, 0, 0, 1];
    let net = Net::new(DevPhy(common::SimNic(wire)), mac, &config, 1);
    let addrs = net.addresses();
    if let Ipv4Mode::Static { addr, .. } = config.v4 {
        assert_eq!(net.ipv4(), Some(addr));
        assert!(addrs.contains(&IpCidr::Ipv4(addr)), "{addrs:?}");
    }
    if let Some(v6) = config.v6 {
        assert!(addrs.contains(&IpCidr::Ipv6(v6)), "{v6} not in {addrs:?}");
    }
    assert_eq!(net.dns_servers(), config.dns);
    let _ = net.poll(1_000_000);
    let _ = net.poll(3_000_000_000);
});
