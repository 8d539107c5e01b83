/*
 * loadgen: an MQTT 3.1.1 load generator for the benchmarks (bench/run.sh).
 *
 * One thread, one epoll set, many non-blocking connections in flight, and
 * packets encoded by hand, so that the generator spends far less CPU per
 * cycle than the broker (run.sh prints both CPU times to prove it). Each
 * connection repeats a cycle:
 *
 *   connect, CONNECT/CONNACK, SUBSCRIBE/SUBACK,
 *   [publish mode: N x PUBLISH (QoS 0, or QoS 1 pipelined and all PUBACKed)],
 *   UNSUBSCRIBE/UNSUBACK, DISCONNECT, then wait for the broker to close.
 *
 * Waiting for the broker's close makes a cycle end only once the broker has
 * processed the whole session (and captured its client.disconnected). Every
 * cycle uses a new client id (<prefix>-<slot>-<n>) so no cycle takes over
 * another's session. A client subscribes to a topic nobody publishes to and
 * publishes to one nobody subscribes to: the load is the broker's
 * per-client and per-message work, not fan-out.
 *
 * Latency probes (for the end-to-end latency of a sink): -L <filter> opens one
 * more connection subscribed to the local sink's topic, or with -b <port> to
 * the topic the MQTT sink publishes to on another broker; -F <path> follows
 * the file sink's output with inotify. Both read the event's "ts" (wall clock
 * milliseconds at capture) and compare it with the wall clock at arrival.
 * They keep the events captured inside the measured window; probes outside
 * this process (an HTTP receiver, a Kafka consumer) do the same with the
 * window's wall-clock bounds printed in RESULT.
 *
 * Output: a human line and one line "RESULT key=value ..." for scripts.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum state {
	S_IDLE,
	S_CONNECTING,
	S_CONNACK,
	S_SUBACK,
	S_PUBACK,
	S_UNSUBACK,
	S_CLOSING,
	S_PROBE, /* latency subscriber, never cycles */
};

#define OUT_CAP 65536 /* the smallest output buffer; publish mode sizes it to one cycle */
#define PAYLOAD_MAX (256u << 10)
#define IN_CAP 4096
#define PROBE_IN_CAP (1u << 20)

struct conn {
	int fd;
	enum state state;
	unsigned slot;
	uint64_t n;          /* cycles started by this slot */
	unsigned acks_left;
	bool want_out;
	bool shut_after_flush;
	int64_t started_us;
	char id[96];
	char *out;
	size_t out_len, out_off;
	uint8_t *in;
	size_t in_len, in_cap;
	struct conn *idle_next;
};

struct opts {
	const char *host;
	int port;
	unsigned concurrency;
	double duration;
	double warmup;
	uint64_t cycles;
	bool publish;
	unsigned npub;
	unsigned qos;
	unsigned payload;
	const char *prefix;
	double rate;
	const char *probe_topic;
	int probe_port; /* 0: the loaded broker */
	const char *probe_file;
	const char *samples_out;
	int broker_pid;
	bool threads;     /* -T: CPU of each thread of broker_pid */
	int others[8];    /* -Q: more processes whose CPU is reported */
	size_t nothers;
};

static struct opts o = {
	.host = "127.0.0.1",
	.port = 1883,
	.concurrency = 32,
	.duration = 10,
	.warmup = 1,
	.npub = 10,
	.qos = 0,
	.payload = 32,
	.prefix = "lg",
};

static int ep;
static struct sockaddr_in addr;
static struct conn *idle_head, *idle_tail;
static volatile sig_atomic_t interrupted;

/* counters */
static uint64_t cycles_done, cycles_in_window, errors, pubs_sent, pubs_in_window;
static bool measuring, stopping;

/* cycle durations in microseconds (bounded sample) */
#define CYC_SAMPLES (1u << 20)
static uint32_t *cyc_us;
static size_t cyc_n;

/* latency probe samples, in microseconds of (arrival - ts) */
#define LAT_SAMPLES (1u << 23)
static int64_t *lat_us;
static size_t lat_n;
static uint64_t lat_events_total;
/* The measured window in wall-clock microseconds (end 0 while it runs). A
 * probe keeps the events captured inside it, by their ts, whenever they
 * arrive: events held up at start-up (a sink connecting to its peer) are
 * not counted, and a backlog at the end is. */
static int64_t wall_measure, wall_measured_end;

static int64_t now_us(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *what)
{
	perror(what);
	exit(2);
}

/* ---- packet encoding ---- */

static size_t put_varint(uint8_t *p, size_t v)
{
	size_t n = 0;

	do {
		uint8_t b = v % 128;

		v /= 128;
		if (v)
			b |= 0x80;
		p[n++] = b;
	} while (v);
	return n;
}

