/* The output gate: holds what a guest sends out of the VM until its memory is known good (output_gate.h). */
#include "core/output_gate.h"

#include <errno.h>
#include <pthread.h>

enum gate_state {
	GATE_OPEN,
	GATE_CLOSED,
	GATE_REFUSING
};

static int gate_state = GATE_OPEN; /* atomic; changed under gate_lock */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_changed = PTHREAD_COND_INITIALIZER;

static void gate_set(enum gate_state state)
{
	pthread_mutex_lock(&gate_lock);
	__atomic_store_n(&gate_state, state, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&gate_changed);
	pthread_mutex_unlock(&gate_lock);
}

void output_gate_close(void)
{
	gate_set(GATE_CLOSED);
}

void output_gate_open(void)
{
	gate_set(GATE_OPEN);
}

void output_gate_refuse(void)
{
	gate_set(GATE_REFUSING);
}

int output_gate_wait(void)
{
	/* Acquire: whoever sees OPEN also sees what the checker did before. */
	int state = __atomic_load_n(&gate_state, __ATOMIC_ACQUIRE);
	if (state == GATE_OPEN)
		return 0;
	pthread_mutex_lock(&gate_lock);
	while ((state = __atomic_load_n(&gate_state, __ATOMIC_ACQUIRE)) == GATE_CLOSED)
		pthread_cond_wait(&gate_changed, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
	return state == GATE_OPEN ? 0 : -EIO;
}

bool output_gate_closed(void)
{
	return __atomic_load_n(&gate_state, __ATOMIC_ACQUIRE) == GATE_CLOSED;
}
