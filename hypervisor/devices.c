/* Which devices a VM gets: builds them from the VM's config, in a fixed order. */
#include "devices.h"

#include "vm.h"

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
	/* Without a PV console nobody signals input; the UART polls for it. */
	if (vm->config->console_mode == VM_CONSOLE_UART)
		return console_start_input(&vm->console, NULL, NULL);
	return 0;
}
