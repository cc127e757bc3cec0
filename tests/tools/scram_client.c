/* SCRAM-SHA-256 / SCRAM-SHA-256-PLUS test client for the e2e tests (tests/e2e/test_auth.py):
 * connects to 127.0.0.1:PORT with implicit TLS or STARTTLS, sends EHLO, runs AUTH with
 * RFC 5802/7677 and, for -PLUS, the tls-exporter channel binding of RFC 9266 (Python's ssl
 * module cannot export keying material, hence C). Optional tampering (wrong password,
 * downgrade "y" flag, wrong channel-binding data) and an optional small message afterwards.
 * Prints every line it sends and receives ("C: " / "S: "); exits 0 only when AUTH got 235
 * (and, with --mail, the message got 250). Every read has a timeout. Test tool only. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

/* exit codes */
#define EXIT_AUTH_FAILED 1  /* AUTH answered with anything but 235 */
#define EXIT_MAIL_FAILED 2  /* authenticated, but the message was refused */
#define EXIT_IO 3           /* connection, TLS, protocol or usage problem */
#define EXIT_BAD_SERVER 4   /* the server's signature (v=) did not verify */

struct opts {
	int port;
	bool starttls;
	bool plus;
	bool wrong_password;
	bool downgrade;
	bool wrong_cb;
	bool no_ir;
	bool tls12;
	const char *login;
	const char *password;
	const char *mail_from;
	const char *rcpt;
	const char *src;
	const char *from_header;
	int timeout;
};

struct conn {
	int fd;
	SSL *ssl;
	char buf[16384];
	size_t len;
};

static void die(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("scram_client: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	ERR_print_errors_fp(stderr);
	exit(code);
}

static void conn_write(struct conn *c, const char *data, size_t n)
{
	size_t off = 0;
	while (off < n) {
		int w;
		if (c->ssl)
			w = SSL_write(c->ssl, data + off, (int)(n - off));
		else
			w = (int)send(c->fd, data + off, n - off, MSG_NOSIGNAL);
		if (w <= 0)
			die(EXIT_IO, "write failed: %s", strerror(errno));
		off += (size_t)w;
	}
}

static void send_line(struct conn *c, const char *line)
{
	printf("C: %s\n", line);
	fflush(stdout);
	conn_write(c, line, strlen(line));
	conn_write(c, "\r\n", 2);
}

/* One line without CRLF into out; exits on EOF or timeout. */
static void read_line(struct conn *c, char *out, size_t outsz)
{
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);
		if (nl) {
			size_t n = (size_t)(nl - c->buf);
			size_t take = n;
			if (take > 0 && c->buf[take - 1] == '\r')
				take--;
			if (take >= outsz)
				take = outsz - 1;
			memcpy(out, c->buf, take);
			out[take] = '\0';
			memmove(c->buf, nl + 1, c->len - n - 1);
			c->len -= n + 1;
			printf("S: %s\n", out);
			fflush(stdout);
			return;
		}
		if (c->len == sizeof(c->buf))
			die(EXIT_IO, "line too long");
		int r;
		if (c->ssl)
			r = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof(c->buf) - c->len));
		else
			r = (int)recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
		if (r <= 0)
			die(EXIT_IO, "connection closed or timed out while reading (buffered %zu bytes)",
			    c->len);
		c->len += (size_t)r;
	}
}

/* A whole (possibly multi-line) reply: returns the code; the last line's text in last. */
static int read_reply(struct conn *c, char *all, size_t allsz, char *last, size_t lastsz)
{
	char line[8192];
	size_t used = 0;
	if (all && allsz)
		all[0] = '\0';
	for (;;) {
		read_line(c, line, sizeof(line));
		if (strlen(line) < 3)
			die(EXIT_IO, "malformed reply line");
		if (all && used + strlen(line) + 2 < allsz) {
			memcpy(all + used, line, strlen(line));
			used += strlen(line);
			all[used++] = '\n';
			all[used] = '\0';
		}
		if (line[3] != '-') {
			if (last)
				snprintf(last, lastsz, "%s", line);
			return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		}
	}
}

