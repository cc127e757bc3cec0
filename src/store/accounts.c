/* The relay service's records in the store: plans and their hourly limits, customer accounts,
 * their sending domains, SMTP logins (argon2id hash + SCRAM-SHA-256 keys, never a password)
 * and the per-minute rate buckets of the rolling hour. Runs in the lookup process (login
 * lookups, rate buckets) and the CLI (admin changes), on store.c's connection.
 * Untrusted input: login names from AUTH and domains from MAIL FROM reach us via lookup; they
 * are validated here and reach SQL only as bound parameters. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>
#include <sqlite3.h>

#include "auth/scram.h"
#include "smtp/parse.h"
#include "store/store.h"
#include "store/store_int.h"
#include "util/log.h"

/* RFC 5802 5.1 leaves the salt length open; 16 random bytes is what common servers use. */
#define LOGIN_SALT_LEN 16

enum acct_stmt {
	A_PLAN_SET,
	A_PLAN_GET,
	A_PLAN_LIST,
	A_ACCT_ADD,
	A_ACCT_GET,
	A_ACCT_EXISTS,
	A_ACCT_LIST,
	A_ACCT_SET_PLAN,
	A_ACCT_SET_DISABLED,
	A_ADOM_ADD,
	A_ADOM_DEL,
	A_ADOM_LIST,
	A_ADOM_OWNER,
	A_LOGIN_ADD,
	A_LOGIN_PASSWD,
	A_LOGIN_DEL,
	A_LOGIN_EXISTS,
	A_LOGIN_GET,
	A_LOGIN_LIST,
	A_LOGIN_LIST_ACCT,
	A_RATE_ADD,
	A_RATE_LOAD,
	A_RATE_PRUNE,
	A__COUNT
};

#define ACCT_COLS "a.name, a.plan, p.hourly_limit, a.disabled, a.created"

static const char *const acct_sql[A__COUNT] = {
    [A_PLAN_SET] = "INSERT INTO plans (name, hourly_limit) VALUES (?1, ?2)"
                   " ON CONFLICT (name) DO UPDATE SET hourly_limit = excluded.hourly_limit",
    [A_PLAN_GET] = "SELECT hourly_limit FROM plans WHERE name = ?1",
    [A_PLAN_LIST] = "SELECT name, hourly_limit FROM plans ORDER BY hourly_limit, name",
    [A_ACCT_ADD] = "INSERT INTO accounts (name, plan, disabled, created) VALUES (?1, ?2, 0, ?3)",
    [A_ACCT_GET] = "SELECT " ACCT_COLS " FROM accounts a JOIN plans p ON p.name = a.plan"
                   " WHERE a.name = ?1",
    [A_ACCT_EXISTS] = "SELECT 1 FROM accounts WHERE name = ?1",
    [A_ACCT_LIST] = "SELECT " ACCT_COLS " FROM accounts a JOIN plans p ON p.name = a.plan"
                    " ORDER BY a.name",
    [A_ACCT_SET_PLAN] = "UPDATE accounts SET plan = ?2 WHERE name = ?1",
    [A_ACCT_SET_DISABLED] = "UPDATE accounts SET disabled = ?2 WHERE name = ?1",
    [A_ADOM_ADD] = "INSERT INTO account_domains (domain, account) VALUES (?1, ?2)",
    [A_ADOM_DEL] = "DELETE FROM account_domains WHERE domain = ?1 AND account = ?2",
    [A_ADOM_LIST] = "SELECT domain FROM account_domains WHERE account = ?1 ORDER BY domain",
    [A_ADOM_OWNER] = "SELECT account FROM account_domains WHERE domain = ?1",
    [A_LOGIN_ADD] = "INSERT INTO logins (name, account, pwhash, scram_salt, scram_iter,"
                    " scram_stored, scram_server, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [A_LOGIN_PASSWD] = "UPDATE logins SET pwhash = ?2, scram_salt = ?3, scram_iter = ?4,"
                       " scram_stored = ?5, scram_server = ?6 WHERE name = ?1",
    [A_LOGIN_DEL] = "DELETE FROM logins WHERE name = ?1",
    [A_LOGIN_EXISTS] = "SELECT 1 FROM logins WHERE name = ?1",
    [A_LOGIN_GET] = "SELECT l.name, l.account, l.pwhash, l.scram_salt, l.scram_iter,"
                    " l.scram_stored, l.scram_server, a.disabled, a.plan, p.hourly_limit"
                    " FROM logins l JOIN accounts a ON a.name = l.account"
                    " JOIN plans p ON p.name = a.plan WHERE l.name = ?1",
    [A_LOGIN_LIST] = "SELECT name, account, created FROM logins ORDER BY name",
    [A_LOGIN_LIST_ACCT] = "SELECT name, account, created FROM logins WHERE account = ?1"
                          " ORDER BY name",
    /* the count stays within 0..2^32-1 whatever delta says (the column is read as uint32) */
    [A_RATE_ADD] = "INSERT INTO rate_buckets (account, minute, count)"
                   " VALUES (?1, ?2, min(max(?3, 0), 4294967295))"
                   " ON CONFLICT (account, minute) DO UPDATE"
                   " SET count = min(max(count + ?3, 0), 4294967295)",
    [A_RATE_LOAD] = "SELECT minute, count FROM rate_buckets WHERE account = ?1 AND minute >= ?2"
                    " ORDER BY minute",
    [A_RATE_PRUNE] = "DELETE FROM rate_buckets WHERE minute < ?1",
};

