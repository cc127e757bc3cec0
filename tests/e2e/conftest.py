"""Test world for end-to-end tests: starts the real sealmail binary (the sanitizer build,
SEALMAIL_BIN) on free loopback ports with its own data directory, and offers small clients.
Every wait is bounded; every server is stopped at the end of its test."""
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import glob
import itertools

import pytest

BIN = os.environ.get("SEALMAIL_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "san", "sealmail")

# ASan: leaks of a process killed by the test are not bugs; everything else is.
ENV_SAN = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=99",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98",
}


# Every test server has one relay account: sending domain sender.test, one login.
TEST_LOGIN = "user@sender.test"
TEST_PASSWORD = "test-password-1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_world_dns = None


def default_dns():
    """One DNS server on loopback for every test server that does not bring its own: mail
    for remote.test goes to 127.0.0.9 on a port where nothing listens (deferred at once),
    every other name is NXDOMAIN. So no test ever asks the machine's resolver."""
    global _world_dns
    if _world_dns is None:
        from fakedns import FakeDNS
        _world_dns = FakeDNS().start()
        _world_dns.add("remote.test", "MX", (10, "mx.remote.test"))
        _world_dns.add("mx.remote.test", "A", "127.0.0.9")
    return _world_dns


def run_cli(args, home=None, conf=None, check=True, input=None):
    cmd = [BIN] + args
    if conf:
        cmd += ["-c", conf]
    env = dict(os.environ, **ENV_SAN)
    if home:
        env["SEALMAIL_HOME"] = home
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, input=input)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (%d): %s %s" % (cmd, p.returncode, p.stdout, p.stderr))
    return p


