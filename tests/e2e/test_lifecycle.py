"""The server's life: SIGTERM drains (open transactions finish, idle sessions get 421 after
shutdown_grace, exit 0), SIGHUP reloads without dropping sessions and keeps the old config
when the new one is invalid, certificate files are picked up when they change, SNI, the TLS
floor (1.2, ECDHE + AEAD only), session resumption across workers, privilege drop, and the
embedded defaults."""
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import warnings

import pytest

import certs
from conftest import BIN, ENV_SAN, Dialog, client_tls_context, send_one, simple_message


# ---- helpers ----

def tls_session(port, mode="implicit", server_hostname="mx.example.test", ctx=None,
                session=None, src=None, timeout=10, auth=True):
    """A Dialog after TLS is up (implicit TLS or STARTTLS), with the greeting/EHLO done."""
    ctx = ctx or client_tls_context()
    d = Dialog(port, timeout=timeout, src=src)
    if mode == "implicit":
        d.sock = ctx.wrap_socket(d.sock, server_hostname=server_hostname, session=session)
        code, text = d.reply()
        assert code == 220, text
    else:
        assert d.reply()[0] == 220
        assert d.cmd("EHLO client.test")[0] == 250
        code, text = d.cmd("STARTTLS")
        assert code == 220, text
        d.sock = ctx.wrap_socket(d.sock, server_hostname=server_hostname, session=session)
    code, text = d.cmd("EHLO client.test")
    assert code == 250, text
    if auth and "AUTH" in text:
        # the submission listeners need AUTH before MAIL
        d.auth()
    return d


def peer_serial(port, mode="implicit", server_hostname="mx.example.test"):
    d = tls_session(port, mode, server_hostname, auth=False)
    try:
        return certs.der_info(d.sock.getpeercert(binary_form=True))
    finally:
        d.cmd("QUIT")
        d.close()


def transaction(d, rcpt="alice@example.test", subject="test"):
    """MAIL/RCPT/DATA on an open session; returns the final reply."""
    code, text = d.cmd("MAIL FROM:<a@sender.test>")
    assert code == 250, text
    code, text = d.cmd("RCPT TO:<%s>" % rcpt)
    assert code == 250, text
    code, text = d.cmd("DATA")
    assert code == 354, text
    d.send(simple_message(subject) + "\r\n.\r\n")
    return d.reply()


def tls_section(*leafs):
    return "[tls]\n" + "".join("cert = %s\nkey = %s\n" % (l.fullchain, l.privkey) for l in leafs)


@pytest.fixture
def ca(tmp_path):
    return certs.TestCA(str(tmp_path / "pki"))


def wait_exit(server, timeout):
    try:
        return server.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("server did not exit within %.1fs:\n%s" % (timeout, server.log()[-4000:]))


# ---- SIGTERM ----

def test_sigterm_lets_open_transaction_finish(make_server):
    server = make_server(extra="[limits]\nshutdown_grace = 5s\n")
    d = Dialog(server.ports["mx"])
    assert d.reply()[0] == 220
    assert d.cmd("EHLO client.test")[0] == 250
    assert d.cmd("MAIL FROM:<a@sender.test>")[0] == 250
    assert d.cmd("RCPT TO:<alice@example.test>")[0] == 250
    t0 = time.time()
    server.proc.send_signal(signal.SIGTERM)
    server.wait_log("event=draining", count=2, timeout=5)
    assert server.proc.poll() is None, "server exited with a transaction open"
    code, text = d.cmd("DATA")
    assert code == 354, text
    d.send(simple_message("drain") + "\r\n.\r\n")
    code, text = d.reply()
    assert code == 250 and "queued as" in text, text
    qid = text.split()[-1]
    assert d.cmd("QUIT")[0] == 221
    d.close()
    rc = wait_exit(server, 5 - (time.time() - t0) + 1)
    assert rc == 0, server.log()[-3000:]
    assert time.time() - t0 < 6
    # acknowledged means kept: delivered already, or waiting in the spool for the next start
    in_spool = os.path.exists(os.path.join(server.data, "spool", "queue", qid))
    delivered = any(("id %s" % qid).encode() in m for m in server.messages("alice@example.test"))
    assert in_spool or delivered
    assert "event=stopped" in server.log()


