/* Kapsel shared ring: a single-producer/single-consumer request/response ring in guest memory. */
#ifndef KAPSEL_RING_H
#define KAPSEL_RING_H

/*
 * Layout (all offsets from the ring's page-aligned guest-physical base):
 *
 *   page 0            struct kapsel_ring_header
 *   requests_offset   (1 << order) request slots of request_bytes each
 *   responses_offset  (1 << order) response slots of response_bytes each
 *
 * Indices are free-running uint32_t counters; slot = index & (size - 1).
 * The frontend (guest) writes requests and the first cache line; the
 * backend (hypervisor) writes responses and the second cache line.  Each
 * side keeps its consumer index private.
 *
 * Memory ordering (both sides):
 *   producer: write slot(s); write barrier; store *_prod
 *   consumer: load *_prod; read barrier; read slot(s) (copy them out once)
 * Notification suppression with event indices:
 *   - A side that is about to sleep stores *_event = its consumer index + 1,
 *     issues a full barrier, then re-reads *_prod (to close the race with a
 *     producer that published in between).
 *   - A producer that moved *_prod from old to new notifies the other side
 *     only if (new - event) < (new - old), i.e. event lies in (old, new].
 *
 * The frontend may have at most (1 << order) requests outstanding (sent
 * and not yet answered).  A backend that sees req_prod - req_cons larger
 * than the ring size treats the ring as broken (a hostile or buggy guest).
 */

#include <stdint.h>

#define KAPSEL_RING_MAGIC 0x4b52494eu /* "KRIN" */
#define KAPSEL_RING_REVISION 1u
#define KAPSEL_RING_PAGE_BYTES 4096u
#define KAPSEL_RING_MAX_ORDER 10u /* at most 1024 slots */

struct kapsel_ring_header {
	/* Written by the frontend at setup, read-only afterwards. */
	uint32_t magic;
	uint16_t revision;
	uint16_t _pad0;
	uint32_t order;		   /* slots = 1 << order, 0 < order <= MAX */
	uint16_t request_bytes;	   /* size of one request slot */
	uint16_t response_bytes;   /* size of one response slot */
	uint32_t requests_offset;  /* page aligned, from the ring base */
	uint32_t responses_offset; /* page aligned, from the ring base */
	uint8_t _pad1[40];
	/* Cache line 1: written only by the frontend. */
	uint32_t req_prod;  /* requests published */
	uint32_t rsp_event; /* notify the frontend when rsp_prod reaches this */
	uint8_t _pad2[56];
	/* Cache line 2: written only by the backend. */
	uint32_t rsp_prod;  /* responses published */
	uint32_t req_event; /* kick the backend when req_prod reaches this */
	uint8_t _pad3[56];
};
_Static_assert(sizeof(struct kapsel_ring_header) == 192, "ring header layout");
_Static_assert(__builtin_offsetof(struct kapsel_ring_header, req_prod) == 64, "frontend line");
_Static_assert(__builtin_offsetof(struct kapsel_ring_header, rsp_prod) == 128, "backend line");

/* True if a producer that moved its index from old_prod to new_prod must
 * notify a consumer that asked to be woken at event. */
static inline int kapsel_ring_need_notify(uint32_t event, uint32_t old_prod, uint32_t new_prod)
{
	return (uint32_t)(new_prod - event) < (uint32_t)(new_prod - old_prod);
}

/* Bytes a ring of 2^order slots occupies, header page included. */
static inline uint64_t kapsel_ring_bytes(uint32_t order, uint32_t request_bytes,
					 uint32_t response_bytes)
{
	uint64_t slots = 1ull << order;
	uint64_t page = KAPSEL_RING_PAGE_BYTES;
	uint64_t req = (slots * request_bytes + page - 1) / page * page;
	uint64_t rsp = (slots * response_bytes + page - 1) / page * page;
	return page + req + rsp;
}

#endif /* KAPSEL_RING_H */
