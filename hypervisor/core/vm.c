/* A Kapsel VM: KVM VM and vCPU, guest RAM, devices, hypercalls and the exit loop. */
#define _GNU_SOURCE
#include "core/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/crash_report.h"
#include "devices/devices.h"
#include "core/log.h"
#include "core/sandbox.h"
#include "core/x86_boot.h"

#define KVM_API_VERSION_REQUIRED 12
#define MSR_IA32_TSC 0x10u
/* Three pages KVM on VMX wants for real-mode emulation; our guests never
 * run in real mode, so they are only set where they cannot overlap RAM. */
#define KVM_TSS_GPA 0xfffbd000u

uint64_t vm_clock_ns(const struct kapsel_vm *vm)
{
	return monotonic_ns() - vm->boot_monotonic_ns;
}

static int open_kvm(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd >= 0)
		return fd;
	int err = -errno;
	if (errno == ENOENT)
		kapsel_error(
			"/dev/kvm does not exist: this machine has no KVM; "
			"load the kvm module (modprobe kvm_intel or kvm_amd) or run on a host with virtualization");
	else if (errno == EACCES || errno == EPERM)
		kapsel_error(
			"no permission to open /dev/kvm; add your user to the 'kvm' group or run as root");
	else
		kapsel_error("cannot open /dev/kvm: %s", strerror(errno));
	return err;
}

struct required_capability {
	int cap;
	const char *name;
	const char *why;
};

static const struct required_capability required_capabilities[] = {
	{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", "guest RAM" },
	{ KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID", "the Kapsel CPUID signature" },
	{ KVM_CAP_SYNC_REGS, "KVM_CAP_SYNC_REGS", "register-based hypercalls" },
	{ KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD", "PV doorbells" },
	{ KVM_CAP_GET_TSC_KHZ, "KVM_CAP_GET_TSC_KHZ", "guest timekeeping" },
};

static int check_kvm(int kvm_fd)
{
	int version = ioctl(kvm_fd, KVM_GET_API_VERSION, 0);
	if (version != KVM_API_VERSION_REQUIRED) {
		kapsel_error("KVM API version is %d, Kapsel needs %d; the host kernel is too old or too new",
			     version, KVM_API_VERSION_REQUIRED);
		return -ENOTSUP;
	}
	for (size_t i = 0; i < sizeof(required_capabilities) / sizeof(required_capabilities[0]);
	     i++) {
		const struct required_capability *c = &required_capabilities[i];
		if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, c->cap) <= 0) {
			kapsel_error("KVM capability %s is missing (needed for %s); use a newer host kernel",
				     c->name, c->why);
			return -ENOTSUP;
		}
	}
	int sync = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
	if (!(sync & KVM_SYNC_X86_REGS)) {
		kapsel_error(
			"KVM capability KVM_CAP_SYNC_REGS lacks KVM_SYNC_X86_REGS; use a newer host kernel");
		return -ENOTSUP;
	}
	return 0;
}

static int setup_cpuid(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	int count = 128;
	struct kvm_cpuid2 *cpuid = NULL;

	for (;;) {
		cpuid = calloc(1, sizeof(*cpuid) + (size_t)count * sizeof(cpuid->entries[0]));
		if (!cpuid)
			return -ENOMEM;
		cpuid->nent = (uint32_t)count;
		if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) == 0)
			break;
		free(cpuid);
		if (errno != E2BIG || count > 4096) {
			kapsel_error("KVM_GET_SUPPORTED_CPUID failed: %s", strerror(errno));
			return -errno;
		}
		count *= 2;
	}
	/* Replace the host's hypervisor leaves with Kapsel's (+2 spare slots). */
	struct kvm_cpuid2 *out =
		calloc(1, sizeof(*out) + (cpuid->nent + 2) * sizeof(out->entries[0]));
	if (!out) {
		free(cpuid);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < cpuid->nent; i++) {
		uint32_t fn = cpuid->entries[i].function;
		if (fn >= 0x40000000u && fn < 0x40000100u)
			continue;
		out->entries[out->nent++] = cpuid->entries[i];
	}
	struct kvm_cpuid_entry2 *base = &out->entries[out->nent++];
	memset(base, 0, sizeof(*base));
	base->function = KAPSEL_CPUID_BASE;
	base->eax = KAPSEL_CPUID_INFO;
	base->ebx = KAPSEL_CPUID_SIGNATURE_EBX;
	base->ecx = KAPSEL_CPUID_SIGNATURE_ECX;
	base->edx = KAPSEL_CPUID_SIGNATURE_EDX;
	struct kvm_cpuid_entry2 *info = &out->entries[out->nent++];
	memset(info, 0, sizeof(*info));
	info->function = KAPSEL_CPUID_INFO;
	info->eax = KAPSEL_ABI_VERSION;
	info->ebx = (uint32_t)KAPSEL_FEATURES_V1;
	info->ecx = KAPSEL_PORT_HYPERCALL;
	int rc = ioctl(vcpu->fd, KVM_SET_CPUID2, out);
	int err = rc < 0 ? -errno : 0;
	if (rc < 0)
		kapsel_error("KVM_SET_CPUID2 failed: %s", strerror(errno));
	free(cpuid);
	free(out);
	return err;
}

/* Create KVM vCPU vcpu->id, map its kvm_run area and give it Kapsel's
 * CPUID.  Returns 0 or a negative errno (message printed); vm_destroy
 * releases what was made. */
static int vcpu_create(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)vcpu->id);
	if (vcpu->fd < 0) {
		int err = -errno;
		kapsel_error("KVM_CREATE_VCPU %u failed: %s", vcpu->id, strerror(errno));
		return err;
	}
	vcpu->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
	if (vcpu->run == MAP_FAILED) {
		vcpu->run = NULL;
		int err = -errno;
		kapsel_error("cannot map vCPU %u's kvm_run area: %s", vcpu->id, strerror(errno));
		return err;
	}
	return setup_cpuid(vcpu);
}

static void fill_start_info(struct kapsel_vm *vm)
{
	struct kapsel_start_info *si = vm->start_info;
	const struct vm_config *config = vm->config;

	memset(si, 0, sizeof(*si));
	si->magic = KAPSEL_START_INFO_MAGIC;
	si->revision = KAPSEL_START_INFO_REVISION;
	si->abi_major = KAPSEL_ABI_MAJOR;
	si->abi_minor = KAPSEL_ABI_MINOR;
	si->features = KAPSEL_FEATURES_V1;
	si->ram_bytes = vm->mem.size_bytes;
	si->tsc_khz = vm->tsc_khz;
	si->event_page_gpa = KAPSEL_GPA_EVENT_PAGE;
	si->generation = vm->generation;
	si->boot_ns = vm_clock_ns(vm);
	si->vcpu_count = vm->vcpu_count;

	struct kapsel_memmap_entry *m = si->memmap;
	m[0] = (struct kapsel_memmap_entry){ 0, KAPSEL_GPA_START_INFO, KAPSEL_MEMMAP_RESERVED, 0 };
	m[1] = (struct kapsel_memmap_entry){ KAPSEL_GPA_START_INFO, 0x2000, KAPSEL_MEMMAP_SHARED,
					     0 };
	m[2] = (struct kapsel_memmap_entry){ KAPSEL_GPA_EVENT_PAGE + 0x1000,
					     KAPSEL_GPA_LOW_FREE - KAPSEL_GPA_EVENT_PAGE - 0x1000,
					     KAPSEL_MEMMAP_RESERVED, 0 };
	m[3] = (struct kapsel_memmap_entry){ KAPSEL_GPA_LOW_FREE,
					     vm->image.image_start - KAPSEL_GPA_LOW_FREE,
					     KAPSEL_MEMMAP_RAM, 0 };
	uint64_t image_end = (vm->image.image_end + 0xfff) & ~0xfffull;
	m[4] = (struct kapsel_memmap_entry){ vm->image.image_start,
					     image_end - vm->image.image_start, KAPSEL_MEMMAP_IMAGE,
					     0 };
	m[5] = (struct kapsel_memmap_entry){ image_end, vm->mem.size_bytes - image_end,
					     KAPSEL_MEMMAP_RAM, 0 };
	si->memmap_count = 6;
	if (config->cmdline)
		snprintf(si->cmdline, sizeof(si->cmdline), "%s", config->cmdline);
	memcpy(si->uuid, config->uuid, sizeof(si->uuid));
	snprintf(si->name, sizeof(si->name), "%s", config->name);

	memset(vm->events, 0, 4096);
	vm->events->magic = KAPSEL_EVENT_PAGE_MAGIC;
	vm->events->revision = 1;
	/* The control channel starts masked: only guests that handle control
	 * requests unmask it (abi.h, KAPSEL_EVTCHN_CONTROL). */
	vm->events->mask[KAPSEL_EVTCHN_CONTROL / 64] |= 1ull << (KAPSEL_EVTCHN_CONTROL % 64);
}

