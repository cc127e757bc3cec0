/* `sealmail queue list|show|retry|hold|release|delete`: finds the data directory from the
 * configuration, asks the running queue process over <data_dir>/run/queue.sock (one
 * IPC_QUEUE_REQ, then IPC_QUEUE_DATA frames up to IPC_QUEUE_END, queue/admin.h) with a
 * blocking socket and a 10 s timeout, and prints the answer (queue_print.c). Runs in the
 * CLI process. Input: argv, the config file, and frames from the queue process (checked:
 * version, type, request id, frame and reply size caps). */
#include "queue/admin.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "cli/queue_cli_int.h"
#include "conf/conf.h"
#include "limits.h"
#include "msg/spool.h"
#include "net/ipc.h"
#include "store/cli_common.h"

/* No answer (or no progress sending) for this long: the queue process is stuck. */
#define QCLI_TIMEOUT_S 10
/* The request id we send; every reply frame must carry it. */
#define QCLI_REQ_ID 1

static const char usage_text[] =
    "usage: sealmail queue list [--json] [-c FILE]\n"
    "       sealmail queue show ID [--json] [-c FILE]\n"
    "       sealmail queue retry|hold|release|delete ID|ALL [--json] [-c FILE]\n"
    "Asks the running queue process (sealmail serve) through <data_dir>/run/queue.sock.\n";

static const struct {
	const char *name;
	enum qcli_cmd cmd;
} commands[] = {
    {"list", QCLI_LIST}, {"show", QCLI_SHOW},       {"retry", QCLI_RETRY},
    {"hold", QCLI_HOLD}, {"release", QCLI_RELEASE}, {"delete", QCLI_DELETE},
};

struct qcli_opts {
	const char *conf;
	bool json;
	bool help;
	const char *pos[2]; /* command, ID */
	int npos;
	enum qcli_cmd cmd;
	char arg[32]; /* ID upper-cased, "ALL", or "" */
};

static int usage_error(const char *what, const char *arg)
{
	char b[64];
	if (arg != NULL)
		fprintf(stderr, "sealmail queue: %s %s\n%s", what, safe(b, sizeof(b), arg),
		        usage_text);
	else
		fprintf(stderr, "sealmail queue: %s\n%s", what, usage_text);
	return EX_USAGE;
}

/* argv[0] is the command word (or "queue" before it); options may come anywhere. */
static int parse_args(int argc, char **argv, struct qcli_opts *o)
{
	bool opts = true;
	int i = 0;

	memset(o, 0, sizeof(*o));
	if (argc > 0 && strcmp(argv[0], "queue") == 0)
		i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (opts && strcmp(a, "--") == 0) {
			opts = false;
		} else if (opts && (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 ||
		                    strcmp(a, "help") == 0)) {
			o->help = true;
		} else if (opts && strcmp(a, "--json") == 0) {
			o->json = true;
		} else if (opts && (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0)) {
			if (i + 1 >= argc)
				return usage_error("option needs a value:", a);
			o->conf = argv[++i];
		} else if (opts && strncmp(a, "-c", 2) == 0 && a[2] != '\0') {
			o->conf = a + 2;
		} else if (opts && strncmp(a, "--config=", 9) == 0) {
			o->conf = a + 9;
		} else if (opts && a[0] == '-' && a[1] != '\0') {
			return usage_error("unknown option", a);
		} else if (o->npos == 2) {
			return usage_error("too many arguments:", a);
		} else {
			o->pos[o->npos++] = a;
		}
	}
	if (o->help)
		return 0;
	if (o->conf != NULL && o->conf[0] == '\0')
		return usage_error("-c needs a file name", NULL);
	if (o->npos == 0)
		return usage_error("which command?", NULL);

	size_t c = 0;
	while (c < sizeof(commands) / sizeof(commands[0]) && strcmp(commands[c].name, o->pos[0]))
		c++;
	if (c == sizeof(commands) / sizeof(commands[0]))
		return usage_error("unknown command", o->pos[0]);
	o->cmd = commands[c].cmd;
	if (o->cmd == QCLI_LIST)
		return o->npos == 1 ? 0 : usage_error("list takes no argument:", o->pos[1]);
	if (o->npos < 2)
		return usage_error(o->cmd == QCLI_SHOW ? "show needs a queue ID"
		                                       : "which message? give an ID or ALL",
		                   NULL);

	const char *id = o->pos[1];
	if (strcasecmp(id, "ALL") == 0) {
		if (o->cmd == QCLI_SHOW)
			return usage_error("show takes one queue ID, not", id);
		snprintf(o->arg, sizeof(o->arg), "ALL");
		return 0;
	}
	/* Crockford base32 reads the same in either case; ids are written upper case. */
	size_t n = strlen(id);
	if (n >= sizeof(o->arg))
		return usage_error("not a queue ID:", id);
	for (size_t k = 0; k <= n; k++)
		o->arg[k] = (char)toupper((unsigned char)id[k]);
	if (!spool_qid_valid(o->arg))
		return usage_error("not a queue ID (16 characters like 01JD3K7Q9X4M2B7C):", id);
	return 0;
}

