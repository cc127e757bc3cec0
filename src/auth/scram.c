/* SCRAM-SHA-256 and SCRAM-SHA-256-PLUS server side (RFC 5802 5 and 7, RFC 7677, RFC 9266
 * tls-exporter binding), and making the stored keys from a password. Runs in smtp workers
 * (the exchange) and in the CLI/lookup (scram_creds_make). Untrusted input: the decoded
 * client-first and client-final messages, byte for byte; they are parsed whole before any
 * decision, nothing here allocates or does I/O, and the proof is checked in constant time.
 * Secrets (SaltedPassword, ClientKey, signatures) are wiped before every return. */
#include "auth/scram.h"

#include <limits.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <sodium.h>

/* "v=" + base64(32 bytes) + NUL */
#define SCRAM_SERVER_FINAL_LEN (2 + 44 + 1)

/* ---- small helpers -------------------------------------------------------------------- */

struct scram_part {
	const void *p;
	size_t n;
};

/* HMAC-SHA-256 over the concatenated parts (RFC 5802 2.2 HMAC(key, str)). */
static int scram_hmac(const unsigned char *key, size_t keylen, const struct scram_part *parts,
                      size_t nparts, unsigned char out[SCRAM_KEY_LEN])
{
	char digest[] = "SHA256";
	OSSL_PARAM params[2];
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = NULL;
	size_t outl = 0;
	int rc = -1;

	if (mac == NULL)
		goto out;
	ctx = EVP_MAC_CTX_new(mac);
	if (ctx == NULL)
		goto out;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
	params[1] = OSSL_PARAM_construct_end();
	if (EVP_MAC_init(ctx, key, keylen, params) != 1)
		goto out;
	for (size_t i = 0; i < nparts; i++)
		if (parts[i].n > 0 && EVP_MAC_update(ctx, parts[i].p, parts[i].n) != 1)
			goto out;
	if (EVP_MAC_final(ctx, out, &outl, SCRAM_KEY_LEN) != 1 || outl != SCRAM_KEY_LEN)
		goto out;
	rc = 0;
out:
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	return rc;
}

static int scram_sha256(const unsigned char *in, size_t len, unsigned char out[SCRAM_KEY_LEN])
{
	unsigned int outl = 0;

	if (EVP_Digest(in, len, out, &outl, EVP_sha256(), NULL) != 1 || outl != SCRAM_KEY_LEN)
		return -1;
	return 0;
}

static bool scram_is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* RFC 5802 7: printable = %x21-2B / %x2D-7E (printable ASCII except ","). */
static bool scram_nonce_ok(const char *v, size_t len)
{
	if (len == 0 || len > SCRAM_NONCE_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];

		if (c < 0x21 || c > 0x7e || c == ',')
			return false;
	}
	return true;
}

/* RFC 5802 7: cb-name = 1*(ALPHA / DIGIT / "." / "-") */
static bool scram_cbname_ok(const char *v, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];

		if (!scram_is_alpha(c) && !(c >= '0' && c <= '9') && c != '.' && c != '-')
			return false;
	}
	return true;
}

/* ---- message cursor ------------------------------------------------------------------- */

struct scram_cur {
	const char *p;
	const char *end;
};

/* Takes `name` "=" and the value up to the next "," or the end (RFC 5802 7 attr-val).
 * The value is non-empty: every attribute value in RFC 5802 is 1*char. */
static bool scram_attr(struct scram_cur *c, char name, const char **v, size_t *vlen)
{
	const char *q, *comma;

	if (c->end - c->p < 3 || c->p[0] != name || c->p[1] != '=')
		return false;
	q = c->p + 2;
	comma = memchr(q, ',', (size_t)(c->end - q));
	if (comma == NULL)
		comma = c->end;
	if (comma == q)
		return false;
	*v = q;
	*vlen = (size_t)(comma - q);
	c->p = comma;
	return true;
}

static bool scram_comma(struct scram_cur *c)
{
	if (c->p < c->end && *c->p == ',') {
		c->p++;
		return true;
	}
	return false;
}

static bool scram_at(const struct scram_cur *c, char name)
{
	return c->end - c->p >= 2 && c->p[0] == name && c->p[1] == '=';
}

/* RFC 5802 5.1: unknown extension attributes are ignored, but "m" (a mandatory extension)
 * must fail, and none we support may be sent. The letters RFC 5802 itself defines are not
 * extensions either: a second "r=" or "n=" is an attempt to confuse, not an extension. */
