/*
 * eh_ring: single-thread behaviour (order, padding at the wrap, rewind of
 * an emptied ring, both
 * capacity limits, oversize refusal, counts), the wake-up handshake with
 * and without membarrier (and membarrier refused once registered), and a
 * two-thread stress test
 * that checks order, identity and exact accounting (every record arrives
 * once, in order; refused pushes are counted and retried) across the futex
 * wake-up path. The stress test is also the main subject of make check-tsan.
 */
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/membarrier.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "eh_ring.h"
#include "unit.h"

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Record content derived from a sequence number: the number, then a fill
 * byte, so the consumer can check identity and length from the number. */
static uint32_t rec_len(uint64_t seq, uint32_t max)
{
	uint32_t len = 8 + (uint32_t)((seq * 7919u) % 200u);

	if (seq % 997 == 0)
		len = max / 2 + (uint32_t)(seq % 64);
	return len > max ? max : len;
}

static unsigned char rec_fill(uint64_t seq)
{
	return (unsigned char)(seq * 131u + 7u);
}

static void rec_write(void *slot, uint64_t seq, uint32_t len)
{
	memcpy(slot, &seq, sizeof(seq));
	memset((char *)slot + 8, rec_fill(seq), len - 8);
}

/* 0 when rec is exactly the record for seq. */
static int rec_check(const struct eh_ring_rec *rec, uint64_t seq, uint32_t max, unsigned char *scratch)
{
	uint64_t got;

	if (rec->len != rec_len(seq, max) || rec->len < 8)
		return -1;
	memcpy(&got, rec->data, sizeof(got));
	if (got != seq)
		return -1;
	memset(scratch, rec_fill(seq), rec->len - 8);
	return memcmp((const char *)rec->data + 8, scratch, rec->len - 8) ? -1 : 0;
}

START_TEST(ring_push_peek_release)
{
	struct eh_ring r;
	struct eh_ring_rec recs[4];
	char *slot;

	ck_assert_int_eq(eh_ring_init(&r, 100, 0), 0);
	ck_assert_uint_eq(r.size, 4096);
	ck_assert_uint_eq(eh_ring_count(&r), 0);
	ck_assert_uint_eq(eh_ring_peek_sc(&r, recs, 4), 0);

	slot = eh_ring_reserve_sp(&r, 5);
	ck_assert_ptr_nonnull(slot);
	memcpy(slot, "hello", 5);
	/* Reserved but not committed: invisible to the consumer. */
	ck_assert_uint_eq(eh_ring_peek_sc(&r, recs, 4), 0);
	ck_assert_uint_eq(eh_ring_count(&r), 0);
	eh_ring_commit_sp(&r);
	ck_assert_uint_eq(eh_ring_count(&r), 1);

	slot = eh_ring_reserve_sp(&r, 0);
	ck_assert_ptr_nonnull(slot);
	eh_ring_commit_sp(&r);
	/* Over max_record, also past what the 32-bit record length holds:
	 * refused, and nothing reserved. */
	ck_assert_ptr_null(eh_ring_reserve_sp(&r, r.max_record + 1));
	ck_assert_ptr_null(eh_ring_reserve_sp(&r, (size_t)UINT32_MAX + 9));
	slot = eh_ring_reserve_sp(&r, 3);
	memcpy(slot, "abc", 3);
	eh_ring_commit_sp(&r);
	ck_assert_uint_eq(eh_ring_count(&r), 3);

	/* Peek does not consume; a smaller max gives the first records. */
	ck_assert_uint_eq(eh_ring_peek_sc(&r, recs, 2), 2);
	ck_assert_uint_eq(eh_ring_peek_sc(&r, recs, 4), 3);
	ck_assert_uint_eq(recs[0].len, 5);
	ck_assert_mem_eq(recs[0].data, "hello", 5);
	ck_assert_uint_eq(recs[1].len, 0);
	ck_assert_uint_eq(recs[2].len, 3);
	ck_assert_mem_eq(recs[2].data, "abc", 3);
	ck_assert_uint_eq(((uintptr_t)recs[0].data) % EH_RING_ALIGN, 0);
	ck_assert_uint_eq(((uintptr_t)recs[2].data) % EH_RING_ALIGN, 0);

	/* Releasing the first two leaves the third at the front. */
	eh_ring_release_sc(&r, &recs[1], 2);
	ck_assert_uint_eq(eh_ring_count(&r), 1);
	ck_assert_uint_eq(eh_ring_peek_sc(&r, recs, 4), 1);
	ck_assert_mem_eq(recs[0].data, "abc", 3);
	eh_ring_release_sc(&r, &recs[0], 1);
	ck_assert_uint_eq(eh_ring_count(&r), 0);
	ck_assert_uint_eq(eh_ring_peek_sc(&r, recs, 4), 0);
	/* Releasing nothing is a no-op. */
	eh_ring_release_sc(&r, NULL, 0);
	ck_assert_uint_eq(eh_ring_count(&r), 0);
	eh_ring_destroy(&r);
	/* Tolerant destroy: twice, and on a zeroed ring. */
	eh_ring_destroy(&r);
	memset(&r, 0, sizeof(r));
	eh_ring_destroy(&r);
}
END_TEST

