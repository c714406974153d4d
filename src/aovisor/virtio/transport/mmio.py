"""virtio-mmio, version 2 (virtio 1.2 §4.2): a 4 KiB register window and one interrupt line per device.

The window is a :class:`BusDevice` on the MMIO bus; the guest finds it through the DSDT (:meth:`aml`), as
on QEMU's microvm: a ``LNRO0005`` device whose ``_CRS`` gives the window and the interrupt (Debian's
kernel has no ``virtio_mmio.device=`` command-line support), or with ``--virtio-transport mmio-cmdline``
through that parameter, as on Firecracker.  Registers (§4.2.2)::

    0x000 MagicValue "virt"   0x004 Version 2        0x008 DeviceID     0x00c VendorID
    0x010 DeviceFeatures      0x014 DeviceFeaturesSel 0x020 DriverFeatures 0x024 DriverFeaturesSel
    0x030 QueueSel   0x034 QueueNumMax   0x038 QueueNum   0x044 QueueReady   0x050 QueueNotify
    0x060 InterruptStatus   0x064 InterruptACK   0x070 Status
    0x080/0x084 QueueDesc   0x090/0x094 QueueDriver   0x0a0/0x0a4 QueueDevice
    0x0ac SHMSel   0x0b0/0x0b4 SHMLen (all ones: no shared memory)   0x0fc ConfigGeneration
    0x100 device-specific configuration

All registers are 32-bit; other widths are ignored (§4.2.2.2), except in the configuration space.
Notifications: a write of queue index N to QueueNotify is caught by a KVM ioeventfd with datamatch N, so
it wakes the device thread without an exit to Python.  Interrupts: InterruptStatus bit 0 (used buffer) or
1 (configuration change) is set, then an eventfd registered as an irqfd on the device's IOAPIC pin pulses
it — the DSDT declares the line edge-triggered, active high, so each pulse is one interrupt and a status
the driver has not acknowledged yet needs no level to be kept.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from aovisor.arch.x86_64.acpi import aml
from aovisor.logs import get_logger
from aovisor.virtio.transport.common import VirtioTransport, feature_word

if TYPE_CHECKING:
    from aovisor.hypervisor.base import Vm
    from aovisor.memory import GuestMemory
    from aovisor.virtio.device import VirtioDevice

log = get_logger(__name__)

WINDOW_SIZE = 0x1000
MAGIC = 0x74726976  # "virt"
VERSION = 2
VENDOR_ID = 0x554D4551  # "QEMU", what Linux and QEMU use; the driver does not look at it
ACPI_HID = "LNRO0005"

MAGIC_VALUE = 0x000
VERSION_REG = 0x004
DEVICE_ID = 0x008
VENDOR_ID_REG = 0x00C
DEVICE_FEATURES = 0x010
DEVICE_FEATURES_SEL = 0x014
DRIVER_FEATURES = 0x020
DRIVER_FEATURES_SEL = 0x024
QUEUE_SEL = 0x030
QUEUE_NUM_MAX = 0x034
QUEUE_NUM = 0x038
QUEUE_READY = 0x044
QUEUE_NOTIFY = 0x050
INTERRUPT_STATUS = 0x060
INTERRUPT_ACK = 0x064
STATUS = 0x070
QUEUE_DESC_LOW = 0x080
QUEUE_DESC_HIGH = 0x084
QUEUE_DRIVER_LOW = 0x090
QUEUE_DRIVER_HIGH = 0x094
QUEUE_DEVICE_LOW = 0x0A0
QUEUE_DEVICE_HIGH = 0x0A4
SHM_SEL = 0x0AC
SHM_LEN_LOW = 0x0B0
SHM_LEN_HIGH = 0x0B4
SHM_BASE_LOW = 0x0B8
SHM_BASE_HIGH = 0x0BC
CONFIG_GENERATION = 0x0FC
CONFIG = 0x100

_QUEUE_ADDRESSES = {
    QUEUE_DESC_LOW: ("desc", 0),
    QUEUE_DESC_HIGH: ("desc", 32),
    QUEUE_DRIVER_LOW: ("driver", 0),
    QUEUE_DRIVER_HIGH: ("driver", 32),
    QUEUE_DEVICE_LOW: ("device", 0),
    QUEUE_DEVICE_HIGH: ("device", 32),
}


class VirtioMmioDevice(VirtioTransport):
    """A virtio device behind a virtio-mmio window at ``base``, interrupting on IOAPIC pin ``gsi``."""

    def __init__(self, device: VirtioDevice, *, memory: GuestMemory, hv_vm: Vm, base: int, gsi: int) -> None:
        if len(device.config) > WINDOW_SIZE - CONFIG:
            raise ValueError(f"{device.name}: config space of {len(device.config)} bytes is too large")
        super().__init__(device, memory)
        self.base = base
        self.gsi = gsi
        self.irq_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            hv_vm.register_irqfd(self.irq_fd, gsi)
            for index, fd in enumerate(self.kick_fds):
                hv_vm.register_ioeventfd(fd, base + QUEUE_NOTIFY, 4, datamatch=index)
        except BaseException:
            self.close()
            raise
        self._reset_registers()

    def _reset_registers(self) -> None:
        super()._reset_registers()
        self.device_features_sel = 0
        self.driver_features_sel = 0
        self.queue_sel = 0

    def aml(self, uid: int) -> bytes:
        """The DSDT device: ``_HID "LNRO0005"``, the window and the edge-triggered interrupt."""
        return aml.device(
            f"VR{uid:02X}",
            aml.name("_HID", aml.string(ACPI_HID)),
            aml.name("_UID", aml.integer(uid)),
            aml.name("_CCA", aml.integer(1)),  # cache-coherent DMA (meaningful on Arm; harmless here)
            aml.name(
                "_CRS",
                aml.resource_template(
                    aml.memory32_fixed(self.base, WINDOW_SIZE),
                    aml.interrupt(self.gsi, level=False, active_low=False, shared=False),
                ),
            ),
        )

    # --- BusDevice -----------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset >= CONFIG:
            return self.device.read_config(offset - CONFIG, size)
        if size != 4 or offset % 4:
            return 0
        with self._lock:
            return self._read_register(offset)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset >= CONFIG:
            self.device.write_config(offset - CONFIG, size, value)
            return
        if size != 4 or offset % 4:
            log.debug("%s: ignored %d-byte register write at %#x", self.device.name, size, offset)
            return
        if offset == QUEUE_NOTIFY:  # only when the ioeventfd did not take it
            if value < len(self.kick_fds):
                os.eventfd_write(self.kick_fds[value], 1)
            return
        with self._lock:
            self._write_register(offset, value)

    def _read_register(self, offset: int) -> int:
        q = self._queue(self.queue_sel)
        if offset == MAGIC_VALUE:
            return MAGIC
        if offset == VERSION_REG:
            return VERSION
        if offset == DEVICE_ID:
            return self.device.device_type
        if offset == VENDOR_ID_REG:
            return VENDOR_ID
        if offset == DEVICE_FEATURES:
            return feature_word(self.device.avail_features, self.device_features_sel)
        if offset == QUEUE_NUM_MAX:
            return q.max_size if q is not None else 0  # 0: the queue does not exist (§4.2.3.2)
        if offset == QUEUE_READY:
            return int(q.enabled) if q is not None else 0
        if offset == INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == STATUS:
            return self.device_status
        if offset in (SHM_LEN_LOW, SHM_LEN_HIGH, SHM_BASE_LOW, SHM_BASE_HIGH):
            return 0xFFFF_FFFF  # no shared memory region (§4.2.2)
        if offset == CONFIG_GENERATION:
            return 0
        if offset in _QUEUE_ADDRESSES and q is not None:
            attr, shift = _QUEUE_ADDRESSES[offset]
            return int(getattr(q, attr)) >> shift & 0xFFFF_FFFF
        return 0  # write-only registers and holes

    def _write_register(self, offset: int, value: int) -> None:
        if offset == DEVICE_FEATURES_SEL:
            self.device_features_sel = value
        elif offset == DRIVER_FEATURES_SEL:
            self.driver_features_sel = value
        elif offset == DRIVER_FEATURES:
            self._write_driver_features(self.driver_features_sel, value)
        elif offset == QUEUE_SEL:
            self.queue_sel = value
        elif offset == INTERRUPT_ACK:
            with self._isr_lock:
                self.interrupt_status &= ~value
        elif offset == STATUS:
            self._write_status(value & 0xFF)
        elif offset in (QUEUE_NUM, QUEUE_READY) or offset in _QUEUE_ADDRESSES:
            self._write_queue(offset, value)
        elif offset == SHM_SEL:
            pass
        else:
            log.debug("%s: ignored write of %#x at %#x", self.device.name, value, offset)

    def _write_queue(self, offset: int, value: int) -> None:
        q = self._writable_queue(self.queue_sel)
        if q is None:
            return
        if offset == QUEUE_NUM:
            q.size = value
        elif offset == QUEUE_READY:
            q.enabled = bool(value & 1)
        else:
            attr, shift = _QUEUE_ADDRESSES[offset]
            old: int = getattr(q, attr)
            setattr(q, attr, (old & ~(0xFFFF_FFFF << shift)) | (value << shift))

    # --- Interrupts: InterruptStatus is already set; one pulse of the edge-triggered line -------------
    def _send_queue_interrupt(self, index: int) -> None:
        os.eventfd_write(self.irq_fd, 1)

    def _send_config_interrupt(self) -> None:
        os.eventfd_write(self.irq_fd, 1)

    def close(self) -> None:
        super().close()
        if self.irq_fd >= 0:
            os.close(self.irq_fd)
        self.irq_fd = -1
