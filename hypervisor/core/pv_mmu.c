/* PV MMU: guest address spaces in hypervisor-held page tables, user mode, and CR3/TSS switching. */
#define _GNU_SOURCE
#include "core/pv_mmu.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sched.h>
#include <sys/mman.h>

#include "core/crash_report.h"
#include "core/log.h"
#include "core/vm.h"
#include "core/x86_boot.h"

#define PTE_PRESENT 0x1ull
#define PTE_WRITE 0x2ull
#define PTE_USER 0x4ull
#define PTE_NX (1ull << 63)
#define PTE_ADDR 0x000ffffffffff000ull
#define PAGE_BYTES 4096ull

#define EFER_SCE (1ull << 0)
#define EFER_NXE (1ull << 11)
#define MSR_STAR 0xc0000081u
#define MSR_LSTAR 0xc0000082u
#define MSR_SFMASK 0xc0000084u
/* syscall clears TF, IF, DF, IOPL, NT and AC on its way to the stub. */
#define SFMASK_BITS 0x47700ull

/* First PML4 slot of the user half; slot 0 is the kernel's (or system) map. */
#define USER_PML4_FIRST (KAPSEL_USER_VA_MIN >> 39)
#define USER_PML4_END (KAPSEL_USER_VA_END >> 39)

/* The switch stub's frame: [rax, rip, cs, rflags, rsp, ss]. */
#define SWITCH_FRAME_WORDS 6u
static uint64_t switch_frame_gpa(const struct kapsel_vcpu *vcpu)
{
	return x86_exception_stack_top(vcpu->id) - SWITCH_FRAME_WORDS * 8u;
}

/* ---- Pool ---------------------------------------------------------------- */

static uint64_t *table(const struct pv_mmu *m, uint32_t page)
{
	return (uint64_t *)(m->pool + (uint64_t)page * PAGE_BYTES);
}

static uint64_t page_gpa(const struct pv_mmu *m, uint32_t page)
{
	return m->pool_gpa + (uint64_t)page * PAGE_BYTES;
}

/* The pool page an intermediate entry points to.  Only the hypervisor
 * writes entries, so this cannot fail unless the pool is corrupt. */
static bool entry_page(const struct pv_mmu *m, uint64_t entry, uint32_t *page)
{
	uint64_t gpa = entry & PTE_ADDR;
	if (gpa < m->pool_gpa || gpa >= m->pool_gpa + KAPSEL_MMU_TABLE_PAGES * PAGE_BYTES)
		return false;
	*page = (uint32_t)((gpa - m->pool_gpa) / PAGE_BYTES);
	return true;
}

static int page_alloc(struct pv_mmu *m, uint32_t *page)
{
	if (!m->free_count)
		return -KAPSEL_ENOMEM;
	*page = m->free_pages[--m->free_count];
	memset(table(m, *page), 0, PAGE_BYTES);
	return 0;
}

static void page_free(struct pv_mmu *m, uint32_t page)
{
	m->free_pages[m->free_count++] = page;
}

void pv_mmu_init(struct pv_mmu *m, uint8_t *pool, uint64_t pool_gpa)
{
	memset(m, 0, sizeof(*m));
	m->pool = pool;
	m->pool_gpa = pool_gpa;
	pv_mmu_clear(m);
}

void pv_mmu_clear(struct pv_mmu *m)
{
	memset(m->spaces, 0, sizeof(m->spaces));
	/* Page 0 is handed out first. */
	for (uint32_t i = 0; i < KAPSEL_MMU_TABLE_PAGES; i++)
		m->free_pages[i] = KAPSEL_MMU_TABLE_PAGES - 1 - i;
	m->free_count = KAPSEL_MMU_TABLE_PAGES;
	m->syscall_entry = 0;
}

void pv_mmu_vcpu_clear(struct pv_mmu_vcpu *v)
{
	v->current = 0;
	v->user_mode = false;
	__atomic_store_n(&v->reload_pending, 0, __ATOMIC_SEQ_CST);
	memset(&v->kernel_stack, 0, sizeof(v->kernel_stack));
}

unsigned pv_mmu_pages_used(const struct pv_mmu *m)
{
	return KAPSEL_MMU_TABLE_PAGES - m->free_count;
}

/* ---- Address spaces -------------------------------------------------------- */

