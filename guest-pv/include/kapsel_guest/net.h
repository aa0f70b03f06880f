/* Guest network API: one interface over the PV network rings and the emulated NE2000 NIC. */
#ifndef KAPSEL_GUEST_NET_H
#define KAPSEL_GUEST_NET_H

/*
 * Several vCPUs (docs/porting.md §12.4): not thread-safe per device.
 * Drive one device from one vCPU at a time (a kg_spinlock around it if
 * several share it); kg_net_open allocates: one vCPU at a time.
 */

#include <stdbool.h>
#include <stdint.h>

#include "kapsel/net.h"

enum kg_net_path {
	KG_NET_AUTO = 0,   /* whatever the hypervisor offers for this interface */
	KG_NET_PV = 1,	   /* PV rings (KAPSEL_DEV_NET_PV) */
	KG_NET_NE2000 = 2, /* emulated NE2000, polled PIO (KAPSEL_DEV_NE2000) */
	KG_NET_VIRTIO = 3, /* off Kapsel: virtio-net on virtio-mmio (QEMU microvm) */
};

struct kg_net_device;

/* Counters the guest library keeps, for benchmarks. */
struct kg_net_stats {
	uint64_t frames_sent;
	uint64_t frames_received;
	uint64_t send_errors;	   /* frames the device refused */
	uint64_t receive_errors;   /* buffers refused, corrupt ring entries */
	uint64_t kicks;		   /* PV doorbell writes */
	uint64_t kicks_suppressed; /* PV and virtio publishes that needed no kick */
	uint64_t blocks;	   /* waits that slept in the hypervisor */
};

/*
 * Open network interface index (the nth interface of the VM's
 * definition) through path.  KG_NET_AUTO takes what the interface is
 * offered as.  Off Kapsel only interface 0 as an NE2000 at 0x300 can be
 * found.  Uses kg_os_alloc_pages for rings and buffers.  Returns 0 or
 * -KAPSEL_ENODEV (no such interface on that path), -KAPSEL_EIO,
 * -KAPSEL_ENOMEM.
 */
int kg_net_open(unsigned index, enum kg_net_path path, struct kg_net_device **device);

/* The path in use (KG_NET_PV, KG_NET_NE2000 or KG_NET_VIRTIO). */
enum kg_net_path kg_net_path_of(struct kg_net_device *device);

/* A path's name as command lines spell it: "auto", "pv", "ne2000",
 * "virtio". */
const char *kg_net_path_name(enum kg_net_path path);

/* Parse such a name into *path.  0, or -KAPSEL_EINVAL for another word. */
int kg_net_path_parse(const char *text, enum kg_net_path *path);

/*
 * The station address.  The library notices a new restore/clone
 * generation (start_info.generation) in every call and re-reads the
 * address then, so a clone uses its own.
 */
void kg_net_mac(struct kg_net_device *device, uint8_t mac[KAPSEL_NET_MAC_BYTES]);

/*
 * Send one Ethernet frame (destination, source, type, payload; no FCS),
 * KAPSEL_NET_FRAME_MIN..KAPSEL_NET_FRAME_MAX bytes; frames shorter than
 * 60 bytes are padded on the NE2000 path.  The frame is copied: the
 * buffer is free again on return.  Returns 0, -KAPSEL_EINVAL (length) or
 * -KAPSEL_EIO (the device refused it).
 */
int kg_net_send(struct kg_net_device *device, const void *frame, uint32_t length_bytes);

/*
 * Receive one frame into buffer (max_bytes; a longer frame is cut to
 * max_bytes).  If none is waiting: wait false returns 0 at once, wait true
 * sleeps (in the hypervisor) until one arrives.  Returns the bytes stored,
 * 0, or a negative KAPSEL_E*.
 */
int kg_net_recv(struct kg_net_device *device, void *buffer, uint32_t max_bytes, bool wait);

/* As kg_net_recv, waiting until deadline_ns on the Kapsel clock
 * (kg_time_now_ns); returns 0 when the deadline passes. */
int kg_net_recv_until(struct kg_net_device *device, void *buffer, uint32_t max_bytes,
		      uint64_t deadline_ns);

/* Busy-poll window before a receive sleeps (PV path; 0, the default,
 * sleeps at once). */
void kg_net_set_poll_ns(struct kg_net_device *device, uint64_t poll_ns);

void kg_net_get_stats(struct kg_net_device *device, struct kg_net_stats *stats);

#endif
