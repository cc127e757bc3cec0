/* Unit tests for src/dns/dnsmsg.c: answer packets built by hand in wire format (RFC 1035
 * 4.1) — a normal MX answer with compression, a CNAME in front of it, a null MX (RFC 7505),
 * A/AAAA records, and the broken ones: compression loops and forward pointers, truncated
 * records, names past 255 octets, label types, too many questions; names read into buffers
 * too small, and names given as text. Runs in the test binary only. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "dns/dnsmsg.h"

/* A packet being built. */
struct pk {
	uint8_t b[1024];
	size_t n;
};

static void put(struct pk *k, const void *p, size_t n)
{
	assert_true(k->n + n <= sizeof(k->b));
	memcpy(k->b + k->n, p, n);
	k->n += n;
}

static void put16(struct pk *k, unsigned v)
{
	uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	put(k, b, 2);
}

static void put32(struct pk *k, uint32_t v)
{
	put16(k, v >> 16);
	put16(k, v & 0xffff);
}

/* "a.b.c" as uncompressed labels ("" is the root). */
static void put_name(struct pk *k, const char *s)
{
	while (*s) {
		size_t l = strcspn(s, ".");
		uint8_t len = (uint8_t)l;
		put(k, &len, 1);
		put(k, s, l);
		s += l;
		if (*s == '.')
			s++;
	}
	put(k, "", 1);
}

static void put_ptr(struct pk *k, size_t off)
{
	put16(k, 0xC000 | (unsigned)off);
}

/* Header (id 1, a response, rcode) and the question `qname`/qtype. Returns the offset of
 * the question's name (12). */
static size_t start(struct pk *k, int rcode, unsigned an, const char *qname, unsigned qtype)
{
	k->n = 0;
	put16(k, 1);
	put16(k, 0x8180 | (unsigned)rcode);
	put16(k, 1);
	put16(k, an);
	put16(k, 0);
	put16(k, 0);
	put_name(k, qname);
	put16(k, qtype);
	put16(k, DNSMSG_C_IN);
	return 12;
}

/* Type, class IN, TTL and rdlength after an owner name already written. */
static void rr_head(struct pk *k, unsigned type, unsigned rdlen)
{
	put16(k, type);
	put16(k, DNSMSG_C_IN);
	put32(k, 300);
	put16(k, rdlen);
}

static void put_mx(struct pk *k, size_t owner_ptr, unsigned pref, const char *target)
{
	put_ptr(k, owner_ptr);
	rr_head(k, DNSMSG_T_MX, 2 + (unsigned)strlen(target) + (target[0] ? 2 : 1));
	put16(k, pref);
	put_name(k, target);
}

static void test_mx_answer(void **state)
{
	(void)state;
	struct pk k;
	static struct dnsmsg m;
	char name[LIM_DNS_NAME + 1], final[LIM_DNS_NAME + 1];
	struct dnsmsg_mx mx[8];

	size_t q = start(&k, 0, 3, "Example.TEST", DNSMSG_T_MX);
	put_mx(&k, q, 20, "mx2.example.test");
	put_mx(&k, q, 10, "MX1.example.test");
	/* a record of another class is skipped */
	put_ptr(&k, q);
	put16(&k, DNSMSG_T_MX);
	put16(&k, 3 /* CH */);
	put32(&k, 0);
	put16(&k, 3);
	put16(&k, 5);
	put_name(&k, "");
	assert_int_equal(dnsmsg_parse(&m, k.b, k.n), 0);
	assert_int_equal(m.rcode, DNSMSG_RCODE_NOERROR);
	assert_int_equal(m.nrr, 2);
	assert_true(dnsmsg_owner_is(&m, 0, "example.test"));
	assert_false(dnsmsg_owner_is(&m, 0, "Example.TEST")); /* names compare lower case */
	assert_false(dnsmsg_owner_is(&m, 2, "example.test"));
	assert_false(dnsmsg_chase(&m, "example.test", final, sizeof(final)));
	assert_string_equal(final, "example.test");
	assert_int_equal(dnsmsg_mx(&m, final, mx, 8), 2);
	assert_int_equal(mx[0].pref, 20);
	assert_int_equal(mx[1].pref, 10);
	assert_true(dnsmsg_mx_target(&m, &mx[0], name, sizeof(name)));
	assert_string_equal(name, "mx2.example.test");
	assert_true(dnsmsg_mx_target(&m, &mx[1], name, sizeof(name)));
	assert_string_equal(name, "mx1.example.test");
	assert_int_equal(dnsmsg_mx(&m, final, mx, 1), 1); /* max respected */
	assert_int_equal(dnsmsg_mx(&m, "other.test", mx, 8), 0);
}

