/*
 * timer: interrupt delivery from the two timer paths a VMM must get right, at CPL0 (hlt is privileged).
 *
 *  1. LAPIC timer: periodic, divide by 16, vector 0x40 (SDM vol. 3 §12.5.4).
 *  1b. LAPIC timer in TSC-deadline mode (§12.5.4.1), if CPUID.1:ECX[24] offers it (a VMM must: Linux
 *     then skips calibrating the LAPIC timer): each tick is one IA32_TSC_DEADLINE write, vector 0x43, and
 *     an interrupt that arrives before its deadline is a failure.
 *  2. PIT channel 0 (rate generator, 100 Hz) through the IOAPIC. The PIT drives ISA IRQ0; which IOAPIC
 *     pin that reaches depends on the machine: QEMU's MADT has an interrupt source override IRQ0 -> GSI 2
 *     and routes the in-kernel PIT to pin 2, while KVM's default routing (no KVM_SET_GSI_ROUTING) sends
 *     it to pin 0. Both pins are programmed (pin 0 -> vector 0x41, pin 2 -> vector 0x42) and the guest
 *     reports which one fired. The 8259 PICs are masked so the PIT can only arrive through the IOAPIC.
 *
 *  3. Missed PIT ticks: with interrupts off for MISSED_PERIODS PIT periods (timed by polling the PIT's
 *     own counter), then on for half a period, the guest counts the PIT interrupts that arrive. A PIT that
 *     drops missed ticks delivers one (latched in the LAPIC while interrupts were off); one that reinjects
 *     them (KVM's default, QEMU's lost_tick_policy=delay) delivers the backlog, one per EOI.
 *
 * The LAPIC timer keeps running during the PIT phase as a watchdog: no PIT interrupt for ~1 s of LAPIC
 * ticks is reported as a failure instead of hanging. Command line: ticks=N per phase (default 3),
 * lapic_count=C initial count (default 625000: 10 ms with KVM's 1 GHz APIC bus clock).
 *
 * This guest runs at CPL0 throughout, so its output is kept short: under PVM every CPL0 instruction is
 * emulated, and printing is most of what it executes. Output:
 *   timer: lapic phase
 *   lapic tick 1 .. lapic tick N
 *   timer: tsc-deadline phase              (or "timer: no tsc-deadline mode in cpuid")
 *   tsc-deadline tick 1 .. tsc-deadline tick N
 *   timer: pit phase
 *   pit tick 1 .. pit tick N
 *   timer: pit arrived on ioapic pin 2      (or "pin 0", or "pin 0 and 2")
 *   timer: 1 pit ticks after 5 missed       (the count that arrived in the half period)
 *   timer ok
 */
#include "lapic.h"
#include "runtime.h"

#define LAPIC_TIMER_VECTOR 0x40
#define PIT_PIN0_VECTOR 0x41
#define PIT_PIN2_VECTOR 0x42
#define DEADLINE_VECTOR 0x43
#define DEADLINE_DELTA_TSC 2000000ull          /* about a millisecond at any TSC rate here */
#define DEADLINE_TIMEOUT_TSC 20000000000ull    /* seconds: the interrupt never came */

#define IOAPIC_REGSEL 0x00
#define IOAPIC_WINDOW 0x10
#define IOAPIC_REDTBL(pin) (0x10 + 2 * (pin))
#define IOAPIC_REDIR_MASKED 0x10000

#define PIT_CHANNEL0 0x40
#define PIT_COMMAND 0x43
#define PIT_CH0_LOHI_MODE2 0x34 /* channel 0, lobyte/hibyte, mode 2 (rate generator), binary */
#define PIT_CH0_LOHI_MODE0 0x30 /* mode 0 (one-shot): stops the periodic interrupts */
#define PIT_LATCH_CH0 0x00      /* counter latch command for channel 0 */
#define PIT_RELOAD_100HZ 11932  /* 1193182 Hz / 100 */
#define PIC_MASTER_DATA 0x21
#define PIC_SLAVE_DATA 0xA1

#define WATCHDOG_LAPIC_TICKS 100
#define MAX_TICKS 10000
#define MISSED_PERIODS 5

