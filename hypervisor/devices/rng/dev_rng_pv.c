/* PV entropy device: the skeleton serves its rng.h ring on the vCPU thread at each doorbell kick; buffers are filled from getrandom(2). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/log.h"
#include "core/vm.h"
#include "devices/devices.h"
#include "devices/pv_device.h"
#include "devices/rng/rng_pv_model.h"
#include "state/vm_state.h"

/*
 * Why no I/O thread (PV_SERVE_IN_EXIT): a request is a getrandom(2) call
 * of at most 64 KiB that never blocks once the host's pool is
 * initialised, so serving the whole ring in the exit of the kick is short
 * and bounded.  The skeleton then needs no control block, lock or
 * handshake: quiesce and resume have nothing to do (a paused vCPU cannot
 * kick), save sees every request answered, and reset is just forgetting
 * the ring.  The price is one exit to user space per kick instead of an
 * ioeventfd wake-up, which the guest amortises by asking for many bytes
 * per request.  A rate-limited request is not held (nothing would wake us
 * to finish it); it is answered -EAGAIN with the wait, and the guest
 * sleeps in KAPSEL_HC_BLOCK.
 *
 * All policy lives in rng_pv_model.c; the skeleton (pv_device.c) does the
 * doorbell, setup, reset, kick and notification counters and the event
 * channel.  What is left here: the fill function, the serve hook, the
 * state record and the counters' printout.
 */

struct rng_pv {
	struct pv_device pv; /* first: the skeleton (pv_device_of) */
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

/* A kick: answer every request published; the skeleton signals. */
static bool rng_pv_serve(struct pv_device *pv)
{
	struct rng_pv *r = pv_device_priv(pv);
	if (rng_pv_model_serve(&r->model, vm_clock_ns(pv->dev.vm)))
		pv_device_owe_notification(pv);
	return false;
}

static const struct pv_device_class rng_pv_class = {
	.serving = PV_SERVE_IN_EXIT,
	.queue_count = 1,
	.serve = rng_pv_serve,
};

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
	rng_pv_model_print_stats(&r->model, __atomic_load_n(&r->pv.kicks, __ATOMIC_RELAXED),
				 __atomic_load_n(&r->pv.notifications, __ATOMIC_RELAXED),
				 __atomic_load_n(&dev->exits, __ATOMIC_RELAXED), out);
}

static void rng_pv_destroy(struct kapsel_device *dev)
{
	free(dev->priv);
}

/* No quiesce/resume: the device only works inside a vCPU exit. */
const struct kapsel_device_ops rng_pv_ops = {
	.name = "rng-pv",
	.type = KAPSEL_DEV_RNG_PV,
	.io_read = pv_device_doorbell_read,
	.io_write = pv_device_doorbell_write,
	.setup = pv_device_setup,
	.reset = pv_device_reset,
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
	pv_device_init(&r->pv, &rng_pv_class, &rng_pv_ops, r, &r->model.queue, 0);
	int err = pv_device_attach(vm, &r->pv, "the PV entropy device");
	if (err) {
		free(r); /* in-exit devices cannot fail after vm_add_device */
		return err;
	}
	kapsel_debug("rng: PV entropy device %u, doorbell %#x", r->pv.dev.desc.index,
		     r->pv.dev.desc.doorbell_port);
	return 0;
}
