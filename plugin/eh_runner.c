/*
 * eh_runner: the thread behind every sink. It takes records from the sink's
 * ring in batches, hands them to the sink's deliver hook, and owns what every
 * sink needs the same way: lingering to fill a batch, retries with
 * exponential backoff and full jitter (a timed wait that a stop request
 * interrupts, never a sleep), giving up after the retry budget, counters,
 * reload requests, and the drain at shutdown within the deadline.
 *
 * Order: a batch that is retried holds back everything behind it, so a sink
 * sees every event at most once and in capture order.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>

#include "eh_core.h"
#include "eh_runner.h"

#define IDLE_POLL_MS 100

int64_t eh_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t eh_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void eh_sink_set_batching(struct eh_sink *sink, size_t batch_max, int64_t linger_ms)
{
	sink->batch_max = batch_max ? batch_max : 1;
	sink->linger_ms = linger_ms < 0 ? 0 : linger_ms;
}

void eh_sink_set_own_files(struct eh_sink *sink)
{
	sink->own_files = true;
}

void eh_sink_set_own_files_if_sole(struct eh_sink *sink)
{
	sink->own_files_if_sole = true;
}

void eh_sink_set_retry(struct eh_sink *sink, int64_t initial_ms, int64_t max_ms, int64_t max_elapsed_ms)
{
	sink->retry_initial_ms = initial_ms > 0 ? initial_ms : 1;
	sink->retry_max_ms = max_ms >= sink->retry_initial_ms ? max_ms : sink->retry_initial_ms;
	sink->retry_max_elapsed_ms = max_elapsed_ms;
}

void eh_sink_count(struct eh_sink *sink, uint64_t delivered, uint64_t failed)
{
	if (delivered)
		atomic_fetch_add_explicit(&sink->delivered, delivered, memory_order_relaxed);
	if (failed)
		atomic_fetch_add_explicit(&sink->failed, failed, memory_order_relaxed);
}

int64_t eh_sink_shutdown_timeout_ms(const struct eh_sink *sink)
{
	return sink->core->shutdown_timeout_ms;
}

int64_t eh_sink_deadline_ms(const struct eh_sink *sink)
{
	struct eh_sink *s = (struct eh_sink *)sink;

	/* acquire: pairs with the release of stop; the deadline was stored
	 * before it. */
	if (!atomic_load_explicit(&s->stop, memory_order_acquire))
		return INT64_MAX;
	return atomic_load_explicit(&s->drain_deadline_ms, memory_order_relaxed);
}