START_TEST(ring_init_sizes)
{
	struct eh_ring r;

	ck_assert_int_eq(eh_ring_init(&r, 0, 0), 0);
	ck_assert_uint_eq(r.size, 4096);
	ck_assert_uint_eq(r.max_record, 4096 / 4 - EH_RING_HDR);
	eh_ring_destroy(&r);
	ck_assert_int_eq(eh_ring_init(&r, 4097, 7), 0);
	ck_assert_uint_eq(r.size, 8192);
	ck_assert_uint_eq(r.mask, 8191);
	ck_assert_uint_eq(r.max_records, 7);
	eh_ring_destroy(&r);
	ck_assert_int_eq(eh_ring_init(&r, 65536, 0), 0);
	ck_assert_uint_eq(r.size, 65536);
	eh_ring_destroy(&r);
}
END_TEST

/* Many sizes through a 4 KiB ring, one record at a time and in small
 * groups: every wrap position is reached, including padding records. */
START_TEST(ring_wrap_with_padding)
{
	struct eh_ring r;
	struct eh_ring_rec recs[8];
	unsigned char scratch[4096];
	uint64_t pads = 0, next_push = 0, next_pop = 0;

	ck_assert_int_eq(eh_ring_init(&r, 4096, 0), 0);
	for (int round = 0; round < 20000; round++) {
		int group = 1 + round % 5;

		for (int k = 0; k < group; k++) {
			uint32_t len = rec_len(next_push, (uint32_t)r.max_record);
			uint64_t before = atomic_load(&r.head);
			void *slot = eh_ring_reserve_sp(&r, len);

			if (!slot)
				break;
			/* The record is at most one alignment step beyond its
			 * need, unless a padding record filled the end first. */
			if (r.head_pending - before > ((EH_RING_HDR + len + 7) & ~7u)) {
				pads++;
				ck_assert_ptr_eq(slot, r.buf + EH_RING_HDR);
			}
			rec_write(slot, next_push, len);
			eh_ring_commit_sp(&r);
			next_push++;
		}
		for (;;) {
			size_t n = eh_ring_peek_sc(&r, recs, (size_t)(1 + round % 8));

			for (size_t i = 0; i < n; i++)
				ck_assert_int_eq(rec_check(&recs[i], next_pop + i, (uint32_t)r.max_record, scratch), 0);
			if (!n)
				break;
			eh_ring_release_sc(&r, &recs[n - 1], n);
			next_pop += n;
			if (round % 3)
				break; /* leave some behind so the ring stays part full */
		}
		ck_assert_uint_eq(eh_ring_count(&r), next_push - next_pop);
	}
	ck_assert_uint_gt(pads, 100);
	ck_assert_uint_gt(next_pop, 50000);
	eh_ring_destroy(&r);
}
END_TEST

/* A ring that the consumer keeps emptying restarts at offset 0 once the head
 * is past its first quarter (only those pages become resident); right after
 * such a rewind, while the consumer has not yet skipped the pad, a quarter of
 * the ring still takes new records; a ring with a backlog keeps going round
 * the whole buffer in order. */
