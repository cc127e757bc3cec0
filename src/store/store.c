/* The embedded store: <data_dir>/sealmail.db (SQLite, WAL) holding local domains, mailboxes
 * and aliases (accounts, plans, logins and rate buckets: accounts.c, same connection); schema
 * versions in PRAGMA user_version; RCPT resolution (postmaster, aliases).
 * Runs in the lookup process (store_resolve per RCPT) and in the CLI (admin changes).
 * Untrusted input: addresses from RCPT; they are parsed and normalized first and reach SQL
 * only as bound parameters, through statements prepared once at open. */
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store/sqlite_util.h"

#include "smtp/parse.h"
#include "store/store_int.h"
#include "util/log.h"

/* Alias hops store_resolve follows before it calls the chain a loop (candidate for limits.h
 * as LIM_ALIAS_HOPS if anything else needs it). */
#define STORE_ALIAS_HOPS 8

/* The newest schema this code knows; migrations[v] takes the database from v to v + 1. */
static const char *const migrations[] = {
    /* 0 -> 1: local domains and their mailboxes/aliases. */
    "CREATE TABLE domains (name TEXT PRIMARY KEY NOT NULL);"
    "CREATE TABLE mailboxes ("
    " address TEXT PRIMARY KEY NOT NULL,"
    " domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,"
    " target TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX mailboxes_domain ON mailboxes(domain);",
    /* 1 -> 2: the relay service: plans with hourly limits, customer accounts, their sending
     * domains and SMTP logins (argon2id hash and SCRAM keys, never the password), and the
     * per-minute recipient counts of the rolling hour (src/policy/rate.h). */
    "CREATE TABLE plans ("
    " name TEXT PRIMARY KEY NOT NULL,"
    " hourly_limit INTEGER NOT NULL CHECK (hourly_limit > 0));"
    "INSERT INTO plans (name, hourly_limit) VALUES"
    " ('trial', 1000), ('standard', 1500), ('premium', 3000), ('professional', 5000);"
    "CREATE TABLE accounts ("
    " name TEXT PRIMARY KEY NOT NULL,"
    " plan TEXT NOT NULL REFERENCES plans(name),"
    " disabled INTEGER NOT NULL DEFAULT 0,"
    " created INTEGER NOT NULL);"
    "CREATE INDEX accounts_plan ON accounts(plan);"
    "CREATE TABLE account_domains ("
    " domain TEXT PRIMARY KEY NOT NULL,"
    " account TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE);"
    "CREATE INDEX account_domains_account ON account_domains(account);"
    "CREATE TABLE logins ("
    " name TEXT PRIMARY KEY NOT NULL,"
    " account TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,"
    " pwhash TEXT NOT NULL," /* argon2id, crypto_pwhash_str */
    " scram_salt BLOB NOT NULL,"
    " scram_iter INTEGER NOT NULL,"
    " scram_stored BLOB NOT NULL,"
    " scram_server BLOB NOT NULL,"
    " created INTEGER NOT NULL);"
    "CREATE INDEX logins_account ON logins(account);"
    "CREATE TABLE rate_buckets ("
    " account TEXT NOT NULL,"
    " minute INTEGER NOT NULL,"
    " count INTEGER NOT NULL,"
    " PRIMARY KEY (account, minute));"
    "CREATE INDEX rate_buckets_minute ON rate_buckets(minute);",
};
#define STORE_SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

enum store_stmt {
	ST_DOMAIN_ADD,
	ST_DOMAIN_DEL,
	ST_DOMAIN_GET,
	ST_DOMAIN_LIST,
	ST_MBOX_ADD,
	ST_MBOX_DEL,
	ST_MBOX_GET,
	ST_MBOX_LIST,
	ST_MBOX_LIST_DOM,
	ST__COUNT
};

