/* `kapsel bench` options: defaults, parsing, validation and the usage text. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "kapsel/bench_net.h"

#define DEFAULT_SIZE_BYTES (256ull << 20)
#define DEFAULT_RUNTIME_NS 1000000000ull
#define DEFAULT_WARMUP_NS 250000000ull
#define DEFAULT_EMULATED_RUNTIME_NS 500000000ull
#define DEFAULT_EMULATED_WARMUP_NS 100000000ull
#define DEFAULT_REPEAT 3u
/* Under $XDG_CACHE_HOME (default ~/.cache): never the current directory,
 * which is often a source checkout. */
#define DEFAULT_OUTPUT_SUBDIR "kapsel/bench"
#define MAX_BLOCK_BYTES (4u << 20)
#define MIN_SIZE_BYTES (1ull << 20)
#define MAX_RUNTIME_NS (600ull * 1000000000ull)
#define CONSOLE_LINE_BYTES 80u
#define RANDRW_READ_PERCENT 70u

/*
 * PV polling: the guest spins for a completion up to a window that adapts
 * to the completion times it sees, bounded by --pv-guest-poll (fast
 * completions cost no exit, slow ones sleep at once); the backend, with no
 * --pv-backend-poll, polls adaptively just after completions for the
 * guest's next request (blk_pv_poll.c).  A fixed backend poll competes
 * with the vCPU on 2 shared CPUs (docs/benchmarks.md).
 */
#define DEFAULT_GUEST_POLL_NS 200000ull
#define DEFAULT_GUEST_POLL_TEXT "200us"
#define DEFAULT_BACKEND_POLL_NS 0ull
#define DEFAULT_BACKEND_POLL_TEXT "0"
#define MAX_POLL_NS 1000000000ull

/* CPU rows: each operation takes microseconds (an exit or two), so a
 * short window gives thousands of samples; all five rows on both paths
 * with 3 runs take a few seconds. */
#define DEFAULT_CPU_RUNTIME_NS 100000000ull
#define DEFAULT_CPU_RUNTIME_TEXT "100ms"
#define DEFAULT_TIMER_DELAY_NS 1000000ull
#define DEFAULT_TIMER_DELAY_TEXT "1ms"
#define MIN_TIMER_DELAY_NS 100000ull /* KAPSEL_TIMER_MIN_PERIOD_NS */

#define QUICK_SIZE_BYTES (4ull << 20)
#define QUICK_OPS 16u
#define QUICK_WARMUP_OPS 4u

static const char *const default_workloads =
	"read-1M,write-1M,read-128K,write-128K,randread-4K,randwrite-4K,randrw-4K,console,cpu,boot";
/* Small writes: the emulated disk takes an exit per 32-bit word written. */
static const char *const quick_workloads =
	"write-8K,randwrite-4K,randrw-4K,read-64K,randread-4K,console,cpu,boot";

/* "net": request/response and stream at the smallest and the largest frame. */
static const char *const net_workloads[] = { "frame-rr-64", "frame-rr-1514", "frame-stream-64",
					     "frame-stream-1514" };

