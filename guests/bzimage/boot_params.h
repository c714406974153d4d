/*
 * The parts of Linux's struct boot_params ("zero page") and struct setup_header the bzImage guest reads,
 * at the offsets given in Documentation/arch/x86/boot.rst and Documentation/arch/x86/zero-page.rst.
 */
#ifndef GUEST_BOOT_PARAMS_H
#define GUEST_BOOT_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#define SETUP_HEADER_MAGIC 0x53726448 /* "HdrS" */
#define E820_MAX_ENTRIES 128
#define E820_TYPE_RAM 1

struct __attribute__((packed)) setup_header {
    uint8_t setup_sects;         /* 0x1f1 */
    uint16_t root_flags;
    uint32_t syssize;
    uint16_t ram_size;
    uint16_t vid_mode;
    uint16_t root_dev;
    uint16_t boot_flag;          /* 0x1fe: 0xAA55 */
    uint16_t jump;               /* 0x200 */
    uint32_t header;             /* 0x202: "HdrS" */
    uint16_t version;            /* 0x206 */
    uint32_t realmode_swtch;
    uint16_t start_sys_seg;
    uint16_t kernel_version;
    uint8_t type_of_loader;      /* 0x210 */
    uint8_t loadflags;
    uint16_t setup_move_size;
    uint32_t code32_start;       /* 0x214 */
    uint32_t ramdisk_image;      /* 0x218 */
    uint32_t ramdisk_size;       /* 0x21c */
    uint32_t bootsect_kludge;
    uint16_t heap_end_ptr;
    uint8_t ext_loader_ver;
    uint8_t ext_loader_type;
    uint32_t cmd_line_ptr;       /* 0x228 */
    uint32_t initrd_addr_max;
    uint32_t kernel_alignment;
    uint8_t relocatable_kernel;
    uint8_t min_alignment;
    uint16_t xloadflags;         /* 0x236 */
    uint32_t cmdline_size;       /* 0x238 */
    uint32_t hardware_subarch;
    uint64_t hardware_subarch_data;
    uint32_t payload_offset;
    uint32_t payload_length;
    uint64_t setup_data;
    uint64_t pref_address;       /* 0x258 */
    uint32_t init_size;          /* 0x260 */
    uint32_t handover_offset;
    uint32_t kernel_info_offset; /* 0x268 */
};

struct __attribute__((packed)) e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
};

struct __attribute__((packed)) boot_params {
    uint8_t _unused_000[0x0c0];
    uint32_t ext_ramdisk_image;  /* 0x0c0: bits 63:32 of hdr.ramdisk_image */
    uint32_t ext_ramdisk_size;   /* 0x0c4 */
    uint32_t ext_cmd_line_ptr;   /* 0x0c8 */
    uint8_t _unused_0cc[0x1e8 - 0x0cc];
    uint8_t e820_entries;        /* 0x1e8 */
    uint8_t _unused_1e9[0x1f1 - 0x1e9];
    struct setup_header hdr;     /* 0x1f1 */
    uint8_t _unused_26c[0x2d0 - 0x26c];
    struct e820_entry e820_table[E820_MAX_ENTRIES]; /* 0x2d0 */
    uint8_t _unused_cd0[0x1000 - 0xcd0];
};

_Static_assert(offsetof(struct boot_params, hdr) == 0x1f1, "boot_params.hdr offset");
_Static_assert(offsetof(struct boot_params, hdr.header) == 0x202, "setup_header.header offset");
_Static_assert(offsetof(struct boot_params, hdr.type_of_loader) == 0x210, "type_of_loader offset");
_Static_assert(offsetof(struct boot_params, hdr.cmd_line_ptr) == 0x228, "cmd_line_ptr offset");
_Static_assert(offsetof(struct boot_params, hdr.xloadflags) == 0x236, "xloadflags offset");
_Static_assert(offsetof(struct boot_params, hdr.pref_address) == 0x258, "pref_address offset");
_Static_assert(offsetof(struct boot_params, hdr.kernel_info_offset) == 0x268, "kernel_info_offset offset");
_Static_assert(offsetof(struct boot_params, e820_table) == 0x2d0, "e820_table offset");
_Static_assert(sizeof(struct boot_params) == 4096, "boot_params size");

#endif
