/* Unit tests: the progress line of save/snapshot/migrate (parsing the VM's reply, rate, time left, format) and the bounded option numbers. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cunit_main.h"
#include "cli/cli_progress.h"

static const char *const save_payload = "sequence 3\n"
					"operation save\n"
					"state running\n"
					"phase memory\n"
					"scanned_bytes 268435456\n"
					"total_bytes 1073741824\n"
					"written_bytes 134217728\n"
					"round 0\n"
					"max_rounds 0\n"
					"dirty_bytes 0\n"
					"elapsed_ns 700000000\n";

static void test_parse(void)
{
	struct state_progress p;
	CU_ASSERT_EQUAL(cli_progress_parse(save_payload, &p), 0);
	CU_ASSERT_EQUAL(p.sequence, 3);
	CU_ASSERT_STRING_EQUAL(p.operation, "save");
	CU_ASSERT_STRING_EQUAL(p.state, "running");
	CU_ASSERT_STRING_EQUAL(p.phase, "memory");
	CU_ASSERT_EQUAL(p.scanned_bytes, 256ull << 20);
	CU_ASSERT_EQUAL(p.total_bytes, 1ull << 30);
	CU_ASSERT_EQUAL(p.written_bytes, 128ull << 20);
	CU_ASSERT_EQUAL(p.elapsed_ns, 700000000ull);
	/* An idle VM and a reply that is not a progress reply. */
	CU_ASSERT_EQUAL(cli_progress_parse("sequence 0\noperation none\nstate idle\n", &p), 0);
	CU_ASSERT_EQUAL(p.sequence, 0);
	CU_ASSERT_STRING_EQUAL(p.operation, "none");
	CU_ASSERT_EQUAL(cli_progress_parse("name web\nstate running\n", &p), -EPROTO);
	CU_ASSERT_EQUAL(cli_progress_parse(NULL, &p), -EPROTO);
}

static struct state_progress sample(uint64_t scanned, uint64_t written)
{
	struct state_progress p;
	cli_progress_parse(save_payload, &p);
	p.scanned_bytes = scanned;
	p.written_bytes = written;
	return p;
}

static void test_rate_and_time_left(void)
{
	uint64_t rate, left;
	/* 256 MiB walked and 64 MiB written in 0.5 s: 128 MiB/s written; the
	 * remaining 512 MiB of the pass take 1 s at 512 MiB/s walked. */
	struct state_progress a = sample(256ull << 20, 64ull << 20);
	struct state_progress b = sample(512ull << 20, 128ull << 20);
	cli_progress_rate(&a, &b, 500000000ull, &rate, &left);
	CU_ASSERT_EQUAL(rate, 128ull << 20);
	CU_ASSERT_EQUAL(left, 1000000000ull);
	/* No previous sample, no time, nothing walked: unknown. */
	cli_progress_rate(NULL, &b, 500000000ull, &rate, &left);
	CU_ASSERT_EQUAL(rate, 0);
	CU_ASSERT_EQUAL(left, UINT64_MAX);
	cli_progress_rate(&b, &b, 500000000ull, &rate, &left);
	CU_ASSERT_EQUAL(rate, 0);
	CU_ASSERT_EQUAL(left, UINT64_MAX);
	/* A new migration round is a new pass: its time left is unknown until
	 * it moves, but the write rate carries on. */
	struct state_progress r1 = b, r2 = b;
	snprintf(r1.operation, sizeof(r1.operation), "migrate");
	snprintf(r2.operation, sizeof(r2.operation), "migrate");
	r2.round = 1;
	r2.total_bytes = 8ull << 20;
	r2.scanned_bytes = 4ull << 20;
	r2.written_bytes = r1.written_bytes + (4ull << 20);
	cli_progress_rate(&r1, &r2, 1000000000ull, &rate, &left);
	CU_ASSERT_EQUAL(rate, 4ull << 20);
	CU_ASSERT_EQUAL(left, UINT64_MAX);
	/* Another operation altogether. */
	r2.sequence++;
	cli_progress_rate(&r1, &r2, 1000000000ull, &rate, &left);
	CU_ASSERT_EQUAL(rate, 0);
}