int pv_mmu_space_create_at(struct pv_mmu *m, unsigned as)
{
	if (as == 0 || as >= KAPSEL_AS_MAX || m->spaces[as].used)
		return -KAPSEL_EINVAL;
	uint32_t user_root, kernel_root;
	if (page_alloc(m, &user_root))
		return -KAPSEL_ENOMEM;
	if (page_alloc(m, &kernel_root)) {
		page_free(m, user_root);
		return -KAPSEL_ENOMEM;
	}
	/* Slot 0: user mode sees only the supervisor pages the CPU needs;
	 * kernel mode the hypervisor's identity map of RAM (x86_boot.c). */
	table(m, user_root)[0] = X86_GPA_SYS_PDPT | PTE_PRESENT | PTE_WRITE;
	table(m, kernel_root)[0] = X86_GPA_PDPT | PTE_PRESENT | PTE_WRITE | PTE_USER;
	m->spaces[as] = (struct pv_mmu_space){ .used = true,
					       .user_root = user_root,
					       .kernel_root = kernel_root };
	return 0;
}

int pv_mmu_space_create(struct pv_mmu *m)
{
	unsigned as = 1;
	while (as < KAPSEL_AS_MAX && m->spaces[as].used)
		as++;
	if (as == KAPSEL_AS_MAX)
		return -KAPSEL_ENOSPC;
	int err = pv_mmu_space_create_at(m, as);
	return err ? err : (int)as;
}

/* Free the tables below entry at level (0 = a PML4 entry's PDPT). */
static void free_tree(struct pv_mmu *m, uint64_t entry, unsigned level)
{
	uint32_t page;
	if (!(entry & PTE_PRESENT) || !entry_page(m, entry, &page))
		return;
	if (level < 2)
		for (unsigned i = 0; i < 512; i++)
			free_tree(m, table(m, page)[i], level + 1);
	page_free(m, page);
}

int pv_mmu_space_destroy(struct pv_mmu *m, uint64_t as)
{
	if (as == 0 || as >= KAPSEL_AS_MAX)
		return -KAPSEL_EINVAL;
	if (!m->spaces[as].used)
		return -KAPSEL_ENOENT;
	struct pv_mmu_space *s = &m->spaces[as];
	for (uint64_t slot = USER_PML4_FIRST; slot < USER_PML4_END; slot++)
		free_tree(m, table(m, s->user_root)[slot], 0);
	page_free(m, s->user_root);
	page_free(m, s->kernel_root);
	memset(s, 0, sizeof(*s));
	return 0;
}

/*
 * The leaf entry for va in space as, creating missing tables if create.
 * NULL when a table is missing (and not created) or the pool is full
 * (*err = -KAPSEL_ENOMEM then).
 */
static uint64_t *walk(struct pv_mmu *m, unsigned as, uint64_t va, bool create, int *err)
{
	static const unsigned shifts[3] = { 39, 30, 21 };
	const struct pv_mmu_space *s = &m->spaces[as];
	uint64_t *level_table = table(m, s->user_root);
	for (unsigned level = 0; level < 3; level++) {
		unsigned index = (unsigned)(va >> shifts[level]) & 511u;
		uint64_t entry = level_table[index];
		uint32_t page;
		if (!(entry & PTE_PRESENT)) {
			if (!create)
				return NULL;
			if (page_alloc(m, &page)) {
				*err = -KAPSEL_ENOMEM;
				return NULL;
			}
			entry = page_gpa(m, page) | PTE_PRESENT | PTE_WRITE | PTE_USER;
			level_table[index] = entry;
			/* Both roots share every user table. */
			if (level == 0)
				table(m, s->kernel_root)[index] = entry;
		} else if (!entry_page(m, entry, &page)) {
			*err = -KAPSEL_EIO;
			return NULL;
		}
		level_table = table(m, page);
	}
	return &level_table[(va >> 12) & 511u];
}

static uint64_t leaf_entry(uint64_t gpa, unsigned prot)
{
	uint64_t entry = (gpa & PTE_ADDR) | PTE_PRESENT | PTE_USER;
	if (prot & KAPSEL_PROT_WRITE)
		entry |= PTE_WRITE;
	if (!(prot & KAPSEL_PROT_EXEC))
		entry |= PTE_NX;
	return entry;
}

