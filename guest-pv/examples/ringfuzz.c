/* Hostile example guest: feeds the PV block backend malformed rings and requests and checks it answers with errors and stays up. */
#include "kapsel/blk.h"
#include "kapsel_guest/arch.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/ring.h"
#include "kapsel_guest/runtime.h"

/*
 * Usage: ringfuzz [seed=N] [rounds=N]
 * Needs a PV disk (disk 0).  Phases:
 *   1. bad DEVICE_SETUPs (bad magic, order, slot sizes, offsets, ring
 *      outside RAM) are refused;
 *   2. a good ring: malformed requests (unknown ops, absurd segment
 *      counts, segments beyond RAM / wrapping / unaligned / empty, huge
 *      sectors, nonzero flags) each get an error response, and random
 *      garbage requests each get some response;
 *   3. impossible req_prod values (jumps past the ring, backwards) stop
 *      the ring: no response comes, the VM keeps running;
 *   4. a fresh DEVICE_SETUP brings the disk back (GET_INFO works).
 * Prints "ringfuzz ok: ..." and exits 0.
 *
 * ringfuzz reboot: boot 0 sets a ring up, uses it and reboots; boot 1
 * writes a request (a WRITE of 0x5a bytes to sector 0) where the old ring
 * was, without a DEVICE_SETUP, and kicks: a backend that kept the old
 * boot's ring would take it.  No response may come (and the host checks
 * sector 0 stayed zero).  Prints "ringfuzz reboot ok".
 *
 * ringfuzz breakloop=N: N times set a fresh ring up and break it at once
 * (an impossible req_prod and a kick), as fast as it can: the host's log
 * must stay bounded.  Prints "ringfuzz breakloop done: N rings broken".
 */

#define ORDER 4u
#define SLOTS (1u << ORDER)
#define PAGE_BYTES 4096u
#define RESPONSE_WAIT_NS 5000000000ull /* a response must come within this */
#define SILENCE_WAIT_NS 100000000ull   /* a stopped ring stays silent this long */

static struct kg_ring ring;
static uint8_t *ring_memory;
static uint32_t ring_pages;
static const struct kapsel_device_desc *disk;
static struct kapsel_device_setup *setup;
static uint32_t port;
static uint64_t rng_state;
static uint8_t *data_page;

