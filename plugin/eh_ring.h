/*
 * eh_ring: a bounded single-producer single-consumer ring of variable-size
 * records in one preallocated buffer.
 *
 * The broker thread is the only producer of a sink's ring and the sink's
 * thread its only consumer, so two monotonic byte counters (head written by
 * the producer, tail by the consumer) are all the synchronisation needed.
 * Records are 8-byte aligned and never split: a record that would cross the
 * end of the buffer is preceded by a padding record that fills the end; so
 * is the first record after the consumer caught up, once the head is past
 * the first quarter of the buffer, which keeps the resident memory of an
 * often-empty ring to that quarter (or its high-water mark) instead of the
 * whole buffer.
 * Capacity is limited twice, in bytes and in records, and a push that does
 * not fit fails at once: the caller drops and counts, it never waits.
 *
 * The consumer can sleep on an empty ring; the producer wakes it with a
 * futex only when the consumer announced it is sleeping, so a busy ring
 * costs no system call per record. Where the kernel offers membarrier's
 * private expedited command, the producer's half of that handshake is not
 * a processor fence either: the consumer, on its rare way to sleep, makes
 * every running thread of the process pass a full barrier instead.
 */
#ifndef EH_RING_H
#define EH_RING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define EH_RING_ALIGN 8u
#define EH_RING_HDR 8u

struct eh_ring {
	/* Producer line: head is published with release after the record is
	 * written; tail_seen caches the consumer's tail to avoid touching the
	 * consumer's cache line on every push. */
	_Alignas(64) _Atomic uint64_t head;
	uint64_t head_pending;
	uint64_t tail_seen;
	uint64_t next_rewind_try; /* head position of the next rewind check */
	/* Below this head position a record needs none of the slow path's
	 * work: it fits in the room tail_seen shows, before the buffer's end,
	 * and no rewind check is due. 0 until the first reserve. */
	uint64_t fast_end;
	_Atomic uint64_t records_in; /* written by the producer only */
	uint64_t out_seen;           /* cached records_out, like tail_seen */

	/* Consumer line: tail is published with release after the consumer is
	 * done reading the bytes it frees. */
	_Alignas(64) _Atomic uint64_t tail;
	_Atomic uint64_t records_out;

	/* Wake-up line: sleeping is set by the consumer before it waits on
	 * wake_word; the producer bumps wake_word and calls futex only if set. */
	_Alignas(64) _Atomic uint32_t sleeping;
	_Atomic uint32_t wake_word;

	_Alignas(64) uint8_t *buf;
	uint64_t size;       /* bytes, a power of two */
	uint64_t mask;
	uint64_t max_records;
	uint64_t max_record; /* largest payload a single record may hold */
};

/* One readable record handed to the consumer; data stays valid until the
 * consumer releases past end. */
struct eh_ring_rec {
	const void *data;
	uint32_t len;
	uint64_t end;
};

/* True once the process is registered for membarrier's private expedited
 * barriers (by the first eh_ring_init, before any thread can use a ring);
 * never false again. Read by eh_ring_fence_sp and the sleeping consumer. */
extern bool eh_ring_membarrier;
/* The errno of the first membarrier call that failed after registration,
 * 0 while none did. From then on the consumers that would sleep nap for
 * 1 ms at a time instead; eh_core_tick says so in the broker log. */
extern _Atomic int eh_ring_membarrier_errno;

/* Any thread, before use. bytes is rounded up to a power of two (min 4 KiB).
 * Returns 0, or -1 with errno set (ENOMEM). */
int eh_ring_init(struct eh_ring *ring, size_t bytes, uint64_t max_records);
/* Any thread, after both sides stopped. Tolerates a zeroed ring. */
void eh_ring_destroy(struct eh_ring *ring);

void *eh_ring_reserve_slow_sp(struct eh_ring *ring, size_t len);

/* Producer thread. Returns a pointer to len writable bytes, or NULL when the
 * ring has no room (in bytes or records) or len exceeds max_record (which
 * is at most UINT32_MAX, so any len may be asked for).
 * Nothing is visible to the consumer until eh_ring_commit_sp. Inline: the
 * usual record, which neither wraps nor finds the ring full, costs a few
 * compares on the broker's hot path. */
