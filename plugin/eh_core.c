/*
 * eh_core: options, sinks, the emit path and the broker-thread chores.
 *
 * eh_core_emit is the hot path. With the fan-out on (eh_fanout.c: some event
 * type goes to two sinks or more) it packs the event once into the fan-out
 * ring and is done. Otherwise, for each sink whose mask has the event's type
 * (core->route) and whose topic filters match, it reserves room in the
 * sink's ring, fills it (packing the event once, copying it for the other
 * sinks) and publishes it; then it wakes the sleeping consumers behind one
 * fence. When a ring is full the event is counted as dropped for that sink
 * and the next sink is tried. No lock, no allocation, no system call unless
 * a consumer is asleep.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "eh_mosquitto.h"

#include "eh_core.h"
#include "eh_runner.h"
#include "eh_sinks.h"
#include "eh_thread.h"
#include "eh_version.h"

static const struct eh_option core_options[] = {
	{ "node_id", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "Name of this broker in every event (field node): up to 255 bytes of UTF-8. Default: the host name." },
	{ "events", EH_OPT_LIST, "client.*", 0, 0, NULL, 0,
	  "Event types or patterns to capture: client.connect, client.connected, client.connect_failed, "
	  "client.disconnected, client.subscribe, client.unsubscribe, client.authz_denied, message.publish, "
	  "client.*, message.*, *. Sinks narrow it with <sink>_events." },
	{ "topics", EH_OPT_LIST, NULL, 0, 0, NULL, 0,
	  "MQTT topic filters limiting the subscribe, unsubscribe, authz_denied and publish events. "
	  "Unset: every topic." },
	{ "queue_size", EH_OPT_INT, "65536", 16, 16777216, NULL, 0,
	  "Capacity of each sink's ring, in events. When a ring is full new events for that sink are "
	  "dropped and counted (dropped), never waited for." },
	{ "queue_bytes", EH_OPT_INT, "33554432", 65536, 4294967296LL, NULL, 0,
	  "Memory of each sink's ring, in bytes (rounded up to a power of two). An event is dropped when "
	  "either limit is reached; one event larger than a quarter of it is always dropped." },
	{ "payload_max_bytes", EH_OPT_INT, NULL, 0, 268435455, NULL, 0,
	  "Most bytes of a payload a message.publish event carries: payload holds the first N bytes, "
	  "payload_size stays the size the client sent, and payload_truncated is true when bytes were left "
	  "out. The cut is made before queueing, so large payloads cost the broker thread and queue_bytes "
	  "only N bytes. 0 keeps no payload bytes. Unset: the whole payload." },
	{ "fanout_thread", EH_OPT_ENUM, "auto", 0, 0, "auto|off", 0,
	  "auto: when some event type goes to two sinks or more, the broker thread writes each event once "
	  "into one more queue (of queue_size and queue_bytes) and a thread of the plugin, eh-fanout, copies "
	  "it into each sink's queue; this takes about 80 instructions per event and further sink off the "
	  "broker thread and adds one hop to each event's latency (0.2 to 0.6 ms at the median, up to 2 ms "
	  "at p99 on a busy 2-core machine). off: the broker thread writes into every sink's "
	  "queue itself, for a broker with no core to spare for one more thread." },
	{ "shutdown_timeout_ms", EH_OPT_INT, "5000", 0, 600000, NULL, 0,
	  "How long the sinks may keep delivering queued events when the broker stops." },
	{ "stats_interval", EH_OPT_INT, "60", 0, 86400, NULL, 0,
	  "Seconds between the counters published under $SYS/broker/eventhook/<sink>/; 0 disables them. "
	  "With per_listener_settings true, Mosquitto 2.0.11 to 2.0.14 never call the plugin's TICK "
	  "callback, so they are only published when a client of the listener does something (a warning "
	  "says so at start)." },
	{ "config_file", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "Path of mosquitto.conf, read to learn the broker's security settings (see docs/capture.md). "
	  "Default: the -c argument of the running broker (with two -c or more, none: the broker reads "
	  "them into one configuration). A file given here that cannot be read stops the broker at start; "
	  "the default one falls back to capturing less (docs/capture.md). Given here, it is never taken "
	  "as proof that no other plugin is loaded (docs/sinks/mqtt.md)." },
	{ NULL, 0, NULL, 0, 0, NULL, 0, NULL },
};

size_t eh_core_option_groups(struct eh_option_group *out, size_t max)
{
	size_t n = 0;

	if (n < max)
		out[n++] = (struct eh_option_group){ "general", "General", core_options };
	for (size_t i = 0; i < eh_sink_type_count && n < max; i++)
		out[n++] = (struct eh_option_group){ eh_sink_types[i]->name, eh_sink_types[i]->title,
						     eh_sink_types[i]->options };
	return n;
}

/* ---- logging ---- */