START_TEST(ring_rewinds_when_empty)
{
	struct eh_ring r;
	struct eh_ring_rec rec[4];
	size_t furthest = 0, quarter = (1u << 20) / 4;
	bool rewound = false;
	uint64_t seq;

	ck_assert_int_eq(eh_ring_init(&r, 1u << 20, 0), 0);
	for (seq = 0; seq < 20000; seq++) {
		void *slot = eh_ring_reserve_sp(&r, 100);
		size_t off;

		ck_assert_ptr_nonnull(slot);
		memcpy(slot, &seq, sizeof(seq));
		eh_ring_commit_sp(&r);
		ck_assert_uint_eq(eh_ring_peek_sc(&r, rec, 4), 1);
		ck_assert_uint_eq(rec[0].len, 100);
		ck_assert_int_eq(memcmp(rec[0].data, &seq, sizeof(seq)), 0);
		off = (size_t)((const uint8_t *)rec[0].data - r.buf);
		if (off > furthest)
			furthest = off;
		eh_ring_release_sc(&r, &rec[0], 1);
	}
	/* 20000 x 112 bytes went through; none beyond the quarter plus a page
	 * of records between two checks. */
	ck_assert_uint_lt(furthest, quarter + 4096 + 256);

	/* Walk to the next rewind, then fill without consuming: the pad is
	 * still unread, and a quarter of the ring must take new records. */
	for (;; seq++) {
		void *slot = eh_ring_reserve_sp(&r, 100);

		ck_assert_ptr_nonnull(slot);
		memcpy(slot, &seq, sizeof(seq));
		eh_ring_commit_sp(&r);
		if ((uint8_t *)slot - r.buf == EH_RING_HDR) {
			rewound = true;
			break;
		}
		ck_assert_uint_eq(eh_ring_peek_sc(&r, rec, 1), 1);
		eh_ring_release_sc(&r, &rec[0], 1);
	}
	ck_assert(rewound);
	for (size_t filled = 112; filled + 112 <= quarter; filled += 112) {
		void *slot = eh_ring_reserve_sp(&r, 100);

		ck_assert_ptr_nonnull(slot);
		seq++;
		memcpy(slot, &seq, sizeof(seq));
		eh_ring_commit_sp(&r);
	}
	{
		/* Everything arrives in order, the pad skipped. */
		uint64_t want = seq - (quarter / 112 - 1), got;
		size_t n;

		while ((n = eh_ring_peek_sc(&r, rec, 1)) == 1) {
			memcpy(&got, rec[0].data, sizeof(got));
			ck_assert_uint_eq(got, want);
			want++;
			eh_ring_release_sc(&r, &rec[0], 1);
		}
		ck_assert_uint_eq(want, seq + 1);
	}
	ck_assert_uint_eq(eh_ring_count(&r), 0);

	/* With a backlog there is no rewind: the records keep their order
	 * past the threshold. */
	for (seq = 0; seq < 4000; seq++) {
		void *slot = eh_ring_reserve_sp(&r, 100);

		ck_assert_ptr_nonnull(slot);
		memcpy(slot, &seq, sizeof(seq));
		eh_ring_commit_sp(&r);
	}
	for (seq = 0; seq < 4000; seq++) {
		ck_assert_uint_eq(eh_ring_peek_sc(&r, rec, 1), 1);
		ck_assert_int_eq(memcmp(rec[0].data, &seq, sizeof(seq)), 0);
		eh_ring_release_sc(&r, &rec[0], 1);
	}
	ck_assert_uint_eq(eh_ring_count(&r), 0);
	eh_ring_destroy(&r);
}
END_TEST

START_TEST(ring_byte_capacity)
{
	struct eh_ring r;
	struct eh_ring_rec rec;
	int pushed = 0;

	ck_assert_int_eq(eh_ring_init(&r, 4096, 0), 0);
	/* 100 bytes need 112 with header and alignment: 36 fit in 4096, and
	 * the 37th would need padding plus a record in 64 free bytes. */
	while (eh_ring_reserve_sp(&r, 100)) {
		eh_ring_commit_sp(&r);
		pushed++;
		ck_assert_int_le(pushed, 100);
	}
	ck_assert_int_eq(pushed, 36);
	/* A full ring refuses at once, any size, repeatedly. */
	ck_assert_ptr_null(eh_ring_reserve_sp(&r, 100));
	ck_assert_ptr_null(eh_ring_reserve_sp(&r, 57));
	ck_assert_uint_eq(eh_ring_count(&r), 36);
	/* 64 bytes are free at the end: a record needing 64 fits exactly. */
	ck_assert_ptr_nonnull(eh_ring_reserve_sp(&r, 56));
	eh_ring_commit_sp(&r);
	ck_assert_ptr_null(eh_ring_reserve_sp(&r, 0));
	/* Freeing one record at the front makes room again, after a wrap. */
	ck_assert_uint_eq(eh_ring_peek_sc(&r, &rec, 1), 1);
	eh_ring_release_sc(&r, &rec, 1);
	ck_assert_ptr_nonnull(eh_ring_reserve_sp(&r, 100));
	eh_ring_commit_sp(&r);
	ck_assert_ptr_null(eh_ring_reserve_sp(&r, 100));
	ck_assert_uint_eq(eh_ring_count(&r), 37);
	eh_ring_destroy(&r);
}
END_TEST

