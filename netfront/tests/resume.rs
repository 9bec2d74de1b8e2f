//! The vif across a restore or live migration, against the simulated xenstored and netback:
//! `SimState::new_domain` voids every grant, port and frame, the "toolstack" recreates the
//! device's nodes (often with a backend in another domain), and a fresh netback attaches to
//! what the driver publishes. Checked: the reconnect (new refs, port, features), RX buffers
//! posted again at their pages' new frames, unacknowledged TX sent again in order, a poorer
//! backend, a failed handshake retried with backoff, and 20 cycles without growth.

use std::cell::RefCell;
use std::rc::Rc;

use netfront::sim::{xenstore_backend, BackendConfig, SimNetback};
use netfront::smoltcp::phy::Device;
use netfront::smoltcp::time::Instant;
use netfront::{Config, Error, Netfront, Resume, RETRY_MIN_NS};
use xen::hal::{Hal, SimHal};
use xen::xenbus::Never;
use xen::xenstore::sim::Sim;
use xen::xenstore::Client;

type Shared = Rc<RefCell<Option<SimNetback>>>;

struct Setup {
    xs: Client<Sim>,
    hal: SimHal,
    fe: String,
    be: String,
    /// The backend's domain now.
    domid: u16,
    nb: Shared,
}

/// Adds the xenstore half of a backend for the device at `fe`/`be`, unmapping the shared
/// netback's rings when the frontend closes.
fn add_backend(xs: &mut Client<Sim>, fe: &str, be: &str, config: BackendConfig, nb: &Shared) {
    let nb2 = nb.clone();
    xs.transport_mut().add_peer(xenstore_backend(
        fe.into(),
        be.into(),
        config,
        Box::new(move || {
            if let Some(n) = nb2.borrow_mut().as_mut() {
                n.detach();
            }
        }),
    ));
}

fn setup(config: BackendConfig) -> Setup {
    let mut xs = Sim::client(1);
    let (fe, be) = xs.transport_mut().store().add_device("vif", 0, 0);
    let nb: Shared = Rc::new(RefCell::new(None));
    add_backend(&mut xs, &fe, &be, config, &nb);
    Setup {
        xs,
        hal: SimHal::new(),
        fe,
        be,
        domid: 0,
        nb,
    }
}

fn connect(s: &mut Setup) -> Netfront<SimHal> {
    let nf = Netfront::connect(
        &mut s.xs,
        s.hal.clone(),
        "device/vif/0",
        Config::default(),
        &mut Never,
    )
    .unwrap();
    attach(s);
    nf
}

/// Attaches a fresh simulated netback (as the backend's domain) to what the frontend
/// published.
fn attach(s: &mut Setup) {
    let nb = SimNetback::from_store(s.xs.transport_mut().store(), &s.fe, &s.hal, s.domid)
        .expect("the published rings map for the new backend");
    *s.nb.borrow_mut() = Some(nb);
}

/// What a restore does: the domain is new (grants, ports, frames void), the old netback is
/// gone, and the toolstack recreates the vif's nodes (frontend Initialising, a backend in
/// domain `domid` that goes InitWait with `config`).
fn restore(s: &mut Setup, domid: u16, config: BackendConfig) {
    s.hal.state.lock().new_domain();
    *s.nb.borrow_mut() = None;
    let store = s.xs.transport_mut().store();
    store.rm(&s.be);
    store.rm(&s.fe);
    let (fe, be) = store.add_device("vif", 0, domid);
    add_backend(&mut s.xs, &fe, &be, config, &s.nb);
    s.fe = fe;
    s.be = be;
    s.domid = domid;
}

fn read(s: &mut Setup, key: &str) -> Option<String> {
    let p = format!("{}/{key}", s.fe);
    s.xs.transport_mut().store().read_str(&p)
}

fn step(s: &Setup) {
    s.nb.borrow_mut().as_mut().unwrap().step();
}

