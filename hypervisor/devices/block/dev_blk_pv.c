/* PV block device backend: serves a guest's blk.h ring on its own I/O thread with io_uring, zero copy into guest RAM. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <unistd.h>
#include <x86intrin.h>

#include "devices/block/blk_pv_request.h"
#include "devices/devices.h"
#include "devices/block/disk.h"
#include "devices/block/disk_overlay.h"
#include "kapsel/blk.h"
#include "core/log.h"
#include "devices/ring_backend.h"
#include "core/vm.h"
#include "state/vm_state.h"
#include "core/sandbox.h"

/*
 * Threads: setup, print_stats and destroy run on the vCPU (or main)
 * thread; everything that touches the ring or io_uring runs on the
 * device's I/O thread.  The two meet only in struct blk_pv_control (under
 * its mutex) and in disk->stats (under the disk's lock).
 *
 * The I/O thread loop:
 *   reap io_uring completions -> write responses
 *   take requests from the ring (each copied once), validate, apply the
 *     policy, submit readv/writev/fsync/fallocate straight on guest pages
 *   io_uring_submit once for the whole batch
 *   publish responses once; signal the event channel if rsp_event asks
 *   nothing to do: busy-poll poll_us if configured, then set req_event,
 *     re-check, and sleep in io_uring_enter until a doorbell read, a
 *     control read or an I/O completes.
 *
 * Without poll= the backend polls adaptively, and only in one place: just
 * after it answered the last request in flight, when a guest that polls
 * for its completion submits the next request a few microseconds later.
 * It takes req_event back (so that request needs no doorbell) and spins
 * up to adaptive_window_ns for it.  The window fits itself to the gaps it
 * sees (blk_pv_fit_adaptive_window), bounded by BLK_PV_ADAPTIVE_POLL_NS,
 * and shrinks to nothing for a guest that goes quiet or sleeps between
 * requests.  While I/O is in flight the thread sleeps: the device's
 * completion wakes it, and the other CPU stays free for the vCPU.
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
	bool zero_fill; /* WRITE_ZEROES done with writes of zeroes */
	uint8_t iov_first, iov_count;
	struct iovec iov[KAPSEL_BLK_MAX_SEGMENTS];
	struct blk_pv_slot *next_free;
};

/* What the vCPU thread asks of the I/O thread. */
struct blk_pv_control {
	pthread_mutex_t lock;
	pthread_cond_t done;
	bool stop;
	uint64_t setup_requested; /* bumped per DEVICE_SETUP */
	uint64_t setup_done;	  /* the I/O thread caught up to this */
	struct ring_backend next_ring;
	bool next_ring_active; /* false: detach (a reboot), serve no ring */
	/* VM state (snapshot.c): quiesce asks the I/O thread to take no new
	 * requests and finish what it has; quiesced says it did. */
	bool quiesce;
	bool quiesced;
};

struct blk_pv {
	struct kapsel_device dev;
	struct disk_image disk;
	unsigned unit;
	uint64_t poll_ns;
	bool adaptive_poll; /* no poll= given: poll after completions (above) */
	int64_t tsc_offset; /* guest TSC - host TSC (atomic) */
	uint64_t tsc_khz;
	int control_fd; /* eventfd: the vCPU thread has a request */
	bool uring_ready, thread_started, disk_open, control_ready;
	pthread_t thread;
	struct blk_pv_control control;
	struct io_uring uring;
	uint64_t ring_gpa; /* the ring set up last (VM state), 0 = none */
	uint32_t ring_pages;

	/* ---- I/O thread only ---- */
	struct ring_backend ring;
	bool ring_active;
	bool switching; /* a new ring waits for in-flight I/O to end */
	bool broken_logged;
	bool responses_written; /* put since the last publish */
	bool zero_range_unsupported;
	bool io_error_logged;
	bool stopping;
	bool quiescing;	       /* control.quiesce as last seen */
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
	unsigned adaptive_backoff; /* idle periods left without polling (preempted) */
	/* Counters folded into disk->stats once per loop iteration. */
	uint64_t kicks, notifications;
	uint64_t kicks_reported, notifications_reported, in_flight_reported;
};

static inline uint64_t host_tsc(void)
{
	return __rdtsc();
}

static uint64_t guest_tsc_now(struct blk_pv *b)
{
	return host_tsc() + (uint64_t)__atomic_load_n(&b->tsc_offset, __ATOMIC_RELAXED);
}

/* Guest TSC = host TSC + offset; read MSR_IA32_TSC next to a host rdtsc.
 * Must run where the vCPU is not inside KVM_RUN (creation, hypercalls). */
static void blk_pv_measure_tsc_offset(struct blk_pv *b)
{
	uint64_t guest;
	uint64_t before = host_tsc();
	if (vm_guest_tsc(b->dev.vm, &guest) < 0)
		return; /* keep the old offset (0 at first: host scale) */
	uint64_t after = host_tsc();
	uint64_t host = before + (after - before) / 2;
	__atomic_store_n(&b->tsc_offset, (int64_t)(guest - host), __ATOMIC_RELAXED);
}

static uint64_t tsc_delta_ns(struct blk_pv *b, uint64_t from, uint64_t to)
{
	if (!b->tsc_khz || to < from)
		return 0;
	return (uint64_t)((unsigned __int128)(to - from) * 1000000u / b->tsc_khz);
}

static int host_errno_to_status(int err)
{
	switch (err) {
	case ENOSPC:
	case EDQUOT:
		return -KAPSEL_ENOSPC;
	case EROFS:
		return -KAPSEL_EROFS;
	case EINVAL:
		return -KAPSEL_EINVAL;
	default:
		return -KAPSEL_EIO;
	}
}

/* ---- Slots and responses --------------------------------------------------- */

static struct blk_pv_slot *slot_alloc(struct blk_pv *b)
{
	struct blk_pv_slot *slot = b->free_slots;
	if (slot)
		b->free_slots = slot->next_free;
	return slot;
}

