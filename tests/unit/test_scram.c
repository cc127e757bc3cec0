/* Unit tests for src/auth/scram.c: the RFC 7677 3 exchange replayed byte for byte, stored
 * keys checked against an independent computation, wrong passwords, tampered nonces, every
 * gs2 / channel-binding rule (-PLUS, tls-exporter only, "y" downgrade, "p" without -PLUS,
 * authzid), malformed client-first and client-final messages, and the exchange's states.
 * Runs in the test process only. The client side is computed here with OpenSSL directly,
 * so a bug shared by the server code and its own helpers cannot hide. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "auth/sasl.h"
#include "auth/scram.h"

#define S(lit) lit, sizeof(lit) - 1

/* RFC 7677 3 */
#define RFC_FIRST "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_NONCE "rOprNGfwEbeRWgbNEkqO" RFC_SNONCE
#define RFC_SFIRST "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_FINAL "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SFINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static struct scram_creds creds; /* "pencil", RFC 7677 salt, 4096 */

/* tls-exporter bytes "of the connection", and some other connection's */
static const unsigned char CB[SCRAM_CB_LEN] = {
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
    0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20};
static const unsigned char CB_OTHER[SCRAM_CB_LEN] = {0xee};

static int setup(void **state)
{
	unsigned char salt[16];
	size_t n;

	(void)state;
	if (sasl_b64_decode(S("W22ZaJ0SNY7soEsUEjb6gQ=="), salt, sizeof(salt), &n) != 0 || n != 16)
		return -1;
	return scram_creds_make("pencil", salt, n, 4096, &creds);
}

static void hex(const unsigned char *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", p[i]);
}

/* ---- an independent client (RFC 5802 3) ----------------------------------------------- */

/* out := without_proof ",p=" base64(ClientProof) for this password and AuthMessage */
static void client_prove(const char *password, const char *bare, const char *sfirst,
                         const char *without_proof, char *out, size_t outsz)
{
	unsigned char sp[32], ck[32], sk[32], sig[32], proof[32];
	unsigned int l = 32;
	char am[4096], p64[64];
	int n;

	assert_int_equal(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), creds.salt,
	                                   (int)creds.salt_len, (int)creds.iter, EVP_sha256(), 32,
	                                   sp),
	                 1);
	assert_non_null(
	    HMAC(EVP_sha256(), sp, 32, (const unsigned char *)"Client Key", 10, ck, &l));
	SHA256(ck, 32, sk);
	n = snprintf(am, sizeof(am), "%s,%s,%s", bare, sfirst, without_proof);
	assert_true(n > 0 && (size_t)n < sizeof(am));
	assert_non_null(HMAC(EVP_sha256(), sk, 32, (const unsigned char *)am, (size_t)n, sig, &l));
	for (int i = 0; i < 32; i++)
		proof[i] = ck[i] ^ sig[i];
	assert_int_equal(sasl_b64_encode(proof, 32, p64, sizeof(p64)), 44);
	n = snprintf(out, outsz, "%s,p=%s", without_proof, p64);
	assert_true(n > 0 && (size_t)n < outsz);
}

/* "c=" base64(gs2 [+ cb]) ",r=" nonce [ "," ext ] */
static void client_without_proof(const char *gs2, const unsigned char *cb, size_t cb_len,
                                 const char *nonce, const char *ext, char *out, size_t outsz)
{
	unsigned char cbind[1024];
	char c64[2048];
	size_t glen = strlen(gs2);
	int n;

	assert_true(glen + cb_len <= sizeof(cbind));
	memcpy(cbind, gs2, glen);
	if (cb_len > 0)
		memcpy(cbind + glen, cb, cb_len);
	assert_true(sasl_b64_encode(cbind, glen + cb_len, c64, sizeof(c64)) >= 0);
	n = snprintf(out, outsz, "c=%s,r=%s%s%s", c64, nonce, ext ? "," : "", ext ? ext : "");
	assert_true(n > 0 && (size_t)n < outsz);
}

/* ---- RFC 7677 3 ----------------------------------------------------------------------- */

static void test_creds_vector(void **state)
{
	char h[65];

	(void)state;
	assert_int_equal(creds.salt_len, 16);
	assert_int_equal(creds.iter, 4096);
	hex(creds.stored_key, 32, h);
	assert_string_equal(h, "586e5df283e6dceb5c3e791d8b8528ec191e664045ce971792e2e6b5bb13e2a6");
	hex(creds.server_key, 32, h);
	assert_string_equal(h, "c1f3cbc1c13a9d35a14c0990eed97629ea225863e566a4314ab99f3f00e5d9d5");
}

