/* libFuzzer driver for src/smtp/parse.c: the bytes stand for one command line as a client
 * would send it. The line goes through smtp_parse_cmd, then MAIL/RCPT/BDAT arguments through
 * their parsers, and the whole input through smtp_parse_path with and without brackets.
 * Untrusted input: all of it. Any crash, sanitizer report or broken invariant is a bug. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/parse.h"

/* The parsers promise NUL-terminated outputs inside their fixed buffers. */
static void fuzz_check_addr(const struct smtp_addr *a)
{
	char buf[LIM_LOCAL_PART * 2 + 3 + LIM_DOMAIN + 2];

	if (memchr(a->local, '\0', sizeof(a->local)) == NULL ||
	    memchr(a->domain, '\0', sizeof(a->domain)) == NULL)
		abort();
	if (smtp_addr_format(a, buf, sizeof(buf)) < 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line;
	struct smtp_cmd cmd;
	struct smtp_addr addr;
	size_t used;

	if (size > LIM_CMD_LINE_EXT * 2)
		return 0;
	/* smtp_parse_cmd's contract: line[len] == '\0' */
	line = malloc(size + 1);
	if (line == NULL)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';

	if (smtp_parse_cmd(line, size, &cmd) != SMTP_P_NUL) {
		if (cmd.arg_len > size ||
		    (cmd.arg_len > 0 && (cmd.arg < line || cmd.arg + cmd.arg_len > line + size)))
			abort();
		switch (cmd.verb) {
		case SMTP_V_MAIL: {
			struct smtp_mail_args m;

			if (smtp_parse_mail(cmd.arg, cmd.arg_len, &m) == SMTP_P_OK) {
				fuzz_check_addr(&m.from);
				if (memchr(m.envid, '\0', sizeof(m.envid)) == NULL)
					abort();
			}
			break;
		}
		case SMTP_V_RCPT: {
			struct smtp_rcpt_args r;

			for (int u = 0; u < 2; u++) {
				if (smtp_parse_rcpt(cmd.arg, cmd.arg_len, u == 1, &r) ==
				    SMTP_P_OK) {
					fuzz_check_addr(&r.to);
					if (r.to.is_null || (r.to.utf8 && u == 0))
						abort();
					if (memchr(r.orcpt, '\0', sizeof(r.orcpt)) == NULL)
						abort();
				}
			}
			break;
		}
		case SMTP_V_BDAT: {
			uint64_t n;
			bool last;

			(void)smtp_parse_bdat(cmd.arg, cmd.arg_len, &n, &last);
			break;
		}
		case SMTP_V_HELO:
		case SMTP_V_EHLO:
			(void)smtp_domain_valid(cmd.arg, cmd.arg_len, false);
			(void)smtp_domain_valid(cmd.arg, cmd.arg_len, true);
			break;
		default:
			break;
		}
	}

	/* Raw bytes, NULs included, straight into the path parser. */
	for (int b = 0; b < 2; b++) {
		for (int u = 0; u < 2; u++) {
			enum smtp_perr e =
			    smtp_parse_path(line, size, b == 1, u == 1, &addr, &used);

			if (e == SMTP_P_OK) {
				fuzz_check_addr(&addr);
				if (used > size || (addr.utf8 && u == 0))
					abort();
			}
			if (smtp_parse_path(line, size, b == 1, u == 1, &addr, NULL) == SMTP_P_OK)
				fuzz_check_addr(&addr);
		}
	}
	free(line);
	return 0;
}
