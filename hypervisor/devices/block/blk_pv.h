/* Internal header of the PV block device: its struct, request slots, I/O engines (io_uring, synchronous overlay) and the functions its files share. */
#ifndef KAPSEL_BLK_PV_H
#define KAPSEL_BLK_PV_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "devices/block/disk.h"
#include "devices/pv_device.h"
#include "kapsel/blk.h"
#include "state/vm_state.h"

/*
 * The files of the PV block device (hypervisor/devices/block/):
 *   dev_blk_pv.c        device ops, creation, teardown (KVM glue)
 *   blk_pv_serve.c      requests: take, check, rate-limit, start, answer
 *   blk_pv_uring.c      the thread's io_uring: doorbell and control reads,
 *                       completions, sleeping, draining; the io_uring engine
 *   blk_pv_sync.c       the synchronous engine (disks on an overlay)
 *   blk_pv_poll.c       busy and adaptive polling before sleeping
 *   blk_pv_persist.c    the state record (save, load)
 *   blk_pv_stats.c      counters into disk->stats, print_stats
 * The ring-device skeleton (pv_device.c) runs the thread and the setup,
 * quiesce and stop handshakes; this device fills its hooks.
 *
 * Threads: device ops run on the vCPU (or main) thread; everything that
 * touches the ring or io_uring runs on the device's I/O thread.  The two
 * meet only in the skeleton's control block and in disk->stats (under the
 * disk's lock).
 */

#define BLK_PV_SLOTS (1u << KAPSEL_RING_MAX_ORDER)
#define BLK_PV_SQ_ENTRIES 256u
#define BLK_PV_CQ_ENTRIES (2u * BLK_PV_SLOTS + 16u)
#define BLK_PV_TAG_DOORBELL 1u		       /* user_data of the doorbell eventfd read */
#define BLK_PV_TAG_CONTROL 2u		       /* user_data of the control eventfd read */
#define BLK_PV_TAG_CANCEL 3u		       /* user_data of cancel requests at teardown */
#define BLK_PV_ZERO_CHUNK_BYTES (256u * 1024u) /* zero buffer for WRITE_ZEROES fallback */
#define BLK_PV_ADAPTIVE_POLL_NS 100000u	       /* bound of the adaptive window */
/* With this many requests in the device, sleep without asking for kicks:
 * one of them completes within latency / BLK_PV_BUSY_IN_FLIGHT, and a new
 * request waits no longer than that behind a queue that deep anyway. */
#define BLK_PV_BUSY_IN_FLIGHT 8u
/* Preempted while polling: this many idle periods without polling. */
#define BLK_PV_ADAPTIVE_BACKOFF 1024u

/* One request between pickup and response. */
struct blk_pv_slot {
	uint64_t id;
	uint64_t submit_tsc;
	uint64_t pickup_tsc;	  /* guest TSC scale */
	uint64_t offset_bytes;	  /* file offset of the next transfer */
	uint64_t remaining_bytes; /* still to transfer (short I/O, zero fill) */
	uint64_t length_bytes;	  /* whole request, for counters and limits */
	uint8_t op;
	uint8_t queue;	/* the ring it came from, answered there */
	bool zero_fill; /* WRITE_ZEROES done with writes of zeroes */
	uint8_t iov_first, iov_count;
	struct iovec iov[KAPSEL_BLK_MAX_SEGMENTS];
	struct blk_pv_slot *next_free;
};

struct blk_pv;

/*
 * How a device moves data between the disk and guest pages.  submit is
 * required: start (the next part of) slot's read, write, flush, discard
 * or write-zeroes; when it is done, the engine calls blk_pv_io_done with
 * the result (bytes, or a negative errno) — later for an asynchronous
 * engine, before submit returns for a synchronous one.  Returns false if
 * the engine cannot take it now (the request is then failed).
 */
struct blk_pv_engine {
	const char *name;
	bool (*submit)(struct blk_pv *b, struct blk_pv_slot *slot);
};

/* io_uring straight on the image (fixed file 0), asynchronous. */
extern const struct blk_pv_engine blk_pv_engine_uring;
/* Through the disk layer on this thread (an overlay: each block may live
 * in another file), synchronous. */
extern const struct blk_pv_engine blk_pv_engine_sync;

struct blk_pv {
	struct pv_device pv; /* first: the skeleton (pv_device_of) */
	/* pv.queue_count of them (1 .. PV_DEVICE_MAX_QUEUES): one ring per
	 * vCPU by default, all served by the one I/O thread. */
	struct pv_queue queues[PV_DEVICE_MAX_QUEUES];
	uint64_t queue_requests[PV_DEVICE_MAX_QUEUES]; /* answered per queue (atomic) */
	struct disk_image disk;
	uint64_t poll_ns;
	bool adaptive_poll; /* no poll= given: poll after completions (blk_pv_poll.c) */
	int64_t tsc_offset; /* guest TSC - host TSC (atomic) */
	uint64_t tsc_khz;
	bool uring_ready, disk_open;
	struct io_uring uring;

