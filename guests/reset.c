/* reset: prints one line, then resets the machine the way `method=` says. The VMM is expected to reboot
 * it, so the line appears once per boot; the test counts boots and stops the VMM itself.
 *   method=i8042   i8042 command 0xFE (pulse the CPU reset line)
 *   method=cf9     reset control register 0xCF9 <- 0x06 (SYS_RST | RST_CPU)
 *   method=acpi    the FADT's RESET_REG: port 0x600 <- 1
 *   method=triple  a triple fault (load an empty IDT, then raise #UD; PVM cannot emulate int3 at CPL0)
 */
#include "runtime.h"
#include "x86.h"

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    const char *method = "i8042";
    if (cmdline_value_is("method=", "cf9"))
        method = "cf9";
    else if (cmdline_value_is("method=", "acpi"))
        method = "acpi";
    else if (cmdline_value_is("method=", "triple"))
        method = "triple";
    printf("reset: boot, method %s\n", method);
    if (method[0] == 'i') {
        outb(0x64, 0xFE);
    } else if (method[0] == 'c') {
        outb(0xCF9, 0x06);
    } else if (method[0] == 'a') {
        outb(0x600, 0x01);
    } else {
        struct { uint16_t limit; uint64_t base; } __attribute__((packed)) empty = { 0, 0 };
        __asm__ volatile("lidt %0; ud2" : : "m"(empty));
    }
    printf("reset: FAILED: still running after the reset request\n");
    poweroff();
}
