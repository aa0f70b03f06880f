/* Unit tests of `kapsel bench`'s pure logic: options, statistics, histogram, pattern, stats text, JSON walker, CRC-32, CPU rows. */
#include <math.h>
#include <string.h>

#include "bench/bench.h"
#include "cunit_main.h"
#include "kapsel/bench_net.h"

static int parse(struct bench_options *o, char *error, size_t len, int argc, char **argv)
{
	bench_options_init(o);
	FILE *null = fopen("/dev/null", "w");
	int err = bench_options_parse(o, argc, argv, null, error, len);
	fclose(null);
	return err;
}

static void test_options_defaults(void)
{
	struct bench_options o;
	char error[512];
	char *argv[] = { "bench", NULL };
	CU_ASSERT_EQUAL(parse(&o, error, sizeof(error), 1, argv), 0);
	CU_ASSERT_EQUAL(o.size_bytes, 256ull << 20);
	CU_ASSERT_EQUAL(o.repeat, 3);
	CU_ASSERT_EQUAL(o.iodepth_count, 2);
	CU_ASSERT_EQUAL(o.iodepths[0], 1);
	CU_ASSERT_EQUAL(o.iodepths[1], 32);
	CU_ASSERT_TRUE(o.cache[BENCH_CACHE_NONE]);
	CU_ASSERT_FALSE(o.cache[BENCH_CACHE_WRITEBACK]);
	CU_ASSERT_EQUAL(o.ops, 0);
	/* read-1M write-1M read-128K write-128K randread-4K randwrite-4K randrw-4K console,
	 * then the five CPU rows and the six process rows ("cpu"), then boot. */
	CU_ASSERT_EQUAL(o.workload_count, 8 + BENCH_CPU_OP_COUNT + 1);
	CU_ASSERT_EQUAL(o.workloads[8 + BENCH_CPU_OP_COUNT].kind, BENCH_KIND_BOOT);
	/* The QEMU paths are not on until bench_main finds QEMU; "qemu" asks
	 * for both. */
	CU_ASSERT_TRUE(o.paths[BENCH_PATH_NATIVE] && o.paths[BENCH_PATH_PV] &&
		       o.paths[BENCH_PATH_EMULATED]);
	CU_ASSERT_FALSE(o.paths[BENCH_PATH_QEMU_VIRTIO] || o.paths[BENCH_PATH_QEMU_IDE]);
	CU_ASSERT_FALSE(o.paths_given);
	CU_ASSERT_EQUAL(BENCH_CPU_OP_COUNT, 11);
	CU_ASSERT_STRING_EQUAL(o.workloads[4].name, "randread-4K");
	CU_ASSERT_TRUE(o.workloads[4].random);
	CU_ASSERT_EQUAL(o.workloads[4].block_bytes, 4096);
	CU_ASSERT_EQUAL(o.workloads[6].read_percent, 70);
	CU_ASSERT_EQUAL(o.workloads[7].kind, BENCH_KIND_CONSOLE);
	for (unsigned op = 0; op < BENCH_CPU_OP_COUNT; op++) {
		CU_ASSERT_EQUAL(o.workloads[8 + op].kind, BENCH_KIND_CPU);
		CU_ASSERT_EQUAL(o.workloads[8 + op].cpu_op, op);
		CU_ASSERT_STRING_EQUAL(o.workloads[8 + op].name, bench_cpu_info[op].name);
	}
	CU_ASSERT_EQUAL(o.cpu_runtime_ns, 100000000ull);
	CU_ASSERT_EQUAL(o.cpu_warmup_ns, 20000000ull);
	CU_ASSERT_EQUAL(o.timer_delay_ns, 1000000ull);
	bench_options_free(&o);
}

