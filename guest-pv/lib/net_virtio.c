/* virtio-net driver over virtio-mmio (QEMU microvm): a receive queue of posted buffers and a one-frame transmit queue, both polled. */
#include "net_internal.h"

#include "kapsel_guest/arch.h"
#include "kapsel_guest/libc.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"
#include "virtio_mmio.h"

#define VIRTIO_NET_F_MAC (1ull << 5)

#define RX_QUEUE 0u
#define TX_QUEUE 1u
#define RX_BUFFERS 16u
#define BUFFER_BYTES 2048u /* header + the largest frame, with room */
/* virtio_net_hdr: 10 bytes, 12 with num_buffers (always there on virtio 1;
 * a legacy device without MRG_RXBUF, which we never ask for, omits it). */
#define HEADER_BYTES_LEGACY 10u
#define HEADER_BYTES_V1 12u

struct virtio_net {
	struct virtio_mmio transport;
	struct virtq rx, tx;
	uint32_t header_bytes;
	uint8_t *rx_buffers; /* RX_BUFFERS * BUFFER_BYTES, descriptor i owns buffer i */
	uint8_t *tx_buffer;  /* one frame in flight at a time */
};

static struct virtio_net *driver_of(struct kg_net_device *device)
{
	return device->driver;
}

/* Hand descriptor i (and its buffer) to the device for a received frame. */
static void post_rx(struct virtio_net *v, uint16_t i)
{
	v->rx.rings->desc[i] = (struct virtq_desc){
		.addr = kg_os_virt_to_phys(v->rx_buffers + (uint32_t)i * BUFFER_BYTES),
		.len = BUFFER_BYTES,
		.flags = VIRTQ_DESC_F_WRITE,
	};
	kg_virtq_publish(&v->rx, i);
}

static int virtio_net_send(struct kg_net_device *device, const void *frame, uint32_t length_bytes)
{
	struct virtio_net *v = driver_of(device);
	memset(v->tx_buffer, 0, v->header_bytes); /* no offloads */
	memcpy(v->tx_buffer + v->header_bytes, frame, length_bytes);
	v->tx.rings->desc[0] = (struct virtq_desc){
		.addr = kg_os_virt_to_phys(v->tx_buffer),
		.len = v->header_bytes + length_bytes,
	};
	kg_virtq_publish(&v->tx, 0);
	if (kg_virtq_notify(&v->transport, &v->tx))
		device->stats.kicks++;
	else
		device->stats.kicks_suppressed++;
	/* Wait for the device to take it: the buffer is the caller's again. */
	struct virtq_used_elem e;
	while (!kg_virtq_take_used(&v->tx, &e))
		kg_cpu_relax();
	return e.id == 0 ? 0 : -KAPSEL_EIO;
}

static int virtio_net_recv(struct kg_net_device *device, void *buffer, uint32_t max_bytes,
			   uint64_t deadline_ns)
{
	struct virtio_net *v = driver_of(device);
	for (;;) {
		struct virtq_used_elem e;
		if (kg_virtq_take_used(&v->rx, &e)) {
			/* Checked copies: the device wrote id and len. */
			if (e.id >= RX_BUFFERS || e.len < v->header_bytes + KAPSEL_NET_FRAME_MIN ||
			    e.len > BUFFER_BYTES) {
				device->stats.receive_errors++;
				if (e.id < RX_BUFFERS)
					post_rx(v, (uint16_t)e.id);
				kg_virtq_notify(&v->transport, &v->rx);
				continue;
			}
			uint32_t length = e.len - v->header_bytes;
			uint32_t n = length < max_bytes ? length : max_bytes;
			memcpy(buffer, v->rx_buffers + e.id * BUFFER_BYTES + v->header_bytes, n);
			post_rx(v, (uint16_t)e.id);
			kg_virtq_notify(&v->transport, &v->rx);
			return (int)n;
		}
		if (deadline_ns == 0)
			return 0;
		if (deadline_ns != UINT64_MAX && kg_time_now_ns() >= deadline_ns)
			return 0;
		kg_cpu_relax();
	}
}

static void virtio_net_refresh_mac(struct kg_net_device *device)
{
	struct virtio_net *v = driver_of(device);
	for (unsigned i = 0; i < KAPSEL_NET_MAC_BYTES; i++)
		device->mac[i] = kg_virtio_mmio_config8(&v->transport, i);
}

static const struct kg_net_driver_ops virtio_net_ops = {
	.send = virtio_net_send,
	.recv = virtio_net_recv,
	.refresh_mac = virtio_net_refresh_mac,
};

int kg_net_virtio_open(unsigned index, struct kg_net_device *device)
{
	uintptr_t base = kg_virtio_mmio_find(VIRTIO_ID_NET, index);
	if (!base)
		return -KAPSEL_ENODEV;
	struct virtio_net *v = kg_os_alloc_pages(1);
	uint8_t *buffers = kg_os_alloc_pages(((RX_BUFFERS + 1) * BUFFER_BYTES + 4095) / 4096);
	if (!v || !buffers)
		return -KAPSEL_ENOMEM;
	memset(v, 0, sizeof(*v));
	v->rx_buffers = buffers;
	v->tx_buffer = buffers + RX_BUFFERS * BUFFER_BYTES;
	int err = kg_virtio_mmio_begin(&v->transport, base, VIRTIO_NET_F_MAC, "virtio-net");
	if (err)
		return err;
	if (!(v->transport.features & VIRTIO_NET_F_MAC)) {
		kg_os_log("virtio-net: the device offers no MAC address (VIRTIO_NET_F_MAC)");
		return -KAPSEL_ENODEV;
	}
	v->header_bytes = v->transport.legacy ? HEADER_BYTES_LEGACY : HEADER_BYTES_V1;
	err = kg_virtio_mmio_queue(&v->transport, &v->rx, RX_QUEUE);
	if (!err)
		err = kg_virtio_mmio_queue(&v->transport, &v->tx, TX_QUEUE);
	if (err)
		return err;
	if (v->rx.size < RX_BUFFERS) {
		kg_os_log("virtio-net: the receive queue is too small");
		return -KAPSEL_ENODEV;
	}
	for (uint16_t i = 0; i < RX_BUFFERS; i++)
		post_rx(v, i);
	kg_virtio_mmio_ready(&v->transport);
	kg_virtq_notify(&v->transport, &v->rx);

	device->ops = &virtio_net_ops;
	device->driver = v;
	device->path = KG_NET_VIRTIO;
	device->stats = (struct kg_net_stats){ 0 };
	virtio_net_refresh_mac(device);
	char line[96];
	kg_snprintf(line, sizeof(line), "virtio-net: at 0x%llx (%s), %u receive buffers",
		    (unsigned long long)base, v->transport.legacy ? "legacy" : "virtio 1",
		    RX_BUFFERS);
	kg_os_log(line);
	return 0;
}
