//! The xenbus handshake against the simulated xenstored and netback: keys written, link state,
//! refusals, and teardown (grants ended, pages freed, or leaked while the backend maps them).

use std::cell::RefCell;
use std::rc::Rc;

use netfront::sim::{xenstore_backend, BackendConfig, SimNetback};
use netfront::{Config, Error, Netfront};
use xen::hal::SimHal;
use xen::xenbus::{Never, XenbusState};
use xen::xenstore::sim::Sim;
use xen::xenstore::Client;

type Shared = Rc<RefCell<Option<SimNetback>>>;

struct Setup {
    xs: Client<Sim>,
    hal: SimHal,
    fe: String,
    be: String,
    nb: Shared,
}

fn setup(config: BackendConfig, detach_on_close: bool) -> Setup {
    let mut xs = Sim::client(1);
    let (fe, be) = xs.transport_mut().store().add_device("vif", 0, 0);
    let nb: Shared = Rc::new(RefCell::new(None));
    let nb2 = nb.clone();
    xs.transport_mut().add_peer(xenstore_backend(
        fe.clone(),
        be.clone(),
        config,
        Box::new(move || {
            if detach_on_close {
                if let Some(n) = nb2.borrow_mut().as_mut() {
                    n.detach();
                }
            }
        }),
    ));
    Setup {
        xs,
        hal: SimHal::new(),
        fe,
        be,
        nb,
    }
}

/// Connects the frontend at `device/vif/0` (the simulated daemon plays the backend's side).
fn connect(s: &mut Setup) -> Netfront<SimHal> {
    Netfront::connect(
        &mut s.xs,
        s.hal.clone(),
        "device/vif/0",
        Config::default(),
        &mut Never,
    )
    .unwrap()
}

/// Attaches the simulated netback to what the frontend published.
fn attach(s: &mut Setup) {
    let nb = SimNetback::from_store(s.xs.transport_mut().store(), &s.fe, &s.hal, 0).unwrap();
    *s.nb.borrow_mut() = Some(nb);
}

fn read(xs: &mut Client<Sim>, path: &str) -> Option<String> {
    xs.transport_mut().store().read_str(path)
}

#[test]
fn connect_publishes_rings_and_features_then_shutdown_frees_everything() {
    let mut s = setup(BackendConfig::default(), true);
    let mut nf = connect(&mut s);
    let fe = s.fe.clone();
    let key = |xs: &mut Client<Sim>, k: &str| read(xs, &format!("{fe}/{k}"));
    assert_eq!(
        key(&mut s.xs, "tx-ring-ref"),
        Some(nf.tx_ring_ref().to_string())
    );
    assert_eq!(
        key(&mut s.xs, "rx-ring-ref"),
        Some(nf.rx_ring_ref().to_string())
    );
    assert_eq!(
        key(&mut s.xs, "event-channel"),
        Some(nf.event_channel().to_string())
    );
    for (k, v) in [
        ("request-rx-copy", "1"),
        ("feature-rx-notify", "1"),
        ("feature-sg", "1"),
        ("feature-no-csum-offload", "0"),
        ("feature-gso-tcpv4", "1"),
        ("feature-gso-tcpv6", "1"),
        ("feature-ipv6-csum-offload", "1"),
        ("state", "4"),
    ] {
        assert_eq!(key(&mut s.xs, k).as_deref(), Some(v), "{k}");
    }
    assert!(nf.csum_offload());
    assert_eq!(nf.mac(), [0x00, 0x16, 0x3e, 0, 0, 1]);
    assert!(nf.link_up());
    assert!(nf.scatter_gather());
    assert_eq!(nf.node(), Some("device/vif/0"));

    // The backend attaches to what was published; a frame each way.
    attach(&mut s);
    let f: Vec<u8> = (0..200u8).collect();
    nf.send(&f).unwrap();
    {
        let mut nb = s.nb.borrow_mut();
        let nb = nb.as_mut().unwrap();
        nb.step();
        assert_eq!(nb.from_guest.pop_front(), Some(f.clone()));
        nb.send_to_guest(&f);
        nb.step();
    }
    assert_eq!(nf.receive().unwrap(), Some(&f[..]));

    // The backend goes away: link down.
    let be = s.be.clone();
    s.xs.transport_mut()
        .store()
        .write(&format!("{be}/state"), b"5");
    assert!(!nf.poll_link(&mut s.xs).unwrap());
    s.xs.transport_mut()
        .store()
        .write(&format!("{be}/state"), b"4");
    assert!(nf.poll_link(&mut s.xs).unwrap());

    nf.shutdown(&mut s.xs, &mut Never).unwrap();
    assert_eq!(
        read(&mut s.xs, &format!("{}/state", s.fe)).as_deref(),
        Some("6")
    );
    assert!(!s.nb.borrow().as_ref().unwrap().is_attached());
    assert_eq!(s.hal.state.lock().live_grants(), 0);
    assert_eq!(s.hal.state.lock().live_pages(), 0);
}

