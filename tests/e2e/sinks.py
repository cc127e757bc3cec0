"""A reusable SMTP sink for tests (Python 3 stdlib only): listens on a loopback address,
speaks enough ESMTP for an MTA's client side (EHLO/HELO, STARTTLS or implicit TLS with SNI
recorded, AUTH PLAIN/LOGIN, PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN, CHUNKING/BDAT) and
records every message. Failures and drops can be injected at each step. Everything is
bounded: line length, message size, connections, commands, and every wait has a timeout.
Each test starts a sink and stops it."""
import base64
import os
import socket
import ssl
import threading
import time

MAX_LINE = 4096               # command or body line, with its line end
MAX_DATA = 64 * 1024 * 1024   # a bigger message is read and refused with 552
MAX_CONNS = 64                # concurrent connections; more are closed at once
MAX_COMMANDS = 2000           # per connection
MAX_LOG = 20000               # command lines kept in Sink.commands
IO_TIMEOUT = 15               # seconds any single read, write or handshake may take
DROP_AFTER = 64 * 1024        # drop_at="data_body": body bytes read before closing

FAIL_STAGES = (None, "connect_banner", "ehlo", "mail", "rcpt", "data", "dot")
DROP_STAGES = (None, "data_body", "dot")


class _Drop(Exception):
    """Close the connection now, without a reply."""


