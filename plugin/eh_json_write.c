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
 * for instructions: the buffer is grown once per event, to a bound no
 * event's text can pass (eh_json_text_bound), and everything after writes
 * through a plain pointer with no further checks; keys are literals; what
 * follows from the node alone was made by eh_node_init; the id and
 * timestamp are formatted in place; and each client string is validated,
 * repaired and escaped in one pass that moves eight plain bytes at a time
 * (put_string).
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

/* Keys, separators and constant values: literals, whose length the
 * compiler knows, so that the copy is a few moves and there is no strlen. */
#define LIT(s) (s), sizeof(s) - 1
#define KEY(name) LIT(",\"" name "\":")
/* A client field's key and the key of its base64 twin. */
#define KEYS(name) KEY(name), KEY(name "_b64")

int eh_buf_append(struct eh_buf *b, const char *s, size_t n)
{
	if (reserve(b, n))
		return -1;
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

void eh_buf_free(struct eh_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* Every put_ function below writes at p, which has room (reserved once by
 * eh_json_text_bound), and returns the end of what it wrote. */
static inline char *put(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
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
 * A client's string, escaped as jansson escapes it, in one pass: each byte
 * where no valid UTF-8 sequence starts becomes U+FFFD and *replaced is set,
 * exactly as eh_json_string_bytes's repeated eh_utf8_valid_prefix does (the
 * replacement and every valid sequence are bytes >= 0x80, which need no
 * escape, so validating and escaping commute).
 *
 * Eight plain bytes are recognised and stored per step; only the bytes of
 * a word that needs care are looked at one by one. Room: 6 * n + 2 (an
 * escape is 6 bytes for 1, a replacement 3), which eh_json_text_bound
 * counts.
 */
static char *put_string(char *out, const char *str, size_t n, int *replaced)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

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

			if (plain[c]) {
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
			i++;
			if (c >= 0x80) {
				out = put(out, "\xEF\xBF\xBD", 3);
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
	return out;
}

/* Room: eh_base64_len(n) + 2, plus the NUL eh_base64_encode writes (the
 * closing quote goes over it). */
static char *put_base64(char *p, const char *s, size_t n)
{
	*p++ = '"';
	eh_base64_encode(s, n, p);
	p += eh_base64_len(n);
	*p++ = '"';
	return p;
}

/* A name from one of our tables (event type, reason): plain ASCII, which
 * JSON takes as it is. */
static char *put_name(char *p, const char *name)
{
	*p++ = '"';
	p = put(p, name, strlen(name));
	*p++ = '"';
	return p;
}

/* The id and the timestamp are formatted straight into the text: hex
 * digits, digits and punctuation, nothing to escape. Each formatter's NUL
 * lands where the closing quote then goes. */
static char *put_id(char *p, const struct eh_node *node, uint64_t number)
{
	*p = '"';
	eh_json_format_id(node, number, p + 1);
	p[1 + EH_ID_LEN] = '"';
	return p + EH_ID_LEN + 2;
}

static char *put_ts(char *p, int64_t ts_ms)
{
	*p = '"';
	eh_json_format_ts(ts_ms, p + 1);
	p[1 + EH_TS_LEN] = '"';
	return p + EH_TS_LEN + 2;
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
 * few moves. The digits go in last first. Room: the key and 20. */
static inline char *field_int(char *p, const char *k, size_t klen, long long v)
{
	/* By hand: snprintf's format parsing cost more than the digits. */
	unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;

	char *q;

	p = put(p, k, klen);
	if (v < 0)
		*p++ = '-';
	p += digits10(u);
	q = p;
	while (u >= 100) {
		q -= 2;
		memcpy(q, dec_pairs + 2 * (u % 100), 2);
		u /= 100;
	}
	if (u >= 10)
		memcpy(q - 2, dec_pairs + 2 * u, 2);
	else
		q[-1] = (char)('0' + u);
	return p;
}

static inline char *field_bool(char *p, const char *k, size_t klen, int v)
{
	p = put(p, k, klen);
	return v ? put(p, LIT("true")) : put(p, LIT("false"));
}

static char *field_bytes(char *p, const char *k, size_t klen, const char *k64, size_t k64len,
			 const struct eh_bytes *v)
{
	int replaced = 0;

	p = put_string(put(p, k, klen), v->ptr, v->len, &replaced);
	if (!replaced)
		return p;
	return put_base64(put(p, k64, k64len), v->ptr, v->len);
}

/*
 * The most text one event can make, NUL included: each client string at
 * its worst, 8 bytes per byte (6 for an escape, then 4/3 in its base64
 * twin, whose rounding up and quotes FIXED_ROOM covers), the payload's
 * base64, the node's name twice (the CloudEvents envelope has it as
 * source), and FIXED_ROOM for everything else: keys, quotes, literal
 * values, the id, the time, integers of at most 20 characters and a reason
 * (under 800 in all, envelope included; test_json_write checks the bound
 * on the longest events it can build).
 */
#define FIXED_ROOM 1024u

size_t eh_json_text_bound(const struct eh_event *ev, const struct eh_node *node)
{
	size_t strings = (size_t)ev->f[EH_F_CLIENTID].len + ev->f[EH_F_USERNAME].len + ev->f[EH_F_PEER].len
			 + ev->f[EH_F_TOPIC].len;

	return FIXED_ROOM + 2 * node->name_json_len + 8 * strings + eh_base64_len(ev->f[EH_F_PAYLOAD].len);
}

static char *write_object(char *p, const struct eh_event *ev, const struct eh_node *node)
{
	p = put(p, LIT("{\"event\":"));
	p = put_name(p, eh_event_type_name(ev->type));
	p = put_id(put(p, KEY("id")), node, ev->number);
	p = put_ts(put(p, KEY("ts")), ev->ts_ms);
	p = put(put(p, KEY("node")), node->name_json, node->name_json_len);
	p = field_int(p, KEY("seq"), (long long)ev->seq);
	p = field_bytes(p, KEYS("clientid"), &ev->f[EH_F_CLIENTID]);
	if (ev->flags & EH_EVF_HAS_USERNAME)
		p = field_bytes(p, KEYS("username"), &ev->f[EH_F_USERNAME]);
	p = field_bytes(p, KEYS("peer"), &ev->f[EH_F_PEER]);
	p = ev->flags & EH_EVF_WEBSOCKETS ? put(p, LIT(",\"protocol\":\"websockets\""))
					  : put(p, LIT(",\"protocol\":\"mqtt\""));
	if (ev->proto_ver)
		p = field_int(p, KEY("proto_ver"), ev->proto_ver);
	switch (ev->type) {
	case EH_EV_CONNECT:
	case EH_EV_CONNECTED:
		p = field_int(p, KEY("keepalive"), ev->keepalive);
		p = field_bool(p, KEY("clean_start"), ev->flags & EH_EVF_CLEAN_START);
		if (ev->flags & EH_EVF_INFERRED)
			p = put(p, LIT(",\"inferred\":true"));
		break;
	case EH_EV_CONNECT_FAILED:
		if (ev->reason != EH_REASON_NONE)
			p = put_name(put(p, KEY("reason")), eh_reason_name(ev->reason));
		break;
	case EH_EV_DISCONNECTED:
		p = put_name(put(p, KEY("reason")), eh_reason_name(ev->reason ? ev->reason : EH_REASON_UNKNOWN));
		if (ev->flags & EH_EVF_HAS_CONNECTED_MS)
			p = field_int(p, KEY("connected_ms"), (long long)ev->connected_ms);
		break;
	case EH_EV_SUBSCRIBE:
		p = field_bytes(p, KEYS("topic"), &ev->f[EH_F_TOPIC]);
		p = field_int(p, KEY("qos"), ev->qos);
		if (ev->flags & EH_EVF_GRANTED_KNOWN)
			p = field_bool(p, KEY("granted"), ev->flags & EH_EVF_GRANTED);
		break;
	case EH_EV_UNSUBSCRIBE:
		p = field_bytes(p, KEYS("topic"), &ev->f[EH_F_TOPIC]);
		break;
	case EH_EV_AUTHZ_DENIED:
		p = ev->action == EH_ACTION_SUBSCRIBE ? put(p, LIT(",\"action\":\"subscribe\""))
						      : put(p, LIT(",\"action\":\"publish\""));
		p = field_bytes(p, KEYS("topic"), &ev->f[EH_F_TOPIC]);
		p = field_int(p, KEY("qos"), ev->qos);
		if (ev->action == EH_ACTION_PUBLISH)
			p = field_bool(p, KEY("retain"), ev->flags & EH_EVF_RETAIN);
		break;
	case EH_EV_PUBLISH:
		p = field_bytes(p, KEYS("topic"), &ev->f[EH_F_TOPIC]);
		p = field_int(p, KEY("qos"), ev->qos);
		p = field_bool(p, KEY("retain"), ev->flags & EH_EVF_RETAIN);
		p = put_base64(put(p, KEY("payload")), ev->f[EH_F_PAYLOAD].ptr, ev->f[EH_F_PAYLOAD].len);
		p = field_int(p, KEY("payload_size"), eh_event_payload_size(ev));
		if (eh_event_payload_truncated(ev))
			p = put(p, LIT(",\"payload_truncated\":true"));
		break;
	default:
		break;
	}
	*p++ = '}';
	return p;
}

/* Grows the buffer once for the whole event; on failure it is as it was. */
static char *begin(struct eh_buf *b, const struct eh_event *ev, const struct eh_node *node)
{
	return reserve(b, eh_json_text_bound(ev, node)) ? NULL : b->data + b->len;
}

static void end(struct eh_buf *b, char *p)
{
	b->len = (size_t)(p - b->data);
	b->data[b->len] = '\0';
}

int eh_json_write_event(struct eh_buf *b, const struct eh_event *ev, const struct eh_node *node)
{
	char *p = begin(b, ev, node);

	if (!p)
		return -1;
	end(b, write_object(p, ev, node));
	return 0;
}

int eh_json_write_cloudevent(struct eh_buf *b, const struct eh_event *ev, const struct eh_node *node)
{
	char *p = begin(b, ev, node);

	if (!p)
		return -1;
	p = put(p, LIT("{\"specversion\":\"1.0\",\"type\":"));
	p = put_name(p, eh_event_type_name(ev->type));
	p = put(put(p, KEY("source")), node->name_json, node->name_json_len);
	p = put_id(put(p, KEY("id")), node, ev->number);
	p = put_ts(put(p, KEY("time")), ev->ts_ms);
	p = put(p, LIT(",\"datacontenttype\":\"application/json\",\"data\":"));
	p = write_object(p, ev, node);
	*p++ = '}';
	end(b, p);
	return 0;
}

int eh_json_batch_begin(struct eh_buf *b, enum eh_json_framing framing)
{
	return framing == EH_JSON_ARRAY ? eh_buf_append(b, "[", 1) : 0;
}

int eh_json_batch_add(struct eh_buf *b, enum eh_json_framing framing, bool first, const struct eh_event *ev,
		      const struct eh_node *node, bool cloudevents)
{
	size_t before = b->len;

	if ((framing == EH_JSON_ARRAY && !first && eh_buf_append(b, ",", 1))
	    || (cloudevents ? eh_json_write_cloudevent(b, ev, node) : eh_json_write_event(b, ev, node))
	    || (framing == EH_JSON_NDJSON && eh_buf_append(b, "\n", 1))) {
		b->len = before;
		if (b->data)
			b->data[before] = '\0';
		return -1;
	}
	return 0;
}

int eh_json_batch_end(struct eh_buf *b, enum eh_json_framing framing)
{
	return framing == EH_JSON_ARRAY ? eh_buf_append(b, "]", 1) : 0;
}