static const char *const stmt_sql[ST__COUNT] = {
    [ST_DOMAIN_ADD] = "INSERT INTO domains (name) VALUES (?1)",
    [ST_DOMAIN_DEL] = "DELETE FROM domains WHERE name = ?1",
    [ST_DOMAIN_GET] = "SELECT 1 FROM domains WHERE name = ?1",
    [ST_DOMAIN_LIST] = "SELECT name FROM domains ORDER BY name",
    [ST_MBOX_ADD] = "INSERT INTO mailboxes (address, domain, target) VALUES (?1, ?2, ?3)",
    [ST_MBOX_DEL] = "DELETE FROM mailboxes WHERE address = ?1",
    [ST_MBOX_GET] = "SELECT target FROM mailboxes WHERE address = ?1",
    [ST_MBOX_LIST] = "SELECT address, target FROM mailboxes ORDER BY domain, address",
    [ST_MBOX_LIST_DOM] = "SELECT address, target FROM mailboxes WHERE domain = ?1 ORDER BY address",
};

struct store {
	sqlite3 *db;
	sqlite3_stmt *stmt[ST__COUNT];
	bool listing[ST__COUNT]; /* a list statement is being stepped (re-entry guard) */
	struct store_acct *acct; /* accounts.c's statements */
};

sqlite3 *store_sqlite(struct store *st)
{
	return st->db;
}

struct store_acct *store_acct_of(struct store *st)
{
	return st->acct;
}

/* An address split the way the store keeps it. */
struct store_addr {
	char addr[STORE_ADDR_MAX];   /* "local@domain" (or "postmaster" when bare) */
	char local[LIM_PATH];        /* canonical local part */
	char domain[LIM_DOMAIN + 1]; /* "" for bare postmaster */
};

static void store_db_error(struct store *st, const char *op)
{
	log_err("event=store_error op=%s err=\"%s\"", op, sqlite3_errmsg(st->db));
}

