/*
 * eh_optdoc: prints the option reference from the option tables, as
 * Markdown (docs/configuration.md) or as the body of the man page, so the
 * documentation cannot drift from what the parser accepts.
 */
#include <stdio.h>
#include <string.h>

#include "eh_core.h"

int main(int argc, char **argv)
{
	struct eh_option_group groups[EH_SINKS_MAX + 1];
	size_t n = eh_core_option_groups(groups, EH_SINKS_MAX + 1);

	if (argc == 2 && !strcmp(argv[1], "--man"))
		eh_options_write_man(stdout, groups, n);
	else if (argc == 1 || (argc == 2 && !strcmp(argv[1], "--markdown")))
		eh_options_write_markdown(stdout, groups, n);
	else {
		fprintf(stderr, "usage: %s [--markdown|--man]\n", argv[0]);
		return 2;
	}
	return 0;
}
