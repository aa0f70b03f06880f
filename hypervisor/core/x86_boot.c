/* x86-64 boot state built by the hypervisor: page tables, GDT, IDT, TSS and the CPL3 entry. */
#include "core/x86_boot.h"

#include <cpuid.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>

#include "kapsel/abi.h"

#define PTE_PRESENT 0x1ull
#define PTE_WRITE 0x2ull
#define PTE_USER 0x4ull
#define PTE_HUGE 0x80ull

#define CR0_PE (1ull << 0)
#define CR0_MP (1ull << 1)
#define CR0_ET (1ull << 4)
#define CR0_NE (1ull << 5)
#define CR0_WP (1ull << 16)
#define CR0_PG (1ull << 31)
#define CR4_PAE (1ull << 5)
#define CR4_OSFXSR (1ull << 9)
#define CR4_OSXMMEXCPT (1ull << 10)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)
#define RFLAGS_IOPL (3ull << 12)

#define EXCEPTION_STUB_BYTES 16u
#define EXCEPTION_VECTORS 32u

static uint64_t *table_at(struct guest_memory *mem, uint64_t gpa)
{
	return guest_memory_translate(mem, gpa, 4096);
}

/* Which low 4 KiB pages CPL3 code may touch: start info, event page and
 * everything from the free low memory on.  Page 0 stays unmapped so that
 * NULL dereferences fault. */
static uint64_t low_page_flags(uint64_t gpa)
{
	if (gpa == 0)
		return 0;
	if (gpa == KAPSEL_GPA_START_INFO || gpa == KAPSEL_GPA_EVENT_PAGE ||
	    gpa >= KAPSEL_GPA_LOW_FREE)
		return PTE_PRESENT | PTE_WRITE | PTE_USER;
	return PTE_PRESENT | PTE_WRITE;
}

static int build_page_tables(struct guest_memory *mem)
{
	uint64_t gib = (mem->size_bytes + (1ull << 30) - 1) >> 30;
	uint64_t *pml4 = table_at(mem, X86_GPA_PML4);
	uint64_t *pdpt = table_at(mem, X86_GPA_PDPT);
	uint64_t *pt_low = table_at(mem, X86_GPA_PT_LOW);

	if (!pml4 || !pdpt || !pt_low || gib > 64 ||
	    !guest_memory_translate(mem, X86_GPA_PD_BASE, gib * 4096) ||
	    X86_GPA_PD_BASE + gib * 4096 > KAPSEL_GPA_LOW_FREE)
		return -EFAULT;
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	pml4[0] = X86_GPA_PDPT | PTE_PRESENT | PTE_WRITE | PTE_USER;
	for (uint64_t g = 0; g < gib; g++) {
		uint64_t pd_gpa = X86_GPA_PD_BASE + g * 4096;
		uint64_t *pd = table_at(mem, pd_gpa);
		memset(pd, 0, 4096);
		pdpt[g] = pd_gpa | PTE_PRESENT | PTE_WRITE | PTE_USER;
		for (uint64_t e = 0; e < 512; e++) {
			uint64_t gpa = (g << 30) | (e << 21);
			if (gpa >= mem->size_bytes)
				break;
			pd[e] = gpa | PTE_PRESENT | PTE_WRITE | PTE_USER | PTE_HUGE;
		}
	}
	/* What user mode (PV MMU) sees of the low 2 MiB: the supervisor pages
	 * the CPU itself reads on an exception or an iretq, nothing else. */
	uint64_t *sys_pdpt = table_at(mem, X86_GPA_SYS_PDPT);
	uint64_t *sys_pd = table_at(mem, X86_GPA_SYS_PD);
	uint64_t *sys_pt = table_at(mem, X86_GPA_SYS_PT);
	memset(sys_pdpt, 0, 4096);
	memset(sys_pd, 0, 4096);
	memset(sys_pt, 0, 4096);
	sys_pdpt[0] = X86_GPA_SYS_PD | PTE_PRESENT | PTE_WRITE;
	sys_pd[0] = X86_GPA_SYS_PT | PTE_PRESENT | PTE_WRITE;
	for (uint64_t gpa = X86_GPA_GDT; gpa <= X86_GPA_EXCEPTION_STUBS; gpa += 4096)
		sys_pt[gpa >> 12] = gpa | PTE_PRESENT | PTE_WRITE;
	for (uint64_t gpa = KAPSEL_GPA_EVENT_PAGE + 4096; gpa < X86_GPA_EXCEPTION_STACK_TOP;
	     gpa += 4096)
		sys_pt[gpa >> 12] = gpa | PTE_PRESENT | PTE_WRITE;
	sys_pt[X86_GPA_USER_TSS >> 12] = X86_GPA_USER_TSS | PTE_PRESENT | PTE_WRITE;

	/* The first 2 MiB is mapped with 4 KiB pages to protect the tables. */
	uint64_t *pd0 = table_at(mem, X86_GPA_PD_BASE);
	pd0[0] = X86_GPA_PT_LOW | PTE_PRESENT | PTE_WRITE | PTE_USER;
	for (uint64_t p = 0; p < 512; p++) {
		uint64_t gpa = p << 12;
		uint64_t flags = low_page_flags(gpa);
		pt_low[p] = flags ? (gpa | flags) : 0;
	}
	return 0;
}

