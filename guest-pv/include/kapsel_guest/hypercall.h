/* Hypercall stubs: the ABI v1 calls of hypercall-abi/kapsel/abi.h as C functions. */
#ifndef KAPSEL_GUEST_HYPERCALL_H
#define KAPSEL_GUEST_HYPERCALL_H

/*
 * Several vCPUs: every stub is safe on any vCPU; the hypervisor serves
 * each call for the calling vCPU.
 */

#include <stdint.h>

#include "kapsel/abi.h"

/* Raw call: rax = nr, args in rdi, rsi, rcx, r8, r9; result in rax. */
static inline int64_t kg_hypercall(uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3,
				   uint64_t a4)
{
	register uint64_t r8 __asm__("r8") = a3;
	register uint64_t r9 __asm__("r9") = a4;
	uint64_t rax = nr;
	__asm__ volatile("outl %%eax, %%dx"
			 : "+a"(rax)
			 : "d"((uint16_t)KAPSEL_PORT_HYPERCALL), "D"(a0), "S"(a1), "c"(a2), "r"(r8),
			   "r"(r9)
			 : "memory");
	return (int64_t)rax;
}

/* Buffers passed to these are guest-physical addresses: the library
 * converts with kg_os_virt_to_phys. */
int64_t kg_hc_abi_info(struct kapsel_abi_info *info);
int64_t kg_hc_console_write(const void *data, uint64_t length_bytes);
int64_t kg_hc_console_read(void *data, uint64_t length_bytes);
__attribute__((noreturn)) void kg_hc_shutdown(enum kapsel_shutdown_reason reason, int exit_code);
int64_t kg_hc_time_info(struct kapsel_time_info *info);
/* Sleep until an unmasked event is pending (returns 1) or deadline_ns on
 * the Kapsel clock passes (returns 0). */
int64_t kg_hc_block(uint64_t deadline_ns);
/* Ring the doorbell of every device whose index is a bit of device_mask,
 * then sleep as kg_hc_block: one exit for a kick and the wait for its
 * answer.  Needs KAPSEL_FEATURE_KICK_AND_BLOCK (ABI 1.7); -KAPSEL_EINVAL
 * (nothing rung, no sleep) if a bit names no device with a doorbell. */
int64_t kg_hc_kick_and_block(uint64_t deadline_ns, uint64_t device_mask);
int64_t kg_hc_evtchn_alloc(void);
int64_t kg_hc_evtchn_bind_device(uint32_t port, uint32_t device_index);
int64_t kg_hc_evtchn_send(uint32_t port);
int64_t kg_hc_evtchn_mask(uint32_t port, int masked);
int64_t kg_hc_evtchn_close(uint32_t port);
int64_t kg_hc_device_setup(uint32_t device_index, const struct kapsel_device_setup *setup);

#endif
