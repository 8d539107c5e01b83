/*
 * eh_event: the event model. An event is captured on the broker thread as an
 * eh_event view whose strings are borrowed (from the broker or from the
 * client table), packed into a ring record by eh_event_pack, and read back
 * on the sink thread by eh_event_unpack as a view into the ring record.
 * Strings are byte strings with explicit lengths: client ids, usernames,
 * topics and payloads may hold any bytes, NUL included.
 */
#ifndef EH_EVENT_H
#define EH_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum eh_event_type {
	EH_EV_CONNECT = 0,
	EH_EV_CONNECTED,
	EH_EV_CONNECT_FAILED,
	EH_EV_DISCONNECTED,
	EH_EV_SUBSCRIBE,
	EH_EV_UNSUBSCRIBE,
	EH_EV_AUTHZ_DENIED,
	EH_EV_PUBLISH,
	EH_EV_COUNT
};

#define EH_EV_BIT(t) (1u << (t))
#define EH_EV_MASK_ALL ((1u << EH_EV_COUNT) - 1u)
/* Events that carry a topic and are narrowed by topic filters. */
#define EH_EV_MASK_TOPIC (EH_EV_BIT(EH_EV_SUBSCRIBE) | EH_EV_BIT(EH_EV_UNSUBSCRIBE) \
			  | EH_EV_BIT(EH_EV_AUTHZ_DENIED) | EH_EV_BIT(EH_EV_PUBLISH))

/* Why a client went away or was refused. Names are the MQTT 5 reason names
 * (snake case) where one exists. */
enum eh_reason {
	EH_REASON_NONE = 0, /* field omitted */
	EH_REASON_UNKNOWN,
	EH_REASON_NORMAL,
	EH_REASON_SESSION_TAKEN_OVER,
	EH_REASON_BROKER_SHUTDOWN,
	EH_REASON_NOT_AUTHORIZED,
	EH_REASON_BAD_CREDENTIALS,
	EH_REASON_KEEPALIVE_TIMEOUT,
	EH_REASON_CONNECTION_LOST,
	EH_REASON_PROTOCOL_ERROR,
	EH_REASON_ADMINISTRATIVE_ACTION,
	EH_REASON_SERVER_BUSY,
	EH_REASON_QUOTA_EXCEEDED,
	EH_REASON_PAYLOAD_TOO_LARGE,
	EH_REASON_MALFORMED_PACKET,
	EH_REASON_REAUTH_FAILED,
	EH_REASON_COUNT
};

enum eh_action { EH_ACTION_NONE = 0, EH_ACTION_PUBLISH, EH_ACTION_SUBSCRIBE };

enum eh_field { EH_F_CLIENTID = 0, EH_F_USERNAME, EH_F_PEER, EH_F_TOPIC, EH_F_PAYLOAD, EH_F_COUNT };

#define EH_EVF_HAS_USERNAME 0x01u
#define EH_EVF_CLEAN_START 0x02u
#define EH_EVF_INFERRED 0x04u
#define EH_EVF_GRANTED_KNOWN 0x08u
#define EH_EVF_GRANTED 0x10u
#define EH_EVF_RETAIN 0x20u
#define EH_EVF_WEBSOCKETS 0x40u
#define EH_EVF_HAS_CONNECTED_MS 0x80u

struct eh_bytes {
	const char *ptr;
	uint32_t len;
};

struct eh_event {
	uint64_t number;       /* capture order in this plugin instance: the id */
	uint64_t seq;          /* order of the events offered to one sink */
	int64_t ts_ms;         /* Unix time in milliseconds */
	/* Per type; no event has both, so they share one slot here and in the
	 * packed record, which then costs no event anything. Same type, so the
	 * slot is copied through either name. */
	union {
		int64_t connected_ms; /* disconnected: how long it was connected */
		/* publish: the size of the payload the client sent (0 to
		 * UINT32_MAX). Larger than f[EH_F_PAYLOAD].len when that holds
		 * only its first bytes (payload_max_bytes); 0 or equal when it
		 * holds all of it. */
		int64_t payload_size;
	};
	uint16_t keepalive;
	uint8_t type;          /* enum eh_event_type */
	uint8_t proto_ver;     /* 3, 4, 5; 0 when unknown */
	uint8_t qos;
	uint8_t reason;        /* enum eh_reason */
	uint8_t action;        /* enum eh_action */
	uint16_t flags;        /* EH_EVF_* */
	struct eh_bytes f[EH_F_COUNT];
};

