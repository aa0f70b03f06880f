/* PV block device: serves a guest's blk.h ring on its own I/O thread (the PV device skeleton) with an I/O engine, zero copy into guest RAM. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <x86intrin.h>

#include "core/log.h"
#include "core/vm.h"
#include "devices/block/blk_pv.h"
#include "devices/devices.h"

/*
 * The I/O thread's pass (the skeleton's loop, pv_device.c, with this
 * device's hooks):
 *   reap io_uring completions -> write responses            (collect)
 *   take requests from the ring (each copied once), validate, apply the
 *     policy, start them on the engine; io_uring_submit once  (serve)
 *   publish responses once; signal the event channel if rsp_event asks
 *   nothing to do: busy-poll poll_us if configured, or the adaptive
 *     window (poll); set req_event unless a deep queue will wake us
 *     (wants_kick), re-check, and sleep in io_uring_enter until a
 *     doorbell read, a control read or an I/O completes (wait).
 */

void blk_pv_measure_tsc_offset(struct blk_pv *b)
{
	uint64_t guest;
	uint64_t before = __rdtsc();
	if (vm_guest_tsc(b->pv.dev.vm, &guest) < 0)
		return; /* keep the old offset (0 at first: host scale) */
	uint64_t after = __rdtsc();
	uint64_t host = before + (after - before) / 2;
	__atomic_store_n(&b->tsc_offset, (int64_t)(guest - host), __ATOMIC_RELAXED);
}

/* The I/O thread waits for kicks and control requests in io_uring. */
static void blk_pv_thread_begin(struct pv_device *pv)
{
	struct blk_pv *b = blk_pv_of(pv);
	blk_pv_arm_read(b, BLK_PV_TAG_DOORBELL);
	blk_pv_arm_read(b, BLK_PV_TAG_CONTROL);
}

static const struct pv_device_class blk_pv_class = {
	.serving = PV_SERVE_ON_THREAD,
	.queue_count = 1, /* the device sets pv.queue_count (vCPUs, or queues=) */
	.per_queue_channels = true,
	.thread_name = "kapsel-blk",
	.device_reads_eventfds = true, /* through io_uring, so completions wake it too */
	.thread_begin = blk_pv_thread_begin,
	.serve = blk_pv_serve,
	.in_flight = blk_pv_in_flight,
	.ring_replaced = blk_pv_ring_replaced,
	.ring_broken = blk_pv_ring_broken,
	.collect = blk_pv_reap,
	.after_publish = blk_pv_after_publish,
	.poll = blk_pv_poll,
	.wants_kick = blk_pv_wants_kick,
	.wait = blk_pv_wait,
	.drain = blk_pv_drain,
};

/* The skeleton's setup and reset, with the guest's TSC offset measured
 * again (responses carry guest-scale timestamps). */
static int blk_pv_setup(struct kapsel_device *dev, const struct kapsel_device_setup *setup)
{
	blk_pv_measure_tsc_offset(dev->priv);
	return pv_device_setup(dev, setup);
}

static void blk_pv_reset(struct kapsel_device *dev)
{
	blk_pv_measure_tsc_offset(dev->priv);
	pv_device_reset(dev);
}

static void blk_pv_destroy(struct kapsel_device *dev)
{
	struct blk_pv *b = dev->priv;
	pv_device_destroy(&b->pv);
	blk_pv_uring_stop(b);
	if (b->disk_open)
		disk_image_close(&b->disk);
	free(b->slots);
	free(b->zero_buffer);
	free(b);
}

/* The control plane changes the disk's policy at run time (control_verbs.c). */
static struct disk_image *blk_pv_disk_image(struct kapsel_device *dev)
{
	struct blk_pv *b = dev->priv;
	return &b->disk;
}

const struct kapsel_device_ops blk_pv_ops = {
	.name = "blk-pv",
	.type = KAPSEL_DEV_BLOCK_PV,
	.setup = blk_pv_setup,
	.reset = blk_pv_reset,
	.print_stats = blk_pv_print_stats,
	.destroy = blk_pv_destroy,
	.quiesce = pv_device_quiesce,
	.resume = pv_device_resume,
	.save = blk_pv_save,
	.load = blk_pv_load,
	.disk_image = blk_pv_disk_image,
};