/* Open count consecutive ports to CPL3 code; the TSS bitmap checks one bit
 * per byte accessed, so a 2- or 4-byte port needs that many. */
static void open_ports(struct kapsel_vm *vm, uint16_t first, unsigned count)
{
	for (unsigned p = 0; p < count; p++)
		x86_boot_open_port(&vm->mem, (uint16_t)(first + p));
}

/* Every port a device claims: its register range, control port and the
 * 16-bit doorbell (a device without one has doorbell_port 0). */
static void open_device_ports(struct kapsel_vm *vm, const struct kapsel_device *dev)
{
	open_ports(vm, dev->io_port_base, dev->io_port_count);
	if (dev->io_ctl_port)
		open_ports(vm, dev->io_ctl_port, 1);
	if (dev->desc.doorbell_port)
		open_ports(vm, dev->desc.doorbell_port, 2);
}

int vm_add_device(struct kapsel_vm *vm, struct kapsel_device *dev)
{
	if (vm->device_count == KAPSEL_MAX_DEVICES)
		return -ENOSPC;
	for (unsigned i = 0; i < vm->device_count; i++) {
		const struct kapsel_device *other = vm->devices[i];
		if (!dev->io_port_count || !other->io_port_count)
			continue;
		if (dev->io_port_base < other->io_port_base + other->io_port_count &&
		    other->io_port_base < dev->io_port_base + dev->io_port_count)
			return -EBUSY;
	}
	dev->vm = vm;
	dev->desc.index = (uint16_t)vm->device_count;
	dev->evtchn_port = UINT32_MAX;
	dev->doorbell_fd = -1;
	vm->devices[vm->device_count++] = dev;
	open_device_ports(vm, dev);
	vm->start_info->devices[dev->desc.index] = dev->desc;
	vm->start_info->device_count = vm->device_count;
	return 0;
}

int vm_add_doorbell(struct kapsel_vm *vm, struct kapsel_device *dev)
{
	unsigned device_index = dev->desc.index;
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0)
		return -errno;
	struct kvm_ioeventfd io = {
		.addr = KAPSEL_PORT_DOORBELL(device_index),
		.len = 2,
		.fd = fd,
		.flags = KVM_IOEVENTFD_FLAG_PIO,
	};
	if (ioctl(vm->vm_fd, KVM_IOEVENTFD, &io) < 0) {
		int err = -errno;
		kapsel_error("KVM_IOEVENTFD for doorbell port %#x failed: %s", (unsigned)io.addr,
			     strerror(errno));
		close(fd);
		return err;
	}
	dev->doorbell_fd = fd;
	dev->desc.doorbell_port = (uint16_t)io.addr;
	open_ports(vm, dev->desc.doorbell_port, 2);
	vm->start_info->devices[device_index] = dev->desc;
	return 0;
}

void vm_add_trapped_doorbell(struct kapsel_vm *vm, struct kapsel_device *dev)
{
	uint16_t port = (uint16_t)KAPSEL_PORT_DOORBELL(dev->desc.index);
	dev->io_port_base = port;
	dev->io_port_count = 2;
	dev->desc.doorbell_port = port;
	open_device_ports(vm, dev);
	vm->start_info->devices[dev->desc.index] = dev->desc;
}

bool vm_evtchn_pending_for(const struct kapsel_vm *vm, unsigned vcpu)
{
	for (unsigned w = 0; w < KAPSEL_EVTCHN_COUNT / 64; w++) {
		uint64_t ready = __atomic_load_n(&vm->events->pending[w], __ATOMIC_SEQ_CST) &
				 ~__atomic_load_n(&vm->events->mask[w], __ATOMIC_RELAXED);
		while (ready) {
			unsigned port = w * 64 + (unsigned)__builtin_ctzll(ready);
			ready &= ready - 1;
			if (__atomic_load_n(&vm->evtchn[port].vcpu, __ATOMIC_RELAXED) == vcpu)
				return true;
		}
	}
	return false;
}

void vm_evtchn_deliver(struct kapsel_vm *vm, uint32_t port)
{
	unsigned target = __atomic_load_n(&vm->evtchn[port].vcpu, __ATOMIC_RELAXED);
	if (target >= vm->vcpu_count)
		target = 0;
	struct kapsel_vcpu *vcpu = &vm->vcpus[target];
	pv_cpu_event_raised(vcpu); /* an upcall, if the guest registered a callback */
	if (__atomic_load_n(&vcpu->blocked, __ATOMIC_SEQ_CST))
		vcpu_wake(vcpu);
}

void vm_evtchn_deliver_if_ready(struct kapsel_vm *vm, uint32_t port)
{
	uint64_t bit = 1ull << (port % 64);
	if ((__atomic_load_n(&vm->events->pending[port / 64], __ATOMIC_SEQ_CST) & bit) &&
	    !(__atomic_load_n(&vm->events->mask[port / 64], __ATOMIC_SEQ_CST) & bit))
		vm_evtchn_deliver(vm, port);
}

void vm_evtchn_notify(struct kapsel_vm *vm, uint32_t port)
{
	if (port >= KAPSEL_EVTCHN_COUNT)
		return;
	uint64_t bit = 1ull << (port % 64);
	__atomic_fetch_or(&vm->events->pending[port / 64], bit, __ATOMIC_SEQ_CST);
	/* Pairs with the vCPU's store of vcpu_blocked then load of pending in
	 * KAPSEL_HC_BLOCK: one of the two sides always sees the other. */
	if (__atomic_load_n(&vm->events->mask[port / 64], __ATOMIC_RELAXED) & bit)
		return;
	vm_evtchn_deliver(vm, port);
}

static void kick_signal_handler(int signo)
{
	(void)signo;
}
static int start_vcpu_threads(struct kapsel_vm *vm);
static void stop_vcpu_threads(struct kapsel_vm *vm);
static void vm_write_stats_file(struct kapsel_vm *vm);

void vcpu_wake(struct kapsel_vcpu *vcpu)
{
	if (vcpu->wake_fd < 0)
		return;
	uint64_t one = 1;
	ssize_t n = write(vcpu->wake_fd, &one, sizeof(one));
	(void)n; /* an eventfd at its maximum is already signalled */
}

void vm_request_stats(struct kapsel_vm *vm)
{
	__atomic_store_n(&vm->stats_requested, 1, __ATOMIC_SEQ_CST);
	/* Wakes a BLOCK sleep, which returns so the run loop writes them. */
	vcpu_wake(vm_boot_vcpu(vm));
}

