/* The minikernel's entry paths and preemptive round-robin scheduler on the PV periodic timer. */
#include "kernel.h"

#include "kapsel_guest/cpu.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/libc.h"
#include "kapsel_guest/mmu.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"
#include "kapsel_guest/smp.h"

/*
 * Design: saved frames on one kernel stack.  Every entry from user mode
 * (syscall, exception, timer upcall) puts its frame at the top of the one
 * registered kernel stack (docs/abi.md §18.4).  The handler copies the
 * frame into the current process (sched_enter), works on that copy, and
 * at the end copies the chosen process's context into the frame
 * (sched_leave), so the library's IRET resumes that process.  The kernel
 * never sleeps on its stack with a process's state in it: a process that
 * blocks (sleep, wait) is only a state in the table, and a blocked
 * SYS_WAIT runs again from the start when it is woken.  So the kernel
 * needs no per-process kernel stack and is not preemptible: upcalls stay
 * masked in the kernel (the hypervisor masks them on entry) except while
 * it idles or waits for the disk in the BLOCK hypercall, when a timer
 * upcall arrives on its own stack, in kernel mode, and changes nothing.
 *
 * Several vCPUs (up to CPU_MAX): each has its own kernel, trap and upcall
 * stacks, its own periodic timer and its own current process; processes
 * move freely between them.  One kernel lock serializes the kernel: each
 * entry from user mode takes it, the return to user mode drops it (after
 * the resumed context is in the frame, and the process is marked running
 * on this vCPU so no other one picks it), and an idle vCPU drops it while
 * it sleeps in BLOCK.  A vCPU that idles leaves its address space first,
 * so a process's space is only ever current where the process runs.
 */

struct cpu_stacks {
	uint8_t kernel[32768] __attribute__((aligned(16)));
	uint8_t trap[16384] __attribute__((aligned(16)));
	uint8_t upcall[16384] __attribute__((aligned(16)));
	uint8_t boot[32768] __attribute__((aligned(16))); /* vCPUs 1..: kg_cpu_start's stack */
	struct kapsel_trap_frame start_frame __attribute__((aligned(16)));
};
static struct cpu_stacks stacks[CPU_MAX];
static uint64_t tick_period_ns;
static unsigned context_switches;
static unsigned cpu_count = 1;
static unsigned picks[CPU_MAX]; /* processes each vCPU switched to */
static struct kg_spinlock kernel_big_lock = KG_SPINLOCK_INIT;

unsigned this_cpu(void)
{
	unsigned cpu = kg_cpu_id();
	return cpu < CPU_MAX ? cpu : 0;
}

void kernel_lock(void)
{
	kg_spin_lock(&kernel_big_lock);
}

void kernel_unlock(void)
{
	kg_spin_unlock(&kernel_big_lock);
}

const char *vector_name(uint64_t vector)
{
	static const char *const names[20] = {
		[0] = "#DE divide error",	  [1] = "#DB debug",
		[3] = "#BP breakpoint",		  [4] = "#OF overflow",
		[5] = "#BR bound range",	  [6] = "#UD invalid opcode",
		[7] = "#NM device not available", [11] = "#NP segment not present",
		[12] = "#SS stack fault",	  [13] = "#GP general protection",
		[14] = "#PF page fault",	  [16] = "#MF x87 error",
		[17] = "#AC alignment check",	  [19] = "#XM SIMD error",
	};
	return vector < 20 && names[vector] ? names[vector] : "exception";
}

void sched_enter(struct kapsel_trap_frame *frame)
{
	current->frame = *frame;
}

static void wake_sleepers(uint64_t now_ns)
{
	for (unsigned i = 0; i < PROC_MAX; i++)
		if (processes[i].state == PROC_SLEEPING && processes[i].wake_ns <= now_ns)
			processes[i].state = PROC_RUNNABLE;
}

/* Can this vCPU take p?  Runnable and not running on another vCPU. */
static bool takeable(const struct process *p)
{
	return p->state == PROC_RUNNABLE && !p->running;
}

