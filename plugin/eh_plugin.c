/*
 * eh_plugin: the three entry points Mosquitto calls. Everything else is
 * hidden (-fvisibility=hidden); only these are exported.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "eh_mosquitto.h"

#include "eh_capture.h"
#include "eh_core.h"
#include "eh_version.h"

#define EH_EXPORT __attribute__((visibility("default")))

#if EH_HAVE_21
/* 2.1 only. Weak, because the broker loads plugins with RTLD_NOW: a strong
 * reference that a 2.0 broker cannot resolve would make loading fail. */
#pragma weak mosquitto_plugin_set_info
#endif

/* With per_listener_settings the broker initialises the same loaded object
 * once per listener; this counts them so each instance can find its
 * listener's security settings. Everything else lives in user data. */
static atomic_int init_count;

EH_EXPORT int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5)
			return 5;
	}
	return -1;
}

EH_EXPORT int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
				    struct mosquitto_opt *options, int option_count)
{
	struct eh_core *core = calloc(1, sizeof(*core));
	struct eh_kv *kv = option_count > 0 ? calloc((size_t)option_count, sizeof(*kv)) : NULL;
	int index = atomic_fetch_add(&init_count, 1);
	int rc;

#if EH_HAVE_21
	/* Names us in the broker's log lines and $CONTROL listings. */
	if (mosquitto_plugin_set_info)
		mosquitto_plugin_set_info(identifier, "eventhook", EH_VERSION);
#endif
	mosquitto_log_printf(MOSQ_LOG_INFO, "eventhook: mosquitto-eventhook %s loading", EH_VERSION);
	if (!core || (option_count > 0 && !kv)) {
		mosquitto_log_printf(MOSQ_LOG_ERR, "eventhook: out of memory");
		free(core);
		free(kv);
		return MOSQ_ERR_NOMEM;
	}
	for (int i = 0; i < option_count; i++) {
		kv[i].key = options[i].key;
		kv[i].value = options[i].value;
	}
	rc = eh_core_init(core, identifier, kv, (size_t)option_count);
	free(kv);
	if (rc == 0)
		rc = eh_capture_init(core, index);
	if (rc == 0)
		rc = eh_core_start(core);
	if (rc) {
		eh_capture_cleanup(core);
		if (eh_core_stop(core))
			free(core);
		return MOSQ_ERR_INVAL;
	}
	*userdata = core;
	mosquitto_log_printf(MOSQ_LOG_INFO, "eventhook: mosquitto-eventhook %s started, node '%s', %zu sink(s)",
			     EH_VERSION, core->node.name, core->nsinks);
	return MOSQ_ERR_SUCCESS;
}

EH_EXPORT int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	struct eh_core *core = userdata;

	(void)options;
	(void)option_count;
	if (!core)
		return MOSQ_ERR_SUCCESS;
	eh_capture_cleanup(core);
	/* (false: a stuck sink thread still uses the core; it stays) */
	if (eh_core_stop(core))
		free(core);
	return MOSQ_ERR_SUCCESS;
}
