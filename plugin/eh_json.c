/*
 * eh_json: event objects. Field order follows docs/events.md: the common
 * fields first, then the type's own fields. jansson keeps insertion order.
 */
#include "eh_json.h"

#include <endian.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

size_t eh_utf8_valid_prefix(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < len) {
		size_t n;

		/* Client ids, topics and the like are mostly ASCII: eight bytes
		 * without a high bit at a time (memcpy: any alignment, no
		 * aliasing question). */
		if (len - i >= 8) {
			uint64_t v;

			memcpy(&v, s + i, 8);
			if (!(v & 0x8080808080808080ull)) {
				i += 8;
				continue;
			}
		}
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		n = eh_utf8_sequence_len(s + i, len - i);
		if (!n)
			return i;
		i += n;
	}
	return len;
}

json_t *eh_json_string_bytes(const char *ptr, size_t len, int *replaced)
{
	static const char fffd[] = "\xEF\xBF\xBD";
	size_t ok = eh_utf8_valid_prefix(ptr, len);
	char *buf, *at;
	json_t *j;

	if (replaced)
		*replaced = 0;
	if (ok == len)
		return json_stringn(ptr ? ptr : "", len);
	if (replaced)
		*replaced = 1;
	/* Worst case every byte becomes three. */
	buf = malloc(len * 3 + 1);
	if (!buf)
		return NULL;
	at = buf;
	while (len) {
		memcpy(at, ptr, ok);
		at += ok;
		ptr += ok;
		len -= ok;
		if (!len)
			break;
		memcpy(at, fffd, 3);
		at += 3;
		ptr++;
		len--;
		ok = eh_utf8_valid_prefix(ptr, len);
	}
	j = json_stringn(buf, (size_t)(at - buf));
	free(buf);
	return j;
}

/* The base64 alphabet, and every pair of its characters: the two output
 * characters of 12 input bits in one lookup (8 KB, built by the
 * preprocessor). */
#define B64_ALPHABET "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
#define B64_ROW(c) c "A" c "B" c "C" c "D" c "E" c "F" c "G" c "H" c "I" c "J" c "K" c "L" c "M" c "N" c "O" \
	c "P" c "Q" c "R" c "S" c "T" c "U" c "V" c "W" c "X" c "Y" c "Z" c "a" c "b" c "c" c "d" c "e" c "f"   \
	c "g" c "h" c "i" c "j" c "k" c "l" c "m" c "n" c "o" c "p" c "q" c "r" c "s" c "t" c "u" c "v" c "w"   \
	c "x" c "y" c "z" c "0" c "1" c "2" c "3" c "4" c "5" c "6" c "7" c "8" c "9" c "+" c "/"
static const char b64_pairs[] = B64_ROW("A") B64_ROW("B") B64_ROW("C") B64_ROW("D") B64_ROW("E") B64_ROW("F")
	B64_ROW("G") B64_ROW("H") B64_ROW("I") B64_ROW("J") B64_ROW("K") B64_ROW("L") B64_ROW("M") B64_ROW("N")
	B64_ROW("O") B64_ROW("P") B64_ROW("Q") B64_ROW("R") B64_ROW("S") B64_ROW("T") B64_ROW("U") B64_ROW("V")
	B64_ROW("W") B64_ROW("X") B64_ROW("Y") B64_ROW("Z") B64_ROW("a") B64_ROW("b") B64_ROW("c") B64_ROW("d")
	B64_ROW("e") B64_ROW("f") B64_ROW("g") B64_ROW("h") B64_ROW("i") B64_ROW("j") B64_ROW("k") B64_ROW("l")
	B64_ROW("m") B64_ROW("n") B64_ROW("o") B64_ROW("p") B64_ROW("q") B64_ROW("r") B64_ROW("s") B64_ROW("t")
	B64_ROW("u") B64_ROW("v") B64_ROW("w") B64_ROW("x") B64_ROW("y") B64_ROW("z") B64_ROW("0") B64_ROW("1")
	B64_ROW("2") B64_ROW("3") B64_ROW("4") B64_ROW("5") B64_ROW("6") B64_ROW("7") B64_ROW("8") B64_ROW("9")
	B64_ROW("+") B64_ROW("/");

