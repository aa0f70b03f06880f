/* Unit tests of the NE2000 state machine (ne2000.c), the --net syntax and the net.h layouts, without KVM. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "cunit_main.h"
#include "kapsel/abi.h"
#include "kapsel/net.h"
#include "devices/net/ne2000.h"
#include "devices/net/net_state.h"

static const uint8_t station[6] = { 0x02, 0x11, 0x22, 0x33, 0x44, 0x55 };

/* Frames the card transmitted, for the tests to look at. */
static uint8_t sent[4][NE2000_FRAME_MAX];
static size_t sent_length[4];
static unsigned sent_count;

static void capture(void *context, const uint8_t *frame, size_t length_bytes)
{
	(void)context;
	if (sent_count < 4) {
		memcpy(sent[sent_count], frame, length_bytes);
		sent_length[sent_count] = length_bytes;
	}
	sent_count++;
}

static void wr(struct ne2000_state *ne, unsigned reg, uint8_t v)
{
	ne2000_io_write(ne, reg, 1, v);
}
static uint8_t rd(struct ne2000_state *ne, unsigned reg)
{
	return (uint8_t)ne2000_io_read(ne, reg, 1);
}

static void remote(struct ne2000_state *ne, uint16_t addr, uint16_t count, uint8_t command)
{
	wr(ne, NE2000_P0_RBCR0, (uint8_t)count);
	wr(ne, NE2000_P0_RBCR1, (uint8_t)(count >> 8));
	wr(ne, NE2000_P0_RSAR0, (uint8_t)addr);
	wr(ne, NE2000_P0_RSAR1, (uint8_t)(addr >> 8));
	wr(ne, NE2000_CR, command);
}

/* The ring as a polled driver sets it up: PSTART 0x46, PSTOP 0x80,
 * BNRY = PSTART, CURR = PSTART + 1, broadcast accepted, started. */
static void bring_up(struct ne2000_state *ne, uint8_t pstart, uint8_t pstop)
{
	sent_count = 0;
	ne2000_init(ne, station, capture, NULL);
	wr(ne, NE2000_CR, 0x21);
	wr(ne, NE2000_P0_DCR, 0x49);
	wr(ne, NE2000_P0_PSTART, pstart);
	wr(ne, NE2000_P0_PSTOP, pstop);
	wr(ne, NE2000_P0_BNRY, pstart);
	wr(ne, NE2000_CR, 0x61);
	for (unsigned i = 0; i < 6; i++)
		wr(ne, NE2000_P1_PAR0 + i, station[i]);
	wr(ne, NE2000_P1_CURR, (uint8_t)(pstart + 1));
	wr(ne, NE2000_CR, 0x22);
	wr(ne, NE2000_P0_ISR, 0xff);
	wr(ne, NE2000_P0_RCR, NE2000_RCR_AB);
	wr(ne, NE2000_P0_TCR, 0);
}

static void make_frame(uint8_t *f, size_t length, const uint8_t dst[6], uint8_t seed)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, "\x02\x99\x99\x99\x99\x99", 6);
	for (size_t i = 12; i < length; i++)
		f[i] = (uint8_t)(seed + i * 3);
}