static void slot_free(struct blk_pv *b, struct blk_pv_slot *slot)
{
	slot->next_free = b->free_slots;
	b->free_slots = slot;
}

/* Answer slot's request with status, count it, and free the slot.
 * counted: the denial was already counted by the policy functions. */
static void blk_pv_respond(struct blk_pv *b, struct blk_pv_slot *slot, int status, bool counted)
{
	uint64_t complete_tsc = guest_tsc_now(b);
	if (b->ring_active && !b->switching && !b->ring.broken) {
		struct kapsel_blk_response rsp = {
			.id = slot->id,
			.status = status,
			.submit_tsc = slot->submit_tsc,
			.pickup_tsc = slot->pickup_tsc,
			.complete_tsc = complete_tsc,
		};
		ring_backend_put_response(&b->ring, &rsp);
		b->responses_written = true;
	}
	if (!counted)
		disk_stats_complete(&b->disk, (enum kapsel_blk_op)slot->op, slot->length_bytes,
				    status, tsc_delta_ns(b, slot->pickup_tsc, complete_tsc));
	slot_free(b, slot);
}

static void blk_pv_publish(struct blk_pv *b)
{
	if (!b->responses_written)
		return;
	b->responses_written = false;
	if (!ring_backend_publish(&b->ring))
		return;
	uint32_t port = __atomic_load_n(&b->dev.evtchn_port, __ATOMIC_ACQUIRE);
	if (port == UINT32_MAX)
		return; /* nobody bound a channel: the guest polls */
	vm_evtchn_notify(b->dev.vm, port);
	b->notifications++;
}

/* ---- Submission ------------------------------------------------------------ */

static void blk_pv_complete_io(struct blk_pv *b, struct blk_pv_slot *slot, int res);

static struct io_uring_sqe *blk_pv_get_sqe(struct blk_pv *b)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&b->uring);
	if (!sqe) {
		/* The submission queue is full: hand it to the kernel. */
		io_uring_submit(&b->uring);
		b->sqes_queued = 0;
		sqe = io_uring_get_sqe(&b->uring);
	}
	if (sqe)
		b->sqes_queued++;
	return sqe;
}

static void blk_pv_arm_read(struct blk_pv *b, uint64_t tag)
{
	struct io_uring_sqe *sqe = blk_pv_get_sqe(b);
	if (!sqe)
		return;
	bool doorbell = tag == BLK_PV_TAG_DOORBELL;
	io_uring_prep_read(sqe, doorbell ? b->dev.doorbell_fd : b->control_fd,
			   doorbell ? &b->doorbell_value : &b->control_value, sizeof(uint64_t), 0);
	io_uring_sqe_set_data64(sqe, tag);
	if (doorbell)
		b->doorbell_armed = true;
	else
		b->control_armed = true;
}

/* Point slot->iov at the zero buffer for the next chunk of a zero fill. */
static void blk_pv_prepare_zero_chunk(struct blk_pv *b, struct blk_pv_slot *slot)
{
	uint64_t left = slot->remaining_bytes;
	unsigned n = 0;
	while (left && n < KAPSEL_BLK_MAX_SEGMENTS) {
		uint64_t len = left < BLK_PV_ZERO_CHUNK_BYTES ? left : BLK_PV_ZERO_CHUNK_BYTES;
		slot->iov[n].iov_base = b->zero_buffer;
		slot->iov[n].iov_len = len;
		left -= len;
		n++;
	}
	slot->iov_first = 0;
	slot->iov_count = (uint8_t)n;
}

/*
 * A disk on a copy-on-write overlay (a snapshot or clone; disk_overlay.h):
 * each block may live in another file, so the I/O goes through the disk
 * layer, synchronously on this thread, and completes at once.
 */
static void blk_pv_overlay_io(struct blk_pv *b, struct blk_pv_slot *slot)
{
	const struct iovec *iov = &slot->iov[slot->iov_first];
	ssize_t res = 0;
	switch (slot->op) {
	case KAPSEL_BLK_OP_READ:
		res = disk_image_preadv(&b->disk, iov, slot->iov_count, slot->offset_bytes);
		break;
	case KAPSEL_BLK_OP_WRITE:
		res = disk_image_pwritev(&b->disk, iov, slot->iov_count, slot->offset_bytes);
		break;
	case KAPSEL_BLK_OP_FLUSH:
		res = disk_image_sync(&b->disk);
		break;
	case KAPSEL_BLK_OP_DISCARD:
		res = 0; /* a hint; punching would expose the base */
		break;
	case KAPSEL_BLK_OP_WRITE_ZEROES:
		res = disk_image_write_zeroes(&b->disk, slot->offset_bytes, slot->remaining_bytes);
		if (res == 0 && slot->zero_fill)
			res = (ssize_t)slot->remaining_bytes;
		break;
	}
	b->io_in_flight++;
	blk_pv_complete_io(b, slot, res > INT32_MAX ? INT32_MAX : (int)res);
}

/* Queue the (next part of the) I/O for slot.  Returns false if no SQE. */
static bool blk_pv_submit_io(struct blk_pv *b, struct blk_pv_slot *slot)
{
	if (b->disk.overlay) {
		blk_pv_overlay_io(b, slot);
		return true;
	}
	struct io_uring_sqe *sqe = blk_pv_get_sqe(b);
	if (!sqe)
		return false;
	const struct iovec *iov = &slot->iov[slot->iov_first];
	switch (slot->op) {
	case KAPSEL_BLK_OP_READ:
		io_uring_prep_readv(sqe, 0, iov, slot->iov_count, slot->offset_bytes);
		break;
	case KAPSEL_BLK_OP_WRITE:
		io_uring_prep_writev(sqe, 0, iov, slot->iov_count, slot->offset_bytes);
		break;
	case KAPSEL_BLK_OP_FLUSH:
		io_uring_prep_fsync(sqe, 0, IORING_FSYNC_DATASYNC);
		break;
	case KAPSEL_BLK_OP_DISCARD:
		io_uring_prep_fallocate(sqe, 0, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					slot->offset_bytes, slot->remaining_bytes);
		break;
	case KAPSEL_BLK_OP_WRITE_ZEROES:
		if (slot->zero_fill) {
			blk_pv_prepare_zero_chunk(b, slot);
			io_uring_prep_writev(sqe, 0, slot->iov, slot->iov_count,
					     slot->offset_bytes);
		} else {
			io_uring_prep_fallocate(sqe, 0, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
						slot->offset_bytes, slot->remaining_bytes);
		}
		break;
	}
	/* Fixed file 0 is the disk image (registered at creation). */
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, slot);
	b->io_in_flight++;
	return true;
}