def test_sigterm_grace_then_421_for_idle_sessions(make_server):
    server = make_server(extra="[limits]\nshutdown_grace = 2s\n")
    idle = []
    for src in ("127.0.0.1", "127.0.0.2"):   # one on each worker
        d = Dialog(server.ports["mx"], src=src)
        assert d.reply()[0] == 220
        assert d.cmd("EHLO client.test")[0] == 250
        idle.append(d)
    tls = tls_session(server.ports["submissions"])
    idle.append(tls)
    t0 = time.time()
    server.proc.send_signal(signal.SIGTERM)
    for d in idle:
        d.sock.settimeout(6)
        code, text = d.reply()
        waited = time.time() - t0
        assert code == 421 and "4.3.2" in text, text
        assert 1.5 <= waited <= 5, waited
        assert d.closed(timeout=5)
        d.close()
    rc = wait_exit(server, 6)
    assert rc == 0, server.log()[-3000:]
    assert time.time() - t0 < 2 + 4
    assert "event=drain_deadline" in server.log()


# ---- SIGHUP ----

def test_sighup_reload_keeps_open_session(make_server):
    server = make_server()
    old = Dialog(server.ports["mx"])
    assert old.reply()[0] == 220
    code, text = old.cmd("EHLO client.test")
    assert "SIZE 10485760" in text or "SIZE" in text
    old_size = re.search(r"SIZE (\d+)", text).group(1)
    assert old.cmd("MAIL FROM:<a@sender.test>")[0] == 250
    with open(server.conf, "a") as f:
        f.write("[limits]\nmessage_size = 3M\n")
    assert old_size != str(3 * 1024 * 1024)
    old_tls = tls_session(server.ports["submissions"])
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log("event=reloaded", timeout=10)
    # the old sessions go on as if nothing happened
    code, text = transaction(old_tls, rcpt="alice@example.test", subject="old tls session")
    assert code == 250, text
    old_tls.cmd("QUIT")
    old_tls.close()
    assert old.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert old.cmd("DATA")[0] == 354
    old.send(simple_message("old session") + "\r\n.\r\n")
    code, text = old.reply()
    assert code == 250, text
    # new sessions get the new configuration
    deadline = time.time() + 10
    while True:
        d = Dialog(server.ports["mx"])
        assert d.reply()[0] == 220
        code, text = d.cmd("EHLO client.test")
        d.cmd("QUIT")
        d.close()
        if "SIZE %d" % (3 * 1024 * 1024) in text:
            break
        assert time.time() < deadline, "new sessions never saw the new config: " + text
        time.sleep(0.1)
    for starttls in (True, False):
        code, text = send_one(server.ports["mx"], rcpt="bob@example.test", starttls=starttls)
        assert code == 250, text
    assert old.cmd("QUIT")[0] == 221
    old.close()
    server.wait_messages("alice@example.test", 2)
    server.wait_messages("bob@example.test", 2)
    # the old generation finished its session and left
    server.wait_log("event=worker_exit", count=2, timeout=10)
    assert server.proc.poll() is None
    assert server.stop() == 0