void bench_usage(FILE *out)
{
	fprintf(out,
		"Usage: kapsel bench [OPTIONS]\n"
		"\n"
		"Measure I/O three ways in one run, on the same image file and pattern:\n"
		"  native    the host, io_uring at the same queue depth\n"
		"  pv        a guest (blkbench.elf) with the disk on the PV ring (bus=pv)\n"
		"  emulated  the same guest with the disk on the emulated ATA disk (bus=ata)\n"
		"Each row reports MB/s, IOPS, latency p50/p99/p99.9, VM exits and\n"
		"notifications per operation, host CPU per operation and the ratios\n"
		"PV/native and PV/emulated (median of --repeat runs, with their spread).\n"
		"Native numbers are cross-checked against fio when it is installed.\n"
		"The CPU rows (null-hypercall, trap, upcall, timer, timer-periodic) time\n"
		"one PV CPU operation in a guest (cpubench.elf) beside the host's closest\n"
		"operation (getppid, a SIGILL handler, a signal to itself, timerfd), with\n"
		"exits per operation and the cost of one exit on this machine.  The process\n"
		"rows (syscall, fork, ctxsw, page-fault, as-switch, mmu-batch) do the same\n"
		"for lmbench's operations on the PV MMU, with a table like SOSP'03's.\n"
		"\n"
		"Options:\n"
		"      --disk FILE          image to run on (created if missing; its first SIZE\n"
		"                           bytes are overwritten); default: a temporary image\n"
		"      --size SIZE          region every workload uses, e.g. 256M (default 256M)\n"
		"      --workloads LIST     comma-separated, named as fio's rw= plus block size:\n"
		"                           read-1M write-1M read-128K write-128K randread-4K\n"
		"                           randwrite-4K randrw-4K (70%% reads) console; any\n"
		"                           RW-SIZE with SIZE a multiple of 4K up to 4M; the CPU\n"
		"                           rows null-hypercall trap upcall timer timer-periodic;\n"
		"                           the process rows syscall fork ctxsw page-fault\n"
		"                           as-switch mmu-batch, or 'proc' for them; 'cpu' for\n"
		"                           every CPU and process row; 'mq' (mq-randread-4K):\n"
		"                           1 vCPU on 1 queue against 2 vCPUs on 2 queues at\n"
		"                           qd 32, after the table; the network rows\n"
		"                           frame-rr-SIZE (round trips, one frame outstanding)\n"
		"                           and frame-stream-SIZE (one side streams, the other\n"
		"                           counts), SIZE 60-1514 bytes, two VMs (netbench.elf)\n"
		"                           on the socket link: PV NICs (pv), NE2000 (emulated),\n"
		"                           two host threads (native); 'net' for frame-rr-64,\n"
		"                           frame-rr-1514, frame-stream-64, frame-stream-1514;\n"
		"                           'boot': hello.elf from process start to exit on\n"
		"                           Kapsel, QEMU microvm and QEMU pc, after the table;\n"
		"                           'all' (default: %s)\n"
		"      --cpu                only the CPU and process rows (--workloads cpu)\n"
		"      --cpu-runtime TIME   measured time per CPU row run (default %s; warm-up a\n"
		"                           fifth of it); --ops N sets a count instead\n"
		"      --timer-delay TIME   timer rows: one-shot delay and period (default %s,\n"
		"                           at least 100us)\n"
		"      --runtime TIME       measured time per run, e.g. 1s or 500ms (default 1s)\n"
		"      --warmup TIME        warm-up before each run (default 250ms)\n"
		"      --emulated-runtime TIME\n"
		"                           budget of the slow emulated path (default 500ms;\n"
		"                           warm-up 100ms)\n"
		"      --ops N              fixed-size runs: N operations per run instead of a\n"
		"                           time (the written data is then identical on every\n"
		"                           path and its checksum is compared)\n"
		"      --repeat N           runs per path and row; median and spread (default 3)\n"
		"      --iodepths LIST      queue depths, e.g. 1,32 (default 1,32; at most %u)\n"
		"      --cache MODE         none (O_DIRECT), writeback (page cache) or both\n"
		"                           (default none)\n"
		"      --paths LIST         any of native,pv,emulated,qemu-virtio,qemu-ide (qemu:\n"
		"                           both QEMU paths; default native,pv,emulated, and the\n"
		"                           QEMU paths for block rows when QEMU is installed)\n"
		"      --qemu FILE          QEMU binary of the qemu-* paths (default\n"
		"                           qemu-system-x86_64 on PATH)\n"
		"      --qemu-accel ACCEL   kvm, tcg or auto (default: kvm when /dev/kvm opens)\n"
		"      --format FORMAT      table or json on standard output (default table)\n"
		"      --output-dir DIR     where results.json, results.txt and the chart\n"
		"                           bench.svg/bench.png go (default\n"
		"                           $XDG_CACHE_HOME/%s, else ~/.cache/...)\n"
		"      --console-output FILE  console sink of the console row (default in DIR)\n"
		"      --quick              a tiny run (%lluM, %u operations per run, one repeat)\n"
		"                           for tests; checks that all paths write the same data\n"
		"      --no-fio             skip the fio cross-check\n"
		"      --no-chart           do not draw the chart\n"
		"      --kapsel FILE        kapsel binary for guest runs (default: this one)\n"
		"      --guest FILE         bench guest (default: blkbench.elf of this build)\n"
		"      --cpu-guest FILE     CPU rows' guest (default: cpubench.elf of this build)\n"
		"      --pv-guest-poll TIME the PV guest spins up to this long for a completion\n"
		"                           before it sleeps in the hypervisor; the window adapts\n"
		"                           to recent completion times (default %s)\n"
		"      --pv-backend-poll TIME the PV backend polls the ring this long before it\n"
		"                           sleeps (kapsel run --disk ...,poll=US); default %s:\n"
		"                           the backend's own adaptive poll after completions\n"
		"      --seed N             seed of the random offsets (default 42)\n"
		"  -v, --verbose            show every run as it happens\n"
		"  -h, --help               show this help\n"
		"\n"
		"Example:\n"
		"  kapsel bench --workloads randread-4K,read-1M --iodepths 1,32 --repeat 5\n",
		default_workloads, DEFAULT_CPU_RUNTIME_TEXT, DEFAULT_TIMER_DELAY_TEXT,
		BENCH_MAX_IODEPTH, DEFAULT_OUTPUT_SUBDIR,
		(unsigned long long)(QUICK_SIZE_BYTES >> 20), QUICK_OPS, DEFAULT_GUEST_POLL_TEXT,
		DEFAULT_BACKEND_POLL_TEXT);
}