static bool scram_ext(struct scram_cur *c)
{
	const char *v;
	size_t vlen;
	unsigned char a;

	if (c->p >= c->end)
		return false;
	a = (unsigned char)*c->p;
	if (!scram_is_alpha(a) || memchr("acemnprsiv", a, 10) != NULL)
		return false;
	return scram_attr(c, (char)a, &v, &vlen);
}

/* RFC 5802 5.1 saslname: "=2C" is ",", "=3D" is "=", any other "=" is malformed. We take
 * ASCII names only (SASLprep leaves printable ASCII as it is and prohibits controls), so
 * a well-formed non-ASCII name is an unknown account (SCRAM_ERR_AUTH), not a syntax error. */
static enum scram_result scram_name_decode(const char *v, size_t vlen, char *out, size_t outsz)
{
	size_t o = 0;
	bool nonascii = false;

	out[0] = '\0';
	for (size_t i = 0; i < vlen; i++) {
		unsigned char ch = (unsigned char)v[i];

		if (ch == '=') {
			if (vlen - i < 3)
				return SCRAM_ERR_SYNTAX;
			if (v[i + 1] == '2' && v[i + 2] == 'C')
				ch = ',';
			else if (v[i + 1] == '3' && v[i + 2] == 'D')
				ch = '=';
			else
				return SCRAM_ERR_SYNTAX;
			i += 2;
		} else if (ch < 0x20 || ch == 0x7f) {
			return SCRAM_ERR_SYNTAX;
		} else if (ch >= 0x80) {
			nonascii = true;
		}
		if (o + 1 >= outsz)
			return SCRAM_ERR_SYNTAX;
		out[o++] = (char)ch;
	}
	out[o] = '\0';
	if (o == 0)
		return SCRAM_ERR_SYNTAX;
	if (nonascii) {
		out[0] = '\0';
		return SCRAM_ERR_AUTH;
	}
	return SCRAM_OK;
}

/* RFC 5802 6 and 7, RFC 9266: which gs2-cbind-flag the chosen mechanism allows. */
static enum scram_result scram_cb_policy(char flag, const char *cbname, size_t cbname_len,
                                         bool plus, bool cb_available)
{
	static const char want[] = "tls-exporter";

	if (plus) {
		/* -PLUS means binding: "p=tls-exporter" on a connection that can do it */
		if (flag != 'p' || !cb_available)
			return SCRAM_ERR_CB;
		if (cbname_len != sizeof(want) - 1 || memcmp(cbname, want, cbname_len) != 0)
			return SCRAM_ERR_CB;
		return SCRAM_OK;
	}
	/* "p" on the non-PLUS mechanism must fail (RFC 5802 6) */
	if (flag == 'p')
		return SCRAM_ERR_CB;
	/* "y": the client could bind but thinks we cannot; we advertised -PLUS, so someone
	 * removed it on the way: a downgrade (RFC 5802 6) */
	if (flag == 'y' && cb_available)
		return SCRAM_ERR_CB;
	return SCRAM_OK;
}

/* ---- stored keys ---------------------------------------------------------------------- */

int scram_creds_make(const char *password, const unsigned char *salt, size_t salt_len,
                     uint32_t iter, struct scram_creds *out)
{
	static const char ck[] = "Client Key", sk[] = "Server Key";
	unsigned char salted[SCRAM_KEY_LEN], ckey[SCRAM_KEY_LEN];
	struct scram_part part;
	size_t plen;
	int rc = -1;

	if (out == NULL)
		return -1;
	memset(out, 0, sizeof(*out));
	if (password == NULL || salt == NULL || salt_len == 0 || salt_len > SCRAM_SALT_MAX ||
	    iter == 0 || iter > INT_MAX)
		return -1;
	plen = strlen(password);
	if (plen == 0 || plen > INT_MAX)
		return -1;
	/* RFC 5802 3: SaltedPassword := Hi(Normalize(password), salt, i); the password is
	 * taken as its bytes (SASLprep is the identity on printable ASCII). */
	if (PKCS5_PBKDF2_HMAC(password, (int)plen, salt, (int)salt_len, (int)iter, EVP_sha256(),
	                      SCRAM_KEY_LEN, salted) != 1)
		goto out;
	part = (struct scram_part){ck, sizeof(ck) - 1};
	if (scram_hmac(salted, sizeof(salted), &part, 1, ckey) != 0)
		goto out;
	if (scram_sha256(ckey, sizeof(ckey), out->stored_key) != 0)
		goto out;
	part = (struct scram_part){sk, sizeof(sk) - 1};
	if (scram_hmac(salted, sizeof(salted), &part, 1, out->server_key) != 0)
		goto out;
	memcpy(out->salt, salt, salt_len);
	out->salt_len = salt_len;
	out->iter = iter;
	rc = 0;
out:
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(ckey, sizeof(ckey));
	if (rc != 0)
		OPENSSL_cleanse(out, sizeof(*out));
	return rc;
}

