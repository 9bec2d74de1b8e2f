# Sourced by scripts/ab-cpu and scripts/ab-iperf: two images side by side in one lab.
#
# ab_boot IMAGE_A IMAGE_B PROBE: starts the lab (LAB_DIR, default target/lab-ab) unless it runs,
# arranges for the guests (and a lab it started) to go at exit, boots IMAGE_A as ab-a at
# 10.0.0.11 and IMAGE_B as ab-b at 10.0.0.12 (8 MiB, log=warn), and waits until PROBE (a dom0
# shell command run with IP set to each guest's address) succeeds for both, or fails after 30 s.
# Sets LAB (the lab command). ab_ip a|b prints a guest's address.

ab_ip() { [ "$1" = a ] && echo 10.0.0.11 || echo 10.0.0.12; }

ab_boot() {
  local a=$1 b=$2 probe=$3 x f
  for f in "$a" "$b"; do [ -f "$f" ] || { echo "$(basename "$0"): no image $f" >&2; exit 2; }; done
  export LAB_DIR=${LAB_DIR:-$PWD/target/lab-ab}
  LAB=scripts/lab
  AB_STARTED=0
  if ! $LAB status >/dev/null 2>&1; then $LAB start >&2; AB_STARTED=1; fi
  trap ab_cleanup EXIT
  local share=$LAB_DIR/share
  mkdir -p "$share"
  cp "$a" "$share/ab-a.img"
  cp "$b" "$share/ab-b.img"
  for x in a b; do
    cat >"$share/ab-$x.xl" <<XL
name = "ab-$x"
type = "pv"
kernel = "/tmp/ab/ab-$x.img"
memory = 8
vcpus = 1
extra = "log=warn ip=$(ab_ip $x)/24"
vif = ['bridge=xenbr0,mac=00:16:3e:00:00:$([ $x = a ] && echo 3a || echo 3b)']
on_poweroff = "destroy"
on_crash = "destroy"
XL
  done
  $LAB exec -t 120 "mkdir -p /tmp/ab && cp /mnt/host/ab-a.img /mnt/host/ab-b.img /tmp/ab/ &&
    xl create -q /mnt/host/ab-a.xl && xl create -q /mnt/host/ab-b.xl &&
    for IP in $(ab_ip a) $(ab_ip b); do
      i=0; until $probe; do i=\$((i+1)); [ \$i -lt 60 ] || { echo no answer from \$IP; exit 1; }; sleep 0.5; done
    done" >&2
}

ab_cleanup() {
  $LAB exec "xl destroy ab-a >/dev/null 2>&1; xl destroy ab-b >/dev/null 2>&1; true" >/dev/null 2>&1 || true
  [ "$AB_STARTED" = 1 ] && $LAB stop >/dev/null 2>&1 || true
}
