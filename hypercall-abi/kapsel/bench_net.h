/* What netbench.elf and `kapsel bench`'s native net path share: the frame layout, its check, and the request/response and stream loops of both ends (freestanding). */
#ifndef KAPSEL_BENCH_NET_H
#define KAPSEL_BENCH_NET_H

/*
 * Included by the hypervisor's bench (hosted, two threads on Unix
 * datagram sockets) and by guest-pv/examples/netbench.c (freestanding,
 * the guest library's kg_net_* on PV or NE2000), so every path sends the
 * same bytes in the same pattern and checks every frame the same way.
 * Only <stdint.h>, <stdbool.h> and bench_pattern.h; all static inline.
 *
 * A frame (SIZE bytes, BENCH_NET_FRAME_MIN..BENCH_NET_FRAME_MAX):
 *   0   destination MAC, 6   source MAC, 12  type 0x88b5 (local experimental)
 *   14  "KNBF"  18 kind  19 phase (0 warm-up, 1 measured)  20 0 0
 *   22  seq (le32)  26 length = SIZE (le32)  30 arg0 (le64)  38 arg1 (le64)
 *   46  data[i] = bench_net_byte(seq, i) up to SIZE - 4
 *   SIZE-4  FNV-1a 32 of bytes 14 .. SIZE-4 (le32)
 * The client (the measured end) says HELLO until the server answers,
 * then runs the pattern: rr sends DATA seq and waits for its echo
 * (addresses swapped) before the next; stream sends DATA as fast as the
 * link takes it and expects nothing back.  END (arg0 = measured DATA
 * frames sent) ends the run; the server answers REPORT (arg0 = measured
 * DATA frames it received intact, arg1 = frames that failed the check,
 * seq = sequence gaps: a frame that did not follow the one before, after
 * a drop or a reorder).
 */

#include <stdbool.h>
#include <stdint.h>

#include "kapsel/bench_pattern.h"

#define BENCH_NET_ETHERTYPE 0x88b5u
#define BENCH_NET_HEADER_BYTES 46u
#define BENCH_NET_FRAME_MIN 60u /* Ethernet's minimum without FCS: no padding anywhere */
#define BENCH_NET_FRAME_MAX 1514u
#define BENCH_NET_RETRY_NS 2000000000ull	   /* resend a HELLO, END or unanswered rr DATA */
#define BENCH_NET_HELLO_TIMEOUT_NS 120000000000ull /* the peer VM boots (nested: slow) */
#define BENCH_NET_SERVER_IDLE_NS 300000000000ull
#define BENCH_NET_SERVER_LINGER_NS 3000000000ull /* after END: answer a repeated END */

enum bench_net_kind {
	BENCH_NET_HELLO = 1,
	BENCH_NET_DATA = 2,
	BENCH_NET_END = 3,
	BENCH_NET_REPORT = 4,
};

static inline uint8_t bench_net_byte(uint32_t seq, uint32_t i)
{
	return (uint8_t)((seq * 131u + i * 7u + (i >> 8)) ^ 0xa5u);
}

