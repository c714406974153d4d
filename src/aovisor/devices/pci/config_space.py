"""A PCI function's 256-byte configuration space: register values plus which bits the guest may change.

Anything on the PCI root (:class:`aovisor.devices.pci.root.PciRoot`) implements :class:`PciFunction`.  Most
functions use :class:`ConfigSpace` directly or subclass it, overriding ``write_config`` to react after
``super().write_config`` (a BAR moved, MSI-X enabled, ...).  Register layout: PCI Local Bus Specification
3.0, §6.1-6.2 (type 0 header) and §6.2.5 (base address registers).

The root checks every guest access (register offset < 256, size 1/2/4, naturally aligned) before calling a
function; :class:`ConfigSpace` checks again, because functions are also reachable by other paths.  Config
accesses arrive with the PCI root's bus lock held; a function whose state is also touched from elsewhere
(its BARs on the MMIO bus, a device thread) must lock that state itself.
"""

from __future__ import annotations

from aovisor.lean_typing import Protocol

CONFIG_SPACE_SIZE = 256

# Type 0 header offsets (§6.1).
VENDOR_ID = 0x00
DEVICE_ID = 0x02
COMMAND = 0x04
STATUS = 0x06
REVISION_ID = 0x08
CLASS_CODE = 0x09  # 3 bytes: programming interface, subclass, base class
CACHE_LINE_SIZE = 0x0C
LATENCY_TIMER = 0x0D
HEADER_TYPE = 0x0E
BAR0 = 0x10
BAR_COUNT = 6
SUBSYSTEM_VENDOR_ID = 0x2C
SUBSYSTEM_ID = 0x2E
CAPABILITIES_POINTER = 0x34
INTERRUPT_LINE = 0x3C
INTERRUPT_PIN = 0x3D

HEADER_TYPE_MULTI_FUNCTION = 0x80

# COMMAND bits a generic function implements (§6.2.2): I/O space, memory space, bus master, parity error
# response, SERR# enable, interrupt disable.  The rest are hardwired to 0.
COMMAND_WRITABLE = 0x0001 | 0x0002 | 0x0004 | 0x0040 | 0x0100 | 0x0400
# STATUS error bits are write-1-to-clear (§6.2.3): parity, signaled/received aborts, SERR#.
STATUS_WRITE_ONE_TO_CLEAR = 0x0100 | 0x0800 | 0x1000 | 0x2000 | 0x4000 | 0x8000

BAR_IO = 0x1
BAR_MEM_64 = 0x4
BAR_MEM_PREFETCHABLE = 0x8


class PciFunction(Protocol):
    """What the PCI root calls; ``reg`` is the byte offset (< 256, aligned to ``size`` in 1, 2, 4)."""

    def read_config(self, reg: int, size: int) -> int: ...

    def write_config(self, reg: int, size: int, value: int) -> None: ...


def valid_access(reg: int, size: int) -> bool:
    """A config access the hardware can express: 1, 2 or 4 bytes, naturally aligned, inside 256 bytes."""
    return size in (1, 2, 4) and 0 <= reg < CONFIG_SPACE_SIZE and reg % size == 0