void eh_base64_encode(const void *in, size_t len, char *out)
{
	static const char tab[] = B64_ALPHABET;
	const unsigned char *s = in;
	size_t i = 0;

	/* Six bytes per step while eight can be read: one load, taken as a
	 * big-endian number so that its first 48 bits are the six bytes in
	 * order, then four pairs. */
	for (; len >= 8 && i <= len - 8; i += 6) {
		uint64_t v;

		memcpy(&v, s + i, 8);
		v = be64toh(v);
		memcpy(out, b64_pairs + 2 * (v >> 52), 2);
		memcpy(out + 2, b64_pairs + 2 * ((v >> 40) & 0xFFF), 2);
		memcpy(out + 4, b64_pairs + 2 * ((v >> 28) & 0xFFF), 2);
		memcpy(out + 6, b64_pairs + 2 * ((v >> 16) & 0xFFF), 2);
		out += 8;
	}
	/* Each group is read once into a local (out may alias the input, so
	 * s[i] read again after a store would be loaded again) and goes out
	 * as two pairs. */
	for (; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];

		memcpy(out, b64_pairs + 2 * (v >> 12), 2);
		memcpy(out + 2, b64_pairs + 2 * (v & 0xFFF), 2);
		out += 4;
	}
	if (i < len) {
		uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < len ? (uint32_t)s[i + 1] << 8 : 0);

		out[0] = tab[v >> 18];
		out[1] = tab[(v >> 12) & 63];
		out[2] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
		out[3] = '=';
		out += 4;
	}
	*out = '\0';
}

/* "00" to "ff": two hex digits per lookup. */
#define HEX_ROW(h) h "0" h "1" h "2" h "3" h "4" h "5" h "6" h "7" h "8" h "9" h "a" h "b" h "c" h "d" h "e" h "f"
static const char hex_pairs[] = HEX_ROW("0") HEX_ROW("1") HEX_ROW("2") HEX_ROW("3") HEX_ROW("4") HEX_ROW("5")
	HEX_ROW("6") HEX_ROW("7") HEX_ROW("8") HEX_ROW("9") HEX_ROW("a") HEX_ROW("b") HEX_ROW("c") HEX_ROW("d")
	HEX_ROW("e") HEX_ROW("f");

/* Lower-case hex of the low digits*4 bits of v (digits even), most
 * significant first. */
static char *put_hex(char *out, uint64_t v, int digits)
{
	for (int i = digits - 2; i >= 0; i -= 2) {
		memcpy(out + i, hex_pairs + 2 * (v & 0xFF), 2);
		v >>= 8;
	}
	return out + digits;
}

int eh_node_init(struct eh_node *node, const char *name, uint64_t instance, char *why, size_t whylen)
{
	/* Version 8 (custom) UUID: 64 random bits per instance (under the
	 * version nibble), then the 62-bit event number under the RFC 4122
	 * variant bits (eh_json_format_id). */
	uint64_t hi = (instance & ~(uint64_t)0xF000) | 0x8000;
	size_t len = strlen(name), valid;
	json_t *j;
	char *text, *p;

	memset(node, 0, sizeof(*node));
	if (len > EH_NODE_NAME_MAX) {
		snprintf(why, whylen, "longer than %d bytes", EH_NODE_NAME_MAX);
		return -1;
	}
	valid = eh_utf8_valid_prefix(name, len);
	if (valid != len) {
		/* The name itself is not echoed: its bytes are what is invalid. */
		snprintf(why, whylen, "not valid UTF-8 (at byte %zu)", valid);
		return -1;
	}
	memcpy(node->name, name, len + 1);
	node->instance = instance;
	p = put_hex(node->id_head, hi >> 32, 8);
	*p++ = '-';
	p = put_hex(p, hi >> 16, 4);
	*p++ = '-';
	p = put_hex(p, hi, 4);
	*p = '-';
	/* jansson's escaping is the schema's (eh_json_write matches it). */
	j = json_string(name);
	text = j ? eh_json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
	json_decref(j);
	if (!text) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	node->name_json_len = strlen(text);
	if (node->name_json_len >= sizeof(node->name_json)) {
		/* Cannot happen: every escape fits the 6 bytes allowed per byte. */
		free(text);
		snprintf(why, whylen, "too long once escaped");
		return -1;
	}
	memcpy(node->name_json, text, node->name_json_len + 1);
	free(text);
	return 0;
}

char *eh_json_dumps(const json_t *json, size_t flags)
{
	/* First the size, then the text straight into our own buffer. */
	size_t n = json_dumpb(json, NULL, 0, flags);
	char *text = n ? malloc(n + 1) : NULL;

	if (!text || json_dumpb(json, text, n, flags) != n) {
		free(text);
		return NULL;
	}
	text[n] = '\0';
	return text;
}

