/* Example guest: exercises the hypercall ABI's error paths and event channels. */
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	kg_assert(kg_platform_is_kapsel());
	const struct kapsel_start_info *si = kg_platform_start_info();

	/* An unknown call number gets -ENOSYS and the guest keeps running. */
	int64_t r = kg_hypercall(999, 0, 0, 0, 0, 0);
	kg_printf("unknown hypercall -> %lld\n", (long long)r);
	kg_assert(r == -KAPSEL_ENOSYS);
	r = kg_hypercall(KAPSEL_HC_COUNT, 0, 0, 0, 0, 0);
	kg_assert(r == -KAPSEL_ENOSYS);

	/* Pointers outside guest RAM, or wrapping around, get -EFAULT. */
	r = kg_hypercall(KAPSEL_HC_CONSOLE_WRITE, si->ram_bytes - 4, 8, 0, 0, 0);
	kg_printf("console write across end of RAM -> %lld\n", (long long)r);
	kg_assert(r == -KAPSEL_EFAULT);
	r = kg_hypercall(KAPSEL_HC_CONSOLE_WRITE, UINT64_MAX - 2, 16, 0, 0, 0);
	kg_assert(r == -KAPSEL_EFAULT);
	r = kg_hypercall(KAPSEL_HC_ABI_INFO, si->ram_bytes, 0, 0, 0, 0);
	kg_assert(r == -KAPSEL_EFAULT);
	r = kg_hypercall(KAPSEL_HC_TIME_INFO, 1ull << 60, 0, 0, 0, 0);
	kg_assert(r == -KAPSEL_EFAULT);
	/* The hypervisor's tables below KAPSEL_GPA_LOW_FREE are not a valid
	 * target either: the guest cannot have its page tables (0x10000) or
	 * TSS I/O bitmap (0x3000) written for it. */
	r = kg_hypercall(KAPSEL_HC_TIME_INFO, 0x10000, 0, 0, 0, 0);
	kg_printf("time info into the page tables -> %lld\n", (long long)r);
	kg_assert(r == -KAPSEL_EFAULT);
	r = kg_hypercall(KAPSEL_HC_CONSOLE_READ, 0x3000, 64, 0, 0, 0);
	kg_assert(r == -KAPSEL_EFAULT);
	r = kg_hypercall(KAPSEL_HC_ABI_INFO, KAPSEL_GPA_LOW_FREE - 8, 0, 0, 0, 0);
	kg_assert(r == -KAPSEL_EFAULT);
	r = kg_hypercall(KAPSEL_HC_SHUTDOWN, 77, 0, 0, 0, 0);
	kg_assert(r == -KAPSEL_EINVAL);

	/* Event channels: alloc, loopback send, mask semantics, close. */
	int64_t port = kg_hc_evtchn_alloc();
	kg_assert(port >= 0);
	kg_assert(kg_hc_evtchn_send((uint32_t)port) == 0);
	kg_assert(kg_evtchn_test_and_clear((uint32_t)port));
	kg_assert(!kg_evtchn_test_and_clear((uint32_t)port));
	kg_assert(kg_hc_evtchn_mask((uint32_t)port, 1) == 0);
	kg_assert(kg_hc_evtchn_send((uint32_t)port) == 0);
	/* Masked: block does not wake for it, it times out. */
	uint64_t deadline = kg_time_now_ns() + 5000000ull;
	kg_assert(kg_hc_block(deadline) == 0);
	kg_assert(kg_hc_evtchn_mask((uint32_t)port, 0) == 1);
	/* Unmasked and still pending: block returns at once. */
	kg_assert(kg_hc_block(UINT64_MAX) == 1);
	kg_assert(kg_evtchn_test_and_clear((uint32_t)port));
	/* Closed while masked and pending: the next owner of the number gets
	 * a clean channel. */
	kg_assert(kg_hc_evtchn_mask((uint32_t)port, 1) == 0);
	kg_assert(kg_hc_evtchn_send((uint32_t)port) == 0);
	kg_assert(kg_hc_evtchn_close((uint32_t)port) == 0);
	kg_assert(kg_hc_evtchn_alloc() == port);
	kg_assert(!kg_evtchn_test_and_clear((uint32_t)port));
	kg_assert(kg_hc_evtchn_mask((uint32_t)port, 0) == 0);
	kg_assert(kg_hc_evtchn_close((uint32_t)port) == 0);
	kg_assert(kg_hc_evtchn_send((uint32_t)port) == -KAPSEL_EINVAL);
	kg_assert(kg_hc_evtchn_send(100000) == -KAPSEL_EINVAL);
	kg_assert(kg_hc_evtchn_bind_device(0, 9999) == -KAPSEL_EINVAL);
	/* The reserved control channel is the hypervisor's: only masking. */
	kg_assert(kg_hc_evtchn_bind_device(KAPSEL_EVTCHN_CONTROL, 0) == -KAPSEL_EINVAL);
	kg_assert(kg_hc_evtchn_send(KAPSEL_EVTCHN_CONTROL) == -KAPSEL_EINVAL);
	kg_assert(kg_hc_evtchn_close(KAPSEL_EVTCHN_CONTROL) == -KAPSEL_EINVAL);
	kg_assert(kg_hc_evtchn_mask(KAPSEL_EVTCHN_CONTROL, 1) == 1);

	/* Kick-and-block (minor 7): a mask naming a device that does not
	 * exist, or one without a doorbell, is refused before anything is
	 * rung or slept; an empty mask is BLOCK. */
	kg_assert(si->features & KAPSEL_FEATURE_KICK_AND_BLOCK);
	r = kg_hc_kick_and_block(kg_time_now_ns(), 1ull << si->device_count);
	kg_printf("kick and block on a device that does not exist -> %lld\n", (long long)r);
	kg_assert(r == -KAPSEL_EINVAL);
	kg_assert(kg_hc_kick_and_block(kg_time_now_ns(), 1ull << 63) == -KAPSEL_EINVAL);
	for (uint32_t i = 0; i < si->device_count; i++)
		if (!si->devices[i].doorbell_port)
			kg_assert(kg_hc_kick_and_block(kg_time_now_ns(), 1ull << i) ==
				  -KAPSEL_EINVAL);
	kg_assert(kg_hc_kick_and_block(kg_time_now_ns() + 1000000ull, 0) == 0);

	/* Device setup with a bad device or pointer is refused. */
	kg_assert(kg_hypercall(KAPSEL_HC_DEVICE_SETUP, 9999, 0, 0, 0, 0) == -KAPSEL_ENODEV);
	kg_assert(kg_hypercall(KAPSEL_HC_DEVICE_SETUP, 0, UINT64_MAX, 0, 0, 0) == -KAPSEL_EFAULT);

	kg_printf("hypercalls ok\n");
	return 0;
}
