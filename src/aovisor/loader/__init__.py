"""Kernel loading: put a kernel, its command line and initramfs into guest memory with its boot structures.

Two formats are recognised by their first bytes:

* an ELF ``vmlinux`` (or any ELF kernel) with a Xen PVH entry note, entered in 32-bit mode with
  ``hvm_start_info`` in EBX (:mod:`aovisor.loader.elf_pvh`);
* a Linux ``bzImage``, entered at its 64-bit entry point with ``boot_params`` in RSI
  (:mod:`aovisor.loader.bzimage`).

Every problem with the files or the guest's memory size surfaces as a :class:`LoaderError` that names
the file (or ``--cmdline``), never as an exception from deep inside.
"""

from __future__ import annotations

import os

from aovisor.arch.x86_64.layout import CMDLINE_MAX_SIZE, CMDLINE_START, HIGH_RAM_START
from aovisor.errors import GuestMemoryError, LoaderError
from aovisor.lean_typing import TYPE_CHECKING, NamedTuple
from aovisor.memory import GuestMemory

if TYPE_CHECKING:
    from typing import Literal

ELF_MAGIC = b"\x7fELF"


class BootInfo(NamedTuple):
    """Where to start the guest and what to hand it."""

    protocol: Literal["pvh", "linux64"]
    entry: int  # GPA of the first instruction
    # PVH: hvm_start_info, passed in EBX to a 32-bit entry (paging off).
    # linux64: boot_params, passed in RSI to a 64-bit entry (paging on, identity map).
    boot_struct_gpa: int


def load_kernel(
    mem: GuestMemory,
    kernel: str,
    *,
    cmdline: str,
    initramfs: str | None = None,
    rsdp_gpa: int | None = None,
) -> BootInfo:
    """Load ``kernel`` (PVH ELF or bzImage) and ``initramfs`` into ``mem`` and write the boot structures."""
    low_ram_end(mem)  # fail early, with a clear message, on a machine too small for anything
    try:
        fd = os.open(kernel, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise LoaderError(f"{kernel}: cannot open kernel: {exc.strerror}") from exc
    try:
        head = _pread_head(fd, kernel)
        # Imported here: the format modules import BootInfo and the helpers below from this package.
        if head.startswith(ELF_MAGIC):
            from aovisor.loader.elf_pvh import load_pvh_elf

            return load_pvh_elf(mem, fd, kernel, cmdline=cmdline, initramfs=initramfs, rsdp_gpa=rsdp_gpa)
        from aovisor.loader.bzimage import is_bzimage, load_bzimage

        if is_bzimage(head):
            return load_bzimage(mem, fd, kernel, cmdline=cmdline, initramfs=initramfs, rsdp_gpa=rsdp_gpa)
        raise LoaderError(
            f"{kernel}: not a kernel image: not an ELF file and no Linux boot header ('HdrS') at 0x202"
        )
    finally:
        os.close(fd)


def _pread_head(fd: int, path: str) -> bytes:
    try:
        return os.pread(fd, 0x210, 0)
    except OSError as exc:  # e.g. EISDIR
        raise LoaderError(f"{path}: cannot read kernel: {exc.strerror}") from exc


def low_ram_end(mem: GuestMemory) -> int:
    """End of the RAM region that starts at 0 (the kernel, boot structures and initramfs live in it)."""
    try:
        region = mem.region_for(0)
    except GuestMemoryError as exc:
        raise LoaderError("guest RAM does not start at address 0") from exc
    if region.end <= HIGH_RAM_START:
        raise LoaderError(
            f"guest RAM below the MMIO hole is only {region.end >> 10} KiB; need more than 1 MiB"
        )
    return region.end


def write_cmdline(mem: GuestMemory, cmdline: str, *, max_length: int | None, kernel: str) -> int:
    """Write ``cmdline`` NUL-terminated at CMDLINE_START; returns its GPA.

    ``max_length`` is the longest command line (without the NUL) the kernel accepts, if it says; the
    buffer reserved in the address map caps it too.
    """
    data = cmdline.encode()
    if b"\0" in data:
        raise LoaderError("--cmdline: the kernel command line must not contain NUL characters")
    limit = CMDLINE_MAX_SIZE - 1 if max_length is None else min(max_length, CMDLINE_MAX_SIZE - 1)
    if len(data) > limit:
        raise LoaderError(
            f"--cmdline: the kernel command line is {len(data)} bytes; {kernel} accepts at most {limit}"
        )
    mem.write(CMDLINE_START, data + b"\0")
    return CMDLINE_START


__all__ = ["BootInfo", "LoaderError", "load_kernel"]