/* Every sink formats an id and a timestamp per event: digits are written
 * by hand here because snprintf's format parsing cost more than the rest
 * of the event's JSON. */
void eh_json_format_id(const struct eh_node *node, uint64_t number, char *out)
{
	uint64_t lo = (number & 0x3FFFFFFFFFFFFFFFull) | 0x8000000000000000ull;
	char *p;

	memcpy(out, node->id_head, EH_ID_HEAD_LEN);
	p = put_hex(out + EH_ID_HEAD_LEN, lo >> 48, 4);
	*p++ = '-';
	p = put_hex(p, lo, 12);
	*p = '\0';
}

/* The instants RFC 3339 can write: years 0000 to 9999. */
#define TS_MIN_MS (-62167219200000LL) /* 0000-01-01T00:00:00.000Z */
#define TS_MAX_MS 253402300799999LL   /* 9999-12-31T23:59:59.999Z */

static void put_dec(char *out, int v, int digits)
{
	for (int i = digits - 1; i >= 0; i--) {
		out[i] = (char)('0' + v % 10);
		v /= 10;
	}
}

void eh_json_format_ts(int64_t ts_ms, char *out)
{
	/* Events come in bursts within one second: the date and time part is
	 * converted once per second per thread, not once per event. */
	static _Thread_local int64_t cached_secs = INT64_MIN;
	static _Thread_local char cached[20];
	int64_t secs;
	int ms;

	/* A clock that far off is broken; clamping keeps the field a valid
	 * timestamp instead of a wrapped year or a truncated negative one. */
	if (ts_ms < TS_MIN_MS)
		ts_ms = TS_MIN_MS;
	if (ts_ms > TS_MAX_MS)
		ts_ms = TS_MAX_MS;
	secs = ts_ms / 1000;
	ms = (int)(ts_ms % 1000);
	if (ms < 0) {
		ms += 1000;
		secs -= 1;
	}
	if (secs != cached_secs) {
		time_t t = (time_t)secs;
		struct tm tm;

		gmtime_r(&t, &tm);
		put_dec(cached, tm.tm_year + 1900, 4);
		cached[4] = '-';
		put_dec(cached + 5, tm.tm_mon + 1, 2);
		cached[7] = '-';
		put_dec(cached + 8, tm.tm_mday, 2);
		cached[10] = 'T';
		put_dec(cached + 11, tm.tm_hour, 2);
		cached[13] = ':';
		put_dec(cached + 14, tm.tm_min, 2);
		cached[16] = ':';
		put_dec(cached + 17, tm.tm_sec, 2);
		cached[19] = '.';
		cached_secs = secs;
	}
	memcpy(out, cached, 20);
	put_dec(out + 20, ms, 3);
	out[23] = 'Z';
	out[EH_TS_LEN] = '\0';
}

static int set_new(json_t *obj, const char *key, json_t *val)
{
	return val ? json_object_set_new(obj, key, val) : -1;
}

static json_t *b64_string(const char *ptr, size_t len)
{
	char *buf = malloc(eh_base64_len(len) + 1);
	json_t *j;

	if (!buf)
		return NULL;
	eh_base64_encode(ptr, len, buf);
	j = json_string(buf);
	free(buf);
	return j;
}

/* A client-supplied string: valid UTF-8 as is, otherwise replaced plus the
 * raw bytes in "<key>_b64". */
static int set_bytes(json_t *obj, const char *key, const struct eh_bytes *b)
{
	int replaced = 0;
	char raw_key[32];

	if (set_new(obj, key, eh_json_string_bytes(b->ptr, b->len, &replaced)))
		return -1;
	if (!replaced)
		return 0;
	snprintf(raw_key, sizeof(raw_key), "%s_b64", key);
	return set_new(obj, raw_key, b64_string(b->ptr, b->len));
}