static uint64_t segment_descriptor(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
	return (uint64_t)(limit & 0xffff) | ((uint64_t)(base & 0xffffff) << 16) |
	       ((uint64_t)access << 40) | ((uint64_t)((limit >> 16) & 0xf) << 48) |
	       ((uint64_t)(flags & 0xf) << 52) | ((uint64_t)(base >> 24) << 56);
}

static void build_gdt(struct guest_memory *mem)
{
	uint64_t *gdt = table_at(mem, X86_GPA_GDT);
	memset(gdt, 0, 4096);
	/* access: P | DPL | S | type; flags: G | D/B | L */
	gdt[X86_SEL_KERNEL_CS >> 3] = segment_descriptor(0, 0xfffff, 0x9a, 0xa);
	gdt[X86_SEL_KERNEL_DS >> 3] = segment_descriptor(0, 0xfffff, 0x92, 0xc);
	gdt[X86_SEL_USER_DS >> 3] = segment_descriptor(0, 0xfffff, 0xf2, 0xc);
	gdt[X86_SEL_USER_CS >> 3] = segment_descriptor(0, 0xfffff, 0xfa, 0xa);
	/* 64-bit available TSS: 16 bytes, the high half holds base[63:32]. */
	/* Per vCPU, two 64-bit available TSSes: 16 bytes each, the high half
	 * holds base[63:32] (0 here). */
	for (unsigned v = 0; v < KAPSEL_MAX_VCPUS; v++) {
		gdt[x86_sel_tss(v, 0) >> 3] = segment_descriptor(
			(uint32_t)x86_tss_base(v), x86_tss_limit(v), 0x89, 0x0);
		gdt[(x86_sel_tss(v, 0) >> 3) + 1] = 0;
		gdt[x86_sel_tss(v, 1) >> 3] = segment_descriptor(
			(uint32_t)x86_user_tss_base(v), X86_USER_TSS_LIMIT, 0x89, 0x0);
		gdt[(x86_sel_tss(v, 1) >> 3) + 1] = 0;
	}
}

/* The GDT's limit: through the last vCPU's user-mode TSS descriptor. */
#define GDT_LIMIT (X86_SEL_USER_TSS + KAPSEL_MAX_VCPUS * X86_SEL_TSS_STRIDE - X86_SEL_TSS_STRIDE + 15u)
_Static_assert(GDT_LIMIT < X86_GPA_TSS_EXTRA - X86_GPA_GDT, "GDT ends before the TSS headers");
_Static_assert(X86_GPA_TSS_EXTRA + (KAPSEL_MAX_VCPUS - 1u) * X86_TSS_HEADER_STRIDE <= X86_GPA_IDT,
	       "TSS headers stay in the GDT's page");
_Static_assert(X86_GPA_EXCEPTION_STACK_TOP - KAPSEL_MAX_VCPUS * X86_EXCEPTION_STACK_BYTES >=
		       KAPSEL_GPA_EVENT_PAGE + 4096u,
	       "exception stacks stay above the event page");

/* A 104-byte TSS header: rsp0 (the CPL0 stack) and the bitmap offset. */
static void write_tss_header(uint8_t *tss, uint64_t rsp0, uint16_t iomap)
{
	memset(tss, 0, X86_TSS_IOMAP_OFFSET);
	memcpy(tss + 4, &rsp0, sizeof(rsp0));
	memcpy(tss + 102, &iomap, sizeof(iomap));
}