static int fail(char *error, size_t error_len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *error, size_t error_len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(error, error_len, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

int bench_parse_size(const char *text, uint64_t *bytes)
{
	char *end;
	if (!text || !*text || *text == '-' || *text == '+')
		return -EINVAL;
	errno = 0;
	unsigned long long value = strtoull(text, &end, 10);
	if (errno || end == text)
		return -EINVAL;
	unsigned shift = 0;
	if (*end) {
		switch (*end) {
		case 'k':
		case 'K':
			shift = 10;
			break;
		case 'm':
		case 'M':
			shift = 20;
			break;
		case 'g':
		case 'G':
			shift = 30;
			break;
		case 't':
		case 'T':
			shift = 40;
			break;
		default:
			return -EINVAL;
		}
		end++;
		if (*end == 'i' || *end == 'I')
			end++;
		if (*end == 'b' || *end == 'B')
			end++;
		if (*end)
			return -EINVAL;
	}
	if (shift && value > (UINT64_MAX >> shift))
		return -EINVAL;
	*bytes = (uint64_t)value << shift;
	return 0;
}

int bench_parse_duration(const char *text, uint64_t *ns)
{
	char *end;
	if (!text || !*text || *text == '-' || *text == '+')
		return -EINVAL;
	errno = 0;
	double value = strtod(text, &end);
	if (errno || end == text || !(value >= 0))
		return -EINVAL;
	double scale;
	if (!*end || strcmp(end, "s") == 0)
		scale = 1e9;
	else if (strcmp(end, "ms") == 0)
		scale = 1e6;
	else if (strcmp(end, "us") == 0)
		scale = 1e3;
	else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
		scale = 60e9;
	else
		return -EINVAL;
	double result = value * scale;
	if (result > 1e18)
		return -EINVAL;
	*ns = (uint64_t)result;
	return 0;
}

static void format_block_size(char *out, size_t len, uint32_t bytes)
{
	if (bytes % (1u << 20) == 0)
		snprintf(out, len, "%uM", bytes >> 20);
	else
		snprintf(out, len, "%uK", bytes >> 10);
}

int bench_workload_lookup(const char *name, struct bench_workload *workload)
{
	static const struct {
		const char *rw;
		bool random;
		uint32_t read_percent;
	} kinds[] = {
		{ "read", false, 100 },
		{ "write", false, 0 },
		{ "randread", true, 100 },
		{ "randwrite", true, 0 },
		{ "randrw", true, RANDRW_READ_PERCENT },
	};
	memset(workload, 0, sizeof(*workload));
	for (unsigned op = 0; op < BENCH_CPU_OP_COUNT; op++) {
		if (strcmp(name, bench_cpu_info[op].name) == 0) {
			snprintf(workload->name, sizeof(workload->name), "%s", name);
			workload->kind = BENCH_KIND_CPU;
			workload->cpu_op = (enum bench_cpu_op)op;
			return 0;
		}
	}
	if (strcmp(name, "boot") == 0) {
		snprintf(workload->name, sizeof(workload->name), "boot");
		workload->kind = BENCH_KIND_BOOT;
		return 0;
	}
	if (strcmp(name, "mq-randread-4K") == 0 || strcmp(name, "mq") == 0) {
		snprintf(workload->name, sizeof(workload->name), "mq-randread-4K");
		snprintf(workload->rw, sizeof(workload->rw), "randread");
		workload->kind = BENCH_KIND_MQ;
		workload->random = true;
		workload->read_percent = 100;
		workload->block_bytes = 4096;
		return 0;
	}
	bool rr = strncmp(name, "frame-rr-", 9) == 0;
	if (rr || strncmp(name, "frame-stream-", 13) == 0) {
		const char *digits = name + (rr ? 9 : 13);
		char *end = NULL;
		errno = 0;
		unsigned long bytes = strtoul(digits, &end, 10);
		if (!*digits || *digits < '0' || *digits > '9' || *end || errno ||
		    bytes < BENCH_NET_FRAME_MIN || bytes > BENCH_NET_FRAME_MAX)
			return -ENOENT;
		snprintf(workload->name, sizeof(workload->name), "frame-%s-%lu",
			 rr ? "rr" : "stream", bytes);
		snprintf(workload->rw, sizeof(workload->rw), "%s", rr ? "rr" : "stream");
		workload->kind = BENCH_KIND_NET;
		workload->net_stream = !rr;
		workload->block_bytes = (uint32_t)bytes;
		return 0;
	}
	if (strcmp(name, "console") == 0) {
		snprintf(workload->name, sizeof(workload->name), "console");
		snprintf(workload->rw, sizeof(workload->rw), "write");
		workload->kind = BENCH_KIND_CONSOLE;
		workload->writes = false;
		workload->block_bytes = CONSOLE_LINE_BYTES;
		return 0;
	}
	const char *dash = strrchr(name, '-');
	if (!dash || dash == name)
		return -ENOENT;
	size_t rw_len = (size_t)(dash - name);
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		if (strlen(kinds[i].rw) != rw_len || strncmp(kinds[i].rw, name, rw_len) != 0)
			continue;
		uint64_t bytes;
		if (bench_parse_size(dash + 1, &bytes) < 0 || bytes == 0 || bytes % 4096 ||
		    bytes > MAX_BLOCK_BYTES)
			return -ENOENT;
		workload->kind = BENCH_KIND_BLOCK;
		workload->random = kinds[i].random;
		workload->read_percent = kinds[i].read_percent;
		workload->writes = kinds[i].read_percent < 100;
		workload->block_bytes = (uint32_t)bytes;
		snprintf(workload->rw, sizeof(workload->rw), "%s", kinds[i].rw);
		char size[16];
		format_block_size(size, sizeof(size), (uint32_t)bytes);
		snprintf(workload->name, sizeof(workload->name), "%s-%s", kinds[i].rw, size);
		return 0;
	}
	return -ENOENT;
}

void bench_options_init(struct bench_options *options)
{
	memset(options, 0, sizeof(*options));
	options->size_bytes = DEFAULT_SIZE_BYTES;
	options->runtime_ns = DEFAULT_RUNTIME_NS;
	options->warmup_ns = DEFAULT_WARMUP_NS;
	options->emulated_runtime_ns = DEFAULT_EMULATED_RUNTIME_NS;
	options->emulated_warmup_ns = DEFAULT_EMULATED_WARMUP_NS;
	options->repeat = DEFAULT_REPEAT;
	options->iodepths[0] = 1;
	options->iodepths[1] = 32;
	options->iodepth_count = 2;
	options->cache[BENCH_CACHE_NONE] = true;
	for (unsigned p = 0; p < BENCH_PATH_COUNT; p++)
		options->paths[p] = !bench_path_is_qemu(p); /* QEMU's: when installed */
	options->format = BENCH_FORMAT_TABLE;
	options->cpu_runtime_ns = DEFAULT_CPU_RUNTIME_NS;
	options->cpu_warmup_ns = DEFAULT_CPU_RUNTIME_NS / 5;
	options->timer_delay_ns = DEFAULT_TIMER_DELAY_NS;
	options->fio = true;
	options->chart = true;
	options->seed = 42;
	options->pv_guest_poll_ns = DEFAULT_GUEST_POLL_NS;
	options->pv_backend_poll_ns = DEFAULT_BACKEND_POLL_NS;
}

void bench_options_free(struct bench_options *options)
{
	free(options->disk_path);
	free(options->output_dir);
	free(options->console_output);
	free(options->kapsel_path);
	free(options->qemu_path);
	free(options->guest_path);
	free(options->cpu_guest_path);
	free(options->net_guest_path);
	memset(options, 0, sizeof(*options));
}

static int parse_workloads(struct bench_options *options, const char *text, char *error,
			   size_t error_len)
{
	if (strcmp(text, "all") == 0)
		text = default_workloads;
	char *copy = strdup(text), *save = NULL;
	if (!copy)
		return -ENOMEM;
	options->workload_count = 0;
	int err = 0;
	for (char *item = strtok_r(copy, ",", &save); item && !err;
	     item = strtok_r(NULL, ",", &save)) {
		/* "cpu" stands for every CPU row, "proc" for the process rows,
		 * in their order. */
		bool group = strcmp(item, "cpu") == 0, proc = strcmp(item, "proc") == 0;
		bool net = strcmp(item, "net") == 0;
		unsigned first = proc ? BENCH_CPU_FIRST_PROC : 0;
		unsigned end = group || proc ? BENCH_CPU_OP_COUNT
			       : net	     ? sizeof(net_workloads) / sizeof(net_workloads[0])
					     : first + 1u;
		for (unsigned g = first; g < end && !err; g++) {
			const char *name = group || proc ? bench_cpu_info[g].name
					   : net	 ? net_workloads[g]
							 : item;
			struct bench_workload workload;
			if (bench_workload_lookup(name, &workload) < 0) {
				err = fail(error, error_len,
					   "--workloads: '%s' is not a workload; use RW-SIZE with RW one of read, write, randread, randwrite, randrw and SIZE a multiple of 4K up to 4M (e.g. randread-4K, read-1M), console, a CPU row (null-hypercall, trap, upcall, timer, timer-periodic), a process row (syscall, fork, ctxsw, page-fault, as-switch, mmu-batch, or proc for these), cpu for every CPU and process row, frame-rr-SIZE or frame-stream-SIZE with SIZE 60 to 1514 bytes (e.g. frame-rr-64), net for the four network rows, or boot",
					   name);
				break;
			}
			for (unsigned i = 0; i < options->workload_count; i++)
				if (strcmp(options->workloads[i].name, workload.name) == 0)
					err = fail(error, error_len,
						   "--workloads: '%s' is listed twice", name);
			if (!err && options->workload_count == BENCH_MAX_WORKLOADS)
				err = fail(error, error_len, "--workloads: at most %u workloads",
					   BENCH_MAX_WORKLOADS);
			if (!err)
				options->workloads[options->workload_count++] = workload;
		}
	}
	free(copy);
	if (!err && options->workload_count == 0)
		err = fail(error, error_len,
			   "--workloads is empty; e.g. --workloads randread-4K,read-1M");
	return err;
}

static int parse_iodepths(struct bench_options *options, const char *text, char *error,
			  size_t error_len)
{
	char *copy = strdup(text), *save = NULL;
	if (!copy)
		return -ENOMEM;
	options->iodepth_count = 0;
	int err = 0;
	for (char *item = strtok_r(copy, ",", &save); item && !err;
	     item = strtok_r(NULL, ",", &save)) {
		char *end;
		errno = 0;
		long depth = strtol(item, &end, 10);
		if (errno || *end || end == item || depth < 1 || depth > (long)BENCH_MAX_IODEPTH) {
			err = fail(error, error_len,
				   "--iodepths: '%s' is not a queue depth; each must be 1-%u, e.g. --iodepths 1,32",
				   item, BENCH_MAX_IODEPTH);
			break;
		}
		for (unsigned i = 0; i < options->iodepth_count; i++)
			if (options->iodepths[i] == (unsigned)depth)
				err = fail(error, error_len, "--iodepths: %ld is listed twice",
					   depth);
		if (!err && options->iodepth_count == BENCH_MAX_IODEPTHS)
			err = fail(error, error_len, "--iodepths: at most %u depths",
				   BENCH_MAX_IODEPTHS);
		if (!err)
			options->iodepths[options->iodepth_count++] = (unsigned)depth;
	}
	free(copy);
	if (!err && options->iodepth_count == 0)
		err = fail(error, error_len, "--iodepths is empty; e.g. --iodepths 1,32");
	return err;
}

static int parse_paths(struct bench_options *options, const char *text, char *error,
		       size_t error_len)
{
	char *copy = strdup(text), *save = NULL;
	if (!copy)
		return -ENOMEM;
	bool any = false;
	int err = 0;
	for (unsigned p = 0; p < BENCH_PATH_COUNT; p++)
		options->paths[p] = false;
	for (char *item = strtok_r(copy, ",", &save); item && !err;
	     item = strtok_r(NULL, ",", &save)) {
		enum bench_path path;
		if (strcmp(item, "qemu") == 0) {
			options->paths[BENCH_PATH_QEMU_VIRTIO] = true;
			path = BENCH_PATH_QEMU_IDE;
		} else if (strcmp(item, "native") == 0)
			path = BENCH_PATH_NATIVE;
		else if (strcmp(item, "pv") == 0)
			path = BENCH_PATH_PV;
		else if (strcmp(item, "emulated") == 0 || strcmp(item, "ata") == 0)
			path = BENCH_PATH_EMULATED;
		else if (strcmp(item, "qemu-virtio") == 0)
			path = BENCH_PATH_QEMU_VIRTIO;
		else if (strcmp(item, "qemu-ide") == 0)
			path = BENCH_PATH_QEMU_IDE;
		else {
			err = fail(error, error_len,
				   "--paths: '%s' is not a path; use any of native, pv, emulated, qemu-virtio, qemu-ide (qemu: both)",
				   item);
			break;
		}
		options->paths[path] = true;
		any = true;
	}
	free(copy);
	if (!err && !any)
		err = fail(error, error_len,
			   "--paths is empty; use any of native, pv, emulated, qemu-virtio, qemu-ide");
	if (!err)
		options->paths_given = true;
	return err;
}

static char *replace(char *old, const char *value)
{
	free(old);
	return strdup(value);
}

int bench_options_parse(struct bench_options *options, int argc, char **argv, FILE *out,
			char *error, size_t error_len)
{
	enum {
		OPT_DISK = 256,
		OPT_SIZE,
		OPT_WORKLOADS,
		OPT_RUNTIME,
		OPT_WARMUP,
		OPT_EMULATED_RUNTIME,
		OPT_OPS,
		OPT_REPEAT,
		OPT_IODEPTHS,
		OPT_CACHE,
		OPT_PATHS,
		OPT_FORMAT,
		OPT_OUTPUT_DIR,
		OPT_CONSOLE_OUTPUT,
		OPT_QUICK,
		OPT_NO_FIO,
		OPT_NO_CHART,
		OPT_KAPSEL,
		OPT_GUEST,
		OPT_SEED,
		OPT_GUEST_POLL,
		OPT_BACKEND_POLL,
		OPT_CPU,
		OPT_CPU_RUNTIME,
		OPT_TIMER_DELAY,
		OPT_CPU_GUEST,
		OPT_QEMU,
		OPT_QEMU_ACCEL,
	};
	static const struct option long_options[] = {
		{ "disk", required_argument, NULL, OPT_DISK },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "workloads", required_argument, NULL, OPT_WORKLOADS },
		{ "runtime", required_argument, NULL, OPT_RUNTIME },
		{ "warmup", required_argument, NULL, OPT_WARMUP },
		{ "emulated-runtime", required_argument, NULL, OPT_EMULATED_RUNTIME },
		{ "ops", required_argument, NULL, OPT_OPS },
		{ "repeat", required_argument, NULL, OPT_REPEAT },
		{ "iodepths", required_argument, NULL, OPT_IODEPTHS },
		{ "iodepth", required_argument, NULL, OPT_IODEPTHS },
		{ "cache", required_argument, NULL, OPT_CACHE },
		{ "paths", required_argument, NULL, OPT_PATHS },
		{ "format", required_argument, NULL, OPT_FORMAT },
		{ "output-dir", required_argument, NULL, OPT_OUTPUT_DIR },
		{ "console-output", required_argument, NULL, OPT_CONSOLE_OUTPUT },
		{ "quick", no_argument, NULL, OPT_QUICK },
		{ "no-fio", no_argument, NULL, OPT_NO_FIO },
		{ "no-chart", no_argument, NULL, OPT_NO_CHART },
		{ "kapsel", required_argument, NULL, OPT_KAPSEL },
		{ "guest", required_argument, NULL, OPT_GUEST },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "pv-guest-poll", required_argument, NULL, OPT_GUEST_POLL },
		{ "pv-backend-poll", required_argument, NULL, OPT_BACKEND_POLL },
		{ "cpu", no_argument, NULL, OPT_CPU },
		{ "cpu-runtime", required_argument, NULL, OPT_CPU_RUNTIME },
		{ "timer-delay", required_argument, NULL, OPT_TIMER_DELAY },
		{ "cpu-guest", required_argument, NULL, OPT_CPU_GUEST },
		{ "qemu", required_argument, NULL, OPT_QEMU },
		{ "qemu-accel", required_argument, NULL, OPT_QEMU_ACCEL },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	bool size_given = false, workloads_given = false, iodepths_given = false;
	bool repeat_given = false, ops_given = false, cpu_only = false;
	const char *workloads = default_workloads;
	uint64_t number;
	int err = 0, opt;

	error[0] = '\0';
	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":vh", long_options, NULL)) != -1) {
		switch (opt) {
		case OPT_DISK:
			if (!*optarg)
				return fail(error, error_len, "--disk needs a file name");
			options->disk_path = replace(options->disk_path, optarg);
			break;
		case OPT_SIZE:
			if (bench_parse_size(optarg, &options->size_bytes) < 0 ||
			    options->size_bytes < MIN_SIZE_BYTES || options->size_bytes % 4096)
				return fail(error, error_len,
					    "--size '%s' is not a valid size; give at least 1M, a multiple of 4K, e.g. 256M",
					    optarg);
			size_given = true;
			break;
		case OPT_WORKLOADS:
			workloads = optarg;
			workloads_given = true;
			break;
		case OPT_RUNTIME:
			if (bench_parse_duration(optarg, &options->runtime_ns) < 0 ||
			    options->runtime_ns < 1000000ull ||
			    options->runtime_ns > MAX_RUNTIME_NS)
				return fail(error, error_len,
					    "--runtime '%s' is not a valid time; give 1ms-600s, e.g. 1s or 500ms",
					    optarg);
			break;
		case OPT_WARMUP:
			if (bench_parse_duration(optarg, &options->warmup_ns) < 0 ||
			    options->warmup_ns > MAX_RUNTIME_NS)
				return fail(error, error_len,
					    "--warmup '%s' is not a valid time; give 0-600s, e.g. 250ms",
					    optarg);
			break;
		case OPT_EMULATED_RUNTIME:
			if (bench_parse_duration(optarg, &options->emulated_runtime_ns) < 0 ||
			    options->emulated_runtime_ns < 1000000ull ||
			    options->emulated_runtime_ns > MAX_RUNTIME_NS)
				return fail(error, error_len,
					    "--emulated-runtime '%s' is not a valid time; give 1ms-600s, e.g. 500ms",
					    optarg);
			break;
		case OPT_OPS:
			if (bench_parse_size(optarg, &number) < 0 || number == 0 ||
			    number > (1ull << 32))
				return fail(error, error_len,
					    "--ops '%s' is not a valid count; give 1-4G operations, e.g. 1000",
					    optarg);
			options->ops = number;
			ops_given = true;
			break;
		case OPT_REPEAT:
			if (bench_parse_size(optarg, &number) < 0 || number == 0 ||
			    number > BENCH_MAX_REPEAT)
				return fail(error, error_len,
					    "--repeat '%s' is not valid; give 1-%u", optarg,
					    BENCH_MAX_REPEAT);
			options->repeat = (unsigned)number;
			repeat_given = true;
			break;
		case OPT_IODEPTHS:
			err = parse_iodepths(options, optarg, error, error_len);
			if (err)
				return err;
			iodepths_given = true;
			break;
		case OPT_CACHE:
			if (strcmp(optarg, "none") == 0 || strcmp(optarg, "direct") == 0) {
				options->cache[BENCH_CACHE_NONE] = true;
				options->cache[BENCH_CACHE_WRITEBACK] = false;
			} else if (strcmp(optarg, "writeback") == 0) {
				options->cache[BENCH_CACHE_NONE] = false;
				options->cache[BENCH_CACHE_WRITEBACK] = true;
			} else if (strcmp(optarg, "both") == 0) {
				options->cache[BENCH_CACHE_NONE] = true;
				options->cache[BENCH_CACHE_WRITEBACK] = true;
			} else {
				return fail(error, error_len,
					    "--cache '%s' is unknown; use none (O_DIRECT), writeback or both",
					    optarg);
			}
			break;
		case OPT_PATHS:
			err = parse_paths(options, optarg, error, error_len);
			if (err)
				return err;
			break;
		case OPT_FORMAT:
			if (strcmp(optarg, "table") == 0)
				options->format = BENCH_FORMAT_TABLE;
			else if (strcmp(optarg, "json") == 0)
				options->format = BENCH_FORMAT_JSON;
			else
				return fail(error, error_len,
					    "--format '%s' is unknown; use table or json", optarg);
			break;
		case OPT_OUTPUT_DIR:
			if (!*optarg)
				return fail(error, error_len,
					    "--output-dir needs a directory name");
			options->output_dir = replace(options->output_dir, optarg);
			break;
		case OPT_CONSOLE_OUTPUT:
			if (!*optarg)
				return fail(error, error_len, "--console-output needs a file name");
			options->console_output = replace(options->console_output, optarg);
			break;
		case OPT_QUICK:
			options->quick = true;
			break;
		case OPT_NO_FIO:
			options->fio = false;
			break;
		case OPT_NO_CHART:
			options->chart = false;
			break;
		case OPT_KAPSEL:
			options->kapsel_path = replace(options->kapsel_path, optarg);
			break;
		case OPT_QEMU:
			options->qemu_path = replace(options->qemu_path, optarg);
			break;
		case OPT_QEMU_ACCEL:
			if (strcmp(optarg, "auto") == 0)
				options->qemu_accel = BENCH_QEMU_ACCEL_AUTO;
			else if (strcmp(optarg, "kvm") == 0)
				options->qemu_accel = BENCH_QEMU_ACCEL_KVM;
			else if (strcmp(optarg, "tcg") == 0)
				options->qemu_accel = BENCH_QEMU_ACCEL_TCG;
			else
				return fail(error, error_len,
					    "--qemu-accel '%s': use kvm, tcg or auto", optarg);
			break;
		case OPT_GUEST:
			options->guest_path = replace(options->guest_path, optarg);
			break;
		case OPT_SEED:
			if (bench_parse_size(optarg, &options->seed) < 0)
				return fail(error, error_len, "--seed '%s' is not a number",
					    optarg);
			break;
		case OPT_GUEST_POLL:
			if (bench_parse_duration(optarg, &options->pv_guest_poll_ns) < 0 ||
			    options->pv_guest_poll_ns > MAX_POLL_NS)
				return fail(error, error_len,
					    "--pv-guest-poll '%s' is not a valid time; give 0-1s, e.g. 50us",
					    optarg);
			break;
		case OPT_BACKEND_POLL:
			if (bench_parse_duration(optarg, &options->pv_backend_poll_ns) < 0 ||
			    options->pv_backend_poll_ns > MAX_POLL_NS)
				return fail(error, error_len,
					    "--pv-backend-poll '%s' is not a valid time; give 0-1s, e.g. 50us",
					    optarg);
			break;
		case OPT_CPU:
			cpu_only = true;
			break;
		case OPT_CPU_RUNTIME:
			if (bench_parse_duration(optarg, &options->cpu_runtime_ns) < 0 ||
			    options->cpu_runtime_ns < 1000000ull ||
			    options->cpu_runtime_ns > MAX_RUNTIME_NS)
				return fail(error, error_len,
					    "--cpu-runtime '%s' is not a valid time; give 1ms-600s, e.g. 100ms",
					    optarg);
			options->cpu_warmup_ns = options->cpu_runtime_ns / 5;
			break;
		case OPT_TIMER_DELAY:
			if (bench_parse_duration(optarg, &options->timer_delay_ns) < 0 ||
			    options->timer_delay_ns < MIN_TIMER_DELAY_NS ||
			    options->timer_delay_ns > 1000000000ull ||
			    options->timer_delay_ns % 1000)
				return fail(error, error_len,
					    "--timer-delay '%s' is not a valid time; give whole microseconds from 100us to 1s, e.g. 1ms",
					    optarg);
			break;
		case OPT_CPU_GUEST:
			options->cpu_guest_path = replace(options->cpu_guest_path, optarg);
			break;
		case 'v':
			options->verbose = true;
			break;
		case 'h':
			bench_usage(out);
			return 1;
		case ':':
			return fail(error, error_len,
				    "option '%s' needs a value; see 'kapsel bench --help'",
				    argv[optind - 1]);
		default:
			return fail(error, error_len,
				    "unknown option '%s'; see 'kapsel bench --help'",
				    argv[optind - 1]);
		}
	}
	if (optind < argc)
		return fail(error, error_len,
			    "unexpected argument '%s'; kapsel bench takes only options (see --help)",
			    argv[optind]);

	if (cpu_only) {
		if (workloads_given)
			return fail(
				error, error_len,
				"--cpu and --workloads both choose the rows; give one (--cpu is --workloads cpu)");
		workloads = "cpu";
		workloads_given = true;
	}
	if (options->quick) {
		if (!size_given)
			options->size_bytes = QUICK_SIZE_BYTES;
		if (!workloads_given)
			workloads = quick_workloads;
		if (!iodepths_given) {
			options->iodepths[0] = 1;
			options->iodepths[1] = 8;
			options->iodepth_count = 2;
		}
		if (!repeat_given)
			options->repeat = 1;
		if (!ops_given)
			options->ops = QUICK_OPS;
	}
	if (options->ops)
		options->warmup_ops = options->ops / 6 ? options->ops / 6 : 1;
	if (options->quick && !ops_given)
		options->warmup_ops = QUICK_WARMUP_OPS;
	err = parse_workloads(options, workloads, error, error_len);
	if (err)
		return err;
	for (unsigned i = 0; i < options->workload_count; i++) {
		const struct bench_workload *w = &options->workloads[i];
		if (w->kind == BENCH_KIND_BLOCK && w->block_bytes > options->size_bytes)
			return fail(error, error_len,
				    "--size %lluK is smaller than the block size of workload %s; give a larger --size",
				    (unsigned long long)(options->size_bytes >> 10), w->name);
	}
	if (!options->output_dir) {
		const char *cache = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
		char path[PATH_MAX];
		if (cache && cache[0] == '/')
			snprintf(path, sizeof(path), "%s/%s", cache, DEFAULT_OUTPUT_SUBDIR);
		else if (home && home[0] == '/')
			snprintf(path, sizeof(path), "%s/.cache/%s", home, DEFAULT_OUTPUT_SUBDIR);
		else
			snprintf(path, sizeof(path), "/tmp/kapsel-bench-%u", (unsigned)getuid());
		options->output_dir = strdup(path);
	}
	return 0;
}
