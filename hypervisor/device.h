/* The device model: every PV backend and emulated device is one file exposing these ops. */
#ifndef KAPSEL_DEVICE_H
#define KAPSEL_DEVICE_H

#include <stdint.h>
#include <stdio.h>

#include "kapsel/abi.h"

struct kapsel_vm;
struct kapsel_device;

/*
 * Callbacks of a device.  name and type are required.  Emulated devices
 * (io_port_count > 0 in the device) require io_read and io_write.  Ring
 * devices require setup.  Everything else is optional.
 *
 * All callbacks run on the vCPU thread unless noted; arguments that come
 * from the guest (port offsets, values, the setup struct) are untrusted.
 */
struct kapsel_device_ops {
	const char *name;
	enum kapsel_device_type type;
	/* Guest read of size 1, 2 or 4 bytes at port; set *value. */
	void (*io_read)(struct kapsel_device *dev, uint16_t port, unsigned size,
			uint32_t *value);
	/* Guest write of size 1, 2 or 4 bytes at port. */
	void (*io_write)(struct kapsel_device *dev, uint16_t port, unsigned size,
			 uint32_t value);
	/* DEVICE_SETUP hypercall with a private copy of the guest's struct.
	 * Returns 0 or a negative KAPSEL_E* errno for the guest. */
	int (*setup)(struct kapsel_device *dev,
		     const struct kapsel_device_setup *setup);
	/* Print counters, one "name: value" per line, indented by two. */
	void (*print_stats)(struct kapsel_device *dev, FILE *out);
	/* Stop threads and release resources (VM teardown). */
	void (*destroy)(struct kapsel_device *dev);
};

struct kapsel_device {
	const struct kapsel_device_ops *ops;
	struct kapsel_vm *vm;
	struct kapsel_device_desc desc; /* what the guest sees in start info */
	uint16_t io_port_base;          /* emulated devices: claimed ports */
	uint16_t io_port_count;
	uint16_t io_ctl_port;           /* a second, single claimed port or 0 */
	uint64_t exits;                 /* VM exits this device caused */
	uint32_t evtchn_port;           /* bound by the guest, or UINT32_MAX */
	int doorbell_fd;                /* ioeventfd of the doorbell, or -1 */
	void *priv;
};

#endif
