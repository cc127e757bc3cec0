/* The DNS answer reader of dns/dnsmsg.h: header, question, answer records, compressed names,
 * CNAME chains, MX targets, A/AAAA addresses. Pure (no I/O, no allocation); called from
 * dns/resolve.c in the queue process. Untrusted input: the whole packet, from the resolver;
 * every offset, count, compression pointer and name length is bounded before it is used,
 * and nothing in the packet is taken as a C string. */
#include "dns/dnsmsg.h"

#include <stdio.h>
#include <string.h>

/* Letters, digits, hyphen, underscore (SRV-style labels): what a mail host name may hold. */
static bool host_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

bool dnsmsg_name_from_text(const char *in, char *out, size_t outsz)
{
	size_t n = strlen(in), label = 0;
	if (n > 0 && in[n - 1] == '.')
		n--;
	if (n == 0 || n > LIM_DNS_NAME || n >= outsz)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = lower((unsigned char)in[i]);
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (!host_char(c) || ++label > LIM_DNS_LABEL) {
			return false;
		}
		out[i] = (char)c;
	}
	if (label == 0)
		return false;
	out[n] = '\0';
	return true;
}

enum dnsmsg_name dnsmsg_name(const uint8_t *p, size_t n, size_t off, char *out, size_t outsz,
                             size_t *end)
{
	size_t pos = off, wire = 1, o = 0;
	int jumps = 0;
	bool jumped = false, bad = false;

	*end = off;
	if (outsz == 0)
		return DNSMSG_NAME_MALFORMED;
	out[0] = '\0';
	for (;;) {
		if (pos >= n)
			goto malformed;
		uint8_t c = p[pos];
		if ((c & 0xC0) == 0xC0) {
			if (pos + 1 >= n)
				goto malformed;
			size_t target = ((size_t)(c & 0x3F) << 8) | p[pos + 1];
			if (!jumped) {
				*end = pos + 2;
				jumped = true;
			}
			/* RFC 1035 4.1.4 allows any earlier occurrence; only backwards, and few,
			 * so that no packet can make us loop */
			if (target >= pos || ++jumps > LIM_DNS_PTR_JUMPS)
				goto malformed;
			pos = target;
			continue;
		}
		if (c & 0xC0)
			goto malformed; /* RFC 6891 obsoleted the other label types */
		pos++;
		if (c == 0)
			break;
		wire += (size_t)c + 1;
		if (wire > LIM_DNS_NAME_WIRE || c > n - pos)
			goto malformed;
		if (o > 0)
			out[o++] = '.';
		for (size_t i = 0; i < c; i++) {
			unsigned char ch = lower(p[pos + i]);
			if (!host_char(ch)) {
				bad = true;
				ch = '?';
			}
			if (o + 1 >= outsz)
				goto malformed;
			out[o++] = (char)ch;
		}
		pos += c;
	}
	if (!jumped)
		*end = pos;
	out[o] = '\0';
	return bad ? DNSMSG_NAME_NOT_HOST : DNSMSG_NAME_OK;
malformed:
	/* the contract: out is a C string whatever happened */
	out[o < outsz ? o : outsz - 1] = '\0';
	return DNSMSG_NAME_MALFORMED;
}

