//! The activator's port on the guests' bridge: a TAP device joined to the bridge with MAC
//! learning off. Frames the bridge floods (to a MAC it has not learned: a guest that is not up,
//! or paused since the bridge forgot it) arrive here; frames written here enter the bridge as if
//! from a wire, reaching dom0's own stack or any port, and with learning off the bridge never
//! takes a client's MAC to be behind this port. Once a guest has sent a frame the bridge forwards
//! its traffic straight to its vif: the activator is not in the data path.
//! The device is named with the `TUNSETIFF` ioctl ([`crate::sys`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::process::Command;

pub struct Tap {
    file: File,
    pub name: String,
}

fn run(cmd: &[&str]) -> io::Result<()> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "`{}` failed: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Tap {
    /// Creates TAP device `name`, brings it up and adds it to `bridge` with learning off.
    pub fn open(name: &str, bridge: &str) -> io::Result<Tap> {
        if name.len() >= 16 {
            return Err(io::Error::other("interface name too long"));
        }
        if !std::path::Path::new(&format!("/sys/class/net/{bridge}/bridge")).exists() {
            return Err(io::Error::other(format!(
                "bridge `{bridge}` does not exist (set `bridge =` to the bridge of the guests' vifs)"
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("/dev/net/tun: {e} (modprobe tun?)")))?;
        crate::sys::tunsetiff_tap(file.as_raw_fd(), name)
            .map_err(|e| io::Error::other(format!("TUNSETIFF {name}: {e}")))?;
        run(&["ip", "link", "set", name, "up"])?;
        if run(&["ip", "link", "set", name, "master", bridge]).is_err() {
            run(&["brctl", "addif", bridge, name])?;
        }
        std::fs::write(format!("/sys/class/net/{name}/brport/learning"), "0")
            .map_err(|e| io::Error::other(format!("turning learning off on {name}: {e}")))?;
        Ok(Tap {
            file,
            name: name.into(),
        })
    }

    pub fn try_clone(&self) -> io::Result<Tap> {
        Ok(Tap {
            file: self.file.try_clone()?,
            name: self.name.clone(),
        })
    }

    /// The next frame (blocks).
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.file.write_all(frame)
    }
}

/// Makes the bridge forget every MAC it learned (it relearns each from its next frame; until
/// then frames to it are flooded, so they reach this port too). Used after pausing a guest, so
/// that the next SYN for it is seen here.
pub fn flush_bridge(bridge: &str) -> io::Result<()> {
    std::fs::write(format!("/sys/class/net/{bridge}/bridge/flush"), "1")
}
