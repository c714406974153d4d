/* TSC calibration against the PIT; see runtime.h. */
#include "runtime.h"

#define PIT_HZ 1193182u
#define CALIBRATION_MS 50u
#define PIT_GATE_PORT 0x61 /* bit 0: channel 2 gate, bit 1: speaker, bit 5: channel 2 output */
#define PIT_COMMAND 0x43
#define PIT_CHANNEL2 0x42

uint64_t tsc_per_ms(void)
{
    const uint16_t count = PIT_HZ * CALIBRATION_MS / 1000u;
    outb(PIT_GATE_PORT, (inb(PIT_GATE_PORT) & ~0x02) | 0x01); /* gate on, speaker off */
    outb(PIT_COMMAND, 0xB0);                                 /* channel 2, lobyte/hibyte, mode 0 */
    outb(PIT_CHANNEL2, count & 0xFF);
    outb(PIT_CHANNEL2, count >> 8);
    uint64_t start = rdtsc();
    for (uint64_t spins = 0; !(inb(PIT_GATE_PORT) & 0x20); spins++) /* the output rises at terminal count */
        if (spins > 100000000ull)
            return 0;
    return (rdtsc() - start) / CALIBRATION_MS;
}
