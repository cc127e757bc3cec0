/* Unit tests for src/store/store.c and src/store/store_cli.c: domains, mailboxes, aliases,
 * RCPT resolution, schema/seed behaviour and the `sealmail domain|mailbox` commands.
 * Each test gets its own temporary data directory (removed afterwards); no network. */
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
#include <unistd.h>

#include <sqlite3.h>

#include "conf/conf.h"
#include "store/store.h"

#define PM "postmaster@localhost"

struct fx {
	char dir[64];
	struct store *st;
};

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static struct store *open_st(const char *dir, bool seed)
{
	char err[256] = "";
	struct store *st = store_open(dir, seed, err, sizeof(err));
	if (st == NULL)
		fail_msg("store_open: %s", err);
	return st;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/sealmail-test-store-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->st = open_st(f->dir, true);
	*state = f;
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
	char buf[2048];
	int n;
};

static void collect_domain(void *arg, const char *name)
{
	struct names *nm = arg;
	size_t l = strlen(nm->buf);
	snprintf(nm->buf + l, sizeof(nm->buf) - l, "%s%s", nm->n++ ? "," : "", name);
}

static void collect_mailbox(void *arg, const char *addr, const char *target)
{
	struct names *nm = arg;
	size_t l = strlen(nm->buf);
	snprintf(nm->buf + l, sizeof(nm->buf) - l, "%s%s%s%s", nm->n++ ? "," : "", addr,
	         target[0] ? ">" : "", target);
}

static const char *domains(struct store *st)
{
	static struct names nm;
	memset(&nm, 0, sizeof(nm));
	assert_int_equal(store_domain_list(st, collect_domain, &nm), STORE_OK);
	return nm.buf;
}

static const char *mailboxes(struct store *st, const char *domain)
{
	static struct names nm;
	memset(&nm, 0, sizeof(nm));
	assert_int_equal(store_mailbox_list(st, domain, collect_mailbox, &nm), STORE_OK);
	return nm.buf;
}

static enum store_res resolve(struct store *st, const char *addr, const char *pm, char *out)
{
	return store_resolve(st, addr, pm, out, STORE_ADDR_MAX);
}

/* ---- domains ---- */

static void test_domain_add_list_remove(void **state)
{
	struct fx *f = *state;
	assert_string_equal(domains(f->st), "localhost");
	assert_int_equal(store_domain_add(f->st, "Example.COM"), STORE_OK);
	assert_int_equal(store_domain_add(f->st, "b.example.org"), STORE_OK);
	assert_int_equal(store_domain_add(f->st, "a.example.org"), STORE_OK);
	assert_string_equal(domains(f->st), "a.example.org,b.example.org,example.com,localhost");
	assert_true(store_domain_is_local(f->st, "example.com"));
	assert_true(store_domain_is_local(f->st, "EXAMPLE.com"));
	assert_false(store_domain_is_local(f->st, "example.net"));
	assert_false(store_domain_is_local(f->st, ""));
	assert_false(store_domain_is_local(f->st, NULL));
	assert_int_equal(store_domain_remove(f->st, "EXAMPLE.COM"), STORE_OK);
	assert_false(store_domain_is_local(f->st, "example.com"));
	assert_int_equal(store_domain_remove(f->st, "example.com"), STORE_NOTFOUND);
	assert_string_equal(domains(f->st), "a.example.org,b.example.org,localhost");
}

static void test_domain_duplicate(void **state)
{
	struct fx *f = *state;
	assert_int_equal(store_domain_add(f->st, "example.com"), STORE_OK);
	assert_int_equal(store_domain_add(f->st, "example.com"), STORE_EXISTS);
	assert_int_equal(store_domain_add(f->st, "EXAMPLE.com"), STORE_EXISTS);
	assert_int_equal(store_domain_add(f->st, "localhost"), STORE_EXISTS);
}

