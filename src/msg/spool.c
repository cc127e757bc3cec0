/* The durable spool: writing, committing (promise 1: 250 means durable), reading, per-recipient
 * state and crash recovery of the files under <data_dir>/spool (format: docs/spool.md).
 * Runs in smtp workers (spool_begin .. spool_commit) and the queue process (the rest).
 * Untrusted input: envelope strings and body bytes from the network (escaped or stored as
 * opaque bytes), and every file in the spool, which may be torn, truncated or corrupt. */
#include "msg/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "smtp/parse.h"
#include "util/log.h"

#define SPOOL_MAGIC "SEALMAIL-SPOOL 1"
/* Userspace write/read buffer: a typical message goes to the kernel in one or two write(2). */
#define SPOOL_BUF (64 * 1024)
/* Longest envelope record: "rcpt " + 3 escaped fields (3 bytes per octet) + notify. */
#define SPOOL_LINE 4096
#define SPOOL_HASH crypto_generichash_BYTES /* BLAKE2b-256 */
/* "\nEND " + 20 digits + " " + 64 hex + "\n" = 91; leave room. */
#define SPOOL_TRAILER_MAX 128
#define QID_LEN 16
#define STATE_SUFFIX ".state"
#define SPOOL_NOTIFY_MASK                                                                          \
	(SMTP_NOTIFY_NEVER | SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY)

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

struct spool {
	int dirfd;   /* <data_dir>/spool */
	int tmpfd;   /* spool/tmp */
	int queuefd; /* spool/queue */
	char queue_path[PATH_MAX];
};

enum spool_mst { MSG_WRITING, MSG_FINISHED, MSG_FAILED };

struct spool_msg {
	struct spool *sp;
	int fd;
	enum spool_mst st;
	char qid[QID_LEN + 1];
	uint64_t body_len;
	bool in_body;
	crypto_generichash_state hash;
	size_t len;
	unsigned char buf[SPOOL_BUF];
};

/* ---- small helpers ---------------------------------------------------------------------- */

