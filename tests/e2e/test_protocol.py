"""SMTP protocol conformance over real sockets: the command set and its sequence rules
(RFC 5321 4.1, 4.3.2), every MAIL/RCPT parameter we advertise (SIZE, 8BITMIME, SMTPUTF8,
DSN), BDAT (RFC 3030), PIPELINING (RFC 2920), STARTTLS and the submission listener
(RFC 3207, RFC 6409, RFC 8314), the Received header (RFC 5321 4.4, RFC 3848) and the mail
loop guard (RFC 5321 6.3). Each test checks exact reply codes with their enhanced status
codes (RFC 3463) and what did or did not reach a Maildir."""
import glob
import os
import ssl
import time
import warnings

import pytest

from conftest import (ModuleServer, client_tls_context, envelope, expect, expect_reply, in_sync,
                      qid_of, ready, simple_message)

# ---- helpers (own to this file; the shared server and its clients: conftest) ----

world = ModuleServer(box_prefix="p")
shared, server, _close_dialogs = world.fixtures()
box, dialog, session = world.box, world.dialog, world.session


def all_messages(server):
    """Every file in every Maildir new/ of the server, as {path: bytes}."""
    out = {}
    for p in sorted(glob.glob(os.path.join(server.data, "mail", "*", "*", "new", "*"))):
        with open(p, "rb") as f:
            out[p] = f.read()
    return out


def wait_any_message(server, n, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = all_messages(server)
        if len(m) >= n:
            return list(m.values())
        time.sleep(0.05)
    raise AssertionError("%d messages, wanted %d\n%s" % (len(all_messages(server)), n,
                                                          server.log()[-3000:]))


def settle(server, qids=(), timeout=10):
    """Waits until the queue has finished with every qid (delivered and removed)."""
    for q in qids:
        server.wait_log("event=removed qid=%s" % q, timeout=timeout)


def transaction(d, rcpts=("alice@example.test",), sender="a@sender.test", data=None,
                mail_params="", rcpt_params=""):
    envelope(d, rcpts, sender, mail_params, rcpt_params)
    expect(d, "DATA", 354)
    d.send((data if data is not None else simple_message()) + "\r\n.\r\n")
    return qid_of(expect_reply(d, 250, "2.0.0"))


def deliver(server, who, n=1):
    """The messages of a fresh mailbox once n have arrived (and no more)."""
    m = server.wait_messages(who, n)
    assert len(m) == n, (who, len(m))
    return m


# ---- greeting, EHLO, HELO ----

def test_greeting_is_220_with_hostname(server):
    d = dialog(server.ports["mx"])
    assert d.reply() == (220, "220 mx.example.test ESMTP sealmail")


def test_ehlo_lists_extensions_and_size(server):
    d = session(server, ehlo=None)
    t = expect(d, "EHLO client.test", 250)
    lines = t.split("\n")
    assert lines[0] == "250-mx.example.test"
    assert all(l.startswith("250-") for l in lines[:-1]) and lines[-1].startswith("250 ")
    kw = [l[4:] for l in lines[1:]]
    for ext in ("PIPELINING", "STARTTLS", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN",
                "SMTPUTF8", "CHUNKING"):
        assert ext in kw, t
    assert "SIZE 36700160" in kw, t  # default 35 MiB, RFC 1870 with the value
    # promise 2: no AUTH before TLS; BINARYMIME is not offered
    assert not any(k.startswith("AUTH") for k in kw), t
    assert "BINARYMIME" not in kw, t
    expect(d, "QUIT", 221, "2.0.0")
    assert d.closed()


def test_helo_plain_reply_and_no_extensions(server):
    who = box(server)
    d = session(server, ehlo=None)
    t = expect(d, "HELO client.test", 250)
    assert t == "250 mx.example.test", t
    # extensions need EHLO: parameters are refused, BDAT and STARTTLS are not available
    expect(d, "MAIL FROM:<a@sender.test> SIZE=100", 555, "5.5.4")
    expect(d, "STARTTLS", 502, "5.5.1")
    expect(d, "BDAT 5 LAST", 502, "5.5.1")
    # a plain HELO transaction works and is recorded "with SMTP"
    qid = transaction(d, rcpts=(who,))
    d.cmd("QUIT")
    m = deliver(server, who)[0].decode()
    assert "with SMTP id %s" % qid in m and "ESMTP" not in m, m


def test_ehlo_without_domain(server):
    d = session(server, ehlo=None)
    expect(d, "EHLO", 501, "5.5.4")
    expect(d, "HELO", 501, "5.5.4")
    # still not greeted
    expect(d, "MAIL FROM:<a@sender.test>", 503, "5.5.1")


def test_ehlo_resets_transaction(server):
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<alice@example.test>", 250, "2.1.5")
    expect(d, "EHLO again.test", 250)
    # RFC 5321 4.1.4: EHLO clears the transaction
    expect(d, "DATA", 503, "5.5.1")
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")


def test_verbs_case_insensitive(server):
    who = box(server)
    d = session(server, ehlo=None)
    expect(d, "ehlo client.test", 250)
    expect(d, "mail from:<a@sender.test>", 250, "2.1.0")
    expect(d, "rCpT tO:<%s>" % who, 250, "2.1.5")
    expect(d, "data", 354)
    d.send(simple_message(subject="lower") + "\r\n.\r\n")
    expect_reply(d, 250, "2.0.0")
    assert b"Subject: lower" in deliver(server, who)[0]


# ---- sequence rules ----

def test_mail_before_helo(server):
    d = session(server, ehlo=None)
    expect(d, "MAIL FROM:<a@sender.test>", 503, "5.5.1")
    expect(d, "RCPT TO:<alice@example.test>", 503, "5.5.1")
    expect(d, "DATA", 503, "5.5.1")
    # allowed before HELO: NOOP, RSET, VRFY, HELP, QUIT
    expect(d, "NOOP", 250, "2.0.0")
    expect(d, "RSET", 250, "2.0.0")
    expect(d, "VRFY alice", 252, "2.5.2")
    in_sync(d)


def test_nested_mail(server):
    who = box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "MAIL FROM:<b@sender.test>", 503, "5.5.1")
    expect(d, "RCPT TO:<%s>" % who, 250, "2.1.5")
    expect(d, "DATA", 354)
    d.send(simple_message() + "\r\n.\r\n")
    expect_reply(d, 250, "2.0.0")
    m = deliver(server, who)[0]
    # the first MAIL stayed in force, the nested one was ignored
    assert m.startswith(b"Return-Path: <a@sender.test>\r\n"), m


