/* `kapsel bench`: the types its files share (options, jobs, per-run results, summaries) and their entry points. */
#ifndef KAPSEL_BENCH_H
#define KAPSEL_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "kapsel/bench_pattern.h"

/*
 * The bench runs every workload row on up to three paths, in one
 * invocation, on the same image file and the same operation stream:
 *   native    the host itself, io_uring at the same queue depth (bench_native.c)
 *   pv        blkbench.elf under `kapsel run` with the disk on bus=pv (bench_guest.c)
 *   emulated  the same guest with the disk on bus=ata
 * and reports medians and spreads over repeated runs (bench_report.c).
 * CPU rows (null-hypercall, trap, upcall, timer, timer-periodic) time one
 * PV CPU operation in cpubench.elf (pv) beside the closest operation of the
 * host's own kernel (native, bench_cpu_native.c); they have no emulated path.
 * Network rows (frame-rr-SIZE, frame-stream-SIZE) run bench_net.h's
 * pattern between two host threads on Unix datagram sockets (native,
 * bench_net_native.c), two VMs with PV NICs on the socket link (pv) and
 * the same two VMs with NE2000 NICs (emulated), both with netbench.elf.
 */

enum bench_path {
	BENCH_PATH_NATIVE,
	BENCH_PATH_PV,
	BENCH_PATH_EMULATED,
	/* The same blkbench.elf on QEMU (bench_qemu.c), block rows only:
	 * virtio-blk on `-M microvm`, and IDE on `-M pc`. */
	BENCH_PATH_QEMU_VIRTIO,
	BENCH_PATH_QEMU_IDE,
	BENCH_PATH_COUNT
};

/* The QEMU paths (block rows only, guest-timed, no VMM counters). */
static inline bool bench_path_is_qemu(unsigned path)
{
	return path == BENCH_PATH_QEMU_VIRTIO || path == BENCH_PATH_QEMU_IDE;
}

/* Paths with no queue, whose runs get the emulated budget. */
static inline bool bench_path_is_emulated(unsigned path)
{
	return path == BENCH_PATH_EMULATED || path == BENCH_PATH_QEMU_IDE;
}

enum bench_qemu_accel {
	BENCH_QEMU_ACCEL_AUTO, /* kvm when /dev/kvm opens, else tcg */
	BENCH_QEMU_ACCEL_KVM,
	BENCH_QEMU_ACCEL_TCG
};
enum bench_kind {
	BENCH_KIND_BLOCK,
	BENCH_KIND_CONSOLE,
	BENCH_KIND_CPU,
	/* mq-randread-4K: 1 vCPU / 1 queue against 2 vCPUs / 2 queues, a
	 * report of its own after the table (bench_mq.c), not a matrix row */
	BENCH_KIND_MQ,
	/* frame-rr-SIZE / frame-stream-SIZE: two ends of a link (bench_net.h) */
	BENCH_KIND_NET,
	/* boot: hello.elf from process start to exit on Kapsel and QEMU, a
	 * report of its own after the table (bench_boot.c), not a matrix row */
	BENCH_KIND_BOOT
};

/* The CPU rows, in the order `--workloads cpu` lists them. */
enum bench_cpu_op {
	BENCH_CPU_NULL_HYPERCALL,
	BENCH_CPU_TRAP,
	BENCH_CPU_UPCALL,
	BENCH_CPU_TIMER,
	BENCH_CPU_TIMER_PERIODIC,
	/* The process rows (PV MMU, lmbench style; `--workloads proc`). */
	BENCH_CPU_SYSCALL,
	BENCH_CPU_FORK,
	BENCH_CPU_CTXSW,
	BENCH_CPU_PAGE_FAULT,
	BENCH_CPU_AS_SWITCH,
	BENCH_CPU_MMU_BATCH,
	BENCH_CPU_OP_COUNT
};
#define BENCH_CPU_FIRST_PROC BENCH_CPU_SYSCALL

struct bench_cpu_info {
	const char *name;      /* workload name and cpubench.elf's mode= */
	const char *guest_op;  /* what one operation is in the guest */
	const char *native_op; /* the host's closest operation */
	bool timer;	       /* the value is lateness, not the cost of a round trip */
	bool proc;	       /* a process row: needs the PV MMU */
	const char *lmbench;   /* process rows: the column of SOSP'03's Table 3 */
};

