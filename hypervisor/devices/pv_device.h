/* The skeleton every PV ring device uses: setup handshake, doorbell, serving thread or in-exit serving, quiesce/resume, publish and notify, counters. */
#ifndef KAPSEL_PV_DEVICE_H
#define KAPSEL_PV_DEVICE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "devices/device.h"
#include "devices/pv_queue.h"

/* At most one queue per vCPU (multi-queue block). */
#define PV_DEVICE_MAX_QUEUES 16u

struct pv_device;

/* Where a device's requests are served. */
enum pv_device_serving {
	/* On the device's own thread, woken by an ioeventfd doorbell (no exit
	 * to user space per kick).  For work that may block or take long. */
	PV_SERVE_ON_THREAD,
	/* On the vCPU thread, in the exit of the guest's doorbell write.  For
	 * short, bounded work: no thread, no lock, nothing to quiesce. */
	PV_SERVE_IN_EXIT,
};

/*
 * What a PV device implements; pv_device.c does the rest.  serve is
 * required; every other hook is optional (NULL) and says what its default
 * is.  Hooks run on the serving thread (the device's thread, or the vCPU
 * thread for PV_SERVE_IN_EXIT) unless noted.
 */
struct pv_device_class {
	enum pv_device_serving serving;
	unsigned queue_count; /* rings the guest may set up (setup->queue), at most PV_DEVICE_MAX_QUEUES;
			       * the default of pv->queue_count, which a device may lower or raise
			       * after pv_device_init (multi-queue block) */
	/* Queues 1.. each signal the channel the guest names in their
	 * DEVICE_SETUP (setup->evtchn_port: allocated, not the control
	 * channel), at once when they publish; queue 0 and devices without
	 * this signal the channel bound to the device (EVTCHN_BIND_DEVICE). */
	bool per_queue_channels;
	const char *thread_name; /* "kapsel-blk": the thread is named that plus the unit */
	/* The device's thread reads the doorbell and control eventfds itself
	 * (blocking mode; e.g. through io_uring) and supplies wait; it calls
	 * pv_device_count_kicks for what it reads from the doorbell. */
	bool device_reads_eventfds;

	/* Take requests from the queues (pv_queue_pending/take), answer them
	 * (pv_queue_respond) or start their work.  Returns true if it did
	 * anything (the loop then looks again before sleeping).  Must take no
	 * request while pv->quiescing or pv->switching. */
	bool (*serve)(struct pv_device *pv);
	/* Requests taken and not answered yet (I/O in flight, a request held
	 * for rate-limit tokens).  A ring switch and quiesce wait for 0.
	 * Default 0: the device answers every request within serve. */
	unsigned (*in_flight)(struct pv_device *pv);
	/* Queue's ring is being replaced or dropped (DEVICE_SETUP, reset):
	 * forget requests of it held back, not in flight (a request parked for
	 * tokens).  In-flight ones finish first and are not answered. */
	void (*ring_replaced)(struct pv_device *pv, unsigned queue);
	/* The guest broke queue's ring (once per ring): log it with the
	 * device's name.  Default: a generic guest warning. */
	void (*ring_broken)(struct pv_device *pv, unsigned queue);
	/* Thread only: the first thing the new thread does (e.g. queue
	 * reads of the eventfds). */
	void (*thread_begin)(struct pv_device *pv);
	/* Thread only: collect finished work first in each pass (e.g.
	 * io_uring completions, answering them).  True if any. */
	bool (*collect)(struct pv_device *pv);
	/* Thread only: after each pass's publish (answered: it published
	 * responses), e.g. to fold counters.  Also once at the end. */
	void (*after_publish)(struct pv_device *pv, bool answered);
	/* Thread only: spin a while for new work before sleeping; true if
	 * some arrived.  Not called while quiescing. */
	bool (*poll)(struct pv_device *pv);
	/* Thread only: may the device sleep waiting for a kick on queue?
	 * Default: yes.  No means it sleeps without asking for one (it
	 * expects another wake-up, e.g. a completion, or has nothing to
	 * take from queue until something else happens). */
	bool (*wants_kick)(struct pv_device *pv, unsigned queue);
	/* Thread only: a file descriptor whose readability also ends the
	 * sleep of the default wait (e.g. a network backend), or -1. */
	int (*wait_fd)(struct pv_device *pv);
	/* Thread only: sleep until a kick, a control request or the device's
	 * own event.  Default: poll(2) on the doorbell, the control eventfd
	 * and wait_fd, until pv->wake_at_ns if set.  Required with
	 * device_reads_eventfds. */
	void (*wait)(struct pv_device *pv);
	/* Thread only: the thread ends (VM teardown): finish or cancel all
	 * work, so nothing reaches guest memory after it returns. */
	void (*drain)(struct pv_device *pv);
};

