/*
 * Unit test registry: each test_*.c file registers its Check suites with
 * EH_UNIT_SUITE, so adding a file needs no edit anywhere else.
 */
#ifndef EH_UNIT_H
#define EH_UNIT_H

#include <check.h>
#include <stddef.h>

typedef Suite *(*eh_unit_suite_fn)(void);
void eh_unit_register(eh_unit_suite_fn fn);

/* Appends the "seq" of every event in the JSON text to out, as "1,2,3"
 * (out starts as a string, "" for none); fails the test if out is full. */
void eh_unit_seqs_append(char *out, size_t cap, const char *text);

#define EH_UNIT_SUITE(fn)                                                    \
	static Suite *fn(void);                                              \
	__attribute__((constructor)) static void fn##_register(void)         \
	{                                                                    \
		eh_unit_register(fn);                                        \
	}

#endif