#[test]
fn shutdown_leaks_pages_the_backend_never_unmaps() {
    let mut s = setup(BackendConfig::default(), false);
    let nf = connect(&mut s);
    attach(&mut s);
    let mut polls = 0;
    let mut timeout = move || {
        polls += 1;
        polls > 20
    };
    let r = nf.shutdown(&mut s.xs, &mut timeout);
    assert_eq!(r.err(), Some(Error::GrantsStillMapped { count: 2 }));
    assert_eq!(s.hal.state.lock().live_grants(), 2, "the two ring grants");
    assert_eq!(s.hal.state.lock().live_pages(), 2, "leaked, not freed");
}

#[test]
fn a_stepped_shutdown_never_waits_and_releases_everything() {
    let mut s = setup(BackendConfig::default(), true);
    let nf = connect(&mut s);
    attach(&mut s);
    let mut c = nf.begin_shutdown(&mut s.xs);
    assert_eq!(
        read(&mut s.xs, &format!("{}/state", s.fe)).as_deref(),
        Some("5"),
        "Closing at once"
    );
    // Each step returns at once; between steps the simulated daemon and backend move on
    // (as the watch events would wake the stack on Xen).
    let mut steps = 0;
    let hal = loop {
        if let Some(r) = c.step(&mut s.xs) {
            break r.unwrap();
        }
        steps += 1;
        assert!(steps < 100, "never released");
        s.xs.poll().unwrap();
        s.xs.wait().unwrap();
    };
    drop(hal);
    assert_eq!(
        read(&mut s.xs, &format!("{}/state", s.fe)).as_deref(),
        Some("6")
    );
    assert!(!s.nb.borrow().as_ref().unwrap().is_attached());
    assert_eq!(s.hal.state.lock().live_grants(), 0);
    assert_eq!(s.hal.state.lock().live_pages(), 0);
}

#[test]
fn a_stepped_shutdown_given_up_leaks_what_the_backend_maps() {
    let mut s = setup(BackendConfig::default(), false);
    let nf = connect(&mut s);
    attach(&mut s);
    let mut c = nf.begin_shutdown(&mut s.xs);
    for _ in 0..20 {
        assert!(c.step(&mut s.xs).is_none(), "the backend never unmaps");
        s.xs.wait().unwrap();
    }
    let r = c.give_up(&mut s.xs);
    assert_eq!(r.err(), Some(Error::GrantsStillMapped { count: 2 }));
    assert_eq!(
        read(&mut s.xs, &format!("{}/state", s.fe)).as_deref(),
        Some("6")
    );
    assert_eq!(s.hal.state.lock().live_grants(), 2, "the two ring grants");
    assert_eq!(s.hal.state.lock().live_pages(), 2, "leaked, not freed");
}

#[test]
fn a_backend_without_rx_copy_is_refused_and_nothing_leaks() {
    let mut s = setup(
        BackendConfig {
            rx_copy: false,
            ..BackendConfig::default()
        },
        true,
    );
    let r = Netfront::connect(
        &mut s.xs,
        s.hal.clone(),
        "device/vif/0",
        Config::default(),
        &mut Never,
    );
    assert_eq!(r.err(), Some(Error::NoRxCopy));
    assert_eq!(s.hal.state.lock().live_grants(), 0);
    assert_eq!(
        read(&mut s.xs, &format!("{}/state", s.fe)).as_deref(),
        Some("6")
    );
}

#[test]
fn a_bad_mac_is_refused() {
    for mac in [
        "01:16:3e:00:00:01",
        "00:16:3e:00:00",
        "zz:16:3e:00:00:01",
        "",
    ] {
        let mut s = setup(
            BackendConfig {
                mac: mac.to_string(),
                ..BackendConfig::default()
            },
            true,
        );
        let r = Netfront::connect(
            &mut s.xs,
            s.hal.clone(),
            "device/vif/0",
            Config::default(),
            &mut Never,
        );
        assert!(matches!(r, Err(Error::BadMac(_))), "{mac:?}: {r:?}");
        assert_eq!(s.hal.state.lock().live_pages(), 0);
    }
}

