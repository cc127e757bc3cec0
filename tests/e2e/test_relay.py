"""Relaying for authenticated customers (issue 3): an authenticated login sends to any
domain, but only from its account's sending domains (envelope and From: header); nobody
relays without AUTH; and the plan's hourly limit, counted per accepted recipient, exact
under concurrency, kept across restarts, given back when a transaction fails, and changed
at once by a plan change.

One server for most tests; the tests on limits use their own accounts (counters are per
account), except the concurrency test, which has its own server and the account testacct."""
import base64
import glob
import itertools
import json
import os
import re
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import (TEST_LOGIN, TEST_PASSWORD, Dialog, Server, ready, run_cli, simple_message)

LIMIT_RE = re.compile(r"^451 4\.7\.1 <([^>]+)>: hourly sending limit reached: plan (\S+) allows "
                      r"(\d+) recipients per hour; capacity frees up in (\d+) seconds$")


def check_limit(text, plan, limit):
    """A 451 of the hourly limit, naming the plan and the limit; every count of these tests
    is from the last minute or two, so capacity frees up in a little less than an hour."""
    m = LIMIT_RE.match(text)
    assert m, text
    assert m.group(2) == plan and m.group(3) == str(limit), text
    assert 3400 <= int(m.group(4)) <= 3600, text
    return m.group(1)


_open = []


@pytest.fixture(autouse=True)
def _close_clients():
    # an open session would hold the server's SIGTERM for the whole shutdown grace
    yield
    while _open:
        _open.pop().close()


def session(server, kind="submissions", src=None, login=TEST_LOGIN, password=TEST_PASSWORD):
    """A Dialog past the greeting, EHLO, TLS and (with a login) AUTH."""
    port = server.ports["mx" if kind.startswith("mx") else kind]
    d = Dialog(port, tls=kind == "submissions", src=src)
    _open.append(d)
    code, text = d.reply()
    assert code == 220, text
    assert d.cmd("EHLO client.test")[0] == 250
    if kind in ("submission", "mx-tls"):
        d.starttls()
        assert d.cmd("EHLO client.test")[0] == 250
    if login:
        d.auth(login, password)
    return d


def expect(d, line, code, enh=None):
    c, t = d.cmd(line)
    assert c == code, "%r -> %s" % (line, t)
    if enh is not None:
        assert t.split("\n")[-1][4:].startswith(enh + " "), "%r -> %s (wanted %s)" % (line, t, enh)
    return t


def message(frm="a@sender.test", to="alice@example.test", subject="relay test"):
    return "From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\nhello\r\n" % (frm, to, subject)


def data(d, msg, code=250, enh=None):
    expect(d, "DATA", 354)
    d.send(msg + "\r\n.\r\n")
    c, t = d.reply()
    assert c == code, t
    if enh:
        assert t[4:].startswith(enh + " "), t
    return t


def queue_files(server):
    return sorted(p for p in glob.glob(os.path.join(server.data, "spool", "queue", "*"))
                  if not p.endswith(".state"))


def usage(server, account):
    p = run_cli(["account", "usage", account], conf=server.conf)
    j = json.loads(run_cli(["account", "usage", account, "--json"], conf=server.conf).stdout)
    return p.stdout.strip(), j


_n = itertools.count(1)


class Account:
    """A new account on its own plan, with one sending domain and one login."""

    def __init__(self, server, limit, plan=None):
        n = next(_n)
        self.name = "acct%d" % n
        self.plan = plan or "plan%d" % n
        self.domain = "d%d.test" % n
        self.login = "login%d@%s" % (n, self.domain)
        self.password = "password-%d" % n
        self.sender = "app@" + self.domain
        run_cli(["plan", "set", self.plan, str(limit)], conf=server.conf)
        run_cli(["account", "add", self.name, "--plan", self.plan], conf=server.conf)
        run_cli(["account", "domain", "add", self.name, self.domain], conf=server.conf)
        run_cli(["login", "add", self.login, self.name], conf=server.conf,
                input=self.password + "\n")

    def session(self, server, kind="submissions"):
        return session(server, kind, login=self.login, password=self.password)


@pytest.fixture(scope="module")
def srv():
    tmp = tempfile.mkdtemp(prefix="sealmail-e2e-")
    s = Server(tmp, mailboxes=("alice@example.test", "bob@example.test", "carol@example.test"))
    s.start()
    ready(s, 2)
    yield s
    try:
        s.stop()
    finally:
        s.check_sanitizers()
        subprocess.run(["rm", "-rf", tmp])