def test_rapid_sighups_do_not_stop_the_server(make_server):
    """Regression: a SIGTERM sent to a worker that had just been forked (a second reload
    right after the first) reached the master through the inherited libevent signal
    handler; the master started stopping by itself and then hung with that worker."""
    server = make_server()
    for i in range(8):
        server.proc.send_signal(signal.SIGHUP)
        time.sleep(0.003 * i)
        server.proc.send_signal(signal.SIGHUP)
        time.sleep(0.15)
    # two SIGHUPs close together may merge into one (pending signals do not queue)
    server.wait_log("event=reloaded", count=8, timeout=15)
    time.sleep(0.3)
    assert "event=stopping" not in server.log(), server.log()[-3000:]
    assert server.proc.poll() is None
    for starttls in (True, False):
        code, text = send_one(server.ports["mx"], starttls=starttls)
        assert code == 250, text
    t0 = time.time()
    assert server.stop(timeout=15) == 0
    assert time.time() - t0 < 10


def test_sigterm_right_after_sighup_stops_cleanly(make_server):
    """Regression: SIGTERM right after SIGHUP reaches workers forked a moment before; they
    must end (not forward the signal to the master and live on, leaving it waiting)."""
    server = make_server()
    for _ in range(3):
        server.proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)
    server.wait_log("event=reloaded", count=2)
    server.proc.send_signal(signal.SIGHUP)
    server.proc.send_signal(signal.SIGTERM)
    rc = wait_exit(server, 10)
    assert rc == 0, server.log()[-3000:]


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return set(int(x) for x in f.read().split())
    except OSError:
        return set()


def test_sigterm_to_just_forked_worker_does_not_reach_master(make_server):
    """Regression: a child inherited the master's libevent SIGTERM handler, which writes
    into the master's signal pipe. A SIGTERM that hit a worker before it had its own handler
    (PDEATHSIG, a stop or a second reload right after a fork) made the master stop, and the
    worker lived on undrained. Here each new worker gets SIGTERM the moment it exists."""
    server = make_server()
    master = server.proc.pid
    caught = 0
    for attempt in range(4):
        before = _children(master)
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 5
        new = set()
        while not new and time.time() < deadline:
            new = _children(master) - before
        assert new, "no worker forked after SIGHUP"
        for pid in new:
            try:
                os.kill(pid, signal.SIGTERM)
                caught += 1
            except ProcessLookupError:
                pass
        server.wait_log("event=reloaded", count=attempt + 1, timeout=10)
        time.sleep(0.3)
        assert "event=stopping" not in server.log(), server.log()[-3000:]
        assert server.proc.poll() is None
    assert caught
    # the killed workers were current ones: the master replaced them and service goes on
    time.sleep(0.5)
    for src in ("127.0.0.1", "127.0.0.2"):
        d = Dialog(server.ports["mx"], src=src)
        try:
            assert d.reply()[0] == 220
            assert d.cmd("EHLO client.test")[0] == 250
            assert transaction(d)[0] == 250
            assert d.cmd("QUIT")[0] == 221
        finally:
            d.close()
    assert server.stop(timeout=15) == 0


def test_sighup_invalid_config_keeps_old(make_server):
    server = make_server()
    with open(server.conf) as f:
        good = f.read()
    with open(server.conf, "a") as f:
        f.write("[limits]\nmessage_size = lots\n")
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log("event=reload_failed", timeout=10)
    line = [l for l in server.log().splitlines() if "event=reload_failed" in l][-1]
    assert "message_size" in line and "sealmail.conf:" in line, line
    assert "event=reloaded" not in server.log()
    assert server.proc.poll() is None
    for _ in range(2):
        code, text = send_one(server.ports["mx"])
        assert code == 250, text
    server.wait_messages("alice@example.test", 2)
    # a good file is taken on the next SIGHUP
    with open(server.conf, "w") as f:
        f.write(good)
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log("event=reloaded", timeout=10)
    assert send_one(server.ports["mx"])[0] == 250
    assert server.stop() == 0


