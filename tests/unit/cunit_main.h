/* Shared main() for CUnit test programs: run the suites, print a summary, fail on any failure. */
#ifndef KAPSEL_TEST_CUNIT_MAIN_H
#define KAPSEL_TEST_CUNIT_MAIN_H

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"

struct unit_test {
	const char *name;
	void (*fn)(void);
};

/* Run tests as one CUnit suite named suite_name; returns the exit code
 * (0 when all assertions passed, 1 otherwise). */
static inline int unit_run(const char *suite_name, const struct unit_test *tests, size_t count)
{
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 1;
	CU_pSuite suite = CU_add_suite(suite_name, NULL, NULL);
	for (size_t i = 0; suite && i < count; i++)
		CU_add_test(suite, tests[i].name, tests[i].fn);
	/* Tests provoke errors on purpose; keep their messages out of the log. */
	kapsel_log_set_quiet(getenv("KAPSEL_TEST_VERBOSE") == NULL);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	unsigned failed = CU_get_number_of_tests_failed() + CU_get_number_of_failures();
	unsigned run = CU_get_number_of_tests_run();
	CU_cleanup_registry();
	return (failed || run != count) ? 1 : 0;
}

#define UNIT_RUN(suite, tests) unit_run(suite, tests, sizeof(tests) / sizeof(tests[0]))

#endif
