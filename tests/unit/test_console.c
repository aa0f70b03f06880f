/* Unit tests: guest console output never blocks on its sink, drops what does not fit (counted, in order) and caps its file. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "devices/console/console.h"
#include "cunit_main.h"

#define CHUNK_BYTES 1000u

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Byte i of chunk c: distinct enough that a reordering or a repeat shows. */
static uint8_t pattern_byte(unsigned chunk, unsigned i)
{
	return (uint8_t)(chunk * 131u + i * 7u + (chunk >> 8));
}

static void fill_chunk(uint8_t *chunk, unsigned c)
{
	for (unsigned i = 0; i < CHUNK_BYTES; i++)
		chunk[i] = pattern_byte(c, i);
}

static uint64_t dropped_total(struct console *console)
{
	struct console_output_stats s;
	console_output_stats(console, &s);
	return s.dropped_full_bytes + s.dropped_cap_bytes + s.dropped_closed_bytes;
}

struct pipe_reader {
	int fd;
	uint8_t *data;
	size_t length, capacity;
};

static void *read_all(void *opaque)
{
	struct pipe_reader *r = opaque;
	for (;;) {
		if (r->length == r->capacity) {
			r->capacity = r->capacity ? r->capacity * 2 : 65536;
			r->data = realloc(r->data, r->capacity);
		}
		ssize_t n = read(r->fd, r->data + r->length, r->capacity - r->length);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return NULL;
		r->length += (size_t)n;
	}
}

/*
 * Nobody reads the pipe while the guest writes 8 MiB: every write returns
 * at once, what does not fit is dropped and counted, and what was kept
 * comes out later exactly in order (each chunk's accepted prefix).
 */
static void test_full_sink_never_blocks(void)
{
	int fds[2];
	CU_ASSERT_EQUAL_FATAL(pipe2(fds, O_CLOEXEC), 0);
	struct console console;
	CU_ASSERT_EQUAL_FATAL(console_open_fd(&console, fds[1], 0, 0, -1), 0);

	const unsigned chunks = 8u << 10; /* 8 MiB */
	size_t *accepted = calloc(chunks, sizeof(*accepted));
	uint8_t chunk[CHUNK_BYTES];
	uint64_t start = now_ms();
	uint64_t dropped_before = 0;
	for (unsigned c = 0; c < chunks; c++) {
		fill_chunk(chunk, c);
		console_write(&console, chunk, sizeof(chunk));
		uint64_t dropped = dropped_total(&console);
		accepted[c] = CHUNK_BYTES - (size_t)(dropped - dropped_before);
		dropped_before = dropped;
	}
	uint64_t elapsed = now_ms() - start;
	CU_ASSERT(elapsed < 2000); /* the old blocking write never returned */

	struct console_output_stats s;
	console_output_stats(&console, &s);
	/* A pipe holds 64 KiB and the buffer 256 KiB: most of 8 MiB is dropped. */
	CU_ASSERT(s.dropped_full_bytes > (uint64_t)chunks * CHUNK_BYTES / 2);
	CU_ASSERT_EQUAL(s.dropped_cap_bytes, 0);
	CU_ASSERT_EQUAL(s.dropped_closed_bytes, 0);

	/* Now a reader comes: everything kept arrives, in order. */
	struct pipe_reader reader = { .fd = fds[0] };
	pthread_t thread;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&thread, NULL, read_all, &reader), 0);
	console_close(&console);
	close(fds[1]);
	pthread_join(thread, NULL);
	close(fds[0]);

	console_output_stats(&console, &s);
	CU_ASSERT_EQUAL(s.dropped_closed_bytes, 0);
	CU_ASSERT_EQUAL(s.written_bytes, reader.length);
	CU_ASSERT_EQUAL(s.written_bytes + s.dropped_full_bytes, (uint64_t)chunks * CHUNK_BYTES);
	size_t at = 0;
	bool same = true;
	for (unsigned c = 0; c < chunks && same; c++)
		for (unsigned i = 0; i < accepted[c] && same; i++)
			same = at < reader.length && reader.data[at++] == pattern_byte(c, i);
	CU_ASSERT_TRUE(same);
	CU_ASSERT_EQUAL(at, reader.length);
	free(reader.data);
	free(accepted);
}

/* A sink that never reads again does not hold up closing for long. */
static void test_close_gives_up_on_stuck_sink(void)
{
	int fds[2];
	CU_ASSERT_EQUAL_FATAL(pipe2(fds, O_CLOEXEC), 0);
	struct console console;
	CU_ASSERT_EQUAL_FATAL(console_open_fd(&console, fds[1], 0, 0, -1), 0);
	uint8_t chunk[CHUNK_BYTES];
	for (unsigned c = 0; c < 200; c++) {
		fill_chunk(chunk, c);
		console_write(&console, chunk, sizeof(chunk));
	}
	uint64_t start = now_ms();
	console_close(&console);
	uint64_t elapsed = now_ms() - start;
	CU_ASSERT(elapsed >= CONSOLE_DRAIN_MS - 50);
	CU_ASSERT(elapsed < CONSOLE_DRAIN_MS + 1500);
	struct console_output_stats s;
	console_output_stats(&console, &s);
	CU_ASSERT(s.dropped_closed_bytes > 0);
	CU_ASSERT_EQUAL(s.written_bytes + s.dropped_closed_bytes + s.dropped_full_bytes,
			200u * CHUNK_BYTES);
	close(fds[0]);
	close(fds[1]);
}

