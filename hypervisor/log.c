/* Diagnostics: one-line messages to stderr, prefixed with the program name. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

static bool log_verbose;
static bool log_quiet;

void kapsel_log_set_verbose(bool verbose)
{
	log_verbose = verbose;
}
void kapsel_log_set_quiet(bool quiet)
{
	log_quiet = quiet;
}

static void log_print(const char *prefix, const char *fmt, va_list ap)
{
	char line[1024];
	vsnprintf(line, sizeof(line), fmt, ap);
	fprintf(stderr, "kapsel: %s%s\n", prefix, line);
}

void kapsel_error(const char *fmt, ...)
{
	if (log_quiet)
		return;
	va_list ap;
	va_start(ap, fmt);
	log_print("error: ", fmt, ap);
	va_end(ap);
}

void kapsel_warn(const char *fmt, ...)
{
	if (log_quiet)
		return;
	va_list ap;
	va_start(ap, fmt);
	log_print("warning: ", fmt, ap);
	va_end(ap);
}

void kapsel_debug(const char *fmt, ...)
{
	if (!log_verbose)
		return;
	va_list ap;
	va_start(ap, fmt);
	log_print("", fmt, ap);
	va_end(ap);
}
