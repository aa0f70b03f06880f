/* Kapsel hypercall ABI v1: the contract between a guest and the kapsel hypervisor. */
#ifndef KAPSEL_ABI_H
#define KAPSEL_ABI_H

/*
 * This header is freestanding C11 and is included by both sides: the
 * hypervisor (hosted, Linux) and guest kernels (freestanding).  It uses only
 * fixed-width types.  Every shared structure starts with a magic and a
 * revision, has explicit padding, and its layout is locked below with
 * _Static_assert.  docs/abi.md is the prose specification of this file.
 *
 * Version bump rule:
 *   - KAPSEL_ABI_MINOR grows when a call, feature bit, device type or a field
 *     carved out of a _reserved area is added.  Old guests keep working.
 *   - KAPSEL_ABI_MAJOR grows when anything existing changes meaning, size or
 *     place.  A guest that sees a major version it does not know must not use
 *     any call but KAPSEL_HC_ABI_INFO and KAPSEL_HC_SHUTDOWN (whose numbers
 *     and arguments never change).
 */

#include <stdint.h>

#define KAPSEL_ABI_MAJOR 1u
/* 1: control requests (event page); 2: PV network (net.h); 3: PV entropy
 * (rng.h: device type KAPSEL_DEV_RNG_PV, feature KAPSEL_FEATURE_RNG_PV);
 * 4: PV CPU (traps, upcalls, timers: KAPSEL_FEATURE_PV_CPU);
 * 5: PV MMU (address spaces, user mode, syscalls: KAPSEL_FEATURE_PV_MMU);
 * 6: SMP (vCPU up/down, channels bound to a vCPU: KAPSEL_FEATURE_SMP;
 *    multi-queue PV block: kapsel_device_desc.queue_count, blk.h);
 * 7: KAPSEL_HC_KICK_AND_BLOCK (KAPSEL_FEATURE_KICK_AND_BLOCK) */
#define KAPSEL_ABI_MINOR 7u
#define KAPSEL_ABI_VERSION ((KAPSEL_ABI_MAJOR << 16) | KAPSEL_ABI_MINOR)

/* ---- Discovery through CPUID -------------------------------------------- */

/*
 * CPUID 0x40000000: eax = highest Kapsel leaf, ebx:ecx:edx = "KapselKapsel".
 * CPUID 0x40000001: eax = KAPSEL_ABI_VERSION, ebx = feature bits (low 32),
 *                   ecx = hypercall port, edx = 0.
 */
#define KAPSEL_CPUID_BASE 0x40000000u
#define KAPSEL_CPUID_INFO 0x40000001u
#define KAPSEL_CPUID_SIGNATURE_EBX 0x7370614bu /* "Kaps" */
#define KAPSEL_CPUID_SIGNATURE_ECX 0x614b6c65u /* "elKa" */
#define KAPSEL_CPUID_SIGNATURE_EDX 0x6c657370u /* "psel" */

/* ---- Feature bits (start info, CPUID 0x40000001.ebx, ABI_INFO) ----------- */

