/* Unit tests for src/store/accounts.c and src/store/accounts_cli.c: the schema migration from
 * version 1, plans, accounts, sending domains, logins (argon2id + SCRAM keys), rate buckets
 * and the `sealmail plan|account|login` commands. Each test gets its own temporary data
 * directory (removed afterwards); no network. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "auth/scram.h"
#include "conf/conf.h"
#include "store/store.h"

#define PW "correct horse battery staple"

struct fx {
	char dir[64];
	struct store *st;
};

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static struct store *open_st(const char *dir)
{
	char err[256] = "";
	struct store *st = store_open(dir, true, err, sizeof(err));
	if (st == NULL)
		fail_msg("store_open: %s", err);
	return st;
}

static int setup_dir(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/sealmail-test-acct-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	*state = f;
	return 0;
}

static int setup(void **state)
{
	setup_dir(state);
	struct fx *f = *state;
	f->st = open_st(f->dir);
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	store_close(f->st);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* ---- helpers ---- */

struct names {
	char buf[4096];
	int n;
};

static void names_add(struct names *nm, const char *s)
{
	size_t l = strlen(nm->buf);
	snprintf(nm->buf + l, sizeof(nm->buf) - l, "%s%s", nm->n++ ? "," : "", s);
}

static void collect_plan(void *arg, const char *name, uint32_t limit)
{
	char b[96];
	snprintf(b, sizeof(b), "%s=%u", name, limit);
	names_add(arg, b);
}

static void collect_account(void *arg, const struct store_account *a)
{
	char b[160];
	snprintf(b, sizeof(b), "%s:%s:%u%s", a->name, a->plan, a->hourly_limit,
	         a->disabled ? ":off" : "");
	names_add(arg, b);
}

static void collect_str(void *arg, const char *s)
{
	names_add(arg, s);
}

static void collect_login(void *arg, const char *login, const char *account, int64_t created)
{
	char b[400];
	snprintf(b, sizeof(b), "%s>%s", login, account);
	names_add(arg, b);
}

static void collect_bucket(void *arg, int64_t minute, uint32_t count)
{
	char b[64];
	snprintf(b, sizeof(b), "%lld=%u", (long long)minute, count);
	names_add(arg, b);
}

static const char *plans(struct store *st)
{
	static struct names nm;
	memset(&nm, 0, sizeof(nm));
	assert_int_equal(store_plan_list(st, collect_plan, &nm), STORE_OK);
	return nm.buf;
}

static const char *accounts(struct store *st)
{
	static struct names nm;
	memset(&nm, 0, sizeof(nm));
	assert_int_equal(store_account_list(st, collect_account, &nm), STORE_OK);
	return nm.buf;
}

static const char *domains_of(struct store *st, const char *acct)
{
	static struct names nm;
	memset(&nm, 0, sizeof(nm));
	assert_int_equal(store_account_domains(st, acct, collect_str, &nm), STORE_OK);
	return nm.buf;
}

static const char *logins(struct store *st, const char *acct)
{
	static struct names nm;
	memset(&nm, 0, sizeof(nm));
	assert_int_equal(store_login_list(st, acct, collect_login, &nm), STORE_OK);
	return nm.buf;
}

static const char *buckets(struct store *st, const char *acct, int64_t since)
{
	static struct names nm;
	memset(&nm, 0, sizeof(nm));
	assert_int_equal(store_rate_load(st, acct, since, collect_bucket, &nm), STORE_OK);
	return nm.buf;
}

