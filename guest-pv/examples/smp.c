/* Example guest: every vCPU runs, passes inter-processor events around a ring and updates shared counters; `hostile` checks refused VCPU_UP calls and an event storm. */
#include "kapsel_guest/cpu.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"
#include "kapsel_guest/smp.h"

#include "args.h"

/*
 * Command line: [run] [rounds=N] [iterations=N] [wait_s=N]  or  hostile [storm=N]
 *
 * wait_s (default 10): how long a wait may take before it counts as a hang
 * (a lost event); raise it where several VMs share a slow host.
 *
 * run (the default): vCPU 0 starts every other vCPU (start info
 * vcpu_count).  Each allocates an IPI channel and binds it to itself; a
 * token goes around the ring k -> k + 1 mod n for `rounds` rounds (one
 * token, so no send is merged with another and every vCPU's sent count
 * equals its successor's received count).  Meanwhile each vCPU adds to an
 * atomic total and, under a spinlock, to a plain counter; then it arms its
 * own one-shot timer and waits for it.  vCPU 0 sleeps in BLOCK until all
 * have finished (they wake it with an event on its channel), checks every
 * total, waits until they are down, and starts them all again with a
 * second argument (other rounds and a multiplier).  It prints one summary
 * line per vCPU and run, then "smp ok" and exits 0, or "smp FAILED: why"
 * and exits 1.
 *
 * hostile: VCPU_UP with bad entry points, stacks, vCPU ids and a second
 * start, VCPU_DOWN on vCPU 0 and bad channel bindings each get the
 * documented error; then vCPU 1 sends `storm` IPIs to vCPU 0, which keeps
 * its upcalls masked until the storm is over, must find its channel
 * pending, and must still get a later ping from vCPU 1.  Needs 2 vCPUs.
 */

#define STACK_BYTES 32768u

static uint8_t upcall_stack[16384] __attribute__((aligned(16)));
static uint8_t cpu_stacks[KG_MAX_CPUS][STACK_BYTES] __attribute__((aligned(16)));

static unsigned cpu_count;
static unsigned failures;

/* Print one line and count a failure; any vCPU may call it. */
static void fail(const char *what, uint64_t got, uint64_t want)
{
	__atomic_fetch_add(&failures, 1u, __ATOMIC_RELAXED);
	kg_printf("smp FAILED: %s: %llu, expected %llu\n", what, (unsigned long long)got,
		  (unsigned long long)want);
}

/* ---- run: the ring, the counters, the timers ------------------------------ */

/* What a worker is started with: the second run passes another one. */
struct run {
	unsigned number;
	uint64_t rounds;
	uint64_t iterations;
	uint64_t multiplier;
};

/* One slot per vCPU, written by that vCPU (or its upcall) only. */
struct cpu_stats {
	uint32_t ipi_port;
	uint64_t ipi_sent, ipi_received, timer_fires, adds, run_seen;
	uint64_t wrong_cpu; /* a handler ran on a vCPU its channel is not bound to */
} __attribute__((aligned(64)));
static struct cpu_stats stats[KG_MAX_CPUS];

static const struct run *current_run;
static uint32_t done_port;		     /* bound to vCPU 0: "I finished" */
static uint32_t ready_count, finished_count; /* atomic */
static uint32_t ring_done;		     /* atomic: the last round came back */
static uint64_t rounds_completed;	     /* vCPU 0's upcall only */
static uint64_t atomic_total;		     /* atomic adds from every vCPU */
static uint64_t locked_total;		     /* plain adds under counter_lock */
static struct kg_spinlock counter_lock;
static uint64_t done_wakeups, blocks_waiting; /* vCPU 0 */
static uint64_t wait_ns = 10000000000ull;     /* wait_s: a longer wait is a hang */

static void send_token(unsigned from)
{
	unsigned to = (from + 1u) % cpu_count;
	uint32_t port = __atomic_load_n(&stats[to].ipi_port, __ATOMIC_ACQUIRE);
	stats[from].ipi_sent++;
	int64_t rc = kg_hc_evtchn_send(port);
	if (rc != 0)
		fail("EVTCHN_SEND of the ring token", (uint64_t)rc, 0);
}

static void on_ipi(uint32_t port, struct kapsel_trap_frame *frame)
{
	(void)frame;
	unsigned me = kg_cpu_id();
	struct cpu_stats *mine = &stats[me];
	if (port != mine->ipi_port || kg_evtchn_cpu(port) != me)
		mine->wrong_cpu++;
	mine->ipi_received++;
	if (me == 0) {
		/* vCPU 0 gets the token back once per round. */
		if (++rounds_completed == current_run->rounds) {
			__atomic_store_n(&ring_done, 1u, __ATOMIC_RELEASE);
			return;
		}
	}
	send_token(me);
}

