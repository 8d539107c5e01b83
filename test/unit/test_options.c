/*
 * eh_options: strict parsing against a local table, the typed getters and
 * iteration, the reference writers, and a check of the real tables (every
 * option documented, every default accepted by its own parser).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eh_core.h"
#include "eh_options.h"
#include "unit.h"

static const struct eh_option test_opts[] = {
	{ "name", EH_OPT_STRING, "dflt", 0, 0, NULL, 0, "A name." },
	{ "count", EH_OPT_INT, "10", -5, 100, NULL, 0, "A count." },
	{ "big", EH_OPT_INT, NULL, -0x7FFFFFFFFFFFFFFFLL - 1, 0x7FFFFFFFFFFFFFFFLL, NULL, 0, "Any integer." },
	{ "flag", EH_OPT_BOOL, "false", 0, 0, NULL, 0, "A flag." },
	{ "mode", EH_OPT_ENUM, "json", 0, 0, "json|cloudevents|raw", 0, "A mode." },
	{ "items", EH_OPT_LIST, NULL, 0, 0, NULL, 0, "Some items." },
	{ "header", EH_OPT_STRING, NULL, 0, 0, NULL, EH_OPT_REPEAT, "Repeatable." },
	{ "kafka.", EH_OPT_STRING, NULL, 0, 0, NULL, EH_OPT_PREFIX, "Passed through." },
	{ "password", EH_OPT_STRING, NULL, 0, 0, NULL, EH_OPT_SECRET, "A secret." },
	{ "pin", EH_OPT_INT, NULL, 0, 9999, NULL, EH_OPT_SECRET, "A secret number." },
	{ "secret_mode", EH_OPT_ENUM, NULL, 0, 0, "a|b", EH_OPT_SECRET, "A secret choice." },
	{ NULL, 0, NULL, 0, 0, NULL, 0, NULL },
};
static const struct eh_option other_opts[] = {
	{ "other_x", EH_OPT_STRING, "x", 0, 0, NULL, 0, "In a second group." },
	{ NULL, 0, NULL, 0, 0, NULL, 0, NULL },
};
static const struct eh_option_group test_groups[] = {
	{ "test", "Test", test_opts },
	{ "other", "Other", other_opts },
};

/* Parses kv (NULL-key terminated); returns the rc and leaves err. */
static int parse(struct eh_config *cfg, const struct eh_kv *kv, char *err, size_t errlen)
{
	size_t n = 0;

	while (kv[n].key)
		n++;
	err[0] = '\0';
	return eh_config_parse(cfg, test_groups, 2, kv, n, err, errlen);
}

/* Expects one key = value to be refused with a message containing want. */
static void refused(const char *key, const char *value, const char *want)
{
	struct eh_kv kv[] = { { key, value }, { NULL, NULL } };
	struct eh_config cfg;
	char err[512];

	ck_assert_msg(parse(&cfg, kv, err, sizeof(err)) == -1, "%s=%s accepted", key, value);
	ck_assert_msg(strstr(err, want) != NULL, "%s=%s: '%s' lacks '%s'", key, value, err, want);
	eh_config_free(&cfg);
}

static void accepted(const char *key, const char *value)
{
	struct eh_kv kv[] = { { key, value }, { NULL, NULL } };
	struct eh_config cfg;
	char err[512];

	ck_assert_msg(parse(&cfg, kv, err, sizeof(err)) == 0, "%s=%s refused: %s", key, value, err);
	ck_assert_str_eq(eh_config_get(&cfg, key), value);
	ck_assert(eh_config_isset(&cfg, key));
	eh_config_free(&cfg);
}

START_TEST(options_unknown_key)
{
	refused("nmae", "x", "plugin_opt_nmae: unknown option");
	refused("", "x", "plugin_opt_: unknown option");
	refused("Name", "x", "plugin_opt_Name: unknown option");
	/* A prefix alone is not a key; a key must extend it. */
	refused("kafka.", "x", "plugin_opt_kafka.: unknown option");
	refused("kafka", "x", "plugin_opt_kafka: unknown option");
	accepted("kafka.acks", "all");
	accepted("other_x", "y");
}
END_TEST