static void test_domain_invalid_names(void **state)
{
	struct fx *f = *state;
	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	const char *bad[] = {
	    "",
	    "-example.com",
	    "example-.com",
	    "exa..mple.com",
	    ".example.com",
	    "exa mple.com",
	    "example.com\n",
	    "ex_ample.com",
	    "[192.0.2.1]",
	    "user@example.com",
	    "ex\xc3\xa4mple.com",
	    "x'; DROP TABLE domains; --",
	    longname,
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (store_domain_add(f->st, bad[i]) != STORE_INVALID)
			fail_msg("accepted bad domain #%zu \"%s\"", i, bad[i]);
		assert_int_equal(store_domain_remove(f->st, bad[i]), STORE_INVALID);
		assert_false(store_domain_is_local(f->st, bad[i]));
	}
	assert_int_equal(store_domain_add(f->st, NULL), STORE_INVALID);
	assert_int_equal(store_domain_add(NULL, "example.com"), STORE_ERR);
	assert_string_equal(domains(f->st), "localhost");
}

/* ---- mailboxes ---- */

static void test_mailbox_add_alias_remove(void **state)
{
	struct fx *f = *state;
	char t[STORE_ADDR_MAX];
	assert_int_equal(store_domain_add(f->st, "example.com"), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "Bob@Example.COM", NULL), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "alice@example.com", ""), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "info@example.com", "BOB@example.com"), STORE_OK);
	assert_string_equal(mailboxes(f->st, NULL),
	                    "alice@example.com,bob@example.com,info@example.com>bob@example.com");
	assert_int_equal(store_mailbox_get(f->st, "INFO@example.com", t, sizeof(t)), STORE_OK);
	assert_string_equal(t, "bob@example.com");
	assert_int_equal(store_mailbox_get(f->st, "bob@example.com", t, sizeof(t)), STORE_OK);
	assert_string_equal(t, "");
	assert_int_equal(store_mailbox_get(f->st, "carol@example.com", t, sizeof(t)),
	                 STORE_NOTFOUND);
	assert_int_equal(store_mailbox_get(f->st, "info@example.com", t, 4), STORE_ERR);

	assert_int_equal(store_mailbox_add(f->st, "bob@EXAMPLE.com", NULL), STORE_EXISTS);
	assert_int_equal(store_mailbox_add(f->st, "info@example.com", "alice@example.com"),
	                 STORE_EXISTS);

	assert_int_equal(store_mailbox_remove(f->st, "BOB@example.com"), STORE_OK);
	assert_int_equal(store_mailbox_remove(f->st, "bob@example.com"), STORE_NOTFOUND);
	assert_int_equal(store_mailbox_remove(f->st, "not an address"), STORE_INVALID);
	assert_string_equal(mailboxes(f->st, "example.com"),
	                    "alice@example.com,info@example.com>bob@example.com");
	assert_string_equal(mailboxes(f->st, "localhost"), "");
	struct names nm;
	assert_int_equal(store_mailbox_list(f->st, "example.net", collect_mailbox, &nm),
	                 STORE_NOTFOUND);
	assert_int_equal(store_mailbox_list(f->st, "bad..name", collect_mailbox, &nm),
	                 STORE_INVALID);
}

