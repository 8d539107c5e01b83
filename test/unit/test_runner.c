/*
 * eh_runner: the shared sink runner, driven with a fake sink whose deliver
 * hook follows a per-test script. The core is built by hand around one sink
 * (no registry, no options), events go in through the real eh_core_emit,
 * and after every test the counters must add up:
 * enqueued == delivered + failed + left.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eh_core.h"
#include "eh_runner.h"
#include "unit.h"

#define MAX_SEEN 4096
#define MAX_CALLS 4096

struct fake;
typedef enum eh_deliver_rc (*script_fn)(struct fake *f, struct eh_batch *b);

struct fake {
	struct eh_sink *sink;
	script_fn script;
	int64_t arg;             /* script parameter */
	int64_t sleep_ms;        /* each deliver takes this long */
	/* Written by the sink thread; read by the test after join, or
	 * through the atomics while it runs. */
	uint64_t seen[MAX_SEEN]; /* seq of each event reported as done, in order */
	size_t nseen;
	struct {
		size_t count;
		uint64_t attempt, first_seq;
		int64_t at_ms;
	} calls[MAX_CALLS];
	size_t ncalls;
	uint64_t total;          /* deliver calls, also beyond MAX_CALLS */
	uint64_t unacked;        /* ASYNC_ACK: handed over, not yet counted */
	_Atomic uint64_t done_events, deliver_calls, reloads, opens, polls, flushes;
};

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static enum eh_deliver_rc fake_deliver(void *ctx, struct eh_batch *b)
{
	struct fake *f = ctx;
	enum eh_deliver_rc rc;
	size_t done;

	f->total++;
	if (f->ncalls < MAX_CALLS) {
		f->calls[f->ncalls].count = b->count;
		f->calls[f->ncalls].attempt = b->attempt;
		f->calls[f->ncalls].first_seq = b->events[0].seq;
		f->calls[f->ncalls].at_ms = eh_now_ms();
		f->ncalls++;
	}
	/* Events arrive in seq order within a batch (with gaps only where
	 * a full ring dropped). */
	for (size_t i = 1; i < b->count; i++)
		ck_assert_uint_gt(b->events[i].seq, b->events[i - 1].seq);
	if (f->sleep_ms)
		sleep_ms(f->sleep_ms);
	rc = f->script ? f->script(f, b) : EH_DELIVER_OK;
	done = rc == EH_DELIVER_OK ? b->count : (b->done < b->count ? b->done : b->count);
	for (size_t i = 0; i < done && f->nseen < MAX_SEEN; i++)
		f->seen[f->nseen++] = b->events[i].seq;
	atomic_fetch_add(&f->done_events, done);
	atomic_fetch_add(&f->deliver_calls, 1);
	return rc;
}

static int fake_open(void *ctx)
{
	atomic_fetch_add(&((struct fake *)ctx)->opens, 1);
	return 0;
}

static void fake_poll(void *ctx)
{
	atomic_fetch_add(&((struct fake *)ctx)->polls, 1);
}

static void fake_reload(void *ctx)
{
	atomic_fetch_add(&((struct fake *)ctx)->reloads, 1);
}

static uint64_t fake_flush(void *ctx, int64_t timeout_ms)
{
	struct fake *f = ctx;

	(void)timeout_ms;
	atomic_fetch_add(&f->flushes, 1);
	return f->unacked;
}

static const struct eh_sink_ops fake_ops = {
	.name = "fake",
	.deliver = fake_deliver,
	.open = fake_open,
	.poll = fake_poll,
	.reload = fake_reload,
	.flush = fake_flush,
};

static enum eh_deliver_rc async_deliver(void *ctx, struct eh_batch *b);

static const struct eh_sink_ops async_ops = {
	.name = "async",
	.flags = EH_SINK_ASYNC_ACK,
	.deliver = async_deliver,
	.flush = fake_flush,
};

struct rig {
	struct eh_core *core;
	struct eh_sink *sink;
	struct fake *fake;
	uint64_t pushed;
};

/* A core with one sink of ops, not yet started. */
static struct rig rig_new(const struct eh_sink_ops *ops, size_t ring_bytes, uint64_t max_records)
{
	struct rig r;

	r.core = calloc(1, sizeof(*r.core));
	r.fake = calloc(1, sizeof(*r.fake));
	ck_assert_ptr_nonnull(r.core);
	ck_assert_ptr_nonnull(r.fake);
	r.pushed = 0;
	r.core->broker_thread = pthread_self();
	pthread_mutex_init(&r.core->log.lock, NULL);
	r.core->shutdown_timeout_ms = 5000;
	r.core->nsinks = 1;
	r.sink = &r.core->sinks[0];
	r.sink->ops = ops;
	r.sink->ctx = r.fake;
	r.sink->core = r.core;
	r.sink->mask = EH_EV_MASK_ALL;
	eh_core_route(r.core);
	snprintf(r.sink->name, sizeof(r.sink->name), "%s", ops->name);
	/* The defaults create_sink sets. */
	r.sink->batch_max = 1;
	r.sink->retry_initial_ms = 100;
	r.sink->retry_max_ms = 10000;
	r.sink->retry_max_elapsed_ms = -1;
	r.fake->sink = r.sink;
	ck_assert_int_eq(eh_ring_init(&r.sink->ring, ring_bytes, max_records), 0);
	return r;
}

static void rig_push(struct rig *r, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct eh_event ev;

		memset(&ev, 0, sizeof(ev));
		ev.type = EH_EV_PUBLISH;
		ev.ts_ms = 1700000000000LL;
		ev.f[EH_F_CLIENTID] = (struct eh_bytes){ "runner-test", 11 };
		ev.f[EH_F_TOPIC] = (struct eh_bytes){ "t/1", 3 };
		eh_core_emit(r->core, &ev);
		r->pushed++;
	}
}

static void rig_start(struct rig *r)
{
	ck_assert_int_eq(eh_runner_start(r->sink), 0);
}

/* Waits (up to 30 s) until the fake reports at least n events done. */
static void wait_done(struct rig *r, uint64_t n)
{
	int64_t end = eh_now_ms() + 30000;

	while (atomic_load(&r->fake->done_events) < n) {
		ck_assert_msg(eh_now_ms() < end, "only %llu of %llu events done",
			      (unsigned long long)atomic_load(&r->fake->done_events), (unsigned long long)n);
		sleep_ms(1);
	}
}

static void rig_stop(struct rig *r, int64_t budget_ms)
{
	eh_runner_request_stop(r->sink, eh_now_ms() + budget_ms);
	eh_runner_join(r->sink);
}