/* A reader that went away (EPIPE): output is dropped and counted, nothing breaks. */
static void test_sink_gone(void)
{
	int fds[2];
	CU_ASSERT_EQUAL_FATAL(pipe2(fds, O_CLOEXEC), 0);
	close(fds[0]);
	struct console console;
	CU_ASSERT_EQUAL_FATAL(console_open_fd(&console, fds[1], 0, 0, -1), 0);
	uint8_t chunk[CHUNK_BYTES];
	fill_chunk(chunk, 1);
	for (unsigned c = 0; c < 100; c++) {
		console_write(&console, chunk, sizeof(chunk));
		usleep(100);
	}
	console_close(&console);
	close(fds[1]);
	struct console_output_stats s;
	console_output_stats(&console, &s);
	CU_ASSERT_EQUAL(s.written_bytes, 0);
	CU_ASSERT_EQUAL(s.dropped_closed_bytes + s.dropped_full_bytes, 100u * CHUNK_BYTES);
}

static size_t count_occurrences(const char *text, size_t length, const char *needle)
{
	size_t count = 0, nlen = strlen(needle);
	for (size_t i = 0; i + nlen <= length; i++)
		count += memcmp(text + i, needle, nlen) == 0;
	return count;
}

static char *read_file(const char *path, size_t *length)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	rewind(f);
	char *data = malloc((size_t)size + 1);
	*length = fread(data, 1, (size_t)size, f);
	data[*length] = '\0';
	fclose(f);
	return data;
}

/* The output file stops at its cap (counting what was there), says so once. */
static void test_file_cap(void)
{
	char path[] = "/tmp/kapsel-console-test-XXXXXX";
	int fd = mkstemp(path);
	CU_ASSERT_FATAL(fd >= 0);
	char earlier[1000];
	memset(earlier, 'e', sizeof(earlier));
	CU_ASSERT_EQUAL(write(fd, earlier, sizeof(earlier)), (ssize_t)sizeof(earlier));
	close(fd);

	const uint64_t cap = 64u << 10;
	struct console console;
	CU_ASSERT_EQUAL_FATAL(console_open(&console, path, cap, -1), 0);
	char line[64];
	uint64_t total = 0;
	for (unsigned i = 0; i < 100000; i++) {
		int n = snprintf(line, sizeof(line), "guest line %u\n", i);
		console_write(&console, line, (size_t)n);
		total += (uint64_t)n;
	}
	console_close(&console);
	struct console_output_stats s;
	console_output_stats(&console, &s);

	struct stat st;
	CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
	CU_ASSERT((uint64_t)st.st_size <= cap);
	CU_ASSERT((uint64_t)st.st_size > cap - 200); /* filled up to the cap, less the note */
	CU_ASSERT_TRUE(s.capped);
	CU_ASSERT_EQUAL(s.max_bytes, cap);
	CU_ASSERT_EQUAL(s.dropped_full_bytes, 0);
	CU_ASSERT_EQUAL(s.written_bytes, (uint64_t)st.st_size - 1000);
	size_t length = 0;
	char *text = read_file(path, &length);
	CU_ASSERT_PTR_NOT_NULL_FATAL(text);
	CU_ASSERT_EQUAL(count_occurrences(text, length,
					  "console output reached its cap of 65536 bytes"),
			1);
	CU_ASSERT(memcmp(text, earlier, sizeof(earlier)) == 0);
	CU_ASSERT(strncmp(text + 1000, "guest line 0\nguest line 1\n", 26) == 0);
	/* Guest bytes in the file plus those dropped are all it wrote. */
	size_t note_len = strlen(strstr(text, "\n[kapsel: console output reached"));
	CU_ASSERT_EQUAL(length - 1000 - note_len + s.dropped_cap_bytes, total);
	free(text);

	/* A second run on the full file adds nothing, not even a second note. */
	CU_ASSERT_EQUAL_FATAL(console_open(&console, path, cap, -1), 0);
	console_write(&console, "more\n", 5);
	console_close(&console);
	console_output_stats(&console, &s);
	CU_ASSERT_EQUAL(s.dropped_cap_bytes, 5);
	struct stat st2;
	CU_ASSERT_EQUAL(stat(path, &st2), 0);
	CU_ASSERT_EQUAL(st2.st_size, st.st_size);
	unlink(path);
}

int main(void)
{
	/* A hang (the old blocking write) fails the test instead of stalling it. */
	alarm(30);
	static const struct unit_test tests[] = {
		{ "a full sink never blocks the writer; kept output in order",
		  test_full_sink_never_blocks },
		{ "closing gives up on a stuck sink", test_close_gives_up_on_stuck_sink },
		{ "a sink that went away", test_sink_gone },
		{ "the output file's cap", test_file_cap },
	};
	return UNIT_RUN("console", tests);
}