def test_rcpt_before_mail(server):
    d = session(server)
    expect(d, "RCPT TO:<alice@example.test>", 503, "5.5.1")
    expect(d, "DATA", 503, "5.5.1")
    in_sync(d)


def test_data_before_rcpt(server):
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    c, t = d.cmd("DATA")
    # RFC 5321 3.3: 503 (bad sequence) or 554 (no valid recipients)
    assert c in (503, 554) and t[4:].startswith("5.5.1 "), t
    in_sync(d)


def test_data_with_no_valid_rcpt(server):
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<nobody@example.test>", 550, "5.1.1")
    expect(d, "RCPT TO:<someone@elsewhere.test>", 554, "5.7.1")
    expect(d, "DATA", 554, "5.5.1")
    # no 354 was sent: the next line is a command again
    in_sync(d)
    expect(d, "RSET", 250, "2.0.0")
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")


def test_rset_clears_transaction(server):
    first, second = box(server), box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % first, 250, "2.1.5")
    expect(d, "RSET", 250, "2.0.0")
    expect(d, "DATA", 503, "5.5.1")
    expect(d, "RCPT TO:<%s>" % first, 503, "5.5.1")
    # not nested: the old MAIL is gone
    qid = transaction(d, rcpts=(second,))
    d.cmd("QUIT")
    settle(server, [qid])
    assert server.messages(first) == []
    assert len(server.messages(second)) == 1


def test_noop_and_noop_with_argument(server):
    d = session(server, ehlo=None)
    expect(d, "NOOP", 250, "2.0.0")
    expect(d, "NOOP anything at all", 250, "2.0.0")  # RFC 5321 4.1.1.9
    in_sync(d)


def test_quit_221_and_close(server):
    d = session(server)
    t = expect(d, "QUIT", 221, "2.0.0")
    assert d.closed(), "server did not close after 221: %r" % t


def test_quit_mid_transaction_delivers_nothing(server):
    who = box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % who, 250, "2.1.5")
    expect(d, "QUIT", 221, "2.0.0")
    assert d.closed()
    # a later message to the same box arrives alone
    d = session(server)
    qid = transaction(d, rcpts=(who,), data=simple_message(subject="later"))
    settle(server, [qid])
    m = server.messages(who)
    assert len(m) == 1 and b"Subject: later" in m[0]