#define KAPSEL_FEATURE_CONSOLE_PV (1ull << 0)	   /* console write/read calls */
#define KAPSEL_FEATURE_EVTCHN (1ull << 1)	   /* event channels + block */
#define KAPSEL_FEATURE_DOORBELL (1ull << 2)	   /* ioeventfd doorbell ports */
#define KAPSEL_FEATURE_BLOCK_PV (1ull << 3)	   /* PV block protocol (blk.h) */
#define KAPSEL_FEATURE_GENERATION (1ull << 4)	   /* start_info.generation */
#define KAPSEL_FEATURE_CONTROL (1ull << 5)	   /* event page control_request (minor 1) */
#define KAPSEL_FEATURE_NET_PV (1ull << 6)	   /* PV network protocol (net.h, minor 2) */
#define KAPSEL_FEATURE_RNG_PV (1ull << 7)	   /* PV entropy protocol (rng.h, minor 3) */
#define KAPSEL_FEATURE_PV_CPU (1ull << 8)	   /* traps, upcalls, timers (minor 4) */
#define KAPSEL_FEATURE_PV_MMU (1ull << 9)	   /* address spaces, user mode (minor 5) */
#define KAPSEL_FEATURE_SMP (1ull << 10)		   /* several vCPUs, IPIs (minor 6) */
#define KAPSEL_FEATURE_KICK_AND_BLOCK (1ull << 11) /* KAPSEL_HC_KICK_AND_BLOCK (minor 7) */
#define KAPSEL_FEATURES_V1                                                              \
	(KAPSEL_FEATURE_CONSOLE_PV | KAPSEL_FEATURE_EVTCHN | KAPSEL_FEATURE_DOORBELL |  \
	 KAPSEL_FEATURE_BLOCK_PV | KAPSEL_FEATURE_GENERATION | KAPSEL_FEATURE_CONTROL | \
	 KAPSEL_FEATURE_NET_PV | KAPSEL_FEATURE_RNG_PV | KAPSEL_FEATURE_PV_CPU |        \
	 KAPSEL_FEATURE_PV_MMU | KAPSEL_FEATURE_SMP | KAPSEL_FEATURE_KICK_AND_BLOCK)

/* ---- I/O ports ---------------------------------------------------------- */

/*
 * Calling convention (see docs/abi.md):
 *   rax = call number (in), result (out, negative errno on failure)
 *   rdi, rsi, rcx, r8, r9 = arguments 0..4
 *   the call itself is   outl %eax, %dx   with dx = KAPSEL_PORT_HYPERCALL.
 * No other register changes.  Pointers are guest-physical addresses.
 */
#define KAPSEL_PORT_HYPERCALL 0x0510u /* a 4-byte port: 0x510-0x513 */
/* Reserved for the hypervisor's CPL0 exception stub; closed to the guest. */
#define KAPSEL_PORT_FAULT 0x0518u
/*
 * Doorbells: a 16-bit write (outw) of any value to KAPSEL_PORT_DOORBELL(n)
 * kicks the backend of device n without an exit to the VMM's user space.
 */
#define KAPSEL_PORT_DOORBELL_BASE 0x0520u
#define KAPSEL_PORT_DOORBELL(n) (KAPSEL_PORT_DOORBELL_BASE + 2u * (n))
#define KAPSEL_MAX_DEVICES 16u

/* ---- Error codes: negative Linux errno values --------------------------- */

#define KAPSEL_EPERM 1
#define KAPSEL_ENOENT 2
#define KAPSEL_EIO 5
#define KAPSEL_E2BIG 7
#define KAPSEL_EAGAIN 11
#define KAPSEL_ENOMEM 12
#define KAPSEL_EFAULT 14
#define KAPSEL_EBUSY 16
#define KAPSEL_EEXIST 17
#define KAPSEL_ENODEV 19
#define KAPSEL_EINVAL 22
#define KAPSEL_ENOSPC 28
#define KAPSEL_EROFS 30
#define KAPSEL_ERANGE 34
#define KAPSEL_ENOSYS 38
#define KAPSEL_ETIMEDOUT 110

/* ---- Hypercall numbers (never reused) ----------------------------------- */