static void test_cname_then_mx(void **state)
{
	(void)state;
	struct pk k;
	static struct dnsmsg m;
	char final[LIM_DNS_NAME + 1], name[LIM_DNS_NAME + 1];
	struct dnsmsg_mx mx[4];

	size_t q = start(&k, 0, 2, "alias.test", DNSMSG_T_MX);
	put_ptr(&k, q);
	rr_head(&k, DNSMSG_T_CNAME, 11);
	size_t target = k.n;
	put_name(&k, "real.test");
	put_mx(&k, target, 5, "mx.real.test");
	assert_int_equal(dnsmsg_parse(&m, k.b, k.n), 0);
	assert_true(dnsmsg_chase(&m, "alias.test", final, sizeof(final)));
	assert_string_equal(final, "real.test");
	assert_int_equal(dnsmsg_mx(&m, "alias.test", mx, 4), 0);
	assert_int_equal(dnsmsg_mx(&m, final, mx, 4), 1);
	assert_true(dnsmsg_mx_target(&m, &mx[0], name, sizeof(name)));
	assert_string_equal(name, "mx.real.test");
}

static void test_null_mx(void **state)
{
	(void)state;
	struct pk k;
	static struct dnsmsg m;
	char name[LIM_DNS_NAME + 1];
	struct dnsmsg_mx mx[4];

	size_t q = start(&k, 0, 1, "nomail.test", DNSMSG_T_MX);
	put_mx(&k, q, 0, "");
	assert_int_equal(dnsmsg_parse(&m, k.b, k.n), 0);
	assert_int_equal(dnsmsg_mx(&m, "nomail.test", mx, 4), 1);
	assert_int_equal(mx[0].pref, 0);
	/* RFC 7505: the root, read as "" */
	assert_true(dnsmsg_mx_target(&m, &mx[0], name, sizeof(name)));
	assert_string_equal(name, "");

	/* an MX whose rdata has no room for a name is not an MX at all */
	q = start(&k, 0, 1, "short.test", DNSMSG_T_MX);
	put_ptr(&k, q);
	rr_head(&k, DNSMSG_T_MX, 2);
	put16(&k, 0);
	assert_int_equal(dnsmsg_parse(&m, k.b, k.n), 0);
	assert_int_equal(dnsmsg_mx(&m, "short.test", mx, 4), 0);

	/* an exchange that runs past its own rdata (into what follows) is unusable */
	q = start(&k, 0, 1, "spill.test", DNSMSG_T_MX);
	put_ptr(&k, q);
	rr_head(&k, DNSMSG_T_MX, 3);
	put16(&k, 1);
	put_name(&k, "x"); /* 3 octets, 2 more than the rdata has room for */
	assert_int_equal(dnsmsg_parse(&m, k.b, k.n), 0);
	assert_int_equal(dnsmsg_mx(&m, "spill.test", mx, 4), 1);
	assert_false(dnsmsg_mx_target(&m, &mx[0], name, sizeof(name)));
	/* and past the end of the packet */
	assert_int_equal(dnsmsg_parse(&m, k.b, k.n - 2), 0);
	assert_int_equal(dnsmsg_mx(&m, "spill.test", mx, 4), 1);
	assert_false(dnsmsg_mx_target(&m, &mx[0], name, sizeof(name)));
}

