"""virtio-pci, modern interface only (virtio 1.2 §4.1): a PCI function whose capabilities point into one BAR.

Config space: vendor 0x1AF4, device 0x1040 + the virtio device type, revision 1 (§4.1.2), no INTx
(Interrupt Pin 0: MSI-X only), and a capability list::

    0x40 common cfg   0x50 notify cfg   0x64 ISR   0x74 device cfg   0x84 PCI cfg access   0x98 MSI-X

BAR 0 is 64-bit, non-prefetchable memory, :data:`BAR_SIZE` bytes, placed by the VMM in the PCI MMIO window
(as firmware would) with memory decoding on::

    0x0000 common configuration (struct virtio_pci_common_cfg, §4.1.4.3)
    0x1000 ISR status (1 byte, read-to-clear)
    0x2000 device-specific configuration
    0x3000 notifications: queue N at 0x3000 + 4 * N (notify_off_multiplier 4)
    0x4000 MSI-X table, 0x5000 MSI-X PBA

Notifications never reach Python: each queue's notify address is a KVM ioeventfd that the device's loop
thread waits on.  If the guest moves the BAR, the ioeventfds stay where they were (the hypervisor interface
has no de-assignment yet) and notifications at the new address take the MMIO exit path, which signals the
same eventfd: slower, still correct.

Guest misprogramming (a bad queue size or ring address at DRIVER_OK, DRIVER_OK without FEATURES_OK, a
broken ring later) sets DEVICE_NEEDS_RESET and sends a config-change interrupt; the VM keeps running.
"""

from __future__ import annotations

import os

from aovisor.devices.pci import config_space as pci
from aovisor.devices.pci.config_space import ConfigSpace
from aovisor.devices.pci.msix import (
    CAP_ID_MSIX,
    CONTROL_ENABLE,
    CONTROL_FUNCTION_MASK,
    NO_VECTOR,
    MsixVectors,
)
from aovisor.lean_typing import TYPE_CHECKING
from aovisor.logs import get_logger
from aovisor.virtio.transport.common import VirtioTransport, feature_word

if TYPE_CHECKING:
    from aovisor.devices.bus import Bus
    from aovisor.hypervisor.base import Vm
    from aovisor.memory import GuestMemory
    from aovisor.virtio.device import VirtioDevice

log = get_logger(__name__)

VIRTIO_PCI_VENDOR_ID = 0x1AF4
VIRTIO_PCI_DEVICE_ID_BASE = 0x1040
VIRTIO_PCI_REVISION = 1
VIRTIO_PCI_SUBSYSTEM_ID = 0x40  # non-transitional devices use 0x40 or above (§4.1.2.1)

# Capability types (struct virtio_pci_cap.cfg_type, §4.1.4).
CAP_COMMON_CFG = 1
CAP_NOTIFY_CFG = 2
CAP_ISR_CFG = 3
CAP_DEVICE_CFG = 4
CAP_PCI_CFG = 5
CAP_ID_VENDOR = 0x09

# Capability offsets in config space.
CAP_COMMON_AT = 0x40
CAP_NOTIFY_AT = 0x50
CAP_ISR_AT = 0x64
CAP_DEVICE_AT = 0x74
CAP_PCI_CFG_AT = 0x84
CAP_MSIX_AT = 0x98
PCI_CFG_DATA_AT = CAP_PCI_CFG_AT + 16
STATUS_CAPABILITIES_LIST = 0x10

# BAR 0 layout.
BAR_INDEX = 0
BAR_SIZE = 0x8000
COMMON_AT = 0x0000
COMMON_SIZE = 0x38
ISR_AT = 0x1000
DEVICE_CFG_AT = 0x2000
DEVICE_CFG_MAX = 0x1000
NOTIFY_AT = 0x3000
NOTIFY_MULTIPLIER = 4
MSIX_TABLE_AT = 0x4000
MSIX_PBA_AT = 0x5000
REGION_SIZE = 0x1000

