/* Guest SMP API: which vCPU am I, starting and stopping vCPUs, binding event channels to vCPUs, and spinlocks. */
#ifndef KAPSEL_GUEST_SMP_H
#define KAPSEL_GUEST_SMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kapsel/abi.h"
#include "kapsel_guest/arch.h"

/*
 * Thread safety, for this header and the rest of the library: docs/porting.md
 * "Several vCPUs".  Every call here may be made on any vCPU at any time
 * after kg_platform_init (which vCPU 0 makes before it starts the others),
 * unless its comment says otherwise.
 */

/* The most vCPUs a VM has (the ABI's limit); vCPU ids are 0 .. this - 1. */
#define KG_MAX_CPUS KAPSEL_MAX_VCPUS

/* True when the hypervisor offers KAPSEL_FEATURE_SMP (ABI 1.6). */
bool kg_smp_available(void);

/*
 * The calling vCPU's id, 0 .. kg_cpu_count() - 1, without an exit: the
 * hypervisor keeps each vCPU's id in its TSC_AUX, which rdtscp reads at
 * CPL3.  0 on a single-vCPU VM, without SMP, off Kapsel or on a CPU
 * without rdtscp (CPUID 0x80000001 EDX bit 27).
 */
unsigned kg_cpu_id(void);

/* vCPUs the VM has (start info vcpu_count); 1 without SMP or off Kapsel. */
unsigned kg_cpu_count(void);

/* What a started vCPU runs (kg_cpu_start); it may return, which stops the vCPU. */
typedef void (*kg_cpu_fn)(void *arg);

/*
 * Start vCPU cpu (1 .. kg_cpu_count() - 1) on fn(arg) with the stack
 * [stack, stack + stack_bytes) (16-byte aligned, at least
 * KG_CPU_STACK_MIN_BYTES; the caller keeps it until the vCPU is down).
 * The library's trampoline runs first on that vCPU: it clears the vCPU's
 * library state (trap handlers, timer), and if vCPU 0 registered an upcall
 * callback (kg_upcall_register), registers one for this vCPU on the lowest
 * quarter of the stack; upcalls stay masked, as the hypervisor starts
 * every vCPU, until fn calls kg_irq_enable.  When fn returns the vCPU goes
 * down (kg_cpu_stop_self).  A vCPU that went down may be started again,
 * with another fn and arg.  Returns 0 once the hypervisor accepted the
 * start (fn may not have run yet), or -KAPSEL_ENOSYS (no SMP),
 * -KAPSEL_EINVAL (cpu 0 or out of range, fn NULL, stack too small or
 * misaligned), -KAPSEL_EBUSY (the vCPU is starting or running), or the
 * hypervisor's answer to VCPU_UP (-KAPSEL_EFAULT: the stack is not guest
 * RAM).  Any vCPU may start any other.
 */
#define KG_CPU_STACK_MIN_BYTES 16384u
int kg_cpu_start(unsigned cpu, kg_cpu_fn fn, void *arg, void *stack, size_t stack_bytes);

/*
 * Take the calling vCPU down: masks its upcalls, stops and releases its
 * timer channel, then VCPU_DOWN.  Does not return on success.  Returns
 * -KAPSEL_EINVAL on vCPU 0 (which ends only with the VM: kg_exit) and
 * -KAPSEL_ENOSYS without SMP.  Its event channels stay bound to it: an
 * event sent to a vCPU that is down waits until the vCPU is started and
 * unmasks upcalls again.
 */
int kg_cpu_stop_self(void);

/*
 * True while vCPU cpu is starting or running (from kg_cpu_start until its
 * VCPU_DOWN has completed: then its stack is free again).  Asks the
 * hypervisor (VCPU_STATUS) only for a vCPU that is stopping.  vCPU 0 is
 * always online.
 */
bool kg_cpu_online(unsigned cpu);

/*
 * Bind event channel port to vCPU cpu: the hypervisor delivers its upcalls
 * and BLOCK wake-ups there, and the library runs its kg_event_handler only
 * in that vCPU's upcall.  Channels start bound to vCPU 0; kg_timer_init
 * binds the timer channel to the calling vCPU.  An inter-processor event
 * is kg_hc_evtchn_send on a channel bound to another vCPU.  An event
 * pending when the channel moves goes to the new vCPU.  kg_hc_evtchn_alloc
 * (like the hypervisor) starts every new channel on vCPU 0 again.  Returns
 * 0, -KAPSEL_EINVAL (bad port or vCPU, the control channel, a channel not
 * allocated) or -KAPSEL_ENOSYS (no SMP; binding to vCPU 0 then succeeds as
 * a no-op).
 */
int kg_evtchn_bind_cpu(uint32_t port, unsigned cpu);

/* The vCPU the library has port bound to (0 for a bad port). */
unsigned kg_evtchn_cpu(uint32_t port);

/*
 * A test-and-set spinlock for short critical sections between vCPUs.
 * Zero-initialised (KG_SPINLOCK_INIT or static storage) is unlocked.  The
 * waiter spins with pause.  Not recursive.  Code that also takes the lock
 * in an upcall handler must use the irqsave variants in normal context, or
 * an upcall on the same vCPU spins forever on a lock its own vCPU holds.
 * A vCPU holding a lock can be descheduled by the host: keep sections short
 * and never hold a lock across kg_hc_block or a sleep.
 */
struct kg_spinlock {
	uint32_t locked; /* 0 free, 1 held */
};
#define KG_SPINLOCK_INIT \
	{                \
		0        \
	}

static inline bool kg_spin_trylock(struct kg_spinlock *lock)
{
	return __atomic_exchange_n(&lock->locked, 1u, __ATOMIC_ACQUIRE) == 0;
}

static inline void kg_spin_lock(struct kg_spinlock *lock)
{
	while (!kg_spin_trylock(lock)) {
		/* Wait with plain loads: the cache line stays shared until
		 * the holder releases it. */
		while (__atomic_load_n(&lock->locked, __ATOMIC_RELAXED))
			kg_cpu_relax();
	}
}

static inline void kg_spin_unlock(struct kg_spinlock *lock)
{
	__atomic_store_n(&lock->locked, 0u, __ATOMIC_RELEASE);
}

/* Mask this vCPU's upcalls (kg_irq_save), then take the lock; returns the
 * previous upcall state for kg_spin_unlock_irqrestore. */
unsigned long kg_spin_lock_irqsave(struct kg_spinlock *lock);
void kg_spin_unlock_irqrestore(struct kg_spinlock *lock, unsigned long flags);

/* Raw calls (abi.h, minor 6). */
int64_t kg_hc_vcpu_up(unsigned vcpu, uint64_t entry, uint64_t stack_top, uint64_t arg);
int64_t kg_hc_vcpu_down(void); /* returns only with an error */
int64_t kg_hc_vcpu_status(unsigned vcpu);
int64_t kg_hc_evtchn_bind_vcpu(uint32_t port, unsigned vcpu);

/* The entry the library hands VCPU_UP (smp_entry.S): rdi = the start
 * block, rsi = the vCPU id. */
void kg_cpu_trampoline(void);

#endif
