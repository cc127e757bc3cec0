"""The resolver (src/dns/resolve.c) against a fake authoritative DNS server (fakedns.py), through
tests/tools/dns_probe (sanitizer build: a leak or a memory error fails the probe's exit code).
Needs DNS_PROBE=path/to/build/san/tools/dns_probe; skipped without it.
Every domain below is under .test, the RFC 6761 name libunbound would answer NXDOMAIN for
locally unless the resolver makes it transparent."""
import json
import os
import subprocess

import pytest

from fakedns import FakeDNS

PROBE = os.environ.get("DNS_PROBE")
pytestmark = pytest.mark.skipif(not PROBE, reason="DNS_PROBE not set (make build/san/tools/dns_probe)")

ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
           UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")


@pytest.fixture(scope="module")
def dns():
    d = FakeDNS().start()
    yield d
    d.stop()


def run(dns, *args, forwarder=True, check=True, timeout=30):
    cmd = [PROBE] + (["--forwarder", dns.forwarder] if forwarder else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    if check:
        assert p.returncode == 0, "%s: exit %d\n%s\n%s" % (cmd, p.returncode, p.stdout, p.stderr)
    return p


def probe(dns, *args, **kw):
    p = run(dns, *args, **kw)
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.strip()]
    return lines if ("--repeat" in args or "--parallel" in args) else lines[0]


def names(route):
    return [h["name"] for h in route["hosts"]]


def test_mx_sorted_by_preference(dns):
    dns.add("order.test", "MX", (30, "c.order.test"))
    dns.add("order.test", "MX", (10, "a.order.test"))
    dns.add("order.test", "MX", (20, "b.order.test"))
    for h, ip in (("a", "127.0.0.11"), ("b", "127.0.0.12"), ("c", "127.0.0.13")):
        dns.add("%s.order.test" % h, "A", ip)
    r = probe(dns, "order.test")
    assert r["status"] == "ok", r
    assert names(r) == ["a.order.test", "b.order.test", "c.order.test"]
    assert [h["pref"] for h in r["hosts"]] == [10, 20, 30]
    assert [h["addrs"] for h in r["hosts"]] == [["127.0.0.11"], ["127.0.0.12"], ["127.0.0.13"]]
    assert r["implicit"] is False and r["mx_sec"] == "insecure"


def test_equal_preferences_in_random_order(dns):
    dns.add("equal.test", "MX", (10, "x.equal.test"))
    dns.add("equal.test", "MX", (10, "y.equal.test"))
    dns.add("equal.test", "MX", (5, "first.equal.test"))
    for h in ("x", "y", "first"):
        dns.add("%s.equal.test" % h, "A", "127.0.0.20")
    # 20 routes in one process (later ones from libunbound's cache): both orders must show;
    # the chance that one of them does not is 2 * 2**-20
    routes = probe(dns, "--repeat", "20", "equal.test")
    assert len(routes) == 20
    orders = {tuple(names(r)) for r in routes}
    assert orders == {("first.equal.test", "x.equal.test", "y.equal.test"),
                      ("first.equal.test", "y.equal.test", "x.equal.test")}


def test_implicit_mx_from_address(dns):
    dns.add("implicit.test", "A", "127.0.0.30")
    dns.add("implicit.test", "TXT", "v=spf1 -all")
    r = probe(dns, "implicit.test")
    assert r["status"] == "ok", r
    assert r["implicit"] is True
    assert r["hosts"] == [{"name": "implicit.test", "pref": 0, "sec": "insecure",
                           "addrs": ["127.0.0.30"], "why": ""}]


def test_no_mx_no_address(dns):
    dns.add("bare.test", "TXT", "nothing here")
    r = probe(dns, "bare.test")
    assert r["status"] == "no-address", r
    assert r["implicit"] is True and "bare.test" in r["why"]


def test_null_mx(dns):
    dns.add("nullmx.test", "MX", (0, "."))
    dns.add("nullmx.test", "A", "127.0.0.31")  # must not be used as implicit MX
    r = probe(dns, "nullmx.test")
    assert r["status"] == "null-mx", r
    assert r["hosts"] == []
    assert "nullmx.test" in r["why"]