static bool on_broker_thread(struct eh_core *core)
{
	return pthread_equal(pthread_self(), core->broker_thread);
}

void eh_core_logv(struct eh_core *core, int level, const char *fmt, va_list ap)
{
	char buf[EH_LOG_LEN];
	struct eh_log_channel *ch = &core->log;

	vsnprintf(buf, sizeof(buf), fmt, ap);
	if (on_broker_thread(core)) {
		eh_core_log_drain(core);
		mosquitto_log_printf(level, "eventhook: %s", buf);
		return;
	}
	/* Off the broker thread the broker's logger is not safe to call: queue
	 * the line for the next TICK. A full channel loses lines and counts. */
	pthread_mutex_lock(&ch->lock);
	if (ch->count < EH_LOG_SLOTS) {
		unsigned at = (ch->head + ch->count) % EH_LOG_SLOTS;

		ch->level[at] = level;
		memcpy(ch->text[at], buf, sizeof(buf));
		ch->count++;
		atomic_store_explicit(&ch->pending, 1, memory_order_relaxed);
	} else {
		atomic_fetch_add_explicit(&ch->lost, 1, memory_order_relaxed);
	}
	pthread_mutex_unlock(&ch->lock);
}

void eh_core_log(struct eh_core *core, int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	eh_core_logv(core, level, fmt, ap);
	va_end(ap);
}

void eh_core_log_drain(struct eh_core *core)
{
	struct eh_log_channel *ch = &core->log;
	uint64_t lost;

	if (!atomic_load_explicit(&ch->pending, memory_order_relaxed))
		return;
	/* Never wait on the broker thread: a sink holding the lock only delays
	 * the lines to the next tick. */
	if (pthread_mutex_trylock(&ch->lock))
		return;
	while (ch->count) {
		mosquitto_log_printf(ch->level[ch->head], "eventhook: %s", ch->text[ch->head]);
		ch->head = (ch->head + 1) % EH_LOG_SLOTS;
		ch->count--;
	}
	atomic_store_explicit(&ch->pending, 0, memory_order_relaxed);
	pthread_mutex_unlock(&ch->lock);
	lost = atomic_exchange_explicit(&ch->lost, 0, memory_order_relaxed);
	if (lost)
		mosquitto_log_printf(MOSQ_LOG_WARNING, "eventhook: %llu log line(s) from sink threads were lost "
				     "(log channel full)", (unsigned long long)lost);
}

/* ---- init ---- */

static int sink_mask(struct eh_core *core, const char *name, uint32_t *mask, char *err, size_t errlen)
{
	char key[64];
	const char *v;
	char why[400] = "";

	snprintf(key, sizeof(key), "%s_events", name);
	v = eh_config_get(&core->config, key);
	if (!v) {
		*mask = core->capture_mask;
		return 0;
	}
	if (eh_filter_events_parse(v, mask, why, sizeof(why))) {
		snprintf(err, errlen, "plugin_opt_%s: %s", key, why);
		return -1;
	}
	/* A global list the admin wrote narrows every sink; the default one
	 * does not stop a sink from asking for message.publish. */
	if (eh_config_isset(&core->config, "events")) {
		*mask &= core->capture_mask;
		/* A sink that can never receive an event is a contradiction
		 * between two lines, as likely a typo as a sink option without
		 * its sink. */
		if (!*mask) {
			char sink_list[EH_QUOTE_LEN], global_list[EH_QUOTE_LEN];

			snprintf(err, errlen, "plugin_opt_%s: none of '%s' is in plugin_opt_events ('%s'), so the %s "
				 "sink would never receive an event", key, eh_quote(sink_list, sizeof(sink_list), v),
				 eh_quote(global_list, sizeof(global_list), eh_config_get(&core->config, "events")),
				 name);
			return -1;
		}
	}
	return 0;
}

