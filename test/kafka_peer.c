/*
 * kafka_peer: the Kafka side of the Kafka sink's tests and benchmark, built
 * on librdkafka alone.
 *
 *   kafka_peer mock [BROKERS] [TOPIC:PARTITIONS ...]
 *     Hosts librdkafka's mock cluster (a real Kafka-protocol broker set on
 *     loopback), prints "bootstrap HOST:PORT,..." and then obeys one
 *     command per line on stdin, answering "ok" or "error <why>":
 *       down ID | up ID               broker ID refuses / accepts connections
 *       leader TOPIC PARTITION ID     moves a partition's leadership
 *       errors APIKEY CODE [CODE...]  the next requests of that API fail
 *                                     with these error codes, in order
 *       create TOPIC PARTITIONS       creates a topic
 *       rtt ID MS                     delays broker ID's responses
 *       berror ID APIKEY CODE RTT     broker ID answers its next request of
 *                                     that API with CODE after RTT ms
 *       stack ID APIKEY               answers "ok N": berror entries left
 *       version                       answers "ok N": rd_kafka_version()
 *       quit                          (or end of input) stops
 *
 *   kafka_peer consume BOOTSTRAP TOPIC[,TOPIC...] MIN [TIMEOUT_S [count]]
 *     Reads every partition of the topics from the beginning until at least
 *     MIN messages were read and every partition is at its end (so a
 *     duplicate or an extra message after the MIN-th shows up), printing
 *     one JSON object per message (only counting them with "count"), then
 *     "end N". Exits 1 on timeout.
 *
 *   kafka_peer replay BOOTSTRAP TOPIC FILE COUNT [PROPERTY=VALUE ...]
 *     The benchmark's baseline: librdkafka alone producing COUNT messages,
 *     those "consume" printed to FILE in turn, from the first again when
 *     COUNT is larger (the very messages the sink produced: same values,
 *     keys and headers), to TOPIC, with the sink's default
 *     configuration (EH_KAFKA_DEFAULTS) plus the given properties. All
 *     messages are loaded first, so only librdkafka's work is timed.
 *     They are produced in the order the sink produced them, by the event's
 *     "seq" in the value: "consume" prints them partition after partition,
 *     and librdkafka takes long runs for one partition at far less CPU
 *     per message than the sink's order costs it (its producing and broker
 *     threads and the cluster alike), so the file's order flattered the
 *     library. KAFKA_PEER_REPLAY_ORDER=file keeps the file's order instead.
 *     Prints "loaded N, runs of one key L long on average" (one key, one
 *     partition), "full I" when librdkafka's queue first refuses a
 *     message (I messages are queued), and at the end "rate <messages per
 *     second from the first produce to the last delivery report> delivered
 *     <n> failed <n>". With KAFKA_PEER_REPLAY_WAIT set in the environment
 *     it reads one line from stdin after "loaded" before producing and one
 *     after "rate" before tearing down, so that a profiler can be zeroed
 *     and dumped around exactly the produce-to-last-report span
 *     (bench/kafka_sink_thread.sh replay).
 *
 *   kafka_peer watch BOOTSTRAP TOPIC PARTITIONS FROM N [TIMEOUT_S]
 *     The benchmark's clock, the same for the sink and the baseline: asks
 *     the cluster every millisecond how many messages TOPIC holds (the sum
 *     of its partitions' high watermarks) until it holds N; prints
 *     "watching", then "rate <r> messages <m> seconds <s> whole <r2>
 *     whole_seconds <s2>": m messages were appended in s seconds after the
 *     first sample that found at least FROM; r2 and s2 are the same from
 *     the first sample that found any.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "../sinks/eh_sink_kafka.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *why)
{
	fprintf(stderr, "kafka_peer: %s: %s\n", what, why);
	exit(2);
}

static rd_kafka_t *new_handle(rd_kafka_type_t type, const char *const *props)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char err[512];
	rd_kafka_t *rk;

	for (; props && props[0]; props += 2) {
		if (rd_kafka_conf_set(conf, props[0], props[1], err, sizeof(err)) != RD_KAFKA_CONF_OK)
			die(props[0], err);
	}
	rk = rd_kafka_new(type, conf, err, sizeof(err));
	if (!rk)
		die("rd_kafka_new", err);
	return rk;
}

/* ---- mock ---- */

