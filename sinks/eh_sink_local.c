/*
 * Local sink: publishes each event into this same broker, on a topic made
 * from local_topic (e.g. "$events/{event}/{clientid}").
 *
 * Broker functions may only be called on the broker thread, so the work is
 * split: the sink thread renders topic and JSON into an outbox ring, and the
 * broker thread drains the outbox from TICK with eh_broker_publish (at
 * most OUTBOX_PER_TICK messages and about TICK_BYTES_MAX bytes per tick, so
 * a backlog never stalls the broker's own traffic). Mosquitto routes what it was handed at the start
 * of its next loop pass, and TICK comes at the end of each: a message
 * counts as delivered at the tick after the one that handed it over.
 * Messages published this way produce no MESSAGE or WRITE ACL event, so
 * the sink cannot feed back into itself. With local_batch_max > 1, events
 * in a row with the same topic share a message: the broker's cost per
 * message (a store, a copy, the subscription tree) is then paid once for
 * them all. Once the plugin is stopping the
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
/* Payload bytes of messages too large for an outbox record (over a quarter
 * of OUTBOX_BYTES) that may be waiting for the broker thread at once. One
 * such message always goes when none is waiting, whatever its size. */
#define FAR_BYTES_MAX (64u << 20)
/* Payload bytes one tick hands over at most (the first message goes
 * whatever its size): a backlog of large messages never holds the broker's
 * loop for long. */
#define TICK_BYTES_MAX (4u << 20)
/* MQTT's largest remaining length, less what a PUBLISH to a subscriber adds
 * to topic and payload (topic length, packet id, MQTT 5 properties) with
 * room to spare. A larger message would be taken by the broker but could
 * never be sent: it would stay at the head of each subscriber's queue and
 * hold back everything after it. */
#define MESSAGE_MAX (EH_MQTT_REMAINING_MAX - 64u)
/* What deliver allocates, as its out-of-memory warning names it. */
#define MESSAGE_JSON "a message's JSON"

/* Outbox record: this head, the topic, then the payload, or, when far_len
 * is not 0, a pointer to a malloc'd payload of far_len bytes (a message
 * larger than a record can be). */
struct outbox_head {
	uint32_t topic_len;
	uint32_t events;
	uint64_t far_len;
};

