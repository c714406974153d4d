"""The guest's physical memory map (the BIOS INT 15h/E820 table), derived from its RAM regions.

The same map is handed to Linux in ``boot_params.e820_table`` and to PVH kernels as the
``hvm_memmap_table_entry`` array; both use the E820 type numbers (ACPI spec 6.5, table 15.6 "Address Range
Types", which Xen's ``XEN_HVM_MEMMAP_TYPE_*`` copies).

Low memory follows the PC convention of Firecracker and Cloud Hypervisor: RAM up to the EBDA, then a
reserved range up to 1 MiB that covers the EBDA, the legacy VGA/option-ROM window and the BIOS area where
our ACPI tables (and the RSDP that Linux scans 0xE0000-0xFFFFF for) live.  Everything above 1 MiB that is
backed by guest RAM is usable RAM; the MMIO hole simply has no entry.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from aovisor.arch.x86_64.layout import EBDA_START, HIGH_RAM_START
from aovisor.lean_typing import NamedTuple


class E820Type(enum.IntEnum):
    RAM = 1
    RESERVED = 2
    ACPI = 3  # ACPI reclaimable: tables the OS may free after parsing them
    NVS = 4
    UNUSABLE = 5


class E820Entry(NamedTuple):
    """One range of the map."""

    addr: int
    size: int
    type: E820Type

    @property
    def end(self) -> int:
        return self.addr + self.size


def e820_map(ram: Iterable[tuple[int, int]]) -> list[E820Entry]:
    """The memory map for guest RAM given as ``(gpa, size)`` ranges, sorted by address.

    Pass ``((r.gpa, r.size) for r in guest_memory)``, or :func:`aovisor.memory.ram_ranges` output to
    compute a map without allocating the memory.
    """
    entries: list[E820Entry] = []
    for gpa, size in sorted(ram):
        end = gpa + size
        # Split each region at the EBDA and at 1 MiB; only the pieces that exist get an entry.
        for lo, hi, kind in (
            (gpa, min(end, EBDA_START), E820Type.RAM),
            (max(gpa, EBDA_START), min(end, HIGH_RAM_START), E820Type.RESERVED),
            (max(gpa, HIGH_RAM_START), end, E820Type.RAM),
        ):
            if hi > lo:
                entries.append(E820Entry(lo, hi - lo, kind))
    return entries
