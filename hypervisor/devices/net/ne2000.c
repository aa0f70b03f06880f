/* Emulated NE2000 NIC: the DP8390 register state machine and 16 KiB card memory, no KVM and no sockets inside. */
#include "devices/net/ne2000.h"

#include <string.h>

#define PROM_ID_BYTE 0x57u /* 'W': bytes 14 and 15 of an NE2000 PROM */

void ne2000_set_prom_mac(struct ne2000_state *ne, const uint8_t mac[6])
{
	/* A 16-bit card returns each PROM byte twice (one word per byte). */
	memset(ne->prom, 0, sizeof(ne->prom));
	for (unsigned i = 0; i < 6; i++)
		ne->prom[2 * i] = ne->prom[2 * i + 1] = mac[i];
	for (unsigned i = 28; i < 32; i++)
		ne->prom[i] = PROM_ID_BYTE;
}

static void ne2000_reset(struct ne2000_state *ne)
{
	ne->cr = NE2000_CR_STP | NE2000_CR_RD_ABORT;
	ne->isr = NE2000_ISR_RST;
	ne->imr = 0;
	ne->rbcr = 0;
	ne->counters.resets++;
}

void ne2000_init(struct ne2000_state *ne, const uint8_t mac[6],
		 void (*transmit)(void *context, const uint8_t *frame, size_t length_bytes),
		 void *context)
{
	memset(ne, 0, sizeof(*ne));
	ne->transmit = transmit;
	ne->context = context;
	ne2000_set_prom_mac(ne, mac);
	ne2000_reset(ne);
	ne->counters.resets = 0;
}

static bool started(const struct ne2000_state *ne)
{
	return (ne->cr & (NE2000_CR_STA | NE2000_CR_STP)) == NE2000_CR_STA;
}

static unsigned remote_mode(const struct ne2000_state *ne)
{
	unsigned rd = ne->cr & NE2000_CR_RD_MASK;
	if (rd & NE2000_CR_RD_ABORT)
		return 0;
	return rd == NE2000_CR_RD_SEND ? NE2000_CR_RD_READ : rd;
}

/* The receive ring's bounds are usable: inside RAM, CURR and BNRY in it. */
static bool ring_sane(const struct ne2000_state *ne)
{
	const unsigned first = NE2000_RAM_START / NE2000_PAGE_BYTES;
	const unsigned end = NE2000_RAM_END / NE2000_PAGE_BYTES;
	return ne->pstart >= first && ne->pstop <= end && ne->pstart < ne->pstop &&
	       ne->curr >= ne->pstart && ne->curr < ne->pstop && ne->bnry >= ne->pstart &&
	       ne->bnry < ne->pstop;
}

/* Pages the card may still fill before it reaches BNRY. */
static unsigned ring_free_pages(const struct ne2000_state *ne)
{
	unsigned ring_pages = (unsigned)(ne->pstop - ne->pstart);
	if (ne->curr < ne->bnry)
		return (unsigned)(ne->bnry - ne->curr);
	return ring_pages - (unsigned)(ne->curr - ne->bnry);
}

/* Move one byte of remote DMA.  Returns false for a bad access (the byte
 * reads as 0xff / is dropped). */
static bool remote_byte(struct ne2000_state *ne, bool is_write, uint8_t *byte)
{
	unsigned mode = remote_mode(ne);
	if (mode != (is_write ? NE2000_CR_RD_WRITE : NE2000_CR_RD_READ) || ne->rbcr == 0) {
		if (!is_write)
			*byte = 0xff;
		return false;
	}
	uint16_t addr = ne->rsar;
	bool ok = true;
	if (addr >= NE2000_RAM_START && addr < NE2000_RAM_END) {
		if (is_write)
			ne->ram[addr - NE2000_RAM_START] = *byte;
		else
			*byte = ne->ram[addr - NE2000_RAM_START];
	} else if (!is_write && addr < NE2000_PROM_BYTES) {
		*byte = ne->prom[addr];
	} else {
		if (!is_write)
			*byte = 0xff;
		ok = false;
	}
	ne->rsar = (uint16_t)(addr + 1);
	/* Reading a packet out of the ring wraps at PSTOP, as the DP8390 does. */
	if (!is_write && ring_sane(ne) && ne->rsar == (uint16_t)(ne->pstop * NE2000_PAGE_BYTES))
		ne->rsar = (uint16_t)(ne->pstart * NE2000_PAGE_BYTES);
	if (--ne->rbcr == 0)
		ne->isr |= NE2000_ISR_RDC;
	return ok;
}

void ne2000_data_read(struct ne2000_state *ne, void *data, size_t length_bytes)
{
	uint8_t *p = data;
	bool bad = false;
	for (size_t i = 0; i < length_bytes; i++)
		bad |= !remote_byte(ne, false, &p[i]);
	if (bad)
		ne->counters.bad_remote_dma++;
}

