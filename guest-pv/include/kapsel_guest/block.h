/* Guest block API: one interface over the PV block ring and the emulated ATA disk. */
#ifndef KAPSEL_GUEST_BLOCK_H
#define KAPSEL_GUEST_BLOCK_H

/*
 * Several vCPUs (docs/porting.md §12.4, docs/abi.md §12.1): a PV disk
 * has one ring per vCPU by default (kg_block_queue_count).  Each call
 * works on the ring of the calling vCPU, kg_cpu_id() % queues, under that
 * ring's own kg_spinlock, and its completions are signalled to the vCPU
 * that submitted last on it.  So with as many queues as vCPUs, every vCPU
 * may submit, kick, reap and use the synchronous helpers on one device at
 * the same time, without a lock of its own; a request is reaped on the
 * vCPU that submitted it, and kg_block_in_flight counts that vCPU's.
 * With fewer queues than vCPUs (queues=N, or ATA and virtio: one), the
 * vCPUs that share a ring also share its completions: serialize their
 * whole submit .. reap sequences (a kg_spinlock around them).
 * kg_block_open allocates: open devices on one vCPU at a time.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kapsel/blk.h"

enum kg_block_path {
	KG_BLOCK_AUTO = 0,   /* whatever the hypervisor offers for this disk */
	KG_BLOCK_PV = 1,     /* PV ring (KAPSEL_DEV_BLOCK_PV) */
	KG_BLOCK_ATA = 2,    /* emulated ATA disk, PIO (KAPSEL_DEV_ATA_DISK) */
	KG_BLOCK_VIRTIO = 3, /* off Kapsel: virtio-blk on virtio-mmio (QEMU microvm) */
};

struct kg_block_info {
	uint64_t capacity_sectors;     /* 512-byte sectors */
	uint32_t logical_sector_bytes; /* 512 */
	uint32_t physical_sector_bytes;
	bool readonly;
	uint32_t max_segments;	 /* per request */
	uint32_t queue_depth;	 /* requests in flight at most, per queue */
	uint64_t features;	 /* KAPSEL_BLK_FEATURE_* */
	enum kg_block_path path; /* the path in use */
};

struct kg_block_segment {
	void *buffer;	       /* 512-byte aligned */
	uint32_t length_bytes; /* multiple of 512 */
};

/* An asynchronous request.  The caller owns it until it comes back from
 * kg_block_reap; it must not be touched while in flight. */
struct kg_block_request {
	enum kapsel_blk_op op;
	uint64_t sector;
	uint64_t sector_count; /* DISCARD / WRITE_ZEROES */
	uint32_t segment_count;
	struct kg_block_segment segments[KAPSEL_BLK_MAX_SEGMENTS];
	void *user_data;
	/* Filled on completion. */
	int status; /* 0 or negative KAPSEL_E* */
	/* Guest TSC at submit, backend pickup, host completion and reap (PV
	 * path; the ATA path sets submit and reap only). */
	uint64_t submit_tsc, pickup_tsc, complete_tsc, reap_tsc;
};

struct kg_block_device;

/* Counters the guest library keeps, for benchmarks. */
struct kg_block_stats {
	uint64_t requests;
	uint64_t kicks;		   /* doorbell writes (exits) */
	uint64_t kicks_suppressed; /* publishes that needed no kick */
	uint64_t blocks;	   /* waits that slept in the hypervisor */
	uint64_t polls;		   /* completions found without sleeping */
	uint64_t kicks_in_block;   /* kicks sent with a sleep (no exit of their own) */
};

/*
 * Open disk index (the nth disk of the VM's definition) through path.
 * KG_BLOCK_AUTO takes the PV device if the disk is offered as PV, the ATA
 * device if it is offered as ATA.  Uses kg_os_alloc_pages for the ring.
 * Returns 0 or -KAPSEL_ENODEV (no such disk on that path), -KAPSEL_EIO.
 */
int kg_block_open(unsigned index, enum kg_block_path path, struct kg_block_device **device);

void kg_block_get_info(struct kg_block_device *device, struct kg_block_info *info);

/* Synchronous helpers: one request, wait for it.  Return 0 or -errno. */
int kg_block_read(struct kg_block_device *device, uint64_t sector, void *buffer,
		  uint32_t sector_count);
int kg_block_write(struct kg_block_device *device, uint64_t sector, const void *buffer,
		   uint32_t sector_count);
int kg_block_flush(struct kg_block_device *device);
int kg_block_write_zeroes(struct kg_block_device *device, uint64_t sector, uint64_t sector_count);
int kg_block_discard(struct kg_block_device *device, uint64_t sector, uint64_t sector_count);

/*
 * Queue a request.  Returns 0, or -KAPSEL_EAGAIN when queue_depth requests
 * are in flight (reap some first), or -KAPSEL_EINVAL for a malformed one.
 * Requests queued since the last kg_block_kick are published together.
 */
int kg_block_submit(struct kg_block_device *device, struct kg_block_request *request);

/* Publish queued requests, ringing the doorbell only if the backend asked
 * (event index). */
void kg_block_kick(struct kg_block_device *device);

/*
 * Collect up to max completed requests into done[]; if wait is true and
 * none are complete, sleep in the hypervisor until one is.  Returns the
 * number collected.  With wait, requests queued since the last
 * kg_block_kick are published first: submit then reap(wait) needs no
 * kg_block_kick in between, and on the PV path the doorbell then goes
 * with the sleep in one exit when the wait is expected to outlast the
 * poll window (KAPSEL_FEATURE_KICK_AND_BLOCK).
 */
unsigned kg_block_reap(struct kg_block_device *device, struct kg_block_request **done, unsigned max,
		       bool wait);
/*
 * As kg_block_reap(wait=true), but when it has to sleep in the hypervisor
 * it sleeps until wake_count requests are complete (counting those that
 * already are; at most the requests in flight on this queue), not one.  It
 * never sleeps while anything is complete: it returns that at once.  For
 * a caller that keeps a deep queue full: a batch of completions costs one
 * wake-up instead of one each, and the requests still in flight keep the
 * device busy meanwhile (3/4 of the depth, as virtio's delayed callbacks,
 * leaves a quarter in flight).  The first completion of a batch is seen
 * later by up to the time the rest take: not for a caller waiting on one
 * particular request.  wake_count 0 or 1 is kg_block_reap(wait=true).
 */
unsigned kg_block_reap_batch(struct kg_block_device *device, struct kg_block_request **done,
			     unsigned max, unsigned wake_count);

/* Requests submitted on the calling vCPU's queue and not yet reaped. */
unsigned kg_block_in_flight(struct kg_block_device *device);

/* Rings the device uses: 1, or for a PV disk on several vCPUs, one per
 * vCPU (the device's kapsel_device_desc.queue_count, at most the vCPUs). */
unsigned kg_block_queue_count(struct kg_block_device *device);

void kg_block_get_stats(struct kg_block_device *device, struct kg_block_stats *stats);

/*
 * Upper bound of the busy-poll window of kg_block_reap(wait=true) on the PV
 * path: the driver spins for a completion before sleeping in the
 * hypervisor, for an adaptive time (1.25x recent waits that fit, halved
 * after one that did not, never above poll_ns).  0, the default, sleeps at
 * once.  Polling trades guest CPU for fewer exits; the ATA path ignores it.
 */
void kg_block_set_poll_ns(struct kg_block_device *device, uint64_t poll_ns);

#endif
