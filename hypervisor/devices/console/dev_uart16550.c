/* Emulated 16550A UART on COM1 (0x3f8): trapped register by register, one exit per access. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/devices.h"
#include "core/log.h"
#include "core/vm.h"
#include "state/vm_state.h"

#define UART_COM1_BASE 0x3f8u
#define UART_PORT_COUNT 8u

/* Register offsets. */
enum {
	UART_RBR_THR_DLL = 0,
	UART_IER_DLM = 1,
	UART_IIR_FCR = 2,
	UART_LCR = 3,
	UART_MCR = 4,
	UART_LSR = 5,
	UART_MSR = 6,
	UART_SCR = 7,
};

#define UART_LCR_DLAB 0x80u
#define UART_IER_RX_AVAILABLE 0x01u
#define UART_IER_TX_EMPTY 0x02u
#define UART_IIR_NONE 0x01u
#define UART_IIR_TX_EMPTY 0x02u
#define UART_IIR_RX_AVAILABLE 0x04u
#define UART_IIR_FIFO_ENABLED 0xc0u
#define UART_FCR_ENABLE 0x01u
#define UART_FCR_CLEAR_RX 0x02u
#define UART_MCR_LOOPBACK 0x10u
#define UART_LSR_DATA_READY 0x01u
#define UART_LSR_THR_EMPTY 0x20u
#define UART_LSR_TX_IDLE 0x40u

#define UART_LOOPBACK_BYTES 16u

struct uart16550 {
	uint8_t ier, lcr, mcr, scr, fcr;
	uint8_t dll, dlm;
	/* Loopback mode keeps transmitted bytes here instead of the host. */
	uint8_t loopback[UART_LOOPBACK_BYTES];
	unsigned loopback_count;
	uint64_t bytes_out, bytes_in;
};

static bool uart_rx_ready(struct kapsel_device *dev)
{
	struct uart16550 *uart = dev->priv;
	if (uart->mcr & UART_MCR_LOOPBACK)
		return uart->loopback_count > 0;
	return console_input_pending(&dev->vm->console) > 0;
}

static uint8_t uart_receive(struct kapsel_device *dev)
{
	struct uart16550 *uart = dev->priv;
	uint8_t byte = 0;
	if (uart->mcr & UART_MCR_LOOPBACK) {
		if (uart->loopback_count) {
			byte = uart->loopback[0];
			memmove(uart->loopback, uart->loopback + 1, --uart->loopback_count);
		}
		return byte;
	}
	if (console_read(&dev->vm->console, &byte, 1) == 1)
		uart->bytes_in++;
	return byte;
}

static void uart_transmit(struct kapsel_device *dev, uint8_t byte)
{
	struct uart16550 *uart = dev->priv;
	if (uart->mcr & UART_MCR_LOOPBACK) {
		if (uart->loopback_count < UART_LOOPBACK_BYTES)
			uart->loopback[uart->loopback_count++] = byte;
		return;
	}
	uart->bytes_out++;
	console_write(&dev->vm->console, &byte, 1);
}