START_TEST(ring_record_capacity)
{
	struct eh_ring r;
	struct eh_ring_rec recs[8];

	ck_assert_int_eq(eh_ring_init(&r, 65536, 5), 0);
	for (int i = 0; i < 5; i++) {
		ck_assert_ptr_nonnull(eh_ring_reserve_sp(&r, 1));
		eh_ring_commit_sp(&r);
	}
	ck_assert_ptr_null(eh_ring_reserve_sp(&r, 1));
	ck_assert_ptr_null(eh_ring_reserve_sp(&r, 0));
	ck_assert_uint_eq(eh_ring_count(&r), 5);
	ck_assert_uint_eq(eh_ring_peek_sc(&r, recs, 8), 5);
	eh_ring_release_sc(&r, &recs[1], 2);
	ck_assert_uint_eq(eh_ring_count(&r), 3);
	for (int i = 0; i < 2; i++) {
		ck_assert_ptr_nonnull(eh_ring_reserve_sp(&r, 1));
		eh_ring_commit_sp(&r);
	}
	ck_assert_ptr_null(eh_ring_reserve_sp(&r, 1));
	eh_ring_destroy(&r);
}
END_TEST

START_TEST(ring_oversize_refused)
{
	struct eh_ring r;
	struct eh_ring_rec rec;
	uint32_t max;
	char *slot;

	ck_assert_int_eq(eh_ring_init(&r, 4096, 0), 0);
	max = (uint32_t)r.max_record;
	ck_assert_ptr_null(eh_ring_reserve_sp(&r, max + 1));
	ck_assert_ptr_null(eh_ring_reserve_sp(&r, UINT32_MAX));
	ck_assert_uint_eq(eh_ring_count(&r), 0);
	/* The largest record fits, even across the wrap. */
	for (int i = 0; i < 12; i++) {
		slot = eh_ring_reserve_sp(&r, max);
		ck_assert_ptr_nonnull(slot);
		memset(slot, 'a' + i, max);
		eh_ring_commit_sp(&r);
		ck_assert_uint_eq(eh_ring_peek_sc(&r, &rec, 1), 1);
		ck_assert_uint_eq(rec.len, max);
		ck_assert_int_eq(((const char *)rec.data)[max - 1], 'a' + i);
		eh_ring_release_sc(&r, &rec, 1);
		/* Shift the phase so the next one lands somewhere else. */
		ck_assert_ptr_nonnull(eh_ring_reserve_sp(&r, 200));
		eh_ring_commit_sp(&r);
		ck_assert_uint_eq(eh_ring_peek_sc(&r, &rec, 1), 1);
		eh_ring_release_sc(&r, &rec, 1);
	}
	eh_ring_destroy(&r);
}
END_TEST

struct waiter {
	struct eh_ring *ring;
	int timeout_ms;
	_Atomic int started;
	int64_t took_ms;
};

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;
	int64_t t0 = mono_ms();

	atomic_store(&w->started, 1);
	eh_ring_wait_sc(w->ring, w->timeout_ms);
	w->took_ms = mono_ms() - t0;
	return NULL;
}

/* The inline fast path of eh_ring_reserve_sp places every record where the
 * full algorithm alone (eh_ring_reserve_slow_sp) places it, and refuses
 * the same ones: two rings fed the same pushes and releases, one through
 * each, across wraps, rewinds, both capacity limits and oversize records,
 * from start (the byte counters' first value). Returns how many pushes
 * took the fast path, and sets *pushed. */
