#!/usr/bin/env python3
"""Host-side helper of scripts/lab (not meant to be called directly).

  labc.py exec PORT TIMEOUT CMD           run CMD in dom0 via the agent; exit with its status
  labc.py ping PORT                       exit 0 if the dom0 agent answers
  labc.py hmp SOCKET CMD                  run a QEMU human-monitor command, print its output
  labc.py freeport                        print a free TCP port on 127.0.0.1
  labc.py prepare LABDIR CFG [KEY=VAL..]  copy a guest's files into the lab, rewrite the .xl;
                                          prints NAME and the dom0 path of the new .xl
  labc.py reason XLLOG OFFSET DOMID       print "CODE ACTION" if xl logged this domain's shutdown
  labc.py follow CONSOLELOG XLLOG OFFSET DOMID TIMEOUT [REGEX]
                                          print a console log as it grows, until the domain shuts
                                          down (exit 0), REGEX matches (0) or TIMEOUT (124); with
                                          REGEX, a shutdown before it matched exits 1
"""
import base64, hashlib, os, re, selectors, shutil, socket, sys, time


def do_exec(port, timeout, cmd):
    nonce = os.urandom(8).hex()
    b64 = base64.b64encode(cmd.encode()).decode()
    try:
        a = socket.create_connection(('127.0.0.1', port), timeout=10)
        a.sendall(f'X {nonce} {timeout} {b64}\n'.encode())
        e = socket.create_connection(('127.0.0.1', port), timeout=10)
        e.sendall(f'E {nonce}\n'.encode())
    except OSError as ex:
        print(f'lab exec: cannot reach the dom0 agent on 127.0.0.1:{port}: {ex}', file=sys.stderr)
        return 255
    a.setblocking(False); e.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, 'out')
    sel.register(e, selectors.EVENT_READ, 'err')
    out = sys.stdout.buffer; err = sys.stderr.buffer
    held = b''
    trailer = re.compile(re.escape(nonce.encode()) + rb' (-?\d+)\n$')
    rc = None
    deadline = time.monotonic() + timeout + 5 if timeout > 0 else None
    grace_end = None
    open_socks = 2
    got_any = False
    while open_socks:
        now = time.monotonic()
        if deadline and now > deadline:
            print('lab exec: timed out waiting for dom0', file=sys.stderr)
            return 124 if rc is None else rc
        if grace_end and now > grace_end:
            break
        wait = 1.0
        if grace_end:
            wait = max(0.0, grace_end - now)
        for key, _ in sel.select(wait):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b''
            if not data:
                sel.unregister(s); s.close(); open_socks -= 1
                continue
            got_any = True
            if key.data == 'err':
                err.write(data); err.flush()
                continue
            held += data
            m = trailer.search(held)
            if m:
                out.write(held[:m.start()]); out.flush()
                held = b''
                rc = int(m.group(1))
                sel.unregister(s); s.close(); open_socks -= 1
                grace_end = time.monotonic() + 0.3   # let stderr drain
            elif len(held) > 64:
                out.write(held[:-64]); out.flush(); held = held[-64:]
    out.write(held); out.flush()
    if rc is None:
        if not got_any:
            print(f'lab exec: no answer from the dom0 agent (port {port}); is the lab up?', file=sys.stderr)
        else:
            print('lab exec: connection to dom0 lost before the command finished', file=sys.stderr)
        return 255
    return rc & 0xff if rc >= 0 else 255


def ping(port):
    # an exec of `true` with output swallowed
    devnull = open(os.devnull, 'wb')
    so, se = sys.stdout, sys.stderr
    class W:  # minimal wrapper with .buffer
        buffer = devnull
        def write(self, s): pass
        def flush(self): pass
    sys.stdout = W(); sys.stderr = W()
    try:
        return do_exec(port, 5, 'true')
    finally:
        sys.stdout, sys.stderr = so, se


