/*
 * MQTT sink: publishes each event to another MQTT broker (a central broker,
 * a cloud IoT hub) with paho.mqtt.c's asynchronous client.
 *
 * Threads. Every paho call is made on the sink thread, with one exception
 * (publish_failed, below); paho's own threads only run our callbacks, which
 * change the state of a message or a connection under `lock` and signal
 * `cond`. The sink thread never holds `lock` while calling paho (paho holds
 * its own mutex while it runs callbacks, so the reverse order would
 * deadlock).
 *
 * The window. Each event handed to paho occupies one slot of a circular
 * window of mqtt_max_inflight slots (fewer when an MQTT 5 server announces a
 * smaller Receive Maximum), with a copy of what was sent: the event message
 * and, with mqtt_presence_topic, the retained presence message. A slot is
 * settled when paho confirmed every message of it (PUBACK / PUBCOMP, or the
 * write for QoS 0) or failed it for good; the sink thread pops settled slots
 * from the front in order and counts them (delivered, or failed). When the
 * window is full, deliver waits inside for the callback that frees a slot
 * (however long the target takes to acknowledge: the runner's backoff would
 * leave room unused after it came), until the connection goes or the drain
 * deadline passes. When the client is disconnected, deliver answers RETRY
 * and the events wait in the ring, in order.
 *
 * Clients. A paho client starts with a short clean-session connection (the
 * "wiper", a separate client destroyed as soon as the target accepted it), so
 * no unfinished QoS 2 flow of an earlier client can take a new message for a
 * retransmission of an old one with the same packet id. Until the wiper gets
 * through, the sink retries it with backoff. Then the persistent client
 * connects once and paho's automatic reconnect keeps it connected for the
 * rest of the run: MQTTAsync_connect is never called on a client paho may be
 * reconnecting (it frees and replaces the client's options unlocked).
 *
 * Reconnects. The session is persistent (clean session off; MQTT 5: clean
 * start off with a session expiry), so when the target still has the session
 * paho resends what was unacknowledged, oldest first, before anything new.
 * When the target lost the session (a restart without persistence), paho
 * fails those messages with "operation incomplete": they are marked for
 * resending and the sink thread sends them again, oldest first, before any
 * new event.
 *
 * paho 1.3.12 write failures. When the socket write of a QoS 1/2 PUBLISH
 * fails (the target died; MQTTAsync_processCommand gets SOCKET_ERROR), paho
 * calls the failure callback and then frees the message's topic and payload,
 * but leaves the message in the session it resends after a reconnect: the
 * resend reads freed memory, and the PUBACK, a session clean-up or
 * MQTTAsync_destroy free it a second time. So that client is poisoned: the
 * callback disconnects it at once (before paho can schedule a reconnect),
 * and once its connection is closed the sink abandons it for good (never
 * reconnected, never destroyed, paho's library pinned in memory since its
 * threads keep running) and starts a new client, to which everything the old
 * one had not seen acknowledged is handed again, oldest first.
 *
 * Messages that cannot go out. A rendered topic that is empty or longer
 * than 65535 bytes (paho would write its length modulo 65536 and the rest
 * of the topic would be read as packet id and payload), or, with MQTT 5, a
 * PUBLISH bigger than the Maximum Packet Size the target announced when the
 * client first connected, is counted failed before paho sees it. paho shows
 * no CONNACK properties after an automatic reconnect (see on_connected):
 * from then on the limit is unknown and the poison backstop below applies.
 *
 * Poison messages. Anything else a target refuses by closing the
 * connection (over its max_packet_size on 3.1.1, which has no way to
 * announce it; whatever an MQTT 5 target takes for malformed) would be
 * resent after every reconnect, by paho from the persistent session or by
 * us, and hold back everything behind it. on_connection_lost charges the
 * loss to the oldest unsettled message when the loss came soon after that
 * message was written and nothing was acknowledged since (POISON_STRIKES,
 * POISON_SOON_MS); after enough consecutive charges the sink thread counts
 * it failed and, since paho keeps it in the session with no way to take it
 * out, replaces the client (wiper and all) and hands the new one
 * everything else that was unacknowledged, oldest first.
 *
 * Loop safety: the sink's client id is excluded from capture
 * (eh_sink_exclude_client_id), so pointed at this same broker its
 * connection and its publishes produce no event.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <MQTTAsync.h>
#include <mosquitto.h>

#include "eh_sinks.h"
#include "eh_template.h"

#define MSGS_PER_SLOT 2  /* the event, and its presence message */
/* Longest single wait for window room. Every callback and the stop request
 * wake the wait, so this bound is only a backstop, and what keeps the
 * absolute time of the wait finite while the deadline is INT64_MAX. */
#define ROOM_WAIT_MAX_MS 1000
#define CONNECT_BACKOFF_MIN_MS 500
/* The backstop against a message the target refuses by closing the
 * connection (see "Poison messages" above): that many consecutive losses
 * of the connection, each within POISON_SOON_MS of the message's last
 * write and with no acknowledgement of anything since that write. One loss
 * right after a write is a coincidence a target restart or a network blip
 * can produce; three in a row, over reconnects paho spaces by
 * mqtt_reconnect_min and more, with nothing at all acknowledged in
 * between, is not. A higher count only holds every later event back for
 * more reconnect delays. */
#define POISON_STRIKES 3
/* A target that refuses a packet closes the connection as soon as it read
 * its header: the loss follows the write by a round trip. 5 s leaves room
 * for a slow link and paho's resending of a whole window, and is far below
 * the keep-alive timeout after which a silent network's loss is noticed. */
#define POISON_SOON_MS 5000

enum msg_state { MSG_NONE = 0, MSG_SENT, MSG_OK, MSG_FAILED, MSG_RESEND };

struct mqtt_sink;

/* One paho client and what its callbacks report. */
struct conn {
	struct mqtt_sink *owner;
	MQTTAsync client;
	bool wiper;             /* the clean-session connection before a client */
	struct conn *next;      /* in the list of abandoned clients */

	/* guarded by owner->lock */
	bool up;                /* connected and usable */
	bool ever_up;
	bool failed;            /* wiper: the attempt failed */
	bool disconnected;      /* our MQTTAsync_disconnect finished */
	bool poisoned;          /* paho lost a message after a failed write */
	bool closed;            /* poisoned, and its connection is down */
	bool connack_read;      /* on_connect_ok5 read this connection's CONNACK */
	int64_t up_ms;          /* eh_now_ms() when it last connected */
	uint64_t acks_at_up;    /* owner->acks then */
};

struct mqtt_msg {
	struct mqtt_sink *owner;
	struct conn *conn;      /* the client it was last handed to */
	char *topic;
	char *payload;
	int len;
	bool retained;
	MQTTProperties props;
	uint64_t seq;           /* the event's, for logs */
	/* guarded by owner->lock */
	int state;              /* enum msg_state */
	int64_t sent_ms;        /* eh_now_ms() when last handed to paho */
	bool torn;              /* that write failed: it may have been partly sent */
	uint64_t acks_at_send;  /* owner->acks then */
};

struct slot {
	struct mqtt_msg msg[MSGS_PER_SLOT];
	int nmsg;
};

struct mqtt_sink {
	struct eh_sink *sink;
	const struct eh_node *node;

	/* options, fixed after create */
	char *uri, *client_id, *username, *password;
	char *ca_file, *cert_file, *key_file;
	bool tls, insecure;
	struct eh_template topic, presence;
	bool has_presence;
	int qos;
	bool retain;
	int version; /* MQTTVERSION_3_1_1 or MQTTVERSION_5 */
	bool cloudevents;
	size_t max_inflight;
	int keepalive, reconnect_min, reconnect_max;
	int session_expiry;

	/* sink thread only */
	struct conn *cur;      /* the persistent client, or NULL */
	struct conn *wiper;    /* the wiper before it, or NULL */
	struct conn *abandoned; /* poisoned clients: never freed */
	bool paho_pinned;
	int64_t next_connect_ms, connect_backoff_ms;
	char *topic_buf;
	size_t topic_cap;
	uint64_t unfit_logged, oversize_logged;
	struct slot *win;      /* max_inflight slots */
	size_t head, count;    /* changed by the sink thread under lock */

