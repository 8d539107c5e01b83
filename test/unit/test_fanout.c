/*
 * eh_fanout: events go in through the real eh_core_emit on this thread and
 * are read back from the sinks' rings (no sink threads), so each test sees
 * exactly which records each sink got, with which seq, and what was
 * counted dropped where.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "eh_core.h"
#include "eh_runner.h"
#include "unit.h"

extern int eh_stub_log_count;
extern char eh_stub_last_log[1024];

extern char eh_stub_last_log[1024];
extern void (*eh_stub_log_hook)(int level, const char *line);

static const struct eh_sink_ops no_ops = { .name = "none" };

/* A core of n sinks with rings of 1 MiB (sink 0 limited to first_max
 * records; 0: no limit), every sink wanting every event, and the fan-out on
 * with a ring of fanout_max records. */
static struct eh_core *fanout_core(size_t n, uint64_t first_max, uint64_t fanout_max)
{
	struct eh_core *core = calloc(1, sizeof(*core));

	ck_assert_ptr_nonnull(core);
	core->broker_thread = pthread_self();
	pthread_mutex_init(&core->log.lock, NULL);
	core->nsinks = n;
	for (size_t i = 0; i < n; i++) {
		core->sinks[i].ops = &no_ops;
		core->sinks[i].core = core;
		core->sinks[i].mask = EH_EV_MASK_ALL;
		snprintf(core->sinks[i].name, sizeof(core->sinks[i].name), "s%zu", i);
		ck_assert_int_eq(eh_ring_init(&core->sinks[i].ring, 1 << 20, i == 0 ? first_max : 0), 0);
	}
	eh_core_route(core);
	ck_assert(eh_fanout_useful(core));
	ck_assert_int_eq(eh_fanout_init(core, 1 << 20, fanout_max), 0);
	return core;
}

static void fanout_core_free(struct eh_core *core)
{
	eh_fanout_stop(core);
	for (size_t i = 0; i < core->nsinks; i++) {
		eh_topics_free(&core->sinks[i].topics);
		eh_ring_destroy(&core->sinks[i].ring);
	}
	pthread_mutex_destroy(&core->log.lock);
	free(core);
}

static void set_topics(struct eh_sink *s, const char *list)
{
	char err[256];

	ck_assert_msg(eh_topics_parse(&s->topics, list, err, sizeof(err)) == 0, "%s", err);
}

/* As after a failed pthread_create: the thread is not tried again until
 * let_thread_start. */
static void hold_thread(struct eh_core *core)
{
	core->fanout.thread_retry_ms = INT64_MAX;
}

static void let_thread_start(struct eh_core *core)
{
	core->fanout.thread_retry_ms = 0;
}

static void emit(struct eh_core *core, unsigned type, const char *topic)
{
	struct eh_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.type = type;
	ev.ts_ms = 1700000000000LL;
	ev.f[EH_F_CLIENTID] = (struct eh_bytes){ "fan", 3 };
	ev.f[EH_F_TOPIC] = (struct eh_bytes){ topic, strlen(topic) };
	eh_core_emit(core, &ev);
}

static void wait_fanout_empty(struct eh_core *core)
{
	int64_t end = eh_now_ms() + 30000;
	struct timespec ms = { 0, 1000000L };

	while (eh_ring_count(&core->fanout.ring)) {
		ck_assert_msg(eh_now_ms() < end, "the fan-out thread left %llu records",
			      (unsigned long long)eh_ring_count(&core->fanout.ring));
		nanosleep(&ms, NULL);
	}
}

/* What a sink's ring holds, as "seq:number:topic" joined by spaces; a
 * topic over 16 bytes as its length, "<941 bytes>". */
static void ring_text(struct eh_sink *s, char *out, size_t cap)
{
	struct eh_ring_rec recs[64];
	size_t n = eh_ring_peek_sc(&s->ring, recs, 64);

	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		struct eh_event ev;
		size_t at = strlen(out);

		ck_assert_int_eq(eh_event_unpack(recs[i].data, recs[i].len, &ev), 0);
		ck_assert_uint_eq(ev.f[EH_F_CLIENTID].len, 3);
		ck_assert(!memcmp(ev.f[EH_F_CLIENTID].ptr, "fan", 3));
		if (ev.f[EH_F_TOPIC].len > 16)
			snprintf(out + at, cap - at, "%s%llu:%llu:<%u bytes>", i ? " " : "", (unsigned long long)ev.seq,
				 (unsigned long long)ev.number, (unsigned)ev.f[EH_F_TOPIC].len);
		else
			snprintf(out + at, cap - at, "%s%llu:%llu:%.*s", i ? " " : "", (unsigned long long)ev.seq,
				 (unsigned long long)ev.number, (int)ev.f[EH_F_TOPIC].len, ev.f[EH_F_TOPIC].ptr);
	}
}