def hmp(sockpath, cmd):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sockpath)
    buf = b''
    while not buf.endswith(b'(qemu) '):
        d = s.recv(4096)
        if not d:
            break
        buf += d
    s.sendall(cmd.encode() + b'\n')
    buf = b''
    while not buf.endswith(b'(qemu) '):
        d = s.recv(4096)
        if not d:
            break
        buf += d
    s.close()
    text = buf.decode(errors='replace').replace('\r', '')
    text = re.sub(r'\x1b\[[0-9;]*[A-Za-z]', '', text)
    lines = text.split('\n')
    # drop the echoed command and the prompt
    lines = [l for l in lines[1:] if l.strip() and l.strip() != '(qemu)']
    if lines:
        print('\n'.join(lines))
    return 0


def freeport():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    p = s.getsockname()[1]
    s.close()
    print(p)
    return 0


def prepare(labdir, cfg, extras):
    labdir = os.path.abspath(labdir)
    txt = open(cfg).read()
    if extras:
        txt += '\n# from the command line\n' + '\n'.join(extras) + '\n'
    base = os.path.dirname(os.path.abspath(cfg))
    names = re.findall(r'^\s*name\s*=\s*["\']([^"\']+)["\']', txt, re.M)
    if not names:
        sys.exit(f'lab create: {cfg}: no name = "..." in the config')
    name = names[-1]
    if not re.fullmatch(r'[A-Za-z0-9_.-]+', name):
        sys.exit(f'lab create: bad domain name {name!r}')
    gdir = os.path.join(labdir, 'dom0', 'guests', name)
    shutil.rmtree(gdir, ignore_errors=True)
    os.makedirs(gdir)
    share = os.path.join(labdir, 'share') + '/'
    dom0 = os.path.join(labdir, 'dom0') + '/'
    used = set()

    def copy(src, dst):
        # sparse-preserving copy
        tmp = dst + '.tmp'
        with open(src, 'rb') as fi, open(tmp, 'wb') as fo:
            while True:
                chunk = fi.read(1 << 20)
                if not chunk:
                    break
                if chunk.count(0) == len(chunk):
                    fo.seek(len(chunk), 1)
                else:
                    fo.write(chunk)
            fo.truncate()
        os.replace(tmp, dst)

    def place_ro(p):
        # kernels and ramdisks: shared, keyed by path + size + mtime (copied once per lab boot)
        hp = os.path.abspath(p if os.path.isabs(p) else os.path.join(base, p))
        if hp.startswith(share) or hp.startswith(dom0) or not os.path.isfile(hp):
            return place(p)
        st = os.stat(hp)
        key = hashlib.sha256(f'{hp}\0{st.st_size}\0{st.st_mtime_ns}'.encode()).hexdigest()[:16]
        d = os.path.join(labdir, 'dom0', 'files', key)
        dst = os.path.join(d, os.path.basename(hp))
        if not os.path.exists(dst):
            os.makedirs(d, exist_ok=True)
            copy(hp, dst)
        return f'/mnt/lab/files/{key}/{os.path.basename(hp)}'

    def place(p):
        hp = p if os.path.isabs(p) else os.path.join(base, p)
        hp = os.path.abspath(hp)
        if hp.startswith(share):
            return '/mnt/host/' + hp[len(share):]
        if hp.startswith(dom0):
            return '/mnt/lab/' + hp[len(dom0):]
        if not os.path.exists(hp):
            if os.path.isabs(p):
                return p            # a dom0 path (e.g. /dev/mapper/x): leave it
            sys.exit(f'lab create: {p}: no such file (relative to {base})')
        bn = os.path.basename(hp)
        while bn in used:
            bn = '_' + bn
        used.add(bn)
        dst = os.path.join(gdir, bn)
        if os.path.isdir(hp):
            sys.exit(f'lab create: {p} is a directory')
        copy(hp, dst)   # a private copy per guest (disks stay sparse)
        return f'/mnt/lab/guests/{name}/{bn}'

    def subst_key(m):
        return m.group(1) + m.group(2) + place_ro(m.group(3)) + m.group(2)
    txt = re.sub(r'^(\s*(?:kernel|ramdisk)\s*=\s*)(["\'])(.*?)\2', subst_key, txt, flags=re.M)

    def subst_disk_entry(m):
        q, spec = m.group(1), m.group(2)
        if 'target=' in spec:
            pre, path = spec.split('target=', 1)
            return q + pre + 'target=' + place(path) + q
        parts = spec.split(',')
        p0 = parts[0]
        pfx = ''
        for k in ('file:', 'aio:', 'phy:'):
            if p0.startswith(k):
                pfx, p0 = k, p0[len(k):]
        if '/' in p0 or os.path.exists(os.path.join(base, p0)):
            parts[0] = pfx + place(p0)
        return q + ','.join(parts) + q

    def subst_disk(m):
        return m.group(1) + re.sub(r'(["\'])(.*?)\1', subst_disk_entry, m.group(2)) + m.group(3)
    txt = re.sub(r'^(\s*disk\s*=\s*\[)(.*?)(\])', subst_disk, txt, flags=re.M | re.S)

    for k, v in (('on_poweroff', 'destroy'), ('on_reboot', 'destroy'), ('on_crash', 'preserve'),
                 ('on_watchdog', 'destroy'), ('on_soft_reset', 'destroy')):
        if not re.search(r'^\s*' + k + r'\s*=', txt, re.M):
            txt += f'{k} = "{v}"\n'
    with open(os.path.join(gdir, name + '.xl'), 'w') as f:
        f.write(txt)
    print(name, f'/mnt/lab/guests/{name}/{name}.xl')
    return 0


