/* Bench guest: times one PV CPU operation (null hypercall, trap, upcall, one-shot or periodic timer) and reports BENCH lines to `kapsel bench`. */
#include "kapsel_guest/arch.h"
#include "kapsel_guest/cpu.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

#include "kapsel/bench_pattern.h"

#include "args.h"
#include "bench_sync.h"
#include "cpubench.h"

/*
 * Command line (key=value; numbers decimal or 0x-hex):
 *   mode=null-hypercall  ABI_INFO, the cheapest call: one exit to the VMM
 *   mode=trap            ud2 -> #UD handler, which skips it -> IRET
 *   mode=upcall          EVTCHN_SEND on an unbound (loopback) channel ->
 *                        upcall callback -> IRET, upcalls enabled
 *   mode=timer           one-shot TIMER_SET delay_us ahead, idle in BLOCK
 *                        until the timer's upcall; the value is how late
 *                        the handler ran after the deadline
 *   mode=timer-periodic  one periodic timer (period delay_us), idle in
 *                        BLOCK; how late each expiry's handler ran
 *   mode=syscall|fork|ctxsw|page-fault|as-switch|mmu-batch
 *                        the process rows on the PV MMU (cpubench_proc.c)
 *   warmup_ops=N ops=N   fixed operation counts (ops > 0 wins), or
 *   warmup_ms=N runtime_ms=N  time-based phases
 *   delay_us=N           timer rows: the one-shot delay or the period
 *                        (default 1000; at least 100 for periodic)
 *   sync=1               the handshake of bench_sync.h around the phase
 *
 * Output: "BENCH key=value" lines; after the "end" mark ops, elapsed_ns,
 * the value histogram's lat_p50_ns/lat_p99_ns/lat_p999_ns/lat_max_ns/
 * lat_mean_ns, for traps and upcalls deliver_p50_ns/deliver_p99_ns (cause
 * to handler entry), for timers early (expiries seen before their
 * deadline, counted as 0 late), untimed_hc_NAME=N for the hypercalls the
 * measurement itself made in the window (TIME_INFO to read the clock,
 * TIMER_SET to start and stop the periodic timer), which the host takes
 * off the exit counts, and done=1.  Exit code 0, 3 when the hypervisor offers no PV CPU, 2 for a
 * bad command line, 1 for other failures.
 *
 * Times come from the TSC (kg_rdtsc, start info tsc_khz).  Timer lateness
 * is against the Kapsel clock the host arms the timer on: the handler
 * reads the TSC first and then TIME_INFO, and converts back, so only
 * the short interval between the two depends on the TSC rate.
 */

#define EXIT_BAD_ARGS 2
#define EXIT_NO_PV_CPU 3
#define UD2_BYTES 2u
#define VECTOR_UD 6u
#define DEFAULT_DELAY_US 1000u
#define DELIVERY_TIMEOUT_NS 5000000000ull
#define SAMPLE_RING 64u

enum mode {
	MODE_NULL_HYPERCALL,
	MODE_TRAP,
	MODE_UPCALL,
	MODE_TIMER,
	MODE_TIMER_PERIODIC
};

static uint8_t handler_stack[16384] __attribute__((aligned(16)));
static enum mode mode;
static int proc_row = -1; /* a process row instead of mode */
static struct proc_untimed proc_untimed;
static uint64_t tsc_khz, delay_ns;
static uint32_t loop_port;
static struct phase warmup, measured;

/* Written by the handlers (they run on this vCPU, between our instructions). */
static volatile uint64_t handler_tsc, handler_count, handler_bad_vector;
/* Timer expiries: the handler's lateness samples, drained by the main loop. */
static volatile int64_t timer_late_ns[SAMPLE_RING];
static volatile uint64_t timer_produced, untimed_time_info, untimed_timer_set;
static volatile uint64_t oneshot_deadline_ns;
static uint64_t periodic_taken; /* timer samples the main loop has taken */

uint64_t ticks_to_ns(uint64_t ticks)
{
	return tsc_khz ? (uint64_t)(((unsigned __int128)ticks * 1000000u) / tsc_khz) : 0;
}

void record(struct phase *phase, uint64_t value_ns, const uint64_t *deliver_ns)
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

static void on_ud(struct kapsel_trap_frame *frame)
{
	handler_tsc = kg_rdtsc();
	if (frame->vector != VECTOR_UD)
		handler_bad_vector = frame->vector + 1;
	frame->rip += UD2_BYTES; /* resume after the ud2 */
	handler_count++;
}

