/*
 * Kafka sink: each event becomes one Kafka message produced with librdkafka.
 *
 * create builds and validates an rd_kafka_conf_t (no I/O): our defaults
 * first, then every plugin_opt_kafka.<property> unchanged, so the user can
 * override any default and librdkafka's own error text reports a bad
 * property before the broker starts. open (sink thread, all signals blocked,
 * so librdkafka's threads inherit a mask that leaves the broker's signals
 * alone) creates the producer from a copy of that configuration.
 *
 * deliver renders topic and key, builds the value and headers and calls
 * rd_kafka_producev per event; librdkafka batches, compresses and retries.
 * The per-event work is kept to what the message needs: librdkafka copies
 * the value out of our scratch buffer into the allocation it makes for the
 * message anyway (one allocation, not two), topic handles are kept rather
 * than looked up by name for each message, and delivery reports only add
 * to local counts that reach the shared counters once per poll.
 * When librdkafka's queue is full the sink serves delivery reports for a
 * moment and then answers RETRY, so the backlog moves back into the ring,
 * where the core drops and counts what does not fit. The sink is
 * EH_SINK_ASYNC_ACK: a message counts as delivered or failed only in its
 * delivery report, which runs on the sink thread (rd_kafka_poll from the
 * poll hook, rd_kafka_flush from the flush hook), so the counters need no
 * lock and each message is counted exactly once.
 *
 * Fatal errors: an idempotent producer that lost track of its sequence
 * numbers is unusable. librdkafka then stops sending and fails what it holds
 * in delivery reports; while the handle is fatal, on_delivery keeps a copy of
 * each failed message (topic, key, value, headers, timestamp) instead of
 * counting it. restart_producer gives the requests in flight a moment to be
 * answered, purges the rest, replaces the handle and produces the kept
 * messages again, in the order they were first produced (each message's
 * opaque is its number in that order; purged reports do not come back in
 * it), before any new event. Only what was in flight may then reach Kafka
 * twice. Fatal errors that keep coming are not answered with resends for
 * ever: beyond RESTARTS_MAX restarts within RESTART_WINDOW_MS, what the
 * failed handle held is counted failed.
 *
 * Shutdown: flush waits for the outstanding messages within the deadline;
 * those still unconfirmed, or kept and not produced again yet, are reported
 * as left, and no delivery report is counted after that, so enqueued =
 * delivered + failed + left (+ what was still in the ring) always holds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <mosquitto.h>

#include "eh_sink_kafka.h"
#include "eh_sinks.h"
#include "eh_template.h"

#define BATCH_MAX 1024
/* How long deliver serves delivery reports on a full queue before it hands
 * the batch back to the runner (which then backs off). */
#define QUEUE_FULL_WAIT_MS 100
/* Same librdkafka error reported again within this window is not logged. */
#define ERROR_LOG_EVERY_MS 30000
/* Topic handles kept for a template with placeholders; a miss costs one
 * lookup by name in librdkafka, as producing by name does every time. */
#define TOPIC_CACHE 8
/* After a fatal error, how long the requests in flight may take to be
 * answered before they are purged: a message Kafka confirms in that time is
 * counted delivered rather than produced a second time. Shorter at
 * shutdown when the deadline is nearer. */
#define FATAL_SETTLE_MS 1000
/* More fatal errors than this within the window, and what the failed
 * producer held is counted failed rather than produced again. */
#define RESTARTS_MAX 3
#define RESTART_WINDOW_MS 60000
/* librdkafka 2.3.0: the first release whose idempotent producer no longer
 * raises a fatal error after a lost response and a retriable error. */
#define RDKAFKA_IDEMPOTENCE_FIXED 0x020300ff

struct topic_entry {
	rd_kafka_topic_t *rkt; /* NULL: free slot */
	size_t len;
	char name[EH_KAFKA_TOPIC_MAX + 1];
};

/* A message a fatal error took from librdkafka, to be produced again. */
struct kept_msg {
	uintptr_t number;            /* its place in the order of production */
	int64_t timestamp;           /* its CreateTime, or 0 */
	rd_kafka_headers_t *headers; /* owned; NULL: none */
	bool has_key;
	size_t topic_len, key_len, value_len;
	char data[];                 /* topic, '\0', key, value */
};

struct kafka_sink {
	struct eh_sink *sink;
	const struct eh_node *node;
	rd_kafka_conf_t *conf; /* validated; a copy goes to each rd_kafka_new */
	rd_kafka_t *rk;        /* sink thread; NULL until open succeeds */
	struct eh_template topic;
	struct eh_template key;
	bool has_key;
	bool key_is_clientid;  /* the default key: the client id's bytes as they are */
	bool topic_fixed;      /* no placeholder: one topic for every event */
	bool cloudevents;
	int log_max;           /* highest librdkafka log level forwarded */
	char topic_buf[EH_KAFKA_TOPIC_MAX + 2];
	char *key_buf;
	size_t key_cap;

