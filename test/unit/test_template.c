/*
 * eh_template: parse errors, topic-safe rendering of client values,
 * raw rendering, and snprintf-like truncation.
 */
#include <stdlib.h>
#include <string.h>

#include "eh_template.h"
#include "unit.h"

static struct eh_node node_named(const char *name)
{
	struct eh_node node;

	ck_assert_int_eq(eh_node_init(&node, name, 1, NULL, 0), 0);
	return node;
}

static struct eh_event event_with(const char *cid, size_t cid_len, const char *user, size_t user_len)
{
	struct eh_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.type = EH_EV_CONNECTED;
	ev.seq = 18446744073709551615ull;
	ev.f[EH_F_CLIENTID] = (struct eh_bytes){ cid, (uint32_t)cid_len };
	ev.f[EH_F_USERNAME] = (struct eh_bytes){ user, (uint32_t)user_len };
	return ev;
}

/* Renders text (which must parse) into a generous buffer. */
static void assert_render(const char *text, const struct eh_event *ev, const struct eh_node *node,
			  enum eh_template_mode mode, const char *want, size_t want_len)
{
	struct eh_template t;
	char err[512], out[4096];
	size_t n;

	ck_assert_msg(eh_template_parse(&t, text, err, sizeof(err)) == 0, "'%s': %s", text, err);
	memset(out, 'Z', sizeof(out));
	n = eh_template_render(&t, ev, node, mode, out, sizeof(out));
	ck_assert_uint_eq(n, want_len);
	ck_assert_int_eq(out[n], '\0');
	ck_assert_msg(!memcmp(out, want, want_len), "'%s' rendered '%.*s', want '%.*s'", text, (int)n, out,
		      (int)want_len, want);
	eh_template_free(&t);
}

#define RENDER(text, ev, node, mode, want) assert_render(text, ev, node, mode, want, sizeof(want) - 1)

START_TEST(template_parse_errors)
{
	static const struct {
		const char *text, *want;
	} cases[] = {
		{ "a/{nope}/b", "unknown placeholder '{nope}' in template 'a/{nope}/b'" },
		{ "{}", "unknown placeholder '{}'" },
		{ "{Event}", "unknown placeholder '{Event}'" },
		{ "{event", "'{' without '}' in template '{event'" },
		{ "a/{", "'{' without '}'" },
		{ "a}b", "'}' without '{' in template 'a}b'" },
		{ "{event}}", "'}' without '{'" },
		{ "}{event}", "'}' without '{'" },
		{ "{{event}}", "unknown placeholder '{{event}'" },
		{ "{event}/{client id}", "unknown placeholder '{client id}'" },
	};
	struct eh_template t;
	char err[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		ck_assert_msg(eh_template_parse(&t, cases[i].text, err, sizeof(err)) == -1, "'%s' accepted",
			      cases[i].text);
		ck_assert_msg(strstr(err, cases[i].want) != NULL, "'%s': '%s' lacks '%s'", cases[i].text, err,
			      cases[i].want);
		/* Freed on failure; freeing again is harmless. */
		ck_assert_uint_eq(t.count, 0);
		ck_assert_ptr_null(t.parts);
		eh_template_free(&t);
	}
	/* Every placeholder, and the empty template. */
	ck_assert_int_eq(eh_template_parse(&t, "{event}{node}{clientid}{username}{seq}", err, sizeof(err)), 0);
	ck_assert_uint_eq(t.count, 5);
	eh_template_free(&t);
	ck_assert_int_eq(eh_template_parse(&t, "", err, sizeof(err)), 0);
	ck_assert_uint_eq(t.count, 0);
	eh_template_free(&t);
}
END_TEST

/* A 100 KB template or placeholder is quoted cut, so the reason stays in
 * a broker log line (cut at about 1000 bytes). */
