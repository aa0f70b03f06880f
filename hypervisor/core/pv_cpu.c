/* PV CPU: guest trap handlers, upcalls (virtual interrupts) and per-vCPU timers, delivered by the VMM. */
#define _GNU_SOURCE
#include "core/pv_cpu.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "core/crash_report.h"
#include "core/log.h"
#include "core/pv_mmu.h"
#include "core/vm.h"
#include "core/x86_boot.h"

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

/* rflags bits a guest may set through IRET: CF PF AF ZF SF TF DF OF AC. */
#define RFLAGS_GUEST_BITS 0x40dd5ull
/* rflags bits the host keeps: IF, IOPL (both 0 for Kapsel guests today). */
#define RFLAGS_HOST_BITS 0x3200ull
#define RFLAGS_FIXED 0x2ull
#define CANONICAL_LIMIT (1ull << 47)

/* ---- Pure helpers -------------------------------------------------------- */

static bool canonical(uint64_t address)
{
	return address < CANONICAL_LIMIT || address >= ~(CANONICAL_LIMIT - 1);
}

int pv_cpu_check_stack(const struct guest_memory *mem, uint64_t stack_top, uint64_t stack_bytes)
{
	if (stack_bytes < KAPSEL_TRAP_STACK_MIN_BYTES ||
	    stack_bytes > KAPSEL_TRAP_STACK_MAX_BYTES || (stack_top & 15))
		return -KAPSEL_EINVAL;
	if (stack_top < stack_bytes)
		return -KAPSEL_EFAULT; /* would wrap below 0 */
	if (!guest_memory_translate_guest(mem, stack_top - stack_bytes, stack_bytes))
		return -KAPSEL_EFAULT;
	return 0;
}

int pv_cpu_check_handler(const struct guest_memory *mem, const struct pv_handler *handler)
{
	int err = pv_cpu_check_stack(mem, handler->stack_top, handler->stack_bytes);
	if (err == -KAPSEL_EINVAL)
		return err;
	/* The entry's first byte must be guest RAM; the CPU faults (and the
	 * handler chain ends in a crash report) if the code runs off it. */
	if (!guest_memory_translate_guest(mem, handler->entry, 1))
		return -KAPSEL_EFAULT;
	return err;
}

int pv_cpu_frame_place(const struct pv_handler *handler, uint64_t interrupted_rsp,
		       uint64_t *frame_gpa)
{
	uint64_t bottom = handler->stack_top - handler->stack_bytes;
	uint64_t top = handler->stack_top;
	/* Already on this stack (a fault in the handler, an upcall in a trap
	 * handler sharing the stack): go below what is in use. */
	if (interrupted_rsp > bottom && interrupted_rsp <= handler->stack_top) {
		if (interrupted_rsp - bottom < KAPSEL_TRAP_NESTED_GAP_BYTES)
			return -KAPSEL_ENOSPC;
		top = interrupted_rsp - KAPSEL_TRAP_NESTED_GAP_BYTES;
	}
	top &= ~15ull;
	if (top - bottom < sizeof(struct kapsel_trap_frame) || top < bottom)
		return -KAPSEL_ENOSPC;
	*frame_gpa = top - sizeof(struct kapsel_trap_frame);
	return 0;
}

void pv_cpu_frame_from_regs(struct kapsel_trap_frame *frame, const struct kvm_regs *regs)
{
	frame->rip = regs->rip;
	frame->rsp = regs->rsp;
	frame->rflags = regs->rflags;
	frame->cs = X86_SEL_USER_CS;
	frame->ss = X86_SEL_USER_DS;
	frame->rax = regs->rax;
	frame->rbx = regs->rbx;
	frame->rcx = regs->rcx;
	frame->rdx = regs->rdx;
	frame->rsi = regs->rsi;
	frame->rdi = regs->rdi;
	frame->rbp = regs->rbp;
	frame->r8 = regs->r8;
	frame->r9 = regs->r9;
	frame->r10 = regs->r10;
	frame->r11 = regs->r11;
	frame->r12 = regs->r12;
	frame->r13 = regs->r13;
	frame->r14 = regs->r14;
	frame->r15 = regs->r15;
}

