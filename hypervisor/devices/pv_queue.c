/* One ring of a PV device as its backend serves it: set up, take requests, publish answers, save and restore (no KVM, no threads). */
#include "devices/pv_queue.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void pv_queue_init(struct pv_queue *q, uint32_t request_bytes, uint32_t response_bytes)
{
	memset(q, 0, sizeof(*q));
	q->request_bytes = request_bytes;
	q->response_bytes = response_bytes;
}

int pv_queue_map(const struct pv_queue *q, const struct guest_memory *mem, uint64_t ring_gpa,
		 uint32_t ring_pages, struct ring_backend *ring)
{
	return ring_backend_map(ring, mem, ring_gpa, ring_pages, q->request_bytes,
				q->response_bytes);
}

void pv_queue_install(struct pv_queue *q, const struct ring_backend *ring, uint64_t ring_gpa,
		      uint32_t ring_pages)
{
	q->active = ring != NULL;
	q->written = false;
	if (ring) {
		q->ring = *ring;
		q->ring_gpa = ring_gpa;
		q->ring_pages = ring_pages;
		/* A restored broken ring was reported before the save. */
		q->broken_logged = ring->broken;
	} else {
		q->ring_gpa = 0;
		q->ring_pages = 0;
		q->broken_logged = false;
	}
}

int pv_queue_setup(struct pv_queue *q, const struct guest_memory *mem,
		   const struct kapsel_device_setup *setup)
{
	struct ring_backend ring;
	int err = pv_queue_map(q, mem, setup->ring_gpa, setup->ring_pages, &ring);
	if (err)
		return err;
	pv_queue_install(q, &ring, setup->ring_gpa, setup->ring_pages);
	return 0;
}

int pv_queue_pending(struct pv_queue *q, bool *newly_broken)
{
	if (newly_broken)
		*newly_broken = false;
	if (!q->active)
		return 0;
	int pending = ring_backend_pending(&q->ring);
	if (pending < 0 && !q->broken_logged) {
		q->broken_logged = true;
		if (newly_broken)
			*newly_broken = true;
	}
	return pending;
}

void pv_queue_take(struct pv_queue *q, void *request)
{
	ring_backend_take_request(&q->ring, request);
}

void pv_queue_respond(struct pv_queue *q, const void *response)
{
	ring_backend_put_response(&q->ring, response);
	q->written = true;
}

bool pv_queue_publish(struct pv_queue *q)
{
	q->written = false;
	if (!q->active)
		return false;
	return ring_backend_publish(&q->ring);
}

bool pv_queue_prepare_sleep(struct pv_queue *q)
{
	return q->active && ring_backend_prepare_sleep(&q->ring);
}

void pv_queue_save(const struct pv_queue *q, struct pv_queue_state *state)
{
	memset(state, 0, sizeof(*state));
	if (!q->active || !q->ring_gpa)
		return;
	state->ring_gpa = q->ring_gpa;
	state->ring_pages = q->ring_pages;
	state->order = (uint32_t)__builtin_ctz(q->ring.size);
	state->req_cons = q->ring.req_cons;
	state->rsp_prod = q->ring.rsp_published;
	state->broken = q->ring.broken;
	state->bad_req_prod = q->ring.bad_req_prod;
}

int pv_queue_restore(const struct pv_queue *q, const struct guest_memory *mem,
		     const struct pv_queue_state *state, const char *record,
		     struct ring_backend *ring, char *error, size_t error_len)
{
	if (state->broken > 1) {
		snprintf(error, error_len, "%s: broken is %u, expected 0 or 1", record,
			 state->broken);
		return -EINVAL;
	}
	/* Saved quiesced: every request taken was answered and published. */
	if (state->req_cons != state->rsp_prod) {
		snprintf(error, error_len,
			 "%s: the saved ring indices (taken %u, answered %u) differ; a device is saved only when it answered every request it took",
			 record, state->req_cons, state->rsp_prod);
		return -EINVAL;
	}
	/* Requests the guest published while the device was quiesced are
	 * still in the ring (req_prod ahead of rsp_prod): map_restored allows
	 * that, as long as rsp_prod in memory is where the save says. */
	struct ring_backend mapped;
	int err = ring_backend_map_restored(&mapped, mem, state->ring_gpa, state->ring_pages,
					    q->request_bytes, q->response_bytes, state->rsp_prod);
	if (err) {
		snprintf(error, error_len,
			 "%s: the saved ring at %#llx (%u pages, index %u) is not a valid ring in the saved memory",
			 record, (unsigned long long)state->ring_gpa, state->ring_pages,
			 state->rsp_prod);
		return -EINVAL;
	}
	uint32_t order = (uint32_t)__builtin_ctz(mapped.size);
	if (order != state->order) {
		snprintf(error, error_len, "%s: the saved ring has order %u, the ring in memory %u",
			 record, state->order, order);
		return -EINVAL;
	}
	mapped.broken = state->broken != 0;
	mapped.bad_req_prod = state->bad_req_prod;
	*ring = mapped;
	return 0;
}