void ne2000_data_write(struct ne2000_state *ne, const void *data, size_t length_bytes)
{
	const uint8_t *p = data;
	bool bad = false;
	for (size_t i = 0; i < length_bytes; i++) {
		uint8_t byte = p[i];
		bad |= !remote_byte(ne, true, &byte);
	}
	if (bad)
		ne->counters.bad_remote_dma++;
}

static void ne2000_transmit(struct ne2000_state *ne)
{
	uint32_t start = (uint32_t)ne->tpsr * NE2000_PAGE_BYTES;
	uint32_t length = ne->tbcr;
	if (!started(ne) || length == 0 || length > NE2000_FRAME_MAX || start < NE2000_RAM_START ||
	    start + length > NE2000_RAM_END) {
		ne->counters.bad_transmit++;
		ne->tsr = NE2000_TSR_ABT;
		ne->isr |= NE2000_ISR_TXE;
		ne->cr &= (uint8_t)~NE2000_CR_TXP;
		return;
	}
	const uint8_t *frame = &ne->ram[start - NE2000_RAM_START];
	if (ne->tcr & 0x06u) {
		/* Loopback (TCR.LB): the frame comes back to this card only. */
		uint8_t copy[NE2000_FRAME_MAX];
		memcpy(copy, frame, length);
		ne2000_receive(ne, copy, length);
	} else if (ne->transmit) {
		ne->transmit(ne->context, frame, length);
	}
	ne->counters.frames_sent++;
	ne->tsr = NE2000_TSR_PTX;
	ne->isr |= NE2000_ISR_PTX;
	ne->cr &= (uint8_t)~NE2000_CR_TXP;
}

static void write_command(struct ne2000_state *ne, uint8_t value)
{
	if (value & NE2000_CR_STP) {
		ne->cr = (uint8_t)((ne->cr & ~(NE2000_CR_STA | NE2000_CR_STP)) | NE2000_CR_STP);
		ne->isr |= NE2000_ISR_RST;
	} else if (value & NE2000_CR_STA) {
		ne->cr = (uint8_t)((ne->cr & ~(NE2000_CR_STA | NE2000_CR_STP)) | NE2000_CR_STA);
		ne->isr &= (uint8_t)~NE2000_ISR_RST;
	}
	ne->cr = (uint8_t)((ne->cr & ~NE2000_CR_PAGE_MASK) | (value & NE2000_CR_PAGE_MASK));
	unsigned rd = value & NE2000_CR_RD_MASK;
	if (rd) { /* 000 is "not allowed": the old command stays */
		ne->cr = (uint8_t)((ne->cr & ~NE2000_CR_RD_MASK) | rd);
		if (rd == NE2000_CR_RD_SEND) {
			/* Send packet: read the packet at BNRY, its length from
			 * the header the card wrote there. */
			uint32_t page_addr = (uint32_t)ne->bnry * NE2000_PAGE_BYTES;
			ne->rsar = (uint16_t)page_addr;
			ne->rbcr = 0;
			if (page_addr >= NE2000_RAM_START && page_addr + 4 <= NE2000_RAM_END)
				ne->rbcr =
					(uint16_t)(ne->ram[page_addr - NE2000_RAM_START + 2] |
						   ne->ram[page_addr - NE2000_RAM_START + 3] << 8);
		}
		if (!(rd & NE2000_CR_RD_ABORT) && ne->rbcr == 0)
			ne->isr |= NE2000_ISR_RDC;
	}
	if (value & NE2000_CR_TXP)
		ne2000_transmit(ne);
}

static uint8_t read_register(struct ne2000_state *ne, unsigned reg)
{
	if (reg == NE2000_CR)
		return ne->cr;
	switch (ne->cr >> NE2000_CR_PAGE_SHIFT) {
	case 0:
		switch (reg) {
		case NE2000_P0_BNRY:
			return ne->bnry;
		case NE2000_P0_TSR:
			return ne->tsr;
		case NE2000_P0_ISR:
			return ne->isr;
		case NE2000_P0_RSAR0:
			return (uint8_t)ne->rsar; /* CRDA */
		case NE2000_P0_RSAR1:
			return (uint8_t)(ne->rsar >> 8);
		case NE2000_P0_RSR:
			return ne->rsr;
		default:
			return 0; /* CLDA, NCR, FIFO, tally counters */
		}
	case 1:
		if (reg >= NE2000_P1_PAR0 && reg < NE2000_P1_PAR0 + 6)
			return ne->par[reg - NE2000_P1_PAR0];
		if (reg == NE2000_P1_CURR)
			return ne->curr;
		return ne->mar[reg - NE2000_P1_MAR0]; /* 0x08-0x0f */
	case 2:
		switch (reg) {
		case NE2000_P2_PSTART:
			return ne->pstart;
		case NE2000_P2_PSTOP:
			return ne->pstop;
		case NE2000_P2_TPSR:
			return ne->tpsr;
		case NE2000_P2_RCR:
			return ne->rcr;
		case NE2000_P2_TCR:
			return ne->tcr;
		case NE2000_P2_DCR:
			return ne->dcr;
		case NE2000_P2_IMR:
			return ne->imr;
		default:
			return 0;
		}
	default:
		return 0xff; /* page 3: nothing on an NE2000 */
	}
}