static void test_options_values(void)
{
	struct bench_options o;
	char error[512];
	char *argv[] = {
		"bench",      "--size",	   "64M",     "--workloads", "randwrite-8K,read-2M,mq",
		"--iodepths", "4",	   "--cache", "both",	     "--paths",
		"pv,native",  "--runtime", "250ms",   "--repeat",    "5",
		"--format",   "json",	   "--quick", NULL
	};
	CU_ASSERT_EQUAL(parse(&o, error, sizeof(error), 18, argv), 0);
	CU_ASSERT_EQUAL(o.size_bytes, 64ull << 20);
	CU_ASSERT_EQUAL(o.workload_count, 3);
	CU_ASSERT_STRING_EQUAL(o.workloads[0].name, "randwrite-8K");
	/* The multi-queue comparison: a report of its own, not a matrix row. */
	CU_ASSERT_EQUAL(o.workloads[2].kind, BENCH_KIND_MQ);
	CU_ASSERT_STRING_EQUAL(o.workloads[2].name, "mq-randread-4K");
	CU_ASSERT_EQUAL(o.workloads[0].read_percent, 0);
	CU_ASSERT_TRUE(o.workloads[0].writes);
	CU_ASSERT_EQUAL(o.workloads[1].block_bytes, 2u << 20);
	CU_ASSERT_EQUAL(o.iodepth_count, 1);
	CU_ASSERT_TRUE(o.cache[BENCH_CACHE_NONE] && o.cache[BENCH_CACHE_WRITEBACK]);
	CU_ASSERT_TRUE(o.paths[BENCH_PATH_PV] && o.paths[BENCH_PATH_NATIVE]);
	CU_ASSERT_FALSE(o.paths[BENCH_PATH_EMULATED]);
	CU_ASSERT_TRUE(o.paths_given);
	CU_ASSERT_FALSE(o.paths[BENCH_PATH_QEMU_VIRTIO] || o.paths[BENCH_PATH_QEMU_IDE]);
	CU_ASSERT_EQUAL(o.runtime_ns, 250000000ull);
	/* --quick does not override what was given; it adds a fixed op count. */
	CU_ASSERT_EQUAL(o.repeat, 5);
	CU_ASSERT_TRUE(o.ops > 0);
	CU_ASSERT_EQUAL(o.format, BENCH_FORMAT_JSON);
	bench_options_free(&o);
}

static void test_options_cpu(void)
{
	struct bench_options o;
	char error[512];
	char *only[] = { "bench", "--cpu", "--cpu-runtime", "50ms", "--timer-delay", "250us", NULL };
	CU_ASSERT_EQUAL(parse(&o, error, sizeof(error), 6, only), 0);
	CU_ASSERT_EQUAL(o.workload_count, BENCH_CPU_OP_COUNT);
	for (unsigned i = 0; i < o.workload_count; i++)
		CU_ASSERT_EQUAL(o.workloads[i].kind, BENCH_KIND_CPU);
	CU_ASSERT_EQUAL(o.cpu_runtime_ns, 50000000ull);
	CU_ASSERT_EQUAL(o.cpu_warmup_ns, 10000000ull);
	CU_ASSERT_EQUAL(o.timer_delay_ns, 250000ull);
	bench_options_free(&o);

	/* Single rows mix with block rows; "cpu" inside a list expands in place. */
	char *mixed[] = { "bench", "--workloads", "trap,randread-4K,timer-periodic", NULL };
	CU_ASSERT_EQUAL(parse(&o, error, sizeof(error), 3, mixed), 0);
	CU_ASSERT_EQUAL(o.workload_count, 3);
	CU_ASSERT_EQUAL(o.workloads[0].cpu_op, BENCH_CPU_TRAP);
	CU_ASSERT_EQUAL(o.workloads[1].kind, BENCH_KIND_BLOCK);
	CU_ASSERT_EQUAL(o.workloads[2].cpu_op, BENCH_CPU_TIMER_PERIODIC);
	bench_options_free(&o);

	/* "proc" is the process rows only, in order, each marked as one. */
	char *proc[] = { "bench", "--workloads", "randread-4K,proc", NULL };
	CU_ASSERT_EQUAL(parse(&o, error, sizeof(error), 3, proc), 0);
	CU_ASSERT_EQUAL(o.workload_count, 1 + BENCH_CPU_OP_COUNT - BENCH_CPU_FIRST_PROC);
	CU_ASSERT_EQUAL(o.workloads[1].cpu_op, BENCH_CPU_SYSCALL);
	CU_ASSERT_STRING_EQUAL(o.workloads[2].name, "fork");
	CU_ASSERT_EQUAL(o.workloads[6].cpu_op, BENCH_CPU_MMU_BATCH);
	for (unsigned i = 1; i < o.workload_count; i++)
		CU_ASSERT_TRUE(bench_cpu_info[o.workloads[i].cpu_op].proc);
	CU_ASSERT_FALSE(bench_cpu_info[BENCH_CPU_TIMER].proc);
	bench_options_free(&o);

	/* --quick keeps the CPU rows, at its small operation count. */
	char *quick[] = { "bench", "--quick", NULL };
	CU_ASSERT_EQUAL(parse(&o, error, sizeof(error), 2, quick), 0);
	unsigned cpu = 0;
	for (unsigned i = 0; i < o.workload_count; i++)
		cpu += o.workloads[i].kind == BENCH_KIND_CPU;
	CU_ASSERT_EQUAL(cpu, BENCH_CPU_OP_COUNT);
	CU_ASSERT_TRUE(o.ops > 0 && o.ops <= 64);
	bench_options_free(&o);

	struct bench_workload w;
	CU_ASSERT_EQUAL(bench_workload_lookup("upcall", &w), 0);
	CU_ASSERT_EQUAL(w.kind, BENCH_KIND_CPU);
	CU_ASSERT_EQUAL(w.cpu_op, BENCH_CPU_UPCALL);
	CU_ASSERT_EQUAL(bench_workload_lookup("upcalls", &w), -ENOENT);
	CU_ASSERT_EQUAL(bench_workload_lookup("cpu", &w), -ENOENT); /* a group, not a row */
	CU_ASSERT_EQUAL(bench_workload_lookup("proc", &w), -ENOENT);
	CU_ASSERT_EQUAL(bench_workload_lookup("page-fault", &w), 0);
	CU_ASSERT_EQUAL(w.cpu_op, BENCH_CPU_PAGE_FAULT);
}

