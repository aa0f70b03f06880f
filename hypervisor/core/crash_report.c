/* Crash reports: what a guest was doing when it faulted, symbolized from its ELF. */
#include "core/crash_report.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/output_gate.h"
#include "core/vm.h"
#include "core/x86_boot.h"

#define BACKTRACE_MAX_FRAMES 16

static void print_location(const struct kapsel_vm *vm, FILE *out, uint64_t address)
{
	uint64_t offset = 0;
	const char *name = elf_image_symbolize(&vm->image, address, &offset);
	if (name)
		fprintf(out, "%#" PRIx64 " <%s+%#" PRIx64 ">", address, name, offset);
	else
		fprintf(out, "%#" PRIx64 " <?>", address);
}

static void print_registers(FILE *out, const struct kvm_regs *r, const struct kvm_sregs *s)
{
	fprintf(out,
		"  rax %016llx  rbx %016llx  rcx %016llx  rdx %016llx\n"
		"  rsi %016llx  rdi %016llx  rbp %016llx  rsp %016llx\n"
		"  r8  %016llx  r9  %016llx  r10 %016llx  r11 %016llx\n"
		"  r12 %016llx  r13 %016llx  r14 %016llx  r15 %016llx\n"
		"  rip %016llx  rflags %08llx  cs %04x  ss %04x\n"
		"  cr0 %016llx  cr2 %016llx  cr3 %016llx  cr4 %016llx  efer %llx\n",
		r->rax, r->rbx, r->rcx, r->rdx, r->rsi, r->rdi, r->rbp, r->rsp, r->r8, r->r9,
		r->r10, r->r11, r->r12, r->r13, r->r14, r->r15, r->rip, r->rflags, s->cs.selector,
		s->ss.selector, s->cr0, s->cr2, s->cr3, s->cr4, s->efer);
}

/*
 * At a function's first instruction (offset 0) the return address is at
 * [rsp], and after its "push %rbp" (offset 1) at [rsp + 8]; rbp still
 * belongs to the caller's frame in both cases, so the rbp chain would skip
 * the caller.  Returns the return address, or 0 when rip is elsewhere.
 */
static uint64_t return_address_before_frame(const struct kapsel_vm *vm, uint64_t rip, uint64_t rsp)
{
	uint64_t offset = 0;
	if (!elf_image_symbolize(&vm->image, rip, &offset) || offset > 1)
		return 0;
	if (offset == 1) {
		const uint8_t *first = guest_memory_translate(&vm->mem, rip - 1, 1);
		if (!first || *first != 0x55) /* push %rbp */
			return 0;
		rsp += 8;
	}
	const uint64_t *slot = guest_memory_translate(&vm->mem, rsp, sizeof(*slot));
	return slot ? *slot : 0;
}

/* Walk saved-rbp links; every read goes through the checked translator. */
static void print_backtrace(const struct kapsel_vm *vm, FILE *out, uint64_t rip, uint64_t rsp,
			    uint64_t rbp)
{
	int frame = 1;
	fprintf(out, "backtrace:\n  #0 ");
	print_location(vm, out, rip);
	fputc('\n', out);
	uint64_t caller = return_address_before_frame(vm, rip, rsp);
	if (caller) {
		fprintf(out, "  #%d ", frame++);
		print_location(vm, out, caller);
		fputs(" (return address on the stack)\n", out);
	}
	for (; frame < BACKTRACE_MAX_FRAMES && rbp; frame++) {
		const uint64_t *link = guest_memory_translate(&vm->mem, rbp, 16);
		if (!link || (rbp & 7))
			break;
		uint64_t next_rbp = link[0], return_address = link[1];
		if (!return_address)
			break;
		fprintf(out, "  #%d ", frame);
		print_location(vm, out, return_address);
		fputc('\n', out);
		if (next_rbp <= rbp) /* frames grow upward; anything else is junk */
			break;
		rbp = next_rbp;
	}
}

static void stop_crashed(struct kapsel_vm *vm)
{
	vm->state = VM_STATE_STOPPED;
	vm->shutdown_reason = KAPSEL_SHUTDOWN_CRASH;
	vm->exit_code = KAPSEL_EXIT_GUEST_CRASH;
}

/* A crash report is output too (output_gate.h): a guest restored lazily
 * waits for its memory's verdict; if the memory failed its check, the
 * crash is its consequence, already reported as such, and no report
 * follows.  True when the report may be printed. */
static bool crash_report_allowed(struct kapsel_vm *vm)
{
	if (output_gate_wait() == 0)
		return true;
	stop_crashed(vm);
	return false;
}

/* The vCPU's last runs, oldest first: what the VMM changed before each
 * entry and where each ended (a triple fault leaves no registers). */