static int write_all(int fd, const void *p, size_t n)
{
	const unsigned char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (w == 0) {
			errno = EIO;
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* pread until n bytes or EOF; returns bytes read or -1. */
static ssize_t pread_full(int fd, void *p, size_t n, uint64_t off)
{
	unsigned char *c = p;
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, c + got, n - got, (off_t)(off + got));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

bool spool_qid_valid(const char *qid)
{
	if (qid == NULL)
		return false;
	for (int i = 0; i < QID_LEN; i++)
		if (qid[i] == '\0' || strchr(crockford, qid[i]) == NULL)
			return false;
	return qid[QID_LEN] == '\0';
}

static int open_dir_at(int at, const char *name, bool create)
{
	if (create && mkdirat(at, name, 0700) < 0 && errno != EEXIST)
		return -1;
	return openat(at, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
}

/* rename that never replaces an existing entry; falls back to rename(2) on file systems
 * without RENAME_NOREPLACE (ids are unique enough that this is only belt and braces). */
static int rename_noreplace(int from_dir, const char *from, int to_dir, const char *to)
{
	if (renameat2(from_dir, from, to_dir, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
		return -1;
	return renameat(from_dir, from, to_dir, to);
}

/* ---- spool handle ----------------------------------------------------------------------- */

struct spool *spool_open(const char *data_dir)
{
	struct spool *sp;
	int base, saved;
	int n;

	if (sodium_init() < 0) {
		errno = EIO;
		return NULL;
	}
	sp = xcalloc(1, sizeof(*sp));
	sp->dirfd = sp->tmpfd = sp->queuefd = -1;
	n = snprintf(sp->queue_path, sizeof(sp->queue_path), "%s/spool/queue", data_dir);
	if (n < 0 || (size_t)n >= sizeof(sp->queue_path)) {
		free(sp);
		errno = ENAMETOOLONG;
		return NULL;
	}
	base = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (base < 0)
		goto fail;
	sp->dirfd = open_dir_at(base, "spool", true);
	/* spool/ may just have been created: its entry in data_dir must survive a crash */
	if (sp->dirfd >= 0 && fsync(base) < 0) {
		close(sp->dirfd);
		sp->dirfd = -1;
	}
	saved = errno;
	close(base);
	errno = saved;
	if (sp->dirfd < 0)
		goto fail;
	sp->tmpfd = open_dir_at(sp->dirfd, "tmp", true);
	if (sp->tmpfd < 0)
		goto fail;
	sp->queuefd = open_dir_at(sp->dirfd, "queue", true);
	if (sp->queuefd < 0)
		goto fail;
	/* The directories may just have been created: make their entries durable too. */
	if (fsync(sp->dirfd) < 0)
		goto fail;
	return sp;
fail:
	saved = errno;
	spool_close(sp);
	errno = saved;
	return NULL;
}

void spool_close(struct spool *sp)
{
	if (sp == NULL)
		return;
	if (sp->dirfd >= 0)
		close(sp->dirfd);
	if (sp->tmpfd >= 0)
		close(sp->tmpfd);
	if (sp->queuefd >= 0)
		close(sp->queuefd);
	free(sp);
}

const char *spool_queue_dir(const struct spool *sp)
{
	return sp->queue_path;
}

/* ---- queue ids -------------------------------------------------------------------------- */

void spool_new_qid(char *buf)
{
	static uint32_t counter;
	struct timespec ts;
	uint32_t rnd;
	uint64_t ms, hi, lo;

	if (clock_gettime(CLOCK_REALTIME, &ts) < 0) {
		ts.tv_sec = time(NULL);
		ts.tv_nsec = 0;
	}
	ms = ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000) & 0xFFFFFFFFFFFFULL;
	if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		/* no entropy source: still unique within this process; O_EXCL catches the rest */
		rnd = (uint32_t)ts.tv_nsec ^ ((uint32_t)getpid() << 16) ^ ++counter;
	}
	/* 80 bits = 48 bits of ms (big end first, so ids sort by time) + 32 random bits */
	hi = ms >> 32;                   /* top 16 bits */
	lo = (ms << 32) | (uint64_t)rnd; /* low 64 bits */
	for (int i = 0; i < QID_LEN; i++) {
		int p = 75 - 5 * i; /* lowest bit of this 5-bit group */
		uint64_t v;
		if (p >= 64)
			v = hi >> (p - 64);
		else if (p + 5 <= 64)
			v = lo >> p;
		else
			v = (lo >> p) | (hi << (64 - p));
		buf[i] = crockford[v & 31];
	}
	buf[QID_LEN] = '\0';
}

/* ---- writing ---------------------------------------------------------------------------- */

static int msg_flush(struct spool_msg *m)
{
	if (m->len > 0 && write_all(m->fd, m->buf, m->len) < 0)
		return -1;
	m->len = 0;
	return 0;
}

/* Buffered append; hashed unless it is the trailer. */
static int msg_put(struct spool_msg *m, const void *p, size_t n, bool hashed)
{
	if (m->st != MSG_WRITING) {
		errno = EINVAL;
		return -1;
	}
	if (hashed && crypto_generichash_update(&m->hash, p, n) != 0)
		goto fail;
	if (m->len + n <= sizeof(m->buf)) {
		memcpy(m->buf + m->len, p, n);
		m->len += n;
		return 0;
	}
	if (msg_flush(m) < 0)
		goto fail;
	if (n >= sizeof(m->buf)) {
		/* large chunk: straight to the kernel, no copy */
		if (write_all(m->fd, p, n) < 0)
			goto fail;
		return 0;
	}
	memcpy(m->buf, p, n);
	m->len = n;
	return 0;
fail:
	m->st = MSG_FAILED;
	return -1;
}

/* %XX for every byte that is not printable ASCII, and for SP and '%' (values are separated
 * by SP and a record ends at LF). Returns bytes written to out (size >= 3 * strlen + 1). */
static size_t esc(char *out, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c > 0x20 && c < 0x7f && c != '%') {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return o;
}

static bool field_ok(const char *s, size_t sz)
{
	return memchr(s, '\0', sz) != NULL;
}

static bool env_ok(const struct spool_env *env)
{
	if (!field_ok(env->from, sizeof(env->from)) || !field_ok(env->helo, sizeof(env->helo)) ||
	    !field_ok(env->client_ip, sizeof(env->client_ip)) ||
	    !field_ok(env->listener, sizeof(env->listener)) ||
	    !field_ok(env->tls, sizeof(env->tls)) || !field_ok(env->envid, sizeof(env->envid)))
		return false;
	if (env->arrival < 0 || env->body_type < 0 || env->body_type > SMTP_BODY_BINARYMIME ||
	    env->ret < 0 || env->ret > SMTP_RET_HDRS)
		return false;
	if (env->nrcpts < 1 || env->nrcpts > SPOOL_MAX_RCPTS || env->rcpts == NULL)
		return false;
	for (int i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		if (!field_ok(r->addr, sizeof(r->addr)) ||
		    !field_ok(r->mailbox, sizeof(r->mailbox)) ||
		    !field_ok(r->orcpt, sizeof(r->orcpt)) || (r->notify & ~SPOOL_NOTIFY_MASK))
			return false;
	}
	return true;
}

static int put_rec(struct spool_msg *m, const char *key, const char *val)
{
	char line[SPOOL_LINE];
	size_t k = strlen(key);
	memcpy(line, key, k);
	line[k++] = ' ';
	k += esc(line + k, val);
	line[k++] = '\n';
	return msg_put(m, line, k, true);
}

static int put_num(struct spool_msg *m, const char *key, long long v)
{
	char line[64];
	int k = snprintf(line, sizeof(line), "%s %lld\n", key, v);
	return msg_put(m, line, (size_t)k, true);
}

static int put_header(struct spool_msg *m, const struct spool_env *env)
{
	char line[SPOOL_LINE];

	if (msg_put(m, SPOOL_MAGIC "\n", sizeof(SPOOL_MAGIC), true) < 0 ||
	    put_rec(m, "qid", m->qid) < 0 || put_num(m, "arrival", (long long)env->arrival) < 0 ||
	    put_rec(m, "from", env->from) < 0 || put_rec(m, "helo", env->helo) < 0 ||
	    put_rec(m, "client-ip", env->client_ip) < 0 ||
	    put_rec(m, "listener", env->listener) < 0 || put_rec(m, "tls", env->tls) < 0 ||
	    put_num(m, "body-type", env->body_type) < 0 ||
	    put_num(m, "smtputf8", env->smtputf8 ? 1 : 0) < 0 || put_num(m, "ret", env->ret) < 0 ||
	    put_rec(m, "envid", env->envid) < 0 || put_num(m, "rcpts", env->nrcpts) < 0)
		return -1;
	for (int i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		size_t k = 0;
		memcpy(line, "rcpt ", 5);
		k = 5;
		k += esc(line + k, r->addr);
		line[k++] = ' ';
		k += esc(line + k, r->mailbox);
		k += (size_t)snprintf(line + k, sizeof(line) - k, " %u ", r->notify);
		k += esc(line + k, r->orcpt);
		line[k++] = '\n';
		if (msg_put(m, line, k, true) < 0)
			return -1;
	}
	return msg_put(m, "\n", 1, true);
}

struct spool_msg *spool_begin(struct spool *sp, const struct spool_env *env)
{
	struct spool_msg *m;
	int saved;
	bool own_qid;

	if (sp == NULL || env == NULL || !env_ok(env) || !field_ok(env->qid, sizeof(env->qid)) ||
	    (env->qid[0] != '\0' && !spool_qid_valid(env->qid))) {
		errno = EINVAL;
		return NULL;
	}
	m = xmalloc(sizeof(*m));
	m->sp = sp;
	m->fd = -1;
	m->st = MSG_WRITING;
	m->body_len = 0;
	m->in_body = false;
	m->len = 0;
	own_qid = env->qid[0] == '\0';
	for (int tries = 0; m->fd < 0; tries++) {
		if (own_qid)
			spool_new_qid(m->qid);
		else
			memcpy(m->qid, env->qid, QID_LEN + 1);
		m->fd = openat(sp->tmpfd, m->qid,
		               O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (m->fd < 0 && (errno != EEXIST || !own_qid || tries >= 8))
			goto fail;
	}
	if (crypto_generichash_init(&m->hash, NULL, 0, SPOOL_HASH) != 0) {
		errno = EIO;
		goto fail_unlink;
	}
	if (put_header(m, env) < 0)
		goto fail_unlink;
	m->in_body = true;
	return m;
fail_unlink:
	saved = errno;
	unlinkat(sp->tmpfd, m->qid, 0);
	errno = saved;
fail:
	saved = errno;
	if (m->fd >= 0)
		close(m->fd);
	free(m);
	errno = saved;
	return NULL;
}

const char *spool_msg_qid(const struct spool_msg *m)
{
	return m->qid;
}

int spool_write(struct spool_msg *m, const void *p, size_t n)
{
	if (m == NULL || !m->in_body) {
		errno = EINVAL;
		return -1;
	}
	if (msg_put(m, p, n, true) < 0)
		return -1;
	m->body_len += n;
	return 0;
}

int spool_finish(struct spool_msg *m)
{
	unsigned char h[SPOOL_HASH];
	char hex[SPOOL_HASH * 2 + 1];
	char line[SPOOL_TRAILER_MAX];
	int k;

	if (m == NULL || m->st != MSG_WRITING) {
		errno = EINVAL;
		return -1;
	}
	if (crypto_generichash_final(&m->hash, h, sizeof(h)) != 0) {
		m->st = MSG_FAILED;
		errno = EIO;
		return -1;
	}
	sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
	k = snprintf(line, sizeof(line), "\nEND %" PRIu64 " %s\n", m->body_len, hex);
	if (msg_put(m, line, (size_t)k, false) < 0 || msg_flush(m) < 0) {
		m->st = MSG_FAILED;
		return -1;
	}
	m->st = MSG_FINISHED;
	return 0;
}

static void msg_free(struct spool_msg *m, bool unlink_tmp)
{
	int saved = errno;
	if (unlink_tmp && unlinkat(m->sp->tmpfd, m->qid, 0) < 0 && errno != ENOENT)
		log_warn("event=spool_unlink_failed qid=%s errno=%d", m->qid, errno);
	if (m->fd >= 0)
		close(m->fd);
	free(m);
	errno = saved;
}

void spool_abort(struct spool_msg *m)
{
	if (m != NULL)
		msg_free(m, true);
}

int spool_commit(struct spool *sp, struct spool_msg **msgs, size_t n)
{
	bool *renamed;
	int rc = 0;
	int err = 0;
	size_t i, nren = 0;

	if (n == 0)
		return 0;
	renamed = xcalloc(n, sizeof(*renamed));
	for (i = 0; i < n; i++) {
		if (msgs[i] == NULL || msgs[i]->st != MSG_FINISHED || msgs[i]->sp != sp) {
			rc = -1;
			err = EINVAL;
		}
	}
	/* 1. data durable: never rename a file whose bytes might not be on disk. One message:
	 * its own fdatasync. A group: one syncfs() of the spool's file system writes them all
	 * with one device flush, where per-file syncs would each wait for the disk (file
	 * systems without a journal, or whose journal does not batch separate fsyncs). */
	if (rc == 0) {
		int r = n == 1 ? fdatasync(msgs[0]->fd) : syncfs(msgs[0]->fd);
		if (r < 0) {
			rc = -1;
			err = errno;
			log_err("event=spool_sync_failed n=%zu errno=%d", n, errno);
		}
	}
	/* 2. visible in queue/ */
	for (i = 0; rc == 0 && i < n; i++) {
		if (rename_noreplace(sp->tmpfd, msgs[i]->qid, sp->queuefd, msgs[i]->qid) < 0) {
			rc = -1;
			err = errno;
			log_err("event=spool_rename_failed qid=%s errno=%d", msgs[i]->qid, errno);
			break;
		}
		renamed[i] = true;
		nren++;
	}
	/* 3. the directory entries durable (also after a partial failure: those are complete) */
	if (nren > 0 && fsync(sp->queuefd) < 0) {
		if (rc == 0)
			err = errno;
		rc = -1;
		log_err("event=spool_dirsync_failed errno=%d", errno);
	}
	for (i = 0; i < n; i++)
		if (msgs[i] != NULL)
			msg_free(msgs[i], !renamed[i]);
	free(renamed);
	if (rc < 0)
		errno = err;
	return rc;
}

/* ---- reading ---------------------------------------------------------------------------- */

struct rd {
	int fd;
	uint64_t off; /* file offset of buf[0] */
	size_t pos, len;
	unsigned char buf[SPOOL_BUF];
};

/* Next line (without LF) into line; -1 at EOF, read error, NUL byte or overlong line. */
static int rd_line(struct rd *r, char *line, size_t cap, size_t *out_len, const char **why)
{
	size_t n = 0;
	for (;;) {
		if (r->pos == r->len) {
			ssize_t got;
			r->off += r->len;
			r->pos = r->len = 0;
			got = pread_full(r->fd, r->buf, sizeof(r->buf), r->off);
			if (got < 0) {
				*why = "read error";
				return -1;
			}
			if (got == 0) {
				*why = "header truncated";
				errno = EINVAL;
				return -1;
			}
			r->len = (size_t)got;
		}
		unsigned char c = r->buf[r->pos++];
		if (c == '\n')
			break;
		if (c == '\0' || c == '\r' || n + 1 >= cap) {
			*why = "bad header line";
			errno = EINVAL;
			return -1;
		}
		line[n++] = (char)c;
	}
	line[n] = '\0';
	*out_len = n;
	return 0;
}

static uint64_t rd_tell(const struct rd *r)
{
	return r->off + r->pos;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Inverse of esc() over s[0..n): canonical escapes only, no NUL, fits dst (size dstsz). */
static int unesc(char *dst, size_t dstsz, const char *s, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (o + 1 >= dstsz)
			return -1;
		if (c == '%') {
			int h, l;
			if (i + 2 >= n)
				return -1;
			h = hexval(s[i + 1]);
			l = hexval(s[i + 2]);
			if (h < 0 || l < 0)
				return -1;
			c = (unsigned char)(h * 16 + l);
			if (c == '\0' || (c > 0x20 && c < 0x7f && c != '%'))
				return -1;
			i += 2;
		} else if (c <= 0x20 || c >= 0x7f) {
			return -1;
		}
		dst[o++] = (char)c;
	}
	dst[o] = '\0';
	return 0;
}

/* Decimal without sign or leading zeros, <= max. */
static int parse_u64(const char *s, size_t n, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

/* "key value" with the expected key: returns the value (may be empty) or NULL. */
static const char *rec_val(const char *line, size_t n, const char *key, size_t *vlen)
{
	size_t k = strlen(key);
	if (n < k + 1 || memcmp(line, key, k) != 0 || line[k] != ' ')
		return NULL;
	*vlen = n - k - 1;
	return line + k + 1;
}

static int rec_str(struct rd *r, char *line, const char *key, char *dst, size_t dstsz,
                   const char **why)
{
	size_t n, vn;
	const char *v;
	if (rd_line(r, line, SPOOL_LINE, &n, why) < 0)
		return -1;
	v = rec_val(line, n, key, &vn);
	if (v == NULL || unesc(dst, dstsz, v, vn) < 0) {
		*why = key;
		errno = EINVAL;
		return -1;
	}
	return 0;
}

static int rec_num(struct rd *r, char *line, const char *key, uint64_t max, uint64_t *out,
                   const char **why)
{
	size_t n, vn;
	const char *v;
	if (rd_line(r, line, SPOOL_LINE, &n, why) < 0)
		return -1;
	v = rec_val(line, n, key, &vn);
	if (v == NULL || parse_u64(v, vn, max, out) < 0) {
		*why = key;
		errno = EINVAL;
		return -1;
	}
	return 0;
}

/* "rcpt addr mailbox notify orcpt": exactly four SP-separated fields. */
static int parse_rcpt(const char *line, size_t n, struct spool_rcpt *rc)
{
	const char *f[4];
	size_t fl[4];
	const char *v, *end;
	size_t vn;
	uint64_t notify;
	int k = 0;

	v = rec_val(line, n, "rcpt", &vn);
	if (v == NULL)
		return -1;
	end = v + vn;
	f[0] = v;
	for (const char *p = v; p < end; p++) {
		if (*p == ' ') {
			if (k == 3)
				return -1;
			fl[k] = (size_t)(p - f[k]);
			f[++k] = p + 1;
		}
	}
	if (k != 3)
		return -1;
	fl[3] = (size_t)(end - f[3]);
	if (unesc(rc->addr, sizeof(rc->addr), f[0], fl[0]) < 0 ||
	    unesc(rc->mailbox, sizeof(rc->mailbox), f[1], fl[1]) < 0 ||
	    parse_u64(f[2], fl[2], SPOOL_NOTIFY_MASK, &notify) < 0 ||
	    unesc(rc->orcpt, sizeof(rc->orcpt), f[3], fl[3]) < 0)
		return -1;
	rc->notify = (unsigned)notify;
	return 0;
}

/* Trailer "\nEND <len> <hex>\n" at the very end of the file. */
static int read_trailer(int fd, uint64_t size, uint64_t *body_end, uint64_t *body_len, char *hex)
{
	char t[SPOOL_TRAILER_MAX + 1];
	size_t tn = size < SPOOL_TRAILER_MAX ? (size_t)size : SPOOL_TRAILER_MAX;
	ssize_t got;
	char *nl, *sp1;
	size_t ln;

	got = pread_full(fd, t, tn, size - tn);
	if (got < 0)
		return -1;
	if ((size_t)got != tn || tn < 2 || t[tn - 1] != '\n') {
		errno = EINVAL;
		return -1;
	}
	t[tn - 1] = '\0';
	nl = memrchr(t, '\n', tn - 1);
	if (nl == NULL) {
		errno = EINVAL;
		return -1;
	}
	/* nl is the LF that starts the trailer; the line after it is "END <len> <hex>" */
	ln = (size_t)(t + tn - 1 - (nl + 1));
	if (ln < 4 || memcmp(nl + 1, "END ", 4) != 0) {
		errno = EINVAL;
		return -1;
	}
	sp1 = memchr(nl + 5, ' ', ln - 4);
	if (sp1 == NULL || parse_u64(nl + 5, (size_t)(sp1 - (nl + 5)), UINT64_MAX, body_len) < 0 ||
	    strlen(sp1 + 1) != SPOOL_HASH * 2) {
		errno = EINVAL;
		return -1;
	}
	memcpy(hex, sp1 + 1, SPOOL_HASH * 2 + 1);
	*body_end = size - tn + (uint64_t)(nl - t);
	return 0;
}

/* Hash bytes [0, end) of the file and compare with the trailer's checksum. */
static int check_hash(int fd, uint64_t end, const char *want_hex, unsigned char *buf)
{
	crypto_generichash_state st;
	unsigned char h[SPOOL_HASH];
	char hex[SPOOL_HASH * 2 + 1];
	uint64_t off = 0;

	if (crypto_generichash_init(&st, NULL, 0, SPOOL_HASH) != 0) {
		errno = EIO;
		return -1;
	}
	while (off < end) {
		size_t want = end - off < SPOOL_BUF ? (size_t)(end - off) : SPOOL_BUF;
		ssize_t got = pread_full(fd, buf, want, off);
		if (got < 0)
			return -1;
		if ((size_t)got != want) {
			errno = EINVAL; /* shrank under us */
			return -1;
		}
		crypto_generichash_update(&st, buf, want);
		off += want;
	}
	crypto_generichash_final(&st, h, sizeof(h));
	sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
	if (strcmp(hex, want_hex) != 0) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

static int parse_header(struct rd *r, const char *qid, struct spool_env *env, const char **why)
{
	char line[SPOOL_LINE];
	size_t n;
	uint64_t v;
	int cap = 0;

	if (rd_line(r, line, sizeof(line), &n, why) < 0)
		return -1;
	if (strcmp(line, SPOOL_MAGIC) != 0) {
		*why = "bad magic";
		errno = EINVAL;
		return -1;
	}
	if (rec_str(r, line, "qid", env->qid, sizeof(env->qid), why) < 0)
		return -1;
	if (!spool_qid_valid(env->qid) || (qid != NULL && strcmp(env->qid, qid) != 0)) {
		*why = "qid does not match file name";
		errno = EINVAL;
		return -1;
	}
	if (rec_num(r, line, "arrival", INT64_MAX, &v, why) < 0)
		return -1;
	env->arrival = (time_t)v;
	if (rec_str(r, line, "from", env->from, sizeof(env->from), why) < 0 ||
	    rec_str(r, line, "helo", env->helo, sizeof(env->helo), why) < 0 ||
	    rec_str(r, line, "client-ip", env->client_ip, sizeof(env->client_ip), why) < 0 ||
	    rec_str(r, line, "listener", env->listener, sizeof(env->listener), why) < 0 ||
	    rec_str(r, line, "tls", env->tls, sizeof(env->tls), why) < 0)
		return -1;
	if (rec_num(r, line, "body-type", SMTP_BODY_BINARYMIME, &v, why) < 0)
		return -1;
	env->body_type = (int)v;
	if (rec_num(r, line, "smtputf8", 1, &v, why) < 0)
		return -1;
	env->smtputf8 = v == 1;
	if (rec_num(r, line, "ret", SMTP_RET_HDRS, &v, why) < 0)
		return -1;
	env->ret = (int)v;
	if (rec_str(r, line, "envid", env->envid, sizeof(env->envid), why) < 0)
		return -1;
	if (rec_num(r, line, "rcpts", SPOOL_MAX_RCPTS, &v, why) < 0)
		return -1;
	if (v < 1) {
		*why = "no recipients";
		errno = EINVAL;
		return -1;
	}
	/* grow as records arrive: the count alone never decides how much we allocate */
	for (int i = 0; i < (int)v; i++) {
		if (rd_line(r, line, sizeof(line), &n, why) < 0)
			return -1;
		if (i == cap) {
			cap = cap == 0 ? 8 : cap * 2;
			if (cap > (int)v)
				cap = (int)v;
			struct spool_rcpt *nr = realloc(env->rcpts, (size_t)cap * sizeof(*nr));
			if (nr == NULL)
				fatal("out of memory");
			env->rcpts = nr;
		}
		memset(&env->rcpts[i], 0, sizeof(env->rcpts[i]));
		if (parse_rcpt(line, n, &env->rcpts[i]) < 0) {
			*why = "rcpt";
			errno = EINVAL;
			return -1;
		}
		env->nrcpts = i + 1;
	}
	if (rd_line(r, line, sizeof(line), &n, why) < 0)
		return -1;
	if (n != 0) {
		*why = "no blank line after envelope";
		errno = EINVAL;
		return -1;
	}
	return 0;
}

static int read_fd(int fd, const char *qid, struct spool_env *env, uint64_t *body_off,
                   uint64_t *body_len, const char **why)
{
	struct stat st;
	struct rd *r;
	char hex[SPOOL_HASH * 2 + 1];
	uint64_t end, blen;
	int rc = -1;

	memset(env, 0, sizeof(*env));
	*why = "read error";
	if (fstat(fd, &st) < 0)
		return -1;
	if (!S_ISREG(st.st_mode)) {
		*why = "not a regular file";
		errno = EINVAL;
		return -1;
	}
	if (read_trailer(fd, (uint64_t)st.st_size, &end, &blen, hex) < 0) {
		if (errno == EINVAL)
			*why = "no valid END record";
		return -1;
	}
	r = xmalloc(sizeof(*r));
	r->fd = fd;
	r->off = 0;
	r->pos = r->len = 0;
	if (check_hash(fd, end, hex, r->buf) < 0) {
		if (errno == EINVAL)
			*why = "checksum mismatch";
		goto out;
	}
	if (parse_header(r, qid, env, why) < 0)
		goto out;
	if (rd_tell(r) > end || end - rd_tell(r) != blen) {
		*why = "body length mismatch";
		errno = EINVAL;
		goto out;
	}
	*body_off = rd_tell(r);
	*body_len = blen;
	rc = 0;
out:
	free(r);
	if (rc < 0) {
		int saved = errno;
		spool_env_free(env);
		errno = saved;
	}
	return rc;
}

int spool_read_fd(int fd, struct spool_env *env, uint64_t *body_off, uint64_t *body_len)
{
	const char *why;
	if (sodium_init() < 0) {
		memset(env, 0, sizeof(*env));
		errno = EIO;
		return -1;
	}
	return read_fd(fd, NULL, env, body_off, body_len, &why);
}

static int read_qid(struct spool *sp, const char *qid, struct spool_env *env, uint64_t *body_off,
                    uint64_t *body_len, const char **why)
{
	int fd, rc, saved;

	memset(env, 0, sizeof(*env));
	if (!spool_qid_valid(qid)) {
		*why = "bad queue id";
		errno = EINVAL;
		return -1;
	}
	/* O_NONBLOCK: a FIFO planted in queue/ must not hang us in open(); fstat rejects it */
	fd = openat(sp->queuefd, qid, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		*why = "open failed";
		if (errno == ELOOP)
			errno = EINVAL; /* a symlink is not a message */
		return -1;
	}
	rc = read_fd(fd, qid, env, body_off, body_len, why);
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

int spool_read(struct spool *sp, const char *qid, struct spool_env *env, uint64_t *body_off,
               uint64_t *body_len)
{
	const char *why;
	return read_qid(sp, qid, env, body_off, body_len, &why);
}

void spool_env_free(struct spool_env *env)
{
	if (env == NULL)
		return;
	free(env->rcpts);
	env->rcpts = NULL;
	env->nrcpts = 0;
}

int spool_open_msg(struct spool *sp, const char *qid)
{
	if (!spool_qid_valid(qid)) {
		errno = EINVAL;
		return -1;
	}
	int fd = openat(sp->queuefd, qid, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	struct stat sb;
	if (fd < 0)
		return -1;
	if (fstat(fd, &sb) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	if (!S_ISREG(sb.st_mode)) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	return fd;
}

static void state_name(char *buf, size_t sz, const char *qid)
{
	snprintf(buf, sz, "%s" STATE_SUFFIX, qid);
}

int spool_remove(struct spool *sp, const char *qid)
{
	char st[QID_LEN + sizeof(STATE_SUFFIX)];

	if (!spool_qid_valid(qid)) {
		errno = EINVAL;
		return -1;
	}
	/* message first: a crash in between leaves an orphan state file (recover removes it),
	 * never a message without its state (which would deliver again) */
	if (unlinkat(sp->queuefd, qid, 0) < 0 && errno != ENOENT)
		return -1;
	state_name(st, sizeof(st), qid);
	if (unlinkat(sp->queuefd, st, 0) < 0 && errno != ENOENT)
		return -1;
	/* No directory sync: a removal lost in a crash only means the message is delivered
	 * again after restart (at least once, promise 1); syncing here would cost a journal
	 * commit per message. */
	return 0;
}

/* ---- per-recipient state ---------------------------------------------------------------- */

int spool_mark_done(struct spool *sp, const char *qid, int rcpt_index)
{
	char st[QID_LEN + sizeof(STATE_SUFFIX)];
	char line[48];
	size_t k = 0;
	bool created = true;
	struct stat sb;
	int fd, rc = -1, saved;

	if (!spool_qid_valid(qid) || rcpt_index < 0 || rcpt_index >= SPOOL_MAX_RCPTS) {
		errno = EINVAL;
		return -1;
	}
	state_name(st, sizeof(st), qid);
	fd = openat(sp->queuefd, st,
	            O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 && errno == EEXIST) {
		created = false;
		fd = openat(sp->queuefd, st,
		            O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	}
	if (fd < 0)
		return -1;
	if (!created) {
		/* A crash may have torn the last record; end it so ours starts on a fresh line
		 * (the torn record stays invalid: it lacks its " done" tail). O_RDWR is for
		 * reading that last byte. */
		unsigned char last;
		if (fstat(fd, &sb) < 0)
			goto out;
		if (sb.st_size > 0) {
			ssize_t got = pread_full(fd, &last, 1, (uint64_t)sb.st_size - 1);
			if (got != 1) {
				if (got >= 0)
					errno = EIO;
				goto out;
			}
			if (last != '\n')
				line[k++] = '\n';
		}
	}
	k += (size_t)snprintf(line + k, sizeof(line) - k, "rcpt %d done\n", rcpt_index);
	if (write_all(fd, line, k) < 0 || fdatasync(fd) < 0)
		goto out;
	if (created && fsync(sp->queuefd) < 0)
		goto out;
	rc = 0;
out:
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

/* One state line: exactly "rcpt <index> done". */
static int parse_state_line(const char *s, size_t n, int nrcpts)
{
	uint64_t v;
	const char *end = s + n;
	const char *sp1;
	if (n < 11 || memcmp(s, "rcpt ", 5) != 0 || memcmp(end - 5, " done", 5) != 0)
		return -1;
	sp1 = s + 5;
	if (parse_u64(sp1, (size_t)(end - 5 - sp1), (uint64_t)INT_MAX, &v) < 0 ||
	    v >= (uint64_t)nrcpts)
		return -1;
	return (int)v;
}

int spool_load_done(struct spool *sp, const char *qid, bool *done, int nrcpts)
{
	char st[QID_LEN + sizeof(STATE_SUFFIX)];
	char line[64];
	unsigned char buf[4096];
	size_t ln = 0;
	bool overlong = false;
	int fd, bad = 0;

	for (int i = 0; i < nrcpts; i++)
		done[i] = false;
	if (!spool_qid_valid(qid)) {
		errno = EINVAL;
		return -1;
	}
	state_name(st, sizeof(st), qid);
	fd = openat(sp->queuefd, st, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	for (;;) {
		ssize_t got = read(fd, buf, sizeof(buf));
		if (got < 0) {
			if (errno == EINTR)
				continue;
			int saved = errno;
			close(fd);
			errno = saved;
			return -1;
		}
		if (got == 0)
			break;
		for (ssize_t i = 0; i < got; i++) {
			if (buf[i] != '\n') {
				if (ln < sizeof(line))
					line[ln++] = (char)buf[i];
				else
					overlong = true;
				continue;
			}
			int idx = overlong ? -1 : parse_state_line(line, ln, nrcpts);
			if (idx >= 0)
				done[idx] = true;
			else if (ln > 0)
				bad++;
			ln = 0;
			overlong = false;
		}
	}
	close(fd);
	/* a last line without LF is a torn append: not done (at worst delivered again) */
	if (bad > 0)
		log_warn("event=spool_state_bad_lines qid=%s lines=%d", qid, bad);
	return 0;
}

/* ---- recovery --------------------------------------------------------------------------- */

static int cmp_qid(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

static int list_dir(int dirfd, char ***names, size_t *count)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *de;
	size_t cap = 0;

	*names = NULL;
	*count = 0;
	if (fd < 0)
		return -1;
	d = fdopendir(fd);
	if (d == NULL) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (de == NULL)
			break;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (*count == cap) {
			cap = cap ? cap * 2 : 64;
			char **nn = realloc(*names, cap * sizeof(*nn));
			if (nn == NULL)
				fatal("out of memory");
			*names = nn;
		}
		(*names)[(*count)++] = xstrdup(de->d_name);
	}
	int saved = errno;
	closedir(d);
	errno = saved;
	return saved == 0 ? 0 : -1;
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Moves queue/<name> to corrupt/<name> (or <name>.<n> if taken). */
static int move_corrupt(struct spool *sp, int *corruptfd, const char *name)
{
	char dst[NAME_MAX + 1];

	if (*corruptfd < 0) {
		*corruptfd = open_dir_at(sp->dirfd, "corrupt", true);
		if (*corruptfd < 0)
			return -1;
	}
	for (int i = 0; i < 1000; i++) {
		int n = i == 0 ? snprintf(dst, sizeof(dst), "%s", name)
		               : snprintf(dst, sizeof(dst), "%.200s.%d", name, i);
		if (n < 0 || (size_t)n >= sizeof(dst))
			continue;
		if (rename_noreplace(sp->queuefd, name, *corruptfd, dst) == 0)
			return 0;
		if (errno != EEXIST)
			return -1;
	}
	errno = EEXIST;
	return -1;
}

static bool is_state_name(const char *name, char *qid_out)
{
	size_t n = strlen(name);
	if (n != QID_LEN + strlen(STATE_SUFFIX) || strcmp(name + QID_LEN, STATE_SUFFIX) != 0)
		return false;
	memcpy(qid_out, name, QID_LEN);
	qid_out[QID_LEN] = '\0';
	return spool_qid_valid(qid_out);
}

static int recover_tmp(struct spool *sp)
{
	char **names;
	size_t n;
	char safe[128];

	if (list_dir(sp->tmpfd, &names, &n) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		/* never acknowledged: the client did not get 250 for these */
		if (unlinkat(sp->tmpfd, names[i], 0) < 0 && errno != ENOENT)
			log_warn("event=spool_tmp_unlink_failed name=\"%s\" errno=%d",
			         log_safe(safe, sizeof(safe), names[i], strlen(names[i])), errno);
	}
	if (n > 0) {
		log_info("event=spool_tmp_removed count=%zu", n);
		if (fsync(sp->tmpfd) < 0)
			log_warn("event=spool_tmp_dirsync_failed errno=%d", errno);
	}
	free_names(names, n);
	return 0;
}

int spool_recover(struct spool *sp, void (*fn)(void *arg, const char *qid), void *arg)
{
	char **names = NULL;
	size_t n = 0, nvalid = 0;
	char(*valid)[QID_LEN + 1] = NULL;
	int corruptfd = -1;
	int rc = -1;
	bool moved = false, changed = false;
	char safe[128];

	if (recover_tmp(sp) < 0)
		return -1;
	if (list_dir(sp->queuefd, &names, &n) < 0)
		return -1;
	valid = xcalloc(n ? n : 1, sizeof(*valid));

	/* messages first */
	for (size_t i = 0; i < n; i++) {
		char q[QID_LEN + 1];
		struct stat sb;
		struct spool_env env;
		uint64_t off, len;
		const char *why = "unknown file";

		if (is_state_name(names[i], q))
			continue;
		if (fstatat(sp->queuefd, names[i], &sb, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			goto out;
		}
		if (S_ISDIR(sb.st_mode)) {
			log_warn("event=spool_queue_stray_dir name=\"%s\"",
			         log_safe(safe, sizeof(safe), names[i], strlen(names[i])));
			continue;
		}
		if (spool_qid_valid(names[i]) && S_ISREG(sb.st_mode)) {
			if (read_qid(sp, names[i], &env, &off, &len, &why) == 0) {
				spool_env_free(&env);
				memcpy(valid[nvalid++], names[i], QID_LEN + 1);
				continue;
			}
			if (errno == ENOENT)
				continue;
			if (errno != EINVAL) {
				log_err("event=spool_recover_read_failed qid=%s errno=%d", names[i],
				        errno);
				goto out;
			}
		} else if (!S_ISREG(sb.st_mode)) {
			why = "not a regular file";
		}
		log_warn("event=spool_corrupt name=\"%s\" reason=\"%s\" action=moved_to_corrupt",
		         log_safe(safe, sizeof(safe), names[i], strlen(names[i])), why);
		if (move_corrupt(sp, &corruptfd, names[i]) < 0) {
			log_err("event=spool_corrupt_move_failed errno=%d", errno);
			goto out;
		}
		moved = changed = true;
	}
	qsort(valid, nvalid, sizeof(*valid), cmp_qid);

	/* then state files: keep those of valid messages, follow corrupt ones, drop orphans */
	for (size_t i = 0; i < n; i++) {
		char q[QID_LEN + 1];
		if (!is_state_name(names[i], q))
			continue;
		if (bsearch(q, valid, nvalid, sizeof(*valid), cmp_qid) != NULL)
			continue;
		if (corruptfd >= 0 && faccessat(corruptfd, q, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
			/* its message was just moved aside: keep the state with it */
			if (move_corrupt(sp, &corruptfd, names[i]) < 0)
				goto out;
			moved = true;
		} else if (unlinkat(sp->queuefd, names[i], 0) < 0 && errno != ENOENT) {
			goto out;
		}
		changed = true;
	}
	if (moved && fsync(corruptfd) < 0)
		goto out;
	if (changed && fsync(sp->queuefd) < 0)
		goto out;

	for (size_t i = 0; i < nvalid; i++)
		if (fn != NULL)
			fn(arg, valid[i]);
	rc = (int)nvalid;
out:
	if (rc < 0) {
		int saved = errno;
		if (corruptfd >= 0)
			close(corruptfd);
		errno = saved;
	} else if (corruptfd >= 0) {
		close(corruptfd);
	}
	free(valid);
	free_names(names, n);
	return rc;
}