/* Config (-c FILE, or what conf_pick_path finds, or the embedded defaults) -> the socket
 * path. 0, or an exit code (said). */
static int socket_path(const char *conf_path, char *out, size_t outsz)
{
	struct conf_error cerr;
	struct conf *c = calloc(1, sizeof(*c)); /* large (certificate paths): not on the stack */
	int rc = 0;

	if (c == NULL) {
		fprintf(stderr, "sealmail queue: out of memory\n");
		return EX_OSERR;
	}
	conf_defaults(c);
	const char *path = conf_pick_path(conf_path);
	memset(&cerr, 0, sizeof(cerr));
	if (path != NULL && conf_load(path, c, &cerr) != 0) {
		fprintf(stderr, "sealmail queue: %s\n",
		        cerr.msg[0] ? cerr.msg : "configuration error");
		rc = EX_CONFIG;
	} else {
		int n = snprintf(out, outsz, "%s/run/queue.sock", c->data_dir);
		if (n < 0 || (size_t)n >= outsz) {
			fprintf(stderr, "sealmail queue: data directory path too long\n");
			rc = EX_CONFIG;
		}
	}
	free(c);
	return rc;
}

/* ---- the exchange ---- */

/* Outcomes of one socket operation. */
enum xfer { QX_OK = 0, QX_EOF, QX_TIMEOUT, QX_ERR };

static enum xfer send_all(int fd, const void *p, size_t n)
{
	const char *b = p;
	while (n > 0) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? QX_TIMEOUT : QX_ERR;
		b += w;
		n -= (size_t)w;
	}
	return QX_OK;
}