/* The network rows: names, sizes, the "net" group; none is a default row. */
static void test_options_net(void)
{
	struct bench_workload w;
	CU_ASSERT_EQUAL(bench_workload_lookup("frame-rr-64", &w), 0);
	CU_ASSERT_EQUAL(w.kind, BENCH_KIND_NET);
	CU_ASSERT_FALSE(w.net_stream);
	CU_ASSERT_EQUAL(w.block_bytes, 64);
	CU_ASSERT_EQUAL(bench_workload_lookup("frame-stream-1514", &w), 0);
	CU_ASSERT_TRUE(w.net_stream);
	CU_ASSERT_EQUAL(w.block_bytes, 1514);
	CU_ASSERT_STRING_EQUAL(w.name, "frame-stream-1514");
	CU_ASSERT_EQUAL(bench_workload_lookup("frame-rr-60", &w), 0);
	CU_ASSERT_EQUAL(bench_workload_lookup("frame-rr-59", &w), -ENOENT);
	CU_ASSERT_EQUAL(bench_workload_lookup("frame-rr-1515", &w), -ENOENT);
	CU_ASSERT_EQUAL(bench_workload_lookup("frame-rr-64x", &w), -ENOENT);
	CU_ASSERT_EQUAL(bench_workload_lookup("frame-rr-", &w), -ENOENT);
	CU_ASSERT_EQUAL(bench_workload_lookup("frame-rr--64", &w), -ENOENT);
	CU_ASSERT_EQUAL(bench_workload_lookup("frame-stream-1K", &w), -ENOENT);
	CU_ASSERT_EQUAL(bench_workload_lookup("net", &w), -ENOENT); /* a group */

	struct bench_options o;
	char error[512];
	char *net[] = { "bench", "--workloads", "read-1M,net", NULL };
	CU_ASSERT_EQUAL(parse(&o, error, sizeof(error), 3, net), 0);
	CU_ASSERT_EQUAL(o.workload_count, 5);
	CU_ASSERT_STRING_EQUAL(o.workloads[1].name, "frame-rr-64");
	CU_ASSERT_STRING_EQUAL(o.workloads[4].name, "frame-stream-1514");
	bench_options_free(&o);
	char *defaults[] = { "bench", NULL };
	CU_ASSERT_EQUAL(parse(&o, error, sizeof(error), 1, defaults), 0);
	for (unsigned i = 0; i < o.workload_count; i++)
		CU_ASSERT_NOT_EQUAL(o.workloads[i].kind, BENCH_KIND_NET);
	bench_options_free(&o);
}

/* bench_net.h: a built frame passes its check; any changed byte fails it;
 * a frame of another type is not ours. */