static void test_mailbox_add_rules(void **state)
{
	struct fx *f = *state;
	assert_int_equal(store_domain_add(f->st, "example.com"), STORE_OK);
	/* domain must be local */
	assert_int_equal(store_mailbox_add(f->st, "bob@example.net", NULL), STORE_NOTFOUND);
	/* alias target must be a valid address in a local domain; it need not exist yet */
	assert_int_equal(store_mailbox_add(f->st, "a@example.com", "x@example.net"),
	                 STORE_NOTFOUND);
	assert_int_equal(store_mailbox_add(f->st, "b@example.com", "not an address"),
	                 STORE_INVALID);
	assert_int_equal(store_mailbox_add(f->st, "c@example.com", "postmaster"), STORE_INVALID);
	assert_int_equal(store_mailbox_add(f->st, "d@example.com", "D@Example.com"), STORE_INVALID);
	assert_int_equal(store_mailbox_add(f->st, "e@example.com", "later@example.com"), STORE_OK);
	/* malformed addresses */
	const char *bad[] = {"",
	                     "bob",
	                     "postmaster",
	                     "@example.com",
	                     "bob@",
	                     "bob@@example.com",
	                     "bo b@example.com",
	                     "bob.@example.com",
	                     "bob@[192.0.2.1]",
	                     "<>",
	                     "bob@example.com\r\nRCPT TO:<x@y>"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (store_mailbox_add(f->st, bad[i], NULL) != STORE_INVALID)
			fail_msg("accepted bad address #%zu", i);
	assert_int_equal(store_mailbox_add(f->st, NULL, NULL), STORE_INVALID);
	/* SQL metacharacters are just bytes (bound parameters) */
	assert_int_equal(store_mailbox_add(f->st, "o'neil'--@example.com", NULL), STORE_OK);
	char out[STORE_ADDR_MAX];
	assert_int_equal(resolve(f->st, "O'Neil'--@example.com", PM, out), STORE_OK);
	assert_string_equal(out, "o'neil'--@example.com");
	/* RFC 6531 local parts are kept as sent (only ASCII is case-folded) */
	assert_int_equal(store_mailbox_add(f->st, "J\xc3\xb6rg@example.com", NULL), STORE_OK);
	assert_int_equal(resolve(f->st, "j\xc3\xb6rg@EXAMPLE.com", PM, out), STORE_OK);
	assert_string_equal(out, "j\xc3\xb6rg@example.com");
	assert_int_equal(store_mailbox_add(f->st, "bad\xc3@example.com", NULL), STORE_INVALID);
	assert_string_equal(
	    mailboxes(f->st, NULL),
	    "e@example.com>later@example.com,j\xc3\xb6rg@example.com,o'neil'--@example.com");
}

static void test_domain_remove_cascades(void **state)
{
	struct fx *f = *state;
	assert_int_equal(store_domain_add(f->st, "example.com"), STORE_OK);
	assert_int_equal(store_domain_add(f->st, "example.org"), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "bob@example.com", NULL), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "info@example.com", "bob@example.com"), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "bob@example.org", NULL), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "fwd@example.org", "bob@example.com"), STORE_OK);
	assert_int_equal(store_domain_remove(f->st, "example.com"), STORE_OK);
	assert_string_equal(mailboxes(f->st, NULL),
	                    "bob@example.org,fwd@example.org>bob@example.com");
	char out[STORE_ADDR_MAX];
	/* the alias into the removed domain is now a dead end */
	assert_int_equal(resolve(f->st, "fwd@example.org", PM, out), STORE_NOTFOUND);
	assert_int_equal(resolve(f->st, "bob@example.com", PM, out), STORE_INVALID);
	/* adding the domain back does not resurrect its mailboxes */
	assert_int_equal(store_domain_add(f->st, "example.com"), STORE_OK);
	assert_string_equal(mailboxes(f->st, "example.com"), "");
}

/* ---- resolution ---- */

static void test_resolve_case_insensitive(void **state)
{
	struct fx *f = *state;
	char out[STORE_ADDR_MAX];
	assert_int_equal(store_domain_add(f->st, "example.com"), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "Bob@example.com", NULL), STORE_OK);
	const char *forms[] = {"bob@example.com", "BOB@EXAMPLE.COM", "bOb@Example.Com",
	                       "\"bob\"@example.com", "\"B\\ob\"@example.com"};
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		memset(out, 'x', sizeof(out));
		if (resolve(f->st, forms[i], PM, out) != STORE_OK)
			fail_msg("did not resolve \"%s\"", forms[i]);
		assert_string_equal(out, "bob@example.com");
	}
}

