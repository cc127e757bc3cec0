/* The embedded store (SQLite, WAL): local domains and mailboxes (addresses and aliases);
 * the relay service's plans, accounts, sending domains, logins and rate buckets.
 * Owned at run time by the lookup process; the CLI opens it directly for admin commands.
 * Untrusted input: addresses from RCPT and login names from AUTH (via lookup) — always
 * bound as SQL parameters. */
#ifndef SEALMAIL_STORE_STORE_H
#define SEALMAIL_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "auth/sasl.h"
#include "auth/scram.h"
#include "limits.h"

struct store;

/* Size of a buffer that holds any address as the store keeps it (RFC 5321 4.5.3.1.3: a path
 * is at most 256 octets with its angle brackets, so an address is at most 254). */
#define STORE_ADDR_MAX (LIM_PATH + 1)

/* Opens (creating and migrating the schema of) <data_dir>/sealmail.db. With seed_localhost
 * and a newly created database, adds the local domain "localhost". NULL on error, with a
 * reason in err (size errsz). */
struct store *store_open(const char *data_dir, bool seed_localhost, char *err, size_t errsz);
void store_close(struct store *st);
/* WAL with synchronous=NORMAL for this connection: a commit survives any process crash
 * (kill -9), only an OS crash can lose the last ones. For the lookup process, whose writes
 * are hourly counters: an fsync per counted recipient would cap it at the disk's sync rate. */
void store_sync_normal(struct store *st);

enum store_res {
	STORE_OK = 0,
	STORE_NOTFOUND,   /* no such domain/mailbox */
	STORE_EXISTS,     /* add of something already there */
	STORE_INVALID,    /* bad name/address syntax */
	STORE_ERR,        /* database error (logged) */
};

/* Domains: names are lower-cased and validated (smtp_domain_valid). */
enum store_res store_domain_add(struct store *st, const char *name);
enum store_res store_domain_remove(struct store *st, const char *name); /* also its mailboxes */
bool store_domain_is_local(struct store *st, const char *name);
/* Calls fn for each domain, sorted. fn must not call the same list function again (it gets
 * STORE_ERR); other store calls are fine. */
enum store_res store_domain_list(struct store *st, void (*fn)(void *arg, const char *name), void *arg);

/* Mailboxes: "user@domain" in a local domain. A mailbox has target "" (delivers to its own
 * Maildir); an alias has a target address (a local mailbox). alias_target NULL or "" adds a
 * mailbox. Addresses are normalized (store_addr_normalize). add: STORE_NOTFOUND when the
 * address's domain, or the alias target's domain, is not local (the target itself need not
 * exist yet); STORE_INVALID for a malformed address or target, or an alias to itself. */
enum store_res store_mailbox_add(struct store *st, const char *addr, const char *alias_target);
enum store_res store_mailbox_remove(struct store *st, const char *addr);
enum store_res store_mailbox_list(struct store *st, const char *domain /* NULL = all */,
				  void (*fn)(void *arg, const char *addr, const char *target), void *arg);

/* One row: STORE_OK with `target` filled ("" for a mailbox, the target address for an
 * alias), STORE_NOTFOUND, STORE_INVALID for a malformed address, STORE_ERR (also when
 * targetsz is too small). */
enum store_res store_mailbox_get(struct store *st, const char *addr, char *target, size_t targetsz);

/* The form the store keeps an address in: ASCII lower-cased, a quoted local part unquoted
 * when it needs no quotes ("Bob"@Example.COM -> bob@example.com) and otherwise re-quoted
 * with minimal escapes. "local@domain" only (no bare local part, no address literal).
 * Pure; STORE_OK or STORE_INVALID (also when out is too small; STORE_ADDR_MAX always fits). */
enum store_res store_addr_normalize(const char *addr, char *out, size_t outsz);

