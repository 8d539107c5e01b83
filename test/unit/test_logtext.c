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

/* One case: the text, how much of it may be shown (max) into how big a
 * buffer (cap), and the exact output and bytes shown expected. */
struct esc_case {
	const char *in;
	size_t len, max, cap;
	const char *want;
	size_t shown;
};

/* Whole text, ample buffer: the rule alone decides. */
#define RULE(in, want) { in, sizeof(in) - 1, sizeof(in) - 1, sizeof(out), want, sizeof(in) - 1 }
/* Cut by max or by a small cap. */
#define CUT(in, max, cap, want, shown) { in, sizeof(in) - 1, max, cap, want, shown }

static void run_cases(const struct esc_case *cases, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		const struct esc_case *c = &cases[k];

		ck_assert_msg(!strcmp(esc_max(c->in, c->len, c->max, c->cap), c->want), "case %zu: got \"%s\"", k,
			      out);
		ck_assert_msg(shown == c->shown, "case %zu: %zu bytes shown, not %zu", k, shown, c->shown);
	}
}

START_TEST(logtext_rule)
{
	static const struct esc_case cases[] = {
		RULE("plain ~ \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "plain ~ \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
		RULE("", ""),
		/* C0 and DEL */
		RULE("a\tb\nc\rd", "a\\tb\\nc\\rd"),
		RULE("\x00\x01\x1b[31m\x1f\x7f", "\\x00\\x01\\x1B[31m\\x1F\\x7F"),
		/* A backslash is doubled, so that the four characters \x1b in
		 * the text read differently from an escaped ESC. */
		RULE("a\\b", "a\\\\b"),
		RULE("\\x1b", "\\\\x1b"),
		RULE("\\\x1b", "\\\\\\x1B"),
		/* CSI as UTF-8 (U+009B), the first and last C1, and NBSP after */
		RULE("\xc2\x9b" "2J", "\\xC2\\x9B2J"),
		RULE("\xc2\x80\xc2\x9f\xc2\xa0", "\\xC2\\x80\\xC2\\x9F\xc2\xa0"),
		/* a raw 0x9B byte is not UTF-8 at all */
		RULE("\x9b" "2J", "\\x9B2J"),
		/* U+2028 and U+2029 escaped, U+2027 and U+202A kept */
		RULE("a\xe2\x80\xa8" "b\xe2\x80\xa9" "c", "a\\xE2\\x80\\xA8b\\xE2\\x80\\xA9c"),
		RULE("\xe2\x80\xa7\xe2\x80\xaa", "\xe2\x80\xa7\xe2\x80\xaa"),
		/* invalid UTF-8, every byte escaped and the next judged on its
		 * own: lone continuation bytes, truncated sequences (inside the
		 * text and at its end), overlong forms, surrogates (U+D800,
		 * U+DFFF; U+D7FF below them is kept), above U+10FFFF, bytes that
		 * never start a character */
		RULE("a\x80" "b\xbf", "a\\x80b\\xBF"),
		RULE("\xe2\x82x", "\\xE2\\x82x"),
		RULE("\xc3\xc3\xa9", "\\xC3\xc3\xa9"),
		RULE("x\xf0\x9f\x98", "x\\xF0\\x9F\\x98"),
		RULE("\xc0\x80", "\\xC0\\x80"),
		RULE("\xc1\xbf", "\\xC1\\xBF"),
		RULE("\xe0\x80\xaf", "\\xE0\\x80\\xAF"),
		RULE("\xed\xa0\x80", "\\xED\\xA0\\x80"),
		RULE("\xed\xbf\xbf", "\\xED\\xBF\\xBF"),
		RULE("\xed\x9f\xbf", "\xed\x9f\xbf"),
		RULE("\xf4\x90\x80\x80", "\\xF4\\x90\\x80\\x80"),
		RULE("\xf5\xfe\xff", "\\xF5\\xFE\\xFF"),
	};

	run_cases(cases, sizeof(cases) / sizeof(cases[0]));
}
END_TEST

START_TEST(logtext_cut_at_max)
{
	static const struct esc_case cases[] = {
		/* "ab" and a euro sign: a max inside the sign leaves it out */
		CUT("ab\xe2\x82\xac", 3, sizeof(out), "ab", 2),
		CUT("ab\xe2\x82\xac", 4, sizeof(out), "ab", 2),
		CUT("ab\xe2\x82\xac", 5, sizeof(out), "ab\xe2\x82\xac", 5),
		CUT("ab\xe2\x82\xac", 99, sizeof(out), "ab\xe2\x82\xac", 5),
		CUT("ab", 0, sizeof(out), "", 0),
		/* the same for an escaped character (CSI) */
		CUT("a\xc2\x9b", 2, sizeof(out), "a", 1),
		/* invalid bytes are characters of one byte: shown up to max */
		CUT("ab\xe2\x82", 3, sizeof(out), "ab\\xE2", 3),
	};

	run_cases(cases, sizeof(cases) / sizeof(cases[0]));
}
END_TEST

START_TEST(logtext_tiny_buffers)
{
	static const struct esc_case cases[] = {
		/* cap 1: the NUL alone */
		CUT("\\\xc3\xa9\x01x", 5, 1, "", 0),
		/* cap 2: one byte of text; "\\" and an e-acute need two */
		CUT("\\\xc3\xa9\x01x", 5, 2, "", 0),
		CUT("ab", 2, 2, "a", 1),
		CUT("\xc3\xa9", 2, 2, "", 0),
		CUT("\x01", 1, 2, "", 0),
		/* cap 5: "\\" and the e-acute (4 bytes), not the \x01 after */
		CUT("\\\xc3\xa9\x01x", 5, 5, "\\\\\xc3\xa9", 3),
		CUT("\x01", 1, 5, "\\x01", 1),
		CUT("a\xe2\x82\xac", 4, 5, "a\xe2\x82\xac", 4),
		CUT("ab\xe2\x82\xac", 5, 5, "ab", 2),
		CUT("\xc2\x9b", 2, 5, "", 0),
		CUT("\xc2\x9b", 2, 9, "\\xC2\\x9B", 2),
	};

	/* cap 0: nothing written, not even a NUL */
	ck_assert_uint_eq(eh_logtext_escape(NULL, 0, "ab", 2, 2, &shown), 0);
	ck_assert_uint_eq(shown, 0);
	esc_max("ab", 2, 2, 0);
	ck_assert_int_eq(out[0], GUARD);
	run_cases(cases, sizeof(cases) / sizeof(cases[0]));
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
	/* the worst case, every byte escaped: EH_LOGTEXT_GROWTH per byte
	 * (compared with strcmp: check would not print 262,140 bytes) */
	memset(in, 0x9B, LEN);
	for (size_t i = 0; i < LEN; i++)
		memcpy(want + 4 * i, "\\x9B", 4);
	want[LEN * 4] = '\0';
	n = eh_logtext_escape(big, LEN * EH_LOGTEXT_GROWTH + 1, in, LEN, LEN, &shown);
	ck_assert_uint_eq(n, LEN * 4);
	ck_assert_uint_eq(shown, LEN);
	ck_assert_msg(!strcmp(big, want), "the escaped text differs");
	/* one byte short: the last escape is left out whole */
	n = eh_logtext_escape(big, LEN * EH_LOGTEXT_GROWTH, in, LEN, LEN, &shown);
	ck_assert_uint_eq(n, (LEN - 1) * 4);
	ck_assert_uint_eq(shown, LEN - 1);
	want[(LEN - 1) * 4] = '\0';
	ck_assert_msg(!strcmp(big, want), "the escaped text differs");
	free(in);
	free(big);
	free(want);
}
END_TEST

static Suite *logtext_suite(void)
{
	Suite *s = suite_create("logtext");
	TCase *tc = tcase_create("escape");

	tcase_add_test(tc, logtext_rule);
	tcase_add_test(tc, logtext_cut_at_max);
	tcase_add_test(tc, logtext_tiny_buffers);
	tcase_add_test(tc, logtext_65535_bytes);
	suite_add_tcase(s, tc);
	return s;
}
EH_UNIT_SUITE(logtext_suite)