	/* shared with paho's callback threads; guarded by lock */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool sync_made;
	bool failure_logged;   /* one warning per outage */
	size_t limit;          /* effective window: min(max_inflight, Receive Maximum) */
	unsigned resends;      /* messages in MSG_RESEND */
	uint32_t max_packet;   /* MQTT 5 CONNACK Maximum Packet Size; 0: none announced */
	uint64_t acks;         /* publish outcomes the target decided (and QoS 0 writes) */
	struct mqtt_msg *suspect; /* the oldest unacknowledged message at the last losses */
	uint64_t suspect_seq;
	/* consecutive losses charged to suspect; at POISON_STRIKES the sink
	 * thread drops suspect (see poison_found) */
	unsigned strikes;
	uint64_t refused_logged;
	/* Bumped with every signal of cond: a waiter that read it before
	 * checking its condition cannot miss a signal sent after the check. */
	unsigned long changes;
	struct eh_buf scratch; /* one event's JSON */
};

static const struct eh_option mqtt_options[] = {
	{ "mqtt_uri", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "Enables the MQTT sink: the broker events are published to, as tcp://host:port, mqtt://, ssl://, "
	  "mqtts://, ws:// or wss:// (TLS for ssl, mqtts and wss). Example: ssl://hub.example.com:8883." },
	{ "mqtt_client_id", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "Client id of the sink's connection (valid UTF-8, at most 65535 bytes). Default: eventhook-<node>. The "
	  "plugin never reports events of a client with this id on the broker it runs in, so the sink may point "
	  "at that same broker." },
	{ "mqtt_username", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "User name for the target broker (valid UTF-8, at most 65535 bytes)." },
	{ "mqtt_password_file", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "File holding the password for the target broker (trailing newlines removed); read at start, never "
	  "logged." },
	{ "mqtt_topic", EH_OPT_STRING, "eventhook/{node}/{event}/{clientid}", 0, 0, NULL, 0,
	  "Topic template of the events. Placeholders {event} {node} {clientid} {username} {seq}; "
	  "client-supplied values have '/', '+', '#', '%', control characters, invalid UTF-8 and a '$' that would "
	  "start the topic written as %XX. The template's own text may hold no '+', '#' or control character. An "
	  "event whose topic renders empty or longer than 65535 bytes is counted failed." },
	{ "mqtt_qos", EH_OPT_INT, "1", 0, 2, NULL, 0,
	  "QoS of the published events. 1 and 2: an event counts as delivered when the target acknowledged "
	  "it, and unacknowledged events are resent after a reconnect (at QoS 1 possibly twice)." },
	{ "mqtt_retain", EH_OPT_BOOL, "false", 0, 0, NULL, 0, "Publish the events retained." },
	{ "mqtt_protocol", EH_OPT_ENUM, "3.1.1", 0, 0, "3.1.1|5", 0,
	  "MQTT version. With 5, each event carries user properties event, node and id, and a content type." },
	{ "mqtt_format", EH_OPT_ENUM, "json", 0, 0, "json|cloudevents", 0,
	  "Payload format: our JSON event, or CloudEvents 1.0 per its MQTT binding: binary mode with MQTT 5 "
	  "(the event as data, specversion, type, source, id and time as user properties), structured mode "
	  "with 3.1.1." },
	{ "mqtt_presence_topic", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "Topic template for presence: on client.connected and client.disconnected a retained JSON document "
	  "with status online or offline is published there, so a late subscriber learns who is online. "
	  "Same rules as mqtt_topic. Example: presence/{clientid}." },
	{ "mqtt_ca_file", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "PEM file of the CAs that sign the target's certificate. Default: the system's trust store." },
	{ "mqtt_cert_file", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "PEM client certificate (chain) for mutual TLS; needs mqtt_key_file unless the key is in it." },
	{ "mqtt_key_file", EH_OPT_STRING, NULL, 0, 0, NULL, 0, "PEM private key of mqtt_cert_file." },
	{ "mqtt_tls_insecure", EH_OPT_BOOL, "false", 0, 0, NULL, 0,
	  "Skip the verification of the target's certificate and host name (testing only; logged)." },
	{ "mqtt_max_inflight", EH_OPT_INT, "256", 1, 65535, NULL, 0,
	  "Events handed to the target and not yet acknowledged, at most. Further events wait in the queue. "
	  "An MQTT 5 target's Receive Maximum lowers it. It bounds the rate to window / round-trip time; "
	  "with a target under a millisecond away, 64 is enough and costs less CPU on a busy host "
	  "(docs/performance-mqtt.md)." },
	{ "mqtt_keepalive", EH_OPT_INT, "30", 5, 65535, NULL, 0, "Keep-alive interval, in seconds." },
	{ "mqtt_reconnect_min", EH_OPT_INT, "1", 1, 3600, NULL, 0,
	  "First delay before reconnecting, in seconds; doubled after each failed attempt." },
	{ "mqtt_reconnect_max", EH_OPT_INT, "30", 1, 3600, NULL, 0, "Longest delay between reconnect attempts." },
	{ "mqtt_session_expiry", EH_OPT_INT, "3600", 1, 4294967295LL, NULL, 0,
	  "MQTT 5: seconds the target keeps the sink's session (and its unacknowledged messages) after a "
	  "disconnect." },
	EH_SINK_FILTER_OPTIONS("mqtt"),
	{ NULL, 0, NULL, 0, 0, NULL, 0, NULL },
};

/* ---- messages and the window ---- */

static void msg_clear(struct mqtt_msg *msg)
{
	free(msg->topic);
	free(msg->payload);
	MQTTProperties_free(&msg->props);
	memset(msg, 0, sizeof(*msg));
}

static void slot_clear(struct slot *s)
{
	for (int i = 0; i < s->nmsg; i++)
		msg_clear(&s->msg[i]);
	s->nmsg = 0;
}

static struct slot *slot_at(struct mqtt_sink *m, size_t k)
{
	return &m->win[(m->head + k) % m->max_inflight];
}

/* The largest MQTT packet: a fixed header byte and a remaining length of at
 * most EH_MQTT_REMAINING_MAX in 4 bytes. paho.mqtt.c writes a longer
 * remaining length in 5 bytes, which every target reads as a malformed
 * packet. */
#define MQTT_PACKET_MAX (1u + 4u + EH_MQTT_REMAINING_MAX)

static size_t vbi_len(size_t n)
{
	return n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4;
}

/* The size of msg's PUBLISH packet on the wire, as MQTT 5's Maximum Packet
 * Size counts it: fixed header, then topic, packet id (QoS > 0),
 * properties (MQTT 5) and payload. (mosquitto 2.0 leaves the length bytes
 * of the fixed header out of its own check; counting them as the
 * specification does can only refuse an event a few bytes early.) */
static size_t publish_size(const struct mqtt_sink *m, const struct mqtt_msg *msg)
{
	size_t rest = 2 + strlen(msg->topic) + (m->qos ? 2 : 0) + (size_t)msg->len;

	/* What MQTTProperties_len computes: MQTTProperties.h declares it
	 * without LIBMQTT_API, so libpaho-mqtt3as does not export it and a
	 * call fails to link. */
	if (m->version == MQTTVERSION_5)
		rest += vbi_len((size_t)msg->props.length) + (size_t)msg->props.length;
	return 1 + vbi_len(rest) + rest;
}

/* Pops settled slots from the front and counts them. Sink thread. */
static void settle(struct mqtt_sink *m)
{
	uint64_t ok = 0, failed = 0;

	pthread_mutex_lock(&m->lock);
	while (m->count) {
		struct slot *s = slot_at(m, 0);
		bool all_ok = true;
		int k;

		for (k = 0; k < s->nmsg; k++) {
			if (s->msg[k].state != MSG_OK && s->msg[k].state != MSG_FAILED)
				break;
			if (s->msg[k].state == MSG_FAILED)
				all_ok = false;
		}
		if (k < s->nmsg)
			break;
		if (all_ok)
			ok++;
		else
			failed++;
		slot_clear(s);
		m->head = (m->head + 1) % m->max_inflight;
		m->count--;
	}
	pthread_mutex_unlock(&m->lock);
	if (ok || failed)
		eh_sink_count(m->sink, ok, failed);
}

/* Something a waiter may be waiting for happened. Under lock. */
static void changed(struct mqtt_sink *m)
{
	m->changes++;
	pthread_cond_broadcast(&m->cond);
}

/* ---- paho callbacks (paho's threads) ---- */