int pv_cpu_regs_from_frame(struct kvm_regs *regs, const struct kapsel_trap_frame *frame,
			   uint64_t current_rflags)
{
	if (!canonical(frame->rip) || !canonical(frame->rsp))
		return -KAPSEL_EINVAL;
	regs->rip = frame->rip;
	regs->rsp = frame->rsp;
	regs->rflags = (current_rflags & RFLAGS_HOST_BITS) | (frame->rflags & RFLAGS_GUEST_BITS) |
		       RFLAGS_FIXED;
	regs->rax = frame->rax;
	regs->rbx = frame->rbx;
	regs->rcx = frame->rcx;
	regs->rdx = frame->rdx;
	regs->rsi = frame->rsi;
	regs->rdi = frame->rdi;
	regs->rbp = frame->rbp;
	regs->r8 = frame->r8;
	regs->r9 = frame->r9;
	regs->r10 = frame->r10;
	regs->r11 = frame->r11;
	regs->r12 = frame->r12;
	regs->r13 = frame->r13;
	regs->r14 = frame->r14;
	regs->r15 = frame->r15;
	return 0;
}

uint64_t pv_cpu_timer_next(uint64_t deadline_ns, uint64_t period_ns, uint64_t now_ns,
			   uint64_t *skipped)
{
	uint64_t missed = 0;
	if (now_ns >= deadline_ns)
		missed = (now_ns - deadline_ns) / period_ns;
	if (skipped)
		*skipped = missed;
	/* missed + 1 periods after deadline: the first one after now. */
	uint64_t step =
		(missed + 1) > UINT64_MAX / period_ns ? UINT64_MAX : (missed + 1) * period_ns;
	if (step > KAPSEL_TIMER_STOP - 1 - deadline_ns)
		return KAPSEL_TIMER_STOP - 1;
	return deadline_ns + step;
}

/* The guest registered something: its crash reports show the chain. */
static bool pv_cpu_in_use(const struct pv_cpu_vcpu *c)
{
	if (c->callback.entry)
		return true;
	for (unsigned v = 0; v < KAPSEL_TRAP_VECTOR_COUNT; v++)
		if (c->traps[v].entry)
			return true;
	return false;
}

/* ---- Shared per-vCPU flags ----------------------------------------------- */

static struct kapsel_vcpu_info *vcpu_info(const struct kapsel_vm *vm, unsigned vcpu)
{
	return (struct kapsel_vcpu_info *)((uint8_t *)vm->events + KAPSEL_VCPU_INFO_OFFSET +
					   vcpu * sizeof(struct kapsel_vcpu_info));
}

static const char *vector_name(uint64_t vector)
{
	if (vector == KAPSEL_TRAP_VECTOR_UPCALL)
		return "upcall";
	return x86_exception_name(vector < 256 ? (unsigned)vector : 256u);
}

/* ---- Timers -------------------------------------------------------------- */

static int timer_signal(void)
{
	return SIGRTMIN + 1;
}

/* Async-signal-safe: atomics and write(2) only. */
static void timer_signal_handler(int signo, siginfo_t *info, void *context)
{
	(void)signo;
	(void)context;
	struct kapsel_vcpu *vcpu = info->si_value.sival_ptr;
	if (!vcpu || info->si_code != SI_TIMER)
		return;
	__atomic_store_n(&vcpu->pv_cpu.timer_fired, 1, __ATOMIC_SEQ_CST);
	/* The signal itself ends a KVM_RUN in progress; immediate_exit
	 * catches one that is about to start, wake_fd a BLOCK sleep. */
	if (vcpu->run)
		__atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	vcpu_wake(vcpu);
}

static int timer_create_for_vcpu(struct kapsel_vcpu *vcpu)
{
	struct pv_cpu_vcpu *c = &vcpu->pv_cpu;
	if (c->timer_created)
		return 0;
	struct sigevent event;
	memset(&event, 0, sizeof(event));
	event.sigev_notify = SIGEV_THREAD_ID;
	event.sigev_signo = timer_signal();
	event.sigev_value.sival_ptr = vcpu;
	event.sigev_notify_thread_id = vcpu->tid ? vcpu->tid : (int)gettid();
	if (timer_create(CLOCK_MONOTONIC, &event, &c->timer_id) < 0) {
		int err = -errno;
		kapsel_error("cannot create the vCPU timer (timer_create): %s", strerror(errno));
		return err;
	}
	c->timer_created = true;
	return 0;
}

