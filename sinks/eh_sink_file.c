/*
 * File sink: one JSON object per line, appended. Each batch is written with
 * as few write calls as possible; lines are whole or absent unless the disk
 * fills mid-line. Then the sink retries, and the retry starts with a newline
 * so that the torn fragment stays a line of its own before the complete
 * copy. SIGHUP reopens the path, so logrotate's rename-and-HUP works; with
 * file_fsync each batch is fsync'ed before it counts as delivered, and a
 * batch whose fsync fails counts as failed.
 *
 * A path that is not a regular file (a FIFO, /dev/stdout on a pipe, a
 * terminal) is written without ever blocking for good: its reader may stop
 * reading, and a write blocked in the kernel would hold the sink thread,
 * and so the broker's shutdown, for as long as it does. Such a file is
 * written with O_NONBLOCK and the sink waits for room with poll() in short
 * slices, until the line is whole or the shutdown deadline has passed. The
 * path is opened with O_NONBLOCK in every case, since opening a FIFO for
 * writing otherwise waits for a reader; a FIFO that nobody has open yet
 * fails with ENXIO, and the sink keeps its events queued and tries again.
 * Regular files are written exactly as before, with blocking writes.
 *
 * A regular file is opened at start to check the path and create the file,
 * closed, and opened again by the sink's thread at its first event, so that
 * the thread holds no descriptor of the broker's thread and can take a
 * descriptor table of its own (eh_sink_set_own_files). Other files stay
 * open from the start: closing a FIFO would give its reader an end of file.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mosquitto.h>

#include "eh_sinks.h"

/* How long a pipe or device may take nothing before the sink says so, and
 * the longest single wait in poll: a stop request is seen within a slice,
 * since its deadline is only known once the broker stops. */
#define STALL_LOG_MS 5000
#define WAIT_SLICE_MS 100

/* open_file: a FIFO (or a pipe reached through /dev/stdout) that no process
 * has open for reading. */
#define NO_READER 1

struct file_sink {
	struct eh_sink *sink;
	const struct eh_node *node;
	char *path;
	char shown[EH_QUOTE_LEN]; /* path as log lines quote it */
	/* -1 until the path opens: a FIFO that nobody reads yet, a regular
	 * file until the thread's first event */
	int fd;
	/* fd is not a regular file: its own open file description is in
	 * O_NONBLOCK mode (the broker's stdout, say, keeps its flags: opening
	 * /dev/stdout makes a new description) and deliver waits with poll. */
	bool nonblocking;
	uint64_t open_failures; /* eh_sink_log_due counter, open_late */
	bool no_reader_said;    /* a FIFO without a reader was logged */
	bool fsync_each;
	int mode;
	struct eh_buf out; /* the batch's lines */
	bool failing; /* write errors, said once until a write succeeds */
	bool stalled;  /* a pipe took nothing for STALL_LOG_MS, said once likewise */
	/* Our last write to this fd stopped inside a line (disk full). The
	 * next write starts with a newline. We do not ftruncate the fragment
	 * away instead: with O_APPEND another process (a second broker,
	 * logrotate's copytruncate) may have appended or truncated since, so
	 * an offset remembered by us can cut their lines or extend the file
	 * with zeros, and a pipe or device cannot be truncated at all. */
	bool torn;
	bool fsync_unsupported_said; /* for this fd */
	uint64_t fsync_failures;     /* eh_sink_log_due counter */
};

