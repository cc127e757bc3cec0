"""AUTH on the submission listeners (RFC 4954, issue 3) with real clients over real TLS:
Python's smtplib (PLAIN and LOGIN, STARTTLS on 587 and implicit TLS on 465), and
SCRAM-SHA-256 / SCRAM-SHA-256-PLUS with tls-exporter channel binding (RFC 5802, 7677, 9266)
through tests/tools/scram_client (C: Python's ssl module cannot export keying material).
Also: AUTH only after TLS and never on the MX port, the failure answers and their pause,
disabled accounts, the per-session attempt bound and the brute-force block.

Most tests share one server (workers = 1, so that a session paused for a 535 and the session
measuring NOOPs are on the same event loop). Brute-force counters are per client address:
each test that fails a login uses its own 127.0.0.x source address, so tests do not add up
towards a block; the brute-force test has its own server."""
import base64
import datetime
import itertools
import os
import select
import smtplib
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import (ENV_SAN, TEST_LOGIN, TEST_PASSWORD, Dialog, Server, client_tls_context,
                      ready, run_cli, simple_message)

HERE = os.path.dirname(os.path.abspath(__file__))
SCRAM_CLIENT = os.environ.get("SCRAM_CLIENT") or os.path.join(
    HERE, "..", "..", "build", "san", "tools", "scram_client")

FAIL_535 = "535 5.7.8 Error: authentication failed"
OFF_LOGIN, OFF_PASSWORD = "off@off.test", "off-password-2"
BOXES = ["box%d@example.test" % i for i in range(1, 13)]


# ---- helpers ----

_ips = itertools.count(10)


def fresh_ip():
    """A loopback source address no other test of this module used: its own brute-force
    counters."""
    n = next(_ips)
    return "127.0.%d.%d" % (n // 250, n % 250 + 2)


_open = []


@pytest.fixture(autouse=True)
def _close_clients():
    # an open session would hold the server's SIGTERM for the whole shutdown grace
    yield
    while _open:
        c = _open.pop()
        try:
            c.close()
        except Exception:
            pass


def session(server, kind="submissions", src=None, ehlo=True):
    """A Dialog past the greeting and EHLO: implicit TLS on 465, STARTTLS on 587, plain on
    the MX port (kind "mx"; "mx-tls" adds STARTTLS)."""
    port = server.ports["mx" if kind.startswith("mx") else kind]
    d = Dialog(port, tls=kind == "submissions", src=src)
    _open.append(d)
    code, text = d.reply()
    assert code == 220, text
    if ehlo:
        code, text = d.cmd("EHLO client.test")
        assert code == 250, text
        if kind in ("submission", "mx-tls"):
            d.starttls()
            code, text = d.cmd("EHLO client.test")
            assert code == 250, text
    return d


def expect(d, line, code, enh=None):
    c, t = d.cmd(line)
    assert c == code, "%r -> %s" % (line, t)
    if enh is not None:
        assert t.split("\n")[-1][4:].startswith(enh + " "), "%r -> %s (wanted %s)" % (line, t, enh)
    return t


def plain_token(login, password):
    return base64.b64encode(b"\0" + login.encode() + b"\0" + password.encode()).decode()


def b64(s):
    return base64.b64encode(s.encode()).decode()


def smtp_587(server, src):
    s = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10, source_address=(src, 0))
    _open.append(s)
    s.ehlo("client.test")
    assert not s.has_extn("auth"), s.esmtp_features
    s.starttls(context=client_tls_context())
    s.ehlo("client.test")
    return s


def smtp_465(server, src):
    s = smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], timeout=10,
                         context=client_tls_context(), source_address=(src, 0))
    _open.append(s)
    s.ehlo("client.test")
    return s


