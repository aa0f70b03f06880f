/* The device model: every PV backend and emulated device is one file exposing these ops. */
#ifndef KAPSEL_DEVICE_H
#define KAPSEL_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kapsel/abi.h"

struct kapsel_vm;
struct kapsel_device;
struct vm_state_writer;
struct disk_image;

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
	void (*io_read)(struct kapsel_device *dev, uint16_t port, unsigned size, uint32_t *value);
	/* Guest write of size 1, 2 or 4 bytes at port. */
	void (*io_write)(struct kapsel_device *dev, uint16_t port, unsigned size, uint32_t value);
	/* Optional: a string instruction (rep ins/outs) of count > 1 elements
	 * of size bytes at port in one exit; data holds count * size bytes
	 * (fill it for reads).  Without it io_read/io_write run count times. */
	void (*io_string)(struct kapsel_device *dev, uint16_t port, unsigned size, uint32_t count,
			  bool is_write, void *data);
	/* DEVICE_SETUP hypercall with a private copy of the guest's struct.
	 * Returns 0 or a negative KAPSEL_E* errno for the guest. */
	int (*setup)(struct kapsel_device *dev, const struct kapsel_device_setup *setup);
	/* Print counters, one "name: value" per line, indented by two. */
	void (*print_stats)(struct kapsel_device *dev, FILE *out);
	/* Stop threads and release resources (VM teardown). */
	void (*destroy)(struct kapsel_device *dev);
	/* Optional, block devices: the disk image whose policy (rate limits,
	 * read-only) the control plane changes at run time; called from the
	 * control thread.  desc.unit is the index in config->disks; find a
	 * disk with devices_find_disk, never by counting devices. */
	struct disk_image *(*disk_image)(struct kapsel_device *dev);

	/* Optional: the guest reboots (vCPU stopped, guest RAM not cleared
	 * yet).  Finish in-flight I/O into guest memory and forget what the
	 * guest set up (rings), so nothing reaches the next boot's memory. */
	void (*reset)(struct kapsel_device *dev);

	/* ---- VM state (vm_state.h); all optional, vCPU paused (vm_pause) ---- */
	/* Finish in-flight I/O and stop taking new requests, so guest memory
	 * and the device's state stop changing; responses already produced
	 * are published.  Requests the guest queued but the device has not
	 * taken stay in the ring (they are part of guest memory). */
	void (*quiesce)(struct kapsel_device *dev);
	/* Undo quiesce: serve the ring again (a save that continues). */
	void (*resume)(struct kapsel_device *dev);
	/* Write the device's private state as records of its own types
	 * (VM_STATE_DEV_*, 0x1000-0x1fff) with vm_state_put.  Called after
	 * quiesce.  Returns 0 or a negative errno. */
	int (*save)(struct kapsel_device *dev, struct vm_state_writer *out);
	/* Restore from one record save wrote (a private copy; untrusted: check
	 * every field).  Guest memory is already loaded when it is called, and
	 * dev->evtchn_port is restored.  Returns 0, -ENOENT for a record type
	 * it does not know (the loader then refuses it if it is mandatory) or
	 * -EINVAL with a message in error naming the bad field. */
	int (*load)(struct kapsel_device *dev, uint32_t type, const void *payload,
		    uint64_t length_bytes, char *error, size_t error_len);

	/* ---- Live migration (migrate.c); optional, vCPU paused, quiesced ---- */
	/* The final state went out and the destination is about to open the
	 * device's host endpoint (a socket path, a tap) from its own
	 * definition: let go of it, keeping what host_reacquire needs (the
	 * process may be in a jail by now).  Returns 0 or a negative errno
	 * with a message. */
	int (*host_release)(struct kapsel_device *dev, char *error, size_t error_len);
	/* The destination failed after host_release: take the endpoint back
	 * so this VM runs on.  Returns 0 or a negative errno with a message. */
	int (*host_reacquire)(struct kapsel_device *dev, char *error, size_t error_len);
	/* Destination side (vm->incoming): the VM runs here now; forget what
	 * was kept to give the source's endpoint back (net_backend_confirm). */
	void (*host_confirm)(struct kapsel_device *dev);
};

struct kapsel_device {
	const struct kapsel_device_ops *ops;
	struct kapsel_vm *vm;
	struct kapsel_device_desc desc; /* what the guest sees in start info */
	uint16_t io_port_base;		/* emulated devices: claimed ports */
	uint16_t io_port_count;
	uint16_t io_ctl_port; /* a second, single claimed port or 0 */
	uint64_t exits;	      /* VM exits this device caused */
	uint32_t evtchn_port; /* bound by the guest, or UINT32_MAX */
	int doorbell_fd;      /* ioeventfd of the doorbell, or -1 */
	void *priv;
};

#endif