	/* sink thread only (delivery reports and errors are served there) */
	uint64_t produced; /* events handed to librdkafka (each once, however often produced) */
	uint64_t reported; /* events counted delivered or failed */
	uint64_t report_ok, report_failed; /* not yet added to the sink's counters */
	struct topic_entry topics[TOPIC_CACHE]; /* handles of the current rk */
	unsigned topic_next;                    /* slot the next miss replaces */
	bool closing;      /* after flush: reports are no longer counted */
	bool fatal;        /* the producer hit a fatal error: recreate it */
	bool open_failed_logged;
	bool queue_full_logged;
	int last_error;
	int64_t last_error_ms;
	uint64_t failed_logged;
	struct eh_buf scratch; /* one event's JSON */
	/* Messages a fatal error failed, not yet produced again: kept[head..len),
	 * counted in produced but not in reported. */
	struct kept_msg **kept;
	size_t kept_head, kept_len, kept_cap;
	int64_t restart_ms[RESTARTS_MAX]; /* the last restarts, a ring */
	unsigned restarts;                /* how many restart_ms holds, at most RESTARTS_MAX */
	unsigned restart_next;            /* the slot the next restart overwrites */
};

static const struct eh_option kafka_options[] = {
	{ "kafka_brokers", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "Enables the Kafka sink: the bootstrap brokers, host:port[,host:port...] (librdkafka's "
	  "bootstrap.servers). Example: kafka1:9092,kafka2:9092." },
	{ "kafka_topic", EH_OPT_STRING, "mqtt-events", 0, 0, NULL, 0,
	  "Topic template. Placeholders {event} {node} {clientid} {username} {seq}. Kafka topic names hold "
	  "only a-z A-Z 0-9 . _ - and at most 249 bytes: a literal character outside that set is a "
	  "configuration error; in a rendered value each other byte becomes '_' and the name is cut at 249 "
	  "bytes. Example: mqtt.{event}." },
	{ "kafka_key", EH_OPT_STRING, "{clientid}", 0, 0, NULL, 0,
	  "Message key template, rendered as raw bytes. The default keeps every event of one client in one "
	  "partition, in order. The word none: no key (librdkafka's partitioner spreads the events)." },
	{ "kafka_format", EH_OPT_ENUM, "json", 0, 0, "json|cloudevents", 0,
	  "Message value and headers: our JSON event with headers event and node; or CloudEvents 1.0 "
	  "binary mode: the same value plus the ce_specversion, ce_type, ce_source, ce_id, ce_time and "
	  "content-type headers." },
	{ "kafka_sasl_password_file", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "File holding the SASL password (librdkafka's sasl.password); read at start, never logged." },
	{ "kafka_ssl_key_password_file", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "File holding the passphrase of the client key (librdkafka's ssl.key.password); read at start, "
	  "never logged." },
	{ "kafka.", EH_OPT_STRING, NULL, 0, 0, NULL, EH_OPT_PREFIX | EH_OPT_SECRET,
	  "Any librdkafka configuration property, passed through unchanged and applied after the sink's "
	  "defaults: plugin_opt_kafka.security.protocol sasl_ssl, plugin_opt_kafka.compression.type zstd, "
	  "plugin_opt_kafka.linger.ms 20. A property librdkafka rejects stops the broker from starting with "
	  "librdkafka's own message. See docs/sinks/kafka.md for the defaults." },
	EH_SINK_FILTER_OPTIONS("kafka"),
	{ NULL, 0, NULL, 0, 0, NULL, 0, NULL },
};

bool eh_kafka_topic_char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_'
	       || c == '-';
}

size_t eh_kafka_topic_sanitize(char *name, size_t len)
{
	if (len > EH_KAFKA_TOPIC_MAX)
		len = EH_KAFKA_TOPIC_MAX;
	for (size_t i = 0; i < len; i++) {
		if (!eh_kafka_topic_char_ok((unsigned char)name[i]))
			name[i] = '_';
	}
	/* Kafka refuses "." and ".." (they are directory names on the
	 * broker); "" is no name at all. */
	if (len == 0 || (len == 1 && name[0] == '.'))
		name[0] = '_', len = 1;
	else if (len == 2 && name[0] == '.' && name[1] == '.')
		name[0] = name[1] = '_';
	name[len] = '\0';
	return len;
}

/* ---- librdkafka callbacks ---- */

static int mosq_level(int syslog_level)
{
	/* librdkafka reports a refused connection at 3 (LOG_ERR); for a
	 * broker that is a transient condition, a warning. */
	if (syslog_level <= 2)
		return MOSQ_LOG_ERR;
	if (syslog_level <= 4)
		return MOSQ_LOG_WARNING;
	if (syslog_level == 5)
		return MOSQ_LOG_NOTICE;
	return syslog_level == 6 ? MOSQ_LOG_INFO : MOSQ_LOG_DEBUG;
}

/* Any librdkafka thread. Notices and worse reach the broker log; with
 * kafka.debug set, librdkafka's debug lines too (the user asked for them). */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	struct kafka_sink *k = rd_kafka_opaque(rk);

	if (k && level <= k->log_max)
		eh_sink_log(k->sink, mosq_level(level), "librdkafka %s: %s", fac, buf);
}