static void test_net_frame(void)
{
	static const uint8_t a[6] = { 2, 0, 0, 0, 0, 1 }, b[6] = { 2, 0, 0, 0, 0, 2 };
	uint8_t frame[BENCH_NET_FRAME_MAX];
	struct bench_net_frame got;
	const uint32_t sizes[] = { BENCH_NET_FRAME_MIN, 64, 1514 };
	for (unsigned s = 0; s < 3; s++) {
		uint32_t size = sizes[s];
		bench_net_build(frame, size, b, a, BENCH_NET_DATA, 1, 77 + s, 5, 6);
		CU_ASSERT_EQUAL(bench_net_check(frame, size, &got), 1);
		CU_ASSERT_EQUAL(got.kind, BENCH_NET_DATA);
		CU_ASSERT_EQUAL(got.phase, 1);
		CU_ASSERT_EQUAL(got.seq, 77 + s);
		CU_ASSERT_EQUAL(got.arg0, 5);
		CU_ASSERT_EQUAL(got.arg1, 6);
		/* The addresses are outside the checksum: an echo swaps them. */
		frame[0] ^= 1;
		CU_ASSERT_EQUAL(bench_net_check(frame, size, &got), 1);
		for (uint32_t i = 14; i < size; i += 7) {
			frame[i] ^= 0x10;
			CU_ASSERT_EQUAL(bench_net_check(frame, size, &got), -1);
			frame[i] ^= 0x10;
		}
		CU_ASSERT_EQUAL(bench_net_check(frame, size - 1, &got), -1); /* cut short */
		frame[13] ^= 1;
		CU_ASSERT_EQUAL(bench_net_check(frame, size, &got), 0); /* someone else's */
	}
}

static void expect_error(int argc, char **argv, const char *fragment)
{
	struct bench_options o;
	char error[512];
	int err = parse(&o, error, sizeof(error), argc, argv);
	CU_ASSERT_EQUAL(err, -EINVAL);
	if (!strstr(error, fragment))
		fprintf(stderr, "\nerror '%s' lacks '%s'\n", error, fragment);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, fragment));
	bench_options_free(&o);
}

static void test_options_errors(void)
{
	char *a[] = { "bench", "--iodepths", "0", NULL };
	expect_error(3, a, "--iodepths: '0'");
	char *b[] = { "bench", "--workloads", "randread-3K", NULL };
	expect_error(3, b, "'randread-3K' is not a workload");
	char *c[] = { "bench", "--cache", "sometimes", NULL };
	expect_error(3, c, "--cache 'sometimes' is unknown");
	char *d[] = { "bench", "--paths", "native,warp", NULL };
	expect_error(3, d, "'warp' is not a path");
	char *e[] = { "bench", "--runtime", "fast", NULL };
	expect_error(3, e, "--runtime 'fast'");
	char *qa[] = { "bench", "--qemu-accel", "hvf", NULL };
	expect_error(3, qa, "--qemu-accel 'hvf': use kvm, tcg or auto");
	char *f[] = { "bench", "--size", "12Q", NULL };
	expect_error(3, f, "--size '12Q'");
	char *g[] = { "bench", "--frobnicate", NULL };
	expect_error(2, g, "unknown option '--frobnicate'");
	char *h[] = { "bench", "--repeat", "0", NULL };
	expect_error(3, h, "--repeat '0'");
	char *i[] = { "bench", "--format", "xml", NULL };
	expect_error(3, i, "--format 'xml'");
	char *j[] = { "bench", "--size", "1M", "--workloads", "read-2M", NULL };
	expect_error(5, j, "smaller than the block size of workload read-2M");
	char *k[] = { "bench", "stray", NULL };
	expect_error(2, k, "unexpected argument 'stray'");
	char *l[] = { "bench", "--iodepths", "4,4", NULL };
	expect_error(3, l, "listed twice");
	char *m[] = { "bench", "--cpu", "--workloads", "trap", NULL };
	expect_error(4, m, "--cpu and --workloads both choose the rows");
	char *n[] = { "bench", "--timer-delay", "50us", NULL };
	expect_error(3, n, "--timer-delay '50us' is not a valid time");
	char *o[] = { "bench", "--timer-delay", "1500ns", NULL };
	expect_error(3, o, "--timer-delay '1500ns'");
	char *p[] = { "bench", "--cpu-runtime", "0", NULL };
	expect_error(3, p, "--cpu-runtime '0' is not a valid time");
	char *q[] = { "bench", "--workloads", "cpu,trap", NULL };
	expect_error(3, q, "'trap' is listed twice");
	char *r[] = { "bench", "--workloads", "vmcall", NULL };
	expect_error(
		3, r,
		"a CPU row (null-hypercall, trap, upcall, timer, timer-periodic), a process row (syscall");
}

