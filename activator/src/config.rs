//! The configuration file: global settings, then one `[NAME]` section per service.
//!
//! ```text
//! # /etc/xenrt/activator.conf
//! bridge = xenbr0            # the bridge the guests' vifs join (default xenbr0)
//! dns = 10.0.0.1:53          # optional: answer DNS queries for the services' names here
//! save_dir = /var/lib/xenrt-activator   # where `mode = restore` keeps its saved images
//! vif_script = xl            # xl | builtin: who attaches a guest's vif to the bridge (below);
//!                            # the default for every service, each may set its own
//!
//! [httpd]
//! config = /root/httpd.xl    # the guest's xl domain config (kernel, memory, extra=...)
//! address = 10.0.0.50/24     # the service's address; the guest gets it as ip= (no DHCP)
//! gateway = 10.0.0.1         # optional, given to the guest as gw=
//! port = 80                  # TCP port(s) whose first SYN starts the guest (comma-separated)
//! name = www.lab             # optional DNS name (needs the global dns=)
//! mode = cold                # cold | parked | preboot | restore
//! spares = 1                 # parked/preboot: how many domains to keep ready (default 1)
//! idle = 60                  # s without a frame from the guest before it is stopped; 0 = never
//! boot_timeout = 10          # s from start to ready before the start counts as failed
//! ready = xenstore           # xenstore (a xenrt guest's data/xenrt/ready) | console:TEXT | vif
//! args = ip={ip}/{prefix} gw={gateway}   # appended to the xl config's extra= (this default
//!                            # is xenrt's static address; e.g. `lab.ip={ip}` for the lab's Linux)
//! mac = 00:16:3e:00:32:50    # optional; default 00:16:3e + the address's last three bytes
//! vif_script = builtin       # optional; default the global one
//! ```
//!
//! `vif_script`: with `xl` (the default) the vif's hotplug script is whatever the xl config or
//! xl's default says (`/etc/xen/scripts/vif-bridge`), so a site's own script (firewall rules,
//! logging) keeps running. With `builtin` the activator names its own binary as the script
//! (`script=` in the vif): it brings the vif up, adds it to the bridge and writes
//! `hotplug-status` itself, without starting a shell and its tools ([`crate::hotplug`]); that
//! takes a start ~0.2 s less in the lab's emulated dom0. Opt-in, since it does only that.
//!
//! Every error names the line and says what was expected; unknown keys are errors (a typo must not
//! silently leave a default in force).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// How a service's guest is started when its first request arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `xl create` on demand; `xl destroy` after the idle timeout.
    Cold,
    /// A domain is kept created and paused (`xl create -p`), unpaused on demand; after the idle
    /// timeout it is destroyed and a fresh paused one created.
    Parked,
    /// A guest is kept booted to ready and paused, unpaused on demand and paused again after the
    /// idle timeout.
    Preboot,
    /// A guest is booted to ready once and saved (`xl save`, into `save_dir`); each request
    /// restores that image (`xl restore`), so no memory is held while the service is down.
    /// After the idle timeout the restored guest is shut down; the image stays. Only for
    /// guests without a disk: a restored image would not see what later instances wrote.
    Restore,
}

/// Who runs the guest's vif hotplug (the bridge port the guest's traffic arrives on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VifScript {
    /// The script the xl config or xl's default names.
    Xl,
    /// The activator's own binary, run by libxl as the script ([`crate::hotplug`]).
    Builtin,
}

fn vif_script(line: usize, v: &str) -> Result<VifScript, Error> {
    match v {
        "xl" => Ok(VifScript::Xl),
        "builtin" => Ok(VifScript::Builtin),
        _ => err(line, format!("`vif_script` is xl or builtin, not `{v}`")),
    }
}

