"""The command line: `sealmail config check|show` (settings with their sources, errors as
file:line: option: message with exit 78), `sealmail domain|mailbox add|list|remove` with
--json, aliases and their exit codes, and an alias added while the server runs delivers."""
import json
import os
import re
import subprocess

import pytest

import certs
from conftest import BIN, ENV_SAN, Dialog, run_cli, send_one, simple_message

EX_USAGE, EX_DATAERR, EX_CONFIG = 64, 65, 78


@pytest.fixture
def conf(tmp_path):
    """A config file of a few lines; returns (path, write) where write(text) replaces it."""
    path = str(tmp_path / "sealmail.conf")

    def write(text):
        with open(path, "w") as f:
            f.write(text)
        return path
    write('data_dir = %s\nuser = ""\n' % (tmp_path / "data"))
    return path, write


def cli(*args, conf=None, input=None):
    return run_cli(list(args), conf=conf, check=False, input=input)


# ---- config ----

def test_config_check_prints_settings_with_sources(tmp_path, conf):
    path, write = conf
    ca = certs.TestCA(str(tmp_path / "pki"))
    leaf = ca.issue("mx.example.test")
    write('# a comment\n'
          'hostname = mx.example.test\n'
          'data_dir = %s\n'
          'user = ""\n'
          '[limits]\n'
          'message_size = 20M\n'
          'shutdown_grace = 90s\n'
          '[tls]\n'
          'cert = %s\n'
          'key = %s\n' % (tmp_path / "data", leaf.fullchain, leaf.privkey))
    p = cli("config", "check", "-c", path)
    assert p.returncode == 0, p.stderr
    out = p.stdout

    def line(opt):
        m = [l for l in out.splitlines() if re.match(r"%s = " % re.escape(opt), l)]
        assert len(m) == 1, (opt, out)
        return m[0]
    assert re.search(r"# %s:2$" % re.escape(path), line("hostname")), line("hostname")
    assert "mx.example.test" in line("hostname")
    assert re.search(r"limits\.message_size = 20M\s+# %s:6$" % re.escape(path), out, re.M), out
    assert re.search(r"limits\.shutdown_grace = 90s\s+# %s:7$" % re.escape(path), out, re.M) \
        or re.search(r"limits\.shutdown_grace = 1m30s\s+#", out) or "shutdown_grace" in out
    assert line("limits.recipients").endswith("# default"), line("limits.recipients")
    assert re.search(r"# %s:9$" % re.escape(path), line("tls.cert")), line("tls.cert")
    assert leaf.fullchain in line("tls.cert") and leaf.privkey in line("tls.key")
    assert out.rstrip().endswith("config ok: %s" % path), out
    # -n: only what the file sets
    p = cli("config", "check", "-n", "-c", path)
    assert p.returncode == 0
    assert "limits.message_size = 20M" in p.stdout and "limits.recipients" not in p.stdout
    # show prints the same settings in the file's own syntax
    p = cli("config", "show", "-c", path)
    assert p.returncode == 0 and p.stdout.startswith("# config: %s" % path), p.stdout
    assert "limits.message_size = 20M" in p.stdout


@pytest.mark.parametrize("body,line,opt,why", [
    ("[limits]\nmesage_size = 2M\n", 4, "limits.mesage_size", "unknown option"),
    ("[limits]\nmessage_size = lots\n", 4, "limits.message_size", "not a size"),
    ("[limits]\nrecipients = 0\n", 4, "limits.recipients", ""),
    ("[listen]\nmx = localhost:25\n", 4, "listen.mx", "numeric"),
    ("hostname = -bad-\n", 3, "hostname", "domain name"),
    ("[tls]\ncert = /nonexistent/fullchain.pem\nkey = /nonexistent/privkey.pem\n", 4,
     "tls.cert", ""),
])
def test_config_check_reports_file_line_option(conf, body, line, opt, why):
    path, write = conf
    with open(path) as f:
        base = f.read()
    write(base + body)
    p = cli("config", "check", "-c", path)
    assert p.returncode == EX_CONFIG, (p.returncode, p.stdout, p.stderr)
    assert "%s:%d: %s:" % (path, line, opt) in p.stderr, p.stderr
    assert why in p.stderr, p.stderr
    assert "config ok" not in p.stdout
    # serve refuses the same file with the same message and exit code, before binding
    s = subprocess.run([BIN, "serve", "-c", path], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, **ENV_SAN))
    assert s.returncode == EX_CONFIG, (s.returncode, s.stderr)
    assert "%s:%d: %s:" % (path, line, opt) in s.stderr, s.stderr


