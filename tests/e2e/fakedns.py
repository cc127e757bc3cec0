"""A fake authoritative DNS server for end-to-end tests: UDP and TCP on loopback, one thread,
every record set editable while it runs. It is authoritative for every name: a name that was
never added (and has nothing added below it) is NXDOMAIN; a name that exists without the type
asked for is NODATA; both carry an SOA with a 1 s minimum so resolvers forget them quickly.
CNAMEs are followed inside the answer, as an authoritative server does for its own data.

    dns = FakeDNS().start()          # dns.port: give "127.0.0.1@%d" % dns.port as forwarder
    dns.add("example.test", "MX", (10, "mx1.example.test"))
    dns.add("mx1.example.test", "A", "127.0.0.2")
    dns.servfail("broken.test")      # SERVFAIL for every type
    dns.drop("slow.test")            # no answer at all (timeouts)
    ...
    dns.stop()

Runs with /usr/bin/python3 (stdlib + python3-dnslib). Every wait is bounded; stop() joins.
"""
import selectors
import socket
import struct
import threading
import time

from dnslib import (AAAA, CNAME, DNSRecord, EDNS0, MX, NS, PTR, QTYPE, RCODE, RD, RR, SOA,
                    SRV, TLSA, TXT, A)

__all__ = ["FakeDNS"]


def _norm(name):
    """Lower case, no trailing dot; the root is ""."""
    name = str(name).strip().lower()
    if name.endswith("."):
        name = name[:-1]
    return name


def _label(name):
    name = _norm(name)
    return name + "." if name else "."


def _rdata(rtype, value):
    """The dnslib rdata for `value` of `rtype` (a dnslib RD passes through)."""
    if isinstance(value, RD):
        return value
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    if rtype == "MX":
        pref, target = value
        return MX(_label(target), int(pref))
    if rtype == "CNAME":
        return CNAME(_label(value))
    if rtype == "NS":
        return NS(_label(value))
    if rtype == "PTR":
        return PTR(_label(value))
    if rtype == "TXT":
        data = value.encode() if isinstance(value, str) else bytes(value)
        # RFC 1035 3.3.14: character-strings of at most 255 octets
        return TXT([data[i:i + 255] for i in range(0, len(data), 255)] or [b""])
    if rtype == "SRV":
        prio, weight, port, target = value
        return SRV(int(prio), int(weight), int(port), _label(target))
    if rtype == "TLSA":
        usage, selector, mtype, data = value
        if isinstance(data, str):
            data = bytes.fromhex(data)
        return TLSA(int(usage), int(selector), int(mtype), data)
    raise ValueError("FakeDNS: no conversion for %s %r (pass a dnslib RD)" % (rtype, value))


