/*
 * eh_json: turns an event view into JSON (jansson) on a sink thread. The
 * output is always valid JSON whatever bytes the client sent: a string field
 * that is not valid UTF-8 has each invalid sequence replaced by U+FFFD, and
 * the original bytes are added in base64 as "<field>_b64" so nothing is lost.
 * NUL and control characters are valid UTF-8 and are escaped by jansson.
 */
#ifndef EH_JSON_H
#define EH_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "eh_event.h"

#define EH_ID_LEN 36
#define EH_TS_LEN 24
#define EH_NODE_NAME_MAX 255
/* The id's first three groups and their dashes: the instance's part. */
#define EH_ID_HEAD_LEN 19

/* What every event of one plugin instance shares, and the parts of each
 * event's text that follow from it alone, made once by eh_node_init so
 * that the writers copy them instead of formatting them per event. */
struct eh_node {
	char name[EH_NODE_NAME_MAX + 1]; /* plugin_opt_node_id, default the host name */
	uint64_t instance;               /* random per start: makes ids unique across restarts */
	char id_head[EH_ID_HEAD_LEN];
	/* name as a JSON string, quotes included (an escape is 6 bytes at most) */
	char name_json[6 * EH_NODE_NAME_MAX + 3];
	size_t name_json_len;
};

/* Fills node; -1 with the reason in why when name is longer than
 * EH_NODE_NAME_MAX bytes, is not valid UTF-8, or memory ran out (why may
 * be NULL with whylen 0). */
int eh_node_init(struct eh_node *node, const char *name, uint64_t instance, char *why, size_t whylen);

/* Formats the event id (a UUID of version 8 built from instance and number)
 * into out, which has EH_ID_LEN + 1 bytes. */
void eh_json_format_id(const struct eh_node *node, uint64_t number, char *out);
/* Formats ts_ms as RFC 3339 UTC with milliseconds into out (EH_TS_LEN + 1). */
void eh_json_format_ts(int64_t ts_ms, char *out);

/* Returns a new reference to the event object, or NULL on out of memory. */
json_t *eh_json_event(const struct eh_event *ev, const struct eh_node *node);
/* Returns a new reference to a CloudEvents 1.0 structured-mode envelope
 * whose data is eh_json_event's object, or NULL on out of memory. */
json_t *eh_json_cloudevent(const struct eh_event *ev, const struct eh_node *node);

/* Returns a new json string of bytes, valid UTF-8 (invalid sequences
 * replaced); *replaced is set when a replacement happened. */
json_t *eh_json_string_bytes(const char *ptr, size_t len, int *replaced);
/* json_dumps into memory of libc's malloc (free() it): json_dumps's own
 * output comes from jansson's allocator, which another plugin in the
 * broker may replace (json_set_alloc_funcs is process-wide). NULL when
 * out of memory. */
char *eh_json_dumps(const json_t *json, size_t flags);
/* Standard base64 with padding; out needs eh_base64_len(len) + 1 bytes. */
static inline size_t eh_base64_len(size_t len)
{
	return (len + 2) / 3 * 4;
}
void eh_base64_encode(const void *in, size_t len, char *out);
/* Returns the length of the longest valid UTF-8 prefix of s (len when all of
 * it is valid). */
size_t eh_utf8_valid_prefix(const char *s, size_t len);

/* The length (2 to 4) of the valid UTF-8 sequence of a non-ASCII lead byte
 * at s, of which avail bytes are readable, or 0 when none starts there
 * (bad lead or continuation, truncated, overlong, surrogate, above
 * U+10FFFF). Inline because both the validator and the direct writer ask it
 * once per non-ASCII character: one definition of "valid" for both. */
static inline size_t eh_utf8_sequence_len(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0];
	size_t n;
	uint32_t cp;

	if (c >= 0xC2 && c <= 0xDF) {
		n = 1;
		cp = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		n = 2;
		cp = c & 0x0F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 3;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n > avail - 1)
		return 0;
	for (size_t k = 1; k <= n; k++) {
		if ((s[k] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[k] & 0x3F);
	}
	/* overlong, surrogate and out-of-range forms */
	if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n + 1;
}

/* A growable text buffer: sinks keep one and reset len to reuse it. */
struct eh_buf {
	char *data; /* NUL-terminated when not NULL */
	size_t len, cap;
};

int eh_buf_append(struct eh_buf *b, const char *s, size_t n);
void eh_buf_free(struct eh_buf *b);
/* The most bytes (NUL included) either writer below can add for ev: the
 * room it reserves before writing. */
size_t eh_json_text_bound(const struct eh_event *ev, const struct eh_node *node);
/* Append the event (or its CloudEvents envelope) as compact JSON, the same
 * bytes as json_dumps(eh_json_event(...), JSON_COMPACT) without building a
 * jansson tree. Return 0, or -1 on out of memory (b is then unchanged). */
int eh_json_write_event(struct eh_buf *b, const struct eh_event *ev, const struct eh_node *node);
int eh_json_write_cloudevent(struct eh_buf *b, const struct eh_event *ev, const struct eh_node *node);

/* How the sinks that put several events in one body (http, local) frame
 * them: one object alone, a JSON array (also of one), or newline-delimited
 * objects. One set of rules, so both sinks write the same bytes. */
enum eh_json_framing { EH_JSON_SINGLE, EH_JSON_ARRAY, EH_JSON_NDJSON };
/* Bytes eh_json_batch_end will add: the array's closing bracket. */
#define EH_JSON_BATCH_END_LEN(framing) ((size_t)((framing) == EH_JSON_ARRAY))
/* Appends the framing's start. Returns 0, or -1 on out of memory. */
int eh_json_batch_begin(struct eh_buf *b, enum eh_json_framing framing);
/* Appends ev (its CloudEvents envelope when cloudevents) with what separates
 * it from the one before (none when first). Returns 0, or -1 on out of
 * memory with b unchanged. */
int eh_json_batch_add(struct eh_buf *b, enum eh_json_framing framing, bool first, const struct eh_event *ev,
		      const struct eh_node *node, bool cloudevents);
/* Appends the framing's end. Returns 0, or -1 on out of memory. */
int eh_json_batch_end(struct eh_buf *b, enum eh_json_framing framing);

#endif
