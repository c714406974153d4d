"""ELF kernels booted through the Xen PVH entry point (an uncompressed Linux ``vmlinux``, among others).

The kernel advertises a 32-bit physical entry point in an ELF note (name "Xen", type
XEN_ELFNOTE_PHYS32_ENTRY; Xen ``public/elfnote.h``; Linux emits it in arch/x86/platform/pvh/head.S).
Each PT_LOAD segment is copied to its *physical* address ``p_paddr`` (its ``p_vaddr`` is the kernel's
high virtual mapping).  The guest starts at the entry in 32-bit protected mode, paging off, with EBX
pointing at ``hvm_start_info`` (Xen docs/misc/pvh.pandoc).
"""

from __future__ import annotations

import os
import struct

from aovisor.arch.x86_64.e820 import e820_map
from aovisor.arch.x86_64.layout import (
    HIGH_RAM_START,
    PVH_INFO_START,
    PVH_MEMMAP_MAX_ENTRIES,
    PVH_MEMMAP_START,
    PVH_MODLIST_START,
)
from aovisor.arch.x86_64.pvh import (
    HVM_START_INFO_VERSION,
    XEN_HVM_START_MAGIC_VALUE,
    HvmMemmapTableEntry,
    HvmModlistEntry,
    HvmStartInfo,
)
from aovisor.errors import LoaderError
from aovisor.lean_typing import NamedTuple
from aovisor.loader import BootInfo, low_ram_end, write_cmdline
from aovisor.loader.elf import PT_LOAD, PT_NOTE, read_elf
from aovisor.loader.initrd import load_initramfs, read_exact_into
from aovisor.memory import GuestMemory

XEN_ELFNOTE_PHYS32_ENTRY = 18
_XEN_NOTE_NAME = b"Xen"
_ZEROS = bytes(1 << 20)


class _LoadSegment(NamedTuple):
    number: int  # program header number, for error messages
    offset: int
    paddr: int
    filesz: int
    memsz: int

    @property
    def end(self) -> int:
        return self.paddr + self.memsz


class _NoteArea(NamedTuple):
    offset: int
    size: int
    align: int


def load_pvh_elf(
    mem: GuestMemory,
    fd: int,
    path: str,
    *,
    cmdline: str,
    initramfs: str | None,
    rsdp_gpa: int | None,
) -> BootInfo:
    file_size = os.fstat(fd).st_size
    segments, note_areas = _read_elf_layout(fd, path)

    entry = _find_phys32_entry(fd, path, file_size, note_areas)
    if entry is None:  # a PT_NOTE segment is the norm; a .note section is the fallback
        entry = _find_phys32_entry(fd, path, file_size, _read_note_sections(fd, path))
    if entry is None:
        raise LoaderError(f"{path}: ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)")

    low_end = low_ram_end(mem)
    loads = [s for s in segments if s.memsz]
    if not loads:
        raise LoaderError(f"{path}: ELF kernel has no PT_LOAD segment")
    for seg in loads:
        _check_segment(mem, seg, file_size, path)
    if not any(s.paddr <= entry < s.end for s in loads):
        raise LoaderError(f"{path}: PVH entry point {entry:#x} is not inside any PT_LOAD segment")

    for seg in loads:
        read_exact_into(fd, mem.view(seg.paddr, seg.filesz), seg.offset, path)
        _zero(mem, seg.paddr + seg.filesz, seg.memsz - seg.filesz)
    kernel_end = max(s.end for s in loads)

    info = HvmStartInfo(
        magic=XEN_HVM_START_MAGIC_VALUE,
        version=HVM_START_INFO_VERSION,
        # Linux truncates a PVH command line at COMMAND_LINE_SIZE itself; only our buffer limits it here.
        cmdline_paddr=write_cmdline(mem, cmdline, max_length=None, kernel=path),
        rsdp_paddr=rsdp_gpa or 0,
    )
    if initramfs is not None:
        initrd = load_initramfs(mem, initramfs, lowest=max(kernel_end, HIGH_RAM_START), top=low_end)
        mem.write(PVH_MODLIST_START, bytes(HvmModlistEntry(paddr=initrd.gpa, size=initrd.size)))
        info.nr_modules = 1
        info.modlist_paddr = PVH_MODLIST_START

    memmap = e820_map((r.gpa, r.size) for r in mem)
    if len(memmap) > PVH_MEMMAP_MAX_ENTRIES:
        raise LoaderError(
            f"{path}: guest memory map has {len(memmap)} entries, more than {PVH_MEMMAP_MAX_ENTRIES}"
        )
    table = (HvmMemmapTableEntry * len(memmap))(
        *(HvmMemmapTableEntry(addr=e.addr, size=e.size, type=int(e.type)) for e in memmap)
    )
    mem.write(PVH_MEMMAP_START, bytes(table))
    info.memmap_paddr = PVH_MEMMAP_START
    info.memmap_entries = len(memmap)
    mem.write(PVH_INFO_START, bytes(info))
    return BootInfo(protocol="pvh", entry=entry, boot_struct_gpa=PVH_INFO_START)


