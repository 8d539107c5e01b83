/*
 * Stand-ins for the broker functions the core calls, so unit tests and the
 * documentation generator link without a broker. Log lines and publishes
 * are recorded for tests to inspect.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eh_mosquitto.h"

int eh_stub_log_count;
char eh_stub_last_log[1024];
int eh_stub_publish_count;
char eh_stub_last_topic[1024];

void mosquitto_log_printf(int level, const char *fmt, ...)
{
	va_list ap;

	(void)level;
	va_start(ap, fmt);
	vsnprintf(eh_stub_last_log, sizeof(eh_stub_last_log), fmt, ap);
	va_end(ap);
	eh_stub_log_count++;
	if (getenv("EH_STUB_LOG"))
		fprintf(stderr, "log: %s\n", eh_stub_last_log);
}

int mosquitto_broker_publish_copy(const char *clientid, const char *topic, int payloadlen, const void *payload,
				  int qos, bool retain, mosquitto_property *properties)
{
	(void)clientid;
	(void)payloadlen;
	(void)payload;
	(void)qos;
	(void)retain;
	(void)properties;
	snprintf(eh_stub_last_topic, sizeof(eh_stub_last_topic), "%s", topic);
	eh_stub_publish_count++;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_callback_register(mosquitto_plugin_id_t *identifier, int event, MOSQ_FUNC_generic_callback cb_func,
				const void *event_data, void *userdata)
{
	(void)identifier;
	(void)event;
	(void)cb_func;
	(void)event_data;
	(void)userdata;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_callback_unregister(mosquitto_plugin_id_t *identifier, int event, MOSQ_FUNC_generic_callback cb_func,
				  const void *event_data)
{
	(void)identifier;
	(void)event;
	(void)cb_func;
	(void)event_data;
	return MOSQ_ERR_SUCCESS;
}

const char *mosquitto_client_address(const struct mosquitto *client) { (void)client; return "127.0.0.1"; }
bool mosquitto_client_clean_session(const struct mosquitto *client) { (void)client; return true; }
const char *mosquitto_client_id(const struct mosquitto *client) { (void)client; return "stub"; }
int mosquitto_client_keepalive(const struct mosquitto *client) { (void)client; return 60; }
int mosquitto_client_protocol(const struct mosquitto *client) { (void)client; return mp_mqtt; }
int mosquitto_client_protocol_version(const struct mosquitto *client) { (void)client; return 4; }
const char *mosquitto_client_username(const struct mosquitto *client) { (void)client; return NULL; }