void vm_request_stop(struct kapsel_vm *vm)
{
	vm_request_stop_for(vm, VM_STOP_REQUESTED);
}

/* Make vcpu look at its state again: immediate_exit catches a KVM_RUN
 * about to start, wake_fd a BLOCK sleep, a pause or a down vCPU's wait
 * and, with signal_thread, SIGUSR2 a KVM_RUN in progress on another
 * thread.  Async-signal-safe. */
static void kick_one(struct kapsel_vcpu *vcpu, bool signal_thread)
{
	if (vcpu->run)
		__atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	vcpu_wake(vcpu);
	if (signal_thread && (vcpu->id == 0 || vcpu->thread_created) &&
	    !pthread_equal(pthread_self(), vcpu->thread))
		pthread_kill(vcpu->thread, SIGUSR2);
}

static void kick_vcpus(struct kapsel_vm *vm, bool signal_threads)
{
	for (unsigned i = 0; i < vm->vcpu_count; i++)
		kick_one(&vm->vcpus[i], signal_threads);
}

static bool vm_started(const struct kapsel_vm *vm)
{
	enum vm_run_state state = __atomic_load_n(&vm->state, __ATOMIC_SEQ_CST);
	return state != VM_STATE_CREATED && state != VM_STATE_STOPPED;
}

