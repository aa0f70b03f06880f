/* PV network device backend: serves a guest's net.h TX and RX rings on its own thread (the PV device skeleton), frames straight from and into guest RAM. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "core/log.h"
#include "core/vm.h"
#include "devices/devices.h"
#include "devices/net/net_backend.h"
#include "devices/net/net_state.h"
#include "devices/pv_device.h"
#include "kapsel/net.h"
#include "state/vm_state.h"

/*
 * The skeleton (pv_device.c) runs the I/O thread, the setup handshake and
 * the doorbell; this file is what a network device adds: its two queues
 * and its hooks.  The rings and the backend fd belong to the I/O thread;
 * the backend's counters are shared under its lock.
 *
 * A pass of the I/O thread, as this device's hooks make it:
 *   TX: copy each request once, validate length and address, apply the
 *       rate limit, send the frame straight from guest RAM, answer
 *   RX: while the guest has posted buffers and a frame is waiting, take
 *       one buffer, read the frame straight into it, answer
 *   (skeleton) publish both rings; one event channel signal if either asks
 *   nothing to do: ask for kicks (req_event) on the TX ring, and on the
 *   RX ring only when no buffer is posted (wants_kick), re-check, then
 *   poll() the doorbell, the control eventfd and (with buffers posted)
 *   the backend (wait_fd).
 *
 * Save (quiesce): a frame held for rate-limit tokens goes out at once, no
 * request is taken after, so both rings have every request taken answered
 * and published; frames waiting in the backend's queue are dropped and
 * counted (drops_save), as a stopped NIC drops them.
 */

#define NET_PV_RX_BATCH 64u /* frames per pass, so TX is not starved */

struct net_pv {
	struct pv_device pv; /* first: the skeleton (pv_device_of) */
	struct pv_queue queues[KAPSEL_NET_QUEUE_COUNT];
	struct net_backend backend;
	bool backend_open;

	/* ---- I/O thread only ---- */
	bool throttled; /* held_tx waits for rate-limit tokens */
	struct kapsel_net_request held_tx;
	struct net_stats delta; /* folded into the backend's counters */
	uint64_t kicks_folded, notifications_folded;
};

static void net_pv_respond(struct net_pv *n, unsigned queue, uint64_t id, int status,
			   uint32_t length_bytes)
{
	struct kapsel_net_response rsp = { .id = id,
					   .status = status,
					   .length_bytes = length_bytes };
	pv_queue_respond(&n->queues[queue], &rsp);
}

/* A ring the guest broke is served no more; the skeleton says so once. */
static void net_pv_ring_broken(struct pv_device *pv, unsigned queue)
{
	struct net_pv *n = pv_device_priv(pv);
	n->delta.errors++;
	kapsel_guest_warn(
		&pv->dev.vm->guest_log,
		"net %u: the guest broke its %s ring (producer index %u); the ring is no longer served",
		pv->unit, queue == KAPSEL_NET_QUEUE_TX ? "TX" : "RX",
		n->queues[queue].ring.bad_req_prod);
}

/* ---- TX ---------------------------------------------------------------------- */

/* Validate and send one frame; false if it must wait for tokens (it is
 * then held, unanswered, until pv.wake_at_ns).  now_anyway: a save waits
 * for it, so it goes without tokens. */
static bool net_pv_transmit(struct net_pv *n, const struct kapsel_net_request *req, bool now_anyway)
{
	if (req->length_bytes < KAPSEL_NET_FRAME_MIN || req->length_bytes > KAPSEL_NET_FRAME_MAX ||
	    req->flags != 0) {
		n->delta.errors++;
		net_pv_respond(n, KAPSEL_NET_QUEUE_TX, req->id, -KAPSEL_EINVAL, 0);
		return true;
	}
	void *frame = guest_memory_translate_guest(&n->pv.dev.vm->mem, req->gpa, req->length_bytes);
	if (!frame) {
		n->delta.errors++;
		net_pv_respond(n, KAPSEL_NET_QUEUE_TX, req->id, -KAPSEL_EFAULT, 0);
		return true;
	}
	uint64_t now = vm_clock_ns(n->pv.dev.vm);
	uint64_t wait =
		now_anyway ? 0 : net_backend_rate_limit(&n->backend, req->length_bytes, now);
	if (wait) {
		n->held_tx = *req;
		n->throttled = true;
		n->pv.wake_at_ns = now + wait; /* the skeleton's wait wakes us then */
		return false;
	}
	/* Zero copy: the socket or tap reads the frame from guest RAM. */
	struct iovec iov = { frame, req->length_bytes };
	net_backend_send(&n->backend, &iov, 1);
	net_pv_respond(n, KAPSEL_NET_QUEUE_TX, req->id, 0, 0);
	return true;
}

