/* Example guest for the PV entropy device: checks the bytes look random, the rate limit holds, hostile requests are refused, and reading survives a save. */
#include "kapsel/rng.h"
#include "kapsel_guest/arch.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/ring.h"
#include "kapsel_guest/ring_setup.h"
#include "kapsel_guest/rng.h"
#include "kapsel_guest/runtime.h"

#include "args.h"

/*
 * Usage (guest command line):
 *   check [bytes=65536]      read bytes, check they are plausibly random:
 *                            bit balance within 7 standard deviations, byte
 *                            histogram chi-square below 400 (255 degrees of
 *                            freedom: mean 255, sd 22.6), no repeated 16-byte
 *                            block.  Prints "rng check ok" and exits 0.
 *   rate bytes=N bps=B burst=U  read N bytes under a host limit of B bytes/s
 *                            with a bucket of U bytes; the guest TSC must show
 *                            at least (N - U) / B seconds passed (a lower bound
 *                            only: a slow host cannot fail it).
 *   hostile                  without kg_rng_open: its own ring through the
 *                            public kg_ring_setup; requests with buffers
 *                            outside RAM, in the hypervisor's low memory, of
 *                            length 0 or huge, and bad flags get errors; a
 *                            broken ring goes silent; a fresh ring works.
 *   loop count=N             read 4 KiB N times, printing "rng loop I" every 8
 *                            (a save/restore happens meanwhile).
 */

#define PAGE_BYTES 4096u
#define CHECK_MAX_BYTES 262144u

static uint8_t data[CHECK_MAX_BYTES];

static struct kg_rng_device *open_rng(void)
{
	struct kg_rng_device *dev = NULL;
	int err = kg_rng_open(&dev);
	if (err)
		kg_panic("no PV entropy device (%d): start the VM with --rng", err);
	return dev;
}

static void read_all(struct kg_rng_device *dev, void *buffer, uint64_t length)
{
	int64_t got = kg_rng_read(dev, buffer, length);
	if (got != (int64_t)length)
		kg_panic("kg_rng_read of %llu bytes returned %lld", (unsigned long long)length,
			 (long long)got);
}

static int compare_blocks(const uint8_t *a, const uint8_t *b)
{
	for (unsigned i = 0; i < 16; i++)
		if (a[i] != b[i])
			return 1;
	return 0;
}

static int mode_check(void)
{
	uint64_t bytes = args_number("bytes", 65536);
	if (bytes < 4096 || bytes > CHECK_MAX_BYTES || bytes % 16)
		kg_panic("bytes=%llu must be a multiple of 16 in 4096..%u",
			 (unsigned long long)bytes, CHECK_MAX_BYTES);
	struct kg_rng_device *dev = open_rng();
	read_all(dev, data, bytes);

	uint64_t ones = 0, histogram[256] = { 0 };
	for (uint64_t i = 0; i < bytes; i++) {
		ones += (uint64_t)__builtin_popcount(data[i]);
		histogram[data[i]]++;
	}
	uint64_t bits = bytes * 8;
	/* sd of the count of ones = sqrt(bits) / 2; 7 sd = 3.5 * sqrt(bits). */
	uint64_t root = 1;
	while ((root + 1) * (root + 1) <= bits)
		root++;
	uint64_t allowed = root * 7 / 2;
	uint64_t off = ones > bits / 2 ? ones - bits / 2 : bits / 2 - ones;
	kg_printf("rng check: %llu bytes, %llu ones of %llu bits (allowed off by %llu)\n",
		  (unsigned long long)bytes, (unsigned long long)ones, (unsigned long long)bits,
		  (unsigned long long)allowed);
	kg_assert(off <= allowed);

	/* chi-square * expected, in integers: sum (c - e)^2 over e. */
	uint64_t expected = bytes / 256, sum = 0;
	for (unsigned v = 0; v < 256; v++) {
		int64_t d = (int64_t)histogram[v] - (int64_t)expected;
		sum += (uint64_t)(d * d);
	}
	uint64_t chi2 = sum / expected;
	kg_printf("rng check: byte chi-square %llu (limit 400)\n", (unsigned long long)chi2);
	kg_assert(chi2 < 400);

	uint64_t blocks = bytes / 16;
	for (uint64_t i = 0; i < blocks; i++)
		for (uint64_t j = i + 1; j < blocks; j++)
			if (!compare_blocks(data + i * 16, data + j * 16))
				kg_panic("16-byte blocks %llu and %llu are equal",
					 (unsigned long long)i, (unsigned long long)j);
	struct kg_rng_stats s;
	kg_rng_get_stats(dev, &s);
	kg_printf("rng check ok: %llu bytes in %llu requests, %llu kicks\n",
		  (unsigned long long)s.bytes, (unsigned long long)s.requests,
		  (unsigned long long)s.kicks);
	return 0;
}

