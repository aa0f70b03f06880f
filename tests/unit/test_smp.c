/* Unit tests for SMP's pure parts: VCPU_UP's checks and the split of saved state by vCPU. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <string.h>

#include "core/smp.h"
#include "core/vm.h"
#include "state/vcpu_state.h"
#include "cunit_main.h"

#define RAM_BYTES (8u << 20)
#define FLOOR 0x60000u

static void test_check_start(void)
{
	struct guest_memory mem;
	CU_ASSERT_EQUAL_FATAL(guest_memory_create(&mem, RAM_BYTES, "smp-test"), 0);
	mem.guest_floor_gpa = FLOOR;
	CU_ASSERT_EQUAL(smp_check_start(&mem, 0x100000, 0x200000), 0);
	/* The lowest stack that fits: its top page starts at the floor. */
	CU_ASSERT_EQUAL(smp_check_start(&mem, 0x100000, FLOOR + 4096), 0);
	CU_ASSERT_EQUAL(smp_check_start(&mem, 0x100000, FLOOR + 4096 - 16), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(smp_check_start(&mem, 0x100000, RAM_BYTES), 0);
	CU_ASSERT_EQUAL(smp_check_start(&mem, 0x100000, RAM_BYTES + 16), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(smp_check_start(&mem, 0x100000, 0x200008), -KAPSEL_EINVAL);
	/* Hypervisor memory: the GDT, the exception stacks, page 0. */
	CU_ASSERT_EQUAL(smp_check_start(&mem, 0x1000, 0x200000), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(smp_check_start(&mem, 0x100000, 0x10000), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(smp_check_start(&mem, 0, 0x200000), -KAPSEL_EFAULT);
	/* Outside RAM, and a stack top that would wrap. */
	CU_ASSERT_EQUAL(smp_check_start(&mem, RAM_BYTES, 0x200000), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(smp_check_start(&mem, ~0ull, 0x200000), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(smp_check_start(&mem, 0x100000, 0), -KAPSEL_EFAULT);
	guest_memory_destroy(&mem);
}

/* A stream under construction: records with one-byte payloads naming them. */
struct stream {
	struct vm_state_stored_record records[32];
	struct vm_state_vcpu_group groups[8];
	uint8_t tags[32];
	size_t count, group_count;
};

static void add(struct stream *s, uint32_t type, uint8_t tag)
{
	s->tags[s->count] = tag;
	s->records[s->count] = (struct vm_state_stored_record){ .type = type,
								.length_bytes = 1,
								.payload = &s->tags[s->count] };
	s->count++;
}

static void add_group(struct stream *s, uint32_t vcpu, uint32_t power)
{
	struct vm_state_vcpu_group *g = &s->groups[s->group_count++];
	memset(g, 0, sizeof(*g));
	g->vcpu = vcpu;
	g->power = power;
	g->start_rip = 0x100000;
	s->records[s->count++] = (struct vm_state_stored_record){ .type = VM_STATE_VCPU_GROUP,
								  .length_bytes = sizeof(*g),
								  .payload = (uint8_t *)g };
}

static struct vm_state_records as_records(struct stream *s)
{
	return (struct vm_state_records){ .records = s->records,
					  .count = s->count,
					  .capacity = s->count };
}

static uint8_t tag_of(const struct vm_state_records *view, uint32_t type)
{
	const struct vm_state_stored_record *r = vm_state_find(view, type, NULL);
	return r ? r->payload[0] : 0;
}

static void test_split(void)
{
	struct stream s = { 0 };
	add(&s, VM_STATE_VM_INFO, 1);
	add(&s, VM_STATE_VCPU_REGS, 10);
	add(&s, VM_STATE_VCPU_SREGS, 11);
	add_group(&s, 2, VCPU_POWER_UP);
	add(&s, VM_STATE_VCPU_REGS, 20);
	add(&s, VM_STATE_VCPU_MP_STATE, 21);
	add_group(&s, 1, VCPU_POWER_DOWN);
	add(&s, VM_STATE_EVTCHN, 2); /* ends the group: the VM's */
	add(&s, VM_STATE_VCPU_PV_CPU, 3);
	add(&s, VM_STATE_VCPU_REGS, 30); /* after a VM record: vCPU 0's view */
	struct vm_state_records state = as_records(&s);
	struct vcpu_state_split split;
	char error[300] = "";
	CU_ASSERT_EQUAL_FATAL(vcpu_state_split(&state, 3, &split, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(tag_of(&split.views[0], VM_STATE_VCPU_REGS), 10);
	CU_ASSERT_EQUAL(tag_of(&split.views[0], VM_STATE_VCPU_SREGS), 11);
	CU_ASSERT_EQUAL(tag_of(&split.views[0], VM_STATE_EVTCHN), 2);
	CU_ASSERT_EQUAL(tag_of(&split.views[0], VM_STATE_VCPU_PV_CPU), 3);
	CU_ASSERT_EQUAL(tag_of(&split.views[2], VM_STATE_VCPU_REGS), 20);
	CU_ASSERT_EQUAL(tag_of(&split.views[2], VM_STATE_VCPU_MP_STATE), 21);
	CU_ASSERT_EQUAL(split.views[2].count, 2);
	CU_ASSERT_EQUAL(split.views[1].count, 0);
	CU_ASSERT(split.present[1] && split.present[2] && !split.present[0]);
	CU_ASSERT_EQUAL(split.groups[2].power, VCPU_POWER_UP);
	CU_ASSERT_EQUAL(split.groups[1].power, VCPU_POWER_DOWN);
	vcpu_state_split_free(&split);
}

static void expect_split_refused(struct stream *s, unsigned vcpu_count, const char *needle)
{
	struct vm_state_records state = as_records(s);
	struct vcpu_state_split split;
	char error[300] = "";
	CU_ASSERT_EQUAL(vcpu_state_split(&state, vcpu_count, &split, error, sizeof(error)),
			-EPROTO);
	if (!strstr(error, needle))
		fprintf(stderr, "\n  expected '%s' in: %s\n", needle, error);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, needle));
}

static void test_split_forged(void)
{
	struct stream s = { 0 };
	add_group(&s, 0, VCPU_POWER_UP); /* vCPU 0 has no group */
	expect_split_refused(&s, 2, "vCPU 0");
	s = (struct stream){ 0 };
	add_group(&s, 2, VCPU_POWER_UP); /* beyond the VM's two vCPUs */
	expect_split_refused(&s, 2, "vCPU 2");
	s = (struct stream){ 0 };
	add_group(&s, 1, VCPU_POWER_UP);
	add_group(&s, 1, VCPU_POWER_DOWN);
	expect_split_refused(&s, 2, "saved twice");
	s = (struct stream){ 0 };
	add_group(&s, 1, 7); /* no such power state */
	expect_split_refused(&s, 2, "power 7");
	s = (struct stream){ 0 };
	add_group(&s, 1, VCPU_POWER_UP);
	s.records[0].length_bytes = 8;
	expect_split_refused(&s, 2, "expected 56");
	/* A one-vCPU VM has no groups at all. */
	s = (struct stream){ 0 };
	add_group(&s, 1, VCPU_POWER_DOWN);
	expect_split_refused(&s, 1, "has 1 vCPUs");
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "VCPU_UP entry and stack checks", test_check_start },
		{ "saved state split by vCPU", test_split },
		{ "forged vCPU groups are refused", test_split_forged },
	};
	return unit_run("smp", tests, sizeof(tests) / sizeof(tests[0]));
}