static bool net_pv_serve_tx(struct net_pv *n)
{
	struct pv_queue *tx = &n->queues[KAPSEL_NET_QUEUE_TX];
	if (!tx->active)
		return false;
	bool progress = false;
	if (n->throttled) {
		bool quiescing = n->pv.quiescing;
		if (!quiescing && vm_clock_ns(n->pv.dev.vm) < n->pv.wake_at_ns)
			return false;
		n->throttled = false;
		n->pv.wake_at_ns = 0;
		struct kapsel_net_request held = n->held_tx;
		if (!net_pv_transmit(n, &held, quiescing))
			return false;
		progress = true;
	}
	if (n->pv.quiescing)
		return progress; /* a save: take nothing new */
	for (;;) {
		int pending = pv_device_pending(&n->pv, KAPSEL_NET_QUEUE_TX);
		if (pending <= 0)
			break;
		for (int i = 0; i < pending; i++) {
			struct kapsel_net_request req;
			pv_queue_take(tx, &req);
			progress = true;
			if (!net_pv_transmit(n, &req, false))
				return true;
		}
		/* Publish before taking more: pending counts unpublished
		 * responses as outstanding. */
		pv_device_publish_queue(&n->pv, KAPSEL_NET_QUEUE_TX);
	}
	return progress;
}

/* ---- RX ---------------------------------------------------------------------- */

static bool net_pv_serve_rx(struct net_pv *n)
{
	struct pv_queue *rx = &n->queues[KAPSEL_NET_QUEUE_RX];
	if (!rx->active || n->pv.quiescing)
		return false;
	bool progress = false;
	for (unsigned done = 0; done < NET_PV_RX_BATCH; done++) {
		/* Take a buffer only when a frame waits, so no guest buffer is
		 * held across a reboot that reuses its memory. */
		if (pv_device_pending(&n->pv, KAPSEL_NET_QUEUE_RX) <= 0 ||
		    !net_backend_readable(&n->backend))
			break;
		struct kapsel_net_request req;
		pv_queue_take(rx, &req);
		progress = true;
		if (req.length_bytes < KAPSEL_NET_FRAME_MAX || req.flags != 0) {
			n->delta.errors++;
			net_pv_respond(n, KAPSEL_NET_QUEUE_RX, req.id, -KAPSEL_EINVAL, 0);
			continue;
		}
		void *buffer = guest_memory_translate_guest(&n->pv.dev.vm->mem, req.gpa,
							    KAPSEL_NET_FRAME_MAX);
		if (!buffer) {
			n->delta.errors++;
			net_pv_respond(n, KAPSEL_NET_QUEUE_RX, req.id, -KAPSEL_EFAULT, 0);
			continue;
		}
		ssize_t length;
		do /* zero copy: the frame lands in the guest's buffer */
			length = net_backend_receive(&n->backend, buffer, KAPSEL_NET_FRAME_MAX);
		while (length == -EMSGSIZE);
		/* Even a failed receive may have written part of the buffer. */
		guest_memory_mark_written_host(&n->pv.dev.vm->mem, buffer, KAPSEL_NET_FRAME_MAX);
		if (length <= 0)
			net_pv_respond(n, KAPSEL_NET_QUEUE_RX, req.id, -KAPSEL_EAGAIN, 0);
		else
			net_pv_respond(n, KAPSEL_NET_QUEUE_RX, req.id, 0, (uint32_t)length);
	}
	return progress;
}

/* ---- Hooks of the skeleton (pv_device.h) -------------------------------------- */

static bool net_pv_serve(struct pv_device *pv)
{
	struct net_pv *n = pv_device_priv(pv);
	bool progress = net_pv_serve_tx(n);
	progress |= net_pv_serve_rx(n);
	return progress;
}

/* The held frame belonged to the old TX ring. */
static void net_pv_ring_replaced(struct pv_device *pv, unsigned queue)
{
	struct net_pv *n = pv_device_priv(pv);
	if (queue == KAPSEL_NET_QUEUE_TX && n->throttled) {
		n->throttled = false;
		pv->wake_at_ns = 0;
	}
}

/* Buffers the guest posted on RX (a frame arriving can be taken). */
static bool net_pv_rx_buffers(struct net_pv *n)
{
	return n->queues[KAPSEL_NET_QUEUE_RX].active &&
	       pv_device_pending(&n->pv, KAPSEL_NET_QUEUE_RX) > 0;
}

