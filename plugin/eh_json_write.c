/*
 * eh_json_write: the event as compact JSON text written straight into a
 * reusable buffer. Sinks serialise every event they deliver, and building a
 * jansson object tree per event (an allocation per field, then a dump) cost
 * several microseconds each; this writes the same bytes in a fraction of
 * that. The output is byte-for-byte json_dumps(eh_json_event(), JSON_COMPACT)
 * (field order, escaping, U+FFFD replacement and the "_b64" siblings), which
 * test_json_write.c checks on generated and hostile events, so the schema
 * has one definition: eh_json_event in eh_json.c.
 *
 * It runs once per delivered event on every sink thread, so it is written
 * for instructions: keys are literals, the id and timestamp are formatted
 * in place, and each client string is validated, repaired and escaped in
 * one pass that moves eight plain bytes at a time (put_string).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "eh_json.h"

static int reserve(struct eh_buf *b, size_t more)
{
	size_t cap;
	char *grown;

	if (b->len + more + 1 <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 512;
	while (cap < b->len + more + 1)
		cap *= 2;
	grown = realloc(b->data, cap);
	if (!grown)
		return -1;
	b->data = grown;
	b->cap = cap;
	return 0;
}

/* Appends without terminating: the public functions write the one NUL at
 * the end (reserve always keeps room for it). */
static inline int append(struct eh_buf *b, const char *s, size_t n)
{
	if (reserve(b, n))
		return -1;
	memcpy(b->data + b->len, s, n);
	b->len += n;
	return 0;
}

/* Keys, separators and constant values: literals, whose length the
 * compiler knows, so that the copy is a few moves and there is no strlen. */
#define LIT(s) (s), sizeof(s) - 1
#define KEY(name) LIT(",\"" name "\":")
/* A client field's key and the key of its base64 twin. */
#define KEYS(name) KEY(name), KEY(name "_b64")

int eh_buf_append(struct eh_buf *b, const char *s, size_t n)
{
	if (append(b, s, n))
		return -1;
	b->data[b->len] = '\0';
	return 0;
}

