/* Example guest: the PV MMU contract — address spaces, user mode, syscalls, user faults, TLB and hostile calls. */
#include "kapsel_guest/cpu.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/mmu.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

/*
 * A tiny kernel that runs one user program in several address spaces and
 * checks what the hypervisor promises (docs/abi.md §18): syscalls reach
 * the kernel with the process's registers; a process cannot read kernel
 * memory, touch a port, run privileged instructions, write a read-only
 * page, run a no-execute page or jump into kernel text — each arrives as
 * the right exception from user mode; demand paging works; two address
 * spaces map the same address to different frames; an update of the
 * current space is seen at once (TLB); hostile calls are refused.  Prints
 * one line per check and exits 0 only if every one held.
 */

#define USER_CODE KAPSEL_USER_VA_MIN
#define USER_DATA (KAPSEL_USER_VA_MIN + 0x10000)
#define USER_RO (KAPSEL_USER_VA_MIN + 0x20000)
#define USER_NX (KAPSEL_USER_VA_MIN + 0x30000)
#define USER_HEAP (KAPSEL_USER_VA_MIN + 0x40000)
#define USER_STACK_TOP (KAPSEL_USER_VA_MIN + 0x80000)

#define SYS_EXIT 0
#define SYS_ECHO 1  /* returns rdi * 3 + rsi: checks that arguments arrive */
#define SYS_TICK 2  /* rdi = the process's count; returns 0 to stop it */
#define SYS_STORM 3 /* returns 0 once the storm's time is up */

/* The user program: one page of position-independent code.  rdi selects
 * the test; the kernel reads the outcome from the exit syscall or the
 * exception it caused. */
__asm__(".pushsection .text.user, \"ax\"\n"
	".balign 4096\n"
	".globl user_program\n"
	"user_program:\n"
	"	cmp $0, %rdi; je 10f\n"
	"	cmp $1, %rdi; je 11f\n"
	"	cmp $2, %rdi; je 12f\n"
	"	cmp $3, %rdi; je 13f\n"
	"	cmp $4, %rdi; je 14f\n"
	"	cmp $5, %rdi; je 15f\n"
	"	cmp $6, %rdi; je 16f\n"
	"	cmp $7, %rdi; je 17f\n"
	"	cmp $8, %rdi; je 18f\n"
	"	cmp $9, %rdi; je 19f\n"
	"	cmp $10, %rdi; je 20f\n"
	"	cmp $11, %rdi; je 21f\n"
	"	cmp $12, %rdi; je 23f\n"
	"	ud2\n"
	/* 0: echo syscall with callee-saved registers checked afterwards. */
	"10:	mov $0x1111, %rbx; mov $0x2222, %r12; mov $0x3333, %r15\n"
	"	mov $1, %eax; mov $7, %edi; mov $5, %esi; syscall\n"
	"	cmp $0x1111, %rbx; jne 90f\n"
	"	cmp $0x2222, %r12; jne 90f\n"
	"	cmp $0x3333, %r15; jne 90f\n"
	"	mov %rax, %rdi; mov $0, %eax; syscall\n"
	/* 1: read kernel memory (the image, identity-mapped in kernel mode). */
	"11:	mov $0x100000, %rax; mov (%rax), %rax; ud2\n"
	/* 2: the hypercall port (open in kernel mode). */
	"12:	mov $0x510, %dx; mov $3, %eax; outl %eax, %dx; ud2\n"
	/* 3: cli. */
	"13:	cli; ud2\n"
	/* 4: write a read-only page. */
	"14:	mov $0x"
	"8000020000, %rax; movq $1, (%rax); ud2\n"
	/* 5: execute a no-execute page. */
	"15:	mov $0x"
	"8000030000, %rax; call *%rax; ud2\n"
	/* 6: jump into kernel text. */
	"16:	mov $0x100000, %rax; jmp *%rax\n"
	/* 7: demand paging: write the heap, read back, exit with the value. */
	"17:	mov $0x"
	"8000040000, %rax; movq $0x4242, 8(%rax); mov 8(%rax), %rdi\n"
	"	mov $0, %eax; syscall\n"
	/* 8: read the data page and exit with its first word. */
	"18:	mov $0x"
	"8000010000, %rax; mov (%rax), %rdi; mov $0, %eax; syscall\n"
	/* 9: mov to cr3. */
	"19:	xor %eax, %eax; mov %rax, %cr3; ud2\n"
	/* 10: wrmsr. */
	"20:	mov $0xc0000082, %ecx; xor %eax, %eax; xor %edx, %edx; wrmsr; ud2\n"
	/* 11: count in the data page; every 2^20 a tick syscall, until the
	 * kernel answers 0; then exit with the count. */
	"21:	mov $0x"
	"8000010000, %rbx\n"
	"22:	incq (%rbx); mov (%rbx), %rax; and $0xfffff, %eax; jnz 22b\n"
	"	mov $2, %eax; mov (%rbx), %rdi; syscall\n"
	"	test %rax, %rax; jnz 22b\n"
	"	mov (%rbx), %rdi; mov $0, %eax; syscall\n"
	/* 12: storm syscalls until the kernel answers 0, then exit. */
	"23:	mov $3, %eax; syscall; test %rax, %rax; jnz 23b\n"
	"	xor %edi, %edi; mov $0, %eax; syscall\n"
	"90:	mov $0xbad, %edi; mov $0, %eax; syscall\n"
	".balign 4096\n"
	".popsection\n");