static void on_loopback(uint32_t port, struct kapsel_trap_frame *frame)
{
	(void)port;
	(void)frame;
	handler_tsc = kg_rdtsc();
	handler_count++;
}

/* The deadline that fired: the one-shot's, or the periodic timer's last
 * (the host has armed the next one already and skips missed periods). */
static uint64_t fired_deadline_ns(void)
{
	if (mode == MODE_TIMER)
		return oneshot_deadline_ns;
	uint64_t next = kg_timer_next_deadline_ns();
	return next == KAPSEL_TIMER_STOP || next < delay_ns ? 0 : next - delay_ns;
}

static void on_timer(uint32_t port, struct kapsel_trap_frame *frame)
{
	(void)port;
	(void)frame;
	uint64_t entered = kg_rdtsc();
	uint64_t deadline = fired_deadline_ns();
	struct kapsel_time_info now;
	int64_t late = 0;
	if (kg_hc_time_info(&now) == 0) {
		uint64_t back = now.tsc > entered ? ticks_to_ns(now.tsc - entered) : 0;
		late = (int64_t)(now.now_ns - back - deadline);
	}
	untimed_time_info++;
	timer_late_ns[timer_produced % SAMPLE_RING] = late;
	timer_produced++;
	handler_count++;
}

/* ---- Operations ---------------------------------------------------------- */

static int op_null_hypercall(struct phase *phase)
{
	struct kapsel_abi_info info;
	uint64_t start = kg_rdtsc();
	int64_t rc = kg_hc_abi_info(&info);
	uint64_t end = kg_rdtsc();
	if (rc < 0)
		return (int)rc;
	record(phase, ticks_to_ns(end - start), 0);
	return 0;
}

/* Wait until the handler ran once more than before (it should already). */
static int await_handler(uint64_t before)
{
	uint64_t deadline = kg_time_now_ns() + DELIVERY_TIMEOUT_NS;
	while (handler_count == before) {
		if (kg_time_now_ns() > deadline)
			return -KAPSEL_ETIMEDOUT;
		kg_cpu_relax();
	}
	return handler_bad_vector ? -KAPSEL_EIO : 0;
}

static int op_trap(struct phase *phase)
{
	uint64_t before = handler_count;
	uint64_t start = kg_rdtsc();
	__asm__ volatile("ud2" ::: "memory");
	uint64_t end = kg_rdtsc();
	int err = await_handler(before);
	if (err)
		return err;
	uint64_t deliver = ticks_to_ns(handler_tsc - start);
	record(phase, ticks_to_ns(end - start), &deliver);
	return 0;
}

static int op_upcall(struct phase *phase)
{
	uint64_t before = handler_count;
	uint64_t start = kg_rdtsc();
	int64_t rc = kg_hc_evtchn_send(loop_port);
	uint64_t end = kg_rdtsc();
	if (rc < 0)
		return (int)rc;
	int err = await_handler(before);
	if (err)
		return err;
	/* Each hypercall return is a delivery point: the callback ran before
	 * the send returned, so end already includes the IRET. */
	uint64_t deliver = ticks_to_ns(handler_tsc - start);
	record(phase, ticks_to_ns(end - start), &deliver);
	return 0;
}

/* Idle in BLOCK until the timer handler produced sample number `want`. */
static int await_timer(uint64_t want)
{
	uint64_t give_up = kg_time_now_ns() + delay_ns + DELIVERY_TIMEOUT_NS;
	while (timer_produced < want) {
		if (kg_time_now_ns() > give_up)
			return -KAPSEL_ETIMEDOUT;
		kg_hc_block(give_up);
	}
	return 0;
}

static void take_timer_sample(struct phase *phase, uint64_t index)
{
	int64_t late = timer_late_ns[index % SAMPLE_RING];
	if (late < 0) {
		phase->early++;
		late = 0;
	}
	record(phase, (uint64_t)late, 0);
}

static int op_timer(struct phase *phase)
{
	uint64_t want = timer_produced + 1;
	struct kapsel_time_info now;
	if (kg_hc_time_info(&now) < 0)
		return -KAPSEL_EIO;
	untimed_time_info++;
	oneshot_deadline_ns = now.now_ns + delay_ns;
	int err = kg_timer_set_oneshot(oneshot_deadline_ns);
	if (err)
		return err;
	err = await_timer(want);
	if (err)
		return err;
	take_timer_sample(phase, want - 1);
	return 0;
}

