/* The capture layer against the stub broker: what it registers, it
 * unregisters (Mosquitto 2.0 frees only unregistered callbacks);
 * payload_max_bytes is checked at start and cuts payloads before they
 * reach a ring. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eh_capture.h"
#include "eh_core.h"
#include "eh_mosquitto.h"
#include "unit.h"

extern int eh_stub_callbacks;
extern char eh_stub_last_log[1024];
extern MOSQ_FUNC_generic_callback eh_stub_cb[11];
extern void *eh_stub_cb_user[11];

START_TEST(cleanup_unregisters_every_callback)
{
	struct eh_core *core = calloc(1, sizeof(*core));
	struct eh_kv kv[] = { { "local_topic", "e/{event}" } };

	ck_assert_ptr_nonnull(core);
	eh_stub_callbacks = 0;
	ck_assert_int_eq(eh_core_init(core, NULL, kv, 1), 0);
	ck_assert_int_eq(eh_capture_init(core, 0), 0);
	ck_assert_int_gt(eh_stub_callbacks, 0);
	eh_capture_cleanup(core);
	ck_assert_int_eq(eh_stub_callbacks, 0);
	eh_core_stop(core);
	free(core);
}
END_TEST

START_TEST(payload_max_bytes_bad_values_refused)
{
	static const char *const bad[] = { "-1", "abc", "268435456", "", " 16", "1.5", "0x10",
					   "99999999999999999999" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct eh_core *core = calloc(1, sizeof(*core));
		struct eh_kv kv[] = { { "local_topic", "e/{event}" }, { "payload_max_bytes", bad[i] } };
		char want[160];

		ck_assert_ptr_nonnull(core);
		ck_assert_msg(eh_core_init(core, NULL, kv, 2) == -1, "'%s' accepted", bad[i]);
		snprintf(want, sizeof(want), "configuration error: plugin_opt_payload_max_bytes: '%s' is not a whole "
			 "number from 0 to 268435455", bad[i]);
		ck_assert_msg(strstr(eh_stub_last_log, want), "'%s': %s", bad[i], eh_stub_last_log);
		eh_core_stop(core);
		free(core);
	}
}
END_TEST

/* A sink whose own list the global one cuts to nothing could never
 * receive an event; one that keeps some type starts. */
START_TEST(sink_events_cut_to_nothing_refused)
{
	struct eh_core *core = calloc(1, sizeof(*core));
	struct eh_kv kv[] = { { "local_topic", "e/{event}" }, { "events", "client.*" },
			      { "local_events", "message.publish" } };

	ck_assert_ptr_nonnull(core);
	ck_assert_int_eq(eh_core_init(core, NULL, kv, 3), -1);
	ck_assert_str_eq(eh_stub_last_log, "eventhook: configuration error: plugin_opt_local_events: none of "
			 "'message.publish' is in plugin_opt_events ('client.*'), so the local sink would never "
			 "receive an event");
	eh_core_stop(core);
	memset(core, 0, sizeof(*core));
	kv[2].value = "message.publish,client.connect";
	ck_assert_int_eq(eh_core_init(core, NULL, kv, 3), 0);
	ck_assert_uint_eq(core->sinks[0].mask, EH_EV_BIT(EH_EV_CONNECT));
	eh_core_stop(core);
	free(core);
}
END_TEST

/* The first ring record after one MESSAGE of len bytes with the given
 * payload_max_bytes (NULL: unset), unpacked into ev; returns the record's
 * size. The file sink's thread is never started (no eh_core_start), so the
 * record stays in its ring to be read here. */