/* ---- the exchange --------------------------------------------------------------------- */

enum scram_result scram_client_first(struct scram_server *s, const char *msg, size_t len, bool plus,
                                     bool cb_available)
{
	struct scram_cur c;
	const char *cbname = NULL, *authz = NULL, *uname = NULL, *cnonce = NULL, *bare;
	size_t cbname_len = 0, authz_len = 0, uname_len = 0, cnonce_len = 0, gs2_len, bare_len;
	char flag, authzid[SASL_USER_MAX + 1];
	enum scram_result r = SCRAM_ERR_SYNTAX;

	if (s == NULL)
		return SCRAM_ERR_SYNTAX;
	/* every exchange starts from a clean slate, whatever the caller left in *s */
	memset(s, 0, sizeof(*s));
	s->plus = plus;
	s->cb_available = cb_available;
	if (msg == NULL || len == 0 || len > SASL_MSG_MAX || memchr(msg, '\0', len) != NULL)
		goto out;
	c.p = msg;
	c.end = msg + len;

	/* gs2-header = gs2-cbind-flag "," [ authzid ] "," */
	flag = *c.p;
	if (flag == 'n' || flag == 'y') {
		c.p++;
	} else if (flag == 'p') {
		if (!scram_attr(&c, 'p', &cbname, &cbname_len) ||
		    !scram_cbname_ok(cbname, cbname_len))
			goto out;
	} else {
		goto out;
	}
	if (!scram_comma(&c))
		goto out;
	if (c.p < c.end && *c.p != ',' && !scram_attr(&c, 'a', &authz, &authz_len))
		goto out;
	if (!scram_comma(&c))
		goto out;
	gs2_len = (size_t)(c.p - msg);

	/* client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
	 * RFC 5802 5.1: "m" announces a mandatory extension; we support none */
	bare = c.p;
	if (!scram_attr(&c, 'n', &uname, &uname_len) || !scram_comma(&c))
		goto out;
	if (!scram_attr(&c, 'r', &cnonce, &cnonce_len) || !scram_nonce_ok(cnonce, cnonce_len))
		goto out;
	while (c.p < c.end)
		if (!scram_comma(&c) || !scram_ext(&c))
			goto out;
	bare_len = (size_t)(c.end - bare);

	r = scram_name_decode(uname, uname_len, s->user, sizeof(s->user));
	if (r != SCRAM_OK)
		goto out;
	if (authz != NULL) {
		r = scram_name_decode(authz, authz_len, authzid, sizeof(authzid));
		if (r != SCRAM_OK)
			goto out;
	}
	r = scram_cb_policy(flag, cbname, cbname_len, plus, cb_available);
	if (r != SCRAM_OK)
		goto out;
	/* we do not let one user act as another */
	if (authz != NULL && strcmp(authzid, s->user) != 0) {
		r = SCRAM_ERR_AUTH;
		goto out;
	}
	r = SCRAM_ERR_SYNTAX;
	if (gs2_len >= sizeof(s->gs2_header) || bare_len >= sizeof(s->client_first_bare) ||
	    cnonce_len >= sizeof(s->nonce))
		goto out;
	memcpy(s->gs2_header, msg, gs2_len);
	s->gs2_header[gs2_len] = '\0';
	memcpy(s->client_first_bare, bare, bare_len);
	s->client_first_bare[bare_len] = '\0';
	memcpy(s->nonce, cnonce, cnonce_len);
	s->nonce[cnonce_len] = '\0';
	r = SCRAM_OK;
out:
	if (r == SCRAM_OK) {
		s->state = SCRAM_ST_FIRST_DONE;
	} else {
		s->state = SCRAM_ST_FAILED;
		s->user[0] = '\0';
	}
	return r;
}

