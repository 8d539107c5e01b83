/*
 * eh_event: names and the packed record format. A packed record is the
 * fixed-size struct eh_event_packed followed by the bytes of each field in
 * enum eh_field order; it lives only inside one process's ring, so the
 * layout needs no versioning or byte-order care.
 */
#include "eh_event.h"

#include <stddef.h>
#include <string.h>

struct eh_event_packed {
	uint64_t number;
	uint64_t seq;
	int64_t ts_ms;
	/* The event's shared slot: a disconnection's connected_ms, a
	 * publish's payload_size. One slot keeps the header, which every event
	 * pays for in every ring, at 64 bytes. */
	int64_t by_type;
	uint32_t len[EH_F_COUNT];
	uint16_t keepalive;
	uint16_t flags;
	uint8_t type, proto_ver, qos, reason, action;
	uint8_t unused[3]; /* zero: no byte of a record is left unset */
};

_Static_assert(offsetof(struct eh_event_packed, seq) == EH_EVENT_PACKED_SEQ_AT, "eh_event_packed_set_seq's offset");
_Static_assert(sizeof(struct eh_event_packed) == EH_EVENT_PACKED_HDR, "eh_event_packed_size's header");
/* eh_event_pack and eh_event_unpack copy each field by assignment, which
 * would cut a field of struct eh_event widened alone without a word. */