static void test_prom_read(void)
{
	struct ne2000_state *ne = calloc(1, sizeof(*ne));
	ne2000_init(ne, station, capture, NULL);
	CU_ASSERT_EQUAL(rd(ne, NE2000_P0_ISR) & NE2000_ISR_RST, NE2000_ISR_RST);
	/* Word mode, 32 bytes from address 0, 16-bit reads. */
	wr(ne, NE2000_P0_DCR, 0x49);
	remote(ne, 0, 32, 0x0a);
	uint8_t prom[32];
	for (unsigned i = 0; i < 16; i++) {
		uint16_t w = (uint16_t)ne2000_io_read(ne, NE2000_DATA_PORT, 2);
		prom[2 * i] = (uint8_t)w;
		prom[2 * i + 1] = (uint8_t)(w >> 8);
	}
	for (unsigned i = 0; i < 6; i++) {
		CU_ASSERT_EQUAL(prom[2 * i], station[i]);
		CU_ASSERT_EQUAL(prom[2 * i + 1], station[i]); /* doubled */
	}
	CU_ASSERT_EQUAL(prom[28], 0x57);
	CU_ASSERT_EQUAL(prom[30], 0x57);
	CU_ASSERT(rd(ne, NE2000_P0_ISR) & NE2000_ISR_RDC);
	/* Past the count: ones, counted, no state change. */
	uint64_t bad = ne->counters.bad_remote_dma;
	CU_ASSERT_EQUAL(ne2000_io_read(ne, NE2000_DATA_PORT, 1), 0xff);
	CU_ASSERT_EQUAL(ne->counters.bad_remote_dma, bad + 1);
	free(ne);
}

static void test_transmit(void)
{
	struct ne2000_state *ne = calloc(1, sizeof(*ne));
	bring_up(ne, 0x46, 0x80);
	uint8_t frame[100];
	make_frame(frame, sizeof(frame), (const uint8_t *)"\xff\xff\xff\xff\xff\xff", 7);
	remote(ne, 0x4000, sizeof(frame), 0x12);
	ne2000_data_write(ne, frame, sizeof(frame)); /* rep outsw */
	CU_ASSERT(rd(ne, NE2000_P0_ISR) & NE2000_ISR_RDC);
	wr(ne, NE2000_P0_ISR, NE2000_ISR_RDC);
	CU_ASSERT_EQUAL(rd(ne, NE2000_P0_ISR) & NE2000_ISR_RDC, 0); /* write 1 to clear */
	wr(ne, NE2000_P0_TPSR, 0x40);
	wr(ne, NE2000_P0_TBCR0, sizeof(frame));
	wr(ne, NE2000_P0_TBCR1, 0);
	wr(ne, NE2000_CR, 0x26);
	CU_ASSERT_EQUAL(sent_count, 1);
	CU_ASSERT_EQUAL(sent_length[0], sizeof(frame));
	CU_ASSERT_EQUAL(memcmp(sent[0], frame, sizeof(frame)), 0);
	uint8_t isr = rd(ne, NE2000_P0_ISR);
	CU_ASSERT(isr & NE2000_ISR_PTX);
	CU_ASSERT_EQUAL(isr & NE2000_ISR_TXE, 0);
	CU_ASSERT_EQUAL(rd(ne, NE2000_CR) & NE2000_CR_TXP, 0);
	/* Too long, or reaching past the card's RAM: refused, nothing sent. */
	wr(ne, NE2000_P0_ISR, 0xff);
	wr(ne, NE2000_P0_TBCR0, (uint8_t)1515);
	wr(ne, NE2000_P0_TBCR1, (uint8_t)(1515 >> 8));
	wr(ne, NE2000_CR, 0x26);
	wr(ne, NE2000_P0_TPSR, 0x7f);
	wr(ne, NE2000_P0_TBCR0, 0x00);
	wr(ne, NE2000_P0_TBCR1, 0x02); /* 512 bytes from 0x7f00 */
	wr(ne, NE2000_CR, 0x26);
	CU_ASSERT_EQUAL(sent_count, 1);
	CU_ASSERT(rd(ne, NE2000_P0_ISR) & NE2000_ISR_TXE);
	CU_ASSERT_EQUAL(ne->counters.bad_transmit, 2);
	free(ne);
}

/* Read the packet at the page after BNRY as a driver does; returns its
 * length (without header) and advances BNRY. */
