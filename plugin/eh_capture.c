/*
 * eh_capture: Mosquitto callbacks to events.
 *
 * Mosquitto 2.0 has no "connected", "subscribed" or "disconnect reason"
 * events, so they are derived from the order of the events it does have, as
 * worked out in docs/capture.md:
 * - BASIC_AUTH / EXT_AUTH_START start a pending connection. It becomes
 *   accepted at the client's next event or at the next TICK (a refusal
 *   always produces DISCONNECT before the loop reaches TICK); DISCONNECT of a
 *   pending client whose id the broker already freed is a refusal. The
 *   client.connect event is held back until the outcome is known so that a
 *   taken-over session's client.disconnected always comes first.
 * - An ACL WRITE check directly followed by MESSAGE for the same client is
 *   an accepted PUBLISH; followed by anything else it was denied.
 * - DISCONNECT of a live client while another connection with the same id
 *   is pending is a session takeover. A session that can outlive its
 *   connection is remembered as offline after its DISCONNECT, so that the
 *   DISCONNECT the broker gives it when a connection with its id resumes
 *   or replaces it produces nothing (as does one for a pointer we no
 *   longer track, with such a pending client).
 * - A will is an ACL WRITE check with no MESSAGE either, and is not a
 *   denied publish: is_will tells it by who is checked and what came just
 *   before.
 * Registering BASIC_AUTH or ACL_CHECK is neutral only when another provider
 * answers in the scope; eh_scope tells which exist, and where none does a
 * second callback at the tail of the list ("tail") gives the answer the
 * broker would have given with no callback at all.
 *
 * Callbacks only copy into the client table and emit through eh_core_emit:
 * no I/O, and allocation only when a client connects (none while the
 * table's spare entries last) and when a held ACL check's topic, behind a
 * listener's mount_point, is longer than any before (hold_check).
 */
#include "eh_capture.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "eh_mosquitto.h"

#include "eh_clients.h"
#include "eh_optwatch.h"
#include "eh_scope.h"

#define TOPIC_MAX 65536
/* About 10,000 wills of short topics at a broker's stop. */
#define DENIALS_BYTES (1u << 20)

struct held_denial {
	const void *client;
	int64_t ts_ms;
	uint32_t topic_len; /* the topic's bytes follow */
	uint8_t qos, action;
	bool retain;
};

struct eh_capture {
	struct eh_core *core;
	mosquitto_plugin_id_t *pid;
	int index;
	struct eh_scope_info scope;
	struct eh_clients clients;

	bool v21;           /* the broker accepted the 2.1 events */
	bool auth_on, acl_on;             /* head callbacks registered */
	bool message_on;
	bool auth_tail_want, acl_tail_want;
	bool auth_tail_on, acl_tail_on;
	bool tails_stale;   /* a reload re-appended the built-ins behind our tails */
	bool tails_todo;    /* place_tails has something to do (at start, after a reload or a failure) */
	bool granted_known; /* every SUBSCRIBE that reaches ACL is granted */
	bool tick_seen;
	bool tick_warned;   /* the start warning about a missing TICK was logged */
	bool opts_known;    /* our plugin_opt_ lines read from the file are what the broker gave */
	int64_t last_chores_ms;

	/* Re-authentication checks after SIGHUP: until TICK, or without TICK
	 * until the first callback that cannot be one (no_tick_step). */
	bool reload_window;
	/* The client of the last BASIC_AUTH or EXT_AUTH_START, until any
	 * callback but a READ check (a restored session's deliveries) or a
	 * takeover's will check clears it: a connection it replaces is
	 * disconnected only after those (connect__on_authorised), and the
	 * rules for a takeover's will and disconnect need the new one. */
	struct mosquitto *last_auth;
	const void *just_disconnected; /* its will's WRITE check follows */
	bool stopping;      /* in cleanup: the broker has freed every client */

	/* An ACL WRITE check waiting for its MESSAGE (or, on 2.1, a SUBSCRIBE
	 * check waiting for its SUBSCRIBE event). */
	bool write_pending;
	/* Denials an ACL check resolved, kept (as struct held_denial records)
	 * until a callback that is not an ACL check shows the broker still in
	 * its loop: after its last TICK, 2.0.11 checks the wills of the
	 * clients still connected exactly like their publishes, with nothing
	 * else between them and the plugin's cleanup, which drops what is
	 * left. DENIALS_BYTES, allocated at the first one. */
	unsigned char *denials;
	size_t denials_used;
	uint8_t write_action; /* enum eh_action */
	const void *write_client;
	struct eh_client *write_entry; /* write_client's, for its MESSAGE */
	uint8_t write_qos;
	bool write_retain;
	uint32_t write_topic_len;
	char *write_topic; /* write_cap bytes: TOPIC_MAX, more with a mount_point */
	size_t write_cap;
	uint64_t hold_failed; /* allocation failures of a longer write_topic */

	/* The client whose $CONTROL/ publish the broker is handling, until a
	 * callback a dynamic-security kick cannot make (kick_recheck). */
	const void *control_by;
	/* On 2.1, the held checks that the reason of the next DISCONNECT or
	 * CLIENT_OFFLINE may show to be no client action (note_held_21): the
	 * client whose WRITE check was held last, with only READ checks since,
	 * and the client whose qos 0 SUBSCRIBE checks were held one straight
	 * after the other; else NULL. Kept (resolve_write), their records run
	 * from *_from to *_end in denials. */
	const void *will_client, *recheck_client;
	size_t will_from, will_end, recheck_from, recheck_end;

	uint64_t closed_before_auth;
	/* plugin_opt_payload_max_bytes; UINT32_MAX when unset, above any MQTT
	 * payload (268435455 bytes at most), so the hot path is one compare. */
	uint32_t payload_max;

	/* What reg() registered, unregistered at cleanup: Mosquitto 2.0 frees
	 * only the callbacks a plugin unregisters (the rest leak at exit). */
	struct {
		int event;
		MOSQ_FUNC_generic_callback cb;
	} regs[16];
	size_t nregs;
};

static void emit(struct eh_capture *cap, struct eh_event *ev);

static struct eh_capture *cap_of(void *user)
{
	return ((struct eh_core *)user)->capture;
}

/* ---- event building ---- */

/* Every field is stored, none left to a memset: this runs for every event.
 * ts_ms is the event's time (the attempt's, for a held client.connect). */
static void ev_from_client(struct eh_event *ev, unsigned type, const struct eh_client *c, int64_t ts_ms)
{
	ev->number = 0;
	ev->seq = 0;
	ev->ts_ms = ts_ms;
	ev->connected_ms = 0; /* and payload_size: the same slot */
	ev->keepalive = c->keepalive;
	ev->type = (uint8_t)type;
	ev->proto_ver = c->proto_ver;
	ev->qos = 0;
	ev->reason = EH_REASON_NONE;
	ev->action = EH_ACTION_NONE;
	ev->flags = c->flags;
	ev->f[EH_F_CLIENTID] = (struct eh_bytes){ c->id, c->id_len };
	ev->f[EH_F_USERNAME] = (struct eh_bytes){ c->user, c->user_len };
	ev->f[EH_F_PEER] = (struct eh_bytes){ c->peer, c->peer_len };
	ev->f[EH_F_TOPIC] = (struct eh_bytes){ NULL, 0 };
	ev->f[EH_F_PAYLOAD] = (struct eh_bytes){ NULL, 0 };
}
/* A field added to struct eh_event must be set above too (eh_event.h's
 * assertions stop the build at such a field to say so). */

/* The client.connect held back until the attempt's outcome is known. */
static void emit_owed_connect(struct eh_capture *cap, struct eh_client *c)
{
	struct eh_event ev;

	if (c->attempt_seen && eh_core_wants(cap->core, EH_EV_CONNECT)) {
		ev_from_client(&ev, EH_EV_CONNECT, c, c->ts_ms);
		emit(cap, &ev);
	}
	c->attempt_seen = false;
}

static void emit_connected(struct eh_capture *cap, struct eh_client *c, bool inferred)
{
	struct eh_event ev;

	emit_owed_connect(cap, c);
	if (eh_core_wants(cap->core, EH_EV_CONNECTED)) {
		ev_from_client(&ev, EH_EV_CONNECTED, c, c->ts_ms);
		if (inferred)
			ev.flags |= EH_EVF_INFERRED;
		emit(cap, &ev);
	}
}

/* A pending connection accepted, or a client first seen at a reload's
 * re-checks whose own event shows a connection, not an offline session. */
