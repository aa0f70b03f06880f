/* Example guest: processes on two vCPUs at once, and a TLB shootdown: a page protected on one vCPU stops the other's writes at once. */
#include "kapsel_guest/cpu.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/mmu.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"
#include "kapsel_guest/smp.h"

/*
 * A kernel of two vCPUs (docs/abi.md §18 and §19):
 *
 *   1. each vCPU runs its own process in its own address space, at the
 *      same time; the processes count in their data page and make a tick
 *      syscall every 2^14 counts, which the kernel of *that* vCPU checks;
 *   2. shootdown: vCPU 1 runs a process that writes a counter as fast as
 *      it can into a page of a space; vCPU 0 makes that page read-only
 *      (MMU_UPDATE) while it runs.  Once the call returns, the counter
 *      must not move (vCPU 1's TLB was flushed before the call returned),
 *      and vCPU 1's process takes the write fault;
 *   3. a space a vCPU runs on cannot be destroyed (-EBUSY) until it
 *      leaves it.
 *
 * Prints one line per check and exits 0 only if every one held.
 */

#define USER_CODE KAPSEL_USER_VA_MIN
#define USER_DATA (KAPSEL_USER_VA_MIN + 0x10000)
#define USER_STACK_TOP (KAPSEL_USER_VA_MIN + 0x80000)

#define SYS_EXIT 0
#define SYS_TICK 1 /* rdi = the count; returns 0 to stop */

#define TICKS 40u
#define TICK_MASK 0x3fffull /* a tick every 2^14 counts */

/* The user program: rdi = 0 counts with ticks, then exits; rdi = 1 counts
 * without end (until a fault ends it). */
__asm__(".pushsection .text.user, \"ax\"\n"
	".balign 4096\n"
	".globl mmusmp_program\n"
	"mmusmp_program:\n"
	"	mov $0x"
	"8000010000, %rbx\n"
	"	cmp $1, %rdi; je 20f\n"
	"10:	incq (%rbx); mov (%rbx), %rax; and $0x3fff, %eax; jnz 10b\n"
	"	mov $1, %eax; mov (%rbx), %rdi; syscall\n"
	"	test %rax, %rax; jnz 10b\n"
	"	mov (%rbx), %rdi; mov $0, %eax; syscall\n"
	"	ud2\n"
	"20:	incq (%rbx); jmp 20b\n"
	".balign 4096\n"
	".popsection\n");
extern const uint8_t mmusmp_program[];

/* Per vCPU: its stacks, its process's pages, how its last run ended. */
struct cpu_state {
	uint8_t handler_stack[16384] __attribute__((aligned(16)));
	uint8_t kernel_stack[16384] __attribute__((aligned(16)));
	uint8_t data[4096] __attribute__((aligned(4096)));
	uint8_t stack[4096] __attribute__((aligned(4096)));
	struct kapsel_trap_frame frame __attribute__((aligned(16)));
	void *resume[5];
	int as;
	unsigned ticks;
	bool ticks_ok;
	uint64_t end_vector, end_value, end_cr2, end_error;
};
static struct cpu_state cpus[2];
static uint8_t cpu1_stack[65536] __attribute__((aligned(16)));

/* Shared between the vCPUs (phase handshakes). */
static volatile int phase1_done, shoot_ready, shoot_faulted, left_space, cpu1_done;
static int shared_as;
static int failures;

static uint64_t gpa(const void *p)
{
	return (uint64_t)(uintptr_t)p;
}

static void check(bool ok, const char *what)
{
	kg_printf("mmusmp: %s: %s\n", what, ok ? "ok" : "WRONG");
	if (!ok)
		__atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);
}

static struct cpu_state *me(void)
{
	return &cpus[kg_cpu_id() & 1];
}

static void end_run(struct kapsel_trap_frame *frame, uint64_t value)
{
	struct cpu_state *c = me();
	c->end_vector = frame->vector;
	c->end_value = value;
	c->end_cr2 = frame->cr2;
	c->end_error = frame->error_code;
	__builtin_longjmp(c->resume, 1);
}

static void on_syscall(struct kapsel_trap_frame *frame)
{
	struct cpu_state *c = me();
	if (frame->rax == SYS_TICK) {
		c->ticks++;
		/* The count is this vCPU's process's, in its own page. */
		if (frame->rdi != ((uint64_t)c->ticks << 14) ||
		    *(volatile uint64_t *)c->data != frame->rdi)
			c->ticks_ok = false;
		frame->rax = c->ticks < TICKS;
		return;
	}
	end_run(frame, frame->rax == SYS_EXIT ? frame->rdi : 0xdead);
}

