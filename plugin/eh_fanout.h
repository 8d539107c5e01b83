/*
 * eh_fanout: one queue between the broker thread and the sinks' queues.
 *
 * When some event type goes to two sinks or more, the broker thread packs
 * each event once into the fan-out ring, and a thread of ours (eh-fanout)
 * copies it into the ring of every sink that wants it: the per-sink copy
 * (about 80 instructions per event and further sink) leaves the broker
 * thread, while every sink keeps a ring of its own, so a sink that falls
 * behind still fills only its own.
 *
 * Counting stays exact. Each sink's seq, dropped (at its own ring) and
 * fanout_enqueued are written by the fan-out thread alone. An event the
 * fan-out ring has no room for is counted at once, on the broker thread,
 * for each sink that would have taken it (fanout_lost), and its seq
 * number travels to the thread in a drop note: a short record put in
 * front of the next event that fits, so each sink's seq gap falls where
 * its events were lost.
 */
#ifndef EH_FANOUT_H
#define EH_FANOUT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eh_ring.h"

struct eh_core;
struct eh_event;
struct eh_sink;

struct eh_fanout {
	struct eh_ring ring;
	bool on;                 /* eh_core_emit goes through the ring */
	bool thread_started;
	int64_t thread_retry_ms; /* after a failed start: not before this */
	pthread_t thread;
	_Atomic int stop;
	/* broker thread only: per sink (by index), events the ring had no
	 * room for whose seq numbers no drop note has carried yet. Owned. */
	uint64_t *pending;
	bool pending_any;
};

/* broker thread, after eh_core_route: true when some event type goes to
 * two sinks or more. */
bool eh_fanout_useful(const struct eh_core *core);
/* broker thread, at init: allocates the ring (of the sinks' ring size)
 * and turns the fan-out on; its thread starts at the first event. Returns
 * 0, or -1 with errno set. */
int eh_fanout_init(struct eh_core *core, size_t ring_bytes, uint64_t ring_records);
/* broker thread, from eh_core_emit, for an event some sink wants: packs
 * it into the ring (size is its packed size), or counts it as dropped for
 * every sink that would have taken it. Never blocks, never allocates. */
void eh_fanout_emit(struct eh_core *core, struct eh_event *ev, size_t size);
/* broker thread: seq numbers of sink s not yet handed to the fan-out
 * thread in a drop note. */
static inline uint64_t eh_fanout_pending(const struct eh_fanout *fo, size_t sink_index)
{
	return fo->on ? fo->pending[sink_index] : 0;
}
/* broker thread, from TICK: after a failed start, tries the thread again
 * (at most once a second), and while it still cannot start, makes its
 * copies here, so that the sinks get their events all the same. */
void eh_fanout_tick(struct eh_core *core);
/* broker thread, first thing at cleanup: stops the thread after it has
 * copied every event of the ring into the sinks' rings (or counted it
 * dropped there) and frees the ring. A no-op when off. */
void eh_fanout_stop(struct eh_core *core);

#endif