static void on_timer(uint32_t port, struct kapsel_trap_frame *frame)
{
	(void)frame;
	unsigned me = kg_cpu_id();
	if (kg_evtchn_cpu(port) != me)
		stats[me].wrong_cpu++;
	__atomic_fetch_add(&stats[me].timer_fires, 1u, __ATOMIC_RELAXED);
}

static void on_done(uint32_t port, struct kapsel_trap_frame *frame)
{
	(void)frame;
	if (kg_cpu_id() != 0 || kg_evtchn_cpu(port) != 0)
		stats[kg_cpu_id()].wrong_cpu++;
	done_wakeups++;
}

/* Sleep in BLOCK until *flag is nonzero or ten seconds pass. */
static bool block_until(const uint32_t *flag, uint32_t want)
{
	uint64_t give_up = kg_time_now_ns() + wait_ns;
	while (__atomic_load_n(flag, __ATOMIC_ACQUIRE) < want) {
		uint64_t now = kg_time_now_ns();
		if (now > give_up)
			return false;
		kg_hc_block(now + 5000000ull);
	}
	return true;
}

/* What every vCPU does in a run, vCPU 0 included (from main). */
static void worker_body(const struct run *run)
{
	unsigned me = kg_cpu_id();
	struct cpu_stats *mine = &stats[me];
	mine->run_seen = run->number;

	int64_t port = kg_hc_evtchn_alloc();
	kg_assert(port >= 0);
	kg_assert(kg_evtchn_bind_cpu((uint32_t)port, me) == 0);
	kg_evtchn_set_handler((uint32_t)port, on_ipi);
	__atomic_store_n(&mine->ipi_port, (uint32_t)port, __ATOMIC_RELEASE);
	kg_assert(kg_timer_init(on_timer) == 0);
	__atomic_fetch_add(&ready_count, 1u, __ATOMIC_ACQ_REL);
	kg_irq_enable();
	if (me == 0) {
		/* Every channel must exist before the token starts. */
		if (!block_until(&ready_count, cpu_count))
			fail("vCPUs ready within wait_s",
			     __atomic_load_n(&ready_count, __ATOMIC_ACQUIRE), cpu_count);
		else
			send_token(0);
	}

	/* The counters, with upcalls (ring tokens) arriving in between. */
	for (uint64_t i = 0; i < run->iterations; i++) {
		__atomic_fetch_add(&atomic_total, (me + 1u) * run->multiplier, __ATOMIC_RELAXED);
		if (i & 1u) {
			kg_spin_lock(&counter_lock);
			locked_total++;
			kg_spin_unlock(&counter_lock);
		} else {
			unsigned long flags = kg_spin_lock_irqsave(&counter_lock);
			uint64_t seen = locked_total; /* a torn update would lose adds */
			kg_barrier();
			locked_total = seen + 1;
			kg_spin_unlock_irqrestore(&counter_lock, flags);
		}
		mine->adds++;
	}
	if (!block_until(&ring_done, 1))
		fail("ring not done within wait_s on vCPU", me, 0);

	/* This vCPU's own timer, into this vCPU's upcall. */
	uint32_t fired = 0;
	kg_assert(kg_timer_set_oneshot(kg_time_now_ns() + 1000000ull) == 0);
	uint64_t give_up = kg_time_now_ns() + wait_ns;
	while (!(fired = (uint32_t)__atomic_load_n(&mine->timer_fires, __ATOMIC_ACQUIRE)) &&
	       kg_time_now_ns() < give_up)
		kg_hc_block(kg_time_now_ns() + 5000000ull);
	if (!fired)
		fail("no timer expiry on vCPU", me, 1);

	kg_irq_disable();
	kg_evtchn_set_handler((uint32_t)port, 0);
	kg_assert(kg_hc_evtchn_close((uint32_t)port) == 0);
}

static void worker(void *arg)
{
	const struct run *run = arg;
	kg_printf("smp: vCPU %u started for run %u\n", kg_cpu_id(), run->number);
	worker_body(run);
	__atomic_fetch_add(&finished_count, 1u, __ATOMIC_ACQ_REL);
	kg_hc_evtchn_send(done_port); /* wakes vCPU 0 from BLOCK */
				      /* Returning takes this vCPU down (kg_cpu_start). */
}