void eh_buf_free(struct eh_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* Bytes that go out as they are: 0x20..0x7F except '"' and '\\'. 0x7F
 * needs no escape in JSON and jansson leaves it alone. */
static const unsigned char plain[256] = {
	[0x20] = 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x22 '"' */
	[0x30] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	[0x40] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	[0x50] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x5C '\\' */
	[0x60] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	[0x70] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* The 8 bytes at p as one word: memcpy is well defined at any alignment
 * and for any object type, and compiles to a single load. */
static inline uint64_t load8(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

/*
 * Nonzero when one of the 8 bytes of v is not plain: a control (< 0x20),
 * '"', '\\' or a byte >= 0x80 (UTF-8 to check, or copied as is). A
 * subtraction sets a byte's high bit when it borrows: byte - 0x20 does for
 * a control, (byte ^ '"') - 1 for a quote. A borrow also spills into the
 * bytes above, so which byte it was is not known, but whether there is
 * one is exact: every byte below the lowest byte that needs care is plain
 * and lends nothing, so that byte's own borrow shows, and with no such
 * byte nothing borrows at all. "Below" is by place in the number, so
 * byte order in memory does not matter.
 */
static inline uint64_t needs_care(uint64_t v)
{
	return (v | (v - 0x20 * ONES) | ((v ^ ('"' * ONES)) - ONES) | ((v ^ ('\\' * ONES)) - ONES)) & HIGHS;
}

/*
 * A JSON string, escaped as jansson escapes it, in one pass. With replaced
 * NULL the bytes are ours (node name, names from tables) and non-ASCII goes
 * out as it is; otherwise they are a client's: each byte where no valid
 * UTF-8 sequence starts becomes U+FFFD and *replaced is set, exactly as
 * eh_json_string_bytes's repeated eh_utf8_valid_prefix does (the
 * replacement and every valid sequence are bytes >= 0x80, which need no
 * escape, so validating and escaping commute).
 *
 * Eight plain bytes are recognised and stored per step; only the bytes of
 * a word that needs care are looked at one by one. Room: n + 2 up front
 * covers a string that needs nothing, and at each escape or replacement
 * the rest is reserved again, so the buffer never grows by the 6x worst
 * case on ordinary input. Invariant: the room after out is at least the
 * input left plus the closing quote.
 */
static int put_string(struct eh_buf *b, const char *str, size_t n, int *replaced)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;
	char *out;

	if (reserve(b, n + 2))
		return -1;
	out = b->data + b->len;
	*out++ = '"';
	while (i < n) {
		size_t stop, len;
		uint64_t v;

		if (n - i >= 8) {
			v = load8(s + i);
			if (!needs_care(v)) {
				memcpy(out, &v, 8);
				out += 8;
				i += 8;
				continue;
			}
			stop = i + 8;
		} else {
			/* Fewer than 8 left: when the string's last 8 bytes are all
			 * plain, so is the rest, and the ones before i among them
			 * went out unchanged just before out: store all 8 over. */
			if (n >= 8 && !needs_care(v = load8(s + n - 8))) {
				memcpy(out - (i - (n - 8)), &v, 8);
				out += n - i;
				break;
			}
			stop = n;
		}
		/* One byte at a time to the end of the word that needed it (a
		 * UTF-8 sequence may run past), then words again. */
		while (i < stop) {
			unsigned char c = s[i];

			if (plain[c] || (c >= 0x80 && !replaced)) {
				*out++ = (char)c;
				i++;
				continue;
			}
			if (c >= 0x80 && (len = eh_utf8_sequence_len(s + i, n - i))) {
				do
					*out++ = (char)s[i++];
				while (--len);
				continue;
			}
			/* Room for the longest replacement (6 bytes for 1) and the
			 * rest; the buffer may move. */
			b->len = (size_t)(out - b->data);
			if (reserve(b, n - i + 6))
				return -1;
			out = b->data + b->len;
			i++;
			if (c >= 0x80) {
				memcpy(out, "\xEF\xBF\xBD", 3);
				out += 3;
				*replaced = 1;
				continue;
			}
			*out++ = '\\';
			switch (c) {
			case '"':
			case '\\':
				*out++ = (char)c;
				break;
			case '\b':
				*out++ = 'b';
				break;
			case '\f':
				*out++ = 'f';
				break;
			case '\n':
				*out++ = 'n';
				break;
			case '\r':
				*out++ = 'r';
				break;
			case '\t':
				*out++ = 't';
				break;
			default:
				memcpy(out, "u00", 3);
				out[3] = hex[c >> 4];
				out[4] = hex[c & 15];
				out += 5;
				break;
			}
		}
	}
	*out++ = '"';
	b->len = (size_t)(out - b->data);
	return 0;
}

static int put_base64(struct eh_buf *b, const char *s, size_t n)
{
	size_t len = eh_base64_len(n);

	if (reserve(b, len + 2))
		return -1;
	b->data[b->len++] = '"';
	eh_base64_encode(s, n, b->data + b->len);
	b->len += len;
	b->data[b->len++] = '"';
	return 0;
}

/* The id and the timestamp are formatted straight into the buffer: hex
 * digits, digits and punctuation, nothing to escape. */
static int put_id(struct eh_buf *b, const struct eh_node *node, uint64_t number)
{
	if (reserve(b, EH_ID_LEN + 2))
		return -1;
	b->data[b->len] = '"';
	eh_json_format_id(node, number, b->data + b->len + 1);
	b->data[b->len + 1 + EH_ID_LEN] = '"';
	b->len += EH_ID_LEN + 2;
	return 0;
}

static int put_ts(struct eh_buf *b, int64_t ts_ms)
{
	if (reserve(b, EH_TS_LEN + 2))
		return -1;
	b->data[b->len] = '"';
	eh_json_format_ts(ts_ms, b->data + b->len + 1);
	b->data[b->len + 1 + EH_TS_LEN] = '"';
	b->len += EH_TS_LEN + 2;
	return 0;
}

/* A name from one of our tables (event type, reason). */
static int put_name(struct eh_buf *b, const char *name)
{
	return put_string(b, name, strlen(name), NULL);
}

/* "00" to "99": two digits per division. */
#define DEC_ROW(d) d "0" d "1" d "2" d "3" d "4" d "5" d "6" d "7" d "8" d "9"
static const char dec_pairs[] = DEC_ROW("0") DEC_ROW("1") DEC_ROW("2") DEC_ROW("3") DEC_ROW("4") DEC_ROW("5")
	DEC_ROW("6") DEC_ROW("7") DEC_ROW("8") DEC_ROW("9");

/* Decimal digits of u. */
static inline size_t digits10(unsigned long long u)
{
	size_t n = 1;

	for (;;) {
		if (u < 10)
			return n;
		if (u < 100)
			return n + 1;
		if (u < 1000)
			return n + 2;
		if (u < 10000)
			return n + 3;
		u /= 10000;
		n += 4;
	}
}

/* Inline: with the key's length a constant at each call, its copy is a
 * few moves. The digits go straight into the buffer, last first. */
static inline int field_int(struct eh_buf *b, const char *k, size_t klen, long long v)
{
	/* By hand: snprintf's format parsing cost more than the digits. */
	unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
	size_t n = digits10(u) + (v < 0);
	char *p;

	if (reserve(b, klen + n))
		return -1;
	memcpy(b->data + b->len, k, klen);
	if (v < 0)
		b->data[b->len + klen] = '-';
	b->len += klen + n;
	p = b->data + b->len;
	while (u >= 100) {
		p -= 2;
		memcpy(p, dec_pairs + 2 * (u % 100), 2);
		u /= 100;
	}
	if (u >= 10)
		memcpy(p - 2, dec_pairs + 2 * u, 2);
	else
		p[-1] = (char)('0' + u);
	return 0;
}

static inline int field_bool(struct eh_buf *b, const char *k, size_t klen, int v)
{
	return append(b, k, klen) || (v ? append(b, LIT("true")) : append(b, LIT("false")));
}

static int field_bytes(struct eh_buf *b, const char *k, size_t klen, const char *k64, size_t k64len,
		       const struct eh_bytes *v)
{
	int replaced = 0;

	if (append(b, k, klen) || put_string(b, v->ptr, v->len, &replaced))
		return -1;
	if (!replaced)
		return 0;
	return append(b, k64, k64len) || put_base64(b, v->ptr, v->len);
}

/* The object without its terminating NUL (the callers write it). */
static int write_object(struct eh_buf *b, const struct eh_event *ev, const struct eh_node *node)
{
	int rc = 0;

	rc |= append(b, LIT("{\"event\":"));
	rc |= put_name(b, eh_event_type_name(ev->type));
	rc |= append(b, KEY("id")) || put_id(b, node, ev->number);
	rc |= append(b, KEY("ts")) || put_ts(b, ev->ts_ms);
	rc |= append(b, KEY("node")) || put_string(b, node->name, strlen(node->name), NULL);
	rc |= field_int(b, KEY("seq"), (long long)ev->seq);
	rc |= field_bytes(b, KEYS("clientid"), &ev->f[EH_F_CLIENTID]);
	if (ev->flags & EH_EVF_HAS_USERNAME)
		rc |= field_bytes(b, KEYS("username"), &ev->f[EH_F_USERNAME]);
	rc |= field_bytes(b, KEYS("peer"), &ev->f[EH_F_PEER]);
	rc |= ev->flags & EH_EVF_WEBSOCKETS ? append(b, LIT(",\"protocol\":\"websockets\""))
					    : append(b, LIT(",\"protocol\":\"mqtt\""));
	if (ev->proto_ver)
		rc |= field_int(b, KEY("proto_ver"), ev->proto_ver);
	switch (ev->type) {
	case EH_EV_CONNECT:
	case EH_EV_CONNECTED:
		rc |= field_int(b, KEY("keepalive"), ev->keepalive);
		rc |= field_bool(b, KEY("clean_start"), ev->flags & EH_EVF_CLEAN_START);
		if (ev->flags & EH_EVF_INFERRED)
			rc |= append(b, LIT(",\"inferred\":true"));
		break;
	case EH_EV_CONNECT_FAILED:
		if (ev->reason != EH_REASON_NONE)
			rc |= append(b, KEY("reason")) || put_name(b, eh_reason_name(ev->reason));
		break;
	case EH_EV_DISCONNECTED:
		rc |= append(b, KEY("reason"))
		      || put_name(b, eh_reason_name(ev->reason ? ev->reason : EH_REASON_UNKNOWN));
		if (ev->flags & EH_EVF_HAS_CONNECTED_MS)
			rc |= field_int(b, KEY("connected_ms"), (long long)ev->connected_ms);
		break;
	case EH_EV_SUBSCRIBE:
		rc |= field_bytes(b, KEYS("topic"), &ev->f[EH_F_TOPIC]);
		rc |= field_int(b, KEY("qos"), ev->qos);
		if (ev->flags & EH_EVF_GRANTED_KNOWN)
			rc |= field_bool(b, KEY("granted"), ev->flags & EH_EVF_GRANTED);
		break;
	case EH_EV_UNSUBSCRIBE:
		rc |= field_bytes(b, KEYS("topic"), &ev->f[EH_F_TOPIC]);
		break;
	case EH_EV_AUTHZ_DENIED:
		rc |= ev->action == EH_ACTION_SUBSCRIBE ? append(b, LIT(",\"action\":\"subscribe\""))
							: append(b, LIT(",\"action\":\"publish\""));
		rc |= field_bytes(b, KEYS("topic"), &ev->f[EH_F_TOPIC]);
		rc |= field_int(b, KEY("qos"), ev->qos);
		if (ev->action == EH_ACTION_PUBLISH)
			rc |= field_bool(b, KEY("retain"), ev->flags & EH_EVF_RETAIN);
		break;
	case EH_EV_PUBLISH:
		rc |= field_bytes(b, KEYS("topic"), &ev->f[EH_F_TOPIC]);
		rc |= field_int(b, KEY("qos"), ev->qos);
		rc |= field_bool(b, KEY("retain"), ev->flags & EH_EVF_RETAIN);
		rc |= append(b, KEY("payload")) || put_base64(b, ev->f[EH_F_PAYLOAD].ptr, ev->f[EH_F_PAYLOAD].len);
		rc |= field_int(b, KEY("payload_size"), eh_event_payload_size(ev));
		if (eh_event_payload_truncated(ev))
			rc |= append(b, LIT(",\"payload_truncated\":true"));
		break;
	default:
		break;
	}
	rc |= append(b, LIT("}"));
	return rc ? -1 : 0;
}

/* On failure the buffer is as it was, terminated where it was. */
static int finish(struct eh_buf *b, size_t mark, int rc)
{
	if (rc)
		b->len = mark;
	if (b->data)
		b->data[b->len] = '\0';
	return rc ? -1 : 0;
}

int eh_json_write_event(struct eh_buf *b, const struct eh_event *ev, const struct eh_node *node)
{
	size_t mark = b->len;

	return finish(b, mark, write_object(b, ev, node));
}

int eh_json_write_cloudevent(struct eh_buf *b, const struct eh_event *ev, const struct eh_node *node)
{
	size_t mark = b->len;
	int rc = 0;

	rc |= append(b, LIT("{\"specversion\":\"1.0\",\"type\":"));
	rc |= put_name(b, eh_event_type_name(ev->type));
	rc |= append(b, KEY("source")) || put_string(b, node->name, strlen(node->name), NULL);
	rc |= append(b, KEY("id")) || put_id(b, node, ev->number);
	rc |= append(b, KEY("time")) || put_ts(b, ev->ts_ms);
	rc |= append(b, LIT(",\"datacontenttype\":\"application/json\",\"data\":"));
	rc |= write_object(b, ev, node);
	rc |= append(b, LIT("}"));
	return finish(b, mark, rc);
}