static int create_sink(struct eh_core *core, const struct eh_sink_ops *ops, char *err, size_t errlen)
{
	struct eh_sink *s = &core->sinks[core->nsinks];
	struct eh_sink_env env;
	char key[64], why[400] = "";
	const char *v;

	memset(s, 0, sizeof(*s));
	s->ops = ops;
	s->core = core;
	snprintf(s->name, sizeof(s->name), "%s", ops->name);
	s->batch_max = 1;
	s->retry_initial_ms = 100;
	s->retry_max_ms = 10000;
	s->retry_max_elapsed_ms = -1;

	if (sink_mask(core, ops->name, &s->mask, err, errlen))
		goto fail;
	snprintf(key, sizeof(key), "%s_topics", ops->name);
	v = eh_config_get(&core->config, key);
	if (eh_topics_parse(&s->topics, v, why, sizeof(why))) {
		snprintf(err, errlen, "plugin_opt_%s: %s", key, why);
		goto fail;
	}
	if (eh_ring_init(&s->ring, (size_t)eh_config_int(&core->config, "queue_bytes"),
			 (uint64_t)eh_config_int(&core->config, "queue_size"))) {
		snprintf(err, errlen, "%s: cannot allocate its queue: %s", ops->name, strerror(errno));
		goto fail;
	}
	env.config = &core->config;
	env.node = &core->node;
	env.sink = s;
	if (ops->create(&env, &s->ctx, err, errlen))
		goto fail;
	/* Counted only once whole: stop and cleanup then never meet a sink
	 * that does not exist (no broker_tick on a half-built one, no
	 * "stopped" line for it). */
	core->nsinks++;
	return 0;
fail:
	if (ops->destroy && s->ctx)
		ops->destroy(s->ctx);
	s->ctx = NULL;
	eh_topics_free(&s->topics);
	eh_ring_destroy(&s->ring);
	return -1;
}

void eh_core_route(struct eh_core *core)
{
	core->wanted = 0;
	core->topics_any = false;
	memset(core->nroute, 0, sizeof(core->nroute));
	for (size_t i = 0; i < core->nsinks; i++) {
		struct eh_sink *sink = &core->sinks[i];

		core->wanted |= sink->mask;
		if (sink->topics.count)
			core->topics_any = true;
		for (unsigned t = 0; t < EH_EV_COUNT; t++) {
			if (sink->mask & EH_EV_BIT(t))
				core->route[t][core->nroute[t]++] = sink;
		}
	}
}