# ---- relaying ----

@pytest.mark.parametrize("kind", ["submission", "submissions"])
def test_authenticated_relay_to_remote_domain_waits_in_queue(srv, kind):
    rcpt = "someone-%s@remote.test" % kind
    d = session(srv, kind)
    expect(d, "MAIL FROM:<news@sender.test>", 250, "2.1.0")
    expect(d, "RCPT TO:<%s>" % rcpt, 250, "2.1.5")
    t = data(d, message(frm="News <news@sender.test>", to=rcpt))
    qid = t.split()[-1]
    d.cmd("QUIT")
    # the test world's remote.test MX refuses connections: the message waits for a retry
    srv.wait_log("event=delivery qid=%s to=<%s> relay=mx.remote.test[127.0.0.9]" % (qid, rcpt))
    srv.wait_log("event=deferred qid=%s attempts=1" % qid)
    path = os.path.join(srv.data, "spool", "queue", qid)
    assert path in queue_files(srv)
    with open(path, "rb") as f:
        spooled = f.read().decode("utf-8", "replace")
    assert rcpt in spooled and "with ESMTPSA id %s" % qid in spooled
    assert TEST_LOGIN not in spooled and TEST_PASSWORD not in spooled


def test_authenticated_local_delivery(srv):
    before = len(srv.messages("bob@example.test"))
    d = session(srv, "submission")
    expect(d, "MAIL FROM:<a@sender.test>", 250)
    expect(d, "RCPT TO:<bob@example.test>", 250)
    expect(d, "RCPT TO:<far@remote.test>", 250)
    t = data(d, message(to="bob@example.test"))
    qid = t.split()[-1]
    m = srv.wait_messages("bob@example.test", before + 1)[-1].decode()
    assert "with ESMTPSA id %s" % qid in m and m.startswith("Return-Path: <a@sender.test>")
    # the remote copy waits
    srv.wait_log("event=delivery qid=%s to=<far@remote.test>" % qid)
    srv.wait_log("event=deferred qid=%s attempts=1" % qid)


def test_envelope_sender_must_be_in_account_domains(srv):
    d = session(srv, "submissions")
    for bad in ("a@other.test", "a@sub.sender.test", "a@sender.test.evil", "a@example.test", ""):
        t = expect(d, "MAIL FROM:<%s>" % bad, 553, "5.7.1")
        assert "testacct" in t, t
    # upper case is the same domain
    expect(d, "MAIL FROM:<Someone@SENDER.Test>", 250)
    expect(d, "RSET", 250)
    d.cmd("QUIT")
    srv.wait_log("stage=mail from=<a@other.test> account=testacct reason=sender_not_owned")
    # another account's domain is not ours either
    other = Account(srv, 100)
    expect(session(srv, "submission"), "MAIL FROM:<x@%s>" % other.domain, 553, "5.7.1")
    d = other.session(srv)
    expect(d, "MAIL FROM:<x@sender.test>", 553, "5.7.1")
    expect(d, "MAIL FROM:<x@%s>" % other.domain, 250)


# Every address of every From: field counts, wherever the tricks of RFC 5322 syntax (display
# names, quoted strings with quoted-pairs, comments, several mailboxes, groups, folding, an
# obsolete space before the colon, a long header section) put it.
FROM_NOT_OWNED = [
    "From: x@other.test",
    "From: Someone <x@other.test>",
    'From: "a@sender.test" <x@other.test>',
    "From: a@sender.test, x@other.test",
    "From: x@other.test, Name <a@sender.test>",
    "From: Name <a@sender.test>, x@other.test",
    "From: (a@sender.test) x@other.test",
    'From: "a\\"" <x@other.test>',
    'From: "unterminated <x@other.test>',
    "From: (unterminated x@other.test",
    "From: Group: a@sender.test, x@other.test;",
    "From: a@sender.test\r\n\t, x@other.test",
    "FROM: x@other.test",
    "From : x@other.test",
    "From: <@sender.test:x@other.test>",
    "From: x@other.test <a@sender.test> <x@other.test>",
    "From: a@sender.test\r\nSubject: two\r\nFrom: x@other.test",
    "X-Pad: " + "p" * 900 + "\r\n" + ("X-Pad: " + "p" * 900 + "\r\n") * 20 + "From: x@other.test",
]


