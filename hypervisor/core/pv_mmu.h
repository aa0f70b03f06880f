/* PV MMU: guest address spaces in hypervisor-held page tables, user mode, and CR3/TSS switching. */
#ifndef KAPSEL_PV_MMU_H
#define KAPSEL_PV_MMU_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/guest_memory.h"
#include "core/hypercall.h"
#include "core/pv_cpu.h"
#include "kapsel/abi.h"

struct kapsel_vm;
struct kapsel_vcpu;

/* One address space: two PML4s in the pool sharing every user table. */
struct pv_mmu_space {
	bool used;
	uint32_t user_root;   /* pool page: user half + the system-only low map */
	uint32_t kernel_root; /* pool page: user half + the identity map of RAM */
};

/*
 * The VM's page-table pool and address spaces.  The pool is host memory
 * registered with KVM at pool_gpa, outside guest RAM: the CPU walks it,
 * the guest can never map it (a mapped frame must be guest RAM), so no
 * page of a page table is ever guest-writable.  Touched by vCPU threads
 * under vm->lock (save/restore run with every vCPU stopped).
 */
struct pv_mmu {
	uint8_t *pool;	   /* KAPSEL_MMU_TABLE_PAGES pages, MAP_NORESERVE */
	uint64_t pool_gpa; /* where KVM maps it (memslot PV_MMU_POOL_SLOT) */
	uint32_t free_pages[KAPSEL_MMU_TABLE_PAGES];
	uint32_t free_count;
	struct pv_mmu_space spaces[KAPSEL_AS_MAX];
	uint64_t syscall_entry; /* 0: none; the same for every vCPU */
	/* Counters (vm_print_stats). */
	uint64_t ops_applied, ops_refused, switches, syscalls, user_entries, reloads,
		remote_flushes;
};

/*
 * One vCPU's mode and address space (struct kapsel_vcpu.pv_mmu): touched by
 * its own thread, except reload_pending, which another vCPU's MMU_UPDATE
 * of the space this one runs sets (a TLB shootdown).
 */
struct pv_mmu_vcpu {
	unsigned current; /* 0: none */
	bool user_mode;	  /* the vCPU runs a process (user view, no ports) */
	/* atomic: CR3 and TR must be reloaded in the guest before it runs
	 * again: mode or address-space change, or an update of the space. */
	int reload_pending;
	struct pv_handler kernel_stack;
};

#define PV_MMU_POOL_SLOT 1u

/* ---- Pure part (unit-tested without KVM) -------------------------------- */

/*
 * Prepare m over pool (KAPSEL_MMU_TABLE_PAGES zeroed pages the caller owns)
 * which the CPU sees at pool_gpa.  Every table page is free, no address
 * space exists, kernel mode.
 */
void pv_mmu_init(struct pv_mmu *m, uint8_t *pool, uint64_t pool_gpa);

/* Forget every address space (boot, reboot, before a restore). */
void pv_mmu_clear(struct pv_mmu *m);

/* A vCPU in kernel mode on no process address space, no kernel stack. */
void pv_mmu_vcpu_clear(struct pv_mmu_vcpu *v);

/* A new empty address space: its id, or -KAPSEL_ENOSPC / -KAPSEL_ENOMEM. */
int pv_mmu_space_create(struct pv_mmu *m);

/* Create the empty address space with id as (1 .. KAPSEL_AS_MAX - 1, not
 * in use): 0, -KAPSEL_EINVAL or -KAPSEL_ENOMEM.  For restores. */
int pv_mmu_space_create_at(struct pv_mmu *m, unsigned as);

/* Free space as and its tables: 0 or -KAPSEL_EINVAL / -KAPSEL_ENOENT (no
 * such space).  The caller refuses a space a vCPU runs on (-EBUSY). */
int pv_mmu_space_destroy(struct pv_mmu *m, uint64_t as);

/*
 * Check and apply one op (a private copy) to space as, which exists.
 * mem is guest RAM: a mapped frame must lie in it at or above
 * guest_floor_gpa.  Returns 0 or -KAPSEL_EINVAL / -EFAULT / -ENOENT /
 * -ENOMEM; a refused op changes nothing.
 */
int pv_mmu_apply(struct pv_mmu *m, const struct guest_memory *mem, unsigned as,
		 const struct kapsel_mmu_op *op);

/* The leaf entry for va in space as (0 if none): for tests and state. */
uint64_t pv_mmu_lookup(const struct pv_mmu *m, unsigned as, uint64_t va);

/* Call fn(va, gpa, prot, arg) for every mapping of space as, in address order. */
void pv_mmu_each_mapping(const struct pv_mmu *m, unsigned as,
			 void (*fn)(uint64_t va, uint64_t gpa, unsigned prot, void *arg),
			 void *arg);

/* CR3 for vCPU v's mode and address space. */
uint64_t pv_mmu_cr3(const struct pv_mmu *m, const struct pv_mmu_vcpu *v);

/* Table pages in use (for stats and tests). */
unsigned pv_mmu_pages_used(const struct pv_mmu *m);

/* ---- VMM side ------------------------------------------------------------ */