static void expect_sink(struct eh_sink *s, const char *records, uint64_t enqueued, uint64_t dropped)
{
	char got[2048];

	ring_text(s, got, sizeof(got));
	ck_assert_str_eq(got, records);
	ck_assert_uint_eq(eh_sink_enqueued(s), enqueued);
	ck_assert_uint_eq(eh_sink_dropped(s), dropped);
}

/* Each sink gets what its mask and topics want, with its own seq; a sink
 * whose ring is full loses only its own copies, counted in place. */
START_TEST(fanout_copies_to_each_sink)
{
	struct eh_core *core = fanout_core(3, 3, 0);

	set_topics(&core->sinks[1], "t/a");
	core->sinks[2].mask = EH_EV_BIT(EH_EV_PUBLISH);
	eh_core_route(core);
	for (unsigned i = 1; i <= 6; i++)
		emit(core, i % 2 ? EH_EV_PUBLISH : EH_EV_SUBSCRIBE, i <= 3 ? "t/a" : "t/b");
	wait_fanout_empty(core);
	ck_assert(core->fanout.thread_started);
	eh_fanout_stop(core);
	expect_sink(&core->sinks[0], "1:1:t/a 2:2:t/a 3:3:t/a", 3, 3);
	ck_assert_uint_eq(atomic_load(&core->sinks[0].seq), 6);
	expect_sink(&core->sinks[1], "1:1:t/a 2:2:t/a 3:3:t/a", 3, 0);
	expect_sink(&core->sinks[2], "1:1:t/a 2:3:t/a 3:5:t/b", 3, 0);
	fanout_core_free(core);
}
END_TEST

/* Events the fan-out ring has no room for are counted for each sink that
 * would have taken them (and only those), reach the sinks' counters
 * through drop notes, and leave the gap in each sink's seq where they were
 * lost. */
START_TEST(fanout_full_ring_counted_per_sink_in_place)
{
	struct eh_core *core = fanout_core(2, 0, 4);

	set_topics(&core->sinks[1], "t/a");
	eh_core_route(core);
	hold_thread(core);
	/* 1 to 4 fill the fan-out ring; 5, 6 and 7 find it full */
	for (unsigned i = 1; i <= 7; i++)
		emit(core, EH_EV_PUBLISH, i % 2 ? "t/a" : "t/b");
	ck_assert(!core->fanout.thread_started);
	ck_assert_uint_eq(eh_fanout_pending(&core->fanout, 0), 3);
	ck_assert_uint_eq(eh_fanout_pending(&core->fanout, 1), 2); /* 5 and 7 */
	let_thread_start(core);
	emit(core, EH_EV_PUBLISH, "t/b"); /* 8: still full; starts the thread */
	ck_assert(core->fanout.thread_started);
	wait_fanout_empty(core);
	emit(core, EH_EV_PUBLISH, "t/a"); /* 9: two notes, then the event */
	wait_fanout_empty(core);
	ck_assert_uint_eq(eh_fanout_pending(&core->fanout, 0), 0);
	eh_fanout_stop(core);
	expect_sink(&core->sinks[0], "1:1:t/a 2:2:t/b 3:3:t/a 4:4:t/b 9:9:t/a", 5, 4);
	expect_sink(&core->sinks[1], "1:1:t/a 2:3:t/a 5:9:t/a", 3, 2);
	fanout_core_free(core);
}
END_TEST

/* Pending drops that no later event carried are counted at stop. */
START_TEST(fanout_stop_counts_what_is_still_pending)
{
	struct eh_core *core = fanout_core(2, 0, 2);

	hold_thread(core);
	for (unsigned i = 1; i <= 5; i++)
		emit(core, EH_EV_SUBSCRIBE, "t/x");
	ck_assert_uint_eq(eh_fanout_pending(&core->fanout, 0), 3);
	/* Its thread never started: stop copies the ring's events itself. */
	eh_fanout_stop(core);
	ck_assert(!core->fanout.on);
	for (size_t i = 0; i < 2; i++) {
		expect_sink(&core->sinks[i], "1:1:t/x 2:2:t/x", 2, 3);
		ck_assert_uint_eq(atomic_load(&core->sinks[i].seq), 5);
	}
	fanout_core_free(core);
}
END_TEST

