/* Host side of a Kapsel shared ring (ring.h): validate the guest's ring, copy requests out once, publish responses. */
#include "devices/ring_backend.h"

#include <string.h>

#include "kapsel/abi.h"

/* Validate and map; the producer indices are checked by the callers. */
static int map_checked(struct ring_backend *ring, struct kapsel_ring_header *header_copy,
		       const struct guest_memory *mem, uint64_t ring_gpa, uint32_t ring_pages,
		       uint32_t request_bytes, uint32_t response_bytes)
{
	const uint64_t page = KAPSEL_RING_PAGE_BYTES;

	if (ring_gpa % page || ring_pages == 0 || ring_pages > (1u << 20))
		return -KAPSEL_EINVAL;
	uint64_t ring_bytes = (uint64_t)ring_pages * page;
	uint8_t *base = guest_memory_translate_guest(mem, ring_gpa, ring_bytes);
	if (!base)
		return -KAPSEL_EFAULT;

	/* Read once: every check below looks at this private copy only. */
	struct kapsel_ring_header header;
	memcpy(&header, base, sizeof(header));

	if (header.magic != KAPSEL_RING_MAGIC || header.revision != KAPSEL_RING_REVISION)
		return -KAPSEL_EINVAL;
	if (header.order == 0 || header.order > KAPSEL_RING_MAX_ORDER)
		return -KAPSEL_EINVAL;
	if (header.request_bytes != request_bytes || header.response_bytes != response_bytes)
		return -KAPSEL_EINVAL;
	uint64_t slots = 1ull << header.order;
	uint64_t req_off = header.requests_offset, rsp_off = header.responses_offset;
	uint64_t req_len = slots * request_bytes, rsp_len = slots * response_bytes;
	if (req_off % page || rsp_off % page || req_off < page || rsp_off < page)
		return -KAPSEL_EINVAL;
	/* All 64-bit sums of 32-bit values: no overflow. */
	if (req_off + req_len > ring_bytes || rsp_off + rsp_len > ring_bytes)
		return -KAPSEL_EINVAL;
	if (req_off < rsp_off + rsp_len && rsp_off < req_off + req_len)
		return -KAPSEL_EINVAL; /* the two slot arrays overlap */
	*header_copy = header;
	*ring = (struct ring_backend){
		.header = (struct kapsel_ring_header *)base,
		.requests = base + req_off,
		.responses = base + rsp_off,
		.size = (uint32_t)slots,
		.request_bytes = request_bytes,
		.response_bytes = response_bytes,
		.req_cons = header.rsp_prod,
		.rsp_prod_pvt = header.rsp_prod,
		.rsp_published = header.rsp_prod,
		.mem = mem,
	};
	return 0;
}

int ring_backend_map(struct ring_backend *ring, const struct guest_memory *mem, uint64_t ring_gpa,
		     uint32_t ring_pages, uint32_t request_bytes, uint32_t response_bytes)
{
	struct ring_backend mapped;
	struct kapsel_ring_header header;
	int err = map_checked(&mapped, &header, mem, ring_gpa, ring_pages, request_bytes,
			      response_bytes);
	if (err)
		return err;
	/* The guest starts both producer indices at the same value; a ring
	 * handed over with requests already pending is refused. */
	if (header.req_prod != header.rsp_prod)
		return -KAPSEL_EINVAL;
	*ring = mapped;
	return 0;
}

int ring_backend_map_restored(struct ring_backend *ring, const struct guest_memory *mem,
			      uint64_t ring_gpa, uint32_t ring_pages, uint32_t request_bytes,
			      uint32_t response_bytes, uint32_t index)
{
	struct ring_backend mapped;
	struct kapsel_ring_header header;
	int err = map_checked(&mapped, &header, mem, ring_gpa, ring_pages, request_bytes,
			      response_bytes);
	if (err)
		return err;
	if (header.rsp_prod != index)
		return -KAPSEL_EINVAL;
	*ring = mapped;
	return 0;
}