def test_from_header_must_be_in_account_domains(srv):
    """Each header of FROM_NOT_OWNED: 553 5.7.1 at the end of data, the session goes on,
    nothing queued or delivered. Six per session (each 553 counts as a client error)."""
    before = len(srv.messages("carol@example.test"))
    nq = len(queue_files(srv))
    wrong = []
    for k in range(0, len(FROM_NOT_OWNED), 6):
        d = session(srv, "submissions")
        for hdr in FROM_NOT_OWNED[k:k + 6]:
            expect(d, "MAIL FROM:<a@sender.test>", 250)
            expect(d, "RCPT TO:<carol@example.test>", 250)
            expect(d, "RCPT TO:<far@remote.test>", 250)
            msg = hdr + "\r\nTo: carol@example.test\r\nSubject: spoof\r\n\r\nhello\r\n"
            expect(d, "DATA", 354)
            d.send(msg + "\r\n.\r\n")
            c, t = d.reply()
            if c != 553 or not t.startswith("553 5.7.1 ") or not (
                    ("other.test" in t and "testacct" in t) or "unterminated" in t or
                    "header section longer than" in t):
                wrong.append((hdr[:80], t))
            # the session goes on
            expect(d, "NOOP", 250)
        d.cmd("QUIT")
    assert not wrong, wrong
    srv.wait_log('reason="From: header not owned" account=testacct', count=len(FROM_NOT_OWNED))
    time.sleep(0.3)
    assert len(srv.messages("carol@example.test")) == before
    assert len(queue_files(srv)) == nq


def test_from_header_in_account_domains_accepted(srv):
    before = len(srv.messages("carol@example.test"))
    d = session(srv, "submissions")
    expect(d, "MAIL FROM:<a@sender.test>", 250)
    expect(d, "RCPT TO:<carol@example.test>", 250)
    data(d, message(frm='"Sales (x@other.test)" <Sales@Sender.TEST>', to="carol@example.test"))
    expect(d, "MAIL FROM:<a@sender.test>", 250)
    expect(d, "RCPT TO:<carol@example.test>", 250)
    data(d, message(frm="a@sender.test,\r\n b@sender.test", to="carol@example.test"))
    ok = ['"x@other.test" <a@sender.test>', '"a\\"@other.test" <a@sender.test>',
          "a@sender.test (x@other.test)", '"x@other.test"@sender.test',
          "Team: a@sender.test, B <b@sender.test>;", "undisclosed-recipients:;"]
    for frm in ok:
        expect(d, "MAIL FROM:<a@sender.test>", 250)
        expect(d, "RCPT TO:<carol@example.test>", 250)
        data(d, message(frm=frm, to="carol@example.test"))
    srv.wait_messages("carol@example.test", before + 2 + len(ok))


def test_unauthenticated_relay_refused(srv):
    # port 25: local mail yes, relaying no
    d = session(srv, "mx", login=None)
    expect(d, "MAIL FROM:<a@sender.test>", 250)
    expect(d, "RCPT TO:<someone@remote.test>", 554, "5.7.1")
    expect(d, "RCPT TO:<alice@example.test>", 250)
    d = session(srv, "mx-tls", login=None)
    expect(d, "MAIL FROM:<a@sender.test>", 250)
    expect(d, "RCPT TO:<someone@remote.test>", 554, "5.7.1")
    # the submission listeners: nothing without AUTH, not even local mail
    for kind in ("submission", "submissions"):
        d = session(srv, kind, login=None)
        expect(d, "MAIL FROM:<a@sender.test>", 530, "5.7.0")
        expect(d, "RCPT TO:<alice@example.test>", 503, "5.5.1")
        # a failed AUTH does not open the door
        d.auth(password="wrong", expect=535)
        expect(d, "MAIL FROM:<a@sender.test>", 530, "5.7.0")


# ---- the hourly limit ----