/* Arm the host timer for the current deadline (or disarm it). */
static int timer_arm(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	struct pv_cpu_vcpu *c = &vcpu->pv_cpu;
	struct itimerspec spec;
	memset(&spec, 0, sizeof(spec));
	if (c->timer_deadline_ns != KAPSEL_TIMER_STOP) {
		/* Absolute CLOCK_MONOTONIC time; a deadline in the past fires
		 * at once.  Far deadlines are capped at ~146 years. */
		uint64_t absolute = vm->boot_monotonic_ns;
		uint64_t cap = (1ull << 62) - absolute;
		absolute += c->timer_deadline_ns < cap ? c->timer_deadline_ns : cap;
		if (absolute == 0)
			absolute = 1; /* it_value 0 would disarm */
		spec.it_value.tv_sec = (time_t)(absolute / 1000000000ull);
		spec.it_value.tv_nsec = (long)(absolute % 1000000000ull);
	}
	if (!c->timer_created) {
		if (c->timer_deadline_ns == KAPSEL_TIMER_STOP)
			return 0;
		int err = timer_create_for_vcpu(vcpu);
		if (err)
			return err;
	}
	if (timer_settime(c->timer_id, TIMER_ABSTIME, &spec, NULL) < 0) {
		int err = -errno;
		kapsel_warn("cannot arm the vCPU timer (timer_settime): %s", strerror(errno));
		return err;
	}
	struct kapsel_vcpu_info *info = vcpu_info(vm, vcpu->id);
	__atomic_store_n(&info->timer_deadline_ns, c->timer_deadline_ns, __ATOMIC_RELAXED);
	__atomic_store_n(&info->timer_period_ns, c->timer_period_ns, __ATOMIC_RELAXED);
	return 0;
}

void pv_cpu_poll_timers(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	struct pv_cpu_vcpu *c = &vcpu->pv_cpu;
	if (!__atomic_exchange_n(&c->timer_fired, 0, __ATOMIC_SEQ_CST))
		return;
	if (c->timer_deadline_ns == KAPSEL_TIMER_STOP)
		return;
	uint64_t now = vm_clock_ns(vm);
	if (now < c->timer_deadline_ns) {
		timer_arm(vcpu); /* early (the clock base moved): wait on */
		return;
	}
	c->timer_fires++;
	if (c->timer_period_ns) {
		uint64_t skipped = 0;
		c->timer_deadline_ns =
			pv_cpu_timer_next(c->timer_deadline_ns, c->timer_period_ns, now, &skipped);
		c->timer_overruns += skipped;
	} else {
		c->timer_deadline_ns = KAPSEL_TIMER_STOP;
	}
	timer_arm(vcpu);
	uint32_t port = c->virq_port[KAPSEL_VIRQ_TIMER];
	if (port < KAPSEL_EVTCHN_COUNT && vm->evtchn[port].allocated)
		vm_evtchn_notify(vm, port);
}

int pv_cpu_start(struct kapsel_vcpu *vcpu)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = timer_signal_handler;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(timer_signal(), &sa, NULL) < 0)
		return -errno;
	sigset_t unblock;
	sigemptyset(&unblock);
	sigaddset(&unblock, timer_signal());
	pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
	/* A timer restored from a saved state: on this thread, at its deadline. */
	if (vcpu->pv_cpu.timer_deadline_ns != KAPSEL_TIMER_STOP)
		return timer_arm(vcpu);
	return 0;
}

/* ---- Lifecycle ----------------------------------------------------------- */

void pv_cpu_vcpu_reset(struct kapsel_vcpu *vcpu)
{
	struct pv_cpu_vcpu *c = &vcpu->pv_cpu;
	memset(c->traps, 0, sizeof(c->traps));
	__atomic_store_n(&c->callback.entry, 0, __ATOMIC_RELEASE);
	memset(&c->callback, 0, sizeof(c->callback));
	c->active_vectors = 0;
	for (unsigned v = 0; v < KAPSEL_VIRQ_COUNT; v++)
		c->virq_port[v] = UINT32_MAX;
	pv_cpu_timer_stop(vcpu);
	struct kapsel_vcpu_info *info = vcpu_info(vcpu->vm, vcpu->id);
	memset(info, 0, sizeof(*info));
	info->upcall_mask = 1; /* interrupts off at boot */
	info->timer_deadline_ns = KAPSEL_TIMER_STOP;
}

void pv_cpu_reset(struct kapsel_vm *vm)
{
	for (unsigned v = 0; v < KAPSEL_MAX_VCPUS; v++)
		pv_cpu_vcpu_reset(&vm->vcpus[v]);
}

