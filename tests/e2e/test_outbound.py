"""Outbound delivery (docs/delivery.md) end to end: the real server delivers mail that the
test account submits to SMTP sinks (sinks.py) found through a fake DNS (fakedns.py), and
the tests look at what the sinks got, the delivery records (queue CLI and queue.db), the
log lines and the notices that come back to the sender (a sink for sender.test).

The TLS matrix shares one server per level (module scope) with one domain per sink kind;
every other test has its own server, sinks and DNS records (outbound_world.World)."""
import ssl
import threading
import time
import warnings

import pytest

from sinks import Sink

from outbound_world import (SENDER, Notice, World, check_notice_envelope, cli, db_attempts,
                            delete, delivery_lines, flat, log_fields, message, notices_about,
                            show, submit, wait_attempts, wait_gone, wait_notice, wait_record,
                            wait_until)
# fixtures (pytest finds them in this module's namespace)
from outbound_world import certs, stopped_servers, world  # noqa: F401


def no_mail_command(sink):
    return not any(c.upper().startswith("MAIL") for _, c in sink.commands)


def no_notice_queued(srv):
    """Nothing else in the queue. A notice is spooled before its message leaves the queue
    and stays queued until the notice sink has it: after wait_gone, an empty queue and an
    empty notice sink mean no notice was written."""
    ms = cli(srv, "list").json["messages"]
    assert ms == [], ms


def sent_line(server, qid, rcpt="bob@remote.test"):
    for line in delivery_lines(server, qid):
        if "to=<%s>" % rcpt in line and " status=sent " in line:
            return log_fields(line), line
    raise AssertionError("no sent line for %s in\n%s" % (qid, server.log()[-3000:]))


# ---- TLS levels x sink kinds ----------------------------------------------------------

KINDS = {  # kind: sink host. good: STARTTLS with a test-CA certificate for its MX name;
           # plain: no STARTTLS; expired: STARTTLS, expired certificate; wrongname: STARTTLS,
           # certificate for wrong-name.example.test
    "good": "127.0.0.2",
    "plain": "127.0.0.3",
    "expired": "127.0.0.4",
    "wrongname": "127.0.0.5",
}
LEVELS = ("none", "may", "encrypt", "verify")


def expected(level, kind):
    """("sent", tls used) or ("deferred", reason start)."""
    if level == "none":
        return "sent", False
    if kind == "plain":
        if level == "may":
            return "sent", False
        return "deferred", ("TLS required by policy for plain.test but mx1.plain.test did not "
                            "offer STARTTLS")
    if level == "verify" and kind == "expired":
        return "deferred", ("certificate verification failed for mx1.expired.test: "
                            "certificate has expired")
    if level == "verify" and kind == "wrongname":
        return "deferred", "certificate verification failed for mx1.wrongname.test: "
    return "sent", True


@pytest.fixture(scope="module")
def matrix(certs, stopped_servers):  # noqa: F811 (stopped_servers: torn down after this)
    w = World(certs)
    for kind, host in KINDS.items():
        w.mx("%s.test" % kind, (10, "mx1.%s.test" % kind, host))
    w.level_servers = {}
    yield w
    w.close()


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_tls_level_against_sink(matrix, level, kind):
    if level not in matrix.level_servers:
        matrix.level_servers[level] = matrix.server(tls_policy=level, notices=False)
    srv = matrix.level_servers[level]
    host = KINDS[kind]
    mxname = "mx1.%s.test" % kind
    cert = {"good": "good", "plain": None, "expired": "expired", "wrongname": "wrong"}[kind]
    sink = matrix.sink(host=host, name=mxname, cert=cert)
    rcpt = "bob@%s.test" % kind
    try:
        qid = submit(srv, rcpt)
        outcome, what = expected(level, kind)
        if outcome == "sent":
            msg = sink.wait_messages(1)[0]
            assert msg["rcpts"] == [rcpt]
            rec = wait_record(srv, qid, "sent")[0]
            if what:
                assert msg["tls"] is not None, msg
                assert msg["sni"] == mxname, msg  # SNI is the MX name, never the IP
                assert rec["tls_version"] == msg["tls"]["version"]
                assert rec["tls_cipher"] == msg["tls"]["cipher"]
                if kind == "good":
                    assert rec["cert"] == "verified" and rec["cert_error"] == "", rec
                else:
                    assert rec["cert"] == "unverified", rec
                    assert rec["cert_error"], rec
                    if kind == "expired":
                        assert "expired" in rec["cert_error"], rec
                    else:
                        assert "certificate is for wrong-name.example.test" in \
                            rec["cert_error"], rec
            else:
                assert msg["tls"] is None, msg
                assert rec["tls_version"] == "" and rec["cert"] == "none", rec
                if level == "none":
                    # never STARTTLS at none, even when offered
                    assert not any(c.upper() == "STARTTLS" for _, c in sink.commands)
            assert rec["tls_policy"] == level and rec["policy_source"] == "default", rec
            assert rec["mx"] == mxname and rec["ip"] == host and rec["port"] == matrix.port
            assert rec["code"] == 250 and rec["fallback"] == 0, rec
            assert rec["dnssec"] == "insecure" and rec["attempt_no"] == 1, rec
            f, line = sent_line(srv, qid, rcpt)
            assert f["tls"] == level and f["tls_source"] == "default", line
            assert f["relay"] == "%s[%s]:%d" % (mxname, host, matrix.port), line
        else:
            j = wait_attempts(srv, qid, 1, status="deferred")
            a = j["attempts"][0]
            assert a["status"] == "deferred", a
            assert a["reason"].startswith(what), a
            assert a["tls_policy"] == level and a["policy_source"] == "default", a
            assert a["mx"] == mxname and a["ip"] == host, a
            if kind == "plain":
                assert a["cert"] == "none", a
            else:
                assert a["cert"] == "failed" and a["cert_error"], a
                assert a["reason"].endswith(a["cert_error"]), a
                if kind == "wrongname":
                    assert "certificate is for wrong-name.example.test" in a["cert_error"], a
            assert j["recipients"][0]["state"] == "pending", j
            assert sink.messages == [] and no_mail_command(sink), sink.commands
            delete(srv, qid)
            wait_gone(srv, qid)
        srv.check_sanitizers()
    finally:
        matrix.stop_sink(sink)


