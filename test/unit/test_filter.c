/*
 * eh_filter: event masks from names and patterns, MQTT topic filter
 * validity, and topic matching following the MQTT 3.1.1/5 rules
 * (section 4.7), including the '$' rule and subscription filters matched
 * against configured filters.
 */
#include <string.h>

#include "eh_event.h"
#include "eh_filter.h"
#include "unit.h"

START_TEST(filter_events_names_and_patterns)
{
	uint32_t mask = 0;
	char err[512] = "";

	ck_assert_int_eq(eh_filter_events_parse("client.connect", &mask, err, sizeof(err)), 0);
	ck_assert_uint_eq(mask, EH_EV_BIT(EH_EV_CONNECT));
	ck_assert_int_eq(eh_filter_events_parse(" message.publish , client.disconnected ", &mask, err, sizeof(err)), 0);
	ck_assert_uint_eq(mask, EH_EV_BIT(EH_EV_PUBLISH) | EH_EV_BIT(EH_EV_DISCONNECTED));
	ck_assert_int_eq(eh_filter_events_parse("client.*", &mask, err, sizeof(err)), 0);
	ck_assert_uint_eq(mask, EH_EV_MASK_ALL & ~EH_EV_BIT(EH_EV_PUBLISH));
	ck_assert_int_eq(eh_filter_events_parse("message.*", &mask, err, sizeof(err)), 0);
	ck_assert_uint_eq(mask, EH_EV_BIT(EH_EV_PUBLISH));
	ck_assert_int_eq(eh_filter_events_parse("*", &mask, err, sizeof(err)), 0);
	ck_assert_uint_eq(mask, EH_EV_MASK_ALL);
	ck_assert_int_eq(eh_filter_events_parse("client.*,message.publish,client.connect", &mask, err, sizeof(err)),
			 0);
	ck_assert_uint_eq(mask, EH_EV_MASK_ALL);
	/* Every type by its own name. */
	for (unsigned t = 0; t < EH_EV_COUNT; t++) {
		ck_assert_int_eq(eh_filter_events_parse(eh_event_type_name(t), &mask, err, sizeof(err)), 0);
		ck_assert_uint_eq(mask, EH_EV_BIT(t));
	}
}
END_TEST

static void events_refused(const char *list, const char *want)
{
	uint32_t mask = 12345;
	char err[512] = "";

	ck_assert_msg(eh_filter_events_parse(list, &mask, err, sizeof(err)) == -1, "'%s' accepted", list);
	ck_assert_msg(strstr(err, want) != NULL, "'%s': '%s' lacks '%s'", list, err, want);
	/* A refused list leaves the mask alone. */
	ck_assert_uint_eq(mask, 12345);
}

START_TEST(filter_events_errors)
{
	events_refused("client.conect", "'client.conect' is not an event type or pattern");
	events_refused("client.connect,bogus", "'bogus' is not an event type");
	events_refused("client", "'client' is not");
	events_refused("client*", "'client*' is not");
	events_refused("client.connect*", "'client.connect*' is not");
	events_refused(".*", "'.*' is not");
	events_refused("other.*", "'other.*' is not");
	events_refused("**", "'**' is not");
	events_refused("Client.Connect", "'Client.Connect' is not");
	events_refused("", "empty item");
	events_refused("client.connect,,message.publish", "empty item");
	events_refused("client.connect,", "empty item");
}
END_TEST

/* The caller's buffer may hold anything before the call: an empty-item
 * error must still be described. */
START_TEST(filter_events_error_with_stale_buffer)
{
	uint32_t mask = 0;
	char err[512];

	strcpy(err, "stale text from an earlier call");
	ck_assert_int_eq(eh_filter_events_parse("client.connect,,x", &mask, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "empty item") != NULL, "got '%s'", err);
}
END_TEST

