/* AUTH in the lookup process: PLAIN/LOGIN passwords checked against argon2id hashes in
 * hashing threads (so a storm of logins never stalls the loop that answers RCPTs), SCRAM
 * credentials handed to the worker running the exchange, and the brute-force bookkeeping
 * (failures per client address and per login in a window, then a temporary block).
 * Runs in the lookup process. Untrusted input: logins and passwords relayed by workers. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "auth/scram.h"
#include "limits.h"
#include "lookup/lookup_int.h"
#include "net/ipc.h"
#include "util/log.h"

/* ---- brute force ---- */

struct failrec {
	char key[SASL_USER_MAX + 8]; /* "ip:..." or "login:..." */
	int count;
	time_t first;
	time_t blocked_until;
	bool used;
};

/* ---- hashing jobs ---- */

struct job {
	struct job *next;
	struct lookup_client *client;
	uint32_t id;
	char ip[64];
	char login[SASL_USER_MAX + 1];
	char password[SASL_PASS_MAX + 1];
	char pwhash[crypto_pwhash_STRBYTES];
	bool known;                /* login exists (else a dummy hash is checked: same time) */
	enum ipc_auth_status status;
	char info[1024];           /* account info for the reply */
	size_t info_len;
	unsigned char mac[crypto_generichash_BYTES]; /* for the verified-password cache */
};

struct authd {
	struct lookup *lk;
	struct failrec fails[LIM_AUTH_TRACKED];
	pthread_t threads[LIM_AUTH_THREADS];
	int nthreads;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *todo, *todo_tail, *done;
	/* Logins whose password was verified recently: a keyed BLAKE2b of the password (never
	 * the password) and the hash it was checked against. A client that reconnects for every
	 * message then costs microseconds, not an argon2id run; a wrong password always takes
	 * the slow path, and a changed password (new pwhash) never matches. */
	struct vcache {
		char login[SASL_USER_MAX + 1];
		char pwhash[crypto_pwhash_STRBYTES];
		unsigned char mac[crypto_generichash_BYTES];
		time_t expires;
	} vcache[LIM_AUTH_CACHE];
	unsigned char cache_key[crypto_generichash_KEYBYTES];
	bool stop;
	int pipefd[2];
	struct event *done_ev;
	char dummy_hash[crypto_pwhash_STRBYTES];
	unsigned char fake_key[32]; /* fake SCRAM salts for unknown logins (no enumeration) */
	unsigned char hash_key[crypto_shorthash_KEYBYTES]; /* the failure table's hash */
};

static void vcache_put(struct authd *a, const struct job *j);

/* How a record ranks for reuse: free first, then one not blocked, then the oldest. */
static int fail_rank(const struct failrec *f, time_t now)
{
	return !f->used ? 0 : f->blocked_until <= now ? 1 : 2;
}

static struct failrec *fail_find(struct authd *a, const char *key, bool create)
{
	struct failrec *oldest = NULL;
	time_t now = time(NULL);
	/* SipHash with a secret key: a client cannot make up names that all land in the
	 * probe range of another's record to push it (and its block) out */
	unsigned char hv[crypto_shorthash_BYTES];
	crypto_shorthash(hv, (const unsigned char *)key, strlen(key), a->hash_key);
	unsigned h = (unsigned)hv[0] | (unsigned)hv[1] << 8 | (unsigned)hv[2] << 16 |
		     (unsigned)hv[3] << 24;
	/* open addressing over a small probe range; a free record in range is used, else the
	 * oldest that is not blocked, else the oldest */
	for (int i = 0; i < 16; i++) {
		struct failrec *f = &a->fails[(h + (unsigned)i) % LIM_AUTH_TRACKED];
		if (f->used && strcmp(f->key, key) == 0)
			return f;
		if (!oldest || fail_rank(f, now) < fail_rank(oldest, now) ||
		    (fail_rank(f, now) == fail_rank(oldest, now) && f->used && f->first < oldest->first))
			oldest = f;
	}
	if (!create)
		return NULL;
	memset(oldest, 0, sizeof(*oldest));
	oldest->used = true;
	snprintf(oldest->key, sizeof(oldest->key), "%s", key);
	return oldest;
}

static bool blocked(struct authd *a, const char *kind, const char *v)
{
	char key[SASL_USER_MAX + 8];
	snprintf(key, sizeof(key), "%s:%s", kind, v);
	struct failrec *f = fail_find(a, key, false);
	return f && f->blocked_until > time(NULL);
}

