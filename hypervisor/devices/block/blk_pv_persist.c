/* PV block device, its state records (VM_STATE_DEV_BLOCK_PV, one per queue): each ring, saved quiesced, and checked on load. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "devices/block/blk_pv.h"
#include "state/vm_state.h"

int blk_pv_save(struct kapsel_device *dev, struct vm_state_writer *out)
{
	struct blk_pv *b = dev->priv;
	/* Quiesced: the I/O thread leaves the rings alone until resume. */
	if (!pv_device_is_quiesced(&b->pv))
		return -EBUSY;
	for (unsigned q = 0; q < b->pv.queue_count; q++) {
		struct pv_queue_state state;
		pv_queue_save(&b->queues[q], &state);
		/* Queue 0 always (a restore of a VM whose guest set nothing up
		 * finds its record), the others when the guest set them up. */
		if (q > 0 && !state.ring_gpa)
			continue;
		struct vm_state_block_pv rec = {
			.ring_gpa = state.ring_gpa,
			.ring_pages = state.ring_pages,
			.order = state.order,
			.req_cons = state.req_cons,
			.rsp_prod = state.rsp_prod,
			.broken = state.broken,
			.bad_req_prod = state.bad_req_prod,
			.queue = q,
			.evtchn_port = q > 0 ? pv_device_queue_port(&b->pv, q) : 0,
		};
		int err = vm_state_put(out, VM_STATE_DEV_BLOCK_PV, VM_STATE_RECORD_MANDATORY, &rec,
				       sizeof(rec));
		if (err)
			return err;
	}
	return 0;
}

int blk_pv_record_parse(const void *payload, uint64_t length_bytes, unsigned queue_count,
			struct vm_state_block_pv *rec, char *error, size_t error_len)
{
	if (length_bytes != sizeof(*rec)) {
		snprintf(error, error_len, "PV block record is %llu bytes, expected %zu",
			 (unsigned long long)length_bytes, sizeof(*rec));
		return -EINVAL;
	}
	memcpy(rec, payload, sizeof(*rec));
	if (rec->queue >= queue_count) {
		snprintf(error, error_len,
			 "PV block record is for queue %u but this disk has %u queue%s; restore "
			 "with as many vCPUs as the saved VM, or set the disk's queues= "
			 "(<driver queues='N'/>) to at least %u",
			 rec->queue, queue_count, queue_count == 1 ? "" : "s", rec->queue + 1);
		return -EINVAL;
	}
	if (rec->queue > 0 && rec->evtchn_port != UINT32_MAX &&
	    rec->evtchn_port >= KAPSEL_EVTCHN_COUNT) {
		snprintf(error, error_len,
			 "PV block record for queue %u names event channel %u; channels are 0-%u",
			 rec->queue, rec->evtchn_port, KAPSEL_EVTCHN_COUNT - 1);
		return -EINVAL;
	}
	if (rec->queue > 0 && !rec->ring_gpa) {
		snprintf(error, error_len,
			 "PV block record for queue %u has no ring (only queue 0 is saved unset)",
			 rec->queue);
		return -EINVAL;
	}
	return 0;
}

int blk_pv_load(struct kapsel_device *dev, uint32_t type, const void *payload,
		uint64_t length_bytes, char *error, size_t error_len)
{
	struct blk_pv *b = dev->priv;
	struct vm_state_block_pv rec;
	if (type != VM_STATE_DEV_BLOCK_PV)
		return -ENOENT;
	int err = blk_pv_record_parse(payload, length_bytes, b->pv.queue_count, &rec, error,
				      error_len);
	if (err)
		return err;
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
	if (rec.queue > 0)
		pv_device_set_queue_port(&b->pv, rec.queue, rec.evtchn_port);
	return pv_device_restore_queue(&b->pv, rec.queue, &state, "PV block record", error,
				       error_len);
}