static void build_tss(struct guest_memory *mem)
{
	uint8_t *tss = guest_memory_translate(mem, X86_GPA_TSS, X86_TSS_LIMIT + 1);
	/* Every port closed; the byte after the bitmap must be all ones. */
	memset(tss + X86_TSS_IOMAP_OFFSET, 0xff, X86_TSS_IOMAP_BYTES + 1);
	uint8_t *extra = guest_memory_translate(mem, X86_GPA_TSS_EXTRA,
						(KAPSEL_MAX_VCPUS - 1u) * X86_TSS_HEADER_STRIDE);
	memset(extra, 0, (KAPSEL_MAX_VCPUS - 1u) * X86_TSS_HEADER_STRIDE);
	/* User mode's TSSes: the same exception stacks, and a bitmap offset
	 * at the limit, so that every port access from user mode is a #GP. */
	uint8_t *user_tss = guest_memory_translate(mem, X86_GPA_USER_TSS, 4096);
	memset(user_tss, 0, 4096);
	for (unsigned v = 0; v < KAPSEL_MAX_VCPUS; v++) {
		uint8_t *kernel = guest_memory_translate(mem, x86_tss_base(v), X86_TSS_IOMAP_OFFSET);
		write_tss_header(kernel, x86_exception_stack_top(v), x86_tss_iomap_offset(v));
		write_tss_header(user_tss + (x86_user_tss_base(v) - X86_GPA_USER_TSS),
				 x86_exception_stack_top(v), X86_TSS_IOMAP_OFFSET);
	}
}

static int vector_has_error_code(unsigned vector)
{
	switch (vector) {
	case 8:
	case 10:
	case 11:
	case 12:
	case 13:
	case 14:
	case 17:
	case 21:
	case 29:
	case 30:
		return 1;
	default:
		return 0;
	}
}

/*
 * The only CPL0 code: one 16-byte stub per exception vector.
 *     [push $0]          only where the CPU pushes no error code
 *     push $vector
 *     push %rax
 *     push %rdx
 *     mov  $KAPSEL_PORT_FAULT, %dx
 *     out  %al, %dx      the VMM reads struct x86_fault_frame at rsp
 *     hlt
 *     jmp  .-1           never resumes
 */
static void build_idt_and_stubs(struct guest_memory *mem)
{
	uint8_t *stubs = guest_memory_translate(mem, X86_GPA_EXCEPTION_STUBS,
						EXCEPTION_VECTORS * EXCEPTION_STUB_BYTES);
	uint64_t *idt = table_at(mem, X86_GPA_IDT);

	memset(idt, 0, 4096);
	memset(stubs, 0xcc, EXCEPTION_VECTORS * EXCEPTION_STUB_BYTES);
	for (unsigned v = 0; v < EXCEPTION_VECTORS; v++) {
		uint8_t *p = stubs + v * EXCEPTION_STUB_BYTES;
		if (!vector_has_error_code(v)) {
			*p++ = 0x6a; /* push imm8 */
			*p++ = 0x00;
		}
		*p++ = 0x6a;
		*p++ = (uint8_t)v;
		*p++ = 0x50; /* push %rax */
		*p++ = 0x52; /* push %rdx */
		*p++ = 0x66; /* mov $imm16, %dx */
		*p++ = 0xba;
		*p++ = KAPSEL_PORT_FAULT & 0xff;
		*p++ = KAPSEL_PORT_FAULT >> 8;
		*p++ = 0xee; /* out %al, %dx */
		*p++ = 0xf4; /* hlt */
		*p++ = 0xeb; /* jmp -3 (back to hlt) */
		*p++ = 0xfd;

		uint64_t handler = X86_GPA_EXCEPTION_STUBS + v * EXCEPTION_STUB_BYTES;
		/* 64-bit interrupt gate, present, IST 0; DPL 0, except #BP,
		 * which CPL3 code raises with int3 (else int3 is a #GP). */
		uint64_t type = v == 3 ? 0xeeull : 0x8eull;
		idt[v * 2] = (handler & 0xffff) | ((uint64_t)X86_SEL_KERNEL_CS << 16) |
			     (type << 40) | (((handler >> 16) & 0xffff) << 48);
		idt[v * 2 + 1] = handler >> 32;
	}

	/* PV MMU: the syscall entry (LSTAR) and the CR3-switching return. */
	static const uint8_t syscall_stub[] = {
		0xf4,	    /* hlt: the VMM takes the exit */
		0xeb, 0xfd, /* jmp back to hlt: never resumes */
	};
	static const uint8_t switch_stub[] = {
		0x0f, 0x22, 0xd8, /* mov %rax, %cr3 (flushes the TLB) */
		0x58,		  /* pop %rax */
		0x48, 0xcf,	  /* iretq to CPL3 */
	};
	_Static_assert(X86_GPA_SYSCALL_STUB >=
			       X86_GPA_EXCEPTION_STUBS + EXCEPTION_VECTORS * EXCEPTION_STUB_BYTES,
		       "syscall stub after the exception stubs");
	_Static_assert(X86_GPA_SWITCH_STUB >= X86_GPA_SYSCALL_STUB + sizeof(syscall_stub),
		       "stubs do not overlap");
	uint8_t *page = guest_memory_translate(mem, X86_GPA_EXCEPTION_STUBS, 4096);
	memset(page + EXCEPTION_VECTORS * EXCEPTION_STUB_BYTES, 0xcc,
	       4096 - EXCEPTION_VECTORS * EXCEPTION_STUB_BYTES);
	memcpy(page + (X86_GPA_SYSCALL_STUB - X86_GPA_EXCEPTION_STUBS), syscall_stub,
	       sizeof(syscall_stub));
	memcpy(page + (X86_GPA_SWITCH_STUB - X86_GPA_EXCEPTION_STUBS), switch_stub,
	       sizeof(switch_stub));
}

