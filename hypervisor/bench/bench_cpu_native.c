/* `kapsel bench` CPU rows, native path: the host kernel's closest operation to each PV CPU operation, timed the way the guest times its own. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "kapsel/bench_pattern.h"
#include "bench.h"

/*
 * Every operation is timed with the TSC, as the guest does (rdtsc around
 * it; handlers stamp their entry), converted with a rate measured against
 * CLOCK_MONOTONIC once per process.  Timer rows are measured on
 * CLOCK_MONOTONIC itself: lateness is the time read() returned minus the
 * deadline that expired.
 */

#define UD2_BYTES 2
#define CALIBRATE_NS 20000000ull
#define TIMER_TIMEOUT_NS 5000000000ull
#define DELIVERY_SIGNAL SIGUSR1

struct cpu_phase {
	uint64_t ops, elapsed_ns, errors, early, overruns;
	uint64_t value_sum_ns, value_max_ns, deliver_ops;
	uint32_t values[BENCH_HIST_BUCKETS];
	uint32_t delivers[BENCH_HIST_BUCKETS];
};

static double ns_per_tick;
static volatile uint64_t handler_tsc, handler_count;

static uint64_t monotonic(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)::"memory");
	return ((uint64_t)hi << 32) | lo;
}

/* The TSC's rate against CLOCK_MONOTONIC, over a 20 ms spin (once). */
static void calibrate(void)
{
	if (ns_per_tick > 0)
		return;
	uint64_t t0 = monotonic(), c0 = rdtsc(), t1, c1;
	do {
		t1 = monotonic();
		c1 = rdtsc();
	} while (t1 - t0 < CALIBRATE_NS);
	ns_per_tick = c1 > c0 ? (double)(t1 - t0) / (double)(c1 - c0) : 1.0;
}

static uint64_t ticks_ns(uint64_t ticks)
{
	return (uint64_t)((double)ticks * ns_per_tick);
}

static void record(struct cpu_phase *phase, uint64_t value_ns, const uint64_t *deliver_ns)
{
	phase->ops++;
	phase->value_sum_ns += value_ns;
	if (value_ns > phase->value_max_ns)
		phase->value_max_ns = value_ns;
	phase->values[bench_hist_index(value_ns)]++;
	if (deliver_ns) {
		phase->deliver_ops++;
		phase->delivers[bench_hist_index(*deliver_ns)]++;
	}
}

/* ---- Handlers ------------------------------------------------------------ */

static void on_sigill(int signo, siginfo_t *info, void *context)
{
	(void)signo;
	(void)info;
	handler_tsc = rdtsc();
	ucontext_t *uc = context;
	uc->uc_mcontext.gregs[REG_RIP] += UD2_BYTES; /* resume after the ud2 */
	handler_count++;
}

static void on_signal(int signo, siginfo_t *info, void *context)
{
	(void)signo;
	(void)info;
	(void)context;
	handler_tsc = rdtsc();
	handler_count++;
}

/* ---- Operations ---------------------------------------------------------- */

struct native_cpu {
	enum bench_cpu_op op;
	uint64_t delay_ns;
	int timer_fd;
	pid_t pid, tid;
	uint64_t periodic_first_ns, periodic_expirations;
};

static int op_null_syscall(struct cpu_phase *phase)
{
	uint64_t start = rdtsc();
	syscall(SYS_getppid);
	uint64_t end = rdtsc();
	record(phase, ticks_ns(end - start), NULL);
	return 0;
}

static int op_trap(struct cpu_phase *phase)
{
	uint64_t before = handler_count;
	uint64_t start = rdtsc();
	__asm__ volatile("ud2" ::: "memory");
	uint64_t end = rdtsc();
	if (handler_count != before + 1)
		return -EIO;
	uint64_t deliver = ticks_ns(handler_tsc - start);
	record(phase, ticks_ns(end - start), &deliver);
	return 0;
}

static int op_signal(struct native_cpu *cpu, struct cpu_phase *phase)
{
	uint64_t before = handler_count;
	uint64_t start = rdtsc();
	/* A signal to the calling thread is delivered before tgkill returns. */
	long rc = syscall(SYS_tgkill, cpu->pid, cpu->tid, DELIVERY_SIGNAL);
	uint64_t end = rdtsc();
	if (rc < 0)
		return -errno;
	if (handler_count != before + 1)
		return -EIO;
	uint64_t deliver = ticks_ns(handler_tsc - start);
	record(phase, ticks_ns(end - start), &deliver);
	return 0;
}