static void note_result(struct authd *a, const char *ip, const char *login, bool ok)
{
	static const struct {
		const char *kind;
		int max;
	} kinds[] = {{"ip", LIM_AUTH_FAIL_IP}, {"login", LIM_AUTH_FAIL_LOGIN}};
	time_t now = time(NULL);
	for (size_t k = 0; k < 2; k++) {
		const char *v = k == 0 ? ip : login;
		char key[SASL_USER_MAX + 8];
		snprintf(key, sizeof(key), "%s:%s", kinds[k].kind, v);
		if (ok) {
			/* a success clears the login's failures, never the address's */
			struct failrec *f = k == 1 ? fail_find(a, key, false) : NULL;
			if (f)
				f->used = false;
			continue;
		}
		struct failrec *f = fail_find(a, key, true);
		if (now - f->first > LIM_AUTH_FAIL_WINDOW) {
			f->first = now;
			f->count = 0;
		}
		if (++f->count >= kinds[k].max && f->blocked_until <= now) {
			f->blocked_until = now + LIM_AUTH_BLOCK_SECONDS;
			char safe[SASL_USER_MAX + 1];
			log_safe(safe, sizeof(safe), v, strlen(v));
			log_warn("event=auth_blocked %s=%s failures=%d window=%d block_seconds=%d",
				 kinds[k].kind, safe, f->count, LIM_AUTH_FAIL_WINDOW, LIM_AUTH_BLOCK_SECONDS);
		}
	}
}

/* ---- account info ---- */

struct dombuf {
	char *p;
	size_t cap, len;
};

static void dom_cb(void *arg, const char *domain)
{
	struct dombuf *d = arg;
	size_t n = strlen(domain);
	if (d->len + n + 2 > d->cap)
		return; /* the reply has a cap; more domains than fit are not sendable as */
	if (d->len)
		d->p[d->len++] = ',';
	memcpy(d->p + d->len, domain, n);
	d->len += n;
	d->p[d->len] = '\0';
}

/* "account\0plan\0limit\0domains" into out; returns its length. */
static size_t account_info(struct authd *a, const struct store_login *l, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s%c%s%c%u%c", l->account, 0, l->plan, 0, l->hourly_limit, 0);
	if (n < 0 || (size_t)n >= cap)
		return 0;
	struct dombuf d = {.p = out + n, .cap = cap - (size_t)n, .len = 0};
	d.p[0] = '\0';
	store_account_domains(a->lk->store, l->account, dom_cb, &d);
	return (size_t)n + d.len;
}

static void reply(struct lookup_client *c, enum ipc_type type, uint32_t id,
		  enum ipc_auth_status st, const void *extra, size_t n)
{
	char out[2048];
	if (c->dead || n + 1 > sizeof(out))
		return;
	out[0] = (char)st;
	memcpy(out + 1, extra, n);
	ipc_send(c->bev, type, id, out, n + 1);
}

/* ---- threads ---- */

static void *hash_thread(void *arg)
{
	struct authd *a = arg;
	for (;;) {
		pthread_mutex_lock(&a->mu);
		while (!a->todo && !a->stop)
			pthread_cond_wait(&a->cv, &a->mu);
		if (a->stop) {
			pthread_mutex_unlock(&a->mu);
			return NULL;
		}
		struct job *j = a->todo;
		a->todo = j->next;
		if (!a->todo)
			a->todo_tail = NULL;
		pthread_mutex_unlock(&a->mu);

		bool ok = crypto_pwhash_str_verify(j->known ? j->pwhash : a->dummy_hash, j->password,
						   strlen(j->password)) == 0 &&
			  j->known;
		if (ok)
			crypto_generichash(j->mac, sizeof(j->mac), (const unsigned char *)j->password,
					   strlen(j->password), a->cache_key, sizeof(a->cache_key));
		sodium_memzero(j->password, sizeof(j->password));
		/* a store error stays a temporary failure (454), never a wrong password */
		if (!ok && j->status != IPC_AUTH_TEMPFAIL)
			j->status = IPC_AUTH_FAIL;

		pthread_mutex_lock(&a->mu);
		j->next = a->done;
		a->done = j;
		pthread_mutex_unlock(&a->mu);
		char b = 1;
		ssize_t w = write(a->pipefd[1], &b, 1);
		(void)w;
	}
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct authd *a = arg;
	char buf[64];
	(void)what;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&a->mu);
	struct job *list = a->done;
	a->done = NULL;
	pthread_mutex_unlock(&a->mu);
	while (list) {
		struct job *j = list;
		list = j->next;
		char safe[SASL_USER_MAX + 1];
		log_safe(safe, sizeof(safe), j->login, strlen(j->login));
		bool ok = j->status == IPC_AUTH_OK;
		if (ok)
			vcache_put(a, j);
		if (j->status != IPC_AUTH_DISABLED && j->status != IPC_AUTH_TEMPFAIL)
			note_result(a, j->ip, j->login, ok);
		log_info("event=auth ip=%s login=%s mech=password result=%s", j->ip, safe,
			 ok ? "ok" : j->status == IPC_AUTH_DISABLED ? "disabled"
			    : j->status == IPC_AUTH_TEMPFAIL ? "tempfail" : "failed");
		reply(j->client, IPC_AUTH_REP, j->id, j->status, ok ? j->info : "", ok ? j->info_len : 0);
		lookup_client_unref(j->client);
		free(j);
	}
}

