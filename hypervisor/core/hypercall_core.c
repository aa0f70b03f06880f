/* The ABI v1 core hypercalls: info, console, shutdown, time, block (and kick-and-block), event channels, device setup. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "core/hypercall.h"
#include "core/pv_mmu.h"
#include "core/log.h"
#include "core/smp.h"
#include "core/vm.h"

/* One console write moves at most this much; the guest loops for more. */
#define CONSOLE_CHUNK_MAX_BYTES 65536u

static int64_t hc_abi_info(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	struct kapsel_abi_info *info =
		guest_memory_translate_guest(&vm->mem, args[0], sizeof(*info));
	if (!info)
		return -KAPSEL_EFAULT;
	struct kapsel_abi_info reply = {
		.magic = KAPSEL_ABI_INFO_MAGIC,
		.major = KAPSEL_ABI_MAJOR,
		.minor = KAPSEL_ABI_MINOR,
		.features = KAPSEL_FEATURES_V1,
		.hypercall_count = KAPSEL_HC_COUNT,
	};
	memcpy(info, &reply, sizeof(reply));
	guest_memory_mark_written(&vm->mem, args[0], sizeof(reply));
	return 0;
}

static int64_t hc_console_write(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	uint64_t length = args[1];
	if (length > CONSOLE_CHUNK_MAX_BYTES)
		length = CONSOLE_CHUNK_MAX_BYTES;
	const void *data = guest_memory_translate_guest(&vm->mem, args[0], length);
	if (!data)
		return -KAPSEL_EFAULT;
	console_write(&vm->console, data, length);
	return (int64_t)length;
}

static int64_t hc_console_read(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	uint64_t length = args[1];
	if (length > CONSOLE_CHUNK_MAX_BYTES)
		length = CONSOLE_CHUNK_MAX_BYTES;
	void *data = guest_memory_translate_guest(&vm->mem, args[0], length);
	if (!data)
		return -KAPSEL_EFAULT;
	size_t got = console_read(&vm->console, data, length);
	guest_memory_mark_written(&vm->mem, args[0], got);
	return (int64_t)got;
}

static int64_t hc_shutdown(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	uint64_t reason = args[0];
	int code = (int)(args[1] & 0xff);

	switch (reason) {
	case KAPSEL_SHUTDOWN_POWEROFF:
		vm->exit_code = code;
		break;
	case KAPSEL_SHUTDOWN_REBOOT:
		vm->exit_code = 0;
		break;
	case KAPSEL_SHUTDOWN_CRASH:
		fprintf(stderr, "kapsel: guest '%s' reported a crash (code %d)\n", vm->config->name,
			code);
		vm->exit_code = KAPSEL_EXIT_GUEST_CRASH;
		break;
	default:
		return -KAPSEL_EINVAL;
	}
	vm->shutdown_reason = (enum kapsel_shutdown_reason)reason;
	vm->state = VM_STATE_STOPPED;
	return 0;
}

static int64_t hc_time_info(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	struct kapsel_time_info *out =
		guest_memory_translate_guest(&vm->mem, args[0], sizeof(*out));
	if (!out)
		return -KAPSEL_EFAULT;
	uint64_t now = vm_clock_ns(vm), tsc;
	if (vcpu_guest_tsc(vcpu, &tsc) < 0)
		return -KAPSEL_EIO;
	struct kapsel_time_info reply = {
		.now_ns = now,
		.tsc = tsc,
		.tsc_khz = vm->tsc_khz,
	};
	memcpy(out, &reply, sizeof(reply));
	guest_memory_mark_written(&vm->mem, args[0], sizeof(reply));
	return 0;
}

static int64_t hc_block(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	uint64_t deadline_ns = args[0];
	pv_cpu_block_enter(vcpu); /* minor 3: sti; hlt for a vCPU with a callback */
	for (;;) {
		pv_cpu_poll_timers(vcpu);
		if (vm_evtchn_pending_for(vm, vcpu->id))
			return 1;
		uint64_t now = vm_clock_ns(vm);
		/* A stop, pause or stats request ends the sleep early (0: the
		 * guest re-checks its clock and blocks again after a resume;
		 * the run loop writes the stats before re-entering the guest). */
		if (now >= deadline_ns || __atomic_load_n(&vm->stop_requested, __ATOMIC_SEQ_CST) ||
		    __atomic_load_n(&vm->pause_requested, __ATOMIC_SEQ_CST) ||
		    vm->state == VM_STATE_STOPPED ||
		    (vcpu->id == 0 && __atomic_load_n(&vm->stats_requested, __ATOMIC_SEQ_CST)))
			return 0;
		__atomic_store_n(&vcpu->blocked, 1, __ATOMIC_SEQ_CST);
		/* Re-check after announcing we sleep: a notifier that missed the
		 * flag set its pending bit before our load here (see
		 * vm_evtchn_notify). */
		if (vm_evtchn_pending_for(vm, vcpu->id)) {
			__atomic_store_n(&vcpu->blocked, 0, __ATOMIC_SEQ_CST);
			return 1;
		}
		uint64_t wait_ns = deadline_ns - now;
		struct timespec timeout = {
			.tv_sec = (time_t)(wait_ns / 1000000000ull),
			.tv_nsec = (long)(wait_ns % 1000000000ull),
		};
		if (wait_ns > 3600ull * 1000000000ull)
			timeout = (struct timespec){ .tv_sec = 3600 };
		/* Other vCPUs handle their exits while this one sleeps. */
		pthread_mutex_unlock(&vm->lock);
		struct pollfd pfd = { .fd = vcpu->wake_fd, .events = POLLIN };
		ppoll(&pfd, 1, &timeout, NULL);
		__atomic_store_n(&vcpu->blocked, 0, __ATOMIC_SEQ_CST);
		uint64_t drained;
		ssize_t n = read(vcpu->wake_fd, &drained, sizeof(drained));
		(void)n;
		pthread_mutex_lock(&vm->lock);
	}
}