struct store_acct {
	sqlite3 *db;
	sqlite3_stmt *stmt[A__COUNT];
	bool listing[A__COUNT]; /* a list statement is being stepped (re-entry guard) */
};

struct store_acct *store_acct_open(sqlite3 *db, char *err, size_t errsz)
{
	/* randombytes_buf and crypto_pwhash need it; idempotent and thread-safe */
	if (sodium_init() < 0) {
		snprintf(err, errsz, "libsodium initialisation failed");
		return NULL;
	}
	struct store_acct *a = calloc(1, sizeof(*a));
	if (a == NULL) {
		snprintf(err, errsz, "out of memory");
		return NULL;
	}
	a->db = db;
	for (int i = 0; i < A__COUNT; i++) {
		if (sqlite3_prepare_v3(db, acct_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &a->stmt[i],
		                       NULL) != SQLITE_OK) {
			snprintf(err, errsz, "%s", sqlite3_errmsg(db));
			store_acct_close(a);
			return NULL;
		}
	}
	return a;
}

void store_acct_close(struct store_acct *a)
{
	if (a == NULL)
		return;
	for (int i = 0; i < A__COUNT; i++)
		sqlite3_finalize(a->stmt[i]);
	free(a);
}

/* ---- helpers ---- */

static void db_error(struct store_acct *a, const char *op)
{
	log_err("event=store_error op=%s err=\"%s\"", op, sqlite3_errmsg(a->db));
}

/* The statement, or NULL when the store is not open. */
static sqlite3_stmt *stmt(struct store *st, enum acct_stmt which, struct store_acct **ap)
{
	struct store_acct *a = st ? store_acct_of(st) : NULL;
	*ap = a;
	return a ? a->stmt[which] : NULL;
}

static void done(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

static int bind_text(sqlite3_stmt *s, int idx, const char *v)
{
	return sqlite3_bind_text(s, idx, v, -1, SQLITE_STATIC);
}

static void copy_col(sqlite3_stmt *s, int col, char *out, size_t outsz)
{
	const unsigned char *t = sqlite3_column_text(s, col);
	snprintf(out, outsz, "%s", t ? (const char *)t : "");
}

/* Account and plan names: [a-z0-9._-]{1,63}, upper case folded. */
bool store_name_norm(const char *in, char *out, size_t outsz)
{
	if (in == NULL || outsz < STORE_NAME_MAX + 1)
		return false;
	size_t n = strnlen(in, STORE_NAME_MAX + 1);
	if (n == 0 || n > STORE_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = in[i];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-'))
			return false;
		out[i] = c;
	}
	out[n] = '\0';
	return true;
}

/* Login names: 1..SASL_USER_MAX printable ASCII without spaces, upper case folded. */
bool store_login_norm(const char *in, char *out, size_t outsz)
{
	if (in == NULL || outsz < SASL_USER_MAX + 1)
		return false;
	size_t n = strnlen(in, SASL_USER_MAX + 1);
	if (n == 0 || n > SASL_USER_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c <= 0x20 || c >= 0x7f)
			return false;
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		out[i] = (char)c;
	}
	out[n] = '\0';
	return true;
}

static bool domain_norm(const char *in, char *out, size_t outsz)
{
	if (in == NULL)
		return false;
	size_t n = strnlen(in, LIM_DOMAIN + 1);
	if (n == 0 || n > LIM_DOMAIN || n >= outsz || !smtp_domain_valid(in, n, false))
		return false;
	memcpy(out, in, n + 1);
	smtp_ascii_lower(out);
	return true;
}

/* Passwords: 1..SASL_PASS_MAX bytes, no control characters (a stray CR or tab is a mistake,
 * and no SASL client sends one). UTF-8 is taken as it is. */