#[test]
fn without_backend_sg_tx_frames_are_not_split() {
    let mut s = setup(
        BackendConfig {
            sg: false,
            ..BackendConfig::default()
        },
        true,
    );
    let nf = connect(&mut s);
    assert!(!nf.scatter_gather());
}

#[test]
fn gso_is_not_offered_with_too_few_rx_buffers_for_a_whole_packet() {
    let mut s = setup(BackendConfig::default(), true);
    let nf = Netfront::connect(
        &mut s.xs,
        s.hal.clone(),
        "device/vif/0",
        Config {
            rx_buffers: netfront::MIN_GSO_RX_BUFFERS - 1,
            ..Config::default()
        },
        &mut Never,
    )
    .unwrap();
    assert!(!nf.gso() && nf.csum_offload());
    assert_eq!(
        read(&mut s.xs, &format!("{}/feature-gso-tcpv4", s.fe)).as_deref(),
        Some("0")
    );
}

#[test]
fn without_csum_offload_the_offload_is_refused() {
    let mut s = setup(BackendConfig::default(), true);
    let nf = Netfront::connect(
        &mut s.xs,
        s.hal.clone(),
        "device/vif/0",
        Config {
            csum_offload: false,
            ..Config::default()
        },
        &mut Never,
    )
    .unwrap();
    assert!(!nf.csum_offload());
    assert_eq!(
        read(&mut s.xs, &format!("{}/feature-no-csum-offload", s.fe)).as_deref(),
        Some("1")
    );
    // Netback cannot do TSO to a vif without checksum offload: GSO is not offered either.
    assert!(!nf.gso());
    for k in [
        "feature-gso-tcpv4",
        "feature-gso-tcpv6",
        "feature-ipv6-csum-offload",
    ] {
        assert_eq!(
            read(&mut s.xs, &format!("{}/{k}", s.fe)).as_deref(),
            Some("0"),
            "{k}"
        );
    }
}

#[test]
fn a_backend_that_never_connects_times_out_and_nothing_leaks() {
    let mut xs = Sim::client(1);
    let (fe, be) = xs.transport_mut().store().add_device("vif", 0, 0);
    // InitWait with features, then silence.
    xs.transport_mut()
        .store()
        .write(&format!("{fe}/mac"), b"00:16:3e:00:00:01");
    xs.transport_mut()
        .store()
        .write(&format!("{be}/feature-rx-copy"), b"1");
    xs.transport_mut()
        .store()
        .write(&format!("{be}/state"), b"2");
    let hal = SimHal::new();
    let mut polls = 0;
    let mut timeout = move || {
        polls += 1;
        polls > 10
    };
    let r = Netfront::connect(
        &mut xs,
        hal.clone(),
        "device/vif/0",
        Config::default(),
        &mut timeout,
    );
    assert_eq!(
        r.err(),
        Some(Error::Xenbus(xen::xenbus::XenbusError::TimedOut {
            waiting_for: XenbusState::Connected
        }))
    );
    assert_eq!(hal.state.lock().live_grants(), 0);
    assert_eq!(hal.state.lock().live_pages(), 0);
}

#[test]
fn connect_attached_from_batched_reads_sets_the_watch_in_its_first_batch() {
    let mut s = setup(BackendConfig::default(), true);
    let [be, id] = xen::xenbus::Frontend::backend_paths("device/vif/0");
    let ops = [
        xen::xenstore::Op::Directory("device/vif"),
        xen::xenstore::Op::Read(&be),
        xen::xenstore::Op::Read(&id),
    ];
    let mut r =
        s.xs.batch(xen::xenstore::Tx::NONE, &ops)
            .unwrap()
            .into_iter();
    let nodes = xen::xenbus::device_nodes_from("vif", r.next().unwrap()).unwrap();
    assert_eq!(nodes, ["device/vif/0"]);
    let fe =
        xen::xenbus::Frontend::attach_read("device/vif/0", r.next().unwrap(), r.next().unwrap())
            .unwrap();
    assert_eq!(fe.backend(), s.be);
    assert!(fe.watch_op().is_some());
    let nf =
        Netfront::connect_attached(&mut s.xs, s.hal.clone(), fe, Config::default(), &mut Never)
            .unwrap();
    assert!(nf.link_up());
    assert_eq!(
        read(&mut s.xs, &format!("{}/state", s.fe)).as_deref(),
        Some("4")
    );
    let token = xen::xenbus::watch_token("device/vif/0");
    assert!(s
        .xs
        .watches()
        .iter()
        .any(|(p, t)| *p == format!("{}/state", s.be) && *t == token));
}
