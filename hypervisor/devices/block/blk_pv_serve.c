/* PV block device, requests: take them from the ring (copied once), check them, apply rate limits, start them on the engine, answer them. */
#include <errno.h>
#include <string.h>
#include <x86intrin.h>

#include "core/log.h"
#include "core/vm.h"
#include "devices/block/blk_pv.h"
#include "devices/block/blk_pv_request.h"

uint64_t blk_pv_guest_tsc_now(struct blk_pv *b)
{
	return __rdtsc() + (uint64_t)__atomic_load_n(&b->tsc_offset, __ATOMIC_RELAXED);
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

void blk_pv_slot_free(struct blk_pv *b, struct blk_pv_slot *slot)
{
	slot->next_free = b->free_slots;
	b->free_slots = slot;
}

/* Answer slot's request with status, count it, and free the slot.
 * counted: the denial was already counted by the policy functions. */
static void blk_pv_respond(struct blk_pv *b, struct blk_pv_slot *slot, int status, bool counted)
{
	uint64_t complete_tsc = blk_pv_guest_tsc_now(b);
	/* Only the ring the request came from; during a switch the replaced
	 * rings are inactive and their requests go unanswered. */
	struct pv_queue *queue = &b->queues[slot->queue];
	if (queue->active && !queue->ring.broken) {
		struct kapsel_blk_response rsp = {
			.id = slot->id,
			.status = status,
			.submit_tsc = slot->submit_tsc,
			.pickup_tsc = slot->pickup_tsc,
			.complete_tsc = complete_tsc,
		};
		pv_queue_respond(queue, &rsp);
		__atomic_fetch_add(&b->queue_requests[slot->queue], 1, __ATOMIC_RELAXED);
	}
	if (!counted)
		disk_stats_complete(&b->disk, (enum kapsel_blk_op)slot->op, slot->length_bytes,
				    status, tsc_delta_ns(b, slot->pickup_tsc, complete_tsc));
	blk_pv_slot_free(b, slot);
}

/* ---- Completions ----------------------------------------------------------- */

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

/* A read into guest RAM finished (or failed, perhaps halfway): mark the
 * buffers it had left, for a pre-copy.  Before slot_advance moves them. */
static void mark_read_buffers(struct blk_pv *b, const struct blk_pv_slot *slot)
{
	for (unsigned i = 0; i < slot->iov_count; i++) {
		const struct iovec *v = &slot->iov[slot->iov_first + i];
		guest_memory_mark_written_host(&b->pv.dev.vm->mem, v->iov_base, v->iov_len);
	}
}

void blk_pv_io_done(struct blk_pv *b, struct blk_pv_slot *slot, int res)
{
	int status = 0;
	if (slot->op == KAPSEL_BLK_OP_READ)
		mark_read_buffers(b, slot);
	if (res < 0) {
		if (slot->op == KAPSEL_BLK_OP_DISCARD && (res == -EOPNOTSUPP || res == -ENOTTY)) {
			res = 0; /* discard is a hint: nothing punched is fine */
		} else if (slot->op == KAPSEL_BLK_OP_WRITE_ZEROES && !slot->zero_fill &&
			   (res == -EOPNOTSUPP || res == -EINVAL || res == -ENOTTY)) {
			b->zero_range_unsupported = true;
			slot->zero_fill = true;
			if (blk_pv_engine(b)->submit(b, slot))
				return;
			res = -EIO;
		}
		if (res < 0) {
			status = host_errno_to_status(-res);
			if (!b->io_error_logged) {
				b->io_error_logged = true;
				kapsel_guest_warn(
					&b->pv.dev.vm->guest_log,
					"disk %u ('%s'): host I/O failed: %s; the guest got error %d",
					b->pv.unit, b->disk.path, strerror(-res), status);
			}
		}
	} else if (slot->op == KAPSEL_BLK_OP_READ || slot->op == KAPSEL_BLK_OP_WRITE ||
		   (slot->op == KAPSEL_BLK_OP_WRITE_ZEROES && slot->zero_fill)) {
		if (res == 0 && slot->remaining_bytes) {
			status = -KAPSEL_EIO; /* the image shrank under us */
		} else if ((uint64_t)res < slot->remaining_bytes) {
			slot_advance(slot, (uint64_t)res);
			if (blk_pv_engine(b)->submit(b, slot))
				return;
			status = -KAPSEL_EIO;
		}
	}
	if (!b->queues[slot->queue].active)
		blk_pv_slot_free(b, slot); /* the old ring's: nobody to answer */
	else
		blk_pv_respond(b, slot, status, false);
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
	int err = blk_pv_request_check(req, &b->pv.dev.vm->mem, &b->disk, &transfer, counted);
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
	guest_memory_mark_written_host(&b->pv.dev.vm->mem, slot->iov[0].iov_base, sizeof(info));
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
		uint64_t now = vm_clock_ns(b->pv.dev.vm);
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
	if (!blk_pv_engine(b)->submit(b, slot))
		blk_pv_respond(b, slot, -KAPSEL_EIO, false);
	return true;
}

void blk_pv_ring_broken(struct pv_device *pv, unsigned queue)
{
	struct blk_pv *b = blk_pv_of(pv);
	const struct ring_backend *ring = &b->queues[queue].ring;
	kapsel_guest_warn(&pv->dev.vm->guest_log,
			  "disk %u ('%s') queue %u: the guest published an impossible request index "
			  "(req_prod %u with %u taken and %u answered in a ring of %u); "
			  "this ring is stopped, the VM keeps running (a new DEVICE_SETUP restarts it)",
			  pv->unit, b->disk.path, queue, ring->bad_req_prod, ring->req_cons,
			  ring->rsp_prod_pvt, ring->size);
}

unsigned blk_pv_in_flight(struct pv_device *pv)
{
	struct blk_pv *b = blk_pv_of(pv);
	return b->io_in_flight + (b->throttled ? 1u : 0u);
}

void blk_pv_ring_replaced(struct pv_device *pv, unsigned queue)
{
	struct blk_pv *b = blk_pv_of(pv);
	if (b->throttled && b->throttled->queue == queue) {
		blk_pv_slot_free(b, b->throttled);
		b->throttled = NULL;
	}
}

/* Take and start the requests pending on queue q now.  Returns 1 if any
 * was taken, 0 if none, -1 if one was parked for rate-limit tokens. */
static int blk_pv_take_queue(struct blk_pv *b, unsigned q)
{
	if (!b->queues[q].active)
		return 0;
	int pending = pv_device_pending(&b->pv, q);
	if (pending <= 0)
		return 0;
	for (int i = 0; i < pending; i++) {
		/* A slot per ring entry in flight: pending never exceeds the
		 * free ones for one ring; several rings share the pool, so a
		 * full pool leaves the rest for the next pass. */
		struct blk_pv_slot *slot = slot_alloc(b);
		if (!slot)
			return i > 0 ? 1 : 0;
		struct kapsel_blk_request req;
		pv_queue_take(&b->queues[q], &req);
		if (b->idle_since_ns)
			blk_pv_end_idle(b);
		slot->id = req.id;
		slot->queue = (uint8_t)q;
		slot->submit_tsc = req.submit_tsc;
		slot->pickup_tsc = blk_pv_guest_tsc_now(b);
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
			return -1;
		}
	}
	return 1;
}

