/*
 * The bzImage guest's C part: checks the boot_params (zero page) its loader built and reports it.
 * Output (one line each, the initrd line only when the loader passed one):
 *   bzimage: boot_params ok
 *   cmdline: <the command line>
 *   e820: N entries, M MiB usable
 *   initrd: SIZE bytes, sum 0xXXXXXXXX
 *   loader: 0xXX
 * The checks run at CPL3 (summing an initrd is many instructions); boot_params is only read.
 */
#include "boot_params.h"
#include "runtime.h"

#define MAPPED_LIMIT 0x100000000ull
#define CMDLINE_PRINT_LIMIT 4096

static const struct boot_params *boot_params;

static bool mapped(uint64_t addr, uint64_t len) { return addr < MAPPED_LIMIT && len <= MAPPED_LIMIT - addr; }

static void report_cmdline(void)
{
    uint64_t addr = boot_params->hdr.cmd_line_ptr | (uint64_t)boot_params->ext_cmd_line_ptr << 32;
    if (addr == 0) {
        printf("cmdline: \n");
        return;
    }
    if (!mapped(addr, 1)) {
        printf("cmdline: <at 0x%lx, outside the mapped 4 GiB>\n", addr);
        return;
    }
    const char *s = (const char *)addr;
    size_t max = MAPPED_LIMIT - addr < CMDLINE_PRINT_LIMIT ? MAPPED_LIMIT - addr : CMDLINE_PRINT_LIMIT;
    cmdline_set(s);
    printf("cmdline: ");
    serial_write(s, strnlen(s, max));
    printf("\n");
}

static void report_e820(void)
{
    unsigned n = boot_params->e820_entries;
    unsigned counted = n < E820_MAX_ENTRIES ? n : E820_MAX_ENTRIES;
    uint64_t usable = 0;
    for (unsigned i = 0; i < counted; i++)
        if (boot_params->e820_table[i].type == E820_TYPE_RAM)
            usable += boot_params->e820_table[i].size;
    printf("e820: %u entries, %lu MiB usable\n", n, usable >> 20);
}

static void report_initrd(void)
{
    uint64_t addr = boot_params->hdr.ramdisk_image | (uint64_t)boot_params->ext_ramdisk_image << 32;
    uint64_t size = boot_params->hdr.ramdisk_size | (uint64_t)boot_params->ext_ramdisk_size << 32;
    if (addr == 0 || size == 0)
        return;
    if (!mapped(addr, size)) {
        printf("initrd: %lu bytes at 0x%lx, outside the mapped 4 GiB\n", size, addr);
        return;
    }
    const uint8_t *bytes = (const uint8_t *)addr;
    uint32_t sum = 0;
    for (uint64_t i = 0; i < size; i++)
        sum += bytes[i];
    printf("initrd: %lu bytes, sum 0x%08x\n", size, sum);
}

static void user_main(void)
{
    if (boot_params->hdr.header != SETUP_HEADER_MAGIC) {
        printf("bzimage: FAILED: boot_params.hdr.header is 0x%08x, not \"HdrS\"\n", boot_params->hdr.header);
        poweroff();
    }
    printf("bzimage: boot_params ok\n");
    report_cmdline();
    report_e820();
    report_initrd();
    printf("loader: 0x%02x\n", boot_params->hdr.type_of_loader);
    poweroff();
}

/* Called by the runtime's start64 (via head.S) with the boot_params address. */
NORETURN void c_entry(uint64_t boot_params_addr);
void c_entry(uint64_t boot_params_addr)
{
    serial_init();
    if (boot_params_addr == 0 || !mapped(boot_params_addr, sizeof(struct boot_params))) {
        printf("*** bzimage: boot_params at 0x%lx is not in the mapped 4 GiB\n", boot_params_addr);
        poweroff();
    }
    boot_params = (const struct boot_params *)boot_params_addr;
    enter_user(user_main, user_stack_top);
}

/* The runtime declares main() for PVH guests; this image has no PVH entry and never calls it. */
struct hvm_start_info *boot_start_info;