/* RCPT resolution: the local mailbox that receives mail for addr ("local@domain", or
 * "postmaster" alone). Case-insensitive. postmaster@<any local domain> and bare "postmaster"
 * resolve to `postmaster_mailbox` even when no row exists (RFC 5321 4.5.1). Aliases are
 * followed (at most 8 hops). Returns STORE_OK with mailbox filled, STORE_NOTFOUND for an
 * unknown user in a local domain, STORE_INVALID when the domain is not local.
 * Details: a row for postmaster@<domain> (mailbox or alias) wins over the fallback, but a
 * resolution that starts at a postmaster address, or reaches one with no row, never ends in
 * STORE_NOTFOUND: at a dead end it goes to postmaster_mailbox, which is itself followed
 * through aliases and returned as it is when it has no row or its chain breaks. NULL or ""
 * postmaster_mailbox: postmaster@<domain> resolves to itself, bare "postmaster" is
 * STORE_NOTFOUND. Otherwise an alias chain longer than 8, a loop, or a hop to a non-local or
 * unknown address is STORE_NOTFOUND (logged). mailbox_sz should be STORE_ADDR_MAX; too small
 * gives STORE_ERR. */
enum store_res store_resolve(struct store *st, const char *addr, const char *postmaster_mailbox,
			     char *mailbox, size_t mailbox_sz);

/* ---- the relay service: plans, accounts, their domains, logins, rate buckets ----
 * (src/store/accounts.c; docs/accounts.md.) Every function takes st == NULL or a NULL
 * string argument as STORE_ERR/STORE_INVALID, never crashes. STORE_NOTFOUND means the named
 * thing (or, where said, the thing it refers to) does not exist.
 *
 * Names: account and plan names are [a-z0-9._-]{1,63}, given in any case and kept
 * lower-cased. Login names are 1-255 printable ASCII characters without spaces (an
 * address such as "bob@example.com" is fine), matched case-insensitively and kept
 * lower-cased. Passwords are 1..SASL_PASS_MAX bytes, never stored: only an argon2id hash
 * and SCRAM-SHA-256 keys (RFC 5802 3). */

#define STORE_NAME_MAX 63   /* account and plan names */
#define STORE_PLAN_LIMIT_MAX 1000000000u /* recipients per hour a plan may allow */
#define STORE_PLAN_DEFAULT "trial"       /* the plan of a new account unless told otherwise */

/* The stored form of an account/plan name (out >= STORE_NAME_MAX + 1) and of a login name
 * (out >= SASL_USER_MAX + 1); false when the name is not valid. Pure. */
bool store_name_norm(const char *name, char *out, size_t outsz);
bool store_login_norm(const char *login, char *out, size_t outsz);
/* A password the store takes: 1..SASL_PASS_MAX bytes, no control characters. Pure. */
bool store_password_ok(const char *password);

/* Plans: a name and the recipients per hour its accounts may send. set adds the plan or
 * changes its limit (1..STORE_PLAN_LIMIT_MAX, else STORE_INVALID); the change applies to
 * every account on it. Seeded: trial 1000, standard 1500, premium 3000, professional 5000. */
enum store_res store_plan_set(struct store *st, const char *name, uint32_t hourly_limit);
enum store_res store_plan_get(struct store *st, const char *name, uint32_t *hourly_limit);
/* Sorted by limit, then name. Same re-entry rule as store_domain_list. */
enum store_res store_plan_list(struct store *st,
			       void (*fn)(void *arg, const char *name, uint32_t hourly_limit),
			       void *arg);

struct store_account {
	char name[64];
	char plan[64];
	uint32_t hourly_limit; /* the plan's */
	bool disabled;
	int64_t created; /* unix time */
};

/* plan NULL or "" = STORE_PLAN_DEFAULT. STORE_EXISTS, STORE_NOTFOUND (no such plan). */
enum store_res store_account_add(struct store *st, const char *name, const char *plan);
enum store_res store_account_get(struct store *st, const char *name, struct store_account *out);
/* Sorted by name; fn gets a pointer valid during the call only. */
enum store_res store_account_list(struct store *st,
				  void (*fn)(void *arg, const struct store_account *a), void *arg);
/* STORE_NOTFOUND when the account or the plan does not exist (store_plan_get tells which). */
enum store_res store_account_set_plan(struct store *st, const char *name, const char *plan);
/* A disabled account's logins fail to authenticate; its data stays. */
enum store_res store_account_set_disabled(struct store *st, const char *name, bool disabled);