/* Block in read() until the timer expires; returns the expirations. */
static int timer_wait(struct native_cpu *cpu, uint64_t *expirations)
{
	for (;;) {
		ssize_t n = read(cpu->timer_fd, expirations, sizeof(*expirations));
		if (n == (ssize_t)sizeof(*expirations))
			return 0;
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 ? -errno : -EIO;
	}
}

static void late_sample(struct cpu_phase *phase, uint64_t now_ns, uint64_t deadline_ns)
{
	if (now_ns < deadline_ns) {
		phase->early++;
		record(phase, 0, NULL);
	} else {
		record(phase, now_ns - deadline_ns, NULL);
	}
}

static int op_timer_oneshot(struct native_cpu *cpu, struct cpu_phase *phase)
{
	uint64_t deadline = monotonic() + cpu->delay_ns;
	struct itimerspec spec = {
		.it_value = { .tv_sec = (time_t)(deadline / 1000000000ull),
			      .tv_nsec = (long)(deadline % 1000000000ull) },
	};
	if (timerfd_settime(cpu->timer_fd, TFD_TIMER_ABSTIME, &spec, NULL) < 0)
		return -errno;
	uint64_t expirations;
	int err = timer_wait(cpu, &expirations);
	uint64_t now = monotonic();
	if (err)
		return err;
	late_sample(phase, now, deadline);
	return 0;
}

static int timer_periodic_arm(struct native_cpu *cpu, bool on)
{
	struct itimerspec spec;
	memset(&spec, 0, sizeof(spec));
	if (on) {
		uint64_t first = monotonic() + cpu->delay_ns;
		spec.it_value.tv_sec = (time_t)(first / 1000000000ull);
		spec.it_value.tv_nsec = (long)(first % 1000000000ull);
		spec.it_interval.tv_sec = (time_t)(cpu->delay_ns / 1000000000ull);
		spec.it_interval.tv_nsec = (long)(cpu->delay_ns % 1000000000ull);
		cpu->periodic_first_ns = first;
		cpu->periodic_expirations = 0;
	}
	return timerfd_settime(cpu->timer_fd, TFD_TIMER_ABSTIME, &spec, NULL) < 0 ? -errno : 0;
}

static int op_timer_periodic(struct native_cpu *cpu, struct cpu_phase *phase)
{
	uint64_t expirations;
	int err = timer_wait(cpu, &expirations);
	uint64_t now = monotonic();
	if (err)
		return err;
	if (!expirations)
		return -EIO;
	/* Several expirations at once: the last one is the deadline that
	 * woke us, the others were missed (as the PV timer skips them). */
	cpu->periodic_expirations += expirations;
	phase->overruns += expirations - 1;
	late_sample(phase, now,
		    cpu->periodic_first_ns + (cpu->periodic_expirations - 1) * cpu->delay_ns);
	return 0;
}

static int run_phase(struct native_cpu *cpu, struct cpu_phase *phase, uint64_t duration_ns,
		     uint64_t max_ops)
{
	memset(phase, 0, sizeof(*phase));
	int err = cpu->op == BENCH_CPU_TIMER_PERIODIC ? timer_periodic_arm(cpu, true) : 0;
	uint64_t start = monotonic();
	while (!err && (max_ops ? phase->ops < max_ops : monotonic() - start < duration_ns) &&
	       !bench_interrupted()) {
		switch (cpu->op) {
		case BENCH_CPU_NULL_HYPERCALL:
			err = op_null_syscall(phase);
			break;
		case BENCH_CPU_TRAP:
			err = op_trap(phase);
			break;
		case BENCH_CPU_UPCALL:
			err = op_signal(cpu, phase);
			break;
		case BENCH_CPU_TIMER:
			err = op_timer_oneshot(cpu, phase);
			break;
		case BENCH_CPU_TIMER_PERIODIC:
			err = op_timer_periodic(cpu, phase);
			break;
		default:
			err = -EINVAL;
		}
	}
	phase->elapsed_ns = monotonic() - start;
	if (cpu->op == BENCH_CPU_TIMER_PERIODIC)
		timer_periodic_arm(cpu, false);
	if (err)
		phase->errors++;
	return err;
}

