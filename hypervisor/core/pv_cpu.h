/* PV CPU: guest trap handlers, upcalls (virtual interrupts) and per-vCPU timers, delivered by the VMM. */
#ifndef KAPSEL_PV_CPU_H
#define KAPSEL_PV_CPU_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "core/guest_memory.h"
#include "core/hypercall.h"
#include "kapsel/abi.h"

struct kapsel_vm;
struct kapsel_vcpu;

/* A guest entry point and the stack it runs on: [stack_top - stack_bytes, stack_top). */
struct pv_handler {
	uint64_t entry; /* 0: none registered */
	uint64_t stack_top;
	uint64_t stack_bytes;
};

/*
 * One vCPU's PV CPU state (struct kapsel_vcpu.pv_cpu).  Touched by the
 * vCPU's thread only, except timer_fired (the timer signal handler sets
 * it).
 */
struct pv_cpu_vcpu {
	struct pv_handler traps[KAPSEL_TRAP_VECTOR_COUNT];
	struct pv_handler callback;
	/* Bit v: a delivery of vector v is in progress (set at delivery,
	 * cleared by IRET of a frame with that vector).  A second fault of
	 * the same vector meanwhile ends the VM: the handler itself faults. */
	uint32_t active_vectors;
	uint32_t virq_port[KAPSEL_VIRQ_COUNT]; /* UINT32_MAX: not bound */
	/* Timer on the Kapsel clock; KAPSEL_TIMER_STOP when disarmed. */
	uint64_t timer_deadline_ns;
	uint64_t timer_period_ns;
	timer_t timer_id;
	bool timer_created;
	int timer_fired; /* atomic: set by the timer signal handler */
	/* Counters (vm_print_stats). */
	uint64_t traps_delivered, upcalls_delivered, irets, timer_fires, timer_overruns;
};

/* ---- Pure helpers (unit-tested without KVM) ----------------------------- */

/*
 * Check a handler registration against guest RAM: entry and the whole
 * stack must lie in guest-owned RAM (at or above guest_floor_gpa, so never
 * the hypervisor's tables or the shared pages), the stack must be
 * KAPSEL_TRAP_STACK_MIN_BYTES..MAX_BYTES, 16-byte aligned at its top, and
 * nothing may wrap.  Returns 0, -KAPSEL_EINVAL (size or alignment) or
 * -KAPSEL_EFAULT (outside guest RAM).
 */
int pv_cpu_check_handler(const struct guest_memory *mem, const struct pv_handler *handler);

/* The stack part of pv_cpu_check_handler (also the PV MMU's kernel stack). */
int pv_cpu_check_stack(const struct guest_memory *mem, uint64_t stack_top, uint64_t stack_bytes);

/*
 * Where the frame for a delivery goes: below the interrupted rsp (minus
 * KAPSEL_TRAP_NESTED_GAP_BYTES) if that already lies on the handler's
 * stack (a nested delivery), else at the stack top; 16-byte aligned.
 * Returns 0 with *frame_gpa set, or -KAPSEL_ENOSPC when the frame would
 * not fit the stack.  Precondition: pv_cpu_check_handler accepted handler.
 */
int pv_cpu_frame_place(const struct pv_handler *handler, uint64_t interrupted_rsp,
		       uint64_t *frame_gpa);

/* Copy the interrupted context (regs) into frame's rip/rsp/rflags/GPRs. */
void pv_cpu_frame_from_regs(struct kapsel_trap_frame *frame, const struct kvm_regs *regs);

/*
 * The registers an IRET of frame resumes with: GPRs, rip and rsp from the
 * frame, and rflags = current_rflags with only the guest-controllable bits
 * (arithmetic flags, TF, DF, AC) taken from the frame.  Returns 0, or
 * -KAPSEL_EINVAL if rip or rsp is not canonical (regs untouched then).
 */
int pv_cpu_regs_from_frame(struct kvm_regs *regs, const struct kapsel_trap_frame *frame,
			   uint64_t current_rflags);

/*
 * The next deadline of a periodic timer that was due at deadline_ns when
 * the clock reads now_ns: the first deadline + k * period_ns after now_ns
 * (missed periods are skipped, not replayed).  *skipped (may be NULL) gets
 * the number of periods skipped.  Precondition: period_ns > 0.
 */
uint64_t pv_cpu_timer_next(uint64_t deadline_ns, uint64_t period_ns, uint64_t now_ns,
			   uint64_t *skipped);

/* ---- VMM side ------------------------------------------------------------ */

/* Forget every vCPU's registrations and disarm its timer (boot and
 * reboot); sets every vCPU's upcall mask in the event page. */
void pv_cpu_reset(struct kapsel_vm *vm);

/* The same for one vCPU (KAPSEL_HC_VCPU_UP starts it afresh). */
void pv_cpu_vcpu_reset(struct kapsel_vcpu *vcpu);

/* Disarm vcpu's timer (KAPSEL_HC_VCPU_DOWN). */
void pv_cpu_timer_stop(struct kapsel_vcpu *vcpu);

