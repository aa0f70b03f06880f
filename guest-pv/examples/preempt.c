/* Example guest: two compute threads with no hypercalls, switched by a periodic timer upcall. */
#include "kapsel_guest/cpu.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

/*
 * Command line: preempt [switches=N] [period_us=N] [storm_ms=N]
 *
 * Thread 0 (main) and thread 1 each count in a loop that makes no
 * hypercall.  A periodic vCPU timer interrupts whichever runs; the upcall
 * handler saves the interrupted context (the frame) into that thread's
 * slot and puts the other thread's context into the frame, so the IRET
 * resumes the other thread.  After N switches main stops the timer and
 * exits 0 only if both threads made progress in most of their slices.
 * It prints "switch K" every 50 switches, so a test can save the VM
 * mid-run and see the count go on after a restore.
 *
 * storm_ms=N (hostile): for N ms of guest time, a 100 us periodic timer
 * plus an event channel whose handler signals itself again on every
 * upcall, so upcalls follow each other as fast as the host delivers them;
 * the hypervisor must stay responsive (its control socket answers).
 */

static uint8_t upcall_stack[16384] __attribute__((aligned(16)));
static uint8_t thread1_stack[65536] __attribute__((aligned(16)));

static struct kapsel_trap_frame contexts[2];
static volatile unsigned current;
static volatile uint64_t switches;
/* Switching stops once this many are done and thread 0 runs again, so the
 * count main prints does not depend on ticks after its loop ends. */
static uint64_t switch_target;
static volatile uint64_t progress[2];
static uint64_t progress_at_switch[2];
static volatile uint64_t slices_with_progress[2], slices[2];
static volatile uint64_t report_every = 50, next_report = 50;
/* Early expiries: the nth timer event came before first + (n - 1) *
 * period on the Kapsel clock (beyond a tolerance).  Missed periods are
 * skipped and merged events run the handler once, so a correct timer never
 * gets ahead of that schedule, across a save and restore too. */
static uint64_t first_deadline_ns, period_ns_global, timer_events;
static uint64_t early_fires, worst_early_ns, tolerance_ns;
static volatile uint64_t restores_seen;

/* Copy the resumable context (not vector and flags) between frames. */
static void copy_context(struct kapsel_trap_frame *to, const struct kapsel_trap_frame *from)
{
	uint64_t vector = to->vector, flags = to->flags, error_code = to->error_code, cr2 = to->cr2;
	*to = *from;
	to->vector = vector;
	to->flags = flags;
	to->error_code = error_code;
	to->cr2 = cr2;
}

static void on_timer(uint32_t port, struct kapsel_trap_frame *frame)
{
	(void)port;
	/* Restored or migrated: the TSC moved, the library recalibrates. */
	if (kg_platform_check_generation())
		restores_seen++;
	/* Deadlines are on the Kapsel clock: read it from the host (one
	 * exit), since a TSC-derived clock may drift from it under TCG. */
	struct kapsel_time_info time;
	uint64_t now = kg_hc_time_info(&time) == 0 ? time.now_ns : kg_time_now_ns();
	uint64_t due = first_deadline_ns + timer_events * period_ns_global;
	timer_events++;
	if (now + tolerance_ns < due) {
		early_fires++;
		if (due - now > worst_early_ns)
			worst_early_ns = due - now;
	}
	if (switches >= switch_target && current == 0)
		return;
	unsigned from = current, to = from ^ 1u;
	slices[from]++;
	if (progress[from] != progress_at_switch[from])
		slices_with_progress[from]++;
	progress_at_switch[from] = progress[from];
	copy_context(&contexts[from], frame);
	copy_context(frame, &contexts[to]);
	current = to;
	switches++;
}

__attribute__((noreturn)) static void thread1(void)
{
	for (;;)
		progress[1]++;
}

static volatile uint64_t storm_upcalls, storm_events, storm_end_ns;

/* Signals itself again until the storm ends: the guest floods the host
 * with sends while the timer keeps interrupting it. */
static void on_storm_event(uint32_t port, struct kapsel_trap_frame *frame)
{
	(void)frame;
	storm_events++;
	if (kg_time_now_ns() < storm_end_ns)
		kg_hc_evtchn_send(port);
}

static void on_storm_timer(uint32_t port, struct kapsel_trap_frame *frame)
{
	(void)port;
	(void)frame;
	storm_upcalls++;
}

