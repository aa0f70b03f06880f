/* `kapsel bench` driver: prepares the image, runs every row on every path, cross-checks with fio and writes the reports. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "bench.h"

#define FILL_CHUNK_BYTES (1u << 20)
#define MAX_GENERATION 0xfff0u
#define MIN_OPS_TO_REPEAT 3u

static volatile sig_atomic_t interrupted;

static void on_interrupt(int signo)
{
	(void)signo;
	interrupted = 1;
}

bool bench_interrupted(void)
{
	return interrupted != 0;
}

const char *bench_path_name(enum bench_path path)
{
	static const char *const names[BENCH_PATH_COUNT] = { "native", "pv", "emulated",
							     "qemu-virtio", "qemu-ide" };
	return path < BENCH_PATH_COUNT ? names[path] : "?";
}

const char *bench_cache_name(enum bench_cache cache)
{
	return cache == BENCH_CACHE_NONE ? "none" : "writeback";
}

/* ---- Finding the programs ------------------------------------------------ */

static char *self_path(void)
{
	char path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
	if (n <= 0)
		return NULL;
	path[n] = '\0';
	return strdup(path);
}

/* A bench guest (blkbench.elf, cpubench.elf) next to this build of kapsel
 * (build tree or install), or where the environment variable env says. */
static char *find_guest(const char *kapsel_path, const char *file, const char *env_name)
{
	const char *env = getenv(env_name);
	if (env && access(env, R_OK) == 0)
		return strdup(env);
	if (!kapsel_path)
		return NULL;
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", kapsel_path);
	char *slash = strrchr(dir, '/');
	if (!slash)
		return NULL;
	*slash = '\0';
	static const char *const candidates[] = {
		"../guest-pv/examples/",
		"",
		"../share/kapsel/guests/",
		"../lib/kapsel/",
	};
	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
		char path[PATH_MAX];
		if (snprintf(path, sizeof(path), "%s/%s%s", dir, candidates[i], file) >=
		    (int)sizeof(path))
			continue;
		char resolved[PATH_MAX];
		if (access(path, R_OK) == 0 && realpath(path, resolved))
			return strdup(resolved);
	}
	return NULL;
}

char *bench_sibling_file(const char *near, const char *file)
{
	if (!near)
		return NULL;
	char *path = malloc(PATH_MAX);
	if (!path)
		return NULL;
	const char *slash = strrchr(near, '/');
	int dir_len = slash ? (int)(slash + 1 - near) : 0;
	if (snprintf(path, PATH_MAX, "%.*s%s", dir_len, near, file) >= PATH_MAX ||
	    access(path, R_OK) != 0) {
		free(path);
		return NULL;
	}
	return path;
}

void bench_join_argv(char *out, size_t len, char *const argv[])
{
	size_t used = 0;
	out[0] = '\0';
	for (unsigned i = 0; argv[i] && used < len; i++) {
		int n = snprintf(out + used, len - used, "%s%s", i ? " " : "", argv[i]);
		if (n < 0)
			break;
		used += (size_t)n;
	}
}

void bench_echo_argv(const struct bench_options *options, char *const argv[], const char *suffix)
{
	if (!options->verbose)
		return;
	fprintf(stderr, "    $");
	for (unsigned i = 0; argv[i]; i++)
		fprintf(stderr, " %s", argv[i]);
	fprintf(stderr, "%s\n", suffix);
}

pid_t bench_spawn_to_file(char *const argv[], const char *out_path, bool with_stderr)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid < 0 ? -errno : pid;
	int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd < 0 || null < 0 || dup2(null, 0) < 0 || dup2(fd, 1) < 0 ||
	    dup2(with_stderr ? fd : null, 2) < 0)
		_exit(127);
	signal(SIGPIPE, SIG_DFL);
	execv(argv[0], argv);
	dprintf(with_stderr ? 2 : 1, "kapsel bench: cannot run '%s': %s\n", argv[0],
		strerror(errno));
	_exit(127);
}

/* ---- The image ----------------------------------------------------------- */

/* Write the generation-0 pattern over [0, size). */
static int fill_region(int fd, uint64_t size_bytes)
{
	uint8_t *buffer;
	if (posix_memalign((void **)&buffer, 4096, FILL_CHUNK_BYTES))
		return -ENOMEM;
	bench_pattern_fill(buffer, FILL_CHUNK_BYTES, 0, 0);
	int err = 0;
	for (uint64_t off = 0; off < size_bytes && !err; off += FILL_CHUNK_BYTES) {
		uint32_t len = size_bytes - off < FILL_CHUNK_BYTES ? (uint32_t)(size_bytes - off)
								   : FILL_CHUNK_BYTES;
		bench_pattern_stamp(buffer, len, off / BENCH_SECTOR_BYTES, 0);
		for (uint32_t done = 0; done < len;) {
			ssize_t n = pwrite(fd, buffer + done, len - done, (off_t)(off + done));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				err = n < 0 ? -errno : -EIO;
				break;
			}
			done += (uint32_t)n;
		}
	}
	free(buffer);
	if (!err && fdatasync(fd) < 0)
		err = -errno;
	/* Leave no page cache behind: with cache=none, an O_DIRECT write to a
	 * cached page cannot be issued without blocking, so io_uring hands it
	 * to a worker thread (writes to one file there go one at a time) and
	 * whichever path ran first after a fill paid for it. */
	if (!err)
		posix_fadvise(fd, 0, (off_t)size_bytes, POSIX_FADV_DONTNEED);
	return err;
}

