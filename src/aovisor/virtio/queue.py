"""Split virtqueues (virtio 1.2 §2.7): the one place where the guest's ring contents are validated.

A driver shares three structures in guest RAM: the descriptor table (16-byte ``addr, len, flags, next``
entries), the available ring (``flags, idx, ring[size], used_event``) and the used ring (``flags, idx,
ring[size] of {id, len}, avail_event``).  Everything in them is guest-controlled, so :meth:`SplitQueue.pop`
checks each value once, as it is read, and hands the device memoryviews that are guaranteed to lie inside
guest RAM:

* the available index may run ahead of ours by at most the queue size (§2.7.13.3);
* a head or ``next`` index must be inside its table; a chain longer than its table loops (§2.7.5.3.1);
* an indirect table (``VIRTQ_DESC_F_INDIRECT``, only if negotiated) is a multiple of 16 bytes, at most
  :data:`MAX_INDIRECT_DESCRIPTORS` entries, never nested, and not combined with ``NEXT`` (§2.7.5.3.1);
* every buffer lies inside one RAM region (:meth:`GuestMemory.view`), and device-writable buffers come
  after all device-readable ones (§2.7.4.2);
* used-ring writes go to ``idx % size`` and name a head the device got from :meth:`pop`, with a length
  clamped to the chain's writable bytes.

:meth:`SplitQueue.pop_readable` is the batch form for the simplest chain, one direct device-readable
buffer in the RAM below the MMIO hole: it applies the same checks to a run of chains at once and hands out
host addresses (``low_ram_address + gpa``) a device can give the kernel; it stops at the first chain that
needs more, which :meth:`pop` then walks (:meth:`add_used_readable` returns such a batch).

Any violation raises :class:`QueueError`; the device then reports DEVICE_NEEDS_RESET and stops using the
queue.  The rings are viewed once, when the queue is created, so the hot path is ``struct`` on memoryviews.

Notification suppression: with ``VIRTIO_F_EVENT_IDX`` the device publishes ``avail_event`` (where it wants
the next kick) and honours the driver's ``used_event`` (§2.7.7-2.7.10); without it, ``VIRTQ_AVAIL_F_NO_
INTERRUPT``, and a device draining a ring may set ``VIRTQ_USED_F_NO_NOTIFY`` meanwhile.  Ordering: x86
keeps stores in order and loads in order, so writing a used element before the used index needs no fence;
the store-then-load points (publishing avail_event, or clearing NO_NOTIFY, then re-reading the available
index; publishing the used index then reading used_event) take a full barrier.

Atomicity: every ring field the driver reads or writes *while the device runs* (the available index and
entries, ``used_event``, the used index, ``avail_event``) is accessed as one aligned 16- or 32-bit load or
store, through memoryviews cast to ``H``/``I``.  ``struct`` cannot be used for them: ``pack_into`` first
zeroes its destination and then writes the fields, so the driver could see the used index (or
``avail_event``) read 0 for an instant — it then takes a stale used element for a completion, or skips a
kick — and ``unpack_from`` reads little-endian fields a byte at a time, so a 16-bit index changing from
0x00FF to 0x0100 could be read torn.
"""

from __future__ import annotations

import struct
import threading
from array import array
from itertools import takewhile

from aovisor.errors import GuestMemoryError
from aovisor.lean_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aovisor.memory import GuestMemory

VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
VIRTQ_USED_F_NO_NOTIFY = 1
_CHAINED = VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT

DESCRIPTOR_SIZE = 16
MAX_QUEUE_SIZE = 32768  # §2.7: split queue sizes are powers of two up to 32768
# Indirect tables larger than this are refused (QEMU and Linux use 1024 as the bound of a chain).
MAX_INDIRECT_DESCRIPTORS = 1024
# pop_readable reads this many available entries before reading the rest of a batch.
_PROBE = 8