def test_sighup_reaches_lookup_and_queue(make_server):
    """postmaster is read by the lookup process: a reload must change where it goes; a
    lookup asked during the switch is re-asked of the new process, never answered 451."""
    server = make_server()
    assert send_one(server.ports["mx"], rcpt="postmaster@example.test")[0] == 250
    server.wait_messages("postmaster@example.test", 1)
    with open(server.conf) as f:
        text = f.read()
    with open(server.conf, "w") as f:
        f.write(text.replace("postmaster = postmaster@example.test", "postmaster = bob@example.test"))
    # a session that keeps asking RCPTs across the reload
    d = Dialog(server.ports["mx"])
    d.reply()
    d.cmd("EHLO client.test")
    assert d.cmd("MAIL FROM:<a@sender.test>")[0] == 250
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 3
    codes = []
    while time.time() < deadline and len(codes) < 2000:
        codes.append(d.cmd("RCPT TO:<alice@example.test>")[0])
        d.cmd("RSET")
        d.cmd("MAIL FROM:<a@sender.test>")
    assert codes and all(c == 250 for c in codes), codes
    d.cmd("QUIT")
    d.close()
    server.wait_log("event=queue_ready", count=2)
    assert send_one(server.ports["mx"], rcpt="postmaster@example.test")[0] == 250
    m = server.wait_messages("bob@example.test", 1)[0].decode()
    assert "Delivered-To: bob@example.test" in m
    assert len(server.messages("postmaster@example.test")) == 1
    assert server.stop() == 0


# ---- certificates ----

def test_certificate_renewal_is_picked_up(make_server, ca):
    leaf = ca.issue("mx.example.test")
    server = make_server(tls_section=tls_section(leaf))
    assert peer_serial(server.ports["submissions"])["serial"] == leaf.serial
    assert peer_serial(server.ports["mx"], "starttls")["serial"] == leaf.serial
    # a session open during the renewal is not disturbed
    open_sess = tls_session(server.ports["submissions"])
    renewed = ca.issue("mx.example.test", outdir=os.path.dirname(leaf.fullchain))
    assert renewed.serial != leaf.serial
    deadline = time.time() + 12
    serial = None
    while time.time() < deadline:
        serial = peer_serial(server.ports["submissions"])["serial"]
        if serial == renewed.serial:
            break
        time.sleep(0.25)
    assert serial == renewed.serial, "still the old certificate after 12 s:\n" + server.log()[-3000:]
    assert peer_serial(server.ports["mx"], "starttls")["serial"] == renewed.serial
    assert "event=cert_changed" in server.log()
    assert "event=reloaded reason=certificate_changed" in server.log()
    code, text = transaction(open_sess)
    assert code == 250, text
    open_sess.cmd("QUIT")
    open_sess.close()
    assert server.stop() == 0


