/*
 * eh_event: names, and the packed record round trip for every type with
 * binary strings; malformed records are rejected, never read past.
 */
#include <stdlib.h>
#include <string.h>

#include "eh_event.h"
#include "unit.h"

static void fill_event(struct eh_event *ev, unsigned type, const char *cid, uint32_t cid_len)
{
	static const char user[] = "us\0er";
	static const char peer[] = "127.0.0.1:5555";
	static const char topic[] = "a/\xff/\0/c";
	static const char payload[] = "\0\x01\x02\xfe\xff";

	memset(ev, 0, sizeof(*ev));
	ev->number = 0x0102030405060708ull + type;
	ev->seq = 0xfffffffffffffff0ull + type;
	ev->ts_ms = -1234567890123ll;
	/* One slot, by type. */
	if (type == EH_EV_PUBLISH)
		ev->payload_size = 268435455;
	else
		ev->connected_ms = 0x7fffffffffffffffll;
	ev->keepalive = 65535;
	ev->type = (uint8_t)type;
	ev->proto_ver = 5;
	ev->qos = 2;
	ev->reason = EH_REASON_SESSION_TAKEN_OVER;
	ev->action = EH_ACTION_SUBSCRIBE;
	ev->flags = 0xffff;
	ev->f[EH_F_CLIENTID] = (struct eh_bytes){ cid, cid_len };
	ev->f[EH_F_USERNAME] = (struct eh_bytes){ user, sizeof(user) - 1 };
	ev->f[EH_F_PEER] = (struct eh_bytes){ peer, sizeof(peer) - 1 };
	ev->f[EH_F_TOPIC] = (struct eh_bytes){ topic, sizeof(topic) - 1 };
	ev->f[EH_F_PAYLOAD] = (struct eh_bytes){ payload, sizeof(payload) - 1 };
}

static void assert_same(const struct eh_event *a, const struct eh_event *b)
{
	ck_assert_uint_eq(a->number, b->number);
	ck_assert_uint_eq(a->seq, b->seq);
	ck_assert_int_eq(a->ts_ms, b->ts_ms);
	ck_assert_int_eq(a->connected_ms, b->connected_ms);
	ck_assert_uint_eq(a->payload_size, b->payload_size);
	ck_assert_uint_eq(a->keepalive, b->keepalive);
	ck_assert_uint_eq(a->type, b->type);
	ck_assert_uint_eq(a->proto_ver, b->proto_ver);
	ck_assert_uint_eq(a->qos, b->qos);
	ck_assert_uint_eq(a->reason, b->reason);
	ck_assert_uint_eq(a->action, b->action);
	ck_assert_uint_eq(a->flags, b->flags);
	for (int i = 0; i < EH_F_COUNT; i++) {
		ck_assert_uint_eq(a->f[i].len, b->f[i].len);
		if (a->f[i].len)
			ck_assert_int_eq(memcmp(a->f[i].ptr, b->f[i].ptr, a->f[i].len), 0);
	}
}

/* Packs into an exactly sized heap buffer, so ASan sees any overrun. */
static char *pack(const struct eh_event *ev, size_t *len)
{
	char *buf;

	*len = eh_event_packed_size(ev);
	buf = malloc(*len);
	ck_assert_ptr_nonnull(buf);
	eh_event_pack(ev, buf);
	return buf;
}

START_TEST(event_round_trip_every_type)
{
	static const char cid[] = "c\0i\xc3\x28" "d\xed\xa0\x80";
	struct eh_event ev, back;

	for (unsigned t = 0; t < EH_EV_COUNT; t++) {
		size_t len;
		char *buf;

		fill_event(&ev, t, cid, sizeof(cid) - 1);
		buf = pack(&ev, &len);
		ck_assert_int_eq(eh_event_unpack(buf, len, &back), 0);
		assert_same(&ev, &back);
		/* The view points into the record, not at the originals. */
		ck_assert(back.f[EH_F_CLIENTID].ptr >= buf && back.f[EH_F_CLIENTID].ptr < buf + len);
		free(buf);
	}
}
END_TEST