/* Every use of a prepared statement ends here, so the next use starts clean. */
static void stmt_done(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

static int bind_text(sqlite3_stmt *s, int idx, const char *v)
{
	return sqlite3_bind_text(s, idx, v, -1, SQLITE_STATIC);
}

/* ---- address normalization (pure) ---- */

/* RFC 5321 4.1.2 atext, plus UTF-8 bytes (RFC 6531 3.3). */
static bool is_atext(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80)
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool is_dot_string(const char *s, size_t n)
{
	if (n == 0 || s[0] == '.' || s[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (s[i + 1] == '.')
				return false;
		} else if (!is_atext((unsigned char)s[i])) {
			return false;
		}
	}
	return true;
}

/* RFC 5321 4.1.2: "abc"@x and abc@x name the same mailbox, so a quoted local part is kept
 * unquoted when it is a valid Dot-string, and otherwise re-quoted escaping only '"' and '\'. */
static bool local_canon(const char *in, char *out, size_t outsz)
{
	size_t n = strlen(in);
	if (n == 0 || in[0] != '"') {
		if (n >= outsz)
			return false;
		memcpy(out, in, n + 1);
		return true;
	}
	if (n < 2 || in[n - 1] != '"')
		return false;
	char raw[LIM_PATH];
	size_t rn = 0;
	for (size_t i = 1; i + 1 < n; i++) {
		if (in[i] == '\\' && i + 2 < n)
			i++;
		if (rn + 1 >= sizeof(raw))
			return false;
		raw[rn++] = in[i];
	}
	raw[rn] = '\0';
	if (is_dot_string(raw, rn)) {
		if (rn >= outsz)
			return false;
		memcpy(out, raw, rn + 1);
		return true;
	}
	size_t o = 0;
	if (o + 1 >= outsz)
		return false;
	out[o++] = '"';
	for (size_t i = 0; i < rn; i++) {
		if (raw[i] == '"' || raw[i] == '\\') {
			if (o + 1 >= outsz)
				return false;
			out[o++] = '\\';
		}
		if (o + 1 >= outsz)
			return false;
		out[o++] = raw[i];
	}
	if (o + 2 > outsz)
		return false;
	out[o++] = '"';
	out[o] = '\0';
	return true;
}

/* Parses and normalizes; allow_bare admits "postmaster" without a domain (RFC 5321 4.1.1.3). */
static bool addr_split(const char *in, bool allow_bare, struct store_addr *out)
{
	struct smtp_addr a;
	size_t len, used = 0;

	memset(out, 0, sizeof(*out));
	if (in == NULL)
		return false;
	len = strlen(in);
	/* RFC 5321 4.1.1.3: RCPT TO:<Postmaster> has no domain; smtp_addr_format gives it to us
	 * as the bare word, which smtp_parse_path (a Mailbox parser) does not take. */
	if (allow_bare && strcasecmp(in, "postmaster") == 0) {
		snprintf(out->local, sizeof(out->local), "postmaster");
		snprintf(out->addr, sizeof(out->addr), "postmaster");
		return true;
	}
	/* RFC 5321 4.5.3.1.3: 256 octets for the path including "<" and ">". */
	if (len == 0 || len > LIM_PATH - 2)
		return false;
	if (smtp_parse_path(in, len, false, true, &a, &used) != SMTP_P_OK || used != len ||
	    a.is_null)
		return false;
	smtp_ascii_lower(a.local);
	smtp_ascii_lower(a.domain);
	if (!local_canon(a.local, out->local, sizeof(out->local)))
		return false;
	if (a.domain[0] == '\0')
		return false;
	/* Local domains are names in the domains table, never address literals. */
	if (a.domain[0] == '[')
		return false;
	snprintf(out->domain, sizeof(out->domain), "%s", a.domain);
	int n = snprintf(out->addr, sizeof(out->addr), "%s@%s", out->local, out->domain);
	return n > 0 && (size_t)n <= LIM_PATH - 2;
}

enum store_res store_addr_normalize(const char *addr, char *out, size_t outsz)
{
	struct store_addr a;

	if (out == NULL || outsz == 0)
		return STORE_INVALID;
	out[0] = '\0';
	if (!addr_split(addr, false, &a))
		return STORE_INVALID;
	size_t n = strlen(a.addr);
	if (n >= outsz)
		return STORE_INVALID;
	memcpy(out, a.addr, n + 1);
	return STORE_OK;
}

/* Lower-cased, validated copy of a domain name (ASCII: IDNs go in as A-labels). */
static bool domain_norm(const char *name, char *out, size_t outsz)
{
	if (name == NULL)
		return false;
	size_t n = strlen(name);
	if (n == 0 || n > LIM_DOMAIN || n >= outsz || !smtp_domain_valid(name, n, false))
		return false;
	memcpy(out, name, n + 1);
	smtp_ascii_lower(out);
	return true;
}

/* ---- open, schema ---- */


/* Brings the schema to STORE_SCHEMA_VERSION inside one write transaction, so two processes
 * opening a new database at once migrate it once. A database at version 0 is new: only then
 * is "localhost" seeded. */
static int store_migrate(sqlite3 *db, bool seed_localhost, char *err, size_t errsz)
{
	char v[32];
	int rc = sqlu_exec(db, "BEGIN IMMEDIATE", err, errsz);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlu_text(db, "PRAGMA user_version", v, sizeof(v), err, errsz);
	if (rc != SQLITE_OK)
		goto fail;
	char *end;
	long ver = strtol(v, &end, 10);
	if (*v == '\0' || *end != '\0' || ver < 0) {
		snprintf(err, errsz, "unreadable schema version \"%.20s\"", v);
		rc = SQLITE_CORRUPT;
		goto fail;
	}
	if (ver > STORE_SCHEMA_VERSION) {
		snprintf(err, errsz, "database schema version %ld is newer than this sealmail (%d)",
		         ver, STORE_SCHEMA_VERSION);
		rc = SQLITE_MISMATCH;
		goto fail;
	}
	bool created = ver == 0;
	for (long i = ver; i < STORE_SCHEMA_VERSION; i++) {
		rc = sqlu_exec(db, migrations[i], err, errsz);
		if (rc != SQLITE_OK)
			goto fail;
		/* creating a database is routine; upgrading one is worth a line in the log */
		log_msg(ver > 0 ? LOG_LV_INFO : LOG_LV_DEBUG, "event=store_migrate from=%ld to=%ld",
		        i, i + 1);
	}
	if (ver != STORE_SCHEMA_VERSION) {
		char sql[64]; /* PRAGMA takes no parameters; the value is our own constant */
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
		rc = sqlu_exec(db, sql, err, errsz);
		if (rc != SQLITE_OK)
			goto fail;
	}
	if (created && seed_localhost) {
		rc = sqlu_exec(db, "INSERT OR IGNORE INTO domains (name) VALUES ('localhost')", err,
		              errsz);
		if (rc != SQLITE_OK)
			goto fail;
	}
	rc = sqlu_exec(db, "COMMIT", err, errsz);
	if (rc != SQLITE_OK)
		goto fail;
	return SQLITE_OK;
fail:
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

struct store *store_open(const char *data_dir, bool seed_localhost, char *err, size_t errsz)
{
	char path[PATH_MAX];
	char dummy[8];
	char mode[16];
	struct store *st = NULL;
	int rc;

	if (err == NULL || errsz == 0) {
		err = dummy;
		errsz = sizeof(dummy);
	}
	err[0] = '\0';
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		snprintf(err, errsz, "out of memory");
		return NULL;
	}
	st->db = sqlu_open(data_dir, "sealmail.db", 5000, path, sizeof(path), err, errsz);
	if (!st->db) {
		free(st);
		return NULL;
	}
	/* Admin changes: FULL (fsync the WAL at each commit). The lookup process, which writes
	 * a counter per recipient, switches to NORMAL (store_sync_normal). */
	if (sqlu_exec(st->db, "PRAGMA synchronous = FULL", err, errsz) != SQLITE_OK ||
	    sqlu_exec(st->db, "PRAGMA foreign_keys = ON", err, errsz) != SQLITE_OK)
		goto fail_path;
	if (sqlu_text(st->db, "PRAGMA foreign_keys", mode, sizeof(mode), err, errsz) != SQLITE_OK)
		goto fail_path;
	if (strcmp(mode, "1") != 0) {
		snprintf(err, errsz, "this SQLite does not enforce foreign keys");
		goto fail_path;
	}
	if (store_migrate(st->db, seed_localhost, err, errsz) != SQLITE_OK)
		goto fail_path;
	for (int i = 0; i < ST__COUNT; i++) {
		rc = sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
		                        &st->stmt[i], NULL);
		if (rc != SQLITE_OK) {
			snprintf(err, errsz, "%s", sqlite3_errmsg(st->db));
			goto fail_path;
		}
	}
	st->acct = store_acct_open(st->db, err, errsz);
	if (st->acct == NULL)
		goto fail_path;
	return st;

fail_path : {
	/* prefix the file name so the admin knows which database */
	char msg[256];
	snprintf(msg, sizeof(msg), "%s", err);
	snprintf(err, errsz, "%s: %s", path, msg);
}
	store_close(st);
	return NULL;
}