def test_may_falls_back_to_plaintext_after_failed_handshake(world):
    sink = world.remote()
    sink._starttls_break = True   # garbage instead of a TLS handshake
    srv = world.server(tls_policy="may")
    qid = submit(srv, "bob@remote.test")
    msg = sink.wait_messages(1)[0]
    assert msg["tls"] is None
    assert sink.connections == 2  # the same host again, in plaintext
    rec = wait_record(srv, qid, "sent")[0]
    assert rec["fallback"] == 1 and rec["tls_version"] == "", rec
    assert rec["tls_policy"] == "may", rec
    f, line = sent_line(srv, qid)
    assert "fallback=plaintext" in line
    srv.check_sanitizers()


def test_encrypt_does_not_fall_back_after_failed_handshake(world):
    sink = world.remote()
    sink._starttls_break = True
    srv = world.server(tls_policy="encrypt")
    qid = submit(srv, "bob@remote.test")
    j = wait_attempts(srv, qid, 1, status="deferred")
    a = j["attempts"][0]
    assert a["fallback"] in (False, 0) and a["tls_policy"] == "encrypt", a
    assert sink.messages == [] and no_mail_command(sink)
    delete(srv, qid)
    srv.check_sanitizers()


class OldTLSSink(Sink):
    """A sink whose TLS stops at 1.1 (security level 0 so that OpenSSL 3 still does it)."""

    def start(self):
        r = super().start()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self._ctx.minimum_version = ssl.TLSVersion.TLSv1
            self._ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        self._ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        return r


@pytest.mark.parametrize("min_version,level", [(None, "may"), ("TLSv1", "may"),
                                               ("TLSv1", "encrypt")])
def test_peer_with_tls_older_than_1_2(world, min_version, level):
    """TLS 1.2 at least by default: at may a TLS-1.1-only peer gets the mail in plaintext
    after the failed handshake (fallback); delivery.tls_min_version = TLSv1 allows 1.1 at may
    only (a warning at start); encrypt never goes below 1.2."""
    world.mx("remote.test", (10, "mx1.remote.test", "127.0.0.2"))
    sink = OldTLSSink(host="127.0.0.2", port=world.port, name="mx1.remote.test",
                      cert=world.certs.good("mx1.remote.test")).start()
    world.sinks.append(sink)
    srv = world.server(tls_policy=level, delivery={"tls_min_version": min_version})
    if min_version:
        srv.wait_log("event=tls_config side=client min_version=TLSv1")
    qid = submit(srv, "bob@remote.test")
    if level == "encrypt":
        a = wait_attempts(srv, qid, 1, status="deferred")["attempts"][0]
        assert "TLS handshake with mx1.remote.test[127.0.0.2] failed" in a["reason"], a
        assert a["fallback"] is False and a["tls_version"] == "", a
        assert sink.messages == []
        delete(srv, qid)
    else:
        msg = sink.wait_messages(1)[0]
        rec = wait_record(srv, qid, "sent")[0]
        if min_version:
            assert msg["tls"]["version"] == "TLSv1.1", msg
            assert rec["tls_version"] == "TLSv1.1" and rec["fallback"] == 0, rec
        else:
            assert msg["tls"] is None and sink.connections == 2, msg
            assert rec["fallback"] == 1 and rec["tls_version"] == "", rec
    srv.check_sanitizers()


def test_policy_file_overrides_default(world, tmp_path):
    pol = tmp_path / "tls_policy"
    pol.write_text("# domain level\n"
                   "remote.test      may\n"
                   ".partner.test    none     # every subdomain\n"
                   "eu.partner.test  may\n")
    plain = world.remote("remote.test", "127.0.0.2", cert=None)        # no STARTTLS
    xsub = world.remote("x.partner.test", "127.0.0.3")                 # offers STARTTLS
    eusub = world.remote("eu.partner.test", "127.0.0.4")               # offers STARTTLS
    strict = world.remote("other.test", "127.0.0.5", cert=None)        # default: verify
    srv = world.server(tls_policy="verify", delivery={"tls_policy_file": str(pol)})
    qid = submit(srv, ["bob@remote.test", "bob@x.partner.test", "bob@eu.partner.test",
                       "bob@other.test"])
    for sink in (plain, xsub, eusub):
        sink.wait_messages(1)
    assert plain.messages[0]["tls"] is None
    assert xsub.messages[0]["tls"] is None   # suffix entry: none, though STARTTLS offered
    assert eusub.messages[0]["tls"] is not None  # the exact entry wins over the suffix
    recs = {r["rcpt_addr"]: r for r in wait_record(srv, qid, "sent", n=3)}
    assert (recs["bob@remote.test"]["tls_policy"], recs["bob@remote.test"]["policy_source"]) \
        == ("may", "domain")
    assert (recs["bob@x.partner.test"]["tls_policy"],
            recs["bob@x.partner.test"]["policy_source"]) == ("none", "domain")
    assert (recs["bob@eu.partner.test"]["tls_policy"],
            recs["bob@eu.partner.test"]["policy_source"]) == ("may", "domain")
    d = wait_record(srv, qid, "deferred", rcpt="bob@other.test")[0]
    assert (d["tls_policy"], d["policy_source"]) == ("verify", "default"), d
    assert d["reason"] == ("TLS required by policy for other.test but mx1.other.test did not "
                           "offer STARTTLS"), d
    assert strict.messages == []
    j = show(srv, qid)
    states = {r["address"]: r["state"] for r in j["recipients"]}
    assert states == {"bob@remote.test": "done", "bob@x.partner.test": "done",
                      "bob@eu.partner.test": "done", "bob@other.test": "pending"}, j
    delete(srv, qid)
    srv.check_sanitizers()