bool store_password_ok(const char *pw)
{
	if (pw == NULL)
		return false;
	size_t n = strnlen(pw, SASL_PASS_MAX + 1);
	if (n == 0 || n > SASL_PASS_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)pw[i];
		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

/* Runs a one-row lookup keyed by one text value: 1 found, 0 none, -1 error. */
static int exists(struct store_acct *a, enum acct_stmt which, const char *key, const char *op)
{
	sqlite3_stmt *s = a->stmt[which];
	int ret = -1;
	if (bind_text(s, 1, key) == SQLITE_OK) {
		int rc = sqlite3_step(s);
		if (rc == SQLITE_ROW)
			ret = 1;
		else if (rc == SQLITE_DONE)
			ret = 0;
	}
	if (ret < 0)
		db_error(a, op);
	done(s);
	return ret;
}

/* A write statement's result: done, or the constraint it hit. */
static enum store_res write_res(struct store_acct *a, int rc, const char *op)
{
	switch (rc) {
	case SQLITE_DONE:
		return STORE_OK;
	case SQLITE_CONSTRAINT_PRIMARYKEY:
	case SQLITE_CONSTRAINT_UNIQUE:
		return STORE_EXISTS;
	case SQLITE_CONSTRAINT_FOREIGNKEY:
		return STORE_NOTFOUND;
	case SQLITE_CONSTRAINT_CHECK:
		return STORE_INVALID;
	default:
		db_error(a, op);
		return STORE_ERR;
	}
}

/* ---- plans ---- */

enum store_res store_plan_set(struct store *st, const char *name, uint32_t hourly_limit)
{
	struct store_acct *a;
	char n[STORE_NAME_MAX + 1];
	sqlite3_stmt *s = stmt(st, A_PLAN_SET, &a);

	if (s == NULL)
		return STORE_ERR;
	if (!store_name_norm(name, n, sizeof(n)) || hourly_limit == 0 ||
	    hourly_limit > STORE_PLAN_LIMIT_MAX)
		return STORE_INVALID;
	int rc = bind_text(s, 1, n);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, hourly_limit);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	enum store_res res = write_res(a, rc, "plan_set");
	done(s);
	if (res == STORE_OK)
		log_debug("event=plan_set plan=%s hourly_limit=%u", n, hourly_limit);
	return res;
}

enum store_res store_plan_get(struct store *st, const char *name, uint32_t *hourly_limit)
{
	struct store_acct *a;
	char n[STORE_NAME_MAX + 1];
	sqlite3_stmt *s = stmt(st, A_PLAN_GET, &a);

	if (s == NULL)
		return STORE_ERR;
	if (!store_name_norm(name, n, sizeof(n)))
		return STORE_INVALID;
	enum store_res res = STORE_ERR;
	int rc = bind_text(s, 1, n);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		sqlite3_int64 v = sqlite3_column_int64(s, 0);
		if (v > 0 && v <= UINT32_MAX) {
			if (hourly_limit != NULL)
				*hourly_limit = (uint32_t)v;
			res = STORE_OK;
		} else {
			log_err("event=store_error op=plan_get plan=%s err=\"bad limit\"", n);
		}
	} else if (rc == SQLITE_DONE) {
		res = STORE_NOTFOUND;
	} else {
		db_error(a, "plan_get");
	}
	done(s);
	return res;
}

enum store_res store_plan_list(struct store *st,
                               void (*fn)(void *arg, const char *name, uint32_t hourly_limit),
                               void *arg)
{
	struct store_acct *a;
	sqlite3_stmt *s = stmt(st, A_PLAN_LIST, &a);

	if (s == NULL || fn == NULL || a->listing[A_PLAN_LIST])
		return STORE_ERR;
	enum store_res res = STORE_OK;
	int rc;
	a->listing[A_PLAN_LIST] = true;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const unsigned char *name = sqlite3_column_text(s, 0);
		sqlite3_int64 v = sqlite3_column_int64(s, 1);
		if (name != NULL && v > 0 && v <= UINT32_MAX)
			fn(arg, (const char *)name, (uint32_t)v);
	}
	if (rc != SQLITE_DONE) {
		db_error(a, "plan_list");
		res = STORE_ERR;
	}
	done(s);
	a->listing[A_PLAN_LIST] = false;
	return res;
}

/* ---- accounts ---- */