static const struct eh_option file_options[] = {
	{ "file_path", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "Enables the file sink: events are appended to this file as JSON lines. The broker's user needs "
	  "write access; the file is created if missing and reopened on SIGHUP." },
	{ "file_fsync", EH_OPT_BOOL, "false", 0, 0, NULL, 0,
	  "fsync the file after each batch before counting it delivered (survives power loss; slower). A "
	  "batch whose fsync fails counts as failed and is not retried (it is in the file already); on a "
	  "file that cannot be synced (/dev/null, a pipe) this option has no effect." },
	{ "file_mode", EH_OPT_STRING, "0640", 0, 0, NULL, 0, "Permissions (octal) of a newly created file." },
	{ "file_batch_max", EH_OPT_INT, "512", 1, 65536, NULL, 0, "Events written per write call at most." },
	EH_SINK_FILTER_OPTIONS("file"),
	{ NULL, 0, NULL, 0, 0, NULL, 0, NULL },
};

static bool same_file(int a, int b)
{
	struct stat sa, sb;

	return !fstat(a, &sa) && !fstat(b, &sb) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Opens the path for appending, never blocking: O_NONBLOCK makes open()
 * of a FIFO without a reader fail with ENXIO at once instead of waiting on
 * the broker thread (at start) or the sink thread (at reload) until one
 * comes. A regular file then gets its blocking mode back. Returns 0, -1
 * with err set, or NO_READER with err saying so. */
static int open_file(struct file_sink *f, char *err, size_t errlen)
{
	int fd = open(f->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, f->mode);
	struct stat st;
	bool nonblocking;
	int flags;

	if (fd < 0) {
		int e = errno;

		if (e == ENXIO && !stat(f->path, &st) && S_ISFIFO(st.st_mode)) {
			snprintf(err, errlen, "'%s' is a FIFO that no process has open for reading", f->shown);
			return NO_READER;
		}
		snprintf(err, errlen, "plugin_opt_file_path: cannot open '%s': %s", f->shown, strerror(e));
		return -1;
	}
	if (fstat(fd, &st)) {
		snprintf(err, errlen, "plugin_opt_file_path: cannot stat '%s': %s", f->shown, strerror(errno));
		close(fd);
		return -1;
	}
	nonblocking = !S_ISREG(st.st_mode);
	if (!nonblocking && ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK))) {
		snprintf(err, errlen, "plugin_opt_file_path: cannot make '%s' blocking: %s", f->shown,
			 strerror(errno));
		close(fd);
		return -1;
	}
	if (f->fd >= 0) {
		/* A torn fragment left in a rotated-away file needs no newline
		 * in the new one; reopening the same file keeps it torn. */
		if (!same_file(f->fd, fd)) {
			f->torn = false;
			f->fsync_unsupported_said = false;
		}
		close(f->fd);
	}
	f->fd = fd;
	f->nonblocking = nonblocking;
	return 0;
}

/* Whether fsync's errno means "this kind of file cannot be synced" (fsync(2):
 * a pipe, a socket, a character device such as /dev/null) rather than "the
 * data may not be on the disk" (EIO, ENOSPC, EDQUOT). */
static bool fsync_unsupported(int err)
{
	return err == EINVAL || err == EROFS;
}

static void file_destroy(void *ctx)
{
	struct file_sink *f = ctx;

	if (!f)
		return;
	if (f->fd >= 0)
		close(f->fd);
	free(f->path);
	eh_buf_free(&f->out);
	free(f);
}

static void say_no_reader(struct file_sink *f, const char *why)
{
	eh_sink_log(f->sink, MOSQ_LOG_WARNING, "%s yet; its events wait in the queue, and the sink tries again "
		    "with backoff (up to 5 s) until a reader opens it", why);
	f->no_reader_said = true;
}

