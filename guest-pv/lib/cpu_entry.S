/* Guest entry for traps and upcalls: call the C dispatcher with the frame, then IRET. */
	.text
	.globl kg_cpu_entry
	.type kg_cpu_entry, @function
kg_cpu_entry:
	/* The hypervisor enters here at CPL3 with rsp = rdi = the frame,
	 * 16-byte aligned (abi.h struct kapsel_trap_frame). */
	xor	%ebp, %ebp		/* backtraces end at the handler */
	call	kg_cpu_dispatch
	mov	%rsp, %rdi		/* the frame, possibly edited */
	mov	$14, %eax		/* KAPSEL_HC_IRET */
	mov	$0x510, %dx		/* KAPSEL_PORT_HYPERCALL */
	outl	%eax, %dx
	ud2				/* IRET refused the frame */
	.size kg_cpu_entry, . - kg_cpu_entry

	.section .note.GNU-stack, "", @progbits