enum kapsel_hypercall {
	/* (gpa of struct kapsel_abi_info) -> 0 */
	KAPSEL_HC_ABI_INFO = 0,
	/* (gpa, length_bytes) -> bytes written */
	KAPSEL_HC_CONSOLE_WRITE = 1,
	/* (gpa, length_bytes) -> bytes read, 0 if none is waiting */
	KAPSEL_HC_CONSOLE_READ = 2,
	/* (enum kapsel_shutdown_reason, exit_code) -> does not return */
	KAPSEL_HC_SHUTDOWN = 3,
	/* (gpa of struct kapsel_time_info) -> 0 */
	KAPSEL_HC_TIME_INFO = 4,
	/* (deadline_ns on the Kapsel clock, UINT64_MAX = none) -> 1 if an
	 * unmasked event is pending, 0 at the deadline or earlier (pause,
	 * stop, stats request): callers re-check their clock.  Minor 3: on a
	 * vCPU with an upcall callback it first clears that vCPU's upcall
	 * mask (like sti; hlt), so pending events arrive as an upcall right
	 * after it returns. */
	KAPSEL_HC_BLOCK = 5,
	/* () -> new event channel port, neither pending nor masked */
	KAPSEL_HC_EVTCHN_ALLOC = 6,
	/* (port, device index) -> 0; the device signals completions on port */
	KAPSEL_HC_EVTCHN_BIND_DEVICE = 7,
	/* (port) -> 0; notifies the other end (kicks a bound device) */
	KAPSEL_HC_EVTCHN_SEND = 8,
	/* (port, 1 = mask / 0 = unmask) -> previous mask state */
	KAPSEL_HC_EVTCHN_MASK = 9,
	/* (device index, gpa of struct kapsel_device_setup) -> 0 */
	KAPSEL_HC_DEVICE_SETUP = 10,
	/* (port) -> 0; releases a channel (unbinds it) */
	KAPSEL_HC_EVTCHN_CLOSE = 11,
	/* Minor 3, PV CPU (docs/abi.md "Exceptions, upcalls and timers"). */
	/* (vector, handler, stack_top, stack_bytes) -> 0; handler 0 removes
	 * the entry.  vector is one of KAPSEL_TRAP_VECTORS_ALLOWED. */
	KAPSEL_HC_SET_TRAP = 12,
	/* (vcpu, entry, stack_top, stack_bytes) -> 0; entry 0 removes it */
	KAPSEL_HC_SET_CALLBACK = 13,
	/* (gpa of the struct kapsel_trap_frame the hypervisor delivered) ->
	 * does not return: resumes the context saved in the frame. */
	KAPSEL_HC_IRET = 14,
	/* (vcpu, deadline_ns on the Kapsel clock or KAPSEL_TIMER_STOP,
	 * period_ns: 0 = one-shot, else >= KAPSEL_TIMER_MIN_PERIOD_NS) -> 0 */
	KAPSEL_HC_TIMER_SET = 15,
	/* (port, virq, vcpu) -> 0; the host raises port for that virq */
	KAPSEL_HC_EVTCHN_BIND_VIRQ = 16,
	/* Minor 5, PV MMU (docs/abi.md "Address spaces and processes"). */
	/* () -> id of a new, empty address space (1 .. KAPSEL_AS_MAX - 1) */
	KAPSEL_HC_AS_CREATE = 17,
	/* (as) -> 0; frees its page tables.  Not the current one. */
	KAPSEL_HC_AS_DESTROY = 18,
	/* (as, gpa of struct kapsel_mmu_op[count], count) -> number of ops
	 * applied, in order; it stops at the first refused op, whose result
	 * field says why.  count <= KAPSEL_MMU_BATCH_MAX. */
	KAPSEL_HC_MMU_UPDATE = 19,
	/* (as, 0 = none) -> 0; the process address space user mode runs in
	 * and the kernel sees beside its own memory.  Flushes the TLB. */
	KAPSEL_HC_AS_SWITCH = 20,
	/* (entry) -> 0; where a syscall instruction in user mode enters the
	 * kernel (frame vector KAPSEL_TRAP_VECTOR_SYSCALL); 0 removes it. */
	KAPSEL_HC_SET_SYSCALL = 21,
	/* (stack_top, stack_bytes) -> 0; the stack every entry from user
	 * mode (syscall, exception, upcall) puts its frame on. */
	KAPSEL_HC_KERNEL_STACK = 22,
	/* Minor 6, SMP (docs/abi.md "Several vCPUs"). */
	/* (vcpu, entry, stack_top, arg) -> 0; vCPU vcpu (1 .. vcpu_count - 1,
	 * down) starts at entry in kernel mode with rsp = stack_top, rdi =
	 * arg, rsi = vcpu, upcalls masked, no handlers, its timer off.
	 * -EINVAL: no such vCPU or stack_top not 16-byte aligned; -EBUSY: it
	 * is up (or starting); -EFAULT: entry or the stack's top page is not
	 * guest RAM. */
	KAPSEL_HC_VCPU_UP = 23,
	/* () -> does not return; the calling vCPU stops (its timer is
	 * disarmed) until VCPU_UP starts it afresh.  -EINVAL on vCPU 0, which
	 * ends only with the VM (KAPSEL_HC_SHUTDOWN). */
	KAPSEL_HC_VCPU_DOWN = 24,
	/* (vcpu) -> 1 if it is up or starting, 0 if down; -EINVAL: no such vCPU */
	KAPSEL_HC_VCPU_STATUS = 25,
	/* (port, vcpu) -> 0; the channel's upcalls and BLOCK wake-ups go to
	 * vcpu from now on (every channel starts bound to vCPU 0).  An
	 * inter-processor event is EVTCHN_SEND on a channel bound to another
	 * vCPU. */
	KAPSEL_HC_EVTCHN_BIND_VCPU = 26,
	/* Minor 7 (docs/abi.md §8): (deadline_ns, device_mask) -> as BLOCK,
	 * after the doorbell of every device whose index is a bit of
	 * device_mask was rung as by a doorbell write: a guest that must kick
	 * a backend and then sleep until it answers does both in one exit.
	 * -EINVAL (nothing rung, no sleep) if a bit names no device with a
	 * doorbell; a mask of 0 is BLOCK. */
	KAPSEL_HC_KICK_AND_BLOCK = 27,
	KAPSEL_HC_COUNT = 28
};

