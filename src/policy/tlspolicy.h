/* Outbound TLS policy: the ordered levels none < may < encrypt < verify, a per-domain policy
 * file ("domain level" lines, like Postfix's smtp_tls_policy_maps) and the decision of which
 * level applies to one delivery. Pure logic plus a file reader; runs in the queue process and
 * in `sealmail config check`. Untrusted input: none (the file is the admin's; errors must
 * still name file:line and never crash). */
#ifndef SEALMAIL_POLICY_TLSPOLICY_H
#define SEALMAIL_POLICY_TLSPOLICY_H

#include <stdbool.h>
#include <stddef.h>

enum tls_level {
	TLS_LEVEL_NONE = 0, /* never STARTTLS */
	TLS_LEVEL_MAY,      /* STARTTLS when offered, no certificate check, plaintext otherwise */
	TLS_LEVEL_ENCRYPT,  /* TLS required, any certificate */
	TLS_LEVEL_VERIFY,   /* TLS required, certificate chains to a trusted CA and names the host */
};

/* "none", "may", "encrypt", "verify". */
const char *tls_level_name(enum tls_level l);
/* 0 and *out set when s (case-insensitive) names a level, else -1. */
int tls_level_parse(const char *s, enum tls_level *out);

/* Per-domain entries read from a policy file. */
struct tls_policy_map;

/* Reads path: one "domain level" pair per line; '#' starts a comment; blank lines ignored.
 * "example.com" matches that domain only; ".example.com" matches every subdomain of it
 * (not example.com itself). Domains are compared case-insensitively (stored lower case),
 * a trailing dot is ignored. Errors (unknown level, bad domain, duplicate, missing field,
 * line longer than 1024 bytes, more than 100000 entries) give NULL with
 * "path:line: message" in err. An empty or comment-only file is a valid empty map. */
struct tls_policy_map *tls_policy_load(const char *path, char *err, size_t errsz);
void tls_policy_free(struct tls_policy_map *m);
int tls_policy_count(const struct tls_policy_map *m);

/* Which policy decided (for the delivery record and log). */
enum tls_policy_source {
	TLS_SRC_DEFAULT = 0, /* delivery.tls_policy */
	TLS_SRC_DOMAIN,      /* an entry of delivery.tls_policy_file */
	TLS_SRC_MESSAGE,     /* the message asked for more (e.g. REQUIRETLS, later) */
	TLS_SRC_RELAYHOST,   /* delivery.relayhost_tls_policy */
};
/* "default", "domain", "message", "relayhost". */
const char *tls_policy_source_name(enum tls_policy_source s);

/* The level for mail to `domain`: the map's entry for it (exact match first, then the
 * longest matching ".suffix"), else `def`; then raised to `msg_min` when that is stricter
 * (a message can only ask for more). *src says which decided (the message only when it
 * raised the level). m may be NULL (no file). */
enum tls_level tls_policy_decide(const struct tls_policy_map *m, enum tls_level def,
				 const char *domain, enum tls_level msg_min,
				 enum tls_policy_source *src);

#endif
