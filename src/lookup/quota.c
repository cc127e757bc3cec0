/* Hourly sending limits in the lookup process: one rolling window per account (policy/rate.c),
 * loaded from the store on first use and written through on every change, so counters survive
 * a restart. The lookup process is one thread: every take is exact, whatever the number of
 * smtp workers asking. Input: account names from authenticated sessions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lookup/lookup_int.h"
#include "policy/rate.h"
#include "util/log.h"

#define QUOTA_BUCKETS 1024

struct qacct {
	struct qacct *next;
	char name[64];
	struct rate_window w;
};

struct quota {
	struct lookup *lk;
	struct qacct *tab[QUOTA_BUCKETS];
};

static unsigned qhash(const char *s)
{
	unsigned h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % QUOTA_BUCKETS;
}

struct quota *quota_new(struct lookup *lk)
{
	struct quota *q = xcalloc(1, sizeof(*q));
	q->lk = lk;
	return q;
}

void quota_free(struct quota *q)
{
	if (!q)
		return;
	for (int i = 0; i < QUOTA_BUCKETS; i++)
		while (q->tab[i]) {
			struct qacct *a = q->tab[i];
			q->tab[i] = a->next;
			free(a);
		}
	free(q);
}

static void load_cb(void *arg, int64_t minute, uint32_t count)
{
	rate_load(arg, minute, count);
}

static struct qacct *qget(struct quota *q, const char *account)
{
	unsigned h = qhash(account);
	for (struct qacct *a = q->tab[h]; a; a = a->next)
		if (strcmp(a->name, account) == 0)
			return a;
	struct qacct *a = xcalloc(1, sizeof(*a));
	snprintf(a->name, sizeof(a->name), "%s", account);
	int64_t since = (int64_t)(time(NULL) / RATE_BUCKET_SECONDS) - RATE_BUCKETS;
	store_rate_load(q->lk->store, account, since, load_cb, &a->w);
	a->next = q->tab[h];
	q->tab[h] = a;
	return a;
}

bool quota_take(struct quota *q, const char *account, char *plan, size_t plansz, uint32_t *limit,
		uint32_t *retry)
{
	struct store_account acc;
	if (store_account_get(q->lk->store, account, &acc) != STORE_OK) {
		snprintf(plan, plansz, "?");
		*limit = 0;
		*retry = 60;
		return false;
	}
	struct qacct *a = qget(q, account);
	time_t now = time(NULL);
	snprintf(plan, plansz, "%s", acc.plan);
	*limit = acc.hourly_limit;
	if (!rate_take(&a->w, now, acc.hourly_limit)) {
		*retry = rate_retry_after(&a->w, now, acc.hourly_limit);
		log_info("event=limit limit=hourly account=%s plan=%s max=%u used=%u retry_after=%u",
			 account, acc.plan, acc.hourly_limit, rate_used(&a->w, now), *retry);
		return false;
	}
	store_rate_add(q->lk->store, account, (int64_t)(now / RATE_BUCKET_SECONDS), 1);
	uint32_t used = rate_used(&a->w, now);
	if (used == acc.hourly_limit || used == acc.hourly_limit * 9 / 10)
		log_info("event=usage account=%s plan=%s used=%u max=%u headroom=%u", account, acc.plan,
			 used, acc.hourly_limit, acc.hourly_limit - used);
	return true;
}

void quota_release(struct quota *q, const char *account, uint32_t n, time_t since)
{
	struct qacct *a = qget(q, account);
	struct rate_window before = a->w;
	rate_release(&a->w, since, n);
	/* the store mirrors the window bucket by bucket */
	for (int i = 0; i < RATE_BUCKETS; i++)
		if (before.minute[i] == a->w.minute[i] && before.count[i] > a->w.count[i])
			store_rate_add(q->lk->store, account, a->w.minute[i],
				       -(int64_t)(before.count[i] - a->w.count[i]));
}
