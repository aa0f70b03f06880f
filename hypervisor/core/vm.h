/* A Kapsel VM: KVM VM and vCPU, guest RAM, devices, hypercalls and the exit loop. */
#ifndef KAPSEL_VM_H
#define KAPSEL_VM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "devices/console/console.h"
#include "devices/device.h"
#include "core/elf_loader.h"
#include "core/guest_memory.h"
#include "core/hypercall.h"
#include "kapsel/abi.h"
#include "core/log.h"
#include "core/pv_cpu.h"
#include "core/pv_mmu.h"
#include "core/x86_boot.h"

/*
 * Exit status of every `kapsel` verb (README "Exit status", kapsel --help).
 * Verbs that run a VM (run, restore, clone) exit with the guest's own exit
 * code when it powers off, else with one of the codes from 122 up; the
 * other verbs use 0, 1 and 2.  KAPSEL_EXIT_SANDBOX_VIOLATION (122) is in
 * core/sandbox.h.
 */
#define KAPSEL_EXIT_FAILED 1	    /* the verb did not do what was asked */
#define KAPSEL_EXIT_USAGE 2	    /* the command line is wrong; nothing was done */
#define KAPSEL_EXIT_STOPPED 123	    /* destroy, shutdown deadline, SIGINT/SIGTERM */
#define KAPSEL_EXIT_VMM_ERROR 125   /* Kapsel could not start or run the VM */
#define KAPSEL_EXIT_GUEST_CRASH 126 /* the guest faulted or asked to crash */

enum vm_exit_counter {
	VM_EXIT_IO_HYPERCALL,
	VM_EXIT_IO_DEVICE,
	VM_EXIT_IO_UNCLAIMED,
	VM_EXIT_MMIO,
	VM_EXIT_HLT,
	VM_EXIT_SHUTDOWN,
	VM_EXIT_INTR,
	VM_EXIT_FAULT,
	VM_EXIT_OTHER,
	VM_EXIT_COUNTER_COUNT
};

enum vm_run_state {
	VM_STATE_CREATED,
	VM_STATE_RUNNING,
	VM_STATE_PAUSED,
	VM_STATE_STOPPED,
};

struct vm_evtchn {
	bool allocated;
	int bound_device; /* device index, or -1 */
	unsigned vcpu;	  /* atomic: the vCPU its upcalls and BLOCK wake-ups go to */
};

struct kapsel_vm;

/* One KVM_RUN of a vCPU, for the crash report's history: how it entered
 * (rip/rsp the VMM had just set, if it changed them) and how it left. */
struct vcpu_run_record {
	uint64_t run;	    /* which KVM_RUN (vcpu->runs after it) */
	uint64_t entry_rip; /* set by the VMM before this entry, if entry_set */
	uint64_t entry_rsp;
	uint64_t rip, rsp;    /* at the exit */
	uint64_t cr3;	      /* at the exit */
	uint32_t exit_reason; /* KVM_EXIT_*, or VCPU_RUN_EINTR */
	uint16_t port;	      /* KVM_EXIT_IO */
	uint16_t cs;	      /* at the exit */
	bool entry_set;
};
#define VCPU_RUN_EINTR 0xffffffffu
#define VCPU_RUN_HISTORY 12u

/* Whether a vCPU runs: vCPU 0 is up from boot, the others start down and
 * come up with KAPSEL_HC_VCPU_UP (STARTING until their thread takes the
 * request) and go down with KAPSEL_HC_VCPU_DOWN. */
enum vcpu_power {
	VCPU_POWER_DOWN,
	VCPU_POWER_STARTING,
	VCPU_POWER_UP,
};

/* "down", "starting" or "up". */
static inline const char *vcpu_power_name(int power)
{
	return power == VCPU_POWER_UP ? "up" : power == VCPU_POWER_STARTING ? "starting" : "down";
}

/*
 * One virtual CPU: its KVM file and run area, the thread that runs it, its
 * exit counters, its PV CPU state (traps, upcalls, timer) and its PV MMU
 * mode and address space.  Everything here belongs to the vCPU's thread,
 * except what is marked atomic.  A VM has vcpu_count of them (config
 * vcpus); vCPU 0 runs on the thread that calls vm_run, the others on
 * threads vm_create starts, which wait until the guest brings them up.
 */
