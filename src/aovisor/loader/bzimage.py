"""Linux bzImage loading through the 64-bit boot protocol (Documentation/arch/x86/boot.rst).

The protected-mode part of the image (everything after the real-mode setup sectors) is loaded at 1 MiB
and entered at its 64-bit entry point, load address + 0x200, with RSI pointing at a zero page
(``struct boot_params``) built from the image's own setup header, as boot.rst's "64-bit Boot Protocol"
prescribes.  The real-mode setup code is never run, so its sectors are not loaded.
"""

from __future__ import annotations

import ctypes
import os

from aovisor.arch.x86_64.boot_params import (
    BOOT_FLAG_MAGIC,
    CAN_USE_HEAP,
    E820_MAX_ENTRIES_ZEROPAGE,
    KEEP_SEGMENTS,
    LOADED_HIGH,
    LOADER_TYPE_UNDEFINED,
    SETUP_HEADER_LIMIT,
    SETUP_HEADER_OFFSET,
    VID_MODE_NORMAL,
    XLF_KERNEL_64,
    ZERO_PAGE_SIZE,
    BootParams,
    SetupHeader,
)
from aovisor.arch.x86_64.e820 import e820_map
from aovisor.arch.x86_64.layout import HIGH_RAM_START, ZERO_PAGE_START
from aovisor.errors import LoaderError
from aovisor.loader import BootInfo, low_ram_end, write_cmdline
from aovisor.loader.initrd import load_initramfs, read_exact_into
from aovisor.memory import GuestMemory

HDRS_OFFSET = 0x202
MIN_PROTOCOL = 0x020C  # 2.12 (Linux 3.8): xloadflags, hence a way to know the 64-bit entry exists
ENTRY_64_OFFSET = 0x200  # boot.rst: "the start address of loaded 64-bit kernel plus 0x200"
_SECTOR = 512


def is_bzimage(head: bytes) -> bool:
    """Whether the first bytes of a file carry the Linux boot protocol header magic."""
    return head[HDRS_OFFSET : HDRS_OFFSET + 4] == b"HdrS"


def read_setup_header(fd: int, path: str) -> tuple[SetupHeader, bytes]:
    """The image's setup header, and its raw bytes (0x1F1 up to the end the header declares)."""
    try:
        head = os.pread(fd, SETUP_HEADER_LIMIT, 0)
    except OSError as exc:
        raise LoaderError(f"{path}: cannot read kernel: {exc.strerror}") from exc
    if not is_bzimage(head):
        raise LoaderError(f"{path}: no Linux boot header ('HdrS') at {HDRS_OFFSET:#x}")
    # boot.rst, "64-bit Boot Protocol": the header ends at 0x0202 + the byte at 0x0201 (the operand of
    # the short jump that skips it).  It can never reach edd_mbr_sig_buffer in boot_params.
    end = HDRS_OFFSET + head[0x201]
    if end > SETUP_HEADER_LIMIT:
        raise LoaderError(
            f"{path}: the setup header length byte at 0x201 puts its end at {end:#x}, "
            f"past {SETUP_HEADER_LIMIT:#x}"
        )
    if len(head) < end:
        raise LoaderError(f"{path}: file is truncated inside the Linux setup header")
    raw = head[SETUP_HEADER_OFFSET:end]
    # Headers of older protocol versions are shorter than our structure: the missing fields read as 0.
    hdr = SetupHeader.from_buffer_copy(raw.ljust(ctypes.sizeof(SetupHeader), b"\0"))
    return hdr, raw


