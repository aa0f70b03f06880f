/* Kapsel PV entropy protocol: the guest asks for random bytes on one ring and the host writes them into its buffers. */
#ifndef KAPSEL_RNG_H
#define KAPSEL_RNG_H

/*
 * A PV entropy device (KAPSEL_DEV_RNG_PV, ABI minor 3, feature
 * KAPSEL_FEATURE_RNG_PV) is driven through one ring (ring.h) with
 * struct kapsel_rng_request slots and struct kapsel_rng_response slots.
 *
 * Setup: as every one-ring device: allocate the ring, an event channel,
 * bind it (KAPSEL_HC_EVTCHN_BIND_DEVICE), then KAPSEL_HC_DEVICE_SETUP with
 * queue 0.  The header's magic, revision and slot sizes must be these.
 *
 * Each request names one guest-physically contiguous buffer of
 * 1..KAPSEL_RNG_REQUEST_MAX_BYTES bytes.  The host fills it from the host
 * kernel's random generator (never from a file) and answers:
 *   status 0                length_bytes == the request's length
 *   -KAPSEL_EINVAL          length 0 or above the maximum, flags not 0,
 *                           _reserved not 0
 *   -KAPSEL_EFAULT          the buffer is not inside guest RAM the guest
 *                           owns (e.g. the hypervisor's low tables)
 *   -KAPSEL_EAGAIN          rate limited: nothing was written; ask again
 *                           at the earliest retry_after_ns nanoseconds later
 *   -KAPSEL_EIO             the host could not produce random bytes
 * Responses come in request order.  After publishing requests the guest
 * kicks the doorbell port (a 16-bit write) when kapsel_ring_need_notify
 * says so; the host answers every request published before the kick
 * before the kick instruction completes, and signals the event channel
 * when rsp_event asks, so a guest may equally poll rsp_prod after a kick.
 * A guest must not treat bytes from a restored or cloned VM's earlier
 * generation as unique (start_info.generation): draw again.
 */

#include <stdint.h>

#define KAPSEL_RNG_REQUEST_MAX_BYTES 65536u

struct kapsel_rng_request {
	uint64_t id;	       /* chosen by the guest, echoed in the response */
	uint64_t gpa;	       /* the buffer to fill */
	uint32_t length_bytes; /* 1..KAPSEL_RNG_REQUEST_MAX_BYTES */
	uint32_t flags;	       /* 0 */
	uint64_t _reserved;    /* 0 */
};
_Static_assert(sizeof(struct kapsel_rng_request) == 32, "rng request layout");
_Static_assert(__builtin_offsetof(struct kapsel_rng_request, gpa) == 8, "rng request gpa");
_Static_assert(__builtin_offsetof(struct kapsel_rng_request, length_bytes) == 16,
	       "rng request length");
_Static_assert(__builtin_offsetof(struct kapsel_rng_request, flags) == 20, "rng request flags");

/* Status values: 0 or a negative KAPSEL_E* errno. */
struct kapsel_rng_response {
	uint64_t id;
	int32_t status;
	uint32_t length_bytes;	 /* bytes written: the request's length or 0 */
	uint64_t retry_after_ns; /* -KAPSEL_EAGAIN: wait at least this long; else 0 */
	uint64_t _reserved;
};
_Static_assert(sizeof(struct kapsel_rng_response) == 32, "rng response layout");
_Static_assert(__builtin_offsetof(struct kapsel_rng_response, status) == 8, "rng response status");
_Static_assert(__builtin_offsetof(struct kapsel_rng_response, length_bytes) == 12,
	       "rng response length");
_Static_assert(__builtin_offsetof(struct kapsel_rng_response, retry_after_ns) == 16,
	       "rng response retry");

#endif /* KAPSEL_RNG_H */