static int file_create(const struct eh_sink_env *env, void **ctx, char *err, size_t errlen)
{
	struct file_sink *f = calloc(1, sizeof(*f));
	const char *mode = eh_config_get(env->config, "file_mode");
	char *end;
	long m;
	int rc;

	*ctx = f;
	if (!f) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	f->fd = -1;
	f->sink = env->sink;
	f->node = env->node;
	f->fsync_each = eh_config_bool(env->config, "file_fsync");
	m = strtol(mode, &end, 8);
	if (*end || m < 0 || m > 07777) {
		snprintf(err, errlen, "plugin_opt_file_mode: '%s' is not an octal mode such as 0640", mode);
		return -1;
	}
	f->mode = (int)m;
	f->path = strdup(eh_config_get(env->config, "file_path"));
	if (!f->path) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	eh_quote(f->shown, sizeof(f->shown), f->path);
	rc = open_file(f, err, errlen);
	if (rc < 0)
		return -1;
	if (rc == 0 && !f->nonblocking) {
		close(f->fd);
		f->fd = -1;
		eh_sink_set_own_files(env->sink);
	}
	if (rc == NO_READER)
		say_no_reader(f, err);
	eh_sink_set_batching(env->sink, (size_t)eh_config_int(env->config, "file_batch_max"), 0);
	eh_sink_set_retry(env->sink, 100, 5000, -1);
	return 0;
}

/* Sink thread, from deliver while fd is -1: opens a regular file for the
 * thread, or a FIFO that had no reader at start. Not the open hook: a sink
 * with one gets its thread when the broker starts, and the file sink's
 * waits for its first event (starts_at_first_event in eh_core.c). Until it
 * opens, deliver answers RETRY and the runner's backoff paces the
 * attempts. */
static int open_late(struct file_sink *f)
{
	char err[512];
	int rc = open_file(f, err, sizeof(err));

	if (rc == 0) {
		if (f->nonblocking)
			eh_sink_log(f->sink, MOSQ_LOG_NOTICE, "'%s' has a reader; writing", f->shown);
		else if (f->open_failures)
			eh_sink_log(f->sink, MOSQ_LOG_NOTICE, "'%s' opened; writing", f->shown);
		return 0;
	}
	if (rc < 0 && eh_sink_log_due(&f->open_failures))
		eh_sink_log(f->sink, MOSQ_LOG_WARNING, "%s; trying again", err);
	/* once: at start, or here for a regular file at start that a FIFO
	 * has replaced since */
	if (rc == NO_READER && !f->no_reader_said)
		say_no_reader(f, err);
	return -1;
}

/* Sink thread, when a write to a pipe or device would block: waits until it
 * takes more. Returns 0 to write again (room, or an error that the write
 * will report), -1 once the shutdown deadline has passed. */
static int wait_writable(struct file_sink *f, int64_t last_progress_ms)
{
	for (;;) {
		struct pollfd p = { .fd = f->fd, .events = POLLOUT };
		int64_t now = eh_now_ms(), deadline = eh_sink_deadline_ms(f->sink);
		int64_t slice = WAIT_SLICE_MS;

		if (now >= deadline)
			return -1;
		if (deadline - now < slice)
			slice = deadline - now;
		if (!f->stalled && now - last_progress_ms >= STALL_LOG_MS) {
			eh_sink_log(f->sink, MOSQ_LOG_WARNING,
				    "'%s' has taken nothing for %d s (is its reader reading?); waiting", f->shown,
				    STALL_LOG_MS / 1000);
			f->stalled = true;
		}
		/* POLLERR (no reader left) and POLLHUP count as ready: the
		 * write then fails with EPIPE and is retried with backoff. */
		if (poll(&p, 1, (int)slice) != 0)
			return 0;
	}
}

static enum eh_deliver_rc file_deliver(void *ctx, struct eh_batch *b)
{
	struct file_sink *f = ctx;
	size_t len = 0, written = 0;
	int64_t last_progress;
	size_t *ends;