static size_t put_str(uint8_t *p, const char *s, size_t len)
{
	p[0] = (uint8_t)(len >> 8);
	p[1] = (uint8_t)len;
	memcpy(p + 2, s, len);
	return len + 2;
}

static size_t out_cap = OUT_CAP;

static void out_reserve(struct conn *c, size_t len)
{
	if (c->out_len + len > out_cap) {
		fprintf(stderr, "loadgen: output buffer full\n");
		exit(2);
	}
}

static void out_put(struct conn *c, const uint8_t *pkt, size_t len)
{
	out_reserve(c, len);
	memcpy(c->out + c->out_len, pkt, len);
	c->out_len += len;
}

/* Fixed header + body assembled in one buffer. */
static void send_packet(struct conn *c, uint8_t type, const uint8_t *body, size_t len)
{
	uint8_t pkt[8 + 1024];
	size_t h = 0;

	if (len > 1024) {
		fprintf(stderr, "loadgen: packet too large\n");
		exit(2);
	}
	pkt[h++] = type;
	h += put_varint(pkt + h, len);
	memcpy(pkt + h, body, len);
	out_put(c, pkt, h + len);
}

static void q_connect(struct conn *c)
{
	uint8_t b[256];
	size_t n = 0;

	n += put_str(b + n, "MQTT", 4);
	b[n++] = 4;    /* protocol level 3.1.1 */
	b[n++] = 0x02; /* clean session */
	b[n++] = 0;
	b[n++] = 60; /* keepalive */
	n += put_str(b + n, c->id, strlen(c->id));
	send_packet(c, 0x10, b, n);
}

static size_t topic_of(struct conn *c, char *buf, size_t cap, const char *what)
{
	return (size_t)snprintf(buf, cap, "%s/%u/%s", o.prefix, c->slot, what);
}

static void q_subscribe(struct conn *c)
{
	uint8_t b[256];
	char t[128];
	size_t n = 0, tl = topic_of(c, t, sizeof(t), "in");

	b[n++] = 0;
	b[n++] = 1;
	n += put_str(b + n, t, tl);
	b[n++] = 0;
	send_packet(c, 0x82, b, n);
}

static void q_unsubscribe(struct conn *c)
{
	uint8_t b[256];
	char t[128];
	size_t n = 0, tl = topic_of(c, t, sizeof(t), "in");

	b[n++] = 0;
	b[n++] = 2;
	n += put_str(b + n, t, tl);
	send_packet(c, 0xA2, b, n);
}

static void q_publishes(struct conn *c)
{
	uint8_t b[256];
	char t[128];
	size_t tl = topic_of(c, t, sizeof(t), "out");

	for (unsigned i = 0; i < o.npub; i++) {
		uint8_t fh[8];
		size_t n = put_str(b, t, tl), h = 0;

		if (o.qos) {
			uint16_t pid = (uint16_t)(i + 10);

			b[n++] = (uint8_t)(pid >> 8);
			b[n++] = (uint8_t)pid;
		}
		/* The payload goes straight into the output buffer: it may be
		 * far larger than any other packet. */
		fh[h++] = (uint8_t)(0x30 | (o.qos << 1));
		h += put_varint(fh + h, n + o.payload);
		out_put(c, fh, h);
		out_put(c, b, n);
		out_reserve(c, o.payload);
		memset(c->out + c->out_len, 'x', o.payload);
		c->out_len += o.payload;
		pubs_sent++;
		if (measuring)
			pubs_in_window++;
	}
}

static void q_disconnect(struct conn *c)
{
	send_packet(c, 0xE0, NULL, 0);
	c->shut_after_flush = true;
}

/* ---- connection plumbing ---- */

static void set_events(struct conn *c, uint32_t ev)
{
	struct epoll_event e = { .events = ev, .data.ptr = c };

	if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e))
		die("epoll_ctl mod");
}

static void conn_close(struct conn *c)
{
	if (c->fd >= 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->out_len = c->out_off = c->in_len = 0;
	c->want_out = false;
	c->shut_after_flush = false;
}

static int flush_out(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			break;
		if (w < 0)
			return -1;
		c->out_off += (size_t)w;
	}
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
		if (c->shut_after_flush) {
			shutdown(c->fd, SHUT_WR);
			c->shut_after_flush = false;
		}
		if (c->want_out) {
			c->want_out = false;
			set_events(c, EPOLLIN);
		}
	} else if (!c->want_out) {
		c->want_out = true;
		set_events(c, EPOLLIN | EPOLLOUT);
	}
	return 0;
}

