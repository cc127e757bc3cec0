/* Unit tests for src/policy/rate.c: the rolling 60-minute window in minute buckets. Each case
 * is a script of steps (take, used, retry_after, release, load) at times relative to a base
 * minute, checked step by step. Pure: no I/O. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "policy/rate.h"

/* 2026-01-01T00:00:00Z, a whole minute. */
#define T0 ((time_t)1767225600)
#define M0 ((int64_t)(T0 / 60))
#define MIN 60
#define HOUR 3600

enum op { END = 0, TAKE, TAKE_N, USED, RETRY, RELEASE, LOAD };

struct step {
	enum op op;
	time_t t;     /* offset from T0 (LOAD: minute offset from M0) */
	uint32_t arg; /* TAKE/TAKE_N/RETRY: limit; RELEASE: n; LOAD: count */
	uint32_t want; /* TAKE: 1/0; TAKE_N: how many times (all must succeed); USED/RETRY */
};

struct rate_case {
	const char *name;
	struct step steps[16];
};

static const struct rate_case cases[] = {
    {"empty window",
     {{USED, 0, 0, 0}, {RETRY, 0, 10, 0}, {TAKE, 0, 1, 1}, {USED, 0, 0, 1}, {END, 0, 0, 0}}},
    {"exact limit: the limit-th is taken, the next is not",
     {{TAKE_N, 0, 3, 3},
      {USED, 0, 0, 3},
      {TAKE, 1, 3, 0},
      {TAKE, 59 * MIN, 3, 0},
      {USED, 59 * MIN, 0, 3},
      {END, 0, 0, 0}}},
    {"a bucket counts for exactly 60 minutes",
     {{TAKE_N, 0, 5, 2},
      {TAKE, 30 * MIN, 5, 1},
      {USED, HOUR - 1, 0, 3}, /* minute M0 is now - 59: still counted */
      {USED, HOUR, 0, 1},     /* minute M0 is now - 60: gone */
      {USED, 30 * MIN + HOUR - 1, 0, 1},
      {USED, 30 * MIN + HOUR, 0, 0},
      {END, 0, 0, 0}}},
    {"window slides: capacity returns as old minutes leave",
     {{TAKE_N, 0, 2, 2},
      {TAKE, 10 * MIN, 2, 0},
      {TAKE, HOUR - 1, 2, 0},
      {TAKE, HOUR, 2, 1},
      {TAKE, HOUR + 1, 2, 1},
      {TAKE, HOUR + 2, 2, 0},
      {USED, HOUR + 2, 0, 2},
      {END, 0, 0, 0}}},
    {"slot reuse after an hour resets the bucket",
     {{TAKE_N, 5, 10, 4},
      {TAKE, HOUR + 5, 10, 1}, /* same slot (minute % 60), new minute */
      {USED, HOUR + 5, 0, 1},
      {END, 0, 0, 0}}},
    {"retry_after: oldest bucket leaves the window",
     {{TAKE, 0, 2, 1},
      {TAKE, 10 * MIN, 2, 1},
      {RETRY, 20 * MIN, 2, 40 * MIN},
      {RETRY, 20 * MIN, 3, 0}, /* room under a higher limit */
      {RETRY, HOUR - 1, 2, 1},
      {RETRY, HOUR, 2, 0},
      {END, 0, 0, 0}}},
    {"retry_after: mid-minute, counted from the bucket's minute",
     {{TAKE, 30, 1, 1}, {RETRY, 30, 1, HOUR - 30}, {RETRY, 45 * MIN + 7, 1, 15 * MIN - 7},
      {END, 0, 0, 0}}},
    {"retry_after after a lowered limit needs several buckets to leave",
     {{TAKE, 0, 10, 1},
      {TAKE, 10 * MIN, 10, 1},
      {TAKE, 20 * MIN, 10, 1},
      {RETRY, 30 * MIN, 1, 50 * MIN}, /* used 3, limit 1: all three must leave */
      {RETRY, 30 * MIN, 2, 40 * MIN}, /* limit 2: M0 and M0+10 must leave */
      {END, 0, 0, 0}}},
    {"release gives back newest first and not before `since`",
     {{TAKE, 0, 10, 1},
      {TAKE, 1 * MIN, 10, 1},
      {TAKE, 2 * MIN, 10, 1},
      {RELEASE, 0, 2, 0},
      {USED, 2 * MIN, 0, 1},
      {USED, HOUR, 0, 0}, /* what was left is minute M0's: it is the one that remained */
      {END, 0, 0, 0}}},
    {"release never below zero and never older than since",
     {{TAKE_N, 0, 10, 3},
      {TAKE_N, 2 * MIN, 10, 2},
      {RELEASE, 2 * MIN, 5, 0},
      {USED, 2 * MIN, 0, 3},
      {RELEASE, 0, 100, 0},
      {USED, 2 * MIN, 0, 0},
      {TAKE, 2 * MIN, 1, 1},
      {END, 0, 0, 0}}},
    {"load: buckets from the store count while in the window",
     {{LOAD, -59, 4, 0},
      {LOAD, -60, 100, 0}, /* already out of the window */
      {LOAD, 0, 3, 0},
      {LOAD, 0, 2, 0}, /* adds to the same bucket */
      {USED, 0, 0, 9},
      {TAKE, 0, 10, 1},
      {TAKE, 0, 10, 0},
      {RETRY, 0, 10, MIN},
      {USED, MIN, 0, 6},
      {END, 0, 0, 0}}},
    {"load of an older minute does not wipe a newer one in the same slot",
     {{TAKE, 0, 10, 1}, {LOAD, -60, 7, 0}, {USED, 0, 0, 1}, {LOAD, 60, 2, 0},
      {USED, HOUR, 0, 2}, {END, 0, 0, 0}}},
    {"clock stepped back: future buckets still count",
     {{TAKE_N, 10 * MIN, 3, 3}, {USED, 0, 0, 3}, {TAKE, 0, 3, 0}, {END, 0, 0, 0}}},
};

