/* Which devices a VM gets: builds them from the VM's config, in a fixed order. */
#include "devices/devices.h"

#include <string.h>

#include "devices/device.h"
#include "core/vm.h"

int devices_attach(struct kapsel_vm *vm)
{
	int err;

	if (vm->config->console_mode != VM_CONSOLE_UART) {
		err = dev_console_pv_create(vm);
		if (err)
			return err;
	}
	err = dev_uart16550_create(vm);
	if (err)
		return err;
	/* Disks in config order; unit = index in the config. */
	for (unsigned i = 0; i < vm->config->disk_count; i++) {
		const struct vm_disk_config *disk = &vm->config->disks[i];
		if (disk->bus == VM_DISK_BUS_ATA)
			err = dev_ata_create(vm, disk, i);
		else
			err = dev_blk_pv_create(vm, disk, i);
		if (err)
			return err;
	}
	/* Nets after disks, in config order; unit = index among the nets. */
	for (unsigned i = 0; i < vm->config->net_count; i++) {
		const struct vm_net_config *net = &vm->config->nets[i];
		if (net->model == VM_NET_MODEL_NE2000)
			err = dev_ne2000_create(vm, net, i);
		else
			err = dev_net_pv_create(vm, net, i);
		if (err)
			return err;
	}
	/* The entropy device last, so adding it moves no other device. */
	if (vm->config->rng.enabled) {
		err = dev_rng_pv_create(vm, &vm->config->rng);
		if (err)
			return err;
	}
	/* Without a PV console nobody signals input; the UART polls for it. */
	if (vm->config->console_mode == VM_CONSOLE_UART)
		return console_start_input(&vm->console, NULL, NULL);
	return 0;
}

struct kapsel_device *devices_find_disk(const struct kapsel_vm *vm, unsigned unit)
{
	for (unsigned i = 0; i < vm->device_count; i++) {
		struct kapsel_device *dev = vm->devices[i];
		bool disk_type = dev->desc.type == KAPSEL_DEV_BLOCK_PV ||
				 dev->desc.type == KAPSEL_DEV_ATA_DISK;
		if (disk_type && dev->ops->disk_image && dev->desc.unit == unit)
			return dev;
	}
	return NULL;
}

bool devices_have(const struct kapsel_vm *vm, const struct kapsel_device_ops *ops)
{
	for (unsigned i = 0; i < vm->device_count; i++)
		if (vm->devices[i]->ops == ops)
			return true;
	return false;
}

void device_init_emulated(struct kapsel_device *dev, const struct kapsel_device_ops *ops,
			  void *priv, uint16_t io_base, uint16_t io_port_count,
			  uint16_t io_ctl_port, unsigned unit)
{
	dev->ops = ops;
	dev->priv = priv;
	dev->io_port_base = io_base;
	dev->io_port_count = io_port_count;
	dev->io_ctl_port = io_ctl_port;
	dev->desc.type = (uint16_t)ops->type;
	dev->desc.io_base = io_base;
	dev->desc.io_ctl = io_ctl_port;
	dev->desc.unit = (uint16_t)unit;
}

void device_io_each(struct kapsel_device *dev, uint16_t port, unsigned size, uint32_t count,
		    bool is_write, void *data)
{
	uint8_t *p = data;
	for (uint32_t i = 0; i < count; i++, p += size) {
		uint32_t value = 0;
		if (is_write) {
			memcpy(&value, p, size);
			dev->ops->io_write(dev, port, size, value);
		} else {
			dev->ops->io_read(dev, port, size, &value);
			memcpy(p, &value, size);
		}
	}
}

/* Every device there is: the one list of device types and their names. */
static const struct kapsel_device_ops *const all_device_ops[] = {
	&console_pv_ops, &uart16550_ops, &dev_ata_ops, &blk_pv_ops,
	&dev_ne2000_ops, &net_pv_ops,	 &rng_pv_ops,
};

const char *devices_type_name(uint32_t type)
{
	for (size_t i = 0; i < sizeof(all_device_ops) / sizeof(all_device_ops[0]); i++)
		if ((uint32_t)all_device_ops[i]->type == type)
			return all_device_ops[i]->name;
	return "unknown";
}
