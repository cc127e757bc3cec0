/* Local delivery into Maildir (https://cr.yp.to/proto/maildir.html): a unique file in tmp/,
 * synced, linked into new/, new/ synced — only then is the copy delivered.
 * Runs in the queue process. Untrusted input: the mailbox address (mapped to a path with
 * every unusual byte percent-encoded, traversal refused) and the message bytes, which are
 * copied verbatim from an already checked spool file. */
#include "queue/maildir.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"

#define MAILDIR_BUF (64 * 1024)
/* sanitised host name kept in file names (the rest of the name is < 80 bytes) */
#define MAILDIR_HOST_MAX 64

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

static int fsync_path(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc, saved;
	if (fd < 0)
		return -1;
	rc = fsync(fd);
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

/* mkdir -p with mode 0700; each directory we create has its parent synced so the new entry
 * survives a crash. */
static int mkdirs(const char *path)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(buf)) {
		errno = n == 0 ? EINVAL : ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, path, n + 1);
	while (n > 1 && buf[n - 1] == '/')
		buf[--n] = '\0';
	for (size_t i = 1; i <= n; i++) {
		if ((buf[i] != '/' && buf[i] != '\0') || buf[i - 1] == '/')
			continue;
		char save = buf[i];
		buf[i] = '\0';
		if (mkdir(buf, 0700) == 0) {
			char *slash = strrchr(buf, '/');
			int rc;
			if (slash == NULL) {
				rc = fsync_path(".");
			} else if (slash == buf) {
				rc = fsync_path("/");
			} else {
				*slash = '\0';
				rc = fsync_path(buf);
				*slash = '/';
			}
			if (rc < 0)
				return -1;
		} else if (errno != EEXIST) {
			return -1;
		}
		buf[i] = save;
	}
	return 0;
}

static int open_sub(const char *root, const char *sub)
{
	char p[PATH_MAX];
	int n = snprintf(p, sizeof(p), "%s/%s", root, sub);
	if (n < 0 || (size_t)n >= sizeof(p)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static int make_maildir(const char *root)
{
	static const char *subs[] = {"tmp", "new", "cur"};
	char p[PATH_MAX];

	if (mkdirs(root) < 0)
		return -1;
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		int n = snprintf(p, sizeof(p), "%s/%s", root, subs[i]);
		if (n < 0 || (size_t)n >= sizeof(p)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		if (mkdirs(p) < 0)
			return -1;
	}
	return 0;
}

/* Maildir: '/' and ':' in the host name become \057 and \072; we also encode ',' (it starts
 * the ",S=" size field) and anything unprintable. */
static const char *host_part(void)
{
	static char host[MAILDIR_HOST_MAX + 1];
	char raw[256];
	size_t o = 0;

	if (host[0] != '\0')
		return host;
	if (gethostname(raw, sizeof(raw)) < 0 || raw[0] == '\0')
		snprintf(raw, sizeof(raw), "localhost");
	raw[sizeof(raw) - 1] = '\0';
	for (const char *s = raw; *s && o + 4 < sizeof(host); s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '/' || c == ':' || c == ',' || c == '\\' || c <= 0x20 || c >= 0x7f) {
			snprintf(host + o, sizeof(host) - o, "\\%03o", c);
			o += 4;
		} else {
			host[o++] = (char)c;
		}
	}
	host[o] = '\0';
	return host;
}

static void unique_name(char *name, size_t sz, uint64_t size)
{
	struct timeval tv;
	uint64_t rnd;

	if (gettimeofday(&tv, NULL) < 0) {
		tv.tv_sec = time(NULL);
		tv.tv_usec = 0;
	}
	if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		static uint64_t counter;
		/* O_EXCL still guards against a clash */
		rnd = ((uint64_t)tv.tv_usec << 32) ^ (uint64_t)getpid() ^ ++counter;
	}
	snprintf(name, sz, "%lld.M%06ldP%ldR%016" PRIx64 ".%s,S=%" PRIu64, (long long)tv.tv_sec,
	         (long)tv.tv_usec, (long)getpid(), rnd, host_part(), size);
}

