/* The embedded store (SQLite, WAL): local domains and mailboxes (addresses and aliases).
 * Owned at run time by the lookup process; the CLI opens it directly for admin commands.
 * Untrusted input: addresses from RCPT (via lookup) — always bound as SQL parameters. */
#ifndef SEALMAIL_STORE_STORE_H
#define SEALMAIL_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>

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

/* `sealmail domain ...` and `sealmail mailbox ...`: exit codes from <sysexits.h>. */
int store_cli_domain(int argc, char **argv);
int store_cli_mailbox(int argc, char **argv);

#endif
