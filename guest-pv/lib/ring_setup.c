/* Public API for a PV driver's rings: layout, event channel, DEVICE_SETUP and the doorbell kick (docs/devices.md). */
#include "kapsel_guest/ring_setup.h"

#include "kapsel_guest/arch.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/os_hooks.h"

#define PAGE_BYTES 4096u

int kg_ring_setup(uint32_t device_index, const struct kg_ring_shape *shape, uint8_t *memory,
		  struct kg_ring *const rings[], uint32_t count, struct kapsel_device_setup *setup,
		  uint32_t *port)
{
	uint32_t ring_pages =
		kg_ring_pages(shape->order, shape->request_bytes, shape->response_bytes);
	for (uint32_t i = 0; i < count; i++)
		kg_ring_init(rings[i], memory + (uint64_t)i * ring_pages * PAGE_BYTES, shape->order,
			     shape->request_bytes, shape->response_bytes, 0);

	int64_t allocated = kg_hc_evtchn_alloc();
	if (allocated < 0)
		return -KAPSEL_EIO;
	*port = (uint32_t)allocated;
	if (kg_hc_evtchn_bind_device(*port, device_index) < 0)
		goto close;
	for (uint32_t i = 0; i < count; i++) {
		*setup = (struct kapsel_device_setup){
			.magic = KAPSEL_DEVICE_SETUP_MAGIC,
			.revision = 1,
			.ring_gpa =
				kg_os_virt_to_phys(memory + (uint64_t)i * ring_pages * PAGE_BYTES),
			.ring_pages = ring_pages,
			.evtchn_port = *port,
			.queue = i,
		};
		if (kg_hc_device_setup(device_index, setup) < 0)
			goto close;
	}
	return 0;
close:
	kg_hc_evtchn_close(*port);
	return -KAPSEL_EIO;
}

bool kg_ring_kick(struct kg_ring *ring, uint16_t doorbell_port, uint32_t port)
{
	if (!kg_ring_publish(ring))
		return false;
	if (doorbell_port)
		kg_outw(doorbell_port, 1);
	else
		kg_hc_evtchn_send(port);
	return true;
}