static uint64_t compare_paths(uint64_t start, int steps, uint64_t *pushed)
{
	struct eh_ring a, b;
	uint64_t fast = 0;
	uint32_t x = 12345;

	*pushed = 0;
	ck_assert_int_eq(eh_ring_init(&a, 16384, 100), 0);
	ck_assert_int_eq(eh_ring_init(&b, 16384, 100), 0);
	for (struct eh_ring *r = &a; r; r = r == &a ? &b : NULL) {
		atomic_store(&r->head, start);
		atomic_store(&r->tail, start);
		r->tail_seen = r->head_pending = r->next_rewind_try = start;
	}
	for (int step = 0; step < steps; step++) {
		x = x * 1103515245u + 12345u;
		if ((x >> 16) % 8 < 5) {
			uint32_t len = (x >> 8) % 97 == 0 ? (uint32_t)a.max_record + 1 : 1 + (x >> 4) % 600;
			uint64_t end_before = a.fast_end;
			void *sa = eh_ring_reserve_sp(&a, len);
			void *sb = eh_ring_reserve_slow_sp(&b, len);

			fast += end_before && a.fast_end == end_before && sa;
			ck_assert_int_eq(sa == NULL, sb == NULL);
			if (!sa)
				continue;
			ck_assert_uint_eq((uint64_t)((uint8_t *)sa - a.buf), (uint64_t)((uint8_t *)sb - b.buf));
			ck_assert_uint_eq(a.head_pending, b.head_pending);
			memset(sa, 0xa5, len);
			eh_ring_commit_sp(&a);
			eh_ring_commit_sp(&b);
			(*pushed)++;
		} else {
			struct eh_ring_rec ra[64], rb[64];
			size_t want = 1 + (x >> 20) % 64;
			size_t na = eh_ring_peek_sc(&a, ra, want);
			size_t nb = eh_ring_peek_sc(&b, rb, want);

			ck_assert_uint_eq(na, nb);
			if (!na)
				continue;
			ck_assert_uint_eq(ra[na - 1].end, rb[nb - 1].end);
			eh_ring_release_sc(&a, &ra[na - 1], na);
			eh_ring_release_sc(&b, &rb[nb - 1], nb);
		}
	}
	eh_ring_destroy(&a);
	eh_ring_destroy(&b);
	return fast;
}

START_TEST(ring_fast_path_matches_full)
{
	uint64_t pushed, fast = compare_paths(0, 400000, &pushed);

	/* Both paths were taken many times. */
	ck_assert_uint_gt(fast, pushed / 2);
	ck_assert_uint_lt(fast, pushed);
	/* Across the byte counters' wrap at 2^64 (some 3 MB of records from
	 * 64 KiB before it): the last lap takes the full algorithm. */
	compare_paths(UINT64_MAX - 65535, 20000, &pushed);
	ck_assert_uint_gt(pushed, 5000);
}
END_TEST

/* The last lap before the byte counters wrap at 2^64, where the fast
 * path's bound is 0: a record ending exactly at 2^64 must still find room
 * (here it does not: the first record is never released). */
START_TEST(ring_fast_path_at_the_counters_wrap)
{
	struct eh_ring r;
	uint64_t start = UINT64_MAX - 4096 - 7; /* 8 bytes before the last lap */

	ck_assert_int_eq(eh_ring_init(&r, 4096, 0), 0);
	atomic_store(&r.head, start);
	atomic_store(&r.tail, start);
	r.tail_seen = r.head_pending = r.next_rewind_try = start;
	/* padded to the lap's start: 24 bytes used */
	ck_assert_ptr_nonnull(eh_ring_reserve_sp(&r, 8));
	eh_ring_commit_sp(&r);
	for (int i = 0; i < 3; i++) {
		ck_assert_ptr_nonnull(eh_ring_reserve_sp(&r, 1016));
		eh_ring_commit_sp(&r);
	}
	/* 3096 used, 1000 free: a record needing 1008 does not fit. */
	ck_assert_uint_eq(atomic_load(&r.head) - atomic_load(&r.tail), 3096);
	ck_assert_ptr_null(eh_ring_reserve_sp(&r, 1000));
	ck_assert_ptr_nonnull(eh_ring_reserve_sp(&r, 992));
	eh_ring_destroy(&r);
}
END_TEST

START_TEST(ring_wait_returns)
{
	struct eh_ring r;
	int64_t t0;

	ck_assert_int_eq(eh_ring_init(&r, 4096, 0), 0);
	/* Empty: the timeout ends the wait. */
	t0 = mono_ms();
	eh_ring_wait_sc(&r, 30);
	ck_assert_int_lt(mono_ms() - t0, 5000);
	/* Not empty: returns at once even with a long timeout. */
	ck_assert_ptr_nonnull(eh_ring_reserve_sp(&r, 1));
	eh_ring_commit_sp(&r);
	t0 = mono_ms();
	eh_ring_wait_sc(&r, 60000);
	ck_assert_int_lt(mono_ms() - t0, 5000);
	ck_assert_uint_eq(atomic_load(&r.sleeping), 0);
	eh_ring_destroy(&r);
}
END_TEST

