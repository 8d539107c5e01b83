/*
 * The local sink played by hand: the core is set up without starting its
 * threads, batches are handed to the sink's deliver as its thread would,
 * and the broker's ticks drain the outbox into the stub's publish, which
 * records each message here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eh_core.h"
#include "unit.h"

extern char eh_stub_last_log[1024];
extern void (*eh_stub_publish_hook)(const char *topic, const void *payload, int len);

#define MSGS_MAX 64

static struct {
	char topic[128];
	char *payload;
	size_t len;
} msgs[MSGS_MAX];
static size_t nmsgs, nall;
static char last_seqs[64]; /* of the last message, kept past MSGS_MAX */

static void seqs(const char *payload, char *out, size_t cap);

static void record(const char *topic, const void *payload, int len)
{
	nall++;
	if ((size_t)len < 4096) {
		char *text = strndup(payload, (size_t)len);

		ck_assert_ptr_nonnull(text);
		seqs(text, last_seqs, sizeof(last_seqs));
		free(text);
	}
	if (nmsgs == MSGS_MAX)
		return;
	snprintf(msgs[nmsgs].topic, sizeof(msgs[nmsgs].topic), "%s", topic);
	msgs[nmsgs].payload = malloc((size_t)len + 1);
	ck_assert_ptr_nonnull(msgs[nmsgs].payload);
	memcpy(msgs[nmsgs].payload, payload, (size_t)len);
	msgs[nmsgs].payload[len] = '\0';
	msgs[nmsgs].len = (size_t)len;
	nmsgs++;
}

static void forget(void)
{
	for (size_t i = 0; i < nmsgs; i++)
		free(msgs[i].payload);
	nmsgs = nall = 0;
}

static struct eh_core *local_core(const struct eh_kv *kv, size_t n)
{
	struct eh_core *core = calloc(1, sizeof(*core));

	ck_assert_ptr_nonnull(core);
	ck_assert_msg(eh_core_init(core, NULL, kv, n) == 0, "%s", eh_stub_last_log);
	ck_assert_str_eq(core->sinks[0].ops->name, "local");
	forget();
	eh_stub_publish_hook = record;
	return core;
}

static void local_done(struct eh_core *core)
{
	eh_stub_publish_hook = NULL;
	forget();
	eh_core_stop(core);
	free(core);
}

/* Events of the given types ('c' connect, 'C' connected, 'p' publish),
 * seq 1, 2, ...; publishes carry plen bytes of payload. */
static size_t make_events(struct eh_event *evs, const char *types, size_t plen)
{
	static char payload[4 << 20];
	size_t n = strlen(types);

	memset(payload, 'x', sizeof(payload));
	for (size_t i = 0; i < n; i++) {
		memset(&evs[i], 0, sizeof(evs[i]));
		evs[i].type = types[i] == 'c' ? EH_EV_CONNECT : types[i] == 'C' ? EH_EV_CONNECTED : EH_EV_PUBLISH;
		evs[i].number = evs[i].seq = i + 1;
		evs[i].proto_ver = 4;
		evs[i].f[EH_F_CLIENTID] = (struct eh_bytes){ "dev", 3 };
		evs[i].f[EH_F_PEER] = (struct eh_bytes){ "127.0.0.1", 9 };
		if (types[i] == 'p') {
			evs[i].f[EH_F_TOPIC] = (struct eh_bytes){ "t", 1 };
			evs[i].f[EH_F_PAYLOAD] = (struct eh_bytes){ payload, (uint32_t)plen };
			evs[i].payload_size = (int64_t)plen;
		}
	}
	return n;
}

static enum eh_deliver_rc deliver(struct eh_core *core, const struct eh_event *evs, size_t n, size_t *done)
{
	struct eh_batch b = { .events = evs, .count = n, .retry_after_ms = -1 };
	enum eh_deliver_rc rc = core->sinks[0].ops->deliver(core->sinks[0].ctx, &b);

	*done = b.done;
	return rc;
}

static void tick(struct eh_core *core)
{
	core->sinks[0].ops->broker_tick(core->sinks[0].ctx, false);
}

/* The seq numbers in a message's payload, in order, as "1,2,3". */
static void seqs(const char *payload, char *out, size_t cap)
{
	out[0] = '\0';
	eh_unit_seqs_append(out, cap, payload);
}

