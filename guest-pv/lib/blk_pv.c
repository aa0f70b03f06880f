/* PV block driver: the guest end of a blk.h device's rings (one per vCPU), with doorbell kicks and event-channel sleeps suppressed by event indices, batched wake-ups, and kicks that ride on the sleep. */
#include "block_internal.h"
#include "kapsel_guest/ring_setup.h"

#include "kapsel/blk.h"
#include "kapsel_guest/arch.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/ring.h"
#include "kapsel_guest/smp.h"

/* 256 slots: 20 request pages + 4 response pages + the header page. */
#define BLK_PV_RING_ORDER 8u
#define BLK_PV_SLOTS (1u << BLK_PV_RING_ORDER)
#define PAGE_BYTES 4096u

/* One ring with everything that goes with it; its lock covers all of it. */
struct blk_pv_driver {
	struct kg_spinlock lock;
	struct kg_ring ring;
	uint32_t port;		/* event channel the backend signals for this ring */
	uint32_t bound_cpu;	/* the vCPU port is bound to (EVTCHN_BIND_VCPU) */
	uint16_t doorbell_port; /* 0: kick with EVTCHN_SEND instead */
	uint16_t device_index;
	bool kick_and_block; /* the doorbell can ride on the sleep (ABI 1.7) */
	uint32_t queued;     /* pushed since the last kick */
	/* Adaptive completion polling (blk_pv_reap): spin up to poll_window_ns
	 * (at most device->poll_ns) before sleeping in the hypervisor. */
	uint64_t poll_window_ns;
	uint64_t poll_bound_ns; /* device->poll_ns the window was last fitted to */
	uint64_t last_wait_ns;	/* how long the last wait took, to its wake-up */
	uint32_t free_count;
	uint32_t free_ids[BLK_PV_SLOTS];
	struct kg_block_request *by_id[BLK_PV_SLOTS];
	struct kapsel_device_setup setup; /* passed by guest-physical address */
};

/* device->driver: the rings, queue_count of them. */
struct blk_pv_queues {
	struct blk_pv_driver *queue[KAPSEL_MAX_VCPUS];
};

/* The calling vCPU's ring. */
static struct blk_pv_driver *driver_of(struct kg_block_device *device)
{
	const struct blk_pv_queues *queues = device->driver;
	return queues->queue[kg_block_queue_here(device)];
}

/* Completions of drv go to the vCPU that submits on it (its upcall, its
 * BLOCK wake-up).  Under drv->lock. */
static void blk_pv_follow_cpu(struct blk_pv_driver *drv)
{
	unsigned cpu = kg_cpu_id();
	if (drv->bound_cpu == cpu || !kg_smp_available())
		return;
	if (kg_evtchn_bind_cpu(drv->port, cpu) == 0)
		drv->bound_cpu = cpu;
}

static int blk_pv_submit_locked(struct blk_pv_driver *drv, struct kg_block_request *request)
{
	struct kapsel_blk_request *slot = kg_ring_next_request(&drv->ring);
	if (!slot || drv->free_count == 0)
		return -KAPSEL_EAGAIN;
	uint32_t id = drv->free_ids[--drv->free_count];
	drv->by_id[id] = request;

	/* Fill the shared slot field by field: it holds a stale request. */
	request->submit_tsc = kg_rdtsc();
	slot->id = id;
	slot->op = (uint8_t)request->op;
	slot->segment_count = (uint8_t)request->segment_count;
	slot->flags = 0;
	slot->_pad = 0;
	slot->sector = request->sector;
	slot->sector_count = request->sector_count;
	slot->submit_tsc = request->submit_tsc;
	slot->_reserved = 0;
	for (uint32_t i = 0; i < request->segment_count; i++) {
		slot->segments[i].gpa = kg_os_virt_to_phys(request->segments[i].buffer);
		slot->segments[i].length_bytes = request->segments[i].length_bytes;
		slot->segments[i]._pad = 0;
	}
	kg_ring_push_request(&drv->ring);
	drv->queued++;
	return 0;
}

