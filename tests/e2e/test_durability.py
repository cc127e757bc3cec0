"""Promise 1 ("250 means durable"): kill -9 of the whole server while many transactions are in
flight loses no acknowledged message; recovery at start moves torn spool files aside and
empties spool/tmp; a killed smtp worker is restarted by the master and service goes on."""
import glob
import os
import re
import signal
import socket
import ssl
import threading
import time

from conftest import Dialog, send_one, simple_message

QID_RE = re.compile(rb"\bid ([0-9A-HJKMNP-TV-Z]{16})\b")
RCPTS = ("alice@example.test", "bob@example.test")


def delivered_qids(server):
    """{qid: number of Maildir files carrying it} over both mailboxes (new/ and tmp-free)."""
    seen = {}
    for addr in RCPTS:
        for p in glob.glob(os.path.join(server.maildir(addr), "new", "*")):
            try:
                with open(p, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            head = data.split(b"\r\n\r\n", 1)[0]
            m = QID_RE.search(head)
            assert m, "delivered file without a queue id in Received: %s\n%r" % (p, head[:600])
            seen[m.group(1).decode()] = seen.get(m.group(1).decode(), 0) + 1
    return seen


def client_loop(port_of, idx, stop, deadline, acked, lock, stats):
    """One client: connections of 1-4 messages each, until stop/deadline/count. Records the
    queue id of every 250 it got. Mode by idx: STARTTLS on mx, plain mx, implicit TLS."""
    mode = ("starttls", "plain", "implicit")[idx % 3]
    per_conn = 1 + idx % 4
    sent = 0
    while not stop.is_set() and time.time() < deadline and sent < 400:
        d = None
        try:
            if mode == "implicit":
                d = Dialog(port_of("submissions"), tls=True, timeout=5)
            else:
                d = Dialog(port_of("mx"), timeout=5)
            if d.reply()[0] != 220:
                continue
            if d.cmd("EHLO c%d.client.test" % idx)[0] != 250:
                continue
            if mode == "starttls":
                d.starttls()
                d.cmd("EHLO c%d.client.test" % idx)
            for n in range(per_conn):
                if stop.is_set():
                    break
                rcpt = RCPTS[(idx + n) % 2]
                if d.cmd("MAIL FROM:<t%d@sender.test>" % idx)[0] != 250:
                    break
                if d.cmd("RCPT TO:<%s>" % rcpt)[0] != 250:
                    break
                if d.cmd("DATA")[0] != 354:
                    break
                body = "line %d of thread %d\r\n" % (sent, idx) * (1 + sent % 7)
                d.send(simple_message("t%d-%d" % (idx, sent), body) + "\r\n.\r\n")
                code, text = d.reply()
                sent += 1
                if code == 250:
                    m = re.search(r"queued as ([0-9A-Z]+)$", text)
                    assert m, text
                    with lock:
                        acked.append(m.group(1))
                else:
                    with lock:
                        stats["non250"] += 1
                    break
            try:
                d.cmd("QUIT")
            except Exception:
                pass
        except (OSError, EOFError, ssl.SSLError, socket.timeout, AssertionError) as e:
            # the server is being killed; whatever was not acknowledged is the client's
            with lock:
                stats["errors"] += 1
                if not stop.is_set() and len(stats["samples"]) < 10:
                    stats["samples"].append("%s %r" % (mode, e))
            time.sleep(0.02)
        finally:
            if d:
                d.close()


def test_sigkill_during_concurrent_transactions(make_server):
    # 20 clients from one address, each reconnecting at once: room above the per-IP limit
    server = make_server(extra="[limits]\nconnections_per_ip = 200\n")
    stop = threading.Event()
    acked = []
    lock = threading.Lock()
    stats = {"errors": 0, "non250": 0, "samples": []}
    deadline = time.time() + 8
    threads = [threading.Thread(target=client_loop,
                                args=(lambda k: server.ports[k], i, stop, deadline, acked, lock,
                                      stats), daemon=True)
               for i in range(20)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    with lock:
        before_kill = len(acked)
        errors_before_kill = stats["errors"]
    server.kill9()
    # the clients find the server gone; they stop by themselves in any case (deadline)
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(timeout=15)
    assert not any(t.is_alive() for t in threads), "client threads did not stop"
    assert before_kill >= 20, "too few messages acknowledged before the kill (%d)" % before_kill
    assert errors_before_kill == 0 and stats["non250"] == 0, stats
    acked_set = set(acked)
    assert len(acked_set) == len(acked), "a queue id was handed out twice"

    server.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        seen = delivered_qids(server)
        missing = acked_set - set(seen)
        if not missing:
            break
        time.sleep(0.2)
    seen = delivered_qids(server)
    missing = acked_set - set(seen)
    dups = {q: n for q, n in seen.items() if n > 1}
    print("acknowledged=%d delivered_ids=%d duplicates=%d client_errors=%d non250=%d" % (
        len(acked_set), len(seen), len(dups), stats["errors"], stats["non250"]))
    if dups:
        print("duplicates (allowed after a crash, at-least-once):", sorted(dups.items())[:20])
    assert not missing, "acknowledged but never delivered: %s\n%s" % (
        sorted(missing)[:20], server.log()[-5000:])
    # nothing that was not handed over shows up out of nowhere, except messages the client
    # never saw a 250 for (killed after commit, before the reply): at most one per client
    assert len(set(seen) - acked_set) <= len(threads), sorted(set(seen) - acked_set)
    # the spool is empty once everything is delivered
    left = [n for n in os.listdir(os.path.join(server.data, "spool", "queue"))]
    deadline = time.time() + 10
    while left and time.time() < deadline:
        time.sleep(0.1)
        left = os.listdir(os.path.join(server.data, "spool", "queue"))
    assert not left, left
    # service is back
    code, text = send_one(server.ports["mx"])
    assert code == 250, text


def _qid(text):
    return text.split()[-1]


def test_recovery_torn_spool_file_and_tmp_leftovers(make_server):
    # retries 1 s apart: the schedule survives the restart, so a long wait would, too
    server = make_server(extra="[queue]\nretry_interval = 1s\nretry_max = 1s\nscan_interval = 1s\n")
    # alice's Maildir path is blocked by a file: deliveries stay deferred in the spool
    mdir = server.maildir("alice@example.test")
    os.makedirs(os.path.dirname(mdir), exist_ok=True)
    with open(mdir, "w") as f:
        f.write("not a directory\n")
    c1, t1 = send_one(server.ports["mx"], data=simple_message("torn", ("x" * 70 + "\r\n") * 80))
    c2, t2 = send_one(server.ports["mx"], data=simple_message("intact"))
    assert c1 == 250 and c2 == 250, (t1, t2)
    torn, intact = _qid(t1), _qid(t2)
    server.wait_log("event=deferred qid=%s" % torn)
    server.wait_log("event=deferred qid=%s" % intact)
    assert server.stop() == 0
    qdir = os.path.join(server.data, "spool", "queue")
    tdir = os.path.join(server.data, "spool", "tmp")
    assert sorted(n for n in os.listdir(qdir) if "." not in n) == sorted([torn, intact])
    # a torn write: the file holds only its first part
    p = os.path.join(qdir, torn)
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(size // 2)
    # a receipt that never finished (no 250 was given for it)
    leftover = os.path.join(tdir, "06H2HRDTJFJM9SEN")
    with open(leftover, "wb") as f:
        f.write(b"SEALMAIL-SPOOL 1\nqid 06H2HRDTJFJM9SEN\narrival 17")
    os.unlink(mdir)

    server.start()
    server.wait_log('event=spool_corrupt name="%s"' % torn)
    msgs = server.wait_messages("alice@example.test", 1)
    server.wait_log("event=removed qid=%s" % intact)
    assert not os.path.exists(leftover), "spool/tmp leftover not removed at start"
    assert os.listdir(tdir) == []
    assert torn not in os.listdir(qdir)
    corrupt = os.listdir(os.path.join(server.data, "spool", "corrupt"))
    assert any(n == torn or n.startswith(torn + ".") for n in corrupt), corrupt
    # the torn message is never delivered, the intact one exactly once
    time.sleep(0.5)
    msgs = server.messages("alice@example.test")
    assert len(msgs) == 1, [m[:300] for m in msgs]
    assert ("id %s" % intact).encode() in msgs[0] and b"Subject: intact" in msgs[0]
    assert "event=delivered qid=%s" % torn not in server.log()


def _worker_pid(server, ip):
    """pid of the worker that logged the last connect from ip."""
    pids = re.findall(r"sealmail\[(\d+)\] smtp(\d+): level=info event=connect session=\S+ ip=%s "
                      % re.escape(ip), server.log())
    assert pids, server.log()[-3000:]
    return int(pids[-1][0]), int(pids[-1][1])


def test_killed_worker_is_restarted(make_server):
    server = make_server()
    assert send_one(server.ports["mx"], starttls=False)[0] == 250
    pid, index = _worker_pid(server, "127.0.0.1")
    assert pid in server.pids()
    # a session on the other worker (another client address) survives the kill
    other = Dialog(server.ports["mx"], src="127.0.0.2")
    assert other.reply()[0] == 220
    assert other.cmd("EHLO other.test")[0] == 250
    opid, oindex = _worker_pid(server, "127.0.0.2")
    os.kill(pid, signal.SIGKILL)
    server.wait_log("event=child_restarted role=smtp index=%d" % index)
    m = re.findall(r"event=child_restarted role=smtp index=%d pid=(\d+)" % index, server.log())
    newpid = int(m[-1])
    assert newpid != pid and newpid in server.pids()
    assert "event=child_died role=smtp index=%d pid=%d signal=9" % (index, pid) in server.log()
    # the same client address reaches the same socket, now served by the new worker
    for starttls in (False, True):
        code, text = send_one(server.ports["mx"], starttls=starttls)
        assert code == 250, text
    assert _worker_pid(server, "127.0.0.1")[0] == newpid
    if oindex != index:
        assert opid != pid
        assert other.cmd("MAIL FROM:<a@sender.test>")[0] == 250
        assert other.cmd("RCPT TO:<bob@example.test>")[0] == 250
        assert other.cmd("DATA")[0] == 354
        other.send(simple_message("other") + "\r\n.\r\n")
        assert other.reply()[0] == 250
        assert other.cmd("QUIT")[0] == 221
        server.wait_messages("bob@example.test", 1)
    other.close()
    server.wait_messages("alice@example.test", 3)
    assert server.stop() == 0


def test_killed_queue_and_lookup_are_restarted(make_server):
    server = make_server()
    assert send_one(server.ports["mx"])[0] == 250
    server.wait_messages("alice@example.test", 1)
    for role in ("queue", "lookup"):
        pids = re.findall(r"sealmail\[(\d+)\] %s: level=info event=%s_ready" % (role, role),
                          server.log())
        pid = int(pids[-1])
        assert pid in server.pids()
        os.kill(pid, signal.SIGKILL)
        server.wait_log("event=child_restarted role=%s" % role)
        server.wait_log("event=%s_ready" % role, count=2)
    # workers reconnect to the new lookup and queue; mail flows again
    deadline = time.time() + 10
    while True:
        code, text = send_one(server.ports["mx"], rcpt="bob@example.test")
        if code == 250:
            break
        assert 400 <= code < 500 and time.time() < deadline, text
        time.sleep(0.2)
    server.wait_messages("bob@example.test", 1, timeout=15)
    assert server.stop() == 0
