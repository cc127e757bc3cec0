"""Shared world for the outbound delivery tests (test_outbound.py, test_queue_cli.py): a fake
DNS (fakedns.py), SMTP sinks (sinks.py) on 127.0.0.x addresses sharing one port, a test CA
with leaf certificates for the sinks' names, a sealmail server configured to deliver to
them, and helpers to submit mail, read the queue CLI's JSON and parse delivery notices.

Names: mail for bob@remote.test goes to mx1.remote.test (127.0.0.2 unless a test says
otherwise); notices go back to x@sender.test, whose MX mx.sender.test is a sink on
127.0.0.20 with a good certificate (so notices arrive at every TLS level).

Speed: every test gets its own server, but the server's store is copied from a template
made once per session (the same accounts, domains and login conftest.Server makes), and a
server is stopped in the background while the next test runs; a fixture at the end of the
module waits for all of them and fails on a sanitizer report or a server that did not stop.
Every wait is bounded."""
import datetime
import email
import email.policy
import json
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time

import pytest

from conftest import TEST_LOGIN, TEST_PASSWORD, Dialog, Server, free_port, run_cli
from certs import TestCA
from fakedns import FakeDNS
import sinks as sinks_mod
from sinks import Sink

# Addresses sinks may use in a test (one port free on all of them).
SINK_HOSTS = tuple("127.0.0.%d" % i for i in range(2, 24))
NOTICE_HOST = "127.0.0.20"
NOTICE_NAME = "mx.sender.test"
SENDER = "x@sender.test"

QID_RE = re.compile(r"queued as ([A-Za-z0-9]+)")


# ---- certificates ---------------------------------------------------------------------

class Certs:
    """The test CA and leafs, made once per session: good(name), expired(name), wrong()."""

    def __init__(self, tmp):
        self.dir = tmp
        self.ca = TestCA(tmp)
        self.ca_file = self.ca.cert
        self._cache = {}

    def _leaf(self, key, name, **kw):
        if key not in self._cache:
            outdir = os.path.join(self.dir, "leafs", "%s-%s" % (key[0], name))
            leaf = self.ca.issue(name, outdir=outdir, **kw)
            self._cache[key] = (leaf.fullchain, leaf.privkey)
        return self._cache[key]

    def good(self, name):
        """A leaf of the test CA for name, valid now."""
        return self._leaf(("good", name), name)

    def expired(self, name):
        """A leaf of the test CA for name that expired yesterday."""
        now = datetime.datetime.now(datetime.timezone.utc)
        return self._leaf(("expired", name), name, not_before=now - datetime.timedelta(days=30),
                          not_after=now - datetime.timedelta(days=1))

    def wrong(self, name="wrong-name.example.test"):
        """A valid leaf of the test CA for another name."""
        return self._leaf(("wrong", name), name)


_template_lock = threading.Lock()
_template = {}


def template_data():
    """The data directory of a freshly set up conftest.Server (its store, and the
    self-signed certificate its first start made), made once per session."""
    with _template_lock:
        if "data" not in _template:
            tmp = tempfile.mkdtemp(prefix="sealmail-e2e-tmpl-")
            s = Server(tmp)  # runs the CLI: domain, mailboxes, account, login
            s.start()
            try:
                assert s.stop() == 0
            finally:
                s.check_sanitizers()
            _template["dir"] = tmp
            _template["data"] = s.data
        return _template["data"]


class OutServer(Server):
    """conftest.Server without the CLI set-up: the store is a copy of the template."""

    def __init__(self, tmp, extra=""):  # noqa: super().__init__ would run the CLI again
        self.write_conf(tmp, extra, workers=1)
        tmpl = template_data()
        os.makedirs(self.data, mode=0o700)
        shutil.copy2(os.path.join(tmpl, "sealmail.db"), os.path.join(self.data, "sealmail.db"))
        if os.path.isdir(os.path.join(tmpl, "tls")):
            shutil.copytree(os.path.join(tmpl, "tls"), os.path.join(self.data, "tls"))

    def stop_async(self):
        """SIGTERM now; returns a thread that waits for the exit (bounded)."""
        errors = []

        def run():
            try:
                self.stop()
            except AssertionError as e:
                errors.append(str(e)[:3000])
            log = self.log()
            for needle in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
                if needle in log:
                    errors.append("%s in %s:\n%s" % (needle, self.log_path, log[-6000:]))
        t = threading.Thread(target=run, daemon=True)
        t.errors = errors
        t.server = self
        t.start()
        return t