static void promote_now(struct eh_capture *cap, struct eh_client *c)
{
	/* The keepalive the broker applies: it lowers an MQTT 5 client's to
	 * max_keepalive after authentication, in connect__on_authorised, which
	 * has run by now. (At cleanup the broker has freed its clients.) */
	if (!cap->stopping)
		c->keepalive = (uint16_t)mosquitto_client_keepalive((const struct mosquitto *)c->key);
	eh_clients_set_state(&cap->clients, c, EH_CLIENT_LIVE);
	emit_connected(cap, c, !cap->v21);
}

/* Inline: every event of a connected client asks. */
static inline void promote(struct eh_capture *cap, struct eh_client *c)
{
	if (c->state == EH_CLIENT_PENDING || c->state == EH_CLIENT_RECHECKED)
		promote_now(cap, c);
}

static void emit_disconnected(struct eh_capture *cap, struct eh_client *c, unsigned reason)
{
	struct eh_event ev;

	/* Never seen to act since a reload's re-checks (at shutdown): an
	 * offline session, or a connection that never acted, which cannot be
	 * told apart; neither had a client.connected. */
	if (c->state == EH_CLIENT_RECHECKED || !eh_core_wants(cap->core, EH_EV_DISCONNECTED))
		return;
	ev_from_client(&ev, EH_EV_DISCONNECTED, c, eh_wall_ms());
	ev.reason = (uint8_t)reason;
	ev.connected_ms = eh_now_ms() - c->mono_ms;
	ev.flags &= (uint16_t)~EH_EVF_CLEAN_START;
	ev.flags |= EH_EVF_HAS_CONNECTED_MS;
	emit(cap, &ev);
}

static void emit_connect_failed(struct eh_capture *cap, struct eh_client *c, unsigned reason)
{
	struct eh_event ev;

	emit_owed_connect(cap, c);
	if (eh_core_wants(cap->core, EH_EV_CONNECT_FAILED)) {
		ev_from_client(&ev, EH_EV_CONNECT_FAILED, c, eh_wall_ms());
		ev.reason = (uint8_t)reason;
		ev.flags &= (uint16_t)~EH_EVF_CLEAN_START;
		emit(cap, &ev);
	}
}

static void emit_topic_event(struct eh_capture *cap, struct eh_client *c, unsigned type, const char *topic,
			     size_t topic_len, unsigned qos)
{
	struct eh_event ev;

	ev_from_client(&ev, type, c, eh_wall_ms());
	ev.flags &= (uint16_t)~EH_EVF_CLEAN_START;
	ev.qos = (uint8_t)qos;
	ev.f[EH_F_TOPIC] = (struct eh_bytes){ topic, (uint32_t)topic_len };
	if (type == EH_EV_SUBSCRIBE && cap->granted_known)
		ev.flags |= EH_EVF_GRANTED_KNOWN | EH_EVF_GRANTED;
	emit(cap, &ev);
}

/* ---- client table ---- */

static struct eh_client *track(struct eh_capture *cap, struct mosquitto *client, enum eh_client_state state)
{
	const char *id = mosquitto_client_id(client);
	const char *user = mosquitto_client_username(client);
	struct eh_client *c;

	/* A sink's own connection: never tracked, so none of its events
	 * (connect, publish, disconnect) exist. */
	if (id && eh_core_client_excluded(cap->core, id))
		return NULL;
	c = eh_clients_add(&cap->clients, client, id, user, mosquitto_client_address(client));
	if (!c)
		return NULL;
	c->proto_ver = (uint8_t)mosquitto_client_protocol_version(client);
	c->keepalive = (uint16_t)mosquitto_client_keepalive(client);
	c->flags = (uint16_t)((user ? EH_EVF_HAS_USERNAME : 0)
			      | (mosquitto_client_clean_session(client) ? EH_EVF_CLEAN_START : 0)
			      | (mosquitto_client_protocol(client) == mp_websockets ? EH_EVF_WEBSOCKETS : 0));
	c->ts_ms = eh_wall_ms();
	c->mono_ms = eh_now_ms();
	eh_clients_set_state(&cap->clients, c, state);
	return c;
}

static bool same_id(const struct eh_client *c, const char *id)
{
	return id && strlen(id) == c->id_len && !memcmp(id, c->id, c->id_len);
}

static bool maybe_offline(const struct eh_client *c)
{
	return c->state == EH_CLIENT_OFFLINE || c->state == EH_CLIENT_RECHECKED;
}

/* The entry of client. One that may be an offline session but whose id is
 * not the client's is stale: the broker freed that session without telling
 * us (expiry) and reused its memory for another client. It is dropped. */
static struct eh_client *offline_current(struct eh_capture *cap, const struct mosquitto *client, struct eh_client *c)
{
	if (!same_id(c, mosquitto_client_id(client))) {
		eh_clients_remove(&cap->clients, c);
		return NULL;
	}
	return c;
}

/* Inline, with the lookup: every check and message of a client asks. */
static inline struct eh_client *find_current(struct eh_capture *cap, const struct mosquitto *client)
{
	struct eh_client *c = eh_clients_find(&cap->clients, client);

	return c && maybe_offline(c) ? offline_current(cap, client, c) : c;
}

/* The client behind a non-auth event, whose entry find_current gave:
 * promotes a pending one, adopts one we never saw authenticate (TLS
 * identity listeners, or a plugin before us decided), ignores the broker's
 * fake retain-source client. */
static struct eh_client *known_entry_now(struct eh_capture *cap, struct mosquitto *client, struct eh_client *c)
{
	if (c && c->state == EH_CLIENT_OFFLINE) {
		/* An offline session neither subscribes nor publishes: the broker
		 * freed it without telling us and reused its memory for a client
		 * we never saw authenticate, under the same client id. */
		eh_clients_remove(&cap->clients, c);
		c = NULL;
	}
	if (c) {
		promote(cap, c);
		return c;
	}
	if (client == cap->just_disconnected || !mosquitto_client_id(client))
		return NULL;
	c = track(cap, client, EH_CLIENT_LIVE);
	if (c)
		emit_connected(cap, c, true);
	return c;
}

/* Inline front test: a connected client's entry is what it was. */
static inline struct eh_client *known_entry(struct eh_capture *cap, struct mosquitto *client, struct eh_client *c)
{
	return c && c->state == EH_CLIENT_LIVE ? c : known_entry_now(cap, client, c);
}

static struct eh_client *known_client(struct eh_capture *cap, struct mosquitto *client)
{
	if (!client || !mosquitto_client_address(client))
		return NULL;
	return known_entry(cap, client, find_current(cap, client));
}

/* ---- inference steps shared by every callback ---- */

static void emit_denial(struct eh_capture *cap, const struct held_denial *d, const char *topic)
{
	struct eh_client *c = eh_clients_find(&cap->clients, d->client);
	struct eh_event ev;

	if (!c)
		return;
	ev_from_client(&ev, EH_EV_AUTHZ_DENIED, c, d->ts_ms);
	ev.flags &= (uint16_t)~EH_EVF_CLEAN_START;
	if (d->retain && d->action != EH_ACTION_SUBSCRIBE)
		ev.flags |= EH_EVF_RETAIN;
	ev.qos = d->qos;
	ev.action = d->action;
	ev.f[EH_F_TOPIC] = (struct eh_bytes){ topic, d->topic_len };
	eh_core_emit(cap->core, &ev);
}

/* Records are read back with memcpy: no alignment needed. */
static size_t held_size(uint32_t topic_len)
{
	return sizeof(struct held_denial) + topic_len;
}

/* The denials kept so far are real: the broker is still in its loop. */
static void confirm_denials(struct eh_capture *cap)
{
	for (size_t at = 0; at < cap->denials_used;) {
		struct held_denial d;

		memcpy(&d, cap->denials + at, sizeof(d));
		emit_denial(cap, &d, (const char *)cap->denials + at + sizeof(d));
		at += held_size(d.topic_len);
	}
	cap->denials_used = 0;
}

/* The ACL check held for its MESSAGE did not get it: it was denied. by_acl:
 * this callback is itself an ACL check, so the denial is kept for
 * confirm_denials (it may be a will at the broker's stop). */