static int blk_pv_submit(struct kg_block_device *device, struct kg_block_request *request)
{
	struct blk_pv_driver *drv = driver_of(device);
	kg_spin_lock(&drv->lock);
	blk_pv_follow_cpu(drv);
	int err = blk_pv_submit_locked(drv, request);
	kg_spin_unlock(&drv->lock);
	return err;
}

/* Publish the requests queued on drv.  Returns true if the backend asked
 * to be kicked (the kick is the caller's to send).  Under drv->lock. */
static bool blk_pv_publish_locked(struct kg_block_device *device, struct blk_pv_driver *drv)
{
	if (!drv->queued)
		return false;
	drv->queued = 0;
	if (!kg_ring_publish(&drv->ring)) {
		KG_BLOCK_COUNT(device, kicks_suppressed); /* the backend is still at work */
		return false;
	}
	return true;
}

static void blk_pv_ring_doorbell(struct kg_block_device *device, struct blk_pv_driver *drv)
{
	KG_BLOCK_COUNT(device, kicks);
	/* One doorbell for all rings: the backend looks at each. */
	if (drv->doorbell_port)
		kg_outw(drv->doorbell_port, 1);
	else
		kg_hc_evtchn_send(drv->port);
}

static void blk_pv_kick_locked(struct kg_block_device *device, struct blk_pv_driver *drv)
{
	if (blk_pv_publish_locked(device, drv))
		blk_pv_ring_doorbell(device, drv);
}

static void blk_pv_kick(struct kg_block_device *device)
{
	struct blk_pv_driver *drv = driver_of(device);
	kg_spin_lock(&drv->lock);
	blk_pv_kick_locked(device, drv);
	kg_spin_unlock(&drv->lock);
}

/* Move up to max published responses of drv to done[].  Under drv->lock. */
static unsigned blk_pv_collect(struct blk_pv_driver *drv, struct kg_block_request **done,
			       unsigned max)
{
	unsigned n = 0;
	const struct kapsel_blk_response *rsp;
	while (n < max && (rsp = kg_ring_peek_response(&drv->ring))) {
		uint64_t id = rsp->id;
		int32_t status = rsp->status;
		uint64_t pickup_tsc = rsp->pickup_tsc, complete_tsc = rsp->complete_tsc;
		kg_ring_consume_response(&drv->ring);
		if (id >= BLK_PV_SLOTS || !drv->by_id[id]) {
			kg_os_log("kapsel block: response with an unknown id ignored");
			continue;
		}
		struct kg_block_request *request = drv->by_id[id];
		drv->by_id[id] = 0;
		drv->free_ids[drv->free_count++] = (uint32_t)id;
		request->status = status;
		request->pickup_tsc = pickup_tsc;
		request->complete_tsc = complete_tsc;
		request->reap_tsc = kg_rdtsc();
		done[n++] = request;
	}
	return n;
}

/*
 * The completion came after the poll window, waited_ns after the poll
 * began (the sleep's wake-up included).  A wait the bound could have
 * covered widens the window to fit it with a quarter to spare; a longer
 * one halves the window, down to a quarter of the bound: a slow device
 * (large requests) spins only that long before it sleeps.  Not to zero:
 * here a vCPU that sleeps and wakes costs more than a short spin, most of
 * all on a loaded host, where the spin is time-sliced anyway.  A
 * completion found while polling leaves the window as it is: the spin
 * ended early and cost only the wait itself.
 */
static void blk_pv_fit_poll_window(struct blk_pv_driver *drv, uint64_t bound, uint64_t waited_ns)
{
	if (waited_ns <= bound) {
		uint64_t fit = waited_ns + waited_ns / 4;
		drv->poll_window_ns = fit < bound ? fit : bound;
	} else if (drv->poll_window_ns / 2 > bound / 4) {
		drv->poll_window_ns /= 2;
	} else {
		drv->poll_window_ns = bound / 4;
	}
}