def test_nxdomain(dns):
    r = probe(dns, "does-not-exist.test")
    assert r["status"] == "nxdomain", r
    assert "does-not-exist.test" in r["why"] and "MX" in r["why"]


def test_servfail_is_tempfail(dns):
    dns.servfail("broken.test")
    r = probe(dns, "broken.test")
    assert r["status"] == "tempfail", r
    assert "SERVFAIL" in r["why"] and "broken.test" in r["why"]


def test_servfail_of_only_mx_host_is_tempfail(dns):
    dns.add("sfhost.test", "MX", (10, "mx.sfhost.test"))
    dns.servfail("mx.sfhost.test")
    r = probe(dns, "sfhost.test")
    assert r["status"] == "tempfail", r
    assert r["hosts"][0]["addrs"] == [] and "SERVFAIL" in r["hosts"][0]["why"]


def test_cname_followed_for_mx_and_addresses(dns):
    dns.add("alias.test", "CNAME", "real.test")
    dns.add("real.test", "MX", (10, "mxalias.real.test"))
    dns.add("mxalias.real.test", "CNAME", "box.real.test")
    dns.add("box.real.test", "A", "127.0.0.40")
    dns.add("box.real.test", "AAAA", "::40")
    r = probe(dns, "alias.test")
    assert r["status"] == "ok", r
    assert r["canonical"] == "real.test"
    assert r["hosts"][0]["name"] == "mxalias.real.test"
    assert r["hosts"][0]["addrs"] == ["::40", "127.0.0.40"]  # IPv6 first


def test_cname_to_address_only_domain_is_implicit(dns):
    dns.add("alias2.test", "CNAME", "target2.test")
    dns.add("target2.test", "A", "127.0.0.41")
    r = probe(dns, "alias2.test")
    assert r["status"] == "ok" and r["implicit"] is True, r
    assert r["canonical"] == "target2.test"
    assert r["hosts"][0]["addrs"] == ["127.0.0.41"]


def test_mx_host_without_address_is_kept(dns):
    dns.add("partial.test", "MX", (10, "gone.partial.test"))
    dns.add("partial.test", "MX", (20, "noaddr.partial.test"))
    dns.add("partial.test", "MX", (30, "ok.partial.test"))
    dns.add("noaddr.partial.test", "TXT", "no address here")
    dns.add("ok.partial.test", "A", "127.0.0.50")
    r = probe(dns, "partial.test")
    assert r["status"] == "ok", r
    assert names(r) == ["gone.partial.test", "noaddr.partial.test", "ok.partial.test"]
    gone, noaddr, ok = r["hosts"]
    assert gone["addrs"] == [] and "NXDOMAIN" in gone["why"]
    assert noaddr["addrs"] == [] and "no A/AAAA records" in noaddr["why"]
    assert ok["addrs"] == ["127.0.0.50"] and ok["why"] == ""


def test_all_mx_hosts_without_address(dns):
    dns.add("noaddr.test", "MX", (10, "a.noaddr.test"))
    dns.add("noaddr.test", "MX", (20, "b.noaddr.test"))
    dns.add("b.noaddr.test", "TXT", "x")
    r = probe(dns, "noaddr.test")
    assert r["status"] == "no-address", r
    assert len(r["hosts"]) == 2 and all(h["addrs"] == [] for h in r["hosts"])
    assert "noaddr.test" in r["why"]


def test_duplicates_dropped_and_hosts_capped(dns):
    for i in range(24):
        dns.add("many.test", "MX", (i % 4, "mx%d.many.test" % i))
        dns.add("mx%d.many.test" % i, "A", "127.0.1.%d" % i)
    dns.add("many.test", "MX", (0, "mx1.many.test"))  # also at 1: the better one stays
    r = probe(dns, "many.test")
    assert r["status"] == "ok", r
    assert len(r["hosts"]) == 16  # DNS_MAX_HOSTS
    assert len(set(names(r))) == 16
    prefs = [h["pref"] for h in r["hosts"]]
    assert prefs == sorted(prefs)
    assert prefs.count(0) == 7 and prefs.count(1) == 5 and prefs.count(2) == 4
    assert {"name": "mx1.many.test", "pref": 0} in [
        {"name": h["name"], "pref": h["pref"]} for h in r["hosts"]]


