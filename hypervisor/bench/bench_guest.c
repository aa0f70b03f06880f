/* `kapsel bench` guest paths: runs blkbench.elf under `kapsel run` (disk on bus=pv or bus=ata) or under QEMU (virtio-blk, IDE), and reads its counters at the guest's marks. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "bench.h"

/*
 * Protocol with the guest (guest-pv/examples/blkbench.c, sync=1):
 *   guest: warm-up, then prints "BENCH mark=start" and spins
 *   host:  asks `kapsel run` for its counters (SIGUSR1 to the vCPU thread,
 *          which writes --stats-file at once), reads the VMM's CPU clock,
 *          then writes a line to the guest's console input
 *   guest: sees the PV console's event bit, runs the measured phase, prints
 *          "BENCH mark=end" and spins; the host reads the clocks and the
 *          counters again and answers; the guest prints its results.
 * The window's counters are the differences.  The handshake itself costs
 * a known few exits, which are taken off (HANDSHAKE_*).
 */

#define STATS_WAIT_NS 5000000000ull
#define RUN_SLACK_NS 30000000000ull
#define OPS_MODE_TIMEOUT_NS 600000000000ull
#define OUTPUT_KEEP_BYTES 2048u
#define GUEST_MEMORY_BASE_BYTES (64ull << 20)
#define KV_MAX 64u
/* `kapsel run`'s status when it could not start or run the VM (vm.h). */
#define KAPSEL_EXIT_VMM_ERROR_CODE 125

struct kv {
	unsigned count;
	struct {
		char key[40];
		char value[64];
	} items[KV_MAX];
};

static void kv_set(struct kv *kv, const char *key, size_t key_len, const char *value,
		   size_t value_len)
{
	char name[40];
	snprintf(name, sizeof(name), "%.*s", (int)key_len, key);
	unsigned i;
	for (i = 0; i < kv->count; i++)
		if (strcmp(kv->items[i].key, name) == 0)
			break;
	if (i == kv->count) {
		if (kv->count == KV_MAX)
			return;
		kv->count++;
	}
	snprintf(kv->items[i].key, sizeof(kv->items[i].key), "%s", name);
	snprintf(kv->items[i].value, sizeof(kv->items[i].value), "%.*s", (int)value_len, value);
}

static const char *kv_get(const struct kv *kv, const char *key)
{
	for (unsigned i = 0; i < kv->count; i++)
		if (strcmp(kv->items[i].key, key) == 0)
			return kv->items[i].value;
	return NULL;
}

static uint64_t kv_u64(const struct kv *kv, const char *key)
{
	const char *v = kv_get(kv, key);
	return v ? strtoull(v, NULL, 0) : 0;
}

static bool kv_has(const struct kv *kv, const char *key)
{
	return kv_get(kv, key) != NULL;
}

struct child {
	pid_t pid;
	int stdin_fd, stdout_fd, stderr_fd;
	int sink_fd; /* console rows: the sink file, read as it grows */
	clockid_t cpu_clock;
	bool cpu_clock_ok;
	char line[4096]; /* partial console line */
	size_t line_len;
	char err_tail[OUTPUT_KEEP_BYTES]; /* last bytes of stderr */
	size_t err_len;
	char out_tail[OUTPUT_KEEP_BYTES]; /* last non-BENCH console lines */
	size_t out_len;
	struct kv kv;
	bool exited;
	int status;
};

struct window {
	bool started, ended;
	uint64_t spawn_ns;	    /* when `kapsel run` was started */
	uint64_t measure_budget_ns; /* the measured phase's budget */
	uint64_t deadline_ns;	    /* kill the guest after this */
	uint64_t wall_start, wall_end;
	uint64_t cpu_start, cpu_end;
	uint64_t vcpu_start, vcpu_end;
	struct bench_counters before, after;
	bool counters_ok;
	char problem[160];
	/* Net rows: the server VM at the other end of the link, whose CPU
	 * and exits belong to the same frames. */
	pid_t peer_pid;
	const char *peer_stats_path;
	clockid_t peer_cpu_clock;
	bool peer_cpu_clock_ok, peer_counters_ok;
	uint64_t peer_cpu_start, peer_cpu_end;
	struct bench_counters peer_before, peer_after;
	/* QEMU paths: no counters and no answer to the marks (the guest does
	 * not wait off Kapsel); KVM's exit count where debugfs shows it. */
	bool qemu;
	int64_t kvm_exits_start, kvm_exits_end;
};

static void keep_tail(char *tail, size_t *len, const char *data, size_t n)
{
	if (n >= OUTPUT_KEEP_BYTES - 1) {
		data += n - (OUTPUT_KEEP_BYTES - 1);
		n = OUTPUT_KEEP_BYTES - 1;
	}
	if (*len + n >= OUTPUT_KEEP_BYTES) {
		size_t drop = *len + n - (OUTPUT_KEEP_BYTES - 1);
		memmove(tail, tail + drop, *len - drop);
		*len -= drop;
	}
	memcpy(tail + *len, data, n);
	*len += n;
	tail[*len] = '\0';
}

