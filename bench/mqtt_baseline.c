/*
 * The MQTT sink's baseline: what paho.mqtt.c's asynchronous client
 * (libpaho-mqtt3as, the library the sink uses) achieves on its own against
 * the same target, and a counting subscriber that times both the same way.
 * Not a test; bench/bench_mqtt.sh drives it.
 *
 *   mqtt_baseline pub URI TOPIC BYTES COUNT WINDOW
 *       Publishes COUNT messages of BYTES bytes to TOPIC at QoS 1 with MQTT
 *       3.1.1, keeping at most WINDOW unacknowledged, as the sink does with
 *       its defaults (persistent session, no paho persistence, paho's
 *       maxInflight and maxBufferedMessages equal to the window, one
 *       sendMessage per message with a completion callback). Prints the rate until the last PUBACK.
 *   mqtt_baseline sub URI FILTER COUNT
 *       Subscribes at QoS 0 (an observer: it adds no acknowledgements of its
 *       own), prints "ready" once subscribed, then, when COUNT messages have
 *       arrived, the rate from the first to the last arrival and the topic
 *       and size of the last message. The same measure for the baseline and
 *       for the sink, so neither gets a different clock.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <MQTTAsync.h>

struct eh_bench {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	long outstanding, acked, failed, arrived, want;
	int connected; /* 1 up, -1 refused */
	int subscribed;
	double first, last;
	char last_topic[512];
	int last_len;
};

static struct eh_bench bench = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, 0, 0, 0,
				 "", 0 };

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void signal_locked(void)
{
	pthread_cond_broadcast(&bench.cond);
	pthread_mutex_unlock(&bench.lock);
}

static void on_connect_ok(void *ctx, MQTTAsync_successData *resp)
{
	(void)ctx;
	(void)resp;
	pthread_mutex_lock(&bench.lock);
	bench.connected = 1;
	signal_locked();
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData *resp)
{
	(void)ctx;
	fprintf(stderr, "mqtt_baseline: connect failed: code %d\n", resp ? resp->code : 0);
	pthread_mutex_lock(&bench.lock);
	bench.connected = -1;
	signal_locked();
}

static void on_publish_ok(void *ctx, MQTTAsync_successData *resp)
{
	(void)ctx;
	(void)resp;
	pthread_mutex_lock(&bench.lock);
	bench.outstanding--;
	bench.acked++;
	signal_locked();
}

static void on_publish_fail(void *ctx, MQTTAsync_failureData *resp)
{
	(void)ctx;
	(void)resp;
	pthread_mutex_lock(&bench.lock);
	bench.outstanding--;
	bench.failed++;
	signal_locked();
}

static void on_subscribe_ok(void *ctx, MQTTAsync_successData *resp)
{
	(void)ctx;
	(void)resp;
	pthread_mutex_lock(&bench.lock);
	bench.subscribed = 1;
	signal_locked();
}

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
	double t = now_s();

	(void)ctx;
	pthread_mutex_lock(&bench.lock);
	if (!bench.arrived)
		bench.first = t;
	bench.last = t;
	if (++bench.arrived == bench.want) {
		size_t n = topic_len > 0 ? (size_t)topic_len : strlen(topic);

		if (n >= sizeof(bench.last_topic))
			n = sizeof(bench.last_topic) - 1;
		memcpy(bench.last_topic, topic, n);
		bench.last_topic[n] = 0;
		bench.last_len = msg->payloadlen;
	}
	signal_locked();
	MQTTAsync_freeMessage(&msg);
	MQTTAsync_free(topic);
	return 1;
}

static MQTTAsync connect_client(const char *uri, const char *id, int clean, int window, MQTTAsync_messageArrived *ma)
{
	MQTTAsync_createOptions cr = MQTTAsync_createOptions_initializer;
	MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
	MQTTAsync c;

	cr.MQTTVersion = MQTTVERSION_3_1_1;
	/* paho refuses a send while 100 (its default) are queued and not yet
	 * written: let the window be the only limit, as in the sink. */
	cr.maxBufferedMessages = window;
	if (MQTTAsync_createWithOptions(&c, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &cr) != MQTTASYNC_SUCCESS)
		return NULL;
	if (ma)
		MQTTAsync_setCallbacks(c, NULL, NULL, ma, NULL);
	co.MQTTVersion = MQTTVERSION_3_1_1;
	co.cleansession = clean;
	co.keepAliveInterval = 30;
	co.maxInflight = window;
	co.onSuccess = on_connect_ok;
	co.onFailure = on_connect_fail;
	if (MQTTAsync_connect(c, &co) != MQTTASYNC_SUCCESS)
		return NULL;
	pthread_mutex_lock(&bench.lock);
	while (!bench.connected)
		pthread_cond_wait(&bench.cond, &bench.lock);
	pthread_mutex_unlock(&bench.lock);
	return bench.connected > 0 ? c : NULL;
}