int pv_mmu_apply(struct pv_mmu *m, const struct guest_memory *mem, unsigned as,
		 const struct kapsel_mmu_op *op)
{
	int err = 0;
	if ((op->va & (PAGE_BYTES - 1)) || op->va < KAPSEL_USER_VA_MIN ||
	    op->va >= KAPSEL_USER_VA_END || (op->prot & ~(KAPSEL_PROT_WRITE | KAPSEL_PROT_EXEC)))
		return -KAPSEL_EINVAL;
	uint64_t *pte;
	switch (op->op) {
	case KAPSEL_MMU_MAP:
		if (op->gpa & (PAGE_BYTES - 1))
			return -KAPSEL_EINVAL;
		/* Guest RAM above the hypervisor's own pages only: never the
		 * tables, the start info or the event page; never the pool. */
		if (!guest_memory_translate_guest(mem, op->gpa, PAGE_BYTES))
			return -KAPSEL_EFAULT;
		pte = walk(m, as, op->va, true, &err);
		if (!pte)
			return err;
		*pte = leaf_entry(op->gpa, op->prot);
		return 0;
	case KAPSEL_MMU_UNMAP:
		pte = walk(m, as, op->va, false, &err);
		if (err)
			return err;
		if (pte)
			*pte = 0;
		return 0;
	case KAPSEL_MMU_PROTECT:
		pte = walk(m, as, op->va, false, &err);
		if (err)
			return err;
		if (!pte || !(*pte & PTE_PRESENT))
			return -KAPSEL_ENOENT;
		*pte = leaf_entry(*pte & PTE_ADDR, op->prot);
		return 0;
	default:
		return -KAPSEL_EINVAL;
	}
}

uint64_t pv_mmu_lookup(const struct pv_mmu *m, unsigned as, uint64_t va)
{
	int err = 0;
	if (as == 0 || as >= KAPSEL_AS_MAX || !m->spaces[as].used || va < KAPSEL_USER_VA_MIN ||
	    va >= KAPSEL_USER_VA_END)
		return 0;
	/* walk without create does not change the pool. */
	uint64_t *pte = walk((struct pv_mmu *)m, as, va, false, &err);
	return pte ? *pte : 0;
}

void pv_mmu_each_mapping(const struct pv_mmu *m, unsigned as,
			 void (*fn)(uint64_t va, uint64_t gpa, unsigned prot, void *arg), void *arg)
{
	if (as == 0 || as >= KAPSEL_AS_MAX || !m->spaces[as].used)
		return;
	const uint64_t *pml4 = table(m, m->spaces[as].user_root);
	for (uint64_t i4 = USER_PML4_FIRST; i4 < USER_PML4_END; i4++) {
		uint32_t pdpt, pd, pt;
		if (!(pml4[i4] & PTE_PRESENT) || !entry_page(m, pml4[i4], &pdpt))
			continue;
		for (uint64_t i3 = 0; i3 < 512; i3++) {
			uint64_t e3 = table(m, pdpt)[i3];
			if (!(e3 & PTE_PRESENT) || !entry_page(m, e3, &pd))
				continue;
			for (uint64_t i2 = 0; i2 < 512; i2++) {
				uint64_t e2 = table(m, pd)[i2];
				if (!(e2 & PTE_PRESENT) || !entry_page(m, e2, &pt))
					continue;
				for (uint64_t i1 = 0; i1 < 512; i1++) {
					uint64_t e = table(m, pt)[i1];
					if (!(e & PTE_PRESENT))
						continue;
					unsigned prot = ((e & PTE_WRITE) ? KAPSEL_PROT_WRITE : 0) |
							((e & PTE_NX) ? 0 : KAPSEL_PROT_EXEC);
					uint64_t va =
						(i4 << 39) | (i3 << 30) | (i2 << 21) | (i1 << 12);
					fn(va, e & PTE_ADDR, prot, arg);
				}
			}
		}
	}
}

uint64_t pv_mmu_cr3(const struct pv_mmu *m, const struct pv_mmu_vcpu *v)
{
	if (!v->current)
		return X86_GPA_PML4;
	const struct pv_mmu_space *s = &m->spaces[v->current];
	return page_gpa(m, v->user_mode ? s->user_root : s->kernel_root);
}

/* ---- VMM side ------------------------------------------------------------ */