START_TEST(event_round_trip_empty_and_large)
{
	struct eh_event ev, back;
	char *big = malloc(65535);
	size_t len, hdr;
	char *buf;

	ck_assert_ptr_nonnull(big);
	for (size_t i = 0; i < 65535; i++)
		big[i] = (char)(i * 7);
	/* Every string empty (NULL pointers): just the header. */
	memset(&ev, 0, sizeof(ev));
	ev.type = EH_EV_DISCONNECTED;
	buf = pack(&ev, &hdr);
	ck_assert_int_eq(eh_event_unpack(buf, hdr, &back), 0);
	assert_same(&ev, &back);
	for (int i = 0; i < EH_F_COUNT; i++)
		ck_assert_uint_eq(back.f[i].len, 0);
	free(buf);

	/* A 65535-byte client id and a large payload. */
	fill_event(&ev, EH_EV_PUBLISH, big, 65535);
	ev.f[EH_F_PAYLOAD] = (struct eh_bytes){ big, 65535 };
	buf = pack(&ev, &len);
	ck_assert_uint_eq(len, hdr + 65535 * 2 + ev.f[EH_F_USERNAME].len + ev.f[EH_F_PEER].len
			  + ev.f[EH_F_TOPIC].len);
	ck_assert_int_eq(eh_event_unpack(buf, len, &back), 0);
	assert_same(&ev, &back);
	free(buf);
	free(big);
}
END_TEST

/* The length array sits after four 64-bit fields; the test finds it by
 * value rather than trusting that, and fails if it moves. */
static size_t lens_offset(const char *buf, size_t hdr, const struct eh_event *ev)
{
	for (size_t off = 0; off + 4 * EH_F_COUNT <= hdr; off += 4) {
		int ok = 1;

		for (int i = 0; i < EH_F_COUNT && ok; i++) {
			uint32_t v;

			memcpy(&v, buf + off + 4 * (size_t)i, 4);
			ok = v == ev->f[i].len;
		}
		if (ok)
			return off;
	}
	ck_abort_msg("length array not found in the packed header");
	return 0;
}

START_TEST(event_malformed_rejected)
{
	static const char cid[] = "client-1";
	struct eh_event ev, back, empty;
	size_t len, hdr, off;
	char *buf, *copy;
	uint32_t v;

	memset(&empty, 0, sizeof(empty));
	hdr = eh_event_packed_size(&empty);
	fill_event(&ev, EH_EV_SUBSCRIBE, cid, sizeof(cid) - 1);
	/* Distinct lengths so the search above is unambiguous. */
	ev.f[EH_F_PAYLOAD].len = 0;
	buf = pack(&ev, &len);
	off = lens_offset(buf, hdr, &ev);

	/* Truncated anywhere: header or strings. */
	for (size_t cut = 0; cut < len; cut++) {
		copy = malloc(cut ? cut : 1);
		memcpy(copy, buf, cut);
		ck_assert_int_eq(eh_event_unpack(copy, cut, &back), -1);
		free(copy);
	}
	/* Trailing bytes the lengths do not account for. */
	copy = malloc(len + 1);
	memcpy(copy, buf, len);
	copy[len] = 'x';
	ck_assert_int_eq(eh_event_unpack(copy, len + 1, &back), -1);
	free(copy);

	/* Lengths that overflow the record, alone and in sum. */
	copy = malloc(len);
	for (int i = 0; i < EH_F_COUNT; i++) {
		memcpy(copy, buf, len);
		v = UINT32_MAX;
		memcpy(copy + off + 4 * (size_t)i, &v, 4);
		ck_assert_int_eq(eh_event_unpack(copy, len, &back), -1);
		memcpy(copy, buf, len);
		v = ev.f[i].len + 1;
		memcpy(copy + off + 4 * (size_t)i, &v, 4);
		ck_assert_int_eq(eh_event_unpack(copy, len, &back), -1);
	}
	memcpy(copy, buf, len);
	for (int i = 0; i < EH_F_COUNT; i++) {
		v = 0x40000000u;
		memcpy(copy + off + 4 * (size_t)i, &v, 4);
	}
	ck_assert_int_eq(eh_event_unpack(copy, len, &back), -1);
	/* Lengths moved between fields but summing right are accepted. */
	memcpy(copy, buf, len);
	v = ev.f[EH_F_CLIENTID].len + ev.f[EH_F_USERNAME].len;
	memcpy(copy + off, &v, 4);
	v = 0;
	memcpy(copy + off + 4, &v, 4);
	ck_assert_int_eq(eh_event_unpack(copy, len, &back), 0);
	ck_assert_uint_eq(back.f[EH_F_USERNAME].len, 0);
	free(copy);
	free(buf);

	/* An unknown type. */
	fill_event(&ev, EH_EV_COUNT, cid, sizeof(cid) - 1);
	buf = pack(&ev, &len);
	ck_assert_int_eq(eh_event_unpack(buf, len, &back), -1);
	free(buf);
	fill_event(&ev, 255, cid, sizeof(cid) - 1);
	buf = pack(&ev, &len);
	ck_assert_int_eq(eh_event_unpack(buf, len, &back), -1);
	free(buf);
}
END_TEST