/* Move slot's iovecs forward by done bytes (a short transfer). */
static void slot_advance(struct blk_pv_slot *slot, uint64_t done)
{
	slot->offset_bytes += done;
	slot->remaining_bytes -= done;
	if (slot->zero_fill)
		return; /* the next chunk is rebuilt from the zero buffer */
	while (done && slot->iov_count) {
		struct iovec *v = &slot->iov[slot->iov_first];
		if (done >= v->iov_len) {
			done -= v->iov_len;
			slot->iov_first++;
			slot->iov_count--;
		} else {
			v->iov_base = (uint8_t *)v->iov_base + done;
			v->iov_len -= done;
			done = 0;
		}
	}
}

/* ---- Completions ----------------------------------------------------------- */

static void blk_pv_complete_io(struct blk_pv *b, struct blk_pv_slot *slot, int res)
{
	b->io_in_flight--;
	int status = 0;
	if (res < 0) {
		if (slot->op == KAPSEL_BLK_OP_DISCARD && (res == -EOPNOTSUPP || res == -ENOTTY)) {
			res = 0; /* discard is a hint: nothing punched is fine */
		} else if (slot->op == KAPSEL_BLK_OP_WRITE_ZEROES && !slot->zero_fill &&
			   (res == -EOPNOTSUPP || res == -EINVAL || res == -ENOTTY)) {
			b->zero_range_unsupported = true;
			slot->zero_fill = true;
			if (blk_pv_submit_io(b, slot))
				return;
			res = -EIO;
		}
		if (res < 0) {
			status = host_errno_to_status(-res);
			if (!b->io_error_logged) {
				b->io_error_logged = true;
				kapsel_guest_warn(
					&b->dev.vm->guest_log,
					"disk %u ('%s'): host I/O failed: %s; the guest got error %d",
					b->unit, b->disk.path, strerror(-res), status);
			}
		}
	} else if (slot->op == KAPSEL_BLK_OP_READ || slot->op == KAPSEL_BLK_OP_WRITE ||
		   (slot->op == KAPSEL_BLK_OP_WRITE_ZEROES && slot->zero_fill)) {
		if (res == 0 && slot->remaining_bytes) {
			status = -KAPSEL_EIO; /* the image shrank under us */
		} else if ((uint64_t)res < slot->remaining_bytes) {
			slot_advance(slot, (uint64_t)res);
			if (blk_pv_submit_io(b, slot))
				return;
			status = -KAPSEL_EIO;
		}
	}
	if (b->switching && !b->ring_active)
		slot_free(b, slot);
	else
		blk_pv_respond(b, slot, status, false);
}

static bool blk_pv_reap(struct blk_pv *b)
{
	struct io_uring_cqe *cqes[64];
	bool progress = false;
	for (;;) {
		unsigned n = io_uring_peek_batch_cqe(&b->uring, cqes, 64);
		if (!n)
			break;
		progress = true;
		for (unsigned i = 0; i < n; i++) {
			uint64_t tag = io_uring_cqe_get_data64(cqes[i]);
			int res = cqes[i]->res;
			if (tag == BLK_PV_TAG_DOORBELL) {
				b->doorbell_armed = false;
				if (res == (int)sizeof(uint64_t))
					b->kicks += b->doorbell_value;
				if (!b->stopping)
					blk_pv_arm_read(b, BLK_PV_TAG_DOORBELL);
			} else if (tag == BLK_PV_TAG_CONTROL) {
				b->control_armed = false;
				if (!b->stopping)
					blk_pv_arm_read(b, BLK_PV_TAG_CONTROL);
			} else if (tag == BLK_PV_TAG_CANCEL) {
				/* nothing */
			} else {
				blk_pv_complete_io(b, (struct blk_pv_slot *)(uintptr_t)tag, res);
			}
		}
		io_uring_cq_advance(&b->uring, n);
	}
	return progress;
}

/* ---- Requests -------------------------------------------------------------- */

/*
 * Check the private copy req (blk_pv_request.c) and fill slot's iovecs.
 * Returns 0, or a negative status for the guest; *counted says the denial
 * was counted.
 */
static int blk_pv_validate(struct blk_pv *b, const struct kapsel_blk_request *req,
			   struct blk_pv_slot *slot, bool *counted)
{
	struct blk_pv_transfer transfer;
	int err = blk_pv_request_check(req, &b->dev.vm->mem, &b->disk, &transfer, counted);
	if (err)
		return err;
	memcpy(slot->iov, transfer.iov, transfer.iov_count * sizeof(transfer.iov[0]));
	slot->iov_first = 0;
	slot->iov_count = transfer.iov_count;
	slot->offset_bytes = transfer.offset_bytes;
	slot->remaining_bytes = transfer.remaining_bytes;
	slot->length_bytes = transfer.length_bytes;
	return 0;
}

