/* Unit tests: the guest library's kg_cmdline_value (guest-pv/lib/cmdline.c, built for the host). */
#include <string.h>

#include "cunit_main.h"
#include "kapsel/abi.h"
#include "kapsel_guest/libc.h"

static const char cmdline[] = "  ticks=300 interval_ms=5 console=uart flag tick= x=1=2 ticks=9";

static void test_value_only(void)
{
	char value[16];
	/* Only the value, not the rest of the command line. */
	CU_ASSERT_EQUAL(kg_cmdline_value(cmdline, "ticks", value, sizeof(value)), 3);
	CU_ASSERT_STRING_EQUAL(value, "300");
	CU_ASSERT_EQUAL(kg_cmdline_value(cmdline, "interval_ms", value, sizeof(value)), 1);
	CU_ASSERT_STRING_EQUAL(value, "5");
	CU_ASSERT_EQUAL(kg_cmdline_value(cmdline, "console", value, sizeof(value)), 4);
	CU_ASSERT_STRING_EQUAL(value, "uart");
	/* The first '=' splits; an empty value is a value. */
	CU_ASSERT_EQUAL(kg_cmdline_value(cmdline, "x", value, sizeof(value)), 3);
	CU_ASSERT_STRING_EQUAL(value, "1=2");
	CU_ASSERT_EQUAL(kg_cmdline_value(cmdline, "tick", value, sizeof(value)), 0);
	CU_ASSERT_STRING_EQUAL(value, "");
}

static void test_missing_keys(void)
{
	char value[16] = "stale";
	/* A word without '=' is not a key; a prefix or suffix of a key is not it. */
	CU_ASSERT_EQUAL(kg_cmdline_value(cmdline, "flag", value, sizeof(value)), -KAPSEL_ENOENT);
	CU_ASSERT_STRING_EQUAL(value, "");
	CU_ASSERT_EQUAL(kg_cmdline_value(cmdline, "tic", value, sizeof(value)), -KAPSEL_ENOENT);
	CU_ASSERT_EQUAL(kg_cmdline_value(cmdline, "interval", value, sizeof(value)),
			-KAPSEL_ENOENT);
	CU_ASSERT_EQUAL(kg_cmdline_value(cmdline, "ms", value, sizeof(value)), -KAPSEL_ENOENT);
	CU_ASSERT_EQUAL(kg_cmdline_value("", "ticks", value, sizeof(value)), -KAPSEL_ENOENT);
}

static void test_small_buffer(void)
{
	char value[8];
	memset(value, '#', sizeof(value));
	/* "300" needs 4 bytes with its NUL. */
	CU_ASSERT_EQUAL(kg_cmdline_value(cmdline, "ticks", value, 3), -KAPSEL_E2BIG);
	CU_ASSERT_STRING_EQUAL(value, "");
	CU_ASSERT_EQUAL(value[3], '#');
	CU_ASSERT_EQUAL(kg_cmdline_value(cmdline, "ticks", value, 4), 3);
	CU_ASSERT_STRING_EQUAL(value, "300");
	CU_ASSERT_EQUAL(kg_cmdline_value(cmdline, "ticks", NULL, 0), -KAPSEL_E2BIG);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "the value alone", test_value_only },
		{ "missing keys", test_missing_keys },
		{ "a value larger than the buffer", test_small_buffer },
	};
	return UNIT_RUN("guest cmdline", tests);
}
