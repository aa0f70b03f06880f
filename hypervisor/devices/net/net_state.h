/* State records of the NICs (PV net and NE2000): the checks a saved record passes before a device takes it. */
#ifndef KAPSEL_NET_STATE_H
#define KAPSEL_NET_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "devices/net/ne2000.h"
#include "state/vm_state.h"

/*
 * Check a saved PV net record (payload, length_bytes; untrusted) and copy
 * it to *rec: its size, and for each ring either "not set up" (every field
 * 0) or a ring with a plausible size and the quiesced indices.  The ring
 * itself is checked against guest memory when it is restored
 * (pv_queue_restore).  Returns 0 or -EINVAL with a message naming the
 * field in error.
 */
int net_pv_record_check(const void *payload, uint64_t length_bytes, struct vm_state_net_pv *rec,
			char *error, size_t error_len);

/*
 * Check a saved NE2000 record (untrusted) and put it into the card ne
 * (made by ne2000_init: its PROM, transmit hook and counters of this run
 * stay): registers, card RAM, counters.  Refused, with -EINVAL and a
 * message naming the field: a size other than the record's; a command
 * register no card reaches (started and stopped at once, or neither; a
 * transmit still pending; no remote DMA mode); ISR.RST that disagrees
 * with the stop bit.  The receive ring's registers (PSTART, PSTOP, CURR,
 * BNRY) may hold anything, as a guest can write them to a started card:
 * the card stores nothing into a ring outside its RAM (bad_ring).  The
 * packets in the ring are the guest's to read: the card never follows
 * their headers except to size a "send packet" read, which stays inside
 * card memory whatever they say.
 * Nothing changes in ne when the record is refused.
 */
int ne2000_state_load(struct ne2000_state *ne, const void *payload, uint64_t length_bytes,
		      char *error, size_t error_len);

/* The card's registers, RAM and counters as a record (the counter fields
 * of the backend and frames_dropped_at_save are the caller's). */
void ne2000_state_save(const struct ne2000_state *ne, struct vm_state_ne2000 *rec);

#endif