struct kapsel_vcpu {
	struct kapsel_vm *vm;
	unsigned id; /* index in vm->vcpus, the guest's vCPU number */
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	int tid;		/* Linux thread id of its thread (0 before it runs) */
	int blocked;		/* atomic: 1 while it sleeps in BLOCK */
	int power;		/* atomic: enum vcpu_power */
	int wake_fd;		/* eventfd: wakes it from BLOCK, a pause, or being down */
	struct x86_entry start; /* KAPSEL_HC_VCPU_UP's request (vm->lock) */
	bool thread_created;	/* vCPUs 1..: vm_create started its thread */
	bool thread_ready;	/* it named its sandbox role (pause_lock) */
	int in_guest;		/* atomic: 1 from just before KVM_RUN until it returns */
	uint64_t runs;		/* atomic: KVM_RUN returns (a TLB shootdown waits on it) */
	uint64_t exits[VM_EXIT_COUNTER_COUNT];
	/* The last VCPU_RUN_HISTORY runs, oldest overwritten (its thread only). */
	struct vcpu_run_record history[VCPU_RUN_HISTORY];
	struct pv_cpu_vcpu pv_cpu; /* pv_cpu.c */
	struct pv_mmu_vcpu pv_mmu; /* pv_mmu.c: its mode and address space */
};

struct kapsel_vm {
	struct vm_config *config;
	int kvm_fd, vm_fd;
	struct kapsel_vcpu vcpus[KAPSEL_MAX_VCPUS];
	unsigned vcpu_count;
	size_t run_size; /* bytes of each vCPU's kvm_run mapping */
	struct guest_memory mem;
	struct elf_image image;
	struct kapsel_start_info *start_info; /* host view of guest page */
	struct kapsel_event_page *events;     /* host view of guest page */
	struct hypercall_table hypercalls;
	struct console console;
	struct kapsel_device *devices[KAPSEL_MAX_DEVICES];
	unsigned device_count;
	struct vm_evtchn evtchn[KAPSEL_EVTCHN_COUNT];
	uint64_t boot_monotonic_ns; /* CLOCK_MONOTONIC at VM creation */
	uint64_t tsc_khz;
	/* Held by a vCPU thread while it handles an exit (everything but
	 * KVM_RUN, a BLOCK sleep and a pause): exit handlers, devices'
	 * register emulation and the hypercalls see one vCPU at a time. */
	pthread_mutex_t lock;
	unsigned vcpus_running;	    /* pause_lock: vCPUs in their run loop, not parked */
	int vcpu_threads_exit;	    /* atomic: vm_destroy ends the vCPU threads */
	bool vmm_failed;	    /* KVM failed: no lifecycle restart */
	int stop_requested;	    /* atomic: 0, or enum vm_stop_reason: leave the run loop */
	int stats_requested;	    /* atomic: write counters at the next exit */
	int pause_requested;	    /* atomic: park the vCPU at the next exit */
	pthread_mutex_t pause_lock; /* protects state changes to/from PAUSED */
	pthread_cond_t pause_cond;  /* signalled on every state change */
	uint64_t paused_total_ns;   /* time spent paused, for uptime reports */
	uint64_t paused_since_ns;   /* vm_clock_ns when the pause began */
	void *control;		    /* struct control_server *, or NULL */
	/* Arriving by migration (migrate_receive), until it runs: a NIC keeps
	 * the source's socket it replaces, to give it back on failure. */
	bool incoming;
	enum vm_run_state state;
	enum kapsel_shutdown_reason shutdown_reason;
	int exit_code;		    /* what `kapsel run` exits with */
	struct log_limit guest_log; /* every log line a guest can trigger passes here */
	uint64_t generation;
	struct pv_mmu pv_mmu; /* address spaces (pv_mmu.c); each vCPU's mode is its own */
};