/* Sink thread (served by rd_kafka_poll). Transient errors (a broker down)
 * repeat while they last: one line per error code per 30 s is enough. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct kafka_sink *k = opaque;
	int64_t now = eh_now_ms();

	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		char why[512];
		rd_kafka_resp_err_t cause = rd_kafka_fatal_error(rk, why, sizeof(why));
		/* The sequence errors of librdkafka's issue #3584: name the
		 * cause, since upgrading removes it. */
		bool known_bug = cause == RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER
				 && rd_kafka_version() < RDKAFKA_IDEMPOTENCE_FIXED;

		eh_sink_log(k->sink, MOSQ_LOG_ERR, "fatal producer error: %s; restarting the producer%s%s%s", why,
			    known_bug ? " (on librdkafka " : "", known_bug ? rd_kafka_version_str() : "",
			    known_bug ? " this can follow a response lost to a disconnection and a retriable error: "
					"librdkafka issue #3584, fixed in 2.3.0)" : "");
		k->fatal = true;
		return;
	}
	if (err == k->last_error && now - k->last_error_ms < ERROR_LOG_EVERY_MS)
		return;
	k->last_error = err;
	k->last_error_ms = now;
	eh_sink_log(k->sink, MOSQ_LOG_WARNING, "%s: %s", rd_kafka_err2name(err), reason);
}

/* Sink thread. Appends km to the kept messages; -1 when out of memory. */
static int keep_append(struct kafka_sink *k, struct kept_msg *km)
{
	if (k->kept_len == k->kept_cap) {
		size_t cap = k->kept_cap ? k->kept_cap * 2 : 64;
		struct kept_msg **grown = realloc(k->kept, cap * sizeof(*grown));

		if (!grown)
			return -1;
		k->kept = grown;
		k->kept_cap = cap;
	}
	k->kept[k->kept_len++] = km;
	return 0;
}

static void kept_free(struct kept_msg *km)
{
	if (km && km->headers)
		rd_kafka_headers_destroy(km->headers);
	free(km);
}

/* Sink thread, from a delivery report of a producer that hit a fatal error:
 * copies what producing the message again takes (librdkafka frees its own
 * copy of the value, made with RD_KAFKA_MSG_F_COPY, when the report
 * returns). Returns 0, or -1 when out of memory. */
static int keep(struct kafka_sink *k, const rd_kafka_message_t *m)
{
	const char *topic = rd_kafka_topic_name(m->rkt);
	size_t topic_len = strlen(topic), key_len = m->key ? m->key_len : 0;
	struct kept_msg *km = malloc(sizeof(*km) + topic_len + 1 + key_len + m->len);
	rd_kafka_headers_t *headers = NULL;
	rd_kafka_timestamp_type_t ts_type;

	if (!km)
		return -1;
	km->number = (uintptr_t)m->_private;
	km->timestamp = rd_kafka_message_timestamp(m, &ts_type);
	if (ts_type != RD_KAFKA_TIMESTAMP_CREATE_TIME || km->timestamp < 0)
		km->timestamp = 0;
	km->headers = NULL;
	if (!rd_kafka_message_headers(m, &headers) && !(km->headers = rd_kafka_headers_copy(headers))) {
		free(km);
		return -1;
	}
	km->has_key = m->key != NULL;
	km->topic_len = topic_len;
	km->key_len = key_len;
	km->value_len = m->len;
	memcpy(km->data, topic, topic_len + 1);
	if (key_len)
		memcpy(km->data + topic_len + 1, m->key, key_len);
	if (m->len)
		memcpy(km->data + topic_len + 1 + key_len, m->payload, m->len);
	if (keep_append(k, km)) {
		kept_free(km);
		return -1;
	}
	return 0;
}

