"""Linux x86 boot protocol structures: ``struct setup_header`` and ``struct boot_params`` (the "zero page").

Layouts follow ``arch/x86/include/uapi/asm/bootparam.h``; field meanings and offsets are documented in
Documentation/arch/x86/boot.rst (setup header, offsets relative to the start of the bzImage file and of
boot_params alike) and Documentation/arch/x86/zero-page.rst (the rest of boot_params).  Only the fields a
VMM fills or reads are named; the others are padding that stays zero.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

from aovisor.arch.x86_64.e820 import E820Entry

ZERO_PAGE_SIZE = 4096
SETUP_HEADER_OFFSET = 0x1F1  # in the bzImage file and in boot_params
SETUP_HEADER_LIMIT = 0x290  # boot_params.edd_mbr_sig_buffer: the setup header can never grow past this
E820_MAX_ENTRIES_ZEROPAGE = 128

BOOT_FLAG_MAGIC = 0xAA55  # setup_header.boot_flag
HDRS_MAGIC = 0x53726448  # setup_header.header: "HdrS"

# setup_header.loadflags (boot.rst "loadflags")
LOADED_HIGH = 0x01  # protected-mode code is loaded at 0x100000 (a bzImage, not a zImage)
KASLR_FLAG = 0x02  # set by the kernel itself
QUIET_FLAG = 0x20
KEEP_SEGMENTS = 0x40  # obsolete
CAN_USE_HEAP = 0x80  # heap_end_ptr is valid (16-bit entry only)

# setup_header.xloadflags (protocol 2.12+)
XLF_KERNEL_64 = 0x01  # the 64-bit entry point exists at load address + 0x200
XLF_CAN_BE_LOADED_ABOVE_4G = 0x02

LOADER_TYPE_UNDEFINED = 0xFF  # type_of_loader for a boot loader without an assigned id
VID_MODE_NORMAL = 0xFFFF


class SetupHeader(ctypes.LittleEndianStructure):
    """``struct setup_header``: starts at 0x1F1 in both the bzImage file and boot_params."""

    _pack_ = 1
    _fields_ = [
        ("setup_sects", ctypes.c_uint8),  # 0x1f1
        ("root_flags", ctypes.c_uint16),  # 0x1f2
        ("syssize", ctypes.c_uint32),  # 0x1f4: protected-mode code size in 16-byte paragraphs
        ("ram_size", ctypes.c_uint16),  # 0x1f8
        ("vid_mode", ctypes.c_uint16),  # 0x1fa
        ("root_dev", ctypes.c_uint16),  # 0x1fc
        ("boot_flag", ctypes.c_uint16),  # 0x1fe
        ("jump", ctypes.c_uint16),  # 0x200: its second byte also gives the header's length
        ("header", ctypes.c_uint32),  # 0x202
        ("version", ctypes.c_uint16),  # 0x206
        ("realmode_swtch", ctypes.c_uint32),  # 0x208
        ("start_sys_seg", ctypes.c_uint16),  # 0x20c
        ("kernel_version", ctypes.c_uint16),  # 0x20e
        ("type_of_loader", ctypes.c_uint8),  # 0x210
        ("loadflags", ctypes.c_uint8),  # 0x211
        ("setup_move_size", ctypes.c_uint16),  # 0x212
        ("code32_start", ctypes.c_uint32),  # 0x214
        ("ramdisk_image", ctypes.c_uint32),  # 0x218
        ("ramdisk_size", ctypes.c_uint32),  # 0x21c
        ("bootsect_kludge", ctypes.c_uint32),  # 0x220
        ("heap_end_ptr", ctypes.c_uint16),  # 0x224
        ("ext_loader_ver", ctypes.c_uint8),  # 0x226
        ("ext_loader_type", ctypes.c_uint8),  # 0x227
        ("cmd_line_ptr", ctypes.c_uint32),  # 0x228
        ("initrd_addr_max", ctypes.c_uint32),  # 0x22c: highest address the initrd may *occupy*
        ("kernel_alignment", ctypes.c_uint32),  # 0x230
        ("relocatable_kernel", ctypes.c_uint8),  # 0x234
        ("min_alignment", ctypes.c_uint8),  # 0x235
        ("xloadflags", ctypes.c_uint16),  # 0x236
        ("cmdline_size", ctypes.c_uint32),  # 0x238: maximum length *without* the terminating NUL
        ("hardware_subarch", ctypes.c_uint32),  # 0x23c
        ("hardware_subarch_data", ctypes.c_uint64),  # 0x240
        ("payload_offset", ctypes.c_uint32),  # 0x248: from the start of the protected-mode code
        ("payload_length", ctypes.c_uint32),  # 0x24c
        ("setup_data", ctypes.c_uint64),  # 0x250
        ("pref_address", ctypes.c_uint64),  # 0x258
        ("init_size", ctypes.c_uint32),  # 0x260
        ("handover_offset", ctypes.c_uint32),  # 0x264
        ("kernel_info_offset", ctypes.c_uint32),  # 0x268
    ]


class BootE820Entry(ctypes.LittleEndianStructure):
    """``struct boot_e820_entry``: packed, 20 bytes."""

    _pack_ = 1
    _fields_ = [
        ("addr", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
        ("type", ctypes.c_uint32),
    ]


class BootParams(ctypes.LittleEndianStructure):
    """``struct boot_params``: the 4 KiB zero page whose address the 64-bit entry receives in RSI."""

    _pack_ = 1
    _fields_ = [
        ("_screen_apm_tboot_ist", ctypes.c_uint8 * 0x70),  # 0x000: BIOS-era data a VMM leaves zero
        ("acpi_rsdp_addr", ctypes.c_uint64),  # 0x070 (zero-page.rst; read by the kernel since 2.14)
        ("_pad_078", ctypes.c_uint8 * (0x0C0 - 0x078)),
        ("ext_ramdisk_image", ctypes.c_uint32),  # 0x0c0: high 32 bits of hdr.ramdisk_image
        ("ext_ramdisk_size", ctypes.c_uint32),  # 0x0c4
        ("ext_cmd_line_ptr", ctypes.c_uint32),  # 0x0c8
        ("_pad_0cc", ctypes.c_uint8 * (0x1E8 - 0x0CC)),
        ("e820_entries", ctypes.c_uint8),  # 0x1e8
        ("_pad_1e9", ctypes.c_uint8 * (0x1EF - 0x1E9)),
        # 0x1ef: nonzero tells the kernel the loader copied garbage past the header (it then clears
        # the fields it cannot trust, see sanitize_boot_params()); it must stay zero.
        ("sentinel", ctypes.c_uint8),
        ("_pad_1f0", ctypes.c_uint8),
        ("hdr", SetupHeader),  # 0x1f1
        ("_pad_26c", ctypes.c_uint8 * (0x2D0 - SETUP_HEADER_OFFSET - ctypes.sizeof(SetupHeader))),
        ("e820_table", BootE820Entry * E820_MAX_ENTRIES_ZEROPAGE),  # 0x2d0
        ("_pad_cd0", ctypes.c_uint8 * (ZERO_PAGE_SIZE - 0xCD0)),
    ]

    def set_e820(self, entries: Sequence[E820Entry]) -> None:
        if len(entries) > E820_MAX_ENTRIES_ZEROPAGE:
            raise ValueError(f"{len(entries)} e820 entries; the zero page holds {E820_MAX_ENTRIES_ZEROPAGE}")
        self.e820_entries = len(entries)
        for slot, entry in zip(self.e820_table, entries, strict=False):
            slot.addr, slot.size, slot.type = entry.addr, entry.size, int(entry.type)
