/* vCPU state for save/restore and migration: every KVM register set that matters, as state records. */
#define _GNU_SOURCE
#include "state/vcpu_state.h"

#include "core/x86_boot.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/error_text.h"
#include "core/vm.h"
#include "core/x86_boot.h"

#define MSR_IA32_TSC 0x10u
#define MSR_IA32_TSC_ADJUST 0x3bu
#define MSR_IA32_SYSENTER_CS 0x174u
#define MSR_IA32_SYSENTER_ESP 0x175u
#define MSR_IA32_SYSENTER_EIP 0x176u
#define MSR_IA32_MISC_ENABLE 0x1a0u
#define MSR_IA32_CR_PAT 0x277u
#define MSR_STAR 0xc0000081u
#define MSR_LSTAR 0xc0000082u
#define MSR_CSTAR 0xc0000083u
#define MSR_SYSCALL_MASK 0xc0000084u
#define MSR_KERNEL_GS_BASE 0xc0000102u
#define MSR_TSC_AUX 0xc0000103u
#define VCPU_STATE_MAX_MSRS 16u

/* Saved in this order and restored in it: TSC last, so that the guest's
 * TSC is set as late as possible before it runs again. */
static const struct {
	uint32_t index;
	const char *name;
} saved_msrs[] = {
	{ MSR_IA32_SYSENTER_CS, "sysenter_cs" },
	{ MSR_IA32_SYSENTER_ESP, "sysenter_esp" },
	{ MSR_IA32_SYSENTER_EIP, "sysenter_eip" },
	{ MSR_STAR, "star" },
	{ MSR_LSTAR, "lstar" },
	{ MSR_CSTAR, "cstar" },
	{ MSR_SYSCALL_MASK, "syscall_mask" },
	{ MSR_KERNEL_GS_BASE, "kernel_gs_base" },
	{ MSR_TSC_AUX, "tsc_aux" },
	{ MSR_IA32_CR_PAT, "pat" },
	{ MSR_IA32_MISC_ENABLE, "misc_enable" },
	{ MSR_IA32_TSC_ADJUST, "tsc_adjust" },
	{ MSR_IA32_TSC, "tsc" },
};
#define SAVED_MSR_COUNT (sizeof(saved_msrs) / sizeof(saved_msrs[0]))

int vcpu_state_settle(struct kapsel_vm *vm)
{
	return vcpu_complete_exit(vm_boot_vcpu(vm));
}

/* The MSRs of saved_msrs that this KVM lists (KVM_GET_MSR_INDEX_LIST). */
static int supported_msrs(struct kapsel_vm *vm, uint32_t *indices, unsigned *count)
{
	struct kvm_msr_list probe = { .nmsrs = 0 };
	*count = 0;
	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return -errno;
	struct kvm_msr_list *list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
	if (!list)
		return -ENOMEM;
	list->nmsrs = probe.nmsrs;
	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		int err = -errno;
		free(list);
		return err;
	}
	for (size_t i = 0; i < SAVED_MSR_COUNT; i++)
		for (uint32_t j = 0; j < list->nmsrs; j++)
			if (list->indices[j] == saved_msrs[i].index) {
				indices[(*count)++] = saved_msrs[i].index;
				break;
			}
	free(list);
	return 0;
}

/* State records carry one vCPU today (issue 13): say so instead of saving
 * or loading half a VM. */
static int smp_refused(const struct kapsel_vm *vm, char *error, size_t error_len)
{
	return kapsel_fail(
		error, error_len, -ENOTSUP,
		"VM '%s' has %u vCPUs: save, restore, clone and migration carry one vCPU in this version; define the VM with one vCPU (--vcpus 1 or <vcpu>1</vcpu>) to save it",
		vm->config->name, vm->vcpu_count);
}

