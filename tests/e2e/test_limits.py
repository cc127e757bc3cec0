"""Promise 4: everything from the network is bounded. Each bound is exceeded on purpose and
must give its reply code (with the RFC 3463 enhanced code), be counted in the log
("event=limit limit=..."), and leave nothing delivered that should not be; where the
bound allows the session to go on, the session must still be in step with the client."""
import functools
import glob
import os
import socket
import time

from conftest import (ModuleServer, envelope, expect, expect_reply, in_sync, qid_of, ready,
                      simple_message)

MAX_SIZE = 10240  # [limits] message_size = 10K on the shared server
MAX_RCPTS = 3
MAX_ERRORS = 5
SHARED_LIMITS = ("[limits]\nmessage_size = 10K\nrecipients = %d\nerrors = %d\n"
                 "idle_timeout = 10s\n" % (MAX_RCPTS, MAX_ERRORS))


# ---- helpers (own to this file; the shared server and its clients: conftest) ----

world = ModuleServer(extra=SHARED_LIMITS, box_prefix="l")
shared, server, _close_dialogs = world.fixtures()
box, dialog, session = world.box, world.dialog, world.session
expect = functools.partial(expect, shown=80)


class LogMark:
    """Counts a log needle from now on: wait() for one more than there was."""

    def __init__(self, server, needle):
        self.server, self.needle = server, needle
        self.n = server.log().count(needle)

    def wait(self, more=1):
        self.server.wait_log(self.needle, count=self.n + more)


def settle(server, qid):
    server.wait_log("event=removed qid=%s" % qid)


def begin_data(d, rcpts):
    envelope(d, rcpts, shown=80)
    expect(d, "DATA", 354)


def control_message(server, d, who, subject="control"):
    """A good message after the bad one, in the same session: it arrives, alone."""
    begin_data(d, [who])
    d.send(simple_message(subject=subject) + "\r\n.\r\n")
    qid = qid_of(expect_reply(d, 250, "2.0.0"))
    settle(server, qid)
    m = server.messages(who)
    assert len(m) == 1 and ("Subject: %s\r\n" % subject).encode() in m[0], m
    return qid