enum scram_result scram_server_first_with_nonce(struct scram_server *s, const struct scram_creds *c,
                                                const char *snonce, size_t snonce_len, char *out,
                                                size_t outsz)
{
	char salt64[(SCRAM_SALT_MAX + 2) / 3 * 4 + 1];
	size_t clen;
	int n;

	if (s == NULL)
		return SCRAM_ERR_SYNTAX;
	/* once only, right after a good client-first */
	if (s->state != SCRAM_ST_FIRST_DONE || s->server_first[0] != '\0')
		goto fail;
	if (c == NULL || out == NULL || outsz == 0 || snonce == NULL ||
	    !scram_nonce_ok(snonce, snonce_len))
		goto fail;
	if (c->salt_len == 0 || c->salt_len > SCRAM_SALT_MAX || c->iter == 0)
		goto fail;
	clen = strnlen(s->nonce, sizeof(s->nonce));
	if (clen + snonce_len >= sizeof(s->nonce))
		goto fail;
	if (sasl_b64_encode(c->salt, c->salt_len, salt64, sizeof(salt64)) < 0)
		goto fail;
	memcpy(s->nonce + clen, snonce, snonce_len);
	s->nonce[clen + snonce_len] = '\0';
	/* RFC 5802 7: server-first-message = [reserved-mext ","] nonce "," salt ","
	 * iteration-count ["," extensions] */
	n = snprintf(s->server_first, sizeof(s->server_first), "r=%s,s=%s,i=%lu", s->nonce, salt64,
	             (unsigned long)c->iter);
	if (n < 0 || (size_t)n >= sizeof(s->server_first) || (size_t)n >= outsz)
		goto fail;
	memcpy(out, s->server_first, (size_t)n + 1);
	return SCRAM_OK;
fail:
	s->state = SCRAM_ST_FAILED;
	if (out != NULL && outsz > 0)
		out[0] = '\0';
	return SCRAM_ERR_SYNTAX;
}

enum scram_result scram_server_first(struct scram_server *s, const struct scram_creds *c, char *out,
                                     size_t outsz)
{
	unsigned char raw[SCRAM_SNONCE_RAW];
	char snonce[(SCRAM_SNONCE_RAW + 2) / 3 * 4 + 1];
	int n;

	if (sodium_init() < 0) {
		if (s != NULL)
			s->state = SCRAM_ST_FAILED;
		return SCRAM_ERR_SYNTAX;
	}
	randombytes_buf(raw, sizeof(raw));
	n = sasl_b64_encode(raw, sizeof(raw), snonce, sizeof(snonce));
	if (n < 0) {
		if (s != NULL)
			s->state = SCRAM_ST_FAILED;
		return SCRAM_ERR_SYNTAX;
	}
	return scram_server_first_with_nonce(s, c, snonce, (size_t)n, out, outsz);
}

/* RFC 5802 3: ClientSignature := HMAC(StoredKey, AuthMessage); ClientKey := ClientProof
 * XOR ClientSignature; the proof is good when H(ClientKey) == StoredKey. On success also
 * ServerSignature := HMAC(ServerKey, AuthMessage) into sig. */
static enum scram_result scram_verify(const struct scram_creds *c, const struct scram_part *am,
                                      size_t nam, const unsigned char proof[SCRAM_KEY_LEN],
                                      unsigned char sig[SCRAM_KEY_LEN])
{
	unsigned char csig[SCRAM_KEY_LEN], ckey[SCRAM_KEY_LEN], h[SCRAM_KEY_LEN];
	enum scram_result r = SCRAM_ERR_AUTH;

	if (scram_hmac(c->stored_key, SCRAM_KEY_LEN, am, nam, csig) != 0)
		goto out;
	for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
		ckey[i] = proof[i] ^ csig[i];
	if (scram_sha256(ckey, sizeof(ckey), h) != 0)
		goto out;
	if (CRYPTO_memcmp(h, c->stored_key, SCRAM_KEY_LEN) != 0)
		goto out;
	if (scram_hmac(c->server_key, SCRAM_KEY_LEN, am, nam, sig) != 0)
		goto out;
	r = SCRAM_OK;
out:
	OPENSSL_cleanse(csig, sizeof(csig));
	OPENSSL_cleanse(ckey, sizeof(ckey));
	OPENSSL_cleanse(h, sizeof(h));
	return r;
}

