/* smtpload_server.c: what the server costs, read from /proc.
 *
 * --server-pids / --server-pgrep name root processes; their whole process tree (found
 * through the ppid field of /proc/PID/stat) is sampled for CPU (utime+stime of the live
 * processes plus cutime+cstime, which holds the children they have reaped) and for memory
 * (VmRSS from /proc/PID/status, Pss from /proc/PID/smaps_rollup). */
#include "smtpload.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct {
	bool on;
	pid_t *roots;
	int nroots;
	unsigned char *mark;
	long pid_max;
	long hz;
} S;

static ssize_t read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t n = 0;
	while (n < cap - 1) {
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = 0;
	return (ssize_t)n;
}

struct procent {
	pid_t pid, ppid;
	long long ticks;
};

/* All processes: pid, ppid, utime+stime+cutime+cstime. */
static struct procent *proc_list(int *np)
{
	DIR *d = opendir("/proc");
	if (!d)
		return NULL;
	size_t cap = 512, n = 0;
	struct procent *v = malloc(cap * sizeof *v);
	struct dirent *de;
	char path[300], buf[1024];
	while (v && (de = readdir(d))) {
		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
		if (read_small(path, buf, sizeof buf) <= 0)
			continue;
		char *p = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
		if (!p)
			continue;
		/* fields from 3 on: state ppid pgrp session tty tpgid flags minflt cminflt
		 * majflt cmajflt utime stime cutime cstime */
		char state;
		int ppid;
		unsigned long long f[8], ut, st;
		long long cut, cst;
		if (sscanf(p + 2,
		           "%c %d %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %lld %lld",
		           &state, &ppid, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7],
		           &ut, &st, &cut, &cst) != 14)
			continue;
		if (n == cap) {
			cap *= 2;
			struct procent *nv = realloc(v, cap * sizeof *v);
			if (!nv)
				break;
			v = nv;
		}
		v[n].pid = (pid_t)strtol(de->d_name, NULL, 10);
		v[n].ppid = ppid;
		v[n].ticks = (long long)(ut + st) + cut + cst;
		n++;
	}
	closedir(d);
	*np = (int)n;
	return v;
}

static long long status_kib(pid_t pid, const char *file, const char *key)
{
	char path[64], buf[8192];
	snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
	if (read_small(path, buf, sizeof buf) <= 0)
		return 0;
	char *p = strstr(buf, key);
	if (!p)
		return 0;
	return strtoll(p + strlen(key), NULL, 10);
}

/* The server tree in one /proc snapshot: its pids (ascending, as /proc lists them) into
 * *tree, its summed ticks into *ticks. Returns the number of processes, -1 on error. */
static int srv_tree(pid_t **tree, long long *ticks)
{
	int n = 0;
	struct procent *v = proc_list(&n);
	if (!v)
		return -1;
	memset(S.mark, 0, (size_t)S.pid_max + 1);
	for (int i = 0; i < S.nroots; i++)
		if (S.roots[i] > 0 && S.roots[i] <= S.pid_max)
			S.mark[S.roots[i]] = 2; /* wanted; becomes 1 once seen alive */
	for (int i = 0; i < n; i++)
		if (S.mark[v[i].pid] == 2)
			S.mark[v[i].pid] = 1;
	for (int i = 0; i < S.nroots; i++)
		if (S.roots[i] > 0 && S.roots[i] <= S.pid_max && S.mark[S.roots[i]] == 2)
			S.mark[S.roots[i]] = 0;
	for (bool grew = true; grew;) {
		grew = false;
		for (int i = 0; i < n; i++)
			if (!S.mark[v[i].pid] && v[i].ppid > 0 && v[i].ppid <= S.pid_max &&
			    S.mark[v[i].ppid] == 1) {
				S.mark[v[i].pid] = 1;
				grew = true;
			}
	}
	pid_t *t = malloc(((size_t)n + 1) * sizeof *t);
	int k = 0;
	*ticks = 0;
	for (int i = 0; t && i < n; i++) {
		if (S.mark[v[i].pid] != 1)
			continue;
		t[k++] = v[i].pid;
		*ticks += v[i].ticks;
	}
	free(v);
	if (!t)
		return -1;
	*tree = t;
	return k;
}

/* A process of the tree that exits while /proc is being read is missing from that snapshot
 * and not yet in its parent's cutime: so take snapshots until two in a row hold the same
 * processes, and use the second. */