static enum xfer recv_all(int fd, void *p, size_t n)
{
	char *b = p;
	while (n > 0) {
		ssize_t r = recv(fd, b, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? QX_TIMEOUT : QX_ERR;
		if (r == 0)
			return QX_EOF;
		b += r;
		n -= (size_t)r;
	}
	return QX_OK;
}

static int xfer_failed(enum xfer x, const char *sock)
{
	char b[PATH_MAX];
	safe(b, sizeof(b), sock);
	if (x == QX_TIMEOUT)
		fprintf(stderr,
		        "sealmail queue: no answer from the queue process at %s within %d s\n", b,
		        QCLI_TIMEOUT_S);
	else if (x == QX_EOF)
		fprintf(stderr,
		        "sealmail queue: the queue process at %s closed the connection "
		        "before answering\n",
		        b);
	else
		fprintf(stderr, "sealmail queue: talking to the queue process at %s: %s\n", b,
		        strerror(errno));
	return EX_UNAVAILABLE;
}

static int bad_frame(const char *why)
{
	fprintf(stderr, "sealmail queue: bad reply from the queue process: %s\n", why);
	return EX_PROTOCOL;
}

/* The END frame's "code\0message": its code (the message said on stderr when not 0), or
 * -1 when malformed. */
static int end_code(const char *p, size_t n)
{
	char code[8], msg[512];
	size_t cl = strnlen(p, n);
	char *e;

	if (cl == 0 || cl >= sizeof(code) || strspn(p, "0123456789") != cl)
		return -1;
	memcpy(code, p, cl);
	code[cl] = '\0';
	long v = strtol(code, &e, 10);
	if (v < 0 || v > 255)
		return -1;
	if (v != 0) {
		const char *m = cl < n ? p + cl + 1 : "";
		fprintf(stderr, "sealmail queue: %s\n",
		        m[0] ? safe(msg, sizeof(msg), m) : "the queue process refused the request");
	}
	return (int)v;
}

/* Sends the request and collects the DATA payloads into *out (malloc'd, NUL-terminated,
 * *outlen bytes) until END. Returns 0 with the reply, or an exit code (said). */
static int exchange(int fd, const char *sock, const struct qcli_opts *o, char **out, size_t *outlen)
{
	const char *cmd = commands[0].name;
	char req[64];
	char *frame = NULL, *data = NULL;
	size_t len = 0, cap = 0;
	struct ipc_hdr h;
	enum xfer x;
	int rc;

	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (commands[i].cmd == o->cmd)
			cmd = commands[i].name;
	/* "command\0argument", as the other IPC requests: no NUL after the last field */
	int n = snprintf(req, sizeof(req), "%s%c%s", cmd, '\0', o->arg);
	h = (struct ipc_hdr){
	    .len = (uint32_t)n, .type = IPC_QUEUE_REQ, .version = IPC_VERSION, .id = QCLI_REQ_ID};
	if ((x = send_all(fd, &h, sizeof(h))) != QX_OK ||
	    (x = send_all(fd, req, (size_t)n)) != QX_OK)
		return xfer_failed(x, sock);

	frame = malloc(LIM_IPC_FRAME + 1);
	if (frame == NULL) {
		rc = EX_OSERR;
		goto out;
	}
	for (;;) {
		if ((x = recv_all(fd, &h, sizeof(h))) != QX_OK) {
			rc = xfer_failed(x, sock);
			goto out;
		}
		if (h.version != IPC_VERSION) {
			rc = bad_frame("wrong IPC version (is the server the same sealmail?)");
			goto out;
		}
		if (h.len > LIM_IPC_FRAME) {
			rc = bad_frame("frame too long");
			goto out;
		}
		if (h.id != QCLI_REQ_ID) {
			rc = bad_frame("reply to another request");
			goto out;
		}
		if ((x = recv_all(fd, frame, h.len)) != QX_OK) {
			rc = xfer_failed(x, sock);
			goto out;
		}
		frame[h.len] = '\0';
		if (h.type == IPC_QUEUE_END)
			break;
		if (h.type != IPC_QUEUE_DATA) {
			rc = bad_frame("unexpected frame type");
			goto out;
		}
		if (len + h.len > QCLI_REPLY_MAX) {
			rc = bad_frame("reply larger than 64 MiB");
			goto out;
		}
		if (len + h.len + 1 > cap) {
			size_t ncap = cap ? cap : 65536;
			while (ncap < len + h.len + 1)
				ncap *= 2;
			char *nd = realloc(data, ncap);
			if (nd == NULL) {
				rc = EX_OSERR;
				goto out;
			}
			data = nd;
			cap = ncap;
		}
		memcpy(data + len, frame, h.len);
		len += h.len;
	}
	rc = end_code(frame, h.len);
	if (rc < 0) {
		rc = bad_frame("malformed end of reply");
		goto out;
	}
	if (rc == 0) {
		if (data == NULL && (data = malloc(1)) == NULL) {
			rc = EX_OSERR;
			goto out;
		}
		data[len] = '\0';
		*out = data;
		*outlen = len;
		data = NULL;
	}
out:
	if (rc == EX_OSERR)
		fprintf(stderr, "sealmail queue: out of memory\n");
	free(frame);
	free(data);
	return rc;
}

/* A blocking connection to the queue process, with send and receive timeouts. -1 with an
 * exit code in *code (said). */
static int connect_queue(const char *sock, int *code)
{
	struct timeval tv = {.tv_sec = QCLI_TIMEOUT_S, .tv_usec = 0};
	char b[PATH_MAX];
	int fd = ipc_connect_unix(sock);

	if (fd < 0) {
		int e = errno;
		safe(b, sizeof(b), sock);
		if (e == EACCES || e == EPERM) {
			fprintf(stderr,
			        "sealmail queue: cannot reach the queue process at %s: %s "
			        "(run this as root or as the user sealmail runs as)\n",
			        b, strerror(e));
			*code = EX_NOPERM;
		} else {
			fprintf(stderr,
			        "sealmail queue: cannot reach the queue process at %s: %s "
			        "(is sealmail serve running?)\n",
			        b, strerror(e));
			*code = EX_UNAVAILABLE;
		}
		return -1;
	}
	/* ipc_connect_unix leaves the socket non-blocking (for event loops); we wait instead */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
		fprintf(stderr, "sealmail queue: socket: %s\n", strerror(errno));
		close(fd);
		*code = EX_OSERR;
		return -1;
	}
	return fd;
}

/* The list table fills a terminal at least QCLI_TABLE_WIDTH wide; into a pipe or file it
 * is never cut (grep must see whole reasons). */
static size_t table_width(void)
{
	struct winsize ws;
	if (!isatty(STDOUT_FILENO))
		return 0;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > QCLI_TABLE_WIDTH)
		return ws.ws_col;
	return QCLI_TABLE_WIDTH;
}

int queue_cli(int argc, char **argv)
{
	struct qcli_opts o;
	char sock[PATH_MAX];
	char *reply = NULL;
	size_t len = 0;
	int rc, fd;

	rc = parse_args(argc, argv, &o);
	if (rc != 0)
		return rc;
	if (o.help) {
		fputs(usage_text, stdout);
		return cli_finish(0);
	}
	rc = socket_path(o.conf, sock, sizeof(sock));
	if (rc != 0)
		return rc;
	fd = connect_queue(sock, &rc);
	if (fd < 0)
		return rc;
	rc = exchange(fd, sock, &o, &reply, &len);
	close(fd);
	if (rc != 0)
		return rc;
	rc = qcli_print(stdout, o.cmd, o.json, reply, len, time(NULL), table_width());
	free(reply);
	return cli_finish(rc);
}