static int mock_command(rd_kafka_mock_cluster_t *mc, char *line, char *why, size_t whylen, long *answer)
{
	char *tok[66], *save = NULL;
	int n = 0;
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

	for (char *t = strtok_r(line, " \t\r\n", &save); t && n < 66; t = strtok_r(NULL, " \t\r\n", &save))
		tok[n++] = t;
	if (!n)
		return 0;
	if (!strcmp(tok[0], "down") && n == 2) {
		err = rd_kafka_mock_broker_set_down(mc, atoi(tok[1]));
	} else if (!strcmp(tok[0], "up") && n == 2) {
		err = rd_kafka_mock_broker_set_up(mc, atoi(tok[1]));
	} else if (!strcmp(tok[0], "leader") && n == 4) {
		err = rd_kafka_mock_partition_set_leader(mc, tok[1], atoi(tok[2]), atoi(tok[3]));
	} else if (!strcmp(tok[0], "create") && n == 3) {
		err = rd_kafka_mock_topic_create(mc, tok[1], atoi(tok[2]), 1);
	} else if (!strcmp(tok[0], "rtt") && n == 3) {
		err = rd_kafka_mock_broker_set_rtt(mc, atoi(tok[1]), atoi(tok[2]));
	} else if (!strcmp(tok[0], "errors") && n >= 3) {
		rd_kafka_resp_err_t codes[64];

		for (int i = 2; i < n; i++)
			codes[i - 2] = (rd_kafka_resp_err_t)atoi(tok[i]);
		rd_kafka_mock_push_request_errors_array(mc, (int16_t)atoi(tok[1]), (size_t)(n - 2), codes);
	} else if (!strcmp(tok[0], "berror") && n == 5) {
		err = rd_kafka_mock_broker_push_request_error_rtts(mc, atoi(tok[1]), (int16_t)atoi(tok[2]), 1,
								   (rd_kafka_resp_err_t)atoi(tok[3]), atoi(tok[4]));
	} else if (!strcmp(tok[0], "stack") && n == 3) {
		size_t cnt = 0;

		err = rd_kafka_mock_broker_error_stack_cnt(mc, atoi(tok[1]), (int16_t)atoi(tok[2]), &cnt);
		*answer = (long)cnt;
	} else if (!strcmp(tok[0], "version") && n == 1) {
		*answer = (long)rd_kafka_version();
	} else {
		snprintf(why, whylen, "unknown command or wrong arguments");
		return -1;
	}
	if (err) {
		snprintf(why, whylen, "%s", rd_kafka_err2str(err));
		return -1;
	}
	return 0;
}

static int run_mock(int argc, char **argv)
{
	static const char *const props[] = { "log_level", "3", NULL };
	int brokers = argc > 0 ? atoi(argv[0]) : 3;
	rd_kafka_t *rk = new_handle(RD_KAFKA_PRODUCER, props);
	rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers > 0 ? brokers : 3);
	char line[1024], why[256];

	if (!mc)
		die("rd_kafka_mock_cluster_new", "failed");
	for (int i = 1; i < argc; i++) {
		char *colon = strrchr(argv[i], ':');

		if (!colon)
			die(argv[i], "expected TOPIC:PARTITIONS");
		*colon = '\0';
		if (rd_kafka_mock_topic_create(mc, argv[i], atoi(colon + 1), 1))
			die(argv[i], "cannot create topic");
	}
	printf("bootstrap %s\n", rd_kafka_mock_cluster_bootstraps(mc));
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		if (!strncmp(line, "quit", 4))
			break;
		long answer = -1;

		if (mock_command(mc, line, why, sizeof(why), &answer))
			printf("error %s\n", why);
		else if (answer >= 0)
			printf("ok %ld\n", answer);
		else
			printf("ok\n");
		fflush(stdout);
	}
	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(rk);
	return 0;
}

/* ---- consume ---- */

static json_t *bytes_json(const void *p, size_t len)
{
	json_t *s = p ? json_stringn(p, len) : json_null();

	return s ? s : json_string("<not UTF-8>");
}

