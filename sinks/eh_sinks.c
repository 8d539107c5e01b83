/* The registry of sink types; one line per sink. */
#include "eh_sinks.h"

extern const struct eh_sink_ops eh_sink_file_ops;
extern const struct eh_sink_ops eh_sink_local_ops;
extern const struct eh_sink_ops eh_sink_http_ops;
extern const struct eh_sink_ops eh_sink_mqtt_ops;
extern const struct eh_sink_ops eh_sink_kafka_ops;

const struct eh_sink_ops *const eh_sink_types[] = {
	&eh_sink_file_ops,
	&eh_sink_local_ops,
	&eh_sink_http_ops,
	&eh_sink_mqtt_ops,
	&eh_sink_kafka_ops,
};

const size_t eh_sink_type_count = sizeof(eh_sink_types) / sizeof(eh_sink_types[0]);