/*
 * A wait that owes the backend a kick: send the kick with the sleep (one
 * exit, KICK_AND_BLOCK) rather than kick, spin and sleep (two), when the
 * spin is not expected to catch the answer: the guest spins not at all
 * (no poll bound), or the last wait outlasted the window it would spin
 * now.  The wait is sized from what the last one took (a large request's
 * service time, a batch's); a short one brings the spin back (the window
 * fits waits the bound covers, blk_pv_fit_poll_window).
 */
static bool blk_pv_kick_with_sleep(const struct blk_pv_driver *drv, uint64_t bound)
{
	return drv->kick_and_block && (bound == 0 || drv->last_wait_ns > drv->poll_window_ns);
}

static unsigned blk_pv_reap(struct kg_block_device *device, struct kg_block_request **done,
			    unsigned max, unsigned wake_count)
{
	struct blk_pv_driver *drv = driver_of(device);
	if (max == 0)
		return 0;
	kg_spin_lock(&drv->lock);
	/* A caller about to wait publishes what it queued first; the kick
	 * the backend asked for goes out below, perhaps with the sleep. */
	bool kick_owed = wake_count && blk_pv_publish_locked(device, drv);
	unsigned n = blk_pv_collect(drv, done, max);
	if (n || !wake_count || kg_ring_outstanding(&drv->ring) == 0) {
		if (kick_owed)
			blk_pv_ring_doorbell(device, drv);
		kg_spin_unlock(&drv->lock);
		if (n)
			KG_BLOCK_COUNT(device, polls);
		return n;
	}
	/* The wake-up must come to this vCPU. */
	blk_pv_follow_cpu(drv);
	uint64_t bound = device->poll_ns;
	if (drv->poll_bound_ns != bound) {
		/* A new bound (kg_block_set_poll_ns): start optimistic. */
		drv->poll_bound_ns = bound;
		drv->poll_window_ns = bound;
	}
	uint64_t start = kg_time_now_ns();
	/* Spinning before the kick is sent would wait for nothing. */
	bool kick_in_sleep = kick_owed && blk_pv_kick_with_sleep(drv, bound);
	if (kick_owed && !kick_in_sleep)
		blk_pv_ring_doorbell(device, drv);
	if (bound && !kick_in_sleep) {
		uint64_t deadline = start + drv->poll_window_ns;
		do {
			for (unsigned i = 0; i < 32; i++) {
				if (kg_ring_peek_response(&drv->ring)) {
					KG_BLOCK_COUNT(device, polls);
					drv->last_wait_ns = kg_time_now_ns() - start;
					n = blk_pv_collect(drv, done, max);
					kg_spin_unlock(&drv->lock);
					return n;
				}
				kg_cpu_relax();
			}
		} while (kg_time_now_ns() < deadline);
	}
	for (;;) {
		/* Requests published and unanswered: every one of them will be
		 * answered, so waking at the wake_count-th cannot hang.  (Read
		 * each time: a vCPU sharing this ring may reap meanwhile.) */
		uint32_t published = drv->ring.req_published - drv->ring.rsp_cons;
		uint32_t want = wake_count < published ? wake_count : published;
		if (want == 0)
			break;
		/* Clear the channel before looking, so a notification sent
		 * after the look leaves it pending and BLOCK returns at once. */
		kg_evtchn_test_and_clear(drv->port);
		if (kg_ring_prepare_sleep_for(&drv->ring, want))
			break;
		KG_BLOCK_COUNT(device, blocks);
		/* Not holding the ring's lock while asleep: another vCPU that
		 * shares this ring may submit meanwhile. */
		kg_spin_unlock(&drv->lock);
		int64_t slept = 0;
		if (kick_in_sleep)
			slept = kg_hc_kick_and_block(UINT64_MAX, 1ull << drv->device_index);
		else
			kg_hc_block(UINT64_MAX);
		kg_spin_lock(&drv->lock);
		if (kick_in_sleep) {
			kick_in_sleep = false;
			if (slept < 0)
				blk_pv_ring_doorbell(device, drv); /* refused: kick alone */
			else
				KG_BLOCK_COUNT(device, kicks_in_block);
		}
	}
	/* Enough answers came before the sleep: the kick still goes. */
	if (kick_in_sleep)
		blk_pv_ring_doorbell(device, drv);
	n = blk_pv_collect(drv, done, max);
	drv->last_wait_ns = kg_time_now_ns() - start;
	if (bound)
		blk_pv_fit_poll_window(drv, bound, drv->last_wait_ns);
	kg_spin_unlock(&drv->lock);
	return n;
}

