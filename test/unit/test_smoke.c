/* The unit test binary itself: links the core and runs. */
#include <string.h>

#include "eh_event.h"
#include "unit.h"

START_TEST(event_names_round_trip)
{
	for (unsigned t = 0; t < EH_EV_COUNT; t++) {
		const char *name = eh_event_type_name(t);

		ck_assert_int_eq(eh_event_type_from_name(name, strlen(name)), (int)t);
	}
}
END_TEST

static Suite *smoke_suite(void)
{
	Suite *s = suite_create("smoke");
	TCase *tc = tcase_create("names");

	tcase_add_test(tc, event_names_round_trip);
	suite_add_tcase(s, tc);
	return s;
}
EH_UNIT_SUITE(smoke_suite)