def test_limit_exact_under_concurrency_and_kept_across_restart():
    """plan tiny (5/hour): 20 clients in parallel, 2 recipients each, on both workers:
    exactly 5 accepted, every other one 451 4.7.1 naming the plan, the limit and the
    seconds until capacity frees up. `account usage` says so, and a restart (SIGTERM, then
    SIGKILL) keeps the counters."""
    tmp = tempfile.mkdtemp(prefix="sealmail-e2e-")
    server = Server(tmp, workers=2)
    try:
        run_cli(["plan", "set", "tiny", "5"], conf=server.conf)
        run_cli(["account", "set-plan", "testacct", "tiny"], conf=server.conf)
        server.start()
        ready(server, 2)
        _concurrency(server)
    finally:
        while _open:
            _open.pop().close()
        try:
            server.stop()
        finally:
            server.check_sanitizers()
            subprocess.run(["rm", "-rf", tmp])


def _concurrency(server):
    n = 20
    barrier = threading.Barrier(n, timeout=30)
    results = [None] * n
    errors = []

    def client(i):
        try:
            kind = "submissions" if i % 2 else "submission"
            d = Dialog(server.ports[kind], tls=kind == "submissions", src="127.0.1.%d" % (i + 1))
            try:
                assert d.reply()[0] == 220
                assert d.cmd("EHLO client%d.test" % i)[0] == 250
                if kind == "submission":
                    d.starttls()
                    assert d.cmd("EHLO client%d.test" % i)[0] == 250
                d.auth()
                assert d.cmd("MAIL FROM:<c%d@sender.test>" % i)[0] == 250
                barrier.wait()
                r = [d.cmd("RCPT TO:<r%d%s@remote.test>" % (i, x)) for x in "ab"]
                final = None
                if any(c == 250 for c, _ in r):
                    final = data(d, message(frm="c%d@sender.test" % i, to="r@remote.test"))
                d.cmd("QUIT")
                results[i] = (r, final)
            finally:
                d.close()
        except BaseException as e:  # noqa: B036 - reported below
            errors.append(e)

    ts = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not any(t.is_alive() for t in ts)
    if errors:
        raise errors[0]
    replies = [rr for r, _ in results for rr in r]
    accepted = [t for c, t in replies if c == 250]
    refused = [t for c, t in replies if c != 250]
    assert len(accepted) == 5, replies
    assert len(refused) == 2 * n - 5
    for i, (r, _) in enumerate(results):
        for x, (c, t) in zip("ab", r):
            if c != 250:
                assert check_limit(t, "tiny", 5) == "r%d%s@remote.test" % (i, x)
    # every transaction with an accepted recipient was queued
    qids = [final.split()[-1] for _, final in results if final]
    assert qids and all(os.path.exists(os.path.join(server.data, "spool", "queue", q))
                        for q in qids)
    server.wait_log("status=deferred", count=5)
    log = server.log()
    assert "event=limit limit=hourly" in log and "account=testacct plan=tiny max=5" in log
    # both workers took part
    assert "smtp0: level=info event=auth_ok" in log and "smtp1: level=info event=auth_ok" in log

    def check_usage():
        text, j = usage(server, "testacct")
        assert text.startswith("account testacct: 5 sent in the last hour, limit 5 (plan tiny), "
                               "headroom 0; capacity frees up in "), text
        assert (j["account"], j["plan"], j["sent"], j["limit"], j["headroom"]) == (
            "testacct", "tiny", 5, 5, 0), j
        assert 3400 <= j["frees_in"] <= 3600, j

    def still_limited():
        d = session(server, "submissions")
        expect(d, "MAIL FROM:<a@sender.test>", 250)
        t = expect(d, "RCPT TO:<after@remote.test>", 451, "4.7.1")
        assert check_limit(t, "tiny", 5) == "after@remote.test"
        # local mailboxes count too
        expect(d, "RCPT TO:<alice@example.test>", 451, "4.7.1")
        d.cmd("QUIT")
        d.close()

    check_usage()
    still_limited()
    check_usage()
    for how in ("term", "kill"):
        if how == "term":
            assert server.stop() == 0
        else:
            server.kill9()
        server.start()
        ready(server, 2)
        still_limited()
        check_usage()