enum kapsel_shutdown_reason {
	KAPSEL_SHUTDOWN_POWEROFF = 0,
	KAPSEL_SHUTDOWN_REBOOT = 1,
	KAPSEL_SHUTDOWN_CRASH = 2,
};

/* ---- Structures --------------------------------------------------------- */

#define KAPSEL_ABI_INFO_MAGIC 0x4b41424cu /* "KABL" */
struct kapsel_abi_info {
	uint32_t magic;
	uint16_t major;
	uint16_t minor;
	uint64_t features;
	uint32_t hypercall_count; /* numbers below this may exist */
	uint32_t _reserved0;
	uint64_t _reserved[4];
};
_Static_assert(sizeof(struct kapsel_abi_info) == 56, "abi_info layout");

struct kapsel_time_info {
	uint64_t now_ns;  /* Kapsel clock: nanoseconds since the VM started */
	uint64_t tsc;	  /* guest TSC value read at now_ns */
	uint64_t tsc_khz; /* guest TSC frequency */
	uint64_t _reserved;
};
_Static_assert(sizeof(struct kapsel_time_info) == 32, "time_info layout");

/* Event channels: pending and mask bits live in the shared event page. */
#define KAPSEL_EVTCHN_COUNT 256u
/*
 * Reserved channel (minor 1): signalled when the host changes
 * control_request.  It is never handed out by EVTCHN_ALLOC and starts
 * masked at boot, so guests that ignore it never wake for it; a guest that
 * handles control requests unmasks it (EVTCHN_MASK or the mask word).
 */
#define KAPSEL_EVTCHN_CONTROL (KAPSEL_EVTCHN_COUNT - 1u)

/* What the operator asks of the guest (event page control_request). */
enum kapsel_control_request {
	KAPSEL_CONTROL_NONE = 0,
	KAPSEL_CONTROL_POWEROFF = 1, /* shut down cleanly, then SHUTDOWN(POWEROFF) */
	KAPSEL_CONTROL_REBOOT = 2,   /* shut down cleanly, then SHUTDOWN(REBOOT) */
};