/* The broker thread emits in bursts, with pauses long enough for the
 * fan-out thread to go to sleep, then stops at once: every event reaches
 * both sinks, in order, none dropped. (TSan, in make check-tsan, sees the
 * fan-out ring under real concurrency here, and the sinks' rings in
 * fanout_real_sinks_get_everything.) */
START_TEST(fanout_stop_delivers_everything_in_order)
{
	struct eh_core *core = fanout_core(2, 0, 0);
	struct timespec pause = { 0, 25 * 1000000L };
	struct eh_ring_rec recs[512];

	for (unsigned burst = 0; burst < 10; burst++) {
		for (unsigned i = 0; i < 300; i++)
			emit(core, EH_EV_PUBLISH, "t/b");
		if (burst % 3 == 0)
			nanosleep(&pause, NULL); /* past the thread's naps: it sleeps */
	}
	eh_fanout_stop(core);
	for (size_t i = 0; i < 2; i++) {
		uint64_t next = 1;
		size_t n;

		while ((n = eh_ring_peek_sc(&core->sinks[i].ring, recs, 512))) {
			for (size_t k = 0; k < n; k++) {
				struct eh_event ev;

				ck_assert_int_eq(eh_event_unpack(recs[k].data, recs[k].len, &ev), 0);
				ck_assert_uint_eq(ev.seq, next);
				ck_assert_uint_eq(ev.number, next);
				next++;
			}
			eh_ring_release_sc(&core->sinks[i].ring, &recs[n - 1], n);
		}
		ck_assert_uint_eq(next, 3001);
		ck_assert_uint_eq(eh_sink_enqueued(&core->sinks[i]), 3000);
		ck_assert_uint_eq(eh_sink_dropped(&core->sinks[i]), 0);
	}
	fanout_core_free(core);
}
END_TEST

/* The published dropped count never steps back: events lost at the
 * fan-out ring are counted at once, and the drop note that later carries
 * their seq numbers (here taken out of the ring by hand, as if the thread
 * had read it and not yet applied it) changes nothing. */
START_TEST(fanout_published_dropped_never_steps_back)
{
	struct eh_core *core = fanout_core(2, 0, 4);
	struct eh_ring_rec recs[8];

	hold_thread(core);
	for (unsigned i = 1; i <= 5; i++)
		emit(core, EH_EV_PUBLISH, "t");
	ck_assert_uint_eq(eh_sink_dropped(&core->sinks[0]), 1);
	ck_assert_uint_eq(eh_ring_peek_sc(&core->fanout.ring, recs, 8), 4);
	eh_ring_release_sc(&core->fanout.ring, &recs[3], 4);
	emit(core, EH_EV_PUBLISH, "t"); /* two notes, then the event */
	ck_assert_uint_eq(eh_fanout_pending(&core->fanout, 0), 0);
	ck_assert_uint_eq(eh_sink_dropped(&core->sinks[0]), 1);
	ck_assert_uint_eq(eh_ring_peek_sc(&core->fanout.ring, recs, 8), 3);
	eh_ring_release_sc(&core->fanout.ring, &recs[1], 2); /* the notes, unapplied */
	ck_assert_uint_eq(eh_sink_dropped(&core->sinks[0]), 1);
	ck_assert_uint_eq(eh_sink_dropped(&core->sinks[1]), 1);
	fanout_core_free(core);
}
END_TEST

/* Pending notes that only partly fit: the first sink's note goes in, the
 * second's waits for the next event; both sinks end with the gap in
 * place. */
static void emit_topic_of(struct eh_core *core, size_t len)
{
	static char topic[1024];

	memset(topic, 'a', sizeof(topic));
	topic[len] = '\0';
	emit(core, EH_EV_PUBLISH, topic);
}

