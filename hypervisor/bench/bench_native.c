/* `kapsel bench` native path: the host does the row's I/O itself with io_uring (or console writes with write(2)). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

struct native_slot {
	uint8_t *buffer;
	uint64_t submit_ns;
	uint64_t sector;
	int is_write;
	int clobbered; /* a read overwrote the pattern filler */
};

struct native_phase {
	uint64_t ops, reads, writes, bytes, errors;
	int first_error;
	uint64_t elapsed_ns;
	uint64_t latency_sum_ns;
	uint64_t verify_sectors, verify_errors;
	uint64_t hist_total;
};

struct native {
	const struct bench_job *job;
	struct io_uring ring;
	int fd;
	struct native_slot *slots;
	unsigned depth;
	struct bench_stream stream;
	uint32_t histogram[BENCH_HIST_BUCKETS];
};

static uint64_t clock_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void prepare(struct native *native, unsigned index)
{
	struct native_slot *slot = &native->slots[index];
	const struct bench_job *job = native->job;
	uint32_t bs = job->workload->block_bytes;
	int is_write = 0;
	uint64_t block = bench_stream_next(&native->stream, &is_write);

	slot->sector = block * (bs / BENCH_SECTOR_BYTES);
	slot->is_write = is_write;
	if (is_write) {
		if (slot->clobbered)
			bench_pattern_fill(slot->buffer, bs, slot->sector, job->generation);
		else
			bench_pattern_stamp(slot->buffer, bs, slot->sector, job->generation);
		slot->clobbered = 0;
	} else {
		slot->clobbered = 1;
	}
	struct io_uring_sqe *sqe = io_uring_get_sqe(&native->ring);
	/* The ring has at least depth entries and at most depth are queued. */
	if (is_write)
		io_uring_prep_write(sqe, native->fd, slot->buffer, bs,
				    slot->sector * BENCH_SECTOR_BYTES);
	else
		io_uring_prep_read(sqe, native->fd, slot->buffer, bs,
				   slot->sector * BENCH_SECTOR_BYTES);
	io_uring_sqe_set_data64(sqe, index);
	slot->submit_ns = clock_ns(CLOCK_MONOTONIC);
}

static void account(struct native *native, struct native_phase *phase, unsigned index, int result,
		    uint64_t reap_ns, bool measure)
{
	struct native_slot *slot = &native->slots[index];
	uint32_t bs = native->job->workload->block_bytes;

	phase->ops++;
	if (result != (int)bs) {
		if (!phase->errors)
			phase->first_error = result < 0 ? result : -EIO;
		phase->errors++;
		return;
	}
	if (slot->is_write)
		phase->writes++;
	else
		phase->reads++;
	phase->bytes += bs;
	if (!slot->is_write) {
		phase->verify_sectors += bs / BENCH_SECTOR_BYTES;
		phase->verify_errors += bench_pattern_check(slot->buffer, bs, slot->sector);
	}
	if (!measure)
		return;
	uint64_t latency = reap_ns > slot->submit_ns ? reap_ns - slot->submit_ns : 0;
	phase->latency_sum_ns += latency;
	native->histogram[bench_hist_index(latency)]++;
	phase->hist_total++;
}

/*
 * The ring as fio's io_uring engine sets it up, so the two agree: task work
 * runs when we reap (no interrupting IPI per completion) and only this
 * thread submits.  Older kernels refuse the newer flags; drop them.
 */
static int ring_init(struct native *native)
{
	static const unsigned flag_sets[] = {
		IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int err = -EINVAL;
	for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		struct io_uring_params params = { .flags = flag_sets[i] };
		err = io_uring_queue_init_params(native->depth, &native->ring, &params);
		if (err != -EINVAL)
			return err;
	}
	return err;
}

