/* Platform discovery: are we on Kapsel, which ABI, which devices, what time is it. */
#include "kapsel_guest/platform.h"

#include "kapsel_guest/arch.h"
#include "kapsel_guest/cpu.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/os_hooks.h"

static const struct kapsel_start_info *platform_start_info;
static struct kapsel_event_page *platform_events;
static bool platform_kapsel;
static uint64_t platform_generation;
static void (*platform_generation_callback)(uint64_t generation);

/* TSC to Kapsel clock: now = base_ns + (tsc - base_tsc) * mult >> 32.
 * The three change together (after a restore) while other vCPUs read
 * them: clock_sequence is odd during a change, and a reader that saw it
 * odd or changed reads again. */
static uint64_t clock_base_ns, clock_base_tsc, clock_mult;
static uint32_t clock_sequence;

static void clock_store(uint64_t base_ns, uint64_t base_tsc, uint64_t mult)
{
	/* Upcalls masked: a handler on this vCPU reading the clock would
	 * wait for an even sequence that never comes. */
	unsigned long flags = kg_irq_save();
	__atomic_fetch_add(&clock_sequence, 1u, __ATOMIC_ACQ_REL); /* odd: changing */
	__atomic_store_n(&clock_base_ns, base_ns, __ATOMIC_RELAXED);
	__atomic_store_n(&clock_base_tsc, base_tsc, __ATOMIC_RELAXED);
	__atomic_store_n(&clock_mult, mult, __ATOMIC_RELAXED);
	__atomic_fetch_add(&clock_sequence, 1u, __ATOMIC_RELEASE); /* even: done */
	kg_irq_restore(flags);
}

