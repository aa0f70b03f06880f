/* Guest PV CPU: trap and upcall dispatch, the interrupt flag in shared memory, and the vCPU timer. */
#include "kapsel_guest/cpu.h"

#include "kapsel_guest/arch.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/smp.h"

#include "smp_internal.h"

/*
 * What the library keeps per vCPU: the hypervisor holds trap handlers,
 * the upcall callback and the timer per vCPU, so the library does too.
 * Each slot is written only by its own vCPU (and by kg_cpu_start's
 * trampoline on that vCPU before anything else runs there).
 */
struct cpu_local {
	kg_trap_handler trap_handlers[KAPSEL_TRAP_VECTOR_COUNT];
	bool upcall_registered;
	bool has_timer;
	uint32_t timer_port;
};
static struct cpu_local cpu_locals[KG_MAX_CPUS];

/* Set by kg_syscall_register (mmu.c); the PV MMU runs on one vCPU only. */
kg_trap_handler kg_cpu_syscall_handler;
/* Per channel, shared by all vCPUs: a channel is bound to one vCPU at a
 * time (smp.c keeps which), whose upcall runs the handler. */
static kg_event_handler event_handlers[KAPSEL_EVTCHN_COUNT];

_Static_assert(KAPSEL_HC_IRET == 14, "cpu_entry.S hard-codes the IRET number");
_Static_assert(KAPSEL_PORT_HYPERCALL == 0x510, "cpu_entry.S hard-codes the hypercall port");

/* The calling vCPU's slot in the event page (abi.h: one per vCPU). */
static struct kapsel_vcpu_info *this_vcpu(void)
{
	struct kapsel_event_page *events = kg_platform_event_page();
	if (!events)
		return 0;
	return (struct kapsel_vcpu_info *)((uint8_t *)events + KAPSEL_VCPU_INFO_OFFSET +
					   (size_t)kg_cpu_id() * sizeof(struct kapsel_vcpu_info));
}

bool kg_cpu_available(void)
{
	const struct kapsel_start_info *si = kg_platform_start_info();
	return si && (si->features & KAPSEL_FEATURE_PV_CPU);
}

int64_t kg_hc_set_trap(unsigned vector, uint64_t entry, uint64_t stack_top, uint64_t stack_bytes)
{
	return kg_hypercall(KAPSEL_HC_SET_TRAP, vector, entry, stack_top, stack_bytes, 0);
}

int64_t kg_hc_set_callback(unsigned vcpu, uint64_t entry, uint64_t stack_top, uint64_t stack_bytes)
{
	return kg_hypercall(KAPSEL_HC_SET_CALLBACK, vcpu, entry, stack_top, stack_bytes, 0);
}

int64_t kg_hc_timer_set(unsigned vcpu, uint64_t deadline_ns, uint64_t period_ns)
{
	return kg_hypercall(KAPSEL_HC_TIMER_SET, vcpu, deadline_ns, period_ns, 0, 0);
}

int64_t kg_hc_evtchn_bind_virq(uint32_t port, unsigned virq, unsigned vcpu)
{
	return kg_hypercall(KAPSEL_HC_EVTCHN_BIND_VIRQ, port, virq, vcpu, 0, 0);
}

/* Scan the event page for unmasked pending channels bound to this vCPU
 * that have handlers: another vCPU's channels are its upcall's business. */
