"""The port/MMIO bus: range registration, dispatch with device-relative offsets, unclaimed accesses."""

from __future__ import annotations

import threading

import pytest

from aovisor.devices.bus import Bus, BusError


class Recorder:
    """A device that remembers every access and answers reads with a value derived from the offset."""

    def __init__(self) -> None:
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        self.reads.append((offset, size))
        return 0x100 + offset

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


def test_accesses_reach_the_device_with_offsets_relative_to_its_base() -> None:
    bus = Bus("pio")
    dev = Recorder()
    bus.insert(dev, 0x3F8, 8)
    assert bus.read(0x3F8, 1) == 0x100
    assert bus.read(0x3FF, 1) == 0x107
    bus.write(0x3FB, 1, 0x83)
    bus.write(0x3F8, 4, 0xDEADBEEF)
    assert dev.reads == [(0, 1), (7, 1)]
    assert dev.writes == [(3, 1, 0x83), (0, 4, 0xDEADBEEF)]


def test_each_access_goes_to_the_device_covering_it() -> None:
    bus = Bus("mmio")
    low, high = Recorder(), Recorder()
    bus.insert(high, 0x2000, 0x100)
    bus.insert(low, 0x1000, 0x1000)  # inserted out of order, ends where the next begins
    bus.write(0x1FFF, 1, 1)
    bus.write(0x2000, 1, 2)
    assert low.writes == [(0xFFF, 1, 1)]
    assert high.writes == [(0, 1, 2)]
    found = bus.find(0x20FF)
    assert found is not None and found[0] is high and found[1] == 0xFF
    assert bus.find(0x2100) is None
    assert bus.find(0xFFF) is None


@pytest.mark.parametrize(
    ("base", "length"),
    [(0x60, 5), (0x5C, 5), (0x64, 1), (0x50, 0x100), (0x62, 1)],
)
def test_overlapping_ranges_are_rejected(base: int, length: int) -> None:
    bus = Bus("pio")
    bus.insert(Recorder(), 0x60, 5)
    with pytest.raises(BusError, match="overlaps"):
        bus.insert(Recorder(), base, length)


def test_adjacent_ranges_are_allowed() -> None:
    bus = Bus("pio")
    bus.insert(Recorder(), 0x60, 5)
    bus.insert(Recorder(), 0x65, 1)
    bus.insert(Recorder(), 0x5F, 1)


@pytest.mark.parametrize(("base", "length"), [(0x10, 0), (0x10, -1), (-1, 4)])
def test_empty_or_negative_ranges_are_rejected(base: int, length: int) -> None:
    with pytest.raises(BusError):
        Bus("pio").insert(Recorder(), base, length)


@pytest.mark.parametrize(("size", "expected"), [(1, 0xFF), (2, 0xFFFF), (4, 0xFFFF_FFFF), (8, 2**64 - 1)])
def test_unclaimed_reads_are_all_ones_and_counted(size: int, expected: int) -> None:
    bus = Bus("pio")
    bus.insert(Recorder(), 0x70, 2)
    assert bus.read(0x72, size) == expected
    bus.write(0x6F, 1, 0)
    assert bus.unhandled == 2


def test_a_removed_device_no_longer_answers() -> None:
    bus = Bus("pio")
    dev = Recorder()
    bus.insert(dev, 0x80, 1)
    bus.remove(0x80)
    assert bus.read(0x80, 1) == 0xFF
    assert dev.reads == []
    bus.insert(Recorder(), 0x80, 1)  # the range is free again


def test_the_bus_serializes_calls_into_one_device() -> None:
    class Racy:
        """Fails if two calls are inside it at once."""

        def __init__(self) -> None:
            self.inside = 0
            self.overlaps = 0

        def read(self, offset: int, size: int) -> int:
            self.inside += 1
            if self.inside > 1:
                self.overlaps += 1
            for _ in range(50):
                pass
            self.inside -= 1
            return 0

        def write(self, offset: int, size: int, value: int) -> None:
            self.read(offset, size)

    bus = Bus("pio")
    dev = Racy()
    bus.insert(dev, 0x100, 1)

    def hammer() -> None:
        for _ in range(3000):
            bus.read(0x100, 1)
            bus.write(0x100, 1, 0)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert dev.overlaps == 0