static void test_format(void)
{
	char line[256];
	struct state_progress p = sample(512ull << 20, 128ull << 20);
	cli_progress_format(&p, 128ull << 20, 1500000000ull, line, sizeof(line));
	CU_ASSERT_STRING_EQUAL(line, "save: memory 512.0 MiB of 1.0 GiB (50%), 128.0 MiB written, "
				     "128.0 MiB/s, 0.7 s, left 1.5 s");
	/* Unknown rate and time left. */
	cli_progress_format(&p, 0, UINT64_MAX, line, sizeof(line));
	CU_ASSERT_PTR_NOT_NULL(strstr(line, "-- B/s, 0.7 s, left --"));
	/* Done: 100%, the average rate over the whole operation. */
	snprintf(p.state, sizeof(p.state), "done");
	p.scanned_bytes = p.total_bytes;
	p.elapsed_ns = 2000000000ull;
	p.written_bytes = 300ull << 20;
	cli_progress_format(&p, 0, UINT64_MAX, line, sizeof(line));
	CU_ASSERT_STRING_EQUAL(line, "save: 1.0 GiB of 1.0 GiB (100%), 300.0 MiB written, "
				     "150.0 MiB/s, 2.0 s, done");
	/* A migration round names the round, the limit and the dirty data. */
	struct state_progress m = sample(2ull << 20, 70ull << 20);
	snprintf(m.operation, sizeof(m.operation), "migrate");
	snprintf(m.phase, sizeof(m.phase), "precopy");
	m.round = 3;
	m.max_rounds = 30;
	m.total_bytes = m.dirty_bytes = 8ull << 20;
	cli_progress_format(&m, 64ull << 20, 100000000ull, line, sizeof(line));
	CU_ASSERT_STRING_EQUAL(line, "migrate: precopy round 3/30, 8.0 MiB dirty, 2.0 MiB of "
				     "8.0 MiB (25%), 70.0 MiB sent, 64.0 MiB/s, 0.7 s, left 0.1 s");
	snprintf(m.phase, sizeof(m.phase), "stop-copy");
	cli_progress_format(&m, 64ull << 20, 100000000ull, line, sizeof(line));
	CU_ASSERT_PTR_NOT_NULL(strstr(line, "migrate: stop-copy after 3 rounds, "));
	snprintf(m.state, sizeof(m.state), "failed");
	cli_progress_format(&m, 0, UINT64_MAX, line, sizeof(line));
	CU_ASSERT_PTR_NOT_NULL(strstr(line, "migrate: 3 rounds, "));
	CU_ASSERT_PTR_NOT_NULL(strstr(line, ", failed"));
	/* A small buffer is cut, never overrun. */
	char small[16];
	memset(small, 'x', sizeof(small));
	cli_progress_format(&m, 0, 0, small, 10);
	CU_ASSERT_EQUAL(strlen(small), 9);
	CU_ASSERT_EQUAL(small[11], 'x');
}

static void test_sizes_and_durations(void)
{
	char buf[32];
	cli_format_bytes(0, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "0 B");
	cli_format_bytes(1023, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "1023 B");
	cli_format_bytes(1536, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "1.5 KiB");
	cli_format_bytes(5ull << 40, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "5.0 TiB");
	cli_format_bytes(UINT64_MAX, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "16777216.0 TiB");
	cli_format_duration(0, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "0.0 s");
	cli_format_duration(2949999999ull, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "2.9 s");
	cli_format_duration(125ull * 1000000000ull, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "2m05s");
	cli_format_duration(3725ull * 1000000000ull, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "1h02m");
}

static void test_option_numbers(void)
{
	char error[128];
	uint32_t value = 7;
	CU_ASSERT_EQUAL(cli_parse_u32_range("--max-rounds", "30", 1, 1000, &value, error,
					    sizeof(error)),
			0);
	CU_ASSERT_EQUAL(value, 30);
	CU_ASSERT_EQUAL(cli_parse_u32_range("--max-rounds", "1000", 1, 1000, &value, error,
					    sizeof(error)),
			0);
	CU_ASSERT_EQUAL(value, 1000);
	static const char *const bad[] = { "0",	  "1001", "",
					   "-1",  "+5",	  "5ms",
					   "abc", " 5",	  "99999999999999999999" };
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		value = 7;
		CU_ASSERT_EQUAL(cli_parse_u32_range("--max-rounds", bad[i], 1, 1000, &value, error,
						    sizeof(error)),
				-EINVAL);
		CU_ASSERT_EQUAL(value, 7);
	}
	cli_parse_u32_range("--max-downtime", "0", 1, 60000, &value, error, sizeof(error));
	CU_ASSERT_STRING_EQUAL(error,
			       "--max-downtime '0' is not valid; use a whole number from 1 to 60000");
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "parse a progress reply", test_parse },
		{ "rate and time left", test_rate_and_time_left },
		{ "progress line", test_format },
		{ "sizes and durations", test_sizes_and_durations },
		{ "bounded option numbers", test_option_numbers },
	};
	return UNIT_RUN("cli_progress", tests);
}