static uint64_t counter(_Atomic uint64_t *c)
{
	return atomic_load(c);
}

/* The accounting invariant, then everything freed. */
static void rig_free(struct rig *r)
{
	struct eh_sink *s = r->sink;

	ck_assert_uint_eq(eh_sink_enqueued(s) + counter(&s->dropped), r->pushed);
	ck_assert_msg(eh_sink_enqueued(s) == counter(&s->delivered) + counter(&s->failed) + counter(&s->left),
		      "enqueued %llu != delivered %llu + failed %llu + left %llu",
		      (unsigned long long)eh_sink_enqueued(s), (unsigned long long)counter(&s->delivered),
		      (unsigned long long)counter(&s->failed), (unsigned long long)counter(&s->left));
	ck_assert_uint_eq(counter(&r->fake->flushes), s->ops->flush ? 1 : 0);
	eh_ring_destroy(&s->ring);
	pthread_mutex_destroy(&r->core->log.lock);
	free(r->fake);
	free(r->core);
}

/* The seqs the fake saw are exactly from..to, once each, in order. */
static void assert_seen_range(const struct fake *f, uint64_t from, uint64_t to)
{
	ck_assert_uint_eq(f->nseen, to - from + 1);
	for (size_t i = 0; i < f->nseen; i++)
		ck_assert_uint_eq(f->seen[i], from + i);
}

/* Lines in the sink's back-channel (never drained here) that hold needle. */
static int log_count(struct eh_core *core, const char *needle)
{
	int n = 0;

	pthread_mutex_lock(&core->log.lock);
	for (unsigned i = 0; i < core->log.count; i++)
		n += strstr(core->log.text[(core->log.head + i) % EH_LOG_SLOTS], needle) != NULL;
	pthread_mutex_unlock(&core->log.lock);
	return n;
}

static bool log_has(struct eh_core *core, const char *needle)
{
	return log_count(core, needle) > 0;
}

START_TEST(runner_batches_of_batch_max)
{
	struct rig r = rig_new(&fake_ops, 65536, 0);

	eh_sink_set_batching(r.sink, 10, 0);
	rig_push(&r, 25);
	rig_start(&r);
	wait_done(&r, 25);
	rig_stop(&r, 5000);
	ck_assert_uint_eq(r.fake->ncalls, 3);
	ck_assert_uint_eq(r.fake->calls[0].count, 10);
	ck_assert_uint_eq(r.fake->calls[1].count, 10);
	ck_assert_uint_eq(r.fake->calls[2].count, 5);
	for (size_t i = 0; i < 3; i++)
		ck_assert_uint_eq(r.fake->calls[i].attempt, 0);
	assert_seen_range(r.fake, 1, 25);
	ck_assert_uint_eq(counter(&r.sink->delivered), 25);
	ck_assert_uint_eq(counter(&r.sink->failed), 0);
	ck_assert_uint_eq(counter(&r.sink->left), 0);
	ck_assert_uint_eq(counter(&r.fake->opens), 1);
	ck_assert_uint_gt(counter(&r.fake->polls), 0);
	rig_free(&r);
}
END_TEST

