"""Allocators for the VM's platform resources: interrupt GSIs for MSI routes and guest-physical MMIO space."""

from __future__ import annotations


class ResourceExhaustedError(RuntimeError):
    """No GSI or address range is left."""


class GsiAllocator:
    """Hands out GSIs in ``[start, end)`` (above the IOAPIC pins), each to one irqfd/MSI route."""

    def __init__(self, start: int, end: int) -> None:
        self._next = start
        self._end = end

    def allocate(self, count: int = 1) -> list[int]:
        if count < 0 or self._next + count > self._end:
            raise ResourceExhaustedError(f"no {count} free interrupt GSIs below {self._end}")
        first = self._next
        self._next += count
        return list(range(first, first + count))


class AddressAllocator:
    """A bump allocator of naturally aligned ranges in ``[start, end)`` (PCI BARs in the MMIO window)."""

    def __init__(self, start: int, end: int) -> None:
        self._next = start
        self._end = end

    def allocate(self, size: int, alignment: int | None = None) -> int:
        """The base of ``size`` fresh bytes aligned to ``alignment`` (default: ``size``, as a BAR needs)."""
        align = size if alignment is None else alignment
        if size <= 0 or align <= 0 or align & (align - 1):
            raise ValueError(f"bad allocation of {size:#x} bytes aligned to {align:#x}")
        base = -(-self._next // align) * align
        if base + size > self._end:
            raise ResourceExhaustedError(f"no {size:#x} bytes left in the MMIO window below {self._end:#x}")
        self._next = base + size
        return base