/* Sink thread (rd_kafka_poll / rd_kafka_flush). */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct kafka_sink *k = opaque;

	if (k->closing)
		return;
	if (!m->err) {
		k->reported++;
		k->report_ok++;
		return;
	}
	/* Failed because the handle hit a fatal error (purged from its
	 * queue, or in the request that raised it): the message itself is
	 * fine, and a new producer takes it again. Not counted yet. */
	if (rd_kafka_fatal_error(rk, NULL, 0) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		k->fatal = true;
		if (!keep(k, m))
			return;
		k->reported++;
		k->report_failed++;
		if (eh_sink_log_due(&k->failed_logged))
			eh_sink_log(k->sink, MOSQ_LOG_WARNING, "message to topic %s not delivered: out of memory keeping "
				    "it for the new producer", rd_kafka_topic_name(m->rkt));
		return;
	}
	k->reported++;
	k->report_failed++;
	/* A broken configuration fails every message: log the first few and
	 * then every 1000th, not each one. */
	if (eh_sink_log_due(&k->failed_logged)) {
		unsigned long long seq = eh_kafka_value_seq(m->payload, m->len);

		if (seq)
			eh_sink_log(k->sink, MOSQ_LOG_WARNING, "event seq %llu not delivered to topic %s: %s", seq,
				    rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
		else
			eh_sink_log(k->sink, MOSQ_LOG_WARNING, "message to topic %s not delivered: %s",
				    rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
	}
}

/* Sink thread. The counters are shared with the broker thread ($SYS, the
 * shutdown line): one atomic update per poll rather than one per report. */
static void publish_reports(struct kafka_sink *k)
{
	if (k->report_ok || k->report_failed)
		eh_sink_count(k->sink, k->report_ok, k->report_failed);
	k->report_ok = k->report_failed = 0;
}

static void serve(struct kafka_sink *k, int timeout_ms)
{
	rd_kafka_poll(k->rk, timeout_ms);
	publish_reports(k);
}

/* Sink thread, after librdkafka refused a message because its queue is
 * full: serves delivery reports for a moment, since they free room, and
 * returns true to try again; false once QUEUE_FULL_WAIT_MS have passed since
 * the first refusal (*since: its time, 0 before it; reset it on success). */
static bool wait_for_room(struct kafka_sink *k, int64_t *since)
{
	int64_t now = eh_now_ms();

	if (!*since)
		*since = now;
	if (now - *since >= QUEUE_FULL_WAIT_MS)
		return false;
	serve(k, 10);
	return true;
}

/* Sink thread: topic handles belong to one rd_kafka_t and must be released
 * before it is destroyed. */
static void forget_topics(struct kafka_sink *k)
{
	for (size_t i = 0; i < TOPIC_CACHE; i++) {
		if (k->topics[i].rkt)
			rd_kafka_topic_destroy(k->topics[i].rkt);
		k->topics[i].rkt = NULL;
	}
	k->topic_next = 0;
}

/* The handle for topic name[0..len), or NULL (rd_kafka_last_error says why)
 * when librdkafka cannot make one. */
static rd_kafka_topic_t *topic_handle(struct kafka_sink *k, const char *name, size_t len)
{
	struct topic_entry *e;

	for (size_t i = 0; i < TOPIC_CACHE; i++) {
		e = &k->topics[i];
		if (e->rkt && e->len == len && !memcmp(e->name, name, len))
			return e->rkt;
	}
	e = &k->topics[k->topic_next];
	k->topic_next = (k->topic_next + 1) % TOPIC_CACHE;
	if (e->rkt)
		rd_kafka_topic_destroy(e->rkt);
	e->rkt = rd_kafka_topic_new(k->rk, name, NULL);
	memcpy(e->name, name, len);
	e->name[len] = '\0';
	e->len = len;
	return e->rkt;
}

/* ---- create / destroy ---- */

static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *name, const char *value, char *err,
		    size_t errlen)
{
	char why[512];

	if (rd_kafka_conf_set(conf, name, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
		snprintf(err, errlen, "plugin_opt_%s: %s", key, why);
		return -1;
	}
	return 0;
}

struct pass_ctx {
	rd_kafka_conf_t *conf;
	char *err;
	size_t errlen;
};

static int pass_through(void *arg, const char *key, const char *value)
{
	struct pass_ctx *p = arg;
	const char *name = key + strlen("kafka.");

	if (!strcmp(name, "bootstrap.servers") || !strcmp(name, "metadata.broker.list")) {
		snprintf(p->err, p->errlen, "plugin_opt_%s: set the brokers with plugin_opt_kafka_brokers", key);
		return -1;
	}
	return conf_set(p->conf, key, name, value, p->err, p->errlen);
}

static int secret_from_file(const struct eh_config *cfg, rd_kafka_conf_t *conf, const char *key,
			    const char *property, char *err, size_t errlen)
{
	const char *path = eh_config_get(cfg, key);
	char passkey[96];
	char *secret;
	int rc;

	if (!path)
		return 0;
	snprintf(passkey, sizeof(passkey), "kafka.%s", property);
	if (eh_config_isset(cfg, passkey)) {
		snprintf(err, errlen, "plugin_opt_%s: plugin_opt_%s is also set; use one of them", key, passkey);
		return -1;
	}
	secret = eh_read_secret_file(key, path, err, errlen);
	if (!secret)
		return -1;
	rc = conf_set(conf, key, property, secret, err, errlen);
	explicit_bzero(secret, strlen(secret));
	free(secret);
	return rc;
}

/* Our defaults (EH_KAFKA_DEFAULTS), then compression when this librdkafka
 * has a cheap codec built in. */
static int set_defaults(rd_kafka_conf_t *conf, char *err, size_t errlen)
{
	static const char *const defaults[][2] = { EH_KAFKA_DEFAULTS };
	char features[512] = "";
	size_t n = sizeof(features);
	const char *codec;

	for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
		if (conf_set(conf, "kafka_brokers", defaults[i][0], defaults[i][1], err, errlen))
			return -1;
	}
	rd_kafka_conf_get(conf, "builtin.features", features, &n);
	codec = eh_kafka_compression(features);
	return codec ? conf_set(conf, "kafka_brokers", "compression.type", codec, err, errlen) : 0;
}

/* A literal character in the topic template that Kafka cannot hold is a
 * mistake in the configuration, not something to rewrite silently. */
static int check_topic_template(const struct eh_template *t, const char *text, char *err, size_t errlen)
{
	size_t fixed = 0;
	bool placeholders = false;

	for (size_t i = 0; i < t->count; i++) {
		if (t->parts[i].field != -1) {
			placeholders = true;
			continue;
		}
		for (size_t j = 0; j < t->parts[i].len; j++) {
			unsigned char c = (unsigned char)t->parts[i].text[j];

			if (!eh_kafka_topic_char_ok(c)) {
				char shown[EH_QUOTE_LEN];

				snprintf(err, errlen, "plugin_opt_kafka_topic: '%s' holds '%c'; Kafka topic names hold "
					 "only a-z A-Z 0-9 . _ -", eh_quote(shown, sizeof(shown), text),
					 c >= 0x20 && c < 0x7F ? c : '?');
				return -1;
			}
		}
		fixed += t->parts[i].len;
	}
	if (fixed > EH_KAFKA_TOPIC_MAX || (!placeholders && (!strcmp(text, ".") || !strcmp(text, "..")))) {
		char shown[EH_QUOTE_LEN];

		snprintf(err, errlen, "plugin_opt_kafka_topic: '%s' is not a legal Kafka topic name (at most %d "
			 "bytes, not '.' or '..')", eh_quote(shown, sizeof(shown), text), EH_KAFKA_TOPIC_MAX);
		return -1;
	}
	return 0;
}