void pv_cpu_destroy(struct kapsel_vm *vm)
{
	bool any = false;
	for (unsigned i = 0; i < vm->vcpu_count; i++) {
		struct pv_cpu_vcpu *c = &vm->vcpus[i].pv_cpu;
		if (!c->timer_created)
			continue;
		timer_delete(c->timer_id);
		c->timer_created = false;
		any = true;
	}
	if (!any)
		return;
	/* A signal of the deleted timer may still be queued; its handler must
	 * not reach into the VM being released.  Ignoring the signal discards
	 * it (pv_cpu_start installs the handler again for the next VM). */
	struct sigaction ignore;
	memset(&ignore, 0, sizeof(ignore));
	ignore.sa_handler = SIG_IGN;
	sigaction(timer_signal(), &ignore, NULL);
}

/* ---- Delivery ------------------------------------------------------------ */

/* Write frame at frame_gpa through the checked translator. */
static bool frame_write(struct kapsel_vm *vm, uint64_t frame_gpa,
			const struct kapsel_trap_frame *frame)
{
	void *target = guest_memory_translate_guest(&vm->mem, frame_gpa, sizeof(*frame));
	if (!target)
		return false;
	memcpy(target, frame, sizeof(*frame));
	guest_memory_mark_written(&vm->mem, frame_gpa, sizeof(*frame));
	return true;
}

/* Point the vCPU at handler with rsp = rdi = the frame (CPL3, flags clean). */
static void enter_handler(struct kapsel_vcpu *vcpu, const struct pv_handler *handler,
			  uint64_t frame_gpa, uint64_t host_rflags)
{
	struct kvm_regs *regs = &vcpu->run->s.regs.regs;
	regs->rip = handler->entry;
	regs->rsp = frame_gpa;
	regs->rdi = frame_gpa;
	regs->rflags = (host_rflags & RFLAGS_HOST_BITS) | RFLAGS_FIXED;
	vcpu->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
}

/*
 * Where a delivery's frame goes: on the kernel stack's top for an entry
 * from user mode (PV MMU: a process has no frames of its own), else on the
 * handler's stack (below the interrupted rsp when already on it).
 */
static int place_frame(const struct kapsel_vcpu *vcpu, const struct pv_handler *handler,
		       uint64_t interrupted_rsp, uint64_t *frame_gpa)
{
	const struct kapsel_vm *vm = vcpu->vm;
	if (vcpu->pv_mmu.user_mode)
		return pv_cpu_frame_place(&vcpu->pv_mmu.kernel_stack, 0, frame_gpa);
	if (pv_cpu_check_handler(&vm->mem, handler) < 0)
		return -KAPSEL_EFAULT;
	return pv_cpu_frame_place(handler, interrupted_rsp, frame_gpa);
}

/* After a delivery: kernel mode from now on (user mode only ever ends by
 * an entry), upcalls masked. */
static void entered_kernel(struct kapsel_vcpu *vcpu)
{
	__atomic_store_n(&vcpu_info(vcpu->vm, vcpu->id)->upcall_mask, 1, __ATOMIC_SEQ_CST);
	pv_mmu_set_user_mode(vcpu, false);
}