#define POOL_BYTES ((uint64_t)KAPSEL_MMU_TABLE_PAGES * PAGE_BYTES)
/* The pool sits above guest RAM, and never below 4 GiB, clear of the
 * addresses KVM itself uses below 4 GiB (its TSS and identity map). */
#define POOL_GPA_MIN (4ull << 30)

int pv_mmu_create(struct kapsel_vm *vm)
{
	uint8_t *pool = mmap(NULL, POOL_BYTES, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (pool == MAP_FAILED) {
		int err = -errno;
		kapsel_error("cannot reserve %llu MiB for guest page tables: %s",
			     (unsigned long long)(POOL_BYTES >> 20), strerror(errno));
		return err;
	}
	uint64_t gpa = (vm->mem.size_bytes + (2ull << 20) - 1) & ~((2ull << 20) - 1);
	if (gpa < POOL_GPA_MIN)
		gpa = POOL_GPA_MIN;
	struct kvm_userspace_memory_region region = {
		.slot = PV_MMU_POOL_SLOT,
		.guest_phys_addr = gpa,
		.memory_size = POOL_BYTES,
		.userspace_addr = (uint64_t)(uintptr_t)pool,
	};
	if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
		int err = -errno;
		kapsel_error("KVM_SET_USER_MEMORY_REGION for the guest page-table pool failed: %s",
			     strerror(errno));
		munmap(pool, POOL_BYTES);
		return err;
	}
	pv_mmu_init(&vm->pv_mmu, pool, gpa);
	return 0;
}

void pv_mmu_destroy(struct kapsel_vm *vm)
{
	if (vm->pv_mmu.pool)
		munmap(vm->pv_mmu.pool, POOL_BYTES);
	vm->pv_mmu.pool = NULL;
}

void pv_mmu_set_user_mode(struct kapsel_vcpu *vcpu, bool user)
{
	struct pv_mmu_vcpu *v = &vcpu->pv_mmu;
	if (v->user_mode != user)
		__atomic_store_n(&v->reload_pending, 1, __ATOMIC_SEQ_CST);
	v->user_mode = user;
	if (user)
		vcpu->vm->pv_mmu.user_entries++;
}

bool pv_mmu_user_mode_possible(const struct kapsel_vcpu *vcpu)
{
	return vcpu->pv_mmu.current != 0 && vcpu->pv_mmu.kernel_stack.stack_top != 0;
}

void pv_mmu_vcpu_start(struct kapsel_vcpu *vcpu)
{
	pv_mmu_vcpu_clear(&vcpu->pv_mmu);
	if (vcpu->vm->pv_mmu.syscall_entry)
		__atomic_store_n(&vcpu->pv_mmu.reload_pending, 1, __ATOMIC_SEQ_CST);
}

bool pv_mmu_finish(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	struct kvm_run *run = vcpu->run;
	struct pv_mmu *m = &vm->pv_mmu;
	struct pv_mmu_vcpu *v = &vcpu->pv_mmu;
	if (!__atomic_exchange_n(&v->reload_pending, 0, __ATOMIC_SEQ_CST))
		return true;
	/* KVM finishes a port exit (moves rip past the out) at the next
	 * KVM_RUN, and only if rip did not change meanwhile.  The resumed rip
	 * goes into the stub's frame, so finish the exit first. */
	int err = vcpu_complete_exit(vcpu);
	/* Clearing immediate_exit must not lose a request made for the next
	 * KVM_RUN: a pause, an upcall waiting for delivery, or a timer tick
	 * whose signal came while the VMM handled the last exit (only the
	 * EINTR path polls timers, so a lost tick stops a periodic timer for
	 * good).  With it set again, the run loop's KVM_RUN returns EINTR at
	 * once and handles them; the switch stub's context is settled there. */
	if (__atomic_load_n(&vcpu->pv_cpu.timer_fired, __ATOMIC_SEQ_CST) ||
	    __atomic_load_n(&vm->pause_requested, __ATOMIC_SEQ_CST) || pv_cpu_upcall_wanted(vcpu))
		__atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (err) {
		kapsel_error("KVM_RUN did not complete the last exit before an address-space switch: %s",
			     err == -EIO ? "it ran the guest" : strerror(-err));
		crash_report_fatal(vcpu, "cannot switch the guest's address space");
		return false;
	}
	struct kvm_sregs sregs;
	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0) {
		kapsel_error("KVM_GET_SREGS failed while switching address space: %s",
			     strerror(errno));
		crash_report_fatal(vcpu, "cannot switch the guest's address space");
		return false;
	}
	/* The context to resume, as an iretq frame for the switch stub. */
	struct kvm_regs *regs = &run->s.regs.regs;
	uint64_t *frame =
		guest_memory_translate(&vm->mem, switch_frame_gpa(vcpu), SWITCH_FRAME_WORDS * 8u);
	frame[0] = regs->rax;
	frame[1] = regs->rip;
	frame[2] = X86_SEL_USER_CS;
	frame[3] = regs->rflags;
	frame[4] = regs->rsp;
	frame[5] = X86_SEL_USER_DS;
	regs->rax = pv_mmu_cr3(m, v);
	regs->rip = X86_GPA_SWITCH_STUB;
	regs->rsp = switch_frame_gpa(vcpu);
	regs->rflags = 0x2;
	run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;

	x86_boot_kernel_segments(&sregs);
	x86_boot_select_tss(&sregs, v->user_mode, vcpu->id);
	sregs.efer |= EFER_NXE;
	if (m->syscall_entry)
		sregs.efer |= EFER_SCE;
	else
		sregs.efer &= ~EFER_SCE;
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0) {
		kapsel_error("KVM_SET_SREGS failed while switching address space: %s",
			     strerror(errno));
		crash_report_fatal(vcpu, "cannot switch the guest's address space");
		return false;
	}
	m->reloads++;
	return true;
}