static void print_run_history(const struct kapsel_vcpu *vcpu, FILE *out)
{
	uint64_t last = vcpu->runs;
	uint64_t first = last > VCPU_RUN_HISTORY ? last - VCPU_RUN_HISTORY + 1 : 1;
	if (!last)
		return;
	fprintf(out, "last %u runs of vCPU %u (entry set by the VMM -> exit):\n",
		(unsigned)(last - first + 1), vcpu->id);
	for (uint64_t n = first; n <= last; n++) {
		const struct vcpu_run_record *r = &vcpu->history[n % VCPU_RUN_HISTORY];
		if (r->run != n)
			continue;
		char entry[64] = "-";
		if (r->entry_set)
			snprintf(entry, sizeof(entry), "rip %#" PRIx64 " rsp %#" PRIx64,
				 r->entry_rip, r->entry_rsp);
		char why[32];
		if (r->exit_reason == VCPU_RUN_EINTR)
			snprintf(why, sizeof(why), "EINTR");
		else if (r->exit_reason == KVM_EXIT_IO)
			snprintf(why, sizeof(why), "io %#x", r->port);
		else
			snprintf(why, sizeof(why), "exit %u", r->exit_reason);
		fprintf(out,
			"  #%-8" PRIu64 " %-40s -> %-9s rip %#" PRIx64 " rsp %#" PRIx64
			" cs %#x cr3 %#" PRIx64 "\n",
			n, entry, why, r->rip, r->rsp, r->cs, r->cr3);
	}
}

void crash_report_fault(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	FILE *out = stderr;

	if (!crash_report_allowed(vm))
		return;
	stop_crashed(vm);
	if (ioctl(vcpu->fd, KVM_GET_REGS, &regs) < 0 ||
	    ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0) {
		fprintf(out, "kapsel: guest crashed; registers unavailable\n");
		return;
	}
	struct x86_fault_frame frame;
	const void *stack = guest_memory_translate(&vm->mem, regs.rsp, sizeof(frame));
	if (!stack) {
		fprintf(out, "kapsel: guest crashed; exception frame at %#llx is outside RAM\n",
			regs.rsp);
		print_registers(out, &regs, &sregs);
		return;
	}
	memcpy(&frame, stack, sizeof(frame));
	/* Show the registers as they were at the fault, not in the stub. */
	regs.rax = frame.rax;
	regs.rdx = frame.rdx;
	regs.rip = frame.rip;
	regs.rsp = frame.rsp;
	regs.rflags = frame.rflags;
	sregs.cs.selector = (uint16_t)frame.cs;
	sregs.ss.selector = (uint16_t)frame.ss;

	fprintf(out, "kapsel: guest '%s' crashed: %s, error code %#llx, at ", vm->config->name,
		/* The frame is guest memory: a vector past 2^32 is no small one. */
		x86_exception_name(frame.vector < 256 ? (unsigned)frame.vector : 256u),
		(unsigned long long)frame.error_code);
	print_location(vm, out, frame.rip);
	fputc('\n', out);
	if (frame.vector == 14)
		fprintf(out, "  faulting address (cr2): %#llx (%s, %s, %s)\n", sregs.cr2,
			frame.error_code & 1 ? "protection violation" : "page not present",
			frame.error_code & 2 ? "write" : "read",
			frame.error_code & 4 ? "user mode" : "kernel mode");
	print_registers(out, &regs, &sregs);
	print_backtrace(vm, out, frame.rip, frame.rsp, regs.rbp);
	pv_cpu_print_handlers(vcpu, out);
	print_run_history(vcpu, out);
}

void crash_report_fatal(struct kapsel_vcpu *vcpu, const char *reason)
{
	struct kapsel_vm *vm = vcpu->vm;
	struct kvm_run *run = vcpu->run;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	FILE *out = stderr;

	if (!crash_report_allowed(vm))
		return;
	stop_crashed(vm);
	fprintf(out, "kapsel: guest '%s' stopped: %s (KVM exit reason %u)\n", vm->config->name,
		reason, run ? run->exit_reason : 0);
	if (run && run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
		fprintf(out, "  internal error suberror %u\n", run->internal.suberror);
	if (run && run->exit_reason == KVM_EXIT_FAIL_ENTRY)
		fprintf(out, "  hardware entry failure reason %#llx\n",
			(unsigned long long)run->fail_entry.hardware_entry_failure_reason);
	print_run_history(vcpu, out);
	if (ioctl(vcpu->fd, KVM_GET_REGS, &regs) < 0 || ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
		return;
	fprintf(out, "  at ");
	print_location(vm, out, regs.rip);
	fputc('\n', out);
	print_registers(out, &regs, &sregs);
	print_backtrace(vm, out, regs.rip, regs.rsp, regs.rbp);
	pv_cpu_print_handlers(vcpu, out);
}
