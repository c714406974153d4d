"""The guest memory map (e820 / PVH memmap) derived from RAM regions, below and above the MMIO hole."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from aovisor.arch.x86_64.e820 import E820Entry, E820Type, e820_map
from aovisor.arch.x86_64.layout import (
    ACPI_END,
    ACPI_START,
    CMDLINE_START,
    EBDA_START,
    HIGH_RAM_START,
    MMIO_HOLE_END,
    MMIO_HOLE_START,
    PVH_INFO_START,
    ZERO_PAGE_START,
    GiB,
    MiB,
)
from aovisor.memory import GuestMemory, ram_ranges

RAM, RESERVED = E820Type.RAM, E820Type.RESERVED


def test_small_guest_has_low_ram_bios_hole_and_ram_from_1mib() -> None:
    assert e820_map(ram_ranges(256 * MiB, MMIO_HOLE_START, MMIO_HOLE_END)) == [
        E820Entry(0, EBDA_START, RAM),
        E820Entry(EBDA_START, HIGH_RAM_START - EBDA_START, RESERVED),
        E820Entry(HIGH_RAM_START, 255 * MiB, RAM),
    ]


def test_guest_larger_than_the_hole_start_continues_at_4gib() -> None:
    entries = e820_map(ram_ranges(8 * GiB, MMIO_HOLE_START, MMIO_HOLE_END))
    assert entries[2] == E820Entry(HIGH_RAM_START, MMIO_HOLE_START - HIGH_RAM_START, RAM)
    assert entries[3] == E820Entry(MMIO_HOLE_END, 8 * GiB - MMIO_HOLE_START, RAM)
    assert len(entries) == 4


def test_guest_exactly_up_to_the_hole_has_no_high_entry() -> None:
    entries = e820_map(ram_ranges(MMIO_HOLE_START, MMIO_HOLE_START, MMIO_HOLE_END))
    assert entries[-1].end == MMIO_HOLE_START
    assert len(entries) == 3


def test_map_of_real_guest_memory_matches_its_regions() -> None:
    mem = GuestMemory.with_hole(MMIO_HOLE_START + 64 * MiB, MMIO_HOLE_START, MMIO_HOLE_END)
    try:
        entries = e820_map((r.gpa, r.size) for r in mem)
    finally:
        mem.close()
    assert entries[-1] == E820Entry(MMIO_HOLE_END, 64 * MiB, RAM)
    assert sum(e.size for e in entries) == MMIO_HOLE_START + 64 * MiB


@given(pages=st.integers(min_value=(16 * MiB) >> 12, max_value=(64 * GiB) >> 12))
def test_map_invariants_for_any_memory_size(pages: int) -> None:
    size = pages << 12
    entries = e820_map(ram_ranges(size, MMIO_HOLE_START, MMIO_HOLE_END))

    # Sorted, non-overlapping, and covering exactly the guest's RAM.
    for before, after in itertools.pairwise(entries):
        assert before.end <= after.addr
    assert sum(e.size for e in entries) == size
    usable = sum(e.size for e in entries if e.type == RAM)
    assert usable == size - (HIGH_RAM_START - EBDA_START)

    # Nothing in the MMIO hole; the boot structures are in RAM, the ACPI tables in a reserved range.
    assert not any(e.addr < MMIO_HOLE_END and e.end > MMIO_HOLE_START for e in entries)

    def type_at(gpa: int) -> E820Type:
        (entry,) = [e for e in entries if e.addr <= gpa < e.end]
        return entry.type

    for gpa in (PVH_INFO_START, ZERO_PAGE_START, CMDLINE_START, HIGH_RAM_START):
        assert type_at(gpa) == RAM
    assert type_at(ACPI_START) == type_at(ACPI_END - 1) == RESERVED
