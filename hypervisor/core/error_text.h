/* Put a formatted, user-visible error message into a caller's buffer and hand back the error code. */
#ifndef KAPSEL_ERROR_TEXT_H
#define KAPSEL_ERROR_TEXT_H

#include <stddef.h>

/*
 * Format fmt into error (at most error_len bytes, always NUL terminated when
 * error_len > 0) and return err unchanged, so a caller can write
 * `return kapsel_fail(error, error_len, -EINVAL, "...", ...);`.
 * error may be NULL or error_len 0: then nothing is written.
 */
int kapsel_fail(char *error, size_t error_len, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
