/* NE2000 driver: the fallback network path, driving an emulated (or real) NE2000 register by register, polled, no interrupts. */
#include "net_internal.h"

#include "kapsel_guest/arch.h"
#include "kapsel_guest/libc.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"

#define NE_LEGACY_IO_BASE 0x300u

/* Port offsets. */
#define NE_CR 0x00u
#define NE_PSTART 0x01u
#define NE_PSTOP 0x02u
#define NE_BNRY 0x03u
#define NE_TPSR 0x04u
#define NE_TBCR0 0x05u
#define NE_TBCR1 0x06u
#define NE_ISR 0x07u
#define NE_RSAR0 0x08u
#define NE_RSAR1 0x09u
#define NE_RBCR0 0x0au
#define NE_RBCR1 0x0bu
#define NE_RCR 0x0cu
#define NE_TCR 0x0du
#define NE_DCR 0x0eu
#define NE_IMR 0x0fu
#define NE_PAR0 0x01u /* page 1 */
#define NE_CURR 0x07u /* page 1 */
#define NE_MAR0 0x08u /* page 1 */
#define NE_DATA 0x10u
#define NE_RESET 0x1fu

/* CR values: page, start/stop, remote DMA command. */
#define CR_PAGE0_STOP 0x21u
#define CR_PAGE0 0x22u /* start, remote DMA aborted */
#define CR_PAGE1 0x62u
#define CR_PAGE1_STOP 0x61u
#define CR_READ 0x0au  /* start, remote read */
#define CR_WRITE 0x12u /* start, remote write */
#define CR_TRANSMIT 0x26u

#define ISR_PRX 0x01u
#define ISR_PTX 0x02u
#define ISR_RXE 0x04u
#define ISR_TXE 0x08u
#define ISR_OVW 0x10u
#define ISR_RDC 0x40u
#define ISR_RST 0x80u

#define RCR_AB 0x04u
#define RCR_AM 0x08u
#define RCR_MON 0x20u
#define TCR_INTERNAL_LOOPBACK 0x02u
#define DCR_WORD_FIFO8_NORMAL 0x49u /* WTS, normal (not loopback), FIFO 8 bytes */

/* Card memory: 6 pages of transmit buffer, the rest the receive ring. */
#define TX_PAGE 0x40u
#define RX_FIRST_PAGE 0x46u
#define RX_STOP_PAGE 0x80u
#define PAGE_BYTES 256u
#define NE_PROM_ID 0x57u
#define NE_MIN_FRAME 60u
#define NE_POLL_LIMIT 1000000u

struct ne_driver {
	uint16_t base;
	bool pio32;	   /* the data port takes 32-bit accesses (Kapsel's does) */
	uint8_t next_page; /* the next packet in the receive ring */
	uint8_t bounce[1536] __attribute__((aligned(8)));
};

static struct ne_driver *driver_of(struct kg_net_device *device)
{
	return device->driver;
}

static uint8_t ne_in(const struct ne_driver *d, unsigned reg)
{
	return kg_inb((uint16_t)(d->base + reg));
}

static void ne_out(const struct ne_driver *d, unsigned reg, uint8_t value)
{
	kg_outb((uint16_t)(d->base + reg), value);
}

/* Poll ISR for one of bits; returns the ISR, 0 on timeout. */
static uint8_t ne_wait_isr(const struct ne_driver *d, uint8_t bits)
{
	for (uint32_t i = 0; i < NE_POLL_LIMIT; i++) {
		uint8_t isr = ne_in(d, NE_ISR);
		if (isr & bits)
			return isr;
		kg_cpu_relax();
	}
	return 0;
}

static void ne_remote_setup(const struct ne_driver *d, uint16_t addr, uint16_t count, uint8_t cr)
{
	ne_out(d, NE_RBCR0, (uint8_t)count);
	ne_out(d, NE_RBCR1, (uint8_t)(count >> 8));
	ne_out(d, NE_RSAR0, (uint8_t)addr);
	ne_out(d, NE_RSAR1, (uint8_t)(addr >> 8));
	ne_out(d, NE_CR, cr);
}