static size_t driver_read(struct ne2000_state *ne, uint8_t *out)
{
	uint8_t next_read = (uint8_t)(rd(ne, NE2000_P0_BNRY) + 1);
	if (next_read >= ne->pstop)
		next_read = ne->pstart;
	uint8_t header[4];
	remote(ne, (uint16_t)(next_read * 256), 4, 0x0a);
	ne2000_data_read(ne, header, 4);
	size_t length = (size_t)(header[2] | header[3] << 8) - 4;
	remote(ne, (uint16_t)(next_read * 256 + 4), (uint16_t)length, 0x0a);
	ne2000_data_read(ne, out, length);
	uint8_t next = header[1];
	wr(ne, NE2000_P0_BNRY, (uint8_t)(next == ne->pstart ? ne->pstop - 1 : next - 1));
	return length;
}

static uint8_t curr_of(struct ne2000_state *ne)
{
	wr(ne, NE2000_CR, 0x62);
	uint8_t curr = rd(ne, NE2000_P1_CURR);
	wr(ne, NE2000_CR, 0x22);
	return curr;
}

static void test_receive_ring_wrap(void)
{
	struct ne2000_state *ne = calloc(1, sizeof(*ne));
	/* A small ring: pages 0x70-0x7f (16 pages). */
	bring_up(ne, 0x70, 0x80);
	uint8_t frame[1514], got[1600]; /* the longest Ethernet frame; round 19 sends 1003 bytes */
	unsigned stored = 0;
	for (unsigned round = 0; round < 20; round++) {
		size_t length = 300 + round * 37;
		CU_ASSERT_FATAL(length <= sizeof(frame));
		make_frame(frame, length, station, (uint8_t)round);
		uint8_t curr_before = curr_of(ne);
		CU_ASSERT_TRUE(ne2000_receive(ne, frame, length));
		stored++;
		unsigned pages = (unsigned)((length + 4 + 255) / 256);
		unsigned expected = curr_before + pages;
		if (expected >= 0x80)
			expected -= 16;
		CU_ASSERT_EQUAL(curr_of(ne), expected);
		CU_ASSERT(rd(ne, NE2000_P0_ISR) & NE2000_ISR_PRX);
		wr(ne, NE2000_P0_ISR, NE2000_ISR_PRX);
		memset(got, 0, sizeof(got));
		size_t n = driver_read(ne, got);
		CU_ASSERT_EQUAL(n, length);
		CU_ASSERT_EQUAL(memcmp(got, frame, length), 0);
	}
	CU_ASSERT_EQUAL(ne->counters.frames_received, stored);
	/* The frames went around the 16-page ring more than once. */
	CU_ASSERT(stored * 3 > 32);
	free(ne);
}

static void test_receive_full_and_filter(void)
{
	struct ne2000_state *ne = calloc(1, sizeof(*ne));
	bring_up(ne, 0x70, 0x80);
	uint8_t frame[1514];
	make_frame(frame, sizeof(frame), station, 1);
	/* 6 pages each; 15 free pages take two, the third overflows. */
	CU_ASSERT_TRUE(ne2000_receive(ne, frame, sizeof(frame)));
	CU_ASSERT_TRUE(ne2000_receive(ne, frame, sizeof(frame)));
	CU_ASSERT_FALSE(ne2000_can_receive(ne));
	CU_ASSERT_FALSE(ne2000_receive(ne, frame, sizeof(frame)));
	CU_ASSERT(rd(ne, NE2000_P0_ISR) & NE2000_ISR_OVW);
	CU_ASSERT_EQUAL(ne->counters.frames_overflow, 1);
	/* Someone else's unicast and (AM off) multicast are filtered. */
	bring_up(ne, 0x46, 0x80);
	make_frame(frame, 64, (const uint8_t *)"\x02\x00\x00\x00\x00\x09", 1);
	CU_ASSERT_FALSE(ne2000_receive(ne, frame, 64));
	make_frame(frame, 64, (const uint8_t *)"\x33\x33\x00\x00\x00\x01", 1);
	CU_ASSERT_FALSE(ne2000_receive(ne, frame, 64));
	CU_ASSERT_EQUAL(ne->counters.frames_filtered, 2);
	/* With AM and every MAR bit, the multicast gets in; PRO takes all. */
	wr(ne, NE2000_CR, 0x62);
	for (unsigned i = 0; i < 8; i++)
		wr(ne, NE2000_P1_MAR0 + i, 0xff);
	wr(ne, NE2000_CR, 0x22);
	wr(ne, NE2000_P0_RCR, NE2000_RCR_AM);
	CU_ASSERT_TRUE(ne2000_receive(ne, frame, 64));
	CU_ASSERT_EQUAL(ne->rsr & NE2000_RSR_PHY, NE2000_RSR_PHY);
	wr(ne, NE2000_P0_RCR, NE2000_RCR_PRO);
	make_frame(frame, 64, (const uint8_t *)"\x02\x00\x00\x00\x00\x09", 1);
	CU_ASSERT_TRUE(ne2000_receive(ne, frame, 64));
	/* Stopped: nothing is stored. */
	wr(ne, NE2000_CR, 0x21);
	CU_ASSERT_FALSE(ne2000_receive(ne, frame, 64));
	CU_ASSERT_EQUAL(ne->counters.frames_stopped, 1);
	free(ne);
}

