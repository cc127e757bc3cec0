/* The master process (root when started as root): binds the listeners (one SO_REUSEPORT
 * socket per worker, steered by client address so per-IP limits are exact), builds the TLS
 * contexts (workers never read key files), forks and restarts children, reloads on SIGHUP
 * and on certificate renewal, drains on SIGTERM. Untrusted input: none (no client traffic). */
#include "master.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "lookup/lookup.h"
#include "msg/spool.h"
#include "net/ipc.h"
#include "net/tls.h"
#include "queue/queue.h"
#include "smtp/session.h"
#include "smtp/worker.h"
#include "store/store.h"
#include "util/log.h"

#define MAX_WORKERS 256
/* lookup, queue, the current workers and old generations still draining after reloads */
#define MAX_CHILDREN (4 * MAX_WORKERS + 2)
#define CERT_CHECK_SECONDS 5

enum child_role { CH_WORKER, CH_LOOKUP, CH_QUEUE };

struct child {
	pid_t pid;
	enum child_role role;
	int index;
	int generation;
	time_t started;
	int quick_deaths;
};

struct master {
	struct conf *conf;
	struct event_base *base;
	struct tls_server *tls;
	int nworkers;
	int (*lfds)[CONF_LST__COUNT]; /* [worker][kind] */
	int lookup_fd, queue_fd;
	struct child children[MAX_CHILDREN];
	int nchildren;
	int generation;
	bool stopping;
	uid_t uid;
	gid_t gid;
	bool drop;
	struct event *cert_timer;
	struct conn_shared *conns; /* slot i belongs to children[i] */
};

static struct master M;

/* ---- systemd notify (sd_notify(3) wire format: one datagram) ---- */

static void notify_systemd(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	if (!path || !path[0])
		return;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	size_t n = strlen(path);
	if (n >= sizeof(sun.sun_path))
		return;
	memcpy(sun.sun_path, path, n);
	if (sun.sun_path[0] == '@')
		sun.sun_path[0] = '\0';
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sun,
	       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
	close(fd);
}

/* ---- sockets ---- */

/* Classic BPF for the SO_REUSEPORT group: the same client address always reaches the same
 * worker, so each worker's per-IP count is the whole count for that IP. */
static void steer_by_address(int fd, int n)
{
	/* A = first byte of the IP header; IPv4 source at +12, IPv6 (last 32 bits) at +20. A
	 * [::] socket also receives IPv4, so the version decides, packet by packet. */
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_B | BPF_ABS, (uint32_t)SKF_NET_OFF),
		BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0xf0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x40, 0, 2),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(SKF_NET_OFF + 12)),
		BPF_JUMP(BPF_JMP | BPF_JA, 1, 0, 0),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(SKF_NET_OFF + 20)),
		BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, (uint32_t)n),
		BPF_STMT(BPF_RET | BPF_A, 0),
	};
	struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]), .filter = code};
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) != 0)
		log_warn("event=reuseport_steer_failed error=\"%s\" note=\"per-IP limits become per worker\"",
			 strerror(errno));
}

