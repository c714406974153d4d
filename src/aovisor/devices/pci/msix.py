"""MSI-X (PCI Local Bus Specification 3.0, §6.8.2): the capability, the vector table and the PBA.

Each vector owns an eventfd registered as a KVM irqfd on its own GSI; the GSI's route is the MSI message
the guest wrote into the table entry (``set_msi_route``).  Raising a vector is then one eventfd write from
the device thread, with no ioctl and no vCPU exit.  Masking is done here, in the VMM: a vector that is
masked (its entry's mask bit, or the capability's Function Mask) or MSI-X disabled sets its Pending Bit
instead, and the message is sent when the vector is unmasked (§6.8.2.9).

Table entries are 16 bytes: Message Address (low, high), Message Data, Vector Control (bit 0: mask).
The spec allows DWORD and aligned QWORD accesses to the table and PBA; anything else is ignored.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Sequence

from aovisor.logs import get_logger

log = get_logger(__name__)

CAP_ID_MSIX = 0x11
CAP_LENGTH = 12
ENTRY_SIZE = 16
MAX_VECTORS = 2048

# Message Control (capability + 2).
CONTROL_TABLE_SIZE_MASK = 0x07FF
CONTROL_FUNCTION_MASK = 1 << 14
CONTROL_ENABLE = 1 << 15

VECTOR_CONTROL_MASKED = 1

NO_VECTOR = 0xFFFF  # VIRTIO_MSI_NO_VECTOR: a queue or config change raises nothing


class MsixVectors:
    """The vector table and PBA of one function; :meth:`trigger` raises a vector (from any thread)."""

    def __init__(
        self,
        count: int,
        eventfds: Sequence[int],
        set_route: Callable[[int, int, int], None],
        gsis: Sequence[int],
    ) -> None:
        if not 1 <= count <= MAX_VECTORS or len(eventfds) != count or len(gsis) != count:
            raise ValueError(f"MSI-X needs 1-{MAX_VECTORS} vectors with one eventfd and GSI each")
        self.count = count
        self._table = bytearray(ENTRY_SIZE * count)
        for vector in range(count):  # every vector starts masked (§6.8.2.9)
            struct.pack_into("<I", self._table, ENTRY_SIZE * vector + 12, VECTOR_CONTROL_MASKED)
        self._pending = 0  # bit n: vector n is pending
        self._eventfds = tuple(eventfds)
        self._gsis = tuple(gsis)
        self._set_route = set_route
        self._routed: list[tuple[int, int] | None] = [None] * count  # the (address, data) KVM has
        self.enabled = False
        self.function_masked = False
        self._lock = threading.Lock()

    @property
    def table_size(self) -> int:
        return ENTRY_SIZE * self.count

    @property
    def pba_size(self) -> int:
        return 8 * ((self.count + 63) // 64)

    def message(self, vector: int) -> tuple[int, int, bool]:
        """(address, data, masked) of ``vector``'s table entry."""
        lo, hi, data, control = struct.unpack_from("<IIII", self._table, ENTRY_SIZE * vector)
        return (hi << 32) | lo, data, bool(control & VECTOR_CONTROL_MASKED)

    def is_pending(self, vector: int) -> bool:
        return bool(self._pending >> vector & 1)

    # --- The capability's Message Control ------------------------------------------------------------
    def set_control(self, enabled: bool, function_masked: bool) -> None:
        with self._lock:
            self.enabled = enabled
            self.function_masked = function_masked
            self._deliver_unmasked_pending()

    # --- Table and PBA accesses (BAR offsets relative to each structure) -----------------------------
    def read_table(self, offset: int, size: int) -> int:
        if not _valid(offset, size, self.table_size):
            return 0
        with self._lock:
            return int.from_bytes(self._table[offset : offset + size], "little")

    def write_table(self, offset: int, size: int, value: int) -> None:
        if not _valid(offset, size, self.table_size):
            log.debug("MSI-X: ignored table write %#x/%d", offset, size)
            return
        with self._lock:
            self._table[offset : offset + size] = value.to_bytes(size, "little")
            first = offset // ENTRY_SIZE
            last = (offset + size - 1) // ENTRY_SIZE
            for vector in range(first, last + 1):
                self._update_route(vector)
            self._deliver_unmasked_pending()

    def read_pba(self, offset: int, size: int) -> int:
        if not _valid(offset, size, self.pba_size):
            return 0
        with self._lock:
            return (self._pending >> (8 * offset)) & ((1 << (8 * size)) - 1)

    # PBA writes are ignored: its bits are read-only (§6.8.2.10).

    # --- Raising a vector ----------------------------------------------------------------------------
    def trigger(self, vector: int) -> None:
        """Send ``vector``'s message now, or mark it pending while it is masked."""
        if not 0 <= vector < self.count:
            return
        with self._lock:
            if self._deliverable(vector):
                os.eventfd_write(self._eventfds[vector], 1)
            else:
                self._pending |= 1 << vector

    def _deliverable(self, vector: int) -> bool:
        if not self.enabled or self.function_masked:
            return False
        control = struct.unpack_from("<I", self._table, ENTRY_SIZE * vector + 12)[0]
        return not control & VECTOR_CONTROL_MASKED

    def _deliver_unmasked_pending(self) -> None:
        pending = self._pending
        while pending:
            vector = (pending & -pending).bit_length() - 1
            pending &= pending - 1
            if self._deliverable(vector):
                self._pending &= ~(1 << vector)
                os.eventfd_write(self._eventfds[vector], 1)

    def _update_route(self, vector: int) -> None:
        address, data, _masked = self.message(vector)
        if self._routed[vector] != (address, data):
            self._routed[vector] = (address, data)
            self._set_route(self._gsis[vector], address, data)


def _valid(offset: int, size: int, limit: int) -> bool:
    return size in (4, 8) and offset % size == 0 and offset >= 0 and offset + size <= limit
