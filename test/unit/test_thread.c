/*
 * eh_thread_own_files, and when the core lets the plugin's threads take a
 * descriptor table of their own.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eh_core.h"
#include "eh_thread.h"
#include "unit.h"

extern char eh_stub_last_log[1024];

struct probe {
	pthread_barrier_t opened_seen; /* the thread holds opened while the caller looks */
	int broker_fd;    /* a descriptor of the calling thread's table */
	int rc, err;      /* eh_thread_own_files */
	int seen;         /* fcntl(broker_fd) in the thread, after */
	int seen_err;
	int stdio_open[3]; /* which of 0 to 2 the caller has open */
	int stdio_ok;     /* the thread has the same ones */
	int opened;       /* a descriptor the thread opened after */
	ino_t opened_ino;
};

static void *probe(void *arg)
{
	struct probe *p = arg;

	p->rc = eh_thread_own_files();
	p->err = errno;
	errno = 0;
	p->seen = fcntl(p->broker_fd, F_GETFD);
	p->seen_err = errno;
	p->stdio_ok = 1;
	for (int fd = 0; fd < 3; fd++) {
		struct stat st;

		if ((fstat(fd, &st) == 0) != p->stdio_open[fd])
			p->stdio_ok = 0;
	}
	p->opened = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
	if (p->opened >= 0) {
		struct stat st;

		p->opened_ino = fstat(p->opened, &st) ? 0 : st.st_ino;
	}
	pthread_barrier_wait(&p->opened_seen);
	pthread_barrier_wait(&p->opened_seen);
	if (p->opened >= 0)
		close(p->opened);
	return NULL;
}

/* The thread no longer sees the caller's descriptors, the caller keeps
 * them, and what the thread opens stays in the thread's table. */
START_TEST(own_files_leaves_the_broker_table)
{
	int pipefd[2];
	struct probe p = { 0 };
	pthread_t t;
	char c = 'x';

	ck_assert_int_eq(pipe(pipefd), 0);
	ck_assert_int_eq(pthread_barrier_init(&p.opened_seen, NULL, 2), 0);
	p.broker_fd = pipefd[0];
	for (int fd = 0; fd < 3; fd++) {
		struct stat st;

		p.stdio_open[fd] = fstat(fd, &st) == 0;
	}
	ck_assert_int_eq(pthread_create(&t, NULL, probe, &p), 0);
	pthread_barrier_wait(&p.opened_seen);
	{
		/* The thread's descriptor is not ours: our number is closed or
		 * another file. */
		struct stat st;

		ck_assert_int_ge(p.opened, 3);
		ck_assert(p.rc != 0 || fstat(p.opened, &st) != 0 || st.st_ino != p.opened_ino);
	}
	pthread_barrier_wait(&p.opened_seen);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	pthread_barrier_destroy(&p.opened_seen);
	if (p.rc && (p.err == ENOSYS || p.err == EPERM)) {
		/* a kernel before 5.9, or a seccomp filter: nothing to prove */
		fprintf(stderr, "thread: eh_thread_own_files: %s; not checked\n", strerror(p.err));
		close(pipefd[0]);
		close(pipefd[1]);
		return;
	}
	ck_assert_msg(p.rc == 0, "eh_thread_own_files: %s", strerror(p.err));
	ck_assert_int_eq(p.seen, -1);
	ck_assert_int_eq(p.seen_err, EBADF);
	ck_assert(p.stdio_ok);
	/* ours still work */
	ck_assert_int_eq(write(pipefd[1], &c, 1), 1);
	c = 0;
	ck_assert_int_eq(read(pipefd[0], &c, 1), 1);
	ck_assert_int_eq(c, 'x');
	close(pipefd[0]);
	close(pipefd[1]);
}
END_TEST

/* Only when every sink opens its descriptors on its own thread: the file
 * sink on a regular file (not a FIFO, not a device), the local, http and
 * kafka sinks; the mqtt sink, whose library's threads serve every client
 * of the process, only when the plugin is the broker's sole plugin. */
START_TEST(own_files_when_every_sink_opens_its_own)
{
	char path[] = "/tmp/eh-thread-XXXXXX", fifo[64];
	int fd = mkstemp(path), reader;
	struct {
		struct eh_kv kv[2];
		size_t n;
		bool own, own_if_sole;
	} cases[] = {
		{ { { "file_path", path } }, 1, true, true },
		{ { { "file_path", path }, { "local_topic", "ev" } }, 2, true, true },
		{ { { "local_topic", "ev" } }, 1, true, true },
		{ { { "file_path", "/dev/null" } }, 1, false, false },
		{ { { "file_path", fifo } }, 1, false, false },
		{ { { "file_path", path }, { "http_url", "http://127.0.0.1:9/" } }, 2, true, true },
		{ { { "kafka_brokers", "127.0.0.1:9" }, { "http_url", "http://127.0.0.1:9/" } }, 2, true, true },
		{ { { "file_path", path }, { "mqtt_uri", "tcp://127.0.0.1:9" } }, 2, false, true },
		{ { { "file_path", fifo }, { "mqtt_uri", "tcp://127.0.0.1:9" } }, 2, false, false },
	};

	ck_assert_int_ge(fd, 0);
	close(fd);
	snprintf(fifo, sizeof(fifo), "%s.fifo", path);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	reader = open(fifo, O_RDONLY | O_NONBLOCK);
	ck_assert_int_ge(reader, 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct eh_core *core = calloc(1, sizeof(*core));

		ck_assert_ptr_nonnull(core);
		ck_assert_msg(eh_core_init(core, NULL, cases[i].kv, cases[i].n) == 0, "case %zu: %s", i,
			      eh_stub_last_log);
		eh_core_decide_own_files(core);
		ck_assert_msg(core->own_files == cases[i].own, "case %zu", i);
		core->sole_plugin = true;
		eh_core_decide_own_files(core);
		ck_assert_msg(core->own_files == cases[i].own_if_sole, "case %zu, the sole plugin", i);
		eh_core_stop(core);
		free(core);
	}
	close(reader);
	unlink(fifo);
	unlink(path);
}
END_TEST

static Suite *thread_suite(void)
{
	Suite *s = suite_create("thread");
	TCase *tc = tcase_create("thread");

	tcase_add_test(tc, own_files_leaves_the_broker_table);
	tcase_add_test(tc, own_files_when_every_sink_opens_its_own);
	suite_add_tcase(s, tc);
	return s;
}

EH_UNIT_SUITE(thread_suite)