/* Remote DMA of count bytes (a multiple of 4 with pio32, else of 2). */
static int ne_remote(struct ne_driver *d, uint16_t addr, void *data, uint16_t count, bool is_write)
{
	ne_remote_setup(d, addr, count, is_write ? CR_WRITE : CR_READ);
	uint16_t port = (uint16_t)(d->base + NE_DATA);
	if (d->pio32) {
		if (is_write)
			kg_outsl(port, data, count / 4u);
		else
			kg_insl(port, data, count / 4u);
	} else {
		if (is_write)
			kg_outsw(port, data, count / 2u);
		else
			kg_insw(port, data, count / 2u);
	}
	uint8_t isr = ne_wait_isr(d, ISR_RDC);
	ne_out(d, NE_ISR, ISR_RDC);
	return isr ? 0 : -KAPSEL_EIO;
}

static uint16_t transfer_bytes(const struct ne_driver *d, uint32_t length)
{
	uint32_t unit = d->pio32 ? 4u : 2u;
	return (uint16_t)((length + unit - 1) / unit * unit);
}

static int ne_send(struct kg_net_device *device, const void *frame, uint32_t length_bytes)
{
	struct ne_driver *d = driver_of(device);
	uint32_t length = length_bytes < NE_MIN_FRAME ? NE_MIN_FRAME : length_bytes;
	uint16_t count = transfer_bytes(d, length);
	memcpy(d->bounce, frame, length_bytes);
	memset(d->bounce + length_bytes, 0, count - length_bytes);
	if (ne_remote(d, TX_PAGE * PAGE_BYTES, d->bounce, count, true))
		return -KAPSEL_EIO;
	ne_out(d, NE_TPSR, TX_PAGE);
	ne_out(d, NE_TBCR0, (uint8_t)length);
	ne_out(d, NE_TBCR1, (uint8_t)(length >> 8));
	ne_out(d, NE_CR, CR_TRANSMIT);
	uint8_t isr = ne_wait_isr(d, ISR_PTX | ISR_TXE);
	ne_out(d, NE_ISR, ISR_PTX | ISR_TXE);
	return (isr & ISR_PTX) ? 0 : -KAPSEL_EIO;
}

static uint8_t ne_current_page(const struct ne_driver *d)
{
	ne_out(d, NE_CR, CR_PAGE1);
	uint8_t curr = ne_in(d, NE_CURR);
	ne_out(d, NE_CR, CR_PAGE0);
	return curr;
}

/* Read the packet at next_page; returns bytes stored in buffer or < 0. */
static int ne_read_packet(struct kg_net_device *device, void *buffer, uint32_t max_bytes)
{
	struct ne_driver *d = driver_of(device);
	uint8_t header[4] __attribute__((aligned(4)));
	uint16_t addr = (uint16_t)(d->next_page * PAGE_BYTES);
	if (ne_remote(d, addr, header, 4, false))
		return -KAPSEL_EIO;
	uint8_t next = header[1];
	uint32_t length = (uint32_t)(header[2] | header[3] << 8);
	if (next < RX_FIRST_PAGE || next >= RX_STOP_PAGE || length < 4 + KAPSEL_NET_FRAME_MIN ||
	    length > 4 + KAPSEL_NET_FRAME_MAX) {
		/* A corrupt ring entry: skip to what the card has written. */
		device->stats.receive_errors++;
		next = ne_current_page(d);
		length = 0;
	} else {
		length -= 4;
		/* The card wraps the remote read at PSTOP. */
		if (ne_remote(d, (uint16_t)(addr + 4), d->bounce, transfer_bytes(d, length), false))
			return -KAPSEL_EIO;
	}
	d->next_page = next;
	ne_out(d, NE_BNRY, (uint8_t)(next == RX_FIRST_PAGE ? RX_STOP_PAGE - 1u : next - 1u));
	uint32_t n = length < max_bytes ? length : max_bytes;
	memcpy(buffer, d->bounce, n);
	return (int)n;
}

static int ne_recv(struct kg_net_device *device, void *buffer, uint32_t max_bytes,
		   uint64_t deadline_ns)
{
	struct ne_driver *d = driver_of(device);
	for (;;) {
		/* The ISR poll is where an emulated card takes in new frames
		 * (and where Kapsel's waits a little when idle). */
		uint8_t isr = ne_in(d, NE_ISR);
		if (isr & (ISR_PRX | ISR_RXE | ISR_OVW))
			ne_out(d, NE_ISR, isr & (ISR_PRX | ISR_RXE | ISR_OVW));
		if (ne_current_page(d) != d->next_page) {
			int n = ne_read_packet(device, buffer, max_bytes);
			if (n != 0)
				return n;
			continue;
		}
		if (deadline_ns == 0)
			return 0;
		if (deadline_ns != UINT64_MAX && kg_time_now_ns() >= deadline_ns)
			return 0;
	}
}