static struct vcache *vcache_slot(struct authd *a, const char *login)
{
	unsigned char hv[crypto_shorthash_BYTES];
	crypto_shorthash(hv, (const unsigned char *)login, strlen(login), a->hash_key);
	unsigned h = (unsigned)hv[0] | (unsigned)hv[1] << 8 | (unsigned)hv[2] << 16;
	return &a->vcache[h % LIM_AUTH_CACHE];
}

static void vcache_put(struct authd *a, const struct job *j)
{
	struct vcache *v = vcache_slot(a, j->login);
	snprintf(v->login, sizeof(v->login), "%s", j->login);
	memcpy(v->pwhash, j->pwhash, sizeof(v->pwhash));
	memcpy(v->mac, j->mac, sizeof(v->mac));
	v->expires = time(NULL) + LIM_AUTH_CACHE_SECONDS;
}

/* True when this login's password was verified against the same stored hash lately. */
static bool vcache_hit(struct authd *a, const char *login, const char *pwhash, const char *password)
{
	struct vcache *v = vcache_slot(a, login);
	if (v->expires <= time(NULL) || strcmp(v->login, login) != 0 ||
	    strcmp(v->pwhash, pwhash) != 0)
		return false;
	unsigned char mac[crypto_generichash_BYTES];
	crypto_generichash(mac, sizeof(mac), (const unsigned char *)password, strlen(password),
			   a->cache_key, sizeof(a->cache_key));
	bool hit = sodium_memcmp(mac, v->mac, sizeof(mac)) == 0;
	sodium_memzero(mac, sizeof(mac));
	return hit;
}

