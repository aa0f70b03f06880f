/* cpubench.elf's process rows: null syscall, fork+exit+wait, context switch and demand-zero fault in user processes, address-space switch and page-table batch in the kernel. */
#include "kapsel_guest/arch.h"
#include "kapsel_guest/cpu.h"
#include "kapsel_guest/mmu.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

#include "cpubench.h"

/*
 * A kernel as small as the measurement allows, lmbench's operations on the
 * PV MMU (docs/abi.md §18):
 *
 *   syscall     a process's `syscall` -> the kernel's entry -> IRET back
 *   fork        the process calls fork: the kernel makes an address space,
 *               shares the code page, copies the data and stack pages (2
 *               pages, eagerly), runs the child, which exits at once, then
 *               destroys the space and resumes the parent (fork+exit+wait)
 *   ctxsw       two processes in two spaces yield to each other: syscall,
 *               AS_SWITCH, IRET into the other's saved context; one switch
 *   page-fault  a process writes a page it has not touched: #PF to the
 *               kernel, which zeroes a frame, maps it (and unmaps the page
 *               32 behind in the same MMU_UPDATE, so the next lap faults
 *               again) and returns; demand-zero paging
 *   as-switch   the kernel switches between two spaces (AS_SWITCH)
 *   mmu-batch   the kernel maps, then unmaps, 16 pages in one MMU_UPDATE
 *
 * User-mode operations are timed by the process itself with rdtsc, around
 * the instruction that enters the kernel, and the time is handed over in
 * the next entry (a syscall argument, or a word in the data page for the
 * fault row), where the kernel records it.  The kernel ends a phase from
 * inside an entry (longjmp back to proc_run_phase), so no operation of the
 * process is cut short.
 */

#define USER_CODE KAPSEL_USER_VA_MIN
#define USER_DATA (KAPSEL_USER_VA_MIN + 0x10000)
#define USER_HEAP (KAPSEL_USER_VA_MIN + 0x100000)
#define USER_STACK_TOP (KAPSEL_USER_VA_MIN + 0x80000)
#define HEAP_PAGES 64u
#define BATCH_PAGES 16u
#define PAGE 4096u

#define SYS_EXIT 0
#define SYS_NULL 1  /* rdi = the last round trip in TSC ticks (0: none yet) */
#define SYS_FORK 2  /* rdi as SYS_NULL; returns 0 in the child */
#define SYS_YIELD 3 /* rdi as SYS_NULL (process A only) */

enum proc_row {
	ROW_SYSCALL,
	ROW_FORK,
	ROW_CTXSW,
	ROW_PAGE_FAULT,
	ROW_AS_SWITCH,
	ROW_MMU_BATCH
};
static const char *const row_names[] = {
	[ROW_SYSCALL] = "syscall",     [ROW_FORK] = "fork",
	[ROW_CTXSW] = "ctxsw",	       [ROW_PAGE_FAULT] = "page-fault",
	[ROW_AS_SWITCH] = "as-switch", [ROW_MMU_BATCH] = "mmu-batch",
};

/* The processes' code: one page; rdi selects the program.  r12 holds the
 * last round trip, r13 the start of the current one (rdtsc clobbers rax,
 * rdx; syscall clobbers rcx, r11). */