static void blk_pv_get_info(struct blk_pv *b, struct blk_pv_slot *slot)
{
	struct kapsel_blk_info info = {
		.magic = KAPSEL_BLK_INFO_MAGIC,
		.revision = 1,
		.capacity_sectors = b->disk.capacity_sectors,
		.logical_sector_bytes = KAPSEL_BLK_SECTOR_BYTES,
		.physical_sector_bytes = KAPSEL_BLK_SECTOR_BYTES,
		.readonly = b->disk.readonly ? 1 : 0,
		.max_segments = KAPSEL_BLK_MAX_SEGMENTS,
		.features = KAPSEL_BLK_FEATURE_FLUSH | KAPSEL_BLK_FEATURE_DISCARD |
			    KAPSEL_BLK_FEATURE_WRITE_ZEROES | KAPSEL_BLK_FEATURE_TIMESTAMPS,
	};
	/* iov[0] is a translated, 512-byte multiple segment: it fits. */
	memcpy(slot->iov[0].iov_base, &info, sizeof(info));
	blk_pv_respond(b, slot, 0, false);
}

static bool rate_limits_configured(struct disk_image *disk)
{
	return __atomic_load_n(&disk->ops_bucket.rate_per_second, __ATOMIC_RELAXED) ||
	       __atomic_load_n(&disk->bytes_bucket.rate_per_second, __ATOMIC_RELAXED);
}

/* Start a validated data/flush/discard request, or (limited) park it for
 * tokens.  Returns false if it was parked (stop taking requests). */
static bool blk_pv_start(struct blk_pv *b, struct blk_pv_slot *slot, bool limited)
{
	if (limited && rate_limits_configured(&b->disk)) {
		uint64_t now = vm_clock_ns(b->dev.vm);
		uint64_t wait = disk_rate_limit(&b->disk, slot->length_bytes, now);
		if (wait) {
			b->throttled = slot;
			/* Saturate: a huge request on a tiny rate waits "forever"
			 * rather than wrapping into the past and spinning. */
			b->throttled_until_ns = wait > UINT64_MAX - now ? UINT64_MAX : now + wait;
			return false;
		}
	}
	if (slot->op == KAPSEL_BLK_OP_WRITE_ZEROES && b->zero_range_unsupported)
		slot->zero_fill = true;
	if (!blk_pv_submit_io(b, slot))
		blk_pv_respond(b, slot, -KAPSEL_EIO, false);
	return true;
}

static void blk_pv_log_broken(struct blk_pv *b)
{
	if (b->broken_logged)
		return;
	b->broken_logged = true;
	kapsel_guest_warn(&b->dev.vm->guest_log,
			  "disk %u ('%s'): the guest published an impossible request index "
			  "(req_prod %u with %u taken and %u answered in a ring of %u); "
			  "this ring is stopped, the VM keeps running (a new DEVICE_SETUP restarts it)",
			  b->unit, b->disk.path, b->ring.bad_req_prod, b->ring.req_cons,
			  b->ring.rsp_prod_pvt, b->ring.size);
}

/*
 * A request arrived idle_since_ns after the backend answered the last one
 * in flight.  A gap the bound could cover widens the window to fit it
 * with a quarter to spare (when no poll ran, the gap includes the
 * doorbell and our wake-up: an overestimate, which is the safe side); a
 * longer gap halves it.  A request caught by the poll leaves it alone.
 */
static void blk_pv_end_idle(struct blk_pv *b)
{
	uint64_t gap = vm_clock_ns(b->dev.vm) - b->idle_since_ns;
	b->idle_since_ns = 0;
	if (b->adaptive_backoff) {
		b->adaptive_backoff--;
	} else if (gap > BLK_PV_ADAPTIVE_POLL_NS) {
		b->adaptive_window_ns /= 2;
	} else if (gap > b->adaptive_window_ns) {
		uint64_t fit = gap + gap / 4;
		b->adaptive_window_ns =
			fit < BLK_PV_ADAPTIVE_POLL_NS ? fit : BLK_PV_ADAPTIVE_POLL_NS;
	}
}

/* Take and start requests from the ring.  Returns true if any was taken. */
static bool blk_pv_serve(struct blk_pv *b)
{
	bool progress = false;
	if (b->throttled) {
		/* A save or migration (quiesce) waits for no tokens: the parked
		 * request goes now, unlimited, or a guest with a large request
		 * on a slow limit could hold up the VM's save for hours. */
		if (!b->quiescing && vm_clock_ns(b->dev.vm) < b->throttled_until_ns)
			return false;
		struct blk_pv_slot *slot = b->throttled;
		b->throttled = NULL;
		if (!blk_pv_start(b, slot, !b->quiescing))
			return false;
		progress = true;
	}
	if (!b->ring_active || b->switching || b->quiescing)
		return progress;
	for (;;) {
		int pending = ring_backend_pending(&b->ring);
		if (pending < 0) {
			blk_pv_log_broken(b);
			return progress;
		}
		if (pending == 0)
			return progress;
		for (int i = 0; i < pending; i++) {
			/* A slot per ring entry in flight: pending never
			 * exceeds the free ones (checked anyway). */
			struct blk_pv_slot *slot = slot_alloc(b);
			if (!slot)
				return progress;
			struct kapsel_blk_request req;
			ring_backend_take_request(&b->ring, &req);
			progress = true;
			if (b->idle_since_ns)
				blk_pv_end_idle(b);
			slot->id = req.id;
			slot->submit_tsc = req.submit_tsc;
			slot->pickup_tsc = guest_tsc_now(b);
			slot->op = req.op;
			slot->zero_fill = false;
			slot->length_bytes = 0;
			bool counted;
			int status = blk_pv_validate(b, &req, slot, &counted);
			if (status) {
				blk_pv_respond(b, slot, status, counted);
			} else if (req.op == KAPSEL_BLK_OP_GET_INFO) {
				blk_pv_get_info(b, slot);
			} else if ((req.op == KAPSEL_BLK_OP_DISCARD ||
				    req.op == KAPSEL_BLK_OP_WRITE_ZEROES) &&
				   slot->remaining_bytes == 0) {
				blk_pv_respond(b, slot, 0, false);
			} else if (!blk_pv_start(b, slot, true)) {
				return true; /* parked: the rest waits behind it */
			}
		}
	}
}