int vcpu_state_save(struct kapsel_vm *vm, struct vm_state_writer *out, char *error,
		    size_t error_len)
{
	const uint32_t M = VM_STATE_RECORD_MANDATORY;
	struct kapsel_vcpu *vcpu = vm_boot_vcpu(vm);
	int fd = vcpu->fd;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_fpu fpu;

	if (vm->vcpu_count > 1)
		return smp_refused(vm, error, error_len);
	if (vcpu->run->kvm_dirty_regs & KVM_SYNC_X86_REGS)
		return kapsel_fail(
			error, error_len, -EBUSY,
			"the vCPU has register changes KVM has not applied yet; pause it first");
	if (ioctl(fd, KVM_GET_REGS, &regs) < 0)
		return kapsel_fail(error, error_len, -errno, "KVM_GET_REGS failed: %s",
				   strerror(errno));
	if (ioctl(fd, KVM_GET_SREGS, &sregs) < 0)
		return kapsel_fail(error, error_len, -errno, "KVM_GET_SREGS failed: %s",
				   strerror(errno));
	if (ioctl(fd, KVM_GET_FPU, &fpu) < 0)
		return kapsel_fail(error, error_len, -errno, "KVM_GET_FPU failed: %s",
				   strerror(errno));
	vm_state_put(out, VM_STATE_VCPU_REGS, M, &regs, sizeof(regs));
	vm_state_put(out, VM_STATE_VCPU_SREGS, M, &sregs, sizeof(sregs));
	vm_state_put(out, VM_STATE_VCPU_FPU, M, &fpu, sizeof(fpu));

	if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0) {
		struct kvm_xsave *xsave = calloc(1, sizeof(*xsave));
		if (!xsave)
			return -ENOMEM;
		if (ioctl(fd, KVM_GET_XSAVE, xsave) < 0) {
			int err = -errno;
			free(xsave);
			return kapsel_fail(error, error_len, err, "KVM_GET_XSAVE failed: %s",
					   strerror(-err));
		}
		vm_state_put(out, VM_STATE_VCPU_XSAVE, M, xsave, sizeof(*xsave));
		free(xsave);
	}
	if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0) {
		struct kvm_xcrs xcrs;
		memset(&xcrs, 0, sizeof(xcrs));
		if (ioctl(fd, KVM_GET_XCRS, &xcrs) < 0)
			return kapsel_fail(error, error_len, -errno, "KVM_GET_XCRS failed: %s",
					   strerror(errno));
		vm_state_put(out, VM_STATE_VCPU_XCRS, M, &xcrs, sizeof(xcrs));
	}

	uint32_t indices[VCPU_STATE_MAX_MSRS];
	unsigned count;
	int err = supported_msrs(vm, indices, &count);
	if (err)
		return kapsel_fail(error, error_len, err, "KVM_GET_MSR_INDEX_LIST failed: %s",
				   strerror(-err));
	struct {
		struct kvm_msrs header;
		struct kvm_msr_entry entries[VCPU_STATE_MAX_MSRS];
	} msrs;
	memset(&msrs, 0, sizeof(msrs));
	msrs.header.nmsrs = count;
	for (unsigned i = 0; i < count; i++)
		msrs.entries[i].index = indices[i];
	int got = ioctl(fd, KVM_GET_MSRS, &msrs);
	if (got < 0 || (unsigned)got != count)
		return kapsel_fail(error, error_len, got < 0 ? -errno : -EIO,
				   "KVM_GET_MSRS read %d of %u MSRs (first unreadable: %#x)", got,
				   count, got >= 0 && (unsigned)got < count ? indices[got] : 0);
	struct vm_state_msr saved[VCPU_STATE_MAX_MSRS];
	memset(saved, 0, sizeof(saved));
	for (unsigned i = 0; i < count; i++) {
		saved[i].index = msrs.entries[i].index;
		saved[i].data = msrs.entries[i].data;
	}
	vm_state_put(out, VM_STATE_VCPU_MSRS, M, saved, count * sizeof(saved[0]));

	if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_VCPU_EVENTS) > 0) {
		struct kvm_vcpu_events events;
		memset(&events, 0, sizeof(events));
		if (ioctl(fd, KVM_GET_VCPU_EVENTS, &events) < 0)
			return kapsel_fail(error, error_len, -errno,
					   "KVM_GET_VCPU_EVENTS failed: %s", strerror(errno));
		vm_state_put(out, VM_STATE_VCPU_EVENTS, M, &events, sizeof(events));
	}
	if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DEBUGREGS) > 0) {
		struct kvm_debugregs debugregs;
		if (ioctl(fd, KVM_GET_DEBUGREGS, &debugregs) < 0)
			return kapsel_fail(error, error_len, -errno, "KVM_GET_DEBUGREGS failed: %s",
					   strerror(errno));
		/* Optional: guests at CPL3 cannot use them; a KVM without them
		 * may still restore. */
		vm_state_put(out, VM_STATE_VCPU_DEBUGREGS, 0, &debugregs, sizeof(debugregs));
	}
	struct kvm_mp_state mp_state;
	if (ioctl(fd, KVM_GET_MP_STATE, &mp_state) < 0)
		return kapsel_fail(error, error_len, -errno, "KVM_GET_MP_STATE failed: %s",
				   strerror(errno));
	vm_state_put(out, VM_STATE_VCPU_MP_STATE, 0, &mp_state, sizeof(mp_state));
	return out->error ? kapsel_fail(error, error_len, out->error,
					"cannot write the vCPU state: %s", strerror(-out->error))
			  : 0;
}

