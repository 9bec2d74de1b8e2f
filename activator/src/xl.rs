//! Starting, pausing and stopping guests with `xl`, and what the activator adds to a service's xl
//! config: its name, its vif (the service MAC on the bridge, and with `vif_script = builtin` the
//! activator's binary as its hotplug script), its static address on the command line, and
//! `destroy` on every end so a crashed start leaves no domain behind.

use std::process::Command;

use crate::config::{mac_string, Service, VifScript};

/// Runs `xl ARGS`; Ok(stdout) on success, Err(what xl said) otherwise.
pub fn xl(bin: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {bin}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if msg.is_empty() {
            msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        Err(format!("`xl {}` failed: {msg}", args.join(" ")))
    }
}

/// The value of `extra = "..."` in an xl config ("" if none).
pub fn extra_of(xl_text: &str) -> String {
    for l in xl_text.lines() {
        let l = l.trim();
        let Some(rest) = l.strip_prefix("extra") else {
            continue;
        };
        let Some(v) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        let v = v.trim();
        if let Some(s) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            return s.to_string();
        }
        if let Some(s) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            return s.to_string();
        }
    }
    String::new()
}

/// The line (1-based) of a `disk = ...` setting in an xl config, if it has one that is not
/// empty (`disk = []` is none).
pub fn disk_line(xl_text: &str) -> Option<usize> {
    xl_text.lines().enumerate().find_map(|(i, l)| {
        let l = l.split('#').next().unwrap_or("").trim();
        let v = l.strip_prefix("disk")?.trim_start().strip_prefix('=')?;
        let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
        (v != "[]" && v != "\"\"").then_some(i + 1)
    })
}

/// The static address arguments for the guest's command line: `args` with `{ip}`, `{prefix}`
/// and `{gateway}` filled in.
pub fn address_args(s: &Service) -> String {
    let gw = s.gateway.map(|g| g.to_string()).unwrap_or_default();
    s.args
        .replace("{ip}", &s.address.to_string())
        .replace("{prefix}", &s.prefix.to_string())
        .replace("{gateway}", &gw)
}

/// The `KEY=VALUE` lines given to `xl create` after the config file; `script` is the vif's
/// hotplug script if it is not xl's choice.
pub fn overrides(
    s: &Service,
    bridge: &str,
    domain: &str,
    xl_text: &str,
    script: Option<&str>,
) -> Vec<String> {
    let mut extra = extra_of(xl_text);
    let args = address_args(s);
    if !args.is_empty() {
        if !extra.is_empty() {
            extra.push(' ');
        }
        extra.push_str(&args);
    }
    vec![
        format!("name=\"{domain}\""),
        match script {
            None => format!("vif=['mac={},bridge={bridge}']", mac_string(&s.mac)),
            Some(p) => format!(
                "vif=['mac={},bridge={bridge},script={p}']",
                mac_string(&s.mac)
            ),
        },
        format!("extra=\"{}\"", extra.replace('"', "")),
        "on_crash=\"destroy\"".into(),
        "on_poweroff=\"destroy\"".into(),
        "on_reboot=\"destroy\"".into(),
    ]
}

/// `xl create [-p] CONFIG OVERRIDES...`
pub fn create(
    bin: &str,
    s: &Service,
    bridge: &str,
    domain: &str,
    paused: bool,
) -> Result<(), String> {
    let text =
        std::fs::read_to_string(&s.config).map_err(|e| format!("cannot read {}: {e}", s.config))?;
    let script = match s.vif_script {
        VifScript::Xl => None,
        VifScript::Builtin => Some(own_path()?),
    };
    let ov = overrides(s, bridge, domain, &text, script.as_deref());
    let mut args: Vec<&str> = vec!["create"];
    if paused {
        args.push("-p");
    }
    args.push(&s.config);
    args.extend(ov.iter().map(String::as_str));
    xl(bin, &args).map(|_| ())
}

/// The activator's own binary, for libxl to run as a vif hotplug script.
fn own_path() -> Result<String, String> {
    let p = std::env::current_exe()
        .map_err(|e| format!("vif_script = builtin: cannot find the activator's binary: {e}"))?;
    let p = p.to_string_lossy().into_owned();
    // The path goes inside xl's `vif=['k=v,k=v']` list: it cannot hold a comma or a quote.
    if p.contains([',', '\'', '"', ']']) {
        return Err(format!("vif_script = builtin: the activator's path {p} has a , ' \" or ] (xl cannot take it in a vif)"));
    }
    Ok(p)
}