/* ---- Control: setup and stop from the vCPU thread ----------------------- */

static void blk_pv_control(struct blk_pv *b)
{
	pthread_mutex_lock(&b->control.lock);
	if (b->control.stop)
		b->stopping = true;
	b->quiescing = b->control.quiesce;
	if (!b->quiescing)
		b->control.quiesced = false;
	if (b->control.setup_requested != b->control.setup_done && !b->switching) {
		/* Requests of the old ring still in io_uring finish first and
		 * are dropped; a parked one is dropped now. */
		b->switching = true;
		b->ring_active = false;
		if (b->throttled) {
			slot_free(b, b->throttled);
			b->throttled = NULL;
		}
	}
	if (b->switching && b->io_in_flight == 0) {
		b->ring = b->control.next_ring;
		b->ring_active = b->control.next_ring_active;
		b->switching = false;
		b->broken_logged = false;
		b->responses_written = false;
		b->control.setup_done = b->control.setup_requested;
		pthread_cond_broadcast(&b->control.done);
	}
	pthread_mutex_unlock(&b->control.lock);
}

/* Quiesced: nothing in flight, nothing parked, every response published. */
static void blk_pv_check_quiesced(struct blk_pv *b)
{
	if (!b->quiescing || b->io_in_flight || b->throttled || b->switching ||
	    b->responses_written)
		return;
	pthread_mutex_lock(&b->control.lock);
	if (b->control.quiesce && !b->control.quiesced) {
		b->control.quiesced = true;
		pthread_cond_broadcast(&b->control.done);
	}
	pthread_mutex_unlock(&b->control.lock);
}

/* ---- Counters ---------------------------------------------------------------- */

static void blk_pv_report_stats(struct blk_pv *b)
{
	uint64_t in_flight = b->io_in_flight + (b->throttled ? 1 : 0);
	if (b->kicks == b->kicks_reported && b->notifications == b->notifications_reported &&
	    in_flight == b->in_flight_reported)
		return;
	pthread_mutex_lock(&b->disk.lock);
	b->disk.stats.kicks_received = b->kicks;
	b->disk.stats.exits = b->kicks; /* each doorbell write is one VM exit */
	b->disk.stats.notifications_sent = b->notifications;
	b->disk.stats.in_flight = in_flight;
	pthread_mutex_unlock(&b->disk.lock);
	b->kicks_reported = b->kicks;
	b->notifications_reported = b->notifications;
	b->in_flight_reported = in_flight;
}

/* ---- The I/O thread ---------------------------------------------------------- */

/* Busy-poll for new requests or completions for up to poll_ns.  Returns
 * true if something arrived. */
static bool blk_pv_poll(struct blk_pv *b, uint64_t poll_ns)
{
	uint64_t deadline = vm_clock_ns(b->dev.vm) + poll_ns;
	do {
		for (unsigned i = 0; i < 64; i++) {
			/* IORING_SQ_TASKRUN: completions wait for us to enter
			 * the kernel (cooperative task running). */
			if ((b->ring_active && !b->switching && ring_backend_has_new(&b->ring)) ||
			    io_uring_cq_ready(&b->uring) ||
			    (IO_URING_READ_ONCE(*b->uring.sq.kflags) & IORING_SQ_TASKRUN))
				return true;
			_mm_pause();
		}
	} while (vm_clock_ns(b->dev.vm) < deadline);
	return false;
}

static void blk_pv_wait(struct blk_pv *b)
{
	struct __kernel_timespec timeout;
	struct __kernel_timespec *timeout_p = NULL;
	if (b->throttled) {
		uint64_t now = vm_clock_ns(b->dev.vm);
		uint64_t wait = b->throttled_until_ns > now ? b->throttled_until_ns - now : 0;
		timeout.tv_sec = (long long)(wait / 1000000000ull);
		timeout.tv_nsec = (long long)(wait % 1000000000ull);
		timeout_p = &timeout;
	}
	struct io_uring_cqe *cqe;
	if (timeout_p) {
		io_uring_submit_and_wait_timeout(&b->uring, &cqe, 1, timeout_p, NULL);
	} else {
		int err = io_uring_submit_and_wait(&b->uring, 1);
		(void)err; /* EINTR or EBUSY: the loop looks again */
	}
	b->sqes_queued = 0;
}

static void blk_pv_drain(struct blk_pv *b)
{
	/* Guest RAM is unmapped after destroy: no I/O may outlive us. */
	struct io_uring_sqe *sqe;
	if (b->doorbell_armed && (sqe = blk_pv_get_sqe(b))) {
		io_uring_prep_cancel64(sqe, BLK_PV_TAG_DOORBELL, 0);
		io_uring_sqe_set_data64(sqe, BLK_PV_TAG_CANCEL);
	}
	if (b->control_armed && (sqe = blk_pv_get_sqe(b))) {
		io_uring_prep_cancel64(sqe, BLK_PV_TAG_CONTROL, 0);
		io_uring_sqe_set_data64(sqe, BLK_PV_TAG_CANCEL);
	}
	io_uring_submit(&b->uring);
	while (b->io_in_flight || b->doorbell_armed || b->control_armed) {
		struct io_uring_cqe *cqe;
		int err = io_uring_wait_cqe(&b->uring, &cqe);
		if (err < 0 && err != -EINTR)
			break;
		blk_pv_reap(b);
	}
}