void pv_mmu_settle(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	struct kvm_regs *regs = &vcpu->run->s.regs.regs;
	uint64_t offset = regs->rip - X86_GPA_SWITCH_STUB;
	/* mov %rax,%cr3 is 3 bytes, pop %rax 1, iretq 2. */
	if (regs->rip < X86_GPA_SWITCH_STUB || (offset != 0 && offset != 3 && offset != 4))
		return;
	struct kvm_sregs sregs;
	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0 || sregs.cs.selector != X86_SEL_KERNEL_CS)
		return;
	const uint64_t *stack = guest_memory_translate(&vm->mem, regs->rsp, SWITCH_FRAME_WORDS * 8);
	if (!stack)
		return;
	uint64_t cr3 = offset == 0 ? regs->rax : sregs.cr3;
	const uint64_t *iret = offset == 4 ? stack : stack + 1;
	regs->rax = offset == 4 ? regs->rax : stack[0];
	regs->rip = iret[0];
	regs->rflags = iret[2];
	regs->rsp = iret[3];
	vcpu->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
	x86_boot_user_segments(&sregs);
	sregs.cr3 = cr3;
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0)
		kapsel_warn("KVM_SET_SREGS failed while completing an address-space switch: %s",
			    strerror(errno));
	/* The TLB flush the stub would have done happens at the next entry. */
	__atomic_store_n(&vcpu->pv_mmu.reload_pending, 1, __ATOMIC_SEQ_CST);
	(void)vm;
}

bool pv_mmu_handle_hlt(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	struct kvm_regs *regs = &vcpu->run->s.regs.regs;
	if (regs->rip != X86_GPA_SYSCALL_STUB + 1)
		return false;
	struct kvm_sregs sregs;
	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0 || sregs.cs.selector != X86_SEL_KERNEL_CS)
		return false;
	struct pv_mmu *m = &vm->pv_mmu;
	if (vcpu->pv_mmu.user_mode && m->syscall_entry) {
		m->syscalls++;
		if (!pv_cpu_deliver_syscall(vcpu, &sregs))
			crash_report_fatal(vcpu, "syscall delivery to the guest kernel failed");
		return true;
	}
	/* A syscall in kernel mode, or with no entry: an invalid opcode at the
	 * syscall instruction (2 bytes before the return address in rcx),
	 * reported as the exception stub would have. */
	struct x86_fault_frame fault = {
		.rdx = regs->rdx,
		.rax = regs->rax,
		.vector = 6,
		.error_code = 0,
		.rip = regs->rcx - 2,
		.cs = X86_SEL_USER_CS,
		.rflags = regs->r11,
		.rsp = regs->rsp,
		.ss = X86_SEL_USER_DS,
	};
	uint64_t fault_gpa = x86_exception_stack_top(vcpu->id) - sizeof(fault);
	memcpy(guest_memory_translate(&vm->mem, fault_gpa, sizeof(fault)), &fault, sizeof(fault));
	regs->rsp = fault_gpa;
	vcpu->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
	if (!pv_cpu_deliver_trap(vcpu))
		crash_report_fault(vcpu);
	return true;
}