class _Lines:
    """Buffered line reader over a (TLS or plain) socket; pipelined input stays buffered."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError
        if self.pos > 65536:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += d

    def buffered(self):
        return len(self.buf) - self.pos

    def discard(self):
        n = self.buffered()
        self.buf = bytearray()
        self.pos = 0
        return n

    def readline(self):
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0:
                line = bytes(self.buf[self.pos:i + 1])
                self.pos = i + 1
                if len(line) > MAX_LINE:
                    raise _Drop("line too long")
                return line
            if self.buffered() > MAX_LINE:
                raise _Drop("line too long")
            self._fill()

    def read_exact(self, n):
        while self.buffered() < n:
            self._fill()
        d = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return d


def free_port(hosts=("127.0.0.1",)):
    """A TCP port free on every given loopback address (for bind tests)."""
    for _ in range(100):
        socks = []
        try:
            s = socket.socket()
            socks.append(s)
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
            for h in hosts[1:]:
                t = socket.socket()
                socks.append(t)
                t.bind((h, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no port free on all of %s" % (hosts,))


class Sink:
    # Test hooks for abuse cases (subclass and set): bytes sent right after "220" to
    # STARTTLS, before the handshake (STARTTLS response injection); a broken handshake
    # (garbage instead of TLS); the AUTH mechanisms advertised.
    _starttls_inject = b""
    _starttls_break = False
    _auth_mechs = "PLAIN LOGIN"

    def __init__(self, host="127.0.0.2", port=0, name="mx.example.test", starttls=True, cert=None,
                 implicit_tls=False, fail_at=None, fail_code=None, fail_text=None,
                 drop_at=None, auth=None, esmtp=True,
                 extensions=("PIPELINING", "SIZE 52428800", "8BITMIME", "SMTPUTF8", "DSN",
                             "ENHANCEDSTATUSCODES"),
                 fail_rcpts=None):
        """host/port: where to listen (port 0: any; the chosen one is .port after start()).
        name: our name in the greeting and EHLO. starttls: offer STARTTLS (needs cert, a
        (fullchain_path, key_path) pair; also used for implicit_tls, TLS from the first
        byte). fail_at: the step answered with fail_code/fail_text ("connect_banner" for the
        greeting, then 503 to everything but QUIT; "ehlo" also refuses HELO); default code
        451 (554 for the banner), default text "<class>.0.0 test sink refuses at <step>".
        drop_at: "data_body" closes after DROP_AFTER body bytes (or at the end of a shorter
        body), "dot" closes instead of answering the final dot. auth: (user, password):
        AUTH PLAIN LOGIN is advertised once TLS is on (at once when there is no cert) and
        MAIL needs it. esmtp=False answers EHLO with 502. extensions: the EHLO keywords
        (STARTTLS and AUTH are added as above; "CHUNKING" enables BDAT). fail_rcpts: {addr:
        (code, text)} refuses just those recipients. fail_text and the texts of fail_rcpts
        may hold "\n": a multiline reply. Messages also carry "peer" (client address),
        "pipelined" (commands arrived in groups) and "conn" (connection number)."""
        if fail_at not in FAIL_STAGES:
            raise ValueError("fail_at %r" % (fail_at,))
        if drop_at not in DROP_STAGES:
            raise ValueError("drop_at %r" % (drop_at,))
        if implicit_tls and not cert:
            raise ValueError("implicit_tls needs cert")
        self.host = host
        self.port = port
        self.name = name
        self.starttls = starttls
        self.cert = cert
        self.implicit_tls = implicit_tls
        self.fail_at = fail_at
        self.fail_code = fail_code or (554 if fail_at == "connect_banner" else 451)
        self.fail_text = fail_text
        self.drop_at = drop_at
        self.auth = auth
        self.esmtp = esmtp
        self.extensions = list(extensions)
        self.fail_rcpts = dict(fail_rcpts or {})
        self.messages = []
        self.connections = 0
        self.commands = []        # (connection number, command line) for assertions
        self.errors = []          # what went wrong inside the sink (for debugging tests)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._lsock = None
        self._thread = None
        self._conns = {}  # accepted socket -> a dup of its fd (TLS wrapping detaches the socket)
        self._threads = []
        self._ctx = None
        self._tls = threading.local()

    # ---- life cycle ----

    def start(self):
        if self.cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.cert[0], self.cert[1])
            ctx.sni_callback = self._sni
            self._ctx = ctx
        s = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(16)
        s.settimeout(0.2)
        self._lsock = s
        self.port = s.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._lsock:
            self._lsock.close()
        socks = []
        with self._cond:
            # dup under the lock: a session closes its fd only after taking it out
            for fd in self._conns.values():
                try:
                    socks.append(socket.socket(fileno=os.dup(fd)))
                except OSError:
                    pass
        for c in socks:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                c.close()
        if self._thread:
            self._thread.join(5)
        for t in list(self._threads):
            t.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def wait_messages(self, n, timeout=20):
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "sink %s:%d: expected %d message(s) within %ss, got %d; "
                        "connections=%d; last commands: %r; errors: %r"
                        % (self.host, self.port, n, timeout, len(self.messages),
                           self.connections, self.commands[-10:], self.errors[-5:]))
                self._cond.wait(left)
            return list(self.messages)

    # ---- internals ----

    def _sni(self, sslobj, server_name, ctx):
        self._tls.sni = server_name

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                sock, peer = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self._cond:
                self.connections += 1
                n = self.connections
                if len(self._conns) >= MAX_CONNS:
                    sock.close()
                    continue
                self._conns[sock] = os.dup(sock.fileno())
            sock.settimeout(IO_TIMEOUT)
            # replies go out line by line: without this, Nagle and delayed ACKs add 40 ms
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = threading.Thread(target=self._session, args=(sock, peer, n), daemon=True)
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
            t.start()

    def _session(self, sock, peer, n):
        raw = sock
        try:
            _Session(self, sock, peer, n).run()
        except (EOFError, _Drop, OSError, ssl.SSLError, ValueError) as e:
            with self._cond:
                self.errors.append("conn %d: %s: %s" % (n, type(e).__name__, e))
        finally:
            try:
                raw.close()
            except OSError:
                pass
            with self._cond:
                fd = self._conns.pop(raw, None)
            if fd is not None:
                os.close(fd)

    def _log(self, n, line):
        with self._cond:
            if len(self.commands) < MAX_LOG:
                self.commands.append((n, line))

    def _deliver(self, msg):
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def _fail_reply(self, stage):
        code = self.fail_code
        return code, self.fail_text or "%d.0.0 test sink refuses at %s" % (code // 100, stage)


class _Session:
    def __init__(self, sink, sock, peer, n):
        self.k = sink
        self.sock = sock
        self.peer = peer
        self.n = n
        self.rd = _Lines(sock)
        self.tls = None
        self.sni = None
        self.helo = None
        self.authed = None
        self.reset()

    def reset(self):
        self.mail_from = None
        self.mail_params = ""
        self.rcpts = []
        self.rcpt_params = []
        self.pipelined = False
        self.bdat = bytearray()
        self.bdat_too_big = False

    def send(self, line):
        self.sock.sendall(line.encode("utf-8", "replace") + b"\r\n")

    def reply(self, code, text):
        """A reply; text with "\n" in it goes out as a multiline reply (RFC 5321 4.2.1)."""
        lines = text.split("\n")
        for i, t in enumerate(lines):
            self.send("%d%s%s" % (code, "-" if i < len(lines) - 1 else " ", t))

    def start_tls(self):
        k = self.k
        k._tls.sni = None
        s = k._ctx.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        s.settimeout(IO_TIMEOUT)
        s.do_handshake()
        self.sni = k._tls.sni
        self.sock = s
        self.rd = _Lines(s)
        self.tls = {"version": s.version(), "cipher": s.cipher()[0]}

    def run(self):
        k = self.k
        if k.implicit_tls:
            self.start_tls()
        if k.fail_at == "connect_banner":
            self.reply(*k._fail_reply("connect_banner"))
            for _ in range(MAX_COMMANDS):
                line = self.rd.readline().decode("latin-1").rstrip("\r\n")
                k._log(self.n, line)
                if line.upper() == "QUIT":
                    self.send("221 2.0.0 Bye")
                    return
                self.send("503 5.5.1 No service")
            return
        self.send("220 %s ESMTP test sink" % k.name)
        for _ in range(MAX_COMMANDS):
            raw = self.rd.readline()
            more = self.rd.buffered() > 0
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            k._log(self.n, line if not line.upper().startswith("AUTH ") else line[:10] + "...")
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            h = getattr(self, "do_" + verb, None)
            if verb in ("MAIL", "RCPT") and more:
                self.pipelined = True
            if h is None:
                self.send("502 5.5.2 Command not recognized")
                continue
            if h(arg) == "quit":
                return
        self.send("421 4.7.0 Too many commands")

    # ---- commands ----

    def ehlo_lines(self):
        k = self.k
        ext = list(k.extensions)
        if k.starttls and k.cert and not self.tls:
            ext.append("STARTTLS")
        if k.auth and (self.tls or not k.cert):
            ext.append("AUTH " + k._auth_mechs)
        return ext

    def do_EHLO(self, arg):
        k = self.k
        if k.fail_at == "ehlo":
            self.reply(*k._fail_reply("ehlo"))
            return
        if not k.esmtp:
            self.send("502 5.5.1 EHLO not implemented")
            return
        self.helo = arg
        self.reset()
        ext = self.ehlo_lines()
        lines = ["%s greets %s" % (k.name, arg)] + ext
        for i, l in enumerate(lines):
            self.send("250%s%s" % ("-" if i < len(lines) - 1 else " ", l))

    def do_HELO(self, arg):
        k = self.k
        if k.fail_at == "ehlo":
            self.reply(*k._fail_reply("ehlo"))
            return
        self.helo = arg
        self.reset()
        self.send("250 %s" % k.name)

    def do_STARTTLS(self, arg):
        k = self.k
        if not (k.starttls and k.cert) or self.tls:
            self.send("502 5.5.1 STARTTLS not available")
            return
        self.sock.sendall(b"220 2.0.0 Ready to start TLS\r\n" + k._starttls_inject)
        # RFC 3207: what the client sent before the handshake is not trusted
        self.rd.discard()
        if k._starttls_break:
            self.sock.sendall(b"this is not TLS\r\n" * 4)
            raise _Drop("broken handshake (test hook)")
        self.start_tls()
        self.helo = None
        self.authed = None
        self.reset()

    def do_AUTH(self, arg):
        k = self.k
        if not k.auth or not (self.tls or not k.cert):
            self.send("503 5.5.1 AUTH not available")
            return
        mech, _, ir = arg.partition(" ")
        mech = mech.upper()
        try:
            if mech == "PLAIN":
                if not ir:
                    self.send("334 ")
                    ir = self.rd.readline().decode("latin-1").strip()
                if ir == "*":
                    self.send("501 5.7.0 Cancelled")
                    return
                parts = base64.b64decode(ir, validate=True).split(b"\0")
                if len(parts) != 3:
                    raise ValueError("bad PLAIN")
                user, pw = parts[1].decode(), parts[2].decode()
            elif mech == "LOGIN":
                self.send("334 VXNlcm5hbWU6")
                user = base64.b64decode(self.rd.readline().strip(), validate=True).decode()
                self.send("334 UGFzc3dvcmQ6")
                pw = base64.b64decode(self.rd.readline().strip(), validate=True).decode()
            else:
                self.send("504 5.5.4 Unrecognized authentication type")
                return
        except (ValueError, UnicodeDecodeError):
            self.send("501 5.5.2 Cannot decode")
            return
        if (user, pw) == tuple(k.auth):
            self.authed = user
            self.send("235 2.7.0 Authentication successful")
        else:
            self.send("535 5.7.8 Authentication credentials invalid")

    def do_MAIL(self, arg):
        k = self.k
        if not self.helo:
            self.send("503 5.5.1 EHLO first")
            return
        if k.auth and not self.authed:
            self.send("530 5.7.0 Authentication required")
            return
        if k.fail_at == "mail":
            self.reply(*k._fail_reply("mail"))
            return
        if not arg.upper().startswith("FROM:"):
            self.send("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        rest = arg[5:].lstrip()
        if not rest.startswith("<") or ">" not in rest:
            self.send("501 5.1.7 Bad sender address syntax")
            return
        end = rest.index(">")
        self.reset()
        self.pipelined = self.rd.buffered() > 0
        self.mail_from = rest[1:end]
        self.mail_params = rest[end + 1:].strip()
        self.send("250 2.1.0 Ok")

    def do_RCPT(self, arg):
        k = self.k
        if self.mail_from is None:
            self.send("503 5.5.1 Need MAIL first")
            return
        if self.rd.buffered() > 0:
            self.pipelined = True
        if not arg.upper().startswith("TO:"):
            self.send("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        rest = arg[3:].lstrip()
        if not rest.startswith("<") or ">" not in rest:
            self.send("501 5.1.3 Bad recipient address syntax")
            return
        end = rest.index(">")
        addr = rest[1:end]
        if addr in k.fail_rcpts:
            self.reply(*k.fail_rcpts[addr])
            return
        if k.fail_at == "rcpt":
            self.reply(*k._fail_reply("rcpt"))
            return
        if len(self.rcpts) >= 1000:
            self.send("452 4.5.3 Too many recipients")
            return
        self.rcpts.append(addr)
        self.rcpt_params.append(rest[end + 1:].strip())
        self.send("250 2.1.5 Ok")

    def do_DATA(self, arg):
        k = self.k
        if self.mail_from is None:
            self.send("503 5.5.1 Need MAIL first")
            return
        if not self.rcpts:
            self.send("554 5.5.1 No valid recipients")
            return
        if k.fail_at == "data":
            self.reply(*k._fail_reply("data"))
            return
        self.send("354 End data with <CR><LF>.<CR><LF>")
        data = bytearray()
        too_big = False
        while True:
            line = self.rd.readline()
            if line in (b".\r\n", b".\n"):
                break
            if line.startswith(b"."):
                line = line[1:]
            if len(data) + len(line) > MAX_DATA:
                too_big = True
            else:
                data += line
            if k.drop_at == "data_body" and len(data) >= DROP_AFTER:
                raise _Drop("drop_at data_body (test)")
        self.finish(bytes(data), too_big)

    def do_BDAT(self, arg):
        k = self.k
        parts = arg.split()
        if "CHUNKING" not in [e.split()[0].upper() for e in k.extensions if e]:
            self.send("502 5.5.1 BDAT not available")
            return
        if not parts or not parts[0].isdigit() or len(parts) > 2 or (
                len(parts) == 2 and parts[1].upper() != "LAST"):
            self.send("501 5.5.4 Syntax: BDAT size [LAST]")
            return
        size = int(parts[0])
        last = len(parts) == 2
        if size > MAX_DATA:
            raise _Drop("BDAT chunk too big")
        chunk = self.rd.read_exact(size)
        if self.mail_from is None or not self.rcpts:
            self.send("503 5.5.1 No valid recipients")
            return
        if len(self.bdat) + size > MAX_DATA:
            self.bdat_too_big = True
        else:
            self.bdat += chunk
        if not last:
            self.send("250 2.0.0 %d octets received" % size)
            return
        self.finish(bytes(self.bdat), self.bdat_too_big)

    def finish(self, data, too_big):
        k = self.k
        if k.drop_at in ("dot", "data_body"):
            raise _Drop("drop_at %s (test)" % k.drop_at)
        if k.fail_at == "dot":
            self.reply(*k._fail_reply("dot"))
            self.reset()
            return
        if too_big:
            self.send("552 5.3.4 Message too big")
            self.reset()
            return
        k._deliver({
            "mail_from": self.mail_from, "mail_params": self.mail_params,
            "rcpts": list(self.rcpts), "rcpt_params": list(self.rcpt_params), "data": data,
            "tls": self.tls, "helo": self.helo, "auth": self.authed, "sni": self.sni,
            "peer": self.peer[0], "pipelined": self.pipelined, "conn": self.n,
        })
        self.send("250 2.0.0 Ok: queued as T%d" % len(k.messages))
        self.reset()

    def do_RSET(self, arg):
        self.reset()
        self.send("250 2.0.0 Ok")

    def do_NOOP(self, arg):
        self.send("250 2.0.0 Ok")

    def do_QUIT(self, arg):
        self.send("221 2.0.0 Bye")
        return "quit"
