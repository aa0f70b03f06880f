/* Platform discovery: are we on Kapsel, which ABI, which devices, what time is it. */
#ifndef KAPSEL_GUEST_PLATFORM_H
#define KAPSEL_GUEST_PLATFORM_H

/*
 * Several vCPUs (docs/porting.md §12.4): kg_platform_init,
 * kg_platform_on_new_generation and kg_platform_control_enable run on vCPU 0
 * at boot, before other vCPUs start; every other call here is safe on any
 * vCPU at any time (read-only, atomic, or the clock's sequence count).
 */

#include <stdbool.h>
#include <stdint.h>

#include "kapsel/abi.h"

/*
 * Call once at boot with the start info pointer the hypervisor passed in
 * rdi (may be NULL on a non-Kapsel host).  Checks the CPUID signature and
 * the ABI major version.  Returns 0, or -KAPSEL_ENODEV when the PV
 * interface is unusable (then only emulated devices are used).
 */
int kg_platform_init(const struct kapsel_start_info *start_info);

/* True when the Kapsel PV interface is present and its ABI is understood. */
bool kg_platform_is_kapsel(void);

/*
 * Off Kapsel, the exit code goes to QEMU's isa-debug-exit device
 * (-device isa-debug-exit,iobase=0xf4,iosize=0x04), which ends QEMU with
 * status (exit_code << 1) | 1.  The port must be open to CPL3 (the PVH
 * shim in guest-pv/runtime opens it).
 */
#define KG_DEBUG_EXIT_PORT 0xf4u
/* The exit code written there for a crash (SHUTDOWN_CRASH, an exception in
 * the PVH shim): the status kapsel itself exits with for one. */
#define KG_EXIT_CODE_CRASH 126

/*
 * End the VM: on Kapsel, KAPSEL_HC_SHUTDOWN(reason, exit_code); elsewhere
 * exit_code (0-127 survive QEMU's encoding), or KG_EXIT_CODE_CRASH for
 * KAPSEL_SHUTDOWN_CRASH, is written to KG_DEBUG_EXIT_PORT (a reboot is an
 * exit too), and, if that returns (no such device), the vCPU spins: CPL3
 * code cannot halt.
 */
__attribute__((noreturn)) void kg_platform_shutdown(enum kapsel_shutdown_reason reason,
						    int exit_code);

/* The start info page, or NULL off Kapsel. */
const struct kapsel_start_info *kg_platform_start_info(void);

/* The nth device of a type (0 = first), or NULL. */
const struct kapsel_device_desc *kg_platform_find_device(enum kapsel_device_type type,
							 unsigned nth);

/*
 * The first device (in start info order) numbered unit whose type is
 * either_type or or_type, or NULL (always NULL off Kapsel).  Pass
 * KAPSEL_DEV_NONE as or_type to accept one type only.  For devices offered
 * on two paths that share a unit number (a disk as PV ring and ATA).
 */
const struct kapsel_device_desc *kg_platform_find_unit(unsigned unit,
						       enum kapsel_device_type either_type,
						       enum kapsel_device_type or_type);

/* Nanoseconds on the Kapsel clock, from the TSC (no exit); off Kapsel,
 * since kg_platform_init. */
uint64_t kg_time_now_ns(void);

/* A TSC interval in nanoseconds at the rate kg_time_now_ns uses (on and
 * off Kapsel); 0 when no rate is known. */
uint64_t kg_time_ticks_to_ns(uint64_t ticks);

/* Sleep for at least duration_ns in the hypervisor (one exit).  Off
 * Kapsel there is no such call: it spins on the TSC clock when the start
 * info gave its rate (the PVH shim measures it), else returns at once, and
 * kg_time_now_ns stays 0. */
void kg_time_sleep_ns(uint64_t duration_ns);

/* The event page, or NULL off Kapsel. */
struct kapsel_event_page *kg_platform_event_page(void);

/* Atomically take (and clear) channel port's pending bit; true if it was set. */
bool kg_evtchn_test_and_clear(uint32_t port);

/* The restore/clone generation the library last saw; see
 * kg_platform_check_generation. */
uint64_t kg_platform_generation(void);

/*
 * Register a function to call when the VM was restored or cloned (the
 * start info generation changed): re-derive MACs, seeds and IDs there.
 */
void kg_platform_on_new_generation(void (*callback)(uint64_t generation));

/* Compare the start info generation with the last one seen; if it changed,
 * run the callback and return true. */
bool kg_platform_check_generation(void);

/*
 * Control requests (ABI minor 1): the operator's "please power off" or
 * "please reboot" (kapsel shutdown NAME).  kg_platform_control_enable
 * unmasks the reserved channel KAPSEL_EVTCHN_CONTROL so that a request
 * wakes the vCPU from kg_hc_block; call it once after kg_platform_init if
 * the guest reacts to requests.  Returns 0, or -KAPSEL_ENOSYS when the
 * hypervisor does not offer KAPSEL_FEATURE_CONTROL (or off Kapsel).
 */
int kg_platform_control_enable(void);

/*
 * The pending request (enum kapsel_control_request), KAPSEL_CONTROL_NONE if
 * there is none.  Clears the control channel's pending bit, so a sleeping
 * loop does not wake again for the same request.  *deadline_ns (may be
 * NULL) gets the Kapsel-clock time after which the host ends the VM.
 */
enum kapsel_control_request kg_platform_control_request(uint64_t *deadline_ns);

#endif
