/*
 * eh_json: the event objects are the public schema, so these tests pin the
 * exact text (field names and order) for fixed inputs, the id and time
 * formats, how client bytes that are not UTF-8 are carried, base64 and the
 * UTF-8 validator, and the CloudEvents envelope.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eh_json.h"
#include "unit.h"

static struct eh_node test_node(void)
{
	struct eh_node node;

	ck_assert_int_eq(eh_node_init(&node, "node-1", 0x0123456789abcdefull, NULL, 0), 0);
	return node;
}

/* Every flag set, every field filled: the richest form of each type. */
static struct eh_event full_event(unsigned type)
{
	struct eh_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.type = (uint8_t)type;
	ev.number = 42;
	ev.seq = 7;
	ev.ts_ms = 1700000000123LL;
	ev.proto_ver = 4;
	ev.keepalive = 60;
	ev.qos = 1;
	ev.flags = EH_EVF_HAS_USERNAME | EH_EVF_CLEAN_START | EH_EVF_RETAIN | EH_EVF_GRANTED_KNOWN | EH_EVF_GRANTED
		   | EH_EVF_HAS_CONNECTED_MS;
	/* A publish's payload_size shares the slot (and is tested apart). */
	if (type != EH_EV_PUBLISH)
		ev.connected_ms = 1500;
	ev.reason = EH_REASON_BAD_CREDENTIALS;
	ev.action = EH_ACTION_PUBLISH;
	ev.f[EH_F_CLIENTID] = (struct eh_bytes){ "c1", 2 };
	ev.f[EH_F_USERNAME] = (struct eh_bytes){ "u1", 2 };
	ev.f[EH_F_PEER] = (struct eh_bytes){ "127.0.0.1", 9 };
	ev.f[EH_F_TOPIC] = (struct eh_bytes){ "a/b", 3 };
	ev.f[EH_F_PAYLOAD] = (struct eh_bytes){ "hi", 2 };
	return ev;
}

/* The compact dump of a new reference, which it releases. */
static char *dump(json_t *j)
{
	char *s;

	ck_assert_ptr_nonnull(j);
	s = json_dumps(j, JSON_COMPACT);
	ck_assert_ptr_nonnull(s);
	json_decref(j);
	return s;
}

static void assert_event_json(const struct eh_event *ev, const char *want)
{
	struct eh_node node = test_node();
	char *got = dump(eh_json_event(ev, &node));

	ck_assert_str_eq(got, want);
	free(got);
}

#define COMMON "\"id\":\"01234567-89ab-8def-8000-00000000002a\",\"ts\":\"2023-11-14T22:13:20.123Z\"," \
	       "\"node\":\"node-1\",\"seq\":7,\"clientid\":\"c1\",\"username\":\"u1\",\"peer\":\"127.0.0.1\","   \
	       "\"protocol\":\"mqtt\",\"proto_ver\":4"

START_TEST(json_every_type_exact)
{
	static const char *const want[EH_EV_COUNT] = {
		[EH_EV_CONNECT] = "{\"event\":\"client.connect\"," COMMON ",\"keepalive\":60,\"clean_start\":true}",
		[EH_EV_CONNECTED] = "{\"event\":\"client.connected\"," COMMON ",\"keepalive\":60,\"clean_start\":true}",
		[EH_EV_CONNECT_FAILED] = "{\"event\":\"client.connect_failed\"," COMMON
					 ",\"reason\":\"bad_username_or_password\"}",
		[EH_EV_DISCONNECTED] = "{\"event\":\"client.disconnected\"," COMMON
				       ",\"reason\":\"bad_username_or_password\",\"connected_ms\":1500}",
		[EH_EV_SUBSCRIBE] = "{\"event\":\"client.subscribe\"," COMMON
				    ",\"topic\":\"a/b\",\"qos\":1,\"granted\":true}",
		[EH_EV_UNSUBSCRIBE] = "{\"event\":\"client.unsubscribe\"," COMMON ",\"topic\":\"a/b\"}",
		[EH_EV_AUTHZ_DENIED] = "{\"event\":\"client.authz_denied\"," COMMON
				       ",\"action\":\"publish\",\"topic\":\"a/b\",\"qos\":1,\"retain\":true}",
		[EH_EV_PUBLISH] = "{\"event\":\"message.publish\"," COMMON
				  ",\"topic\":\"a/b\",\"qos\":1,\"retain\":true,\"payload\":\"aGk=\",\"payload_size\":2}",
	};

	for (unsigned t = 0; t < EH_EV_COUNT; t++) {
		struct eh_event ev = full_event(t);

		assert_event_json(&ev, want[t]);
	}
}
END_TEST