def test_vrfy_same_answer_for_existing_and_unknown(server):
    d = session(server)
    replies = []
    for arg in ("alice", "alice@example.test", "<alice@example.test>", "nobody",
                "nobody@example.test", "postmaster"):
        replies.append(expect(d, "VRFY " + arg, 252, "2.5.2"))
    # RFC 5321 3.5.3 / 7.3: never tells whether a user exists
    assert len(set(replies)) == 1, replies
    assert "alice" not in replies[0] and "nobody" not in replies[0]
    # RFC 5321 4.1.1.6: the argument is not optional
    expect(d, "VRFY", 501, "5.5.4")


def test_expn_not_supported(server):
    d = session(server)
    expect(d, "EXPN staff", 502, "5.5.1")


def test_help(server):
    d = session(server, ehlo=None)
    t = expect(d, "HELP", 214, "2.0.0")
    for verb in ("EHLO", "MAIL", "RCPT", "DATA", "BDAT", "QUIT"):
        assert verb in t
    expect(d, "HELP MAIL", 214, "2.0.0")


def test_unknown_command(server):
    d = session(server)
    expect(d, "FROB nicate", 500, "5.5.2")
    expect(d, "XYZZY", 500, "5.5.2")
    expect(d, "MAILFROM:<a@sender.test>", 500, "5.5.2")
    expect(d, "", 500, "5.5.2")
    in_sync(d)


def test_bare_lf_command_rejected(server):
    d = session(server)
    d.send("NOOP\n")
    expect_reply(d, 500, "5.5.2")
    d.send("NOOP\rNOOP\r\n")
    expect_reply(d, 500, "5.5.2")
    in_sync(d)


# ---- MAIL / RCPT parameters ----

def test_mail_rcpt_all_parameters(server):
    one, two = box(server), box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test> SIZE=4000 BODY=8BITMIME RET=HDRS ENVID=QQ314159", 250,
           "2.1.0")
    expect(d, "RCPT TO:<%s> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;%s" % (one, one), 250,
           "2.1.5")
    expect(d, "RCPT TO:<%s> NOTIFY=NEVER" % two, 250, "2.1.5")
    expect(d, "DATA", 354)
    body = "8bit: caf\u00e9 na\u00efve \u00fc\r\n"
    d.send(simple_message(subject="params", body=body).encode("utf-8") + b"\r\n.\r\n")
    qid = qid_of(expect_reply(d, 250, "2.0.0"))
    d.cmd("QUIT")
    settle(server, [qid])
    for who in (one, two):
        m = server.messages(who)
        assert len(m) == 1
        # 8BITMIME: the octets pass through untouched
        assert body.encode("utf-8") in m[0], m[0]


@pytest.mark.parametrize("params", [
    " BODY=7BIT", " BODY=8bitmime", " SIZE=0", " SIZE=36700160", " RET=FULL", " ENVID=x+2By",
    " SMTPUTF8", " AUTH=<>", " size=10 body=8BITMIME ret=hdrs envid=abc",
])
def test_mail_parameter_accepted(server, params):
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>" + params, 250, "2.1.0")


@pytest.mark.parametrize("params", [
    " NOTIFY=SUCCESS", " NOTIFY=FAILURE,DELAY", " NOTIFY=NEVER", " ORCPT=rfc822;x@y.test",
    " ORCPT=rfc822;a+2Bb@example.test NOTIFY=FAILURE", " notify=success",
])
def test_rcpt_parameter_accepted(server, params):
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<alice@example.test>" + params, 250, "2.1.5")


def test_smtputf8_address_delivered(make_server):
    server = ready(make_server(mailboxes=("alice@example.test", "j\u00f6rg@example.test")))
    d = session(server)
    # without SMTPUTF8 a UTF-8 address is refused (RFC 6531 3.4)
    expect(d, "MAIL FROM:<m\u00fcller@sender.test>", 553, "5.6.7")
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<j\u00f6rg@example.test>", 553, "5.6.7")
    expect(d, "RSET", 250)
    expect(d, "MAIL FROM:<m\u00fcller@sender.test> SMTPUTF8", 250, "2.1.0")
    expect(d, "RCPT TO:<j\u00f6rg@example.test>", 250, "2.1.5")
    expect(d, "DATA", 354)
    d.send("From: m\u00fcller@sender.test\r\nSubject: gr\u00fc\u00dfe\r\n\r\nhall\u00f6\r\n.\r\n")
    expect_reply(d, 250, "2.0.0")
    d.cmd("QUIT")
    # the Maildir name of a UTF-8 mailbox is encoded: find the message by its content
    m = wait_any_message(server, 1)[0].decode("utf-8")
    assert m.startswith("Return-Path: <m\u00fcller@sender.test>\r\n"), m
    assert "\r\nDelivered-To: j\u00f6rg@example.test\r\n" in m, m
    assert "Subject: gr\u00fc\u00dfe\r\n" in m and "hall\u00f6\r\n" in m
    # RFC 6531 3.7.3: the Received protocol name says SMTPUTF8 was used
    assert " with UTF8SMTP id " in m, m
    assert server.messages("alice@example.test") == []