def scram(server, *flags, kind="submissions", login=TEST_LOGIN, password=TEST_PASSWORD,
          src=None, timeout=30):
    """Runs the C client; returns (exit code, its transcript)."""
    if not os.path.exists(SCRAM_CLIENT):
        pytest.fail("%s is missing: make build/san/tools/scram_client" % SCRAM_CLIENT)
    cmd = [SCRAM_CLIENT, "--port", str(server.ports[kind]), "--login", login,
           "--password", password] + list(flags)
    if kind == "submission":
        cmd.append("--starttls")
    if src:
        cmd += ["--src", src]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, **ENV_SAN))
    out = p.stdout + p.stderr
    assert "AddressSanitizer" not in out and "runtime error" not in out, out
    return p.returncode, out


def server_lines(out):
    return [l[3:] for l in out.splitlines() if l.startswith("S: ")]


def scram_salt(out):
    first = [l for l in out.splitlines() if l.startswith("I: server-first ")][0]
    attrs = dict(kv.split("=", 1) for kv in first[len("I: server-first "):].split(","))
    return attrs["s"], attrs["i"]


def parallel(*fns, timeout=30):
    """Runs the callables in threads (failures pause 0.5-1.5 s each: in parallel a test
    needs one pause, not one per failure); returns their results in order and re-raises
    the first exception."""
    results = [None] * len(fns)
    errors = []

    def run(i, f):
        try:
            results[i] = f()
        except BaseException as e:  # noqa: B036 - re-raised below
            errors.append(e)

    ts = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate(fns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
    assert not any(t.is_alive() for t in ts), "threads still running after %ss" % timeout
    if errors:
        raise errors[0]
    return results


def wait_box(server, addr, n=1, timeout=20):
    return [m.decode() for m in server.wait_messages(addr, n, timeout=timeout)]


@pytest.fixture(scope="module")
def srv():
    tmp = tempfile.mkdtemp(prefix="sealmail-e2e-")
    s = Server(tmp, workers=1, mailboxes=["alice@example.test"] + BOXES)
    # a second account, for the disabled-account test
    run_cli(["account", "add", "offacct"], conf=s.conf)
    run_cli(["account", "domain", "add", "offacct", "off.test"], conf=s.conf)
    run_cli(["login", "add", OFF_LOGIN, "offacct"], conf=s.conf, input=OFF_PASSWORD + "\n")
    s.start()
    ready(s, 1)
    yield s
    try:
        s.stop()
    finally:
        s.check_sanitizers()
        subprocess.run(["rm", "-rf", tmp])


# ---- smtplib: PLAIN and LOGIN on 587 (STARTTLS) and 465 (implicit TLS) ----

@pytest.mark.parametrize("kind", ["submission", "submissions"])
@pytest.mark.parametrize("how", ["login", "PLAIN", "LOGIN", "LOGIN-no-ir", "PLAIN-no-ir"])
def test_smtplib_login_and_send(srv, kind, how):
    src = fresh_ip()
    s = smtp_587(srv, src) if kind == "submission" else smtp_465(srv, src)
    assert s.has_extn("auth"), s.esmtp_features
    mechs = s.esmtp_features["auth"].split()
    assert mechs[:3] == ["PLAIN", "LOGIN", "SCRAM-SHA-256"], mechs
    s.user, s.password = TEST_LOGIN, TEST_PASSWORD
    if how == "login":
        code, text = s.login(TEST_LOGIN, TEST_PASSWORD)  # smtplib picks PLAIN
    else:
        mech, _, noir = how.partition("-")
        obj = s.auth_plain if mech == "PLAIN" else s.auth_login
        code, text = s.auth(mech, obj, initial_response_ok=not noir)
    assert code == 235 and text == b"2.7.0 Authentication successful", (code, text)
    box = BOXES[["login", "PLAIN", "LOGIN", "LOGIN-no-ir", "PLAIN-no-ir"].index(how) +
                (0 if kind == "submission" else 5)]
    refused = s.sendmail("a@sender.test", [box], simple_message(subject=how))
    assert refused == {}
    s.quit()
    m = wait_box(srv, box)[0]
    assert "with ESMTPSA id" in m, m
    mech_logged = {"login": "PLAIN", "PLAIN": "PLAIN", "PLAIN-no-ir": "PLAIN"}.get(how, "LOGIN")
    srv.wait_log("event=auth_ok")
    assert ("ip=%s listener=%s mech=%s login=%s account=testacct plan=professional" % (
        src, kind, mech_logged, TEST_LOGIN)) in srv.log()


def test_smtplib_wrong_password(srv):
    def try_587():
        s = smtp_587(srv, fresh_ip())
        s.user, s.password = TEST_LOGIN, "not-the-password"
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth("PLAIN", s.auth_plain)
        return s, e.value

    def try_465():
        s = smtp_465(srv, fresh_ip())
        s.user, s.password = TEST_LOGIN, "not-the-password"
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth("LOGIN", s.auth_login)
        return s, e.value

    for s, e in parallel(try_587, try_465):
        assert e.smtp_code == 535 and e.smtp_error == b"5.7.8 Error: authentication failed"
        # the session goes on: another try with the right password works
        assert s.login(TEST_LOGIN, TEST_PASSWORD)[0] == 235
        s.quit()


# ---- SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (C client) ----

@pytest.mark.parametrize("kind", ["submission", "submissions"])
@pytest.mark.parametrize("plus", [False, True])
def test_scram(srv, kind, plus):
    box = "alice@example.test"
    before = len(srv.messages(box))
    flags = (["--plus"] if plus else []) + ["--mail", "scram@sender.test", "--rcpt", box]
    rc, out = scram(srv, *flags, kind=kind, src=fresh_ip())
    assert rc == 0, out
    assert "T: TLSv1.3" in out, out
    assert "250-AUTH PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS" in out, out
    # the client checked the server's signature (exit 4 otherwise)
    assert "I: server-final v=" in out and "235 2.7.0 Authentication successful" in out, out
    mech = "SCRAM-SHA-256-PLUS" if plus else "SCRAM-SHA-256"
    srv.wait_log("listener=%s mech=%s login=%s account=testacct" % (kind, mech, TEST_LOGIN))
    msgs = wait_box(srv, box, before + 1)
    assert any("Return-Path: <scram@sender.test>" in m and "with ESMTPSA id" in m for m in msgs)


def test_scram_without_initial_response(srv):
    rc, out = scram(srv, "--plus", "--no-ir", src=fresh_ip())
    assert rc == 0, out
    assert "S: 334 \n" in out, out


def test_scram_wrong_password(srv):
    runs = parallel(lambda: scram(srv, "--wrong-password", src=fresh_ip()),
                    lambda: scram(srv, "--wrong-password", "--plus", kind="submission",
                                  src=fresh_ip()))
    for rc, out in runs:
        assert rc == 1, out
        assert server_lines(out)[-1] == FAIL_535, out


def test_scram_plus_tampering_refused(srv):
    """-PLUS with the right proof but tls-exporter bytes that are not this connection's (a
    man in the middle terminating TLS would see different ones); and gs2 flag "y" (the
    client could bind but thinks we cannot) on a connection where we advertised -PLUS:
    someone stripped -PLUS on the way (RFC 5802 6). Both refused with the same 535."""
    (rc1, wrong_cb), (rc2, downgrade) = parallel(
        lambda: scram(srv, "--wrong-cb", src=fresh_ip()),
        lambda: scram(srv, "--downgrade", src=fresh_ip(), kind="submission"))
    assert rc1 == 1 and server_lines(wrong_cb)[-1] == FAIL_535, wrong_cb
    # the exchange got as far as the client-final message
    assert "I: client-final c=" in wrong_cb, wrong_cb
    assert rc2 == 1 and server_lines(downgrade)[-1] == FAIL_535, downgrade
    assert "SCRAM-SHA-256-PLUS" in downgrade  # it was offered
    assert "I: server-first" not in downgrade  # refused at the client-first message


def test_scram_tls12_no_plus(srv):
    """On TLS 1.2 -PLUS is not offered (tls-exporter is TLS 1.3 here), AUTH with it is 504,
    and "y" is then the honest answer: accepted."""
    rc, out = scram(srv, "--tls12", "--plus", src=fresh_ip())
    assert rc == 1, out
    assert "T: TLSv1.2" in out and "250-AUTH PLAIN LOGIN SCRAM-SHA-256\n" in out, out
    assert server_lines(out)[-1].startswith("504 5.5.4 "), out
    rc, out = scram(srv, "--tls12", "--downgrade", src=fresh_ip())
    assert rc == 0, out


def test_scram_unknown_login_looks_like_a_wrong_password(srv):
    """An unknown login gets a server-first message like a known one (a salt that stays the
    same for that name, the same iteration count) and the same 535 at the end."""
    ip = fresh_ip()
    (rc1, out1), (rc2, out2), (rc3, out3), (rc4, out4) = parallel(
        lambda: scram(srv, login="nobody@sender.test", password="x", src=ip),
        lambda: scram(srv, login="nobody@sender.test", password="y", src=ip),
        lambda: scram(srv, "--wrong-password", src=ip),
        lambda: scram(srv, "--wrong-password", src=ip))
    assert rc1 == rc2 == rc3 == rc4 == 1
    assert server_lines(out1)[-1] == server_lines(out3)[-1] == FAIL_535, (out1, out3)
    fake, real = scram_salt(out1), scram_salt(out3)
    assert fake == scram_salt(out2) and real == scram_salt(out4)
    assert fake[1] == real[1] and len(base64.b64decode(fake[0])) == len(base64.b64decode(real[0]))
    assert fake[0] != real[0]


# ---- where AUTH is offered ----

def test_auth_advertised_only_after_tls_on_submission(srv):
    d = session(srv, "submission", ehlo=False)
    t = expect(d, "EHLO client.test", 250)
    assert "STARTTLS" in t and "AUTH" not in t, t
    d.starttls()
    t = expect(d, "EHLO client.test", 250)
    assert "250-AUTH PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS" in t, t
    d = session(srv, "submissions", ehlo=False)
    t = expect(d, "EHLO client.test", 250)
    assert "250-AUTH PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS" in t, t
    assert "STARTTLS" not in t


def test_no_auth_on_mx_port(srv):
    d = session(srv, "mx", ehlo=False)
    t = expect(d, "EHLO client.test", 250)
    assert "AUTH" not in t, t
    d.starttls()
    t = expect(d, "EHLO client.test", 250)
    assert "AUTH" not in t, t
    for line in ("AUTH PLAIN " + plain_token(TEST_LOGIN, TEST_PASSWORD), "AUTH PLAIN",
                 "AUTH LOGIN", "AUTH SCRAM-SHA-256"):
        expect(d, line, 502, "5.5.1")
    # no SASL exchange was entered: the next line is a command
    expect(d, "NOOP", 250)
    expect(d, "MAIL FROM:<a@sender.test>", 250)
    # and nothing was relayed for us
    expect(d, "RCPT TO:<someone@remote.test>", 554, "5.7.1")


def test_auth_before_tls_refused_and_secret_not_read(srv):
    ip = fresh_ip()
    d = Dialog(srv.ports["submission"], src=ip)
    _open.append(d)
    assert d.reply()[0] == 220
    expect(d, "EHLO client.test", 250)
    # without an initial response: 530, and no 334; the secret the client sends next is
    # read as a command (500), not as a SASL response
    expect(d, "AUTH PLAIN", 530, "5.7.0")
    secret = plain_token(TEST_LOGIN, TEST_PASSWORD)
    expect(d, secret, 500, "5.5.2")
    expect(d, "AUTH LOGIN", 530, "5.7.0")
    expect(d, b64(TEST_LOGIN), 500, "5.5.2")
    expect(d, "AUTH SCRAM-SHA-256", 530, "5.7.0")
    # with an initial response: 530 as well, and the password never reaches a check
    expect(d, "AUTH PLAIN " + secret, 530, "5.7.0")
    expect(d, "NOOP", 250)
    expect(d, "MAIL FROM:<a@sender.test>", 530, "5.7.0")
    expect(d, "QUIT", 221)
    time.sleep(0.2)
    log = srv.log()
    assert "ip=%s listener=submission mech" not in log
    assert ("event=auth ip=%s " % ip) not in log
    assert TEST_PASSWORD not in log and secret not in log


# ---- failures ----

def log_time(line):
    """The wall-clock time of a log line ("2026-11-29T21:09:04.825Z ...")."""
    stamp = line.split()[0]
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def test_wrong_password_pause_does_not_block_the_loop(srv):
    """535 5.7.8 comes after a pause of at least 0.5 s; during the pause (from the end of
    the password check, as the lookup process logs it, to the 535) the worker, the only
    one, answers another session's NOOPs at once."""
    ip = fresh_ip()
    a = session(srv, "submissions", src=ip)
    b = session(srv, "submission", src=fresh_ip())
    noops = []  # (sent, answered), wall clock
    t0 = time.monotonic()
    a.send("AUTH PLAIN %s\r\n" % plain_token(TEST_LOGIN, "wrong-password"))
    while time.monotonic() - t0 < 8:
        if a.sock.pending() or select.select([a.sock], [], [], 0)[0]:
            break
        t = time.time()
        assert b.cmd("NOOP")[0] == 250
        noops.append((t, time.time()))
        time.sleep(0.02)
    code, text = a.reply()
    elapsed = time.monotonic() - t0
    answered = time.time()
    assert code == 535 and text == FAIL_535, text
    assert elapsed >= 0.5, elapsed
    assert elapsed < 8, elapsed  # 0.5..1.5 s pause plus one argon2id check
    line = srv.wait_log("event=auth ip=%s " % ip) and [
        l for l in srv.log().splitlines() if "event=auth ip=%s " % ip in l][0]
    assert "result=failed" in line, line
    checked = log_time(line)
    assert answered - checked >= 0.45, (answered, checked)
    in_pause = [(s, r) for s, r in noops if s >= checked]
    assert len(in_pause) >= 3, (checked, noops)
    assert max(r - s for s, r in in_pause) < 0.5, in_pause
    # the session goes on
    expect(a, "NOOP", 250)


def test_unknown_login_same_answer_as_wrong_password(srv):
    def attempt(login, password, mech):
        d = session(srv, "submission", src=fresh_ip())
        t0 = time.monotonic()
        if mech == "PLAIN":
            code, text = d.cmd("AUTH PLAIN " + plain_token(login, password))
        else:
            expect(d, "AUTH LOGIN", 334)
            expect(d, b64(login), 334)
            code, text = d.cmd(b64(password))
        return code, text, time.monotonic() - t0

    replies = parallel(*[(lambda a=a: attempt(*a)) for a in (
        (TEST_LOGIN, "wrong", "PLAIN"), ("nobody@sender.test", "wrong", "PLAIN"),
        ("nobody", TEST_PASSWORD, "PLAIN"), (TEST_LOGIN, "wrong", "LOGIN"),
        ("nobody@sender.test", "wrong", "LOGIN"))])
    assert all(r[:2] == (535, FAIL_535) for r in replies), replies
    assert all(r[2] >= 0.5 for r in replies), replies


def test_cancel_and_bad_base64(srv):
    ip = fresh_ip()
    for mech, first in (("PLAIN", "334 "), ("LOGIN", "334 VXNlcm5hbWU6"), ("SCRAM-SHA-256", "334 ")):
        d = session(srv, "submissions", src=ip)
        t = expect(d, "AUTH " + mech, 334)
        assert t == first, t
        expect(d, "*", 501)
        # back to commands
        expect(d, "NOOP", 250)
        t = expect(d, "AUTH " + mech, 334)
        expect(d, "!!not*base64", 501, "5.5.2")
        expect(d, "NOOP", 250)
        d.cmd("QUIT")
    # LOGIN cancelled at the password prompt
    d = session(srv, "submission", src=ip)
    expect(d, "AUTH LOGIN", 334)
    t = expect(d, b64(TEST_LOGIN), 334)
    assert t == "334 UGFzc3dvcmQ6", t
    expect(d, "*", 501)
    expect(d, "NOOP", 250)
    # a bad initial response
    expect(d, "AUTH PLAIN A===", 501, "5.5.2")
    expect(d, "NOOP", 250)
    # PLAIN with no NUL separators
    d = session(srv, "submission", src=ip)
    expect(d, "AUTH PLAIN " + b64("just-a-string"), 501, "5.5.2")
    # nothing of this was a failed login: the right password works at once
    assert "event=auth ip=%s " % ip not in srv.log()
    d = session(srv, "submission", src=ip)
    t0 = time.monotonic()
    d.auth()
    assert time.monotonic() - t0 < 3


def test_unknown_mechanism_and_auth_twice(srv):
    d = session(srv, "submission", src=fresh_ip())
    for m in ("CRAM-MD5", "XOAUTH2", "GSSAPI", "SCRAM-SHA-1", "PLAINX"):
        expect(d, "AUTH " + m, 504, "5.5.4")
    # unknown mechanisms do not use up the three attempts
    d.auth()
    expect(d, "AUTH PLAIN " + plain_token(TEST_LOGIN, TEST_PASSWORD), 503, "5.5.1")
    expect(d, "AUTH LOGIN", 503, "5.5.1")
    expect(d, "MAIL FROM:<a@sender.test>", 250)
    # mechanism names are case-insensitive
    d2 = session(srv, "submissions", src=fresh_ip())
    expect(d2, "auth plain " + plain_token(TEST_LOGIN, TEST_PASSWORD), 235, "2.7.0")


def test_more_than_three_attempts_421(srv):
    d = session(srv, "submissions", src=fresh_ip())
    expect(d, "AUTH PLAIN", 334)
    expect(d, "*", 501)
    expect(d, "AUTH LOGIN", 334)
    expect(d, "*", 501)
    expect(d, "AUTH PLAIN " + plain_token(TEST_LOGIN, "wrong"), 535, "5.7.8")
    # the fourth, even with the right password
    t = expect(d, "AUTH PLAIN " + plain_token(TEST_LOGIN, TEST_PASSWORD), 421, "4.7.0")
    assert d.closed(), t


def test_disabled_account(srv):
    ip = fresh_ip()
    d = session(srv, "submission", src=ip)
    d.auth(OFF_LOGIN, OFF_PASSWORD)
    d.cmd("QUIT")
    run_cli(["account", "disable", "offacct"], conf=srv.conf)
    try:
        def plain(password):
            d = session(srv, "submission", src=ip)
            return d.cmd("AUTH PLAIN " + plain_token(OFF_LOGIN, password))

        right, wrong, (rc, out) = parallel(
            lambda: plain(OFF_PASSWORD), lambda: plain("wrong"),
            lambda: scram(srv, "--plus", login=OFF_LOGIN, password=OFF_PASSWORD, src=ip))
        assert right == wrong == (535, FAIL_535), (right, wrong)
        assert rc == 1 and server_lines(out)[-1] == FAIL_535, out
        srv.wait_log("login=%s mech=password result=disabled" % OFF_LOGIN)
    finally:
        run_cli(["account", "enable", "offacct"], conf=srv.conf)
    d = session(srv, "submissions", src=fresh_ip())
    d.auth(OFF_LOGIN, OFF_PASSWORD)


def test_removed_login_and_changed_password(srv):
    """Login changes take effect for the next AUTH, without a reload."""
    run_cli(["login", "add", "tmp@off.test", "offacct"], conf=srv.conf, input="first-pass\n")
    d = session(srv, "submissions", src=fresh_ip())
    d.auth("tmp@off.test", "first-pass")
    run_cli(["login", "passwd", "tmp@off.test"], conf=srv.conf, input="second-pass\n")
    ip = fresh_ip()

    def old_password():
        session(srv, "submissions", src=ip).auth("tmp@off.test", "first-pass", expect=535)

    def new_password():
        session(srv, "submissions", src=ip).auth("tmp@off.test", "second-pass")
        return scram(srv, "--plus", login="tmp@off.test", password="second-pass", src=ip)

    rc, out = parallel(old_password, new_password)[1]
    assert rc == 0, out
    run_cli(["login", "remove", "tmp@off.test"], conf=srv.conf)
    session(srv, "submissions", src=ip).auth("tmp@off.test", "second-pass", expect=535)


# ---- what the message and the log show ----

def test_received_says_esmtpsa_and_hides_credentials(srv):
    box = BOXES[-1]
    ip = fresh_ip()
    d = session(srv, "submission", src=ip)
    d.auth()
    expect(d, "MAIL FROM:<news@sender.test>", 250)
    expect(d, "RCPT TO:<%s>" % box, 250)
    expect(d, "DATA", 354)
    d.send(simple_message(subject="received") + "\r\n.\r\n")
    code, text = d.reply()
    assert code == 250, text
    qid = text.split()[-1]
    d.cmd("QUIT")
    m = wait_box(srv, box)[-1]
    received = m.split("\r\n\r\n")[0].split("Received:")[1]
    assert "with ESMTPSA id %s" % qid in received, received
    assert "(using TLSv1.3 with cipher" in received, received
    secrets = (TEST_LOGIN, TEST_PASSWORD, "user@", plain_token(TEST_LOGIN, TEST_PASSWORD),
               b64(TEST_PASSWORD), "testacct")
    for sec in secrets:
        assert sec not in m, (sec, m)
    # the log names the login and the account but never the password
    log = srv.log()
    assert "login=%s account=testacct" % TEST_LOGIN in log
    for sec in secrets[1:2] + secrets[3:5]:
        assert sec not in log, sec


# ---- brute force ----

def test_brute_force_block_per_ip():
    """10 failures from one address within the window block it (421 4.7.0, even with the
    right password, every mechanism) for a while; other addresses are not affected; the log
    says event=auth_blocked. The failures run in parallel sessions and mechanisms."""
    tmp = tempfile.mkdtemp(prefix="sealmail-e2e-")
    server = Server(tmp)
    try:
        server.start()
        ready(server, 2)
        _brute_force(server)
    finally:
        while _open:
            _open.pop().close()
        try:
            server.stop()
        finally:
            server.check_sanitizers()
            subprocess.run(["rm", "-rf", tmp])


def _brute_force(server):
    results = []
    lock = threading.Lock()

    def fail_plain():
        d = session(server, "submissions", src="127.0.0.1")
        r = d.cmd("AUTH PLAIN " + plain_token(TEST_LOGIN, "guess-%d" % threading.get_ident()))
        d.close()
        with lock:
            results.append(r)

    def fail_login():
        d = session(server, "submission", src="127.0.0.1")
        expect(d, "AUTH LOGIN", 334)
        expect(d, b64("nobody@sender.test"), 334)
        r = d.cmd(b64("guess"))
        d.close()
        with lock:
            results.append(r)

    def fail_scram():
        rc, out = scram(server, "--plus", "--wrong-password", src="127.0.0.1")
        with lock:
            results.append((int(server_lines(out)[-1][:3]), server_lines(out)[-1]))

    def run(fns):
        ts = [threading.Thread(target=f) for f in fns]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        assert not any(t.is_alive() for t in ts)

    # 9 failures: not blocked yet
    run([fail_plain] * 6 + [fail_login] * 2 + [fail_scram])
    assert len(results) == 9 and all(r == (535, FAIL_535) for r in results), results
    assert "event=auth_blocked" not in server.log()
    d = session(server, "submissions", src="127.0.0.1")
    d.auth()
    # a success does not clear the address's failures: the 10th blocks
    results.clear()
    run([fail_plain])
    assert results == [(535, FAIL_535)], results
    server.wait_log("event=auth_blocked ip=127.0.0.1 failures=10")
    for mech in ("PLAIN", "LOGIN"):
        d = session(server, "submission", src="127.0.0.1")
        if mech == "PLAIN":
            code, text = d.cmd("AUTH PLAIN " + plain_token(TEST_LOGIN, TEST_PASSWORD))
        else:
            expect(d, "AUTH LOGIN", 334)
            expect(d, b64(TEST_LOGIN), 334)
            code, text = d.cmd(b64(TEST_PASSWORD))
        assert code == 421 and text.startswith("421 4.7.0 "), text
        assert d.closed()
    rc, out = scram(server, "--plus", src="127.0.0.1")
    assert rc == 1 and server_lines(out)[-1].startswith("421 4.7.0 "), out
    # another address is not blocked, and the login itself is not blocked either
    d = session(server, "submissions", src="127.0.0.2")
    d.auth()
    expect(d, "MAIL FROM:<a@sender.test>", 250)
    rc, out = scram(server, "--plus", src="127.0.0.2", kind="submission")
    assert rc == 0, out
    assert "result=blocked" in server.log()


def test_verified_password_cache(make_server):
    """A login verified once is answered from the cache (no argon2id run) with the same
    password only: a wrong password still fails, and a changed password is checked anew."""
    import smtplib as _smtplib
    from conftest import TEST_LOGIN, TEST_PASSWORD, run_cli, client_tls_context

    server = make_server()

    def login(pw):
        s = _smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], timeout=10,
                              context=client_tls_context())
        try:
            s.ehlo("client.test")
            s.auth("PLAIN", lambda challenge=None: "\0%s\0%s" % (TEST_LOGIN, pw),
                   initial_response_ok=True)
            return True
        except _smtplib.SMTPAuthenticationError:
            return False
        finally:
            try:
                s.quit()
            except Exception:
                pass

    assert login(TEST_PASSWORD)
    assert login(TEST_PASSWORD)
    server.wait_log("result=ok cached=yes")
    assert not login("not-the-password")
    run_cli(["login", "passwd", TEST_LOGIN], conf=server.conf, input="a-new-password-2\n")
    assert not login(TEST_PASSWORD)
    assert login("a-new-password-2")
    assert server.log().count("cached=yes") == 1, server.log()[-3000:]


def test_auth_on_mx_when_configured(make_server):
    """listen.mx_auth = yes: AUTH on port 25 too, still only after STARTTLS; then relaying
    from there works like on 587."""
    from conftest import Dialog
    server = make_server(extra="listen.mx_auth = yes\n")
    d = Dialog(server.ports["mx"])
    assert d.reply()[0] == 220
    code, text = d.cmd("EHLO client.test")
    assert "AUTH" not in text, text
    assert d.cmd("AUTH PLAIN")[0] == 530
    d.starttls()
    code, text = d.cmd("EHLO client.test")
    assert "AUTH PLAIN LOGIN SCRAM-SHA-256" in text, text
    d.auth()
    assert d.cmd("MAIL FROM:<user@sender.test>")[0] == 250
    assert d.cmd("RCPT TO:<someone@remote.test>")[0] == 250
    d.cmd("QUIT")
    d.close()
