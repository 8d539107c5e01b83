/*
 * eh_core: one plugin instance. Owns the parsed options, the node identity,
 * the sink instances (each with its ring, thread and counters) and the log
 * back-channel. eh_core_emit is the single path from the capture code to the
 * sinks: it runs on the broker thread, never blocks and never allocates.
 */
#ifndef EH_CORE_H
#define EH_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "eh_event.h"
#include "eh_fanout.h"
#include "eh_filter.h"
#include "eh_json.h"
#include "eh_options.h"
#include "eh_ring.h"
#include "eh_sink.h"

#define EH_SINKS_MAX 16
/* A sink's thread normally ends within milliseconds of the shutdown
 * deadline (its library calls are bounded by it); one still running this
 * much later is stuck in a call that ignores it, such as a write() to a
 * hard-mounted NFS export that stopped answering. */
#define EH_JOIN_GRACE_MS 10000
#define EH_LOG_SLOTS 64
#define EH_LOG_LEN 512
#define EH_EXCLUDED_MAX 16

struct eh_sink {
	const struct eh_sink_ops *ops;
	void *ctx;
	struct eh_core *core;
	char name[32];

	/* fixed after init */
	uint32_t mask;
	struct eh_topics topics;
	/* Events offered to the ring, dropped ones included; written by the
	 * thread that fills the ring (the broker thread, or the fan-out
	 * thread when the fan-out is on), read by the broker thread for the
	 * counters (eh_sink_enqueued). */
	_Atomic uint64_t seq;

	struct eh_ring ring;

	/* Counters: written with relaxed atomics (each by one side; dropped
	 * by the thread that writes seq), read by the stats publisher
	 * (eh_sink_enqueued, eh_sink_dropped). Without the fan-out, what was
	 * enqueued is seq - dropped: one counter less for the broker thread
	 * to write per event and sink. */
	_Atomic uint64_t dropped, delivered, failed;
	/* With the fan-out (eh_fanout.h): the events the fan-out thread put
	 * into the ring, written by it; and, broker thread only, the events of
	 * this sink the fan-out ring had no room for. Each is one monotonic
	 * counter, so the published ones never step back while a drop note
	 * is on its way. */
	bool via_fanout;
	_Atomic uint64_t fanout_enqueued;
	uint64_t fanout_lost;

	/* runner settings, fixed after create */
	size_t batch_max;
	int64_t linger_ms;
	int64_t retry_initial_ms, retry_max_ms, retry_max_elapsed_ms;
	bool own_files; /* eh_sink_set_own_files */
	bool own_files_if_sole; /* eh_sink_set_own_files_if_sole */

	pthread_t thread;
	bool thread_started;
	bool thread_lazy;       /* its thread waits for its first event (set by eh_core_start) */
	int64_t thread_retry_ms; /* after a failed lazy start: not before this */
	_Atomic int stop;       /* set by the broker thread at cleanup */
	_Atomic int reload_req; /* set by RELOAD, taken by the sink thread */
	_Atomic int64_t drain_deadline_ms;
	_Atomic uint64_t left;  /* events the sink could not deliver by the deadline */
	bool thread_abandoned;  /* still running after the shutdown deadline and its grace */
	_Atomic int thread_done; /* set by the thread as it ends (eh_runner_join_until) */

	/* sink thread only: the out-of-memory episode (eh_sink_out_of_memory)
	 * that ends at the next deliver that gets events through. */
	struct {
		const char *what;   /* what its first failure could not allocate; NULL: none */
		int64_t since_ms;
		uint64_t attempts;  /* deliver attempts that ran out of memory in it */
		int64_t said_ms;    /* when an episode was last said; 0: never */
		uint64_t unsaid;    /* episodes ended unsaid since then */
		int64_t long_ms;    /* tests only; 0: the default (eh_runner.c) */
		bool said;          /* this episode was logged */
		bool this_attempt;  /* the deliver being run ran out */
	} no_memory;
};