#define COMMON_MIN "\"id\":\"01234567-89ab-8def-8000-00000000002a\",\"ts\":\"2023-11-14T22:13:20.123Z\"," \
		   "\"node\":\"node-1\",\"seq\":7,\"clientid\":\"c1\",\"peer\":\"127.0.0.1\",\"protocol\":\"websockets\""

/* The optional fields: no username, unknown protocol version, websockets,
 * inferred, no reason, no duration, grant unknown, subscribe action. */
START_TEST(json_every_type_minimal)
{
	static const char *const want[EH_EV_COUNT] = {
		[EH_EV_CONNECT] = "{\"event\":\"client.connect\"," COMMON_MIN
				  ",\"keepalive\":0,\"clean_start\":false,\"inferred\":true}",
		[EH_EV_CONNECTED] = "{\"event\":\"client.connected\"," COMMON_MIN
				    ",\"keepalive\":0,\"clean_start\":false,\"inferred\":true}",
		[EH_EV_CONNECT_FAILED] = "{\"event\":\"client.connect_failed\"," COMMON_MIN "}",
		[EH_EV_DISCONNECTED] = "{\"event\":\"client.disconnected\"," COMMON_MIN ",\"reason\":\"unknown\"}",
		[EH_EV_SUBSCRIBE] = "{\"event\":\"client.subscribe\"," COMMON_MIN ",\"topic\":\"\",\"qos\":0}",
		[EH_EV_UNSUBSCRIBE] = "{\"event\":\"client.unsubscribe\"," COMMON_MIN ",\"topic\":\"\"}",
		[EH_EV_AUTHZ_DENIED] = "{\"event\":\"client.authz_denied\"," COMMON_MIN
				       ",\"action\":\"subscribe\",\"topic\":\"\",\"qos\":0}",
		[EH_EV_PUBLISH] = "{\"event\":\"message.publish\"," COMMON_MIN
				  ",\"topic\":\"\",\"qos\":0,\"retain\":false,\"payload\":\"\",\"payload_size\":0}",
	};

	for (unsigned t = 0; t < EH_EV_COUNT; t++) {
		struct eh_event ev = full_event(t);

		ev.flags = EH_EVF_WEBSOCKETS | EH_EVF_INFERRED;
		ev.proto_ver = 0;
		ev.keepalive = 0;
		ev.qos = 0;
		ev.reason = EH_REASON_NONE;
		ev.action = EH_ACTION_SUBSCRIBE;
		ev.f[EH_F_TOPIC] = (struct eh_bytes){ NULL, 0 };
		ev.f[EH_F_PAYLOAD] = (struct eh_bytes){ NULL, 0 };
		/* A username given while the flag says none is not shown. */
		assert_event_json(&ev, want[t]);
	}
}
END_TEST

/* payload_max_bytes: payload holds the bytes kept, payload_size the size
 * sent, and payload_truncated follows it only when bytes were left out. */