START_TEST(options_duplicates)
{
	struct eh_config cfg;
	char err[512];
	struct eh_kv dup[] = { { "name", "a" }, { "count", "1" }, { "name", "b" }, { NULL, NULL } };
	struct eh_kv rep[] = { { "header", "a: 1" }, { "name", "n" }, { "header", "b: 2" }, { "header", "a: 1" },
			       { NULL, NULL } };
	struct eh_kv pre[] = { { "kafka.acks", "all" }, { "kafka.linger.ms", "5" }, { NULL, NULL } };
	struct eh_kv predup[] = { { "kafka.acks", "all" }, { "kafka.linger.ms", "5" }, { "kafka.acks", "1" },
				  { NULL, NULL } };

	ck_assert_int_eq(parse(&cfg, dup, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "plugin_opt_name: given more than once");
	eh_config_free(&cfg);

	ck_assert_int_eq(parse(&cfg, rep, err, sizeof(err)), 0);
	ck_assert_uint_eq(cfg.count, 4);
	/* The first given value is what eh_config_get answers. */
	ck_assert_str_eq(eh_config_get(&cfg, "header"), "a: 1");
	eh_config_free(&cfg);

	ck_assert_int_eq(parse(&cfg, pre, err, sizeof(err)), 0);
	ck_assert_str_eq(eh_config_get(&cfg, "kafka.acks"), "all");
	ck_assert_str_eq(eh_config_get(&cfg, "kafka.linger.ms"), "5");
	ck_assert_ptr_null(eh_config_get(&cfg, "kafka.other"));
	ck_assert(!eh_config_isset(&cfg, "kafka.other"));
	eh_config_free(&cfg);

	ck_assert_int_eq(parse(&cfg, predup, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "plugin_opt_kafka.acks: given more than once");
	eh_config_free(&cfg);
}
END_TEST

START_TEST(options_int_values)
{
	accepted("count", "0");
	accepted("count", "-5");
	accepted("count", "100");
	accepted("count", "+7");
	accepted("count", "-0");
	accepted("count", "007");
	accepted("big", "9223372036854775807");
	accepted("big", "-9223372036854775808");
	refused("count", "101", "plugin_opt_count: '101' is not a whole number from -5 to 100");
	refused("count", "-6", "plugin_opt_count:");
	refused("count", "12x", "plugin_opt_count: '12x'");
	refused("count", "", "plugin_opt_count: ''");
	refused("count", " 5", "plugin_opt_count: ' 5'");
	refused("count", "0x10", "plugin_opt_count:");
	refused("count", "1e2", "plugin_opt_count:");
	refused("count", "1.0", "plugin_opt_count:");
	refused("count", "-", "plugin_opt_count:");
	refused("count", "+", "plugin_opt_count:");
	refused("count", "99999999999999999999", "plugin_opt_count:");
	refused("big", "9223372036854775808", "plugin_opt_big:");
	refused("big", "-9223372036854775809", "plugin_opt_big:");
	refused("big", "99999999999999999999999", "plugin_opt_big:");
}
END_TEST

START_TEST(options_parse_helpers)
{
	long long v = 123;

	ck_assert_int_eq(eh_parse_int("42", 0, 100, &v), 0);
	ck_assert_int_eq(v, 42);
	v = 123;
	ck_assert_int_eq(eh_parse_int(NULL, 0, 100, &v), -1);
	ck_assert_int_eq(eh_parse_int("\t1", 0, 100, &v), -1);
	ck_assert_int_eq(eh_parse_int("1\n", 0, 100, &v), -1);
	/* A refused value leaves out alone. */
	ck_assert_int_eq(v, 123);

	ck_assert_int_eq(eh_parse_bool("true"), 1);
	ck_assert_int_eq(eh_parse_bool("YES"), 1);
	ck_assert_int_eq(eh_parse_bool("On"), 1);
	ck_assert_int_eq(eh_parse_bool("1"), 1);
	ck_assert_int_eq(eh_parse_bool("false"), 0);
	ck_assert_int_eq(eh_parse_bool("no"), 0);
	ck_assert_int_eq(eh_parse_bool("OFF"), 0);
	ck_assert_int_eq(eh_parse_bool("0"), 0);
	ck_assert_int_eq(eh_parse_bool(""), -1);
	ck_assert_int_eq(eh_parse_bool("tru"), -1);
	ck_assert_int_eq(eh_parse_bool("true "), -1);
	ck_assert_int_eq(eh_parse_bool("2"), -1);
	ck_assert_int_eq(eh_parse_bool("y"), -1);
}
END_TEST

START_TEST(options_bool_enum_list_string)
{
	accepted("flag", "true");
	accepted("flag", "Off");
	refused("flag", "maybe", "plugin_opt_flag: 'maybe' is not a boolean");
	refused("flag", "", "plugin_opt_flag:");

	accepted("mode", "json");
	accepted("mode", "raw");
	accepted("mode", "cloudevents");
	refused("mode", "JSON", "plugin_opt_mode: 'JSON' is not one of json|cloudevents|raw");
	refused("mode", "json|raw", "plugin_opt_mode:");
	refused("mode", "cloud", "plugin_opt_mode:");
	refused("mode", "", "plugin_opt_mode:");

	accepted("items", "a");
	accepted("items", "a,b, c ,d");
	refused("items", "", "plugin_opt_items:");
	refused("items", "a,,b", "plugin_opt_items: 'a,,b' is not a comma-separated list");
	refused("items", "a,", "plugin_opt_items:");
	refused("items", ",a", "plugin_opt_items:");
	refused("items", "a, ,b", "plugin_opt_items:");

	accepted("name", "x");
	accepted("name", " spaced value");
	refused("name", "", "plugin_opt_name: the value is empty");
}
END_TEST

/* Accepted with the trailing blanks dropped; the stored value is want. */
static void trimmed(const char *key, const char *value, const char *want)
{
	struct eh_kv kv[] = { { key, value }, { NULL, NULL } };
	struct eh_config cfg;
	char err[512];

	ck_assert_msg(parse(&cfg, kv, err, sizeof(err)) == 0, "%s='%s' refused: %s", key, value, err);
	ck_assert_str_eq(eh_config_get(&cfg, key), want);
	eh_config_free(&cfg);
}

START_TEST(options_trailing_blanks)
{
	/* Every type follows one rule: trailing spaces and tabs are dropped. */
	trimmed("name", "/x.jsonl ", "/x.jsonl");
	trimmed("name", "ev/{event} \t \t", "ev/{event}");
	trimmed("name", " lead", " lead");
	trimmed("count", "5 ", "5");
	trimmed("count", "5\t", "5");
	trimmed("flag", "true ", "true");
	trimmed("mode", "raw\t", "raw");
	trimmed("items", "a,b ", "a,b");
	trimmed("header", "X-A: 1 ", "X-A: 1");
	trimmed("kafka.acks", "all ", "all");
	/* Only spaces and tabs: a leading blank or another byte still counts. */
	refused("count", " 5", "plugin_opt_count: ' 5' is not a whole number");
	refused("count", "5\n", "plugin_opt_count: '5\\n' is not a whole number");
	/* A key with a tab in it is shown with the tab made visible, and
	 * what follows the tab (a value, maybe a secret) is not shown, even
	 * for a pass-through prefix that would accept the key. */
	refused("count\t", "5", "plugin_opt_count\\t: the key holds a tab: separate key and value with a space");
	refused("kafka.sasl.password\tS3cr3t", "# prod",
		"plugin_opt_kafka.sasl.password\\t<and 6 more bytes, not shown>: the key holds a tab");
	refused("count\x01", "5", "plugin_opt_count\\x01: unknown option (see");
}
END_TEST

START_TEST(options_quote)
{
	char buf[EH_QUOTE_LEN], want[EH_QUOTE_LEN];
	char *big = malloc(102401);
	char *err = malloc(1024);
	struct eh_config cfg;

	ck_assert_ptr_nonnull(big);
	ck_assert_ptr_nonnull(err);
	ck_assert_str_eq(eh_quote(buf, sizeof(buf), "plain/é"), "plain/é");
	ck_assert_str_eq(eh_quote(buf, sizeof(buf), "a\tb\nc\rd\x01" "e\x7f"), "a\\tb\\nc\\rd\\x01e\\x7F");
	ck_assert_str_eq(eh_quote_n(buf, sizeof(buf), "abcdef", 3), "abc");
	/* Exactly EH_QUOTE_MAX bytes: shown whole. */
	memset(big, 'a', EH_QUOTE_MAX);
	big[EH_QUOTE_MAX] = '\0';
	ck_assert_str_eq(eh_quote(buf, sizeof(buf), big), big);
	/* Longer: cut, with the total length. */
	memset(big, 'a', 102400);
	big[102400] = '\0';
	snprintf(want, sizeof(want), "%.*s...(102400 bytes)", EH_QUOTE_MAX, big);
	ck_assert_str_eq(eh_quote(buf, sizeof(buf), big), want);
	/* Never half a character: "é" is 2 bytes and would straddle the cut. */
	memset(big, 'a', 102400);
	memcpy(big + EH_QUOTE_MAX - 1, "\xc3\xa9", 2);
	snprintf(want, sizeof(want), "%.*s...(102400 bytes)", EH_QUOTE_MAX - 1, big);
	ck_assert_str_eq(eh_quote(buf, sizeof(buf), big), want);
	/* The worst case (every byte escaped) fits in EH_QUOTE_LEN. */
	memset(big, '\x01', 102400);
	ck_assert_uint_eq(strlen(eh_quote(buf, sizeof(buf), big)), EH_QUOTE_MAX * 4 + strlen("...(102400 bytes)"));

	/* A 100 KB value or key leaves room for the reason in the message. */
	memset(big, 'a', 102400);
	{
		struct eh_kv kv[] = { { "count", big }, { NULL, NULL } };

		ck_assert_int_eq(parse(&cfg, kv, err, 1024), -1);
		snprintf(want, sizeof(want), "plugin_opt_count: '%.*s...(102400 bytes)' is not a whole number from -5 "
			 "to 100", EH_QUOTE_MAX, big);
		ck_assert_str_eq(err, want);
		eh_config_free(&cfg);
	}
	{
		struct eh_kv kv[] = { { big, "1" }, { NULL, NULL } };

		ck_assert_int_eq(parse(&cfg, kv, err, 1024), -1);
		ck_assert_ptr_nonnull(strstr(err, "...(102400 bytes): unknown option (see docs/configuration.md"));
		ck_assert_uint_lt(strlen(err), 300);
		eh_config_free(&cfg);
	}
	free(big);
	free(err);
}
END_TEST

/* eh_quote follows eh_logtext_escape's rule: what it escapes beyond C0. */
START_TEST(options_quote_escapes)
{
	char buf[EH_QUOTE_LEN];

	ck_assert_str_eq(eh_quote(buf, sizeof(buf), "t/\xc2\x9b" "2J/\xe2\x80\xa8/x"), "t/\\xC2\\x9B2J/\\xE2\\x80\\xA8/x");
	ck_assert_str_eq(eh_quote(buf, sizeof(buf), "\x80|\xe2\x82|\xc0\x80|\xed\xa0\x80"),
			 "\\x80|\\xE2\\x82|\\xC0\\x80|\\xED\\xA0\\x80");
	/* a value holding the four characters \x1b is not an escaped ESC */
	ck_assert_str_eq(eh_quote(buf, sizeof(buf), "C:\\x1b\x1b"), "C:\\\\x1b\\x1B");
	ck_assert_str_eq(eh_quote_key(buf, sizeof(buf), "a\\b\tsecret"), "a\\\\b\\t<and 6 more bytes, not shown>");
}
END_TEST

/* The cut at EH_QUOTE_MAX bytes falls inside a character: the character
 * goes whole, whether it would be kept or escaped. */
START_TEST(options_quote_cut_inside_character)
{
	char buf[EH_QUOTE_LEN], want[EH_QUOTE_LEN], big[EH_QUOTE_MAX + 8];
	static const struct {
		const char *c; /* the character that straddles the cut */
		size_t before; /* of its bytes, how many come before the cut */
	} cases[] = {
		{ "\xe2\x82\xac", 1 }, { "\xe2\x82\xac", 2 }, { "\xf0\x9f\x98\x80", 1 },
		{ "\xf0\x9f\x98\x80", 3 }, { "\xc2\x9b", 1 }, { "\xe2\x80\xa8", 2 },
	};

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		size_t at = EH_QUOTE_MAX - cases[k].before, n = strlen(cases[k].c);

		memset(big, 'a', sizeof(big));
		memcpy(big + at, cases[k].c, n);
		big[EH_QUOTE_MAX + 7] = '\0';
		snprintf(want, sizeof(want), "%.*s...(%d bytes)", (int)at, big, EH_QUOTE_MAX + 7);
		ck_assert_str_eq(eh_quote(buf, sizeof(buf), big), want);
	}
	/* Ending exactly at the cut it is shown (escaped, for a CSI). */
	memset(big, 'a', sizeof(big));
	memcpy(big + EH_QUOTE_MAX - 2, "\xc2\x9b", 2);
	big[EH_QUOTE_MAX + 7] = '\0';
	snprintf(want, sizeof(want), "%.*s\\xC2\\x9B...(%d bytes)", EH_QUOTE_MAX - 2, big, EH_QUOTE_MAX + 7);
	ck_assert_str_eq(eh_quote(buf, sizeof(buf), big), want);
	/* An invalid byte is a character of its own: the last one shown. */
	memset(big, 'a', sizeof(big));
	big[EH_QUOTE_MAX - 1] = (char)0xE2;
	big[EH_QUOTE_MAX + 7] = '\0';
	snprintf(want, sizeof(want), "%.*s\\xE2...(%d bytes)", EH_QUOTE_MAX - 1, big, EH_QUOTE_MAX + 7);
	ck_assert_str_eq(eh_quote(buf, sizeof(buf), big), want);
	/* The worst case with both tails fits: a long key, every byte escaped,
	 * then a tab and a value. */
	{
		char *key = malloc(102400 + 8);

		ck_assert_ptr_nonnull(key);
		memset(key, '\\', 102400);
		memcpy(key + 102400, "\tsecret", 8);
		ck_assert_str_eq(eh_quote_key(buf, sizeof(buf), key) + EH_QUOTE_MAX * 2,
				 "...(102400 bytes)\\t<and 6 more bytes, not shown>");
		memset(key, '\x01', 102400);
		ck_assert_uint_eq(strlen(eh_quote_key(buf, sizeof(buf), key)),
				  EH_QUOTE_MAX * 4 + strlen("...(102400 bytes)\\t<and 6 more bytes, not shown>"));
		free(key);
	}
}
END_TEST

/* Buffers smaller than EH_QUOTE_LEN: cut between characters, a tail only
 * when it fits whole, always NUL-terminated, nothing past cap. */
static const char *quote_into(size_t cap, const char *s, bool key)
{
	static char buf[64];

	memset(buf, 'Z', sizeof(buf));
	if (key)
		eh_quote_key(buf, cap, s);
	else
		eh_quote(buf, cap, s);
	for (size_t i = cap; i < sizeof(buf); i++)
		ck_assert_int_eq(buf[i], 'Z');
	return buf;
}

START_TEST(options_quote_tiny_buffers)
{
	char big[EH_QUOTE_MAX + 2];

	ck_assert_int_eq(quote_into(0, "ab", false)[0], 'Z');
	ck_assert_int_eq(quote_into(0, "ab\tc", true)[0], 'Z');
	ck_assert_str_eq(quote_into(1, "ab", false), "");
	ck_assert_str_eq(quote_into(1, "ab\t", true), "");
	ck_assert_str_eq(quote_into(2, "ab", false), "a");
	ck_assert_str_eq(quote_into(2, "\\", false), "");
	ck_assert_str_eq(quote_into(2, "\xc3\xa9", false), "");
	ck_assert_str_eq(quote_into(2, "a\t", true), "a");
	ck_assert_str_eq(quote_into(5, "ab\xe2\x82\xac", false), "ab");
	ck_assert_str_eq(quote_into(5, "\x1b", false), "\\x1B");
	ck_assert_str_eq(quote_into(5, "\x1b\x1b", false), "\\x1B");
	ck_assert_str_eq(quote_into(5, "\\\\", false), "\\\\\\\\");
	ck_assert_str_eq(quote_into(5, "ab\t", true), "ab\\t");
	ck_assert_str_eq(quote_into(5, "ab\tc", true), "ab");
	/* Cut by the buffer, not at EH_QUOTE_MAX: the next character would
	 * need at most 12 bytes, so "...(N bytes)" never fits after it. */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ck_assert_str_eq(quote_into(5, big, false), "aaaa");
	ck_assert_str_eq(quote_into(20, "\x01\x01\x01" "abcdefghijklmn", false), "\\x01\\x01\\x01abcdefg");
	ck_assert_str_eq(quote_into(20, "ab\x01\x01\x01\x01\x01", false), "ab\\x01\\x01\\x01\\x01");
}
END_TEST

START_TEST(options_secret_not_echoed)
{
	struct eh_config cfg;
	char err[512];
	struct eh_kv kv1[] = { { "pin", "12x-hunter2" }, { NULL, NULL } };
	struct eh_kv kv2[] = { { "secret_mode", "hunter2" }, { NULL, NULL } };

	refused("password", "", "plugin_opt_password:");
	accepted("password", "hunter2");
	accepted("pin", "1234");
	/* A bad secret is named by key, its value never shown. */
	ck_assert_int_eq(parse(&cfg, kv1, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "plugin_opt_pin:"));
	ck_assert_msg(!strstr(err, "hunter2"), "secret echoed: %s", err);
	eh_config_free(&cfg);
	ck_assert_int_eq(parse(&cfg, kv2, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "plugin_opt_secret_mode:"));
	ck_assert_msg(!strstr(err, "hunter2"), "secret echoed: %s", err);
	eh_config_free(&cfg);
}
END_TEST

static int collect(void *arg, const char *key, const char *value)
{
	char *buf = arg;

	strcat(buf, key);
	strcat(buf, "=");
	strcat(buf, value);
	strcat(buf, ";");
	return 0;
}

static int stop_at_second(void *arg, const char *key, const char *value)
{
	int *n = arg;

	(void)key;
	(void)value;
	return ++*n == 2 ? 7 : 0;
}

START_TEST(options_defaults_and_each)
{
	struct eh_config cfg;
	char err[512], buf[512] = "";
	int n = 0;
	struct eh_kv kv[] = { { "kafka.b", "2" }, { "header", "h1" }, { "count", "3" }, { "kafka.a", "1" },
			      { "header", "h2" }, { "flag", "yes" }, { NULL, NULL } };

	ck_assert_int_eq(parse(&cfg, kv, err, sizeof(err)), 0);
	/* Given values, then defaults, then unset. */
	ck_assert_int_eq(eh_config_int(&cfg, "count"), 3);
	ck_assert(eh_config_bool(&cfg, "flag"));
	ck_assert_str_eq(eh_config_get(&cfg, "name"), "dflt");
	ck_assert(!eh_config_isset(&cfg, "name"));
	ck_assert_str_eq(eh_config_get(&cfg, "mode"), "json");
	ck_assert_str_eq(eh_config_get(&cfg, "other_x"), "x");
	ck_assert_ptr_null(eh_config_get(&cfg, "items"));
	ck_assert_ptr_null(eh_config_get(&cfg, "no_such_key"));
	ck_assert_int_eq(eh_config_int(&cfg, "big"), 0);
	/* each: configuration order, per key or per prefix. */
	ck_assert_int_eq(eh_config_each(&cfg, "header", collect, buf), 0);
	ck_assert_str_eq(buf, "header=h1;header=h2;");
	buf[0] = '\0';
	ck_assert_int_eq(eh_config_each(&cfg, "kafka.", collect, buf), 0);
	ck_assert_str_eq(buf, "kafka.b=2;kafka.a=1;");
	buf[0] = '\0';
	ck_assert_int_eq(eh_config_each(&cfg, "name", collect, buf), 0);
	ck_assert_str_eq(buf, "");
	ck_assert_int_eq(eh_config_each(&cfg, "header", stop_at_second, &n), 7);
	ck_assert_int_eq(n, 2);
	eh_config_free(&cfg);
	/* Free is idempotent; a config that failed to parse is freeable. */
	eh_config_free(&cfg);

	/* Nothing given: every default. */
	ck_assert_int_eq(eh_config_parse(&cfg, test_groups, 2, NULL, 0, err, sizeof(err)), 0);
	ck_assert_int_eq(eh_config_int(&cfg, "count"), 10);
	ck_assert(!eh_config_bool(&cfg, "flag"));
	ck_assert_uint_eq(cfg.count, 0);
	eh_config_free(&cfg);
}
END_TEST

/* NULL keys and values (a broker that passes them) are refused cleanly. */
START_TEST(options_null_kv)
{
	struct eh_config cfg;
	char err[512];
	struct eh_kv kv1[] = { { NULL, "x" } };
	struct eh_kv kv2[] = { { "name", NULL } };

	ck_assert_int_eq(eh_config_parse(&cfg, test_groups, 2, kv1, 1, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "unknown option"));
	eh_config_free(&cfg);
	ck_assert_int_eq(eh_config_parse(&cfg, test_groups, 2, kv2, 1, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "plugin_opt_name"));
	eh_config_free(&cfg);
}
END_TEST

static char *write_to_string(void (*writer)(FILE *, const struct eh_option_group *, size_t),
			     const struct eh_option_group *groups, size_t n)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	ck_assert_ptr_nonnull(f);
	writer(f, groups, n);
	fclose(f);
	return text;
}

