/* SASL message helpers for AUTH (RFC 4954): strict base64, PLAIN (RFC 4616) and LOGIN
 * parsing. Runs in the smtp workers, before any account lookup. Untrusted input: every
 * byte a client sends in an AUTH exchange, passwords included; nothing here allocates,
 * does I/O or trusts a terminating NUL. The base64 codec is branch-free in the data, so
 * the time taken does not depend on the secret bytes being decoded. */
#include "auth/sasl.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

/* All ones when lo <= c <= hi, else 0 (every argument below 256). Branch-free, so that
 * decoding a password takes the same time whatever its bytes (no table lookups either). */
static unsigned sasl_ct_range(unsigned lo, unsigned hi, unsigned c)
{
	return (((c - lo) | (hi - c)) >> 8 & 1u) - 1u;
}

/* RFC 4648 4 alphabet: the value of c, or -1. libsodium 1.0.18's sodium_base642bin takes
 * every byte >= 0x80 as a digit, so it cannot be the strict decoder we promise. */
static int sasl_b64_val(unsigned char ch)
{
	unsigned c = ch, r = 0;

	r |= sasl_ct_range('A', 'Z', c) & (c - 'A' + 1);
	r |= sasl_ct_range('a', 'z', c) & (c - 'a' + 27);
	r |= sasl_ct_range('0', '9', c) & (c - '0' + 53);
	r |= sasl_ct_range('+', '+', c) & 63u;
	r |= sasl_ct_range('/', '/', c) & 64u;
	return (int)r - 1;
}

static char sasl_b64_chr(unsigned v)
{
	unsigned r = 0;

	r |= sasl_ct_range(0, 25, v) & (v + 'A');
	r |= sasl_ct_range(26, 51, v) & (v - 26 + 'a');
	r |= sasl_ct_range(52, 61, v) & (v - 52 + '0');
	r |= sasl_ct_range(62, 62, v) & (unsigned)'+';
	r |= sasl_ct_range(63, 63, v) & (unsigned)'/';
	return (char)r;
}

int sasl_b64_decode(const char *in, size_t len, unsigned char *out, size_t outcap, size_t *outlen)
{
	size_t pad = 0, n, o = 0;
	int bad = 0;

	if (outlen != NULL)
		*outlen = 0;
	if (in == NULL || outlen == NULL)
		return -1;
	if (len == 0)
		return 0;
	/* RFC 4648 4 with padding: whole quanta only, so a length that is not a multiple of
	 * four (missing or extra padding, a stray CR or space) is refused outright. */
	if (len % 4 != 0 || out == NULL)
		return -1;
	if (in[len - 1] == '=')
		pad = in[len - 2] == '=' ? 2 : 1;
	n = len / 4 * 3 - pad;
	if (n > outcap)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		bool last = i + 4 == len;
		int a = sasl_b64_val((unsigned char)in[i]);
		int b = sasl_b64_val((unsigned char)in[i + 1]);
		/* the padding itself reads as 0; '=' anywhere else is not a digit */
		int c = last && pad == 2 ? 0 : sasl_b64_val((unsigned char)in[i + 2]);
		int d = last && pad >= 1 ? 0 : sasl_b64_val((unsigned char)in[i + 3]);
		unsigned v;

		bad |= a | b | c | d; /* any -1 sets the sign bit */
		v = ((unsigned)a & 63u) << 18 | ((unsigned)b & 63u) << 12 |
		    ((unsigned)c & 63u) << 6 | ((unsigned)d & 63u);
		if (last && pad == 2) {
			/* RFC 4648 3.5: the bits after the last octet must be zero */
			bad |= -(int)((v >> 12) & 0x0f);
			out[o++] = (unsigned char)(v >> 16);
		} else if (last && pad == 1) {
			bad |= -(int)((v >> 6) & 0x03);
			out[o++] = (unsigned char)(v >> 16);
			out[o++] = (unsigned char)(v >> 8);
		} else {
			out[o++] = (unsigned char)(v >> 16);
			out[o++] = (unsigned char)(v >> 8);
			out[o++] = (unsigned char)v;
		}
	}
	if (bad < 0) {
		/* a failed decode may have written part of a password */
		sodium_memzero(out, n);
		return -1;
	}
	*outlen = n;
	return 0;
}