int dnsmsg_parse(struct dnsmsg *m, const uint8_t *p, size_t n)
{
	char name[LIM_DNS_NAME + 1];
	size_t pos = 12, end;

	m->p = p;
	m->n = n;
	m->rcode = 0;
	m->nrr = 0;
	/* RFC 1035 4.2.2: a message is at most 65535 octets (offsets below fit 32 bits) */
	if (p == NULL || n < 12 || n > LIM_DNS_MSG)
		return -1;
	m->rcode = p[3] & 0x0F;
	unsigned qd = get16(p + 4), an = get16(p + 6);
	if (qd > 1)
		return -1;
	for (unsigned i = 0; i < qd; i++) {
		if (dnsmsg_name(p, n, pos, name, sizeof(name), &end) == DNSMSG_NAME_MALFORMED ||
		    end + 4 > n)
			goto malformed;
		pos = end + 4;
	}
	for (unsigned i = 0; i < an; i++) {
		if (dnsmsg_name(p, n, pos, name, sizeof(name), &end) == DNSMSG_NAME_MALFORMED ||
		    end + 10 > n)
			goto malformed;
		uint16_t type = get16(p + end), class = get16(p + end + 2);
		uint16_t rdlen = get16(p + end + 8);
		if (end + 10 + rdlen > n)
			goto malformed;
		if (class == DNSMSG_C_IN && m->nrr < LIM_DNS_ANSWER_RRS) {
			struct dnsmsg_rr *rr = &m->rr[m->nrr++];
			rr->type = type;
			rr->rdlen = rdlen;
			rr->owner = (uint32_t)pos;
			rr->rdata = (uint32_t)(end + 10);
		}
		pos = end + 10 + rdlen;
	}
	return 0;
malformed:
	m->nrr = 0;
	return -1;
}

bool dnsmsg_owner_is(const struct dnsmsg *m, int i, const char *name)
{
	char owner[LIM_DNS_NAME + 1];
	size_t end;
	return i >= 0 && i < m->nrr &&
	       dnsmsg_name(m->p, m->n, m->rr[i].owner, owner, sizeof(owner), &end) ==
	           DNSMSG_NAME_OK &&
	       strcmp(owner, name) == 0;
}

bool dnsmsg_chase(const struct dnsmsg *m, const char *name, char *out, size_t outsz)
{
	bool followed = false;
	snprintf(out, outsz, "%s", name);
	for (int hop = 0; hop < LIM_DNS_CNAME_HOPS; hop++) {
		int i;
		for (i = 0; i < m->nrr; i++)
			if (m->rr[i].type == DNSMSG_T_CNAME && dnsmsg_owner_is(m, i, out))
				break;
		if (i == m->nrr)
			break;
		char target[LIM_DNS_NAME + 1];
		size_t end;
		if (dnsmsg_name(m->p, m->n, m->rr[i].rdata, target, sizeof(target), &end) !=
		        DNSMSG_NAME_OK ||
		    end > (size_t)m->rr[i].rdata + m->rr[i].rdlen || target[0] == '\0')
			break;
		snprintf(out, outsz, "%s", target);
		followed = true;
	}
	return followed;
}

int dnsmsg_mx(const struct dnsmsg *m, const char *owner, struct dnsmsg_mx *out, int max)
{
	int k = 0;
	for (int i = 0; i < m->nrr && k < max; i++) {
		const struct dnsmsg_rr *rr = &m->rr[i];
		/* RFC 1035 3.3.9: PREFERENCE (16 bits), then EXCHANGE (at least the root) */
		if (rr->type != DNSMSG_T_MX || rr->rdlen < 3 || !dnsmsg_owner_is(m, i, owner))
			continue;
		out[k].pref = get16(m->p + rr->rdata);
		out[k].name = rr->rdata + 2;
		out[k].end = rr->rdata + rr->rdlen;
		k++;
	}
	return k;
}

bool dnsmsg_mx_target(const struct dnsmsg *m, const struct dnsmsg_mx *mx, char *out, size_t outsz)
{
	size_t end;
	return dnsmsg_name(m->p, m->n, mx->name, out, outsz, &end) == DNSMSG_NAME_OK &&
	       end <= mx->end;
}

int dnsmsg_addrs(const struct dnsmsg *m, const char *owner, int type, uint8_t (*out)[16], int max)
{
	uint16_t len = type == DNSMSG_T_AAAA ? 16 : 4;
	int k = 0;
	for (int i = 0; i < m->nrr && k < max; i++) {
		const struct dnsmsg_rr *rr = &m->rr[i];
		if (rr->type != type || rr->rdlen != len || !dnsmsg_owner_is(m, i, owner))
			continue;
		memcpy(out[k++], m->p + rr->rdata, len);
	}
	return k;
}