def test_binarymime_not_offered(server):
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test> BODY=BINARYMIME", 504, "5.5.4")


def test_unknown_parameter(server):
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test> FOO=BAR", 555, "5.5.4")
    expect(d, "MAIL FROM:<a@sender.test> XFORWARD", 555, "5.5.4")
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<alice@example.test> FOO=BAR", 555, "5.5.4")
    expect(d, "RCPT TO:<alice@example.test> SIZE=10", 555, "5.5.4")
    expect(d, "RCPT TO:<alice@example.test>", 250, "2.1.5")


@pytest.mark.parametrize("line", [
    "MAIL FROM:<a@sender.test> SIZE=abc",
    "MAIL FROM:<a@sender.test> BODY=9BIT",
    "MAIL FROM:<a@sender.test> RET=SOME",
    "MAIL FROM:<a@sender.test> SIZE=1 SIZE=2",
    "MAIL FROM:<a@sender.test> ENVID=" + "x" * 101,
])
def test_bad_parameter_value(server, line):
    d = session(server)
    expect(d, line, 501, "5.5.4")


@pytest.mark.parametrize("params", [" NOTIFY=BOGUS", " NOTIFY=NEVER,SUCCESS", " ORCPT=nocolon",
                                    " NOTIFY=SUCCESS NOTIFY=FAILURE"])
def test_bad_rcpt_parameter_value(server, params):
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<alice@example.test>" + params, 501, "5.5.4")


@pytest.mark.parametrize("addr", ["<a@@sender.test>", "<a b@sender.test>", "<.a@sender.test>",
                                  "<a@sender..test>", "<a@-sender.test>", "a@sender.test",
                                  "<a@sender.test"])
def test_bad_sender_syntax(server, addr):
    d = session(server)
    expect(d, "MAIL FROM:" + addr, 501, "5.1.7")


@pytest.mark.parametrize("addr", ["<>", "<x..y@example.test>", "<alice@>", "<@example.test>",
                                  "<alice@exa mple.test>", "alice@example.test"])
def test_bad_recipient_syntax(server, addr):
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:" + addr, 501, "5.1.3")


def test_null_sender_accepted(server):
    who = box(server)
    d = session(server)
    transaction(d, sender="", rcpts=(who,))
    d.cmd("QUIT")
    m = deliver(server, who)[0]
    assert m.startswith(b"Return-Path: <>\r\n"), m


def test_unknown_local_user(server):
    who = box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    t = expect(d, "RCPT TO:<nobody-%s>" % who, 550, "5.1.1")
    assert "nobody-%s" % who in t
    server.wait_log("to=<nobody-%s> reason=unknown_user" % who)
    # the transaction goes on with the good recipient only
    expect(d, "RCPT TO:<%s>" % who, 250, "2.1.5")
    expect(d, "DATA", 354)
    d.send(simple_message() + "\r\n.\r\n")
    qid = qid_of(expect_reply(d, 250, "2.0.0"))
    d.cmd("QUIT")
    settle(server, [qid])
    assert len(server.messages(who)) == 1
    accepted = [l for l in server.log().splitlines()
                if "event=accepted" in l and "qid=%s " % qid in l]
    assert len(accepted) == 1 and "nrcpt=1 " in accepted[0], accepted


def test_relay_denied(server):
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    for r in ("victim@elsewhere.test", "alice@example.test.evil.test", "alice@sub.example.test",
              "alice@[127.0.0.1]", "\"alice@example.test\"@elsewhere.test",
              "@example.test:victim@elsewhere.test", "alice@example.test@elsewhere.test"):
        c, t = d.cmd("RCPT TO:<%s>" % r)
        if r == "alice@example.test@elsewhere.test":
            # not an address at all; refusing it as bad syntax is fine too
            assert (c, t[4:9]) in ((554, "5.7.1"), (501, "5.1.3")), t
            continue
        assert c == 554 and t[4:].startswith("5.7.1 "), (r, t)
        assert "Relay access denied" in t, t
    server.wait_log("to=<victim@elsewhere.test> reason=relay_denied")
    expect(d, "DATA", 554, "5.5.1")


