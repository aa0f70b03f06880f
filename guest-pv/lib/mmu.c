/* Guest PV MMU: address-space hypercalls, batched page-table updates, user mode and syscalls. */
#include "kapsel_guest/mmu.h"

#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/platform.h"

/* cpu.c dispatches syscall frames here. */
extern kg_trap_handler kg_cpu_syscall_handler;

bool kg_mmu_available(void)
{
	const struct kapsel_start_info *si = kg_platform_start_info();
	return si && (si->features & KAPSEL_FEATURE_PV_MMU);
}

int64_t kg_hc_as_create(void)
{
	return kg_hypercall(KAPSEL_HC_AS_CREATE, 0, 0, 0, 0, 0);
}

int64_t kg_hc_as_destroy(uint64_t as)
{
	return kg_hypercall(KAPSEL_HC_AS_DESTROY, as, 0, 0, 0, 0);
}

int64_t kg_hc_mmu_update(uint64_t as, uint64_t ops_gpa, uint64_t count)
{
	return kg_hypercall(KAPSEL_HC_MMU_UPDATE, as, ops_gpa, count, 0, 0);
}

int64_t kg_hc_as_switch(uint64_t as)
{
	return kg_hypercall(KAPSEL_HC_AS_SWITCH, as, 0, 0, 0, 0);
}

int64_t kg_hc_set_syscall(uint64_t entry)
{
	return kg_hypercall(KAPSEL_HC_SET_SYSCALL, entry, 0, 0, 0, 0);
}

int64_t kg_hc_kernel_stack(uint64_t stack_top, uint64_t stack_bytes)
{
	return kg_hypercall(KAPSEL_HC_KERNEL_STACK, stack_top, stack_bytes, 0, 0, 0);
}

int kg_as_create(void)
{
	if (!kg_mmu_available())
		return -KAPSEL_ENOSYS;
	return (int)kg_hc_as_create();
}

int kg_as_destroy(int as)
{
	return (int)kg_hc_as_destroy((uint64_t)as);
}

size_t kg_mmu_update(int as, struct kapsel_mmu_op *ops, size_t count)
{
	size_t done = 0;
	while (done < count) {
		size_t batch = count - done;
		if (batch > KAPSEL_MMU_BATCH_MAX)
			batch = KAPSEL_MMU_BATCH_MAX;
		int64_t rc =
			kg_hc_mmu_update((uint64_t)as, (uint64_t)(uintptr_t)(ops + done), batch);
		if (rc < 0) {
			/* The whole call was refused (bad id, array outside RAM). */
			ops[done].result = rc;
			return done;
		}
		done += (size_t)rc;
		if ((size_t)rc < batch)
			return done;
	}
	return done;
}

static int one_op(int as, uint32_t kind, uint64_t va, uint64_t gpa, unsigned prot)
{
	struct kapsel_mmu_op op = { .va = va, .gpa = gpa, .op = kind, .prot = prot, .result = 0 };
	if (kg_mmu_update(as, &op, 1) == 1)
		return 0;
	return op.result ? (int)op.result : -KAPSEL_EIO;
}

int kg_mmu_map(int as, uint64_t va, uint64_t gpa, unsigned prot)
{
	return one_op(as, KAPSEL_MMU_MAP, va, gpa, prot);
}

int kg_mmu_unmap(int as, uint64_t va)
{
	return one_op(as, KAPSEL_MMU_UNMAP, va, 0, 0);
}

int kg_mmu_protect(int as, uint64_t va, unsigned prot)
{
	return one_op(as, KAPSEL_MMU_PROTECT, va, 0, prot);
}

int kg_as_switch(int as)
{
	return (int)kg_hc_as_switch((uint64_t)as);
}

int kg_kernel_stack_set(void *stack, size_t stack_bytes)
{
	uint64_t top = (uint64_t)(uintptr_t)((uint8_t *)stack + stack_bytes) & ~15ull;
	return (int)kg_hc_kernel_stack(top, stack_bytes & ~15ull);
}

int kg_syscall_register(kg_trap_handler handler)
{
	if (!kg_mmu_available())
		return -KAPSEL_ENOSYS;
	kg_cpu_syscall_handler = handler;
	int64_t rc = kg_hc_set_syscall(handler ? (uint64_t)(uintptr_t)kg_cpu_entry : 0);
	if (rc < 0)
		kg_cpu_syscall_handler = 0;
	return (int)rc;
}

int kg_user_enter(struct kapsel_trap_frame *frame)
{
	frame->flags |= KAPSEL_TRAP_FRAME_USER;
	return (int)kg_hypercall(KAPSEL_HC_IRET, (uint64_t)(uintptr_t)frame, 0, 0, 0, 0);
}