	if (f->fd < 0 && open_late(f))
		return EH_DELIVER_RETRY;
	ends = calloc(b->count, sizeof(*ends));
	if (!ends)
		goto no_memory;
	f->out.len = 0;
	if (f->torn && eh_buf_append(&f->out, "\n", 1))
		goto no_memory;
	for (size_t i = 0; i < b->count; i++) {
		if (eh_json_write_event(&f->out, &b->events[i], f->node) || eh_buf_append(&f->out, "\n", 1))
			goto no_memory;
		ends[i] = f->out.len;
	}
	len = f->out.len;
	last_progress = eh_now_ms();
	while (written < len) {
		ssize_t w = write(f->fd, f->out.data + written, len - written);

		if (w < 0 && errno == EINTR)
			continue;
		/* A pipe with no room: wait for it rather than retry the batch,
		 * which would have to start on a new line. Whatever is still
		 * unwritten at the shutdown deadline stays in the queue and is
		 * counted left. */
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && f->nonblocking) {
			if (!wait_writable(f, last_progress))
				continue;
			eh_sink_log(f->sink, MOSQ_LOG_WARNING,
				    "'%s' took no more data before the shutdown deadline; what is "
				    "not written is counted left", f->shown);
			goto partial;
		}
		if (w <= 0) {
			const char *why = w < 0 ? strerror(errno) : "nothing written";

			if (!f->failing)
				eh_sink_log(f->sink, MOSQ_LOG_WARNING, "cannot write '%s': %s; retrying", f->shown, why);
			f->failing = true;
			goto partial;
		}
		written += (size_t)w;
		last_progress = eh_now_ms();
	}
	free(ends);
	f->torn = false;
	if (f->failing || f->stalled)
		eh_sink_log(f->sink, MOSQ_LOG_NOTICE, "writing '%s' again", f->shown);
	f->failing = false;
	f->stalled = false;
	if (f->fsync_each && fsync(f->fd)) {
		int err = errno;

		if (fsync_unsupported(err)) {
			if (!f->fsync_unsupported_said)
				eh_sink_log(f->sink, MOSQ_LOG_NOTICE, "file_fsync has no effect on '%s': %s",
					    f->shown, strerror(err));
			f->fsync_unsupported_said = true;
			return EH_DELIVER_OK;
		}
		/* The lines may or may not be on the disk (and Linux reports a
		 * writeback error only once), so the batch counts as failed;
		 * it is not retried, because it is in the file already and a
		 * retry would duplicate it whenever the data did survive. */
		if (eh_sink_log_due(&f->fsync_failures))
			eh_sink_log(f->sink, MOSQ_LOG_WARNING,
				    "fsync '%s': %s; %zu event(s) counted failed (written, maybe not on disk)",
				    f->shown, strerror(err), b->count);
		b->done = 0;
		return EH_DELIVER_DROP;
	}
	return EH_DELIVER_OK;
partial:
	if (written)
		f->torn = f->out.data[written - 1] != '\n';
	b->done = 0;
	while (b->done < b->count && ends[b->done] <= written)
		b->done++;
	free(ends);
	return EH_DELIVER_RETRY;
no_memory:
	free(ends);
	return eh_sink_out_of_memory(f->sink, "a batch's JSON lines");
}

static void file_reload(void *ctx)
{
	struct file_sink *f = ctx;
	char err[512];

	/* Before the first open (a FIFO without a reader) deliver keeps
	 * trying and says what happens; a failure here needs no line. */
	if (open_file(f, err, sizeof(err)) && f->fd >= 0)
		eh_sink_log(f->sink, MOSQ_LOG_WARNING, "%s; still writing the previous file", err);
}

static uint64_t file_flush(void *ctx, int64_t timeout_ms)
{
	struct file_sink *f = ctx;

	(void)timeout_ms;
	if (f->fd >= 0)
		fsync(f->fd);
	return 0;
}

static void file_close(void *ctx)
{
	struct file_sink *f = ctx;

	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
}

const struct eh_sink_ops eh_sink_file_ops = {
	.name = "file",
	.enable_key = "file_path",
	.options = file_options,
	.title = "File sink",
	.create = file_create,
	.deliver = file_deliver,
	.reload = file_reload,
	.flush = file_flush,
	.close = file_close,
	.destroy = file_destroy,
};
