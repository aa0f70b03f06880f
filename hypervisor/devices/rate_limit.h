/* Token-bucket rate limiting shared by the devices (block, net, entropy): one bucket per counted unit. */
#ifndef KAPSEL_RATE_LIMIT_H
#define KAPSEL_RATE_LIMIT_H

#include <stdint.h>

#include "config/config.h" /* struct vm_rate_limit */

/* Token bucket (Firecracker-style): capacity `burst`, refilled at
 * rate_per_second.  A zero rate means unlimited. */
struct token_bucket {
	uint64_t rate_per_second;
	uint64_t burst;
	uint64_t tokens;
	uint64_t debt;		 /* tokens an oversize take still owes */
	uint64_t last_refill_ns; /* time up to which refills are credited */
};

/* Set up a bucket, full.  burst 0 means one second's worth. */
void token_bucket_init(struct token_bucket *bucket, const struct vm_rate_limit *limit,
		       uint64_t now_ns);

/*
 * Take amount tokens at now_ns.  Returns 0 if taken, else the
 * nanoseconds to wait before they will be there (nothing is taken).  An
 * amount above the burst is allowed once the bucket is full (it then goes
 * into debt by the excess, so large requests are not starved; later takes
 * wait until the debt is paid by the refill).  Precondition: now_ns never
 * goes backwards between calls (earlier values are treated as no time).
 */
uint64_t token_bucket_take(struct token_bucket *bucket, uint64_t amount, uint64_t now_ns);

/*
 * The rate limits of one request: one token from ops and length_bytes
 * tokens from bytes, both or neither.  Returns 0 if taken, else the
 * nanoseconds to wait (nothing is taken).  Preconditions as
 * token_bucket_take; the caller serializes access to both buckets.
 */
uint64_t token_bucket_take_request(struct token_bucket *ops, struct token_bucket *bytes,
				   uint64_t length_bytes, uint64_t now_ns);

#endif