static void test_addresses(void **state)
{
	(void)state;
	struct pk k;
	static struct dnsmsg m;
	uint8_t a[4][16];
	static const uint8_t v4[4] = {192, 0, 2, 1}, v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};

	size_t q = start(&k, 0, 4, "host.test", DNSMSG_T_A);
	put_ptr(&k, q);
	rr_head(&k, DNSMSG_T_A, 4);
	put(&k, v4, 4);
	put_ptr(&k, q);
	rr_head(&k, DNSMSG_T_A, 5); /* wrong length: skipped */
	put(&k, "12345", 5);
	put_ptr(&k, q);
	rr_head(&k, DNSMSG_T_AAAA, 16);
	put(&k, v6, 16);
	put_name(&k, "other.test");
	rr_head(&k, DNSMSG_T_A, 4);
	put(&k, v4, 4);
	assert_int_equal(dnsmsg_parse(&m, k.b, k.n), 0);
	assert_int_equal(m.nrr, 4);
	assert_int_equal(dnsmsg_addrs(&m, "host.test", DNSMSG_T_A, a, 4), 1);
	assert_memory_equal(a[0], v4, 4);
	assert_int_equal(dnsmsg_addrs(&m, "host.test", DNSMSG_T_AAAA, a, 4), 1);
	assert_memory_equal(a[0], v6, 16);
	assert_int_equal(dnsmsg_addrs(&m, "other.test", DNSMSG_T_A, a, 4), 1);
	assert_int_equal(dnsmsg_addrs(&m, "other.test", DNSMSG_T_A, a, 0), 0);
}

static void test_compression_loop(void **state)
{
	(void)state;
	struct pk k;
	static struct dnsmsg m;
	char name[LIM_DNS_NAME + 1];
	size_t end;

	/* an owner that points at itself */
	start(&k, 0, 1, "loop.test", DNSMSG_T_A);
	size_t self = k.n;
	put_ptr(&k, self);
	rr_head(&k, DNSMSG_T_A, 4);
	put32(&k, 0xC0000201);
	assert_int_equal(dnsmsg_parse(&m, k.b, k.n), -1);
	assert_int_equal(m.nrr, 0);
	assert_int_equal(dnsmsg_name(k.b, k.n, self, name, sizeof(name), &end),
	                 DNSMSG_NAME_MALFORMED);
	assert_string_equal(name, "");

	/* two names pointing at each other: the forward one is refused */
	uint8_t two[] = {'\x01', 'a', 0xC0, 4, '\x01', 'b', 0xC0, 0};
	assert_int_equal(dnsmsg_name(two, sizeof(two), 0, name, sizeof(name), &end),
	                 DNSMSG_NAME_MALFORMED);
	assert_int_equal(dnsmsg_name(two, sizeof(two), 4, name, sizeof(name), &end),
	                 DNSMSG_NAME_MALFORMED);

	/* a pointer chain of backward jumps: fine up to LIM_DNS_PTR_JUMPS, not one more */
	uint8_t chain[2 * (LIM_DNS_PTR_JUMPS + 2) + 1];
	chain[0] = 0;
	for (size_t i = 0; i <= LIM_DNS_PTR_JUMPS; i++) {
		size_t at = 1 + 2 * i, to = i == 0 ? 0 : at - 2;
		chain[at] = (uint8_t)(0xC0 | (to >> 8));
		chain[at + 1] = (uint8_t)to;
	}
	assert_int_equal(dnsmsg_name(chain, sizeof(chain) - 2, 1 + 2 * (LIM_DNS_PTR_JUMPS - 1),
	                             name, sizeof(name), &end),
	                 DNSMSG_NAME_OK);
	assert_int_equal(end, 1 + 2 * LIM_DNS_PTR_JUMPS);
	assert_int_equal(dnsmsg_name(chain, sizeof(chain) - 2, 1 + 2 * LIM_DNS_PTR_JUMPS, name,
	                             sizeof(name), &end),
	                 DNSMSG_NAME_MALFORMED);

	/* a pointer cut in half at the end of the packet */
	uint8_t half[] = {'\x01', 'a', 0xC0};
	assert_int_equal(dnsmsg_name(half, sizeof(half), 0, name, sizeof(name), &end),
	                 DNSMSG_NAME_MALFORMED);
	/* the reserved label types 01 and 10 (RFC 6891 obsoleted them) */
	uint8_t ext[] = {0x41, 0};
	assert_int_equal(dnsmsg_name(ext, sizeof(ext), 0, name, sizeof(name), &end),
	                 DNSMSG_NAME_MALFORMED);
	ext[0] = 0x81;
	assert_int_equal(dnsmsg_name(ext, sizeof(ext), 0, name, sizeof(name), &end),
	                 DNSMSG_NAME_MALFORMED);
}