static void test_isr_and_pages(void)
{
	struct ne2000_state *ne = calloc(1, sizeof(*ne));
	bring_up(ne, 0x46, 0x80);
	ne->isr = NE2000_ISR_PRX | NE2000_ISR_PTX | NE2000_ISR_RDC;
	wr(ne, NE2000_P0_ISR, NE2000_ISR_PTX);
	CU_ASSERT_EQUAL(rd(ne, NE2000_P0_ISR), NE2000_ISR_PRX | NE2000_ISR_RDC);
	wr(ne, NE2000_P0_ISR, 0);
	CU_ASSERT_EQUAL(rd(ne, NE2000_P0_ISR), NE2000_ISR_PRX | NE2000_ISR_RDC);
	/* Page 1 shows PAR/CURR/MAR at the offsets where page 0 has others. */
	wr(ne, NE2000_CR, 0x62);
	CU_ASSERT_EQUAL(rd(ne, NE2000_CR) >> 6, 1);
	for (unsigned i = 0; i < 6; i++)
		CU_ASSERT_EQUAL(rd(ne, NE2000_P1_PAR0 + i), station[i]);
	CU_ASSERT_EQUAL(rd(ne, NE2000_P1_CURR), 0x47);
	wr(ne, NE2000_P1_MAR0 + 3, 0xa5);
	CU_ASSERT_EQUAL(rd(ne, NE2000_P1_MAR0 + 3), 0xa5);
	/* A page-1 write at offset 3 did not touch page 0's BNRY. */
	wr(ne, 0x03, 0x55);
	CU_ASSERT_EQUAL(ne->bnry, 0x46);
	/* Page 2 reads back page 0 settings. */
	wr(ne, NE2000_CR, 0xa2);
	CU_ASSERT_EQUAL(rd(ne, NE2000_P2_PSTART), 0x46);
	CU_ASSERT_EQUAL(rd(ne, NE2000_P2_PSTOP), 0x80);
	CU_ASSERT_EQUAL(rd(ne, NE2000_P2_RCR), NE2000_RCR_AB);
	CU_ASSERT_EQUAL(rd(ne, NE2000_P2_DCR), 0x49);
	wr(ne, NE2000_CR, 0x22);
	CU_ASSERT_EQUAL(rd(ne, NE2000_P0_BNRY), 0x46);
	/* The reset port stops the card and sets RST, which W1C leaves. */
	(void)ne2000_io_read(ne, NE2000_RESET_PORT, 1);
	CU_ASSERT(rd(ne, NE2000_P0_ISR) & NE2000_ISR_RST);
	CU_ASSERT(rd(ne, NE2000_CR) & NE2000_CR_STP);
	wr(ne, NE2000_P0_ISR, 0xff);
	CU_ASSERT(rd(ne, NE2000_P0_ISR) & NE2000_ISR_RST);
	free(ne);
}