/* Keep depth requests in flight until the budget is spent, then drain. */
static int run_phase(struct native *native, struct native_phase *phase, uint64_t duration_ns,
		     uint64_t max_ops, bool measure)
{
	memset(phase, 0, sizeof(*phase));
	uint64_t start = clock_ns(CLOCK_MONOTONIC);
	uint64_t deadline = max_ops ? UINT64_MAX : start + duration_ns;
	uint64_t issued = 0;
	unsigned in_flight = 0;
	bool stop = !max_ops && duration_ns == 0;

	for (unsigned i = 0; i < native->depth && !stop; i++) {
		if (max_ops && issued >= max_ops)
			break;
		prepare(native, i);
		issued++;
		in_flight++;
	}
	int err = 0;
	while (in_flight) {
		/* One system call submits what was queued and waits for one. */
		struct io_uring_cqe *cqe;
		err = io_uring_submit_and_wait(&native->ring, 1);
		if (err == -EINTR)
			continue;
		if (err < 0)
			return err;
		err = io_uring_peek_cqe(&native->ring, &cqe);
		if (err == -EAGAIN)
			continue;
		if (err < 0)
			return err;
		uint64_t reap_ns = clock_ns(CLOCK_MONOTONIC);
		if (!stop && (reap_ns >= deadline || (max_ops && issued >= max_ops)))
			stop = true;
		while (cqe) {
			unsigned index = (unsigned)io_uring_cqe_get_data64(cqe);
			int result = cqe->res;
			io_uring_cqe_seen(&native->ring, cqe);
			in_flight--;
			if (index < native->depth)
				account(native, phase, index, result, reap_ns, measure);
			if (!stop && !(max_ops && issued >= max_ops) && index < native->depth) {
				prepare(native, index);
				issued++;
				in_flight++;
			}
			if (io_uring_peek_cqe(&native->ring, &cqe) != 0)
				cqe = NULL;
		}
	}
	phase->elapsed_ns = clock_ns(CLOCK_MONOTONIC) - start;
	return 0;
}

static void fill_run(struct bench_run *run, const struct native_phase *phase,
		     const uint32_t *histogram, uint64_t cpu_ns, uint64_t verify_sectors,
		     uint64_t verify_errors)
{
	run->ops = phase->ops;
	run->reads = phase->reads;
	run->writes = phase->writes;
	run->bytes = phase->bytes;
	run->errors = phase->errors;
	run->elapsed_ns = phase->elapsed_ns;
	run->cpu_ns = cpu_ns;
	run->verify_sectors = verify_sectors;
	run->verify_errors = verify_errors;
	double seconds = phase->elapsed_ns / 1e9;
	uint64_t ok = phase->ops - phase->errors;
	if (seconds > 0) {
		run->metrics[BENCH_M_MBPS] = phase->bytes / seconds / 1e6;
		run->metrics[BENCH_M_IOPS] = ok / seconds;
	}
	if (histogram && phase->hist_total) {
		run->metrics[BENCH_M_LAT_P50_US] =
			bench_hist_percentile(histogram, phase->hist_total, 5000) / 1e3;
		run->metrics[BENCH_M_LAT_P99_US] =
			bench_hist_percentile(histogram, phase->hist_total, 9900) / 1e3;
		run->metrics[BENCH_M_LAT_P999_US] =
			bench_hist_percentile(histogram, phase->hist_total, 9990) / 1e3;
	}
	if (ok)
		run->metrics[BENCH_M_LAT_MEAN_US] = phase->latency_sum_ns / 1e3 / ok;
	if (phase->ops) {
		run->metrics[BENCH_M_CPU_US_PER_OP] = cpu_ns / 1e3 / phase->ops;
		/* Not a VM: no exits and no notifications. */
		run->metrics[BENCH_M_EXITS_PER_OP] = 0;
		run->metrics[BENCH_M_NOTIFICATIONS_PER_OP] = 0;
	}
}

static int native_block(const struct bench_job *job, struct bench_run *run)
{
	struct native *native = calloc(1, sizeof(*native));
	int err = 0;
	if (!native)
		return -ENOMEM;
	native->job = job;
	native->fd = -1;
	native->depth = job->iodepth;
	uint32_t bs = job->workload->block_bytes;

	int flags = O_RDWR | O_CLOEXEC | (job->cache == BENCH_CACHE_NONE ? O_DIRECT : 0);
	native->fd = open(job->disk_path, flags);
	if (native->fd < 0) {
		err = -errno;
		snprintf(run->error, sizeof(run->error), "cannot open '%s'%s: %s", job->disk_path,
			 job->cache == BENCH_CACHE_NONE ? " with O_DIRECT" : "", strerror(errno));
		goto out;
	}
	native->slots = calloc(native->depth, sizeof(*native->slots));
	if (!native->slots) {
		err = -ENOMEM;
		goto out;
	}
	for (unsigned i = 0; i < native->depth; i++) {
		if (posix_memalign((void **)&native->slots[i].buffer, 4096, bs)) {
			err = -ENOMEM;
			snprintf(run->error, sizeof(run->error),
				 "out of memory for %u buffers of %u bytes", native->depth, bs);
			goto out;
		}
		bench_pattern_fill(native->slots[i].buffer, bs, 0, job->generation);
	}
	err = ring_init(native);
	if (err < 0) {
		snprintf(run->error, sizeof(run->error),
			 "io_uring_queue_init(%u) failed: %s; io_uring may be disabled (sysctl kernel.io_uring_disabled)",
			 native->depth, strerror(-err));
		goto out;
	}
	bench_stream_init(&native->stream, job->region_bytes / bs, job->workload->random,
			  job->workload->read_percent, job->seed);

	struct native_phase warmup, measured;
	err = run_phase(native, &warmup, job->warmup_ns, job->ops ? job->warmup_ops : 0, false);
	if (!err) {
		uint64_t cpu_start = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
		err = run_phase(native, &measured, job->runtime_ns, job->ops, true);
		uint64_t cpu_ns = clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu_start;
		if (!err) {
			fill_run(run, &measured, native->histogram, cpu_ns,
				 warmup.verify_sectors + measured.verify_sectors,
				 warmup.verify_errors + measured.verify_errors);
			run->queue_depth_used = native->depth;
			run->ok = measured.errors == 0 && warmup.errors == 0;
			if (!run->ok)
				snprintf(run->error, sizeof(run->error),
					 "%llu I/O errors, first: %s",
					 (unsigned long long)(measured.errors + warmup.errors),
					 strerror(-(measured.errors ? measured.first_error
								    : warmup.first_error)));
		}
	}
	if (err < 0 && !run->error[0])
		snprintf(run->error, sizeof(run->error), "io_uring failed: %s", strerror(-err));
	io_uring_queue_exit(&native->ring);
out:
	if (native->slots)
		for (unsigned i = 0; i < native->depth; i++)
			free(native->slots[i].buffer);
	free(native->slots);
	if (native->fd >= 0)
		close(native->fd);
	free(native);
	return err;
}

