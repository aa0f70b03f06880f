/* PV network driver: the guest end of the net.h TX and RX rings, with doorbell kicks and sleeps suppressed by event indices. */
#include "net_internal.h"
#include "kapsel_guest/ring_setup.h"

#include "kapsel_guest/arch.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/libc.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/ring.h"

#define NET_PV_RING_ORDER 5u /* 32 frames each way */
#define NET_PV_SLOTS (1u << NET_PV_RING_ORDER)
#define NET_PV_BUFFER_BYTES 2048u  /* holds KAPSEL_NET_FRAME_MAX */
#define NET_PV_RAW_ID 0xfffffffful /* kg_net_pv_send_raw's request */
#define PAGE_BYTES 4096u

struct net_pv_driver {
	struct kg_ring tx, rx;
	uint32_t port;		/* event channel the backend signals */
	uint16_t doorbell_port; /* 0: kick with EVTCHN_SEND */
	uint8_t *tx_buffers;	/* NET_PV_SLOTS * NET_PV_BUFFER_BYTES */
	uint8_t *rx_buffers;
	uint32_t tx_free_count;
	uint32_t tx_free[NET_PV_SLOTS];
	bool raw_done;
	int32_t raw_status;
	struct kapsel_device_setup setup; /* passed by guest-physical address */
};

static struct net_pv_driver *driver_of(struct kg_net_device *device)
{
	return device->driver;
}

static void net_pv_kick(struct kg_net_device *device, struct kg_ring *ring)
{
	struct net_pv_driver *drv = driver_of(device);
	if (!kg_ring_publish(ring)) {
		device->stats.kicks_suppressed++;
		return;
	}
	device->stats.kicks++;
	if (drv->doorbell_port)
		kg_outw(drv->doorbell_port, 1);
	else
		kg_hc_evtchn_send(drv->port);
}

/* Take TX answers: free their buffers, note refusals. */
static void net_pv_reclaim(struct kg_net_device *device)
{
	struct net_pv_driver *drv = driver_of(device);
	const struct kapsel_net_response *rsp;
	while ((rsp = kg_ring_peek_response(&drv->tx))) {
		uint64_t id = rsp->id;
		int32_t status = rsp->status;
		kg_ring_consume_response(&drv->tx);
		if (id == NET_PV_RAW_ID) {
			drv->raw_done = true;
			drv->raw_status = status;
			continue;
		}
		if (id >= NET_PV_SLOTS)
			continue;
		drv->tx_free[drv->tx_free_count++] = (uint32_t)id;
		if (status)
			device->stats.send_errors++;
	}
}

/* Sleep until the backend signals (or deadline), after re-checking ring. */
static void net_pv_wait(struct kg_net_device *device, struct kg_ring *ring, uint64_t deadline_ns)
{
	if (kg_ring_prepare_sleep(ring))
		return;
	device->stats.blocks++;
	kg_hc_block(deadline_ns);
}

static int net_pv_send(struct kg_net_device *device, const void *frame, uint32_t length_bytes)
{
	struct net_pv_driver *drv = driver_of(device);
	net_pv_reclaim(device);
	while (drv->tx_free_count == 0) {
		kg_evtchn_test_and_clear(drv->port);
		net_pv_reclaim(device);
		if (drv->tx_free_count)
			break;
		net_pv_wait(device, &drv->tx, UINT64_MAX);
	}
	uint32_t id = drv->tx_free[--drv->tx_free_count];
	uint8_t *buffer = drv->tx_buffers + (uint64_t)id * NET_PV_BUFFER_BYTES;
	memcpy(buffer, frame, length_bytes);
	struct kapsel_net_request *slot = kg_ring_next_request(&drv->tx);
	if (!slot)
		return -KAPSEL_EIO; /* cannot happen: one slot per buffer */
	slot->id = id;
	slot->gpa = kg_os_virt_to_phys(buffer);
	slot->length_bytes = length_bytes;
	slot->flags = 0;
	slot->_reserved = 0;
	kg_ring_push_request(&drv->tx);
	net_pv_kick(device, &drv->tx);
	return 0;
}

int kg_net_pv_send_raw(struct kg_net_device *device, uint64_t gpa, uint32_t length_bytes)
{
	struct net_pv_driver *drv = driver_of(device);
	if (device->path != KG_NET_PV)
		return -KAPSEL_ENODEV;
	struct kapsel_net_request *slot;
	while (!(slot = kg_ring_next_request(&drv->tx))) {
		kg_evtchn_test_and_clear(drv->port);
		net_pv_reclaim(device);
		if (kg_ring_outstanding(&drv->tx) < drv->tx.size)
			continue;
		net_pv_wait(device, &drv->tx, UINT64_MAX);
	}
	drv->raw_done = false;
	slot->id = NET_PV_RAW_ID;
	slot->gpa = gpa;
	slot->length_bytes = length_bytes;
	slot->flags = 0;
	slot->_reserved = 0;
	kg_ring_push_request(&drv->tx);
	net_pv_kick(device, &drv->tx);
	for (;;) {
		kg_evtchn_test_and_clear(drv->port);
		net_pv_reclaim(device);
		if (drv->raw_done)
			return drv->raw_status;
		net_pv_wait(device, &drv->tx, UINT64_MAX);
	}
}

