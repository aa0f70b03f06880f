/* Shared helpers of the fuzz targets: a checked assertion that survives NDEBUG, and a byte reader over the fuzz input. */
#ifndef KAPSEL_FUZZ_COMMON_H
#define KAPSEL_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A violated property is a crash: libFuzzer saves the input, replay fails. */
#define FUZZ_CHECK(cond)                                                                      \
	do {                                                                                  \
		if (!(cond)) {                                                                \
			fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, \
				#cond);                                                       \
			abort();                                                              \
		}                                                                             \
	} while (0)

/* Consume the fuzz input front to back; reads past its end give zeros. */
struct fuzz_input {
	const uint8_t *data;
	size_t size, pos;
};

static inline uint8_t fuzz_u8(struct fuzz_input *in)
{
	return in->pos < in->size ? in->data[in->pos++] : 0;
}

/* Little-endian; each byte read in its own statement (operand order is
 * unspecified in C). */
static inline uint16_t fuzz_u16(struct fuzz_input *in)
{
	uint16_t low = fuzz_u8(in);
	return (uint16_t)(low | fuzz_u8(in) << 8);
}

static inline uint32_t fuzz_u32(struct fuzz_input *in)
{
	uint32_t low = fuzz_u16(in);
	return low | (uint32_t)fuzz_u16(in) << 16;
}

static inline uint64_t fuzz_u64(struct fuzz_input *in)
{
	uint64_t low = fuzz_u32(in);
	return low | (uint64_t)fuzz_u32(in) << 32;
}

static inline size_t fuzz_left(const struct fuzz_input *in)
{
	return in->size - in->pos;
}

/* Copy up to length bytes of input into out (zero-filling the rest). */
static inline void fuzz_bytes(struct fuzz_input *in, void *out, size_t length)
{
	size_t n = length < fuzz_left(in) ? length : fuzz_left(in);
	memcpy(out, in->data + in->pos, n);
	memset((uint8_t *)out + n, 0, length - n);
	in->pos += n;
}

#endif