# Background stops of the module, joined by the `stopped_servers` fixture.
_stopping = []
_sink_stops = []


@pytest.fixture(scope="session")
def certs():
    tmp = tempfile.mkdtemp(prefix="sealmail-e2e-ca-")
    c = Certs(tmp)
    yield c
    shutil.rmtree(tmp, ignore_errors=True)
    if "dir" in _template:
        shutil.rmtree(_template["dir"], ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def stopped_servers():
    """At the end of the module: every server stopped cleanly, with no sanitizer report."""
    yield
    errors = []
    while _stopping:
        threads, tmp = _stopping.pop()
        ok = True
        for t in threads:
            t.join(timeout=40)
            if t.is_alive():
                errors.append("server %s did not stop" % t.server.dir)
                ok = False
            errors.extend(t.errors)
            ok = ok and not t.errors
        if ok:  # kept for a look when something went wrong
            shutil.rmtree(tmp, ignore_errors=True)
    while _sink_stops:
        _sink_stops.pop().join(timeout=20)
    assert not errors, "\n\n".join(errors)


# ---- the world ------------------------------------------------------------------------

def _sections_text(sections):
    out = []
    for name, kv in sections.items():
        out.append("[%s]" % name)
        for k, v in kv.items():
            if v is None:
                continue
            out.append("%s = %s" % (k, v))
    return "\n".join(out) + "\n"


class World:
    def __init__(self, certs):
        self.certs = certs
        self.tmp = tempfile.mkdtemp(prefix="sealmail-e2e-out-")
        self.dns = FakeDNS().start()
        self.port = sinks_mod.free_port(SINK_HOSTS)
        self.sinks = []
        self.servers = []
        self.notices = None

    # DNS
    def mx(self, domain, *hosts):
        """hosts: (pref, name, ip or [ips] or None). None: the name gets no address."""
        for pref, name, ips in hosts:
            self.dns.add(domain, "MX", (pref, name))
            if ips is None:
                continue
            for ip in ([ips] if isinstance(ips, str) else ips):
                self.dns.add(name, "AAAA" if ":" in ip else "A", ip)
        return self

    # sinks
    def sink(self, host="127.0.0.2", name="mx1.remote.test", cert="good", **kw):
        """A running sink on host:self.port. cert: "good" (test CA, for name), "expired",
        "wrong", None (the sink's default) or (fullchain, key)."""
        if cert == "good":
            kw["cert"] = self.certs.good(name)
        elif cert == "expired":
            kw["cert"] = self.certs.expired(name)
        elif cert == "wrong":
            kw["cert"] = self.certs.wrong()
        elif cert is not None:
            kw["cert"] = cert
        # a sink stopped in the background may hold host:port for a moment
        deadline = time.time() + 5
        while True:
            s = Sink(host=host, port=self.port, name=name, **kw)
            try:
                s.start()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.02)
        self.sinks.append(s)
        return s

    def stop_sink(self, s):
        """Stops s in the background: Sink.stop() closes its listener at once but may wait
        seconds for a TLS session that the server keeps open (its socket cannot be shut
        down from outside), so nobody waits for that here; stopped_servers joins it."""
        if s in self.sinks:
            self.sinks.remove(s)
        t = threading.Thread(target=s.stop, daemon=True)
        t.start()
        _sink_stops.append(t)

    def remote(self, domain="remote.test", host="127.0.0.2", name=None, **kw):
        """domain with one MX (pref 10) at a sink; returns the sink."""
        name = name or "mx1." + domain
        self.mx(domain, (10, name, host))
        return self.sink(host=host, name=name, **kw)

    def notice_sink(self):
        """The MX of sender.test: collects the notices sent to x@sender.test."""
        if self.notices is None:
            self.mx("sender.test", (10, NOTICE_NAME, NOTICE_HOST))
            self.notices = self.sink(host=NOTICE_HOST, name=NOTICE_NAME)
        return self.notices


    # the server
    def server(self, tls_policy="may", delivery=None, queue=None, dns=None, limits=None,
               extra="", notices=True, start=True):
        if notices:
            self.notice_sink()
        d = {"port": self.port, "tls_policy": tls_policy, "ca_file": self.certs.ca_file,
             "connect_timeout": "5s"}
        d.update(delivery or {})
        q = {"retry_interval": "1s", "retry_max": "2s", "lifetime": "60s",
             "delay_warning": "0", "scan_interval": "1s"}
        q.update(queue or {})
        n = {"forwarders": "127.0.0.1@%d" % self.dns.port}
        n.update(dns or {})
        lim = {"shutdown_grace": "1s"}
        lim.update(limits or {})
        text = _sections_text({"delivery": d, "queue": q, "dns": n, "limits": lim})
        tmp = tempfile.mkdtemp(prefix="srv-", dir=self.tmp)
        s = OutServer(tmp, extra=text + extra)
        self.servers.append(s)
        if start:
            s.start()
        return s

    def close(self):
        threads = [s.stop_async() for s in self.servers if s.proc is not None]
        for s in list(self.sinks):
            self.stop_sink(s)
        self.dns.stop()
        _stopping.append((threads, self.tmp))


