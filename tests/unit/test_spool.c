/* Unit tests for src/msg/spool.c: round trips, group commit, corrupt and torn files, crash
 * leftovers, per-recipient state, queue ids and recovery. Each test works in its own
 * mkdtemp directory under /tmp. Runs in the test binary only. */
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
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "msg/spool.h"
#include "smtp/parse.h"
#include "util/log.h"

struct fx {
	char dir[64];
	char spool_dir[128];
	struct spool *sp;
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
	snprintf(f->dir, sizeof(f->dir), "/tmp/sealmail-spool-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->spool_dir, sizeof(f->spool_dir), "%s/spool", f->dir);
	f->sp = spool_open(f->dir);
	if (f->sp == NULL)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	spool_close(f->sp);
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void fill_env(struct spool_env *env, int nrcpts)
{
	memset(env, 0, sizeof(*env));
	env->arrival = 1700000000;
	snprintf(env->from, sizeof(env->from), "alice@example.org");
	snprintf(env->helo, sizeof(env->helo), "mx.example.org");
	snprintf(env->client_ip, sizeof(env->client_ip), "192.0.2.1");
	snprintf(env->listener, sizeof(env->listener), "mx");
	snprintf(env->tls, sizeof(env->tls), "TLSv1.3 TLS_AES_256_GCM_SHA384");
	env->body_type = SMTP_BODY_8BITMIME;
	env->ret = SMTP_RET_HDRS;
	env->rcpts = calloc((size_t)nrcpts, sizeof(*env->rcpts));
	env->nrcpts = nrcpts;
	for (int i = 0; i < nrcpts; i++) {
		snprintf(env->rcpts[i].addr, sizeof(env->rcpts[i].addr), "user%d@example.net", i);
		if (i % 2 == 0)
			snprintf(env->rcpts[i].mailbox, sizeof(env->rcpts[i].mailbox),
			         "user%d@example.net", i);
		env->rcpts[i].notify = (unsigned)(i % 16);
	}
}

static void free_env(struct spool_env *env)
{
	free(env->rcpts);
	env->rcpts = NULL;
}

/* Writes a body in uneven chunks, finishes; returns the message (not yet committed). */
static struct spool_msg *write_msg(struct fx *f, const struct spool_env *env, const void *body,
                                   size_t len)
{
	struct spool_msg *m = spool_begin(f->sp, env);
	assert_non_null(m);
	size_t off = 0, step = 1;
	while (off < len) {
		size_t n = len - off < step ? len - off : step;
		assert_int_equal(spool_write(m, (const char *)body + off, n), 0);
		off += n;
		step = step * 3 + 1;
	}
	assert_int_equal(spool_finish(m), 0);
	return m;
}

static void commit_one(struct fx *f, const struct spool_env *env, const void *body, size_t len,
                       char *qid)
{
	struct spool_msg *m = write_msg(f, env, body, len);
	snprintf(qid, 17, "%s", spool_msg_qid(m));
	assert_int_equal(spool_commit(f->sp, &m, 1), 0);
}

static int count_dir(struct fx *f, const char *sub)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", f->spool_dir, sub);
	DIR *d = opendir(p);
	if (d == NULL)
		return -1;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static void qpath(struct fx *f, char *out, size_t sz, const char *name)
{
	snprintf(out, sz, "%s/queue/%s", f->spool_dir, name);
}

static void check_body(struct fx *f, const char *qid, const void *body, size_t len)
{
	struct spool_env env;
	uint64_t off, blen;
	assert_int_equal(spool_read(f->sp, qid, &env, &off, &blen), 0);
	assert_int_equal(blen, len);
	int fd = spool_open_msg(f->sp, qid);
	assert_true(fd >= 0);
	unsigned char *got = malloc(len + 1);
	assert_int_equal(pread(fd, got, len, (off_t)off), (ssize_t)len);
	assert_memory_equal(got, body, len);
	free(got);
	close(fd);
	spool_env_free(&env);
}

static void assert_env_equal(const struct spool_env *a, const struct spool_env *b)
{
	assert_int_equal(a->arrival, b->arrival);
	assert_string_equal(a->from, b->from);
	assert_string_equal(a->helo, b->helo);
	assert_string_equal(a->client_ip, b->client_ip);
	assert_string_equal(a->listener, b->listener);
	assert_string_equal(a->tls, b->tls);
	assert_int_equal(a->body_type, b->body_type);
	assert_int_equal(a->smtputf8, b->smtputf8);
	assert_int_equal(a->ret, b->ret);
	assert_string_equal(a->envid, b->envid);
	assert_int_equal(a->nrcpts, b->nrcpts);
	for (int i = 0; i < a->nrcpts; i++) {
		assert_string_equal(a->rcpts[i].addr, b->rcpts[i].addr);
		assert_string_equal(a->rcpts[i].mailbox, b->rcpts[i].mailbox);
		assert_int_equal(a->rcpts[i].notify, b->rcpts[i].notify);
		assert_string_equal(a->rcpts[i].orcpt, b->rcpts[i].orcpt);
	}
}

static void test_roundtrip_one(void **state)
{
	struct fx *f = *state;
	struct spool_env env, got;
	const char body[] = "Subject: hi\r\n\r\nhello\r\n";
	char qid[17];
	uint64_t off, len;

	fill_env(&env, 3);
	commit_one(f, &env, body, sizeof(body) - 1, qid);
	assert_true(spool_qid_valid(qid));
	assert_int_equal(count_dir(f, "tmp"), 0);
	assert_int_equal(count_dir(f, "queue"), 1);
	assert_int_equal(spool_read(f->sp, qid, &got, &off, &len), 0);
	assert_string_equal(got.qid, qid);
	assert_env_equal(&env, &got);
	spool_env_free(&got);
	assert_null(got.rcpts);
	check_body(f, qid, body, sizeof(body) - 1);

	char p[512];
	struct stat sb;
	qpath(f, p, sizeof(p), qid);
	assert_int_equal(stat(p, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(stat(f->spool_dir, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	free_env(&env);
}

static void test_group_commit_many(void **state)
{
	struct fx *f = *state;
	enum { N = 25 };
	struct spool_msg *msgs[N];
	char qids[N][17];
	char bodies[N][64];
	struct spool_env env;

	fill_env(&env, 2);
	for (int i = 0; i < N; i++) {
		snprintf(bodies[i], sizeof(bodies[i]), "message number %d\r\n", i);
		msgs[i] = write_msg(f, &env, bodies[i], strlen(bodies[i]));
		snprintf(qids[i], sizeof(qids[i]), "%s", spool_msg_qid(msgs[i]));
	}
	assert_int_equal(count_dir(f, "tmp"), N);
	assert_int_equal(count_dir(f, "queue"), 0);
	assert_int_equal(spool_commit(f->sp, msgs, N), 0);
	assert_int_equal(count_dir(f, "tmp"), 0);
	assert_int_equal(count_dir(f, "queue"), N);
	for (int i = 0; i < N; i++)
		check_body(f, qids[i], bodies[i], strlen(bodies[i]));
	assert_int_equal(spool_commit(f->sp, msgs, 0), 0);
	free_env(&env);
}

static void test_envelope_all_fields(void **state)
{
	struct fx *f = *state;
	struct spool_env env, got;
	char qid[17];
	uint64_t off, len;
	enum { N = 300 };

	fill_env(&env, N);
	snprintf(env.from, sizeof(env.from),
	         "\"odd %% sender\"@b\xc3\xbc"
	         "cher.example");
	snprintf(env.helo, sizeof(env.helo), "evil\r\nEND 0 00\r\n helo");
	snprintf(env.client_ip, sizeof(env.client_ip), "2001:db8::1");
	snprintf(env.listener, sizeof(env.listener), "submissions");
	env.tls[0] = '\0';
	env.body_type = SMTP_BODY_BINARYMIME;
	env.smtputf8 = true;
	env.ret = SMTP_RET_FULL;
	memset(env.envid, 'e', LIM_ENVID);
	env.envid[LIM_ENVID] = '\0';
	env.envid[3] = ' ';
	for (int i = 0; i < N; i++) {
		struct spool_rcpt *r = &env.rcpts[i];
		/* longest fields, every one needing escapes */
		memset(r->addr, i % 2 ? ' ' : '%', LIM_PATH);
		r->addr[LIM_PATH] = '\0';
		memset(r->mailbox, '\x7f', LIM_PATH);
		r->mailbox[LIM_PATH] = '\0';
		memset(r->orcpt, '\n', LIM_ORCPT);
		r->orcpt[LIM_ORCPT] = '\0';
		r->notify = SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY;
	}
	snprintf(env.rcpts[0].addr, sizeof(env.rcpts[0].addr), "Postmaster");
	env.rcpts[1].mailbox[0] = '\0';
	env.rcpts[2].orcpt[0] = '\0';
	commit_one(f, &env, "x", 1, qid);
	assert_int_equal(spool_read(f->sp, qid, &got, &off, &len), 0);
	assert_env_equal(&env, &got);
	assert_int_equal(len, 1);
	spool_env_free(&got);
	free_env(&env);
}

static void test_binary_body(void **state)
{
	struct fx *f = *state;
	struct spool_env env;
	char qid[17];
	size_t len = 300000; /* several buffers: exercises the direct-write path */
	unsigned char *body = malloc(len);

	for (size_t i = 0; i < len; i++)
		body[i] = (unsigned char)(i * 7 + (i >> 8));
	memcpy(body, "\0\r\r\n\n.\r\n", 8);
	const char fake[] =
	    "\nEND 0 0000000000000000000000000000000000000000000000000000000000000000\n";
	memcpy(body + len - sizeof(fake) + 1, fake, sizeof(fake) - 1);
	fill_env(&env, 1);
	commit_one(f, &env, body, len, qid);
	check_body(f, qid, body, len);

	/* one big write too */
	struct spool_msg *m = spool_begin(f->sp, &env);
	assert_non_null(m);
	assert_int_equal(spool_write(m, body, len), 0);
	assert_int_equal(spool_finish(m), 0);
	snprintf(qid, sizeof(qid), "%s", spool_msg_qid(m));
	assert_int_equal(spool_commit(f->sp, &m, 1), 0);
	check_body(f, qid, body, len);
	free(body);
	free_env(&env);
}

static void test_empty_body(void **state)
{
	struct fx *f = *state;
	struct spool_env env;
	char qid[17];
	fill_env(&env, 1);
	commit_one(f, &env, "", 0, qid);
	check_body(f, qid, "", 0);
	free_env(&env);
}

static void test_truncated_is_corrupt(void **state)
{
	struct fx *f = *state;
	struct spool_env env, got;
	char qids[10][17], good[17], p[512];
	uint64_t off, len;
	struct stat sb;
	char body[2000];

	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (char)('a' + i % 26);
	fill_env(&env, 5);
	commit_one(f, &env, body, sizeof(body), good);
	for (int k = 0; k < 10; k++) {
		commit_one(f, &env, body, sizeof(body), qids[k]);
		qpath(f, p, sizeof(p), qids[k]);
		assert_int_equal(stat(p, &sb), 0);
		assert_int_equal(truncate(p, sb.st_size * k / 10), 0);
		errno = 0;
		assert_int_equal(spool_read(f->sp, qids[k], &got, &off, &len), -1);
		assert_int_equal(errno, EINVAL);
		assert_null(got.rcpts);
	}
	/* one byte short: the END record loses its LF */
	char shortq[17];
	commit_one(f, &env, body, sizeof(body), shortq);
	qpath(f, p, sizeof(p), shortq);
	assert_int_equal(stat(p, &sb), 0);
	assert_int_equal(truncate(p, sb.st_size - 1), 0);
	assert_int_equal(spool_read(f->sp, shortq, &got, &off, &len), -1);
	/* one byte too many */
	char longq[17];
	commit_one(f, &env, body, sizeof(body), longq);
	qpath(f, p, sizeof(p), longq);
	assert_int_equal(stat(p, &sb), 0);
	assert_int_equal(truncate(p, sb.st_size + 1), 0);
	assert_int_equal(spool_read(f->sp, longq, &got, &off, &len), -1);
	assert_int_equal(spool_mark_done(f->sp, qids[3], 1), 0);

	assert_int_equal(spool_recover(f->sp, NULL, NULL), 1);
	assert_int_equal(count_dir(f, "queue"), 1);
	assert_int_equal(count_dir(f, "corrupt"), 13); /* 12 messages + one state file */
	check_body(f, good, body, sizeof(body));
	free_env(&env);
}

static void test_flipped_byte_is_corrupt(void **state)
{
	struct fx *f = *state;
	struct spool_env env, got;
	char qid[17], p[512];
	uint64_t off, len;
	struct stat sb;

	fill_env(&env, 2);
	commit_one(f, &env, "Subject: x\r\n\r\nbody\r\n", 20, qid);
	qpath(f, p, sizeof(p), qid);
	assert_int_equal(stat(p, &sb), 0);
	int fd = open(p, O_RDWR);
	assert_true(fd >= 0);
	/* every single-bit change anywhere in the file must be caught */
	for (off_t i = 0; i < sb.st_size; i++) {
		for (int bit = 0; bit < 8; bit += 3) {
			unsigned char c, x;
			assert_int_equal(pread(fd, &c, 1, i), 1);
			x = c ^ (unsigned char)(1u << bit);
			assert_int_equal(pwrite(fd, &x, 1, i), 1);
			errno = 0;
			if (spool_read(f->sp, qid, &got, &off, &len) != -1 || errno != EINVAL)
				fail_msg("flip at %lld bit %d not detected", (long long)i, bit);
			assert_int_equal(pwrite(fd, &c, 1, i), 1);
		}
	}
	close(fd);
	assert_int_equal(spool_read(f->sp, qid, &got, &off, &len), 0);
	spool_env_free(&got);
	free_env(&env);
}

static void test_tmp_leftovers_removed(void **state)
{
	struct fx *f = *state;
	struct spool_env env;
	char qid[17];

	fill_env(&env, 1);
	commit_one(f, &env, "kept", 4, qid);
	/* a worker dies in the middle of DATA, another after finish but before commit */
	for (int k = 0; k < 2; k++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct spool_msg *m = spool_begin(f->sp, &env);
			if (m == NULL || spool_write(m, "partial", 7) < 0)
				_exit(1);
			if (k == 1 && spool_finish(m) < 0)
				_exit(1);
			raise(SIGKILL);
			_exit(1);
		}
		int st;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFSIGNALED(st));
	}
	assert_int_equal(count_dir(f, "tmp"), 2);
	assert_int_equal(spool_recover(f->sp, NULL, NULL), 1);
	assert_int_equal(count_dir(f, "tmp"), 0);
	assert_int_equal(count_dir(f, "queue"), 1);
	free_env(&env);
}

static void test_abort_and_bad_commit(void **state)
{
	struct fx *f = *state;
	struct spool_env env;

	fill_env(&env, 1);
	struct spool_msg *m = spool_begin(f->sp, &env);
	assert_non_null(m);
	assert_int_equal(count_dir(f, "tmp"), 1);
	spool_abort(m);
	spool_abort(NULL);
	assert_int_equal(count_dir(f, "tmp"), 0);

	/* an unfinished message can't be committed; nothing becomes visible */
	struct spool_msg *ms[2];
	ms[0] = write_msg(f, &env, "a", 1);
	ms[1] = spool_begin(f->sp, &env);
	assert_non_null(ms[1]);
	errno = 0;
	assert_int_equal(spool_commit(f->sp, ms, 2), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(count_dir(f, "tmp"), 0);
	assert_int_equal(count_dir(f, "queue"), 0);

	/* an existing committed message is never replaced */
	char qid[17];
	commit_one(f, &env, "first", 5, qid);
	snprintf(env.qid, sizeof(env.qid), "%s", qid);
	m = write_msg(f, &env, "second", 6);
	assert_string_equal(spool_msg_qid(m), qid);
	assert_int_equal(spool_commit(f->sp, &m, 1), -1);
	assert_int_equal(errno, EEXIST);
	check_body(f, qid, "first", 5);
	assert_int_equal(count_dir(f, "tmp"), 0);
	free_env(&env);
}

static void test_begin_rejects(void **state)
{
	struct fx *f = *state;
	struct spool_env env;

	fill_env(&env, 1);
	env.nrcpts = 0;
	errno = 0;
	assert_null(spool_begin(f->sp, &env));
	assert_int_equal(errno, EINVAL);
	env.nrcpts = 1;
	snprintf(env.qid, sizeof(env.qid), "../../etc/passwd");
	assert_null(spool_begin(f->sp, &env));
	env.qid[0] = '\0';
	memset(env.helo, 'h', sizeof(env.helo)); /* not terminated */
	assert_null(spool_begin(f->sp, &env));
	env.helo[0] = '\0';
	env.body_type = 99;
	assert_null(spool_begin(f->sp, &env));
	env.body_type = 0;
	env.rcpts[0].notify = 0x100;
	assert_null(spool_begin(f->sp, &env));
	assert_int_equal(count_dir(f, "tmp"), 0);
	free_env(&env);
}

static void test_done_state(void **state)
{
	struct fx *f = *state;
	struct spool_env env;
	char qid[17], p[512];
	bool done[20];

	fill_env(&env, 20);
	commit_one(f, &env, "b", 1, qid);
	assert_int_equal(spool_load_done(f->sp, qid, done, 20), 0);
	for (int i = 0; i < 20; i++)
		assert_false(done[i]);
	assert_int_equal(spool_mark_done(f->sp, qid, 0), 0);
	assert_int_equal(spool_mark_done(f->sp, qid, 2), 0);
	assert_int_equal(spool_mark_done(f->sp, qid, 5), 0);
	assert_int_equal(spool_mark_done(f->sp, qid, 5), 0);
	assert_int_equal(spool_load_done(f->sp, qid, done, 20), 0);
	for (int i = 0; i < 20; i++)
		assert_int_equal(done[i], i == 0 || i == 2 || i == 5);

	/* a crash tore the last append: "rcpt 1" of "rcpt 12 done" */
	snprintf(p, sizeof(p), "%s/queue/%s.state", f->spool_dir, qid);
	int fd = open(p, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "rcpt 1", 6), 6);
	close(fd);
	assert_int_equal(spool_load_done(f->sp, qid, done, 20), 0);
	assert_false(done[1]);
	assert_false(done[12]);
	/* the next append must not glue onto the torn line (that would read "rcpt 12 done") */
	assert_int_equal(spool_mark_done(f->sp, qid, 2), 0);
	assert_int_equal(spool_load_done(f->sp, qid, done, 20), 0);
	for (int i = 0; i < 20; i++)
		assert_int_equal(done[i], i == 0 || i == 2 || i == 5);

	/* garbage and out-of-range lines count as not done */
	fd = open(p, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	const char junk[] = "rcpt 19 done\nrcpt 20 done\nrcpt -1 done\nrcpt 07 done\n\0\0\0\nxyz\n"
	                    "rcpt 3 don\nrcpt 4 done";
	assert_int_equal(write(fd, junk, sizeof(junk) - 1), (ssize_t)sizeof(junk) - 1);
	close(fd);
	assert_int_equal(spool_load_done(f->sp, qid, done, 20), 0);
	for (int i = 0; i < 20; i++)
		assert_int_equal(done[i], i == 0 || i == 2 || i == 5 || i == 19);
	/* fewer recipients than indexes: no write past the array */
	assert_int_equal(spool_load_done(f->sp, qid, done, 3), 0);
	assert_true(done[0] && !done[1] && done[2]);

	assert_int_equal(spool_mark_done(f->sp, qid, -1), -1);
	assert_int_equal(spool_mark_done(f->sp, "bad", 1), -1);

	/* remove takes message and state durably */
	assert_int_equal(spool_remove(f->sp, qid), 0);
	assert_int_equal(count_dir(f, "queue"), 0);
	struct spool_env got;
	uint64_t off, len;
	errno = 0;
	assert_int_equal(spool_read(f->sp, qid, &got, &off, &len), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(spool_load_done(f->sp, qid, done, 20), 0);
	assert_false(done[0]);
	free_env(&env);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {0, ms * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void test_qid_format_and_order(void **state)
{
	char a[17], b[17];
	(void)state;
	for (int i = 0; i < 20; i++) {
		spool_new_qid(a);
		sleep_ms(2);
		spool_new_qid(b);
		assert_int_equal(strlen(a), 16);
		assert_true(spool_qid_valid(a));
		assert_true(spool_qid_valid(b));
		assert_true(strcmp(a, b) < 0);
		for (int k = 0; k < 16; k++)
			assert_null(strchr("ILOUilou", a[k]));
	}
	/* 48 bits of milliseconds in the first 10 characters */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	uint64_t ms = 0;
	spool_new_qid(a);
	for (int k = 0; k < 10; k++)
		ms = ms << 5 | (uint64_t)(strchr("0123456789ABCDEFGHJKMNPQRSTVWXYZ", a[k]) -
		                          "0123456789ABCDEFGHJKMNPQRSTVWXYZ");
	ms >>= 2;
	assert_true(ms >= now && ms < now + 1000);

	/* distinct within one millisecond */
	enum { N = 2000 };
	char(*ids)[17] = malloc(N * sizeof(*ids));
	for (int i = 0; i < N; i++)
		spool_new_qid(ids[i]);
	qsort(ids, N, sizeof(*ids), cmp_str);
	for (int i = 1; i < N; i++)
		assert_true(strcmp(ids[i - 1], ids[i]) != 0);
	free(ids);

	assert_false(spool_qid_valid("0123456789ABCDE"));
	assert_false(spool_qid_valid("0123456789ABCDEFG"));
	assert_false(spool_qid_valid("0123456789ABCDEI"));
	assert_false(spool_qid_valid("0123456789abcdef"));
	assert_false(spool_qid_valid("../../etc/passwd"));
	assert_false(spool_qid_valid(""));
	assert_false(spool_qid_valid(NULL));
	assert_true(spool_qid_valid("0123456789ABCDEF"));
}

struct order {
	char seen[10][17];
	int n;
};

static void collect(void *arg, const char *qid)
{
	struct order *o = arg;
	if (o->n < 10)
		snprintf(o->seen[o->n], 17, "%s", qid);
	o->n++;
}

static void test_recover_order_and_orphans(void **state)
{
	struct fx *f = *state;
	struct spool_env env;
	char ids[5][17], qid[17], p[512];
	struct order o = {.n = 0};

	fill_env(&env, 2);
	for (int i = 0; i < 5; i++) {
		spool_new_qid(ids[i]);
		sleep_ms(2);
	}
	for (int i = 4; i >= 0; i--) { /* committed newest first */
		snprintf(env.qid, sizeof(env.qid), "%s", ids[i]);
		commit_one(f, &env, "m", 1, qid);
		assert_string_equal(qid, ids[i]);
	}
	assert_int_equal(spool_mark_done(f->sp, ids[1], 0), 0);
	/* an orphan state file, an unknown file, a symlink and a stray directory */
	snprintf(p, sizeof(p), "%s/queue/0000000000000000.state", f->spool_dir);
	int fd = open(p, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	snprintf(p, sizeof(p), "%s/queue/junk", f->spool_dir);
	fd = open(p, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	snprintf(p, sizeof(p), "%s/queue/0000000000000001", f->spool_dir);
	assert_int_equal(symlink("/etc/passwd", p), 0);
	snprintf(p, sizeof(p), "%s/queue/ZZZZZZZZZZZZZZZZ", f->spool_dir);
	assert_int_equal(mkdir(p, 0700), 0);

	assert_int_equal(spool_recover(f->sp, collect, &o), 5);
	assert_int_equal(o.n, 5);
	for (int i = 0; i < 5; i++)
		assert_string_equal(o.seen[i], ids[i]);
	assert_int_equal(count_dir(f, "corrupt"), 2);       /* junk, symlink */
	assert_int_equal(count_dir(f, "queue"), 5 + 1 + 1); /* messages, ids[1].state, dir */
	bool done[2];
	assert_int_equal(spool_load_done(f->sp, ids[1], done, 2), 0);
	assert_true(done[0] && !done[1]);
	/* recovering again changes nothing */
	o.n = 0;
	assert_int_equal(spool_recover(f->sp, collect, &o), 5);
	assert_int_equal(count_dir(f, "corrupt"), 2);
	free_env(&env);
}

/* ---- hand-made files: the documented format, and structure errors under a valid checksum */

static void write_crafted(const char *path, const char *hdr, const char *body, size_t blen,
                          long long claim_len)
{
	unsigned char h[crypto_generichash_BYTES];
	char hex[crypto_generichash_BYTES * 2 + 1], trailer[160];
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, sizeof(h));
	crypto_generichash_update(&st, (const unsigned char *)hdr, strlen(hdr));
	crypto_generichash_update(&st, (const unsigned char *)body, blen);
	crypto_generichash_final(&st, h, sizeof(h));
	sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
	int n = snprintf(trailer, sizeof(trailer), "\nEND %lld %s\n",
	                 claim_len < 0 ? (long long)blen : claim_len, hex);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, hdr, strlen(hdr)), (ssize_t)strlen(hdr));
	assert_int_equal(write(fd, body, blen), (ssize_t)blen);
	assert_int_equal(write(fd, trailer, (size_t)n), n);
	close(fd);
}

#define QID "01HZZZZZZZZZZZZZ"
#define HDR_TOP "SEALMAIL-SPOOL 1\nqid " QID "\narrival 1700000000\n"
#define HDR_MID                                                                                    \
	"from a@b.example\nhelo mx.b.example\nclient-ip 192.0.2.7\nlistener mx\n"                  \
	"tls TLSv1.3%20TLS_AES_128_GCM_SHA256\nbody-type 2\nsmtputf8 0\nret 0\nenvid \n"
#define GOOD                                                                                       \
	HDR_TOP HDR_MID                                                                            \
	    "rcpts 2\nrcpt c@d.example c@d.example 6 rfc822;c@d.example\nrcpt x@y  0 \n\n"

static void test_crafted_files(void **state)
{
	struct fx *f = *state;
	struct spool_env env;
	uint64_t off, len;
	char p[512];
	static const struct {
		const char *hdr;
		long long claim;
	} bad[] = {
	    {"SEALMAIL-SPOOL 2\nqid " QID "\narrival 1\n" HDR_MID "rcpts 1\nrcpt a b 0 c\n\n", -1},
	    {HDR_TOP HDR_MID "rcpts 0\n\n", -1},
	    {HDR_TOP HDR_MID "rcpts 2\nrcpt a b 0 c\n\n", -1},
	    {HDR_TOP HDR_MID "rcpts 1\nrcpt a b 0 c\nrcpt a b 0 c\n\n", -1},
	    {HDR_TOP HDR_MID "rcpts 1\nrcpt a b 0 c\n", -1},     /* no blank line */
	    {HDR_TOP HDR_MID "rcpts 1\nrcpt a b 0 c\n\n", 3},    /* length lies */
	    {HDR_TOP HDR_MID "rcpts 1\nrcpt a b 0\n\n", -1},     /* 3 fields */
	    {HDR_TOP HDR_MID "rcpts 1\nrcpt a b 0 c d\n\n", -1}, /* 5 fields */
	    {HDR_TOP HDR_MID "rcpts 1\nrcpt a b 16 c\n\n", -1},  /* notify bits */
	    {HDR_TOP HDR_MID "rcpts 1\nrcpt a%zz b 0 c\n\n", -1},
	    {HDR_TOP HDR_MID "rcpts 1\nrcpt a%00 b 0 c\n\n", -1},
	    {HDR_TOP HDR_MID "rcpts 1\nrcpt a%41 b 0 c\n\n", -1}, /* non-canonical */
	    {HDR_TOP HDR_MID "rcpts 1\nrcpt a%2 b 0 c\n\n", -1},
	    {HDR_TOP HDR_MID "rcpts 1\nrcpt a\r b 0 c\n\n", -1},
	    {HDR_TOP HDR_MID "rcpts 1\nrcpt a\xc3\xbc b 0 c\n\n", -1}, /* raw 8-bit */
	    {HDR_TOP HDR_MID "rcpts 01\nrcpt a b 0 c\n\n", -1},
	    {HDR_TOP HDR_MID "rcpts 100001\nrcpt a b 0 c\n\n", -1},
	    {HDR_TOP HDR_MID "rcpts 99999999999999999999999\nrcpt a b 0 c\n\n", -1},
	    {HDR_TOP HDR_MID "rcpt a b 0 c\n\n", -1},
	    {"SEALMAIL-SPOOL 1\nqid 01HZZZZZZZZZZZZY\narrival 1\n" HDR_MID
	     "rcpts 1\nrcpt a b 0 c\n\n",
	     -1}, /* qid does not match the name */
	    {"SEALMAIL-SPOOL 1\nqid " QID "\narrival -1\n" HDR_MID "rcpts 1\nrcpt a b 0 c\n\n", -1},
	    {"SEALMAIL-SPOOL 1\nqid " QID "\nfrom a\narrival 1\n" HDR_MID
	     "rcpts 1\nrcpt a b 0 c\n\n",
	     -1}, /* order */
	    {HDR_TOP "from a@b\nhelo x\nclient-ip x\nlistener toolongforthefield\ntls \n"
	             "body-type 2\nsmtputf8 0\nret 0\nenvid \nrcpts 1\nrcpt a b 0 c\n\n",
	     -1},
	    {HDR_TOP "from a@b\nhelo x\nclient-ip x\nlistener mx\ntls \n"
	             "body-type 4\nsmtputf8 0\nret 0\nenvid \nrcpts 1\nrcpt a b 0 c\n\n",
	     -1},
	    {HDR_TOP "from a@b\nhelo x\nclient-ip x\nlistener mx\ntls \n"
	             "body-type 2\nsmtputf8 2\nret 0\nenvid \nrcpts 1\nrcpt a b 0 c\n\n",
	     -1},
	    {HDR_TOP "from a@b\nhelo x\nclient-ip x\nlistener mx\ntls\n"
	             "body-type 2\nsmtputf8 0\nret 0\nenvid \nrcpts 1\nrcpt a b 0 c\n\n",
	     -1}, /* "tls" without its SP */
	    {HDR_TOP HDR_MID "rcpts 1\nrcpt a b 0 c\nx-unknown 1\n\n", -1},
	    {"", -1},
	};

	qpath(f, p, sizeof(p), QID);
	write_crafted(p, GOOD, "Body\r\n", 6, -1);
	assert_int_equal(spool_read(f->sp, QID, &env, &off, &len), 0);
	assert_int_equal(len, 6);
	assert_int_equal(off, strlen(GOOD));
	assert_string_equal(env.tls, "TLSv1.3 TLS_AES_128_GCM_SHA256");
	assert_int_equal(env.nrcpts, 2);
	assert_string_equal(env.rcpts[0].orcpt, "rfc822;c@d.example");
	assert_int_equal(env.rcpts[0].notify, 6);
	assert_string_equal(env.rcpts[1].mailbox, "");
	assert_string_equal(env.rcpts[1].orcpt, "");
	spool_env_free(&env);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_crafted(p, bad[i].hdr, "Body\r\n", 6, bad[i].claim);
		errno = 0;
		if (spool_read(f->sp, QID, &env, &off, &len) != -1 || errno != EINVAL)
			fail_msg("crafted case %zu was accepted", i);
		assert_null(env.rcpts);
	}
	/* a long line: over the record cap */
	char *big = malloc(10000);
	int n = snprintf(big, 10000, "%s", HDR_TOP HDR_MID "rcpts 1\nrcpt ");
	memset(big + n, 'a', 5000);
	snprintf(big + n + 5000, 10000 - (size_t)n - 5000, " b 0 c\n\n");
	write_crafted(p, big, "", 0, -1);
	assert_int_equal(spool_read(f->sp, QID, &env, &off, &len), -1);
	free(big);
	/* not a regular file */
	assert_int_equal(unlink(p), 0);
	assert_int_equal(mkfifo(p, 0600), 0);
	assert_int_equal(spool_read(f->sp, QID, &env, &off, &len), -1);
	assert_int_equal(spool_recover(f->sp, NULL, NULL), 0);
	assert_int_equal(count_dir(f, "corrupt"), 1);
}

/* Random damage must give 0 or -1, never a crash or a leak (ASan watches). Half of the
 * mutants get a recomputed checksum so the record parser itself is exercised. */
static void test_mutations_never_crash(void **state)
{
	struct fx *f = *state;
	char p[512];
	struct spool_env env;
	uint64_t off, len;
	char hdr[1024];
	unsigned seed = 12345;

	qpath(f, p, sizeof(p), QID);
	for (int it = 0; it < 3000; it++) {
		size_t n = strlen(GOOD);
		memcpy(hdr, GOOD, n + 1);
		int edits = 1 + (int)(rand_r(&seed) % 4);
		for (int e = 0; e < edits; e++) {
			size_t at = (size_t)rand_r(&seed) % n;
			switch (rand_r(&seed) % 4) {
			case 0:
				hdr[at] = (char)(rand_r(&seed) & 0xff);
				if (hdr[at] == '\0')
					hdr[at] = '%';
				break;
			case 1:
				n = at + 1; /* truncate */
				hdr[n] = '\0';
				break;
			case 2:
				hdr[at] = " \n%0A"[rand_r(&seed) % 5];
				break;
			default:
				memmove(hdr + at + 1, hdr + at, n - at + 1); /* duplicate a byte */
				n++;
				break;
			}
		}
		if (it % 2 == 0) {
			write_crafted(p, hdr, "B", 1, -1);
		} else {
			int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
			assert_true(fd >= 0);
			assert_int_equal(write(fd, hdr, n), (ssize_t)n);
			close(fd);
		}
		if (spool_read(f->sp, QID, &env, &off, &len) == 0) {
			assert_true(off + len <= (uint64_t)n + 200);
			spool_env_free(&env);
		} else {
			assert_null(env.rcpts);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_roundtrip_one, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit_many, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_envelope_all_fields, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_binary_body, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_empty_body, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_truncated_is_corrupt, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flipped_byte_is_corrupt, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tmp_leftovers_removed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_abort_and_bad_commit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_begin_rejects, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_done_state, setup, teardown),
	    cmocka_unit_test(test_qid_format_and_order),
	    cmocka_unit_test_setup_teardown(test_recover_order_and_orphans, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_crafted_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mutations_never_crash, setup, teardown),
	};
	log_init("test", false, false);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