static int command(struct conn *c, const char *line, char *last, size_t lastsz)
{
	send_line(c, line);
	return read_reply(c, NULL, 0, last, lastsz);
}

static void tls_start(struct conn *c, const struct opts *o)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		die(EXIT_IO, "SSL_CTX_new");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	if (o->tls12)
		SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
	c->ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL keeps its own reference */
	if (!c->ssl)
		die(EXIT_IO, "SSL_new");
	SSL_set_fd(c->ssl, c->fd);
	SSL_set_tlsext_host_name(c->ssl, "mx.example.test");
	if (SSL_connect(c->ssl) != 1)
		die(EXIT_IO, "TLS handshake failed");
	printf("T: %s %s\n", SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
	fflush(stdout);
}

/* ---- SCRAM arithmetic ---- */

static void b64_encode(const unsigned char *in, size_t n, char *out, size_t outsz)
{
	if ((n + 2) / 3 * 4 + 1 > outsz)
		die(EXIT_IO, "base64 output too small");
	EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* Returns the decoded length or -1. */
static int b64_decode(const char *in, unsigned char *out, size_t outsz)
{
	size_t n = strlen(in);
	if (n % 4 != 0 || n / 4 * 3 > outsz)
		return -1;
	int r = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
	if (r < 0)
		return -1;
	if (n >= 1 && in[n - 1] == '=')
		r--;
	if (n >= 2 && in[n - 2] == '=')
		r--;
	return r;
}

static void hmac(const unsigned char *key, size_t keylen, const void *data, size_t n,
		 unsigned char out[32])
{
	unsigned int outl = 32;
	if (!HMAC(EVP_sha256(), key, (int)keylen, data, n, out, &outl) || outl != 32)
		die(EXIT_IO, "HMAC failed");
}

static void sha256(const unsigned char *in, size_t n, unsigned char out[32])
{
	unsigned int outl = 32;
	if (EVP_Digest(in, n, out, &outl, EVP_sha256(), NULL) != 1)
		die(EXIT_IO, "SHA-256 failed");
}

/* RFC 5802 5.1 saslname: "," as "=2C", "=" as "=3D". */
static void saslname(const char *in, char *out, size_t outsz)
{
	size_t o = 0;
	for (; *in; in++) {
		const char *rep = *in == ',' ? "=2C" : *in == '=' ? "=3D" : NULL;
		size_t need = rep ? 3 : 1;
		if (o + need + 1 > outsz)
			die(EXIT_IO, "login too long");
		if (rep) {
			memcpy(out + o, rep, 3);
		} else {
			out[o] = *in;
		}
		o += need;
	}
	out[o] = '\0';
}

/* value of attribute `name` in a SCRAM message, or NULL */
static const char *attr(const char *msg, char name, char *out, size_t outsz)
{
	const char *p = msg;
	while (p && *p) {
		if (p[0] == name && p[1] == '=') {
			const char *e = strchr(p, ',');
			size_t n = e ? (size_t)(e - p - 2) : strlen(p + 2);
			if (n >= outsz)
				return NULL;
			memcpy(out, p + 2, n);
			out[n] = '\0';
			return out;
		}
		p = strchr(p, ',');
		if (p)
			p++;
	}
	return NULL;
}

static void usage(void)
{
	fputs("usage: scram_client --port N [--starttls] --login L --password P [--plus]\n"
	      "         [--wrong-password] [--downgrade] [--wrong-cb] [--no-ir] [--tls12]\n"
	      "         [--src IP] [--timeout S] [--mail FROM --rcpt TO [--from-header ADDR]]\n"
	      "  --starttls        port 587 style (default: implicit TLS, port 465 style)\n"
	      "  --plus            SCRAM-SHA-256-PLUS with tls-exporter (RFC 9266)\n"
	      "  --wrong-password  compute the proof from a wrong password\n"
	      "  --downgrade       SCRAM-SHA-256 with gs2 flag \"y\" (client could bind)\n"
	      "  --wrong-cb        -PLUS with one bit of the tls-exporter data flipped\n"
	      "  --no-ir           no initial response: AUTH MECH, then the first message\n"
	      "exit: 0 authenticated (and message accepted), 1 AUTH refused, 2 message refused,\n"
	      "      3 I/O or protocol error, 4 server signature wrong\n",
	      stderr);
	exit(EXIT_IO);
}

static void parse(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->timeout = 15;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VAL()                                                                                  \
	do {                                                                                   \
		if (!v)                                                                        \
			usage();                                                               \
		i++;                                                                           \
	} while (0)
		if (strcmp(a, "--port") == 0) {
			VAL();
			o->port = (int)strtol(v, NULL, 10);
		} else if (strcmp(a, "--starttls") == 0) {
			o->starttls = true;
		} else if (strcmp(a, "--plus") == 0) {
			o->plus = true;
		} else if (strcmp(a, "--wrong-password") == 0) {
			o->wrong_password = true;
		} else if (strcmp(a, "--downgrade") == 0) {
			o->downgrade = true;
		} else if (strcmp(a, "--wrong-cb") == 0) {
			o->wrong_cb = true;
			o->plus = true;
		} else if (strcmp(a, "--no-ir") == 0) {
			o->no_ir = true;
		} else if (strcmp(a, "--tls12") == 0) {
			o->tls12 = true;
		} else if (strcmp(a, "--login") == 0) {
			VAL();
			o->login = v;
		} else if (strcmp(a, "--password") == 0) {
			VAL();
			o->password = v;
		} else if (strcmp(a, "--mail") == 0) {
			VAL();
			o->mail_from = v;
		} else if (strcmp(a, "--rcpt") == 0) {
			VAL();
			o->rcpt = v;
		} else if (strcmp(a, "--from-header") == 0) {
			VAL();
			o->from_header = v;
		} else if (strcmp(a, "--src") == 0) {
			VAL();
			o->src = v;
		} else if (strcmp(a, "--timeout") == 0) {
			VAL();
			o->timeout = (int)strtol(v, NULL, 10);
		} else {
			usage();
		}
#undef VAL
	}
	if (o->port <= 0 || o->port > 65535 || !o->login || !o->password || o->timeout <= 0)
		usage();
	if (o->plus && o->downgrade)
		usage();
	if ((o->mail_from == NULL) != (o->rcpt == NULL))
		usage();
}