/* A row of ACCT_COLS. */
static bool account_row(sqlite3_stmt *s, struct store_account *out)
{
	memset(out, 0, sizeof(*out));
	copy_col(s, 0, out->name, sizeof(out->name));
	copy_col(s, 1, out->plan, sizeof(out->plan));
	sqlite3_int64 lim = sqlite3_column_int64(s, 2);
	out->disabled = sqlite3_column_int64(s, 3) != 0;
	out->created = sqlite3_column_int64(s, 4);
	if (lim <= 0 || lim > UINT32_MAX || out->name[0] == '\0')
		return false;
	out->hourly_limit = (uint32_t)lim;
	return true;
}

enum store_res store_account_add(struct store *st, const char *name, const char *plan)
{
	struct store_acct *a;
	char n[STORE_NAME_MAX + 1], p[STORE_NAME_MAX + 1];
	sqlite3_stmt *s = stmt(st, A_ACCT_ADD, &a);

	if (s == NULL)
		return STORE_ERR;
	if (plan == NULL || plan[0] == '\0')
		plan = STORE_PLAN_DEFAULT;
	if (!store_name_norm(name, n, sizeof(n)) || !store_name_norm(plan, p, sizeof(p)))
		return STORE_INVALID;
	int rc = bind_text(s, 1, n);
	if (rc == SQLITE_OK)
		rc = bind_text(s, 2, p);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 3, (sqlite3_int64)time(NULL));
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	enum store_res res = write_res(a, rc, "account_add");
	done(s);
	if (res == STORE_OK)
		log_debug("event=account_add account=%s plan=%s", n, p);
	return res;
}

enum store_res store_account_get(struct store *st, const char *name, struct store_account *out)
{
	struct store_acct *a;
	char n[STORE_NAME_MAX + 1];
	sqlite3_stmt *s = stmt(st, A_ACCT_GET, &a);

	if (s == NULL || out == NULL)
		return STORE_ERR;
	memset(out, 0, sizeof(*out));
	if (!store_name_norm(name, n, sizeof(n)))
		return STORE_INVALID;
	enum store_res res = STORE_ERR;
	int rc = bind_text(s, 1, n);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		if (account_row(s, out))
			res = STORE_OK;
		else
			log_err("event=store_error op=account_get account=%s err=\"bad row\"", n);
	} else if (rc == SQLITE_DONE) {
		res = STORE_NOTFOUND;
	} else {
		db_error(a, "account_get");
	}
	done(s);
	return res;
}

enum store_res store_account_list(struct store *st,
                                  void (*fn)(void *arg, const struct store_account *acc),
                                  void *arg)
{
	struct store_acct *a;
	struct store_account acc;
	sqlite3_stmt *s = stmt(st, A_ACCT_LIST, &a);

	if (s == NULL || fn == NULL || a->listing[A_ACCT_LIST])
		return STORE_ERR;
	enum store_res res = STORE_OK;
	int rc;
	a->listing[A_ACCT_LIST] = true;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (account_row(s, &acc))
			fn(arg, &acc);
	}
	if (rc != SQLITE_DONE) {
		db_error(a, "account_list");
		res = STORE_ERR;
	}
	done(s);
	a->listing[A_ACCT_LIST] = false;
	return res;
}

/* Runs an UPDATE/DELETE whose parameters are texts t1 (and t2 unless NULL): STORE_NOTFOUND
 * when it changed no row. Resets the statement. */
static enum store_res change_rows(struct store_acct *a, sqlite3_stmt *s, const char *op,
				  const char *t1, const char *t2)
{
	int rc = bind_text(s, 1, t1);
	if (rc == SQLITE_OK && t2 != NULL)
		rc = bind_text(s, 2, t2);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	enum store_res res = write_res(a, rc, op);
	if (res == STORE_OK && sqlite3_changes(a->db) == 0)
		res = STORE_NOTFOUND;
	done(s);
	return res;
}

enum store_res store_account_set_plan(struct store *st, const char *name, const char *plan)
{
	struct store_acct *a;
	char n[STORE_NAME_MAX + 1], p[STORE_NAME_MAX + 1];
	sqlite3_stmt *s = stmt(st, A_ACCT_SET_PLAN, &a);

	if (s == NULL)
		return STORE_ERR;
	if (!store_name_norm(name, n, sizeof(n)) || !store_name_norm(plan, p, sizeof(p)))
		return STORE_INVALID;
	enum store_res res = change_rows(a, s, "account_set_plan", n, p);
	if (res == STORE_OK)
		log_debug("event=account_set_plan account=%s plan=%s", n, p);
	return res;
}

enum store_res store_account_set_disabled(struct store *st, const char *name, bool disabled)
{
	struct store_acct *a;
	char n[STORE_NAME_MAX + 1];
	sqlite3_stmt *s = stmt(st, A_ACCT_SET_DISABLED, &a);