static int bind_one(const struct conf_listener *l, char *err, size_t errsz)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, l->addr, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)l->port);
		sl = sizeof(*s4);
	} else if (inet_pton(AF_INET6, l->addr, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)l->port);
		sl = sizeof(*s6);
	} else {
		snprintf(err, errsz, "%s: not a numeric address", l->addr);
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errsz, "socket: %s", strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 1024) != 0) {
		snprintf(err, errsz, "%s port %d: %s", l->addr, l->port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int bind_listeners(struct master *m, char *err, size_t errsz)
{
	m->lfds = xcalloc((size_t)m->nworkers, sizeof(*m->lfds));
	for (int k = 0; k < CONF_LST__COUNT; k++) {
		const struct conf_listener *l = &m->conf->listeners[k];
		for (int i = 0; i < m->nworkers; i++) {
			m->lfds[i][k] = -1;
			if (!l->enabled)
				continue;
			m->lfds[i][k] = bind_one(l, err, errsz);
			if (m->lfds[i][k] < 0)
				return -1;
			if (i == 0 && m->nworkers > 1)
				steer_by_address(m->lfds[0][k], m->nworkers);
		}
		if (l->enabled)
			log_info("event=listening listener=%s addr=%s port=%d sockets=%d",
				 session_listener_name((enum conf_listener_kind)k), l->addr, l->port,
				 m->nworkers);
	}
	return 0;
}

/* ---- data directory ---- */

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(tmp, mode) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

static void chown_if(struct master *m, const char *dir, const char *name)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s%s%s", dir, name[0] ? "/" : "", name);
	if (chown(p, m->uid, m->gid) != 0 && errno != ENOENT)
		log_warn("event=chown_failed path=%s error=\"%s\"", p, strerror(errno));
}

static int prepare_data_dir(struct master *m, char *err, size_t errsz)
{
	const char *d = m->conf->data_dir;
	char p[PATH_MAX];
	if (mkdir_p(d, 0700) != 0) {
		snprintf(err, errsz, "%s: %s", d, strerror(errno));
		return -1;
	}
	snprintf(p, sizeof(p), "%s/run", d);
	if (mkdir(p, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errsz, "%s: %s", p, strerror(errno));
		return -1;
	}
	snprintf(p, sizeof(p), "%s/mail", d);
	if (mkdir(p, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errsz, "%s: %s", p, strerror(errno));
		return -1;
	}
	/* recovery before any worker writes: tmp/ leftovers were never acknowledged */
	struct spool *sp = spool_open(d);
	if (!sp) {
		snprintf(err, errsz, "%s/spool: %s", d, strerror(errno));
		return -1;
	}
	int n = spool_recover(sp, NULL, NULL);
	spool_close(sp);
	if (n < 0) {
		snprintf(err, errsz, "spool recovery failed: %s", strerror(errno));
		return -1;
	}
	log_info("event=spool_recovered messages=%d", n);
	/* the store is created (and seeded) here so a broken database stops the start */
	struct store *st = store_open(d, m->conf->seed_localhost, err, errsz);
	if (!st)
		return -1;
	store_close(st);
	if (m->drop) {
		static const char *names[] = {"", "run", "mail", "spool", "spool/tmp", "spool/queue",
					      "spool/corrupt", "sealmail.db", "sealmail.db-wal",
					      "sealmail.db-shm"};
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			chown_if(m, d, names[i]);
	}
	return 0;
}

/* ---- children ---- */

static void drop_privileges(struct master *m)
{
	if (!m->drop)
		return;
	if (setgroups(0, NULL) != 0 || setgid(m->gid) != 0 || setuid(m->uid) != 0)
		fatal("cannot drop privileges to %s: %s", m->conf->user, strerror(errno));
	if (setuid(0) == 0)
		fatal("regained root after dropping privileges");
}

static void close_other_fds(struct master *m, int keep_worker)
{
	for (int i = 0; i < m->nworkers; i++)
		for (int k = 0; k < CONF_LST__COUNT; k++)
			if (i != keep_worker && m->lfds[i][k] >= 0)
				close(m->lfds[i][k]);
}

static pid_t spawn(struct master *m, enum child_role role, int index, int slot)
{
	/* the master's signals stay blocked across fork until the child has dropped the
	 * master's handlers (see below) */
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGCHLD);
	sigprocmask(SIG_BLOCK, &block, &old);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid != 0) {
		int e = errno;
		sigprocmask(SIG_SETMASK, &old, NULL);
		if (pid < 0) {
			log_err("event=fork_failed error=\"%s\"", strerror(e));
			return -1;
		}
		return pid;
	}
	/* child: leave the master's signal handling behind. SIGTERM too: the inherited handler
	 * is libevent's, which writes into the master's signal socketpair, so a SIGTERM that
	 * reached a child before it set up its own (a quick second reload, a stop right after a
	 * fork) made the master itself start stopping, and the child never drained. A SIGTERM
	 * that arrives before the child's own handler exists now simply ends the child. */
	signal(SIGTERM, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent)
		_exit(0); /* the master died before PDEATHSIG was armed */
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	int rc;
	switch (role) {
	case CH_WORKER: {
		char r[16];
		snprintf(r, sizeof(r), "smtp%d", index);
		log_set_role(r);
		close(m->lookup_fd);
		close(m->queue_fd);
		close_other_fds(m, index);
		drop_privileges(m);
		struct worker_listen wl;
		memcpy(wl.fds, m->lfds[index], sizeof(wl.fds));
		wl.conns = m->conns;
		wl.slot = slot;
		rc = worker_main(m->conf, m->tls, &wl, index);
		break;
	}
	case CH_LOOKUP:
		log_set_role("lookup");
		close(m->queue_fd);
		close_other_fds(m, -1);
		drop_privileges(m);
		rc = lookup_main(m->conf, m->lookup_fd);
		break;
	default:
		log_set_role("queue");
		close(m->lookup_fd);
		close_other_fds(m, -1);
		drop_privileges(m);
		rc = queue_main(m->conf, m->queue_fd);
		break;
	}
	_exit(rc);
}