struct eh_log_channel {
	pthread_mutex_t lock;
	int level[EH_LOG_SLOTS];
	char text[EH_LOG_SLOTS][EH_LOG_LEN];
	unsigned head, count;
	_Atomic uint64_t lost;
	_Atomic int pending;
};

struct eh_capture;

struct eh_core {
	void *plugin_id; /* mosquitto_plugin_id_t */
	struct eh_option_group groups[EH_SINKS_MAX + 1]; /* what config points into */
	struct eh_config config;
	struct eh_node node;
	pthread_t broker_thread;

	uint32_t capture_mask; /* plugin_opt_events */
	struct eh_topics topics; /* plugin_opt_topics */
	uint32_t wanted;       /* union of the sinks' masks: what capture must produce */
	bool topics_any;       /* some sink narrows by topic */

	struct eh_sink sinks[EH_SINKS_MAX];
	size_t nsinks;
	/* For each event type, the sinks whose mask has it, in order: the
	 * emit loop visits only those. */
	struct eh_sink *route[EH_EV_COUNT][EH_SINKS_MAX];
	uint8_t nroute[EH_EV_COUNT];
	size_t lazy_waiting; /* sinks whose thread waits for their first event */
	bool membarrier_reported; /* eh_ring_membarrier_errno logged */
	/* Every sink set own_files (or own_files_if_sole, and sole_plugin
	 * holds): the sink threads and the fan-out thread each take a
	 * descriptor table of their own as they start. One thread left
	 * sharing would keep the broker's table shared, and a sink thread
	 * started from the fan-out thread inherits its table. Decided by
	 * eh_core_start. */
	bool own_files;
	/* The broker's configuration loads this plugin once and no other
	 * (eh_scope's sole_plugin; set by the capture at init). */
	bool sole_plugin;
	uint64_t number;
	/* On when some event type goes to two sinks or more (and the
	 * fanout_thread option allows it): eh_fanout.h. */
	struct eh_fanout fanout;

	int64_t shutdown_timeout_ms;
	/* How long past shutdown_timeout_ms eh_core_stop waits for a sink's
	 * thread before it leaves it behind (EH_JOIN_GRACE_MS). */
	int64_t join_grace_ms;
	bool abandoned; /* a thread was left behind: the core must stay allocated */
	int64_t stats_interval_ms;
	int64_t next_stats_ms;
	bool sinks_running;

	struct eh_log_channel log;
	struct eh_capture *capture;

	/* Client ids the capture ignores (eh_sink_exclude_client_id); set
	 * during init, read on the broker thread, owned. */
	char *excluded[EH_EXCLUDED_MAX];
	size_t nexcluded;
};

/* broker thread, from plugin init: parses options, creates the sinks.
 * Returns 0, or -1 after logging the error (the broker then refuses to
 * start). */
int eh_core_init(struct eh_core *core, void *plugin_id, const struct eh_kv *kv, size_t count);
/* Once the sinks' masks and topics are set (eh_core_init calls it): what
 * capture must produce and which sinks each event type goes to. */
void eh_core_route(struct eh_core *core);
/* Sets own_files from the sinks' declarations and sole_plugin (eh_core_start
 * calls it, before any thread of the plugin starts). */
void eh_core_decide_own_files(struct eh_core *core);
/* broker thread: starts the sink threads. */
int eh_core_start(struct eh_core *core);
/* broker thread, at cleanup: stops intake, drains within the shutdown
 * timeout, logs counters, joins and frees. Tolerates a partly built core.
 * Returns false when a sink's thread did not end within join_grace_ms of
 * the deadline: it is left running, with everything it may touch (the
 * core included, which the caller must then not free) and this library
 * kept. */
bool eh_core_stop(struct eh_core *core);

/* The thread that fills s's ring: the seq of the next event offered. */
static inline uint64_t eh_sink_next_seq(struct eh_sink *s)
{
	uint64_t seq = atomic_load_explicit(&s->seq, memory_order_relaxed) + 1;

	atomic_store_explicit(&s->seq, seq, memory_order_relaxed);
	return seq;
}