static void clock_load(uint64_t *base_ns, uint64_t *base_tsc, uint64_t *mult)
{
	uint32_t before, after;
	do {
		while ((before = __atomic_load_n(&clock_sequence, __ATOMIC_ACQUIRE)) & 1u)
			kg_cpu_relax();
		*base_ns = __atomic_load_n(&clock_base_ns, __ATOMIC_RELAXED);
		*base_tsc = __atomic_load_n(&clock_base_tsc, __ATOMIC_RELAXED);
		*mult = __atomic_load_n(&clock_mult, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		after = __atomic_load_n(&clock_sequence, __ATOMIC_RELAXED);
	} while (before != after);
}

static bool cpuid_says_kapsel(void)
{
	uint32_t eax, ebx, ecx, edx;
	kg_cpuid(KAPSEL_CPUID_BASE, &eax, &ebx, &ecx, &edx);
	if (ebx != KAPSEL_CPUID_SIGNATURE_EBX || ecx != KAPSEL_CPUID_SIGNATURE_ECX ||
	    edx != KAPSEL_CPUID_SIGNATURE_EDX || eax < KAPSEL_CPUID_INFO)
		return false;
	kg_cpuid(KAPSEL_CPUID_INFO, &eax, &ebx, &ecx, &edx);
	return (eax >> 16) == KAPSEL_ABI_MAJOR && ecx == KAPSEL_PORT_HYPERCALL;
}

static void calibrate_clock(void)
{
	struct kapsel_time_info info;
	if (kg_hc_time_info(&info) < 0 || info.tsc_khz == 0)
		return;
	/* ns per tick in 32.32 fixed point: 1e6 / khz. */
	clock_store(info.now_ns, info.tsc, (1000000ull << 32) / info.tsc_khz);
}

int kg_platform_init(const struct kapsel_start_info *start_info)
{
	platform_kapsel = false;
	if (!cpuid_says_kapsel()) {
		/* A start info from the PVH shim (guest-pv/runtime/pvh.c) may
		 * still carry the TSC rate: the clock then counts from here. */
		if (start_info && start_info->magic == KAPSEL_START_INFO_MAGIC &&
		    start_info->tsc_khz) {
			clock_store(0, kg_rdtsc(), (1000000ull << 32) / start_info->tsc_khz);
		}
		return -KAPSEL_ENODEV;
	}
	if (!start_info || start_info->magic != KAPSEL_START_INFO_MAGIC ||
	    start_info->abi_major != KAPSEL_ABI_MAJOR)
		return -KAPSEL_ENODEV;
	struct kapsel_abi_info info;
	if (kg_hc_abi_info(&info) < 0 || info.magic != KAPSEL_ABI_INFO_MAGIC ||
	    info.major != KAPSEL_ABI_MAJOR)
		return -KAPSEL_ENODEV;
	platform_start_info = start_info;
	platform_events = (struct kapsel_event_page *)(uintptr_t)start_info->event_page_gpa;
	platform_generation = start_info->generation;
	platform_kapsel = true;
	calibrate_clock();
	return 0;
}

bool kg_platform_is_kapsel(void)
{
	return platform_kapsel;
}

void kg_platform_shutdown(enum kapsel_shutdown_reason reason, int exit_code)
{
	if (platform_kapsel)
		kg_hc_shutdown(reason, exit_code);
	if (reason == KAPSEL_SHUTDOWN_CRASH)
		exit_code = KG_EXIT_CODE_CRASH;
	kg_outl(KG_DEBUG_EXIT_PORT, (uint32_t)exit_code);
	for (;;)
		kg_cpu_relax();
}

const struct kapsel_start_info *kg_platform_start_info(void)
{
	return platform_kapsel ? platform_start_info : 0;
}

struct kapsel_event_page *kg_platform_event_page(void)
{
	return platform_kapsel ? platform_events : 0;
}

/* How many entries of start info's device table to read (0 off Kapsel). */
static uint32_t platform_device_count(void)
{
	if (!platform_kapsel)
		return 0;
	uint32_t count = platform_start_info->device_count;
	return count < KAPSEL_MAX_DEVICES ? count : KAPSEL_MAX_DEVICES;
}

const struct kapsel_device_desc *kg_platform_find_device(enum kapsel_device_type type, unsigned nth)
{
	uint32_t count = platform_device_count();
	for (uint32_t i = 0; i < count; i++) {
		const struct kapsel_device_desc *d = &platform_start_info->devices[i];
		if (d->type == type && nth-- == 0)
			return d;
	}
	return 0;
}

const struct kapsel_device_desc *kg_platform_find_unit(unsigned unit,
						       enum kapsel_device_type either_type,
						       enum kapsel_device_type or_type)
{
	uint32_t count = platform_device_count();
	for (uint32_t i = 0; i < count; i++) {
		const struct kapsel_device_desc *d = &platform_start_info->devices[i];
		if (d->unit != unit || d->type == KAPSEL_DEV_NONE)
			continue;
		if (d->type == either_type || d->type == or_type)
			return d;
	}
	return 0;
}

uint64_t kg_time_now_ns(void)
{
	uint64_t base_ns, base_tsc, mult;
	clock_load(&base_ns, &base_tsc, &mult);
	if (!mult) {
		/* No TSC frequency was offered: ask the hypervisor (one exit). */
		struct kapsel_time_info info;
		if (platform_kapsel && kg_hc_time_info(&info) == 0)
			return info.now_ns;
		return 0;
	}
	uint64_t delta = kg_rdtsc() - base_tsc;
	return base_ns + (uint64_t)(((unsigned __int128)delta * mult) >> 32);
}

uint64_t kg_time_ticks_to_ns(uint64_t ticks)
{
	uint64_t base_ns, base_tsc, mult;
	clock_load(&base_ns, &base_tsc, &mult);
	return (uint64_t)(((unsigned __int128)ticks * mult) >> 32);
}

void kg_time_sleep_ns(uint64_t duration_ns)
{
	uint64_t deadline = kg_time_now_ns() + duration_ns;
	if (deadline < duration_ns)
		deadline = UINT64_MAX; /* "forever" must not wrap into the past */
	if (!platform_kapsel) {
		/* No BLOCK call off Kapsel: spin on the TSC clock, if any. */
		while (__atomic_load_n(&clock_mult, __ATOMIC_RELAXED) &&
		       kg_time_now_ns() < deadline)
			kg_cpu_relax();
		return;
	}
	/* BLOCK also returns early for pending events; keep sleeping. */
	while (kg_time_now_ns() < deadline) {
		if (kg_hc_block(deadline) == 1) {
			/* An event is pending; the caller polls it later.  Spin
			 * with pause instead of blocking again on it. */
			while (kg_time_now_ns() < deadline)
				kg_cpu_relax();
		}
	}
}

bool kg_evtchn_test_and_clear(uint32_t port)
{
	if (!platform_events || port >= KAPSEL_EVTCHN_COUNT)
		return false;
	uint64_t bit = 1ull << (port % 64);
	uint64_t old =
		__atomic_fetch_and(&platform_events->pending[port / 64], ~bit, __ATOMIC_SEQ_CST);
	return (old & bit) != 0;
}

uint64_t kg_platform_generation(void)
{
	return __atomic_load_n(&platform_generation, __ATOMIC_ACQUIRE);
}

void kg_platform_on_new_generation(void (*callback)(uint64_t generation))
{
	__atomic_store_n(&platform_generation_callback, callback, __ATOMIC_RELEASE);
}

bool kg_platform_check_generation(void)
{
	if (!platform_kapsel)
		return false;
	uint64_t now = __atomic_load_n(&platform_start_info->generation, __ATOMIC_ACQUIRE);
	uint64_t seen = __atomic_load_n(&platform_generation, __ATOMIC_ACQUIRE);
	/* One vCPU wins the change and runs the callback; the others see
	 * the generation they would have set and return false. */
	if (now == seen || !__atomic_compare_exchange_n(&platform_generation, &seen, now, false,
							__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return false;
	calibrate_clock(); /* a restored VM's TSC moved */
	void (*callback)(uint64_t) =
		__atomic_load_n(&platform_generation_callback, __ATOMIC_ACQUIRE);
	if (callback)
		callback(now);
	return true;
}

int kg_platform_control_enable(void)
{
	if (!platform_kapsel || platform_start_info->abi_minor < 1 ||
	    !(platform_start_info->features & KAPSEL_FEATURE_CONTROL))
		return -KAPSEL_ENOSYS;
	int64_t rc = kg_hc_evtchn_mask(KAPSEL_EVTCHN_CONTROL, 0);
	return rc < 0 ? (int)rc : 0;
}

enum kapsel_control_request kg_platform_control_request(uint64_t *deadline_ns)
{
	if (!platform_kapsel || platform_start_info->abi_minor < 1)
		return KAPSEL_CONTROL_NONE;
	kg_evtchn_test_and_clear(KAPSEL_EVTCHN_CONTROL);
	/* Read once: the host may write it again at any time. */
	uint32_t request = __atomic_load_n(&platform_events->control_request, __ATOMIC_ACQUIRE);
	if (deadline_ns)
		*deadline_ns =
			__atomic_load_n(&platform_events->control_deadline_ns, __ATOMIC_RELAXED);
	if (request != KAPSEL_CONTROL_POWEROFF && request != KAPSEL_CONTROL_REBOOT)
		return KAPSEL_CONTROL_NONE;
	return (enum kapsel_control_request)request;
}