/* Sink thread, last: librdkafka's threads and their sockets and wake-up
 * pipes belong to the thread that made the handle (kafka_open), in its
 * descriptor table. */
static void kafka_close(void *ctx)
{
	struct kafka_sink *k = ctx;

	if (k->rk) {
		forget_topics(k);
		rd_kafka_destroy(k->rk);
		k->rk = NULL;
	}
}

static void kafka_destroy(void *ctx)
{
	struct kafka_sink *k = ctx;

	if (!k)
		return;
	/* No handle is left: the sink thread made it (kafka_open) and
	 * destroyed it (kafka_close) in its own descriptor table, which this
	 * thread must not touch; a sink whose thread was abandoned at stop is
	 * never destroyed. */
	if (k->conf)
		rd_kafka_conf_destroy(k->conf);
	for (size_t i = k->kept_head; i < k->kept_len; i++)
		kept_free(k->kept[i]);
	free(k->kept);
	eh_template_free(&k->topic);
	eh_template_free(&k->key);
	free(k->key_buf);
	eh_buf_free(&k->scratch);
	free(k);
}

static int kafka_create(const struct eh_sink_env *env, void **ctx, char *err, size_t errlen)
{
	struct kafka_sink *k = calloc(1, sizeof(*k));
	const struct eh_config *cfg = env->config;
	const char *topic = eh_config_get(cfg, "kafka_topic");
	const char *key = eh_config_get(cfg, "kafka_key");
	struct pass_ctx pass;
	char why[400];

	*ctx = k;
	if (!k) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	k->sink = env->sink;
	k->node = env->node;
	k->cloudevents = !strcmp(eh_config_get(cfg, "kafka_format"), "cloudevents");
	k->log_max = eh_config_isset(cfg, "kafka.debug") ? 7 : 5;
	if (eh_template_parse(&k->topic, topic, why, sizeof(why))) {
		snprintf(err, errlen, "plugin_opt_kafka_topic: %s", why);
		return -1;
	}
	if (check_topic_template(&k->topic, topic, err, errlen))
		return -1;
	k->topic_fixed = true;
	for (size_t i = 0; i < k->topic.count; i++)
		k->topic_fixed &= k->topic.parts[i].field == -1;
	/* Mosquitto refuses an empty plugin_opt_ value, so "no key" needs a
	 * word; a constant key "none" would be pointless anyway. */
	k->has_key = key && *key && strcmp(key, "none");
	/* The default renders to exactly the client id's bytes, which
	 * librdkafka copies anyway: deliver hands them over without rendering
	 * them into key_buf first. */
	k->key_is_clientid = k->has_key && !strcmp(key, "{clientid}");
	if (k->has_key && eh_template_parse(&k->key, key, why, sizeof(why))) {
		snprintf(err, errlen, "plugin_opt_kafka_key: %s", why);
		return -1;
	}
	k->key_cap = 256;
	k->key_buf = malloc(k->key_cap);
	k->conf = rd_kafka_conf_new();
	if (!k->key_buf || !k->conf) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (set_defaults(k->conf, err, errlen)
	    || conf_set(k->conf, "kafka_brokers", "bootstrap.servers", eh_config_get(cfg, "kafka_brokers"), err,
			errlen))
		return -1;
	pass = (struct pass_ctx){ k->conf, err, errlen };
	if (eh_config_each(cfg, "kafka.", pass_through, &pass))
		return -1;
	if (secret_from_file(cfg, k->conf, "kafka_sasl_password_file", "sasl.password", err, errlen)
	    || secret_from_file(cfg, k->conf, "kafka_ssl_key_password_file", "ssl.key.password", err, errlen))
		return -1;
	rd_kafka_conf_set_opaque(k->conf, k);
	rd_kafka_conf_set_dr_msg_cb(k->conf, on_delivery);
	rd_kafka_conf_set_error_cb(k->conf, on_error);
	rd_kafka_conf_set_log_cb(k->conf, on_log);

	eh_sink_set_batching(env->sink, BATCH_MAX, 0);
	/* Only a full librdkafka queue makes deliver retry: come back soon,
	 * never give up (the ring bounds the backlog and counts the drops).
	 * At most 100 ms, so that when the cluster returns the sink refills
	 * librdkafka's queue long before the queue runs dry. */
	eh_sink_set_retry(env->sink, 50, 100, -1);
	/* The handle, and with it librdkafka's threads, sockets and pipes, is
	 * made and destroyed by the sink thread only (kafka_open,
	 * kafka_close). */
	eh_sink_set_own_files(env->sink);
	return 0;
}

/* ---- sink thread ---- */

static int kafka_open(void *ctx)
{
	struct kafka_sink *k = ctx;
	rd_kafka_conf_t *conf;
	char why[512];

	if (k->rk)
		return 0;
	conf = rd_kafka_conf_dup(k->conf);
	if (!conf)
		return -1;
	/* rd_kafka_new owns conf on success only. */
	k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
	if (!k->rk) {
		rd_kafka_conf_destroy(conf);
		if (!k->open_failed_logged)
			eh_sink_log(k->sink, MOSQ_LOG_ERR, "cannot create the Kafka producer: %s; retrying", why);
		k->open_failed_logged = true;
		return -1;
	}
	if (k->open_failed_logged)
		eh_sink_log(k->sink, MOSQ_LOG_NOTICE, "Kafka producer created");
	k->open_failed_logged = false;
	k->fatal = false;
	return 0;
}

