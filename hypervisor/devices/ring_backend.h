/* Host side of a Kapsel shared ring (ring.h): validate the guest's ring, copy requests out once, publish responses. */
#ifndef KAPSEL_RING_BACKEND_H
#define KAPSEL_RING_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "core/guest_memory.h"
#include "kapsel/ring.h"

/*
 * One ring as the backend sees it.  Everything here is private to the
 * backend thread that serves the ring; the guest can only change what the
 * pointers point at, and every value read through them is read once and
 * checked before use.
 *
 * Index bookkeeping (all free-running uint32_t):
 *   req_cons      requests copied out so far
 *   rsp_prod_pvt  responses written into slots (published or not)
 *   rsp_published the value last stored to header->rsp_prod
 * Invariant: rsp_published <= rsp_prod_pvt <= req_cons (modulo 2^32).
 */
struct ring_backend {
	struct kapsel_ring_header *header; /* host view of the guest's header */
	uint8_t *requests;		   /* host view of request slot 0 */
	uint8_t *responses;		   /* host view of response slot 0 */
	uint32_t size;			   /* slots, a power of two */
	uint32_t request_bytes;
	uint32_t response_bytes;
	uint32_t req_cons;
	uint32_t rsp_prod_pvt;
	uint32_t rsp_published;
	bool broken;	       /* the guest broke the protocol: serve no more */
	uint32_t bad_req_prod; /* the impossible req_prod that broke it */
	/* Guest RAM, for marking what the backend writes (responses, the
	 * header's indices) for a pre-copy: guest_memory_mark_written. */
	const struct guest_memory *mem;
};

/*
 * Map and validate the ring whose header is at ring_gpa and which spans
 * ring_pages pages of guest RAM: magic, revision, 0 < order <=
 * KAPSEL_RING_MAX_ORDER, slot sizes equal to the protocol's
 * (request_bytes / response_bytes), page-aligned offsets whose slot arrays
 * lie inside the ring, do not overlap each other or the header page, and a
 * whole ring inside guest RAM.  The header is read once into a private
 * copy.  The backend starts at the guest's rsp_prod (the frontend sets
 * req_prod = rsp_prod = its start index before setup).
 * Returns 0, -KAPSEL_EFAULT (not inside guest RAM) or -KAPSEL_EINVAL
 * (anything else); ring is only written on success.
 */
int ring_backend_map(struct ring_backend *ring, const struct guest_memory *mem, uint64_t ring_gpa,
		     uint32_t ring_pages, uint32_t request_bytes, uint32_t response_bytes);

/*
 * As ring_backend_map, for a ring saved while the backend was quiesced at
 * index (every request taken was answered and published): the header must
 * say rsp_prod == index, and requests the guest published after it are
 * served as usual.  Returns 0, -KAPSEL_EFAULT or -KAPSEL_EINVAL.
 */
int ring_backend_map_restored(struct ring_backend *ring, const struct guest_memory *mem,
			      uint64_t ring_gpa, uint32_t ring_pages, uint32_t request_bytes,
			      uint32_t response_bytes, uint32_t index);

/*
 * Requests the guest has published that have not been copied out yet and
 * for which a response slot is guaranteed: at most size minus the requests
 * taken whose responses are not published yet, so calls without a
 * ring_backend_publish in between hand out at most size requests in all.
 * Returns that count, or -1 when req_prod is impossible (more than size
 * requests outstanding since the last published response, or moving
 * backwards): the ring is then marked broken and every later call returns
 * -1.  Precondition: ring mapped.
 */
int ring_backend_pending(struct ring_backend *ring);

/*
 * Copy the next request slot into copy (request_bytes bytes) and advance
 * req_cons.  Precondition: ring_backend_pending returned > 0 since the last
 * request taken (i.e. a request is available).
 */
void ring_backend_take_request(struct ring_backend *ring, void *copy);

/* Requests copied out whose response has not been written yet. */
static inline uint32_t ring_backend_in_flight(const struct ring_backend *ring)
{
	return ring->req_cons - ring->rsp_prod_pvt;
}

/*
 * Write response (response_bytes bytes) into the next response slot; not
 * visible to the guest until ring_backend_publish.  Precondition:
 * ring_backend_in_flight(ring) > 0 (each request gets one response).
 */
void ring_backend_put_response(struct ring_backend *ring, const void *response);

/*
 * Make all written responses visible (store rsp_prod) and return true if
 * the guest asked to be notified (its rsp_event lies in the published
 * range).  Cheap no-op returning false when nothing is new.
 */
bool ring_backend_publish(struct ring_backend *ring);

/*
 * About to sleep: ask for a kick at the next request (req_event =
 * req_cons + 1), then re-check.  Returns true if requests arrived in the
 * meantime (do not sleep; process them), false if it is safe to sleep.
 * A broken ring returns false (sleep; nothing more will be served).
 */
bool ring_backend_prepare_sleep(struct ring_backend *ring);

/* Set req_event to value: no kick is wanted before request value (a
 * backend that polls for a while takes its wake-up request back). */
void ring_backend_set_req_event(struct ring_backend *ring, uint32_t value);

/* True if the guest has published requests not yet taken (a cheap poll;
 * no validation, so follow up with ring_backend_pending). */
static inline bool ring_backend_has_new(const struct ring_backend *ring)
{
	return !ring->broken &&
	       __atomic_load_n(&ring->header->req_prod, __ATOMIC_ACQUIRE) != ring->req_cons;
}

#endif
