/* Kafka sink: the topic-name rule (docs/sinks/kafka.md). */
#include <string.h>

#include "eh_sink_kafka.h"
#include "unit.h"

static const char *sanitized(const char *in, size_t len)
{
	static char buf[512];

	memcpy(buf, in, len);
	eh_kafka_topic_sanitize(buf, len);
	return buf;
}

START_TEST(topic_legal_names_unchanged)
{
	ck_assert_str_eq(sanitized("mqtt-events", 11), "mqtt-events");
	ck_assert_str_eq(sanitized("a.B_9-z", 7), "a.B_9-z");
}
END_TEST

START_TEST(topic_other_bytes_become_underscore)
{
	/* '/', ' ', '+', '#', NUL and each byte of a UTF-8 sequence. */
	ck_assert_str_eq(sanitized("ev/a b+#", 8), "ev_a_b__");
	ck_assert_str_eq(sanitized("x\0y", 3), "x_y");
	ck_assert_str_eq(sanitized("n\xc3\xbc", 3), "n__");
}
END_TEST

START_TEST(topic_reserved_and_empty_names)
{
	ck_assert_str_eq(sanitized("", 0), "_");
	ck_assert_str_eq(sanitized(".", 1), "_");
	ck_assert_str_eq(sanitized("..", 2), "__");
	ck_assert_str_eq(sanitized("...", 3), "...");
}
END_TEST

START_TEST(topic_cut_at_249_bytes)
{
	char in[300];
	size_t n;

	memset(in, 'a', sizeof(in));
	n = eh_kafka_topic_sanitize(in, 260);
	ck_assert_uint_eq(n, EH_KAFKA_TOPIC_MAX);
	ck_assert_uint_eq(strlen(in), EH_KAFKA_TOPIC_MAX);
}
END_TEST

START_TEST(value_seq_read_from_the_event_json)
{
	const char ok[] = "{\"event\":\"client.connected\",\"id\":\"x\",\"ts\":\"t\",\"node\":\"n\","
			  "\"seq\":12345,\"clientid\":\"c\"}";
	/* A node name that holds the key: escaped, it cannot match. */
	const char node[] = "{\"event\":\"e\",\"node\":\"a\\\",\\\"seq\\\":9\",\"seq\":7}";
	const char cut[] = "{\"event\":\"e\",\"seq\":";

	ck_assert_uint_eq(eh_kafka_value_seq(ok, strlen(ok)), 12345);
	ck_assert_uint_eq(eh_kafka_value_seq(node, strlen(node)), 7);
	ck_assert_uint_eq(eh_kafka_value_seq(cut, strlen(cut)), 0);
	/* Only the value's own bytes are read: 12345 cut after "123". */
	ck_assert_uint_eq(eh_kafka_value_seq(ok, strstr(ok, "45,") - ok), 123);
	ck_assert_uint_eq(eh_kafka_value_seq("{}", 2), 0);
	ck_assert_uint_eq(eh_kafka_value_seq(NULL, 0), 0);
}
END_TEST

static Suite *kafka_suite(void)
{
	Suite *s = suite_create("kafka");
	TCase *tc = tcase_create("topic names");

	tcase_add_test(tc, topic_legal_names_unchanged);
	tcase_add_test(tc, topic_other_bytes_become_underscore);
	tcase_add_test(tc, topic_reserved_and_empty_names);
	tcase_add_test(tc, topic_cut_at_249_bytes);
	tcase_add_test(tc, value_seq_read_from_the_event_json);
	suite_add_tcase(s, tc);
	return s;
}
EH_UNIT_SUITE(kafka_suite)
