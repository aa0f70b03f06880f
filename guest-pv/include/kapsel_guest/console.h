/* Guest console: one API over the PV console hypercalls, an emulated 16550 UART or (off Kapsel) a virtio-console. */
#ifndef KAPSEL_GUEST_CONSOLE_H
#define KAPSEL_GUEST_CONSOLE_H

/*
 * Several vCPUs (docs/porting.md §12.4): kg_console_init runs on vCPU
 * 0 at boot; kg_console_write and kg_console_read are safe on any vCPU and
 * in upcall handlers (one writer and one reader at a time, irqsave); the
 * kg_uart_* calls used directly take no lock.
 */

#include <stddef.h>
#include <stdint.h>

enum kg_console_mode {
	KG_CONSOLE_AUTO = 0, /* PV when Kapsel offers it, else the UART */
	KG_CONSOLE_PV = 1,
	KG_CONSOLE_UART = 2,
	KG_CONSOLE_VIRTIO = 3, /* off Kapsel: virtio-console on QEMU microvm; never automatic */
};

/* Pick the path; call after kg_platform_init.  Returns 0, or
 * -KAPSEL_ENODEV if the requested path does not exist. */
int kg_console_init(enum kg_console_mode mode);

/* The path in use (PV, UART or VIRTIO). */
enum kg_console_mode kg_console_mode(void);

/* Write length bytes (all of them; blocks as needed). */
void kg_console_write(const void *data, size_t length);

/* Read up to length bytes that are waiting; returns how many (0 if none). */
size_t kg_console_read(void *data, size_t length);

/* 16550 fallback driver, usable directly. */
void kg_uart_init(uint16_t io_base);
void kg_uart_write(uint16_t io_base, const void *data, size_t length);
size_t kg_uart_read(uint16_t io_base, void *data, size_t length);

#endif