	if (s == NULL)
		return STORE_ERR;
	if (!store_name_norm(name, n, sizeof(n)))
		return STORE_INVALID;
	int rc = bind_text(s, 1, n);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(s, 2, disabled ? 1 : 0);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	enum store_res res = write_res(a, rc, "account_set_disabled");
	if (res == STORE_OK && sqlite3_changes(a->db) == 0)
		res = STORE_NOTFOUND;
	done(s);
	if (res == STORE_OK)
		log_debug("event=account_%s account=%s", disabled ? "disable" : "enable", n);
	return res;
}

/* ---- sending domains ---- */

enum store_res store_account_domain_add(struct store *st, const char *account, const char *domain)
{
	struct store_acct *a;
	char n[STORE_NAME_MAX + 1], d[LIM_DOMAIN + 1];
	sqlite3_stmt *s = stmt(st, A_ADOM_ADD, &a);

	if (s == NULL)
		return STORE_ERR;
	if (!store_name_norm(account, n, sizeof(n)) || !domain_norm(domain, d, sizeof(d)))
		return STORE_INVALID;
	/* a missing account is the better answer than "domain taken" */
	int e = exists(a, A_ACCT_EXISTS, n, "account_domain_add");
	if (e <= 0)
		return e < 0 ? STORE_ERR : STORE_NOTFOUND;
	int rc = bind_text(s, 1, d);
	if (rc == SQLITE_OK)
		rc = bind_text(s, 2, n);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	enum store_res res = write_res(a, rc, "account_domain_add");
	done(s);
	if (res == STORE_OK)
		log_debug("event=account_domain_add account=%s domain=%s", n, d);
	return res;
}

enum store_res store_account_domain_remove(struct store *st, const char *account,
                                           const char *domain)
{
	struct store_acct *a;
	char n[STORE_NAME_MAX + 1], d[LIM_DOMAIN + 1];
	sqlite3_stmt *s = stmt(st, A_ADOM_DEL, &a);

	if (s == NULL)
		return STORE_ERR;
	if (!store_name_norm(account, n, sizeof(n)) || !domain_norm(domain, d, sizeof(d)))
		return STORE_INVALID;
	enum store_res res = change_rows(a, s, "account_domain_remove", d, n);
	if (res == STORE_OK)
		log_debug("event=account_domain_remove account=%s domain=%s", n, d);
	return res;
}

enum store_res store_account_domains(struct store *st, const char *account,
                                     void (*fn)(void *arg, const char *domain), void *arg)
{
	struct store_acct *a;
	char n[STORE_NAME_MAX + 1];
	sqlite3_stmt *s = stmt(st, A_ADOM_LIST, &a);

	if (s == NULL || fn == NULL || a->listing[A_ADOM_LIST])
		return STORE_ERR;
	if (!store_name_norm(account, n, sizeof(n)))
		return STORE_INVALID;
	int e = exists(a, A_ACCT_EXISTS, n, "account_domains");
	if (e <= 0)
		return e < 0 ? STORE_ERR : STORE_NOTFOUND;
	enum store_res res = STORE_OK;
	int rc = bind_text(s, 1, n);
	if (rc == SQLITE_OK) {
		a->listing[A_ADOM_LIST] = true;
		while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
			const unsigned char *d = sqlite3_column_text(s, 0);
			if (d != NULL)
				fn(arg, (const char *)d);
		}
		a->listing[A_ADOM_LIST] = false;
	}
	if (rc != SQLITE_DONE) {
		db_error(a, "account_domains");
		res = STORE_ERR;
	}
	done(s);
	return res;
}

enum store_res store_domain_account(struct store *st, const char *domain, char *account,
                                    size_t accountsz)
{
	struct store_acct *a;
	char d[LIM_DOMAIN + 1];
	sqlite3_stmt *s = stmt(st, A_ADOM_OWNER, &a);

	if (s == NULL || account == NULL || accountsz == 0)
		return STORE_ERR;
	account[0] = '\0';
	if (!domain_norm(domain, d, sizeof(d)))
		return STORE_INVALID;
	enum store_res res = STORE_ERR;
	int rc = bind_text(s, 1, d);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const unsigned char *t = sqlite3_column_text(s, 0);
		size_t len = t ? strlen((const char *)t) : 0;
		if (len > 0 && len < accountsz) {
			memcpy(account, t, len + 1);
			res = STORE_OK;
		}
	} else if (rc == SQLITE_DONE) {
		res = STORE_NOTFOUND;
	} else {
		db_error(a, "domain_account");
	}
	done(s);
	return res;
}

