/* Example guest: two VMs bounce checksummed, numbered Ethernet frames (PV or NE2000) and report round-trip latency. */
#include "../lib/net_internal.h"
#include "kapsel_guest/arch.h"
#include "kapsel_guest/net.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

#include "args.h"

/*
 * Usage (guest command line, key=value):
 *   role=ping count=N [size=BYTES] [peer=MAC]   send N frames, wait for each echo
 *   role=pong                                    echo frames (source and
 *                                                destination swapped) until "bye"
 *   role=send count=N [size=BYTES]               send N frames, expect nothing
 *   role=garbage                                 PV only: hostile TX descriptors
 *                                                must be refused, then a frame goes
 * Common: path=auto|pv|ne2000|virtio, index=N (interface), poll=US (PV busy-poll).
 * ping: retries=N (tries per frame, default 50, 200 ms apart), report=N
 * (print "ping frame SEQ" every N frames, so a test can save or migrate the
 * VM mid-run); pong: idle_s=N (stop after N s without a frame, default 30).
 * The frame: destination, source, type 0x88b5, then the payload
 *   "KNPP" kind(1) 0(3) seq(4, le) length(4, le) data[length] fnv32(4, le)
 * where data[i] = pattern(seq, i) and fnv32 covers everything from "KNPP"
 * to the end of data.  tests/integration/net.sh reads frames of the same
 * layout on a tap.
 */

#define ETHERTYPE_KAPSEL_TEST 0x88b5u
#define KIND_DATA 1u
#define KIND_BYE 2u
#define HEADER_BYTES 14u
#define PAYLOAD_HEADER_BYTES 16u
#define RETRY_NS 200000000ull /* resend a frame whose echo did not come */
#define RETRIES_DEFAULT 50u
#define PONG_IDLE_S_DEFAULT 30u

static struct kg_net_device *net;
static uint8_t own_mac[6];
static uint8_t frame[KAPSEL_NET_FRAME_MAX + 2];
static uint8_t received[KAPSEL_NET_FRAME_MAX + 2];

