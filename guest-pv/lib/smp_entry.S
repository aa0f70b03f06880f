/* Where a vCPU started by kg_cpu_start begins: call the C trampoline on the stack VCPU_UP gave it. */
	.text
	.globl kg_cpu_trampoline
	.type kg_cpu_trampoline, @function
kg_cpu_trampoline:
	/* The hypervisor enters here at CPL3 with rsp = the 16-byte aligned
	 * stack top, rdi = the start block (VCPU_UP's arg), rsi = the vCPU
	 * id: the C function's two arguments as they are. */
	xor	%ebp, %ebp		/* backtraces end here */
	call	kg_cpu_trampoline_main
	ud2				/* it does not return */
	.size kg_cpu_trampoline, . - kg_cpu_trampoline

	.section .note.GNU-stack, "", @progbits
