/* PV network device backend: serves a guest's net.h TX and RX rings on its own thread, frames straight from and into guest RAM. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/devices.h"
#include "kapsel/net.h"
#include "core/log.h"
#include "devices/net/net_backend.h"
#include "devices/ring_backend.h"
#include "core/vm.h"
#include "core/sandbox.h"

/*
 * Threads: setup, print_stats and destroy run on the vCPU (or main)
 * thread; the rings and the backend fd belong to the device's I/O thread.
 * They meet in the control block (under lock) and in the backend's
 * counters (under its lock).
 *
 * The I/O thread loop:
 *   take new rings from the control block
 *   TX: copy each request once, validate length and address, apply the
 *       rate limit, send the frame straight from guest RAM, answer
 *   RX: while the guest has posted buffers and a frame is waiting, take
 *       one buffer, read the frame straight into it, answer
 *   publish both rings; one event channel signal if either asks
 *   nothing to do: ask for kicks (req_event) on the TX ring, and on the
 *   RX ring only when no buffer is posted, re-check, then poll() the
 *   doorbell, the control eventfd and (with buffers posted) the backend.
 */

#define NET_PV_RX_BATCH 64u /* frames per pass, so TX is not starved */

struct net_pv_control {
	pthread_mutex_t lock;
	pthread_cond_t done;
	bool stop;
	uint64_t setup_requested; /* bumped per DEVICE_SETUP */
	uint64_t setup_done;	  /* the I/O thread caught up to this */
	struct ring_backend next_ring[KAPSEL_NET_QUEUE_COUNT];
	bool next_valid[KAPSEL_NET_QUEUE_COUNT];
	bool ever_set_up[KAPSEL_NET_QUEUE_COUNT];
};

struct net_pv {
	struct kapsel_device dev;
	struct net_backend backend;
	unsigned unit;
	int control_fd;
	bool backend_open, control_ready, thread_started;
	pthread_t thread;
	struct net_pv_control control;

	/* ---- I/O thread only ---- */
	struct ring_backend ring[KAPSEL_NET_QUEUE_COUNT];
	bool active[KAPSEL_NET_QUEUE_COUNT];
	bool written[KAPSEL_NET_QUEUE_COUNT]; /* responses put since the last publish */
	bool broken_logged[KAPSEL_NET_QUEUE_COUNT];
	bool notify_owed; /* a publish asked for a signal not sent yet */
	bool throttled;	  /* held_tx waits for rate-limit tokens */
	struct kapsel_net_request held_tx;
	uint64_t throttled_until_ns;
	struct net_stats delta; /* folded into the backend's counters */
};

static void net_pv_respond(struct net_pv *n, unsigned queue, uint64_t id, int status,
			   uint32_t length_bytes)
{
	struct kapsel_net_response rsp = { .id = id,
					   .status = status,
					   .length_bytes = length_bytes };
	ring_backend_put_response(&n->ring[queue], &rsp);
	n->written[queue] = true;
}

/* A ring the guest broke is served no more; say so once. */
static int net_pv_pending(struct net_pv *n, unsigned queue)
{
	int pending = ring_backend_pending(&n->ring[queue]);
	if (pending < 0 && !n->broken_logged[queue]) {
		n->broken_logged[queue] = true;
		n->delta.errors++;
		kapsel_guest_warn(
			&n->dev.vm->guest_log,
			"net %u: the guest broke its %s ring (producer index %u); the ring is no longer served",
			n->unit, queue == KAPSEL_NET_QUEUE_TX ? "TX" : "RX",
			n->ring[queue].bad_req_prod);
	}
	return pending;
}

/* ---- TX ---------------------------------------------------------------------- */

/* Validate and send one frame; false if it must wait for tokens (it is
 * then held, unanswered). */