/* What the vCPU (or control) thread asks of the serving thread. */
struct pv_device_control {
	pthread_mutex_t lock;
	pthread_cond_t done;
	bool stop;
	uint64_t setup_requested; /* bumped per ring change */
	uint64_t setup_done;	  /* the serving thread caught up to this */
	struct ring_backend next_ring[PV_DEVICE_MAX_QUEUES];
	uint64_t next_gpa[PV_DEVICE_MAX_QUEUES];
	uint32_t next_pages[PV_DEVICE_MAX_QUEUES];
	bool next_set[PV_DEVICE_MAX_QUEUES];	/* a change for this queue waits */
	bool next_active[PV_DEVICE_MAX_QUEUES]; /* false: drop the ring */
	bool ever_set_up[PV_DEVICE_MAX_QUEUES]; /* for print_stats */
	uint32_t slots[PV_DEVICE_MAX_QUEUES];	/* of the ring asked for last, 0 = none */
	bool quiesce;				/* take no new requests, finish the rest */
	bool quiesced;				/* the serving thread did */
};

struct pv_device {
	struct kapsel_device dev; /* dev.priv is the device's own struct */
	const struct pv_device_class *cls;
	struct pv_queue *queues; /* queue_count of them, the device's */
	unsigned queue_count;	 /* cls->queue_count unless the device changed it before start */
	uint32_t queue_port[PV_DEVICE_MAX_QUEUES]; /* per_queue_channels: UINT32_MAX = none (atomic) */
	uint64_t queue_notifications[PV_DEVICE_MAX_QUEUES]; /* signals sent for each queue (atomic) */
	unsigned unit;
	int control_fd; /* eventfd: the control block changed, or -1 */
	bool control_ready, thread_started;
	pthread_t thread;
	struct pv_device_control control;
	uint64_t kicks;		/* doorbell writes seen (atomic) */
	uint64_t notifications; /* event channel signals sent (atomic) */

	/* ---- serving thread only ---- */
	bool stopping;
	bool quiescing;	     /* control.quiesce as last seen */
	bool switching;	     /* a ring change waits for in-flight work to end */
	bool notify_owed;    /* a publish asked for a signal not sent yet */
	uint64_t wake_at_ns; /* default wait: wake by this vm_clock_ns, 0 = no */
};

/* The device struct a hook's pv belongs to (dev.priv). */
static inline void *pv_device_priv(struct pv_device *pv)
{
	return pv->dev.priv;
}

/*
 * Fill pv for a device of class cls whose struct is priv, serving queues
 * (cls->queue_count, initialised with pv_queue_init), with ops for the
 * guest-visible descriptor (dev.desc.type = ops->type, unit).  No
 * resources yet.  Precondition: pv zeroed.
 */
void pv_device_init(struct pv_device *pv, const struct pv_device_class *cls,
		    const struct kapsel_device_ops *ops, void *priv, struct pv_queue *queues,
		    unsigned unit);

/*
 * Attach pv to vm (vm_add_device) and give it its doorbell: an ioeventfd
 * for PV_SERVE_ON_THREAD, a trapped port for PV_SERVE_IN_EXIT.  what
 * names the device in messages ("disk 0 ('a.img')").  Returns 0 or a
 * negative errno (message printed).  If vm_add_device failed nothing
 * is attached and the caller frees pv's device; after that vm_destroy
 * calls ops->destroy, which must call pv_device_destroy.
 */
int pv_device_attach(struct kapsel_vm *vm, struct pv_device *pv, const char *what);

/*
 * Start serving: the control eventfd and the serving thread
 * (PV_SERVE_ON_THREAD; nothing for PV_SERVE_IN_EXIT).  Precondition:
 * dev.vm is set and dev.doorbell_fd is the doorbell (pv_device_attach,
 * or a test's own eventfd).  Returns 0 or a negative errno (message
 * printed, naming what).
 */