static void write_register(struct ne2000_state *ne, unsigned reg, uint8_t value)
{
	if (reg == NE2000_CR) {
		write_command(ne, value);
		return;
	}
	switch (ne->cr >> NE2000_CR_PAGE_SHIFT) {
	case 0:
		switch (reg) {
		case NE2000_P0_PSTART:
			ne->pstart = value;
			break;
		case NE2000_P0_PSTOP:
			ne->pstop = value;
			break;
		case NE2000_P0_BNRY:
			ne->bnry = value;
			break;
		case NE2000_P0_TPSR:
			ne->tpsr = value;
			break;
		case NE2000_P0_TBCR0:
			ne->tbcr = (uint16_t)((ne->tbcr & 0xff00u) | value);
			break;
		case NE2000_P0_TBCR1:
			ne->tbcr = (uint16_t)((ne->tbcr & 0x00ffu) | value << 8);
			break;
		case NE2000_P0_ISR:
			/* Write 1 to clear; RST follows the stop state instead. */
			ne->isr &= (uint8_t) ~(value & ~NE2000_ISR_RST);
			break;
		case NE2000_P0_RSAR0:
			ne->rsar = (uint16_t)((ne->rsar & 0xff00u) | value);
			break;
		case NE2000_P0_RSAR1:
			ne->rsar = (uint16_t)((ne->rsar & 0x00ffu) | value << 8);
			break;
		case NE2000_P0_RBCR0:
			ne->rbcr = (uint16_t)((ne->rbcr & 0xff00u) | value);
			break;
		case NE2000_P0_RBCR1:
			ne->rbcr = (uint16_t)((ne->rbcr & 0x00ffu) | value << 8);
			break;
		case NE2000_P0_RCR:
			ne->rcr = value;
			break;
		case NE2000_P0_TCR:
			ne->tcr = value;
			break;
		case NE2000_P0_DCR:
			ne->dcr = value;
			break;
		case NE2000_P0_IMR:
			ne->imr = value;
			break;
		}
		break;
	case 1:
		if (reg >= NE2000_P1_PAR0 && reg < NE2000_P1_PAR0 + 6)
			ne->par[reg - NE2000_P1_PAR0] = value;
		else if (reg == NE2000_P1_CURR)
			ne->curr = value;
		else
			ne->mar[reg - NE2000_P1_MAR0] = value;
		break;
	default:
		break; /* pages 2 and 3: nothing a driver needs to write */
	}
}