/* The one thread that writes this counter of a sink: adds count. A plain
 * increment, not a locked read-modify-write. */
static inline void eh_counter_add(_Atomic uint64_t *counter, uint64_t count)
{
	atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + count,
			      memory_order_relaxed);
}

/* broker thread: the events of s that went into its ring. Without the
 * fan-out the broker thread wrote both counters; with it, seq also holds
 * the numbers of events lost at the fan-out ring, so the fan-out thread
 * counts what it enqueues. */
static inline uint64_t eh_sink_enqueued(const struct eh_sink *s)
{
	if (s->via_fanout)
		return atomic_load_explicit(&s->fanout_enqueued, memory_order_relaxed);
	return atomic_load_explicit(&s->seq, memory_order_relaxed)
	       - atomic_load_explicit(&s->dropped, memory_order_relaxed);
}

/* broker thread: the events of s dropped, at its ring or at the fan-out
 * ring. */
static inline uint64_t eh_sink_dropped(const struct eh_sink *s)
{
	return atomic_load_explicit(&s->dropped, memory_order_relaxed) + s->fanout_lost;
}

/* broker thread: true when some sink wants events of this type. */
static inline bool eh_core_wants(const struct eh_core *core, unsigned type)
{
	return core->wanted & EH_EV_BIT(type);
}
/* broker thread: offers ev to every interested sink; fills number and
 * seq. Strings in ev are copied; nothing is kept. */
void eh_core_emit(struct eh_core *core, struct eh_event *ev);
/* broker thread: true when the client with this id is excluded from
 * capture (a sink's own connection). */
bool eh_core_client_excluded(const struct eh_core *core, const char *id);
/* broker thread: periodic work (log drain, stats, broker_tick hooks);
 * now_ms is eh_now_ms(), which the caller has read already; pass_end: the
 * caller is TICK (see broker_tick in eh_sink.h). */
void eh_core_tick(struct eh_core *core, int64_t now_ms, bool pass_end);
/* Broker or fan-out thread, for a sink whose thread waits for its first
 * event (thread_lazy, not started): starts it; after a failure, logs and
 * tries again a second later at the earliest. */
void eh_core_start_lazy(struct eh_sink *s);

/* The thread that fills s's ring (eh_core_emit, or the fan-out thread):
 * numbers the next event offered to s (*seq) and reserves size bytes for
 * it. NULL when the ring is full: the event is counted dropped, its seq
 * number used up so that a gap in seq is exactly what s lost, and a lazy
 * sink whose thread could not start (and so fills its ring and then gets
 * nothing) is tried again from here. */
static inline void *eh_sink_reserve(struct eh_sink *s, size_t size, uint64_t *seq)
{
	void *slot;

	*seq = eh_sink_next_seq(s);
	slot = eh_ring_reserve_sp(&s->ring, size);
	if (!slot) {
		if (s->thread_lazy && !s->thread_started)
			eh_core_start_lazy(s);
		eh_counter_add(&s->dropped, 1);
	}
	return slot;
}
/* A thread of the plugin (a sink's, the fan-out's), first thing: blocks
 * every signal (they are the broker thread's), leaves the broker's
 * descriptor table when core->own_files allows (eh_thread_own_files; a
 * failure is logged), then takes name, for top -H and ps -L: whoever finds
 * the thread by its name finds it in its own table. */
void eh_core_thread_begin(struct eh_core *core, const char *name);
/* broker thread: SIGHUP. */
void eh_core_reload(struct eh_core *core);

/* Any thread: log through the back-channel when off the broker thread. */
void eh_core_log(struct eh_core *core, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void eh_core_logv(struct eh_core *core, int level, const char *fmt, va_list ap);
/* broker thread: writes queued log lines to the broker log. */
void eh_core_log_drain(struct eh_core *core);

/* The option groups known to this build: core plus every sink type. */
size_t eh_core_option_groups(struct eh_option_group *out, size_t max);

#endif
