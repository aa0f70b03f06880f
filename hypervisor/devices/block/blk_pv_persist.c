/* PV block device, its state record (VM_STATE_DEV_BLOCK_PV): the ring, saved quiesced, and checked on load. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "devices/block/blk_pv.h"
#include "state/vm_state.h"

int blk_pv_save(struct kapsel_device *dev, struct vm_state_writer *out)
{
	struct blk_pv *b = dev->priv;
	/* Quiesced: the I/O thread leaves the ring alone until resume. */
	if (!pv_device_is_quiesced(&b->pv))
		return -EBUSY;
	struct pv_queue_state state;
	pv_queue_save(&b->queue, &state);
	struct vm_state_block_pv rec = {
		.ring_gpa = state.ring_gpa,
		.ring_pages = state.ring_pages,
		.order = state.order,
		.req_cons = state.req_cons,
		.rsp_prod = state.rsp_prod,
		.broken = state.broken,
		.bad_req_prod = state.bad_req_prod,
	};
	return vm_state_put(out, VM_STATE_DEV_BLOCK_PV, VM_STATE_RECORD_MANDATORY, &rec,
			    sizeof(rec));
}

int blk_pv_load(struct kapsel_device *dev, uint32_t type, const void *payload,
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
	const struct pv_queue_state state = {
		.ring_gpa = rec.ring_gpa,
		.ring_pages = rec.ring_pages,
		.order = rec.order,
		.req_cons = rec.req_cons,
		.rsp_prod = rec.rsp_prod,
		.broken = rec.broken,
		.bad_req_prod = rec.bad_req_prod,
	};
	blk_pv_measure_tsc_offset(b);
	return pv_device_restore_queue(&b->pv, 0, &state, "PV block record", error, error_len);
}