/* ---- Hypercalls ---------------------------------------------------------- */

/* True if a vCPU of vm other than self (NULL: any) runs on space as. */
static bool space_in_use(const struct kapsel_vm *vm, const struct kapsel_vcpu *self, unsigned as)
{
	for (unsigned i = 0; i < vm->vcpu_count; i++)
		if (&vm->vcpus[i] != self && vm->vcpus[i].pv_mmu.current == as)
			return true;
	return false;
}

/*
 * A TLB shootdown: every other vCPU that runs on space as reloads CR3 (a
 * flush) before it runs guest code again, and one running guest code now
 * is kicked out and waited for, so no stale translation of the space is
 * used once MMU_UPDATE returns.  The caller holds vm->lock; the vCPUs it
 * waits for leave KVM_RUN without taking it.
 */
static void flush_remote(struct kapsel_vcpu *self, unsigned as)
{
	struct kapsel_vm *vm = self->vm;
	uint64_t seen[KAPSEL_MAX_VCPUS];
	bool wait[KAPSEL_MAX_VCPUS] = { false };
	for (unsigned i = 0; i < vm->vcpu_count; i++) {
		struct kapsel_vcpu *other = &vm->vcpus[i];
		if (other == self || other->pv_mmu.current != as)
			continue;
		__atomic_store_n(&other->pv_mmu.reload_pending, 1, __ATOMIC_SEQ_CST);
		seen[i] = __atomic_load_n(&other->runs, __ATOMIC_SEQ_CST);
		if (__atomic_load_n(&other->in_guest, __ATOMIC_SEQ_CST)) {
			wait[i] = true;
			vcpu_kick(other);
		}
		vm->pv_mmu.remote_flushes++;
	}
	for (unsigned i = 0; i < vm->vcpu_count; i++)
		while (wait[i] &&
		       __atomic_load_n(&vm->vcpus[i].runs, __ATOMIC_SEQ_CST) == seen[i] &&
		       __atomic_load_n(&vm->vcpus[i].in_guest, __ATOMIC_SEQ_CST))
			sched_yield();
}

static int64_t hc_as_create(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	(void)args;
	return pv_mmu_space_create(&vm->pv_mmu);
}

static int64_t hc_as_destroy(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	if (args[0] > 0 && args[0] < KAPSEL_AS_MAX && space_in_use(vm, NULL, (unsigned)args[0]))
		return -KAPSEL_EBUSY; /* some vCPU runs on it */
	return pv_mmu_space_destroy(&vm->pv_mmu, args[0]);
}

static int64_t hc_mmu_update(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	struct pv_mmu *m = &vm->pv_mmu;
	uint64_t as = args[0], count = args[2];
	if (as == 0 || as >= KAPSEL_AS_MAX)
		return -KAPSEL_EINVAL;
	if (!m->spaces[as].used)
		return -KAPSEL_ENOENT;
	if (count > KAPSEL_MMU_BATCH_MAX)
		return -KAPSEL_E2BIG;
	struct kapsel_mmu_op *shared =
		guest_memory_translate_guest(&vm->mem, args[1], count * sizeof(*shared));
	if (!shared)
		return -KAPSEL_EFAULT;
	uint64_t done = 0;
	for (; done < count; done++) {
		/* Read once: only the private copy is checked and applied. */
		struct kapsel_mmu_op op;
		memcpy(&op, &shared[done], sizeof(op));
		int err = pv_mmu_apply(m, &vm->mem, (unsigned)as, &op);
		__atomic_store_n(&shared[done].result, (int64_t)err, __ATOMIC_RELAXED);
		guest_memory_mark_written_host(&vm->mem, &shared[done].result,
					       sizeof(shared[done].result));
		if (err) {
			m->ops_refused++;
			break;
		}
		m->ops_applied++;
	}
	/* The TLBs of every vCPU on this space may hold the old entries. */
	if (done > 0) {
		if (as == vcpu->pv_mmu.current)
			__atomic_store_n(&vcpu->pv_mmu.reload_pending, 1, __ATOMIC_SEQ_CST);
		if (space_in_use(vm, vcpu, (unsigned)as))
			flush_remote(vcpu, (unsigned)as);
	}
	return (int64_t)done;
}