def test_large_answer_over_tcp(dns):
    # more than 1232 octets: the UDP answer is truncated and libunbound asks again over TCP
    for i in range(40):
        host = "a-rather-long-mail-exchanger-name-%02d.big.test" % i
        dns.add("big.test", "MX", (10, host))
        dns.add(host, "A", "127.0.2.%d" % i)
    r = probe(dns, "big.test")
    assert r["status"] == "ok", r
    assert len(r["hosts"]) == 16
    assert ("big.test", "MX") in dns.tcp_queries


def test_parallel_routes_on_one_resolver(dns):
    dns.add("par.test", "MX", (10, "a.par.test"))
    dns.add("par.test", "MX", (10, "b.par.test"))
    dns.add("a.par.test", "A", "127.0.0.130")
    dns.add("b.par.test", "AAAA", "::130")
    routes = probe(dns, "--parallel", "8", "par.test")
    assert len(routes) == 8
    for r in routes:
        assert r["status"] == "ok", r
        assert sorted(names(r)) == ["a.par.test", "b.par.test"]


def test_address_literals_need_no_query(dns):
    before = len(dns.queries)
    r = probe(dns, "[127.0.0.60]")
    assert r["status"] == "ok", r
    assert r["hosts"] == [{"name": "[127.0.0.60]", "pref": 0, "sec": "insecure",
                           "addrs": ["127.0.0.60"], "why": ""}]
    r = probe(dns, "[IPv6:::1]")
    assert r["status"] == "ok" and r["hosts"][0]["addrs"] == ["::1"], r
    assert len(dns.queries) == before
    p = run(dns, "[300.1.1.1]", check=False)
    assert p.returncode == 2 and "invalid name" in p.stdout


def test_host_mode_name(dns):
    dns.add("relay.test", "A", "127.0.0.70")
    dns.add("relay.test", "AAAA", "::70")
    dns.add("relay.test", "MX", (10, "elsewhere.test"))  # not looked at for a host
    r = probe(dns, "--host", "relay.test")
    assert r["status"] == "ok", r
    assert r["implicit"] is False
    assert r["hosts"] == [{"name": "relay.test", "pref": 0, "sec": "insecure",
                           "addrs": ["::70", "127.0.0.70"], "why": ""}]
    assert ("relay.test", "MX") not in dns.queries


def test_host_mode_ip(dns):
    before = len(dns.queries)
    r = probe(dns, "--host", "127.0.0.71")
    assert r["status"] == "ok" and r["hosts"][0]["addrs"] == ["127.0.0.71"], r
    r = probe(dns, "--host", "2001:db8::71")
    assert r["status"] == "ok" and r["hosts"][0]["addrs"] == ["2001:db8::71"], r
    assert len(dns.queries) == before


def test_host_mode_unknown_name(dns):
    r = probe(dns, "--host", "nohost.test")
    assert r["status"] == "no-address", r
    assert "NXDOMAIN" in r["why"]


def test_test_tld_is_resolved_not_answered_locally(dns):
    # RFC 6761 6.2: libunbound has a built-in NXDOMAIN zone for test.; it must not apply
    dns.add("mail.test", "A", "127.0.0.80")
    r = probe(dns, "mail.test")
    assert r["status"] == "ok" and r["implicit"] is True, r
    assert ("mail.test", "MX") in dns.queries and ("mail.test", "A") in dns.queries


def test_ipv4_only_family(dns):
    dns.add("v4only.test", "MX", (10, "mx.v4only.test"))
    dns.add("mx.v4only.test", "A", "127.0.0.90")
    dns.add("mx.v4only.test", "AAAA", "::90")
    r = probe(dns, "--family", "ipv4", "v4only.test")
    assert r["status"] == "ok", r
    assert r["hosts"][0]["addrs"] == ["127.0.0.90"]
    assert ("mx.v4only.test", "AAAA") not in dns.queries
    r = probe(dns, "--family", "ipv6", "v4only.test")
    assert r["hosts"][0]["addrs"] == ["::90"], r
    r = probe(dns, "--family", "ipv6", "[127.0.0.91]")
    assert r["status"] == "no-address", r