static bool valid_port(struct kapsel_vm *vm, uint64_t port)
{
	return port < KAPSEL_EVTCHN_COUNT && vm->evtchn[port].allocated;
}

/* A channel the guest allocated itself: the reserved control channel can
 * only be masked and unmasked, never bound, sent on or closed. */
static bool guest_owned_port(struct kapsel_vm *vm, uint64_t port)
{
	return valid_port(vm, port) && port != KAPSEL_EVTCHN_CONTROL;
}

static int64_t hc_evtchn_alloc(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	(void)args;
	for (uint32_t port = 0; port < KAPSEL_EVTCHN_COUNT; port++) {
		if (!vm->evtchn[port].allocated) {
			vm->evtchn[port].allocated = true;
			vm->evtchn[port].bound_device = -1;
			__atomic_store_n(&vm->evtchn[port].vcpu, 0, __ATOMIC_RELAXED);
			/* A new channel starts neither pending nor masked,
			 * whatever its previous owner left behind. */
			__atomic_fetch_and(&vm->events->pending[port / 64], ~(1ull << (port % 64)),
					   __ATOMIC_SEQ_CST);
			__atomic_fetch_and(&vm->events->mask[port / 64], ~(1ull << (port % 64)),
					   __ATOMIC_SEQ_CST);
			return port;
		}
	}
	return -KAPSEL_ENOSPC;
}

static int64_t hc_evtchn_bind_device(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	uint64_t port = args[0], index = args[1];
	if (!guest_owned_port(vm, port) || index >= vm->device_count)
		return -KAPSEL_EINVAL;
	if (vm->evtchn[port].bound_device >= 0)
		return -KAPSEL_EBUSY;
	struct kapsel_device *dev = vm->devices[index];
	if (dev->evtchn_port != UINT32_MAX)
		return -KAPSEL_EBUSY;
	vm->evtchn[port].bound_device = (int)index;
	__atomic_store_n(&dev->evtchn_port, (uint32_t)port, __ATOMIC_RELEASE);
	return 0;
}

/* What a guest's write to dev's doorbell port does, done by the VMM (for
 * EVTCHN_SEND and KICK_AND_BLOCK).  Precondition: dev has a doorbell. */
static int64_t ring_doorbell(struct kapsel_device *dev)
{
	uint64_t one = 1;
	if (dev->doorbell_fd >= 0)
		return write(dev->doorbell_fd, &one, sizeof(one)) < 0 ? -KAPSEL_EIO : 0;
	/* A doorbell served on the vCPU thread (vm_add_trapped_doorbell). */
	if (dev->io_port_base == dev->desc.doorbell_port)
		dev->ops->io_write(dev, dev->desc.doorbell_port, 2, 1);
	return 0;
}

static int64_t hc_evtchn_send(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	uint64_t port = args[0];
	if (!guest_owned_port(vm, port))
		return -KAPSEL_EINVAL;
	int index = vm->evtchn[port].bound_device;
	if (index < 0) {
		/* An unbound channel loops back to the guest itself. */
		vm_evtchn_notify(vm, (uint32_t)port);
		return 0;
	}
	/* The slow path of a doorbell: same effect, one exit more (a bound
	 * device without a doorbell is not notified). */
	struct kapsel_device *dev = vm->devices[index];
	return dev->desc.doorbell_port ? ring_doorbell(dev) : 0;
}

/*
 * Minor 7: ring the doorbells of the devices in args[1] (bit n = device n),
 * then sleep as BLOCK(args[0]).  A guest that has just published requests
 * and has nothing to do until they are answered saves the doorbell's own
 * exit.  Every bit is checked before anything is rung.
 */
