/* Emulated NE2000 NIC: the DP8390 register state machine and 16 KiB card memory, no KVM and no sockets inside. */
#ifndef KAPSEL_NE2000_H
#define KAPSEL_NE2000_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * Port offsets from the I/O base (0x300): 0x00-0x0f the DP8390 registers
 * of the page CR selects, 0x10-0x17 the remote DMA data port (byte, word
 * or dword accesses), 0x18-0x1f the reset port (a read or a write resets
 * the card).
 */
#define NE2000_PORT_COUNT 0x20u
#define NE2000_DATA_PORT 0x10u
#define NE2000_RESET_PORT 0x1fu

/* Page 0 registers (offset from the base). */
#define NE2000_CR 0x00u
#define NE2000_P0_PSTART 0x01u /* write; read: CLDA0 */
#define NE2000_P0_PSTOP 0x02u  /* write; read: CLDA1 */
#define NE2000_P0_BNRY 0x03u
#define NE2000_P0_TPSR 0x04u /* write; read: TSR */
#define NE2000_P0_TSR 0x04u
#define NE2000_P0_TBCR0 0x05u /* write; read: NCR */
#define NE2000_P0_TBCR1 0x06u /* write; read: FIFO */
#define NE2000_P0_ISR 0x07u
#define NE2000_P0_RSAR0 0x08u /* write; read: CRDA0 */
#define NE2000_P0_RSAR1 0x09u /* write; read: CRDA1 */
#define NE2000_P0_RBCR0 0x0au
#define NE2000_P0_RBCR1 0x0bu
#define NE2000_P0_RCR 0x0cu /* write; read: RSR */
#define NE2000_P0_RSR 0x0cu
#define NE2000_P0_TCR 0x0du /* write; read: CNTR0 */
#define NE2000_P0_DCR 0x0eu /* write; read: CNTR1 */
#define NE2000_P0_IMR 0x0fu /* write; read: CNTR2 */
/* Page 1. */
#define NE2000_P1_PAR0 0x01u /* PAR0-5 at 0x01-0x06 */
#define NE2000_P1_CURR 0x07u
#define NE2000_P1_MAR0 0x08u /* MAR0-7 at 0x08-0x0f */
/* Page 2 (read-only views of page 0 settings). */
#define NE2000_P2_PSTART 0x01u
#define NE2000_P2_PSTOP 0x02u
#define NE2000_P2_TPSR 0x04u
#define NE2000_P2_RCR 0x0cu
#define NE2000_P2_TCR 0x0du
#define NE2000_P2_DCR 0x0eu
#define NE2000_P2_IMR 0x0fu

/* CR bits. */
#define NE2000_CR_STP 0x01u
#define NE2000_CR_STA 0x02u
#define NE2000_CR_TXP 0x04u
#define NE2000_CR_RD_MASK 0x38u
#define NE2000_CR_RD_READ 0x08u
#define NE2000_CR_RD_WRITE 0x10u
#define NE2000_CR_RD_SEND 0x18u
#define NE2000_CR_RD_ABORT 0x20u
#define NE2000_CR_PAGE_MASK 0xc0u
#define NE2000_CR_PAGE_SHIFT 6u

/* ISR bits. */
#define NE2000_ISR_PRX 0x01u
#define NE2000_ISR_PTX 0x02u
#define NE2000_ISR_RXE 0x04u
#define NE2000_ISR_TXE 0x08u
#define NE2000_ISR_OVW 0x10u
#define NE2000_ISR_CNT 0x20u
#define NE2000_ISR_RDC 0x40u
#define NE2000_ISR_RST 0x80u

/* RCR bits. */
#define NE2000_RCR_SEP 0x01u
#define NE2000_RCR_AR 0x02u
#define NE2000_RCR_AB 0x04u
#define NE2000_RCR_AM 0x08u
#define NE2000_RCR_PRO 0x10u
#define NE2000_RCR_MON 0x20u

/* RSR / TSR bits. */
#define NE2000_RSR_PRX 0x01u
#define NE2000_RSR_PHY 0x20u /* multicast or broadcast destination */
#define NE2000_TSR_PTX 0x01u
#define NE2000_TSR_ABT 0x08u

#define NE2000_DCR_WTS 0x01u /* word-wide remote DMA */

/* Card memory: the station address PROM at 0x0000-0x001f, 16 KiB of
 * buffer RAM at 0x4000-0x7fff (pages 0x40-0x7f). */