static int mode_rate(void)
{
	uint64_t bytes = args_number("bytes", 0), bps = args_number("bps", 0),
		 burst = args_number("burst", 0);
	if (!bytes || bytes > CHECK_MAX_BYTES || !bps || !burst || burst >= bytes)
		kg_panic("rate needs bytes=N (at most %u), bps=B and burst=U below N",
			 CHECK_MAX_BYTES);
	const struct kapsel_start_info *si = kg_platform_start_info();
	kg_assert(si && si->tsc_khz);
	struct kg_rng_device *dev = open_rng();
	uint64_t start = kg_rdtsc();
	read_all(dev, data, bytes);
	uint64_t cycles = kg_rdtsc() - start;
	uint64_t elapsed_ms = cycles / si->tsc_khz;
	/* The host can hand out at most burst + bps * t bytes in t seconds.
	 * 5% off for the TSC frequency's calibration. */
	uint64_t least_ms = (bytes - burst) * 1000 / bps * 95 / 100;
	struct kg_rng_stats s;
	kg_rng_get_stats(dev, &s);
	kg_printf("rng rate: %llu bytes in %llu ms (at least %llu ms), throttled %llu times\n",
		  (unsigned long long)bytes, (unsigned long long)elapsed_ms,
		  (unsigned long long)least_ms, (unsigned long long)s.throttled);
	kg_assert(elapsed_ms >= least_ms);
	kg_assert(s.throttled > 0);
	kg_printf("rng rate ok\n");
	return 0;
}

/* ---- hostile: a ring of our own, through the public ring-setup API ---- */

#define HOSTILE_ORDER 3u
static struct kg_ring ring;
static struct kapsel_device_setup setup_scratch[2];
static uint32_t channel;
static const struct kapsel_device_desc *desc;

/* One raw request, kicked; the host answers inside the kick. */
static int raw_request(uint64_t gpa, uint32_t length, uint32_t flags, uint64_t reserved)
{
	struct kapsel_rng_request *slot = kg_ring_next_request(&ring);
	kg_assert(slot);
	slot->id = 77;
	slot->gpa = gpa;
	slot->length_bytes = length;
	slot->flags = flags;
	slot->_reserved = reserved;
	kg_ring_push_request(&ring);
	kg_ring_publish(&ring);
	kg_outw(desc->doorbell_port, 1); /* always kick: the host must cope */
	const struct kapsel_rng_response *rsp = kg_ring_peek_response(&ring);
	if (!rsp)
		kg_panic("no answer to the request at 0x%llx (%u bytes) right after the kick",
			 (unsigned long long)gpa, length);
	int status = rsp->status;
	uint64_t id = rsp->id;
	kg_ring_consume_response(&ring);
	kg_assert(id == 77);
	return status;
}

static void expect_status(uint64_t gpa, uint32_t length, uint32_t flags, uint64_t reserved,
			  int want, const char *what)
{
	int got = raw_request(gpa, length, flags, reserved);
	kg_printf("rng hostile: %s -> %d\n", what, got);
	if (got != want)
		kg_panic("%s: the host answered %d, expected %d", what, got, want);
}