static char *hex(const unsigned char *p, size_t len)
{
	char *out = malloc(len * 2 + 1);

	for (size_t i = 0; i < len; i++)
		sprintf(out + i * 2, "%02x", p[i]);
	out[len * 2] = '\0';
	return out;
}

static void print_message(const rd_kafka_message_t *m)
{
	json_t *o = json_object(), *hs = json_array();
	rd_kafka_headers_t *h = NULL;
	char *kh;

	json_object_set_new(o, "topic", json_string(rd_kafka_topic_name(m->rkt)));
	json_object_set_new(o, "partition", json_integer(m->partition));
	json_object_set_new(o, "offset", json_integer(m->offset));
	json_object_set_new(o, "key", bytes_json(m->key, m->key_len));
	kh = hex(m->key, m->key ? m->key_len : 0);
	json_object_set_new(o, "key_hex", json_string(kh));
	free(kh);
	json_object_set_new(o, "value", bytes_json(m->payload, m->len));
	if (!rd_kafka_message_headers(m, &h)) {
		const char *name;
		const void *val;
		size_t vlen;

		for (size_t i = 0; !rd_kafka_header_get_all(h, i, &name, &val, &vlen); i++)
			json_array_append_new(hs, json_pack("[so]", name, bytes_json(val, vlen)));
	}
	json_object_set_new(o, "headers", hs);
	json_dumpf(o, stdout, JSON_COMPACT);
	putchar('\n');
	json_decref(o);
}

struct part_state {
	char topic[256];
	int32_t partition;
	int at_end;
};

static int run_consume(int argc, char **argv)
{
	static const char *props[] = { "bootstrap.servers", NULL, "group.id", "kafka_peer", "enable.partition.eof",
				       "true", "enable.auto.commit", "false", "log_level", "3", NULL };
	rd_kafka_t *rk;
	rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(16);
	struct part_state *st = NULL;
	size_t nst = 0;
	long min, seen = 0;
	int quiet = argc > 4 && !strcmp(argv[4], "count");
	double deadline;
	char *topics, *save = NULL;

	if (argc < 3)
		die("consume", "BOOTSTRAP TOPIC[,TOPIC...] MIN [TIMEOUT_S]");
	props[1] = argv[0];
	min = atol(argv[2]);
	deadline = now_s() + (argc > 3 ? atof(argv[3]) : 60);
	rk = new_handle(RD_KAFKA_CONSUMER, props);
	rd_kafka_poll_set_consumer(rk);
	topics = strdup(argv[1]);
	for (char *t = strtok_r(topics, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		const struct rd_kafka_metadata *md = NULL;
		rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, t, NULL);

		/* A topic the producer has not created yet has no partitions:
		 * ask until it does (or the deadline passes). */
		for (;;) {
			rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 5000);

			if (!err && md->topic_cnt == 1 && !md->topics[0].err && md->topics[0].partition_cnt > 0)
				break;
			if (md)
				rd_kafka_metadata_destroy(md);
			md = NULL;
			if (now_s() > deadline)
				die(t, "no metadata");
			struct timespec ts = { 0, 200 * 1000000L };
			nanosleep(&ts, NULL);
		}
		for (int p = 0; p < md->topics[0].partition_cnt; p++) {
			rd_kafka_topic_partition_list_add(parts, t, md->topics[0].partitions[p].id)->offset =
				RD_KAFKA_OFFSET_BEGINNING;
			st = realloc(st, (nst + 1) * sizeof(*st));
			snprintf(st[nst].topic, sizeof(st[nst].topic), "%s", t);
			st[nst].partition = md->topics[0].partitions[p].id;
			st[nst].at_end = 0;
			nst++;
		}
		rd_kafka_metadata_destroy(md);
		rd_kafka_topic_destroy(rkt);
	}
	free(topics);
	if (rd_kafka_assign(rk, parts))
		die("assign", "failed");
	for (;;) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
		int all = 1;

		if (m) {
			struct part_state *ps = NULL;

			for (size_t i = 0; i < nst; i++) {
				if (st[i].partition == m->partition && !strcmp(st[i].topic, rd_kafka_topic_name(m->rkt)))
					ps = &st[i];
			}
			if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
				if (ps)
					ps->at_end = 1;
			} else if (m->err) {
				fprintf(stderr, "kafka_peer: consume: %s\n", rd_kafka_message_errstr(m));
			} else {
				if (ps)
					ps->at_end = 0;
				if (!quiet)
					print_message(m);
				seen++;
			}
			rd_kafka_message_destroy(m);
		}
		for (size_t i = 0; i < nst; i++)
			all &= st[i].at_end;
		if (seen >= min && all)
			break;
		if (now_s() > deadline) {
			printf("timeout %ld\n", seen);
			fflush(stdout);
			return 1;
		}
	}
	printf("end %ld\n", seen);
	fflush(stdout);
	rd_kafka_topic_partition_list_destroy(parts);
	free(st);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return 0;
}

