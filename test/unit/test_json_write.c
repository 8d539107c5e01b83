/*
 * eh_json_write must produce exactly json_dumps(eh_json_event(), COMPACT):
 * compared here on every event type with generated field contents, hostile
 * bytes included, for both the plain and the CloudEvents form.
 */
#include <stdlib.h>
#include <string.h>

#include "eh_json.h"
#include "unit.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void fill(char *buf, size_t n, int mode)
{
	for (size_t i = 0; i < n; i++) {
		switch (mode) {
		case 0: /* printable ASCII */
			buf[i] = (char)(0x20 + next() % 95);
			break;
		case 1: /* any byte */
			buf[i] = (char)next();
			break;
		default: /* controls, quotes, backslashes and UTF-8 pieces */
		{
			static const char pick[] = "\x01\x1f\"\\\b\f\n\r\t\x7f/\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";

			buf[i] = pick[next() % (sizeof(pick) - 1)];
			break;
		}
		}
	}
}

static void check_one(const struct eh_event *ev, const struct eh_node *node, int cloud)
{
	json_t *o = cloud ? eh_json_cloudevent(ev, node) : eh_json_event(ev, node);
	char *want = json_dumps(o, JSON_COMPACT);
	struct eh_buf b = { 0 };
	int rc = cloud ? eh_json_write_cloudevent(&b, ev, node) : eh_json_write_event(&b, ev, node);

	ck_assert_int_eq(rc, 0);
	ck_assert_ptr_nonnull(want);
	ck_assert_uint_eq(b.len, strlen(want));
	ck_assert_msg(!memcmp(b.data, want, b.len), "differs:\n%s\n%s", want, b.data);
	free(want);
	json_decref(o);
	eh_buf_free(&b);
}

START_TEST(json_write_matches_jansson)
{
	static char f[EH_F_COUNT][600];
	struct eh_node node = { "node-\xc3\xa9", 0x0123456789abcdefull };

	for (int round = 0; round < 3000; round++) {
		struct eh_event ev;

		memset(&ev, 0, sizeof(ev));
		ev.type = (uint8_t)(round % EH_EV_COUNT);
		ev.number = next();
		ev.seq = next() >> 20;
		ev.ts_ms = (int64_t)(next() % 4102444800000ull);
		ev.connected_ms = (int64_t)(next() % 100000000);
		ev.keepalive = (uint16_t)next();
		ev.proto_ver = (uint8_t)(next() % 6);
		ev.qos = (uint8_t)(next() % 3);
		ev.reason = (uint8_t)(next() % EH_REASON_COUNT);
		ev.action = (uint8_t)(next() % 3);
		ev.flags = (uint16_t)next();
		for (int i = 0; i < EH_F_COUNT; i++) {
			size_t n = next() % (round % 7 == 0 ? 600 : 24);

			fill(f[i], n, (int)(next() % 3));
			ev.f[i] = (struct eh_bytes){ n ? f[i] : NULL, (uint32_t)n };
		}
		check_one(&ev, &node, 0);
		check_one(&ev, &node, 1);
	}
}
END_TEST

START_TEST(json_write_appends)
{
	struct eh_node node = { "n", 1 };
	struct eh_event ev;
	struct eh_buf b = { 0 };

	memset(&ev, 0, sizeof(ev));
	ev.type = EH_EV_UNSUBSCRIBE;
	ev.f[EH_F_TOPIC] = (struct eh_bytes){ "a/b", 3 };
	ck_assert_int_eq(eh_buf_append(&b, "[", 1), 0);
	ck_assert_int_eq(eh_json_write_event(&b, &ev, &node), 0);
	ck_assert_int_eq(eh_buf_append(&b, ",", 1), 0);
	ck_assert_int_eq(eh_json_write_event(&b, &ev, &node), 0);
	ck_assert_int_eq(eh_buf_append(&b, "]", 1), 0);
	{
		json_error_t err;
		json_t *arr = json_loadb(b.data, b.len, 0, &err);

		ck_assert_ptr_nonnull(arr);
		ck_assert_uint_eq(json_array_size(arr), 2);
		ck_assert_str_eq(json_string_value(json_object_get(json_array_get(arr, 1), "topic")), "a/b");
		json_decref(arr);
	}
	eh_buf_free(&b);
}
END_TEST

static Suite *json_write_suite(void)
{
	Suite *s = suite_create("json_write");
	TCase *tc = tcase_create("write");

	tcase_add_test(tc, json_write_matches_jansson);
	tcase_add_test(tc, json_write_appends);
	suite_add_tcase(s, tc);
	return s;
}
EH_UNIT_SUITE(json_write_suite)
