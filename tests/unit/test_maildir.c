/* Unit tests for src/queue/maildir.c: delivery creates the directories, lands one complete
 * file in new/ (prefix + body, taken from an offset in a spool-like file), leaves nothing in
 * tmp/, and maildir_path maps addresses to safe paths and refuses traversal. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue/maildir.h"
#include "util/log.h"

struct fx {
	char dir[64];
};

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/sealmail-maildir-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* Only entry of dir (fails if there is not exactly one); returns the count. */
static int entries(const char *dir, char *only, size_t sz)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;
	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (only != NULL)
			snprintf(only, sz, "%s", de->d_name);
		n++;
	}
	closedir(d);
	return n;
}

/* A spool-like file: junk, then the body, then junk. */
static int make_source(struct fx *f, const unsigned char *body, size_t len, uint64_t *off)
{
	char p[128];
	snprintf(p, sizeof(p), "%s/source", f->dir);
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "HEADER-JUNK\n\n", 13), 13);
	assert_int_equal(write(fd, body, len), (ssize_t)len);
	assert_int_equal(write(fd, "\nEND trailer\n", 13), 13);
	*off = 13;
	return fd;
}

static unsigned char *read_file(const char *p, size_t *len)
{
	struct stat sb;
	int fd = open(p, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &sb), 0);
	unsigned char *b = malloc((size_t)sb.st_size + 1);
	assert_int_equal(read(fd, b, (size_t)sb.st_size), sb.st_size);
	close(fd);
	*len = (size_t)sb.st_size;
	return b;
}