__asm__(".pushsection .text.user, \"ax\"\n"
	".balign 4096\n"
	".globl cpubench_user\n"
	"cpubench_user:\n"
	"	cmp $0, %rdi; je 10f\n"
	"	cmp $1, %rdi; je 20f\n"
	"	cmp $2, %rdi; je 30f\n"
	"	cmp $3, %rdi; je 40f\n"
	"	cmp $4, %rdi; je 50f\n"
	"	ud2\n"
	/* 0: null syscall, back to back. */
	"10:	xor %r12d, %r12d\n"
	"11:	rdtsc; shl $32, %rdx; or %rax, %rdx; mov %rdx, %r13\n"
	"	mov $1, %eax; mov %r12, %rdi; syscall\n"
	"	rdtsc; shl $32, %rdx; or %rdx, %rax; sub %r13, %rax; mov %rax, %r12\n"
	"	jmp 11b\n"
	/* 1: fork; the child exits at once. */
	"20:	xor %r12d, %r12d\n"
	"21:	rdtsc; shl $32, %rdx; or %rax, %rdx; mov %rdx, %r13\n"
	"	mov $2, %eax; mov %r12, %rdi; syscall\n"
	"	test %rax, %rax; jz 22f\n"
	"	rdtsc; shl $32, %rdx; or %rdx, %rax; sub %r13, %rax; mov %rax, %r12\n"
	"	jmp 21b\n"
	"22:	xor %edi, %edi; mov $0, %eax; syscall; ud2\n"
	/* 2: process A of the switch pair: a timed yield to B and back. */
	"30:	xor %r12d, %r12d\n"
	"31:	rdtsc; shl $32, %rdx; or %rax, %rdx; mov %rdx, %r13\n"
	"	mov $3, %eax; mov %r12, %rdi; syscall\n"
	"	rdtsc; shl $32, %rdx; or %rdx, %rax; sub %r13, %rax; mov %rax, %r12\n"
	"	jmp 31b\n"
	/* 3: process B: yields straight back. */
	"40:	mov $3, %eax; xor %edi, %edi; syscall; jmp 40b\n"
	/* 4: write one new heap page after another (a ring of 64); the
	 * time of each goes to the first word of the data page. */
	"50:	movabs $0x8000100000, %r14; movabs $0x8000010000, %rbx; xor %r15d, %r15d\n"
	"51:	rdtsc; shl $32, %rdx; or %rax, %rdx; mov %rdx, %r13\n"
	"	mov %r15, %rcx; shl $12, %rcx; movq $1, (%r14, %rcx)\n"
	"	rdtsc; shl $32, %rdx; or %rdx, %rax; sub %r13, %rax; mov %rax, (%rbx)\n"
	"	inc %r15; and $63, %r15; jmp 51b\n"
	".balign 4096\n"
	".popsection\n");
extern const uint8_t cpubench_user[];
_Static_assert(USER_HEAP == 0x8000100000ull && USER_DATA == 0x8000010000ull,
	       "the user program's addresses");

static uint8_t handler_stack[16384] __attribute__((aligned(16)));
static uint8_t kernel_stack[16384] __attribute__((aligned(16)));
/* Frames: data and stack of processes A, B and the fork child; the heap. */
static uint8_t data_frames[3][PAGE] __attribute__((aligned(PAGE)));
static uint8_t stack_frames[3][PAGE] __attribute__((aligned(PAGE)));
static uint8_t heap_frames[HEAP_PAGES][PAGE] __attribute__((aligned(PAGE)));
static struct kapsel_mmu_op batch[2 * BATCH_PAGES];
static struct kapsel_trap_frame start_frame __attribute__((aligned(16)));

static int row;
static int space_a, space_b;
static struct kapsel_trap_frame saved[2]; /* the ctxsw pair's, the fork parent's */
static int running;			  /* ctxsw: 0 = A, 1 = B */
static int child_space;

/* The phase in progress, for the kernel entries. */
static struct phase *cur;
static uint64_t cur_start_ns, cur_duration_ns, cur_max_ops;
static int cur_error;
static struct proc_untimed *cur_untimed;
static void *phase_end[5];

static uint64_t gpa(const void *p)
{
	return (uint64_t)(uintptr_t)p;
}

static bool phase_done(void)
{
	return cur_max_ops ? cur->ops >= cur_max_ops
			   : kg_time_now_ns() - cur_start_ns >= cur_duration_ns;
}

/* Leave user mode for good: back into proc_run_phase. */
static void end_phase(int error)
{
	cur_error = error;
	__builtin_longjmp(phase_end, 1);
}

/* A round trip the process measured; ctxsw's covers two switches. */
static void take(uint64_t ticks, unsigned per_trip)
{
	if (!ticks)
		return;
	uint64_t ns = ticks_to_ns(ticks) / per_trip;
	for (unsigned i = 0; i < per_trip; i++)
		record(cur, ns, 0);
}

static int map_process(int as, unsigned which)
{
	struct kapsel_mmu_op ops[] = {
		{ .va = USER_CODE,
		  .gpa = gpa(cpubench_user),
		  .op = KAPSEL_MMU_MAP,
		  .prot = KAPSEL_PROT_EXEC },
		{ .va = USER_DATA,
		  .gpa = gpa(data_frames[which]),
		  .op = KAPSEL_MMU_MAP,
		  .prot = KAPSEL_PROT_WRITE },
		{ .va = USER_STACK_TOP - PAGE,
		  .gpa = gpa(stack_frames[which]),
		  .op = KAPSEL_MMU_MAP,
		  .prot = KAPSEL_PROT_WRITE },
	};
	size_t n = sizeof(ops) / sizeof(ops[0]);
	return kg_mmu_update(as, ops, n) == n ? 0 : -KAPSEL_EIO;
}

/* fork: a new space with the code shared and data and stack copied; the
 * child resumes from the parent's syscall with rax = 0. */