static int publish(const char *uri, const char *topic, int bytes, long count, int window)
{
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	MQTTAsync_message pm = MQTTAsync_message_initializer;
	char *payload = malloc((size_t)bytes + 1);
	MQTTAsync c;
	double t0, t1;

	if (!payload)
		return 1;
	/* JSON-looking text of the event's size; paho and the target only see
	 * its length. */
	memset(payload, 'x', (size_t)bytes);
	if (bytes >= 2) {
		payload[0] = '{';
		payload[bytes - 1] = '}';
	}
	if (!(c = connect_client(uri, "eh-bench-baseline", 0, window, NULL)))
		return 1;
	pm.payload = payload;
	pm.payloadlen = bytes;
	pm.qos = 1;
	ro.onSuccess = on_publish_ok;
	ro.onFailure = on_publish_fail;
	t0 = now_s();
	for (long i = 0; i < count; i++) {
		pthread_mutex_lock(&bench.lock);
		while (bench.outstanding >= window)
			pthread_cond_wait(&bench.cond, &bench.lock);
		bench.outstanding++;
		pthread_mutex_unlock(&bench.lock);
		if (MQTTAsync_sendMessage(c, topic, &pm, &ro) != MQTTASYNC_SUCCESS) {
			fprintf(stderr, "mqtt_baseline: sendMessage refused at message %ld\n", i);
			return 1;
		}
	}
	pthread_mutex_lock(&bench.lock);
	while (bench.outstanding > 0)
		pthread_cond_wait(&bench.cond, &bench.lock);
	pthread_mutex_unlock(&bench.lock);
	t1 = now_s();
	printf("pub %ld acked %ld failed %ld seconds %.3f rate %.0f\n", count, bench.acked, bench.failed, t1 - t0,
	       (double)count / (t1 - t0));
	MQTTAsync_disconnect(c, NULL);
	MQTTAsync_destroy(&c);
	free(payload);
	return bench.failed != 0;
}

static int subscribe(const char *uri, const char *filter, long count)
{
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	char id[64];
	MQTTAsync c;

	bench.want = count;
	snprintf(id, sizeof(id), "eh-bench-sub-%ld", (long)getpid());
	if (!(c = connect_client(uri, id, 1, 10, on_message)))
		return 1;
	ro.onSuccess = on_subscribe_ok;
	if (MQTTAsync_subscribe(c, filter, 0, &ro) != MQTTASYNC_SUCCESS)
		return 1;
	pthread_mutex_lock(&bench.lock);
	while (!bench.subscribed)
		pthread_cond_wait(&bench.cond, &bench.lock);
	pthread_mutex_unlock(&bench.lock);
	printf("ready\n");
	fflush(stdout);
	pthread_mutex_lock(&bench.lock);
	while (bench.arrived < count)
		pthread_cond_wait(&bench.cond, &bench.lock);
	pthread_mutex_unlock(&bench.lock);
	printf("sub %ld seconds %.3f rate %.0f topic %s bytes %d\n", count, bench.last - bench.first,
	       count > 1 && bench.last > bench.first ? (double)(count - 1) / (bench.last - bench.first) : 0.0,
	       bench.last_topic, bench.last_len);
	fflush(stdout);
	MQTTAsync_disconnect(c, NULL);
	MQTTAsync_destroy(&c);
	return 0;
}

/* A positive count, or -1. */
static long count_arg(const char *s, long max)
{
	char *end;
	long v = strtol(s, &end, 10);

	return *s && !*end && v > 0 && v <= max ? v : -1;
}

int main(int argc, char **argv)
{
	if (argc == 7 && !strcmp(argv[1], "pub")) {
		long bytes = count_arg(argv[4], 1 << 24), n = count_arg(argv[5], 1L << 40), w = count_arg(argv[6], 65535);

		if (bytes > 0 && n > 0 && w > 0)
			return publish(argv[2], argv[3], (int)bytes, n, (int)w);
	}
	if (argc == 5 && !strcmp(argv[1], "sub")) {
		long n = count_arg(argv[4], 1L << 40);

		if (n > 0)
			return subscribe(argv[2], argv[3], n);
	}
	fprintf(stderr, "usage: %s pub URI TOPIC BYTES COUNT WINDOW | sub URI FILTER COUNT\n", argv[0]);
	return 2;
}