static void test_parse_size_duration(void)
{
	uint64_t v;
	CU_ASSERT_EQUAL(bench_parse_size("4K", &v), 0);
	CU_ASSERT_EQUAL(v, 4096);
	CU_ASSERT_EQUAL(bench_parse_size("1GiB", &v), 0);
	CU_ASSERT_EQUAL(v, 1ull << 30);
	CU_ASSERT_EQUAL(bench_parse_size("-1", &v), -EINVAL);
	CU_ASSERT_EQUAL(bench_parse_size("", &v), -EINVAL);
	CU_ASSERT_EQUAL(bench_parse_size("99999999999999999999T", &v), -EINVAL);
	CU_ASSERT_EQUAL(bench_parse_duration("1.5", &v), 0);
	CU_ASSERT_EQUAL(v, 1500000000ull);
	CU_ASSERT_EQUAL(bench_parse_duration("20ms", &v), 0);
	CU_ASSERT_EQUAL(v, 20000000ull);
	CU_ASSERT_EQUAL(bench_parse_duration("7us", &v), 0);
	CU_ASSERT_EQUAL(v, 7000ull);
	CU_ASSERT_EQUAL(bench_parse_duration("3h", &v), -EINVAL);
}

static void test_stat(void)
{
	double odd[] = { 5, 1, NAN, 3 };
	struct bench_stat s = bench_stat_of(odd, 4);
	CU_ASSERT_EQUAL(s.n, 3);
	CU_ASSERT_DOUBLE_EQUAL(s.median, 3, 1e-12);
	CU_ASSERT_DOUBLE_EQUAL(s.min, 1, 1e-12);
	CU_ASSERT_DOUBLE_EQUAL(s.max, 5, 1e-12);
	CU_ASSERT_DOUBLE_EQUAL(bench_stat_spread(&s), 4.0 / 3.0, 1e-12);
	double even[] = { 10, 2, 4, 8 };
	s = bench_stat_of(even, 4);
	CU_ASSERT_DOUBLE_EQUAL(s.median, 6, 1e-12);
	double none[] = { NAN };
	s = bench_stat_of(none, 1);
	CU_ASSERT_EQUAL(s.n, 0);
	CU_ASSERT_TRUE(isnan(s.median));
	CU_ASSERT_TRUE(isnan(bench_stat_spread(&s)));
}

static void test_histogram(void)
{
	/* Every value lands in a bucket that contains it, and buckets are
	 * contiguous and ordered. */
	uint64_t probes[] = { 0, 1, 63, 64, 65, 127, 128, 1000, 4095, 4096, 123456789, 1ull << 39 };
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
		uint32_t index = bench_hist_index(probes[i]);
		CU_ASSERT(index < BENCH_HIST_BUCKETS);
		uint64_t low = bench_hist_bucket_low(index), width = bench_hist_bucket_width(index);
		CU_ASSERT(low <= probes[i] && probes[i] < low + width);
		CU_ASSERT(width * 32 <= low + 32); /* relative width at most 1/32 */
	}
	for (uint32_t i = 0; i + 1 < BENCH_HIST_BUCKETS; i++)
		CU_ASSERT_EQUAL(bench_hist_bucket_low(i) + bench_hist_bucket_width(i),
				bench_hist_bucket_low(i + 1));

	/* 1000 samples 1..1000 us: p50 ~ 500 us, p99 ~ 990 us, p99.9 ~ 999 us. */
	static uint32_t counts[BENCH_HIST_BUCKETS];
	memset(counts, 0, sizeof(counts));
	for (uint64_t us = 1; us <= 1000; us++)
		counts[bench_hist_index(us * 1000)]++;
	double p50 = (double)bench_hist_percentile(counts, 1000, 5000);
	double p99 = (double)bench_hist_percentile(counts, 1000, 9900);
	double p999 = (double)bench_hist_percentile(counts, 1000, 9990);
	CU_ASSERT(fabs(p50 - 500000) < 500000 * 0.035);
	CU_ASSERT(fabs(p99 - 990000) < 990000 * 0.035);
	CU_ASSERT(fabs(p999 - 999000) < 999000 * 0.035);
	CU_ASSERT_EQUAL(bench_hist_percentile(counts, 0, 5000), 0);
}

