/*
 * ticker: a guest whose progress a test can watch, and that obeys the ACPI power button.
 *
 * At CPL0 (it halts between ticks). The LAPIC timer runs periodic (divide by 16, vector 0x40) with a
 * period of `period_ms=` (default 50; KVM's APIC bus is 1 GHz, so 62500 counts per ms); each timer
 * interrupt is one tick, printed as "tick N" (N = 1, 2, ...). Ticks are counted, not computed from elapsed
 * time, so a VM paused and resumed continues with the next number: a pause shows as a stop in the output.
 * `count=N` powers off after N ticks (default 0: run until powered off).
 *
 * The power button: the VMM's ACPI Generic Event Device raises IOAPIC pin `ged_pin=` (default 5: aovisor's
 * layout.IRQ_ACPI_GED), edge-triggered, active high, and latches event bits in the byte register at port
 * `ged_port=` (default 0x602), which a read clears. Bit 3 is the power button. This guest routes the pin
 * to vector 0x45 and, on bit 3, prints "ticker: power button" and powers off (as Linux would, through its
 * ACPI button driver). Any other bits are reported as "ticker: ged event 0x..".
 *
 * Output:
 *   ticker: period 50 ms
 *   tick 1
 *   tick 2
 *   ...
 *   ticker: power button          (then power-off), or after count=N ticks: "ticker: done N"
 */
#include "lapic.h"
#include "runtime.h"

#define LAPIC_TIMER_VECTOR 0x40
#define GED_VECTOR 0x45
#define GED_POWER_BUTTON 0x08
#define LAPIC_COUNTS_PER_MS 62500 /* 1 GHz APIC bus / 16 */
#define MAX_PERIOD_MS 60000

#define IOAPIC_REGSEL 0x00
#define IOAPIC_WINDOW 0x10
#define IOAPIC_REDTBL(pin) (0x10 + 2 * (pin))
#define IOAPIC_PINS 24
#define PIC_MASTER_DATA 0x21
#define PIC_SLAVE_DATA 0xA1

static volatile uint64_t ticks;
static volatile unsigned ged_events; /* OR of the event bits read in the GED interrupt */
static uint16_t ged_port;

static void timer_interrupt(unsigned vector)
{
    (void)vector;
    ticks++;
    lapic_eoi();
}

static void ged_interrupt(unsigned vector)
{
    (void)vector;
    ged_events |= inb(ged_port); /* the read clears the register */
    lapic_eoi();                 /* edge-triggered: no IOAPIC EOI */
}

static void ioapic_write(uint32_t reg, uint32_t value)
{
    mmio_write32(IOAPIC_BASE + IOAPIC_REGSEL, reg);
    mmio_write32(IOAPIC_BASE + IOAPIC_WINDOW, value);
}

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    uint64_t period_ms = cmdline_get_u64("period_ms=", 50);
    uint64_t count = cmdline_get_u64("count=", 0);
    uint64_t ged_pin = cmdline_get_u64("ged_pin=", 5);
    uint64_t port = cmdline_get_u64("ged_port=", 0x602);
    if (period_ms == 0 || period_ms > MAX_PERIOD_MS || ged_pin >= IOAPIC_PINS || port > 0xffff) {
        printf("ticker: bad arguments\n");
        poweroff();
    }
    ged_port = (uint16_t)port;

    outb(PIC_MASTER_DATA, 0xff);
    outb(PIC_SLAVE_DATA, 0xff);
    irq_set_handler(LAPIC_TIMER_VECTOR, timer_interrupt);
    irq_set_handler(GED_VECTOR, ged_interrupt);
    lapic_write(LAPIC_SVR, LAPIC_SVR_ENABLE | LAPIC_SPURIOUS_VECTOR);
    lapic_write(LAPIC_TPR, 0);
    /* Fixed delivery, physical destination (this CPU), edge-triggered, active high, unmasked. */
    ioapic_write(IOAPIC_REDTBL(ged_pin) + 1, lapic_id() << 24);
    ioapic_write(IOAPIC_REDTBL(ged_pin), GED_VECTOR);

    printf("ticker: period %lu ms\n", period_ms);
    lapic_write(LAPIC_TIMER_DIVIDE, LAPIC_TIMER_DIVIDE_BY_16);
    lapic_write(LAPIC_LVT_TIMER, LAPIC_LVT_TIMER_PERIODIC | LAPIC_TIMER_VECTOR);
    lapic_write(LAPIC_TIMER_INITIAL, (uint32_t)(period_ms * LAPIC_COUNTS_PER_MS));

    uint64_t printed = 0;
    unsigned events_seen = 0;
    for (;;) {
        irq_enable_and_halt();
        unsigned events = ged_events;
        if (events != events_seen) {
            events_seen = events;
            if (events & GED_POWER_BUTTON) {
                lapic_write(LAPIC_TIMER_INITIAL, 0);
                printf("ticker: power button\n");
                poweroff();
            }
            printf("ticker: ged event 0x%x\n", events);
        }
        while (printed < ticks) {
            printf("tick %lu\n", ++printed);
            if (count != 0 && printed >= count) {
                lapic_write(LAPIC_TIMER_INITIAL, 0);
                printf("ticker: done %lu\n", printed);
                poweroff();
            }
        }
    }
}
