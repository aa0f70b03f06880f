/* Guest (frontend) side of a Kapsel shared ring: fill request slots, publish them, consume responses. */
#ifndef KAPSEL_GUEST_RING_H
#define KAPSEL_GUEST_RING_H

/*
 * Several vCPUs: one producer and one consumer per ring; the caller
 * serializes them (kg_ring_pages is pure and safe anywhere).
 */

#include <stdbool.h>
#include <stdint.h>

#include "kapsel/ring.h"

/*
 * The frontend's private view of a ring (the shared part is the header and
 * the slot arrays in guest memory, see kapsel/ring.h).  Single-threaded:
 * one caller at a time per ring.  This file holds no guest-only code, so
 * host tests compile it too.
 *
 * Use:
 *   slot = kg_ring_next_request(r);   fill it;   kg_ring_push_request(r);
 *   ... more ...
 *   if (kg_ring_publish(r)) kick the backend;
 *   while ((rsp = kg_ring_peek_response(r))) { use it; kg_ring_consume_response(r); }
 *   before sleeping: if (!kg_ring_prepare_sleep(r)) sleep until notified;
 *   (or kg_ring_prepare_sleep_for(r, n): notified once n responses wait)
 */
struct kg_ring {
	struct kapsel_ring_header *header;
	uint8_t *requests;
	uint8_t *responses;
	uint32_t size;
	uint32_t request_bytes;
	uint32_t response_bytes;
	uint32_t req_prod_pvt;	/* requests filled, maybe not yet published */
	uint32_t req_published; /* last value stored to header->req_prod */
	uint32_t rsp_cons;	/* responses consumed */
};

/* Pages (4 KiB) a ring of 2^order slots with these slot sizes needs. */
uint32_t kg_ring_pages(uint32_t order, uint32_t request_bytes, uint32_t response_bytes);

/*
 * Lay a ring out in memory (at least kg_ring_pages(...) pages, page
 * aligned) and write its header: magic, revision, order, slot sizes,
 * offsets, and all four indices starting at start_index (0 normally;
 * tests start near UINT32_MAX to exercise wrap-around).  Precondition:
 * 0 < order <= KAPSEL_RING_MAX_ORDER.  Call before handing the ring to the
 * backend (DEVICE_SETUP).
 */
void kg_ring_init(struct kg_ring *ring, void *memory, uint32_t order, uint32_t request_bytes,
		  uint32_t response_bytes, uint32_t start_index);

/* Requests filled or published whose response has not been consumed. */
static inline uint32_t kg_ring_outstanding(const struct kg_ring *ring)
{
	return ring->req_prod_pvt - ring->rsp_cons;
}

/* The next free request slot, or NULL if size requests are outstanding.
 * The slot's old contents are stale; fill every field the protocol reads. */
void *kg_ring_next_request(struct kg_ring *ring);

/* Account the slot from kg_ring_next_request as filled (not yet visible). */
static inline void kg_ring_push_request(struct kg_ring *ring)
{
	ring->req_prod_pvt++;
}

/*
 * Publish every pushed request (store req_prod) and return true if the
 * backend asked to be kicked (its req_event lies in the published range).
 */
bool kg_ring_publish(struct kg_ring *ring);

/* The next response, or NULL if none has been published.  Copy out what
 * you need before kg_ring_consume_response. */
const void *kg_ring_peek_response(struct kg_ring *ring);

static inline void kg_ring_consume_response(struct kg_ring *ring)
{
	ring->rsp_cons++;
}

/* Responses published and not consumed yet. */
static inline uint32_t kg_ring_responses_ready(const struct kg_ring *ring)
{
	return __atomic_load_n(&ring->header->rsp_prod, __ATOMIC_ACQUIRE) - ring->rsp_cons;
}

/*
 * About to sleep waiting for responses: ask to be notified at the next one
 * (rsp_event = rsp_cons + 1) and re-check.  Returns true if responses are
 * there after all (do not sleep), false if it is safe to sleep.
 */
bool kg_ring_prepare_sleep(struct kg_ring *ring);

/*
 * As kg_ring_prepare_sleep, but ask to be notified only when count
 * responses are unconsumed (rsp_event = rsp_cons + count), those already
 * published included: a frontend with many requests outstanding is woken
 * once for a batch of completions instead of once for each.  Returns true
 * if count responses are there already (do not sleep).  Precondition:
 * 0 < count <= kg_ring_outstanding(ring), all of them published (else
 * the notification may never come).
 */
bool kg_ring_prepare_sleep_for(struct kg_ring *ring, uint32_t count);

#endif