def test_policy_deferral_tries_next_mx(world):
    world.mx("remote.test", (10, "mx1.remote.test", "127.0.0.2"),
             (20, "mx2.remote.test", "127.0.0.3"))
    plain = world.sink("127.0.0.2", "mx1.remote.test", cert=None)
    good = world.sink("127.0.0.3", "mx2.remote.test")
    srv = world.server(tls_policy="encrypt")
    qid = submit(srv, "bob@remote.test")
    msg = good.wait_messages(1)[0]
    assert msg["tls"] is not None
    assert plain.messages == [] and plain.connections >= 1
    rec = wait_record(srv, qid, "sent")[0]
    assert rec["mx"] == "mx2.remote.test", rec
    srv.check_sanitizers()


# ---- routes ---------------------------------------------------------------------------

@pytest.mark.parametrize("first", ["refused", "greeting_421", "greeting_554", "mail_451"])
def test_mx_preference_and_fallback(world, first):
    # registered in the wrong order on purpose: preference decides, not the answer order
    world.mx("remote.test", (20, "mx2.remote.test", "127.0.0.3"),
             (10, "mx1.remote.test", "127.0.0.2"))
    bad = None
    if first.startswith("greeting_"):
        code = int(first[-3:])
        bad = world.sink("127.0.0.2", "mx1.remote.test", fail_at="connect_banner",
                         fail_code=code, fail_text="%d.3.2 not here" % (code // 100))
    elif first == "mail_451":
        bad = world.sink("127.0.0.2", "mx1.remote.test", fail_at="mail", fail_code=451,
                         fail_text="4.3.0 not now")
    good = world.sink("127.0.0.3", "mx2.remote.test")
    srv = world.server()
    qid = submit(srv, "bob@remote.test")
    good.wait_messages(1)
    if bad:
        assert bad.connections >= 1 and bad.messages == []
    rec = wait_record(srv, qid, "sent")[0]
    assert rec["mx"] == "mx2.remote.test" and rec["ip"] == "127.0.0.3", rec
    wait_gone(srv, qid)
    assert len(good.messages) == 1
    srv.check_sanitizers()


def test_source_address_is_configurable(world):
    """delivery.source_ipv4: outbound connections come from that address."""
    world.mx("remote.test", (10, "mx1.remote.test", "127.0.0.2"))
    sink = world.sink("127.0.0.2", "mx1.remote.test")
    srv = world.server(delivery={"source_ipv4": "127.0.0.77"})
    qid = submit(srv, "bob@remote.test")
    msg = sink.wait_messages(1)[0]
    assert msg["peer"] == "127.0.0.77", msg["peer"]
    wait_gone(srv, qid)
    srv.check_sanitizers()


def test_rcpt_answer_is_final_for_the_attempt(world):
    """A 4xx to RCPT does not move on to the next MX host (docs: answers to RCPT and after
    are final for that attempt)."""
    world.mx("remote.test", (10, "mx1.remote.test", "127.0.0.2"),
             (20, "mx2.remote.test", "127.0.0.3"))
    world.sink("127.0.0.2", "mx1.remote.test", fail_at="rcpt", fail_code=450,
               fail_text="4.2.0 greylisted")
    mx2 = world.sink("127.0.0.3", "mx2.remote.test")
    srv = world.server()
    qid = submit(srv, "bob@remote.test")
    a = wait_attempts(srv, qid, 1, status="deferred")["attempts"][0]
    assert a["mx"] == "mx1.remote.test" and a["code"] == 450, a
    assert mx2.connections == 0 and mx2.messages == []
    delete(srv, qid)
    srv.check_sanitizers()


def test_every_address_of_a_host_is_tried(world):
    world.mx("remote.test", (10, "mx1.remote.test", ["127.0.0.3", "127.0.0.2"]))
    sink = world.sink("127.0.0.2", "mx1.remote.test")  # nothing listens on 127.0.0.3
    srv = world.server()
    qid = submit(srv, "bob@remote.test")
    sink.wait_messages(1)
    rec = wait_record(srv, qid, "sent")[0]
    assert rec["mx"] == "mx1.remote.test" and rec["ip"] == "127.0.0.2", rec
    srv.check_sanitizers()


@pytest.mark.parametrize("shape", ["a_only", "aaaa_only", "aaaa_then_a", "cname_mx"])
def test_address_fallback_without_mx(world, shape):
    host = "127.0.0.2"
    if shape == "a_only":
        world.dns.add("remote.test", "A", "127.0.0.2")
        name = "remote.test"
    elif shape == "aaaa_only":
        world.dns.add("remote.test", "AAAA", "::1")
        name, host = "remote.test", "::1"
    elif shape == "aaaa_then_a":
        # IPv6 first (address_family all): nothing listens on ::1 at the sink port
        world.dns.add("remote.test", "AAAA", "::1")
        world.dns.add("remote.test", "A", "127.0.0.2")
        name = "remote.test"
    else:
        world.dns.add("remote.test", "MX", (10, "mx.remote.test"))
        world.dns.add("mx.remote.test", "CNAME", "real.remote.test")
        world.dns.add("real.remote.test", "A", "127.0.0.2")
        name = "mx.remote.test"
    sink = world.sink(host, name)
    srv = world.server()
    qid = submit(srv, "bob@remote.test")
    sink.wait_messages(1)
    rec = wait_record(srv, qid, "sent")[0]
    assert rec["ip"] == host, rec
    if shape != "cname_mx":
        assert rec["mx"] == "remote.test", rec
    srv.check_sanitizers()


def bounce_for(world, srv, qid, status, timeout=20):
    n = wait_notice(world.notices, qid, timeout=timeout, server=srv)[0]
    check_notice_envelope(n)
    b = n.rcpt("bob@remote.test")
    assert b["Action"].strip() == "failed", str(b)
    assert b["Status"].strip() == status, str(b)
    return n, b


def test_null_mx_bounces_at_once(world):
    world.dns.add("remote.test", "MX", (0, "."))
    srv = world.server()
    t0 = time.time()
    qid = submit(srv, "bob@remote.test")
    n, b = bounce_for(world, srv, qid, "5.1.10")
    assert time.time() - t0 < 10
    assert "remote.test does not accept mail (null MX, RFC 7505)" in flat(n.human), n.human
    rec = wait_record(srv, qid, "bounced")[0]
    assert rec["enh"] == "5.1.10" and rec["stage"] == "dns", rec
    assert len(db_attempts(srv, qid)) == 1  # no retry
    wait_gone(srv, qid)
    srv.check_sanitizers()


def test_nxdomain_bounces_5_1_2(world):
    srv = world.server()
    qid = submit(srv, "bob@nowhere.test")
    n = wait_notice(world.notices, qid, server=srv)[0]
    check_notice_envelope(n)
    b = n.rcpt("bob@nowhere.test")
    assert b["Status"].strip() == "5.1.2" and b["Action"].strip() == "failed", str(b)
    assert "nowhere.test: domain not found" in flat(n.human), n.human
    rec = wait_record(srv, qid, "bounced")[0]
    assert rec["enh"] == "5.1.2", rec
    wait_gone(srv, qid)
    srv.check_sanitizers()


def test_servfail_defers_then_delivers(world):
    world.dns.servfail("remote.test")
    srv = world.server()
    qid = submit(srv, "bob@remote.test")
    j = wait_attempts(srv, qid, 1, status="deferred")
    a = j["attempts"][0]
    assert a["enh"] == "4.4.3", a
    assert a["reason"].startswith("DNS lookup failed for remote.test"), a
    # the DNS is fixed: the next retry delivers
    world.dns.servfail("remote.test", on=False)
    sink = world.remote()
    sink.wait_messages(1, timeout=20)
    wait_gone(srv, qid)
    assert len(sink.messages) == 1
    assert world.notices.messages == []
    srv.check_sanitizers()


def test_mx_without_addresses_defers_4_4_4(world):
    world.dns.add("remote.test", "MX", (10, "mx1.remote.test"))
    world.dns.add("mx1.remote.test", "TXT", "no address here")
    srv = world.server()
    qid = submit(srv, "bob@remote.test")
    a = wait_attempts(srv, qid, 1, status="deferred")["attempts"][0]
    assert a["enh"] == "4.4.4", a
    assert a["reason"].startswith("no address for the mail hosts of remote.test"), a
    delete(srv, qid)
    srv.check_sanitizers()


# ---- replies of the remote server ------------------------------------------------------

def test_4xx_at_rcpt_defers_then_delivers(world):
    sink = world.remote(fail_at="rcpt", fail_code=450, fail_text="4.2.1 mailbox busy, later")
    srv = world.server()
    qid = submit(srv, "bob@remote.test")
    j = wait_attempts(srv, qid, 1, status="deferred")
    a = j["attempts"][0]
    assert a["code"] == 450 and a["enh"] == "4.2.1", a
    assert "450 4.2.1 mailbox busy, later" in a["reply"], a
    assert a["stage"] and a["attempt_no"] == 1, a

    def waiting():
        ms = [m for m in cli(srv, "list").json["messages"] if m["id"] == qid]
        return ms and ms[0]["state"] == "waiting" and ms[0]
    m = wait_until(waiting, 10, "the message waiting", server=srv)
    assert "mailbox busy" in m["reason"], m
    assert m["pending"] == 1 and m["attempts"] >= 1, m
    sink.fail_at = None
    sink.wait_messages(1, timeout=15)
    wait_gone(srv, qid)
    recs = db_attempts(srv, qid)
    assert [r["status"] for r in recs][-1] == "sent" and recs[-1]["attempt_no"] >= 2, recs
    assert len(sink.messages) == 1
    assert world.notices.messages == []
    srv.check_sanitizers()


@pytest.mark.parametrize("ret", [None, "FULL", "HDRS"])
def test_5xx_at_rcpt_bounces_with_remote_reply(world, ret):
    reply = "5.1.1 <bob@remote.test>: Recipient address rejected: no such user"
    sink = world.remote(fail_rcpts={"bob@remote.test": (550, reply)})
    srv = world.server()
    body = "UNIQUE-BODY-LINE-%s\r\n" % ret
    data = message(subject="bounce me %s" % ret, body=body)
    qid = submit(srv, "bob@remote.test", data=data, mail_params="RET=%s" % ret if ret else "")
    n, b = bounce_for(world, srv, qid, "5.1.1")
    assert Notice.field(b, "Diagnostic-Code") == "smtp; 550 " + reply, str(b)
    assert Notice.field(b, "Remote-MTA") == "dns; mx1.remote.test", str(b)
    assert "550 " + reply in flat(n.human), n.human
    assert qid in n.human
    orig = n.original_bytes()
    assert n.original is not None, str(n.msg)[:3000]
    assert b"Subject: bounce me %s" % (ret or "None").encode() in orig
    if ret == "HDRS":
        assert n.original.get_content_type() == "text/rfc822-headers"
        assert b"UNIQUE-BODY-LINE" not in orig
    else:
        assert n.original.get_content_type() == "message/rfc822"
        assert b"UNIQUE-BODY-LINE" in orig
    rec = wait_record(srv, qid, "bounced")[0]
    assert rec["code"] == 550 and rec["enh"] == "5.1.1", rec
    assert sink.messages == []
    wait_gone(srv, qid)
    assert len(notices_about(world.notices, qid)) == 1
    srv.check_sanitizers()


def test_notify_never_suppresses_the_bounce(world):
    sink = world.remote(fail_rcpts={
        "bob@remote.test": (550, "5.1.1 no bob"), "carol@remote.test": (550, "5.1.1 no carol")})
    srv = world.server()
    qid = submit(srv, ["bob@remote.test", "carol@remote.test"],
                 rcpt_params=["NOTIFY=NEVER", "NOTIFY=FAILURE"])
    n = wait_notice(world.notices, qid, server=srv)[0]
    assert n.final_recipients() == ["carol@remote.test"], str(n.msg)[:3000]
    wait_gone(srv, qid)
    # a single-recipient NOTIFY=NEVER message: nothing comes back at all
    qid2 = submit(srv, "bob@remote.test", rcpt_params="NOTIFY=NEVER")
    wait_record(srv, qid2, "bounced")
    wait_gone(srv, qid2)
    no_notice_queued(srv)
    assert notices_about(world.notices, qid2) == []
    assert len(notices_about(world.notices, qid)) == 1
    assert sink.messages == []
    srv.check_sanitizers()


def test_drop_mid_data_defers_then_delivers_once(world):
    sink = world.remote(drop_at="data_body")
    srv = world.server()
    big = "".join("line %06d of a message that is longer than the sink's drop point\r\n" % i
                  for i in range(2000))   # ~140 KB, past the 64 KiB the sink reads
    qid = submit(srv, "bob@remote.test", data=message(body=big))
    a = wait_attempts(srv, qid, 1, status="deferred")["attempts"][0]
    assert a["status"] == "deferred", a
    assert sink.messages == []
    sink.drop_at = None
    sink.wait_messages(1, timeout=15)
    wait_gone(srv, qid)
    assert len(sink.messages) == 1
    assert sink.messages[0]["data"].endswith(big.encode()) or \
        big.encode() in sink.messages[0]["data"]
    srv.check_sanitizers()


# ---- the queue: expiry and delay notices ----------------------------------------------

def test_lifetime_expiry_bounces_4_4_7(world, tmp_path):
    """After queue.lifetime the pending recipients come back with 4.4.7 and the last error:
    the remote 4xx reply, or our policy reason (docs: 'a bounce that quotes the same
    reason')."""
    pol = tmp_path / "tls_policy"
    pol.write_text("strict.test encrypt\n")
    world.remote(fail_at="rcpt", fail_code=451, fail_text="4.3.0 temporary trouble here")
    world.remote("strict.test", "127.0.0.3", cert=None)
    srv = world.server(queue={"lifetime": "2s"}, delivery={"tls_policy_file": str(pol)})
    qid = submit(srv, ["bob@remote.test", "carol@strict.test"])
    n, b = bounce_for(world, srv, qid, "4.4.7", timeout=20)
    c = n.rcpt("carol@strict.test")
    assert c["Action"].strip() == "failed" and c["Status"].strip() == "4.4.7", str(c)
    human = flat(n.human)
    assert "delivery time expired" in human, n.human
    assert "451 4.3.0 temporary trouble here" in human, n.human
    assert ("TLS required by policy for strict.test but mx1.strict.test did not offer "
            "STARTTLS") in human, n.human
    wait_gone(srv, qid)
    assert len(notices_about(world.notices, qid)) == 1
    for rcpt in ("bob@remote.test", "carol@strict.test"):
        # in history order (time, then row), as `queue show` lists them: the expiry last
        recs = [r for r in db_attempts(srv, qid) if r["rcpt_addr"] == rcpt]
        assert recs[-1]["status"] == "expired" and recs[-1]["enh"] == "4.4.7", \
            [(r["status"], r["time"]) for r in recs]
        assert recs[-1]["reason"].startswith("delivery time expired"), recs[-1]
        assert all(r["status"] == "deferred" for r in recs[:-1]), recs
    srv.check_sanitizers()


def test_delay_notice(world):
    world.remote(fail_at="rcpt", fail_code=451, fail_text="4.3.0 temporary trouble here")
    srv = world.server(queue={"delay_warning": "1s"})
    qid = submit(srv, ["bob@remote.test", "carol@remote.test", "dave@remote.test"],
                 rcpt_params=["", "NOTIFY=FAILURE", "NOTIFY=DELAY,FAILURE"],
                 data=message(body="DELAYED-BODY\r\n"))
    n = wait_notice(world.notices, qid, server=srv, timeout=20)[0]
    check_notice_envelope(n)
    assert n.final_recipients() == ["bob@remote.test", "dave@remote.test"], str(n.msg)[:3000]
    b = n.rcpt("bob@remote.test")
    assert b["Action"].strip() == "delayed", str(b)
    assert b["Status"].strip().startswith("4."), str(b)
    assert b["Will-Retry-Until"], str(b)
    assert "451 4.3.0 temporary trouble here" in Notice.field(b, "Diagnostic-Code"), str(b)
    assert n.original is not None and n.original.get_content_type() == "text/rfc822-headers"
    assert b"DELAYED-BODY" not in n.original_bytes()
    # one notice only, though the retries go on; the message stays queued
    att = cli(srv, "list").json["messages"][0]["attempts"]
    srv.wait_log("event=deferred qid=%s attempts=%d " % (qid, att + 1), timeout=10)
    ids = [m["id"] for m in cli(srv, "list").json["messages"]]
    assert ids == [qid], ids  # no second notice waiting in the queue
    assert len(notices_about(world.notices, qid)) == 1
    assert {r["state"] for r in show(srv, qid)["recipients"]} == {"pending"}
    delete(srv, qid)
    srv.check_sanitizers()


# ---- transactions and connections -----------------------------------------------------

def test_transaction_details(world):
    """All recipients of a domain in one pipelined transaction with SIZE= and BODY=8BITMIME;
    dot-stuffing and 8-bit bytes intact; a server without 8BITMIME gets the 8-bit message
    as it is, without BODY=. Two domains: two transactions."""
    sink = world.remote()
    no8 = world.remote("old.test", "127.0.0.3", extensions=("PIPELINING", "SIZE 52428800",
                                                            "ENHANCEDSTATUSCODES"))
    srv = world.server()
    rcpts = ["bob@remote.test", "carol@remote.test", "dave@remote.test"]
    body = ".leading dot\r\n..two dots\r\nGr\u00fc\u00dfe 8-bit\r\n.\r\nend\r\n"
    data = message(to=", ".join(rcpts), body=body).encode("utf-8")
    qid = submit(srv, rcpts + ["eve@old.test"], data=data, mail_params="BODY=8BITMIME")
    msg = sink.wait_messages(1)[0]
    old = no8.wait_messages(1)[0]
    wait_gone(srv, qid)
    assert sorted(msg["rcpts"]) == sorted(rcpts) and len(sink.messages) == 1
    assert msg["pipelined"] is True
    params = msg["mail_params"].upper().split()
    assert "BODY=8BITMIME" in params, params
    size = [int(p[5:]) for p in params if p.startswith("SIZE=")]
    assert size and abs(size[0] - len(msg["data"])) < 200, (size, len(msg["data"]))
    assert msg["data"].endswith(body.encode("utf-8")), msg["data"][-200:]
    assert old["rcpts"] == ["eve@old.test"]
    assert "BODY=" not in old["mail_params"].upper(), old["mail_params"]
    assert old["data"] == msg["data"]
    assert len(wait_record(srv, qid, "sent", n=4)) == 4
    srv.check_sanitizers()


def test_helo_when_ehlo_is_refused(world):
    sink = world.remote(esmtp=False)
    srv = world.server()
    qid = submit(srv, "bob@remote.test")
    msg = sink.wait_messages(1)[0]
    assert msg["helo"] == "mx.example.test" and msg["tls"] is None
    assert msg["mail_params"] == "", msg  # no extensions: no SIZE=, BODY=, DSN
    assert any(c.upper().startswith("HELO ") for _, c in sink.commands)
    wait_gone(srv, qid)
    srv.check_sanitizers()


@pytest.mark.parametrize("stage,code,text,outcome", [
    ("mail", 550, "5.7.1 sender refused", "bounced"),
    ("data", 554, "5.6.0 no data today", "bounced"),
    ("dot", 554, "5.7.1 content refused", "bounced"),
    ("dot", 451, "4.3.0 queue trouble", "deferred"),
])
def test_reply_at_each_stage(world, stage, code, text, outcome):
    world.remote(fail_at=stage, fail_code=code, fail_text=text)
    srv = world.server()
    qid = submit(srv, "bob@remote.test")
    rec = wait_record(srv, qid, outcome)[0]
    assert rec["code"] == code and rec["enh"] == text.split()[0], rec
    assert rec["reply"] == "%d %s" % (code, text), rec
    if outcome == "bounced":
        n, b = bounce_for(world, srv, qid, text.split()[0])
        assert Notice.field(b, "Diagnostic-Code") == "smtp; %d %s" % (code, text), str(b)
        wait_gone(srv, qid)
    else:
        assert show(srv, qid)["recipients"][0]["state"] == "pending"
        delete(srv, qid)
    srv.check_sanitizers()


def test_recipients_each_keep_their_state(world):
    """One transaction: bob accepted, carol 4xx, dave 5xx. bob is delivered once, dave
    bounced (and alone in the notice), carol retried alone until accepted."""
    sink = world.remote(fail_rcpts={"carol@remote.test": (450, "4.2.1 carol is busy"),
                                    "dave@remote.test": (550, "5.1.1 no dave here")})
    srv = world.server()
    qid = submit(srv, ["bob@remote.test", "carol@remote.test", "dave@remote.test"],
                 rcpt_params=["", "", "NOTIFY=FAILURE ORCPT=rfc822;dave@orig.test"])
    first = sink.wait_messages(1)[0]
    assert first["rcpts"] == ["bob@remote.test"]
    n = wait_notice(world.notices, qid, server=srv)[0]
    assert n.final_recipients() == ["dave@remote.test"], str(n.msg)[:3000]
    d = n.rcpt("dave@remote.test")
    assert Notice.field(d, "Original-Recipient") == "rfc822;dave@orig.test", str(d)
    j = wait_attempts(srv, qid, 1, status="deferred")
    states = {r["address"]: r["state"] for r in j["recipients"]}
    assert states == {"bob@remote.test": "done", "carol@remote.test": "pending",
                      "dave@remote.test": "done"}, j
    assert {m["id"]: m["pending"] for m in cli(srv, "list").json["messages"]}[qid] == 1
    sink.fail_rcpts = {}
    second = sink.wait_messages(2, timeout=15)[1]
    assert second["rcpts"] == ["carol@remote.test"]
    wait_gone(srv, qid)
    assert len(sink.messages) == 2 and len(notices_about(world.notices, qid)) == 1
    srv.check_sanitizers()


def test_notice_about_a_notice_is_never_sent(world):
    """The bounce (from <>) cannot be delivered either: it is dropped, not bounced again."""
    world.remote(fail_rcpts={"bob@remote.test": (550, "5.1.1 no bob")})
    world.notice_sink().fail_rcpts = {SENDER: (550, "5.1.1 no such sender either")}
    srv = world.server()
    qid = submit(srv, "bob@remote.test")
    wait_record(srv, qid, "bounced")
    wait_gone(srv, qid)

    def empty():
        return cli(srv, "list").json["messages"] == []
    wait_until(empty, 15, "the queue to drain", step=0.2, server=srv)
    assert world.notices.messages == []
    bounced = [l for l in srv.log().splitlines()
               if "event=delivery" in l and "status=bounced" in l]
    assert len(bounced) == 2, bounced  # bob, then the notice to x@sender.test; nothing more
    srv.check_sanitizers()


def test_messages_reuse_one_connection(world):
    sink = world.remote()
    srv = world.server()
    for i in range(4):
        submit(srv, "bob@remote.test", subject="reuse %d" % i)
        sink.wait_messages(i + 1)
    assert sink.connections < 4, sink.connections
    assert len({m["conn"] for m in sink.messages}) < 4
    srv.check_sanitizers()


class SlowSink(Sink):
    """Takes its time over each message (before the 250) and counts connections open at
    the same time."""
    delay = 0.6

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.active = 0
        self.max_active = 0
        self._lk = threading.Lock()

    def _session(self, sock, peer, n):
        with self._lk:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            super()._session(sock, peer, n)
        finally:
            with self._lk:
                self.active -= 1

    def _deliver(self, msg):
        time.sleep(self.delay)
        super()._deliver(msg)


def test_connections_per_destination(world):
    world.mx("remote.test", (10, "mx1.remote.test", "127.0.0.2"))
    sink = SlowSink(host="127.0.0.2", port=world.port, name="mx1.remote.test",
                    cert=world.certs.good("mx1.remote.test")).start()
    world.sinks.append(sink)
    srv = world.server(delivery={"connections_per_destination": 2})
    qids = [submit(srv, "bob@remote.test", subject="parallel %d" % i) for i in range(5)]
    sink.wait_messages(5, timeout=20)
    for q in qids:
        wait_gone(srv, q)
    assert sink.max_active <= 2, sink.max_active
    assert len(sink.messages) == 5
    srv.check_sanitizers()


def test_size_limit_of_the_remote_server(world):
    sink = world.remote(extensions=("PIPELINING", "SIZE 1000", "8BITMIME", "SMTPUTF8", "DSN",
                                    "ENHANCEDSTATUSCODES"))
    srv = world.server()
    qid = submit(srv, "bob@remote.test", data=message(body=("y" * 70 + "\r\n") * 40))
    n, b = bounce_for(world, srv, qid, "5.3.4")
    assert sink.messages == [] and no_mail_command(sink), sink.commands
    rec = wait_record(srv, qid, "bounced")[0]
    assert rec["enh"] == "5.3.4", rec
    srv.check_sanitizers()


def test_smtputf8_to_a_server_without_it(world):
    sink = world.remote(extensions=("PIPELINING", "SIZE 52428800", "8BITMIME", "DSN",
                                    "ENHANCEDSTATUSCODES"))
    srv = world.server()
    rcpt = "bøb@remote.test"
    data = ("From: %s\r\nTo: %s\r\nSubject: utf8\r\n\r\nhej\r\n" % (SENDER, rcpt)).encode()
    qid = submit(srv, rcpt, data=data, mail_params="SMTPUTF8")
    n = wait_notice(world.notices, qid, server=srv)[0]
    check_notice_envelope(n)
    assert len(n.per_rcpt) == 1
    b = n.per_rcpt[0]
    assert b["Status"].strip() == "5.6.7" and b["Action"].strip() == "failed", str(b)
    assert sink.messages == []
    srv.check_sanitizers()


def test_dsn_parameters_passed_on(world):
    sink = world.remote()
    srv = world.server()
    qid = submit(srv, "bob@remote.test", mail_params="RET=HDRS ENVID=env-123",
                 rcpt_params="NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@remote.test")
    msg = sink.wait_messages(1)[0]
    mp = msg["mail_params"].upper().split()
    assert "RET=HDRS" in mp and "ENVID=ENV-123" in mp, msg["mail_params"]
    rp = msg["rcpt_params"][0].split()
    assert "NOTIFY=SUCCESS,FAILURE" in [p.upper() for p in rp], rp
    assert "ORCPT=rfc822;bob@remote.test" in rp, rp
    wait_gone(srv, qid)
    no_notice_queued(srv)
    assert notices_about(world.notices, qid) == []  # the next hop does DSN: no "relayed"
    srv.check_sanitizers()


def test_notify_success_to_a_server_without_dsn_gets_relayed_notice(world):
    sink = world.remote(extensions=("PIPELINING", "SIZE 52428800", "8BITMIME", "SMTPUTF8",
                                    "ENHANCEDSTATUSCODES"))
    srv = world.server()
    qid = submit(srv, "bob@remote.test", mail_params="ENVID=env-456",
                 rcpt_params="NOTIFY=SUCCESS")
    msg = sink.wait_messages(1)[0]
    assert "NOTIFY" not in msg["rcpt_params"][0].upper() and "ENVID" not in \
        msg["mail_params"].upper(), msg
    n = wait_notice(world.notices, qid, server=srv)[0]
    check_notice_envelope(n)
    b = n.rcpt("bob@remote.test")
    assert b["Action"].strip() == "relayed", str(b)
    assert b["Status"].strip().startswith("2."), str(b)
    assert (n.per_message["Original-Envelope-Id"] or "").strip() == "env-456"
    srv.check_sanitizers()


# ---- relayhost ------------------------------------------------------------------------

RELAY_USER, RELAY_PASS = "relayuser", "relay-pass-1"


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_relayhost_with_auth(world, mode):
    world.dns.add("relay.smart.test", "A", "127.0.0.6")
    sink = world.sink("127.0.0.6", "relay.smart.test", auth=(RELAY_USER, RELAY_PASS),
                      implicit_tls=mode == "implicit")
    target = "relay.smart.test:%d" if mode == "starttls" else "[relay.smart.test]:%d"
    srv = world.server(delivery={
        "relayhost": target % world.port, "relayhost_tls": mode,
        "relayhost_tls_policy": "verify", "relayhost_user": RELAY_USER,
        "relayhost_password": RELAY_PASS})
    # remote.test is not in the DNS at all: the relayhost takes it without an MX lookup
    qid = submit(srv, "bob@remote.test")
    msg = sink.wait_messages(1)[0]
    assert msg["auth"] == RELAY_USER
    assert msg["tls"] is not None and msg["sni"] == "relay.smart.test", msg
    rec = wait_record(srv, qid, "sent")[0]
    assert rec["policy_source"] == "relayhost" and rec["tls_policy"] == "verify", rec
    assert rec["cert"] == "verified" and rec["mx"] == "relay.smart.test", rec
    assert rec["ip"] == "127.0.0.6" and rec["port"] == world.port, rec
    assert rec["dnssec"] == "", rec  # no MX answer: no DNSSEC status
    assert ("remote.test", "MX") not in world.dns.queries
    assert RELAY_PASS not in srv.log()
    srv.check_sanitizers()


@pytest.mark.parametrize("relay_kind", ["no_starttls", "wrong_name"])
def test_relayhost_without_verified_tls_gets_no_password(world, relay_kind):
    """relayhost_tls_policy = verify (the default): a relay without STARTTLS, or with a
    certificate for another name, is not used, and the password never leaves."""
    world.dns.add("relay.smart.test", "A", "127.0.0.6")
    sink = world.sink("127.0.0.6", "relay.smart.test", auth=(RELAY_USER, RELAY_PASS),
                      cert=None if relay_kind == "no_starttls" else "wrong")
    srv = world.server(delivery={
        "relayhost": "relay.smart.test:%d" % world.port, "relayhost_user": RELAY_USER,
        "relayhost_password": RELAY_PASS})
    qid = submit(srv, "bob@remote.test")
    a = wait_attempts(srv, qid, 1, status="deferred")["attempts"][0]
    assert a["tls_policy"] == "verify" and a["policy_source"] == "relayhost", a
    if relay_kind == "no_starttls":
        assert a["reason"].startswith("TLS required by policy"), a
    else:
        assert a["reason"].startswith("certificate verification failed for relay.smart.test"), a
        assert a["cert"] == "failed", a
    assert not any(c.upper().startswith("AUTH") for _, c in sink.commands), sink.commands
    assert sink.messages == []
    delete(srv, qid)
    srv.check_sanitizers()


def test_relayhost_wrong_password_defers_with_535(world):
    world.dns.add("relay.smart.test", "A", "127.0.0.6")
    sink = world.sink("127.0.0.6", "relay.smart.test", auth=(RELAY_USER, RELAY_PASS))
    srv = world.server(delivery={
        "relayhost": "relay.smart.test:%d" % world.port, "relayhost_user": RELAY_USER,
        "relayhost_password": "not-the-password"})
    qid = submit(srv, "bob@remote.test")
    a = wait_attempts(srv, qid, 1, status="deferred")["attempts"][0]
    assert a["code"] == 535, a
    assert "535 5.7.8" in a["reply"], a
    assert sink.messages == []
    assert "not-the-password" not in srv.log()
    delete(srv, qid)
    srv.check_sanitizers()


# ---- restart ---------------------------------------------------------------------------

def test_restart_resumes_deferred_message(world):
    sink = world.remote(fail_at="rcpt", fail_code=451, fail_text="4.3.0 come back later")
    srv = world.server()
    qid = submit(srv, "bob@remote.test")
    wait_attempts(srv, qid, 1, status="deferred")
    assert srv.stop() == 0
    n_before = len(db_attempts(srv, qid))
    sink.fail_at = None
    srv.start()
    sink.wait_messages(1, timeout=20)
    wait_gone(srv, qid)
    assert len(sink.messages) == 1
    recs = db_attempts(srv, qid)
    assert len(recs) > n_before and recs[-1]["status"] == "sent", recs
    assert recs[-1]["attempt_no"] >= 2, recs
    srv.check_sanitizers()


def test_sigterm_lets_delivery_in_flight_finish(world):
    """SIGTERM while the remote server is still taking the message: the delivery finishes
    within limits.shutdown_grace and is recorded, so a restart does not send it again."""
    world.mx("remote.test", (10, "mx1.remote.test", "127.0.0.2"))
    sink = SlowSink(host="127.0.0.2", port=world.port, name="mx1.remote.test",
                    cert=world.certs.good("mx1.remote.test"))
    sink.delay = 1.0
    sink.start()
    world.sinks.append(sink)
    srv = world.server(limits={"shutdown_grace": "10s"})
    qid = submit(srv, "bob@remote.test")
    wait_until(lambda: any(c.upper() == "DATA" for _, c in sink.commands), 10, "DATA at the sink")
    assert sink.messages == []
    assert srv.stop() == 0
    assert len(sink.messages) == 1
    srv.check_sanitizers()
    assert [r["status"] for r in db_attempts(srv, qid)] == ["sent"], db_attempts(srv, qid)
    srv.start()
    assert cli(srv, "list").json == {"messages": []}
    p = cli(srv, "show", qid, check=False)
    assert p.returncode == 67, (p.returncode, p.stdout)
    time.sleep(1.2)  # a scan or two (scan_interval 1s): nothing goes out again
    assert len(sink.messages) == 1
    srv.check_sanitizers()


def test_sent_record_has_final_reply_status(world):
    """The record (and log line) of a delivered recipient carries the enhanced status of the
    reply it quotes: 250 2.0.0 after the data, not the RCPT's 2.1.5."""
    world.remote()
    srv = world.server()
    qid = submit(srv, "bob@remote.test")
    rec = wait_record(srv, qid, "sent")[0]
    assert rec["reply"].startswith("250 2.0.0"), rec
    assert rec["enh"] == "2.0.0", rec
    f, line = sent_line(srv, qid)
    assert f["dsn"] == "2.0.0", line
    srv.check_sanitizers()