static void test_truncated(void **state)
{
	(void)state;
	struct pk k;
	static struct dnsmsg m;

	size_t q = start(&k, 0, 1, "cut.test", DNSMSG_T_MX);
	put_mx(&k, q, 10, "mx.cut.test");
	assert_int_equal(dnsmsg_parse(&m, k.b, k.n), 0);
	/* every shorter packet is malformed (the rdata, then the fixed fields, then the name) */
	for (size_t n = 0; n < k.n; n++) {
		assert_int_equal(dnsmsg_parse(&m, k.b, n), -1);
		assert_int_equal(m.nrr, 0);
	}
	/* rdlength past the end */
	q = start(&k, 0, 1, "cut.test", DNSMSG_T_A);
	put_ptr(&k, q);
	rr_head(&k, DNSMSG_T_A, 40);
	put32(&k, 0xC0000201);
	assert_int_equal(dnsmsg_parse(&m, k.b, k.n), -1);
	/* ANCOUNT says more records than there are */
	q = start(&k, 0, 2, "cut.test", DNSMSG_T_A);
	put_ptr(&k, q);
	rr_head(&k, DNSMSG_T_A, 4);
	put32(&k, 0xC0000201);
	assert_int_equal(dnsmsg_parse(&m, k.b, k.n), -1);
	/* two questions: we ask one */
	start(&k, 0, 0, "q.test", DNSMSG_T_A);
	k.b[5] = 2;
	assert_int_equal(dnsmsg_parse(&m, k.b, k.n), -1);
	/* rcode and no answer: parsed, the caller decides */
	start(&k, DNSMSG_RCODE_NXDOMAIN, 0, "nope.test", DNSMSG_T_MX);
	assert_int_equal(dnsmsg_parse(&m, k.b, k.n), 0);
	assert_int_equal(m.rcode, DNSMSG_RCODE_NXDOMAIN);
	assert_int_equal(m.nrr, 0);
	assert_int_equal(dnsmsg_parse(&m, NULL, 0), -1);
	assert_int_equal(dnsmsg_parse(&m, k.b, LIM_DNS_MSG + 1), -1); /* never read: too big */
}

