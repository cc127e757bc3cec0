"""`sealmail queue list|show|retry|hold|release|delete [--json]` against a running server
whose mail for remote.test waits in the queue (a sink that answers 451 to RCPT until the
test lets it accept). docs/delivery.md "Looking at the queue": exit codes 0, 64 bad usage,
67 no such message, 69 server not running."""
import os
import re
import time

import pytest

from outbound_world import SENDER, cli, delete, show, submit, wait_attempts, wait_gone, wait_until
# fixtures (pytest finds them in this module's namespace)
from outbound_world import certs, stopped_servers, world  # noqa: F401

REPLY = "451 4.3.0 try again later, please"
ATTEMPT_KEYS = {"rcpt", "rcpt_addr", "time", "status", "mx", "ip", "port", "code", "enh", "reply",
                "reason", "stage", "tls_policy", "policy_source", "tls_version", "tls_cipher",
                "cert", "cert_error", "dnssec", "fallback", "attempt_no", "delay"}
UNKNOWN = "01JD3K7Q9X4M2B7C"   # a well-formed queue ID that no test message has
SLOW = {"retry_interval": "60s", "retry_max": "60s"}  # after one deferral, nothing until asked


def deferring(world, queue=None):
    """A sink answering 451 to every RCPT and a server delivering to it."""
    sink = world.remote(fail_at="rcpt", fail_code=451, fail_text=REPLY[4:])
    srv = world.server(queue=queue)
    return sink, srv


def listed(srv):
    return {m["id"]: m for m in cli(srv, "list").json["messages"]}


def wait_state(srv, qid, state, timeout=10):
    return wait_until(lambda: (listed(srv).get(qid) or {}).get("state") == state and
                      listed(srv)[qid], timeout, "%s to be %s" % (qid, state), step=0.2,
                      server=srv)


def test_list_table_and_json(world):
    sink, srv = deferring(world, queue=SLOW)
    q1 = submit(srv, ["bob@remote.test", "carol@remote.test"])
    q2 = submit(srv, "dave@remote.test")
    wait_attempts(srv, q1, 2, status="deferred")
    wait_attempts(srv, q2, 1, status="deferred")
    m = {q: wait_state(srv, q, "waiting") for q in (q1, q2)}
    for q, n in ((q1, 2), (q2, 1)):
        e = m[q]
        assert e["from"] == SENDER and e["recipients"] == n and e["pending"] == n, e
        assert e["attempts"] == 1 and e["reason"] == REPLY, e
        assert isinstance(e["size"], int) and e["size"] > 100, e
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", e["arrival"]), e
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", e["next_try"]), e
        assert e["next_try"] > e["arrival"], e
    assert set(m) == {q1, q2}
    text = cli(srv, "list", json_out=False).stdout
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["ID", "Arrival", "(UTC)"], text
    for head in ("State", "Sender", "Pending", "Reason"):
        assert head in lines[0], text
    rows = {l.split()[0]: l for l in lines[1:] if l.split() and l.split()[0] in (q1, q2)}
    assert set(rows) == {q1, q2}, text
    assert "waiting" in rows[q1] and SENDER in rows[q1] and " 2/2 " in rows[q1], text
    assert " 1/1 " in rows[q2] and REPLY in rows[q2], text
    assert lines[-1] == "-- 2 messages in the queue", text
    assert sink.messages == []
    cli(srv, "delete", "ALL")
    assert cli(srv, "list").json == {"messages": []}
    srv.check_sanitizers()