static int checksum_region(const char *path, uint64_t size_bytes, uint32_t *crc)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	uint8_t *buffer = malloc(FILL_CHUNK_BYTES);
	int err = buffer ? 0 : -ENOMEM;
	uint32_t c = 0;
	for (uint64_t off = 0; off < size_bytes && !err;) {
		size_t want = size_bytes - off < FILL_CHUNK_BYTES ? (size_t)(size_bytes - off)
								  : FILL_CHUNK_BYTES;
		ssize_t n = pread(fd, buffer, want, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? -errno : -EIO;
			break;
		}
		c = bench_crc32(c, buffer, (size_t)n);
		off += (uint64_t)n;
	}
	free(buffer);
	close(fd);
	*crc = c;
	return err;
}

static int reset_region(const char *path, uint64_t size_bytes)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int err = fill_region(fd, size_bytes);
	close(fd);
	return err;
}

/* Create or check the image and fill its region with the pattern. */
static int prepare_image(struct bench_options *options, struct bench_results *results, char *error,
			 size_t error_len)
{
	int fd;
	if (options->disk_path) {
		snprintf(results->disk_path, sizeof(results->disk_path), "%s", options->disk_path);
		struct stat st;
		if (stat(options->disk_path, &st) == 0) {
			if (!S_ISREG(st.st_mode)) {
				snprintf(error, error_len,
					 "--disk '%s' is not a regular file; the bench needs an image file it may overwrite",
					 options->disk_path);
				return -EINVAL;
			}
			if ((uint64_t)st.st_size < options->size_bytes) {
				snprintf(error, error_len,
					 "--disk '%s' is %llu MiB, smaller than --size %llu MiB; give a smaller --size or a larger file",
					 options->disk_path, (unsigned long long)(st.st_size >> 20),
					 (unsigned long long)(options->size_bytes >> 20));
				return -EINVAL;
			}
			fd = open(options->disk_path, O_RDWR | O_CLOEXEC);
		} else {
			fd = open(options->disk_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
			if (fd >= 0 && ftruncate(fd, (off_t)options->size_bytes) < 0) {
				int err = -errno;
				close(fd);
				snprintf(error, error_len, "cannot size --disk '%s': %s",
					 options->disk_path, strerror(-err));
				return err;
			}
		}
		if (fd < 0) {
			int err = -errno;
			snprintf(error, error_len, "cannot open --disk '%s' for writing: %s",
				 options->disk_path, strerror(errno));
			return err;
		}
	} else {
		const char *tmp = getenv("TMPDIR");
		/* /var/tmp is disk-backed where /tmp may be tmpfs (no O_DIRECT). */
		snprintf(results->disk_path, sizeof(results->disk_path),
			 "%s/kapsel-bench-XXXXXX.img", tmp && *tmp ? tmp : "/var/tmp");
		fd = mkostemps(results->disk_path, 4, O_CLOEXEC);
		if (fd < 0) {
			int err = -errno;
			snprintf(error, error_len,
				 "cannot create a temporary image in %s: %s; set TMPDIR or give --disk FILE",
				 tmp && *tmp ? tmp : "/var/tmp", strerror(errno));
			return err;
		}
		results->disk_temporary = true;
		if (ftruncate(fd, (off_t)options->size_bytes) < 0) {
			int err = -errno;
			close(fd);
			snprintf(error, error_len, "cannot make the temporary image %llu MiB: %s",
				 (unsigned long long)(options->size_bytes >> 20), strerror(-err));
			return err;
		}
	}
	int err = fill_region(fd, options->size_bytes);
	close(fd);
	if (err) {
		snprintf(error, error_len, "cannot write the test pattern to '%s': %s%s",
			 results->disk_path, strerror(-err),
			 err == -ENOSPC ? "; free some space or give a smaller --size" : "");
		return err;
	}
	if (options->cache[BENCH_CACHE_NONE]) {
		fd = open(results->disk_path, O_RDWR | O_DIRECT | O_CLOEXEC);
		if (fd < 0) {
			err = -errno;
			snprintf(error, error_len,
				 "cannot open '%s' with O_DIRECT (%s): its filesystem does not support cache=none (tmpfs?); "
				 "give --disk on a disk-backed filesystem or use --cache writeback",
				 results->disk_path, strerror(errno));
			return err;
		}
		close(fd);
	}
	results->size_bytes = options->size_bytes;
	return 0;
}

/* ---- Running the matrix -------------------------------------------------- */

static void describe_machine(struct bench_results *results)
{
	struct utsname u;
	char model[128] = "unknown CPU";
	bool nested = false;
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (f) {
		char line[1024];
		while (fgets(line, sizeof(line), f)) {
			if (strncmp(line, "model name", 10) == 0 && strchr(line, ':') &&
			    strcmp(model, "unknown CPU") == 0) {
				snprintf(model, sizeof(model), "%s", strchr(line, ':') + 2);
				model[strcspn(model, "\n")] = '\0';
			}
			if (strncmp(line, "flags", 5) == 0 && strstr(line, " hypervisor"))
				nested = true;
		}
		fclose(f);
	}
	uname(&u);
	results->nested = nested;
	snprintf(results->host, sizeof(results->host), "%ld CPUs (%s), Linux %s%s",
		 sysconf(_SC_NPROCESSORS_ONLN), model, u.release,
		 nested ? ", itself a VM (KVM here is nested)" : "");
}

static double load_average(void)
{
	double load[1];
	return getloadavg(load, 1) == 1 ? load[0] : NAN;
}

static void summarize(struct bench_path_result *result)
{
	double values[BENCH_MAX_REPEAT];
	for (unsigned m = 0; m < BENCH_M_COUNT; m++) {
		unsigned n = 0;
		for (unsigned r = 0; r < result->run_count; r++)
			if (result->runs[r].ok)
				values[n++] = result->runs[r].metrics[m];
		result->stats[m] = bench_stat_of(values, n);
	}
	memset(&result->exit_reasons, 0, sizeof(result->exit_reasons));
	result->ops_total = 0;
	for (unsigned r = 0; r < result->run_count; r++) {
		const struct bench_run *run = &result->runs[r];
		result->verify_sectors += run->verify_sectors;
		result->verify_errors += run->verify_errors;
		if (!run->ok)
			continue;
		result->ops_total += run->ops;
		if (run->queue_depth_used)
			result->queue_depth_used = run->queue_depth_used;
		for (unsigned i = 0; i < run->exits.count; i++)
			bench_counters_add(&result->exit_reasons, run->exits.items[i].name,
					   run->exits.items[i].value);
	}
}

#define BENCH_KIND_COUNT 6u

struct path_availability {
	bool unavailable[BENCH_PATH_COUNT][BENCH_KIND_COUNT]; /* [path][kind] */
	char message[BENCH_PATH_COUNT][BENCH_KIND_COUNT][256];
};

static void run_path(struct bench_options *options, struct bench_results *results,
		     struct bench_row *row, enum bench_path path, const char *work_dir,
		     const char *console_sink, uint32_t generation, struct path_availability *avail)
{
	struct bench_path_result *result = &row->paths[path];
	const struct bench_workload *w = row->workload;
	unsigned kind = (unsigned)w->kind;
	bool cpu = w->kind == BENCH_KIND_CPU;

	if (cpu && path == BENCH_PATH_EMULATED) {
		snprintf(result->message, sizeof(result->message),
			 "CPU rows have no emulated path (pv and native only)");
		return;
	}
	if (bench_path_is_qemu(path) && w->kind != BENCH_KIND_BLOCK) {
		snprintf(result->message, sizeof(result->message),
			 "the QEMU paths run the block rows only");
		return;
	}
	if (avail->unavailable[path][kind]) {
		result->status = BENCH_STATUS_UNAVAILABLE;
		snprintf(result->message, sizeof(result->message), "%s",
			 avail->message[path][kind]);
		return;
	}
	bool emulated = bench_path_is_emulated(path);
	struct bench_job job = {
		.workload = w,
		.path = path,
		.iodepth = row->iodepth,
		.cache = row->cache,
		.disk_path = results->disk_path,
		.region_bytes = options->size_bytes,
		.runtime_ns = cpu	 ? options->cpu_runtime_ns
			      : emulated ? options->emulated_runtime_ns
					 : options->runtime_ns,
		.warmup_ns = cpu	? options->cpu_warmup_ns
			     : emulated ? options->emulated_warmup_ns
					: options->warmup_ns,
		.ops = options->ops,
		.warmup_ops = options->warmup_ops,
		.seed = options->seed,
		.generation = generation,
		.work_dir = work_dir,
		.console_sink = console_sink,
		.console_uart = path == BENCH_PATH_EMULATED,
		.options = options,
		.results = results,
		.command_out = bench_path_is_qemu(path)
				       ? results->qemu_command[path - BENCH_PATH_QEMU_VIRTIO]
				       : NULL,
		.command_out_len = sizeof(results->qemu_command[0]),
	};
	result->runtime_ns = job.runtime_ns;
	bool reset = options->ops && w->kind == BENCH_KIND_BLOCK && w->writes;
	if (reset) {
		int err = reset_region(results->disk_path, options->size_bytes);
		if (err) {
			result->status = BENCH_STATUS_FAILED;
			snprintf(result->message, sizeof(result->message),
				 "cannot reset the region before the run: %s", strerror(-err));
			return;
		}
	}
	result->runs = calloc(options->repeat, sizeof(*result->runs));
	if (!result->runs) {
		result->status = BENCH_STATUS_FAILED;
		snprintf(result->message, sizeof(result->message), "out of memory");
		return;
	}
	result->status = BENCH_STATUS_OK;
	for (unsigned r = 0; r < options->repeat && !interrupted; r++) {
		struct bench_run *run = &result->runs[result->run_count];
		if (w->kind == BENCH_KIND_CONSOLE) {
			/* The sink holds one run's output at a time. */
			int fd = open(console_sink, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
			if (fd >= 0)
				close(fd);
		}
		int err = path != BENCH_PATH_NATIVE   ? bench_guest_run(&job, run)
			  : cpu			      ? bench_cpu_native_run(&job, run)
			  : w->kind == BENCH_KIND_NET ? bench_net_native_run(&job, run)
						      : bench_native_run(&job, run);
		if (err == -ENODEV) {
			result->status = BENCH_STATUS_UNAVAILABLE;
			snprintf(result->message, sizeof(result->message), "%s", run->error);
			avail->unavailable[path][kind] = true;
			snprintf(avail->message[path][kind], sizeof(avail->message[path][kind]),
				 "%s", run->error);
			return;
		}
		result->run_count++;
		if (options->verbose && cpu)
			fprintf(stderr, "    %s run %u: %s %.3f us/op p50 %.3f us%s%s\n",
				bench_path_name(path), r + 1, run->ok ? "ok" : "FAILED",
				run->metrics[BENCH_M_US_PER_OP], run->metrics[BENCH_M_LAT_P50_US],
				run->error[0] ? " - " : "", run->error);
		else if (options->verbose)
			fprintf(stderr, "    %s run %u: %s %.1f MB/s %.0f IOPS%s%s\n",
				bench_path_name(path), r + 1, run->ok ? "ok" : "FAILED",
				run->metrics[BENCH_M_MBPS], run->metrics[BENCH_M_IOPS],
				run->error[0] ? " - " : "", run->error);
		if (!run->ok) {
			result->status = BENCH_STATUS_FAILED;
			snprintf(result->message, sizeof(result->message), "%s", run->error);
			break; /* a broken path does not get better by repeating */
		}
		result->ok_count++;
		/* The emulated disk can take seconds per large operation: when a
		 * run fits fewer than MIN_OPS_TO_REPEAT of them, one run is all
		 * the budget allows (fixed-size runs always repeat). */
		if (emulated && !options->ops && run->ops < MIN_OPS_TO_REPEAT &&
		    r + 1 < options->repeat) {
			snprintf(result->message, sizeof(result->message),
				 "1 run only: %llu operation(s) took %.1f s (the emulated %s exits per word)",
				 (unsigned long long)run->ops, run->elapsed_ns / 1e9,
				 w->kind == BENCH_KIND_NET     ? "NIC"
				 : path == BENCH_PATH_QEMU_IDE ? "IDE disk"
							       : "disk");
			break;
		}
	}
	if (reset && result->status == BENCH_STATUS_OK) {
		int err =
			checksum_region(results->disk_path, options->size_bytes, &result->checksum);
		result->checksum_valid = err == 0;
	}
	summarize(result);
}

/*
 * Cross-check the native path with fio right after it ran, under the same
 * conditions.  fio writes its own data, so a writing row puts the pattern
 * back afterwards for the reads that follow.
 */
static void run_fio(struct bench_options *options, struct bench_results *results,
		    struct bench_row *row)
{
	struct bench_job job = {
		.workload = row->workload,
		.path = BENCH_PATH_NATIVE,
		.iodepth = row->iodepth,
		.cache = row->cache,
		.disk_path = results->disk_path,
		.region_bytes = options->size_bytes,
		.runtime_ns = options->runtime_ns,
		.warmup_ns = options->warmup_ns,
		.ops = options->ops,
		.seed = options->seed,
		.options = options,
	};
	bench_fio_run(&job, &row->fio);
	if (options->verbose)
		fprintf(stderr, "    fio: %s %.1f MB/s %.0f IOPS\n",
			row->fio.ok ? "ok" : row->fio.error, row->fio.mb_per_s, row->fio.iops);
	if (row->workload->writes) {
		int err = reset_region(results->disk_path, options->size_bytes);
		if (err)
			fprintf(stderr, "kapsel bench: cannot restore the pattern after fio: %s\n",
				strerror(-err));
	}
}

/*
 * The emulated ATA disk has no queue: at any depth it runs one request at
 * a time, so a time-based row at another depth measures exactly what an
 * earlier row of the same workload and cache mode did.  Copy that result
 * (and say so) instead of spending seconds per large write again.
 */
static bool reuse_emulated(const struct bench_options *options, struct bench_results *results,
			   unsigned index, enum bench_path path)
{
	struct bench_row *row = &results->rows[index];
	if (options->ops || row->workload->kind != BENCH_KIND_BLOCK)
		return false;
	for (unsigned i = 0; i < index; i++) {
		const struct bench_row *twin = &results->rows[i];
		const struct bench_path_result *r = &twin->paths[path];
		if (twin->workload != row->workload || twin->cache != row->cache ||
		    r->status != BENCH_STATUS_OK || r->queue_depth_used != 1 || !r->runs)
			continue;
		struct bench_path_result *copy = &row->paths[path];
		*copy = *r;
		copy->runs = calloc(options->repeat, sizeof(*copy->runs));
		if (!copy->runs) {
			memset(copy, 0, sizeof(*copy));
			return false;
		}
		memcpy(copy->runs, r->runs, r->run_count * sizeof(*r->runs));
		copy->copied_from_iodepth = twin->iodepth;
		snprintf(copy->message, sizeof(copy->message),
			 "the runs of qd=%u: the ATA disk has no queue (depth 1 at any qd)",
			 twin->iodepth);
		return true;
	}
	return false;
}

static double ratio(const struct bench_row *row, enum bench_path a, enum bench_path b)
{
	const struct bench_path_result *x = &row->paths[a], *y = &row->paths[b];
	if (x->status != BENCH_STATUS_OK || y->status != BENCH_STATUS_OK)
		return NAN;
	/* CPU rows: operations per second, none for timers (paced by the delay). */
	enum bench_metric metric =
		row->workload->kind == BENCH_KIND_CPU ? BENCH_M_IOPS : BENCH_M_MBPS;
	if (row->workload->kind == BENCH_KIND_CPU && bench_cpu_info[row->workload->cpu_op].timer)
		return NAN;
	double vx = x->stats[metric].median, vy = y->stats[metric].median;
	if (!isfinite(vx) || !isfinite(vy) || vy <= 0)
		return NAN;
	return vx / vy;
}

static void progress_row(const struct bench_options *options, unsigned index, unsigned count,
			 const struct bench_row *row)
{
	if (row->workload->kind == BENCH_KIND_CPU) {
		bool timer = bench_cpu_info[row->workload->cpu_op].timer;
		fprintf(stderr, "[%2u/%u] %-29s", index + 1, count, row->workload->name);
		for (unsigned p = 0; p < BENCH_PATH_COUNT; p++) {
			const struct bench_path_result *r = &row->paths[p];
			if (!options->paths[p] || p == BENCH_PATH_EMULATED || bench_path_is_qemu(p))
				continue;
			if (r->status == BENCH_STATUS_OK)
				fprintf(stderr, "  %s %.3f us%s",
					bench_path_name((enum bench_path)p),
					bench_cpu_value(row, (enum bench_path)p),
					timer ? " late (p50)" : " (p50)");
			else
				fprintf(stderr, "  %s %s", bench_path_name((enum bench_path)p),
					r->status == BENCH_STATUS_UNAVAILABLE ? "unavailable"
									      : "FAILED");
		}
		fputc('\n', stderr);
		return;
	}
	fprintf(stderr, "[%2u/%u] %-13s qd=%-3u cache=%-9s", index + 1, count, row->workload->name,
		row->iodepth,
		row->workload->kind != BENCH_KIND_BLOCK ? "-" : bench_cache_name(row->cache));
	for (unsigned p = 0; p < BENCH_PATH_COUNT; p++) {
		if (!options->paths[p])
			continue;
		const struct bench_path_result *r = &row->paths[p];
		if (r->status == BENCH_STATUS_SKIPPED)
			continue;
		if (r->status == BENCH_STATUS_OK && row->workload->kind == BENCH_KIND_NET)
			fprintf(stderr, "  %s %.0f %s/s", bench_path_name((enum bench_path)p),
				r->stats[BENCH_M_IOPS].median,
				row->workload->net_stream ? "frames" : "round trips");
		else if (r->status == BENCH_STATUS_OK)
			fprintf(stderr, "  %s %.1f MB/s", bench_path_name((enum bench_path)p),
				r->stats[BENCH_M_MBPS].median);
		else
			fprintf(stderr, "  %s %s", bench_path_name((enum bench_path)p),
				r->status == BENCH_STATUS_UNAVAILABLE ? "unavailable" : "FAILED");
	}
	fputc('\n', stderr);
}

/* mkdir -p: the default output folder is a few levels under ~/.cache. */
static int make_dir(const char *path, char *error, size_t error_len)
{
	char parent[PATH_MAX];
	snprintf(parent, sizeof(parent), "%s", path);
	for (char *slash = strchr(parent + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		if (mkdir(parent, 0755) < 0 && errno != EEXIST)
			break; /* the last mkdir below says why */
		*slash = '/';
	}
	errno = 0;
	if (mkdir(path, 0755) == 0 || errno == EEXIST) {
		struct stat st;
		if (stat(path, &st) == 0 && S_ISDIR(st.st_mode) && access(path, W_OK) == 0)
			return 0;
	}
	snprintf(error, error_len,
		 "--output-dir '%s' cannot be created or written (%s); give a writable directory",
		 path, strerror(errno ? errno : ENOTDIR));
	return -EINVAL;
}

static void remove_work_dir(const char *work_dir)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/console-sink.txt", work_dir) < (int)sizeof(path))
		unlink(path);
	rmdir(work_dir);
}

static int write_reports(const struct bench_options *options, struct bench_results *results)
{
	char path[PATH_MAX];
	int status = 0;
	if (options->chart) {
		int err = bench_report_chart(options->output_dir, results, results->chart_path,
					     sizeof(results->chart_path), results->chart_note,
					     sizeof(results->chart_note));
		if (err)
			results->chart_path[0] = '\0';
	} else {
		snprintf(results->chart_note, sizeof(results->chart_note),
			 "chart not drawn (--no-chart)");
	}
	snprintf(path, sizeof(path), "%s/results.json", options->output_dir);
	FILE *f = fopen(path, "w");
	if (f) {
		bench_report_json(f, options, results);
		if (fclose(f) != 0)
			status = -EIO;
	} else {
		status = -errno;
	}
	snprintf(path, sizeof(path), "%s/results.txt", options->output_dir);
	f = fopen(path, "w");
	if (f) {
		bench_report_table(f, options, results);
		if (fclose(f) != 0)
			status = -EIO;
	} else {
		status = -errno;
	}
	if (status)
		fprintf(stderr, "kapsel bench: cannot write the reports to '%s': %s\n",
			options->output_dir, strerror(-status));
	return status;
}

int bench_main(struct bench_options *options)
{
	struct bench_results results;
	char error[768];
	char work_dir[PATH_MAX];
	int status = 0;
	uint64_t started = monotonic_ns();

	memset(&results, 0, sizeof(results));
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = { .sa_handler = on_interrupt };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	if (make_dir(options->output_dir, error, sizeof(error)) < 0) {
		fprintf(stderr, "kapsel bench: %s\n", error);
		return 2;
	}
	bool block_rows = false, boot_rows = false;
	for (unsigned w = 0; w < options->workload_count; w++) {
		block_rows |= options->workloads[w].kind == BENCH_KIND_BLOCK;
		boot_rows |= options->workloads[w].kind == BENCH_KIND_BOOT;
	}
	/* The QEMU paths: asked for with --paths, or by default when the block
	 * rows run and QEMU is installed (bench_qemu_probe, below). */
	bool want_qemu = options->paths_given ? options->paths[BENCH_PATH_QEMU_VIRTIO] ||
							options->paths[BENCH_PATH_QEMU_IDE]
					      : block_rows || boot_rows;
	bool guests =
		options->paths[BENCH_PATH_PV] || options->paths[BENCH_PATH_EMULATED] || want_qemu;
	if (!options->kapsel_path)
		options->kapsel_path = self_path();
	if (guests && (!options->kapsel_path || access(options->kapsel_path, X_OK) != 0)) {
		fprintf(stderr,
			"kapsel bench: cannot find the kapsel binary%s%s; give --kapsel FILE\n",
			options->kapsel_path ? " at " : "",
			options->kapsel_path ? options->kapsel_path : "");
		return 2;
	}
	if (options->guest_path && access(options->guest_path, R_OK) != 0) {
		fprintf(stderr, "kapsel bench: --guest '%s' cannot be read: %s\n",
			options->guest_path, strerror(errno));
		return 2;
	}
	if (options->cpu_guest_path && access(options->cpu_guest_path, R_OK) != 0) {
		fprintf(stderr, "kapsel bench: --cpu-guest '%s' cannot be read: %s\n",
			options->cpu_guest_path, strerror(errno));
		return 2;
	}
	/* io_rows: rows with blkbench.elf and the image; net rows need only
	 * netbench.elf. */
	bool io_rows = false, cpu_rows = false, net_rows = false;
	for (unsigned w = 0; w < options->workload_count; w++) {
		enum bench_kind kind = options->workloads[w].kind;
		cpu_rows |= kind == BENCH_KIND_CPU;
		net_rows |= kind == BENCH_KIND_NET;
		io_rows |=
			kind != BENCH_KIND_CPU && kind != BENCH_KIND_NET && kind != BENCH_KIND_BOOT;
	}
	if (guests) {
		/* Next to the kapsel that runs the guests, else next to us. */
		char *self = self_path();
		if ((io_rows || boot_rows) && !options->guest_path) {
			options->guest_path = find_guest(options->kapsel_path, "blkbench.elf",
							 "KAPSEL_BENCH_GUEST");
			if (!options->guest_path && self)
				options->guest_path =
					find_guest(self, "blkbench.elf", "KAPSEL_BENCH_GUEST");
		}
		if (cpu_rows && !options->cpu_guest_path) {
			options->cpu_guest_path = find_guest(options->kapsel_path, "cpubench.elf",
							     "KAPSEL_BENCH_CPU_GUEST");
			if (!options->cpu_guest_path && self)
				options->cpu_guest_path =
					find_guest(self, "cpubench.elf", "KAPSEL_BENCH_CPU_GUEST");
		}
		if (net_rows && !options->net_guest_path) {
			options->net_guest_path = find_guest(options->kapsel_path, "netbench.elf",
							     "KAPSEL_BENCH_NET_GUEST");
			if (!options->net_guest_path && self)
				options->net_guest_path =
					find_guest(self, "netbench.elf", "KAPSEL_BENCH_NET_GUEST");
		}
		free(self);
	}

	const char *tmp = getenv("TMPDIR");
	snprintf(work_dir, sizeof(work_dir), "%s/kapsel-bench-work.XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(work_dir)) {
		fprintf(stderr,
			"kapsel bench: cannot create a scratch directory in %s: %s; set TMPDIR\n",
			tmp && *tmp ? tmp : "/tmp", strerror(errno));
		return 1;
	}
	char console_sink[PATH_MAX];
	if (options->console_output)
		snprintf(console_sink, sizeof(console_sink), "%s", options->console_output);
	else if (snprintf(console_sink, sizeof(console_sink), "%s/console-sink.txt", work_dir) >=
		 (int)sizeof(console_sink))
		console_sink[0] = '\0'; /* cannot happen: mkdtemp's name is short */

	describe_machine(&results);
	results.load_start = load_average();
	/* CPU rows touch no disk: with only those there is no image. */
	if (io_rows && prepare_image(options, &results, error, sizeof(error)) < 0) {
		fprintf(stderr, "kapsel bench: %s\n", error);
		if (results.disk_temporary)
			unlink(results.disk_path);
		remove_work_dir(work_dir);
		return 2;
	}
	results.fio_available = options->fio && bench_fio_available();
	if (want_qemu) {
		int err = bench_qemu_probe(options, &results, error, sizeof(error));
		if (err && options->paths_given) {
			fprintf(stderr, "kapsel bench: --paths asks for QEMU: %s\n", error);
			status = 2;
			goto out;
		}
		if (err)
			fprintf(stderr, "kapsel bench: no QEMU paths: %s\n", error);
		if (!err && !options->paths_given)
			options->paths[BENCH_PATH_QEMU_VIRTIO] =
				options->paths[BENCH_PATH_QEMU_IDE] = true;
		if (!err && strcmp(results.qemu_accel, "tcg") == 0)
			fprintf(stderr,
				"kapsel bench: QEMU runs under TCG here (no usable /dev/kvm): its figures are emulation, not comparable with KVM\n");
	}

	/* Rows: block workloads x cache modes x depths; the console once. */
	unsigned cache_modes =
		options->cache[BENCH_CACHE_NONE] + options->cache[BENCH_CACHE_WRITEBACK];
	unsigned max_rows = 0;
	for (unsigned w = 0; w < options->workload_count; w++)
		max_rows += options->workloads[w].kind != BENCH_KIND_BLOCK
				    ? 1
				    : cache_modes * options->iodepth_count;
	results.rows = calloc(max_rows ? max_rows : 1, sizeof(*results.rows));
	if (!results.rows) {
		fprintf(stderr, "kapsel bench: out of memory\n");
		status = 1;
		goto out;
	}
	bool mq_report = false, boot_report = false;
	for (unsigned w = 0; w < options->workload_count; w++) {
		const struct bench_workload *workload = &options->workloads[w];
		if (workload->kind == BENCH_KIND_MQ) {
			mq_report = true; /* after the table: bench_mq.c */
			continue;
		}
		if (workload->kind == BENCH_KIND_BOOT) {
			boot_report = true; /* after the rows: bench_boot.c */
			continue;
		}
		if (workload->kind != BENCH_KIND_BLOCK) {
			results.rows[results.row_count++] = (struct bench_row){
				.workload = workload, .iodepth = 1, .cache = BENCH_CACHE_NONE
			};
			continue;
		}
		for (unsigned c = 0; c < BENCH_CACHE_COUNT; c++)
			for (unsigned d = 0; options->cache[c] && d < options->iodepth_count; d++)
				results.rows[results.row_count++] =
					(struct bench_row){ .workload = workload,
							    .iodepth = options->iodepths[d],
							    .cache = (enum bench_cache)c };
	}

	unsigned enabled = 0;
	for (unsigned p = 0; p < BENCH_PATH_COUNT; p++)
		enabled += options->paths[p];
	double per_row = 0;
	if (options->ops) {
		per_row = 0.2 * enabled * options->repeat;
	} else {
		if (options->paths[BENCH_PATH_NATIVE])
			per_row +=
				(options->runtime_ns + options->warmup_ns) / 1e9 * options->repeat;
		if (options->paths[BENCH_PATH_PV])
			per_row +=
				(options->runtime_ns + options->warmup_ns) / 1e9 * options->repeat +
				0.05;
		if (options->paths[BENCH_PATH_EMULATED])
			per_row += (options->emulated_runtime_ns + options->emulated_warmup_ns) /
					   1e9 * options->repeat +
				   0.1;
		if (options->paths[BENCH_PATH_QEMU_VIRTIO])
			per_row +=
				(options->runtime_ns + options->warmup_ns) / 1e9 * options->repeat +
				0.3;
		if (options->paths[BENCH_PATH_QEMU_IDE])
			per_row += (options->emulated_runtime_ns + options->emulated_warmup_ns) /
					   1e9 * options->repeat +
				   0.3;
		if (results.fio_available && options->paths[BENCH_PATH_NATIVE])
			per_row += (options->runtime_ns + options->warmup_ns) / 1e9 + 0.3;
	}
	/* A CPU row: native and pv, each a short window plus a guest boot. */
	double per_cpu_row =
		options->ops ? 0.1 * options->repeat
			     : ((options->cpu_runtime_ns + options->cpu_warmup_ns) / 1e9 * 2 +
				0.05) * options->repeat;
	unsigned cpu_row_count = 0;
	for (unsigned i = 0; i < results.row_count; i++)
		cpu_row_count += results.rows[i].workload->kind == BENCH_KIND_CPU;
	double estimate =
		per_row * (results.row_count - cpu_row_count) + per_cpu_row * cpu_row_count + 1;
	if (io_rows)
		fprintf(stderr,
			"kapsel bench: %u rows x %u paths x %u runs on %s (%llu MiB%s); about %.0f s\n",
			results.row_count, enabled, options->repeat, results.disk_path,
			(unsigned long long)(options->size_bytes >> 20),
			results.disk_temporary ? ", temporary" : "", estimate);
	else
		fprintf(stderr, "kapsel bench: %u %s rows x %u runs; about %.0f s\n",
			results.row_count, net_rows ? "CPU and network" : "CPU", options->repeat,
			estimate);
	if (io_rows && options->paths[BENCH_PATH_EMULATED] && !options->ops &&
	    options->emulated_runtime_ns != options->runtime_ns)
		fprintf(stderr,
			"kapsel bench: the emulated path gets %.0f ms per run (warm-up %.0f ms) instead of %.0f ms: it costs about one exit per sector\n",
			options->emulated_runtime_ns / 1e6, options->emulated_warmup_ns / 1e6,
			options->runtime_ns / 1e6);

	struct path_availability avail;
	memset(&avail, 0, sizeof(avail));
	for (unsigned i = 0; i < results.row_count && !interrupted; i++) {
		struct bench_row *row = &results.rows[i];
		uint32_t generation = 1 + i % MAX_GENERATION;
		if (options->ops && row->workload->kind == BENCH_KIND_BLOCK &&
		    row->workload->writes) {
			/* The region every path starts from (the pattern, generation 0). */
			if (reset_region(results.disk_path, options->size_bytes) == 0 &&
			    checksum_region(results.disk_path, options->size_bytes,
					    &row->checksum_reset) == 0)
				row->checksum_reset_valid = true;
		}
		for (unsigned p = 0; p < BENCH_PATH_COUNT && !interrupted; p++) {
			if (!options->paths[p])
				continue;
			if (bench_path_is_emulated(p) &&
			    reuse_emulated(options, &results, i, (enum bench_path)p))
				continue;
			run_path(options, &results, row, (enum bench_path)p, work_dir, console_sink,
				 generation, &avail);
			if (p == BENCH_PATH_NATIVE && results.fio_available &&
			    row->workload->kind == BENCH_KIND_BLOCK && !interrupted)
				run_fio(options, &results, row);
		}
		row->ratio_pv_native = ratio(row, BENCH_PATH_PV, BENCH_PATH_NATIVE);
		row->ratio_pv_emulated = ratio(row, BENCH_PATH_PV, BENCH_PATH_EMULATED);
		row->ratio_pv_qemu_virtio = ratio(row, BENCH_PATH_PV, BENCH_PATH_QEMU_VIRTIO);
		row->ratio_emulated_qemu_ide = ratio(row, BENCH_PATH_EMULATED, BENCH_PATH_QEMU_IDE);
		double pv = bench_cpu_value(row, BENCH_PATH_PV);
		double native = bench_cpu_value(row, BENCH_PATH_NATIVE);
		row->cost_ratio_pv_native = native > 0 ? pv / native : NAN;
		progress_row(options, i, results.row_count, row);
	}

	if (boot_report && !interrupted)
		bench_boot_run(options, &results, work_dir);

	results.total_seconds = (monotonic_ns() - started) / 1e9;
	results.load_end = load_average();

	if (interrupted)
		fprintf(stderr, "kapsel bench: interrupted; reporting what was measured\n");
	if (write_reports(options, &results) < 0)
		status = 1;
	if (options->format == BENCH_FORMAT_JSON)
		bench_report_json(stdout, options, &results);
	else if (results.row_count || !mq_report)
		bench_report_table(stdout, options, &results);
	bool mq_failed = false;
	if (mq_report && !interrupted && options->paths[BENCH_PATH_PV])
		mq_failed =
			!bench_mq_report(options, results.disk_path, work_dir,
					 options->format == BENCH_FORMAT_JSON ? stderr : stdout);
	fflush(stdout);
	/* A path that was asked for and could not be measured (failed, or
	 * unavailable: no /dev/kvm, no such device) fails the run, so that a
	 * script never takes a table of native rows for a comparison. */
	unsigned unmeasured = 0;
	for (unsigned i = 0; i < results.row_count; i++)
		for (unsigned p = 0; p < BENCH_PATH_COUNT; p++)
			if (results.rows[i].paths[p].status == BENCH_STATUS_FAILED ||
			    results.rows[i].paths[p].status == BENCH_STATUS_UNAVAILABLE)
				unmeasured++;
	if (bench_boot_failed(&results)) {
		fprintf(stderr,
			"kapsel bench: the boot row could not be measured on every setup (see above); exit status 1\n");
		status = 1;
	}
	if (mq_failed) {
		fprintf(stderr,
			"kapsel bench: the multi-queue rows could not be measured (see above); exit status 1\n");
		status = 1;
	}
	if (unmeasured) {
		fprintf(stderr,
			"kapsel bench: %u row paths asked for could not be measured (unavailable or failed; see above); exit status 1\n",
			unmeasured);
		status = 1;
	}
	if (interrupted)
		status = 130;
out:
	if (results.disk_temporary)
		unlink(results.disk_path);
	remove_work_dir(work_dir);
	for (unsigned i = 0; results.rows && i < results.row_count; i++)
		for (unsigned p = 0; p < BENCH_PATH_COUNT; p++)
			free(results.rows[i].paths[p].runs);
	free(results.rows);
	return status;
}