START_TEST(options_reference_writers)
{
	static const struct eh_option doc_opts[] = {
		{ "alpha", EH_OPT_INT, "5", 1, 9, NULL, 0, "Alpha help." },
		{ "beta", EH_OPT_ENUM, "x", 0, 0, "x|y", EH_OPT_REPEAT, "Beta help." },
		{ "gamma.", EH_OPT_STRING, "", 0, 0, NULL, EH_OPT_PREFIX, ".leading dot\n'quote and \\back `code`" },
		{ NULL, 0, NULL, 0, 0, NULL, 0, NULL },
	};
	static const struct eh_option_group doc_groups[] = { { "doc", "Doc group", doc_opts } };
	char *md = write_to_string(eh_options_write_markdown, doc_groups, 1);
	char *man = write_to_string(eh_options_write_man, doc_groups, 1);

	ck_assert_ptr_nonnull(strstr(md, "### Doc group\n"));
	ck_assert_ptr_nonnull(strstr(md, "| `plugin_opt_alpha` | integer 1..9 | `5` | Alpha help. |\n"));
	ck_assert_ptr_nonnull(strstr(md, "`plugin_opt_gamma.<property>`"));
	ck_assert_ptr_nonnull(strstr(md, "repeatable"));
	ck_assert_ptr_nonnull(strstr(md, "`\"\"`"));

	ck_assert_ptr_nonnull(strstr(man, ".SS Doc group\n"));
	ck_assert_ptr_nonnull(strstr(man, ".TP\n.B plugin_opt_alpha\n(integer 1 to 9; default 5)\nAlpha help.\n"));
	ck_assert_ptr_nonnull(strstr(man, ".B plugin_opt_gamma.<property>\n"));
	/* roff: leading dots and quotes neutralised, backslashes printed,
	 * Markdown backticks dropped. */
	ck_assert_ptr_nonnull(strstr(man, "\n\\&.leading dot\n\\&'quote and \\eback code\n"));
	ck_assert_ptr_nonnull(strstr(man, "default empty)"));
	/* No line of the man text starts with a dot that is not a request. */
	for (const char *p = man; p; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (*p == '.')
			ck_assert_msg(!strncmp(p, ".SS ", 4) || !strncmp(p, ".TP\n", 4) || !strncmp(p, ".B ", 3),
				      "stray request line: %.20s", p);
	}
	free(md);
	free(man);
}
END_TEST

