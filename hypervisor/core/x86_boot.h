/* x86-64 boot state built by the hypervisor: page tables, GDT, IDT, TSS and the CPL3 entry. */
#ifndef KAPSEL_X86_BOOT_H
#define KAPSEL_X86_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include "core/guest_memory.h"
#include "kapsel/abi.h"

/* Hypervisor-owned low memory (supervisor-only pages unless noted). */
#define X86_GPA_GDT 0x1000u
#define X86_GPA_IDT 0x2000u
#define X86_GPA_TSS 0x3000u
#define X86_GPA_EXCEPTION_STUBS 0x6000u
/* 0x7000 start info and 0x8000 event page are user pages (abi.h). */
#define X86_GPA_EXCEPTION_STACK_TOP 0x10000u /* vCPU 0's; see x86_exception_stack_top */
/* SMP: vCPU k >= 1 has its kernel-mode TSS header at X86_GPA_TSS_EXTRA +
 * (k - 1) * 128, in the GDT's page, whose I/O bitmap offset reaches the one
 * shared bitmap in X86_GPA_TSS's page (every vCPU has the same ports). */
#define X86_GPA_TSS_EXTRA 0x1800u
#define X86_TSS_HEADER_STRIDE 128u
/* Each vCPU's exception stack: 1 KiB below the previous one's. */
#define X86_EXCEPTION_STACK_BYTES 0x400u
#define X86_GPA_PML4 0x10000u
#define X86_GPA_PDPT 0x11000u
#define X86_GPA_PT_LOW 0x12000u	 /* 4 KiB pages for the first 2 MiB */
#define X86_GPA_PD_BASE 0x13000u /* one page directory per GiB of RAM */
/* PV MMU (pv_mmu.c): what user mode sees of the first 2 MiB (only the
 * supervisor pages the CPU needs: GDT, IDT, TSSes, stubs, exception stack),
 * and user mode's TSS, which has no I/O bitmap (every port closed). */
#define X86_GPA_SYS_PDPT 0x5c000u
#define X86_GPA_SYS_PD 0x5d000u
#define X86_GPA_SYS_PT 0x5e000u
#define X86_GPA_USER_TSS 0x5f000u
/* In the stubs page, after the 32 exception stubs:
 * SYSCALL_STUB (LSTAR):  hlt; jmp .-1       the VMM takes the exit
 * SWITCH_STUB:           mov %rax, %cr3; pop %rax; iretq
 * the second enters CPL3 with a new CR3 (and a flushed TLB) from a frame
 * [rax, rip, cs, rflags, rsp, ss] the VMM writes on the exception stack. */
#define X86_GPA_SYSCALL_STUB 0x6200u
#define X86_GPA_SWITCH_STUB 0x6210u

/* Selectors.  Guest code runs with USER_CS/USER_DS (RPL 3). */
#define X86_SEL_KERNEL_CS 0x08u
#define X86_SEL_KERNEL_DS 0x10u
#define X86_SEL_USER_DS (0x18u | 3u)
#define X86_SEL_USER_CS (0x20u | 3u)
#define X86_SEL_TSS 0x28u	/* vCPU 0's; see x86_sel_tss */
#define X86_SEL_USER_TSS 0x38u /* PV MMU user mode, vCPU 0's */
#define X86_SEL_TSS_STRIDE 0x20u /* the next vCPU's pair of TSS descriptors */

/* TSS: 104-byte header, then the I/O permission bitmap and its 0xff end. */
#define X86_TSS_IOMAP_OFFSET 104u
#define X86_TSS_IOMAP_BYTES 8192u
#define X86_TSS_LIMIT (X86_TSS_IOMAP_OFFSET + X86_TSS_IOMAP_BYTES)
#define X86_USER_TSS_LIMIT (X86_TSS_IOMAP_OFFSET - 1u) /* no bitmap: no port */

