"""Promise 3: one message stays one message. SMTP smuggling (SEC Consult, 2023) hides a second
MAIL/RCPT/DATA inside the body behind an end-of-data marker that one server honours and
another does not. DATA ends only at <CR><LF>.<CR><LF>; a bare CR or LF in the body is a
550 5.6.11. Every test checks the reply, that the session is still in step with the client,
and that neither the outer nor the smuggled message reached a mailbox.

Also promise 2's STARTTLS injection (CVE-2011-0411): commands pipelined behind STARTTLS
are discarded, never executed."""
import socket
import ssl
import time

import pytest

from conftest import (ModuleServer, client_tls_context, expect, expect_reply, qid_of,
                      simple_message)
from conftest import in_sync as conftest_in_sync

# the published sequences (and two more) that some servers take for the end of data
SEQUENCES = {
    "lf_dot_lf": "\n.\n",
    "lf_dot_crlf": "\n.\r\n",
    "crlf_dot_lf": "\r\n.\n",
    "cr_dot_cr": "\r.\r",
    "cr_dot_crlf": "\r.\r\n",
    "crlf_dot_cr": "\r\n.\r",
    "crlf_dot_space_crlf": None,  # ". " is text, not an end marker: accepted as one message
}
BAD = {k: v for k, v in SEQUENCES.items() if v is not None}


# ---- helpers (own to this file; the shared server and its clients: conftest) ----

world = ModuleServer(box_prefix="s")
shared, server, _close_dialogs = world.fixtures()
box, session = world.box, world.session


def in_sync(d):
    """HELP is answered with 214 by nothing else: the next reply must be its answer, and
    nothing may follow it (a smuggled transaction would have left replies queued)."""
    expect(d, "NOOP", 250, "2.0.0")
    conftest_in_sync(d)
    d.sock.settimeout(0.3)
    try:
        extra = d.sock.recv(4096)
    except (socket.timeout, TimeoutError):
        extra = b""
    d.sock.settimeout(10)
    assert extra == b"", extra


def smuggling_body(seq, outer, smuggled):
    """An outer message whose body hides, behind `seq`, a whole second transaction."""
    return (simple_message(subject="outer").replace("alice@example.test", outer)
            .replace("hello\r\n", "hello" + seq) +
            "MAIL FROM:<admin@example.test>\r\n"
            "RCPT TO:<%s>\r\n"
            "DATA\r\n"
            "From: admin@example.test\r\nTo: %s\r\nSubject: smuggled\r\n\r\n"
            "you have been smuggled\r\n" % (smuggled, smuggled))


def control(server, d, outer, smuggled):
    """A good message after the attack, in the same session, to the outer box: it arrives,
    alone; the smuggled box stays empty. Waiting for it also gives any wrongly accepted
    message of before time to arrive first."""
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % outer, 250, "2.1.5")
    expect(d, "DATA", 354)
    d.send(simple_message(subject="control") + "\r\n.\r\n")
    qid = qid_of(expect_reply(d, 250, "2.0.0"))
    server.wait_log("event=removed qid=%s" % qid)
    m = server.messages(outer)
    assert len(m) == 1 and b"Subject: control" in m[0], m
    assert server.messages(smuggled) == []


def assert_rejected(t):
    code = int(t[:3])
    assert 500 <= code < 600, t
    assert t.startswith("550 5.6.11 "), t


# ---- DATA ----

@pytest.mark.parametrize("name", sorted(BAD))
def test_bare_lf_smuggling(server, name):
    """The smuggled transaction follows one of the sequences, the real end follows it."""
    seq = BAD[name]
    outer, smuggled = box(server), box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % outer, 250, "2.1.5")
    expect(d, "DATA", 354)
    d.send(smuggling_body(seq, outer, smuggled) + "\r\n.\r\n")
    t = expect_reply(d, 550, "5.6.11")
    assert_rejected(t)
    in_sync(d)
    control(server, d, outer, smuggled)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bare_lf_smuggling_pipelined(server, name):
    """Everything in a single write: MAIL, RCPT, DATA, the body with its hidden message,
    the real end, and a NOOP."""
    seq = BAD[name]
    outer, smuggled = box(server), box(server)
    d = session(server)
    d.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<%s>\r\nDATA\r\n%s\r\n.\r\nNOOP\r\n" % (
        outer, smuggling_body(seq, outer, smuggled)))
    expect_reply(d, 250, "2.1.0")
    expect_reply(d, 250, "2.1.5")
    expect_reply(d, 354)
    assert_rejected(expect_reply(d, 550, "5.6.11"))
    expect_reply(d, 250, "2.0.0")
    in_sync(d)
    control(server, d, outer, smuggled)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bare_lf_smuggling_split_writes(server, name):
    """The sequence cut across TCP segments, one byte at a time around it: the reader keeps
    its state between reads."""
    seq = BAD[name]
    outer, smuggled = box(server), box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % outer, 250, "2.1.5")
    expect(d, "DATA", 354)
    d.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = smuggling_body(seq, outer, smuggled) + "\r\n.\r\n"
    cut = body.index(seq)
    d.send(body[:cut])
    for ch in body[cut:cut + len(seq) + 4]:
        time.sleep(0.01)
        d.send(ch)
    time.sleep(0.01)
    d.send(body[cut + len(seq) + 4:])
    assert_rejected(expect_reply(d, 550, "5.6.11"))
    in_sync(d)
    control(server, d, outer, smuggled)


