/* Guest entropy API: random bytes from the host over the PV entropy ring (rng.h protocol). */
#ifndef KAPSEL_GUEST_RNG_H
#define KAPSEL_GUEST_RNG_H

/*
 * Several vCPUs (docs/porting.md §12.4): not thread-safe per device:
 * one vCPU at a time (kg_rng_open too).
 */

#include <stdint.h>

#include "kapsel/rng.h"

struct kg_rng_device;

/* Counters the guest library keeps. */
struct kg_rng_stats {
	uint64_t requests;     /* answered with bytes */
	uint64_t bytes;	       /* received */
	uint64_t throttled;    /* answered -EAGAIN (rate limit), then retried */
	uint64_t errors;       /* other refusals */
	uint64_t kicks;	       /* doorbell writes */
	uint64_t throttled_ns; /* time spent waiting for the rate limit */
};

/*
 * Open the VM's PV entropy device.  Uses kg_os_alloc_pages for its ring
 * and buffer (single-threaded: one caller at a time per device).  Returns
 * 0 or -KAPSEL_ENODEV (no entropy device: not on Kapsel, or the VM was
 * started without --rng / <rng>), -KAPSEL_ENOMEM, -KAPSEL_EIO.
 */
int kg_rng_open(struct kg_rng_device **device);

/*
 * Fill buffer with length_bytes random bytes from the host, waiting (in
 * the hypervisor, KAPSEL_HC_BLOCK) whenever the operator's rate limit says
 * so.  Returns length_bytes, or a negative KAPSEL_E* if the host refused
 * (the buffer then holds a prefix of random bytes and garbage after it).
 */
int64_t kg_rng_read(struct kg_rng_device *device, void *buffer, uint64_t length_bytes);

/*
 * For tests of the host's checks: publish one request with exactly these
 * (possibly hostile) gpa and length, wait for its answer and return the
 * status the host gave (0 or a negative KAPSEL_E*); no retry on EAGAIN.
 */
int kg_rng_request_raw(struct kg_rng_device *device, uint64_t gpa, uint32_t length_bytes);

void kg_rng_get_stats(struct kg_rng_device *device, struct kg_rng_stats *stats);

#endif