static uint64_t rng_next(void)
{
	uint64_t x = (rng_state += 0x9e3779b97f4a7c15ull);
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static int64_t do_setup(uint64_t ring_gpa, uint32_t pages)
{
	*setup = (struct kapsel_device_setup){
		.magic = KAPSEL_DEVICE_SETUP_MAGIC,
		.revision = 1,
		.ring_gpa = ring_gpa,
		.ring_pages = pages,
		.evtchn_port = port,
	};
	return kg_hc_device_setup(disk->index, setup);
}

static void fresh_ring(void)
{
	kg_ring_init(&ring, ring_memory, ORDER, sizeof(struct kapsel_blk_request),
		     sizeof(struct kapsel_blk_response), (uint32_t)rng_next());
	int64_t r = do_setup(kg_os_virt_to_phys(ring_memory), ring_pages);
	kg_assert(r == 0);
}

static void kick(void)
{
	kg_outw(disk->doorbell_port, 1);
}

/* Wait up to wait_ns for one response; false if none came. */
static bool wait_response(struct kapsel_blk_response *out, uint64_t wait_ns)
{
	uint64_t deadline = kg_time_now_ns() + wait_ns;
	for (;;) {
		kg_evtchn_test_and_clear(port);
		const struct kapsel_blk_response *rsp = kg_ring_peek_response(&ring);
		if (rsp) {
			*out = *rsp;
			kg_ring_consume_response(&ring);
			return true;
		}
		if (kg_ring_prepare_sleep(&ring))
			continue;
		if (kg_time_now_ns() >= deadline)
			return false;
		kg_hc_block(deadline);
	}
}

static struct kapsel_blk_request *next_slot(void)
{
	struct kapsel_blk_request *r = kg_ring_next_request(&ring);
	kg_assert(r != 0);
	__builtin_memset(r, 0, sizeof(*r));
	return r;
}

/* Send one request and return its status (asserting a response came). */
static int32_t send(struct kapsel_blk_request *r, uint64_t id)
{
	r->id = id;
	kg_ring_push_request(&ring);
	if (kg_ring_publish(&ring))
		kick();
	struct kapsel_blk_response rsp;
	if (!wait_response(&rsp, RESPONSE_WAIT_NS))
		kg_panic("no response to request %llu", (unsigned long long)id);
	kg_assert(rsp.id == id);
	return rsp.status;
}

static unsigned bad_setups, bad_requests, garbage_requests, broken_rings;

static void expect_setup_refused(const char *what, int64_t r)
{
	if (r == 0)
		kg_panic("bad setup accepted: %s", what);
	bad_setups++;
}

static void phase_bad_setups(uint64_t ram_bytes)
{
	uint64_t gpa = kg_os_virt_to_phys(ring_memory);
	struct kapsel_ring_header *h = (struct kapsel_ring_header *)ring_memory;
	kg_ring_init(&ring, ring_memory, ORDER, sizeof(struct kapsel_blk_request),
		     sizeof(struct kapsel_blk_response), 0);

	expect_setup_refused("ring beyond RAM", do_setup(ram_bytes, ring_pages));
	expect_setup_refused("ring wrapping", do_setup(0xfffffffffffff000ull, 4));
	expect_setup_refused("ring unaligned", do_setup(gpa + 512, ring_pages));
	expect_setup_refused("zero pages", do_setup(gpa, 0));
	expect_setup_refused("too few pages", do_setup(gpa, ring_pages - 1));
	expect_setup_refused("absurd pages", do_setup(gpa, 0xffffffffu));

	h->magic ^= 1;
	expect_setup_refused("bad magic", do_setup(gpa, ring_pages));
	h->magic ^= 1;
	h->order = KAPSEL_RING_MAX_ORDER + 1;
	expect_setup_refused("order too big", do_setup(gpa, ring_pages));
	h->order = 0;
	expect_setup_refused("order 0", do_setup(gpa, ring_pages));
	h->order = ORDER;
	h->request_bytes = 64;
	expect_setup_refused("wrong request size", do_setup(gpa, ring_pages));
	h->request_bytes = sizeof(struct kapsel_blk_request);
	h->responses_offset = h->requests_offset;
	expect_setup_refused("overlapping slot arrays", do_setup(gpa, ring_pages));
	h->responses_offset = 100;
	expect_setup_refused("unaligned offset", do_setup(gpa, ring_pages));
	h->responses_offset = 0;
	expect_setup_refused("slots over the header", do_setup(gpa, ring_pages));
	h->responses_offset = 0x7ffff000u;
	expect_setup_refused("slots past the ring", do_setup(gpa, ring_pages));
	expect_setup_refused("setup struct across the end of RAM",
			     kg_hypercall(KAPSEL_HC_DEVICE_SETUP, disk->index, ram_bytes - 8, 0, 0,
					  0));
}

static void expect_error(struct kapsel_blk_request *r, uint64_t id, int32_t expected,
			 const char *what)
{
	int32_t status = send(r, id);
	if (status != expected)
		kg_panic("%s: status %d, expected %d", what, status, expected);
	bad_requests++;
}

static void phase_bad_requests(uint64_t ram_bytes)
{
	uint64_t data = kg_os_virt_to_phys(data_page);
	struct kapsel_blk_request *r;
	uint64_t id = 1000;

	r = next_slot();
	r->op = 77;
	expect_error(r, id++, -KAPSEL_EINVAL, "unknown op");
	r = next_slot();
	r->op = KAPSEL_BLK_OP_COUNT;
	expect_error(r, id++, -KAPSEL_EINVAL, "op just past the last");
	r = next_slot();
	r->op = KAPSEL_BLK_OP_READ;
	r->segment_count = 200;
	expect_error(r, id++, -KAPSEL_EINVAL, "segment count 200");
	r = next_slot();
	r->op = KAPSEL_BLK_OP_READ;
	r->segment_count = 0;
	expect_error(r, id++, -KAPSEL_EINVAL, "read without segments");
	r = next_slot();
	r->op = KAPSEL_BLK_OP_FLUSH;
	r->segment_count = 1;
	r->segments[0] = (struct kapsel_blk_segment){ data, 512, 0 };
	expect_error(r, id++, -KAPSEL_EINVAL, "flush with a segment");
	r = next_slot();
	r->op = KAPSEL_BLK_OP_READ;
	r->segment_count = 1;
	r->segments[0] = (struct kapsel_blk_segment){ ram_bytes, 512, 0 };
	expect_error(r, id++, -KAPSEL_EFAULT, "segment beyond RAM");
	r = next_slot();
	r->op = KAPSEL_BLK_OP_READ;
	r->segment_count = 1;
	r->segments[0] = (struct kapsel_blk_segment){ ram_bytes - 512, 1024, 0 };
	expect_error(r, id++, -KAPSEL_EFAULT, "segment across the end of RAM");
	r = next_slot();
	r->op = KAPSEL_BLK_OP_WRITE;
	r->segment_count = 1;
	r->segments[0] = (struct kapsel_blk_segment){ 0xfffffffffffffe00ull, 0x1000, 0 };
	expect_error(r, id++, -KAPSEL_EFAULT, "segment wrapping around");
	r = next_slot();
	r->op = KAPSEL_BLK_OP_READ;
	r->segment_count = 1;
	r->segments[0] = (struct kapsel_blk_segment){ data + 8, 512, 0 };
	expect_error(r, id++, -KAPSEL_EINVAL, "unaligned segment");
	r = next_slot();
	r->op = KAPSEL_BLK_OP_READ;
	r->segment_count = 1;
	r->segments[0] = (struct kapsel_blk_segment){ data, 100, 0 };
	expect_error(r, id++, -KAPSEL_EINVAL, "segment not a sector multiple");
	r = next_slot();
	r->op = KAPSEL_BLK_OP_READ;
	r->segment_count = 2;
	r->segments[0] = (struct kapsel_blk_segment){ data, 512, 0 };
	r->segments[1] = (struct kapsel_blk_segment){ data, 0, 0 };
	expect_error(r, id++, -KAPSEL_EINVAL, "empty segment");
	r = next_slot();
	r->op = KAPSEL_BLK_OP_READ;
	r->sector = 0xffffffffffffff00ull;
	r->segment_count = 1;
	r->segments[0] = (struct kapsel_blk_segment){ data, 512, 0 };
	expect_error(r, id++, -KAPSEL_ERANGE, "huge sector");
	r = next_slot();
	r->op = KAPSEL_BLK_OP_WRITE_ZEROES;
	r->sector = 8;
	r->sector_count = UINT64_MAX - 4;
	expect_error(r, id++, -KAPSEL_ERANGE, "sector + count overflows");
	r = next_slot();
	r->op = KAPSEL_BLK_OP_DISCARD;
	r->sector = disk->capacity_sectors;
	r->sector_count = 1;
	expect_error(r, id++, -KAPSEL_ERANGE, "discard past the end");
	r = next_slot();
	r->op = KAPSEL_BLK_OP_READ;
	r->flags = 0x8000;
	r->segment_count = 1;
	r->segments[0] = (struct kapsel_blk_segment){ data, 512, 0 };
	expect_error(r, id++, -KAPSEL_EINVAL, "unknown flags");
	r = next_slot();
	r->op = KAPSEL_BLK_OP_GET_INFO;
	r->segment_count = 2;
	r->segments[0] = (struct kapsel_blk_segment){ data, 512, 0 };
	r->segments[1] = (struct kapsel_blk_segment){ data, 512, 0 };
	expect_error(r, id++, -KAPSEL_EINVAL, "get_info with two segments");

	/* A valid read right after all that still works. */
	r = next_slot();
	r->op = KAPSEL_BLK_OP_READ;
	r->segment_count = 1;
	r->segments[0] = (struct kapsel_blk_segment){ data, 512, 0 };
	kg_assert(send(r, id++) == 0);

	/* Random garbage: some response (any status) for each. */
	for (unsigned i = 0; i < 200; i++) {
		r = next_slot();
		uint64_t *words = (uint64_t *)r;
		for (unsigned w = 0; w < sizeof(*r) / 8; w++)
			words[w] = rng_next();
		/* Keep writes off the disk image's first sectors' meaning: any
		 * status is fine, but do not aim random writes at guest code. */
		if (r->op == KAPSEL_BLK_OP_READ || r->op == KAPSEL_BLK_OP_GET_INFO)
			r->op = KAPSEL_BLK_OP_WRITE;
		send(r, id++);
		garbage_requests++;
	}
}

static void phase_broken_ring(uint64_t jump)
{
	fresh_ring();
	struct kapsel_ring_header *h = ring.header;
	uint32_t prod = h->req_prod;
	/* Claim more requests than the ring holds. */
	__atomic_store_n(&h->req_prod, prod + (uint32_t)jump, __ATOMIC_RELEASE);
	kick();
	struct kapsel_blk_response rsp;
	kg_assert(!wait_response(&rsp, SILENCE_WAIT_NS));
	/* Further kicks are ignored; the VM keeps running. */
	kick();
	kick();
	kg_assert(!wait_response(&rsp, SILENCE_WAIT_NS));
	broken_rings++;
}

static void phase_backwards(void)
{
	fresh_ring();
	/* Publish two valid flushes, then move req_prod back by one. */
	for (int i = 0; i < 2; i++) {
		struct kapsel_blk_request *r = next_slot();
		r->op = KAPSEL_BLK_OP_FLUSH;
		r->id = 50 + (uint64_t)i;
		kg_ring_push_request(&ring);
	}
	kg_ring_publish(&ring);
	kick();
	struct kapsel_blk_response rsp;
	kg_assert(wait_response(&rsp, RESPONSE_WAIT_NS) && rsp.status == 0);
	kg_assert(wait_response(&rsp, RESPONSE_WAIT_NS) && rsp.status == 0);
	__atomic_store_n(&ring.header->req_prod, ring.req_prod_pvt - 1, __ATOMIC_RELEASE);
	kick();
	kg_assert(!wait_response(&rsp, SILENCE_WAIT_NS));
	broken_rings++;
}

static void phase_recovered(void)
{
	fresh_ring();
	struct kapsel_blk_request *r = next_slot();
	r->op = KAPSEL_BLK_OP_GET_INFO;
	r->segment_count = 1;
	r->segments[0] = (struct kapsel_blk_segment){ kg_os_virt_to_phys(data_page), 512, 0 };
	kg_assert(send(r, 7) == 0);
	const struct kapsel_blk_info *info = (const struct kapsel_blk_info *)data_page;
	kg_assert(info->magic == KAPSEL_BLK_INFO_MAGIC);
	kg_assert(info->capacity_sectors == disk->capacity_sectors);
}

/* Each broken ring makes the backend want to log a line. */
static int break_loop(uint64_t count)
{
	struct kapsel_blk_response rsp;
	for (uint64_t i = 0; i < count; i++) {
		fresh_ring();
		__atomic_store_n(&ring.header->req_prod, ring.header->req_prod + SLOTS + 5,
				 __ATOMIC_RELEASE);
		kick();
		/* A moment for the backend to see it before the next setup. */
		kg_assert(!wait_response(&rsp, 1000000ull));
	}
	kg_printf("ringfuzz breakloop done: %llu rings broken\n", (unsigned long long)count);
	return 0;
}

/* Boot 0 and boot 1 allocate the same pages and draw the same start
 * index (same seed), so boot 1 knows where the old ring was. */
static int reboot_check(void)
{
	uint64_t generation = kg_platform_start_info()->generation;
	uint32_t start = (uint32_t)rng_next();
	if (generation == 0) {
		kg_ring_init(&ring, ring_memory, ORDER, sizeof(struct kapsel_blk_request),
			     sizeof(struct kapsel_blk_response), start);
		kg_assert(do_setup(kg_os_virt_to_phys(ring_memory), ring_pages) == 0);
		struct kapsel_blk_request *r = next_slot();
		r->op = KAPSEL_BLK_OP_GET_INFO;
		r->segment_count = 1;
		r->segments[0] =
			(struct kapsel_blk_segment){ kg_os_virt_to_phys(data_page), 512, 0 };
		kg_assert(send(r, 1) == 0);
		kg_printf("ringfuzz reboot: ring used, rebooting\n");
		kg_hc_shutdown(KAPSEL_SHUTDOWN_REBOOT, 0);
	}
	/* The old ring took one request: the next one would be start + 1. */
	struct kapsel_ring_header *h = (struct kapsel_ring_header *)ring_memory;
	kg_assert(h->magic == 0); /* RAM was cleared */
	kg_ring_init(&ring, ring_memory, ORDER, sizeof(struct kapsel_blk_request),
		     sizeof(struct kapsel_blk_response), start + 1);
	struct kapsel_blk_request *slots =
		(struct kapsel_blk_request *)(ring_memory + h->requests_offset);
	__builtin_memset(data_page, 0x5a, PAGE_BYTES);
	struct kapsel_blk_request *r = &slots[(start + 1) & (SLOTS - 1)];
	__builtin_memset(r, 0, sizeof(*r));
	r->id = 99;
	r->op = KAPSEL_BLK_OP_WRITE;
	r->segment_count = 1;
	r->segments[0] = (struct kapsel_blk_segment){ kg_os_virt_to_phys(data_page), 512, 0 };
	__atomic_store_n(&h->req_prod, start + 2, __ATOMIC_RELEASE);
	kick();
	struct kapsel_blk_response rsp;
	if (wait_response(&rsp, SILENCE_WAIT_NS * 3))
		kg_panic("the old boot's ring answered request %llu with %d",
			 (unsigned long long)rsp.id, rsp.status);
	kg_printf("ringfuzz reboot ok: the old boot's ring is gone\n");
	return 0;
}

int main(int argc, char **argv)
{
	kg_assert(kg_platform_is_kapsel());
	uint64_t rounds = 2;
	bool reboot = false;
	uint64_t break_count = 0;
	rng_state = 1;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "reboot") == 0)
			reboot = true;
		else if (strncmp(argv[i], "seed=", 5) == 0)
			kg_assert(kg_parse_u64(argv[i] + 5, &rng_state) == 0);
		else if (strncmp(argv[i], "rounds=", 7) == 0)
			kg_assert(kg_parse_u64(argv[i] + 7, &rounds) == 0);
		else if (strncmp(argv[i], "breakloop=", 10) == 0)
			kg_assert(kg_parse_u64(argv[i] + 10, &break_count) == 0);
	}
	disk = kg_platform_find_device(KAPSEL_DEV_BLOCK_PV, 0);
	if (!disk) {
		kg_printf("ringfuzz: needs a PV disk (--disk IMAGE)\n");
		return 2;
	}
	uint64_t ram_bytes = kg_platform_start_info()->ram_bytes;

	ring_pages = kg_ring_pages(ORDER, sizeof(struct kapsel_blk_request),
				   sizeof(struct kapsel_blk_response));
	ring_memory = kg_os_alloc_pages(ring_pages);
	setup = kg_os_alloc_pages(1);
	data_page = kg_os_alloc_pages(1);
	kg_assert(ring_memory && setup && data_page);
	int64_t p = kg_hc_evtchn_alloc();
	kg_assert(p >= 0);
	port = (uint32_t)p;
	kg_assert(kg_hc_evtchn_bind_device(port, disk->index) == 0);
	if (reboot)
		return reboot_check();
	if (break_count)
		return break_loop(break_count);

	phase_bad_setups(ram_bytes);
	for (uint64_t round = 0; round < rounds; round++) {
		fresh_ring();
		phase_bad_requests(ram_bytes);
		phase_broken_ring(SLOTS + 1 + rng_next() % 100000);
		phase_broken_ring(0x80000000u);
		phase_backwards();
		phase_recovered();
	}
	kg_printf("ringfuzz ok: %u bad setups refused, %u bad requests answered with errors, "
		  "%u garbage requests answered, %u broken rings stopped, disk recovered each time\n",
		  bad_setups, bad_requests, garbage_requests, broken_rings);
	return 0;
}
