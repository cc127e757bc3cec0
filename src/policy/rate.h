/* The hourly sending window per account: a rolling 60 minutes in one-minute buckets.
 * Pure logic, no I/O: the lookup process owns one window per account and persists the
 * buckets in the store. Input: counts and times from our own processes. */
#ifndef SEALMAIL_POLICY_RATE_H
#define SEALMAIL_POLICY_RATE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define RATE_BUCKETS 60
#define RATE_BUCKET_SECONDS 60

struct rate_window {
	int64_t minute[RATE_BUCKETS]; /* the minute (unix time / 60) a bucket counts, or 0 */
	uint32_t count[RATE_BUCKETS];
};

/* Sent (counted) within the 60 minutes up to now. */
uint32_t rate_used(const struct rate_window *w, time_t now);

/* Counts one recipient at `now` if used < limit: returns true and counts it, else false. */
bool rate_take(struct rate_window *w, time_t now, uint32_t limit);

/* Gives back n recipients counted at or after `since` (a transaction that did not end in
 * 250): newest buckets first, never below zero. */
void rate_release(struct rate_window *w, time_t since, uint32_t n);

/* Seconds from now until at least one recipient of capacity frees up (0 if there is room). */
uint32_t rate_retry_after(const struct rate_window *w, time_t now, uint32_t limit);

/* Adds `count` to the bucket of `minute` (loading from the store). */
void rate_load(struct rate_window *w, int64_t minute, uint32_t count);

#endif
