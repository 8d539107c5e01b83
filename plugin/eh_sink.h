/*
 * eh_sink: the contract between the core and a sink.
 *
 * A sink type is a const struct eh_sink_ops: its name, the option that
 * enables it, its option table and a few hooks. The core owns everything
 * shared: one bounded ring per sink instance, the sink's thread, batching,
 * retry with backoff and jitter, counters, shutdown drain and logging. A
 * sink only turns a batch of events into I/O and answers OK, RETRY or DROP.
 * Adding a sink touches its own file and one line in sinks/eh_sinks.c.
 *
 * Threads: "broker" is the Mosquitto main thread; "sink" is the thread the
 * core starts for that sink instance. A hook runs only on the thread named
 * in its comment, so a sink needs no locks of its own for its context.
 */
#ifndef EH_SINK_H
#define EH_SINK_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "eh_event.h"
#include "eh_json.h"
#include "eh_options.h"

struct eh_sink;
struct eh_core;

enum eh_deliver_rc {
	EH_DELIVER_OK = 0, /* every event of the batch is delivered (or handed over, with EH_SINK_ASYNC_ACK) */
	EH_DELIVER_RETRY,  /* transient failure: batch->done events were delivered; retry the rest later */
	EH_DELIVER_DROP    /* permanent failure: the undelivered events are dropped and counted as failed */
};

struct eh_batch {
	const struct eh_event *events; /* in capture order; valid until deliver returns */
	size_t count;
	size_t done;            /* out, with RETRY or DROP: how many from the front went through */
	int64_t retry_after_ms; /* out, with RETRY: the peer asked for this delay (-1 = no opinion) */
	uint64_t attempt;       /* 0 for the first try of this batch, then 1, 2, ... */
};

/* What the core lends a sink at create time; valid until destroy. */
struct eh_sink_env {
	const struct eh_config *config;
	const struct eh_node *node;
	struct eh_sink *sink;
};

/* The sink counts delivered and failed itself (eh_sink_count), for
 * libraries that confirm delivery later (Kafka delivery reports, MQTT
 * PUBACK). deliver's OK then means "handed over". */
#define EH_SINK_ASYNC_ACK 0x1u

struct eh_sink_ops {
	const char *name;                /* option prefix, log prefix and stats topic level */
	const char *enable_key;          /* the option whose presence enables the sink */
	const struct eh_option *options; /* the sink's own options; NULL key ends the table */
	const char *title;               /* heading in the configuration reference */
	unsigned flags;                  /* EH_SINK_* */

	/* broker thread, at plugin init: read and check options (error text
	 * names the key), open files, allocate. No threads, no network.
	 * Returns 0, or -1 with err set; destroy is then called on *ctx. */
	int (*create)(const struct eh_sink_env *env, void **ctx, char *err, size_t errlen);
	/* sink thread, once, before the first deliver. May be NULL. */
	int (*open)(void *ctx);
	/* sink thread: deliver a batch; see enum eh_deliver_rc. */
	enum eh_deliver_rc (*deliver)(void *ctx, struct eh_batch *batch);
	/* sink thread, after each deliver and at least every 100 ms while idle:
	 * serve the library (delivery reports, keep-alives). May be NULL. */
	void (*poll)(void *ctx);
	/* sink thread, after a SIGHUP (e.g. reopen a file). May be NULL. */
	void (*reload)(void *ctx);
	/* sink thread, at shutdown after the last deliver: finish what was
	 * handed over within timeout_ms. Returns how many handed-over events
	 * are still undelivered. May be NULL. */
	uint64_t (*flush)(void *ctx, int64_t timeout_ms);
	/* sink thread, its last call (after flush, whatever ended the
	 * thread): close the descriptors and library handles the thread
	 * opened. With eh_sink_set_own_files they are in the thread's own
	 * descriptor table, which destroy, on the broker thread, cannot
	 * reach. May be NULL. */
	void (*close)(void *ctx);
	/* broker thread, right after the stop request that set the drain
	 * deadline: for a deliver that blocks on its library (waiting for
	 * acknowledgements), to look at eh_sink_deadline_ms again now rather
	 * than when its wait ends. Must return at once. May be NULL. */
	void (*wake)(void *ctx);
	/* broker thread, from TICK (or another broker callback when TICK does
	 * not fire): for sinks that must call broker functions. pass_end is
	 * true from TICK, which Mosquitto calls at the end of each loop pass;
	 * false from another callback, in the middle of one. May be NULL. */
	void (*broker_tick)(void *ctx, bool pass_end);
	/* broker thread, at cleanup after the sink thread stopped, or after
	 * create failed: free everything; must accept a partly built ctx. */
	void (*destroy)(void *ctx);
};