/* In a Markdown table a '|' splits cells even inside backticks (GFM), so
 * every pipe in a cell must be escaped. */
START_TEST(options_markdown_escapes_pipes)
{
	static const struct eh_option doc_opts[] = {
		{ "fmt", EH_OPT_ENUM, "a", 0, 0, "a|b", 0, "Either a|b." },
		{ NULL, 0, NULL, 0, 0, NULL, 0, NULL },
	};
	static const struct eh_option_group doc_groups[] = { { "doc", "Doc", doc_opts } };
	char *md = write_to_string(eh_options_write_markdown, doc_groups, 1);
	const char *row = strstr(md, "| `plugin_opt_fmt`");
	int cells = 0;

	ck_assert_ptr_nonnull(row);
	for (const char *p = row; *p && *p != '\n'; p++) {
		if (*p == '|' && (p == row || p[-1] != '\\'))
			cells++;
	}
	ck_assert_msg(cells == 5, "row has %d unescaped pipes: %.*s", cells, (int)(strchr(row, '\n') - row), row);
	free(md);
}
END_TEST

/* The real tables: help everywhere, and each default passes its own type's
 * check when given explicitly. */
START_TEST(options_real_groups)
{
	struct eh_option_group groups[EH_SINKS_MAX + 1];
	size_t n = eh_core_option_groups(groups, EH_SINKS_MAX + 1);
	size_t total = 0;

	ck_assert_uint_ge(n, 2);
	ck_assert_str_eq(groups[0].name, "general");
	for (size_t g = 0; g < n; g++) {
		ck_assert_msg(groups[g].title && groups[g].title[0], "group %s has no title", groups[g].name);
		for (const struct eh_option *o = groups[g].options; o && o->key; o++) {
			char key[128], err[512];
			struct eh_kv kv;
			struct eh_config cfg;

			total++;
			ck_assert_msg(o->help && strlen(o->help) > 10, "%s has no help", o->key);
			ck_assert_msg(o->help[strlen(o->help) - 1] == '.', "%s: help should be a sentence", o->key);
			if (o->type == EH_OPT_ENUM)
				ck_assert_msg(o->choices && o->choices[0], "%s has no choices", o->key);
			if (o->type == EH_OPT_INT)
				ck_assert_msg(o->min <= o->max, "%s: empty range", o->key);
			/* Sink options start with the sink's name. */
			if (g > 0)
				ck_assert_msg(!strncmp(o->key, groups[g].name, strlen(groups[g].name)),
					      "%s is not prefixed with %s", o->key, groups[g].name);
			/* Unique across every group. */
			for (size_t h = 0; h <= g; h++) {
				for (const struct eh_option *p = groups[h].options; p && p->key && p != o; p++)
					ck_assert_msg(strcmp(p->key, o->key), "%s declared twice", o->key);
			}
			if (!o->def)
				continue;
			snprintf(key, sizeof(key), "%s%s", o->key, (o->flags & EH_OPT_PREFIX) ? "x" : "");
			kv = (struct eh_kv){ key, o->def };
			ck_assert_msg(eh_config_parse(&cfg, groups, n, &kv, 1, err, sizeof(err)) == 0,
				      "default of %s refused: %s", o->key, err);
			eh_config_free(&cfg);
		}
	}
	ck_assert_uint_gt(total, 8);
}
END_TEST

static Suite *options_suite(void)
{
	Suite *s = suite_create("options");
	TCase *tc = tcase_create("parse");
	TCase *doc = tcase_create("reference");

	tcase_add_test(tc, options_unknown_key);
	tcase_add_test(tc, options_duplicates);
	tcase_add_test(tc, options_int_values);
	tcase_add_test(tc, options_parse_helpers);
	tcase_add_test(tc, options_bool_enum_list_string);
	tcase_add_test(tc, options_trailing_blanks);
	tcase_add_test(tc, options_quote);
	tcase_add_test(tc, options_quote_escapes);
	tcase_add_test(tc, options_quote_cut_inside_character);
	tcase_add_test(tc, options_quote_tiny_buffers);
	tcase_add_test(tc, options_secret_not_echoed);
	tcase_add_test(tc, options_defaults_and_each);
	tcase_add_test(tc, options_null_kv);
	suite_add_tcase(s, tc);
	tcase_add_test(doc, options_reference_writers);
	tcase_add_test(doc, options_markdown_escapes_pipes);
	tcase_add_test(doc, options_real_groups);
	suite_add_tcase(s, doc);
	return s;
}
EH_UNIT_SUITE(options_suite)