/* A publish cut to its first bytes: the record holds only those, the
 * header is no larger, and the full size comes back. */
START_TEST(event_round_trip_truncated_publish)
{
	static const char cid[] = "client-1";
	struct eh_event ev, back, whole;
	size_t len, whole_len;
	char *buf;

	fill_event(&whole, EH_EV_PUBLISH, cid, sizeof(cid) - 1);
	whole.payload_size = 0;
	whole.f[EH_F_PAYLOAD].len = 3;
	ev = whole;
	ev.payload_size = 70000;
	free(pack(&whole, &whole_len));
	buf = pack(&ev, &len);
	ck_assert_uint_eq(len, whole_len);
	ck_assert_int_eq(eh_event_unpack(buf, len, &back), 0);
	assert_same(&ev, &back);
	ck_assert_uint_eq(back.f[EH_F_PAYLOAD].len, 3);
	ck_assert_uint_eq(eh_event_payload_size(&back), 70000);
	ck_assert(eh_event_payload_truncated(&back));
	free(buf);

	/* Nothing kept (payload_max_bytes 0) of the largest MQTT payload. */
	ev.f[EH_F_PAYLOAD] = (struct eh_bytes){ NULL, 0 };
	ev.payload_size = 268435455;
	buf = pack(&ev, &len);
	ck_assert_int_eq(eh_event_unpack(buf, len, &back), 0);
	ck_assert_uint_eq(back.f[EH_F_PAYLOAD].len, 0);
	ck_assert_uint_eq(eh_event_payload_size(&back), 268435455);
	ck_assert(eh_event_payload_truncated(&back));
	free(buf);

	/* Not cut: the size is the bytes' length, whether the producer set
	 * payload_size to it or left it 0. */
	ck_assert_uint_eq(eh_event_payload_size(&whole), 3);
	ck_assert(!eh_event_payload_truncated(&whole));
	whole.payload_size = 3;
	ck_assert_uint_eq(eh_event_payload_size(&whole), 3);
	ck_assert(!eh_event_payload_truncated(&whole));
}
END_TEST

/* The type's 64-bit slot holds a size for a publish: one that no uint32_t
 * holds is refused; for other types any value is a duration. */
START_TEST(event_publish_size_out_of_range_rejected)
{
	static const char cid[] = "client-1";
	const int64_t bad[] = { -1, INT64_MIN, (int64_t)UINT32_MAX + 1, INT64_MAX };
	struct eh_event ev, back;
	size_t len, off = 0;
	char *buf;
	int64_t v;

	fill_event(&ev, EH_EV_PUBLISH, cid, sizeof(cid) - 1);
	ev.payload_size = 0x0a0b0c0du;
	buf = pack(&ev, &len);
	/* Found by value, like the length array above. */
	for (v = 0; off + 8 <= len; off += 8) {
		memcpy(&v, buf + off, 8);
		if (v == 0x0a0b0c0d)
			break;
	}
	ck_assert_int_eq(v, 0x0a0b0c0d);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(buf + off, &bad[i], 8);
		ck_assert_int_eq(eh_event_unpack(buf, len, &back), -1);
	}
	v = UINT32_MAX;
	memcpy(buf + off, &v, 8);
	ck_assert_int_eq(eh_event_unpack(buf, len, &back), 0);
	ck_assert_uint_eq(back.payload_size, UINT32_MAX);
	free(buf);

	/* In a disconnection the slot is a duration, negative values too. */
	fill_event(&ev, EH_EV_DISCONNECTED, cid, sizeof(cid) - 1);
	ev.connected_ms = -1;
	buf = pack(&ev, &len);
	ck_assert_int_eq(eh_event_unpack(buf, len, &back), 0);
	ck_assert_int_eq(back.connected_ms, -1);
	free(buf);
}
END_TEST