uint32_t ne2000_io_read(struct ne2000_state *ne, unsigned reg, unsigned size)
{
	if (reg >= NE2000_DATA_PORT && reg < NE2000_RESET_PORT - 7u) {
		uint8_t bytes[4] = { 0 };
		ne2000_data_read(ne, bytes, size > 4 ? 4 : size);
		return (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 |
		       (uint32_t)bytes[3] << 24;
	}
	if (reg >= NE2000_RESET_PORT - 7u) {
		ne2000_reset(ne);
		return 0;
	}
	return read_register(ne, reg & 0x0fu);
}

void ne2000_io_write(struct ne2000_state *ne, unsigned reg, unsigned size, uint32_t value)
{
	if (reg >= NE2000_DATA_PORT && reg < NE2000_RESET_PORT - 7u) {
		uint8_t bytes[4] = { (uint8_t)value, (uint8_t)(value >> 8), (uint8_t)(value >> 16),
				     (uint8_t)(value >> 24) };
		ne2000_data_write(ne, bytes, size > 4 ? 4 : size);
		return;
	}
	if (reg >= NE2000_RESET_PORT - 7u) {
		ne2000_reset(ne);
		return;
	}
	write_register(ne, reg & 0x0fu, (uint8_t)value);
}

/* Ethernet CRC-32 of the destination address, bits in wire order; the
 * top six bits pick the multicast filter bit (MAR). */
static unsigned multicast_index(const uint8_t *mac)
{
	uint32_t crc = 0xffffffffu;
	for (unsigned i = 0; i < 6; i++) {
		uint8_t byte = mac[i];
		for (unsigned bit = 0; bit < 8; bit++, byte >>= 1) {
			uint32_t carry = (crc >> 31) ^ (byte & 1u);
			crc <<= 1;
			if (carry)
				crc ^= 0x04c11db7u;
		}
	}
	return crc >> 26;
}

static bool accepts(const struct ne2000_state *ne, const uint8_t *dst)
{
	static const uint8_t broadcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	if (ne->rcr & NE2000_RCR_PRO)
		return true;
	if (memcmp(dst, broadcast, 6) == 0)
		return (ne->rcr & NE2000_RCR_AB) != 0;
	if (dst[0] & 1u) {
		unsigned index = multicast_index(dst);
		return (ne->rcr & NE2000_RCR_AM) && (ne->mar[index >> 3] & (1u << (index & 7u)));
	}
	return memcmp(dst, ne->par, 6) == 0;
}

static unsigned frame_pages(size_t length_bytes)
{
	return (unsigned)((length_bytes + 4 + NE2000_PAGE_BYTES - 1) / NE2000_PAGE_BYTES);
}

bool ne2000_can_receive(const struct ne2000_state *ne)
{
	return started(ne) && ring_sane(ne) && frame_pages(NE2000_FRAME_MAX) < ring_free_pages(ne);
}

bool ne2000_receive(struct ne2000_state *ne, const uint8_t *frame, size_t length_bytes)
{
	if (!started(ne)) {
		ne->counters.frames_stopped++;
		return false;
	}
	if (length_bytes < 6 || length_bytes > NE2000_FRAME_MAX || (ne->rcr & NE2000_RCR_MON) ||
	    !accepts(ne, frame)) {
		ne->counters.frames_filtered++;
		return false;
	}
	if (!ring_sane(ne)) {
		ne->counters.bad_ring++;
		return false;
	}
	unsigned pages = frame_pages(length_bytes);
	/* Strictly less: CURR never catches up with BNRY, so CURR == BNRY
	 * keeps meaning "empty" for drivers that start them equal. */
	if (pages >= ring_free_pages(ne)) {
		ne->counters.frames_overflow++;
		ne->isr |= NE2000_ISR_OVW;
		return false;
	}
	unsigned ring_pages = (unsigned)(ne->pstop - ne->pstart);
	unsigned next = ne->curr + pages;
	if (next >= ne->pstop)
		next -= ring_pages;
	uint32_t total = (uint32_t)length_bytes + 4;
	uint32_t wrap_at = (uint32_t)ne->pstop * NE2000_PAGE_BYTES - NE2000_RAM_START;
	uint32_t ring_start = (uint32_t)ne->pstart * NE2000_PAGE_BYTES - NE2000_RAM_START;
	uint32_t pos = (uint32_t)ne->curr * NE2000_PAGE_BYTES - NE2000_RAM_START;
	ne->rsr = (uint8_t)(NE2000_RSR_PRX | ((frame[0] & 1u) ? NE2000_RSR_PHY : 0));
	uint8_t header[4] = { ne->rsr, (uint8_t)next, (uint8_t)total, (uint8_t)(total >> 8) };
	/* The header never wraps: it starts a page. */
	memcpy(&ne->ram[pos], header, 4);
	pos += 4;
	size_t done = 0;
	while (done < length_bytes) {
		if (pos == wrap_at)
			pos = ring_start;
		size_t chunk = length_bytes - done;
		if (chunk > wrap_at - pos)
			chunk = wrap_at - pos;
		memcpy(&ne->ram[pos], frame + done, chunk);
		pos += (uint32_t)chunk;
		done += chunk;
	}
	ne->curr = (uint8_t)next;
	ne->isr |= NE2000_ISR_PRX;
	ne->counters.frames_received++;
	return true;
}

void ne2000_print_stats(const struct ne2000_state *ne, FILE *out)
{
	const struct ne2000_counters *c = &ne->counters;
	fprintf(out, "  card_frames_sent: %llu\n", (unsigned long long)c->frames_sent);
	fprintf(out, "  card_frames_received: %llu\n", (unsigned long long)c->frames_received);
	fprintf(out, "  card_frames_filtered: %llu\n", (unsigned long long)c->frames_filtered);
	fprintf(out, "  card_frames_overflow: %llu\n", (unsigned long long)c->frames_overflow);
	fprintf(out, "  card_frames_stopped: %llu\n", (unsigned long long)c->frames_stopped);
	fprintf(out, "  card_bad_remote_dma: %llu\n", (unsigned long long)c->bad_remote_dma);
	fprintf(out, "  card_bad_transmit: %llu\n", (unsigned long long)c->bad_transmit);
	fprintf(out, "  card_bad_ring: %llu\n", (unsigned long long)c->bad_ring);
	fprintf(out, "  card_resets: %llu\n", (unsigned long long)c->resets);
}