static int op_timer_periodic(struct phase *phase)
{
	int err = await_timer(periodic_taken + 1);
	if (err)
		return err;
	/* Expiries that came while we were away are samples too. */
	if (timer_produced - periodic_taken > SAMPLE_RING)
		periodic_taken = timer_produced - SAMPLE_RING;
	take_timer_sample(phase, periodic_taken++);
	return 0;
}

/* ---- Phases -------------------------------------------------------------- */

/* A phase runs with upcalls on and, for the periodic row, its timer armed
 * (stopped between phases, so nothing fires while the host reads counters). */
static int phase_begin(void)
{
	if (mode == MODE_TIMER_PERIODIC) {
		untimed_timer_set++;
		int err = kg_timer_set_periodic(kg_time_now_ns() + delay_ns, delay_ns);
		if (err)
			return err;
	}
	if (mode != MODE_NULL_HYPERCALL && mode != MODE_TRAP)
		kg_irq_enable();
	/* An expiry left pending by the last stop is not this phase's. */
	periodic_taken = timer_produced;
	return 0;
}

static void phase_end(void)
{
	if (mode == MODE_TIMER_PERIODIC) {
		untimed_timer_set++;
		kg_timer_stop();
	}
	kg_irq_disable();
}

static int run_phase(struct phase *phase, uint64_t duration_ns, uint64_t max_ops)
{
	if (proc_row >= 0)
		return proc_run_phase(proc_row, phase, duration_ns, max_ops, &proc_untimed);
	memset(phase, 0, sizeof(*phase));
	int err = phase_begin();
	uint64_t start = kg_time_now_ns();
	while (!err && (max_ops ? phase->ops < max_ops : kg_time_now_ns() - start < duration_ns)) {
		switch (mode) {
		case MODE_NULL_HYPERCALL:
			err = op_null_hypercall(phase);
			break;
		case MODE_TRAP:
			err = op_trap(phase);
			break;
		case MODE_UPCALL:
			err = op_upcall(phase);
			break;
		case MODE_TIMER:
			err = op_timer(phase);
			break;
		case MODE_TIMER_PERIODIC:
			err = op_timer_periodic(phase);
			break;
		}
	}
	phase->elapsed_ns = kg_time_now_ns() - start;
	phase_end();
	if (err)
		phase->errors++;
	return err;
}

static int setup(void)
{
	int err = 0;
	if (proc_row >= 0)
		return proc_setup(proc_row);
	switch (mode) {
	case MODE_NULL_HYPERCALL:
		return 0;
	case MODE_TRAP:
		return kg_trap_register(VECTOR_UD, on_ud, handler_stack, sizeof(handler_stack));
	case MODE_UPCALL: {
		int64_t port = kg_hc_evtchn_alloc();
		if (port < 0)
			return (int)port;
		loop_port = (uint32_t)port;
		kg_evtchn_set_handler(loop_port, on_loopback);
		return kg_upcall_register(handler_stack, sizeof(handler_stack));
	}
	case MODE_TIMER:
	case MODE_TIMER_PERIODIC:
		err = kg_upcall_register(handler_stack, sizeof(handler_stack));
		return err ? err : kg_timer_init(on_timer);
	}
	return -KAPSEL_EINVAL;
}

static const char *const mode_names[] = {
	[MODE_NULL_HYPERCALL] = "null-hypercall",
	[MODE_TRAP] = "trap",
	[MODE_UPCALL] = "upcall",
	[MODE_TIMER] = "timer",
	[MODE_TIMER_PERIODIC] = "timer-periodic",
};

static int parse_mode(const char *name)
{
	proc_row = proc_mode(name);
	if (proc_row >= 0)
		return 0;
	for (unsigned i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++) {
		if (name && strcmp(name, mode_names[i]) == 0) {
			mode = (enum mode)i;
			return 0;
		}
	}
	return -1;
}

