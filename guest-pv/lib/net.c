/* Guest network API: finds an interface, picks its driver (PV rings or NE2000 PIO), checks arguments, follows generation changes. */
#include "net_internal.h"

#include "kapsel_guest/libc.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"

#define PAGE_BYTES 4096u

/* The descriptor of interface index on path (AUTO: whichever is offered). */
static const struct kapsel_device_desc *find_net(unsigned index, enum kg_net_path path)
{
	return kg_platform_find_unit(index,
				     path != KG_NET_NE2000 ? KAPSEL_DEV_NET_PV : KAPSEL_DEV_NONE,
				     path != KG_NET_PV ? KAPSEL_DEV_NE2000 : KAPSEL_DEV_NONE);
}

static uint64_t current_generation(void)
{
	const struct kapsel_start_info *si = kg_platform_start_info();
	return si ? __atomic_load_n(&si->generation, __ATOMIC_ACQUIRE) : 0;
}

/* A restored or cloned VM may have a new address: re-read it once. */
static void follow_generation(struct kg_net_device *device)
{
	uint64_t now = current_generation();
	if (now == device->generation)
		return;
	device->generation = now;
	device->ops->refresh_mac(device);
}

int kg_net_open(unsigned index, enum kg_net_path path, struct kg_net_device **device)
{
	const struct kapsel_device_desc *desc = 0;
	*device = 0;
	if (path != KG_NET_AUTO && path != KG_NET_PV && path != KG_NET_NE2000 &&
	    path != KG_NET_VIRTIO)
		return -KAPSEL_EINVAL;
	if (kg_platform_is_kapsel()) {
		if (path == KG_NET_VIRTIO)
			return -KAPSEL_ENODEV;
		desc = find_net(index, path);
		if (!desc)
			return -KAPSEL_ENODEV;
	} else if (path == KG_NET_PV) {
		return -KAPSEL_ENODEV;
	}
	struct kg_net_device *dev = kg_os_alloc_pages((sizeof(*dev) + PAGE_BYTES - 1) / PAGE_BYTES);
	if (!dev)
		return -KAPSEL_ENOMEM;
	dev->desc = desc;
	dev->generation = current_generation();
	int err;
	if (desc && desc->type == KAPSEL_DEV_NET_PV) {
		err = kg_net_pv_open(desc, dev);
	} else if (desc) {
		err = kg_net_ne2000_open(desc, dev);
	} else {
		/* Off Kapsel: virtio-net interfaces (microvm) come first, then
		 * the NE2000 at the legacy 0x300, the only one there can be. */
		err = -KAPSEL_ENODEV;
		if (path != KG_NET_NE2000)
			err = kg_net_virtio_open(index, dev);
		if (err == -KAPSEL_ENODEV && path != KG_NET_VIRTIO && index == 0)
			err = kg_net_ne2000_open(0, dev);
	}
	if (err)
		return err;
	*device = dev;
	return 0;
}

enum kg_net_path kg_net_path_of(struct kg_net_device *device)
{
	return device->path;
}

static const char *const path_names[] = {
	[KG_NET_AUTO] = "auto",
	[KG_NET_PV] = "pv",
	[KG_NET_NE2000] = "ne2000",
	[KG_NET_VIRTIO] = "virtio",
};

const char *kg_net_path_name(enum kg_net_path path)
{
	return (unsigned)path < sizeof(path_names) / sizeof(path_names[0]) && path_names[path]
		       ? path_names[path]
		       : "other";
}

int kg_net_path_parse(const char *text, enum kg_net_path *path)
{
	for (unsigned i = 0; text && i < sizeof(path_names) / sizeof(path_names[0]); i++) {
		if (path_names[i] && strcmp(text, path_names[i]) == 0) {
			*path = (enum kg_net_path)i;
			return 0;
		}
	}
	return -KAPSEL_EINVAL;
}

void kg_net_mac(struct kg_net_device *device, uint8_t mac[KAPSEL_NET_MAC_BYTES])
{
	follow_generation(device);
	for (unsigned i = 0; i < KAPSEL_NET_MAC_BYTES; i++)
		mac[i] = device->mac[i];
}

int kg_net_send(struct kg_net_device *device, const void *frame, uint32_t length_bytes)
{
	if (!frame || length_bytes < KAPSEL_NET_FRAME_MIN || length_bytes > KAPSEL_NET_FRAME_MAX)
		return -KAPSEL_EINVAL;
	follow_generation(device);
	int err = device->ops->send(device, frame, length_bytes);
	if (err)
		device->stats.send_errors++;
	else
		device->stats.frames_sent++;
	return err;
}

int kg_net_recv_until(struct kg_net_device *device, void *buffer, uint32_t max_bytes,
		      uint64_t deadline_ns)
{
	if (!buffer || max_bytes == 0)
		return -KAPSEL_EINVAL;
	follow_generation(device);
	int n = device->ops->recv(device, buffer, max_bytes, deadline_ns);
	if (n > 0)
		device->stats.frames_received++;
	return n;
}

int kg_net_recv(struct kg_net_device *device, void *buffer, uint32_t max_bytes, bool wait)
{
	return kg_net_recv_until(device, buffer, max_bytes, wait ? UINT64_MAX : 0);
}

void kg_net_set_poll_ns(struct kg_net_device *device, uint64_t poll_ns)
{
	device->poll_ns = poll_ns;
}

void kg_net_get_stats(struct kg_net_device *device, struct kg_net_stats *stats)
{
	*stats = device->stats;
}
