/*
 * eh_template: topic and key templates such as "$events/{event}/{clientid}".
 * Placeholders: {event} {node} {clientid} {username} {seq}. A template is
 * parsed once at start (unknown placeholders are configuration errors) and
 * rendered per event on a sink thread.
 *
 * Rendering for a topic makes client-supplied values safe as one topic
 * level: '/', '+', '#', '%', NUL, control characters and bytes that are not
 * valid UTF-8 are written as %XX (upper-case hex), and so is a '$' that
 * would start the topic (a client id "$SYS" must not reach the broker's own
 * tree), so distinct client ids always give distinct topics and the
 * original is recoverable by percent-decoding. Rendering for a key copies
 * the bytes unchanged.
 */
#ifndef EH_TEMPLATE_H
#define EH_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "eh_event.h"
#include "eh_json.h"

/* The longest MQTT topic name, in bytes. */
#define EH_TOPIC_MAX 65535
/* The largest remaining length of an MQTT packet (4 bytes of 7 bits): a
 * PUBLISH's topic, packet id, properties and payload together. */
#define EH_MQTT_REMAINING_MAX 268435455u

enum eh_template_mode { EH_TEMPLATE_TOPIC, EH_TEMPLATE_RAW };

struct eh_template_part {
	int field;          /* -1: literal text; else a placeholder id */
	char *text;         /* literal text (owned) */
	size_t len;
};

struct eh_template {
	struct eh_template_part *parts;
	size_t count;
};

/* Returns 0, or -1 with err naming the problem (unknown placeholder,
 * unbalanced brace). */
int eh_template_parse(struct eh_template *t, const char *text, char *err, size_t errlen);
void eh_template_free(struct eh_template *t);
/* For templates that render MQTT topic names: returns 0, or -1 with err
 * (prefixed "plugin_opt_<option>: ") when the literal text holds '+', '#',
 * a control character or bytes that are not UTF-8, or is itself longer than
 * an MQTT topic may be. */
int eh_template_check_topic(const struct eh_template *t, const char *option, const char *text, char *err,
			    size_t errlen);
/* Why a rendered topic of len bytes cannot be published, for a log line
 * ("the topic ... is %s"): "empty" or "longer than 65535 bytes"; NULL when
 * it can. No MQTT topic is empty, and paho would write a longer one's length
 * modulo 65536, letting the rest pass for packet id and payload. Shared by
 * the sinks so they judge and word it alike. */
const char *eh_template_topic_unfit(size_t len);
/* Whether the template holds the placeholder named name ("seq"). */
bool eh_template_uses(const struct eh_template *t, const char *name);
/* Renders into out (capacity cap, always NUL-terminated when cap > 0).
 * Returns the full length needed, excluding the NUL (like snprintf). */
size_t eh_template_render(const struct eh_template *t, const struct eh_event *ev, const struct eh_node *node,
			  enum eh_template_mode mode, char *out, size_t cap);

#endif