int sasl_b64_encode(const unsigned char *in, size_t len, char *out, size_t outcap)
{
	size_t need, o = 0;

	if (out == NULL || (in == NULL && len != 0))
		return -1;
	/* ((len + 2) / 3) * 4 + 1 without overflow, and the result must fit an int */
	if (len / 3 >= ((size_t)INT_MAX - 5) / 4)
		return -1;
	need = (len + 2) / 3 * 4 + 1;
	if (outcap < need)
		return -1;
	for (size_t i = 0; i < len; i += 3) {
		size_t left = len - i;
		unsigned v = (unsigned)in[i] << 16;

		if (left > 1)
			v |= (unsigned)in[i + 1] << 8;
		if (left > 2)
			v |= in[i + 2];
		out[o++] = sasl_b64_chr(v >> 18 & 63u);
		out[o++] = sasl_b64_chr(v >> 12 & 63u);
		out[o++] = left > 1 ? sasl_b64_chr(v >> 6 & 63u) : '=';
		out[o++] = left > 2 ? sasl_b64_chr(v & 63u) : '=';
	}
	out[o] = '\0';
	return (int)o;
}

/* RFC 3629 well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF), and no
 * C0 controls or DEL: a login name ends up in logs and store queries. */
bool sasl_name_valid(const unsigned char *p, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = p[i];
		size_t n;
		uint32_t cp;

		if (c < 0x80) {
			if (c < 0x20 || c == 0x7f)
				return false;
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i - 1 < n)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

int sasl_plain_parse(const unsigned char *msg, size_t len, char *user, size_t usersz, char *pass,
                     size_t passsz)
{
	const unsigned char *nul1, *nul2, *authcid, *pw;
	size_t zlen, ulen, plen;

	if (user == NULL || pass == NULL || usersz == 0 || passsz == 0)
		return -1;
	user[0] = '\0';
	pass[0] = '\0';
	if (msg == NULL || len == 0 || len > SASL_MSG_MAX)
		return -1;
	/* RFC 4616 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd; exactly two NULs */
	nul1 = memchr(msg, '\0', len);
	if (nul1 == NULL)
		return -1;
	authcid = nul1 + 1;
	nul2 = memchr(authcid, '\0', len - (size_t)(authcid - msg));
	if (nul2 == NULL)
		return -1;
	pw = nul2 + 1;
	zlen = (size_t)(nul1 - msg);
	ulen = (size_t)(nul2 - authcid);
	plen = len - (size_t)(pw - msg);
	if (memchr(pw, '\0', plen) != NULL)
		return -1;
	/* RFC 4616 2: authcid and passwd are 1*SAFE; authzid may be empty */
	if (ulen == 0 || plen == 0)
		return -1;
	if (ulen > SASL_USER_MAX || ulen >= usersz || plen > SASL_PASS_MAX || plen >= passsz)
		return -1;
	if (!sasl_name_valid(authcid, ulen))
		return -1;
	/* we do not let one user act as another: an authzid must name the authcid itself */
	if (zlen != 0 && (zlen != ulen || memcmp(msg, authcid, ulen) != 0))
		return -1;
	memcpy(user, authcid, ulen);
	user[ulen] = '\0';
	memcpy(pass, pw, plen);
	pass[plen] = '\0';
	return 0;
}

int sasl_login_decode(const char *line, size_t len, char *out, size_t outsz)
{
	unsigned char buf[SASL_MSG_MAX];
	size_t n = 0;
	int rc = -1;

	if (out == NULL || outsz == 0)
		return -1;
	out[0] = '\0';
	if (line == NULL)
		return -1;
	if (sasl_b64_decode(line, len, buf, sizeof(buf), &n) != 0)
		goto out;
	if (n == 0 || n >= outsz || memchr(buf, '\0', n) != NULL)
		goto out;
	memcpy(out, buf, n);
	out[n] = '\0';
	rc = 0;
out:
	sodium_memzero(buf, sizeof(buf));
	return rc;
}

bool sasl_is_cancel(const char *line, size_t len)
{
	return line != NULL && len == 1 && line[0] == '*';
}
