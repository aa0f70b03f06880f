/* `kapsel bench` CPU rows, native path: the host kernel's closest operation to each PV CPU operation, timed the way the guest times its own. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
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
	/* Process rows: the partner process of a switch pair, its pipes or
	 * shared flag, this thread's CPU mask before pinning; a region. */
	pid_t partner;
	int to_partner[2], from_partner[2];
	volatile int *flag;
	cpu_set_t old_mask;
	bool pinned;
	uint8_t *region;
	unsigned next_page, flip;
};

#define FAULT_PAGES 64u
#define BATCH_PAGES 16u
#define PAGE_BYTES 4096u
#define FLAG_GO 1
#define FLAG_BACK 0
#define FLAG_QUIT 2

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

/* ---- Process rows ---------------------------------------------------------- */

static int op_fork(struct cpu_phase *phase)
{
	uint64_t start = rdtsc();
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	if (pid < 0)
		return -errno;
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	uint64_t end = rdtsc();
	record(phase, ticks_ns(end - start), NULL);
	return 0;
}

/* A round trip to the partner is two switches: each gets half. */
static void record_switches(struct cpu_phase *phase, uint64_t ticks)
{
	uint64_t half = ticks_ns(ticks) / 2;
	record(phase, half, NULL);
	record(phase, half, NULL);
}

static int op_pipe_switch(struct native_cpu *cpu, struct cpu_phase *phase)
{
	char byte = 'x';
	uint64_t start = rdtsc();
	if (write(cpu->to_partner[1], &byte, 1) != 1 || read(cpu->from_partner[0], &byte, 1) != 1)
		return -EPIPE;
	uint64_t end = rdtsc();
	record_switches(phase, end - start);
	return 0;
}

static int op_yield_switch(struct native_cpu *cpu, struct cpu_phase *phase)
{
	uint64_t give_up = monotonic() + TIMER_TIMEOUT_NS;
	uint64_t start = rdtsc();
	__atomic_store_n(cpu->flag, FLAG_GO, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(cpu->flag, __ATOMIC_SEQ_CST) != FLAG_BACK) {
		sched_yield();
		if (monotonic() > give_up)
			return -ETIMEDOUT;
	}
	uint64_t end = rdtsc();
	record_switches(phase, end - start);
	return 0;
}

static int op_page_fault(struct native_cpu *cpu, struct cpu_phase *phase)
{
	volatile uint8_t *page = cpu->region + (size_t)cpu->next_page * PAGE_BYTES;
	uint64_t start = rdtsc();
	*page = 1;
	uint64_t end = rdtsc();
	record(phase, ticks_ns(end - start), NULL);
	/* Drop it again, so the next lap faults on a fresh zero page. */
	if (madvise((void *)page, PAGE_BYTES, MADV_DONTNEED) < 0)
		return -errno;
	cpu->next_page = (cpu->next_page + 1) % FAULT_PAGES;
	return 0;
}

static int op_mprotect(struct native_cpu *cpu, struct cpu_phase *phase)
{
	int prot = cpu->flip ? PROT_READ | PROT_WRITE : PROT_READ;
	uint64_t start = rdtsc();
	int rc = mprotect(cpu->region, BATCH_PAGES * PAGE_BYTES, prot);
	uint64_t end = rdtsc();
	if (rc < 0)
		return -errno;
	record(phase, ticks_ns(end - start), NULL);
	cpu->flip ^= 1;
	return 0;
}

/* The partner of a switch pair: answers each byte, or each FLAG_GO. */
static void partner_main(struct native_cpu *cpu)
{
	if (cpu->op == BENCH_CPU_CTXSW) {
		char byte;
		while (read(cpu->to_partner[0], &byte, 1) == 1)
			if (write(cpu->from_partner[1], &byte, 1) != 1)
				break;
		_exit(0);
	}
	for (;;) {
		int v = __atomic_load_n(cpu->flag, __ATOMIC_SEQ_CST);
		if (v == FLAG_GO) {
			__atomic_store_n(cpu->flag, FLAG_BACK, __ATOMIC_SEQ_CST);
			continue;
		}
		if (v == FLAG_QUIT || getppid() == 1) /* done, or the bench died */
			_exit(0);
		sched_yield();
	}
}

