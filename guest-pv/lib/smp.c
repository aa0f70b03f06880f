/* Guest SMP: vCPU ids from TSC_AUX, starting and stopping vCPUs, channel-to-vCPU bindings and irqsave spinlocks. */
#include "kapsel_guest/smp.h"

#include "kapsel_guest/cpu.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"

#include "smp_internal.h"

_Static_assert(KG_MAX_CPUS <= 255, "smp_binding stores a vCPU in a byte");

static struct smp_binding binding;
static struct kg_spinlock binding_lock;

/*
 * What kg_cpu_start hands its trampoline, one per vCPU, written by the
 * starter while the vCPU is down and read by the vCPU once it runs (the
 * VCPU_UP hypercall orders the two).
 */
struct cpu_start {
	kg_cpu_fn fn;
	void *arg;
	uintptr_t upcall_stack; /* 0: vCPU 0 takes no upcalls, register none */
	size_t upcall_stack_bytes;
};
static struct cpu_start cpu_starts[KG_MAX_CPUS];
static uint32_t cpu_states[KG_MAX_CPUS]; /* enum smp_cpu_state */

/* How kg_cpu_id finds the id: decided once the platform is known. */
enum cpu_id_source {
	CPU_ID_UNKNOWN = 0,
	CPU_ID_ALWAYS_0 = 1,
	CPU_ID_RDTSCP = 2,
};
static uint32_t cpu_id_source;

int64_t kg_hc_vcpu_up(unsigned vcpu, uint64_t entry, uint64_t stack_top, uint64_t arg)
{
	return kg_hypercall(KAPSEL_HC_VCPU_UP, vcpu, entry, stack_top, arg, 0);
}

int64_t kg_hc_vcpu_down(void)
{
	return kg_hypercall(KAPSEL_HC_VCPU_DOWN, 0, 0, 0, 0, 0);
}

int64_t kg_hc_vcpu_status(unsigned vcpu)
{
	return kg_hypercall(KAPSEL_HC_VCPU_STATUS, vcpu, 0, 0, 0, 0);
}

int64_t kg_hc_evtchn_bind_vcpu(uint32_t port, unsigned vcpu)
{
	return kg_hypercall(KAPSEL_HC_EVTCHN_BIND_VCPU, port, vcpu, 0, 0, 0);
}

bool kg_smp_available(void)
{
	const struct kapsel_start_info *si = kg_platform_start_info();
	return si && si->abi_minor >= 6 && (si->features & KAPSEL_FEATURE_SMP);
}

unsigned kg_cpu_count(void)
{
	if (!kg_smp_available())
		return 1;
	/* Read once; a count outside 1 .. KG_MAX_CPUS is not one we can use. */
	uint32_t count = __atomic_load_n(&kg_platform_start_info()->vcpu_count, __ATOMIC_RELAXED);
	return count >= 1 && count <= KG_MAX_CPUS ? count : 1;
}

static bool cpu_has_rdtscp(void)
{
	uint32_t eax, ebx, ecx, edx;
	kg_cpuid(0x80000000u, &eax, &ebx, &ecx, &edx);
	if (eax < 0x80000001u)
		return false;
	kg_cpuid(0x80000001u, &eax, &ebx, &ecx, &edx);
	return (edx >> 27) & 1u;
}

static uint32_t decide_cpu_id_source(void)
{
	/* Before kg_platform_init (or off Kapsel) there is one vCPU: answer
	 * 0 without remembering, the platform may still come up. */
	if (!kg_platform_is_kapsel())
		return CPU_ID_ALWAYS_0;
	uint32_t source = kg_cpu_count() > 1 && cpu_has_rdtscp() ? CPU_ID_RDTSCP : CPU_ID_ALWAYS_0;
	/* Every vCPU computes the same answer: a racing store is harmless. */
	__atomic_store_n(&cpu_id_source, source, __ATOMIC_RELAXED);
	return source;
}

