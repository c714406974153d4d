/* hello: one line on the serial port, then power off. Stays at CPL0: it is a few hundred instructions. */
#include "runtime.h"

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    printf("Hello, world! from aovisor guest\n");
    poweroff();
}
