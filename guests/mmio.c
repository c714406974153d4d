/*
 * mmio: an MMIO exit benchmark at CPL3 (the runtime maps all of 0-4 GiB user-accessible, the top GiB
 * uncached). Command line:
 *   count=N     accesses (default 100000)
 *   addr=A      guest-physical address, below 4 GiB and aligned to the size (default 0xd0000000, in the
 *               32-bit MMIO hole where no RAM or device is)
 *   mode=write  (default) or mode=read
 *   size=S      access width in bytes: 1, 2, 4 (default) or 8
 * Writes store the low bits of the iteration index (0, 1, 2, ...); reads add up what they get.
 */
#include "runtime.h"

static void user_main(void)
{
    uint64_t count = cmdline_get_u64("count=", 100000);
    uint64_t addr = cmdline_get_u64("addr=", 0xd0000000);
    uint64_t size = cmdline_get_u64("size=", 4);
    bool read = cmdline_value_is("mode=", "read");
    bool size_ok = size == 1 || size == 2 || size == 4 || size == 8;
    if (!size_ok || addr < 0x1000 || addr > 0x100000000ull - size || addr % size != 0) {
        printf("mmio: bad arguments: addr=0x%lx size=%lu\n", addr, size);
        poweroff();
    }
    printf("mmio: %s %lu x %lu bytes at 0x%lx\n", read ? "read" : "write", count, size, addr);
    if (read) {
        uint64_t sum = 0;
        for (uint64_t i = 0; i < count; i++) {
            switch (size) {
            case 1: sum += mmio_read8(addr); break;
            case 2: sum += mmio_read16(addr); break;
            case 4: sum += mmio_read32(addr); break;
            default: sum += mmio_read64(addr); break;
            }
        }
        printf("mmio read sum 0x%016lx\n", sum);
    } else {
        for (uint64_t i = 0; i < count; i++) {
            switch (size) {
            case 1: mmio_write8(addr, (uint8_t)i); break;
            case 2: mmio_write16(addr, (uint16_t)i); break;
            case 4: mmio_write32(addr, (uint32_t)i); break;
            default: mmio_write64(addr, i); break;
            }
        }
    }
    printf("mmio done %lu\n", count);
    poweroff();
}

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    enter_user(user_main, user_stack_top);
}
