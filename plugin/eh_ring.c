/*
 * eh_ring: see eh_ring.h for the design. The memory orders:
 * - commit: release store of head orders the record bytes before it;
 *   the consumer's acquire load of head makes them visible.
 * - release: release store of tail orders the consumer's last reads of the
 *   freed bytes before the producer's acquire load lets it overwrite them.
 * - wake-up: a full barrier on each side (store sleeping / barrier / load
 *   records_in on the consumer, store records_in and head / barrier / load
 *   sleeping on the producer) guarantees that one of them sees the other's
 *   store, so a consumer never sleeps through a commit. With membarrier the
 *   consumer's barrier is MEMBARRIER_CMD_PRIVATE_EXPEDITED, which runs a
 *   full barrier on every thread of the process that is running (and the
 *   others pass one when they are scheduled): wherever it lands in the
 *   producer's store / compiler barrier / load, either the producer's load
 *   comes after it and sees sleeping, or its stores came before it and the
 *   consumer's load sees them. The producer's barrier is then only the
 *   compiler's, which keeps the load after the stores in program order.
 */
#include "eh_ring.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAD_FLAG 0x80000000u

bool eh_ring_membarrier;
_Atomic int eh_ring_membarrier_errno;

static long membarrier(int cmd)
{
	return syscall(SYS_membarrier, cmd, 0, 0);
}

/* Kernels before 4.14, or a seccomp filter that refuses the call, leave
 * the processor fence on the producer's side. */
static void membarrier_register(void)
{
	long cmds = membarrier(MEMBARRIER_CMD_QUERY);

	if (cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED)
	    && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0)
		eh_ring_membarrier = true;
}

static uint64_t align_up(uint64_t v)
{
	return (v + (EH_RING_ALIGN - 1)) & ~(uint64_t)(EH_RING_ALIGN - 1);
}

int eh_ring_init(struct eh_ring *ring, size_t bytes, uint64_t max_records)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	uint64_t size = 4096;

	/* Before the ring exists, so before any thread can use it: every
	 * user of any ring sees the same eh_ring_membarrier. */
	pthread_once(&once, membarrier_register);
	memset(ring, 0, sizeof(*ring));
	while (size < bytes) {
		if (size > (UINT64_MAX >> 2)) {
			errno = EINVAL;
			return -1;
		}
		size <<= 1;
	}
	ring->buf = aligned_alloc(64, size);
	if (!ring->buf) {
		errno = ENOMEM;
		return -1;
	}
	ring->size = size;
	ring->mask = size - 1;
	ring->max_records = max_records ? max_records : UINT64_MAX;
	/* A quarter of the ring: a record that large still leaves room for
	 * smaller ones and the worst-case padding at the wrap. */
	ring->max_record = size / 4 - EH_RING_HDR;
	if (ring->max_record > UINT32_MAX)
		ring->max_record = UINT32_MAX;
	return 0;
}

void eh_ring_destroy(struct eh_ring *ring)
{
	free(ring->buf);
	ring->buf = NULL;
}

static void write_hdr(uint8_t *at, uint32_t len)
{
	memcpy(at, &len, sizeof(len));
}

/* The head position below which eh_ring_reserve_sp needs none of the work
 * below, from the state seen at head (the head before this reserve, so that
 * the bound holds whether or not the record is published). */
static uint64_t fast_end(const struct eh_ring *ring, uint64_t head)
{
	uint64_t lap_end = (head | ring->mask) + 1; /* 0 in the last lap */
	uint64_t room_end = ring->tail_seen + ring->size;
	/* The rewind check is skipped while head is below next_rewind_try or
	 * in the buffer's first quarter. */
	uint64_t quarter = lap_end - ring->size + ring->size / 4;
	uint64_t rewind_end = ring->next_rewind_try > quarter ? ring->next_rewind_try : quarter;
	uint64_t end = lap_end < room_end ? lap_end : room_end;

	return end < rewind_end ? end : rewind_end;
}

void *eh_ring_reserve_slow_sp(struct eh_ring *ring, size_t len)
{
	uint64_t start;
	uint64_t need, head, pos, to_end, total, used;
	bool need_rewind = false;

	if (len > ring->max_record)
		return NULL;
	/* The consumer's count is read only when the cached one says full:
	 * reading its line on every push costs a cache miss per event while
	 * the consumer is busy on another CPU. acquire: pairs with the
	 * consumer's release of records_out. */
	if (atomic_load_explicit(&ring->records_in, memory_order_relaxed) - ring->out_seen >= ring->max_records) {
		ring->out_seen = atomic_load_explicit(&ring->records_out, memory_order_acquire);
		if (atomic_load_explicit(&ring->records_in, memory_order_relaxed) - ring->out_seen >= ring->max_records)
			return NULL;
	}
	need = align_up(EH_RING_HDR + (uint64_t)len);
	head = start = atomic_load_explicit(&ring->head, memory_order_relaxed);
	pos = head & ring->mask;
	to_end = ring->size - pos;
	total = need <= to_end ? need : to_end + need;
	used = head - ring->tail_seen;
	if (ring->size - used < total) {
		/* acquire: the consumer finished reading what it freed. */
		ring->tail_seen = atomic_load_explicit(&ring->tail, memory_order_acquire);
		used = head - ring->tail_seen;
		if (ring->size - used < total)
			return NULL;
	}
	if (pos >= ring->size / 4 + need && head >= ring->next_rewind_try && to_end - EH_RING_HDR < PAD_FLAG) {
		/* Keep an often-empty ring in its first quarter: once the head
		 * is past it and the consumer has caught up, pad to the end so
		 * this record starts at offset 0. Otherwise every page of the
		 * buffer becomes resident as the head walks round, and a drained
		 * ring costs queue_bytes of memory. The pad counts as used until
		 * the consumer skips it, so the ring holds only pos - need more
		 * bytes meanwhile: the threshold keeps that above a quarter of
		 * the ring. The consumer's line is read at most once per 4 KiB
		 * of records. acquire: as above. */
		ring->next_rewind_try = head + 4096;
		ring->tail_seen = atomic_load_explicit(&ring->tail, memory_order_acquire);
		need_rewind = ring->tail_seen == head;
	}
	if (need > to_end || need_rewind) {
		write_hdr(ring->buf + pos, PAD_FLAG | (uint32_t)(to_end - EH_RING_HDR));
		head += to_end;
		pos = 0;
	}
	write_hdr(ring->buf + pos, (uint32_t)len);
	ring->head_pending = head + need;
	ring->fast_end = fast_end(ring, start);
	return ring->buf + pos + EH_RING_HDR;
}