static int64_t hc_kick_and_block(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	uint64_t mask = args[1];
	/* device_count <= KAPSEL_MAX_DEVICES (16): the shift is defined. */
	if (mask >> vm->device_count)
		return -KAPSEL_EINVAL;
	for (unsigned i = 0; i < vm->device_count; i++)
		if ((mask & (1ull << i)) && !vm->devices[i]->desc.doorbell_port)
			return -KAPSEL_EINVAL;
	for (unsigned i = 0; i < vm->device_count; i++) {
		if (!(mask & (1ull << i)))
			continue;
		int64_t err = ring_doorbell(vm->devices[i]);
		if (err)
			return err;
	}
	return hc_block(vcpu, args);
}

static int64_t hc_evtchn_mask(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	uint64_t port = args[0];
	if (!valid_port(vm, port) || args[1] > 1)
		return -KAPSEL_EINVAL;
	uint64_t bit = 1ull << (port % 64);
	uint64_t old;
	if (args[1])
		old = __atomic_fetch_or(&vm->events->mask[port / 64], bit, __ATOMIC_SEQ_CST);
	else
		old = __atomic_fetch_and(&vm->events->mask[port / 64], ~bit, __ATOMIC_SEQ_CST);
	/* Unmasking a pending channel delivers it (upcall or BLOCK wake-up). */
	if (!args[1] && (old & bit))
		vm_evtchn_deliver_if_ready(vm, (uint32_t)port);
	return (old & bit) ? 1 : 0;
}

static int64_t hc_evtchn_close(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	uint64_t port = args[0];
	if (!guest_owned_port(vm, port))
		return -KAPSEL_EINVAL;
	int index = vm->evtchn[port].bound_device;
	if (index >= 0)
		__atomic_store_n(&vm->devices[index]->evtchn_port, UINT32_MAX, __ATOMIC_RELEASE);
	vm->evtchn[port] = (struct vm_evtchn){ .allocated = false, .bound_device = -1, .vcpu = 0 };
	return 0;
}

static int64_t hc_device_setup(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	struct kapsel_vm *vm = vcpu->vm;
	uint64_t index = args[0];
	if (index >= vm->device_count)
		return -KAPSEL_ENODEV;
	const void *shared =
		guest_memory_translate_guest(&vm->mem, args[1], sizeof(struct kapsel_device_setup));
	if (!shared)
		return -KAPSEL_EFAULT;
	/* Read once: the device only ever sees this private copy. */
	struct kapsel_device_setup setup;
	memcpy(&setup, shared, sizeof(setup));
	if (setup.magic != KAPSEL_DEVICE_SETUP_MAGIC || setup.revision != 1)
		return -KAPSEL_EINVAL;
	struct kapsel_device *dev = vm->devices[index];
	if (!dev->ops->setup)
		return -KAPSEL_ENODEV;
	return dev->ops->setup(dev, &setup);
}

int hypercall_register_core(struct hypercall_table *table)
{
	static const struct hypercall_def calls[] = {
		{ KAPSEL_HC_ABI_INFO, "abi_info", hc_abi_info },
		{ KAPSEL_HC_CONSOLE_WRITE, "console_write", hc_console_write },
		{ KAPSEL_HC_CONSOLE_READ, "console_read", hc_console_read },
		{ KAPSEL_HC_SHUTDOWN, "shutdown", hc_shutdown },
		{ KAPSEL_HC_TIME_INFO, "time_info", hc_time_info },
		{ KAPSEL_HC_BLOCK, "block", hc_block },
		{ KAPSEL_HC_EVTCHN_ALLOC, "evtchn_alloc", hc_evtchn_alloc },
		{ KAPSEL_HC_EVTCHN_BIND_DEVICE, "evtchn_bind_device", hc_evtchn_bind_device },
		{ KAPSEL_HC_EVTCHN_SEND, "evtchn_send", hc_evtchn_send },
		{ KAPSEL_HC_EVTCHN_MASK, "evtchn_mask", hc_evtchn_mask },
		{ KAPSEL_HC_DEVICE_SETUP, "device_setup", hc_device_setup },
		{ KAPSEL_HC_EVTCHN_CLOSE, "evtchn_close", hc_evtchn_close },
		{ KAPSEL_HC_KICK_AND_BLOCK, "kick_and_block", hc_kick_and_block },
	};
	int err = hypercall_register_all(table, calls, sizeof(calls) / sizeof(calls[0]));
	/* Minor 3: traps, upcalls and timers live in pv_cpu.c; minor 5:
	 * address spaces and user mode in pv_mmu.c. */
	if (!err)
		err = pv_cpu_register_hypercalls(table);
	if (!err)
		err = pv_mmu_register_hypercalls(table);
	/* Minor 6: several vCPUs in smp.c. */
	if (!err)
		err = smp_register_hypercalls(table);
	return err;
}