int eh_core_init(struct eh_core *core, void *plugin_id, const struct eh_kv *kv, size_t count)
{
	size_t ngroups = eh_core_option_groups(core->groups, EH_SINKS_MAX + 1);
	char err[1024] = "", why[400] = "", host[EH_NODE_NAME_MAX + 1] = "";
	uint64_t instance;
	const char *v;

	core->plugin_id = plugin_id;
	core->broker_thread = pthread_self();
	core->join_grace_ms = EH_JOIN_GRACE_MS;
	pthread_mutex_init(&core->log.lock, NULL);

	if (eh_config_parse(&core->config, core->groups, ngroups, kv, count, err, sizeof(err)))
		goto fail;

	v = eh_config_get(&core->config, "node_id");
	if (!v) {
		if (gethostname(host, sizeof(host) - 1) || !host[0])
			snprintf(host, sizeof(host), "localhost");
		v = host;
	}
	if (getrandom(&instance, sizeof(instance), 0) != sizeof(instance)) {
		snprintf(err, sizeof(err), "cannot read random bytes for event ids: %s", strerror(errno));
		goto fail;
	}
	if (eh_node_init(&core->node, v, instance, why, sizeof(why))) {
		snprintf(err, sizeof(err), "%s: %s", v == host ? "the host name (plugin_opt_node_id is not set)"
							 : "plugin_opt_node_id", why);
		goto fail;
	}
	if (eh_filter_events_parse(eh_config_get(&core->config, "events"), &core->capture_mask, why, sizeof(why))) {
		snprintf(err, sizeof(err), "plugin_opt_events: %s", why);
		goto fail;
	}
	if (eh_topics_parse(&core->topics, eh_config_get(&core->config, "topics"), why, sizeof(why))) {
		snprintf(err, sizeof(err), "plugin_opt_topics: %s", why);
		goto fail;
	}
	core->shutdown_timeout_ms = eh_config_int(&core->config, "shutdown_timeout_ms");
	core->stats_interval_ms = eh_config_int(&core->config, "stats_interval") * 1000;

	for (size_t i = 0; i < eh_sink_type_count; i++) {
		const struct eh_sink_ops *ops = eh_sink_types[i];

		if (!eh_config_isset(&core->config, ops->enable_key))
			continue;
		if (core->nsinks == EH_SINKS_MAX) {
			snprintf(err, sizeof(err), "too many sinks");
			goto fail;
		}
		if (create_sink(core, ops, err, sizeof(err)))
			goto fail;
	}
	/* A sink's narrowing options without the sink are almost always a
	 * typo in the enabling key: say so rather than ignore them. */
	for (size_t i = 0; i < eh_sink_type_count; i++) {
		const struct eh_sink_ops *ops = eh_sink_types[i];
		bool enabled = eh_config_isset(&core->config, ops->enable_key);

		for (size_t k = 0; k < core->config.count && !enabled; k++) {
			const struct eh_config_entry *e = &core->config.entries[k];

			for (const struct eh_option *o = ops->options; o && o->key; o++) {
				if (e->opt != o)
					continue;
				snprintf(err, sizeof(err), "plugin_opt_%s is set but the %s sink is not enabled "
					 "(plugin_opt_%s is missing)", e->key, ops->name, ops->enable_key);
				goto fail;
			}
		}
	}
	eh_core_route(core);
	if (!strcmp(eh_config_get(&core->config, "fanout_thread"), "auto") && eh_fanout_useful(core)
	    && eh_fanout_init(core, (size_t)eh_config_int(&core->config, "queue_bytes"),
			      (uint64_t)eh_config_int(&core->config, "queue_size"))) {
		snprintf(err, sizeof(err), "cannot allocate the fan-out queue: %s", strerror(errno));
		goto fail;
	}
	if (!core->nsinks)
		mosquitto_log_printf(MOSQ_LOG_WARNING, "eventhook: no sink is enabled (set plugin_opt_file_path, "
				     "plugin_opt_local_topic, ...): nothing will be captured");
	return 0;
fail:
	mosquitto_log_printf(MOSQ_LOG_ERR, "eventhook: configuration error: %s", err);
	return -1;
}

/* A sink with neither open nor poll has nothing to do before its first
 * event, so its thread starts then. Until some sink has a thread, glibc
 * keeps the broker on its single-threaded fast paths (unlocked malloc, no
 * cancellation bookkeeping around system calls), which is most of what an
 * uninterested plugin would otherwise cost per connection
 * (docs/performance.md). Sinks that talk to a peer start at once: they
 * connect, report an unreachable peer and, for MQTT, announce presence
 * before any event. */
static bool starts_at_first_event(const struct eh_sink *s)
{
	return !s->ops->open && !s->ops->poll;
}

/* From eh_core_emit or the fan-out thread: one pthread_create per sink
 * per broker lifetime. A failure is logged and tried again a second later
 * at the earliest; meanwhile events wait in the ring (or are dropped and
 * counted when it is full). */
void eh_core_start_lazy(struct eh_sink *s)
{
	int64_t now = eh_now_ms();

	if (now < s->thread_retry_ms)
		return;
	if (eh_runner_start(s)) {
		if (!s->thread_retry_ms)
			eh_core_log(s->core, MOSQ_LOG_ERR, "%s: cannot start its thread: %s; retrying every "
				    "second, events wait in its queue", s->name, strerror(errno));
		s->thread_retry_ms = now + 1000;
		return;
	}
	s->core->lazy_waiting--;
	if (s->thread_retry_ms)
		eh_core_log(s->core, MOSQ_LOG_NOTICE, "%s: thread started", s->name);
}

