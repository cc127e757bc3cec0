"""The outbound SMTP client (src/queue/smtpc.c) through tests/tools/smtpc_probe against the
test sink (sinks.py) on 127.0.0.2: every TLS level against every kind of server certificate,
failures at each step, drops, pipelining, HELO fallback, SIZE/SMTPUTF8/BINARYMIME pre-checks,
DSN and BODY parameters, several transactions per connection, implicit TLS, AUTH, and the
STARTTLS response injection. The probe runs under ASan/UBSan: any report fails the test."""
import concurrent.futures
import json
import os
import random
import socket
import subprocess
import threading
import time

import pytest

import certs
from sinks import Sink, free_port

PROBE = os.environ.get("SMTPC_PROBE")
pytestmark = pytest.mark.skipif(not PROBE, reason="SMTPC_PROBE not set")

HOST = "mx1.example.test"
IP = "127.0.0.2"
ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=99",
           UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=98")
NO_STARTTLS_REASON = ("TLS required by policy for example.test but mx1.example.test did not "
                      "offer STARTTLS")


class PKI:
    pass


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("smtpc-pki"))
    ca = certs.TestCA(d)
    p = PKI()
    p.ca = ca.cert
    good = ca.issue(HOST, outdir=os.path.join(d, "good"))
    p.good = (good.fullchain, good.privkey)
    exp = certs.expired_leaf(ca, HOST, os.path.join(d, "expired"))
    p.expired = (exp.fullchain, exp.privkey)
    wrong = ca.issue("wrong.example.test", outdir=os.path.join(d, "wrong"))
    p.wrong = (wrong.fullchain, wrong.privkey)
    return p


@pytest.fixture
def sinks():
    started = []

    def make(cls=Sink, **kw):
        s = cls(**kw).start()
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()


def probe(port, *args, level="may", host=HOST, ip=IP, timeout=30):
    cmd = [PROBE, "--ip", ip, "--port", str(port), "--host", host, "--domain", "example.test",
           "--level", level] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    assert p.returncode == 0, "probe exit %d\n%s\n%s" % (p.returncode, p.stdout, p.stderr)
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    ev = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert ev and ev[0]["event"] == "open", p.stdout + p.stderr
    return ev[0], [e for e in ev if e["event"] == "tx"]


def msgfile(tmp_path, data, name="msg.eml"):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# ---- TLS levels x server kinds ----

# (level, kind) -> expected: ok, tls, cert verdict, cert_error/reason fragments
MATRIX = {
    ("none", "good"): (True, False, "none", None),
    ("none", "plain"): (True, False, "none", None),
    ("none", "expired"): (True, False, "none", None),
    ("none", "wrong"): (True, False, "none", None),
    ("may", "good"): (True, True, "verified", None),
    ("may", "plain"): (True, False, "none", None),
    ("may", "expired"): (True, True, "unverified", "certificate has expired"),
    ("may", "wrong"): (True, True, "unverified",
                       "hostname mismatch (certificate is for wrong.example.test)"),
    ("encrypt", "good"): (True, True, "verified", None),
    ("encrypt", "plain"): (False, False, "none", NO_STARTTLS_REASON),
    ("encrypt", "expired"): (True, True, "unverified", "certificate has expired"),
    ("encrypt", "wrong"): (True, True, "unverified", "hostname mismatch"),
    ("verify", "good"): (True, True, "verified", None),
    ("verify", "plain"): (False, False, "none", NO_STARTTLS_REASON),
    ("verify", "expired"): (False, True, "failed",
                            "certificate verification failed for mx1.example.test: "
                            "certificate has expired"),
    ("verify", "wrong"): (False, True, "failed",
                          "certificate verification failed for mx1.example.test: hostname "
                          "mismatch (certificate is for wrong.example.test)"),
}


class Case:
    pass


@pytest.fixture(scope="module")
def matrix(pki):
    """Every (level, kind) run at once (each against its own sink): the probe's start-up
    under ASan dominates, and the cases are independent."""
    cases = {}
    for level, kind in MATRIX:
        c = Case()
        c.sink = Sink(starttls=False) if kind == "plain" else Sink(cert=getattr(pki, kind))
        c.sink.start()
        cases[(level, kind)] = c
    try:
        def run(key):
            c = cases[key]
            c.open, c.txs = probe(c.sink.port, "--ca", pki.ca, level=key[0])
            if c.open["ok"]:
                c.sink.wait_messages(1)
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            futs = {key: ex.submit(run, key) for key in cases}
        for key, f in futs.items():
            cases[key].error = f.exception()
    finally:
        for c in cases.values():
            c.sink.stop()
    return cases