static void test_resolve_postmaster(void **state)
{
	struct fx *f = *state;
	char out[STORE_ADDR_MAX];
	assert_int_equal(store_domain_add(f->st, "example.com"), STORE_OK);
	assert_int_equal(store_domain_add(f->st, "example.org"), STORE_OK);
	/* no rows at all: postmaster of every local domain, and bare postmaster, reach PM */
	const char *forms[] = {"postmaster@example.com",
	                       "PostMaster@EXAMPLE.org",
	                       "postmaster@localhost",
	                       "postmaster",
	                       "Postmaster",
	                       "POSTMASTER"};
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		if (resolve(f->st, forms[i], "Admin@Example.com", out) != STORE_OK)
			fail_msg("postmaster form \"%s\" not resolved", forms[i]);
		assert_string_equal(out, "admin@example.com");
	}
	/* not for a domain that is not ours */
	assert_int_equal(resolve(f->st, "postmaster@example.net", PM, out), STORE_INVALID);
	/* the configured mailbox is followed through an alias */
	assert_int_equal(store_mailbox_add(f->st, "admin@example.com", "ops@example.com"),
	                 STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "ops@example.com", NULL), STORE_OK);
	assert_int_equal(resolve(f->st, "postmaster", "admin@example.com", out), STORE_OK);
	assert_string_equal(out, "ops@example.com");
	/* a broken chain from the postmaster mailbox still delivers to it */
	assert_int_equal(store_mailbox_remove(f->st, "ops@example.com"), STORE_OK);
	assert_int_equal(resolve(f->st, "postmaster@example.org", "admin@example.com", out),
	                 STORE_OK);
	assert_string_equal(out, "admin@example.com");
	/* a row for postmaster@domain wins */
	assert_int_equal(
	    store_mailbox_add(f->st, "postmaster@example.org", "hostmaster@example.org"), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "hostmaster@example.org", NULL), STORE_OK);
	assert_int_equal(resolve(f->st, "POSTMASTER@example.org", PM, out), STORE_OK);
	assert_string_equal(out, "hostmaster@example.org");
	/* without a configured mailbox: postmaster@domain is its own mailbox, bare has none */
	assert_int_equal(resolve(f->st, "postmaster@example.com", NULL, out), STORE_OK);
	assert_string_equal(out, "postmaster@example.com");
	assert_int_equal(resolve(f->st, "postmaster@example.com", "", out), STORE_OK);
	assert_string_equal(out, "postmaster@example.com");
	assert_int_equal(resolve(f->st, "postmaster", NULL, out), STORE_NOTFOUND);
	/* other bare local parts are not addresses */
	assert_int_equal(resolve(f->st, "bob", PM, out), STORE_INVALID);
}

static void test_resolve_alias_chain(void **state)
{
	struct fx *f = *state;
	char out[STORE_ADDR_MAX], a[64], b[64];
	assert_int_equal(store_domain_add(f->st, "example.com"), STORE_OK);
	assert_int_equal(store_domain_add(f->st, "example.org"), STORE_OK);
	/* a0 -> a1 -> ... -> a8 (mailbox): 8 hops from a0, alternating domains */
	for (int i = 0; i < 8; i++) {
		snprintf(a, sizeof(a), "a%d@example.%s", i, i % 2 ? "org" : "com");
		snprintf(b, sizeof(b), "a%d@example.%s", i + 1, (i + 1) % 2 ? "org" : "com");
		assert_int_equal(store_mailbox_add(f->st, a, b), STORE_OK);
	}
	assert_int_equal(store_mailbox_add(f->st, "a8@example.com", NULL), STORE_OK);
	assert_int_equal(resolve(f->st, "A0@example.com", PM, out), STORE_OK);
	assert_string_equal(out, "a8@example.com");
	assert_int_equal(resolve(f->st, "a5@example.org", PM, out), STORE_OK);
	assert_string_equal(out, "a8@example.com");
	/* one more hop is too many */
	assert_int_equal(store_mailbox_add(f->st, "top@example.com", "a0@example.com"), STORE_OK);
	assert_int_equal(resolve(f->st, "top@example.com", PM, out), STORE_NOTFOUND);
	/* an alias whose target has no row */
	assert_int_equal(store_mailbox_add(f->st, "dangling@example.com", "ghost@example.com"),
	                 STORE_OK);
	assert_int_equal(resolve(f->st, "dangling@example.com", PM, out), STORE_NOTFOUND);
}

