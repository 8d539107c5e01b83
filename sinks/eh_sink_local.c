/*
 * Local sink: publishes each event into this same broker, on a topic made
 * from local_topic (e.g. "$events/{event}/{clientid}").
 *
 * Broker functions may only be called on the broker thread, so the work is
 * split: the sink thread renders topic and JSON into an outbox ring, and the
 * broker thread drains the outbox from TICK with eh_broker_publish
 * (at most OUTBOX_PER_TICK messages per tick, so a backlog never stalls the
 * broker's own traffic). Mosquitto routes what it was handed at the start
 * of its next loop pass, and TICK comes at the end of each: a message
 * counts as delivered at the tick after the one that handed it over.
 * Messages published this way produce no MESSAGE or WRITE ACL event, so
 * the sink cannot feed back into itself. Once the plugin is stopping the
 * broker routes nothing more, and what the sink still holds is counted
 * left instead of handed over.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eh_mosquitto.h"

#include "eh_ring.h"
#include "eh_sinks.h"
#include "eh_template.h"

#define OUTBOX_BYTES (4u << 20)
#define OUTBOX_RECORDS 8192
#define OUTBOX_PER_TICK 1024
#define TOPIC_CAP 65536

struct local_sink {
	struct eh_sink *sink;
	const struct eh_node *node;
	struct eh_template topic;
	int qos;
	bool retain;
	bool cloudevents;
	struct eh_ring outbox;
	char *topic_buf;
	struct eh_buf payload; /* one event's JSON */
	uint64_t unfit_logged;  /* sink thread */
	uint64_t refused_logged; /* broker thread */
	/* sink thread: events the stopped broker could no longer take */
	uint64_t unrouted;
	/* Written by the broker thread: messages it took at the last tick, not
	 * routed yet; if the broker stops first, never. local_flush reads it
	 * after the stop request, which orders it (release and acquire on
	 * the sink's deadline). */
	_Atomic uint64_t taken;
};

static const struct eh_option local_options[] = {
	{ "local_topic", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "Enables the local sink: each event is published into this broker on this topic template. "
	  "Placeholders {event} {node} {clientid} {username} {seq}; client-supplied values have '/', '+', "
	  "'#', '%', control characters, invalid UTF-8 and a '$' that would start the topic written as %XX. The "
	  "template's own text may hold no '+', '#' or control character. Example: $events/{event}/{clientid}." },
	{ "local_qos", EH_OPT_INT, "0", 0, 2, NULL, 0, "QoS of the published events." },
	{ "local_retain", EH_OPT_BOOL, "false", 0, 0, NULL, 0, "Publish the events retained." },
	{ "local_format", EH_OPT_ENUM, "json", 0, 0, "json|cloudevents", 0,
	  "Payload format: our JSON event, or a CloudEvents 1.0 structured-mode envelope." },
	EH_SINK_FILTER_OPTIONS("local"),
	{ NULL, 0, NULL, 0, 0, NULL, 0, NULL },
};

static void local_destroy(void *ctx)
{
	struct local_sink *l = ctx;

	if (!l)
		return;
	eh_template_free(&l->topic);
	eh_ring_destroy(&l->outbox);
	free(l->topic_buf);
	eh_buf_free(&l->payload);
	free(l);
}

static int local_create(const struct eh_sink_env *env, void **ctx, char *err, size_t errlen)
{
	struct local_sink *l = calloc(1, sizeof(*l));
	char why[400];

	*ctx = l;
	if (!l) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	l->sink = env->sink;
	l->node = env->node;
	l->qos = (int)eh_config_int(env->config, "local_qos");
	l->retain = eh_config_bool(env->config, "local_retain");
	l->cloudevents = !strcmp(eh_config_get(env->config, "local_format"), "cloudevents");
	if (eh_template_parse(&l->topic, eh_config_get(env->config, "local_topic"), why, sizeof(why))) {
		snprintf(err, errlen, "plugin_opt_local_topic: %s", why);
		return -1;
	}
	if (eh_template_check_topic(&l->topic, "local_topic", eh_config_get(env->config, "local_topic"), err,
				    errlen))
		return -1;
	l->topic_buf = malloc(TOPIC_CAP);
	if (!l->topic_buf || eh_ring_init(&l->outbox, OUTBOX_BYTES, OUTBOX_RECORDS)) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	eh_sink_set_batching(env->sink, 256, 0);
	/* Only a full outbox makes the sink retry: wait about one tick. */
	eh_sink_set_retry(env->sink, 20, 200, -1);
	return 0;
}

/* Any thread: the plugin is being stopped. Mosquitto leaves its loop
 * before it calls the plugin's cleanup and never routes a message after
 * that: what is handed to it then is lost, whatever it answers, so it is
 * not handed over but counted left. */
static bool broker_stopped(const struct local_sink *l)
{
	return eh_sink_deadline_ms(l->sink) != INT64_MAX;
}

