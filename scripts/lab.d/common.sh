# Shared helpers for the lab builders (sourced by scripts/lab.d/build-*). Bash.
# Everything comes from Debian packages fetched by scripts/fetch-debs into $XENRT_CACHE.

LAB_D="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$LAB_D/../.." && pwd)"
CACHE="${XENRT_CACHE:-$HOME/.cache/xenrt}"
FETCH="$REPO/scripts/fetch-debs"
KVER_PKG_FALLBACK="linux-image-6.1.0-56-amd64"

# Serialize builders that share the cache (two labs starting at once).
lock_cache() { mkdir -p "$CACHE/lab"; exec 9>"$CACHE/lab/.lock"; flock 9; }

say() { echo "lab: $*" >&2; }
die() { echo "lab: error: $*" >&2; exit 1; }

need_host_tools() {
    local t missing=()
    for t in "$@"; do command -v "$t" >/dev/null || missing+=("$t"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    # map tool -> Debian package
    local pkgs=() p
    for t in "${missing[@]}"; do
        case "$t" in
            readelf) p=binutils ;; python3) p=python3 ;; gzip) p=gzip ;; xz) p=xz-utils ;;
            qemu-system-x86_64) p=qemu-system-x86 ;; *) p="$t" ;;
        esac
        pkgs+=("$p")
    done
    say "installing missing host tools: ${pkgs[*]}"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2 ||
        { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2; } ||
        die "could not install ${pkgs[*]}"
}

# The kernel package that linux-image-amd64 depends on (cached in $CACHE/lab/kernel-pkg).
kernel_pkg() {
    local f="$CACHE/lab/kernel-pkg" k=""
    if [ -s "$f" ]; then cat "$f"; return; fi
    mkdir -p "$CACHE/lab"
    k=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    if [ -z "$k" ]; then
        apt-get update -qq >&2 || true
        k=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    fi
    [ -n "$k" ] || { say "cannot resolve linux-image-amd64, using $KVER_PKG_FALLBACK"; k=$KVER_PKG_FALLBACK; }
    echo "$k" > "$f"; echo "$k"
}

# fetch PKG... -> sets ROOT[pkg]=dir (needs `declare -A ROOT` in caller)
fetch_pkgs() {
    local out p i=0 n=0
    for p in "$@"; do [ -f "$CACHE/debs/$p.root/.done" ] || n=$((n+1)); done
    [ $n -eq 0 ] || say "fetching $n Debian package(s) into $CACHE/debs"
    out=$("$FETCH" "$@") || die "fetching Debian packages failed: $*"
    local -a dirs; mapfile -t dirs <<<"$out"
    for p in "$@"; do ROOT[$p]="${dirs[$i]}"; i=$((i+1)); done
}

# Identity of fetched packages (the .deb file names carry versions).
# The .deb unpacked for each (fetch-debs writes its name into ROOT/.done; the name carries the version).
debs_id() {
    local p d
    for p in "$@"; do
        d=$(cat "$CACHE/debs/$p.root/.done" 2>/dev/null || true)
        [ -n "$d" ] || d=$(ls "$CACHE/debs/${p}_"*.deb 2>/dev/null | head -1 | xargs -r basename)
        echo "$d"
    done
}