extern const struct bench_cpu_info bench_cpu_info[BENCH_CPU_OP_COUNT];
enum bench_cache {
	BENCH_CACHE_NONE,
	BENCH_CACHE_WRITEBACK,
	BENCH_CACHE_COUNT
};
enum bench_format {
	BENCH_FORMAT_TABLE,
	BENCH_FORMAT_JSON
};

#define BENCH_MAX_WORKLOADS 24u
#define BENCH_MAX_IODEPTHS 8u
#define BENCH_MAX_IODEPTH 256u
#define BENCH_MAX_REPEAT 25u
#define BENCH_MAX_COUNTERS 96u
#define BENCH_NAME_MAX 48u

struct bench_workload {
	char name[32]; /* "randread-4K": fio's rw name and the block size */
	char rw[16];   /* fio rw= value: read, write, randread, randwrite, randrw */
	enum bench_kind kind;
	bool random;
	bool writes;		  /* the workload writes (region checksums apply) */
	uint32_t read_percent;	  /* 100 read-only, 0 write-only */
	uint32_t block_bytes;	  /* console rows: bytes per line; net rows: bytes per frame */
	bool net_stream;	  /* net rows: frame-stream (else frame-rr) */
	enum bench_cpu_op cpu_op; /* CPU rows */
};

struct bench_options {
	char *disk_path;     /* NULL: a temporary image, deleted at the end */
	uint64_t size_bytes; /* region every workload works on */
	struct bench_workload workloads[BENCH_MAX_WORKLOADS];
	unsigned workload_count;
	uint64_t runtime_ns, warmup_ns;			  /* native and PV */
	uint64_t emulated_runtime_ns, emulated_warmup_ns; /* emulated path budget */
	uint64_t ops, warmup_ops;		/* > 0: fixed-size runs of this many operations */
	uint64_t cpu_runtime_ns, cpu_warmup_ns; /* CPU rows, both paths */
	uint64_t timer_delay_ns;		/* timer rows: one-shot delay and period */
	unsigned repeat;
	unsigned iodepths[BENCH_MAX_IODEPTHS];
	unsigned iodepth_count;
	bool cache[BENCH_CACHE_COUNT];
	bool paths[BENCH_PATH_COUNT];
	bool paths_given; /* --paths: else the QEMU paths follow QEMU's presence */
	char *qemu_path;  /* --qemu: the QEMU binary (default qemu-system-x86_64 on PATH) */
	enum bench_qemu_accel qemu_accel;
	enum bench_format format;
	char *output_dir;     /* results.json, results.txt, chart */
	char *console_output; /* console sink file for the console row */
	char *kapsel_path;    /* the kapsel binary for guest runs */
	char *guest_path;     /* blkbench.elf */
	char *cpu_guest_path; /* cpubench.elf */
	char *net_guest_path; /* netbench.elf (found next to kapsel) */
	bool quick;
	bool fio; /* cross-check native against fio if installed */
	bool chart;
	bool verbose;
	uint64_t seed;
	uint64_t pv_guest_poll_ns;   /* guest spins this long for a completion */
	uint64_t pv_backend_poll_ns; /* backend polls the ring this long (poll=) */
};

/* ---- Options (bench_options.c) ------------------------------------------- */

/* Defaults: every workload, iodepths 1,32, cache none, all paths, 3 runs. */
void bench_options_init(struct bench_options *options);

/* Free what the options own. */
void bench_options_free(struct bench_options *options);

/*
 * Parse argv (argv[0] is "bench") into options, which must come from
 * bench_options_init.  Returns 0, 1 when --help was given (usage printed
 * to out), or -EINVAL with a message naming the option and the fix in
 * error.
 */
int bench_options_parse(struct bench_options *options, int argc, char **argv, FILE *out,
			char *error, size_t error_len);

/* Usage text of `kapsel bench`. */
void bench_usage(FILE *out);