static const struct kg_block_driver_ops blk_pv_ops = {
	.submit = blk_pv_submit,
	.kick = blk_pv_kick,
	.reap = blk_pv_reap,
};

/* GET_INFO through the ring, synchronously (block.c is not involved yet). */
static int blk_pv_get_info(struct kg_block_device *device, struct kapsel_blk_info *info_page)
{
	struct kg_block_request request = {
		.op = KAPSEL_BLK_OP_GET_INFO,
		.segment_count = 1,
		.segments = { { .buffer = info_page, .length_bytes = PAGE_BYTES } },
	};
	int err = blk_pv_submit(device, &request);
	if (err)
		return err;
	struct kg_block_request *done = 0;
	while (!done)
		blk_pv_reap(device, &done, 1, 1);
	/* Not counted in the queue's in_flight (block.c is not involved). */
	if (request.status)
		return request.status;
	if (info_page->magic != KAPSEL_BLK_INFO_MAGIC || info_page->logical_sector_bytes != 512)
		return -KAPSEL_EIO;
	return 0;
}

static const struct kg_ring_shape blk_pv_shape = {
	.order = BLK_PV_RING_ORDER,
	.request_bytes = sizeof(struct kapsel_blk_request),
	.response_bytes = sizeof(struct kapsel_blk_response),
};

/* Memory for one ring and its driver state; fills *drv, *memory. */
static int blk_pv_alloc_queue(const struct kapsel_device_desc *desc, uint16_t doorbell_port,
			      struct blk_pv_driver **drv, uint8_t **memory)
{
	uint32_t ring_pages = kg_ring_pages(blk_pv_shape.order, blk_pv_shape.request_bytes,
					    blk_pv_shape.response_bytes);
	uint32_t driver_pages = (sizeof(struct blk_pv_driver) + PAGE_BYTES - 1) / PAGE_BYTES;
	*memory = kg_os_alloc_pages(ring_pages + driver_pages);
	if (!*memory)
		return -KAPSEL_ENOMEM;
	*drv = (struct blk_pv_driver *)(*memory + ring_pages * PAGE_BYTES);
	for (uint32_t i = 0; i < BLK_PV_SLOTS; i++)
		(*drv)->free_ids[i] = BLK_PV_SLOTS - 1 - i;
	(*drv)->free_count = BLK_PV_SLOTS;
	(*drv)->doorbell_port = doorbell_port;
	(*drv)->device_index = desc->index;
	const struct kapsel_start_info *si = kg_platform_start_info();
	(*drv)->kick_and_block = doorbell_port && desc->index < KAPSEL_MAX_DEVICES &&
				 (si->features & KAPSEL_FEATURE_KICK_AND_BLOCK);
	(*drv)->lock = (struct kg_spinlock)KG_SPINLOCK_INIT;
	return 0;
}