static void upcall(struct kapsel_trap_frame *frame)
{
	struct kapsel_event_page *events = kg_platform_event_page();
	unsigned cpu = kg_cpu_id();
	struct kapsel_vcpu_info *vcpu = this_vcpu();
	/* Clear first, then scan: an event raised after the scan sets it
	 * again and the loop (or the next upcall) takes it. */
	while (__atomic_exchange_n(&vcpu->upcall_pending, 0, __ATOMIC_SEQ_CST)) {
		for (unsigned w = 0; w < KAPSEL_EVTCHN_COUNT / 64; w++) {
			uint64_t ready = __atomic_load_n(&events->pending[w], __ATOMIC_SEQ_CST) &
					 ~__atomic_load_n(&events->mask[w], __ATOMIC_RELAXED) &
					 kg_smp_ports_of_cpu(cpu, w);
			while (ready) {
				unsigned bit = (unsigned)__builtin_ctzll(ready);
				ready &= ready - 1;
				uint32_t port = w * 64 + bit;
				kg_event_handler handler =
					__atomic_load_n(&event_handlers[port], __ATOMIC_ACQUIRE);
				if (handler && kg_evtchn_test_and_clear(port))
					handler(port, frame);
			}
		}
	}
}

/* Called by kg_cpu_entry with the frame; returns into the IRET. */
void kg_cpu_dispatch(struct kapsel_trap_frame *frame);
void kg_cpu_dispatch(struct kapsel_trap_frame *frame)
{
	if (frame->vector == KAPSEL_TRAP_VECTOR_UPCALL) {
		upcall(frame);
		return;
	}
	if (frame->vector == KAPSEL_TRAP_VECTOR_SYSCALL && kg_cpu_syscall_handler) {
		kg_cpu_syscall_handler(frame);
		return;
	}
	kg_trap_handler handler = frame->vector < KAPSEL_TRAP_VECTOR_COUNT
					  ? cpu_locals[kg_cpu_id()].trap_handlers[frame->vector]
					  : 0;
	if (handler) {
		handler(frame);
		return;
	}
	/* Registered with the hypervisor but not here: give up loudly. */
	kg_hc_shutdown(KAPSEL_SHUTDOWN_CRASH, 1);
}

/* Entry points and stacks are guest-virtual addresses (rip, rsp); the
 * hypervisor checks them as guest-physical ones, equal today. */
static uint64_t stack_top(void *stack, size_t stack_bytes)
{
	return (uint64_t)(uintptr_t)((uint8_t *)stack + stack_bytes) & ~15ull;
}

int kg_trap_register(unsigned vector, kg_trap_handler handler, void *stack, size_t stack_bytes)
{
	if (!kg_cpu_available())
		return -KAPSEL_ENOSYS;
	if (vector >= KAPSEL_TRAP_VECTOR_COUNT)
		return -KAPSEL_EINVAL;
	kg_trap_handler *slot = &cpu_locals[kg_cpu_id()].trap_handlers[vector];
	*slot = handler;
	int64_t rc = handler ? kg_hc_set_trap(vector, (uint64_t)(uintptr_t)kg_cpu_entry,
					      stack_top(stack, stack_bytes), stack_bytes & ~15ull)
			     : kg_hc_set_trap(vector, 0, 0, 0);
	if (rc < 0)
		*slot = 0;
	return (int)rc;
}

int kg_upcall_register(void *stack, size_t stack_bytes)
{
	if (!kg_cpu_available())
		return -KAPSEL_ENOSYS;
	unsigned cpu = kg_cpu_id();
	int64_t rc = kg_hc_set_callback(cpu, (uint64_t)(uintptr_t)kg_cpu_entry,
					stack_top(stack, stack_bytes), stack_bytes & ~15ull);
	if (rc == 0)
		cpu_locals[cpu].upcall_registered = true;
	return (int)rc;
}

void kg_evtchn_set_handler(uint32_t port, kg_event_handler handler)
{
	if (port < KAPSEL_EVTCHN_COUNT)
		__atomic_store_n(&event_handlers[port], handler, __ATOMIC_RELEASE);
}

bool kg_cpu_local_upcalls_registered(unsigned cpu)
{
	return cpu < KG_MAX_CPUS && cpu_locals[cpu].upcall_registered;
}

void kg_cpu_local_reset(unsigned cpu)
{
	if (cpu >= KG_MAX_CPUS)
		return;
	struct cpu_local *local = &cpu_locals[cpu];
	for (unsigned v = 0; v < KAPSEL_TRAP_VECTOR_COUNT; v++)
		local->trap_handlers[v] = 0;
	local->upcall_registered = false;
	local->has_timer = false;
}