static void proc_teardown(struct native_cpu *cpu)
{
	if (cpu->partner > 0) {
		if (cpu->flag)
			__atomic_store_n(cpu->flag, FLAG_QUIT, __ATOMIC_SEQ_CST);
		if (cpu->to_partner[1] >= 0)
			close(cpu->to_partner[1]);
		cpu->to_partner[1] = -1;
		while (waitpid(cpu->partner, NULL, 0) < 0 && errno == EINTR)
			;
		cpu->partner = 0;
	}
	for (int i = 0; i < 2; i++) {
		if (cpu->to_partner[i] >= 0)
			close(cpu->to_partner[i]);
		if (cpu->from_partner[i] >= 0)
			close(cpu->from_partner[i]);
		cpu->to_partner[i] = cpu->from_partner[i] = -1;
	}
	if (cpu->flag)
		munmap((void *)cpu->flag, PAGE_BYTES);
	cpu->flag = NULL;
	if (cpu->region)
		munmap(cpu->region, FAULT_PAGES * PAGE_BYTES);
	cpu->region = NULL;
	if (cpu->pinned)
		sched_setaffinity(0, sizeof(cpu->old_mask), &cpu->old_mask);
	cpu->pinned = false;
}

/* What a process row needs before its phases: a region, or a partner
 * process pinned with this thread to the CPU it runs on (so every round
 * trip is two real switches, as lmbench's lat_ctx measures them). */
static int proc_setup(struct native_cpu *cpu, char *error, size_t error_len)
{
	cpu->to_partner[0] = cpu->to_partner[1] = -1;
	cpu->from_partner[0] = cpu->from_partner[1] = -1;
	if (cpu->op == BENCH_CPU_PAGE_FAULT || cpu->op == BENCH_CPU_MMU_BATCH) {
		void *p = mmap(NULL, FAULT_PAGES * PAGE_BYTES, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			snprintf(error, error_len, "cannot map a test region: %s", strerror(errno));
			return -errno;
		}
		cpu->region = p;
		if (cpu->op == BENCH_CPU_MMU_BATCH)
			memset(p, 1,
			       BATCH_PAGES * PAGE_BYTES); /* populated: mprotect changes PTEs */
		return 0;
	}
	if (cpu->op != BENCH_CPU_CTXSW && cpu->op != BENCH_CPU_AS_SWITCH)
		return 0;
	int here = sched_getcpu();
	if (here < 0 || sched_getaffinity(0, sizeof(cpu->old_mask), &cpu->old_mask) < 0) {
		snprintf(error, error_len, "cannot read this thread's CPU: %s", strerror(errno));
		return -errno;
	}
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(here, &one);
	if (sched_setaffinity(0, sizeof(one), &one) < 0) {
		snprintf(error, error_len, "cannot pin to CPU %d: %s", here, strerror(errno));
		return -errno;
	}
	cpu->pinned = true;
	if (cpu->op == BENCH_CPU_CTXSW) {
		if (pipe2(cpu->to_partner, O_CLOEXEC) < 0 ||
		    pipe2(cpu->from_partner, O_CLOEXEC) < 0) {
			snprintf(error, error_len, "cannot make pipes: %s", strerror(errno));
			return -errno;
		}
	} else {
		void *p = mmap(NULL, PAGE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			       -1, 0);
		if (p == MAP_FAILED) {
			snprintf(error, error_len, "cannot map a shared page: %s", strerror(errno));
			return -errno;
		}
		cpu->flag = p;
		*cpu->flag = FLAG_BACK;
	}
	cpu->partner = fork(); /* inherits the pinning */
	if (cpu->partner == 0) {
		if (cpu->op == BENCH_CPU_CTXSW) {
			close(cpu->to_partner[1]);
			close(cpu->from_partner[0]);
		}
		partner_main(cpu);
	}
	if (cpu->partner < 0) {
		cpu->partner = 0;
		snprintf(error, error_len, "cannot fork a partner process: %s", strerror(errno));
		return -errno;
	}
	close(cpu->to_partner[0]);
	close(cpu->from_partner[1]);
	cpu->to_partner[0] = cpu->from_partner[1] = -1;
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
		case BENCH_CPU_SYSCALL:
			err = op_null_syscall(phase);
			break;
		case BENCH_CPU_FORK:
			err = op_fork(phase);
			break;
		case BENCH_CPU_CTXSW:
			err = op_pipe_switch(cpu, phase);
			break;
		case BENCH_CPU_PAGE_FAULT:
			err = op_page_fault(cpu, phase);
			break;
		case BENCH_CPU_AS_SWITCH:
			err = op_yield_switch(cpu, phase);
			break;
		case BENCH_CPU_MMU_BATCH:
			err = op_mprotect(cpu, phase);
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

	if (bench_cpu_info[cpu.op].proc) {
		err = proc_setup(&cpu, run->error, sizeof(run->error));
		if (err)
			goto out;
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
	if (bench_cpu_info[cpu.op].proc)
		proc_teardown(&cpu);
	if (handler_set)
		sigaction(signo, &old_action, NULL);
	if (cpu.timer_fd >= 0)
		close(cpu.timer_fd);
	free(phase);
	return err;
}