/* The same line blkbench.elf writes (sequence number, letters, newline). */
static void console_line(char *line, uint32_t line_bytes, uint64_t sequence)
{
	int n = snprintf(line, line_bytes, "KCON %08llu ", (unsigned long long)sequence);
	for (uint64_t i = (uint64_t)n; i + 1 < line_bytes; i++)
		line[i] = (char)('a' + (sequence + i) % 26);
	line[line_bytes - 1] = '\n';
}

static int console_phase(int fd, uint32_t line_bytes, uint64_t *sequence, uint64_t duration_ns,
			 uint64_t max_lines, struct native_phase *phase, uint32_t *histogram)
{
	char line[4096];
	memset(phase, 0, sizeof(*phase));
	uint64_t start = clock_ns(CLOCK_MONOTONIC);
	for (;;) {
		uint64_t now = clock_ns(CLOCK_MONOTONIC);
		if (max_lines ? phase->ops >= max_lines : now - start >= duration_ns)
			break;
		console_line(line, line_bytes, (*sequence)++);
		ssize_t n = write(fd, line, line_bytes);
		if (n != (ssize_t)line_bytes)
			return n < 0 ? -errno : -EIO;
		uint64_t done = clock_ns(CLOCK_MONOTONIC);
		phase->ops++;
		phase->writes++;
		phase->bytes += line_bytes;
		phase->latency_sum_ns += done - now;
		if (histogram) {
			histogram[bench_hist_index(done - now)]++;
			phase->hist_total++;
		}
	}
	phase->elapsed_ns = clock_ns(CLOCK_MONOTONIC) - start;
	return 0;
}

static int native_console(const struct bench_job *job, struct bench_run *run)
{
	int fd = open(job->console_sink, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0) {
		int err = -errno;
		snprintf(run->error, sizeof(run->error), "cannot open console sink '%s': %s",
			 job->console_sink, strerror(errno));
		return err;
	}
	uint32_t *histogram = calloc(BENCH_HIST_BUCKETS, sizeof(*histogram));
	if (!histogram) {
		close(fd);
		return -ENOMEM;
	}
	uint64_t sequence = 0;
	struct native_phase warmup, measured;
	uint32_t line_bytes = job->workload->block_bytes;
	int err = console_phase(fd, line_bytes, &sequence, job->warmup_ns,
				job->ops ? job->warmup_ops : 0, &warmup, NULL);
	if (!err) {
		uint64_t cpu_start = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
		err = console_phase(fd, line_bytes, &sequence, job->runtime_ns, job->ops, &measured,
				    histogram);
		uint64_t cpu_ns = clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu_start;
		if (!err) {
			fill_run(run, &measured, histogram, cpu_ns, 0, 0);
			run->ok = true;
		}
	}
	if (err)
		snprintf(run->error, sizeof(run->error), "writing console sink '%s' failed: %s",
			 job->console_sink, strerror(-err));
	free(histogram);
	close(fd);
	return err;
}

int bench_native_run(const struct bench_job *job, struct bench_run *run)
{
	bench_run_clear(run);
	if (job->workload->kind == BENCH_KIND_CONSOLE)
		return native_console(job, run);
	return native_block(job, run);
}