static void make_idle(struct conn *c)
{
	c->state = S_IDLE;
	c->idle_next = NULL;
	if (idle_tail)
		idle_tail->idle_next = c;
	else
		idle_head = c;
	idle_tail = c;
}

static void start_cycle(struct conn *c)
{
	struct epoll_event e = { .events = EPOLLOUT, .data.ptr = c };
	int one = 1;

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		die("socket");
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	snprintf(c->id, sizeof(c->id), "%s-%u-%llu", o.prefix, c->slot, (unsigned long long)c->n++);
	c->started_us = now_us(CLOCK_MONOTONIC);
	if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e))
		die("epoll_ctl add");
	c->want_out = true;
	if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) && errno != EINPROGRESS) {
		errors++;
		conn_close(c);
		make_idle(c);
		return;
	}
	c->state = S_CONNECTING;
}

static void cycle_failed(struct conn *c)
{
	errors++;
	/* A load that only fails measures nothing: stop rather than spin. */
	if (errors > 1000 && errors > 10 * cycles_done) {
		fprintf(stderr, "loadgen: %llu errors for %llu cycles; giving up\n", (unsigned long long)errors,
			(unsigned long long)cycles_done);
		exit(3);
	}
	conn_close(c);
	if (c->state == S_PROBE) {
		fprintf(stderr, "loadgen: latency probe connection lost\n");
		exit(2);
	}
	make_idle(c);
}

static void cycle_done(struct conn *c)
{
	int64_t d = now_us(CLOCK_MONOTONIC) - c->started_us;

	conn_close(c);
	cycles_done++;
	if (measuring) {
		cycles_in_window++;
		if (cyc_n < CYC_SAMPLES)
			cyc_us[cyc_n++] = (uint32_t)(d > UINT32_MAX ? UINT32_MAX : d);
	}
	make_idle(c);
}

/* ---- latency probe ---- */

/* Finds "ts": in a JSON event (an RFC 3339 UTC string with milliseconds, or
 * a number of milliseconds) and records arrival - ts. */
static void probe_event(const char *p, size_t len, int64_t arrival_us)
{
	static const char key[] = "\"ts\":";
	const char *end = p + len;

	for (const char *s = p; s + sizeof(key) - 1 < end; s++) {
		if (memcmp(s, key, sizeof(key) - 1))
			continue;
		s += sizeof(key) - 1;
		{
			int64_t ts = 0;

			if (s < end && *s == '"') {
				/* "2026-11-26T05:47:45.684Z": UTC, millisecond precision */
				struct tm tm;
				int ms = 0;
				char tmp[32];
				size_t n = (size_t)(end - s - 1) < sizeof(tmp) - 1 ? (size_t)(end - s - 1) : sizeof(tmp) - 1;

				memcpy(tmp, s + 1, n);
				tmp[n] = 0;
				memset(&tm, 0, sizeof(tm));
				if (sscanf(tmp, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
					   &tm.tm_min, &tm.tm_sec, &ms) != 7)
					return;
				tm.tm_year -= 1900;
				tm.tm_mon -= 1;
				ts = (int64_t)timegm(&tm) * 1000 + ms;
			} else {
				while (s < end && *s >= '0' && *s <= '9')
					ts = ts * 10 + (*s++ - '0');
			}
			lat_events_total++;
			if (wall_measure && ts * 1000 >= wall_measure
			    && (!wall_measured_end || ts * 1000 < wall_measured_end) && lat_n < LAT_SAMPLES)
				lat_us[lat_n++] = arrival_us - ts * 1000;
		}
		return;
	}
}

static void q_probe_connect(struct conn *c)
{
	uint8_t b[512];
	size_t n = 0, tl = strlen(o.probe_topic);

	q_connect(c);
	b[n++] = 0;
	b[n++] = 1;
	n += put_str(b + n, o.probe_topic, tl);
	b[n++] = 0;
	send_packet(c, 0x82, b, n);
}

/* ---- packet handling ---- */