class Server:
    def __init__(self, tmp, extra="", workers=2, domains=("example.test",),
                 mailboxes=("alice@example.test", "bob@example.test"), tls_section=None):
        self.write_conf(tmp, extra, workers, tls_section)
        for d in domains:
            run_cli(["domain", "add", d], conf=self.conf)
        for m in mailboxes:
            run_cli(["mailbox", "add", m], conf=self.conf)
        run_cli(["account", "add", "testacct", "--plan", "professional"], conf=self.conf)
        run_cli(["account", "domain", "add", "testacct", "sender.test"], conf=self.conf)
        run_cli(["login", "add", TEST_LOGIN, "testacct"], conf=self.conf, input=TEST_PASSWORD + "\n")

    def write_conf(self, tmp, extra="", workers=2, tls_section=None):
        """Paths, free ports and the config file (DNS: the shared test-world server)."""
        self.dir = tmp
        self.data = os.path.join(tmp, "data")
        self.ports = {"mx": free_port(), "submission": free_port(), "submissions": free_port()}
        self.conf = os.path.join(tmp, "sealmail.conf")
        self.log_path = os.path.join(tmp, "server.log")
        self.hostname = "mx.example.test"
        self.proc = None
        tls = tls_section if tls_section is not None else ""
        with open(self.conf, "w") as f:
            f.write(
                "hostname = %s\ndata_dir = %s\nuser = \"\"\nworkers = %d\n"
                "postmaster = postmaster@example.test\n"
                "[dns]\nforwarders = 127.0.0.1@%d\n[delivery]\nport = %d\n"
                "[listen]\nmx = 127.0.0.1:%d\nsubmission = 127.0.0.1:%d\nsubmissions = 127.0.0.1:%d\n"
                "%s\n%s\n" % (self.hostname, self.data, workers, default_dns().port,
                              free_port(), self.ports["mx"], self.ports["submission"],
                              self.ports["submissions"], tls, extra))

    def start(self, wait=True):
        env = dict(os.environ, **ENV_SAN)
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BIN, "serve", "-c", self.conf], stdout=self.logf,
                                     stderr=self.logf, env=env, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("server exited %s:\n%s" % (self.proc.returncode, self.log()))
            try:
                with socket.create_connection(("127.0.0.1", self.ports["mx"]), timeout=2) as s:
                    s.settimeout(5)
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        # the lookup and queue processes are up when a RCPT can be answered
                        if "event=lookup_ready" in self.log() and "event=queue_ready" in self.log():
                            return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("server not ready:\n" + self.log())

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, needle, timeout=15, count=1):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.log().count(needle) >= count:
                return True
            time.sleep(0.05)
        raise AssertionError("log never showed %r (x%d):\n%s" % (needle, count, self.log()[-4000:]))

    def pids(self):
        """pids of the master and all children (the session started by Popen)."""
        out = subprocess.run(["pgrep", "-s", str(self.proc.pid)], capture_output=True, text=True)
        return [int(x) for x in out.stdout.split()]

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            raise AssertionError("server did not stop within %ds:\n%s" % (timeout, self.log()[-4000:]))
        return self.proc.returncode

    def kill9(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        # children die with the master (PR_SET_PDEATHSIG) but may take a moment
        deadline = time.time() + 10
        while time.time() < deadline:
            out = subprocess.run(["pgrep", "-s", str(self.proc.pid)], capture_output=True, text=True)
            if not out.stdout.strip():
                break
            time.sleep(0.05)

    def maildir(self, addr):
        local, domain = addr.lower().split("@")
        return os.path.join(self.data, "mail", domain, local)

    def messages(self, addr):
        files = sorted(glob.glob(os.path.join(self.maildir(addr), "new", "*")))
        out = []
        for p in files:
            with open(p, "rb") as f:
                out.append(f.read())
        return out

    def wait_messages(self, addr, n, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = self.messages(addr)
            if len(m) >= n:
                return m
            time.sleep(0.05)
        raise AssertionError("%s has %d messages, wanted %d\n%s" % (
            addr, len(self.messages(addr)), n, self.log()[-4000:]))

    def check_sanitizers(self):
        log = self.log()
        assert "AddressSanitizer" not in log, log[-6000:]
        assert "runtime error:" not in log, log[-6000:]
        assert "LeakSanitizer" not in log, log[-6000:]


@pytest.fixture
def make_server():
    servers = []
    tmps = []

    def make(**kw):
        tmp = tempfile.mkdtemp(prefix="sealmail-e2e-")
        tmps.append(tmp)
        start = kw.pop("start", True)
        s = Server(tmp, **kw)
        servers.append(s)
        if start:
            s.start()
        return s

    yield make
    for s in servers:
        try:
            s.stop()
        finally:
            s.check_sanitizers()
    for t in tmps:
        subprocess.run(["rm", "-rf", t])


@pytest.fixture
def server(make_server):
    return make_server()


class Dialog:
    """A raw SMTP client: send bytes, read replies (multi-line aware). Bounded waits."""

    def __init__(self, port, host="127.0.0.1", tls=False, timeout=10, src=None):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(src, 0) if src else None)
        self.sock.settimeout(timeout)
        if tls:
            self.sock = client_tls_context().wrap_socket(self.sock, server_hostname="mx.example.test")
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; buffered %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self):
        """Returns (code, full text of all lines)."""
        lines = []
        while True:
            line = self._line()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                break
        return int(lines[-1][:3]), "\n".join(lines)

    def auth(self, login=TEST_LOGIN, password=TEST_PASSWORD, expect=235):
        """AUTH PLAIN with an initial response."""
        import base64
        tok = base64.b64encode(b"\0" + login.encode() + b"\0" + password.encode()).decode()
        code, text = self.cmd("AUTH PLAIN " + tok)
        assert code == expect, text
        return code, text

    def starttls(self):
        code, text = self.cmd("STARTTLS")
        assert code == 220, text
        assert self.buf == b""
        self.sock = client_tls_context().wrap_socket(self.sock, server_hostname="mx.example.test")
        return self.sock

    def closed(self, timeout=5):
        """True when the server closed the connection (EOF) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(4096)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, ssl.SSLError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def client_tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def simple_message(subject="test", body="hello\r\n", extra_headers=""):
    return ("From: a@sender.test\r\nTo: alice@example.test\r\nSubject: %s\r\n%s\r\n%s" % (
        subject, extra_headers, body))


def send_one(port, rcpt="alice@example.test", data=None, starttls=True, sender="a@sender.test"):
    """One full transaction; returns the final reply (code, text)."""
    d = Dialog(port)
    try:
        assert d.reply()[0] == 220
        assert d.cmd("EHLO client.test")[0] == 250
        if starttls:
            d.starttls()
            assert d.cmd("EHLO client.test")[0] == 250
        c, t = d.cmd("MAIL FROM:<%s>" % sender)
        assert c == 250, t
        c, t = d.cmd("RCPT TO:<%s>" % rcpt)
        if c != 250:
            return c, t
        c, t = d.cmd("DATA")
        assert c == 354, t
        d.send((data or simple_message()) + "\r\n.\r\n")
        res = d.reply()
        d.cmd("QUIT")
        return res
    finally:
        d.close()


# ---- one server per test module (test_limits, test_protocol, test_smuggling) ----

def ready(server, workers=2):
    """wait_ready returns once one worker answers; a SIGTERM before every worker has set up
    its signal handling can hang the stop, so wait for all of them."""
    server.wait_log("event=worker_ready", count=workers)
    server.wait_log("event=started")
    return server


class ModuleServer:
    """One server for a whole test module (a server start costs a second or two under ASan)
    and the clients its tests open. Tests that look at mailboxes use fresh ones from box();
    the sanitizer check runs when the module ends. A module binds the fixtures:

        world = ModuleServer(extra=..., box_prefix="x")
        shared, server, _close_dialogs = world.fixtures()
    """

    def __init__(self, extra="", box_prefix="m"):
        self.extra = extra
        self.box_prefix = box_prefix
        self.open = []
        self.boxes = itertools.count(1)

    def fixtures(self):
        """(shared, server, _close_dialogs): the module-scoped server, `server` overridden to
        it, and the autouse fixture that closes every client after its test."""
        world = self

        @pytest.fixture(scope="module")
        def shared():
            tmp = tempfile.mkdtemp(prefix="sealmail-e2e-")
            s = Server(tmp, extra=world.extra)
            s.start()
            ready(s)
            yield s
            try:
                s.stop()
            finally:
                s.check_sanitizers()
                subprocess.run(["rm", "-rf", tmp])

        @pytest.fixture
        def server(shared):
            return shared

        @pytest.fixture(autouse=True)
        def _close_dialogs(make_server):
            # asks for make_server so that its servers stop after our clients are gone (an
            # open session holds a SIGTERM for the whole shutdown grace)
            yield
            while world.open:
                world.open.pop().close()

        return shared, server, _close_dialogs

    def box(self, server, prefix=None):
        """A new, empty local mailbox on the running server."""
        addr = "%s%d@example.test" % (prefix or self.box_prefix, next(self.boxes))
        run_cli(["mailbox", "add", addr], conf=server.conf)
        return addr

    def dialog(self, port, src=None, timeout=10, tls=False):
        """A Dialog closed after the test."""
        d = Dialog(port, src=src, timeout=timeout, tls=tls)
        self.open.append(d)
        return d

    def session(self, server, port=None, ehlo="client.test", src=None, tls=False):
        """A connected Dialog past the greeting and (unless ehlo is None) EHLO."""
        d = self.dialog(port or server.ports["mx"], src=src, tls=tls)
        code, text = d.reply()
        assert code == 220, text
        if ehlo:
            code, text = d.cmd("EHLO " + ehlo)
            assert code == 250, text
        return d


def expect(d, line, code, enh=None, shown=None):
    """Sends one command; asserts the reply code and the enhanced status code of its last
    line (failure messages show line[:shown]). Returns the reply text."""
    c, t = d.cmd(line)
    assert c == code, "%r -> %s" % (line[:shown], t)
    if enh is not None:
        assert t.split("\n")[-1][4:].startswith(enh + " "), "%r -> %s (wanted %s)" % (
            line[:shown], t, enh)
    return t


def envelope(d, rcpts, sender="a@sender.test", mail_params="", rcpt_params="", shown=None):
    """MAIL FROM and one RCPT TO per recipient, each accepted."""
    expect(d, "MAIL FROM:<%s>%s" % (sender, mail_params), 250, "2.1.0", shown=shown)
    for r in rcpts:
        expect(d, "RCPT TO:<%s>%s" % (r, rcpt_params), 250, "2.1.5", shown=shown)


def expect_reply(d, code, enh=None):
    c, t = d.reply()
    assert c == code, t
    if enh is not None:
        assert t.split("\n")[-1][4:].startswith(enh + " "), "%s (wanted %s)" % (t, enh)
    return t


def in_sync(d):
    """The next reply answers the next command: nothing extra is queued, nothing lost
    (214 is answered by nothing but HELP)."""
    t = expect(d, "HELP", 214, "2.0.0")
    assert d.buf == b"", d.buf
    return t


def qid_of(text):
    assert "queued as" in text, text
    return text.split()[-1]