/* Outbox record: uint32 topic length, topic bytes, payload bytes. */
static enum eh_deliver_rc local_deliver(void *ctx, struct eh_batch *b)
{
	struct local_sink *l = ctx;

	if (broker_stopped(l)) {
		l->unrouted += b->count - b->done;
		b->done = b->count;
		return EH_DELIVER_OK;
	}
	for (b->done = 0; b->done < b->count; b->done++) {
		const struct eh_event *ev = &b->events[b->done];
		size_t tlen = eh_template_render(&l->topic, ev, l->node, EH_TEMPLATE_TOPIC, l->topic_buf, TOPIC_CAP);
		uint32_t t32 = (uint32_t)tlen;
		const char *unfit = eh_template_topic_unfit(tlen);
		const char *payload;
		size_t plen;
		char *slot;

		if (unfit) {
			/* No MQTT topic is empty or that long (a template of
			 * only {username}, a client without one; a huge client
			 * id): count it failed. */
			if (eh_sink_log_due(&l->unfit_logged))
				eh_sink_log(l->sink, MOSQ_LOG_WARNING, "the topic for event seq %llu is %s; not published",
					    (unsigned long long)ev->seq, unfit);
			eh_sink_count(l->sink, 0, 1);
			continue;
		}
		l->payload.len = 0;
		if (l->cloudevents ? eh_json_write_cloudevent(&l->payload, ev, l->node)
				   : eh_json_write_event(&l->payload, ev, l->node))
			return EH_DELIVER_RETRY;
		payload = l->payload.data;
		plen = l->payload.len;
		slot = eh_ring_reserve_sp(&l->outbox, (uint32_t)(sizeof(t32) + tlen + plen));
		if (!slot)
			return EH_DELIVER_RETRY;
		memcpy(slot, &t32, sizeof(t32));
		memcpy(slot + sizeof(t32), l->topic_buf, tlen);
		memcpy(slot + sizeof(t32) + tlen, payload, plen);
		eh_ring_commit_sp(&l->outbox);
	}
	return EH_DELIVER_OK;
}

static void local_broker_tick(void *ctx, bool pass_end)
{
	struct local_sink *l = ctx;
	struct eh_ring_rec recs[64];
	size_t total = 0, n;
	char topic[TOPIC_CAP + 1];

	/* The outbox stays as it is: local_flush counts it left. */
	if (broker_stopped(l))
		return;
	eh_sink_count(l->sink, atomic_load_explicit(&l->taken, memory_order_relaxed), 0);
	atomic_store_explicit(&l->taken, 0, memory_order_relaxed);
	/* Called in the middle of a loop pass (no TICK: per_listener_settings
	 * on 2.0.11), it cannot tell passes apart: what it hands over counts
	 * at once, routed unless the broker stops within this pass. */
	while (total < OUTBOX_PER_TICK && (n = eh_ring_peek_sc(&l->outbox, recs, 64)) > 0) {
		uint64_t ok = 0, bad = 0;

		for (size_t i = 0; i < n; i++) {
			const char *p = recs[i].data;
			uint32_t tlen;
			int rc;

			memcpy(&tlen, p, sizeof(tlen));
			memcpy(topic, p + sizeof(tlen), tlen);
			topic[tlen] = '\0';
			rc = eh_broker_publish(topic, p + sizeof(tlen) + tlen, recs[i].len - sizeof(tlen) - tlen, l->qos,
					       l->retain);

			if (rc == MOSQ_ERR_SUCCESS) {
				ok++;
			} else {
				bad++;
				char shown[EH_QUOTE_LEN];

				if (eh_sink_log_due(&l->refused_logged))
					eh_sink_log(l->sink, MOSQ_LOG_WARNING, "the broker refused a message on '%s': %s",
						    eh_quote(shown, sizeof(shown), topic), mosquitto_strerror(rc));
			}
		}
		eh_ring_release_sc(&l->outbox, &recs[n - 1], n);
		if (pass_end)
			atomic_store_explicit(&l->taken, atomic_load_explicit(&l->taken, memory_order_relaxed) + ok,
					      memory_order_relaxed);
		eh_sink_count(l->sink, pass_end ? 0 : ok, bad);
		total += n;
	}
}

/* Sink thread, at its exit: called only once the plugin is stopping, when
 * the broker no longer takes messages (broker_stopped), so nothing is
 * waited for. */
static uint64_t local_flush(void *ctx, int64_t timeout_ms)
{
	struct local_sink *l = ctx;

	(void)timeout_ms;
	return eh_ring_count(&l->outbox) + l->unrouted + atomic_load_explicit(&l->taken, memory_order_relaxed);
}

const struct eh_sink_ops eh_sink_local_ops = {
	.name = "local",
	.enable_key = "local_topic",
	.options = local_options,
	.title = "Local sink",
	.flags = EH_SINK_ASYNC_ACK,
	.create = local_create,
	.deliver = local_deliver,
	.flush = local_flush,
	.broker_tick = local_broker_tick,
	.destroy = local_destroy,
};