@pytest.mark.parametrize("rcpt", ["postmaster@example.test", "Postmaster", "postmaster",
                                  "POSTMASTER@EXAMPLE.TEST", "PostMaster"])
def test_postmaster_always_exists(server, rcpt):
    """RFC 5321 4.5.1: postmaster@ every local domain and the bare <Postmaster> exist; they
    land in the configured postmaster mailbox (postmaster@example.test, which has no row in
    the store)."""
    pm = "postmaster@example.test"
    before = len(server.messages(pm))
    d = session(server)
    subject = "for the postmaster via %s" % rcpt
    qid = transaction(d, rcpts=(rcpt,), data=simple_message(subject=subject))
    d.cmd("QUIT")
    settle(server, [qid])
    m = server.messages(pm)
    assert len(m) == before + 1
    new = [x for x in m if ("Subject: %s\r\n" % subject).encode() in x]
    assert len(new) == 1, m
    assert b"\r\nDelivered-To: postmaster@example.test\r\n" in new[0], new[0]


def test_postmaster_to_configured_mailbox(make_server):
    """postmaster = alice@example.test: postmaster@ and <Postmaster> both reach alice."""
    server = make_server(start=False)
    with open(server.conf) as f:
        conf = f.read()
    with open(server.conf, "w") as f:
        f.write(conf.replace("postmaster = postmaster@example.test",
                             "postmaster = alice@example.test"))
    server.start()
    ready(server)
    d = session(server)
    transaction(d, rcpts=("Postmaster",), data=simple_message(subject="bare"))
    transaction(d, rcpts=("postmaster@example.test",), data=simple_message(subject="domain"))
    d.cmd("QUIT")
    msgs = server.wait_messages("alice@example.test", 2)
    subjects = sorted("bare" if b"Subject: bare" in m else "domain" for m in msgs)
    assert subjects == ["bare", "domain"]
    assert server.messages("postmaster@example.test") == []


def test_one_copy_per_mailbox(make_server):
    """<Postmaster>, postmaster@ and an alias all resolve to one mailbox: one copy."""
    server = ready(make_server())
    d = session(server)
    transaction(d, rcpts=("Postmaster", "postmaster@example.test", "POSTMASTER@example.test"),
                data=simple_message(subject="once"))
    d.cmd("QUIT")
    server.wait_messages("postmaster@example.test", 1)
    time.sleep(1)
    assert len(server.messages("postmaster@example.test")) == 1


# ---- BDAT (RFC 3030) ----

def test_bdat_single_chunk_last(server):
    who = box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % who, 250, "2.1.5")
    msg = simple_message(subject="bdat one", body="one chunk\r\n").encode()
    d.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
    qid = qid_of(expect_reply(d, 250, "2.0.0"))
    in_sync(d)
    d.cmd("QUIT")
    m = deliver(server, who)[0]
    assert m.endswith(msg), m
    assert b"with ESMTP id %s" % qid.encode() in m


def test_bdat_several_chunks(server):
    who = box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % who, 250, "2.1.5")
    msg = simple_message(subject="bdat many", body="line one\r\nline two\r\n.\r\nline 4\r\n")
    msg = msg.encode()
    # chunks cut anywhere, also between CR and LF
    cut = [0, 7, msg.index(b"\r\n") + 1, 60, len(msg)]
    for a, b in zip(cut, cut[1:]):
        d.send(b"BDAT %d\r\n" % (b - a) + msg[a:b])
        t = expect_reply(d, 250, "2.0.0")
        assert "%d octets" % b in t, t
    d.send(b"BDAT 0 LAST\r\n")
    expect_reply(d, 250, "2.0.0")
    d.cmd("QUIT")
    m = deliver(server, who)[0]
    # no dot handling in BDAT: the "." line is content, delivered as is
    assert m.endswith(msg), m


def test_bdat_pipelined(server):
    who = box(server)
    d = session(server)
    msg = simple_message(subject="bdat pipelined").encode()
    half = len(msg) // 2
    d.send(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<%s>\r\n"
           b"BDAT %d\r\n%sBDAT %d LAST\r\n%sNOOP\r\n" % (who.encode(), half, msg[:half],
                                                       len(msg) - half, msg[half:]))
    expect_reply(d, 250, "2.1.0")
    expect_reply(d, 250, "2.1.5")
    expect_reply(d, 250, "2.0.0")
    t = expect_reply(d, 250, "2.0.0")
    assert "queued as" in t, t
    expect_reply(d, 250, "2.0.0")  # NOOP
    in_sync(d)
    assert deliver(server, who)[0].endswith(msg)


