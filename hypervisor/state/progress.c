/* How far the running save, snapshot or migration is: one mutex-protected record per process. */
#include "state/progress.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"

static pthread_mutex_t progress_lock = PTHREAD_MUTEX_INITIALIZER;
static struct state_progress progress;
static uint64_t progress_start_ns;

void state_progress_begin(const char *operation, uint32_t max_rounds)
{
	pthread_mutex_lock(&progress_lock);
	uint64_t sequence = progress.sequence + 1;
	memset(&progress, 0, sizeof(progress));
	progress.sequence = sequence;
	snprintf(progress.operation, sizeof(progress.operation), "%s", operation);
	snprintf(progress.state, sizeof(progress.state), "running");
	progress.max_rounds = max_rounds;
	progress_start_ns = monotonic_ns();
	pthread_mutex_unlock(&progress_lock);
}

void state_progress_pass(const char *phase, uint64_t total_bytes, uint32_t round,
			 uint64_t dirty_bytes)
{
	pthread_mutex_lock(&progress_lock);
	snprintf(progress.phase, sizeof(progress.phase), "%s", phase);
	progress.total_bytes = total_bytes;
	progress.scanned_bytes = 0;
	progress.round = round;
	progress.dirty_bytes = dirty_bytes;
	pthread_mutex_unlock(&progress_lock);
}

void state_progress_update(uint64_t scanned_bytes, uint64_t written_bytes)
{
	pthread_mutex_lock(&progress_lock);
	progress.scanned_bytes =
		scanned_bytes > progress.total_bytes ? progress.total_bytes : scanned_bytes;
	progress.written_bytes = written_bytes;
	pthread_mutex_unlock(&progress_lock);
}

void state_progress_phase(const char *phase)
{
	pthread_mutex_lock(&progress_lock);
	snprintf(progress.phase, sizeof(progress.phase), "%s", phase);
	pthread_mutex_unlock(&progress_lock);
}

void state_progress_end(int err)
{
	pthread_mutex_lock(&progress_lock);
	snprintf(progress.state, sizeof(progress.state), "%s", err ? "failed" : "done");
	if (!err)
		progress.scanned_bytes = progress.total_bytes;
	progress.elapsed_ns = monotonic_ns() - progress_start_ns;
	pthread_mutex_unlock(&progress_lock);
}

void state_progress_read(struct state_progress *out)
{
	pthread_mutex_lock(&progress_lock);
	*out = progress;
	if (strcmp(progress.state, "running") == 0)
		out->elapsed_ns = monotonic_ns() - progress_start_ns;
	pthread_mutex_unlock(&progress_lock);
}