void eh_sink_log(struct eh_sink *sink, int level, const char *fmt, ...)
{
	char buf[EH_LOG_LEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	eh_core_log(sink->core, level, "%s: %s", sink->name, buf);
}

/* Said once a minute at most, so memory that comes and goes with every
 * attempt cannot flood the log; but an episode that lasts is always said,
 * however many short ones came before it, or a sink could stall unseen. */
#define NO_MEMORY_QUIET_MS 60000
#define NO_MEMORY_LONG_MS 5000

static void say_no_memory(struct eh_sink *s, int64_t now)
{
	char shorter[96] = "";

	if (s->no_memory.unsaid)
		snprintf(shorter, sizeof(shorter), " (%llu shorter episode(s) since the last warning)",
			 (unsigned long long)s->no_memory.unsaid);
	if (s->no_memory.attempts)
		eh_sink_log(s, MOSQ_LOG_WARNING,
			    "out of memory for %s for %lld ms (%llu failed attempt(s)); the events wait in the "
			    "queue and are retried until memory comes back%s",
			    s->no_memory.what, (long long)(now - s->no_memory.since_ms),
			    (unsigned long long)s->no_memory.attempts, shorter);
	else
		eh_sink_log(s, MOSQ_LOG_WARNING,
			    "out of memory for %s; the events wait in the queue and are retried until "
			    "memory comes back%s", s->no_memory.what, shorter);
	s->no_memory.said = true;
	s->no_memory.said_ms = now;
	s->no_memory.unsaid = 0;
}

enum eh_deliver_rc eh_sink_out_of_memory(struct eh_sink *sink, const char *what)
{
	int64_t now = eh_now_ms();

	if (!sink->no_memory.what) {
		sink->no_memory.what = what;
		sink->no_memory.since_ms = now;
		sink->no_memory.attempts = 0;
		sink->no_memory.said = false;
		if (!sink->no_memory.said_ms || now - sink->no_memory.said_ms >= NO_MEMORY_QUIET_MS)
			say_no_memory(sink, now);
	} else if (!sink->no_memory.said
		   && now - sink->no_memory.since_ms
			      >= (sink->no_memory.long_ms ? sink->no_memory.long_ms : NO_MEMORY_LONG_MS)) {
		say_no_memory(sink, now);
	}
	sink->no_memory.this_attempt = true;
	return EH_DELIVER_RETRY;
}

/* After each deliver: counts an attempt that ran out of memory, or ends
 * the episode once a deliver got events through (progressed) without
 * running out. A deliver that only failed otherwise (a peer down) ends
 * nothing: it may never have reached its allocation. A deliver that
 * needed no allocation (a batch the sink drops, the local sink once the
 * broker stops) does end it: nothing tells the two apart from here, and
 * the next allocation that fails starts a new episode. */
static void settle_no_memory(struct eh_sink *s, bool progressed)
{
	if (s->no_memory.this_attempt) {
		s->no_memory.this_attempt = false;
		s->no_memory.attempts++;
		return;
	}
	if (!s->no_memory.what || !progressed)
		return;
	if (s->no_memory.said)
		eh_sink_log(s, MOSQ_LOG_NOTICE,
			    "memory for %s available again after %llu failed attempt(s) in %lld ms; delivering",
			    s->no_memory.what, (unsigned long long)s->no_memory.attempts,
			    (long long)(eh_now_ms() - s->no_memory.since_ms));
	else
		s->no_memory.unsaid++;
	s->no_memory.what = NULL;
}

const char *eh_sink_pin_library(const void *fn)
{
	Dl_info info;
	const char *why;

	if (!dladdr(fn, &info) || !info.dli_fname)
		return "no loaded library holds it";
	/* RTLD_NOLOAD: only the copy already mapped, taken once more and
	 * marked never to be unmapped. */
	if (dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE))
		return NULL;
	why = dlerror();
	return why ? why : "dlopen failed";
}

char *eh_read_secret_file(const char *key, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int c;
	char shown[EH_QUOTE_LEN];

	eh_quote(shown, sizeof(shown), path);
	if (!f) {
		snprintf(err, errlen, "plugin_opt_%s: cannot read '%s': %s", key, shown, strerror(errno));
		return NULL;
	}
	while ((c = fgetc(f)) != EOF) {
		if (len + 1 >= cap) {
			char *grown;

			cap = cap ? cap * 2 : 256;
			if (cap > (1u << 20)) {
				snprintf(err, errlen, "plugin_opt_%s: '%s' is larger than 1 MiB", key, shown);
				goto fail;
			}
			grown = realloc(buf, cap);
			if (!grown) {
				snprintf(err, errlen, "out of memory");
				goto fail;
			}
			buf = grown;
		}
		buf[len++] = (char)c;
	}
	fclose(f);
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	if (!len) {
		snprintf(err, errlen, "plugin_opt_%s: '%s' is empty", key, shown);
		free(buf);
		return NULL;
	}
	buf[len] = '\0';
	return buf;
fail:
	if (buf)
		memset(buf, 0, len);
	free(buf);
	fclose(f);
	return NULL;
}

static uint64_t rand_below(uint64_t n)
{
	uint64_t r = 0;

	if (n <= 1)
		return 0;
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint64_t)eh_now_ms() * 6364136223846793005ull;
	return r % n;
}

static bool stopping(struct eh_sink *s)
{
	return atomic_load_explicit(&s->stop, memory_order_acquire) != 0;
}

static bool past_deadline(struct eh_sink *s)
{
	return stopping(s) && eh_now_ms() >= atomic_load_explicit(&s->drain_deadline_ms, memory_order_relaxed);
}

/* Applies a SIGHUP the broker thread asked for. */
static void take_reload(struct eh_sink *s)
{
	if (atomic_exchange_explicit(&s->reload_req, 0, memory_order_acq_rel) && s->ops->reload)
		s->ops->reload(s->ctx);
}

/* Waits until until_ms (or the drain deadline once stopping). A SIGHUP
 * during a long backoff is applied at once: a reopened log file should not
 * wait for the next retry. */