def _read_elf_layout(fd: int, path: str) -> tuple[list[_LoadSegment], list[_NoteArea]]:
    """PT_LOAD segments and PT_NOTE areas, as plain numbers that the caller validates."""
    elf = read_elf(fd, path)
    loads = [
        _LoadSegment(ph.number, ph.offset, ph.paddr, ph.filesz, ph.memsz)
        for ph in elf.program_headers
        if ph.type == PT_LOAD
    ]
    notes = [_NoteArea(ph.offset, ph.filesz, ph.align) for ph in elf.program_headers if ph.type == PT_NOTE]
    return loads, notes


def _read_note_sections(fd: int, path: str) -> list[_NoteArea]:
    return [_NoteArea(sec.offset, sec.size, sec.align) for sec in read_elf(fd, path).note_sections]


def _find_phys32_entry(fd: int, path: str, file_size: int, areas: list[_NoteArea]) -> int | None:
    for area in areas:
        if area.offset + area.size > file_size:
            raise LoaderError(f"{path}: file is truncated: an ELF note area ends past the end of the file")
        blob = os.pread(fd, area.size, area.offset)
        entry = _phys32_entry_in(blob, 8 if area.align == 8 else 4, path)
        if entry is not None:
            return entry
    return None


def _phys32_entry_in(blob: bytes, align: int, path: str) -> int | None:
    """Walk ELF notes (Elf_Nhdr: namesz, descsz, type; then name and desc, each padded to ``align``)."""
    pos = 0
    while pos + 12 <= len(blob):
        namesz, descsz, note_type = struct.unpack_from("<III", blob, pos)
        name_at = pos + 12
        desc_at = name_at + _align_up(namesz, align)
        if desc_at + descsz > len(blob):
            return None  # a truncated note ends the list
        if (
            note_type == XEN_ELFNOTE_PHYS32_ENTRY
            and blob[name_at : name_at + namesz].rstrip(b"\0") == _XEN_NOTE_NAME
        ):
            # Linux emits the address as _ASM_PTR: 4 bytes on i386, 8 bytes on x86-64.
            if descsz not in (4, 8):
                raise LoaderError(f"{path}: PVH entry note has a {descsz}-byte value (expected 4 or 8)")
            entry = int.from_bytes(blob[desc_at : desc_at + descsz], "little")
            if entry >= 1 << 32:
                raise LoaderError(f"{path}: PVH entry point {entry:#x} is not a 32-bit physical address")
            return entry
        pos = desc_at + _align_up(descsz, align)
    return None


def _check_segment(mem: GuestMemory, seg: _LoadSegment, file_size: int, path: str) -> None:
    what = f"{path}: segment {seg.number} [{seg.paddr:#x}, {seg.end:#x})"
    if seg.filesz > seg.memsz:
        raise LoaderError(f"{what}: p_filesz {seg.filesz:#x} is larger than p_memsz {seg.memsz:#x}")
    if seg.offset + seg.filesz > file_size:
        raise LoaderError(
            f"{path}: file is truncated: segment {seg.number} needs bytes up to "
            f"{seg.offset + seg.filesz:#x}, the file has {file_size:#x}"
        )
    if seg.paddr < HIGH_RAM_START:
        raise LoaderError(f"{what}: starts below 1 MiB, over the boot structures")
    if not mem.contains(seg.paddr, seg.memsz):
        ram = ", ".join(f"[{r.gpa:#x}, {r.end:#x})" for r in mem)
        raise LoaderError(f"{what}: lies outside guest RAM ({ram}); give the VM more memory (--memory)")


def _zero(mem: GuestMemory, gpa: int, length: int) -> None:
    view = mem.view(gpa, length)
    for start in range(0, length, len(_ZEROS)):
        chunk = view[start : start + len(_ZEROS)]
        chunk[:] = _ZEROS[: len(chunk)]


def _align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)
