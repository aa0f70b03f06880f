/* Fuzz target: a hostile guest's ring memory, indices and block requests against the host ring consumer (ring_backend.c) and the PV block request checks (blk_pv_request.c). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devices/block/blk_pv_request.h"
#include "fuzz_common.h"
#include "kapsel/abi.h"
#include "kapsel/blk.h"
#include "core/log.h"
#include "devices/ring_backend.h"

/*
 * The input is a little program for the guest and the backend, acting on
 * a fake guest RAM of exactly RAM_BYTES (so AddressSanitizer sees any
 * access outside it):
 *   byte 0       flags: 1 fix the header's magic, revision and slot sizes,
 *                2 standard slot offsets, 4 read-only disk,
 *                8 map as a restored ring, 16 unaligned ring address
 *   byte 1       order used by the fix-ups
 *   u16          ring page
 *   u16          ring pages (0: exactly what the order needs)
 *   u32          start index
 *   u32          disk capacity in sectors
 *   u16          length of the script
 *   script       operations, see run_op
 *   rest         guest RAM from the ring's first byte on
 */

#define RAM_BYTES (512u * 1024u)
#define FLOOR_GPA 0x2000u
#define PAGE KAPSEL_RING_PAGE_BYTES
#define REQ_BYTES ((uint32_t)sizeof(struct kapsel_blk_request))
#define RSP_BYTES ((uint32_t)sizeof(struct kapsel_blk_response))

struct fuzz_state {
	uint8_t *ram;
	struct guest_memory mem;
	struct disk_image disk;
	struct ring_backend ring;
	bool mapped;
	uint64_t ring_gpa;
	uint32_t ring_pages;
	uint64_t next_id;
};

static uint8_t *ram;

static bool inside_ram(const struct fuzz_state *s, const void *p, uint64_t length)
{
	const uint8_t *b = p;
	return b >= s->ram && (uint64_t)(b - s->ram) <= RAM_BYTES &&
	       length <= RAM_BYTES - (uint64_t)(b - s->ram);
}

/* What the backend promised about a mapped ring and its indices. */
static void check_ring(const struct fuzz_state *s)
{
	if (!s->mapped)
		return;
	const struct ring_backend *r = &s->ring;
	FUZZ_CHECK(r->size >= 2 && r->size <= (1u << KAPSEL_RING_MAX_ORDER) &&
		   !(r->size & (r->size - 1)));
	FUZZ_CHECK(inside_ram(s, r->header, sizeof(*r->header)));
	FUZZ_CHECK(inside_ram(s, r->requests, (uint64_t)r->size * r->request_bytes));
	FUZZ_CHECK(inside_ram(s, r->responses, (uint64_t)r->size * r->response_bytes));
	FUZZ_CHECK((uint8_t *)r->header - s->ram >= FLOOR_GPA);
	/* rsp_published <= rsp_prod_pvt <= req_cons, at most size apart. */
	FUZZ_CHECK((uint32_t)(r->req_cons - r->rsp_published) <= r->size);
	FUZZ_CHECK((uint32_t)(r->rsp_prod_pvt - r->rsp_published) <=
		   (uint32_t)(r->req_cons - r->rsp_published));
}

static volatile uint8_t read_sink;

/* Read every byte (what a write to the disk would send). */
static uint8_t checksum(const uint8_t *p, size_t length)
{
	uint8_t sum = 0;
	for (size_t i = 0; i < length; i++)
		sum ^= p[i];
	return sum;
}

/* Do what the backend would with a checked request, touching every byte
 * it would touch, and check the promises of blk_pv_request_check. */
static void perform(struct fuzz_state *s, const struct kapsel_blk_request *req,
		    const struct blk_pv_transfer *t)
{
	FUZZ_CHECK(t->iov_count <= KAPSEL_BLK_MAX_SEGMENTS);
	uint64_t total = 0;
	for (unsigned i = 0; i < t->iov_count; i++) {
		FUZZ_CHECK(inside_ram(s, t->iov[i].iov_base, t->iov[i].iov_len));
		FUZZ_CHECK((uint8_t *)t->iov[i].iov_base - s->ram >= FLOOR_GPA);
		total += t->iov[i].iov_len;
		if (req->op == KAPSEL_BLK_OP_READ)
			memset(t->iov[i].iov_base, 0xa5, t->iov[i].iov_len);
		else if (req->op == KAPSEL_BLK_OP_WRITE)
			read_sink ^= checksum(t->iov[i].iov_base, t->iov[i].iov_len);
	}
	uint64_t disk_bytes = s->disk.capacity_sectors * KAPSEL_BLK_SECTOR_BYTES;
	switch (req->op) {
	case KAPSEL_BLK_OP_READ:
	case KAPSEL_BLK_OP_WRITE:
		FUZZ_CHECK(t->iov_count > 0 && t->remaining_bytes == total);
		FUZZ_CHECK(!s->disk.readonly || req->op == KAPSEL_BLK_OP_READ);
		break;
	case KAPSEL_BLK_OP_GET_INFO:
		FUZZ_CHECK(t->iov_count == 1 &&
			   t->iov[0].iov_len >= sizeof(struct kapsel_blk_info));
		memset(t->iov[0].iov_base, 0x5a, sizeof(struct kapsel_blk_info));
		FUZZ_CHECK(t->length_bytes == 0);
		break;
	case KAPSEL_BLK_OP_DISCARD:
	case KAPSEL_BLK_OP_WRITE_ZEROES:
		FUZZ_CHECK(!s->disk.readonly && t->iov_count == 0);
		FUZZ_CHECK(t->remaining_bytes == req->sector_count * KAPSEL_BLK_SECTOR_BYTES);
		break;
	case KAPSEL_BLK_OP_FLUSH:
		FUZZ_CHECK(t->iov_count == 0 && t->remaining_bytes == 0);
		break;
	default:
		FUZZ_CHECK(!"an unknown op passed the checks");
	}
	FUZZ_CHECK(t->offset_bytes <= disk_bytes &&
		   t->remaining_bytes <= disk_bytes - t->offset_bytes);
}

