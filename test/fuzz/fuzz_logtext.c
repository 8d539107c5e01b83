/*
 * Fuzz target: eh_logtext_escape. Input: one byte for the buffer size, one
 * for max, then the text (any bytes). The output must stay within the
 * buffer and be NUL-terminated, be valid UTF-8 without control characters,
 * C1, U+2028 or U+2029, and read back (undoing \\, \t, \n, \r and \xNN) to
 * exactly the bytes of the text it claims to show, which must end at a
 * character boundary no later than max.
 */
#include <string.h>

#include "eh_json.h"
#include "eh_logtext.h"
#include "fuzz.h"

#define GUARD 0x5A

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Undoes the escapes of out[0..n) into back; returns its length, or
 * (size_t)-1 for an escape the rule never writes. */
static size_t read_back(const char *out, size_t n, unsigned char *back)
{
	size_t b = 0;

	for (size_t i = 0; i < n; i++) {
		if (out[i] != '\\') {
			back[b++] = (unsigned char)out[i];
			continue;
		}
		if (++i == n)
			return (size_t)-1;
		if (out[i] == '\\' || out[i] == 't' || out[i] == 'n' || out[i] == 'r') {
			back[b++] = (unsigned char)(out[i] == 't' ? '\t' : out[i] == 'n' ? '\n' : out[i] == 'r' ? '\r' : '\\');
		} else if (out[i] == 'x' && i + 2 < n && hex_value(out[i + 1]) >= 0 && hex_value(out[i + 2]) >= 0) {
			back[b++] = (unsigned char)(hex_value(out[i + 1]) * 16 + hex_value(out[i + 2]));
			i += 2;
		} else {
			return (size_t)-1;
		}
	}
	return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[4 * 4096 + 64];
	static unsigned char back[sizeof(out)];
	const char *text = (const char *)data + 2;
	size_t len, cap, max, n, shown, end;

	if (size < 2 || size - 2 > 4096)
		return 0;
	len = size - 2;
	/* 255 stands for a buffer that always holds the whole text, and for
	 * a max past its end */
	cap = data[0] == 255 ? len * EH_LOGTEXT_GROWTH + 1 : data[0];
	max = data[1] == 255 ? len + 1 : data[1];
	memset(out, GUARD, sizeof(out));
	n = eh_logtext_escape(out, cap, text, len, max, &shown);
	for (size_t i = cap; i < sizeof(out); i++)
		FUZZ_CHECK(out[i] == GUARD);
	if (!cap) {
		FUZZ_CHECK(n == 0 && shown == 0);
		return 0;
	}
	FUZZ_CHECK(n < cap && out[n] == '\0' && strlen(out) == n);
	FUZZ_CHECK(eh_utf8_valid_prefix(out, n) == n);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)out[i];

		FUZZ_CHECK(c >= 0x20 && c != 0x7F);
		FUZZ_CHECK(!(c == 0xC2 && (unsigned char)out[i + 1] <= 0x9F));
		FUZZ_CHECK(!(c == 0xE2 && (unsigned char)out[i + 1] == 0x80
			     && ((unsigned char)out[i + 2] == 0xA8 || (unsigned char)out[i + 2] == 0xA9)));
	}
	end = max < len ? max : len;
	FUZZ_CHECK(shown <= end);
	FUZZ_CHECK(read_back(out, n, back) == shown && !memcmp(back, text, shown));
	/* shown ends at a character boundary: no valid character of the text
	 * starts before it and ends after it */
	for (size_t k = 1; k <= 3 && k <= shown; k++) {
		const unsigned char *c = (const unsigned char *)text + shown - k;

		if (*c >= 0x80) {
			size_t clen = eh_utf8_sequence_len(c, len - (shown - k));

			FUZZ_CHECK(clen == 0 || clen <= k);
		}
	}
	/* With room for everything, only max cuts, and by less than a
	 * character. */
	if (data[0] == 255)
		FUZZ_CHECK(shown + 3 >= end);
	return 0;
}