static void report(const struct phase *phase, uint64_t time_info_calls, uint64_t timer_set_calls,
		   const struct proc_untimed *untimed)
{
	uint64_t ops = phase->ops;
	kg_printf("BENCH ops=%llu elapsed_ns=%llu errors=%llu warmup_ops=%llu warmup_errors=%llu\n",
		  (unsigned long long)ops, (unsigned long long)phase->elapsed_ns,
		  (unsigned long long)phase->errors, (unsigned long long)warmup.ops,
		  (unsigned long long)warmup.errors);
	kg_printf("BENCH lat_p50_ns=%llu lat_p99_ns=%llu lat_p999_ns=%llu lat_max_ns=%llu lat_mean_ns=%llu\n",
		  (unsigned long long)bench_hist_percentile(phase->values, ops, 5000),
		  (unsigned long long)bench_hist_percentile(phase->values, ops, 9900),
		  (unsigned long long)bench_hist_percentile(phase->values, ops, 9990),
		  (unsigned long long)phase->value_max_ns,
		  (unsigned long long)(ops ? phase->value_sum_ns / ops : 0));
	if (phase->deliver_ops)
		kg_printf("BENCH deliver_ops=%llu deliver_p50_ns=%llu deliver_p99_ns=%llu\n",
			  (unsigned long long)phase->deliver_ops,
			  (unsigned long long)bench_hist_percentile(phase->delivers,
								    phase->deliver_ops, 5000),
			  (unsigned long long)bench_hist_percentile(phase->delivers,
								    phase->deliver_ops, 9900));
	if (proc_row >= 0)
		kg_printf("BENCH untimed_hc_iret=%llu untimed_hc_mmu_update=%llu untimed_hc_as_switch=%llu untimed_exit_hlt=%llu untimed_exit_guest_fault=%llu\n",
			  (unsigned long long)untimed->hc_iret,
			  (unsigned long long)untimed->hc_mmu_update,
			  (unsigned long long)untimed->hc_as_switch,
			  (unsigned long long)untimed->exit_hlt,
			  (unsigned long long)untimed->exit_guest_fault);
	kg_printf("BENCH early=%llu untimed_hc_time_info=%llu untimed_hc_timer_set=%llu done=1\n",
		  (unsigned long long)phase->early, (unsigned long long)time_info_calls,
		  (unsigned long long)timer_set_calls);
}

int main(int argc, char **argv)
{
	if (!kg_platform_is_kapsel()) {
		kg_printf("BENCH error=not-kapsel\n");
		return 1;
	}
	args_init(argc, argv, 0);
	if (parse_mode(args_text("mode")) < 0) {
		kg_printf("BENCH error=bad-argument argument=mode\n");
		return EXIT_BAD_ARGS;
	}
	uint64_t warmup_ops = args_number("warmup_ops", 0), ops = args_number("ops", 0);
	uint64_t warmup_ms = args_number("warmup_ms", 20),
		 runtime_ms = args_number("runtime_ms", 100);
	delay_ns = args_number("delay_us", DEFAULT_DELAY_US) * 1000u;
	if (delay_ns == 0 ||
	    (mode == MODE_TIMER_PERIODIC && delay_ns < KAPSEL_TIMER_MIN_PERIOD_NS) ||
	    delay_ns > 1000000000ull) {
		kg_printf("BENCH error=bad-parameters argument=delay_us\n");
		return EXIT_BAD_ARGS;
	}
	tsc_khz = kg_platform_start_info()->tsc_khz;
	if (!tsc_khz) {
		kg_printf("BENCH error=no-tsc-frequency\n");
		return 1;
	}
	bench_sync_setup(args_number("sync", 0));
	if (!kg_cpu_available()) {
		kg_printf("BENCH error=no-device what=pv-cpu\n");
		return EXIT_NO_PV_CPU;
	}
	const char *mode_text = args_text("mode");
	int err = setup();
	if (err == -KAPSEL_ENOSYS && proc_row >= 0) {
		kg_printf("BENCH error=no-device what=pv-mmu\n");
		return EXIT_NO_PV_CPU;
	}
	if (err) {
		kg_printf("BENCH error=setup-failed mode=%s status=%d\n", mode_text, err);
		return 1;
	}
	kg_printf("BENCH ready=1 mode=%s delay_ns=%llu tsc_khz=%llu\n", mode_text,
		  (unsigned long long)delay_ns, (unsigned long long)tsc_khz);

	err = run_phase(&warmup, warmup_ms * 1000000ull, ops ? warmup_ops : 0);
	if (ops && !warmup_ops)
		memset(&warmup, 0, sizeof(warmup));
	if (!err) {
		bench_sync_mark("start");
		uint64_t time_info_before = untimed_time_info, timer_set_before = untimed_timer_set;
		memset(&proc_untimed, 0, sizeof(proc_untimed));
		err = run_phase(&measured, runtime_ms * 1000000ull, ops);
		uint64_t time_info_calls = untimed_time_info - time_info_before;
		uint64_t timer_set_calls = untimed_timer_set - timer_set_before;
		bench_sync_mark("end");
		report(&measured, time_info_calls, timer_set_calls, &proc_untimed);
	}
	if (err) {
		kg_printf("BENCH error=%s mode=%s status=%d\n",
			  err == -KAPSEL_ETIMEDOUT ? "handler-never-ran" : "operation-failed",
			  mode_text, err);
		return 1;
	}
	return 0;
}