bool pv_cpu_deliver_trap(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	struct pv_cpu_vcpu *c = &vcpu->pv_cpu;
	struct kvm_regs *regs = &vcpu->run->s.regs.regs;
	struct x86_fault_frame stub;
	bool from_user = vcpu->pv_mmu.user_mode;

	/* The stub's frame sits at a fixed place on the hypervisor's
	 * exception stack; anything else is not a report we understand. */
	if (regs->rsp != x86_exception_stack_top(vcpu->id) - sizeof(stub))
		return false;
	const void *stack = guest_memory_translate(&vm->mem, regs->rsp, sizeof(stub));
	if (!stack)
		return false;
	memcpy(&stub, stack, sizeof(stub));
	if (stub.vector >= KAPSEL_TRAP_VECTOR_COUNT)
		return false;
	unsigned vector = (unsigned)stub.vector;
	const struct pv_handler *handler = &c->traps[vector];
	kapsel_debug("trap: vector %u error %#" PRIx64 " rip %#" PRIx64 " rsp %#" PRIx64
		     " cs %#" PRIx64 "%s",
		     vector, stub.error_code, stub.rip, stub.rsp, stub.cs,
		     from_user ? " (user mode)" : "");
	if (!handler->entry) {
		if (pv_cpu_in_use(c))
			fprintf(stderr, "kapsel: the guest has no handler registered for %s%s\n",
				x86_exception_name(vector),
				from_user ? " (raised in user mode)" : "");
		return false;
	}
	if (stub.cs != X86_SEL_USER_CS) {
		fprintf(stderr, "kapsel: %s in hypervisor code; not delivered to the guest\n",
			x86_exception_name(vector));
		return false;
	}
	/* Deliveries from user mode never nest: a kernel may switch processes
	 * inside its handler, so they are not "in progress". */
	if (!from_user && (c->active_vectors & (1u << vector))) {
		fprintf(stderr,
			"kapsel: %s inside the guest's own %s handler (that delivery is still in progress); not delivered again\n",
			x86_exception_name(vector), x86_exception_name(vector));
		return false;
	}
	struct kvm_sregs sregs;
	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0) {
		kapsel_error("KVM_GET_SREGS failed while delivering %s: %s",
			     x86_exception_name(vector), strerror(errno));
		return false;
	}
	struct kapsel_trap_frame frame;
	memset(&frame, 0, sizeof(frame));
	pv_cpu_frame_from_regs(&frame, regs);
	/* The stub clobbered rax, rdx and the stack: the CPU's view wins. */
	frame.vector = vector;
	frame.error_code = stub.error_code;
	frame.cr2 = vector == 14 ? sregs.cr2 : 0;
	frame.rip = stub.rip;
	frame.cs = stub.cs;
	frame.rflags = stub.rflags;
	frame.rsp = stub.rsp;
	frame.ss = stub.ss;
	frame.rax = stub.rax;
	frame.rdx = stub.rdx;
	struct kapsel_vcpu_info *info = vcpu_info(vm, vcpu->id);
	if (__atomic_load_n(&info->upcall_mask, __ATOMIC_SEQ_CST))
		frame.flags |= KAPSEL_TRAP_FRAME_UPCALL_MASKED;
	if (from_user)
		frame.flags |= KAPSEL_TRAP_FRAME_USER;

	uint64_t frame_gpa;
	if (place_frame(vcpu, handler, stub.rsp, &frame_gpa) < 0 ||
	    !frame_write(vm, frame_gpa, &frame)) {
		const struct pv_handler *stack = from_user ? &vcpu->pv_mmu.kernel_stack : handler;
		fprintf(stderr,
			"kapsel: cannot deliver %s: the frame does not fit the %s stack [%#" PRIx64
			", %#" PRIx64 ") (stack overflow or stack outside guest RAM)\n",
			x86_exception_name(vector), from_user ? "kernel" : "handler's",
			stack->stack_top - stack->stack_bytes, stack->stack_top);
		return false;
	}
	/* Back to CPL3: user code and stack segments. */
	x86_boot_user_segments(&sregs);
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0) {
		kapsel_error("KVM_SET_SREGS failed while delivering %s: %s",
			     x86_exception_name(vector), strerror(errno));
		return false;
	}
	regs->rax = stub.rax;
	regs->rdx = stub.rdx;
	enter_handler(vcpu, handler, frame_gpa, stub.rflags);
	if (!from_user)
		c->active_vectors |= 1u << vector;
	entered_kernel(vcpu);
	c->traps_delivered++;
	return true;
}

bool pv_cpu_deliver_syscall(struct kapsel_vcpu *vcpu, const struct kvm_sregs *sregs)
{
	(void)sregs;
	struct kapsel_vm *vm = vcpu->vm;
	struct kvm_regs *regs = &vcpu->run->s.regs.regs;
	struct kapsel_trap_frame frame;
	memset(&frame, 0, sizeof(frame));
	pv_cpu_frame_from_regs(&frame, regs);
	/* What the syscall instruction left: rcx = return rip, r11 = rflags;
	 * rsp is the process's (syscall does not switch stacks). */
	frame.vector = KAPSEL_TRAP_VECTOR_SYSCALL;
	frame.rip = regs->rcx;
	frame.rflags = regs->r11;
	frame.cs = X86_SEL_USER_CS;
	frame.ss = X86_SEL_USER_DS;
	frame.flags = KAPSEL_TRAP_FRAME_USER;
	if (__atomic_load_n(&vcpu_info(vm, vcpu->id)->upcall_mask, __ATOMIC_SEQ_CST))
		frame.flags |= KAPSEL_TRAP_FRAME_UPCALL_MASKED;
	uint64_t frame_gpa;
	const struct pv_handler *kernel_stack = &vcpu->pv_mmu.kernel_stack;
	if (pv_cpu_frame_place(kernel_stack, 0, &frame_gpa) < 0 ||
	    !frame_write(vm, frame_gpa, &frame)) {
		fprintf(stderr,
			"kapsel: cannot deliver a syscall: the frame does not fit the kernel stack [%#" PRIx64
			", %#" PRIx64 ")\n",
			kernel_stack->stack_top - kernel_stack->stack_bytes,
			kernel_stack->stack_top);
		return false;
	}
	const struct pv_handler entry = { .entry = vm->pv_mmu.syscall_entry };
	enter_handler(vcpu, &entry, frame_gpa, regs->r11);
	entered_kernel(vcpu);
	return true;
}