extern const uint8_t user_program[];

static uint8_t handler_stack[16384] __attribute__((aligned(16)));
static uint8_t kernel_stack[16384] __attribute__((aligned(16)));
static uint8_t frames[8][4096] __attribute__((aligned(4096)));
static struct kapsel_trap_frame user_frame __attribute__((aligned(16)));
static struct kapsel_mmu_op ops[8];

/* How a run ended: an exit syscall or an exception from user mode. */
struct outcome {
	uint64_t vector; /* KAPSEL_TRAP_VECTOR_SYSCALL for exit */
	uint64_t value;	 /* exit value, or error code */
	uint64_t cr2;
	uint64_t flags;
};
static struct outcome last;
static void *resume_kernel[5];
static unsigned heap_faults, kernel_ud;
static int failures;
static int current_as;
static unsigned ticks, ticks_wanted;
static uint64_t boot_generation; /* a restore bumps start_info.generation */
static bool tick_counts_ok = true;
static uint64_t storm_end_ns, storm_calls;
static volatile unsigned timer_upcalls;

static uint64_t gpa(const void *p)
{
	return (uint64_t)(uintptr_t)p;
}

static void check(bool ok, const char *what)
{
	kg_printf("%s: %s\n", what, ok ? "ok" : "WRONG");
	if (!ok)
		failures++;
}

static void end_run(struct kapsel_trap_frame *frame, uint64_t value)
{
	last = (struct outcome){ frame->vector, value, frame->cr2, frame->flags };
	__builtin_longjmp(resume_kernel, 1);
}

static void on_syscall(struct kapsel_trap_frame *frame)
{
	if (frame->rax == SYS_ECHO) {
		frame->rax = frame->rdi * 3 + frame->rsi;
		return;
	}
	if (frame->rax == SYS_TICK) {
		ticks++;
		if (frame->rdi != (uint64_t)ticks << 20)
			tick_counts_ok = false;
		kg_printf("tick %u count %llu\n", ticks, (unsigned long long)frame->rdi);
		/* After a restore, 20 more ticks show the process goes on. */
		if (kg_platform_start_info()->generation != boot_generation) {
			boot_generation = kg_platform_start_info()->generation;
			ticks_wanted = ticks + 20;
			kg_printf("persist: restored at tick %u\n", ticks);
		}
		frame->rax = ticks < ticks_wanted;
		return;
	}
	if (frame->rax == SYS_STORM) {
		storm_calls++;
		frame->rax = kg_time_now_ns() < storm_end_ns;
		return;
	}
	end_run(frame, frame->rax == SYS_EXIT ? frame->rdi : 0xdead);
}