/* Sending domains: the envelope-sender and From: domains an account's logins may use. A
 * domain (validated with smtp_domain_valid, lower-cased) belongs to at most one account:
 * add gives STORE_EXISTS when any account (this one included) has it, STORE_NOTFOUND when
 * the account does not exist. remove: STORE_NOTFOUND unless this account has the domain. */
enum store_res store_account_domain_add(struct store *st, const char *account, const char *domain);
enum store_res store_account_domain_remove(struct store *st, const char *account,
					   const char *domain);
/* The account's domains, sorted; STORE_NOTFOUND when the account does not exist. */
enum store_res store_account_domains(struct store *st, const char *account,
				     void (*fn)(void *arg, const char *domain), void *arg);
/* Which account a domain belongs to (the relay's sender check): STORE_OK with account
 * filled (size >= 64), STORE_NOTFOUND, STORE_INVALID for a malformed domain. */
enum store_res store_domain_account(struct store *st, const char *domain, char *account,
				    size_t accountsz);

/* Logins. add: hashes the password (argon2id, crypto_pwhash_str with OPSLIMIT/MEMLIMIT
 * INTERACTIVE: tens of milliseconds and 64 MiB, by design) and derives SCRAM-SHA-256 keys
 * (scram_creds_make, a fresh random 16-byte salt, SCRAM_ITER_DEFAULT). STORE_INVALID for a
 * bad name or password, STORE_NOTFOUND (no such account), STORE_EXISTS. passwd replaces
 * hash and SCRAM keys together (new salt). The caller should wipe its password copy. */
enum store_res store_login_add(struct store *st, const char *login, const char *account,
			       const char *password);
enum store_res store_login_passwd(struct store *st, const char *login, const char *password);
enum store_res store_login_remove(struct store *st, const char *login);
/* Sorted by name; account NULL = all (else STORE_NOTFOUND when it does not exist). */
enum store_res store_login_list(struct store *st, const char *account,
				void (*fn)(void *arg, const char *login, const char *account,
					   int64_t created),
				void *arg);

struct store_login {
	char name[SASL_USER_MAX + 1];
	char account[64];
	char pwhash[crypto_pwhash_STRBYTES];
	struct scram_creds scram;
	bool account_disabled;
	char plan[64];
	uint32_t hourly_limit;
};

/* Everything AUTH needs about a login, in one read. STORE_NOTFOUND when absent,
 * STORE_INVALID for a malformed name, STORE_ERR (logged) for a damaged row. */
enum store_res store_login_get(struct store *st, const char *login, struct store_login *out);

/* crypto_pwhash_str_verify: true when password matches pwhash. Slow by design (argon2id):
 * the caller runs it off the event loop. Pure (no store); false for NULL arguments. */
bool store_password_verify(const char *pwhash, const char *password);

/* Rate buckets: recipients counted per account per minute (unix time / 60), what survives a
 * restart of the rolling hour (src/policy/rate.h). add: UPSERT count += delta; delta may be
 * negative, the count never goes below 0. The account name is checked for syntax only (the
 * counts of a removed account are harmless and pruned with the rest). load: fn for each
 * bucket with minute >= since_minute, oldest first. prune: drops buckets older than
 * before_minute; *removed (may be NULL) gets how many. */
enum store_res store_rate_add(struct store *st, const char *account, int64_t minute,
			      int64_t delta);
enum store_res store_rate_load(struct store *st, const char *account, int64_t since_minute,
			       void (*fn)(void *arg, int64_t minute, uint32_t count), void *arg);
enum store_res store_rate_prune(struct store *st, int64_t before_minute, uint64_t *removed);

/* `sealmail domain ...` and `sealmail mailbox ...`: exit codes from <sysexits.h>. */
int store_cli_domain(int argc, char **argv);
int store_cli_mailbox(int argc, char **argv);
/* `sealmail account ...`, `sealmail login ...`, `sealmail plan ...` (accounts_cli.c). */
int store_cli_account(int argc, char **argv);
int store_cli_login(int argc, char **argv);
int store_cli_plan(int argc, char **argv);

#endif
