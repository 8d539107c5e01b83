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
/* Set by a test to see each published message before it is freed. */
void (*eh_stub_publish_hook)(const char *topic, const void *payload, int len);
/* Set by a test to see every log line. */
void (*eh_stub_log_hook)(int level, const char *line);
/* Callbacks registered and not unregistered, as Mosquitto 2.0 holds them. */
int eh_stub_callbacks;
/* The last callback registered per event (2.0's 0..10), for tests that
 * play the broker: cleared when unregistered. */
MOSQ_FUNC_generic_callback eh_stub_cb[11];
void *eh_stub_cb_user[11];

void mosquitto_log_printf(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(eh_stub_last_log, sizeof(eh_stub_last_log), fmt, ap);
	va_end(ap);
	eh_stub_log_count++;
	if (eh_stub_log_hook)
		eh_stub_log_hook(level, eh_stub_last_log);
	if (getenv("EH_STUB_LOG"))
		fprintf(stderr, "log: %s\n", eh_stub_last_log);
}

void *mosquitto_malloc(size_t size)
{
	return malloc(size);
}

void mosquitto_free(void *mem)
{
	free(mem);
}

/* Like the broker: a queued message's payload is the broker's to free. */
int mosquitto_broker_publish(const char *clientid, const char *topic, int payloadlen, void *payload, int qos,
			     bool retain, mosquitto_property *properties)
{
	(void)clientid;
	(void)qos;
	(void)retain;
	(void)properties;
	snprintf(eh_stub_last_topic, sizeof(eh_stub_last_topic), "%s", topic);
	eh_stub_publish_count++;
	if (eh_stub_publish_hook)
		eh_stub_publish_hook(topic, payload, payloadlen);
	free(payload);
	return MOSQ_ERR_SUCCESS;
}

const char *mosquitto_strerror(int mosq_errno)
{
	return mosq_errno == MOSQ_ERR_SUCCESS ? "No error." : "stub error";
}

int mosquitto_callback_register(mosquitto_plugin_id_t *identifier, int event, MOSQ_FUNC_generic_callback cb_func,
				const void *event_data, void *userdata)
{
	(void)identifier;
	(void)event_data;
	/* 2.0 knows events up to MOSQ_EVT_EXT_AUTH_CONTINUE (10) and refuses
	 * the 2.1 ones, which the plugin probes for. */
	if (event > 10)
		return MOSQ_ERR_NOT_SUPPORTED;
	eh_stub_callbacks++;
	if (event >= 0) {
		eh_stub_cb[event] = cb_func;
		eh_stub_cb_user[event] = userdata;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_callback_unregister(mosquitto_plugin_id_t *identifier, int event, MOSQ_FUNC_generic_callback cb_func,
				  const void *event_data)
{
	(void)identifier;
	(void)event_data;
	eh_stub_callbacks--;
	if (event >= 0 && event <= 10 && eh_stub_cb[event] == cb_func)
		eh_stub_cb[event] = NULL;
	return MOSQ_ERR_SUCCESS;
}

const char *mosquitto_client_address(const struct mosquitto *client) { (void)client; return "127.0.0.1"; }
bool mosquitto_client_clean_session(const struct mosquitto *client) { (void)client; return true; }
const char *mosquitto_client_id(const struct mosquitto *client) { (void)client; return "stub"; }
int mosquitto_client_keepalive(const struct mosquitto *client) { (void)client; return 60; }
int mosquitto_client_protocol(const struct mosquitto *client) { (void)client; return mp_mqtt; }
int mosquitto_client_protocol_version(const struct mosquitto *client) { (void)client; return 4; }
int mosquitto_client_sub_count(const struct mosquitto *client) { (void)client; return 0; }
const char *mosquitto_client_username(const struct mosquitto *client) { (void)client; return NULL; }