int bench_cpu_native_run(const struct bench_job *job, struct bench_run *run)
{
	struct native_cpu cpu = {
		.op = job->workload->cpu_op,
		.delay_ns = job->options->timer_delay_ns,
		.timer_fd = -1,
		.pid = getpid(),
		.tid = (pid_t)syscall(SYS_gettid),
	};
	struct cpu_phase *phase = calloc(1, sizeof(*phase));
	struct sigaction old_action, action;
	bool handler_set = false;
	int err = 0;

	bench_run_clear(run);
	if (!phase) {
		snprintf(run->error, sizeof(run->error), "out of memory");
		return -ENOMEM;
	}
	calibrate();
	int signo = cpu.op == BENCH_CPU_TRAP ? SIGILL : DELIVERY_SIGNAL;
	if (cpu.op == BENCH_CPU_TRAP || cpu.op == BENCH_CPU_UPCALL) {
		memset(&action, 0, sizeof(action));
		action.sa_sigaction = cpu.op == BENCH_CPU_TRAP ? on_sigill : on_signal;
		action.sa_flags = SA_SIGINFO;
		sigemptyset(&action.sa_mask);
		if (sigaction(signo, &action, &old_action) < 0) {
			err = -errno;
			snprintf(run->error, sizeof(run->error), "cannot install a %s handler: %s",
				 strsignal(signo), strerror(errno));
			goto out;
		}
		handler_set = true;
		sigset_t unblock;
		sigemptyset(&unblock);
		sigaddset(&unblock, signo);
		pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
	}
	if (bench_cpu_info[cpu.op].timer) {
		cpu.timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
		if (cpu.timer_fd < 0) {
			err = -errno;
			snprintf(run->error, sizeof(run->error), "timerfd_create failed: %s",
				 strerror(errno));
			goto out;
		}
	}

	uint64_t warmup_ops = job->ops ? job->warmup_ops : 0;
	if (!job->ops || warmup_ops)
		err = run_phase(&cpu, phase, job->warmup_ns, warmup_ops);
	uint64_t cpu_start = thread_cpu_ns();
	if (!err)
		err = run_phase(&cpu, phase, job->runtime_ns, job->ops);
	uint64_t cpu_end = thread_cpu_ns();
	if (err) {
		snprintf(run->error, sizeof(run->error), "%s failed: %s",
			 bench_cpu_info[cpu.op].native_op, strerror(-err));
		goto out;
	}
	run->ops = phase->ops;
	run->elapsed_ns = phase->elapsed_ns;
	struct bench_cpu_sample sample = {
		.ops = phase->ops,
		.elapsed_ns = phase->elapsed_ns,
		.p50_ns = bench_hist_percentile(phase->values, phase->ops, 5000),
		.p99_ns = bench_hist_percentile(phase->values, phase->ops, 9900),
		.p999_ns = bench_hist_percentile(phase->values, phase->ops, 9990),
		.max_ns = phase->value_max_ns,
		.mean_ns = phase->ops ? phase->value_sum_ns / phase->ops : 0,
		.deliver_ops = phase->deliver_ops,
		.deliver_p50_ns = bench_hist_percentile(phase->delivers, phase->deliver_ops, 5000),
		.deliver_p99_ns = bench_hist_percentile(phase->delivers, phase->deliver_ops, 9900),
	};
	bench_cpu_metrics(&sample, run->metrics);
	if (phase->ops && cpu_end > cpu_start) {
		run->cpu_ns = cpu_end - cpu_start;
		run->metrics[BENCH_M_CPU_US_PER_OP] = run->cpu_ns / 1e3 / phase->ops;
	}
	if (bench_cpu_info[cpu.op].timer) {
		bench_counters_add(&run->counters, "early", phase->early);
		bench_counters_add(&run->counters, "timer_overruns", phase->overruns);
	}
	run->ok = phase->ops > 0;
	if (!run->ok)
		snprintf(run->error, sizeof(run->error), "no operation completed");
out:
	if (handler_set)
		sigaction(signo, &old_action, NULL);
	if (cpu.timer_fd >= 0)
		close(cpu.timer_fd);
	free(phase);
	return err;
}
