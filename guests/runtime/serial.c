/* Polled output on the 16550 UART at COM1 (0x3f8): no interrupts, no input. */
#include "runtime.h"

#define UART_THR 0 /* transmit holding register (DLAB=0) */
#define UART_DLL 0 /* divisor latch low (DLAB=1) */
#define UART_IER 1 /* interrupt enable (DLAB=0) */
#define UART_DLM 1 /* divisor latch high (DLAB=1) */
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define LCR_DLAB 0x80
#define LCR_8N1 0x03
#define LSR_THRE 0x20

/* Bound on LSR polls per character: a device that never reports THRE costs a slow console, not a hang. */
#define THRE_POLL_LIMIT 100000

/* Standard 16550 set-up: interrupts off, 115200 baud (divisor 1), 8N1, FIFOs on, DTR|RTS. */
void serial_init(void)
{
    outb(COM1_BASE + UART_IER, 0x00);
    outb(COM1_BASE + UART_LCR, LCR_DLAB);
    outb(COM1_BASE + UART_DLL, 0x01);
    outb(COM1_BASE + UART_DLM, 0x00);
    outb(COM1_BASE + UART_LCR, LCR_8N1);
    outb(COM1_BASE + UART_FCR, 0x07);
    outb(COM1_BASE + UART_MCR, 0x03);
}

void serial_putc(char c)
{
    for (unsigned i = 0; i < THRE_POLL_LIMIT; i++) {
        if (inb(COM1_BASE + UART_LSR) & LSR_THRE)
            break;
        cpu_relax();
    }
    outb(COM1_BASE + UART_THR, (uint8_t)c);
}

void serial_write(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        serial_putc(s[i]);
}