static uint32_t fnv32(const uint8_t *p, uint32_t n)
{
	uint32_t h = 2166136261u;
	for (uint32_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static uint8_t pattern(uint32_t seq, uint32_t i)
{
	return (uint8_t)((seq * 131u + i * 7u + (i >> 8)) ^ 0x5au);
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Build a frame of data_bytes pattern bytes; returns its length. */
static uint32_t build(uint8_t *f, const uint8_t dst[6], uint32_t kind, uint32_t seq,
		      uint32_t data_bytes)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, own_mac, 6);
	f[12] = (uint8_t)(ETHERTYPE_KAPSEL_TEST >> 8);
	f[13] = (uint8_t)ETHERTYPE_KAPSEL_TEST;
	uint8_t *p = f + HEADER_BYTES;
	memcpy(p, "KNPP", 4);
	p[4] = (uint8_t)kind;
	p[5] = p[6] = p[7] = 0;
	put32(p + 8, seq);
	put32(p + 12, data_bytes);
	for (uint32_t i = 0; i < data_bytes; i++)
		p[PAYLOAD_HEADER_BYTES + i] = pattern(seq, i);
	put32(p + PAYLOAD_HEADER_BYTES + data_bytes, fnv32(p, PAYLOAD_HEADER_BYTES + data_bytes));
	return HEADER_BYTES + PAYLOAD_HEADER_BYTES + data_bytes + 4;
}

/* Check a received frame's payload; returns its kind (0 if not ours or
 * corrupt: *corrupt says which), its seq in *seq. */
static uint32_t parse(const uint8_t *f, int length, uint32_t *seq, bool *corrupt)
{
	*corrupt = false;
	if (length < (int)(HEADER_BYTES + PAYLOAD_HEADER_BYTES + 4) ||
	    f[12] != (uint8_t)(ETHERTYPE_KAPSEL_TEST >> 8) ||
	    f[13] != (uint8_t)ETHERTYPE_KAPSEL_TEST)
		return 0; /* someone else's frame (e.g. IPv6 router solicitations on a tap) */
	const uint8_t *p = f + HEADER_BYTES;
	uint32_t data_bytes = get32(p + 12);
	*corrupt = true;
	if (memcmp(p, "KNPP", 4) != 0 ||
	    HEADER_BYTES + PAYLOAD_HEADER_BYTES + data_bytes + 4 > (uint32_t)length)
		return 0;
	*seq = get32(p + 8);
	if (get32(p + PAYLOAD_HEADER_BYTES + data_bytes) !=
	    fnv32(p, PAYLOAD_HEADER_BYTES + data_bytes))
		return 0;
	for (uint32_t i = 0; i < data_bytes; i++)
		if (p[PAYLOAD_HEADER_BYTES + i] != pattern(*seq, i))
			return 0;
	*corrupt = false;
	return p[4];
}

static bool parse_mac(const char *text, uint8_t mac[6])
{
	for (int i = 0; i < 6; i++) {
		unsigned v = 0;
		for (int j = 0; j < 2; j++) {
			char c = text[i * 3 + j];
			v <<= 4;
			if (c >= '0' && c <= '9')
				v |= (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f')
				v |= (unsigned)(c - 'a' + 10);
			else if (c >= 'A' && c <= 'F')
				v |= (unsigned)(c - 'A' + 10);
			else
				return false;
		}
		if (i < 5 && text[i * 3 + 2] != ':')
			return false;
		mac[i] = (uint8_t)v;
	}
	return text[17] == '\0';
}

static uint64_t number_arg(const char *key, uint64_t fallback)
{
	const char *text = args_text(key);
	uint64_t value;
	if (!text)
		return fallback;
	if (kg_parse_u64(text, &value) < 0)
		kg_panic("netpingpong: %s='%s' is not a number", key, text);
	return value;
}

static uint64_t cycles_to_ns(uint64_t cycles)
{
	const struct kapsel_start_info *si = kg_platform_start_info();
	uint64_t khz = si && si->tsc_khz ? si->tsc_khz : 1000000;
	return cycles * 1000000ull / khz;
}

static int do_ping(uint32_t count, uint32_t data_bytes, const uint8_t peer[6], uint32_t retries_max,
		   uint32_t report)
{
	uint64_t min_ns = UINT64_MAX, max_ns = 0, total_ns = 0;
	uint32_t retries = 0;
	uint64_t start_tsc = kg_rdtsc();
	for (uint32_t seq = 0; seq < count; seq++) {
		if (report && seq && seq % report == 0)
			kg_printf("netpingpong: ping frame %u\n", seq);
		uint32_t length = build(frame, peer, KIND_DATA, seq, data_bytes);
		uint32_t tries = 0;
		for (;;) {
			uint64_t sent_tsc = kg_rdtsc();
			int err = kg_net_send(net, frame, length);
			if (err)
				kg_panic("netpingpong: send of frame %u failed: %d", seq, err);
			uint64_t deadline = kg_time_now_ns() + RETRY_NS;
			int n;
			bool echoed = false;
			while ((n = kg_net_recv_until(net, received, sizeof(received), deadline)) >
			       0) {
				uint32_t got_seq = 0;
				bool corrupt;
				uint32_t kind = parse(received, n, &got_seq, &corrupt);
				if (corrupt) {
					kg_printf("netpingpong: corrupt echo (seq %u)\n", got_seq);
					return 1;
				}
				if (kind != KIND_DATA || got_seq < seq)
					continue; /* not ours, or a late echo of a resent frame */
				if (got_seq != seq || (uint32_t)n != length ||
				    memcmp(received, own_mac, 6) != 0 ||
				    memcmp(received + 6, peer[0] & 1 ? received + 6 : peer, 6) !=
					    0) {
					kg_printf("netpingpong: echo %u does not match frame %u (length %d of %u, or addresses)\n",
						  got_seq, seq, n, length);
					return 1;
				}
				uint64_t rtt = cycles_to_ns(kg_rdtsc() - sent_tsc);
				total_ns += rtt;
				min_ns = rtt < min_ns ? rtt : min_ns;
				max_ns = rtt > max_ns ? rtt : max_ns;
				echoed = true;
				break;
			}
			if (n < 0) {
				kg_printf("netpingpong: receive failed: %d\n", n);
				return 1;
			}
			if (echoed)
				break;
			if (++tries > retries_max) {
				kg_printf("netpingpong: no echo of frame %u after %u tries\n", seq,
					  tries);
				return 1;
			}
			retries++;
		}
	}
	uint64_t elapsed_ns = cycles_to_ns(kg_rdtsc() - start_tsc);
	/* Tell the pong side to stop (a few times: a wire may drop one). */
	uint32_t length = build(frame, peer, KIND_BYE, count, 0);
	for (int i = 0; i < 3; i++)
		kg_net_send(net, frame, length);
	uint64_t avg_ns = count ? total_ns / count : 0;
	uint64_t rate = elapsed_ns ? (uint64_t)count * 1000000000ull / elapsed_ns : 0;
	kg_printf("netpingpong: ping path=%s frames=%u frame_bytes=%u rtt_us min=%llu avg=%llu max=%llu round_trips_per_s=%llu retries=%u\n",
		  kg_net_path_name(kg_net_path_of(net)), count,
		  HEADER_BYTES + PAYLOAD_HEADER_BYTES + data_bytes + 4,
		  (unsigned long long)(min_ns / 1000), (unsigned long long)(avg_ns / 1000),
		  (unsigned long long)(max_ns / 1000), (unsigned long long)rate, retries);
	return 0;
}

static int do_pong(uint64_t idle_s)
{
	uint32_t echoed = 0, corrupt_frames = 0, ignored = 0;
	for (;;) {
		int n = kg_net_recv_until(net, received, sizeof(received),
					  kg_time_now_ns() + idle_s * 1000000000ull);
		if (n <= 0) {
			kg_printf("netpingpong: pong got %s after %u echoes (idle_s=%llu)\n",
				  n == 0 ? "no frame in time" : "a receive error", echoed,
				  (unsigned long long)idle_s);
			return 1;
		}
		uint32_t seq = 0;
		bool corrupt;
		uint32_t kind = parse(received, n, &seq, &corrupt);
		if (corrupt) {
			corrupt_frames++;
			continue;
		}
		if (kind == KIND_BYE)
			break;
		if (kind != KIND_DATA) {
			ignored++;
			continue;
		}
		/* Swap the addresses; a broadcast destination answers from us. */
		uint8_t dst[6];
		memcpy(dst, received, 6);
		memcpy(received, received + 6, 6);
		memcpy(received + 6, (dst[0] & 1) ? own_mac : dst, 6);
		int err = kg_net_send(net, received, (uint32_t)n);
		if (err) {
			kg_printf("netpingpong: echo of frame %u failed: %d\n", seq, err);
			return 1;
		}
		echoed++;
	}
	kg_printf("netpingpong: pong path=%s echoed=%u corrupt=%u ignored=%u\n",
		  kg_net_path_name(kg_net_path_of(net)), echoed, corrupt_frames, ignored);
	return corrupt_frames ? 1 : 0;
}

static int do_send(uint32_t count, uint32_t data_bytes, const uint8_t peer[6])
{
	for (uint32_t seq = 0; seq < count; seq++) {
		uint32_t length = build(frame, peer, KIND_DATA, seq, data_bytes);
		int err = kg_net_send(net, frame, length);
		if (err) {
			kg_printf("netpingpong: send of frame %u failed: %d\n", seq, err);
			return 1;
		}
	}
	kg_printf("netpingpong: sent %u frames path=%s\n", count,
		  kg_net_path_name(kg_net_path_of(net)));
	return 0;
}

/* Hostile TX descriptors must come back refused; the device still works. */
static int do_garbage(void)
{
	const struct kapsel_start_info *si = kg_platform_start_info();
	uint64_t good = (uint64_t)(uintptr_t)frame;
	const struct {
		const char *what;
		uint64_t gpa;
		uint32_t length;
		int expected;
	} cases[] = {
		{ "oversized 1515", good, 1515, -KAPSEL_EINVAL },
		{ "oversized 65535", good, 65535, -KAPSEL_EINVAL },
		{ "empty", good, 0, -KAPSEL_EINVAL },
		{ "past the end of RAM", si->ram_bytes + 4096, 100, -KAPSEL_EFAULT },
		{ "straddling the end of RAM", si->ram_bytes - 50, 100, -KAPSEL_EFAULT },
		{ "hypervisor tables", 0x1000, 100, -KAPSEL_EFAULT },
		{ "wrapping address", UINT64_MAX - 10, 100, -KAPSEL_EFAULT },
	};
	unsigned refused = 0, total = sizeof(cases) / sizeof(cases[0]);
	for (unsigned i = 0; i < total; i++) {
		int status = kg_net_pv_send_raw(net, cases[i].gpa, cases[i].length);
		if (status == cases[i].expected)
			refused++;
		else
			kg_printf("netpingpong: %s: status %d, expected %d\n", cases[i].what,
				  status, cases[i].expected);
	}
	static const uint8_t broadcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	uint32_t length = build(frame, broadcast, KIND_DATA, 0, 64);
	int status = kg_net_pv_send_raw(net, (uint64_t)(uintptr_t)frame, length);
	kg_printf("netpingpong: garbage refused %u/%u, good frame status %d\n", refused, total,
		  status);
	return refused == total && status == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	args_init(argc, argv, 0);
	const char *role = args_text("role");
	enum kg_net_path path = args_net_path("netpingpong");
	int err = kg_net_open((unsigned)number_arg("index", 0), path, &net);
	if (err) {
		kg_printf("netpingpong: no network interface on path %s: %d\n",
			  kg_net_path_name(path), err);
		return 2;
	}
	kg_net_set_poll_ns(net, number_arg("poll", 0) * 1000);
	kg_net_mac(net, own_mac);
	kg_printf("netpingpong: %s path=%s mac=%02x:%02x:%02x:%02x:%02x:%02x\n", role ? role : "?",
		  kg_net_path_name(kg_net_path_of(net)), own_mac[0], own_mac[1], own_mac[2],
		  own_mac[3], own_mac[4], own_mac[5]);
	uint8_t peer[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	const char *peer_text = args_text("peer");
	if (peer_text && !parse_mac(peer_text, peer))
		kg_panic("netpingpong: peer='%s' is not a MAC address", peer_text);
	uint32_t count = (uint32_t)number_arg("count", 100);
	uint32_t size = (uint32_t)number_arg("size", 128);
	uint32_t overhead = HEADER_BYTES + PAYLOAD_HEADER_BYTES + 4;
	if (size < overhead || size > KAPSEL_NET_FRAME_MAX)
		kg_panic("netpingpong: size=%u must be %u-%u", size, overhead,
			 KAPSEL_NET_FRAME_MAX);
	if (!role)
		kg_panic("netpingpong: give role=ping, pong, send or garbage");
	if (strcmp(role, "ping") == 0)
		return do_ping(count, size - overhead, peer,
			       (uint32_t)number_arg("retries", RETRIES_DEFAULT),
			       (uint32_t)number_arg("report", 0));
	if (strcmp(role, "pong") == 0)
		return do_pong(number_arg("idle_s", PONG_IDLE_S_DEFAULT));
	if (strcmp(role, "send") == 0)
		return do_send(count, size - overhead, peer);
	if (strcmp(role, "garbage") == 0)
		return do_garbage();
	kg_panic("netpingpong: role='%s' is unknown", role);
}