static uint8_t uart_read_register(struct kapsel_device *dev, unsigned offset)
{
	struct uart16550 *uart = dev->priv;
	bool dlab = uart->lcr & UART_LCR_DLAB;

	switch (offset) {
	case UART_RBR_THR_DLL:
		return dlab ? uart->dll : uart_receive(dev);
	case UART_IER_DLM:
		return dlab ? uart->dlm : uart->ier;
	case UART_IIR_FCR: {
		uint8_t fifo = (uart->fcr & UART_FCR_ENABLE) ? UART_IIR_FIFO_ENABLED : 0;
		/* Highest priority first: received data, then THR empty. */
		if ((uart->ier & UART_IER_RX_AVAILABLE) && uart_rx_ready(dev))
			return fifo | UART_IIR_RX_AVAILABLE;
		if (uart->ier & UART_IER_TX_EMPTY)
			return fifo | UART_IIR_TX_EMPTY;
		return fifo | UART_IIR_NONE;
	}
	case UART_LCR:
		return uart->lcr;
	case UART_MCR:
		return uart->mcr;
	case UART_LSR:
		/* Transmission is instant: the holding register is always empty. */
		return UART_LSR_THR_EMPTY | UART_LSR_TX_IDLE |
		       (uart_rx_ready(dev) ? UART_LSR_DATA_READY : 0);
	case UART_MSR:
		if (uart->mcr & UART_MCR_LOOPBACK) {
			/* DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD. */
			uint8_t m = uart->mcr;
			return (uint8_t)(((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) |
					 ((m & 0x08) << 4));
		}
		return 0xb0; /* CTS, DSR and DCD asserted: a cable is attached */
	case UART_SCR:
		return uart->scr;
	}
	return 0xff;
}

static void uart_write_register(struct kapsel_device *dev, unsigned offset, uint8_t value)
{
	struct uart16550 *uart = dev->priv;
	bool dlab = uart->lcr & UART_LCR_DLAB;

	switch (offset) {
	case UART_RBR_THR_DLL:
		if (dlab)
			uart->dll = value;
		else
			uart_transmit(dev, value);
		break;
	case UART_IER_DLM:
		if (dlab)
			uart->dlm = value;
		else
			uart->ier = value & 0x0f;
		break;
	case UART_IIR_FCR:
		uart->fcr = value & 0xc9; /* bits 1-2 self-clear */
		if ((value & UART_FCR_CLEAR_RX) && (uart->mcr & UART_MCR_LOOPBACK))
			uart->loopback_count = 0;
		break;
	case UART_LCR:
		uart->lcr = value;
		break;
	case UART_MCR:
		uart->mcr = value & 0x1f;
		break;
	case UART_LSR:
	case UART_MSR:
		break; /* read-only on real hardware; writes are ignored there too */
	case UART_SCR:
		uart->scr = value;
		break;
	}
}

/* Wider accesses touch consecutive registers, as on an 8-bit bus. */
static void uart_io_read(struct kapsel_device *dev, uint16_t port, unsigned size, uint32_t *value)
{
	*value = 0;
	for (unsigned i = 0; i < size; i++) {
		unsigned offset = (unsigned)(port - dev->io_port_base) + i;
		uint8_t byte = offset < UART_PORT_COUNT ? uart_read_register(dev, offset) : 0xff;
		*value |= (uint32_t)byte << (8 * i);
	}
}

static void uart_io_write(struct kapsel_device *dev, uint16_t port, unsigned size, uint32_t value)
{
	for (unsigned i = 0; i < size; i++) {
		unsigned offset = (unsigned)(port - dev->io_port_base) + i;
		if (offset < UART_PORT_COUNT)
			uart_write_register(dev, offset, (uint8_t)(value >> (8 * i)));
	}
}

static void uart_print_stats(struct kapsel_device *dev, FILE *out)
{
	struct uart16550 *uart = dev->priv;
	fprintf(out, "  bytes_out: %llu\n  bytes_in: %llu\n", (unsigned long long)uart->bytes_out,
		(unsigned long long)uart->bytes_in);
}

static int uart_save(struct kapsel_device *dev, struct vm_state_writer *out)
{
	const struct uart16550 *uart = dev->priv;
	struct vm_state_uart16550 rec = {
		.ier = uart->ier,
		.lcr = uart->lcr,
		.mcr = uart->mcr,
		.scr = uart->scr,
		.fcr = uart->fcr,
		.dll = uart->dll,
		.dlm = uart->dlm,
		.loopback_count = (uint8_t)uart->loopback_count,
		.bytes_out = uart->bytes_out,
		.bytes_in = uart->bytes_in,
	};
	memcpy(rec.loopback, uart->loopback, sizeof(rec.loopback));
	return vm_state_put(out, VM_STATE_DEV_UART16550, VM_STATE_RECORD_MANDATORY, &rec,
			    sizeof(rec));
}

static int uart_load(struct kapsel_device *dev, uint32_t type, const void *payload,
		     uint64_t length_bytes, char *error, size_t error_len)
{
	struct uart16550 *uart = dev->priv;
	struct vm_state_uart16550 rec;
	if (type != VM_STATE_DEV_UART16550)
		return -ENOENT;
	if (length_bytes != sizeof(rec)) {
		snprintf(error, error_len, "UART record is %llu bytes, expected %zu",
			 (unsigned long long)length_bytes, sizeof(rec));
		return -EINVAL;
	}
	memcpy(&rec, payload, sizeof(rec));
	if (rec.loopback_count > UART_LOOPBACK_BYTES) {
		snprintf(error, error_len, "UART loopback count %u is over %u", rec.loopback_count,
			 UART_LOOPBACK_BYTES);
		return -EINVAL;
	}
	/* The same masks the register writes apply. */
	uart->ier = rec.ier & 0x0f;
	uart->lcr = rec.lcr;
	uart->mcr = rec.mcr & 0x1f;
	uart->scr = rec.scr;
	uart->fcr = rec.fcr & 0xc9;
	uart->dll = rec.dll;
	uart->dlm = rec.dlm;
	uart->loopback_count = rec.loopback_count;
	memcpy(uart->loopback, rec.loopback, sizeof(uart->loopback));
	uart->bytes_out = rec.bytes_out;
	uart->bytes_in = rec.bytes_in;
	return 0;
}

static void uart_destroy(struct kapsel_device *dev)
{
	free(dev->priv);
	free(dev);
}

const struct kapsel_device_ops uart16550_ops = {
	.name = "uart16550",
	.type = KAPSEL_DEV_UART16550,
	.io_read = uart_io_read,
	.io_write = uart_io_write,
	.print_stats = uart_print_stats,
	.destroy = uart_destroy,
	.save = uart_save,
	.load = uart_load,
};

int dev_uart16550_create(struct kapsel_vm *vm)
{
	struct kapsel_device *dev = calloc(1, sizeof(*dev));
	struct uart16550 *uart = calloc(1, sizeof(*uart));
	if (!dev || !uart) {
		free(dev);
		free(uart);
		return -ENOMEM;
	}
	uart->dll = 1;	  /* 115200 baud */
	uart->lcr = 0x03; /* 8N1 */
	dev->ops = &uart16550_ops;
	dev->priv = uart;
	dev->io_port_base = UART_COM1_BASE;
	dev->io_port_count = UART_PORT_COUNT;
	dev->desc.type = KAPSEL_DEV_UART16550;
	dev->desc.io_base = UART_COM1_BASE;
	int err = vm_add_device(vm, dev);
	if (err) {
		kapsel_error("cannot attach the UART at %#x: ports in use or too many devices",
			     UART_COM1_BASE);
		uart_destroy(dev);
	}
	return err;
}
