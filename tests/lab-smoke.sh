#!/usr/bin/env bash
# Smoke test of the Xen lab itself (scripts/lab): one lab boot, the exec agent, a Linux PV domU
# with vif + disk (DHCP, ping, disk I/O, port forward from the host), three guests ending by
# poweroff / crash / reboot, a dm "error" disk, and a clean stop.
#   tests/lab-smoke.sh          (LAB_DIR defaults to <repo>/target/lab-smoke; ~2-3 min)
# Ends with the line "N passed, M failed"; exit status 0 only if nothing failed.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
export LAB_DIR="${LAB_DIR:-$REPO/target/lab-smoke}"
LAB="$REPO/scripts/lab"
pass=0; fail=0
ok()  { pass=$((pass+1)); echo "ok   - $*"; }
bad() { fail=$((fail+1)); echo "FAIL - $*"; }
check() { local d="$1"; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
b64() { printf '%s' "$1" | base64 -w0; }
finish() {
    "$LAB" stop >/dev/null 2>&1
    if pgrep -f "path=$LAB_DIR/share" >/dev/null; then bad "no QEMU left after stop"; else ok "no QEMU left after stop"; fi
    echo "$pass passed, $fail failed"
    [ $fail -eq 0 ]
}
trap 'finish; exit $?' EXIT

t0=$SECONDS
"$LAB" start || { bad "lab start"; exit 1; }
ok "lab start ($((SECONDS - t0)) s)"

out=$("$LAB" exec 'xl list')
check "exec xl list shows Domain-0" grep -q '^Domain-0' <<<"$out"
"$LAB" exec 'echo hi; exit 3' >/dev/null; check "exec exit status passes through" test $? -eq 3
err=$("$LAB" exec 'echo out; echo err >&2' 2>&1 >/dev/null)
check "exec stderr kept apart" test "$err" = err

IMG=$("$REPO/scripts/lab.d/build-linux-domu") || { bad "build Linux domU"; exit 1; }
ok "build Linux domU"
X="$IMG/linux.xl"

t1=$SECONDS
read -r name domid < <("$LAB" create "$X")
check "create linux (domid ${domid:-?}, $((SECONDS - t1)) s)" test "$name" = linux
"$LAB" console linux --follow 90 --until 'LAB-DOMU-READY ip=10.0.0.101' >/dev/null
check "linux got its DHCP lease 10.0.0.101 ($((SECONDS - t1)) s after create)" test $? -eq 0
check "ping linux from dom0" "$LAB" exec 'ping -c 2 -W 2 10.0.0.101 >/dev/null'
check "lab ip linux" test "$("$LAB" ip linux)" = 10.0.0.101
check "wget from dom0" "$LAB" exec 'wget -qO- http://10.0.0.101/ | grep -q hello'
port=$(python3 "$REPO/scripts/lab.d/labc.py" freeport)
"$LAB" forward "$port" 10.0.0.101:80 >/dev/null
body=$(python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:$port/', timeout=10).read().decode())" 2>&1)
check "host 127.0.0.1:$port forwards to the guest's httpd" grep -q hello <<<"$body"
"$LAB" unforward "$port" >/dev/null
"$LAB" destroy linux

# three guests at once: poweroff (with disk I/O), crash, reboot
"$LAB" create "$X" 'name="g1"' "vif=['bridge=xenbr0,mac=00:16:3e:00:00:02']" \
    "extra=\"console=hvc0 quiet lab.cmd=$(b64 'echo lab-disk-ok > /dev/xvda && head -c 11 /dev/xvda && echo')\"" >/dev/null
"$LAB" create "$X" 'name="g2"' "vif=['bridge=xenbr0,mac=00:16:3e:00:00:03']" \
    "extra=\"console=hvc0 quiet lab.after=crash lab.cmd=$(b64 'ping -c 1 10.0.0.1')\"" >/dev/null
"$LAB" create "$X" 'name="g3"' 'vif=[]' 'disk=[]' \
    "extra=\"console=hvc0 quiet lab.after=reboot lab.cmd=$(b64 true)\"" >/dev/null
"$LAB" wait g1 90; check "g1 ends by poweroff (exit 0)" test $? -eq 0
"$LAB" wait g2 90; check "g2 ends by crash (exit 1)" test $? -eq 1
"$LAB" wait g3 90; check "g3 ends by reboot (exit 2)" test $? -eq 2
check "g1 wrote and read its disk" grep -q lab-disk-ok <("$LAB" console g1)
check "g2 reached dom0 by ping" grep -q '1 packets received' <("$LAB" console g2)
check "all guests gone" test "$("$LAB" exec 'xl list | wc -l')" -eq 2

# a guest still running at the wait timeout
"$LAB" create "$X" 'name="g4"' 'vif=[]' 'disk=[]' >/dev/null
"$LAB" wait g4 3 --destroy >/dev/null; check "wait times out on a running guest (exit 124)" test $? -eq 124

# device-mapper error target as a guest disk
"$LAB" exec 'dmsetup create err --table "0 2048 error"'
"$LAB" create "$X" 'name="g5"' 'vif=[]' "disk=['format=raw,vdev=xvda,access=rw,target=/dev/mapper/err']" \
    "extra=\"console=hvc0 quiet lab.cmd=$(b64 'dd if=/dev/xvda of=/dev/null bs=512 count=1 || echo dm-read-failed')\"" >/dev/null
"$LAB" wait g5 90 >/dev/null
check "dm error disk gives the guest I/O errors" grep -q dm-read-failed <("$LAB" console g5)
