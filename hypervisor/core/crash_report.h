/* Crash reports: what a guest was doing when it faulted, symbolized from its ELF. */
#ifndef KAPSEL_CRASH_REPORT_H
#define KAPSEL_CRASH_REPORT_H

struct kapsel_vcpu;

/*
 * The CPL0 exception stub reported a fault (vcpu exited on
 * KAPSEL_PORT_FAULT).  Print vector, error code, CR2, registers, the
 * faulting RIP as function+offset and a frame-pointer backtrace to stderr,
 * then stop the VM as crashed.
 */
void crash_report_fault(struct kapsel_vcpu *vcpu);

/* Stop the VM as crashed for reason (no exception frame: triple fault,
 * KVM error), printing the registers KVM still has for vcpu. */
void crash_report_fatal(struct kapsel_vcpu *vcpu, const char *reason);

#endif