static void test_pattern_and_stream(void)
{
	uint8_t buffer[2048];
	bench_pattern_fill(buffer, sizeof(buffer), 100, 7);
	CU_ASSERT_EQUAL(bench_pattern_check(buffer, sizeof(buffer), 100), 0);
	CU_ASSERT_EQUAL(bench_pattern_check(buffer, sizeof(buffer), 101), 4);
	/* Layout as documented: LE sector number, magic|generation, filler. */
	CU_ASSERT_EQUAL(buffer[512], 101);
	CU_ASSERT_EQUAL(buffer[512 + 8], 7);
	CU_ASSERT_EQUAL(buffer[512 + 15], 0x4b);
	CU_ASSERT_EQUAL(buffer[20], (uint8_t)(20 * 7 + 7 * 13 + 1));
	buffer[1024] ^= 1;
	CU_ASSERT_EQUAL(bench_pattern_check(buffer, sizeof(buffer), 100), 1);

	struct bench_stream a, b;
	bench_stream_init(&a, 1000, 1, 70, 42);
	bench_stream_init(&b, 1000, 1, 70, 42);
	unsigned writes = 0;
	for (int i = 0; i < 10000; i++) {
		int wa, wb;
		uint64_t x = bench_stream_next(&a, &wa), y = bench_stream_next(&b, &wb);
		CU_ASSERT_EQUAL(x, y);
		CU_ASSERT_EQUAL(wa, wb);
		CU_ASSERT(x < 1000);
		writes += (unsigned)wa;
	}
	CU_ASSERT(writes > 2700 && writes < 3300); /* 30% writes */
	struct bench_stream seq;
	bench_stream_init(&seq, 3, 0, 100, 1);
	int w;
	CU_ASSERT_EQUAL(bench_stream_next(&seq, &w), 0);
	CU_ASSERT_EQUAL(bench_stream_next(&seq, &w), 1);
	CU_ASSERT_EQUAL(bench_stream_next(&seq, &w), 2);
	CU_ASSERT_EQUAL(bench_stream_next(&seq, &w), 0);
	CU_ASSERT_EQUAL(w, 0);
}

static void test_stats_text(void)
{
	const char *before =
		"vm bench: uptime_ns 5\n  exits_total: 10\n  exits_io_hypercall: 10\n"
		"  hypercall_block: 4\ndevice 0 console-pv:\n  exits: 0\n  bytes_out: 85\n"
		"device 2 blk-pv:\n  image: /tmp/x.img (O_DIRECT)\n  kicks_received: 3\n"
		"  notifications_sent: 7\n  latency_us_histogram: [0,2):1\n";
	const char *after = "vm bench: uptime_ns 9\n  exits_total: 25\n  exits_io_hypercall: 20\n"
			    "  exits_interrupted: 5\n  hypercall_block: 9\ndevice 2 blk-pv:\n"
			    "  kicks_received: 13\n  notifications_sent: 27\n";
	struct bench_counters b, a, d;
	memset(&b, 0, sizeof(b));
	memset(&a, 0, sizeof(a));
	bench_counters_parse_stats(&b, before);
	bench_counters_parse_stats(&a, after);
	CU_ASSERT_EQUAL(bench_counters_get(&b, "exits_total"), 10);
	CU_ASSERT_EQUAL(bench_counters_get(&b, "dev.console-pv.bytes_out"), 85);
	CU_ASSERT_EQUAL(bench_counters_get(&b, "dev.blk-pv.notifications_sent"), 7);
	CU_ASSERT_EQUAL(bench_counters_get(&b, "dev.blk-pv.image"), 0);
	CU_ASSERT_EQUAL(bench_counters_get(&b, "dev.blk-pv.latency_us_histogram"), 0);
	bench_counters_delta(&d, &b, &a);
	CU_ASSERT_EQUAL(bench_counters_get(&d, "exits_total"), 15);
	CU_ASSERT_EQUAL(bench_counters_get(&d, "exits_interrupted"), 5);
	CU_ASSERT_EQUAL(bench_counters_get(&d, "hypercall_block"), 5);
	CU_ASSERT_EQUAL(bench_counters_get(&d, "dev.blk-pv.notifications_sent"), 20);
}