/* Order of production, for qsort. The numbers wrap (uintptr_t): compared by
 * their difference, which is right while the kept span fewer than half the
 * range, as they always do (they fit in librdkafka's queue). */
static int by_number(const void *a, const void *b)
{
	uintptr_t x = (*(struct kept_msg *const *)a)->number, y = (*(struct kept_msg *const *)b)->number;

	if (x == y)
		return 0;
	return x - y > UINTPTR_MAX / 2 ? -1 : 1;
}

/* Sink thread: counts every kept message failed. */
static void fail_kept(struct kafka_sink *k)
{
	size_t n = k->kept_len - k->kept_head;

	for (size_t i = k->kept_head; i < k->kept_len; i++)
		kept_free(k->kept[i]);
	k->kept_head = k->kept_len = 0;
	k->reported += n;
	eh_sink_count(k->sink, 0, n);
}

/* Sink thread: true when RESTARTS_MAX restarts already happened within the
 * last RESTART_WINDOW_MS; records this one. */
static bool restarting_too_often(struct kafka_sink *k, int64_t now)
{
	bool too_often = k->restarts == RESTARTS_MAX && now - k->restart_ms[k->restart_next] < RESTART_WINDOW_MS;

	k->restart_ms[k->restart_next] = now;
	k->restart_next = (k->restart_next + 1) % RESTARTS_MAX;
	if (k->restarts < RESTARTS_MAX)
		k->restarts++;
	return too_often;
}

/* Sink thread: produces the kept messages again, in their first order, on
 * the current producer, before any new event. Returns 0 when none is left,
 * or -1 when the rest must wait (librdkafka's queue stayed full, or the new
 * producer failed as well). */
static int produce_kept(struct kafka_sink *k)
{
	int64_t full_since = 0;

	while (k->kept_head < k->kept_len) {
		/* By index: serve() may append to kept and move it. */
		struct kept_msg *km = k->kept[k->kept_head];
		const char *key = km->data + km->topic_len + 1;
		rd_kafka_topic_t *rkt = topic_handle(k, km->data, km->topic_len);
		rd_kafka_resp_err_t rc;

		if (!rkt)
			rc = rd_kafka_last_error();
		else
			rc = rd_kafka_producev(k->rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_KEY(km->has_key ? key : NULL,
											km->key_len),
					       RD_KAFKA_V_VALUE((void *)(key + km->key_len), km->value_len),
					       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_TIMESTAMP(km->timestamp),
					       RD_KAFKA_V_OPAQUE((void *)km->number), RD_KAFKA_V_HEADERS(km->headers),
					       RD_KAFKA_V_END);
		if (rc == RD_KAFKA_RESP_ERR_NO_ERROR) {
			km->headers = NULL; /* librdkafka's now */
			kept_free(km);
			k->kept[k->kept_head++] = NULL;
			full_since = 0;
			continue;
		}
		if (rc == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
			if (wait_for_room(k, &full_since))
				continue;
			return -1;
		}
		if (rc == RD_KAFKA_RESP_ERR__FATAL) {
			k->fatal = true;
			return -1;
		}
		if (eh_sink_log_due(&k->failed_logged))
			eh_sink_log(k->sink, MOSQ_LOG_WARNING, "cannot produce a message to topic %s again: %s", km->data,
				    rd_kafka_err2str(rc));
		kept_free(km);
		k->kept[k->kept_head++] = NULL;
		k->reported++;
		eh_sink_count(k->sink, 0, 1);
	}
	k->kept_head = k->kept_len = 0;
	return 0;
}

/* Sink thread. After a fatal error (the idempotent producer lost its
 * guarantees) the handle sends nothing more and is unusable. Its messages
 * come back in delivery reports, which on_delivery keeps: first the answers
 * to the requests in flight (for at most FATAL_SETTLE_MS), then the purge of
 * the rest. A new handle then takes the kept messages again, in order. */
static void restart_producer(struct kafka_sink *k)
{
	int64_t now = eh_now_ms(), deadline = eh_sink_deadline_ms(k->sink), settle = FATAL_SETTLE_MS;
	uint64_t lost;
	size_t n;

	if (deadline - now < settle)
		settle = deadline > now ? deadline - now : 0;
	rd_kafka_flush(k->rk, (int)settle);
	rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
	/* The purge has queued a report for each message it took: serve them. */
	rd_kafka_flush(k->rk, settle < 100 ? (int)settle : 100);
	serve(k, 0);
	/* Anything neither reported nor kept dies with the handle. */
	lost = k->produced - k->reported - (k->kept_len - k->kept_head);
	if (lost) {
		eh_sink_log(k->sink, MOSQ_LOG_ERR, "%llu message(s) not reported by the failed producer; counted failed",
			    (unsigned long long)lost);
		k->reported += lost;
		eh_sink_count(k->sink, 0, lost);
	}
	forget_topics(k);
	rd_kafka_destroy(k->rk);
	k->rk = NULL;
	n = k->kept_len - k->kept_head;
	if (restarting_too_often(k, now) && n) {
		eh_sink_log(k->sink, MOSQ_LOG_ERR, "fatal producer errors keep coming (%d within %d s): %zu event(s) "
			    "the failed producer held are counted failed, not produced again",
			    RESTARTS_MAX + 1, RESTART_WINDOW_MS / 1000, n);
		fail_kept(k);
		n = 0;
	}
	if (n) {
		memmove(k->kept, k->kept + k->kept_head, n * sizeof(*k->kept));
		k->kept_head = 0;
		k->kept_len = n;
		qsort(k->kept, n, sizeof(*k->kept), by_number);
		eh_sink_log(k->sink, MOSQ_LOG_WARNING, "new producer takes again the %zu event(s) the failed one held, "
			    "in order; those that were in flight may reach Kafka twice (same id)", n);
	}
	/* On failure, recover opens and produces them later. */
	if (kafka_open(k) == 0)
		produce_kept(k);
}