static void on_fault(struct kapsel_trap_frame *frame)
{
	if (!kg_frame_from_user(frame)) {
		/* syscall in kernel mode is an invalid opcode: skip it. */
		if (frame->vector == 6) {
			kernel_ud++;
			frame->rip += 2;
			return;
		}
		kg_panic("kernel-mode vector %llu at 0x%llx", (unsigned long long)frame->vector,
			 (unsigned long long)frame->rip);
	}
	/* Demand-zero heap page: map a fresh frame and retry. */
	if (frame->vector == 14 && (frame->cr2 & ~0xfffull) == USER_HEAP &&
	    !(frame->error_code & 1)) {
		heap_faults++;
		if (kg_mmu_map(current_as, USER_HEAP, gpa(frames[3]), KAPSEL_PROT_WRITE) == 0)
			return;
	}
	end_run(frame, frame->error_code);
}

/* Run the user program's test in address space as; returns how it ended. */
static struct outcome run_user(int as, uint64_t test)
{
	current_as = as;
	if (kg_as_switch(as) != 0)
		kg_panic("AS_SWITCH(%d) refused", as);
	for (unsigned i = 0; i < sizeof(user_frame) / 8; i++)
		((uint64_t *)&user_frame)[i] = 0;
	user_frame.vector = KAPSEL_TRAP_VECTOR_SYSCALL;
	user_frame.rip = USER_CODE;
	user_frame.rsp = USER_STACK_TOP;
	user_frame.rdi = test;
	user_frame.rflags = 0x2;
	if (__builtin_setjmp(resume_kernel) == 0) {
		int rc = kg_user_enter(&user_frame);
		kg_panic("entering user mode was refused: %d", rc);
	}
	return last;
}

static void map_process(int as, uint64_t data_word)
{
	*(volatile uint64_t *)frames[as] = data_word;
	struct kapsel_mmu_op batch[] = {
		{ .va = USER_CODE,
		  .gpa = gpa(user_program),
		  .op = KAPSEL_MMU_MAP,
		  .prot = KAPSEL_PROT_EXEC },
		{ .va = USER_DATA,
		  .gpa = gpa(frames[as]),
		  .op = KAPSEL_MMU_MAP,
		  .prot = KAPSEL_PROT_WRITE },
		{ .va = USER_RO, .gpa = gpa(frames[4]), .op = KAPSEL_MMU_MAP, .prot = 0 },
		{ .va = USER_NX,
		  .gpa = gpa(frames[5]),
		  .op = KAPSEL_MMU_MAP,
		  .prot = KAPSEL_PROT_WRITE },
		{ .va = USER_STACK_TOP - 4096,
		  .gpa = gpa(frames[5 + as]),
		  .op = KAPSEL_MMU_MAP,
		  .prot = KAPSEL_PROT_WRITE },
	};
	size_t n = sizeof(batch) / sizeof(batch[0]);
	if (kg_mmu_update(as, batch, n) != n)
		kg_panic("mapping process %d failed", as);
}