static void *blk_pv_thread_main(void *opaque)
{
	struct blk_pv *b = opaque;
	bool idle_polled = false; /* the adaptive poll ran in this idle period */
	sandbox_thread_role(SANDBOX_ROLE_IO);

	blk_pv_arm_read(b, BLK_PV_TAG_DOORBELL);
	blk_pv_arm_read(b, BLK_PV_TAG_CONTROL);
	for (;;) {
		bool progress = blk_pv_reap(b);
		blk_pv_control(b);
		if (b->stopping)
			break;
		progress |= blk_pv_serve(b);
		if (b->sqes_queued) {
			io_uring_submit(&b->uring);
			b->sqes_queued = 0;
		}
		bool answered = b->responses_written;
		if (b->ring_active)
			blk_pv_publish(b);
		blk_pv_report_stats(b);
		blk_pv_check_quiesced(b);
		bool serving = b->ring_active && !b->switching && !b->quiescing && !b->throttled;
		if (answered && serving && b->io_in_flight == 0 && !b->idle_since_ns) {
			b->idle_since_ns = vm_clock_ns(b->dev.vm);
			idle_polled = false;
		}
		if (progress)
			continue;
		if (b->poll_ns && !b->quiescing && blk_pv_poll(b, b->poll_ns))
			continue;
		if (b->adaptive_poll && serving && b->idle_since_ns && !idle_polled &&
		    b->adaptive_window_ns && !b->ring.broken) {
			/* Take req_event back (it was set when we slept waiting
			 * for the I/O): the guest's next request needs no
			 * doorbell while we look.  prepare_sleep re-arms it. */
			idle_polled = true;
			__atomic_store_n(&b->ring.header->req_event, b->ring.req_cons,
					 __ATOMIC_RELAXED);
			struct rusage before, after;
			getrusage(RUSAGE_THREAD, &before);
			bool hit = blk_pv_poll(b, b->adaptive_window_ns);
			getrusage(RUSAGE_THREAD, &after);
			/* Preempted while spinning: another thread wants this CPU
			 * (on 2 CPUs perhaps the vCPU).  Stop polling until the
			 * gaps earn a window again. */
			if (after.ru_nivcsw != before.ru_nivcsw) {
				b->adaptive_window_ns = 0;
				b->adaptive_backoff = BLK_PV_ADAPTIVE_BACKOFF;
			}
			if (hit)
				continue;
		}
		/* Quiesced, the ring in guest RAM must not change (req_event).
		 * With a deep queue in the device, a completion wakes us soon
		 * and we look at the ring then: no doorbell needed meanwhile. */
		if (!b->throttled && b->ring_active && !b->switching && !b->quiescing &&
		    b->io_in_flight < BLK_PV_BUSY_IN_FLIGHT && ring_backend_prepare_sleep(&b->ring))
			continue;
		blk_pv_wait(b);
	}
	blk_pv_drain(b);
	blk_pv_report_stats(b);
	return NULL;
}

/* ---- Device ops ------------------------------------------------------------- */

/* Hand a mapped ring (NULL: none) to the I/O thread and wait until it
 * serves it; the old ring's I/O has finished by then. */
static int blk_pv_install_ring(struct blk_pv *b, const struct ring_backend *new_ring)
{
	struct ring_backend ring = { 0 };
	if (new_ring)
		ring = *new_ring;
	blk_pv_measure_tsc_offset(b);

	pthread_mutex_lock(&b->control.lock);
	b->control.next_ring = ring;
	b->control.next_ring_active = new_ring != NULL;
	uint64_t ticket = ++b->control.setup_requested;
	pthread_mutex_unlock(&b->control.lock);
	uint64_t one = 1;
	if (write(b->control_fd, &one, sizeof(one)) < 0)
		return -KAPSEL_EIO;
	/* Wait until the I/O thread serves the new ring, so the guest's first
	 * kick after this call finds it. */
	pthread_mutex_lock(&b->control.lock);
	while (b->control.setup_done < ticket)
		pthread_cond_wait(&b->control.done, &b->control.lock);
	pthread_mutex_unlock(&b->control.lock);
	return 0;
}

static int blk_pv_setup(struct kapsel_device *dev, const struct kapsel_device_setup *setup)
{
	struct blk_pv *b = dev->priv;
	struct ring_backend ring;
	int err = ring_backend_map(&ring, &dev->vm->mem, setup->ring_gpa, setup->ring_pages,
				   sizeof(struct kapsel_blk_request),
				   sizeof(struct kapsel_blk_response));
	if (err)
		return err;
	err = blk_pv_install_ring(b, &ring);
	if (!err) {
		b->ring_gpa = setup->ring_gpa;
		b->ring_pages = setup->ring_pages;
	}
	return err;
}

/* A reboot: drop the ring once its I/O has finished (guest RAM is
 * cleared next, and the old ring's memory belongs to the new boot). */
static void blk_pv_reset(struct kapsel_device *dev)
{
	struct blk_pv *b = dev->priv;
	if (!b->ring_gpa)
		return;
	blk_pv_install_ring(b, NULL);
	b->ring_gpa = 0;
	b->ring_pages = 0;
}

/* ---- VM state: quiesce, save, load (snapshot.c, vm_state.h) -------------- */

static void blk_pv_set_quiesce(struct blk_pv *b, bool quiesce)
{
	pthread_mutex_lock(&b->control.lock);
	b->control.quiesce = quiesce;
	pthread_mutex_unlock(&b->control.lock);
	uint64_t one = 1;
	ssize_t n = write(b->control_fd, &one, sizeof(one));
	(void)n;
	if (!quiesce)
		return;
	pthread_mutex_lock(&b->control.lock);
	while (!b->control.quiesced && !b->control.stop)
		pthread_cond_wait(&b->control.done, &b->control.lock);
	pthread_mutex_unlock(&b->control.lock);
}

static void blk_pv_quiesce(struct kapsel_device *dev)
{
	blk_pv_set_quiesce(dev->priv, true);
}

static void blk_pv_resume(struct kapsel_device *dev)
{
	blk_pv_set_quiesce(dev->priv, false);
}