static bool net_pv_transmit(struct net_pv *n, const struct kapsel_net_request *req)
{
	if (req->length_bytes < KAPSEL_NET_FRAME_MIN || req->length_bytes > KAPSEL_NET_FRAME_MAX ||
	    req->flags != 0) {
		n->delta.errors++;
		net_pv_respond(n, KAPSEL_NET_QUEUE_TX, req->id, -KAPSEL_EINVAL, 0);
		return true;
	}
	void *frame = guest_memory_translate_guest(&n->dev.vm->mem, req->gpa, req->length_bytes);
	if (!frame) {
		n->delta.errors++;
		net_pv_respond(n, KAPSEL_NET_QUEUE_TX, req->id, -KAPSEL_EFAULT, 0);
		return true;
	}
	uint64_t now = vm_clock_ns(n->dev.vm);
	uint64_t wait = net_backend_rate_limit(&n->backend, req->length_bytes, now);
	if (wait) {
		n->held_tx = *req;
		n->throttled = true;
		n->throttled_until_ns = now + wait;
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
	if (!n->active[KAPSEL_NET_QUEUE_TX])
		return false;
	bool progress = false;
	if (n->throttled) {
		if (vm_clock_ns(n->dev.vm) < n->throttled_until_ns)
			return false;
		n->throttled = false;
		struct kapsel_net_request held = n->held_tx;
		if (!net_pv_transmit(n, &held))
			return false;
		progress = true;
	}
	for (;;) {
		int pending = net_pv_pending(n, KAPSEL_NET_QUEUE_TX);
		if (pending <= 0)
			break;
		for (int i = 0; i < pending; i++) {
			struct kapsel_net_request req;
			ring_backend_take_request(&n->ring[KAPSEL_NET_QUEUE_TX], &req);
			progress = true;
			if (!net_pv_transmit(n, &req))
				return true;
		}
		/* Publish before taking more: pending counts unpublished
		 * responses as outstanding. */
		if (ring_backend_publish(&n->ring[KAPSEL_NET_QUEUE_TX]))
			n->notify_owed = true;
	}
	return progress;
}

/* ---- RX ---------------------------------------------------------------------- */

static bool net_pv_serve_rx(struct net_pv *n)
{
	if (!n->active[KAPSEL_NET_QUEUE_RX])
		return false;
	bool progress = false;
	for (unsigned done = 0; done < NET_PV_RX_BATCH; done++) {
		/* Take a buffer only when a frame waits, so no guest buffer is
		 * held across a reboot that reuses its memory. */
		if (net_pv_pending(n, KAPSEL_NET_QUEUE_RX) <= 0 ||
		    !net_backend_readable(&n->backend))
			break;
		struct kapsel_net_request req;
		ring_backend_take_request(&n->ring[KAPSEL_NET_QUEUE_RX], &req);
		progress = true;
		if (req.length_bytes < KAPSEL_NET_FRAME_MAX || req.flags != 0) {
			n->delta.errors++;
			net_pv_respond(n, KAPSEL_NET_QUEUE_RX, req.id, -KAPSEL_EINVAL, 0);
			continue;
		}
		void *buffer = guest_memory_translate_guest(&n->dev.vm->mem, req.gpa,
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
		if (length <= 0)
			net_pv_respond(n, KAPSEL_NET_QUEUE_RX, req.id, -KAPSEL_EAGAIN, 0);
		else
			net_pv_respond(n, KAPSEL_NET_QUEUE_RX, req.id, 0, (uint32_t)length);
	}
	return progress;
}

/* ---- Loop ------------------------------------------------------------------- */

static void net_pv_publish(struct net_pv *n)
{
	bool notify = n->notify_owed;
	n->notify_owed = false;
	for (unsigned q = 0; q < KAPSEL_NET_QUEUE_COUNT; q++) {
		if (n->active[q] && n->written[q] && ring_backend_publish(&n->ring[q]))
			notify = true;
		n->written[q] = false;
	}
	if (!notify)
		return;
	uint32_t port = __atomic_load_n(&n->dev.evtchn_port, __ATOMIC_ACQUIRE);
	if (port == UINT32_MAX)
		return; /* nobody bound a channel: the guest polls */
	vm_evtchn_notify(n->dev.vm, port);
	n->delta.notifications++;
}

/* Take new rings and the stop request; returns true to stop. */
static bool net_pv_take_control(struct net_pv *n)
{
	pthread_mutex_lock(&n->control.lock);
	for (unsigned q = 0; q < KAPSEL_NET_QUEUE_COUNT; q++) {
		if (!n->control.next_valid[q])
			continue;
		n->ring[q] = n->control.next_ring[q];
		n->active[q] = true;
		n->written[q] = false;
		n->broken_logged[q] = false;
		n->control.next_valid[q] = false;
		if (q == KAPSEL_NET_QUEUE_TX)
			n->throttled = false; /* the held frame belonged to the old ring */
	}
	if (n->control.setup_done != n->control.setup_requested) {
		n->control.setup_done = n->control.setup_requested;
		pthread_cond_broadcast(&n->control.done);
	}
	bool stop = n->control.stop;
	pthread_mutex_unlock(&n->control.lock);
	return stop;
}

static void drain_eventfd(int fd, uint64_t *count)
{
	uint64_t value;
	if (read(fd, &value, sizeof(value)) == (ssize_t)sizeof(value) && count)
		*count += value;
}

static void net_pv_fold_stats(struct net_pv *n)
{
	static const struct net_stats zero;
	if (memcmp(&n->delta, &zero, sizeof(zero)) == 0)
		return;
	net_stats_add(&n->backend, &n->delta);
	n->delta = zero;
}

static void net_pv_sleep(struct net_pv *n)
{
	bool rx_buffers =
		n->active[KAPSEL_NET_QUEUE_RX] && net_pv_pending(n, KAPSEL_NET_QUEUE_RX) > 0;
	/* Ask for kicks, then look once more (ring.h event indices). */
	if (n->active[KAPSEL_NET_QUEUE_TX] && !n->throttled &&
	    ring_backend_prepare_sleep(&n->ring[KAPSEL_NET_QUEUE_TX]))
		return;
	if (n->active[KAPSEL_NET_QUEUE_RX] && !rx_buffers &&
	    ring_backend_prepare_sleep(&n->ring[KAPSEL_NET_QUEUE_RX]))
		return;
	int timeout_ms = -1;
	if (n->throttled) {
		uint64_t now = vm_clock_ns(n->dev.vm);
		uint64_t wait = n->throttled_until_ns > now ? n->throttled_until_ns - now : 0;
		timeout_ms = (int)((wait + 999999) / 1000000);
	}
	struct pollfd fds[3] = {
		{ .fd = n->dev.doorbell_fd, .events = POLLIN },
		{ .fd = n->control_fd, .events = POLLIN },
		{ .fd = rx_buffers ? n->backend.fd : -1, .events = POLLIN },
	};
	if (poll(fds, 3, timeout_ms) <= 0)
		return;
	if (fds[0].revents & POLLIN)
		drain_eventfd(n->dev.doorbell_fd, &n->delta.kicks);
	if (fds[1].revents & POLLIN)
		drain_eventfd(n->control_fd, NULL);
}

static void *net_pv_thread_main(void *opaque)
{
	struct net_pv *n = opaque;
	sandbox_thread_role(SANDBOX_ROLE_IO);
	for (;;) {
		if (net_pv_take_control(n))
			break;
		/* Kicks that came while we were busy. */
		drain_eventfd(n->dev.doorbell_fd, &n->delta.kicks);
		bool progress = net_pv_serve_tx(n);
		progress |= net_pv_serve_rx(n);
		net_pv_publish(n);
		net_pv_fold_stats(n);
		if (progress)
			continue;
		net_pv_sleep(n);
		net_pv_fold_stats(n);
	}
	net_pv_fold_stats(n);
	return NULL;
}

/* ---- Device ops -------------------------------------------------------------- */

static int net_pv_setup(struct kapsel_device *dev, const struct kapsel_device_setup *setup)
{
	struct net_pv *n = dev->priv;
	if (setup->queue >= KAPSEL_NET_QUEUE_COUNT)
		return -KAPSEL_EINVAL;
	struct ring_backend ring;
	int err = ring_backend_map(&ring, &dev->vm->mem, setup->ring_gpa, setup->ring_pages,
				   sizeof(struct kapsel_net_request),
				   sizeof(struct kapsel_net_response));
	if (err)
		return err;
	pthread_mutex_lock(&n->control.lock);
	n->control.next_ring[setup->queue] = ring;
	n->control.next_valid[setup->queue] = true;
	n->control.ever_set_up[setup->queue] = true;
	uint64_t ticket = ++n->control.setup_requested;
	pthread_mutex_unlock(&n->control.lock);
	uint64_t one = 1;
	if (write(n->control_fd, &one, sizeof(one)) < 0)
		return -KAPSEL_EIO;
	/* The guest's first kick after this call must find the ring. */
	pthread_mutex_lock(&n->control.lock);
	while (n->control.setup_done < ticket)
		pthread_cond_wait(&n->control.done, &n->control.lock);
	pthread_mutex_unlock(&n->control.lock);
	return 0;
}

static void net_pv_print_stats(struct kapsel_device *dev, FILE *out)
{
	struct net_pv *n = dev->priv;
	const uint8_t *m = dev->desc.mac;
	fprintf(out, "  mac: %02x:%02x:%02x:%02x:%02x:%02x\n", m[0], m[1], m[2], m[3], m[4], m[5]);
	pthread_mutex_lock(&n->control.lock);
	bool tx = n->control.ever_set_up[KAPSEL_NET_QUEUE_TX];
	bool rx = n->control.ever_set_up[KAPSEL_NET_QUEUE_RX];
	pthread_mutex_unlock(&n->control.lock);
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

/* Frames in flight live in guest RAM and the host network; a saved VM
 * could not get them back, so saving is refused for now. */
static int net_pv_save(struct kapsel_device *dev, struct vm_state_writer *out)
{
	(void)dev;
	(void)out;
	return -EOPNOTSUPP;
}

static void net_pv_destroy(struct kapsel_device *dev)
{
	struct net_pv *n = dev->priv;
	if (n->thread_started) {
		pthread_mutex_lock(&n->control.lock);
		n->control.stop = true;
		pthread_mutex_unlock(&n->control.lock);
		uint64_t one = 1;
		ssize_t w = write(n->control_fd, &one, sizeof(one));
		(void)w;
		pthread_join(n->thread, NULL);
	}
	if (n->control_fd >= 0)
		close(n->control_fd);
	if (n->control_ready) {
		pthread_mutex_destroy(&n->control.lock);
		pthread_cond_destroy(&n->control.done);
	}
	if (n->backend_open)
		net_backend_close(&n->backend);
	free(n);
}

const struct kapsel_device_ops net_pv_ops = {
	.name = "net-pv",
	.type = KAPSEL_DEV_NET_PV,
	.setup = net_pv_setup,
	.print_stats = net_pv_print_stats,
	.destroy = net_pv_destroy,
	.save = net_pv_save,
};

int dev_net_pv_create(struct kapsel_vm *vm, const struct vm_net_config *config, unsigned unit)
{
	char error[512];
	struct net_pv *n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->control_fd = -1;
	n->unit = unit;
	int err =
		net_backend_open(&n->backend, config, unit, vm_clock_ns(vm), error, sizeof(error));
	if (err) {
		kapsel_error("%s", error);
		free(n);
		return err;
	}
	n->backend_open = true;
	n->dev.ops = &net_pv_ops;
	n->dev.priv = n;
	n->dev.desc.type = KAPSEL_DEV_NET_PV;
	n->dev.desc.unit = (uint16_t)unit;
	n->dev.desc.mtu_bytes = KAPSEL_NET_MTU_BYTES;
	vm_config_net_mac(vm->config, unit, n->dev.desc.mac);
	err = vm_add_device(vm, &n->dev);
	if (err) {
		kapsel_error("cannot attach net %u ('%s'): %s", unit, config->path,
			     err == -ENOSPC ? "too many devices (at most 16)" : strerror(-err));
		net_backend_close(&n->backend);
		free(n);
		return err;
	}
	/* From here on vm_destroy calls net_pv_destroy, which undoes the rest. */
	err = vm_add_doorbell(vm, &n->dev);
	if (err) {
		kapsel_error("net %u ('%s'): cannot create its doorbell: %s", unit, config->path,
			     strerror(-err));
		return err;
	}
	n->control_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (n->control_fd < 0)
		return -errno;
	pthread_mutex_init(&n->control.lock, NULL);
	pthread_cond_init(&n->control.done, NULL);
	n->control_ready = true;

	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&n->thread, NULL, net_pv_thread_main, n);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		kapsel_error("net %u ('%s'): cannot start its I/O thread: %s", unit, config->path,
			     strerror(err));
		return -err;
	}
	n->thread_started = true;
	char name[16];
	snprintf(name, sizeof(name), "kapsel-net%u", unit);
	pthread_setname_np(n->thread, name);
	kapsel_debug("net %u: PV network device %u on %s '%s'", unit, n->dev.desc.index,
		     config->backend == VM_NET_BACKEND_TAP ? "tap" : "socket", config->path);
	return 0;
}