static int free_child_slots(const struct master *m)
{
	int n = MAX_CHILDREN - m->nchildren;
	for (int i = 0; i < m->nchildren; i++)
		if (m->children[i].pid == 0)
			n++;
	return n;
}

static struct child *child_add(struct master *m, enum child_role role, int index)
{
	/* the slot first: a child the table cannot hold would never be waited for or stopped */
	struct child *c = NULL;
	for (int i = 0; i < m->nchildren; i++)
		if (m->children[i].pid == 0) {
			c = &m->children[i];
			break;
		}
	if (!c && m->nchildren < MAX_CHILDREN)
		c = &m->children[m->nchildren];
	if (!c) {
		log_err("event=fork_failed role=%s index=%d error=\"too many children\"",
			role == CH_WORKER ? "smtp" : role == CH_LOOKUP ? "lookup" : "queue", index);
		return NULL;
	}
	int slot = (int)(c - m->children);
	atomic_store(&m->conns->slot[slot], 0);
	pid_t pid = spawn(m, role, index, slot);
	if (pid < 0)
		return NULL;
	if (c == &m->children[m->nchildren])
		m->nchildren++;
	c->pid = pid;
	c->quick_deaths = 0;
	c->role = role;
	c->index = index;
	c->generation = m->generation;
	c->started = time(NULL);
	return c;
}

static const char *role_name(enum child_role r)
{
	return r == CH_WORKER ? "smtp" : r == CH_LOOKUP ? "lookup" : "queue";
}

static int live_children(struct master *m)
{
	int n = 0;
	for (int i = 0; i < m->nchildren; i++)
		if (m->children[i].pid > 0)
			n++;
	return n;
}

static void sigchld_cb(evutil_socket_t sig, short what, void *arg)
{
	struct master *m = arg;
	int status;
	pid_t pid;
	(void)sig;
	(void)what;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (int i = 0; i < m->nchildren; i++) {
			struct child *c = &m->children[i];
			if (c->pid != pid)
				continue;
			c->pid = 0;
			/* connections of a dead worker are gone: take them out of the shared total */
			int gone = atomic_exchange(&m->conns->slot[i], 0);
			if (gone)
				atomic_fetch_sub(&m->conns->total, gone);
			/* workers and lookup of an older generation are replaced already; the queue
			 * is restarted only here, after the old one is gone (never two at once) */
			bool old_gen = c->role != CH_QUEUE && c->generation != m->generation;
			if (WIFSIGNALED(status))
				log_warn("event=child_died role=%s index=%d pid=%d signal=%d", role_name(c->role),
					 c->index, (int)pid, WTERMSIG(status));
			else
				log_info("event=child_exit role=%s index=%d pid=%d status=%d", role_name(c->role),
					 c->index, (int)pid, WEXITSTATUS(status));
			if (m->stopping || old_gen)
				break;
			/* a child that keeps dying at once is restarted no faster than once a second */
			int quick = time(NULL) - c->started < 2 ? c->quick_deaths + 1 : 0;
			if (quick > 5)
				sleep(1);
			enum child_role role = c->role;
			int idx = c->index;
			struct child *n = child_add(m, role, idx);
			if (n)
				n->quick_deaths = quick; /* n may be another slot than c */
			if (n)
				log_info("event=child_restarted role=%s index=%d pid=%d", role_name(role), idx,
					 (int)n->pid);
			break;
		}
	}
	if (m->stopping) {
		/* workers first, then queue and lookup (they may still get last notices) */
		bool workers_left = false;
		for (int i = 0; i < m->nchildren; i++)
			if (m->children[i].pid > 0 && m->children[i].role == CH_WORKER)
				workers_left = true;
		if (!workers_left)
			for (int i = 0; i < m->nchildren; i++)
				if (m->children[i].pid > 0)
					kill(m->children[i].pid, SIGTERM);
		if (live_children(m) == 0)
			event_base_loopexit(m->base, NULL);
	}
}