class ConfigSpace:
    """A type 0 configuration header; every other byte reads 0 and ignores writes until defined."""

    def __init__(
        self,
        *,
        vendor_id: int,
        device_id: int,
        class_code: int,
        revision_id: int = 0,
        subsystem_vendor_id: int = 0,
        subsystem_id: int = 0,
        interrupt_pin: int = 0,
        multi_function: bool = False,
    ) -> None:
        self._data = bytearray(CONFIG_SPACE_SIZE)
        self._writable = bytearray(CONFIG_SPACE_SIZE)  # bit set: the guest may write this bit
        self._write_one_to_clear = bytearray(CONFIG_SPACE_SIZE)
        self.define(VENDOR_ID, 2, vendor_id)
        self.define(DEVICE_ID, 2, device_id)
        self.define(COMMAND, 2, 0, writable=COMMAND_WRITABLE)
        self.define(STATUS, 2, 0, write_one_to_clear=STATUS_WRITE_ONE_TO_CLEAR)
        self.define(REVISION_ID, 1, revision_id)
        self.define(CLASS_CODE, 3, class_code)
        self.define(CACHE_LINE_SIZE, 1, 0, writable=0xFF)
        self.define(LATENCY_TIMER, 1, 0, writable=0xFF)
        self.define(HEADER_TYPE, 1, HEADER_TYPE_MULTI_FUNCTION if multi_function else 0)
        self.define(SUBSYSTEM_VENDOR_ID, 2, subsystem_vendor_id)
        self.define(SUBSYSTEM_ID, 2, subsystem_id)
        self.define(INTERRUPT_LINE, 1, 0, writable=0xFF)  # a scratch byte for the OS (§6.2.4)
        self.define(INTERRUPT_PIN, 1, interrupt_pin)

    # --- For the function's own code ----------------------------------------------------------------
    def define(
        self, offset: int, size: int, value: int, *, writable: int = 0, write_one_to_clear: int = 0
    ) -> None:
        """Set a register's value and which of its bits the guest may write (or clear by writing 1)."""
        if size <= 0 or offset < 0 or offset + size > CONFIG_SPACE_SIZE:
            raise ValueError(f"config register {offset:#x}+{size} outside the config space")
        end = offset + size
        self._data[offset:end] = (value & _mask(size)).to_bytes(size, "little")
        self._writable[offset:end] = (writable & _mask(size)).to_bytes(size, "little")
        self._write_one_to_clear[offset:end] = (write_one_to_clear & _mask(size)).to_bytes(size, "little")

    def get(self, offset: int, size: int) -> int:
        """The current value of a register (no validation of alignment: for the function's own use)."""
        return int.from_bytes(self._data[offset : offset + size], "little")

    def set_status_bits(self, offset: int, size: int, bits: int) -> None:
        """Set hardware-owned bits (e.g. a write-1-to-clear status bit) regardless of the write mask."""
        current = self.get(offset, size)
        self._data[offset : offset + size] = ((current | bits) & _mask(size)).to_bytes(size, "little")

    def set_bar(
        self, index: int, size: int, *, io: bool = False, prefetchable: bool = False, is_64bit: bool = False
    ) -> None:
        """Declare BAR ``index`` as ``size`` bytes (a power of two) of I/O or memory space.

        A 64-bit memory BAR (``is_64bit``, forced above 2 GiB) also takes BAR ``index + 1`` for the upper
        half.  Sizing works as in hardware (§6.2.5.1): the address bits below ``size`` are not writable, so
        writing all-ones and reading back yields ``~(size - 1)`` plus the read-only type bits.
        """
        if not 0 <= index < BAR_COUNT:
            raise ValueError(f"BAR index {index} out of range")
        if size <= 0 or size & (size - 1):
            raise ValueError(f"BAR size {size:#x} is not a power of two")
        offset = BAR0 + 4 * index
        if io:
            if not 4 <= size <= 0x100:
                raise ValueError(f"I/O BAR size {size:#x} not in 4..256 bytes")  # §6.2.5.1
            self.define(offset, 4, BAR_IO, writable=~(size - 1) & 0xFFFF_FFFC)
            return
        size = max(size, 16)  # a memory BAR decodes at least 16 bytes
        flags = BAR_MEM_PREFETCHABLE if prefetchable else 0
        if not is_64bit and size <= 1 << 31:
            self.define(offset, 4, flags, writable=~(size - 1) & 0xFFFF_FFF0)
            return
        if index + 1 >= BAR_COUNT:
            raise ValueError(f"64-bit BAR {index} needs BAR {index + 1} too")
        mask = ~(size - 1) & 0xFFFF_FFFF_FFFF_FFF0
        self.define(offset, 4, flags | BAR_MEM_64, writable=mask & 0xFFFF_FFFF)
        self.define(offset + 4, 4, 0, writable=mask >> 32)

    def bar_address(self, index: int) -> int:
        """The address the guest programmed into BAR ``index`` (64-bit BARs include the upper half)."""
        low = self.get(BAR0 + 4 * index, 4)
        if low & BAR_IO:
            return low & 0xFFFF_FFFC
        address = low & 0xFFFF_FFF0
        if low & BAR_MEM_64 and index + 1 < BAR_COUNT:
            address |= self.get(BAR0 + 4 * (index + 1), 4) << 32
        return address

    # --- PciFunction --------------------------------------------------------------------------------
    def read_config(self, reg: int, size: int) -> int:
        if not valid_access(reg, size):
            return _mask(size) if 0 < size <= 8 else 0
        return int.from_bytes(self._data[reg : reg + size], "little")

    def write_config(self, reg: int, size: int, value: int) -> None:
        if not valid_access(reg, size):
            return
        for i in range(size):
            byte = (value >> (8 * i)) & 0xFF
            at = reg + i
            writable = self._writable[at]
            clear = self._write_one_to_clear[at] & byte
            if writable or clear:
                self._data[at] = ((self._data[at] & ~writable) | (byte & writable)) & ~clear & 0xFF


def _mask(size: int) -> int:
    return (1 << (8 * size)) - 1