void vm_request_stop_for(struct kapsel_vm *vm, enum vm_stop_reason reason)
{
	int none = 0;
	__atomic_compare_exchange_n(&vm->stop_requested, &none, (int)reason, false,
				    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	kick_vcpus(vm, vm->state == VM_STATE_RUNNING);
}

/* True on the thread of one of vm's vCPUs. */
static bool on_vcpu_thread(const struct kapsel_vm *vm)
{
	for (unsigned i = 0; i < vm->vcpu_count; i++)
		if (pthread_equal(pthread_self(), vm->vcpus[i].thread))
			return true;
	return false;
}

/* Kick every vCPU out of KVM_RUN or out of a BLOCK sleep (not signal-safe:
 * callers hold pause_lock or run on a normal thread). */
void vm_kick_vcpu(struct kapsel_vm *vm)
{
	kick_vcpus(vm, vm_started(vm));
}

void vcpu_kick(struct kapsel_vcpu *vcpu)
{
	kick_one(vcpu, vm_started(vcpu->vm));
}

const char *vm_state_name(const struct kapsel_vm *vm)
{
	switch (__atomic_load_n(&vm->state, __ATOMIC_SEQ_CST)) {
	case VM_STATE_CREATED:
		return "created";
	case VM_STATE_RUNNING:
		return "running";
	case VM_STATE_PAUSED:
		return "paused";
	default:
		return "stopped";
	}
}

/* Change state; pause_lock held.  Accounts paused time, wakes waiters. */
static void set_state_locked(struct kapsel_vm *vm, enum vm_run_state state)
{
	if (state == VM_STATE_PAUSED)
		vm->paused_since_ns = vm_clock_ns(vm);
	else if (vm->state == VM_STATE_PAUSED)
		vm->paused_total_ns += vm_clock_ns(vm) - vm->paused_since_ns;
	__atomic_store_n(&vm->state, state, __ATOMIC_SEQ_CST);
	pthread_cond_broadcast(&vm->pause_cond);
}

static void set_state(struct kapsel_vm *vm, enum vm_run_state state)
{
	pthread_mutex_lock(&vm->pause_lock);
	set_state_locked(vm, state);
	pthread_mutex_unlock(&vm->pause_lock);
}

/* A vCPU stops running (parks, goes down or the VM stops); pause_lock
 * held.  The last one to stop under a pause request pauses the VM. */
static void vcpu_stop_running_locked(struct kapsel_vm *vm)
{
	vm->vcpus_running--;
	if (vm->vcpus_running == 0 && vm->state == VM_STATE_RUNNING &&
	    __atomic_load_n(&vm->pause_requested, __ATOMIC_SEQ_CST))
		set_state_locked(vm, VM_STATE_PAUSED);
	pthread_cond_broadcast(&vm->pause_cond);
}

/* A vCPU runs again; pause_lock held.  The first one ends a pause. */
static void vcpu_start_running_locked(struct kapsel_vm *vm)
{
	vm->vcpus_running++;
	if (vm->state == VM_STATE_PAUSED)
		set_state_locked(vm, VM_STATE_RUNNING);
}

/* Sleep on vcpu's wake_fd until something writes it. */
static void vcpu_sleep(struct kapsel_vcpu *vcpu)
{
	struct pollfd pfd = { .fd = vcpu->wake_fd, .events = POLLIN };
	poll(&pfd, 1, -1);
	uint64_t drained;
	ssize_t n = read(vcpu->wake_fd, &drained, sizeof(drained));
	(void)n;
}

int vm_pause(struct kapsel_vm *vm)
{
	if (on_vcpu_thread(vm))
		return -EDEADLK;
	pthread_mutex_lock(&vm->pause_lock);
	if (vm->state == VM_STATE_CREATED || vm->state == VM_STATE_STOPPED ||
	    __atomic_load_n(&vm->stop_requested, __ATOMIC_SEQ_CST)) {
		pthread_mutex_unlock(&vm->pause_lock);
		return -ESRCH;
	}
	int already = __atomic_exchange_n(&vm->pause_requested, 1, __ATOMIC_SEQ_CST);
	if (!already)
		vm_kick_vcpu(vm);
	/* No vCPU in its run loop (between a reboot's steps): paused now. */
	if (vm->vcpus_running == 0 && vm->state == VM_STATE_RUNNING)
		set_state_locked(vm, VM_STATE_PAUSED);
	/* The last vCPU to park broadcasts PAUSED (or the VM leaves vm_run). */
	while (vm->state == VM_STATE_RUNNING)
		pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	int err = vm->state == VM_STATE_PAUSED ? (already ? -EALREADY : 0) : -ESRCH;
	pthread_mutex_unlock(&vm->pause_lock);
	return err;
}

int vm_resume(struct kapsel_vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	int err = 0;
	if (vm->state == VM_STATE_CREATED || vm->state == VM_STATE_STOPPED)
		err = -ESRCH;
	else if (!__atomic_exchange_n(&vm->pause_requested, 0, __ATOMIC_SEQ_CST))
		err = -EALREADY;
	else {
		for (unsigned i = 0; i < vm->vcpu_count; i++)
			vcpu_wake(&vm->vcpus[i]);
		/* Return once a vCPU has left its parking place, so that a
		 * state read right after says "running".  A new pause request
		 * meanwhile keeps it parked, which is what that caller wants. */
		while (vm->state == VM_STATE_PAUSED &&
		       !__atomic_load_n(&vm->pause_requested, __ATOMIC_SEQ_CST))
			pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	}
	pthread_mutex_unlock(&vm->pause_lock);
	return err;
}

/*
 * Park the vCPU while a pause is requested.  Called after KVM_RUN returned
 * EINTR with immediate_exit set: KVM has then completed the last exit's
 * I/O, applied dirty sync registers and stored them back, so the vCPU state
 * is settled.  The VM lock is released meanwhile.  The wait is on wake_fd
 * rather than a condition variable so that vm_request_stop stays
 * async-signal-safe (it writes wake_fd).
 */
static void vm_park(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	pthread_mutex_unlock(&vm->lock);
	pthread_mutex_lock(&vm->pause_lock);
	vcpu_stop_running_locked(vm);
	pthread_mutex_unlock(&vm->pause_lock);
	kapsel_debug("vCPU %u paused", vcpu->id);
	while (__atomic_load_n(&vm->pause_requested, __ATOMIC_SEQ_CST) &&
	       !__atomic_load_n(&vm->stop_requested, __ATOMIC_SEQ_CST))
		vcpu_sleep(vcpu);
	pthread_mutex_lock(&vm->pause_lock);
	vcpu_start_running_locked(vm);
	pthread_mutex_unlock(&vm->pause_lock);
	kapsel_debug("vCPU %u resumed", vcpu->id);
	pthread_mutex_lock(&vm->lock);
}

int vm_rebuild_hypervisor_pages(struct kapsel_vm *vm)
{
	int err = x86_boot_build_tables(&vm->mem);
	if (err)
		return err;
	open_ports(vm, KAPSEL_PORT_HYPERCALL, 4);
	for (unsigned i = 0; i < vm->device_count; i++)
		open_device_ports(vm, vm->devices[i]);
	return 0;
}

/* Load the guest and put the vCPU at its entry; used at boot and reboot. */
static int boot_guest(struct kapsel_vm *vm)
{
	int err;

	/* A reboot starts from zeroed RAM: punch out everything. */
	memset(vm->mem.host_base, 0, KAPSEL_GPA_IMAGE_MIN);
	err = x86_boot_build_tables(&vm->mem);
	if (err) {
		kapsel_error("guest memory too small for the boot tables");
		return err;
	}
	if (elf_image_copy_to_guest(&vm->image, &vm->mem) < 0) {
		kapsel_error("guest image does not fit in guest memory");
		return -EFAULT;
	}
	fill_start_info(vm);
	open_ports(vm, KAPSEL_PORT_HYPERCALL, 4); /* outl: four bytes */
	for (unsigned i = 0; i < KAPSEL_EVTCHN_COUNT; i++)
		vm->evtchn[i] =
			(struct vm_evtchn){ .allocated = false, .bound_device = -1, .vcpu = 0 };
	/* Reserved: EVTCHN_ALLOC skips it, EVTCHN_MASK accepts it. */
	vm->evtchn[KAPSEL_EVTCHN_CONTROL].allocated = true;
	pv_cpu_reset(vm);	   /* no handlers, timer off, upcalls masked */
	pv_mmu_clear(&vm->pv_mmu); /* no address spaces */
	for (unsigned i = 0; i < KAPSEL_MAX_VCPUS; i++)
		pv_mmu_vcpu_clear(&vm->vcpus[i].pv_mmu); /* kernel mode */
	/* Registers a hypercall left dirty in kvm_run (rax of the SHUTDOWN that
	 * asked for this reboot) would overwrite the entry state at the next
	 * KVM_RUN: drop them. */
	struct kapsel_vcpu *boot = vm_boot_vcpu(vm);
	if (boot->run)
		boot->run->kvm_dirty_regs = 0;
	/* vCPU 0 runs the entry point; the others wait for VCPU_UP. */
	__atomic_store_n(&boot->power, VCPU_POWER_UP, __ATOMIC_SEQ_CST);
	for (unsigned i = 1; i < vm->vcpu_count; i++)
		__atomic_store_n(&vm->vcpus[i].power, VCPU_POWER_DOWN, __ATOMIC_SEQ_CST);
	const struct x86_entry entry = { .rip = vm->image.entry,
					 .rsp = KAPSEL_GPA_INITIAL_STACK,
					 .rdi = KAPSEL_GPA_START_INFO };
	err = x86_boot_set_vcpu_state(boot->fd, 0, &entry);
	if (err) {
		kapsel_error("cannot set the vCPU's boot registers: %s", strerror(-err));
		return err;
	}
	return 0;
}

int vm_create_without_devices(struct kapsel_vm *vm, struct vm_config *config)
{
	char error[512];
	int err;

	memset(vm, 0, sizeof(*vm));
	pthread_mutex_init(&vm->pause_lock, NULL);
	pthread_cond_init(&vm->pause_cond, NULL);
	pthread_mutex_init(&vm->lock, NULL);
	vm->config = config;
	vm->kvm_fd = vm->vm_fd = -1;
	for (unsigned i = 0; i < KAPSEL_MAX_VCPUS; i++)
		vm->vcpus[i] = (struct kapsel_vcpu){ .vm = vm, .id = i, .fd = -1, .wake_fd = -1 };
	vm->mem.memfd = -1;
	vm->boot_monotonic_ns = monotonic_ns();
	vm->state = VM_STATE_CREATED;
	vm->vcpus[0].thread = pthread_self();
	log_limit_init(&vm->guest_log, 0, 0);
	hypercall_table_init(&vm->hypercalls);
	vm->hypercalls.log_limit = &vm->guest_log;
	err = hypercall_register_core(&vm->hypercalls);
	if (err)
		goto fail;

	err = elf_image_load_file(config->kernel_path, config->memory_bytes, &vm->image, error,
				  sizeof(error));
	if (err) {
		kapsel_error("%s", error);
		goto fail;
	}

	vm->kvm_fd = open_kvm();
	if (vm->kvm_fd < 0) {
		err = vm->kvm_fd;
		goto fail;
	}
	err = check_kvm(vm->kvm_fd);
	if (err)
		goto fail;
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		err = -errno;
		kapsel_error("KVM_CREATE_VM failed: %s%s", strerror(errno),
			     errno == EMFILE || errno == ENOMEM
				     ? "; too many VMs or too little memory on this host"
				     : "");
		goto fail;
	}
	if (config->memory_bytes <= KVM_TSS_GPA)
		ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, KVM_TSS_GPA);

	err = guest_memory_create(&vm->mem, config->memory_bytes, config->name);
	if (err) {
		kapsel_error("cannot allocate %llu MiB of guest memory: %s",
			     (unsigned long long)(config->memory_bytes >> 20), strerror(-err));
		goto fail;
	}
	/* Hypercall pointers, rings and DMA may not reach the boot tables. */
	vm->mem.guest_floor_gpa = KAPSEL_GPA_LOW_FREE;
	struct kvm_userspace_memory_region region = {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = vm->mem.size_bytes,
		.userspace_addr = (uint64_t)(uintptr_t)vm->mem.host_base,
	};
	if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
		err = -errno;
		kapsel_error("KVM_SET_USER_MEMORY_REGION failed: %s", strerror(errno));
		goto fail;
	}

	err = pv_mmu_create(vm);
	if (err)
		goto fail;

	int mmap_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size < (int)sizeof(struct kvm_run)) {
		err = -EINVAL;
		kapsel_error("KVM_GET_VCPU_MMAP_SIZE returned %d", mmap_size);
		goto fail;
	}
	vm->run_size = (size_t)mmap_size;
	unsigned vcpus = config->vcpus ? config->vcpus : 1;
	if (vcpus > KAPSEL_MAX_VCPUS) {
		err = -EINVAL;
		kapsel_error("VM '%s' asks for %u vCPUs; Kapsel runs 1 to %u", config->name, vcpus,
			     KAPSEL_MAX_VCPUS);
		goto fail;
	}
	vm->vcpu_count = vcpus;
	for (unsigned i = 0; i < vm->vcpu_count; i++) {
		err = vcpu_create(&vm->vcpus[i]);
		if (err)
			goto fail;
		vm->vcpus[i].wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (vm->vcpus[i].wake_fd < 0) {
			err = -errno;
			kapsel_error("cannot create vCPU %u's wake-up eventfd: %s", i,
				     strerror(errno));
			goto fail;
		}
		vcpu_set_number_msr(&vm->vcpus[i]);
		/* Where a syscall in user mode goes; inert until EFER.SCE. */
		pv_mmu_set_syscall_msrs(&vm->vcpus[i]);
	}
	int khz = ioctl(vm_boot_vcpu(vm)->fd, KVM_GET_TSC_KHZ, 0);
	vm->tsc_khz = khz > 0 ? (uint64_t)khz : 0;

	vm->start_info = guest_memory_translate(&vm->mem, KAPSEL_GPA_START_INFO, 4096);
	vm->events = guest_memory_translate(&vm->mem, KAPSEL_GPA_EVENT_PAGE, 4096);
	err = boot_guest(vm);
	if (err)
		goto fail;

	err = console_open(&vm->console, config->console_output_path,
			   config->console_output_max_bytes, config->console_input ? 0 : -1);
	if (err)
		goto fail;
	/* A kick may reach a vCPU thread before vm_run: never the default
	 * action of SIGUSR2 (the end of the process). */
	struct sigaction sa = { .sa_handler = kick_signal_handler };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR2, &sa, NULL);
	err = start_vcpu_threads(vm);
	if (err)
		goto fail;
	return 0;