/* The next process to run on this vCPU: current unless rotate (or it
 * cannot run), else the next takeable slot after it, round robin.  Idles
 * in the hypervisor while nothing is takeable; finishes when no process
 * is left.  Marks the one it returns as running here. */
static struct process *pick(bool rotate)
{
	unsigned cpu = this_cpu();
	struct process *prev = current;
	if (prev && prev->running && prev->running_cpu == cpu)
		prev->running = false; /* another vCPU may take it from now on */
	for (;;) {
		uint64_t now = kg_time_now_ns();
		wake_sleepers(now);
		struct process *next = 0;
		if (!rotate && prev && takeable(prev))
			next = prev;
		unsigned start = prev ? (unsigned)(prev - processes) : PROC_MAX - 1;
		for (unsigned k = 1; !next && k <= PROC_MAX; k++) {
			struct process *p = &processes[(start + k) % PROC_MAX];
			if (takeable(p))
				next = p;
		}
		if (next) {
			next->running = true;
			next->running_cpu = cpu;
			return next;
		}
		if (!processes_alive())
			kernel_finish();
		uint64_t deadline = UINT64_MAX;
		bool elsewhere = false;
		for (unsigned i = 0; i < PROC_MAX; i++) {
			if (processes[i].state == PROC_SLEEPING && processes[i].wake_ns < deadline)
				deadline = processes[i].wake_ns;
			elsewhere |= processes[i].state == PROC_RUNNABLE && processes[i].running;
		}
		/* Another vCPU runs a process that may wake or make one: look
		 * again at the next tick. */
		if (elsewhere && (deadline == UINT64_MAX || deadline > now + tick_period_ns))
			deadline = now + tick_period_ns;
		if (deadline == UINT64_MAX)
			kg_panic("every process waits and none can wake it");
		/* Idle: no process's space stays current here, and the other
		 * vCPUs may run the kernel meanwhile. */
		vm_switch_to(0);
		kernel_unlock();
		/* Like "sti; hlt": BLOCK unmasks upcalls; mask them again after. */
		kg_hc_block(deadline);
		kg_irq_disable();
		kernel_lock();
	}
}

void sched_leave(struct kapsel_trap_frame *frame, bool rotate)
{
	struct process *next = pick(rotate);
	if (next != current) {
		context_switches++;
		picks[this_cpu()]++;
	}
	vm_switch_to(next->as);
	current = next;
	uint64_t vector = frame->vector;
	*frame = next->frame;
	frame->vector = vector;		       /* what the IRET answers */
	frame->flags = KAPSEL_TRAP_FRAME_USER; /* user mode, upcalls on */
}

void sched_block_restart(struct process *p)
{
	p->frame.rip -= 2; /* the syscall instruction (0f 05) runs again */
	p->state = PROC_WAITING;
}

static void on_timer(uint32_t port, struct kapsel_trap_frame *frame)
{
	(void)port;
	if (!kg_frame_from_user(frame))
		return; /* the kernel idles or waits for the disk: pick() looks */
	kernel_lock();
	kg_platform_check_generation(); /* restored: recalibrate the clock */
	sched_enter(frame);
	struct process *interrupted = current;
	interrupted->timer_ticks++;
	sched_leave(frame, true);
	if (current != interrupted)
		interrupted->preemptions++;
	kernel_unlock();
}

static void handle_fault(struct kapsel_trap_frame *frame)
{
	if (!kg_frame_from_user(frame))
		kg_panic("kernel: %s in the kernel at rip 0x%llx, address 0x%llx, error 0x%llx",
			 vector_name(frame->vector), (unsigned long long)frame->rip,
			 (unsigned long long)frame->cr2, (unsigned long long)frame->error_code);
	sched_enter(frame);
	struct process *p = current;
	if (frame->vector == 14 &&
	    vm_handle_fault(p, frame->cr2, frame->error_code & 2, frame->error_code & 0x10)) {
		sched_leave(frame, false);
		return;
	}
	if (frame->vector == 14)
		kg_printf("kernel: killed pid %d (%s): %s %s 0x%llx at rip 0x%llx\n", p->pid,
			  p->program->name, vector_name(14),
			  frame->error_code & 0x10 ? "executing"
			  : frame->error_code & 2  ? "writing"
						   : "reading",
			  (unsigned long long)frame->cr2, (unsigned long long)frame->rip);
	else
		kg_printf("kernel: killed pid %d (%s): %s at rip 0x%llx\n", p->pid,
			  p->program->name, vector_name(frame->vector),
			  (unsigned long long)frame->rip);
	process_end(p, true, frame->vector, frame->rip, frame->vector == 14 ? frame->cr2 : 0);
	sched_leave(frame, true);
}