def test_config_error_in_included_file(tmp_path, conf):
    path, write = conf
    inc = tmp_path / "conf.d"
    inc.mkdir()
    (inc / "limits.conf").write_text("[limits]\nrecipients = 50\nerrors = many\n")
    with open(path) as f:
        base = f.read()
    write(base + "include = conf.d/*.conf\n")
    p = cli("config", "check", "-c", path)
    assert p.returncode == EX_CONFIG
    assert "%s:3: limits.errors:" % (inc / "limits.conf") in p.stderr, p.stderr
    (inc / "limits.conf").write_text("[limits]\nrecipients = 50\n")
    p = cli("config", "check", "-c", path)
    assert p.returncode == 0, p.stderr
    assert re.search(r"limits\.recipients = 50\s+# %s:2$" % re.escape(str(inc / "limits.conf")),
                     p.stdout, re.M), p.stdout


def test_config_cli_usage_errors(conf):
    path, _ = conf
    assert cli("config", "check", "--bogus", "-c", path).returncode == EX_USAGE
    assert cli("config", "frob", "-c", path).returncode == EX_USAGE
    p = cli("config", "check", "-c", path + ".missing")
    assert p.returncode == EX_CONFIG and path + ".missing" in p.stderr


# ---- domains ----

def test_domain_add_list_remove(conf):
    path, _ = conf
    p = cli("domain", "add", "Example.COM", conf=path)
    assert p.returncode == 0 and p.stdout == "domain example.com added\n", p
    p = cli("domain", "add", "example.com", conf=path)
    assert p.returncode == 1 and "already exists" in p.stderr
    p = cli("domain", "add", "bad_domain!", conf=path)
    assert p.returncode == EX_DATAERR and "not a valid domain name" in p.stderr
    assert cli("domain", "add", "[192.0.2.1]", conf=path).returncode == EX_DATAERR
    assert cli("domain", "add", "-bad.test", conf=path).returncode in (EX_DATAERR, EX_USAGE)
    p = cli("domain", "add", "other.test", "--json", conf=path)
    assert p.returncode == 0
    assert json.loads(p.stdout) == {"domain": "other.test", "status": "added"}
    p = cli("domain", "list", conf=path)
    assert p.returncode == 0 and p.stdout.split() == ["example.com", "other.test"], p.stdout
    p = cli("domain", "list", "--json", conf=path)
    assert json.loads(p.stdout) == ["example.com", "other.test"]
    assert cli("mailbox", "add", "bob@example.com", conf=path).returncode == 0
    assert cli("mailbox", "add", "info@example.com", "--alias", "bob@example.com",
               conf=path).returncode == 0
    p = cli("domain", "remove", "EXAMPLE.com", conf=path)
    assert p.returncode == 0 and p.stdout.startswith("domain example.com removed"), p.stdout
    # its mailboxes went with it
    p = cli("mailbox", "list", "--json", conf=path)
    assert p.returncode == 0 and json.loads(p.stdout) == [], p.stdout
    p = cli("domain", "remove", "example.com", conf=path)
    assert p.returncode == 1 and "not found" in p.stderr
    p = cli("domain", "remove", "other.test", "--json", conf=path)
    assert json.loads(p.stdout) == {"domain": "other.test", "status": "removed"}
    p = cli("domain", "list", "--json", conf=path)
    assert json.loads(p.stdout) == []
    # usage errors
    assert cli("domain", "frob", "x.test", conf=path).returncode == EX_USAGE
    assert cli("domain", "list", "--bogus", conf=path).returncode == EX_USAGE
    assert cli("domain", "add", conf=path).returncode == EX_USAGE
    assert cli("domain", "add", "a.test", "b.test", conf=path).returncode == EX_USAGE
    # a config that cannot be read
    p = cli("domain", "list", conf=path + ".missing")
    assert p.returncode == EX_CONFIG, p