/* ---- logins ---- */

/* The secrets kept for a password: argon2id string and SCRAM keys with a fresh salt. */
static enum store_res login_secrets(const char *password, char pwhash[crypto_pwhash_STRBYTES],
                                    struct scram_creds *sc)
{
	unsigned char salt[LOGIN_SALT_LEN];

	if (!store_password_ok(password))
		return STORE_INVALID;
	if (crypto_pwhash_str(pwhash, password, strlen(password),
	                      crypto_pwhash_OPSLIMIT_INTERACTIVE,
	                      crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
		log_err("event=store_error op=login_hash err=\"argon2id failed (out of memory?)\"");
		return STORE_ERR;
	}
	randombytes_buf(salt, sizeof(salt));
	memset(sc, 0, sizeof(*sc));
	if (scram_creds_make(password, salt, sizeof(salt), SCRAM_ITER_DEFAULT, sc) != 0) {
		log_err("event=store_error op=login_scram err=\"cannot derive SCRAM keys\"");
		sodium_memzero(pwhash, crypto_pwhash_STRBYTES);
		return STORE_ERR;
	}
	/* what we store is what we asked for, whatever scram_creds_make fills in */
	memcpy(sc->salt, salt, sizeof(salt));
	sc->salt_len = sizeof(salt);
	sc->iter = SCRAM_ITER_DEFAULT;
	return STORE_OK;
}

/* Binds pwhash and the SCRAM columns at first..first+3. */
static int bind_secrets(sqlite3_stmt *s, int first, const char *pwhash, const struct scram_creds *sc)
{
	int rc = bind_text(s, first, pwhash);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(s, first + 1, sc->salt, (int)sc->salt_len, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, first + 2, sc->iter);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(s, first + 3, sc->stored_key, SCRAM_KEY_LEN, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(s, first + 4, sc->server_key, SCRAM_KEY_LEN, SQLITE_STATIC);
	return rc;
}

enum store_res store_login_add(struct store *st, const char *login, const char *account,
                               const char *password)
{
	struct store_acct *a;
	char l[SASL_USER_MAX + 1], n[STORE_NAME_MAX + 1];
	char pwhash[crypto_pwhash_STRBYTES];
	struct scram_creds sc;
	sqlite3_stmt *s = stmt(st, A_LOGIN_ADD, &a);

	if (s == NULL)
		return STORE_ERR;
	if (!store_login_norm(login, l, sizeof(l)) || !store_name_norm(account, n, sizeof(n)) ||
	    !store_password_ok(password))
		return STORE_INVALID;
	/* Answer the cheap questions before spending the hash; the constraints still decide
	 * if another writer gets there in between. */
	int e = exists(a, A_ACCT_EXISTS, n, "login_add");
	if (e <= 0)
		return e < 0 ? STORE_ERR : STORE_NOTFOUND;
	e = exists(a, A_LOGIN_EXISTS, l, "login_add");
	if (e != 0)
		return e < 0 ? STORE_ERR : STORE_EXISTS;
	enum store_res res = login_secrets(password, pwhash, &sc);
	if (res != STORE_OK)
		return res;
	int rc = bind_text(s, 1, l);
	if (rc == SQLITE_OK)
		rc = bind_text(s, 2, n);
	if (rc == SQLITE_OK)
		rc = bind_secrets(s, 3, pwhash, &sc);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 8, (sqlite3_int64)time(NULL));
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	res = write_res(a, rc, "login_add");
	done(s);
	sodium_memzero(pwhash, sizeof(pwhash));
	sodium_memzero(&sc, sizeof(sc));
	if (res == STORE_OK) {
		char safe[SASL_USER_MAX + 1];
		log_debug("event=login_add login=\"%s\" account=%s",
		          log_safe(safe, sizeof(safe), l, strlen(l)), n);
	}
	return res;
}

enum store_res store_login_passwd(struct store *st, const char *login, const char *password)
{
	struct store_acct *a;
	char l[SASL_USER_MAX + 1];
	char pwhash[crypto_pwhash_STRBYTES];
	struct scram_creds sc;
	sqlite3_stmt *s = stmt(st, A_LOGIN_PASSWD, &a);

