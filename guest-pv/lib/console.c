/* Guest console: one API over the PV console hypercalls, an emulated 16550 UART or a virtio-console. */
#include "kapsel_guest/console.h"

#include "console_internal.h"

#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/smp.h"

#define UART_DEFAULT_BASE 0x3f8u

static enum kg_console_mode console_mode = KG_CONSOLE_UART;
static uint16_t console_uart_base = UART_DEFAULT_BASE;
/* One writer and one reader at a time across vCPUs, so that one call's
 * bytes stay together (a UART takes them one port write at a time).
 * irqsave: an upcall handler that prints must not spin on a lock its own
 * vCPU holds. */
static struct kg_spinlock console_write_lock, console_read_lock;

int kg_console_init(enum kg_console_mode mode)
{
	const struct kapsel_device_desc *pv = kg_platform_find_device(KAPSEL_DEV_CONSOLE_PV, 0);
	const struct kapsel_device_desc *uart = kg_platform_find_device(KAPSEL_DEV_UART16550, 0);

	if (uart)
		console_uart_base = uart->io_base;
	if (mode == KG_CONSOLE_PV && !pv)
		return -KAPSEL_ENODEV;
	if (mode == KG_CONSOLE_VIRTIO) {
		if (kg_platform_is_kapsel())
			return -KAPSEL_ENODEV;
		int err = kg_virtio_console_open();
		if (err)
			return err;
		console_mode = mode;
		return 0;
	}
	if (mode == KG_CONSOLE_AUTO)
		mode = pv ? KG_CONSOLE_PV : KG_CONSOLE_UART;
	console_mode = mode;
	if (mode == KG_CONSOLE_UART)
		kg_uart_init(console_uart_base);
	return 0;
}

enum kg_console_mode kg_console_mode(void)
{
	return console_mode;
}

static void console_write_locked(const void *data, size_t length)
{
	const char *p = data;
	if (console_mode == KG_CONSOLE_UART) {
		kg_uart_write(console_uart_base, data, length);
		return;
	}
	if (console_mode == KG_CONSOLE_VIRTIO) {
		kg_virtio_console_write(data, length);
		return;
	}
	while (length) {
		int64_t n = kg_hc_console_write(p, length);
		if (n <= 0) {
			/* PV refused (bad buffer?): fall back to the UART. */
			kg_uart_write(console_uart_base, p, length);
			return;
		}
		p += n;
		length -= (size_t)n;
	}
}

void kg_console_write(const void *data, size_t length)
{
	unsigned long flags = kg_spin_lock_irqsave(&console_write_lock);
	console_write_locked(data, length);
	kg_spin_unlock_irqrestore(&console_write_lock, flags);
}

static size_t console_read_locked(void *data, size_t length)
{
	if (console_mode == KG_CONSOLE_UART)
		return kg_uart_read(console_uart_base, data, length);
	if (console_mode == KG_CONSOLE_VIRTIO)
		return kg_virtio_console_read(data, length);
	int64_t n = kg_hc_console_read(data, length);
	return n > 0 ? (size_t)n : 0;
}

size_t kg_console_read(void *data, size_t length)
{
	unsigned long flags = kg_spin_lock_irqsave(&console_read_lock);
	size_t n = console_read_locked(data, length);
	kg_spin_unlock_irqrestore(&console_read_lock, flags);
	return n;
}