/* Sink thread: restarts the producer after a fatal error and produces what
 * it kept. Returns 0 when new events may follow, -1 when not yet. */
static int recover(struct kafka_sink *k)
{
	if (k->rk && k->fatal)
		restart_producer(k);
	if (!k->rk && kafka_open(k))
		return -1;
	if (k->fatal)
		return -1;
	return produce_kept(k);
}

static const char *render_key(struct kafka_sink *k, const struct eh_event *ev, size_t *len)
{
	size_t n;

	if (k->key_is_clientid) {
		/* Empty, never absent: as the template renders it. */
		*len = ev->f[EH_F_CLIENTID].len;
		return ev->f[EH_F_CLIENTID].ptr ? ev->f[EH_F_CLIENTID].ptr : "";
	}
	n = eh_template_render(&k->key, ev, k->node, EH_TEMPLATE_RAW, k->key_buf, k->key_cap);
	if (n >= k->key_cap) {
		size_t cap = n + 1;
		char *grown = realloc(k->key_buf, cap);

		if (!grown)
			return NULL;
		k->key_buf = grown;
		k->key_cap = cap;
		n = eh_template_render(&k->key, ev, k->node, EH_TEMPLATE_RAW, k->key_buf, k->key_cap);
	}
	*len = n;
	return k->key_buf;
}

/* CloudEvents headers ce_id and ce_time repeat the event's id and ts, which
 * eh_json_write_event has just written near the start of value, behind
 * {"event":"<type>", at a fixed place. They are taken from there rather
 * than formatted a second time; the surrounding bytes are checked, so a
 * change of the writer's layout falls back to formatting instead of sending
 * wrong headers. */
#define JSON_HEAD "{\"event\":\""
#define JSON_ID "\",\"id\":\""
#define JSON_TS "\",\"ts\":\""

static void id_ts_of(const struct kafka_sink *k, const struct eh_event *ev, const char *type, const char *value,
		     size_t len, char *id, char *ts)
{
	size_t at_id = strlen(JSON_HEAD) + strlen(type) + strlen(JSON_ID);
	size_t at_ts = at_id + EH_ID_LEN + strlen(JSON_TS);

	if (len > at_ts + EH_TS_LEN && !memcmp(value, JSON_HEAD, strlen(JSON_HEAD))
	    && !memcmp(value + at_id - strlen(JSON_ID), JSON_ID, strlen(JSON_ID))
	    && !memcmp(value + at_ts - strlen(JSON_TS), JSON_TS, strlen(JSON_TS)) && value[at_ts + EH_TS_LEN] == '"') {
		memcpy(id, value + at_id, EH_ID_LEN);
		memcpy(ts, value + at_ts, EH_TS_LEN);
	} else {
		eh_json_format_id(k->node, ev->number, id);
		eh_json_format_ts(ev->ts_ms, ts);
	}
	id[EH_ID_LEN] = ts[EH_TS_LEN] = '\0';
}

/* Produces one event as message number k->produced; librdkafka copies value
 * and key. Returns librdkafka's error. */
static rd_kafka_resp_err_t produce(struct kafka_sink *k, const struct eh_event *ev, const char *key, size_t keylen,
				   const char *value, size_t len)
{
	void *number = (void *)(uintptr_t)k->produced;
	const char *type = eh_event_type_name(ev->type);
	rd_kafka_topic_t *rkt = NULL;
	char id[EH_ID_LEN + 1], ts[EH_TS_LEN + 1];

	/* A fixed topic was rendered (and sanitized) when it was first used. */
	if (!k->topic_fixed || !k->topics[0].rkt) {
		size_t tlen = eh_template_render(&k->topic, ev, k->node, EH_TEMPLATE_RAW, k->topic_buf,
						 sizeof(k->topic_buf));

		tlen = eh_kafka_topic_sanitize(k->topic_buf,
					       tlen < sizeof(k->topic_buf) - 1 ? tlen : sizeof(k->topic_buf) - 2);
		rkt = topic_handle(k, k->topic_buf, tlen);
	} else {
		rkt = k->topics[0].rkt;
	}
	if (!rkt)
		return rd_kafka_last_error();
	if (!k->cloudevents)
		return rd_kafka_producev(k->rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_KEY(key, keylen),
					 RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
					 RD_KAFKA_V_OPAQUE(number), RD_KAFKA_V_HEADER("event", type, -1),
					 RD_KAFKA_V_HEADER("node", k->node->name, -1), RD_KAFKA_V_END);
	id_ts_of(k, ev, type, value, len, id, ts);
	return rd_kafka_producev(k->rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_KEY(key, keylen),
				 RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
				 RD_KAFKA_V_OPAQUE(number), RD_KAFKA_V_HEADER("event", type, -1),
				 RD_KAFKA_V_HEADER("node", k->node->name, -1), RD_KAFKA_V_HEADER("ce_specversion", "1.0", -1),
				 RD_KAFKA_V_HEADER("ce_type", type, -1),
				 RD_KAFKA_V_HEADER("ce_source", k->node->name, -1), RD_KAFKA_V_HEADER("ce_id", id, EH_ID_LEN),
				 RD_KAFKA_V_HEADER("ce_time", ts, EH_TS_LEN),
				 RD_KAFKA_V_HEADER("content-type", "application/json", -1), RD_KAFKA_V_END);
}