START_TEST(fanout_notes_that_partly_fit)
{
	struct eh_core *core = fanout_core(2, 0, 0);

	/* a fan-out ring of 4 KiB */
	eh_ring_destroy(&core->fanout.ring);
	ck_assert_int_eq(eh_ring_init(&core->fanout.ring, 4096, 0), 0);
	hold_thread(core);
	for (unsigned i = 1; i <= 3; i++)
		emit_topic_of(core, 941);
	emit_topic_of(core, 933); /* 4,056 of 4,096 bytes used */
	emit_topic_of(core, 10);  /* 5: no room */
	emit_topic_of(core, 10);  /* 6: sink 0's note fits, sink 1's does not */
	ck_assert_uint_eq(eh_ring_count(&core->fanout.ring), 5);
	ck_assert_uint_eq(eh_fanout_pending(&core->fanout, 0), 1);
	ck_assert_uint_eq(eh_fanout_pending(&core->fanout, 1), 2);
	let_thread_start(core);
	emit_topic_of(core, 10); /* 7: still no room; starts the thread */
	wait_fanout_empty(core);
	emit_topic_of(core, 10); /* 8 */
	eh_fanout_stop(core);
	for (size_t i = 0; i < 2; i++)
		expect_sink(&core->sinks[i], "1:1:<941 bytes> 2:2:<941 bytes> 3:3:<941 bytes> 4:4:<933 bytes> "
					     "8:8:aaaaaaaaaa", 5, 3);
	fanout_core_free(core);
}
END_TEST

/* While the thread cannot start, each TICK makes its copies on the broker
 * thread: the sinks get their events all the same. */
START_TEST(fanout_tick_copies_while_the_thread_cannot_start)
{
	struct eh_core *core = fanout_core(2, 0, 0);

	hold_thread(core);
	for (unsigned i = 1; i <= 3; i++)
		emit(core, EH_EV_SUBSCRIBE, "t/x");
	ck_assert_uint_eq(eh_ring_count(&core->fanout.ring), 3);
	eh_core_tick(core, eh_now_ms(), true);
	ck_assert(!core->fanout.thread_started);
	ck_assert_uint_eq(eh_ring_count(&core->fanout.ring), 0);
	for (size_t i = 0; i < 2; i++)
		expect_sink(&core->sinks[i], "1:1:t/x 2:2:t/x 3:3:t/x", 3, 0);
	fanout_core_free(core);
}
END_TEST

/* A membarrier refused after registration (eh_ring.c records it) is said
 * once in the broker log, at the next TICK. */
START_TEST(fanout_tick_reports_membarrier_refused_once)
{
	struct eh_core *core = fanout_core(2, 0, 0);
	int before;

	hold_thread(core);
	eh_core_tick(core, eh_now_ms(), true);
	before = eh_stub_log_count;
	atomic_store(&eh_ring_membarrier_errno, EPERM);
	eh_core_tick(core, eh_now_ms(), true);
	ck_assert_int_eq(eh_stub_log_count, before + 1);
	ck_assert_ptr_nonnull(strstr(eh_stub_last_log, "membarrier failed (Operation not permitted)"));
	ck_assert_ptr_nonnull(strstr(eh_stub_last_log, "nothing is lost"));
	eh_core_tick(core, eh_now_ms(), true);
	ck_assert_int_eq(eh_stub_log_count, before + 1);
	atomic_store(&eh_ring_membarrier_errno, 0);
	fanout_core_free(core);
}
END_TEST

/* The real file and local sinks, set up by eh_core_init: the fan-out
 * thread starts their threads at the first event and fills their rings
 * while they sleep between bursts; every event is delivered and the
 * counters at stop say so. */
static char stop_lines[4][512];
static int nstop;

static void grab_stop_line(int level, const char *line)
{
	(void)level;
	if (strstr(line, "stopped; enqueued") && nstop < 4)
		snprintf(stop_lines[nstop++], sizeof(stop_lines[0]), "%s", line);
}

