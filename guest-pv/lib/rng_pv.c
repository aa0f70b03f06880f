/* PV entropy driver: the guest end of the rng.h ring, built only on the public ring-setup API (the worked example of docs/devices.md). */
#include "kapsel_guest/rng.h"

#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/libc.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/ring.h"
#include "kapsel_guest/ring_setup.h"

#define RNG_PV_RING_ORDER 2u	  /* one request at a time; 4 slots leave room */
#define RNG_PV_CHUNK_BYTES 16384u /* bytes per request */
#define RNG_PV_RAW_ID 0xfffffffful
#define PAGE_BYTES 4096u

_Static_assert(RNG_PV_CHUNK_BYTES <= KAPSEL_RNG_REQUEST_MAX_BYTES, "chunk fits a request");

struct kg_rng_device {
	struct kg_ring ring;
	uint32_t port;		/* event channel the host signals */
	uint16_t doorbell_port; /* 0: kick with EVTCHN_SEND */
	uint64_t next_id;
	uint8_t *buffer; /* RNG_PV_CHUNK_BYTES, page aligned and contiguous */
	struct kg_rng_stats stats;
	struct kapsel_device_setup setup; /* passed by guest-physical address */
};

static const struct kg_ring_shape rng_pv_shape = {
	.order = RNG_PV_RING_ORDER,
	.request_bytes = sizeof(struct kapsel_rng_request),
	.response_bytes = sizeof(struct kapsel_rng_response),
};

int kg_rng_open(struct kg_rng_device **device)
{
	const struct kapsel_start_info *si = kg_platform_start_info();
	const struct kapsel_device_desc *desc = kg_platform_find_device(KAPSEL_DEV_RNG_PV, 0);
	if (!si || !(si->features & KAPSEL_FEATURE_RNG_PV) || !desc)
		return -KAPSEL_ENODEV;
	uint32_t ring_pages = kg_ring_pages(rng_pv_shape.order, rng_pv_shape.request_bytes,
					    rng_pv_shape.response_bytes);
	uint32_t buffer_pages = RNG_PV_CHUNK_BYTES / PAGE_BYTES;
	uint32_t driver_pages = (sizeof(struct kg_rng_device) + PAGE_BYTES - 1) / PAGE_BYTES;
	uint8_t *memory = kg_os_alloc_pages(ring_pages + buffer_pages + driver_pages);
	if (!memory)
		return -KAPSEL_ENOMEM;
	struct kg_rng_device *dev = (struct kg_rng_device *)(memory + ring_pages * PAGE_BYTES);
	dev->buffer = (uint8_t *)dev + driver_pages * PAGE_BYTES;
	dev->doorbell_port = (si->features & KAPSEL_FEATURE_DOORBELL) ? desc->doorbell_port : 0;
	struct kg_ring *const rings[] = { &dev->ring };
	if (kg_ring_setup(desc->index, &rng_pv_shape, memory, rings, 1, &dev->setup, &dev->port))
		return -KAPSEL_EIO;
	*device = dev;
	return 0;
}

/* Publish one request and wait for its answer; returns the status and
 * sets *retry_after_ns. */
static int rng_pv_request(struct kg_rng_device *dev, uint64_t id, uint64_t gpa,
			  uint32_t length_bytes, uint64_t *retry_after_ns)
{
	struct kapsel_rng_request *slot = kg_ring_next_request(&dev->ring);
	if (!slot)
		return -KAPSEL_EIO; /* cannot happen: one request at a time */
	slot->id = id;
	slot->gpa = gpa;
	slot->length_bytes = length_bytes;
	slot->flags = 0;
	slot->_reserved = 0;
	kg_ring_push_request(&dev->ring);
	if (kg_ring_kick(&dev->ring, dev->doorbell_port, dev->port))
		dev->stats.kicks++;
	for (;;) {
		/* Clear the channel before looking, so a signal after the look
		 * leaves it pending and BLOCK returns at once. */
		kg_evtchn_test_and_clear(dev->port);
		const struct kapsel_rng_response *rsp = kg_ring_peek_response(&dev->ring);
		if (rsp) {
			/* Copy the answer out once. */
			uint64_t got_id = rsp->id;
			int32_t status = rsp->status;
			uint32_t got_length = rsp->length_bytes;
			uint64_t retry = rsp->retry_after_ns;
			kg_ring_consume_response(&dev->ring);
			if (got_id != id)
				continue; /* a stale answer (cannot happen) */
			*retry_after_ns = retry;
			if (status == 0 && got_length != length_bytes)
				return -KAPSEL_EIO;
			return status;
		}
		if (!kg_ring_prepare_sleep(&dev->ring))
			kg_hc_block(UINT64_MAX);
	}
}

int64_t kg_rng_read(struct kg_rng_device *dev, void *buffer, uint64_t length_bytes)
{
	uint8_t *out = buffer;
	uint64_t done = 0;
	while (done < length_bytes) {
		uint64_t left = length_bytes - done;
		uint32_t n = left < RNG_PV_CHUNK_BYTES ? (uint32_t)left : RNG_PV_CHUNK_BYTES;
		uint64_t retry_ns = 0;
		int status = rng_pv_request(dev, dev->next_id++, kg_os_virt_to_phys(dev->buffer), n,
					    &retry_ns);
		if (status == -KAPSEL_EAGAIN) {
			/* Rate limited: sleep in the hypervisor until the host's
			 * tokens are there, then ask again. */
			dev->stats.throttled++;
			uint64_t start = kg_time_now_ns();
			uint64_t deadline = start + (retry_ns ? retry_ns : 1000000u);
			uint64_t now;
			while ((now = kg_time_now_ns()) < deadline)
				kg_hc_block(deadline);
			dev->stats.throttled_ns += now - start;
			continue;
		}
		if (status < 0) {
			dev->stats.errors++;
			return status;
		}
		memcpy(out + done, dev->buffer, n);
		done += n;
		dev->stats.requests++;
		dev->stats.bytes += n;
	}
	return (int64_t)done;
}

int kg_rng_request_raw(struct kg_rng_device *dev, uint64_t gpa, uint32_t length_bytes)
{
	uint64_t retry_ns;
	return rng_pv_request(dev, RNG_PV_RAW_ID, gpa, length_bytes, &retry_ns);
}

void kg_rng_get_stats(struct kg_rng_device *dev, struct kg_rng_stats *stats)
{
	*stats = dev->stats;
}