/*
 * Create the VM described by config: open /dev/kvm, check the API version
 * and every capability we use (naming a missing one), create guest RAM,
 * load the kernel image, build boot tables and start info, and attach
 * devices.  Errors are printed with what to do about them.  Returns 0 or a
 * negative errno; on failure vm is fully released.
 */
int vm_create(struct kapsel_vm *vm, struct vm_config *config);

/*
 * vm_create without its last step: the VM has RAM, the kernel loaded, boot
 * tables and the console, but no devices; devices_attach (devices.h) adds
 * them, the only way devices are added.  For an incoming migration, which
 * may open the disks only once the source has released them.  Returns 0
 * or a negative errno; on failure vm is fully released.
 */
int vm_create_without_devices(struct kapsel_vm *vm, struct vm_config *config);

/*
 * Run the vCPU until the guest shuts down, crashes, or vm_request_stop.
 * Returns the exit status for `kapsel run` (guest code, or one of
 * KAPSEL_EXIT_*).
 */
int vm_run(struct kapsel_vm *vm);

/* Ask the run loop to return (thread- and signal-safe); it warns "VM 'NAME' stopped by request". */
void vm_request_stop(struct kapsel_vm *vm);

/* Why the run loop was asked to return; the first request's reason counts. */
enum vm_stop_reason {
	VM_STOP_REQUESTED = 1,	/* operator: signal, destroy, a failed migration */
	VM_STOP_SAVED,		/* `save --stop` / --save-stop: the state is on disk */
	VM_STOP_MIGRATED,	/* the migration destination runs the VM now */
	VM_STOP_MEMORY_DAMAGED, /* a lazily restored memory.img failed its check */
};

/* vm_request_stop with a reason (thread- and signal-safe).  Precondition: vm was created. */
void vm_request_stop_for(struct kapsel_vm *vm, enum vm_stop_reason reason);

/*
 * Ask the vCPU thread to write the counters (config stats_path, else
 * stderr) soon, even while the guest sleeps in KAPSEL_HC_BLOCK (thread- and
 * signal-safe; SIGUSR1 of `kapsel run`).
 */
void vm_request_stats(struct kapsel_vm *vm);

/*
 * Stop the vCPU and return only when it is parked outside KVM_RUN with
 * any pending I/O completed, so registers, memory and devices' guest-facing
 * state can be read consistently (the VM-state code relies on this).  Kicks
 * KVM_RUN with immediate_exit + SIGUSR2 and wakes a vCPU sleeping in
 * KAPSEL_HC_BLOCK (which then returns 0 early to the guest).  Callable from
 * any thread but the vCPU thread, while vm_run runs.  Returns 0 (paused
 * now), -EALREADY (it was already paused; still stopped on return) or
 * -ESRCH (the VM is not running: not started yet or stopped).
 */
int vm_pause(struct kapsel_vm *vm);

/*
 * Let a paused vCPU run again; returns once it has left its parking place
 * (the state reads "running").  Thread-safe; not on the vCPU thread.
 * Returns 0, -EALREADY (it was not paused) or -ESRCH (the VM is stopped).
 */
int vm_resume(struct kapsel_vm *vm);

/* "created", "running", "paused" or "stopped" (a snapshot; may change). */
const char *vm_state_name(const struct kapsel_vm *vm);

/* Release everything vm_create made. */
void vm_destroy(struct kapsel_vm *vm);

/* Kapsel clock: nanoseconds since the VM was created. */
uint64_t vm_clock_ns(const struct kapsel_vm *vm);

/*
 * Attach a device: assigns the next index, records its descriptor in start
 * info and claims its ports (opening them to CPL3 code).  Returns 0,
 * -ENOSPC (too many devices) or -EBUSY (ports already claimed).
 */
int vm_add_device(struct kapsel_vm *vm, struct kapsel_device *dev);

/*
 * Signal event channel port: mark it pending in the event page and wake a
 * blocked vCPU if it is unmasked.  Callable from any thread.
 */
void vm_evtchn_notify(struct kapsel_vm *vm, uint32_t port);