json_t *eh_json_event(const struct eh_event *ev, const struct eh_node *node)
{
	json_t *o = json_object();
	char id[EH_ID_LEN + 1], ts[EH_TS_LEN + 1];
	int rc = 0;

	if (!o)
		return NULL;
	eh_json_format_id(node, ev->number, id);
	eh_json_format_ts(ev->ts_ms, ts);
	rc |= set_new(o, "event", json_string(eh_event_type_name(ev->type)));
	rc |= set_new(o, "id", json_string(id));
	rc |= set_new(o, "ts", json_string(ts));
	rc |= set_new(o, "node", json_string(node->name));
	rc |= set_new(o, "seq", json_integer((json_int_t)ev->seq));
	rc |= set_bytes(o, "clientid", &ev->f[EH_F_CLIENTID]);
	if (ev->flags & EH_EVF_HAS_USERNAME)
		rc |= set_bytes(o, "username", &ev->f[EH_F_USERNAME]);
	rc |= set_bytes(o, "peer", &ev->f[EH_F_PEER]);
	rc |= set_new(o, "protocol", json_string(ev->flags & EH_EVF_WEBSOCKETS ? "websockets" : "mqtt"));
	if (ev->proto_ver)
		rc |= set_new(o, "proto_ver", json_integer(ev->proto_ver));

	switch (ev->type) {
	case EH_EV_CONNECT:
	case EH_EV_CONNECTED:
		rc |= set_new(o, "keepalive", json_integer(ev->keepalive));
		rc |= set_new(o, "clean_start", json_boolean(ev->flags & EH_EVF_CLEAN_START));
		if (ev->flags & EH_EVF_INFERRED)
			rc |= set_new(o, "inferred", json_true());
		break;
	case EH_EV_CONNECT_FAILED:
		if (ev->reason != EH_REASON_NONE)
			rc |= set_new(o, "reason", json_string(eh_reason_name(ev->reason)));
		break;
	case EH_EV_DISCONNECTED:
		rc |= set_new(o, "reason", json_string(eh_reason_name(ev->reason ? ev->reason : EH_REASON_UNKNOWN)));
		if (ev->flags & EH_EVF_HAS_CONNECTED_MS)
			rc |= set_new(o, "connected_ms", json_integer(ev->connected_ms));
		break;
	case EH_EV_SUBSCRIBE:
		rc |= set_bytes(o, "topic", &ev->f[EH_F_TOPIC]);
		rc |= set_new(o, "qos", json_integer(ev->qos));
		if (ev->flags & EH_EVF_GRANTED_KNOWN)
			rc |= set_new(o, "granted", json_boolean(ev->flags & EH_EVF_GRANTED));
		break;
	case EH_EV_UNSUBSCRIBE:
		rc |= set_bytes(o, "topic", &ev->f[EH_F_TOPIC]);
		break;
	case EH_EV_AUTHZ_DENIED:
		rc |= set_new(o, "action", json_string(ev->action == EH_ACTION_SUBSCRIBE ? "subscribe" : "publish"));
		rc |= set_bytes(o, "topic", &ev->f[EH_F_TOPIC]);
		rc |= set_new(o, "qos", json_integer(ev->qos));
		if (ev->action == EH_ACTION_PUBLISH)
			rc |= set_new(o, "retain", json_boolean(ev->flags & EH_EVF_RETAIN));
		break;
	case EH_EV_PUBLISH:
		rc |= set_bytes(o, "topic", &ev->f[EH_F_TOPIC]);
		rc |= set_new(o, "qos", json_integer(ev->qos));
		rc |= set_new(o, "retain", json_boolean(ev->flags & EH_EVF_RETAIN));
		rc |= set_new(o, "payload", b64_string(ev->f[EH_F_PAYLOAD].ptr, ev->f[EH_F_PAYLOAD].len));
		rc |= set_new(o, "payload_size", json_integer(eh_event_payload_size(ev)));
		if (eh_event_payload_truncated(ev))
			rc |= set_new(o, "payload_truncated", json_true());
		break;
	default:
		break;
	}
	if (rc) {
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *eh_json_cloudevent(const struct eh_event *ev, const struct eh_node *node)
{
	json_t *data = eh_json_event(ev, node);
	json_t *o;
	char id[EH_ID_LEN + 1], ts[EH_TS_LEN + 1];
	int rc = 0;

	if (!data)
		return NULL;
	o = json_object();
	if (!o) {
		json_decref(data);
		return NULL;
	}
	eh_json_format_id(node, ev->number, id);
	eh_json_format_ts(ev->ts_ms, ts);
	rc |= set_new(o, "specversion", json_string("1.0"));
	rc |= set_new(o, "type", json_string(eh_event_type_name(ev->type)));
	rc |= set_new(o, "source", json_string(node->name));
	rc |= set_new(o, "id", json_string(id));
	rc |= set_new(o, "time", json_string(ts));
	rc |= set_new(o, "datacontenttype", json_string("application/json"));
	rc |= set_new(o, "data", data);
	if (rc) {
		json_decref(o);
		return NULL;
	}
	return o;
}