void eh_core_thread_begin(struct eh_core *core, const char *name)
{
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	if (core->own_files && eh_thread_own_files())
		eh_core_log(core, MOSQ_LOG_INFO, "%s keeps the descriptor table it started with (%s), so the broker "
			    "thread keeps paying the kernel's cost of a shared one", name, strerror(errno));
	pthread_setname_np(pthread_self(), name);
}

void eh_core_decide_own_files(struct eh_core *core)
{
	core->own_files = core->nsinks > 0;
	for (size_t i = 0; i < core->nsinks; i++) {
		const struct eh_sink *s = &core->sinks[i];

		core->own_files = core->own_files && (s->own_files || (s->own_files_if_sole && core->sole_plugin));
	}
}

int eh_core_start(struct eh_core *core)
{
	/* Here, not at init: the capture has read the configuration since. */
	eh_core_decide_own_files(core);
	for (size_t i = 0; i < core->nsinks; i++) {
		if (starts_at_first_event(&core->sinks[i])) {
			core->sinks[i].thread_lazy = true;
			core->lazy_waiting++;
			continue;
		}
		if (eh_runner_start(&core->sinks[i])) {
			mosquitto_log_printf(MOSQ_LOG_ERR, "eventhook: %s: cannot start its thread: %s",
					     core->sinks[i].name, strerror(errno));
			return -1;
		}
	}
	core->sinks_running = true;
	core->next_stats_ms = eh_now_ms() + core->stats_interval_ms;
	return 0;
}

/* ---- excluded clients ---- */

int eh_sink_exclude_client_id(struct eh_sink *sink, const char *id)
{
	struct eh_core *core = sink->core;
	char *copy;

	if (eh_core_client_excluded(core, id))
		return 0;
	if (core->nexcluded == EH_EXCLUDED_MAX || !(copy = strdup(id)))
		return -1;
	core->excluded[core->nexcluded++] = copy;
	return 0;
}

bool eh_core_client_excluded(const struct eh_core *core, const char *id)
{
	for (size_t i = 0; i < core->nexcluded; i++) {
		if (!strcmp(core->excluded[i], id))
			return true;
	}
	return false;
}

static void free_excluded(struct eh_core *core)
{
	for (size_t i = 0; i < core->nexcluded; i++)
		free(core->excluded[i]);
	core->nexcluded = 0;
}

/* ---- hot path ---- */

void eh_core_emit(struct eh_core *core, struct eh_event *ev)
{
	const struct eh_bytes *topic = &ev->f[EH_F_TOPIC];
	bool has_topic = EH_EV_BIT(ev->type) & EH_EV_MASK_TOPIC;
	struct eh_sink *filled[EH_SINKS_MAX];
	struct eh_sink *const *route;
	const void *packed = NULL;
	size_t size, nroute, nfilled = 0;
	bool filter;

	if (!(core->wanted & EH_EV_BIT(ev->type)))
		return;
	if (has_topic && core->topics.count && !eh_topics_match(&core->topics, topic->ptr, topic->len))
		return;
	ev->number = ++core->number;
	size = eh_event_packed_size(ev);
	if (core->fanout.on) {
		eh_fanout_emit(core, ev, size);
		return;
	}
	/* In locals: the compiler cannot know that the ring stores below
	 * leave the core alone. */
	route = core->route[ev->type];
	nroute = core->nroute[ev->type];
	filter = has_topic && core->topics_any;
	/* The event is packed once, into the first ring with room, and copied
	 * from there into the others: a copy of the whole record costs a
	 * fraction of packing it field by field again. */
	for (size_t i = 0; i < nroute; i++) {
		struct eh_sink *s = route[i];
		uint64_t seq;
		void *slot;

		if (filter && s->topics.count && !eh_topics_match(&s->topics, topic->ptr, topic->len))
			continue;
		slot = eh_sink_reserve(s, size, &seq);
		if (!slot)
			continue;
		if (!packed) {
			ev->seq = seq;
			eh_event_pack(ev, slot);
			packed = slot;
		} else {
			memcpy(slot, packed, size);
			eh_event_packed_set_seq(slot, seq);
		}
		/* A consumer may read the record copied from while it is
		 * copied: both only read it, and only this thread writes. */
		eh_ring_publish_sp(&s->ring);
		filled[nfilled++] = s;
	}
	if (!nfilled)
		return;
	/* One fence for all rings: orders every head store before every
	 * sleeping load (pairs with the consumer's barrier in eh_ring_wait_sc). */
	eh_ring_fence_sp();
	for (size_t i = 0; i < nfilled; i++)
		eh_ring_notify_sp(&filled[i]->ring);
	for (size_t i = 0; core->lazy_waiting && i < nfilled; i++) {
		if (!filled[i]->thread_started && filled[i]->thread_lazy)
			eh_core_start_lazy(filled[i]);
	}
}