START_TEST(json_publish_truncated_exact)
{
	static const char *const head = "{\"event\":\"message.publish\"," COMMON
					",\"topic\":\"a/b\",\"qos\":1,\"retain\":true,";
	static const struct {
		const char *bytes;
		uint32_t len, size;
		const char *tail;
	} cases[] = {
		{ "hi", 2, 0, "\"payload\":\"aGk=\",\"payload_size\":2}" },
		{ "hi", 2, 2, "\"payload\":\"aGk=\",\"payload_size\":2}" },
		{ "hi", 2, 3, "\"payload\":\"aGk=\",\"payload_size\":3,\"payload_truncated\":true}" },
		{ "hi", 2, 70000, "\"payload\":\"aGk=\",\"payload_size\":70000,\"payload_truncated\":true}" },
		{ NULL, 0, 5, "\"payload\":\"\",\"payload_size\":5,\"payload_truncated\":true}" },
		{ NULL, 0, 0, "\"payload\":\"\",\"payload_size\":0}" },
		{ "hi", 2, 268435455,
		  "\"payload\":\"aGk=\",\"payload_size\":268435455,\"payload_truncated\":true}" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct eh_event ev = full_event(EH_EV_PUBLISH);
		char want[512];

		ev.f[EH_F_PAYLOAD] = (struct eh_bytes){ cases[i].bytes, cases[i].len };
		ev.payload_size = cases[i].size;
		snprintf(want, sizeof(want), "%s%s", head, cases[i].tail);
		assert_event_json(&ev, want);
	}
}
END_TEST

START_TEST(json_cloudevent_truncated_publish)
{
	struct eh_node node = test_node();
	struct eh_event ev = full_event(EH_EV_PUBLISH);
	char *got;

	ev.payload_size = 70000;
	got = dump(eh_json_cloudevent(&ev, &node));
	ck_assert_str_eq(got, "{\"specversion\":\"1.0\",\"type\":\"message.publish\",\"source\":\"node-1\","
			 "\"id\":\"01234567-89ab-8def-8000-00000000002a\",\"time\":\"2023-11-14T22:13:20.123Z\","
			 "\"datacontenttype\":\"application/json\",\"data\":{\"event\":\"message.publish\","
			 COMMON ",\"topic\":\"a/b\",\"qos\":1,\"retain\":true,\"payload\":\"aGk=\","
			 "\"payload_size\":70000,\"payload_truncated\":true}}");
	free(got);
}
END_TEST

START_TEST(json_invalid_utf8_replaced_with_b64)
{
	struct eh_event ev = full_event(EH_EV_PUBLISH);

	ev.f[EH_F_CLIENTID] = (struct eh_bytes){ "a\xff" "b", 3 };
	ev.f[EH_F_USERNAME] = (struct eh_bytes){ "\xc0\xaf", 2 };
	ev.f[EH_F_TOPIC] = (struct eh_bytes){ "t/\xed\xa0\x80", 5 };
	ev.f[EH_F_PAYLOAD] = (struct eh_bytes){ "\xff\x00", 2 };
	assert_event_json(&ev, "{\"event\":\"message.publish\",\"id\":\"01234567-89ab-8def-8000-00000000002a\","
			  "\"ts\":\"2023-11-14T22:13:20.123Z\",\"node\":\"node-1\",\"seq\":7,"
			  "\"clientid\":\"a\xef\xbf\xbd" "b\",\"clientid_b64\":\"Yf9i\","
			  "\"username\":\"\xef\xbf\xbd\xef\xbf\xbd\",\"username_b64\":\"wK8=\","
			  "\"peer\":\"127.0.0.1\",\"protocol\":\"mqtt\",\"proto_ver\":4,"
			  "\"topic\":\"t/\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\",\"topic_b64\":\"dC/toIA=\","
			  "\"qos\":1,\"retain\":true,\"payload\":\"/wA=\",\"payload_size\":2}");
}
END_TEST

START_TEST(json_control_and_nul_escaped)
{
	struct eh_event ev = full_event(EH_EV_UNSUBSCRIBE);

	ev.f[EH_F_CLIENTID] = (struct eh_bytes){ "a\0b\x01\x1f\n\t\"\\/\x7f", 11 };
	ev.f[EH_F_TOPIC] = (struct eh_bytes){ "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9 };
	assert_event_json(&ev, "{\"event\":\"client.unsubscribe\",\"id\":\"01234567-89ab-8def-8000-00000000002a\","
			  "\"ts\":\"2023-11-14T22:13:20.123Z\",\"node\":\"node-1\",\"seq\":7,"
			  "\"clientid\":\"a\\u0000b\\u0001\\u001F\\n\\t\\\"\\\\/\x7f\","
			  "\"username\":\"u1\",\"peer\":\"127.0.0.1\",\"protocol\":\"mqtt\",\"proto_ver\":4,"
			  "\"topic\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}");
}
END_TEST

/* Dumps the event and parses the text back: it must be valid JSON. */
static json_t *reparse(const struct eh_event *ev)
{
	struct eh_node node = test_node();
	char *text = dump(eh_json_event(ev, &node));
	json_error_t jerr;
	json_t *back = json_loads(text, JSON_ALLOW_NUL, &jerr);

	ck_assert_msg(back != NULL, "not valid JSON: %s", jerr.text);
	free(text);
	return back;
}

START_TEST(json_large_client_id)
{
	char *cid = malloc(65535);
	struct eh_event ev = full_event(EH_EV_CONNECT);
	json_t *back;
	const char *s;

	ck_assert_ptr_nonnull(cid);
	memset(cid, 'x', 65535);
	ev.f[EH_F_CLIENTID] = (struct eh_bytes){ cid, 65535 };
	back = reparse(&ev);
	s = json_string_value(json_object_get(back, "clientid"));
	ck_assert_ptr_nonnull(s);
	ck_assert_uint_eq(json_string_length(json_object_get(back, "clientid")), 65535);
	ck_assert_int_eq(memcmp(s, cid, 65535), 0);
	ck_assert_ptr_null(json_object_get(back, "clientid_b64"));
	json_decref(back);

	/* Every byte invalid: three bytes each in the string, and the raw
	 * bytes recoverable from the base64. */
	memset(cid, 0xff, 65535);
	cid[100] = 0;
	back = reparse(&ev);
	ck_assert_uint_eq(json_string_length(json_object_get(back, "clientid")), 65534 * 3 + 1);
	s = json_string_value(json_object_get(back, "clientid_b64"));
	ck_assert_ptr_nonnull(s);
	ck_assert_uint_eq(strlen(s), eh_base64_len(65535));
	ck_assert_str_eq(s + strlen(s) - 4, "////");
	ck_assert_int_eq(strncmp(s + 128, "/////wD/////", 12), 0);
	json_decref(back);
	free(cid);
}
END_TEST

START_TEST(json_id_format)
{
	static const uint64_t instances[] = { 0, 0xffffffffffffffffull, 0x0123456789abcdefull, 0x8000 };
	static const uint64_t numbers[] = { 0, 1, 42, 0x3fffffffffffffffull, 0xffffffffffffffffull };
	char id[EH_ID_LEN + 1];
	struct eh_node node = test_node();

	for (size_t i = 0; i < sizeof(instances) / sizeof(instances[0]); i++) {
		for (size_t k = 0; k < sizeof(numbers) / sizeof(numbers[0]); k++) {
			ck_assert_int_eq(eh_node_init(&node, "node-1", instances[i], NULL, 0), 0);
			memset(id, '?', sizeof(id));
			eh_json_format_id(&node, numbers[k], id);
			ck_assert_uint_eq(strlen(id), EH_ID_LEN);
			for (int c = 0; c < EH_ID_LEN; c++) {
				if (c == 8 || c == 13 || c == 18 || c == 23)
					ck_assert_int_eq(id[c], '-');
				else
					ck_assert_msg(strchr("0123456789abcdef", id[c]) && id[c], "bad char in %s", id);
			}
			ck_assert_int_eq(id[14], '8');                 /* version 8 */
			ck_assert_ptr_nonnull(strchr("89ab", id[19])); /* variant 10 */
		}
	}
	ck_assert_int_eq(eh_node_init(&node, "node-1", 0x0123456789abcdefull, NULL, 0), 0);
	eh_json_format_id(&node, 42, id);
	ck_assert_str_eq(id, "01234567-89ab-8def-8000-00000000002a");
	eh_json_format_id(&node, 0x3fffffffffffffffull, id);
	ck_assert_str_eq(id, "01234567-89ab-8def-bfff-ffffffffffff");
	ck_assert_int_eq(eh_node_init(&node, "node-1", 0, NULL, 0), 0);
	eh_json_format_id(&node, 0, id);
	ck_assert_str_eq(id, "00000000-0000-8000-8000-000000000000");
	/* Against printf's hex, every byte value in every place (digits go
	 * out two at a time). */
	for (int i = 0; i < 2048; i++) {
		uint64_t inst = 0x0101010101010101ull * (uint64_t)(i & 255) ^ ((uint64_t)i << 40);
		uint64_t num = 0x0101010101010101ull * (uint64_t)((i * 7) & 255) ^ (uint64_t)i;
		uint64_t hi = (inst & ~(uint64_t)0xF000) | 0x8000;
		uint64_t lo = (num & 0x3FFFFFFFFFFFFFFFull) | 0x8000000000000000ull;
		char want[EH_ID_LEN + 8];

		ck_assert_int_eq(eh_node_init(&node, "node-1", inst, NULL, 0), 0);
		eh_json_format_id(&node, num, id);
		snprintf(want, sizeof(want), "%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64,
			 hi >> 32, (hi >> 16) & 0xFFFF, hi & 0xFFFF, lo >> 48, lo & (uint64_t)0xFFFFFFFFFFFFull);
		ck_assert_str_eq(id, want);
	}
	/* Distinct numbers and distinct instances give distinct ids. */
	{
		char other[EH_ID_LEN + 1];

		ck_assert_int_eq(eh_node_init(&node, "node-1", 5, NULL, 0), 0);
		eh_json_format_id(&node, 1, id);
		eh_json_format_id(&node, 2, other);
		ck_assert_str_ne(id, other);
		ck_assert_int_eq(eh_node_init(&node, "node-1", 6, NULL, 0), 0);
		eh_json_format_id(&node, 1, other);
		ck_assert_str_ne(id, other);
	}
}
END_TEST

START_TEST(json_ts_format)
{
	static const struct {
		int64_t ms;
		const char *want;
	} cases[] = {
		{ 0, "1970-01-01T00:00:00.000Z" },
		{ 1, "1970-01-01T00:00:00.001Z" },
		{ 999, "1970-01-01T00:00:00.999Z" },
		{ 1000, "1970-01-01T00:00:01.000Z" },
		{ -1, "1969-12-31T23:59:59.999Z" },
		{ -999, "1969-12-31T23:59:59.001Z" },
		{ -1000, "1969-12-31T23:59:59.000Z" },
		{ -1001, "1969-12-31T23:59:58.999Z" },
		{ 1700000000123LL, "2023-11-14T22:13:20.123Z" },
		{ 951782400000LL, "2000-02-29T00:00:00.000Z" },
		{ 4102444799999LL, "2099-12-31T23:59:59.999Z" },
		{ 253402300799999LL, "9999-12-31T23:59:59.999Z" },
		{ -62167219200000LL, "0000-01-01T00:00:00.000Z" },
		/* Outside what RFC 3339 can write: clamped to the ends of the
		 * four-digit years, never a wrapped or malformed year. */
		{ 253402300800000LL, "9999-12-31T23:59:59.999Z" },
		{ INT64_MAX, "9999-12-31T23:59:59.999Z" },
		{ -62167219200001LL, "0000-01-01T00:00:00.000Z" },
		{ INT64_MIN, "0000-01-01T00:00:00.000Z" },
	};
	char ts[EH_TS_LEN + 1];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(ts, '?', sizeof(ts));
		eh_json_format_ts(cases[i].ms, ts);
		ck_assert_str_eq(ts, cases[i].want);
	}
}
END_TEST

START_TEST(json_base64_vectors)
{
	/* RFC 4648 section 10, plus every byte value. */
	static const char *const in[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *const out[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	unsigned char all[256];
	char buf[512];

	for (size_t i = 0; i < 7; i++) {
		memset(buf, '?', sizeof(buf));
		ck_assert_uint_eq(eh_base64_len(strlen(in[i])), strlen(out[i]));
		eh_base64_encode(in[i], strlen(in[i]), buf);
		ck_assert_str_eq(buf, out[i]);
	}
	for (int i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	eh_base64_encode(all, 3, buf);
	ck_assert_str_eq(buf, "AAEC");
	eh_base64_encode(all + 251, 5, buf);
	ck_assert_str_eq(buf, "+/z9/v8=");
	eh_base64_encode(all, 256, buf);
	ck_assert_uint_eq(strlen(buf), 344);
	ck_assert_str_eq(buf + 336, "/P3+/w==");
	ck_assert_uint_eq(eh_base64_len(0), 0);
	ck_assert_uint_eq(eh_base64_len(65535), 87380);
}
END_TEST

/* Six bits at a time from a bit buffer: slow and obviously right. */
static void base64_reference(const unsigned char *in, size_t len, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint32_t acc = 0;
	int bits = 0;
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[n++] = tab[(acc >> bits) & 63];
		}
	}
	if (bits)
		out[n++] = tab[(acc << (6 - bits)) & 63];
	while (n % 4)
		out[n++] = '=';
	out[n] = '\0';
}

START_TEST(json_base64_reference)
{
	/* Every 12-bit half of a group in both places, then random inputs of
	 * every length up to 300. */
	unsigned char in[300];
	char want[404], got[404];
	uint64_t r = 0x2545F4914F6CDD1Dull;

	for (uint32_t x = 0; x < 4096; x++) {
		uint32_t v = x << 12 | (4095 - x);

		in[0] = (unsigned char)(v >> 16);
		in[1] = (unsigned char)(v >> 8);
		in[2] = (unsigned char)v;
		base64_reference(in, 3, want);
		eh_base64_encode(in, 3, got);
		ck_assert_str_eq(got, want);
	}
	for (size_t len = 0; len <= sizeof(in); len++) {
		for (size_t i = 0; i < len; i++) {
			r ^= r << 13;
			r ^= r >> 7;
			r ^= r << 17;
			in[i] = (unsigned char)r;
		}
		base64_reference(in, len, want);
		eh_base64_encode(in, len, got);
		ck_assert_str_eq(got, want);
		ck_assert_uint_eq(strlen(got), eh_base64_len(len));
	}
}
END_TEST

START_TEST(json_utf8_validator)
{
	static const struct {
		const char *s;
		size_t len, valid;
	} cases[] = {
		{ "", 0, 0 },
		{ "plain ascii", 11, 11 },
		{ "a\0b", 3, 3 },                       /* NUL is valid UTF-8 */
		{ "\x7f", 1, 1 },
		{ "\xc2\x80", 2, 2 },                   /* U+0080 */
		{ "\xdf\xbf", 2, 2 },                   /* U+07FF */
		{ "\xe0\xa0\x80", 3, 3 },               /* U+0800 */
		{ "\xef\xbf\xbf", 3, 3 },               /* U+FFFF */
		{ "\xf0\x90\x80\x80", 4, 4 },           /* U+10000 */
		{ "\xf4\x8f\xbf\xbf", 4, 4 },           /* U+10FFFF */
		{ "\xed\x9f\xbf", 3, 3 },               /* U+D7FF */
		{ "\xee\x80\x80", 3, 3 },               /* U+E000 */
		{ "ab\x80", 3, 2 },                     /* lone continuation */
		{ "\xbf", 1, 0 },
		{ "\xc0\x80", 2, 0 },                   /* overlong NUL */
		{ "\xc1\xbf", 2, 0 },                   /* overlong */
		{ "\xe0\x80\x80", 3, 0 },               /* overlong 3-byte */
		{ "\xe0\x9f\xbf", 3, 0 },
		{ "\xf0\x80\x80\x80", 4, 0 },           /* overlong 4-byte */
		{ "\xf0\x8f\xbf\xbf", 4, 0 },
		{ "\xed\xa0\x80", 3, 0 },               /* U+D800 surrogate */
		{ "\xed\xbf\xbf", 3, 0 },               /* U+DFFF surrogate */
		{ "\xf4\x90\x80\x80", 4, 0 },           /* U+110000 */
		{ "\xf5\x80\x80\x80", 4, 0 },
		{ "\xf8\x88\x80\x80\x80", 5, 0 },       /* 5-byte form */
		{ "\xfe", 1, 0 },
		{ "\xff", 1, 0 },
		{ "x\xc3", 2, 1 },                      /* truncated */
		{ "x\xe2\x82", 3, 1 },
		{ "x\xf0\x9f\x98", 4, 1 },
		{ "\xe2\x82x", 3, 0 },                  /* continuation missing */
		{ "\xc3\xa9\xc3", 3, 2 },
		{ "\xf0\x9f\x98\x80!", 5, 5 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ck_assert_msg(eh_utf8_valid_prefix(cases[i].s, cases[i].len) == cases[i].valid,
			      "case %zu: got %zu, want %zu", i, eh_utf8_valid_prefix(cases[i].s, cases[i].len),
			      cases[i].valid);
	/* Every code point through the encoder agrees with the validator. */
	for (uint32_t cp = 0; cp <= 0x10FFFF; cp += (cp < 0x11000 ? 1 : 97)) {
		unsigned char b[4];
		size_t n;

		if (cp < 0x80) {
			b[0] = (unsigned char)cp;
			n = 1;
		} else if (cp < 0x800) {
			b[0] = (unsigned char)(0xC0 | (cp >> 6));
			b[1] = (unsigned char)(0x80 | (cp & 0x3F));
			n = 2;
		} else if (cp < 0x10000) {
			b[0] = (unsigned char)(0xE0 | (cp >> 12));
			b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
			b[2] = (unsigned char)(0x80 | (cp & 0x3F));
			n = 3;
		} else {
			b[0] = (unsigned char)(0xF0 | (cp >> 18));
			b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
			b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
			b[3] = (unsigned char)(0x80 | (cp & 0x3F));
			n = 4;
		}
		ck_assert_uint_eq(eh_utf8_valid_prefix((const char *)b, n), (cp >= 0xD800 && cp <= 0xDFFF) ? 0 : n);
	}
}
END_TEST

START_TEST(json_utf8_validator_word_edges)
{
	/* The validator steps over eight ASCII bytes at a time: a bad byte,
	 * a truncated sequence and a valid one at every position around the
	 * word boundaries, and a valid sequence across them. */
	char s[40];

	for (size_t len = 1; len <= 25; len++) {
		for (size_t pos = 0; pos < len; pos++) {
			memset(s, 'a', len);
			s[pos] = '\x80';
			ck_assert_uint_eq(eh_utf8_valid_prefix(s, len), pos);
			s[pos] = '\x7f';
			ck_assert_uint_eq(eh_utf8_valid_prefix(s, len), len);
			s[pos] = '\xe2'; /* needs two more bytes */
			ck_assert_uint_eq(eh_utf8_valid_prefix(s, len), pos);
			if (pos + 3 <= len) {
				memcpy(s + pos, "\xe2\x82\xac", 3);
				ck_assert_uint_eq(eh_utf8_valid_prefix(s, len), len);
				s[len - 1] = '\xff';
				ck_assert_uint_eq(eh_utf8_valid_prefix(s, len), pos + 3 == len ? pos : len - 1);
			}
		}
	}
}
END_TEST

START_TEST(json_string_bytes)
{
	int replaced = -1;
	json_t *j;

	j = eh_json_string_bytes(NULL, 0, &replaced);
	ck_assert_str_eq(json_string_value(j), "");
	ck_assert_int_eq(replaced, 0);
	json_decref(j);
	j = eh_json_string_bytes("ok\0", 3, &replaced);
	ck_assert_uint_eq(json_string_length(j), 3);
	ck_assert_int_eq(replaced, 0);
	json_decref(j);
	/* One U+FFFD per byte that does not start a valid sequence. */
	j = eh_json_string_bytes("x\xe2\x82y\xff", 5, &replaced);
	ck_assert_str_eq(json_string_value(j), "x\xef\xbf\xbd\xef\xbf\xbdy\xef\xbf\xbd");
	ck_assert_int_eq(replaced, 1);
	json_decref(j);
	j = eh_json_string_bytes("\xff\xff", 2, NULL);
	ck_assert_str_eq(json_string_value(j), "\xef\xbf\xbd\xef\xbf\xbd");
	json_decref(j);
}
END_TEST

START_TEST(json_cloudevent_envelope)
{
	struct eh_node node = test_node();
	struct eh_event ev = full_event(EH_EV_UNSUBSCRIBE);
	char *got = dump(eh_json_cloudevent(&ev, &node));

	ck_assert_str_eq(got, "{\"specversion\":\"1.0\",\"type\":\"client.unsubscribe\",\"source\":\"node-1\","
			 "\"id\":\"01234567-89ab-8def-8000-00000000002a\",\"time\":\"2023-11-14T22:13:20.123Z\","
			 "\"datacontenttype\":\"application/json\",\"data\":{\"event\":\"client.unsubscribe\","
			 COMMON ",\"topic\":\"a/b\"}}");
	free(got);
	/* The envelope's id and time are the event's. */
	for (unsigned t = 0; t < EH_EV_COUNT; t++) {
		json_t *ce, *data;

		ev = full_event(t);
		ev.number = 1000 + t;
		ce = eh_json_cloudevent(&ev, &node);
		data = json_object_get(ce, "data");
		ck_assert_str_eq(json_string_value(json_object_get(ce, "id")),
				 json_string_value(json_object_get(data, "id")));
		ck_assert_str_eq(json_string_value(json_object_get(ce, "time")),
				 json_string_value(json_object_get(data, "ts")));
		ck_assert_str_eq(json_string_value(json_object_get(ce, "type")), eh_event_type_name(t));
		ck_assert_uint_eq(json_object_size(ce), 7);
		json_decref(ce);
	}
}
END_TEST

/* Another plugin's allocator for jansson: its blocks start 16 bytes into
 * what libc gave, so libc's free() of one would be caught at once. */
static size_t foreign_live;

static void *foreign_malloc(size_t size)
{
	char *p = malloc(size + 16);

	if (!p)
		return NULL;
	foreign_live++;
	return p + 16;
}

static void foreign_free(void *ptr)
{
	if (!ptr)
		return;
	foreign_live--;
	free((char *)ptr - 16);
}

START_TEST(json_dumps_is_libc_memory)
{
	json_malloc_t old_malloc;
	json_free_t old_free;
	json_t *j;
	char *text;

	json_get_alloc_funcs(&old_malloc, &old_free);
	json_set_alloc_funcs(foreign_malloc, foreign_free);
	j = json_pack("{s:s}", "status", "online");
	ck_assert_ptr_nonnull(j);
	text = eh_json_dumps(j, JSON_COMPACT);
	json_decref(j);
	json_set_alloc_funcs(old_malloc, old_free);
	ck_assert_str_eq(text, "{\"status\":\"online\"}");
	free(text);
	/* jansson's own copy went back to the allocator it came from. */
	ck_assert_uint_eq(foreign_live, 0);
}
END_TEST

static Suite *json_suite(void)
{
	Suite *s = suite_create("json");
	TCase *tc = tcase_create("events");
	TCase *fmt = tcase_create("formats");

	tcase_add_test(tc, json_every_type_exact);
	tcase_add_test(tc, json_every_type_minimal);
	tcase_add_test(tc, json_publish_truncated_exact);
	tcase_add_test(tc, json_cloudevent_truncated_publish);
	tcase_add_test(tc, json_invalid_utf8_replaced_with_b64);
	tcase_add_test(tc, json_control_and_nul_escaped);
	tcase_add_test(tc, json_large_client_id);
	tcase_add_test(tc, json_cloudevent_envelope);
	suite_add_tcase(s, tc);
	tcase_add_test(fmt, json_id_format);
	tcase_add_test(fmt, json_ts_format);
	tcase_add_test(fmt, json_base64_vectors);
	tcase_add_test(fmt, json_base64_reference);
	tcase_add_test(fmt, json_utf8_validator);
	tcase_add_test(fmt, json_utf8_validator_word_edges);
	tcase_add_test(fmt, json_string_bytes);
	tcase_add_test(fmt, json_dumps_is_libc_memory);
	suite_add_tcase(s, fmt);
	return s;
}
EH_UNIT_SUITE(json_suite)