static void test_resolve_alias_loop_stops(void **state)
{
	struct fx *f = *state;
	char out[STORE_ADDR_MAX];
	assert_int_equal(store_domain_add(f->st, "example.com"), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "a@example.com", "b@example.com"), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "b@example.com", "c@example.com"), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "c@example.com", "A@example.com"), STORE_OK);
	assert_int_equal(resolve(f->st, "a@example.com", PM, out), STORE_NOTFOUND);
	assert_int_equal(resolve(f->st, "c@example.com", PM, out), STORE_NOTFOUND);
	/* a loop through postmaster still ends at the configured postmaster mailbox */
	assert_int_equal(store_mailbox_add(f->st, "postmaster@example.com", "a@example.com"),
	                 STORE_OK);
	assert_int_equal(resolve(f->st, "postmaster@example.com", "root@localhost", out), STORE_OK);
	assert_string_equal(out, "root@localhost");
	assert_int_equal(resolve(f->st, "postmaster@example.com", NULL, out), STORE_OK);
	assert_string_equal(out, "postmaster@example.com");
	/* an alias to a postmaster address with no row reaches the postmaster mailbox */
	assert_int_equal(store_mailbox_add(f->st, "abuse@example.com", "postmaster@localhost"),
	                 STORE_OK);
	assert_int_equal(resolve(f->st, "abuse@example.com", "root@localhost", out), STORE_OK);
	assert_string_equal(out, "root@localhost");
	/* and the postmaster mailbox's own loop ends at it */
	assert_int_equal(store_mailbox_add(f->st, "root@localhost", "postmaster@example.com"),
	                 STORE_OK);
	assert_int_equal(resolve(f->st, "postmaster", "root@localhost", out), STORE_OK);
	assert_string_equal(out, "root@localhost");
}

static void test_resolve_unknown_and_nonlocal(void **state)
{
	struct fx *f = *state;
	char out[STORE_ADDR_MAX];
	assert_int_equal(store_domain_add(f->st, "example.com"), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "bob@example.com", NULL), STORE_OK);
	assert_int_equal(resolve(f->st, "carol@example.com", PM, out), STORE_NOTFOUND);
	assert_int_equal(resolve(f->st, "bob@example.net", PM, out), STORE_INVALID);
	assert_int_equal(resolve(f->st, "bob@sub.example.com", PM, out), STORE_INVALID);
	assert_int_equal(resolve(f->st, "bob@[192.0.2.1]", PM, out), STORE_INVALID);
	assert_int_equal(resolve(f->st, "", PM, out), STORE_INVALID);
	assert_int_equal(resolve(f->st, NULL, PM, out), STORE_INVALID);
	assert_int_equal(resolve(f->st, "<>", PM, out), STORE_INVALID);
	assert_int_equal(resolve(f->st, "bob@example.com\n", PM, out), STORE_INVALID);
	/* output buffer too small */
	assert_int_equal(store_resolve(f->st, "bob@example.com", PM, out, 5), STORE_ERR);
	assert_int_equal(store_resolve(NULL, "bob@example.com", PM, out, sizeof(out)), STORE_ERR);
}

static void test_addr_normalize(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"Bob@Example.COM", "bob@example.com"},
	    {"\"bob\"@example.com", "bob@example.com"},
	    {"\"b\\ob\"@example.com", "bob@example.com"},
	    {"\"Bob Smith\"@example.com", "\"bob smith\"@example.com"},
	    {"\"a\\\"b\"@example.com", "\"a\\\"b\"@example.com"},
	    {"\"a..b\"@example.com", "\"a..b\"@example.com"},
	    {"first.last+tag@example.com", "first.last+tag@example.com"},
	    {"postmaster", NULL},
	    {"bob", NULL},
	    {"bob@[192.0.2.1]", NULL},
	    {"", NULL},
	    {"a@b@example.com", NULL},
	};
	char out[STORE_ADDR_MAX];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum store_res r = store_addr_normalize(cases[i].in, out, sizeof(out));
		if (cases[i].out == NULL) {
			if (r != STORE_INVALID)
				fail_msg("\"%s\" accepted as \"%s\"", cases[i].in, out);
		} else {
			if (r != STORE_OK)
				fail_msg("\"%s\" rejected", cases[i].in);
			assert_string_equal(out, cases[i].out);
		}
	}
	assert_int_equal(store_addr_normalize("bob@example.com", out, 8), STORE_INVALID);
}