/* Ask for kicks on TX unless a frame waits for tokens, and on RX only when
 * no buffer is posted (with buffers, a frame arriving is what wakes us). */
static bool net_pv_wants_kick(struct pv_device *pv, unsigned queue)
{
	struct net_pv *n = pv_device_priv(pv);
	if (queue == KAPSEL_NET_QUEUE_TX)
		return !n->throttled;
	return !net_pv_rx_buffers(n);
}

/* Quiesced, a frame arriving is left alone (until the save drops it). */
static int net_pv_wait_fd(struct pv_device *pv)
{
	struct net_pv *n = pv_device_priv(pv);
	return !pv->quiescing && net_pv_rx_buffers(n) ? n->backend.fd : -1;
}

/* Fold this thread's counters into the backend's (under its lock). */
static void net_pv_after_publish(struct pv_device *pv, bool answered)
{
	static const struct net_stats zero;
	struct net_pv *n = pv_device_priv(pv);
	(void)answered;
	uint64_t kicks = __atomic_load_n(&pv->kicks, __ATOMIC_RELAXED);
	uint64_t notifications = __atomic_load_n(&pv->notifications, __ATOMIC_RELAXED);
	n->delta.kicks += kicks - n->kicks_folded;
	n->delta.notifications += notifications - n->notifications_folded;
	n->kicks_folded = kicks;
	n->notifications_folded = notifications;
	if (memcmp(&n->delta, &zero, sizeof(zero)) == 0)
		return;
	net_stats_add(&n->backend, &n->delta);
	n->delta = zero;
}

static const struct pv_device_class net_pv_class = {
	.serving = PV_SERVE_ON_THREAD,
	.queue_count = KAPSEL_NET_QUEUE_COUNT,
	.thread_name = "kapsel-net",
	.serve = net_pv_serve,
	.ring_replaced = net_pv_ring_replaced,
	.ring_broken = net_pv_ring_broken,
	.after_publish = net_pv_after_publish,
	.wants_kick = net_pv_wants_kick,
	.wait_fd = net_pv_wait_fd,
};

/* ---- Device ops -------------------------------------------------------------- */

static void net_pv_print_stats(struct kapsel_device *dev, FILE *out)
{
	struct net_pv *n = dev->priv;
	const uint8_t *m = dev->desc.mac;
	fprintf(out, "  mac: %02x:%02x:%02x:%02x:%02x:%02x\n", m[0], m[1], m[2], m[3], m[4], m[5]);
	bool tx = pv_device_ever_set_up(&n->pv, KAPSEL_NET_QUEUE_TX);
	bool rx = pv_device_ever_set_up(&n->pv, KAPSEL_NET_QUEUE_RX);
	fprintf(out, "  rings: %s\n",
		tx && rx ? "tx and rx set up"
		: tx	 ? "tx only"
		: rx	 ? "rx only"
			 : "not set up");
	pthread_mutex_lock(&n->backend.lock);
	uint64_t kicks = n->backend.stats.kicks;
	pthread_mutex_unlock(&n->backend.lock);
	/* Each doorbell write is one exit (handled in the kernel). */
	net_backend_print_stats(&n->backend, dev->exits + kicks, out);
}

static int net_pv_save(struct kapsel_device *dev, struct vm_state_writer *out)
{
	struct net_pv *n = dev->priv;
	/* Quiesced: the I/O thread leaves the rings and the backend alone
	 * until resume. */
	if (!pv_device_is_quiesced(&n->pv))
		return -EBUSY;
	struct vm_state_net_pv rec = { 0 };
	for (unsigned q = 0; q < KAPSEL_NET_QUEUE_COUNT; q++) {
		struct pv_queue_state state;
		pv_queue_save(&n->queues[q], &state);
		rec.queues[q] = (struct vm_state_net_pv_queue){
			.ring_gpa = state.ring_gpa,
			.ring_pages = state.ring_pages,
			.order = state.order,
			.req_cons = state.req_cons,
			.rsp_prod = state.rsp_prod,
			.broken = state.broken,
			.bad_req_prod = state.bad_req_prod,
		};
	}
	rec.frames_dropped_at_save = net_backend_drop_waiting(&n->backend);
	if (rec.frames_dropped_at_save)
		kapsel_debug("net %u: %llu frame(s) waiting in the backend dropped by the save",
			     n->pv.unit, (unsigned long long)rec.frames_dropped_at_save);
	net_stats_to_array(&n->backend, rec.counters);
	return vm_state_put(out, VM_STATE_DEV_NET_PV, VM_STATE_RECORD_MANDATORY, &rec, sizeof(rec));
}

