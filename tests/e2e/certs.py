"""Test certificates made with the openssl CLI: a throw-away CA, ECDSA and RSA leafs with
explicit validity dates (so an expired one and one expiring in 5 days are easy), laid out as
Let's Encrypt does (<dir>/live/<name>/fullchain.pem + privkey.pem), and a small decoder for
certificates a TLS client received. Every openssl call is bounded by a timeout."""
import datetime
import os
import secrets
import subprocess

OPENSSL = "openssl"

_CA_CNF = """\
[ ca ]
default_ca = CA_default
[ CA_default ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
[ policy_any ]
commonName = supplied
"""


def _run(args, **kw):
    p = subprocess.run([OPENSSL] + args, capture_output=True, text=True, timeout=60, **kw)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed (%d): %s %s" % (" ".join(args), p.returncode,
                                                                p.stdout, p.stderr))
    return p.stdout


def _asn1_time(dt):
    return dt.astimezone(datetime.timezone.utc).strftime("%Y%m%d%H%M%SZ")


def genkey(path, kind="ec"):
    """A private key in PEM (PKCS#8, as certbot writes it): kind "ec" (P-256) or "rsa"."""
    if kind == "ec":
        _run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path])
    elif kind == "rsa":
        _run(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path])
    else:
        raise ValueError(kind)
    os.chmod(path, 0o600)
    return path


class Leaf:
    def __init__(self, name, fullchain, privkey, cert, serial):
        self.name = name
        self.fullchain = fullchain
        self.privkey = privkey
        self.cert = cert          # the leaf alone (PEM)
        self.serial = serial      # int

    def __repr__(self):
        return "Leaf(%s, serial=%x)" % (self.name, self.serial)