/* ---- broker-thread chores ---- */

int eh_broker_publish(const char *topic, const void *payload, size_t len, int qos, bool retain)
{
	void *copy;
	int rc;

	if (len > INT_MAX)
		return MOSQ_ERR_PAYLOAD_SIZE;
	/* The broker frees the payload with its own free, which subtracts
	 * what this malloc added to its heap count. */
	copy = mosquitto_malloc(len ? len : 1);
	if (!copy)
		return MOSQ_ERR_NOMEM;
	memcpy(copy, payload, len);
	rc = mosquitto_broker_publish(NULL, topic, (int)len, copy, qos, retain, NULL);
	/* Only a message the broker queued owns its payload. */
	if (rc != MOSQ_ERR_SUCCESS)
		mosquitto_free(copy);
	return rc;
}

static void publish_stat(struct eh_sink *s, const char *what, uint64_t value)
{
	char topic[128], payload[24];
	int n = snprintf(payload, sizeof(payload), "%llu", (unsigned long long)value);

	snprintf(topic, sizeof(topic), "$SYS/broker/eventhook/%s/%s", s->name, what);
	eh_broker_publish(topic, payload, (size_t)n, 0, true);
}

struct eh_sink_counts {
	uint64_t enqueued, dropped, delivered, failed;
};

static struct eh_sink_counts counts(struct eh_sink *s)
{
	struct eh_sink_counts c;

	c.enqueued = eh_sink_enqueued(s);
	c.dropped = eh_sink_dropped(s);
	c.delivered = atomic_load_explicit(&s->delivered, memory_order_relaxed);
	c.failed = atomic_load_explicit(&s->failed, memory_order_relaxed);
	return c;
}

static void publish_stats(struct eh_core *core)
{
	for (size_t i = 0; i < core->nsinks; i++) {
		struct eh_sink *s = &core->sinks[i];
		struct eh_sink_counts c = counts(s);
		uint64_t settled = c.delivered + c.failed;

		publish_stat(s, "enqueued", c.enqueued);
		publish_stat(s, "delivered", c.delivered);
		publish_stat(s, "dropped", c.dropped);
		publish_stat(s, "failed", c.failed);
		publish_stat(s, "queued", c.enqueued > settled ? c.enqueued - settled : 0);
	}
}

void eh_core_tick(struct eh_core *core, int64_t now_ms, bool pass_end)
{
	eh_core_log_drain(core);
	eh_fanout_tick(core);
	for (size_t i = 0; i < core->nsinks; i++) {
		if (core->sinks[i].ops->broker_tick)
			core->sinks[i].ops->broker_tick(core->sinks[i].ctx, pass_end);
	}
	if (core->stats_interval_ms > 0 && core->sinks_running && now_ms >= core->next_stats_ms) {
		core->next_stats_ms = now_ms + core->stats_interval_ms;
		publish_stats(core);
	}
	if (!core->membarrier_reported) {
		int err = atomic_load_explicit(&eh_ring_membarrier_errno, memory_order_relaxed);

		if (err) {
			core->membarrier_reported = true;
			eh_core_log(core, MOSQ_LOG_WARNING,
				    "membarrier failed (%s) after it was set up; sink threads with nothing to do now "
				    "wake every millisecond instead of sleeping, and nothing is lost",
				    strerror(err));
		}
	}
}