/* ---- replay (benchmark baseline) ---- */

struct replay_msg {
	unsigned char *key; /* NULL: no key */
	size_t key_len;
	char *value;
	size_t value_len;
	size_t nheaders;
	char *hname[8];
	char *hvalue[8];
	unsigned long long seq; /* the sink's order */
	long line;              /* the file's order */
};

static long delivered, failed;
static double last_report;

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void)rk;
	(void)opaque;
	if (m->err)
		failed++;
	else
		delivered++;
	last_report = now_s();
}

static unsigned char *unhex(const char *s, size_t *len)
{
	size_t n = strlen(s) / 2;
	unsigned char *out = malloc(n ? n : 1);

	for (size_t i = 0; i < n; i++) {
		unsigned v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			die("replay", "bad key_hex");
		out[i] = (unsigned char)v;
	}
	*len = n;
	return out;
}

/* The event's seq in the value (our JSON or the CloudEvents envelope's
 * data), or none: the first "seq": in the text is the key, since a quote
 * inside a string value is escaped. */
static unsigned long long value_seq(const struct replay_msg *m)
{
	const char *p = strstr(m->value, "\"seq\":");

	return p ? strtoull(p + 6, NULL, 10) : ULLONG_MAX;
}

static int by_seq(const void *a, const void *b)
{
	const struct replay_msg *x = a, *y = b;

	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return x->line < y->line ? -1 : x->line > y->line; /* stable: no seq keeps the file's order */
}

/* How long, on average, the stretches of consecutive messages with the same
 * key are (each key goes to one partition): librdkafka's cost per message
 * depends on it, so the benchmark prints it. */
static double key_run(const struct replay_msg *m, long n)
{
	long runs = n > 0;

	for (long i = 1; i < n; i++) {
		if (m[i].key_len != m[i - 1].key_len || (m[i].key_len && memcmp(m[i].key, m[i - 1].key, m[i].key_len)))
			runs++;
	}
	return runs ? (double)n / (double)runs : 0;
}

/* Loads what "consume" printed: one JSON object per message. */
static struct replay_msg *load_messages(const char *path, long *count)
{
	FILE *f = fopen(path, "r");
	struct replay_msg *msgs = NULL;
	long n = 0, cap = 0;
	char *line = NULL;
	size_t linecap = 0;

	if (!f)
		die(path, "cannot open");
	while (getline(&line, &linecap, f) > 0) {
		json_error_t jerr;
		json_t *o = json_loads(line, 0, &jerr), *hs, *h;
		struct replay_msg *m;
		size_t i;

		if (!o || !json_is_string(json_object_get(o, "value"))) {
			json_decref(o);
			continue; /* the "end N" line */
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 65536;
			msgs = realloc(msgs, (size_t)cap * sizeof(*msgs));
			if (!msgs)
				die("replay", "out of memory");
		}
		m = &msgs[n++];
		memset(m, 0, sizeof(*m));
		if (json_is_string(json_object_get(o, "key")))
			m->key = unhex(json_string_value(json_object_get(o, "key_hex")), &m->key_len);
		m->value_len = json_string_length(json_object_get(o, "value"));
		m->value = malloc(m->value_len + 1);
		memcpy(m->value, json_string_value(json_object_get(o, "value")), m->value_len + 1);
		m->seq = value_seq(m);
		m->line = n;
		hs = json_object_get(o, "headers");
		json_array_foreach(hs, i, h) {
			if (m->nheaders == 8)
				die("replay", "more than 8 headers");
			m->hname[m->nheaders] = strdup(json_string_value(json_array_get(h, 0)));
			m->hvalue[m->nheaders] = strdup(json_string_value(json_array_get(h, 1)));
			m->nheaders++;
		}
		json_decref(o);
	}
	free(line);
	fclose(f);
	if (n && !(getenv("KAFKA_PEER_REPLAY_ORDER") && !strcmp(getenv("KAFKA_PEER_REPLAY_ORDER"), "file")))
		qsort(msgs, (size_t)n, sizeof(*msgs), by_seq);
	*count = n;
	return msgs;
}