static void rfc_first(struct scram_server *s, bool cb_available)
{
	char out[512];

	assert_int_equal(scram_client_first(s, S(RFC_FIRST), false, cb_available), SCRAM_OK);
	assert_int_equal(s->state, SCRAM_ST_FIRST_DONE);
	assert_string_equal(s->user, "user");
	assert_string_equal(s->gs2_header, "n,,");
	assert_string_equal(s->client_first_bare, "n=user,r=rOprNGfwEbeRWgbNEkqO");
	assert_int_equal(scram_server_first_with_nonce(s, &creds, S(RFC_SNONCE), out, sizeof(out)),
	                 SCRAM_OK);
	assert_string_equal(out, RFC_SFIRST);
	assert_string_equal(s->nonce, RFC_NONCE);
}

static void test_rfc7677(void **state)
{
	struct scram_server s;
	char out[128], mine[512];

	(void)state;
	for (int cbav = 0; cbav <= 1; cbav++) {
		/* "n": the client cannot bind at all, which is fine even where we could */
		rfc_first(&s, cbav);
		assert_int_equal(
		    scram_client_final(&s, &creds, S(RFC_FINAL), NULL, 0, out, sizeof(out)),
		    SCRAM_OK);
		assert_string_equal(out, RFC_SFINAL);
		assert_int_equal(s.state, SCRAM_ST_DONE);
	}
	/* the test's own client reproduces the RFC's proof */
	client_prove("pencil", "n=user,r=rOprNGfwEbeRWgbNEkqO", RFC_SFIRST, "c=biws,r=" RFC_NONCE,
	             mine, sizeof(mine));
	assert_string_equal(mine, RFC_FINAL);
}

/* The same exchange over -PLUS, the client's side computed with Python's hashlib (see
 * tests/fuzz/corpus/fuzz_sasl/scram_final_plus), CB as the tls-exporter bytes. */
static void test_plus_vector(void **state)
{
	static const char first[] = "p=tls-exporter,,n=user,r=rOprNGfwEbeRWgbNEkqO";
	static const char final[] =
	    "c=cD10bHMtZXhwb3J0ZXIsLAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"
	    "Hh8g,r=" RFC_NONCE ",p=w9H9vIo/jsodntpDDeLdytQa0oto6PYDAlsEKQDvVkQ=";
	struct scram_server s;
	char out[512];

	(void)state;
	assert_int_equal(scram_client_first(&s, S(first), true, true), SCRAM_OK);
	assert_int_equal(scram_server_first_with_nonce(&s, &creds, S(RFC_SNONCE), out, sizeof(out)),
	                 SCRAM_OK);
	assert_string_equal(out, RFC_SFIRST);
	assert_int_equal(scram_client_final(&s, &creds, S(final), CB, sizeof(CB), out, sizeof(out)),
	                 SCRAM_OK);
	/* the same message on another TLS connection */
	assert_int_equal(scram_client_first(&s, S(first), true, true), SCRAM_OK);
	assert_int_equal(scram_server_first_with_nonce(&s, &creds, S(RFC_SNONCE), out, sizeof(out)),
	                 SCRAM_OK);
	assert_int_equal(
	    scram_client_final(&s, &creds, S(final), CB_OTHER, sizeof(CB_OTHER), out, sizeof(out)),
	    SCRAM_ERR_CB);
}