@pytest.fixture
def world(certs, stopped_servers):
    w = World(certs)
    yield w
    w.close()


# ---- submitting -----------------------------------------------------------------------

def message(subject="outbound test", to="bob@remote.test", body="hello from the test\r\n",
            frm=SENDER, extra_headers=""):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@sender.test>\r\n%s\r\n%s" % (
        frm, to, subject, "m%d.%d" % (os.getpid(), time.monotonic_ns()), extra_headers, body))


def submit(server, rcpts, sender=SENDER, data=None, mail_params="", rcpt_params=None,
           subject="outbound test"):
    """One message through the submission listener (STARTTLS + AUTH). rcpts: an address or
    a list; rcpt_params: a string for all or a list (one per recipient). Returns the qid."""
    if isinstance(rcpts, str):
        rcpts = [rcpts]
    if rcpt_params is None or isinstance(rcpt_params, str):
        rcpt_params = [rcpt_params or ""] * len(rcpts)
    if data is None:
        data = message(subject=subject, to=", ".join(rcpts))
    if isinstance(data, str):
        data = data.encode()
    # RFC 5321 4.5.2: dot-stuffing (the tests give the message as it should arrive)
    data = re.sub(rb"(?m)^\.", b"..", data)
    d = Dialog(server.ports["submission"])
    try:
        code, text = d.reply()
        assert code == 220, text
        assert d.cmd("EHLO client.test")[0] == 250
        d.starttls()
        assert d.cmd("EHLO client.test")[0] == 250
        d.auth(TEST_LOGIN, TEST_PASSWORD)
        c, t = d.cmd(("MAIL FROM:<%s> %s" % (sender, mail_params)).strip())
        assert c == 250, t
        for r, p in zip(rcpts, rcpt_params):
            c, t = d.cmd(("RCPT TO:<%s> %s" % (r, p)).strip())
            assert c == 250, "RCPT %s: %s" % (r, t)
        c, t = d.cmd("DATA")
        assert c == 354, t
        d.send(data + (b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n"))
        c, t = d.reply()
        assert c == 250, t
        m = QID_RE.search(t)
        assert m, t
        try:
            d.cmd("QUIT")
        except (OSError, EOFError):
            pass
        return m.group(1)
    finally:
        d.close()


# ---- the queue ------------------------------------------------------------------------

def cli(server, *args, json_out=True, check=True):
    """`sealmail queue ARGS [--json]`; returns the CompletedProcess (with .json when asked
    and the exit code is 0)."""
    p = run_cli(["queue"] + list(args) + (["--json"] if json_out else []), conf=server.conf,
                check=check)
    p.json = None
    if json_out and p.returncode == 0:
        try:
            p.json = json.loads(p.stdout)
        except ValueError as e:
            raise AssertionError("queue %s: not JSON (%s): %r" % (args, e, p.stdout[:2000]))
    return p


def show(server, qid):
    p = cli(server, "show", qid)
    return p.json


def wait_until(fn, timeout=15, what="condition", step=0.1, server=None):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(step)
    raise AssertionError("timed out waiting for %s (last: %r)\n%s" % (
        what, last, server.log()[-5000:] if server else ""))


def delivery_lines(server, qid):
    return [l for l in server.log().splitlines() if "event=delivery qid=%s " % qid in l]


def wait_attempts(server, qid, n=1, status=None, timeout=15):
    """Waits until qid has at least n delivery log lines (with status= when given), then
    returns `queue show --json` of it, waiting until its attempts list has caught up."""
    def lines():
        ls = delivery_lines(server, qid)
        if status:
            ls = [l for l in ls if " status=%s " % status in l]
        return len(ls) >= n
    wait_until(lines, timeout, "%d delivery lines of %s (status %s)" % (n, qid, status),
               server=server)

    def rec():
        p = cli(server, "show", qid, check=False)
        if p.returncode == 67:
            return {"gone": True, "attempts": []}
        assert p.returncode == 0, p.stderr
        atts = p.json["attempts"]
        if status:
            atts = [a for a in atts if a["status"] == status]
        return p.json if len(atts) >= n else None
    return wait_until(rec, 10, "attempt records of %s" % qid, step=0.2, server=server)


def attempts_of(server, qid):
    """Every attempt record of qid from `queue show` (the message must still be queued) or,
    once it left the queue, None."""
    p = cli(server, "show", qid, check=False)
    return p.json["attempts"] if p.returncode == 0 else None


def wait_gone(server, qid, timeout=15):
    """Waits until the message left the queue: its event=removed log line, then `queue show
    ID` saying 67."""
    server.wait_log("event=removed qid=%s" % qid, timeout=timeout)

    def gone():
        p = cli(server, "show", qid, check=False)
        assert p.returncode in (0, 67), (p.returncode, p.stdout, p.stderr)
        return p.returncode == 67
    wait_until(gone, 5, "%s to leave the queue" % qid, step=0.2, server=server)


def delete(server, qid):
    p = cli(server, "delete", qid, check=False)
    assert p.returncode in (0, 67), (p.returncode, p.stdout, p.stderr)


def log_fields(line):
    """key=value pairs of a log line (values may be "quoted")."""
    out = {}
    for m in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line):
        v = m.group(2)
        if v.startswith('"'):
            v = v[1:-1]
        out.setdefault(m.group(1), v)
    return out


# ---- notices --------------------------------------------------------------------------

class Notice:
    """A delivery status notification as received by the notice sink."""

    def __init__(self, raw):
        self.envelope = raw
        self.data = raw["data"]
        self.msg = email.message_from_bytes(self.data, policy=email.policy.compat32)
        self.subject = self.msg["Subject"]
        parts = self.msg.get_payload() if self.msg.is_multipart() else []
        self.parts = parts
        self.human = ""
        self.per_message = None
        self.per_rcpt = []
        self.original = None      # the third part (message/rfc822 or text/rfc822-headers)
        for p in parts:
            ct = p.get_content_type()
            if ct == "text/plain" and not self.human:
                self.human = p.get_payload(decode=True).decode("utf-8", "replace")
            elif ct == "message/delivery-status":
                blocks = p.get_payload()
                self.per_message = blocks[0]
                self.per_rcpt = blocks[1:]
            elif ct in ("message/rfc822", "text/rfc822-headers", "message/global",
                        "message/global-headers"):
                self.original = p

    @staticmethod
    def field(block, name):
        """A header of a block, unfolded (RFC 5322 2.2.3), stripped; "" when absent."""
        v = block[name]
        return re.sub(r"\r?\n(?=[ \t])", "", v).strip() if v else ""

    def rcpt(self, addr):
        for b in self.per_rcpt:
            if b["Final-Recipient"] and b["Final-Recipient"].split(";", 1)[-1].strip().lower() \
                    == addr.lower():
                return b
        raise AssertionError("no block for %s in %s" % (addr, [str(b) for b in self.per_rcpt]))

    def final_recipients(self):
        return sorted(b["Final-Recipient"].split(";", 1)[-1].strip().lower()
                      for b in self.per_rcpt)

    def original_bytes(self):
        p = self.original
        if p is None:
            return b""
        if p.get_content_type() in ("message/rfc822", "message/global"):
            inner = p.get_payload()
            inner = inner[0] if isinstance(inner, list) else inner
            return inner.as_bytes() if hasattr(inner, "as_bytes") else str(inner).encode()
        return p.get_payload(decode=True) or p.get_payload().encode()


def flat(text):
    """Text with every run of white space (line breaks of a wrapped paragraph too) as one
    space."""
    return " ".join(text.split())


def notices_about(sink, qid=None, subject_has=None):
    out = []
    for m in list(sink.messages):
        n = Notice(m)
        if qid and qid not in n.data.decode("utf-8", "replace"):
            continue
        if subject_has and subject_has not in (n.subject or ""):
            continue
        out.append(n)
    return out


def wait_notice(sink, qid, n=1, timeout=20, server=None, subject_has=None):
    return wait_until(lambda: (lambda ns: ns if len(ns) >= n else None)(
        notices_about(sink, qid, subject_has)), timeout, "%d notice(s) about %s" % (n, qid),
        server=server)


def check_notice_envelope(n):
    """A notice comes from <> to the original sender, as multipart/report."""
    assert n.envelope["mail_from"] in ("", "<>"), n.envelope["mail_from"]
    assert [r.lower() for r in n.envelope["rcpts"]] == [SENDER], n.envelope["rcpts"]
    assert n.msg.get_content_type() == "multipart/report", n.msg.get_content_type()
    assert n.msg.get_param("report-type") == "delivery-status"
    assert n.msg["From"] and "MAILER-DAEMON@mx.example.test" in n.msg["From"], n.msg["From"]
    assert (n.msg["Auto-Submitted"] or "").strip() == "auto-replied", n.msg["Auto-Submitted"]
    assert n.per_message is not None and n.per_message["Reporting-MTA"], str(n.msg)[:2000]


# ---- delivery records straight from <data_dir>/queue.db -------------------------------

def db_attempts(server, qid):
    """Every attempt row of qid in the server's queue.db, oldest first (dicts). The queue
    CLI only shows messages still queued; the records stay after delivery."""
    path = os.path.join(server.data, "queue.db")
    if not os.path.exists(path):
        return []
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
    try:
        con.row_factory = sqlite3.Row
        rows = con.execute("SELECT * FROM attempts WHERE qid = ? ORDER BY time, id",
                           (qid,)).fetchall()
        return [dict(r) for r in rows]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def wait_record(server, qid, status=None, n=1, timeout=15, rcpt=None):
    """Waits until qid has n attempt rows (of status, for rcpt when given); returns them."""
    def rows():
        rs = [r for r in db_attempts(server, qid)
              if (status is None or r["status"] == status)
              and (rcpt is None or r["rcpt_addr"].lower() == rcpt.lower())]
        return rs if len(rs) >= n else None
    return wait_until(rows, timeout, "%d %s record(s) of %s" % (n, status or "any", qid),
                      step=0.1, server=server)
