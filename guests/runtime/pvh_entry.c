/* c_entry for PVH guests: boot.S's start64 calls it with the hvm_start_info address from EBX. */
#include "runtime.h"

struct hvm_start_info *boot_start_info;

/* The runtime identity-maps the first 4 GiB; anything the guest dereferences must lie below that. */
#define MAPPED_LIMIT 0x100000000ull

NORETURN void c_entry(uint64_t start_info_addr);
void c_entry(uint64_t start_info_addr)
{
    serial_init();
    struct hvm_start_info *si = (struct hvm_start_info *)start_info_addr;
    if (start_info_addr == 0 || start_info_addr >= MAPPED_LIMIT - sizeof(*si) || si->magic != HVM_START_MAGIC) {
        printf("*** pvh: no hvm_start_info at 0x%lx (bad magic)\n", start_info_addr);
        poweroff();
    }
    boot_start_info = si;
    if (si->cmdline_paddr != 0 && si->cmdline_paddr < MAPPED_LIMIT)
        cmdline_set((const char *)si->cmdline_paddr);
    main(si);
    poweroff();
}