static void resolve_write_now(struct eh_capture *cap, bool by_acl)
{
	struct held_denial d;
	size_t need;

	cap->write_pending = false;
	if (!eh_core_wants(cap->core, EH_EV_AUTHZ_DENIED) || !eh_clients_find(&cap->clients, cap->write_client))
		return;
	d = (struct held_denial){ cap->write_client, eh_wall_ms(), cap->write_topic_len, cap->write_qos,
				  cap->write_action, cap->write_retain };
	need = held_size(d.topic_len);
	if (by_acl && need <= DENIALS_BYTES && !cap->denials)
		cap->denials = malloc(DENIALS_BYTES);
	if (!by_acl || !cap->denials || need > DENIALS_BYTES) {
		confirm_denials(cap);
		emit_denial(cap, &d, cap->write_topic);
		return;
	}
	/* Full: the oldest are confirmed rather than anything lost. */
	if (cap->denials_used + need > DENIALS_BYTES)
		confirm_denials(cap);
	memcpy(cap->denials + cap->denials_used, &d, sizeof(d));
	memcpy(cap->denials + cap->denials_used + sizeof(d), cap->write_topic, d.topic_len);
	cap->denials_used += need;
}

/* One test on the path of every callback: nothing is held after a MESSAGE
 * took its check. */
static inline void resolve_write(struct eh_capture *cap, bool by_acl)
{
	if (cap->write_pending)
		resolve_write_now(cap, by_acl);
}

/* Capture's events go out after the denials kept before them, in order. */
static void emit(struct eh_capture *cap, struct eh_event *ev)
{
	if (cap->denials_used)
		confirm_denials(cap);
	eh_core_emit(cap->core, ev);
}

static void promote_all_pending(struct eh_capture *cap)
{
	while (cap->clients.pending)
		promote(cap, cap->clients.pending);
}

/* Mosquitto 2.0.11-2.0.14 never call TICK with per_listener_settings, so
 * what TICK ends is ended at the first callback that cannot belong to it.
 * A SIGHUP's re-checks (security_apply_default, right after the RELOAD
 * callbacks and before the loop reads any socket) make only BASIC_AUTH,
 * DISCONNECT of a client that has an id, and the will's WRITE and READ
 * checks of a client they disconnect; a will's checks follow its
 * DISCONNECT directly. */
static void no_tick_step(struct eh_capture *cap, bool recheck, bool will)
{
	if (cap->tick_seen)
		return;
	if (!recheck)
		cap->reload_window = false;
	if (!will)
		cap->just_disconnected = NULL;
}

/* What a callback ends by coming, before its own work: the reload's
 * re-checks or a will's checks unless it can be one (no_tick_step), a
 * dynamic-security command's kicks unless it can be one of those, and the
 * ACL check held for the event that proves it allowed (resolve_write);
 * one that is not an ACL check also shows the kept denials real. */
static void step(struct eh_capture *cap, bool recheck, bool will, bool kick, bool acl)
{
	no_tick_step(cap, recheck, will);
	if (!kick)
		cap->control_by = NULL;
	if (!acl && cap->denials_used)
		confirm_denials(cap);
	resolve_write(cap, acl);
}

static void chores(struct eh_capture *cap, bool pass_end)
{
	cap->last_chores_ms = eh_now_ms();
	eh_core_tick(cap->core, cap->last_chores_ms, pass_end);
}

/* Without TICK (per_listener_settings on 2.0.11-2.0.14) the periodic work
 * rides on other callbacks. */
static void maybe_chores(struct eh_capture *cap)
{
	if (!cap->tick_seen && eh_now_ms() - cap->last_chores_ms >= 100)
		chores(cap, false);
}

/* ---- tails ---- */

static int auth_tail(int event, void *event_data, void *user)
{
	struct eh_capture *cap = cap_of(user);

	(void)event;
	(void)event_data;
	/* Reached only when every callback before deferred: answer what the
	 * broker answers with no callback at all. */
	return cap->scope.allow_anonymous ? MOSQ_ERR_SUCCESS : MOSQ_ERR_PLUGIN_DEFER;
}

static int acl_tail(int event, void *event_data, void *user)
{
	(void)event;
	(void)event_data;
	(void)user;
	return MOSQ_ERR_SUCCESS;
}

/* Called from the head callbacks, so that the tails are appended after the
 * broker's built-in checks (which are appended at security init and again
 * at every reload). Re-registering a tail while the list is iterated is
 * safe: only our own later node is freed, never the running one. */
static void place_tails_now(struct eh_capture *cap)
{
	if (cap->tails_stale) {
		if (cap->auth_tail_on)
			mosquitto_callback_unregister(cap->pid, MOSQ_EVT_BASIC_AUTH, auth_tail, NULL);
		if (cap->acl_tail_on)
			mosquitto_callback_unregister(cap->pid, MOSQ_EVT_ACL_CHECK, acl_tail, NULL);
		cap->auth_tail_on = cap->acl_tail_on = false;
		cap->tails_stale = false;
	}
	/* A tail only ever stands behind our own head callback. */
	if (cap->auth_tail_want && cap->auth_on && !cap->auth_tail_on)
		cap->auth_tail_on = mosquitto_callback_register(cap->pid, MOSQ_EVT_BASIC_AUTH, auth_tail, NULL,
								cap->core) == MOSQ_ERR_SUCCESS;
	if (cap->acl_tail_want && cap->acl_on && !cap->acl_tail_on)
		cap->acl_tail_on = mosquitto_callback_register(cap->pid, MOSQ_EVT_ACL_CHECK, acl_tail, NULL,
							       cap->core) == MOSQ_ERR_SUCCESS;
	/* A failed registration is tried again at the next callback. */
	cap->tails_todo = (cap->auth_tail_want && cap->auth_on && !cap->auth_tail_on)
			  || (cap->acl_tail_want && cap->acl_on && !cap->acl_tail_on);
}

/* One test on the path of every publish. */
static inline void place_tails(struct eh_capture *cap)
{
	if (cap->tails_todo)
		place_tails_now(cap);
}

/* ---- callbacks ---- */

static void start_attempt(struct eh_capture *cap, struct mosquitto *client)
{
	struct eh_client *c = find_current(cap, client);

	/* The broker re-checking a client after SIGHUP. Without TICK, an
	 * offline session we saw go offline is held like a client first seen
	 * there (below): the broker may have freed it and reused its memory
	 * for a new connection with the same id. */
	if (c && cap->reload_window && (cap->tick_seen || c->state != EH_CLIENT_OFFLINE))
		return;
#if EH_HAVE_21
	/* 2.1 acts on SIGHUP after the loop's client I/O and ticks before the
	 * next, so every check in the window is a re-check, also of offline
	 * sessions, which on 2.1 keep their address. */
	if (cap->v21 && cap->reload_window)
		return;
#endif
	if (c) {
		/* The broker freed that context without telling us (silent
		 * session expiry) and reused the memory. */
		eh_clients_remove(&cap->clients, c);
	}
	if (cap->reload_window && mosquitto_client_protocol(client) != mp_websockets) {
		/* 2.0 acts on SIGHUP after the loop's socket I/O; until the tick
		 * only websocket clients can connect. Anything else is the broker
		 * re-checking an offline durable session (which keeps its
		 * address). */
		if (cap->tick_seen)
			return;
		/* Without TICK the window closes only at a callback the
		 * re-checks cannot make, and a new connection may come first. A
		 * clean MQTT 3.1/3.1.1 session is never kept offline: that one
		 * is new. Any other is held like an attempt: its own next event
		 * makes it a connection (promote), a DISCONNECT that frees its id
		 * a refusal; an offline session makes neither (on_disconnect). */
		if (mosquitto_client_protocol_version(client) >= 5 || !mosquitto_client_clean_session(client)) {
			c = track(cap, client, EH_CLIENT_RECHECKED);
			if (c)
				c->attempt_seen = true;
			return;
		}
	}
	c = track(cap, client, EH_CLIENT_PENDING);
	if (c)
		c->attempt_seen = true;
}

/* The new connection (pending, or first seen at a re-check) whose
 * authentication is what came just before, under the client id id, if any:
 * one that replaces a connection or session with that id. */
static struct eh_client *replaced_by(struct eh_capture *cap, const void *client, const char *id)
{
	struct eh_client *by;

	if (!cap->last_auth || cap->last_auth == client || !id)
		return NULL;
	by = eh_clients_find(&cap->clients, cap->last_auth);
	if (!by || (by->state != EH_CLIENT_PENDING && by->state != EH_CLIENT_RECHECKED) || !same_id(by, id))
		return NULL;
	return by;
}