def test_smuggling_sequence_at_the_very_end(server):
    """A body that ends in <LF>.<LF> alone is not finished: the server waits for the real
    end, and then rejects."""
    outer = box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % outer, 250, "2.1.5")
    expect(d, "DATA", 354)
    d.send(simple_message().replace("hello\r\n", "hello\n.\n"))
    d.sock.settimeout(1)
    with pytest.raises((socket.timeout, TimeoutError)):
        d.reply()
    d.sock.settimeout(10)
    d.send("\r\n.\r\n")
    assert_rejected(expect_reply(d, 550, "5.6.11"))
    in_sync(d)
    time.sleep(0.2)
    assert server.messages(outer) == []


def test_dot_space_is_text(server):
    """<CR><LF>. <CR><LF> is a line of text (dot unstuffed), not the end: one message."""
    outer, smuggled = box(server), box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % outer, 250, "2.1.5")
    expect(d, "DATA", 354)
    d.send(smuggling_body("\r\n. \r\n", outer, smuggled) + "\r\n.\r\n")
    qid = qid_of(expect_reply(d, 250, "2.0.0"))
    in_sync(d)
    d.cmd("QUIT")
    server.wait_log("event=removed qid=%s" % qid)
    m = server.messages(outer)
    assert len(m) == 1
    # the whole hidden transaction is body text of the one message
    assert b"hello\r\n \r\nMAIL FROM:<admin@example.test>\r\nRCPT TO:<" in m[0], m[0]
    assert b"Subject: smuggled" in m[0]
    assert server.messages(smuggled) == []


def test_dot_stuffing_keeps_one_message(server):
    """A stuffed ".." line with a command after it is text; only the real end ends."""
    outer, smuggled = box(server), box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % outer, 250, "2.1.5")
    expect(d, "DATA", 354)
    d.send(simple_message().replace("hello\r\n", "hello\r\n..\r\n..MAIL FROM:<x@y.test>\r\n"
                                    "RCPT TO:<%s>\r\n" % smuggled) + "\r\n.\r\n")
    qid = qid_of(expect_reply(d, 250, "2.0.0"))
    in_sync(d)
    server.wait_log("event=removed qid=%s" % qid)
    m = server.messages(outer)
    assert len(m) == 1 and m[0].endswith(
        b"hello\r\n.\r\n.MAIL FROM:<x@y.test>\r\nRCPT TO:<%s>\r\n\r\n" % smuggled.encode()), m
    assert server.messages(smuggled) == []


@pytest.mark.parametrize("bad", ["\n", "\r", "\r\r\n", "\n\r"])
def test_bare_cr_lf_anywhere_rejected(server, bad):
    """A bare CR or LF anywhere (headers, body, last line) is refused, whatever follows."""
    outer = box(server)
    d = session(server)
    for msg in ("Subject: x%s\r\n\r\nbody\r\n" % bad,
                "Subject: x\r\n\r\nbody%smore\r\n" % bad,
                "Subject: x\r\n\r\nlast line%s" % bad):
        expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
        expect(d, "RCPT TO:<%s>" % outer, 250, "2.1.5")
        expect(d, "DATA", 354)
        d.send(msg + ("" if msg.endswith("\r\n") else "\r\n") + ".\r\n")
        assert_rejected(expect_reply(d, 550, "5.6.11"))
        in_sync(d)
    time.sleep(0.2)
    assert server.messages(outer) == []


# ---- BDAT ----

@pytest.mark.parametrize("name", sorted(BAD))
def test_bdat_smuggling(server, name):
    """In BDAT the chunk is opaque (no end marker), but the bare CR/LF rule holds: the
    message is refused, nothing in it is taken for commands."""
    seq = BAD[name]
    outer, smuggled = box(server), box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % outer, 250, "2.1.5")
    msg = (smuggling_body(seq, outer, smuggled) + "\r\n.\r\n").encode()
    d.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
    assert_rejected(expect_reply(d, 550, "5.6.11"))
    in_sync(d)
    control(server, d, outer, smuggled)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bdat_smuggling_pipelined_chunks(server, name):
    """Pipelined, in two chunks cut inside the sequence, then a NOOP."""
    seq = BAD[name]
    outer, smuggled = box(server), box(server)
    d = session(server)
    msg = (smuggling_body(seq, outer, smuggled) + "\r\n.\r\n").encode()
    cut = msg.index(seq.encode()) + 1
    d.send(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<%s>\r\nBDAT %d\r\n%sBDAT %d LAST\r\n%s"
           b"NOOP\r\n" % (outer.encode(), cut, msg[:cut], len(msg) - cut, msg[cut:]))
    expect_reply(d, 250, "2.1.0")
    expect_reply(d, 250, "2.1.5")
    expect_reply(d, 250, "2.0.0")
    assert_rejected(expect_reply(d, 550, "5.6.11"))
    expect_reply(d, 250, "2.0.0")
    in_sync(d)
    control(server, d, outer, smuggled)