void eh_core_reload(struct eh_core *core)
{
	for (size_t i = 0; i < core->nsinks; i++) {
		atomic_store_explicit(&core->sinks[i].reload_req, 1, memory_order_release);
		eh_runner_wake(&core->sinks[i]);
	}
}

/* A thread that outlived the deadline and its grace is left running: the
 * process is about to exit, and waiting would hang the broker's stop for
 * as long as the call that holds it. Whatever it has not settled is left
 * undelivered; everything it may touch stays allocated, and this library
 * mapped after the broker unloads it. */
static void abandon(struct eh_core *core, struct eh_sink *s)
{
	const char *why = eh_sink_pin_library((const void *)eh_core_stop);

	s->thread_abandoned = true;
	core->abandoned = true;
	mosquitto_log_printf(MOSQ_LOG_ERR, "eventhook: %s: its thread is still busy %lld ms after the shutdown "
			     "deadline, in a call that does not return (such as a write to a storage that stopped "
			     "answering, or its library's shutdown); the broker stops without it%s%s", s->name,
			     (long long)core->join_grace_ms, why ? "; cannot keep the plugin loaded for it: " : "",
			     why ? why : "");
}

bool eh_core_stop(struct eh_core *core)
{
	int64_t deadline;

	/* First, so that the sinks' rings hold every event before their
	 * threads are told to drain them; the drain's time starts after. */
	eh_fanout_stop(core);
	deadline = eh_now_ms() + core->shutdown_timeout_ms;
	for (size_t i = 0; i < core->nsinks; i++) {
		struct eh_sink *s = &core->sinks[i];

		/* A lazy sink that never got its thread has delivered nothing. */
		if (!s->thread_started)
			atomic_store_explicit(&s->left, eh_ring_count(&s->ring), memory_order_relaxed);
		eh_runner_request_stop(s, deadline);
	}
	/* No broker_tick from here on: Mosquitto calls the plugin's cleanup
	 * after its last loop pass and routes nothing handed to it now. */
	for (size_t i = 0; i < core->nsinks; i++) {
		if (eh_runner_join_until(&core->sinks[i], deadline + core->join_grace_ms))
			abandon(core, &core->sinks[i]);
	}
	eh_core_log_drain(core);
	for (size_t i = 0; i < core->nsinks; i++) {
		struct eh_sink *s = &core->sinks[i];
		struct eh_sink_counts c = counts(s);
		uint64_t settled = c.delivered + c.failed;
		/* A thread left behind has not counted what it did not settle;
		 * from the same snapshot as the line, which it may still change. */
		uint64_t left = s->thread_abandoned ? (c.enqueued > settled ? c.enqueued - settled : 0)
						    : atomic_load_explicit(&s->left, memory_order_relaxed);

		if (s->thread_abandoned)
			atomic_store_explicit(&s->left, left, memory_order_relaxed);
		mosquitto_log_printf(left ? MOSQ_LOG_WARNING : MOSQ_LOG_NOTICE,
				     "eventhook: %s: stopped; enqueued %llu, delivered %llu, failed %llu, dropped %llu, "
				     "left undelivered at shutdown %llu", s->name, (unsigned long long)c.enqueued,
				     (unsigned long long)c.delivered, (unsigned long long)c.failed,
				     (unsigned long long)c.dropped, (unsigned long long)left);
		if (s->thread_abandoned)
			continue;
		if (s->ops->destroy && s->ctx)
			s->ops->destroy(s->ctx);
		s->ctx = NULL;
		eh_topics_free(&s->topics);
		eh_ring_destroy(&s->ring);
	}
	/* The capture sees no sink from here on. */
	core->wanted = 0;
	memset(core->nroute, 0, sizeof(core->nroute));
	if (core->abandoned)
		return false; /* its options, its log channel and the core stay */
	core->nsinks = 0;
	free_excluded(core);
	eh_topics_free(&core->topics);
	eh_config_free(&core->config);
	pthread_mutex_destroy(&core->log.lock);
	return true;
}