class TestCA:
    """A CA in dir/ca; leafs go to dir/live/<name>/ (or a directory the caller names)."""
    __test__ = False  # not a pytest test class

    def __init__(self, dir, kind="ec"):
        self.dir = dir
        self.cadir = os.path.join(dir, "ca")
        os.makedirs(os.path.join(self.cadir, "newcerts"), exist_ok=True)
        open(os.path.join(self.cadir, "index.txt"), "w").close()
        with open(os.path.join(self.cadir, "serial"), "w") as f:
            # random start: certificates of different CAs/runs never share serials
            f.write("%016X\n" % (secrets.randbits(62) | (1 << 60)))
        self.cnf = os.path.join(self.cadir, "ca.cnf")
        with open(self.cnf, "w") as f:
            f.write(_CA_CNF.format(dir=self.cadir))
        self.key = genkey(os.path.join(self.cadir, "ca.key"), kind)
        self.cert = os.path.join(self.cadir, "ca.pem")
        _run(["req", "-x509", "-new", "-key", self.key, "-subj", "/CN=sealmail test CA",
              "-days", "3650", "-out", self.cert,
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        self._n = 0

    def issue(self, name, kind="ec", not_before=None, not_after=None, days=90, dns=None,
              outdir=None):
        """Issue a leaf for name (CN and subjectAltName DNS:name plus dns). Validity from
        not_before (default: an hour ago) to not_after (default: not_before + days)."""
        now = datetime.datetime.now(datetime.timezone.utc)
        nb = not_before or now - datetime.timedelta(hours=1)
        na = not_after or nb + datetime.timedelta(days=days)
        self._n += 1
        outdir = outdir or os.path.join(self.dir, "live", name)
        os.makedirs(outdir, exist_ok=True)
        work = os.path.join(self.cadir, "req%d" % self._n)
        os.makedirs(work)
        key = genkey(os.path.join(work, "privkey.pem"), kind)
        csr = os.path.join(work, "req.csr")
        _run(["req", "-new", "-key", key, "-subj", "/CN=%s" % name, "-out", csr])
        ext = os.path.join(work, "ext.cnf")
        sans = ",".join("DNS:%s" % n for n in [name] + list(dns or []))
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature%s\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectAltName=%s\n" % (",keyEncipherment" if kind == "rsa" else "", sans))
        cert = os.path.join(work, "cert.pem")
        _run(["ca", "-batch", "-config", self.cnf, "-cert", self.cert, "-keyfile", self.key,
              "-in", csr, "-out", cert, "-notext", "-startdate", _asn1_time(nb),
              "-enddate", _asn1_time(na), "-extfile", ext])
        serial = int(_run(["x509", "-in", cert, "-noout", "-serial"]).strip().split("=")[1], 16)
        with open(cert) as f:
            leaf_pem = f.read()
        with open(self.cert) as f:
            ca_pem = f.read()
        fullchain = os.path.join(outdir, "fullchain.pem")
        privkey = os.path.join(outdir, "privkey.pem")
        # written next to the target and renamed, as certbot's symlink swap is atomic too
        _atomic_write(fullchain, leaf_pem + ca_pem, 0o644)
        with open(key) as f:
            _atomic_write(privkey, f.read(), 0o600)
        return Leaf(name, fullchain, privkey, cert, serial)


def le_install(leaf, root, version):
    """certbot's layout: root/archive/<name>/{fullchain,privkey}<version>.pem, with
    root/live/<name>/{fullchain,privkey}.pem symlinks switched atomically to them (a
    renewal is le_install of the new leaf with version + 1). Returns the live paths."""
    archive = os.path.join(root, "archive", leaf.name)
    live = os.path.join(root, "live", leaf.name)
    os.makedirs(archive, exist_ok=True)
    os.makedirs(live, exist_ok=True)
    out = []
    for kind, src, mode in (("fullchain", leaf.fullchain, 0o644), ("privkey", leaf.privkey, 0o600)):
        with open(src) as f:
            _atomic_write(os.path.join(archive, "%s%d.pem" % (kind, version)), f.read(), mode)
        link = os.path.join(live, kind + ".pem")
        tmp = link + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.join("..", "..", "archive", leaf.name, "%s%d.pem" % (kind, version)), tmp)
        os.replace(tmp, link)
        out.append(link)
    return tuple(out)


def _atomic_write(path, text, mode):
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def der_info(der):
    """Facts about a DER certificate a client received: serial (int), subject CN, key type
    ("EC P-256", "RSA 2048", ...)."""
    txt = subprocess.run([OPENSSL, "x509", "-inform", "DER", "-noout", "-text", "-serial"],
                         input=der, capture_output=True, timeout=30).stdout.decode()
    serial = None
    cn = None
    key = None
    for line in txt.splitlines():
        s = line.strip()
        if s.startswith("serial="):
            serial = int(s.split("=", 1)[1], 16)
        elif s.startswith("Subject:") and "CN" in s:
            cn = s.split("CN", 1)[1].lstrip(" =").split(",")[0].strip()
        elif s.startswith("Public Key Algorithm:"):
            alg = s.split(":", 1)[1].strip()
            key = "EC" if alg == "id-ecPublicKey" else "RSA" if alg == "rsaEncryption" else alg
        elif s.startswith("NIST CURVE:") and key == "EC":
            key = "EC " + s.split(":", 1)[1].strip()
        elif s.startswith("Public-Key:") and key == "RSA":
            key = "RSA " + s.split("(", 1)[1].split()[0]
    return {"serial": serial, "cn": cn, "key": key, "text": txt}


def expired_leaf(ca, name, outdir, days_ago=1):
    """A leaf for name signed by ca whose validity ended days_ago days ago (it was valid for
    30 days before that); written to outdir (fullchain.pem + privkey.pem)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    na = now - datetime.timedelta(days=days_ago)
    return ca.issue(name, not_before=na - datetime.timedelta(days=30), not_after=na,
                    outdir=outdir)


def selfsigned_leaf(outdir, name, kind="ec"):
    """A self-signed certificate for name (CN and DNS SAN), trusted by nobody: returns
    (cert_path, key_path) in outdir."""
    os.makedirs(outdir, exist_ok=True)
    key = genkey(os.path.join(outdir, "privkey.pem"), kind)
    cert = os.path.join(outdir, "fullchain.pem")
    _run(["req", "-x509", "-new", "-key", key, "-subj", "/CN=%s" % name, "-days", "30",
          "-out", cert, "-addext", "subjectAltName=DNS:%s" % name,
          "-addext", "basicConstraints=critical,CA:FALSE"])
    return cert, key
