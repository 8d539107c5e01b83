/*
 * eh_runner: the thread behind every sink (see eh_runner.c for what it
 * owns). The core starts one per sink instance after create, asks it to
 * stop with a drain deadline at cleanup, and joins it before destroy.
 */
#ifndef EH_RUNNER_H
#define EH_RUNNER_H

#include <stdint.h>

struct eh_sink;

/* broker thread: starts the sink's thread. Returns 0, or -1 with errno. */
int eh_runner_start(struct eh_sink *s);
/* broker thread: asks the thread to deliver what it can until deadline_ms
 * (eh_now_ms clock) and then stop; wakes it if it sleeps or backs off, and
 * calls the sink's wake hook for a deliver that waits inside the sink. */
void eh_runner_request_stop(struct eh_sink *s, int64_t deadline_ms);
/* any thread: wakes the thread from an idle wait or a retry backoff, so
 * that it looks at its stop and reload requests now. */
void eh_runner_wake(struct eh_sink *s);
/* broker thread: waits for the thread to end; a no-op if not started. */
void eh_runner_join(struct eh_sink *s);
/* broker thread: the same, but gives up at until_ms (eh_now_ms clock).
 * Returns 0 once the thread has ended (or never started), -1 while it
 * still runs. */
int eh_runner_join_until(struct eh_sink *s, int64_t until_ms);

/* any thread (pure): how long to wait before the next attempt of a batch
 * that has failed for elapsed_ms, given the jittered backoff, the server's
 * retry_after_ms (-1: none) and the give-up budget (-1: none). Returns the
 * delay, never more than what is left of the budget, or, when the batch is
 * to be given up now, EH_RETRY_SPENT (nothing is left) or EH_RETRY_TOO_LATE
 * (the server asked to wait longer than what is left). */
#define EH_RETRY_SPENT (-1)
#define EH_RETRY_TOO_LATE (-2)
int64_t eh_runner_retry_delay(int64_t elapsed_ms, int64_t budget_ms, int64_t backoff_ms, int64_t retry_after_ms);

#endif