static int mode_hostile(void)
{
	const struct kapsel_start_info *si = kg_platform_start_info();
	desc = kg_platform_find_device(KAPSEL_DEV_RNG_PV, 0);
	if (!si || !desc)
		kg_panic("no PV entropy device: start the VM with --rng");
	static const struct kg_ring_shape shape = {
		.order = HOSTILE_ORDER,
		.request_bytes = sizeof(struct kapsel_rng_request),
		.response_bytes = sizeof(struct kapsel_rng_response),
	};
	uint32_t pages = kg_ring_pages(shape.order, shape.request_bytes, shape.response_bytes);
	uint8_t *memory = kg_os_alloc_pages(2 * pages + 1);
	uint8_t *buffer = memory + 2 * pages * PAGE_BYTES;
	kg_assert(memory);

	/* Bad setups first: wrong slot size, queue 1, a ring outside RAM. */
	struct kg_ring *const rings[] = { &ring };
	static const struct kg_ring_shape wrong = { .order = HOSTILE_ORDER,
						    .request_bytes = 64,
						    .response_bytes = 32 };
	kg_assert(kg_ring_setup(desc->index, &wrong, memory, rings, 1, &setup_scratch[0],
				&channel) == -KAPSEL_EIO);
	kg_assert(kg_ring_setup(desc->index, &shape, memory, rings, 1, &setup_scratch[0],
				&channel) == 0);
	setup_scratch[1] = setup_scratch[0];
	setup_scratch[1].queue = 1;
	kg_assert(kg_hc_device_setup(desc->index, &setup_scratch[1]) == -KAPSEL_EINVAL);
	setup_scratch[1].queue = 0;
	setup_scratch[1].ring_gpa = si->ram_bytes;
	kg_assert(kg_hc_device_setup(desc->index, &setup_scratch[1]) == -KAPSEL_EFAULT);

	uint64_t good = kg_os_virt_to_phys(buffer);
	expect_status(good, 16, 0, 0, 0, "a good request");
	expect_status(si->ram_bytes - 8, 16, 0, 0, -KAPSEL_EFAULT, "buffer across the end of RAM");
	expect_status(si->ram_bytes + PAGE_BYTES, 16, 0, 0, -KAPSEL_EFAULT, "buffer beyond RAM");
	expect_status(UINT64_MAX - 7, 16, 0, 0, -KAPSEL_EFAULT, "buffer wrapping around");
	expect_status(0x1000, 64, 0, 0, -KAPSEL_EFAULT, "buffer on the hypervisor's GDT");
	expect_status(KAPSEL_GPA_START_INFO, 64, 0, 0, -KAPSEL_EFAULT, "buffer on the start info");
	expect_status(good, 0, 0, 0, -KAPSEL_EINVAL, "length 0");
	expect_status(good, KAPSEL_RNG_REQUEST_MAX_BYTES + 1, 0, 0, -KAPSEL_EINVAL,
		      "length above the maximum");
	expect_status(good, UINT32_MAX, 0, 0, -KAPSEL_EINVAL, "length 4 GiB");
	expect_status(good, 16, 1, 0, -KAPSEL_EINVAL, "flags not 0");
	expect_status(good, 16, 0, 1, -KAPSEL_EINVAL, "_reserved not 0");
	expect_status(good, 16, 0, 0, 0, "a good request after the bad ones");

	/* An impossible producer index stops the ring: no answer comes. */
	uint32_t before = __atomic_load_n(&ring.header->rsp_prod, __ATOMIC_ACQUIRE);
	__atomic_store_n(&ring.header->req_prod, ring.req_published + 1000u, __ATOMIC_RELEASE);
	kg_outw(desc->doorbell_port, 1);
	kg_time_sleep_ns(10000000ull);
	kg_assert(__atomic_load_n(&ring.header->rsp_prod, __ATOMIC_ACQUIRE) == before);
	kg_printf("rng hostile: a broken ring went silent\n");

	/* A fresh ring (same channel) brings the device back. */
	uint8_t *fresh = memory + pages * PAGE_BYTES;
	kg_ring_init(&ring, fresh, shape.order, shape.request_bytes, shape.response_bytes, 0);
	setup_scratch[1] = setup_scratch[0];
	setup_scratch[1].ring_gpa = kg_os_virt_to_phys(fresh);
	kg_assert(kg_hc_device_setup(desc->index, &setup_scratch[1]) == 0);
	for (unsigned i = 0; i < 3 * (1u << HOSTILE_ORDER); i++) /* wraps the ring */
		expect_status(good, 4096, 0, 0, 0, "a good request on the fresh ring");
	kg_printf("rng hostile ok\n");
	return 0;
}

static int mode_loop(void)
{
	uint64_t count = args_number("count", 64);
	struct kg_rng_device *dev = open_rng();
	for (uint64_t i = 1; i <= count; i++) {
		read_all(dev, data, 4096);
		/* Two 4 KiB reads are never the same bytes. */
		kg_assert(compare_blocks(data, data + 2048) ||
			  compare_blocks(data + 16, data + 32));
		/* A restore or clone shows as a new generation (and recalibrates
		 * the clock); kg_platform_generation alone only reports the last
		 * one this check took. */
		kg_platform_check_generation();
		if (i % 8 == 0)
			kg_printf("rng loop %llu gen %llu\n", (unsigned long long)i,
				  (unsigned long long)kg_platform_generation());
		kg_time_sleep_ns(20000000ull);
	}
	kg_printf("rng loop ok %llu\n", (unsigned long long)count);
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = args_init(argc, argv, "check");
	if (strcmp(mode, "check") == 0)
		return mode_check();
	if (strcmp(mode, "rate") == 0)
		return mode_rate();
	if (strcmp(mode, "hostile") == 0)
		return mode_hostile();
	if (strcmp(mode, "loop") == 0)
		return mode_loop();
	kg_panic("unknown mode '%s'; use check, rate, hostile or loop", mode);
}