def test_certificate_renewal_letsencrypt_symlinks_and_bad_files(make_server, ca, tmp_path):
    """certbot swaps symlinks in live/<name>/ to new files in archive/; a half-written or
    broken certificate is refused (old one kept, reload_failed names the config line) until
    good files appear."""
    le = str(tmp_path / "letsencrypt")
    first = ca.issue("mx.example.test", outdir=str(tmp_path / "issued1"))
    fullchain, privkey = certs.le_install(first, le, 1)
    server = make_server(tls_section="[tls]\ncert = %s\nkey = %s\n" % (fullchain, privkey))
    assert peer_serial(server.ports["submissions"])["serial"] == first.serial
    # a broken renewal: the new chain is garbage
    bad = ca.issue("mx.example.test", outdir=str(tmp_path / "issued2"))
    with open(bad.fullchain, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nMIIB\n")
    certs.le_install(bad, le, 2)
    server.wait_log("event=reload_failed", timeout=12)
    line = [l for l in server.log().splitlines() if "event=reload_failed" in l][0]
    assert "tls.cert" in line and "sealmail.conf:" in line, line
    assert peer_serial(server.ports["submissions"])["serial"] == first.serial
    assert send_one(server.ports["mx"])[0] == 250
    # the good renewal is taken
    good = ca.issue("mx.example.test", outdir=str(tmp_path / "issued3"))
    certs.le_install(good, le, 3)
    deadline = time.time() + 12
    serial = None
    while time.time() < deadline:
        serial = peer_serial(server.ports["submissions"])["serial"]
        if serial == good.serial:
            break
        time.sleep(0.25)
    assert serial == good.serial, server.log()[-3000:]
    assert server.stop() == 0


def test_certificate_expiry_is_logged(make_server, ca):
    soon = ca.issue("mx.example.test", days=5)
    server = make_server(tls_section=tls_section(soon))
    server.wait_log("event=cert_expiring")
    line = [l for l in server.log().splitlines() if "event=cert_expiring" in l][0]
    assert soon.fullchain in line and ("days_left=4" in line or "days_left=5" in line), line
    assert peer_serial(server.ports["submissions"])["serial"] == soon.serial
    server.stop()
    # an expired certificate is reported as such
    old = ca.issue("old.example.test", not_before=certs.datetime.datetime(
        2020, 1, 1, tzinfo=certs.datetime.timezone.utc), days=60)
    server2 = make_server(tls_section=tls_section(old))
    server2.wait_log("event=cert_expired")
    assert "not_after=2020-03-01" in server2.log()


def test_sni_picks_matching_certificate(make_server, ca):
    mx = ca.issue("mx.example.test", kind="ec")
    other = ca.issue("mail.other.test", kind="rsa", dns=["smtp.other.test"])
    server = make_server(tls_section=tls_section(mx, other))
    for port, mode in ((server.ports["submissions"], "implicit"), (server.ports["mx"], "starttls")):
        for name, want, key in (("mx.example.test", mx, "EC P-256"),
                                ("mail.other.test", other, "RSA 2048"),
                                ("SMTP.other.test", other, "RSA 2048"),
                                ("unknown.test", mx, "EC P-256"),
                                (None, mx, "EC P-256")):
            info = peer_serial(port, mode, server_hostname=name)
            assert info["serial"] == want.serial, (mode, name, info["cn"])
            assert info["key"] == key, (mode, name, info["key"])
    # a session on the second certificate works end to end
    d = tls_session(server.ports["submissions"], server_hostname="mail.other.test")
    assert transaction(d)[0] == 250
    d.close()


def _handshake(port, ctx, server_hostname="mx.example.test"):
    """Implicit TLS handshake; returns the SSLSocket or raises ssl.SSLError/OSError."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        t = ctx.wrap_socket(s, server_hostname=server_hostname)
        t.settimeout(10)
        assert t.recv(512).startswith(b"220")
        return t
    except Exception:
        s.close()
        raise


def _ctx(version=None, ciphers=None):
    ctx = client_tls_context()
    if version:
        with warnings.catch_warnings():  # TLS 1.0/1.1 on purpose: they must be refused
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = version
            ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def test_tls_floor_and_cipher_policy(make_server, ca):
    ec = ca.issue("mx.example.test", kind="ec")
    rsa = ca.issue("rsa.example.test", kind="rsa")
    server = make_server(tls_section=tls_section(ec, rsa))
    port = server.ports["submissions"]
    refused = [
        ("TLS 1.1", _ctx(ssl.TLSVersion.TLSv1_1, "ALL:@SECLEVEL=0"), "mx.example.test"),
        ("TLS 1.0", _ctx(ssl.TLSVersion.TLSv1, "ALL:@SECLEVEL=0"), "mx.example.test"),
        ("CBC (not AEAD)", _ctx(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA256:@SECLEVEL=0"),
         "mx.example.test"),
        ("RSA key exchange", _ctx(ssl.TLSVersion.TLSv1_2, "AES128-GCM-SHA256:AES256-GCM-SHA384:@SECLEVEL=0"),
         "rsa.example.test"),
        ("DHE (not ECDHE)", _ctx(ssl.TLSVersion.TLSv1_2, "DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0"),
         "rsa.example.test"),
        ("CBC with RSA", _ctx(ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-SHA:@SECLEVEL=0"),
         "rsa.example.test"),
    ]
    for what, ctx, name in refused:
        with pytest.raises((ssl.SSLError, ConnectionResetError, EOFError)):
            t = _handshake(port, ctx, name)
            t.close()
            pytest.fail("%s was accepted (%s)" % (what, t.version()))
    accepted = [
        (_ctx(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256"), "mx.example.test",
         "ECDHE-ECDSA-AES128-GCM-SHA256"),
        (_ctx(ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-GCM-SHA256"), "rsa.example.test",
         "ECDHE-RSA-AES128-GCM-SHA256"),
        (_ctx(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-CHACHA20-POLY1305"), "mx.example.test",
         "ECDHE-ECDSA-CHACHA20-POLY1305"),
    ]
    for ctx, name, cipher in accepted:
        t = _handshake(port, ctx, name)
        assert t.version() == "TLSv1.2" and t.cipher()[0] == cipher, t.cipher()
        t.close()
    t = _handshake(port, client_tls_context())
    assert t.version() == "TLSv1.3"
    t.close()
    # the same floor on STARTTLS
    d = Dialog(server.ports["mx"])
    d.reply()
    d.cmd("EHLO client.test")
    assert d.cmd("STARTTLS")[0] == 220
    with pytest.raises((ssl.SSLError, ConnectionResetError, EOFError)):
        _ctx(ssl.TLSVersion.TLSv1_1, "ALL:@SECLEVEL=0").wrap_socket(d.sock, server_hostname="mx.example.test")
    d.close()
    d = Dialog(server.ports["mx"])
    d.reply()
    d.cmd("EHLO client.test")
    assert d.cmd("STARTTLS")[0] == 220
    d.sock = _ctx(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256").wrap_socket(
        d.sock, server_hostname="mx.example.test")
    assert d.cmd("EHLO client.test")[0] == 250
    assert transaction(d)[0] == 250
    d.close()


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
def test_session_resumption_across_workers(make_server, ca, version):
    leaf = ca.issue("mx.example.test")
    server = make_server(tls_section=tls_section(leaf))
    ctx = _ctx(getattr(ssl.TLSVersion, version))
    first = tls_session(server.ports["submissions"], ctx=ctx, src="127.0.0.1")
    assert not first.sock.session_reused
    sess = first.sock.session
    assert sess is not None and (sess.has_ticket or version == "TLSv1_2")
    first.cmd("QUIT")
    first.close()
    reused = {}
    # the kernel steers each client address to one worker: two addresses reach both
    for i in range(6):
        src = ("127.0.0.2", "127.0.0.1")[i % 2]
        mode = ("implicit", "starttls")[(i // 2) % 2]
        port = server.ports["submissions" if mode == "implicit" else "submission"]
        d = tls_session(port, mode, ctx=ctx, session=sess, src=src)
        assert d.sock.session_reused, (i, src, mode, d.sock.version())
        reused[src] = True
        if d.sock.session is not None:
            sess = d.sock.session
        d.cmd("QUIT")
        d.close()
    server.wait_log("resumed=yes", count=6)
    workers = set(re.findall(r"\] (smtp\d+): level=info event=tls session=\S+ ip=\S+ "
                             r"listener=\S+ tls_version=\S+ tls_cipher=\S+ resumed=yes",
                             server.log()))
    assert workers == {"smtp0", "smtp1"}, workers


# ---- privileges ----

def _ps_user(pid):
    return subprocess.run(["ps", "-o", "user=", "-p", str(pid)], capture_output=True,
                          text=True, timeout=10).stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root")
def test_privilege_drop_to_nobody(make_server):
    import pwd
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    server = make_server(start=False)
    with open(server.conf) as f:
        text = f.read()
    assert 'user = ""' in text
    with open(server.conf, "w") as f:
        f.write(text.replace('user = ""', "user = nobody", 1))
    os.chmod(server.dir, 0o755)  # nobody must reach data_dir inside the test's temp dir
    server.start()
    pids = server.pids()
    assert len(pids) == 5, pids   # master, lookup, queue, 2 workers
    users = {p: _ps_user(p) for p in pids}
    assert users[server.proc.pid] == "root", users
    children = [p for p in pids if p != server.proc.pid]
    assert all(users[p] == "nobody" for p in children), users
    roles = set(re.findall(r"sealmail\[(\d+)\] (smtp\d|lookup|queue):", server.log()))
    assert {r for p, r in roles if int(p) in children} == {"smtp0", "smtp1", "lookup", "queue"}
    # and the unprivileged children still do their jobs
    code, text = send_one(server.ports["mx"])
    assert code == 250, text
    server.wait_messages("alice@example.test", 1)
    assert os.stat(server.maildir("alice@example.test")).st_uid == pwd.getpwnam("nobody").pw_uid
    assert server.stop() == 0


# ---- embedded defaults ----

def _port_busy(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return False
        except OSError:
            return True


def test_embedded_defaults(tmp_path):
    if os.path.exists("/etc/sealmail/sealmail.conf"):
        pytest.skip("/etc/sealmail/sealmail.conf exists")
    if any(_port_busy(p) for p in (2525, 2587, 2465)):
        pytest.skip("ports 2525/2587/2465 busy")
    home = str(tmp_path / "home")
    env = dict(os.environ, **ENV_SAN)
    env.pop("SEALMAIL_CONF", None)
    env["SEALMAIL_HOME"] = home
    logp = str(tmp_path / "log")
    with open(logp, "wb") as logf:
        proc = subprocess.Popen([BIN, "serve"], stdout=logf, stderr=logf, env=env,
                                cwd=str(tmp_path), start_new_session=True)

    def log():
        with open(logp, "rb") as f:
            return f.read().decode("utf-8", "replace")
    try:
        deadline = time.time() + 20
        while True:
            if proc.poll() == 71 and "cannot listen" in log():
                pytest.skip("ports 2525/2587/2465 taken meanwhile")
            assert proc.poll() is None, log()
            text = log()
            if "event=queue_ready" in text and "event=lookup_ready" in text and \
                    text.count("event=worker_ready") >= 1:
                try:
                    with socket.create_connection(("127.0.0.1", 2525), timeout=2) as s:
                        s.settimeout(5)
                        if s.recv(512).startswith(b"220"):
                            break
                except OSError:
                    pass
            assert time.time() < deadline, "embedded defaults never became ready:\n" + log()
            time.sleep(0.1)
        text = log()
        assert "config=(embedded defaults)" in text, text
        assert "data_dir=%s" % home in text
        for port in (2525, 2587, 2465):
            assert "port=%d" % port in text
        # self-signed ECDSA P-256, made in $SEALMAIL_HOME/tls
        assert os.path.exists(os.path.join(home, "tls", "selfsigned.pem"))
        assert oct(os.stat(os.path.join(home, "tls", "selfsigned.key")).st_mode & 0o777) == "0o600"
        for port, mode in ((2465, "implicit"), (2587, "starttls"), (2525, "starttls")):
            info = peer_serial(port, mode, server_hostname="localhost")
            assert info["key"] == "EC P-256", info["text"]
        # the seeded local domain takes mail for postmaster
        code, text = send_one(2525, rcpt="postmaster@localhost")
        assert code == 250, text
        mdir = os.path.join(home, "mail", "localhost", "postmaster", "new")
        deadline = time.time() + 15
        while not (os.path.isdir(mdir) and os.listdir(mdir)):
            assert time.time() < deadline, log()[-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        text = log()
        assert "AddressSanitizer" not in text and "runtime error:" not in text, text[-5000:]