static volatile unsigned lapic_ticks;
static volatile unsigned pit_ticks;
static volatile unsigned pit_pins_seen; /* bit n: IOAPIC pin n delivered the PIT */
static volatile unsigned deadline_ticks;
static volatile uint64_t deadline_tick_tsc; /* the TSC when the last deadline interrupt was taken */

static void lapic_timer_interrupt(unsigned vector)
{
    (void)vector;
    lapic_ticks++;
    lapic_eoi();
}

static void deadline_interrupt(unsigned vector)
{
    (void)vector;
    deadline_tick_tsc = rdtsc();
    deadline_ticks++;
    lapic_eoi();
}

/* Phase 1b: arm the TSC deadline `ticks` times, each one DEADLINE_DELTA_TSC ahead, and check that each
 * interrupt comes, and not before its deadline. Leaves the LAPIC timer disarmed. */
static bool tsc_deadline_phase(unsigned ticks)
{
    lapic_write(LAPIC_TIMER_INITIAL, 0);
    lapic_write(LAPIC_LVT_TIMER, LAPIC_LVT_TIMER_TSC_DEADLINE | DEADLINE_VECTOR);
    for (unsigned tick = 1; tick <= ticks; tick++) {
        uint64_t armed = rdtsc(), deadline = armed + DEADLINE_DELTA_TSC;
        wrmsr(MSR_IA32_TSC_DEADLINE, deadline);
        __asm__ volatile("sti" ::: "memory");
        while (deadline_ticks < tick && rdtsc() - armed < DEADLINE_TIMEOUT_TSC)
            cpu_relax();
        irq_disable();
        if (deadline_ticks != tick) {
            printf("timer: FAILED: tsc-deadline tick %u never came (%u ticks)\n", tick, deadline_ticks);
            return false;
        }
        if (deadline_tick_tsc < deadline) {
            printf("timer: FAILED: tsc-deadline tick %u came %lu cycles early\n", tick, deadline - deadline_tick_tsc);
            return false;
        }
        printf("tsc-deadline tick %u\n", tick);
    }
    wrmsr(MSR_IA32_TSC_DEADLINE, 0);
    return true;
}

static void pit_interrupt(unsigned vector)
{
    pit_ticks++;
    pit_pins_seen |= vector == PIT_PIN0_VECTOR ? 1u << 0 : 1u << 2;
    lapic_eoi(); /* edge-triggered: no IOAPIC EOI */
}

static void ioapic_write(uint32_t reg, uint32_t value)
{
    mmio_write32(IOAPIC_BASE + IOAPIC_REGSEL, reg);
    mmio_write32(IOAPIC_BASE + IOAPIC_WINDOW, value);
}

/* Fixed delivery, physical destination, edge-triggered, active high, unmasked (82093AA §3.2.4). */
static void ioapic_route(unsigned pin, unsigned vector, unsigned dest_apic_id)
{
    ioapic_write(IOAPIC_REDTBL(pin) + 1, dest_apic_id << 24);
    ioapic_write(IOAPIC_REDTBL(pin), vector);
}

/* Halt until `*counter` reaches `target`, printing "<label> tick K" for each tick seen. With a
 * watchdog, give up after that many LAPIC ticks. */
static bool wait_ticks(const char *label, volatile unsigned *counter, unsigned target, unsigned watchdog)
{
    unsigned printed = 0;
    unsigned lapic_start = lapic_ticks;
    while (printed < target) {
        if (watchdog != 0 && lapic_ticks - lapic_start > watchdog)
            return false;
        irq_enable_and_halt();
        while (printed < *counter && printed < target)
            printf("%s tick %u\n", label, ++printed);
    }
    return true;
}

/* Channel 0's current count: latch it, then read the low and the high byte (8254 data sheet, "Counter
 * Latch Command"). In mode 2 it counts down to 1 and reloads, so a count above the last one is a new
 * period. */
static unsigned pit_count(void)
{
    outb(PIT_COMMAND, PIT_LATCH_CH0);
    unsigned low = inb(PIT_CHANNEL0);
    return low | (unsigned)inb(PIT_CHANNEL0) << 8;
}

static void pit_wait_reload(void)
{
    for (unsigned last = pit_count(), now; (now = pit_count()) <= last; last = now)
        cpu_relax();
}

/* Phase 3: the PIT interrupts that arrive in the half period after MISSED_PERIODS with interrupts off.
 * Called with interrupts off; the window starts just after a reload, so no new tick falls in it. */