static void test_name_too_long(void **state)
{
	(void)state;
	uint8_t w[300];
	char name[LIM_DNS_NAME + 1], small[8];
	size_t n = 0, end;

	/* 63 + 63 + 63 + 61 = 250 characters + 3 dots = 253: the longest name (255 octets) */
	size_t lens[] = {63, 63, 63, 61};
	for (size_t i = 0; i < 4; i++) {
		w[n++] = (uint8_t)lens[i];
		memset(w + n, 'a' + (int)i, lens[i]);
		n += lens[i];
	}
	w[n++] = 0;
	assert_int_equal(n, 255);
	assert_int_equal(dnsmsg_name(w, n, 0, name, sizeof(name), &end), DNSMSG_NAME_OK);
	assert_int_equal(strlen(name), LIM_DNS_NAME);
	assert_int_equal(end, 255);
	/* and into a buffer one too small */
	assert_int_equal(dnsmsg_name(w, n, 0, name, LIM_DNS_NAME, &end), DNSMSG_NAME_MALFORMED);
	assert_int_equal(strlen(name), LIM_DNS_NAME - 1);
	assert_int_equal(dnsmsg_name(w, n, 0, small, sizeof(small), &end), DNSMSG_NAME_MALFORMED);
	assert_int_equal(strlen(small), sizeof(small) - 1);

	/* one octet more: 256 */
	w[3 * 64] = 62;
	memset(w + 3 * 64 + 1, 'd', 62);
	w[3 * 64 + 63] = 0;
	assert_int_equal(dnsmsg_name(w, 256, 0, name, sizeof(name), &end), DNSMSG_NAME_MALFORMED);
	/* the same through a pointer: the limit counts what the pointers assemble */
	uint8_t p[200 + 70];
	memset(p, 0, sizeof(p));
	p[0] = 63;
	memset(p + 1, 'a', 63);
	p[64] = 63;
	memset(p + 65, 'b', 63);
	p[128] = 63;
	memset(p + 129, 'c', 63);
	p[192] = 0;
	p[193] = 63;
	memset(p + 194, 'd', 63);
	p[257] = 0xC0;
	p[258] = 0;
	assert_int_equal(dnsmsg_name(p, 259, 193, name, sizeof(name), &end), DNSMSG_NAME_MALFORMED);
	assert_int_equal(dnsmsg_name(p, 259, 0, name, sizeof(name), &end), DNSMSG_NAME_OK);

	/* not a host name: well formed, reported, '?' in its place */
	uint8_t odd[] = {3, 'a', ' ', 'B', 4, 't', 'e', 's', 't', 0};
	assert_int_equal(dnsmsg_name(odd, sizeof(odd), 0, name, sizeof(name), &end),
	                 DNSMSG_NAME_NOT_HOST);
	assert_string_equal(name, "a?b.test");
}

static void test_name_from_text(void **state)
{
	(void)state;
	char out[LIM_DNS_NAME + 1], longest[LIM_DNS_NAME + 2];
	static const struct {
		const char *in, *out; /* out NULL: refused */
	} t[] = {
	    {"Example.TEST", "example.test"},
	    {"example.test.", "example.test"},
	    {"_srv.x-y.test", "_srv.x-y.test"},
	    {"a", "a"},
	    {"", NULL},
	    {".", NULL},
	    {"a..b", NULL},
	    {".a", NULL},
	    {"a.b..", NULL},
	    {"a b.test", NULL},
	    {"a\x80.test", NULL},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		bool ok = dnsmsg_name_from_text(t[i].in, out, sizeof(out));
		assert_int_equal(ok, t[i].out != NULL);
		if (ok)
			assert_string_equal(out, t[i].out);
	}
	/* a label of 63 characters passes, 64 do not */
	char label[LIM_DNS_LABEL + 8];
	memset(label, 'a', sizeof(label));
	snprintf(label + LIM_DNS_LABEL, 8, ".test");
	assert_true(dnsmsg_name_from_text(label, out, sizeof(out)));
	assert_string_equal(out, label);
	memset(label, 'a', sizeof(label));
	snprintf(label + LIM_DNS_LABEL + 1, 7, ".test");
	assert_false(dnsmsg_name_from_text(label, out, sizeof(out)));
	/* 253 characters pass, 254 do not */
	memset(longest, 'a', sizeof(longest));
	for (size_t i = 63; i < LIM_DNS_NAME; i += 64)
		longest[i] = '.';
	longest[LIM_DNS_NAME] = '\0';
	assert_true(dnsmsg_name_from_text(longest, out, sizeof(out)));
	longest[LIM_DNS_NAME] = 'a';
	longest[LIM_DNS_NAME + 1] = '\0';
	assert_false(dnsmsg_name_from_text(longest, out, sizeof(out)));
	assert_false(dnsmsg_name_from_text("example.test", out, 5)); /* out too small */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mx_answer),        cmocka_unit_test(test_cname_then_mx),
	    cmocka_unit_test(test_null_mx),          cmocka_unit_test(test_addresses),
	    cmocka_unit_test(test_compression_loop), cmocka_unit_test(test_truncated),
	    cmocka_unit_test(test_name_too_long),    cmocka_unit_test(test_name_from_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
