/* Contract between the guest block API dispatcher (block.c) and its drivers (PV ring, ATA PIO, virtio-blk). */
#ifndef KAPSEL_GUEST_BLOCK_INTERNAL_H
#define KAPSEL_GUEST_BLOCK_INTERNAL_H

#include "kapsel/abi.h"
#include "kapsel_guest/block.h"

/*
 * Each driver fills a kg_block_device's ops.  block.c picks the driver in
 * kg_block_open and forwards the public calls; the synchronous helpers are
 * built on submit/kick/reap in block.c, once, for both drivers.
 */
struct kg_block_driver_ops {
	/* Queue request (already checked by block.c for shape). */
	int (*submit)(struct kg_block_device *device, struct kg_block_request *request);
	/* Publish queued requests; may be a no-op. */
	void (*kick)(struct kg_block_device *device);
	/* As kg_block_reap_batch; wake_count 0: do not wait (kg_block_reap
	 * with wait false), 1: kg_block_reap with wait true.  Waiting
	 * publishes queued requests first. */
	unsigned (*reap)(struct kg_block_device *device, struct kg_block_request **done,
			 unsigned max, unsigned wake_count);
};

struct kg_block_device {
	const struct kg_block_driver_ops *ops;
	struct kg_block_info info;
	struct kg_block_stats stats; /* updated atomically (several vCPUs) */
	/* Rings: 1, or (PV, several vCPUs) one per vCPU; the calling vCPU
	 * uses queue kg_cpu_id() % queue_count (kg_block_queue_here). */
	unsigned queue_count;
	unsigned in_flight; /* all queues (atomic) */
	unsigned queue_in_flight[KAPSEL_MAX_VCPUS];
	uint64_t poll_ns; /* reap(wait): spin this long before sleeping */
	void *driver;	  /* driver-private state */
};

/* The queue the calling vCPU submits on and reaps from. */
unsigned kg_block_queue_here(const struct kg_block_device *device);

/* Count a library event in device->stats from any vCPU. */
#define KG_BLOCK_COUNT(device, field) \
	__atomic_fetch_add(&(device)->stats.field, 1, __ATOMIC_RELAXED)

/* PV driver (blk_pv.c): open the PV device described by desc. */
int kg_blk_pv_open(const struct kapsel_device_desc *desc, struct kg_block_device *device);

/* ATA driver (blk_ata.c): open the ATA disk at io_base/io_ctl (drive 0);
 * desc may be NULL off Kapsel (then the legacy 0x1f0/0x3f6 are probed
 * with IDENTIFY DEVICE). */
int kg_blk_ata_open(const struct kapsel_device_desc *desc, struct kg_block_device *device);

/* virtio-blk driver (blk_virtio.c), off Kapsel: open the index-th
 * virtio-blk device on QEMU microvm's virtio-mmio transports. */
int kg_blk_virtio_open(unsigned index, struct kg_block_device *device);

#endif
