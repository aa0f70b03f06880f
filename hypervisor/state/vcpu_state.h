/* vCPU state for save/restore and migration: every KVM register set that matters, as state records. */
#ifndef KAPSEL_VCPU_STATE_H
#define KAPSEL_VCPU_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "kapsel/abi.h"
#include "state/vm_state.h"

struct kapsel_vm;

/*
 * Write every vCPU's state as records (vCPUs 1.. each after a
 * VM_STATE_VCPU_GROUP record with its power state; only one that is up
 * has registers): regs, sregs, FPU, XSAVE + XCRs (when
 * KVM has KVM_CAP_XSAVE), the MSRs that matter (those of
 * KVM_GET_MSR_INDEX_LIST that Kapsel guests can change: SYSENTER, STAR,
 * LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, TSC_AUX, PAT, MISC_ENABLE,
 * TSC_ADJUST and TSC), vCPU events, debug registers and the MP state.
 * Precondition: the vCPU is outside KVM_RUN with its last exit completed
 * (vm_pause, or vcpu_state_settle after vm_run returned).  Returns 0 or a
 * negative errno with a message in error naming the ioctl.
 */
int vcpu_state_save(struct kapsel_vm *vm, struct vm_state_writer *out, char *error,
		    size_t error_len);

/*
 * Set every vCPU (and vCPUs 1..'s power state) from the records in state (all of regs, sregs, MSRs and
 * FPU or XSAVE must be there; sizes are checked first, so a malformed
 * record changes nothing).  Drops register values pending in kvm_run.
 * Precondition: the vCPU is not running.  Returns 0, -EPROTO (missing or
 * malformed record) or a negative errno from KVM, with a message in error.
 */
int vcpu_state_load(struct kapsel_vm *vm, const struct vm_state_records *state, char *error,
		    size_t error_len);

/*
 * Complete the vCPU's last exit without running guest code: KVM_RUN with
 * immediate_exit set finishes pending port I/O (advancing rip) and applies
 * registers a hypercall left in kvm_run.  For a vCPU that vm_run left
 * because of vm_request_stop.  Returns 0 or a negative errno.
 */
int vcpu_state_settle(struct kapsel_vm *vm);

/*
 * The vCPU records of state, one view per vCPU: views[0] holds every
 * record outside a VM_STATE_VCPU_GROUP (vCPU 0's registers and the VM's
 * records), views[k] the register records after vCPU k's group record,
 * whose payload is groups[k] (present[k]).  Views share state's payloads.
 * Refuses (-EPROTO, message in error) a malformed group, a vCPU 0 or >=
 * vcpu_count, or one saved twice.
 */
struct vcpu_state_split {
	struct vm_state_records views[KAPSEL_MAX_VCPUS];
	struct vm_state_vcpu_group groups[KAPSEL_MAX_VCPUS];
	bool present[KAPSEL_MAX_VCPUS];
};
int vcpu_state_split(const struct vm_state_records *state, unsigned vcpu_count,
		     struct vcpu_state_split *split, char *error, size_t error_len);
void vcpu_state_split_free(struct vcpu_state_split *split);

/* Print the vCPU records of state for `kapsel inspect`. */
void vcpu_state_print(const struct vm_state_records *state, FILE *out);

/*
 * True for the MSRs that say where syscall/sysenter enter at CPL0 (STAR,
 * LSTAR, CSTAR, SFMASK, SYSENTER_*): vcpu_state_load never applies saved
 * values of these, so forged state cannot give guest code CPL0.
 */
bool vcpu_state_msr_is_privileged_entry(uint32_t index);

#endif