static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
	struct master *m = arg;
	(void)what;
	if (m->stopping)
		return;
	m->stopping = true;
	log_info("event=stopping signal=%d", (int)sig);
	notify_systemd("STOPPING=1");
	for (int i = 0; i < m->nchildren; i++)
		if (m->children[i].pid > 0 && m->children[i].role == CH_WORKER)
			kill(m->children[i].pid, SIGTERM);
	if (live_children(m) == 0)
		event_base_loopexit(m->base, NULL);
}

/* Reload: validate the new config and certificates, then start a new generation of workers
 * with them and let the old workers drain. Nothing changes if anything is wrong. */
static void reload(struct master *m, const char *why)
{
	char err[512];
	if (m->stopping) {
		log_info("event=reload_ignored reason=%s note=\"shutting down\"", why);
		return;
	}
	struct conf *nc = xmalloc(sizeof(*nc));
	notify_systemd("RELOADING=1");
	if (m->conf->path[0]) {
		struct conf_error ce;
		if (conf_load(m->conf->path, nc, &ce) != 0) {
			log_err("event=reload_failed reason=\"%s\" note=\"old configuration kept\"", ce.msg);
			free(nc);
			notify_systemd("READY=1");
			return;
		}
	} else {
		*nc = *m->conf;
	}
	struct conf_error rce;
	if (conf_reload_check(m->conf, nc, &rce) != 0) {
		/* keep what only a restart may change; take everything else */
		log_warn("event=reload_note reason=\"%s\" note=\"kept the running value\"", rce.msg);
		memcpy(nc->listeners, m->conf->listeners, sizeof(nc->listeners));
		snprintf(nc->user, sizeof(nc->user), "%s", m->conf->user);
		nc->log_dest = m->conf->log_dest;
	}
	nc->workers = m->conf->workers;
	snprintf(nc->data_dir, sizeof(nc->data_dir), "%s", m->conf->data_dir);
	struct tls_server *nt = tls_server_new(nc, err, sizeof(err));
	if (!nt) {
		log_err("event=reload_failed reason=\"%s\" note=\"old configuration kept\"", err);
		free(nc);
		notify_systemd("READY=1");
		return;
	}
	if (free_child_slots(m) < m->nworkers + 1) {
		log_err("event=reload_failed reason=\"too many old workers still draining\" "
			"note=\"old configuration kept; try again later\"");
		tls_server_free(nt);
		free(nc);
		notify_systemd("READY=1");
		return;
	}
	tls_server_log_certs(nt);
	struct conf *oc = m->conf;
	struct tls_server *ot = m->tls;
	m->conf = nc;
	m->tls = nt;
	m->generation++;
	for (int i = 0; i < m->nworkers; i++)
		child_add(m, CH_WORKER, i);
	child_add(m, CH_LOOKUP, 0);
	for (int i = 0; i < m->nchildren; i++) {
		struct child *c = &m->children[i];
		if (c->pid > 0 && c->generation != m->generation)
			kill(c->pid, SIGTERM);
	}
	/* the old config and TLS contexts live on in the old workers (copied at fork) */
	tls_server_free(ot);
	free(oc);
	log_info("event=reloaded reason=%s generation=%d", why, m->generation);
	notify_systemd("READY=1");
}

static void sighup_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	reload(arg, "sighup");
}

static void cert_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct master *m = arg;
	(void)fd;
	(void)what;
	if (!m->stopping && tls_server_files_changed(m->tls)) {
		log_info("event=cert_changed note=\"certificate files changed on disk\"");
		reload(m, "certificate_changed");
	}
}