static size_t publish_through_capture(const char *max, uint32_t len, struct eh_event *ev, char *copy, size_t cap)
{
	struct eh_core *core = calloc(1, sizeof(*core));
	char path[] = "/tmp/eh-unit-capture-XXXXXX";
	int fd = mkstemp(path);
	struct eh_kv kv[] = { { "file_path", path }, { "file_events", "message.publish" },
			      { "payload_max_bytes", max } };
	struct mosquitto_evt_message msg;
	char *payload = malloc(len ? len : 1);
	struct eh_ring_rec rec;
	int client;
	size_t size;

	ck_assert_ptr_nonnull(core);
	ck_assert_ptr_nonnull(payload);
	ck_assert_int_ge(fd, 0);
	close(fd);
	for (uint32_t i = 0; i < len; i++)
		payload[i] = (char)(i * 31 + 7);
	ck_assert_int_eq(eh_core_init(core, NULL, kv, max ? 3 : 2), 0);
	ck_assert_int_eq(eh_capture_init(core, 0), 0);
	ck_assert_ptr_nonnull(eh_stub_cb[MOSQ_EVT_MESSAGE]);
	memset(&msg, 0, sizeof(msg));
	msg.client = (struct mosquitto *)&client;
	msg.topic = "t/x";
	msg.payload = payload;
	msg.payloadlen = len;
	msg.qos = 1;
	ck_assert_int_eq(eh_stub_cb[MOSQ_EVT_MESSAGE](MOSQ_EVT_MESSAGE, &msg, eh_stub_cb_user[MOSQ_EVT_MESSAGE]),
			 MOSQ_ERR_SUCCESS);
	ck_assert_uint_eq(core->nsinks, 1);
	ck_assert_uint_eq(eh_ring_peek_sc(&core->sinks[0].ring, &rec, 1), 1);
	size = rec.len;
	ck_assert_uint_le(size, cap);
	/* The view points into the record: keep a copy past the core. */
	memcpy(copy, rec.data, size);
	ck_assert_int_eq(eh_event_unpack(copy, size, ev), 0);
	ck_assert_int_eq(ev->type, EH_EV_PUBLISH);
	for (uint32_t i = 0; i < ev->f[EH_F_PAYLOAD].len; i++)
		ck_assert_int_eq(ev->f[EH_F_PAYLOAD].ptr[i], (char)(i * 31 + 7));
	eh_capture_cleanup(core);
	eh_core_stop(core);
	free(core);
	free(payload);
	unlink(path);
	return size;
}

START_TEST(payload_cut_before_the_ring)
{
	static char rec[200000];
	struct eh_event ev;
	size_t whole, cut;

	/* Unset: all of it, as before the option existed. */
	whole = publish_through_capture(NULL, 70000, &ev, rec, sizeof(rec));
	ck_assert_uint_eq(ev.f[EH_F_PAYLOAD].len, 70000);
	ck_assert_uint_eq(eh_event_payload_size(&ev), 70000);
	ck_assert(!eh_event_payload_truncated(&ev));
	/* 16: the record is 69984 bytes smaller. */
	cut = publish_through_capture("16", 70000, &ev, rec, sizeof(rec));
	ck_assert_uint_eq(whole - cut, 70000 - 16);
	ck_assert_uint_eq(ev.f[EH_F_PAYLOAD].len, 16);
	ck_assert_uint_eq(eh_event_payload_size(&ev), 70000);
	ck_assert(eh_event_payload_truncated(&ev));
	/* At and under the limit nothing is cut. */
	publish_through_capture("16", 16, &ev, rec, sizeof(rec));
	ck_assert_uint_eq(ev.f[EH_F_PAYLOAD].len, 16);
	ck_assert(!eh_event_payload_truncated(&ev));
	publish_through_capture("16", 0, &ev, rec, sizeof(rec));
	ck_assert_uint_eq(ev.f[EH_F_PAYLOAD].len, 0);
	ck_assert_uint_eq(eh_event_payload_size(&ev), 0);
	ck_assert(!eh_event_payload_truncated(&ev));
	/* 0 keeps no byte. */
	publish_through_capture("0", 5, &ev, rec, sizeof(rec));
	ck_assert_uint_eq(ev.f[EH_F_PAYLOAD].len, 0);
	ck_assert_uint_eq(eh_event_payload_size(&ev), 5);
	ck_assert(eh_event_payload_truncated(&ev));
	/* The top of the range is accepted (and cuts nothing here). */
	publish_through_capture("268435455", 17, &ev, rec, sizeof(rec));
	ck_assert_uint_eq(ev.f[EH_F_PAYLOAD].len, 17);
	ck_assert(!eh_event_payload_truncated(&ev));
}
END_TEST

/* A held WRITE check is matched to its MESSAGE by the topic's bytes, whole:
 * a MESSAGE whose topic is the held one's with a byte more or less, or
 * another string with the same bytes, is told apart exactly. */
