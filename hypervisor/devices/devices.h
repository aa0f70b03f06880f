/* Which devices a VM gets: builds them from the VM's config, in a fixed order. */
#ifndef KAPSEL_DEVICES_H
#define KAPSEL_DEVICES_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"

struct kapsel_vm;
struct kapsel_device;
struct kapsel_device_ops;

/*
 * Attach every device the config asks for, in a fixed order so device
 * indexes are stable: PV console, UART, disks in config order, network
 * interfaces in config order, then the PV entropy device.  The only path
 * that attaches devices: a created, a restored and an incoming VM all get
 * theirs here, so their indexes agree (the saved state matches devices by
 * index).  Precondition: vm was made by vm_create_without_devices (or by
 * vm_create, which calls this) and has no devices yet.
 * Returns 0 or a negative errno (after printing what went wrong).
 */
int devices_attach(struct kapsel_vm *vm);

/* The device serving config->disks[unit] (an ATA or PV block device whose
 * desc.unit is unit and which has a disk_image hook), or NULL. */
struct kapsel_device *devices_find_disk(const struct kapsel_vm *vm, unsigned unit);

/*
 * The name of a device type as its device calls itself (ops->name, e.g.
 * "blk-pv"), for tools that show device types from records without a
 * device at hand (inspect).  type may be any number (it comes from a
 * state file); returns "unknown" for one no device has.
 */
const char *devices_type_name(uint32_t type);

/* Each device's ops (one per device file), for devices_type_name. */
extern const struct kapsel_device_ops console_pv_ops;
extern const struct kapsel_device_ops uart16550_ops;
extern const struct kapsel_device_ops dev_ata_ops;
extern const struct kapsel_device_ops blk_pv_ops;
extern const struct kapsel_device_ops dev_ne2000_ops;
extern const struct kapsel_device_ops net_pv_ops;
extern const struct kapsel_device_ops rng_pv_ops;

/* ---- Helpers for the device files ---- */

/* True if a device with these ops is attached already (for devices a VM
 * may have only one of). */
bool devices_have(const struct kapsel_vm *vm, const struct kapsel_device_ops *ops);

/*
 * Fill the fields an emulated device's constructor sets before
 * vm_add_device: ops and priv, the claimed ports (io_port_count ports from
 * io_base, and io_ctl_port unless 0) and the same in the descriptor, with
 * desc.type = ops->type and desc.unit = unit.  Precondition: dev is zeroed.
 */
void device_init_emulated(struct kapsel_device *dev, const struct kapsel_device_ops *ops,
			  void *priv, uint16_t io_base, uint16_t io_port_count,
			  uint16_t io_ctl_port, unsigned unit);

/*
 * A string access (rep ins/outs) of count elements of size bytes at port,
 * done as count calls of dev->ops->io_read or io_write; data holds
 * count * size bytes (filled for reads).  For devices without io_string
 * and for the ports an io_string callback does not speed up.
 */
void device_io_each(struct kapsel_device *dev, uint16_t port, unsigned size, uint32_t count,
		    bool is_write, void *data);

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
/* The PV entropy device (KAPSEL_DEV_RNG_PV) with config's limits; its
 * doorbell is served on the vCPU thread.  Refuses a second one. */
int dev_rng_pv_create(struct kapsel_vm *vm, const struct vm_rng_config *config);
/* The emulated NE2000 (I/O base 0x300) for config net number unit;
 * refuses a second NE2000. */
int dev_ne2000_create(struct kapsel_vm *vm, const struct vm_net_config *net, unsigned unit);

#endif