static int64_t hc_as_switch(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	struct pv_mmu *m = &vm->pv_mmu;
	uint64_t as = args[0];
	if (as >= KAPSEL_AS_MAX)
		return -KAPSEL_EINVAL;
	if (as && !m->spaces[as].used)
		return -KAPSEL_ENOENT;
	vcpu->pv_mmu.current = (unsigned)as;
	__atomic_store_n(&vcpu->pv_mmu.reload_pending, 1, __ATOMIC_SEQ_CST);
	m->switches++;
	return 0;
}

int pv_mmu_set_syscall_msrs(struct kapsel_vcpu *vcpu)
{
	struct {
		struct kvm_msrs header;
		struct kvm_msr_entry entries[3];
	} msrs = { .header.nmsrs = 3,
		   .entries = { { .index = MSR_STAR, .data = (uint64_t)X86_SEL_KERNEL_CS << 32 },
				{ .index = MSR_LSTAR, .data = X86_GPA_SYSCALL_STUB },
				{ .index = MSR_SFMASK, .data = SFMASK_BITS } } };
	if (ioctl(vcpu->fd, KVM_SET_MSRS, &msrs) != 3) {
		kapsel_warn("KVM_SET_MSRS for the guest's syscall entry failed");
		return -EIO;
	}
	return 0;
}

static int64_t hc_set_syscall(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	struct pv_mmu *m = &vm->pv_mmu;
	uint64_t entry = args[0];
	if (entry && !guest_memory_translate_guest(&vm->mem, entry, 1))
		return -KAPSEL_EFAULT;
	if (entry && pv_mmu_set_syscall_msrs(vcpu))
		return -KAPSEL_EIO;
	m->syscall_entry = entry;
	/* EFER.SCE follows the registration on every vCPU (their syscall
	 * MSRs were set when they were created), each at its next entry. */
	for (unsigned i = 0; i < vm->vcpu_count; i++)
		__atomic_store_n(&vm->vcpus[i].pv_mmu.reload_pending, 1, __ATOMIC_SEQ_CST);
	return 0;
}

static int64_t hc_kernel_stack(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	int err = pv_cpu_check_stack(&vm->mem, args[0], args[1]);
	if (err)
		return err;
	vcpu->pv_mmu.kernel_stack =
		(struct pv_handler){ .entry = 0, .stack_top = args[0], .stack_bytes = args[1] };
	return 0;
}

int pv_mmu_register_hypercalls(struct hypercall_table *table)
{
	static const struct hypercall_def calls[] = {
		{ KAPSEL_HC_AS_CREATE, "as_create", hc_as_create },
		{ KAPSEL_HC_AS_DESTROY, "as_destroy", hc_as_destroy },
		{ KAPSEL_HC_MMU_UPDATE, "mmu_update", hc_mmu_update },
		{ KAPSEL_HC_AS_SWITCH, "as_switch", hc_as_switch },
		{ KAPSEL_HC_SET_SYSCALL, "set_syscall", hc_set_syscall },
		{ KAPSEL_HC_KERNEL_STACK, "kernel_stack", hc_kernel_stack },
	};
	return hypercall_register_all(table, calls, sizeof(calls) / sizeof(calls[0]));
}

void pv_mmu_print_stats(const struct kapsel_vm *vm, FILE *out)
{
	const struct pv_mmu *m = &vm->pv_mmu;
	unsigned spaces = 0;
	for (unsigned as = 1; as < KAPSEL_AS_MAX; as++)
		spaces += m->spaces[as].used;
	if (!spaces && !m->ops_applied && !m->syscalls)
		return;
	fprintf(out,
		"pv_mmu: spaces=%u table_pages=%u ops_applied=%" PRIu64 " ops_refused=%" PRIu64
		" switches=%" PRIu64 " syscalls=%" PRIu64 " user_entries=%" PRIu64
		" reloads=%" PRIu64 " remote_flushes=%" PRIu64 "\n",
		spaces, pv_mmu_pages_used(m), m->ops_applied, m->ops_refused, m->switches,
		m->syscalls, m->user_entries, m->reloads, m->remote_flushes);
}