/* Allocate the pool and register it with KVM (vm_create, before the
 * sandbox).  Returns 0 or -errno (message printed). */
int pv_mmu_create(struct kapsel_vm *vm);

/* Release the pool (vm_destroy). */
void pv_mmu_destroy(struct kapsel_vm *vm);

/* Point vcpu's syscall MSRs (STAR, LSTAR, SFMASK) at the hypervisor's
 * syscall stub.  Returns 0 or -EIO (warned). */
int pv_mmu_set_syscall_msrs(struct kapsel_vcpu *vcpu);

/* Register the PV MMU hypercalls.  Returns 0 or -errno. */
int pv_mmu_register_hypercalls(struct hypercall_table *table);

/* Enter or leave user mode at vcpu's next reload (pv_cpu.c's entries). */
void pv_mmu_set_user_mode(struct kapsel_vcpu *vcpu, bool user);

/* Can IRET resume a frame in user mode on vcpu (a current space and a kernel stack)? */
bool pv_mmu_user_mode_possible(const struct kapsel_vcpu *vcpu);

/* A vCPU starts afresh (VCPU_UP): kernel mode, no space, no kernel stack;
 * EFER follows the VM's syscall entry from its first entry on. */
void pv_mmu_vcpu_start(struct kapsel_vcpu *vcpu);

/*
 * If a reload is pending, turn the CPL3 context in the vCPU's registers
 * into an entry through the switch stub that loads the right CR3 (which
 * flushes the TLB) and TR.  Called after every hypercall, trap and upcall
 * delivery, before KVM_RUN.  Returns false if KVM refused (VM crashed).
 */
bool pv_mmu_finish(struct kapsel_vcpu *vcpu);

/*
 * A KVM_EXIT_HLT: if it is the syscall stub's, deliver the syscall (to the
 * kernel's entry, or as #UD) and return true; false for any other hlt.
 */
bool pv_mmu_handle_hlt(struct kapsel_vcpu *vcpu);

/* Before a save: if the vCPU stopped inside the switch stub, complete the
 * switch in its saved registers (the stub is CPL0 code). */
void pv_mmu_settle(struct kapsel_vcpu *vcpu);

/* Print counters (vm_print_stats). */
void pv_mmu_print_stats(const struct kapsel_vm *vm, FILE *out);

/* ---- Saved state (pv_mmu_state.c) ----------------------------------------- */

struct vm_state_writer;
struct vm_state_records;

/* Payload of VM_STATE_VCPU_PV_MMU (little-endian, fixed layout). */
struct vm_state_pv_mmu {
	uint32_t vcpu;	    /* 0 */
	uint32_t current;   /* 0 or an address space in spaces_mask */
	uint32_t user_mode; /* 0 or 1 */
	uint32_t _pad;
	uint64_t spaces_mask; /* bit n: address space n exists */
	uint64_t syscall_entry;
	uint64_t kernel_stack_top, kernel_stack_bytes;
	uint64_t mapping_count; /* over every VM_STATE_PV_MMU_MAPPINGS record */
	uint64_t _reserved[2];
};
_Static_assert(sizeof(struct vm_state_pv_mmu) == 72, "pv_mmu record layout");

/* One mapping: VM_STATE_PV_MMU_MAPPINGS holds an array of them. */
struct vm_state_pv_mmu_mapping {
	uint32_t as;
	uint32_t prot; /* KAPSEL_PROT_* */
	uint64_t va, gpa;
};
_Static_assert(sizeof(struct vm_state_pv_mmu_mapping) == 24, "pv_mmu mapping layout");
/* Mappings per record, and in all: what a restore keeps in memory. */
#define PV_MMU_STATE_MAPPINGS_PER_RECORD 32768u
#define PV_MMU_STATE_MAPPINGS_MAX (PV_MMU_STATE_MAPPINGS_PER_RECORD * 16u)

/*
 * Append the PV MMU state (mandatory records) if the guest uses it: an
 * address space, a syscall entry or a kernel stack.  The table pages are
 * not saved; their mappings are, and a restore rebuilds the tables through
 * the same checks as MMU_UPDATE.  More than PV_MMU_STATE_MAPPINGS_MAX
 * mappings fail the save (out->error = -EFBIG, message printed).
 * Precondition: the vCPU is paused (pv_mmu_settle ran).
 */
void pv_mmu_save(struct kapsel_vm *vm, struct vm_state_writer *out);

/*
 * Rebuild the address spaces, mode and registrations from state (none:
 * no address space, kernel mode), checking every mapping as MMU_UPDATE
 * does and the kernel stack and syscall entry against this VM's RAM; the
 * right CR3 and TR are loaded before the vCPU runs.  Returns 0 or -EPROTO
 * with a message in error (the PV MMU is then left empty).
 */
int pv_mmu_load(struct kapsel_vm *vm, const struct vm_state_records *state, char *error,
		size_t error_len);

/* Print the PV MMU record of state, if any, for `kapsel inspect`. */
void pv_mmu_state_print(const struct vm_state_records *state, FILE *out);

#endif