def test_show_history(world):
    sink, srv = deferring(world)
    qid = submit(srv, ["bob@remote.test", "carol@remote.test"])
    j = wait_attempts(srv, qid, 4, status="deferred")  # two rounds of two recipients
    assert j["id"] == qid and j["from"] == SENDER
    assert j["recipients"] == [
        {"index": 0, "address": "bob@remote.test", "state": "pending"},
        {"index": 1, "address": "carol@remote.test", "state": "pending"}], j
    atts = j["attempts"]
    assert len(atts) >= 4
    for a in atts:
        assert ATTEMPT_KEYS <= set(a), set(a) ^ ATTEMPT_KEYS
        assert a["status"] == "deferred" and a["code"] == 451 and a["reply"] == REPLY, a
        assert a["mx"] == "mx1.remote.test" and a["ip"] == "127.0.0.2", a
        assert a["port"] == world.port and a["tls_policy"] == "may", a
        assert a["policy_source"] == "default" and a["dnssec"] == "insecure", a
        assert a["fallback"] is False and a["tls_version"].startswith("TLSv1."), a
        assert isinstance(a["delay"], (int, float)) and a["delay"] >= 0, a
    assert [a["time"] for a in atts] == sorted(a["time"] for a in atts)  # oldest first
    assert [a["attempt_no"] for a in atts[:4]] == [1, 1, 2, 2], atts
    assert {a["rcpt_addr"] for a in atts[:2]} == {"bob@remote.test", "carol@remote.test"}
    assert [a["rcpt"] for a in atts if a["rcpt_addr"] == "carol@remote.test"][0] == 1

    cli(srv, "hold", qid)  # the history stays still while the text is compared
    j = show(srv, qid)
    text = cli(srv, "show", qid, json_out=False).stdout
    assert text.splitlines()[0] == "Message %s" % qid, text
    assert "from:        <x@sender.test>" in text, text
    assert re.search(r"^\s+0\s+pending\s+<bob@remote\.test>$", text, re.M), text
    assert re.search(r"^\s+1\s+pending\s+<carol@remote\.test>$", text, re.M), text
    hist = text.split("History:\n", 1)[1].splitlines()
    hist = [h for h in hist if h.strip()]
    assert len(hist) == len(j["attempts"]), text
    for h, a in zip(hist, j["attempts"]):
        assert "to=<%s>" % a["rcpt_addr"] in h, h
        assert "relay=mx1.remote.test[127.0.0.2]:%d" % world.port in h, h
        assert "status=deferred" in h and "dsn=4.3.0" in h and REPLY in h, h
        assert "attempt=%d" % a["attempt_no"] in h, h
    delete(srv, qid)
    srv.check_sanitizers()


def test_hold_and_release(world):
    sink, srv = deferring(world, queue=SLOW)
    qid = submit(srv, "bob@remote.test")
    wait_attempts(srv, qid, 1, status="deferred")
    wait_state(srv, qid, "waiting")
    assert cli(srv, "hold", qid).json == {"done": [{"id": qid, "action": "held"}]}
    assert listed(srv)[qid]["state"] == "held"
    assert "held" in cli(srv, "list", json_out=False).stdout
    sink.fail_at = None
    # retry does not touch a held message
    r = cli(srv, "retry", qid).json
    assert r["done"][0]["id"] == qid and "held" in r["done"][0]["action"], r
    assert r["done"][0]["action"] != "retry", r
    cli(srv, "retry", "ALL")
    time.sleep(2.5)  # two scans (scan_interval 1s): nothing may go out meanwhile
    assert sink.messages == []
    assert listed(srv)[qid]["state"] == "held"
    assert len(show(srv, qid)["attempts"]) == 1
    assert cli(srv, "release", qid).json == {"done": [{"id": qid, "action": "released"}]}
    sink.wait_messages(1, timeout=10)
    wait_gone(srv, qid)
    assert len(sink.messages) == 1
    srv.check_sanitizers()


def test_retry_of_held_message_does_not_claim_a_retry(world):
    sink, srv = deferring(world, queue=SLOW)
    qid = submit(srv, "bob@remote.test")
    wait_attempts(srv, qid, 1, status="deferred")
    cli(srv, "hold", qid)
    out = cli(srv, "retry", qid, json_out=False).stdout
    first, last = out.splitlines()[0], out.splitlines()[-1]
    assert first.startswith(qid + ": ") and "held" in first and "release it first" in first, out
    assert last == "0 messages queued for retry", out
    delete(srv, qid)
    srv.check_sanitizers()


