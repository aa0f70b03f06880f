/* PV console device: announces the hypercall console and signals guest input on its channel. */
#include <errno.h>
#include <stdlib.h>

#include "devices/devices.h"
#include "core/log.h"
#include "core/vm.h"

static void console_pv_input_arrived(void *opaque)
{
	struct kapsel_device *dev = opaque;
	uint32_t port = __atomic_load_n(&dev->evtchn_port, __ATOMIC_ACQUIRE);
	if (port != UINT32_MAX)
		vm_evtchn_notify(dev->vm, port);
}

static void console_pv_print_stats(struct kapsel_device *dev, FILE *out)
{
	fprintf(out, "  bytes_out: %llu\n  bytes_in: %llu\n",
		(unsigned long long)dev->vm->console.bytes_out,
		(unsigned long long)dev->vm->console.bytes_in);
}

static void console_pv_destroy(struct kapsel_device *dev)
{
	free(dev);
}

const struct kapsel_device_ops console_pv_ops = {
	.name = "console-pv",
	.type = KAPSEL_DEV_CONSOLE_PV,
	.print_stats = console_pv_print_stats,
	.destroy = console_pv_destroy,
};

int dev_console_pv_create(struct kapsel_vm *vm)
{
	struct kapsel_device *dev = calloc(1, sizeof(*dev));
	if (!dev)
		return -ENOMEM;
	dev->ops = &console_pv_ops;
	dev->desc.type = KAPSEL_DEV_CONSOLE_PV;
	int err = vm_add_device(vm, dev);
	if (err) {
		free(dev);
		kapsel_error("cannot attach the PV console: too many devices");
		return err;
	}
	return console_start_input(&vm->console, console_pv_input_arrived, dev);
}
