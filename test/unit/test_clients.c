/* The client table: lookup, pending list, and reuse of departed entries. */
#include <string.h>

#include "eh_clients.h"
#include "unit.h"

static int keys[2 * EH_CLIENTS_SPARE + 8];

START_TEST(add_find_remove_keeps_copies)
{
	struct eh_clients t;
	char id[] = "dev-1", user[] = "alice", peer[] = "10.0.0.1";
	struct eh_client *c;

	ck_assert_int_eq(eh_clients_init(&t), 0);
	c = eh_clients_add(&t, &keys[0], id, user, peer);
	ck_assert_ptr_nonnull(c);
	/* copies, not borrowed pointers: the broker frees its strings */
	memset(id, 'x', sizeof(id) - 1);
	ck_assert_str_eq(c->id, "dev-1");
	ck_assert_str_eq(c->user, "alice");
	ck_assert_str_eq(c->peer, "10.0.0.1");
	ck_assert_uint_eq(c->id_len, 5);
	ck_assert_ptr_eq(eh_clients_find(&t, &keys[0]), c);
	ck_assert_ptr_null(eh_clients_find(&t, &keys[1]));
	eh_clients_remove(&t, c);
	ck_assert_ptr_null(eh_clients_find(&t, &keys[0]));
	ck_assert_uint_eq(t.count, 0);
	eh_clients_free(&t);
}
END_TEST

/* A reused entry must not show anything of its previous client. */
START_TEST(reused_entry_is_clean)
{
	struct eh_clients t;
	struct eh_client *c, *d;

	ck_assert_int_eq(eh_clients_init(&t), 0);
	c = eh_clients_add(&t, &keys[0], "a-rather-long-client-identifier", "a-long-user-name", "192.168.100.200");
	eh_clients_set_state(&t, c, EH_CLIENT_PENDING);
	c->attempt_seen = true;
	c->keepalive = 60;
	eh_clients_remove(&t, c);
	ck_assert_uint_eq(t.nspare, 1);
	ck_assert_ptr_null(t.pending);

	d = eh_clients_add(&t, &keys[1], "b", NULL, NULL);
	ck_assert_ptr_eq(d, c); /* the spare was taken, no allocation */
	ck_assert_uint_eq(t.nspare, 0);
	ck_assert_str_eq(d->id, "b");
	ck_assert_str_eq(d->user, "");
	ck_assert_str_eq(d->peer, "");
	ck_assert_uint_eq(d->user_len, 0);
	ck_assert(!d->attempt_seen);
	ck_assert_uint_eq(d->keepalive, 0);
	ck_assert_int_eq(d->state, EH_CLIENT_LIVE);
	ck_assert_ptr_eq(eh_clients_find(&t, &keys[1]), d);
	ck_assert_ptr_null(eh_clients_find(&t, &keys[0]));
	eh_clients_free(&t);
}
END_TEST

/* Entries too large to share a size class are freed, never kept; the spare
 * list never holds more than EH_CLIENTS_SPARE entries. */
START_TEST(spares_are_bounded)
{
	struct eh_clients t;
	static char big[65536];
	struct eh_client *c;
	size_t n = sizeof(keys) / sizeof(keys[0]);

	memset(big, 'x', sizeof(big) - 1);
	ck_assert_int_eq(eh_clients_init(&t), 0);
	c = eh_clients_add(&t, &keys[0], big, NULL, NULL);
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->id_len, sizeof(big) - 1);
	ck_assert(!c->small);
	eh_clients_remove(&t, c);
	ck_assert_uint_eq(t.nspare, 0);

	for (size_t i = 0; i < n; i++)
		ck_assert_ptr_nonnull(eh_clients_add(&t, &keys[i], "id", "u", "p"));
	ck_assert_uint_eq(t.count, n);
	for (size_t i = 0; i < n; i++)
		eh_clients_remove(&t, eh_clients_find(&t, &keys[i]));
	ck_assert_uint_eq(t.count, 0);
	ck_assert_uint_eq(t.nspare, EH_CLIENTS_SPARE);
	eh_clients_free(&t); /* frees the spares too: ASan's leak check sees it */
}
END_TEST

/* A fresh table holding two LIVE clients, keys[0] and keys[1]. */
static void two_clients(struct eh_clients *t, struct eh_client **a, const char *id_a, struct eh_client **b,
			const char *id_b)
{
	ck_assert_int_eq(eh_clients_init(t), 0);
	*a = eh_clients_add(t, &keys[0], id_a, NULL, NULL);
	*b = eh_clients_add(t, &keys[1], id_b, NULL, NULL);
}

START_TEST(pending_with_id)
{
	struct eh_clients t;
	struct eh_client *a, *b;

	two_clients(&t, &a, "same", &b, "same");
	ck_assert_ptr_null(eh_clients_pending_with_id(&t, NULL, "same", 4));
	eh_clients_set_state(&t, b, EH_CLIENT_PENDING);
	ck_assert_ptr_eq(eh_clients_pending_with_id(&t, a, "same", 4), b);
	ck_assert_ptr_null(eh_clients_pending_with_id(&t, b, "same", 4));
	ck_assert_ptr_null(eh_clients_pending_with_id(&t, NULL, "sam", 3));
	eh_clients_remove(&t, b);
	ck_assert_ptr_null(eh_clients_pending_with_id(&t, NULL, "same", 4));
	eh_clients_free(&t);
}
END_TEST

START_TEST(rechecked_stays_off_pending_list)
{
	struct eh_clients t;
	struct eh_client *a, *b;

	two_clients(&t, &a, "same", &b, "other");
	eh_clients_set_state(&t, b, EH_CLIENT_PENDING);
	eh_clients_set_state(&t, a, EH_CLIENT_RECHECKED);
	ck_assert_ptr_null(eh_clients_pending_with_id(&t, NULL, "same", 4));
	ck_assert_ptr_eq(t.pending, b);
	ck_assert_ptr_null(b->pending_next);
	/* a refusal makes it pending, an accepted connection live */
	eh_clients_set_state(&t, a, EH_CLIENT_PENDING);
	ck_assert_ptr_eq(eh_clients_pending_with_id(&t, NULL, "same", 4), a);
	eh_clients_set_state(&t, a, EH_CLIENT_LIVE);
	ck_assert_ptr_null(eh_clients_pending_with_id(&t, NULL, "same", 4));
	eh_clients_set_state(&t, b, EH_CLIENT_RECHECKED);
	ck_assert_ptr_null(t.pending);
	eh_clients_remove(&t, b);
	ck_assert_ptr_eq(eh_clients_find(&t, &keys[0]), a);
	ck_assert_ptr_null(eh_clients_find(&t, &keys[1]));
	eh_clients_free(&t);
}
END_TEST

static Suite *clients_suite(void)
{
	Suite *s = suite_create("clients");
	TCase *tc = tcase_create("table");

	tcase_add_test(tc, add_find_remove_keeps_copies);
	tcase_add_test(tc, reused_entry_is_clean);
	tcase_add_test(tc, spares_are_bounded);
	tcase_add_test(tc, pending_with_id);
	tcase_add_test(tc, rechecked_stays_off_pending_list);
	suite_add_tcase(s, tc);
	return s;
}
EH_UNIT_SUITE(clients_suite)
