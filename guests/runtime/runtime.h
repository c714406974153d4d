/*
 * The guest runtime's C API: serial output, printf, command line, power-off, TSC calibration, CPL3 entry,
 * traps. Every guest program includes this and defines `void main(struct hvm_start_info *)` (PVH guests) or
 * `void c_entry(uint64_t)` (the bzImage guest, which has its own entry path).
 */
#ifndef GUEST_RUNTIME_H
#define GUEST_RUNTIME_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"
#include "start_info.h"
#include "x86.h"

#define NORETURN __attribute__((noreturn))

/* --- Serial (16550 at 0x3f8) -------------------------------------------------------------------- */
void serial_init(void);
void serial_putc(char c); /* '\n' is sent as a single LF */
void serial_write(const char *s, size_t len);

/* --- printf: %s %c %d %i %u %x %X %p %%, flags '0' '-', width, length l ll z ------------------------- */
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintf(const char *fmt, va_list ap);

/* --- Command line ----------------------------------------------------------------------------------- */
void cmdline_set(const char *cmdline); /* NULL means empty */
const char *cmdline_get(void);
/* Value of `key` (which includes the '=', e.g. "count=") as a decimal or 0x-hex number, or `fallback` when
 * the key is absent or its value is not a number. Keys match at the start or after a space. */
uint64_t cmdline_get_u64(const char *key, uint64_t fallback);
/* True if `key` is present with exactly `value` (e.g. cmdline_value_is("mode=", "in")). */
bool cmdline_value_is(const char *key, const char *value);

/* --- Power off: a 1-byte write of 0x34 to port 0x600, then stop (works at CPL0 and at CPL3) ------------ */
NORETURN void poweroff(void);

/* --- Time ------------------------------------------------------------------------------------------------ */
/* TSC ticks per millisecond, measured against 50 ms of PIT channel 2 (its gate is port 0x61 bit 0); 0 if the
 * PIT never counts down. Port I/O only, so it works at CPL3. */
uint64_t tsc_per_ms(void);

/* --- CPL3 ----------------------------------------------------------------------------------------------- */
extern char user_stack_top[]; /* a 16 KiB stack for one CPL3 thread */
/* iretq to fn at CPL3 with RFLAGS.IOPL=3 on `stack_top`; IF is kept as it is. If fn returns, the runtime
 * reports it and powers off. in/out work at CPL3 (IOPL=3 on hardware, the TSS I/O bitmap under PVM, which
 * hides IOPL from CPL3); cli/sti/popf-IF do not under PVM, so CPL3 code must not use them. */
NORETURN void enter_user(void (*fn)(void), void *stack_top);

/* --- Traps and interrupts ------------------------------------------------------------------------------- */
/* The stack frame built by the stubs in boot.S (lowest address first). */
struct trap_frame {
    uint64_t r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax;
    uint64_t vector, error_code;
    uint64_t rip, cs, rflags, rsp, ss; /* pushed by the CPU */
};

typedef void (*irq_handler_t)(unsigned vector);
/* Route interrupt `vector` (32-255) to `handler` (runs at CPL0 with interrupts off; it must EOI). */
void irq_set_handler(unsigned vector, irq_handler_t handler);
/* Called by boot.S for every vector. Exceptions (0-31) print a report and power off. */
void trap_dispatch(struct trap_frame *frame);

/* --- Strings (gcc may emit calls to the first four even in freestanding code) ---------------------------- */
void *memset(void *dst, int c, size_t n);
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strnlen(const char *s, size_t max);

/* --- Provided by each guest ------------------------------------------------------------------------------ */
/* PVH guests: called at CPL0 after the runtime set up long mode, the serial port and the command line. */
void main(struct hvm_start_info *start_info);
/* The PVH start_info the guest was booted with (readable at CPL3 too). */
extern struct hvm_start_info *boot_start_info;

#endif