static int connect_to(const struct opts *o)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		die(EXIT_IO, "socket: %s", strerror(errno));
	struct timeval tv = {o->timeout, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (o->src) {
		struct sockaddr_in sa = {.sin_family = AF_INET};
		if (inet_pton(AF_INET, o->src, &sa.sin_addr) != 1)
			die(EXIT_IO, "bad --src %s", o->src);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
			die(EXIT_IO, "bind %s: %s", o->src, strerror(errno));
	}
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		die(EXIT_IO, "connect: %s", strerror(errno));
	return fd;
}

/* Sends a small message; returns true on 250 after the data. */
static bool send_message(struct conn *c, const struct opts *o)
{
	char line[1200], last[1024];
	snprintf(line, sizeof(line), "MAIL FROM:<%s>", o->mail_from);
	if (command(c, line, last, sizeof(last)) != 250)
		return false;
	snprintf(line, sizeof(line), "RCPT TO:<%s>", o->rcpt);
	if (command(c, line, last, sizeof(last)) != 250)
		return false;
	if (command(c, "DATA", last, sizeof(last)) != 354)
		return false;
	snprintf(line, sizeof(line),
		 "From: <%s>\r\nTo: <%s>\r\nSubject: scram test\r\n\r\nsent after SCRAM\r\n.",
		 o->from_header ? o->from_header : o->mail_from, o->rcpt);
	send_line(c, line);
	return read_reply(c, NULL, 0, last, sizeof(last)) == 250;
}