void store_sync_normal(struct store *st)
{
	char err[128];
	if (sqlu_exec(st->db, "PRAGMA synchronous = NORMAL", err, sizeof(err)) != SQLITE_OK)
		log_warn("event=store_error op=synchronous error=\"%s\"", err);
}

void store_close(struct store *st)
{
	if (st == NULL)
		return;
	store_acct_close(st->acct);
	for (int i = 0; i < ST__COUNT; i++)
		sqlite3_finalize(st->stmt[i]);
	sqlite3_close(st->db);
	free(st);
}

/* ---- domains ---- */

/* 1 local, 0 not, -1 database error. */
static int domain_lookup(struct store *st, const char *norm)
{
	sqlite3_stmt *s = st->stmt[ST_DOMAIN_GET];
	int ret = -1;
	if (bind_text(s, 1, norm) == SQLITE_OK) {
		int rc = sqlite3_step(s);
		if (rc == SQLITE_ROW)
			ret = 1;
		else if (rc == SQLITE_DONE)
			ret = 0;
	}
	if (ret < 0)
		store_db_error(st, "domain_get");
	stmt_done(s);
	return ret;
}

enum store_res store_domain_add(struct store *st, const char *name)
{
	char d[LIM_DOMAIN + 1];
	if (st == NULL)
		return STORE_ERR;
	if (!domain_norm(name, d, sizeof(d)))
		return STORE_INVALID;
	sqlite3_stmt *s = st->stmt[ST_DOMAIN_ADD];
	enum store_res res = STORE_OK;
	int rc = bind_text(s, 1, d);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
		res = STORE_EXISTS;
	} else if (rc != SQLITE_DONE) {
		store_db_error(st, "domain_add");
		res = STORE_ERR;
	}
	stmt_done(s);
	if (res == STORE_OK)
		log_debug("event=domain_add domain=%s", d);
	return res;
}