/*
 * Parse a size with an optional K/M/G suffix (powers of 1024) into bytes.
 * Returns 0 or -EINVAL (empty, trailing garbage, overflow).
 */
int bench_parse_size(const char *text, uint64_t *bytes);

/* Parse a duration: a number with s (default), ms or us.  Returns 0 or -EINVAL. */
int bench_parse_duration(const char *text, uint64_t *ns);

/* Look up a workload by name ("randread-4K", "read-1M", "console",
 * "null-hypercall", ...); returns 0 and fills workload, or -ENOENT. */
int bench_workload_lookup(const char *name, struct bench_workload *workload);

/* ---- Counters and statistics (bench_stats.c) ----------------------------- */

struct bench_counter {
	char name[BENCH_NAME_MAX];
	uint64_t value;
};

/* A small name -> value table (exit reasons, device counters). */
struct bench_counters {
	unsigned count;
	struct bench_counter items[BENCH_MAX_COUNTERS];
};

/* Add value to name (created at 0 if absent; silently dropped when full). */
void bench_counters_add(struct bench_counters *counters, const char *name, uint64_t value);

/* The value of name, 0 if absent. */
uint64_t bench_counters_get(const struct bench_counters *counters, const char *name);

/*
 * Parse the text of vm_print_stats ("vm NAME: ...", "  exits_io_hypercall:
 * 12", "device 2 blk-pv:", "  kicks_received: 5") into counters named
 * "exits_io_hypercall", "hypercall_block", "dev.blk-pv.kicks_received".
 * Lines whose value is not a plain number are skipped.
 */
void bench_counters_parse_stats(struct bench_counters *counters, const char *text);

/* Take count off name (down to 0; nothing if absent): exits the bench
 * itself caused in a measured window. */
void bench_counters_take_off(struct bench_counters *counters, const char *name, uint64_t count);

/* after - before for every counter of after (counters that went down are 0). */
void bench_counters_delta(struct bench_counters *delta, const struct bench_counters *before,
			  const struct bench_counters *after);

/* Summary of a set of values: median, min, max over n finite values. */
struct bench_stat {
	double median, min, max;
	unsigned n;
};

/* Summarize the finite values among values[0..count) (NaN = not measured). */
struct bench_stat bench_stat_of(const double *values, unsigned count);

/* Relative spread (max - min) / median, NaN when undefined. */
double bench_stat_spread(const struct bench_stat *stat);

/* CRC-32 (IEEE, as zlib's crc32) of data, continuing from crc (0 to start). */
uint32_t bench_crc32(uint32_t crc, const void *data, size_t length);

/* ---- Jobs and runs ------------------------------------------------------- */

/* Everything one run needs to know. */
struct bench_job {
	const struct bench_workload *workload;
	enum bench_path path;
	unsigned iodepth;
	enum bench_cache cache;
	const char *disk_path;
	uint64_t region_bytes;
	uint64_t runtime_ns, warmup_ns;
	uint64_t ops, warmup_ops;
	uint64_t seed;
	uint32_t generation;
	const char *work_dir;	  /* private scratch directory (stats files) */
	const char *console_sink; /* console rows */
	bool console_uart;	  /* console rows, emulated path */
	const struct bench_options *options;
	/* QEMU paths: the binary and accelerator, and where to keep the
	 * first run's command line (NULL: do not). */
	const struct bench_results *results;
	char *command_out;
	size_t command_out_len;
};