static void test_counters_take_off(void)
{
	struct bench_counters c;
	memset(&c, 0, sizeof(c));
	bench_counters_add(&c, "hypercall_time_info", 10);
	bench_counters_add(&c, "exits_total", 2);
	bench_counters_take_off(&c, "hypercall_time_info", 4);
	bench_counters_take_off(&c, "exits_total", 5); /* never below 0 */
	bench_counters_take_off(&c, "absent", 1);      /* not created */
	CU_ASSERT_EQUAL(bench_counters_get(&c, "hypercall_time_info"), 6);
	CU_ASSERT_EQUAL(bench_counters_get(&c, "exits_total"), 0);
	CU_ASSERT_EQUAL(c.count, 2);
}

static void test_cpu_metrics(void)
{
	double m[BENCH_M_COUNT];
	for (unsigned i = 0; i < BENCH_M_COUNT; i++)
		m[i] = NAN;
	/* A histogram's p99 can be its bucket's middle, past the largest
	 * value: it is reported as the maximum. */
	struct bench_cpu_sample s = {
		.ops = 400,
		.elapsed_ns = 2000000,
		.p50_ns = 4000,
		.p99_ns = 9300,
		.p999_ns = 9300,
		.max_ns = 9000,
		.mean_ns = 4500,
	};
	bench_cpu_metrics(&s, m);
	CU_ASSERT_DOUBLE_EQUAL(m[BENCH_M_LAT_P50_US], 4.0, 1e-9);
	CU_ASSERT_DOUBLE_EQUAL(m[BENCH_M_LAT_P99_US], 9.0, 1e-9);
	CU_ASSERT_DOUBLE_EQUAL(m[BENCH_M_LAT_MAX_US], 9.0, 1e-9);
	CU_ASSERT_DOUBLE_EQUAL(m[BENCH_M_US_PER_OP], 5.0, 1e-9);
	CU_ASSERT_DOUBLE_EQUAL(m[BENCH_M_IOPS], 200000.0, 1e-6);
	CU_ASSERT_TRUE(isnan(m[BENCH_M_DELIVER_P50_US])); /* none measured */
	CU_ASSERT_TRUE(isnan(m[BENCH_M_EXITS_PER_OP]));	  /* not its business */
	s.deliver_ops = 400;
	s.deliver_p50_ns = 2500;
	s.deliver_p99_ns = 7000;
	bench_cpu_metrics(&s, m);
	CU_ASSERT_DOUBLE_EQUAL(m[BENCH_M_DELIVER_P50_US], 2.5, 1e-9);
	CU_ASSERT_DOUBLE_EQUAL(m[BENCH_M_DELIVER_P99_US], 7.0, 1e-9);
	double untouched[BENCH_M_COUNT];
	for (unsigned i = 0; i < BENCH_M_COUNT; i++)
		untouched[i] = NAN;
	struct bench_cpu_sample empty = { 0 };
	bench_cpu_metrics(&empty, untouched);
	for (unsigned i = 0; i < BENCH_M_COUNT; i++)
		CU_ASSERT_TRUE(isnan(untouched[i]));
}