	if (s == NULL)
		return STORE_ERR;
	if (!store_login_norm(login, l, sizeof(l)) || !store_password_ok(password))
		return STORE_INVALID;
	int e = exists(a, A_LOGIN_EXISTS, l, "login_passwd");
	if (e <= 0)
		return e < 0 ? STORE_ERR : STORE_NOTFOUND;
	enum store_res res = login_secrets(password, pwhash, &sc);
	if (res != STORE_OK)
		return res;
	int rc = bind_text(s, 1, l);
	if (rc == SQLITE_OK)
		rc = bind_secrets(s, 2, pwhash, &sc);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	res = write_res(a, rc, "login_passwd");
	if (res == STORE_OK && sqlite3_changes(a->db) == 0)
		res = STORE_NOTFOUND;
	done(s);
	sodium_memzero(pwhash, sizeof(pwhash));
	sodium_memzero(&sc, sizeof(sc));
	if (res == STORE_OK) {
		char safe[SASL_USER_MAX + 1];
		log_debug("event=login_passwd login=\"%s\"",
		          log_safe(safe, sizeof(safe), l, strlen(l)));
	}
	return res;
}

enum store_res store_login_remove(struct store *st, const char *login)
{
	struct store_acct *a;
	char l[SASL_USER_MAX + 1];
	sqlite3_stmt *s = stmt(st, A_LOGIN_DEL, &a);

	if (s == NULL)
		return STORE_ERR;
	if (!store_login_norm(login, l, sizeof(l)))
		return STORE_INVALID;
	enum store_res res = change_rows(a, s, "login_remove", l, NULL);
	if (res == STORE_OK) {
		char safe[SASL_USER_MAX + 1];
		log_debug("event=login_remove login=\"%s\"",
		          log_safe(safe, sizeof(safe), l, strlen(l)));
	}
	return res;
}

enum store_res store_login_list(struct store *st, const char *account,
                                void (*fn)(void *arg, const char *login, const char *account,
                                           int64_t created),
                                void *arg)
{
	struct store_acct *a;
	char n[STORE_NAME_MAX + 1] = "";
	enum acct_stmt which = account ? A_LOGIN_LIST_ACCT : A_LOGIN_LIST;
	sqlite3_stmt *s = stmt(st, which, &a);

	if (s == NULL || fn == NULL || a->listing[which])
		return STORE_ERR;
	if (account != NULL) {
		if (!store_name_norm(account, n, sizeof(n)))
			return STORE_INVALID;
		int e = exists(a, A_ACCT_EXISTS, n, "login_list");
		if (e <= 0)
			return e < 0 ? STORE_ERR : STORE_NOTFOUND;
	}
	enum store_res res = STORE_OK;
	int rc = account ? bind_text(s, 1, n) : SQLITE_OK;
	if (rc == SQLITE_OK) {
		a->listing[which] = true;
		while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
			const unsigned char *l = sqlite3_column_text(s, 0);
			const unsigned char *acc = sqlite3_column_text(s, 1);
			if (l != NULL && acc != NULL)
				fn(arg, (const char *)l, (const char *)acc, sqlite3_column_int64(s, 2));
		}
		a->listing[which] = false;
	}
	if (rc != SQLITE_DONE) {
		db_error(a, "login_list");
		res = STORE_ERR;
	}
	done(s);
	return res;
}

/* Copies a BLOB column of exactly `want` bytes (want 0: 1..max bytes, length in *got). */
static bool blob_col(sqlite3_stmt *s, int col, unsigned char *out, size_t max, size_t want,
                     size_t *got)
{
	const void *p = sqlite3_column_blob(s, col);
	int n = sqlite3_column_bytes(s, col);
	if (p == NULL || n <= 0 || (size_t)n > max || (want != 0 && (size_t)n != want))
		return false;
	memcpy(out, p, (size_t)n);
	if (got != NULL)
		*got = (size_t)n;
	return true;
}

enum store_res store_login_get(struct store *st, const char *login, struct store_login *out)
{
	struct store_acct *a;
	char l[SASL_USER_MAX + 1];
	sqlite3_stmt *s = stmt(st, A_LOGIN_GET, &a);

