"""PCI bus 0 behind configuration mechanism #1 (ports 0xCF8-0xCFF), and the reset control register 0xCF9.

One device covers the 8 ports (PCI Local Bus Specification 3.0, §3.2.2.3.2):

* offset 0, 32-bit only: CONFIG_ADDRESS — bit 31 enable, bits 23:16 bus, 15:11 device, 10:8 function,
  7:2 dword register.  Reserved bits 30:24 and 1:0 read as 0.
* offsets 4-7: CONFIG_DATA — 1-, 2- or 4-byte windows onto the addressed dword.
* offset 1, 8-bit only: the reset control register of Intel chipsets (ICH/PCH datasheets, "RST_CNT"):
  bit 1 SYS_RST chooses a hard reset, writing bit 2 RST_CPU starts the reset, bit 3 FULL_RST.  Linux's
  ``reboot=pci`` writes 0x02 then 0x06 (or 0x0E).  Any write with bit 2 set calls ``reset()``.

Byte and word accesses at offsets 0-3 other than that one are ordinary (unclaimed) I/O on real chipsets;
they read all-ones and are ignored, and never disturb CONFIG_ADDRESS.

Device 0 is the host bridge; other slots are filled with :meth:`PciRoot.add_device`.  Only bus 0 exists,
and only function 0 of each slot (a multi-function device would need a per-function table).  Accesses to
absent devices read all-ones, the "master abort" the OS probes for.
"""

from __future__ import annotations

from collections.abc import Callable

from aovisor.devices.pci.config_space import ConfigSpace, PciFunction, valid_access
from aovisor.logs import get_logger

log = get_logger(__name__)

CONFIG_ADDRESS = 0  # offsets from 0xCF8
RESET_CONTROL = 1  # 0xCF9
CONFIG_DATA = 4  # 0xCFC
PORT_SPAN = 8

ADDRESS_ENABLE = 0x8000_0000
ADDRESS_MASK = 0x80FF_FFFC  # enable, bus, device, function, dword register
RESET_CONTROL_SYS_RST = 0x02
RESET_CONTROL_RST_CPU = 0x04
RESET_CONTROL_FULL_RST = 0x08

SLOT_COUNT = 32
HOST_BRIDGE_SLOT = 0

# The host bridge: Intel's vendor ID with the device ID Cloud Hypervisor uses for its virtual PCIe host
# bridge (0x0D57), class 06/00/00 "host bridge".  Linux's pci_sanity_check() accepts mechanism #1 once it
# sees a host bridge class or an Intel vendor ID on bus 0.
HOST_BRIDGE_VENDOR_ID = 0x8086
HOST_BRIDGE_DEVICE_ID = 0x0D57
CLASS_HOST_BRIDGE = 0x06_00_00


def host_bridge() -> ConfigSpace:
    return ConfigSpace(
        vendor_id=HOST_BRIDGE_VENDOR_ID, device_id=HOST_BRIDGE_DEVICE_ID, class_code=CLASS_HOST_BRIDGE
    )


class PciRoot:
    """Bus 0 with the host bridge at slot 0; ``reset()`` is called on a reset through 0xCF9."""

    def __init__(self, reset: Callable[[], None]) -> None:
        self._reset = reset
        self._address = 0
        self._reset_control = 0
        self._functions: dict[int, PciFunction] = {HOST_BRIDGE_SLOT: host_bridge()}

    # --- Building the bus ----------------------------------------------------------------------------
    def add_device(self, slot: int, device: PciFunction) -> None:
        """Attach ``device`` as function 0 of ``slot`` (1-31) on bus 0."""
        if not 0 <= slot < SLOT_COUNT:
            raise ValueError(f"PCI slot {slot} out of range 0-{SLOT_COUNT - 1}")
        if slot in self._functions:
            raise ValueError(f"PCI slot {slot} is already in use")
        self._functions[slot] = device

    def remove_device(self, slot: int) -> PciFunction:
        """Detach the device in ``slot`` (not the host bridge) and return it."""
        if slot == HOST_BRIDGE_SLOT or slot not in self._functions:
            raise ValueError(f"no removable PCI device in slot {slot}")
        return self._functions.pop(slot)

    def free_slot(self) -> int:
        """The lowest empty slot; raises ValueError when the bus is full."""
        for slot in range(SLOT_COUNT):
            if slot not in self._functions:
                return slot
        raise ValueError("no free PCI slot on bus 0")

    def device(self, slot: int) -> PciFunction | None:
        return self._functions.get(slot)

    # --- Config access by address (also the entry point for a future ECAM window) --------------------
    def config_read(self, bus: int, slot: int, function: int, reg: int, size: int) -> int:
        target = self._target(bus, slot, function)
        if target is None or not valid_access(reg, size):
            return (1 << (8 * size)) - 1 if 0 < size <= 8 else 0
        return target.read_config(reg, size)

    def config_write(self, bus: int, slot: int, function: int, reg: int, size: int, value: int) -> None:
        target = self._target(bus, slot, function)
        if target is not None and valid_access(reg, size):
            target.write_config(reg, size, value & ((1 << (8 * size)) - 1))

    def _target(self, bus: int, slot: int, function: int) -> PciFunction | None:
        if bus != 0 or function != 0:
            return None
        return self._functions.get(slot)

    # --- BusDevice (ports 0xCF8-0xCFF) --------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset == CONFIG_ADDRESS and size == 4:
            return self._address
        if offset == RESET_CONTROL and size == 1:
            return self._reset_control
        if self._data_window(offset, size):
            return self._config_data_read(offset - CONFIG_DATA, size)
        return (1 << (8 * size)) - 1 if 0 < size <= 8 else 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == CONFIG_ADDRESS and size == 4:
            self._address = value & ADDRESS_MASK
        elif offset == RESET_CONTROL and size == 1:
            self._write_reset_control(value & 0xFF)
        elif self._data_window(offset, size):
            self._config_data_write(offset - CONFIG_DATA, size, value)

    @staticmethod
    def _data_window(offset: int, size: int) -> bool:
        """A 1/2/4-byte access inside CONFIG_DATA, aligned to its size (0xCFD/2 or 0xCFE/4 are not)."""
        byte = offset - CONFIG_DATA
        return size in (1, 2, 4) and 0 <= byte < 4 and byte % size == 0

    def _decode(self, byte: int) -> tuple[int, int, int, int] | None:
        address = self._address
        if not address & ADDRESS_ENABLE:
            return None
        return (address >> 16) & 0xFF, (address >> 11) & 0x1F, (address >> 8) & 0x7, (address & 0xFC) + byte

    def _config_data_read(self, byte: int, size: int) -> int:
        decoded = self._decode(byte)
        if decoded is None:
            return (1 << (8 * size)) - 1
        bus, slot, function, reg = decoded
        return self.config_read(bus, slot, function, reg, size)

    def _config_data_write(self, byte: int, size: int, value: int) -> None:
        decoded = self._decode(byte)
        if decoded is not None:
            bus, slot, function, reg = decoded
            self.config_write(bus, slot, function, reg, size, value)

    def _write_reset_control(self, value: int) -> None:
        # SYS_RST and FULL_RST are plain read/write bits; RST_CPU starts the reset and does not stick.
        self._reset_control = value & (RESET_CONTROL_SYS_RST | RESET_CONTROL_FULL_RST)
        if value & RESET_CONTROL_RST_CPU:
            log.info("guest reset through the reset control register 0xCF9")
            self._reset()
