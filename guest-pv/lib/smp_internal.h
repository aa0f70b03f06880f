/* Pure SMP bookkeeping shared by cpu.c and smp.c: which vCPU each event channel is bound to, and each vCPU's start/stop state. */
#ifndef KAPSEL_GUEST_SMP_INTERNAL_H
#define KAPSEL_GUEST_SMP_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "kapsel/abi.h"

#define SMP_PORT_WORDS (KAPSEL_EVTCHN_COUNT / 64u)

/*
 * The library's copy of each channel's vCPU binding, kept so that an upcall
 * on vCPU k runs only the handlers of channels bound to k.  Every channel
 * starts bound to vCPU 0 (as in the hypervisor), so a zeroed table is the
 * boot state: cpu_of_port[] holds the vCPU; moved_from_boot has a bit for
 * each channel bound away from vCPU 0 and bound_to[k] (k >= 1) one for each
 * channel bound to k.  Upcalls read their own vCPU's bitmap without a lock
 * (atomic loads); smp_binding_move, called under a lock, adds the channel
 * to its new vCPU before removing it from the old one, so that for a
 * moment both may run its handler (the pending bit, taken atomically,
 * decides which one does).  An event already pending while its channel
 * moves is not lost: kg_evtchn_bind_cpu records the move before the
 * hypercall, which raises an upcall on the new vCPU for it.
 */
struct smp_binding {
	uint8_t cpu_of_port[KAPSEL_EVTCHN_COUNT];
	uint64_t moved_from_boot[SMP_PORT_WORDS];
	uint64_t bound_to[KAPSEL_MAX_VCPUS][SMP_PORT_WORDS]; /* [0] unused */
};

/* The channels of word w (ports w*64 .. w*64+63) bound to cpu. */
static inline uint64_t smp_binding_word(const struct smp_binding *b, unsigned cpu, unsigned w)
{
	if (cpu == 0)
		return ~__atomic_load_n(&b->moved_from_boot[w], __ATOMIC_ACQUIRE);
	return __atomic_load_n(&b->bound_to[cpu][w], __ATOMIC_ACQUIRE);
}

/* The vCPU port is bound to (0 for an out-of-range port). */
static inline unsigned smp_binding_cpu(const struct smp_binding *b, uint32_t port)
{
	return port < KAPSEL_EVTCHN_COUNT ? __atomic_load_n(&b->cpu_of_port[port], __ATOMIC_ACQUIRE)
					  : 0;
}

/*
 * Record that port now belongs to cpu.  Precondition: port <
 * KAPSEL_EVTCHN_COUNT, cpu < KAPSEL_MAX_VCPUS, and the caller holds the
 * lock that serializes moves (readers need none).
 */
static inline void smp_binding_move(struct smp_binding *b, uint32_t port, unsigned cpu)
{
	unsigned old = b->cpu_of_port[port];
	unsigned w = port / 64u;
	uint64_t bit = 1ull << (port % 64u);
	if (old == cpu)
		return;
	/* Add to the new vCPU first ... */
	if (cpu == 0)
		__atomic_fetch_and(&b->moved_from_boot[w], ~bit, __ATOMIC_SEQ_CST);
	else
		__atomic_fetch_or(&b->bound_to[cpu][w], bit, __ATOMIC_SEQ_CST);
	__atomic_store_n(&b->cpu_of_port[port], (uint8_t)cpu, __ATOMIC_RELEASE);
	/* ... then take it from the old one. */
	if (old == 0)
		__atomic_fetch_or(&b->moved_from_boot[w], bit, __ATOMIC_SEQ_CST);
	else
		__atomic_fetch_and(&b->bound_to[old][w], ~bit, __ATOMIC_SEQ_CST);
}

/*
 * A vCPU's life as the library sees it.  DOWN -> STARTING (kg_cpu_start
 * claims it) -> RUNNING (its trampoline runs) -> STOPPING (kg_cpu_stop_self,
 * just before the VCPU_DOWN call) -> DOWN (someone saw VCPU_STATUS say 0).
 * A failed VCPU_UP goes STARTING -> DOWN.
 */
enum smp_cpu_state {
	SMP_CPU_DOWN = 0,
	SMP_CPU_STARTING = 1,
	SMP_CPU_RUNNING = 2,
	SMP_CPU_STOPPING = 3,
};

/* Claim a vCPU for starting: true if its state was DOWN or STOPPING (then
 * *was says which; the caller waits for a STOPPING vCPU to be down before
 * VCPU_UP).  false: it is starting or running already. */
static inline bool smp_cpu_claim(uint32_t *state, uint32_t *was)
{
	uint32_t seen = __atomic_load_n(state, __ATOMIC_ACQUIRE);
	for (;;) {
		if (seen != SMP_CPU_DOWN && seen != SMP_CPU_STOPPING)
			return false;
		if (__atomic_compare_exchange_n(state, &seen, SMP_CPU_STARTING, false,
						__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			*was = seen;
			return true;
		}
	}
}

/* ---- Between the library's files (cpu.c, smp.c); not for guests ---- */

/* The channels of word w bound to cpu (smp.c's table). */
uint64_t kg_smp_ports_of_cpu(unsigned cpu, unsigned w);
/* Record in that table that port is bound to cpu (the caller made the
 * hypercall, or the host bound it, as BIND_VIRQ does). */
void kg_smp_binding_record(uint32_t port, unsigned cpu);
/* cpu.c's per-vCPU slots: did cpu register an upcall callback; forget
 * cpu's trap handlers, callback and timer (a vCPU starting afresh);
 * stop and close the calling vCPU's timer channel (a vCPU going down). */
bool kg_cpu_local_upcalls_registered(unsigned cpu);
void kg_cpu_local_reset(unsigned cpu);
void kg_cpu_local_release_timer(void);

#endif