static bool wait_all_down(void)
{
	uint64_t give_up = kg_time_now_ns() + wait_ns;
	for (unsigned k = 1; k < cpu_count; k++) {
		while (kg_cpu_online(k)) {
			if (kg_time_now_ns() > give_up) {
				fail("vCPU still up wait_s after it finished", k, 0);
				return false;
			}
			kg_time_sleep_ns(1000000ull);
		}
		if (kg_hc_vcpu_status(k) != 0)
			fail("VCPU_STATUS of a vCPU that went down", (uint64_t)kg_hc_vcpu_status(k),
			     0);
	}
	return true;
}

static void reset_run(const struct run *run)
{
	for (unsigned k = 0; k < cpu_count; k++) {
		struct cpu_stats *s = &stats[k];
		s->ipi_sent = s->ipi_received = s->timer_fires = s->adds = s->run_seen = 0;
		s->wrong_cpu = 0;
	}
	current_run = run;
	ready_count = finished_count = ring_done = 0;
	rounds_completed = 0;
	atomic_total = locked_total = 0;
	done_wakeups = blocks_waiting = 0;
}

/* Check one run's totals and print a line per vCPU. */
static void check_run(const struct run *run)
{
	uint64_t want_atomic = 0;
	for (unsigned k = 0; k < cpu_count; k++) {
		const struct cpu_stats *s = &stats[k];
		const struct cpu_stats *next = &stats[(k + 1u) % cpu_count];
		kg_printf("smp: run %u vCPU %u: ipi sent %llu received %llu, timer %llu, adds %llu, "
			  "wrong-cpu %llu\n",
			  run->number, k, (unsigned long long)s->ipi_sent,
			  (unsigned long long)s->ipi_received, (unsigned long long)s->timer_fires,
			  (unsigned long long)s->adds, (unsigned long long)s->wrong_cpu);
		if (s->ipi_sent != run->rounds)
			fail("IPIs sent by vCPU", s->ipi_sent, run->rounds);
		if (s->ipi_sent != next->ipi_received)
			fail("IPIs sent by a vCPU against received by the next one", s->ipi_sent,
			     next->ipi_received);
		if (s->timer_fires < 1)
			fail("timer expiries on vCPU", k, 1);
		if (s->adds != run->iterations)
			fail("counter adds on vCPU", s->adds, run->iterations);
		if (s->wrong_cpu)
			fail("handlers run on a vCPU the channel is not bound to", s->wrong_cpu, 0);
		if (s->run_seen != run->number)
			fail("the run a vCPU was started for", s->run_seen, run->number);
		want_atomic += (k + 1u) * run->multiplier * run->iterations;
	}
	uint64_t want_locked = (uint64_t)cpu_count * run->iterations;
	kg_printf("smp: run %u totals: atomic %llu (want %llu), locked %llu (want %llu), "
		  "%llu rounds, vCPU 0 blocked %llu times, %llu done wake-ups\n",
		  run->number, (unsigned long long)atomic_total, (unsigned long long)want_atomic,
		  (unsigned long long)locked_total, (unsigned long long)want_locked,
		  (unsigned long long)rounds_completed, (unsigned long long)blocks_waiting,
		  (unsigned long long)done_wakeups);
	if (atomic_total != want_atomic)
		fail("atomic total", atomic_total, want_atomic);
	if (locked_total != want_locked)
		fail("spinlock-protected total", locked_total, want_locked);
	if (rounds_completed != run->rounds)
		fail("ring rounds", rounds_completed, run->rounds);
}

static void one_run(const struct run *run)
{
	reset_run(run);
	for (unsigned k = 1; k < cpu_count; k++) {
		int rc = kg_cpu_start(k, worker, (void *)run, cpu_stacks[k], STACK_BYTES);
		if (rc != 0)
			fail("kg_cpu_start of a vCPU returned", (uint64_t)(int64_t)rc, 0);
	}
	worker_body(run);
	/* Sleep (BLOCK) until every other vCPU says it finished: each sends
	 * an event on done_port, bound to vCPU 0. */
	kg_irq_enable();
	uint64_t give_up = kg_time_now_ns() + 30000000000ull;
	while (__atomic_load_n(&finished_count, __ATOMIC_ACQUIRE) < cpu_count - 1u) {
		uint64_t now = kg_time_now_ns();
		if (now > give_up) {
			fail("vCPUs finished after 30 s", finished_count, cpu_count - 1u);
			break;
		}
		blocks_waiting++;
		kg_hc_block(now + 1000000000ull);
	}
	kg_irq_disable();
	wait_all_down();
	check_run(run);
}