/* prefix, then body_len bytes of fd from body_off, through one 64 KiB buffer. */
static int copy_in(int out, const char *prefix, size_t prefix_len, int in, uint64_t off,
                   uint64_t len)
{
	unsigned char *buf = xmalloc(MAILDIR_BUF);
	size_t fill = 0;
	int rc = -1, saved;

	if (prefix_len >= MAILDIR_BUF) {
		if (write_all(out, prefix, prefix_len) < 0)
			goto out;
	} else if (prefix_len > 0) {
		memcpy(buf, prefix, prefix_len);
		fill = prefix_len;
	}
	while (len > 0) {
		size_t want = MAILDIR_BUF - fill;
		if (want > len)
			want = (size_t)len;
		ssize_t got = pread(in, buf + fill, want, (off_t)off);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			goto out;
		}
		if (got == 0) {
			errno = EIO; /* spool file shorter than its envelope said */
			goto out;
		}
		fill += (size_t)got;
		off += (uint64_t)got;
		len -= (uint64_t)got;
		if (fill == MAILDIR_BUF) {
			if (write_all(out, buf, fill) < 0)
				goto out;
			fill = 0;
		}
	}
	if (fill > 0 && write_all(out, buf, fill) < 0)
		goto out;
	rc = 0;
out:
	saved = errno;
	free(buf);
	errno = saved;
	return rc;
}

int maildir_deliver(const char *root, const char *prefix, size_t prefix_len, int fd,
		    uint64_t body_off, uint64_t body_len, char *out_name)
{
	char name[MAILDIR_NAME_MAX];
	if (maildir_stage(root, prefix, prefix_len, fd, body_off, body_len, name) < 0)
		return -1;
	if (maildir_sync_staged(root, name, false) < 0 || maildir_publish(root, name) < 0) {
		int saved = errno;
		maildir_unstage(root, name);
		errno = saved;
		return -1;
	}
	if (maildir_sync_new(root) < 0)
		return -1; /* linked but not known durable: the caller retries (at least once) */
	if (out_name != NULL)
		snprintf(out_name, MAILDIR_NAME_MAX, "%s", name);
	return 0;
}