START_TEST(local_one_event_per_message_by_default)
{
	struct eh_kv kv[] = { { "local_topic", "e/{event}" } };
	struct eh_core *core = local_core(kv, 1);
	struct eh_event evs[3];
	size_t done;

	ck_assert_int_eq(deliver(core, evs, make_events(evs, "ccC", 0), &done), EH_DELIVER_OK);
	ck_assert_uint_eq(done, 3);
	tick(core);
	ck_assert_uint_eq(nmsgs, 3);
	ck_assert_str_eq(msgs[0].topic, "e/client.connect");
	ck_assert_str_eq(msgs[2].topic, "e/client.connected");
	for (size_t i = 0; i < 3; i++) {
		ck_assert_msg(msgs[i].payload[0] == '{' && msgs[i].payload[msgs[i].len - 1] == '}', "%s",
			      msgs[i].payload);
		ck_assert_ptr_nonnull(strstr(msgs[i].payload, i == 1 ? "\"seq\":2," : i ? "\"seq\":3," : "\"seq\":1,"));
	}
	ck_assert_uint_eq(atomic_load(&core->sinks[0].delivered), 3);
	local_done(core);
}
END_TEST

/* Events in a row with the same topic share a message, up to
 * local_batch_max of them; a message is an array even for one event. */
START_TEST(local_batch_groups_events_in_a_row_with_one_topic)
{
	struct eh_kv kv[] = { { "local_topic", "e/{event}" }, { "local_batch_max", "3" } };
	struct eh_core *core = local_core(kv, 2);
	struct eh_event evs[8];
	static const char *const want[][2] = {
		{ "e/client.connect", "1,2" }, { "e/client.connected", "3" }, { "e/client.connect", "4,5,6" },
		{ "e/client.connect", "7" },   { "e/message.publish", "8" },
	};
	char got[64];
	size_t done;

	ck_assert_int_eq(deliver(core, evs, make_events(evs, "ccCccccp", 4), &done), EH_DELIVER_OK);
	ck_assert_uint_eq(done, 8);
	/* Counted by event, not by message, also before the broker took them. */
	ck_assert_uint_eq(core->sinks[0].ops->flush(core->sinks[0].ctx, 0), 8);
	tick(core);
	ck_assert_uint_eq(nmsgs, 5);
	for (size_t i = 0; i < 5; i++) {
		ck_assert_str_eq(msgs[i].topic, want[i][0]);
		ck_assert_msg(msgs[i].payload[0] == '[' && msgs[i].payload[msgs[i].len - 1] == ']', "%s",
			      msgs[i].payload);
		ck_assert_ptr_null(strstr(msgs[i].payload, "}{"));
		seqs(msgs[i].payload, got, sizeof(got));
		ck_assert_str_eq(got, want[i][1]);
	}
	ck_assert_ptr_nonnull(strstr(msgs[0].payload, "\"seq\":1,"));
	ck_assert_ptr_nonnull(strstr(msgs[0].payload, "},{\"event\":\"client.connect\""));
	ck_assert_uint_eq(atomic_load(&core->sinks[0].delivered), 8);
	ck_assert_uint_eq(core->sinks[0].ops->flush(core->sinks[0].ctx, 0), 0);
	local_done(core);
}
END_TEST

START_TEST(local_batch_ndjson_is_one_object_per_line)
{
	struct eh_kv kv[] = { { "local_topic", "e/all" }, { "local_batch_max", "10" },
			      { "local_batch_format", "ndjson" } };
	struct eh_core *core = local_core(kv, 3);
	struct eh_event evs[3];
	size_t done;

	ck_assert_int_eq(deliver(core, evs, make_events(evs, "cCp", 4), &done), EH_DELIVER_OK);
	tick(core);
	ck_assert_uint_eq(nmsgs, 1);
	ck_assert_str_eq(msgs[0].topic, "e/all");
	ck_assert_msg(msgs[0].payload[0] == '{' && msgs[0].payload[msgs[0].len - 1] == '\n', "%s", msgs[0].payload);
	ck_assert_ptr_nonnull(strstr(msgs[0].payload, "}\n{\"event\":\"client.connected\""));
	ck_assert_ptr_nonnull(strstr(msgs[0].payload, "}\n{\"event\":\"message.publish\""));
	ck_assert_ptr_null(strstr(msgs[0].payload, "},{"));
	local_done(core);
}
END_TEST