#define KAPSEL_EVENT_PAGE_MAGIC 0x4b45564eu /* "KEVN" */
struct kapsel_event_page {
	uint32_t magic;
	uint32_t revision; /* 1 */
	/* Minor 1: written by the host only (enum kapsel_control_request),
	 * then KAPSEL_EVTCHN_CONTROL is signalled.  The guest reads it once
	 * and acts; it is cleared at every boot. */
	uint32_t control_request;
	uint32_t _pad0a;
	/* Minor 1: Kapsel clock (ns) after which the host ends the VM
	 * forcibly; UINT64_MAX for none.  Valid when control_request != 0. */
	uint64_t control_deadline_ns;
	uint8_t _pad0[40];
	/* Set by the host with an atomic OR; cleared by the guest with an
	 * atomic AND (or exchange).  Bit n of word n/64 is channel n. */
	uint64_t pending[KAPSEL_EVTCHN_COUNT / 64];
	uint8_t _pad1[32];
	/* Written by the guest (or by KAPSEL_HC_EVTCHN_MASK); a masked channel
	 * still becomes pending but does not wake a blocked vCPU. */
	uint64_t mask[KAPSEL_EVTCHN_COUNT / 64];
	uint8_t _pad2[32];
};
_Static_assert(sizeof(struct kapsel_event_page) == 192, "event page layout");
_Static_assert(__builtin_offsetof(struct kapsel_event_page, control_request) == 8,
	       "control_request offset");
_Static_assert(__builtin_offsetof(struct kapsel_event_page, control_deadline_ns) == 16,
	       "control_deadline_ns offset");
_Static_assert(__builtin_offsetof(struct kapsel_event_page, pending) == 64,
	       "pending owns a cache line");
_Static_assert(__builtin_offsetof(struct kapsel_event_page, mask) == 128, "mask owns a cache line");

enum kapsel_device_type {
	KAPSEL_DEV_NONE = 0,
	KAPSEL_DEV_CONSOLE_PV = 1, /* hypercall console (no ring) */
	KAPSEL_DEV_BLOCK_PV = 2,   /* ring device, blk.h protocol */
	KAPSEL_DEV_UART16550 = 3,  /* emulated, io_base = 0x3f8 */
	KAPSEL_DEV_ATA_DISK = 4,   /* emulated, io_base = 0x1f0, ctl 0x3f6 */
	KAPSEL_DEV_NE2000 = 5,	   /* emulated NIC, io_base = 0x300 (net.h) */
	KAPSEL_DEV_NET_PV = 6,	   /* two-ring device, net.h protocol (minor 2) */
	KAPSEL_DEV_RNG_PV = 7,	   /* one-ring device, rng.h protocol (minor 3) */
};

#define KAPSEL_DEVICE_FLAG_READONLY (1u << 0)
#define KAPSEL_DEVICE_FLAG_PREFER_EMULATED (1u << 1) /* config asks so */

struct kapsel_device_desc {
	uint16_t type;		   /* enum kapsel_device_type */
	uint16_t index;		   /* device index for DEVICE_SETUP and doorbells */
	uint32_t flags;		   /* KAPSEL_DEVICE_FLAG_* */
	uint16_t io_base;	   /* emulated devices: first I/O port */
	uint16_t io_ctl;	   /* emulated devices: control port (ATA 0x3f6) */
	uint16_t doorbell_port;	   /* PV ring devices: ioeventfd port, else 0 */
	uint16_t unit;		   /* disks: index in the VM definition (PV and ATA share it) */
	uint64_t capacity_sectors; /* block devices, 512-byte sectors */
	/* Minor 2, network devices (NET_PV and NE2000): the station address
	 * and the largest frame payload (1500); zero for other devices. */
	uint8_t mac[6];
	uint16_t mtu_bytes;
	/* Minor 6, PV block devices: rings the device serves (setup.queue
	 * 0 .. queue_count - 1, blk.h "Several queues"); 0 means 1 (older
	 * hypervisors).  Zero for other devices. */
	uint16_t queue_count;
	uint16_t _reserved0;
	uint32_t _reserved;
};
_Static_assert(sizeof(struct kapsel_device_desc) == 40, "device desc layout");
_Static_assert(__builtin_offsetof(struct kapsel_device_desc, mac) == 24, "desc mac offset");
_Static_assert(__builtin_offsetof(struct kapsel_device_desc, mtu_bytes) == 30, "desc mtu offset");
_Static_assert(__builtin_offsetof(struct kapsel_device_desc, queue_count) == 32,
	       "desc queue_count offset");