unsigned kg_cpu_id(void)
{
	uint32_t source = __atomic_load_n(&cpu_id_source, __ATOMIC_RELAXED);
	if (source == CPU_ID_UNKNOWN)
		source = decide_cpu_id_source();
	if (source != CPU_ID_RDTSCP)
		return 0;
	uint32_t lo, hi, aux;
	__asm__ volatile("rdtscp" : "=a"(lo), "=d"(hi), "=c"(aux));
	(void)lo;
	(void)hi;
	/* The id indexes the library's per-vCPU arrays: never past them. */
	return aux < KG_MAX_CPUS ? aux : 0;
}

uint64_t kg_smp_ports_of_cpu(unsigned cpu, unsigned w)
{
	return cpu < KG_MAX_CPUS && w < SMP_PORT_WORDS ? smp_binding_word(&binding, cpu, w) : 0;
}

void kg_smp_binding_record(uint32_t port, unsigned cpu)
{
	if (port >= KAPSEL_EVTCHN_COUNT || cpu >= KG_MAX_CPUS)
		return;
	unsigned long flags = kg_spin_lock_irqsave(&binding_lock);
	smp_binding_move(&binding, port, cpu);
	kg_spin_unlock_irqrestore(&binding_lock, flags);
}

int kg_evtchn_bind_cpu(uint32_t port, unsigned cpu)
{
	if (port >= KAPSEL_EVTCHN_COUNT || cpu >= kg_cpu_count())
		return -KAPSEL_EINVAL;
	if (!kg_smp_available())
		return cpu == 0 ? 0 : -KAPSEL_ENOSYS;
	/* The lock keeps the host's binding and the library's in the same
	 * order when two vCPUs move one channel at once.  The library's
	 * record moves first: the hypervisor hands an already pending
	 * channel to its new vCPU during the call, and that vCPU's upcall
	 * must find the channel its own.  The old vCPU then passes over it,
	 * which is right: it is no longer its event. */
	unsigned long flags = kg_spin_lock_irqsave(&binding_lock);
	unsigned old = smp_binding_cpu(&binding, port);
	smp_binding_move(&binding, port, cpu);
	int64_t rc = kg_hc_evtchn_bind_vcpu(port, cpu);
	if (rc != 0)
		smp_binding_move(&binding, port, old);
	kg_spin_unlock_irqrestore(&binding_lock, flags);
	return (int)rc;
}

unsigned kg_evtchn_cpu(uint32_t port)
{
	return smp_binding_cpu(&binding, port);
}

unsigned long kg_spin_lock_irqsave(struct kg_spinlock *lock)
{
	unsigned long flags = kg_irq_save();
	kg_spin_lock(lock);
	return flags;
}

void kg_spin_unlock_irqrestore(struct kg_spinlock *lock, unsigned long flags)
{
	kg_spin_unlock(lock);
	kg_irq_restore(flags);
}

/* Called by kg_cpu_trampoline (smp_entry.S) on the new vCPU's stack. */
__attribute__((noreturn)) void kg_cpu_trampoline_main(struct cpu_start *start, uint64_t vcpu);
void kg_cpu_trampoline_main(struct cpu_start *start, uint64_t vcpu)
{
	/* rsi comes from the hypervisor and rdi from kg_cpu_start, through
	 * it: both must name this vCPU's slot, and TSC_AUX must agree, or
	 * every per-vCPU table of the library would be the wrong one. */
	if (vcpu == 0 || vcpu >= KG_MAX_CPUS || start != &cpu_starts[vcpu] || kg_cpu_id() != vcpu)
		kg_os_panic("smp: a vCPU started with an id that does not match its start block "
			    "or its TSC_AUX");
	kg_cpu_local_reset((unsigned)vcpu);
	if (start->upcall_stack &&
	    kg_upcall_register((void *)start->upcall_stack, start->upcall_stack_bytes) != 0)
		kg_os_panic("smp: the hypervisor refused a started vCPU's upcall callback");
	kg_cpu_fn fn = start->fn;
	void *arg = start->arg;
	__atomic_store_n(&cpu_states[vcpu], SMP_CPU_RUNNING, __ATOMIC_RELEASE);
	fn(arg);
	kg_cpu_stop_self();
	kg_os_panic("smp: VCPU_DOWN refused on a started vCPU");
}

