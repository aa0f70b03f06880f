/* PV entropy device: serves the guest's rng.h ring on the vCPU thread at each doorbell kick, filling buffers from getrandom(2). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "devices/devices.h"
#include "core/log.h"
#include "devices/rng/rng_pv_model.h"
#include "core/vm.h"
#include "state/vm_state.h"

/*
 * Why no I/O thread: a request is a getrandom(2) call of at most 64 KiB
 * that never blocks once the host's pool is initialised, so serving the
 * whole ring in the exit of the kick is short and bounded.  Without a
 * thread there is no control block, no lock and no handshake: quiesce and
 * resume have nothing to do (a paused vCPU cannot kick), save sees every
 * request answered, and reset is just forgetting the ring.  The price is
 * one exit to user space per kick instead of an ioeventfd wake-up, which
 * the guest amortises by asking for many bytes per request.  A rate-limited
 * request is not held (nothing would wake us to finish it); it is answered
 * -EAGAIN with the wait, and the guest sleeps in KAPSEL_HC_BLOCK.
 *
 * All policy lives in rng_pv_model.c; this file is the KVM glue.
 */

struct rng_pv {
	struct kapsel_device dev;
	struct rng_pv_model model;
	bool fill_failure_logged;
};

/* getrandom(2) from the host kernel's generator; the guest never names a
 * source.  Loops over short reads (a signal may interrupt large ones). */
static int rng_pv_fill_getrandom(void *opaque, void *buffer, uint32_t length_bytes)
{
	struct rng_pv *r = opaque;
	uint8_t *p = buffer;
	while (length_bytes) {
		ssize_t got = getrandom(p, length_bytes, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			if (!r->fill_failure_logged) {
				r->fill_failure_logged = true;
				kapsel_warn("rng: getrandom failed (%s); the guest gets -EIO",
					    got < 0 ? strerror(errno) : "no bytes");
			}
			return -KAPSEL_EIO;
		}
		p += got;
		length_bytes -= (uint32_t)got;
	}
	return 0;
}

static void rng_pv_kick(struct kapsel_device *dev)
{
	struct rng_pv *r = dev->priv;
	__atomic_fetch_add(&r->model.stats.kicks, 1, __ATOMIC_RELAXED);
	if (!rng_pv_model_serve(&r->model, vm_clock_ns(dev->vm)))
		return;
	uint32_t port = __atomic_load_n(&dev->evtchn_port, __ATOMIC_ACQUIRE);
	if (port == UINT32_MAX)
		return; /* nobody bound a channel: the guest polls */
	vm_evtchn_notify(dev->vm, port);
	__atomic_fetch_add(&r->model.stats.notifications, 1, __ATOMIC_RELAXED);
}

/* The doorbell: any write is a kick; reads see all ones. */
static void rng_pv_io_write(struct kapsel_device *dev, uint16_t port, unsigned size, uint32_t value)
{
	(void)port;
	(void)size;
	(void)value;
	rng_pv_kick(dev);
}

static void rng_pv_io_read(struct kapsel_device *dev, uint16_t port, unsigned size, uint32_t *value)
{
	(void)dev;
	(void)port;
	(void)size;
	*value = UINT32_MAX;
}

static int rng_pv_setup(struct kapsel_device *dev, const struct kapsel_device_setup *setup)
{
	struct rng_pv *r = dev->priv;
	return rng_pv_model_setup(&r->model, setup);
}

static void rng_pv_reset(struct kapsel_device *dev)
{
	struct rng_pv *r = dev->priv;
	rng_pv_model_reset(&r->model);
}

static int rng_pv_save(struct kapsel_device *dev, struct vm_state_writer *out)
{
	struct rng_pv *r = dev->priv;
	struct vm_state_rng_pv rec;
	rng_pv_model_save(&r->model, &rec);
	return vm_state_put(out, VM_STATE_DEV_RNG_PV, VM_STATE_RECORD_MANDATORY, &rec, sizeof(rec));
}

static int rng_pv_load(struct kapsel_device *dev, uint32_t type, const void *payload,
		       uint64_t length_bytes, char *error, size_t error_len)
{
	struct rng_pv *r = dev->priv;
	struct vm_state_rng_pv rec;
	if (type != VM_STATE_DEV_RNG_PV)
		return -ENOENT;
	if (length_bytes != sizeof(rec)) {
		snprintf(error, error_len, "PV entropy record is %llu bytes, expected %zu",
			 (unsigned long long)length_bytes, sizeof(rec));
		return -EINVAL;
	}
	memcpy(&rec, payload, sizeof(rec));
	return rng_pv_model_load(&r->model, &rec, error, error_len);
}

static void rng_pv_print_stats(struct kapsel_device *dev, FILE *out)
{
	struct rng_pv *r = dev->priv;
	rng_pv_model_print_stats(&r->model, __atomic_load_n(&dev->exits, __ATOMIC_RELAXED), out);
}

static void rng_pv_destroy(struct kapsel_device *dev)
{
	free(dev->priv);
}

/* No quiesce/resume: the device only works inside a vCPU exit. */
const struct kapsel_device_ops rng_pv_ops = {
	.name = "rng-pv",
	.type = KAPSEL_DEV_RNG_PV,
	.io_read = rng_pv_io_read,
	.io_write = rng_pv_io_write,
	.setup = rng_pv_setup,
	.reset = rng_pv_reset,
	.save = rng_pv_save,
	.load = rng_pv_load,
	.print_stats = rng_pv_print_stats,
	.destroy = rng_pv_destroy,
};

int dev_rng_pv_create(struct kapsel_vm *vm, const struct vm_rng_config *config)
{
	if (devices_have(vm, &rng_pv_ops)) {
		kapsel_error("cannot attach a second PV entropy device; a VM has at most one");
		return -EEXIST;
	}
	struct rng_pv *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	rng_pv_model_init(&r->model, &vm->mem, config, vm_clock_ns(vm), rng_pv_fill_getrandom, r);
	r->dev.ops = &rng_pv_ops;
	r->dev.priv = r;
	r->dev.desc.type = KAPSEL_DEV_RNG_PV;
	int err = vm_add_device(vm, &r->dev);
	if (err) {
		kapsel_error("cannot attach the PV entropy device: %s",
			     err == -ENOSPC ? "too many devices (at most 16)" : strerror(-err));
		free(r);
		return err;
	}
	vm_add_trapped_doorbell(vm, &r->dev);
	kapsel_debug("rng: PV entropy device %u, doorbell %#x", r->dev.desc.index,
		     r->dev.desc.doorbell_port);
	return 0;
}
