/*
 * Kafka sink helpers that unit tests reach directly. The sink itself is
 * eh_sink_kafka_ops in eh_sink_kafka.c.
 */
#ifndef EH_SINK_KAFKA_H
#define EH_SINK_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* Longest topic name Kafka accepts. */
#define EH_KAFKA_TOPIC_MAX 249

/* True for the bytes a Kafka topic name may hold: [a-zA-Z0-9._-]. */
bool eh_kafka_topic_char_ok(unsigned char c);

/* Makes name[0..len) a legal Kafka topic name in place and returns its new
 * length (at most EH_KAFKA_TOPIC_MAX; name is NUL-terminated there, so it
 * needs len + 2 bytes): every other byte becomes '_', the name is cut at
 * 249 bytes, and the names Kafka reserves or cannot hold ("", ".", "..")
 * become "_", "_", "__". */
size_t eh_kafka_topic_sanitize(char *name, size_t len);

/* The librdkafka properties the sink sets before the user's kafka.<property>
 * options, chosen for no loss and no duplicates (docs/sinks/kafka.md says
 * why for each). Here rather than in the .c file so that the benchmark's
 * baseline producer (test/kafka_peer.c) runs with exactly the same
 * configuration. compression.type is not listed: it depends on the codecs
 * this librdkafka was built with, see eh_kafka_compression. */
#define EH_KAFKA_DEFAULTS                                                                                  \
	{ "enable.idempotence", "true" }, /* retries cannot duplicate or reorder */                           \
	{ "acks", "all" },                /* confirmed only once every in-sync replica has it */              \
	{ "message.timeout.ms", "0" },    /* wait out outages; the ring and the queue bound it */             \
	{ "queue.buffering.max.messages", "100000" },                                                       \
	{ "queue.buffering.max.kbytes", "65536" }, /* 64 MiB, not librdkafka's 1 GiB, inside a broker */    \
	{ "linger.ms", "5" },                                                                               \
	{ "log.connection.close", "false" }, /* idle disconnects by the cluster are normal */               \
	{ "client.id", "mosquitto-eventhook" }

/* The compression.type default for a librdkafka whose builtin.features
 * property is features: lz4 costs the least CPU on the broker host, zstd
 * next; NULL (librdkafka's none) when neither is built in. */
static inline const char *eh_kafka_compression(const char *features)
{
	if (strstr(features, "lz4"))
		return "lz4";
	return strstr(features, "zstd") ? "zstd" : NULL;
}

/* The seq of the event whose JSON is value[0..len), for a log line about a
 * delivery report (which carries the value, not the event); 0 when it
 * cannot be read. ,"seq": cannot occur inside a JSON string (a quote in one
 * is written \"), and only the event type, id, time and node come before
 * it. */
static inline unsigned long long eh_kafka_value_seq(const void *value, size_t len)
{
	static const char key[] = ",\"seq\":";
	const char *p = value ? (const char *)memmem(value, len, key, sizeof(key) - 1) : NULL;
	const char *end = (const char *)value + len;
	unsigned long long seq = 0;

	if (!p)
		return 0;
	for (p += sizeof(key) - 1; p < end && *p >= '0' && *p <= '9' && seq < 1000000000000000000ull; p++)
		seq = seq * 10 + (unsigned long long)(*p - '0');
	return seq;
}

#endif
