/* The skeleton every PV ring device uses: setup handshake, doorbell, serving thread or in-exit serving, quiesce/resume, publish and notify, counters. */
#define _GNU_SOURCE
#include "devices/pv_device.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sandbox.h"
#include "core/vm.h"

/*
 * Threads (PV_SERVE_ON_THREAD): the device ops run on the vCPU (or main,
 * or control) thread; the queues belong to the serving thread.  The two
 * meet only in struct pv_device_control, under its lock, and the vCPU
 * side wakes the serving thread by writing the control eventfd.
 *
 * The serving thread's loop (pv_device_thread_main):
 *   collect finished work (hook)
 *   take the control block: stop, quiesce, ring changes (a change waits
 *     until the in-flight work of the old ring ended)
 *   count kicks that came meanwhile (unless the device reads the doorbell)
 *   serve (hook): take requests, answer or start them
 *   publish every queue, one event channel signal if the guest asked
 *   quiesced? say so;  did anything? go round again
 *   poll (hook); ask for kicks on each queue (ring.h event indices) and
 *   look once more; sleep (hook, or poll(2) on the eventfds)
 */

/* ---- Setup, doorbell, start and stop ------------------------------------- */

void pv_device_init(struct pv_device *pv, const struct pv_device_class *cls,
		    const struct kapsel_device_ops *ops, void *priv, struct pv_queue *queues,
		    unsigned unit)
{
	pv->cls = cls;
	pv->queues = queues;
	pv->queue_count = cls->queue_count;
	for (unsigned q = 0; q < PV_DEVICE_MAX_QUEUES; q++)
		pv->queue_port[q] = UINT32_MAX;
	pv->unit = unit;
	pv->control_fd = -1;
	pv->dev.ops = ops;
	pv->dev.priv = priv;
	pv->dev.desc.type = ops->type;
	pv->dev.desc.unit = (uint16_t)unit;
	pv->dev.doorbell_fd = -1;
	pv->dev.evtchn_port = UINT32_MAX;
}

int pv_device_attach(struct kapsel_vm *vm, struct pv_device *pv, const char *what)
{
	int err = vm_add_device(vm, &pv->dev);
	if (err) {
		kapsel_error("cannot attach %s: %s", what,
			     err == -ENOSPC ? "too many devices (at most 16)" : strerror(-err));
		return err;
	}
	if (pv->cls->serving == PV_SERVE_IN_EXIT) {
		vm_add_trapped_doorbell(vm, &pv->dev);
		return 0;
	}
	err = vm_add_doorbell(vm, &pv->dev);
	if (err)
		kapsel_error("%s: cannot create its doorbell: %s", what, strerror(-err));
	return err;
}

static void *pv_device_thread_main(void *opaque);