/* One serving pass, as blk_pv_serve.c and the skeleton (pv_device.c) do it (publishing
 * only at the end); answer_now picks which requests are answered at once
 * and which stay in flight. */
static void serve(struct fuzz_state *s, uint8_t answer_now, bool refill)
{
	unsigned taken = 0;
	for (;;) {
		int pending = ring_backend_pending(&s->ring);
		if (pending <= 0)
			break;
		FUZZ_CHECK((uint32_t)pending <= s->ring.size);
		for (int i = 0; i < pending; i++) {
			struct kapsel_blk_request req;
			ring_backend_take_request(&s->ring, &req);
			taken++;
			struct blk_pv_transfer t;
			bool counted;
			int status = blk_pv_request_check(&req, &s->mem, &s->disk, &t, &counted);
			if (status == 0) {
				FUZZ_CHECK(!counted);
				perform(s, &req, &t);
			} else {
				FUZZ_CHECK(status < 0 && counted);
			}
			/* Answer in order: only when nothing older is in flight. */
			if (((answer_now >> (taken % 8)) & 1) &&
			    ring_backend_in_flight(&s->ring) == 1) {
				struct kapsel_blk_response rsp = { .id = req.id, .status = status };
				ring_backend_put_response(&s->ring, &rsp);
			}
		}
		check_ring(s);
		/* A hostile guest refills at once: one pass still takes at
		 * most a ring's worth. */
		if (refill)
			s->ring.header->req_prod = s->ring.req_cons + s->ring.size;
		FUZZ_CHECK(taken <= s->ring.size);
	}
}

/* A plausible request in the slot the guest fills next, from a few bytes. */
static void plausible_request(struct fuzz_state *s, struct fuzz_input *in)
{
	uint32_t index = s->ring.header->req_prod;
	struct kapsel_blk_request *slot =
		(struct kapsel_blk_request *)(s->ring.requests +
					      (uint64_t)(index & (s->ring.size - 1)) * REQ_BYTES);
	struct kapsel_blk_request r = { .id = s->next_id++, .op = fuzz_u8(in) % 7 };
	r.segment_count = fuzz_u8(in) % 18;
	r.sector = fuzz_u8(in) & 0x80 ? fuzz_u64(in) : fuzz_u16(in);
	r.sector_count = fuzz_u16(in);
	unsigned n = r.segment_count < KAPSEL_BLK_MAX_SEGMENTS ? r.segment_count
							       : KAPSEL_BLK_MAX_SEGMENTS;
	for (unsigned i = 0; i < n; i++) {
		uint8_t shape = fuzz_u8(in);
		r.segments[i].gpa = (uint64_t)fuzz_u16(in) * 512u;
		r.segments[i].length_bytes = (uint32_t)(1 + (shape & 15)) * 512u;
		if (shape & 0x80)
			r.segments[i].gpa = fuzz_u64(in);
		if (shape & 0x40)
			r.segments[i].length_bytes = fuzz_u32(in);
	}
	memcpy(slot, &r, sizeof(r));
	__atomic_store_n(&s->ring.header->req_prod, index + 1, __ATOMIC_RELEASE);
}

static void map_ring(struct fuzz_state *s, bool restored, uint32_t index)
{
	struct ring_backend fresh;
	int err = restored ? ring_backend_map_restored(&fresh, &s->mem, s->ring_gpa, s->ring_pages,
						       REQ_BYTES, RSP_BYTES, index)
			   : ring_backend_map(&fresh, &s->mem, s->ring_gpa, s->ring_pages,
					      REQ_BYTES, RSP_BYTES);
	FUZZ_CHECK(err == 0 || err == -KAPSEL_EINVAL || err == -KAPSEL_EFAULT);
	if (err == 0) {
		s->ring = fresh;
		s->mapped = true;
		check_ring(s);
	}
}

