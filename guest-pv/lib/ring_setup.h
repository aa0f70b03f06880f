/* Bringing up a PV device's rings: layout, event channel and DEVICE_SETUP, shared by the PV block and network drivers. */
#ifndef KAPSEL_GUEST_RING_SETUP_H
#define KAPSEL_GUEST_RING_SETUP_H

#include <stdint.h>

#include "kapsel/abi.h"
#include "kapsel_guest/ring.h"

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

#endif
