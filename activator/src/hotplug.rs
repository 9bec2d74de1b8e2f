//! The activator as a vif hotplug script (`vif_script = builtin`, see config.rs): libxl runs the
//! script named in the vif's `script=` when the backend's interface appears and when it goes, as
//! `SCRIPT online|offline type_if=vif` with the backend's xenstore path in `XENBUS_PATH`
//! (`backend/vif/DOMID/DEVID`, relative to the backend domain) and the interface in `vif`
//! (libxl_linux.c; `add`/`remove` are what other callers of such scripts say).
//!
//! Online: the vif up, into the bridge named by the backend's `bridge` node, then
//! `hotplug-status = connected` (netback waits for it before it connects to the guest). Offline:
//! out of its bridge, down, `hotplug-status` removed; what is already gone (the interface, the
//! port, the node) is no error, since a destroyed guest's vif often disappears first.
//!
//! The same as the lab's `vif-bridge` shell script, without starting a shell, `ip`, `brctl` and
//! `xenstore-*` (each exec costs tens of ms in an emulated dom0: ~0.2 s per start in the lab).
//! Nothing else is done: no firewall rules, no MTU, no logging file; a site that needs more keeps
//! its own script (`vif_script = xl`).

use std::io;
use std::net::UdpSocket;

use crate::sys;
use crate::xs::Xs;

/// What libxl asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Online,
    Offline,
}

/// How the binary knows it runs as a hotplug script rather than as the activator: its first
/// argument is a hotplug action and `XENBUS_PATH` names a vif backend (the activator itself takes
/// a config path or `--check`; a config file named `online` would also need that environment).
fn action_of(arg1: Option<&str>, xenbus_path: Option<&str>) -> Option<Action> {
    if !xenbus_path?.starts_with("backend/vif/") {
        return None;
    }
    match arg1? {
        "online" | "add" => Some(Action::Online),
        "offline" | "remove" => Some(Action::Offline),
        _ => None,
    }
}

/// The backend's interface: `vif` from libxl, else the name netback gives it (`vifDOMID.DEVID`).
fn vif_name(vif: Option<&str>, xenbus_path: &str) -> Option<String> {
    if let Some(v) = vif.filter(|v| !v.is_empty()) {
        return Some(v.to_string());
    }
    let mut ids = xenbus_path.strip_prefix("backend/vif/")?.split('/');
    let (dom, dev) = (ids.next()?, ids.next()?);
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (numeric(dom) && numeric(dev) && ids.next().is_none()).then(|| format!("vif{dom}.{dev}"))
}

/// Runs the hotplug action and returns the exit status if this process was started as a vif
/// hotplug script; None if it was not (then it is the activator).
pub fn run_if_invoked() -> Option<i32> {
    let arg1 = std::env::args().nth(1);
    let path = std::env::var("XENBUS_PATH").ok();
    let action = action_of(arg1.as_deref(), path.as_deref())?;
    let path = path.unwrap_or_default();
    let vif = std::env::var("vif").ok();
    let Some(vif) = vif_name(vif.as_deref(), &path) else {
        eprintln!("xenrt-activator hotplug: no `vif` and no interface name in {path}");
        return Some(1);
    };
    let r = match action {
        Action::Online => online(&path, &vif),
        Action::Offline => offline(&path, &vif),
    };
    Some(match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("xenrt-activator hotplug {action:?} {vif} ({path}): {e}");
            1
        }
    })
}

fn online(path: &str, vif: &str) -> io::Result<()> {
    let mut xs = Xs::open()?;
    let r = attach(&mut xs, path, vif);
    // What Xen's own scripts do on a failure (libxl reports `hotplug-error`), if the backend
    // is there to hold it: a write would create the node.
    if let (Err(e), Ok(Some(_))) = (&r, xs.read(&format!("{path}/state"))) {
        let _ = xs.write(&format!("{path}/hotplug-error"), &e.to_string());
        let _ = xs.write(&format!("{path}/hotplug-status"), "error");
    }
    r
}