int master_main(struct conf *c)
{
	struct master *m = &M;
	char err[512];
	memset(m, 0, sizeof(*m));
	/* a copy of our own: reload() frees the config it replaces, and c may be static */
	m->conf = xmalloc(sizeof(*m->conf));
	*m->conf = *c;
	c = m->conf;
	m->nworkers = c->workers > 0 ? c->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (m->nworkers < 1)
		m->nworkers = 1;
	if (m->nworkers > MAX_WORKERS)
		m->nworkers = MAX_WORKERS;

	if (c->user[0] && geteuid() == 0) {
		struct passwd *pw = getpwnam(c->user);
		if (!pw) {
			fprintf(stderr, "sealmail: user %s does not exist (create it, or set user = \"\")\n",
				c->user);
			return 78;
		}
		m->uid = pw->pw_uid;
		m->gid = pw->pw_gid;
		m->drop = true;
	} else if (geteuid() == 0) {
		log_warn("event=running_as_root note=\"set user = sealmail to drop privileges\"");
	}
	if (prepare_data_dir(m, err, sizeof(err)) != 0) {
		log_err("event=start_failed reason=\"%s\"", err);
		return 73;
	}
	m->conns = mmap(NULL, sizeof(struct conn_shared) + MAX_CHILDREN * sizeof(_Atomic int),
			PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m->conns == MAP_FAILED)
		fatal("mmap: %s", strerror(errno));
	tls_ticket_keys_init();
	m->tls = tls_server_new(c, err, sizeof(err));
	if (!m->tls) {
		log_err("event=start_failed reason=\"%s\"", err);
		return 78;
	}
	tls_server_log_certs(m->tls);
	if (bind_listeners(m, err, sizeof(err)) != 0) {
		log_err("event=start_failed reason=\"cannot listen on %s\"", err);
		return 71;
	}
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/run/lookup.sock", c->data_dir);
	m->lookup_fd = ipc_listen_unix(p);
	if (m->lookup_fd >= 0 && m->drop)
		chown_if(m, p, "");
	snprintf(p, sizeof(p), "%s/run/queue.sock", c->data_dir);
	m->queue_fd = ipc_listen_unix(p);
	if (m->queue_fd >= 0 && m->drop)
		chown_if(m, p, "");
	if (m->lookup_fd < 0 || m->queue_fd < 0) {
		log_err("event=start_failed reason=\"%s/run: %s\"", c->data_dir, strerror(errno));
		return 71;
	}
	signal(SIGPIPE, SIG_IGN);
	m->base = event_base_new();
	if (!m->base)
		fatal("event_base_new failed");
	struct event *evs[5];
	evs[0] = evsignal_new(m->base, SIGCHLD, sigchld_cb, m);
	evs[1] = evsignal_new(m->base, SIGTERM, stop_cb, m);
	evs[2] = evsignal_new(m->base, SIGINT, stop_cb, m);
	evs[3] = evsignal_new(m->base, SIGHUP, sighup_cb, m);
	for (int i = 0; i < 4; i++)
		event_add(evs[i], NULL);
	m->cert_timer = event_new(m->base, -1, EV_PERSIST, cert_timer_cb, m);
	struct timeval ct = {CERT_CHECK_SECONDS, 0};
	event_add(m->cert_timer, &ct);

	child_add(m, CH_LOOKUP, 0);
	child_add(m, CH_QUEUE, 0);
	for (int i = 0; i < m->nworkers; i++)
		child_add(m, CH_WORKER, i);
	log_info("event=started hostname=%s data_dir=%s workers=%d config=%s", c->hostname,
		 c->data_dir, m->nworkers, c->path[0] ? c->path : "(embedded defaults)");
	notify_systemd("READY=1");
	event_base_dispatch(m->base);
	log_info("event=stopped");
	for (int i = 0; i < 4; i++)
		event_free(evs[i]);
	event_free(m->cert_timer);
	event_base_free(m->base);
	tls_server_free(m->tls);
	free(m->conf);
	return 0;
}