def load_bzimage(
    mem: GuestMemory,
    fd: int,
    path: str,
    *,
    cmdline: str,
    initramfs: str | None,
    rsdp_gpa: int | None,
) -> BootInfo:
    hdr, raw_header = read_setup_header(fd, path)
    _check_header(hdr, path)
    file_size = os.fstat(fd).st_size

    # boot.rst "Loading the Rest of the Kernel": protected-mode code starts at (setup_sects+1)*512;
    # setup_sects == 0 means 4.
    pm_offset = ((hdr.setup_sects or 4) + 1) * _SECTOR
    pm_size = file_size - pm_offset
    if pm_size <= 0 or pm_size < hdr.syssize * 16:
        raise LoaderError(
            f"{path}: file is truncated: the header announces {hdr.syssize * 16} bytes of protected-mode "
            f"kernel at offset {pm_offset:#x}, the file has {max(pm_size, 0)}"
        )
    load_addr = HIGH_RAM_START
    kernel_end = max(load_addr + pm_size, _runtime_start(hdr, load_addr, path) + hdr.init_size)
    low_end = low_ram_end(mem)
    if kernel_end > low_end:
        raise LoaderError(
            f"{path}: the kernel needs guest RAM up to {kernel_end:#x} ({kernel_end >> 20} MiB, see its "
            f"init_size), but RAM below the MMIO hole ends at {low_end:#x}; "
            "give the VM more memory (--memory)"
        )
    read_exact_into(fd, mem.view(load_addr, pm_size), pm_offset, path)

    # The zero page: all zero except the setup header copied from the image, then our fields.
    page = bytearray(ZERO_PAGE_SIZE)
    page[SETUP_HEADER_OFFSET : SETUP_HEADER_OFFSET + len(raw_header)] = raw_header
    params = BootParams.from_buffer(page)
    h = params.hdr
    h.type_of_loader = LOADER_TYPE_UNDEFINED
    # We enter at the 64-bit entry: the 16-bit setup code never runs, so it gets no heap.
    h.loadflags = (h.loadflags | LOADED_HIGH) & ~(CAN_USE_HEAP | KEEP_SEGMENTS) & 0xFF
    h.heap_end_ptr = 0
    h.vid_mode = VID_MODE_NORMAL
    h.code32_start = load_addr
    h.hardware_subarch = 0  # plain PC
    h.setup_data = 0  # no setup_data list: never let a value from the file become a pointer

    cmdline_gpa = write_cmdline(mem, cmdline, max_length=hdr.cmdline_size, kernel=path)
    h.cmd_line_ptr = cmdline_gpa & 0xFFFF_FFFF
    params.ext_cmd_line_ptr = cmdline_gpa >> 32

    if initramfs is not None:
        # initrd_addr_max is the highest address the initrd may *occupy* (boot.rst), hence the + 1.
        top = min(hdr.initrd_addr_max + 1, low_end)
        initrd = load_initramfs(mem, initramfs, lowest=kernel_end, top=top)
        h.ramdisk_image = initrd.gpa & 0xFFFF_FFFF
        params.ext_ramdisk_image = initrd.gpa >> 32
        h.ramdisk_size = initrd.size & 0xFFFF_FFFF
        params.ext_ramdisk_size = initrd.size >> 32

    if rsdp_gpa is not None:
        params.acpi_rsdp_addr = rsdp_gpa

    e820 = e820_map((r.gpa, r.size) for r in mem)
    if len(e820) > E820_MAX_ENTRIES_ZEROPAGE:
        raise LoaderError(f"{path}: guest memory map has {len(e820)} entries, more than the zero page holds")
    params.set_e820(e820)

    mem.write(ZERO_PAGE_START, page)
    return BootInfo(protocol="linux64", entry=load_addr + ENTRY_64_OFFSET, boot_struct_gpa=ZERO_PAGE_START)


def _check_header(hdr: SetupHeader, path: str) -> None:
    if hdr.boot_flag != BOOT_FLAG_MAGIC:
        raise LoaderError(f"{path}: boot_flag at 0x1fe is {hdr.boot_flag:#06x}, not {BOOT_FLAG_MAGIC:#06x}")
    if hdr.version < MIN_PROTOCOL:
        raise LoaderError(
            f"{path}: Linux boot protocol {hdr.version >> 8}.{hdr.version & 0xFF:02d} is too old: "
            f"{MIN_PROTOCOL >> 8}.{MIN_PROTOCOL & 0xFF:02d} (Linux 3.8) or newer is needed "
            "for the 64-bit entry point"
        )
    if not hdr.loadflags & LOADED_HIGH:
        raise LoaderError(f"{path}: is a zImage (loadflags.LOADED_HIGH clear); only bzImage is supported")
    if not hdr.xloadflags & XLF_KERNEL_64:
        raise LoaderError(f"{path}: has no 64-bit entry point (xloadflags.XLF_KERNEL_64 clear)")


def _runtime_start(hdr: SetupHeader, load_addr: int, path: str) -> int:
    """Where the kernel decompresses itself: the start of the init_size bytes it needs.

    boot.rst ("init_size") says align_up(load address, kernel_alignment) for a relocatable kernel and
    pref_address otherwise; the decompressor (arch/x86/boot/compressed/head_64.S) moreover never goes
    below LOAD_PHYSICAL_ADDR, which is what pref_address holds.  Take the larger, so the initramfs is
    always placed clear of it.
    """
    pref = int(hdr.pref_address)
    if not hdr.relocatable_kernel:
        if pref < load_addr:
            raise LoaderError(f"{path}: non-relocatable kernel with pref_address {pref:#x} below 1 MiB")
        return pref
    align = int(hdr.kernel_alignment)
    if align == 0 or align & (align - 1):
        raise LoaderError(f"{path}: kernel_alignment {align:#x} is not a power of two")
    return max((load_addr + align - 1) & ~(align - 1), pref)