/* One message, headers as the sink gives them: librdkafka builds its header
 * list inside producev. The value is copied into the message's own
 * allocation: measured here, that is faster than handing librdkafka the
 * loaded value without a copy (1.0-1.3 against 0.7-1.2 million messages per
 * second), as the copy is cache-hot and packed with the message. */
static rd_kafka_resp_err_t replay_one(rd_kafka_t *rk, const char *topic, const struct replay_msg *m)
{
	const void *key = m->key;
	size_t kl = m->key_len;
	char *v = m->value;
	size_t vl = m->value_len;
	char **hn = (char **)m->hname, **hv = (char **)m->hvalue;

	switch (m->nheaders) {
	case 0:
		return rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, kl), RD_KAFKA_V_VALUE(v, vl),
					 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
					 RD_KAFKA_V_END);
	case 2:
		return rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, kl), RD_KAFKA_V_VALUE(v, vl),
					 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
					 RD_KAFKA_V_HEADER(hn[0], hv[0], -1), RD_KAFKA_V_HEADER(hn[1], hv[1], -1),
					 RD_KAFKA_V_END);
	default: {
		rd_kafka_headers_t *hdrs = rd_kafka_headers_new(m->nheaders);

		for (size_t i = 0; i < m->nheaders; i++)
			rd_kafka_header_add(hdrs, hn[i], -1, hv[i], -1);
		rd_kafka_resp_err_t err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, kl),
							    RD_KAFKA_V_VALUE(v, vl), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
							    RD_KAFKA_V_HEADERS(hdrs),
							    RD_KAFKA_V_END);
		if (err)
			rd_kafka_headers_destroy(hdrs);
		return err;
	}
	}
}

static int run_replay(int argc, char **argv)
{
	static const char *const defaults[][2] = { EH_KAFKA_DEFAULTS };
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char err[512], features[512] = "";
	size_t flen = sizeof(features);
	const char *codec;
	struct replay_msg *msgs;
	long count, loaded;
	int full_said = 0;
	rd_kafka_t *rk;
	double t0;
	bool gated = getenv("KAFKA_PEER_REPLAY_WAIT") != NULL;
	char go[64];

	if (argc < 4)
		die("replay", "BOOTSTRAP TOPIC FILE COUNT [PROPERTY=VALUE ...]");
	msgs = load_messages(argv[2], &loaded);
	count = atol(argv[3]);
	if (!loaded)
		die(argv[2], "no messages");
	for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
		if (rd_kafka_conf_set(conf, defaults[i][0], defaults[i][1], err, sizeof(err)) != RD_KAFKA_CONF_OK)
			die(defaults[i][0], err);
	}
	rd_kafka_conf_get(conf, "builtin.features", features, &flen);
	codec = eh_kafka_compression(features);
	if (codec && rd_kafka_conf_set(conf, "compression.type", codec, err, sizeof(err)) != RD_KAFKA_CONF_OK)
		die("compression.type", err);
	if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[0], err, sizeof(err)) != RD_KAFKA_CONF_OK
	    || rd_kafka_conf_set(conf, "log_level", "2", err, sizeof(err)) != RD_KAFKA_CONF_OK)
		die("bootstrap.servers", err);
	for (int i = 4; i < argc; i++) {
		char *eq = strchr(argv[i], '=');

		if (!eq)
			die(argv[i], "expected PROPERTY=VALUE");
		*eq = '\0';
		if (rd_kafka_conf_set(conf, argv[i], eq + 1, err, sizeof(err)) != RD_KAFKA_CONF_OK)
			die(argv[i], err);
	}
	rd_kafka_conf_set_dr_msg_cb(conf, on_dr);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	if (!rk)
		die("rd_kafka_new", err);
	printf("loaded %ld, runs of one key %.2f long on average\n", loaded, key_run(msgs, loaded));
	if (gated && !fgets(go, sizeof(go), stdin))
		die("replay", "stdin closed before the start line");
	t0 = now_s();
	for (long i = 0; i < count; i++) {
		rd_kafka_resp_err_t rc;

		while ((rc = replay_one(rk, argv[1], &msgs[i % loaded])) == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
			/* The bench waits for this line before the cluster comes
			 * back, as it waits for the sink's ring to hold the rest. */
			if (!full_said++)
				printf("full %ld\n", i);
			rd_kafka_poll(rk, 10);
		}
		if (rc)
			die("produce", rd_kafka_err2str(rc));
		rd_kafka_poll(rk, 0);
	}
	rd_kafka_flush(rk, 600000);
	printf("rate %.0f delivered %ld failed %ld\n", (double)delivered / (last_report - t0), delivered, failed);
	if (gated && !fgets(go, sizeof(go), stdin))
		die("replay", "stdin closed before the end line");
	rd_kafka_destroy(rk);
	for (long i = 0; i < loaded; i++) {
		free(msgs[i].key);
		free(msgs[i].value);
		for (size_t h = 0; h < msgs[i].nheaders; h++)
			free(msgs[i].hname[h]), free(msgs[i].hvalue[h]);
	}
	free(msgs);
	return failed || delivered != count;
}

