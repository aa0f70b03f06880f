/* Emulated NE2000 device: ports 0x300-0x31f of the VM wired to the DP8390 state machine (ne2000.c) and a network backend. */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "devices/devices.h"
#include "core/log.h"
#include "devices/net/ne2000.h"
#include "devices/net/net_backend.h"
#include "devices/net/net_state.h"
#include "core/vm.h"
#include "state/vm_state.h"

#define NE2000_IO_BASE 0x300u
/* An ISR poll that finds nothing waits this long in the host for a frame,
 * so an idle polling guest costs a few exits per millisecond, not
 * thousands; a frame that arrives ends the wait at once. */
#define NE2000_IDLE_WAIT_MS 1
#define NE2000_ISR_EVENTS                                                                     \
	(NE2000_ISR_PRX | NE2000_ISR_PTX | NE2000_ISR_RXE | NE2000_ISR_TXE | NE2000_ISR_OVW | \
	 NE2000_ISR_RDC)

struct dev_ne2000 {
	struct kapsel_device dev;
	struct net_backend backend;
	unsigned unit;
	uint8_t frame[NE2000_FRAME_MAX];
	struct ne2000_state card;
};

/* The card transmits: the rate limit holds the (single) vCPU, as a slow
 * wire would, then the frame goes to the backend. */
static void dev_ne2000_transmit(void *context, const uint8_t *frame, size_t length_bytes)
{
	struct dev_ne2000 *d = context;
	uint64_t wait = net_backend_rate_limit(&d->backend, length_bytes, vm_clock_ns(d->dev.vm));
	while (wait) {
		struct timespec ts = { .tv_sec = (time_t)(wait / 1000000000ull),
				       .tv_nsec = (long)(wait % 1000000000ull) };
		nanosleep(&ts, NULL);
		wait = net_backend_rate_limit(&d->backend, length_bytes, vm_clock_ns(d->dev.vm));
	}
	struct iovec iov = { (void *)(uintptr_t)frame, length_bytes };
	net_backend_send(&d->backend, &iov, 1);
}

/* Move waiting frames from the backend into the card's ring while it has
 * room for a full-size one. */
static void dev_ne2000_pull(struct dev_ne2000 *d)
{
	while (ne2000_can_receive(&d->card) && net_backend_readable(&d->backend)) {
		ssize_t n = net_backend_receive(&d->backend, d->frame, sizeof(d->frame));
		if (n == -EMSGSIZE)
			continue;
		if (n <= 0)
			break;
		if (!ne2000_receive(&d->card, d->frame, (size_t)n)) {
			struct net_stats drop = { .drops_in = 1 };
			net_stats_add(&d->backend, &drop);
		}
	}
}

static bool is_isr_read(const struct dev_ne2000 *d, unsigned reg)
{
	return reg == NE2000_P0_ISR && (d->card.cr >> NE2000_CR_PAGE_SHIFT) == 0;
}

static void dev_ne2000_io_read(struct kapsel_device *dev, uint16_t port, unsigned size,
			       uint32_t *value)
{
	struct dev_ne2000 *d = dev->priv;
	unsigned reg = (unsigned)(port - dev->io_port_base);
	if (is_isr_read(d, reg)) {
		dev_ne2000_pull(d);
		if (!(d->card.isr & NE2000_ISR_EVENTS) && ne2000_can_receive(&d->card)) {
			struct pollfd p = { .fd = d->backend.fd, .events = POLLIN };
			if (poll(&p, 1, NE2000_IDLE_WAIT_MS) == 1)
				dev_ne2000_pull(d);
		}
	}
	*value = ne2000_io_read(&d->card, reg, size);
}

static void dev_ne2000_io_write(struct kapsel_device *dev, uint16_t port, unsigned size,
				uint32_t value)
{
	struct dev_ne2000 *d = dev->priv;
	ne2000_io_write(&d->card, (unsigned)(port - dev->io_port_base), size, value);
}

/* rep ins/outs on the data port: one copy for the whole string. */
static void dev_ne2000_io_string(struct kapsel_device *dev, uint16_t port, unsigned size,
				 uint32_t count, bool is_write, void *data)
{
	struct dev_ne2000 *d = dev->priv;
	unsigned reg = (unsigned)(port - dev->io_port_base);
	if (reg >= NE2000_DATA_PORT && reg < NE2000_DATA_PORT + 8u) {
		if (is_write)
			ne2000_data_write(&d->card, data, (size_t)size * count);
		else
			ne2000_data_read(&d->card, data, (size_t)size * count);
		return;
	}
	device_io_each(dev, port, size, count, is_write, data);
}

static void dev_ne2000_print_stats(struct kapsel_device *dev, FILE *out)
{
	struct dev_ne2000 *d = dev->priv;
	const uint8_t *m = dev->desc.mac;
	fprintf(out, "  mac: %02x:%02x:%02x:%02x:%02x:%02x\n", m[0], m[1], m[2], m[3], m[4], m[5]);
	net_backend_print_stats(&d->backend, dev->exits, out);
	ne2000_print_stats(&d->card, out);
}