enum store_res store_domain_remove(struct store *st, const char *name)
{
	char d[LIM_DOMAIN + 1];
	if (st == NULL)
		return STORE_ERR;
	if (!domain_norm(name, d, sizeof(d)))
		return STORE_INVALID;
	sqlite3_stmt *s = st->stmt[ST_DOMAIN_DEL];
	enum store_res res = STORE_OK;
	int rc = bind_text(s, 1, d);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc != SQLITE_DONE) {
		store_db_error(st, "domain_remove");
		res = STORE_ERR;
	} else if (sqlite3_changes(st->db) == 0) {
		res = STORE_NOTFOUND;
	}
	stmt_done(s);
	if (res == STORE_OK)
		log_debug("event=domain_remove domain=%s", d);
	return res;
}

bool store_domain_is_local(struct store *st, const char *name)
{
	char d[LIM_DOMAIN + 1];
	if (st == NULL || !domain_norm(name, d, sizeof(d)))
		return false;
	return domain_lookup(st, d) == 1;
}

enum store_res store_domain_list(struct store *st, void (*fn)(void *arg, const char *name),
                                 void *arg)
{
	if (st == NULL || fn == NULL || st->listing[ST_DOMAIN_LIST])
		return STORE_ERR;
	sqlite3_stmt *s = st->stmt[ST_DOMAIN_LIST];
	enum store_res res = STORE_OK;
	int rc;
	st->listing[ST_DOMAIN_LIST] = true;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const unsigned char *name = sqlite3_column_text(s, 0);
		if (name != NULL)
			fn(arg, (const char *)name);
	}
	if (rc != SQLITE_DONE) {
		store_db_error(st, "domain_list");
		res = STORE_ERR;
	}
	stmt_done(s);
	st->listing[ST_DOMAIN_LIST] = false;
	return res;
}

/* ---- mailboxes ---- */

/* Row for a normalized address: 1 found (target copied), 0 none, -1 error/too small. */
static int mailbox_lookup(struct store *st, const char *norm, char *target, size_t targetsz)
{
	sqlite3_stmt *s = st->stmt[ST_MBOX_GET];
	int ret = -1;
	if (bind_text(s, 1, norm) == SQLITE_OK) {
		int rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			const unsigned char *t = sqlite3_column_text(s, 0);
			size_t n = t ? strlen((const char *)t) : 0;
			if (n < targetsz) {
				memcpy(target, t ? (const char *)t : "", n + 1);
				ret = 1;
			}
		} else if (rc == SQLITE_DONE) {
			ret = 0;
		} else {
			store_db_error(st, "mailbox_get");
		}
	} else {
		store_db_error(st, "mailbox_get");
	}
	stmt_done(s);
	return ret;
}

enum store_res store_mailbox_add(struct store *st, const char *addr, const char *alias_target)
{
	struct store_addr a, t;
	const char *target = "";
	int local;

	if (st == NULL)
		return STORE_ERR;
	if (!addr_split(addr, false, &a))
		return STORE_INVALID;
	if (alias_target != NULL && alias_target[0] != '\0') {
		if (!addr_split(alias_target, false, &t) || strcmp(t.addr, a.addr) == 0)
			return STORE_INVALID;
		target = t.addr;
	}
	local = domain_lookup(st, a.domain);
	if (local < 0)
		return STORE_ERR;
	if (local == 0)
		return STORE_NOTFOUND;
	/* Delivery is local only, so an alias must point into a local domain. */
	if (target[0] != '\0') {
		local = domain_lookup(st, t.domain);
		if (local < 0)
			return STORE_ERR;
		if (local == 0)
			return STORE_NOTFOUND;
	}