def test_records_edited_while_running(dns):
    dns.add("edit.test", "MX", (10, "one.edit.test"))
    dns.add("one.edit.test", "A", "127.0.0.100")
    assert names(probe(dns, "edit.test")) == ["one.edit.test"]
    dns.clear("edit.test", "MX")
    dns.add("edit.test", "MX", (10, "two.edit.test"))
    dns.add("two.edit.test", "A", "127.0.0.101")
    r = probe(dns, "edit.test")
    assert names(r) == ["two.edit.test"] and r["hosts"][0]["addrs"] == ["127.0.0.101"]


def test_dnssec_bogus_is_tempfail(dns, tmp_path):
    # a trust anchor for test. while the fake zone is unsigned: every answer is bogus
    ta = tmp_path / "ta.ds"
    ta.write_text("test. 3600 IN DS 12345 8 2 %s\n" % ("ab" * 32))
    dns.add("signed.test", "MX", (10, "mx.signed.test"))
    r = probe(dns, "--trust-anchor", str(ta), "signed.test")
    assert r["status"] == "tempfail", r
    assert r["mx_sec"] == "bogus"
    assert "DNSSEC validation failure" in r["why"]


def test_bad_trust_anchor_file_is_reported(dns, tmp_path):
    ta = tmp_path / "bad.ds"
    ta.write_text("this is not a DS record\n")
    p = run(dns, "--trust-anchor", str(ta), "x.test", check=False)
    assert p.returncode == 2 and "trust anchor" in p.stdout


def test_timeout(dns):
    dns.drop("silent.test")
    r = probe(dns, "--timeout", "1", "silent.test")
    assert r["status"] == "tempfail", r
    assert "DNS timeout" in r["why"]


def test_timeout_keeps_hosts_that_answered(dns):
    dns.add("halfslow.test", "MX", (10, "slow.halfslow.test"))
    dns.add("halfslow.test", "MX", (20, "fast.halfslow.test"))
    dns.add("fast.halfslow.test", "A", "127.0.0.110")
    dns.drop("slow.halfslow.test")
    r = probe(dns, "--timeout", "1", "halfslow.test")
    assert r["status"] == "ok", r
    slow, fast = r["hosts"]
    assert slow["addrs"] == [] and "DNS timeout" in slow["why"]
    assert fast["addrs"] == ["127.0.0.110"]


def test_cancel_and_free_with_queries_in_flight(dns):
    dns.add("cancel.test", "MX", (10, "mx.cancel.test"))
    dns.drop("inflight.test")
    for mode, name in (("--cancel", "cancel.test"), ("--free-pending", "inflight.test")):
        p = run(dns, mode, name)
        assert json.loads(p.stdout.splitlines()[-1]) == {"cancelled": True}


def test_invalid_names_refused(dns):
    for bad in ("bad..name.test", "a" * 64 + ".test", "x" * 250 + ".test", "sp ace.test", ""):
        p = run(dns, bad, check=False)
        assert p.returncode == 2 and "invalid name" in p.stdout, bad


def test_bad_configuration_is_reported(dns, tmp_path):
    p = run(dns, "--forwarder", "127.0.0.1@70000", "x.test", forwarder=False, check=False)
    assert p.returncode == 2 and "127.0.0.1@70000" in p.stdout
    p = run(dns, "--forwarder", "not-an-ip", "x.test", forwarder=False, check=False)
    assert p.returncode == 2 and "not-an-ip" in p.stdout
    rc = tmp_path / "resolv.conf"
    rc.write_text("search example.test\n")
    p = run(dns, "--resolv-conf", str(rc), "x.test", forwarder=False, check=False)
    assert p.returncode == 2 and "no nameserver" in p.stdout
