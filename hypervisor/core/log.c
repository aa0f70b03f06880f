/* Diagnostics: one-line messages to stderr, prefixed with the program name; a limiter for guest-triggered lines. */
#define _GNU_SOURCE
#include "core/log.h"

#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <time.h>

#include "core/clock.h"

static bool log_verbose;
static bool log_quiet;
static FILE *log_stream;

#define NS_PER_SECOND 1000000000ull

void kapsel_log_set_verbose(bool verbose)
{
	log_verbose = verbose;
}
void kapsel_log_set_quiet(bool quiet)
{
	log_quiet = quiet;
}
void kapsel_log_set_stream(FILE *stream)
{
	log_stream = stream;
}

static void log_print(const char *prefix, const char *fmt, va_list ap)
{
	char line[1024];
	vsnprintf(line, sizeof(line), fmt, ap);
	fprintf(log_stream ? log_stream : stderr, "kapsel: %s%s\n", prefix, line);
}

/* An error is printed whole, however long (a domain XML's list of
 * problems), straight to the stream: no heap allocation, so it is safe on
 * every sandboxed thread.  Warnings and guest-triggered lines stay bounded. */
static void log_print_whole(const char *prefix, const char *fmt, va_list ap)
{
	FILE *out = log_stream ? log_stream : stderr;
	flockfile(out);
	fprintf(out, "kapsel: %s", prefix);
	vfprintf(out, fmt, ap);
	fputc('\n', out);
	funlockfile(out);
}

void kapsel_error(const char *fmt, ...)
{
	if (log_quiet)
		return;
	va_list ap;
	va_start(ap, fmt);
	log_print_whole("error: ", fmt, ap);
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

void log_limit_init(struct log_limit *limit, unsigned burst, unsigned per_second)
{
	pthread_mutex_init(&limit->lock, NULL);
	limit->burst = burst ? burst : LOG_LIMIT_DEFAULT_BURST;
	limit->per_second = per_second ? per_second : LOG_LIMIT_DEFAULT_PER_SECOND;
	limit->credit = limit->burst * NS_PER_SECOND;
	limit->suppressed = 0;
	limit->suppressed_total = 0;
	limit->clock_ns = monotonic_ns;
	limit->last_ns = limit->clock_ns();
}

void log_limit_destroy(struct log_limit *limit)
{
	pthread_mutex_destroy(&limit->lock);
}

bool log_limit_admit(struct log_limit *limit, uint64_t *suppressed_before)
{
	pthread_mutex_lock(&limit->lock);
	uint64_t now = limit->clock_ns();
	uint64_t full = limit->burst * NS_PER_SECOND;
	if (now > limit->last_ns) {
		/* Elapsed time is capped at what refills the bucket, so the
		 * product cannot overflow however long the VM was quiet. */
		uint64_t elapsed = now - limit->last_ns;
		uint64_t to_full = (full - limit->credit) / limit->per_second + 1;
		if (elapsed > to_full)
			elapsed = to_full;
		limit->credit += elapsed * limit->per_second;
		if (limit->credit > full)
			limit->credit = full;
	}
	limit->last_ns = now; /* a clock that went back only delays the refill */
	bool pass = limit->credit >= NS_PER_SECOND;
	if (pass) {
		limit->credit -= NS_PER_SECOND;
		*suppressed_before = limit->suppressed;
		limit->suppressed = 0;
	} else {
		limit->suppressed++;
		limit->suppressed_total++;
	}
	pthread_mutex_unlock(&limit->lock);
	return pass;
}

uint64_t log_limit_suppressed_total(struct log_limit *limit)
{
	pthread_mutex_lock(&limit->lock);
	uint64_t total = limit->suppressed_total;
	pthread_mutex_unlock(&limit->lock);
	return total;
}

static void report_suppressed(uint64_t count)
{
	if (count)
		kapsel_warn("%llu guest-triggered messages suppressed (rate limit)",
			    (unsigned long long)count);
}

void kapsel_guest_warn(struct log_limit *limit, const char *fmt, ...)
{
	uint64_t suppressed = 0;
	if (limit && !log_limit_admit(limit, &suppressed))
		return;
	report_suppressed(suppressed);
	if (log_quiet)
		return;
	va_list ap;
	va_start(ap, fmt);
	log_print("warning: ", fmt, ap);
	va_end(ap);
}

void log_limit_flush(struct log_limit *limit)
{
	pthread_mutex_lock(&limit->lock);
	uint64_t count = limit->suppressed;
	limit->suppressed = 0;
	pthread_mutex_unlock(&limit->lock);
	report_suppressed(count);
}
