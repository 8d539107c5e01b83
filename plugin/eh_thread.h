/*
 * eh_thread: the start of every thread the plugin owns.
 */
#ifndef EH_THREAD_H
#define EH_THREAD_H

/* Calling thread, first thing: leaves the descriptor table it shares for
 * a table of its own that holds only descriptors 0 to 2; the thread's
 * later opens go there, and threads it creates share it. For a thread that
 * uses no descriptor another thread opened and none of whose descriptors
 * another thread touches.
 *
 * Why: Linux takes and drops a reference on the open file in every read,
 * write, epoll_ctl, ... whose table other threads share, and skips it when
 * the table is the caller's alone. The broker's thread makes dozens of such
 * calls per client; sharing its table with one sleeping thread costs it
 * 2.5 to 5 % more CPU per connection cycle (bench/paired_cpu.py,
 * docs/performance.md, "Threads with descriptor tables of their own").
 *
 * The table is copied without the descriptors from 3 up (close_range with
 * CLOSE_RANGE_UNSHARE, Linux 5.9), so the thread never holds one of the
 * broker's sockets, even for a moment; 0 to 2 are copied (a broker started
 * with one of them closed could have a socket there, kept open by the copy
 * until the thread ends). On a table nobody else shares, the call closes
 * every descriptor from 3 up in place: never call it from the broker's
 * thread. Returns 0, or -1 with errno set (ENOSYS before Linux 5.9, EPERM
 * under a seccomp filter): the thread then shares the table as before,
 * which costs speed only.
 *
 * ThreadSanitizer tracks descriptors by number across the process, so two
 * tables' same number opened and used at once reads there as a race. */
int eh_thread_own_files(void);

#endif
