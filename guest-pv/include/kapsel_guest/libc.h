/* The freestanding C subset libkapsel-guest provides: string functions and formatting. */
#ifndef KAPSEL_GUEST_LIBC_H
#define KAPSEL_GUEST_LIBC_H

/*
 * Several vCPUs: everything here is safe on any vCPU (no shared state).
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* The compiler may emit calls to these four; a guest kernel that has its
 * own may leave lib/string.c out of its link. */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

/* %d %i %u %x %X %p %s %c %% with l/ll/z, width, '0' and '-' flags. */
int kg_vsnprintf(char *buffer, size_t size, const char *fmt, va_list ap);
int kg_snprintf(char *buffer, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Parse a decimal or 0x-hex unsigned number; returns 0 or -1. */
int kg_parse_u64(const char *text, uint64_t *value);

/*
 * The value of the first "key=value" word of cmdline (words are separated
 * by spaces; a value ends at the next space), copied NUL-terminated into
 * value, which holds value_size bytes.  Returns the value's length (0 for
 * "key="), -KAPSEL_ENOENT if no word is "key=...", or -KAPSEL_E2BIG if the
 * value needs more than value_size - 1 bytes; on failure value is "" (when
 * value_size > 0).  Preconditions: cmdline and key are NUL terminated and
 * key is not empty.
 */
int kg_cmdline_value(const char *cmdline, const char *key, char *value, size_t value_size);

#endif