static void test_bad_remote_dma(void)
{
	struct ne2000_state *ne = calloc(1, sizeof(*ne));
	bring_up(ne, 0x46, 0x80);
	uint8_t before[NE2000_RAM_BYTES];
	memcpy(before, ne->ram, sizeof(before));
	uint8_t data[64];
	memset(data, 0xab, sizeof(data));
	/* Writes below RAM (the PROM and the hole) and past it are dropped. */
	remote(ne, 0x0000, 32, 0x12);
	ne2000_data_write(ne, data, 32);
	remote(ne, 0x8000, 64, 0x12);
	ne2000_data_write(ne, data, 64);
	remote(ne, 0xffe0, 64, 0x12); /* wraps to 0x0000 */
	ne2000_data_write(ne, data, 64);
	CU_ASSERT_EQUAL(memcmp(before, ne->ram, sizeof(before)), 0);
	CU_ASSERT_EQUAL(ne->prom[0], station[0]);
	/* More data than the count: the rest is dropped. */
	remote(ne, 0x7ff0, 8, 0x12);
	ne2000_data_write(ne, data, 64);
	CU_ASSERT_EQUAL(ne->ram[0x3ff0 + 7], 0xab);
	CU_ASSERT_EQUAL(ne->ram[0x3ff0 + 8], 0x00);
	/* Data port use with no command, or after abort: ones, no effect. */
	wr(ne, NE2000_CR, 0x22);
	uint8_t out[16];
	ne2000_data_read(ne, out, sizeof(out));
	for (unsigned i = 0; i < sizeof(out); i++)
		CU_ASSERT_EQUAL(out[i], 0xff);
	/* Reads outside PROM and RAM return ones. */
	remote(ne, 0x2000, 4, 0x0a);
	ne2000_data_read(ne, out, 4);
	CU_ASSERT_EQUAL(out[0], 0xff);
	CU_ASSERT(ne->counters.bad_remote_dma >= 6);
	/* A ring set past RAM stores nothing. */
	wr(ne, NE2000_CR, 0x21);
	wr(ne, NE2000_P0_PSTOP, 0x90);
	wr(ne, NE2000_CR, 0x22);
	uint8_t frame[64];
	make_frame(frame, 64, station, 3);
	CU_ASSERT_FALSE(ne2000_receive(ne, frame, 64));
	CU_ASSERT_EQUAL(ne->counters.bad_ring, 1);
	free(ne);
}

