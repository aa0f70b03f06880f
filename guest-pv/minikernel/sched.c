/* The minikernel's entry paths and preemptive round-robin scheduler on the PV periodic timer. */
#include "kernel.h"

#include "kapsel_guest/cpu.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/libc.h"
#include "kapsel_guest/mmu.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

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
 */

static uint8_t kernel_stack[32768] __attribute__((aligned(16)));
static uint8_t trap_stack[16384] __attribute__((aligned(16)));
static uint8_t upcall_stack[16384] __attribute__((aligned(16)));
static struct kapsel_trap_frame start_frame __attribute__((aligned(16)));
static uint64_t tick_period_ns;
static unsigned context_switches;

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

/* The next process to run: current unless rotate (or it cannot run), else
 * the next runnable slot after it, round robin.  Idles in the hypervisor
 * while only sleepers and waiters are left; finishes when nobody is. */
static struct process *pick(bool rotate)
{
	for (;;) {
		uint64_t now = kg_time_now_ns();
		wake_sleepers(now);
		if (!rotate && current->state == PROC_RUNNABLE)
			return current;
		unsigned start = (unsigned)(current - processes);
		for (unsigned k = 1; k <= PROC_MAX; k++) {
			struct process *p = &processes[(start + k) % PROC_MAX];
			if (p->state == PROC_RUNNABLE)
				return p;
		}
		if (!processes_alive())
			kernel_finish();
		uint64_t deadline = UINT64_MAX;
		for (unsigned i = 0; i < PROC_MAX; i++)
			if (processes[i].state == PROC_SLEEPING && processes[i].wake_ns < deadline)
				deadline = processes[i].wake_ns;
		if (deadline == UINT64_MAX)
			kg_panic("every process waits and none can wake it");
		/* Like "sti; hlt": BLOCK unmasks upcalls; mask them again after. */
		kg_hc_block(deadline);
		kg_irq_disable();
	}
}

void sched_leave(struct kapsel_trap_frame *frame, bool rotate)
{
	struct process *next = pick(rotate);
	if (next != current)
		context_switches++;
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
	kg_platform_check_generation(); /* restored: recalibrate the clock */
	if (!kg_frame_from_user(frame))
		return; /* the kernel idles or waits for the disk: pick() looks */
	sched_enter(frame);
	struct process *interrupted = current;
	interrupted->timer_ticks++;
	sched_leave(frame, true);
	if (current != interrupted)
		interrupted->preemptions++;
}

static void on_fault(struct kapsel_trap_frame *frame)
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

void sched_init(uint64_t period_ns)
{
	static const unsigned vectors[] = { 0, 1, 3, 4, 5, 6, 7, 11, 12, 13, 14, 16, 17, 19 };
	for (unsigned i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
		if (kg_trap_register(vectors[i], on_fault, trap_stack, sizeof(trap_stack)))
			kg_panic("cannot register a handler for vector %u", vectors[i]);
	if (kg_kernel_stack_set(kernel_stack, sizeof(kernel_stack)) ||
	    kg_syscall_register(on_syscall) ||
	    kg_upcall_register(upcall_stack, sizeof(upcall_stack)) || kg_timer_init(on_timer))
		kg_panic("cannot register the kernel stack, syscall entry or timer");
	tick_period_ns = period_ns;
}

void sched_start(void)
{
	current = &processes[PROC_MAX - 1]; /* so pick() starts at slot 0 */
	struct process *first = pick(true);
	current = first;
	vm_switch_to(first->as);
	start_frame = first->frame;
	start_frame.flags = KAPSEL_TRAP_FRAME_USER;
	uint64_t now = kg_time_now_ns();
	if (kg_timer_set_periodic(now + tick_period_ns, tick_period_ns))
		kg_panic("cannot start the periodic timer");
	kg_printf("kernel: scheduler starts pid %d, tick %llu us\n", first->pid,
		  (unsigned long long)(tick_period_ns / 1000));
	int rc = kg_user_enter(&start_frame);
	kg_panic("entering user mode was refused: %d", rc);
}

unsigned sched_context_switches(void)
{
	return context_switches;
}
