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
 * Not installed, bench only. */
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
	(void)id;
	*user = NULL;
	for (int i = 0; i < n; i++) {
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
	(void)user;
	(void)opts;
	(void)n;
	return MOSQ_ERR_SUCCESS;
}
