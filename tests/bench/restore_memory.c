/* The memory part of a restore, timed on the host without KVM: copying memory.img in (before) vs mapping it (lazy), the background check, first touches. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "state/vm_state.h"

/*
 * Usage: bench_restore_memory DIR MEMORY_MIB DATA_MIB
 * Writes DIR/memory.img as a save would (DATA_MIB of non-zero pages at
 * the start, holes after), then times, each twice (the second run is
 * printed, the page cache warm as after a save):
 *   copy_ms   what `restore --copy-memory` (and every restore before lazy
 *             restores) does before the vCPU runs: a fresh memfd as
 *             guest RAM, memory.img read into it and its CRC32C checked;
 *   map_ms    what a lazy restore does instead: map memory.img privately;
 *   check_ms  the lazy restore's background check (guest already running);
 *   touch_ms  reading every page once through the private mapping: what
 *             the guest pays lazily, spread over its run, if it reads all.
 * Prints figures; asserts nothing.
 */

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_restore_memory: %s: %s\n", what, strerror(err));
	exit(1);
}

static double copy_in(int dirfd, uint64_t size, uint32_t crc)
{
	double start = now_ms();
	int memfd = memfd_create("bench-ram", MFD_CLOEXEC);
	if (memfd < 0 || ftruncate(memfd, (off_t)size) < 0)
		die("memfd", errno);
	uint8_t *ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (ram == MAP_FAILED)
		die("mmap", errno);
	char error[512];
	int err = vm_state_load_flat_file(dirfd, VM_STATE_FILE_MEMORY, ram, size, crc, false, error,
					  sizeof(error));
	if (err) {
		fprintf(stderr, "%s\n", error);
		exit(1);
	}
	double ms = now_ms() - start;
	munmap(ram, size);
	close(memfd);
	return ms;
}

static double map_private(int dirfd, uint64_t size, uint8_t **ram)
{
	double start = now_ms();
	int fd = openat(dirfd, VM_STATE_FILE_MEMORY, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open memory.img", errno);
	*ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
	if (*ram == MAP_FAILED)
		die("mmap memory.img", errno);
	close(fd);
	return now_ms() - start;
}

static double check(int dirfd, uint64_t size, uint32_t crc)
{
	int fd = openat(dirfd, VM_STATE_FILE_MEMORY, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open memory.img", errno);
	char error[512];
	double start = now_ms();
	if (vm_state_check_flat_fd(fd, VM_STATE_FILE_MEMORY, size, crc, NULL, error,
				   sizeof(error))) {
		fprintf(stderr, "%s\n", error);
		exit(1);
	}
	double ms = now_ms() - start;
	close(fd);
	return ms;
}

static double touch(const uint8_t *ram, uint64_t size)
{
	double start = now_ms();
	volatile uint8_t sink = 0;
	for (uint64_t off = 0; off < size; off += 4096)
		sink ^= ram[off];
	(void)sink;
	return now_ms() - start;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: bench_restore_memory DIR MEMORY_MIB DATA_MIB\n");
		return 2;
	}
	uint64_t size = strtoull(argv[2], NULL, 10) << 20, data = strtoull(argv[3], NULL, 10) << 20;
	if (!size || data > size)
		return 2;
	int dirfd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		die(argv[1], errno);
	uint8_t *source =
		mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (source == MAP_FAILED)
		die("mmap", errno);
	for (uint64_t i = 0; i < data / 8; i++)
		((uint64_t *)source)[i] = (i * 0x9e3779b97f4a7c15ull) | 1;
	struct vm_state_manifest_file entry;
	int err = vm_state_write_memory_file(dirfd, VM_STATE_FILE_MEMORY, source, size, -1, &entry);
	if (err)
		die("write memory.img", -err);
	munmap(source, size);

	double copy_ms = 0, map_ms = 0, check_ms = 0, touch_ms = 0;
	for (int round = 0; round < 2; round++) {
		copy_ms = copy_in(dirfd, size, entry.crc32c);
		uint8_t *ram;
		map_ms = map_private(dirfd, size, &ram);
		check_ms = check(dirfd, size, entry.crc32c);
		touch_ms = touch(ram, size);
		munmap(ram, size);
	}
	printf("%-8s %9llu %10.1f %9.3f %10.1f %10.1f\n", argv[2], (unsigned long long)(data >> 20),
	       copy_ms, map_ms, check_ms, touch_ms);
	unlinkat(dirfd, VM_STATE_FILE_MEMORY, 0);
	close(dirfd);
	return 0;
}