fail:
	vm_destroy(vm);
	return err;
}

int vm_create(struct kapsel_vm *vm, struct vm_config *config)
{
	int err = vm_create_without_devices(vm, config);
	if (err)
		return err;
	err = devices_attach(vm);
	if (err)
		vm_destroy(vm);
	return err;
}

void vm_destroy(struct kapsel_vm *vm)
{
	/* The threads of vCPUs 1.. wait outside the guest once vm_run returned. */
	stop_vcpu_threads(vm);
	/* First stop the console input thread: its callback reaches into the
	 * PV console device and the event page, both released below. */
	console_close(&vm->console);
	for (unsigned i = vm->device_count; i-- > 0;) {
		struct kapsel_device *dev = vm->devices[i];
		int doorbell_fd = dev->doorbell_fd;
		if (dev->ops->destroy)
			dev->ops->destroy(dev);
		if (doorbell_fd >= 0)
			close(doorbell_fd);
		vm->devices[i] = NULL;
	}
	vm->device_count = 0;
	pv_cpu_destroy(vm);
	pv_mmu_destroy(vm);
	for (unsigned i = 0; i < KAPSEL_MAX_VCPUS; i++) {
		struct kapsel_vcpu *vcpu = &vm->vcpus[i];
		if (vcpu->run)
			munmap(vcpu->run, vm->run_size);
		vcpu->run = NULL;
		if (vcpu->fd >= 0)
			close(vcpu->fd);
		vcpu->fd = -1;
		if (vcpu->wake_fd >= 0)
			close(vcpu->wake_fd);
		vcpu->wake_fd = -1;
	}
	vm->vcpu_count = 0;
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	vm->vm_fd = vm->kvm_fd = -1;
	guest_memory_destroy(&vm->mem);
	elf_image_free(&vm->image);
	/* The devices and their threads are gone: nothing logs through it now. */
	log_limit_flush(&vm->guest_log);
	log_limit_destroy(&vm->guest_log);
	pthread_cond_destroy(&vm->pause_cond);
	pthread_mutex_destroy(&vm->pause_lock);
	pthread_mutex_destroy(&vm->lock);
}

static struct kapsel_device *device_for_port(struct kapsel_vm *vm, uint16_t port)
{
	for (unsigned i = 0; i < vm->device_count; i++) {
		struct kapsel_device *dev = vm->devices[i];
		if ((dev->io_port_count && port >= dev->io_port_base &&
		     port < dev->io_port_base + dev->io_port_count) ||
		    (dev->io_ctl_port && port == dev->io_ctl_port))
			return dev;
	}
	return NULL;
}

static void handle_hypercall(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	struct kvm_regs *regs = &vcpu->run->s.regs.regs;
	uint64_t args[HYPERCALL_ARG_COUNT] = { regs->rdi, regs->rsi, regs->rcx, regs->r8,
					       regs->r9 };
	/* The call number is the 32-bit value written, i.e. eax. */
	uint64_t nr = (uint32_t)regs->rax;
	int64_t result = hypercall_dispatch(&vm->hypercalls, vcpu, nr, args);
	regs = &vcpu->run->s.regs.regs; /* handlers may not touch it, but be safe */
	regs->rax = (uint64_t)result;
	vcpu->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
}

static void handle_io(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	struct kvm_run *run = vcpu->run;
	uint16_t port = run->io.port;
	unsigned size = run->io.size;
	/* KVM puts count elements of size bytes at data_offset inside the
	 * kvm_run mapping (a rep ins/outs is cut to one page).  Every path
	 * below copies count * size bytes there and at most 4 into a
	 * uint32_t, so check that instead of trusting it. */
	uint64_t data_bytes = (uint64_t)size * run->io.count;
	if ((size != 1 && size != 2 && size != 4) || run->io.data_offset > vm->run_size ||
	    data_bytes > vm->run_size - run->io.data_offset) {
		vcpu->exits[VM_EXIT_OTHER]++;
		crash_report_fatal(
			vcpu,
			"KVM reported a port access of impossible size, count or data offset");
		return;
	}
	uint8_t *data = (uint8_t *)run + run->io.data_offset;

	if (port == KAPSEL_PORT_HYPERCALL && run->io.direction == KVM_EXIT_IO_OUT && size == 4 &&
	    run->io.count == 1) {
		vcpu->exits[VM_EXIT_IO_HYPERCALL]++;
		handle_hypercall(vcpu);
		return;
	}
	if (port == KAPSEL_PORT_FAULT) {
		vcpu->exits[VM_EXIT_FAULT]++;
		/* The guest's own handler first (pv_cpu.c), else a crash report. */
		if (!pv_cpu_deliver_trap(vcpu))
			crash_report_fault(vcpu);
		return;
	}
	struct kapsel_device *dev = device_for_port(vm, port);
	if (!dev && port >= KAPSEL_PORT_DOORBELL_BASE &&
	    port < KAPSEL_PORT_DOORBELL(KAPSEL_MAX_DEVICES)) {
		/* A doorbell write KVM did not catch (wrong width): harmless. */
		vcpu->exits[VM_EXIT_IO_UNCLAIMED]++;
		return;
	}
	if (!dev) {
		vcpu->exits[VM_EXIT_IO_UNCLAIMED]++;
		kapsel_guest_warn(&vm->guest_log, "guest %s unclaimed port %#x (size %u); %s",
				  run->io.direction == KVM_EXIT_IO_OUT ? "wrote" : "read", port,
				  size,
				  run->io.direction == KVM_EXIT_IO_OUT ? "ignored"
								       : "answered with all ones");
		if (run->io.direction == KVM_EXIT_IO_IN)
			memset(data, 0xff, (size_t)size * run->io.count);
		return;
	}
	vcpu->exits[VM_EXIT_IO_DEVICE]++;
	dev->exits++;
	if (run->io.count > 1 && dev->ops->io_string) {
		dev->ops->io_string(dev, port, size, run->io.count,
				    run->io.direction == KVM_EXIT_IO_OUT, data);
		return;
	}
	device_io_each(dev, port, size, run->io.count, run->io.direction == KVM_EXIT_IO_OUT, data);
}

static int reboot_guest(struct kapsel_vm *vm)
{
	kapsel_debug("rebooting the guest");
	vm->generation++;
	/* Devices drop the old boot's rings first, with their I/O finished:
	 * nothing may land in (or be read as requests from) the new boot's
	 * memory. */
	for (unsigned i = 0; i < vm->device_count; i++)
		if (vm->devices[i]->ops->reset)
			vm->devices[i]->ops->reset(vm->devices[i]);
	/* The new boot starts from zeroed RAM, as the first one did. */
	guest_memory_clear(&vm->mem);
	int err = boot_guest(vm);
	if (err)
		return err;
	/* Devices announce themselves again in the new start info. */
	for (unsigned i = 0; i < vm->device_count; i++) {
		struct kapsel_device *dev = vm->devices[i];
		dev->evtchn_port = UINT32_MAX;
		vm->start_info->devices[i] = dev->desc;
		open_device_ports(vm, dev);
	}
	vm->start_info->device_count = vm->device_count;
	set_state(vm, VM_STATE_RUNNING);
	return 0;
}