static int run_mode(void)
{
	static const struct run first_default = { 1, 200, 20000, 1 };
	struct run first = first_default;
	first.rounds = args_number("rounds", first.rounds);
	first.iterations = args_number("iterations", first.iterations);
	wait_ns = args_number("wait_s", 10) * 1000000000ull;
	if (first.rounds == 0 || first.iterations == 0)
		kg_panic("rounds and iterations must be at least 1");
	/* The second run: other rounds and another multiplier, so a vCPU
	 * that ran the first argument again shows in the totals. */
	struct run second = { 2, first.rounds + 7, first.iterations / 2 + 1, 3 };

	int64_t port = kg_hc_evtchn_alloc();
	kg_assert(port >= 0);
	done_port = (uint32_t)port;
	kg_evtchn_set_handler(done_port, on_done);

	one_run(&first);
	if (cpu_count > 1)
		kg_printf("smp: all %u other vCPUs down; starting them again for run 2\n",
			  cpu_count - 1u);
	else
		kg_printf("smp: one vCPU: run 2 on vCPU 0 alone\n");
	one_run(&second);
	if (failures) {
		kg_printf("smp FAILED: %u checks failed\n", failures);
		return 1;
	}
	kg_printf("smp ok: %u vCPUs, %llu + %llu rounds, 2 runs\n", cpu_count,
		  (unsigned long long)first.rounds, (unsigned long long)second.rounds);
	return 0;
}

/* ---- hostile --------------------------------------------------------------- */

static uint32_t storm_port, ping_port_cpu1, pong_port_cpu0;
static uint32_t storm_go, storm_sent_all, pong_seen; /* atomic */
static uint64_t storm_sends, storm_send_errors;
static uint64_t storm_upcalls, pong_upcalls; /* vCPU 0's upcall */

static void on_storm(uint32_t port, struct kapsel_trap_frame *frame)
{
	(void)port;
	(void)frame;
	storm_upcalls++;
}

static void on_pong(uint32_t port, struct kapsel_trap_frame *frame)
{
	(void)port;
	(void)frame;
	pong_upcalls++;
	__atomic_store_n(&pong_seen, 1u, __ATOMIC_RELEASE);
}

/* vCPU 1 answers a ping with a pong. */
static void on_ping(uint32_t port, struct kapsel_trap_frame *frame)
{
	(void)port;
	(void)frame;
	kg_hc_evtchn_send(pong_port_cpu0);
}

static void stormer(void *arg)
{
	uint64_t count = *(const uint64_t *)arg;
	int64_t port = kg_hc_evtchn_alloc();
	kg_assert(port >= 0);
	kg_assert(kg_evtchn_bind_cpu((uint32_t)port, 1) == 0);
	kg_evtchn_set_handler((uint32_t)port, on_ping);
	__atomic_store_n(&ping_port_cpu1, (uint32_t)port, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&storm_go, __ATOMIC_ACQUIRE))
		kg_cpu_relax();
	for (uint64_t i = 0; i < count; i++) {
		if (kg_hc_evtchn_send(storm_port) != 0)
			storm_send_errors++;
		storm_sends++;
	}
	__atomic_store_n(&storm_sent_all, 1u, __ATOMIC_RELEASE);
	/* Stay up for the ping: upcalls on, sleeping in BLOCK. */
	kg_irq_enable();
	uint64_t give_up = kg_time_now_ns() + 20000000000ull;
	while (!__atomic_load_n(&pong_seen, __ATOMIC_ACQUIRE) && kg_time_now_ns() < give_up)
		kg_hc_block(kg_time_now_ns() + 5000000ull);
	kg_irq_disable();
}

/* One refused call: print what it got and count a mismatch. */
static void expect_rc(const char *what, int64_t got, int64_t want)
{
	kg_printf("hostile: %s -> %lld\n", what, (long long)got);
	if (got != want)
		fail(what, (uint64_t)got, (uint64_t)want);
}