static void on_fault(struct kapsel_trap_frame *frame)
{
	if (kg_frame_from_user(frame))
		kernel_lock();
	handle_fault(frame); /* panics on a fault in the kernel */
	kernel_unlock();
}

static void on_syscall_locked(struct kapsel_trap_frame *frame)
{
	kernel_lock();
	on_syscall(frame);
	kernel_unlock();
}

/* This vCPU's trap handlers, kernel stack and timer. */
static void cpu_init(void)
{
	static const unsigned vectors[] = { 0, 1, 3, 4, 5, 6, 7, 11, 12, 13, 14, 16, 17, 19 };
	struct cpu_stacks *st = &stacks[this_cpu()];
	for (unsigned i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
		if (kg_trap_register(vectors[i], on_fault, st->trap, sizeof(st->trap)))
			kg_panic("cannot register a handler for vector %u", vectors[i]);
	if (kg_kernel_stack_set(st->kernel, sizeof(st->kernel)) || kg_timer_init(on_timer))
		kg_panic("vCPU %u: cannot register the kernel stack or timer", this_cpu());
}

void sched_init(uint64_t period_ns)
{
	struct cpu_stacks *st = &stacks[0];
	if (kg_upcall_register(st->upcall, sizeof(st->upcall)) ||
	    kg_syscall_register(on_syscall_locked))
		kg_panic("cannot register the upcall callback or syscall entry");
	cpu_init();
	tick_period_ns = period_ns;
}

/* Enter the first process this vCPU picks; does not return. */
__attribute__((noreturn)) static void run_first(void)
{
	kernel_lock();
	struct process *first = pick(true);
	current = first;
	picks[this_cpu()]++;
	vm_switch_to(first->as);
	struct kapsel_trap_frame *start = &stacks[this_cpu()].start_frame;
	*start = first->frame;
	start->flags = KAPSEL_TRAP_FRAME_USER;
	uint64_t now = kg_time_now_ns();
	if (kg_timer_set_periodic(now + tick_period_ns, tick_period_ns))
		kg_panic("cannot start the periodic timer");
	kg_printf("kernel: vCPU %u starts pid %d, tick %llu us\n", this_cpu(), first->pid,
		  (unsigned long long)(tick_period_ns / 1000));
	kernel_unlock();
	int rc = kg_user_enter(start);
	kg_panic("entering user mode was refused: %d", rc);
}

static void secondary_main(void *arg)
{
	(void)arg;
	cpu_init();
	run_first();
}

void sched_start(void)
{
	cpu_count = kg_smp_available() ? kg_cpu_count() : 1;
	if (cpu_count > CPU_MAX)
		cpu_count = CPU_MAX;
	kg_printf("kernel: scheduling on %u vCPU%s\n", cpu_count, cpu_count > 1 ? "s" : "");
	for (unsigned cpu = 1; cpu < cpu_count; cpu++)
		if (kg_cpu_start(cpu, secondary_main, 0, stacks[cpu].boot,
				 sizeof(stacks[cpu].boot)))
			kg_panic("cannot start vCPU %u", cpu);
	run_first();
}

unsigned sched_context_switches(void)
{
	return context_switches;
}

unsigned sched_cpu_count(void)
{
	return cpu_count;
}

unsigned sched_cpu_picks(unsigned cpu)
{
	return cpu < CPU_MAX ? picks[cpu] : 0;
}