static int blk_pv_save(struct kapsel_device *dev, struct vm_state_writer *out)
{
	struct blk_pv *b = dev->priv;
	struct vm_state_block_pv rec = { 0 };
	/* Quiesced: the I/O thread leaves the ring alone until resume; the
	 * lock orders our reads after its last writes. */
	pthread_mutex_lock(&b->control.lock);
	bool quiesced = b->control.quiesced;
	pthread_mutex_unlock(&b->control.lock);
	if (!quiesced)
		return -EBUSY;
	if (b->ring_gpa && b->ring_active) {
		rec.ring_gpa = b->ring_gpa;
		rec.ring_pages = b->ring_pages;
		rec.order = (uint32_t)__builtin_ctz(b->ring.size);
		rec.req_cons = b->ring.req_cons;
		rec.rsp_prod = b->ring.rsp_published;
		rec.broken = b->ring.broken;
		rec.bad_req_prod = b->ring.bad_req_prod;
	}
	return vm_state_put(out, VM_STATE_DEV_BLOCK_PV, VM_STATE_RECORD_MANDATORY, &rec,
			    sizeof(rec));
}

static int blk_pv_load(struct kapsel_device *dev, uint32_t type, const void *payload,
		       uint64_t length_bytes, char *error, size_t error_len)
{
	struct blk_pv *b = dev->priv;
	struct vm_state_block_pv rec;
	if (type != VM_STATE_DEV_BLOCK_PV)
		return -ENOENT;
	if (length_bytes != sizeof(rec)) {
		snprintf(error, error_len, "PV block record is %llu bytes, expected %zu",
			 (unsigned long long)length_bytes, sizeof(rec));
		return -EINVAL;
	}
	memcpy(&rec, payload, sizeof(rec));
	if (!rec.ring_gpa)
		return 0; /* the guest never set the ring up */
	struct ring_backend ring;
	/* Requests the guest published while the device was quiesced are
	 * still in the ring (req_prod ahead of rsp_prod): map_restored allows
	 * that, as long as rsp_prod is where the save says. */
	int err = ring_backend_map_restored(&ring, &dev->vm->mem, rec.ring_gpa, rec.ring_pages,
					    sizeof(struct kapsel_blk_request),
					    sizeof(struct kapsel_blk_response), rec.rsp_prod);
	if (err) {
		snprintf(error, error_len,
			 "the saved ring at %#llx (%u pages) is not a valid ring in the saved memory",
			 (unsigned long long)rec.ring_gpa, rec.ring_pages);
		return -EINVAL;
	}
	/* Saved quiesced: every request taken was answered and published,
	 * so the ring restarts at the published index, which must be the one
	 * in guest memory. */
	if ((uint32_t)__builtin_ctz(ring.size) != rec.order || rec.req_cons != rec.rsp_prod ||
	    ring.rsp_published != rec.rsp_prod) {
		snprintf(error, error_len,
			 "the saved ring indices (taken %u, answered %u, order %u) do not match the ring in memory (answered %u, order %u)",
			 rec.req_cons, rec.rsp_prod, rec.order, ring.rsp_published,
			 (uint32_t)__builtin_ctz(ring.size));
		return -EINVAL;
	}
	ring.broken = rec.broken != 0;
	ring.bad_req_prod = rec.bad_req_prod;
	err = blk_pv_install_ring(b, &ring);
	if (err) {
		snprintf(error, error_len, "cannot hand the ring to the I/O thread");
		return -EIO;
	}
	b->ring_gpa = rec.ring_gpa;
	b->ring_pages = rec.ring_pages;
	/* Requests the guest queued before the save wait in the ring: look. */
	uint64_t one = 1;
	ssize_t n = write(b->control_fd, &one, sizeof(one));
	(void)n;
	return 0;
}

static void blk_pv_print_stats(struct kapsel_device *dev, FILE *out)
{
	struct blk_pv *b = dev->priv;
	disk_stats_print(&b->disk, out);
	pthread_mutex_lock(&b->control.lock);
	bool set_up = b->control.setup_done != 0 && b->control.next_ring_active;
	uint32_t slots = b->control.next_ring.size;
	pthread_mutex_unlock(&b->control.lock);
	if (!set_up)
		fprintf(out, "  ring: not set up\n");
	else
		fprintf(out, "  ring: %u slots%s\n", slots,
			__atomic_load_n(&b->ring.broken, __ATOMIC_RELAXED)
				? " (stopped: broken by the guest)"
				: "");
	if (b->adaptive_poll)
		fprintf(out, "  poll_us: adaptive (after a completion, up to %u)\n",
			BLK_PV_ADAPTIVE_POLL_NS / 1000u);
	else
		fprintf(out, "  poll_us: %llu\n", (unsigned long long)(b->poll_ns / 1000));
}

static void blk_pv_destroy(struct kapsel_device *dev)
{
	struct blk_pv *b = dev->priv;
	if (b->thread_started) {
		pthread_mutex_lock(&b->control.lock);
		b->control.stop = true;
		pthread_mutex_unlock(&b->control.lock);
		uint64_t one = 1;
		ssize_t n = write(b->control_fd, &one, sizeof(one));
		(void)n;
		pthread_join(b->thread, NULL);
	}
	if (b->uring_ready) {
		io_uring_unregister_files(&b->uring);
		io_uring_queue_exit(&b->uring);
	}
	if (b->control_fd >= 0)
		close(b->control_fd);
	if (b->control_ready) {
		pthread_mutex_destroy(&b->control.lock);
		pthread_cond_destroy(&b->control.done);
	}
	if (b->disk_open)
		disk_image_close(&b->disk);
	free(b->slots);
	free(b->zero_buffer);
	free(b);
}

/* The control plane changes the disk's policy at run time (control_verbs.c). */
static struct disk_image *blk_pv_disk_image(struct kapsel_device *dev)
{
	struct blk_pv *b = dev->priv;
	return &b->disk;
}