static void run_op(struct fuzz_state *s, struct fuzz_input *in)
{
	uint8_t op = fuzz_u8(in);
	if (!s->mapped) {
		if (op % 2 == 0)
			map_ring(s, false, 0);
		return;
	}
	struct kapsel_ring_header *h = s->ring.header;
	switch (op % 10) {
	case 0: /* publish a little ahead of (or behind) what was taken */
		__atomic_store_n(&h->req_prod, s->ring.req_cons + fuzz_u8(in) - 16u,
				 __ATOMIC_RELEASE);
		break;
	case 1: /* publish anything */
		__atomic_store_n(&h->req_prod, fuzz_u32(in), __ATOMIC_RELEASE);
		break;
	case 2: {
		uint8_t answer_now = fuzz_u8(in);
		serve(s, answer_now, fuzz_u8(in) & 1);
		break;
	}
	case 3: /* answer the oldest request in flight */
		if (ring_backend_in_flight(&s->ring)) {
			struct kapsel_blk_response rsp = { .status = -KAPSEL_EIO };
			ring_backend_put_response(&s->ring, &rsp);
		}
		break;
	case 4:
		ring_backend_publish(&s->ring);
		/* (The guest may scribble over rsp_prod itself.) */
		FUZZ_CHECK(s->ring.broken || s->ring.rsp_published == s->ring.rsp_prod_pvt);
		break;
	case 5:
		ring_backend_prepare_sleep(&s->ring);
		(void)ring_backend_has_new(&s->ring);
		break;
	case 6: { /* the guest scribbles over its ring (header included) */
		uint32_t at = fuzz_u16(in) % (s->ring_pages ? s->ring_pages * PAGE : PAGE);
		uint8_t value = fuzz_u8(in);
		if (s->ring_gpa + at < RAM_BYTES)
			s->ram[s->ring_gpa + at] = value;
		break;
	}
	case 7:
		plausible_request(s, in);
		break;
	case 8: /* a new DEVICE_SETUP of the same ring */
		map_ring(s, false, 0);
		break;
	case 9: /* as if restored from a snapshot at the guest's rsp_prod */
		map_ring(s, true, fuzz_u8(in) & 1 ? h->rsp_prod : fuzz_u32(in));
		break;
	}
	check_ring(s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	kapsel_log_set_quiet(true);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { data, size, 0 };
	if (!ram)
		ram = malloc(RAM_BYTES);
	struct fuzz_state *s = calloc(1, sizeof(*s));
	s->ram = ram;
	memset(ram, 0, RAM_BYTES);
	s->mem = (struct guest_memory){
		.memfd = -1, .host_base = ram, .size_bytes = RAM_BYTES, .guest_floor_gpa = FLOOR_GPA
	};

	uint8_t flags = fuzz_u8(&in);
	uint32_t order = 1 + fuzz_u8(&in) % KAPSEL_RING_MAX_ORDER;
	uint32_t ring_page = fuzz_u16(&in) % (RAM_BYTES / PAGE);
	uint32_t pages = fuzz_u16(&in);
	uint32_t start = fuzz_u32(&in);
	uint32_t capacity = fuzz_u32(&in);
	uint16_t script_bytes = fuzz_u16(&in);
	struct fuzz_input script = { in.data + in.pos,
				     script_bytes < fuzz_left(&in) ? script_bytes : fuzz_left(&in),
				     0 };
	in.pos += script.size;

	s->disk.fd = -1;
	s->disk.readonly = flags & 4;
	s->disk.capacity_sectors = capacity;
	pthread_mutex_init(&s->disk.lock, NULL);
	s->ring_gpa = (uint64_t)ring_page * PAGE + (flags & 16 ? 512 : 0);
	uint64_t needed = kapsel_ring_bytes(order, REQ_BYTES, RSP_BYTES) / PAGE;
	s->ring_pages = pages ? pages : (uint32_t)needed;

	/* Guest RAM from the ring on, then the fix-ups that make a ring. */
	size_t fill = fuzz_left(&in) < RAM_BYTES - (ring_page * PAGE)
			      ? fuzz_left(&in)
			      : RAM_BYTES - ring_page * PAGE;
	memcpy(ram + ring_page * PAGE, in.data + in.pos, fill);
	struct kapsel_ring_header *h = (struct kapsel_ring_header *)(ram + ring_page * PAGE);
	if (flags & 1) {
		h->magic = KAPSEL_RING_MAGIC;
		h->revision = KAPSEL_RING_REVISION;
		h->order = order;
		h->request_bytes = (uint16_t)REQ_BYTES;
		h->response_bytes = (uint16_t)RSP_BYTES;
		h->req_prod = h->rsp_prod = start;
	}
	if (flags & 2) {
		h->requests_offset = PAGE;
		h->responses_offset =
			(uint32_t)(PAGE +
				   ((((uint64_t)REQ_BYTES << order) + PAGE - 1) / PAGE * PAGE));
	}
	map_ring(s, flags & 8, start);
	while (script.pos < script.size)
		run_op(s, &script);

	pthread_mutex_destroy(&s->disk.lock);
	free(s);
	return 0;
}