/* Apply on_poweroff / on_reboot / on_crash once the guest has stopped. */
static bool lifecycle_continue(struct kapsel_vm *vm)
{
	enum vm_lifecycle_action action;
	switch (vm->shutdown_reason) {
	case KAPSEL_SHUTDOWN_REBOOT:
		action = vm->config->on_reboot;
		break;
	case KAPSEL_SHUTDOWN_CRASH:
		action = vm->config->on_crash;
		break;
	default:
		action = vm->config->on_poweroff;
		break;
	}
	if (action != VM_ACTION_RESTART || vm->vmm_failed ||
	    __atomic_load_n(&vm->stop_requested, __ATOMIC_SEQ_CST))
		return false;
	if (reboot_guest(vm) < 0) {
		vm->exit_code = KAPSEL_EXIT_VMM_ERROR;
		return false;
	}
	return true;
}

/* The VM is over for now: a stop request, or the guest shut down or crashed. */
static bool vm_stopping(const struct kapsel_vm *vm)
{
	return __atomic_load_n(&vm->stop_requested, __ATOMIC_SEQ_CST) ||
	       __atomic_load_n(&vm->state, __ATOMIC_SEQ_CST) == VM_STATE_STOPPED;
}

/* Note one KVM_RUN in vcpu's history (crash_report.c prints it). */
static void record_run(struct kapsel_vcpu *vcpu, uint64_t runs, bool failed, bool entry_set,
		       uint64_t entry_rip, uint64_t entry_rsp)
{
	const struct kvm_run *run = vcpu->run;
	struct vcpu_run_record *r = &vcpu->history[runs % VCPU_RUN_HISTORY];
	r->run = runs;
	r->entry_set = entry_set;
	r->entry_rip = entry_rip;
	r->entry_rsp = entry_rsp;
	r->exit_reason = failed ? VCPU_RUN_EINTR : run->exit_reason;
	r->port = !failed && run->exit_reason == KVM_EXIT_IO ? run->io.port : 0;
	r->rip = run->s.regs.regs.rip;
	r->rsp = run->s.regs.regs.rsp;
	r->cr3 = run->s.regs.sregs.cr3;
	r->cs = run->s.regs.sregs.cs.selector;
}

/*
 * The exit loop of one vCPU, on its own thread, with vm->lock held (it is
 * released around KVM_RUN).  Returns when the VM stops (a stop request,
 * shutdown, crash, KVM failure) or, for vCPUs 1.., when it goes down.
 */
static void vcpu_run(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	struct kvm_run *run = vcpu->run;
	/* Special registers too: the run history records cr3 and cs. */
	run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
	for (;;) {
		int stop_reason = __atomic_load_n(&vm->stop_requested, __ATOMIC_SEQ_CST);
		if (stop_reason) {
			if (vcpu->id == 0 && vm->state == VM_STATE_RUNNING) {
				vm->exit_code = KAPSEL_EXIT_VMM_ERROR;
				if (stop_reason == VM_STOP_SAVED)
					kapsel_debug("VM stopped after its state was saved");
				else if (stop_reason == VM_STOP_MIGRATED)
					kapsel_debug(
						"VM stopped: it runs on the migration destination now");
				else if (stop_reason == VM_STOP_MEMORY_DAMAGED)
					kapsel_debug("VM stopped: its memory failed the check");
				else
					kapsel_warn("VM '%s' stopped by request", vm->config->name);
			}
			break;
		}
		if (vm->state == VM_STATE_STOPPED ||
		    __atomic_load_n(&vcpu->power, __ATOMIC_SEQ_CST) == VCPU_POWER_DOWN)
			break;
		if (vcpu->id == 0 && __atomic_exchange_n(&vm->stats_requested, 0, __ATOMIC_SEQ_CST))
			vm_write_stats_file(vm);
		/* A pause first lets KVM finish the last exit (immediate_exit
		 * makes KVM_RUN complete pending I/O and return EINTR). */
		if (__atomic_load_n(&vm->pause_requested, __ATOMIC_SEQ_CST))
			__atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		/* Address-space or mode change: through the switch stub. */
		if (!pv_mmu_finish(vcpu))
			break;
		/* A TLB shootdown (pv_mmu.c) waits for runs to move while
		 * in_guest is set; it holds vm->lock, which KVM_RUN's return
		 * does not need. */
		__atomic_store_n(&vcpu->in_guest, 1, __ATOMIC_SEQ_CST);
		pthread_mutex_unlock(&vm->lock);
		bool entry_set = run->kvm_dirty_regs & KVM_SYNC_X86_REGS;
		uint64_t entry_rip = run->s.regs.regs.rip, entry_rsp = run->s.regs.regs.rsp;
		int rc = ioctl(vcpu->fd, KVM_RUN, 0);
		int run_errno = errno;
		uint64_t runs = __atomic_add_fetch(&vcpu->runs, 1, __ATOMIC_SEQ_CST);
		__atomic_store_n(&vcpu->in_guest, 0, __ATOMIC_SEQ_CST);
		record_run(vcpu, runs, rc < 0, entry_set, entry_rip, entry_rsp);
		pthread_mutex_lock(&vm->lock);
		if (rc < 0) {
			if (run_errno == EINTR || run_errno == EAGAIN) {
				vcpu->exits[VM_EXIT_INTR]++;
				run->immediate_exit = 0;
				if (__atomic_load_n(&vm->pause_requested, __ATOMIC_SEQ_CST) &&
				    !__atomic_load_n(&vm->stop_requested, __ATOMIC_SEQ_CST)) {
					/* Never park (and save) inside the CPL0 switch stub. */
					pv_mmu_settle(vcpu);
					vm_park(vcpu);
				}
				/* The last exit is complete here: timers and upcalls. */
				pv_cpu_poll_timers(vcpu);
				if (!pv_cpu_deliver_upcall(vcpu))
					break;
				continue;
			}
			kapsel_error("KVM_RUN failed on vCPU %u: %s", vcpu->id,
				     strerror(run_errno));
			vm->exit_code = KAPSEL_EXIT_VMM_ERROR;
			vm->vmm_failed = true;
			vm->state = VM_STATE_STOPPED;
			break;
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			handle_io(vcpu);
			break;
		case KVM_EXIT_MMIO:
			vcpu->exits[VM_EXIT_MMIO]++;
			crash_report_fatal(vcpu, "guest accessed MMIO address outside RAM");
			break;
		case KVM_EXIT_HLT:
			vcpu->exits[VM_EXIT_HLT]++;
			/* The PV MMU's syscall stub halts on purpose. */
			if (pv_mmu_handle_hlt(vcpu))
				break;
			crash_report_fatal(vcpu, "guest halted the CPU (hlt) with interrupts off");
			break;
		case KVM_EXIT_SHUTDOWN:
			vcpu->exits[VM_EXIT_SHUTDOWN]++;
			crash_report_fatal(vcpu,
					   "triple fault (the CPU could not deliver an exception)");
			break;
		case KVM_EXIT_INTR:
			vcpu->exits[VM_EXIT_INTR]++;
			break;
		case KVM_EXIT_FAIL_ENTRY:
			vcpu->exits[VM_EXIT_OTHER]++;
			crash_report_fatal(vcpu,
					   "KVM refused to enter the guest (KVM_EXIT_FAIL_ENTRY)");
			break;
		case KVM_EXIT_INTERNAL_ERROR:
			vcpu->exits[VM_EXIT_OTHER]++;
			crash_report_fatal(
				vcpu,
				"KVM internal error (often an instruction KVM cannot emulate)");
			break;
		default:
			vcpu->exits[VM_EXIT_OTHER]++;
			crash_report_fatal(vcpu, "unexpected KVM exit reason");
			break;
		}
		if (vm->state == VM_STATE_STOPPED)
			break;
		/* An upcall waits for the exit to complete: KVM_RUN with
		 * immediate_exit finishes it and returns EINTR (above). */
		if (pv_cpu_upcall_wanted(vcpu))
			__atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	}
	/* This vCPU ended the VM (shutdown, crash): the others stop too. */
	if (vm_stopping(vm))
		for (unsigned i = 0; i < vm->vcpu_count; i++)
			if (i != vcpu->id)
				kick_one(&vm->vcpus[i], true);
}

