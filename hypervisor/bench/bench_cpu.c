/* `kapsel bench` CPU rows: what each row measures on both paths, and the arithmetic on their results. */
#include <math.h>

#include "bench.h"

const struct bench_cpu_info bench_cpu_info[BENCH_CPU_OP_COUNT] = {
	[BENCH_CPU_NULL_HYPERCALL] = {
		.name = "null-hypercall",
		.guest_op = "ABI_INFO hypercall (port I/O exit to the VMM and back)",
		.native_op = "getppid() system call",
	},
	[BENCH_CPU_TRAP] = {
		.name = "trap",
		.guest_op = "ud2 -> guest #UD handler skips it -> IRET hypercall",
		.native_op = "ud2 -> SIGILL handler skips it -> sigreturn",
	},
	[BENCH_CPU_UPCALL] = {
		.name = "upcall",
		.guest_op = "EVTCHN_SEND to itself -> upcall callback -> IRET hypercall",
		.native_op = "tgkill() to itself -> signal handler -> sigreturn",
	},
	[BENCH_CPU_TIMER] = {
		.name = "timer",
		.guest_op = "one-shot TIMER_SET, idle in BLOCK; how late",
		.native_op = "one-shot timerfd, blocked in read(); how late",
		.timer = true,
	},
	[BENCH_CPU_TIMER_PERIODIC] = {
		.name = "timer-periodic",
		.guest_op = "periodic TIMER_SET, idle in BLOCK; how late",
		.native_op = "periodic timerfd, blocked in read(); how late",
		.timer = true,
	},
	[BENCH_CPU_SYSCALL] = {
		.name = "syscall",
		.guest_op = "process: syscall -> guest kernel entry -> IRET",
		.native_op = "getppid() system call",
		.proc = true,
		.lmbench = "null call",
	},
	[BENCH_CPU_FORK] = {
		.name = "fork",
		.guest_op = "fork (new space, 2 pages copied), child exits, parent resumes",
		.native_op = "fork(), child _exit(0), waitpid()",
		.proc = true,
		.lmbench = "fork proc",
	},
	[BENCH_CPU_CTXSW] = {
		.name = "ctxsw",
		.guest_op = "one switch: syscall yield -> AS_SWITCH -> IRET to the other process",
		.native_op = "one switch: pipe ping-pong of 2 processes on one CPU (half a round trip)",
		.proc = true,
		.lmbench = "ctx sw 2p/0K",
	},
	[BENCH_CPU_PAGE_FAULT] = {
		.name = "page-fault",
		.guest_op = "write to an unmapped page -> #PF -> zero a frame, MMU_UPDATE -> IRET",
		.native_op = "first write to a page of anonymous mmap memory",
		.proc = true,
		.lmbench = "page fault",
	},
	[BENCH_CPU_AS_SWITCH] = {
		.name = "as-switch",
		.guest_op = "AS_SWITCH between two address spaces (kernel mode)",
		.native_op = "one switch: sched_yield() ping-pong of 2 processes on one CPU",
		.proc = true,
		.lmbench = "AS switch*",
	},
	[BENCH_CPU_MMU_BATCH] = {
		.name = "mmu-batch",
		.guest_op = "MMU_UPDATE of 16 pages (map, then unmap)",
		.native_op = "mprotect() of 16 populated pages (read-only, then writable)",
		.proc = true,
		.lmbench = "16 PTE upd*",
	},
};

void bench_cpu_metrics(const struct bench_cpu_sample *sample, double metrics[BENCH_M_COUNT])
{
	if (!sample->ops)
		return;
	/* A percentile is its histogram bucket's middle, which can lie past
	 * the largest value seen: never report it above the maximum. */
	uint64_t max = sample->max_ns;
	metrics[BENCH_M_LAT_P50_US] = (sample->p50_ns < max ? sample->p50_ns : max) / 1e3;
	metrics[BENCH_M_LAT_P99_US] = (sample->p99_ns < max ? sample->p99_ns : max) / 1e3;
	metrics[BENCH_M_LAT_P999_US] = (sample->p999_ns < max ? sample->p999_ns : max) / 1e3;
	metrics[BENCH_M_LAT_MAX_US] = sample->max_ns / 1e3;
	metrics[BENCH_M_LAT_MEAN_US] = sample->mean_ns / 1e3;
	if (sample->elapsed_ns) {
		metrics[BENCH_M_US_PER_OP] = sample->elapsed_ns / 1e3 / sample->ops;
		metrics[BENCH_M_IOPS] = sample->ops / (sample->elapsed_ns / 1e9);
	}
	if (sample->deliver_ops) {
		metrics[BENCH_M_DELIVER_P50_US] = sample->deliver_p50_ns / 1e3;
		metrics[BENCH_M_DELIVER_P99_US] = sample->deliver_p99_ns / 1e3;
	}
}

double bench_cpu_value(const struct bench_row *row, enum bench_path path)
{
	const struct bench_path_result *r = &row->paths[path];
	if (row->workload->kind != BENCH_KIND_CPU || r->status != BENCH_STATUS_OK)
		return NAN;
	/* The median operation, not the mean: one preemption of the vCPU or
	 * of the bench costs milliseconds and would swamp a mean of
	 * microsecond operations. */
	return r->stats[BENCH_M_LAT_P50_US].median;
}

double bench_cpu_exit_cost_us(const struct bench_results *results)
{
	for (unsigned i = 0; i < results->row_count; i++) {
		const struct bench_row *row = &results->rows[i];
		if (row->workload->kind != BENCH_KIND_CPU ||
		    row->workload->cpu_op != BENCH_CPU_NULL_HYPERCALL)
			continue;
		const struct bench_path_result *pv = &row->paths[BENCH_PATH_PV];
		if (pv->status != BENCH_STATUS_OK)
			return NAN;
		double us = bench_cpu_value(row, BENCH_PATH_PV);
		double exits = pv->stats[BENCH_M_EXITS_PER_OP].median;
		return isfinite(us) && isfinite(exits) && exits > 0 ? us / exits : NAN;
	}
	return NAN;
}
