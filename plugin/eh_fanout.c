/*
 * eh_fanout: the fan-out ring and its thread (see eh_fanout.h).
 *
 * The thread takes the ring's records in batches. An event record goes to
 * every sink its type is routed to and whose topic filters match, with
 * that sink's next seq, or is counted dropped for a sink whose ring is
 * full. A drop note skips its count of one sink's seq numbers (the broker
 * thread counted those events dropped already). The batch is released,
 * then the sinks that got records are woken behind one fence, from this
 * thread, so a sleeping sink costs the broker thread no system call
 * either.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>

#include "eh_core.h"
#include "eh_event.h"
#include "eh_fanout.h"
#include "eh_runner.h"

#define BATCH 256
#define IDLE_POLL_MS 100
_Static_assert(EH_SINKS_MAX <= 32, "route's filled mask has a bit per sink");

/* A record shorter than any packed event: count events of one sink lost
 * before the record that follows. */
struct drop_note {
	uint32_t sink;
	uint32_t zero;
	uint64_t count;
};
_Static_assert(sizeof(struct drop_note) < EH_EVENT_PACKED_HDR, "a drop note must not look like an event");

bool eh_fanout_useful(const struct eh_core *core)
{
	for (unsigned t = 0; t < EH_EV_COUNT; t++) {
		if (core->nroute[t] >= 2)
			return true;
	}
	return false;
}

int eh_fanout_init(struct eh_core *core, size_t ring_bytes, uint64_t ring_records)
{
	struct eh_fanout *fo = &core->fanout;

	fo->pending = calloc(EH_SINKS_MAX, sizeof(*fo->pending));
	if (!fo->pending)
		return -1;
	if (eh_ring_init(&fo->ring, ring_bytes, ring_records)) {
		int e = errno;

		free(fo->pending);
		fo->pending = NULL;
		errno = e;
		return -1;
	}
	for (size_t i = 0; i < core->nsinks; i++)
		core->sinks[i].via_fanout = true;
	fo->on = true;
	return 0;
}

/* ---- the fan-out thread ---- */

static bool sink_takes(const struct eh_sink *s, const struct eh_event *view)
{
	const struct eh_bytes *topic = &view->f[EH_F_TOPIC];

	if (!(EH_EV_BIT(view->type) & EH_EV_MASK_TOPIC) || !s->topics.count)
		return true;
	return eh_topics_match(&s->topics, topic->ptr, topic->len);
}

/* The seq numbers of events lost at the fan-out ring are used up, as a
 * full sink ring's are. */
static void apply_note(struct eh_core *core, const struct eh_ring_rec *rec)
{
	struct drop_note note;

	memcpy(&note, rec->data, sizeof(note));
	if (note.sink < core->nsinks)
		eh_counter_add(&core->sinks[note.sink].seq, note.count);
}

/* One event record into one sink's ring; returns false when it was full. */
static bool copy_to(struct eh_sink *s, const struct eh_ring_rec *rec)
{
	uint64_t seq;
	void *slot = eh_sink_reserve(s, rec->len, &seq);

	if (!slot)
		return false;
	memcpy(slot, rec->data, rec->len);
	eh_event_packed_set_seq(slot, seq);
	eh_ring_publish_sp(&s->ring);
	eh_counter_add(&s->fanout_enqueued, 1);
	return true;
}

/* Routes one record; sets the bit of each sink that got one in *filled. */
static void route(struct eh_core *core, const struct eh_ring_rec *rec, uint32_t *filled)
{
	struct eh_event view;

	if (rec->len < EH_EVENT_PACKED_HDR) {
		if (rec->len == sizeof(struct drop_note))
			apply_note(core, rec);
		return;
	}
	if (eh_event_unpack(rec->data, rec->len, &view)) {
		/* Cannot happen: the broker thread packed it. Should it ever,
		 * every sink gets it, and each runner counts it failed: no
		 * event leaves the counters unsaid. */
		for (size_t i = 0; i < core->nsinks; i++) {
			if (copy_to(&core->sinks[i], rec))
				*filled |= 1u << i;
		}
		return;
	}
	for (size_t i = 0; i < core->nroute[view.type]; i++) {
		struct eh_sink *s = core->route[view.type][i];

		if (sink_takes(s, &view) && copy_to(s, rec))
			*filled |= 1u << (s - core->sinks);
	}
}

/* Copies what the ring holds now into the sinks' rings. Returns the
 * number of records taken. */
static size_t pass(struct eh_core *core, struct eh_ring_rec *recs)
{
	struct eh_fanout *fo = &core->fanout;
	size_t n = eh_ring_peek_sc(&fo->ring, recs, BATCH);
	uint32_t filled = 0;

	if (!n)
		return 0;
	for (size_t i = 0; i < n; i++)
		route(core, &recs[i], &filled);
	eh_ring_release_sc(&fo->ring, &recs[n - 1], n);
	if (!filled)
		return n;
	/* One fence for every sink's ring (as eh_core_emit's). */
	eh_ring_fence_sp();
	for (size_t i = 0; i < core->nsinks; i++) {
		struct eh_sink *s = &core->sinks[i];

		if (!(filled & (1u << i)))
			continue;
		eh_ring_notify_sp(&s->ring);
		if (s->thread_lazy && !s->thread_started)
			eh_core_start_lazy(s);
	}
	return n;
}

