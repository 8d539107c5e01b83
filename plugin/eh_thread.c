/*
 * eh_thread: see eh_thread.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "eh_thread.h"

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The system call rather than glibc's wrapper (2.34): the flag is the
 * kernel's, and older C libraries would otherwise build without it. */
#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

int eh_thread_own_files(void)
{
#ifdef SYS_close_range
	/* With the whole range above 2 closed, the kernel copies only the
	 * descriptors below 3 into the new table. */
	return (int)syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_UNSHARE);
#else
	errno = ENOSYS;
	return -1;
#endif
}
