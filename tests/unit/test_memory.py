"""Guest memory: GPA ranges map to the right region and nothing outside guest RAM is ever reachable."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aovisor.arch.x86_64 import layout
from aovisor.errors import GuestMemoryError
from aovisor.memory import GuestMemory, ram_ranges

MiB = 1 << 20


def test_small_guest_has_one_region_below_the_hole() -> None:
    assert ram_ranges(128 * MiB, layout.MMIO_HOLE_START, layout.MMIO_HOLE_END) == [(0, 128 * MiB)]


def test_large_guest_is_split_around_the_hole() -> None:
    size = 4 << 30
    ranges = ram_ranges(size, layout.MMIO_HOLE_START, layout.MMIO_HOLE_END)
    assert ranges == [(0, layout.MMIO_HOLE_START), (1 << 32, size - layout.MMIO_HOLE_START)]
    assert sum(n for _, n in ranges) == size


@pytest.fixture(scope="module")
def split_memory() -> GuestMemory:
    # A small hole keeps the test cheap while exercising the two-region logic.
    return GuestMemory([(0, 8 * MiB), (16 * MiB, 4 * MiB)])


def test_write_then_read_round_trips(split_memory: GuestMemory) -> None:
    split_memory.write(0x1000, b"hello")
    assert split_memory.read(0x1000, 5) == b"hello"
    split_memory.write_u64(16 * MiB + 8, 0x1122334455667788)
    assert split_memory.read_u32(16 * MiB + 8) == 0x55667788
    assert split_memory.view(16 * MiB + 8, 8).tobytes() == (0x1122334455667788).to_bytes(8, "little")


@pytest.mark.parametrize(
    ("gpa", "length"),
    [
        (8 * MiB, 1),  # first byte of the gap
        (8 * MiB - 4, 8),  # straddles the end of region 0
        (16 * MiB - 1, 2),  # straddles the start of region 1
        (20 * MiB, 1),  # past the end of RAM
        (-1, 1),
        (0, -1),
        (1 << 64, 1),
    ],
)
def test_out_of_ram_ranges_are_rejected(split_memory: GuestMemory, gpa: int, length: int) -> None:
    with pytest.raises(GuestMemoryError):
        split_memory.view(gpa, length)
    assert not split_memory.contains(gpa, length)


def _inside(gpa: int, length: int, regions: list[tuple[int, int]]) -> bool:
    return gpa >= 0 and length >= 0 and any(b <= gpa and gpa + length <= b + n for b, n in regions)


@settings(max_examples=2000, deadline=None)
@given(
    gpa=st.one_of(st.integers(-(1 << 20), 32 * MiB), st.integers(0, 1 << 64)),
    length=st.one_of(st.integers(-16, 64), st.integers(0, 32 * MiB)),
)
def test_view_succeeds_exactly_for_ranges_inside_one_region(
    split_memory: GuestMemory, gpa: int, length: int
) -> None:
    regions = [(0, 8 * MiB), (16 * MiB, 4 * MiB)]
    if _inside(gpa, length, regions):
        view = split_memory.view(gpa, length)
        assert len(view) == length
    else:
        with pytest.raises(GuestMemoryError):
            split_memory.view(gpa, length)


def test_unaligned_or_overlapping_regions_are_refused() -> None:
    with pytest.raises(ValueError):
        GuestMemory([(0x800, 4096)])
    with pytest.raises(ValueError):
        GuestMemory([(0, 2 * 4096), (4096, 4096)])