/*
 * Wait on vcpu's wake_fd until it may run: the VM runs, no pause is
 * requested, the vCPU is up (or starting).  Returns true with it counted
 * in vcpus_running, or false when the caller should stop: for vCPU 0 when
 * the VM stops, for the others when vm_destroy ends their thread.
 */
static bool vcpu_wait_to_run(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	for (;;) {
		pthread_mutex_lock(&vm->pause_lock);
		bool stopping = vm_stopping(vm);
		if (vcpu->id == 0 ? stopping
				  : __atomic_load_n(&vm->vcpu_threads_exit, __ATOMIC_SEQ_CST)) {
			pthread_mutex_unlock(&vm->pause_lock);
			return false;
		}
		if (!stopping && vm->state != VM_STATE_CREATED &&
		    !__atomic_load_n(&vm->pause_requested, __ATOMIC_SEQ_CST) &&
		    __atomic_load_n(&vcpu->power, __ATOMIC_SEQ_CST) != VCPU_POWER_DOWN) {
			vcpu_start_running_locked(vm);
			pthread_mutex_unlock(&vm->pause_lock);
			return true;
		}
		pthread_mutex_unlock(&vm->pause_lock);
		vcpu_sleep(vcpu);
	}
}

/* MSR TSC_AUX: rdtscp leaves the vCPU's number in ecx (docs/abi.md 19). */
#define MSR_TSC_AUX 0xc0000103u

void vcpu_set_number_msr(struct kapsel_vcpu *vcpu)
{
	struct {
		struct kvm_msrs header;
		struct kvm_msr_entry entry;
	} msrs = { .header.nmsrs = 1, .entry = { .index = MSR_TSC_AUX, .data = vcpu->id } };
	if (ioctl(vcpu->fd, KVM_SET_MSRS, &msrs) != 1)
		kapsel_debug("vCPU %u: no TSC_AUX (the host CPU has no rdtscp)", vcpu->id);
}

/* Take KAPSEL_HC_VCPU_UP's request: a fresh vCPU at its entry.  vm->lock
 * held, on the vCPU's thread. */
static void vcpu_take_start(struct kapsel_vcpu *vcpu)
{
	if (__atomic_load_n(&vcpu->power, __ATOMIC_ACQUIRE) != VCPU_POWER_STARTING)
		return;
	vcpu->run->kvm_dirty_regs = 0;
	pv_cpu_vcpu_reset(vcpu);
	pv_mmu_vcpu_start(vcpu);
	int err = x86_boot_set_vcpu_state(vcpu->fd, vcpu->id, &vcpu->start);
	if (err) {
		kapsel_error("cannot start vCPU %u: setting its registers failed: %s", vcpu->id,
			     strerror(-err));
		__atomic_store_n(&vcpu->power, VCPU_POWER_DOWN, __ATOMIC_SEQ_CST);
		return;
	}
	vcpu_set_number_msr(vcpu);
	kapsel_debug("vCPU %u up at %#llx", vcpu->id, (unsigned long long)vcpu->start.rip);
	__atomic_store_n(&vcpu->power, VCPU_POWER_UP, __ATOMIC_SEQ_CST);
}

/* One stretch of running: until the VM stops or (vCPUs 1..) it goes down. */
static void vcpu_run_while_up(struct kapsel_vcpu *vcpu)
{
	struct kapsel_vm *vm = vcpu->vm;
	pthread_mutex_lock(&vm->lock);
	vcpu_take_start(vcpu);
	pv_cpu_timer_restore(vcpu);
	vcpu_run(vcpu);
	if (vcpu->id != 0 && __atomic_load_n(&vcpu->power, __ATOMIC_SEQ_CST) == VCPU_POWER_DOWN &&
	    vcpu_complete_exit(vcpu) < 0)
		kapsel_debug("vCPU %u: its last exit did not complete as it went down", vcpu->id);
	pthread_mutex_unlock(&vm->lock);
	pthread_mutex_lock(&vm->pause_lock);
	vcpu_stop_running_locked(vm);
	pthread_mutex_unlock(&vm->pause_lock);
}

/* The thread of vCPU 1..: waits to be brought up, runs, until vm_destroy. */
static void *vcpu_thread(void *arg)
{
	struct kapsel_vcpu *vcpu = arg;
	struct kapsel_vm *vm = vcpu->vm;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	sandbox_thread_role(SANDBOX_ROLE_VCPU);
	sigset_t kick;
	sigemptyset(&kick);
	sigaddset(&kick, SIGUSR2);
	pthread_sigmask(SIG_UNBLOCK, &kick, NULL);
	vcpu->tid = (int)gettid();
	int err = pv_cpu_start(vcpu);
	if (err)
		kapsel_warn("vCPU %u timers unavailable: %s", vcpu->id, strerror(-err));
	pthread_mutex_lock(&vm->pause_lock);
	vcpu->thread_ready = true;
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
	while (vcpu_wait_to_run(vcpu))
		vcpu_run_while_up(vcpu);
	return NULL;
}

/* Start the threads of vCPUs 1.. (vm_create, before the sandbox: the vCPU
 * role may not create threads).  Returns 0 or a negative errno. */
static int start_vcpu_threads(struct kapsel_vm *vm)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int err = 0;
	for (unsigned i = 1; i < vm->vcpu_count && !err; i++) {
		struct kapsel_vcpu *vcpu = &vm->vcpus[i];
		err = -pthread_create(&vcpu->thread, NULL, vcpu_thread, vcpu);
		if (err)
			kapsel_error("cannot start the thread of vCPU %u: %s", i, strerror(-err));
		else
			vcpu->thread_created = true;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	/* Each names its sandbox role before the sandbox can be entered. */
	pthread_mutex_lock(&vm->pause_lock);
	for (unsigned i = 1; i < vm->vcpu_count; i++)
		while (vm->vcpus[i].thread_created && !vm->vcpus[i].thread_ready)
			pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	pthread_mutex_unlock(&vm->pause_lock);
	return err;
}

static void stop_vcpu_threads(struct kapsel_vm *vm)
{
	__atomic_store_n(&vm->vcpu_threads_exit, 1, __ATOMIC_SEQ_CST);
	for (unsigned i = 1; i < KAPSEL_MAX_VCPUS; i++) {
		struct kapsel_vcpu *vcpu = &vm->vcpus[i];
		if (!vcpu->thread_created)
			continue;
		vcpu_wake(vcpu);
		pthread_join(vcpu->thread, NULL);
		vcpu->thread_created = false;
	}
}