# struct virtio_pci_common_cfg (§4.1.4.3): offset -> (name, width).
_COMMON_FIELDS: dict[int, tuple[str, int]] = {
    0x00: ("device_feature_select", 4),
    0x04: ("device_feature", 4),
    0x08: ("driver_feature_select", 4),
    0x0C: ("driver_feature", 4),
    0x10: ("config_msix_vector", 2),
    0x12: ("num_queues", 2),
    0x14: ("device_status", 1),
    0x15: ("config_generation", 1),
    0x16: ("queue_select", 2),
    0x18: ("queue_size", 2),
    0x1A: ("queue_msix_vector", 2),
    0x1C: ("queue_enable", 2),
    0x1E: ("queue_notify_off", 2),
    0x20: ("queue_desc", 8),
    0x28: ("queue_driver", 8),
    0x30: ("queue_device", 8),
}

# Class codes (base class, subclass, programming interface).
# net: Ethernet controller; block: other mass storage; console and vsock: other communication controller;
# rng: unclassified device (what QEMU gives each).
_CLASS_CODES = {1: 0x02_00_00, 2: 0x01_80_00, 3: 0x07_80_00, 4: 0xFF_00_00, 19: 0x07_80_00}


class VirtioPciDevice(VirtioTransport, ConfigSpace):
    """A virtio device behind the modern virtio-pci transport; also the BusDevice of its BAR."""

    def __init__(
        self,
        device: VirtioDevice,
        *,
        memory: GuestMemory,
        hv_vm: Vm,
        mmio_bus: Bus,
        bar_address: int,
        gsis: list[int],
    ) -> None:
        n_queues = len(device.queue_max_sizes)
        n_vectors = n_queues + 1
        if len(device.config) > DEVICE_CFG_MAX:
            raise ValueError(f"{device.name}: config space of {len(device.config)} bytes is too large")
        if len(gsis) != n_vectors:
            raise ValueError(f"{device.name}: needs {n_vectors} GSIs, got {len(gsis)}")
        ConfigSpace.__init__(
            self,
            vendor_id=VIRTIO_PCI_VENDOR_ID,
            device_id=VIRTIO_PCI_DEVICE_ID_BASE + device.device_type,
            class_code=_CLASS_CODES.get(device.device_type, 0xFF_00_00),
            revision_id=VIRTIO_PCI_REVISION,
            subsystem_vendor_id=VIRTIO_PCI_VENDOR_ID,
            subsystem_id=VIRTIO_PCI_SUBSYSTEM_ID,
            interrupt_pin=0,
        )
        VirtioTransport.__init__(self, device, memory)
        self._hv_vm = hv_vm
        self._bus = mmio_bus
        # One eventfd per MSI-X vector (irqfds); the queues' notification eventfds are the transport's.
        self.irq_fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(n_vectors)]
        self.msix = MsixVectors(n_vectors, self.irq_fds, hv_vm.set_msi_route, gsis)
        self._reset_registers()
        self.mapped_at: int | None = None

        self._define_capabilities(n_queues, n_vectors)
        self.set_bar(BAR_INDEX, BAR_SIZE, is_64bit=True)
        ConfigSpace.write_config(self, pci.BAR0, 4, bar_address & 0xFFFF_FFFF)
        ConfigSpace.write_config(self, pci.BAR0 + 4, 4, bar_address >> 32)
        ConfigSpace.write_config(self, pci.COMMAND, 2, 0x0002)  # memory decoding on, as firmware leaves it
        for gsi, fd in zip(gsis, self.irq_fds, strict=True):
            hv_vm.register_irqfd(fd, gsi)
        for index, fd in enumerate(self.kick_fds):
            hv_vm.register_ioeventfd(fd, bar_address + NOTIFY_AT + NOTIFY_MULTIPLIER * index, 2)
        self._update_mapping()

    def _reset_registers(self) -> None:
        super()._reset_registers()
        self.device_feature_select = 0
        self.driver_feature_select = 0
        self.config_vector = NO_VECTOR
        self.queue_select = 0

    # --- Config space --------------------------------------------------------------------------------
    def _define_capabilities(self, n_queues: int, n_vectors: int) -> None:
        self.set_status_bits(pci.STATUS, 2, STATUS_CAPABILITIES_LIST)
        self.define(pci.CAPABILITIES_POINTER, 1, CAP_COMMON_AT)
        device_cfg = len(self.device.config)
        chain = [
            (CAP_COMMON_AT, CAP_COMMON_CFG, COMMON_AT, COMMON_SIZE, 16),
            (CAP_NOTIFY_AT, CAP_NOTIFY_CFG, NOTIFY_AT, NOTIFY_MULTIPLIER * n_queues, 20),
            (CAP_ISR_AT, CAP_ISR_CFG, ISR_AT, 1, 16),
        ]
        if device_cfg:
            chain.append((CAP_DEVICE_AT, CAP_DEVICE_CFG, DEVICE_CFG_AT, device_cfg, 16))
        chain.append((CAP_PCI_CFG_AT, CAP_PCI_CFG, 0, 0, 20))
        for i, (at, cfg_type, offset, length, cap_len) in enumerate(chain):
            next_at = chain[i + 1][0] if i + 1 < len(chain) else CAP_MSIX_AT
            self.define(at, 1, CAP_ID_VENDOR)
            self.define(at + 1, 1, next_at)
            self.define(at + 2, 1, cap_len)
            self.define(at + 3, 1, cfg_type)
            self.define(at + 4, 1, BAR_INDEX)
            self.define(at + 8, 4, offset)
            self.define(at + 12, 4, length)
        self.define(CAP_NOTIFY_AT + 16, 4, NOTIFY_MULTIPLIER)
        # The PCI cfg access capability: the driver picks bar/offset/length, then uses pci_cfg_data.
        self.define(CAP_PCI_CFG_AT + 4, 1, 0, writable=0xFF)
        self.define(CAP_PCI_CFG_AT + 8, 4, 0, writable=0xFFFF_FFFF)
        self.define(CAP_PCI_CFG_AT + 12, 4, 0, writable=0xFFFF_FFFF)
        # MSI-X: Message Control (table size - 1; enable and function mask writable), table and PBA in BAR 0.
        self.define(CAP_MSIX_AT, 1, CAP_ID_MSIX)
        self.define(CAP_MSIX_AT + 1, 1, 0)
        self.define(CAP_MSIX_AT + 2, 2, n_vectors - 1, writable=CONTROL_ENABLE | CONTROL_FUNCTION_MASK)
        self.define(CAP_MSIX_AT + 4, 4, MSIX_TABLE_AT | BAR_INDEX)
        self.define(CAP_MSIX_AT + 8, 4, MSIX_PBA_AT | BAR_INDEX)

    def read_config(self, reg: int, size: int) -> int:
        with self._lock:
            if PCI_CFG_DATA_AT <= reg < PCI_CFG_DATA_AT + 4 and pci.valid_access(reg, size):
                value = self._pci_cfg_access(None)
                shift = 8 * (reg - PCI_CFG_DATA_AT)
                return (value >> shift) & ((1 << (8 * size)) - 1)
            return super().read_config(reg, size)

    def write_config(self, reg: int, size: int, value: int) -> None:
        with self._lock:
            if PCI_CFG_DATA_AT <= reg < PCI_CFG_DATA_AT + 4 and pci.valid_access(reg, size):
                self._pci_cfg_access(value << (8 * (reg - PCI_CFG_DATA_AT)))
                return
            super().write_config(reg, size, value)
            touches_command = reg < pci.COMMAND + 2 and reg + size > pci.COMMAND
            if touches_command or (reg < pci.BAR0 + 8 and reg + size > pci.BAR0):
                self._update_mapping()
            elif reg < CAP_MSIX_AT + 4 and reg + size > CAP_MSIX_AT + 2:
                control = self.get(CAP_MSIX_AT + 2, 2)
                self.msix.set_control(bool(control & CONTROL_ENABLE), bool(control & CONTROL_FUNCTION_MASK))

    def _pci_cfg_access(self, write_value: int | None) -> int:
        """A BAR access through VIRTIO_PCI_CAP_PCI_CFG (§4.1.4.9): bar, offset and length from the cap."""
        bar = self.get(CAP_PCI_CFG_AT + 4, 1)
        offset = self.get(CAP_PCI_CFG_AT + 8, 4)
        length = self.get(CAP_PCI_CFG_AT + 12, 4)
        if bar != BAR_INDEX or length not in (1, 2, 4) or offset % length or offset + length > BAR_SIZE:
            return 0
        if write_value is None:
            return self.bar_read(offset, length)
        self.bar_write(offset, length, write_value & ((1 << (8 * length)) - 1))
        return 0

    def _update_mapping(self) -> None:
        """Put BAR 0 on the MMIO bus where the guest programmed it, while memory decoding is on."""
        wanted: int | None = None
        if self.get(pci.COMMAND, 2) & 0x0002:
            address = self.bar_address(BAR_INDEX)
            if address and address + BAR_SIZE <= 1 << 64:
                wanted = address
        if wanted == self.mapped_at:
            return
        if self.mapped_at is not None:
            self._bus.remove(self.mapped_at)
            self.mapped_at = None
        if wanted is not None:
            try:
                self._bus.insert(self, wanted, BAR_SIZE)
            except ValueError as e:  # overlaps another device: the BAR decodes nothing
                log.warning("%s: BAR 0 at %#x not mapped: %s", self.device.name, wanted, e)
                return
            self.mapped_at = wanted

    # --- BAR 0 (BusDevice) ---------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        return self.bar_read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.bar_write(offset, size, value)

    def bar_read(self, offset: int, size: int) -> int:
        region, at = divmod(offset, REGION_SIZE)
        if region == COMMON_AT // REGION_SIZE:
            with self._lock:
                return self._common_read(at, size)
        if region == ISR_AT // REGION_SIZE:
            if at != 0:
                return 0
            with self._isr_lock:  # reading clears it (§4.1.4.5)
                value, self.interrupt_status = self.interrupt_status, 0
            return value
        if region == DEVICE_CFG_AT // REGION_SIZE:
            return self.device.read_config(at, size)
        if offset >= MSIX_TABLE_AT and offset < MSIX_TABLE_AT + self.msix.table_size:
            return self.msix.read_table(offset - MSIX_TABLE_AT, size)
        if offset >= MSIX_PBA_AT and offset < MSIX_PBA_AT + self.msix.pba_size:
            return self.msix.read_pba(offset - MSIX_PBA_AT, size)
        return 0

    def bar_write(self, offset: int, size: int, value: int) -> None:
        region, at = divmod(offset, REGION_SIZE)
        if region == NOTIFY_AT // REGION_SIZE:
            # Only when the ioeventfd did not catch it (another access width, or a moved BAR).
            index, rest = divmod(at, NOTIFY_MULTIPLIER)
            if rest == 0 and index < len(self.kick_fds):
                os.eventfd_write(self.kick_fds[index], 1)
        elif region == COMMON_AT // REGION_SIZE:
            with self._lock:
                self._common_write(at, size, value)
        elif region == DEVICE_CFG_AT // REGION_SIZE:
            self.device.write_config(at, size, value)
        elif offset >= MSIX_TABLE_AT and offset < MSIX_TABLE_AT + self.msix.table_size:
            self.msix.write_table(offset - MSIX_TABLE_AT, size, value)

    # --- Common configuration ------------------------------------------------------------------------
    def _field(self, at: int, size: int) -> tuple[str, int] | None:
        """The field and byte shift of an access: exact width, or one 32-bit half of a 64-bit field."""
        field = _COMMON_FIELDS.get(at)
        if field is not None and field[1] == size:
            return field[0], 0
        if size == 4:
            if field is not None and field[1] == 8:
                return field[0], 0
            high = _COMMON_FIELDS.get(at - 4)
            if high is not None and high[1] == 8:
                return high[0], 32
        return None

    def _common_read(self, at: int, size: int) -> int:
        found = self._field(at, size)
        if found is None:
            return 0
        name, shift = found
        q = self._queue(self.queue_select)
        value: int
        if name == "device_feature":
            value = feature_word(self.device.avail_features, self.device_feature_select)
        elif name == "driver_feature":
            value = feature_word(self.driver_features, self.driver_feature_select)
        elif name == "device_status":
            value = self.device_status
        elif name == "num_queues":
            value = len(self.queues)
        elif name == "config_generation":
            value = 0
        elif name == "config_msix_vector":
            value = self.config_vector
        elif name in ("device_feature_select", "driver_feature_select", "queue_select"):
            value = getattr(self, name)
        elif q is None:
            value = 0  # a queue that does not exist reads as size 0 (§4.1.4.3)
        elif name == "queue_size":
            value = q.size
        elif name == "queue_msix_vector":
            value = q.vector
        elif name == "queue_enable":
            value = int(q.enabled)
        elif name == "queue_notify_off":
            value = self.queue_select
        else:  # queue_desc, queue_driver, queue_device
            value = getattr(q, name.removeprefix("queue_"))
        return (value >> shift) & ((1 << (8 * size)) - 1)

    def _common_write(self, at: int, size: int, value: int) -> None:
        found = self._field(at, size)
        if found is None:
            log.debug("%s: ignored common cfg write %#x/%d", self.device.name, at, size)
            return
        name, shift = found
        if name == "device_status":
            self._write_status(value & 0xFF)
        elif name in ("device_feature_select", "driver_feature_select"):
            setattr(self, name, value)
        elif name == "driver_feature":
            self._write_driver_features(self.driver_feature_select, value)
        elif name == "config_msix_vector":
            self.config_vector = value if value < self.msix.count else NO_VECTOR
        elif name == "queue_select":
            self.queue_select = value
        else:
            self._queue_write(name, shift, size, value)

    def _queue_write(self, name: str, shift: int, size: int, value: int) -> None:
        q = self._writable_queue(self.queue_select)
        if q is None:
            return
        if name == "queue_size":
            q.size = value
        elif name == "queue_msix_vector":
            q.vector = value if value < self.msix.count else NO_VECTOR
        elif name == "queue_enable":
            if value == 1:  # writing 0 is not allowed to the driver (§4.1.4.3.2): ignored
                q.enabled = True
        elif name in ("queue_desc", "queue_driver", "queue_device"):
            attr = name.removeprefix("queue_")
            old: int = getattr(q, attr)
            if size == 8:
                new = value
            elif shift == 0:  # the low half of a 64-bit field written as two 32-bit halves
                new = (old & ~0xFFFF_FFFF) | value
            else:
                new = (old & 0xFFFF_FFFF) | (value << 32)
            setattr(q, attr, new)
        # queue_notify_off is read-only

    # --- Interrupts: the ISR bit is already set; the queue's or the config MSI-X vector, if any ------
    def _send_queue_interrupt(self, index: int) -> None:
        q = self._queue(index)
        vector = q.vector if q is not None else NO_VECTOR
        if vector != NO_VECTOR:
            self.msix.trigger(vector)

    def _send_config_interrupt(self) -> None:
        if self.config_vector != NO_VECTOR:
            self.msix.trigger(self.config_vector)

    # --- Teardown ------------------------------------------------------------------------------------
    def close(self) -> None:
        super().close()
        for fd in self.irq_fds:
            os.close(fd)
        self.irq_fds = []
