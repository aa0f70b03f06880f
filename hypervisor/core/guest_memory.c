/* Guest RAM: one memfd mapped into the VMM, and the only GPA-to-host translator. */
#define _GNU_SOURCE
#include "core/guest_memory.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/byte_size.h"

#define TWO_MIB (2ull << 20)
#define PAGE_BYTES 4096ull

static size_t written_words(uint64_t size_bytes)
{
	return (size_t)((size_bytes / PAGE_BYTES + 63) / 64);
}

int guest_memory_create(struct guest_memory *mem, uint64_t size_bytes, const char *name)
{
	int err;

	memset(mem, 0, sizeof(*mem));
	mem->memfd = -1;
	if (size_bytes < GUEST_MEMORY_MIN_BYTES || size_bytes > GUEST_MEMORY_MAX_BYTES ||
	    size_bytes % TWO_MIB)
		return -ERANGE;

	mem->memfd = memfd_create(name ? name : "kapsel-guest-ram", MFD_CLOEXEC);
	if (mem->memfd < 0)
		return -errno;
	if (ftruncate(mem->memfd, (off_t)size_bytes) < 0) {
		err = -errno;
		goto fail_close;
	}
	mem->host_base = mmap(NULL, size_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
			      mem->memfd, 0);
	if (mem->host_base == MAP_FAILED) {
		err = -errno;
		goto fail_close;
	}
	/* Transparent huge pages make the 2 MiB guest mappings cheaper. */
	madvise(mem->host_base, size_bytes, MADV_HUGEPAGE);
	mem->written = calloc(written_words(size_bytes), sizeof(uint64_t));
	if (!mem->written) {
		err = -ENOMEM;
		munmap(mem->host_base, size_bytes);
		goto fail_close;
	}
	mem->size_bytes = size_bytes;
	return 0;

fail_close:
	close(mem->memfd);
	memset(mem, 0, sizeof(*mem));
	mem->memfd = -1;
	return err;
}

void guest_memory_destroy(struct guest_memory *mem)
{
	if (mem->host_base && mem->host_base != MAP_FAILED)
		munmap(mem->host_base, mem->size_bytes);
	if (mem->memfd >= 0)
		close(mem->memfd);
	free(mem->written);
	memset(mem, 0, sizeof(*mem));
	mem->memfd = -1;
}

void guest_memory_clear(struct guest_memory *mem)
{
	/* Counted first: a pre-copy that sees the count unchanged after its
	 * last pass knows no clear ran meanwhile. */
	__atomic_fetch_add(&mem->clears, 1, __ATOMIC_SEQ_CST);
	/* RAM mapped privately from a saved memory.img (a lazy restore, no
	 * memfd): fresh anonymous pages in the same place read zeros and end
	 * the dependence on the file; KVM's MMU notifiers drop the old pages. */
	if (mem->memfd < 0 &&
	    mmap(mem->host_base, mem->size_bytes, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) != MAP_FAILED)
		return;
	/* Punching a hole frees the pages; the shared mapping then reads
	 * zeros.  memset is the fallback where the file system refuses. */
	if (mem->memfd < 0 || fallocate(mem->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
					(off_t)mem->size_bytes) < 0)
		memset(mem->host_base, 0, mem->size_bytes);
}

void *guest_memory_translate(const struct guest_memory *mem, uint64_t gpa, uint64_t length_bytes)
{
	if (!mem->host_base)
		return NULL;
	/* Written so that no addition can overflow. */
	if (gpa > mem->size_bytes || length_bytes > mem->size_bytes - gpa)
		return NULL;
	return mem->host_base + gpa;
}

void *guest_memory_translate_guest(const struct guest_memory *mem, uint64_t gpa,
				   uint64_t length_bytes)
{
	if (gpa < mem->guest_floor_gpa)
		return NULL;
	return guest_memory_translate(mem, gpa, length_bytes);
}

void guest_memory_mark_written(const struct guest_memory *mem, uint64_t gpa, uint64_t length_bytes)
{
	if (!mem || !mem->written || !length_bytes || gpa >= mem->size_bytes ||
	    length_bytes > mem->size_bytes - gpa)
		return;
	uint64_t first = gpa / PAGE_BYTES, last = (gpa + length_bytes - 1) / PAGE_BYTES;
	for (uint64_t p = first; p <= last;) {
		uint64_t word = p / 64, bit = p % 64;
		uint64_t span = last - p + 1 < 64 - bit ? last - p + 1 : 64 - bit;
		uint64_t bits = (span == 64 ? ~0ull : ((1ull << span) - 1)) << bit;
		/* Release: the bytes written before are visible to whoever
		 * takes the mark (guest_memory_take_written's acquire). */
		__atomic_fetch_or(&mem->written[word], bits, __ATOMIC_RELEASE);
		p += span;
	}
}

void guest_memory_mark_written_host(const struct guest_memory *mem, const void *host,
				    uint64_t length_bytes)
{
	if (!mem || !mem->host_base)
		return;
	uintptr_t base = (uintptr_t)mem->host_base, at = (uintptr_t)host;
	if (at < base || at - base >= mem->size_bytes)
		return;
	guest_memory_mark_written(mem, at - base, length_bytes);
}

uint64_t guest_memory_take_written(const struct guest_memory *mem, uint64_t *bitmap)
{
	if (!mem->written)
		return 0;
	uint64_t taken = 0;
	for (size_t i = 0; i < written_words(mem->size_bytes); i++) {
		if (!__atomic_load_n(&mem->written[i], __ATOMIC_RELAXED))
			continue;
		uint64_t bits = __atomic_exchange_n(&mem->written[i], 0, __ATOMIC_ACQUIRE);
		bitmap[i] |= bits;
		taken += (uint64_t)__builtin_popcountll(bits);
	}
	return taken;
}

int guest_memory_parse_size(const char *text, uint64_t *size_bytes)
{
	uint64_t value;
	int err = byte_size_parse(text, &value);
	if (err)
		return err;
	if (value < GUEST_MEMORY_MIN_BYTES || value > GUEST_MEMORY_MAX_BYTES || value % TWO_MIB)
		return -ERANGE;
	*size_bytes = value;
	return 0;
}