static int on_basic_auth(int event, void *event_data, void *user)
{
	struct eh_capture *cap = cap_of(user);
	struct mosquitto_evt_basic_auth *ed = event_data;

	(void)event;
	step(cap, true, false, false, false);
	cap->last_auth = ed->client;
	place_tails(cap);
	start_attempt(cap, ed->client);
	maybe_chores(cap);
#if EH_HAVE_21
	if (cap->v21)
		return MOSQ_ERR_PLUGIN_IGNORE;
#endif
	return MOSQ_ERR_PLUGIN_DEFER;
}

static int on_ext_auth_start(int event, void *event_data, void *user)
{
	struct eh_capture *cap = cap_of(user);
	struct mosquitto_evt_extended_auth *ed = event_data;
	struct eh_client *c;

	(void)event;
	step(cap, false, false, false, false);
	cap->last_auth = ed->client;
	c = find_current(cap, ed->client);
	/* (a connected client's START is an MQTT 5 re-authentication) */
	if (!c || maybe_offline(c))
		start_attempt(cap, ed->client);
	return MOSQ_ERR_PLUGIN_DEFER;
}

/* A listener's mount_point comes in front of a topic of up to 65535 bytes:
 * the held topic's buffer grows to the longest once. Returns false, and
 * logs, when it cannot. */
static bool hold_grow(struct eh_capture *cap, size_t len)
{
	char *bigger = len <= UINT32_MAX ? realloc(cap->write_topic, len) : NULL;

	if (!bigger) {
		if (eh_sink_log_due(&cap->hold_failed))
			mosquitto_log_printf(MOSQ_LOG_WARNING, "eventhook: out of memory holding a %zu-byte topic's "
					     "authorization check; a denial there is not reported", len);
		return false;
	}
	cap->write_topic = bigger;
	cap->write_cap = len;
	return true;
}

/* Keeps an ACL check until the event that proves it was allowed. Inline:
 * every publish's check comes here. */
static inline void hold_check(struct eh_capture *cap, const struct mosquitto_evt_acl_check *ed, unsigned action)
{
	size_t len = strlen(ed->topic);

	if (len > cap->write_cap && !hold_grow(cap, len))
		return;
	memcpy(cap->write_topic, ed->topic, len);
	cap->write_topic_len = (uint32_t)len;
	cap->write_client = ed->client;
	cap->write_qos = ed->qos;
	cap->write_retain = ed->retain;
	cap->write_action = (uint8_t)action;
	cap->write_pending = true;
}

/* A dynamic-security command that kicks a client (disableClient,
 * deleteClient, a role or group change) makes Debian's 2.0.11, with the
 * CVE-2021-34434 backport, re-check each subscription of a durable kicked
 * client with a SUBSCRIBE check at qos 0 and then disconnect it, all while
 * it handles the command's $CONTROL/ publish: before any other client's
 * packet, and with nothing between but the kicks' DISCONNECTs (dynsec kicks
 * without the will). A client with no subscription yet has nothing to
 * re-check. */
static bool kick_recheck(const struct eh_capture *cap, const struct mosquitto_evt_acl_check *ed)
{
	/* 2.1 tells a kick's re-checks by the reason it gives after them
	 * (note_held_21); its own dynsec kicks from its TICK anyway, long after
	 * the $CONTROL/ publish. */
	return !cap->v21 && cap->control_by && ed->access == MOSQ_ACL_SUBSCRIBE && ed->qos == 0
	       && ed->client != cap->control_by && mosquitto_client_sub_count(ed->client) > 0;
}

#if EH_HAVE_21
/* Mosquitto 2.1 (seen at dd2c25c) makes two kinds of ACL checks, with no
 * MESSAGE or SUBSCRIBE event after them, right before it disconnects the
 * client checked and names the reason:
 * - At a takeover, the old connection's will (its WRITE check, then READ
 *   checks for its deliveries), before its DISCONNECT for
 *   SESSION_TAKEN_OVER. 2.0's rule for it (is_will) needs the new
 *   connection's BASIC_AUTH just before; this one also holds when the new
 *   connection was accepted without it: by certificate identity, at the
 *   last step of extended authentication, or by a plugin's delayed
 *   answer (mosquitto_complete_basic_auth).
 * - At a kick (mosquitto_kick_client_by_*: the dynamic-security plugin's
 *   TICK, or the $CONTROL/ handler of 2.0's build of it), a SUBSCRIBE check
 *   at qos 0 of each subscription of a session that outlives its
 *   connection, before its CLIENT_OFFLINE for ADMINISTRATIVE_ACTION.
 * Held like a PUBLISH or a SUBSCRIBE, they would read as denials. So after
 * each ACL check the held one that may be such is noted, and the DISCONNECT
 * of its client drops it for the matching reason (drop_held_21). A real
 * SUBSCRIBE cannot come right before such a CLIENT_OFFLINE: the kick comes
 * from another plugin's callback, and our TICK or the $CONTROL/ publish's
 * own check comes between. A denied PUBLISH can come right before such a
 * DISCONNECT only in the same loop pass as a takeover that sends no will,
 * by a connection accepted without BASIC_AUTH. */
static void note_held_21(struct eh_capture *cap, const struct mosquitto_evt_acl_check *ed)
{
	/* step cleared write_pending: it is set only if this check was held. */
	bool held = cap->write_pending && cap->write_client == ed->client;
	size_t end = cap->denials_used + held_size(cap->write_topic_len);

	/* A READ check's step keeps the WRITE held before it: the kept records
	 * then end where that one's was to end. (Any other callback confirms
	 * every kept record, and empties the list.) */
	if (held && ed->access == MOSQ_ACL_WRITE) {
		cap->will_client = ed->client;
		cap->will_from = cap->denials_used;
		cap->will_end = end;
	} else if (ed->access != MOSQ_ACL_READ || cap->denials_used != cap->will_end) {
		cap->will_client = NULL;
	}
	if (!held || ed->access != MOSQ_ACL_SUBSCRIBE || ed->qos != 0 || mosquitto_client_sub_count(ed->client) <= 0) {
		cap->recheck_client = NULL;
		return;
	}
	/* The run goes on if this check's step kept the last one. */
	if (cap->recheck_client != ed->client || cap->denials_used != cap->recheck_end)
		cap->recheck_from = cap->denials_used;
	cap->recheck_client = ed->client;
	cap->recheck_end = end;
}

/* Drops the checks noted for client (from, up to end), held or kept, if
 * nothing came after them. */
static void drop_noted(struct eh_capture *cap, const void *client, unsigned action, size_t from, size_t end)
{
	if (cap->write_pending) {
		if (cap->write_client != client || cap->write_action != action)
			return;
		cap->write_pending = false;
		end -= held_size(cap->write_topic_len);
	}
	if (from <= end && cap->denials_used == end)
		cap->denials_used = from;
}

/* The DISCONNECT or CLIENT_OFFLINE of client for reason (a MOSQ_ERR_*
 * code), before its events. */
static void drop_held_21(struct eh_capture *cap, const void *client, int reason)
{
	if (reason == MOSQ_ERR_SESSION_TAKEN_OVER && cap->will_client == client)
		drop_noted(cap, client, EH_ACTION_PUBLISH, cap->will_from, cap->will_end);
	else if (reason == MOSQ_ERR_ADMINISTRATIVE_ACTION && cap->recheck_client == client)
		drop_noted(cap, client, EH_ACTION_SUBSCRIBE, cap->recheck_from, cap->recheck_end);
	cap->will_client = cap->recheck_client = NULL;
}
#endif

/* Whether the check held for client and action was for topic (then it was
 * allowed). Sets *len to topic's length (0 for NULL), which on a match is
 * the held topic's: the topic of every allowed publish is measured once, at
 * its check. */
static bool check_allowed(struct eh_capture *cap, const void *client, unsigned action, const char *topic, size_t *len)
{
	if (cap->write_pending && cap->write_action == action && cap->write_client == client) {
		uint32_t n = cap->write_topic_len;

		/* The bytes, not the pointer: a MESSAGE whose WRITE check a plugin
		 * before us answered can have its topic where a denied one was.
		 * strncmp, not memcmp: it stops at the end of a shorter topic
		 * (the held one has no NUL in its n bytes). */
		if (topic ? !strncmp(topic, cap->write_topic, n) && topic[n] == '\0' : n == 0) {
			cap->write_pending = false;
			*len = n;
			return true;
		}
	}
	*len = topic ? strlen(topic) : 0;
	return false;
}

