/* libFuzzer driver for the SMTP client's reply reader and EHLO parser (src/queue/
 * smtpc_reply.c). Byte 0: bit 0 reads every reply as an EHLO reply (keywords into caps),
 * the rest picks a piece size; the other bytes are what a server sends. They are fed all at
 * once and in pieces, as reads from a socket would bring them; both must give the same
 * replies, the same error at the same place and the same capabilities. Every reply is
 * checked against the promises of smtpc_reply.h. Untrusted input: all of it. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/smtpc_reply.h"

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* Replies remembered per run (the rest are only checked, not compared). */
#define FUZZ_REPLIES 64

struct run {
	int nreplies;
	struct smtpc_reply rep[FUZZ_REPLIES];
	unsigned long long sum; /* of every reply's code and length, past FUZZ_REPLIES too */
	bool error;
	char error_text[512];
	size_t consumed; /* bytes taken by complete lines */
	struct smtpc_caps caps;
};

static bool printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

/* "d.d.d" with 1..3 digits after the dots and the reply's class first. */
static bool enh_ok(const char *e, int code)
{
	size_t i = 0;
	if (e[0] != (char)('0' + code / 100) || e[1] != '.')
		return false;
	i = 2;
	for (int part = 0; part < 2; part++) {
		size_t d = 0;
		while (e[i] >= '0' && e[i] <= '9') {
			i++;
			d++;
		}
		if (d < 1 || d > 3)
			return false;
		if (part == 0 && e[i++] != '.')
			return false;
	}
	return e[i] == '\0';
}

static void check_reply(const struct smtpc_reply *r)
{
	CHECK(r->code >= 100 && r->code <= 599);
	CHECK(r->nlines >= 1 && r->nlines <= SMTPC_MAX_LINES);
	CHECK(memchr(r->text, '\0', sizeof(r->text)) != NULL);
	CHECK(r->len == strlen(r->text));
	CHECK(printable(r->text, r->len));
	CHECK(r->len >= 3 && r->text[0] == (char)('0' + r->code / 100) &&
	      r->text[1] == (char)('0' + r->code / 10 % 10) &&
	      r->text[2] == (char)('0' + r->code % 10));
	CHECK(r->len == 3 || r->text[3] == ' ');
	CHECK(memchr(r->enh, '\0', sizeof(r->enh)) != NULL);
	if (r->enh[0] != '\0') {
		CHECK(r->code >= 200);
		CHECK(enh_ok(r->enh, r->code));
	}
}

static void record(struct run *run, enum smtpc_rd rd, const struct smtpc_reply *out)
{
	if (rd == SMTPC_RD_REPLY) {
		check_reply(out);
		if (run->nreplies < FUZZ_REPLIES)
			run->rep[run->nreplies] = *out;
		run->nreplies++;
		run->sum += (unsigned long long)out->code * 1000 + out->len;
	} else {
		CHECK(rd == SMTPC_RD_ERROR);
		CHECK(memchr(out->text, '\0', sizeof(out->text)) != NULL);
		CHECK(printable(out->text, strlen(out->text)));
		CHECK(strncmp(out->text, "malformed reply: ", 17) == 0 ||
		      strcmp(out->text, "reply line longer than 4096 bytes") == 0);
		run->error = true;
		snprintf(run->error_text, sizeof(run->error_text), "%s", out->text);
	}
}

/* Feeds in[0, n) in pieces of `piece` bytes through a buffer that keeps what the reader left,
 * as smtpc.c does with its evbuffer. */
static void feed(const char *in, size_t n, size_t piece, bool ehlo, struct run *run, char *pend)
{
	struct smtpc_reader rd;
	size_t have = 0, pos = 0;

	memset(run, 0, sizeof(*run));
	smtpc_reader_init(&rd);
	while (pos < n && !run->error) {
		size_t k = n - pos < piece ? n - pos : piece;
		memcpy(pend + have, in + pos, k);
		have += k;
		pos += k;
		for (;;) {
			struct smtpc_reply out;
			size_t used = 12345;
			enum smtpc_rd r = smtpc_reader_feed(&rd, ehlo ? &run->caps : NULL, pend,
			                                    have, &used, &out);
			CHECK(used <= have);
			if (r == SMTPC_RD_MORE) {
				/* whole lines only; what is left has no line end */
				CHECK(memchr(pend + used, '\n', have - used) == NULL);
				CHECK(have - used <= SMTPC_MAX_LINE + 1);
			} else if (r == SMTPC_RD_REPLY) {
				CHECK(used > 0 && pend[used - 1] == '\n');
			}
			run->consumed += used;
			memmove(pend, pend + used, have - used);
			have -= used;
			if (r == SMTPC_RD_MORE)
				break;
			record(run, r, &out);
			if (r == SMTPC_RD_ERROR)
				break;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run whole, part;
	if (size < 1)
		return 0;
	bool ehlo = (data[0] & 1) != 0;
	size_t piece = (size_t)(data[0] >> 1) + 1;
	const char *in = (const char *)data + 1;
	size_t n = size - 1;
	char *pend = malloc(n + 1);
	CHECK(pend != NULL);

	feed(in, n, n + 1, ehlo, &whole, pend);
	feed(in, n, piece, ehlo, &part, pend);

	CHECK(whole.nreplies == part.nreplies);
	CHECK(whole.sum == part.sum);
	CHECK(whole.error == part.error);
	CHECK(strcmp(whole.error_text, part.error_text) == 0);
	CHECK(whole.consumed == part.consumed);
	CHECK(memcmp(&whole.caps, &part.caps, sizeof(whole.caps)) == 0);
	for (int i = 0; i < whole.nreplies && i < FUZZ_REPLIES; i++) {
		const struct smtpc_reply *a = &whole.rep[i], *b = &part.rep[i];
		CHECK(a->code == b->code && a->nlines == b->nlines);
		CHECK(strcmp(a->enh, b->enh) == 0 && strcmp(a->text, b->text) == 0);
	}

	/* the whole input as one keyword line, and the caps as HELO and EHLO would apply them */
	struct smtpc_caps k;
	struct smtpc_info info;
	memset(&k, 0, sizeof(k));
	smtpc_ehlo_keyword(&k, in, n);
	if (k.max_size != 0)
		CHECK(k.size);
	memset(&info, 0xA5, sizeof(info));
	smtpc_caps_apply(&info, &k, false);
	CHECK(!info.esmtp && !info.starttls && !info.pipelining && !info.eightbitmime &&
	      !info.smtputf8 && !info.dsn && !info.chunking && !info.binarymime &&
	      !info.auth_plain && !info.auth_login && !info.size && info.max_size == 0);
	smtpc_caps_apply(&info, &k, true);
	CHECK(info.esmtp && info.size == k.size && info.max_size == (k.size ? k.max_size : 0));
	CHECK(info.starttls == k.starttls && info.auth_plain == k.auth_plain &&
	      info.auth_login == k.auth_login);
	free(pend);
	return 0;
}
