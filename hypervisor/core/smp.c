/* SMP (ABI minor 6): bringing vCPUs up and down, and binding event channels to a vCPU. */
#include "core/smp.h"

#include "core/pv_cpu.h"
#include "core/vm.h"

/* The bytes of the new stack that must be RAM: its top page. */
#define START_STACK_CHECK_BYTES 4096u

int smp_check_start(const struct guest_memory *mem, uint64_t entry, uint64_t stack_top)
{
	if (stack_top & 15)
		return -KAPSEL_EINVAL;
	if (stack_top < START_STACK_CHECK_BYTES ||
	    !guest_memory_translate_guest(mem, stack_top - START_STACK_CHECK_BYTES,
					  START_STACK_CHECK_BYTES))
		return -KAPSEL_EFAULT;
	if (!guest_memory_translate_guest(mem, entry, 1))
		return -KAPSEL_EFAULT;
	return 0;
}

/* (vcpu, entry, stack_top, arg): the target's thread takes the request
 * (vm.c vcpu_take_start) and starts it with a fresh PV CPU state. */
static int64_t hc_vcpu_up(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	uint64_t id = args[0];
	if (id >= vm->vcpu_count)
		return -KAPSEL_EINVAL;
	int err = smp_check_start(&vm->mem, args[1], args[2]);
	if (err)
		return err;
	struct kapsel_vcpu *target = &vm->vcpus[id];
	/* Only a down vCPU starts; its thread waits outside the guest, and
	 * reads the request after seeing STARTING (both under vm->lock). */
	if (__atomic_load_n(&target->power, __ATOMIC_SEQ_CST) != VCPU_POWER_DOWN)
		return -KAPSEL_EBUSY;
	target->start =
		(struct x86_entry){ .rip = args[1], .rsp = args[2], .rdi = args[3], .rsi = id };
	__atomic_store_n(&target->power, VCPU_POWER_STARTING, __ATOMIC_RELEASE);
	vcpu_wake(target);
	return 0;
}

/* (): the calling vCPU stops; the run loop sees it down after this exit. */
static int64_t hc_vcpu_down(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	(void)args;
	if (vcpu->id == 0)
		return -KAPSEL_EINVAL;
	pv_cpu_timer_stop(vcpu);
	__atomic_store_n(&vcpu->power, VCPU_POWER_DOWN, __ATOMIC_SEQ_CST);
	return 0;
}

static int64_t hc_vcpu_status(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	if (args[0] >= vm->vcpu_count)
		return -KAPSEL_EINVAL;
	return __atomic_load_n(&vm->vcpus[args[0]].power, __ATOMIC_SEQ_CST) != VCPU_POWER_DOWN;
}

/* (port, vcpu): a channel the guest allocated (not the control channel). */
static int64_t hc_evtchn_bind_vcpu(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	uint64_t port = args[0], id = args[1];
	if (port >= KAPSEL_EVTCHN_COUNT || port == KAPSEL_EVTCHN_CONTROL ||
	    !vm->evtchn[port].allocated || id >= vm->vcpu_count)
		return -KAPSEL_EINVAL;
	__atomic_store_n(&vm->evtchn[port].vcpu, (unsigned)id, __ATOMIC_SEQ_CST);
	/* Already pending and unmasked: the new vCPU takes it now. */
	vm_evtchn_deliver_if_ready(vm, (uint32_t)port);
	return 0;
}

int smp_register_hypercalls(struct hypercall_table *table)
{
	static const struct hypercall_def calls[] = {
		{ KAPSEL_HC_VCPU_UP, "vcpu_up", hc_vcpu_up },
		{ KAPSEL_HC_VCPU_DOWN, "vcpu_down", hc_vcpu_down },
		{ KAPSEL_HC_VCPU_STATUS, "vcpu_status", hc_vcpu_status },
		{ KAPSEL_HC_EVTCHN_BIND_VCPU, "evtchn_bind_vcpu", hc_evtchn_bind_vcpu },
	};
	return hypercall_register_all(table, calls, sizeof(calls) / sizeof(calls[0]));
}