START_TEST(template_long_error_quoted_cut)
{
	char *text = malloc(102401);
	char err[1024], want[512];
	struct eh_template t;

	ck_assert_ptr_nonnull(text);
	memset(text, 'a', 102400);
	text[102400] = '\0';
	memcpy(text + 102400 - 6, "{nope}", 6);
	ck_assert_int_eq(eh_template_parse(&t, text, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "unknown placeholder '{nope}' in template '%.100s...(102400 bytes)' (known:",
		 text);
	ck_assert_msg(strstr(err, want), "%s", err);
	text[0] = '{';
	ck_assert_int_eq(eh_template_parse(&t, text, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "...(102400 bytes)' in template '{aaa"), "%s", err);
	ck_assert_uint_lt(strlen(err), 400);
	memset(text, 'a', 102400);
	text[5] = '}';
	ck_assert_int_eq(eh_template_parse(&t, text, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "'}' without '{' in template 'aaaaa}") && strstr(err, "...(102400 bytes)'"), "%s",
		      err);
	free(text);
}
END_TEST

START_TEST(template_render_plain)
{
	struct eh_node node = node_named("n1");
	struct eh_event ev = event_with("dev-7", 5, "alice", 5);

	RENDER("$events/{event}/{clientid}", &ev, &node, EH_TEMPLATE_TOPIC, "$events/client.connected/dev-7");
	RENDER("{node}:{username}:{seq}", &ev, &node, EH_TEMPLATE_TOPIC, "n1:alice:18446744073709551615");
	RENDER("literal only", &ev, &node, EH_TEMPLATE_TOPIC, "literal only");
	RENDER("", &ev, &node, EH_TEMPLATE_TOPIC, "");
	RENDER("{clientid}{clientid}", &ev, &node, EH_TEMPLATE_RAW, "dev-7dev-7");
	ev.seq = 0;
	ev.type = EH_EV_PUBLISH;
	RENDER("{seq}/{event}", &ev, &node, EH_TEMPLATE_TOPIC, "0/message.publish");
}
END_TEST

START_TEST(template_topic_escaping)
{
	struct eh_node node = node_named("no/de+#");
	static const char cid[] = "a/b+c#d%e\0f\x01g\x1fh\x7fi \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80j\xff" "k\xc0\xaf"
				  "l\xed\xa0\x80m\xe2\x82";
	struct eh_event ev = event_with(cid, sizeof(cid) - 1, "u/1", 3);

	RENDER("{clientid}", &ev, &node, EH_TEMPLATE_TOPIC,
	       "a%2Fb%2Bc%23d%25e%00f%01g%1Fh%7Fi \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80j%FFk%C0%AFl%ED%A0%80m%E2%82");
	/* Literal text is the admin's: kept as written. The node name and
	 * username are escaped like the client id. */
	RENDER("x/{node}/{username}/+", &ev, &node, EH_TEMPLATE_TOPIC, "x/no%2Fde%2B%23/u%2F1/+");
	/* Raw: bytes unchanged, NUL included. */
	RENDER("{clientid}", &ev, &node, EH_TEMPLATE_RAW, cid);
	RENDER("{node}|{username}", &ev, &node, EH_TEMPLATE_RAW, "no/de+#|u/1");
}
END_TEST

/* Distinct client ids always give distinct topics: percent-decoding the
 * rendered level gives back the original bytes. */
START_TEST(template_topic_escaping_reversible)
{
	struct eh_node node = node_named("n");
	struct eh_template t;
	char err[256], out[1024], back[1024];
	unsigned char cid[8];
	unsigned seed = 1;

	ck_assert_int_eq(eh_template_parse(&t, "{clientid}", err, sizeof(err)), 0);
	for (int round = 0; round < 20000; round++) {
		size_t len = (size_t)(round % 8), n, k = 0;
		struct eh_event ev;

		for (size_t i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			cid[i] = (unsigned char)(seed >> 16);
		}
		ev = event_with((const char *)cid, len, NULL, 0);
		n = eh_template_render(&t, &ev, &node, EH_TEMPLATE_TOPIC, out, sizeof(out));
		ck_assert_uint_lt(n, sizeof(out));
		ck_assert_uint_eq(strlen(out), n);
		ck_assert_uint_eq(eh_utf8_valid_prefix(out, n), n);
		ck_assert(n == 0 || out[0] != '$');
		for (size_t i = 0; i < n; i++) {
			ck_assert(out[i] != '/' && out[i] != '+' && out[i] != '#');
			ck_assert((unsigned char)out[i] >= 0x20 && out[i] != 0x7f);
			if (out[i] == '%') {
				ck_assert_uint_lt(i + 2, n);
				back[k++] = (char)strtol((char[]){ out[i + 1], out[i + 2], 0 }, NULL, 16);
				i += 2;
			} else {
				back[k++] = out[i];
			}
		}
		ck_assert_uint_eq(k, len);
		ck_assert(!memcmp(back, cid, len));
	}
	eh_template_free(&t);
}
END_TEST

START_TEST(template_truncation)
{
	struct eh_node node = node_named("node");
	struct eh_event ev = event_with("a/b", 3, NULL, 0);
	struct eh_template t;
	char err[256], out[64];
	const char *full = "pre/a%2Fb/node";

	ck_assert_int_eq(eh_template_parse(&t, "pre/{clientid}/{node}", err, sizeof(err)), 0);
	for (size_t cap = 0; cap <= strlen(full) + 2; cap++) {
		size_t n;

		memset(out, 'Z', sizeof(out));
		n = eh_template_render(&t, &ev, &node, EH_TEMPLATE_TOPIC, cap ? out : NULL, cap);
		/* The full length, whatever the capacity. */
		ck_assert_uint_eq(n, strlen(full));
		if (!cap)
			continue;
		/* Always terminated, a prefix of the full text, nothing
		 * written past cap. */
		ck_assert_uint_eq(strlen(out), cap - 1 < n ? cap - 1 : n);
		ck_assert(!strncmp(out, full, strlen(out)));
		ck_assert_int_eq(out[cap], 'Z');
	}
	eh_template_free(&t);
}
END_TEST

/* A client value that would start the topic with '$' (the broker's own
 * $SYS tree, $share) has it escaped; anywhere else, and in literal text,
 * '$' stays. */
START_TEST(template_topic_leading_dollar)
{
	struct eh_node node = node_named("$n");
	struct eh_event ev = event_with("$SYS", 4, "$u", 2);

	RENDER("{clientid}/ev", &ev, &node, EH_TEMPLATE_TOPIC, "%24SYS/ev");
	RENDER("{username}{clientid}", &ev, &node, EH_TEMPLATE_TOPIC, "%24u$SYS");
	RENDER("{node}", &ev, &node, EH_TEMPLATE_TOPIC, "%24n");
	RENDER("$events/{clientid}", &ev, &node, EH_TEMPLATE_TOPIC, "$events/$SYS");
	RENDER("{clientid}", &ev, &node, EH_TEMPLATE_RAW, "$SYS");
	/* An absent username first: the client id then starts the topic. */
	ev = event_with("$share", 6, NULL, 0);
	RENDER("{username}{clientid}", &ev, &node, EH_TEMPLATE_TOPIC, "%24share");
}
END_TEST

/* Templates for MQTT topic names: the admin's literal text must itself be
 * a legal topic name part. */
START_TEST(template_check_topic)
{
	static const struct {
		const char *text, *want; /* want NULL: accepted */
	} cases[] = {
		{ "$events/{event}/{clientid}", NULL },
		{ "eventhook/{node}/{event}/{clientid}", NULL },
		{ "{username}", NULL },
		{ "caf\xc3\xa9/{event}", NULL },
		{ "ev/#/{event}", "plugin_opt_local_topic: 'ev/#/{event}' holds '#'; an MQTT topic name may hold no wildcard" },
		{ "ev/+/{event}", "holds '+'" },
		{ "{event}/#", "holds '#'" },
		{ "ev/\xff\xfe/{event}", "plugin_opt_local_topic: the template is not valid UTF-8" },
		{ "ev/\xc3/{event}", "not valid UTF-8" },
		{ "ev/\t/{event}", "control character 0x09" },
		{ "ev/\x7f", "control character 0x7F" },
	};
	struct eh_template t;
	char err[512], text[128];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* The table spells bytes as \xNN and \t so that it stays readable. */
		size_t k = 0;

		for (const char *p = cases[i].text; *p; p++) {
			if (p[0] == '\\' && p[1] == 'x') {
				text[k++] = (char)strtol((char[]){ p[2], p[3], 0 }, NULL, 16);
				p += 3;
			} else if (p[0] == '\\' && p[1] == 't') {
				text[k++] = '\t';
				p++;
			} else {
				text[k++] = *p;
			}
		}
		text[k] = '\0';
		ck_assert_msg(eh_template_parse(&t, text, err, sizeof(err)) == 0, "'%s': %s", cases[i].text, err);
		err[0] = '\0';
		if (!cases[i].want) {
			ck_assert_msg(eh_template_check_topic(&t, "local_topic", text, err, sizeof(err)) == 0, "'%s': %s",
				      cases[i].text, err);
		} else {
			ck_assert_msg(eh_template_check_topic(&t, "local_topic", text, err, sizeof(err)) == -1,
				      "'%s' accepted", cases[i].text);
			ck_assert_msg(strstr(err, cases[i].want) != NULL, "'%s': '%s' lacks '%s'", cases[i].text, err,
				      cases[i].want);
		}
		eh_template_free(&t);
	}
	/* The literal text alone longer than a topic may be. */
	{
		char *big = malloc(70000);

		ck_assert_ptr_nonnull(big);
		memset(big, 'a', 69990);
		strcpy(big + 69990, "/{event}");
		ck_assert_int_eq(eh_template_parse(&t, big, err, sizeof(err)), 0);
		ck_assert_int_eq(eh_template_check_topic(&t, "mqtt_topic", big, err, sizeof(err)), -1);
		ck_assert_msg(strstr(err, "plugin_opt_mqtt_topic: the template's own text is 69991 bytes; an MQTT "
				     "topic name is at most 65535") != NULL, "%s", err);
		eh_template_free(&t);
		free(big);
	}
}
END_TEST