int x86_boot_build_tables(struct guest_memory *mem)
{
	int err = build_page_tables(mem);
	if (err)
		return err;
	build_gdt(mem);
	build_tss(mem);
	build_idt_and_stubs(mem);
	return 0;
}

void x86_boot_open_port(struct guest_memory *mem, uint16_t port)
{
	uint8_t *bitmap = guest_memory_translate(mem, X86_GPA_TSS + X86_TSS_IOMAP_OFFSET,
						 X86_TSS_IOMAP_BYTES);
	bitmap[port / 8] &= (uint8_t) ~(1u << (port % 8));
}

int x86_boot_port_is_open(const struct guest_memory *mem, uint16_t port)
{
	const uint8_t *bitmap = guest_memory_translate(mem, X86_GPA_TSS + X86_TSS_IOMAP_OFFSET,
						       X86_TSS_IOMAP_BYTES);
	return !(bitmap[port / 8] & (1u << (port % 8)));
}

static void set_user_segment(struct kvm_segment *seg, uint16_t selector, int code)
{
	memset(seg, 0, sizeof(*seg));
	seg->selector = selector;
	seg->limit = 0xffffffff;
	seg->present = 1;
	seg->dpl = 3;
	seg->s = 1;
	seg->g = 1;
	if (code) {
		seg->type = 0xb; /* execute/read, accessed */
		seg->l = 1;
	} else {
		seg->type = 0x3; /* read/write, accessed */
		seg->db = 1;
	}
}

/*
 * The TSS type to load into TR.  Hardware and KVM expect a busy 64-bit
 * TSS (VMX refuses anything else).  QEMU's TCG, when it emulates SVM for
 * a nested KVM (scripts/nested-kvm.sh), checks the I/O permission bitmap
 * only for an *available* TSS type and raises #GP on every guest port
 * access otherwise; SVM accepts either type.  So only there, recognized by
 * TCG's CPUID signature, the available type is used.
 */
uint8_t x86_boot_tr_type(void)
{
	unsigned int eax, ebx, ecx, edx;
	char signature[13];

	__cpuid(0x40000000, eax, ebx, ecx, edx);
	(void)eax;
	memcpy(signature + 0, &ebx, 4);
	memcpy(signature + 4, &ecx, 4);
	memcpy(signature + 8, &edx, 4);
	signature[12] = '\0';
	if (strcmp(signature, "TCGTCGTCGTCG") == 0)
		return 0x9; /* available 64-bit TSS */
	return 0xb;	    /* busy 64-bit TSS */
}

void x86_boot_set_system_registers(struct kvm_sregs *sregs, unsigned vcpu)
{
	memset(&sregs->tr, 0, sizeof(sregs->tr));
	x86_boot_select_tss(sregs, 0, vcpu);

	memset(&sregs->ldt, 0, sizeof(sregs->ldt));
	sregs->ldt.type = 0x2;
	sregs->ldt.unusable = 1;

	sregs->gdt.base = X86_GPA_GDT;
	sregs->gdt.limit = GDT_LIMIT;
	sregs->idt.base = X86_GPA_IDT;
	sregs->idt.limit = EXCEPTION_VECTORS * 16 - 1;
}

void x86_boot_select_tss(struct kvm_sregs *sregs, int user_mode, unsigned vcpu)
{
	sregs->tr.selector = x86_sel_tss(vcpu, user_mode);
	sregs->tr.base = user_mode ? x86_user_tss_base(vcpu) : x86_tss_base(vcpu);
	sregs->tr.limit = user_mode ? X86_USER_TSS_LIMIT : x86_tss_limit(vcpu);
	sregs->tr.type = x86_boot_tr_type();
	sregs->tr.present = 1;
}

