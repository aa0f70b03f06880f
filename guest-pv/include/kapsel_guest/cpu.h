/* Guest PV CPU API: exception handlers, upcalls (virtual interrupts), interrupt flag and timers. */
#ifndef KAPSEL_GUEST_CPU_H
#define KAPSEL_GUEST_CPU_H

/*
 * Several vCPUs (docs/porting.md §12.2): every call here is safe on any
 * vCPU and acts for the calling vCPU (its event-page slot, its handlers,
 * its callback, its timer); each vCPU registers its own, with its own
 * stacks.  kg_evtchn_set_handler is per channel, for all vCPUs; an upcall
 * runs only the handlers of channels bound to its vCPU (smp.h).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kapsel/abi.h"

/*
 * A trap handler.  frame is the interrupted context (abi.h struct
 * kapsel_trap_frame), on the handler's stack; the handler may change rip,
 * rsp, rflags and the general registers, and the context resumes with them
 * when it returns (the library makes the IRET hypercall).  Handlers run
 * with upcalls masked and must not use SSE/x87 registers (the frame does
 * not hold them), as the library itself is built.
 */
typedef void (*kg_trap_handler)(struct kapsel_trap_frame *frame);

/* An event channel handler, run from the upcall with the channel's
 * pending bit already cleared. */
typedef void (*kg_event_handler)(uint32_t port, struct kapsel_trap_frame *frame);

/* True when the hypervisor offers KAPSEL_FEATURE_PV_CPU. */
bool kg_cpu_available(void);

/*
 * Handle exception vector (one of KAPSEL_TRAP_VECTORS_ALLOWED) with
 * handler, on stack [stack, stack + stack_bytes) (16-byte aligned top,
 * 4 KiB .. 16 MiB; several vectors may share a stack, nested deliveries go
 * below the interrupted rsp).  handler NULL removes it.  Returns 0,
 * -KAPSEL_EINVAL, -KAPSEL_EFAULT (stack or code outside guest RAM) or
 * -KAPSEL_ENOSYS (no PV CPU).  Precondition: kg_platform_init ran.
 */
int kg_trap_register(unsigned vector, kg_trap_handler handler, void *stack, size_t stack_bytes);

/*
 * Take this vCPU's upcalls on stack [stack, stack + stack_bytes) (each
 * vCPU its own; kg_cpu_start does it for the vCPUs it starts when vCPU 0
 * did): from now on an
 * unmasked event channel that becomes pending interrupts the guest
 * wherever it runs (when kg_irq_enable'd) and its kg_event_handler runs.
 * Returns 0 or a negative KAPSEL_E* code.
 */
int kg_upcall_register(void *stack, size_t stack_bytes);

/* Run handler for port's events from the upcall (NULL: leave the port to polling code). */
void kg_evtchn_set_handler(uint32_t port, kg_event_handler handler);

/*
 * The interrupt flag: this vCPU's upcall mask in the shared event page (no
 * hypercall).  Enabling with an event already pending makes one hypercall
 * to take it.  Upcalls start disabled.  kg_irq_save returns the previous
 * state for kg_irq_restore.  Note: the BLOCK hypercall (kg_hc_block,
 * kg_time_sleep_ns) enables upcalls, like "sti; hlt".
 */
void kg_irq_disable(void);
void kg_irq_enable(void);
unsigned long kg_irq_save(void);
void kg_irq_restore(unsigned long flags);
bool kg_irq_enabled(void);

/*
 * The calling vCPU's timer on the Kapsel clock (kg_time_now_ns):
 * kg_timer_init allocates an event channel, binds it as KAPSEL_VIRQ_TIMER
 * to the calling vCPU (once per vCPU; again after it went down) and runs
 * handler on each expiry.  Deadlines in the past fire at once; periods
 * are at least KAPSEL_TIMER_MIN_PERIOD_NS; missed periods are skipped.
 * Return 0 or a negative KAPSEL_E* code.
 */
int kg_timer_init(kg_event_handler handler);
int kg_timer_set_oneshot(uint64_t deadline_ns);
int kg_timer_set_periodic(uint64_t first_deadline_ns, uint64_t period_ns);
int kg_timer_stop(void);
/* The deadline the host has armed next (KAPSEL_TIMER_STOP if none), from
 * the shared vCPU area: in a handler, the next expiry of a periodic timer. */
uint64_t kg_timer_next_deadline_ns(void);

/* Raw calls (abi.h). */
int64_t kg_hc_set_trap(unsigned vector, uint64_t entry, uint64_t stack_top, uint64_t stack_bytes);
int64_t kg_hc_set_callback(unsigned vcpu, uint64_t entry, uint64_t stack_top, uint64_t stack_bytes);
int64_t kg_hc_timer_set(unsigned vcpu, uint64_t deadline_ns, uint64_t period_ns);
int64_t kg_hc_evtchn_bind_virq(uint32_t port, unsigned virq, unsigned vcpu);

/* The library's entry point for every trap and upcall (cpu_entry.S). */
void kg_cpu_entry(void);

#endif
