/*
 * eh_filter: which events a sink wants. An event mask from a list of type
 * names and patterns, and a list of MQTT topic filters for the events that
 * carry a topic. Matching runs on the broker thread: no allocation.
 */
#ifndef EH_FILTER_H
#define EH_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parses "client.connect,client.*,message.*,*" into a mask of EH_EV_BIT.
 * Returns 0, or -1 naming the bad item in err. */
int eh_filter_events_parse(const char *list, uint32_t *mask, char *err, size_t errlen);

struct eh_topics {
	char **filters; /* owned, NUL-terminated */
	size_t count;   /* 0: every topic */
};

/* Parses a comma list of MQTT topic filters (each checked for valid '+' and
 * '#' use). Returns 0, or -1 naming the bad filter in err. */
int eh_topics_parse(struct eh_topics *t, const char *list, char *err, size_t errlen);
void eh_topics_free(struct eh_topics *t);
/* True when topics is empty or a filter matches topic. topic is a topic name,
 * or for subscribe events a subscription filter, whose '+' and '#' levels
 * then match only '+' / '#' levels of the configured filter (or wildcards). */
bool eh_topics_match(const struct eh_topics *t, const char *topic, size_t len);

/* MQTT matching of one topic name against one filter, following the rule
 * that a topic starting with '$' is not matched by a leading wildcard. */
bool eh_topic_match(const char *filter, const char *topic, size_t len);
/* True when filter is a valid MQTT subscription filter. */
bool eh_topic_filter_valid(const char *filter);

#endif
