/* SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677) server side, with the
 * tls-exporter channel binding (RFC 9266). Pure: no I/O; randomness from libsodium.
 * Runs in smtp workers (the exchange) and in the CLI/lookup (making stored keys).
 * Untrusted input: the client-first and client-final messages. Fuzzed. */
#ifndef SEALMAIL_AUTH_SCRAM_H
#define SEALMAIL_AUTH_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/sasl.h"

#define SCRAM_KEY_LEN 32
#define SCRAM_SALT_MAX 64
#define SCRAM_NONCE_MAX 128
#define SCRAM_ITER_DEFAULT 10000
/* RFC 9266: tls-exporter with label "EXPORTER-Channel-Binding", no context, 32 bytes. */
#define SCRAM_CB_LEN 32
/* gs2-header (RFC 5802 7): "p=tls-exporter," plus "a=" and an authzid that must equal the
 * user name, so up to SASL_USER_MAX octets each escaped as "=2C"/"=3D", plus ",". */
#define SCRAM_GS2_MAX (32 + 3 * SASL_USER_MAX)
/* Server nonce part: 24 random bytes, base64 (32 characters). */
#define SCRAM_SNONCE_RAW 24

/* What the store keeps for SCRAM (RFC 5802 3): never the password. */
struct scram_creds {
	unsigned char salt[SCRAM_SALT_MAX];
	size_t salt_len;
	uint32_t iter;
	unsigned char stored_key[SCRAM_KEY_LEN];
	unsigned char server_key[SCRAM_KEY_LEN];
};

/* Derives the stored keys from a password (SaltedPassword = PBKDF2-HMAC-SHA-256).
 * Returns 0, or -1 (out zeroed) for an empty password, salt_len outside 1..SCRAM_SALT_MAX,
 * iter 0 or above INT_MAX, or a crypto failure. */
int scram_creds_make(const char *password, const unsigned char *salt, size_t salt_len,
		     uint32_t iter, struct scram_creds *out);

enum scram_state { SCRAM_ST_START = 0, SCRAM_ST_FIRST_DONE, SCRAM_ST_DONE, SCRAM_ST_FAILED };

enum scram_result {
	SCRAM_OK = 0,
	SCRAM_ERR_SYNTAX,   /* malformed message: 501 5.5.2 */
	SCRAM_ERR_AUTH,     /* wrong proof (bad password): 535 5.7.8 */
	SCRAM_ERR_CB,       /* channel binding missing/mismatch/unsupported: 535 5.7.8 */
};

/* One exchange. */
struct scram_server {
	enum scram_state state;
	bool plus;                          /* mechanism was SCRAM-SHA-256-PLUS */
	bool cb_available;                  /* server could offer -PLUS (TLS 1.3 here) */
	char user[SASL_USER_MAX + 1];
	char gs2_header[SCRAM_GS2_MAX];
	char client_first_bare[SASL_MSG_MAX / 2];
	char server_first[SASL_MSG_MAX / 2];
	char nonce[2 * SCRAM_NONCE_MAX + 1]; /* client nonce + server nonce */
};

/* Step 1: parse client-first-message (decoded). `plus` is the mechanism the client chose;
 * `cb_available` whether this connection can do tls-exporter (and -PLUS was advertised).
 * Resets *s first, so s needs no setup.
 * On SCRAM_OK the user name (SASLprep'd as ASCII-only: non-ASCII names are refused) is in
 * s->user, for the caller to fetch its credentials. Enforces RFC 5802 gs2 rules: "y" when
 * the server advertised -PLUS but the client did not use it is a downgrade: SCRAM_ERR_CB.
 * An authzid other than the user, or a well-formed non-ASCII name: SCRAM_ERR_AUTH. The
 * reserved "m=" (mandatory extension) and any malformed attribute: SCRAM_ERR_SYNTAX. */
enum scram_result scram_client_first(struct scram_server *s, const char *msg, size_t len,
				     bool plus, bool cb_available);

/* Step 2: builds server-first-message into out (NUL-terminated) with a fresh server nonce
 * and the user's salt and iteration count. Returns SCRAM_OK or SCRAM_ERR_SYNTAX (no room). */
enum scram_result scram_server_first(struct scram_server *s, const struct scram_creds *c,
				     char *out, size_t outsz);

/* Tests only (tests/unit/test_scram.c, tests/fuzz/fuzz_sasl.c): scram_server_first with the
 * server nonce part given (printable ASCII without ',', 1..SCRAM_NONCE_MAX octets) instead
 * of drawn at random, to replay RFC 7677 3. Never call this from the server. */
enum scram_result scram_server_first_with_nonce(struct scram_server *s,
						const struct scram_creds *c, const char *snonce,
						size_t snonce_len, char *out, size_t outsz);

/* Step 3: checks client-final-message: channel binding (cb_data = tls-exporter bytes, or
 * NULL without -PLUS), nonce, proof. On SCRAM_OK writes server-final-message ("v=...") to
 * out. Takes constant time in the proof comparison. Errors: SCRAM_ERR_SYNTAX (malformed,
 * wrong state, outsz < 47), SCRAM_ERR_CB (c= is not gs2-header [+ cb_data]), SCRAM_ERR_AUTH
 * (nonce changed, wrong proof). Any error leaves s in SCRAM_ST_FAILED. */
enum scram_result scram_client_final(struct scram_server *s, const struct scram_creds *c,
				     const char *msg, size_t len, const unsigned char *cb_data,
				     size_t cb_len, char *out, size_t outsz);

#endif