static void on_fault(struct kapsel_trap_frame *frame)
{
	if (!kg_frame_from_user(frame))
		kg_panic("vCPU %u: kernel-mode vector %llu at 0x%llx", kg_cpu_id(),
			 (unsigned long long)frame->vector, (unsigned long long)frame->rip);
	end_run(frame, frame->error_code);
}

/* Map the program, this vCPU's data page and stack into space as. */
static void map_process(struct cpu_state *c, int as)
{
	struct kapsel_mmu_op batch[] = {
		{ .va = USER_CODE,
		  .gpa = gpa(mmusmp_program),
		  .op = KAPSEL_MMU_MAP,
		  .prot = KAPSEL_PROT_EXEC },
		{ .va = USER_DATA,
		  .gpa = gpa(c->data),
		  .op = KAPSEL_MMU_MAP,
		  .prot = KAPSEL_PROT_WRITE },
		{ .va = USER_STACK_TOP - 4096,
		  .gpa = gpa(c->stack),
		  .op = KAPSEL_MMU_MAP,
		  .prot = KAPSEL_PROT_WRITE },
	};
	size_t n = sizeof(batch) / sizeof(batch[0]);
	if (kg_mmu_update(as, batch, n) != n)
		kg_panic("vCPU %u: mapping its process failed", kg_cpu_id());
}

/* Run the program (mode) in space as on this vCPU until it exits or faults. */
static void run_user(struct cpu_state *c, int as, uint64_t mode)
{
	if (kg_as_switch(as) != 0)
		kg_panic("vCPU %u: AS_SWITCH(%d) refused", kg_cpu_id(), as);
	for (unsigned i = 0; i < sizeof(c->frame) / 8; i++)
		((uint64_t *)&c->frame)[i] = 0;
	c->frame.vector = KAPSEL_TRAP_VECTOR_SYSCALL;
	c->frame.rip = USER_CODE;
	c->frame.rsp = USER_STACK_TOP;
	c->frame.rdi = mode;
	c->frame.rflags = 0x2;
	if (__builtin_setjmp(c->resume) == 0) {
		int rc = kg_user_enter(&c->frame);
		kg_panic("vCPU %u: entering user mode was refused: %d", kg_cpu_id(), rc);
	}
}

/* This vCPU's kernel: its fault handler and kernel stack. */
static void kernel_init(struct cpu_state *c)
{
	if (kg_trap_register(14, on_fault, c->handler_stack, sizeof(c->handler_stack)) ||
	    kg_trap_register(13, on_fault, c->handler_stack, sizeof(c->handler_stack)) ||
	    kg_kernel_stack_set(c->kernel_stack, sizeof(c->kernel_stack)))
		kg_panic("vCPU %u: kernel setup refused", kg_cpu_id());
	c->ticks_ok = true;
}

/* Phase 1 on either vCPU: a process of its own, ticking. */
static void phase1(struct cpu_state *c)
{
	c->as = kg_as_create();
	if (c->as <= 0)
		kg_panic("vCPU %u: AS_CREATE failed: %d", kg_cpu_id(), c->as);
	map_process(c, c->as);
	run_user(c, c->as, 0);
}

static void wait_for(volatile int *flag, const char *what)
{
	uint64_t give_up = kg_time_now_ns() + 20000000000ull;
	while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE))
		if (kg_time_now_ns() > give_up)
			kg_panic("vCPU %u: waited 20 s for %s", kg_cpu_id(), what);
}

static void cpu1_main(void *arg)
{
	(void)arg;
	struct cpu_state *c = &cpus[1];
	kernel_init(c);
	phase1(c);
	__atomic_store_n(&phase1_done, 1, __ATOMIC_RELEASE);
	/* Phase 2: count into the shared space's page until a fault. */
	wait_for(&shoot_ready, "the shared space");
	map_process(c, shared_as);
	run_user(c, shared_as, 1);
	__atomic_store_n(&shoot_faulted, 1, __ATOMIC_RELEASE);
	/* Phase 3: leave the space once vCPU 0 tried to destroy it. */
	wait_for(&left_space, "vCPU 0's destroy attempt");
	if (kg_as_switch(0) != 0)
		kg_panic("vCPU 1: AS_SWITCH(0) refused");
	__atomic_store_n(&left_space, 2, __ATOMIC_RELEASE);
	__atomic_store_n(&cpu1_done, 1, __ATOMIC_RELEASE);
}