START_TEST(event_names)
{
	ck_assert_str_eq(eh_event_type_name(EH_EV_CONNECT), "client.connect");
	ck_assert_str_eq(eh_event_type_name(EH_EV_PUBLISH), "message.publish");
	ck_assert_str_eq(eh_event_type_name(EH_EV_COUNT), "unknown");
	ck_assert_str_eq(eh_event_type_name(1000), "unknown");
	ck_assert_int_eq(eh_event_type_from_name("client.connect", 14), EH_EV_CONNECT);
	/* Exact names only: prefixes and longer strings are not types. */
	ck_assert_int_eq(eh_event_type_from_name("client.connect", 13), -1);
	ck_assert_int_eq(eh_event_type_from_name("client.connectx", 15), -1);
	ck_assert_int_eq(eh_event_type_from_name("", 0), -1);
	ck_assert_int_eq(eh_event_type_from_name("client.*", 8), -1);
	for (unsigned r = 1; r < EH_REASON_COUNT; r++) {
		const char *name = eh_reason_name(r);

		ck_assert(name[0]);
		for (const char *p = name; *p; p++)
			ck_assert((*p >= 'a' && *p <= 'z') || *p == '_');
		for (unsigned k = 1; k < r; k++)
			ck_assert_str_ne(eh_reason_name(k), name);
	}
	ck_assert_str_eq(eh_reason_name(EH_REASON_NONE), "");
	ck_assert_str_eq(eh_reason_name(EH_REASON_COUNT), "unknown");
	ck_assert_str_eq(eh_reason_name(EH_REASON_NORMAL), "normal_disconnection");
	ck_assert_str_eq(eh_reason_name(EH_REASON_PAYLOAD_TOO_LARGE), "packet_too_large");
}
END_TEST

/* Every field at every length up to 40 bytes (pack copies short strings
 * inline, by size class), each next to the others, with no byte
 * of one landing in another. */
START_TEST(event_round_trip_every_short_length)
{
	char src[EH_F_COUNT][40];

	for (int i = 0; i < EH_F_COUNT; i++)
		for (int j = 0; j < 40; j++)
			src[i][j] = (char)(i * 64 + j + 1);
	for (uint32_t n = 0; n <= 40; n++) {
		for (int field = 0; field < EH_F_COUNT; field++) {
			struct eh_event ev, back;
			size_t len;
			char *buf;

			fill_event(&ev, EH_EV_PUBLISH, "id", 2);
			ev.f[field] = (struct eh_bytes){ n ? src[field] + 40 - n : NULL, n };
			/* Its neighbours at a length of another size class. */
			if (field > 0)
				ev.f[field - 1] = (struct eh_bytes){ src[field - 1], (n * 7 + 3) % 41 };
			if (field + 1 < EH_F_COUNT)
				ev.f[field + 1] = (struct eh_bytes){ src[field + 1], (n * 11 + 5) % 41 };
			buf = pack(&ev, &len);
			ck_assert_int_eq(eh_event_unpack(buf, len, &back), 0);
			assert_same(&ev, &back);
			free(buf);
		}
	}
}
END_TEST

static Suite *event_suite(void)
{
	Suite *s = suite_create("event");
	TCase *tc = tcase_create("pack");

	tcase_add_test(tc, event_round_trip_every_type);
	tcase_add_test(tc, event_round_trip_empty_and_large);
	tcase_add_test(tc, event_round_trip_every_short_length);
	tcase_add_test(tc, event_malformed_rejected);
	tcase_add_test(tc, event_round_trip_truncated_publish);
	tcase_add_test(tc, event_publish_size_out_of_range_rejected);
	tcase_add_test(tc, event_names);
	suite_add_tcase(s, tc);
	return s;
}
EH_UNIT_SUITE(event_suite)