static void on_publish_ok(void *context, MQTTAsync_successData *resp)
{
	struct mqtt_msg *msg = context;
	struct mqtt_sink *m = msg->owner;

	(void)resp;
	pthread_mutex_lock(&m->lock);
	msg->state = MSG_OK;
	m->acks++;
	changed(m);
	pthread_mutex_unlock(&m->lock);
}

static void on_publish_ok5(void *context, MQTTAsync_successData5 *resp)
{
	(void)resp;
	on_publish_ok(context, NULL);
}

static void publish_failed(struct mqtt_msg *msg, int code, int reason, const char *text)
{
	struct mqtt_sink *m = msg->owner;
	struct conn *c = msg->conn;
	/* The socket write of the PUBLISH failed (MQTTAsync_processCommand got
	 * SOCKET_ERROR): the message never left. At QoS 1 and 2 paho is about
	 * to free its topic and payload while keeping it in the session (see
	 * the top of the file). Disconnecting here, on paho's thread before it
	 * returns to its loop, clears paho's "should be connected" before
	 * anything could schedule an automatic reconnect of this client. */
	bool write_failed = code == MQTTASYNC_FAILURE || code == MQTTASYNC_PERSISTENCE_ERROR;
	bool poisoned = write_failed && m->qos > 0;
	bool resend = write_failed || code == MQTTASYNC_OPERATION_INCOMPLETE || code == MQTTASYNC_DISCONNECTED;
	bool log = false;
	/* What the warning shows, copied under lock: once the message is
	 * MSG_FAILED and the lock released, the sink thread's settle() may
	 * clear its slot (freeing the topic) before we get to log. */
	char topic[EH_QUOTE_LEN];
	unsigned long long seq = 0;

	if (poisoned)
		MQTTAsync_disconnect(c->client, NULL);
	pthread_mutex_lock(&m->lock);
	msg->state = resend ? MSG_RESEND : MSG_FAILED;
	msg->torn = write_failed;
	if (resend) {
		m->resends++;
	} else {
		m->acks++;
		/* A misconfigured ACL refuses every event: the log must not
		 * grow with the traffic. The counter is shared by paho's
		 * threads, hence under lock. */
		log = eh_sink_log_due(&m->refused_logged);
	}
	if (log) {
		eh_quote(topic, sizeof(topic), msg->topic);
		seq = (unsigned long long)msg->seq;
	}
	if (poisoned)
		c->poisoned = true;
	changed(m);
	pthread_mutex_unlock(&m->lock);
	if (log)
		eh_sink_log(m->sink, MOSQ_LOG_WARNING, "the target refused a message on '%s' (event seq %llu): "
			    "code %d, reason %d%s%s", topic, seq, code, reason, text ? ": " : "", text ? text : "");
}

static void on_publish_fail(void *context, MQTTAsync_failureData *resp)
{
	publish_failed(context, resp->code, 0, resp->message);
}

static void on_publish_fail5(void *context, MQTTAsync_failureData5 *resp)
{
	publish_failed(context, resp->code, resp->reasonCode, resp->message);
}

static void mark_up(struct conn *c)
{
	struct mqtt_sink *m = c->owner;
	bool was_down, again;

	pthread_mutex_lock(&m->lock);
	was_down = !c->up;
	again = c->ever_up;
	c->up = true;
	c->ever_up = true;
	c->up_ms = eh_now_ms();
	c->acks_at_up = m->acks;
	if (!c->wiper)
		m->failure_logged = false;
	changed(m);
	pthread_mutex_unlock(&m->lock);
	if (was_down && !c->wiper)
		eh_sink_log(m->sink, MOSQ_LOG_NOTICE, "%s %s as '%s'", again ? "reconnected to" : "connected to", m->uri,
			    m->client_id);
}

static void on_connect_ok(void *context, MQTTAsync_successData *resp)
{
	(void)resp;
	mark_up(context);
}

static void on_connect_ok5(void *context, MQTTAsync_successData5 *resp)
{
	struct conn *c = context;
	struct mqtt_sink *m = c->owner;

	if (!c->wiper && MQTTProperties_hasProperty(&resp->properties, MQTTPROPERTY_CODE_RECEIVE_MAXIMUM)) {
		int rm = MQTTProperties_getNumericValue(&resp->properties, MQTTPROPERTY_CODE_RECEIVE_MAXIMUM);

		pthread_mutex_lock(&m->lock);
		m->limit = rm > 0 && (size_t)rm < m->max_inflight ? (size_t)rm : m->max_inflight;
		pthread_mutex_unlock(&m->lock);
	}
	if (!c->wiper) {
		/* Read as integer4: getNumericValue's int would turn a limit
		 * above 2 GiB negative. Absent means no limit. */
		MQTTProperty *p = MQTTProperties_getProperty(&resp->properties, MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE);

		pthread_mutex_lock(&m->lock);
		m->max_packet = p ? p->value.integer4 : 0;
		/* paho calls on_connected right after, on this thread. */
		c->connack_read = true;
		pthread_mutex_unlock(&m->lock);
	}
	mark_up(c);
}

static void connect_failed(struct conn *c, int code, const char *text)
{
	struct mqtt_sink *m = c->owner;
	bool log;

	pthread_mutex_lock(&m->lock);
	if (c->wiper)
		c->failed = true;
	log = !m->failure_logged;
	m->failure_logged = true;
	changed(m);
	pthread_mutex_unlock(&m->lock);
	if (log)
		eh_sink_log(m->sink, MOSQ_LOG_WARNING, "cannot connect to %s: %s (code %d); events wait in the queue "
			    "and the sink keeps retrying", m->uri, text ? text : "no reason given", code);
}

static void on_connect_fail(void *context, MQTTAsync_failureData *resp)
{
	connect_failed(context, resp->code, resp->message);
}

static void on_connect_fail5(void *context, MQTTAsync_failureData5 *resp)
{
	connect_failed(context, resp->reasonCode ? (int)resp->reasonCode : resp->code, resp->message);
}

/* paho connected the persistent client: our own connect (after its
 * onSuccess) or an automatic reconnect.
 *
 * paho 1.3.12 clears the connect options' onSuccess5 once it called it
 * for the first CONNACK, so after an automatic reconnect only this runs and
 * the CONNACK's properties are never seen. The target may have restarted
 * with other limits: its Maximum Packet Size is then unknown, and 0 leaves
 * an oversized event to the poison backstop rather than failing events
 * against a limit that may be gone. The window keeps the last Receive
 * Maximum, as when a CONNACK announces none (paho itself never raises its
 * own in-flight limit again either). */
static void on_connected(void *context, char *cause)
{
	struct conn *c = context;
	struct mqtt_sink *m = c->owner;

	(void)cause;
	pthread_mutex_lock(&m->lock);
	if (!c->connack_read)
		m->max_packet = 0;
	c->connack_read = false;
	pthread_mutex_unlock(&m->lock);
	mark_up(c);
}

/* The oldest message of the window not yet acknowledged or failed, or
 * NULL. Under lock. */
static struct mqtt_msg *oldest_unsettled(struct mqtt_sink *m)
{
	for (size_t k = 0; k < m->count; k++) {
		struct slot *s = slot_at(m, k);

		for (int i = 0; i < s->nmsg; i++) {
			if (s->msg[i].state != MSG_OK && s->msg[i].state != MSG_FAILED)
				return &s->msg[i];
		}
	}
	return NULL;
}

/* The connection of c was lost: charge it to the oldest unsettled message
 * when the target may have closed it because of that message, i.e. the
 * message was on the wire (handed to this client and not handed back, or
 * its write failed partway: a big one the target refuses as soon as it
 * read the header), its last write (our send, or paho's resend when the
 * connection came up) was less than POISON_SOON_MS ago, and nothing was
 * acknowledged since. Any other loss clears the charges: only consecutive
 * ones count. Also for a poisoned client: the write that failed may well
 * have followed a message the target refused. Under lock.
 *
 * paho resends a session's messages while it completes the connection,
 * before it calls on_connected; when that write already fails it reports
 * the loss and never the connection. So a loss of a connection we did not
 * see come up is one that lasted no longer than that resend: the write
 * was just now, and the acknowledgements to compare with are those counted
 * at the previous loss (one that came in that short while only clears the
 * charges). */
