//! The lab tier for many guests at once: `DENSITY_GUESTS` (default 30 in the suite;
//! `scripts/density [N]` runs the full campaign, 100 by default) httpd guests at
//! memory=4, each with a random MAC and an address from dom0's udhcpd, started one after the
//! other without waiting for any, must all be serving at the same time (curl from dom0 gets a
//! 200 from every one), then are destroyed. It prints how long that took, the DHCP traffic on
//! the bridge (tests/lab-tools/dhcpcount), and how much memory each guest took, so how many
//! would fit.
//!
//! Measured (2026-12-01, two other labs sharing the host's 2 cores): 100 of 100 serving at once,
//! 98 leased after 1 DISCOVER + 1 REQUEST, 0 stale OFFERs; 4.2 MiB per guest, 1004 MiB free in
//! the default lab (LAB_MEM=1536, dom0 512), so ~236 fit by memory (udhcpd has 136 addresses
//! for random MACs). 678 s in all, of which xl create ~4.5 s per guest (451 s), curl 68 s and
//! the destroys 159 s: xl's domain handling in the emulated dom0, not DHCP, sets the pace.

use xen_tests::case;
use xen_tests::lab::{dom0_sh, lab, tool};

/// The dom0 side: create, wait, curl, count, destroy. Prints one `DENSITY k=v ...` line.
const SCRIPT: &str = r#"
K=$1; N=$2; T=$3; W=$4; P=$6
D=/tmp/$T; mkdir -p $D
C=/var/log/xen/console
$5 xenbr0 3000 > $D/count.txt 2>&1 &
cpid=$!
free0=$(xl info | awk '/^free_memory/{print $3}')
t0=$(date +%s)
# $P creates at a time: xl's domain build is most of the time, and each guest's boot overlaps
# the next creates anyway.
i=1; created=0
while [ $i -le $N ]; do
  pids=""
  j=0
  while [ $j -lt $P ] && [ $i -le $N ]; do
    printf 'name="%s-%d"\ntype="pv"\nkernel="%s"\nmemory=4\nvcpus=1\non_poweroff="destroy"\non_crash="preserve"\nvif=["bridge=xenbr0"]\nextra="log=info"\n' $T $i $K > $D/$i.xl
    ( xl create $D/$i.xl > $D/$i.out 2>&1 || { echo "create $i failed: $(tail -3 $D/$i.out)"; touch $D/$i.failed; } ) &
    pids="$pids $!"
    i=$((i+1)); j=$((j+1))
  done
  wait $pids
done
created=$(xl list | awk -v t="$T-" 'index($1,t)==1' | wc -l)
t1=$(date +%s)
free1=$(xl info | awk '/^free_memory/{print $3}')
while :; do
  s=$(grep -l "httpd: serving" $C/guest-$T-*.log 2>/dev/null | wc -l)
  [ $s -ge $created ] && break
  [ $(( $(date +%s) - t1 )) -ge $W ] && break
  sleep 2
done
t2=$(date +%s)
ips=""
for f in $C/guest-$T-*.log; do
  ip=$(sed -n 's#.*on http://\([0-9.]*\):80/.*#\1#p' $f | tail -1)
  [ -n "$ip" ] || { echo "not serving: $f: $(tail -2 $f)"; continue; }
  ips="$ips $ip"