	if (s == NULL || out == NULL)
		return STORE_ERR;
	memset(out, 0, sizeof(*out));
	if (!store_login_norm(login, l, sizeof(l)))
		return STORE_INVALID;
	enum store_res res = STORE_ERR;
	int rc = bind_text(s, 1, l);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const unsigned char *h = sqlite3_column_text(s, 2);
		size_t hn = h ? strlen((const char *)h) : 0;
		sqlite3_int64 iter = sqlite3_column_int64(s, 4);
		sqlite3_int64 lim = sqlite3_column_int64(s, 9);
		copy_col(s, 0, out->name, sizeof(out->name));
		copy_col(s, 1, out->account, sizeof(out->account));
		copy_col(s, 8, out->plan, sizeof(out->plan));
		out->account_disabled = sqlite3_column_int64(s, 7) != 0;
		bool ok = hn > 0 && hn < sizeof(out->pwhash) && iter > 0 && iter <= UINT32_MAX &&
		          lim > 0 && lim <= UINT32_MAX &&
		          blob_col(s, 3, out->scram.salt, SCRAM_SALT_MAX, 0, &out->scram.salt_len) &&
		          blob_col(s, 5, out->scram.stored_key, SCRAM_KEY_LEN, SCRAM_KEY_LEN, NULL) &&
		          blob_col(s, 6, out->scram.server_key, SCRAM_KEY_LEN, SCRAM_KEY_LEN, NULL);
		if (ok) {
			memcpy(out->pwhash, h, hn + 1);
			out->scram.iter = (uint32_t)iter;
			out->hourly_limit = (uint32_t)lim;
			res = STORE_OK;
		} else {
			char safe[SASL_USER_MAX + 1];
			log_err("event=store_error op=login_get login=\"%s\" err=\"damaged row\"",
			        log_safe(safe, sizeof(safe), l, strlen(l)));
			sodium_memzero(out, sizeof(*out));
		}
	} else if (rc == SQLITE_DONE) {
		res = STORE_NOTFOUND;
	} else {
		db_error(a, "login_get");
	}
	done(s);
	return res;
}

bool store_password_verify(const char *pwhash, const char *password)
{
	if (pwhash == NULL || password == NULL || sodium_init() < 0)
		return false;
	/* the stored string must be terminated within its buffer size */
	if (strnlen(pwhash, crypto_pwhash_STRBYTES) >= crypto_pwhash_STRBYTES)
		return false;
	return crypto_pwhash_str_verify(pwhash, password, strlen(password)) == 0;
}

/* ---- rate buckets ---- */

enum store_res store_rate_add(struct store *st, const char *account, int64_t minute,
                              int64_t delta)
{
	struct store_acct *a;
	char n[STORE_NAME_MAX + 1];
	sqlite3_stmt *s = stmt(st, A_RATE_ADD, &a);

	if (s == NULL)
		return STORE_ERR;
	if (!store_name_norm(account, n, sizeof(n)))
		return STORE_INVALID;
	/* keep count + delta far from int64 overflow (SQLite would turn it into a REAL) */
	if (delta > (int64_t)UINT32_MAX)
		delta = UINT32_MAX;
	if (delta < -(int64_t)UINT32_MAX)
		delta = -(int64_t)UINT32_MAX;
	if (delta == 0)
		return STORE_OK;
	int rc = bind_text(s, 1, n);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, minute);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 3, delta);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	enum store_res res = write_res(a, rc, "rate_add");
	done(s);
	return res;
}

enum store_res store_rate_load(struct store *st, const char *account, int64_t since_minute,
                               void (*fn)(void *arg, int64_t minute, uint32_t count), void *arg)
{
	struct store_acct *a;
	char n[STORE_NAME_MAX + 1];
	sqlite3_stmt *s = stmt(st, A_RATE_LOAD, &a);

	if (s == NULL || fn == NULL || a->listing[A_RATE_LOAD])
		return STORE_ERR;
	if (!store_name_norm(account, n, sizeof(n)))
		return STORE_INVALID;
	enum store_res res = STORE_OK;
	int rc = bind_text(s, 1, n);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, since_minute);
	if (rc == SQLITE_OK) {
		a->listing[A_RATE_LOAD] = true;
		while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
			sqlite3_int64 c = sqlite3_column_int64(s, 1);
			if (c > 0)
				fn(arg, sqlite3_column_int64(s, 0),
				   c > UINT32_MAX ? UINT32_MAX : (uint32_t)c);
		}
		a->listing[A_RATE_LOAD] = false;
	}
	if (rc != SQLITE_DONE) {
		db_error(a, "rate_load");
		res = STORE_ERR;
	}
	done(s);
	return res;
}

enum store_res store_rate_prune(struct store *st, int64_t before_minute, uint64_t *removed)
{
	struct store_acct *a;
	sqlite3_stmt *s = stmt(st, A_RATE_PRUNE, &a);

	if (removed != NULL)
		*removed = 0;
	if (s == NULL)
		return STORE_ERR;
	int rc = sqlite3_bind_int64(s, 1, before_minute);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	enum store_res res = write_res(a, rc, "rate_prune");
	if (res == STORE_OK && removed != NULL)
		*removed = (uint64_t)sqlite3_changes64(a->db);
	done(s);
	return res;
}
