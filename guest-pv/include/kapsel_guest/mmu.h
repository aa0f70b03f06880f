/* Guest PV MMU API: address spaces for processes, user mode, syscalls and the kernel stack. */
#ifndef KAPSEL_GUEST_MMU_H
#define KAPSEL_GUEST_MMU_H

/*
 * Several vCPUs: the PV MMU works on a VM with one vCPU only in ABI 1.6
 * (the calls get -KAPSEL_ENOSYS otherwise): none of these is for SMP.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kapsel/abi.h"
#include "kapsel_guest/cpu.h"

/* True when the hypervisor offers KAPSEL_FEATURE_PV_MMU (docs/abi.md §18). */
bool kg_mmu_available(void);

/* A new empty address space: its id (1 .. KAPSEL_AS_MAX - 1) or a negative KAPSEL_E* code. */
int kg_as_create(void);

/* Destroy address space as (not the current one).  Returns 0 or a negative KAPSEL_E* code. */
int kg_as_destroy(int as);

/*
 * Apply ops[0 .. count) to address space as, in order, in batches of
 * KAPSEL_MMU_BATCH_MAX.  Returns the number applied: count on success;
 * otherwise ops[returned].result holds why the next one was refused.
 * ops must lie in kernel memory (guest-physical == virtual).
 */
size_t kg_mmu_update(int as, struct kapsel_mmu_op *ops, size_t count);

/* One-op conveniences; return 0 or a negative KAPSEL_E* code. */
int kg_mmu_map(int as, uint64_t va, uint64_t gpa, unsigned prot);
int kg_mmu_unmap(int as, uint64_t va);
int kg_mmu_protect(int as, uint64_t va, unsigned prot);

/* Make as (0: none) the current address space: the user view processes run
 * in and the kernel sees beside its own memory.  Returns 0 or a negative code. */
int kg_as_switch(int as);

/*
 * Entries from user mode (syscall, exception, upcall) put their frame at
 * the top of [stack, stack + stack_bytes).  Call it on each process switch
 * with the next process's kernel stack.  Returns 0 or a negative code.
 */
int kg_kernel_stack_set(void *stack, size_t stack_bytes);

/*
 * Run handler for each syscall instruction executed in user mode, with the
 * process's registers in the frame (frame->rax: number; rdi, rsi, rdx,
 * r10, r8, r9: arguments by the usual convention).  The handler writes the
 * result into frame->rax; the process resumes when it returns.  NULL
 * removes it.  Returns 0 or a negative KAPSEL_E* code.
 */
int kg_syscall_register(kg_trap_handler handler);

/*
 * Resume (or start) the context in frame in user mode of the current
 * address space: sets KAPSEL_TRAP_FRAME_USER and makes the IRET hypercall.
 * Does not return, unless the hypervisor refused (no current address space
 * or kernel stack): then returns that negative KAPSEL_E* code.  frame must
 * lie in kernel memory.
 */
int kg_user_enter(struct kapsel_trap_frame *frame);

/* True if frame was taken in user mode. */
static inline bool kg_frame_from_user(const struct kapsel_trap_frame *frame)
{
	return (frame->flags & KAPSEL_TRAP_FRAME_USER) != 0;
}

/* Raw calls (abi.h). */
int64_t kg_hc_as_create(void);
int64_t kg_hc_as_destroy(uint64_t as);
int64_t kg_hc_mmu_update(uint64_t as, uint64_t ops_gpa, uint64_t count);
int64_t kg_hc_as_switch(uint64_t as);
int64_t kg_hc_set_syscall(uint64_t entry);
int64_t kg_hc_kernel_stack(uint64_t stack_top, uint64_t stack_bytes);

#endif
