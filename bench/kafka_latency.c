/*
 * kafka_latency: the Kafka end of bench/latency.py.
 *
 *   kafka_latency BOOTSTRAP TOPIC
 *
 * Reads every partition of TOPIC from its beginning and, for each message,
 * keeps the wall clock at the moment librdkafka hands it over and the
 * event's "ts" (wall clock milliseconds at capture). It prints "ready N"
 * once it holds the N partitions, and on SIGTERM or SIGINT prints one line
 * "ARRIVAL_US TS_MS" per message and "end N".
 *
 * Samples stay in memory until the end so that the consumer does no output
 * while the load runs on the same CPU. The consumer asks for fetch answers
 * after at most 1 ms: with Kafka's default (500 ms) an idle partition's
 * long poll, not the sink, would be most of what is measured.
 *
 * test/kafka_peer.c has a consumer too; this one is separate because it
 * measures instead of printing messages, and that file is the tests'.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

struct sample {
	int64_t arrival_us;
	int64_t ts_ms;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void die(const char *what, const char *why)
{
	fprintf(stderr, "kafka_latency: %s: %s\n", what, why);
	exit(2);
}

static int64_t wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The event's "ts", "2026-11-26T05:47:45.684Z" (UTC, milliseconds), as
 * milliseconds since the epoch; -1 when the value holds no such field. The
 * sink's JSON escapes every quote inside strings, so the first unescaped
 * "ts": is the top-level field. */
static int64_t event_ts_ms(const char *p, size_t len)
{
	static const char key[] = "\"ts\":\"";
	const char *hit = memmem(p, len, key, sizeof(key) - 1);
	char text[32];
	struct tm tm;
	size_t n;
	int ms;

	if (!hit)
		return -1;
	hit += sizeof(key) - 1;
	n = (size_t)(p + len - hit);
	if (n > sizeof(text) - 1)
		n = sizeof(text) - 1;
	memcpy(text, hit, n);
	text[n] = 0;
	memset(&tm, 0, sizeof(tm));
	if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
		   &tm.tm_min, &tm.tm_sec, &ms) != 7)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm) * 1000 + ms;
}

static rd_kafka_t *consumer_new(const char *bootstrap)
{
	static const char *const props[][2] = {
		{ "bootstrap.servers", "" },
		/* a group id is needed for a consumer handle; offsets are
		 * assigned by hand and never committed */
		{ "group.id", "eh-latency" },
		{ "enable.auto.commit", "false" },
		{ "fetch.wait.max.ms", "1" },
		{ "fetch.error.backoff.ms", "1" },
		{ "log.connection.close", "false" },
	};
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char err[512];
	rd_kafka_t *rk;

	for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++) {
		const char *value = i == 0 ? bootstrap : props[i][1];

		if (rd_kafka_conf_set(conf, props[i][0], value, err, sizeof(err)) != RD_KAFKA_CONF_OK)
			die(props[i][0], err);
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
	if (!rk)
		die("rd_kafka_new", err);
	rd_kafka_poll_set_consumer(rk);
	return rk;
}

/* Assigns every partition of topic from the beginning; the topic is created
 * by the mock cluster before the sink produces, so its metadata is there
 * once the cluster answers. Returns the partition count. */
static int assign_all(rd_kafka_t *rk, const char *topic)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_partition_list_t *parts;
	rd_kafka_resp_err_t err;
	int count;

	if (!rkt)
		die("topic", rd_kafka_err2str(rd_kafka_last_error()));
	err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
	if (err)
		die("metadata", rd_kafka_err2str(err));
	if (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt < 1)
		die("metadata", "topic missing");
	count = md->topics[0].partition_cnt;
	parts = rd_kafka_topic_partition_list_new(count);
	for (int i = 0; i < count; i++)
		rd_kafka_topic_partition_list_add(parts, topic, i)->offset = RD_KAFKA_OFFSET_BEGINNING;
	err = rd_kafka_assign(rk, parts);
	if (err)
		die("assign", rd_kafka_err2str(err));
	rd_kafka_topic_partition_list_destroy(parts);
	rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(rkt);
	return count;
}

int main(int argc, char **argv)
{
	struct sample *samples = NULL;
	size_t n = 0, cap = 0;
	uint64_t unparsed = 0;
	rd_kafka_t *rk;
	int partitions;

	if (argc != 3) {
		fprintf(stderr, "usage: kafka_latency BOOTSTRAP TOPIC\n");
		return 2;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	rk = consumer_new(argv[1]);
	partitions = assign_all(rk, argv[2]);
	printf("ready %d\n", partitions);
	fflush(stdout);

	while (!stop) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		int64_t arrival = wall_us();
		int64_t ts;

		if (!m)
			continue;
		if (m->err) {
			if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
				fprintf(stderr, "kafka_latency: %s\n", rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
			continue;
		}
		ts = event_ts_ms(m->payload, m->len);
		rd_kafka_message_destroy(m);
		if (ts < 0) {
			unparsed++;
			continue;
		}
		if (n == cap) {
			size_t ncap = cap ? 2 * cap : 65536;
			struct sample *grown = realloc(samples, ncap * sizeof(*samples));

			if (!grown)
				die("realloc", "out of memory");
			samples = grown;
			cap = ncap;
		}
		samples[n++] = (struct sample){ arrival, ts };
	}

	for (size_t i = 0; i < n; i++)
		printf("%lld %lld\n", (long long)samples[i].arrival_us, (long long)samples[i].ts_ms);
	printf("end %zu unparsed %llu\n", n, (unsigned long long)unparsed);
	free(samples);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return 0;
}