	sqlite3_stmt *s = st->stmt[ST_MBOX_ADD];
	enum store_res res = STORE_OK;
	int rc = bind_text(s, 1, a.addr);
	if (rc == SQLITE_OK)
		rc = bind_text(s, 2, a.domain);
	if (rc == SQLITE_OK)
		rc = bind_text(s, 3, target);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
		res = STORE_EXISTS;
	} else if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
		res = STORE_NOTFOUND; /* the domain went away since we looked */
	} else if (rc != SQLITE_DONE) {
		store_db_error(st, "mailbox_add");
		res = STORE_ERR;
	}
	stmt_done(s);
	if (res == STORE_OK) {
		char safe[STORE_ADDR_MAX], safe_t[STORE_ADDR_MAX];
		log_debug("event=mailbox_add address=\"%s\" target=\"%s\"",
		          log_safe(safe, sizeof(safe), a.addr, strlen(a.addr)),
		          log_safe(safe_t, sizeof(safe_t), target, strlen(target)));
	}
	return res;
}

enum store_res store_mailbox_remove(struct store *st, const char *addr)
{
	struct store_addr a;
	if (st == NULL)
		return STORE_ERR;
	if (!addr_split(addr, false, &a))
		return STORE_INVALID;
	sqlite3_stmt *s = st->stmt[ST_MBOX_DEL];
	enum store_res res = STORE_OK;
	int rc = bind_text(s, 1, a.addr);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc != SQLITE_DONE) {
		store_db_error(st, "mailbox_remove");
		res = STORE_ERR;
	} else if (sqlite3_changes(st->db) == 0) {
		res = STORE_NOTFOUND;
	}
	stmt_done(s);
	if (res == STORE_OK) {
		char safe[STORE_ADDR_MAX];
		log_debug("event=mailbox_remove address=\"%s\"",
		          log_safe(safe, sizeof(safe), a.addr, strlen(a.addr)));
	}
	return res;
}

enum store_res store_mailbox_get(struct store *st, const char *addr, char *target, size_t targetsz)
{
	struct store_addr a;
	if (st == NULL || target == NULL || targetsz == 0)
		return STORE_ERR;
	target[0] = '\0';
	if (!addr_split(addr, false, &a))
		return STORE_INVALID;
	switch (mailbox_lookup(st, a.addr, target, targetsz)) {
	case 1:
		return STORE_OK;
	case 0:
		return STORE_NOTFOUND;
	default:
		return STORE_ERR;
	}
}

enum store_res store_mailbox_list(struct store *st, const char *domain,
                                  void (*fn)(void *arg, const char *addr, const char *target),
                                  void *arg)
{
	char d[LIM_DOMAIN + 1];
	enum store_stmt which = domain ? ST_MBOX_LIST_DOM : ST_MBOX_LIST;

	if (st == NULL || fn == NULL)
		return STORE_ERR;
	if (domain != NULL) {
		if (!domain_norm(domain, d, sizeof(d)))
			return STORE_INVALID;
		int local = domain_lookup(st, d);
		if (local < 0)
			return STORE_ERR;
		if (local == 0)
			return STORE_NOTFOUND;
	}
	if (st->listing[which])
		return STORE_ERR;
	sqlite3_stmt *s = st->stmt[which];
	enum store_res res = STORE_OK;
	int rc = SQLITE_OK;
	if (domain != NULL)
		rc = bind_text(s, 1, d);
	if (rc == SQLITE_OK) {
		st->listing[which] = true;
		while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
			const unsigned char *a = sqlite3_column_text(s, 0);
			const unsigned char *t = sqlite3_column_text(s, 1);
			if (a != NULL)
				fn(arg, (const char *)a, t ? (const char *)t : "");
		}
		st->listing[which] = false;
	}
	if (rc != SQLITE_DONE) {
		store_db_error(st, "mailbox_list");
		res = STORE_ERR;
	}
	stmt_done(s);
	return res;
}

