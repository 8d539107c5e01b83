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

/* The writer appends to a buffer that already holds pad bytes, so that the
 * buffer grows at a different point of the event each time. */
static void check_padded(const struct eh_event *ev, const struct eh_node *node, int cloud, size_t pad)
{
	json_t *o = cloud ? eh_json_cloudevent(ev, node) : eh_json_event(ev, node);
	char *want = json_dumps(o, JSON_COMPACT);
	struct eh_buf b = { 0 };
	int rc;

	for (size_t i = 0; i < pad; i++)
		ck_assert_int_eq(eh_buf_append(&b, "x", 1), 0);
	rc = cloud ? eh_json_write_cloudevent(&b, ev, node) : eh_json_write_event(&b, ev, node);
	ck_assert_int_eq(rc, 0);
	ck_assert_ptr_nonnull(want);
	ck_assert_uint_eq(b.len - pad, strlen(want));
	ck_assert_msg(!memcmp(b.data + pad, want, b.len - pad), "differs:\n%s\n%s", want, b.data + pad);
	ck_assert(b.data[b.len] == '\0');
	free(want);
	json_decref(o);
	eh_buf_free(&b);
}

static void check_one(const struct eh_event *ev, const struct eh_node *node, int cloud)
{
	check_padded(ev, node, cloud, 0);
}

START_TEST(json_write_matches_jansson)
{
	static char f[EH_F_COUNT][600];
	struct eh_node node;

	ck_assert_int_eq(eh_node_init(&node, "node-\xc3\xa9", 0x0123456789abcdefull, NULL, 0), 0);

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
		/* A publish's size (in connected_ms's slot): 0, equal to what
		 * is kept, or larger (cut by payload_max_bytes). */
		switch (ev.type == EH_EV_PUBLISH ? next() % 3 : 3) {
		case 0:
			ev.payload_size = 0;
			break;
		case 3:
			break;
		case 1:
			ev.payload_size = ev.f[EH_F_PAYLOAD].len;
			break;
		default:
			ev.payload_size = ev.f[EH_F_PAYLOAD].len + 1 + (int64_t)(next() % 268435455u);
			break;
		}
		check_one(&ev, &node, 0);
		check_one(&ev, &node, 1);
	}
}
END_TEST

/* The writer's own bytes for a cut publish, plain and in CloudEvents, next
 * to the same event uncut: only payload_size differs and
 * payload_truncated appears. */
START_TEST(json_write_truncated_publish_exact)
{
	static const char common[] = "{\"event\":\"message.publish\",\"id\":\"00000000-0000-8001-8000-000000000005\","
				     "\"ts\":\"1970-01-01T00:00:00.000Z\",\"node\":\"n\",\"seq\":3,\"clientid\":\"c\","
				     "\"peer\":\"p\",\"protocol\":\"mqtt\",\"proto_ver\":5,\"topic\":\"t\",\"qos\":0,"
				     "\"retain\":false,\"payload\":\"MDEyMzQ1Njc4OWFiY2RlZg==\",\"payload_size\":";
	static const char ce[] = "{\"specversion\":\"1.0\",\"type\":\"message.publish\",\"source\":\"n\","
				 "\"id\":\"00000000-0000-8001-8000-000000000005\",\"time\":\"1970-01-01T00:00:00.000Z\","
				 "\"datacontenttype\":\"application/json\",\"data\":";
	struct eh_node node;
	struct eh_event ev;
	struct eh_buf b = { 0 };
	char want[1024];

	ck_assert_int_eq(eh_node_init(&node, "n", 1, NULL, 0), 0);
	memset(&ev, 0, sizeof(ev));
	ev.type = EH_EV_PUBLISH;
	ev.number = 5;
	ev.seq = 3;
	ev.proto_ver = 5;
	ev.f[EH_F_CLIENTID] = (struct eh_bytes){ "c", 1 };
	ev.f[EH_F_PEER] = (struct eh_bytes){ "p", 1 };
	ev.f[EH_F_TOPIC] = (struct eh_bytes){ "t", 1 };
	ev.f[EH_F_PAYLOAD] = (struct eh_bytes){ "0123456789abcdef", 16 };

	ev.payload_size = 16;
	ck_assert_int_eq(eh_json_write_event(&b, &ev, &node), 0);
	snprintf(want, sizeof(want), "%s16}", common);
	ck_assert_str_eq(b.data, want);

	ev.payload_size = 70000;
	b.len = 0;
	ck_assert_int_eq(eh_json_write_event(&b, &ev, &node), 0);
	snprintf(want, sizeof(want), "%s70000,\"payload_truncated\":true}", common);
	ck_assert_str_eq(b.data, want);

	b.len = 0;
	ck_assert_int_eq(eh_json_write_cloudevent(&b, &ev, &node), 0);
	snprintf(want, sizeof(want), "%s%s70000,\"payload_truncated\":true}}", ce, common);
	ck_assert_str_eq(b.data, want);
	eh_buf_free(&b);
}
END_TEST

