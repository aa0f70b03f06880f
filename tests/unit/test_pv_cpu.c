/* Unit tests: PV CPU handler checks, trap frame placement and IRET sanitizing, timer arithmetic. */
#include <errno.h>
#include <string.h>

#include "cunit_main.h"
#include "core/guest_memory.h"
#include "core/pv_cpu.h"
#include "core/vm.h"
#include "state/vm_state.h"

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

/* ---- The saved state record ---------------------------------------------- */

static struct kapsel_vm vm;

static void setup_vm(void)
{
	memset(&vm, 0, sizeof(vm));
	vm.vcpu_count = 1;
	vm.vcpus[0] = (struct kapsel_vcpu){ .vm = &vm, .id = 0, .fd = -1 };
	CU_ASSERT_EQUAL_FATAL(guest_memory_create(&vm.mem, RAM_BYTES, "pv-cpu-state"), 0);
	vm.mem.guest_floor_gpa = FLOOR;
	vm.vcpus[0].pv_cpu.timer_deadline_ns = KAPSEL_TIMER_STOP;
	for (unsigned i = 0; i < KAPSEL_VIRQ_COUNT; i++)
		vm.vcpus[0].pv_cpu.virq_port[i] = UINT32_MAX;
	vm.evtchn[3].allocated = true;
	vm.evtchn[3].bound_device = -1;
	vm.evtchn[4].allocated = true;
	vm.evtchn[4].bound_device = 0; /* a device's channel */
}

static struct vm_state_pv_cpu valid_record(void)
{
	struct vm_state_pv_cpu rec;
	memset(&rec, 0, sizeof(rec));
	rec.traps[14] = (struct vm_state_pv_handler){ 0x100000, 0x200000, 0x4000 };
	rec.callback = (struct vm_state_pv_handler){ 0x100010, 0x210000, 0x4000 };
	rec.active_vectors = 1u << 14;
	rec.timer_deadline_ns = 5000000;
	rec.timer_period_ns = 1000000;
	for (unsigned i = 0; i < 4; i++)
		rec.virq_port[i] = UINT32_MAX;
	rec.virq_port[KAPSEL_VIRQ_TIMER] = 3;
	return rec;
}

/* Load state holding rec (length_bytes of it); returns pv_cpu_load's result. */
static int load(const struct vm_state_pv_cpu *rec, uint64_t length_bytes, char *error,
		size_t error_len)
{
	struct vm_state_stored_record stored = { .type = VM_STATE_VCPU_PV_CPU,
						 .flags = VM_STATE_RECORD_MANDATORY,
						 .length_bytes = length_bytes,
						 .payload = (uint8_t *)rec };
	struct vm_state_records state = { .records = &stored, .count = 1, .capacity = 1 };
	return pv_cpu_load(&vm, &state, error, error_len);
}

