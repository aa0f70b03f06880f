/* virtio-console driver over virtio-mmio (QEMU microvm): port 0's receive and transmit queues, polled; the console's third path. */
#include "console_internal.h"

#include "kapsel/abi.h"
#include "kapsel_guest/arch.h"
#include "kapsel_guest/libc.h"
#include "kapsel_guest/os_hooks.h"
#include "virtio_mmio.h"

#define VIRTIO_ID_CONSOLE 3u
#define RX_QUEUE 0u
#define TX_QUEUE 1u
#define RX_BUFFERS 8u
#define RX_BUFFER_BYTES 256u
#define TX_BUFFER_BYTES 4096u

static struct {
	struct virtio_mmio transport;
	struct virtq rx, tx;
	uint8_t *rx_buffers; /* RX_BUFFERS * RX_BUFFER_BYTES; descriptor i owns buffer i */
	uint8_t *tx_buffer;
	/* A received buffer not yet read to its end. */
	bool have_pending;
	uint16_t pending_id;
	uint32_t pending_offset, pending_length;
} vc;

static void post_rx(uint16_t i)
{
	vc.rx.rings->desc[i] = (struct virtq_desc){
		.addr = kg_os_virt_to_phys(vc.rx_buffers + (uint32_t)i * RX_BUFFER_BYTES),
		.len = RX_BUFFER_BYTES,
		.flags = VIRTQ_DESC_F_WRITE,
	};
	kg_virtq_publish(&vc.rx, i);
}

int kg_virtio_console_open(void)
{
	uintptr_t base = kg_virtio_mmio_find(VIRTIO_ID_CONSOLE, 0);
	if (!base)
		return -KAPSEL_ENODEV;
	uint8_t *pages = kg_os_alloc_pages(2);
	if (!pages)
		return -KAPSEL_ENOMEM;
	vc.rx_buffers = pages;
	vc.tx_buffer = pages + 4096;
	int err = kg_virtio_mmio_begin(&vc.transport, base, 0, "virtio-console");
	if (!err)
		err = kg_virtio_mmio_queue(&vc.transport, &vc.rx, RX_QUEUE);
	if (!err)
		err = kg_virtio_mmio_queue(&vc.transport, &vc.tx, TX_QUEUE);
	if (err)
		return err;
	if (vc.rx.size < RX_BUFFERS)
		return -KAPSEL_ENODEV;
	for (uint16_t i = 0; i < RX_BUFFERS; i++)
		post_rx(i);
	kg_virtio_mmio_ready(&vc.transport);
	kg_virtq_notify(&vc.transport, &vc.rx);
	return 0;
}

void kg_virtio_console_write(const void *data, size_t length)
{
	const uint8_t *p = data;
	while (length) {
		uint32_t n = length < TX_BUFFER_BYTES ? (uint32_t)length : TX_BUFFER_BYTES;
		memcpy(vc.tx_buffer, p, n);
		vc.tx.rings->desc[0] =
			(struct virtq_desc){ .addr = kg_os_virt_to_phys(vc.tx_buffer), .len = n };
		kg_virtq_publish(&vc.tx, 0);
		kg_virtq_notify(&vc.transport, &vc.tx);
		struct virtq_used_elem e;
		while (!kg_virtq_take_used(&vc.tx, &e))
			kg_cpu_relax();
		p += n;
		length -= n;
	}
}

size_t kg_virtio_console_read(void *data, size_t length)
{
	uint8_t *out = data;
	size_t done = 0;
	while (done < length) {
		if (!vc.have_pending) {
			struct virtq_used_elem e;
			if (!kg_virtq_take_used(&vc.rx, &e))
				break;
			if (e.id >= RX_BUFFERS)
				continue; /* not a buffer we posted: ignore it */
			vc.have_pending = true;
			vc.pending_id = (uint16_t)e.id;
			vc.pending_offset = 0;
			/* The device wrote len bytes; never more than the buffer. */
			vc.pending_length = e.len < RX_BUFFER_BYTES ? e.len : RX_BUFFER_BYTES;
		}
		uint32_t left = vc.pending_length - vc.pending_offset;
		uint32_t n = length - done < left ? (uint32_t)(length - done) : left;
		memcpy(out + done,
		       vc.rx_buffers + vc.pending_id * RX_BUFFER_BYTES + vc.pending_offset, n);
		done += n;
		vc.pending_offset += n;
		if (vc.pending_offset == vc.pending_length) {
			vc.have_pending = false;
			post_rx(vc.pending_id);
			kg_virtq_notify(&vc.transport, &vc.rx);
		}
	}
	return done;
}
