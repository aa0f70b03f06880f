/* Which devices a VM gets: builds them from the VM's config, in a fixed order. */
#ifndef KAPSEL_DEVICES_H
#define KAPSEL_DEVICES_H

#include "config.h"

struct kapsel_vm;
struct kapsel_device;

/*
 * Attach every device the config asks for, in a fixed order so device
 * indexes are stable: PV console, UART, disks in config order, then
 * network interfaces in config order.
 * Returns 0 or a negative errno (after printing what went wrong).
 */
int devices_attach(struct kapsel_vm *vm);

/* Constructors, one per device file.  Each allocates its device, calls
 * vm_add_device and returns 0 or a negative errno (message printed). */
int dev_console_pv_create(struct kapsel_vm *vm);
int dev_uart16550_create(struct kapsel_vm *vm);
/* The emulated ATA disk (drive 0 at 0x1f0/0x3f6) for config disk number
 * unit; refuses a second ATA disk. */
int dev_ata_create(struct kapsel_vm *vm, const struct vm_disk_config *disk, unsigned unit);
/* The PV block device (KAPSEL_DEV_BLOCK_PV) for config disk number unit:
 * opens the image (errors name the image and the fix), adds a doorbell
 * and starts the device's I/O thread.  Precondition: the vCPU exists. */
int dev_blk_pv_create(struct kapsel_vm *vm, const struct vm_disk_config *disk, unsigned unit);
/* The PV network device (KAPSEL_DEV_NET_PV) for config net number unit:
 * opens the backend (errors name the socket or tap and the fix), adds a
 * doorbell and starts the device's I/O thread. */
int dev_net_pv_create(struct kapsel_vm *vm, const struct vm_net_config *net, unsigned unit);
/* The emulated NE2000 (I/O base 0x300) for config net number unit;
 * refuses a second NE2000. */
int dev_ne2000_create(struct kapsel_vm *vm, const struct vm_net_config *net, unsigned unit);

#endif
