/*
 * Fuzz target: the JSON encoder fed arbitrary client data. The input is
 * first tried as a packed record (eh_event_unpack must reject or accept
 * without reading past it); otherwise an event is built from it: 24 header
 * bytes, then the five strings split at lengths taken from the header.
 * Invariants: the event and its CloudEvents envelope always dump to JSON
 * that parses back; each string field is the input when it is valid UTF-8,
 * and otherwise its _b64 twin decodes to the input bytes; a publish's
 * payload_size is the size sent, payload_truncated present exactly when
 * that exceeds the bytes carried.
 */
#include <string.h>

#include "eh_json.h"
#include "fuzz.h"

static int b64_value(char c)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *p = c ? strchr(tab, c) : NULL;

	return p ? (int)(p - tab) : -1;
}

/* Decodes standard padded base64; returns the length or -1. */
static long b64_decode(const char *s, unsigned char *out)
{
	size_t len = strlen(s), n = 0;

	if (len % 4)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		int a = b64_value(s[i]), b = b64_value(s[i + 1]);
		int c = s[i + 2] == '=' ? 0 : b64_value(s[i + 2]);
		int d = s[i + 3] == '=' ? 0 : b64_value(s[i + 3]);

		if (a < 0 || b < 0 || c < 0 || d < 0)
			return -1;
		out[n++] = (unsigned char)(a << 2 | b >> 4);
		if (s[i + 2] != '=')
			out[n++] = (unsigned char)(b << 4 | c >> 2);
		if (s[i + 3] != '=')
			out[n++] = (unsigned char)(c << 6 | d);
	}
	return (long)n;
}

static void check_field(json_t *obj, const char *key, const struct eh_bytes *b)
{
	json_t *j = json_object_get(obj, key);
	char b64key[32];
	json_t *raw;

	FUZZ_CHECK(json_is_string(j));
	snprintf(b64key, sizeof(b64key), "%s_b64", key);
	raw = json_object_get(obj, b64key);
	if (eh_utf8_valid_prefix(b->ptr, b->len) == b->len) {
		FUZZ_CHECK(!raw);
		FUZZ_CHECK(json_string_length(j) == b->len);
		FUZZ_CHECK(!b->len || !memcmp(json_string_value(j), b->ptr, b->len));
	} else {
		unsigned char *dec = malloc(b->len + 3);

		FUZZ_CHECK(json_is_string(raw));
		FUZZ_CHECK(dec && b64_decode(json_string_value(raw), dec) == (long)b->len);
		FUZZ_CHECK(!memcmp(dec, b->ptr, b->len));
		free(dec);
		FUZZ_CHECK(eh_utf8_valid_prefix(json_string_value(j), json_string_length(j)) == json_string_length(j));
	}
}

static void encode(const struct eh_event *ev)
{
	static struct eh_node node;
	json_t *objs[2];

	if (!node.name[0] && eh_node_init(&node, "fuzz-node", 0x1234, NULL, 0))
		abort();
	objs[0] = eh_json_event(ev, &node);
	objs[1] = eh_json_cloudevent(ev, &node);

	for (int k = 0; k < 2; k++) {
		json_error_t jerr;
		json_t *back, *o;
		char *text;

		FUZZ_CHECK(objs[k]);
		text = json_dumps(objs[k], JSON_COMPACT);
		FUZZ_CHECK(text);
		{
			/* The sinks' direct writer must give exactly these bytes,
			 * also after up to 511 bytes already in its buffer (so that
			 * it grows at another point of the event). */
			static const char pad[512];
			size_t padlen = (ev->number ^ ev->seq) % sizeof(pad);
			struct eh_buf w = { 0 };

			FUZZ_CHECK(eh_buf_append(&w, pad, padlen) == 0);
			FUZZ_CHECK((k ? eh_json_write_cloudevent(&w, ev, &node) : eh_json_write_event(&w, ev, &node)) == 0);
			FUZZ_CHECK(w.len - padlen == strlen(text) && !memcmp(w.data + padlen, text, w.len - padlen));
			FUZZ_CHECK(w.data[w.len] == '\0');
			eh_buf_free(&w);
		}
		back = json_loads(text, JSON_ALLOW_NUL, &jerr);
		FUZZ_CHECK(back);
		FUZZ_CHECK(json_equal(back, objs[k]));
		o = k ? json_object_get(back, "data") : back;
		FUZZ_CHECK(json_is_object(o));
		check_field(o, "clientid", &ev->f[EH_F_CLIENTID]);
		check_field(o, "peer", &ev->f[EH_F_PEER]);
		if (ev->flags & EH_EVF_HAS_USERNAME)
			check_field(o, "username", &ev->f[EH_F_USERNAME]);
		if (EH_EV_BIT(ev->type) & EH_EV_MASK_TOPIC)
			check_field(o, "topic", &ev->f[EH_F_TOPIC]);
		if (ev->type == EH_EV_PUBLISH) {
			FUZZ_CHECK(json_integer_value(json_object_get(o, "payload_size"))
				   == (json_int_t)eh_event_payload_size(ev));
			FUZZ_CHECK(json_integer_value(json_object_get(o, "payload_size"))
				   >= (json_int_t)ev->f[EH_F_PAYLOAD].len);
			FUZZ_CHECK(json_is_true(json_object_get(o, "payload_truncated")) == eh_event_payload_truncated(ev));
			FUZZ_CHECK(json_object_get(o, "payload_truncated") == NULL || eh_event_payload_truncated(ev));
		}
		json_decref(back);
		free(text);
		json_decref(objs[k]);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct eh_event ev;
	const char *rest;
	size_t left;

	if (!eh_event_unpack(data, size, &ev)) {
		encode(&ev);
		return 0;
	}
	if (size < 24)
		return 0;
	memset(&ev, 0, sizeof(ev));
	memcpy(&ev.number, data, 8);
	memcpy(&ev.ts_ms, data + 8, 8);
	ev.type = (uint8_t)(data[16] % EH_EV_COUNT);
	ev.flags = (uint16_t)(data[17] | data[18] << 8);
	ev.reason = (uint8_t)(data[19] % (EH_REASON_COUNT + 2));
	ev.action = (uint8_t)(data[20] % 3);
	ev.qos = data[21];
	ev.proto_ver = data[22];
	/* For a publish the same slot is payload_size: cut by payload_max_bytes
	 * when it exceeds the payload's bytes. */
	ev.connected_ms = (int64_t)data[23] * 1000;
	ev.seq = ev.number >> 3;
	rest = (const char *)data + 24;
	left = size - 24;
	/* Field i gets a share of the rest chosen by header byte i. */
	for (int i = 0; i < EH_F_COUNT; i++) {
		size_t len = i == EH_F_COUNT - 1 ? left : (left * data[i]) / 255;

		ev.f[i] = (struct eh_bytes){ rest, (uint32_t)len };
		rest += len;
		left -= len;
	}
	encode(&ev);
	return 0;
}
