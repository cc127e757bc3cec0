/* DNS answer packets in wire format (RFC 1035 4.1), read without trusting a byte of them:
 * the header, the question, the answer section's class IN records, names with compression
 * pointers as lower-case host names, CNAME chains, MX targets and A/AAAA addresses. Pure:
 * no I/O, no allocation. Used by dns/resolve.c in the queue process (and `sealmail check
 * route`), the fuzzer and the unit tests. Untrusted input: the whole packet. */
#ifndef SEALMAIL_DNS_DNSMSG_H
#define SEALMAIL_DNS_DNSMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "limits.h"

/* RFC 1035 3.2.2 / 3.2.4, RFC 3596 2.1 */
#define DNSMSG_T_A 1
#define DNSMSG_T_CNAME 5
#define DNSMSG_T_MX 15
#define DNSMSG_T_AAAA 28
#define DNSMSG_C_IN 1
/* RFC 1035 4.1.1 */
#define DNSMSG_RCODE_NOERROR 0
#define DNSMSG_RCODE_NXDOMAIN 3

/* What reading a name found. */
enum dnsmsg_name {
	DNSMSG_NAME_MALFORMED = -1, /* the packet is broken there: out of bounds, a pointer
				     * that does not point backwards, too many pointers, a
				     * reserved label type, more than 255 octets, or out too
				     * small */
	DNSMSG_NAME_OK = 0,         /* a host name ("" for the root) */
	DNSMSG_NAME_NOT_HOST = 1,   /* well formed, but a label holds a byte that is not a
				     * letter, digit, '-' or '_' (shown as '?' in out) */
};

/* One answer record of class IN: offsets into the packet. */
struct dnsmsg_rr {
	uint16_t type;
	uint16_t rdlen;
	uint32_t owner; /* offset of the owner name */
	uint32_t rdata; /* offset of the rdata; rdata + rdlen <= the packet's length */
};

/* A parsed answer. It points into the packet it was parsed from (p, n): valid as long as
 * those bytes are, and never owns or frees them. */
struct dnsmsg {
	const uint8_t *p;
	size_t n;
	int rcode; /* the header's RCODE (0..15) */
	int nrr;   /* class IN answer records kept, in packet order (at most
		    * LIM_DNS_ANSWER_RRS; later ones are skipped, not an error) */
	struct dnsmsg_rr rr[LIM_DNS_ANSWER_RRS];
};

/* An MX record found by dnsmsg_mx(). */
struct dnsmsg_mx {
	uint16_t pref;
	uint32_t name; /* offset of the exchange name */
	uint32_t end;  /* end of its rdata: the name must lie before it */
};

/* Parses the header, at most one question and every answer record of p[0, n) (n at most
 * LIM_DNS_MSG; every offset, count, length and name checked against n). The authority and
 * additional sections are not read. 0, or -1 when malformed (m->nrr is then 0). m borrows
 * p (see struct dnsmsg). */
int dnsmsg_parse(struct dnsmsg *m, const uint8_t *p, size_t n);

/* Reads the name at offset off of p[0, n) (RFC 1035 3.1, compression as in 4.1.4: pointers
 * must point backwards, at most LIM_DNS_PTR_JUMPS of them) into out as lower-case text
 * without the trailing dot; outsz >= LIM_DNS_NAME + 1 holds any name, a smaller out gives
 * MALFORMED for names that do not fit. out is always NUL-terminated (outsz >= 1). *end is
 * the offset just after the name where it stands (after the first pointer, if any). */
enum dnsmsg_name dnsmsg_name(const uint8_t *p, size_t n, size_t off, char *out, size_t outsz,
                             size_t *end);

/* A name given as text (by our caller, not the network) into out (outsz >= LIM_DNS_NAME +
 * 1): lower case, one trailing dot dropped; false unless it is 1..LIM_DNS_NAME characters
 * of labels of 1..LIM_DNS_LABEL letters, digits, '-' or '_'. */
bool dnsmsg_name_from_text(const char *in, char *out, size_t outsz);

/* Whether record i's owner is the host name `name` (as dnsmsg_name writes it). */
bool dnsmsg_owner_is(const struct dnsmsg *m, int i, const char *name);

/* Follows CNAMEs from `name` inside the answer (at most LIM_DNS_CNAME_HOPS): the final name
 * into out (outsz >= LIM_DNS_NAME + 1; `name` itself when there is none). Returns whether
 * a CNAME was followed. A target that is not a host name, or the root, ends the chain. */
bool dnsmsg_chase(const struct dnsmsg *m, const char *name, char *out, size_t outsz);

/* The MX records owned by `owner` with room for a preference and a name (rdlen >= 3), in
 * packet order, into out[0, max). Returns how many. */
int dnsmsg_mx(const struct dnsmsg *m, const char *owner, struct dnsmsg_mx *out, int max);

/* The exchange of one MX into out (outsz >= LIM_DNS_NAME + 1): true when it is a host name
 * that lies inside its record; "" is the root (RFC 7505 null MX). */
bool dnsmsg_mx_target(const struct dnsmsg *m, const struct dnsmsg_mx *mx, char *out, size_t outsz);

/* The addresses of the records of `type` (DNSMSG_T_A: 4 bytes, DNSMSG_T_AAAA: 16) owned by
 * `owner`, in packet order, into out[0, max) (each row 16 bytes; A uses the first 4).
 * Records of the wrong length are skipped. Returns how many. */
int dnsmsg_addrs(const struct dnsmsg *m, const char *owner, int type, uint8_t (*out)[16], int max);

#endif