/// How the activator learns that a started guest serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ready {
    /// The guest writes `data/xenrt/ready` in its xenstore directory (every xenrt network app).
    Xenstore,
    /// The guest's console (xenconsoled's log, `--log=guest`) shows this text (any guest, e.g. a
    /// Linux one whose init prints a line once its servers listen). A restored guest does not
    /// print it again: its readiness is then its vif's, as for [`Ready::Vif`].
    Console(String),
    /// Both ends of the guest's first vif say Connected (any guest; it says the guest's
    /// network is up, not that its servers listen: right for a restored guest, whose
    /// listeners were open when it was saved).
    Vif,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// Path of the guest's xl config in dom0.
    pub config: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub ports: Vec<u16>,
    pub dns_name: Option<String>,
    pub mode: Mode,
    /// `parked`/`preboot`: how many domains are kept ready while no guest serves.
    pub spares: usize,
    /// Seconds; 0 = never.
    pub idle_s: u64,
    pub boot_timeout_s: u64,
    pub ready: Ready,
    pub mac: [u8; 6],
    /// Appended to the guest's command line, `{ip}`, `{prefix}`, `{gateway}` filled in.
    pub args: String,
    pub vif_script: VifScript,
    /// The config line of the section header (for messages).
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub bridge: String,
    pub dns: Option<SocketAddrV4>,
    /// Where `mode = restore` keeps each service's saved image (`NAME.save`).
    pub save_dir: String,
    /// The xl binary.
    pub xl: String,
    /// The services' default `vif_script`.
    pub vif_script: VifScript,
    pub services: Vec<Service>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Error {
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "line {}: {}", self.line, self.msg)
        }
    }
}

fn err<T>(line: usize, msg: impl Into<String>) -> Result<T, Error> {
    Err(Error {
        line,
        msg: msg.into(),
    })
}

/// Parses a MAC address `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut n = 0;
    for part in s.split(':') {
        if n == 6 || part.len() != 2 {
            return None;
        }
        mac[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6 && mac[0] & 1 == 0).then_some(mac)
}

pub fn mac_string(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[derive(Default)]
struct Partial {
    name: String,
    line: usize,
    config: Option<String>,
    address: Option<(Ipv4Addr, u8)>,
    gateway: Option<Ipv4Addr>,
    ports: Vec<u16>,
    dns_name: Option<String>,
    mode: Option<Mode>,
    spares: Option<(usize, usize)>,
    idle_s: Option<u64>,
    boot_timeout_s: Option<u64>,
    ready: Option<Ready>,
    mac: Option<[u8; 6]>,
    args: Option<String>,
    vif_script: Option<VifScript>,
}

impl Partial {
    /// The service, with `vif_script` the global default where the section sets none.
    fn finish(self, vif_script: VifScript) -> Result<Service, Error> {
        let line = self.line;
        let name = self.name;
        let Some(config) = self.config else {
            return err(
                line,
                format!("service [{name}] has no `config =` (its xl file)"),
            );
        };
        let Some((address, prefix)) = self.address else {
            return err(
                line,
                format!("service [{name}] has no `address = ADDR/PREFIX`"),
            );
        };
        if self.ports.is_empty() && self.dns_name.is_none() {
            return err(
                line,
                format!(
                    "service [{name}] has neither `port =` nor `name =`: nothing would start it"
                ),
            );
        }
        let mode = self.mode.unwrap_or(Mode::Cold);
        let spares = match (mode, self.spares) {
            (Mode::Parked | Mode::Preboot, Some((n, _))) => n,
            (_, None) => 1,
            (_, Some((_, l))) => {
                return err(
                    l,
                    format!("[{name}]: `spares` is for mode = parked or preboot"),
                )
            }
        };
        let o = address.octets();
        Ok(Service {
            mac: self.mac.unwrap_or([0x00, 0x16, 0x3e, o[1], o[2], o[3]]),
            name,
            config,
            address,
            prefix,
            gateway: self.gateway,
            ports: self.ports,
            dns_name: self.dns_name,
            mode,
            spares,
            idle_s: self.idle_s.unwrap_or(0),
            boot_timeout_s: self.boot_timeout_s.unwrap_or(10),
            ready: self.ready.unwrap_or(Ready::Xenstore),
            args: self.args.unwrap_or_else(|| {
                if self.gateway.is_some() {
                    "ip={ip}/{prefix} gw={gateway}".into()
                } else {
                    "ip={ip}/{prefix}".into()
                }
            }),
            vif_script: self.vif_script.unwrap_or(vif_script),
            line,
        })
    }
}

fn number(line: usize, key: &str, v: &str, max: u64) -> Result<u64, Error> {
    match v.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => err(
            line,
            format!("`{key}` wants a whole number up to {max}, not `{v}`"),
        ),
    }
}