static void test_net_option_and_mac(void)
{
	char error[512];
	struct vm_net_config net;
	CU_ASSERT_EQUAL(vm_config_parse_net(
				"socket=/tmp/a,peer=/tmp/b,model=ne2000,mac=02:00:00:00:00:07,pps=10",
				&net, error, sizeof(error)),
			0);
	CU_ASSERT_EQUAL(net.backend, VM_NET_BACKEND_SOCKET);
	CU_ASSERT_EQUAL(net.model, VM_NET_MODEL_NE2000);
	CU_ASSERT_STRING_EQUAL(net.peer, "/tmp/b");
	CU_ASSERT_EQUAL(net.mac[5], 7);
	CU_ASSERT_EQUAL(net.frames_limit.rate_per_second, 10);
	vm_net_config_free(&net);
	CU_ASSERT_EQUAL(vm_config_parse_net("tap=tap0", &net, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(net.backend, VM_NET_BACKEND_TAP);
	CU_ASSERT_EQUAL(net.model, VM_NET_MODEL_PV);
	vm_net_config_free(&net);
	CU_ASSERT_EQUAL(vm_config_parse_net("socket=/tmp/a", &net, error, sizeof(error)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "peer=PATH"));
	CU_ASSERT_EQUAL(vm_config_parse_net("tap=tap0,mac=03:00:00:00:00:01", &net, error,
					    sizeof(error)),
			-EINVAL);
	CU_ASSERT_EQUAL(vm_config_parse_net("tap=tap0,model=e1000", &net, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "model 'e1000'"));

	/* Derived addresses: unicast, locally administered, differ per uuid
	 * and per index, stable for the same VM. */
	struct vm_config config;
	vm_config_init(&config);
	config.has_uuid = true;
	memset(config.uuid, 1, 16);
	uint8_t a[6], b[6], c[6], a2[6];
	vm_config_net_mac(&config, 0, a);
	vm_config_net_mac(&config, 1, b);
	vm_config_net_mac(&config, 0, a2);
	config.uuid[15] = 2;
	vm_config_net_mac(&config, 0, c);
	CU_ASSERT_EQUAL(a[0], 0x02);
	CU_ASSERT_EQUAL(memcmp(a, a2, 6), 0);
	CU_ASSERT_NOT_EQUAL(memcmp(a, b, 6), 0);
	CU_ASSERT_NOT_EQUAL(memcmp(a, c, 6), 0);
	vm_config_free(&config);
}

static void test_net_abi_layout(void)
{
	CU_ASSERT_EQUAL(sizeof(struct kapsel_net_request), 32);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_net_request, id), 0);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_net_request, gpa), 8);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_net_request, length_bytes), 16);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_net_request, flags), 20);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_net_request, _reserved), 24);
	CU_ASSERT_EQUAL(sizeof(struct kapsel_net_response), 16);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_net_response, status), 8);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_net_response, length_bytes), 12);
	CU_ASSERT_EQUAL(KAPSEL_NET_FRAME_MAX, 1514);
	CU_ASSERT_EQUAL(KAPSEL_NET_QUEUE_TX, 0);
	CU_ASSERT_EQUAL(KAPSEL_NET_QUEUE_RX, 1);
}

/* A card with frames in its ring (unread), saved and loaded into a new
 * card: the driver reads the same frames from the restored card, and a
 * clone's new MAC is in its PROM while PAR keeps what the driver set. */