static void hostile_calls(int as)
{
	static const struct {
		uint64_t va, gpa;
		uint32_t op, prot;
		int64_t expect;
		const char *what;
	} cases[] = {
		{ USER_DATA, 0x1000, KAPSEL_MMU_MAP, 0, -KAPSEL_EFAULT, "map the GDT" },
		{ USER_DATA, 0x10000, KAPSEL_MMU_MAP, 0, -KAPSEL_EFAULT, "map the page tables" },
		{ USER_DATA, KAPSEL_GPA_EVENT_PAGE, KAPSEL_MMU_MAP, 0, -KAPSEL_EFAULT,
		  "map the event page" },
		{ USER_DATA, 1ull << 40, KAPSEL_MMU_MAP, 0, -KAPSEL_EFAULT, "map past RAM" },
		{ USER_DATA, 4ull << 30, KAPSEL_MMU_MAP, 0, -KAPSEL_EFAULT, "map the table pool" },
		{ 0x200000, 0x200000, KAPSEL_MMU_MAP, 0, -KAPSEL_EINVAL, "map over kernel memory" },
		{ USER_DATA + 1, 0x200000, KAPSEL_MMU_MAP, 0, -KAPSEL_EINVAL, "unaligned va" },
		{ USER_DATA, 0x200000, 9, 0, -KAPSEL_EINVAL, "unknown op" },
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ops[0] = (struct kapsel_mmu_op){ .va = cases[i].va,
						 .gpa = cases[i].gpa,
						 .op = cases[i].op,
						 .prot = cases[i].prot };
		int64_t done = kg_hc_mmu_update((uint64_t)as, gpa(ops), 1);
		kg_printf("hostile %s -> %lld / %lld\n", cases[i].what, (long long)done,
			  (long long)ops[0].result);
		check(done == 0 && ops[0].result == cases[i].expect, cases[i].what);
	}
	check(kg_hc_mmu_update((uint64_t)as, 0x1000, 1) == -KAPSEL_EFAULT, "ops array in the GDT");
	check(kg_hc_mmu_update((uint64_t)as, gpa(ops), KAPSEL_MMU_BATCH_MAX + 1) == -KAPSEL_E2BIG,
	      "batch too large");
	check(kg_hc_mmu_update(63, gpa(ops), 1) == -KAPSEL_ENOENT, "update an unknown space");
	check(kg_hc_mmu_update(KAPSEL_AS_MAX, gpa(ops), 1) == -KAPSEL_EINVAL, "update space 64");
	check(kg_hc_as_switch(KAPSEL_AS_MAX + 5) == -KAPSEL_EINVAL, "switch to space 69");
	check(kg_hc_kernel_stack(0x10000, 0x4000) == -KAPSEL_EFAULT, "kernel stack on the tables");
	check(kg_hc_set_syscall(1ull << 40) == -KAPSEL_EFAULT, "syscall entry past RAM");
	/* A batch stops at the first refused op and says which. */
	ops[0] = (struct kapsel_mmu_op){ .va = USER_HEAP + 0x10000,
					 .gpa = gpa(frames[4]),
					 .op = KAPSEL_MMU_MAP };
	ops[1] = (struct kapsel_mmu_op){ .va = USER_HEAP + 0x11000,
					 .gpa = 0x2000,
					 .op = KAPSEL_MMU_MAP };
	ops[2] = (struct kapsel_mmu_op){ .va = USER_HEAP + 0x12000,
					 .gpa = gpa(frames[4]),
					 .op = KAPSEL_MMU_MAP };
	ops[2].result = 77;
	int64_t done = kg_hc_mmu_update((uint64_t)as, gpa(ops), 3);
	check(done == 1 && ops[0].result == 0 && ops[1].result == -KAPSEL_EFAULT &&
		      ops[2].result == 77,
	      "batch stops at the refused op");
	ops[0].op = KAPSEL_MMU_UNMAP;
	kg_mmu_update(as, ops, 1);
}

/* A process counting in user mode, saved and restored by the test
 * (pv_mmu.sh): it must go on in its own address space. */
static int persist(void)
{
	char value[16];
	uint64_t wanted = 100000; /* the test saves and restores it first */
	boot_generation = kg_platform_start_info()->generation;
	if (kg_cmdline_get("ticks", value, sizeof(value)) > 0 && kg_parse_u64(value, &wanted) < 0)
		kg_panic("ticks=%s is not a number", value);
	ticks_wanted = (unsigned)wanted;
	if (kg_trap_register(14, on_fault, handler_stack, sizeof(handler_stack)) ||
	    kg_kernel_stack_set(kernel_stack, sizeof(kernel_stack)) ||
	    kg_syscall_register(on_syscall))
		kg_panic("cannot register the kernel entries");
	int a = kg_as_create();
	map_process(a, 0);
	kg_printf("persist: counting\n");
	struct outcome o = run_user(a, 11);
	uint64_t in_page = *(volatile uint64_t *)frames[a];
	kg_printf("persist: %u ticks, count %llu, page %llu\n", ticks, (unsigned long long)o.value,
		  (unsigned long long)in_page);
	if (o.vector != KAPSEL_TRAP_VECTOR_SYSCALL || o.value != (uint64_t)ticks << 20 ||
	    in_page != o.value || !tick_counts_ok) {
		kg_printf("persist: WRONG\n");
		return 1;
	}
	kg_printf("persist ok\n");
	return 0;
}

