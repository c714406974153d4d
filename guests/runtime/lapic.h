/* xAPIC local APIC registers (SDM vol. 3 §12.4, table 12-1), memory-mapped at 0xFEE00000. */
#ifndef GUEST_LAPIC_H
#define GUEST_LAPIC_H

#include "layout.h"
#include "x86.h"

#define LAPIC_ID 0x020
#define LAPIC_TPR 0x080
#define LAPIC_EOI 0x0B0
#define LAPIC_SVR 0x0F0
#define LAPIC_ICR_LOW 0x300
#define LAPIC_ICR_HIGH 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INITIAL 0x380
#define LAPIC_TIMER_CURRENT 0x390
#define LAPIC_TIMER_DIVIDE 0x3E0

#define LAPIC_SVR_ENABLE 0x100
#define LAPIC_SPURIOUS_VECTOR 0xFF
#define LAPIC_LVT_MASKED 0x10000
#define LAPIC_LVT_TIMER_PERIODIC 0x20000
#define LAPIC_LVT_TIMER_TSC_DEADLINE 0x40000 /* timer mode 10b (bits 18:17), §12.5.4.1 */
#define MSR_IA32_TSC_DEADLINE 0x6E0
#define CPUID_1_ECX_TSC_DEADLINE (1u << 24)
#define LAPIC_TIMER_DIVIDE_BY_16 0x3

#define ICR_DELIVERY_INIT 0x500
#define ICR_DELIVERY_STARTUP 0x600
#define ICR_LEVEL_ASSERT 0x4000
#define ICR_SEND_PENDING 0x1000

static inline uint32_t lapic_read(uint32_t reg) { return mmio_read32(LAPIC_BASE + reg); }
static inline void lapic_write(uint32_t reg, uint32_t value) { mmio_write32(LAPIC_BASE + reg, value); }
static inline void lapic_eoi(void) { lapic_write(LAPIC_EOI, 0); }
static inline unsigned lapic_id(void) { return lapic_read(LAPIC_ID) >> 24; }

#endif