#define KAPSEL_MEMMAP_RAM 1u	  /* free for the guest */
#define KAPSEL_MEMMAP_RESERVED 2u /* hypervisor tables: do not touch */
#define KAPSEL_MEMMAP_IMAGE 3u	  /* the loaded guest image */
#define KAPSEL_MEMMAP_SHARED 4u	  /* start info and event page */
struct kapsel_memmap_entry {
	uint64_t gpa;
	uint64_t length_bytes;
	uint32_t type;
	uint32_t _pad;
};
_Static_assert(sizeof(struct kapsel_memmap_entry) == 24, "memmap layout");

#define KAPSEL_START_INFO_MAGIC 0x4b535449u /* "KSTI" */
#define KAPSEL_START_INFO_REVISION 1u
#define KAPSEL_CMDLINE_MAX 512u
#define KAPSEL_MEMMAP_MAX 8u

/*
 * The start info page.  Its guest-physical address is in rdi at entry.
 * Guest memory is identity mapped (virtual == physical) at entry.
 */
struct kapsel_start_info {
	uint32_t magic;
	uint32_t revision;
	uint16_t abi_major;
	uint16_t abi_minor;
	uint32_t _pad0;
	uint64_t features;
	uint64_t ram_bytes;
	uint64_t tsc_khz;
	uint64_t event_page_gpa;
	/* Bumped by the hypervisor on every restore and clone: a guest that
	 * sees it change must re-derive what must be unique (MAC, seeds). */
	uint64_t generation;
	uint64_t boot_ns; /* Kapsel clock at guest entry */
	uint32_t memmap_count;
	uint32_t device_count;
	struct kapsel_memmap_entry memmap[KAPSEL_MEMMAP_MAX];
	struct kapsel_device_desc devices[KAPSEL_MAX_DEVICES];
	char cmdline[KAPSEL_CMDLINE_MAX];
	uint8_t uuid[16];
	char name[64];
	/* Minor 6: vCPUs the VM has (1 .. KAPSEL_MAX_VCPUS); vCPU 0 runs the
	 * entry point, the others start with KAPSEL_HC_VCPU_UP. */
	uint32_t vcpu_count;
	uint32_t _reserved0b;
	uint64_t _reserved[15];
};
_Static_assert(sizeof(struct kapsel_start_info) == 1624, "start info layout");
_Static_assert(__builtin_offsetof(struct kapsel_start_info, memmap) == 72, "memmap offset");
_Static_assert(__builtin_offsetof(struct kapsel_start_info, devices) == 264, "devices offset");
_Static_assert(__builtin_offsetof(struct kapsel_start_info, vcpu_count) == 1496,
	       "vcpu_count offset");

/* DEVICE_SETUP: hand the hypervisor the guest-physical address of a ring. */
#define KAPSEL_DEVICE_SETUP_MAGIC 0x4b445355u /* "KDSU" */
struct kapsel_device_setup {
	uint32_t magic;
	uint32_t revision;    /* 1 */
	uint64_t ring_gpa;    /* page aligned, see ring.h */
	uint32_t ring_pages;  /* pages the ring occupies */
	uint32_t evtchn_port; /* completions are signalled here */
	/* Minor 2: which ring of a multi-ring device this call sets up
	 * (net.h: 0 = TX, 1 = RX); 0 for one-ring devices. */
	uint32_t queue;
	uint32_t _reserved0;
	uint64_t _reserved[3];
};
_Static_assert(sizeof(struct kapsel_device_setup) == 56, "device setup layout");
_Static_assert(__builtin_offsetof(struct kapsel_device_setup, queue) == 24,
	       "device setup queue offset");

/* ---- PV CPU (minor 4): traps, upcalls, timers ---------------------------- */

/*
 * The exception vectors a guest may handle (bit n = vector n): #DE #DB #BP
 * #OF #BR #UD #NM #SS #NP #GP #PF #MF #AC #XM.  #DF, #TS, #MC and the
 * reserved vectors always end the VM with a crash report.
 */