fn attach(xs: &mut Xs, path: &str, vif: &str) -> io::Result<()> {
    let bridge = xs
        .read(&format!("{path}/bridge"))?
        .filter(|b| !b.is_empty())
        .ok_or_else(|| io::Error::other(format!("no bridge in {path}/bridge")))?;
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sys::set_link_up(&sock, vif, true).map_err(|e| ctx(e, format!("{vif} up")))?;
    let index = sys::if_index(&sock, vif).map_err(|e| ctx(e, format!("{vif}'s index")))?;
    if let Err(e) = sys::bridge_port(&sock, &bridge, index, true) {
        // EBUSY: it already has a master; fine if that is this bridge (a repeated online).
        if master_of(vif).as_deref() != Some(bridge.as_str()) {
            return Err(ctx(e, format!("adding {vif} to bridge {bridge}")));
        }
    }
    xs.write(&format!("{path}/hotplug-status"), "connected")
}

fn offline(path: &str, vif: &str) -> io::Result<()> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    // The bridge the vif is in, if it still exists and is in one.
    if let Some(bridge) = master_of(vif) {
        match sys::if_index(&sock, vif) {
            Ok(index) => gone_is_ok(sys::bridge_port(&sock, &bridge, index, false))
                .map_err(|e| ctx(e, format!("removing {vif} from bridge {bridge}")))?,
            Err(e) => gone_is_ok(Err(e))?,
        }
    }
    gone_is_ok(sys::set_link_up(&sock, vif, false)).map_err(|e| ctx(e, format!("{vif} down")))?;
    Xs::open()?.rm(&format!("{path}/hotplug-status"))
}

/// The bridge `vif` is a port of (its `master` link in sysfs), None if it is in none or gone.
fn master_of(vif: &str) -> Option<String> {
    let l = std::fs::read_link(format!("/sys/class/net/{vif}/master")).ok()?;
    Some(l.file_name()?.to_string_lossy().into_owned())
}

/// ENODEV (no such interface) and EINVAL (not a port of that bridge): already undone.
fn gone_is_ok(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if matches!(e.raw_os_error(), Some(19 | 22)) => Ok(()),
        r => r,
    }
}

fn ctx(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_hotplug_action_with_a_vif_backend_path_is_a_hotplug_call() {
        let p = Some("backend/vif/5/0");
        assert_eq!(action_of(Some("online"), p), Some(Action::Online));
        assert_eq!(action_of(Some("add"), p), Some(Action::Online));
        assert_eq!(action_of(Some("offline"), p), Some(Action::Offline));
        assert_eq!(action_of(Some("remove"), p), Some(Action::Offline));
        // The activator's own command lines, and other devices' scripts.
        assert_eq!(action_of(Some("/etc/xenrt/activator.conf"), p), None);
        assert_eq!(action_of(Some("--check"), p), None);
        assert_eq!(action_of(Some("online"), None), None);
        assert_eq!(action_of(Some("online"), Some("backend/vbd/5/51712")), None);
        assert_eq!(action_of(None, p), None);
    }

    #[test]
    fn the_interface_is_libxls_vif_else_netbacks_name() {
        assert_eq!(
            vif_name(Some("vif5.0-emu"), "backend/vif/5/0").as_deref(),
            Some("vif5.0-emu")
        );
        assert_eq!(
            vif_name(None, "backend/vif/12/1").as_deref(),
            Some("vif12.1")
        );
        assert_eq!(
            vif_name(Some(""), "backend/vif/3/0").as_deref(),
            Some("vif3.0")
        );
        assert_eq!(vif_name(None, "backend/vif/3"), None);
        assert_eq!(vif_name(None, "backend/vif/3/0/x"), None);
        assert_eq!(vif_name(None, "backend/vif/a/0"), None);
    }

    #[test]
    fn an_interface_already_gone_is_no_error() {
        let enodev = || Err(io::Error::from_raw_os_error(19));
        assert!(gone_is_ok(enodev()).is_ok());
        assert!(gone_is_ok(Err(io::Error::from_raw_os_error(22))).is_ok());
        assert!(gone_is_ok(Err(io::Error::from_raw_os_error(1))).is_err());
        assert!(master_of("xrt-none0").is_none());
    }
}