unsigned blk_pv_queue_count(const struct kapsel_vm *vm, const struct vm_disk_config *config)
{
	unsigned n = config->queues ? config->queues : vm->vcpu_count;
	if (n < 1)
		n = 1;
	return n > PV_DEVICE_MAX_QUEUES ? PV_DEVICE_MAX_QUEUES : n;
}

int dev_blk_pv_create(struct kapsel_vm *vm, const struct vm_disk_config *config, unsigned unit)
{
	char error[768];
	int err;

	struct blk_pv *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (unsigned q = 0; q < PV_DEVICE_MAX_QUEUES; q++)
		pv_queue_init(&b->queues[q], sizeof(struct kapsel_blk_request),
			      sizeof(struct kapsel_blk_response));
	pv_device_init(&b->pv, &blk_pv_class, &blk_pv_ops, b, b->queues, unit);
	b->pv.queue_count = blk_pv_queue_count(vm, config);
	b->poll_ns = config->poll ? (uint64_t)config->poll_us * 1000u : 0;
	b->adaptive_poll = !config->poll;
	b->adaptive_window_ns = BLK_PV_ADAPTIVE_POLL_NS;
	b->tsc_khz = vm->tsc_khz;
	err = disk_image_open(&b->disk, config, vm_clock_ns(vm), error, sizeof(error));
	if (err) {
		kapsel_error("%s", error);
		free(b);
		return err;
	}
	b->disk_open = true;
	/* cache=none: pages of the image left in the host page cache (by a
	 * buffered writer before us) make io_uring refuse the non-blocking
	 * O_DIRECT write to them (it would have to invalidate them) and hand
	 * the write to an io-wq worker, where writes to one file queue one
	 * behind the other.  Drop them once (dirty ones are written back). */
	if (b->disk.direct && !b->disk.overlay) {
		if (fdatasync(b->disk.fd) == 0)
			posix_fadvise(b->disk.fd, 0, 0, POSIX_FADV_DONTNEED);
	}
	b->pv.dev.desc.flags = config->readonly ? KAPSEL_DEVICE_FLAG_READONLY : 0;
	b->pv.dev.desc.capacity_sectors = b->disk.capacity_sectors;
	b->pv.dev.desc.queue_count = (uint16_t)b->pv.queue_count;
	char what[600];
	snprintf(what, sizeof(what), "disk %u ('%s')", unit, config->path);
	err = pv_device_attach(vm, &b->pv, what);
	if (err && b->pv.dev.vm == NULL) {
		disk_image_close(&b->disk);
		free(b);
		return err;
	}
	/* From here on vm_destroy calls blk_pv_destroy, which undoes the rest. */
	if (err)
		return err;

	/* A ring's worth of slots per queue: a full ring never waits for a
	 * slot another queue holds. */
	unsigned slots = BLK_PV_SLOTS * b->pv.queue_count;
	b->slots = calloc(slots, sizeof(*b->slots));
	b->zero_buffer = aligned_alloc(4096, BLK_PV_ZERO_CHUNK_BYTES);
	if (!b->slots || !b->zero_buffer)
		return -ENOMEM;
	memset(b->zero_buffer, 0, BLK_PV_ZERO_CHUNK_BYTES);
	for (unsigned i = slots; i-- > 0;)
		blk_pv_slot_free(b, &b->slots[i]);
	blk_pv_measure_tsc_offset(b);
	err = blk_pv_uring_start(b);
	if (err)
		return err;
	err = pv_device_start(&b->pv, what);
	if (err)
		return err;
	kapsel_debug("disk %u: PV block device %u on '%s', %llu sectors%s%s, %s engine, %u queue(s)",
		     unit, b->pv.dev.desc.index, config->path,
		     (unsigned long long)b->disk.capacity_sectors,
		     config->readonly ? ", read-only" : "",
		     config->cache == VM_DISK_CACHE_NONE ? ", O_DIRECT" : "",
		     blk_pv_engine(b)->name, b->pv.queue_count);
	return 0;
}
