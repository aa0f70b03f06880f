/* PV block device, counters: the I/O thread's kicks, notifications and in-flight count folded into the disk's stats, and print_stats. */
#include <pthread.h>
#include <stdio.h>

#include "devices/block/blk_pv.h"

void blk_pv_report_stats(struct blk_pv *b)
{
	uint64_t kicks = __atomic_load_n(&b->pv.kicks, __ATOMIC_RELAXED);
	uint64_t notifications = __atomic_load_n(&b->pv.notifications, __ATOMIC_RELAXED);
	uint64_t in_flight = blk_pv_in_flight(&b->pv);
	if (kicks == b->kicks_reported && notifications == b->notifications_reported &&
	    in_flight == b->in_flight_reported)
		return;
	pthread_mutex_lock(&b->disk.lock);
	b->disk.stats.kicks_received = kicks;
	b->disk.stats.exits = kicks; /* each doorbell write is one VM exit */
	b->disk.stats.notifications_sent = notifications;
	b->disk.stats.in_flight = in_flight;
	pthread_mutex_unlock(&b->disk.lock);
	b->kicks_reported = kicks;
	b->notifications_reported = notifications;
	b->in_flight_reported = in_flight;
}

void blk_pv_print_stats(struct kapsel_device *dev, FILE *out)
{
	struct blk_pv *b = dev->priv;
	disk_stats_print(&b->disk, out);
	for (unsigned q = 0; q < b->pv.queue_count; q++) {
		uint32_t slots = pv_device_ring_slots(&b->pv, q);
		char name[24] = "ring";
		if (b->pv.queue_count > 1)
			snprintf(name, sizeof(name), "queue %u", q);
		if (!slots) {
			fprintf(out, "  %s: not set up\n", name);
			continue;
		}
		fprintf(out, "  %s: %u slots, %llu requests, %llu notifications%s\n", name, slots,
			(unsigned long long)__atomic_load_n(&b->queue_requests[q],
							    __ATOMIC_RELAXED),
			(unsigned long long)__atomic_load_n(&b->pv.queue_notifications[q],
							    __ATOMIC_RELAXED),
			__atomic_load_n(&b->queues[q].ring.broken, __ATOMIC_RELAXED)
				? " (stopped: broken by the guest)"
				: "");
	}
	if (b->adaptive_poll)
		fprintf(out, "  poll_us: adaptive (after a completion, up to %u)\n",
			BLK_PV_ADAPTIVE_POLL_NS / 1000u);
	else
		fprintf(out, "  poll_us: %llu\n", (unsigned long long)(b->poll_ns / 1000));
}
