/*
 * The PVH boot information (layout from Xen's include/public/arch-x86/hvm/start_info.h, version 1).
 * All addresses are guest-physical.
 */
#ifndef GUEST_START_INFO_H
#define GUEST_START_INFO_H

#include <stdint.h>

#define HVM_START_MAGIC 0x336ec578

struct hvm_start_info {
    uint32_t magic;          /* HVM_START_MAGIC */
    uint32_t version;        /* 0: fields up to cmdline_paddr/rsdp_paddr; 1: adds the memory map */
    uint32_t flags;
    uint32_t nr_modules;     /* entries at modlist_paddr */
    uint64_t modlist_paddr;  /* struct hvm_modlist_entry[nr_modules] */
    uint64_t cmdline_paddr;  /* NUL-terminated command line, or 0 */
    uint64_t rsdp_paddr;     /* ACPI RSDP, or 0 (then scan the BIOS area) */
    uint64_t memmap_paddr;   /* struct hvm_memmap_table_entry[memmap_entries] (version >= 1) */
    uint32_t memmap_entries;
    uint32_t reserved;
};

struct hvm_modlist_entry {
    uint64_t paddr;
    uint64_t size;
    uint64_t cmdline_paddr;
    uint64_t reserved;
};

struct hvm_memmap_table_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type; /* E820 types: 1 = RAM */
    uint32_t reserved;
};

_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info layout");
_Static_assert(sizeof(struct hvm_modlist_entry) == 32, "hvm_modlist_entry layout");
_Static_assert(sizeof(struct hvm_memmap_table_entry) == 24, "hvm_memmap_table_entry layout");

#endif