	/* ---- I/O thread only ---- */
	bool zero_range_unsupported;
	bool io_error_logged;
	unsigned sqes_queued;  /* prepared, not yet submitted */
	unsigned io_in_flight; /* slots with I/O in io_uring */
	bool doorbell_armed, control_armed;
	uint64_t doorbell_value, control_value;
	struct blk_pv_slot *throttled; /* waits for rate-limit tokens */
	uint64_t throttled_until_ns;
	struct blk_pv_slot *free_slots;
	struct blk_pv_slot *slots;
	void *zero_buffer;
	uint64_t adaptive_window_ns;
	uint64_t idle_since_ns;	   /* answered the last request in flight; 0: not idle */
	bool idle_polled;	   /* the adaptive poll ran in this idle period */
	unsigned adaptive_backoff; /* idle periods left without polling (preempted) */
	uint64_t kicks_reported, notifications_reported, in_flight_reported;
};

static inline struct blk_pv *blk_pv_of(struct pv_device *pv)
{
	return pv_device_priv(pv);
}

/* The engine for b's next request.  A snapshot moves a running disk onto
 * an overlay (disk_image_push_overlay, while the device is quiesced), so
 * this is asked per request, not fixed at creation. */
static inline const struct blk_pv_engine *blk_pv_engine(const struct blk_pv *b)
{
	return b->disk.overlay ? &blk_pv_engine_sync : &blk_pv_engine_uring;
}

/* ---- blk_pv_serve.c ---- */
uint64_t blk_pv_guest_tsc_now(struct blk_pv *b);
/* The skeleton's serve hook: take and start requests. */
bool blk_pv_serve(struct pv_device *pv);
/* Requests taken and unanswered: I/O in flight plus a parked one. */
unsigned blk_pv_in_flight(struct pv_device *pv);
/* The ring is replaced: drop the request parked for tokens. */
void blk_pv_ring_replaced(struct pv_device *pv, unsigned queue);
void blk_pv_ring_broken(struct pv_device *pv, unsigned queue);
/* The I/O of slot ended with res (bytes or a negative errno): resubmit
 * the rest of a short transfer, or answer the guest.  Called by the
 * engines. */
void blk_pv_io_done(struct blk_pv *b, struct blk_pv_slot *slot, int res);
void blk_pv_slot_free(struct blk_pv *b, struct blk_pv_slot *slot);

/* ---- blk_pv_uring.c ---- */
/* Set up the device's io_uring with the image as fixed file 0. */
int blk_pv_uring_start(struct blk_pv *b);
/* Queue reads of the doorbell and the control eventfd (before the thread
 * starts, and again after each completes). */
void blk_pv_arm_read(struct blk_pv *b, uint64_t tag);
/* Hooks: reap completions; sleep in io_uring; cancel and wait at the end. */
bool blk_pv_reap(struct pv_device *pv);
void blk_pv_wait(struct pv_device *pv);
void blk_pv_drain(struct pv_device *pv);
/* Hand prepared SQEs to the kernel. */
void blk_pv_submit_queued(struct blk_pv *b);
void blk_pv_uring_stop(struct blk_pv *b);

/* ---- blk_pv_poll.c ---- */
/* Hooks: spin before sleeping; track idle periods after a publish. */
bool blk_pv_poll(struct pv_device *pv);
bool blk_pv_wants_kick(struct pv_device *pv, unsigned queue);
/* A request arrived in an idle period: fit the adaptive window. */
void blk_pv_end_idle(struct blk_pv *b);

/* Hook: fold counters into disk->stats, note the start of an idle period. */
void blk_pv_after_publish(struct pv_device *pv, bool answered);

/* ---- blk_pv_stats.c ---- */
/* Fold the I/O thread's counters into disk->stats (when they changed). */
void blk_pv_report_stats(struct blk_pv *b);
void blk_pv_print_stats(struct kapsel_device *dev, FILE *out);

/* ---- blk_pv_persist.c ---- */
/* Check one saved queue record (payload, length_bytes) for a device with
 * queue_count queues and fill *rec.  Returns 0 or -EINVAL with error
 * (a record for a queue the device does not have is refused). */
int blk_pv_record_parse(const void *payload, uint64_t length_bytes, unsigned queue_count,
			struct vm_state_block_pv *rec, char *error, size_t error_len);
int blk_pv_save(struct kapsel_device *dev, struct vm_state_writer *out);
int blk_pv_load(struct kapsel_device *dev, uint32_t type, const void *payload,
		uint64_t length_bytes, char *error, size_t error_len);

/* ---- dev_blk_pv.c ---- */
/* Guest TSC = host TSC + offset, measured where the vCPU is out of
 * KVM_RUN (creation, hypercalls). */
void blk_pv_measure_tsc_offset(struct blk_pv *b);
/* Queues of a new device: config->queues (queues=N, <driver queues='N'/>)
 * or the VM's vCPU count, 1 .. PV_DEVICE_MAX_QUEUES. */
unsigned blk_pv_queue_count(const struct kapsel_vm *vm, const struct vm_disk_config *config);

#endif
