/* Contract between the console dispatcher (console.c) and its virtio-console driver (console_virtio.c). */
#ifndef KAPSEL_GUEST_CONSOLE_INTERNAL_H
#define KAPSEL_GUEST_CONSOLE_INTERNAL_H

#include <stddef.h>

/* Find and start the first virtio-console (off Kapsel, QEMU microvm);
 * 0 or -KAPSEL_ENODEV / -KAPSEL_ENOMEM.  Needs kg_os_alloc_pages. */
int kg_virtio_console_open(void);
/* Write everything; waits for the device to take each chunk. */
void kg_virtio_console_write(const void *data, size_t length);
/* Up to length bytes already received; 0 if none. */
size_t kg_virtio_console_read(void *data, size_t length);

#endif
