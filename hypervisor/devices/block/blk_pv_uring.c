/* PV block device, the I/O thread's io_uring: doorbell and control eventfd reads, completions, sleeping and draining, and the io_uring engine. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/falloc.h>
#include <string.h>

#include "core/log.h"
#include "core/vm.h"
#include "devices/block/blk_pv.h"

/*
 * One io_uring per device carries everything the I/O thread waits for:
 * reads of the doorbell and control eventfds (so a kick or a control
 * request ends io_uring_enter like a completion does) and, with the
 * io_uring engine, the disk I/O straight on guest pages.  A disk on an
 * overlay moves its data with the synchronous engine (blk_pv_sync.c) but
 * still sleeps here.
 */

int blk_pv_uring_start(struct blk_pv *b)
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
			     b->pv.unit, b->disk.path, strerror(-err));
		return err;
	}
	b->uring_ready = true;
	err = io_uring_register_files(&b->uring, &b->disk.fd, 1);
	if (err < 0) {
		kapsel_error("disk %u ('%s'): cannot register the image with io_uring: %s",
			     b->pv.unit, b->disk.path, strerror(-err));
		return err;
	}
	return 0;
}

void blk_pv_uring_stop(struct blk_pv *b)
{
	if (!b->uring_ready)
		return;
	io_uring_unregister_files(&b->uring);
	io_uring_queue_exit(&b->uring);
	b->uring_ready = false;
}

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

void blk_pv_submit_queued(struct blk_pv *b)
{
	if (!b->sqes_queued)
		return;
	io_uring_submit(&b->uring);
	b->sqes_queued = 0;
}

void blk_pv_arm_read(struct blk_pv *b, uint64_t tag)
{
	struct io_uring_sqe *sqe = blk_pv_get_sqe(b);
	if (!sqe)
		return;
	bool doorbell = tag == BLK_PV_TAG_DOORBELL;
	io_uring_prep_read(sqe, doorbell ? b->pv.dev.doorbell_fd : b->pv.control_fd,
			   doorbell ? &b->doorbell_value : &b->control_value, sizeof(uint64_t), 0);
	io_uring_sqe_set_data64(sqe, tag);
	if (doorbell)
		b->doorbell_armed = true;
	else
		b->control_armed = true;
}

/* ---- The io_uring engine ---------------------------------------------------- */

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

/* Queue the (next part of the) I/O for slot; it completes in blk_pv_reap.
 * Returns false if no SQE. */
static bool blk_pv_uring_submit(struct blk_pv *b, struct blk_pv_slot *slot)
{
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

const struct blk_pv_engine blk_pv_engine_uring = {
	.name = "io_uring",
	.submit = blk_pv_uring_submit,
};

/* ---- Completions, sleeping, draining ---------------------------------------- */

bool blk_pv_reap(struct pv_device *pv)
{
	struct blk_pv *b = blk_pv_of(pv);
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
					pv_device_count_kicks(pv, b->doorbell_value);
				if (!pv->stopping)
					blk_pv_arm_read(b, BLK_PV_TAG_DOORBELL);
			} else if (tag == BLK_PV_TAG_CONTROL) {
				b->control_armed = false;
				if (!pv->stopping)
					blk_pv_arm_read(b, BLK_PV_TAG_CONTROL);
			} else if (tag == BLK_PV_TAG_CANCEL) {
				/* nothing */
			} else {
				b->io_in_flight--;
				blk_pv_io_done(b, (struct blk_pv_slot *)(uintptr_t)tag, res);
			}
		}
		io_uring_cq_advance(&b->uring, n);
	}
	return progress;
}

void blk_pv_wait(struct pv_device *pv)
{
	struct blk_pv *b = blk_pv_of(pv);
	struct __kernel_timespec timeout;
	struct io_uring_cqe *cqe;
	if (b->throttled) {
		uint64_t now = vm_clock_ns(pv->dev.vm);
		uint64_t wait = b->throttled_until_ns > now ? b->throttled_until_ns - now : 0;
		timeout.tv_sec = (long long)(wait / 1000000000ull);
		timeout.tv_nsec = (long long)(wait % 1000000000ull);
		io_uring_submit_and_wait_timeout(&b->uring, &cqe, 1, &timeout, NULL);
	} else {
		int err = io_uring_submit_and_wait(&b->uring, 1);
		(void)err; /* EINTR or EBUSY: the loop looks again */
	}
	b->sqes_queued = 0;
}

void blk_pv_drain(struct pv_device *pv)
{
	struct blk_pv *b = blk_pv_of(pv);
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
		blk_pv_reap(pv);
	}
}