/* Metrics every run may have; NaN where a path does not have one. */
enum bench_metric {
	BENCH_M_MBPS,
	BENCH_M_IOPS,
	BENCH_M_LAT_P50_US,
	BENCH_M_LAT_P99_US,
	BENCH_M_LAT_P999_US,
	BENCH_M_LAT_MEAN_US,
	BENCH_M_EXITS_PER_OP,
	BENCH_M_NOTIFICATIONS_PER_OP,
	BENCH_M_KICKS_PER_OP,
	BENCH_M_KICKS_SUPPRESSED_PER_OP,
	BENCH_M_EVENTS_PER_OP,	    /* host -> guest event channel signals */
	BENCH_M_BLOCKS_PER_OP,	    /* guest sleeps in the hypervisor */
	BENCH_M_CPU_US_PER_OP,	    /* host CPU, all threads of the process */
	BENCH_M_VCPU_CPU_US_PER_OP, /* of which the vCPU thread */
	BENCH_M_SUBMIT_PICKUP_US,   /* PV: notification + queueing */
	BENCH_M_PICKUP_COMPLETE_US, /* PV: backend + device */
	BENCH_M_COMPLETE_REAP_US,   /* PV: completion -> reap */
	BENCH_M_LAT_MAX_US,	    /* CPU rows: the slowest operation */
	BENCH_M_US_PER_OP,	    /* CPU rows: measured window / operations */
	BENCH_M_DELIVER_P50_US,	    /* CPU rows: cause -> handler entered */
	BENCH_M_DELIVER_P99_US,
	BENCH_M_COUNT
};

struct bench_metric_info {
	const char *key;   /* JSON key */
	const char *label; /* table header */
	const char *unit;
};

extern const struct bench_metric_info bench_metric_info[BENCH_M_COUNT];

/* One measured run of one path. */
struct bench_run {
	bool ok;
	char error[256];
	uint64_t ops, reads, writes, bytes, errors;
	uint64_t elapsed_ns;	      /* measured window, as the runner timed it */
	uint64_t host_window_ns;      /* guest paths: wall time between the marks */
	uint64_t cpu_ns, vcpu_cpu_ns; /* host CPU time in the window */
	uint64_t verify_sectors, verify_errors;
	uint64_t timed_ops; /* PV: completions carrying all timestamps */
	unsigned queue_depth_used;
	double metrics[BENCH_M_COUNT];
	struct bench_counters exits;	/* window: exits by reason */
	struct bench_counters counters; /* window: hypercalls and device counters */
};

/* Set every metric to NaN and clear the rest. */
void bench_run_clear(struct bench_run *run);

/*
 * Run one job on the host (native path): io_uring on the image at the
 * job's queue depth, or write(2) of console lines to the sink.  Fills run
 * (run->ok false and run->error set on failure).  Returns 0 or -errno.
 */
int bench_native_run(const struct bench_job *job, struct bench_run *run);

/*
 * Run one CPU row's job on the host (bench_cpu_native.c): getppid(2), a
 * SIGILL handler round trip, a signal to itself, timerfd.  Fills run.
 * Returns 0 or -errno.
 */
int bench_cpu_native_run(const struct bench_job *job, struct bench_run *run);

/*
 * Run one net row's job on the host (bench_net_native.c): bench_net.h's
 * client and server on two threads, Unix datagram sockets in
 * job->work_dir.  Fills run.  Returns 0 or -errno.
 */
int bench_net_native_run(const struct bench_job *job, struct bench_run *run);

/* What a CPU row's run measured, in the units the guest reports (ns). */
struct bench_cpu_sample {
	uint64_t ops, elapsed_ns;
	uint64_t p50_ns, p99_ns, p999_ns, max_ns, mean_ns; /* per-operation values */
	uint64_t deliver_ops, deliver_p50_ns, deliver_p99_ns;
};

/* Set a CPU run's time metrics from sample (us, 1/s); metrics it does not
 * have stay as they are (NaN after bench_run_clear).  Needs sample->ops > 0. */
void bench_cpu_metrics(const struct bench_cpu_sample *sample, double metrics[BENCH_M_COUNT]);

/*
 * Run one job in a guest: spawns `kapsel run` with blkbench.elf and the
 * image on bus=pv (PV path) or bus=ata (emulated path), reads counters at
 * the guest's marks.  Returns 0, -ENODEV when the path is unavailable
 * (run->error says why), or another -errno on failure.
 */
int bench_guest_run(const struct bench_job *job, struct bench_run *run);

/* ---- QEMU paths (bench_qemu.c) ------------------------------------------- */

struct bench_results;

/*
 * Find QEMU (--qemu, else qemu-system-x86_64 on PATH), read its version
 * and pick the accelerator (--qemu-accel; auto: kvm when /dev/kvm opens).
 * Fills results->qemu_*.  Returns 0, or -errno with a message naming the
 * fix in error.
 */