def test_bdat_end_marker_is_content(server):
    """<CR><LF>.<CR><LF> inside a BDAT chunk is content: one message holding the text."""
    outer, smuggled = box(server), box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % outer, 250, "2.1.5")
    msg = smuggling_body("\r\n.\r\n", outer, smuggled).encode()
    d.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
    qid = qid_of(expect_reply(d, 250, "2.0.0"))
    in_sync(d)
    server.wait_log("event=removed qid=%s" % qid)
    m = server.messages(outer)
    assert len(m) == 1 and m[0].endswith(msg), m
    assert server.messages(smuggled) == []


def test_bdat_chunk_shorter_than_sent(server):
    """Octets past a chunk's size are commands again (that is BDAT); a bare LF inside the
    counted chunk still spoils only that message, and replies stay in order."""
    outer, smuggled = box(server), box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % outer, 250, "2.1.5")
    chunk = b"Subject: x\r\n\r\nhi\n"
    d.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"RSET\r\n")
    assert_rejected(expect_reply(d, 550, "5.6.11"))
    expect_reply(d, 250, "2.0.0")  # RSET
    in_sync(d)
    control(server, d, outer, smuggled)


# ---- STARTTLS injection (CVE-2011-0411) ----

def test_starttls_injection(server):
    """Commands sent in the same write as STARTTLS are discarded: not answered in plaintext,
    not executed after the handshake."""
    outer = box(server)
    d = session(server)
    mark = server.log().count("event=starttls_injection")
    d.send("STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<%s>\r\nNOOP\r\n" % outer)
    expect_reply(d, 220, "2.0.0")
    # nothing more in plaintext: the next bytes are the TLS handshake
    assert d.buf == b"", d.buf
    d.sock = client_tls_context().wrap_socket(d.sock, server_hostname="mx.example.test")
    server.wait_log("event=starttls_injection", count=mark + 1)
    # no reply to the injected commands arrives over TLS either
    expect(d, "EHLO client.test", 250)
    # the injected MAIL was never executed: RCPT needs MAIL, MAIL is not nested
    expect(d, "RCPT TO:<%s>" % outer, 503, "5.5.1")
    expect(d, "DATA", 503, "5.5.1")
    expect(d, "MAIL FROM:<good@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % outer, 250, "2.1.5")
    expect(d, "DATA", 354)
    d.send(simple_message(subject="after tls") + "\r\n.\r\n")
    qid = qid_of(expect_reply(d, 250, "2.0.0"))
    expect(d, "HELP", 214, "2.0.0")
    assert d.buf == b""
    server.wait_log("event=removed qid=%s" % qid)
    m = server.messages(outer)
    assert len(m) == 1 and m[0].startswith(b"Return-Path: <good@sender.test>\r\n"), m


def test_starttls_injection_quit(server):
    """An injected QUIT would close the session: it must not."""
    d = session(server, port=server.ports["submission"])
    d.send("STARTTLS\r\nQUIT\r\n")
    expect_reply(d, 220, "2.0.0")
    d.sock = client_tls_context().wrap_socket(d.sock, server_hostname="mx.example.test")
    expect(d, "EHLO client.test", 250)
    expect(d, "HELP", 214, "2.0.0")
    assert d.buf == b""


def test_plaintext_after_220_not_executed(server):
    """Plaintext sent after the 220 and before the ClientHello: the handshake fails, the
    command is not executed, the worker lives on."""
    d = session(server)
    expect(d, "STARTTLS", 220, "2.0.0")
    d.send("QUIT\r\n")
    d.sock.settimeout(5)
    got = b""
    try:
        while True:
            x = d.sock.recv(4096)
            if not x:
                break
            got += x
    except (socket.timeout, TimeoutError, ConnectionResetError):
        pass
    assert b"221" not in got, got
    # the server still works
    d2 = session(server)
    expect(d2, "NOOP", 250, "2.0.0")


def test_plaintext_after_tls_close_notify_not_executed(server):
    """After the client ends TLS (close_notify), plaintext on the same socket is not read
    as commands."""
    outer = box(server)
    d = session(server)
    d.starttls()
    expect(d, "EHLO client.test", 250)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % outer, 250, "2.1.5")
    d.sock.settimeout(3)
    try:
        plain = d.sock.unwrap()
    except (ssl.SSLError, OSError, socket.timeout):
        plain = None
    if plain is not None:
        try:
            plain.sendall(b"DATA\r\nSubject: plain\r\n\r\nx\r\n.\r\nNOOP\r\n")
            plain.settimeout(3)
            got = b""
            while True:
                x = plain.recv(4096)
                if not x:
                    break
                got += x
        except (OSError, socket.timeout):
            got = b""
        assert b"354" not in got and b"250" not in got, got
    time.sleep(0.3)
    assert server.messages(outer) == []
