/*
 * eh_logtext: the escaping rule for logged text, cuts at max and at the
 * end of the buffer, and that nothing is ever written past cap.
 */
#include <stdlib.h>
#include <string.h>

#include "eh_logtext.h"
#include "unit.h"

#define GUARD 0x5A

static char out[1024];
static size_t shown;

/* s (len bytes) escaped into the first cap bytes of out; the rest of out
 * must stay as it was. */
static const char *esc_max(const char *s, size_t len, size_t max, size_t cap)
{
	size_t n;

	ck_assert_uint_le(cap, sizeof(out));
	memset(out, GUARD, sizeof(out));
	n = eh_logtext_escape(out, cap, s, len, max, &shown);
	for (size_t i = cap; i < sizeof(out); i++)
		ck_assert_int_eq(out[i], GUARD);
	if (cap) {
		ck_assert_uint_eq(strlen(out), n);
		ck_assert_uint_lt(n, cap);
	} else {
		ck_assert_uint_eq(n, 0);
	}
	return out;
}

static const char *esc(const char *s, size_t len)
{
	return esc_max(s, len, len, sizeof(out));
}

#define ESC(lit) esc(lit, sizeof(lit) - 1)

START_TEST(logtext_controls_and_backslash)
{
	ck_assert_str_eq(ESC("plain ~ \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
			 "plain ~ \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
	ck_assert_str_eq(ESC("a\tb\nc\rd"), "a\\tb\\nc\\rd");
	ck_assert_str_eq(ESC("\x00\x01\x1b[31m\x1f\x7f"), "\\x00\\x01\\x1B[31m\\x1F\\x7F");
	/* A backslash is doubled, so that the four characters \x1b in the
	 * text read differently from an escaped ESC. */
	ck_assert_str_eq(ESC("a\\b"), "a\\\\b");
	ck_assert_str_eq(ESC("\\x1b"), "\\\\x1b");
	ck_assert_str_eq(ESC("\\\x1b"), "\\\\\\x1B");
	ck_assert_str_eq(ESC(""), "");
	ck_assert_uint_eq(shown, 0);
}
END_TEST

START_TEST(logtext_c1_and_separators)
{
	/* CSI as UTF-8 (U+009B), the first and last C1, and NBSP after them */
	ck_assert_str_eq(ESC("\xc2\x9b" "2J"), "\\xC2\\x9B2J");
	ck_assert_str_eq(ESC("\xc2\x80\xc2\x9f\xc2\xa0"), "\\xC2\\x80\\xC2\\x9F\xc2\xa0");
	/* a raw 0x9B byte is not UTF-8 at all */
	ck_assert_str_eq(ESC("\x9b" "2J"), "\\x9B2J");
	/* U+2028 and U+2029 escaped, their neighbours U+2027 and U+202A kept */
	ck_assert_str_eq(ESC("a\xe2\x80\xa8" "b\xe2\x80\xa9" "c"), "a\\xE2\\x80\\xA8b\\xE2\\x80\\xA9c");
	ck_assert_str_eq(ESC("\xe2\x80\xa7\xe2\x80\xaa"), "\xe2\x80\xa7\xe2\x80\xaa");
	ck_assert_uint_eq(shown, 6);
}
END_TEST

START_TEST(logtext_invalid_utf8)
{
	/* lone continuation bytes */
	ck_assert_str_eq(ESC("a\x80" "b\xbf"), "a\\x80b\\xBF");
	/* truncated sequences, inside the text and at its end: every byte
	 * escaped, and what follows judged on its own */
	ck_assert_str_eq(ESC("\xe2\x82x"), "\\xE2\\x82x");
	ck_assert_str_eq(ESC("\xc3\xc3\xa9"), "\\xC3\xc3\xa9");
	ck_assert_str_eq(ESC("x\xf0\x9f\x98"), "x\\xF0\\x9F\\x98");
	/* overlong forms */
	ck_assert_str_eq(ESC("\xc0\x80"), "\\xC0\\x80");
	ck_assert_str_eq(ESC("\xc1\xbf"), "\\xC1\\xBF");
	ck_assert_str_eq(ESC("\xe0\x80\xaf"), "\\xE0\\x80\\xAF");
	/* surrogates (U+D800, U+DFFF); U+D7FF just below them is kept */
	ck_assert_str_eq(ESC("\xed\xa0\x80"), "\\xED\\xA0\\x80");
	ck_assert_str_eq(ESC("\xed\xbf\xbf"), "\\xED\\xBF\\xBF");
	ck_assert_str_eq(ESC("\xed\x9f\xbf"), "\xed\x9f\xbf");
	/* above U+10FFFF, and bytes that never start a character */
	ck_assert_str_eq(ESC("\xf4\x90\x80\x80"), "\\xF4\\x90\\x80\\x80");
	ck_assert_str_eq(ESC("\xf5\xfe\xff"), "\\xF5\\xFE\\xFF");
	ck_assert_uint_eq(shown, 3);
}
END_TEST

START_TEST(logtext_cut_at_max)
{
	/* "ab" and a euro sign: a max inside the sign leaves it out whole */
	ck_assert_str_eq(esc_max("ab\xe2\x82\xac", 5, 3, sizeof(out)), "ab");
	ck_assert_uint_eq(shown, 2);
	ck_assert_str_eq(esc_max("ab\xe2\x82\xac", 5, 4, sizeof(out)), "ab");
	ck_assert_uint_eq(shown, 2);
	ck_assert_str_eq(esc_max("ab\xe2\x82\xac", 5, 5, sizeof(out)), "ab\xe2\x82\xac");
	ck_assert_uint_eq(shown, 5);
	ck_assert_str_eq(esc_max("ab\xe2\x82\xac", 5, 99, sizeof(out)), "ab\xe2\x82\xac");
	ck_assert_uint_eq(shown, 5);
	ck_assert_str_eq(esc_max("ab", 2, 0, sizeof(out)), "");
	ck_assert_uint_eq(shown, 0);
	/* the same for an escaped character (CSI) */
	ck_assert_str_eq(esc_max("a\xc2\x9b", 3, 2, sizeof(out)), "a");
	ck_assert_uint_eq(shown, 1);
	/* invalid bytes are characters of one byte: shown up to max */
	ck_assert_str_eq(esc_max("ab\xe2\x82", 4, 3, sizeof(out)), "ab\\xE2");
	ck_assert_uint_eq(shown, 3);
}
END_TEST

START_TEST(logtext_tiny_buffers)
{
	static const char text[] = "\\\xc3\xa9\x01x";

	/* cap 0: nothing written, not even a NUL */
	ck_assert_uint_eq(eh_logtext_escape(NULL, 0, text, 5, 5, &shown), 0);
	ck_assert_uint_eq(shown, 0);
	esc_max(text, 5, 5, 0);
	ck_assert_int_eq(out[0], GUARD);
	/* cap 1: the NUL alone */
	ck_assert_str_eq(esc_max(text, 5, 5, 1), "");
	ck_assert_uint_eq(shown, 0);
	/* cap 2: one byte of text; "\\" needs two */
	ck_assert_str_eq(esc_max(text, 5, 5, 2), "");
	ck_assert_uint_eq(shown, 0);
	ck_assert_str_eq(esc_max("ab", 2, 2, 2), "a");
	ck_assert_uint_eq(shown, 1);
	ck_assert_str_eq(esc_max("\xc3\xa9", 2, 2, 2), "");
	ck_assert_str_eq(esc_max("\x01", 1, 1, 2), "");
	/* cap 5: "\\" and the e-acute (4 bytes), not the \x01 after them */
	ck_assert_str_eq(esc_max(text, 5, 5, 5), "\\\\\xc3\xa9");
	ck_assert_uint_eq(shown, 3);
	ck_assert_str_eq(esc_max("\x01", 1, 1, 5), "\\x01");
	ck_assert_str_eq(esc_max("a\xe2\x82\xac", 4, 4, 5), "a\xe2\x82\xac");
	ck_assert_str_eq(esc_max("ab\xe2\x82\xac", 5, 5, 5), "ab");
	ck_assert_str_eq(esc_max("\xc2\x9b", 2, 2, 5), "");
	ck_assert_uint_eq(shown, 0);
	ck_assert_str_eq(esc_max("\xc2\x9b", 2, 2, 9), "\\xC2\\x9B");
}
END_TEST

START_TEST(logtext_65535_bytes)
{
	enum { LEN = 65535 };
	char *in = malloc(LEN), *big = malloc(LEN * EH_LOGTEXT_GROWTH + 1), *want = malloc(LEN * EH_LOGTEXT_GROWTH + 1);
	size_t n;

	ck_assert_ptr_nonnull(in);
	ck_assert_ptr_nonnull(big);
	ck_assert_ptr_nonnull(want);
	/* 'a' then 32767 e-acutes: all valid, copied as they are */
	in[0] = 'a';
	for (size_t i = 1; i < LEN; i += 2)
		memcpy(in + i, "\xc3\xa9", 2);
	ck_assert_uint_eq(eh_logtext_escape(big, LEN + 1, in, LEN, LEN, &shown), LEN);
	ck_assert_uint_eq(shown, LEN);
	ck_assert_mem_eq(big, in, LEN);
	ck_assert_int_eq(big[LEN], '\0');
	/* one byte short: the last e-acute does not fit and goes whole */
	ck_assert_uint_eq(eh_logtext_escape(big, LEN, in, LEN, LEN, &shown), LEN - 2);
	ck_assert_uint_eq(shown, LEN - 2);
	/* the worst case, every byte escaped: EH_LOGTEXT_GROWTH per byte */
	memset(in, 0x9B, LEN);
	for (size_t i = 0; i < LEN; i++)
		memcpy(want + 4 * i, "\\x9B", 4);
	want[LEN * 4] = '\0';
	n = eh_logtext_escape(big, LEN * EH_LOGTEXT_GROWTH + 1, in, LEN, LEN, &shown);
	ck_assert_uint_eq(n, LEN * 4);
	ck_assert_uint_eq(shown, LEN);
	ck_assert_str_eq(big, want);
	/* one byte short: the last escape is left out whole */
	n = eh_logtext_escape(big, LEN * EH_LOGTEXT_GROWTH, in, LEN, LEN, &shown);
	ck_assert_uint_eq(n, (LEN - 1) * 4);
	ck_assert_uint_eq(shown, LEN - 1);
	want[(LEN - 1) * 4] = '\0';
	ck_assert_str_eq(big, want);
	free(in);
	free(big);
	free(want);
}
END_TEST

static Suite *logtext_suite(void)
{
	Suite *s = suite_create("logtext");
	TCase *tc = tcase_create("escape");

	tcase_add_test(tc, logtext_controls_and_backslash);
	tcase_add_test(tc, logtext_c1_and_separators);
	tcase_add_test(tc, logtext_invalid_utf8);
	tcase_add_test(tc, logtext_cut_at_max);
	tcase_add_test(tc, logtext_tiny_buffers);
	tcase_add_test(tc, logtext_65535_bytes);
	suite_add_tcase(s, tc);
	return s;
}
EH_UNIT_SUITE(logtext_suite)
