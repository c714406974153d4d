/*
 * pvhinfo: report the PVH start_info the VMM built, for checking a PVH loader. Runs at CPL3. Output:
 *   pvhinfo: start_info version V
 *   cmdline: <the command line>
 *   memmap: N entries, M MiB usable          (sum of type-1 entries)
 *   modules: K
 *   initrd: SIZE bytes, sum 0xXXXXXXXX        (module 0, only when K >= 1)
 *   rsdp: 0xADDR
 */
#include "runtime.h"

#define MAPPED_LIMIT 0x100000000ull
#define MEMMAP_MAX_ENTRIES 128

static bool mapped(uint64_t addr, uint64_t len) { return addr < MAPPED_LIMIT && len <= MAPPED_LIMIT - addr; }

static void report_memmap(const struct hvm_start_info *si)
{
    if (si->version < 1) {
        printf("memmap: none (start_info version 0)\n");
        return;
    }
    uint32_t n = si->memmap_entries;
    uint32_t counted = n < MEMMAP_MAX_ENTRIES ? n : MEMMAP_MAX_ENTRIES;
    if (counted != 0 && !mapped(si->memmap_paddr, counted * sizeof(struct hvm_memmap_table_entry))) {
        printf("memmap: %u entries at 0x%lx, outside the mapped 4 GiB\n", n, si->memmap_paddr);
        return;
    }
    const struct hvm_memmap_table_entry *map = (const struct hvm_memmap_table_entry *)si->memmap_paddr;
    uint64_t usable = 0;
    for (uint32_t i = 0; i < counted; i++)
        if (map[i].type == 1)
            usable += map[i].size;
    printf("memmap: %u entries, %lu MiB usable\n", n, usable >> 20);
}

static void report_modules(const struct hvm_start_info *si)
{
    printf("modules: %u\n", si->nr_modules);
    if (si->nr_modules == 0)
        return;
    if (!mapped(si->modlist_paddr, sizeof(struct hvm_modlist_entry))) {
        printf("initrd: module list at 0x%lx, outside the mapped 4 GiB\n", si->modlist_paddr);
        return;
    }
    const struct hvm_modlist_entry *mod = (const struct hvm_modlist_entry *)si->modlist_paddr;
    if (!mapped(mod->paddr, mod->size)) {
        printf("initrd: %lu bytes at 0x%lx, outside the mapped 4 GiB\n", mod->size, mod->paddr);
        return;
    }
    const uint8_t *bytes = (const uint8_t *)mod->paddr;
    uint32_t sum = 0;
    for (uint64_t i = 0; i < mod->size; i++)
        sum += bytes[i];
    printf("initrd: %lu bytes, sum 0x%08x\n", mod->size, sum);
}

static void user_main(void)
{
    const struct hvm_start_info *si = boot_start_info;
    printf("pvhinfo: start_info version %u\n", si->version);
    printf("cmdline: %s\n", cmdline_get());
    report_memmap(si);
    report_modules(si);
    printf("rsdp: 0x%lx\n", si->rsdp_paddr);
    poweroff();
}

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    enter_user(user_main, user_stack_top);
}