enum scram_result scram_client_final(struct scram_server *s, const struct scram_creds *c,
                                     const char *msg, size_t len, const unsigned char *cb_data,
                                     size_t cb_len, char *out, size_t outsz)
{
	unsigned char cbind[SASL_MSG_MAX], proof[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN];
	struct scram_cur cur;
	struct scram_part am[5];
	const char *cb64 = NULL, *nonce = NULL, *p64 = NULL, *wp_end;
	size_t cb64_len = 0, nonce_len = 0, p64_len = 0, cbind_len = 0, proof_len = 0, gs2_len;
	enum scram_result r = SCRAM_ERR_SYNTAX;

	if (s == NULL)
		return SCRAM_ERR_SYNTAX;
	if (out != NULL && outsz > 0)
		out[0] = '\0';
	if (s->state != SCRAM_ST_FIRST_DONE || s->server_first[0] == '\0')
		goto out;
	if (c == NULL || out == NULL || outsz < SCRAM_SERVER_FINAL_LEN)
		goto out;
	if (msg == NULL || len == 0 || len > SASL_MSG_MAX || memchr(msg, '\0', len) != NULL)
		goto out;
	cur.p = msg;
	cur.end = msg + len;

	/* client-final-message = channel-binding "," nonce ["," extensions] "," proof */
	if (!scram_attr(&cur, 'c', &cb64, &cb64_len) || !scram_comma(&cur))
		goto out;
	if (!scram_attr(&cur, 'r', &nonce, &nonce_len))
		goto out;
	for (;;) {
		if (!scram_comma(&cur))
			goto out;
		if (scram_at(&cur, 'p'))
			break;
		if (!scram_ext(&cur))
			goto out;
	}
	wp_end = cur.p - 1; /* client-final-message-without-proof ends before ",p=" */
	if (!scram_attr(&cur, 'p', &p64, &p64_len) || cur.p != cur.end)
		goto out;
	if (sasl_b64_decode(cb64, cb64_len, cbind, sizeof(cbind), &cbind_len) != 0)
		goto out;
	/* a proof of any other length does not decode into SCRAM_KEY_LEN bytes */
	if (sasl_b64_decode(p64, p64_len, proof, sizeof(proof), &proof_len) != 0 ||
	    proof_len != SCRAM_KEY_LEN)
		goto out;

	/* RFC 5802 6: c= is base64(gs2-header [cbind-data]), the very header of client-first;
	 * with -PLUS the tls-exporter bytes of this connection (RFC 9266) follow it */
	r = SCRAM_ERR_CB;
	gs2_len = strnlen(s->gs2_header, sizeof(s->gs2_header));
	if (s->plus) {
		if (cb_data == NULL || cb_len == 0 || cb_len > sizeof(cbind) - gs2_len)
			goto out;
		if (cbind_len != gs2_len + cb_len ||
		    CRYPTO_memcmp(cbind, s->gs2_header, gs2_len) != 0 ||
		    CRYPTO_memcmp(cbind + gs2_len, cb_data, cb_len) != 0)
			goto out;
	} else if (cbind_len != gs2_len || memcmp(cbind, s->gs2_header, gs2_len) != 0) {
		goto out;
	}

	/* RFC 5802 5.1: the nonce must be the client's followed by ours, unchanged */
	r = SCRAM_ERR_AUTH;
	if (nonce_len != strnlen(s->nonce, sizeof(s->nonce)) ||
	    memcmp(nonce, s->nonce, nonce_len) != 0)
		goto out;

	/* AuthMessage := client-first-message-bare + "," + server-first-message + "," +
	 * client-final-message-without-proof */
	am[0] = (struct scram_part){s->client_first_bare, strlen(s->client_first_bare)};
	am[1] = (struct scram_part){",", 1};
	am[2] = (struct scram_part){s->server_first, strlen(s->server_first)};
	am[3] = (struct scram_part){",", 1};
	am[4] = (struct scram_part){msg, (size_t)(wp_end - msg)};
	r = scram_verify(c, am, 5, proof, sig);
	if (r != SCRAM_OK)
		goto out;
	memcpy(out, "v=", 2);
	if (sasl_b64_encode(sig, sizeof(sig), out + 2, outsz - 2) < 0) {
		r = SCRAM_ERR_SYNTAX;
		goto out;
	}
out:
	OPENSSL_cleanse(proof, sizeof(proof));
	OPENSSL_cleanse(sig, sizeof(sig));
	s->state = r == SCRAM_OK ? SCRAM_ST_DONE : SCRAM_ST_FAILED;
	if (r != SCRAM_OK && out != NULL && outsz > 0)
		out[0] = '\0';
	return r;
}
