/* A Mosquitto v5 plugin that registers no callback but links every library
 * the real plugin links. bench/throughput.py loads it as "libs"
 * (BENCH_LIBS=1) to tell what loading those libraries costs the broker from
 * what the plugin's callbacks cost it.
 *
 * plugin_opt_thread idle starts one thread that only sleeps, and
 * plugin_opt_thread private one that first leaves the broker's file
 * descriptor table (unshare(CLONE_FILES), then closes its copies of the
 * broker's descriptors): bench/paired_cpu.py measures what the mere
 * existence of a second thread costs the broker's thread, and how much of
 * that is the kernel's shared-table path in every read and write.
 *
 * plugin_opt_register basic_auth,disconnect,tick,ext_auth_start registers
 * callbacks that do nothing (BASIC_AUTH accepts): what the broker's own
 * dispatch to the callbacks the plugin registers with no sink interested
 * costs, apart from what ours do. Not installed, bench only. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

static mosquitto_plugin_id_t *plugin_id;
static int registered[16];
static int nregistered;

static int accept_all(int event, void *event_data, void *user)
{
	(void)event;
	(void)event_data;
	(void)user;
	return MOSQ_ERR_SUCCESS;
}

static int register_some(const char *list)
{
	static const struct {
		const char *name;
		int event;
	} known[] = {
		{ "basic_auth", MOSQ_EVT_BASIC_AUTH },
		{ "disconnect", MOSQ_EVT_DISCONNECT },
		{ "tick", MOSQ_EVT_TICK },
		{ "ext_auth_start", MOSQ_EVT_EXT_AUTH_START },
	};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		if (!strstr(list, known[i].name))
			continue;
		if (mosquitto_callback_register(plugin_id, known[i].event, accept_all, NULL, NULL))
			return MOSQ_ERR_UNKNOWN;
		registered[nregistered++] = known[i].event;
	}
	return MOSQ_ERR_SUCCESS;
}

static void *sleeper(void *arg)
{
	if (arg && (unshare(CLONE_FILES) || close_range(3, ~0U, 0)))
		mosquitto_log_printf(MOSQ_LOG_ERR, "null_plugin: cannot leave the file table: %s", strerror(errno));
	for (;;)
		pause();
	return NULL;
}

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
	plugin_id = id;
	*user = NULL;
	for (int i = 0; i < n; i++) {
		if (!strcmp(opts[i].key, "register")) {
			if (register_some(opts[i].value))
				return MOSQ_ERR_UNKNOWN;
			continue;
		}
		bool private = !strcmp(opts[i].value, "private");
		pthread_t t;

		if (strcmp(opts[i].key, "thread"))
			continue;
		if (!private && strcmp(opts[i].value, "idle")) {
			mosquitto_log_printf(MOSQ_LOG_ERR, "null_plugin: plugin_opt_thread: idle or private");
			return MOSQ_ERR_INVAL;
		}
		/* The thread lives as long as the process; the broker's exit
		 * ends it. */
		if (pthread_create(&t, NULL, sleeper, private ? (void *)1 : NULL) || pthread_detach(t))
			return MOSQ_ERR_UNKNOWN;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *user, struct mosquitto_opt *opts, int n)
{
	for (int i = 0; i < nregistered; i++)
		mosquitto_callback_unregister(plugin_id, registered[i], accept_all, NULL);
	nregistered = 0;
	(void)user;
	(void)opts;
	(void)n;
	return MOSQ_ERR_SUCCESS;
}