/* A commit, and eh_ring_wake, each end a consumer's long wait. */
START_TEST(ring_wait_woken)
{
	for (int how = 0; how < 2; how++) {
		struct eh_ring r;
		struct waiter w = { &r, 60000, 0, 0 };
		pthread_t t;

		ck_assert_int_eq(eh_ring_init(&r, 4096, 0), 0);
		ck_assert_int_eq(pthread_create(&t, NULL, wait_thread, &w), 0);
		while (!atomic_load(&w.started))
			sched_yield();
		/* Give it a moment to really sleep; correctness does not
		 * depend on it (the wake-up protocol covers both orders). */
		nanosleep(&(struct timespec){ 0, 20 * 1000000L }, NULL);
		if (how == 0) {
			ck_assert_ptr_nonnull(eh_ring_reserve_sp(&r, 8));
			eh_ring_commit_sp(&r);
		} else {
			eh_ring_wake(&r);
		}
		pthread_join(t, NULL);
		ck_assert_int_lt(w.took_ms, 30000);
		eh_ring_destroy(&r);
	}
}
END_TEST

/* ---- the wake-up handshake, one record at a time ---- */

struct pingpong {
	struct eh_ring ring;
	uint64_t rounds;
	uint64_t slow_waits;
	_Atomic int done;
};

static void *pingpong_consumer(void *arg)
{
	struct pingpong *pp = arg;
	struct eh_ring_rec rec;

	for (;;) {
		int64_t t0;

		if (eh_ring_peek_sc(&pp->ring, &rec, 1)) {
			eh_ring_release_sc(&pp->ring, &rec, 1);
			continue;
		}
		if (atomic_load_explicit(&pp->done, memory_order_acquire))
			break;
		t0 = mono_ms();
		eh_ring_wait_sc(&pp->ring, 2000);
		if (mono_ms() - t0 >= 1500 && !atomic_load_explicit(&pp->done, memory_order_acquire))
			pp->slow_waits++;
	}
	return NULL;
}

/* Every round the consumer finds the ring empty and goes to sleep while
 * the producer commits the next record, so the two halves of the
 * handshake meet in every order: a lost wake-up shows as a wait that ends
 * by its timeout while the producer waits for that record's release. */
static void run_pingpong(uint64_t rounds)
{
	struct pingpong *pp = aligned_alloc(64, sizeof(*pp));
	pthread_t cons;

	ck_assert_ptr_nonnull(pp);
	memset(pp, 0, sizeof(*pp));
	ck_assert_int_eq(eh_ring_init(&pp->ring, 4096, 0), 0);
	pp->rounds = rounds;
	ck_assert_int_eq(pthread_create(&cons, NULL, pingpong_consumer, pp), 0);
	for (uint64_t i = 0; i < rounds; i++) {
		void *slot;
		unsigned spins = 0;

		/* The consumer released the last record and is on its way to
		 * sleep: commit after a varying delay, so the commit lands
		 * before, inside and after its announcement. */
		while (atomic_load_explicit(&pp->ring.records_out, memory_order_acquire) < i) {
			if (++spins % 1024 == 0)
				sched_yield();
		}
		for (uint64_t spin = 0; spin < (i * 7919u) % 512u; spin++)
			atomic_signal_fence(memory_order_seq_cst);
		slot = eh_ring_reserve_sp(&pp->ring, 8);
		ck_assert_ptr_nonnull(slot);
		memcpy(slot, &i, sizeof(i));
		eh_ring_commit_sp(&pp->ring);
	}
	while (atomic_load_explicit(&pp->ring.records_out, memory_order_acquire) < rounds)
		sched_yield();
	atomic_store_explicit(&pp->done, 1, memory_order_release);
	eh_ring_wake(&pp->ring);
	pthread_join(cons, NULL);
	ck_assert_uint_eq(pp->slow_waits, 0);
	ck_assert_uint_eq(eh_ring_count(&pp->ring), 0);
	eh_ring_destroy(&pp->ring);
	free(pp);
}

/* A count from the environment variable name, or dflt. */
static uint64_t env_count(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);
	uint64_t n = v ? strtoull(v, NULL, 10) : 0;

	return n ? n : dflt;
}

/* EH_RING_PINGPONG_N overrides the rounds per handshake (default 20,000). */
static uint64_t pingpong_n(void)
{
	return env_count("EH_RING_PINGPONG_N", 20000);
}

START_TEST(ring_handshake_membarrier)
{
	struct eh_ring r;

	/* The first ring registers the process where the kernel allows it
	 * (Linux 4.14 and later, without a seccomp filter refusing it). */
	ck_assert_int_eq(eh_ring_init(&r, 4096, 0), 0);
	eh_ring_destroy(&r);
	/* Registering again is harmless, and tells whether it is allowed. */
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
		ck_assert(eh_ring_membarrier);
	else
		fprintf(stderr, "ring: membarrier refused here; only the fence handshake is tested\n");
	run_pingpong(pingpong_n());
}
END_TEST