/* Whether an ACL WRITE check is a will, which the broker sends without a
 * MESSAGE event: held like a PUBLISH it would read as a denial. (The will
 * of a client without an entry sent right after its DISCONNECT is
 * known_client's just_disconnected.) c is client's entry from find_current.
 * - The check of a session we saw go offline, or first saw at a reload's
 *   re-checks: its will, sent right after the DISCONNECT, after its will
 *   delay, when the session expires or at shutdown. The entry stays, for
 *   the DISCONNECT that comes if a new connection resumes the session. (A
 *   client first seen at the re-checks may instead be a new connection
 *   publishing: a MESSAGE after the check shows it, and makes it a client;
 *   its denied first publish is not reported.)
 * - A connected client's check right after the authentication of a new
 *   connection with the same client id, which the broker accepted (a
 *   refusal frees the new id first): at a takeover 2.0 sends the old
 *   connection's will in connect__on_authorised, before disconnecting it,
 *   with no other callback in between. A PUBLISH of the old connection
 *   cannot come there: the authentication and connect__on_authorised run
 *   in one go, and a refused TCP connection is disconnected before the
 *   next packet is read. (Multi-step extended authentication breaks both
 *   ways: its last step, which accepts, has no event for us, and a START
 *   answered with CONTINUE leaves the old connection running; see
 *   docs/capture.md.) */
static bool is_will(struct eh_capture *cap, struct eh_client *c, struct mosquitto *client)
{
	/* 2.1's order at a takeover is the same, but it names the takeover in
	 * the DISCONNECT that follows, which tells a will exactly, also with no
	 * BASIC_AUTH before it (note_held_21). */
	if (!cap->v21 && cap->last_auth && replaced_by(cap, client, mosquitto_client_id(client))) {
		/* A takeover's will. The old one, if first seen at the
		 * re-checks, was a connection: an offline session's will is
		 * sent at its disconnect or after its delay, never here. Its
		 * DISCONNECT, after the will's deliveries, still needs
		 * last_auth. */
		if (c)
			promote(cap, c);
		return true;
	}
	if (c && maybe_offline(c)) {
		cap->last_auth = NULL;
		return true;
	}
	return false;
}

static int on_acl_check(int event, void *event_data, void *user)
{
	struct eh_capture *cap = cap_of(user);
	struct mosquitto_evt_acl_check *ed = event_data;
	struct eh_client *c = NULL;
	bool will = ed->access == MOSQ_ACL_READ
		    || (ed->access == MOSQ_ACL_WRITE && ed->client == cap->just_disconnected);
	bool kick = kick_recheck(cap, ed);

	(void)event;
	step(cap, will, will, kick, true);
	place_tails(cap);
	maybe_chores(cap);
	if (ed->access == MOSQ_ACL_READ) /* deliveries, also of a takeover's will */
		goto out;
	if (kick || !ed->client || !mosquitto_client_address(ed->client))
		goto drop_auth;
	/* One lookup per check: this is the path of every publish. */
	c = find_current(cap, ed->client);
	if (ed->access == MOSQ_ACL_WRITE && is_will(cap, c, ed->client))
		goto out;
	c = known_entry(cap, ed->client, c);
drop_auth:
	cap->last_auth = NULL;
	if (!c || !ed->topic)
		goto out;
	switch (ed->access) {
	case MOSQ_ACL_SUBSCRIBE:
		if (!cap->v21 && eh_core_wants(cap->core, EH_EV_SUBSCRIBE))
			emit_topic_event(cap, c, EH_EV_SUBSCRIBE, ed->topic, strlen(ed->topic), ed->qos);
		else if (cap->v21 && eh_core_wants(cap->core, EH_EV_AUTHZ_DENIED))
			hold_check(cap, ed, EH_ACTION_SUBSCRIBE);
		break;
	case MOSQ_ACL_UNSUBSCRIBE:
		if (!cap->v21 && eh_core_wants(cap->core, EH_EV_UNSUBSCRIBE))
			emit_topic_event(cap, c, EH_EV_UNSUBSCRIBE, ed->topic, strlen(ed->topic), 0);
		break;
	case MOSQ_ACL_WRITE:
		if (ed->topic[0] == '$' && !strncmp(ed->topic, "$CONTROL/", 9)) {
			/* The broker hands $CONTROL/ publishes to its control
			 * handler with no MESSAGE event, allowed or not: neither
			 * outcome can be told, so neither is reported. */
			cap->control_by = ed->client;
			break;
		}
		if (eh_core_wants(cap->core, EH_EV_AUTHZ_DENIED)) {
			hold_check(cap, ed, EH_ACTION_PUBLISH);
			cap->write_entry = c;
		}
		break;
	default:
		break;
	}
out:
#if EH_HAVE_21
	if (cap->v21) {
		note_held_21(cap, ed);
		return MOSQ_ERR_PLUGIN_IGNORE;
	}
#endif
	return MOSQ_ERR_PLUGIN_DEFER;
}

static int on_message(int event, void *event_data, void *user)
{
	struct eh_capture *cap = cap_of(user);
	struct mosquitto_evt_message *ed = event_data;
	struct eh_client *c;
	size_t len;
	/* The WRITE check this MESSAGE follows was allowed. No callback came
	 * between them (each one resolves a held check), so the entry that
	 * check found is still the client's: one lookup per publish. */
	bool allowed = check_allowed(cap, ed->client, EH_ACTION_PUBLISH, ed->topic, &len);

	(void)event;
	step(cap, false, false, false, false);
	cap->last_auth = NULL;
	c = allowed ? cap->write_entry : known_client(cap, ed->client);
	if (c && eh_core_wants(cap->core, EH_EV_PUBLISH)) {
		struct eh_event ev;
		uint32_t kept;

		ev_from_client(&ev, EH_EV_PUBLISH, c, eh_wall_ms());
		ev.flags &= (uint16_t)~EH_EVF_CLEAN_START;
		if (ed->retain)
			ev.flags |= EH_EVF_RETAIN;
		ev.qos = ed->qos;
		ev.f[EH_F_TOPIC] = (struct eh_bytes){ ed->topic, (uint32_t)len };
		/* Cut here, before packing, so that the bytes left out are never
		 * copied into a ring nor counted against queue_bytes. */
		kept = ed->payloadlen < cap->payload_max ? ed->payloadlen : cap->payload_max;
		ev.payload_size = ed->payloadlen;
		ev.f[EH_F_PAYLOAD] = (struct eh_bytes){ ed->payload, kept };
		emit(cap, &ev);
	}
	maybe_chores(cap);
	/* An observer must not change or refuse the message. */
	return MOSQ_ERR_SUCCESS;
}

/* The MOSQ_ERR_* code 2.1 hands to DISCONNECT and CLIENT_OFFLINE (the
 * argument of the broker's do_disconnect) as one of our reason names. */
static unsigned reason_21(int reason)
{
#if EH_HAVE_21
	switch (reason) {
	case MOSQ_ERR_SUCCESS:
		return EH_REASON_NORMAL;
	case MOSQ_ERR_CONN_LOST:
	case MOSQ_ERR_ERRNO: /* a socket error, e.g. a reset */
		return EH_REASON_CONNECTION_LOST;
	case MOSQ_ERR_KEEPALIVE:
		return EH_REASON_KEEPALIVE_TIMEOUT;
	case MOSQ_ERR_SESSION_TAKEN_OVER:
		return EH_REASON_SESSION_TAKEN_OVER;
	case MOSQ_ERR_AUTH:
	case MOSQ_ERR_BAD_USERNAME_OR_PASSWORD:
	case MOSQ_ERR_BAD_AUTHENTICATION_METHOD:
		return EH_REASON_NOT_AUTHORIZED;
	case MOSQ_ERR_ADMINISTRATIVE_ACTION:
		return EH_REASON_ADMINISTRATIVE_ACTION;
	case MOSQ_ERR_PROTOCOL:
	case MOSQ_ERR_MALFORMED_UTF8:
	case MOSQ_ERR_DUPLICATE_PROPERTY:
	case MOSQ_ERR_TOPIC_ALIAS_INVALID:
	case MOSQ_ERR_NOT_SUPPORTED:
		return EH_REASON_PROTOCOL_ERROR;
	case MOSQ_ERR_MALFORMED_PACKET:
		return EH_REASON_MALFORMED_PACKET;
	case MOSQ_ERR_OVERSIZE_PACKET:
	case MOSQ_ERR_PAYLOAD_SIZE:
		return EH_REASON_PAYLOAD_TOO_LARGE;
	case MOSQ_ERR_RECEIVE_MAXIMUM_EXCEEDED:
	case MOSQ_ERR_QUOTA_EXCEEDED:
		return EH_REASON_QUOTA_EXCEEDED;
	case MOSQ_ERR_SERVER_BUSY:
		return EH_REASON_SERVER_BUSY;
	default:
		return EH_REASON_UNKNOWN;
	}
#else
	(void)reason;
	return EH_REASON_UNKNOWN;
#endif
}

