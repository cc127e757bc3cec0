/* The hourly sending window: a rolling 60 minutes kept in 60 one-minute buckets (a ring
 * indexed by minute modulo 60). Pure logic, no I/O, no allocation; used by the lookup
 * process (one window per account) and the CLI (`sealmail account usage`). Input: times and
 * counts from our own processes and the store, never from the network directly. */
#include "policy/rate.h"

#include <stddef.h>

/* Minutes of history a window counts: the bucket of `now` and the 59 before it. */
#define RATE_SPAN ((int64_t)RATE_BUCKETS)

/* Floor division, so a (theoretical) negative time still lands in the right bucket. */
static int64_t minute_of(time_t t)
{
	int64_t s = (int64_t)t;
	int64_t m = s / RATE_BUCKET_SECONDS;
	if (s % RATE_BUCKET_SECONDS < 0)
		m--;
	return m;
}

static size_t slot_of(int64_t minute)
{
	int64_t r = minute % RATE_SPAN;
	if (r < 0)
		r += RATE_SPAN;
	return (size_t)r;
}

/* A bucket counts when it holds something and its minute is within the window. A bucket
 * from the future (the clock stepped back) still counts: the conservative choice. */
static bool counted(const struct rate_window *w, size_t i, int64_t now_min)
{
	return w->count[i] > 0 && w->minute[i] >= now_min - (RATE_SPAN - 1);
}

static uint32_t sat_add(uint32_t a, uint64_t b)
{
	uint64_t s = (uint64_t)a + b;
	return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

uint32_t rate_used(const struct rate_window *w, time_t now)
{
	int64_t now_min = minute_of(now);
	uint32_t used = 0;

	if (w == NULL)
		return 0;
	for (size_t i = 0; i < RATE_BUCKETS; i++)
		if (counted(w, i, now_min))
			used = sat_add(used, w->count[i]);
	return used;
}

bool rate_take(struct rate_window *w, time_t now, uint32_t limit)
{
	if (w == NULL || rate_used(w, now) >= limit)
		return false;
	int64_t m = minute_of(now);
	size_t i = slot_of(m);
	if (w->minute[i] != m) { /* the slot still holds a minute that left the window */
		w->minute[i] = m;
		w->count[i] = 0;
	}
	w->count[i] = sat_add(w->count[i], 1);
	return true;
}

void rate_release(struct rate_window *w, time_t since, uint32_t n)
{
	int64_t since_min = minute_of(since);
	int64_t below = INT64_MAX; /* next bucket to visit is the newest with minute < below */

	if (w == NULL)
		return;
	while (n > 0) {
		size_t best = RATE_BUCKETS;
		for (size_t i = 0; i < RATE_BUCKETS; i++) {
			if (w->count[i] == 0 || w->minute[i] < since_min || w->minute[i] >= below)
				continue;
			if (best == RATE_BUCKETS || w->minute[i] > w->minute[best])
				best = i;
		}
		if (best == RATE_BUCKETS)
			return; /* nothing more counted since `since`: never below zero */
		uint32_t take = w->count[best] < n ? w->count[best] : n;
		w->count[best] -= take;
		n -= take;
		below = w->minute[best];
	}
}

uint32_t rate_retry_after(const struct rate_window *w, time_t now, uint32_t limit)
{
	const uint32_t full = RATE_BUCKETS * RATE_BUCKET_SECONDS;
	int64_t now_min = minute_of(now);
	int64_t above = INT64_MIN; /* next bucket to visit is the oldest with minute > above */

	if (w == NULL)
		return 0;
	uint32_t used = rate_used(w, now);
	if (used < limit)
		return 0;
	if (limit == 0)
		return full; /* nothing ever fits; callers never have a zero limit (CHECK > 0) */
	/* Walk the counted buckets oldest first until enough have left the window for one
	 * more recipient: usually the oldest alone, more after a plan was lowered. */
	for (;;) {
		size_t best = RATE_BUCKETS;
		for (size_t i = 0; i < RATE_BUCKETS; i++) {
			if (!counted(w, i, now_min) || w->minute[i] <= above)
				continue;
			if (best == RATE_BUCKETS || w->minute[i] < w->minute[best])
				best = i;
		}
		if (best == RATE_BUCKETS)
			return full; /* unreachable: used >= limit > 0 means some bucket counts */
		used = used > w->count[best] ? used - w->count[best] : 0;
		above = w->minute[best];
		if (used < limit) {
			/* minute m stops counting when now_min - 59 > m, at the start of m + 60 */
			int64_t leaves = (above + RATE_SPAN) * RATE_BUCKET_SECONDS;
			int64_t secs = leaves - (int64_t)now;
			if (secs < 1)
				secs = 1;
			return secs > (int64_t)full ? full : (uint32_t)secs;
		}
	}
}

void rate_load(struct rate_window *w, int64_t minute, uint32_t count)
{
	if (w == NULL || count == 0)
		return;
	size_t i = slot_of(minute);
	if (w->minute[i] != minute) {
		/* The slot holds another minute: the newer one wins (a stale row from the store
		 * must not wipe what this process counted since). */
		if (w->count[i] > 0 && w->minute[i] > minute)
			return;
		w->minute[i] = minute;
		w->count[i] = 0;
	}
	w->count[i] = sat_add(w->count[i], count);
}
