/*
 * echo: reads the serial port at CPL3 and echoes each byte back upper-cased, so a test can type into the
 * VMM's terminal and see the guest answer. Ctrl-C (0x03) is echoed as "<ctrl-c>" (it must reach the guest,
 * not stop the VMM); 'q' ends the program with "echo: bye" and a power-off.
 */
#include "runtime.h"
#include "x86.h"

#define COM1 0x3f8
#define LSR_DATA_READY 0x01

static char read_byte(void)
{
    while (!(inb(COM1 + 5) & LSR_DATA_READY))
        ;
    return (char)inb(COM1);
}

static void user_main(void)
{
    printf("echo: ready\n");
    for (;;) {
        char c = read_byte();
        if (c == 'q') {
            printf("\necho: bye\n");
            poweroff();
        } else if (c == 0x03) {
            printf("<ctrl-c>");
        } else {
            printf("%c", (c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c);
        }
    }
}

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    enter_user(user_main, user_stack_top);
}