fn addr(line: usize, key: &str, v: &str) -> Result<Ipv4Addr, Error> {
    v.parse()
        .or_else(|_| err(line, format!("`{key}` wants an IPv4 address, not `{v}`")))
}

/// Parses the whole file.
pub fn parse(text: &str) -> Result<Config, Error> {
    let mut cfg = Config {
        bridge: "xenbr0".into(),
        dns: None,
        save_dir: "/var/lib/xenrt-activator".into(),
        xl: "xl".into(),
        vif_script: VifScript::Xl,
        services: Vec::new(),
    };
    let mut cur: Option<Partial> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        if let Some(rest) = l.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return err(line, "a section header is `[NAME]`");
            };
            let name = name.trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return err(
                    line,
                    format!("service name `{name}`: letters, digits, `-` and `_` only"),
                );
            }
            if let Some(p) = cur.take() {
                cfg.services.push(p.finish(cfg.vif_script)?);
            }
            if cfg.services.iter().any(|s| s.name == name) {
                return err(line, format!("service [{name}] is defined twice"));
            }
            cur = Some(Partial {
                name: name.into(),
                line,
                ..Default::default()
            });
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            return err(line, format!("expected `key = value`, found `{l}`"));
        };
        let (k, v) = (k.trim(), v.trim());
        if v.is_empty() {
            return err(line, format!("`{k}` has no value"));
        }
        match cur.as_mut() {
            None => match k {
                "bridge" => cfg.bridge = v.into(),
                "xl" => cfg.xl = v.into(),
                "save_dir" => cfg.save_dir = v.into(),
                "vif_script" => cfg.vif_script = vif_script(line, v)?,
                "dns" => {
                    cfg.dns = Some(v.parse().or_else(|_| {
                        err(line, format!("`dns` wants ADDR:PORT (e.g. 10.0.0.1:53), not `{v}`"))
                    })?)
                }
                _ => {
                    return err(
                        line,
                        format!("unknown global key `{k}` (bridge, dns, save_dir, vif_script, xl; services go in [NAME] sections)"),
                    )
                }
            },
            Some(p) => match k {
                "config" => p.config = Some(v.into()),
                "address" => {
                    let (a, pre) = v.split_once('/').unwrap_or((v, "24"));
                    let a = addr(line, k, a)?;
                    let pre = number(line, "address prefix", pre, 32)? as u8;
                    if !(1..=30).contains(&pre) || a.is_unspecified() || a.is_broadcast() {
                        return err(line, format!("`address = {v}` is not a usable host address"));
                    }
                    p.address = Some((a, pre));
                }
                "gateway" => p.gateway = Some(addr(line, k, v)?),
                "port" => {
                    for part in v.split(',') {
                        let n = number(line, k, part.trim(), 65535)?;
                        if n == 0 {
                            return err(line, "port 0 cannot be served");
                        }
                        p.ports.push(n as u16);
                    }
                }
                "name" => {
                    let n = v.trim_end_matches('.').to_ascii_lowercase();
                    if n.is_empty()
                        || n.len() > 253
                        || n.split('.').any(|l| l.is_empty() || l.len() > 63)
                    {
                        return err(line, format!("`name = {v}` is not a DNS name"));
                    }
                    p.dns_name = Some(n);
                }
                "mode" => {
                    p.mode = Some(match v {
                        "cold" => Mode::Cold,
                        "parked" => Mode::Parked,
                        "preboot" => Mode::Preboot,
                        "restore" => Mode::Restore,
                        _ => return err(line, format!("`mode` is cold, parked, preboot or restore, not `{v}`")),
                    })
                }
                "idle" => p.idle_s = Some(number(line, k, v, 86_400 * 365)?),
                "spares" => {
                    let n = number(line, k, v, 16)?;
                    if n == 0 {
                        return err(line, "`spares = 0` keeps none ready: use mode = cold");
                    }
                    p.spares = Some((n as usize, line));
                }
                "boot_timeout" => {
                    let n = number(line, k, v, 3600)?;
                    if n == 0 {
                        return err(line, "`boot_timeout` must be at least 1 s");
                    }
                    p.boot_timeout_s = Some(n)
                }
                "ready" => {
                    p.ready = Some(match v {
                        "xenstore" => Ready::Xenstore,
                        "vif" => Ready::Vif,
                        _ => match v.strip_prefix("console:") {
                            Some(t) if !t.trim().is_empty() => Ready::Console(t.trim().into()),
                            _ => {
                                return err(
                                    line,
                                    format!("`ready` is xenstore, console:TEXT or vif, not `{v}`"),
                                )
                            }
                        },
                    })
                }
                "args" => p.args = Some(v.into()),
                "mac" => {
                    p.mac = Some(parse_mac(v).ok_or(Error {
                        line,
                        msg: format!("`mac = {v}` is not a unicast MAC address aa:bb:cc:dd:ee:ff"),
                    })?)
                }
                "vif_script" => p.vif_script = Some(vif_script(line, v)?),
                _ => {
                    return err(
                        line,
                        format!(
                            "unknown key `{k}` in [{}] (config, address, gateway, port, name, mode, spares, idle, boot_timeout, ready, mac, args, vif_script)",
                            p.name
                        ),
                    )
                }
            },
        }
    }
    if let Some(p) = cur.take() {
        cfg.services.push(p.finish(cfg.vif_script)?);
    }
    if cfg.services.is_empty() {
        return err(0, "no services: add a [NAME] section");
    }
    for (i, a) in cfg.services.iter().enumerate() {
        for b in &cfg.services[..i] {
            if a.address == b.address {
                return err(
                    a.line,
                    format!(
                        "[{}] has the address of [{}] ({})",
                        a.name, b.name, a.address
                    ),
                );
            }
            if a.mac == b.mac {
                return err(a.line, format!("[{}] has the MAC of [{}]", a.name, b.name));
            }
            if a.dns_name.is_some() && a.dns_name == b.dns_name {
                return err(
                    a.line,
                    format!("[{}] has the DNS name of [{}]", a.name, b.name),
                );
            }
        }
        if a.dns_name.is_some() && cfg.dns.is_none() {
            return err(
                a.line,
                format!(
                    "[{}] has a DNS name but there is no global `dns = ADDR:PORT`",
                    a.name
                ),
            );
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
bridge = xenbr0
dns = 10.0.0.1:53   # answers here

[httpd]
config = /root/httpd.xl
address = 10.0.0.50/24
gateway = 10.0.0.1
port = 80, 8080
name = WWW.Lab.
mode = parked
spares = 3
idle = 30

[echo]
config = /root/echo.xl
address = 10.0.0.51
port = 7
ready = console:LAB-DOMU-SERVING
mac = 00:16:3e:aa:bb:cc
";

    #[test]
    fn a_full_file_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.dns, Some("10.0.0.1:53".parse().unwrap()));
        let h = &c.services[0];
        assert_eq!(h.ports, vec![80, 8080]);
        assert_eq!(h.dns_name.as_deref(), Some("www.lab"));
        assert_eq!(h.mode, Mode::Parked);
        assert_eq!(h.idle_s, 30);
        assert_eq!(h.spares, 3);
        assert_eq!(h.mac, [0x00, 0x16, 0x3e, 0, 0, 50]);
        assert_eq!(h.ready, Ready::Xenstore);
        let e = &c.services[1];
        assert_eq!((e.prefix, e.mode), (24, Mode::Cold));
        assert_eq!(e.ready, Ready::Console("LAB-DOMU-SERVING".into()));
        assert_eq!(h.args, "ip={ip}/{prefix} gw={gateway}");
        assert_eq!(e.args, "ip={ip}/{prefix}");
        assert_eq!(e.mac, [0x00, 0x16, 0x3e, 0xaa, 0xbb, 0xcc]);
        assert_eq!(e.boot_timeout_s, 10);
        assert_eq!((h.vif_script, e.vif_script), (VifScript::Xl, VifScript::Xl));
    }

    #[test]
    fn vif_script_is_global_or_per_service() {
        let svc = |name: &str, ip: u8, more: &str| {
            format!("[{name}]\nconfig = /x.xl\naddress = 10.0.0.{ip}\nport = 80\n{more}")
        };
        let c = parse(&[svc("a", 1, "vif_script = builtin\n"), svc("b", 2, "")].concat()).unwrap();
        assert_eq!(c.services[0].vif_script, VifScript::Builtin);
        assert_eq!(c.services[1].vif_script, VifScript::Xl);
        let text = [
            "vif_script = builtin\n".to_string(),
            svc("a", 1, "vif_script = xl\n"),
            svc("b", 2, ""),
        ]
        .concat();
        let c = parse(&text).unwrap();
        assert_eq!(c.vif_script, VifScript::Builtin);
        assert_eq!(c.services[0].vif_script, VifScript::Xl);
        assert_eq!(c.services[1].vif_script, VifScript::Builtin);
        assert_eq!(
            error(&svc("a", 1, "vif_script = bash\n")),
            "line 5: `vif_script` is xl or builtin, not `bash`"
        );
        assert_eq!(
            error(
                &[
                    "\nvif_script = /etc/xen/scripts/vif-bridge\n".to_string(),
                    svc("a", 1, "")
                ]
                .concat()
            ),
            "line 2: `vif_script` is xl or builtin, not `/etc/xen/scripts/vif-bridge`"
        );
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn mistakes_name_their_line() {
        let base = "[a]\nconfig = /x.xl\naddress = 10.0.0.5\nport = 80\n";
        assert_eq!(
            error(&format!("{base}prot = 81\n")),
            "line 5: unknown key `prot` in [a] (config, address, gateway, port, name, mode, spares, idle, boot_timeout, ready, mac, args, vif_script)"
        );
        assert_eq!(
            error(&format!("{base}port = 99999\n")),
            "line 5: `port` wants a whole number up to 65535, not `99999`"
        );
        assert_eq!(
            error(&format!("{base}spares = 2\n")),
            "line 5: [a]: `spares` is for mode = parked or preboot"
        );
        assert_eq!(
            error(&format!("{base}mode = parked\nspares = 0\n")),
            "line 6: `spares = 0` keeps none ready: use mode = cold"
        );
        assert_eq!(
            error(&format!("{base}mode = parked\nspares = 17\n")),
            "line 6: `spares` wants a whole number up to 16, not `17`"
        );
        assert_eq!(
            error(&format!("{base}mode = warm\n")),
            "line 5: `mode` is cold, parked, preboot or restore, not `warm`"
        );
        assert_eq!(
            error(&format!("{base}mac = 01:00:00:00:00:01\n")),
            "line 5: `mac = 01:00:00:00:00:01` is not a unicast MAC address aa:bb:cc:dd:ee:ff"
        );
        assert_eq!(
            error(&format!("{base}name = a.b\n")),
            "line 1: [a] has a DNS name but there is no global `dns = ADDR:PORT`"
        );
        assert_eq!(
            error("[a]\naddress = 10.0.0.5\nport = 1\n"),
            "line 1: service [a] has no `config =` (its xl file)"
        );
        assert_eq!(
            error("[a]\nconfig = x\nport = 1\n"),
            "line 1: service [a] has no `address = ADDR/PREFIX`"
        );
        assert_eq!(
            error("[a]\nconfig = x\naddress = 10.0.0.5\n"),
            "line 1: service [a] has neither `port =` nor `name =`: nothing would start it"
        );
        assert_eq!(
            error(&format!(
                "{base}[b]\nconfig = y\naddress = 10.0.0.5\nport = 1\n"
            )),
            "line 5: [b] has the address of [a] (10.0.0.5)"
        );
        assert_eq!(
            error(&format!("{base}[a]\n")),
            "line 5: service [a] is defined twice"
        );
        assert_eq!(
            error("bridge\n"),
            "line 1: expected `key = value`, found `bridge`"
        );
        assert_eq!(
            error("colour = red\n"),
            "line 1: unknown global key `colour` (bridge, dns, save_dir, vif_script, xl; services go in [NAME] sections)"
        );
        assert_eq!(error("# nothing\n"), "no services: add a [NAME] section");
        assert_eq!(
            error("[a b]\n"),
            "line 1: service name `a b`: letters, digits, `-` and `_` only"
        );
        assert_eq!(
            error(&format!("{base}address = 10.0.0.255/32\n")),
            "line 5: `address = 10.0.0.255/32` is not a usable host address"
        );
    }
}
