/* Put a formatted, user-visible error message into a caller's buffer and hand back the error code. */
#include "core/error_text.h"

#include <stdarg.h>
#include <stdio.h>

int kapsel_fail(char *error, size_t error_len, int err, const char *fmt, ...)
{
	if (error && error_len) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(error, error_len, fmt, ap);
		va_end(ap);
	}
	return err;
}