static void *run(void *arg)
{
	struct eh_core *core = arg;
	struct eh_fanout *fo = &core->fanout;
	struct eh_ring_rec recs[BATCH];
	unsigned naps = 0;

	eh_core_thread_begin(core, "eh-fanout");
	for (;;) {
		/* Read before the ring: every event was committed before the
		 * stop request, so a ring found empty after it is empty for
		 * good. */
		bool stopping = atomic_load_explicit(&fo->stop, memory_order_acquire);

		if (pass(core, recs)) {
			naps = 0;
			continue;
		}
		if (stopping)
			break;
		eh_ring_idle_sc(&fo->ring, &naps, IDLE_POLL_MS);
	}
	return NULL;
}

/* broker thread: a failure is logged once and tried again a second later
 * at the earliest; events wait in the ring meanwhile. */
static void start_thread(struct eh_core *core)
{
	struct eh_fanout *fo = &core->fanout;
	int64_t now = eh_now_ms();
	int rc;

	if (now < fo->thread_retry_ms)
		return;
	rc = pthread_create(&fo->thread, NULL, run, core);
	if (rc) {
		if (!fo->thread_retry_ms)
			eh_core_log(core, MOSQ_LOG_ERR, "cannot start the fan-out thread: %s; retrying "
				    "every second, and until it starts the broker thread copies the events to the "
				    "sinks at every tick", strerror(rc));
		fo->thread_retry_ms = now + 1000;
		return;
	}
	fo->thread_started = true;
	if (fo->thread_retry_ms)
		eh_core_log(core, MOSQ_LOG_NOTICE, "the fan-out thread started");
}

/* ---- the broker thread's side ---- */

/* The pending counts, in notes ahead of the next event. Returns false
 * when one did not fit (its count stays pending). */
static bool put_notes(struct eh_core *core)
{
	struct eh_fanout *fo = &core->fanout;

	for (size_t i = 0; i < core->nsinks; i++) {
		struct drop_note note = { (uint32_t)i, 0, fo->pending[i] };
		void *slot;

		if (!note.count)
			continue;
		slot = eh_ring_reserve_sp(&fo->ring, sizeof(note));
		if (!slot)
			return false;
		memcpy(slot, &note, sizeof(note));
		eh_ring_publish_sp(&fo->ring);
		fo->pending[i] = 0;
	}
	fo->pending_any = false;
	return true;
}

static void count_pending(struct eh_core *core, const struct eh_event *ev)
{
	struct eh_fanout *fo = &core->fanout;

	for (size_t i = 0; i < core->nroute[ev->type]; i++) {
		struct eh_sink *s = core->route[ev->type][i];

		if (sink_takes(s, ev)) {
			s->fanout_lost++;
			fo->pending[s - core->sinks]++;
			fo->pending_any = true;
		}
	}
}

void eh_fanout_emit(struct eh_core *core, struct eh_event *ev, size_t size)
{
	struct eh_fanout *fo = &core->fanout;
	void *slot = NULL;

	if (!fo->pending_any || put_notes(core))
		slot = eh_ring_reserve_sp(&fo->ring, size);
	if (!slot) {
		count_pending(core, ev);
	} else {
		/* Each sink's seq is set as the thread copies it. */
		ev->seq = 0;
		eh_event_pack(ev, slot);
		eh_ring_commit_sp(&fo->ring);
	}
	if (!fo->thread_started)
		start_thread(core);
}

/* broker thread: the copies the fan-out thread would make, while it
 * cannot start. */
static void copy_here(struct eh_core *core)
{
	struct eh_ring_rec recs[BATCH];

	while (pass(core, recs))
		;
}

void eh_fanout_tick(struct eh_core *core)
{
	struct eh_fanout *fo = &core->fanout;

	if (!fo->on || fo->thread_started || !eh_ring_count(&fo->ring))
		return;
	start_thread(core);
	if (!fo->thread_started)
		copy_here(core);
}

void eh_fanout_stop(struct eh_core *core)
{
	struct eh_fanout *fo = &core->fanout;

	if (!fo->on)
		return;
	if (fo->thread_started) {
		struct drop_note wake = { 0, 0, 0 };
		void *slot;

		atomic_store_explicit(&fo->stop, 1, memory_order_release);
		/* A record, not only eh_ring_wake: a thread about to sleep
		 * checks for records after announcing it, so it cannot miss
		 * this one and sleep its full poll. A full ring has no room
		 * for it and needs none: its thread does not sleep. */
		slot = eh_ring_reserve_sp(&fo->ring, sizeof(wake));
		if (slot) {
			memcpy(slot, &wake, sizeof(wake));
			eh_ring_commit_sp(&fo->ring);
		}
		/* Never long: the thread only copies, and drops where a sink's
		 * ring is full. */
		pthread_join(fo->thread, NULL);
		fo->thread_started = false;
	} else {
		copy_here(core);
	}
	for (size_t i = 0; i < core->nsinks; i++)
		eh_counter_add(&core->sinks[i].seq, fo->pending[i]);
	eh_ring_destroy(&fo->ring);
	free(fo->pending);
	fo->pending = NULL;
	fo->pending_any = false;
	fo->on = false;
}
