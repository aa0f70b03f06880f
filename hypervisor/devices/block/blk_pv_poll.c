/* PV block device, polling before sleeping: a fixed poll= spin, or the adaptive window after the last request in flight was answered. */
#define _GNU_SOURCE
#include <sys/resource.h>
#include <x86intrin.h>

#include "core/vm.h"
#include "devices/block/blk_pv.h"

/*
 * Without poll= the backend polls adaptively, and only in one place: just
 * after it answered the last request in flight, when a guest that polls
 * for its completion submits the next request a few microseconds later.
 * It takes req_event back (so that request needs no doorbell) and spins
 * up to adaptive_window_ns for it.  The window fits itself to the gaps it
 * sees (blk_pv_end_idle), bounded by BLK_PV_ADAPTIVE_POLL_NS, and shrinks
 * to nothing for a guest that goes quiet or sleeps between requests.
 * While I/O is in flight the thread sleeps: the device's completion wakes
 * it, and the other CPU stays free for the vCPU.
 */

/* A served ring has requests not taken yet. */
static bool blk_pv_any_new(const struct blk_pv *b)
{
	if (b->pv.switching)
		return false;
	for (unsigned q = 0; q < b->pv.queue_count; q++)
		if (b->queues[q].active && ring_backend_has_new(&b->queues[q].ring))
			return true;
	return false;
}

/* Busy-poll for new requests or completions for up to poll_ns.  Returns
 * true if something arrived. */
static bool blk_pv_spin(struct blk_pv *b, uint64_t poll_ns)
{
	uint64_t deadline = vm_clock_ns(b->pv.dev.vm) + poll_ns;
	do {
		for (unsigned i = 0; i < 64; i++) {
			/* IORING_SQ_TASKRUN: completions wait for us to enter
			 * the kernel (cooperative task running). */
			if (blk_pv_any_new(b) || io_uring_cq_ready(&b->uring) ||
			    (IO_URING_READ_ONCE(*b->uring.sq.kflags) & IORING_SQ_TASKRUN))
				return true;
			_mm_pause();
		}
	} while (vm_clock_ns(b->pv.dev.vm) < deadline);
	return false;
}

/* Serving the ring, nothing parked: idle periods count.  Only a device
 * with one queue polls adaptively: with several, the vCPUs that submit
 * need the host's CPUs more than this thread's spinning. */
static bool blk_pv_serving(const struct blk_pv *b)
{
	return b->pv.queue_count == 1 && b->queues[0].active && !b->pv.switching &&
	       !b->pv.quiescing && !b->throttled;
}

bool blk_pv_poll(struct pv_device *pv)
{
	struct blk_pv *b = blk_pv_of(pv);
	if (b->poll_ns && blk_pv_spin(b, b->poll_ns))
		return true;
	if (!b->adaptive_poll || !blk_pv_serving(b) || !b->idle_since_ns || b->idle_polled ||
	    !b->adaptive_window_ns || b->queues[0].ring.broken)
		return false;
	/* Take req_event back (it was set when we slept waiting for the
	 * I/O): the guest's next request needs no doorbell while we look.
	 * The skeleton's prepare_sleep re-arms it. */
	b->idle_polled = true;
	ring_backend_set_req_event(&b->queues[0].ring, b->queues[0].ring.req_cons);
	struct rusage before, after;
	getrusage(RUSAGE_THREAD, &before);
	bool hit = blk_pv_spin(b, b->adaptive_window_ns);
	getrusage(RUSAGE_THREAD, &after);
	/* Preempted while spinning: another thread wants this CPU (on 2 CPUs
	 * perhaps the vCPU).  Stop polling until the gaps earn a window. */
	if (after.ru_nivcsw != before.ru_nivcsw) {
		b->adaptive_window_ns = 0;
		b->adaptive_backoff = BLK_PV_ADAPTIVE_BACKOFF;
	}
	return hit;
}

/* With a deep queue in the device, a completion wakes us soon and we look
 * at the ring then: no doorbell needed meanwhile.  A parked request waits
 * for its tokens (the wait's timeout), not for kicks. */
bool blk_pv_wants_kick(struct pv_device *pv, unsigned queue)
{
	struct blk_pv *b = blk_pv_of(pv);
	(void)queue;
	return !b->throttled && b->io_in_flight < BLK_PV_BUSY_IN_FLIGHT;
}

/*
 * A request arrived idle_since_ns after the backend answered the last one
 * in flight.  A gap the bound could cover widens the window to fit it
 * with a quarter to spare (when no poll ran, the gap includes the
 * doorbell and our wake-up: an overestimate, which is the safe side); a
 * longer gap halves it.  A request caught by the poll leaves it alone.
 */
void blk_pv_end_idle(struct blk_pv *b)
{
	uint64_t gap = vm_clock_ns(b->pv.dev.vm) - b->idle_since_ns;
	b->idle_since_ns = 0;
	if (b->adaptive_backoff) {
		b->adaptive_backoff--;
	} else if (gap > BLK_PV_ADAPTIVE_POLL_NS) {
		b->adaptive_window_ns /= 2;
	} else if (gap > b->adaptive_window_ns) {
		uint64_t fit = gap + gap / 4;
		b->adaptive_window_ns =
			fit < BLK_PV_ADAPTIVE_POLL_NS ? fit : BLK_PV_ADAPTIVE_POLL_NS;
	}
}

void blk_pv_after_publish(struct pv_device *pv, bool answered)
{
	struct blk_pv *b = blk_pv_of(pv);
	blk_pv_report_stats(b);
	/* Answered the last request in flight: an idle period starts. */
	if (answered && blk_pv_serving(b) && b->io_in_flight == 0 && !b->idle_since_ns) {
		b->idle_since_ns = vm_clock_ns(pv->dev.vm);
		b->idle_polled = false;
	}
}
