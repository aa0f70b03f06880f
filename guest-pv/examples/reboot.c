/* Example guest: reboots itself once and checks that the second boot starts clean. */
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

#define MARKER_BYTES 8192u

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	kg_assert(kg_platform_is_kapsel());
	uint64_t generation = kg_platform_start_info()->generation;
	/* The same allocation on every boot: heap memory that the image does
	 * not cover, so only the hypervisor can have cleared it. */
	unsigned char *marker = kg_malloc(MARKER_BYTES);
	kg_assert(marker);
	size_t dirty = 0;
	for (size_t i = 0; i < MARKER_BYTES; i++)
		dirty += marker[i] != 0;
	kg_printf("boot with generation %llu, %zu dirty heap bytes\n",
		  (unsigned long long)generation, dirty);
	kg_assert(dirty == 0);
	if (generation == 0) {
		for (size_t i = 0; i < MARKER_BYTES; i++)
			marker[i] = 0xab;
		kg_printf("rebooting\n");
		kg_hc_shutdown(KAPSEL_SHUTDOWN_REBOOT, 0);
	}
	kg_printf("reboot ok\n");
	return 0;
}