static void on_packet(struct conn *c, uint8_t type, const uint8_t *body, size_t len)
{
	switch (type >> 4) {
	case 2: /* CONNACK */
		if (len < 2 || body[1] != 0) {
			cycle_failed(c);
			return;
		}
		if (c->state == S_PROBE)
			return;
		if (c->state != S_CONNACK)
			goto proto;
		q_subscribe(c);
		c->state = S_SUBACK;
		return;
	case 9: /* SUBACK */
		if (c->state == S_PROBE)
			return;
		if (c->state != S_SUBACK || len < 3 || body[2] == 0x80)
			goto proto;
		if (o.publish) {
			q_publishes(c);
			if (o.qos && o.npub) {
				c->acks_left = o.npub;
				c->state = S_PUBACK;
				return;
			}
		}
		q_unsubscribe(c);
		c->state = S_UNSUBACK;
		return;
	case 4: /* PUBACK */
		if (c->state != S_PUBACK)
			goto proto;
		if (--c->acks_left == 0) {
			q_unsubscribe(c);
			c->state = S_UNSUBACK;
		}
		return;
	case 11: /* UNSUBACK */
		if (c->state != S_UNSUBACK)
			goto proto;
		q_disconnect(c);
		c->state = S_CLOSING;
		return;
	case 3: /* PUBLISH: only the probe subscribes to anything */
		if (c->state == S_PROBE && len >= 2) {
			size_t tl = ((size_t)body[0] << 8) | body[1];
			size_t off = 2 + tl + (((type >> 1) & 3) ? 2 : 0);

			if (off <= len)
				probe_event((const char *)body + off, len - off, now_us(CLOCK_REALTIME));
		}
		return;
	default:
		return;
	}
proto:
	fprintf(stderr, "loadgen: unexpected packet 0x%02x in state %d\n", type, c->state);
	cycle_failed(c);
}

static void on_readable(struct conn *c)
{
	for (;;) {
		ssize_t r;
		size_t at = 0;

		if (c->in_len == c->in_cap) {
			fprintf(stderr, "loadgen: input buffer full\n");
			cycle_failed(c);
			return;
		}
		r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return;
		if (r <= 0) {
			if (r == 0 && c->state == S_CLOSING)
				cycle_done(c);
			else
				cycle_failed(c);
			return;
		}
		c->in_len += (size_t)r;
		while (c->in_len - at >= 2) {
			size_t rl = 0, mult = 1, h = 1;
			bool complete = false;

			while (h < 5 && at + h < c->in_len) {
				uint8_t b = c->in[at + h++];

				rl += (b & 127) * mult;
				mult *= 128;
				if (!(b & 128)) {
					complete = true;
					break;
				}
			}
			if (!complete || c->in_len - at < h + rl)
				break;
			{
				enum state before = c->state;
				int fd = c->fd;

				on_packet(c, c->in[at], c->in + at + h, rl);
				if (c->fd != fd || (c->state == S_IDLE && before != S_IDLE))
					return; /* closed */
			}
			at += h + rl;
		}
		if (at) {
			memmove(c->in, c->in + at, c->in_len - at);
			c->in_len -= at;
		}
		if (c->out_len && flush_out(c)) {
			cycle_failed(c);
			return;
		}
	}
}

static void on_event(struct conn *c, uint32_t ev)
{
	if (c->state == S_CONNECTING) {
		int err = 0;
		socklen_t l = sizeof(err);

		if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err) {
			cycle_failed(c);
			return;
		}
		c->want_out = false;
		set_events(c, EPOLLIN);
		q_connect(c);
		c->state = S_CONNACK;
		if (flush_out(c))
			cycle_failed(c);
		return;
	}
	if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		int fd = c->fd;

		on_readable(c);
		if (c->fd != fd)
			return;
	}
	if ((ev & EPOLLOUT) && c->out_len && flush_out(c))
		cycle_failed(c);
}

/* ---- file probe ---- */

static int file_fd = -1, inotify_fd = -1;
static char *file_buf;
static size_t file_len;
#define FILE_BUF (1u << 22)

static void file_probe_read(void)
{
	for (;;) {
		ssize_t r = read(file_fd, file_buf + file_len, FILE_BUF - file_len);
		int64_t arrival = now_us(CLOCK_REALTIME);
		size_t start = 0;

		if (r <= 0)
			return;
		file_len += (size_t)r;
		for (size_t i = 0; i < file_len; i++) {
			if (file_buf[i] == '\n') {
				probe_event(file_buf + start, i - start, arrival);
				start = i + 1;
			}
		}
		memmove(file_buf, file_buf + start, file_len - start);
		file_len -= start;
	}
}

static void file_probe_open(void)
{
	file_fd = open(o.probe_file, O_RDONLY | O_CLOEXEC);
	if (file_fd < 0)
		die(o.probe_file);
	lseek(file_fd, 0, SEEK_END);
	file_buf = malloc(FILE_BUF);
	inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (!file_buf || inotify_fd < 0 || inotify_add_watch(inotify_fd, o.probe_file, IN_MODIFY) < 0)
		die("inotify");
	{
		struct epoll_event e = { .events = EPOLLIN, .data.ptr = NULL };

		if (epoll_ctl(ep, EPOLL_CTL_ADD, inotify_fd, &e))
			die("epoll_ctl inotify");
	}
}