static void test_state_round_trip(void)
{
	struct ne2000_state *ne = calloc(1, sizeof(*ne));
	struct ne2000_state *back = calloc(1, sizeof(*back));
	struct vm_state_ne2000 *rec = calloc(1, sizeof(*rec));
	char error[256];
	bring_up(ne, 0x70, 0x80);
	uint8_t frame[3][600], got[1600];
	for (unsigned i = 0; i < 3; i++) {
		make_frame(frame[i], 200 + 100 * i, station, (uint8_t)(40 + i));
		CU_ASSERT_TRUE(ne2000_receive(ne, frame[i], 200 + 100 * i));
	}
	ne2000_state_save(ne, rec);
	static const uint8_t clone_mac[6] = { 0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee };
	ne2000_init(back, clone_mac, capture, NULL);
	CU_ASSERT_EQUAL_FATAL(ne2000_state_load(back, rec, sizeof(*rec), error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(back->counters.frames_received, 3);
	CU_ASSERT_EQUAL(memcmp(back->par, station, 6), 0);
	CU_ASSERT_EQUAL(back->prom[0], 0x02);
	CU_ASSERT_EQUAL(back->prom[2], 0xaa);
	for (unsigned i = 0; i < 3; i++) {
		memset(got, 0, sizeof(got));
		CU_ASSERT_EQUAL(driver_read(back, got), 200 + 100 * i);
		CU_ASSERT_EQUAL(memcmp(got, frame[i], 200 + 100 * i), 0);
	}
	/* The restored card goes on receiving. */
	CU_ASSERT_TRUE(ne2000_receive(back, frame[0], 200));
	free(rec);
	free(back);
	free(ne);
}

/* Forged NE2000 records: each is refused with a message naming the field,
 * and the card is left as it was. */
static void test_state_forged(void)
{
	struct ne2000_state *ne = calloc(1, sizeof(*ne));
	struct ne2000_state *target = calloc(1, sizeof(*target));
	struct vm_state_ne2000 *good = calloc(1, sizeof(*good));
	struct vm_state_ne2000 *bad = calloc(1, sizeof(*bad));
	char error[256];
	bring_up(ne, 0x46, 0x80);
	ne2000_state_save(ne, good);
	ne2000_init(target, station, capture, NULL);
	struct ne2000_state before;
	memcpy(&before, target, sizeof(before));
	CU_ASSERT_EQUAL(ne2000_state_load(target, good, sizeof(*good) - 1, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "NE2000 record is"));
	const struct {
		const char *what;
		unsigned field; /* 0 cr, 1 isr, 2 pstart, 3 pstop, 4 curr, 5 bnry */
		uint8_t value;
		const char *message;
	} cases[] = {
		{ "started and stopped", 0, 0x23, "both started and stopped" },
		{ "neither started nor stopped", 0, 0x20, "or neither" },
		{ "transmit pending", 0, 0x26, "transmit pending" },
		{ "no remote DMA mode", 0, 0x02, "no remote DMA mode" },
		{ "RST while started", 1, NE2000_ISR_RST, "ISR.RST" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memcpy(bad, good, sizeof(*bad));
		uint8_t *fields[] = { &bad->cr,	   &bad->isr,  &bad->pstart,
				      &bad->pstop, &bad->curr, &bad->bnry };
		*fields[cases[i].field] = cases[i].value;
		error[0] = '\0';
		int err = ne2000_state_load(target, bad, sizeof(*bad), error, sizeof(error));
		if (err != -EINVAL || !strstr(error, cases[i].message))
			printf("\n  %s: %d '%s'\n", cases[i].what, err, error);
		CU_ASSERT_EQUAL(err, -EINVAL);
		CU_ASSERT_PTR_NOT_NULL(strstr(error, cases[i].message));
		CU_ASSERT_EQUAL(memcmp(target, &before, sizeof(before)), 0);
	}
	/* A stopped card may hold any ring registers (the driver sets them
	 * before it starts the card). */
	memcpy(bad, good, sizeof(*bad));
	bad->cr = 0x21;
	bad->isr |= NE2000_ISR_RST;
	bad->pstart = 0;
	CU_ASSERT_EQUAL(ne2000_state_load(target, bad, sizeof(*bad), error, sizeof(error)), 0);
	/* The good record loads. */
	CU_ASSERT_EQUAL(ne2000_state_load(target, good, sizeof(*good), error, sizeof(error)), 0);
	free(bad);
	free(good);
	free(target);
	free(ne);
}

/* Every register state a guest can reach through the ports saves and
 * loads: a started card whose driver then moved its ring outside card RAM
 * (PSTART 0x00, PSTOP 0xff, CURR and BNRY anywhere) is a state the running
 * card handles (nothing is stored, bad_ring counts), so its record must
 * restore; otherwise a guest makes its own save useless and, in a live
 * migration, fails the destination after the source handed its NIC over.
 * The loaded card stays inside its memory whatever the ring says. */
static void test_state_guest_ring_outside_ram(void)
{
	struct ne2000_state *ne = calloc(1, sizeof(*ne));
	struct ne2000_state *back = calloc(1, sizeof(*back));
	struct vm_state_ne2000 *rec = calloc(1, sizeof(*rec));
	char error[256];
	uint8_t frame[600], got[64];
	make_frame(frame, 600, station, 7);
	static const uint8_t settings[][4] = {
		/* PSTART, PSTOP, BNRY, CURR written by the guest, card started */
		{ 0x00, 0x80, 0x46, 0x47 }, { 0x46, 0xff, 0x46, 0x47 }, { 0x50, 0x50, 0x50, 0x50 },
		{ 0x60, 0x50, 0x10, 0xf0 }, { 0x46, 0x80, 0x00, 0xff },
	};
	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
		bring_up(ne, 0x46, 0x80);
		wr(ne, NE2000_P0_PSTART, settings[i][0]);
		wr(ne, NE2000_P0_PSTOP, settings[i][1]);
		wr(ne, NE2000_P0_BNRY, settings[i][2]);
		wr(ne, NE2000_CR, 0x62);
		wr(ne, NE2000_P1_CURR, settings[i][3]);
		wr(ne, NE2000_CR, 0x22);
		CU_ASSERT_FALSE(ne2000_receive(ne, frame, 600)); /* the running card: dropped */
		ne2000_state_save(ne, rec);
		ne2000_init(back, station, capture, NULL);
		error[0] = '\0';
		int err = ne2000_state_load(back, rec, sizeof(*rec), error, sizeof(error));
		if (err)
			printf("\n  ring %02x-%02x BNRY %02x CURR %02x: %d '%s'\n", settings[i][0],
			       settings[i][1], settings[i][2], settings[i][3], err, error);
		CU_ASSERT_EQUAL(err, 0);
		/* Restored, it drops frames as the running card did and reads
		 * stay inside card memory (send packet at any BNRY). */
		uint64_t bad_ring = back->counters.bad_ring;
		CU_ASSERT_FALSE(ne2000_receive(back, frame, 600));
		CU_ASSERT_FALSE(ne2000_can_receive(back));
		CU_ASSERT_EQUAL(back->counters.bad_ring, bad_ring + (err == 0));
		wr(back, NE2000_CR, 0x1a);
		ne2000_data_read(back, got, sizeof(got));
	}
	free(rec);
	free(back);
	free(ne);
}

/* Forged PV net records: refused before any ring is looked at. */
static void test_net_pv_record_forged(void)
{
	struct vm_state_net_pv good = { 0 }, bad, out;
	char error[256];
	good.queues[0] = (struct vm_state_net_pv_queue){
		.ring_gpa = 0x200000, .ring_pages = 1, .order = 5, .req_cons = 7, .rsp_prod = 7
	};
	good.frames_dropped_at_save = 3;
	CU_ASSERT_EQUAL(net_pv_record_check(&good, sizeof(good), &out, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(out.frames_dropped_at_save, 3);
	CU_ASSERT_EQUAL(net_pv_record_check(&good, sizeof(good) + 8, &out, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "PV net record is 184 bytes, expected 176"));

	bad = good;
	bad.queues[0].rsp_prod = 6; /* a frame taken and not answered */
	CU_ASSERT_EQUAL(net_pv_record_check(&bad, sizeof(bad), &out, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "the TX ring's indices differ (taken 7, answered 6)"));
	bad = good;
	bad.queues[1].req_cons = 4; /* no RX ring, yet indices */
	CU_ASSERT_EQUAL(net_pv_record_check(&bad, sizeof(bad), &out, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "the RX ring is not set up"));
	bad = good;
	bad.queues[0].ring_pages = 0;
	CU_ASSERT_EQUAL(net_pv_record_check(&bad, sizeof(bad), &out, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "has 0 pages"));
	bad = good;
	bad.queues[0].broken = 2;
	CU_ASSERT_EQUAL(net_pv_record_check(&bad, sizeof(bad), &out, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "broken flag is 2"));
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "station address PROM via remote DMA", test_prom_read },
		{ "transmit via remote DMA write and TXP", test_transmit },
		{ "receive ring wraps with CURR and BNRY", test_receive_ring_wrap },
		{ "full ring, receive filter, stopped card", test_receive_full_and_filter },
		{ "ISR write-1-to-clear and page switching", test_isr_and_pages },
		{ "bad remote DMA addresses and counts", test_bad_remote_dma },
		{ "--net syntax and derived MACs", test_net_option_and_mac },
		{ "net.h layouts", test_net_abi_layout },
		{ "NE2000 state saved and loaded with frames in its ring", test_state_round_trip },
		{ "forged NE2000 state refused", test_state_forged },
		{ "forged PV net state refused", test_net_pv_record_forged },
		{ "a started card with its ring outside RAM restores",
		  test_state_guest_ring_outside_ram },
	};
	return UNIT_RUN("ne2000", tests);
}