const struct kapsel_device_ops blk_pv_ops = {
	.name = "blk-pv",
	.type = KAPSEL_DEV_BLOCK_PV,
	.setup = blk_pv_setup,
	.reset = blk_pv_reset,
	.print_stats = blk_pv_print_stats,
	.destroy = blk_pv_destroy,
	.quiesce = blk_pv_quiesce,
	.resume = blk_pv_resume,
	.save = blk_pv_save,
	.load = blk_pv_load,
	.disk_image = blk_pv_disk_image,
};

static int blk_pv_start_uring(struct blk_pv *b)
{
	struct io_uring_params params = {
		.flags =
			IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
		.cq_entries = BLK_PV_CQ_ENTRIES,
	};
	int err = io_uring_queue_init_params(BLK_PV_SQ_ENTRIES, &b->uring, &params);
	if (err == -EINVAL) {
		/* An older kernel without cooperative task running. */
		params = (struct io_uring_params){ .flags = IORING_SETUP_CQSIZE,
						   .cq_entries = BLK_PV_CQ_ENTRIES };
		err = io_uring_queue_init_params(BLK_PV_SQ_ENTRIES, &b->uring, &params);
	}
	if (err < 0) {
		kapsel_error("disk %u ('%s'): cannot set up io_uring: %s; the PV disk needs io_uring "
			     "(Linux 5.6 or newer, not disabled by sysctl kernel.io_uring_disabled)",
			     b->unit, b->disk.path, strerror(-err));
		return err;
	}
	b->uring_ready = true;
	err = io_uring_register_files(&b->uring, &b->disk.fd, 1);
	if (err < 0) {
		kapsel_error("disk %u ('%s'): cannot register the image with io_uring: %s", b->unit,
			     b->disk.path, strerror(-err));
		return err;
	}
	return 0;
}

int dev_blk_pv_create(struct kapsel_vm *vm, const struct vm_disk_config *config, unsigned unit)
{
	char error[768];
	int err;

	struct blk_pv *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->control_fd = -1;
	b->unit = unit;
	b->poll_ns = config->poll ? (uint64_t)config->poll_us * 1000u : 0;
	b->adaptive_poll = !config->poll;
	b->adaptive_window_ns = BLK_PV_ADAPTIVE_POLL_NS;
	b->tsc_khz = vm->tsc_khz;
	err = disk_image_open(&b->disk, config, vm_clock_ns(vm), error, sizeof(error));
	if (err) {
		kapsel_error("%s", error);
		free(b);
		return err;
	}
	b->disk_open = true;
	/* cache=none: pages of the image left in the host page cache (by a
	 * buffered writer before us) make io_uring refuse the non-blocking
	 * O_DIRECT write to them (it would have to invalidate them) and hand
	 * the write to an io-wq worker, where writes to one file queue one
	 * behind the other.  Drop them once (dirty ones are written back). */
	if (b->disk.direct && !b->disk.overlay) {
		if (fdatasync(b->disk.fd) == 0)
			posix_fadvise(b->disk.fd, 0, 0, POSIX_FADV_DONTNEED);
	}
	b->dev.ops = &blk_pv_ops;
	b->dev.priv = b;
	b->dev.desc.type = KAPSEL_DEV_BLOCK_PV;
	b->dev.desc.flags = config->readonly ? KAPSEL_DEVICE_FLAG_READONLY : 0;
	b->dev.desc.unit = (uint16_t)unit;
	b->dev.desc.capacity_sectors = b->disk.capacity_sectors;
	err = vm_add_device(vm, &b->dev);
	if (err) {
		kapsel_error("cannot attach disk %u ('%s'): %s", unit, config->path,
			     err == -ENOSPC ? "too many devices (at most 16)" : strerror(-err));
		disk_image_close(&b->disk);
		free(b);
		return err;
	}
	/* From here on vm_destroy calls blk_pv_destroy, which undoes the rest. */
	err = vm_add_doorbell(vm, &b->dev);
	if (err) {
		kapsel_error("disk %u ('%s'): cannot create its doorbell: %s", unit, config->path,
			     strerror(-err));
		return err;
	}
	/* io_uring reads the doorbell eventfd: blocking mode lets it wait. */
	int flags = fcntl(b->dev.doorbell_fd, F_GETFL);
	if (flags < 0 || fcntl(b->dev.doorbell_fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
		return -errno;
	b->control_fd = eventfd(0, EFD_CLOEXEC);
	if (b->control_fd < 0)
		return -errno;
	pthread_mutex_init(&b->control.lock, NULL);
	pthread_cond_init(&b->control.done, NULL);
	b->control_ready = true;

	b->slots = calloc(BLK_PV_SLOTS, sizeof(*b->slots));
	b->zero_buffer = aligned_alloc(4096, BLK_PV_ZERO_CHUNK_BYTES);
	if (!b->slots || !b->zero_buffer)
		return -ENOMEM;
	memset(b->zero_buffer, 0, BLK_PV_ZERO_CHUNK_BYTES);
	for (unsigned i = BLK_PV_SLOTS; i-- > 0;)
		slot_free(b, &b->slots[i]);
	blk_pv_measure_tsc_offset(b);
	err = blk_pv_start_uring(b);
	if (err)
		return err;

	/* Signals are for the vCPU and main threads, not this one. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&b->thread, NULL, blk_pv_thread_main, b);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		kapsel_error("disk %u ('%s'): cannot start its I/O thread: %s", unit, config->path,
			     strerror(err));
		return -err;
	}
	b->thread_started = true;
	char name[16];
	snprintf(name, sizeof(name), "kapsel-blk%u", unit);
	pthread_setname_np(b->thread, name);
	kapsel_debug("disk %u: PV block device %u on '%s', %llu sectors%s%s", unit,
		     b->dev.desc.index, config->path, (unsigned long long)b->disk.capacity_sectors,
		     config->readonly ? ", read-only" : "",
		     config->cache == VM_DISK_CACHE_NONE ? ", O_DIRECT" : "");
	return 0;
}
