/*
 * eh_clients: what the capture code remembers about each client it has seen
 * authenticate or taken in at its first event, and about the offline
 * sessions they leave, keyed by the broker's client pointer. The broker's
 * strings are borrowed only for one callback, and on 2.0 the client id is
 * freed on a refused CONNECT, so the id, username and address are copied
 * here once per connection (never per event). Broker thread only.
 */
#ifndef EH_CLIENTS_H
#define EH_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* PENDING: authenticated, not yet known to be accepted; the only state on
 * the pending list.
 * LIVE: a connection known to be accepted.
 * OFFLINE: a session whose connection closed and which the broker may
 * keep; kept only so that a will the broker sends later for it (will
 * delay, session expiry, shutdown) or its resume is known as that
 * session's, never taken for a new client. Plugin API v5 on 2.0 tells
 * neither a session's expiry nor whether it has a will, so every MQTT 5 or
 * durable MQTT 3.1.x session is kept (never a clean 3.1.x one), also one
 * with expiry 0 and no will. An entry goes at the DISCONNECT that resumes
 * or replaces the session, or when the broker's memory for it is seen
 * reused by another client (eh_capture.c, find_current); one whose memory
 * the broker freed silently (expiry) and never reused stays. The broker's
 * contexts are all of one size and freed memory is reused for the next, so
 * in practice the table levels off near the broker's peak number of
 * contexts (connections plus offline sessions), about 260 bytes each; it
 * has no other bound.
 * RECHECKED: first seen at a reload's re-checks on a broker without TICK:
 * an offline session being re-checked, or a new connection. It follows the
 * OFFLINE rules until its own event shows a connection (eh_capture.c,
 * start_attempt), and stays off the pending list, whose walks by id would
 * otherwise cover every offline session. */
enum eh_client_state { EH_CLIENT_PENDING, EH_CLIENT_LIVE, EH_CLIENT_OFFLINE, EH_CLIENT_RECHECKED };

struct eh_client {
	const void *key;
	struct eh_client *hash_next;
	struct eh_client *pending_prev, *pending_next;
	uint8_t state;
	uint8_t proto_ver;
	bool attempt_seen; /* we saw its authentication: client.connect is owed */
	uint16_t keepalive;
	uint16_t flags;    /* EH_EVF_HAS_USERNAME, CLEAN_START, WEBSOCKETS */
	int64_t ts_ms;     /* wall clock of the connect */
	int64_t mono_ms;   /* monotonic clock of the connect */
	bool small;        /* allocated with EH_CLIENT_SMALL bytes of strings: reusable */
	uint32_t id_len, user_len, peer_len;
	char *id, *user, *peer; /* point into data */
	char data[];
};

/* Entries whose id, username and address fit in EH_CLIENT_SMALL bytes are
 * kept on a spare list when their client leaves (at most EH_CLIENTS_SPARE
 * of them) and reused by the next connect: connection churn then costs no
 * malloc/free on the broker thread. */
#define EH_CLIENT_SMALL 160
#define EH_CLIENTS_SPARE 256

struct eh_clients {
	struct eh_client **buckets;
	size_t nbuckets, count;
	struct eh_client *pending; /* doubly linked list of PENDING clients */
	struct eh_client *spare;   /* singly linked through hash_next */
	size_t nspare;
};

int eh_clients_init(struct eh_clients *t);
void eh_clients_free(struct eh_clients *t);
/* The bucket of key. */
static inline size_t eh_clients_slot(const struct eh_clients *t, const void *key)
{
	uint64_t h = (uint64_t)(uintptr_t)key;

	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return (size_t)(h & (t->nbuckets - 1));
}

/* Inline: every callback of a client looks it up. */
static inline struct eh_client *eh_clients_find(const struct eh_clients *t, const void *key)
{
	struct eh_client *c;

	if (!t->buckets)
		return NULL;
	for (c = t->buckets[eh_clients_slot(t, key)]; c; c = c->hash_next) {
		if (c->key == key)
			return c;
	}
	return NULL;
}
/* Adds a client with copies of the strings (any may be NULL). Returns NULL
 * on out of memory. */
struct eh_client *eh_clients_add(struct eh_clients *t, const void *key, const char *id, const char *user,
				 const char *peer);
void eh_clients_remove(struct eh_clients *t, struct eh_client *c);
void eh_clients_set_state(struct eh_clients *t, struct eh_client *c, enum eh_client_state state);
/* A PENDING client other than except whose id equals id, or NULL. */
struct eh_client *eh_clients_pending_with_id(struct eh_clients *t, const struct eh_client *except, const char *id,
					     size_t len);

#endif