#define KAPSEL_TRAP_VECTORS_ALLOWED                                                          \
	((1u << 0) | (1u << 1) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 7) | \
	 (1u << 11) | (1u << 12) | (1u << 13) | (1u << 14) | (1u << 16) | (1u << 17) | (1u << 19))
#define KAPSEL_TRAP_VECTOR_COUNT 32u
/* The vector field of a frame delivered to the upcall callback. */
#define KAPSEL_TRAP_VECTOR_UPCALL 0x100u
/* Handler stacks: size limits, and the gap left below an interrupted rsp
 * that already lies on the handler's stack (nested delivery). */
#define KAPSEL_TRAP_STACK_MIN_BYTES 4096u
#define KAPSEL_TRAP_STACK_MAX_BYTES (16u << 20)
#define KAPSEL_TRAP_NESTED_GAP_BYTES 128u

/* The vector field of a frame delivered to the syscall entry (minor 5). */
#define KAPSEL_TRAP_VECTOR_SYSCALL 0x101u

/* kapsel_trap_frame.flags */
#define KAPSEL_TRAP_FRAME_UPCALL_MASKED (1u << 0) /* upcall mask at interruption */
/* Minor 5: the interrupted context ran in user mode; on IRET, resume it in
 * user mode (the current address space's user view, every port closed). */
#define KAPSEL_TRAP_FRAME_USER (1u << 1)

/*
 * What the hypervisor writes on the handler's stack, 16-byte aligned, and
 * enters the handler with rsp = rdi = the frame's address (at CPL3, with
 * this vCPU's upcall mask set).  The handler may change any field but
 * vector and flags' reserved bits, then calls KAPSEL_HC_IRET with the
 * frame's address: rip, rsp, rflags (arithmetic flags, DF, TF, AC only)
 * and the general registers are restored from it, and the upcall mask
 * from flags.  cs and ss are informational: guest code always runs at
 * CPL3 with the user selectors.  Addresses are guest-virtual, which today
 * equal guest-physical (identity mapping).
 */
struct kapsel_trap_frame {
	uint64_t vector;     /* 0-31, or KAPSEL_TRAP_VECTOR_UPCALL */
	uint64_t error_code; /* 0 where the CPU pushes none */
	uint64_t cr2;	     /* #PF: the faulting address; else 0 */
	uint64_t flags;	     /* KAPSEL_TRAP_FRAME_* */
	uint64_t rip, cs, rflags, rsp, ss;
	uint64_t rax, rbx, rcx, rdx, rsi, rdi, rbp;
	uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
	uint64_t _reserved[8];
};
_Static_assert(sizeof(struct kapsel_trap_frame) == 256, "trap frame layout");
_Static_assert(__builtin_offsetof(struct kapsel_trap_frame, rip) == 32, "trap frame rip");
_Static_assert(__builtin_offsetof(struct kapsel_trap_frame, rax) == 72, "trap frame rax");
_Static_assert(__builtin_offsetof(struct kapsel_trap_frame, r15) == 184, "trap frame r15");

/*
 * Per-vCPU shared flags, in the event page at KAPSEL_VCPU_INFO_OFFSET, one
 * cache line per vCPU (vCPU n at offset + n * 64).  upcall_mask (guest
 * writes; the host sets it when it enters the callback or a trap handler):
 * nonzero = no upcall.  upcall_pending (host sets, guest clears in its
 * callback before scanning the event page): an unmasked channel became
 * pending.  A guest that clears upcall_mask and then finds upcall_pending
 * set makes any hypercall (the library uses BLOCK(0)): every hypercall
 * return is a delivery point.  upcall_mask is 1 at boot.
 */