START_TEST(held_check_matched_by_whole_topic)
{
	static const struct {
		const char *checked, *published;
		bool allowed;
	} cases[] = {
		{ "a/b", "a/b", true }, { "a/b", "a/bc", false }, { "a/bc", "a/b", false },
		{ "a/b", "a/c", false }, { "", "", true }, { "", "a", false }, { "a", "", false },
	};
	struct eh_core *core = calloc(1, sizeof(*core));
	char path[] = "/tmp/eh-unit-capture-XXXXXX", conf[] = "/tmp/eh-unit-capture-conf-XXXXXX";
	int fd = mkstemp(path), cfd = mkstemp(conf);
	struct eh_kv kv[] = { { "file_path", path }, { "file_events", "message.publish,client.authz_denied" },
			      { "config_file", conf } };
	MOSQ_FUNC_generic_callback acl_cb;
	void *acl_user;
	int client;

	ck_assert_ptr_nonnull(core);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_ge(cfd, 0);
	close(fd);
	ck_assert_int_eq(write(cfd, "allow_anonymous true\n", 21), 21);
	close(cfd);
	ck_assert_int_eq(eh_core_init(core, NULL, kv, 3), 0);
	ck_assert_int_eq(eh_capture_init(core, 0), 0);
	/* The head callback: the stub keeps only the last one registered, and
	 * the first check registers the tail behind it. */
	acl_cb = eh_stub_cb[MOSQ_EVT_ACL_CHECK];
	acl_user = eh_stub_cb_user[MOSQ_EVT_ACL_CHECK];
	ck_assert_ptr_nonnull(acl_cb);
	ck_assert_ptr_nonnull(eh_stub_cb[MOSQ_EVT_MESSAGE]);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct mosquitto_evt_acl_check acl;
		struct mosquitto_evt_message msg;
		/* Copies: the MESSAGE's topic is never the check's pointer. */
		char checked[8], published[8];
		struct eh_ring_rec rec[3];
		struct eh_event ev;
		size_t n;

		snprintf(checked, sizeof(checked), "%s", cases[i].checked);
		snprintf(published, sizeof(published), "%s", cases[i].published);
		memset(&acl, 0, sizeof(acl));
		acl.client = (struct mosquitto *)&client;
		acl.access = MOSQ_ACL_WRITE;
		acl.topic = checked;
		acl_cb(MOSQ_EVT_ACL_CHECK, &acl, acl_user);
		memset(&msg, 0, sizeof(msg));
		msg.client = (struct mosquitto *)&client;
		msg.topic = published;
		eh_stub_cb[MOSQ_EVT_MESSAGE](MOSQ_EVT_MESSAGE, &msg, eh_stub_cb_user[MOSQ_EVT_MESSAGE]);
		n = eh_ring_peek_sc(&core->sinks[0].ring, rec, 3);
		ck_assert_msg(n == (cases[i].allowed ? 1u : 2u), "'%s' then '%s': %zu events", cases[i].checked,
			      cases[i].published, n);
		if (!cases[i].allowed) {
			ck_assert_int_eq(eh_event_unpack(rec[0].data, rec[0].len, &ev), 0);
			ck_assert_int_eq(ev.type, EH_EV_AUTHZ_DENIED);
			ck_assert_uint_eq(ev.f[EH_F_TOPIC].len, strlen(cases[i].checked));
			ck_assert_mem_eq(ev.f[EH_F_TOPIC].ptr, cases[i].checked, strlen(cases[i].checked));
		}
		ck_assert_int_eq(eh_event_unpack(rec[n - 1].data, rec[n - 1].len, &ev), 0);
		ck_assert_int_eq(ev.type, EH_EV_PUBLISH);
		ck_assert_uint_eq(ev.f[EH_F_TOPIC].len, strlen(cases[i].published));
		ck_assert_mem_eq(ev.f[EH_F_TOPIC].ptr, cases[i].published, strlen(cases[i].published));
		eh_ring_release_sc(&core->sinks[0].ring, &rec[n - 1], n);
	}
	eh_capture_cleanup(core);
	eh_core_stop(core);
	free(core);
	unlink(path);
	unlink(conf);
}
END_TEST

static Suite *capture_suite(void)
{
	Suite *s = suite_create("capture");
	TCase *tc = tcase_create("registration");

	tcase_add_test(tc, cleanup_unregisters_every_callback);
	tcase_add_test(tc, payload_max_bytes_bad_values_refused);
	tcase_add_test(tc, sink_events_cut_to_nothing_refused);
	tcase_add_test(tc, payload_cut_before_the_ring);
	tcase_add_test(tc, held_check_matched_by_whole_topic);
	suite_add_tcase(s, tc);
	return s;
}
EH_UNIT_SUITE(capture_suite)