START_TEST(template_topic_unfit)
{
	ck_assert_str_eq(eh_template_topic_unfit(0), "empty");
	ck_assert_ptr_null(eh_template_topic_unfit(1));
	ck_assert_ptr_null(eh_template_topic_unfit(EH_TOPIC_MAX));
	ck_assert_str_eq(eh_template_topic_unfit(EH_TOPIC_MAX + 1), "longer than 65535 bytes");
}
END_TEST

/* An event without a username (NULL pointer, length 0) renders as empty
 * in both modes. */
START_TEST(template_missing_username)
{
	struct eh_node node = node_named("n");
	struct eh_event ev = event_with("c", 1, NULL, 0);

	RENDER("u={username}.", &ev, &node, EH_TEMPLATE_TOPIC, "u=.");
	RENDER("u={username}.", &ev, &node, EH_TEMPLATE_RAW, "u=.");
	ev = event_with(NULL, 0, NULL, 0);
	RENDER("{clientid}/{username}", &ev, &node, EH_TEMPLATE_RAW, "/");
}
END_TEST

static Suite *template_suite(void)
{
	Suite *s = suite_create("template");
	TCase *tc = tcase_create("template");

	tcase_add_test(tc, template_parse_errors);
	tcase_add_test(tc, template_long_error_quoted_cut);
	tcase_add_test(tc, template_render_plain);
	tcase_add_test(tc, template_topic_escaping);
	tcase_add_test(tc, template_topic_escaping_reversible);
	tcase_add_test(tc, template_truncation);
	tcase_add_test(tc, template_missing_username);
	tcase_add_test(tc, template_topic_leading_dollar);
	tcase_add_test(tc, template_check_topic);
	tcase_add_test(tc, template_topic_unfit);
	suite_add_tcase(s, tc);
	return s;
}
EH_UNIT_SUITE(template_suite)
