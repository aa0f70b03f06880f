/* PVH entry for QEMU (-kernel guest.elf): the Xen ELF note, the 32-bit entry, the switch to long mode, exception stubs and the CPL3 entry. */

#include "pvh.h"

/*
 * The note QEMU looks for in a PT_NOTE segment of an ELF kernel: name "Xen",
 * type XEN_ELFNOTE_PHYS32_ENTRY, description = the 32-bit physical entry.
 * kapsel loads only PT_LOAD segments and ignores it.
 */
	.section .note.Xen, "a", @note
	.balign 4
	.long	4			/* namesz: "Xen\0" */
	.long	8			/* descsz */
	.long	PVH_XEN_ELFNOTE_PHYS32_ENTRY
	.asciz	"Xen"
	.balign 4
	.quad	kg_pvh_start32
	.balign 4

/*
 * Entered by QEMU's PVH loader (qboot on microvm, the pvh option ROM on pc):
 * 32-bit protected mode, flat segments, paging off, interrupts off,
 * ebx = physical address of struct hvm_start_info, no stack.
 */
	.text
	.code32
	.globl kg_pvh_start32
	.type kg_pvh_start32, @function
kg_pvh_start32:
	cli
	cld
	mov	%ebx, %esi		/* survives rep stos and the mode switch */

	/* Zero the image's .bss: the boot tables and stack below live there,
	 * and the guest expects a zeroed .bss as kapsel leaves it. */
	mov	$__bss_start, %edi
	mov	$_end, %ecx
	sub	%edi, %ecx
	xor	%eax, %eax
	rep stosb

	/* Boot map: identity, 4 GiB in 2 MiB pages, supervisor only.  The C
	 * part replaces it with the real map before anything runs at CPL3. */
	mov	$pvh_boot_pdpt + 3, %eax	/* present, writable */
	mov	%eax, pvh_boot_pml4
	xor	%ecx, %ecx
1:	mov	%ecx, %eax			/* PD n is at pvh_boot_pd + n * 4096 */
	shl	$12, %eax
	add	$pvh_boot_pd + 3, %eax
	mov	%eax, pvh_boot_pdpt(,%ecx,8)
	inc	%ecx
	cmp	$4, %ecx
	jne	1b
	xor	%ecx, %ecx
2:	mov	%ecx, %eax
	shl	$21, %eax
	or	$0x83, %eax			/* present, writable, 2 MiB page */
	mov	%eax, pvh_boot_pd(,%ecx,8)
	inc	%ecx
	cmp	$2048, %ecx
	jne	2b

	mov	%cr4, %eax
	or	$PVH_CR4_PAE, %eax
	mov	%eax, %cr4
	mov	$pvh_boot_pml4, %eax
	mov	%eax, %cr3
	mov	$PVH_MSR_EFER, %ecx
	rdmsr
	or	$PVH_EFER_LME, %eax
	wrmsr
	mov	%cr0, %eax
	or	$(PVH_CR0_PG | PVH_CR0_PE), %eax
	mov	%eax, %cr0
	lgdt	pvh_boot_gdt_descriptor
	ljmp	$PVH_SEL_KERNEL_CS, $pvh_start64

	.code64
pvh_start64:
	mov	$PVH_SEL_KERNEL_DS, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	xor	%eax, %eax
	mov	%eax, %fs
	mov	%eax, %gs
	lea	pvh_boot_stack_top(%rip), %rsp
	xor	%ebp, %ebp
	mov	%esi, %edi		/* zero-extends: the hvm_start_info address */
	call	kg_pvh_main		/* never returns */
	ud2
	.size kg_pvh_start32, . - kg_pvh_start32

/*
 * kg_pvh_enter_user(entry, stack_top, argument): iretq to CPL3 at entry
 * with rsp = stack_top, rdi = argument, rflags = IF 0 and IOPL 0, exactly
 * as kapsel's vCPU starts.
 */
	.globl kg_pvh_enter_user
	.type kg_pvh_enter_user, @function
kg_pvh_enter_user:
	mov	$PVH_SEL_USER_DS, %eax
	mov	%eax, %ds
	mov	%eax, %es
	pushq	$PVH_SEL_USER_DS	/* ss */
	pushq	%rsi			/* rsp */
	pushq	$0x2			/* rflags */
	pushq	$PVH_SEL_USER_CS	/* cs */
	pushq	%rdi			/* rip */
	mov	%rdx, %rdi
	xor	%esi, %esi
	xor	%edx, %edx
	iretq
	.size kg_pvh_enter_user, . - kg_pvh_enter_user

/*
 * One stub per exception vector, 16 bytes apart (the IDT is built from
 * kg_pvh_exception_stubs + 16 * vector): push a zero where the CPU pushes
 * no error code, push the vector, join the common path.
 */
	.balign 16
	.globl kg_pvh_exception_stubs
kg_pvh_exception_stubs:
	.irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.balign 16
	.if (\vector == 8) || (\vector == 10) || (\vector == 11) || (\vector == 12) || (\vector == 13) || (\vector == 14) || (\vector == 17) || (\vector == 21) || (\vector == 29) || (\vector == 30)
	.else
	pushq	$0
	.endif
	pushq	$\vector
	jmp	pvh_exception_common
	.endr

pvh_exception_common:
	/* rsp: vector, error code, rip, cs, rflags, rsp, ss (struct pvh_exception_frame) */
	mov	%rsp, %rdi
	and	$-16, %rsp
	call	kg_pvh_exception	/* prints, exits through isa-debug-exit, halts */
	ud2

/* ---- Boot data ----------------------------------------------------------- */

	.section .rodata
	.balign 8
pvh_boot_gdt:
	.quad	0
	.quad	0x00af9a000000ffff	/* 0x08: 64-bit code, DPL 0 */
	.quad	0x00cf92000000ffff	/* 0x10: data, DPL 0 */
pvh_boot_gdt_end:
pvh_boot_gdt_descriptor:
	.word	pvh_boot_gdt_end - pvh_boot_gdt - 1
	.long	pvh_boot_gdt

	.section .bss.pvh, "aw", @nobits
	.balign 4096
pvh_boot_pml4:
	.skip	4096
pvh_boot_pdpt:
	.skip	4096
pvh_boot_pd:
	.skip	4 * 4096
pvh_boot_stack:
	.skip	16384
pvh_boot_stack_top:

	.section .note.GNU-stack, "", @progbits
