"""Xen PVH boot structures: ``hvm_start_info`` and the module list and memory map it points to.

A PVH kernel is entered in 32-bit protected mode with paging off and the physical address of
``struct hvm_start_info`` in EBX.  Layouts follow Xen's ``xen/include/public/arch-x86/hvm/start_info.h``
(copied into Linux as ``include/xen/interface/hvm/start_info.h``); every address is a guest-physical
address and 0 means "not present".
"""

from __future__ import annotations

import ctypes

XEN_HVM_START_MAGIC_VALUE = 0x336EC578  # "xEn3" with the 0x80 bit of the "E" set
HVM_START_INFO_VERSION = 1  # version 1 adds memmap_paddr/memmap_entries


class HvmStartInfo(ctypes.LittleEndianStructure):
    """``struct hvm_start_info`` (56 bytes)."""

    _fields_ = [
        ("magic", ctypes.c_uint32),
        ("version", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),  # SIF_* flags: Xen-only (privileged domain, ...), zero for us
        ("nr_modules", ctypes.c_uint32),
        ("modlist_paddr", ctypes.c_uint64),
        ("cmdline_paddr", ctypes.c_uint64),  # NUL-terminated ASCII
        ("rsdp_paddr", ctypes.c_uint64),
        ("memmap_paddr", ctypes.c_uint64),  # version 1+
        ("memmap_entries", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


class HvmModlistEntry(ctypes.LittleEndianStructure):
    """``struct hvm_modlist_entry`` (32 bytes); Linux takes the first module as its initramfs."""

    _fields_ = [
        ("paddr", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
        ("cmdline_paddr", ctypes.c_uint64),
        ("reserved", ctypes.c_uint64),
    ]


class HvmMemmapTableEntry(ctypes.LittleEndianStructure):
    """``struct hvm_memmap_table_entry`` (24 bytes); ``type`` takes E820 numbers (XEN_HVM_MEMMAP_TYPE_*)."""

    _fields_ = [
        ("addr", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
        ("type", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]