@pytest.mark.parametrize("level,kind", sorted(MATRIX))
def test_level_matrix(matrix, level, kind):
    ok, tls, cert, text = MATRIX[(level, kind)]
    case = matrix[(level, kind)]
    if case.error:
        raise case.error
    o, txs, sink = case.open, case.txs, case.sink
    assert o["ok"] is ok, o
    assert o["tls"] is tls, o
    assert o["cert"] == cert, o
    if ok:
        assert len(txs) == 1 and txs[0]["code"] == 250, txs
        m = sink.messages[0]
        assert (m["tls"] is not None) is tls
        if tls:
            assert m["sni"] == HOST
            assert m["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
            assert o["tls_version"] == m["tls"]["version"]
        if text:
            assert text in o["cert_error"], o
    else:
        assert txs == []
        assert sink.messages == []
        assert o["policy"] is True and o["code"] == 0, o
        assert o["reason"] == text, o
        if kind == "plain":
            assert o["enh"] == "4.7.4" and o["tls_failed"] is False
        else:
            assert o["enh"] == "4.7.5" and o["tls_failed"] is True and o["stage"] == "TLS handshake"
        assert o["permanent"] is False
        assert not any(c.startswith("MAIL") for _, c in sink.commands)


def test_may_without_ca_is_unverified(pki, sinks):
    sink = sinks(cert=pki.good)
    o, txs = probe(sink.port, level="may")
    assert o["ok"] and o["tls"] and o["cert"] == "unverified"
    # the sink sends its CA in the chain
    assert o["cert_error"] == "self-signed certificate in certificate chain", o
    assert txs[0]["code"] == 250


class BrokenTLSSink(Sink):
    _starttls_break = True


@pytest.mark.parametrize("level,policy", [("may", False), ("encrypt", True)])
def test_handshake_failure(pki, sinks, level, policy):
    sink = sinks(BrokenTLSSink, cert=pki.good)
    o, txs = probe(sink.port, "--ca", pki.ca, level=level)
    assert not o["ok"] and o["tls_failed"] is True and o["policy"] is policy, o
    assert o["stage"] == "TLS handshake" and o["enh"] == "4.7.5" and o["code"] == 0
    assert o["reason"].startswith("TLS handshake with mx1.example.test[127.0.0.2] failed: "), o
    assert txs == [] and sink.messages == []


class InjectingSink(Sink):
    # a man in the middle appends a reply to the "220" of STARTTLS
    _starttls_inject = b"250-injected\r\n250 PIPELINING\r\n"


def test_starttls_injection(pki, sinks):
    sink = sinks(InjectingSink, cert=pki.good)
    o, txs = probe(sink.port, "--ca", pki.ca, level="verify")
    assert o["ok"] and o["tls"], o
    assert txs[0]["code"] == 250, txs
    assert sink.wait_messages(1)[0]["tls"]


def test_implicit_tls(pki, sinks):
    sink = sinks(cert=pki.good, implicit_tls=True)
    o, txs = probe(sink.port, "--ca", pki.ca, "--implicit", level="verify")
    assert o["ok"] and o["tls"] and o["cert"] == "verified", o
    assert o["greeting"].startswith("220 mx.example.test")
    assert txs[0]["code"] == 250
    m = sink.wait_messages(1)[0]
    assert m["tls"] and m["sni"] == HOST


# ---- replies and failures ----

@pytest.mark.parametrize("code,perm", [(450, False), (550, True)])
def test_rcpt_refused(sinks, code, perm):
    sink = sinks(starttls=False, fail_at="rcpt", fail_code=code)
    o, txs = probe(sink.port, "--rcpt", "a@example.test", "--rcpt", "b@example.test", level="none")
    tx = txs[0]
    assert tx["code"] == code and tx["permanent"] is perm and tx["stage"] == "RCPT TO", tx
    for r in tx["rcpts"]:
        assert not r["ok"] and r["code"] == code and r["stage"] == "RCPT TO", r
        assert r["enh"] == "%d.0.0" % (code // 100)
    assert tx["usable"] is True
    assert sink.messages == []
    # pipelined DATA got 554 (no valid recipients): the transaction ends with RSET
    assert any(c == "RSET" for _, c in sink.commands), sink.commands


def test_some_rcpts_refused(sinks):
    sink = sinks(starttls=False, fail_rcpts={"bad@example.test": (550, "5.1.1 <bad@example.test> no such user")})
    o, txs = probe(sink.port, "--rcpt", "good@example.test", "--rcpt", "bad@example.test",
                   level="none")
    tx = txs[0]
    assert tx["code"] == 250 and tx["stage"] == "end of data", tx
    good, bad = tx["rcpts"]
    assert good["ok"] and good["code"] == 250 and good["stage"] == "RCPT TO"
    assert not bad["ok"] and bad["code"] == 550 and bad["enh"] == "5.1.1" and bad["permanent"]
    assert bad["reply"] == "550 5.1.1 <bad@example.test> no such user"
    assert sink.wait_messages(1)[0]["rcpts"] == ["good@example.test"]


def test_multiline_reply_joined(sinks):
    text = "5.1.1 first line\n5.1.1 second\tline \x01\n5.1.1 last line"
    sink = sinks(starttls=False, fail_rcpts={"bad@example.test": (550, text)})
    o, txs = probe(sink.port, "--rcpt", "bad@example.test", level="none")
    r = txs[0]["rcpts"][0]
    assert r["reply"] == "550 5.1.1 first line second line ? last line", r
    assert r["enh"] == "5.1.1"


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("code", [451, 550])
def test_mail_refused(sinks, code, pipelining):
    ext = ("PIPELINING", "8BITMIME") if pipelining else ("8BITMIME",)
    sink = sinks(starttls=False, fail_at="mail", fail_code=code, extensions=ext)
    o, txs = probe(sink.port, "--rcpt", "a@example.test", "--rcpt", "b@example.test", level="none")
    assert o["pipelining"] is pipelining
    tx = txs[0]
    assert tx["code"] == code and tx["stage"] == "MAIL FROM" and tx["permanent"] is (code >= 500)
    for r in tx["rcpts"]:
        assert r["code"] == code and r["stage"] == "MAIL FROM" and not r["ok"], r
    assert tx["usable"] is True
    cmds = [c for _, c in sink.commands]
    assert cmds[-2:] == ["RSET", "QUIT"], cmds
    if not pipelining:
        assert not any(c.startswith("RCPT") for c in cmds)


@pytest.mark.parametrize("stage,code", [("data", 554), ("dot", 451)])
def test_data_refused(sinks, stage, code):
    sink = sinks(starttls=False, fail_at=stage, fail_code=code)
    o, txs = probe(sink.port, level="none")
    tx = txs[0]
    want = "DATA" if stage == "data" else "end of data"
    assert tx["code"] == code and tx["stage"] == want, tx
    assert tx["rcpts"][0]["code"] == code and tx["rcpts"][0]["stage"] == want
    assert not tx["rcpts"][0]["ok"]
    assert sink.messages == []


def test_drop_mid_body(sinks, tmp_path):
    body = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * (20 * 1024 * 1024 // 80)
    sink = sinks(starttls=False, drop_at="data_body")
    o, txs = probe(sink.port, "--msgfile", msgfile(tmp_path, body), level="none")
    tx = txs[0]
    assert tx["code"] == 0 and tx["enh"] == "4.4.2" and not tx["permanent"], tx
    assert tx["reason"] == ("lost connection with mx1.example.test[127.0.0.2] while sending "
                            "message body"), tx
    assert tx["rcpts"][0]["reason"] == tx["reason"] and not tx["rcpts"][0]["ok"]
    assert tx["usable"] is False


def test_drop_at_dot(sinks):
    sink = sinks(starttls=False, drop_at="dot")
    o, txs = probe(sink.port, "--count", 2, level="none")
    assert len(txs) == 1, txs  # the connection is gone: no second transaction
    tx = txs[0]
    assert tx["code"] == 0 and tx["enh"] == "4.4.2" and tx["stage"] == "end of data"
    assert tx["reason"] == ("lost connection with mx1.example.test[127.0.0.2] in reply to "
                            "end of data"), tx
    assert tx["usable"] is False


def test_connect_refused(sinks):
    port = free_port(("127.0.0.2",))
    o, txs = probe(port, level="may")
    assert not o["ok"] and o["stage"] == "connect" and o["enh"] == "4.4.1" and o["code"] == 0
    assert o["reason"] == "connect to mx1.example.test[127.0.0.2]:%d: Connection refused" % port


def test_connect_timeout():
    # a listener whose backlog is full drops our SYN: the connect timeout must end it
    lsock = socket.socket()
    lsock.bind((IP, 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            f = socket.socket()
            f.setblocking(False)
            try:
                f.connect((IP, port))
            except BlockingIOError:
                pass
            fillers.append(f)
        time.sleep(0.1)
        o, txs = probe(port, "--connect-timeout", 1, level="none")
    finally:
        for f in fillers:
            f.close()
        lsock.close()
    assert not o["ok"] and o["stage"] == "connect" and o["enh"] == "4.4.1", o
    assert o["reason"] == "connect to mx1.example.test[127.0.0.2]:%d: Connection timed out" % port


def test_greeting_refused(sinks):
    sink = sinks(starttls=False, fail_at="connect_banner", fail_code=554,
                 fail_text="5.7.1 go away")
    o, txs = probe(sink.port, level="may")
    assert not o["ok"] and o["stage"] == "greeting" and o["code"] == 554 and o["permanent"]
    assert o["reply"] == "554 5.7.1 go away" and o["enh"] == "5.7.1"


# ---- protocol features ----

@pytest.mark.parametrize("pipelining", [True, False])
def test_pipelining(sinks, pipelining):
    ext = ("PIPELINING",) if pipelining else ()
    sink = sinks(starttls=False, extensions=ext)
    o, txs = probe(sink.port, "--rcpt", "a@example.test", "--rcpt", "b@example.test", level="none")
    assert txs[0]["code"] == 250 and all(r["ok"] for r in txs[0]["rcpts"])
    m = sink.wait_messages(1)[0]
    assert m["pipelined"] is pipelining
    assert m["rcpts"] == ["a@example.test", "b@example.test"]


def test_helo_fallback(sinks):
    sink = sinks(starttls=False, esmtp=False)
    o, txs = probe(sink.port, level="may")
    assert o["ok"] and o["esmtp"] is False and o["pipelining"] is False
    assert txs[0]["code"] == 250
    m = sink.wait_messages(1)[0]
    assert m["helo"] == "probe.example.test" and m["mail_params"] == ""


def test_helo_only_server_at_encrypt(pki, sinks):
    sink = sinks(cert=pki.good, esmtp=False)
    o, txs = probe(sink.port, "--ca", pki.ca, level="encrypt")
    assert not o["ok"] and o["policy"] and o["reason"] == NO_STARTTLS_REASON


def test_size_too_big(sinks, tmp_path):
    sink = sinks(starttls=False, extensions=("PIPELINING", "SIZE 1000"))
    o, txs = probe(sink.port, "--msgfile", msgfile(tmp_path, b"Subject: x\r\n\r\n" + b"y" * 5000),
                   level="none")
    assert o["max_size"] == 1000
    tx = txs[0]
    assert tx["code"] == 0 and tx["enh"] == "5.3.4" and tx["permanent"] is True, tx
    assert "exceeds size limit 1000" in tx["reason"]
    assert tx["rcpts"][0]["enh"] == "5.3.4"
    assert not any(c.startswith("MAIL") for _, c in sink.commands)


def test_size_param_sent(sinks, tmp_path):
    data = b"Subject: x\r\n\r\nshort\r\n"
    sink = sinks(starttls=False)
    probe(sink.port, "--msgfile", msgfile(tmp_path, data), level="none")
    assert sink.wait_messages(1)[0]["mail_params"] == "SIZE=%d" % len(data)


def test_smtputf8_not_offered(sinks):
    sink = sinks(starttls=False, extensions=("PIPELINING", "8BITMIME"))
    o, txs = probe(sink.port, "--smtputf8", "--rcpt", "j\u00f6rg@example.test", level="none")
    tx = txs[0]
    assert tx["code"] == 0 and tx["enh"] == "5.6.7" and tx["permanent"], tx
    assert not any(c.startswith("MAIL") for _, c in sink.commands)


def test_params_when_offered(sinks):
    sink = sinks(starttls=False)
    o, txs = probe(sink.port, "--smtputf8", "--8bit", "--rcpt", "j\u00f6rg@example.test",
                   "--notify", "SUCCESS,FAILURE", "--orcpt", "rfc822;orig@example.test",
                   "--ret", "HDRS", "--envid", "QID123", level="none")
    assert txs[0]["code"] == 250 and txs[0]["dsn_passed"] is True
    m = sink.wait_messages(1)[0]
    params = m["mail_params"].split()
    assert params[0].startswith("SIZE=")
    assert params[1:] == ["BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=QID123"], params
    assert m["rcpts"] == ["j\u00f6rg@example.test"]
    assert m["rcpt_params"] == ["NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig@example.test"]


def test_params_not_offered(sinks):
    sink = sinks(starttls=False, extensions=())
    o, txs = probe(sink.port, "--8bit", "--notify", "NEVER", "--orcpt", "rfc822;o@example.test",
                   "--ret", "FULL", "--envid", "X", level="none")
    assert txs[0]["code"] == 250 and txs[0]["dsn_passed"] is False
    m = sink.wait_messages(1)[0]
    assert m["mail_params"] == "" and m["rcpt_params"] == [""]


def test_notify_never(sinks):
    sink = sinks(starttls=False)
    probe(sink.port, "--notify", "NEVER", level="none")
    assert sink.wait_messages(1)[0]["rcpt_params"] == ["NOTIFY=NEVER"]


def test_binarymime(sinks, tmp_path):
    data = b"Subject: bin\r\n\r\n.dot\r\nraw\x00\xff bytes\n.\r\nend"
    sink = sinks(starttls=False, extensions=("PIPELINING", "CHUNKING", "BINARYMIME", "SIZE"))
    o, txs = probe(sink.port, "--binary", "--msgfile", msgfile(tmp_path, data), level="none")
    assert txs[0]["code"] == 250, txs
    m = sink.wait_messages(1)[0]
    assert m["data"] == data  # BDAT: no dot-stuffing, no added CRLF
    assert "BODY=BINARYMIME" in m["mail_params"]
    assert any(c == "BDAT %d LAST" % len(data) for _, c in sink.commands)


def test_binarymime_not_offered(sinks):
    sink = sinks(starttls=False)
    o, txs = probe(sink.port, "--binary", level="none")
    assert txs[0]["enh"] == "5.6.3" and txs[0]["permanent"] and txs[0]["code"] == 0


def test_dot_stuffing(sinks, tmp_path):
    data = (b"Subject: dots\r\n\r\n.hidden\r\n..two\r\n.\r\nmiddle\r\n. space\r\n"
            b"bare lf\n.after bare lf\r\nlast line without crlf")
    sink = sinks(starttls=False)
    probe(sink.port, "--msgfile", msgfile(tmp_path, data), level="none")
    m = sink.wait_messages(1)[0]
    assert m["data"] == data + b"\r\n"


def test_empty_body(sinks, tmp_path):
    sink = sinks(starttls=False)
    o, txs = probe(sink.port, "--msgfile", msgfile(tmp_path, b""), level="none")
    assert txs[0]["code"] == 250
    assert sink.wait_messages(1)[0]["data"] == b""


def test_several_transactions(pki, sinks):
    sink = sinks(cert=pki.good)
    o, txs = probe(sink.port, "--ca", pki.ca, "--count", 3, level="verify")
    assert [t["code"] for t in txs] == [250, 250, 250]
    assert all(t["usable"] for t in txs)
    msgs = sink.wait_messages(3)
    assert sink.connections == 1 and len({m["conn"] for m in msgs}) == 1
    assert all(m["tls"] for m in msgs)
    cmds = [c for _, c in sink.commands]
    assert "RSET" not in cmds and cmds[-1] == "QUIT"
    assert sum(c == "EHLO probe.example.test" for c in cmds) == 2  # before and after TLS


def test_transaction_after_failure(sinks):
    # every RCPT refused: RSET, then the next transaction on the same connection
    sink = sinks(starttls=False, fail_rcpts={"bad@example.test": (450, "4.2.0 try later")},
                 extensions=())
    o, txs = probe(sink.port, "--rcpt", "bad@example.test", "--count", 2, level="none")
    assert [t["code"] for t in txs] == [450, 450]
    assert sink.connections == 1
    cmds = [c for _, c in sink.commands]
    assert cmds.count("RSET") == 2 and "DATA" not in cmds


def test_source_address(sinks):
    sink = sinks(starttls=False)
    o, txs = probe(sink.port, "--source", "127.0.0.3", level="none")
    assert txs[0]["code"] == 250
    assert sink.wait_messages(1)[0]["peer"] == "127.0.0.3"


# ---- AUTH ----

def test_auth_plain(pki, sinks):
    sink = sinks(cert=pki.good, auth=("user1", "s3cret"))
    o, txs = probe(sink.port, "--ca", pki.ca, "--auth", "user1:s3cret", level="may")
    assert o["ok"] and o["tls"] and o["auth_plain"], o
    assert txs[0]["code"] == 250
    assert sink.wait_messages(1)[0]["auth"] == "user1"
    assert any(c.startswith("AUTH PLAI") for _, c in sink.commands)


def test_auth_bad_password(pki, sinks):
    sink = sinks(cert=pki.good, auth=("user1", "s3cret"))
    o, txs = probe(sink.port, "--ca", pki.ca, "--auth", "user1:wrong", level="may")
    assert not o["ok"] and o["stage"] == "AUTH" and o["code"] == 535 and o["permanent"], o
    assert o["enh"] == "5.7.8"
    assert txs == [] and sink.messages == []


class LoginOnlySink(Sink):
    _auth_mechs = "LOGIN"


def test_auth_login(pki, sinks):
    sink = sinks(LoginOnlySink, cert=pki.good, auth=("user2", "pw:with:colons"))
    o, txs = probe(sink.port, "--ca", pki.ca, "--auth", "user2:pw:with:colons", level="verify")
    assert o["ok"] and not o["auth_plain"] and o["auth_login"], o
    assert sink.wait_messages(1)[0]["auth"] == "user2"


def test_auth_never_in_plaintext(sinks):
    sink = sinks(starttls=False, auth=("user1", "s3cret"))
    o, txs = probe(sink.port, "--auth", "user1:s3cret", level="may")
    assert not o["ok"] and o["stage"] == "AUTH" and o["code"] == 0, o
    assert not any(c.startswith("AUTH") for _, c in sink.commands)


# ---- hostile or broken servers (scripted byte for byte) ----

class ScriptServer:
    """One connection on 127.0.0.2: sends `greeting` (raw bytes), then answers each command
    line with the first rule whose prefix matches (None: close), else `default`. After a
    reply starting with 354 it reads the body up to "." and answers that with rule ".".
    Records the lines it got."""

    def __init__(self, greeting, rules=(), default=b"250 2.0.0 ok\r\n"):
        self.greeting = greeting
        self.rules = list(rules)
        self.default = default
        self.lines = []
        self.sock = socket.socket()
        self.sock.bind((IP, 0))
        self.sock.listen(1)
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _answer(self, line):
        for prefix, reply in self.rules:
            if line.upper().startswith(prefix):
                return reply
        return self.default

    def _run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.settimeout(10)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = conn.makefile("rb")
        try:
            conn.sendall(self.greeting)
            while True:
                line = f.readline(8192)
                if not line:
                    return
                self.lines.append(line)
                reply = self._answer(line)
                if reply is None:
                    return
                conn.sendall(reply)
                if reply.startswith(b"354"):
                    while True:
                        body = f.readline(8192)
                        if not body or body == b".\r\n":
                            break
                    self.lines.append(b".\r\n")
                    reply = self._answer(b".")
                    if reply is None:
                        return
                    conn.sendall(reply)
        except OSError:
            pass
        finally:
            conn.close()
            self.sock.close()

    def stop(self):
        self.thread.join(10)
        self.sock.close()


def scripted(greeting, *args, rules=(), level="none", **kw):
    srv = ScriptServer(greeting, rules, **kw)
    try:
        return probe(srv.port, *args, level=level), srv
    finally:
        srv.stop()


@pytest.mark.parametrize("greeting,why", [
    (b"220 " + b"x" * 5000 + b"\r\n", "reply line longer than 4096 bytes"),
    (b"220 " + b"x" * 10000, "reply line longer than 4096 bytes"),  # no line end at all
    (b"220-x\r\n" * 101 + b"220 x\r\n", "malformed reply"),
    (b"220-first\r\n250 second\r\n", "malformed reply: 250 second"),
    (b"HTTP/1.0 200 OK\r\n", "malformed reply: HTTP/1.0 200 OK"),
    (b"22\r\n", "malformed reply: 22"),
    (b"220x\r\n", "malformed reply: 220x"),
])
def test_malformed_greeting(greeting, why):
    (o, txs), srv = scripted(greeting)
    assert not o["ok"] and o["stage"] == "greeting" and o["code"] == 0 and o["enh"] == "4.4.2", o
    assert o["reason"].startswith("protocol error with mx1.example.test[127.0.0.2] in reply to "
                                  "greeting: "), o
    assert why in o["reason"], o


def test_reply_text_sanitised():
    (o, txs), srv = scripted(b"220 h\x00i \xff\x1b[31m\ttab\r\n")
    assert o["ok"] and o["greeting"] == "220 h?i ??[31m tab", o


def test_odd_ehlo_keywords():
    ehlo = (b"250-mx greets\r\n250-SIZE 99999999999999999999999\r\n250-AUTH=\r\n250-AUTH\r\n"
            b"250-SIZE -5\r\n250-size 123\r\n250-" + b"K" * 3000 + b"\r\n250 pipelining\r\n")
    (o, txs), srv = scripted(b"220 mx\r\n", rules=[(b"EHLO", ehlo)])
    assert o["ok"] and o["size"] and o["max_size"] == 123 and o["pipelining"], o
    assert not o["auth_plain"] and not o["auth_login"]
    assert txs[0]["code"] == 250


def test_close_after_greeting():
    (o, txs), srv = scripted(b"220 mx\r\n", rules=[(b"EHLO", None)])
    assert not o["ok"] and o["stage"] == "EHLO" and o["enh"] == "4.4.2"
    assert o["reason"] == "lost connection with mx1.example.test[127.0.0.2] in reply to EHLO"


def test_pipelined_data_accepted_without_recipients():
    # RFC 2920 3.1: every RCPT refused, yet DATA got 354: the client ends it with a lone "."
    ehlo = b"250-mx\r\n250 PIPELINING\r\n"
    (o, txs), srv = scripted(b"220 mx\r\n", rules=[
        (b"EHLO", ehlo), (b"RCPT", b"550 5.1.1 no such user\r\n"),
        (b"DATA", b"354 go ahead\r\n"), (b".", b"554 5.5.1 no valid recipients\r\n")])
    tx = txs[0]
    assert tx["code"] == 550 and tx["stage"] == "RCPT TO" and tx["permanent"], tx
    assert tx["usable"] is True
    assert srv.lines[-2:] == [b".\r\n", b"QUIT\r\n"], srv.lines


def test_starttls_refused_at_may_continues_plaintext():
    ehlo = b"250-mx\r\n250 STARTTLS\r\n"
    (o, txs), srv = scripted(b"220 mx\r\n", rules=[
        (b"EHLO", ehlo), (b"STARTTLS", b"454 4.7.0 TLS not available\r\n")], level="may")
    assert o["ok"] and not o["tls"] and txs[0]["code"] == 250, o


def test_starttls_refused_at_encrypt():
    ehlo = b"250-mx\r\n250 STARTTLS\r\n"
    (o, txs), srv = scripted(b"220 mx\r\n", rules=[
        (b"EHLO", ehlo), (b"STARTTLS", b"454 4.7.0 TLS not available\r\n")], level="encrypt")
    assert not o["ok"] and o["policy"] and o["enh"] == "4.7.4" and o["code"] == 0, o
    assert o["reason"] == ("TLS required by policy for example.test but mx1.example.test "
                           "refused STARTTLS: 454 4.7.0 TLS not available"), o
    assert o["reply"] == "454 4.7.0 TLS not available"


def test_early_reply_during_body(tmp_path):
    # a reply while the body is still being sent ends the transaction and the connection
    srv = ScriptServer(b"220 mx\r\n", rules=[(b"DATA", b"354 go\r\n554 5.3.4 too big\r\n")])
    body = b"Subject: x\r\n\r\n" + b"y" * 78 + b"\r\n"
    try:
        o, txs = probe(srv.port, "--msgfile", msgfile(tmp_path, body * 100000), level="none")
    finally:
        srv.stop()
    tx = txs[0]
    assert tx["code"] in (554, 0) and not tx["rcpts"][0]["ok"], tx
    assert tx["usable"] is False


@pytest.mark.parametrize("seed", range(6))
def test_random_junk(seed):
    rnd = random.Random(seed)
    pieces = [b"220 ", b"250", b"-", b" ", b"\r\n", b"\n", b"\r", b"354 ", b"5", b"\x00",
              b"\xff", b"2.0.0", b"250-STARTTLS\r\n", b"PIPELINING", b"AUTH PLAIN"]
    junk = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(50, 3000)))
    (o, txs), srv = scripted(b"220 mx\r\n" + junk, level="may", default=junk[:500] or b"\r\n")
    assert o["event"] == "open"