static void charge_loss(struct mqtt_sink *m, struct conn *c)
{
	struct mqtt_msg *h = oldest_unsettled(m);
	int64_t now = eh_now_ms();
	int64_t up_ms = c->up ? c->up_ms : now;
	int64_t written;
	uint64_t acks_then;

	if (!h || h->conn != c || !(h->state == MSG_SENT || (h->state == MSG_RESEND && h->torn))) {
		m->suspect = NULL;
		m->strikes = 0;
		return;
	}
	written = h->sent_ms > up_ms ? h->sent_ms : up_ms;
	acks_then = h->sent_ms > up_ms ? h->acks_at_send : c->acks_at_up;
	if (now - written > POISON_SOON_MS || m->acks != acks_then) {
		m->suspect = NULL;
		m->strikes = 0;
		return;
	}
	/* The seq tells a message from a later one in the same slot. */
	if (m->suspect == h && m->suspect_seq == h->seq) {
		m->strikes++;
	} else {
		m->suspect = h;
		m->suspect_seq = h->seq;
		m->strikes = 1;
	}
}

/* charge_loss found a message the target refuses. Derived, not stored: a
 * stored flag could outlive the suspect that charge_loss clears. Under
 * lock. */
static bool poison_found(const struct mqtt_sink *m)
{
	return m->suspect && m->strikes >= POISON_STRIKES;
}

/* Called once per lost connection, after paho closed it; for a poisoned
 * client that is the last callback it ever makes. */
static void on_connection_lost(void *context, char *cause)
{
	struct conn *c = context;
	struct mqtt_sink *m = c->owner;
	bool poisoned;

	pthread_mutex_lock(&m->lock);
	poisoned = c->poisoned;
	charge_loss(m, c);
	c->up = false;
	/* For the next connection, until on_connected says it is up. */
	c->acks_at_up = m->acks;
	if (poisoned)
		c->closed = true;
	m->failure_logged = true;
	changed(m);
	pthread_mutex_unlock(&m->lock);
	eh_sink_log(m->sink, MOSQ_LOG_WARNING, "connection to %s lost%s%s; %s, events wait in the queue", m->uri,
		    cause ? ": " : "", cause ? cause : "", poisoned ? "replacing the client" : "reconnecting");
}

static int on_message_arrived(void *context, char *topic, int topic_len, MQTTAsync_message *message)
{
	(void)context;
	(void)topic_len;
	/* The sink subscribes to nothing; a server could still send. */
	MQTTAsync_freeMessage(&message);
	MQTTAsync_free(topic);
	return 1;
}

static void on_disconnect_done(void *context, MQTTAsync_successData *resp)
{
	struct conn *c = context;
	struct mqtt_sink *m = c->owner;

	(void)resp;
	pthread_mutex_lock(&m->lock);
	c->disconnected = true;
	changed(m);
	pthread_mutex_unlock(&m->lock);
}

static void on_disconnect_fail(void *context, MQTTAsync_failureData *resp)
{
	(void)resp;
	on_disconnect_done(context, NULL);
}

/* ---- clients (sink thread) ---- */

static int start_connect(struct mqtt_sink *m, struct conn *c)
{
	MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
	MQTTAsync_connectOptions co5 = MQTTAsync_connectOptions_initializer5;
	MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
	MQTTProperties props = MQTTProperties_initializer;
	MQTTAsync_connectOptions *o = m->version == MQTTVERSION_5 ? &co5 : &co;
	int rc;

	if (!strncmp(m->uri, "ws", 2)) {
		MQTTAsync_connectOptions ws = MQTTAsync_connectOptions_initializer_ws;
		MQTTAsync_connectOptions ws5 = MQTTAsync_connectOptions_initializer5_ws;

		co = ws;
		co5 = ws5;
	}
	/* paho copies every string, the SSL options and the properties. */
	o->keepAliveInterval = m->keepalive;
	o->maxInflight = (int)m->max_inflight;
	o->username = m->username;
	o->password = m->password;
	o->connectTimeout = 10;
	/* The wiper is retried by the sink, the persistent client by paho
	 * (its first connection included). */
	o->automaticReconnect = !c->wiper;
	o->minRetryInterval = m->reconnect_min;
	o->maxRetryInterval = m->reconnect_max;
	o->context = c;
	if (m->version == MQTTVERSION_5) {
		o->cleanstart = c->wiper;
		if (!c->wiper) {
			MQTTProperty p = { .identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL };

			p.value.integer4 = (unsigned)m->session_expiry;
			MQTTProperties_add(&props, &p);
			o->connectProperties = &props;
		}
		o->onSuccess5 = on_connect_ok5;
		o->onFailure5 = on_connect_fail5;
	} else {
		o->cleansession = c->wiper;
		o->MQTTVersion = MQTTVERSION_3_1_1;
		o->onSuccess = on_connect_ok;
		o->onFailure = on_connect_fail;
	}
	if (m->tls) {
		ssl.trustStore = m->ca_file;
		ssl.keyStore = m->cert_file;
		ssl.privateKey = m->key_file;
		ssl.enableServerCertAuth = !m->insecure;
		ssl.verify = !m->insecure;
		o->ssl = &ssl;
	}
	rc = MQTTAsync_connect(c->client, o);
	MQTTProperties_free(&props);
	if (rc != MQTTASYNC_SUCCESS) {
		connect_failed(c, rc, "the client refused to start connecting");
		return -1;
	}
	return 0;
}

/* A client that is connecting; NULL when paho refused to make or start it
 * (bad options: logged). */
static struct conn *new_client(struct mqtt_sink *m, bool wiper)
{
	MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
	struct conn *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return NULL;
	c->owner = m;
	c->wiper = wiper;
	co.MQTTVersion = m->version;
	co.sendWhileDisconnected = 0;
	/* paho refuses a send while maxBufferedMessages (default 100) are
	 * queued and not yet written; the sink thread outruns paho's writer,
	 * so at the default a window of 256 kept hitting that refusal, and each
	 * one cost a RETRY and the runner's backoff. The window already bounds
	 * what is handed over: let it be the only limit. */
	co.maxBufferedMessages = (int)(m->max_inflight * MSGS_PER_SLOT);
	rc = MQTTAsync_createWithOptions(&c->client, m->uri, m->client_id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
	if (rc != MQTTASYNC_SUCCESS) {
		eh_sink_log(m->sink, MOSQ_LOG_ERR, "cannot create the MQTT client for %s: %s (code %d)", m->uri,
			    MQTTAsync_strerror(rc), rc);
		free(c);
		return NULL;
	}
	if (!wiper) {
		MQTTAsync_setCallbacks(c->client, c, on_connection_lost, on_message_arrived, NULL);
		MQTTAsync_setConnected(c->client, c, on_connected);
	}
	if (start_connect(m, c)) {
		MQTTAsync_destroy(&c->client);
		free(c);
		return NULL;
	}
	return c;
}

static void destroy_client(struct conn **cp)
{
	if (*cp) {
		MQTTAsync_destroy(&(*cp)->client);
		free(*cp);
		*cp = NULL;
	}
}

/* The current client is poisoned: keep it, silent, until the process
 * exits. MQTTAsync_destroy would free the lost message again, so paho's
 * threads keep running for it, and paho must stay mapped even when the
 * broker unloads the plugin. */
static void abandon(struct mqtt_sink *m)
{
	const char *why;

	m->cur->next = m->abandoned;
	m->abandoned = m->cur;
	m->cur = NULL;
	if (m->paho_pinned)
		return;
	why = eh_sink_pin_library((const void *)MQTTAsync_createWithOptions);
	if (!why)
		m->paho_pinned = true;
	else
		eh_sink_log(m->sink, MOSQ_LOG_WARNING, "cannot pin the paho library in memory: %s", why);
}

/* The message charge_loss found the target refuses, if it is still
 * unsettled (it may have been acknowledged on a later connection after
 * all), else NULL; clears the finding. Under lock. */
static struct mqtt_msg *take_poison(struct mqtt_sink *m)
{
	struct mqtt_msg *bad = m->suspect;

