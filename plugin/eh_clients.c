/*
 * eh_clients: a chained hash table on the client pointer, doubled when it
 * gets full, plus an intrusive list of the clients whose connection is not
 * yet known to be accepted.
 */
#include "eh_clients.h"

#include <stdlib.h>
#include <string.h>

int eh_clients_init(struct eh_clients *t)
{
	memset(t, 0, sizeof(*t));
	t->nbuckets = 256;
	t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
	return t->buckets ? 0 : -1;
}

void eh_clients_free(struct eh_clients *t)
{
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct eh_client *c = t->buckets[i];

		while (c) {
			struct eh_client *next = c->hash_next;

			free(c);
			c = next;
		}
	}
	while (t->spare) {
		struct eh_client *next = t->spare->hash_next;

		free(t->spare);
		t->spare = next;
	}
	free(t->buckets);
	memset(t, 0, sizeof(*t));
}

static void grow(struct eh_clients *t)
{
	size_t old_n = t->nbuckets;
	struct eh_client **old = t->buckets;
	struct eh_client **nb = calloc(old_n * 2, sizeof(*nb));

	/* Growing is an optimisation: a failed grow only lengthens chains. */
	if (!nb)
		return;
	t->buckets = nb;
	t->nbuckets = old_n * 2;
	for (size_t i = 0; i < old_n; i++) {
		struct eh_client *c = old[i];

		while (c) {
			struct eh_client *next = c->hash_next;
			size_t s = eh_clients_slot(t, c->key);

			c->hash_next = nb[s];
			nb[s] = c;
			c = next;
		}
	}
	free(old);
}

struct eh_client *eh_clients_add(struct eh_clients *t, const void *key, const char *id, const char *user,
				 const char *peer)
{
	size_t il = id ? strlen(id) : 0, ul = user ? strlen(user) : 0, pl = peer ? strlen(peer) : 0;
	size_t need = il + ul + pl + 3;
	bool small = need <= EH_CLIENT_SMALL;
	struct eh_client *c;
	size_t s;

	if (small && t->spare) {
		c = t->spare;
		t->spare = c->hash_next;
		t->nspare--;
		memset(c, 0, sizeof(*c));
	} else {
		c = calloc(1, sizeof(*c) + (small ? EH_CLIENT_SMALL : need));
		if (!c)
			return NULL;
	}
	c->small = small;
	c->key = key;
	c->id = c->data;
	c->user = c->id + il + 1;
	c->peer = c->user + ul + 1;
	if (il)
		memcpy(c->id, id, il);
	if (ul)
		memcpy(c->user, user, ul);
	if (pl)
		memcpy(c->peer, peer, pl);
	c->id[il] = c->user[ul] = c->peer[pl] = '\0';
	c->id_len = (uint32_t)il;
	c->user_len = (uint32_t)ul;
	c->peer_len = (uint32_t)pl;
	c->state = EH_CLIENT_LIVE;
	if (t->count >= t->nbuckets)
		grow(t);
	s = eh_clients_slot(t, key);
	c->hash_next = t->buckets[s];
	t->buckets[s] = c;
	t->count++;
	return c;
}

static void pending_unlink(struct eh_clients *t, struct eh_client *c)
{
	if (c->pending_prev)
		c->pending_prev->pending_next = c->pending_next;
	else if (t->pending == c)
		t->pending = c->pending_next;
	if (c->pending_next)
		c->pending_next->pending_prev = c->pending_prev;
	c->pending_prev = c->pending_next = NULL;
}

void eh_clients_set_state(struct eh_clients *t, struct eh_client *c, enum eh_client_state state)
{
	if (c->state == state)
		return;
	if (c->state == EH_CLIENT_PENDING)
		pending_unlink(t, c);
	c->state = (uint8_t)state;
	if (state == EH_CLIENT_PENDING) {
		c->pending_prev = NULL;
		c->pending_next = t->pending;
		if (t->pending)
			t->pending->pending_prev = c;
		t->pending = c;
	}
}

void eh_clients_remove(struct eh_clients *t, struct eh_client *c)
{
	struct eh_client **pp = &t->buckets[eh_clients_slot(t, c->key)];

	if (c->state == EH_CLIENT_PENDING)
		pending_unlink(t, c);
	while (*pp && *pp != c)
		pp = &(*pp)->hash_next;
	if (*pp)
		*pp = c->hash_next;
	t->count--;
	if (c->small && t->nspare < EH_CLIENTS_SPARE) {
		c->hash_next = t->spare;
		t->spare = c;
		t->nspare++;
		return;
	}
	free(c);
}

struct eh_client *eh_clients_pending_with_id(struct eh_clients *t, const struct eh_client *except, const char *id,
					     size_t len)
{
	for (struct eh_client *c = t->pending; c; c = c->pending_next) {
		if (c != except && c->id_len == len && !memcmp(c->id, id, len))
			return c;
	}
	return NULL;
}
