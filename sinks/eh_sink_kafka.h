/*
 * Kafka sink helpers that unit tests reach directly. The sink itself is
 * eh_sink_kafka_ops in eh_sink_kafka.c.
 */
#ifndef EH_SINK_KAFKA_H
#define EH_SINK_KAFKA_H

#include <stdbool.h>
#include <stddef.h>

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

#endif
