/* Constants shared by the PVH boot shim's assembly (pvh.S) and C (pvh.c): CPU bits, selectors, the low-memory layout. */
#ifndef KAPSEL_RUNTIME_PVH_H
#define KAPSEL_RUNTIME_PVH_H

/* Xen's ELF note type for the 32-bit PVH entry, and hvm_start_info's magic. */
#define PVH_XEN_ELFNOTE_PHYS32_ENTRY 18
#define PVH_START_INFO_MAGIC 0x336ec578u

#define PVH_CR0_PE 0x00000001
#define PVH_CR0_MP 0x00000002
#define PVH_CR0_EM 0x00000004
#define PVH_CR0_TS 0x00000008
#define PVH_CR0_NE 0x00000020
#define PVH_CR0_WP 0x00010000
#define PVH_CR0_PG 0x80000000
#define PVH_CR4_PAE 0x00000020
#define PVH_CR4_OSFXSR 0x00000200
#define PVH_CR4_OSXMMEXCPT 0x00000400
#define PVH_MSR_EFER 0xc0000080
#define PVH_EFER_LME 0x00000100

/*
 * Selectors: the same GDT layout kapsel builds (hypervisor/core/x86_boot.h),
 * so guest code sees the same cs and ss on both.
 */
#define PVH_SEL_KERNEL_CS 0x08
#define PVH_SEL_KERNEL_DS 0x10
#define PVH_SEL_USER_DS (0x18 | 3)
#define PVH_SEL_USER_CS (0x20 | 3)
#define PVH_SEL_TSS 0x28

/*
 * Where the shim puts the CPU tables: the low memory kapsel uses for its
 * own (below KAPSEL_GPA_LOW_FREE, supervisor-only pages).  Firmware data
 * there (the command line, hvm_start_info) is copied out first.
 */
#define PVH_GPA_GDT 0x1000
#define PVH_GPA_IDT 0x2000
#define PVH_GPA_TSS 0x3000 /* 104 bytes, then the 8 KiB I/O bitmap */
#define PVH_GPA_EXCEPTION_STACK_TOP 0x10000
#define PVH_GPA_PML4 0x10000
#define PVH_GPA_PDPT 0x11000
#define PVH_GPA_PT_LOW 0x12000	/* 4 KiB pages for the first 2 MiB */
#define PVH_GPA_PD_BASE 0x13000 /* one page directory per GiB */
#define PVH_MAX_GIB 64		/* PDs end below 0x60000 */

#define PVH_TSS_IOMAP_OFFSET 104
#define PVH_TSS_IOMAP_BYTES 8192
#define PVH_TSS_LIMIT (PVH_TSS_IOMAP_OFFSET + PVH_TSS_IOMAP_BYTES)

#endif