int maildir_stage(const char *root, const char *prefix, size_t prefix_len, int fd,
		  uint64_t body_off, uint64_t body_len, char *out_name)
{
	char name[MAILDIR_NAME_MAX];
	int tmpfd = -1, f = -1, rc = -1, saved;
	bool in_tmp = false;

	if (root == NULL || root[0] == '\0' || (prefix == NULL && prefix_len > 0) ||
	    body_len > UINT64_MAX - prefix_len || out_name == NULL) {
		errno = EINVAL;
		return -1;
	}
	tmpfd = open_sub(root, "tmp");
	if (tmpfd < 0 && errno == ENOENT) {
		if (make_maildir(root) < 0)
			goto out;
		tmpfd = open_sub(root, "tmp");
	}
	if (tmpfd < 0)
		goto out;
	for (int tries = 0;; tries++) {
		unique_name(name, sizeof(name), (uint64_t)prefix_len + body_len);
		f = openat(tmpfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (f >= 0)
			break;
		if (errno != EEXIST || tries >= 4)
			goto out;
	}
	in_tmp = true;
	if (copy_in(f, prefix, prefix_len, fd, body_off, body_len) < 0)
		goto out;
	{
		int cf = f;
		f = -1;
		if (close(cf) < 0)
			goto out;
	}
	in_tmp = false;
	snprintf(out_name, MAILDIR_NAME_MAX, "%s", name);
	rc = 0;
out:
	saved = errno;
	if (f >= 0)
		close(f);
	if (in_tmp && unlinkat(tmpfd, name, 0) < 0 && errno != ENOENT)
		log_warn("event=maildir_cleanup_failed errno=%d", errno);
	if (tmpfd >= 0)
		close(tmpfd);
	errno = saved;
	return rc;
}

int maildir_publish(const char *root, const char *name)
{
	int tmpfd = open_sub(root, "tmp"), newfd = open_sub(root, "new"), rc = -1, saved;
	if (tmpfd < 0 || newfd < 0)
		goto out;
	if (linkat(tmpfd, name, newfd, name, 0) == 0) {
		unlinkat(tmpfd, name, 0);
		rc = 0;
	} else if (errno == EPERM || errno == ENOTSUP || errno == EOPNOTSUPP) {
		rc = renameat2(tmpfd, name, newfd, name, RENAME_NOREPLACE);
	}
out:
	saved = errno;
	if (tmpfd >= 0)
		close(tmpfd);
	if (newfd >= 0)
		close(newfd);
	errno = saved;
	return rc;
}

void maildir_unstage(const char *root, const char *name)
{
	int tmpfd = open_sub(root, "tmp");
	if (tmpfd < 0)
		return;
	if (unlinkat(tmpfd, name, 0) < 0 && errno != ENOENT)
		log_warn("event=maildir_cleanup_failed errno=%d", errno);
	close(tmpfd);
}

int maildir_sync_staged(const char *root, const char *name, bool start_only)
{
	int tmpfd = open_sub(root, "tmp");
	if (tmpfd < 0)
		return -1;
	int fd = openat(tmpfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	int saved = errno, rc = -1;
	close(tmpfd);
	if (fd < 0) {
		errno = saved;
		return -1;
	}
	rc = start_only ? sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) : fdatasync(fd);
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

int maildir_sync_fs(const char *root)
{
	int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = syncfs(fd);
	int saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

int maildir_sync_new(const char *root)
{
	int fd = open_sub(root, "new");
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	int saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

/* Lower-cases ASCII and percent-encodes every byte outside [a-z0-9._+-]. */
static int encode_part(char *out, size_t outsz, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		bool plain = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
		             c == '_' || c == '+' || c == '-';
		if (o + (plain ? 1 : 3) >= outsz)
			return -1;
		if (plain) {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return 0;
}

static bool bad_component(const char *s, size_t n)
{
	return n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
}

int maildir_path(const char *mail_root, const char *mailbox, char *out, size_t outsz)
{
	char loc[NAME_MAX + 1], dom[NAME_MAX + 1];
	const char *at;
	size_t rootlen, n;
	int w;

	if (mail_root == NULL || mailbox == NULL || out == NULL || mail_root[0] == '\0') {
		errno = EINVAL;
		return -1;
	}
	/* no separators or control bytes at all: "a/b@c" or "../x@y" are refused, not mapped */
	for (const char *p = mailbox; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '/' || c < 0x20 || c == 0x7f) {
			errno = EINVAL;
			return -1;
		}
	}
	at = strrchr(mailbox, '@'); /* a quoted local part may itself contain '@' */
	n = strlen(mailbox);
	if (at == NULL || bad_component(mailbox, (size_t)(at - mailbox)) ||
	    bad_component(at + 1, n - (size_t)(at + 1 - mailbox))) {
		errno = EINVAL;
		return -1;
	}
	if (encode_part(loc, sizeof(loc), mailbox, (size_t)(at - mailbox)) < 0 ||
	    encode_part(dom, sizeof(dom), at + 1, strlen(at + 1)) < 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	rootlen = strlen(mail_root);
	while (rootlen > 1 && mail_root[rootlen - 1] == '/')
		rootlen--;
	if (rootlen > INT_MAX) {
		errno = ENAMETOOLONG;
		return -1;
	}
	w = snprintf(out, outsz, "%.*s%s%s/%s/", (int)rootlen, mail_root,
	             mail_root[rootlen - 1] == '/' ? "" : "/", dom, loc);
	if (w < 0 || (size_t)w >= outsz) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}