static unsigned pit_ticks_after_missed(void)
{
    for (unsigned period = 0; period < MISSED_PERIODS; period++)
        pit_wait_reload();
    unsigned before = pit_ticks;
    __asm__ volatile("sti" ::: "memory");
    for (unsigned last = pit_count(), now; (now = pit_count()) > PIT_RELOAD_100HZ / 2 && now <= last; last = now)
        cpu_relax();
    irq_disable();
    return pit_ticks - before;
}

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    unsigned ticks = (unsigned)cmdline_get_u64("ticks=", 3);
    uint64_t lapic_count = cmdline_get_u64("lapic_count=", 625000);
    if (ticks == 0 || ticks > MAX_TICKS || lapic_count == 0 || lapic_count > 0xffffffff) {
        printf("timer: bad arguments: ticks=%u lapic_count=%lu\n", ticks, lapic_count);
        poweroff();
    }

    outb(PIC_MASTER_DATA, 0xff);
    outb(PIC_SLAVE_DATA, 0xff);
    irq_set_handler(LAPIC_TIMER_VECTOR, lapic_timer_interrupt);
    irq_set_handler(PIT_PIN0_VECTOR, pit_interrupt);
    irq_set_handler(PIT_PIN2_VECTOR, pit_interrupt);
    irq_set_handler(DEADLINE_VECTOR, deadline_interrupt);

    printf("timer: lapic phase\n");
    lapic_write(LAPIC_SVR, LAPIC_SVR_ENABLE | LAPIC_SPURIOUS_VECTOR);
    lapic_write(LAPIC_TPR, 0);
    lapic_write(LAPIC_TIMER_DIVIDE, LAPIC_TIMER_DIVIDE_BY_16);
    lapic_write(LAPIC_LVT_TIMER, LAPIC_LVT_TIMER_PERIODIC | LAPIC_TIMER_VECTOR);
    lapic_write(LAPIC_TIMER_INITIAL, (uint32_t)lapic_count);
    wait_ticks("lapic", &lapic_ticks, ticks, 0);

    if (cpuid(1, 0).ecx & CPUID_1_ECX_TSC_DEADLINE) {
        printf("timer: tsc-deadline phase\n");
        if (!tsc_deadline_phase(ticks))
            poweroff();
        /* Back to periodic mode: the LAPIC timer is the PIT phase's watchdog. */
        lapic_write(LAPIC_LVT_TIMER, LAPIC_LVT_TIMER_PERIODIC | LAPIC_TIMER_VECTOR);
        lapic_write(LAPIC_TIMER_INITIAL, (uint32_t)lapic_count);
    } else {
        printf("timer: no tsc-deadline mode in cpuid\n");
    }

    unsigned bsp = lapic_id();
    printf("timer: pit phase\n");
    ioapic_route(0, PIT_PIN0_VECTOR, bsp);
    ioapic_route(2, PIT_PIN2_VECTOR, bsp);
    outb(PIT_COMMAND, PIT_CH0_LOHI_MODE2);
    outb(PIT_CHANNEL0, PIT_RELOAD_100HZ & 0xff);
    outb(PIT_CHANNEL0, PIT_RELOAD_100HZ >> 8);
    bool pit_ok = wait_ticks("pit", &pit_ticks, ticks, WATCHDOG_LAPIC_TICKS);
    unsigned after_missed = pit_ok ? pit_ticks_after_missed() : 0;

    ioapic_write(IOAPIC_REDTBL(0), IOAPIC_REDIR_MASKED);
    ioapic_write(IOAPIC_REDTBL(2), IOAPIC_REDIR_MASKED);
    outb(PIT_COMMAND, PIT_CH0_LOHI_MODE0);
    lapic_write(LAPIC_TIMER_INITIAL, 0);
    if (!pit_ok) {
        printf("timer: FAILED: %u pit ticks in %u lapic ticks\n", pit_ticks, WATCHDOG_LAPIC_TICKS);
        poweroff();
    }
    unsigned pins = pit_pins_seen;
    printf("timer: pit arrived on ioapic pin %s\n", pins == 1 ? "0" : pins == 4 ? "2" : "0 and 2");
    printf("timer: %u pit ticks after %u missed\n", after_missed, MISSED_PERIODS);
    printf("timer ok\n");
    poweroff();
}
