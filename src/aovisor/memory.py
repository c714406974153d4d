"""Guest RAM: anonymous mappings placed around the 32-bit MMIO hole, accessed by guest-physical address.

Every access goes through :meth:`GuestMemory.view`, which checks that ``[gpa, gpa+length)`` lies inside one
RAM region; anything else raises :class:`GuestMemoryError`.  That single check is what keeps a hostile guest
(or a device acting on its behalf) from making the VMM touch host memory outside the guest's RAM.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import mmap
import struct
from collections.abc import Iterator

from aovisor.errors import GuestMemoryError
from aovisor.lean_typing import NamedTuple


class MemoryRegion(NamedTuple):
    """One contiguous range of guest RAM backed by a host mapping."""

    gpa: int
    size: int
    mapping: mmap.mmap
    view: memoryview
    host_address: int  # host virtual address of the mapping (what KVM_SET_USER_MEMORY_REGION wants)

    @property
    def end(self) -> int:
        return self.gpa + self.size


def ram_ranges(size: int, hole_start: int, hole_end: int) -> list[tuple[int, int]]:
    """Split ``size`` bytes of RAM into (gpa, length) ranges that skip the MMIO hole."""
    if size <= 0:
        raise ValueError("memory size must be positive")
    below = min(size, hole_start)
    ranges = [(0, below)]
    if size > below:
        ranges.append((hole_end, size - below))
    return ranges


class GuestMemory:
    """All of a VM's RAM regions, with bounds-checked GPA access."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        self.regions: list[MemoryRegion] = []
        for gpa, size in sorted(ranges):
            if gpa % mmap.PAGESIZE or size % mmap.PAGESIZE or size <= 0:
                raise ValueError(f"region {gpa:#x}+{size:#x} is not page aligned")
            if self.regions and gpa < self.regions[-1].end:
                raise ValueError(f"region {gpa:#x} overlaps the previous one")
            # MAP_NORESERVE: a 1 GiB guest that touches 20 MiB costs 20 MiB, as in QEMU/CH.
            mapping = mmap.mmap(
                -1,
                size,
                flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0),
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
            )
            # The temporary ctypes object only reads the address; it is dropped at once so that the
            # mapping can still be closed at teardown.
            host_address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
            self.regions.append(MemoryRegion(gpa, size, mapping, memoryview(mapping), host_address))
        self._starts = [r.gpa for r in self.regions]

    @classmethod
    def with_hole(cls, size: int, hole_start: int, hole_end: int) -> GuestMemory:
        return cls(ram_ranges(size, hole_start, hole_end))

    @property
    def total_size(self) -> int:
        return sum(r.size for r in self.regions)

    def __iter__(self) -> Iterator[MemoryRegion]:
        return iter(self.regions)

    def region_for(self, gpa: int) -> MemoryRegion:
        i = bisect.bisect_right(self._starts, gpa) - 1
        if i >= 0:
            region = self.regions[i]
            if gpa < region.end:
                return region
        raise GuestMemoryError(f"guest address {gpa:#x} is not RAM")

    def view(self, gpa: int, length: int) -> memoryview:
        """A writable view of ``length`` bytes at ``gpa``; the range must lie in one region."""
        if length < 0 or gpa < 0:
            raise GuestMemoryError(f"bad guest range {gpa:#x}+{length:#x}")
        i = bisect.bisect_right(self._starts, gpa) - 1
        if i >= 0:
            region = self.regions[i]
            off = gpa - region.gpa
            if off + length <= region.size:
                return region.view[off : off + length]
        raise GuestMemoryError(f"guest range {gpa:#x}+{length:#x} is outside guest RAM")

    def contains(self, gpa: int, length: int) -> bool:
        try:
            self.view(gpa, length)
        except GuestMemoryError:
            return False
        return True

    def read(self, gpa: int, length: int) -> bytes:
        return bytes(self.view(gpa, length))

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        self.view(gpa, len(data))[:] = data

    def read_u8(self, gpa: int) -> int:
        return self.view(gpa, 1)[0]

    def read_u16(self, gpa: int) -> int:
        return int(struct.unpack_from("<H", self.view(gpa, 2))[0])

    def read_u32(self, gpa: int) -> int:
        return int(struct.unpack_from("<I", self.view(gpa, 4))[0])

    def read_u64(self, gpa: int) -> int:
        return int(struct.unpack_from("<Q", self.view(gpa, 8))[0])

    def write_u16(self, gpa: int, value: int) -> None:
        struct.pack_into("<H", self.view(gpa, 2), 0, value)

    def write_u32(self, gpa: int, value: int) -> None:
        struct.pack_into("<I", self.view(gpa, 4), 0, value)

    def write_u64(self, gpa: int, value: int) -> None:
        struct.pack_into("<Q", self.view(gpa, 8), 0, value)

    def close(self) -> None:
        for region in self.regions:
            region.view.release()
            # A device may still hold a view; the mapping then goes when the last view does.
            with contextlib.suppress(BufferError):
                region.mapping.close()
        self.regions.clear()
        self._starts.clear()
