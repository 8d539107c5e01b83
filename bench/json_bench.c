/*
 * json_bench: the cost of one event's JSON (eh_json_write_event), as the
 * sinks pay it, on events shaped like the ones bench/bench_kafka.sh sends:
 * message.publish from 64 clients dev-<site>-<n> on 8 sites, topics
 * site/<site>/dev-<n>/telemetry, small JSON readings as payloads, no
 * username, peer 127.0.0.1, MQTT 3.1.1; and the lifecycle events of the same
 * clients (connect, connected, subscribe, unsubscribe, disconnected).
 *
 *   json_bench [events [repeats [mix]]]   (defaults 2000000, 5, all three)
 *
 * mix is publish, lifecycle or mixed (fifteen publishes to one lifecycle
 * event). For each mix it prints the best of the repeats in ns per event: the
 * stopwatch is noisy on a shared machine, so the exact figure is the
 * instruction count, which `make json-bench` takes with callgrind
 * (collection only inside eh_json_write_event, divided by the events).
 * Events are built once, before the clock starts; the buffer is reused as a
 * sink reuses its scratch buffer.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eh_json.h"

#define CLIENTS 64
#define READINGS 256 /* distinct payloads, cycled */
#define SET 4096     /* events per mix, cycled */

static char readings[READINGS][96];
static char clientids[CLIENTS][32], topics[CLIENTS][64], cmd_topics[CLIENTS][64];

static struct eh_bytes bytes(const char *s)
{
	return (struct eh_bytes){ s, (uint32_t)strlen(s) };
}

/* The payloads bench_kafka.sh generates with awk, for reading i. */
static void make_strings(void)
{
	for (int i = 1; i <= READINGS; i++)
		snprintf(readings[i - 1], sizeof(readings[0]), "{\"seq\":%d,\"temp\":%.1f,\"rh\":%d,\"bat\":%.2f,\"ok\":%s}",
			 i, 18 + (i * 37 % 120) / 10.0, 30 + i * 13 % 50, 3 + (i * 7 % 120) / 100.0,
			 (i % 17) ? "true" : "false");
	for (int c = 0; c < CLIENTS; c++) {
		snprintf(clientids[c], sizeof(clientids[0]), "dev-%d-%d", (c + 1) % 8, c + 1);
		snprintf(topics[c], sizeof(topics[0]), "site/%d/dev-%d/telemetry", (c + 1) % 8, c + 1);
		snprintf(cmd_topics[c], sizeof(cmd_topics[0]), "site/%d/dev-%d/cmd", (c + 1) % 8, c + 1);
	}
}

static void common(struct eh_event *ev, unsigned type, unsigned i)
{
	int c = (int)(i % CLIENTS);

	memset(ev, 0, sizeof(*ev));
	ev->type = (uint8_t)type;
	ev->number = 1000000 + i;
	ev->seq = i + 1;
	/* A burst: about a thousand events per second of timestamps. */
	ev->ts_ms = 1795000000000LL + i;
	ev->proto_ver = 4;
	ev->f[EH_F_CLIENTID] = bytes(clientids[c]);
	ev->f[EH_F_PEER] = bytes("127.0.0.1");
}

static void make_publish(struct eh_event *ev, unsigned i)
{
	common(ev, EH_EV_PUBLISH, i);
	ev->f[EH_F_TOPIC] = bytes(topics[i % CLIENTS]);
	ev->f[EH_F_PAYLOAD] = bytes(readings[(i / CLIENTS) % READINGS]);
}

static void make_lifecycle(struct eh_event *ev, unsigned i)
{
	static const uint8_t types[] = { EH_EV_CONNECT, EH_EV_CONNECTED, EH_EV_SUBSCRIBE, EH_EV_UNSUBSCRIBE,
					 EH_EV_DISCONNECTED };
	unsigned type = types[i % sizeof(types)];

	common(ev, type, i);
	if (i % 2) {
		ev->flags |= EH_EVF_HAS_USERNAME;
		ev->f[EH_F_USERNAME] = bytes("fleet-operator");
	}
	ev->keepalive = 60;
	ev->flags |= EH_EVF_CLEAN_START;
	if (type == EH_EV_SUBSCRIBE || type == EH_EV_UNSUBSCRIBE) {
		ev->f[EH_F_TOPIC] = bytes(cmd_topics[i % CLIENTS]);
		ev->qos = 1;
		ev->flags |= EH_EVF_GRANTED_KNOWN | EH_EVF_GRANTED;
	}
	if (type == EH_EV_DISCONNECTED) {
		ev->reason = EH_REASON_NORMAL;
		ev->connected_ms = 3600000 + i;
		ev->flags |= EH_EVF_HAS_CONNECTED_MS;
	}
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void run(const char *name, const struct eh_event *set, const struct eh_node *node, unsigned long events,
		int repeats)
{
	struct eh_buf b = { 0 };
	double best = 0;
	uint64_t bytes_out = 0;

	for (int r = 0; r < repeats; r++) {
		double t0 = now_ns(), t;

		bytes_out = 0;
		for (unsigned long i = 0; i < events; i++) {
			b.len = 0;
			if (eh_json_write_event(&b, &set[i % SET], node)) {
				fprintf(stderr, "json_bench: out of memory\n");
				exit(1);
			}
			bytes_out += b.len;
		}
		t = (now_ns() - t0) / (double)events;
		if (!r || t < best)
			best = t;
	}
	printf("%-9s %8.1f ns/event (best of %d x %lu), %5.1f bytes/event\n", name, best, repeats, events,
	       (double)bytes_out / (double)events);
	eh_buf_free(&b);
}

static unsigned long arg(const char *s, unsigned long max)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	return *end || v > max ? 0 : v;
}

int main(int argc, char **argv)
{
	static struct eh_event publish[SET], lifecycle[SET], mixed[SET];
	struct eh_node node;
	unsigned long events = argc > 1 ? arg(argv[1], 1ul << 40) : 2000000;
	int repeats = argc > 2 ? (int)arg(argv[2], 1000) : 5;
	const char *only = argc > 3 ? argv[3] : NULL;
	char why[128];

	if (!events || repeats < 1 || argc > 4) {
		fprintf(stderr, "usage: json_bench [events [repeats [publish|lifecycle|mixed]]]\n");
		return 2;
	}
	if (eh_node_init(&node, "bench-node", 0x5eed5eed5eed5eedull, why, sizeof(why))) {
		fprintf(stderr, "json_bench: eh_node_init: %s\n", why);
		return 1;
	}
	make_strings();
	for (unsigned i = 0; i < SET; i++) {
		make_publish(&publish[i], i);
		make_lifecycle(&lifecycle[i], i);
		/* Fifteen publishes to one lifecycle event. */
		if (i % 16 == 15)
			make_lifecycle(&mixed[i], i / 16);
		else
			make_publish(&mixed[i], i);
	}
	if (!only || !strcmp(only, "publish"))
		run("publish", publish, &node, events, repeats);
	if (!only || !strcmp(only, "lifecycle"))
		run("lifecycle", lifecycle, &node, events, repeats);
	if (!only || !strcmp(only, "mixed"))
		run("mixed", mixed, &node, events, repeats);
	return 0;
}