static void on_timer(uint32_t port, struct kapsel_trap_frame *frame)
{
	(void)port;
	(void)frame;
	timer_upcalls++;
}

/* A periodic timer keeps firing while a process makes syscall after
 * syscall: every syscall and every return switches the address space, and
 * a tick that arrives during a switch must still become an upcall. */
static int timer_storm(void)
{
	static uint8_t upcall_stack[16384] __attribute__((aligned(16)));
	char value[16];
	uint64_t period_ms = 10, run_ms = 1000;
	if (kg_cmdline_get("period_ms", value, sizeof(value)) > 0 &&
	    (kg_parse_u64(value, &period_ms) < 0 || period_ms == 0))
		kg_panic("period_ms=%s is not a positive number", value);
	if (kg_cmdline_get("run_ms", value, sizeof(value)) > 0 && kg_parse_u64(value, &run_ms) < 0)
		kg_panic("run_ms=%s is not a number", value);
	if (kg_trap_register(14, on_fault, handler_stack, sizeof(handler_stack)) ||
	    kg_kernel_stack_set(kernel_stack, sizeof(kernel_stack)) ||
	    kg_syscall_register(on_syscall) ||
	    kg_upcall_register(upcall_stack, sizeof(upcall_stack)) || kg_timer_init(on_timer))
		kg_panic("cannot register the kernel entries");
	int a = kg_as_create();
	map_process(a, 0);
	uint64_t start = kg_time_now_ns();
	storm_end_ns = start + run_ms * 1000000u;
	if (kg_timer_set_periodic(start + period_ms * 1000000u, period_ms * 1000000u))
		kg_panic("cannot start the periodic timer");
	struct outcome o = run_user(a, 12);
	kg_timer_stop();
	uint64_t elapsed_ms = (kg_time_now_ns() - start) / 1000000u;
	unsigned expected = (unsigned)(elapsed_ms / period_ms);
	kg_printf("timer-storm: %llu syscalls, %u upcalls in %llu ms (period %llu ms)\n",
		  (unsigned long long)storm_calls, timer_upcalls, (unsigned long long)elapsed_ms,
		  (unsigned long long)period_ms);
	/* Ticks may coalesce (one upcall for several periods), never stop:
	 * half the periods is far more than a stalled timer gives. */
	if (o.vector != KAPSEL_TRAP_VECTOR_SYSCALL || o.value != 0 || storm_calls < 10 ||
	    timer_upcalls < expected / 2) {
		kg_printf("timer-storm: WRONG (expected about %u upcalls)\n", expected);
		return 1;
	}
	kg_printf("timer-storm ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (!kg_mmu_available()) {
		kg_printf("no PV MMU in this hypervisor\n");
		return 2;
	}
	if (argc > 1 && strcmp(argv[1], "persist") == 0)
		return persist();
	if (argc > 1 && strcmp(argv[1], "timer-storm") == 0)
		return timer_storm();
	static const unsigned vectors[] = { 6, 13, 14 };
	for (unsigned i = 0; i < 3; i++)
		if (kg_trap_register(vectors[i], on_fault, handler_stack, sizeof(handler_stack)))
			kg_panic("cannot register vector %u", vectors[i]);

	int a = kg_as_create(), b = kg_as_create();
	check(a == 1 && b == 2, "two address spaces");
	map_process(a, 0xaaaa);
	map_process(b, 0xbbbb);

	/* Before a kernel stack and a syscall entry exist. */
	kg_as_switch(a);
	user_frame =
		(struct kapsel_trap_frame){ .rip = USER_CODE, .rsp = USER_STACK_TOP, .rflags = 2 };
	check(kg_user_enter(&user_frame) == -KAPSEL_EINVAL, "user mode without a kernel stack");
	check(kg_kernel_stack_set(kernel_stack, sizeof(kernel_stack)) == 0, "kernel stack");
	kg_as_switch(0);
	check(kg_user_enter(&user_frame) == -KAPSEL_EINVAL, "user mode without an address space");
	/* syscall in kernel mode: #UD before and after an entry exists. */
	__asm__ volatile("syscall" ::: "rcx", "r11", "memory");
	check(kg_syscall_register(on_syscall) == 0, "syscall entry");
	__asm__ volatile("syscall" ::: "rcx", "r11", "memory");
	check(kernel_ud == 2, "syscall in kernel mode is #UD");

	struct outcome o = run_user(a, 0);
	check(o.vector == KAPSEL_TRAP_VECTOR_SYSCALL && o.value == 7 * 3 + 5 &&
		      (o.flags & KAPSEL_TRAP_FRAME_USER),
	      "syscall with arguments and registers intact");
	o = run_user(a, 1);
	kg_printf("read kernel memory: vector %llu error 0x%llx cr2 0x%llx\n",
		  (unsigned long long)o.vector, (unsigned long long)o.value,
		  (unsigned long long)o.cr2);
	check(o.vector == 14 && o.cr2 == 0x100000 && (o.value & 4) && !(o.value & 1),
	      "process cannot read kernel memory");
	o = run_user(a, 2);
	check(o.vector == 13, "process cannot use the hypercall port");
	o = run_user(a, 3);
	check(o.vector == 13, "process cannot cli");
	o = run_user(a, 4);
	check(o.vector == 14 && o.cr2 == USER_RO && (o.value & 7) == 7,
	      "process cannot write a read-only page");
	o = run_user(a, 5);
	check(o.vector == 14 && o.cr2 == USER_NX && (o.value & 0x10), "no-execute page");
	o = run_user(a, 6);
	check(o.vector == 14 && o.cr2 == 0x100000 && (o.value & 0x14) == 0x14,
	      "process cannot jump into kernel text");
	o = run_user(a, 7);
	check(o.vector == KAPSEL_TRAP_VECTOR_SYSCALL && o.value == 0x4242 && heap_faults == 1,
	      "demand-zero page on #PF");
	o = run_user(a, 9);
	check(o.vector == 13, "process cannot mov to cr3");
	o = run_user(a, 10);
	check(o.vector == 13, "process cannot wrmsr");

	/* Two spaces, one address, two frames. */
	o = run_user(a, 8);
	struct outcome ob = run_user(b, 8);
	check(o.value == 0xaaaa && ob.value == 0xbbbb, "isolated address spaces");

	/* TLB: after the process ran (the data page is cached), remap the
	 * current space's data page in kernel mode and read it at once. */
	kg_as_switch(a);
	volatile uint64_t *data = (volatile uint64_t *)(uintptr_t)USER_DATA;
	uint64_t before = *data;
	*(volatile uint64_t *)frames[2] = 0xcccc;
	kg_mmu_map(a, USER_DATA, gpa(frames[2]), KAPSEL_PROT_WRITE);
	uint64_t after = *data;
	check(before == 0xaaaa && after == 0xcccc, "update of the current space is seen at once");
	o = run_user(a, 8);
	check(o.value == 0xcccc, "the process sees it too");

	hostile_calls(a);
	check(kg_as_destroy(a) == -KAPSEL_EBUSY, "destroy the current space");
	kg_as_switch(0);
	check(kg_as_destroy(a) == 0 && kg_as_destroy(b) == 0, "destroy both spaces");
	int made = 0, rc;
	while ((rc = kg_as_create()) > 0)
		made++;
	check(made == KAPSEL_AS_MAX - 1 && rc == -KAPSEL_ENOSPC, "63 spaces at most");

	if (failures) {
		kg_printf("mmu: %d WRONG\n", failures);
		return 1;
	}
	kg_printf("mmu ok\n");
	return 0;
}