/* local_batch_bytes bounds a message; an event larger than that on its own
 * still goes, alone. */
START_TEST(local_batch_bytes_bounds_a_message)
{
	struct eh_kv kv[] = { { "local_topic", "e/all" }, { "local_batch_max", "100" },
			      { "local_batch_bytes", "1024" }, { "node_id", "n" } };
	struct eh_core *core = local_core(kv, 4);
	struct eh_event evs[9], big[1];
	static const char *const want[] = { "1,2", "3,4", "5,6", "7,8", "9" };
	char got[64];
	size_t done, events = 0;

	/* Each publish is about 400 bytes of JSON: two fit in 1024. */
	ck_assert_int_eq(deliver(core, evs, make_events(evs, "ppppppppp", 120), &done), EH_DELIVER_OK);
	ck_assert_int_eq(deliver(core, big, make_events(big, "p", 3000), &done), EH_DELIVER_OK);
	tick(core);
	ck_assert_uint_eq(nmsgs, 6);
	for (size_t i = 0; i < 5; i++) {
		ck_assert_uint_le(msgs[i].len, 1024);
		seqs(msgs[i].payload, got, sizeof(got));
		events += (size_t)(strlen(got) + 1) / 2;
		ck_assert_str_eq(got, want[i]);
	}
	ck_assert_uint_gt(msgs[5].len, 4000);
	ck_assert_msg(msgs[5].payload[0] == '[' && msgs[5].payload[msgs[5].len - 1] == ']', "%.20s",
		      msgs[5].payload);
	ck_assert_uint_eq(events, 9);
	ck_assert_uint_eq(atomic_load(&core->sinks[0].delivered), 10);
	local_done(core);
}
END_TEST

/* A message larger than an outbox record (a quarter of its 4 MiB) used to
 * be retried forever, holding back every later event. */
START_TEST(local_message_larger_than_the_outbox_record_goes_whole)
{
	for (int batch = 0; batch < 2; batch++) {
		struct eh_kv kv[] = { { "local_topic", "e/{event}" }, { "local_batch_max", batch ? "5" : "1" } };
		struct eh_core *core = local_core(kv, 2);
		struct eh_event evs[3];
		size_t done;

		ck_assert_int_eq(deliver(core, evs, make_events(evs, "pCp", 3 << 20), &done), EH_DELIVER_OK);
		ck_assert_uint_eq(done, 3);
		tick(core); /* 4 MiB a tick: the first message alone */
		ck_assert_uint_eq(nmsgs, 1);
		tick(core);
		ck_assert_uint_eq(nmsgs, 3);
		ck_assert_str_eq(msgs[0].topic, "e/message.publish");
		ck_assert_uint_gt(msgs[0].len, 4u << 20); /* 3 MiB in base64 */
		ck_assert_str_eq(msgs[1].topic, "e/client.connected");
		ck_assert_uint_gt(msgs[2].len, 4u << 20);
		ck_assert_int_eq(msgs[2].payload[msgs[2].len - 1], batch ? ']' : '}');
		ck_assert_uint_eq(atomic_load(&core->sinks[0].delivered), 3);
		/* One the broker never takes is freed with the sink (the
		 * sanitizer build's leak check sees it otherwise). */
		ck_assert_int_eq(deliver(core, evs, 1, &done), EH_DELIVER_OK);
		ck_assert_uint_eq(core->sinks[0].ops->flush(core->sinks[0].ctx, 0), 1);
		local_done(core);
	}
}
END_TEST

/* A tick hands over about 4 MiB at most (the first message whatever its
 * size), so a backlog of large messages never holds the broker's loop. */
START_TEST(local_tick_hands_over_about_4_mib_at_most)
{
	struct eh_kv kv[] = { { "local_topic", "e/{event}" } };
	struct eh_core *core = local_core(kv, 1);
	struct eh_event evs[6];
	size_t done;

	/* 1.5 MiB of payload: 2 MiB of JSON each, outside the outbox */
	ck_assert_int_eq(deliver(core, evs, make_events(evs, "pppppp", 3 << 19), &done), EH_DELIVER_OK);
	tick(core);
	ck_assert_uint_eq(nall, 2);
	tick(core);
	ck_assert_uint_eq(nall, 4);
	tick(core);
	ck_assert_uint_eq(nall, 6);
	ck_assert_uint_eq(atomic_load(&core->sinks[0].delivered), 6);
	local_done(core);
}
END_TEST