int main(int argc, char **argv)
{
	struct opts o;
	parse(argc, argv, &o);
	setvbuf(stdout, NULL, _IOLBF, 0);

	struct conn c = {.fd = connect_to(&o)};
	char last[8192], ehlo[8192];
	if (!o.starttls)
		tls_start(&c, &o);
	if (read_reply(&c, NULL, 0, last, sizeof(last)) != 220)
		die(EXIT_IO, "no greeting");
	send_line(&c, "EHLO scram.client.test");
	if (read_reply(&c, ehlo, sizeof(ehlo), last, sizeof(last)) != 250)
		die(EXIT_IO, "EHLO refused");
	if (o.starttls) {
		if (command(&c, "STARTTLS", last, sizeof(last)) != 220)
			die(EXIT_IO, "STARTTLS refused");
		if (c.len != 0)
			die(EXIT_IO, "data after the 220 to STARTTLS");
		tls_start(&c, &o);
		send_line(&c, "EHLO scram.client.test");
		if (read_reply(&c, ehlo, sizeof(ehlo), last, sizeof(last)) != 250)
			die(EXIT_IO, "EHLO after STARTTLS refused");
	}

	/* ---- client-first ---- */
	unsigned char raw[18];
	char cnonce[32];
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		die(EXIT_IO, "RAND_bytes");
	b64_encode(raw, sizeof(raw), cnonce, sizeof(cnonce));
	char name[3 * 256 + 1];
	saslname(o.login, name, sizeof(name));
	const char *gs2 = o.plus ? "p=tls-exporter,," : o.downgrade ? "y,," : "n,,";
	const char *mech = o.plus ? "SCRAM-SHA-256-PLUS" : "SCRAM-SHA-256";
	char bare[1024], first[1100], first64[1500], line[4096];
	snprintf(bare, sizeof(bare), "n=%s,r=%s", name, cnonce);
	snprintf(first, sizeof(first), "%s%s", gs2, bare);
	b64_encode((const unsigned char *)first, strlen(first), first64, sizeof(first64));
	printf("I: client-first %s\n", first);
	int code;
	if (o.no_ir) {
		snprintf(line, sizeof(line), "AUTH %s", mech);
		code = command(&c, line, last, sizeof(last));
		if (code != 334)
			goto auth_failed;
		if (strcmp(last, "334 ") != 0 && strcmp(last, "334") != 0)
			die(EXIT_IO, "expected an empty 334 challenge");
		code = command(&c, first64, last, sizeof(last));
	} else {
		snprintf(line, sizeof(line), "AUTH %s %s", mech, first64);
		code = command(&c, line, last, sizeof(last));
	}
	if (code != 334)
		goto auth_failed;

	/* ---- server-first ---- */
	char sfirst[2048], snonce[512], salt64[256], iter_s[32];
	unsigned char salt[192];
	int n = b64_decode(last + 4, (unsigned char *)sfirst, sizeof(sfirst) - 1);
	if (n < 0)
		die(EXIT_IO, "server-first is not base64");
	sfirst[n] = '\0';
	printf("I: server-first %s\n", sfirst);
	if (!attr(sfirst, 'r', snonce, sizeof(snonce)) || !attr(sfirst, 's', salt64, sizeof(salt64)) ||
	    !attr(sfirst, 'i', iter_s, sizeof(iter_s)))
		die(EXIT_IO, "server-first lacks r, s or i");
	if (strncmp(snonce, cnonce, strlen(cnonce)) != 0 || strlen(snonce) <= strlen(cnonce))
		die(EXIT_BAD_SERVER, "server nonce does not extend ours");
	int salt_len = b64_decode(salt64, salt, sizeof(salt));
	long iter = strtol(iter_s, NULL, 10);
	if (salt_len <= 0 || iter <= 0 || iter > 10000000)
		die(EXIT_IO, "bad salt or iteration count");

	/* ---- client-final ---- */
	char password[1024];
	snprintf(password, sizeof(password), "%s%s", o.password, o.wrong_password ? "-wrong" : "");
	unsigned char salted[32], ckey[32], skey[32], stored[32], csig[32], ssig[32], proof[32];
	if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, salt_len, (int)iter,
			      EVP_sha256(), 32, salted) != 1)
		die(EXIT_IO, "PBKDF2 failed");
	hmac(salted, 32, "Client Key", 10, ckey);
	hmac(salted, 32, "Server Key", 10, skey);
	sha256(ckey, 32, stored);

	unsigned char cbind[512];
	size_t cbl = strlen(gs2);
	memcpy(cbind, gs2, cbl);
	if (o.plus) {
		/* RFC 9266 2: label "EXPORTER-Channel-Binding", no context, 32 bytes */
		if (SSL_export_keying_material(c.ssl, cbind + cbl, 32, "EXPORTER-Channel-Binding", 24,
					       NULL, 0, 0) != 1)
			die(EXIT_IO, "SSL_export_keying_material failed");
		if (o.wrong_cb)
			cbind[cbl] ^= 0x01;
		cbl += 32;
	}
	char cb64[800], wproof[2048], am[4096], proof64[64], final[2200], final64[3000];
	b64_encode(cbind, cbl, cb64, sizeof(cb64));
	snprintf(wproof, sizeof(wproof), "c=%s,r=%s", cb64, snonce);
	snprintf(am, sizeof(am), "%s,%s,%s", bare, sfirst, wproof);
	hmac(stored, 32, am, strlen(am), csig);
	for (int i = 0; i < 32; i++)
		proof[i] = ckey[i] ^ csig[i];
	hmac(skey, 32, am, strlen(am), ssig);
	b64_encode(proof, 32, proof64, sizeof(proof64));
	snprintf(final, sizeof(final), "%s,p=%s", wproof, proof64);
	b64_encode((const unsigned char *)final, strlen(final), final64, sizeof(final64));
	printf("I: client-final %s\n", final);
	code = command(&c, final64, last, sizeof(last));
	if (code != 334)
		goto auth_failed;

	/* ---- server-final: check the server's signature, then the empty response ---- */
	char sfinal[512], v64[128], expect64[64];
	n = b64_decode(last + 4, (unsigned char *)sfinal, sizeof(sfinal) - 1);
	if (n < 0)
		die(EXIT_IO, "server-final is not base64");
	sfinal[n] = '\0';
	printf("I: server-final %s\n", sfinal);
	b64_encode(ssig, 32, expect64, sizeof(expect64));
	if (!attr(sfinal, 'v', v64, sizeof(v64)) || strcmp(v64, expect64) != 0) {
		send_line(&c, "*");
		read_reply(&c, NULL, 0, last, sizeof(last));
		die(EXIT_BAD_SERVER, "server signature does not verify");
	}
	code = command(&c, "", last, sizeof(last));
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(password, sizeof(password));
	if (code != 235)
		goto auth_failed;
	printf("R: authenticated\n");

	int rc = 0;
	if (o.mail_from && !send_message(&c, &o))
		rc = EXIT_MAIL_FAILED;
	command(&c, "QUIT", last, sizeof(last));
	SSL_shutdown(c.ssl);
	SSL_free(c.ssl);
	close(c.fd);
	return rc;

auth_failed:
	printf("R: auth failed %d\n", code);
	if (code != 421) {
		/* the server may have closed already after a 421 */
		send_line(&c, "QUIT");
	}
	SSL_free(c.ssl);
	close(c.fd);
	return EXIT_AUTH_FAILED;
}
