/* Unit tests: the guest library's SMP bookkeeping (guest-pv/lib/smp_internal.h: channel-to-vCPU table, vCPU start claims) and kg_spinlock, on host threads. */
#include <pthread.h>
#include <string.h>

#include "../../guest-pv/lib/smp_internal.h"
#include "cunit_main.h"
#include "kapsel_guest/smp.h"

/* Which vCPUs' words have port's bit (a bitmask of vCPUs). */
static unsigned owners_of(const struct smp_binding *b, uint32_t port)
{
	unsigned owners = 0;
	for (unsigned cpu = 0; cpu < KAPSEL_MAX_VCPUS; cpu++)
		if ((smp_binding_word(b, cpu, port / 64) >> (port % 64)) & 1u)
			owners |= 1u << cpu;
	return owners;
}

static void test_boot_state(void)
{
	static struct smp_binding b; /* zeroed, as the library's */
	for (uint32_t port = 0; port < KAPSEL_EVTCHN_COUNT; port++) {
		CU_ASSERT_EQUAL(smp_binding_cpu(&b, port), 0);
		CU_ASSERT_EQUAL(owners_of(&b, port), 1u);
	}
	CU_ASSERT_EQUAL(smp_binding_cpu(&b, KAPSEL_EVTCHN_COUNT), 0);
}

static void test_moves(void)
{
	static struct smp_binding b;
	memset(&b, 0, sizeof(b));
	smp_binding_move(&b, 70, 3);
	CU_ASSERT_EQUAL(smp_binding_cpu(&b, 70), 3);
	CU_ASSERT_EQUAL(owners_of(&b, 70), 1u << 3);
	/* Its neighbours stay on vCPU 0. */
	CU_ASSERT_EQUAL(owners_of(&b, 69), 1u);
	CU_ASSERT_EQUAL(owners_of(&b, 71), 1u);
	smp_binding_move(&b, 70, 15);
	CU_ASSERT_EQUAL(owners_of(&b, 70), 1u << 15);
	smp_binding_move(&b, 70, 15); /* no change */
	CU_ASSERT_EQUAL(owners_of(&b, 70), 1u << 15);
	smp_binding_move(&b, 70, 0);
	CU_ASSERT_EQUAL(smp_binding_cpu(&b, 70), 0);
	CU_ASSERT_EQUAL(owners_of(&b, 70), 1u);

	/* Many moves against a shadow table: always exactly one owner. */
	uint8_t shadow[KAPSEL_EVTCHN_COUNT] = { 0 };
	uint32_t seed = 12345;
	for (int i = 0; i < 20000; i++) {
		seed = seed * 1103515245u + 12345u;
		uint32_t port = (seed >> 8) % KAPSEL_EVTCHN_COUNT;
		unsigned cpu = (seed >> 20) % KAPSEL_MAX_VCPUS;
		smp_binding_move(&b, port, cpu);
		shadow[port] = (uint8_t)cpu;
	}
	unsigned wrong = 0;
	for (uint32_t port = 0; port < KAPSEL_EVTCHN_COUNT; port++)
		if (smp_binding_cpu(&b, port) != shadow[port] ||
		    owners_of(&b, port) != 1u << shadow[port])
			wrong++;
	CU_ASSERT_EQUAL(wrong, 0);
}

static void test_claims(void)
{
	uint32_t state = SMP_CPU_DOWN, was = 99;
	CU_ASSERT_TRUE(smp_cpu_claim(&state, &was));
	CU_ASSERT_EQUAL(was, SMP_CPU_DOWN);
	CU_ASSERT_EQUAL(state, SMP_CPU_STARTING);
	/* Starting or running: a second start is refused. */
	CU_ASSERT_FALSE(smp_cpu_claim(&state, &was));
	state = SMP_CPU_RUNNING;
	CU_ASSERT_FALSE(smp_cpu_claim(&state, &was));
	CU_ASSERT_EQUAL(state, SMP_CPU_RUNNING);
	/* Stopping: claimed, and the caller learns it must wait for down. */
	state = SMP_CPU_STOPPING;
	CU_ASSERT_TRUE(smp_cpu_claim(&state, &was));
	CU_ASSERT_EQUAL(was, SMP_CPU_STOPPING);
	CU_ASSERT_EQUAL(state, SMP_CPU_STARTING);
}

/* Several threads race to claim one vCPU: exactly one wins. */
static uint32_t contested_state;
static unsigned claim_wins;
static void *claimer(void *arg)
{
	(void)arg;
	uint32_t was;
	if (smp_cpu_claim(&contested_state, &was))
		__atomic_fetch_add(&claim_wins, 1u, __ATOMIC_RELAXED);
	return NULL;
}

static void test_claim_race(void)
{
	for (int round = 0; round < 200; round++) {
		pthread_t threads[4];
		contested_state = SMP_CPU_DOWN;
		claim_wins = 0;
		for (int i = 0; i < 4; i++)
			pthread_create(&threads[i], NULL, claimer, NULL);
		for (int i = 0; i < 4; i++)
			pthread_join(threads[i], NULL);
		CU_ASSERT_EQUAL(claim_wins, 1u);
	}
}

#define LOCK_THREADS 4
#define LOCK_ADDS 300000
static struct kg_spinlock counter_lock = KG_SPINLOCK_INIT;
static volatile uint64_t plain_counter;
static pthread_barrier_t adders_start;
static void *adder(void *arg)
{
	(void)arg;
	pthread_barrier_wait(&adders_start); /* all contend from the start */
	for (int i = 0; i < LOCK_ADDS; i++) {
		kg_spin_lock(&counter_lock);
		uint64_t seen = plain_counter; /* read-modify-write in two steps */
		for (volatile int spin = 0; spin < 20; spin++)
			; /* widen the window another holder would hit */
		plain_counter = seen + 1;
		kg_spin_unlock(&counter_lock);
	}
	return NULL;
}

static void test_spinlock_counts(void)
{
	pthread_t threads[LOCK_THREADS];
	plain_counter = 0;
	pthread_barrier_init(&adders_start, NULL, LOCK_THREADS);
	for (int i = 0; i < LOCK_THREADS; i++)
		CU_ASSERT_EQUAL_FATAL(pthread_create(&threads[i], NULL, adder, NULL), 0);
	for (int i = 0; i < LOCK_THREADS; i++)
		pthread_join(threads[i], NULL);
	pthread_barrier_destroy(&adders_start);
	CU_ASSERT_EQUAL(plain_counter, (uint64_t)LOCK_THREADS * LOCK_ADDS);
}

static void test_trylock(void)
{
	struct kg_spinlock lock = KG_SPINLOCK_INIT;
	CU_ASSERT_TRUE(kg_spin_trylock(&lock));
	CU_ASSERT_FALSE(kg_spin_trylock(&lock)); /* not recursive */
	kg_spin_unlock(&lock);
	CU_ASSERT_TRUE(kg_spin_trylock(&lock));
	kg_spin_unlock(&lock);
	CU_ASSERT_EQUAL(lock.locked, 0u);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "every channel starts on vCPU 0", test_boot_state },
		{ "moves keep exactly one owner", test_moves },
		{ "vCPU start claims", test_claims },
		{ "one of several racing claims wins", test_claim_race },
		{ "spinlock keeps a plain counter exact", test_spinlock_counts },
		{ "trylock", test_trylock },
	};
	return UNIT_RUN("guest smp", tests);
}