int bench_qemu_probe(struct bench_options *options, struct bench_results *results, char *error,
		     size_t error_len);

/* Strings a QEMU command line points into (one per run). */
struct bench_qemu_strings {
	char accel[8];
	char drive[1200];
};

/* Build QEMU's argv for job (a QEMU path) booting guest with cmdline;
 * returns argc (argv NULL-terminated, at most max_args entries). */
unsigned bench_qemu_argv(const struct bench_job *job, const struct bench_results *results,
			 const char *guest, const char *cmdline, const char *memory,
			 struct bench_qemu_strings *strings, char **argv, unsigned max_args);

/* The guest's exit code from QEMU's wait status (isa-debug-exit: status
 * (code << 1) | 1), or -1 when QEMU itself failed or was killed. */
int bench_qemu_guest_code(int wait_status);

/* KVM's exit count for the VM of QEMU process pid (debugfs, root only),
 * or -1 when it cannot be read. */
int64_t bench_qemu_kvm_exits(pid_t pid);

/* ---- fio cross-check (bench_fio.c) -------------------------------------- */

struct bench_fio_result {
	bool ran;
	bool ok;
	char error[160];
	double mb_per_s, iops, lat_p50_us, lat_p99_us;
};

/* True if fio is on PATH. */
bool bench_fio_available(void);

/*
 * Run fio with the job's parameters (ioengine=io_uring, same file, bs,
 * iodepth, rw, direct, runtime) and parse its JSON.  Returns 0 or -errno
 * (result->error says why).
 */
int bench_fio_run(const struct bench_job *job, struct bench_fio_result *result);

/*
 * Walk a JSON text and call fn for every number with its path, members
 * joined by '.', array elements by index ("jobs.0.read.iops").  Returns 0
 * or -EINVAL for malformed JSON.  Exposed for tests.
 */
int bench_json_walk(const char *text, void (*fn)(const char *path, double value, void *opaque),
		    void *opaque);

/* ---- Results (bench.c) and reports (bench_report.c) ---------------------- */

enum bench_status {
	BENCH_STATUS_SKIPPED,
	BENCH_STATUS_OK,
	BENCH_STATUS_UNAVAILABLE,
	BENCH_STATUS_FAILED
};

struct bench_path_result {
	enum bench_status status;
	char message[256];	/* why not ok, or a note when ok */
	struct bench_run *runs; /* options->repeat entries, or NULL */
	unsigned run_count, ok_count;
	struct bench_stat stats[BENCH_M_COUNT];
	struct bench_counters exit_reasons; /* summed over ok runs */
	uint64_t ops_total;		    /* summed over ok runs */
	uint64_t runtime_ns;		    /* the budget the path was given */
	unsigned queue_depth_used;
	uint64_t verify_sectors, verify_errors;
	bool checksum_valid;
	uint32_t checksum;	      /* region CRC-32 after this path ran */
	unsigned copied_from_iodepth; /* > 0: runs copied from that depth's row */
};

struct bench_row {
	const struct bench_workload *workload;
	unsigned iodepth;
	enum bench_cache cache;
	struct bench_path_result paths[BENCH_PATH_COUNT];
	bool checksum_reset_valid;
	uint32_t checksum_reset; /* region CRC-32 before each path (fixed-size runs) */
	struct bench_fio_result fio;
	double ratio_pv_native, ratio_pv_emulated; /* throughput ratios, NaN if n/a */
	double ratio_pv_qemu_virtio, ratio_emulated_qemu_ide;
	double cost_ratio_pv_native; /* CPU rows: pv / native bench_cpu_value */
};

/* The boot row (bench_boot.c). */
enum bench_boot_setup_id {
	BENCH_BOOT_KAPSEL,
	BENCH_BOOT_QEMU_MICROVM,
	BENCH_BOOT_QEMU_PC,
	BENCH_BOOT_SETUPS
};
#define BENCH_BOOT_MAX_RUNS 16u

struct bench_boot_setup {
	bool ok;
	unsigned run_count;
	uint64_t run_ns[BENCH_BOOT_MAX_RUNS];
	double median_ms, min_ms, max_ms;
	char command[1024];
	char error[256];
};