bool pv_cpu_upcall_wanted(struct kapsel_vcpu *vcpu)
{
	if (!vcpu->pv_cpu.callback.entry)
		return false;
	struct kapsel_vcpu_info *info = vcpu_info(vcpu->vm, vcpu->id);
	return __atomic_load_n(&info->upcall_pending, __ATOMIC_SEQ_CST) &&
	       !__atomic_load_n(&info->upcall_mask, __ATOMIC_SEQ_CST);
}

bool pv_cpu_deliver_upcall(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	struct pv_cpu_vcpu *c = &vcpu->pv_cpu;
	if (!pv_cpu_upcall_wanted(vcpu))
		return true;
	/* Stopped on the way into the guest (the PV MMU's switch stub):
	 * finish that in software first, it is redone with this entry. */
	pv_mmu_settle(vcpu);
	struct kvm_sregs sregs;
	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
		return true; /* try again at the next exit */
	if (sregs.cs.selector != X86_SEL_USER_CS)
		return true; /* inside the CPL0 stub: its report comes first */
	struct kvm_regs *regs = &vcpu->run->s.regs.regs;
	struct kapsel_trap_frame frame;
	memset(&frame, 0, sizeof(frame));
	pv_cpu_frame_from_regs(&frame, regs);
	frame.vector = KAPSEL_TRAP_VECTOR_UPCALL;
	if (vcpu->pv_mmu.user_mode)
		frame.flags |= KAPSEL_TRAP_FRAME_USER;
	uint64_t frame_gpa;
	if (place_frame(vcpu, &c->callback, regs->rsp, &frame_gpa) < 0 ||
	    !frame_write(vm, frame_gpa, &frame)) {
		fprintf(stderr,
			"kapsel: cannot deliver an upcall: the frame does not fit the callback's stack [%#" PRIx64
			", %#" PRIx64 ")\n",
			c->callback.stack_top - c->callback.stack_bytes, c->callback.stack_top);
		crash_report_fatal(vcpu, "upcall delivery failed");
		return false;
	}
	enter_handler(vcpu, &c->callback, frame_gpa, regs->rflags);
	entered_kernel(vcpu);
	c->upcalls_delivered++;
	return true;
}

void pv_cpu_event_raised(struct kapsel_vcpu *vcpu)
{
	if (!__atomic_load_n(&vcpu->pv_cpu.callback.entry, __ATOMIC_ACQUIRE))
		return;
	struct kapsel_vcpu_info *info = vcpu_info(vcpu->vm, vcpu->id);
	/* Only the 0 -> 1 edge kicks: a flood of events costs one kick until
	 * the guest's callback clears upcall_pending again. */
	if (__atomic_exchange_n(&info->upcall_pending, 1, __ATOMIC_SEQ_CST))
		return;
	/* On the vCPU thread itself (a hypercall, a timer) the run loop looks
	 * at upcall_pending after this exit anyway. */
	if (!__atomic_load_n(&info->upcall_mask, __ATOMIC_SEQ_CST) &&
	    !pthread_equal(pthread_self(), vcpu->thread))
		vcpu_kick(vcpu);
}

void pv_cpu_block_enter(struct kapsel_vcpu *vcpu)
{
	if (vcpu->pv_cpu.callback.entry)
		__atomic_store_n(&vcpu_info(vcpu->vm, vcpu->id)->upcall_mask, 0, __ATOMIC_SEQ_CST);
}

/* ---- Hypercalls ---------------------------------------------------------- */

static int64_t register_handler(struct kapsel_vm *vm, struct pv_handler *slot,
				const uint64_t args[])
{
	struct pv_handler handler = { .entry = args[1],
				      .stack_top = args[2],
				      .stack_bytes = args[3] };
	if (!handler.entry) {
		memset(slot, 0, sizeof(*slot));
		return 0;
	}
	int err = pv_cpu_check_handler(&vm->mem, &handler);
	if (err)
		return err;
	*slot = handler;
	return 0;
}

