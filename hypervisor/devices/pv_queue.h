/* One ring of a PV device as its backend serves it: set up, take requests, publish answers, save and restore (no KVM, no threads). */
#ifndef KAPSEL_PV_QUEUE_H
#define KAPSEL_PV_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/guest_memory.h"
#include "devices/ring_backend.h"
#include "kapsel/abi.h"

/*
 * A PV device has one queue per ring the guest sets up (DEVICE_SETUP with
 * setup->queue).  The queue knows the slot sizes of its protocol, the ring
 * it serves (if any) and where the guest put it, which is what a state
 * record needs.  All calls on one queue come from one thread at a time
 * (the thread that serves it: a device's I/O thread, or the vCPU thread
 * for a device served in the exit of its kick).
 */
struct pv_queue {
	uint32_t request_bytes; /* the protocol's slot sizes */
	uint32_t response_bytes;
	bool active;	    /* a ring is served */
	bool written;	    /* responses put since the last publish */
	bool broken_logged; /* the guest broke the ring and we said so */
	uint64_t ring_gpa;  /* where the served ring is, 0 = none */
	uint32_t ring_pages;
	struct ring_backend ring;
};

/* Where a saved ring was and how far it got: the part of a device's state
 * record that describes one queue.  Saved quiesced, so req_cons ==
 * rsp_prod (every request taken was answered and published). */
struct pv_queue_state {
	uint64_t ring_gpa; /* 0: the guest had not set the ring up */
	uint32_t ring_pages;
	uint32_t order;
	uint32_t req_cons;
	uint32_t rsp_prod;
	uint32_t broken; /* 0 or 1 */
	uint32_t bad_req_prod;
};

/* An empty queue (no ring) for a protocol with these slot sizes. */
void pv_queue_init(struct pv_queue *q, uint32_t request_bytes, uint32_t response_bytes);

/*
 * Map and validate the ring a guest's DEVICE_SETUP names (ring_backend_map
 * with q's slot sizes) into *ring, without serving it yet.  Does not touch
 * q, so it may run on another thread than the one serving q.  Returns 0,
 * -KAPSEL_EFAULT or -KAPSEL_EINVAL (then *ring is unchanged).
 */
int pv_queue_map(const struct pv_queue *q, const struct guest_memory *mem, uint64_t ring_gpa,
		 uint32_t ring_pages, struct ring_backend *ring);

/* Map the ring of setup and serve it from now on, replacing an earlier
 * one: for a queue served on the thread that handles DEVICE_SETUP (a
 * device served in the exit of its kick).  Returns 0 or a negative
 * KAPSEL_E* errno for the guest (then nothing changes). */
int pv_queue_setup(struct pv_queue *q, const struct guest_memory *mem,
		   const struct kapsel_device_setup *setup);

/* Serve ring (mapped by pv_queue_map or pv_queue_restore, at ring_gpa,
 * ring_pages pages) from now on, or none when ring is NULL (a reboot:
 * the old ring's memory belongs to the next boot). */
void pv_queue_install(struct pv_queue *q, const struct ring_backend *ring, uint64_t ring_gpa,
		      uint32_t ring_pages);

/*
 * Requests published and not taken yet (ring_backend_pending), 0 without a
 * ring.  Returns -1 once the guest broke the ring; *newly_broken (if not
 * NULL) is set true the first time, so the device logs it once.
 */
int pv_queue_pending(struct pv_queue *q, bool *newly_broken);

/* Copy the next request out (request_bytes bytes).  Precondition:
 * pv_queue_pending returned more than the requests taken since. */
void pv_queue_take(struct pv_queue *q, void *request);

/* Write one response (response_bytes bytes); the guest sees it at the
 * next pv_queue_publish.  Precondition: a request taken is unanswered. */
void pv_queue_respond(struct pv_queue *q, const void *response);

/* Publish the responses written; true if the guest asked to be notified
 * (its rsp_event lies in the published range).  No-op without a ring. */
bool pv_queue_publish(struct pv_queue *q);

/* About to sleep: ask for a kick at the next request and look again;
 * true if requests arrived meanwhile (do not sleep).  False without a
 * ring or on a broken one. */
bool pv_queue_prepare_sleep(struct pv_queue *q);

/* The ring now, for a state record.  Precondition: quiesced (every request
 * taken was answered and published); a queue without a ring gives zeroes. */
void pv_queue_save(const struct pv_queue *q, struct pv_queue_state *state);

/*
 * Map the ring of a saved state (untrusted: every field is checked
 * against the ring in guest memory, which is already loaded) into *ring,
 * at the saved index, with the saved broken flag.  Does not touch q (see
 * pv_queue_map); install the result with pv_queue_install.  record names
 * the record in messages ("PV block record").  Returns 0, or -EINVAL with
 * a message naming the bad field in error.  Precondition:
 * state->ring_gpa != 0 (a state without a ring needs no mapping).
 */
int pv_queue_restore(const struct pv_queue *q, const struct guest_memory *mem,
		     const struct pv_queue_state *state, const char *record,
		     struct ring_backend *ring, char *error, size_t error_len);

#endif