/* The card's state and RAM (frames received and not read yet are in its
 * ring and go with it); frames still waiting in the backend are dropped
 * and counted, as a stopped card drops them.  The card works only in
 * the vCPU's exits, so a paused vCPU leaves it still: nothing to quiesce. */
static int dev_ne2000_save(struct kapsel_device *dev, struct vm_state_writer *out)
{
	struct dev_ne2000 *d = dev->priv;
	static struct vm_state_ne2000 rec; /* 16 KiB; saves run one at a time */
	ne2000_state_save(&d->card, &rec);
	rec.frames_dropped_at_save = net_backend_drop_waiting(&d->backend);
	if (rec.frames_dropped_at_save)
		kapsel_debug("net %u: %llu frame(s) waiting in the backend dropped by the save",
			     d->unit, (unsigned long long)rec.frames_dropped_at_save);
	net_stats_to_array(&d->backend, rec.counters);
	return vm_state_put(out, VM_STATE_DEV_NE2000, VM_STATE_RECORD_MANDATORY, &rec, sizeof(rec));
}

static int dev_ne2000_load(struct kapsel_device *dev, uint32_t type, const void *payload,
			   uint64_t length_bytes, char *error, size_t error_len)
{
	struct dev_ne2000 *d = dev->priv;
	if (type != VM_STATE_DEV_NE2000)
		return -ENOENT;
	int err = ne2000_state_load(&d->card, payload, length_bytes, error, error_len);
	if (err)
		return err;
	const struct vm_state_ne2000 *rec = payload; /* checked: its size is right */
	uint64_t counters[VM_STATE_NET_COUNTERS];
	memcpy(counters, (const uint8_t *)rec + offsetof(struct vm_state_ne2000, counters),
	       sizeof(counters));
	net_stats_from_array(&d->backend, counters);
	return 0;
}

/* Migration: the destination opens the socket path or tap now. */
static int dev_ne2000_host_release(struct kapsel_device *dev, char *error, size_t error_len)
{
	struct dev_ne2000 *d = dev->priv;
	return net_backend_release(&d->backend, error, error_len);
}

static int dev_ne2000_host_reacquire(struct kapsel_device *dev, char *error, size_t error_len)
{
	struct dev_ne2000 *d = dev->priv;
	return net_backend_reacquire(&d->backend, error, error_len);
}

static void dev_ne2000_host_confirm(struct kapsel_device *dev)
{
	struct dev_ne2000 *d = dev->priv;
	net_backend_confirm(&d->backend);
}

static void dev_ne2000_destroy(struct kapsel_device *dev)
{
	struct dev_ne2000 *d = dev->priv;
	net_backend_close(&d->backend);
	free(d);
}

const struct kapsel_device_ops dev_ne2000_ops = {
	.name = "ne2000",
	.type = KAPSEL_DEV_NE2000,
	.io_read = dev_ne2000_io_read,
	.io_write = dev_ne2000_io_write,
	.io_string = dev_ne2000_io_string,
	.print_stats = dev_ne2000_print_stats,
	.destroy = dev_ne2000_destroy,
	.save = dev_ne2000_save,
	.load = dev_ne2000_load,
	.host_release = dev_ne2000_host_release,
	.host_reacquire = dev_ne2000_host_reacquire,
	.host_confirm = dev_ne2000_host_confirm,
};

int dev_ne2000_create(struct kapsel_vm *vm, const struct vm_net_config *config, unsigned unit)
{
	char error[512];
	if (devices_have(vm, &dev_ne2000_ops)) {
		kapsel_error("net %u ('%s'): only one NE2000 is supported (I/O base 0x300); attach this one with model=pv (libvirt <model type='xen'/>)",
			     unit, config->path);
		return -EINVAL;
	}
	struct dev_ne2000 *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->unit = unit;
	int err = net_backend_open(&d->backend, config, unit, vm_clock_ns(vm), vm->incoming, error,
				   sizeof(error));
	if (err) {
		kapsel_error("%s", error);
		free(d);
		return err;
	}
	uint8_t mac[6];
	vm_config_net_mac(vm->config, unit, mac);
	ne2000_init(&d->card, mac, dev_ne2000_transmit, d);
	device_init_emulated(&d->dev, &dev_ne2000_ops, d, NE2000_IO_BASE, NE2000_PORT_COUNT, 0,
			     unit);
	d->dev.desc.mtu_bytes = 1500;
	memcpy(d->dev.desc.mac, mac, 6);
	err = vm_add_device(vm, &d->dev);
	if (err) {
		if (err == -ENOSPC)
			kapsel_error("net %u ('%s'): too many devices (at most %u); remove a disk or net",
				     unit, config->path, KAPSEL_MAX_DEVICES);
		else
			kapsel_error("net %u ('%s'): the NE2000 ports 0x300-0x31f are already taken by another device",
				     unit, config->path);
		dev_ne2000_destroy(&d->dev);
		return err;
	}
	kapsel_debug("net %u: NE2000 at 0x300 on %s '%s'", unit,
		     config->backend == VM_NET_BACKEND_TAP ? "tap" : "socket", config->path);
	return 0;
}
