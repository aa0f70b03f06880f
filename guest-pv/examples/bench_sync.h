/* The bench guests' handshake with `kapsel bench`: "BENCH mark=NAME" lines, each answered on the console input (one translation unit each). */
#ifndef KAPSEL_EXAMPLES_BENCH_SYNC_H
#define KAPSEL_EXAMPLES_BENCH_SYNC_H

#include <stdint.h>

#include "kapsel_guest/arch.h"
#include "kapsel_guest/console.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

/*
 * After each mark the guest spins until the host has read the VMM's
 * counters and answered with a line (hypervisor/bench/bench_guest.c).  The
 * host takes the handshake's own exits off: one CONSOLE_READ for the
 * answer to "start", one CONSOLE_WRITE for "end" (keep each mark one
 * kg_printf, one write) and the end snapshot's interruption.
 */
#define BENCH_SYNC_TIMEOUT_NS 20000000000ull

static int bench_sync_port = -1;

/* With sync nonzero, bind an event channel to the PV console so the
 * host's answer sets a pending bit we can watch without exits.  Returns
 * the sync setting that applies (0 when there is no PV console). */
static inline uint64_t bench_sync_setup(uint64_t sync)
{
	if (!sync)
		return 0;
	const struct kapsel_device_desc *console =
		kg_platform_find_device(KAPSEL_DEV_CONSOLE_PV, 0);
	int64_t port = kg_hc_evtchn_alloc();
	if (!console || port < 0 || kg_hc_evtchn_bind_device((uint32_t)port, console->index) < 0) {
		kg_printf("BENCH warning=no-sync reason=no-console-channel\n");
		return 0;
	}
	/* Masked: it never wakes a BLOCK or raises an upcall. */
	kg_hc_evtchn_mask((uint32_t)port, 1);
	bench_sync_port = (int)port;
	return 1;
}

/* Print a mark and, after bench_sync_setup, wait until the host answers. */
static inline void bench_sync_mark(const char *name)
{
	kg_printf("BENCH mark=%s\n", name);
	if (bench_sync_port < 0)
		return;
	uint64_t deadline = kg_time_now_ns() + BENCH_SYNC_TIMEOUT_NS;
	char input[64];
	for (;;) {
		/* Spin on the pending bit: the host reads our counters while we
		 * wait, and a sleep in the hypervisor would hold that up. */
		while (!kg_evtchn_test_and_clear((uint32_t)bench_sync_port)) {
			if (kg_time_now_ns() > deadline) {
				kg_printf("BENCH warning=sync-timeout mark=%s\n", name);
				return;
			}
			kg_cpu_relax();
		}
		size_t n = kg_console_read(input, sizeof(input));
		for (size_t i = 0; i < n; i++)
			if (input[i] == '\n')
				return;
	}
}

#endif
