/* Public API for a PV driver's rings: layout, event channel, DEVICE_SETUP and the doorbell kick (docs/devices.md). */
#ifndef KAPSEL_GUEST_RING_SETUP_H
#define KAPSEL_GUEST_RING_SETUP_H

/*
 * Several vCPUs: for one ring, one vCPU at a time (the caller's lock,
 * as for the drivers that use it).
 */

#include <stdbool.h>
#include <stdint.h>

#include "kapsel/abi.h"
#include "kapsel_guest/ring.h"

/*
 * A PV driver, in the tree or out of it, brings its device up with these:
 *
 *   desc = kg_platform_find_device(KAPSEL_DEV_..., n);     (platform.h)
 *   memory = kg_os_alloc_pages(count * kg_ring_pages(...) + ...);
 *   kg_ring_setup(desc->index, &shape, memory, rings, count, &setup, &port);
 *   ... fill requests (ring.h), then kg_ring_kick(ring, desc->doorbell_port, port);
 *   ... wait: kg_evtchn_test_and_clear(port), kg_ring_prepare_sleep, kg_hc_block.
 *
 * The request and response layouts are the device's protocol header in
 * hypercall-abi/kapsel/.
 */

/* The slots of every ring of one device. */
struct kg_ring_shape {
	uint32_t order; /* 2^order slots */
	uint32_t request_bytes;
	uint32_t response_bytes;
};

/*
 * Connect the count rings of PV device device_index: lay them out back to
 * back from memory (ring i, for queue i, at memory + i * kg_ring_pages(...)
 * pages; *rings[i] receives its frontend view), allocate an event channel,
 * bind it to the device and hand every ring over with DEVICE_SETUP.
 * Returns 0 with *port set, or -KAPSEL_EIO with no channel left open (e.g.
 * the device is already open).  Preconditions: memory is page aligned and
 * holds count rings of this shape; 0 < shape->order <=
 * KAPSEL_RING_MAX_ORDER; setup is scratch the hypervisor reads by
 * guest-physical address, so it lies in kg_os_alloc_pages memory.
 */
int kg_ring_setup(uint32_t device_index, const struct kg_ring_shape *shape, uint8_t *memory,
		  struct kg_ring *const rings[], uint32_t count, struct kapsel_device_setup *setup,
		  uint32_t *port);

/*
 * Publish the requests pushed on ring and, if the backend asked for a kick
 * (event indices), kick it: a 16-bit write to doorbell_port, or
 * KAPSEL_HC_EVTCHN_SEND on port when doorbell_port is 0 (no
 * KAPSEL_FEATURE_DOORBELL).  Returns true if it kicked.  Precondition: the
 * ring was set up with kg_ring_setup, which returned port.
 */
bool kg_ring_kick(struct kg_ring *ring, uint16_t doorbell_port, uint32_t port);

#endif