/* Release every vCPU's timer (vm_destroy). */
void pv_cpu_destroy(struct kapsel_vm *vm);

/* Register the PV CPU hypercalls.  Returns 0 or -errno. */
int pv_cpu_register_hypercalls(struct hypercall_table *table);

/*
 * The CPL0 stub reported an exception (port KAPSEL_PORT_FAULT exit).  If
 * the guest has a usable handler for it, write the frame on the handler's
 * stack and redirect the vCPU there: returns true.  Otherwise print why
 * not and return false: the caller writes the crash report.
 */
bool pv_cpu_deliver_trap(struct kapsel_vcpu *vcpu);

/*
 * The vCPU executed syscall in user mode with a kernel entry registered
 * (PV MMU; pv_mmu_handle_hlt): put the process's registers in a frame on
 * the kernel stack and enter the kernel's syscall entry in kernel mode.
 * Returns false if the frame could not be written (the caller crashes).
 */
struct kvm_sregs;
bool pv_cpu_deliver_syscall(struct kapsel_vcpu *vcpu, const struct kvm_sregs *sregs);

/* Upcall wanted now: callback registered, upcall_pending set, mask clear. */
bool pv_cpu_upcall_wanted(struct kapsel_vcpu *vcpu);

/*
 * Enter the upcall callback, if still wanted, with the interrupted context
 * in a frame.  Precondition: the vCPU's last exit is complete (KVM_RUN
 * returned EINTR with immediate_exit), so rip is past the last instruction.
 * A vCPU interrupted inside the CPL0 stub is left alone (the stub exits
 * next).  Returns false if delivering failed and the VM was crashed.
 */
bool pv_cpu_deliver_upcall(struct kapsel_vcpu *vcpu);

/* An unmasked event channel bound to vcpu became pending: set its
 * upcall_pending and kick it if that makes an upcall deliverable.  Any
 * thread. */
void pv_cpu_event_raised(struct kapsel_vcpu *vcpu);

/* BLOCK is entered: on a vCPU with a callback, clear its upcall mask
 * (the guest's idle is "sti; hlt"). */
void pv_cpu_block_enter(struct kapsel_vcpu *vcpu);

/* Handle a timer expiry the signal handler recorded (vCPU thread). */
void pv_cpu_poll_timers(struct kapsel_vcpu *vcpu);

/* Called on the vCPU's thread as it starts running: installs the timer
 * signal handler and arms a timer restored from a saved state.  Returns 0
 * or -errno. */
int pv_cpu_start(struct kapsel_vcpu *vcpu);

/* Print registered handlers, callback and deliveries in progress (crash reports). */
void pv_cpu_print_handlers(const struct kapsel_vcpu *vcpu, FILE *out);

/* Print a vCPU's counters (vm_print_stats). */
void pv_cpu_print_stats(const struct kapsel_vcpu *vcpu, FILE *out);

/* ---- Saved state (pv_cpu_state.c) ----------------------------------------- */

struct vm_state_writer;
struct vm_state_records;

/* Payload of the VM_STATE_VCPU_PV_CPU record (little-endian, fixed layout). */
struct vm_state_pv_handler {
	uint64_t entry, stack_top, stack_bytes;
};
struct vm_state_pv_cpu {
	uint32_t vcpu;		 /* 0 */
	uint32_t active_vectors; /* deliveries in progress */
	struct vm_state_pv_handler traps[KAPSEL_TRAP_VECTOR_COUNT];
	struct vm_state_pv_handler callback;
	uint64_t timer_deadline_ns; /* Kapsel clock, or KAPSEL_TIMER_STOP */
	uint64_t timer_period_ns;
	uint32_t virq_port[4]; /* KAPSEL_VIRQ_COUNT used; UINT32_MAX = unbound */
	uint64_t _reserved[4];
};
_Static_assert(sizeof(struct vm_state_pv_cpu) == 864, "pv_cpu record layout");

/*
 * Append the vCPU's PV CPU state as a mandatory record if the guest uses
 * any of it (a handler, the callback, a bound VIRQ or an armed timer);
 * otherwise write nothing, so states of other guests stay loadable by
 * Kapsel versions without PV CPU.  Upcall mask and pending flags live in
 * the event page and travel with guest memory.  Precondition: the vCPU is
 * paused.  Errors are left in out->error.
 */
void pv_cpu_save(struct kapsel_vm *vm, struct vm_state_writer *out);

/*
 * Take the PV CPU state from state (none: everything unregistered),
 * checking every handler against this VM's RAM and every port against its
 * event channels (load those first).  The timer is armed when vm_run
 * starts, at the saved Kapsel-clock deadline.  Returns 0 or -EPROTO with a
 * message in error; vm is unchanged on failure.
 */
int pv_cpu_load(struct kapsel_vm *vm, const struct vm_state_records *state, char *error,
		size_t error_len);

/* Print the PV CPU record of state, if any, for `kapsel inspect`. */
void pv_cpu_state_print(const struct vm_state_records *state, FILE *out);

#endif