def test_bdat_without_recipients_consumes_chunk(server):
    who = box(server)
    d = session(server)
    # no MAIL at all: the chunk is read and dropped, never taken for commands
    evil = b"QUIT\r\n"
    d.send(b"BDAT %d LAST\r\n" % len(evil) + evil)
    c, t = d.reply()
    assert c in (503, 554) and t[4:].startswith("5.5.1 "), t
    in_sync(d)
    # MAIL but no accepted RCPT
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<nobody@example.test>", 550, "5.1.1")
    chunk = b"RCPT TO:<%s>\r\n" % who.encode()
    d.send(b"BDAT %d\r\n" % len(chunk) + chunk)
    c, t = d.reply()
    assert c in (503, 554) and t[4:].startswith("5.5.1 "), t
    in_sync(d)
    # the failed BDAT ended the transaction: a new one can start
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % who, 250, "2.1.5")
    d.send(b"BDAT 0 LAST\r\n")
    expect_reply(d, 250, "2.0.0")
    d.cmd("QUIT")
    # one (empty) message: our Received header only, nothing of the dropped chunks
    m = deliver(server, who)[0]
    assert m.count(b"Received: ") == 1 and b"RCPT TO" not in m and b"QUIT" not in m, m


def test_data_after_bdat_refused(server):
    first, second = box(server), box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % first, 250, "2.1.5")
    d.send(b"BDAT 10\r\nSubject: x")
    expect_reply(d, 250, "2.0.0")
    # RFC 3030 2: DATA (and RCPT) after BDAT in the same transaction are errors
    expect(d, "DATA", 503, "5.5.1")
    expect(d, "RCPT TO:<%s>" % second, 503, "5.5.1")
    expect(d, "RSET", 250, "2.0.0")
    # after RSET, DATA works again in a new transaction
    qid = transaction(d, rcpts=(second,))
    d.cmd("QUIT")
    settle(server, [qid])
    assert server.messages(first) == []
    assert len(server.messages(second)) == 1


def test_bdat_bad_size_closes(server):
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<alice@example.test>", 250, "2.1.5")
    # we cannot know how many octets follow: 501 and close (RFC 3030 2)
    expect(d, "BDAT -5 LAST", 501, "5.5.4")
    assert d.closed()


# ---- PIPELINING (RFC 2920) ----

def test_pipelining_replies_in_order(server):
    one, two = box(server), box(server)
    d = session(server)
    d.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<%s>\r\n"
           "RCPT TO:<nobody@example.test>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (one, two))
    expect_reply(d, 250, "2.1.0")
    expect_reply(d, 250, "2.1.5")
    expect_reply(d, 550, "5.1.1")
    expect_reply(d, 250, "2.1.5")
    expect_reply(d, 354)
    d.send(simple_message(subject="pipelined") + "\r\n.\r\n")
    qid = qid_of(expect_reply(d, 250, "2.0.0"))
    expect(d, "QUIT", 221)
    settle(server, [qid])
    assert len(server.messages(one)) == 1
    assert len(server.messages(two)) == 1


def test_pipelining_whole_session_one_write(server):
    """Everything, two messages and QUIT included, in one write."""
    one, two = box(server), box(server)
    d = session(server, ehlo=None)
    m1 = simple_message(subject="first")
    m2 = simple_message(subject="second")
    d.send("EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<%s>\r\n"
           "DATA\r\n%s\r\n.\r\nMAIL FROM:<b@sender.test>\r\nRCPT TO:<%s>\r\n"
           "DATA\r\n%s\r\n.\r\nQUIT\r\n" % (one, m1, two, m2))
    expect_reply(d, 250)
    expect_reply(d, 250, "2.1.0")
    expect_reply(d, 250, "2.1.5")
    expect_reply(d, 354)
    expect_reply(d, 250, "2.0.0")
    expect_reply(d, 250, "2.1.0")
    expect_reply(d, 250, "2.1.5")
    expect_reply(d, 354)
    expect_reply(d, 250, "2.0.0")
    expect_reply(d, 221, "2.0.0")
    assert d.closed()
    a = deliver(server, one)
    b = deliver(server, two)
    assert b"Subject: first" in a[0] and b"Subject: second" in b[0]


def test_pipelined_burst_then_quit_gets_every_reply(server):
    """Thousands of pipelined commands and QUIT in one write: every reply arrives, in
    order, before the close (a close that does not wait for the output to drain loses
    the tail)."""
    d = session(server)
    d.sock.settimeout(30)
    d.send("NOOP\r\n" * 3000 + "QUIT\r\n")
    for i in range(3000):
        c, t = d.reply()
        assert c == 250, (i, t)
    expect_reply(d, 221, "2.0.0")
    assert d.closed()