def wait_sessions_gone(server, timeout=10):
    """Every session the server saw has ended (the per-IP count is back to zero)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = server.log()
        if log.count("event=disconnect") >= log.count("event=connect"):
            return
        time.sleep(0.05)
    raise AssertionError("sessions still open:\n" + server.log()[-3000:])


# ---- command lines (RFC 5321 4.5.3.1.4) ----

def test_command_line_over_512(server):
    d = session(server)
    mark = LogMark(server, "event=limit limit=command_line")
    # exactly 512 octets with CRLF: fine
    expect(d, "NOOP " + "x" * (512 - 2 - 5), 250, "2.0.0")
    # one more: 500 5.5.6, and the session goes on
    expect(d, "NOOP " + "x" * (512 - 2 - 5 + 1), 500, "5.5.6")
    mark.wait()
    for line in ("VRFY " + "a" * 600, "HELP " + "h" * 1000, "EHLO " + "e" * 700,
                 "XUNKNOWN " + "u" * 600):
        expect(d, line, 500, "5.5.6")
    in_sync(d)
    expect(d, "QUIT", 221)


def test_mail_rcpt_may_exceed_512(server):
    """RFC 5321 4.5.3.1.4 / RFC 3461: MAIL and RCPT with parameters may be longer."""
    who = box(server, prefix="long-" + "n" * 40)
    d = session(server)
    envid = "E" * 100
    line = "MAIL FROM:<%s@%s.sender.test> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=%s AUTH=%s" % (
        "s" * 64, ".".join(["d" * 55] * 3), envid, "u" * 64 + "@" + "v" * 100 + ".test")
    assert len(line) + 2 > 512
    expect(d, line, 250, "2.1.0")
    orcpt = "rfc822;" + "o" * 64 + "@" + ".".join(["x" * 60] * 6) + ".test"  # 496 octets
    line = "RCPT TO:<%s> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=%s" % (who, orcpt)
    assert len(line) + 2 > 512
    expect(d, line, 250, "2.1.5")
    expect(d, "DATA", 354)
    d.send(simple_message() + "\r\n.\r\n")
    qid = qid_of(expect_reply(d, 250, "2.0.0"))
    settle(server, qid)
    assert len(server.messages(who)) == 1


def test_line_over_2048_without_lf_closes(server):
    d = session(server)
    mark = LogMark(server, "event=limit limit=command_line")
    d.send("MAIL FROM:<" + "a" * 5000)
    expect_reply(d, 500, "5.5.6")
    assert d.closed()
    mark.wait()


def test_line_over_2048_with_lf_closes(server):
    """A MAIL line of 2049+ octets cannot be a command: the reader never buffers it whole."""
    d = session(server)
    d.send("MAIL FROM:<a@sender.test> ENVID=" + "a" * 2100 + "\r\nNOOP\r\n")
    expect_reply(d, 500, "5.5.6")
    assert d.closed()
    assert b"250" not in d.buf


def test_endless_line_is_not_buffered(server):
    """1 MB without LF: answered and closed at the cap, not read to the end."""
    d = session(server)
    try:
        d.sock.sendall(b"X" * (1 << 20))
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        c, t = d.reply()
        assert c == 500 and t[4:].startswith("5.5.6 "), t
    except (ConnectionResetError, EOFError):
        pass  # the 500 may be lost to the RST of the unread rest; the close is what counts
    assert d.closed()


# ---- text lines in DATA (RFC 5321 4.5.3.1.6) ----

def test_text_line_over_1000_in_data(server):
    who = box(server)
    d = session(server)
    mark = LogMark(server, "event=limit limit=text_line")
    begin_data(d, [who])
    d.send(simple_message(subject="long", body="y" * 999 + "\r\nend\r\n") + "\r\n.\r\n")
    expect_reply(d, 500, "5.5.6")
    mark.wait()
    in_sync(d)
    # a long header line too
    begin_data(d, [who])
    d.send("Subject: " + "z" * 1000 + "\r\n\r\nbody\r\n.\r\n")
    expect_reply(d, 500, "5.5.6")
    # exactly 1000 octets with CRLF pass; a stuffed leading dot is not counted
    begin_data(d, [who])
    d.send(simple_message(subject="edge", body="y" * 998 + "\r\n.." + "d" * 997 + "\r\n")
           + "\r\n.\r\n")
    qid = qid_of(expect_reply(d, 250, "2.0.0"))
    settle(server, qid)
    m = server.messages(who)
    assert len(m) == 1 and b"Subject: edge" in m[0], m
    assert b"\r\n" + b"y" * 998 + b"\r\n." + b"d" * 997 + b"\r\n" in m[0]


def test_text_line_over_1000_in_bdat(server):
    who = box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % who, 250, "2.1.5")
    msg = simple_message(body="q" * 1500 + "\r\n").encode()
    d.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
    expect_reply(d, 500, "5.5.6")
    in_sync(d)
    control_message(server, d, who)


# ---- message size (RFC 1870) ----

def test_ehlo_advertises_size_limit(server):
    d = session(server, ehlo=None)
    t = expect(d, "EHLO client.test", 250)
    assert "250-SIZE %d" % MAX_SIZE in t, t


def test_size_parameter_over_limit(server):
    d = session(server)
    mark = LogMark(server, "event=limit limit=message_size")
    expect(d, "MAIL FROM:<a@sender.test> SIZE=%d" % (MAX_SIZE + 1), 552, "5.3.4")
    mark.wait()
    # no transaction was opened
    expect(d, "RCPT TO:<alice@example.test>", 503, "5.5.1")
    expect(d, "MAIL FROM:<a@sender.test> SIZE=%d" % MAX_SIZE, 250, "2.1.0")


def test_size_parameter_20_digits(server):
    """RFC 1870: size-value = 1*20DIGIT; a 20-digit size is valid syntax and too big."""
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test> SIZE=99999999999999999999", 552, "5.3.4")
    expect(d, "MAIL FROM:<a@sender.test> SIZE=999999999999999999999", 501, "5.5.4")


def sized_message(n, subject="sized"):
    """A message of exactly n octets as the client sends it (before the end marker); the
    size we count excludes our own Received header."""
    head = simple_message(subject=subject, body="")
    rem = n - len(head)
    assert rem >= 2
    lines = []
    while rem > 0:
        k = min(rem, 80)
        if rem - k == 1:
            k -= 1  # the last line needs at least its CRLF
        lines.append("b" * (k - 2) + "\r\n")
        rem -= k
    msg = head + "".join(lines)
    assert len(msg) == n
    return msg


def test_message_size_over_limit_data(server):
    who = box(server)
    d = session(server)
    mark = LogMark(server, "event=limit limit=message_size")
    begin_data(d, [who])
    d.send(sized_message(MAX_SIZE + 1, subject="big") + ".\r\n")
    expect_reply(d, 552, "5.3.4")
    mark.wait()
    in_sync(d)
    # far over, with SIZE understated: the body is still refused, the reader stays in step
    expect(d, "MAIL FROM:<a@sender.test> SIZE=100", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % who, 250, "2.1.5")
    expect(d, "DATA", 354)
    d.send(sized_message(MAX_SIZE * 20, subject="huge") + ".\r\n")
    expect_reply(d, 552, "5.3.4")
    in_sync(d)
    # exactly the limit passes
    begin_data(d, [who])
    d.send(sized_message(MAX_SIZE, subject="exact") + ".\r\n")
    qid = qid_of(expect_reply(d, 250, "2.0.0"))
    settle(server, qid)
    m = server.messages(who)
    assert len(m) == 1 and b"Subject: exact" in m[0]


def test_message_size_over_limit_bdat(server):
    who = box(server)
    d = session(server)
    envelope(d, [who], shown=80)
    msg = sized_message(MAX_SIZE + 1000).encode()
    half = MAX_SIZE // 2
    d.send(b"BDAT %d\r\n" % half + msg[:half])
    expect_reply(d, 250, "2.0.0")
    mark = LogMark(server, "event=limit limit=message_size")
    # the chunk that crosses the limit gets the 552 at once (RFC 3030 2: 5xx ends it)
    rest = msg[half:]
    d.send(b"BDAT %d LAST\r\n" % len(rest) + rest)
    expect_reply(d, 552, "5.3.4")
    mark.wait()
    in_sync(d)
    control_message(server, d, who)


# ---- recipients (RFC 5321 4.5.3.1.8) ----

def test_recipients_over_limit(server):
    boxes = [box(server) for _ in range(MAX_RCPTS + 1)]
    d = session(server)
    mark = LogMark(server, "event=limit limit=recipients")
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    for b in boxes[:MAX_RCPTS]:
        expect(d, "RCPT TO:<%s>" % b, 250, "2.1.5")
    expect(d, "RCPT TO:<%s>" % boxes[-1], 452, "4.5.3")
    mark.wait()
    # a pipelined burst past the limit: each gets 452, replies stay in order
    d.send("RCPT TO:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (boxes[-1], boxes[0]))
    expect_reply(d, 452, "4.5.3")
    expect_reply(d, 452, "4.5.3")
    expect_reply(d, 354)
    d.send(simple_message(subject="three") + "\r\n.\r\n")
    qid = qid_of(expect_reply(d, 250, "2.0.0"))
    settle(server, qid)
    for b in boxes[:MAX_RCPTS]:
        m = server.messages(b)
        assert len(m) == 1 and b"Subject: three" in m[0]
    assert server.messages(boxes[-1]) == []


# ---- errors per session ----

def test_errors_per_session(server):
    d = session(server)
    mark = LogMark(server, "event=limit limit=errors")
    for _ in range(MAX_ERRORS):
        expect(d, "BOGUS", 500, "5.5.2")
    # one more error: its own reply, then 421 and the close
    expect(d, "BOGUS", 500, "5.5.2")
    expect_reply(d, 421, "4.7.0")
    assert d.closed()
    mark.wait()


def test_errors_per_session_pipelined(server):
    """The same in one write: every reply, then the 421, then the close."""
    d = session(server)
    d.send("BOGUS\r\n" * (MAX_ERRORS + 1) + "NOOP\r\n" * 50)
    for _ in range(MAX_ERRORS + 1):
        expect_reply(d, 500, "5.5.2")
    expect_reply(d, 421, "4.7.0")
    try:
        assert d.closed()
    except ConnectionResetError:
        pass  # the unread NOOPs may turn the close into a reset
    assert b"250" not in d.buf, d.buf


def test_errors_count_unknown_recipients(server):
    """Recipient harvesting: unknown users are errors too."""
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    for i in range(MAX_ERRORS):
        expect(d, "RCPT TO:<guess%d@example.test>" % i, 550, "5.1.1")
    expect(d, "RCPT TO:<guess-last@example.test>", 550, "5.1.1")
    expect_reply(d, 421, "4.7.0")
    assert d.closed()


def test_good_commands_do_not_count_as_errors(server):
    d = session(server)
    for _ in range(MAX_ERRORS):
        expect(d, "BOGUS", 500, "5.5.2")
    # many good commands between do not reset the count, nor add to it
    for _ in range(20):
        expect(d, "NOOP", 250, "2.0.0")
    expect(d, "BOGUS", 500, "5.5.2")
    expect_reply(d, 421, "4.7.0")
    assert d.closed()


# ---- commands per session ----

def test_commands_per_session(server):
    """LIM_COMMANDS_PER_SESSION (10000): an endless NOOP loop is cut off."""
    d = session(server, ehlo=None)  # EHLO would be command 1
    mark = LogMark(server, "event=limit limit=commands")
    d.sock.settimeout(30)
    d.send(b"NOOP\r\n" * 10001)
    for _ in range(10000):
        c, t = d.reply()
        assert c == 250, t
    expect_reply(d, 421, "4.7.0")
    assert d.closed()
    mark.wait()


# ---- time ----

def test_idle_timeout(server):
    """idle_timeout = 10s: 421 4.4.2 and close, in command state (before and after EHLO,
    over TLS) and in the middle of DATA (nothing delivered). Run side by side."""
    who = box(server)
    mark = LogMark(server, "event=limit limit=idle_timeout")
    idle = []
    d = dialog(server.ports["mx"], timeout=20)
    assert d.reply()[0] == 220
    idle.append(d)
    d = session(server)
    d.sock.settimeout(20)
    idle.append(d)
    d = session(server)
    d.starttls()
    d.sock.settimeout(20)
    expect(d, "EHLO client.test", 250)
    idle.append(d)
    d = session(server)
    d.sock.settimeout(20)
    begin_data(d, [who])
    d.send(simple_message(subject="never finished"))
    idle.append(d)
    t0 = time.time()
    for d in idle:
        expect_reply(d, 421, "4.4.2")
        assert d.closed()
    waited = time.time() - t0
    assert 7 <= waited <= 15, waited
    mark.wait(len(idle))
    time.sleep(0.3)
    assert server.messages(who) == []


# ---- NUL ----

def test_nul_in_command(server):
    d = session(server)
    mark = LogMark(server, "reason=nul_in_command")
    d.send(b"NOOP\x00\r\n")
    expect_reply(d, 500, "5.5.2")
    mark.wait()
    d.send(b"MAIL FROM:<a\x00b@sender.test>\r\n")
    expect_reply(d, 500, "5.5.2")
    d.send(b"\x00\r\n")
    expect_reply(d, 500, "5.5.2")
    in_sync(d)
    # no MAIL was taken
    expect(d, "RCPT TO:<alice@example.test>", 503, "5.5.1")


def test_nul_in_data(server):
    who = box(server)
    d = session(server)
    begin_data(d, [who])
    d.send(b"Subject: nul\r\n\r\nbefore\x00after\r\n.\r\n")
    expect_reply(d, 550, "5.6.0")
    server.wait_log("reason=\"NUL octet in message\"")
    in_sync(d)
    # BDAT without BINARYMIME: the same
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % who, 250, "2.1.5")
    msg = b"Subject: nul\r\n\r\n\x00\r\n"
    d.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
    expect_reply(d, 550, "5.6.0")
    in_sync(d)
    control_message(server, d, who)


# ---- connections ----

def test_connections_per_ip(make_server):
    server = ready(make_server(extra="[limits]\nconnections_per_ip = 3\n"))
    wait_sessions_gone(server)
    mark = LogMark(server, "event=limit limit=connections_per_ip")
    held = [session(server, ehlo=None) for _ in range(3)]
    # the 4th from 127.0.0.1 is refused, on any listener
    for port in (server.ports["mx"], server.ports["submission"]):
        d = dialog(port)
        t = expect_reply(d, 421, "4.7.0")
        assert "127.0.0.1" in t, t
        assert d.closed()
    mark.wait(2)
    # another address is not affected (the listener is 127.0.0.1, the source 127.0.0.2)
    other = session(server, src="127.0.0.2")
    expect(other, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    # the held sessions still work
    for d in held:
        expect(d, "NOOP", 250, "2.0.0")
    # one leaves: a new connection from 127.0.0.1 is let in again
    expect(held[0], "QUIT", 221)
    assert held[0].closed()
    deadline = time.time() + 5
    while True:
        d = dialog(server.ports["mx"])
        c, t = d.reply()
        if c == 220:
            break
        assert c == 421 and time.time() < deadline, t
        time.sleep(0.1)
    expect(d, "EHLO client.test", 250)


def test_connections_total(make_server):
    server = ready(make_server(workers=1, extra="[limits]\nconnections = 3\n"), workers=1)
    wait_sessions_gone(server)
    mark = LogMark(server, "event=limit limit=connections ")
    held = [session(server, ehlo=None, src="127.0.0.%d" % i) for i in (2, 3, 4)]
    d = dialog(server.ports["mx"], src="127.0.0.5")
    expect_reply(d, 421, "4.7.0")
    assert d.closed()
    mark.wait()
    for h in held:
        expect(h, "NOOP", 250, "2.0.0")


def test_connections_total_is_server_wide(make_server):
    """[limits] connections counts "all listeners together" — and all workers together:
    with 2 workers (client addresses steered to both) a 4th connection must still be
    refused when connections = 3."""
    server = ready(make_server(workers=2, extra="[limits]\nconnections = 3\n"))
    wait_sessions_gone(server)
    held = [session(server, ehlo=None, src="127.0.0.%d" % i) for i in (2, 3, 4)]
    d = dialog(server.ports["mx"], src="127.0.0.5")
    c, t = d.reply()
    assert c == 421 and t[4:].startswith("4.7.0 "), (
        "4th connection accepted with connections = 3 (limit is per worker?): %s" % t)
    for h in held:
        expect(h, "NOOP", 250, "2.0.0")
