/* Unit tests: PV CPU handler checks, trap frame placement and IRET sanitizing, timer arithmetic. */
#include <string.h>

#include "cunit_main.h"
#include "guest_memory.h"
#include "pv_cpu.h"

#define RAM_BYTES (4ull << 20)
#define FLOOR 0x60000ull

static struct guest_memory mem;

static void setup_memory(void)
{
	CU_ASSERT_EQUAL_FATAL(guest_memory_create(&mem, RAM_BYTES, "pv-cpu-test"), 0);
	mem.guest_floor_gpa = FLOOR;
}

static int check(uint64_t entry, uint64_t top, uint64_t bytes)
{
	struct pv_handler h = { .entry = entry, .stack_top = top, .stack_bytes = bytes };
	return pv_cpu_check_handler(&mem, &h);
}

static void test_check_handler(void)
{
	setup_memory();
	/* A handler in the image and a stack in free RAM. */
	CU_ASSERT_EQUAL(check(0x100000, 0x200000, 0x4000), 0);
	/* The stack may end exactly at the end of RAM, and start at the floor. */
	CU_ASSERT_EQUAL(check(0x100000, RAM_BYTES, 0x4000), 0);
	CU_ASSERT_EQUAL(check(0x100000, FLOOR + 0x4000, 0x4000), 0);
	/* Outside RAM, in the hypervisor's tables or the shared pages. */
	CU_ASSERT_EQUAL(check(0x100000, RAM_BYTES + 0x1000, 0x4000), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(check(0x100000, FLOOR + 0x3ff0, 0x4000), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(check(0x100000, 0x14000, 0x4000), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(check(0x100000, 0x9000, 0x1000), -KAPSEL_EFAULT);
	/* Wrapping below address 0, and a top near 2^64. */
	CU_ASSERT_EQUAL(check(0x100000, 0x1000, 0x4000), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(check(0x100000, 0xfffffffffffff000ull, 0x4000), -KAPSEL_EFAULT);
	/* Entry in the CPL0 stubs, past RAM, at the very end. */
	CU_ASSERT_EQUAL(check(0x6000, 0x200000, 0x4000), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(check(RAM_BYTES, 0x200000, 0x4000), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(check(RAM_BYTES - 1, 0x200000, 0x4000), 0);
	/* Sizes and alignment. */
	CU_ASSERT_EQUAL(check(0x100000, 0x200000, KAPSEL_TRAP_STACK_MIN_BYTES - 16),
			-KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(check(0x100000, 0x2000000, KAPSEL_TRAP_STACK_MAX_BYTES + 16),
			-KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(check(0x100000, 0x200008, 0x4000), -KAPSEL_EINVAL);
	guest_memory_destroy(&mem);
}

static void test_frame_place(void)
{
	const struct pv_handler h = { .entry = 0x100000,
				      .stack_top = 0x200000,
				      .stack_bytes = 0x1000 };
	const uint64_t frame_bytes = sizeof(struct kapsel_trap_frame);
	uint64_t gpa = 0;
	/* Interrupted elsewhere: the frame goes at the top. */
	CU_ASSERT_EQUAL(pv_cpu_frame_place(&h, 0x150000, &gpa), 0);
	CU_ASSERT_EQUAL(gpa, 0x200000 - frame_bytes);
	CU_ASSERT_EQUAL(gpa % 16, 0);
	/* An rsp just above the stack, or at 0, is not on it. */
	CU_ASSERT_EQUAL(pv_cpu_frame_place(&h, 0x200008, &gpa), 0);
	CU_ASSERT_EQUAL(gpa, 0x200000 - frame_bytes);
	/* Nested: below the interrupted rsp and the gap, 16-byte aligned. */
	CU_ASSERT_EQUAL(pv_cpu_frame_place(&h, 0x1fff08, &gpa), 0);
	CU_ASSERT_EQUAL(gpa, ((0x1fff08 - KAPSEL_TRAP_NESTED_GAP_BYTES) & ~15ull) - frame_bytes);
	/* The top of the stack counts as on it (an empty handler stack). */
	CU_ASSERT_EQUAL(pv_cpu_frame_place(&h, 0x200000, &gpa), 0);
	CU_ASSERT_EQUAL(gpa, 0x200000 - KAPSEL_TRAP_NESTED_GAP_BYTES - frame_bytes);
	/* Exactly enough room, then 16 bytes too little. */
	uint64_t bottom = 0x200000 - 0x1000;
	CU_ASSERT_EQUAL(pv_cpu_frame_place(&h, bottom + KAPSEL_TRAP_NESTED_GAP_BYTES + frame_bytes,
					   &gpa),
			0);
	CU_ASSERT_EQUAL(gpa, bottom);
	gpa = 42;
	CU_ASSERT_EQUAL(pv_cpu_frame_place(&h,
					   bottom + KAPSEL_TRAP_NESTED_GAP_BYTES + frame_bytes - 16,
					   &gpa),
			-KAPSEL_ENOSPC);
	CU_ASSERT_EQUAL(gpa, 42); /* untouched on failure */
	/* A recursion that used up the stack: rsp near the bottom. */
	CU_ASSERT_EQUAL(pv_cpu_frame_place(&h, bottom + 8, &gpa), -KAPSEL_ENOSPC);
}

static void test_frame_round_trip(void)
{
	struct kvm_regs regs;
	memset(&regs, 0, sizeof(regs));
	regs.rax = 1, regs.rbx = 2, regs.rcx = 3, regs.rdx = 4, regs.rsi = 5, regs.rdi = 6;
	regs.rbp = 7, regs.r8 = 8, regs.r9 = 9, regs.r10 = 10, regs.r11 = 11, regs.r12 = 12;
	regs.r13 = 13, regs.r14 = 14, regs.r15 = 15, regs.rip = 0x100123, regs.rsp = 0x1ff000;
	regs.rflags = 0x246;
	struct kapsel_trap_frame frame;
	memset(&frame, 0, sizeof(frame));
	pv_cpu_frame_from_regs(&frame, &regs);
	CU_ASSERT_EQUAL(frame.rip, 0x100123);
	CU_ASSERT_EQUAL(frame.rsp, 0x1ff000);
	CU_ASSERT_EQUAL(frame.r15, 15);
	CU_ASSERT_EQUAL(frame.cs, 0x23);
	CU_ASSERT_EQUAL(frame.ss, 0x1b);
	struct kvm_regs back;
	memset(&back, 0xee, sizeof(back));
	CU_ASSERT_EQUAL(pv_cpu_regs_from_frame(&back, &frame, 0x2), 0);
	CU_ASSERT_EQUAL(back.rax, 1);
	CU_ASSERT_EQUAL(back.rbp, 7);
	CU_ASSERT_EQUAL(back.r12, 12);
	CU_ASSERT_EQUAL(back.rip, 0x100123);
	CU_ASSERT_EQUAL(back.rsp, 0x1ff000);
	/* ZF, PF come back; IF (0x200) is the host's, not the frame's. */
	CU_ASSERT_EQUAL(back.rflags, 0x46);
}

static void test_iret_rflags_and_canonical(void)
{
	struct kapsel_trap_frame frame;
	memset(&frame, 0, sizeof(frame));
	frame.rip = 0x100000;
	frame.rsp = 0x200000;
	/* The guest asks for IOPL 3, IF, VM86, NT, RF, VIF/VIP, ID: only the
	 * arithmetic flags, TF, DF and AC may pass. */
	frame.rflags = 0xffffffffffffffffull;
	struct kvm_regs regs;
	memset(&regs, 0, sizeof(regs));
	CU_ASSERT_EQUAL(pv_cpu_regs_from_frame(&regs, &frame, 0x2), 0);
	CU_ASSERT_EQUAL(regs.rflags, 0x40dd5ull | 0x2);
	CU_ASSERT_EQUAL(regs.rflags & 0x3000, 0); /* IOPL stays 0: ports go through the bitmap */
	/* Host bits are kept from the current value. */
	frame.rflags = 0;
	CU_ASSERT_EQUAL(pv_cpu_regs_from_frame(&regs, &frame, 0x202), 0);
	CU_ASSERT_EQUAL(regs.rflags, 0x202);
	/* Non-canonical rip or rsp: refused, registers untouched. */
	struct kvm_regs before = regs;
	frame.rip = 0x0000800000000000ull;
	CU_ASSERT_EQUAL(pv_cpu_regs_from_frame(&regs, &frame, 0x2), -KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(memcmp(&regs, &before, sizeof(regs)), 0);
	frame.rip = 0x100000;
	frame.rsp = 0xffff7fffffffffffull;
	CU_ASSERT_EQUAL(pv_cpu_regs_from_frame(&regs, &frame, 0x2), -KAPSEL_EINVAL);
	/* High canonical addresses are fine. */
	frame.rsp = 0xffff800000000000ull;
	CU_ASSERT_EQUAL(pv_cpu_regs_from_frame(&regs, &frame, 0x2), 0);
}

static void test_timer_next(void)
{
	uint64_t skipped = 99;
	/* Fired on time: the next period. */
	CU_ASSERT_EQUAL(pv_cpu_timer_next(1000, 100, 1000, &skipped), 1100);
	CU_ASSERT_EQUAL(skipped, 0);
	/* Late by 3.5 periods: three are skipped, the next lies after now. */
	CU_ASSERT_EQUAL(pv_cpu_timer_next(1000, 100, 1350, &skipped), 1400);
	CU_ASSERT_EQUAL(skipped, 3);
	/* Exactly on a later period boundary: strictly after now. */
	CU_ASSERT_EQUAL(pv_cpu_timer_next(1000, 100, 1300, &skipped), 1400);
	CU_ASSERT_EQUAL(skipped, 3);
	/* A restored timer whose deadline is still ahead keeps its phase. */
	CU_ASSERT_EQUAL(pv_cpu_timer_next(5000, 100, 1000, &skipped), 5100);
	CU_ASSERT_EQUAL(skipped, 0);
	/* Near the end of the clock: no overflow into KAPSEL_TIMER_STOP. */
	uint64_t next = pv_cpu_timer_next(UINT64_MAX - 150, 100, UINT64_MAX - 150, NULL);
	CU_ASSERT(next < KAPSEL_TIMER_STOP);
	CU_ASSERT(next >= UINT64_MAX - 150);
	next = pv_cpu_timer_next(0, UINT64_MAX / 2, UINT64_MAX - 1, &skipped);
	CU_ASSERT(next < KAPSEL_TIMER_STOP);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "handler and stack checks", test_check_handler },
		{ "frame placement, nesting and overflow", test_frame_place },
		{ "registers to frame and back", test_frame_round_trip },
		{ "IRET sanitizes rflags and refuses non-canonical addresses",
		  test_iret_rflags_and_canonical },
		{ "periodic timer arithmetic", test_timer_next },
	};
	return unit_run("pv_cpu", tests, sizeof(tests) / sizeof(tests[0]));
}
