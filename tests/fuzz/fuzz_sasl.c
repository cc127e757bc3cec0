/* libFuzzer driver for src/auth/sasl.c and src/auth/scram.c: the bytes stand for one AUTH
 * line or one decoded SASL message. They go through strict base64 (decode, and encode then
 * decode), PLAIN, LOGIN, the cancel check, scram_client_first under every mechanism/binding
 * combination, and scram_client_final after the fixed RFC 7677 3 first messages (plain and
 * -PLUS). Untrusted input: all of it. Any crash, sanitizer report or broken invariant (a
 * decode that is not canonical, an unterminated output, a success that cannot be) is a bug. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/sasl.h"
#include "auth/scram.h"

/* RFC 7677 3, and the same exchange over -PLUS with CB as the tls-exporter bytes */
#define FIRST "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define FIRST_PLUS "p=tls-exporter,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"

static const unsigned char CB[SCRAM_CB_LEN] = {
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
    0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20};

static struct scram_creds creds;

static void fuzz_init(void)
{
	static const char salt64[] = "W22ZaJ0SNY7soEsUEjb6gQ==";
	static int done;
	unsigned char salt[16];
	size_t n;

	if (done)
		return;
	if (sasl_b64_decode(salt64, sizeof(salt64) - 1, salt, sizeof(salt), &n) != 0 ||
	    scram_creds_make("pencil", salt, n, 4096, &creds) != 0)
		abort();
	done = 1;
}

static void fuzz_terminated(const char *p, size_t sz)
{
	if (memchr(p, '\0', sz) == NULL)
		abort();
}

static void fuzz_b64(const uint8_t *data, size_t size)
{
	static unsigned char dec[SASL_MSG_MAX + 16], dec2[SASL_MSG_MAX + 16];
	static char enc[(SASL_MSG_MAX + 16) / 3 * 4 + 8];
	size_t n = 0, n2 = 0;
	int e;

	/* strict means canonical: whatever decodes re-encodes to exactly the input */
	if (sasl_b64_decode((const char *)data, size, dec, sizeof(dec), &n) == 0) {
		e = sasl_b64_encode(dec, n, enc, sizeof(enc));
		if (e < 0 || (size_t)e != size || memcmp(enc, data, size) != 0)
			abort();
		/* and a buffer one short is refused */
		if (n > 0 && sasl_b64_decode((const char *)data, size, dec2, n - 1, &n2) == 0)
			abort();
	} else if (n != 0) {
		abort();
	}
	/* any bytes survive encode then decode */
	if (size <= SASL_MSG_MAX) {
		e = sasl_b64_encode(data, size, enc, sizeof(enc));
		if (e < 0 || (size_t)e != (size + 2) / 3 * 4 || enc[e] != '\0')
			abort();
		if (sasl_b64_decode(enc, (size_t)e, dec2, sizeof(dec2), &n2) != 0 || n2 != size ||
		    memcmp(dec2, data, size) != 0)
			abort();
	}
}

static void fuzz_plain(const unsigned char *msg, size_t len)
{
	char user[SASL_USER_MAX + 1], pass[SASL_PASS_MAX + 1];

	if (sasl_plain_parse(msg, len, user, sizeof(user), pass, sizeof(pass)) == 0) {
		fuzz_terminated(user, sizeof(user));
		fuzz_terminated(pass, sizeof(pass));
		if (user[0] == '\0' || pass[0] == '\0' ||
		    !sasl_name_valid((const unsigned char *)user, strlen(user)))
			abort();
	} else if (user[0] != '\0' || pass[0] != '\0') {
		abort();
	}
}

static void fuzz_first(const char *msg, size_t len, bool plus, bool cbav)
{
	static struct scram_server s;
	char out[SASL_MSG_MAX];

	if (scram_client_first(&s, msg, len, plus, cbav) != SCRAM_OK) {
		if (s.state != SCRAM_ST_FAILED || s.user[0] != '\0')
			abort();
		return;
	}
	fuzz_terminated(s.user, sizeof(s.user));
	fuzz_terminated(s.gs2_header, sizeof(s.gs2_header));
	fuzz_terminated(s.client_first_bare, sizeof(s.client_first_bare));
	fuzz_terminated(s.nonce, sizeof(s.nonce));
	if (s.user[0] == '\0' || s.state != SCRAM_ST_FIRST_DONE)
		abort();
	for (const char *p = s.user; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			abort();
	/* a binding the policy allowed: -PLUS only as "p=tls-exporter", never "y" where we
	 * could have bound */
	if (plus && strncmp(s.gs2_header, "p=tls-exporter,", 15) != 0)
		abort();
	if (!plus && (s.gs2_header[0] == 'p' || (s.gs2_header[0] == 'y' && cbav)))
		abort();
	/* a good client-first always leaves room for the server's answer */
	if (scram_server_first(&s, &creds, out, sizeof(out)) != SCRAM_OK)
		abort();
	fuzz_terminated(out, sizeof(out));
}

static void fuzz_final(const char *msg, size_t len, bool plus, const unsigned char *cb)
{
	static struct scram_server s;
	char out[SASL_MSG_MAX];
	enum scram_result r;

	if (scram_client_first(&s, plus ? FIRST_PLUS : FIRST,
	                       plus ? sizeof(FIRST_PLUS) - 1 : sizeof(FIRST) - 1, plus,
	                       true) != SCRAM_OK)
		abort();
	if (scram_server_first_with_nonce(&s, &creds, SNONCE, sizeof(SNONCE) - 1, out,
	                                  sizeof(out)) != SCRAM_OK)
		abort();
	r = scram_client_final(&s, &creds, msg, len, cb, cb ? SCRAM_CB_LEN : 0, out, sizeof(out));
	if (r == SCRAM_OK) {
		/* only a client knowing "pencil" gets here: the seed corpus has one */
		if (s.state != SCRAM_ST_DONE || strlen(out) != 46 || memcmp(out, "v=", 2) != 0)
			abort();
	} else if (s.state != SCRAM_ST_FAILED || out[0] != '\0') {
		abort();
	}
	/* and never twice */
	if (scram_client_final(&s, &creds, msg, len, cb, cb ? SCRAM_CB_LEN : 0, out, sizeof(out)) ==
	    SCRAM_OK)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned char dec[SASL_MSG_MAX + 16];
	char text[SASL_PASS_MAX + 1];
	const char *msg = (const char *)data;
	size_t n = 0;

	if (size > 2 * SASL_MSG_MAX)
		return 0;
	fuzz_init();

	fuzz_b64(data, size);
	(void)sasl_is_cancel(msg, size);
	if (sasl_login_decode(msg, size, text, sizeof(text)) == 0) {
		fuzz_terminated(text, sizeof(text));
		if (strlen(text) == 0)
			abort();
	}
	/* the PLAIN message as sent on the wire (base64), and as raw bytes */
	fuzz_plain(data, size);
	if (sasl_b64_decode(msg, size, dec, sizeof(dec), &n) == 0)
		fuzz_plain(dec, n);

	for (int m = 0; m < 4; m++)
		fuzz_first(msg, size, m & 1, m & 2);
	fuzz_final(msg, size, false, NULL);
	fuzz_final(msg, size, true, CB);
	fuzz_final(msg, size, true, NULL);
	return 0;
}
