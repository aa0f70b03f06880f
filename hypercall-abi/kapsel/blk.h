/* Kapsel PV block protocol: the requests and responses that travel on a block device's ring. */
#ifndef KAPSEL_BLK_H
#define KAPSEL_BLK_H

/*
 * A PV block device (KAPSEL_DEV_BLOCK_PV) is driven through one ring
 * (ring.h) whose slots are struct kapsel_blk_request and
 * struct kapsel_blk_response.  Setup: the guest allocates the ring, fills
 * the header, allocates an event channel, binds it to the device
 * (KAPSEL_HC_EVTCHN_BIND_DEVICE) and calls KAPSEL_HC_DEVICE_SETUP with the
 * ring's address; then it kicks the doorbell port after publishing
 * requests (when kapsel_ring_need_notify says so).  Completions are
 * signalled on the bound event channel.
 *
 * Several queues (minor 6): a device whose kapsel_device_desc.queue_count
 * is N > 1 serves N rings, 0 .. N - 1, all on the one doorbell port.  Ring
 * 0 is set up as above and signals the channel bound to the device.  Ring
 * q > 0 is set up with setup.queue = q and setup.evtchn_port = a channel
 * of the guest's own (allocated, not bound to a device, not the control
 * channel): its completions are signalled there, and nowhere else.  Bind
 * each queue's channel to the vCPU that submits on it
 * (KAPSEL_HC_EVTCHN_BIND_VCPU) and completions wake that vCPU.  A queue
 * index >= N, or an unusable port, is refused with -KAPSEL_EINVAL; a
 * ring the guest breaks stops alone, the other queues are served.  The
 * queues share the device's rate limits; request ids are per queue.
 *
 * Sectors are always 512 bytes.  Data segments must be 512-byte aligned
 * in guest-physical memory and a multiple of 512 bytes long; a request's
 * segments are transferred in order as one contiguous range on the disk.
 */

#include <stdint.h>

enum kapsel_blk_op {
	KAPSEL_BLK_OP_READ = 0,
	KAPSEL_BLK_OP_WRITE = 1,
	KAPSEL_BLK_OP_FLUSH = 2,	/* all completed writes are durable */
	KAPSEL_BLK_OP_DISCARD = 3,	/* sector, sector_count; no segments */
	KAPSEL_BLK_OP_WRITE_ZEROES = 4, /* sector, sector_count; no segments */
	KAPSEL_BLK_OP_GET_INFO = 5,	/* one segment >= sizeof(kapsel_blk_info) */
	KAPSEL_BLK_OP_COUNT = 6
};

#define KAPSEL_BLK_SECTOR_BYTES 512u
#define KAPSEL_BLK_MAX_SEGMENTS 16u

struct kapsel_blk_segment {
	uint64_t gpa;
	uint32_t length_bytes;
	uint32_t _pad;
};
_Static_assert(sizeof(struct kapsel_blk_segment) == 16, "segment layout");

struct kapsel_blk_request {
	uint64_t id;	       /* chosen by the guest, echoed in the response */
	uint8_t op;	       /* enum kapsel_blk_op */
	uint8_t segment_count; /* 0 .. KAPSEL_BLK_MAX_SEGMENTS */
	uint16_t flags;	       /* 0 */
	uint32_t _pad;
	uint64_t sector;       /* first 512-byte sector */
	uint64_t sector_count; /* DISCARD / WRITE_ZEROES only */
	uint64_t submit_tsc;   /* guest TSC when submitted (echoed) */
	uint64_t _reserved;
	struct kapsel_blk_segment segments[KAPSEL_BLK_MAX_SEGMENTS];
};
_Static_assert(sizeof(struct kapsel_blk_request) == 304, "request layout");

/* Status values: 0 or a negative KAPSEL_E* errno. */
struct kapsel_blk_response {
	uint64_t id;
	int32_t status;
	uint32_t _pad;
	uint64_t submit_tsc;   /* copied from the request */
	uint64_t pickup_tsc;   /* backend read the request (guest TSC scale) */
	uint64_t complete_tsc; /* host I/O finished (guest TSC scale) */
	uint64_t _reserved[3];
};
_Static_assert(sizeof(struct kapsel_blk_response) == 64, "response layout");

#define KAPSEL_BLK_FEATURE_FLUSH (1ull << 0)
#define KAPSEL_BLK_FEATURE_DISCARD (1ull << 1)
#define KAPSEL_BLK_FEATURE_WRITE_ZEROES (1ull << 2)
#define KAPSEL_BLK_FEATURE_TIMESTAMPS (1ull << 3)

#define KAPSEL_BLK_INFO_MAGIC 0x4b424c4bu /* "KBLK" */
struct kapsel_blk_info {
	uint32_t magic;
	uint32_t revision; /* 1 */
	uint64_t capacity_sectors;
	uint32_t logical_sector_bytes;
	uint32_t physical_sector_bytes;
	uint32_t readonly; /* 1 if writes are refused with -EROFS */
	uint32_t max_segments;
	uint64_t features; /* KAPSEL_BLK_FEATURE_* */
	uint64_t _reserved[4];
};
_Static_assert(sizeof(struct kapsel_blk_info) == 72, "blk info layout");

#endif /* KAPSEL_BLK_H */