static int hostile_mode(void)
{
	const struct kapsel_start_info *si = kg_platform_start_info();
	if (cpu_count < 2) {
		kg_printf("smp FAILED: hostile needs at least 2 vCPUs, the VM has %u\n", cpu_count);
		return 1;
	}
	uint64_t storm_count = args_number("storm", 100000);
	uint64_t entry = (uint64_t)(uintptr_t)kg_cpu_trampoline;
	uint64_t top = (uint64_t)(uintptr_t)(cpu_stacks[1] + STACK_BYTES);
	uint64_t ram = si->ram_bytes;

	/* Bad entry points: hypervisor pages, past RAM, non-canonical. */
	expect_rc("VCPU_UP entry in the GDT page 0x1000", kg_hc_vcpu_up(1, 0x1000, top, 0),
		  -KAPSEL_EFAULT);
	expect_rc("VCPU_UP entry in the CPL0 stubs 0x6000", kg_hc_vcpu_up(1, 0x6000, top, 0),
		  -KAPSEL_EFAULT);
	expect_rc("VCPU_UP entry in hypervisor page tables 0x10000",
		  kg_hc_vcpu_up(1, 0x10000, top, 0), -KAPSEL_EFAULT);
	expect_rc("VCPU_UP entry past the end of RAM", kg_hc_vcpu_up(1, ram + 0x1000, top, 0),
		  -KAPSEL_EFAULT);
	expect_rc("VCPU_UP entry at 2^63", kg_hc_vcpu_up(1, 1ull << 63, top, 0), -KAPSEL_EFAULT);
	/* Bad stacks. */
	expect_rc("VCPU_UP stack past the end of RAM", kg_hc_vcpu_up(1, entry, ram + 0x10000, 0),
		  -KAPSEL_EFAULT);
	expect_rc("VCPU_UP stack in hypervisor page tables", kg_hc_vcpu_up(1, entry, 0x14000, 0),
		  -KAPSEL_EFAULT);
	expect_rc("VCPU_UP stack top 0", kg_hc_vcpu_up(1, entry, 0, 0), -KAPSEL_EFAULT);
	expect_rc("VCPU_UP misaligned stack", kg_hc_vcpu_up(1, entry, top - 8, 0), -KAPSEL_EINVAL);
	/* Bad vCPU ids. */
	expect_rc("VCPU_UP vCPU id = vcpu_count", kg_hc_vcpu_up(cpu_count, entry, top, 0),
		  -KAPSEL_EINVAL);
	expect_rc("VCPU_UP vCPU id 2^32-1", kg_hc_vcpu_up(UINT32_MAX, entry, top, 0),
		  -KAPSEL_EINVAL);
	/* vCPU 1 in the low 32 bits: the id is the whole register. */
	expect_rc("VCPU_UP vCPU id 2^32+1",
		  kg_hypercall(KAPSEL_HC_VCPU_UP, (1ull << 32) | 1u, entry, top, 0, 0),
		  -KAPSEL_EINVAL);
	expect_rc("VCPU_UP of vCPU 0 (running)", kg_hc_vcpu_up(0, entry, top, 0), -KAPSEL_EBUSY);
	expect_rc("VCPU_STATUS vCPU id = vcpu_count", kg_hc_vcpu_status(cpu_count), -KAPSEL_EINVAL);
	expect_rc("VCPU_STATUS of vCPU 1 before any start", kg_hc_vcpu_status(1), 0);
	expect_rc("VCPU_DOWN on vCPU 0", kg_hc_vcpu_down(), -KAPSEL_EINVAL);
	expect_rc("EVTCHN_BIND_VCPU to vCPU vcpu_count",
		  kg_hc_evtchn_bind_vcpu(KAPSEL_EVTCHN_CONTROL, cpu_count), -KAPSEL_EINVAL);
	expect_rc("EVTCHN_BIND_VCPU of port 256", kg_hc_evtchn_bind_vcpu(KAPSEL_EVTCHN_COUNT, 1),
		  -KAPSEL_EINVAL);
	/* Nothing above started vCPU 1. */
	expect_rc("VCPU_STATUS of vCPU 1 after the refusals", kg_hc_vcpu_status(1), 0);

	/* vCPU 0's channels and upcalls, then vCPU 1, then a second start. */
	kg_assert(kg_upcall_register(upcall_stack, sizeof(upcall_stack)) == 0);
	int64_t port = kg_hc_evtchn_alloc();
	kg_assert(port >= 0);
	storm_port = (uint32_t)port;
	kg_evtchn_set_handler(storm_port, on_storm);
	port = kg_hc_evtchn_alloc();
	kg_assert(port >= 0);
	pong_port_cpu0 = (uint32_t)port;
	kg_evtchn_set_handler(pong_port_cpu0, on_pong);
	expect_rc("kg_cpu_start of vCPU 1",
		  kg_cpu_start(1, stormer, &storm_count, cpu_stacks[1], STACK_BYTES), 0);
	expect_rc("VCPU_UP of vCPU 1 again", kg_hc_vcpu_up(1, entry, top, 0), -KAPSEL_EBUSY);
	expect_rc("kg_cpu_start of vCPU 1 again",
		  kg_cpu_start(1, stormer, &storm_count, cpu_stacks[1], STACK_BYTES),
		  -KAPSEL_EBUSY);
	expect_rc("VCPU_STATUS of vCPU 1 once started", kg_hc_vcpu_status(1), 1);

	/* The storm: vCPU 0 keeps its upcalls masked and makes no
	 * hypercall while vCPU 1 sends. */
	uint64_t give_up = kg_time_now_ns() + wait_ns;
	while (!__atomic_load_n(&ping_port_cpu1, __ATOMIC_ACQUIRE) && kg_time_now_ns() < give_up)
		kg_cpu_relax();
	kg_printf("hostile: storm of %llu IPIs from vCPU 1 to vCPU 0, upcalls masked\n",
		  (unsigned long long)storm_count);
	kg_irq_disable();
	__atomic_store_n(&storm_go, 1u, __ATOMIC_RELEASE);
	give_up = kg_time_now_ns() + 120000000000ull;
	while (!__atomic_load_n(&storm_sent_all, __ATOMIC_ACQUIRE) && kg_time_now_ns() < give_up)
		kg_cpu_relax();
	if (!__atomic_load_n(&storm_sent_all, __ATOMIC_ACQUIRE))
		fail("storm still going after 120 s, sends so far", storm_sends, storm_count);
	uint64_t upcalls_while_masked = storm_upcalls;
	struct kapsel_event_page *events = kg_platform_event_page();
	bool pending = (__atomic_load_n(&events->pending[storm_port / 64], __ATOMIC_SEQ_CST) >>
			(storm_port % 64)) &
		       1u;
	kg_irq_enable(); /* the merged events arrive now, as one upcall */
	kg_printf("hostile: storm over: %llu sends (%llu refused), channel pending %d, %llu upcalls "
		  "while masked, %llu after unmasking\n",
		  (unsigned long long)storm_sends, (unsigned long long)storm_send_errors,
		  pending ? 1 : 0, (unsigned long long)upcalls_while_masked,
		  (unsigned long long)storm_upcalls);
	if (storm_sends != storm_count || storm_send_errors)
		fail("storm sends accepted", storm_sends - storm_send_errors, storm_count);
	if (upcalls_while_masked)
		fail("upcalls while masked", upcalls_while_masked, 0);
	if (!pending)
		fail("storm channel pending after the storm", 0, 1);
	if (storm_upcalls < 1)
		fail("storm upcalls after unmasking", storm_upcalls, 1);

	/* Still served: a ping to vCPU 1 comes back as a pong. */
	kg_hc_evtchn_send(ping_port_cpu1);
	if (!block_until(&pong_seen, 1))
		fail("pong from vCPU 1 after the storm", 0, 1);
	kg_irq_disable();
	give_up = kg_time_now_ns() + wait_ns;
	while (kg_cpu_online(1) && kg_time_now_ns() < give_up)
		kg_time_sleep_ns(1000000ull);
	expect_rc("VCPU_STATUS of vCPU 1 after it returned", kg_hc_vcpu_status(1), 0);
	if (failures) {
		kg_printf("smp FAILED: %u hostile checks failed\n", failures);
		return 1;
	}
	kg_printf("smp hostile ok: every bad call refused, storm contained, pong after it\n");
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = args_init(argc, argv, "run");
	kg_assert(kg_platform_is_kapsel());
	if (!kg_cpu_available()) {
		kg_printf("smp FAILED: no PV CPU in this hypervisor\n");
		return 2;
	}
	cpu_count = kg_cpu_count();
	kg_printf("smp: %u vCPUs (SMP %s), this is vCPU %u\n", cpu_count,
		  kg_smp_available() ? "offered" : "not offered", kg_cpu_id());
	if (strcmp(mode, "hostile") == 0)
		return hostile_mode();
	if (strcmp(mode, "run") != 0) {
		kg_printf("smp FAILED: unknown mode %s (run or hostile)\n", mode);
		return 2;
	}
	/* Every vCPU takes upcalls: vCPU 0 registers first, so the library
	 * registers one for each vCPU it starts. */
	kg_assert(kg_upcall_register(upcall_stack, sizeof(upcall_stack)) == 0);
	return run_mode();
}
