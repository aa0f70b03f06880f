/* Guest entry: the hypervisor jumps here at CPL3 with rdi = start info. */
	.section .text.start, "ax"
	.globl _start
	.type _start, @function
_start:
	lea	runtime_stack_top(%rip), %rsp
	xor	%ebp, %ebp		/* terminates frame-pointer backtraces */
	call	kg_runtime_start	/* rdi still holds the start info */
	ud2
	.size _start, . - _start

	.section .bss.stack, "aw", @nobits
	.balign 4096
runtime_stack:
	.skip 65536
runtime_stack_top:

	.section .note.GNU-stack, "", @progbits
