/* Unit tests: the per-VM limiter for guest-triggered log lines, on a fake clock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_main.h"
#include "core/log.h"

static uint64_t fake_now_ns;

static uint64_t fake_clock(void)
{
	return fake_now_ns;
}

static void limit_start(struct log_limit *limit, unsigned burst, unsigned per_second)
{
	fake_now_ns = 1000000000ull;
	log_limit_init(limit, burst, per_second);
	limit->clock_ns = fake_clock;
	limit->last_ns = fake_now_ns;
}

/* Count how many of attempts pass at the current fake time. */
static unsigned admit_many(struct log_limit *limit, unsigned attempts, uint64_t *last_suppressed)
{
	unsigned passed = 0;
	for (unsigned i = 0; i < attempts; i++) {
		uint64_t suppressed = 0;
		if (log_limit_admit(limit, &suppressed)) {
			passed++;
			*last_suppressed = suppressed;
		}
	}
	return passed;
}

static void test_burst_then_suppressed(void)
{
	struct log_limit limit;
	uint64_t suppressed = 99;
	limit_start(&limit, 10, 2);
	/* A loop of 7,300 lines in no time: only the burst passes. */
	CU_ASSERT_EQUAL(admit_many(&limit, 7300, &suppressed), 10);
	CU_ASSERT_EQUAL(suppressed, 0);
	CU_ASSERT_EQUAL(log_limit_suppressed_total(&limit), 7290);
	log_limit_destroy(&limit);
}

static void test_refill_reports_suppressed(void)
{
	struct log_limit limit;
	uint64_t suppressed = 0;
	limit_start(&limit, 5, 2);
	CU_ASSERT_EQUAL(admit_many(&limit, 105, &suppressed), 5);
	/* Half a second refills one token at 2 a second: one line passes,
	 * and it carries the count of the 100 dropped before it. */
	fake_now_ns += 500000000ull;
	CU_ASSERT_TRUE(log_limit_admit(&limit, &suppressed));
	CU_ASSERT_EQUAL(suppressed, 100);
	CU_ASSERT_FALSE(log_limit_admit(&limit, &suppressed));
	/* The count restarts after it was reported. */
	fake_now_ns += 500000000ull;
	CU_ASSERT_TRUE(log_limit_admit(&limit, &suppressed));
	CU_ASSERT_EQUAL(suppressed, 1);
	CU_ASSERT_EQUAL(log_limit_suppressed_total(&limit), 101);
	log_limit_destroy(&limit);
}

static void test_steady_rate(void)
{
	struct log_limit limit;
	uint64_t suppressed = 0;
	limit_start(&limit, 4, 5);
	admit_many(&limit, 4, &suppressed);
	/* 10 s of a guest trying 1000 lines a second: 5 a second pass. */
	unsigned passed = 0;
	for (unsigned ms = 0; ms < 10000; ms++) {
		fake_now_ns += 1000000ull;
		passed += admit_many(&limit, 1, &suppressed);
	}
	CU_ASSERT_EQUAL(passed, 50);
	log_limit_destroy(&limit);
}

static void test_long_quiet_caps_at_burst(void)
{
	struct log_limit limit;
	uint64_t suppressed = 0;
	limit_start(&limit, 3, 1000000);
	admit_many(&limit, 3, &suppressed);
	/* Years of quiet at a high rate neither overflow nor exceed the burst. */
	fake_now_ns += 100ull * 365 * 24 * 3600 * 1000000000ull;
	CU_ASSERT_EQUAL(admit_many(&limit, 10, &suppressed), 3);
	/* A clock that goes back gives nothing and breaks nothing. */
	fake_now_ns -= 1000000000ull;
	CU_ASSERT_EQUAL(admit_many(&limit, 10, &suppressed), 0);
	fake_now_ns += 2000000ull; /* 2 ms at a million a second: full again, 3 */
	CU_ASSERT_EQUAL(admit_many(&limit, 10, &suppressed), 3);
	log_limit_destroy(&limit);
}

/* The printed lines: the burst, then one summary line before the next. */
static void test_printed_lines(void)
{
	struct log_limit limit;
	limit_start(&limit, 3, 1);
	FILE *out = tmpfile();
	CU_ASSERT_PTR_NOT_NULL_FATAL(out);
	kapsel_log_set_stream(out);
	kapsel_log_set_quiet(false);
	for (unsigned i = 0; i < 1000; i++)
		kapsel_guest_warn(&limit, "ring %u broken", i);
	fake_now_ns += 1000000000ull;
	kapsel_guest_warn(&limit, "ring %u broken", 1000u);
	for (unsigned i = 0; i < 7; i++)
		kapsel_guest_warn(&limit, "ring broken again");
	log_limit_flush(&limit);
	kapsel_log_set_quiet(getenv("KAPSEL_TEST_VERBOSE") == NULL);
	kapsel_log_set_stream(NULL);

	char text[4096];
	rewind(out);
	size_t n = fread(text, 1, sizeof(text) - 1, out);
	text[n] = '\0';
	fclose(out);
	unsigned lines = 0;
	for (size_t i = 0; i < n; i++)
		lines += text[i] == '\n';
	CU_ASSERT_EQUAL(lines, 6);
	CU_ASSERT_PTR_NOT_NULL(strstr(text,
				      "kapsel: warning: ring 0 broken\n"
				      "kapsel: warning: ring 1 broken\n"
				      "kapsel: warning: ring 2 broken\n"
				      "kapsel: warning: 997 guest-triggered messages suppressed "
				      "(rate limit)\n"
				      "kapsel: warning: ring 1000 broken\n"
				      "kapsel: warning: 7 guest-triggered messages suppressed "
				      "(rate limit)\n"));
	log_limit_destroy(&limit);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "burst passes, excess suppressed", test_burst_then_suppressed },
		{ "refill reports the suppressed count", test_refill_reports_suppressed },
		{ "steady rate", test_steady_rate },
		{ "long quiet caps at the burst; clock going back", test_long_quiet_caps_at_burst },
		{ "printed lines and suppressed summaries", test_printed_lines },
	};
	return UNIT_RUN("log_limit", tests);
}