int vm_run(struct kapsel_vm *vm)
{
	struct sigaction sa = { .sa_handler = kick_signal_handler };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR2, &sa, NULL);
	struct kapsel_vcpu *boot = vm_boot_vcpu(vm);
	boot->thread = pthread_self();
	boot->tid = (int)gettid();
	int pv_err = pv_cpu_start(boot);
	if (pv_err)
		kapsel_warn("vCPU timers unavailable: %s", strerror(-pv_err));
	set_state(vm, VM_STATE_RUNNING);
	for (;;) {
		for (unsigned i = 1; i < vm->vcpu_count; i++)
			vcpu_wake(&vm->vcpus[i]);
		while (vcpu_wait_to_run(boot))
			vcpu_run_while_up(boot);
		/* Every other vCPU leaves the guest before a reboot or the end. */
		pthread_mutex_lock(&vm->pause_lock);
		for (unsigned i = 1; i < vm->vcpu_count; i++)
			kick_one(&vm->vcpus[i], true);
		while (vm->vcpus_running > 0)
			pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
		pthread_mutex_unlock(&vm->pause_lock);
		if (vm->state != VM_STATE_STOPPED || !lifecycle_continue(vm))
			break;
	}
	set_state(vm, VM_STATE_STOPPED);
	return vm->exit_code;
}

static const char *const exit_counter_names[VM_EXIT_COUNTER_COUNT] = {
	[VM_EXIT_IO_HYPERCALL] = "io_hypercall",
	[VM_EXIT_IO_DEVICE] = "io_device",
	[VM_EXIT_IO_UNCLAIMED] = "io_unclaimed",
	[VM_EXIT_MMIO] = "mmio",
	[VM_EXIT_HLT] = "hlt",
	[VM_EXIT_SHUTDOWN] = "shutdown",
	[VM_EXIT_INTR] = "interrupted",
	[VM_EXIT_FAULT] = "guest_fault",
	[VM_EXIT_OTHER] = "other",
};

static void vm_write_stats_file(struct kapsel_vm *vm)
{
	const char *path = vm->config->stats_path;
	if (!path) {
		vm_print_stats(vm, stderr);
		return;
	}
	/* Written whole to a temporary name, then renamed: readers never see
	 * a half-written file. */
	char temp[4096];
	snprintf(temp, sizeof(temp), "%s.tmp", path);
	FILE *out = fopen(temp, "w");
	if (!out) {
		kapsel_warn("cannot write stats to '%s': %s", temp, strerror(errno));
		return;
	}
	vm_print_stats(vm, out);
	if (fclose(out) != 0 || rename(temp, path) != 0)
		kapsel_warn("cannot write stats to '%s': %s", path, strerror(errno));
}

uint64_t vm_exits(const struct kapsel_vm *vm, enum vm_exit_counter counter)
{
	uint64_t sum = 0;
	for (unsigned i = 0; i < vm->vcpu_count; i++)
		sum += vm->vcpus[i].exits[counter];
	return sum;
}

int vcpu_guest_tsc(struct kapsel_vcpu *vcpu, uint64_t *tsc)
{
	struct {
		struct kvm_msrs header;
		struct kvm_msr_entry entry;
	} msrs = { .header.nmsrs = 1, .entry.index = MSR_IA32_TSC };
	if (ioctl(vcpu->fd, KVM_GET_MSRS, &msrs) != 1)
		return -EIO;
	*tsc = msrs.entry.data;
	return 0;
}

int vm_guest_tsc(struct kapsel_vm *vm, uint64_t *tsc)
{
	return vcpu_guest_tsc(vm_boot_vcpu(vm), tsc);
}

int vcpu_complete_exit(struct kapsel_vcpu *vcpu)
{
	__atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	int rc = ioctl(vcpu->fd, KVM_RUN, 0);
	int err = (rc < 0 && errno != EINTR && errno != EAGAIN) ? -errno : 0;
	__atomic_store_n(&vcpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
	return rc == 0 ? -EIO : err; /* rc 0: the guest ran, immediate_exit was ignored */
}

void vm_print_stats(struct kapsel_vm *vm, FILE *out)
{
	uint64_t total = 0;
	for (unsigned i = 0; i < VM_EXIT_COUNTER_COUNT; i++)
		total += vm_exits(vm, (enum vm_exit_counter)i);
	fprintf(out, "vm %s: uptime_ns %llu\n", vm->config->name,
		(unsigned long long)vm_clock_ns(vm));
	fprintf(out, "  exits_total: %llu\n", (unsigned long long)total);
	for (unsigned i = 0; i < VM_EXIT_COUNTER_COUNT; i++)
		if (vm_exits(vm, (enum vm_exit_counter)i))
			fprintf(out, "  exits_%s: %llu\n", exit_counter_names[i],
				(unsigned long long)vm_exits(vm, (enum vm_exit_counter)i));
	for (unsigned i = 0; i < HYPERCALL_TABLE_SIZE; i++) {
		const struct hypercall_entry *e = &vm->hypercalls.entries[i];
		if (e->fn && e->calls)
			fprintf(out, "  hypercall_%s: %llu\n", e->name,
				(unsigned long long)e->calls);
	}
	/* Several vCPUs: each one's state and exits beside the VM's sums. */
	if (vm->vcpu_count > 1) {
		fprintf(out, "  vcpus: %u\n", vm->vcpu_count);
		for (unsigned i = 0; i < vm->vcpu_count; i++) {
			const struct kapsel_vcpu *vcpu = &vm->vcpus[i];
			uint64_t exits = 0;
			for (unsigned c = 0; c < VM_EXIT_COUNTER_COUNT; c++)
				exits += vcpu->exits[c];
			fprintf(out, "  vcpu%u_power: %s\n", i,
				vcpu_power_name(__atomic_load_n(&vcpu->power, __ATOMIC_RELAXED)));
			fprintf(out, "  vcpu%u_exits_total: %llu\n", i, (unsigned long long)exits);
		}
	}
	for (unsigned i = 0; i < vm->vcpu_count; i++)
		pv_cpu_print_stats(&vm->vcpus[i], out);
	pv_mmu_print_stats(vm, out);
	if (vm->hypercalls.unknown_calls)
		fprintf(out, "  hypercall_unknown: %llu\n",
			(unsigned long long)vm->hypercalls.unknown_calls);
	/* Console output and guest-triggered log lines: what a guest could
	 * not push through, so an operator sees it was bounded. */
	struct console_output_stats console;
	console_output_stats(&vm->console, &console);
	fprintf(out, "  console_output_bytes: %llu\n", (unsigned long long)console.written_bytes);
	fprintf(out, "  console_dropped_full_bytes: %llu\n",
		(unsigned long long)console.dropped_full_bytes);
	fprintf(out, "  console_dropped_closed_bytes: %llu\n",
		(unsigned long long)console.dropped_closed_bytes);
	if (console.max_bytes) {
		fprintf(out, "  console_output_max_bytes: %llu\n",
			(unsigned long long)console.max_bytes);
		fprintf(out, "  console_output_capped: %d\n", console.capped ? 1 : 0);
		fprintf(out, "  console_dropped_cap_bytes: %llu\n",
			(unsigned long long)console.dropped_cap_bytes);
	}
	fprintf(out, "  log_suppressed: %llu\n",
		(unsigned long long)log_limit_suppressed_total(&vm->guest_log));
	for (unsigned i = 0; i < vm->device_count; i++) {
		struct kapsel_device *dev = vm->devices[i];
		fprintf(out, "device %u %s:\n", i, dev->ops->name);
		fprintf(out, "  exits: %llu\n", (unsigned long long)dev->exits);
		if (dev->ops->print_stats)
			dev->ops->print_stats(dev, out);
	}
}