static void file_probe_event(void)
{
	char buf[4096];

	while (read(inotify_fd, buf, sizeof(buf)) > 0)
		;
	file_probe_read();
}

/* ---- main ---- */

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* CPU seconds (user + system) from a /proc stat file, or -1; with comm set,
 * also the command name (which may hold spaces and parentheses). */
static double stat_cpu(const char *path, char *comm, size_t comm_size)
{
	char buf[1024], *l, *r;
	unsigned long long ut = 0, st = 0;
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	l = strchr(buf, '(');
	r = strrchr(buf, ')');
	if (!l || !r || r < l || sscanf(r + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	if (comm) {
		*r = 0;
		snprintf(comm, comm_size, "%s", l + 1);
	}
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds of thread tid of pid from the scheduler's own nanosecond
 * count, or -1 where the kernel keeps no schedstat. The stat file's clock
 * ticks (10 ms) are too coarse for a one-second window. */
static double schedstat_cpu(int pid, int tid)
{
	char path[64];
	unsigned long long ns;
	FILE *f;
	int got;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/schedstat", pid, tid);
	if (!(f = fopen(path, "re")))
		return -1;
	got = fscanf(f, "%llu", &ns);
	fclose(f);
	return got == 1 ? (double)ns / 1e9 : -1;
}

/* CPU seconds used so far by process pid (all threads), or with thread set,
 * by its main thread only; 0 if unknown. */
static double proc_cpu(int pid, bool thread)
{
	char path[64];
	double secs;

	if (thread && (secs = schedstat_cpu(pid, pid)) >= 0)
		return secs;
	if (thread)
		snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", pid, pid);
	else
		snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	secs = stat_cpu(path, NULL, 0);
	return secs < 0 ? 0 : secs;
}

/* -T and -Q: where the CPU goes in the window, by thread name in the broker
 * (the plugin names its sink threads eh-<sink>, librdkafka rdk:*) and by
 * process for the peers. Threads are matched by id across the two
 * snapshots; one that ends inside the window loses its share. */
#define CPU_TASKS 256
struct cpu_snap {
	size_t n;
	int id[CPU_TASKS];
	char name[CPU_TASKS][24];
	double secs[CPU_TASKS];
};

static void cpu_snap_add(struct cpu_snap *c, int id, const char *name, double secs)
{
	if (c->n == CPU_TASKS)
		return;
	c->id[c->n] = id;
	snprintf(c->name[c->n], sizeof(c->name[c->n]), "%s", name);
	c->secs[c->n++] = secs;
}

static void cpu_snap_take(struct cpu_snap *c)
{
	char path[64];
	DIR *d;
	struct dirent *e;

	c->n = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", o.broker_pid);
	if (o.threads && o.broker_pid && (d = opendir(path))) {
		while ((e = readdir(d))) {
			char stat[64], name[24];
			int tid = atoi(e->d_name);
			double secs;

			if (tid <= 0)
				continue;
			snprintf(stat, sizeof(stat), "/proc/%d/task/%d/stat", o.broker_pid, tid);
			if ((secs = stat_cpu(stat, name, sizeof(name))) < 0)
				continue;
			if (tid == o.broker_pid)
				snprintf(name, sizeof(name), "main");
			for (char *p = name; *p; p++) {
				if (*p == ' ' || *p == '=')
					*p = '_';
			}
			cpu_snap_add(c, tid, name, secs);
		}
		closedir(d);
	}
	for (size_t i = 0; i < o.nothers; i++) {
		char name[24];

		snprintf(name, sizeof(name), "pid%d", o.others[i]);
		cpu_snap_add(c, -o.others[i], name, proc_cpu(o.others[i], false));
	}
}

/* " cpu.<name>=<seconds>" for each name, summed over its threads. */
static void cpu_snap_print(const struct cpu_snap *a, const struct cpu_snap *b)
{
	bool done[CPU_TASKS] = { false };

	for (size_t i = 0; i < b->n; i++) {
		double sum = 0;

		if (done[i])
			continue;
		for (size_t j = i; j < b->n; j++) {
			double before = 0;

			if (strcmp(b->name[j], b->name[i]))
				continue;
			done[j] = true;
			for (size_t k = 0; k < a->n; k++) {
				if (a->id[k] == b->id[j])
					before = a->secs[k];
			}
			sum += b->secs[j] - before;
		}
		printf(" cpu.%s=%.3f", b->name[i], sum);
	}
}

static void usage(void)
{
	fprintf(stderr,
		"usage: loadgen [options]\n"
		"  -m cycle|publish   cycle: connect, subscribe, unsubscribe, disconnect;\n"
		"                     publish: the same plus -N publishes per connection\n"
		"  -p PORT            broker port (1883)      -h HOST  broker IPv4 address (127.0.0.1)\n"
		"  -c N               connections in flight (32)\n"
		"  -d SECONDS         measured duration (10)  -w SECONDS  warm-up before it (1)\n"
		"  -n CYCLES          stop after this many measured cycles instead of a duration\n"
		"  -N N               publishes per connection in publish mode (10)\n"
		"  -q 0|1             QoS of the publishes (0)   -s BYTES  payload size (32, at most 262144)\n"
		"  -i PREFIX          client id and topic prefix (lg)\n"
		"  -r RATE            start at most RATE cycles per second in total (default: as fast as possible)\n"
		"  -L FILTER          latency probe: subscribe to FILTER (the local sink's topic) and\n"
		"                     measure arrival time minus the event's ts\n"
		"  -b PORT            broker port of the -L probe, when the sink publishes elsewhere\n"
		"                     (the MQTT sink's target; default: -p)\n"
		"  -F PATH            latency probe: follow the file sink's PATH (inotify)\n"
		"  -S PATH            write the latency samples (microseconds) to PATH\n"
		"  -P PID             also report the CPU time of process PID (the broker) in the window\n"
		"  -T                 and of each of its threads, summed by thread name (cpu.<name>=)\n"
		"  -Q PID             also report the CPU time of process PID (a peer) in the window\n"
		"                     (cpu.pid<PID>=); up to 8\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int opt;
	struct conn *conns, probe;
	int64_t t_begin, t_measure = 0, t_end = 0, t_measured_end = 0;
	int64_t next_start_us = 0, interval_us = 0;
	struct rusage ru0, ru1;
	double bcpu0 = 0, bcpu1 = 0, tcpu0 = 0, tcpu1 = 0;
	static struct cpu_snap snap0, snap1;

	while ((opt = getopt(argc, argv, "m:p:h:c:d:w:n:N:q:s:i:r:L:b:F:S:P:TQ:")) != -1) {
		switch (opt) {
		case 'm':
			if (!strcmp(optarg, "publish"))
				o.publish = true;
			else if (strcmp(optarg, "cycle"))
				usage();
			break;
		case 'p': o.port = atoi(optarg); break;
		case 'h': o.host = optarg; break;
		case 'c': o.concurrency = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'd': o.duration = strtod(optarg, NULL); break;
		case 'w': o.warmup = strtod(optarg, NULL); break;
		case 'n': o.cycles = strtoull(optarg, NULL, 10); break;
		case 'N': o.npub = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'q': o.qos = (unsigned)strtoul(optarg, NULL, 10); break;
		case 's': o.payload = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'i': o.prefix = optarg; break;
		case 'r': o.rate = strtod(optarg, NULL); break;
		case 'L': o.probe_topic = optarg; break;
		case 'b': {
			char *end;
			long v = strtol(optarg, &end, 10);

			if (*end || v < 1 || v > 65535)
				usage();
			o.probe_port = (int)v;
			break;
		}
		case 'F': o.probe_file = optarg; break;
		case 'S': o.samples_out = optarg; break;
		case 'P': o.broker_pid = atoi(optarg); break;
		case 'T': o.threads = true; break;
		case 'Q':
			if (o.nothers == sizeof(o.others) / sizeof(o.others[0]) || atoi(optarg) <= 0)
				usage();
			o.others[o.nothers++] = atoi(optarg);
			break;
		default: usage();
		}
	}
	if (!o.concurrency || o.qos > 1 || o.payload > PAYLOAD_MAX || (o.qos && o.npub > 60000) || o.npub > 1000)
		usage();
	/* A cycle's publishes are queued at once; each connection's buffer holds them all. */
	if (o.publish) {
		size_t cycle = (size_t)o.npub * (o.payload + 256) + 4096;

		if (cycle > (16u << 20)) {
			fprintf(stderr, "loadgen: -N x -s over 16 MiB per cycle\n");
			return 2;
		}
		if (cycle > out_cap)
			out_cap = cycle;
	}
	signal(SIGPIPE, SIG_IGN);
	{
		struct rlimit rl = { 65536, 65536 };

		setrlimit(RLIMIT_NOFILE, &rl);
	}
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)o.port);
	if (inet_pton(AF_INET, o.host, &addr.sin_addr) != 1)
		usage();
	ep = epoll_create1(EPOLL_CLOEXEC);
	cyc_us = malloc(CYC_SAMPLES * sizeof(*cyc_us));
	lat_us = malloc(LAT_SAMPLES * sizeof(*lat_us));
	conns = calloc(o.concurrency, sizeof(*conns));
	if (ep < 0 || !cyc_us || !lat_us || !conns)
		die("setup");
	if (o.rate > 0)
		interval_us = (int64_t)(1e6 / o.rate);

	if (o.probe_topic) {
		struct epoll_event e = { .events = EPOLLIN, .data.ptr = &probe };
		struct sockaddr_in probe_addr = addr;
		int one = 1;

		if (o.probe_port)
			probe_addr.sin_port = htons((uint16_t)o.probe_port);

		memset(&probe, 0, sizeof(probe));
		probe.out = malloc(OUT_CAP);
		probe.in = malloc(PROBE_IN_CAP);
		probe.in_cap = PROBE_IN_CAP;
		snprintf(probe.id, sizeof(probe.id), "%s-probe", o.prefix);
		probe.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe.fd < 0 || connect(probe.fd, (struct sockaddr *)&probe_addr, sizeof(probe_addr)))
			die("probe connect");
		setsockopt(probe.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		fcntl(probe.fd, F_SETFL, O_NONBLOCK);
		if (epoll_ctl(ep, EPOLL_CTL_ADD, probe.fd, &e))
			die("epoll_ctl probe");
		probe.state = S_PROBE;
		q_probe_connect(&probe);
		flush_out(&probe);
		/* Let the SUBSCRIBE land before the load starts. */
		usleep(200000);
	}
	if (o.probe_file)
		file_probe_open();

	for (unsigned i = 0; i < o.concurrency; i++) {
		conns[i].fd = -1;
		conns[i].slot = i;
		conns[i].out = malloc(out_cap);
		conns[i].in = malloc(IN_CAP);
		conns[i].in_cap = IN_CAP;
		if (!conns[i].out || !conns[i].in)
			die("malloc");
		make_idle(&conns[i]);
	}

	t_begin = now_us(CLOCK_MONOTONIC);
	if (o.warmup <= 0) {
		measuring = true;
		t_measure = t_begin;
		wall_measure = now_us(CLOCK_REALTIME);
		getrusage(RUSAGE_SELF, &ru0);
		bcpu0 = o.broker_pid ? proc_cpu(o.broker_pid, false) : 0;
		tcpu0 = o.broker_pid ? proc_cpu(o.broker_pid, true) : 0;
		cpu_snap_take(&snap0);
	}
	next_start_us = t_begin;
	for (;;) {
		struct epoll_event evs[256];
		int64_t now = now_us(CLOCK_MONOTONIC);
		int timeout = 100, n;

		if (!measuring && !stopping && now - t_begin >= (int64_t)(o.warmup * 1e6)) {
			measuring = true;
			t_measure = now;
			wall_measure = now_us(CLOCK_REALTIME);
			getrusage(RUSAGE_SELF, &ru0);
			bcpu0 = o.broker_pid ? proc_cpu(o.broker_pid, false) : 0;
			tcpu0 = o.broker_pid ? proc_cpu(o.broker_pid, true) : 0;
			cpu_snap_take(&snap0);
		}
		if (measuring && !stopping
		    && ((o.cycles && cycles_in_window >= o.cycles)
			|| (!o.cycles && now - t_measure >= (int64_t)(o.duration * 1e6)) || interrupted)) {
			/* Stop starting cycles; let the ones in flight finish so
			 * the broker is left clean, but measure up to here. */
			stopping = true;
			measuring = false;
			t_measured_end = now;
			wall_measured_end = now_us(CLOCK_REALTIME);
			getrusage(RUSAGE_SELF, &ru1);
			bcpu1 = o.broker_pid ? proc_cpu(o.broker_pid, false) : 0;
			tcpu1 = o.broker_pid ? proc_cpu(o.broker_pid, true) : 0;
			cpu_snap_take(&snap1);
			t_end = now + 5000000;
		}
		if (stopping) {
			bool busy = false;

			for (unsigned i = 0; i < o.concurrency; i++)
				busy |= conns[i].state != S_IDLE;
			if (!busy || now >= t_end)
				break;
		}
		while (idle_head && !stopping) {
			struct conn *c;

			if (interval_us) {
				if (now < next_start_us) {
					int64_t w = (next_start_us - now + 999) / 1000;

					timeout = w < timeout ? (int)w : timeout;
					break;
				}
				next_start_us += interval_us;
				if (next_start_us < now - 100000)
					next_start_us = now - 100000; /* no burst after a stall */
			}
			c = idle_head;
			idle_head = c->idle_next;
			if (!idle_head)
				idle_tail = NULL;
			start_cycle(c);
		}
		if (idle_head && !interval_us && !stopping)
			timeout = 0;
		n = epoll_wait(ep, evs, 256, timeout);
		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		for (int i = 0; i < n; i++) {
			if (!evs[i].data.ptr)
				file_probe_event();
			else
				on_event(evs[i].data.ptr, evs[i].events);
		}
		if (file_fd >= 0)
			file_probe_read();
	}
	/* Give the probes time to see the last events: a sink that fell behind
	 * at full load is still delivering its backlog, which belongs to the
	 * window. Stop after a second with nothing new (or 30 s in all). */
	if (o.probe_topic || o.probe_file) {
		int64_t now = now_us(CLOCK_MONOTONIC), quiet_until = now + 1000000, until = now + 30000000;
		uint64_t seen = lat_events_total;

		while ((now = now_us(CLOCK_MONOTONIC)) < quiet_until && now < until) {
			struct epoll_event evs[64];
			int n = epoll_wait(ep, evs, 64, 10);

			if (lat_events_total != seen) {
				seen = lat_events_total;
				quiet_until = now_us(CLOCK_MONOTONIC) + 1000000;
			}

			for (int i = 0; i < n; i++) {
				if (!evs[i].data.ptr)
					file_probe_event();
				else if (evs[i].data.ptr == &probe)
					on_event(&probe, evs[i].events);
			}
		}
	}

	{
		double secs = (double)(t_measured_end - t_measure) / 1e6;
		double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec)
			     + (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec
					- ru0.ru_stime.tv_usec) / 1e6;
		double rate = secs > 0 ? (double)cycles_in_window / secs : 0;
		/* Events the plugin captures per cycle with events '*':
		 * connect, connected, subscribe, unsubscribe, disconnected,
		 * plus one message.publish per publish. */
		double evrate = rate * (5 + (o.publish ? o.npub : 0));
		uint32_t p50 = 0, p99 = 0;

		if (cyc_n) {
			qsort(cyc_us, cyc_n, sizeof(*cyc_us), cmp_u32);
			p50 = cyc_us[cyc_n / 2];
			p99 = cyc_us[(size_t)((double)cyc_n * 0.99)];
		}
		printf("loadgen: %s%s, %u connections: %llu cycles in %.2f s = %.0f cycles/s (%.0f events/s with "
		       "events '*'), %llu publishes, %llu errors; cycle p50 %u us p99 %u us; generator CPU %.2f s\n",
		       o.publish ? "publish" : "cycle", o.publish ? (o.qos ? " qos1" : " qos0") : "", o.concurrency,
		       (unsigned long long)cycles_in_window, secs, rate, evrate, (unsigned long long)pubs_in_window,
		       (unsigned long long)errors, p50, p99, cpu);
		if (o.broker_pid)
			printf("loadgen: CPU in the window: generator %.0f%%, broker %.0f%% (its main thread %.0f%%) "
			       "of one core\n", 100 * cpu / secs, 100 * (bcpu1 - bcpu0) / secs, 100 * (tcpu1 - tcpu0) / secs);
		printf("RESULT cycles=%llu secs=%.3f rate=%.1f events_rate=%.1f errors=%llu cpu=%.3f",
		       (unsigned long long)cycles_in_window, secs, rate, evrate, (unsigned long long)errors, cpu);
		if (o.broker_pid)
			printf(" broker_cpu=%.3f broker_thread_cpu=%.3f", bcpu1 - bcpu0, tcpu1 - tcpu0);
		cpu_snap_print(&snap0, &snap1);
		/* including the cycles in flight at the end, which were let finish */
		printf(" all_cycles=%llu", (unsigned long long)cycles_done);
		printf(" window_begin_us=%lld window_end_us=%lld", (long long)wall_measure, (long long)wall_measured_end);
		if (o.probe_topic || o.probe_file) {
			if (lat_n) {
				qsort(lat_us, lat_n, sizeof(*lat_us), cmp_i64);
				printf(" lat_n=%zu lat_p50_us=%lld lat_p99_us=%lld lat_p999_us=%lld lat_max_us=%lld", lat_n,
				       (long long)lat_us[lat_n / 2], (long long)lat_us[(size_t)((double)lat_n * 0.99)],
				       (long long)lat_us[(size_t)((double)lat_n * 0.999)], (long long)lat_us[lat_n - 1]);
			} else {
				printf(" lat_n=0");
			}
			printf(" probe_events=%llu", (unsigned long long)lat_events_total);
			if (o.samples_out) {
				FILE *f = fopen(o.samples_out, "w");

				for (size_t i = 0; f && i < lat_n; i++)
					fprintf(f, "%lld\n", (long long)lat_us[i]);
				if (f)
					fclose(f);
			}
		}
		printf("\n");
	}
	return 0;
}