#define PACKED_HOLDS(field, packed)                                                                      \
	_Static_assert(sizeof(((struct eh_event *)0)->field) == sizeof(((struct eh_event_packed *)0)->packed), \
		       "struct eh_event_packed's " #packed " must be as wide as struct eh_event's " #field)
PACKED_HOLDS(number, number);
PACKED_HOLDS(seq, seq);
PACKED_HOLDS(ts_ms, ts_ms);
PACKED_HOLDS(connected_ms, by_type);
PACKED_HOLDS(payload_size, by_type);
PACKED_HOLDS(keepalive, keepalive);
PACKED_HOLDS(flags, flags);
PACKED_HOLDS(type, type);
PACKED_HOLDS(proto_ver, proto_ver);
PACKED_HOLDS(qos, qos);
PACKED_HOLDS(reason, reason);
PACKED_HOLDS(action, action);
PACKED_HOLDS(f[0].len, len[0]);

static const char *const type_names[EH_EV_COUNT] = {
	[EH_EV_CONNECT] = "client.connect",
	[EH_EV_CONNECTED] = "client.connected",
	[EH_EV_CONNECT_FAILED] = "client.connect_failed",
	[EH_EV_DISCONNECTED] = "client.disconnected",
	[EH_EV_SUBSCRIBE] = "client.subscribe",
	[EH_EV_UNSUBSCRIBE] = "client.unsubscribe",
	[EH_EV_AUTHZ_DENIED] = "client.authz_denied",
	[EH_EV_PUBLISH] = "message.publish",
};

static const char *const reason_names[EH_REASON_COUNT] = {
	[EH_REASON_NONE] = "",
	[EH_REASON_UNKNOWN] = "unknown",
	[EH_REASON_NORMAL] = "normal_disconnection",
	[EH_REASON_SESSION_TAKEN_OVER] = "session_taken_over",
	[EH_REASON_BROKER_SHUTDOWN] = "broker_shutdown",
	[EH_REASON_NOT_AUTHORIZED] = "not_authorized",
	[EH_REASON_BAD_CREDENTIALS] = "bad_username_or_password",
	[EH_REASON_KEEPALIVE_TIMEOUT] = "keep_alive_timeout",
	[EH_REASON_CONNECTION_LOST] = "connection_lost",
	[EH_REASON_PROTOCOL_ERROR] = "protocol_error",
	[EH_REASON_ADMINISTRATIVE_ACTION] = "administrative_action",
	[EH_REASON_SERVER_BUSY] = "server_busy",
	[EH_REASON_QUOTA_EXCEEDED] = "quota_exceeded",
	[EH_REASON_PAYLOAD_TOO_LARGE] = "packet_too_large",
	[EH_REASON_MALFORMED_PACKET] = "malformed_packet",
	[EH_REASON_REAUTH_FAILED] = "reauthentication_failed",
};

const char *eh_event_type_name(unsigned type)
{
	return type < EH_EV_COUNT ? type_names[type] : "unknown";
}

int eh_event_type_from_name(const char *name, size_t len)
{
	for (int t = 0; t < EH_EV_COUNT; t++) {
		if (strlen(type_names[t]) == len && !memcmp(type_names[t], name, len))
			return t;
	}
	return -1;
}

const char *eh_reason_name(unsigned reason)
{
	return reason < EH_REASON_COUNT ? reason_names[reason] : "unknown";
}

_Static_assert(EH_F_COUNT == 5, "eh_event_pack writes each field");

/* memcpy, with the short strings most fields are (client ids, addresses,
 * topics) copied inline, in two overlapping moves, instead of a call. */
static inline void copy_bytes(char *to, const char *from, uint32_t n)
{
	if (n >= 8 && n <= 16) {
		uint64_t a, b;

		memcpy(&a, from, 8);
		memcpy(&b, from + n - 8, 8);
		memcpy(to, &a, 8);
		memcpy(to + n - 8, &b, 8);
	} else if (n >= 4 && n < 8) {
		uint32_t a, b;

		memcpy(&a, from, 4);
		memcpy(&b, from + n - 4, 4);
		memcpy(to, &a, 4);
		memcpy(to + n - 4, &b, 4);
	} else if (n) {
		memcpy(to, from, n);
	}
}

static inline char *put_field(char *at, const struct eh_bytes *f, uint32_t *len)
{
	*len = f->len;
	copy_bytes(at, f->ptr, f->len);
	return at + f->len;
}

void eh_event_pack(const struct eh_event *ev, void *out)
{
	/* Written in place, not built aside and copied: out is 8-byte aligned
	 * (a ring record). */
	struct eh_event_packed *p = out;
	char *at = (char *)out + sizeof(*p);

	p->number = ev->number;
	p->seq = ev->seq;
	p->ts_ms = ev->ts_ms;
	p->by_type = ev->connected_ms; /* or payload_size: the same slot */
	p->keepalive = ev->keepalive;
	p->flags = ev->flags;
	p->type = ev->type;
	p->proto_ver = ev->proto_ver;
	p->qos = ev->qos;
	p->reason = ev->reason;
	p->action = ev->action;
	memset(p->unused, 0, sizeof(p->unused));
	/* Unrolled: this runs on the broker thread for every event. */
	at = put_field(at, &ev->f[EH_F_CLIENTID], &p->len[EH_F_CLIENTID]);
	at = put_field(at, &ev->f[EH_F_USERNAME], &p->len[EH_F_USERNAME]);
	at = put_field(at, &ev->f[EH_F_PEER], &p->len[EH_F_PEER]);
	at = put_field(at, &ev->f[EH_F_TOPIC], &p->len[EH_F_TOPIC]);
	put_field(at, &ev->f[EH_F_PAYLOAD], &p->len[EH_F_PAYLOAD]);
}

int eh_event_unpack(const void *rec, size_t len, struct eh_event *ev)
{
	struct eh_event_packed p;
	const char *at = (const char *)rec + sizeof(p);
	size_t left;

	if (len < sizeof(p))
		return -1;
	memcpy(&p, rec, sizeof(p));
	left = len - sizeof(p);
	memset(ev, 0, sizeof(*ev));
	ev->number = p.number;
	ev->seq = p.seq;
	ev->ts_ms = p.ts_ms;
	ev->keepalive = p.keepalive;
	ev->flags = p.flags;
	ev->type = p.type;
	ev->proto_ver = p.proto_ver;
	ev->qos = p.qos;
	ev->reason = p.reason;
	ev->action = p.action;
	if (ev->type >= EH_EV_COUNT)
		return -1;
	ev->connected_ms = p.by_type;
	if (ev->type == EH_EV_PUBLISH && (ev->payload_size < 0 || ev->payload_size > UINT32_MAX))
		return -1;
	for (int i = 0; i < EH_F_COUNT; i++) {
		if (p.len[i] > left)
			return -1;
		ev->f[i].ptr = at;
		ev->f[i].len = p.len[i];
		at += p.len[i];
		left -= p.len[i];
	}
	return left == 0 ? 0 : -1;
}