static void test_wrong_password(void **state)
{
	static const char *const pw[] = {"pencil2", "Pencil", "pencil ", "penci", "p"};
	struct scram_server s;
	char out[128], fin[512];

	(void)state;
	for (size_t i = 0; i < sizeof(pw) / sizeof(pw[0]); i++) {
		rfc_first(&s, false);
		client_prove(pw[i], s.client_first_bare, s.server_first, "c=biws,r=" RFC_NONCE, fin,
		             sizeof(fin));
		assert_int_equal(
		    scram_client_final(&s, &creds, fin, strlen(fin), NULL, 0, out, sizeof(out)),
		    SCRAM_ERR_AUTH);
		assert_string_equal(out, "");
		assert_int_equal(s.state, SCRAM_ST_FAILED);
	}
	/* every single-bit change of the RFC's proof */
	for (int bit = 0; bit < 256; bit += 7) {
		unsigned char proof[32];
		char p64[64];
		size_t n;

		rfc_first(&s, false);
		assert_int_equal(sasl_b64_decode(S("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
		                                 proof, sizeof(proof), &n),
		                 0);
		proof[bit / 8] ^= (unsigned char)(1u << (bit % 8));
		sasl_b64_encode(proof, 32, p64, sizeof(p64));
		snprintf(fin, sizeof(fin), "c=biws,r=%s,p=%s", RFC_NONCE, p64);
		assert_int_equal(
		    scram_client_final(&s, &creds, fin, strlen(fin), NULL, 0, out, sizeof(out)),
		    SCRAM_ERR_AUTH);
	}
	/* right password, other user's keys (an unknown login gets made-up keys) */
	{
		struct scram_creds other = creds;

		other.stored_key[0] ^= 1;
		rfc_first(&s, false);
		assert_int_equal(
		    scram_client_final(&s, &other, S(RFC_FINAL), NULL, 0, out, sizeof(out)),
		    SCRAM_ERR_AUTH);
	}
}

static void test_tampered_nonce(void **state)
{
	static const char *const nonces[] = {
	    "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1",  /* last char changed */
	    "sOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",  /* client part changed */
	    "rOprNGfwEbeRWgbNEkqO",                                /* client part only */
	    "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k",   /* one short */
	    "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k00", /* one more */
	    "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",                      /* server part only */
	    "x",
	};
	struct scram_server s;
	char out[128], wp[512], fin[512];

	(void)state;
	for (size_t i = 0; i < sizeof(nonces) / sizeof(nonces[0]); i++) {
		rfc_first(&s, false);
		snprintf(wp, sizeof(wp), "c=biws,r=%s", nonces[i]);
		/* a correct proof over the tampered message: only the nonce is wrong */
		client_prove("pencil", s.client_first_bare, s.server_first, wp, fin, sizeof(fin));
		assert_int_equal(
		    scram_client_final(&s, &creds, fin, strlen(fin), NULL, 0, out, sizeof(out)),
		    SCRAM_ERR_AUTH);
	}
}

/* ---- gs2 header and channel binding --------------------------------------------------- */

struct cb_case {
	const char *name;
	const char *first; /* client-first-message */
	bool plus, cb_available;
	enum scram_result r_first;
	const char *c_gs2;           /* what the client puts in c= ... */
	const unsigned char *c_cb;   /* ... followed by these SCRAM_CB_LEN bytes, if not NULL */
	const unsigned char *srv_cb; /* what the server passes as cb_data */
	enum scram_result r_final;
};

static const struct cb_case cb_cases[] = {
    /* -PLUS with tls-exporter */
    {"plus ok", "p=tls-exporter,,n=user,r=abc", true, true, SCRAM_OK, "p=tls-exporter,,", CB, CB,
     SCRAM_OK},
    {"plus c= without cb data", "p=tls-exporter,,n=user,r=abc", true, true, SCRAM_OK,
     "p=tls-exporter,,", NULL, CB, SCRAM_ERR_CB},
    {"plus c= other connection", "p=tls-exporter,,n=user,r=abc", true, true, SCRAM_OK,
     "p=tls-exporter,,", CB_OTHER, CB, SCRAM_ERR_CB},
    {"plus server has no cb data", "p=tls-exporter,,n=user,r=abc", true, true, SCRAM_OK,
     "p=tls-exporter,,", CB, NULL, SCRAM_ERR_CB},
    {"plus c= other gs2", "p=tls-exporter,,n=user,r=abc", true, true, SCRAM_OK, "n,,", CB, CB,
     SCRAM_ERR_CB},
    {"plus c= gs2 only as n", "p=tls-exporter,,n=user,r=abc", true, true, SCRAM_OK, "n,,", NULL, CB,
     SCRAM_ERR_CB},
    {"plus authzid ok", "p=tls-exporter,a=user,n=user,r=abc", true, true, SCRAM_OK,
     "p=tls-exporter,a=user,", CB, CB, SCRAM_OK},
    {"plus authzid dropped in c=", "p=tls-exporter,a=user,n=user,r=abc", true, true, SCRAM_OK,
     "p=tls-exporter,,", CB, CB, SCRAM_ERR_CB},
    {"plus not available", "p=tls-exporter,,n=user,r=abc", true, false, SCRAM_ERR_CB, NULL, NULL,
     NULL, SCRAM_OK},
    {"plus with n", "n,,n=user,r=abc", true, true, SCRAM_ERR_CB, NULL, NULL, NULL, SCRAM_OK},
    {"plus with y", "y,,n=user,r=abc", true, true, SCRAM_ERR_CB, NULL, NULL, NULL, SCRAM_OK},
    {"plus tls-unique", "p=tls-unique,,n=user,r=abc", true, true, SCRAM_ERR_CB, NULL, NULL, NULL,
     SCRAM_OK},
    {"plus tls-server-end-point", "p=tls-server-end-point,,n=user,r=abc", true, true, SCRAM_ERR_CB,
     NULL, NULL, NULL, SCRAM_OK},
    {"plus TLS-EXPORTER", "p=TLS-EXPORTER,,n=user,r=abc", true, true, SCRAM_ERR_CB, NULL, NULL,
     NULL, SCRAM_OK},
    {"plus tls-exporterx", "p=tls-exporterx,,n=user,r=abc", true, true, SCRAM_ERR_CB, NULL, NULL,
     NULL, SCRAM_OK},
    /* without -PLUS */
    {"n ok", "n,,n=user,r=abc", false, false, SCRAM_OK, "n,,", NULL, NULL, SCRAM_OK},
    {"n ok, cb possible", "n,,n=user,r=abc", false, true, SCRAM_OK, "n,,", NULL, CB, SCRAM_OK},
    {"n then c= with cb data", "n,,n=user,r=abc", false, true, SCRAM_OK, "n,,", CB, CB,
     SCRAM_ERR_CB},
    {"n then c= y", "n,,n=user,r=abc", false, false, SCRAM_OK, "y,,", NULL, NULL, SCRAM_ERR_CB},
    {"n then c= p", "n,,n=user,r=abc", false, true, SCRAM_OK, "p=tls-exporter,,", CB, CB,
     SCRAM_ERR_CB},
    {"n then c= empty gs2", "n,,n=user,r=abc", false, false, SCRAM_OK, "n,", NULL, NULL,
     SCRAM_ERR_CB},
    {"y downgrade", "y,,n=user,r=abc", false, true, SCRAM_ERR_CB, NULL, NULL, NULL, SCRAM_OK},
    {"y, no -PLUS offered", "y,,n=user,r=abc", false, false, SCRAM_OK, "y,,", NULL, NULL, SCRAM_OK},
    {"y then c= n", "y,,n=user,r=abc", false, false, SCRAM_OK, "n,,", NULL, NULL, SCRAM_ERR_CB},
    {"p without -PLUS", "p=tls-exporter,,n=user,r=abc", false, true, SCRAM_ERR_CB, NULL, NULL, NULL,
     SCRAM_OK},
    {"p without -PLUS or cb", "p=tls-exporter,,n=user,r=abc", false, false, SCRAM_ERR_CB, NULL,
     NULL, NULL, SCRAM_OK},
    {"p other without -PLUS", "p=tls-unique,,n=user,r=abc", false, true, SCRAM_ERR_CB, NULL, NULL,
     NULL, SCRAM_OK},
    /* authzid */
    {"authzid = user", "n,a=user,n=user,r=abc", false, false, SCRAM_OK, "n,a=user,", NULL, NULL,
     SCRAM_OK},
    {"authzid dropped in c=", "n,a=user,n=user,r=abc", false, false, SCRAM_OK, "n,,", NULL, NULL,
     SCRAM_ERR_CB},
    {"authzid other", "n,a=admin,n=user,r=abc", false, false, SCRAM_ERR_AUTH, NULL, NULL, NULL,
     SCRAM_OK},
    {"authzid other, plus", "p=tls-exporter,a=admin,n=user,r=abc", true, true, SCRAM_ERR_AUTH, NULL,
     NULL, NULL, SCRAM_OK},
    {"authzid prefix", "n,a=use,n=user,r=abc", false, false, SCRAM_ERR_AUTH, NULL, NULL, NULL,
     SCRAM_OK},
    {"authzid escaped = user", "y,a=a=2Cb=3Dc,n=a=2Cb=3Dc,r=abc", false, false, SCRAM_OK,
     "y,a=a=2Cb=3Dc,", NULL, NULL, SCRAM_OK},
    {"authzid escaped other", "n,a=a=2Cb,n=a=2Cb=3Dc,r=abc", false, false, SCRAM_ERR_AUTH, NULL,
     NULL, NULL, SCRAM_OK},
    {"authzid empty", "n,a=,n=user,r=abc", false, false, SCRAM_ERR_SYNTAX, NULL, NULL, NULL,
     SCRAM_OK},
    {"authzid bad escape", "n,a=us=2er,n=user,r=abc", false, false, SCRAM_ERR_SYNTAX, NULL, NULL,
     NULL, SCRAM_OK},
};

/* Creds for user "user" with password "pencil": the same as the RFC's. */
static void test_cb_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cb_cases) / sizeof(cb_cases[0]); i++) {
		const struct cb_case *t = &cb_cases[i];
		struct scram_server s;
		char sfirst[512], wp[1024], fin[1024], out[128];
		enum scram_result r;

		memset(&s, 0xa5, sizeof(s)); /* garbage: client_first must not care */
		r = scram_client_first(&s, t->first, strlen(t->first), t->plus, t->cb_available);
		if (r != t->r_first)
			fail_msg("%s: client-first %d, want %d", t->name, r, t->r_first);
		if (r != SCRAM_OK) {
			assert_int_equal(s.state, SCRAM_ST_FAILED);
			assert_string_equal(s.user, "");
			/* nothing further works on a failed exchange */
			assert_int_equal(scram_server_first(&s, &creds, sfirst, sizeof(sfirst)),
			                 SCRAM_ERR_SYNTAX);
			continue;
		}
		assert_int_equal(scram_server_first(&s, &creds, sfirst, sizeof(sfirst)), SCRAM_OK);
		client_without_proof(t->c_gs2, t->c_cb, t->c_cb ? SCRAM_CB_LEN : 0, s.nonce, NULL,
		                     wp, sizeof(wp));
		client_prove("pencil", s.client_first_bare, sfirst, wp, fin, sizeof(fin));
		r = scram_client_final(&s, &creds, fin, strlen(fin), t->srv_cb,
		                       t->srv_cb ? SCRAM_CB_LEN : 0, out, sizeof(out));
		if (r != t->r_final)
			fail_msg("%s: client-final %d, want %d", t->name, r, t->r_final);
		assert_int_equal(s.state, r == SCRAM_OK ? SCRAM_ST_DONE : SCRAM_ST_FAILED);
		if (r == SCRAM_OK)
			assert_memory_equal(out, "v=", 2);
		else
			assert_string_equal(out, "");
	}
}