static int net_pv_load(struct kapsel_device *dev, uint32_t type, const void *payload,
		       uint64_t length_bytes, char *error, size_t error_len)
{
	struct net_pv *n = dev->priv;
	struct vm_state_net_pv rec;
	if (type != VM_STATE_DEV_NET_PV)
		return -ENOENT;
	int err = net_pv_record_check(payload, length_bytes, &rec, error, error_len);
	if (err)
		return err;
	static const char *const names[KAPSEL_NET_QUEUE_COUNT] = { "PV net record (TX ring)",
								   "PV net record (RX ring)" };
	for (unsigned q = 0; q < KAPSEL_NET_QUEUE_COUNT; q++) {
		const struct vm_state_net_pv_queue *saved = &rec.queues[q];
		if (!saved->ring_gpa)
			continue; /* the guest never set this ring up */
		const struct pv_queue_state state = {
			.ring_gpa = saved->ring_gpa,
			.ring_pages = saved->ring_pages,
			.order = saved->order,
			.req_cons = saved->req_cons,
			.rsp_prod = saved->rsp_prod,
			.broken = saved->broken,
			.bad_req_prod = saved->bad_req_prod,
		};
		err = pv_device_restore_queue(&n->pv, q, &state, names[q], error, error_len);
		if (err)
			return err;
	}
	net_stats_from_array(&n->backend, rec.counters);
	return 0;
}

/* Migration: the destination opens the socket path or tap now. */
static int net_pv_host_release(struct kapsel_device *dev, char *error, size_t error_len)
{
	struct net_pv *n = dev->priv;
	return net_backend_release(&n->backend, error, error_len);
}

static int net_pv_host_reacquire(struct kapsel_device *dev, char *error, size_t error_len)
{
	struct net_pv *n = dev->priv;
	return net_backend_reacquire(&n->backend, error, error_len);
}

static void net_pv_host_confirm(struct kapsel_device *dev)
{
	struct net_pv *n = dev->priv;
	net_backend_confirm(&n->backend);
}

static void net_pv_destroy(struct kapsel_device *dev)
{
	struct net_pv *n = dev->priv;
	pv_device_destroy(&n->pv);
	if (n->backend_open)
		net_backend_close(&n->backend);
	free(n);
}

/* No reset (as before the skeleton): the RX path takes a buffer only when
 * a frame waits. */
const struct kapsel_device_ops net_pv_ops = {
	.name = "net-pv",
	.type = KAPSEL_DEV_NET_PV,
	.setup = pv_device_setup,
	.print_stats = net_pv_print_stats,
	.destroy = net_pv_destroy,
	.quiesce = pv_device_quiesce,
	.resume = pv_device_resume,
	.save = net_pv_save,
	.load = net_pv_load,
	.host_release = net_pv_host_release,
	.host_reacquire = net_pv_host_reacquire,
	.host_confirm = net_pv_host_confirm,
};

int dev_net_pv_create(struct kapsel_vm *vm, const struct vm_net_config *config, unsigned unit)
{
	char error[512];
	struct net_pv *n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	for (unsigned q = 0; q < KAPSEL_NET_QUEUE_COUNT; q++)
		pv_queue_init(&n->queues[q], sizeof(struct kapsel_net_request),
			      sizeof(struct kapsel_net_response));
	pv_device_init(&n->pv, &net_pv_class, &net_pv_ops, n, n->queues, unit);
	int err = net_backend_open(&n->backend, config, unit, vm_clock_ns(vm), vm->incoming, error,
				   sizeof(error));
	if (err) {
		kapsel_error("%s", error);
		free(n);
		return err;
	}
	n->backend_open = true;
	n->pv.dev.desc.mtu_bytes = KAPSEL_NET_MTU_BYTES;
	vm_config_net_mac(vm->config, unit, n->pv.dev.desc.mac);
	char what[600];
	snprintf(what, sizeof(what), "net %u ('%s')", unit, config->path);
	err = pv_device_attach(vm, &n->pv, what);
	if (err && n->pv.dev.vm == NULL) {
		net_backend_close(&n->backend);
		free(n);
		return err;
	}
	/* From here on vm_destroy calls net_pv_destroy, which undoes the rest. */
	if (err)
		return err;
	err = pv_device_start(&n->pv, what);
	if (err)
		return err;
	kapsel_debug("net %u: PV network device %u on %s '%s'", unit, n->pv.dev.desc.index,
		     config->backend == VM_NET_BACKEND_TAP ? "tap" : "socket", config->path);
	return 0;
}