static void do_fork(struct kapsel_trap_frame *frame)
{
	child_space = kg_as_create();
	if (child_space < 0)
		end_phase(child_space);
	memcpy(data_frames[2], data_frames[0], PAGE);
	memcpy(stack_frames[2], stack_frames[0], PAGE);
	if (map_process(child_space, 2) || kg_as_switch(child_space))
		end_phase(-KAPSEL_EIO);
	saved[0] = *frame;
	frame->rax = 0;
}

/* The child's exit: wait returns in the parent with the child's id. */
static void do_exit(struct kapsel_trap_frame *frame)
{
	if (row != ROW_FORK || child_space <= 0)
		end_phase(-KAPSEL_EINVAL);
	if (kg_as_switch(space_a) || kg_as_destroy(child_space))
		end_phase(-KAPSEL_EIO);
	*frame = saved[0];
	frame->rax = (uint64_t)child_space;
	child_space = 0;
}

static void do_yield(struct kapsel_trap_frame *frame)
{
	saved[running] = *frame;
	running ^= 1;
	if (kg_as_switch(running ? space_b : space_a))
		end_phase(-KAPSEL_EIO);
	*frame = saved[running];
}

static void on_syscall(struct kapsel_trap_frame *frame)
{
	uint64_t call = frame->rax;
	if (call == SYS_EXIT) {
		do_exit(frame);
		return;
	}
	/* Process A's (or the only process's) entries record and may end. */
	if (!(row == ROW_CTXSW && running == 1)) {
		take(frame->rdi, row == ROW_CTXSW ? 2 : 1);
		if (phase_done()) {
			cur_untimed->exit_hlt++; /* this entry starts no operation */
			end_phase(0);
		}
	}
	switch (call) {
	case SYS_NULL:
		frame->rax = 0;
		return;
	case SYS_FORK:
		do_fork(frame);
		return;
	case SYS_YIELD:
		do_yield(frame);
		return;
	}
	end_phase(-KAPSEL_ENOSYS);
}

static void on_page_fault(struct kapsel_trap_frame *frame)
{
	if (!kg_frame_from_user(frame))
		kg_panic("cpubench: kernel-mode fault at 0x%llx", (unsigned long long)frame->rip);
	uint64_t page = (frame->cr2 - USER_HEAP) / PAGE;
	if (row != ROW_PAGE_FAULT || frame->cr2 < USER_HEAP || page >= HEAP_PAGES)
		end_phase(-KAPSEL_EFAULT);
	/* The data page's first word: the time of the last write. */
	take(*(volatile uint64_t *)data_frames[0], 1);
	if (phase_done()) {
		cur_untimed->exit_guest_fault++; /* this fault starts no operation */
		end_phase(0);
	}
	memset(heap_frames[page], 0, PAGE);
	batch[0] = (struct kapsel_mmu_op){ .va = USER_HEAP + page * PAGE,
					   .gpa = gpa(heap_frames[page]),
					   .op = KAPSEL_MMU_MAP,
					   .prot = KAPSEL_PROT_WRITE };
	batch[1] = (struct kapsel_mmu_op){ .va = USER_HEAP +
						 ((page + HEAP_PAGES / 2) % HEAP_PAGES) * PAGE,
					   .op = KAPSEL_MMU_UNMAP };
	if (kg_mmu_update(space_a, batch, 2) != 2)
		end_phase(-KAPSEL_EIO);
}

/* Anything else from user mode is a bug in the program above. */
static void on_other_trap(struct kapsel_trap_frame *frame)
{
	if (!kg_frame_from_user(frame))
		kg_panic("cpubench: kernel-mode vector %llu at 0x%llx",
			 (unsigned long long)frame->vector, (unsigned long long)frame->rip);
	end_phase(-KAPSEL_EFAULT);
}

int proc_mode(const char *name)
{
	for (unsigned i = 0; i < sizeof(row_names) / sizeof(row_names[0]); i++)
		if (name && strcmp(name, row_names[i]) == 0)
			return (int)i;
	return -1;
}

int proc_setup(int which)
{
	row = which;
	if (!kg_mmu_available())
		return -KAPSEL_ENOSYS;
	int err = kg_trap_register(14, on_page_fault, handler_stack, sizeof(handler_stack));
	if (!err)
		err = kg_trap_register(6, on_other_trap, handler_stack, sizeof(handler_stack));
	if (!err)
		err = kg_trap_register(13, on_other_trap, handler_stack, sizeof(handler_stack));
	if (!err)
		err = kg_kernel_stack_set(kernel_stack, sizeof(kernel_stack));
	if (!err)
		err = kg_syscall_register(on_syscall);
	if (err)
		return err;
	space_a = kg_as_create();
	space_b = kg_as_create();
	if (space_a < 0 || space_b < 0)
		return space_a < 0 ? space_a : space_b;
	if (map_process(space_a, 0) || map_process(space_b, 1))
		return -KAPSEL_EIO;
	return 0;
}

