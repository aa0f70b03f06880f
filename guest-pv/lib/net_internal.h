/* Contract between the guest network API dispatcher (net.c) and its drivers (PV rings, NE2000 PIO, virtio-net). */
#ifndef KAPSEL_GUEST_NET_INTERNAL_H
#define KAPSEL_GUEST_NET_INTERNAL_H

#include "kapsel/abi.h"
#include "kapsel_guest/net.h"

struct kg_net_driver_ops {
	/* Send a frame net.c checked for length. */
	int (*send)(struct kg_net_device *device, const void *frame, uint32_t length_bytes);
	/* As kg_net_recv_until; deadline_ns 0 = do not wait, UINT64_MAX = forever. */
	int (*recv)(struct kg_net_device *device, void *buffer, uint32_t max_bytes,
		    uint64_t deadline_ns);
	/* The generation changed: read the station address again into
	 * device->mac (and program the card with it). */
	void (*refresh_mac)(struct kg_net_device *device);
};

struct kg_net_device {
	const struct kg_net_driver_ops *ops;
	enum kg_net_path path;
	uint8_t mac[KAPSEL_NET_MAC_BYTES];
	const struct kapsel_device_desc *desc; /* NULL off Kapsel */
	uint64_t generation;		       /* start_info.generation last seen */
	uint64_t poll_ns;
	struct kg_net_stats stats;
	void *driver;
};

/* PV driver (net_pv.c): open the device desc describes. */
int kg_net_pv_open(const struct kapsel_device_desc *desc, struct kg_net_device *device);

/*
 * PV driver, for tests of the host's checks: publish one TX request with
 * exactly these (possibly hostile) gpa and length, wait for its answer
 * and return the status the host gave.
 */
int kg_net_pv_send_raw(struct kg_net_device *device, uint64_t gpa, uint32_t length_bytes);

/* NE2000 driver (net_ne2000.c): open the card at desc->io_base, or at
 * 0x300 when desc is NULL (off Kapsel); the address comes from its PROM. */
int kg_net_ne2000_open(const struct kapsel_device_desc *desc, struct kg_net_device *device);

/* virtio-net driver (net_virtio.c), off Kapsel: open the index-th
 * virtio-net device on QEMU microvm's virtio-mmio transports. */
int kg_net_virtio_open(unsigned index, struct kg_net_device *device);

#endif