# Alignment of the three areas (§2.7, table "Virtqueue Part Alignment").
DESC_ALIGN = 16
AVAIL_ALIGN = 2
USED_ALIGN = 4

_DESC = struct.Struct("<QIHH")

_fence_lock = threading.Lock()


def full_barrier() -> None:
    """A full memory fence: an uncontended lock round-trip is a locked read-modify-write on x86."""
    _fence_lock.acquire()
    _fence_lock.release()


class QueueError(Exception):
    """The driver broke the virtqueue contract; the device must be reset before the queue is used again."""


def ring_sizes(size: int, event_idx: bool) -> tuple[int, int, int]:
    """Bytes of the descriptor table, available ring and used ring of a queue of ``size`` entries."""
    extra = 2 if event_idx else 0
    return DESCRIPTOR_SIZE * size, 4 + 2 * size + extra, 4 + 8 * size + extra


class DescriptorChain:
    """One request: the head index and its buffers as views of guest RAM, readable ones first."""

    __slots__ = ("head", "readable", "readable_len", "writable", "writable_len")

    def __init__(
        self, head: int, readable: list[memoryview], writable: list[memoryview], r_len: int, w_len: int
    ) -> None:
        self.head = head
        self.readable = readable
        self.writable = writable
        self.readable_len = r_len
        self.writable_len = w_len

    def __repr__(self) -> str:
        return (
            f"DescriptorChain(head={self.head}, readable={[len(v) for v in self.readable]}, "
            f"writable={[len(v) for v in self.writable]})"
        )


class QueueConfig:
    """A queue as the driver programs it through a transport (common config or MMIO registers)."""

    __slots__ = ("desc", "device", "driver", "enabled", "max_size", "size", "vector")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.reset()

    def reset(self) -> None:
        self.size = self.max_size
        self.enabled = False
        self.desc = 0
        self.driver = 0  # the available ring
        self.device = 0  # the used ring
        self.vector = 0xFFFF  # MSI-X vector (VIRTIO_MSI_NO_VECTOR)