/* ---- persistence, schema, seeding ---- */

static void test_reopen_keeps_data(void **state)
{
	struct fx *f = *state;
	char out[STORE_ADDR_MAX];
	assert_int_equal(store_domain_add(f->st, "example.com"), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "bob@example.com", NULL), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "info@example.com", "bob@example.com"), STORE_OK);
	store_close(f->st);
	f->st = open_st(f->dir, true);
	assert_string_equal(domains(f->st), "example.com,localhost");
	assert_int_equal(resolve(f->st, "info@example.com", PM, out), STORE_OK);
	assert_string_equal(out, "bob@example.com");
	/* a second connection (another process) sees the same data, and cascades still work */
	struct store *st2 = open_st(f->dir, false);
	assert_string_equal(mailboxes(st2, NULL),
	                    "bob@example.com,info@example.com>bob@example.com");
	assert_int_equal(store_domain_remove(st2, "example.com"), STORE_OK);
	store_close(st2);
	assert_string_equal(mailboxes(f->st, NULL), "");
	/* the database file is private */
	char path[128];
	struct stat sb;
	snprintf(path, sizeof(path), "%s/sealmail.db", f->dir);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
}

static void test_seed_localhost_only_new(void **state)
{
	struct fx *f = *state;
	/* removed by the admin: a reopen with seeding must not bring it back */
	assert_int_equal(store_domain_remove(f->st, "localhost"), STORE_OK);
	store_close(f->st);
	f->st = open_st(f->dir, true);
	assert_string_equal(domains(f->st), "");

	/* a new database without seeding starts empty */
	char dir2[128];
	snprintf(dir2, sizeof(dir2), "%s/other", f->dir);
	assert_int_equal(mkdir(dir2, 0700), 0);
	struct store *st2 = open_st(dir2, false);
	assert_string_equal(domains(st2), "");
	store_close(st2);
	st2 = open_st(dir2, true); /* not new any more */
	assert_string_equal(domains(st2), "");
	store_close(st2);
}

static void test_schema_version(void **state)
{
	struct fx *f = *state;
	char path[128], err[256];
	sqlite3 *db;
	sqlite3_stmt *s;
	snprintf(path, sizeof(path), "%s/sealmail.db", f->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(s, 0), 2); /* 2: accounts, plans, logins, rate */
	sqlite3_finalize(s);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	/* a database from a newer sealmail is refused, not damaged */
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	store_close(f->st);
	f->st = store_open(f->dir, true, err, sizeof(err));
	assert_null(f->st);
	assert_non_null(strstr(err, "newer"));
	/* missing directory */
	assert_null(store_open("/nonexistent/sealmail-test", true, err, sizeof(err)));
	assert_non_null(strstr(err, "/nonexistent/sealmail-test"));
	assert_null(store_open("", true, err, sizeof(err)));
	assert_null(store_open(NULL, true, NULL, 0));
	store_close(NULL);
}

struct reentry {
	struct store *st;
	int calls;
	enum store_res inner_same;
	struct names inner_other;
};

static void reenter_domain(void *arg, const char *name)
{
	struct reentry *r = arg;
	r->calls++;
	r->inner_same = store_domain_list(r->st, reenter_domain, r);
	/* another statement while this one is stepping is fine */
	if (store_mailbox_list(r->st, name, collect_mailbox, &r->inner_other) != STORE_OK)
		r->inner_same = STORE_OK; /* make the test fail */
}