struct local_sink {
	struct eh_sink *sink;
	const struct eh_node *node;
	struct eh_template topic;
	int qos;
	bool retain;
	bool cloudevents;
	enum eh_json_framing framing; /* SINGLE without batching */
	size_t batch_max;
	size_t batch_bytes;
	struct eh_ring outbox;
	/* Sink thread: the message being built, of msg_events events, the
	 * last ones placed in the batch; its topic is in msg_topic, and the next
	 * event's is rendered into topic_buf (the two are swapped, not copied,
	 * when a message starts). */
	char *topic_buf;
	char *msg_topic;
	size_t msg_tlen;
	uint32_t msg_events;
	struct eh_buf payload;
	uint64_t unfit_logged;  /* sink thread */
	uint64_t refused_logged; /* broker thread */
	/* sink thread: events the stopped broker could no longer take */
	uint64_t unrouted;
	/* Events in the outbox's records: added by the sink thread before it
	 * commits a record, taken off by the broker thread after it releases
	 * one, so it never counts an event twice or not at all. */
	_Atomic uint64_t outbox_events;
	_Atomic uint64_t far_bytes;
	/* Written by the broker thread: events it took at the last tick, not
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
	{ "local_batch_max", EH_OPT_INT, "1", 1, 10000, NULL, 0,
	  "Events per message at most. 1: each event is a message whose payload is one JSON object. More: "
	  "events in a row whose topics render the same share a message, whose payload is a JSON array (or "
	  "NDJSON lines with local_batch_format ndjson) even when it holds one event; the broker's work per "
	  "message is then shared by the events. The topic template may not use {seq}." },
	{ "local_batch_format", EH_OPT_ENUM, "json", 0, 0, "json|ndjson", 0,
	  "Payload of a batch (local_batch_max > 1): a JSON array, or newline-delimited objects (not with "
	  "local_format cloudevents)." },
	{ "local_batch_linger_ms", EH_OPT_INT, "0", 0, 60000, NULL, 0,
	  "How long to wait for local_batch_max events before publishing the ones queued (local_batch_max "
	  "> 1). 0: publish what is queued." },
	{ "local_batch_bytes", EH_OPT_INT, "262144", 1024, 67108864, NULL, 0,
	  "Payload bytes a batch (local_batch_max > 1) holds at most: the event that would take it past this "
	  "starts the next message. An event larger than this alone is still published, alone." },
	EH_SINK_FILTER_OPTIONS("local"),
	{ NULL, 0, NULL, 0, 0, NULL, 0, NULL },
};

/* Any thread, once nobody else uses the outbox: frees what it still holds
 * outside itself. */
static void free_far(struct local_sink *l)
{
	struct eh_ring_rec recs[64];
	size_t n;

	while ((n = eh_ring_peek_sc(&l->outbox, recs, 64)) > 0) {
		for (size_t i = 0; i < n; i++) {
			struct outbox_head h;
			char *far;

			memcpy(&h, recs[i].data, sizeof(h));
			if (!h.far_len)
				continue;
			memcpy(&far, (const char *)recs[i].data + sizeof(h) + h.topic_len, sizeof(far));
			free(far);
		}
		eh_ring_release_sc(&l->outbox, &recs[n - 1], n);
	}
}

static void local_destroy(void *ctx)
{
	struct local_sink *l = ctx;

	if (!l)
		return;
	eh_template_free(&l->topic);
	if (l->outbox.buf)
		free_far(l);
	eh_ring_destroy(&l->outbox);
	free(l->topic_buf);
	free(l->msg_topic);
	eh_buf_free(&l->payload);
	free(l);
}

static int local_create(const struct eh_sink_env *env, void **ctx, char *err, size_t errlen)
{
	struct local_sink *l = calloc(1, sizeof(*l));
	char why[400];
	bool ndjson;

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
	l->batch_max = (size_t)eh_config_int(env->config, "local_batch_max");
	l->batch_bytes = (size_t)eh_config_int(env->config, "local_batch_bytes");
	ndjson = !strcmp(eh_config_get(env->config, "local_batch_format"), "ndjson");
	l->framing = l->batch_max == 1 ? EH_JSON_SINGLE : ndjson ? EH_JSON_NDJSON : EH_JSON_ARRAY;
	if (eh_template_parse(&l->topic, eh_config_get(env->config, "local_topic"), why, sizeof(why))) {
		snprintf(err, errlen, "plugin_opt_local_topic: %s", why);
		return -1;
	}
	if (eh_template_check_topic(&l->topic, "local_topic", eh_config_get(env->config, "local_topic"), err,
				    errlen))
		return -1;
	if (ndjson && l->cloudevents) {
		snprintf(err, errlen, "plugin_opt_local_batch_format: ndjson is not a CloudEvents batch format; "
				      "use json with local_format cloudevents");
		return -1;
	}
	if (l->batch_max > 1 && eh_template_uses(&l->topic, "seq")) {
		/* Every event's topic would differ: nothing could be batched. */
		snprintf(err, errlen, "plugin_opt_local_batch_max: %zu needs a local_topic without {seq}, which gives "
				      "every event its own topic",
			 l->batch_max);
		return -1;
	}
	l->topic_buf = malloc(TOPIC_CAP);
	l->msg_topic = malloc(TOPIC_CAP);
	if (!l->topic_buf || !l->msg_topic || eh_ring_init(&l->outbox, OUTBOX_BYTES, OUTBOX_RECORDS)) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	/* Lingering waits for local_batch_max events in all, whatever their
	 * topics; without batching, events are taken 256 at a time. */
	if (l->batch_max > 1)
		eh_sink_set_batching(env->sink, l->batch_max, eh_config_int(env->config, "local_batch_linger_ms"));
	else
		eh_sink_set_batching(env->sink, 256, 0);
	/* Only a full outbox (or memory running out) makes the sink retry:
	 * wait about one tick. */
	eh_sink_set_retry(env->sink, 20, 200, -1);
	/* It hands messages to the broker through memory (the outbox), and
	 * opens no descriptor. */
	eh_sink_set_own_files(env->sink);
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

/* Sink thread: starts a message with the event whose topic (tlen bytes) is
 * in topic_buf. Returns 0, or -1 when out of memory. */
static int open_message(struct local_sink *l, size_t tlen)
{
	char *t = l->msg_topic;

	l->msg_topic = l->topic_buf;
	l->topic_buf = t;
	l->msg_tlen = tlen;
	l->payload.len = 0;
	return eh_json_batch_begin(&l->payload, l->framing);
}

/* Sink thread: whether the event whose topic is in topic_buf may join the
 * message being built (there is one). */
static bool joins(const struct local_sink *l, size_t tlen)
{
	return l->msg_events < l->batch_max && tlen == l->msg_tlen && !memcmp(l->topic_buf, l->msg_topic, tlen);
}

/* Sink thread: 0 the event was added; 1 it would take a batch past
 * batch_bytes and was not; -1 out of memory. */
static int add_event(struct local_sink *l, const struct eh_event *ev)
{
	size_t before = l->payload.len;

	if (eh_json_batch_add(&l->payload, l->framing, l->msg_events == 0, ev, l->node, l->cloudevents))
		return -1;
	if (l->msg_events && l->payload.len + EH_JSON_BATCH_END_LEN(l->framing) > l->batch_bytes) {
		l->payload.len = before;
		return 1;
	}
	l->msg_events++;
	return 0;
}

/* Sink thread: puts the message being built into the outbox. Returns 0,
 * or -1 when the outbox has no room (or memory ran out, which it says):
 * try later. */
static int close_message(struct local_sink *l)
{
	struct outbox_head h = { (uint32_t)l->msg_tlen, l->msg_events, 0 };
	size_t len;
	uint64_t far;
	char *slot;

	if (eh_json_batch_end(&l->payload, l->framing)) {
		eh_sink_out_of_memory(l->sink, MESSAGE_JSON);
		return -1;
	}
	len = l->payload.len;
	if (sizeof(h) + l->msg_tlen + len <= l->outbox.max_record) {
		slot = eh_ring_reserve_sp(&l->outbox, sizeof(h) + l->msg_tlen + len);
		if (!slot)
			return -1;
		memcpy(slot + sizeof(h) + l->msg_tlen, l->payload.data, len);
	} else {
		/* Larger than any record: the payload itself is handed over, and
		 * the buffer grows again for the next one. */
		far = atomic_load_explicit(&l->far_bytes, memory_order_relaxed);
		if (far && far + len > FAR_BYTES_MAX)
			return -1;
		slot = eh_ring_reserve_sp(&l->outbox, sizeof(h) + l->msg_tlen + sizeof(char *));
		if (!slot)
			return -1;
		h.far_len = len;
		memcpy(slot + sizeof(h) + l->msg_tlen, &l->payload.data, sizeof(char *));
		l->payload = (struct eh_buf){ 0 };
		atomic_fetch_add_explicit(&l->far_bytes, len, memory_order_relaxed);
	}
	memcpy(slot, &h, sizeof(h));
	memcpy(slot + sizeof(h), l->msg_topic, l->msg_tlen);
	atomic_fetch_add_explicit(&l->outbox_events, l->msg_events, memory_order_relaxed);
	eh_ring_commit_sp(&l->outbox);
	l->msg_events = 0;
	return 0;
}

static enum eh_deliver_rc local_deliver(void *ctx, struct eh_batch *b)
{
	struct local_sink *l = ctx;
	size_t i = 0;

	if (broker_stopped(l)) {
		l->unrouted += b->count - b->done;
		b->done = b->count;
		return EH_DELIVER_OK;
	}
	/* b->done: the events before it are in the outbox or counted failed;
	 * a retry renders the rest again. */
	b->done = 0;
	l->msg_events = 0;
	while (i < b->count) {
		const struct eh_event *ev = &b->events[i];
		size_t tlen = eh_template_render(&l->topic, ev, l->node, EH_TEMPLATE_TOPIC, l->topic_buf, TOPIC_CAP);
		const char *unfit = eh_template_topic_unfit(tlen);
		int rc;

		if (l->msg_events && (unfit || !joins(l, tlen))) {
			if (close_message(l))
				return EH_DELIVER_RETRY;
			b->done = i;
		}
		if (unfit) {
			/* No MQTT topic is empty or that long (a template of
			 * only {username}, a client without one; a huge client
			 * id): count it failed. */
			if (eh_sink_log_due(&l->unfit_logged))
				eh_sink_log(l->sink, MOSQ_LOG_WARNING, "the topic for event seq %llu is %s; not published",
					    (unsigned long long)ev->seq, unfit);
			eh_sink_count(l->sink, 0, 1);
			b->done = ++i;
			continue;
		}
		if (!l->msg_events && open_message(l, tlen))
			return eh_sink_out_of_memory(l->sink, MESSAGE_JSON);
		rc = add_event(l, ev);
		if (rc < 0)
			return eh_sink_out_of_memory(l->sink, MESSAGE_JSON);
		if (rc == 0 && l->msg_events == 1
		    && l->msg_tlen + l->payload.len + EH_JSON_BATCH_END_LEN(l->framing) > MESSAGE_MAX) {
			/* Alone (a batch is bounded far lower), too large for any
			 * MQTT packet: count it failed. */
			if (eh_sink_log_due(&l->unfit_logged))
				eh_sink_log(l->sink, MOSQ_LOG_WARNING,
					    "event seq %llu would be a message of %zu bytes, more than an MQTT packet "
					    "can carry; not published",
					    (unsigned long long)ev->seq,
					    l->msg_tlen + l->payload.len + EH_JSON_BATCH_END_LEN(l->framing));
			eh_sink_count(l->sink, 0, 1);
			l->msg_events = 0;
			b->done = ++i;
			continue;
		}
		if (rc > 0) {
			/* Full: this event starts the next message, its topic
			 * rendered again into topic_buf. */
			if (close_message(l))
				return EH_DELIVER_RETRY;
			b->done = i;
			continue;
		}
		i++;
	}
	if (l->msg_events && close_message(l))
		return EH_DELIVER_RETRY;
	b->done = b->count;
	return EH_DELIVER_OK;
}

static void local_broker_tick(void *ctx, bool pass_end)
{
	struct local_sink *l = ctx;
	struct eh_ring_rec recs[64];
	size_t total = 0, bytes = 0, n;
	char topic[TOPIC_CAP + 1];

	/* The outbox stays as it is: local_flush counts it left. */
	if (broker_stopped(l))
		return;
	eh_sink_count(l->sink, atomic_load_explicit(&l->taken, memory_order_relaxed), 0);
	atomic_store_explicit(&l->taken, 0, memory_order_relaxed);
	/* Called in the middle of a loop pass (no TICK: per_listener_settings
	 * on 2.0.11), it cannot tell passes apart: what it hands over counts
	 * at once, routed unless the broker stops within this pass. */
	while (total < OUTBOX_PER_TICK && bytes < TICK_BYTES_MAX && (n = eh_ring_peek_sc(&l->outbox, recs, 64)) > 0) {
		uint64_t ok = 0, bad = 0;
		size_t i;

		for (i = 0; i < n && (i == 0 || bytes < TICK_BYTES_MAX); i++) {
			const char *p = recs[i].data;
			struct outbox_head h;
			const char *payload;
			size_t plen;
			char *far = NULL;
			int rc;

			memcpy(&h, p, sizeof(h));
			memcpy(topic, p + sizeof(h), h.topic_len);
			topic[h.topic_len] = '\0';
			payload = p + sizeof(h) + h.topic_len;
			plen = recs[i].len - sizeof(h) - h.topic_len;
			if (h.far_len) {
				memcpy(&far, payload, sizeof(far));
				payload = far;
				plen = h.far_len;
			}
			rc = eh_broker_publish(topic, payload, plen, l->qos, l->retain);
			bytes += plen;
			if (far) {
				free(far);
				atomic_fetch_sub_explicit(&l->far_bytes, h.far_len, memory_order_relaxed);
			}
			if (rc == MOSQ_ERR_SUCCESS) {
				ok += h.events;
			} else {
				bad += h.events;
				char shown[EH_QUOTE_LEN];

				if (eh_sink_log_due(&l->refused_logged))
					eh_sink_log(l->sink, MOSQ_LOG_WARNING, "the broker refused a message on '%s': %s",
						    eh_quote(shown, sizeof(shown), topic), mosquitto_strerror(rc));
			}
		}
		eh_ring_release_sc(&l->outbox, &recs[i - 1], i);
		atomic_fetch_sub_explicit(&l->outbox_events, ok + bad, memory_order_relaxed);
		if (pass_end)
			atomic_store_explicit(&l->taken, atomic_load_explicit(&l->taken, memory_order_relaxed) + ok,
					      memory_order_relaxed);
		eh_sink_count(l->sink, pass_end ? 0 : ok, bad);
		total += i;
	}
}

/* Sink thread, at its exit: called only once the plugin is stopping, when
 * the broker no longer takes messages (broker_stopped), so nothing is
 * waited for. */
static uint64_t local_flush(void *ctx, int64_t timeout_ms)
{
	struct local_sink *l = ctx;

	(void)timeout_ms;
	return atomic_load_explicit(&l->outbox_events, memory_order_relaxed) + l->unrouted
	       + atomic_load_explicit(&l->taken, memory_order_relaxed);
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