/// The last few lines xenconsoled logged for `domain` (with `--log=guest`), if it keeps a log.
pub fn console_tail(domain: &str, lines: usize) -> Option<String> {
    let text = std::fs::read_to_string(format!("/var/log/xen/console/guest-{domain}.log")).ok()?;
    tail_of(&text, lines)
}

/// The last `lines` non-empty lines of `text`, joined, and before them the latest line that says
/// what went wrong (panic, fault, error) if it is a little further up.
fn tail_of(text: &str, lines: usize) -> Option<String> {
    let v: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if v.is_empty() {
        return None;
    }
    let tail = v.len().saturating_sub(lines);
    // What says why, if the recent lines have it (a panic message comes before its backtrace).
    let why = v[v.len().saturating_sub(40)..tail].iter().rev().find(|l| {
        let l = l.to_ascii_lowercase();
        ["panic", "fault", "error", "fatal"]
            .iter()
            .any(|w| l.contains(w))
    });
    let mut out: Vec<&str> = why.into_iter().copied().collect();
    if why.is_some() {
        out.push("...");
    }
    out.extend_from_slice(&v[tail..]);
    Some(out.join(" | "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_disk_setting_is_found_by_its_line() {
        assert_eq!(
            disk_line("kernel = \"k\"\ndisk = [ 'xvda,raw,w' ]\n"),
            Some(2)
        );
        assert_eq!(disk_line("disk=['x']"), Some(1));
        assert_eq!(disk_line("disk = []\n# disk = ['x']\ndisks_ok = 1\n"), None);
        assert_eq!(disk_line("memory = 8\n"), None);
    }

    use super::*;
    use crate::config::parse;

    #[test]
    fn the_overrides_keep_the_apps_arguments_and_add_the_address() {
        let c =
            parse("[web]\nconfig = /x.xl\naddress = 10.0.0.50/24\ngateway = 10.0.0.1\nport = 80\n")
                .unwrap();
        let xl = "name = \"httpd\"\nextra = \"stats=5\"\nvif = [ 'bridge=xenbr0' ]\n";
        assert_eq!(extra_of(xl), "stats=5");
        let ov = overrides(&c.services[0], "xenbr0", "web-1", xl, None);
        assert_eq!(ov[0], "name=\"web-1\"");
        assert_eq!(ov[1], "vif=['mac=00:16:3e:00:00:32,bridge=xenbr0']");
        assert_eq!(ov[2], "extra=\"stats=5 ip=10.0.0.50/24 gw=10.0.0.1\"");
        let ov = overrides(&c.services[0], "br1", "web-2", "extra = ''\n", None);
        assert_eq!(ov[2], "extra=\"ip=10.0.0.50/24 gw=10.0.0.1\"");
        let ov = overrides(
            &c.services[0],
            "br1",
            "web-3",
            "",
            Some("/usr/sbin/xenrt-activator"),
        );
        assert_eq!(
            ov[1],
            "vif=['mac=00:16:3e:00:00:32,bridge=br1,script=/usr/sbin/xenrt-activator']"
        );
    }

    #[test]
    fn the_console_tail_keeps_the_panic_message_above_a_backtrace() {
        let dir = std::env::temp_dir().join(format!("xrt-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("log");
        std::fs::write(
            &f,
            "boot\nxenrt: PANIC at main.rs:3: test panic 42\n#0 a\n#1 b\nexit crash\n",
        )
        .unwrap();
        let t = tail_of(&std::fs::read_to_string(&f).unwrap(), 3).unwrap();
        assert_eq!(
            t,
            "xenrt: PANIC at main.rs:3: test panic 42 | ... | #0 a | #1 b | exit crash"
        );
        assert_eq!(tail_of("a\nb\n", 3).unwrap(), "a | b");
        assert_eq!(tail_of("\n\n", 3), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_custom_address_template_is_filled() {
        let c =
            parse("[linux]\nconfig = /l.xl\naddress = 10.0.0.60\nport = 80\nargs = lab.ip={ip}\n")
                .unwrap();
        assert_eq!(address_args(&c.services[0]), "lab.ip=10.0.0.60");
    }
}