static int user_version(const char *dir)
{
	char path[128];
	sqlite3 *db;
	sqlite3_stmt *s;
	snprintf(path, sizeof(path), "%s/sealmail.db", dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	int v = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return v;
}

/* ---- schema ---- */

/* A database as sealmail 0.1 (schema version 1) left it, with data, opens as version 2 and
 * keeps everything. */
static void test_migrate_from_v1(void **state)
{
	struct fx *f = *state;
	char path[128], out[STORE_ADDR_MAX];
	sqlite3 *db;

	snprintf(path, sizeof(path), "%s/sealmail.db", f->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(
	    sqlite3_exec(db,
	                 "PRAGMA journal_mode = WAL;"
	                 "CREATE TABLE domains (name TEXT PRIMARY KEY NOT NULL);"
	                 "CREATE TABLE mailboxes ("
	                 " address TEXT PRIMARY KEY NOT NULL,"
	                 " domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,"
	                 " target TEXT NOT NULL DEFAULT '');"
	                 "CREATE INDEX mailboxes_domain ON mailboxes(domain);"
	                 "INSERT INTO domains VALUES ('example.com');"
	                 "INSERT INTO mailboxes VALUES ('bob@example.com', 'example.com', '');"
	                 "INSERT INTO mailboxes VALUES ('info@example.com', 'example.com',"
	                 " 'bob@example.com');"
	                 "PRAGMA user_version = 1;",
	                 NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(user_version(f->dir), 1);

	f->st = open_st(f->dir);
	assert_int_equal(user_version(f->dir), 2);
	/* old data intact; no "localhost" seeded into a database that is not new */
	assert_true(store_domain_is_local(f->st, "example.com"));
	assert_false(store_domain_is_local(f->st, "localhost"));
	assert_int_equal(store_resolve(f->st, "info@example.com", NULL, out, sizeof(out)), STORE_OK);
	assert_string_equal(out, "bob@example.com");
	/* new tables there, plans seeded */
	assert_string_equal(plans(f->st),
	                    "trial=1000,standard=1500,premium=3000,professional=5000");
	assert_int_equal(store_account_add(f->st, "acme", NULL), STORE_OK);
	assert_int_equal(store_account_domain_add(f->st, "acme", "example.com"), STORE_OK);

	/* reopening does not migrate again (the seeded plans are not re-inserted) */
	assert_int_equal(store_plan_set(f->st, "trial", 10), STORE_OK);
	store_close(f->st);
	f->st = open_st(f->dir);
	assert_int_equal(user_version(f->dir), 2);
	assert_string_equal(plans(f->st), "trial=10,standard=1500,premium=3000,professional=5000");
}

/* ---- plans ---- */

static void test_plans(void **state)
{
	struct fx *f = *state;
	uint32_t lim = 0;

	assert_string_equal(plans(f->st), "trial=1000,standard=1500,premium=3000,professional=5000");
	assert_int_equal(store_plan_get(f->st, "premium", &lim), STORE_OK);
	assert_int_equal(lim, 3000);
	assert_int_equal(store_plan_get(f->st, "PREMIUM", &lim), STORE_OK);
	assert_int_equal(store_plan_get(f->st, "gold", &lim), STORE_NOTFOUND);

	/* change one, add one; accounts on the plan see the change */
	assert_int_equal(store_account_add(f->st, "acme", "standard"), STORE_OK);
	assert_int_equal(store_plan_set(f->st, "standard", 1800), STORE_OK);
	assert_int_equal(store_plan_set(f->st, "Gold", 2000), STORE_OK);
	assert_string_equal(plans(f->st),
	                    "trial=1000,standard=1800,gold=2000,premium=3000,professional=5000");
	assert_string_equal(accounts(f->st), "acme:standard:1800");

	/* invalid */
	assert_int_equal(store_plan_set(f->st, "gold", 0), STORE_INVALID);
	assert_int_equal(store_plan_set(f->st, "gold", STORE_PLAN_LIMIT_MAX + 1), STORE_INVALID);
	assert_int_equal(store_plan_set(f->st, "gold", STORE_PLAN_LIMIT_MAX), STORE_OK);
	assert_int_equal(store_plan_set(f->st, "no spaces", 10), STORE_INVALID);
	assert_int_equal(store_plan_set(f->st, "", 10), STORE_INVALID);
	assert_int_equal(store_plan_set(f->st, NULL, 10), STORE_INVALID);
	assert_int_equal(store_plan_get(f->st, "x;drop", &lim), STORE_INVALID);
	assert_int_equal(store_plan_set(NULL, "gold", 10), STORE_ERR);
	assert_int_equal(store_plan_list(f->st, NULL, NULL), STORE_ERR);
}

/* ---- accounts ---- */

static void test_account_lifecycle(void **state)
{
	struct fx *f = *state;
	struct store_account a;
	char n64[65];
	time_t before = time(NULL);

	assert_int_equal(store_account_add(f->st, "acme", NULL), STORE_OK);
	assert_int_equal(store_account_get(f->st, "acme", &a), STORE_OK);
	assert_string_equal(a.name, "acme");
	assert_string_equal(a.plan, "trial");
	assert_int_equal(a.hourly_limit, 1000);
	assert_false(a.disabled);
	assert_true(a.created >= before && a.created <= time(NULL));

	assert_int_equal(store_account_add(f->st, "ACME", "premium"), STORE_EXISTS);
	assert_int_equal(store_account_add(f->st, "beta", "gold"), STORE_NOTFOUND);
	assert_int_equal(store_account_add(f->st, "Beta.Co_1-x", "Premium"), STORE_OK);
	assert_int_equal(store_account_get(f->st, "beta.co_1-x", &a), STORE_OK);
	assert_string_equal(a.plan, "premium");

	/* names */
	memset(n64, 'a', 64);
	n64[64] = '\0';
	assert_int_equal(store_account_add(f->st, n64, NULL), STORE_INVALID);
	n64[63] = '\0';
	assert_int_equal(store_account_add(f->st, n64, NULL), STORE_OK);
	assert_int_equal(store_account_add(f->st, "", NULL), STORE_INVALID);
	assert_int_equal(store_account_add(f->st, "a b", NULL), STORE_INVALID);
	assert_int_equal(store_account_add(f->st, "a@b", NULL), STORE_INVALID);
	assert_int_equal(store_account_add(f->st, "caf\xc3\xa9", NULL), STORE_INVALID);
	assert_int_equal(store_account_get(f->st, "nobody", &a), STORE_NOTFOUND);
	assert_int_equal(store_account_get(f->st, "a'--", &a), STORE_INVALID);

	/* plan changes */
	assert_int_equal(store_account_set_plan(f->st, "acme", "professional"), STORE_OK);
	assert_int_equal(store_account_get(f->st, "acme", &a), STORE_OK);
	assert_int_equal(a.hourly_limit, 5000);
	assert_int_equal(store_account_set_plan(f->st, "acme", "gold"), STORE_NOTFOUND);
	assert_int_equal(store_account_set_plan(f->st, "nobody", "trial"), STORE_NOTFOUND);
	assert_int_equal(store_account_get(f->st, "acme", &a), STORE_OK);
	assert_string_equal(a.plan, "professional");

	/* disable / enable (idempotent) */
	assert_int_equal(store_account_set_disabled(f->st, "acme", true), STORE_OK);
	assert_int_equal(store_account_set_disabled(f->st, "acme", true), STORE_OK);
	assert_int_equal(store_account_get(f->st, "acme", &a), STORE_OK);
	assert_true(a.disabled);
	assert_int_equal(store_account_set_disabled(f->st, "nobody", true), STORE_NOTFOUND);

	char want[256];
	snprintf(want, sizeof(want), "%s:trial:1000,acme:professional:5000:off,beta.co_1-x:premium:3000",
	         n64);
	assert_string_equal(accounts(f->st), want);
	assert_int_equal(store_account_set_disabled(f->st, "acme", false), STORE_OK);
	assert_int_equal(store_account_get(f->st, "acme", &a), STORE_OK);
	assert_false(a.disabled);

	/* a plan in use cannot vanish under an account: the foreign key holds */
	assert_int_equal(store_account_get(NULL, "acme", &a), STORE_ERR);
	assert_int_equal(store_account_get(f->st, "acme", NULL), STORE_ERR);
}

struct reenter {
	struct store *st;
	int calls;
	enum store_res inner;
};

static void reenter_account(void *arg, const struct store_account *a)
{
	struct reenter *r = arg;
	struct names nm;
	memset(&nm, 0, sizeof(nm));
	r->calls++;
	r->inner = store_account_list(r->st, reenter_account, r);
	/* other statements while the list is stepping are fine */
	if (store_account_domains(r->st, a->name, collect_str, &nm) != STORE_OK)
		r->inner = STORE_OK;
}

static void test_account_list_reentry(void **state)
{
	struct fx *f = *state;
	struct reenter r = {.st = f->st};
	assert_int_equal(store_account_add(f->st, "a1", NULL), STORE_OK);
	assert_int_equal(store_account_add(f->st, "a2", NULL), STORE_OK);
	assert_int_equal(store_account_list(f->st, reenter_account, &r), STORE_OK);
	assert_int_equal(r.calls, 2);
	assert_int_equal(r.inner, STORE_ERR);
	assert_string_equal(accounts(f->st), "a1:trial:1000,a2:trial:1000");
}

/* ---- sending domains ---- */

static void test_account_domains(void **state)
{
	struct fx *f = *state;
	char owner[64];

	assert_int_equal(store_account_add(f->st, "acme", NULL), STORE_OK);
	assert_int_equal(store_account_add(f->st, "beta", NULL), STORE_OK);
	assert_int_equal(store_account_domain_add(f->st, "acme", "Acme.Example"), STORE_OK);
	assert_int_equal(store_account_domain_add(f->st, "acme", "mail.acme.example"), STORE_OK);
	assert_int_equal(store_account_domain_add(f->st, "acme", "acme.example"), STORE_EXISTS);
	/* a domain belongs to one account */
	assert_int_equal(store_account_domain_add(f->st, "beta", "ACME.example"), STORE_EXISTS);
	assert_int_equal(store_account_domain_add(f->st, "nobody", "x.example"), STORE_NOTFOUND);
	assert_int_equal(store_account_domain_add(f->st, "beta", "bad..example"), STORE_INVALID);
	assert_int_equal(store_account_domain_add(f->st, "beta", "[192.0.2.1]"), STORE_INVALID);
	assert_int_equal(store_account_domain_add(f->st, "beta", ""), STORE_INVALID);
	assert_int_equal(store_account_domain_add(f->st, "beta", NULL), STORE_INVALID);

	assert_string_equal(domains_of(f->st, "acme"), "acme.example,mail.acme.example");
	assert_string_equal(domains_of(f->st, "beta"), "");
	struct names nm;
	memset(&nm, 0, sizeof(nm));
	assert_int_equal(store_account_domains(f->st, "nobody", collect_str, &nm), STORE_NOTFOUND);

	assert_int_equal(store_domain_account(f->st, "MAIL.acme.example", owner, sizeof(owner)),
	                 STORE_OK);
	assert_string_equal(owner, "acme");
	assert_int_equal(store_domain_account(f->st, "other.example", owner, sizeof(owner)),
	                 STORE_NOTFOUND);
	assert_int_equal(store_domain_account(f->st, "-bad-", owner, sizeof(owner)), STORE_INVALID);
	assert_int_equal(store_domain_account(f->st, "acme.example", owner, 3), STORE_ERR);

	/* remove: only from the account that has it */
	assert_int_equal(store_account_domain_remove(f->st, "beta", "acme.example"), STORE_NOTFOUND);
	assert_int_equal(store_account_domain_remove(f->st, "acme", "acme.example"), STORE_OK);
	assert_int_equal(store_account_domain_remove(f->st, "acme", "acme.example"), STORE_NOTFOUND);
	assert_int_equal(store_account_domain_add(f->st, "beta", "acme.example"), STORE_OK);
	assert_string_equal(domains_of(f->st, "beta"), "acme.example");
	assert_string_equal(domains_of(f->st, "acme"), "mail.acme.example");

	/* sending domains are independent of local (delivery) domains */
	assert_false(store_domain_is_local(f->st, "acme.example"));
}

/* ---- logins ---- */

/* True when the database file (and its WAL) contain `needle`. */
static bool db_contains(const char *dir, const char *needle)
{
	static const char *const files[] = {"sealmail.db", "sealmail.db-wal"};
	size_t nl = strlen(needle);
	for (size_t i = 0; i < 2; i++) {
		char path[128];
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		FILE *fp = fopen(path, "rb");
		if (fp == NULL)
			continue;
		static char buf[4 << 20];
		size_t n = fread(buf, 1, sizeof(buf), fp);
		fclose(fp);
		for (size_t k = 0; k + nl <= n; k++)
			if (memcmp(buf + k, needle, nl) == 0)
				return true;
	}
	return false;
}

static void test_login_add_get_verify(void **state)
{
	struct fx *f = *state;
	struct store_login l, l2;
	struct scram_creds c;
	char long_name[SASL_USER_MAX + 2];

	assert_int_equal(store_account_add(f->st, "acme", "premium"), STORE_OK);
	assert_int_equal(store_login_add(f->st, "Bob@Acme.Example", "acme", PW), STORE_OK);
	assert_int_equal(store_login_get(f->st, "bob@acme.example", &l), STORE_OK);
	assert_string_equal(l.name, "bob@acme.example");
	assert_string_equal(l.account, "acme");
	assert_string_equal(l.plan, "premium");
	assert_int_equal(l.hourly_limit, 3000);
	assert_false(l.account_disabled);
	/* argon2id, verifiable; the wrong password is refused */
	assert_non_null(strstr(l.pwhash, "$argon2id$"));
	assert_true(store_password_verify(l.pwhash, PW));
	assert_false(store_password_verify(l.pwhash, PW "x"));
	assert_false(store_password_verify(l.pwhash, ""));
	assert_false(store_password_verify(NULL, PW));
	assert_false(store_password_verify(l.pwhash, NULL));
	assert_false(store_password_verify("garbage", PW));
	/* SCRAM keys: what scram_creds_make gives for this password, salt and count */
	assert_int_equal(l.scram.salt_len, 16);
	assert_int_equal(l.scram.iter, SCRAM_ITER_DEFAULT);
	memset(&c, 0, sizeof(c));
	assert_int_equal(scram_creds_make(PW, l.scram.salt, l.scram.salt_len, l.scram.iter, &c), 0);
	assert_memory_equal(c.stored_key, l.scram.stored_key, SCRAM_KEY_LEN);
	assert_memory_equal(c.server_key, l.scram.server_key, SCRAM_KEY_LEN);
	assert_int_equal(scram_creds_make("wrong", l.scram.salt, l.scram.salt_len, l.scram.iter, &c),
	                 0);
	assert_memory_not_equal(c.stored_key, l.scram.stored_key, SCRAM_KEY_LEN);
	/* the password itself is nowhere in the database */
	assert_false(db_contains(f->dir, PW));
	assert_true(db_contains(f->dir, "bob@acme.example")); /* (the search works) */

	/* two logins with one password get different salts */
	assert_int_equal(store_login_add(f->st, "app1", "acme", PW), STORE_OK);
	assert_int_equal(store_login_get(f->st, "APP1", &l2), STORE_OK);
	assert_memory_not_equal(l.scram.salt, l2.scram.salt, 16);
	assert_string_not_equal(l.pwhash, l2.pwhash);

	/* refusals */
	assert_int_equal(store_login_add(f->st, "bob@acme.example", "acme", PW), STORE_EXISTS);
	assert_int_equal(store_login_add(f->st, "carol", "nobody", PW), STORE_NOTFOUND);
	assert_int_equal(store_login_add(f->st, "with space", "acme", PW), STORE_INVALID);
	assert_int_equal(store_login_add(f->st, "", "acme", PW), STORE_INVALID);
	assert_int_equal(store_login_add(f->st, "t\xc3\xa9st", "acme", PW), STORE_INVALID);
	assert_int_equal(store_login_add(f->st, "carol", "acme", ""), STORE_INVALID);
	assert_int_equal(store_login_add(f->st, "carol", "acme", "a\nb"), STORE_INVALID);
	assert_int_equal(store_login_add(f->st, "carol", "acme", NULL), STORE_INVALID);
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	assert_int_equal(store_login_add(f->st, long_name, "acme", PW), STORE_INVALID);
	long_name[SASL_USER_MAX] = '\0';
	char long_pw[SASL_PASS_MAX + 2];
	memset(long_pw, 'p', sizeof(long_pw) - 1);
	long_pw[sizeof(long_pw) - 1] = '\0';
	assert_int_equal(store_login_add(f->st, long_name, "acme", long_pw), STORE_INVALID);
	long_pw[SASL_PASS_MAX] = '\0';
	assert_int_equal(store_login_add(f->st, long_name, "acme", long_pw), STORE_OK);
	assert_int_equal(store_login_get(f->st, long_name, &l2), STORE_OK);
	assert_true(store_password_verify(l2.pwhash, long_pw));

	assert_int_equal(store_login_get(f->st, "nobody", &l2), STORE_NOTFOUND);
	assert_int_equal(store_login_get(f->st, "a b", &l2), STORE_INVALID);
	assert_int_equal(store_login_get(f->st, NULL, &l2), STORE_INVALID);

	/* the account's state and plan reach the login */
	assert_int_equal(store_account_set_disabled(f->st, "acme", true), STORE_OK);
	assert_int_equal(store_account_set_plan(f->st, "acme", "trial"), STORE_OK);
	assert_int_equal(store_login_get(f->st, "bob@acme.example", &l2), STORE_OK);
	assert_true(l2.account_disabled);
	assert_string_equal(l2.plan, "trial");
	assert_int_equal(l2.hourly_limit, 1000);

	assert_int_equal(store_account_add(f->st, "beta", NULL), STORE_OK);
	assert_int_equal(store_login_add(f->st, "zed", "beta", PW), STORE_OK);
	char want[600];
	snprintf(want, sizeof(want), "app1>acme,bob@acme.example>acme,%s>acme,zed>beta", long_name);
	assert_string_equal(logins(f->st, NULL), want);
	assert_string_equal(logins(f->st, "beta"), "zed>beta");
	struct names nm;
	memset(&nm, 0, sizeof(nm));
	assert_int_equal(store_login_list(f->st, "nobody", collect_login, &nm), STORE_NOTFOUND);
}

static void test_login_passwd_remove(void **state)
{
	struct fx *f = *state;
	struct store_login a, b;
	struct scram_creds c;

	assert_int_equal(store_account_add(f->st, "acme", NULL), STORE_OK);
	assert_int_equal(store_login_add(f->st, "bob", "acme", PW), STORE_OK);
	assert_int_equal(store_login_get(f->st, "bob", &a), STORE_OK);
	assert_int_equal(store_login_passwd(f->st, "BOB", "n3w-secret"), STORE_OK);
	assert_int_equal(store_login_get(f->st, "bob", &b), STORE_OK);
	/* both the hash and the SCRAM keys changed */
	assert_string_not_equal(a.pwhash, b.pwhash);
	assert_false(store_password_verify(b.pwhash, PW));
	assert_true(store_password_verify(b.pwhash, "n3w-secret"));
	assert_memory_not_equal(a.scram.salt, b.scram.salt, 16);
	assert_memory_not_equal(a.scram.stored_key, b.scram.stored_key, SCRAM_KEY_LEN);
	assert_int_equal(scram_creds_make("n3w-secret", b.scram.salt, b.scram.salt_len, b.scram.iter,
	                                  &c),
	                 0);
	assert_memory_equal(c.stored_key, b.scram.stored_key, SCRAM_KEY_LEN);
	assert_memory_equal(c.server_key, b.scram.server_key, SCRAM_KEY_LEN);
	assert_string_equal(b.account, "acme");

	assert_int_equal(store_login_passwd(f->st, "nobody", "x"), STORE_NOTFOUND);
	assert_int_equal(store_login_passwd(f->st, "bob", ""), STORE_INVALID);
	assert_int_equal(store_login_passwd(f->st, "bob", "tab\there"), STORE_INVALID);

	assert_int_equal(store_login_remove(f->st, "Bob"), STORE_OK);
	assert_int_equal(store_login_get(f->st, "bob", &b), STORE_NOTFOUND);
	assert_int_equal(store_login_remove(f->st, "bob"), STORE_NOTFOUND);
	assert_int_equal(store_login_remove(f->st, "bad name"), STORE_INVALID);
}

/* ---- rate buckets ---- */

static void test_rate_buckets(void **state)
{
	struct fx *f = *state;
	uint64_t removed = 99;

	assert_int_equal(store_rate_add(f->st, "acme", 100, 5), STORE_OK);
	assert_int_equal(store_rate_add(f->st, "acme", 100, 3), STORE_OK);
	assert_int_equal(store_rate_add(f->st, "acme", 101, 1), STORE_OK);
	assert_int_equal(store_rate_add(f->st, "acme", 102, -4), STORE_OK); /* new row at 0 */
	assert_int_equal(store_rate_add(f->st, "beta", 100, 7), STORE_OK);
	assert_string_equal(buckets(f->st, "acme", 0), "100=8,101=1");
	assert_string_equal(buckets(f->st, "acme", 101), "101=1");
	/* negative deltas never take a count below zero */
	assert_int_equal(store_rate_add(f->st, "acme", 100, -2), STORE_OK);
	assert_string_equal(buckets(f->st, "acme", 0), "100=6,101=1");
	assert_int_equal(store_rate_add(f->st, "acme", 101, -10), STORE_OK);
	assert_string_equal(buckets(f->st, "acme", 0), "100=6");
	assert_int_equal(store_rate_add(f->st, "acme", 101, 2), STORE_OK);
	assert_string_equal(buckets(f->st, "acme", 0), "100=6,101=2");
	/* huge deltas saturate instead of overflowing */
	assert_int_equal(store_rate_add(f->st, "acme", 103, INT64_MAX), STORE_OK);
	assert_int_equal(store_rate_add(f->st, "acme", 103, INT64_MAX), STORE_OK);
	assert_string_equal(buckets(f->st, "acme", 103), "103=4294967295");
	assert_int_equal(store_rate_add(f->st, "acme", 103, INT64_MIN), STORE_OK);
	assert_string_equal(buckets(f->st, "acme", 103), "");
	assert_string_equal(buckets(f->st, "BETA", 0), "100=7");
	assert_string_equal(buckets(f->st, "gamma", 0), "");

	/* prune: everything older than the minute given, all accounts */
	assert_int_equal(store_rate_prune(f->st, 101, &removed), STORE_OK);
	assert_int_equal(removed, 2);
	assert_string_equal(buckets(f->st, "acme", 0), "101=2");
	assert_string_equal(buckets(f->st, "beta", 0), "");
	assert_int_equal(store_rate_prune(f->st, 101, NULL), STORE_OK);

	/* counters survive a reopen (a restart) */
	store_close(f->st);
	f->st = open_st(f->dir);
	assert_string_equal(buckets(f->st, "acme", 0), "101=2");

	assert_int_equal(store_rate_add(f->st, "bad name", 1, 1), STORE_INVALID);
	struct names nm;
	assert_int_equal(store_rate_load(f->st, "", 0, collect_bucket, &nm), STORE_INVALID);
	assert_int_equal(store_rate_load(f->st, "acme", 0, NULL, NULL), STORE_ERR);
	assert_int_equal(store_rate_prune(NULL, 1, &removed), STORE_ERR);
}

/* ---- CLI ---- */

struct cli_out {
	int code;
	char out[8192];
	char err[4096];
};

static void read_all(int fd, char *buf, size_t sz)
{
	size_t n = 0;
	ssize_t r;
	lseek(fd, 0, SEEK_SET);
	while (n + 1 < sz && (r = read(fd, buf + n, sz - 1 - n)) > 0)
		n += (size_t)r;
	buf[n] = '\0';
}

/* Runs fn with argv (NULL-terminated) feeding `input` on stdin and capturing stdout/stderr. */
static void run_cli(struct cli_out *o, const char *input, int (*fn)(int, char **), ...)
{
	char *argv[16];
	int argc = 0;
	va_list ap;
	va_start(ap, fn);
	const char *a;
	while ((a = va_arg(ap, const char *)) != NULL && argc < 15)
		argv[argc++] = (char *)a;
	va_end(ap);
	argv[argc] = NULL;

	char p0[] = "/tmp/sealmail-test-in-XXXXXX";
	char p1[] = "/tmp/sealmail-test-out-XXXXXX", p2[] = "/tmp/sealmail-test-err-XXXXXX";
	int fi = mkstemp(p0), fo = mkstemp(p1), fe = mkstemp(p2);
	assert_true(fi >= 0 && fo >= 0 && fe >= 0);
	unlink(p0);
	unlink(p1);
	unlink(p2);
	if (input != NULL)
		assert_int_equal(write(fi, input, strlen(input)), (ssize_t)strlen(input));
	lseek(fi, 0, SEEK_SET);
	fflush(stdout);
	fflush(stderr);
	int si = dup(0), so = dup(1), se = dup(2);
	dup2(fi, 0);
	dup2(fo, 1);
	dup2(fe, 2);
	o->code = fn(argc, argv);
	fflush(stdout);
	fflush(stderr);
	dup2(si, 0);
	dup2(so, 1);
	dup2(se, 2);
	close(si);
	close(so);
	close(se);
	read_all(fo, o->out, sizeof(o->out));
	read_all(fe, o->err, sizeof(o->err));
	close(fi);
	close(fo);
	close(fe);
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void test_cli(void **state)
{
	struct fx *f = *state;
	struct cli_out o;
	char home[128];
	struct stat sb;
	struct store_login l;

	if (access(CONF_DEFAULT_PATH, F_OK) == 0)
		skip(); /* a system config would be picked instead of the embedded defaults */
	snprintf(home, sizeof(home), "%s/cli/data", f->dir);
	setenv("SEALMAIL_HOME", home, 1);
	unsetenv("SEALMAIL_CONF");

	/* usage and syntax errors never touch the disk */
	run_cli(&o, NULL, store_cli_account, NULL);
	assert_int_equal(o.code, EX_USAGE);
	run_cli(&o, NULL, store_cli_account, "frob", NULL);
	assert_int_equal(o.code, EX_USAGE);
	run_cli(&o, NULL, store_cli_account, "add", NULL);
	assert_int_equal(o.code, EX_USAGE);
	run_cli(&o, NULL, store_cli_account, "list", "--plan", "x", NULL);
	assert_int_equal(o.code, EX_USAGE);
	run_cli(&o, NULL, store_cli_account, "add", "Bad Name", NULL);
	assert_int_equal(o.code, EX_DATAERR);
	assert_non_null(strstr(o.err, "sealmail: account Bad Name: not a valid account name"));
	run_cli(&o, NULL, store_cli_account, "domain", "add", "acme", "bad..example", NULL);
	assert_int_equal(o.code, EX_DATAERR);
	run_cli(&o, NULL, store_cli_plan, "set", "gold", "0", NULL);
	assert_int_equal(o.code, EX_DATAERR);
	run_cli(&o, NULL, store_cli_plan, "set", "gold", "12x", NULL);
	assert_int_equal(o.code, EX_DATAERR);
	run_cli(&o, NULL, store_cli_plan, "set", "gold", "-5", NULL);
	assert_int_equal(o.code, EX_USAGE); /* looks like an option */
	run_cli(&o, "", store_cli_login, "add", "bob", "acme", NULL);
	assert_int_equal(o.code, EX_DATAERR);
	assert_non_null(strstr(o.err, "no password on standard input"));
	run_cli(&o, NULL, store_cli_login, "add", "bob", "acme", "--plan", "x", NULL);
	assert_int_equal(o.code, EX_USAGE);
	run_cli(&o, NULL, store_cli_login, "remove", "--generate", "bob", NULL);
	assert_int_equal(o.code, EX_USAGE);
	assert_int_equal(stat(home, &sb), -1);

	/* plans */
	run_cli(&o, NULL, store_cli_plan, "list", NULL);
	assert_int_equal(o.code, 0);
	assert_non_null(strstr(o.out, "trial"));
	assert_non_null(strstr(o.out, "5000 recipients/hour"));
	run_cli(&o, NULL, store_cli_plan, "set", "Gold", "2000", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "plan gold added: 2000 recipients per hour\n");
	run_cli(&o, NULL, store_cli_plan, "set", "trial", "1200", "--json", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "{\"plan\":\"trial\",\"hourly_limit\":1200,\"status\":\"changed\"}\n");
	run_cli(&o, NULL, store_cli_plan, "list", "--json", NULL);
	assert_string_equal(o.out, "[{\"name\":\"trial\",\"hourly_limit\":1200},"
	                           "{\"name\":\"standard\",\"hourly_limit\":1500},"
	                           "{\"name\":\"gold\",\"hourly_limit\":2000},"
	                           "{\"name\":\"premium\",\"hourly_limit\":3000},"
	                           "{\"name\":\"professional\",\"hourly_limit\":5000}]\n");

	/* accounts */
	run_cli(&o, NULL, store_cli_account, "add", "acme", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "account acme added (plan trial, 1200 recipients per hour)\n");
	run_cli(&o, NULL, store_cli_account, "add", "acme", NULL);
	assert_int_equal(o.code, 1);
	assert_string_equal(o.err, "sealmail: account acme: already exists\n");
	run_cli(&o, NULL, store_cli_account, "add", "beta", "--plan", "platinum", NULL);
	assert_int_equal(o.code, 1);
	assert_string_equal(o.err, "sealmail: plan platinum: no such plan\n");
	run_cli(&o, NULL, store_cli_account, "-c", "/nonexistent/x.conf", "list", NULL);
	assert_int_equal(o.code, EX_USAGE); /* argv[0] is the subcommand word */
	run_cli(&o, NULL, store_cli_account, "add", "beta", "--plan=premium", "--json", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "{\"account\":\"beta\",\"plan\":\"premium\",\"hourly_limit\":3000,"
	                           "\"status\":\"added\"}\n");
	run_cli(&o, NULL, store_cli_account, "set-plan", "acme", "gold", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "account acme: plan gold (2000 recipients per hour)\n");
	run_cli(&o, NULL, store_cli_account, "set-plan", "nobody", "gold", NULL);
	assert_int_equal(o.code, 1);
	assert_string_equal(o.err, "sealmail: account nobody: no such account\n");
	run_cli(&o, NULL, store_cli_account, "set-plan", "acme", "tin", NULL);
	assert_int_equal(o.code, 1);
	assert_string_equal(o.err, "sealmail: plan tin: no such plan\n");
	run_cli(&o, NULL, store_cli_account, "disable", "beta", NULL);
	assert_int_equal(o.code, 0);
	run_cli(&o, NULL, store_cli_account, "show", "nobody", NULL);
	assert_int_equal(o.code, 1);
	assert_string_equal(o.err, "sealmail: account nobody: no such account\n");
	run_cli(&o, NULL, store_cli_account, "list", NULL);
	assert_int_equal(o.code, 0);
	assert_non_null(strstr(o.out, "acme "));
	assert_non_null(strstr(o.out, "disabled\n"));
	run_cli(&o, NULL, store_cli_account, "list", "--json", NULL);
	assert_int_equal(o.code, 0);
	assert_true(starts_with(o.out, "[{\"name\":\"acme\",\"plan\":\"gold\",\"hourly_limit\":2000,"
	                               "\"disabled\":false,\"created\":\"20"));
	assert_non_null(strstr(o.out, "{\"name\":\"beta\",\"plan\":\"premium\",\"hourly_limit\":3000,"
	                              "\"disabled\":true,"));
	run_cli(&o, NULL, store_cli_account, "enable", "beta", "--json", NULL);
	assert_string_equal(o.out, "{\"account\":\"beta\",\"status\":\"enabled\"}\n");

	/* domains */
	run_cli(&o, NULL, store_cli_account, "domain", "add", "acme", "Acme.Example", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "domain acme.example added to account acme\n");
	run_cli(&o, NULL, store_cli_account, "domain", "add", "acme", "b.acme.example", NULL);
	assert_int_equal(o.code, 0);
	run_cli(&o, NULL, store_cli_account, "domain", "add", "beta", "acme.example", NULL);
	assert_int_equal(o.code, 1);
	assert_string_equal(o.err, "sealmail: domain acme.example: already belongs to account acme\n");
	run_cli(&o, NULL, store_cli_account, "domain", "add", "nobody", "x.example", NULL);
	assert_int_equal(o.code, 1);
	assert_string_equal(o.err, "sealmail: account nobody: no such account\n");
	run_cli(&o, NULL, store_cli_account, "domain", "list", "acme", NULL);
	assert_string_equal(o.out, "acme.example\nb.acme.example\n");
	run_cli(&o, NULL, store_cli_account, "domain", "list", "acme", "--json", NULL);
	assert_string_equal(o.out, "[\"acme.example\",\"b.acme.example\"]\n");
	run_cli(&o, NULL, store_cli_account, "domain", "remove", "beta", "b.acme.example", NULL);
	assert_int_equal(o.code, 1);
	assert_string_equal(o.err, "sealmail: domain b.acme.example: not a domain of account beta\n");
	run_cli(&o, NULL, store_cli_account, "domain", "remove", "acme", "b.acme.example", NULL);
	assert_int_equal(o.code, 0);
	run_cli(&o, NULL, store_cli_account, "domain", "frob", "acme", NULL);
	assert_int_equal(o.code, EX_USAGE);

	/* logins: password from stdin (one line, newline stripped; CRLF too) */
	run_cli(&o, PW "\nnext line ignored\n", store_cli_login, "add", "Bob@Acme.Example", "acme",
	        NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "login bob@acme.example added (account acme)\n");
	{
		struct store *st = open_st(home);
		assert_int_equal(store_login_get(st, "bob@acme.example", &l), STORE_OK);
		assert_true(store_password_verify(l.pwhash, PW));
		store_close(st);
	}
	run_cli(&o, "pw\n", store_cli_login, "add", "bob@acme.example", "acme", NULL);
	assert_int_equal(o.code, 1);
	assert_string_equal(o.err, "sealmail: login bob@acme.example: already exists\n");
	run_cli(&o, "pw\n", store_cli_login, "add", "carol", "nobody", NULL);
	assert_int_equal(o.code, 1);
	assert_string_equal(o.err, "sealmail: account nobody: no such account\n");
	/* --generate: shown once on stdout, and it works */
	run_cli(&o, NULL, store_cli_login, "add", "app", "acme", "--generate", NULL);
	assert_int_equal(o.code, 0);
	const char *p = strstr(o.out, "password: ");
	assert_non_null(p);
	char gen[64];
	snprintf(gen, sizeof(gen), "%s", p + 10);
	gen[strcspn(gen, "\n")] = '\0';
	assert_int_equal(strlen(gen), 20);
	for (size_t i = 0; i < 20; i++)
		assert_true((gen[i] >= 'a' && gen[i] <= 'z') || (gen[i] >= 'A' && gen[i] <= 'Z') ||
		            (gen[i] >= '0' && gen[i] <= '9'));
	{
		struct store *st = open_st(home);
		assert_int_equal(store_login_get(st, "app", &l), STORE_OK);
		assert_true(store_password_verify(l.pwhash, gen));
		store_close(st);
	}
	run_cli(&o, "s3cond\r\n", store_cli_login, "passwd", "app", "--json", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "{\"login\":\"app\",\"status\":\"changed\"}\n");
	{
		struct store *st = open_st(home);
		assert_int_equal(store_login_get(st, "app", &l), STORE_OK);
		assert_true(store_password_verify(l.pwhash, "s3cond"));
		assert_false(store_password_verify(l.pwhash, gen));
		store_close(st);
	}
	run_cli(&o, NULL, store_cli_login, "passwd", "app", "--generate", "--json", NULL);
	assert_int_equal(o.code, 0);
	assert_non_null(strstr(o.out, "\"status\":\"changed\",\"password\":\""));
	run_cli(&o, "x\n", store_cli_login, "passwd", "nobody", NULL);
	assert_int_equal(o.code, 1);
	assert_string_equal(o.err, "sealmail: login nobody: no such login\n");
	run_cli(&o, NULL, store_cli_login, "list", NULL);
	char want[256];
	snprintf(want, sizeof(want), "%-40s acme\n%-40s acme\n", "app", "bob@acme.example");
	assert_string_equal(o.out, want);
	run_cli(&o, NULL, store_cli_login, "list", "beta", "--json", NULL);
	assert_string_equal(o.out, "[]\n");
	run_cli(&o, NULL, store_cli_login, "list", "nobody", "--json", NULL);
	assert_int_equal(o.code, 1);
	assert_string_equal(o.out, "");

	/* show and usage, with counts in the rate buckets */
	{
		struct store *st = open_st(home);
		int64_t now_min = (int64_t)time(NULL) / 60;
		assert_int_equal(store_rate_add(st, "acme", now_min - 10, 15), STORE_OK);
		assert_int_equal(store_rate_add(st, "acme", now_min, 5), STORE_OK);
		assert_int_equal(store_rate_add(st, "acme", now_min - 61, 500), STORE_OK); /* old */
		assert_int_equal(store_rate_add(st, "beta", now_min - 5, 3000), STORE_OK);
		store_close(st);
	}
	run_cli(&o, NULL, store_cli_account, "usage", "acme", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "account acme: 20 sent in the last hour, limit 2000 (plan gold), "
	                           "headroom 1980\n");
	run_cli(&o, NULL, store_cli_account, "usage", "acme", "--json", NULL);
	assert_string_equal(o.out, "{\"account\":\"acme\",\"plan\":\"gold\",\"sent\":20,"
	                           "\"limit\":2000,\"headroom\":1980,\"frees_in\":0}\n");
	run_cli(&o, NULL, store_cli_account, "usage", "beta", NULL);
	assert_int_equal(o.code, 0);
	assert_non_null(strstr(o.out, "3000 sent in the last hour, limit 3000 (plan premium), "
	                              "headroom 0; capacity frees up in "));
	run_cli(&o, NULL, store_cli_account, "usage", "nobody", NULL);
	assert_int_equal(o.code, 1);
	assert_string_equal(o.err, "sealmail: account nobody: no such account\n");
	run_cli(&o, NULL, store_cli_account, "show", "acme", NULL);
	assert_int_equal(o.code, 0);
	assert_non_null(strstr(o.out, "account:   acme\n"
	                              "plan:      gold (2000 recipients per hour)\n"
	                              "status:    enabled\n"
	                              "created:   "));
	assert_non_null(strstr(o.out, "domains:   acme.example\n"
	                              "logins:    app, bob@acme.example\n"
	                              "last hour: 20 sent, 1980 left\n"));
	run_cli(&o, NULL, store_cli_account, "show", "beta", "--json", NULL);
	assert_int_equal(o.code, 0);
	assert_true(starts_with(o.out, "{\"name\":\"beta\",\"plan\":\"premium\",\"hourly_limit\":3000,"
	                               "\"disabled\":false,\"created\":\"20"));
	assert_non_null(strstr(o.out, "\",\"domains\":[],\"logins\":[],\"usage\":{\"sent\":3000,"
	                              "\"limit\":3000,\"headroom\":0,\"frees_in\":"));

	/* remove */
	run_cli(&o, NULL, store_cli_login, "remove", "APP", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "login app removed\n");
	run_cli(&o, NULL, store_cli_login, "remove", "app", NULL);
	assert_int_equal(o.code, 1);
	assert_string_equal(o.err, "sealmail: login app: no such login\n");

	unsetenv("SEALMAIL_HOME");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_migrate_from_v1, setup_dir, teardown),
	    cmocka_unit_test_setup_teardown(test_plans, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_account_lifecycle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_account_list_reentry, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_account_domains, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_login_add_get_verify, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_login_passwd_remove, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rate_buckets, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cli, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
