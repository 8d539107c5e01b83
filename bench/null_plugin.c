/* A Mosquitto v5 plugin that registers no callback but links every library
 * the real plugin links. bench/throughput.py loads it as "libs"
 * (BENCH_LIBS=1) to tell what loading those libraries costs the broker from
 * what the plugin's callbacks cost it. Not installed, bench only. */
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

int mosquitto_plugin_version(int count, const int *versions)
{
	for (int i = 0; i < count; i++) {
		if (versions[i] == 5) {
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *id, void **user, struct mosquitto_opt *opts, int n)
{
	(void)id;
	(void)opts;
	(void)n;
	*user = NULL;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *user, struct mosquitto_opt *opts, int n)
{
	(void)user;
	(void)opts;
	(void)n;
	return MOSQ_ERR_SUCCESS;
}