/* ---- watch (benchmark clock) ---- */

/* Messages in the topic: the sum of its partitions' high watermarks, or -1
 * while the cluster does not answer. */
static long topic_count(rd_kafka_t *rk, const char *topic, int partitions)
{
	long sum = 0;

	for (int p = 0; p < partitions; p++) {
		int64_t lo, hi;

		/* Short: while the cluster is down a query fails, and a long
		 * one would still be waiting when the cluster is back. */
		if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 20))
			return -1;
		sum += (long)hi;
	}
	return sum;
}

static int run_watch(int argc, char **argv)
{
	static const char *props[] = { "bootstrap.servers", NULL, "reconnect.backoff.ms", "10",
				       "reconnect.backoff.max.ms", "50", "log_level", "0", NULL };
	const struct timespec tick = { 0, 1000000L };
	rd_kafka_t *rk;
	int partitions;
	long n, from, c, first_c = -1, from_c = -1;
	double first_t = 0, from_t = 0, deadline, t;

	if (argc < 5)
		die("watch", "BOOTSTRAP TOPIC PARTITIONS FROM N [TIMEOUT_S]");
	props[1] = argv[0];
	partitions = atoi(argv[2]);
	from = atol(argv[3]);
	n = atol(argv[4]);
	deadline = now_s() + (argc > 5 ? atof(argv[5]) : 300);
	rk = new_handle(RD_KAFKA_CONSUMER, props);
	printf("watching\n");
	for (;;) {
		c = topic_count(rk, argv[1], partitions);
		t = now_s();
		if (c > 0 && first_c < 0)
			first_c = c, first_t = t;
		if (c >= from && from_c < 0)
			from_c = c, from_t = t;
		if (c >= n)
			break;
		if (t > deadline) {
			printf("timeout %ld\n", c);
			return 1;
		}
		nanosleep(&tick, NULL);
	}
	printf("rate %.0f messages %ld seconds %.3f whole %.0f whole_seconds %.3f\n",
	       (double)(c - from_c) / (t - from_t), c - from_c, t - from_t, (double)(c - first_c) / (t - first_t),
	       t - first_t);
	rd_kafka_destroy(rk);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && !strcmp(argv[1], "mock"))
		return run_mock(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "consume"))
		return run_consume(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "replay"))
		return run_replay(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "watch"))
		return run_watch(argc - 2, argv + 2);
	fprintf(stderr, "usage: kafka_peer mock|consume|replay|watch ... (see the comment in test/kafka_peer.c)\n");
	return 2;
}