#define KAPSEL_VCPU_INFO_OFFSET 0x800u
#define KAPSEL_MAX_VCPUS 16u
struct kapsel_vcpu_info {
	uint8_t upcall_pending;
	uint8_t upcall_mask;
	uint8_t _pad[6];
	uint64_t timer_deadline_ns; /* host-written copy of the armed deadline, or STOP */
	uint64_t timer_period_ns;   /* host-written copy of the period (0 = one-shot) */
	uint64_t _reserved[5];
};
_Static_assert(sizeof(struct kapsel_vcpu_info) == 64, "vcpu info layout");
_Static_assert(KAPSEL_VCPU_INFO_OFFSET + KAPSEL_MAX_VCPUS * 64u <= 4096u, "vcpu info fits");

/* Virtual IRQs a channel can be bound to (KAPSEL_HC_EVTCHN_BIND_VIRQ). */
enum kapsel_virq {
	KAPSEL_VIRQ_TIMER = 0, /* the vCPU's timer (KAPSEL_HC_TIMER_SET) expired */
	KAPSEL_VIRQ_COUNT = 1,
};
#define KAPSEL_TIMER_STOP UINT64_MAX
/* Periodic timers fire at most every 100 us: a guest cannot storm the host. */
#define KAPSEL_TIMER_MIN_PERIOD_NS 100000ull

/* ---- PV MMU (minor 5): address spaces and user mode --------------------- */

/*
 * The kernel runs in "kernel mode" on the hypervisor's identity map of guest
 * RAM (virtual == physical, below 512 GiB), plus the user half of the
 * current address space.  A process runs in "user mode": it sees only the
 * user half of the current address space, [KAPSEL_USER_VA_MIN,
 * KAPSEL_USER_VA_END), and no I/O port.  Both are CPL 3.  Page tables live
 * in hypervisor memory outside guest RAM: the guest changes them only
 * through KAPSEL_HC_MMU_UPDATE, and can never map them.
 */
#define KAPSEL_USER_VA_MIN (1ull << 39)
#define KAPSEL_USER_VA_END (1ull << 47)
#define KAPSEL_AS_MAX 64u	     /* address-space ids 1 .. 63 */
#define KAPSEL_MMU_BATCH_MAX 512u    /* ops per KAPSEL_HC_MMU_UPDATE */
#define KAPSEL_MMU_TABLE_PAGES 4096u /* page-table pages per VM (16 MiB) */

enum kapsel_mmu_op_kind {
	/* Map va to the guest frame gpa with prot; replaces a mapping of va. */
	KAPSEL_MMU_MAP = 1,
	/* Remove the mapping of va; a hole stays a hole (result 0). */
	KAPSEL_MMU_UNMAP = 2,
	/* Change the protection of the mapping at va (-ENOENT if none). */
	KAPSEL_MMU_PROTECT = 3,
};
/* prot: a mapped page is always readable by user mode. */
#define KAPSEL_PROT_WRITE (1u << 0)
#define KAPSEL_PROT_EXEC (1u << 1)

struct kapsel_mmu_op {
	uint64_t va;	/* page aligned, in [KAPSEL_USER_VA_MIN, KAPSEL_USER_VA_END) */
	uint64_t gpa;	/* MAP: page-aligned guest RAM at or above KAPSEL_GPA_LOW_FREE */
	uint32_t op;	/* enum kapsel_mmu_op_kind */
	uint32_t prot;	/* KAPSEL_PROT_* */
	int64_t result; /* written by the host: 0, or -errno for a refused op */
};
_Static_assert(sizeof(struct kapsel_mmu_op) == 32, "mmu op layout");
_Static_assert(__builtin_offsetof(struct kapsel_mmu_op, result) == 24, "mmu op result");

/* ---- Fixed guest-physical layout (hypervisor-owned low memory) ---------- */

#define KAPSEL_GPA_START_INFO 0x7000u
#define KAPSEL_GPA_EVENT_PAGE 0x8000u
#define KAPSEL_GPA_LOW_FREE 0x60000u	  /* first byte of free low memory */
#define KAPSEL_GPA_INITIAL_STACK 0xf0000u /* rsp at entry (grows down) */
#define KAPSEL_GPA_IMAGE_MIN 0x100000u	  /* lowest address an image may use */

#endif /* KAPSEL_ABI_H */