# ---- STARTTLS and the submission listeners ----

def test_submission_needs_starttls(server):
    who = box(server)
    d = session(server, port=server.ports["submission"], ehlo=None)
    t = expect(d, "EHLO client.test", 250)
    assert "STARTTLS" in t and "AUTH" not in t, t
    expect(d, "MAIL FROM:<a@sender.test>", 530, "5.7.0")
    expect(d, "AUTH PLAIN AGFsaWNlAHNlY3JldA==", 530, "5.7.0")
    expect(d, "AUTH LOGIN", 530, "5.7.0")
    d.starttls()
    # RFC 3207 4.2: the EHLO of before is forgotten
    expect(d, "MAIL FROM:<a@sender.test>", 503, "5.5.1")
    t = expect(d, "EHLO client.test", 250)
    assert "STARTTLS" not in t, t
    assert "AUTH PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS" in t, t
    # RFC 6409 4.3: submission wants AUTH before MAIL
    expect(d, "MAIL FROM:<a@sender.test>", 530, "5.7.0")
    d.auth()
    qid = transaction(d, rcpts=(who,))
    d.cmd("QUIT")
    m = deliver(server, who)[0].decode()
    assert "with ESMTPSA id %s" % qid in m


def test_auth_before_tls_refused_on_mx(server):
    d = session(server)
    expect(d, "AUTH PLAIN AGFsaWNlAHNlY3JldA==", 530, "5.7.0")
    in_sync(d)


def test_starttls_not_offered_on_implicit_tls(server):
    who = box(server)
    d = session(server, port=server.ports["submissions"], tls=True, ehlo=None)
    t = expect(d, "EHLO client.test", 250)
    assert "STARTTLS" not in t, t
    expect(d, "STARTTLS", 503, "5.5.1")
    # the session goes on over TLS
    d.auth()
    qid = transaction(d, rcpts=(who,))
    d.cmd("QUIT")
    m = deliver(server, who)[0].decode()
    assert "with ESMTPSA id %s" % qid in m and "(using TLSv1.3 with cipher" in m


def test_ehlo_after_starttls_has_no_starttls(server):
    d = session(server)
    d.starttls()
    t = expect(d, "EHLO client.test", 250)
    assert "STARTTLS" not in t, t
    for ext in ("PIPELINING", "8BITMIME", "CHUNKING", "SMTPUTF8"):
        assert ext in t
    expect(d, "STARTTLS", 503, "5.5.1")
    in_sync(d)


def test_starttls_with_argument(server):
    d = session(server)
    expect(d, "STARTTLS now", 501, "5.5.4")
    in_sync(d)


def test_starttls_forgets_transaction(server):
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<alice@example.test>", 250, "2.1.5")
    d.starttls()
    expect(d, "EHLO client.test", 250)
    expect(d, "RCPT TO:<alice@example.test>", 503, "5.5.1")
    expect(d, "DATA", 503, "5.5.1")


def test_tls_below_1_2_refused(server):
    """Promise 2: TLS below 1.2 is refused (the server says so in its log, so the client
    did offer TLS 1.1)."""
    ctx = client_tls_context()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot offer TLS 1.1")
    needle = "event=tls_error"
    before = server.log().count("unsupported protocol")
    d = session(server)
    expect(d, "STARTTLS", 220)
    with pytest.raises((ssl.SSLError, OSError)) as e:
        ctx.wrap_socket(d.sock, server_hostname="mx.example.test")
    if "NO_PROTOCOLS_AVAILABLE" in str(e.value) or "no protocols available" in str(e.value):
        pytest.skip("this OpenSSL cannot offer TLS 1.1: %s" % e.value)
    # the server refused it (and says why), not the client
    server.wait_log("unsupported protocol", count=before + 1)
    line = [l for l in server.log().splitlines() if "unsupported protocol" in l][-1]
    assert needle in line, line


# ---- Received header ----

def received_of(m):
    """The first (our) Received header, with its folding."""
    m = m.decode("utf-8", "replace")
    start = m.index("Received: ")
    end = start
    while True:
        end = m.index("\r\n", end) + 2
        if m[end] not in " \t":
            break
    return m[start:end]