# ---- mailboxes and aliases ----

def test_mailbox_add_list_remove_and_aliases(conf):
    path, _ = conf
    assert cli("domain", "add", "example.com", conf=path).returncode == 0
    assert cli("domain", "add", "other.test", conf=path).returncode == 0
    p = cli("mailbox", "add", "x@nolocal.test", conf=path)
    assert p.returncode == 1 and "not local" in p.stderr
    p = cli("mailbox", "add", "Bob@Example.COM", conf=path)
    assert p.returncode == 0 and p.stdout == "mailbox bob@example.com added\n", p
    p = cli("mailbox", "add", "bob@example.com", conf=path)
    assert p.returncode == 1 and "already exists" in p.stderr
    p = cli("mailbox", "add", "not-an-address", conf=path)
    assert p.returncode == EX_DATAERR
    p = cli("mailbox", "add", "info@example.com", "--alias", "BOB@example.com", conf=path)
    assert p.returncode == 0 and p.stdout == "alias info@example.com -> bob@example.com added\n", p
    p = cli("mailbox", "add", "info@example.com", conf=path)
    assert p.returncode == 1 and "alias of bob@example.com" in p.stderr, p.stderr
    p = cli("mailbox", "add", "self@example.com", "--alias", "self@example.com", conf=path)
    assert p.returncode == EX_DATAERR and "itself" in p.stderr
    p = cli("mailbox", "add", "later@other.test", "--alias=carol@other.test", "--json", conf=path)
    assert p.returncode == 0 and "does not exist" in p.stderr, p
    assert json.loads(p.stdout) == {"address": "later@other.test",
                                    "alias_of": "carol@other.test", "status": "added"}
    p = cli("mailbox", "add", "fwd@example.com", "--alias", "x@nolocal.test", conf=path)
    assert p.returncode == 1 and "not local" in p.stderr, p
    p = cli("mailbox", "add", "bob@example.com", "--bogus", conf=path)
    assert p.returncode == EX_USAGE
    # list: text and JSON, all or one domain
    p = cli("mailbox", "list", conf=path)
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert "bob@example.com" in lines and "info@example.com -> bob@example.com" in lines, lines
    assert "later@other.test -> carol@other.test" in lines
    p = cli("mailbox", "list", "example.com", "--json", conf=path)
    assert json.loads(p.stdout) == [{"address": "bob@example.com", "alias_of": None},
                                    {"address": "info@example.com",
                                     "alias_of": "bob@example.com"}], p.stdout
    p = cli("mailbox", "list", "nope.test", conf=path)
    assert p.returncode == 1 and "not found" in p.stderr
    # remove
    p = cli("mailbox", "remove", "info@example.com", "--json", conf=path)
    assert p.returncode == 0
    assert json.loads(p.stdout) == {"address": "info@example.com", "alias_of": "bob@example.com",
                                    "status": "removed"}
    p = cli("mailbox", "remove", "info@example.com", conf=path)
    assert p.returncode == 1 and "not found" in p.stderr
    p = cli("mailbox", "remove", "bob@example.com", conf=path)
    assert p.returncode == 0 and p.stdout.startswith("mailbox bob@example.com removed")
    p = cli("mailbox", "remove", "later@other.test", conf=path)
    assert p.returncode == 0 and p.stdout == "alias later@other.test removed\n"
    assert json.loads(cli("mailbox", "list", "--json", conf=path).stdout) == []
    assert cli("mailbox", "remove", conf=path).returncode == EX_USAGE
    assert cli("mailbox", "list", "--alias", "a@b.test", conf=path).returncode == EX_USAGE


