/* Power-off through the ACPI hardware-reduced sleep control register (port 0x600). */
#include "runtime.h"

void poweroff(void)
{
    outb(PORT_SLEEP_CONTROL, SLEEP_CONTROL_POWEROFF);
    /* Only reached if the VMM ignored the write. hlt is privileged, so CPL3 spins instead. */
    if (current_cpl() == 0)
        for (;;)
            __asm__ volatile("cli; hlt");
    for (;;)
        cpu_relax();
}

/* boot.S's user_thunk calls this when a CPL3 entry function returns. */
NORETURN void user_returned(void);
void user_returned(void)
{
    printf("*** user function returned\n");
    poweroff();
}