struct authd *authd_new(struct lookup *lk)
{
	struct authd *a = xcalloc(1, sizeof(*a));
	a->lk = lk;
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	if (pipe2(a->pipefd, O_NONBLOCK | O_CLOEXEC) != 0)
		fatal("pipe: %s", strerror(errno));
	randombytes_buf(a->fake_key, sizeof(a->fake_key));
	crypto_shorthash_keygen(a->hash_key);
	crypto_generichash_keygen(a->cache_key);
	/* unknown logins are checked against this hash so they take as long as known ones */
	char pw[33];
	randombytes_buf(pw, 32);
	for (int i = 0; i < 32; i++)
		pw[i] = (char)('a' + ((unsigned char)pw[i] % 26));
	pw[32] = '\0';
	if (crypto_pwhash_str(a->dummy_hash, pw, 32, crypto_pwhash_OPSLIMIT_INTERACTIVE,
			      crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
		fatal("crypto_pwhash_str failed (out of memory?)");
	a->done_ev = event_new(lk->base, a->pipefd[0], EV_READ | EV_PERSIST, done_cb, a);
	event_add(a->done_ev, NULL);
	for (int i = 0; i < LIM_AUTH_THREADS; i++)
		if (pthread_create(&a->threads[a->nthreads], NULL, hash_thread, a) == 0)
			a->nthreads++;
	if (a->nthreads == 0)
		fatal("cannot start hashing threads");
	return a;
}

void authd_free(struct authd *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->mu);
	a->stop = true;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
	for (int i = 0; i < a->nthreads; i++)
		pthread_join(a->threads[i], NULL);
	event_free(a->done_ev);
	close(a->pipefd[0]);
	close(a->pipefd[1]);
	for (struct job *j = a->todo, *n; j; j = n) {
		n = j->next;
		lookup_client_unref(j->client);
		free(j);
	}
	for (struct job *j = a->done, *n; j; j = n) {
		n = j->next;
		lookup_client_unref(j->client);
		free(j);
	}
	free(a);
}

void authd_plain(struct authd *a, struct lookup_client *c, uint32_t id, const char *buf, size_t len)
{
	const char *f[3];
	if (lookup_fields(buf, len, f, 3) != 3) {
		reply(c, IPC_AUTH_REP, id, IPC_AUTH_FAIL, "", 0);
		return;
	}
	const char *ip = f[0], *login = f[1], *password = f[2];
	if (blocked(a, "ip", ip) || blocked(a, "login", login)) {
		char safe[SASL_USER_MAX + 1];
		log_safe(safe, sizeof(safe), login, strlen(login));
		log_warn("event=auth ip=%s login=%s mech=password result=blocked", ip, safe);
		reply(c, IPC_AUTH_REP, id, IPC_AUTH_BLOCKED, "", 0);
		return;
	}
	struct job *j = xcalloc(1, sizeof(*j));
	j->client = c;
	c->refs++;
	j->id = id;
	snprintf(j->ip, sizeof(j->ip), "%s", ip);
	snprintf(j->login, sizeof(j->login), "%s", login);
	snprintf(j->password, sizeof(j->password), "%s", password);
	struct store_login l;
	enum store_res r = store_login_get(a->lk->store, login, &l);
	if (r == STORE_OK) {
		j->known = true;
		memcpy(j->pwhash, l.pwhash, sizeof(j->pwhash));
		j->status = l.account_disabled ? IPC_AUTH_DISABLED : IPC_AUTH_OK;
		j->info_len = account_info(a, &l, j->info, sizeof(j->info));
		sodium_memzero(&l, sizeof(l));
		if (j->status == IPC_AUTH_OK && vcache_hit(a, j->login, j->pwhash, j->password)) {
			/* verified lately against this very hash: answer now, no thread */
			sodium_memzero(j->password, sizeof(j->password));
			char safe[SASL_USER_MAX + 1];
			log_safe(safe, sizeof(safe), j->login, strlen(j->login));
			note_result(a, j->ip, j->login, true);
			log_info("event=auth ip=%s login=%s mech=password result=ok cached=yes", j->ip, safe);
			reply(c, IPC_AUTH_REP, id, IPC_AUTH_OK, j->info, j->info_len);
			lookup_client_unref(c);
			free(j);
			return;
		}
	} else {
		j->status = r == STORE_NOTFOUND ? IPC_AUTH_FAIL : IPC_AUTH_TEMPFAIL;
	}
	pthread_mutex_lock(&a->mu);
	/* first come, first hashed: under a steady storm no login may wait behind newer ones */
	j->next = NULL;
	if (a->todo_tail)
		a->todo_tail->next = j;
	else
		a->todo = j;
	a->todo_tail = j;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

void authd_scram(struct authd *a, struct lookup_client *c, uint32_t id, const char *buf, size_t len)
{
	const char *f[2];
	char out[sizeof(struct scram_creds) + 1024];
	if (lookup_fields(buf, len, f, 2) != 2) {
		reply(c, IPC_SCRAM_REP, id, IPC_AUTH_FAIL, "", 0);
		return;
	}
	const char *ip = f[0], *login = f[1];
	if (blocked(a, "ip", ip) || blocked(a, "login", login)) {
		reply(c, IPC_SCRAM_REP, id, IPC_AUTH_BLOCKED, "", 0);
		return;
	}
	struct store_login l;
	struct scram_creds creds;
	enum ipc_auth_status st = IPC_AUTH_OK;
	size_t n = 0;
	enum store_res r = store_login_get(a->lk->store, login, &l);
	if (r == STORE_OK) {
		creds = l.scram;
		if (l.account_disabled)
			st = IPC_AUTH_DISABLED;
		n = account_info(a, &l, out + sizeof(creds), sizeof(out) - sizeof(creds));
	} else if (r == STORE_NOTFOUND) {
		/* a made-up salt that stays the same for this login: the exchange runs to its end
		 * and fails like a wrong password, so logins cannot be probed */
		memset(&creds, 0, sizeof(creds));
		crypto_generichash(creds.salt, 16, (const unsigned char *)login, strlen(login),
				   a->fake_key, sizeof(a->fake_key));
		creds.salt_len = 16;
		creds.iter = SCRAM_ITER_DEFAULT;
		randombytes_buf(creds.stored_key, sizeof(creds.stored_key));
		randombytes_buf(creds.server_key, sizeof(creds.server_key));
		st = IPC_AUTH_FAIL;
	} else {
		reply(c, IPC_SCRAM_REP, id, IPC_AUTH_TEMPFAIL, "", 0);
		return;
	}
	memcpy(out, &creds, sizeof(creds));
	/* an unknown login is answered like a known one; the worker learns "fail" only at the
	 * end of the exchange (IPC_AUTH_FAIL here is for the worker, never told to the client) */
	reply(c, IPC_SCRAM_REP, id, st, out, sizeof(creds) + n);
	sodium_memzero(&creds, sizeof(creds));
	sodium_memzero(&l, sizeof(l));
}

void authd_result(struct authd *a, const char *buf, size_t len)
{
	const char *f[3];
	if (lookup_fields(buf, len, f, 3) != 3)
		return;
	bool ok = f[2][0] == '1';
	note_result(a, f[0], f[1], ok);
	char safe[SASL_USER_MAX + 1];
	log_safe(safe, sizeof(safe), f[1], strlen(f[1]));
	log_info("event=auth ip=%s login=%s mech=scram result=%s", f[0], safe, ok ? "ok" : "failed");
}