static int64_t hc_set_trap(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	uint64_t vector = args[0];
	if (vector >= KAPSEL_TRAP_VECTOR_COUNT || !(KAPSEL_TRAP_VECTORS_ALLOWED & (1u << vector)))
		return -KAPSEL_EINVAL;
	return register_handler(vm, &vcpu->pv_cpu.traps[vector], args);
}

static int64_t hc_set_callback(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	if (args[0] != vcpu->id) /* a vCPU registers its own callback */
		return -KAPSEL_EINVAL;
	struct pv_cpu_vcpu *c = &vcpu->pv_cpu;
	struct pv_handler old = c->callback;
	int64_t err = register_handler(vm, &old, args);
	if (err)
		return err;
	__atomic_store_n(&c->callback.stack_top, old.stack_top, __ATOMIC_RELAXED);
	__atomic_store_n(&c->callback.stack_bytes, old.stack_bytes, __ATOMIC_RELAXED);
	__atomic_store_n(&c->callback.entry, old.entry, __ATOMIC_RELEASE);
	/* Events that were pending before the callback existed count too. */
	if (old.entry && vm_evtchn_pending_for(vm, vcpu->id))
		__atomic_store_n(&vcpu_info(vm, vcpu->id)->upcall_pending, 1, __ATOMIC_SEQ_CST);
	return 0;
}

static int64_t hc_iret(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	const void *shared =
		guest_memory_translate_guest(&vm->mem, args[0], sizeof(struct kapsel_trap_frame));
	if (!shared)
		return -KAPSEL_EFAULT;
	/* Read once; only the copy is checked and used. */
	struct kapsel_trap_frame frame;
	memcpy(&frame, shared, sizeof(frame));
	if (frame.vector >= KAPSEL_TRAP_VECTOR_COUNT && frame.vector != KAPSEL_TRAP_VECTOR_UPCALL &&
	    frame.vector != KAPSEL_TRAP_VECTOR_SYSCALL)
		return -KAPSEL_EINVAL;
	bool to_user = (frame.flags & KAPSEL_TRAP_FRAME_USER) != 0;
	if (to_user && !pv_mmu_user_mode_possible(vcpu))
		return -KAPSEL_EINVAL; /* no process address space or kernel stack */
	struct kvm_regs regs = vcpu->run->s.regs.regs;
	int err = pv_cpu_regs_from_frame(&regs, &frame, regs.rflags);
	if (err)
		return err;
	vcpu->run->s.regs.regs = regs;
	pv_mmu_set_user_mode(vcpu, to_user);
	if (frame.vector < KAPSEL_TRAP_VECTOR_COUNT)
		vcpu->pv_cpu.active_vectors &= ~(1u << frame.vector);
	__atomic_store_n(&vcpu_info(vm, vcpu->id)->upcall_mask,
			 (frame.flags & KAPSEL_TRAP_FRAME_UPCALL_MASKED) ? 1 : 0, __ATOMIC_SEQ_CST);
	vcpu->pv_cpu.irets++;
	/* handle_hypercall stores the result in rax and marks the registers
	 * dirty: the resumed context gets its own rax back. */
	return (int64_t)frame.rax;
}

void pv_cpu_timer_stop(struct kapsel_vcpu *vcpu)
{
	struct pv_cpu_vcpu *c = &vcpu->pv_cpu;
	c->timer_deadline_ns = KAPSEL_TIMER_STOP;
	c->timer_period_ns = 0;
	if (c->timer_created)
		timer_arm(vcpu);
	__atomic_store_n(&c->timer_fired, 0, __ATOMIC_SEQ_CST);
}

void pv_cpu_timer_restore(struct kapsel_vcpu *vcpu)
{
	struct pv_cpu_vcpu *c = &vcpu->pv_cpu;
	if (!c->timer_restored)
		return;
	c->timer_restored = false;
	if (c->timer_deadline_ns != KAPSEL_TIMER_STOP && timer_arm(vcpu))
		kapsel_warn("vCPU %u: the restored timer could not be armed", vcpu->id);
}

static int64_t hc_timer_set(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	uint64_t deadline_ns = args[1], period_ns = args[2];
	(void)vm;
	if (args[0] != vcpu->id) /* a vCPU sets its own timer */
		return -KAPSEL_EINVAL;
	if (deadline_ns != KAPSEL_TIMER_STOP && period_ns && period_ns < KAPSEL_TIMER_MIN_PERIOD_NS)
		return -KAPSEL_EINVAL;
	struct pv_cpu_vcpu *c = &vcpu->pv_cpu;
	c->timer_deadline_ns = deadline_ns;
	c->timer_period_ns = deadline_ns == KAPSEL_TIMER_STOP ? 0 : period_ns;
	__atomic_store_n(&c->timer_fired, 0, __ATOMIC_SEQ_CST);
	return timer_arm(vcpu) ? -KAPSEL_EIO : 0;
}