class SplitQueue:
    """A split virtqueue in guest RAM, used by one device thread."""

    def __init__(
        self,
        memory: GuestMemory,
        size: int,
        desc: int,
        avail: int,
        used: int,
        *,
        event_idx: bool = False,
        indirect: bool = False,
    ) -> None:
        if not 1 <= size <= MAX_QUEUE_SIZE or size & (size - 1):
            raise QueueError(f"queue size {size} is not a power of two in 1..{MAX_QUEUE_SIZE}")
        if desc % DESC_ALIGN or avail % AVAIL_ALIGN or used % USED_ALIGN:
            raise QueueError(f"misaligned rings: desc {desc:#x}, avail {avail:#x}, used {used:#x}")
        desc_len, avail_len, used_len = ring_sizes(size, event_idx)
        try:
            self._desc = memory.view(desc, desc_len)
            self._avail = memory.view(avail, avail_len)
            self._used = memory.view(used, used_len)
        except GuestMemoryError as e:
            raise QueueError(f"ring outside guest RAM: {e}") from None
        # Single-load/single-store views (see "Atomicity" above): the available ring as u16s (flags, idx,
        # ring[size], used_event), the used ring as u16s (flags, idx, ..., avail_event at the end) and,
        # without the trailing avail_event, as u32s (flags|idx, then id, len of each element).
        self._avail16 = self._avail.cast("H")
        self._used16 = self._used.cast("H")
        self._used32 = self._used[: 4 + 8 * size].cast("I")
        self._memory = memory
        # The hot path slices RAM below the MMIO hole directly (what GuestMemory.view does, minus the call
        # and the region search): every buffer of a small guest lies there.
        low = memory.regions[0] if memory.regions and memory.regions[0].gpa == 0 else None
        self._low_ram = low.view if low is not None else memoryview(b"")
        self._low_end = low.size if low is not None else 0
        # For devices that hand buffers to the kernel by address (pop_readable): where that RAM is mapped,
        # and the RAM as u16s (a buffer's first two bytes in one load).
        self.low_ram_address = low.host_address if low is not None else 0
        self._low_ram16 = self._low_ram[: len(self._low_ram) & ~1].cast("H")
        # The descriptor table as u64s (single loads): addr, then len | flags << 32 | next << 48.
        self._desc64 = self._desc.cast("Q")
        self.size = size
        self._mask = size - 1
        self.event_idx = event_idx
        self.indirect = indirect
        self._used_event_index = 2 + size  # in u16s
        self._avail_event_index = 2 + 4 * size  # in u16s
        self.next_avail = 0  # the driver's next available-ring entry we will read
        self.next_used = 0  # our used index
        self._signalled_used = 0  # used index when the driver was last considered for an interrupt
        self._suppressed = False  # VIRTQ_USED_F_NO_NOTIFY set (without EVENT_IDX)

    # --- Taking requests -----------------------------------------------------------------------------
    def pending(self) -> int:
        """How many chains the driver has made available that we have not popped."""
        return (int(self._avail16[1]) - self.next_avail) & 0xFFFF

    def pop(self) -> DescriptorChain | None:
        """The next available chain, validated, or None when the driver has made none available."""
        avail16 = self._avail16
        pending = (avail16[1] - self.next_avail) & 0xFFFF
        if pending == 0:
            return None
        if pending > self.size:
            raise QueueError(f"available index is {pending} ahead of the device, more than the queue size")
        head: int = avail16[2 + (self.next_avail & self._mask)]
        self.next_avail = (self.next_avail + 1) & 0xFFFF
        if head < self.size:
            # The common chain, one direct descriptor in low RAM, without the general walk.
            addr, length, flags, _next = _DESC.unpack_from(self._desc, DESCRIPTOR_SIZE * head)
            if not flags & _CHAINED and addr + length <= self._low_end:
                buffer = self._low_ram[addr : addr + length]
                if flags & VIRTQ_DESC_F_WRITE:
                    return DescriptorChain(head, [], [buffer], 0, length)
                return DescriptorChain(head, [buffer], [], length, 0)
        return self._walk(head)

    def _walk(self, head: int) -> DescriptorChain:
        table = self._desc
        table_size = self.size
        if head >= table_size:
            raise QueueError(f"head descriptor {head} is outside the queue of {table_size}")
        view = self._memory.view
        low_ram, low_end = self._low_ram, self._low_end
        readable: list[memoryview] = []
        writable: list[memoryview] = []
        r_len = w_len = 0
        index = head
        budget = table_size  # a chain visits each descriptor of its table at most once
        in_indirect = False
        while True:
            if budget == 0:
                raise QueueError(f"descriptor chain from head {head} is longer than its table (a loop)")
            budget -= 1
            addr, length, flags, next_index = _DESC.unpack_from(table, DESCRIPTOR_SIZE * index)
            if flags & VIRTQ_DESC_F_INDIRECT:
                if not self.indirect:
                    raise QueueError("indirect descriptor without VIRTIO_F_INDIRECT_DESC")
                if in_indirect:
                    raise QueueError("indirect descriptor inside an indirect table")
                if flags & VIRTQ_DESC_F_NEXT:
                    raise QueueError("indirect descriptor with the NEXT flag")
                count, rest = divmod(length, DESCRIPTOR_SIZE)
                if rest or not 1 <= count <= MAX_INDIRECT_DESCRIPTORS:
                    raise QueueError(f"indirect table of {length} bytes")
                try:
                    table = view(addr, length)
                except GuestMemoryError as e:
                    raise QueueError(f"indirect table outside guest RAM: {e}") from None
                table_size = budget = count
                index = 0
                in_indirect = True
                continue
            if addr + length <= low_end:
                buffer = low_ram[addr : addr + length]
            else:
                try:
                    buffer = view(addr, length)
                except GuestMemoryError as e:
                    raise QueueError(f"buffer outside guest RAM: {e}") from None
            if flags & VIRTQ_DESC_F_WRITE:
                writable.append(buffer)
                w_len += length
            elif writable:
                raise QueueError("device-readable buffer after a device-writable one")
            else:
                readable.append(buffer)
                r_len += length
            if not flags & VIRTQ_DESC_F_NEXT:
                return DescriptorChain(head, readable, writable, r_len, w_len)
            if next_index >= table_size:
                raise QueueError(f"next descriptor {next_index} is outside its table of {table_size}")
            index = next_index

    def pop_readable(
        self, limit: int, min_len: int, max_len: int, header_mask: int = 0
    ) -> tuple[list[int], list[int], list[int]]:
        """Pop, in order and up to ``limit``, the available chains that are each one direct device-readable
        descriptor of ``min_len..max_len`` bytes in the RAM below the MMIO hole whose first two bytes (a
        little-endian u16) have none of ``header_mask``'s bits set; returns their heads, the **host**
        addresses of their buffers and their lengths.  Stops, without popping it, at the first chain that
        is anything else (:meth:`pop` then takes it, or reports the broken ring).

        The batch form of :meth:`pop`, for devices that hand whole buffers to the kernel by address
        (virtio-net transmit, whose ``header_mask`` picks the frames it sends without a closer look):
        every ``[address, address + length)`` lies inside guest RAM, at ``low_ram_address + gpa``."""
        if min_len < 2 or max_len >= 1 << 32:
            raise ValueError(f"buffer lengths {min_len}..{max_len} are not within 2..2**32-1")
        heads: list[int] = []
        addresses: list[int] = []
        lengths: list[int] = []
        avail16 = self._avail16
        pending = (avail16[1] - self.next_avail) & 0xFFFF
        if pending > self.size:
            raise QueueError(f"available index is {pending} ahead of the device, more than the queue size")
        count = min(pending, limit)
        if count <= 0:
            return heads, addresses, lengths
        desc64, ram, ram16, base = self._desc64, self._low_ram, self._low_ram16, self.low_ram_address
        size, low_end = self.size, self._low_end
        mask0, mask1 = header_mask & 0xFF, header_mask >> 8 & 0xFF
        add_address, add_length = addresses.append, lengths.append
        chunk = _PROBE  # a few entries first: a ring of other chains costs little here
        while True:
            candidates = self._avail_heads(self.next_avail + len(heads), min(chunk, count - len(heads)))
            if max(candidates) >= size:  # up to the head outside the table, which pop() reports
                candidates = list(takewhile(size.__gt__, candidates))
            for head in candidates:
                # Two single loads, each field read once: addr, then len | flags << 32 | next << 48.
                # With the flags (bits 32..47) in it, a length is in range only when they are 0.
                at = head << 1
                addr = desc64[at]
                length = desc64[at + 1] & 0xFFFFFFFFFFFF
                if not min_len <= length <= max_len or addr + length > low_end:
                    break
                if addr & 1:
                    if ram[addr] & mask0 or ram[addr + 1] & mask1:
                        break
                elif ram16[addr >> 1] & header_mask:  # one load for both bytes
                    break
                add_address(base + addr)
                add_length(length)
            taken = len(lengths) - len(heads)
            heads += candidates[:taken]
            if taken < chunk or len(heads) == count:
                break
            chunk = count
        self.next_avail = (self.next_avail + len(heads)) & 0xFFFF
        return heads, addresses, lengths

    def _avail_heads(self, index: int, count: int) -> list[int]:
        """``count`` entries of the available ring from ``index`` on (wrapping around its end)."""
        at = index & self._mask
        heads: list[int] = self._avail16[2 + at : 2 + min(at + count, self.size)].tolist()
        if len(heads) < count:
            heads += self._avail16[2 : 2 + count - len(heads)].tolist()
        return heads

    def undo_pop(self) -> None:
        """Give back the last popped chain (a device that cannot take it now retries it later)."""
        self.next_avail = (self.next_avail - 1) & 0xFFFF

    # --- Returning them ------------------------------------------------------------------------------
    def add_used(self, chain: DescriptorChain, written: int) -> None:
        """Return ``chain`` to the driver with ``written`` bytes stored in its writable buffers."""
        if written > chain.writable_len:
            written = chain.writable_len
        at = 1 + 2 * (self.next_used & self._mask)
        used32 = self._used32
        used32[at] = chain.head
        used32[at + 1] = written
        self.next_used = (self.next_used + 1) & 0xFFFF
        self._used16[1] = self.next_used  # after the element: x86 keeps stores in order

    def add_used_readable(self, heads: list[int]) -> None:
        """Return chains without device-writable buffers (written length 0), in the order given: heads the
        device got from :meth:`pop_readable`, at most a queue's worth."""
        count = len(heads)
        if count == 0:
            return
        if count > self.size:
            raise QueueError(f"{count} chains returned at once to a queue of {self.size}")
        elements = array("I", bytes(8 * count))  # {id, len} pairs, len 0
        elements[0::2] = array("I", heads)
        start = self.next_used & self._mask
        first = min(count, self.size - start)
        used32 = self._used32
        used32[1 + 2 * start : 1 + 2 * (start + first)] = elements[: 2 * first]
        if first < count:
            used32[1 : 1 + 2 * (count - first)] = elements[2 * first :]
        self.next_used = (self.next_used + count) & 0xFFFF
        self._used16[1] = self.next_used  # after the elements: x86 keeps stores in order

    def needs_interrupt(self) -> bool:
        """Whether the driver wants an interrupt for what was added since the last call (§2.7.10)."""
        new = self.next_used
        old = self._signalled_used
        if new == old:
            return False
        self._signalled_used = new
        if self.event_idx:
            full_barrier()  # our used index store must be visible before we read used_event
            used_event: int = self._avail16[self._used_event_index]
            return ((new - used_event - 1) & 0xFFFF) < ((new - old) & 0xFFFF)
        flags: int = self._avail16[0]
        return not flags & VIRTQ_AVAIL_F_NO_INTERRUPT

    def suppress_notifications(self) -> None:
        """Ask the driver not to kick while the device drains the ring, until :meth:`arm_notification`.

        With EVENT_IDX nothing is needed: ``avail_event`` still names the entry that caused this kick, so
        the driver's later entries do not kick (§2.7.10).  Without it, VIRTQ_USED_F_NO_NOTIFY (§2.7.7.2;
        advice only: a driver may kick anyway)."""
        if not self.event_idx and not self._suppressed:
            self._used16[0] = VIRTQ_USED_F_NO_NOTIFY
            self._suppressed = True

    def arm_notification(self) -> bool:
        """Ask the driver to kick for the next available chain; True if one arrived meanwhile (pop again)."""
        if self.event_idx:
            self._used16[self._avail_event_index] = self.next_avail
            full_barrier()  # avail_event must be visible before we re-read the available index
        elif self._suppressed:
            self._used16[0] = 0
            self._suppressed = False
            full_barrier()  # the cleared flag must be visible before we re-read the available index
        avail_idx: int = self._avail16[1]
        return avail_idx != self.next_avail

    def release(self) -> None:
        """Drop the views of guest RAM (on reset), so the memory can be unmapped."""
        for view in (
            self._avail16,
            self._used16,
            self._used32,
            self._desc64,
            self._low_ram16,
            self._desc,
            self._avail,
            self._used,
        ):
            view.release()
        self._low_ram = memoryview(b"")  # GuestMemory's own view: dropped, not released
        self._low_end = self.low_ram_address = 0