static long futex(_Atomic uint32_t *word, int op, uint32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, (uint32_t *)word, op, val, ts, NULL, 0);
}

void eh_ring_wake(struct eh_ring *ring)
{
	atomic_fetch_add_explicit(&ring->wake_word, 1, memory_order_release);
	futex(&ring->wake_word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
}

void eh_ring_commit_sp(struct eh_ring *ring)
{
	eh_ring_publish_sp(ring);
	eh_ring_fence_sp();
	eh_ring_notify_sp(ring);
}

size_t eh_ring_peek_sc(struct eh_ring *ring, struct eh_ring_rec *out, size_t max)
{
	uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_relaxed);
	/* acquire: pairs with the producer's release of head. */
	uint64_t head = atomic_load_explicit(&ring->head, memory_order_acquire);
	size_t n = 0;

	while (tail != head && n < max) {
		uint32_t hdr;
		uint64_t pos = tail & ring->mask;

		memcpy(&hdr, ring->buf + pos, sizeof(hdr));
		if (hdr & PAD_FLAG) {
			tail += EH_RING_HDR + (hdr & ~PAD_FLAG);
			continue;
		}
		out[n].data = ring->buf + pos + EH_RING_HDR;
		out[n].len = hdr;
		tail += align_up(EH_RING_HDR + (uint64_t)hdr);
		out[n].end = tail;
		n++;
	}
	return n;
}

void eh_ring_release_sc(struct eh_ring *ring, const struct eh_ring_rec *last, size_t count)
{
	if (!count)
		return;
	/* release: our reads of the freed bytes happen-before the producer
	 * reuses them. */
	atomic_store_explicit(&ring->tail, last->end, memory_order_release);
	atomic_fetch_add_explicit(&ring->records_out, count, memory_order_release);
}

/* Consumer, between announcing sleep and looking at records_in: orders
 * the two, and pairs with eh_ring_fence_sp, which follows the producer's
 * records_in store. False when membarrier failed once registered (a
 * seccomp filter installed since could do it; the error is kept for the
 * log): the producers' fences are compiler barriers, and may stay so, so
 * sleeping now could miss a commit and the caller naps unannounced. */
static bool barrier_before_sleep(void)
{
	int none = 0;

	if (!eh_ring_membarrier) {
		eh_ring_full_fence();
		return true;
	}
	if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0)
		return true;
	atomic_compare_exchange_strong_explicit(&eh_ring_membarrier_errno, &none, errno ? errno : EINVAL,
						memory_order_relaxed, memory_order_relaxed);
	return false;
}

void eh_ring_wait_more_sc(struct eh_ring *ring, uint64_t have, int timeout_ms)
{
	struct timespec ts = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L };
	uint32_t word = atomic_load_explicit(&ring->wake_word, memory_order_acquire);

	atomic_store_explicit(&ring->sleeping, 1, memory_order_relaxed);
	if (!barrier_before_sleep()) {
		struct timespec nap = { 0, EH_RING_NAP_US * 1000L };

		atomic_store_explicit(&ring->sleeping, 0, memory_order_relaxed);
		nanosleep(&nap, NULL);
		return;
	}
	if (atomic_load_explicit(&ring->records_in, memory_order_relaxed)
	    - atomic_load_explicit(&ring->records_out, memory_order_relaxed) <= have)
		futex(&ring->wake_word, FUTEX_WAIT_PRIVATE, word, timeout_ms >= 0 ? &ts : NULL);
	atomic_store_explicit(&ring->sleeping, 0, memory_order_relaxed);
}

void eh_ring_wait_sc(struct eh_ring *ring, int timeout_ms)
{
	eh_ring_wait_more_sc(ring, 0, timeout_ms);
}

void eh_ring_idle_sc(struct eh_ring *ring, unsigned *naps, int sleep_timeout_ms)
{
	struct timespec ts = { 0, EH_RING_NAP_US * 1000L };

	if (*naps < EH_RING_NAPS_BEFORE_SLEEP) {
		(*naps)++;
		nanosleep(&ts, NULL);
		return;
	}
	eh_ring_wait_sc(ring, sleep_timeout_ms);
}

uint64_t eh_ring_count(const struct eh_ring *ring)
{
	struct eh_ring *r = (struct eh_ring *)ring;
	/* Read out before in: a concurrent commit can only make the result
	 * larger than the true count at the moment of the out read, never
	 * negative. */
	uint64_t out = atomic_load_explicit(&r->records_out, memory_order_acquire);
	uint64_t in = atomic_load_explicit(&r->records_in, memory_order_acquire);

	return in - out;
}
