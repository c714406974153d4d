/*
 * pio: a port-I/O exit benchmark at CPL3. Command line:
 *   count=N   accesses (default 100000)
 *   port=P    I/O port (default 0x80, the POST port)
 *   mode=out  write (default) or mode=in  read; mode=string: one rep outsb of a line to COM1, one
 *             rep insb of 8 bytes from the POST port and one rep insw of 4 words from unclaimed port 0x5f0,
 *             each printed (string I/O: one exit carries several accesses)
 *   size=S    access width in bytes: 1 (default), 2 or 4
 * Writes send the low bits of the iteration index (0, 1, 2, ...); reads add up what they get.
 */
#include "runtime.h"

static void string_io(void)
{
    static const char line[] = "pio: rep outsb reached the uart\n";
    const char *src = line;
    uint64_t n = sizeof(line) - 1;
    __asm__ volatile("rep outsb" : "+S"(src), "+c"(n) : "d"((uint16_t)0x3f8) : "memory");
    outb(0x80, 0xa5);
    uint8_t bytes[8] = {0};
    uint8_t *dst = bytes;
    n = sizeof(bytes);
    __asm__ volatile("rep insb" : "+D"(dst), "+c"(n) : "d"((uint16_t)0x80) : "memory");
    printf("pio: rep insb from 0x80:");
    for (unsigned i = 0; i < sizeof(bytes); i++)
        printf(" %x", bytes[i]);
    uint16_t words[4] = {0};
    uint16_t *wdst = words;
    n = 4;
    __asm__ volatile("rep insw" : "+D"(wdst), "+c"(n) : "d"((uint16_t)0x5f0) : "memory");
    printf("\npio: rep insw from 0x5f0: %x %x %x %x\n", words[0], words[1], words[2], words[3]);
    poweroff();
}

static void user_main(void)
{
    if (cmdline_value_is("mode=", "string"))
        string_io();
    uint64_t count = cmdline_get_u64("count=", 100000);
    uint64_t port = cmdline_get_u64("port=", 0x80);
    uint64_t size = cmdline_get_u64("size=", 1);
    bool in = cmdline_value_is("mode=", "in");
    if (port > 0xffff || (size != 1 && size != 2 && size != 4)) {
        printf("pio: bad arguments: port=0x%lx size=%lu\n", port, size);
        poweroff();
    }
    uint16_t p = (uint16_t)port;
    printf("pio: %s %lu x %lu bytes at port 0x%x\n", in ? "in" : "out", count, size, p);
    if (in) {
        uint64_t sum = 0;
        for (uint64_t i = 0; i < count; i++)
            sum += size == 1 ? inb(p) : size == 2 ? inw(p) : inl(p);
        printf("pio in sum 0x%016lx\n", sum);
    } else if (size == 1) {
        for (uint64_t i = 0; i < count; i++)
            outb(p, (uint8_t)i);
    } else if (size == 2) {
        for (uint64_t i = 0; i < count; i++)
            outw(p, (uint16_t)i);
    } else {
        for (uint64_t i = 0; i < count; i++)
            outl(p, (uint32_t)i);
    }
    printf("pio done %lu\n", count);
    poweroff();
}

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    enter_user(user_main, user_stack_top);
}
