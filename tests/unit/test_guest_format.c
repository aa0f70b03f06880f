/* Unit tests: the guest library's kg_snprintf (guest-pv/lib/format.c, built for the host) against
 * the host's snprintf. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cunit_main.h"
/* format.c is freestanding C; only strlen comes from the host libc here.
 * string.c is left out: its memcpy/memset would replace the host's. */
#include "kapsel_guest/libc.h"

#define BUFFER_BYTES 128

static char expected[BUFFER_BYTES], got[BUFFER_BYTES];

/* Both buffers start with the same filler, so bytes past the size limit
 * are compared too: neither side may write there. */
static void fill(void)
{
	memset(expected, '#', sizeof(expected));
	memset(got, '#', sizeof(got));
}

static void compare(int line, const char *fmt, size_t size, int expected_n, int got_n)
{
	if (expected_n != got_n || memcmp(expected, got, sizeof(expected)) != 0) {
		fprintf(stderr,
			"\n  line %d: format \"%s\" size %zu: host %d \"%.*s\", guest %d \"%.*s\"\n",
			line, fmt, size, expected_n, (int)(size ? size : 1), expected, got_n,
			(int)(size ? size : 1), got);
		CU_FAIL("kg_snprintf differs from snprintf");
	} else {
		CU_PASS("same");
	}
}

#define CHECK_SIZE(size, fmt, ...)                                           \
	do {                                                                 \
		/* volatile: truncation is the point, keep -Wformat quiet */ \
		volatile size_t size_ = (size);                              \
		fill();                                                      \
		int e_ = snprintf(expected, size_, fmt, __VA_ARGS__);        \
		int g_ = kg_snprintf(got, size_, fmt, __VA_ARGS__);          \
		compare(__LINE__, fmt, size_, e_, g_);                       \
	} while (0)
#define CHECK(fmt, ...) CHECK_SIZE(sizeof(expected), fmt, __VA_ARGS__)

static void test_integers(void)
{
	CHECK("%d", 0);
	CHECK("%d", 42);
	CHECK("%d", -1);
	CHECK("%d", INT_MIN);
	CHECK("%d", INT_MAX);
	CHECK("%i", -12345);
	CHECK("%u", 0u);
	CHECK("%u", UINT_MAX);
	CHECK("%x", 0xdeadbeefu);
	CHECK("%X", 0xdeadbeefu);
	CHECK("%x", 0u);
	CHECK("%x", (unsigned)-1);
	CHECK("%ld", LONG_MIN);
	CHECK("%ld", LONG_MAX);
	CHECK("%lu", ULONG_MAX);
	CHECK("%lx", 0x123456789abcdefUL);
	CHECK("%lld", LLONG_MIN);
	CHECK("%lld", LLONG_MAX);
	CHECK("%llu", ULLONG_MAX);
	CHECK("%llx", ULLONG_MAX);
	CHECK("%llX", 0xabcdef0123ULL);
	CHECK("%zu", (size_t)123456789);
	CHECK("%zx", (size_t)0xfeed);
	CHECK("%p", (void *)0x1000a0);
}

static void test_widths_and_flags(void)
{
	CHECK("[%5d]", 42);
	CHECK("[%-5d]", 42);
	CHECK("[%05d]", 42);
	CHECK("[%5d]", -42);
	CHECK("[%-5d]", -42);
	CHECK("[%05d]", -42);
	CHECK("[%025lld]", LLONG_MIN);
	CHECK("[%2d]", 12345);
	CHECK("[%08x]", 0xbeefu);
	CHECK("[%8x]", 0xbeefu);
	CHECK("[%-8x]", 0xbeefu);
	CHECK("[%016llx]", 0x1234ULL);
	CHECK("[%1u]", 0u);
	CHECK("[%3c]", 'z');
	CHECK("[%-3c]", 'z');
	CHECK("[%10s]", "right");
	CHECK("[%-10s]", "left");
	CHECK("[%3s]", "longer than width");
}

static void test_strings_and_chars(void)
{
	const char *volatile null_string = NULL; /* volatile: keep -Wformat quiet */
	CHECK("%s", "hello");
	CHECK("%s", "");
	CHECK("%s", null_string);
	CHECK("[%8s]", null_string);
	CHECK("%c", 'A');
	CHECK("%c%c%c", 'a', 'b', 'c');
	CHECK("%s", "100%");
	CHECK("%d%%", 50);
	CHECK("%s=%d, %s=%x", "a", 1, "b", 0xffu);
	CHECK("%s: %llu bytes at %p (%c)", "disk", 4096ULL, (void *)0x7000, '!');
}

static void test_no_arguments(void)
{
	fill();
	int e = snprintf(expected, sizeof(expected), "plain text");
	int g = kg_snprintf(got, sizeof(got), "plain text");
	compare(__LINE__, "plain text", sizeof(expected), e, g);
	fill();
	e = snprintf(expected, sizeof(expected), "100%%");
	g = kg_snprintf(got, sizeof(got), "100%%");
	compare(__LINE__, "100%%", sizeof(expected), e, g);
	fill();
	e = snprintf(expected, sizeof(expected), "%%%%");
	g = kg_snprintf(got, sizeof(got), "%%%%");
	compare(__LINE__, "%%%%", sizeof(expected), e, g);
}

static void test_truncation(void)
{
	/* The return value is the untruncated length; the buffer holds
	 * size - 1 bytes and a NUL; nothing at or past size is written. */
	CHECK_SIZE(0, "%s", "hello world");
	CHECK_SIZE(1, "%s", "hello world");
	CHECK_SIZE(5, "%s", "hello world");
	CHECK_SIZE(11, "%s", "hello world");
	CHECK_SIZE(12, "%s", "hello world");
	CHECK_SIZE(4, "%d", 123456);
	CHECK_SIZE(4, "%d", -123456);
	CHECK_SIZE(3, "[%05d]", -42);
	CHECK_SIZE(6, "%-10s|", "ab");
	CHECK_SIZE(7, "%llx", ULLONG_MAX);
	CHECK_SIZE(2, "%c%c%c", 'x', 'y', 'z');
	/* size 0 even accepts a NULL buffer, as snprintf does. */
	CU_ASSERT_EQUAL(kg_snprintf(NULL, 0, "%d items", 12345), 11);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "integers", test_integers },
		{ "widths and flags", test_widths_and_flags },
		{ "strings and characters", test_strings_and_chars },
		{ "no arguments", test_no_arguments },
		{ "truncation and return value", test_truncation },
	};
	return UNIT_RUN("guest format", tests);
}