static uint64_t cpu_clock_ns(bool ok, clockid_t clock)
{
	struct timespec ts;
	if (!ok || clock_gettime(clock, &ts) != 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t child_cpu_ns(struct child *child)
{
	return cpu_clock_ns(child->cpu_clock_ok, child->cpu_clock);
}

/* CPU time of the child's main thread (the vCPU thread of `kapsel run`). */
static uint64_t child_vcpu_ns(struct child *child)
{
	char path[64], text[128];
	snprintf(path, sizeof(path), "/proc/%d/task/%d/schedstat", (int)child->pid,
		 (int)child->pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	return strtoull(text, NULL, 10);
}

static int read_file(const char *path, char **text)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t cap = 8192, len = 0;
	char *buffer = malloc(cap);
	for (;;) {
		if (!buffer) {
			close(fd);
			return -ENOMEM;
		}
		ssize_t n = read(fd, buffer + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len + 1 == cap) {
			cap *= 2;
			char *bigger = realloc(buffer, cap);
			if (!bigger)
				free(buffer);
			buffer = bigger;
		}
	}
	close(fd);
	buffer[len] = '\0';
	*text = buffer;
	return 0;
}

/* Ask the vCPU thread (the main thread) of `kapsel run` pid for its
 * counters and read them. */
static int snapshot_counters(pid_t pid, const char *stats_path, struct bench_counters *counters)
{
	unlink(stats_path);
	if (syscall(SYS_tgkill, pid, pid, SIGUSR1) != 0)
		return -errno;
	uint64_t deadline = monotonic_ns() + STATS_WAIT_NS;
	struct timespec pause = { 0, 100000 };
	while (access(stats_path, R_OK) != 0) {
		if (monotonic_ns() > deadline)
			return -ETIMEDOUT;
		nanosleep(&pause, NULL);
	}
	char *text = NULL;
	int err = read_file(stats_path, &text);
	if (err)
		return err;
	memset(counters, 0, sizeof(*counters));
	bench_counters_parse_stats(counters, text);
	free(text);
	return 0;
}

static void answer(struct child *child)
{
	static const char go[] = "go\n";
	ssize_t n = write(child->stdin_fd, go, sizeof(go) - 1);
	(void)n; /* a dead child is noticed by the loop */
}

static void on_mark(struct child *child, struct window *window, const char *mark,
		    const char *stats_path)
{
	if (window->qemu) {
		bool start = strcmp(mark, "start") == 0;
		if (!start && strcmp(mark, "end") != 0)
			return;
		uint64_t now = monotonic_ns(), cpu = child_cpu_ns(child);
		int64_t exits = bench_qemu_kvm_exits(child->pid);
		if (start) {
			window->wall_start = now;
			window->cpu_start = cpu;
			window->kvm_exits_start = exits;
			window->started = true;
			uint64_t deadline = now + window->measure_budget_ns +
					    2 * (now - window->spawn_ns) + RUN_SLACK_NS;
			if (deadline > window->deadline_ns)
				window->deadline_ns = deadline;
		} else {
			window->wall_end = now;
			window->cpu_end = cpu;
			window->kvm_exits_end = exits;
			window->ended = true;
		}
		return;
	}
	if (strcmp(mark, "start") == 0) {
		if (window->peer_pid > 0) {
			window->peer_counters_ok =
				snapshot_counters(window->peer_pid, window->peer_stats_path,
						  &window->peer_before) == 0;
			window->peer_cpu_start =
				cpu_clock_ns(window->peer_cpu_clock_ok, window->peer_cpu_clock);
		}
		int err = snapshot_counters(child->pid, stats_path, &window->before);
		if (err)
			snprintf(window->problem, sizeof(window->problem),
				 "could not read the VMM's counters at the start mark: %s",
				 strerror(-err));
		window->counters_ok = err == 0;
		window->cpu_start = child_cpu_ns(child);
		window->vcpu_start = child_vcpu_ns(child);
		window->wall_start = monotonic_ns();
		window->started = true;
		/* Now that the warm-up showed how long an operation can take
		 * (the emulated disk: seconds for 1 MiB), allow the measured
		 * phase its budget plus twice the time boot and warm-up took. */
		uint64_t warmup_ns = window->wall_start - window->spawn_ns;
		uint64_t deadline = window->wall_start + window->measure_budget_ns + 2 * warmup_ns +
				    RUN_SLACK_NS;
		if (deadline > window->deadline_ns)
			window->deadline_ns = deadline;
	} else if (strcmp(mark, "end") == 0) {
		window->wall_end = monotonic_ns();
		window->cpu_end = child_cpu_ns(child);
		window->vcpu_end = child_vcpu_ns(child);
		if (window->peer_pid > 0) {
			window->peer_cpu_end =
				cpu_clock_ns(window->peer_cpu_clock_ok, window->peer_cpu_clock);
			if (window->peer_counters_ok)
				window->peer_counters_ok =
					snapshot_counters(window->peer_pid, window->peer_stats_path,
							  &window->peer_after) == 0;
		}
		int err = snapshot_counters(child->pid, stats_path, &window->after);
		if (err) {
			snprintf(window->problem, sizeof(window->problem),
				 "could not read the VMM's counters at the end mark: %s",
				 strerror(-err));
			window->counters_ok = false;
		}
		window->ended = true;
	}
	answer(child);
}

static void handle_line(struct child *child, struct window *window, char *line,
			const char *stats_path, bool verbose)
{
	if (strncmp(line, "BENCH ", 6) != 0) {
		if (strncmp(line, "KCON ", 5) != 0) {
			keep_tail(child->out_tail, &child->out_len, line, strlen(line));
			keep_tail(child->out_tail, &child->out_len, "\n", 1);
		}
		return;
	}
	if (verbose)
		fprintf(stderr, "    guest: %s\n", line);
	const char *mark = NULL;
	for (char *p = line + 6; *p;) {
		while (*p == ' ')
			p++;
		char *token = p;
		while (*p && *p != ' ')
			p++;
		char *eq = memchr(token, '=', (size_t)(p - token));
		if (!eq)
			continue;
		kv_set(&child->kv, token, (size_t)(eq - token), eq + 1, (size_t)(p - eq - 1));
		if (eq - token == 4 && strncmp(token, "mark", 4) == 0)
			mark = kv_get(&child->kv, "mark");
	}
	if (mark)
		on_mark(child, window, mark, stats_path);
}

static void consume(struct child *child, struct window *window, const char *data, size_t n,
		    const char *stats_path, bool verbose)
{
	for (size_t i = 0; i < n; i++) {
		char c = data[i];
		if (c == '\n' || child->line_len == sizeof(child->line) - 1) {
			child->line[child->line_len] = '\0';
			handle_line(child, window, child->line, stats_path, verbose);
			child->line_len = 0;
			if (c == '\n')
				continue;
		}
		child->line[child->line_len++] = c;
	}
}

static int spawn(struct child *child, char *const argv[])
{
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 };
	if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) {
		int e = -errno;
		for (int i = 0; i < 2; i++) {
			if (in[i] >= 0)
				close(in[i]);
			if (out[i] >= 0)
				close(out[i]);
			if (err[i] >= 0)
				close(err[i]);
		}
		return e;
	}
	pid_t pid = fork();
	if (pid < 0) {
		int e = -errno;
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		close(err[0]);
		close(err[1]);
		return e;
	}
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		signal(SIGPIPE, SIG_DFL);
		execv(argv[0], argv);
		dprintf(2, "kapsel bench: cannot run '%s': %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	close(err[1]);
	child->pid = pid;
	child->stdin_fd = in[1];
	child->stdout_fd = out[0];
	child->stderr_fd = err[0];
	fcntl(child->stdout_fd, F_SETFL, O_NONBLOCK);
	fcntl(child->stderr_fd, F_SETFL, O_NONBLOCK);
	child->cpu_clock_ok = clock_getcpuclockid(pid, &child->cpu_clock) == 0;
	return 0;
}

static bool drain(int fd, struct child *child, struct window *window, bool is_stderr,
		  const char *stats_path, bool verbose)
{
	char buffer[65536];
	for (;;) {
		ssize_t n = read(fd, buffer, sizeof(buffer));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return true; /* EAGAIN: open, nothing now */
		if (n == 0)
			return false; /* EOF (or the sink has no more yet) */
		if (is_stderr)
			keep_tail(child->err_tail, &child->err_len, buffer, (size_t)n);
		else
			consume(child, window, buffer, (size_t)n, stats_path, verbose);
	}
}

/* The last non-empty line of text (for error messages). */
static void last_line(const char *text, char *out, size_t len)
{
	const char *end = text + strlen(text);
	while (end > text && (end[-1] == '\n' || end[-1] == ' '))
		end--;
	const char *start = end;
	while (start > text && start[-1] != '\n')
		start--;
	snprintf(out, len, "%.*s", (int)(end - start), start);
}

static void fill_metrics(const struct bench_job *job, const struct child *child,
			 const struct window *window, struct bench_run *run)
{
	const struct kv *kv = &child->kv;
	run->ops = kv_u64(kv, "ops");
	run->reads = kv_u64(kv, "reads");
	run->writes = kv_u64(kv, "writes");
	run->bytes = kv_u64(kv, "bytes");
	run->errors = kv_u64(kv, "errors");
	run->elapsed_ns = kv_u64(kv, "elapsed_ns");
	run->host_window_ns = window->wall_end - window->wall_start;
	bool net = job->workload->kind == BENCH_KIND_NET;
	/* Net rows verify frames (both ends, both phases), not sectors. */
	run->verify_sectors = kv_u64(kv, net ? "verify_frames" : "verify_sectors");
	run->verify_errors = kv_u64(kv, "verify_errors");
	run->timed_ops = kv_u64(kv, "timed_ops");
	run->queue_depth_used = (unsigned)kv_u64(kv, "queue_depth");
	double *m = run->metrics;
	bool cpu = job->workload->kind == BENCH_KIND_CPU;
	if (cpu) {
		struct bench_cpu_sample sample = {
			.ops = run->ops,
			.elapsed_ns = run->elapsed_ns,
			.p50_ns = kv_u64(kv, "lat_p50_ns"),
			.p99_ns = kv_u64(kv, "lat_p99_ns"),
			.p999_ns = kv_u64(kv, "lat_p999_ns"),
			.max_ns = kv_u64(kv, "lat_max_ns"),
			.mean_ns = kv_u64(kv, "lat_mean_ns"),
			.deliver_ops = kv_u64(kv, "deliver_ops"),
			.deliver_p50_ns = kv_u64(kv, "deliver_p50_ns"),
			.deliver_p99_ns = kv_u64(kv, "deliver_p99_ns"),
		};
		bench_cpu_metrics(&sample, m);
		if (kv_has(kv, "early"))
			bench_counters_add(&run->counters, "early", kv_u64(kv, "early"));
	}
	double seconds = run->elapsed_ns / 1e9;
	uint64_t ok = run->ops - run->errors;
	if (seconds > 0 && !cpu) {
		m[BENCH_M_MBPS] = run->bytes / seconds / 1e6;
		m[BENCH_M_IOPS] = ok / seconds;
	}
	if (kv_has(kv, "lat_p50_ns") && ok && !cpu) {
		m[BENCH_M_LAT_P50_US] = kv_u64(kv, "lat_p50_ns") / 1e3;
		m[BENCH_M_LAT_P99_US] = kv_u64(kv, "lat_p99_ns") / 1e3;
		m[BENCH_M_LAT_P999_US] = kv_u64(kv, "lat_p999_ns") / 1e3;
	}
	if (kv_has(kv, "lat_mean_ns") && ok && !cpu)
		m[BENCH_M_LAT_MEAN_US] = kv_u64(kv, "lat_mean_ns") / 1e3;
	if (run->timed_ops) {
		m[BENCH_M_SUBMIT_PICKUP_US] = kv_u64(kv, "submit_pickup_ns") / 1e3;
		m[BENCH_M_PICKUP_COMPLETE_US] = kv_u64(kv, "pickup_complete_ns") / 1e3;
		m[BENCH_M_COMPLETE_REAP_US] = kv_u64(kv, "complete_reap_ns") / 1e3;
	}
	if (!run->ops)
		return;
	double ops = (double)run->ops;
	uint64_t kicks = kv_u64(kv, "kicks");
	bool block = job->workload->kind == BENCH_KIND_BLOCK;
	if (net) {
		static const char *const keys[] = { "sent", "lost", "retries", "seq_gaps" };
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			bench_counters_add(&run->counters,
					   k == 0   ? "frames_sent"
					   : k == 1 ? "frames_lost"
						    : keys[k],
					   kv_u64(kv, keys[k]));
	}
	/* Kicks sent with a sleep (KICK_AND_BLOCK): notifications, but their
	 * exit is the hypercall's (hc_kick_and_block), not a doorbell. */
	uint64_t kicks_in_block = kv_u64(kv, "kicks_in_block");
	if (block && kicks_in_block)
		bench_counters_add(&run->counters, "kicks_in_block", kicks_in_block);
	if ((block || net) && kv_has(kv, "kicks")) {
		m[BENCH_M_KICKS_PER_OP] = kicks / ops;
		m[BENCH_M_KICKS_SUPPRESSED_PER_OP] = kv_u64(kv, "kicks_suppressed") / ops;
		m[BENCH_M_BLOCKS_PER_OP] = kv_u64(kv, "blocks") / ops;
	}
	if (window->cpu_end > window->cpu_start) {
		run->cpu_ns = window->cpu_end - window->cpu_start;
		/* Net rows: the server VM's process works for the same frames. */
		if (window->peer_cpu_end > window->peer_cpu_start)
			run->cpu_ns += window->peer_cpu_end - window->peer_cpu_start;
		m[BENCH_M_CPU_US_PER_OP] = run->cpu_ns / 1e3 / ops;
	}
	if (window->vcpu_end > window->vcpu_start) {
		m[BENCH_M_VCPU_CPU_US_PER_OP] = (window->vcpu_end - window->vcpu_start) / 1e3 / ops;
		run->vcpu_cpu_ns = window->vcpu_end - window->vcpu_start;
	}
	if (window->qemu && window->kvm_exits_start >= 0 &&
	    window->kvm_exits_end >= window->kvm_exits_start) {
		uint64_t exits = (uint64_t)(window->kvm_exits_end - window->kvm_exits_start);
		bench_counters_add(&run->exits, "kvm_all", exits);
		m[BENCH_M_EXITS_PER_OP] = exits / ops;
		m[BENCH_M_NOTIFICATIONS_PER_OP] = kicks / ops;
	}
	if (!window->counters_ok)
		return;

	struct bench_counters delta;
	bench_counters_delta(&delta, &window->before, &window->after);
	/* Take off the handshake's own exits: the end mark's console write,
	 * the console read of the start answer and the end snapshot's signal. */
	static const struct {
		const char *name;
		uint64_t count;
	} handshake[] = {
		{ "exits_io_hypercall", 2 },
		{ "hypercall_console_write", 1 },
		{ "hypercall_console_read", 1 },
		{ "exits_interrupted", 1 },
		{ "exits_total", 3 },
	};
	for (size_t h = 0; h < sizeof(handshake) / sizeof(handshake[0]); h++)
		bench_counters_take_off(&delta, handshake[h].name, handshake[h].count);
	/* And what the guest's measurement itself made: hypercalls
	 * ("untimed_hc_NAME=N": cpubench.elf reads the clock with TIME_INFO)
	 * and, for a process row, exits ("untimed_exit_REASON=N": the entry
	 * that ends the phase). */
	/* Net rows: add the server VM's exits and device counters (less the
	 * end snapshot's interruption), so "per frame" covers both ends. */
	if (net && window->peer_counters_ok) {
		struct bench_counters peer;
		bench_counters_delta(&peer, &window->peer_before, &window->peer_after);
		bench_counters_take_off(&peer, "exits_interrupted", 1);
		bench_counters_take_off(&peer, "exits_total", 1);
		for (unsigned i = 0; i < peer.count; i++) {
			const struct bench_counter *c = &peer.items[i];
			if (strcmp(c->name, "dev.net-pv.kicks") == 0) {
				/* The peer's doorbell exits, as its backend counted them. */
				bench_counters_add(&run->exits, "doorbell", c->value);
				kicks += c->value;
				continue;
			}
			char name[BENCH_NAME_MAX];
			if (strncmp(c->name, "dev.", 4) == 0)
				snprintf(name, sizeof(name), "peer.%s", c->name);
			else
				snprintf(name, sizeof(name), "%s", c->name);
			bench_counters_add(&delta, name, c->value);
		}
	}
	for (unsigned k = 0; k < kv->count; k++) {
		const char *key = kv->items[k].key;
		bool hypercall = strncmp(key, "untimed_hc_", 11) == 0;
		if (!hypercall && strncmp(key, "untimed_exit_", 13) != 0)
			continue;
		uint64_t count = kv_u64(kv, key);
		char name[BENCH_NAME_MAX];
		snprintf(name, sizeof(name), hypercall ? "hypercall_%s" : "exits_%s",
			 key + (hypercall ? 11 : 13));
		bench_counters_take_off(&delta, name, count);
		if (hypercall)
			bench_counters_take_off(&delta, "exits_io_hypercall", count);
		bench_counters_take_off(&delta, "exits_total", count);
	}
	/* By reason; hypercall exits are split by call ("hc_block"). */
	uint64_t exits = 0, events = 0, hypercalls = 0;
	for (unsigned i = 0; i < delta.count; i++) {
		const struct bench_counter *c = &delta.items[i];
		if (strncmp(c->name, "hypercall_", 10) == 0 && c->value) {
			char reason[BENCH_NAME_MAX];
			snprintf(reason, sizeof(reason), "hc_%s", c->name + 10);
			bench_counters_add(&run->exits, reason, c->value);
			hypercalls += c->value;
		}
	}
	for (unsigned i = 0; i < delta.count; i++) {
		const struct bench_counter *c = &delta.items[i];
		if (strncmp(c->name, "exits_", 6) == 0 && strcmp(c->name, "exits_total") != 0) {
			bool by_call = strcmp(c->name, "exits_io_hypercall") == 0;
			if (by_call && c->value > hypercalls)
				bench_counters_add(&run->exits, "hc_other", c->value - hypercalls);
			else if (!by_call && c->value)
				bench_counters_add(&run->exits, c->name + 6, c->value);
			exits += c->value;
		} else if ((strncmp(c->name, "dev.", 4) == 0 ||
			    strncmp(c->name, "peer.dev.", 9) == 0) &&
			   (strstr(c->name, ".notifications_sent") ||
			    (net && strstr(c->name, "net-pv.notifications")))) {
			events += c->value;
			bench_counters_add(&run->counters, c->name, c->value);
		} else if (c->value) {
			bench_counters_add(&run->counters, c->name, c->value);
		}
	}
	/* Doorbell kicks are exits too, handled inside the host kernel
	 * (ioeventfd), so the VMM never counts them: the guest does. */
	if ((block || net) && kicks) {
		bench_counters_add(&run->exits, "doorbell", kv_u64(kv, "kicks"));
		exits += kicks;
	}
	m[BENCH_M_EXITS_PER_OP] = exits / ops;
	m[BENCH_M_EVENTS_PER_OP] = events / ops;
	m[BENCH_M_NOTIFICATIONS_PER_OP] = (kicks + kicks_in_block + events) / ops;
}

static void build_cmdline(const struct bench_job *job, char *out, size_t len)
{
	const struct bench_workload *w = job->workload;
	bool emulated = bench_path_is_emulated(job->path);
	if (w->kind == BENCH_KIND_CPU) {
		snprintf(out, len,
			 "mode=%s delay_us=%llu warmup_ms=%llu runtime_ms=%llu warmup_ops=%llu ops=%llu sync=1",
			 bench_cpu_info[w->cpu_op].name,
			 (unsigned long long)(job->options->timer_delay_ns / 1000),
			 (unsigned long long)(job->warmup_ns / 1000000),
			 (unsigned long long)(job->runtime_ns / 1000000),
			 (unsigned long long)job->warmup_ops, (unsigned long long)job->ops);
		return;
	}
	if (w->kind == BENCH_KIND_NET) {
		snprintf(out, len,
			 "role=client pattern=%s size=%u path=%s warmup_ms=%llu runtime_ms=%llu warmup_ops=%llu ops=%llu poll_us=%llu sync=1",
			 w->net_stream ? "stream" : "rr", w->block_bytes,
			 emulated ? "ne2000" : "pv", (unsigned long long)(job->warmup_ns / 1000000),
			 (unsigned long long)(job->runtime_ns / 1000000),
			 (unsigned long long)job->warmup_ops, (unsigned long long)job->ops,
			 (unsigned long long)(emulated ? 0
						       : job->options->pv_guest_poll_ns / 1000));
		return;
	}
	if (w->kind == BENCH_KIND_CONSOLE) {
		snprintf(out, len,
			 "mode=console sink=%s line_bytes=%u warmup_ms=%llu runtime_ms=%llu warmup_ops=%llu ops=%llu sync=1",
			 emulated ? "uart" : "pv", w->block_bytes,
			 (unsigned long long)(job->warmup_ns / 1000000),
			 (unsigned long long)(job->runtime_ns / 1000000),
			 (unsigned long long)job->warmup_ops, (unsigned long long)job->ops);
		return;
	}
	bool qemu = bench_path_is_qemu(job->path);
	snprintf(out, len,
		 "mode=blk path=%s random=%d readpct=%u bs=%u qd=%u region=%llu seed=%llu gen=%u warmup_ms=%llu runtime_ms=%llu warmup_ops=%llu ops=%llu poll_ns=%llu sync=%d",
		 job->path == BENCH_PATH_QEMU_VIRTIO ? "virtio"
		 : emulated			     ? "ata"
						     : "pv",
		 w->random ? 1 : 0, w->read_percent, w->block_bytes, job->iodepth,
		 (unsigned long long)job->region_bytes, (unsigned long long)job->seed,
		 job->generation, (unsigned long long)(job->warmup_ns / 1000000),
		 (unsigned long long)(job->runtime_ns / 1000000),
		 (unsigned long long)job->warmup_ops, (unsigned long long)job->ops,
		 (unsigned long long)(emulated || qemu ? 0 : job->options->pv_guest_poll_ns),
		 qemu ? 0 : 1);
}

/*
 * Net rows: start the server end (netbench.elf role=server) on the other
 * side of the socket link, its output in out_path.  Returns its pid or
 * -errno.
 */
static pid_t spawn_peer(const struct bench_job *job, const char *net, const char *name,
			const char *stats_path, const char *out_path)
{
	const struct bench_options *options = job->options;
	char cmdline[96];
	snprintf(cmdline, sizeof(cmdline), "role=server path=%s poll_us=%llu",
		 job->path == BENCH_PATH_EMULATED ? "ne2000" : "pv",
		 (unsigned long long)(job->path == BENCH_PATH_EMULATED
					      ? 0
					      : options->pv_guest_poll_ns / 1000));
	char *argv[] = { options->kapsel_path,
			 "run",
			 "--kernel",
			 options->net_guest_path,
			 "--memory",
			 "64M",
			 "--name",
			 (char *)name,
			 "--net",
			 (char *)net,
			 "--cmdline",
			 cmdline,
			 "--stats-file",
			 (char *)stats_path,
			 "--no-control",
			 "--no-console-input",
			 NULL };
	bench_echo_argv(options, argv, " &");
	return bench_spawn_to_file(argv, out_path, true);
}

int bench_guest_run(const struct bench_job *job, struct bench_run *run)
{
	const struct bench_options *options = job->options;
	const struct bench_workload *w = job->workload;
	bool emulated = bench_path_is_emulated(job->path);
	bool qemu = bench_path_is_qemu(job->path);
	bool console = w->kind == BENCH_KIND_CONSOLE;
	bool cpu = w->kind == BENCH_KIND_CPU;
	bool net = w->kind == BENCH_KIND_NET;
	char memory[32], name[32], disk[1200], cmdline[512], stats_path[600];
	char net_arg[1300], peer_net[1300], peer_name[40], peer_stats[600], peer_out[600];
	char *guest_path = cpu	 ? options->cpu_guest_path
			   : net ? options->net_guest_path
				 : options->guest_path;
	pid_t peer_pid = -1;

	bench_run_clear(run);
	if (!guest_path && net) {
		snprintf(run->error, sizeof(run->error),
			 "network bench guest netbench.elf not found next to kapsel; build it (ninja -C BUILD) or set KAPSEL_BENCH_NET_GUEST");
		return -ENODEV;
	}
	if (!guest_path) {
		snprintf(run->error, sizeof(run->error),
			 cpu ? "bench guest cpubench.elf not found; build it (ninja -C BUILD) or give --cpu-guest FILE"
			     : "bench guest blkbench.elf not found; build it (ninja -C BUILD) or give --guest FILE");
		return -ENODEV;
	}
	uint64_t memory_bytes = GUEST_MEMORY_BASE_BYTES;
	if (!console && !cpu && !net)
		memory_bytes += (uint64_t)job->iodepth * w->block_bytes;
	memory_bytes = (memory_bytes + (2u << 20) - 1) & ~((2ull << 20) - 1);
	snprintf(memory, sizeof(memory), "%lluM", (unsigned long long)(memory_bytes >> 20));
	/* VM names are unique per host (control sockets): add our pid. */
	snprintf(name, sizeof(name), "bench-%d-%s", (int)getpid(), emulated ? "emulated" : "pv");
	int n = snprintf(disk, sizeof(disk), "%s,bus=%s,cache=%s", job->disk_path,
			 emulated ? "ata" : "pv",
			 job->cache == BENCH_CACHE_NONE ? "none" : "writeback");
	if (!emulated && options->pv_backend_poll_ns >= 1000 && n > 0 && (size_t)n < sizeof(disk))
		snprintf(disk + n, sizeof(disk) - (size_t)n, ",poll=%llu",
			 (unsigned long long)(options->pv_backend_poll_ns / 1000));
	snprintf(stats_path, sizeof(stats_path), "%s/stats-%d", job->work_dir, (int)getpid());
	build_cmdline(job, cmdline, sizeof(cmdline));
	if (net) {
		/* The socket link: each VM binds its own path and names the other's. */
		const char *model = emulated ? "ne2000" : "pv";
		snprintf(net_arg, sizeof(net_arg),
			 "socket=%s/%s-client.sock,peer=%s/%s-server.sock,model=%s", job->work_dir,
			 model, job->work_dir, model, model);
		snprintf(peer_net, sizeof(peer_net),
			 "socket=%s/%s-server.sock,peer=%s/%s-client.sock,model=%s", job->work_dir,
			 model, job->work_dir, model, model);
		snprintf(peer_name, sizeof(peer_name), "%s-peer", name);
		snprintf(peer_stats, sizeof(peer_stats), "%s/peer-stats-%d", job->work_dir,
			 (int)getpid());
		snprintf(peer_out, sizeof(peer_out), "%s/peer-%s.out", job->work_dir, model);
	}

	char *argv[24];
	unsigned argc = 0;
	argv[argc++] = options->kapsel_path;
	argv[argc++] = "run";
	argv[argc++] = "--kernel";
	argv[argc++] = guest_path;
	argv[argc++] = "--memory";
	argv[argc++] = memory;
	argv[argc++] = "--name";
	argv[argc++] = name;
	if (cpu) {
		/* No device: the console on standard output carries BENCH lines. */
	} else if (net) {
		argv[argc++] = "--net";
		argv[argc++] = net_arg;
	} else if (!console) {
		argv[argc++] = "--disk";
		argv[argc++] = disk;
	} else {
		argv[argc++] = "--console-output";
		argv[argc++] = (char *)job->console_sink;
	}
	argv[argc++] = "--cmdline";
	argv[argc++] = cmdline;
	argv[argc++] = "--stats-file";
	argv[argc++] = stats_path;
	argv[argc++] = "--no-control"; /* no socket per run; counters come via --stats-file */
	argv[argc] = NULL;
	struct bench_qemu_strings qemu_strings;
	char *qemu_argv[40];
	char *const *run_argv = argv;
	if (qemu) {
		argc = bench_qemu_argv(job, job->results, guest_path, cmdline, memory,
				       &qemu_strings, qemu_argv,
				       sizeof(qemu_argv) / sizeof(qemu_argv[0]));
		run_argv = qemu_argv;
		if (job->command_out && !job->command_out[0])
			bench_join_argv(job->command_out, job->command_out_len, qemu_argv);
	}
	bench_echo_argv(options, run_argv, "");

	struct child *child = calloc(1, sizeof(*child));
	struct window *window = calloc(1, sizeof(*window));
	int err = 0;
	if (!child || !window) {
		err = -ENOMEM;
		goto out;
	}
	child->sink_fd = -1;
	if (console) {
		/* The guest's console (its BENCH lines too) goes to the sink:
		 * read the file as it grows, from its current end. */
		child->sink_fd = open(job->console_sink, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
		if (child->sink_fd < 0 || lseek(child->sink_fd, 0, SEEK_END) < 0) {
			err = -errno;
			snprintf(run->error, sizeof(run->error),
				 "cannot read console sink '%s': %s", job->console_sink,
				 strerror(errno));
			goto out;
		}
	}
	if (net) {
		peer_pid = spawn_peer(job, peer_net, peer_name, peer_stats, peer_out);
		if (peer_pid < 0) {
			err = (int)peer_pid;
			snprintf(run->error, sizeof(run->error),
				 "cannot start the server VM '%s': %s", options->kapsel_path,
				 strerror(-err));
			goto out;
		}
		window->peer_pid = peer_pid;
		window->peer_stats_path = peer_stats;
		window->peer_cpu_clock_ok =
			clock_getcpuclockid(peer_pid, &window->peer_cpu_clock) == 0;
	}
	window->qemu = qemu;
	window->kvm_exits_start = window->kvm_exits_end = -1;
	err = spawn(child, run_argv);
	if (err) {
		snprintf(run->error, sizeof(run->error), "cannot start '%s': %s", run_argv[0],
			 strerror(-err));
		goto out;
	}

	uint64_t budget = job->ops ? OPS_MODE_TIMEOUT_NS : job->warmup_ns + job->runtime_ns;
	window->spawn_ns = monotonic_ns();
	window->measure_budget_ns = job->ops ? OPS_MODE_TIMEOUT_NS : job->runtime_ns;
	window->deadline_ns = window->spawn_ns + budget + RUN_SLACK_NS;
	bool out_open = true, err_open = true, timed_out = false, peer_failed = false;
	while (!child->exited || out_open || err_open) {
		struct pollfd fds[2];
		nfds_t n = 0;
		int out_index = -1, err_index = -1;
		if (out_open) {
			out_index = (int)n;
			fds[n++] = (struct pollfd){ .fd = child->stdout_fd, .events = POLLIN };
		}
		if (err_open) {
			err_index = (int)n;
			fds[n++] = (struct pollfd){ .fd = child->stderr_fd, .events = POLLIN };
		}
		/* A file does not wake poll when it grows: look every 500 us. */
		int timeout_ms = console ? 0 : 50;
		if (console) {
			struct timespec pause = { 0, 500000 };
			nanosleep(&pause, NULL);
		}
		if (n)
			poll(fds, n, timeout_ms);
		else
			poll(NULL, 0, 10);
		if (out_index >= 0 && fds[out_index].revents)
			out_open = drain(child->stdout_fd, child, window, false, stats_path,
					 options->verbose);
		if (err_index >= 0 && fds[err_index].revents)
			err_open = drain(child->stderr_fd, child, window, true, stats_path,
					 options->verbose);
		if (console)
			drain(child->sink_fd, child, window, false, stats_path, options->verbose);
		if (!child->exited) {
			int status;
			pid_t r = waitpid(child->pid, &status, WNOHANG);
			if (r == child->pid) {
				child->exited = true;
				child->status = status;
			}
		}
		if (!child->exited && monotonic_ns() > window->deadline_ns) {
			kill(child->pid, SIGKILL);
			timed_out = true;
		}
		if (peer_pid > 0 && !child->exited && !peer_failed) {
			/* A server VM that died leaves the client saying HELLO: stop it. */
			int status;
			if (waitpid(peer_pid, &status, WNOHANG) == peer_pid) {
				peer_pid = -1;
				peer_failed = !kv_has(&child->kv, "done");
				if (peer_failed)
					kill(child->pid, SIGKILL);
			}
		}
		if (child->exited && !console && (out_open || err_open) &&
		    monotonic_ns() > window->deadline_ns + 5000000000ull)
			break; /* a grandchild holds the pipes; give up on them */
	}
	if (console)
		drain(child->sink_fd, child, window, false, stats_path, options->verbose);
	unlink(stats_path);

	int code = qemu			      ? bench_qemu_guest_code(child->status)
		   : WIFEXITED(child->status) ? WEXITSTATUS(child->status)
					      : -1;
	char detail[256] = "";
	last_line(child->err_tail, detail, sizeof(detail));
	if (!detail[0])
		last_line(child->out_tail, detail, sizeof(detail));
	const char *guest_error = kv_get(&child->kv, "error");

	if (peer_failed) {
		char peer_detail[200] = "";
		char *text = NULL;
		if (read_file(peer_out, &text) == 0) {
			last_line(text, peer_detail, sizeof(peer_detail));
			free(text);
		}
		err = -EIO;
		snprintf(run->error, sizeof(run->error),
			 "the server VM (other end of the link) stopped before the client finished: %s",
			 peer_detail[0] ? peer_detail : "(no output)");
	} else if (timed_out) {
		err = -ETIMEDOUT;
		snprintf(run->error, sizeof(run->error),
			 "the guest did not finish in %llu s and was killed%s%s",
			 (unsigned long long)((window->deadline_ns - window->spawn_ns) /
					      1000000000ull),
			 detail[0] ? "; last output: " : "", detail);
	} else if (cpu && (code == 3 || (guest_error && strcmp(guest_error, "no-device") == 0))) {
		err = -ENODEV;
		snprintf(run->error, sizeof(run->error),
			 "the hypervisor offers no PV CPU (ABI feature PV_CPU: traps, upcalls, timers); the guest said: no device");
	} else if (code == 3 || (guest_error && strcmp(guest_error, "no-device") == 0)) {
		err = -ENODEV;
		snprintf(run->error, sizeof(run->error),
			 "the VM offers no %s (kapsel run --%s %s); the guest said: no device",
			 net	    ? (emulated ? "NE2000 NIC" : "PV network device")
			 : console  ? (emulated ? "UART" : "PV console")
			 : emulated ? "emulated ATA disk"
				    : "PV block device",
			 net ? "net" : "disk",
			 net	    ? (emulated ? "socket=A,peer=B,model=ne2000"
						: "socket=A,peer=B,model=pv")
			 : emulated ? "FILE,bus=ata"
				    : "FILE,bus=pv");
	} else if (qemu && code < 0 && !kv_has(&child->kv, "ready") && !bench_interrupted()) {
		/* QEMU could not start this VM (a machine or option this QEMU
		 * lacks, a locked image): the other runs would fail alike. */
		err = -ENODEV;
		snprintf(run->error, sizeof(run->error), "QEMU could not start the VM: %s",
			 detail[0] ? detail : "(no message)");
	} else if (code == KAPSEL_EXIT_VMM_ERROR_CODE && !kv_has(&child->kv, "ready") &&
		   !bench_interrupted()) {
		/* The VMM could not even start this VM (no /dev/kvm, a refused
		 * disk option): every other run of this path would fail alike. */
		err = -ENODEV;
		snprintf(run->error, sizeof(run->error), "kapsel run could not start the VM: %s",
			 detail[0] ? detail : "(no message)");
	} else if (code != 0 || !kv_has(&child->kv, "done")) {
		err = -EIO;
		if (guest_error)
			snprintf(run->error, sizeof(run->error),
				 "guest reported error=%s (status %s)%s%s", guest_error,
				 kv_get(&child->kv, "status") ? kv_get(&child->kv, "status") : "-",
				 detail[0] ? "; " : "", detail);
		else if (WIFSIGNALED(child->status))
			snprintf(run->error, sizeof(run->error), "%s was killed by signal %d%s%s",
				 qemu ? "QEMU" : "kapsel run", WTERMSIG(child->status),
				 detail[0] ? "; last output: " : "", detail);
		else
			snprintf(run->error, sizeof(run->error), "%s exited with %s %d: %s",
				 qemu ? "the guest on QEMU" : "kapsel run",
				 qemu && code < 0 ? "QEMU status" : "status",
				 qemu && code < 0 ? WEXITSTATUS(child->status) : code,
				 detail[0] ? detail : "(no output)");
	} else {
		fill_metrics(job, child, window, run);
		run->ok = run->errors == 0 && kv_u64(&child->kv, "warmup_errors") == 0;
		if (!run->ok)
			snprintf(run->error, sizeof(run->error),
				 "%llu I/O errors in the guest, first status %s",
				 (unsigned long long)(run->errors +
						      kv_u64(&child->kv, "warmup_errors")),
				 kv_get(&child->kv, "first_error")
					 ? kv_get(&child->kv, "first_error")
					 : "?");
		else if (!window->started || !window->ended)
			snprintf(run->error, sizeof(run->error), "the guest printed no marks");
		else if (window->problem[0])
			snprintf(run->error, sizeof(run->error), "%s", window->problem);
	}
out:
	if (peer_pid > 0) {
		/* The client has its REPORT (or failed): the server is not needed. */
		kill(peer_pid, SIGKILL);
		waitpid(peer_pid, NULL, 0);
	}
	if (net) {
		unlink(peer_stats);
		if (err == 0)
			unlink(peer_out);
	}
	if (child) {
		if (child->pid > 0 && !child->exited) {
			kill(child->pid, SIGKILL);
			waitpid(child->pid, NULL, 0);
		}
		if (child->stdin_fd > 0)
			close(child->stdin_fd);
		if (child->stdout_fd > 0)
			close(child->stdout_fd);
		if (child->stderr_fd > 0)
			close(child->stderr_fd);
		if (child->sink_fd >= 0)
			close(child->sink_fd);
	}
	free(child);
	free(window);
	return err;
}