#define NE2000_PROM_BYTES 32u
#define NE2000_RAM_START 0x4000u
#define NE2000_RAM_BYTES 0x4000u
#define NE2000_RAM_END (NE2000_RAM_START + NE2000_RAM_BYTES)
#define NE2000_PAGE_BYTES 256u
#define NE2000_FRAME_MAX 1514u

struct ne2000_counters {
	uint64_t frames_sent;
	uint64_t frames_received;
	uint64_t frames_filtered; /* not for this station (RCR filter) */
	uint64_t frames_overflow; /* no room in the receive ring */
	uint64_t frames_stopped;  /* arrived while the card was stopped */
	uint64_t bad_remote_dma;  /* data port use outside RAM/PROM, past the count, or idle */
	uint64_t bad_transmit;	  /* TBCR too large, or the frame outside RAM */
	uint64_t bad_ring;	  /* PSTART/PSTOP/CURR outside RAM: nothing stored */
	uint64_t resets;
};

/*
 * One NE2000 card.  All state is private to ne2000.c; fields are visible
 * so callers can embed the struct and tests can look.
 */
struct ne2000_state {
	/* Called for every frame the guest transmits (length 1..1514).
	 * The frame points into card memory; copy it if you keep it. */
	void (*transmit)(void *context, const uint8_t *frame, size_t length_bytes);
	void *context;
	uint8_t prom[NE2000_PROM_BYTES];

	uint8_t cr, isr, imr, dcr, rcr, tcr, tsr, rsr;
	uint8_t pstart, pstop, bnry, curr, tpsr;
	uint16_t tbcr, rsar, rbcr;
	uint8_t par[6];
	uint8_t mar[8];
	uint8_t ram[NE2000_RAM_BYTES];
	struct ne2000_counters counters;
};

/* Power-on state with station address mac (stored doubled in the PROM,
 * with the 'W' bytes at 14/15 that identify an NE2000); the card is
 * stopped with ISR.RST set.  transmit(context, ...) sends frames. */
void ne2000_init(struct ne2000_state *ne, const uint8_t mac[6],
		 void (*transmit)(void *context, const uint8_t *frame, size_t length_bytes),
		 void *context);

/* Change the PROM's station address (a clone got a new MAC); PAR is the
 * driver's to reprogram. */
void ne2000_set_prom_mac(struct ne2000_state *ne, const uint8_t mac[6]);

/*
 * A guest read of size 1, 2 or 4 bytes at port offset reg (< 0x20).  The
 * data port moves size bytes of remote DMA; other registers are 8 bits
 * wide and answer in the low byte (wider reads repeat nothing).
 */
uint32_t ne2000_io_read(struct ne2000_state *ne, unsigned reg, unsigned size);

/* A guest write of size bytes at port offset reg; see ne2000_io_read. */
void ne2000_io_write(struct ne2000_state *ne, unsigned reg, unsigned size, uint32_t value);

/*
 * Remote DMA through the data port in one go (rep insw/outsw or a single
 * access): length_bytes move between data and card memory at RSAR,
 * RBCR counts down and ISR.RDC is set when it reaches 0.  Bytes past the
 * count, outside PROM and RAM, or with no remote DMA command read as 0xff
 * and are dropped on writes (counted as bad_remote_dma); nothing outside
 * the card's memory is ever touched.
 */
void ne2000_data_read(struct ne2000_state *ne, void *data, size_t length_bytes);
void ne2000_data_write(struct ne2000_state *ne, const void *data, size_t length_bytes);

/*
 * A frame arrives from the network.  If the card is started, the receive
 * filter (RCR, PAR, MAR) accepts it and the ring between CURR and BNRY
 * has room, it is stored at CURR with the 4-byte header (RSR, next page,
 * length including the header) and ISR.PRX is set; otherwise it is
 * dropped and counted (a full ring sets ISR.OVW).  Returns true if stored.
 */
bool ne2000_receive(struct ne2000_state *ne, const uint8_t *frame, size_t length_bytes);

/* True if the card could store a full-size frame now (dev_ne2000.c asks
 * before it takes a frame from the backend). */
bool ne2000_can_receive(const struct ne2000_state *ne);

/* Print the counters, "  name: value" per line. */
void ne2000_print_stats(const struct ne2000_state *ne, FILE *out);

#endif