	if (!poison_found(m))
		return NULL;
	if (bad->seq != m->suspect_seq || bad->state == MSG_OK || bad->state == MSG_FAILED)
		bad = NULL;
	m->suspect = NULL;
	m->strikes = 0;
	return bad;
}

/* The client that held the window's unsettled messages is gone and calls
 * back no more: all of them go to the next client, oldest first, except
 * bad (may be NULL), which is counted failed. Returns how many are resent;
 * *bad_failed tells whether bad was still unsettled and so was failed here
 * (paho may have settled it after take_poison, before the client went).
 * Under lock. */
static unsigned hand_over(struct mqtt_sink *m, struct mqtt_msg *bad, bool *bad_failed)
{
	*bad_failed = false;
	m->resends = 0;
	for (size_t k = 0; k < m->count; k++) {
		struct slot *s = slot_at(m, k);

		for (int i = 0; i < s->nmsg; i++) {
			struct mqtt_msg *msg = &s->msg[i];

			if (msg->state != MSG_SENT && msg->state != MSG_RESEND)
				continue;
			if (msg == bad) {
				msg->state = MSG_FAILED;
				*bad_failed = true;
			} else {
				msg->state = MSG_RESEND;
				m->resends++;
			}
		}
	}
	changed(m);
	return m->resends;
}

static void log_poison(struct mqtt_sink *m, const struct mqtt_msg *bad)
{
	char shown[EH_QUOTE_LEN];

	eh_sink_log(m->sink, MOSQ_LOG_WARNING, "event seq %llu (a PUBLISH of %zu bytes on '%s') is counted failed: "
		    "the target closed the connection each time it was sent (%d times in a row, each within %d s, "
		    "nothing acknowledged meanwhile); the events after it go on", (unsigned long long)bad->seq,
		    publish_size(m, bad), eh_quote(shown, sizeof(shown), bad->topic), POISON_STRIKES,
		    POISON_SOON_MS / 1000);
}

/* The poisoned client is closed and will call back no more: whatever it had
 * not seen acknowledged goes to the next client (but a poison message:
 * the write that failed may well have followed one the target refused). */
static void retire(struct mqtt_sink *m)
{
	struct mqtt_msg *bad;
	bool bad_failed;
	unsigned n;

	pthread_mutex_lock(&m->lock);
	bad = take_poison(m);
	n = hand_over(m, bad, &bad_failed);
	pthread_mutex_unlock(&m->lock);
	abandon(m);
	eh_sink_log(m->sink, MOSQ_LOG_WARNING, "a publish to %s failed in the middle of a write; the MQTT client is "
		    "replaced (paho.mqtt.c would resend a message it already freed) and %u unacknowledged message(s) "
		    "are published again", m->uri, n);
	if (bad_failed)
		log_poison(m, bad);
}

/* The target closed the connection each time it got a message (see
 * charge_loss): count it failed. paho keeps it in the persistent session
 * and would send it again after every reconnect, with no call to take it
 * out, so the client is replaced (destroying it is safe: this is not the
 * poisoned-write case) and the next one gets, oldest first, everything else
 * that was not acknowledged. Sink thread, with m->cur not poisoned. */
static void drop_poison(struct mqtt_sink *m)
{
	struct mqtt_msg *bad;
	bool bad_failed;

	pthread_mutex_lock(&m->lock);
	bad = take_poison(m);
	pthread_mutex_unlock(&m->lock);
	if (!bad)
		return;
	/* paho fails back ("incomplete") what it still held while destroying;
	 * nothing calls back after it returned. It may also have acknowledged
	 * bad meanwhile: then it was not failed and is not logged. */
	destroy_client(&m->cur);
	pthread_mutex_lock(&m->lock);
	hand_over(m, bad, &bad_failed);
	pthread_mutex_unlock(&m->lock);
	if (bad_failed)
		log_poison(m, bad);
}

/* Moves the connection along: wiper, then the persistent client, and a new
 * wiper after a poisoned client closed or a poison message was dropped. */
static void step_clients(struct mqtt_sink *m)
{
	int64_t now = eh_now_ms();
	bool closed, up, failed, poisoned, poison;

	if (m->cur) {
		pthread_mutex_lock(&m->lock);
		closed = m->cur->closed;
		up = m->cur->up;
		poisoned = m->cur->poisoned;
		poison = poison_found(m);
		pthread_mutex_unlock(&m->lock);
		if (poisoned) {
			/* It cannot be destroyed; retire() deals with a
			 * poison message too, once it closed. */
			if (!closed)
				return;
			retire(m);
		} else if (poison) {
			drop_poison(m);
		} else if (up) {
			m->connect_backoff_ms = 0;
		}
		if (m->cur)
			return;
	}
	if (m->wiper) {
		pthread_mutex_lock(&m->lock);
		up = m->wiper->up;
		failed = m->wiper->failed;
		pthread_mutex_unlock(&m->lock);
		if (!up && !failed)
			return;
		/* Once the target accepted the clean session, the old one is
		 * gone; destroy disconnects it. */
		destroy_client(&m->wiper);
		if (up)
			m->cur = new_client(m, false);
		return;
	}
	if (now < m->next_connect_ms)
		return;
	m->connect_backoff_ms = m->connect_backoff_ms ? m->connect_backoff_ms * 2 : CONNECT_BACKOFF_MIN_MS;
	if (m->connect_backoff_ms > (int64_t)m->reconnect_max * 1000)
		m->connect_backoff_ms = (int64_t)m->reconnect_max * 1000;
	if (m->connect_backoff_ms < CONNECT_BACKOFF_MIN_MS)
		m->connect_backoff_ms = CONNECT_BACKOFF_MIN_MS;
	m->next_connect_ms = now + m->connect_backoff_ms;
	m->wiper = new_client(m, true);
}

/* The persistent client, connected and not poisoned; else NULL. */
static struct conn *usable(struct mqtt_sink *m)
{
	bool ok = false;

	if (!m->cur)
		return NULL;
	pthread_mutex_lock(&m->lock);
	ok = m->cur->up && !m->cur->poisoned;
	pthread_mutex_unlock(&m->lock);
	return ok ? m->cur : NULL;
}

static int send_msg(struct mqtt_sink *m, struct conn *c, struct mqtt_msg *msg)
{
	MQTTAsync_message pm = MQTTAsync_message_initializer;
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	int rc;

	pm.payload = msg->payload;
	pm.payloadlen = msg->len;
	pm.qos = m->qos;
	pm.retained = msg->retained;
	pm.properties = msg->props;
	ro.context = msg;
	if (m->version == MQTTVERSION_5) {
		ro.onSuccess5 = on_publish_ok5;
		ro.onFailure5 = on_publish_fail5;
	} else {
		ro.onSuccess = on_publish_ok;
		ro.onFailure = on_publish_fail;
	}
	pthread_mutex_lock(&m->lock);
	msg->state = MSG_SENT;
	msg->conn = c;
	msg->sent_ms = eh_now_ms();
	msg->acks_at_send = m->acks;
	msg->torn = false;
	pthread_mutex_unlock(&m->lock);
	/* paho copies the topic, the payload and the properties. */
	rc = MQTTAsync_sendMessage(c->client, msg->topic, &pm, &ro);
	if (rc != MQTTASYNC_SUCCESS) {
		pthread_mutex_lock(&m->lock);
		msg->state = MSG_RESEND;
		m->resends++;
		pthread_mutex_unlock(&m->lock);
		return -1;
	}
	return 0;
}

/* Sends again, oldest first, what paho gave back. Returns 0 when nothing
 * is left to resend. */
static int resend_all(struct mqtt_sink *m, struct conn *c)
{
	for (size_t k = 0; k < m->count; k++) {
		struct slot *s = slot_at(m, k);

		for (int i = 0; i < s->nmsg; i++) {
			bool again;

			pthread_mutex_lock(&m->lock);
			again = s->msg[i].state == MSG_RESEND;
			if (again)
				m->resends--;
			pthread_mutex_unlock(&m->lock);
			if (again && send_msg(m, c, &s->msg[i]))
				return -1;
		}
	}
	return 0;
}

/* The client to hand new events to: connected, and nothing older waiting
 * to be resent. */
static struct conn *ready(struct mqtt_sink *m)
{
	struct conn *c;
	unsigned resends;