int ring_backend_pending(struct ring_backend *ring)
{
	if (ring->broken)
		return -1;
	/* Acquire: the slots are read after the index that published them
	 * (pairs with the frontend's write barrier before storing req_prod). */
	uint32_t req_prod = __atomic_load_n(&ring->header->req_prod, __ATOMIC_ACQUIRE);
	uint32_t available = req_prod - ring->req_cons;
	/* A correct frontend has at most size requests outstanding, counted
	 * from the responses it can see: every request we took whose response
	 * is not published yet is still outstanding.  Counting from
	 * rsp_published (not rsp_prod_pvt) keeps the guest from overwriting
	 * unpublished responses, and bounds what one serving pass can take to
	 * a ring's worth, however fast the guest publishes (the caller
	 * publishes between passes).  req_prod behind req_cons shows up here
	 * as a huge count too. */
	uint32_t outstanding = ring->req_cons - ring->rsp_published;
	if (available > ring->size - outstanding) {
		ring->broken = true;
		ring->bad_req_prod = req_prod;
		return -1;
	}
	return (int)available;
}

void ring_backend_take_request(struct ring_backend *ring, void *copy)
{
	uint32_t slot = ring->req_cons & (ring->size - 1);
	/* The one and only read of this slot: the caller validates the copy. */
	memcpy(copy, ring->requests + (uint64_t)slot * ring->request_bytes, ring->request_bytes);
	ring->req_cons++;
}

void ring_backend_put_response(struct ring_backend *ring, const void *response)
{
	uint32_t slot = ring->rsp_prod_pvt & (ring->size - 1);
	uint8_t *target = ring->responses + (uint64_t)slot * ring->response_bytes;
	memcpy(target, response, ring->response_bytes);
	guest_memory_mark_written_host(ring->mem, target, ring->response_bytes);
	ring->rsp_prod_pvt++;
}

bool ring_backend_publish(struct ring_backend *ring)
{
	uint32_t old_prod = ring->rsp_published, new_prod = ring->rsp_prod_pvt;
	if (old_prod == new_prod || ring->broken)
		return false;
	/* Release: the response slots are visible before the index that
	 * publishes them (pairs with the frontend's acquire of rsp_prod). */
	__atomic_store_n(&ring->header->rsp_prod, new_prod, __ATOMIC_RELEASE);
	guest_memory_mark_written_host(ring->mem, ring->header, sizeof(*ring->header));
	ring->rsp_published = new_prod;
	/* Full barrier: our store of rsp_prod must be visible before we read
	 * rsp_event.  The frontend does the mirror image (store rsp_event,
	 * full barrier, re-read rsp_prod), so either it sees our responses or
	 * we see its new rsp_event; never neither. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	uint32_t event = __atomic_load_n(&ring->header->rsp_event, __ATOMIC_RELAXED);
	return kapsel_ring_need_notify(event, old_prod, new_prod);
}

bool ring_backend_prepare_sleep(struct ring_backend *ring)
{
	if (ring->broken)
		return false;
	__atomic_store_n(&ring->header->req_event, ring->req_cons + 1, __ATOMIC_RELAXED);
	guest_memory_mark_written_host(ring->mem, ring->header, sizeof(*ring->header));
	/* Full barrier: req_event must be visible before we re-read req_prod.
	 * Pairs with the frontend's store req_prod, full barrier, load
	 * req_event: a request published before it saw our req_event is seen
	 * by the load below, any later one gets a kick. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return __atomic_load_n(&ring->header->req_prod, __ATOMIC_ACQUIRE) != ring->req_cons;
}

void ring_backend_set_req_event(struct ring_backend *ring, uint32_t value)
{
	__atomic_store_n(&ring->header->req_event, value, __ATOMIC_RELAXED);
	guest_memory_mark_written_host(ring->mem, ring->header, sizeof(*ring->header));
}