int main(int argc, char **argv)
{
	(void)argc, (void)argv;
	if (!kg_mmu_available() || !kg_smp_available() || kg_cpu_count() < 2) {
		kg_printf("mmusmp FAILED: needs the PV MMU and 2 vCPUs (have %u)\n",
			  kg_cpu_count());
		return 1;
	}
	struct cpu_state *c = &cpus[0];
	kernel_init(c);
	if (kg_syscall_register(on_syscall) != 0)
		kg_panic("syscall entry refused");
	if (kg_cpu_start(1, cpu1_main, 0, cpu1_stack, sizeof(cpu1_stack)) != 0)
		kg_panic("starting vCPU 1 failed");

	/* 1: both vCPUs run a process at once. */
	phase1(c);
	wait_for(&phase1_done, "vCPU 1's process");
	for (unsigned i = 0; i < 2; i++) {
		kg_printf("mmusmp: vCPU %u process: %u ticks, exit %s %llu\n", i, cpus[i].ticks,
			  cpus[i].end_vector == KAPSEL_TRAP_VECTOR_SYSCALL ? "syscall" : "fault",
			  (unsigned long long)cpus[i].end_value);
		check(cpus[i].ticks == TICKS && cpus[i].ticks_ok &&
			      cpus[i].end_vector == KAPSEL_TRAP_VECTOR_SYSCALL &&
			      cpus[i].end_value == (uint64_t)TICKS << 14,
		      i ? "vCPU 1 ran its own process" : "vCPU 0 ran its own process");
	}
	check(cpus[0].as != cpus[1].as, "two address spaces");

	/* 2: shootdown.  The counter lives in vCPU 1's data page. */
	shared_as = kg_as_create();
	if (shared_as <= 0)
		kg_panic("AS_CREATE failed: %d", shared_as);
	/* Phase 1 left its count there: start from 0 before vCPU 1 runs. */
	volatile uint64_t *counter = (volatile uint64_t *)cpus[1].data;
	*counter = 0;
	__atomic_store_n(&shoot_ready, 1, __ATOMIC_RELEASE);
	uint64_t give_up = kg_time_now_ns() + 20000000000ull;
	while (*counter < 200000)
		if (kg_time_now_ns() > give_up)
			kg_panic("vCPU 1's process never counted");
	int rc = kg_mmu_protect(shared_as, USER_DATA, 0);
	uint64_t at_return = *counter;
	uint64_t until = kg_time_now_ns() + 20000000ull;
	while (kg_time_now_ns() < until)
		;
	uint64_t later = *counter;
	kg_printf("mmusmp: protect -> %d; counter %llu at return, %llu 20 ms later\n", rc,
		  (unsigned long long)at_return, (unsigned long long)later);
	check(rc == 0, "protect while vCPU 1 writes");
	check(later == at_return, "no write after the protect returned");
	wait_for(&shoot_faulted, "vCPU 1's fault");
	kg_printf("mmusmp: vCPU 1 process ended by vector %llu at 0x%llx, error 0x%llx\n",
		  (unsigned long long)cpus[1].end_vector, (unsigned long long)cpus[1].end_cr2,
		  (unsigned long long)cpus[1].end_error);
	check(cpus[1].end_vector == 14 && cpus[1].end_cr2 == USER_DATA &&
		      (cpus[1].end_error & 3) == 3,
	      "vCPU 1's process took the write fault");

	/* 3: the space vCPU 1 still runs on cannot go away. */
	check(kg_as_destroy(shared_as) == -KAPSEL_EBUSY, "destroy a space another vCPU runs on");
	__atomic_store_n(&left_space, 1, __ATOMIC_RELEASE);
	give_up = kg_time_now_ns() + 20000000000ull;
	while (__atomic_load_n(&left_space, __ATOMIC_ACQUIRE) != 2)
		if (kg_time_now_ns() > give_up)
			kg_panic("vCPU 1 never left the space");
	check(kg_as_destroy(shared_as) == 0, "destroy it once vCPU 1 left");
	wait_for(&cpu1_done, "vCPU 1");
	if (kg_as_switch(0) != 0 || kg_as_destroy(cpus[0].as) != 0 ||
	    kg_as_destroy(cpus[1].as) != 0)
		check(false, "destroy the processes' spaces");

	if (failures) {
		kg_printf("mmusmp FAILED: %d checks failed\n", failures);
		return 1;
	}
	kg_printf("mmusmp ok: processes on 2 vCPUs, shootdown, busy space\n");
	return 0;
}
