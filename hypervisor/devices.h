/* Which devices a VM gets: builds them from the VM's config, in a fixed order. */
#ifndef KAPSEL_DEVICES_H
#define KAPSEL_DEVICES_H

#include "config.h"

struct kapsel_vm;
struct kapsel_device;

/*
 * Attach every device the config asks for, in a fixed order so device
 * indexes are stable: PV console, UART, then disks in config order.
 * Returns 0 or a negative errno (after printing what went wrong).
 */
int devices_attach(struct kapsel_vm *vm);

/* Constructors, one per device file.  Each allocates its device, calls
 * vm_add_device and returns 0 or a negative errno (message printed). */
int dev_console_pv_create(struct kapsel_vm *vm);
int dev_uart16550_create(struct kapsel_vm *vm);

#endif