static void net_pv_post(struct net_pv_driver *drv, uint32_t id)
{
	struct kapsel_net_request *slot = kg_ring_next_request(&drv->rx);
	if (!slot)
		return; /* cannot happen: one slot per buffer */
	slot->id = id;
	slot->gpa = kg_os_virt_to_phys(drv->rx_buffers + (uint64_t)id * NET_PV_BUFFER_BYTES);
	slot->length_bytes = NET_PV_BUFFER_BYTES;
	slot->flags = 0;
	slot->_reserved = 0;
	kg_ring_push_request(&drv->rx);
}

static int net_pv_recv(struct kg_net_device *device, void *buffer, uint32_t max_bytes,
		       uint64_t deadline_ns)
{
	struct net_pv_driver *drv = driver_of(device);
	uint64_t poll_until =
		device->poll_ns && deadline_ns ? kg_time_now_ns() + device->poll_ns : 0;
	for (;;) {
		const struct kapsel_net_response *rsp = kg_ring_peek_response(&drv->rx);
		if (rsp) {
			/* Copy the answer out once, then give the buffer back. */
			uint64_t id = rsp->id;
			int32_t status = rsp->status;
			uint32_t length = rsp->length_bytes;
			kg_ring_consume_response(&drv->rx);
			if (id >= NET_PV_SLOTS) {
				device->stats.receive_errors++;
				continue;
			}
			int result = 0;
			if (status == 0 && length >= KAPSEL_NET_FRAME_MIN &&
			    length <= KAPSEL_NET_FRAME_MAX) {
				uint32_t n = length < max_bytes ? length : max_bytes;
				memcpy(buffer, drv->rx_buffers + id * NET_PV_BUFFER_BYTES, n);
				result = (int)n;
			} else if (status != -KAPSEL_EAGAIN) {
				device->stats.receive_errors++;
			}
			net_pv_post(drv, (uint32_t)id);
			net_pv_kick(device, &drv->rx);
			if (result)
				return result;
			continue;
		}
		if (deadline_ns == 0)
			return 0;
		if (poll_until && kg_time_now_ns() < poll_until) {
			kg_cpu_relax();
			continue;
		}
		if (deadline_ns != UINT64_MAX && kg_time_now_ns() >= deadline_ns)
			return 0;
		/* Clear the channel before looking, so a signal sent after the
		 * look leaves it pending and BLOCK returns at once. */
		kg_evtchn_test_and_clear(drv->port);
		if (kg_ring_peek_response(&drv->rx))
			continue;
		net_pv_wait(device, &drv->rx, deadline_ns);
	}
}

static void net_pv_refresh_mac(struct kg_net_device *device)
{
	for (unsigned i = 0; i < KAPSEL_NET_MAC_BYTES; i++)
		device->mac[i] = device->desc->mac[i];
}

static const struct kg_net_driver_ops net_pv_ops = {
	.send = net_pv_send,
	.recv = net_pv_recv,
	.refresh_mac = net_pv_refresh_mac,
};

static const struct kg_ring_shape net_pv_shape = {
	.order = NET_PV_RING_ORDER,
	.request_bytes = sizeof(struct kapsel_net_request),
	.response_bytes = sizeof(struct kapsel_net_response),
};

int kg_net_pv_open(const struct kapsel_device_desc *desc, struct kg_net_device *device)
{
	const struct kapsel_start_info *si = kg_platform_start_info();
	if (!si || !(si->features & KAPSEL_FEATURE_NET_PV) || !desc ||
	    desc->type != KAPSEL_DEV_NET_PV)
		return -KAPSEL_ENODEV;

	uint32_t ring_pages = kg_ring_pages(net_pv_shape.order, net_pv_shape.request_bytes,
					    net_pv_shape.response_bytes);
	uint32_t buffer_pages = NET_PV_SLOTS * NET_PV_BUFFER_BYTES / PAGE_BYTES;
	uint32_t driver_pages = (sizeof(struct net_pv_driver) + PAGE_BYTES - 1) / PAGE_BYTES;
	uint8_t *memory = kg_os_alloc_pages(2 * ring_pages + 2 * buffer_pages + driver_pages);
	if (!memory)
		return -KAPSEL_ENOMEM;
	struct net_pv_driver *drv = (struct net_pv_driver *)(memory + 2 * ring_pages * PAGE_BYTES);
	drv->tx_buffers = (uint8_t *)drv + driver_pages * PAGE_BYTES;
	drv->rx_buffers = drv->tx_buffers + buffer_pages * PAGE_BYTES;

	for (uint32_t i = 0; i < NET_PV_SLOTS; i++)
		drv->tx_free[i] = NET_PV_SLOTS - 1 - i;
	drv->tx_free_count = NET_PV_SLOTS;
	drv->doorbell_port = (si->features & KAPSEL_FEATURE_DOORBELL) ? desc->doorbell_port : 0;

	/* kg_ring_setup hands ring i over as queue i. */
	_Static_assert(KAPSEL_NET_QUEUE_TX == 0 && KAPSEL_NET_QUEUE_RX == 1, "net queue numbers");
	struct kg_ring *const rings[] = { &drv->tx, &drv->rx };
	if (kg_ring_setup(desc->index, &net_pv_shape, memory, rings, 2, &drv->setup, &drv->port))
		return -KAPSEL_EIO;
	device->ops = &net_pv_ops;
	device->driver = drv;
	device->path = KG_NET_PV;
	net_pv_refresh_mac(device);
	/* Every receive buffer goes to the host at once. */
	for (uint32_t i = 0; i < NET_PV_SLOTS; i++)
		net_pv_post(drv, i);
	net_pv_kick(device, &drv->rx);
	device->stats = (struct kg_net_stats){ 0 };
	return 0;
}