/* The station address PROM: 16 words, each holding one byte twice. */
static int ne_read_prom(struct ne_driver *d, uint8_t mac[KAPSEL_NET_MAC_BYTES])
{
	uint8_t prom[32] __attribute__((aligned(4)));
	if (ne_remote(d, 0, prom, sizeof(prom), false))
		return -KAPSEL_EIO;
	if (prom[28] != NE_PROM_ID || prom[30] != NE_PROM_ID)
		return -KAPSEL_ENODEV;
	for (unsigned i = 0; i < KAPSEL_NET_MAC_BYTES; i++)
		mac[i] = prom[2 * i];
	return 0;
}

static void ne_program_address(const struct ne_driver *d, const uint8_t mac[KAPSEL_NET_MAC_BYTES],
			       uint8_t cr_page1, uint8_t cr_page0)
{
	ne_out(d, NE_CR, cr_page1);
	for (unsigned i = 0; i < KAPSEL_NET_MAC_BYTES; i++)
		ne_out(d, NE_PAR0 + i, mac[i]);
	ne_out(d, NE_CR, cr_page0);
}

static void ne_refresh_mac(struct kg_net_device *device)
{
	struct ne_driver *d = driver_of(device);
	if (ne_read_prom(d, device->mac) == 0)
		ne_program_address(d, device->mac, CR_PAGE1, CR_PAGE0);
}

static const struct kg_net_driver_ops ne_ops = {
	.send = ne_send,
	.recv = ne_recv,
	.refresh_mac = ne_refresh_mac,
};

int kg_net_ne2000_open(const struct kapsel_device_desc *desc, struct kg_net_device *device)
{
	struct ne_driver *d = kg_os_alloc_pages((sizeof(*d) + 4095) / 4096);
	if (!d)
		return -KAPSEL_ENOMEM;
	d->base = desc ? desc->io_base : NE_LEGACY_IO_BASE;
	d->pio32 = kg_platform_is_kapsel();
	if (ne_in(d, NE_CR) == 0xff)
		return -KAPSEL_ENODEV; /* nothing drives the bus */
	/* Reset: read then write the reset port, wait for ISR.RST. */
	ne_out(d, NE_RESET, ne_in(d, NE_RESET));
	if (!ne_wait_isr(d, ISR_RST))
		return -KAPSEL_ENODEV;
	ne_out(d, NE_CR, CR_PAGE0_STOP);
	ne_out(d, NE_DCR, DCR_WORD_FIFO8_NORMAL);
	ne_out(d, NE_RBCR0, 0);
	ne_out(d, NE_RBCR1, 0);
	ne_out(d, NE_RCR, RCR_MON);
	ne_out(d, NE_TCR, TCR_INTERNAL_LOOPBACK);
	ne_out(d, NE_PSTART, RX_FIRST_PAGE);
	ne_out(d, NE_PSTOP, RX_STOP_PAGE);
	ne_out(d, NE_BNRY, RX_FIRST_PAGE);
	ne_out(d, NE_ISR, 0xff);
	ne_out(d, NE_IMR, 0); /* polled: no interrupts */
	int err = ne_read_prom(d, device->mac);
	if (err)
		return err;
	ne_program_address(d, device->mac, CR_PAGE1_STOP, CR_PAGE1_STOP);
	d->next_page = RX_FIRST_PAGE + 1;
	ne_out(d, NE_CURR, d->next_page);
	for (unsigned i = 0; i < 8; i++)
		ne_out(d, NE_MAR0 + i, 0xff); /* every multicast group */
	ne_out(d, NE_CR, CR_PAGE0);
	ne_out(d, NE_ISR, 0xff);
	ne_out(d, NE_RCR, RCR_AB | RCR_AM);
	ne_out(d, NE_TCR, 0);
	device->ops = &ne_ops;
	device->driver = d;
	device->path = KG_NET_NE2000;
	device->stats = (struct kg_net_stats){ 0 };
	return 0;
}