void kg_cpu_local_release_timer(void)
{
	struct cpu_local *local = &cpu_locals[kg_cpu_id()];
	if (!local->has_timer)
		return;
	kg_timer_stop();
	kg_evtchn_set_handler(local->timer_port, 0);
	/* Closed channels go back to vCPU 0, in the library as in the host. */
	kg_smp_binding_record(local->timer_port, 0);
	kg_hc_evtchn_close(local->timer_port);
	local->has_timer = false;
}

void kg_irq_disable(void)
{
	struct kapsel_vcpu_info *vcpu = this_vcpu();
	if (vcpu)
		__atomic_store_n(&vcpu->upcall_mask, 1, __ATOMIC_SEQ_CST);
	kg_barrier();
}

void kg_irq_enable(void)
{
	struct kapsel_vcpu_info *vcpu = this_vcpu();
	if (!vcpu)
		return;
	kg_barrier();
	/* Store the mask, then load pending (a full fence between them): the
	 * host sets pending and then reads the mask, so one of us sees the
	 * other.  Pending here means no upcall came: ask for it. */
	__atomic_store_n(&vcpu->upcall_mask, 0, __ATOMIC_SEQ_CST);
	kg_smp_mb();
	if (__atomic_load_n(&vcpu->upcall_pending, __ATOMIC_SEQ_CST))
		kg_hc_block(0);
}

unsigned long kg_irq_save(void)
{
	struct kapsel_vcpu_info *vcpu = this_vcpu();
	if (!vcpu)
		return 1;
	unsigned long old = __atomic_exchange_n(&vcpu->upcall_mask, 1, __ATOMIC_SEQ_CST);
	kg_barrier();
	return old;
}

void kg_irq_restore(unsigned long flags)
{
	if (!flags)
		kg_irq_enable();
}

bool kg_irq_enabled(void)
{
	struct kapsel_vcpu_info *vcpu = this_vcpu();
	return vcpu && !__atomic_load_n(&vcpu->upcall_mask, __ATOMIC_SEQ_CST);
}

int kg_timer_init(kg_event_handler handler)
{
	if (!kg_cpu_available())
		return -KAPSEL_ENOSYS;
	unsigned cpu = kg_cpu_id();
	struct cpu_local *local = &cpu_locals[cpu];
	if (!local->has_timer) {
		int64_t port = kg_hc_evtchn_alloc();
		if (port < 0)
			return (int)port;
		/* BIND_VIRQ also binds the channel to the calling vCPU. */
		int64_t rc = kg_hc_evtchn_bind_virq((uint32_t)port, KAPSEL_VIRQ_TIMER, cpu);
		if (rc < 0) {
			kg_hc_evtchn_close((uint32_t)port);
			return (int)rc;
		}
		kg_smp_binding_record((uint32_t)port, cpu);
		local->timer_port = (uint32_t)port;
		local->has_timer = true;
	}
	kg_evtchn_set_handler(local->timer_port, handler);
	return 0;
}

int kg_timer_set_oneshot(uint64_t deadline_ns)
{
	return (int)kg_hc_timer_set(kg_cpu_id(), deadline_ns, 0);
}

int kg_timer_set_periodic(uint64_t first_deadline_ns, uint64_t period_ns)
{
	return (int)kg_hc_timer_set(kg_cpu_id(), first_deadline_ns, period_ns);
}

uint64_t kg_timer_next_deadline_ns(void)
{
	struct kapsel_vcpu_info *vcpu = this_vcpu();
	return vcpu ? __atomic_load_n(&vcpu->timer_deadline_ns, __ATOMIC_ACQUIRE)
		    : KAPSEL_TIMER_STOP;
}

int kg_timer_stop(void)
{
	return (int)kg_hc_timer_set(kg_cpu_id(), KAPSEL_TIMER_STOP, 0);
}