/* Every field of struct eh_event must be set by ev_from_client (eh_capture.c,
 * which stores each one rather than clear the struct) and carried through
 * the ring by eh_event_pack and eh_event_unpack (eh_event.c). Neither the
 * size nor any offset can guard that: a small field added after action or
 * after flags lands in padding and moves nothing. So the initializers below
 * name every field, in order: a field added anywhere (or to struct
 * eh_bytes) leaves a field without its initializer, an error whatever the
 * warning options (short of -w). When it fires, update those three
 * functions, struct eh_event_packed and the JSON writers (eh_json.c,
 * eh_json_write.c) if the event shows the field, then these lists. (A
 * member added to the union of connected_ms and payload_size is not caught:
 * harmless, since the slot is copied whole.) The size is pinned as well: the capture path builds one per event and the
 * runner holds a batch of them. */
#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wmissing-field-initializers"
_Static_assert(sizeof((struct eh_bytes){ NULL, 0 }) == 2 * sizeof(void *), /* an error here: a new field, see above */
	       "struct eh_bytes changed size: see the comment above this assertion");
_Static_assert(sizeof((struct eh_event){
		       0, 0, 0, { 0 },      /* number, seq, ts_ms, connected_ms | payload_size */
		       0, 0, 0, 0, 0, 0, 0, /* keepalive, type, proto_ver, qos, reason, action, flags */
		       { { NULL, 0 } } })  /* f; an error here: a new field, see above */
		       == (offsetof(struct eh_event, f) + EH_F_COUNT * sizeof(struct eh_bytes) + _Alignof(struct eh_event) - 1)
				  / _Alignof(struct eh_event) * _Alignof(struct eh_event),
	       "struct eh_event changed size: see the comment above this assertion");
#pragma GCC diagnostic pop
#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(struct eh_event) == 128, "struct eh_event grew: see the comment above");
#endif

const char *eh_event_type_name(unsigned type);
/* Returns the type for an exact name, or -1. */
int eh_event_type_from_name(const char *name, size_t len);
const char *eh_reason_name(unsigned reason);

/* The size of a publish's payload as the client sent it, and whether the
 * event carries less than that. */
static inline uint32_t eh_event_payload_size(const struct eh_event *ev)
{
	return ev->payload_size > ev->f[EH_F_PAYLOAD].len ? (uint32_t)ev->payload_size : ev->f[EH_F_PAYLOAD].len;
}

static inline bool eh_event_payload_truncated(const struct eh_event *ev)
{
	return ev->payload_size > ev->f[EH_F_PAYLOAD].len;
}

/* The size of a packed record's fixed header (eh_event.c asserts it). */
#define EH_EVENT_PACKED_HDR 64

/* Bytes eh_event_pack needs for ev; the ring refuses records over its limit.
 * Inline: every event asks. */
static inline size_t eh_event_packed_size(const struct eh_event *ev)
{
	return EH_EVENT_PACKED_HDR + (size_t)ev->f[0].len + ev->f[1].len + ev->f[2].len + ev->f[3].len + ev->f[4].len;
}
_Static_assert(EH_F_COUNT == 5, "eh_event_packed_size adds each field");
/* Writes ev (header and strings) into out, which has packed_size bytes and
 * is 8-byte aligned (as ring records and malloc's blocks are). */
void eh_event_pack(const struct eh_event *ev, void *out);
/* Where a packed record keeps seq (eh_event.c asserts it). */
#define EH_EVENT_PACKED_SEQ_AT 8

/* Overwrites the seq of a packed record: an event packed once is copied to
 * every interested sink's ring, and each sink numbers its own events. */
static inline void eh_event_packed_set_seq(void *rec, uint64_t seq)
{
	memcpy((char *)rec + EH_EVENT_PACKED_SEQ_AT, &seq, sizeof(seq));
}
/* Reads a packed record back; the view's strings point into rec.
 * Returns 0, or -1 if the record is malformed. */
int eh_event_unpack(const void *rec, size_t len, struct eh_event *ev);

#endif