void srv_sample(struct srvsample *s, bool mem)
{
	memset(s, 0, sizeof *s);
	if (!S.on)
		return;
	pid_t *a = NULL, *b = NULL;
	long long ta = 0, tb = 0;
	int na = srv_tree(&a, &ta), nb = -1;
	for (int tries = 0; na >= 0 && tries < 20; tries++) {
		nb = srv_tree(&b, &tb);
		if (nb < 0)
			break;
		if (nb == na && !memcmp(a, b, (size_t)na * sizeof *a))
			break;
		free(a);
		a = b;
		na = nb;
		ta = tb;
		b = NULL;
		nb = -1;
	}
	if (nb > 0) {
		s->nproc = nb;
		s->ticks = tb;
		for (int i = 0; mem && i < nb; i++) {
			s->rss_kib += status_kib(b[i], "status", "VmRSS:");
			s->pss_kib += status_kib(b[i], "smaps_rollup", "Pss:");
		}
		s->ok = true;
	}
	free(a);
	free(b);
}

double ticks_ms(long long t)
{
	return (double)t * 1000.0 / (double)S.hz;
}

/* Waits up to max_s seconds until the server tree uses at most one tick in 300 ms. */
void srv_settle(double max_s)
{
	if (!S.on || max_s <= 0)
		return;
	double end = now() + max_s;
	struct srvsample a, b;
	srv_sample(&a, false);
	while (now() < end) {
		sleep_s(0.3);
		srv_sample(&b, false);
		if (b.ticks - a.ticks <= 1)
			return;
		a = b;
	}
}

static bool is_ancestor(pid_t pid, const pid_t *anc, int nanc)
{
	for (int i = 0; i < nanc; i++)
		if (anc[i] == pid)
			return true;
	return false;
}

int srv_init(void)
{
	S.hz = sysconf(_SC_CLK_TCK);
	char buf[64];
	S.pid_max = 4194304;
	if (read_small("/proc/sys/kernel/pid_max", buf, sizeof buf) > 0 && strtol(buf, NULL, 10) > 0)
		S.pid_max = strtol(buf, NULL, 10);
	S.mark = calloc((size_t)S.pid_max + 1, 1);
	S.roots = calloc(4096, sizeof *S.roots);
	if (!S.mark || !S.roots)
		return -1;
	for (int i = 0; i < o.npids; i++)
		S.roots[S.nroots++] = o.pids[i];
	if (o.pgrep) {
		regex_t re;
		if (regcomp(&re, o.pgrep, REG_EXTENDED | REG_NOSUB) != 0) {
			fprintf(stderr, "smtpload: bad --server-pgrep regex\n");
			return -1;
		}
		/* our own ancestors (a shell whose command line holds the pattern) don't count */
		pid_t anc[64];
		int nanc = 0;
		int n = 0;
		struct procent *v = proc_list(&n);
		pid_t p = getpid();
		while (v && p > 1 && nanc < 64) {
			anc[nanc++] = p;
			pid_t pp = 0;
			for (int i = 0; i < n; i++)
				if (v[i].pid == p)
					pp = v[i].ppid;
			p = pp;
		}
		for (int i = 0; v && i < n && S.nroots < 4096; i++) {
			char path[64], cmd[4096];
			snprintf(path, sizeof path, "/proc/%d/cmdline", (int)v[i].pid);
			ssize_t len = read_small(path, cmd, sizeof cmd);
			if (len <= 0)
				continue; /* kernel threads */
			for (ssize_t k = 0; k < len; k++)
				if (cmd[k] == 0)
					cmd[k] = ' ';
			while (len > 0 && cmd[len - 1] == ' ')
				cmd[--len] = 0;
			if (regexec(&re, cmd, 0, NULL, 0) == 0 && !is_ancestor(v[i].pid, anc, nanc))
				S.roots[S.nroots++] = v[i].pid;
		}
		free(v);
		regfree(&re);
		if (S.nroots == 0) {
			fprintf(stderr, "smtpload: --server-pgrep '%s' matches no process\n",
			        o.pgrep);
			return -1;
		}
	}
	S.on = S.nroots > 0;
	if (S.on) {
		struct srvsample s;
		srv_sample(&s, false);
		if (!s.ok) {
			fprintf(stderr, "smtpload: no server process alive among the given pids\n");
			return -1;
		}
	}
	return 0;
}
