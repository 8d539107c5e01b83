/* Runs every registered suite; exit status 0 only if all checks passed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"

#define MAX_SUITES 64

static eh_unit_suite_fn suites[MAX_SUITES];
static int nsuites;

void eh_unit_register(eh_unit_suite_fn fn)
{
	if (nsuites < MAX_SUITES)
		suites[nsuites++] = fn;
}

void eh_unit_seqs_append(char *out, size_t cap, const char *text)
{
	size_t used = strlen(out);

	for (const char *p = text; (p = strstr(p, "\"seq\":")) != NULL;) {
		p += 6;
		used += (size_t)snprintf(out + used, cap - used, "%s%ld", used ? "," : "", strtol(p, NULL, 10));
		ck_assert_uint_lt(used, cap);
	}
}

int main(void)
{
	SRunner *sr;
	int failed;

	if (!nsuites) {
		fprintf(stderr, "no unit test suites registered\n");
		return 1;
	}
	sr = srunner_create(suites[0]());
	for (int i = 1; i < nsuites; i++)
		srunner_add_suite(sr, suites[i]());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