/* Per-vCPU system structures (vcpu < KAPSEL_MAX_VCPUS). */
static inline uint64_t x86_exception_stack_top(unsigned vcpu)
{
	return X86_GPA_EXCEPTION_STACK_TOP - (uint64_t)vcpu * X86_EXCEPTION_STACK_BYTES;
}
static inline uint64_t x86_tss_base(unsigned vcpu)
{
	return vcpu == 0 ? X86_GPA_TSS : X86_GPA_TSS_EXTRA + (vcpu - 1u) * X86_TSS_HEADER_STRIDE;
}
/* The bitmap offset of vCPU's kernel-mode TSS: the shared bitmap. */
static inline uint16_t x86_tss_iomap_offset(unsigned vcpu)
{
	return (uint16_t)(X86_GPA_TSS + X86_TSS_IOMAP_OFFSET - x86_tss_base(vcpu));
}
static inline uint32_t x86_tss_limit(unsigned vcpu)
{
	return x86_tss_iomap_offset(vcpu) + X86_TSS_IOMAP_BYTES;
}
static inline uint64_t x86_user_tss_base(unsigned vcpu)
{
	return X86_GPA_USER_TSS + (uint64_t)vcpu * X86_TSS_HEADER_STRIDE;
}
static inline uint16_t x86_sel_tss(unsigned vcpu, int user_mode)
{
	return (uint16_t)((user_mode ? X86_SEL_USER_TSS : X86_SEL_TSS) + vcpu * X86_SEL_TSS_STRIDE);
}

/* Frame the CPL0 stub leaves on the exception stack, lowest address first. */
struct x86_fault_frame {
	uint64_t rdx, rax; /* saved by the stub before it reports */
	uint64_t vector, error_code;
	uint64_t rip, cs, rflags, rsp, ss; /* pushed by the CPU */
};

/*
 * Write page tables, GDT, IDT, TSS (all ports closed) and the exception
 * stubs into guest RAM.  RAM must be at least 4 MiB and at most 64 GiB.
 * Returns 0 or -EFAULT if RAM is too small for the tables.
 */
int x86_boot_build_tables(struct guest_memory *mem);

/* Open port (let CPL3 code use it) in the TSS I/O permission bitmap. */
void x86_boot_open_port(struct guest_memory *mem, uint16_t port);

/* Returns 1 if port is open to CPL3 code. */
int x86_boot_port_is_open(const struct guest_memory *mem, uint16_t port);

/* Where a vCPU starts: the boot vCPU at the image's entry with rdi = start
 * info, the others where KAPSEL_HC_VCPU_UP said. */
struct x86_entry {
	uint64_t rip, rsp, rdi, rsi;
};

/*
 * Set vCPU number vcpu's registers for entry at CPL3: long mode, paging
 * on, its own TSS, rip/rsp/rdi/rsi from entry, every other register 0,
 * interrupts off, clean FPU.  Returns 0 or a negative errno from KVM (the
 * caller names the ioctl).
 */
int x86_boot_set_vcpu_state(int vcpu_fd, unsigned vcpu, const struct x86_entry *entry);

/* The TSS type TR gets on this host (busy; available under QEMU's TCG). */
uint8_t x86_boot_tr_type(void);

struct kvm_sregs;
/* Set sregs' cs and ss to the CPL3 code and data segments guests run with,
 * and TR's type to the one x86_boot_set_vcpu_state loads. */
void x86_boot_user_segments(struct kvm_sregs *sregs);

/* Set sregs' cs and ss to the CPL0 segments of the hypervisor's stubs. */
void x86_boot_kernel_segments(struct kvm_sregs *sregs);

/* Point TR at vCPU vcpu's TSS with the VM's open ports (kernel mode) or
 * at its user-mode TSS without any (PV MMU). */
void x86_boot_select_tss(struct kvm_sregs *sregs, int user_mode, unsigned vcpu);

/*
 * Point TR (vCPU vcpu's kernel-mode TSS), LDTR, GDTR and IDTR at the
 * tables the hypervisor built (and that only it writes), with the TSS type
 * this host needs.
 */
struct kvm_regs;
void x86_boot_set_system_registers(struct kvm_sregs *sregs, unsigned vcpu);

/*
 * A vCPU from saved state (a state file or a migration stream, both
 * untrusted) may resume only as a CPL3 guest on the hypervisor's page
 * tables: refuses (-EPROTO, reason in error) another code or stack
 * segment or page-table root, then forces the system registers as above
 * and clears RFLAGS.IOPL.  sregs and regs are updated in place.
 */
int x86_boot_check_restored_vcpu(struct kvm_sregs *sregs, struct kvm_regs *regs, unsigned vcpu,
				 char *error, size_t error_len);

/* Name of exception vector (e.g. "page fault (#PF)"), or "vector N". */
const char *x86_exception_name(unsigned vector);

#endif