START_TEST(fanout_real_sinks_get_everything)
{
	char path[] = "/tmp/eh-fanout-XXXXXX";
	int fd = mkstemp(path);
	struct eh_kv kv[] = { { "file_path", path }, { "local_topic", "ev" } };
	struct eh_core *core = calloc(1, sizeof(*core));
	struct timespec pause = { 0, 25 * 1000000L };
	char line[4096];
	unsigned lines = 0;
	FILE *f;

	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_ptr_nonnull(core);
	ck_assert_msg(eh_core_init(core, NULL, kv, 2) == 0, "%s", eh_stub_last_log);
	ck_assert(core->fanout.on);
	ck_assert_int_eq(eh_core_start(core), 0);
	for (unsigned burst = 0; burst < 10; burst++) {
		for (unsigned i = 0; i < 300; i++)
			emit(core, EH_EV_CONNECTED, "");
		nanosleep(&pause, NULL); /* past the naps: the threads sleep */
		eh_core_tick(core, eh_now_ms(), true);
	}
	/* The local sink's messages go out at TICK, which the broker no
	 * longer runs once it stops: tick until both sinks have delivered. */
	for (int64_t end = eh_now_ms() + 30000;
	     atomic_load(&core->sinks[0].delivered) + atomic_load(&core->sinks[1].delivered) < 6000;) {
		struct timespec ms = { 0, 1000000L };

		ck_assert_msg(eh_now_ms() < end, "delivered only %llu + %llu",
			      (unsigned long long)atomic_load(&core->sinks[0].delivered),
			      (unsigned long long)atomic_load(&core->sinks[1].delivered));
		eh_core_tick(core, eh_now_ms(), true);
		nanosleep(&ms, NULL);
	}
	nstop = 0;
	eh_stub_log_hook = grab_stop_line;
	eh_core_stop(core);
	eh_stub_log_hook = NULL;
	ck_assert_int_eq(nstop, 2);
	for (int i = 0; i < nstop; i++)
		ck_assert_msg(strstr(stop_lines[i], "enqueued 3000, delivered 3000, failed 0, dropped 0, "
					      "left undelivered at shutdown 0"), "%s", stop_lines[i]);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		lines++;
	fclose(f);
	unlink(path);
	ck_assert_uint_eq(lines, 3000);
	free(core);
}
END_TEST

/* eh_core_init turns the fan-out on when an event type goes to two sinks
 * or more, and only then, unless fanout_thread is off. */
START_TEST(fanout_chosen_by_init)
{
	static const struct {
		struct eh_kv kv[4];
		size_t n;
		bool on;
	} cases[] = {
		{ { { "file_path", "/dev/null" }, { "local_topic", "ev" } }, 2, true },
		{ { { "file_path", "/dev/null" }, { "local_topic", "ev" }, { "fanout_thread", "off" } }, 3, false },
		{ { { "file_path", "/dev/null" } }, 1, false },
		{ { { "file_path", "/dev/null" }, { "file_events", "client.connect" }, { "local_topic", "ev" },
		    { "local_events", "client.disconnected" } }, 4, false },
		{ { { "file_path", "/dev/null" }, { "file_events", "client.*" }, { "local_topic", "ev" },
		    { "local_events", "client.disconnected" } }, 4, true },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct eh_core *core = calloc(1, sizeof(*core));

		ck_assert_ptr_nonnull(core);
		ck_assert_msg(eh_core_init(core, NULL, cases[i].kv, cases[i].n) == 0, "case %zu: %s", i,
			      eh_stub_last_log);
		ck_assert_msg(core->fanout.on == cases[i].on, "case %zu", i);
		eh_core_stop(core);
		free(core);
	}
}
END_TEST

/* A value other than auto and off stops the broker with a clear error. */
START_TEST(fanout_option_checked)
{
	struct eh_kv kv[] = { { "file_path", "/dev/null" }, { "fanout_thread", "on" } };
	struct eh_core *core = calloc(1, sizeof(*core));

	ck_assert_ptr_nonnull(core);
	ck_assert_int_eq(eh_core_init(core, NULL, kv, 2), -1);
	ck_assert_msg(strstr(eh_stub_last_log, "fanout_thread"), "%s", eh_stub_last_log);
	eh_core_stop(core);
	free(core);
}
END_TEST

static Suite *fanout_suite(void)
{
	Suite *s = suite_create("fanout");
	TCase *tc = tcase_create("fanout");

	tcase_add_test(tc, fanout_copies_to_each_sink);
	tcase_add_test(tc, fanout_full_ring_counted_per_sink_in_place);
	tcase_add_test(tc, fanout_stop_counts_what_is_still_pending);
	tcase_add_test(tc, fanout_stop_delivers_everything_in_order);
	tcase_add_test(tc, fanout_published_dropped_never_steps_back);
	tcase_add_test(tc, fanout_notes_that_partly_fit);
	tcase_add_test(tc, fanout_tick_copies_while_the_thread_cannot_start);
	tcase_add_test(tc, fanout_real_sinks_get_everything);
	tcase_add_test(tc, fanout_chosen_by_init);
	tcase_add_test(tc, fanout_tick_reports_membarrier_refused_once);
	tcase_add_test(tc, fanout_option_checked);
	suite_add_tcase(s, tc);
	return s;
}

EH_UNIT_SUITE(fanout_suite)
