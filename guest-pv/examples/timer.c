/* Example guest: sleeps in the hypervisor with the block hypercall and checks the time. */
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

int main(int argc, char **argv)
{
	uint64_t sleep_ms = 50;
	for (int i = 1; i < argc; i++)
		kg_parse_u64(argv[i], &sleep_ms);
	kg_assert(kg_platform_is_kapsel());

	struct kapsel_time_info before, after;
	kg_assert(kg_hc_time_info(&before) == 0);
	uint64_t start_ns = kg_time_now_ns();
	kg_time_sleep_ns(sleep_ms * 1000000ull);
	uint64_t tsc_elapsed_ns = kg_time_now_ns() - start_ns;
	kg_assert(kg_hc_time_info(&after) == 0);
	uint64_t host_elapsed_ns = after.now_ns - before.now_ns;

	kg_printf("slept %llu ms: guest clock %llu us, host clock %llu us\n",
		  (unsigned long long)sleep_ms, (unsigned long long)(tsc_elapsed_ns / 1000),
		  (unsigned long long)(host_elapsed_ns / 1000));
	/* Never early; late by scheduling noise at most (a generous bound). */
	kg_assert(tsc_elapsed_ns >= sleep_ms * 1000000ull);
	kg_assert(host_elapsed_ns >= sleep_ms * 1000000ull);
	kg_assert(host_elapsed_ns < sleep_ms * 1000000ull + 2000000000ull);
	/* The TSC-derived clock and the host clock agree within 5% + 2 ms. */
	uint64_t diff = tsc_elapsed_ns > host_elapsed_ns ? tsc_elapsed_ns - host_elapsed_ns
							 : host_elapsed_ns - tsc_elapsed_ns;
	kg_assert(diff < host_elapsed_ns / 20 + 2000000ull);

	/* A deadline in the past returns at once with 0 (nothing pending). */
	kg_assert(kg_hc_block(0) == 0);
	kg_printf("timer ok\n");
	return 0;
}