/* Ring q > 0 (abi.md §12.1): a channel of its own, named in its setup. */
static int blk_pv_setup_queue(const struct kapsel_device_desc *desc, uint32_t q,
			      struct blk_pv_driver *drv, uint8_t *memory)
{
	uint32_t ring_pages = kg_ring_pages(blk_pv_shape.order, blk_pv_shape.request_bytes,
					    blk_pv_shape.response_bytes);
	kg_ring_init(&drv->ring, memory, blk_pv_shape.order, blk_pv_shape.request_bytes,
		     blk_pv_shape.response_bytes, 0);
	int64_t port = kg_hc_evtchn_alloc();
	if (port < 0)
		return -KAPSEL_EIO;
	drv->port = (uint32_t)port;
	drv->setup = (struct kapsel_device_setup){
		.magic = KAPSEL_DEVICE_SETUP_MAGIC,
		.revision = 1,
		.ring_gpa = kg_os_virt_to_phys(memory),
		.ring_pages = ring_pages,
		.evtchn_port = drv->port,
		.queue = q,
	};
	if (kg_hc_device_setup(desc->index, &drv->setup) < 0) {
		kg_hc_evtchn_close(drv->port);
		return -KAPSEL_EIO;
	}
	(void)ring_pages;
	return 0;
}

int kg_blk_pv_open(const struct kapsel_device_desc *desc, struct kg_block_device *device)
{
	const struct kapsel_start_info *si = kg_platform_start_info();
	if (!si || !(si->features & KAPSEL_FEATURE_BLOCK_PV) || !desc ||
	    desc->type != KAPSEL_DEV_BLOCK_PV)
		return -KAPSEL_ENODEV;

	/* One ring per vCPU, as many as the device offers (0: an older
	 * hypervisor, one ring). */
	unsigned queues = desc->queue_count ? desc->queue_count : 1;
	unsigned cpus = kg_cpu_count();
	if (queues > cpus)
		queues = cpus ? cpus : 1;
	if (queues > KAPSEL_MAX_VCPUS)
		queues = KAPSEL_MAX_VCPUS;
	uint16_t doorbell_port = (si->features & KAPSEL_FEATURE_DOORBELL) ? desc->doorbell_port : 0;

	struct blk_pv_queues *all = kg_os_alloc_pages(1);
	uint8_t *info_memory = kg_os_alloc_pages(1);
	if (!all || !info_memory)
		return -KAPSEL_ENOMEM;
	struct kapsel_blk_info *info_page = (struct kapsel_blk_info *)info_memory;
	uint8_t *memory;
	struct blk_pv_driver *drv;
	int err = blk_pv_alloc_queue(desc, doorbell_port, &drv, &memory);
	if (err)
		return err;
	all->queue[0] = drv;
	struct kg_ring *const rings[] = { &drv->ring };
	if (kg_ring_setup(desc->index, &blk_pv_shape, memory, rings, 1, &drv->setup, &drv->port))
		return -KAPSEL_EIO;

	device->ops = &blk_pv_ops;
	device->driver = all;
	device->queue_count = 1; /* GET_INFO on ring 0 first */
	err = blk_pv_get_info(device, info_page);
	if (err) {
		kg_hc_evtchn_close(drv->port);
		device->ops = 0;
		return err == -KAPSEL_ENOMEM ? err : -KAPSEL_EIO;
	}
	for (unsigned q = 1; q < queues; q++) {
		if (blk_pv_alloc_queue(desc, doorbell_port, &drv, &memory) ||
		    blk_pv_setup_queue(desc, q, drv, memory)) {
			kg_os_log("kapsel block: a PV disk's extra ring could not be set up; "
				  "using fewer rings");
			break;
		}
		all->queue[q] = drv;
		device->queue_count = q + 1;
	}
	device->info = (struct kg_block_info){
		.capacity_sectors = info_page->capacity_sectors,
		.logical_sector_bytes = info_page->logical_sector_bytes,
		.physical_sector_bytes = info_page->physical_sector_bytes,
		.readonly = info_page->readonly != 0,
		.max_segments = info_page->max_segments < KAPSEL_BLK_MAX_SEGMENTS
					? info_page->max_segments
					: KAPSEL_BLK_MAX_SEGMENTS,
		.queue_depth = BLK_PV_SLOTS, /* per queue */
		.features = info_page->features,
		.path = KG_BLOCK_PV,
	};
	device->stats = (struct kg_block_stats){ 0 };
	return 0;
}
