/* Kapsel PV network protocol: the frames that travel on a network device's TX and RX rings. */
#ifndef KAPSEL_NET_H
#define KAPSEL_NET_H

/*
 * A PV network device (KAPSEL_DEV_NET_PV, ABI minor 2, feature
 * KAPSEL_FEATURE_NET_PV) is driven through two rings (ring.h), both with
 * struct kapsel_net_request slots and struct kapsel_net_response slots:
 *
 *   queue 0, TX: each request is one Ethernet frame the guest sends
 *                (destination MAC first, no preamble and no FCS), in one
 *                guest-physically contiguous buffer.  Its response says
 *                the frame left (status 0) or was refused (negative
 *                KAPSEL_E*); a frame the network could not take (peer
 *                absent, queue full) is dropped silently, as a wire does,
 *                and still answered with 0.
 *   queue 1, RX: each request posts one empty buffer of at least
 *                KAPSEL_NET_FRAME_MAX bytes.  Its response carries one
 *                received frame: status 0 and the frame's length_bytes,
 *                or a negative status (buffer refused; length 0).
 *
 * Setup: the guest allocates both rings, allocates an event channel,
 * binds it to the device (KAPSEL_HC_EVTCHN_BIND_DEVICE), then calls
 * KAPSEL_HC_DEVICE_SETUP twice, with struct kapsel_device_setup.queue = 0
 * for the TX ring and 1 for the RX ring (same evtchn_port).  Responses on
 * either ring are signalled on that one channel (when the ring's rsp_event
 * asks).  After publishing requests on either ring the guest kicks the
 * doorbell port if kapsel_ring_need_notify says so.
 *
 * The station address (MAC) and the MTU are in the device descriptor
 * (struct kapsel_device_desc.mac, .mtu_bytes).  A guest must re-read them
 * when start_info.generation changes (a restored or cloned VM may have a
 * new address).  No offloads: no checksum, segmentation or VLAN help.
 */

#include <stdint.h>

#define KAPSEL_NET_QUEUE_TX 0u
#define KAPSEL_NET_QUEUE_RX 1u
#define KAPSEL_NET_QUEUE_COUNT 2u

#define KAPSEL_NET_MTU_BYTES 1500u  /* payload of a frame */
#define KAPSEL_NET_HEADER_BYTES 14u /* destination, source, ethertype */
#define KAPSEL_NET_FRAME_MAX 1514u  /* header + MTU, no FCS */
#define KAPSEL_NET_FRAME_MIN 14u    /* a header; short frames are not padded */
#define KAPSEL_NET_MAC_BYTES 6u

struct kapsel_net_request {
	uint64_t id;	       /* chosen by the guest, echoed in the response */
	uint64_t gpa;	       /* TX: the frame; RX: the empty buffer */
	uint32_t length_bytes; /* TX: frame length; RX: buffer size */
	uint32_t flags;	       /* 0 */
	uint64_t _reserved;
};
_Static_assert(sizeof(struct kapsel_net_request) == 32, "net request layout");
_Static_assert(__builtin_offsetof(struct kapsel_net_request, gpa) == 8, "net request gpa");
_Static_assert(__builtin_offsetof(struct kapsel_net_request, length_bytes) == 16,
	       "net request length");

/* Status values: 0 or a negative KAPSEL_E* errno. */
struct kapsel_net_response {
	uint64_t id;
	int32_t status;
	uint32_t length_bytes; /* RX: bytes of the frame in the buffer; TX: 0 */
};
_Static_assert(sizeof(struct kapsel_net_response) == 16, "net response layout");
_Static_assert(__builtin_offsetof(struct kapsel_net_response, status) == 8, "net response status");

#endif /* KAPSEL_NET_H */
