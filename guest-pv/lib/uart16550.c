/* 16550 UART driver: the console's full-emulation fallback, polled, no interrupts. */
#include "kapsel_guest/arch.h"
#include "kapsel_guest/console.h"

#define UART_THR 0
#define UART_RBR 0
#define UART_DLL 0
#define UART_IER 1
#define UART_DLM 1
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_LSR_DATA_READY 0x01
#define UART_LSR_THR_EMPTY 0x20

void kg_uart_init(uint16_t io_base)
{
	kg_outb(io_base + UART_IER, 0x00); /* no interrupts: we poll */
	kg_outb(io_base + UART_LCR, 0x80); /* DLAB on */
	kg_outb(io_base + UART_DLL, 0x01); /* divisor 1: 115200 baud */
	kg_outb(io_base + UART_DLM, 0x00);
	kg_outb(io_base + UART_LCR, 0x03); /* 8 bits, no parity, 1 stop, DLAB off */
	kg_outb(io_base + UART_FCR, 0x07); /* FIFOs on and cleared */
	kg_outb(io_base + UART_MCR, 0x03); /* DTR, RTS */
}

void kg_uart_write(uint16_t io_base, const void *data, size_t length)
{
	const uint8_t *p = data;
	for (size_t i = 0; i < length; i++) {
		while (!(kg_inb(io_base + UART_LSR) & UART_LSR_THR_EMPTY))
			kg_cpu_relax();
		kg_outb(io_base + UART_THR, p[i]);
	}
}

size_t kg_uart_read(uint16_t io_base, void *data, size_t length)
{
	uint8_t *p = data;
	size_t n = 0;
	while (n < length && (kg_inb(io_base + UART_LSR) & UART_LSR_DATA_READY))
		p[n++] = kg_inb(io_base + UART_RBR);
	return n;
}
