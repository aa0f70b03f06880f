/* State records of the NICs (PV net and NE2000): the checks a saved record passes before a device takes it. */
#include "devices/net/net_state.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kapsel/net.h"

int net_pv_record_check(const void *payload, uint64_t length_bytes, struct vm_state_net_pv *rec,
			char *error, size_t error_len)
{
	static const char *const names[2] = { "TX", "RX" };
	if (length_bytes != sizeof(*rec)) {
		snprintf(error, error_len, "PV net record is %llu bytes, expected %zu",
			 (unsigned long long)length_bytes, sizeof(*rec));
		return -EINVAL;
	}
	memcpy(rec, payload, sizeof(*rec));
	_Static_assert(KAPSEL_NET_QUEUE_COUNT == 2, "one record queue per net.h queue");
	for (unsigned q = 0; q < 2; q++) {
		const struct vm_state_net_pv_queue *saved = &rec->queues[q];
		if (!saved->ring_gpa) {
			static const struct vm_state_net_pv_queue unset;
			if (memcmp(saved, &unset, sizeof(unset)) != 0) {
				snprintf(error, error_len,
					 "PV net record: the %s ring is not set up (address 0) but has indices or a size",
					 names[q]);
				return -EINVAL;
			}
			continue;
		}
		if (saved->ring_pages == 0) { /* the rest: against guest memory on restore */
			snprintf(error, error_len,
				 "PV net record: the %s ring at %#llx has 0 pages", names[q],
				 (unsigned long long)saved->ring_gpa);
			return -EINVAL;
		}
		if (saved->req_cons != saved->rsp_prod) {
			snprintf(error, error_len,
				 "PV net record: the %s ring's indices differ (taken %u, answered %u); a NIC is saved only when it answered every frame it took",
				 names[q], saved->req_cons, saved->rsp_prod);
			return -EINVAL;
		}
		if (saved->broken > 1) {
			snprintf(error, error_len,
				 "PV net record: the %s ring's broken flag is %u, expected 0 or 1",
				 names[q], saved->broken);
			return -EINVAL;
		}
	}
	return 0;
}

static int refuse(char *error, size_t error_len, const char *what)
{
	snprintf(error, error_len, "NE2000 record: %s; the state is damaged or forged", what);
	return -EINVAL;
}

int ne2000_state_load(struct ne2000_state *ne, const void *payload, uint64_t length_bytes,
		      char *error, size_t error_len)
{
	static struct vm_state_ne2000 rec; /* 16 KiB: not on the vCPU thread's stack */
	if (length_bytes != sizeof(rec)) {
		snprintf(error, error_len, "NE2000 record is %llu bytes, expected %zu",
			 (unsigned long long)length_bytes, sizeof(rec));
		return -EINVAL;
	}
	memcpy(&rec, payload, sizeof(rec));
	unsigned run = rec.cr & (NE2000_CR_STA | NE2000_CR_STP);
	if (run != NE2000_CR_STA && run != NE2000_CR_STP)
		return refuse(error, error_len,
			      "the command register has the card both started and stopped, or neither");
	if (rec.cr & NE2000_CR_TXP)
		return refuse(error, error_len,
			      "the command register has a transmit pending (the card sends at once)");
	if (!(rec.cr & NE2000_CR_RD_MASK))
		return refuse(error, error_len, "the command register has no remote DMA mode");
	if (((rec.isr & NE2000_ISR_RST) != 0) != (run == NE2000_CR_STP))
		return refuse(error, error_len,
			      "ISR.RST disagrees with the command register's stop bit");
	/* PSTART, PSTOP, CURR and BNRY are not checked: a guest can write any
	 * of them to a started card, and the card guards every use of them
	 * (ring_sane before storing a frame, the send packet and remote DMA
	 * bounds), so a record with a ring outside card RAM is a state the
	 * running card was in; refusing it would let a guest make its own
	 * save unrestorable and fail a migration after the hand-over. */
	ne->cr = rec.cr;
	ne->isr = rec.isr;
	ne->imr = rec.imr;
	ne->dcr = rec.dcr;
	ne->rcr = rec.rcr;
	ne->tcr = rec.tcr;
	ne->tsr = rec.tsr;
	ne->rsr = rec.rsr;
	ne->pstart = rec.pstart;
	ne->pstop = rec.pstop;
	ne->bnry = rec.bnry;
	ne->curr = rec.curr;
	ne->tpsr = rec.tpsr;
	ne->tbcr = rec.tbcr;
	ne->rsar = rec.rsar;
	ne->rbcr = rec.rbcr;
	memcpy(ne->par, rec.par, sizeof(ne->par));
	memcpy(ne->mar, rec.mar, sizeof(ne->mar));
	_Static_assert(sizeof(rec.ram) == sizeof(ne->ram), "card RAM size");
	memcpy(ne->ram, rec.ram, sizeof(ne->ram));
	struct ne2000_counters *c = &ne->counters;
	uint64_t *const counters[9] = { &c->frames_sent,     &c->frames_received,
					&c->frames_filtered, &c->frames_overflow,
					&c->frames_stopped,  &c->bad_remote_dma,
					&c->bad_transmit,    &c->bad_ring,
					&c->resets };
	_Static_assert(sizeof(struct ne2000_counters) == sizeof(rec.card_counters), "counters");
	for (unsigned i = 0; i < 9; i++)
		*counters[i] = rec.card_counters[i];
	return 0;
}

void ne2000_state_save(const struct ne2000_state *ne, struct vm_state_ne2000 *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->cr = ne->cr;
	rec->isr = ne->isr;
	rec->imr = ne->imr;
	rec->dcr = ne->dcr;
	rec->rcr = ne->rcr;
	rec->tcr = ne->tcr;
	rec->tsr = ne->tsr;
	rec->rsr = ne->rsr;
	rec->pstart = ne->pstart;
	rec->pstop = ne->pstop;
	rec->bnry = ne->bnry;
	rec->curr = ne->curr;
	rec->tpsr = ne->tpsr;
	rec->tbcr = ne->tbcr;
	rec->rsar = ne->rsar;
	rec->rbcr = ne->rbcr;
	memcpy(rec->par, ne->par, sizeof(rec->par));
	memcpy(rec->mar, ne->mar, sizeof(rec->mar));
	memcpy(rec->ram, ne->ram, sizeof(rec->ram));
	const struct ne2000_counters *c = &ne->counters;
	const uint64_t counters[9] = { c->frames_sent,	   c->frames_received, c->frames_filtered,
				       c->frames_overflow, c->frames_stopped,  c->bad_remote_dma,
				       c->bad_transmit,	   c->bad_ring,	       c->resets };
	memcpy(rec->card_counters, counters, sizeof(counters));
}