def test_retry_all(world):
    sink, srv = deferring(world, queue=SLOW)
    q1 = submit(srv, "bob@remote.test")
    q2 = submit(srv, "carol@remote.test")
    for q in (q1, q2):
        wait_attempts(srv, q, 1, status="deferred")
        wait_state(srv, q, "waiting")
    sink.fail_at = None
    time.sleep(1.5)   # not due for a minute: nothing goes out by itself
    assert sink.messages == []
    r = cli(srv, "retry", "ALL").json
    assert sorted(d["id"] for d in r["done"]) == sorted([q1, q2]), r
    sink.wait_messages(2, timeout=10)
    for q in (q1, q2):
        wait_gone(srv, q)
    assert sorted(m["rcpts"][0] for m in sink.messages) == ["bob@remote.test",
                                                             "carol@remote.test"]
    assert cli(srv, "list").json == {"messages": []}
    srv.check_sanitizers()


@pytest.mark.parametrize("target", ["id", "ALL"])
def test_delete(world, target):
    sink, srv = deferring(world, queue=SLOW)
    qids = [submit(srv, "bob@remote.test"), submit(srv, "carol@remote.test")]
    for q in qids:
        wait_attempts(srv, q, 1, status="deferred")
    if target == "id":
        assert cli(srv, "delete", qids[0]).json["done"][0]["id"] == qids[0]
        gone, kept = qids[:1], qids[1:]
    else:
        out = cli(srv, "delete", "ALL", json_out=False).stdout
        assert out.splitlines()[-1] == "2 messages deleted", out
        gone, kept = qids, []
    for q in gone:
        p = cli(srv, "show", q, check=False)
        assert p.returncode == 67, (p.returncode, p.stdout, p.stderr)
        assert not os.path.exists(os.path.join(srv.data, "spool", "queue", q))
    # no notice: nothing new in the queue (a notice is spooled before its message goes),
    # nothing at sender.test's MX
    assert sorted(listed(srv)) == sorted(kept)
    assert world.notices.messages == []
    for q in kept:
        delete(srv, q)
    srv.check_sanitizers()


def test_unknown_id_exits_67(world):
    srv = world.server(notices=False)
    for cmd in ("show", "retry", "hold", "release", "delete"):
        for as_json in (False, True):
            p = cli(srv, cmd, UNKNOWN, json_out=as_json, check=False)
            assert p.returncode == 67, (cmd, p.returncode, p.stdout, p.stderr)
            assert "no such message: %s" % UNKNOWN in p.stderr, p.stderr
            assert p.stdout == "", p.stdout
    srv.check_sanitizers()


def test_server_not_running_exits_69(world):
    srv = world.server(notices=False, start=False)
    for args in (["list"], ["show", UNKNOWN], ["retry", "ALL"]):
        p = cli(srv, *args, check=False)
        assert p.returncode == 69, (args, p.returncode, p.stdout, p.stderr)
        assert p.stdout == ""
    srv.start()
    assert cli(srv, "list").json == {"messages": []}
    assert srv.stop() == 0
    p = cli(srv, "list", check=False)
    assert p.returncode == 69, (p.returncode, p.stdout, p.stderr)
    srv.check_sanitizers()


@pytest.mark.parametrize("args", [["frobnicate"], ["show"], ["show", "NOT-AN-ID"],
                                  ["retry"], ["list", "extra"]])
def test_bad_usage_exits_64(world, args):
    srv = world.server(notices=False, start=False)
    p = cli(srv, *args, json_out=False, check=False)
    assert p.returncode == 64, (args, p.returncode, p.stdout, p.stderr)
    assert "usage: sealmail queue" in p.stderr, p.stderr