/* ---- malformed client-first ----------------------------------------------------------- */

struct first_case {
	const char *msg;
	size_t len;
	enum scram_result r;
	const char *user;
};

/* clang-format off */
#define F(lit, r, u) {lit, sizeof(lit) - 1, r, u}

static const struct first_case first_cases[] = {
	F("n,,n=user,r=abc", SCRAM_OK, "user"),
	F("n,,n=user,r=abc,x=1", SCRAM_OK, "user"), /* unknown extension: ignored */
	F("n,,n=user,r=abc,x=1,Z=a=b", SCRAM_OK, "user"),
	F("n,,n=a=2Cb=3Dc,r=abc", SCRAM_OK, "a,b=c"),
	F("n,,n=me@example.org,r=!\"#$%&'()*+-./09:;<=>?@AZ[\\]^_`az{|}~", SCRAM_OK, "me@example.org"),
	F("n,,n=user name,r=abc", SCRAM_OK, "user name"),
	F("", SCRAM_ERR_SYNTAX, ""),
	F("n", SCRAM_ERR_SYNTAX, ""),
	F("n,", SCRAM_ERR_SYNTAX, ""),
	F("n,,", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user,", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user,r=", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user,r", SCRAM_ERR_SYNTAX, ""),
	F("n,,r=abc,n=user", SCRAM_ERR_SYNTAX, ""), /* attributes in order */
	F("n,,n=,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user,r=abc,", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user,,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user,r=abc,r=def", SCRAM_ERR_SYNTAX, ""), /* a second nonce is no extension */
	F("n,,n=user,r=abc,n=root", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user,r=abc,x=", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user,r=abc,x", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user,r=abc,1=x", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user,r=abc,xy=1", SCRAM_ERR_SYNTAX, ""),
	F("n,,m=ext,n=user,r=abc", SCRAM_ERR_SYNTAX, ""), /* RFC 5802 5.1: mandatory ext. */
	F("n,,n=user,r=abc,m=ext", SCRAM_ERR_SYNTAX, ""),
	F("x,,n=user,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("N,,n=user,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n=,,n=user,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("ny,,n=user,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("p,,n=user,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("p=,,n=user,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("p=tls exporter,,n=user,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("p=tls_exporter,,n=user,r=abc", SCRAM_ERR_SYNTAX, ""),
	F(",,n=user,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,,,n=user,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,b=x,n=user,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,a=user,,n=user,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,a=user", SCRAM_ERR_SYNTAX, ""),
	F("n,,a=user,n=user,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=us=2Ger,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=us=2cer,r=abc", SCRAM_ERR_SYNTAX, ""), /* escapes are upper case */
	F("n,,n=us=3der,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user=,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user=3,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,,n==,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=us\x01r,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=us\tr,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=us\r\nr,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=us\x7fr,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=us\0er,r=abc", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user,r=abc\0", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=j\xc3\xa9r\xc3\xb4me,r=abc", SCRAM_ERR_AUTH, ""), /* non-ASCII: no such account */
	F("n,,n=\xff,r=abc", SCRAM_ERR_AUTH, ""),
	F("n,,n=user,r=a b", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user,r=ab\x7f", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user,r=ab\x80", SCRAM_ERR_SYNTAX, ""),
	F("n,,n=user,r=ab\t", SCRAM_ERR_SYNTAX, ""),
};
/* clang-format on */

static void test_first_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(first_cases) / sizeof(first_cases[0]); i++) {
		const struct first_case *t = &first_cases[i];
		struct scram_server s;
		enum scram_result r = scram_client_first(&s, t->msg, t->len, false, false);

		if (r != t->r)
			fail_msg("case %zu \"%s\": %d, want %d", i, t->msg, r, t->r);
		assert_string_equal(s.user, t->user);
		assert_int_equal(s.state, r == SCRAM_OK ? SCRAM_ST_FIRST_DONE : SCRAM_ST_FAILED);
	}
}

static void test_first_lengths(void **state)
{
	static char msg[SASL_MSG_MAX + 16];
	struct scram_server s;
	char name[3 * SASL_USER_MAX + 1];
	int n;

	(void)state;
	/* 128-octet nonce: taken; 129: not */
	n = snprintf(msg, sizeof(msg), "n,,n=user,r=");
	memset(msg + n, 'x', SCRAM_NONCE_MAX);
	assert_int_equal(scram_client_first(&s, msg, (size_t)n + SCRAM_NONCE_MAX, false, false),
	                 SCRAM_OK);
	msg[n + SCRAM_NONCE_MAX] = 'x';
	assert_int_equal(scram_client_first(&s, msg, (size_t)n + SCRAM_NONCE_MAX + 1, false, false),
	                 SCRAM_ERR_SYNTAX);

	/* 255-octet user name: taken; 256: not */
	memset(name, 'u', SASL_USER_MAX);
	name[SASL_USER_MAX] = '\0';
	n = snprintf(msg, sizeof(msg), "n,,n=%s,r=abc", name);
	assert_int_equal(scram_client_first(&s, msg, (size_t)n, false, false), SCRAM_OK);
	assert_int_equal(strlen(s.user), SASL_USER_MAX);
	n = snprintf(msg, sizeof(msg), "n,,n=%su,r=abc", name);
	assert_int_equal(scram_client_first(&s, msg, (size_t)n, false, false), SCRAM_ERR_SYNTAX);

	/* 255 escaped commas as user and authzid: the longest gs2-header there can be */
	for (int i = 0; i < SASL_USER_MAX; i++)
		memcpy(name + 3 * i, "=2C", 3);
	name[3 * SASL_USER_MAX] = '\0';
	n = snprintf(msg, sizeof(msg), "p=tls-exporter,a=%s,n=%s,r=abc", name, name);
	assert_int_equal(scram_client_first(&s, msg, (size_t)n, true, true), SCRAM_OK);
	assert_int_equal(strlen(s.user), SASL_USER_MAX);
	assert_int_equal(strlen(s.gs2_header), 15 + 2 + 3 * SASL_USER_MAX + 1);

	/* as long as there is room for, and longer, however well-formed */
	n = snprintf(msg, sizeof(msg), "n,,n=user,r=abc,x=");
	memset(msg + n, 'y', sizeof(msg) - (size_t)n);
	assert_int_equal(
	    scram_client_first(&s, msg, 3 + sizeof(s.client_first_bare) - 1, false, false),
	    SCRAM_OK);
	/* client-first-message-bare is kept for AuthMessage: it must fit */
	assert_int_equal(scram_client_first(&s, msg, 3 + sizeof(s.client_first_bare), false, false),
	                 SCRAM_ERR_SYNTAX);
	assert_int_equal(scram_client_first(&s, msg, SASL_MSG_MAX, false, false), SCRAM_ERR_SYNTAX);
	assert_int_equal(scram_client_first(&s, msg, SASL_MSG_MAX + 1, false, false),
	                 SCRAM_ERR_SYNTAX);
	assert_int_equal(scram_client_first(&s, NULL, 10, false, false), SCRAM_ERR_SYNTAX);
	assert_int_equal(scram_client_first(NULL, S("n,,n=user,r=abc"), false, false),
	                 SCRAM_ERR_SYNTAX);
}

/* ---- malformed client-final ----------------------------------------------------------- */

static const char *const final_bad[] = {
    "",
    "c=biws",
    "c=biws,r=" RFC_NONCE,
    "c=biws,r=" RFC_NONCE ",",
    "c=biws,r=" RFC_NONCE ",p=",
    "c=biws,r=" RFC_NONCE ",p",
    /* proof of 31 and 33 octets, unpadded, with junk after */
    "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndQ==",
    "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQAAA==",
    "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",
    "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,",
    "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1",
    "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ= ",
    "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN-Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=\r\n",
    /* order, missing and empty attributes */
    "r=" RFC_NONCE ",c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "c=,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "c=biws,r=,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "c=biws,,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    /* c= not strict base64 */
    "c=biw,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "c=biws=,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "c= biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    /* extensions: "m" and the letters RFC 5802 defines are refused */
    "c=biws,r=" RFC_NONCE ",m=x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "c=biws,r=" RFC_NONCE ",r=x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "c=biws,r=" RFC_NONCE ",c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "c=biws,r=" RFC_NONCE ",x=,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "c=biws,r=" RFC_NONCE ",x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,p=dHzbZapWIk4jUhN+"
    "Ute9ytag9zjfMHgsqmmiz7AndVQ=",
};

static void test_final_syntax(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(final_bad) / sizeof(final_bad[0]); i++) {
		struct scram_server s;
		char out[128];
		enum scram_result r;

		rfc_first(&s, false);
		r = scram_client_final(&s, &creds, final_bad[i], strlen(final_bad[i]), NULL, 0, out,
		                       sizeof(out));
		if (r != SCRAM_ERR_SYNTAX)
			fail_msg("case %zu \"%s\": %d, want syntax error", i, final_bad[i], r);
		assert_int_equal(s.state, SCRAM_ST_FAILED);
		assert_string_equal(out, "");
	}
	/* a NUL anywhere */
	{
		struct scram_server s;
		char out[128], msg[sizeof(RFC_FINAL)];

		for (size_t at = 0; at < sizeof(RFC_FINAL) - 1; at += 5) {
			rfc_first(&s, false);
			memcpy(msg, RFC_FINAL, sizeof(RFC_FINAL));
			msg[at] = '\0';
			assert_int_equal(scram_client_final(&s, &creds, msg, sizeof(RFC_FINAL) - 1,
			                                    NULL, 0, out, sizeof(out)),
			                 SCRAM_ERR_SYNTAX);
		}
	}
}

/* Unknown extensions before the proof are ignored but covered by it. */
static void test_final_extension(void **state)
{
	struct scram_server s;
	char wp[512], fin[512], out[128];

	(void)state;
	rfc_first(&s, false);
	client_without_proof("n,,", NULL, 0, RFC_NONCE, "x=1,y=two=2", wp, sizeof(wp));
	client_prove("pencil", s.client_first_bare, s.server_first, wp, fin, sizeof(fin));
	assert_int_equal(
	    scram_client_final(&s, &creds, fin, strlen(fin), NULL, 0, out, sizeof(out)), SCRAM_OK);
	/* the same proof after the extension was changed on the way */
	rfc_first(&s, false);
	fin[strlen("c=biws,r=" RFC_NONCE ",x=")] = '2';
	assert_int_equal(
	    scram_client_final(&s, &creds, fin, strlen(fin), NULL, 0, out, sizeof(out)),
	    SCRAM_ERR_AUTH);
	/* client-first extensions are part of AuthMessage too */
	{
		char sfirst[512];

		assert_int_equal(scram_client_first(&s, S("n,,n=user,r=abc,x=1"), false, false),
		                 SCRAM_OK);
		assert_string_equal(s.client_first_bare, "n=user,r=abc,x=1");
		assert_int_equal(scram_server_first(&s, &creds, sfirst, sizeof(sfirst)), SCRAM_OK);
		client_without_proof("n,,", NULL, 0, s.nonce, NULL, wp, sizeof(wp));
		client_prove("pencil", "n=user,r=abc,x=1", sfirst, wp, fin, sizeof(fin));
		assert_int_equal(
		    scram_client_final(&s, &creds, fin, strlen(fin), NULL, 0, out, sizeof(out)),
		    SCRAM_OK);
	}
}

/* ---- states, buffers, the random nonce ------------------------------------------------ */

static void test_states(void **state)
{
	struct scram_server s;
	struct scram_creds bad;
	char out[512];

	(void)state;
	/* client-final before server-first */
	assert_int_equal(scram_client_first(&s, S(RFC_FIRST), false, false), SCRAM_OK);
	assert_int_equal(scram_client_final(&s, &creds, S(RFC_FINAL), NULL, 0, out, sizeof(out)),
	                 SCRAM_ERR_SYNTAX);
	assert_int_equal(s.state, SCRAM_ST_FAILED);

	/* server-first twice */
	rfc_first(&s, false);
	assert_int_equal(scram_server_first(&s, &creds, out, sizeof(out)), SCRAM_ERR_SYNTAX);
	assert_int_equal(s.state, SCRAM_ST_FAILED);

	/* client-final again after success, or after failure */
	rfc_first(&s, false);
	assert_int_equal(scram_client_final(&s, &creds, S(RFC_FINAL), NULL, 0, out, sizeof(out)),
	                 SCRAM_OK);
	assert_int_equal(scram_client_final(&s, &creds, S(RFC_FINAL), NULL, 0, out, sizeof(out)),
	                 SCRAM_ERR_SYNTAX);
	rfc_first(&s, false);
	assert_int_equal(scram_client_final(&s, &creds, S("c=biws"), NULL, 0, out, sizeof(out)),
	                 SCRAM_ERR_SYNTAX);
	assert_int_equal(scram_client_final(&s, &creds, S(RFC_FINAL), NULL, 0, out, sizeof(out)),
	                 SCRAM_ERR_SYNTAX);

	/* server-first without room, with bad creds, with a bad forced nonce */
	assert_int_equal(scram_client_first(&s, S(RFC_FIRST), false, false), SCRAM_OK);
	assert_int_equal(
	    scram_server_first_with_nonce(&s, &creds, S(RFC_SNONCE), out, sizeof(RFC_SFIRST) - 1),
	    SCRAM_ERR_SYNTAX);
	assert_int_equal(scram_client_first(&s, S(RFC_FIRST), false, false), SCRAM_OK);
	assert_int_equal(
	    scram_server_first_with_nonce(&s, &creds, S(RFC_SNONCE), out, sizeof(RFC_SFIRST)),
	    SCRAM_OK);
	bad = creds;
	bad.salt_len = 0;
	assert_int_equal(scram_client_first(&s, S(RFC_FIRST), false, false), SCRAM_OK);
	assert_int_equal(scram_server_first(&s, &bad, out, sizeof(out)), SCRAM_ERR_SYNTAX);
	bad.salt_len = SCRAM_SALT_MAX + 1;
	assert_int_equal(scram_client_first(&s, S(RFC_FIRST), false, false), SCRAM_OK);
	assert_int_equal(scram_server_first(&s, &bad, out, sizeof(out)), SCRAM_ERR_SYNTAX);
	bad = creds;
	bad.iter = 0;
	assert_int_equal(scram_client_first(&s, S(RFC_FIRST), false, false), SCRAM_OK);
	assert_int_equal(scram_server_first(&s, &bad, out, sizeof(out)), SCRAM_ERR_SYNTAX);
	assert_int_equal(scram_client_first(&s, S(RFC_FIRST), false, false), SCRAM_OK);
	assert_int_equal(scram_server_first_with_nonce(&s, &creds, S("a,b"), out, sizeof(out)),
	                 SCRAM_ERR_SYNTAX);
	assert_int_equal(scram_client_first(&s, S(RFC_FIRST), false, false), SCRAM_OK);
	assert_int_equal(scram_server_first_with_nonce(&s, &creds, S(""), out, sizeof(out)),
	                 SCRAM_ERR_SYNTAX);
	assert_int_equal(scram_client_first(&s, S(RFC_FIRST), false, false), SCRAM_OK);
	assert_int_equal(scram_server_first(&s, NULL, out, sizeof(out)), SCRAM_ERR_SYNTAX);
	assert_int_equal(scram_server_first(NULL, &creds, out, sizeof(out)), SCRAM_ERR_SYNTAX);

	/* server-final needs 47 octets */
	rfc_first(&s, false);
	assert_int_equal(scram_client_final(&s, &creds, S(RFC_FINAL), NULL, 0, out, 46),
	                 SCRAM_ERR_SYNTAX);
	rfc_first(&s, false);
	assert_int_equal(scram_client_final(&s, &creds, S(RFC_FINAL), NULL, 0, out, 47), SCRAM_OK);
	assert_string_equal(out, RFC_SFINAL);
	rfc_first(&s, false);
	assert_int_equal(scram_client_final(&s, NULL, S(RFC_FINAL), NULL, 0, out, sizeof(out)),
	                 SCRAM_ERR_SYNTAX);
	assert_int_equal(scram_client_final(NULL, &creds, S(RFC_FINAL), NULL, 0, out, sizeof(out)),
	                 SCRAM_ERR_SYNTAX);
}

static void test_random_nonce(void **state)
{
	struct scram_server a, b;
	char fa[512], fb[512];
	const char *sa, *sb;

	(void)state;
	assert_int_equal(scram_client_first(&a, S(RFC_FIRST), false, false), SCRAM_OK);
	assert_int_equal(scram_server_first(&a, &creds, fa, sizeof(fa)), SCRAM_OK);
	assert_int_equal(scram_client_first(&b, S(RFC_FIRST), false, false), SCRAM_OK);
	assert_int_equal(scram_server_first(&b, &creds, fb, sizeof(fb)), SCRAM_OK);
	assert_memory_equal(fa, "r=rOprNGfwEbeRWgbNEkqO", 22);
	sa = fa + 22;
	sb = fb + 22;
	/* 24 random bytes in base64: 32 printable characters, then ",s=" */
	assert_memory_equal(sa + 32, ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", 34);
	assert_int_equal(strlen(fa), 22 + 32 + 34);
	assert_memory_not_equal(sa, sb, 32);
	for (int i = 0; i < 32; i++)
		assert_true(sa[i] > 0x20 && sa[i] < 0x7f && sa[i] != ',');
	assert_memory_equal(a.nonce + 20, sa, 32);
	assert_int_equal(strlen(a.nonce), 52);
}

static void test_creds_make_args(void **state)
{
	struct scram_creds c;
	unsigned char salt[SCRAM_SALT_MAX + 1] = {1, 2, 3};

	(void)state;
	assert_int_equal(scram_creds_make("pw", salt, 16, 1, &c), 0);
	assert_int_equal(c.iter, 1);
	assert_int_equal(scram_creds_make("pw", salt, SCRAM_SALT_MAX, 1, &c), 0);
	assert_int_equal(scram_creds_make("pw", salt, SCRAM_SALT_MAX + 1, 1, &c), -1);
	assert_int_equal(c.salt_len, 0);
	assert_int_equal(scram_creds_make("pw", salt, 0, 1, &c), -1);
	assert_int_equal(scram_creds_make("pw", salt, 16, 0, &c), -1);
	assert_int_equal(scram_creds_make("pw", salt, 16, (uint32_t)INT32_MAX + 1u, &c), -1);
	assert_int_equal(scram_creds_make("", salt, 16, 1, &c), -1);
	assert_int_equal(scram_creds_make(NULL, salt, 16, 1, &c), -1);
	assert_int_equal(scram_creds_make("pw", NULL, 16, 1, &c), -1);
	assert_int_equal(scram_creds_make("pw", salt, 16, 1, NULL), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_creds_vector),    cmocka_unit_test(test_rfc7677),
	    cmocka_unit_test(test_plus_vector),     cmocka_unit_test(test_wrong_password),
	    cmocka_unit_test(test_tampered_nonce),  cmocka_unit_test(test_cb_table),
	    cmocka_unit_test(test_first_table),     cmocka_unit_test(test_first_lengths),
	    cmocka_unit_test(test_final_syntax),    cmocka_unit_test(test_final_extension),
	    cmocka_unit_test(test_states),          cmocka_unit_test(test_random_nonce),
	    cmocka_unit_test(test_creds_make_args),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