static int64_t hc_evtchn_bind_virq(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	uint64_t port = args[0], virq = args[1];
	if (port >= KAPSEL_EVTCHN_COUNT || port == KAPSEL_EVTCHN_CONTROL ||
	    !vm->evtchn[port].allocated || vm->evtchn[port].bound_device >= 0 ||
	    virq >= KAPSEL_VIRQ_COUNT || args[2] != vcpu->id)
		return -KAPSEL_EINVAL;
	vcpu->pv_cpu.virq_port[virq] = (uint32_t)port;
	/* The timer's events are this vCPU's (minor 6). */
	__atomic_store_n(&vm->evtchn[port].vcpu, vcpu->id, __ATOMIC_RELAXED);
	return 0;
}

int pv_cpu_register_hypercalls(struct hypercall_table *table)
{
	static const struct hypercall_def calls[] = {
		{ KAPSEL_HC_SET_TRAP, "set_trap", hc_set_trap },
		{ KAPSEL_HC_SET_CALLBACK, "set_callback", hc_set_callback },
		{ KAPSEL_HC_IRET, "iret", hc_iret },
		{ KAPSEL_HC_TIMER_SET, "timer_set", hc_timer_set },
		{ KAPSEL_HC_EVTCHN_BIND_VIRQ, "evtchn_bind_virq", hc_evtchn_bind_virq },
	};
	return hypercall_register_all(table, calls, sizeof(calls) / sizeof(calls[0]));
}

/* ---- Reports ------------------------------------------------------------- */

static void print_handler(const struct kapsel_vm *vm, FILE *out, const char *what,
			  const struct pv_handler *h)
{
	uint64_t offset = 0;
	const char *symbol = elf_image_symbolize(&vm->image, h->entry, &offset);
	fprintf(out, "  %-40s -> %#" PRIx64, what, h->entry);
	if (symbol)
		fprintf(out, " <%s+%#" PRIx64 ">", symbol, offset);
	fprintf(out, ", stack [%#" PRIx64 ", %#" PRIx64 ")\n", h->stack_top - h->stack_bytes,
		h->stack_top);
}

void pv_cpu_print_handlers(const struct kapsel_vcpu *vcpu, FILE *out)
{
	const struct kapsel_vm *vm = vcpu->vm;
	const struct pv_cpu_vcpu *c = &vcpu->pv_cpu;
	if (!pv_cpu_in_use(c))
		return;
	fprintf(out, "guest handler chain (vCPU %u):\n", vcpu->id);
	for (unsigned v = 0; v < KAPSEL_TRAP_VECTOR_COUNT; v++)
		if (c->traps[v].entry)
			print_handler(vm, out, x86_exception_name(v), &c->traps[v]);
	if (c->callback.entry)
		print_handler(vm, out, "upcall callback", &c->callback);
	if (c->active_vectors) {
		fprintf(out, "  deliveries in progress:");
		for (unsigned v = 0; v < KAPSEL_TRAP_VECTOR_COUNT; v++)
			if (c->active_vectors & (1u << v))
				fprintf(out, " %s", vector_name(v));
		fputc('\n', out);
	}
	fprintf(out, "  upcall mask %u, upcall pending %u\n", vcpu_info(vm, vcpu->id)->upcall_mask,
		vcpu_info(vm, vcpu->id)->upcall_pending);
}

void pv_cpu_print_stats(const struct kapsel_vcpu *vcpu, FILE *out)
{
	const struct pv_cpu_vcpu *c = &vcpu->pv_cpu;
	/* vCPU 0 keeps the names of one-vCPU VMs; the others are prefixed. */
	char prefix[16] = "";
	if (vcpu->id)
		snprintf(prefix, sizeof(prefix), "vcpu%u_", vcpu->id);
	const struct {
		const char *name;
		uint64_t value;
	} counters[] = {
		{ "traps_delivered", c->traps_delivered },
		{ "upcalls_delivered", c->upcalls_delivered },
		{ "irets", c->irets },
		{ "timer_fires", c->timer_fires },
		{ "timer_overruns", c->timer_overruns },
	};
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
		if (counters[i].value)
			fprintf(out, "  %s%s: %" PRIu64 "\n", prefix, counters[i].name,
				counters[i].value);
}