/* Take and start requests from the ring.  Returns true if any was taken. */
static bool blk_pv_take_requests(struct blk_pv *b)
{
	bool progress = false;
	if (b->throttled) {
		/* A save or migration (quiesce) waits for no tokens: the parked
		 * request goes now, unlimited, or a guest with a large request
		 * on a slow limit could hold up the VM's save for hours. */
		if (!b->pv.quiescing && vm_clock_ns(b->pv.dev.vm) < b->throttled_until_ns)
			return false;
		struct blk_pv_slot *slot = b->throttled;
		b->throttled = NULL;
		if (!blk_pv_start(b, slot, !b->pv.quiescing))
			return false;
		progress = true;
	}
	if (b->pv.switching || b->pv.quiescing)
		return progress;
	/* Round robin: a batch from each queue in turn, until all are empty. */
	for (;;) {
		bool took = false;
		for (unsigned q = 0; q < b->pv.queue_count; q++) {
			int r = blk_pv_take_queue(b, q);
			if (r < 0)
				return true; /* parked: the rest waits behind it */
			took |= r > 0;
		}
		if (!took)
			return progress;
		progress = true;
	}
}

bool blk_pv_serve(struct pv_device *pv)
{
	struct blk_pv *b = blk_pv_of(pv);
	bool progress = blk_pv_take_requests(b);
	blk_pv_submit_queued(b); /* once for the whole batch */
	return progress;
}