/* The record of type with exactly size bytes; NULL with a message if it is
 * missing (and required) or has another size. */
static const void *record_of(const struct vm_state_records *state, uint32_t type, size_t size,
			     bool required, int *err, char *error, size_t error_len)
{
	const struct vm_state_stored_record *rec = vm_state_find(state, type, NULL);
	if (!rec) {
		if (required && !*err)
			*err = kapsel_fail(error, error_len, -EPROTO,
					   "the saved state has no %s record; it is incomplete",
					   vm_state_record_name(type));
		return NULL;
	}
	if (rec->length_bytes != size) {
		if (!*err)
			*err = kapsel_fail(
				error, error_len, -EPROTO,
				"the %s record is %llu bytes, expected %zu; it was written by an incompatible Kapsel",
				vm_state_record_name(type), (unsigned long long)rec->length_bytes,
				size);
		return NULL;
	}
	return rec->payload;
}

bool vcpu_state_msr_is_privileged_entry(uint32_t index)
{
	switch (index) {
	case 0x174u:	  /* SYSENTER_CS */
	case 0x175u:	  /* SYSENTER_ESP */
	case 0x176u:	  /* SYSENTER_EIP */
	case 0xc0000081u: /* STAR */
	case MSR_LSTAR:
	case 0xc0000083u: /* CSTAR */
	case 0xc0000084u: /* SFMASK */
		return true;
	default:
		return false;
	}
}