int x86_boot_check_restored_vcpu(struct kvm_sregs *sregs, struct kvm_regs *regs, unsigned vcpu,
				 char *error, size_t error_len)
{
	bool user = sregs->cs.selector == X86_SEL_USER_CS && sregs->cs.dpl == 3 &&
		    sregs->ss.selector == X86_SEL_USER_DS && sregs->ss.dpl == 3;
	if (!user) {
		snprintf(error, error_len,
			 "the saved vCPU runs with code segment %#x (DPL %u), not the guest's CPL3 segments; the state is corrupt or forged",
			 sregs->cs.selector, sregs->cs.dpl);
		return -EPROTO;
	}
	if (sregs->cr3 != X86_GPA_PML4) {
		snprintf(error, error_len,
			 "the saved vCPU's page-table root %#llx is not the hypervisor's; the state is corrupt or forged",
			 (unsigned long long)sregs->cr3);
		return -EPROTO;
	}
	x86_boot_set_system_registers(sregs, vcpu);
	regs->rflags &= ~RFLAGS_IOPL;
	return 0;
}

static void set_kernel_segment(struct kvm_segment *seg, uint16_t selector, int code)
{
	set_user_segment(seg, selector, code);
	seg->dpl = 0;
}

void x86_boot_kernel_segments(struct kvm_sregs *sregs)
{
	set_kernel_segment(&sregs->cs, X86_SEL_KERNEL_CS, 1);
	set_kernel_segment(&sregs->ss, X86_SEL_KERNEL_DS, 0);
}

void x86_boot_user_segments(struct kvm_sregs *sregs)
{
	set_user_segment(&sregs->cs, X86_SEL_USER_CS, 1);
	set_user_segment(&sregs->ss, X86_SEL_USER_DS, 0);
	/* KVM on SVM reports TR as busy whatever it holds; writing that back
	 * would close every port under TCG (see x86_boot_tr_type). */
	sregs->tr.type = x86_boot_tr_type();
}

int x86_boot_set_vcpu_state(int vcpu_fd, unsigned vcpu, const struct x86_entry *entry)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_fpu fpu;

	if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) < 0)
		return -errno;
	set_user_segment(&sregs.cs, X86_SEL_USER_CS, 1);
	set_user_segment(&sregs.ss, X86_SEL_USER_DS, 0);
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss;

	x86_boot_set_system_registers(&sregs, vcpu);

	sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
	sregs.cr3 = X86_GPA_PML4;
	sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
	sregs.efer = EFER_LME | EFER_LMA;
	if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) < 0)
		return -errno;

	memset(&regs, 0, sizeof(regs));
	regs.rip = entry->rip;
	regs.rsp = entry->rsp;
	regs.rdi = entry->rdi;
	regs.rsi = entry->rsi;
	regs.rflags = 0x2; /* IF = 0, IOPL = 0: ports go through the TSS bitmap */
	if (ioctl(vcpu_fd, KVM_SET_REGS, &regs) < 0)
		return -errno;

	memset(&fpu, 0, sizeof(fpu));
	fpu.fcw = 0x37f;
	fpu.mxcsr = 0x1f80;
	if (ioctl(vcpu_fd, KVM_SET_FPU, &fpu) < 0)
		return -errno;
	return 0;
}

const char *x86_exception_name(unsigned vector)
{
	static const char *const names[EXCEPTION_VECTORS] = {
		[0] = "divide error (#DE)",
		[1] = "debug (#DB)",
		[2] = "non-maskable interrupt (NMI)",
		[3] = "breakpoint (#BP)",
		[4] = "overflow (#OF)",
		[5] = "bound range exceeded (#BR)",
		[6] = "invalid opcode (#UD)",
		[7] = "device not available (#NM)",
		[8] = "double fault (#DF)",
		[10] = "invalid TSS (#TS)",
		[11] = "segment not present (#NP)",
		[12] = "stack-segment fault (#SS)",
		[13] = "general protection fault (#GP)",
		[14] = "page fault (#PF)",
		[16] = "x87 floating-point error (#MF)",
		[17] = "alignment check (#AC)",
		[18] = "machine check (#MC)",
		[19] = "SIMD floating-point exception (#XM)",
		[20] = "virtualization exception (#VE)",
		[21] = "control protection exception (#CP)",
	};
	if (vector < EXCEPTION_VECTORS && names[vector])
		return names[vector];
	return "reserved exception vector";
}
