/* Hypercall stubs: the ABI v1 calls of hypercall-abi/kapsel/abi.h as C functions. */
#include "kapsel_guest/hypercall.h"

#include "kapsel_guest/os_hooks.h"

#include "smp_internal.h"

#define PHYS(p) kg_os_virt_to_phys(p)

int64_t kg_hc_abi_info(struct kapsel_abi_info *info)
{
	return kg_hypercall(KAPSEL_HC_ABI_INFO, PHYS(info), 0, 0, 0, 0);
}

int64_t kg_hc_console_write(const void *data, uint64_t length_bytes)
{
	return kg_hypercall(KAPSEL_HC_CONSOLE_WRITE, PHYS(data), length_bytes, 0, 0, 0);
}

int64_t kg_hc_console_read(void *data, uint64_t length_bytes)
{
	return kg_hypercall(KAPSEL_HC_CONSOLE_READ, PHYS(data), length_bytes, 0, 0, 0);
}

void kg_hc_shutdown(enum kapsel_shutdown_reason reason, int exit_code)
{
	kg_hypercall(KAPSEL_HC_SHUTDOWN, (uint64_t)reason, (uint64_t)exit_code, 0, 0, 0);
	/* The hypervisor does not resume a VM that shut down. */
	for (;;)
		kg_hypercall(KAPSEL_HC_SHUTDOWN, KAPSEL_SHUTDOWN_CRASH, 1, 0, 0, 0);
}

int64_t kg_hc_time_info(struct kapsel_time_info *info)
{
	return kg_hypercall(KAPSEL_HC_TIME_INFO, PHYS(info), 0, 0, 0, 0);
}

int64_t kg_hc_block(uint64_t deadline_ns)
{
	return kg_hypercall(KAPSEL_HC_BLOCK, deadline_ns, 0, 0, 0, 0);
}

int64_t kg_hc_kick_and_block(uint64_t deadline_ns, uint64_t device_mask)
{
	return kg_hypercall(KAPSEL_HC_KICK_AND_BLOCK, deadline_ns, device_mask, 0, 0, 0);
}

int64_t kg_hc_evtchn_alloc(void)
{
	int64_t port = kg_hypercall(KAPSEL_HC_EVTCHN_ALLOC, 0, 0, 0, 0, 0);
	/* A new channel is bound to vCPU 0 whoever had the port before: so
	 * is it in the library's table (smp.c). */
	if (port >= 0)
		kg_smp_binding_record((uint32_t)port, 0);
	return port;
}

int64_t kg_hc_evtchn_bind_device(uint32_t port, uint32_t device_index)
{
	return kg_hypercall(KAPSEL_HC_EVTCHN_BIND_DEVICE, port, device_index, 0, 0, 0);
}

int64_t kg_hc_evtchn_send(uint32_t port)
{
	return kg_hypercall(KAPSEL_HC_EVTCHN_SEND, port, 0, 0, 0, 0);
}

int64_t kg_hc_evtchn_mask(uint32_t port, int masked)
{
	return kg_hypercall(KAPSEL_HC_EVTCHN_MASK, port, masked ? 1 : 0, 0, 0, 0);
}

int64_t kg_hc_evtchn_close(uint32_t port)
{
	return kg_hypercall(KAPSEL_HC_EVTCHN_CLOSE, port, 0, 0, 0, 0);
}

int64_t kg_hc_device_setup(uint32_t device_index, const struct kapsel_device_setup *setup)
{
	return kg_hypercall(KAPSEL_HC_DEVICE_SETUP, device_index, PHYS(setup), 0, 0, 0);
}