REASONS = {-1: 'destroyed', 0: 'poweroff', 1: 'reboot', 2: 'suspend', 3: 'crash', 4: 'watchdog', 5: 'soft_reset'}


def find_reason(xllog, off, domid):
    try:
        with open(xllog, 'rb') as f:
            f.seek(off)
            data = f.read().decode(errors='replace')
    except FileNotFoundError:
        return None
    m = re.search(r'Domain %s has shut down, reason code (\d+)' % domid, data)
    if not m:
        if re.search(r'Domain %s has been destroyed' % domid, data):
            return -1, 'none'     # destroyed from outside (xl destroy)
        return None
    code = int(m.group(1))
    a = re.search(r'Action for shutdown reason code %d is (\w+)' % code, data[m.end():])
    return code, (a.group(1) if a else '?')


def reason(xllog, off, domid):
    r = find_reason(xllog, int(off), domid)
    if r is None:
        return 1
    print(r[0], REASONS.get(r[0], 'code%d' % r[0]), r[1])
    return 0


def follow(conlog, xllog, off, domid, timeout, until=None):
    off = int(off); timeout = float(timeout)
    rx = re.compile(until.encode()) if until else None
    seen = b''
    end = time.monotonic() + timeout if timeout > 0 else None
    pos = 0
    done_at = None
    out = sys.stdout.buffer
    while True:
        try:
            with open(conlog, 'rb') as f:
                f.seek(pos)
                d = f.read()
                if d:
                    out.write(d); out.flush(); pos += len(d)
                    if rx:
                        seen += d
                        if rx.search(seen):
                            return 0
                        seen = seen[-4096:]
        except FileNotFoundError:
            pass
        if done_at is not None and time.monotonic() > done_at:
            return 1 if rx else 0
        if done_at is None and find_reason(xllog, off, domid) is not None:
            done_at = time.monotonic() + 0.5
        if end and time.monotonic() > end:
            return 124
        time.sleep(0.1)


def main(argv):
    if len(argv) < 2:
        print(__doc__); return 2
    c = argv[1]
    try:
        if c == 'exec':
            return do_exec(int(argv[2]), int(argv[3]), argv[4])
        if c == 'ping':
            return ping(int(argv[2]))
        if c == 'hmp':
            return hmp(argv[2], argv[3])
        if c == 'freeport':
            return freeport()
        if c == 'prepare':
            return prepare(argv[2], argv[3], argv[4:])
        if c == 'reason':
            return reason(argv[2], argv[3], argv[4])
        if c == 'follow':
            return follow(*argv[2:8])
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141
    print(__doc__); return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv))