# Library closure. LIBROOTS=(dirs) searched; copies libs into $1/lib/x86_64-linux-gnu.
# lib_closure STAGE BIN... ; returns 1 (and prints missing) if a lib is not found.
LIBDIRS=(lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu usr/lib/xen-4.17/lib/x86_64-linux-gnu lib64 usr/lib)
find_lib() {
    local r d
    for r in "${LIBROOTS[@]}"; do for d in "${LIBDIRS[@]}"; do
        [ -e "$r/$d/$1" ] && { echo "$r/$d/$1"; return 0; }
    done; done
    return 1
}
needed() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
lib_closure() {
    local stage="$1"; shift
    local -a queue=("$@"); local f l src missing=0
    mkdir -p "$stage/lib/x86_64-linux-gnu"
    while [ ${#queue[@]} -gt 0 ]; do
        f="${queue[0]}"; queue=("${queue[@]:1}")
        for l in $(needed "$f"); do
            [ -e "$stage/lib/x86_64-linux-gnu/$l" ] && continue
            if src=$(find_lib "$l"); then
                cp -L "$src" "$stage/lib/x86_64-linux-gnu/$l"
                queue+=("$stage/lib/x86_64-linux-gnu/$l")
            else
                echo "missing library $l (needed by $(basename "$f"))" >&2; missing=1
            fi
        done
    done
    return $missing
}

# Kernel modules: mod_closure STAGE KROOT KVER MOD... (KROOT = unpacked linux-image root)
mod_closure() {
    local stage="$1" kroot="$2" kver="$3"; shift 3
    local mdir="$kroot/lib/modules/$kver" bb="${BUSYBOX:?}"
    [ -f "$mdir/modules.dep" ] || "$bb" depmod -b "$kroot" "$kver" || die "depmod failed"
    local -A path=() done=()
    local line m k dep
    while IFS= read -r line; do
        k="${line%%:*}"; m="$(basename "$k")"; m="${m%.ko*}"; m="${m//-/_}"
        path[$m]="$line"
    done < "$mdir/modules.dep"
    local -a queue=("$@")
    while [ ${#queue[@]} -gt 0 ]; do
        m="${queue[0]//-/_}"; queue=("${queue[@]:1}")
        [ -n "${done[$m]:-}" ] && continue
        done[$m]=1
        line="${path[$m]:-}"
        if [ -z "$line" ]; then
            grep -q "/${m}.ko" "$mdir/modules.builtin" 2>/dev/null ||
                grep -q "/${m//_/-}.ko" "$mdir/modules.builtin" 2>/dev/null ||
                say "warning: module $m not found (neither module nor built-in)"
            continue
        fi
        k="${line%%:*}"
        mkdir -p "$stage/lib/modules/$kver/$(dirname "$k")"
        cp "$mdir/$k" "$stage/lib/modules/$kver/$k"
        for dep in ${line#*:}; do dep="$(basename "$dep")"; queue+=("${dep%.ko*}"); done
    done
    cp "$mdir/modules.builtin" "$mdir/modules.order" "$stage/lib/modules/$kver/" 2>/dev/null || true
    "$bb" depmod -b "$stage" "$kver" || die "depmod (stage) failed"
}

# busybox applet symlinks into a stage
busybox_links() {
    local stage="$1" a
    mkdir -p "$stage/bin" "$stage/sbin" "$stage/usr/bin" "$stage/usr/sbin"
    cp "$BUSYBOX" "$stage/bin/busybox"
    for a in $("$BUSYBOX" --list-full); do
        [ -e "$stage/$a" ] || [ -L "$stage/$a" ] || ln -s /bin/busybox "$stage/$a"
    done
}

# Write a newc cpio of directory $1 to file $2 (uses the static busybox; the host may lack cpio).
make_cpio() {
    (cd "$1" && find . | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc 2>/dev/null) > "$2.tmp" && mv "$2.tmp" "$2"
}

# Extract the uncompressed vmlinux ELF from a bzImage (xz/zstd/gzip/lzma payload): extract_vmlinux IN OUT
extract_vmlinux() {
    python3 - "$1" "$2" <<'EOF'
import sys, lzma, gzip, zlib, subprocess
data = open(sys.argv[1], 'rb').read()
def tries():
    i = data.find(b'\xfd7zXZ\x00')
    while i >= 0:
        yield ('xz', i); i = data.find(b'\xfd7zXZ\x00', i + 1)
    i = data.find(b'\x28\xb5\x2f\xfd')
    while i >= 0:
        yield ('zstd', i); i = data.find(b'\x28\xb5\x2f\xfd', i + 1)
    i = data.find(b'\x1f\x8b\x08')
    while i >= 0:
        yield ('gzip', i); i = data.find(b'\x1f\x8b\x08', i + 1)
for kind, off in tries():
    try:
        if kind == 'xz':
            out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[off:])
        elif kind == 'gzip':
            d = zlib.decompressobj(16 + zlib.MAX_WBITS); out = d.decompress(data[off:])
        else:
            out = subprocess.run(['zstd', '-dc'], input=data[off:], capture_output=True).stdout
    except Exception:
        continue
    if out[:4] == b'\x7fELF':
        open(sys.argv[2], 'wb').write(out)
        print(f'{kind} payload at {off}: {len(out)} bytes', file=sys.stderr)
        sys.exit(0)
sys.exit('no ELF payload found in ' + sys.argv[1])
EOF
}