/* In a child, so the filter stays there: membarrier refused after the
 * process registered (as a seccomp filter installed later would do). The
 * consumer must not sleep (a producer's compiler barrier could let it
 * miss a commit): it naps and returns, and the error is recorded for the
 * core to log. Exit status: 0 passed, 77 could not be set up, else the
 * failed step. */
static int membarrier_refused_child(void)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { sizeof(code) / sizeof(code[0]), code };
	struct eh_ring r;
	struct eh_ring_rec rec;
	int64_t t0;

	if (eh_ring_init(&r, 4096, 0) || !eh_ring_membarrier)
		return 77;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		return 77;
	if (atomic_load(&eh_ring_membarrier_errno) != 0)
		return 1;
	t0 = mono_ms();
	eh_ring_wait_sc(&r, 10000);
	if (mono_ms() - t0 >= 5000)
		return 2; /* slept instead of napping */
	if (atomic_load(&eh_ring_membarrier_errno) != EPERM || atomic_load(&r.sleeping))
		return 3;
	/* The ring itself goes on working. */
	if (!eh_ring_reserve_sp(&r, 8))
		return 4;
	eh_ring_commit_sp(&r);
	if (eh_ring_peek_sc(&r, &rec, 1) != 1)
		return 5;
	eh_ring_release_sc(&r, &rec, 1);
	eh_ring_destroy(&r);
	return 0;
}

START_TEST(ring_membarrier_refused_later)
{
	int status;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(membarrier_refused_child());
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77) {
		fprintf(stderr, "ring: membarrier or seccomp unavailable here; refusal not tested\n");
		return;
	}
	ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

START_TEST(ring_handshake_fences)
{
	struct eh_ring r;
	bool saved;

	ck_assert_int_eq(eh_ring_init(&r, 4096, 0), 0);
	eh_ring_destroy(&r);
	/* No ring is in use by another thread: the mode may change. */
	saved = eh_ring_membarrier;
	eh_ring_membarrier = false;
	run_pingpong(pingpong_n());
	eh_ring_membarrier = saved;
}
END_TEST

/* ---- two-thread stress ---- */

struct stress {
	struct eh_ring ring;
	uint64_t records;
	uint64_t pushed, refused;        /* producer's counts */
	uint64_t consumed, slow_waits;   /* consumer's counts */
	uint64_t bad_order, bad_content; /* consumer's failures */
	_Atomic int done;
};

static void *stress_producer(void *arg)
{
	struct stress *st = arg;
	uint32_t max = (uint32_t)st->ring.max_record;
	uint64_t seq = 0;

	/* Every record goes through: a refused push is counted and tried
	 * again (the ring never waits; the test does, by yielding), so the
	 * consumer must see every sequence number exactly once, in order. */
	while (seq < st->records) {
		uint32_t len = rec_len(seq, max);
		void *slot = eh_ring_reserve_sp(&st->ring, len);

		if (!slot) {
			st->refused++;
			if (st->refused % 16 == 0)
				sched_yield();
			continue;
		}
		rec_write(slot, seq, len);
		eh_ring_commit_sp(&st->ring);
		st->pushed++;
		/* Pause sometimes so the consumer empties the ring and
		 * sleeps: the next commit must wake it. */
		if (seq % 20011 == 0)
			nanosleep(&(struct timespec){ 0, 200000L }, NULL);
		seq++;
	}
	atomic_store_explicit(&st->done, 1, memory_order_release);
	eh_ring_wake(&st->ring);
	return NULL;
}

