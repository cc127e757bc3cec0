/* libFuzzer driver for the DNS answer reader (src/dns/dnsmsg.c): the bytes are one answer
 * packet as libunbound would hand it to the resolver. It is parsed; every name at every
 * offset is read with a full and with a too-small buffer; CNAMEs are chased from the
 * question and from each owner; MX targets and A/AAAA addresses are collected as resolve.c
 * does. Checks the bounds and text promises of dnsmsg.h. Untrusted input: all of it. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns/dnsmsg.h"
#include "limits.h"

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* Offsets tried as name starts (every one up to here: names are short and bounded). */
#define FUZZ_NAME_OFFSETS 600

static bool text_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
	       c == '.' || c == '?';
}

/* A name as dnsmsg_name returns it: a C string of at most LIM_DNS_NAME characters, lower
 * case, labels of 1..63 characters; OK names hold no '?' and read back as text unchanged. */
static void check_name_text(const char *s, enum dnsmsg_name r)
{
	size_t len = strlen(s), label = 0;

	CHECK(len <= LIM_DNS_NAME);
	for (size_t i = 0; i < len; i++) {
		CHECK(text_char(s[i]));
		if (s[i] == '.') {
			CHECK(label > 0);
			label = 0;
		} else {
			CHECK(++label <= LIM_DNS_LABEL);
		}
		if (r == DNSMSG_NAME_OK)
			CHECK(s[i] != '?');
	}
	CHECK(len == 0 || label > 0);
	if (r == DNSMSG_NAME_OK && len > 0) {
		char back[LIM_DNS_NAME + 1];
		CHECK(dnsmsg_name_from_text(s, back, sizeof(back)));
		CHECK(strcmp(back, s) == 0);
	}
}

/* One name at off: the full read, then reads into every smaller buffer size that matters. */
static void check_name_at(const uint8_t *p, size_t n, size_t off)
{
	char full[LIM_DNS_NAME + 1], small[LIM_DNS_NAME + 1];
	size_t end, end2;
	enum dnsmsg_name r = dnsmsg_name(p, n, off, full, sizeof(full), &end);

	CHECK(memchr(full, '\0', sizeof(full)) != NULL);
	if (r == DNSMSG_NAME_MALFORMED)
		return;
	CHECK(end > off && end <= n);
	check_name_text(full, r);
	size_t len = strlen(full);
	/* the exact fit, one too small, and the smallest */
	size_t sizes[] = {len + 1, len, 1};
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		size_t sz = sizes[k];
		if (sz == 0)
			continue;
		memset(small, 'X', sizeof(small));
		enum dnsmsg_name r2 = dnsmsg_name(p, n, off, small, sz, &end2);
		CHECK(memchr(small, '\0', sz) != NULL);
		CHECK(sz == sizeof(small) || small[sz] == 'X'); /* nothing written past sz */
		if (sz > len) {
			CHECK(r2 == r && strcmp(small, full) == 0 && end2 == end);
		} else {
			CHECK(r2 == DNSMSG_NAME_MALFORMED);
		}
	}
}

static void check_chase(const struct dnsmsg *m, const char *from)
{
	char out[LIM_DNS_NAME + 1];
	bool followed = dnsmsg_chase(m, from, out, sizeof(out));

	CHECK(strlen(out) <= LIM_DNS_NAME);
	if (!followed) {
		CHECK(strcmp(out, from) == 0);
		return;
	}
	check_name_text(out, DNSMSG_NAME_OK);
	CHECK(out[0] != '\0');

	struct dnsmsg_mx mx[LIM_DNS_ANSWER_RRS];
	int nmx = dnsmsg_mx(m, out, mx, LIM_DNS_ANSWER_RRS);
	CHECK(nmx >= 0 && nmx <= m->nrr);
}

/* What resolve.c does with an answer for `name`. */
static void check_answer(const struct dnsmsg *m, const char *name)
{
	char final[LIM_DNS_NAME + 1], target[LIM_DNS_NAME + 1];
	struct dnsmsg_mx mx[LIM_DNS_ANSWER_RRS];
	uint8_t addrs[8][16];

	(void)dnsmsg_chase(m, name, final, sizeof(final));
	int nmx = dnsmsg_mx(m, final, mx, LIM_DNS_ANSWER_RRS);
	CHECK(nmx >= 0 && nmx <= m->nrr);
	for (int i = 0; i < nmx; i++) {
		CHECK(mx[i].name + 1 <= mx[i].end && mx[i].end <= m->n);
		if (dnsmsg_mx_target(m, &mx[i], target, sizeof(target)))
			check_name_text(target, DNSMSG_NAME_OK);
	}
	/* a short max is respected */
	CHECK(dnsmsg_mx(m, final, mx, 1) <= 1);
	for (int t = 0; t < 2; t++) {
		int type = t == 0 ? DNSMSG_T_A : DNSMSG_T_AAAA;
		int k = dnsmsg_addrs(m, final, type, addrs, 8);
		CHECK(k >= 0 && k <= 8);
		CHECK(dnsmsg_addrs(m, final, type, addrs, 2) == (k < 2 ? k : 2));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct dnsmsg m; /* large (LIM_DNS_ANSWER_RRS records): not on the stack */
	char name[LIM_DNS_NAME + 1];
	size_t end;

	for (size_t off = 0; off < size && off < FUZZ_NAME_OFFSETS; off++)
		check_name_at(data, size, off);

	if (dnsmsg_parse(&m, data, size) != 0) {
		CHECK(m.nrr == 0);
		return 0;
	}
	CHECK(size >= 12 && size <= LIM_DNS_MSG);
	CHECK(m.p == data && m.n == size);
	CHECK(m.rcode >= 0 && m.rcode <= 15);
	CHECK(m.nrr >= 0 && m.nrr <= LIM_DNS_ANSWER_RRS);
	for (int i = 0; i < m.nrr; i++) {
		const struct dnsmsg_rr *rr = &m.rr[i];
		CHECK(rr->owner >= 12 && rr->owner < size);
		CHECK((size_t)rr->rdata + rr->rdlen <= size);
		CHECK(rr->owner < rr->rdata);
		enum dnsmsg_name r = dnsmsg_name(data, size, rr->owner, name, sizeof(name), &end);
		CHECK(r != DNSMSG_NAME_MALFORMED && end + 10 == rr->rdata);
		if (r == DNSMSG_NAME_OK) {
			CHECK(dnsmsg_owner_is(&m, i, name));
			check_chase(&m, name);
		}
		if (i < 8 && r == DNSMSG_NAME_OK)
			check_answer(&m, name);
	}
	CHECK(!dnsmsg_owner_is(&m, -1, "") && !dnsmsg_owner_is(&m, m.nrr, ""));
	/* the question's name, as resolve.c asks it */
	if (dnsmsg_name(data, size, 12, name, sizeof(name), &end) == DNSMSG_NAME_OK &&
	    name[0] != '\0')
		check_answer(&m, name);
	return 0;
}