int vcpu_state_load(struct kapsel_vm *vm, const struct vm_state_records *state, char *error,
		    size_t error_len)
{
	struct kapsel_vcpu *vcpu = vm_boot_vcpu(vm);
	int fd = vcpu->fd;
	int err = 0;

	if (vm->vcpu_count > 1)
		return smp_refused(vm, error, error_len);
	/* Check every record before changing anything. */
	const struct kvm_regs *regs =
		record_of(state, VM_STATE_VCPU_REGS, sizeof(*regs), true, &err, error, error_len);
	const struct kvm_sregs *sregs =
		record_of(state, VM_STATE_VCPU_SREGS, sizeof(*sregs), true, &err, error, error_len);
	const struct kvm_fpu *fpu =
		record_of(state, VM_STATE_VCPU_FPU, sizeof(*fpu), true, &err, error, error_len);
	const struct kvm_xsave *xsave = record_of(state, VM_STATE_VCPU_XSAVE, sizeof(*xsave), false,
						  &err, error, error_len);
	const struct kvm_xcrs *xcrs =
		record_of(state, VM_STATE_VCPU_XCRS, sizeof(*xcrs), false, &err, error, error_len);
	const struct kvm_vcpu_events *events =
		record_of(state, VM_STATE_VCPU_EVENTS, sizeof(*events), false, &err, error,
			  error_len);
	const struct kvm_debugregs *debugregs =
		record_of(state, VM_STATE_VCPU_DEBUGREGS, sizeof(*debugregs), false, &err, error,
			  error_len);
	const struct kvm_mp_state *mp_state =
		record_of(state, VM_STATE_VCPU_MP_STATE, sizeof(*mp_state), false, &err, error,
			  error_len);
	const struct vm_state_stored_record *msr_rec =
		vm_state_find(state, VM_STATE_VCPU_MSRS, NULL);
	if (err)
		return err;
	if (!msr_rec || msr_rec->length_bytes % sizeof(struct vm_state_msr) ||
	    msr_rec->length_bytes / sizeof(struct vm_state_msr) > VCPU_STATE_MAX_MSRS)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved state's MSR record is missing or malformed");
	if (xcrs && xcrs->nr_xcrs > KVM_MAX_XCRS)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved XCR record lists %u registers", xcrs->nr_xcrs);
	/* Kapsel guests run at CPL3 in 64-bit mode with paging: anything else
	 * is not a Kapsel vCPU (or a corrupted one). */
	if ((sregs->cr0 & 0x80000001u) != 0x80000001u || !(sregs->efer & (1u << 10)))
		return kapsel_fail(
			error, error_len, -EPROTO,
			"the saved vCPU is not in 64-bit paged mode (cr0 %#llx, efer %#llx); the state is corrupt",
			(unsigned long long)sregs->cr0, (unsigned long long)sregs->efer);

	/* Saved state is untrusted: the vCPU resumes only as a CPL3 guest on
	 * the hypervisor's page tables, GDT, IDT and TSS (x86_boot.h). */
	struct kvm_sregs checked_sregs = *sregs;
	struct kvm_regs checked_regs = *regs;
	/* A PV MMU guest saved on one of its own address spaces: pv_mmu_load
	 * rebuilds them and loads the right root before the vCPU runs. */
	const struct pv_mmu *mmu = &vm->pv_mmu;
	if (checked_sregs.cr3 >= mmu->pool_gpa &&
	    checked_sregs.cr3 < mmu->pool_gpa + (uint64_t)KAPSEL_MMU_TABLE_PAGES * 4096u)
		checked_sregs.cr3 = X86_GPA_PML4;
	char reason[200];
	err = x86_boot_check_restored_vcpu(&checked_sregs, &checked_regs, vcpu->id, reason,
					   sizeof(reason));
	if (err)
		return kapsel_fail(error, error_len, err, "%s", reason);
	sregs = &checked_sregs;
	regs = &checked_regs;

	/* kvm_run may hold registers of the VM's boot: never apply them. */
	vcpu->run->kvm_dirty_regs = 0;
	/* TR always holds Kapsel's TSS; its type is this host's (KVM on SVM
	 * saves it as busy, which under TCG would close every port). */
	struct kvm_sregs sregs_copy = *sregs;
	sregs_copy.tr.type = x86_boot_tr_type();
	sregs = &sregs_copy;
	if (ioctl(fd, KVM_SET_SREGS, sregs) < 0)
		return kapsel_fail(error, error_len, -errno, "KVM_SET_SREGS failed: %s",
				   strerror(errno));
	if (ioctl(fd, KVM_SET_REGS, regs) < 0)
		return kapsel_fail(error, error_len, -errno, "KVM_SET_REGS failed: %s",
				   strerror(errno));
	if (xcrs && ioctl(fd, KVM_SET_XCRS, xcrs) < 0)
		return kapsel_fail(error, error_len, -errno, "KVM_SET_XCRS failed: %s",
				   strerror(errno));
	if (ioctl(fd, KVM_SET_FPU, fpu) < 0)
		return kapsel_fail(error, error_len, -errno, "KVM_SET_FPU failed: %s",
				   strerror(errno));
	if (xsave) {
		if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) <= 0)
			return kapsel_fail(
				error, error_len, -ENOTSUP,
				"the state has XSAVE data but this host's KVM lacks KVM_CAP_XSAVE");
		if (ioctl(fd, KVM_SET_XSAVE, xsave) < 0)
			return kapsel_fail(error, error_len, -errno, "KVM_SET_XSAVE failed: %s",
					   strerror(errno));
	}

	unsigned count = (unsigned)(msr_rec->length_bytes / sizeof(struct vm_state_msr));
	struct {
		struct kvm_msrs header;
		struct kvm_msr_entry entries[VCPU_STATE_MAX_MSRS];
	} msrs;
	memset(&msrs, 0, sizeof(msrs));
	unsigned kept = 0;
	for (unsigned i = 0; i < count; i++) {
		struct vm_state_msr m;
		memcpy(&m, msr_rec->payload + i * sizeof(m), sizeof(m));
		/* The entry points of syscall/sysenter would run guest code at
		 * CPL0: Kapsel never sets them, so a saved value is not applied. */
		if (vcpu_state_msr_is_privileged_entry(m.index))
			continue;
		msrs.entries[kept].index = m.index;
		msrs.entries[kept].data = m.data;
		kept++;
	}
	msrs.header.nmsrs = kept;
	count = kept;
	int set = ioctl(fd, KVM_SET_MSRS, &msrs);
	if (set < 0 || (unsigned)set != count)
		return kapsel_fail(error, error_len, set < 0 ? -errno : -EINVAL,
				   "KVM_SET_MSRS set %d of %u MSRs; KVM refused MSR %#x = %#llx",
				   set, count,
				   set >= 0 && (unsigned)set < count ? msrs.entries[set].index : 0,
				   set >= 0 && (unsigned)set < count
					   ? (unsigned long long)msrs.entries[set].data
					   : 0ull);
	if (events && ioctl(fd, KVM_SET_VCPU_EVENTS, events) < 0)
		return kapsel_fail(error, error_len, -errno, "KVM_SET_VCPU_EVENTS failed: %s",
				   strerror(errno));
	if (debugregs && ioctl(fd, KVM_SET_DEBUGREGS, debugregs) < 0)
		return kapsel_fail(error, error_len, -errno, "KVM_SET_DEBUGREGS failed: %s",
				   strerror(errno));
	if (mp_state && ioctl(fd, KVM_SET_MP_STATE, mp_state) < 0)
		return kapsel_fail(error, error_len, -errno, "KVM_SET_MP_STATE failed: %s",
				   strerror(errno));
	return 0;
}