START_TEST(json_write_appends)
{
	struct eh_node node;
	struct eh_event ev;
	struct eh_buf b = { 0 };

	ck_assert_int_eq(eh_node_init(&node, "n", 1, NULL, 0), 0);
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

/* What may sit in a string, one piece at a time, next to plain bytes: each
 * needs the writer to leave its eight-bytes-at-a-time path. */
static const struct {
	const char *s;
	size_t len;
	int valid; /* valid UTF-8: may also be the node's name */
} pieces[] = {
	{ "\"", 1, 1 },
	{ "\\", 1, 1 },
	{ "\x1f", 1, 1 },
	{ "\x00", 1, 1 },
	{ "\n", 1, 1 },
	{ "\x01", 1, 1 },
	{ "\x7f", 1, 1 },                 /* needs no escape */
	{ " ", 1, 1 },                    /* the lowest plain byte */
	{ "~", 1, 1 },
	{ "\xc3\xa9", 2, 1 },             /* U+00E9 */
	{ "\xe2\x82\xac", 3, 1 },         /* U+20AC */
	{ "\xf0\x9f\x98\x80", 4, 1 },     /* U+1F600 */
	{ "\x80", 1, 0 },                 /* lone continuation */
	{ "\xff", 1, 0 },
	{ "\xc3", 1, 0 },                 /* truncated lead */
	{ "\xe2\x82(", 3, 0 },            /* continuation missing */
	{ "\xf0\x9f\x98", 3, 0 },
	{ "\xc0\xaf", 2, 0 },             /* overlong */
	{ "\xed\xa0\x80", 3, 0 },         /* surrogate */
	{ "\xf4\x90\x80\x80", 4, 0 },     /* above U+10FFFF */
	{ "\xc3\xa9\"\xff\\\x1f", 6, 0 },
};

START_TEST(json_write_string_edges)
{
	/* Every piece at every position of strings of 0 to 17 bytes (so
	 * across the 8- and 16-byte word boundaries and in the tail), cut at
	 * the string's end, in client fields (validated) and, when valid, as
	 * the node's name (ours, copied). */
	static const char filler[] = "abcdefghijklmnopqrstuvwxyz";
	unsigned pads = 0;

	for (size_t k = 0; k < sizeof(pieces) / sizeof(pieces[0]); k++) {
		for (size_t len = 0; len <= 17; len++) {
			for (size_t pos = 0; pos <= len; pos++) {
				char str[32];
				struct eh_node node;
				struct eh_event ev;
				size_t take = pieces[k].len < len - pos ? pieces[k].len : len - pos;

				ck_assert_int_eq(eh_node_init(&node, "n", 7, NULL, 0), 0);
				if (pos == len && len)
					continue;
				memcpy(str, filler, len);
				memcpy(str + pos, pieces[k].s, take);
				memset(&ev, 0, sizeof(ev));
				ev.type = EH_EV_PUBLISH;
				ev.flags = EH_EVF_HAS_USERNAME;
				ev.f[EH_F_CLIENTID] = (struct eh_bytes){ str, (uint32_t)len };
				ev.f[EH_F_USERNAME] = (struct eh_bytes){ str + pos, (uint32_t)(len - pos) };
				ev.f[EH_F_TOPIC] = (struct eh_bytes){ str, (uint32_t)len };
				ev.f[EH_F_PAYLOAD] = (struct eh_bytes){ str, (uint32_t)len };
				if (pieces[k].valid && take == pieces[k].len && !memchr(str, 0, len)) {
					str[len] = '\0';
					ck_assert_int_eq(eh_node_init(&node, str, 7, NULL, 0), 0);
				}
				check_padded(&ev, &node, 0, pads++ % 600);
				check_one(&ev, &node, 1);
			}
		}
	}
}
END_TEST

START_TEST(json_write_long_strings)
{
	/* The longest topic MQTT allows, plain, with one piece at either end,
	 * all escapes (the output six times the input) and mixed. */
	enum { LEN = 65535 };
	char *str = malloc(LEN);
	struct eh_node node;
	struct eh_event ev;

	ck_assert_int_eq(eh_node_init(&node, "n", 7, NULL, 0), 0);
	ck_assert_ptr_nonnull(str);
	memset(&ev, 0, sizeof(ev));
	ev.type = EH_EV_SUBSCRIBE;
	ev.f[EH_F_CLIENTID] = (struct eh_bytes){ "c", 1 };
	for (int variant = 0; variant < 6; variant++) {
		switch (variant) {
		case 0:
			fill(str, LEN, 0);
			break;
		case 1:
			str[0] = '"';
			break;
		case 2:
			str[0] = 'a';
			str[LEN - 1] = '\x80';
			break;
		case 3:
			memset(str, '\x01', LEN);
			break;
		case 4:
			fill(str, LEN, 2);
			break;
		default:
			fill(str, LEN, 1);
			break;
		}
		ev.f[EH_F_TOPIC] = (struct eh_bytes){ str, LEN };
		check_one(&ev, &node, 0);
		check_padded(&ev, &node, 1, 511);
	}
	free(str);
}
END_TEST

START_TEST(json_write_integers)
{
	/* Digits are written two at a time: every length, both sides of each
	 * power of ten, the extremes and negative values. */
	struct eh_node node;
	struct eh_event ev;
	long long v = 1;

	ck_assert_int_eq(eh_node_init(&node, "n", 7, NULL, 0), 0);
	memset(&ev, 0, sizeof(ev));
	ev.type = EH_EV_DISCONNECTED;
	ev.flags = EH_EVF_HAS_CONNECTED_MS;
	for (int digits = 1; digits <= 19; digits++, v *= 10) {
		const long long around[] = { v - 1, v, v + 1, -(v - 1), -v, -(v + 1) };

		for (size_t k = 0; k < sizeof(around) / sizeof(around[0]); k++) {
			ev.connected_ms = around[k];
			ev.seq = (uint64_t)around[k];
			check_one(&ev, &node, 0);
		}
		if (digits == 19)
			break;
	}
	ev.connected_ms = INT64_MAX;
	ev.seq = UINT64_MAX;
	check_one(&ev, &node, 0);
	ev.connected_ms = INT64_MIN;
	ev.seq = (uint64_t)INT64_MIN;
	check_one(&ev, &node, 0);
}
END_TEST

/* The writers reserve eh_json_text_bound once and then write unchecked:
 * the longest text each type can make stays inside it, with every string
 * at its worst (controls, six bytes each, after one invalid byte that
 * adds the base64 twin), every flag, the widest integers, the longest
 * reason and a node name of 255 controls. */
START_TEST(json_write_stays_within_its_bound)
{
	enum { LEN = 65535, PAYLOAD = 100000 };
	static const uint8_t reasons[] = { EH_REASON_BAD_CREDENTIALS, EH_REASON_ADMINISTRATIVE_ACTION };
	char *str = malloc(LEN), *payload = malloc(PAYLOAD), name[EH_NODE_NAME_MAX + 1];
	struct eh_node node;

	ck_assert_ptr_nonnull(str);
	ck_assert_ptr_nonnull(payload);
	memset(str, '\x01', LEN);
	str[0] = '\xff';
	memset(payload, '\xff', PAYLOAD);
	memset(name, '\x01', EH_NODE_NAME_MAX);
	name[EH_NODE_NAME_MAX] = '\0';
	ck_assert_int_eq(eh_node_init(&node, name, UINT64_MAX, NULL, 0), 0);
	for (unsigned type = 0; type < EH_EV_COUNT; type++) {
		for (size_t r = 0; r < sizeof(reasons); r++) {
			struct eh_event ev;

			memset(&ev, 0, sizeof(ev));
			ev.type = (uint8_t)type;
			ev.number = UINT64_MAX;
			ev.seq = UINT64_MAX;
			ev.ts_ms = INT64_MIN;
			ev.connected_ms = INT64_MIN;
			ev.keepalive = UINT16_MAX;
			ev.proto_ver = UINT8_MAX;
			ev.qos = UINT8_MAX;
			ev.reason = reasons[r];
			ev.action = EH_ACTION_PUBLISH;
			ev.flags = UINT16_MAX;
			for (int f = 0; f < EH_F_COUNT; f++)
				ev.f[f] = (struct eh_bytes){ str, LEN };
			ev.f[EH_F_PAYLOAD] = (struct eh_bytes){ payload, PAYLOAD };
			for (int cloud = 0; cloud < 2; cloud++) {
				struct eh_buf b = { 0 };
				int rc = cloud ? eh_json_write_cloudevent(&b, &ev, &node) : eh_json_write_event(&b, &ev, &node);

				ck_assert_int_eq(rc, 0);
				ck_assert_msg(b.len + 1 <= eh_json_text_bound(&ev, &node), "type %u: %zu bytes, bound %zu",
					      type, b.len + 1, eh_json_text_bound(&ev, &node));
				eh_buf_free(&b);
			}
			check_one(&ev, &node, 1);
		}
	}
	free(payload);
	free(str);
}
END_TEST

/* The node's name is checked once, where the parts made from it are. */
/* The framing the http and local sinks share: each event written as alone,
 * with "[", ",", "]" for an array and a newline after each NDJSON line. */
START_TEST(json_batch_framings)
{
	static const enum eh_json_framing framings[] = { EH_JSON_SINGLE, EH_JSON_ARRAY, EH_JSON_NDJSON };
	struct eh_node node;
	struct eh_event ev[2];
	struct eh_buf one[2] = { { 0 }, { 0 } }, b = { 0 };
	char want[3][2048];

	ck_assert_int_eq(eh_node_init(&node, "n", 1, NULL, 0), 0);
	for (int i = 0; i < 2; i++) {
		memset(&ev[i], 0, sizeof(ev[i]));
		ev[i].type = i ? EH_EV_DISCONNECTED : EH_EV_CONNECT;
		ev[i].number = ev[i].seq = (uint64_t)i + 1;
		ev[i].f[EH_F_CLIENTID] = (struct eh_bytes){ "c", 1 };
		ck_assert_int_eq(eh_json_write_event(&one[i], &ev[i], &node), 0);
	}
	snprintf(want[0], sizeof(want[0]), "%s", one[0].data);
	snprintf(want[1], sizeof(want[1]), "[%s,%s]", one[0].data, one[1].data);
	snprintf(want[2], sizeof(want[2]), "%s\n%s\n", one[0].data, one[1].data);
	for (int f = 0; f < 3; f++) {
		b.len = 0;
		ck_assert_int_eq(eh_json_batch_begin(&b, framings[f]), 0);
		for (int i = 0; i < (f ? 2 : 1); i++)
			ck_assert_int_eq(eh_json_batch_add(&b, framings[f], i == 0, &ev[i], &node, false), 0);
		ck_assert_int_eq(eh_json_batch_end(&b, framings[f]), 0);
		ck_assert_str_eq(b.data ? b.data : "", want[f]);
		ck_assert_uint_eq(EH_JSON_BATCH_END_LEN(framings[f]), f == 1);
	}
	/* CloudEvents envelopes in an array */
	b.len = 0;
	ck_assert_int_eq(eh_json_batch_begin(&b, EH_JSON_ARRAY), 0);
	ck_assert_int_eq(eh_json_batch_add(&b, EH_JSON_ARRAY, true, &ev[0], &node, true), 0);
	ck_assert_int_eq(eh_json_batch_end(&b, EH_JSON_ARRAY), 0);
	ck_assert_ptr_nonnull(strstr(b.data, "[{\"specversion\":\"1.0\""));
	ck_assert_int_eq(b.data[b.len - 1], ']');
	eh_buf_free(&b);
	eh_buf_free(&one[0]);
	eh_buf_free(&one[1]);
}
END_TEST

START_TEST(json_node_init_checks_the_name)
{
	char name[EH_NODE_NAME_MAX + 2], why[128];
	struct eh_node node;

	memset(name, 'a', sizeof(name) - 1);
	name[EH_NODE_NAME_MAX] = '\0';
	ck_assert_int_eq(eh_node_init(&node, name, 1, NULL, 0), 0);
	ck_assert_str_eq(node.name, name);
	name[EH_NODE_NAME_MAX] = 'a';
	name[EH_NODE_NAME_MAX + 1] = '\0';
	ck_assert_int_eq(eh_node_init(&node, name, 1, why, sizeof(why)), -1);
	ck_assert_str_eq(why, "longer than 255 bytes");
	ck_assert_int_eq(eh_node_init(&node, "bad\xff", 1, why, sizeof(why)), -1);
	ck_assert_str_eq(why, "not valid UTF-8 (at byte 3)");
	ck_assert_int_eq(eh_node_init(&node, "", 1, NULL, 0), 0);
	ck_assert_int_eq(eh_node_init(&node, "q\"\\\t\x01/", 1, NULL, 0), 0);
	ck_assert_str_eq(node.name_json, "\"q\\\"\\\\\\t\\u0001/\"");
	ck_assert_uint_eq(node.name_json_len, strlen(node.name_json));
}
END_TEST


static Suite *json_write_suite(void)
{
	Suite *s = suite_create("json_write");
	TCase *tc = tcase_create("write");

	tcase_add_test(tc, json_write_matches_jansson);
	tcase_add_test(tc, json_write_truncated_publish_exact);
	tcase_add_test(tc, json_write_appends);
	tcase_add_test(tc, json_write_string_edges);
	tcase_add_test(tc, json_write_long_strings);
	tcase_add_test(tc, json_write_integers);
	tcase_add_test(tc, json_write_stays_within_its_bound);
	tcase_add_test(tc, json_batch_framings);
	tcase_add_test(tc, json_node_init_checks_the_name);
	suite_add_tcase(s, tc);
	return s;
}
EH_UNIT_SUITE(json_write_suite)
