"""Identity page tables for the 64-bit Linux boot protocol entry (the first 4 GiB, 2 MiB pages)."""

from __future__ import annotations

import struct

from aovisor.arch.x86_64 import layout
from aovisor.memory import GuestMemory

_PRESENT_RW = 0x3
_PAGE_SIZE_2M = 0x80


def write_identity_page_tables(mem: GuestMemory) -> int:
    """Write PML4 -> PDPT -> 4 PDs mapping [0, 4 GiB) and return CR3 (the PML4 address).

    The boot protocol requires the kernel image, boot_params and command line to be identity mapped; mapping
    all 4 GiB also covers the MMIO hole (LAPIC, IOAPIC) for guest programs.
    """
    mem.write_u64(layout.PML4_START, layout.PDPTE_START | _PRESENT_RW)
    pdpt = bytearray(4096)
    for i in range(layout.PDE_COUNT):
        struct.pack_into("<Q", pdpt, i * 8, (layout.PDE_START + i * 4096) | _PRESENT_RW)
    mem.write(layout.PDPTE_START, pdpt)
    pds = bytearray(4096 * layout.PDE_COUNT)
    for i in range(512 * layout.PDE_COUNT):
        struct.pack_into("<Q", pds, i * 8, (i << 21) | _PRESENT_RW | _PAGE_SIZE_2M)
    mem.write(layout.PDE_START, pds)
    return layout.PML4_START