int kg_cpu_start(unsigned cpu, kg_cpu_fn fn, void *arg, void *stack, size_t stack_bytes)
{
	if (!kg_smp_available())
		return -KAPSEL_ENOSYS;
	uintptr_t base = (uintptr_t)stack;
	if (cpu == 0 || cpu >= kg_cpu_count() || !fn || !stack ||
	    stack_bytes < KG_CPU_STACK_MIN_BYTES || (base & 15u) || (stack_bytes & 15u) ||
	    base + stack_bytes < base)
		return -KAPSEL_EINVAL;
	/* Without rdtscp every vCPU would read id 0 and share vCPU 0's slots. */
	(void)kg_cpu_id(); /* decides the source */
	if (__atomic_load_n(&cpu_id_source, __ATOMIC_RELAXED) != CPU_ID_RDTSCP)
		return -KAPSEL_ENOSYS;
	uint32_t was;
	if (!smp_cpu_claim(&cpu_states[cpu], &was))
		return -KAPSEL_EBUSY;
	if (was == SMP_CPU_STOPPING) {
		/* It is on its way down: VCPU_UP would say -EBUSY until then. */
		int64_t status;
		while ((status = kg_hc_vcpu_status(cpu)) == 1)
			kg_cpu_relax();
		if (status < 0) {
			__atomic_store_n(&cpu_states[cpu], SMP_CPU_DOWN, __ATOMIC_RELEASE);
			return (int)status;
		}
	}
	struct cpu_start *start = &cpu_starts[cpu];
	start->fn = fn;
	start->arg = arg;
	start->upcall_stack = 0;
	start->upcall_stack_bytes = 0;
	if (kg_cpu_local_upcalls_registered(0)) {
		/* The lowest quarter takes upcalls; fn runs on the rest. */
		start->upcall_stack = base;
		start->upcall_stack_bytes = (stack_bytes / 4u) & ~(size_t)15;
	}
	int64_t rc = kg_hc_vcpu_up(cpu, (uint64_t)(uintptr_t)kg_cpu_trampoline,
				   (uint64_t)(base + stack_bytes), (uint64_t)(uintptr_t)start);
	if (rc < 0) {
		__atomic_store_n(&cpu_states[cpu], SMP_CPU_DOWN, __ATOMIC_RELEASE);
		return (int)rc;
	}
	return 0;
}

int kg_cpu_stop_self(void)
{
	if (!kg_smp_available())
		return -KAPSEL_ENOSYS;
	unsigned cpu = kg_cpu_id();
	if (cpu == 0)
		return -KAPSEL_EINVAL;
	kg_irq_disable();
	kg_cpu_local_release_timer();
	__atomic_store_n(&cpu_states[cpu], SMP_CPU_STOPPING, __ATOMIC_RELEASE);
	int64_t rc = kg_hc_vcpu_down();
	/* Still here: the hypervisor refused. */
	__atomic_store_n(&cpu_states[cpu], SMP_CPU_RUNNING, __ATOMIC_RELEASE);
	return (int)rc;
}

bool kg_cpu_online(unsigned cpu)
{
	if (cpu == 0)
		return true;
	if (cpu >= KG_MAX_CPUS)
		return false;
	uint32_t state = __atomic_load_n(&cpu_states[cpu], __ATOMIC_ACQUIRE);
	if (state == SMP_CPU_DOWN)
		return false;
	if (state != SMP_CPU_STOPPING)
		return true;
	if (kg_hc_vcpu_status(cpu) != 0)
		return true;
	/* Down: say so once for everyone (a concurrent kg_cpu_start may
	 * already have claimed it, then it stays STARTING). */
	uint32_t expected = SMP_CPU_STOPPING;
	__atomic_compare_exchange_n(&cpu_states[cpu], &expected, SMP_CPU_DOWN, false,
				    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
	return __atomic_load_n(&cpu_states[cpu], __ATOMIC_ACQUIRE) != SMP_CPU_DOWN;
}