START_TEST(filter_topic_filter_valid)
{
	static const char *const ok[] = { "a", "a/b", "/", "//", "a//b", "/a", "a/", "+", "#", "+/+", "/+",
					  "+/", "a/+/b", "a/#", "+/#", "/#", "$SYS/#", "a b/c", "\xc3\xa9" };
	static const char *const bad[] = { "", "a+", "+a", "a/+b", "a/b+", "a#", "#/a", "a/#/b", "a/b#", "##",
					   "++", "#a", "a/#b", "+#" };

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		ck_assert_msg(eh_topic_filter_valid(ok[i]), "'%s' refused", ok[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(!eh_topic_filter_valid(bad[i]), "'%s' accepted", bad[i]);
}
END_TEST

static bool match(const char *filter, const char *topic)
{
	return eh_topic_match(filter, topic, strlen(topic));
}

START_TEST(filter_topic_match_spec)
{
	static const struct {
		const char *filter, *topic;
		bool want;
	} cases[] = {
		/* MQTT 4.7.1.2 multi-level wildcard */
		{ "sport/tennis/player1/#", "sport/tennis/player1", true },
		{ "sport/tennis/player1/#", "sport/tennis/player1/ranking", true },
		{ "sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true },
		{ "sport/#", "sport", true },
		{ "sport/#", "sport/", true },
		{ "sport/#", "sports", false },
		{ "#", "a", true },
		{ "#", "a/b/c", true },
		{ "#", "/", true },
		{ "#", "/a", true },
		/* 4.7.1.3 single-level wildcard */
		{ "sport/tennis/+", "sport/tennis/player1", true },
		{ "sport/tennis/+", "sport/tennis/player2", true },
		{ "sport/tennis/+", "sport/tennis/player1/ranking", false },
		{ "sport/+", "sport", false },
		{ "sport/+", "sport/", true },
		{ "+", "a", true },
		{ "+", "/a", false },
		{ "+/+", "/finance", true },
		{ "/+", "/finance", true },
		{ "+", "/finance", false },
		{ "+/tennis/#", "sport/tennis", true },
		{ "+/tennis/#", "sport/tennis/x/y", true },
		{ "+/+/+", "a/b/c", true },
		{ "+/+/+", "a/b", false },
		{ "a/+/c", "a//c", true },
		{ "a/+/c", "a/b/d", false },
		/* 4.7.2 topics beginning with $ */
		{ "#", "$SYS/broker", false },
		{ "#", "$SYS", false },
		{ "+/monitor/Clients", "$SYS/monitor/Clients", false },
		{ "+", "$SYS", false },
		{ "$SYS/#", "$SYS/broker/clients", true },
		{ "$SYS/monitor/+", "$SYS/monitor/Clients", true },
		{ "$SYS/#", "$SYS", true },
		{ "a/#", "a/$x", true },
		{ "a/+", "a/$x", true },
		/* literal levels: exact, case sensitive, empty levels count */
		{ "a/b", "a/b", true },
		{ "a/b", "a/B", false },
		{ "a/b", "a/bc", false },
		{ "a/bc", "a/b", false },
		{ "a/b", "a/b/", false },
		{ "a/b/", "a/b", false },
		{ "a/b/", "a/b/", true },
		{ "a//b", "a//b", true },
		{ "a//b", "a/b", false },
		{ "/a", "a", false },
		{ "a", "/a", false },
		{ "/", "/", true },
		{ "/", "", false },
		{ "a/b/c", "a/b", false },
		{ "a/b", "a/b/c", false },
		{ "a/#", "b", false },
		{ "a/b/#", "a", false },
		{ "\xc3\xa9/+", "\xc3\xa9/x", true },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ck_assert_msg(match(cases[i].filter, cases[i].topic) == cases[i].want, "'%s' vs '%s': want %d",
			      cases[i].filter, cases[i].topic, cases[i].want);
}
END_TEST

/* Topics are byte strings with a length: nothing beyond len is read, and
 * a NUL in the topic is an ordinary byte. */
START_TEST(filter_topic_match_lengths)
{
	ck_assert(eh_topic_match("a/b", "a/bXYZ", 3));
	ck_assert(!eh_topic_match("a/b", "a/b\0c", 5));
	ck_assert(eh_topic_match("a/+", "a/b\0c", 5));
	ck_assert(eh_topic_match("#", "a\0", 2));
	ck_assert(!eh_topic_match("a", "a\0", 2));
	ck_assert(eh_topic_match("a/#", "a/b", 1));
}
END_TEST

START_TEST(filter_topics_parse_and_match)
{
	struct eh_topics t;
	char err[512];

	/* NULL: no filter, everything matches. */
	ck_assert_int_eq(eh_topics_parse(&t, NULL, err, sizeof(err)), 0);
	ck_assert_uint_eq(t.count, 0);
	ck_assert(eh_topics_match(&t, "anything", 8));
	ck_assert(eh_topics_match(&t, "$SYS/x", 6));
	eh_topics_free(&t);

	ck_assert_int_eq(eh_topics_parse(&t, "sensors/+/temp, alerts/#,exact", err, sizeof(err)), 0);
	ck_assert_uint_eq(t.count, 3);
	ck_assert_str_eq(t.filters[0], "sensors/+/temp");
	ck_assert_str_eq(t.filters[1], "alerts/#");
	ck_assert_str_eq(t.filters[2], "exact");
	ck_assert(eh_topics_match(&t, "sensors/k1/temp", 15));
	ck_assert(eh_topics_match(&t, "alerts", 6));
	ck_assert(eh_topics_match(&t, "alerts/fire/now", 15));
	ck_assert(eh_topics_match(&t, "exact", 5));
	ck_assert(!eh_topics_match(&t, "exactly", 7));
	ck_assert(!eh_topics_match(&t, "sensors/k1/humidity", 19));
	ck_assert(!eh_topics_match(&t, "$SYS/alerts", 11));

	/* Subscription filters as the "topic": their wildcards match only
	 * wildcards (or wider wildcards) of the configured filter. */
	ck_assert(eh_topics_match(&t, "sensors/+/temp", 14));
	ck_assert(eh_topics_match(&t, "alerts/#", 8));
	ck_assert(eh_topics_match(&t, "alerts/+/x", 10));
	ck_assert(!eh_topics_match(&t, "sensors/#", 9));
	ck_assert(!eh_topics_match(&t, "#", 1));
	ck_assert(!eh_topics_match(&t, "+", 1));
	ck_assert(!eh_topics_match(&t, "+/k1/temp", 9));
	eh_topics_free(&t);
	eh_topics_free(&t);

	ck_assert_int_eq(eh_topics_parse(&t, "#", err, sizeof(err)), 0);
	ck_assert(eh_topics_match(&t, "#", 1));
	ck_assert(eh_topics_match(&t, "+/x", 3));
	ck_assert(!eh_topics_match(&t, "$SYS/#", 6));
	eh_topics_free(&t);
}
END_TEST

START_TEST(filter_topics_parse_errors)
{
	struct eh_topics t;
	char err[512];

	strcpy(err, "stale");
	ck_assert_int_eq(eh_topics_parse(&t, "ok/+,bad+,x", err, sizeof(err)), -1);
	ck_assert_str_eq(err, "'bad+' is not a valid MQTT topic filter");
	ck_assert_uint_eq(t.count, 0);
	ck_assert_ptr_null(t.filters);
	ck_assert_int_eq(eh_topics_parse(&t, "a/#/b", err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "'a/#/b'"));
	ck_assert_int_eq(eh_topics_parse(&t, "a,,b", err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "'a,,b'"));
	ck_assert_int_eq(eh_topics_parse(&t, "", err, sizeof(err)), -1);
	ck_assert_uint_eq(t.count, 0);
	eh_topics_free(&t);
}
END_TEST

static Suite *filter_suite(void)
{
	Suite *s = suite_create("filter");
	TCase *tc = tcase_create("events");
	TCase *tp = tcase_create("topics");

	tcase_add_test(tc, filter_events_names_and_patterns);
	tcase_add_test(tc, filter_events_errors);
	tcase_add_test(tc, filter_events_error_with_stale_buffer);
	suite_add_tcase(s, tc);
	tcase_add_test(tp, filter_topic_filter_valid);
	tcase_add_test(tp, filter_topic_match_spec);
	tcase_add_test(tp, filter_topic_match_lengths);
	tcase_add_test(tp, filter_topics_parse_and_match);
	tcase_add_test(tp, filter_topics_parse_errors);
	suite_add_tcase(s, tp);
	return s;
}
EH_UNIT_SUITE(filter_suite)
