/* SASL helpers for the AUTH command (RFC 4954): base64, the PLAIN (RFC 4616) and LOGIN
 * messages. Pure: no I/O, no allocation. Runs in smtp workers. Untrusted input: every
 * byte of an AUTH exchange. Fuzzed by tests/fuzz/fuzz_sasl.c. */
#ifndef SEALMAIL_AUTH_SASL_H
#define SEALMAIL_AUTH_SASL_H

#include <stdbool.h>
#include <stddef.h>

/* Longest login name and password we take. */
#define SASL_USER_MAX 255
#define SASL_PASS_MAX 255
/* Longest decoded SASL message (RFC 4954 4: a line of 12288 octets is enough). */
#define SASL_MSG_MAX 8192

/* Strict base64 (RFC 4648 4, with padding, no whitespace, no line breaks). Returns 0 and
 * the decoded length in *outlen, or -1 for anything malformed or over outcap. */
int sasl_b64_decode(const char *in, size_t len, unsigned char *out, size_t outcap, size_t *outlen);
/* Encodes len bytes; returns the length written (NUL-terminated), -1 if it does not fit. */
int sasl_b64_encode(const unsigned char *in, size_t len, char *out, size_t outcap);

/* PLAIN: [authzid] NUL authcid NUL passwd. Fills user (authcid) and pass, NUL-terminated;
 * -1 when malformed, a part is too long or contains NUL, or authzid is non-empty and differs
 * from authcid (we do not support acting as another user). */
int sasl_plain_parse(const unsigned char *msg, size_t len, char *user, size_t usersz,
		     char *pass, size_t passsz);

/* LOGIN (draft-murchison-sasl-login): the server's two challenges, already base64
 * ("Username:" and "Password:"), and the decoder for each answer line. */
#define SASL_LOGIN_PROMPT_USER "VXNlcm5hbWU6"
#define SASL_LOGIN_PROMPT_PASS "UGFzc3dvcmQ6"
/* Decodes one strict-base64 line into a NUL-terminated string: -1 when the base64 is
 * malformed, the result is empty, contains NUL, or needs outsz bytes or more. For the
 * user name, check sasl_name_valid as well. out is wiped of partial results on failure. */
int sasl_login_decode(const char *line, size_t len, char *out, size_t outsz);

/* True when name is well-formed UTF-8 without C0 controls or DEL (what PLAIN requires of
 * its authcid). Does not check the length. */
bool sasl_name_valid(const unsigned char *name, size_t len);

/* True for "*" (RFC 4954 4: the client cancels the exchange). */
bool sasl_is_cancel(const char *line, size_t len);

#endif