static void wait_until(struct eh_sink *s, int64_t until_ms)
{
	for (;;) {
		int64_t now, end = until_ms;

		take_reload(s);
		now = eh_now_ms();

		if (stopping(s)) {
			int64_t dl = atomic_load_explicit(&s->drain_deadline_ms, memory_order_relaxed);

			if (dl < end)
				end = dl;
		}
		if (now >= end)
			return;
		/* The ring is not empty while retrying, so eh_ring_wait_sc would
		 * return at once: wait on the stop word instead, which
		 * eh_runner_request_stop and eh_runner_wake wake. Once stopping, end is already
		 * capped by the deadline and nothing needs to interrupt us. */
		{
			struct timespec ts;
			int64_t step = end - now;

			ts.tv_sec = step / 1000;
			ts.tv_nsec = (long)(step % 1000) * 1000000L;
			if (stopping(s))
				nanosleep(&ts, NULL);
			else
				syscall(SYS_futex, (int *)&s->stop, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
		}
	}
}

static void nap(int64_t usec)
{
	struct timespec ts = { 0, (long)usec * 1000L };

	nanosleep(&ts, NULL);
}

/* "eh-<sink>" in top -H, ps -L and /proc/<pid>/task/<tid>/comm, so an
 * operator (and bench/throughput.py) can tell which sink uses the CPU. The
 * kernel keeps 15 characters. */
struct thread_name {
	char text[16];
};

static struct thread_name thread_name(const struct eh_sink *s)
{
	struct thread_name name;

	memcpy(name.text, "eh-", 3);
	strncpy(name.text + 3, s->name, sizeof(name.text) - 4);
	name.text[sizeof(name.text) - 1] = '\0';
	return name;
}

int64_t eh_runner_retry_delay(int64_t elapsed_ms, int64_t budget_ms, int64_t backoff_ms, int64_t retry_after_ms)
{
	int64_t delay = backoff_ms > 0 ? backoff_ms : 0, left;

	if (retry_after_ms > delay)
		delay = retry_after_ms;
	if (budget_ms < 0)
		return delay;
	left = budget_ms - elapsed_ms;
	if (left <= 0)
		return EH_RETRY_SPENT;
	/* A server that asks for more time than is left would refuse an
	 * attempt made before it is due; waiting for the budget to run out
	 * only delays the give-up, and attempting early only adds load. */
	if (retry_after_ms > left)
		return EH_RETRY_TOO_LATE;
	return delay < left ? delay : left;
}

/* The wait after prev ms (0: none yet) for a retry that carries no
 * jitter: doubled from retry_initial_ms, at most retry_max_ms. */
static int64_t next_backoff(const struct eh_sink *s, int64_t prev)
{
	int64_t next = prev ? prev * 2 : s->retry_initial_ms;

	return next < s->retry_max_ms ? next : s->retry_max_ms;
}

/* Allocates the thread's batch arrays. Memory may come back, as for a
 * deliver: failed attempts are said the same way (eh_sink_out_of_memory)
 * and paced by the retry backoff, while events wait in the ring. Returns
 * false when the sink is stopping and they still cannot be had. */
static bool take_batch_arrays(struct eh_sink *s, struct eh_ring_rec **recs, struct eh_event **evs)
{
	int64_t backoff = 0;

	for (;;) {
		*recs = calloc(s->batch_max, sizeof(**recs));
		*evs = calloc(s->batch_max, sizeof(**evs));
		if (*recs && *evs) {
			settle_no_memory(s, true);
			return true;
		}
		free(*recs);
		free(*evs);
		*recs = NULL;
		*evs = NULL;
		eh_sink_out_of_memory(s, "its batch arrays");
		settle_no_memory(s, false);
		if (stopping(s))
			return false;
		backoff = next_backoff(s, backoff);
		wait_until(s, eh_now_ms() + backoff);
	}
}

static void *run(void *arg)
{
	struct eh_sink *s = arg;
	struct eh_ring_rec *recs = NULL;
	struct eh_event *evs = NULL;
	struct thread_name name = thread_name(s);
	uint64_t attempt = 0;
	size_t retry_n = 0; /* a retried batch keeps its size: same events, same request */
	int64_t retry_start = 0, linger_start = 0;
	bool gave_up_logged = false;
	bool opened = s->ops->open == NULL;
	unsigned open_failures = 0;
	int64_t open_backoff = 0;
	unsigned naps = 0;

	eh_core_thread_begin(s->core, name.text);
	if (!take_batch_arrays(s, &recs, &evs))
		goto out;
	for (;;) {
		size_t n, done;
		struct eh_batch batch;
		enum eh_deliver_rc rc;
		bool stop_seen;

		take_reload(s);
		if (past_deadline(s))
			break;
		if (!opened) {
			/* A sink that cannot open (its library refused to start)
			 * keeps its events queued and tries again with backoff. */
			if (s->ops->open(s->ctx) == 0) {
				opened = true;
				open_backoff = 0;
				if (open_failures)
					eh_sink_log(s, MOSQ_LOG_NOTICE, "opened after %u failed attempt(s)",
						    open_failures);
				continue;
			}
			if (!open_failures++)
				eh_sink_log(s, MOSQ_LOG_WARNING, "could not open; retrying with backoff");
			open_backoff = next_backoff(s, open_backoff);
			if (stopping(s))
				break;
			wait_until(s, eh_now_ms() + open_backoff);
			continue;
		}
		/* Read before the ring: a stop request comes after the last
		 * event is in it (eh_core_stop), so a ring found empty after
		 * it is empty for good. */
		stop_seen = stopping(s);
		n = eh_ring_peek_sc(&s->ring, recs, attempt && retry_n ? retry_n : s->batch_max);
		if (!n) {
			if (stop_seen)
				break;
			if (s->ops->poll)
				s->ops->poll(s->ctx);
			eh_ring_idle_sc(&s->ring, &naps, IDLE_POLL_MS);
			continue;
		}
		naps = 0;
		if (n < s->batch_max && s->linger_ms > 0 && !stopping(s) && attempt == 0) {
			int64_t now = eh_now_ms();

			if (!linger_start)
				linger_start = now;
			if (now - linger_start < s->linger_ms) {
				int64_t left_us = (s->linger_ms - (now - linger_start)) * 1000;

				/* Nap rather than sleep on the ring: a sleeping
				 * consumer costs the broker thread a wake-up call
				 * per commit while the batch fills. */
				nap(left_us < EH_RING_NAP_US ? left_us : EH_RING_NAP_US);
				continue;
			}
		}
		linger_start = 0;
		for (size_t i = 0; i < n; i++) {
			if (eh_event_unpack(recs[i].data, recs[i].len, &evs[i])) {
				/* Cannot happen with records written by eh_event_pack;
				 * count rather than crash if it ever does. The good
				 * records before it go out first; the bad one is
				 * then at the front and released alone. */
				if (i) {
					n = i;
					break;
				}
				atomic_fetch_add_explicit(&s->failed, 1, memory_order_relaxed);
				eh_ring_release_sc(&s->ring, &recs[0], 1);
				n = 0;
				break;
			}
		}
		if (!n)
			continue;
		batch = (struct eh_batch){ evs, n, 0, -1, attempt };
		rc = s->ops->deliver(s->ctx, &batch);
		done = rc == EH_DELIVER_OK ? n : (batch.done > n ? n : batch.done);
		settle_no_memory(s, rc != EH_DELIVER_RETRY || done);
		if (done && !(s->ops->flags & EH_SINK_ASYNC_ACK))
			atomic_fetch_add_explicit(&s->delivered, done, memory_order_relaxed);
		if (rc == EH_DELIVER_DROP) {
			atomic_fetch_add_explicit(&s->failed, n - done, memory_order_relaxed);
			done = n;
		}
		if (done) {
			eh_ring_release_sc(&s->ring, &recs[done - 1], done);
			attempt = 0;
			gave_up_logged = false;
		}
		retry_n = n - done;
		if (s->ops->poll)
			s->ops->poll(s->ctx);
		if (rc != EH_DELIVER_RETRY)
			continue;

		{
			int64_t now = eh_now_ms(), base, delay;

			if (attempt == 0)
				retry_start = now;
			base = s->retry_initial_ms;
			for (uint64_t k = 0; k < attempt && base < s->retry_max_ms; k++)
				base *= 2;
			if (base > s->retry_max_ms)
				base = s->retry_max_ms;
			/* Full jitter over the upper half keeps a floor under the
			 * delay while still spreading many nodes apart. */
			delay = base / 2 + (int64_t)rand_below((uint64_t)(base - base / 2) + 1);
			delay = eh_runner_retry_delay(now - retry_start, s->retry_max_elapsed_ms, delay,
						      batch.retry_after_ms);
			if (delay < 0) {
				size_t rest = n - done;

				if (!gave_up_logged) {
					if (delay == EH_RETRY_TOO_LATE)
						eh_sink_log(s, MOSQ_LOG_WARNING,
							    "gave up on %zu event(s) after %lld ms of retries: the server "
							    "asked to wait %lld ms, past the %lld ms budget",
							    rest, (long long)(now - retry_start),
							    (long long)batch.retry_after_ms,
							    (long long)s->retry_max_elapsed_ms);
					else
						eh_sink_log(s, MOSQ_LOG_WARNING, "gave up on %zu event(s) after %lld ms of retries",
							    rest, (long long)(now - retry_start));
				}
				gave_up_logged = true;
				atomic_fetch_add_explicit(&s->failed, rest, memory_order_relaxed);
				eh_ring_release_sc(&s->ring, &recs[n - 1], rest);
				attempt = 0;
				continue;
			}
			attempt++;
			wait_until(s, now + delay);
		}
	}
out:
	{
		uint64_t left = eh_ring_count(&s->ring);

		if (s->ops->flush) {
			int64_t rest = atomic_load_explicit(&s->drain_deadline_ms, memory_order_relaxed) - eh_now_ms();

			left += s->ops->flush(s->ctx, rest > 0 ? rest : 0);
		}
		atomic_store_explicit(&s->left, left, memory_order_relaxed);
	}
	if (s->ops->close)
		s->ops->close(s->ctx);
	free(recs);
	free(evs);
	return NULL;
}

static void *thread_main(void *arg)
{
	struct eh_sink *s = arg;

	run(s);
	/* release: the thread's last writes before eh_runner_join_until
	 * sees it done (and joins it). */
	atomic_store_explicit(&s->thread_done, 1, memory_order_release);
	syscall(SYS_futex, (int *)&s->thread_done, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	return NULL;
}

int eh_runner_start(struct eh_sink *s)
{
	int rc;

	atomic_store_explicit(&s->thread_done, 0, memory_order_relaxed);
	rc = pthread_create(&s->thread, NULL, thread_main, s);

	if (rc) {
		errno = rc;
		return -1;
	}
	s->thread_started = true;
	return 0;
}

void eh_runner_request_stop(struct eh_sink *s, int64_t deadline_ms)
{
	atomic_store_explicit(&s->drain_deadline_ms, deadline_ms, memory_order_relaxed);
	/* release: the deadline is visible to whoever sees stop. */
	atomic_store_explicit(&s->stop, 1, memory_order_release);
	syscall(SYS_futex, (int *)&s->stop, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	eh_ring_wake(&s->ring);
	/* The futex and the ring only wake the runner's own waits; a deliver
	 * waiting inside the sink would see the deadline only when its own
	 * wait ends. */
	if (s->ops->wake && s->ctx)
		s->ops->wake(s->ctx);
}

void eh_runner_wake(struct eh_sink *s)
{
	syscall(SYS_futex, (int *)&s->stop, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	eh_ring_wake(&s->ring);
}

void eh_runner_join(struct eh_sink *s)
{
	if (s->thread_started) {
		pthread_join(s->thread, NULL);
		s->thread_started = false;
	}
}

int eh_runner_join_until(struct eh_sink *s, int64_t until_ms)
{
	if (!s->thread_started)
		return 0;
	/* A flag and pthread_join rather than pthread_clockjoin_np, which
	 * ThreadSanitizer does not know as a join. */
	while (!atomic_load_explicit(&s->thread_done, memory_order_acquire)) {
		int64_t rest = until_ms - eh_now_ms();
		struct timespec ts = { rest / 1000, (long)(rest % 1000) * 1000000L };

		if (rest <= 0)
			return -1;
		syscall(SYS_futex, (int *)&s->thread_done, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
	}
	eh_runner_join(s);
	return 0;
}