fn frame(n: u8, len: usize) -> Vec<u8> {
    let mut f = netfront::sim::data(len, u64::from(n) + 1);
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 9]);
    f[12] = 0x88; // an ethertype nobody parses
    f[13] = n;
    f
}

#[test]
fn a_restore_reconnects_to_the_new_backend_reposts_rx_and_resends_unacknowledged_tx() {
    let mut s = setup(BackendConfig::default());
    let mut nf = connect(&mut s);
    let (pages, grants) = {
        let st = s.hal.state.lock();
        (st.live_pages(), st.live_grants())
    };
    let old = (nf.tx_ring_ref(), nf.rx_ring_ref(), nf.event_channel());

    // Two frames acknowledged, two taken by the backend but not answered, two never seen.
    nf.send(&frame(1, 300)).unwrap();
    nf.send(&frame(2, 300)).unwrap();
    step(&s);
    s.nb.borrow_mut().as_mut().unwrap().answer_tx = false;
    nf.send(&frame(3, 2000)).unwrap();
    nf.send(&frame(4, 5000 % 1514)).unwrap();
    step(&s);
    nf.send(&frame(5, 1514)).unwrap();
    nf.send(&frame(6, 60)).unwrap();
    // The old backend answered the first two before the move (never reclaimed by us): they
    // are not sent again.
    let answered = nf.stats().tx_completions;
    assert_eq!(answered, 0, "nothing reclaimed yet");

    restore(&mut s, 2, BackendConfig::default());
    assert!(nf.needs_reconnect());
    assert_eq!(nf.send(&frame(7, 100)), Err(Error::Moved));
    assert!(Device::transmit(&mut nf, Instant::ZERO).is_none());
    assert!(Device::receive(&mut nf, Instant::ZERO).is_none());
    // The old refs are void: the sim refuses them.
    assert!(s.hal.state.lock().map_grant(old.0, 0).is_none());

    let r = match nf.resume(&mut s.xs, &mut Never) {
        Resume::Reconnected(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(r.generation, 1);
    assert_eq!(r.backend_id, 2);
    assert_eq!(r.attempts, 1);
    assert_eq!(r.old_mac, None);
    assert!(!nf.needs_reconnect() && nf.link_up());
    assert_eq!(nf.backend_id(), 2);
    assert!(nf.take_reconnected());
    assert!(!nf.take_reconnected(), "announced once");
    assert_eq!(read(&mut s, "state").as_deref(), Some("4"));
    assert_eq!(
        read(&mut s, "tx-ring-ref"),
        Some(nf.tx_ring_ref().to_string())
    );
    assert_eq!(
        read(&mut s, "rx-ring-ref"),
        Some(nf.rx_ring_ref().to_string())
    );
    assert_eq!(
        read(&mut s, "event-channel"),
        Some(nf.event_channel().to_string())
    );
    assert_ne!(old.0, nf.tx_ring_ref());
    // Same pages, each granted once (the old grants were voided, not ended).
    assert_eq!(s.hal.state.lock().live_pages(), pages);
    assert_eq!(s.hal.state.lock().live_grants(), grants);

    attach(&mut s);
    step(&s);
    // Every RX buffer was posted again, each grant naming its page's new frame (a stale
    // frame would not map: the backend would record a BadGrant below).
    assert_eq!(
        s.nb.borrow().as_ref().unwrap().rx_available(),
        Config::default().rx_buffers
    );
    // A frame sent through the announcement path goes first; then the kept frames, in order.
    nf.send(&frame(0xa0, 42)).unwrap();
    assert_eq!(nf.resend_pending(), r.resend);
    assert!(Device::transmit(&mut nf, Instant::ZERO).is_some());
    s.nb.borrow_mut().as_mut().unwrap().answer_tx = true;
    step(&s);
    let got: Vec<Vec<u8>> =
        s.nb.borrow_mut()
            .as_mut()
            .unwrap()
            .from_guest
            .drain(..)
            .collect();
    let want = [
        frame(0xa0, 42),
        frame(3, 2000),
        frame(4, 5000 % 1514),
        frame(5, 1514),
        frame(6, 60),
    ];
    assert_eq!(got, want);
    assert_eq!(r.resend, 4);
    assert_eq!(nf.stats().tx_resent, 4);
    assert_eq!(nf.stats().reconnects, 1);

    // Receive on every buffer, twice over: each lands in its page at the new frame.
    for i in 0..2 * Config::default().rx_buffers {
        let f = frame(i as u8, 100 + i);
        s.nb.borrow_mut().as_mut().unwrap().send_to_guest(&f);
        step(&s);
        assert_eq!(nf.receive().unwrap(), Some(&f[..]), "frame {i}");
    }
    assert!(s.nb.borrow().as_ref().unwrap().violations.is_empty());

    nf.shutdown(&mut s.xs, &mut Never).unwrap();
    assert_eq!(s.hal.state.lock().live_grants(), 0);
    assert_eq!(s.hal.state.lock().live_pages(), 0);
}

#[test]
fn a_poorer_backend_after_the_move_gets_frames_it_can_take() {
    let mut s = setup(BackendConfig {
        gso: true,
        ..BackendConfig::default()
    });
    let mut nf = connect(&mut s);
    assert!(nf.tso_max() > 0 && nf.scatter_gather());
    assert!(nf.capabilities().segmentation.tcpv4.is_some());
    // A GSO segment and an ordinary frame, not answered before the move.
    s.nb.borrow_mut().as_mut().unwrap().answer_tx = false;
    let mut seg = gso_segment(8000);
    netfront::fill_tcp_checksum(&mut seg, true);
    nf.send_gso(&seg, Some(1448)).unwrap();
    nf.send(&frame(1, 3000 % 1514)).unwrap();

    restore(
        &mut s,
        3,
        BackendConfig {
            gso: false,
            sg: false,
            ..BackendConfig::default()
        },
    );
    assert!(matches!(
        nf.resume(&mut s.xs, &mut Never),
        Resume::Reconnected(_)
    ));
    assert_eq!(nf.tso_max(), 0);
    assert!(!nf.scatter_gather());
    let caps = nf.capabilities();
    assert_eq!(caps.segmentation.tcpv4, None);
    assert!(
        caps.checksum.tcp.tx(),
        "smoltcp computes TCP checksums again"
    );
    attach(&mut s);
    assert!(nf.flush_resend());
    step(&s);
    // The segment the new backend cannot take is dropped (TCP sends its bytes again, cut to
    // the MTU); the frame goes.
    let got: Vec<Vec<u8>> =
        s.nb.borrow_mut()
            .as_mut()
            .unwrap()
            .from_guest
            .drain(..)
            .collect();
    assert_eq!(got, [frame(1, 3000 % 1514)]);
    assert_eq!(nf.stats().tx_resent, 1);
    assert_eq!(nf.stats().tx_failed, 1);
    assert!(nf.send_gso(&seg, Some(1448)).is_err());
    assert!(s.nb.borrow().as_ref().unwrap().violations.is_empty());
}

/// A TCP/IPv4 segment of `payload` bytes (for transmit GSO).
fn gso_segment(payload: usize) -> Vec<u8> {
    use netfront::smoltcp::wire::*;
    let tcp_len = 20 + payload;
    let mut f = vec![0u8; 14 + 20 + tcp_len];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    f[6..12].copy_from_slice(&[0, 0x16, 0x3e, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_total_len((20 + tcp_len) as u16);
    ip.set_hop_limit(64);
    ip.set_next_header(IpProtocol::Tcp);
    ip.set_src_addr(Ipv4Address::new(10, 0, 0, 2));
    ip.set_dst_addr(Ipv4Address::new(10, 0, 0, 1));
    ip.fill_checksum();
    let t = &mut f[34..];
    t[0..2].copy_from_slice(&80u16.to_be_bytes());
    t[2..4].copy_from_slice(&5000u16.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x18;
    t.get_mut(20..)
        .unwrap()
        .copy_from_slice(&netfront::sim::data(payload, 3));
    f
}

/// A backend in domain 2 that answers nonsense: it goes InitWait, then writes an invalid
/// state when the frontend connects.
fn nonsense_backend(xs: &mut Client<Sim>, fe: String, be: String) {
    xs.transport_mut().add_peer(move |st| {
        let state = |st: &xen::xenstore::sim::Store, p: &str| st.read_str(&format!("{p}/state"));
        match (state(st, &fe).as_deref(), state(st, &be).as_deref()) {
            (_, Some("1")) => {
                st.write(&format!("{fe}/mac"), b"00:16:3e:00:00:01");
                st.write(&format!("{be}/feature-rx-copy"), b"1");
                st.write(&format!("{be}/state"), b"2");
            }
            (Some("4"), Some("2")) => st.write(&format!("{be}/state"), b"connected!"),
            (Some("5"), _) => st.write(&format!("{be}/state"), b"6"),
            _ => {}
        }
    });
}

#[test]
fn a_failed_reconnect_is_retried_with_backoff_and_leaks_nothing() {
    let mut s = setup(BackendConfig::default());
    let mut nf = connect(&mut s);
    let pages = s.hal.state.lock().live_pages();

    // First the new backend lacks rx-copy: refused as at boot.
    restore(
        &mut s,
        2,
        BackendConfig {
            rx_copy: false,
            ..BackendConfig::default()
        },
    );
    s.hal.state.lock().now_ns = 1_000_000_000;
    let r = nf.resume(&mut s.xs, &mut Never);
    assert_eq!(
        r,
        Resume::Failed {
            error: Error::NoRxCopy,
            retry_at: 1_000_000_000 + RETRY_MIN_NS
        }
    );
    assert_eq!(read(&mut s, "state").as_deref(), Some("6"), "closed");
    assert_eq!(s.hal.state.lock().live_grants(), 0);
    // Not before the backoff.
    assert_eq!(
        nf.resume(&mut s.xs, &mut Never),
        Resume::Waiting {
            retry_at: 1_000_000_000 + RETRY_MIN_NS
        }
    );
    assert_eq!(nf.retry_at(), Some(1_000_000_000 + RETRY_MIN_NS));

    // Then one that answers nonsense after the rings were published: the grants of that
    // attempt are ended (it never mapped them), the port closed; the wait doubles.
    s.hal.state.lock().now_ns += RETRY_MIN_NS;
    {
        let store = s.xs.transport_mut().store();
        store.rm(&s.be);
        store.rm(&s.fe);
    }
    let (fe, be) = s.xs.transport_mut().store().add_device("vif", 0, 4);
    nonsense_backend(&mut s.xs, fe.clone(), be.clone());
    s.fe = fe;
    s.be = be;
    let now = s.hal.state.lock().now_ns;
    match nf.resume(&mut s.xs, &mut Never) {
        Resume::Failed {
            error: Error::Xenbus(_),
            retry_at,
        } => assert_eq!(retry_at, now + 2 * RETRY_MIN_NS),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.hal.state.lock().live_grants(), 0);
    assert_eq!(s.hal.state.lock().live_pages(), pages);
    assert!(nf.needs_reconnect());

    // The toolstack gives it a working backend: the next attempt after the wait connects.
    s.hal.state.lock().now_ns += 2 * RETRY_MIN_NS;
    {
        let store = s.xs.transport_mut().store();
        store.rm(&s.be);
        store.rm(&s.fe);
    }
    let (fe, be) = s.xs.transport_mut().store().add_device("vif", 0, 5);
    add_backend(&mut s.xs, &fe, &be, BackendConfig::default(), &s.nb);
    s.fe = fe;
    s.be = be;
    s.domid = 5;
    match nf.resume(&mut s.xs, &mut Never) {
        Resume::Reconnected(r) => {
            assert_eq!(r.attempts, 3);
            assert_eq!(r.backend_id, 5);
            assert_eq!(r.took_ns, 3 * RETRY_MIN_NS);
        }
        other => panic!("{other:?}"),
    }
    attach(&mut s);
    let f = frame(9, 500);
    nf.send(&f).unwrap();
    step(&s);
    assert_eq!(
        s.nb.borrow_mut().as_mut().unwrap().from_guest.pop_front(),
        Some(f.clone())
    );
    s.nb.borrow_mut().as_mut().unwrap().send_to_guest(&f);
    step(&s);
    assert_eq!(nf.receive().unwrap(), Some(&f[..]));
    assert_eq!(s.hal.state.lock().live_pages(), pages);
}

#[test]
fn twenty_restores_in_a_row_hold_no_more_pages_or_grants() {
    let mut s = setup(BackendConfig::default());
    let mut nf = connect(&mut s);
    let (pages, grants) = {
        let st = s.hal.state.lock();
        (st.live_pages(), st.live_grants())
    };
    for cycle in 0..20u16 {
        // Something in flight each time.
        s.nb.borrow_mut().as_mut().unwrap().answer_tx = false;
        let f = frame(cycle as u8, 200 + usize::from(cycle));
        nf.send(&f).unwrap();
        restore(&mut s, cycle + 2, BackendConfig::default());
        assert!(
            matches!(nf.resume(&mut s.xs, &mut Never), Resume::Reconnected(_)),
            "cycle {cycle}"
        );
        assert!(nf.take_reconnected());
        attach(&mut s);
        assert!(nf.flush_resend());
        step(&s);
        assert_eq!(
            s.nb.borrow_mut().as_mut().unwrap().from_guest.pop_front(),
            Some(f.clone())
        );
        s.nb.borrow_mut().as_mut().unwrap().send_to_guest(&f);
        step(&s);
        assert_eq!(nf.receive().unwrap(), Some(&f[..]));
        assert_eq!(nf.backend_id(), cycle + 2);
        let st = s.hal.state.lock();
        assert_eq!((st.live_pages(), st.live_grants()), (pages, grants));
        assert_eq!(st.generation, u64::from(cycle) + 1);
    }
    assert_eq!(nf.stats().reconnects, 20);
    assert_eq!(nf.stats().tx_resent, 20);
    nf.shutdown(&mut s.xs, &mut Never).unwrap();
    assert_eq!(s.hal.state.lock().live_pages(), 0);
}

#[test]
fn a_move_during_a_close_or_before_release_ends_nothing_void() {
    let mut s = setup(BackendConfig::default());
    let nf = connect(&mut s);
    restore(&mut s, 2, BackendConfig::default());
    // Released after the move: the void grants are not ended (the sim would refuse them
    // anyway), the pages are freed.
    assert!(nf.release().is_ok());
    assert_eq!(s.hal.state.lock().live_pages(), 0);
    let _ = s.hal.generation();
}

#[test]
fn a_new_mac_after_the_move_is_reported_and_used() {
    let mut s = setup(BackendConfig::default());
    let mut nf = connect(&mut s);
    assert_eq!(nf.mac(), [0, 0x16, 0x3e, 0, 0, 1]);
    restore(
        &mut s,
        2,
        BackendConfig {
            mac: "00:16:3e:00:00:2a".into(),
            ..BackendConfig::default()
        },
    );
    match nf.resume(&mut s.xs, &mut Never) {
        Resume::Reconnected(r) => assert_eq!(r.old_mac, Some([0, 0x16, 0x3e, 0, 0, 1])),
        other => panic!("{other:?}"),
    }
    assert_eq!(nf.mac(), [0, 0x16, 0x3e, 0, 0, 0x2a]);
}