/*
 * Kick every vCPU out of KVM_RUN (immediate_exit + SIGUSR2) or out of a
 * BLOCK sleep, so its run loop looks at its state again.  Any thread.
 */
void vm_kick_vcpu(struct kapsel_vm *vm);

/* The same for one vCPU. */
void vcpu_kick(struct kapsel_vcpu *vcpu);

/* Wake vcpu's thread if it sleeps (BLOCK, pause, down); async-signal-safe. */
void vcpu_wake(struct kapsel_vcpu *vcpu);

/*
 * An unmasked channel bound to vcpu is pending: what ends its BLOCK and
 * what an upcall delivers.  Any thread.
 */
bool vm_evtchn_pending_for(const struct kapsel_vm *vm, unsigned vcpu);

/*
 * Channel port (pending, unmasked) has something for its vCPU: raise an
 * upcall there and wake it from BLOCK.  Any thread.
 */
void vm_evtchn_deliver(struct kapsel_vm *vm, uint32_t port);
/* Delivers the channel if it is pending and unmasked (after a mask or
 * binding change); the caller checked the port. */
void vm_evtchn_deliver_if_ready(struct kapsel_vm *vm, uint32_t port);

/* The boot vCPU: the one that runs the guest's entry point. */
static inline struct kapsel_vcpu *vm_boot_vcpu(struct kapsel_vm *vm)
{
	return &vm->vcpus[0];
}

/* The exits of every vCPU, by reason (vm_exit_counter). */
uint64_t vm_exits(const struct kapsel_vm *vm, enum vm_exit_counter counter);

/*
 * The guest's TSC as vcpu sees it now (KVM_GET_MSRS); vm_guest_tsc asks
 * the boot vCPU, from any thread.  Return 0 or a negative errno.
 */
int vcpu_guest_tsc(struct kapsel_vcpu *vcpu, uint64_t *tsc);
int vm_guest_tsc(struct kapsel_vm *vm, uint64_t *tsc);

/*
 * Let KVM finish vcpu's last exit (move rip past a port access, take
 * pending I/O) without running the guest: KVM_RUN with immediate_exit,
 * which is clear again on return.  Needed before the VMM changes where
 * the vCPU resumes, or reads its state.  Returns 0, -EIO if KVM ran the
 * guest anyway, or KVM_RUN's negative errno.  On vcpu's thread, or with
 * the vCPU stopped.
 */
int vcpu_complete_exit(struct kapsel_vcpu *vcpu);

/* Set vcpu's MSR TSC_AUX to its number: rdtscp's ecx (docs/abi.md 19). */
void vcpu_set_number_msr(struct kapsel_vcpu *vcpu);

/* Print the VM's exit counters and every device's counters. */
void vm_print_stats(struct kapsel_vm *vm, FILE *out);

/*
 * Give an attached device a doorbell: an ioeventfd on port
 * KAPSEL_PORT_DOORBELL_BASE + index, so a guest kick wakes the backend
 * without an exit to user space.  Sets dev->doorbell_fd and the port in the
 * device's descriptor.  Returns 0 or a negative errno.
 */
int vm_add_doorbell(struct kapsel_vm *vm, struct kapsel_device *dev);

/*
 * Rewrite the hypervisor-owned low pages (page tables, GDT, IDT, TSS with
 * the ports of the hypercall interface and of every attached device open,
 * exception stubs) from scratch.  Memory loaded from saved state is
 * untrusted, so a restore or an incoming migration calls this after the
 * memory and the devices are in place.  Returns 0 or -EFAULT.
 */
int vm_rebuild_hypervisor_pages(struct kapsel_vm *vm);

/*
 * Give an attached device a doorbell served on the vCPU thread: the same
 * port as vm_add_doorbell, but claimed as the device's I/O ports, so a
 * guest kick is an exit to user space that calls dev->ops->io_write (and
 * the kick is done when the guest's instruction completes).  For devices
 * whose work per kick is short and needs no thread.  Precondition: dev
 * has no other I/O ports and ops->io_read / io_write are set.
 */
void vm_add_trapped_doorbell(struct kapsel_vm *vm, struct kapsel_device *dev);

#endif
