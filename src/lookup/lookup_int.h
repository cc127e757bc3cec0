/* Shared inside the lookup process: its state, the client connections (refcounted, so an
 * answer computed in the hashing thread can find out its worker went away), and the parts
 * in authd.c (AUTH) and quota.c (hourly limits). */
#ifndef SEALMAIL_LOOKUP_INT_H
#define SEALMAIL_LOOKUP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "conf/conf.h"
#include "store/store.h"

struct lookup;

struct lookup_client {
	struct lookup *lk;
	struct bufferevent *bev;
	int refs;
	bool dead;
};

struct lookup {
	const struct conf *conf;
	struct store *store;
	struct event_base *base;
	struct event *accept_ev;
	struct authd *authd;
	struct quota *quota;
};

void lookup_client_unref(struct lookup_client *c);

/* Splits a payload of NUL-separated fields (the last may end without NUL) into f[0..max);
 * returns the number of fields. */
int lookup_fields(const char *buf, size_t len, const char **f, int max);

/* authd.c: AUTH checks. Hashing (argon2id) runs in a thread, so the loop keeps answering. */
struct authd *authd_new(struct lookup *lk);
void authd_free(struct authd *a);
void authd_plain(struct authd *a, struct lookup_client *c, uint32_t id, const char *buf, size_t len);
void authd_scram(struct authd *a, struct lookup_client *c, uint32_t id, const char *buf, size_t len);
void authd_result(struct authd *a, const char *buf, size_t len);

/* quota.c: the hourly windows of accounts. */
struct quota *quota_new(struct lookup *lk);
void quota_free(struct quota *q);
/* Counts one recipient for account if the plan allows; else fills plan/limit/retry. */
bool quota_take(struct quota *q, const char *account, char *plan, size_t plansz, uint32_t *limit,
		uint32_t *retry);
void quota_release(struct quota *q, const char *account, uint32_t n, time_t since);

#endif