static inline void *eh_ring_reserve_sp(struct eh_ring *ring, size_t len)
{
	uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
	uint64_t need = ((uint64_t)len + EH_RING_HDR + EH_RING_ALIGN - 1) & ~(uint64_t)(EH_RING_ALIGN - 1);

	/* (head < fast_end: in the last lap before the counters wrap at 2^64
	 * the bound is 0 and every record takes the full algorithm) */
	if (head + need <= ring->fast_end && head < ring->fast_end && len <= ring->max_record
	    && atomic_load_explicit(&ring->records_in, memory_order_relaxed) - ring->out_seen < ring->max_records) {
		uint8_t *at = ring->buf + (head & ring->mask);
		uint32_t len32 = (uint32_t)len;

		memcpy(at, &len32, sizeof(len32));
		ring->head_pending = head + need;
		return at + EH_RING_HDR;
	}
	return eh_ring_reserve_slow_sp(ring, len);
}
/* Producer thread: publishes the reserved record and wakes a sleeping
 * consumer. */
void eh_ring_commit_sp(struct eh_ring *ring);
/* Any thread: wakes a sleeping consumer (used to deliver a stop request,
 * and by eh_ring_notify_sp). */
void eh_ring_wake(struct eh_ring *ring);

/* The same as eh_ring_commit_sp in three parts, for a producer that fills
 * several rings per item: publish each, then one eh_ring_fence_sp, then
 * notify each. One fence instead of one per ring; the fence must separate
 * every publish from every notify. Inline: they are a few instructions on
 * the broker's hot path. */
static inline void eh_ring_publish_sp(struct eh_ring *ring)
{
	atomic_store_explicit(&ring->records_in,
			      atomic_load_explicit(&ring->records_in, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	/* release: the record's bytes happen-before the consumer reads head. */
	atomic_store_explicit(&ring->head, ring->head_pending, memory_order_release);
}

/* Either side of the wake-up handshake without membarrier: a processor
 * fence. */
static inline void eh_ring_full_fence(void)
{
#ifdef __SANITIZE_THREAD__
	/* gcc refuses a fence under ThreadSanitizer, which models none; on x86
	 * a locked exchange fences the same. A test build only: the word's
	 * line would travel between the threads. */
	static _Atomic int word;

	atomic_exchange_explicit(&word, 0, memory_order_seq_cst);
#else
	atomic_thread_fence(memory_order_seq_cst);
#endif
}

/* Producer thread, between publishing and notifying: orders the head and
 * records_in stores before the sleeping load, against the consumer's
 * barrier in eh_ring_wait_more_sc. With membarrier that barrier reaches
 * this thread wherever it is, so a compiler barrier is enough here; a
 * processor fence (a locked instruction on x86) waits for the record's
 * stores to leave the store buffer: in a profile of the broker thread, two
 * thirds of eh_core_emit's own time (docs/performance.md). */
static inline void eh_ring_fence_sp(void)
{
	if (eh_ring_membarrier)
		atomic_signal_fence(memory_order_seq_cst);
	else
		eh_ring_full_fence();
}

static inline void eh_ring_notify_sp(struct eh_ring *ring)
{
	if (atomic_load_explicit(&ring->sleeping, memory_order_relaxed))
		eh_ring_wake(ring);
}

/* Consumer thread: fills up to max records in order without consuming them.
 * Returns how many were filled. */
size_t eh_ring_peek_sc(struct eh_ring *ring, struct eh_ring_rec *out, size_t max);
/* Consumer thread: frees the first count records peeked, the last of which
 * is last. */
void eh_ring_release_sc(struct eh_ring *ring, const struct eh_ring_rec *last, size_t count);
/* Consumer thread: sleeps until a record is committed, eh_ring_wake is
 * called, or timeout_ms passes. Returns at once if the ring is not empty. */
void eh_ring_wait_sc(struct eh_ring *ring, int timeout_ms);
/* Consumer thread: the same, but sleeps while the ring holds no more than
 * have records (to wait for a batch to fill). Returns at once if it
 * already holds more. */
void eh_ring_wait_more_sc(struct eh_ring *ring, uint64_t have, int timeout_ms);

/* Consumer thread, on finding the ring empty: naps EH_RING_NAP_US, and
 * after EH_RING_NAPS_BEFORE_SLEEP naps in a row sleeps as eh_ring_wait_sc.
 * *naps counts the naps; the caller zeroes it when it finds a record.
 * Napping is not announced to the producer, so while records keep coming
 * at least every ~20 ms the producer never makes a wake-up system call;
 * the price is up to 1 ms more latency and ~1000 cheap wake-ups/s of the
 * consumer for 20 ms after the last record. (Announced sleeping cost a
 * FUTEX_WAKE on the broker thread for 0.3 to 0.6 of all events under
 * load: bench/wakeups.py.) */
#define EH_RING_NAP_US 1000
#define EH_RING_NAPS_BEFORE_SLEEP 20
void eh_ring_idle_sc(struct eh_ring *ring, unsigned *naps, int sleep_timeout_ms);

/* Any thread: records committed and not yet released (a snapshot). */
uint64_t eh_ring_count(const struct eh_ring *ring);

#endif