static void user_frame(struct kapsel_trap_frame *frame, uint64_t program)
{
	memset(frame, 0, sizeof(*frame));
	frame->vector = KAPSEL_TRAP_VECTOR_SYSCALL;
	frame->rip = USER_CODE;
	frame->rsp = USER_STACK_TOP;
	frame->rdi = program;
	frame->rflags = 0x2;
	frame->flags = KAPSEL_TRAP_FRAME_USER;
}

/* Kernel-mode rows: one hypercall per operation. */
static int kernel_phase(void)
{
	unsigned flip = 0;
	for (unsigned i = 0; i < BATCH_PAGES; i++) {
		batch[i] = (struct kapsel_mmu_op){ .va = USER_HEAP + i * PAGE,
						   .gpa = gpa(heap_frames[i]),
						   .op = KAPSEL_MMU_MAP,
						   .prot = KAPSEL_PROT_WRITE };
		batch[BATCH_PAGES + i] = (struct kapsel_mmu_op){ .va = USER_HEAP + i * PAGE,
								 .op = KAPSEL_MMU_UNMAP };
	}
	while (!phase_done()) {
		uint64_t start = kg_rdtsc();
		int64_t rc;
		if (row == ROW_AS_SWITCH)
			rc = kg_hc_as_switch((uint64_t)(flip ? space_b : space_a));
		else
			rc = kg_hc_mmu_update((uint64_t)space_b, gpa(&batch[flip * BATCH_PAGES]),
					      BATCH_PAGES);
		uint64_t end = kg_rdtsc();
		if (rc < 0 || (row == ROW_MMU_BATCH && rc != BATCH_PAGES))
			return rc < 0 ? (int)rc : -KAPSEL_EIO;
		record(cur, ticks_to_ns(end - start), 0);
		flip ^= 1;
	}
	return 0;
}

int proc_run_phase(int which, struct phase *phase, uint64_t duration_ns, uint64_t max_ops,
		   struct proc_untimed *untimed)
{
	memset(phase, 0, sizeof(*phase));
	cur_untimed = untimed;
	cur = phase;
	cur_duration_ns = duration_ns;
	cur_max_ops = max_ops;
	cur_error = 0;
	row = which;
	cur_start_ns = kg_time_now_ns();
	if (row == ROW_AS_SWITCH || row == ROW_MMU_BATCH) {
		cur_error = kernel_phase();
		goto out;
	}
	/* Every process starts from the top; the heap starts empty. */
	running = 0;
	child_space = 0;
	if (row == ROW_PAGE_FAULT) {
		for (unsigned first = 0; first < HEAP_PAGES; first += BATCH_PAGES) {
			for (unsigned i = 0; i < BATCH_PAGES; i++)
				batch[i] = (struct kapsel_mmu_op){
					.va = USER_HEAP + (first + i) * PAGE, .op = KAPSEL_MMU_UNMAP
				};
			untimed->hc_mmu_update++;
			if (kg_mmu_update(space_a, batch, BATCH_PAGES) != BATCH_PAGES)
				return -KAPSEL_EIO;
		}
		*(volatile uint64_t *)data_frames[0] = 0;
	}
	static const uint64_t programs[] = {
		[ROW_SYSCALL] = 0, [ROW_FORK] = 1, [ROW_CTXSW] = 2, [ROW_PAGE_FAULT] = 4
	};
	user_frame(&saved[1], 3); /* process B, for ctxsw */
	user_frame(&start_frame, programs[row]);
	untimed->hc_as_switch++;
	if (kg_as_switch(space_a))
		return -KAPSEL_EIO;
	if (__builtin_setjmp(phase_end) == 0) {
		untimed->hc_iret++;
		int rc = kg_user_enter(&start_frame);
		return rc ? rc : -KAPSEL_EIO; /* returns only when refused */
	}
	/* Back from end_phase, in kernel mode: a fork child may be left. */
	if (child_space > 0) {
		untimed->hc_as_switch++;
		kg_as_switch(space_a);
		kg_as_destroy(child_space);
		child_space = 0;
	}
out:
	phase->elapsed_ns = kg_time_now_ns() - cur_start_ns;
	if (cur_error)
		phase->errors++;
	return cur_error;
}