	step_clients(m);
	if (!(c = usable(m)))
		return NULL;
	pthread_mutex_lock(&m->lock);
	resends = m->resends;
	pthread_mutex_unlock(&m->lock);
	return !resends || !resend_all(m, c) ? c : NULL;
}

/* ---- building messages (sink thread) ---- */

/* A malloc'd copy of the rendered topic, whatever its length (the caller
 * judges it); NULL when out of memory. */
static char *render_topic(struct mqtt_sink *m, const struct eh_template *t, const struct eh_event *ev)
{
	size_t n = eh_template_render(t, ev, m->node, EH_TEMPLATE_TOPIC, m->topic_buf, m->topic_cap);

	if (n >= m->topic_cap) {
		char *grown = realloc(m->topic_buf, n + 1);

		if (!grown)
			return NULL;
		m->topic_buf = grown;
		m->topic_cap = n + 1;
		eh_template_render(t, ev, m->node, EH_TEMPLATE_TOPIC, m->topic_buf, m->topic_cap);
	}
	return strdup(m->topic_buf);
}

static int add_user_prop(MQTTProperties *props, const char *name, const char *value)
{
	MQTTProperty p = { .identifier = MQTTPROPERTY_CODE_USER_PROPERTY };

	p.value.data.data = (char *)name;
	p.value.data.len = (int)strlen(name);
	p.value.value.data = (char *)value;
	p.value.value.len = (int)strlen(value);
	return MQTTProperties_add(props, &p);
}

static int add_content_type(MQTTProperties *props, const char *type)
{
	MQTTProperty p = { .identifier = MQTTPROPERTY_CODE_CONTENT_TYPE };

	p.value.data.data = (char *)type;
	p.value.data.len = (int)strlen(type);
	return MQTTProperties_add(props, &p);
}

/* build_event_msg and build_presence_msg fill msg; -1 only when out of
 * memory (the payload, the topic or a property). */
static int build_event_msg(struct mqtt_sink *m, const struct eh_event *ev, struct mqtt_msg *msg)
{
	bool structured = m->cloudevents && m->version != MQTTVERSION_5;
	char id[EH_ID_LEN + 1], ts[EH_TS_LEN + 1];
	const char *type = eh_event_type_name(ev->type);
	int rc = 0;

	msg->owner = m;
	msg->retained = m->retain;
	/* The message owns its payload (it may be resent after the batch):
	 * a malloc'd copy of the scratch buffer. */
	m->scratch.len = 0;
	rc = structured ? eh_json_write_cloudevent(&m->scratch, ev, m->node)
			: eh_json_write_event(&m->scratch, ev, m->node);
	msg->payload = rc ? NULL : strndup(m->scratch.data, m->scratch.len);
	msg->topic = render_topic(m, &m->topic, ev);
	if (!msg->payload || !msg->topic)
		return -1;
	msg->len = (int)strlen(msg->payload);
	msg->seq = ev->seq;
	if (m->version != MQTTVERSION_5)
		return 0;
	eh_json_format_id(m->node, ev->number, id);
	eh_json_format_ts(ev->ts_ms, ts);
	if (m->cloudevents) {
		/* CloudEvents MQTT binding, binary mode: attributes as user
		 * properties, the event as data. */
		rc |= add_content_type(&msg->props, "application/json");
		rc |= add_user_prop(&msg->props, "specversion", "1.0");
		rc |= add_user_prop(&msg->props, "type", type);
		rc |= add_user_prop(&msg->props, "source", m->node->name);
		rc |= add_user_prop(&msg->props, "id", id);
		rc |= add_user_prop(&msg->props, "time", ts);
	} else {
		rc |= add_content_type(&msg->props, "application/json");
		rc |= add_user_prop(&msg->props, "event", type);
		rc |= add_user_prop(&msg->props, "node", m->node->name);
		rc |= add_user_prop(&msg->props, "id", id);
	}
	return rc ? -1 : 0;
}

static int build_presence_msg(struct mqtt_sink *m, const struct eh_event *ev, struct mqtt_msg *msg)
{
	json_t *o = json_object();
	char id[EH_ID_LEN + 1], ts[EH_TS_LEN + 1];
	const struct eh_bytes *cid = &ev->f[EH_F_CLIENTID];
	int rc = 0;

	msg->owner = m;
	msg->retained = true;
	if (!o)
		return -1;
	eh_json_format_id(m->node, ev->number, id);
	eh_json_format_ts(ev->ts_ms, ts);
	rc |= json_object_set_new(o, "clientid", eh_json_string_bytes(cid->ptr, cid->len, NULL));
	rc |= json_object_set_new(o, "status", json_string(ev->type == EH_EV_CONNECTED ? "online" : "offline"));
	rc |= json_object_set_new(o, "node", json_string(m->node->name));
	rc |= json_object_set_new(o, "ts", json_string(ts));
	rc |= json_object_set_new(o, "event_id", json_string(id));
	msg->payload = rc ? NULL : eh_json_dumps(o, JSON_COMPACT);
	json_decref(o);
	msg->topic = render_topic(m, &m->presence, ev);
	if (!msg->payload || !msg->topic)
		return -1;
	msg->len = (int)strlen(msg->payload);
	msg->seq = ev->seq;
	if (m->version == MQTTVERSION_5 && add_content_type(&msg->props, "application/json"))
		return -1;
	return 0;
}

/* Whether every message of the event's slot can be published. One that
 * cannot is logged (first 10, then every 1000th, per kind) and the caller
 * counts the event failed: a topic paho would corrupt (it writes the length
 * as 16 bits: the rest of a longer topic would be read as packet id and
 * payload, so a client could forge events), or an empty one, or a packet
 * larger than MQTT allows (a payload of about 200 MB, base64 in the event,
 * with a queue_bytes that holds it), or one the MQTT 5 target announced it
 * would refuse by disconnecting. Sent anyway, either would make the target
 * close the connection each time, until the backstop gave the event up. */
static bool slot_fits(struct mqtt_sink *m, const struct eh_event *ev, struct slot *s)
{
	uint32_t limit;

	pthread_mutex_lock(&m->lock);
	limit = m->max_packet;
	pthread_mutex_unlock(&m->lock);
	for (int i = 0; i < s->nmsg; i++) {
		struct mqtt_msg *msg = &s->msg[i];
		const char *unfit = eh_template_topic_unfit(strlen(msg->topic));
		const char *what = i ? "presence topic" : "topic";
		size_t size;

		if (unfit) {
			if (eh_sink_log_due(&m->unfit_logged))
				eh_sink_log(m->sink, MOSQ_LOG_WARNING, "the %s for event seq %llu is %s; not published",
					    what, (unsigned long long)ev->seq, unfit);
			return false;
		}
		size = publish_size(m, msg);
		if (size > MQTT_PACKET_MAX || (limit && size > limit)) {
			bool any = size > MQTT_PACKET_MAX;
			char shown[EH_QUOTE_LEN];

			if (eh_sink_log_due(&m->oversize_logged))
				eh_sink_log(m->sink, MOSQ_LOG_WARNING, "event seq %llu: the PUBLISH on '%s' would be %zu "
					    "bytes, over the %u %s; not published",
					    (unsigned long long)ev->seq, eh_quote(shown, sizeof(shown), msg->topic), size,
					    any ? MQTT_PACKET_MAX : limit,
					    any ? "an MQTT packet can be" : "the target accepts (its Maximum Packet Size)");
			return false;
		}
	}
	return true;
}

/* ---- hooks ---- */

static int mqtt_open(void *ctx)
{
	struct mqtt_sink *m = ctx;

	if (m->tls && m->insecure)
		eh_sink_log(m->sink, MOSQ_LOG_WARNING, "plugin_opt_mqtt_tls_insecure: the certificate of %s is NOT "
			    "verified", m->uri);
	/* paho refusing to make or start the first client is a configuration
	 * problem (URI, user name): the runner retries open with backoff. */
	m->next_connect_ms = 0;
	step_clients(m);
	return m->wiper ? 0 : -1;
}

static bool window_full(struct mqtt_sink *m)
{
	size_t limit;

	pthread_mutex_lock(&m->lock);
	limit = m->limit;
	pthread_mutex_unlock(&m->lock);
	return m->count >= limit;
}

/* c may take a new event now: still the current client, connected, not
 * poisoned, and nothing older waits to be resent (that goes first). */
static bool takes_new(struct mqtt_sink *m, struct conn *c)
{
	bool ok;

	if (m->cur != c)
		return false;
	pthread_mutex_lock(&m->lock);
	ok = c->up && !c->poisoned && !m->resends;
	pthread_mutex_unlock(&m->lock);
	return ok;
}

/* Waits until something was signalled after `seen` was read, or until
 * until_ms (eh_now_ms clock, which is cond's clock). */
static void wait_change(struct mqtt_sink *m, unsigned long seen, int64_t until_ms)
{
	struct timespec ts = { .tv_sec = until_ms / 1000, .tv_nsec = (long)(until_ms % 1000) * 1000000L };

	pthread_mutex_lock(&m->lock);
	while (m->changes == seen) {
		if (pthread_cond_timedwait(&m->cond, &m->lock, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&m->lock);
}

/* Waits for room in the window, for as long as the target takes to
 * acknowledge: answering RETRY instead would idle the sink for the runner's
 * backoff while room may already be there. Returns the client to send to,
 * or NULL when there is none (connection lost, client poisoned: the
 * connection's own backoff applies) or the drain deadline has passed. */
static struct conn *wait_room(struct mqtt_sink *m)
{
	for (;;) {
		unsigned long seen;
		struct conn *c;
		int64_t now, until;

		pthread_mutex_lock(&m->lock);
		seen = m->changes;
		pthread_mutex_unlock(&m->lock);
		settle(m);
		if (!(c = ready(m)))
			return NULL;
		if (!window_full(m))
			return c;
		now = eh_now_ms();
		until = eh_sink_deadline_ms(m->sink);
		if (now >= until)
			return NULL;
		if (until - now > ROOM_WAIT_MAX_MS)
			until = now + ROOM_WAIT_MAX_MS;
		wait_change(m, seen, until);
	}
}

static enum eh_deliver_rc mqtt_deliver(void *ctx, struct eh_batch *b)
{
	struct mqtt_sink *m = ctx;
	struct conn *c;

	settle(m);
	if (!(c = ready(m))) {
		b->done = 0;
		return EH_DELIVER_RETRY;
	}
	for (size_t i = 0; i < b->count; i++) {
		const struct eh_event *ev = &b->events[i];
		struct slot *s;
		bool presence = m->has_presence && (ev->type == EH_EV_CONNECTED || ev->type == EH_EV_DISCONNECTED);

		/* Lost, poisoned, or paho handed messages back meanwhile
		 * (ready resends those before anything new). */
		if (!takes_new(m, c) && !(c = ready(m))) {
			b->done = i;
			return EH_DELIVER_RETRY;
		}
		if (window_full(m) && !(c = wait_room(m))) {
			b->done = i;
			return EH_DELIVER_RETRY;
		}
		s = &m->win[(m->head + m->count) % m->max_inflight];
		s->nmsg = presence ? 2 : 1;
		if (build_event_msg(m, ev, &s->msg[0]) || (presence && build_presence_msg(m, ev, &s->msg[1]))) {
			slot_clear(s);
			b->done = i;
			return eh_sink_out_of_memory(m->sink, "an event's MQTT message");
		}
		if (!slot_fits(m, ev, s)) {
			/* Neither message goes: the event is failed either way,
			 * and half of it would only mislead. */
			slot_clear(s);
			eh_sink_count(m->sink, 0, 1);
			continue;
		}
		if (send_msg(m, c, &s->msg[0])) {
			/* Not accepted (the connection just went): the event
			 * stays in the ring. */
			pthread_mutex_lock(&m->lock);
			m->resends--;
			pthread_mutex_unlock(&m->lock);
			slot_clear(s);
			b->done = i;
			return EH_DELIVER_RETRY;
		}
		pthread_mutex_lock(&m->lock);
		m->count++;
		pthread_mutex_unlock(&m->lock);
		if (presence && send_msg(m, c, &s->msg[1])) {
			/* Kept for resending, in order, before anything new. */
			b->done = i + 1;
			return EH_DELIVER_RETRY;
		}
	}
	return EH_DELIVER_OK;
}

static void mqtt_poll(void *ctx)
{
	struct mqtt_sink *m = ctx;

	settle(m);
	ready(m);
}

/* A deliver waiting for room must see the drain deadline the stop request
 * just set. */
static void mqtt_wake(void *ctx)
{
	struct mqtt_sink *m = ctx;

	if (!m->sync_made)
		return;
	pthread_mutex_lock(&m->lock);
	changed(m);
	pthread_mutex_unlock(&m->lock);
}

/* Disconnects and destroys the clients, waiting for the disconnect until
 * deadline; a poisoned client is abandoned instead. */
static void close_clients(struct mqtt_sink *m, int64_t deadline)
{
	MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
	int64_t rest = deadline - eh_now_ms();
	bool up, poisoned;

	destroy_client(&m->wiper);
	if (!m->cur)
		return;
	pthread_mutex_lock(&m->lock);
	up = m->cur->up;
	poisoned = m->cur->poisoned;
	pthread_mutex_unlock(&m->lock);
	if (poisoned) {
		abandon(m);
		return;
	}
	if (rest < 100)
		rest = 100;
	if (rest > 2000)
		rest = 2000;
	d.timeout = (int)rest;
	d.onSuccess = on_disconnect_done;
	d.onFailure = on_disconnect_fail;
	d.context = m->cur;
	if (up && MQTTAsync_disconnect(m->cur->client, &d) == MQTTASYNC_SUCCESS) {
		int64_t until = eh_now_ms() + rest;

		while (eh_now_ms() < until) {
			unsigned long seen;
			bool done;

			pthread_mutex_lock(&m->lock);
			done = m->cur->disconnected;
			seen = m->changes;
			pthread_mutex_unlock(&m->lock);
			if (done)
				break;
			wait_change(m, seen, until);
		}
	}
	/* Pending messages fail back to us here; they are already counted as
	 * left and no longer matter. */
	destroy_client(&m->cur);
}

static uint64_t mqtt_flush(void *ctx, int64_t timeout_ms)
{
	struct mqtt_sink *m = ctx;
	int64_t deadline = eh_now_ms() + timeout_ms;
	uint64_t left;

	for (;;) {
		int64_t now = eh_now_ms();
		unsigned long seen;

		/* Read before settling: an acknowledgement that lands after
		 * settle() has looked must end the wait, not be slept through. */
		pthread_mutex_lock(&m->lock);
		seen = m->changes;
		pthread_mutex_unlock(&m->lock);
		settle(m);
		if (!m->count || now >= deadline)
			break;
		ready(m);
		/* The cap lets ready() run its reconnect timers meanwhile. */
		wait_change(m, seen, deadline - now < 50 ? deadline : now + 50);
	}
	left = m->count;
	close_clients(m, deadline);
	return left;
}

static void mqtt_destroy(void *ctx)
{
	struct mqtt_sink *m = ctx;

	if (!m)
		return;
	/* The sink's thread destroyed its clients (mqtt_flush) before it
	 * ended. This is the broker thread, whose descriptor table may not be
	 * the one paho's threads hold the sockets in (eh_sink_set_own_files_if_sole,
	 * below): destroying a client from here could close a broker
	 * descriptor of the same number. One still here is left alone. */
	if (m->cur || m->wiper)
		eh_sink_log(m->sink, MOSQ_LOG_ERR, "its MQTT client outlived the sink's thread and is left open");
	/* Abandoned clients stay, with their struct conn (the context of their
	 * callbacks, which never come) and paho's copies of their messages. */
	if (m->win) {
		for (size_t i = 0; i < m->max_inflight; i++)
			slot_clear(&m->win[i]);
	}
	free(m->win);
	if (m->password) {
		explicit_bzero(m->password, strlen(m->password));
		free(m->password);
	}
	free(m->uri);
	free(m->client_id);
	free(m->username);
	free(m->ca_file);
	free(m->cert_file);
	free(m->key_file);
	free(m->topic_buf);
	eh_template_free(&m->topic);
	eh_template_free(&m->presence);
	if (m->sync_made) {
		pthread_mutex_destroy(&m->lock);
		pthread_cond_destroy(&m->cond);
	}
	eh_buf_free(&m->scratch);
	free(m);
}

static int dup_opt(const struct eh_config *cfg, const char *key, char **out)
{
	const char *v = eh_config_get(cfg, key);

	*out = NULL;
	if (!v)
		return 0;
	*out = strdup(v);
	return *out ? 0 : -1;
}

static int check_readable(const char *key, const char *path, char *err, size_t errlen)
{
	if (path && access(path, R_OK)) {
		snprintf(err, errlen, "plugin_opt_%s: cannot read '%s': %s", key, path, strerror(errno));
		return -1;
	}
	return 0;
}

static int check_uri(struct mqtt_sink *m, char *err, size_t errlen)
{
	static const char *const plain[] = { "tcp://", "mqtt://", "ws://" };
	static const char *const secure[] = { "ssl://", "mqtts://", "wss://" };

	for (size_t i = 0; i < 3; i++) {
		if (!strncmp(m->uri, plain[i], strlen(plain[i])) && m->uri[strlen(plain[i])])
			return 0;
		if (!strncmp(m->uri, secure[i], strlen(secure[i])) && m->uri[strlen(secure[i])]) {
			m->tls = true;
			return 0;
		}
	}
	snprintf(err, errlen, "plugin_opt_mqtt_uri: '%s' is not tcp://, mqtt://, ssl://, mqtts://, ws:// or "
		 "wss:// followed by host:port", m->uri);
	return -1;
}

/* paho refuses a client id or user name that is not UTF-8 at every
 * connect (MQTTASYNC_BAD_UTF8_STRING), and an MQTT string holds at most
 * 65535 bytes: say so at start, naming the option, rather than fail
 * forever later. (An option's value cannot hold a NUL byte, and the UTF-8
 * check refuses its overlong forms.) */
static int check_mqtt_string(const char *key, const char *v, char *err, size_t errlen)
{
	size_t len = v ? strlen(v) : 0, ok = v ? eh_utf8_valid_prefix(v, len) : 0;

	if (ok != len) {
		snprintf(err, errlen, "plugin_opt_%s: not valid UTF-8 (at byte %zu)", key, ok);
		return -1;
	}
	if (len > EH_TOPIC_MAX) {
		snprintf(err, errlen, "plugin_opt_%s: %zu bytes; an MQTT string is at most %d", key, len, EH_TOPIC_MAX);
		return -1;
	}
	return 0;
}

static int mqtt_create(const struct eh_sink_env *env, void **ctx, char *err, size_t errlen)
{
	const struct eh_config *cfg = env->config;
	struct mqtt_sink *m = calloc(1, sizeof(*m));
	const char *v;
	char why[400];

	*ctx = m;
	if (!m)
		goto oom;
	m->sink = env->sink;
	m->node = env->node;
	if (pthread_mutex_init(&m->lock, NULL))
		goto oom;
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		if (pthread_cond_init(&m->cond, &ca)) {
			pthread_condattr_destroy(&ca);
			pthread_mutex_destroy(&m->lock);
			goto oom;
		}
		pthread_condattr_destroy(&ca);
	}
	m->sync_made = true;
	if (dup_opt(cfg, "mqtt_uri", &m->uri) || dup_opt(cfg, "mqtt_username", &m->username)
	    || dup_opt(cfg, "mqtt_ca_file", &m->ca_file) || dup_opt(cfg, "mqtt_cert_file", &m->cert_file)
	    || dup_opt(cfg, "mqtt_key_file", &m->key_file) || dup_opt(cfg, "mqtt_client_id", &m->client_id))
		goto oom;
	if (check_uri(m, err, errlen))
		return -1;
	if (!m->client_id) {
		size_t n = strlen("eventhook-") + strlen(m->node->name) + 1;

		if (!(m->client_id = malloc(n)))
			goto oom;
		snprintf(m->client_id, n, "eventhook-%s", m->node->name);
	}
	if (!*m->client_id) {
		snprintf(err, errlen, "plugin_opt_mqtt_client_id: must not be empty (the session is persistent)");
		return -1;
	}
	if (check_mqtt_string("mqtt_client_id", m->client_id, err, errlen)
	    || check_mqtt_string("mqtt_username", m->username, err, errlen))
		return -1;
	v = eh_config_get(cfg, "mqtt_password_file");
	if (v && !(m->password = eh_read_secret_file("mqtt_password_file", v, err, errlen)))
		return -1;
	if (m->password && !m->username) {
		snprintf(err, errlen, "plugin_opt_mqtt_password_file: needs plugin_opt_mqtt_username");
		return -1;
	}
	if (check_readable("mqtt_ca_file", m->ca_file, err, errlen)
	    || check_readable("mqtt_cert_file", m->cert_file, err, errlen)
	    || check_readable("mqtt_key_file", m->key_file, err, errlen))
		return -1;
	m->insecure = eh_config_bool(cfg, "mqtt_tls_insecure");
	if (!m->tls && (m->ca_file || m->cert_file || m->key_file || eh_config_isset(cfg, "mqtt_tls_insecure"))) {
		snprintf(err, errlen, "plugin_opt_mqtt_uri: TLS options are set but '%s' is not ssl://, mqtts:// or "
			 "wss://", m->uri);
		return -1;
	}
	if (m->key_file && !m->cert_file) {
		snprintf(err, errlen, "plugin_opt_mqtt_key_file: needs plugin_opt_mqtt_cert_file");
		return -1;
	}
	if (eh_template_parse(&m->topic, eh_config_get(cfg, "mqtt_topic"), why, sizeof(why))) {
		snprintf(err, errlen, "plugin_opt_mqtt_topic: %s", why);
		return -1;
	}
	if (eh_template_check_topic(&m->topic, "mqtt_topic", eh_config_get(cfg, "mqtt_topic"), err, errlen))
		return -1;
	v = eh_config_get(cfg, "mqtt_presence_topic");
	if (v) {
		if (eh_template_parse(&m->presence, v, why, sizeof(why))) {
			snprintf(err, errlen, "plugin_opt_mqtt_presence_topic: %s", why);
			return -1;
		}
		if (eh_template_check_topic(&m->presence, "mqtt_presence_topic", v, err, errlen))
			return -1;
		m->has_presence = true;
	}
	m->qos = (int)eh_config_int(cfg, "mqtt_qos");
	m->retain = eh_config_bool(cfg, "mqtt_retain");
	m->version = !strcmp(eh_config_get(cfg, "mqtt_protocol"), "5") ? MQTTVERSION_5 : MQTTVERSION_3_1_1;
	m->cloudevents = !strcmp(eh_config_get(cfg, "mqtt_format"), "cloudevents");
	m->max_inflight = (size_t)eh_config_int(cfg, "mqtt_max_inflight");
	m->limit = m->max_inflight;
	m->keepalive = (int)eh_config_int(cfg, "mqtt_keepalive");
	m->reconnect_min = (int)eh_config_int(cfg, "mqtt_reconnect_min");
	m->reconnect_max = (int)eh_config_int(cfg, "mqtt_reconnect_max");
	if (m->reconnect_max < m->reconnect_min) {
		snprintf(err, errlen, "plugin_opt_mqtt_reconnect_max: must be at least plugin_opt_mqtt_reconnect_min");
		return -1;
	}
	m->session_expiry = (int)eh_config_int(cfg, "mqtt_session_expiry");
	m->win = calloc(m->max_inflight, sizeof(*m->win));
	m->topic_cap = 256;
	m->topic_buf = malloc(m->topic_cap);
	if (!m->win || !m->topic_buf)
		goto oom;
	if (eh_sink_exclude_client_id(env->sink, m->client_id)) {
		snprintf(err, errlen, "plugin_opt_mqtt_client_id: cannot register '%s' for exclusion", m->client_id);
		return -1;
	}
	eh_sink_set_batching(env->sink, m->max_inflight < 512 ? m->max_inflight : 512, 0);
	/* RETRY means "not connected" (a full window is waited for inside
	 * deliver): retry soon; the connection itself has its own backoff.
	 * Never give up: events beyond the queue's capacity are dropped at
	 * capture, the rest wait. */
	eh_sink_set_retry(env->sink, 20, 250, -1);
	/* paho's two threads serve every MQTTAsync client of the process. They
	 * are started by the first MQTTAsync_connect and share that thread's
	 * descriptor table; they alone open sockets and write to them, but
	 * MQTTAsync_destroy of a client still connected (or connecting) closes
	 * its socket on the calling thread, in that thread's table. Every
	 * create, connect and destroy of ours runs on this sink's thread
	 * (mqtt_flush destroys the clients before the thread ends; destroy
	 * finds none), so that thread and paho's can leave the broker's table
	 * together, unless other code could be a paho user too: another
	 * plugin, or a second block of ours (per-listener settings), whose
	 * threads would share paho's threads from another table. */
	eh_sink_set_own_files_if_sole(env->sink);
	return 0;
oom:
	snprintf(err, errlen, "out of memory");
	return -1;
}

const struct eh_sink_ops eh_sink_mqtt_ops = {
	.name = "mqtt",
	.enable_key = "mqtt_uri",
	.options = mqtt_options,
	.title = "MQTT sink",
	.flags = EH_SINK_ASYNC_ACK,
	.create = mqtt_create,
	.open = mqtt_open,
	.deliver = mqtt_deliver,
	.poll = mqtt_poll,
	.wake = mqtt_wake,
	.flush = mqtt_flush,
	.destroy = mqtt_destroy,
};