static void *stress_consumer(void *arg)
{
	struct stress *st = arg;
	struct eh_ring_rec recs[32];
	static _Thread_local unsigned char scratch[65536];
	uint32_t max = (uint32_t)st->ring.max_record;
	uint64_t expect = 0;

	for (;;) {
		size_t n = eh_ring_peek_sc(&st->ring, recs, 32);

		if (!n) {
			int64_t t0;

			if (atomic_load_explicit(&st->done, memory_order_acquire)) {
				/* done was set after the last commit: one more
				 * look is final. */
				if (!eh_ring_peek_sc(&st->ring, recs, 1))
					break;
				continue;
			}
			t0 = mono_ms();
			/* A long timeout: a lost wake-up shows as a slow wait.
			 * Not one from the ring, though, if done arrived during
			 * the wait: the producer's final wake can land between
			 * our look at done and the wait's snapshot of the wake
			 * word (a race of this test's own stop signal, which the
			 * ring's sleeping protocol does not cover). A ring that
			 * lost a wake-up leaves the producer stuck on a full ring,
			 * so done stays 0 and the wait is counted (unless the
			 * loss came within the last ring-full of records). */
			eh_ring_wait_sc(&st->ring, 3000);
			if (mono_ms() - t0 >= 2500 && !atomic_load_explicit(&st->done, memory_order_acquire))
				st->slow_waits++;
			continue;
		}
		for (size_t i = 0; i < n; i++) {
			uint64_t seq;

			memcpy(&seq, recs[i].data, sizeof(seq));
			if (seq != expect)
				st->bad_order++;
			if (rec_check(&recs[i], seq, max, scratch))
				st->bad_content++;
			expect = seq + 1;
		}
		st->consumed += n;
		eh_ring_release_sc(&st->ring, &recs[n - 1], n);
	}
	return NULL;
}

static void run_stress(size_t bytes, uint64_t max_records, uint64_t records)
{
	struct stress *st = calloc(1, sizeof(*st));
	pthread_t prod, cons;

	ck_assert_ptr_nonnull(st);
	ck_assert_int_eq(eh_ring_init(&st->ring, bytes, max_records), 0);
	st->records = records;
	ck_assert_int_eq(pthread_create(&cons, NULL, stress_consumer, st), 0);
	ck_assert_int_eq(pthread_create(&prod, NULL, stress_producer, st), 0);
	pthread_join(prod, NULL);
	pthread_join(cons, NULL);
	if (getenv("EH_UNIT_VERBOSE"))
		fprintf(stderr, "ring stress %zu bytes, %llu records max: pushed %llu, refused %llu\n", bytes,
			(unsigned long long)max_records, (unsigned long long)st->pushed,
			(unsigned long long)st->refused);

	ck_assert_uint_eq(st->pushed, records);
	ck_assert_uint_eq(st->consumed, records);
	ck_assert_uint_eq(st->bad_order, 0);
	ck_assert_uint_eq(st->bad_content, 0);
	ck_assert_uint_eq(st->slow_waits, 0);
	ck_assert_uint_eq(eh_ring_count(&st->ring), 0);
	ck_assert_uint_eq(atomic_load(&st->ring.records_in), records);
	ck_assert_uint_eq(atomic_load(&st->ring.records_out), records);
	eh_ring_destroy(&st->ring);
	free(st);
}

/* EH_RING_STRESS_N overrides the record count (default 2,000,000 in all,
 * split over the two ring shapes). */
static uint64_t stress_n(void)
{
	return env_count("EH_RING_STRESS_N", 2000000);
}

START_TEST(ring_stress_small_bytes)
{
	/* 4 KiB: the byte limit and padding dominate. */
	run_stress(4096, 0, stress_n() / 2);
}
END_TEST

START_TEST(ring_stress_record_limit)
{
	/* 64 KiB with a 100-record limit: the record limit dominates. */
	run_stress(65536, 100, stress_n() / 2);
}
END_TEST

static Suite *ring_suite(void)
{
	Suite *s = suite_create("ring");
	TCase *tc = tcase_create("single");
	TCase *st = tcase_create("stress");

	tcase_add_test(tc, ring_push_peek_release);
	tcase_add_test(tc, ring_init_sizes);
	tcase_add_test(tc, ring_wrap_with_padding);
	tcase_add_test(tc, ring_rewinds_when_empty);
	tcase_add_test(tc, ring_byte_capacity);
	tcase_add_test(tc, ring_record_capacity);
	tcase_add_test(tc, ring_oversize_refused);
	tcase_add_test(tc, ring_fast_path_matches_full);
	tcase_add_test(tc, ring_fast_path_at_the_counters_wrap);
	tcase_add_test(tc, ring_wait_returns);
	tcase_add_test(tc, ring_wait_woken);
	suite_add_tcase(s, tc);
	tcase_set_timeout(st, 120);
	tcase_add_test(st, ring_handshake_membarrier);
	tcase_add_test(st, ring_handshake_fences);
	tcase_add_test(st, ring_membarrier_refused_later);
	tcase_add_test(st, ring_stress_small_bytes);
	tcase_add_test(st, ring_stress_record_limit);
	suite_add_tcase(s, st);
	return s;
}
EH_UNIT_SUITE(ring_suite)
