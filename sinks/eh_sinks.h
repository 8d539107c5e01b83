/*
 * The sink types this build knows, in the order they are created. Adding a
 * sink: write sinks/eh_sink_<name>.c exporting eh_sink_<name>_ops and add one
 * line to eh_sinks.c.
 */
#ifndef EH_SINKS_H
#define EH_SINKS_H

#include <stddef.h>

#include "eh_sink.h"

/* The filter options every sink has: <name>_events and <name>_topics. */
#define EH_SINK_FILTER_OPTIONS(name)                                                                     \
	{ name "_events", EH_OPT_LIST, NULL, 0, 0, NULL, 0,                                               \
	  "Event types or patterns this sink receives (as plugin_opt_events). Unset: every captured "    \
	  "type. A sink that lists message.publish receives it even when plugin_opt_events is unset." }, \
	{ name "_topics", EH_OPT_LIST, NULL, 0, 0, NULL, 0,                                               \
	  "MQTT topic filters narrowing the subscribe, unsubscribe, authz_denied and publish events "   \
	  "this sink receives, on top of plugin_opt_topics. Unset: every topic." }

extern const struct eh_sink_ops *const eh_sink_types[];
extern const size_t eh_sink_type_count;

#endif
