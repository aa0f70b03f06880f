/* SMP (ABI minor 6): bringing vCPUs up and down, and binding event channels to a vCPU. */
#ifndef KAPSEL_SMP_H
#define KAPSEL_SMP_H

#include <stdint.h>

#include "core/guest_memory.h"
#include "core/hypercall.h"

/*
 * Check KAPSEL_HC_VCPU_UP's entry and stack against guest RAM: entry's
 * first byte and the stack's top page [stack_top - 4096, stack_top) must
 * be guest-owned RAM (never the hypervisor's low pages), stack_top 16-byte
 * aligned.  Returns 0, -KAPSEL_EINVAL (alignment) or -KAPSEL_EFAULT.
 */
int smp_check_start(const struct guest_memory *mem, uint64_t entry, uint64_t stack_top);

/* Register VCPU_UP, VCPU_DOWN, VCPU_STATUS and EVTCHN_BIND_VCPU.  Returns 0 or -errno. */
int smp_register_hypercalls(struct hypercall_table *table);

#endif
