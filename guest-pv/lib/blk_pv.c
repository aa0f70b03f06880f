/* PV block driver: the guest end of a blk.h ring, with doorbell kicks and event-channel sleeps suppressed by event indices. */
#include "block_internal.h"
#include "kapsel_guest/ring_setup.h"

#include "kapsel/blk.h"
#include "kapsel_guest/arch.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/ring.h"

/* 256 slots: 20 request pages + 4 response pages + the header page. */
#define BLK_PV_RING_ORDER 8u
#define BLK_PV_SLOTS (1u << BLK_PV_RING_ORDER)
#define PAGE_BYTES 4096u

struct blk_pv_driver {
	struct kg_ring ring;
	uint32_t port;		/* event channel the backend signals */
	uint16_t doorbell_port; /* 0: kick with EVTCHN_SEND instead */
	uint16_t device_index;
	uint32_t queued; /* pushed since the last kick */
	/* Adaptive completion polling (blk_pv_reap): spin up to poll_window_ns
	 * (at most device->poll_ns) before sleeping in the hypervisor. */
	uint64_t poll_window_ns;
	uint64_t poll_bound_ns; /* device->poll_ns the window was last fitted to */
	uint32_t free_count;
	uint32_t free_ids[BLK_PV_SLOTS];
	struct kg_block_request *by_id[BLK_PV_SLOTS];
	struct kapsel_device_setup setup; /* passed by guest-physical address */
};

static struct blk_pv_driver *driver_of(struct kg_block_device *device)
{
	return device->driver;
}

static int blk_pv_submit(struct kg_block_device *device, struct kg_block_request *request)
{
	struct blk_pv_driver *drv = driver_of(device);
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

static void blk_pv_kick(struct kg_block_device *device)
{
	struct blk_pv_driver *drv = driver_of(device);
	if (!drv->queued)
		return;
	drv->queued = 0;
	if (!kg_ring_publish(&drv->ring)) {
		device->stats.kicks_suppressed++; /* the backend is still at work */
		return;
	}
	device->stats.kicks++;
	if (drv->doorbell_port)
		kg_outw(drv->doorbell_port, 1);
	else
		kg_hc_evtchn_send(drv->port);
}

/* Move up to max published responses to done[]. */
static unsigned blk_pv_collect(struct kg_block_device *device, struct kg_block_request **done,
			       unsigned max)
{
	struct blk_pv_driver *drv = driver_of(device);
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

static unsigned blk_pv_reap(struct kg_block_device *device, struct kg_block_request **done,
			    unsigned max, bool wait)
{
	struct blk_pv_driver *drv = driver_of(device);
	if (max == 0)
		return 0;
	unsigned n = blk_pv_collect(device, done, max);
	if (n || !wait || kg_ring_outstanding(&drv->ring) == 0) {
		if (n)
			device->stats.polls++;
		return n;
	}
	/* Waiting on requests nobody was told about would sleep forever. */
	blk_pv_kick(device);
	uint64_t bound = device->poll_ns;
	if (drv->poll_bound_ns != bound) {
		/* A new bound (kg_block_set_poll_ns): start optimistic. */
		drv->poll_bound_ns = bound;
		drv->poll_window_ns = bound;
	}
	uint64_t start = 0;
	if (bound) {
		start = kg_time_now_ns();
		uint64_t deadline = start + drv->poll_window_ns;
		do {
			for (unsigned i = 0; i < 32; i++) {
				if (kg_ring_peek_response(&drv->ring)) {
					device->stats.polls++;
					return blk_pv_collect(device, done, max);
				}
				kg_cpu_relax();
			}
		} while (kg_time_now_ns() < deadline);
	}
	for (;;) {
		/* Clear the channel before looking, so a notification sent
		 * after the look leaves it pending and BLOCK returns at once. */
		kg_evtchn_test_and_clear(drv->port);
		n = blk_pv_collect(device, done, max);
		if (n)
			break;
		if (kg_ring_prepare_sleep(&drv->ring))
			continue;
		device->stats.blocks++;
		kg_hc_block(UINT64_MAX);
	}
	if (bound)
		blk_pv_fit_poll_window(drv, bound, kg_time_now_ns() - start);
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
		blk_pv_reap(device, &done, 1, true);
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

int kg_blk_pv_open(const struct kapsel_device_desc *desc, struct kg_block_device *device)
{
	const struct kapsel_start_info *si = kg_platform_start_info();
	if (!si || !(si->features & KAPSEL_FEATURE_BLOCK_PV) || !desc ||
	    desc->type != KAPSEL_DEV_BLOCK_PV)
		return -KAPSEL_ENODEV;

	uint32_t ring_pages = kg_ring_pages(blk_pv_shape.order, blk_pv_shape.request_bytes,
					    blk_pv_shape.response_bytes);
	uint32_t driver_pages = (sizeof(struct blk_pv_driver) + PAGE_BYTES - 1) / PAGE_BYTES;
	uint8_t *memory = kg_os_alloc_pages(ring_pages + driver_pages + 1);
	if (!memory)
		return -KAPSEL_ENOMEM;
	struct blk_pv_driver *drv = (struct blk_pv_driver *)(memory + ring_pages * PAGE_BYTES);
	struct kapsel_blk_info *info_page =
		(struct kapsel_blk_info *)(memory + (ring_pages + driver_pages) * PAGE_BYTES);

	for (uint32_t i = 0; i < BLK_PV_SLOTS; i++)
		drv->free_ids[i] = BLK_PV_SLOTS - 1 - i;
	drv->free_count = BLK_PV_SLOTS;
	drv->doorbell_port = (si->features & KAPSEL_FEATURE_DOORBELL) ? desc->doorbell_port : 0;
	drv->device_index = desc->index;

	struct kg_ring *const rings[] = { &drv->ring };
	if (kg_ring_setup(desc->index, &blk_pv_shape, memory, rings, 1, &drv->setup, &drv->port))
		return -KAPSEL_EIO;

	device->ops = &blk_pv_ops;
	device->driver = drv;
	int err = blk_pv_get_info(device, info_page);
	if (err) {
		kg_hc_evtchn_close(drv->port);
		device->ops = 0;
		return err == -KAPSEL_ENOMEM ? err : -KAPSEL_EIO;
	}
	device->info = (struct kg_block_info){
		.capacity_sectors = info_page->capacity_sectors,
		.logical_sector_bytes = info_page->logical_sector_bytes,
		.physical_sector_bytes = info_page->physical_sector_bytes,
		.readonly = info_page->readonly != 0,
		.max_segments = info_page->max_segments < KAPSEL_BLK_MAX_SEGMENTS
					? info_page->max_segments
					: KAPSEL_BLK_MAX_SEGMENTS,
		.queue_depth = BLK_PV_SLOTS,
		.features = info_page->features,
		.path = KG_BLOCK_PV,
	};
	device->stats = (struct kg_block_stats){ 0 };
	return 0;
}
