"""Smoke: the server starts on a config file, accepts mail over STARTTLS and implicit TLS,
and delivers it into Maildir with a Received header naming the TLS facts."""
import smtplib

from conftest import TEST_LOGIN, TEST_PASSWORD, Dialog, client_tls_context, send_one, simple_message


def test_starttls_delivery(server):
    code, text = send_one(server.ports["mx"])
    assert code == 250 and "2.0.0 Ok: queued as" in text, text
    qid = text.split()[-1]
    msgs = server.wait_messages("alice@example.test", 1)
    m = msgs[0].decode()
    assert "Received: from client.test (unknown [127.0.0.1])" in m
    assert "(using TLSv1.3 with cipher TLS_" in m
    assert "with ESMTPS id %s" % qid in m
    assert m.startswith("Return-Path: <a@sender.test>\r\nDelivered-To: alice@example.test\r\n")
    server.wait_log("event=delivered qid=%s" % qid)


def test_implicit_tls_smtplib(server):
    s = smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], timeout=10,
                         context=client_tls_context())
    s.ehlo("client.test")
    assert "starttls" not in s.esmtp_features
    s.login(TEST_LOGIN, TEST_PASSWORD)
    s.sendmail("a@sender.test", ["bob@example.test"], simple_message())
    s.quit()
    m = server.wait_messages("bob@example.test", 1)[0].decode()
    assert "with ESMTPSA id" in m and TEST_LOGIN not in m


def test_plain_mx_says_esmtp(server):
    code, text = send_one(server.ports["mx"], starttls=False)
    assert code == 250, text
    m = server.wait_messages("alice@example.test", 1)[0].decode()
    assert "with ESMTP id" in m and "using TLS" not in m


def test_greeting_and_ehlo(server):
    d = Dialog(server.ports["mx"])
    code, text = d.reply()
    assert code == 220 and text == "220 mx.example.test ESMTP sealmail"
    code, text = d.cmd("EHLO client.test")
    for ext in ("PIPELINING", "SIZE", "STARTTLS", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8",
                "CHUNKING", "DSN"):
        assert ext in text, text
    assert d.cmd("QUIT")[0] == 221
    d.close()


def test_ipv6_listener(make_server):
    """An IPv6 listener (loopback ::1) accepts and delivers; the client address is logged
    and put into Received as IPv6."""
    import socket as _s
    if not _s.has_ipv6:
        import pytest
        pytest.skip("no IPv6")
    server = make_server(start=False)
    with open(server.conf) as f:
        text = f.read()
    text = text.replace("mx = 127.0.0.1:%d" % server.ports["mx"], "mx = [::1]:%d" % server.ports["mx"])
    with open(server.conf, "w") as f:
        f.write(text)
    server.proc = None
    env_ready = server.start(wait=False)
    import time
    deadline = time.time() + 20
    while time.time() < deadline and "event=queue_ready" not in server.log():
        time.sleep(0.1)
    s = _s.create_connection(("::1", server.ports["mx"]), timeout=10)
    s.close()
    d = Dialog(server.ports["mx"], host="::1")
    assert d.reply()[0] == 220
    d.cmd("EHLO client.test")
    assert d.cmd("MAIL FROM:<a@sender.test>")[0] == 250
    assert d.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert d.cmd("DATA")[0] == 354
    d.send(simple_message() + "\r\n.\r\n")
    assert d.reply()[0] == 250
    d.close()
    m = server.wait_messages("alice@example.test", 1)[0].decode()
    assert "(unknown [IPv6:::1])" in m
    assert env_ready
    server.wait_log("ip=::1 listener=mx")
