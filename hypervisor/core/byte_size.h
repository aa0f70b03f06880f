/* Sizes written the way operators write them: 4096, 64K, 10M, 1G (optionally KiB/KB, MiB/MB, GiB/GB). */
#ifndef KAPSEL_BYTE_SIZE_H
#define KAPSEL_BYTE_SIZE_H

#include <stdint.h>

/*
 * Parse text (decimal digits, then an optional K/M/G suffix in either
 * case, optionally followed by i and/or B) into bytes.  Returns 0, -EINVAL
 * for bad syntax (text NULL or not starting with a digit included) or
 * -ERANGE when the value does not fit in 64 bits.
 */
int byte_size_parse(const char *text, uint64_t *bytes);

#endif