def test_failed_transactions_give_recipients_back(srv):
    acct = Account(srv, 5, plan="small5")

    def sent():
        return usage(srv, acct.name)[1]["sent"]

    d = acct.session(srv)
    # refused at the end of data (From: not owned): the 3 counted recipients come back
    expect(d, "MAIL FROM:<%s>" % acct.sender, 250)
    for i in range(3):
        expect(d, "RCPT TO:<x%d@remote.test>" % i, 250)
    assert sent() == 3
    data(d, message(frm="x@other.test"), 553, "5.7.1")
    assert sent() == 0
    # RSET gives them back
    expect(d, "MAIL FROM:<%s>" % acct.sender, 250)
    expect(d, "RCPT TO:<y@remote.test>", 250)
    expect(d, "RCPT TO:<alice@example.test>", 250)
    assert sent() == 2
    expect(d, "RSET", 250)
    assert sent() == 0
    # so does a client that goes away mid-transaction
    expect(d, "MAIL FROM:<%s>" % acct.sender, 250)
    for i in range(4):
        expect(d, "RCPT TO:<z%d@remote.test>" % i, 250)
    d.close()
    deadline = time.time() + 10
    while sent() != 0 and time.time() < deadline:
        time.sleep(0.1)
    assert sent() == 0
    # the full limit is available again: 5 accepted, the 6th refused
    d = acct.session(srv, "submission")
    expect(d, "MAIL FROM:<%s>" % acct.sender, 250)
    for i in range(5):
        expect(d, "RCPT TO:<ok%d@remote.test>" % i, 250)
    t = expect(d, "RCPT TO:<ok5@remote.test>", 451, "4.7.1")
    check_limit(t, "small5", 5)
    data(d, message(frm=acct.sender))
    text, j = usage(srv, acct.name)
    assert (j["sent"], j["limit"], j["headroom"]) == (5, 5, 0), j
    assert text.startswith("account %s: 5 sent in the last hour, limit 5 (plan small5), "
                           "headroom 0" % acct.name), text


def test_plan_change_takes_effect_at_once(srv):
    acct = Account(srv, 2)
    d = acct.session(srv)
    expect(d, "MAIL FROM:<%s>" % acct.sender, 250)
    expect(d, "RCPT TO:<a1@remote.test>", 250)
    expect(d, "RCPT TO:<a2@remote.test>", 250)
    t = expect(d, "RCPT TO:<a3@remote.test>", 451, "4.7.1")
    check_limit(t, acct.plan, 2)
    # a bigger plan: the same session, even the same transaction, may go on
    run_cli(["plan", "set", "bigger", "4"], conf=srv.conf)
    run_cli(["account", "set-plan", acct.name, "bigger"], conf=srv.conf)
    expect(d, "RCPT TO:<a3@remote.test>", 250)
    expect(d, "RCPT TO:<a4@remote.test>", 250)
    t = expect(d, "RCPT TO:<a5@remote.test>", 451, "4.7.1")
    check_limit(t, "bigger", 4)
    data(d, message(frm=acct.sender))
    # changing the plan's own limit applies to the account at once, too
    run_cli(["plan", "set", "bigger", "6"], conf=srv.conf)
    expect(d, "MAIL FROM:<%s>" % acct.sender, 250)
    expect(d, "RCPT TO:<b1@remote.test>", 250)
    expect(d, "RCPT TO:<b2@remote.test>", 250)
    t = expect(d, "RCPT TO:<b3@remote.test>", 451, "4.7.1")
    check_limit(t, "bigger", 6)
    data(d, message(frm=acct.sender))
    # and lowering it below what was sent refuses everything until the window moves on
    run_cli(["plan", "set", "bigger", "3"], conf=srv.conf)
    expect(d, "MAIL FROM:<%s>" % acct.sender, 250)
    t = expect(d, "RCPT TO:<c1@remote.test>", 451, "4.7.1")
    check_limit(t, "bigger", 3)
    text, j = usage(srv, acct.name)
    assert (j["plan"], j["sent"], j["limit"], j["headroom"]) == ("bigger", 6, 3, 0), j


def test_limit_is_per_account(srv):
    """One account at its limit does not hold back another."""
    full, other = Account(srv, 1), Account(srv, 1)
    d = full.session(srv)
    expect(d, "MAIL FROM:<%s>" % full.sender, 250)
    expect(d, "RCPT TO:<p@remote.test>", 250)
    expect(d, "RCPT TO:<q@remote.test>", 451, "4.7.1")
    e = other.session(srv, "submission")
    expect(e, "MAIL FROM:<%s>" % other.sender, 250)
    expect(e, "RCPT TO:<p@remote.test>", 250)
    # the unauthenticated MX port has no hourly limit for local mail
    m = session(srv, "mx", login=None)
    expect(m, "MAIL FROM:<%s>" % full.sender, 250)
    expect(m, "RCPT TO:<alice@example.test>", 250)