class FakeDNS:
    MAX_CNAME = 8          # CNAME hops followed inside one answer
    MAX_TCP_CONNS = 64
    TCP_IDLE = 10.0        # seconds before an idle TCP connection is closed
    EDNS_SIZE = 1232       # our UDP payload ceiling when the query has EDNS (DNS flag day 2020)

    def __init__(self, host="127.0.0.1", port=0):
        self.host = host
        self.port = port
        self.queries = []          # (name, rtype) in arrival order, for assertions
        self.tcp_queries = []      # the same, of those that came over TCP
        self.errors = []           # exceptions the server thread survived (for debugging)
        self._lock = threading.Lock()
        self._rrs = {}             # name -> {rtype: [(rdata, ttl)]}
        self._servfail = set()
        self._drop = set()
        self._stop = threading.Event()
        self._thread = None
        self._udp = None
        self._tcp = None

    # ---- records -----------------------------------------------------------------------

    def add(self, name, rtype, value, ttl=1):
        rtype = rtype.upper()
        if getattr(QTYPE, rtype, None) is None:
            raise ValueError("FakeDNS: unknown type %r" % rtype)
        rd = _rdata(rtype, value)
        with self._lock:
            self._rrs.setdefault(_norm(name), {}).setdefault(rtype, []).append((rd, int(ttl)))
        return self

    def clear(self, name=None, rtype=None):
        """Removes records: all, one name's, one type's everywhere, or one name's type."""
        rtype = rtype.upper() if rtype else None
        with self._lock:
            names = [_norm(name)] if name is not None else list(self._rrs)
            for n in names:
                sets = self._rrs.get(n)
                if sets is None:
                    continue
                if rtype is None:
                    del self._rrs[n]
                else:
                    sets.pop(rtype, None)
                    if not sets:
                        del self._rrs[n]
        return self

    def servfail(self, name, on=True):
        """SERVFAIL for `name`, any type (also when reached through a CNAME)."""
        with self._lock:
            (self._servfail.add if on else self._servfail.discard)(_norm(name))
        return self

    def drop(self, name, on=True):
        """No answer at all for `name`: the resolver times out."""
        with self._lock:
            (self._drop.add if on else self._drop.discard)(_norm(name))
        return self

    # ---- life --------------------------------------------------------------------------

    def start(self):
        if self._thread is not None:
            return self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(50):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                udp.bind((self.host, self.port))
                port = udp.getsockname()[1]
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((self.host, port))
                tcp.listen(16)
            except OSError:
                udp.close()
                tcp.close()
                if self.port:
                    raise
                continue
            break
        else:
            raise OSError("FakeDNS: no free port for UDP and TCP together")
        udp.setblocking(False)
        tcp.setblocking(False)
        self._udp, self._tcp, self.port = udp, tcp, port
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fakedns", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()
        self._udp = self._tcp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def forwarder(self):
        return "%s@%d" % (self.host, self.port)

    # ---- the server thread -------------------------------------------------------------

    def _run(self):
        sel = selectors.DefaultSelector()
        sel.register(self._udp, selectors.EVENT_READ, "udp")
        sel.register(self._tcp, selectors.EVENT_READ, "accept")
        conns = {}  # socket -> [bytearray, last activity]
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.05):
                    try:
                        if key.data == "udp":
                            self._on_udp()
                        elif key.data == "accept":
                            self._on_accept(sel, conns)
                        else:
                            self._on_tcp(key.fileobj, sel, conns)
                    except Exception as e:  # the server outlives any one bad packet
                        self.errors.append(repr(e))
                now = time.monotonic()
                for c in [c for c, st in conns.items() if now - st[1] > self.TCP_IDLE]:
                    self._close(c, sel, conns)
        finally:
            for c in list(conns):
                self._close(c, sel, conns)
            sel.close()

    def _on_udp(self):
        for _ in range(64):  # drain, bounded
            try:
                data, peer = self._udp.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            resp = self._answer(data, tcp=False)
            if resp is not None:
                self._udp.sendto(resp, peer)

    def _on_accept(self, sel, conns):
        try:
            c, _ = self._tcp.accept()
        except (BlockingIOError, InterruptedError):
            return
        if len(conns) >= self.MAX_TCP_CONNS:
            c.close()
            return
        c.settimeout(2.0)  # only read when readable; a send never hangs the thread long
        conns[c] = [bytearray(), time.monotonic()]
        sel.register(c, selectors.EVENT_READ, "tcp")

    def _on_tcp(self, c, sel, conns):
        st = conns.get(c)
        if st is None:
            return
        try:
            data = c.recv(65535)
        except OSError:
            data = b""
        if not data:
            self._close(c, sel, conns)
            return
        st[0] += data
        st[1] = time.monotonic()
        if len(st[0]) > 2 * 65537:
            self._close(c, sel, conns)
            return
        while len(st[0]) >= 2:  # RFC 1035 4.2.2: two-octet length, then the message
            n = struct.unpack("!H", st[0][:2])[0]
            if len(st[0]) < 2 + n:
                break
            msg = bytes(st[0][2:2 + n])
            del st[0][:2 + n]
            resp = self._answer(msg, tcp=True)
            if resp is not None:
                try:
                    c.sendall(struct.pack("!H", len(resp)) + resp)
                except OSError:
                    self._close(c, sel, conns)
                    return

    @staticmethod
    def _close(c, sel, conns):
        conns.pop(c, None)
        try:
            sel.unregister(c)
        except (KeyError, ValueError):
            pass
        c.close()

    # ---- answers -----------------------------------------------------------------------

    def _soa(self, qname):
        zone = qname.rsplit(".", 1)[-1] if qname else ""
        return RR(_label(zone), QTYPE.SOA, ttl=1,
                  rdata=SOA("ns.fakedns.test.", "hostmaster.fakedns.test.", (1, 1, 1, 1, 1)))

    def _exists(self, name):
        """Has records, or names below it (RFC 8020: an empty non-terminal is NODATA)."""
        if name in self._rrs:
            return True
        suffix = "." + name
        return any(n.endswith(suffix) for n in self._rrs)

    def _answer(self, data, tcp):
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return None
        if req.header.qr or len(req.questions) != 1:
            return None
        q = req.q
        qname = _norm(q.qname)
        qtype = QTYPE.get(q.qtype, str(q.qtype))
        self.queries.append((qname, qtype))
        if tcp:
            self.tcp_queries.append((qname, qtype))
        edns = [r for r in req.ar if r.rtype == QTYPE.OPT]
        with self._lock:
            if qname in self._drop:
                return None
            reply = req.reply(ra=1, aa=1)
            self._fill(reply, q.qname, qname, qtype)
        if edns:
            reply.add_ar(EDNS0(udp_len=self.EDNS_SIZE))
        wire = reply.pack()
        limit = min(max(edns[0].rclass, 512), self.EDNS_SIZE) if edns else 512
        if not tcp and len(wire) > limit:  # RFC 1035 4.2.1 / RFC 7766: TC, retry over TCP
            reply = req.reply(ra=1, aa=1)
            reply.header.tc = 1
            if edns:
                reply.add_ar(EDNS0(udp_len=self.EDNS_SIZE))
            wire = reply.pack()
        return wire

    def _fill(self, reply, owner, qname, qtype):
        cur = qname
        for _ in range(self.MAX_CNAME + 1):
            if cur in self._servfail:
                reply.rr = []
                reply.header.rcode = RCODE.SERVFAIL
                return
            sets = self._rrs.get(cur)
            if sets is None:
                if not self._exists(cur):
                    reply.header.rcode = RCODE.NXDOMAIN
                reply.add_auth(self._soa(cur))
                return
            if qtype != "CNAME" and "CNAME" in sets:
                rd, ttl = sets["CNAME"][0]
                reply.add_answer(RR(owner, QTYPE.CNAME, ttl=ttl, rdata=rd))
                cur = _norm(rd.label)
                owner = _label(cur)
                continue
            types = list(sets) if qtype == "ANY" else [qtype]
            found = False
            for t in types:
                for rd, ttl in sets.get(t, []):
                    reply.add_answer(RR(owner, getattr(QTYPE, t), ttl=ttl, rdata=rd))
                    found = True
            if not found:
                reply.add_auth(self._soa(cur))
            return