static void test_rate_table(void **state)
{
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct rate_window w;
		memset(&w, 0, sizeof(w));
		for (size_t i = 0; i < 16 && cases[c].steps[i].op != END; i++) {
			const struct step *s = &cases[c].steps[i];
			time_t t = T0 + s->t;
			uint32_t got = 0;
			switch (s->op) {
			case TAKE:
				got = rate_take(&w, t, s->arg) ? 1 : 0;
				break;
			case TAKE_N:
				for (uint32_t k = 0; k < s->want; k++)
					got += rate_take(&w, t, s->arg) ? 1 : 0;
				break;
			case USED:
				got = rate_used(&w, t);
				break;
			case RETRY:
				got = rate_retry_after(&w, t, s->arg);
				break;
			case RELEASE:
				rate_release(&w, t, s->arg);
				break;
			case LOAD:
				rate_load(&w, M0 + s->t, s->arg);
				break;
			case END:
				break;
			}
			if (got != s->want)
				fail_msg("case \"%s\" step %zu: got %u, want %u", cases[c].name, i,
				         got, s->want);
		}
	}
}

/* The hot path: a full plan's worth of takes and a window that then frees up. */
static void test_rate_plan_sized(void **state)
{
	struct rate_window w;
	memset(&w, 0, sizeof(w));
	uint32_t ok = 0;
	/* 5000 attempts spread over 50 minutes against a limit of 3000 */
	for (int i = 0; i < 5000; i++)
		ok += rate_take(&w, T0 + i * 50 * MIN / 5000, 3000);
	assert_int_equal(ok, 3000);
	assert_int_equal(rate_used(&w, T0 + 50 * MIN), 3000);
	/* the first 3000 attempts fell in the first 30 minutes (100 per minute) */
	assert_int_equal(rate_retry_after(&w, T0 + 50 * MIN, 3000), 10 * MIN);
	assert_int_equal(rate_used(&w, T0 + HOUR + 15 * MIN), 1400); /* minutes 16..29 */
	assert_int_equal(rate_used(&w, T0 + 2 * HOUR), 0);
}

static void test_rate_null_and_saturation(void **state)
{
	struct rate_window w;
	assert_int_equal(rate_used(NULL, T0), 0);
	assert_false(rate_take(NULL, T0, 10));
	rate_release(NULL, T0, 1);
	rate_load(NULL, M0, 1);
	assert_int_equal(rate_retry_after(NULL, T0, 10), 0);

	memset(&w, 0, sizeof(w));
	assert_false(rate_take(&w, T0, 0)); /* a zero limit takes nothing */
	assert_int_equal(rate_retry_after(&w, T0, 0), HOUR);
	rate_load(&w, M0, UINT32_MAX);
	rate_load(&w, M0, 5);
	rate_load(&w, M0 - 1, UINT32_MAX);
	assert_int_equal(rate_used(&w, T0), UINT32_MAX);
	assert_false(rate_take(&w, T0, UINT32_MAX));
	assert_int_equal(rate_retry_after(&w, T0, UINT32_MAX), HOUR - MIN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rate_table),
	    cmocka_unit_test(test_rate_plan_sized),
	    cmocka_unit_test(test_rate_null_and_saturation),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
