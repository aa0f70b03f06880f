/* PV entropy device model: request checks, rate limits, counters, ring serving and its state record (no KVM, no threads). */
#include "devices/rng/rng_pv_model.h"

#include <errno.h>
#include <string.h>

#include "core/log.h"

#define COUNT(m, field, n) __atomic_fetch_add(&(m)->stats.field, (n), __ATOMIC_RELAXED)

void rng_pv_model_init(struct rng_pv_model *m, const struct guest_memory *mem,
		       const struct vm_rng_config *config, uint64_t now_ns, rng_pv_fill_fn fill,
		       void *opaque)
{
	memset(m, 0, sizeof(*m));
	m->mem = mem;
	m->fill = fill;
	m->fill_opaque = opaque;
	token_bucket_init(&m->requests_bucket, &config->requests_limit, now_ns);
	token_bucket_init(&m->bytes_bucket, &config->bytes_limit, now_ns);
	pv_queue_init(&m->queue, sizeof(struct kapsel_rng_request),
		      sizeof(struct kapsel_rng_response));
}

int rng_pv_check_request(const struct guest_memory *mem, const struct kapsel_rng_request *req,
			 void **buffer)
{
	if (req->flags != 0 || req->_reserved != 0 || req->length_bytes == 0 ||
	    req->length_bytes > KAPSEL_RNG_REQUEST_MAX_BYTES)
		return -KAPSEL_EINVAL;
	/* The one translation: bounds, overflow and the hypervisor's tables. */
	void *host = guest_memory_translate_guest(mem, req->gpa, req->length_bytes);
	if (!host)
		return -KAPSEL_EFAULT;
	*buffer = host;
	return 0;
}

void rng_pv_answer(struct rng_pv_model *m, const struct kapsel_rng_request *req, uint64_t now_ns,
		   struct kapsel_rng_response *rsp)
{
	*rsp = (struct kapsel_rng_response){ .id = req->id };
	void *buffer = NULL;
	int err = rng_pv_check_request(m->mem, req, &buffer);
	if (err) {
		rsp->status = err;
		COUNT(m, errors, 1);
		return;
	}
	/* Limits apply to valid requests only: a refused one costs nothing. */
	uint64_t wait = token_bucket_take_request(&m->requests_bucket, &m->bytes_bucket,
						  req->length_bytes, now_ns);
	if (wait) {
		rsp->status = -KAPSEL_EAGAIN;
		rsp->retry_after_ns = wait;
		COUNT(m, throttled, 1);
		return;
	}
	int filled = m->fill(m->fill_opaque, buffer, req->length_bytes);
	guest_memory_mark_written_host(m->mem, buffer, req->length_bytes);
	if (filled < 0) {
		rsp->status = -KAPSEL_EIO;
		COUNT(m, errors, 1);
		return;
	}
	rsp->length_bytes = req->length_bytes;
	COUNT(m, requests, 1);
	COUNT(m, bytes, req->length_bytes);
}

bool rng_pv_model_serve(struct rng_pv_model *m, uint64_t now_ns)
{
	struct pv_queue *q = &m->queue;
	if (!q->active)
		return false;
	bool notify = false;
	/* A pass answers everything published (at most a ring's worth), then
	 * asks for the next kick (req_event) and looks again: with the vCPU
	 * stopped in this exit nothing new can come, but a bound keeps a
	 * misbehaving ring from holding the vCPU thread. */
	for (int pass = 0; pass < 4; pass++) {
		bool newly_broken;
		int pending = pv_queue_pending(q, &newly_broken);
		if (newly_broken) {
			COUNT(m, errors, 1);
			kapsel_warn("rng: the guest broke its ring (producer index %u); the ring is no longer served",
				    q->ring.bad_req_prod);
		}
		if (pending < 0)
			break;
		for (int i = 0; i < pending; i++) {
			struct kapsel_rng_request req;
			struct kapsel_rng_response rsp;
			pv_queue_take(q, &req);
			rng_pv_answer(m, &req, now_ns, &rsp);
			pv_queue_respond(q, &rsp);
		}
		notify |= pv_queue_publish(q);
		if (!pv_queue_prepare_sleep(q))
			break;
	}
	return notify;
}

void rng_pv_model_save(const struct rng_pv_model *m, struct vm_state_rng_pv *rec)
{
	struct pv_queue_state state;
	pv_queue_save(&m->queue, &state);
	*rec = (struct vm_state_rng_pv){
		.ring_gpa = state.ring_gpa,
		.ring_pages = state.ring_pages,
		.order = state.order,
		.index = state.rsp_prod,
		.broken = state.broken,
		.bad_req_prod = state.bad_req_prod,
	};
}

int rng_pv_model_load(struct rng_pv_model *m, const struct vm_state_rng_pv *rec, char *error,
		      size_t error_len)
{
	if (!rec->ring_gpa) {
		pv_queue_install(&m->queue, NULL, 0, 0);
		return 0; /* the guest never set the ring up */
	}
	const struct pv_queue_state state = {
		.ring_gpa = rec->ring_gpa,
		.ring_pages = rec->ring_pages,
		.order = rec->order,
		.req_cons = rec->index,
		.rsp_prod = rec->index,
		.broken = rec->broken,
		.bad_req_prod = rec->bad_req_prod,
	};
	struct ring_backend ring;
	int err = pv_queue_restore(&m->queue, m->mem, &state, "PV entropy record", &ring, error,
				   error_len);
	if (err)
		return err;
	pv_queue_install(&m->queue, &ring, rec->ring_gpa, rec->ring_pages);
	return 0;
}

void rng_pv_model_stats(const struct rng_pv_model *m, struct rng_pv_stats *out)
{
	out->requests = __atomic_load_n(&m->stats.requests, __ATOMIC_RELAXED);
	out->bytes = __atomic_load_n(&m->stats.bytes, __ATOMIC_RELAXED);
	out->errors = __atomic_load_n(&m->stats.errors, __ATOMIC_RELAXED);
	out->throttled = __atomic_load_n(&m->stats.throttled, __ATOMIC_RELAXED);
}

void rng_pv_model_print_stats(const struct rng_pv_model *m, uint64_t kicks, uint64_t notifications,
			      uint64_t exits, FILE *out)
{
	struct rng_pv_stats s;
	rng_pv_model_stats(m, &s);
	fprintf(out, "  source: getrandom\n");
	fprintf(out, "  requests: %llu\n", (unsigned long long)s.requests);
	fprintf(out, "  bytes: %llu\n", (unsigned long long)s.bytes);
	fprintf(out, "  errors: %llu\n", (unsigned long long)s.errors);
	fprintf(out, "  throttled: %llu\n", (unsigned long long)s.throttled);
	fprintf(out, "  kicks: %llu\n", (unsigned long long)kicks);
	fprintf(out, "  notifications: %llu\n", (unsigned long long)notifications);
	fprintf(out, "  exits: %llu\n", (unsigned long long)exits);
	if (m->bytes_bucket.rate_per_second)
		fprintf(out, "  limit_bytes_per_second: %llu\n",
			(unsigned long long)m->bytes_bucket.rate_per_second);
	if (m->requests_bucket.rate_per_second)
		fprintf(out, "  limit_requests_per_second: %llu\n",
			(unsigned long long)m->requests_bucket.rate_per_second);
}
