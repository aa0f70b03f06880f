/* PV block requests: the checks a guest's request passes before the backend touches guest memory or the disk (no KVM, no threads). */
#include "devices/block/blk_pv_request.h"

#include <string.h>

#include "kapsel/abi.h"

static bool op_has_data(uint8_t op)
{
	return op == KAPSEL_BLK_OP_READ || op == KAPSEL_BLK_OP_WRITE ||
	       op == KAPSEL_BLK_OP_GET_INFO;
}

int blk_pv_request_check(const struct kapsel_blk_request *req, const struct guest_memory *mem,
			 struct disk_image *disk, struct blk_pv_transfer *out, bool *counted)
{
	*counted = true;
	if (req->op >= KAPSEL_BLK_OP_COUNT)
		return disk_policy_check(disk, (enum kapsel_blk_op)req->op, 0, 0);
	if (req->flags != 0 || req->segment_count > KAPSEL_BLK_MAX_SEGMENTS)
		goto malformed;
	if (op_has_data(req->op) ? req->segment_count == 0 : req->segment_count != 0)
		goto malformed;
	if (req->op == KAPSEL_BLK_OP_GET_INFO && req->segment_count != 1)
		goto malformed;

	uint64_t total = 0;
	for (unsigned i = 0; i < req->segment_count; i++) {
		const struct kapsel_blk_segment *seg = &req->segments[i];
		if (seg->gpa % KAPSEL_BLK_SECTOR_BYTES || seg->length_bytes == 0 ||
		    seg->length_bytes % KAPSEL_BLK_SECTOR_BYTES)
			goto malformed;
		void *host = guest_memory_translate_guest(mem, seg->gpa, seg->length_bytes);
		if (!host) {
			disk_stats_malformed(disk);
			return -KAPSEL_EFAULT;
		}
		out->iov[i].iov_base = host;
		out->iov[i].iov_len = seg->length_bytes;
		total += seg->length_bytes; /* at most 16 * 4 GiB: no overflow */
	}
	out->iov_count = req->segment_count;

	uint64_t sectors = req->sector_count;
	bool addressed = true;
	if (req->op == KAPSEL_BLK_OP_READ || req->op == KAPSEL_BLK_OP_WRITE) {
		sectors = total / KAPSEL_BLK_SECTOR_BYTES;
	} else if (req->op == KAPSEL_BLK_OP_GET_INFO || req->op == KAPSEL_BLK_OP_FLUSH) {
		sectors = 0;
		addressed = false; /* req->sector means nothing: not checked, not used */
	}
	int err = disk_policy_check(disk, (enum kapsel_blk_op)req->op, req->sector, sectors);
	if (err)
		return err;
	/* The policy put [sector, sector + sectors) inside the disk, whose
	 * byte size fits in 64 bits: neither product overflows. */
	out->offset_bytes = addressed ? req->sector * KAPSEL_BLK_SECTOR_BYTES : 0;
	out->remaining_bytes = sectors * KAPSEL_BLK_SECTOR_BYTES;
	out->length_bytes = req->op == KAPSEL_BLK_OP_GET_INFO ? 0 : out->remaining_bytes;
	*counted = false;
	return 0;

malformed:
	disk_stats_malformed(disk);
	return -KAPSEL_EINVAL;
}
