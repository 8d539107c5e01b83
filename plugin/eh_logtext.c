/*
 * eh_logtext: one escaping rule for every piece of untrusted text the
 * plugin logs, so that a reader can rely on it everywhere (see
 * eh_logtext.h). The text is walked one character at a time; each
 * character is written whole (kept or escaped) or not at all, which is
 * what keeps the output valid UTF-8 however it is cut.
 */
#include "eh_logtext.h"

#include <stdbool.h>

#include "eh_json.h"

/* Whether the valid n-byte UTF-8 character at t must still be escaped:
 * a C1 control (0xC2 0x80..0x9F) or U+2028 / U+2029 (0xE2 0x80 0xA8/A9). */
static bool shown_escaped(const unsigned char *t, size_t n)
{
	if (n == 2)
		return t[0] == 0xC2 && t[1] <= 0x9F;
	return n == 3 && t[0] == 0xE2 && t[1] == 0x80 && (t[2] == 0xA8 || t[2] == 0xA9);
}

size_t eh_logtext_escape(char *out, size_t cap, const char *s, size_t len, size_t max, size_t *shown)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *t = (const unsigned char *)s;
	size_t o = 0, i = 0;

	if (max > len)
		max = len;
	while (cap && i < max) {
		unsigned char c = t[i];
		size_t n = 1, need;
		char named = 0;
		bool escape = false;

		if (c == '\\')
			named = '\\';
		else if (c == '\t')
			named = 't';
		else if (c == '\n')
			named = 'n';
		else if (c == '\r')
			named = 'r';
		else if (c < 0x20 || c == 0x7F)
			escape = true;
		else if (c >= 0x80) {
			/* Judged on all of s, not just max bytes: a character
			 * that max cuts is valid, and is left out below. */
			n = eh_utf8_sequence_len(t + i, len - i);
			if (!n) {
				n = 1;
				escape = true;
			} else {
				escape = shown_escaped(t + i, n);
			}
		}
		if (n > max - i)
			break;
		need = named ? 2 : escape ? EH_LOGTEXT_GROWTH * n : n;
		if (need >= cap - o)
			break;
		if (named) {
			out[o++] = '\\';
			out[o++] = named;
		} else if (escape) {
			for (size_t k = 0; k < n; k++) {
				out[o++] = '\\';
				out[o++] = 'x';
				out[o++] = hex[t[i + k] >> 4];
				out[o++] = hex[t[i + k] & 15];
			}
		} else {
			for (size_t k = 0; k < n; k++)
				out[o++] = (char)t[i + k];
		}
		i += n;
	}
	if (cap)
		out[o] = '\0';
	if (shown)
		*shown = i;
	return o;
}