/* ---- RCPT resolution ---- */

static enum store_res resolve_out(const char *addr, char *mailbox, size_t mailbox_sz)
{
	size_t n = strlen(addr);
	if (n >= mailbox_sz)
		return STORE_ERR;
	memcpy(mailbox, addr, n + 1);
	return STORE_OK;
}

enum store_res store_resolve(struct store *st, const char *addr, const char *postmaster_mailbox,
                             char *mailbox, size_t mailbox_sz)
{
	struct store_addr start, cur, pm;
	char target[STORE_ADDR_MAX];
	char safe[STORE_ADDR_MAX], safe_t[STORE_ADDR_MAX];
	bool pm_used = false;
	int hops = 0;

	if (st == NULL || mailbox == NULL || mailbox_sz == 0)
		return STORE_ERR;
	mailbox[0] = '\0';
	if (!addr_split(addr, true, &start))
		return STORE_INVALID;
	if (start.domain[0] != '\0') {
		int local = domain_lookup(st, start.domain);
		if (local < 0)
			return STORE_ERR;
		if (local == 0)
			return STORE_INVALID;
	}
	/* RFC 5321 4.5.1: postmaster must be accepted for every local domain, so a resolution
	 * that starts there never ends in "unknown user". */
	bool start_pm = strcmp(start.local, "postmaster") == 0;
	cur = start;

	for (;;) {
		int found = 0;
		if (cur.domain[0] != '\0') { /* bare "postmaster" has no row by construction */
			found = mailbox_lookup(st, cur.addr, target, sizeof(target));
			if (found < 0)
				return STORE_ERR;
		}
		if (found && target[0] == '\0')
			return resolve_out(cur.addr, mailbox, mailbox_sz);
		if (found && hops < STORE_ALIAS_HOPS) {
			struct store_addr next;
			int local = 0;
			if (addr_split(target, false, &next)) {
				local = domain_lookup(st, next.domain);
				if (local < 0)
					return STORE_ERR;
			}
			if (local == 1) {
				hops++;
				cur = next;
				continue;
			}
			log_warn("event=alias_broken alias=\"%s\" target=\"%s\"",
			         log_safe(safe, sizeof(safe), cur.addr, strlen(cur.addr)),
			         log_safe(safe_t, sizeof(safe_t), target, strlen(target)));
		} else if (found) {
			log_warn("event=alias_loop address=\"%s\" hops=%d",
			         log_safe(safe, sizeof(safe), start.addr, strlen(start.addr)),
			         hops);
		}

		/* A dead end: no row, a broken alias, or too many hops. */
		bool pm_addr = !found && strcmp(cur.local, "postmaster") == 0;
		if (pm_used)
			return resolve_out(pm.addr, mailbox, mailbox_sz);
		if (!pm_addr && !start_pm)
			return STORE_NOTFOUND;
		if (postmaster_mailbox == NULL || postmaster_mailbox[0] == '\0') {
			/* no configured mailbox: postmaster@<domain> is its own mailbox */
			if (pm_addr && cur.domain[0] != '\0')
				return resolve_out(cur.addr, mailbox, mailbox_sz);
			if (start.domain[0] != '\0')
				return resolve_out(start.addr, mailbox, mailbox_sz);
			return STORE_NOTFOUND;
		}
		if (!addr_split(postmaster_mailbox, false, &pm)) {
			log_err("event=postmaster_invalid postmaster=\"%s\"",
			        log_safe(safe, sizeof(safe), postmaster_mailbox,
			                 strlen(postmaster_mailbox)));
			return STORE_ERR;
		}
		/* Follow the configured mailbox's own aliases with a fresh budget; any dead end
		 * from here on delivers to it as it is. */
		pm_used = true;
		hops = 0;
		cur = pm;
	}
}