/* The DISCONNECT of a client first seen at a reload's re-checks. Still
 * holding its id, it is an offline session: a connection with its id
 * replaces it (the DISCONNECT follows that connection's BASIC_AUTH), or it
 * failed its re-check (the DISCONNECT follows its own); then it is
 * forgotten, true is returned, and the DISCONNECT must come to nothing. */
static bool offline_session_ends(struct eh_capture *cap, struct eh_client *c, const void *client, const char *id)
{
	if (id && ((cap->reload_window && cap->last_auth == client) || replaced_by(cap, client, id))) {
		eh_clients_remove(&cap->clients, c);
		return true;
	}
	if (!id) /* the broker freed it: a refused new connection */
		eh_clients_set_state(&cap->clients, c, EH_CLIENT_PENDING);
	return false;
}

/* Whether a new connection with the client id id is waiting to replace the
 * connection or session of client (other than the entry except). */
static bool being_replaced(struct eh_capture *cap, const struct eh_client *except, const void *client,
			   const char *id, size_t len)
{
	return eh_clients_pending_with_id(&cap->clients, except, id, len) || replaced_by(cap, client, id);
}

/* The events of a DISCONNECT; id is the client's id, NULL if the broker
 * freed it. */
static void disconnected(struct eh_capture *cap, const struct mosquitto_evt_disconnect *ed, const char *id)
{
	struct eh_client *c = eh_clients_find(&cap->clients, ed->client);
	bool offline = false;

	if (c && c->state == EH_CLIENT_RECHECKED && offline_session_ends(cap, c, ed->client, id))
		return;
	if (c && c->state == EH_CLIENT_OFFLINE) {
		bool same = same_id(c, id);

		eh_clients_remove(&cap->clients, c);
		c = NULL;
		/* The offline session resumed or discarded by a new connection
		 * with its id: nothing to report. (Under another id the broker
		 * reused its memory for a client we never saw authenticate.) */
		if (same)
			return;
	}
	if (!c) {
		if (!id) {
			cap->closed_before_auth++;
			return;
		}
		/* This broker's own connection to another one (a bridge) has no
		 * peer address: not a client, so it has no events. */
		if (!mosquitto_client_address(ed->client))
			return;
		/* An old offline session being replaced: nothing to report. */
		if (being_replaced(cap, NULL, ed->client, id, strlen(id)))
			return;
		c = track(cap, ed->client, EH_CLIENT_LIVE);
		if (!c)
			return;
		emit_connected(cap, c, true);
	}
	if (c->state == EH_CLIENT_PENDING && (!id || cap->v21)) {
		unsigned reason = cap->v21 ? reason_21(ed->reason) : EH_REASON_NOT_AUTHORIZED;

		emit_connect_failed(cap, c, reason);
	} else {
		unsigned reason = EH_REASON_UNKNOWN;

		promote(cap, c);
		if (cap->v21) {
			reason = reason_21(ed->reason);
			/* A connected client refused by authentication is the
			 * broker re-checking it after SIGHUP. */
			if (reason == EH_REASON_NOT_AUTHORIZED)
				reason = EH_REASON_REAUTH_FAILED;
		}
		else if (being_replaced(cap, c, ed->client, c->id, c->id_len))
			reason = EH_REASON_SESSION_TAKEN_OVER;
		emit_disconnected(cap, c, reason);
		/* A session that can outlive its connection (an MQTT 5 one, with
		 * a session expiry or a will delay we cannot see, or a durable
		 * 3.1.x one) is kept: its later will, or the DISCONNECT of its
		 * resume, is then known as its own even if no connection of ours
		 * is pending (a client authenticated by another plugin). The
		 * session of a takeover ends here. */
		offline = (c->proto_ver == 5 || !(c->flags & EH_EVF_CLEAN_START))
			  && reason != EH_REASON_SESSION_TAKEN_OVER;
	}
	if (offline)
		eh_clients_set_state(&cap->clients, c, EH_CLIENT_OFFLINE);
	else
		eh_clients_remove(&cap->clients, c);
}

static int on_disconnect(int event, void *event_data, void *user)
{
	struct eh_capture *cap = cap_of(user);
	struct mosquitto_evt_disconnect *ed = event_data;
	const char *id = mosquitto_client_id(ed->client);

	(void)event;
#if EH_HAVE_21
	if (cap->v21)
		drop_held_21(cap, ed->client, ed->reason);
#endif
	/* (a kick's DISCONNECT is one of a dynamic-security command's) */
	step(cap, id != NULL, false, true, false);
	cap->just_disconnected = ed->client;
	disconnected(cap, ed, id);
	cap->last_auth = NULL;
	maybe_chores(cap);
	return MOSQ_ERR_SUCCESS;
}

static int on_tick(int event, void *event_data, void *user)
{
	struct eh_capture *cap = cap_of(user);

	(void)event;
	(void)event_data;
	/* Only ever true once: the first tick of a broker that has them. */
	if (!cap->tick_seen && cap->tick_warned)
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "eventhook: this broker calls TICK with per_listener_settings "
				     "after all: the earlier warning about stalls does not apply");
	cap->tick_seen = true;
	confirm_denials(cap);
	resolve_write(cap, false);
	if (!cap->v21)
		promote_all_pending(cap);
	cap->just_disconnected = NULL;
	cap->reload_window = false;
	cap->last_auth = NULL;
	cap->control_by = NULL;
	chores(cap, true);
#if EH_HAVE_21
	/* 2.1 sleeps until its next timed event, up to a day when idle (unless
	 * built with websockets), and a TICK callback may ask for sooner. The
	 * chores drain what sink threads left for the broker thread (the local
	 * sink's outbox, log lines), so keep 2.0's cadence of about 10 Hz. */
	if (cap->v21)
		((struct mosquitto_evt_tick *)event_data)->next_ms = 100;
#endif
	return MOSQ_ERR_SUCCESS;
}

#if EH_HAVE_21
/* Mosquitto 2.1: exact events. */
static int on_connect_21(int event, void *event_data, void *user)
{
	struct eh_capture *cap = cap_of(user);
	struct mosquitto_evt_connect *ed = event_data;
	struct eh_client *c;

	(void)event;
	confirm_denials(cap);
	resolve_write(cap, false);
	c = eh_clients_find(&cap->clients, ed->client);
	if (c && c->state == EH_CLIENT_OFFLINE) {
		/* memory of a freed offline session, reused */
		eh_clients_remove(&cap->clients, c);
		c = NULL;
	}
	if (!c) {
		c = track(cap, ed->client, EH_CLIENT_PENDING);
		if (!c)
			return MOSQ_ERR_SUCCESS;
	}
	promote(cap, c);
	return MOSQ_ERR_SUCCESS;
}

