/* cpubench.elf's shared parts: one phase's samples and how an operation is recorded (cpubench.c, cpubench_proc.c). */
#ifndef KAPSEL_EXAMPLES_CPUBENCH_H
#define KAPSEL_EXAMPLES_CPUBENCH_H

#include <stdint.h>

#include "kapsel/bench_pattern.h"

struct phase {
	uint64_t ops, elapsed_ns, errors;
	uint64_t value_sum_ns, value_max_ns, deliver_ops, early;
	uint32_t values[BENCH_HIST_BUCKETS];
	uint32_t delivers[BENCH_HIST_BUCKETS];
};

/* TSC ticks to nanoseconds at start info's tsc_khz. */
uint64_t ticks_to_ns(uint64_t ticks);

/* One operation of value_ns; deliver_ns (may be NULL): cause to handler. */
void record(struct phase *phase, uint64_t value_ns, const uint64_t *deliver_ns);

/*
 * The process rows (cpubench_proc.c), lmbench style on the PV MMU:
 * "syscall", "fork", "ctxsw", "page-fault" run in user processes under a
 * small kernel; "as-switch" and "mmu-batch" time one hypercall in kernel
 * mode.  proc_mode returns the row's index for a mode name or -1;
 * proc_setup registers the kernel entries and builds the address spaces
 * (0 or a negative KAPSEL_E*); proc_run_phase runs one phase as
 * cpubench.c's run_phase does.  The hypercalls and exits a phase makes
 * outside its operations (entering user mode, resetting the heap, the
 * entry that ends the phase) are added to *untimed for the host to take
 * off its counts.
 */
struct proc_untimed {
	uint64_t hc_iret, hc_mmu_update, hc_as_switch, exit_hlt, exit_guest_fault;
};
int proc_mode(const char *name);
int proc_setup(int row);
int proc_run_phase(int row, struct phase *phase, uint64_t duration_ns, uint64_t max_ops,
		   struct proc_untimed *untimed);

#endif