struct bench_boot {
	bool ran;
	char guest[512];
	struct bench_boot_setup setups[BENCH_BOOT_SETUPS];
	double ratio_kapsel_microvm; /* median / median, NaN if n/a */
};

struct bench_results {
	struct bench_row *rows;
	unsigned row_count;
	char disk_path[512];
	bool disk_temporary;
	uint64_t size_bytes;
	double total_seconds;
	char host[256];		     /* machine description */
	bool nested;		     /* the host is itself a VM: KVM here is nested */
	double load_start, load_end; /* 1-minute load average before and after */
	bool fio_available;
	/* The QEMU paths: what ran them (bench_qemu_probe). */
	char qemu_binary[512];
	char qemu_version[128];
	const char *qemu_accel;	    /* "kvm" or "tcg" */
	char qemu_command[2][1536]; /* the first run's command line per path */
	struct bench_boot boot;
	char chart_path[512];
	char chart_note[160];
};

/* file in the directory of near (blkbench.elf's: the same build or
 * install), malloc'd, or NULL when near is NULL or file cannot be read. */
char *bench_sibling_file(const char *near, const char *file);

/* argv (NULL-terminated) as one line, words separated by spaces,
 * truncated to fit out. */
void bench_join_argv(char *out, size_t len, char *const argv[]);

/* With --verbose: print "    $ ARGV...SUFFIX" to stderr (a command the
 * bench runs, to repeat by hand). */
void bench_echo_argv(const struct bench_options *options, char *const argv[], const char *suffix);

/* Start argv[0] with argv, standard input /dev/null, standard output (and
 * with_stderr, standard error) into out_path, created or truncated.
 * Returns the child's pid or -errno. */
pid_t bench_spawn_to_file(char *const argv[], const char *out_path, bool with_stderr);

/* Name of a boot setup: "kapsel", "qemu-microvm", "qemu-pc". */
const char *bench_boot_setup_name(unsigned setup);

/* Time hello.elf from process start to exit on each setup (Kapsel when
 * the pv path is asked for, QEMU when bench_qemu_probe found it) into
 * results->boot. */
void bench_boot_run(const struct bench_options *options, struct bench_results *results,
		    const char *work_dir);

/* True when a boot setup that should have run failed. */
bool bench_boot_failed(const struct bench_results *results);

/*
 * A CPU row's value on a path: the median over runs of the per-operation
 * p50 in microseconds (for timer rows, of the lateness); NaN when the path
 * has none.
 */
double bench_cpu_value(const struct bench_row *row, enum bench_path path);

/*
 * The cost of one exit to the VMM as measured in this run: the
 * null-hypercall row's pv value (bench_cpu_value) over its exits per
 * operation.  NaN without that row.
 */
double bench_cpu_exit_cost_us(const struct bench_results *results);

/* Run the whole benchmark.  Returns the exit status for `kapsel bench`. */
int bench_main(struct bench_options *options);

/* True once SIGINT or SIGTERM asked the bench to stop (children get them too). */
bool bench_interrupted(void);

/* The human-readable report. */
void bench_report_table(FILE *out, const struct bench_options *options,
			const struct bench_results *results);

/* The machine-readable report (one JSON document). */
void bench_report_json(FILE *out, const struct bench_options *options,
		       const struct bench_results *results);

/*
 * Write bench-data.dat and bench.gp to dir and run gnuplot to draw
 * bench.svg (throughput and exits per operation per path).  Returns 0 or
 * -errno; note says what happened (e.g. gnuplot missing).
 */
int bench_report_chart(const char *dir, const struct bench_results *results, char *chart_path,
		       size_t chart_path_len, char *note, size_t note_len);

/* Name of a path / cache mode as printed and in JSON. */
const char *bench_path_name(enum bench_path path);
const char *bench_cache_name(enum bench_cache cache);

/* ---- bench_mq.c ---- */
/* Run and print the multi-queue comparison on disk_path; false if either
 * setup could not be measured (the run then exits 1). */
bool bench_mq_report(const struct bench_options *options, const char *disk_path,
		     const char *work_dir, FILE *out);

#endif /* KAPSEL_BENCH_H */