static int on_subscribe_21(int event, void *event_data, void *user)
{
	struct eh_capture *cap = cap_of(user);
	struct mosquitto_evt_subscribe *ed = event_data;
	const char *topic = ed->data.topic_filter;
	size_t len;
	struct eh_client *c;

	(void)event;
	check_allowed(cap, ed->client, EH_ACTION_SUBSCRIBE, topic, &len);
	confirm_denials(cap);
	resolve_write(cap, false);
	c = known_client(cap, ed->client);
	if (c && topic && eh_core_wants(cap->core, EH_EV_SUBSCRIBE)) {
		bool saved = cap->granted_known;

		/* 2.1 fires SUBSCRIBE only for filters the ACL allowed. */
		cap->granted_known = true;
		emit_topic_event(cap, c, EH_EV_SUBSCRIBE, topic, len, (unsigned)(ed->data.options & 0x03));
		cap->granted_known = saved;
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_unsubscribe_21(int event, void *event_data, void *user)
{
	struct eh_capture *cap = cap_of(user);
	struct mosquitto_evt_unsubscribe *ed = event_data;
	const char *topic = ed->data.topic_filter;
	struct eh_client *c;

	(void)event;
	confirm_denials(cap);
	resolve_write(cap, false);
	c = known_client(cap, ed->client);
	if (c && topic && eh_core_wants(cap->core, EH_EV_UNSUBSCRIBE))
		emit_topic_event(cap, c, EH_EV_UNSUBSCRIBE, topic, strlen(topic), 0);
	return MOSQ_ERR_SUCCESS;
}

static int on_client_offline_21(int event, void *event_data, void *user)
{
	struct mosquitto_evt_client_offline *ed = event_data;
	struct mosquitto_evt_disconnect d;

	memset(&d, 0, sizeof(d));
	d.client = ed->client;
	d.reason = ed->reason;
	return on_disconnect(event, &d, user);
}
#endif

static void decide_registration(struct eh_capture *cap);

static int on_reload(int event, void *event_data, void *user)
{
	struct eh_capture *cap = cap_of(user);
	const char *override = eh_config_get(&cap->core->config, "config_file");
	char self[4096] = "";
	Dl_info info;

	(void)event;
	(void)event_data;
	confirm_denials(cap);
	resolve_write(cap, false);
	cap->last_auth = NULL;
	cap->control_by = NULL;
	if (dladdr((void *)eh_capture_init, &info) && info.dli_fname)
		snprintf(self, sizeof(self), "%s", info.dli_fname);
	eh_scope_learn(&cap->scope, override, self, cap->index);
	if (cap->scope.known && cap->opts_known)
		eh_optwatch_report(&cap->core->config, cap->scope.path, self, cap->index);
	decide_registration(cap);
	cap->tails_stale = true;
	cap->tails_todo = true;
	cap->reload_window = true;
	eh_core_reload(cap->core);
	/* Anything but DEFER would skip the broker's own reload of its
	 * password and ACL files. */
	return MOSQ_ERR_PLUGIN_DEFER;
}

/* ---- registration ---- */

/* Only what some sink wants is registered: a callback nobody needs still
 * costs the broker a dispatch per packet, and a broker without an ACL
 * callback runs exactly its own checks.
 * - ACL_CHECK gives subscribe and unsubscribe on 2.0 and every authz
 *   denial; for presence it is also the earliest sign that a pending
 *   connection was accepted (when TICK is missing, as with
 *   per_listener_settings on 2.0.11) and where a client that never
 *   authenticated through us (certificate identity) is first seen.
 * - MESSAGE gives publishes and proves a WRITE check was allowed. */
#define EH_NEED_ACL (EH_EV_BIT(EH_EV_SUBSCRIBE) | EH_EV_BIT(EH_EV_UNSUBSCRIBE) | EH_EV_BIT(EH_EV_AUTHZ_DENIED))
#define EH_NEED_PRESENCE (EH_EV_BIT(EH_EV_CONNECT) | EH_EV_BIT(EH_EV_CONNECTED))
#define EH_NEED_MESSAGE (EH_EV_BIT(EH_EV_PUBLISH) | EH_EV_BIT(EH_EV_AUTHZ_DENIED))

/* Which of our callbacks are neutral in this scope (docs/capture.md). */
static void decide_registration(struct eh_capture *cap)
{
	const struct eh_scope_info *s = &cap->scope;

	cap->auth_tail_want = false;
	cap->acl_tail_want = false;
	if (!s->known || cap->v21)
		return;
	/* A v2-v4 plugin without a password check never answers
	 * authentication, so the tail still gives the broker's own answer. */
	if (!s->password_file && !s->dynsec && !s->legacy_auth && !s->unknown_plugin)
		cap->auth_tail_want = true;
	if (!s->acl_file && !s->dynsec && !s->legacy_plugin && !s->unknown_plugin)
		cap->acl_tail_want = true;
	cap->granted_known = !s->dynsec && !s->legacy_plugin && !s->unknown_plugin;
}

static bool auth_neutral(const struct eh_scope_info *s)
{
	/* With a password file, dynsec or a v2-v4 password check in the scope,
	 * our deferring changes no rule the broker applies; with none at all
	 * the tail answers as the broker would. A v5 plugin of unknown
	 * capability could leave the decision to the "all deferred" rule,
	 * where our presence changes it. */
	if (!s->known)
		return false;
	if (s->password_file)
		return true;
	return !s->unknown_plugin;
}

static bool acl_neutral(const struct eh_scope_info *s)
{
	if (!s->known)
		return false;
	if (s->acl_file || s->dynsec || s->legacy_plugin)
		return true;
	return !s->unknown_plugin;
}

/* The broker refuses a callback function it already holds for the event
 * in this scope: a second plugin line loading us in the same scope. */
static void log_register_failure(int rc)
{
	if (rc == MOSQ_ERR_ALREADY_EXISTS)
		mosquitto_log_printf(MOSQ_LOG_ERR, "eventhook: cannot register broker callbacks (error %d, already "
				     "registered): the plugin is loaded twice in the same scope (two plugin lines?); "
				     "load it once and configure every sink in that one plugin block (with "
				     "per_listener_settings true, once per listener)", rc);
	else
		mosquitto_log_printf(MOSQ_LOG_ERR, "eventhook: cannot register broker callbacks (error %d)", rc);
}

/* Mosquitto 2.0.11-2.0.14 never call TICK with per_listener_settings, and
 * nothing a plugin can do makes them: the periodic work then rides on the
 * callbacks of this listener's clients (maybe_chores). Say at start which
 * of it the configuration depends on, since a quiet listener holds it. */
static void warn_tick_missing(struct eh_capture *cap)
{
	const struct eh_core *core = cap->core;
	char what[256] = "";
	size_t n = 0;

	if (cap->v21 || !cap->scope.known || !cap->scope.per_listener)
		return;
	for (size_t i = 0; i < core->nsinks; i++) {
		if (core->sinks[i].ops->broker_tick)
			n += (size_t)snprintf(what + n, sizeof(what) - n, "the %s sink's deliveries, ",
					      core->sinks[i].name);
	}
	if (core->stats_interval_ms > 0 && core->nsinks && n < sizeof(what))
		n += (size_t)snprintf(what + n, sizeof(what) - n, "the $SYS/broker/eventhook statistics "
				      "(plugin_opt_stats_interval), ");
	if (!n)
		return;
	cap->tick_warned = true;
	mosquitto_log_printf(MOSQ_LOG_WARNING, "eventhook: per_listener_settings is true, and Mosquitto 2.0.11 to "
			     "2.0.14 then never call the plugin's TICK callback: %sand log lines from sink threads "
			     "only move when a client of this listener connects, subscribes, publishes or "
			     "disconnects; a quiet listener holds them back (docs/sinks/local.md)", what);
}

static int reg(struct eh_capture *cap, int event, MOSQ_FUNC_generic_callback cb)
{
	int rc = mosquitto_callback_register(cap->pid, event, cb, NULL, cap->core);

	if (rc == MOSQ_ERR_SUCCESS && cap->nregs < sizeof(cap->regs) / sizeof(cap->regs[0])) {
		cap->regs[cap->nregs].event = event;
		cap->regs[cap->nregs].cb = cb;
		cap->nregs++;
	}
	return rc;
}

int eh_capture_init(struct eh_core *core, int index)
{
	struct eh_capture *cap = calloc(1, sizeof(*cap));
	const char *override = eh_config_get(&core->config, "config_file");
	char self[4096] = "";
	Dl_info info;
	uint32_t need_acl;
	int rc;
#if EH_HAVE_21
	int rc21;
#endif

	if (!cap || eh_clients_init(&cap->clients) || !(cap->write_topic = malloc(TOPIC_MAX))) {
		mosquitto_log_printf(MOSQ_LOG_ERR, "eventhook: out of memory");
		if (cap) {
			eh_clients_free(&cap->clients);
			free(cap);
		}
		return -1;
	}
	cap->write_cap = TOPIC_MAX;
	core->capture = cap;
	cap->core = core;
	cap->tails_todo = true;
	cap->pid = core->plugin_id;
	cap->index = index;
	cap->last_chores_ms = eh_now_ms();
	/* Validated against the option's range by eh_core_init. */
	cap->payload_max = eh_config_get(&core->config, "payload_max_bytes")
				   ? (uint32_t)eh_config_int(&core->config, "payload_max_bytes") : UINT32_MAX;
	if (dladdr((void *)eh_capture_init, &info) && info.dli_fname)
		snprintf(self, sizeof(self), "%s", info.dli_fname);
	eh_scope_learn(&cap->scope, override, self, index);
	if (cap->scope.known) {
		/* Compared at reload only if this reading of the file gives
		 * exactly what the broker gave: a configuration it reads
		 * differently from the broker would give false reports. */
		cap->opts_known = eh_optwatch_matches(&core->config, cap->scope.path, self, index);
	}
	/* Only from a reading that gave our own options exactly as the broker
	 * did: a sink acts on it by sharing a library's threads (eh_sink.h). */
	core->sole_plugin = cap->scope.known && cap->opts_known && cap->scope.sole_plugin;
	/* A path the admin typed that cannot be read is a bad value, unlike the
	 * broker's own -c file, where observing less is the right fallback. */
	if (override && cap->scope.read_errno) {
		char shown[EH_QUOTE_LEN];

		mosquitto_log_printf(MOSQ_LOG_ERR, "eventhook: configuration error: plugin_opt_config_file: "
				     "cannot read '%s': %s", eh_quote(shown, sizeof(shown), override),
				     strerror(cap->scope.read_errno));
		return -1;
	}

#if EH_HAVE_21
	/* The headers are 2.1; the broker may still be 2.0, which refuses the
	 * new events: then the 2.0 path is used. */
	rc21 = reg(cap, MOSQ_EVT_CONNECT, on_connect_21);
	if (rc21 == MOSQ_ERR_SUCCESS) {
		cap->v21 = true;
		if (reg(cap, MOSQ_EVT_SUBSCRIBE, on_subscribe_21) || reg(cap, MOSQ_EVT_UNSUBSCRIBE, on_unsubscribe_21)
		    || reg(cap, MOSQ_EVT_CLIENT_OFFLINE, on_client_offline_21)) {
			mosquitto_log_printf(MOSQ_LOG_ERR, "eventhook: cannot register the 2.1 broker callbacks");
			return -1;
		}
	} else {
		mosquitto_log_printf(MOSQ_LOG_INFO, "eventhook: built with Mosquitto 2.1 headers, but the broker "
				     "refused the 2.1 CONNECT event (error %d): an older broker, falling back to "
				     "the 2.0 path", rc21);
	}
#else
	/* Built with 2.0 headers. A 2.1 broker accepts its CONNECT event (11),
	 * and there the 2.0 path is wrong in ways that matter: refusals keep
	 * their id, offline sessions get CLIENT_OFFLINE instead of DISCONNECT,
	 * and 2.1 skips a tail appended during the pass (it iterates with
	 * DL_FOREACH_SAFE), so a DEFER head changes decisions: a client with a
	 * username was refused where the broker alone accepts it. Refuse to
	 * load rather than change what the broker decides. */
	if (reg(cap, 11, on_tick) == MOSQ_ERR_SUCCESS) {
		mosquitto_callback_unregister(cap->pid, 11, on_tick, NULL);
		cap->nregs--;
		mosquitto_log_printf(MOSQ_LOG_ERR, "eventhook: this build uses Mosquitto 2.0 headers but the broker "
				     "is 2.1 or later; rebuild against the broker's headers "
				     "(make CPPFLAGS=-I<prefix>/include, see docs/capture-2.1.md)");
		return -1;
	}
#endif
	decide_registration(cap);
	/* On 2.1 subscriptions and presence come from its own events: the ACL
	 * check is only for authorization denials. */
	need_acl = core->wanted & (cap->v21 ? EH_EV_BIT(EH_EV_AUTHZ_DENIED) : EH_NEED_ACL | EH_NEED_PRESENCE);

	if ((rc = reg(cap, MOSQ_EVT_DISCONNECT, on_disconnect)) || (rc = reg(cap, MOSQ_EVT_TICK, on_tick))
	    || (rc = reg(cap, MOSQ_EVT_RELOAD, on_reload))
	    || (rc = reg(cap, MOSQ_EVT_EXT_AUTH_START, on_ext_auth_start))) {
		log_register_failure(rc);
		return -1;
	}
	if (!cap->scope.known && !cap->v21) { /* 2.1 needs no config knowledge */
		mosquitto_log_printf(MOSQ_LOG_WARNING, "eventhook: %s; to keep every broker decision unchanged, "
				     "client.connect, client.connect_failed, client.subscribe, client.unsubscribe and "
				     "client.authz_denied are not captured, and client.connected is inferred late",
				     cap->scope.why);
	}
	if (cap->v21 || auth_neutral(&cap->scope)) {
		cap->auth_on = reg(cap, MOSQ_EVT_BASIC_AUTH, on_basic_auth) == MOSQ_ERR_SUCCESS;
	} else if (cap->scope.known) {
		mosquitto_log_printf(MOSQ_LOG_WARNING, "eventhook: another plugin of unknown capability shares "
				     "authentication and there is no password_file: client.connect and "
				     "client.connect_failed are not captured, so that its decisions stay unchanged");
	}
	if (need_acl && cap->v21 && (!cap->scope.known || cap->scope.plugin_before)) {
		/* 2.1 (at least to dd2c25c) answers an ACL check with whatever
		 * the last callback of the list returned when none decided, so
		 * our IGNORE after another plugin's DEFER would grant what the
		 * broker alone refuses. */
		mosquitto_log_printf(MOSQ_LOG_WARNING, "eventhook: %s%s; on Mosquitto 2.1 an ACL callback after another "
				     "plugin's overrides that plugin's deferral, so client.authz_denied is not captured, "
				     "to keep every broker decision unchanged. Load eventhook before any other plugin "
				     "(docs/capture-2.1.md) to capture it",
				     cap->scope.known ? "another plugin is loaded before this one" : cap->scope.why,
				     cap->scope.known ? "" : ", so the order of the plugins is not known");
	} else if (need_acl && (cap->v21 || acl_neutral(&cap->scope))) {
		cap->acl_on = reg(cap, MOSQ_EVT_ACL_CHECK, on_acl_check) == MOSQ_ERR_SUCCESS;
	} else if (need_acl && cap->scope.known) {
		mosquitto_log_printf(MOSQ_LOG_WARNING, "eventhook: another plugin of unknown capability shares "
				     "authorization and there is no acl_file: client.subscribe, client.unsubscribe and "
				     "client.authz_denied are not captured, so that its decisions stay unchanged");
	}
	/* Without ACL checks, MESSAGE is the first sign of life of a client
	 * that publishes (on 2.0; 2.1 has CONNECT). */
	if ((core->wanted & EH_NEED_MESSAGE) || (!cap->v21 && !cap->acl_on && (core->wanted & EH_NEED_PRESENCE))) {
		if ((rc = reg(cap, MOSQ_EVT_MESSAGE, on_message))) {
			log_register_failure(rc);
			return -1;
		}
		cap->message_on = true;
	}
	warn_tick_missing(cap);
	mosquitto_log_printf(MOSQ_LOG_INFO, "eventhook: capture on %s: connect attempts %s, %s %s, messages %s%s",
			     cap->v21 ? "Mosquitto 2.1 events" : "Mosquitto 2.0 inference",
			     cap->auth_on ? "seen" : "not seen",
			     cap->v21 ? "authorization denials" : "subscriptions and authorization",
			     cap->acl_on ? "seen" : need_acl ? "not seen" : "not needed",
			     cap->message_on ? "seen" : "not needed",
			     cap->acl_on && cap->granted_known ? ", subscribe outcome exact" : "");
	return 0;
}

void eh_capture_cleanup(struct eh_core *core)
{
	struct eh_capture *cap = core->capture;

	if (!cap)
		return;
	/* No callback came after these to show them real: they are the wills
	 * of the clients still connected, checked after the last TICK. */
	cap->write_pending = false;
	cap->denials_used = 0;
	cap->stopping = true;
	promote_all_pending(cap);
	/* The broker frees connected clients at shutdown without a DISCONNECT
	 * event: report them here, the last moment we can. */
	for (size_t i = 0; i < cap->clients.nbuckets; i++) {
		for (struct eh_client *c = cap->clients.buckets[i]; c; c = c->hash_next) {
			if (c->state != EH_CLIENT_OFFLINE)
				emit_disconnected(cap, c, EH_REASON_BROKER_SHUTDOWN);
		}
	}
	if (cap->auth_tail_on)
		mosquitto_callback_unregister(cap->pid, MOSQ_EVT_BASIC_AUTH, auth_tail, NULL);
	if (cap->acl_tail_on)
		mosquitto_callback_unregister(cap->pid, MOSQ_EVT_ACL_CHECK, acl_tail, NULL);
	while (cap->nregs--)
		mosquitto_callback_unregister(cap->pid, cap->regs[cap->nregs].event, cap->regs[cap->nregs].cb, NULL);
	eh_clients_free(&cap->clients);
	free(cap->write_topic);
	free(cap->denials);
	free(cap);
	core->capture = NULL;
}
