/* PV entropy device model: request checks, rate limits, counters, ring serving and its state record (no KVM, no threads). */
#ifndef KAPSEL_RNG_PV_MODEL_H
#define KAPSEL_RNG_PV_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config/config.h"
#include "devices/rate_limit.h"
#include "core/guest_memory.h"
#include "kapsel/abi.h"
#include "kapsel/rng.h"
#include "devices/pv_queue.h"

/*
 * Everything the entropy device does that can be tested without KVM:
 * dev_rng_pv.c is only the glue to the PV device skeleton (pv_device.h),
 * which sets the queue up (pv_queue_setup), resets it, rings the
 * doorbell and signals the event channel.  One thread at a time calls
 * the functions below (the vCPU thread); only the counters are read by
 * other threads, with atomic loads.
 */

/* Write length_bytes random bytes to buffer; 0 or -KAPSEL_EIO. */
typedef int (*rng_pv_fill_fn)(void *opaque, void *buffer, uint32_t length_bytes);

struct rng_pv_stats {
	uint64_t requests;  /* answered with status 0 */
	uint64_t bytes;	    /* written into guest buffers */
	uint64_t errors;    /* answered with an error other than EAGAIN, or a broken ring */
	uint64_t throttled; /* answered -EAGAIN by the rate limit */
};

struct rng_pv_model {
	const struct guest_memory *mem;
	rng_pv_fill_fn fill;
	void *fill_opaque;
	struct token_bucket requests_bucket;
	struct token_bucket bytes_bucket;
	struct pv_queue queue;	   /* the ring, once the guest set it up (this boot) */
	struct rng_pv_stats stats; /* written with atomic adds */
};

/* State record VM_STATE_DEV_RNG_PV (vm_state.h): the ring, saved while
 * no request is in flight (every request taken was answered). */
struct vm_state_rng_pv {
	uint64_t ring_gpa; /* 0: the guest has not set the ring up */
	uint32_t ring_pages;
	uint32_t order;
	uint32_t index;	 /* requests taken == responses published */
	uint32_t broken; /* 1: the guest broke the ring protocol */
	uint32_t bad_req_prod;
	uint32_t _pad;
	uint64_t _reserved[2];
};
_Static_assert(sizeof(struct vm_state_rng_pv) == 48, "rng pv record layout");

/*
 * Set up a model serving guest RAM mem with the limits of config, filling
 * buffers with fill(opaque, ...).  No ring yet.  Preconditions: mem
 * outlives the model; now_ns is the clock later calls use.
 */
void rng_pv_model_init(struct rng_pv_model *m, const struct guest_memory *mem,
		       const struct vm_rng_config *config, uint64_t now_ns, rng_pv_fill_fn fill,
		       void *opaque);

/*
 * Check req, a private copy of one request: flags and _reserved 0, length
 * 1..KAPSEL_RNG_REQUEST_MAX_BYTES, buffer inside guest RAM above the
 * hypervisor's tables.  Returns 0 with *buffer the host view of the
 * whole buffer, or -KAPSEL_EINVAL / -KAPSEL_EFAULT.
 */
int rng_pv_check_request(const struct guest_memory *mem, const struct kapsel_rng_request *req,
			 void **buffer);

/* The answer to one request copy at now_ns: checks, rate limit, fill,
 * counters.  Writes only into the checked buffer. */
void rng_pv_answer(struct rng_pv_model *m, const struct kapsel_rng_request *req, uint64_t now_ns,
		   struct kapsel_rng_response *rsp);

/*
 * A kick: answer every request published, publish the answers.  Returns
 * true if the guest asked to be notified.  A ring the guest broke is
 * served no more (logged once, counted as an error).
 */
bool rng_pv_model_serve(struct rng_pv_model *m, uint64_t now_ns);

/* The record describing the ring now.  Precondition: no serve running. */
void rng_pv_model_save(const struct rng_pv_model *m, struct vm_state_rng_pv *rec);

/*
 * Take the ring of a saved record (untrusted: every field is checked
 * against the ring in guest memory, which is already loaded).  Returns 0,
 * or -EINVAL with a message naming the bad field in error.
 */
int rng_pv_model_load(struct rng_pv_model *m, const struct vm_state_rng_pv *rec, char *error,
		      size_t error_len);

/* A consistent-enough copy of the counters (each read atomically). */
void rng_pv_model_stats(const struct rng_pv_model *m, struct rng_pv_stats *out);

/* Print the counters and limits, "  name: value" per line, with the
 * skeleton's kicks and notifications and the device's exits. */
void rng_pv_model_print_stats(const struct rng_pv_model *m, uint64_t kicks, uint64_t notifications,
			      uint64_t exits, FILE *out);

#endif