static enum eh_deliver_rc kafka_deliver(void *ctx, struct eh_batch *b)
{
	struct kafka_sink *k = ctx;
	int64_t full_since = 0;

	b->done = 0;
	/* New events wait until what a failed producer held is produced
	 * again: they come after it. */
	if (recover(k))
		return EH_DELIVER_RETRY;
	while (b->done < b->count) {
		const struct eh_event *ev = &b->events[b->done];
		const char *key = NULL;
		size_t keylen = 0;
		rd_kafka_resp_err_t rc;

		k->scratch.len = 0;
		if (eh_json_write_event(&k->scratch, ev, k->node))
			return eh_sink_out_of_memory(k->sink, "an event's JSON");
		if (k->has_key && !(key = render_key(k, ev, &keylen)))
			return eh_sink_out_of_memory(k->sink, "an event's message key");
		rc = produce(k, ev, key, keylen, k->scratch.data, k->scratch.len);
		if (rc == RD_KAFKA_RESP_ERR_NO_ERROR) {
			k->produced++;
			b->done++;
			full_since = 0;
			continue;
		}
		if (rc == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
			if (wait_for_room(k, &full_since))
				continue;
			if (!k->queue_full_logged)
				eh_sink_log(k->sink, MOSQ_LOG_WARNING, "librdkafka's queue is full (%d messages waiting); "
					    "events wait in the ring", rd_kafka_outq_len(k->rk));
			k->queue_full_logged = true;
			return EH_DELIVER_RETRY;
		}
		if (rc == RD_KAFKA_RESP_ERR__FATAL) {
			k->fatal = true;
			return EH_DELIVER_RETRY;
		}
		/* Permanent for this message (too large, bad topic): count it
		 * failed and go on with the next. */
		if (eh_sink_log_due(&k->failed_logged))
			eh_sink_log(k->sink, MOSQ_LOG_WARNING, "cannot produce event seq %llu to topic %s: %s",
				    (unsigned long long)ev->seq, k->topic_buf, rd_kafka_err2str(rc));
		eh_sink_count(k->sink, 0, 1);
		b->done++;
	}
	if (k->queue_full_logged)
		eh_sink_log(k->sink, MOSQ_LOG_NOTICE, "librdkafka's queue has room again");
	k->queue_full_logged = false;
	return EH_DELIVER_OK;
}

static void kafka_poll(void *ctx)
{
	struct kafka_sink *k = ctx;

	if (k->rk)
		serve(k, 0);
	/* Also when no event comes to deliver: kept messages wait meanwhile. */
	if (!k->rk || k->fatal || k->kept_len > k->kept_head)
		recover(k);
}

/* Sink thread: serves librdkafka until it holds nothing more, a fatal error
 * stops it, or end (eh_now_ms) passes. In slices, so that a fatal error
 * does not leave the rest of the shutdown time waiting for requests that a
 * failed producer will never send. */
static void flush_until(struct kafka_sink *k, int64_t end)
{
	for (;;) {
		int64_t rest = end - eh_now_ms();
		rd_kafka_resp_err_t rc = rd_kafka_flush(k->rk, rest <= 0 ? 0 : rest < 100 ? (int)rest : 100);

		serve(k, 0);
		if (rc == RD_KAFKA_RESP_ERR_NO_ERROR || k->fatal || rest <= 0)
			return;
	}
}

static uint64_t kafka_flush(void *ctx, int64_t timeout_ms)
{
	struct kafka_sink *k = ctx;
	int64_t end = eh_now_ms() + timeout_ms;
	uint64_t left;

	/* A fatal error before or during the flush: restart and produce what
	 * the failed producer held, as long as the deadline allows. */
	do {
		if (eh_now_ms() < end && (k->rk || k->kept_len > k->kept_head))
			recover(k);
		if (k->rk && !k->fatal)
			flush_until(k, end);
		else if (k->rk)
			serve(k, 0);
	} while (eh_now_ms() < end && k->rk && (k->fatal || k->kept_len > k->kept_head));
	/* From here on a report would race the shutdown log line: what is not
	 * reported now (kept messages included) is left undelivered. */
	k->closing = true;
	left = k->produced - k->reported;
	if (left)
		eh_sink_log(k->sink, MOSQ_LOG_WARNING, "%llu message(s) not confirmed by Kafka within the shutdown "
			    "timeout; they are lost", (unsigned long long)left);
	return left;
}

const struct eh_sink_ops eh_sink_kafka_ops = {
	.name = "kafka",
	.enable_key = "kafka_brokers",
	.options = kafka_options,
	.title = "Kafka sink",
	.flags = EH_SINK_ASYNC_ACK,
	.create = kafka_create,
	.open = kafka_open,
	.deliver = kafka_deliver,
	.poll = kafka_poll,
	.flush = kafka_flush,
	.close = kafka_close,
	.destroy = kafka_destroy,
};