static void test_state_round_trip(void)
{
	setup_vm();
	char error[512] = "";
	struct vm_state_pv_cpu rec = valid_record();
	CU_ASSERT_EQUAL(load(&rec, sizeof(rec), error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(vm.vcpus[0].pv_cpu.traps[14].entry, 0x100000);
	CU_ASSERT_EQUAL(vm.vcpus[0].pv_cpu.callback.stack_top, 0x210000);
	CU_ASSERT_EQUAL(vm.vcpus[0].pv_cpu.active_vectors, 1u << 14);
	CU_ASSERT_EQUAL(vm.vcpus[0].pv_cpu.timer_deadline_ns, 5000000);
	CU_ASSERT_EQUAL(vm.vcpus[0].pv_cpu.timer_period_ns, 1000000);
	CU_ASSERT_EQUAL(vm.vcpus[0].pv_cpu.virq_port[KAPSEL_VIRQ_TIMER], 3);

	/* Saved again, the record is what was loaded. */
	struct vm_state_writer w;
	vm_state_writer_init_buffer(&w);
	pv_cpu_save(&vm, &w);
	CU_ASSERT_EQUAL(w.error, 0);
	CU_ASSERT_EQUAL(w.record_count, 1);
	CU_ASSERT_EQUAL_FATAL(w.buffer_bytes, sizeof(struct vm_state_record_header) + sizeof(rec));
	CU_ASSERT_EQUAL(memcmp(w.buffer + sizeof(struct vm_state_record_header), &rec, sizeof(rec)),
			0);
	vm_state_writer_free(&w);

	/* A guest that uses none of it writes no record; no record loads as
	 * "nothing registered". */
	struct vm_state_records empty = { 0 };
	CU_ASSERT_EQUAL(pv_cpu_load(&vm, &empty, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(vm.vcpus[0].pv_cpu.traps[14].entry, 0);
	CU_ASSERT_EQUAL(vm.vcpus[0].pv_cpu.timer_deadline_ns, KAPSEL_TIMER_STOP);
	vm_state_writer_init_buffer(&w);
	pv_cpu_save(&vm, &w);
	CU_ASSERT_EQUAL(w.record_count, 0);
	vm_state_writer_free(&w);
	guest_memory_destroy(&vm.mem);
}

/* A forged record is refused with a message, and the VM keeps its state. */
static void expect_refused(const struct vm_state_pv_cpu *rec, uint64_t length_bytes,
			   const char *text)
{
	struct pv_cpu_vcpu before = vm.vcpus[0].pv_cpu;
	char error[512] = "";
	CU_ASSERT_EQUAL(load(rec, length_bytes, error, sizeof(error)), -EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, text));
	CU_ASSERT_EQUAL(memcmp(&before, &vm.vcpus[0].pv_cpu, sizeof(before)), 0);
}

static void test_state_forged(void)
{
	setup_vm();
	struct vm_state_pv_cpu rec = valid_record();
	expect_refused(&rec, sizeof(rec) - 8, "expected 864");
	rec.traps[14].stack_top = RAM_BYTES + 0x10000; /* stack past RAM */
	expect_refused(&rec, sizeof(rec), "not in this VM's guest RAM");
	rec = valid_record();
	rec.callback.entry = 0x6000; /* the CPL0 stubs */
	expect_refused(&rec, sizeof(rec), "upcall callback at 0x6000");
	rec = valid_record();
	rec.traps[8] = rec.traps[14]; /* #DF */
	expect_refused(&rec, sizeof(rec), "vector 8");
	rec = valid_record();
	rec.timer_period_ns = 1000;
	expect_refused(&rec, sizeof(rec), "below the 100000 ns minimum");
	rec = valid_record();
	rec.virq_port[KAPSEL_VIRQ_TIMER] = 4; /* bound to a device */
	expect_refused(&rec, sizeof(rec), "VIRQ 0 to event channel 4");
	rec.virq_port[KAPSEL_VIRQ_TIMER] = 7; /* never allocated */
	expect_refused(&rec, sizeof(rec), "event channel 7");
	rec.virq_port[KAPSEL_VIRQ_TIMER] = KAPSEL_EVTCHN_CONTROL;
	expect_refused(&rec, sizeof(rec), "event channel 255");
	rec = valid_record();
	rec.vcpu = 2;
	expect_refused(&rec, sizeof(rec), "vCPU 2");
	rec = valid_record();
	rec.active_vectors = 1u << 8;
	expect_refused(&rec, sizeof(rec), "deliveries 0x100");
	guest_memory_destroy(&vm.mem);
}

/* SMP: each record goes to the vCPU it names; a vCPU the VM does not have,
 * or two records for one vCPU, are refused. */
static void test_state_several_vcpus(void)
{
	setup_vm();
	vm.vcpu_count = 2;
	vm.vcpus[1] = (struct kapsel_vcpu){ .vm = &vm, .id = 1, .fd = -1, .power = VCPU_POWER_UP };
	struct vm_state_pv_cpu recs[2] = { valid_record(), valid_record() };
	recs[1].vcpu = 1;
	recs[1].traps[14].entry = 0x100020;
	recs[1].virq_port[KAPSEL_VIRQ_TIMER] = UINT32_MAX;
	recs[1].timer_deadline_ns = KAPSEL_TIMER_STOP;
	struct vm_state_stored_record stored[2];
	for (unsigned i = 0; i < 2; i++)
		stored[i] = (struct vm_state_stored_record){ .type = VM_STATE_VCPU_PV_CPU,
							     .flags = VM_STATE_RECORD_MANDATORY,
							     .length_bytes = sizeof(recs[i]),
							     .payload = (uint8_t *)&recs[i] };
	struct vm_state_records state = { .records = stored, .count = 2, .capacity = 2 };
	char error[512] = "";
	CU_ASSERT_EQUAL(pv_cpu_load(&vm, &state, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(vm.vcpus[0].pv_cpu.traps[14].entry, 0x100000);
	CU_ASSERT_EQUAL(vm.vcpus[1].pv_cpu.traps[14].entry, 0x100020);
	CU_ASSERT_EQUAL(vm.vcpus[1].pv_cpu.timer_deadline_ns, KAPSEL_TIMER_STOP);
	CU_ASSERT(vm.vcpus[0].pv_cpu.timer_restored);
	CU_ASSERT(!vm.vcpus[1].pv_cpu.timer_restored);

	/* Saved again: one record per vCPU, each with its number. */
	struct vm_state_writer w;
	vm_state_writer_init_buffer(&w);
	pv_cpu_save(&vm, &w);
	CU_ASSERT_EQUAL(w.record_count, 2);
	vm_state_writer_free(&w);
	/* A down vCPU has no PV CPU state to save. */
	vm.vcpus[1].power = VCPU_POWER_DOWN;
	vm_state_writer_init_buffer(&w);
	pv_cpu_save(&vm, &w);
	CU_ASSERT_EQUAL(w.record_count, 1);
	vm_state_writer_free(&w);

	recs[1].vcpu = 0; /* two records for vCPU 0 */
	CU_ASSERT_EQUAL(pv_cpu_load(&vm, &state, error, sizeof(error)), -EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "two records"));
	recs[1].vcpu = 2; /* the VM has 2 vCPUs: 0 and 1 */
	CU_ASSERT_EQUAL(pv_cpu_load(&vm, &state, error, sizeof(error)), -EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "vCPU 2"));
	/* Nothing changed by the refused loads. */
	CU_ASSERT_EQUAL(vm.vcpus[1].pv_cpu.traps[14].entry, 0x100020);
	guest_memory_destroy(&vm.mem);
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
		{ "state record: save and load", test_state_round_trip },
		{ "state record: forged records are refused", test_state_forged },
		{ "state records of several vCPUs", test_state_several_vcpus },
	};
	return unit_run("pv_cpu", tests, sizeof(tests) / sizeof(tests[0]));
}