/* ---- inspect ------------------------------------------------------------------ */

static const char *msr_name(uint32_t index)
{
	for (size_t i = 0; i < SAVED_MSR_COUNT; i++)
		if (saved_msrs[i].index == index)
			return saved_msrs[i].name;
	return "?";
}

static void print_segment(FILE *out, const char *name, const struct kvm_segment *s)
{
	fprintf(out, "    %-4s selector %#06x base %#llx limit %#x type %u dpl %u%s%s\n", name,
		s->selector, (unsigned long long)s->base, s->limit, s->type, s->dpl,
		s->l ? " long" : "", s->present ? "" : " not-present");
}

void vcpu_state_print(const struct vm_state_records *state, FILE *out)
{
	int err = 0;
	const struct kvm_regs *r =
		record_of(state, VM_STATE_VCPU_REGS, sizeof(*r), false, &err, NULL, 0);
	if (r) {
		fprintf(out, "  registers:\n");
		fprintf(out, "    rip %#018llx  rflags %#llx\n", (unsigned long long)r->rip,
			(unsigned long long)r->rflags);
		fprintf(out, "    rax %#018llx  rbx %#018llx  rcx %#018llx  rdx %#018llx\n",
			(unsigned long long)r->rax, (unsigned long long)r->rbx,
			(unsigned long long)r->rcx, (unsigned long long)r->rdx);
		fprintf(out, "    rsi %#018llx  rdi %#018llx  rbp %#018llx  rsp %#018llx\n",
			(unsigned long long)r->rsi, (unsigned long long)r->rdi,
			(unsigned long long)r->rbp, (unsigned long long)r->rsp);
		fprintf(out, "    r8  %#018llx  r9  %#018llx  r10 %#018llx  r11 %#018llx\n",
			(unsigned long long)r->r8, (unsigned long long)r->r9,
			(unsigned long long)r->r10, (unsigned long long)r->r11);
		fprintf(out, "    r12 %#018llx  r13 %#018llx  r14 %#018llx  r15 %#018llx\n",
			(unsigned long long)r->r12, (unsigned long long)r->r13,
			(unsigned long long)r->r14, (unsigned long long)r->r15);
	}
	const struct kvm_sregs *s =
		record_of(state, VM_STATE_VCPU_SREGS, sizeof(*s), false, &err, NULL, 0);
	if (s) {
		fprintf(out, "  system registers:\n");
		fprintf(out, "    cr0 %#llx  cr2 %#llx  cr3 %#llx  cr4 %#llx  efer %#llx\n",
			(unsigned long long)s->cr0, (unsigned long long)s->cr2,
			(unsigned long long)s->cr3, (unsigned long long)s->cr4,
			(unsigned long long)s->efer);
		print_segment(out, "cs", &s->cs);
		print_segment(out, "ss", &s->ss);
		print_segment(out, "fs", &s->fs);
		print_segment(out, "gs", &s->gs);
		print_segment(out, "tr", &s->tr);
		fprintf(out, "    gdt %#llx/%#x  idt %#llx/%#x\n", (unsigned long long)s->gdt.base,
			s->gdt.limit, (unsigned long long)s->idt.base, s->idt.limit);
	}
	const struct kvm_fpu *f =
		record_of(state, VM_STATE_VCPU_FPU, sizeof(*f), false, &err, NULL, 0);
	if (f)
		fprintf(out, "  fpu: fcw %#x fsw %#x mxcsr %#x\n", f->fcw, f->fsw, f->mxcsr);
	const struct kvm_xsave *x =
		record_of(state, VM_STATE_VCPU_XSAVE, sizeof(*x), false, &err, NULL, 0);
	if (x) {
		uint64_t xstate_bv;
		memcpy(&xstate_bv, (const uint8_t *)x->region + 512, sizeof(xstate_bv));
		fprintf(out, "  xsave: %zu bytes, xstate_bv %#llx\n", sizeof(*x),
			(unsigned long long)xstate_bv);
	}
	const struct kvm_xcrs *xc =
		record_of(state, VM_STATE_VCPU_XCRS, sizeof(*xc), false, &err, NULL, 0);
	if (xc)
		for (uint32_t i = 0; i < xc->nr_xcrs && i < KVM_MAX_XCRS; i++)
			fprintf(out, "  xcr%u: %#llx\n", xc->xcrs[i].xcr,
				(unsigned long long)xc->xcrs[i].value);
	const struct vm_state_stored_record *m = vm_state_find(state, VM_STATE_VCPU_MSRS, NULL);
	if (m) {
		fprintf(out, "  msrs:\n");
		for (uint64_t i = 0; i + 1 <= m->length_bytes / sizeof(struct vm_state_msr); i++) {
			struct vm_state_msr msr;
			memcpy(&msr, m->payload + i * sizeof(msr), sizeof(msr));
			fprintf(out, "    %#010x %-15s %#llx\n", msr.index, msr_name(msr.index),
				(unsigned long long)msr.data);
		}
	}
	const struct kvm_vcpu_events *e =
		record_of(state, VM_STATE_VCPU_EVENTS, sizeof(*e), false, &err, NULL, 0);
	if (e)
		fprintf(out,
			"  events: exception %s (vector %u), interrupt %s, nmi %s, shadow %#x\n",
			e->exception.injected  ? "injected"
			: e->exception.pending ? "pending"
					       : "none",
			e->exception.nr, e->interrupt.injected ? "injected" : "none",
			e->nmi.pending || e->nmi.injected ? "pending" : "none",
			e->interrupt.shadow);
	const struct kvm_mp_state *mp =
		record_of(state, VM_STATE_VCPU_MP_STATE, sizeof(*mp), false, &err, NULL, 0);
	if (mp)
		fprintf(out, "  mp_state: %u%s\n", mp->mp_state,
			mp->mp_state == KVM_MP_STATE_RUNNABLE ? " (runnable)" : "");
}