/* Sink configuration of the shared runner; call from create. */
void eh_sink_set_batching(struct eh_sink *sink, size_t batch_max, int64_t linger_ms);
void eh_sink_set_retry(struct eh_sink *sink, int64_t initial_ms, int64_t max_ms, int64_t max_elapsed_ms);
/* From create: every descriptor this sink uses is opened, used and closed
 * on its own thread or on threads it creates (nothing opened in create is
 * kept; destroy, wake and broker_tick touch none; no library thread made
 * elsewhere uses one). When every sink of the plugin says so, its threads
 * leave the broker's descriptor table (eh_thread_own_files). */
void eh_sink_set_own_files(struct eh_sink *sink);
/* The same, for a sink whose library runs threads shared by every user of
 * that library in the process (paho.mqtt.c's): true only when this plugin
 * is the broker's only plugin, loaded once, so that no other code can
 * connect through those threads from another descriptor table. */
void eh_sink_set_own_files_if_sole(struct eh_sink *sink);

/* Any thread: counters for EH_SINK_ASYNC_ACK sinks. */
void eh_sink_count(struct eh_sink *sink, uint64_t delivered, uint64_t failed);
/* Any thread: logs "eventhook: <sink>: message" to the broker log, through
 * the thread-safe back-channel when not on the broker thread.
 * level is a MOSQ_LOG_* value. */
void eh_sink_log(struct eh_sink *sink, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* One thread per counter: true for the first 10 calls and every 1000th
 * after, so a problem that repeats with every event cannot flood the log. */
static inline int eh_sink_log_due(uint64_t *count)
{
	uint64_t n = (*count)++;

	return n < 10 || n % 1000 == 0;
}
/* Sink thread, from deliver: memory for what (a string literal, such as
 * "an event's JSON") could not be allocated. Returns EH_DELIVER_RETRY,
 * for deliver to return: the events stay queued and the runner retries with
 * its backoff, as memory may come back. Out of memory is said once when it
 * starts, as a warning naming what; the runner says when a deliver gets
 * events through again, with how many attempts ran out and for how long.
 * At most one episode a minute is said when it starts, so memory that
 * comes and goes with every attempt cannot flood the log; one that lasts
 * is said once it has lasted a few seconds (eh_runner.c). */
enum eh_deliver_rc eh_sink_out_of_memory(struct eh_sink *sink, const char *what);
/* The sink's shutdown deadline budget (plugin_opt_shutdown_timeout_ms). */
int64_t eh_sink_shutdown_timeout_ms(const struct eh_sink *sink);
/* Any thread: the eh_now_ms() time by which the drain at shutdown must end,
 * or INT64_MAX while the broker is running. Bound blocking calls by it. */
int64_t eh_sink_deadline_ms(const struct eh_sink *sink);
/* Milliseconds of a monotonic clock. */
int64_t eh_now_ms(void);
/* Milliseconds of the real-time clock (Unix epoch). */
int64_t eh_wall_ms(void);

/* Broker thread only: publishes a copy of payload on topic, as a message
 * from no client. Returns a MOSQ_ERR_* code.
 * Not mosquitto_broker_publish_copy: in 2.0.11 it takes the copy from libc's
 * calloc, which the broker's heap accounting never saw, and the broker frees
 * it through that accounting. Each message then lowers the broker's heap
 * count ($SYS/broker/heap/current) until it wraps, and with memory_limit set
 * the broker starts refusing its own allocations, dropping clients. */
int eh_broker_publish(const char *topic, const void *payload, size_t len, int qos, bool retain);

/* broker thread, from create only: the core ignores every client whose
 * id is exactly id (no event of any type, not even when it publishes), so
 * a sink's own connection to this same broker cannot feed back into the
 * sinks. The core copies id. Returns 0, or -1 when out of memory or when
 * EH_EXCLUDED_MAX ids are already registered. */
int eh_sink_exclude_client_id(struct eh_sink *sink, const char *id);

/* Any thread: keeps the shared library that holds fn mapped until the
 * process exits, even after the broker unloads the plugin, for library
 * threads that may outlive it. Returns NULL, or why it could not. */
const char *eh_sink_pin_library(const void *fn);

/* Reads a whole small file (a secret, a token) into a NUL-terminated buffer
 * with trailing newlines removed. Returns NULL with err naming key and path. */
char *eh_read_secret_file(const char *key, const char *path, char *err, size_t errlen);

#endif