static void test_list_reentry_refused(void **state)
{
	struct fx *f = *state;
	struct reentry r;
	memset(&r, 0, sizeof(r));
	r.st = f->st;
	assert_int_equal(store_domain_add(f->st, "example.com"), STORE_OK);
	assert_int_equal(store_mailbox_add(f->st, "bob@example.com", NULL), STORE_OK);
	assert_int_equal(store_domain_list(f->st, reenter_domain, &r), STORE_OK);
	assert_int_equal(r.calls, 2); /* example.com, localhost: no endless restart */
	assert_int_equal(r.inner_same, STORE_ERR);
	assert_string_equal(r.inner_other.buf, "bob@example.com");
	/* and the guard is released afterwards */
	assert_string_equal(domains(f->st), "example.com,localhost");
}

/* ---- CLI ---- */

struct cli_out {
	int code;
	char out[4096];
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

/* Runs store_cli_<which> with argv (NULL-terminated) capturing stdout and stderr. */
static void run_cli(struct cli_out *o, int (*fn)(int, char **), ...)
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

	char p1[] = "/tmp/sealmail-test-out-XXXXXX", p2[] = "/tmp/sealmail-test-err-XXXXXX";
	int fo = mkstemp(p1), fe = mkstemp(p2);
	assert_true(fo >= 0 && fe >= 0);
	unlink(p1);
	unlink(p2);
	fflush(stdout);
	fflush(stderr);
	int so = dup(1), se = dup(2);
	dup2(fo, 1);
	dup2(fe, 2);
	o->code = fn(argc, argv);
	fflush(stdout);
	fflush(stderr);
	dup2(so, 1);
	dup2(se, 2);
	close(so);
	close(se);
	read_all(fo, o->out, sizeof(o->out));
	read_all(fe, o->err, sizeof(o->err));
	close(fo);
	close(fe);
}