static int64_t thread_cpu_ms(pthread_t t)
{
	clockid_t cid;
	struct timespec ts;

	if (pthread_getcpuclockid(t, &cid) || clock_gettime(cid, &ts))
		return -1;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Linger waits for more events to fill the batch, and sleeps while it
 * does (it must not spin on a ring that is not empty). */
START_TEST(runner_linger_fills_batch)
{
	struct rig r = rig_new(&fake_ops, 65536, 0);
	int64_t cpu0, cpu1;

	eh_sink_set_batching(r.sink, 100, 1500);
	rig_start(&r);
	sleep_ms(20);
	cpu0 = thread_cpu_ms(r.sink->thread);
	rig_push(&r, 1);
	sleep_ms(600);
	rig_push(&r, 2);
	wait_done(&r, 3);
	cpu1 = thread_cpu_ms(r.sink->thread);
	ck_assert_uint_eq(r.fake->ncalls, 1);
	ck_assert_uint_eq(r.fake->calls[0].count, 3);
	/* About 1.5 s of lingering; a spinning thread burns most of it. */
	ck_assert_msg(cpu1 - cpu0 < 500, "the runner used %lld ms of CPU while lingering",
		      (long long)(cpu1 - cpu0));

	/* A full batch does not wait out the linger time. */
	{
		int64_t t0 = eh_now_ms();

		rig_push(&r, 100);
		wait_done(&r, 103);
		ck_assert_int_lt(eh_now_ms() - t0, 1400);
	}
	rig_stop(&r, 5000);
	assert_seen_range(r.fake, 1, 103);
	rig_free(&r);
}
END_TEST

/* Stopping ends the linger at once: what is queued is delivered. */
START_TEST(runner_stop_ends_linger)
{
	struct rig r = rig_new(&fake_ops, 65536, 0);
	int64_t t0;

	eh_sink_set_batching(r.sink, 100, 60000);
	rig_start(&r);
	rig_push(&r, 4);
	sleep_ms(50);
	t0 = eh_now_ms();
	rig_stop(&r, 30000);
	ck_assert_int_lt(eh_now_ms() - t0, 20000);
	assert_seen_range(r.fake, 1, 4);
	ck_assert_uint_eq(counter(&r.sink->delivered), 4);
	rig_free(&r);
}
END_TEST

/* First call: 3 done then RETRY; second: RETRY with nothing done and a
 * retry_after; third: OK. */
static enum eh_deliver_rc script_partial(struct fake *f, struct eh_batch *b)
{
	switch (f->total) {
	case 1:
		b->done = 3;
		return EH_DELIVER_RETRY;
	case 2:
		b->done = 0;
		b->retry_after_ms = f->arg;
		return EH_DELIVER_RETRY;
	default:
		return EH_DELIVER_OK;
	}
}

START_TEST(runner_retry_partial_keeps_order)
{
	struct rig r = rig_new(&fake_ops, 65536, 0);

	r.fake->script = script_partial;
	r.fake->arg = 300;
	eh_sink_set_batching(r.sink, 10, 0);
	eh_sink_set_retry(r.sink, 5, 20, -1);
	rig_push(&r, 10);
	rig_start(&r);
	wait_done(&r, 10);
	rig_stop(&r, 5000);
	ck_assert_uint_eq(r.fake->ncalls, 3);
	ck_assert_uint_eq(r.fake->calls[0].count, 10);
	ck_assert_uint_eq(r.fake->calls[0].first_seq, 1);
	/* Only the rest is redelivered, from where it stopped. */
	ck_assert_uint_eq(r.fake->calls[1].count, 7);
	ck_assert_uint_eq(r.fake->calls[1].first_seq, 4);
	ck_assert_uint_eq(r.fake->calls[2].count, 7);
	ck_assert_uint_eq(r.fake->calls[2].first_seq, 4);
	/* Progress resets the attempt count; a retry raises it. */
	ck_assert_uint_eq(r.fake->calls[0].attempt, 0);
	ck_assert_uint_eq(r.fake->calls[1].attempt, 1);
	ck_assert_uint_eq(r.fake->calls[2].attempt, 2);
	/* retry_after is a floor under the delay. */
	ck_assert_int_ge(r.fake->calls[2].at_ms - r.fake->calls[1].at_ms, 295);
	assert_seen_range(r.fake, 1, 10);
	ck_assert_uint_eq(counter(&r.sink->delivered), 10);
	ck_assert_uint_eq(counter(&r.sink->failed), 0);
	rig_free(&r);
}
END_TEST

static enum eh_deliver_rc script_always_retry(struct fake *f, struct eh_batch *b)
{
	(void)f;
	b->done = 0;
	return EH_DELIVER_RETRY;
}

START_TEST(runner_backoff_grows)
{
	struct rig r = rig_new(&fake_ops, 65536, 0);
	int64_t t0;

	r.fake->script = script_always_retry;
	eh_sink_set_retry(r.sink, 10, 80, -1);
	rig_push(&r, 1);
	t0 = eh_now_ms();
	rig_start(&r);
	while (atomic_load(&r.fake->deliver_calls) < 7) {
		ck_assert_int_lt(eh_now_ms() - t0, 30000);
		sleep_ms(5);
	}
	rig_stop(&r, 0);
	/* Delays are in [base/2, base] with base 10, 20, 40, 80, 80...: the
	 * gaps never undercut the floor. */
	for (size_t i = 1; i < 7; i++) {
		int64_t base = 10LL << (i - 1 < 3 ? i - 1 : 3);

		ck_assert_uint_eq(r.fake->calls[i].attempt, i);
		ck_assert_int_ge(r.fake->calls[i].at_ms - r.fake->calls[i - 1].at_ms, base / 2 - 1);
	}
	/* Stopped with the event never delivered: left, not failed. */
	ck_assert_uint_eq(counter(&r.sink->delivered), 0);
	ck_assert_uint_eq(counter(&r.sink->failed), 0);
	ck_assert_uint_eq(counter(&r.sink->left), 1);
	rig_free(&r);
}
END_TEST

START_TEST(runner_gives_up_after_max_elapsed)
{
	struct rig r = rig_new(&fake_ops, 65536, 0);
	int64_t t0 = eh_now_ms();

	r.fake->script = script_always_retry;
	eh_sink_set_batching(r.sink, 2, 0);
	eh_sink_set_retry(r.sink, 5, 20, 100);
	rig_push(&r, 4);
	rig_start(&r);
	while (counter(&r.sink->failed) < 4) {
		ck_assert_int_lt(eh_now_ms() - t0, 30000);
		sleep_ms(5);
	}
	rig_stop(&r, 5000);
	ck_assert_uint_eq(counter(&r.sink->failed), 4);
	ck_assert_uint_eq(counter(&r.sink->delivered), 0);
	ck_assert_uint_eq(counter(&r.sink->left), 0);
	/* Each batch was tried more than once, then dropped as a whole. */
	ck_assert_uint_ge(r.fake->ncalls, 4);
	ck_assert_uint_eq(r.fake->calls[0].first_seq, 1);
	ck_assert_uint_eq(r.fake->calls[r.fake->ncalls - 1].first_seq, 3);
	ck_assert(log_has(r.core, "fake: gave up on 2 event(s)"));
	rig_free(&r);
}
END_TEST

/* Out of memory for the first arg calls; then 2 events through but out of
 * memory for the third, which goes on with the episode; then memory back. */
static enum eh_deliver_rc script_no_memory(struct fake *f, struct eh_batch *b)
{
	if (f->total <= (uint64_t)f->arg)
		return eh_sink_out_of_memory(f->sink, "the test's JSON");
	if (f->total == (uint64_t)f->arg + 1) {
		b->done = 2;
		eh_sink_out_of_memory(f->sink, "the test's JSON");
		return EH_DELIVER_RETRY;
	}
	return EH_DELIVER_OK;
}

/* A long out-of-memory episode is one warning when it starts and one
 * notice when events get through again, with the count; never a line per
 * retry. The events wait in the ring and are delivered once, in order. */
START_TEST(runner_out_of_memory_said_once_per_episode)
{
	struct rig r = rig_new(&fake_ops, 65536, 0);

	r.fake->script = script_no_memory;
	r.fake->arg = 30;
	eh_sink_set_batching(r.sink, 10, 0);
	eh_sink_set_retry(r.sink, 1, 2, -1);
	rig_push(&r, 10);
	rig_start(&r);
	wait_done(&r, 10);
	rig_stop(&r, 5000);
	ck_assert_uint_eq(r.fake->total, 32);
	ck_assert_int_eq(log_count(r.core, "out of memory"), 1);
	ck_assert(log_has(r.core, "fake: out of memory for the test's JSON; the events wait in the queue and are "
				  "retried until memory comes back"));
	ck_assert_int_eq(log_count(r.core, "available again"), 1);
	ck_assert(log_has(r.core, "fake: memory for the test's JSON available again after 31 failed attempt(s) in "));
	assert_seen_range(r.fake, 1, 10);
	ck_assert_uint_eq(counter(&r.sink->delivered), 10);
	ck_assert_uint_eq(counter(&r.sink->failed), 0);
	rig_free(&r);
}
END_TEST

/* Every other call out of memory: one episode per call. */
static enum eh_deliver_rc script_no_memory_every_other(struct fake *f, struct eh_batch *b)
{
	(void)b;
	return f->total % 2 ? eh_sink_out_of_memory(f->sink, "the test's JSON") : EH_DELIVER_OK;
}

/* Memory that comes and goes with every attempt: the first episode is
 * said, the next ones within the quiet minute are not, so the log is not
 * flooded. */
START_TEST(runner_out_of_memory_episodes_limited)
{
	struct rig r = rig_new(&fake_ops, 65536, 0);

	r.fake->script = script_no_memory_every_other;
	eh_sink_set_retry(r.sink, 1, 1, -1);
	rig_push(&r, 25);
	rig_start(&r);
	wait_done(&r, 25);
	rig_stop(&r, 5000);
	ck_assert_uint_eq(r.fake->total, 50);
	ck_assert_int_eq(log_count(r.core, "out of memory"), 1);
	ck_assert_int_eq(log_count(r.core, "available again after 1 failed attempt(s)"), 1);
	assert_seen_range(r.fake, 1, 25);
	rig_free(&r);
}
END_TEST

/* Ten one-attempt episodes, then one that lasts 40 attempts, then memory
 * back for good. */
static enum eh_deliver_rc script_no_memory_then_long(struct fake *f, struct eh_batch *b)
{
	(void)b;
	if (f->total <= 20)
		return f->total % 2 ? eh_sink_out_of_memory(f->sink, "the test's JSON") : EH_DELIVER_OK;
	return f->total <= 60 ? eh_sink_out_of_memory(f->sink, "the test's JSON") : EH_DELIVER_OK;
}

/* An episode that lasts is said however many short ones came just before
 * (it used to wait for the 1000th episode), with how long it has lasted
 * and how many short ones went unsaid, and its end is said too. */
START_TEST(runner_out_of_memory_long_episode_said_after_short_ones)
{
	struct rig r = rig_new(&fake_ops, 65536, 0);

	r.fake->script = script_no_memory_then_long;
	r.sink->no_memory.long_ms = 20;
	eh_sink_set_batching(r.sink, 1, 0);
	eh_sink_set_retry(r.sink, 2, 2, -1);
	rig_push(&r, 11);
	rig_start(&r);
	wait_done(&r, 11);
	rig_stop(&r, 5000);
	ck_assert_uint_eq(r.fake->total, 61);
	ck_assert_int_eq(log_count(r.core, "out of memory"), 2);
	ck_assert(log_has(r.core, "fake: out of memory for the test's JSON for "));
	ck_assert(log_has(r.core, "(9 shorter episode(s) since the last warning)"));
	ck_assert_int_eq(log_count(r.core, "available again"), 2);
	ck_assert(log_has(r.core, "fake: memory for the test's JSON available again after 40 failed attempt(s) in "));
	assert_seen_range(r.fake, 1, 11);
	rig_free(&r);
}
END_TEST

/* The delay rule alone: every delay fits in what is left of the budget. */
START_TEST(runner_retry_delay_within_budget)
{
	/* No budget: the longer of backoff and Retry-After. */
	ck_assert_int_eq(eh_runner_retry_delay(0, -1, 100, -1), 100);
	ck_assert_int_eq(eh_runner_retry_delay(5000, -1, 100, 3600000), 3600000);
	ck_assert_int_eq(eh_runner_retry_delay(0, 3000, 400, 10), 400);
	/* Backoff is cut to what is left, then nothing is left. */
	ck_assert_int_eq(eh_runner_retry_delay(2900, 3000, 400, -1), 100);
	ck_assert_int_eq(eh_runner_retry_delay(3000, 3000, 400, -1), EH_RETRY_SPENT);
	ck_assert_int_eq(eh_runner_retry_delay(3500, 3000, 400, -1), EH_RETRY_SPENT);
	ck_assert_int_eq(eh_runner_retry_delay(0, 0, 400, -1), EH_RETRY_SPENT);
	/* Retry-After is honoured while it fits, given up on when it does not
	 * (late in the outage it used to get a fresh full budget). */
	ck_assert_int_eq(eh_runner_retry_delay(1000, 3000, 100, 1500), 1500);
	ck_assert_int_eq(eh_runner_retry_delay(2500, 3000, 100, 500), 500);
	ck_assert_int_eq(eh_runner_retry_delay(2500, 3000, 100, 501), EH_RETRY_TOO_LATE);
	ck_assert_int_eq(eh_runner_retry_delay(2500, 3000, 100, 3600000), EH_RETRY_TOO_LATE);
	ck_assert_int_eq(eh_runner_retry_delay(0, 3000, 100, 3600000), EH_RETRY_TOO_LATE);
}
END_TEST

/* Three plain retries, then a Retry-After of an hour. */
static enum eh_deliver_rc script_late_retry_after(struct fake *f, struct eh_batch *b)
{
	b->done = 0;
	if (f->total > 3)
		b->retry_after_ms = 3600000;
	return EH_DELIVER_RETRY;
}

START_TEST(runner_late_retry_after_gives_up_at_once)
{
	struct rig r = rig_new(&fake_ops, 65536, 0);
	int64_t t0 = eh_now_ms();

	r.fake->script = script_late_retry_after;
	eh_sink_set_retry(r.sink, 5, 20, 20000);
	rig_push(&r, 2);
	rig_start(&r);
	while (counter(&r.sink->failed) < 2) {
		ck_assert_int_lt(eh_now_ms() - t0, 30000);
		sleep_ms(5);
	}
	rig_stop(&r, 0);
	/* No fifth attempt of the first event: given up on the answer that
	 * asked for an hour, long before the 20 s budget ran out; the second
	 * event is given up on its first such answer. */
	ck_assert_uint_eq(r.fake->ncalls, 5);
	ck_assert_uint_eq(r.fake->calls[3].first_seq, 1);
	ck_assert_uint_eq(r.fake->calls[4].first_seq, 2);
	ck_assert_uint_eq(r.fake->calls[4].attempt, 0);
	ck_assert_int_lt(r.fake->calls[4].at_ms - r.fake->calls[0].at_ms, 15000);
	ck_assert_uint_eq(counter(&r.sink->delivered), 0);
	ck_assert(log_has(r.core, "fake: gave up on 1 event(s) after "));
	ck_assert(log_has(r.core, " ms of retries: the server asked to wait 3600000 ms, past the 20000 ms budget"));
	rig_free(&r);
}
END_TEST

/* DROP with one of three done: one delivered, two failed, and the
 * runner moves on. */
static enum eh_deliver_rc script_drop(struct fake *f, struct eh_batch *b)
{
	if (f->total == 1) {
		b->done = 1;
		return EH_DELIVER_DROP;
	}
	return EH_DELIVER_OK;
}

START_TEST(runner_drop_counts_failed)
{
	struct rig r = rig_new(&fake_ops, 65536, 0);

	r.fake->script = script_drop;
	eh_sink_set_batching(r.sink, 3, 0);
	rig_push(&r, 6);
	rig_start(&r);
	wait_done(&r, 4);
	rig_stop(&r, 5000);
	ck_assert_uint_eq(r.fake->ncalls, 2);
	ck_assert_uint_eq(r.fake->calls[1].first_seq, 4);
	ck_assert_uint_eq(counter(&r.sink->delivered), 4);
	ck_assert_uint_eq(counter(&r.sink->failed), 2);
	rig_free(&r);
}
END_TEST

/* An ASYNC_ACK sink counts for itself: here one event of each batch
 * fails, one is confirmed at once and the rest stays unconfirmed until
 * flush, which reports them as left. */
static enum eh_deliver_rc async_deliver(void *ctx, struct eh_batch *b)
{
	struct fake *f = ctx;

	eh_sink_count(f->sink, 1, 1);
	f->unacked += b->count - 2;
	atomic_fetch_add(&f->done_events, b->count);
	return EH_DELIVER_OK;
}

START_TEST(runner_async_ack_counters)
{
	struct rig r = rig_new(&async_ops, 65536, 0);

	eh_sink_set_batching(r.sink, 5, 0);
	rig_push(&r, 20);
	rig_start(&r);
	wait_done(&r, 20);
	rig_stop(&r, 5000);
	/* The runner added nothing of its own for OK. */
	ck_assert_uint_eq(counter(&r.sink->delivered), 4);
	ck_assert_uint_eq(counter(&r.sink->failed), 4);
	ck_assert_uint_eq(counter(&r.sink->left), 12);
	rig_free(&r);
}
END_TEST

/* Stop with a backlog the sink can deliver: all of it goes out. */
START_TEST(runner_drain_delivers_backlog)
{
	struct rig r = rig_new(&fake_ops, 1 << 20, 0);

	eh_sink_set_batching(r.sink, 16, 0);
	r.fake->script = NULL;
	rig_push(&r, 1000);
	rig_start(&r);
	rig_stop(&r, 30000);
	assert_seen_range(r.fake, 1, 1000);
	ck_assert_uint_eq(counter(&r.sink->delivered), 1000);
	ck_assert_uint_eq(counter(&r.sink->left), 0);
	rig_free(&r);
}
END_TEST

/* Stop with a backlog a slow sink cannot finish by the deadline: it
 * stops near the deadline and counts the rest as left. */
START_TEST(runner_drain_deadline_leaves_rest)
{
	struct rig r = rig_new(&fake_ops, 1 << 20, 0);
	int64_t t0;

	r.fake->sleep_ms = 20;
	rig_push(&r, 200);
	rig_start(&r);
	t0 = eh_now_ms();
	rig_stop(&r, 300);
	ck_assert_int_lt(eh_now_ms() - t0, 10000);
	ck_assert_uint_gt(counter(&r.sink->left), 0);
	ck_assert_uint_lt(counter(&r.sink->delivered), 200);
	assert_seen_range(r.fake, 1, counter(&r.sink->delivered));
	rig_free(&r);
}
END_TEST

/* Stop while backing off: the wait is cut to the deadline, and the
 * retried events are left, not failed. */
START_TEST(runner_stop_interrupts_backoff)
{
	struct rig r = rig_new(&fake_ops, 65536, 0);
	int64_t t0;

	r.fake->script = script_always_retry;
	eh_sink_set_retry(r.sink, 60000, 60000, -1);
	rig_push(&r, 3);
	rig_start(&r);
	while (atomic_load(&r.fake->deliver_calls) < 1)
		sleep_ms(1);
	sleep_ms(20);
	t0 = eh_now_ms();
	rig_stop(&r, 200);
	ck_assert_int_lt(eh_now_ms() - t0, 20000);
	ck_assert_uint_eq(counter(&r.sink->left), 3);
	ck_assert_uint_eq(counter(&r.sink->failed), 0);
	rig_free(&r);
}
END_TEST

START_TEST(runner_reload_hook)
{
	struct rig r = rig_new(&fake_ops, 65536, 0);
	int64_t t0;

	rig_start(&r);
	sleep_ms(20);
	eh_core_reload(r.core);
	t0 = eh_now_ms();
	while (counter(&r.fake->reloads) < 1) {
		ck_assert_int_lt(eh_now_ms() - t0, 30000);
		sleep_ms(1);
	}
	/* Taken once per request. */
	rig_push(&r, 2);
	wait_done(&r, 2);
	ck_assert_uint_eq(counter(&r.fake->reloads), 1);
	eh_core_reload(r.core);
	while (counter(&r.fake->reloads) < 2) {
		ck_assert_int_lt(eh_now_ms() - t0, 30000);
		sleep_ms(1);
	}
	rig_stop(&r, 5000);
	ck_assert_uint_eq(counter(&r.fake->reloads), 2);
	rig_free(&r);
}
END_TEST

/* A full ring drops at emit and counts it; nothing blocks. */
START_TEST(runner_full_ring_drops)
{
	struct rig r = rig_new(&fake_ops, 4096, 16);

	rig_push(&r, 40);
	ck_assert_uint_eq(eh_sink_enqueued(r.sink), 16);
	ck_assert_uint_eq(counter(&r.sink->dropped), 24);
	/* seq counts offers, so the sink can see the gap. */
	ck_assert_uint_eq(r.sink->seq, 40);
	rig_start(&r);
	wait_done(&r, 16);
	rig_stop(&r, 5000);
	assert_seen_range(r.fake, 1, 16);
	rig_free(&r);
}
END_TEST

/* A lazy sink whose thread could not start yet (its retry time not come)
 * fills its ring; once the retry time has come, the next event, which the
 * full ring drops, starts the thread, and the ring drains. */
START_TEST(lazy_thread_retried_when_its_ring_is_full)
{
	struct rig r = rig_new(&fake_ops, 4096, 16);

	r.sink->thread_lazy = true;
	r.core->lazy_waiting = 1;
	r.sink->thread_retry_ms = eh_now_ms() + 3600 * 1000;
	rig_push(&r, 16);
	ck_assert(!r.sink->thread_started);
	r.sink->thread_retry_ms = eh_now_ms() - 1;
	rig_push(&r, 1);
	ck_assert_uint_eq(counter(&r.sink->dropped), 1);
	ck_assert(r.sink->thread_started);
	ck_assert_uint_eq(r.core->lazy_waiting, 0);
	wait_done(&r, 16);
	rig_stop(&r, 5000);
	assert_seen_range(r.fake, 1, 16);
	rig_free(&r);
}
END_TEST

/* A record the runner cannot unpack is counted failed; the records
 * around it are still delivered, none lost from the accounting. */
START_TEST(runner_malformed_record_counted)
{
	struct rig r = rig_new(&fake_ops, 65536, 0);
	void *slot;

	eh_sink_set_batching(r.sink, 10, 0);
	rig_push(&r, 2);
	slot = eh_ring_reserve_sp(&r.sink->ring, 3);
	memcpy(slot, "bad", 3);
	eh_ring_commit_sp(&r.sink->ring);
	r.sink->seq++; /* as eh_core_emit counts what it offers */
	r.pushed++;
	rig_push(&r, 2);
	rig_start(&r);
	wait_done(&r, 4);
	rig_stop(&r, 5000);
	ck_assert_uint_eq(counter(&r.sink->delivered), 4);
	ck_assert_uint_eq(counter(&r.sink->failed), 1);
	ck_assert_uint_eq(r.fake->nseen, 4);
	/* The malformed record took seq 3. */
	ck_assert_uint_eq(r.fake->seen[0], 1);
	ck_assert_uint_eq(r.fake->seen[1], 2);
	ck_assert_uint_eq(r.fake->seen[2], 4);
	ck_assert_uint_eq(r.fake->seen[3], 5);
	rig_free(&r);
}
END_TEST

/* A core with three sinks wanting every event and rings of 64 KiB, the
 * first limited to first_max records (0: no limit); no runner threads. */
static struct eh_core *emit_core(uint64_t first_max)
{
	struct eh_core *core = calloc(1, sizeof(*core));

	ck_assert_ptr_nonnull(core);
	core->nsinks = 3;
	for (size_t i = 0; i < 3; i++) {
		core->sinks[i].core = core;
		core->sinks[i].mask = EH_EV_MASK_ALL;
		ck_assert_int_eq(eh_ring_init(&core->sinks[i].ring, 65536, i == 0 ? first_max : 0), 0);
	}
	eh_core_route(core);
	return core;
}

static void emit_core_free(struct eh_core *core)
{
	for (size_t i = 0; i < core->nsinks; i++)
		eh_ring_destroy(&core->sinks[i].ring);
	free(core);
}

/* One event, three sinks: the first with room packs it, the others get a
 * copy with their own seq; a full ring still uses up a seq number; a sink
 * whose mask lacks the type sees nothing. Read back from the rings. */
static void expect_records(struct eh_sink *s, size_t n, const uint64_t *seq, const uint64_t *number,
			   const char *const *ids)
{
	struct eh_ring_rec recs[8];
	size_t got = eh_ring_peek_sc(&s->ring, recs, 8);

	ck_assert_uint_eq(got, n);
	for (size_t i = 0; i < n; i++) {
		struct eh_event ev;

		ck_assert_int_eq(eh_event_unpack(recs[i].data, recs[i].len, &ev), 0);
		ck_assert_uint_eq(ev.seq, seq[i]);
		ck_assert_uint_eq(ev.number, number[i]);
		ck_assert_uint_eq(ev.f[EH_F_CLIENTID].len, strlen(ids[i]));
		ck_assert(!memcmp(ev.f[EH_F_CLIENTID].ptr, ids[i], strlen(ids[i])));
		ck_assert_uint_eq(ev.f[EH_F_TOPIC].len, 3);
		ck_assert(!memcmp(ev.f[EH_F_TOPIC].ptr, "t/x", 3));
		ck_assert_int_eq(ev.ts_ms, 1700000000000LL);
	}
}

START_TEST(emit_packs_once_copies_to_each_sink)
{
	static const char *const ids[] = { "c1", "c2", "c3", "c4" };
	/* sink 0 holds two records, so it is full for the last two */
	struct eh_core *core = emit_core(2);

	core->sinks[2].mask = EH_EV_BIT(EH_EV_PUBLISH);
	eh_core_route(core);
	for (size_t i = 0; i < 4; i++) {
		struct eh_event ev;

		memset(&ev, 0, sizeof(ev));
		ev.type = i % 2 ? EH_EV_SUBSCRIBE : EH_EV_PUBLISH;
		ev.ts_ms = 1700000000000LL;
		ev.f[EH_F_CLIENTID] = (struct eh_bytes){ ids[i], 2 };
		ev.f[EH_F_TOPIC] = (struct eh_bytes){ "t/x", 3 };
		eh_core_emit(core, &ev);
	}
	expect_records(&core->sinks[0], 2, (const uint64_t[]){ 1, 2 }, (const uint64_t[]){ 1, 2 }, ids);
	ck_assert_uint_eq(core->sinks[0].seq, 4);
	ck_assert_uint_eq(counter(&core->sinks[0].dropped), 2);
	expect_records(&core->sinks[1], 4, (const uint64_t[]){ 1, 2, 3, 4 }, (const uint64_t[]){ 1, 2, 3, 4 },
		       ids);
	ck_assert_uint_eq(eh_sink_enqueued(&core->sinks[1]), 4);
	expect_records(&core->sinks[2], 2, (const uint64_t[]){ 1, 2 }, (const uint64_t[]){ 1, 3 },
		       (const char *const[]){ "c1", "c3" });
	ck_assert_uint_eq(counter(&core->sinks[2].dropped), 0);
	emit_core_free(core);
}
END_TEST

/* A deliver that blocks inside its sink (the MQTT sink waiting for window
 * room) learns of a stop through the wake hook, not when its own wait ends
 * (here after 30 s, and then woken would still be 0). */
/* Waits until the sink thread sets *flag under lock. */
static void wait_flag(pthread_mutex_t *lock, const int *flag)
{
	int set;

	do {
		sleep_ms(1);
		pthread_mutex_lock(lock);
		set = *flag;
		pthread_mutex_unlock(lock);
	} while (!set);
}

struct blocking {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int waiting, woken;
	struct eh_sink *sink;
};

static enum eh_deliver_rc blocking_deliver(void *ctx, struct eh_batch *b)
{
	struct blocking *k = ctx;
	struct timespec until;

	(void)b;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 30;
	pthread_mutex_lock(&k->lock);
	k->waiting = 1;
	while (!k->woken && eh_sink_deadline_ms(k->sink) == INT64_MAX)
		if (pthread_cond_timedwait(&k->cond, &k->lock, &until))
			break;
	pthread_mutex_unlock(&k->lock);
	return EH_DELIVER_RETRY;
}

static void blocking_wake(void *ctx)
{
	struct blocking *k = ctx;

	pthread_mutex_lock(&k->lock);
	k->woken = 1;
	pthread_cond_signal(&k->cond);
	pthread_mutex_unlock(&k->lock);
}

static const struct eh_sink_ops blocking_ops = {
	.name = "blocking",
	.deliver = blocking_deliver,
	.wake = blocking_wake,
};

START_TEST(runner_stop_wakes_a_deliver_blocked_in_its_sink)
{
	struct rig r = rig_new(&blocking_ops, 65536, 0);
	struct blocking k = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

	k.sink = r.sink;
	r.sink->ctx = &k;
	rig_push(&r, 1);
	rig_start(&r);
	wait_flag(&k.lock, &k.waiting);
	rig_stop(&r, 0);
	ck_assert_int_eq(k.woken, 1);
	ck_assert_uint_eq(counter(&r.sink->left), 1);
	rig_free(&r);
}
END_TEST

/* A sink stuck in a call that neither its deadline nor its wake hook ends
 * (a write() to a dead hard-mounted NFS export): deliver blocks until the
 * test releases it. */
struct stuck {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int inside, released;
};

static enum eh_deliver_rc stuck_deliver(void *ctx, struct eh_batch *b)
{
	struct stuck *k = ctx;

	(void)b;
	pthread_mutex_lock(&k->lock);
	k->inside = 1;
	while (!k->released)
		pthread_cond_wait(&k->cond, &k->lock);
	pthread_mutex_unlock(&k->lock);
	return EH_DELIVER_OK;
}

static const struct eh_sink_ops stuck_ops = {
	.name = "stuck",
	.deliver = stuck_deliver,
};

/* eh_core_stop gives up on the stuck thread at the deadline plus its
 * grace, counts what it holds as left, says so, and keeps everything the
 * thread may touch; the other sink stops and is released as usual. */
START_TEST(core_stop_leaves_a_stuck_thread_behind)
{
	struct eh_core *core = calloc(1, sizeof(*core));
	struct stuck k = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
	struct fake *f = calloc(1, sizeof(*f));
	int64_t start;

	ck_assert_ptr_nonnull(core);
	ck_assert_ptr_nonnull(f);
	core->broker_thread = pthread_self();
	pthread_mutex_init(&core->log.lock, NULL);
	core->shutdown_timeout_ms = 100;
	core->join_grace_ms = 200;
	core->nsinks = 2;
	for (size_t i = 0; i < 2; i++) {
		struct eh_sink *s = &core->sinks[i];

		s->ops = i ? &stuck_ops : &fake_ops;
		s->ctx = i ? (void *)&k : (void *)f;
		s->core = core;
		s->mask = EH_EV_MASK_ALL;
		snprintf(s->name, sizeof(s->name), "%s", s->ops->name);
		s->batch_max = 16;
		s->retry_initial_ms = 100;
		s->retry_max_ms = 10000;
		s->retry_max_elapsed_ms = -1;
		ck_assert_int_eq(eh_ring_init(&s->ring, 65536, 0), 0);
	}
	f->sink = &core->sinks[0];
	eh_core_route(core);
	for (size_t i = 0; i < 3; i++) {
		struct eh_event ev;

		memset(&ev, 0, sizeof(ev));
		ev.type = EH_EV_PUBLISH;
		ev.f[EH_F_CLIENTID] = (struct eh_bytes){ "stuck", 5 };
		ev.f[EH_F_TOPIC] = (struct eh_bytes){ "t/s", 3 };
		eh_core_emit(core, &ev);
	}
	for (size_t i = 0; i < 2; i++)
		ck_assert_int_eq(eh_runner_start(&core->sinks[i]), 0);
	wait_flag(&k.lock, &k.inside);

	start = eh_now_ms();
	ck_assert(!eh_core_stop(core));
	/* Not before the deadline and its grace. */
	ck_assert_int_ge(eh_now_ms() - start, 300);
	ck_assert(core->abandoned);
	ck_assert(!core->sinks[0].thread_abandoned);
	ck_assert_uint_eq(counter(&core->sinks[0].delivered), 3);
	ck_assert_uint_eq(counter(&core->sinks[0].left), 0);
	ck_assert_ptr_null(core->sinks[0].ring.buf);
	ck_assert(core->sinks[1].thread_abandoned);
	ck_assert_uint_eq(counter(&core->sinks[1].delivered), 0);
	ck_assert_uint_eq(counter(&core->sinks[1].left), 3);
	ck_assert_ptr_nonnull(core->sinks[1].ring.buf);
	ck_assert(!eh_core_wants(core, EH_EV_PUBLISH));

	/* Released, the thread finishes on memory that is still there. */
	pthread_mutex_lock(&k.lock);
	k.released = 1;
	pthread_cond_signal(&k.cond);
	pthread_mutex_unlock(&k.lock);
	eh_runner_join(&core->sinks[1]);
	eh_ring_destroy(&core->sinks[1].ring);
	eh_config_free(&core->config);
	pthread_mutex_destroy(&core->log.lock);
	free(f);
	free(core);
}
END_TEST

/* A sleeping consumer is woken (wake_word bumped) by the one fence and
 * notify pass after the event is in every ring; an awake one and one whose
 * sink does not want the event are left alone. */
START_TEST(emit_notifies_each_sleeping_sink)
{
	struct eh_core *core = emit_core(0);
	struct eh_event ev;
	uint32_t before[3];

	core->sinks[1].mask = EH_EV_BIT(EH_EV_SUBSCRIBE);
	eh_core_route(core);
	/* sinks 0 and 1 asleep, sink 2 awake */
	atomic_store(&core->sinks[0].ring.sleeping, 1);
	atomic_store(&core->sinks[1].ring.sleeping, 1);
	for (size_t i = 0; i < 3; i++)
		before[i] = atomic_load(&core->sinks[i].ring.wake_word);
	memset(&ev, 0, sizeof(ev));
	ev.type = EH_EV_PUBLISH;
	ev.f[EH_F_CLIENTID] = (struct eh_bytes){ "w", 1 };
	eh_core_emit(core, &ev);
	ck_assert_uint_eq(atomic_load(&core->sinks[0].ring.wake_word), before[0] + 1);
	ck_assert_uint_eq(atomic_load(&core->sinks[1].ring.wake_word), before[1]);
	ck_assert_uint_eq(atomic_load(&core->sinks[2].ring.wake_word), before[2]);
	ck_assert_uint_eq(eh_ring_count(&core->sinks[0].ring), 1);
	ck_assert_uint_eq(eh_ring_count(&core->sinks[1].ring), 0);
	ck_assert_uint_eq(eh_ring_count(&core->sinks[2].ring), 1);
	emit_core_free(core);
}
END_TEST

/* Three sinks consuming while the broker thread emits in bursts, with
 * pauses long enough for their threads to go to sleep: each gets every
 * event it wants, in order, with its own seq, and TSan (make check-tsan)
 * sees the rings' publish, fence and notify under real concurrency. Which
 * rings get woken is checked exactly by emit_notifies_each_sleeping_sink. */
START_TEST(emit_wakes_every_sleeping_sink)
{
	struct eh_core *core = calloc(1, sizeof(*core));
	struct fake *fakes[3];

	ck_assert_ptr_nonnull(core);
	core->broker_thread = pthread_self();
	pthread_mutex_init(&core->log.lock, NULL);
	core->shutdown_timeout_ms = 5000;
	core->nsinks = 3;
	for (size_t i = 0; i < 3; i++) {
		struct eh_sink *s = &core->sinks[i];

		fakes[i] = calloc(1, sizeof(*fakes[i]));
		ck_assert_ptr_nonnull(fakes[i]);
		fakes[i]->sink = s;
		s->ops = &fake_ops;
		s->ctx = fakes[i];
		s->core = core;
		s->mask = i == 2 ? EH_EV_BIT(EH_EV_PUBLISH) : EH_EV_MASK_ALL;
		snprintf(s->name, sizeof(s->name), "fake%zu", i);
		s->batch_max = 16;
		s->retry_initial_ms = 100;
		s->retry_max_ms = 10000;
		s->retry_max_elapsed_ms = -1;
		ck_assert_int_eq(eh_ring_init(&s->ring, 1 << 20, 0), 0);
		ck_assert_int_eq(eh_runner_start(s), 0);
	}
	eh_core_route(core);
	for (size_t burst = 0; burst < 40; burst++) {
		for (size_t i = 0; i < 100; i++) {
			struct eh_event ev;

			memset(&ev, 0, sizeof(ev));
			ev.type = i % 2 ? EH_EV_SUBSCRIBE : EH_EV_PUBLISH;
			ev.ts_ms = 1700000000000LL;
			ev.f[EH_F_CLIENTID] = (struct eh_bytes){ "burst", 5 };
			ev.f[EH_F_TOPIC] = (struct eh_bytes){ "t/b", 3 };
			eh_core_emit(core, &ev);
		}
		sleep_ms(25); /* past the runners' nap: they go to sleep */
	}
	for (size_t i = 0; i < 3; i++) {
		uint64_t want = i == 2 ? 2000 : 4000;
		int64_t end = eh_now_ms() + 30000;

		while (atomic_load(&fakes[i]->done_events) < want) {
			ck_assert_msg(eh_now_ms() < end, "sink %zu: only %llu of %llu events done", i,
				      (unsigned long long)atomic_load(&fakes[i]->done_events), (unsigned long long)want);
			sleep_ms(1);
		}
	}
	for (size_t i = 0; i < 3; i++) {
		eh_runner_request_stop(&core->sinks[i], eh_now_ms() + 5000);
		eh_runner_join(&core->sinks[i]);
		assert_seen_range(fakes[i], 1, i == 2 ? 2000 : 4000);
		ck_assert_uint_eq(counter(&core->sinks[i].dropped), 0);
		eh_ring_destroy(&core->sinks[i].ring);
		free(fakes[i]);
	}
	pthread_mutex_destroy(&core->log.lock);
	free(core);
}
END_TEST

/* The producer keeps emitting while the sink retries and drops: the
 * accounting still adds up exactly. */
static enum eh_deliver_rc script_mixed(struct fake *f, struct eh_batch *b)
{
	switch (f->total % 5) {
	case 1:
		b->done = b->count / 2;
		return EH_DELIVER_RETRY;
	case 3:
		b->done = b->count / 3;
		return EH_DELIVER_DROP;
	default:
		return EH_DELIVER_OK;
	}
}

START_TEST(runner_concurrent_accounting)
{
	struct rig r = rig_new(&fake_ops, 8192, 64);

	r.fake->script = script_mixed;
	eh_sink_set_batching(r.sink, 8, 1);
	eh_sink_set_retry(r.sink, 1, 2, -1);
	rig_start(&r);
	for (int i = 0; i < 200; i++) {
		rig_push(&r, 25);
		sched_yield();
	}
	rig_stop(&r, 30000);
	ck_assert_uint_gt(counter(&r.sink->delivered), 0);
	ck_assert_uint_eq(counter(&r.sink->left), 0);
	/* Strictly increasing seqs: no duplicates, no reordering. */
	for (size_t i = 1; i < r.fake->nseen; i++)
		ck_assert_uint_gt(r.fake->seen[i], r.fake->seen[i - 1]);
	rig_free(&r);
}
END_TEST

static Suite *runner_suite(void)
{
	Suite *s = suite_create("runner");
	TCase *tc = tcase_create("runner");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, runner_batches_of_batch_max);
	tcase_add_test(tc, runner_linger_fills_batch);
	tcase_add_test(tc, runner_stop_ends_linger);
	tcase_add_test(tc, runner_retry_partial_keeps_order);
	tcase_add_test(tc, runner_backoff_grows);
	tcase_add_test(tc, runner_gives_up_after_max_elapsed);
	tcase_add_test(tc, runner_out_of_memory_said_once_per_episode);
	tcase_add_test(tc, runner_out_of_memory_episodes_limited);
	tcase_add_test(tc, runner_out_of_memory_long_episode_said_after_short_ones);
	tcase_add_test(tc, runner_retry_delay_within_budget);
	tcase_add_test(tc, runner_late_retry_after_gives_up_at_once);
	tcase_add_test(tc, runner_drop_counts_failed);
	tcase_add_test(tc, runner_async_ack_counters);
	tcase_add_test(tc, runner_drain_delivers_backlog);
	tcase_add_test(tc, runner_drain_deadline_leaves_rest);
	tcase_add_test(tc, runner_stop_interrupts_backoff);
	tcase_add_test(tc, runner_reload_hook);
	tcase_add_test(tc, runner_full_ring_drops);
	tcase_add_test(tc, runner_malformed_record_counted);
	tcase_add_test(tc, runner_concurrent_accounting);
	tcase_add_test(tc, emit_packs_once_copies_to_each_sink);
	tcase_add_test(tc, emit_notifies_each_sleeping_sink);
	tcase_add_test(tc, emit_wakes_every_sleeping_sink);
	tcase_add_test(tc, runner_stop_wakes_a_deliver_blocked_in_its_sink);
	tcase_add_test(tc, core_stop_leaves_a_stuck_thread_behind);
	tcase_add_test(tc, lazy_thread_retried_when_its_ring_is_full);
	suite_add_tcase(s, tc);
	return s;
}
EH_UNIT_SUITE(runner_suite)
