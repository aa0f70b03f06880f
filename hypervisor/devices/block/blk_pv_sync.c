/* PV block device, the synchronous engine: a disk on a copy-on-write overlay moves its data through the disk layer on the I/O thread. */
#include <stdint.h>
#include <sys/types.h>

#include "devices/block/blk_pv.h"
#include "devices/block/disk_overlay.h"

/*
 * A disk on a copy-on-write overlay (a snapshot or clone; disk_overlay.h):
 * each block may live in another file, so the I/O goes through the disk
 * layer, synchronously on this thread, and is done when submit returns.
 * Nothing is ever in flight.
 */
static bool blk_pv_sync_submit(struct blk_pv *b, struct blk_pv_slot *slot)
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
	blk_pv_io_done(b, slot, res > INT32_MAX ? INT32_MAX : (int)res);
	return true;
}

const struct blk_pv_engine blk_pv_engine_sync = {
	.name = "synchronous (overlay)",
	.submit = blk_pv_sync_submit,
};