static inline uint32_t bench_net_fnv32(const uint8_t *p, uint32_t n)
{
	uint32_t h = 2166136261u;
	for (uint32_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static inline void bench_net_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t bench_net_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Build a frame of size bytes (BENCH_NET_FRAME_MIN..MAX) into f. */
static inline void bench_net_build(uint8_t *f, uint32_t size, const uint8_t dst[6],
				   const uint8_t src[6], enum bench_net_kind kind, uint32_t phase,
				   uint32_t seq, uint64_t arg0, uint64_t arg1)
{
	for (int i = 0; i < 6; i++) {
		f[i] = dst[i];
		f[6 + i] = src[i];
	}
	f[12] = (uint8_t)(BENCH_NET_ETHERTYPE >> 8);
	f[13] = (uint8_t)BENCH_NET_ETHERTYPE;
	f[14] = 'K';
	f[15] = 'N';
	f[16] = 'B';
	f[17] = 'F';
	f[18] = (uint8_t)kind;
	f[19] = (uint8_t)phase;
	f[20] = f[21] = 0;
	bench_net_put32(f + 22, seq);
	bench_net_put32(f + 26, size);
	bench_pattern_put_u64(f + 30, arg0);
	bench_pattern_put_u64(f + 38, arg1);
	for (uint32_t i = BENCH_NET_HEADER_BYTES; i + 4 < size; i++)
		f[i] = bench_net_byte(seq, i);
	bench_net_put32(f + size - 4, bench_net_fnv32(f + 14, size - 18));
}

/* What a received frame says, once it passed bench_net_check. */
struct bench_net_frame {
	enum bench_net_kind kind;
	uint32_t phase, seq;
	uint64_t arg0, arg1;
};

/*
 * Check the length bytes in f: returns 1 for an intact frame of ours
 * (fields in *out), 0 for someone else's frame (another type: a tap
 * carries IPv6 solicitations), -1 for one of ours that is damaged
 * (length, checksum or any data byte wrong).
 */
static inline int bench_net_check(const uint8_t *f, uint32_t length, struct bench_net_frame *out)
{
	if (length < 14 || f[12] != (uint8_t)(BENCH_NET_ETHERTYPE >> 8) ||
	    f[13] != (uint8_t)BENCH_NET_ETHERTYPE)
		return 0;
	if (length < BENCH_NET_FRAME_MIN || length > BENCH_NET_FRAME_MAX || f[14] != 'K' ||
	    f[15] != 'N' || f[16] != 'B' || f[17] != 'F' || bench_net_get32(f + 26) != length)
		return -1;
	if (bench_net_get32(f + length - 4) != bench_net_fnv32(f + 14, length - 18))
		return -1;
	uint32_t seq = bench_net_get32(f + 22);
	for (uint32_t i = BENCH_NET_HEADER_BYTES; i + 4 < length; i++)
		if (f[i] != bench_net_byte(seq, i))
			return -1;
	if (f[18] < BENCH_NET_HELLO || f[18] > BENCH_NET_REPORT)
		return -1;
	out->kind = (enum bench_net_kind)f[18];
	out->phase = f[19];
	out->seq = seq;
	out->arg0 = bench_pattern_get_u64(f + 30);
	out->arg1 = bench_pattern_get_u64(f + 38);
	return 1;
}

/* ---- The two ends ---------------------------------------------------------- */

/*
 * What a path supplies.  send: 0 or negative (a frame the link drops
 * still returns 0, as a wire takes it); recv: the frame's length, 0 when
 * deadline_ns (on now_ns's clock) passed, negative on an error; mark:
 * "start" / "end" around the measured phase (the guest's handshake with
 * the host), may be NULL.
 */
struct bench_net_link {
	void *context;
	int (*send)(void *context, const uint8_t *frame, uint32_t length);
	int (*recv)(void *context, uint8_t *buffer, uint32_t max_bytes, uint64_t deadline_ns);
	uint64_t (*now_ns)(void *context);
	void (*mark)(void *context, const char *name);
	uint8_t mac[6];
	uint8_t frame[BENCH_NET_FRAME_MAX + 2];
	uint8_t received[BENCH_NET_FRAME_MAX + 2];
};

struct bench_net_params {
	bool stream; /* else request/response */
	uint32_t frame_bytes;
	uint64_t warmup_ns, runtime_ns; /* time-bounded phases, or */
	uint64_t warmup_ops, ops;	/* when ops > 0, this many frames (rr: round trips) */
};

struct bench_net_result {
	int error; /* 0, or what went wrong (the text says) */
	const char *error_text;
	uint64_t ops;	     /* rr: round trips; stream: frames the server got intact */
	uint64_t sent;	     /* measured DATA frames sent */
	uint64_t elapsed_ns; /* measured phase, until the server's REPORT */
	uint64_t bytes;	     /* frame bytes that crossed the link in the phase */
	uint64_t retries;    /* rr: frames sent again after BENCH_NET_RETRY_NS */
	uint64_t verified;   /* frames checked intact, both ends, both phases */
	uint64_t bad;	     /* frames that failed the check, both ends */
	uint64_t seq_gaps, lost;
	uint64_t warmup_ops;
	uint64_t latency_sum_ns, latency_max_ns;
	uint32_t *histogram; /* BENCH_HIST_BUCKETS, supplied by the caller (rr) */
	uint64_t hist_total;
};

/* Check the n-byte frame in link->received into *got and count it:
 * 1 one of ours, intact (verified); 0 not ours; -1 damaged (bad). */
static inline int bench_net_take(struct bench_net_link *link, struct bench_net_result *r, int n,
				 struct bench_net_frame *got)
{
	int c = bench_net_check(link->received, (uint32_t)n, got);
	if (c < 0)
		r->bad++;
	else if (c > 0)
		r->verified++;
	return c;
}

/* Wait for one of our intact frames of kind (others are counted, skipped). */
static inline int bench_net_wait(struct bench_net_link *link, struct bench_net_result *r,
				 enum bench_net_kind kind, uint64_t deadline_ns,
				 struct bench_net_frame *got)
{
	for (;;) {
		int n = link->recv(link->context, link->received, BENCH_NET_FRAME_MAX, deadline_ns);
		if (n <= 0)
			return n;
		if (bench_net_take(link, r, n, got) > 0 && got->kind == kind)
			return n;
	}
}

static inline const uint8_t *bench_net_broadcast(void)
{
	static const uint8_t all[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	return all;
}

/* One round trip of DATA seq; returns 0, or negative with r->error_text. */
static inline int bench_net_round_trip(struct bench_net_link *link, const uint8_t peer[6],
				       const struct bench_net_params *p, uint32_t phase,
				       uint32_t seq, struct bench_net_result *r)
{
	bench_net_build(link->frame, p->frame_bytes, peer, link->mac, BENCH_NET_DATA, phase, seq, 0,
			0);
	for (unsigned tries = 0; tries < 30; tries++) {
		uint64_t sent = link->now_ns(link->context);
		if (link->send(link->context, link->frame, p->frame_bytes) < 0) {
			r->error_text = "send failed";
			return -1;
		}
		struct bench_net_frame got;
		int n;
		while ((n = bench_net_wait(link, r, BENCH_NET_DATA, sent + BENCH_NET_RETRY_NS,
					   &got)) > 0) {
			if (got.seq != seq || got.phase != phase)
				continue; /* a late echo of a frame sent again */
			if ((uint32_t)n != p->frame_bytes) {
				r->error_text = "echo has the wrong length";
				return -1;
			}
			if (phase == 1) {
				uint64_t ns = link->now_ns(link->context) - sent;
				r->latency_sum_ns += ns;
				if (ns > r->latency_max_ns)
					r->latency_max_ns = ns;
				if (r->histogram)
					r->histogram[bench_hist_index(ns)]++;
				r->hist_total++;
			}
			return 0;
		}
		if (n < 0) {
			r->error_text = "receive failed";
			return -1;
		}
		r->retries++;
	}
	r->error_text = "no echo after 30 tries";
	return -1;
}

/* Run one phase; returns the DATA frames (rr: round trips) it made, or -1. */
static inline int64_t bench_net_phase(struct bench_net_link *link, const uint8_t peer[6],
				      const struct bench_net_params *p, uint32_t phase,
				      uint64_t budget_ns, uint64_t ops, struct bench_net_result *r)
{
	uint64_t start = link->now_ns(link->context);
	uint64_t done = 0;
	while (ops ? done < ops : link->now_ns(link->context) - start < budget_ns) {
		if (!p->stream) {
			if (bench_net_round_trip(link, peer, p, phase, (uint32_t)done, r) < 0)
				return -1;
		} else {
			bench_net_build(link->frame, p->frame_bytes, peer, link->mac,
					BENCH_NET_DATA, phase, (uint32_t)done, 0, 0);
			if (link->send(link->context, link->frame, p->frame_bytes) < 0) {
				r->error_text = "send failed";
				return -1;
			}
		}
		done++;
	}
	return (int64_t)done;
}

/* Send kind (HELLO or END) until answered with want; 0 or -1. */
static inline int bench_net_ask(struct bench_net_link *link, const uint8_t dst[6],
				enum bench_net_kind kind, uint64_t arg0, enum bench_net_kind want,
				uint64_t timeout_ns, struct bench_net_result *r,
				struct bench_net_frame *answer, uint8_t answer_mac[6])
{
	uint64_t give_up = link->now_ns(link->context) + timeout_ns;
	while (link->now_ns(link->context) < give_up) {
		bench_net_build(link->frame, BENCH_NET_FRAME_MIN, dst, link->mac, kind, 0, 0, arg0,
				0);
		if (link->send(link->context, link->frame, BENCH_NET_FRAME_MIN) < 0) {
			r->error_text = "send failed";
			return -1;
		}
		uint64_t until = link->now_ns(link->context) + BENCH_NET_RETRY_NS / 4;
		int n = bench_net_wait(link, r, want, until, answer);
		if (n < 0) {
			r->error_text = "receive failed";
			return -1;
		}
		if (n > 0) {
			for (int i = 0; i < 6; i++)
				answer_mac[i] = link->received[6 + i];
			return 0;
		}
	}
	r->error_text = kind == BENCH_NET_HELLO ? "the server end never answered HELLO"
						: "the server end never answered END";
	return -1;
}

/* The measured end: HELLO, warm-up, mark start, measured phase, END,
 * REPORT, mark end.  Fills r (r->error nonzero on failure). */
static inline void bench_net_client(struct bench_net_link *link, const struct bench_net_params *p,
				    struct bench_net_result *r)
{
	struct bench_net_frame answer;
	uint8_t peer[6];
	if (bench_net_ask(link, bench_net_broadcast(), BENCH_NET_HELLO, p->stream, BENCH_NET_HELLO,
			  BENCH_NET_HELLO_TIMEOUT_NS, r, &answer, peer) < 0) {
		r->error = -1;
		return;
	}
	int64_t warm =
		bench_net_phase(link, peer, p, 0, p->warmup_ns, p->ops ? p->warmup_ops : 0, r);
	if (warm < 0) {
		r->error = -1;
		return;
	}
	r->warmup_ops = (uint64_t)warm;
	if (link->mark)
		link->mark(link->context, "start");
	uint64_t start = link->now_ns(link->context);
	int64_t done = bench_net_phase(link, peer, p, 1, p->runtime_ns, p->ops, r);
	if (done < 0) {
		r->error = -1;
		return;
	}
	r->sent = (uint64_t)done;
	uint8_t from[6];
	if (bench_net_ask(link, peer, BENCH_NET_END, r->sent, BENCH_NET_REPORT,
			  BENCH_NET_HELLO_TIMEOUT_NS, r, &answer, from) < 0) {
		r->error = -1;
		return;
	}
	r->elapsed_ns = link->now_ns(link->context) - start;
	if (link->mark)
		link->mark(link->context, "end");
	r->bad += answer.arg1;
	r->seq_gaps = answer.seq;
	r->ops = p->stream ? answer.arg0 : r->sent;
	r->lost = r->sent > answer.arg0 ? r->sent - answer.arg0 : 0;
	if (!p->stream)
		r->lost = 0; /* rr frames lost on the way were sent again (retries) */
	r->bytes = r->ops * p->frame_bytes * (p->stream ? 1u : 2u);
	if (r->bad) {
		r->error = -1;
		r->error_text = "frames failed the check";
	} else if (p->stream && answer.arg0 > r->sent) {
		r->error = -1;
		r->error_text = "the server counted more frames than were sent";
	}
}

/* The other end: answer HELLO, echo (rr) or count (stream) DATA, answer
 * END with REPORT, then linger a little for a repeated END.  Returns 0, or
 * -1 with r->error_text; r->ops = measured DATA frames received intact. */
static inline int bench_net_server(struct bench_net_link *link, struct bench_net_result *r)
{
	bool ended = false, stream = false;
	uint32_t next_seq[2] = { 0, 0 };
	for (;;) {
		uint64_t now = link->now_ns(link->context);
		uint64_t deadline =
			now + (ended ? BENCH_NET_SERVER_LINGER_NS : BENCH_NET_SERVER_IDLE_NS);
		int n = link->recv(link->context, link->received, BENCH_NET_FRAME_MAX, deadline);
		if (n < 0) {
			r->error_text = "receive failed";
			return -1;
		}
		if (n == 0) {
			if (ended)
				return 0;
			r->error_text = "no frame for 300 s";
			return -1;
		}
		struct bench_net_frame got;
		if (bench_net_take(link, r, n, &got) <= 0)
			continue;
		uint8_t *f = link->received;
		uint8_t src[6];
		for (int i = 0; i < 6; i++)
			src[i] = f[6 + i];
		switch (got.kind) {
		case BENCH_NET_HELLO:
			stream = got.arg0 != 0;
			bench_net_build(link->frame, BENCH_NET_FRAME_MIN, src, link->mac,
					BENCH_NET_HELLO, 0, 0, 0, 0);
			if (link->send(link->context, link->frame, BENCH_NET_FRAME_MIN) < 0)
				goto send_failed;
			break;
		case BENCH_NET_DATA: {
			uint32_t phase = got.phase ? 1 : 0;
			if (got.seq != next_seq[phase])
				r->seq_gaps++;
			next_seq[phase] = got.seq + 1;
			if (phase)
				r->ops++;
			if (stream)
				break;
			/* Echo: the same bytes, addresses swapped. */
			for (int i = 0; i < 6; i++) {
				f[6 + i] = link->mac[i];
				f[i] = src[i];
			}
			if (link->send(link->context, f, (uint32_t)n) < 0)
				goto send_failed;
			break;
		}
		case BENCH_NET_END:
			ended = true;
			bench_net_build(link->frame, BENCH_NET_FRAME_MIN, src, link->mac,
					BENCH_NET_REPORT, 0, (uint32_t)r->seq_gaps, r->ops, r->bad);
			if (link->send(link->context, link->frame, BENCH_NET_FRAME_MIN) < 0)
				goto send_failed;
			break;
		case BENCH_NET_REPORT:
			break;
		}
	}
send_failed:
	r->error_text = "send failed";
	return -1;
}

#endif /* KAPSEL_BENCH_NET_H */
