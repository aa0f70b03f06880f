/* Guest (frontend) side of a Kapsel shared ring: fill request slots, publish them, consume responses. */
#include "kapsel_guest/ring.h"

static uint32_t slot_pages(uint32_t order, uint32_t slot_bytes)
{
	uint64_t bytes = ((uint64_t)1 << order) * slot_bytes;
	return (uint32_t)((bytes + KAPSEL_RING_PAGE_BYTES - 1) / KAPSEL_RING_PAGE_BYTES);
}

uint32_t kg_ring_pages(uint32_t order, uint32_t request_bytes, uint32_t response_bytes)
{
	return (uint32_t)(kapsel_ring_bytes(order, request_bytes, response_bytes) /
			  KAPSEL_RING_PAGE_BYTES);
}

void kg_ring_init(struct kg_ring *ring, void *memory, uint32_t order, uint32_t request_bytes,
		  uint32_t response_bytes, uint32_t start_index)
{
	uint8_t *base = memory;
	uint32_t requests_offset = KAPSEL_RING_PAGE_BYTES;
	uint32_t responses_offset =
		requests_offset + slot_pages(order, request_bytes) * KAPSEL_RING_PAGE_BYTES;
	struct kapsel_ring_header *h = memory;

	__builtin_memset(h, 0, sizeof(*h));
	h->magic = KAPSEL_RING_MAGIC;
	h->revision = KAPSEL_RING_REVISION;
	h->order = order;
	h->request_bytes = (uint16_t)request_bytes;
	h->response_bytes = (uint16_t)response_bytes;
	h->requests_offset = requests_offset;
	h->responses_offset = responses_offset;
	h->req_prod = start_index;
	h->rsp_prod = start_index;
	/* Until either side sleeps: notify at the first response, kick at
	 * the first request. */
	h->rsp_event = start_index + 1;
	h->req_event = start_index + 1;

	*ring = (struct kg_ring){
		.header = h,
		.requests = base + requests_offset,
		.responses = base + responses_offset,
		.size = 1u << order,
		.request_bytes = request_bytes,
		.response_bytes = response_bytes,
		.req_prod_pvt = start_index,
		.req_published = start_index,
		.rsp_cons = start_index,
	};
	/* The header is complete before anyone is told where it is. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void *kg_ring_next_request(struct kg_ring *ring)
{
	if (kg_ring_outstanding(ring) >= ring->size)
		return 0;
	uint32_t slot = ring->req_prod_pvt & (ring->size - 1);
	return ring->requests + (uint64_t)slot * ring->request_bytes;
}

bool kg_ring_publish(struct kg_ring *ring)
{
	uint32_t old_prod = ring->req_published, new_prod = ring->req_prod_pvt;
	if (old_prod == new_prod)
		return false;
	/* Release: the request slots are visible before the index that
	 * publishes them (pairs with the backend's acquire of req_prod). */
	__atomic_store_n(&ring->header->req_prod, new_prod, __ATOMIC_RELEASE);
	ring->req_published = new_prod;
	/* Full barrier: req_prod must be visible before we read req_event.
	 * The backend stores req_event, fences, then re-reads req_prod: one
	 * of the two sides always sees the other's store. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	uint32_t event = __atomic_load_n(&ring->header->req_event, __ATOMIC_RELAXED);
	return kapsel_ring_need_notify(event, old_prod, new_prod);
}

const void *kg_ring_peek_response(struct kg_ring *ring)
{
	/* Acquire: read the slot only after the index that published it. */
	uint32_t rsp_prod = __atomic_load_n(&ring->header->rsp_prod, __ATOMIC_ACQUIRE);
	if (rsp_prod == ring->rsp_cons)
		return 0;
	uint32_t slot = ring->rsp_cons & (ring->size - 1);
	return ring->responses + (uint64_t)slot * ring->response_bytes;
}

bool kg_ring_prepare_sleep(struct kg_ring *ring)
{
	return kg_ring_prepare_sleep_for(ring, 1);
}

bool kg_ring_prepare_sleep_for(struct kg_ring *ring, uint32_t count)
{
	/* The backend notifies when a publish moves rsp_prod across
	 * rsp_event (kapsel_ring_need_notify), whatever the distance. */
	__atomic_store_n(&ring->header->rsp_event, ring->rsp_cons + count, __ATOMIC_RELAXED);
	/* Full barrier: rsp_event must be visible before we re-read rsp_prod
	 * (pairs with the backend's store rsp_prod, fence, load rsp_event):
	 * either we see the count-th response here or the backend sees our
	 * rsp_event when it publishes it. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return kg_ring_responses_ready(ring) >= count;
}