/* With the outbox full, deliver asks for a retry and says how many events
 * from the front it placed: never half a message. */
START_TEST(local_full_outbox_retries_from_a_message_boundary)
{
	struct eh_kv kv[] = { { "local_topic", "e/all" }, { "local_batch_max", "2" }, { "node_id", "n" } };
	struct eh_core *core = local_core(kv, 3);
	static struct eh_event evs[3];
	size_t done, n = make_events(evs, "ccc", 0);

	/* The outbox takes 8192 records (two small events fit in the 512
	 * bytes a record has on average). */
	for (int i = 0; i < 8191; i++)
		ck_assert_int_eq(deliver(core, evs, 2, &done), EH_DELIVER_OK);
	ck_assert_int_eq(deliver(core, evs, n, &done), EH_DELIVER_RETRY);
	ck_assert_uint_eq(done, 2);
	ck_assert_uint_eq(core->sinks[0].ops->flush(core->sinks[0].ctx, 0), 8192 * 2);
	tick(core); /* 1024 messages at most */
	ck_assert_uint_eq(nall, 1024);
	ck_assert_int_eq(deliver(core, evs + done, n - done, &done), EH_DELIVER_OK);
	ck_assert_uint_eq(done, 1);
	for (int i = 0; i < 8; i++)
		tick(core);
	ck_assert_uint_eq(nall, 8193);
	ck_assert_str_eq(last_seqs, "3");
	ck_assert_uint_eq(atomic_load(&core->sinks[0].delivered), 8192 * 2 + 1);
	ck_assert_uint_eq(core->sinks[0].ops->flush(core->sinks[0].ctx, 0), 0);
	local_done(core);
}
END_TEST

START_TEST(local_batch_options_refused)
{
	static const struct {
		struct eh_kv kv[3];
		const char *want;
	} cases[] = {
		{ { { "local_topic", "e/{seq}" }, { "local_batch_max", "2" }, { "events", "*" } },
		  "configuration error: plugin_opt_local_batch_max: 2 needs a local_topic without {seq}, which "
		  "gives every event its own topic" },
		{ { { "local_topic", "e" }, { "local_format", "cloudevents" }, { "local_batch_format", "ndjson" } },
		  "configuration error: plugin_opt_local_batch_format: ndjson is not a CloudEvents batch format; use "
		  "json with local_format cloudevents" },
		{ { { "local_topic", "e" }, { "local_batch_bytes", "1023" }, { "events", "*" } },
		  "configuration error: plugin_opt_local_batch_bytes: '1023' is not a whole number from 1024 to "
		  "67108864" },
		{ { { "local_topic", "e" }, { "local_batch_max", "0" }, { "events", "*" } },
		  "configuration error: plugin_opt_local_batch_max: '0' is not a whole number from 1 to 10000" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct eh_core *core = calloc(1, sizeof(*core));

		ck_assert_ptr_nonnull(core);
		ck_assert_int_eq(eh_core_init(core, NULL, cases[i].kv, 3), -1);
		ck_assert_msg(strstr(eh_stub_last_log, cases[i].want), "%zu: %s", i, eh_stub_last_log);
		eh_core_stop(core);
		free(core);
	}
}
END_TEST

EH_UNIT_SUITE(local_suite)
static Suite *local_suite(void)
{
	Suite *s = suite_create("local");
	TCase *tc = tcase_create("local");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, local_one_event_per_message_by_default);
	tcase_add_test(tc, local_batch_groups_events_in_a_row_with_one_topic);
	tcase_add_test(tc, local_batch_ndjson_is_one_object_per_line);
	tcase_add_test(tc, local_batch_bytes_bounds_a_message);
	tcase_add_test(tc, local_message_larger_than_the_outbox_record_goes_whole);
	tcase_add_test(tc, local_tick_hands_over_about_4_mib_at_most);
	tcase_add_test(tc, local_full_outbox_retries_from_a_message_boundary);
	tcase_add_test(tc, local_batch_options_refused);
	suite_add_tcase(s, tc);
	return s;
}