static int storm(uint64_t duration_ms)
{
	int64_t port = kg_hc_evtchn_alloc();
	kg_assert(port >= 0);
	kg_assert(kg_upcall_register(upcall_stack, sizeof(upcall_stack)) == 0);
	kg_assert(kg_timer_init(on_storm_timer) == 0);
	kg_evtchn_set_handler((uint32_t)port, on_storm_event);
	kg_assert(kg_timer_set_periodic(kg_time_now_ns(), KAPSEL_TIMER_MIN_PERIOD_NS) == 0);
	kg_printf("storm: running for %llu ms\n", (unsigned long long)duration_ms);
	storm_end_ns = kg_time_now_ns() + duration_ms * 1000000ull;
	kg_irq_enable();
	kg_hc_evtchn_send((uint32_t)port);
	while (kg_time_now_ns() < storm_end_ns + 100000000ull)
		progress[0]++;
	kg_irq_disable();
	kg_assert(kg_timer_stop() == 0);
	kg_printf("storm: %llu timer upcalls, %llu events, main loop %llu\n",
		  (unsigned long long)storm_upcalls, (unsigned long long)storm_events,
		  (unsigned long long)progress[0]);
	return storm_upcalls && storm_events > 1 && progress[0] ? 0 : 1;
}

static uint64_t option(const char *key, uint64_t fallback)
{
	char word[24];
	uint64_t value;
	if (kg_cmdline_get(key, word, sizeof(word)) < 0 || kg_parse_u64(word, &value) < 0)
		return fallback;
	return value;
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	kg_assert(kg_platform_is_kapsel());
	if (!kg_cpu_available()) {
		kg_printf("no PV CPU in this hypervisor\n");
		return 2;
	}
	uint64_t target = option("switches", 40);
	switch_target = target;
	uint64_t period_ns = option("period_us", 2000) * 1000;
	uint64_t storm_ms = option("storm_ms", 0);
	if (storm_ms)
		return storm(storm_ms);

	/* Thread 1 starts at its function with an empty stack (rsp + 8
	 * 16-byte aligned, as after a call). */
	contexts[1].rip = (uint64_t)(uintptr_t)thread1;
	contexts[1].rsp = (uint64_t)(uintptr_t)(thread1_stack + sizeof(thread1_stack)) - 8;
	contexts[1].rflags = 0x2;
	contexts[1].cs = 0x23;
	contexts[1].ss = 0x1b;

	kg_assert(kg_upcall_register(upcall_stack, sizeof(upcall_stack)) == 0);
	kg_assert(kg_timer_init(on_timer) == 0);
	tolerance_ns = period_ns / 4;
	period_ns_global = period_ns;
	struct kapsel_time_info time;
	kg_assert(kg_hc_time_info(&time) == 0);
	first_deadline_ns = time.now_ns + period_ns;
	kg_assert(kg_timer_set_periodic(first_deadline_ns, period_ns) == 0);
	kg_printf("preempt: %llu switches, period %llu us\n", (unsigned long long)target,
		  (unsigned long long)(period_ns / 1000));
	kg_irq_enable();
	while (switches < target) {
		progress[0]++;
		if (switches >= next_report) {
			/* Printing is a hypercall; only the main thread does it,
			 * with upcalls off so the console write is not split. */
			unsigned long flags = kg_irq_save();
			kg_printf("switch %llu\n", (unsigned long long)switches);
			next_report += report_every;
			kg_irq_restore(flags);
		}
	}
	kg_irq_disable();
	kg_assert(kg_timer_stop() == 0);
	kg_printf("preempt: %llu switches; thread 0 progressed in %llu of %llu slices (%llu), thread 1 in %llu of %llu (%llu)\n",
		  (unsigned long long)switches, (unsigned long long)slices_with_progress[0],
		  (unsigned long long)slices[0], (unsigned long long)progress[0],
		  (unsigned long long)slices_with_progress[1], (unsigned long long)slices[1],
		  (unsigned long long)progress[1]);
	kg_printf("preempt: %llu early timer expiries (worst %llu us early), %llu restores\n",
		  (unsigned long long)early_fires, (unsigned long long)(worst_early_ns / 1000),
		  (unsigned long long)restores_seen);
	if (early_fires) {
		kg_printf("preempt: the timer fired early\n");
		return 1;
	}
	/* Both ran, and each in most of its slices (a slice can be empty when
	 * the host is slow: the timer skips missed periods, not replays them). */
	if (!progress[0] || !progress[1] || slices_with_progress[0] * 2 < slices[0] ||
	    slices_with_progress[1] * 2 < slices[1]) {
		kg_printf("preempt: a thread starved\n");
		return 1;
	}
	kg_printf("preempt ok\n");
	return 0;
}
