"""Port-I/O and MMIO buses: address ranges mapped to devices, rejecting overlaps.

A device sees offsets relative to its base.  Each device gets a lock, because vCPU threads and the device's
own threads (stdin reader, epoll loop) call into it concurrently and a state machine's multi-step updates are
not atomic under the GIL.
"""

from __future__ import annotations

import bisect
import threading

from aovisor.lean_typing import NamedTuple, Protocol
from aovisor.logs import get_logger

log = get_logger(__name__)


class BusDevice(Protocol):
    """What a device on a bus implements. ``size`` is the access width in bytes (1, 2, 4 or 8)."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


_CACHE_LIMIT = 4096


class BusError(ValueError):
    """A range that overlaps another or is empty."""


class _Entry(NamedTuple):
    """A device's range; its lock serialises the device's accesses (see the module docstring)."""

    base: int
    length: int
    device: BusDevice
    lock: threading.Lock


class Bus:
    """A set of non-overlapping ``[base, base+length)`` ranges; unclaimed accesses read all-ones."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: list[_Entry] = []
        self._bases: list[int] = []
        # Exact address -> entry (None: unclaimed).  Guests hit few distinct addresses over and over, and a
        # dict hit is cheaper than the bisection on the exit path.  Bounded, and cleared on every change.
        self._cache: dict[int, _Entry | None] = {}
        self.unhandled = 0  # count of accesses no device claimed
        self._reported_reads: set[int] = set()  # unclaimed addresses already logged (see read())
        self._reported_writes: set[int] = set()

    def insert(self, device: BusDevice, base: int, length: int) -> None:
        if length <= 0 or base < 0:
            raise BusError(f"{self.name}: bad range {base:#x}+{length:#x}")
        for e in self._entries:
            if base < e.base + e.length and e.base < base + length:
                raise BusError(
                    f"{self.name}: {base:#x}+{length:#x} overlaps {type(e.device).__name__} at {e.base:#x}"
                )
        entry = _Entry(base, length, device, threading.Lock())
        i = bisect.bisect(self._bases, base)
        self._entries.insert(i, entry)
        self._bases.insert(i, base)
        self._cache.clear()

    def remove(self, base: int) -> None:
        i = self._bases.index(base)
        del self._entries[i]
        del self._bases[i]
        self._cache.clear()

    def find(self, addr: int) -> tuple[BusDevice, int] | None:
        """The device covering ``addr`` and the offset into it."""
        entry = self._lookup(addr)
        return None if entry is None else (entry.device, addr - entry.base)

    def _lookup(self, addr: int) -> _Entry | None:
        try:
            return self._cache[addr]
        except KeyError:
            pass
        found = None
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0:
            e = self._entries[i]
            if addr < e.base + e.length:
                found = e
        if len(self._cache) < _CACHE_LIMIT:
            self._cache[addr] = found
        return found

    # read() and write() run on every guest exit: the cache lookup is inlined (one call frame less), and an
    # unclaimed address is logged on its first access only (a guest polling one would flood the log and pay
    # for a log call per exit); every access is counted in `unhandled`.
    def read(self, addr: int, size: int) -> int:
        try:
            e = self._cache[addr]
        except KeyError:
            e = self._lookup(addr)
        if e is None:
            self.unhandled += 1
            if addr not in self._reported_reads and len(self._reported_reads) < _CACHE_LIMIT:
                self._reported_reads.add(addr)
                log.debug("%s: unhandled read %#x/%d (logged once per address)", self.name, addr, size)
            return (1 << (8 * size)) - 1
        with e.lock:
            return e.device.read(addr - e.base, size)

    def write(self, addr: int, size: int, value: int) -> None:
        try:
            e = self._cache[addr]
        except KeyError:
            e = self._lookup(addr)
        if e is None:
            self.unhandled += 1
            if addr not in self._reported_writes and len(self._reported_writes) < _CACHE_LIMIT:
                self._reported_writes.add(addr)
                log.debug(
                    "%s: unhandled write %#x/%d = %#x (logged once per address)", self.name, addr, size, value
                )
            return
        with e.lock:
            e.device.write(addr - e.base, size, value)
