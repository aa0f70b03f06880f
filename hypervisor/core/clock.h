/* The host's monotonic clock in nanoseconds, one definition for every part of the VMM. */
#ifndef KAPSEL_CLOCK_H
#define KAPSEL_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC now, in nanoseconds (never steps with the wall clock). */
static inline uint64_t monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