def _rcpt(server, addr):
    d = Dialog(server.ports["mx"])
    try:
        d.reply()
        d.cmd("EHLO client.test")
        d.cmd("MAIL FROM:<a@sender.test>")
        return d.cmd("RCPT TO:<%s>" % addr)
    finally:
        d.close()


def test_alias_delivers_to_target_mailbox(make_server):
    server = make_server()
    # added while the server runs: no reload needed
    assert cli("mailbox", "add", "info@example.test", "--alias", "alice@example.test",
               conf=server.conf).returncode == 0
    assert cli("mailbox", "add", "sales@example.test", "--alias", "info@example.test",
               conf=server.conf).returncode == 0
    code, text = send_one(server.ports["mx"], rcpt="info@example.test",
                          data=simple_message("via alias"))
    assert code == 250, text
    code, text = send_one(server.ports["mx"], rcpt="Sales@Example.test",
                          data=simple_message("via chain"), starttls=False)
    assert code == 250, text
    msgs = server.wait_messages("alice@example.test", 2)
    assert not os.path.exists(server.maildir("info@example.test"))
    assert not os.path.exists(server.maildir("sales@example.test"))
    subjects = sorted(re.search(rb"Subject: (.*)\r\n", m).group(1) for m in msgs)
    assert subjects == [b"via alias", b"via chain"]
    assert all(b"Delivered-To: alice@example.test\r\n" in m for m in msgs)
    server.wait_log("to=<info@example.test> mailbox=alice@example.test")
    # an alias whose target does not exist (yet) is refused, then works once it does
    assert cli("mailbox", "add", "team@example.test", "--alias", "carol@example.test",
               conf=server.conf).returncode == 0
    code, text = _rcpt(server, "team@example.test")
    assert 500 <= code < 600, text
    assert cli("mailbox", "add", "carol@example.test", conf=server.conf).returncode == 0
    code, text = send_one(server.ports["mx"], rcpt="team@example.test")
    assert code == 250, text
    server.wait_messages("carol@example.test", 1)
    # a loop is refused
    assert cli("mailbox", "add", "loop1@example.test", "--alias", "loop2@example.test",
               conf=server.conf).returncode == 0
    assert cli("mailbox", "add", "loop2@example.test", "--alias", "loop1@example.test",
               conf=server.conf).returncode == 0
    code, text = _rcpt(server, "loop1@example.test")
    assert 500 <= code < 600, text
    # removing the alias: mail to it is refused
    assert cli("mailbox", "remove", "info@example.test", conf=server.conf).returncode == 0
    code, text = _rcpt(server, "info@example.test")
    assert 500 <= code < 600, text


def test_serve_names_config_line_of_bad_certificate(tmp_path, conf):
    """config check only sees that the files are there; serve loads them and, when the key
    does not belong to the certificate, says which config line is wrong and exits 78."""
    path, write = conf
    ca = certs.TestCA(str(tmp_path / "pki"))
    a = ca.issue("mx.example.test")
    b = ca.issue("other.example.test")
    with open(path) as f:
        base = f.read()
    write(base + "[tls]\ncert = %s\nkey = %s\n" % (a.fullchain, b.privkey))
    s = subprocess.run([BIN, "serve", "-c", path], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, **ENV_SAN))
    assert s.returncode == EX_CONFIG, (s.returncode, s.stderr)
    assert "%s:5: tls.key: %s" % (path, b.privkey) in s.stderr, s.stderr
    assert "mismatch" in s.stderr or "does not match" in s.stderr, s.stderr
    with open(b.fullchain, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    write(base + "[tls]\ncert = %s\nkey = %s\n" % (a.fullchain, a.privkey) +
          "cert = %s\nkey = %s\n" % (b.fullchain, b.privkey))
    s = subprocess.run([BIN, "serve", "-c", path], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, **ENV_SAN))
    assert s.returncode == EX_CONFIG, (s.returncode, s.stderr)
    assert "%s:6: tls.cert: %s: cannot load certificate chain" % (path, b.fullchain) in s.stderr, \
        s.stderr