int pv_device_start(struct pv_device *pv, const char *what)
{
	if (pv->cls->serving == PV_SERVE_IN_EXIT)
		return 0;
	bool blocking = pv->cls->device_reads_eventfds;
	if (blocking) {
		/* The device reads the doorbell in a way that waits (io_uring). */
		int flags = fcntl(pv->dev.doorbell_fd, F_GETFL);
		if (flags < 0 || fcntl(pv->dev.doorbell_fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
			return -errno;
	}
	pv->control_fd = eventfd(0, EFD_CLOEXEC | (blocking ? 0 : EFD_NONBLOCK));
	if (pv->control_fd < 0)
		return -errno;
	pthread_mutex_init(&pv->control.lock, NULL);
	pthread_cond_init(&pv->control.done, NULL);
	pv->control_ready = true;

	/* Signals are for the vCPU and main threads, not this one. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int err = pthread_create(&pv->thread, NULL, pv_device_thread_main, pv);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		kapsel_error("%s: cannot start its I/O thread: %s", what, strerror(err));
		return -err;
	}
	pv->thread_started = true;
	char name[16];
	snprintf(name, sizeof(name), "%s%u", pv->cls->thread_name, pv->unit);
	pthread_setname_np(pv->thread, name);
	return 0;
}

static void pv_device_wake(struct pv_device *pv)
{
	uint64_t one = 1;
	ssize_t n = write(pv->control_fd, &one, sizeof(one));
	(void)n; /* an eventfd at its maximum is already signalled */
}

void pv_device_destroy(struct pv_device *pv)
{
	if (pv->thread_started) {
		pthread_mutex_lock(&pv->control.lock);
		pv->control.stop = true;
		pthread_mutex_unlock(&pv->control.lock);
		pv_device_wake(pv);
		pthread_join(pv->thread, NULL);
		pv->thread_started = false;
	}
	if (pv->control_fd >= 0)
		close(pv->control_fd);
	pv->control_fd = -1;
	if (pv->control_ready) {
		pthread_mutex_destroy(&pv->control.lock);
		pthread_cond_destroy(&pv->control.done);
		pv->control_ready = false;
	}
}

/* ---- The handshake: the vCPU side --------------------------------------- */

/* Hand queue's new ring (NULL: none) to the serving thread and wait until
 * it serves it.  In-exit devices install it at once. */
static int pv_device_post_ring(struct pv_device *pv, unsigned queue,
			       const struct ring_backend *ring, uint64_t ring_gpa,
			       uint32_t ring_pages)
{
	if (pv->cls->serving == PV_SERVE_IN_EXIT) {
		pv_queue_install(&pv->queues[queue], ring, ring_gpa, ring_pages);
		return 0;
	}
	pthread_mutex_lock(&pv->control.lock);
	pv->control.next_set[queue] = true;
	pv->control.next_active[queue] = ring != NULL;
	if (ring) {
		pv->control.next_ring[queue] = *ring;
		pv->control.ever_set_up[queue] = true;
	}
	pv->control.next_gpa[queue] = ring ? ring_gpa : 0;
	pv->control.next_pages[queue] = ring ? ring_pages : 0;
	pv->control.slots[queue] = ring ? ring->size : 0;
	uint64_t ticket = ++pv->control.setup_requested;
	pthread_mutex_unlock(&pv->control.lock);
	uint64_t one = 1;
	if (write(pv->control_fd, &one, sizeof(one)) < 0)
		return -KAPSEL_EIO;
	pthread_mutex_lock(&pv->control.lock);
	while (pv->control.setup_done < ticket && !pv->control.stop)
		pthread_cond_wait(&pv->control.done, &pv->control.lock);
	pthread_mutex_unlock(&pv->control.lock);
	return 0;
}

int pv_device_setup(struct kapsel_device *dev, const struct kapsel_device_setup *setup)
{
	struct pv_device *pv = pv_device_of(dev);
	if (setup->queue >= pv->queue_count)
		return -KAPSEL_EINVAL;
	/* A queue with its own channel (per_queue_channels, queues 1..): the
	 * guest names an allocated channel of its own (not the control
	 * channel) in setup->evtchn_port. */
	bool own_port = pv->cls->per_queue_channels && setup->queue > 0;
	if (own_port && !pv_device_port_usable(dev->vm, setup->evtchn_port))
		return -KAPSEL_EINVAL;
	struct ring_backend ring;
	int err = pv_queue_map(&pv->queues[setup->queue], &dev->vm->mem, setup->ring_gpa,
			       setup->ring_pages, &ring);
	if (err)
		return err;
	if (own_port)
		pv_device_set_queue_port(pv, setup->queue, setup->evtchn_port);
	return pv_device_post_ring(pv, setup->queue, &ring, setup->ring_gpa, setup->ring_pages);
}

void pv_device_reset(struct kapsel_device *dev)
{
	struct pv_device *pv = pv_device_of(dev);
	for (unsigned q = 0; q < pv->queue_count; q++) {
		bool set_up;
		if (pv->cls->serving == PV_SERVE_IN_EXIT) {
			set_up = pv->queues[q].active;
		} else {
			pthread_mutex_lock(&pv->control.lock);
			set_up = pv->control.slots[q] != 0;
			pthread_mutex_unlock(&pv->control.lock);
		}
		if (set_up)
			pv_device_post_ring(pv, q, NULL, 0, 0);
		pv_device_set_queue_port(pv, q, UINT32_MAX); /* the channels are gone too */
	}
}

static void pv_device_set_quiesce(struct pv_device *pv, bool quiesce)
{
	if (pv->cls->serving == PV_SERVE_IN_EXIT)
		return; /* a paused vCPU cannot kick: nothing runs */
	pthread_mutex_lock(&pv->control.lock);
	pv->control.quiesce = quiesce;
	if (!quiesce)
		pv->control.quiesced = false; /* a save from now on must quiesce again */
	pthread_mutex_unlock(&pv->control.lock);
	pv_device_wake(pv);
	if (!quiesce)
		return;
	pthread_mutex_lock(&pv->control.lock);
	while (!pv->control.quiesced && !pv->control.stop)
		pthread_cond_wait(&pv->control.done, &pv->control.lock);
	pthread_mutex_unlock(&pv->control.lock);
}

void pv_device_quiesce(struct kapsel_device *dev)
{
	pv_device_set_quiesce(pv_device_of(dev), true);
}

void pv_device_resume(struct kapsel_device *dev)
{
	pv_device_set_quiesce(pv_device_of(dev), false);
}

bool pv_device_is_quiesced(struct pv_device *pv)
{
	if (pv->cls->serving == PV_SERVE_IN_EXIT)
		return true;
	pthread_mutex_lock(&pv->control.lock);
	bool quiesced = pv->control.quiesced;
	pthread_mutex_unlock(&pv->control.lock);
	return quiesced;
}

int pv_device_restore_queue(struct pv_device *pv, unsigned queue,
			    const struct pv_queue_state *state, const char *record, char *error,
			    size_t error_len)
{
	struct ring_backend ring;
	int err = pv_queue_restore(&pv->queues[queue], &pv->dev.vm->mem, state, record, &ring,
				   error, error_len);
	if (err)
		return err;
	if (pv_device_post_ring(pv, queue, &ring, state->ring_gpa, state->ring_pages)) {
		snprintf(error, error_len, "%s: cannot hand the ring to the I/O thread", record);
		return -EIO;
	}
	/* Requests the guest queued before the save wait in the ring: look. */
	if (pv->cls->serving == PV_SERVE_ON_THREAD)
		pv_device_wake(pv);
	return 0;
}

uint32_t pv_device_ring_slots(struct pv_device *pv, unsigned queue)
{
	if (pv->cls->serving == PV_SERVE_IN_EXIT)
		return pv->queues[queue].active ? pv->queues[queue].ring.size : 0;
	pthread_mutex_lock(&pv->control.lock);
	uint32_t slots = pv->control.setup_done ? pv->control.slots[queue] : 0;
	pthread_mutex_unlock(&pv->control.lock);
	return slots;
}

bool pv_device_ever_set_up(struct pv_device *pv, unsigned queue)
{
	if (pv->cls->serving == PV_SERVE_IN_EXIT)
		return pv->queues[queue].active;
	pthread_mutex_lock(&pv->control.lock);
	bool ever = pv->control.ever_set_up[queue];
	pthread_mutex_unlock(&pv->control.lock);
	return ever;
}

/* ---- Serving: publish, notify, pending ------------------------------------ */

bool pv_device_port_usable(const struct kapsel_vm *vm, uint32_t port)
{
	return port < KAPSEL_EVTCHN_COUNT && port != KAPSEL_EVTCHN_CONTROL &&
	       vm->evtchn[port].allocated;
}

void pv_device_set_queue_port(struct pv_device *pv, unsigned queue, uint32_t port)
{
	__atomic_store_n(&pv->queue_port[queue], port, __ATOMIC_RELEASE);
}

uint32_t pv_device_queue_port(struct pv_device *pv, unsigned queue)
{
	return __atomic_load_n(&pv->queue_port[queue], __ATOMIC_ACQUIRE);
}

static void pv_device_notify_port(struct pv_device *pv, uint32_t port, unsigned queue)
{
	if (port == UINT32_MAX)
		return; /* nobody bound a channel: the guest polls */
	vm_evtchn_notify(pv->dev.vm, port);
	__atomic_fetch_add(&pv->notifications, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&pv->queue_notifications[queue], 1, __ATOMIC_RELAXED);
}

static void pv_device_notify(struct pv_device *pv)
{
	pv_device_notify_port(pv, __atomic_load_n(&pv->dev.evtchn_port, __ATOMIC_ACQUIRE), 0);
}

void pv_device_publish_queue(struct pv_device *pv, unsigned queue)
{
	if (!pv_queue_publish(&pv->queues[queue]))
		return;
	/* A queue with its own channel is signalled on it (the vCPU the
	 * guest bound that channel to); the others share the device's. */
	if (pv->cls->per_queue_channels && queue > 0) {
		uint32_t port = pv_device_queue_port(pv, queue);
		if (port != UINT32_MAX) {
			pv_device_notify_port(pv, port, queue);
			return;
		}
	}
	pv->notify_owed = true;
}

void pv_device_publish(struct pv_device *pv)
{
	for (unsigned q = 0; q < pv->queue_count; q++)
		if (pv->queues[q].written)
			pv_device_publish_queue(pv, q);
	if (!pv->notify_owed)
		return;
	pv->notify_owed = false;
	pv_device_notify(pv);
}

int pv_device_pending(struct pv_device *pv, unsigned queue)
{
	bool newly_broken;
	int pending = pv_queue_pending(&pv->queues[queue], &newly_broken);
	if (!newly_broken)
		return pending;
	if (pv->cls->ring_broken) {
		pv->cls->ring_broken(pv, queue);
	} else {
		const struct ring_backend *ring = &pv->queues[queue].ring;
		kapsel_guest_warn(
			&pv->dev.vm->guest_log,
			"%s %u: the guest broke its ring %u (producer index %u); the ring is no longer served",
			pv->dev.ops->name, pv->unit, queue, ring->bad_req_prod);
	}
	return pending;
}

/* ---- Serving in the exit of the kick -------------------------------------- */

void pv_device_doorbell_write(struct kapsel_device *dev, uint16_t port, unsigned size,
			      uint32_t value)
{
	(void)port;
	(void)size;
	(void)value;
	struct pv_device *pv = pv_device_of(dev);
	pv_device_count_kicks(pv, 1);
	pv->cls->serve(pv);
	pv_device_publish(pv);
}

void pv_device_doorbell_read(struct kapsel_device *dev, uint16_t port, unsigned size,
			     uint32_t *value)
{
	(void)dev;
	(void)port;
	(void)size;
	*value = UINT32_MAX;
}

/* ---- Serving on the device's thread ----------------------------------------- */

static unsigned pv_device_in_flight(struct pv_device *pv)
{
	return pv->cls->in_flight ? pv->cls->in_flight(pv) : 0;
}

/* Take the control block: stop, quiesce and ring changes. */
static void pv_device_take_control(struct pv_device *pv)
{
	const struct pv_device_class *cls = pv->cls;
	pthread_mutex_lock(&pv->control.lock);
	if (pv->control.stop)
		pv->stopping = true;
	pv->quiescing = pv->control.quiesce;
	if (!pv->quiescing)
		pv->control.quiesced = false;
	if (pv->control.setup_requested != pv->control.setup_done && !pv->switching) {
		/* Requests of the old rings still in flight finish first and
		 * are not answered; requests held back are forgotten now. */
		pv->switching = true;
		for (unsigned q = 0; q < pv->queue_count; q++) {
			if (!pv->control.next_set[q])
				continue;
			pv->queues[q].active = false;
			if (cls->ring_replaced)
				cls->ring_replaced(pv, q);
		}
	}
	if (pv->switching && pv_device_in_flight(pv) == 0) {
		for (unsigned q = 0; q < pv->queue_count; q++) {
			if (!pv->control.next_set[q])
				continue;
			pv_queue_install(&pv->queues[q],
					 pv->control.next_active[q] ? &pv->control.next_ring[q]
								    : NULL,
					 pv->control.next_gpa[q], pv->control.next_pages[q]);
			pv->control.next_set[q] = false;
		}
		pv->switching = false;
		pv->control.setup_done = pv->control.setup_requested;
		pthread_cond_broadcast(&pv->control.done);
	}
	pthread_mutex_unlock(&pv->control.lock);
}

/* Quiesced: nothing in flight or held, no ring change pending, every
 * response published. */
static void pv_device_check_quiesced(struct pv_device *pv)
{
	if (!pv->quiescing || pv->switching || pv_device_in_flight(pv))
		return;
	for (unsigned q = 0; q < pv->queue_count; q++)
		if (pv->queues[q].written)
			return;
	pthread_mutex_lock(&pv->control.lock);
	if (pv->control.quiesce && !pv->control.quiesced) {
		pv->control.quiesced = true;
		pthread_cond_broadcast(&pv->control.done);
	}
	pthread_mutex_unlock(&pv->control.lock);
}

static void pv_device_drain_eventfd(int fd, uint64_t *count)
{
	uint64_t value;
	if (read(fd, &value, sizeof(value)) == (ssize_t)sizeof(value) && count)
		__atomic_fetch_add(count, value, __ATOMIC_RELAXED);
}

/* Ask for a kick on every queue that wants one, then look once more:
 * true if requests arrived meanwhile (do not sleep). */
static bool pv_device_prepare_sleep(struct pv_device *pv)
{
	/* Quiesced, the rings in guest RAM must not change (req_event). */
	if (pv->switching || pv->quiescing)
		return false;
	for (unsigned q = 0; q < pv->queue_count; q++) {
		if (!pv->queues[q].active)
			continue;
		if (pv->cls->wants_kick && !pv->cls->wants_kick(pv, q))
			continue;
		if (pv_queue_prepare_sleep(&pv->queues[q]))
			return true;
	}
	return false;
}

static void pv_device_default_wait(struct pv_device *pv)
{
	int timeout_ms = -1;
	if (pv->wake_at_ns) {
		uint64_t now = vm_clock_ns(pv->dev.vm);
		uint64_t wait = pv->wake_at_ns > now ? pv->wake_at_ns - now : 0;
		timeout_ms = wait / 1000000u > INT32_MAX ? INT32_MAX
							 : (int)((wait + 999999u) / 1000000u);
	}
	struct pollfd fds[3] = {
		{ .fd = pv->dev.doorbell_fd, .events = POLLIN },
		{ .fd = pv->control_fd, .events = POLLIN },
		{ .fd = pv->cls->wait_fd ? pv->cls->wait_fd(pv) : -1, .events = POLLIN },
	};
	if (poll(fds, 3, timeout_ms) <= 0)
		return;
	if (fds[0].revents & POLLIN)
		pv_device_drain_eventfd(pv->dev.doorbell_fd, &pv->kicks);
	if (fds[1].revents & POLLIN)
		pv_device_drain_eventfd(pv->control_fd, NULL);
}

static void *pv_device_thread_main(void *opaque)
{
	struct pv_device *pv = opaque;
	const struct pv_device_class *cls = pv->cls;
	sandbox_thread_role(SANDBOX_ROLE_IO);
	if (cls->thread_begin)
		cls->thread_begin(pv);
	for (;;) {
		bool progress = cls->collect ? cls->collect(pv) : false;
		pv_device_take_control(pv);
		if (pv->stopping)
			break;
		if (!cls->device_reads_eventfds) /* kicks that came while we were busy */
			pv_device_drain_eventfd(pv->dev.doorbell_fd, &pv->kicks);
		if (!pv->switching)
			progress |= cls->serve(pv);
		bool answered = pv->notify_owed;
		for (unsigned q = 0; q < pv->queue_count; q++)
			answered |= pv->queues[q].written;
		pv_device_publish(pv);
		if (cls->after_publish)
			cls->after_publish(pv, answered);
		pv_device_check_quiesced(pv);
		if (progress)
			continue;
		if (cls->poll && !pv->quiescing && cls->poll(pv))
			continue;
		if (pv_device_prepare_sleep(pv))
			continue;
		if (cls->wait)
			cls->wait(pv);
		else
			pv_device_default_wait(pv);
	}
	if (cls->drain)
		cls->drain(pv);
	if (cls->after_publish)
		cls->after_publish(pv, false);
	return NULL;
}