static void test_cpu_exit_cost(void)
{
	struct bench_workload null_row, trap_row, block_row;
	CU_ASSERT_EQUAL(bench_workload_lookup("null-hypercall", &null_row), 0);
	CU_ASSERT_EQUAL(bench_workload_lookup("trap", &trap_row), 0);
	CU_ASSERT_EQUAL(bench_workload_lookup("randread-4K", &block_row), 0);
	struct bench_row rows[3];
	memset(rows, 0, sizeof(rows));
	rows[0].workload = &block_row;
	rows[1].workload = &trap_row;
	rows[2].workload = &null_row;
	struct bench_results results = { .rows = rows, .row_count = 3 };
	/* Without a measured null-hypercall row there is no exit cost. */
	CU_ASSERT_TRUE(isnan(bench_cpu_exit_cost_us(&results)));

	struct bench_path_result *pv = &rows[2].paths[BENCH_PATH_PV];
	pv->status = BENCH_STATUS_OK;
	pv->stats[BENCH_M_LAT_P50_US].median = 3.0;
	pv->stats[BENCH_M_US_PER_OP].median = 40.0; /* a preempted mean: not used */
	pv->stats[BENCH_M_EXITS_PER_OP].median = 1.0;
	CU_ASSERT_DOUBLE_EQUAL(bench_cpu_exit_cost_us(&results), 3.0, 1e-12);
	pv->stats[BENCH_M_EXITS_PER_OP].median = 2.0;
	CU_ASSERT_DOUBLE_EQUAL(bench_cpu_exit_cost_us(&results), 1.5, 1e-12);
	pv->stats[BENCH_M_EXITS_PER_OP].median = 0;
	CU_ASSERT_TRUE(isnan(bench_cpu_exit_cost_us(&results)));

	/* A row's value is its p50; block rows and missing paths have none. */
	CU_ASSERT_DOUBLE_EQUAL(bench_cpu_value(&rows[2], BENCH_PATH_PV), 3.0, 1e-12);
	CU_ASSERT_TRUE(isnan(bench_cpu_value(&rows[2], BENCH_PATH_NATIVE)));
	rows[0].paths[BENCH_PATH_PV].status = BENCH_STATUS_OK;
	rows[0].paths[BENCH_PATH_PV].stats[BENCH_M_LAT_P50_US].median = 80;
	CU_ASSERT_TRUE(isnan(bench_cpu_value(&rows[0], BENCH_PATH_PV)));
}

struct json_seen {
	double iops, p50, last;
	unsigned numbers;
};

static void json_collect(const char *path, double value, void *opaque)
{
	struct json_seen *s = opaque;
	s->numbers++;
	s->last = value;
	if (strcmp(path, "jobs.0.read.iops") == 0)
		s->iops = value;
	if (strcmp(path, "jobs.0.read.lat_ns.percentile.50.000000") == 0)
		s->p50 = value;
}

static void test_json_walk(void)
{
	const char *doc =
		"{ \"fio version\" : \"fio-3.33\", \"jobs\" : [ { \"jobname\" : \"a\\\"b\","
		" \"read\" : { \"iops\" : 134894.105894, \"lat_ns\" : { \"percentile\" :"
		" { \"50.000000\" : 205824, \"99.000000\" : 536576 } } }, \"ok\" : true,"
		" \"none\" : null, \"list\" : [1, -2.5e3, []] } ] }";
	struct json_seen s = { 0 };
	CU_ASSERT_EQUAL(bench_json_walk(doc, json_collect, &s), 0);
	CU_ASSERT_DOUBLE_EQUAL(s.iops, 134894.105894, 1e-6);
	CU_ASSERT_DOUBLE_EQUAL(s.p50, 205824, 1e-9);
	CU_ASSERT_EQUAL(s.numbers, 5);
	CU_ASSERT_DOUBLE_EQUAL(s.last, -2500, 1e-9);
	CU_ASSERT_EQUAL(bench_json_walk("{\"a\": [1, 2}", NULL, NULL), -EINVAL);
	CU_ASSERT_EQUAL(bench_json_walk("{\"a\": 1} trailing", NULL, NULL), -EINVAL);
	CU_ASSERT_EQUAL(bench_json_walk("{\"a\" 1}", NULL, NULL), -EINVAL);
}

static void test_crc32(void)
{
	/* The standard check value of CRC-32/ISO-HDLC (zlib's crc32). */
	CU_ASSERT_EQUAL(bench_crc32(0, "123456789", 9), 0xcbf43926u);
	uint32_t split = bench_crc32(bench_crc32(0, "1234", 4), "56789", 5);
	CU_ASSERT_EQUAL(split, 0xcbf43926u);
	CU_ASSERT_EQUAL(bench_crc32(0, "", 0), 0);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "options_defaults", test_options_defaults },
		{ "options_values", test_options_values },
		{ "options_errors", test_options_errors },
		{ "options_cpu", test_options_cpu },
		{ "options_net", test_options_net },
		{ "net_frame", test_net_frame },
		{ "counters_take_off", test_counters_take_off },
		{ "cpu_metrics", test_cpu_metrics },
		{ "cpu_exit_cost", test_cpu_exit_cost },
		{ "parse_size_duration", test_parse_size_duration },
		{ "stat", test_stat },
		{ "histogram", test_histogram },
		{ "pattern_and_stream", test_pattern_and_stream },
		{ "stats_text", test_stats_text },
		{ "json_walk", test_json_walk },
		{ "crc32", test_crc32 },
	};
	return UNIT_RUN("bench", tests);
}