done
# Eight curls at a time (one curl for all stalled in the lab; a curl process takes about a
# second to start in the emulated dom0).
: > $D/curl.txt
n=0; pids=""
for ip in $ips; do
  ( c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 http://$ip/); echo "$c $ip" >> $D/curl.txt ) &
  pids="$pids $!"; n=$((n+1))
  [ $((n % 8)) = 0 ] && { wait $pids; pids=""; }
done
[ -n "$pids" ] && wait $pids
ok=$(grep -c '^200 ' $D/curl.txt)
grep -v '^200 ' $D/curl.txt
running=$(xl list | awk -v t="$T-" 'index($1,t)==1' | wc -l)
t3=$(date +%s)
distinct=$(echo $ips | tr ' ' '\n' | grep . | sort -u | wc -l)
warned=$(grep -l 'no DHCP lease after' $C/guest-$T-*.log 2>/dev/null | wc -l)
panics=$(grep -l 'panic' $C/guest-$T-*.log 2>/dev/null | wc -l)
echo "retransmissions (DISCOVER, REQUEST per guest):"
grep -ho "([0-9]* DISCOVER, [0-9]* REQUEST sent)" $C/guest-$T-*.log 2>/dev/null | sort | uniq -c | sort -rn
pids=""; n=0
for d in $(xl list | awk -v t="$T-" 'index($1,t)==1{print $1}'); do
  xl destroy $d & pids="$pids $!"; n=$((n+1))
  [ $((n % P)) = 0 ] && { wait $pids; pids=""; }
done
[ -n "$pids" ] && wait $pids
kill $cpid; wait $cpid 2>/dev/null; grep -v listening $D/count.txt
t4=$(date +%s)
free2=$(xl info | awk '/^free_memory/{print $3}')
echo "DENSITY created=$created serving=$s curl_ok=$ok distinct=$distinct running=$running warned=$warned panics=$panics create_s=$((t1-t0)) serving_s=$((t2-t0)) curl_s=$((t3-t2)) total_s=$((t4-t0)) free_before=$free0 free_running=$free1 free_after=$free2"
"#;

fn field(line: &str, k: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    xen_tests::lab::start_or_exit();
    let cases = vec![case("many_dhcp_httpd_guests_serve_at_once", || {
        let n: u64 = std::env::var("DENSITY_GUESTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30);
        let count = tool("dhcpcount")?;
        let put = lab(&["put", xen_tests::image("httpd")?.to_str().unwrap()])?;
        let kernel = put.output.trim().lines().last().unwrap_or("").to_string();
        if put.code != Some(0) || kernel.is_empty() {
            return Err(format!("lab put httpd: {}", put.output));
        }
        let tag = format!("dens{}", std::process::id() % 100_000);
        let script = format!("set -- {kernel} {n} {tag} 300 {count} 4\n{SCRIPT}",);
        let out = dom0_sh(&script, 1200);
        // Whatever happened, no guest of ours outlives the case.
        let _ = dom0_sh(
            &format!(
                "for d in $(xl list | awk -v t=\"{tag}-\" 'index($1,t)==1{{print $1}}'); do xl destroy $d; done"
            ),
            120,
        );
        let out = out?;
        let line = out
            .lines()
            .find(|l| l.starts_with("DENSITY "))
            .ok_or(format!("no summary in:\n{out}"))?;
        let (created, serving, ok, distinct, running) = (
            field(line, "created"),
            field(line, "serving"),
            field(line, "curl_ok"),
            field(line, "distinct"),
            field(line, "running"),
        );
        if created != n || serving != n || ok != n || distinct != n || running != n {
            return Err(format!("want {n} guests created, serving, answering curl with distinct addresses and running at once:\n{out}"));
        }
        if field(line, "panics") != 0 {
            return Err(format!("a guest panicked:\n{out}"));
        }
        let (f0, f1) = (field(line, "free_before"), field(line, "free_running"));
        let per_guest = (f0.saturating_sub(f1)) as f64 / n as f64;
        let fit = if per_guest > 0.0 {
            (f0 as f64 / per_guest) as u64
        } else {
            0
        };
        print!("{out}");
        Ok(format!(
            "[{n} guests: created in {} s, all serving {} s after the first create, curl {} s, \
             {} s in all; {per_guest:.1} MiB each, {f0} MiB free before: ~{fit} would fit]",
            field(line, "create_s"),
            field(line, "serving_s"),
            field(line, "curl_s"),
            field(line, "total_s"),
        ))
    })];
    let ok = xen_tests::run_cases("density", cases, 1);
    xen_tests::lab::finish(ok)
}
