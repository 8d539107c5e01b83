/* The capture layer against the stub broker: what it registers, it
 * unregisters (Mosquitto 2.0 frees only unregistered callbacks). */
#include <stdlib.h>

#include "eh_capture.h"
#include "eh_core.h"
#include "unit.h"

extern int eh_stub_callbacks;

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

static Suite *capture_suite(void)
{
	Suite *s = suite_create("capture");
	TCase *tc = tcase_create("registration");

	tcase_add_test(tc, cleanup_unregisters_every_callback);
	suite_add_tcase(s, tc);
	return s;
}
EH_UNIT_SUITE(capture_suite)