def test_received_plain_esmtp(server):
    who = box(server)
    d = session(server)
    qid = transaction(d, rcpts=(who,))
    d.cmd("QUIT")
    r = received_of(deliver(server, who)[0])
    assert r.startswith("Received: from client.test (unknown [127.0.0.1])"), r
    assert "by mx.example.test (sealmail) with ESMTP id %s" % qid in r, r
    assert "for <%s>;" % who in r, r
    assert "using" not in r and "TLS" not in r, r


def test_received_esmtps_tls13(server):
    who = box(server)
    d = session(server)
    d.starttls()
    version, cipher = d.sock.version(), d.sock.cipher()[0]
    expect(d, "EHLO client.test", 250)
    qid = transaction(d, rcpts=(who,))
    d.cmd("QUIT")
    r = received_of(deliver(server, who)[0])
    assert version == "TLSv1.3"
    assert "(using TLSv1.3 with cipher %s" % cipher in r, r
    assert "with ESMTPS id %s" % qid in r, r
    server.wait_log("event=accepted")
    line = [l for l in server.log().splitlines() if "event=accepted" in l and qid in l][0]
    assert "TLSv1.3" in line and cipher in line, line


def test_received_esmtps_tls12(server):
    one, two = box(server), box(server)
    ctx = client_tls_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    d = session(server)
    expect(d, "STARTTLS", 220)
    d.sock = ctx.wrap_socket(d.sock, server_hostname="mx.example.test")
    version, cipher = d.sock.version(), d.sock.cipher()[0]
    assert version == "TLSv1.2"
    # forward-secret AEAD suites only
    assert cipher.startswith("ECDHE-") or cipher.startswith("DHE-"), cipher
    assert "GCM" in cipher or "CHACHA20" in cipher, cipher
    expect(d, "EHLO client.test", 250)
    qid = transaction(d, rcpts=(one, two))
    d.cmd("QUIT")
    r = received_of(deliver(server, one)[0])
    assert "(using TLSv1.2 with cipher %s" % cipher in r, r
    assert "with ESMTPS id %s" % qid in r, r
    # two recipients: no "for" clause naming one of them to the other
    assert "for <" not in r, r
    deliver(server, two)


def test_received_helo_names_sanitised(server):
    who = box(server)
    d = session(server, ehlo=None)
    expect(d, "EHLO evil(x)\\;<y>", 250)
    transaction(d, rcpts=(who,))
    d.cmd("QUIT")
    r = received_of(deliver(server, who)[0])
    assert r.startswith("Received: from evil_x____y_ (unknown [127.0.0.1])"), r


# ---- loop guard (RFC 5321 6.3) ----

def loop_message(n, subject=None):
    hops = "".join("Received: from hop%d.test by hop%d.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                   % (i, i + 1) for i in range(n))
    return hops + simple_message(subject=subject or "loop %d" % n)


def test_loop_guard_51_received_rejected(server):
    who = box(server)
    d = session(server)
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % who, 250, "2.1.5")
    expect(d, "DATA", 354)
    d.send(loop_message(51) + "\r\n.\r\n")
    expect_reply(d, 554, "5.4.6")
    server.wait_log("reason=\"mail loop\" received=51")
    in_sync(d)
    # the limit is exact: 50 hops pass, in the same session
    qid = transaction(d, rcpts=(who,), data=loop_message(50))
    # case-insensitive field name, folded lines count once
    folded = "".join("RECEIVED: from h%d\r\n\tby h%d; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                     % (i, i) for i in range(51)) + simple_message()
    expect(d, "MAIL FROM:<a@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % who, 250, "2.1.5")
    expect(d, "DATA", 354)
    d.send(folded + "\r\n.\r\n")
    expect_reply(d, 554, "5.4.6")
    d.cmd("QUIT")
    settle(server, [qid])
    msgs = server.messages(who)
    assert len(msgs) == 1 and b"Subject: loop 50" in msgs[0]


def test_loop_guard_via_bdat(server):
    who = box(server)
    d = session(server)
    envelope(d, [who])
    msg = loop_message(51).encode()
    d.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
    expect_reply(d, 554, "5.4.6")
    in_sync(d)
    qid = transaction(d, rcpts=(who,), data=simple_message(subject="after"))
    d.cmd("QUIT")
    settle(server, [qid])
    msgs = server.messages(who)
    assert len(msgs) == 1 and b"Subject: after" in msgs[0]


def test_received_in_body_not_counted(server):
    who = box(server)
    d = session(server)
    body = "".join("Received: quoted %d\r\n" % i for i in range(60))
    transaction(d, rcpts=(who,), data=simple_message(subject="quoted", body=body))
    d.cmd("QUIT")
    deliver(server, who)