static void test_cli(void **state)
{
	struct fx *f = *state;
	struct cli_out o;
	char home[128], conf_path[160];
	struct stat sb;

	if (access(CONF_DEFAULT_PATH, F_OK) == 0)
		skip(); /* a system config would be picked instead of the embedded defaults */
	snprintf(home, sizeof(home), "%s/cli/data", f->dir);
	setenv("SEALMAIL_HOME", home, 1);
	unsetenv("SEALMAIL_CONF");

	/* usage errors never touch the disk */
	run_cli(&o, store_cli_domain, NULL);
	assert_int_equal(o.code, EX_USAGE);
	run_cli(&o, store_cli_domain, "frob", NULL);
	assert_int_equal(o.code, EX_USAGE);
	run_cli(&o, store_cli_domain, "add", NULL);
	assert_int_equal(o.code, EX_USAGE);
	run_cli(&o, store_cli_domain, "add", "a.example", "b.example", NULL);
	assert_int_equal(o.code, EX_USAGE);
	run_cli(&o, store_cli_domain, "add", "a.example", "--bogus", NULL);
	assert_int_equal(o.code, EX_USAGE);
	run_cli(&o, store_cli_domain, "add", "-c", NULL);
	assert_int_equal(o.code, EX_USAGE);
	run_cli(&o, store_cli_domain, "add", "bad..name", NULL);
	assert_int_equal(o.code, EX_DATAERR);
	assert_string_equal(o.err, "sealmail: domain bad..name: not a valid domain name\n");
	run_cli(&o, store_cli_mailbox, "list", "--alias", "x@y.example", NULL);
	assert_int_equal(o.code, EX_USAGE);
	assert_int_equal(stat(home, &sb), -1);

	/* first use creates the data directory (0700) and seeds localhost */
	run_cli(&o, store_cli_domain, "add", "Example.COM", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "domain example.com added\n");
	assert_int_equal(stat(home, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 0777, 0700);

	run_cli(&o, store_cli_domain, "add", "example.com", NULL);
	assert_int_equal(o.code, 1);
	assert_non_null(strstr(o.err, "sealmail: domain example.com: already exists"));
	run_cli(&o, store_cli_domain, "list", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "example.com\nlocalhost\n");
	run_cli(&o, store_cli_domain, "list", "--json", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "[\"example.com\",\"localhost\"]\n");

	run_cli(&o, store_cli_mailbox, "add", "Bob@example.com", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "mailbox bob@example.com added\n");
	run_cli(&o, store_cli_mailbox, "add", "--alias", "bob@example.com", "info@example.com",
	        NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "alias info@example.com -> bob@example.com added\n");
	run_cli(&o, store_cli_mailbox, "add", "\"Odd \\\"one\"@example.com", NULL);
	assert_int_equal(o.code, 0);
	run_cli(&o, store_cli_mailbox, "add", "bob@example.com", NULL);
	assert_int_equal(o.code, 1);
	assert_non_null(strstr(o.err, "already exists"));
	run_cli(&o, store_cli_mailbox, "add", "x@nowhere.example", NULL);
	assert_int_equal(o.code, 1);
	assert_non_null(strstr(o.err, "domain nowhere.example is not local"));
	run_cli(&o, store_cli_mailbox, "add", "y@example.com", "--alias=z@nowhere.example", NULL);
	assert_int_equal(o.code, 1);
	assert_non_null(strstr(o.err, "is not local"));
	run_cli(&o, store_cli_mailbox, "add", "not-an-address", NULL);
	assert_int_equal(o.code, EX_DATAERR);
	run_cli(&o, store_cli_mailbox, "add", "me@example.com", "--alias", "ME@example.com", NULL);
	assert_int_equal(o.code, EX_DATAERR);

	run_cli(&o, store_cli_mailbox, "list", "example.com", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "\"odd \\\"one\"@example.com\nbob@example.com\n"
	                           "info@example.com -> bob@example.com\n");
	run_cli(&o, store_cli_mailbox, "list", "--json", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(
	    o.out, "[{\"address\":\"\\\"odd \\\\\\\"one\\\"@example.com\",\"alias_of\":null},"
	           "{\"address\":\"bob@example.com\",\"alias_of\":null},"
	           "{\"address\":\"info@example.com\",\"alias_of\":\"bob@example.com\"}]\n");
	run_cli(&o, store_cli_mailbox, "list", "localhost", "--json", NULL);
	assert_string_equal(o.out, "[]\n");
	run_cli(&o, store_cli_mailbox, "list", "nowhere.example", "--json", NULL);
	assert_int_equal(o.code, 1);
	assert_string_equal(o.out, "");

	run_cli(&o, store_cli_mailbox, "remove", "nobody@example.com", NULL);
	assert_int_equal(o.code, 1);
	assert_non_null(strstr(o.err, "not found"));
	run_cli(&o, store_cli_mailbox, "remove", "INFO@example.com", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "alias info@example.com removed\n");

	run_cli(&o, store_cli_domain, "remove", "example.com", "--json", NULL);
	assert_int_equal(o.code, 0);
	assert_string_equal(o.out, "{\"domain\":\"example.com\",\"status\":\"removed\"}\n");
	run_cli(&o, store_cli_domain, "remove", "example.com", NULL);
	assert_int_equal(o.code, 1);
	assert_non_null(strstr(o.err, "sealmail: domain example.com: not found"));

	/* a config file that cannot be read is a config error (-c anywhere) */
	snprintf(conf_path, sizeof(conf_path), "%s/missing.conf", f->dir);
	run_cli(&o, store_cli_domain, "list", "-c", conf_path, NULL);
	assert_int_equal(o.code, EX_CONFIG);
	run_cli(&o, store_cli_mailbox, "-c", conf_path, "list", NULL);
	assert_int_equal(o.code, EX_USAGE); /* argv[0] is the subcommand word */

	unsetenv("SEALMAIL_HOME");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_domain_add_list_remove, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_domain_duplicate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_domain_invalid_names, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mailbox_add_alias_remove, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mailbox_add_rules, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_domain_remove_cascades, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resolve_case_insensitive, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resolve_postmaster, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resolve_alias_chain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resolve_alias_loop_stops, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resolve_unknown_and_nonlocal, setup, teardown),
	    cmocka_unit_test(test_addr_normalize),
	    cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_seed_localhost_only_new, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_schema_version, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_list_reentry_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cli, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