int pv_device_start(struct pv_device *pv, const char *what);

/* Stop the thread (after its drain hook) and release the skeleton's
 * resources; the device frees its own after.  Safe on a partly started
 * device. */
void pv_device_destroy(struct pv_device *pv);

/* ---- Device ops a PV device may put in its kapsel_device_ops as they are
 * (they find the pv_device with pv_device_of) ---- */

/* DEVICE_SETUP: check setup->queue, map and validate the ring, hand it to
 * the serving thread and wait until it serves it (the guest's first kick
 * after the hypercall finds it).  A ring in use is replaced once its
 * in-flight work ended (dropped unanswered).  Returns 0 or a negative
 * KAPSEL_E* errno for the guest. */
int pv_device_setup(struct kapsel_device *dev, const struct kapsel_device_setup *setup);
/* A reboot: drop every ring once its in-flight work ended. */
void pv_device_reset(struct kapsel_device *dev);
/* Finish in-flight work and take no new requests; returns when done. */
void pv_device_quiesce(struct kapsel_device *dev);
/* Serve the rings again. */
void pv_device_resume(struct kapsel_device *dev);
/* PV_SERVE_IN_EXIT doorbell: a write is a kick (served now); reads see
 * all ones. */
void pv_device_doorbell_write(struct kapsel_device *dev, uint16_t port, unsigned size,
			      uint32_t value);
void pv_device_doorbell_read(struct kapsel_device *dev, uint16_t port, unsigned size,
			     uint32_t *value);

/* The pv_device of a kapsel_device made by pv_device_init. */
static inline struct pv_device *pv_device_of(struct kapsel_device *dev)
{
	return (struct pv_device *)dev; /* dev is pv's first member */
}

/* ---- For save and load ---- */

/* True once quiesce finished (the serving thread leaves the queues alone
 * until resume; the lock orders the caller's reads after its writes). */
bool pv_device_is_quiesced(struct pv_device *pv);

/* Serve a saved ring (pv_queue_restore checks it; record names the
 * record in messages) on queue, and look at it: requests the guest queued
 * before the save wait there.  Returns 0 or -EINVAL/-EIO with error. */
int pv_device_restore_queue(struct pv_device *pv, unsigned queue,
			    const struct pv_queue_state *state, const char *record, char *error,
			    size_t error_len);

/* ---- Per-queue channels (per_queue_channels) ---- */

/* port may signal completions: allocated, not the control channel.  On a
 * vCPU thread in an exit (under the VM lock). */
bool pv_device_port_usable(const struct kapsel_vm *vm, uint32_t port);
/* The channel queue's completions go to (UINT32_MAX: the device's). */
void pv_device_set_queue_port(struct pv_device *pv, unsigned queue, uint32_t port);
uint32_t pv_device_queue_port(struct pv_device *pv, unsigned queue);

/* ---- For print_stats (any thread) ---- */

/* Slots of the ring set up last on queue, 0 if none is set up. */
uint32_t pv_device_ring_slots(struct pv_device *pv, unsigned queue);
/* True if the guest ever set queue's ring up. */
bool pv_device_ever_set_up(struct pv_device *pv, unsigned queue);

/* ---- For hooks on the serving thread ---- */

/* Publish queue's responses now (before taking more: pending counts
 * unpublished responses as outstanding); the signal the guest asked for
 * goes out with the pass's final publish. */
void pv_device_publish_queue(struct pv_device *pv, unsigned queue);
/* The guest must be signalled at the end of this pass. */
static inline void pv_device_owe_notification(struct pv_device *pv)
{
	pv->notify_owed = true;
}
/* Publish every queue and signal the guest's event channel once if any
 * publish asked (or one is owed).  The loop does this after serve. */
void pv_device_publish(struct pv_device *pv);
/* Count n doorbell writes (devices that read the doorbell themselves). */
static inline void pv_device_count_kicks(struct pv_device *pv, uint64_t n)
{
	__atomic_fetch_add(&pv->kicks, n, __ATOMIC_RELAXED);
}
/* Requests published on queue and not taken (see pv_queue_pending); logs
 * a broken ring once through cls->ring_broken. */
int pv_device_pending(struct pv_device *pv, unsigned queue);

#endif
