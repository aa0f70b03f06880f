/* Fuzz target: a hostile guest's entropy ring, requests, rate-limit timing and saved record against the PV entropy model (rng_pv_model.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "core/log.h"
#include "devices/rng/rng_pv_model.h"

/*
 * The input: guest RAM of exactly RAM_BYTES (so AddressSanitizer sees any
 * access outside it) is filled from the input's tail; the head is a script
 * of one-byte operations with their arguments:
 *   0 setup: u64 ring_gpa, u32 pages, u32 queue
 *   1 serve at the clock (the kick)
 *   2 advance the clock by u32 microseconds
 *   3 write a request into slot u8: u64 gpa, u32 length, u32 flags
 *   4 store req_prod = u32
 *   5 save the record, scribble u8 of its bytes with u8 values, load it
 *   6 reset (a reboot)
 * Properties: every buffer the model fills lies inside guest RAM above
 * the floor; a response is written only into a slot of the mapped ring.
 */

#define RAM_BYTES (256u * 1024u)
#define FLOOR_GPA 0x2000u
#define SCRIPT_MAX 64u

static uint8_t *ram;

static int checked_fill(void *opaque, void *buffer, uint32_t length_bytes)
{
	(void)opaque;
	const uint8_t *b = buffer;
	FUZZ_CHECK(b >= ram + FLOOR_GPA && b < ram + RAM_BYTES);
	FUZZ_CHECK(length_bytes >= 1 && length_bytes <= KAPSEL_RNG_REQUEST_MAX_BYTES);
	FUZZ_CHECK(length_bytes <= (uint64_t)(ram + RAM_BYTES - b));
	memset(buffer, 0x5a, length_bytes);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { data, size, 0 };
	if (!ram)
		ram = malloc(RAM_BYTES);
	kapsel_log_set_quiet(true);
	struct guest_memory mem = {
		.memfd = -1, .host_base = ram, .size_bytes = RAM_BYTES, .guest_floor_gpa = FLOOR_GPA
	};
	struct vm_rng_config config = { .enabled = true,
					.requests_limit = { 1000, 4 },
					.bytes_limit = { 100000, 20000 } };
	struct rng_pv_model m;
	uint64_t now_ns = 0;
	rng_pv_model_init(&m, &mem, &config, now_ns, checked_fill, NULL);

	uint8_t script[SCRIPT_MAX * 24];
	size_t script_bytes = fuzz_u8(&in) % SCRIPT_MAX * 24u;
	memset(script, 0, sizeof(script));
	for (size_t i = 0; i < script_bytes; i++)
		script[i] = fuzz_u8(&in);
	memset(ram, 0, RAM_BYTES);
	size_t rest = size - in.pos < RAM_BYTES ? size - in.pos : RAM_BYTES;
	memcpy(ram + FLOOR_GPA, data + in.pos,
	       rest > RAM_BYTES - FLOOR_GPA ? RAM_BYTES - FLOOR_GPA : rest);

	struct fuzz_input s = { script, script_bytes, 0 };
	while (s.pos < s.size) {
		switch (fuzz_u8(&s) % 7) {
		case 0: {
			struct kapsel_device_setup setup = { .magic = KAPSEL_DEVICE_SETUP_MAGIC,
							     .revision = 1 };
			setup.ring_gpa = fuzz_u64(&s) % (RAM_BYTES + 0x3000u);
			setup.ring_pages = fuzz_u32(&s) % 8;
			setup.queue = fuzz_u32(&s) % 2;
			if (setup.queue == 0) /* pv_device_setup refuses others */
				pv_queue_setup(&m.queue, &mem, &setup);
			break;
		}
		case 1:
			rng_pv_model_serve(&m, now_ns);
			break;
		case 2:
			now_ns += (uint64_t)fuzz_u32(&s) * 1000u;
			break;
		case 3: {
			uint8_t slot = fuzz_u8(&s);
			struct kapsel_rng_request req = { .id = slot };
			req.gpa = fuzz_u64(&s);
			req.length_bytes = fuzz_u32(&s);
			req.flags = fuzz_u32(&s) & 1;
			if (m.queue.active)
				memcpy(m.queue.ring.requests + (slot & (m.queue.ring.size - 1)) *
								       m.queue.ring.request_bytes,
				       &req, sizeof(req));
			break;
		}
		case 4: {
			uint32_t prod = fuzz_u32(&s);
			if (m.queue.active)
				m.queue.ring.header->req_prod = prod;
			break;
		}
		case 5: {
			struct vm_state_rng_pv rec;
			rng_pv_model_save(&m, &rec);
			uint8_t at = fuzz_u8(&s), value = fuzz_u8(&s);
			((uint8_t *)&rec)[at % sizeof(rec)] ^= value;
			char error[256];
			if (rng_pv_model_load(&m, &rec, error, sizeof(error)) != 0)
				FUZZ_CHECK(error[0] != '\0');
			break;
		}
		default:
			pv_queue_install(&m.queue, NULL, 0, 0);
			break;
		}
		if (m.queue.active) {
			const uint8_t *h = (const uint8_t *)m.queue.ring.header;
			FUZZ_CHECK(h >= ram + FLOOR_GPA && h < ram + RAM_BYTES);
			FUZZ_CHECK(m.queue.ring.responses + (uint64_t)m.queue.ring.size *
								    m.queue.ring.response_bytes <=
				   ram + RAM_BYTES);
		}
	}
	return 0;
}