static void deliver_and_check(struct fx *f, const char *prefix, size_t body_len)
{
	char root[256], p[1024], name[256], seen[256];
	unsigned char *body = malloc(body_len + 1);
	uint64_t off;
	size_t got_len;
	struct stat sb;

	for (size_t i = 0; i < body_len; i++)
		body[i] = (unsigned char)(i * 31 + 7);
	if (body_len >= 4)
		memcpy(body, "\0\r\n\r", 4);
	int src = make_source(f, body, body_len, &off);
	assert_int_equal(maildir_path(f->dir, "Bob.Smith@Example.ORG", root, sizeof(root)), 0);
	assert_int_equal(maildir_deliver(root, prefix, strlen(prefix), src, off, body_len, name),
	                 0);
	close(src);

	/* the directories exist, private */
	static const char *subs[] = {"", "tmp", "new", "cur"};
	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof(p), "%s%s", root, subs[i]);
		assert_int_equal(stat(p, &sb), 0);
		assert_true(S_ISDIR(sb.st_mode));
		assert_int_equal(sb.st_mode & 0777, 0700);
	}
	snprintf(p, sizeof(p), "%s/example.org", f->dir);
	assert_int_equal(stat(p, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);

	/* one file in new/, nothing left in tmp/, named as maildir wants */
	snprintf(p, sizeof(p), "%stmp", root);
	assert_int_equal(entries(p, NULL, 0), 0);
	snprintf(p, sizeof(p), "%snew", root);
	assert_int_equal(entries(p, seen, sizeof(seen)), 1);
	assert_string_equal(seen, name);
	char want_size[64];
	snprintf(want_size, sizeof(want_size), ",S=%zu", strlen(prefix) + body_len);
	assert_non_null(strstr(name, want_size));
	assert_non_null(strstr(name, ".M"));
	assert_null(strchr(name, '/'));
	assert_null(strchr(name, ':'));

	snprintf(p, sizeof(p), "%snew/%s", root, name);
	assert_int_equal(stat(p, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	unsigned char *got = read_file(p, &got_len);
	assert_int_equal(got_len, strlen(prefix) + body_len);
	assert_memory_equal(got, prefix, strlen(prefix));
	if (body_len > 0)
		assert_memory_equal(got + strlen(prefix), body, body_len);
	free(got);
	free(body);
}

static void test_deliver_creates_dirs(void **state)
{
	deliver_and_check(*state, "Return-Path: <a@b.example>\r\nDelivered-To: bob@example.org\r\n",
	                  200);
}

static void test_deliver_large(void **state)
{
	deliver_and_check(*state, "X: y\r\n", 300001); /* several 64 KiB buffers */
}

static void test_deliver_empty_prefix_and_body(void **state)
{
	deliver_and_check(*state, "", 0);
}

static void test_deliver_twice_distinct(void **state)
{
	struct fx *f = *state;
	char root[256], a[256], b[256], p[512];
	uint64_t off;
	int src = make_source(f, (const unsigned char *)"body", 4, &off);

	snprintf(root, sizeof(root), "%s/deep/er/than/that", f->dir);
	assert_int_equal(maildir_deliver(root, "", 0, src, off, 4, a), 0);
	assert_int_equal(maildir_deliver(root, "", 0, src, off, 4, b), 0);
	assert_int_equal(maildir_deliver(root, "", 0, src, off, 4, NULL), 0);
	assert_string_not_equal(a, b);
	snprintf(p, sizeof(p), "%s/new", root);
	assert_int_equal(entries(p, NULL, 0), 3);
	close(src);
}

static void test_deliver_short_source_fails_clean(void **state)
{
	struct fx *f = *state;
	char root[256], p[512];
	uint64_t off;
	int src = make_source(f, (const unsigned char *)"body", 4, &off);

	snprintf(root, sizeof(root), "%s/m", f->dir);
	errno = 0;
	assert_int_equal(maildir_deliver(root, "P", 1, src, off, 1000, NULL), -1);
	assert_int_equal(errno, EIO);
	snprintf(p, sizeof(p), "%s/tmp", root);
	assert_int_equal(entries(p, NULL, 0), 0);
	snprintf(p, sizeof(p), "%s/new", root);
	assert_int_equal(entries(p, NULL, 0), 0);
	close(src);

	/* a bad fd */
	assert_int_equal(maildir_deliver(root, "P", 1, -1, 0, 10, NULL), -1);
	assert_int_equal(entries(p, NULL, 0), 0);

	/* the root can't be made: a file is in the way */
	snprintf(p, sizeof(p), "%s/file", f->dir);
	int fd = open(p, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	snprintf(root, sizeof(root), "%s/file/box", f->dir);
	src = make_source(f, (const unsigned char *)"body", 4, &off);
	errno = 0;
	assert_int_equal(maildir_deliver(root, "", 0, src, off, 4, NULL), -1);
	assert_int_equal(errno, ENOTDIR);
	close(src);
}

static void test_path_mapping(void **state)
{
	char out[512];
	(void)state;
	static const struct {
		const char *root, *mbox, *want;
	} ok[] = {
	    {"/var/mail", "User@Example.COM", "/var/mail/example.com/user/"},
	    {"/var/mail/", "a.b+tag_x-y@d.example", "/var/mail/d.example/a.b+tag_x-y/"},
	    {"/", "u@d", "/d/u/"},
	    {"rel", "u@d", "rel/d/u/"},
	    {"/m", "a b@c", "/m/c/a%20b/"},
	    {"/m", "\"q@x\"@d", "/m/d/%22q%40x%22/"},
	    {"/m", "p%q@d", "/m/d/p%25q/"},
	    {"/m", "j\xc3\xb6rg@d", "/m/d/j%C3%B6rg/"},
	    {"/m", "...@d", "/m/d/.../"},
	    {"/m", ".hidden@d", "/m/d/.hidden/"},
	    {"/m", "a\\b@d", "/m/d/a%5Cb/"},
	    {"/m", "u@[192.0.2.1]", "/m/%5B192.0.2.1%5D/u/"},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		if (maildir_path(ok[i].root, ok[i].mbox, out, sizeof(out)) != 0)
			fail_msg("case %zu refused", i);
		assert_string_equal(out, ok[i].want);
	}

	static const char *bad[] = {
	    "../x@y", "a/b@c", "x@..", "x@.", ".@y",    "..@y",  "x@a/b",
	    "x@",     "@y",    "noat", "",    "a\nb@c", "a@b\r", "x@../../etc",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		if (maildir_path("/m", bad[i], out, sizeof(out)) != -1)
			fail_msg("bad case %zu accepted: %s", i, out);
		assert_int_equal(errno, EINVAL);
	}
	assert_int_equal(maildir_path("", "u@d", out, sizeof(out)), -1);

	/* too small, too long */
	assert_int_equal(maildir_path("/m", "u@d", out, 7), -1); /* "/m/d/u/" + NUL = 8 */
	assert_int_equal(maildir_path("/m", "u@d", out, 8), 0);
	char longdom[300];
	memset(longdom, '%', sizeof(longdom));
	longdom[0] = 'u';
	longdom[1] = '@';
	longdom[sizeof(longdom) - 1] = '\0';
	errno = 0;
	assert_int_equal(maildir_path("/m", longdom, out, sizeof(out)), -1);
	assert_int_equal(errno, ENAMETOOLONG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_deliver_creates_dirs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deliver_large, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deliver_empty_prefix_and_body, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deliver_twice_distinct, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deliver_short_source_fails_clean, setup, teardown),
	    cmocka_unit_test(test_path_mapping),
	};
	log_init("test", false, false);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
